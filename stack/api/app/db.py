"""Database access.

- Domain requests use a small psycopg_pool pool (autocommit connections, pinged before use so
  connections killed by a database restart are replaced at once). If the pool has no connection
  within POOL_WAIT seconds (database down, or the pool still reconnecting after an outage), the
  request falls back to one direct connection, so the API recovers as soon as the database does
  and an outage is reported with libpq's real reason rather than a pool timeout.
- Probes (/ready, /version) use the same path. /ready's check of each worker
  (citus_check_connection_to_node) then goes over the connection Citus keeps per session to that
  worker, instead of N new ones per call (run_command_on_workers made every /ready cost N TLS and
  SCRAM handshakes); the ping before use still fails it at once when the coordinator is gone, and
  Citus's warning says why a worker is unreachable.

Every error text leaving this module goes through describe(): first line only, password removed.
"""

import contextlib
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from .config import MASK, Settings

log = logging.getLogger("api.db")

POOL_WAIT = 1.0  # seconds a request waits for a pooled connection before connecting directly
_CONNINFO_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)
_URL_PASSWORD = re.compile(r"(postgres(?:ql)?://[^:/@\s]*:)[^@\s]*@", re.IGNORECASE)


class DatabaseUnavailable(Exception):
    """The database could not serve a request; `reason` is one line without credentials."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class WorkerStatus:
    def __init__(self, ready: bool, workers: int, reason: str) -> None:
        self.ready = ready
        self.workers = workers
        self.reason = reason


class Database:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._pool: ConnectionPool | None = None

    # -- error text ---------------------------------------------------------------------------
    def redact(self, text: str) -> str:
        secret = self.settings.db_password.reveal()
        if secret:
            text = text.replace(secret, MASK)
        text = _CONNINFO_PASSWORD.sub(lambda m: m.group(1) + MASK, text)
        return _URL_PASSWORD.sub(lambda m: m.group(1) + MASK + "@", text)

    def describe(self, exc: BaseException) -> str:
        """First non-empty line of an error, without credentials, at most 300 characters."""
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        text = lines[0] if lines else type(exc).__name__
        text = self.redact(text)
        return text if len(text) <= 300 else text[:297] + "..."

    # -- connections --------------------------------------------------------------------------
    def _connect_kwargs(self) -> dict[str, Any]:
        s = self.settings
        return {
            "host": s.db_host,
            "port": s.db_port,
            "dbname": s.db_name,
            "user": s.db_user,
            "password": s.db_password.reveal(),
            "connect_timeout": s.connect_timeout,
            "application_name": "deploycheck-api",
            # text comes back as str even from a database created with SQL_ASCII
            "client_encoding": "UTF8",
            "options": f"-c statement_timeout={s.statement_timeout_ms}",
            "autocommit": True,
        }

    def connect(self) -> "psycopg.Connection[Any]":
        """One direct autocommit connection (caller closes it)."""
        return psycopg.connect(**self._connect_kwargs())

    def open(self) -> None:
        if self._pool is not None:
            return
        self._pool = ConnectionPool(
            kwargs=self._connect_kwargs(),
            min_size=1,
            max_size=self.settings.pool_max,
            open=False,
            name="api",
            timeout=POOL_WAIT,
            max_idle=60.0,
            max_lifetime=600.0,
            # Give up a failing reconnection loop quickly: the next request starts a fresh one
            # (psycopg_pool 3.1 backs off exponentially otherwise, delaying recovery).
            reconnect_timeout=5.0,
        )
        self._pool.open(wait=False)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close(timeout=2.0)
            self._pool = None

    def _pooled(self) -> "psycopg.Connection[Any] | None":
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
                pool.putconn(conn)  # a broken connection is discarded and replaced by the pool
        return None

    @contextmanager
    def connection(self) -> "Iterator[psycopg.Connection[Any]]":
        """An autocommit connection for one request: pooled if possible, else direct."""
        conn = self._pooled()
        if conn is not None:
            assert self._pool is not None
            try:
                yield conn
            finally:
                self._pool.putconn(conn)
            return
        try:
            direct = self.connect()
        except psycopg.Error as exc:
            raise DatabaseUnavailable(self.describe(exc)) from None
        with direct:
            yield direct

    # -- probes -------------------------------------------------------------------------------
    def citus_version(self) -> str | None:
        try:
            with self.connection() as conn:
                row = conn.execute("SELECT citus_version()").fetchone()
        except DatabaseUnavailable as exc:
            log.warning("citus_version unavailable: %s", exc.reason)
            return None
        except psycopg.Error as exc:
            log.warning("citus_version unavailable: %s", self.describe(exc))
            return None
        return None if row is None or row[0] is None else str(row[0])

    def worker_status(self, expected: int | None) -> WorkerStatus:
        s = self.settings
        try:
            with self.connection() as conn:
                return self._worker_status(conn, expected)
        except DatabaseUnavailable as exc:
            return WorkerStatus(False, 0, f"coordinator {s.db_host}:{s.db_port} unreachable: {exc.reason}")

    @staticmethod
    def _reaches(conn: "psycopg.Connection[Any]", name: str, port: int) -> tuple[bool, str]:
        """Whether the coordinator reaches this worker, and Citus's warning when it does not.

        citus_check_connection_to_node goes over the connection Citus keeps for this session to that
        worker (run_command_on_workers opens a new one to every worker on every call: N TLS and SCRAM
        handshakes per probe)."""
        warnings: list[str] = []

        def keep(notice: "psycopg.errors.Diagnostic") -> None:
            if notice.message_primary:
                warnings.append(str(notice.message_primary))

        conn.add_notice_handler(keep)
        try:
            row = conn.execute("SELECT citus_check_connection_to_node(%s, %s)", (name, port)).fetchone()
        finally:
            conn.remove_notice_handler(keep)
        reachable = bool(row and row[0])
        return reachable, "" if reachable else "; ".join(warnings)

    def _worker_status(self, conn: "psycopg.Connection[Any]", expected: int | None) -> WorkerStatus:
        s = self.settings
        # Bound Citus's own wait for a silent worker (default 30 s); a Citus without the setting
        # is fine.
        with contextlib.suppress(psycopg.Error):
            conn.execute(
                "SELECT set_config('citus.node_connection_timeout', %s, false)",
                (str(s.connect_timeout * 1000),),
            )
        try:
            rows = []
            for name, port in conn.execute(
                "SELECT node_name, node_port FROM citus_get_active_worker_nodes() ORDER BY node_name, node_port"
            ).fetchall():
                reachable, why = self._reaches(conn, name, port)
                if not reachable:
                    # A kept connection broken since its last use (a restarted worker) fails once and is
                    # closed: asked again on a new one, a second failure is the worker's.
                    reachable, why = self._reaches(conn, name, port)
                rows.append((name, port, reachable, why))
        except psycopg.errors.QueryCanceled:
            return WorkerStatus(False, 0, f"workers did not answer within {s.statement_timeout_ms / 1000:g} s")
        except psycopg.Error as exc:
            return WorkerStatus(False, 0, f"coordinator query failed: {self.describe(exc)}")
        total = len(rows)
        ok = sum(1 for r in rows if r[2])
        failed = [r for r in rows if not r[2]]
        if failed:
            details = "; ".join(self.describe(Exception(r[3])) if r[3] else f"{r[0]}:{r[1]} failed" for r in failed)
            return WorkerStatus(False, ok, f"{len(failed)} of {total} workers unreachable: {details}")
        if expected is not None and ok != expected:
            noun = "worker" if ok == 1 else "workers"
            return WorkerStatus(False, ok, f"{ok} {noun} registered and reachable, expected {expected}")
        return WorkerStatus(True, ok, "")
