"""Database access for the tracker.

Requests take an autocommit connection from a small psycopg_pool pool; each one is pinged first, so a
connection that a database restart killed is dropped and replaced instead of failing the request. When the
pool has nothing within POOL_WAIT seconds (database down, pool still reconnecting), the request connects
directly: it then either works (the database is back) or fails with libpq's own reason, which /readyz reports.

Every message leaving this module is one line, with the password removed.
"""

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from .settings import Settings

log = logging.getLogger("parcels.store")

POOL_WAIT = 1.0

# Columns the running code reads or writes: /readyz is 503 until the migrations created all of them.
REQUIRED_COLUMNS = {
    "parcels": ("id", "recipient", "city", "created_at"),
    "scans": ("id", "parcel_id", "location", "scanned_at"),
}

_SCHEMA_QUERY = """
SELECT c.relname, a.attname
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE n.nspname = current_schema() AND c.relname = ANY(%s)
"""


class Unavailable(Exception):
    """The database cannot serve the request; str() is a one-line reason without secrets."""


class Store:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._pool: ConnectionPool | None = None

    # -- messages ---------------------------------------------------------------------------
    def explain(self, exc: BaseException) -> str:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        text = lines[0] if lines else type(exc).__name__
        if self.settings.db_password:
            text = text.replace(self.settings.db_password, "***")
        return text[:300]

    # -- connections ------------------------------------------------------------------------
    def _kwargs(self) -> dict[str, Any]:
        s = self.settings
        return {
            "host": s.db_host,
            "port": s.db_port,
            "dbname": s.db_name,
            "user": s.db_user,
            "password": s.db_password,
            "connect_timeout": s.connect_timeout_s,
            "application_name": "parcels-tracker",
            "options": f"-c statement_timeout={s.statement_timeout_ms}",
            "autocommit": True,
            "row_factory": dict_row,
        }

    def open(self) -> None:
        if not self.settings.db_host:
            log.error("PARCELS_DB_HOST is not set: /readyz stays 503")
            return
        self._pool = ConnectionPool(
            kwargs=self._kwargs(),
            min_size=1,
            max_size=self.settings.pool_max,
            open=False,
            name="tracker",
            timeout=POOL_WAIT,
            max_idle=120.0,
            # a failed reconnection loop ends quickly; the next request starts a new one
            reconnect_timeout=5.0,
        )
        self._pool.open(wait=False)
        log.info("database %s@%s:%s/%s", self.settings.db_user, self.settings.db_host,
                 self.settings.db_port, self.settings.db_name)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close(timeout=2.0)
            self._pool = None

    def _from_pool(self) -> "psycopg.Connection[Any] | None":
        pool = self._pool
        if pool is None:
            return None
        for _ in range(pool.max_size + 1):
            try:
                conn = pool.getconn()
            except PoolTimeout:
                return None
            try:
                conn.execute("SELECT 1")
                return conn
            except psycopg.Error:
                pool.putconn(conn)  # broken: the pool discards it and opens a new one
        return None

    @contextmanager
    def connection(self) -> "Iterator[psycopg.Connection[Any]]":
        if not self.settings.db_host:
            raise Unavailable("PARCELS_DB_HOST is not set")
        conn = self._from_pool()
        if conn is not None:
            assert self._pool is not None
            try:
                yield conn
            finally:
                self._pool.putconn(conn)
            return
        try:
            direct = psycopg.connect(**self._kwargs())
        except psycopg.Error as exc:
            raise Unavailable(self.explain(exc)) from None
        with direct:
            yield direct

    # -- readiness --------------------------------------------------------------------------
    def readiness(self) -> str | None:
        """None when the database answers and the schema is complete, else the reason."""
        s = self.settings
        try:
            with self.connection() as conn:
                rows = conn.execute(_SCHEMA_QUERY, (list(REQUIRED_COLUMNS),)).fetchall()
        except Unavailable as exc:
            return f"database {s.db_host}:{s.db_port} unreachable: {exc}"
        except psycopg.Error as exc:
            return f"database query failed: {self.explain(exc)}"
        present: dict[str, set[str]] = {}
        for row in rows:
            present.setdefault(row["relname"], set()).add(row["attname"])
        missing_tables = [t for t in REQUIRED_COLUMNS if t not in present]
        if missing_tables:
            return f"schema not migrated: table(s) {', '.join(missing_tables)} missing"
        missing_cols = [f"{t}.{c}" for t, cols in REQUIRED_COLUMNS.items() for c in cols if c not in present[t]]
        if missing_cols:
            return f"schema not migrated: column(s) {', '.join(missing_cols)} missing"
        return None

    # -- parcels and scans ------------------------------------------------------------------
    def create_parcel(self, recipient: str, city: str) -> dict[str, Any]:
        with self.connection() as conn:
            row = conn.execute(
                "INSERT INTO parcels (recipient, city) VALUES (%s, %s)"
                " RETURNING id, recipient, city, created_at",
                (recipient, city),
            ).fetchone()
        assert row is not None
        return row

    def get_parcel(self, parcel_id: int) -> dict[str, Any] | None:
        with self.connection() as conn:
            return conn.execute(
                "SELECT id, recipient, city, created_at FROM parcels WHERE id = %s::bigint", (parcel_id,)
            ).fetchone()

    def add_scan(self, parcel_id: int, location: str) -> dict[str, Any] | None:
        """The new scan, or None when the parcel does not exist."""
        with self.connection() as conn, conn.transaction():
            exists = conn.execute("SELECT 1 FROM parcels WHERE id = %s::bigint", (parcel_id,)).fetchone()
            if exists is None:
                return None
            row = conn.execute(
                "INSERT INTO scans (parcel_id, location) VALUES (%s::bigint, %s)"
                " RETURNING id, parcel_id, location, scanned_at",
                (parcel_id, location),
            ).fetchone()
        assert row is not None
        return row

    def list_scans(self, parcel_id: int, limit: int) -> list[dict[str, Any]] | None:
        """The parcel's scans, oldest first, or None when the parcel does not exist."""
        with self.connection() as conn:
            if conn.execute("SELECT 1 FROM parcels WHERE id = %s::bigint", (parcel_id,)).fetchone() is None:
                return None
            return conn.execute(
                "SELECT id, parcel_id, location, scanned_at FROM scans WHERE parcel_id = %s::bigint"
                " ORDER BY scanned_at, id LIMIT %s",
                (parcel_id, limit),
            ).fetchall()
