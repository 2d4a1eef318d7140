"""HTTP interface of the pricing service (stateless).

GET /health/live           200 {"live": true}
GET /health/ready          200 {"ready": true, "tariff": ...} once the tariff is loaded (503 before)
GET /quote?weight_kg=2     200 {"weight_kg": 2.0, "billable_kg": 2, "price_cents": ..., "currency": "EUR", ...}
                           422 when weight_kg is missing, not a number, <= 0 or above the tariff's maximum

Tariff from the environment (all optional): PARCELS_TARIFF_BASE_CENTS (390), PARCELS_TARIFF_PER_KG_CENTS (120),
PARCELS_TARIFF_MAX_KG (31.5), PARCELS_TARIFF_CURRENCY (EUR). PARCELS_BUILD is reported by /health/ready.
"""

import logging
import math
import os
from dataclasses import dataclass

from fastapi import FastAPI, Query
from fastapi.responses import JSONResponse


@dataclass(frozen=True)
class Tariff:
    base_cents: int
    per_kg_cents: int
    max_kg: float
    currency: str


def _tariff_from_env() -> Tariff:
    env = os.environ
    try:
        return Tariff(
            base_cents=int(env.get("PARCELS_TARIFF_BASE_CENTS", "390")),
            per_kg_cents=int(env.get("PARCELS_TARIFF_PER_KG_CENTS", "120")),
            max_kg=float(env.get("PARCELS_TARIFF_MAX_KG", "31.5")),
            currency=env.get("PARCELS_TARIFF_CURRENCY", "EUR").strip() or "EUR",
        )
    except ValueError as exc:
        raise SystemExit(f"bad tariff setting: {exc}") from None


class _QuietProbes(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3:
            if str(args[2]) == "/health/live" and str(args[0]).startswith("127.0.0.1:"):
                return False
        return True


logging.getLogger("uvicorn.access").addFilter(_QuietProbes())

BUILD = os.environ.get("PARCELS_BUILD", "").strip() or "unknown"
app = FastAPI(title="parcels pricing", version=BUILD, redoc_url=None)
_state: dict[str, Tariff] = {}


@app.on_event("startup")
def _load_tariff() -> None:
    _state["tariff"] = _tariff_from_env()


@app.get("/health/live", tags=["probes"])
def live() -> dict[str, bool]:
    return {"live": True}


@app.get("/health/ready", tags=["probes"])
def ready() -> JSONResponse:
    tariff = _state.get("tariff")
    if tariff is None:
        return JSONResponse(status_code=503, content={"ready": False, "reason": "tariff not loaded"})
    return JSONResponse(content={"ready": True, "tariff": f"{tariff.currency} {tariff.base_cents}"
                                 f"+{tariff.per_kg_cents}/kg up to {tariff.max_kg:g} kg", "build": BUILD})


@app.get("/quote", tags=["quotes"])
def quote(weight_kg: float = Query(..., gt=0, description="parcel weight in kilograms")) -> JSONResponse:
    tariff = _state["tariff"]
    if not math.isfinite(weight_kg) or weight_kg > tariff.max_kg:
        return JSONResponse(status_code=422, content={"detail": f"weight_kg must be at most {tariff.max_kg:g}"})
    billable = math.ceil(weight_kg)
    return JSONResponse(content={
        "service": "pricing",
        "weight_kg": weight_kg,
        "billable_kg": billable,
        "price_cents": tariff.base_cents + billable * tariff.per_kg_cents,
        "currency": tariff.currency,
    })
