"""deploycheck demo API: health, readiness and version probes plus a small tenant-sharded domain
(stores and their orders, both distributed by store id and colocated on Citus).

Run: uvicorn app.main:app --host 0.0.0.0 --port 8000
Environment: DB_HOST, DB_PORT (5432), DB_NAME, DB_USER, DB_PASSWORD (or DB_PASSWORD_FILE),
RELEASE, EXPECTED_WORKERS; optional DB_POOL_MAX (5), DB_CONNECT_TIMEOUT (2 s),
DB_STATEMENT_TIMEOUT_MS (5000).
"""

import logging
import sys
from typing import Any

import psycopg
import hmac

from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.responses import JSONResponse

from . import config
from .db import Database, DatabaseUnavailable
from .models import (
    BIGINT_MAX,
    ErrorDetail,
    Health,
    NotReady,
    Order,
    OrderIn,
    Ready,
    Store,
    StoreIn,
    Summary,
    Version,
)

try:
    settings = config.load()
except config.ConfigError as _exc:
    raise SystemExit(f"configuration error: {_exc}") from None

db = Database(settings)


class _RedactingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return db.redact(super().format(record))


class _DropHealthcheckAccess(logging.Filter):
    """Keep the container HEALTHCHECK (GET /health from 127.0.0.1 every 2 s) out of the access log."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3:
            client, path = str(args[0]), str(args[2])
            if path == "/health" and client.startswith("127.0.0.1:"):
                return False
        return True


def _setup_logging() -> logging.Logger:
    logging.getLogger("uvicorn.access").addFilter(_DropHealthcheckAccess())
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_RedactingFormatter("%(levelname)s:     %(name)s: %(message)s"))
    for name, level in (("api", logging.INFO), ("psycopg", logging.WARNING)):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level)
        logger.propagate = False
    return logging.getLogger("api")


log = _setup_logging()

DB_ERRORS: dict[int | str, dict[str, Any]] = {
    503: {"model": ErrorDetail, "description": "Database unavailable, or read-only for now (with Retry-After)"}
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorDetail, "description": "Store not found"}}

app = FastAPI(
    title="deploycheck demo API",
    description="Stores and orders sharded by store id on a Citus cluster.",
    version=settings.release or "dev",
)


@app.on_event("startup")
def _startup() -> None:
    log.info("starting: %s", settings.describe())
    db.open()


@app.on_event("shutdown")
def _shutdown() -> None:
    db.close()


@app.exception_handler(DatabaseUnavailable)
def _db_unavailable(request: Request, exc: DatabaseUnavailable) -> JSONResponse:
    log.warning("%s %s: database unavailable: %s", request.method, request.url.path, exc.reason)
    return JSONResponse(status_code=503, content={"detail": f"database unavailable: {exc.reason}"})


# How long a client refused a write by a read-only database should wait: a deploy's write fence (a database read-only
# from before its backup until its verdict) lasts tens of seconds.
WRITES_RETRY_AFTER_SECONDS = 10


@app.exception_handler(psycopg.errors.ReadOnlySqlTransaction)
def _read_only(request: Request, exc: psycopg.Error) -> JSONResponse:
    """A write refused because the database is read-only for now (a deploy's write fence): nothing was written."""
    log.info("%s %s: write refused, the database is read-only", request.method, request.url.path)
    return JSONResponse(
        status_code=503,
        content={"detail": "writes are refused for now: the database is read-only; retry later"},
        headers={"Retry-After": str(WRITES_RETRY_AFTER_SECONDS)},
    )


@app.exception_handler(psycopg.Error)
def _db_error(request: Request, exc: psycopg.Error) -> JSONResponse:
    reason = db.describe(exc)
    log.warning("%s %s: database unavailable: %s", request.method, request.url.path, reason)
    return JSONResponse(status_code=503, content={"detail": f"database unavailable: {reason}"})


@app.exception_handler(Exception)
def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("%s %s: unexpected %s: %s", request.method, request.url.path, type(exc).__name__, db.describe(exc))
    return JSONResponse(status_code=500, content={"detail": "internal server error"})


def _not_found() -> HTTPException:
    return HTTPException(status_code=404, detail="store not found")


def _check_id(store_id: int) -> None:
    # ids are bigint; anything outside that range cannot exist (and must not reach SQL as an error)
    if not -BIGINT_MAX - 1 <= store_id <= BIGINT_MAX:
        raise _not_found()


# -- probes ----------------------------------------------------------------------------------
@app.get("/health", response_model=Health, tags=["probes"])
def health() -> dict[str, str]:
    """Liveness: the process answers. Never touches the database."""
    return {"status": "ok"}


@app.get("/ready", response_model=Ready, responses={503: {"model": NotReady}}, tags=["probes"])
def ready() -> Any:
    """Readiness: the coordinator answers and every worker is reachable (and, if EXPECTED_WORKERS
    is set, exactly that many are)."""
    status = db.worker_status(settings.expected_workers)
    if status.ready:
        return {"status": "ready", "workers": status.workers}
    log.info("not ready: %s", status.reason)
    return JSONResponse(status_code=503, content={"status": "not ready", "reason": status.reason})


@app.get("/version", response_model=Version, tags=["probes"])
def version() -> dict[str, str | None]:
    """The deployed release and the Citus version (null when the database is down)."""
    return {"release": settings.release, "citus_version": db.citus_version()}


# -- domain ----------------------------------------------------------------------------------
def require_token(authorization: str | None = Header(default=None)) -> None:
    """Writes need `Authorization: Bearer <API_TOKEN>` when a token is configured."""
    token = settings.api_token.reveal()
    if not token:
        return
    given = (authorization or "").removeprefix("Bearer ").strip()
    if not hmac.compare_digest(given.encode(), token.encode()):
        raise HTTPException(status_code=401, detail="missing or wrong API token", headers={"WWW-Authenticate": "Bearer"})


@app.post(
    "/stores",
    status_code=201,
    response_model=Store,
    responses=DB_ERRORS,
    tags=["stores"],
    dependencies=[Depends(require_token)],
)
def create_store(body: StoreIn) -> Store:
    with db.connection() as conn:
        row = conn.execute("INSERT INTO stores(name) VALUES (%s) RETURNING id, name", (body.name,)).fetchone()
    assert row is not None
    return Store(id=row[0], name=row[1])


@app.get("/stores/{store_id}", response_model=Store, responses={**NOT_FOUND, **DB_ERRORS}, tags=["stores"])
def get_store(store_id: int) -> Store:
    _check_id(store_id)
    with db.connection() as conn:
        row = conn.execute("SELECT id, name FROM stores WHERE id = %s", (store_id,)).fetchone()
    if row is None:
        raise _not_found()
    return Store(id=row[0], name=row[1])


def _store_exists(conn: "psycopg.Connection[Any]", store_id: int) -> bool:
    return conn.execute("SELECT 1 FROM stores WHERE id = %s", (store_id,)).fetchone() is not None


@app.post(
    "/stores/{store_id}/orders",
    status_code=201,
    response_model=Order,
    responses={**NOT_FOUND, **DB_ERRORS},
    tags=["orders"],
    dependencies=[Depends(require_token)],
)
def create_order(store_id: int, body: OrderIn) -> Order:
    _check_id(store_id)
    with db.connection() as conn, conn.transaction():
        if not _store_exists(conn, store_id):
            raise _not_found()
        row = conn.execute(
            "INSERT INTO orders(store_id, item, amount_cents) VALUES (%s, %s, %s)"
            " RETURNING id, store_id, item, amount_cents, created_at",
            (store_id, body.item, body.amount_cents),
        ).fetchone()
    assert row is not None
    return Order(id=row[0], store_id=row[1], item=row[2], amount_cents=row[3], created_at=row[4])


@app.get(
    "/stores/{store_id}/orders",
    response_model=list[Order],
    responses={**NOT_FOUND, **DB_ERRORS},
    tags=["orders"],
)
def list_orders(store_id: int) -> list[Order]:
    _check_id(store_id)
    with db.connection() as conn:
        if not _store_exists(conn, store_id):
            raise _not_found()
        rows: list[tuple[Any, ...]] = conn.execute(
            "SELECT id, store_id, item, amount_cents, created_at FROM orders WHERE store_id = %s ORDER BY id",
            (store_id,),
        ).fetchall()
    return [Order(id=r[0], store_id=r[1], item=r[2], amount_cents=r[3], created_at=r[4]) for r in rows]


@app.get(
    "/stores/{store_id}/summary",
    response_model=Summary,
    responses={**NOT_FOUND, **DB_ERRORS},
    tags=["orders"],
)
def summary(store_id: int) -> Summary:
    _check_id(store_id)
    with db.connection() as conn:
        if not _store_exists(conn, store_id):
            raise _not_found()
        row = conn.execute(
            "SELECT count(*), coalesce(sum(amount_cents), 0)::bigint FROM orders WHERE store_id = %s",
            (store_id,),
        ).fetchone()
    assert row is not None
    return Summary(store_id=store_id, orders=row[0], total_cents=row[1])
