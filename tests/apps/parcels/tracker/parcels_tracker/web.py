"""HTTP interface of the tracker.

GET  /livez                   200 {"alive": true}            (process only, never touches the database)
GET  /readyz                  200 {"ready": true} | 503 {"ready": false, "reason": ...}
GET  /about                   {"service": "tracker", "build": PARCELS_BUILD}
POST /parcels                 201 parcel         (header X-Parcels-Key required, 403 otherwise)
GET  /parcels/{id}            200 parcel | 404
POST /parcels/{id}/scans      201 scan | 404     (header X-Parcels-Key required, 403 otherwise)
GET  /parcels/{id}/scans      200 [scan, ...] | 404

Database trouble is a 503 {"detail": "database unavailable: ..."}.
"""

import hmac
import logging

import psycopg
from fastapi import Depends, FastAPI, Header, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse

from . import settings as settings_mod
from .schemas import About, Alive, Parcel, ParcelIn, Ready, Scan, ScanIn
from .store import Store, Unavailable

BIGINT_MAX = 2**63 - 1

settings = settings_mod.from_env()
store = Store(settings)
log = logging.getLogger("parcels.web")


class _QuietProbes(logging.Filter):
    """Keep the container healthcheck (GET /livez from 127.0.0.1) out of the access log."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3:
            if str(args[2]) == "/livez" and str(args[0]).startswith("127.0.0.1:"):
                return False
        return True


logging.getLogger("uvicorn.access").addFilter(_QuietProbes())
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
# the pool logs every connection handed out at INFO
logging.getLogger("psycopg.pool").setLevel(logging.WARNING)

app = FastAPI(title="parcels tracker", version=settings.build, docs_url="/docs", redoc_url=None)


@app.on_event("startup")
def _startup() -> None:
    if not settings.api_key:
        log.warning("PARCELS_API_KEY is not set: every write is refused with 403")
    store.open()


@app.on_event("shutdown")
def _shutdown() -> None:
    store.close()


@app.exception_handler(Unavailable)
def _unavailable(_: Request, exc: Unavailable) -> JSONResponse:
    return JSONResponse(status_code=503, content={"detail": f"database unavailable: {exc}"})


@app.exception_handler(psycopg.Error)
def _db_error(_: Request, exc: psycopg.Error) -> JSONResponse:
    reason = store.explain(exc)
    log.warning("database error: %s", reason)
    return JSONResponse(status_code=503, content={"detail": f"database error: {reason}"})


def require_key(x_parcels_key: str | None = Header(default=None)) -> None:
    expected = settings.api_key
    if not expected or x_parcels_key is None or not hmac.compare_digest(
        x_parcels_key.encode(), expected.encode()
    ):
        raise HTTPException(status_code=403, detail="missing or wrong X-Parcels-Key")


ParcelId = Path(..., ge=1, le=BIGINT_MAX, description="parcel id")


def _no_parcel(parcel_id: int) -> HTTPException:
    return HTTPException(status_code=404, detail=f"parcel {parcel_id} not found")


@app.get("/livez", response_model=Alive, tags=["probes"])
def livez() -> Alive:
    return Alive(alive=True)


@app.get("/readyz", response_model=Ready, responses={503: {"model": Ready}}, tags=["probes"])
def readyz() -> JSONResponse:
    reason = store.readiness()
    if reason is None:
        return JSONResponse(status_code=200, content={"ready": True})
    return JSONResponse(status_code=503, content={"ready": False, "reason": reason})


@app.get("/about", response_model=About, tags=["probes"])
def about() -> About:
    return About(service="tracker", build=settings.build)


@app.post("/parcels", status_code=201, response_model=Parcel, dependencies=[Depends(require_key)],
          tags=["parcels"])
def create_parcel(body: ParcelIn) -> Parcel:
    return Parcel(**store.create_parcel(body.recipient, body.city))


@app.get("/parcels/{parcel_id}", response_model=Parcel, tags=["parcels"])
def get_parcel(parcel_id: int = ParcelId) -> Parcel:
    row = store.get_parcel(parcel_id)
    if row is None:
        raise _no_parcel(parcel_id)
    return Parcel(**row)


@app.post("/parcels/{parcel_id}/scans", status_code=201, response_model=Scan,
          dependencies=[Depends(require_key)], tags=["scans"])
def add_scan(body: ScanIn, parcel_id: int = ParcelId) -> Scan:
    try:
        row = store.add_scan(parcel_id, body.location)
    except psycopg.errors.ForeignKeyViolation:
        row = None  # the parcel went away between the check and the insert
    if row is None:
        raise _no_parcel(parcel_id)
    return Scan(**row)


@app.get("/parcels/{parcel_id}/scans", response_model=list[Scan], tags=["scans"])
def list_scans(parcel_id: int = ParcelId, limit: int = Query(100, ge=1, le=1000)) -> list[Scan]:
    rows = store.list_scans(parcel_id, limit)
    if rows is None:
        raise _no_parcel(parcel_id)
    return [Scan(**r) for r in rows]
