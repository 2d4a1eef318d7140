"""Request and response bodies (pydantic 1.10, as Debian bookworm ships it)."""

from datetime import datetime

from pydantic import BaseModel, constr

Recipient = constr(strict=True, strip_whitespace=True, min_length=1, max_length=200)
City = constr(strict=True, strip_whitespace=True, min_length=1, max_length=120)
Location = constr(strict=True, strip_whitespace=True, min_length=1, max_length=120)


class ParcelIn(BaseModel):
    recipient: Recipient  # type: ignore[valid-type]
    city: City  # type: ignore[valid-type]


class Parcel(BaseModel):
    id: int
    recipient: str
    city: str
    created_at: datetime


class ScanIn(BaseModel):
    location: Location  # type: ignore[valid-type]


class Scan(BaseModel):
    id: int
    parcel_id: int
    location: str
    scanned_at: datetime


class Alive(BaseModel):
    alive: bool


class Ready(BaseModel):
    ready: bool
    reason: str | None = None


class About(BaseModel):
    service: str
    build: str
