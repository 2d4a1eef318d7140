"""Request and response bodies (pydantic 1.10, as shipped by Debian bookworm)."""

from datetime import datetime
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field, StrictStr, conint

BIGINT_MAX = 2**63 - 1

if TYPE_CHECKING:
    Cents = int
else:
    # strict: a JSON float, string or boolean is rejected rather than coerced
    Cents = conint(strict=True, ge=0, le=BIGINT_MAX)


class StoreIn(BaseModel):
    name: StrictStr = Field(..., min_length=1, max_length=200, example="corner shop")


class Store(BaseModel):
    id: int
    name: str


class OrderIn(BaseModel):
    item: StrictStr = Field(..., min_length=1, max_length=200, example="coffee beans")
    amount_cents: Cents = Field(..., example=1250)


class Order(BaseModel):
    id: int
    store_id: int
    item: str
    amount_cents: int
    created_at: datetime


class Summary(BaseModel):
    store_id: int
    orders: int
    total_cents: int


class Health(BaseModel):
    status: str = Field(..., example="ok")


class Ready(BaseModel):
    status: str = Field(..., example="ready")
    workers: int


class NotReady(BaseModel):
    status: str = Field(..., example="not ready")
    reason: str = Field(..., example="1 of 2 workers unreachable: failed to connect to worker-2:5432")


class Version(BaseModel):
    release: str | None
    citus_version: str | None


class ErrorDetail(BaseModel):
    detail: str = Field(..., example="database unavailable: connection failed: Connection refused")
