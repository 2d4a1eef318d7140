"""The write fence on the stack's database (``release.fence``): put up before the backup of a deploy that applies
migrations, lifted at its verdict, and the one a killed run left found and lifted by the next run."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import psycopg

from deploycheck.engine.containers import service_container
from deploycheck.engine.polling import poll
from deploycheck.engine.target import Target
from deploycheck.release import fence
from deploycheck.release.fence import FenceFailed, Marker
from deploycheck.stack import NotReachable, database_connection

T = TypeVar("T")

# How long the fence may take to show in a new session after the reload (the server re-reads its
# configuration at once), and how long a lift retries a database that does not answer yet (one restarting).
SHOWS_SECONDS = 10.0
LIFT_SECONDS = 30.0


def database_runs(target: Target) -> bool:
    environment = target.environment
    container = service_container(target.docker, environment.compose_project, environment.database.service)
    return container is not None and container.status == "running"


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _until(what: Callable[[], T | None], seconds: float, failed: str) -> T:
    """``what()`` until it gives a value; a database that does not answer yet is tried again meanwhile."""
    last: list[str] = []

    def attempt() -> T | None:
        try:
            return what()
        except (psycopg.OperationalError, NotReachable) as error:
            last[:] = [_first_line(error)]
            return None

    return poll(
        attempt,
        seconds=seconds,
        every=fence.POLL_SECONDS,
        timed_out=lambda: FenceFailed(f"{failed} within {seconds:.0f} s" + (f": {last[0]}" if last else "")),
    )


def _client_sees(target: Target, fenced: bool) -> bool | None:
    """True once a new session that sets nothing itself is (``fenced``) or is no longer read-only."""
    with database_connection(target, as_client=True) as client:
        return True if fence.refuses_writes(client) == fenced else None


def put_up(target: Target, release: str, writers_seconds: float) -> tuple[float, float]:
    """Put the fence up, see it in a new session, and wait for the transactions begun before it; returns when
    writes began to be refused (epoch seconds) and how long the wait for those transactions took."""
    try:
        with database_connection(target) as conn:
            started = fence.put_up(conn, release)
            _until(lambda: _client_sees(target, fenced=True), SHOWS_SECONDS, "the write fence did not show")
            waited = fence.wait_for_writers(conn, fence.settled_start(conn), writers_seconds)
    except psycopg.Error as error:
        raise FenceFailed(f"the write fence could not be put up: {_first_line(error)}") from None
    return started, waited


def lift(target: Target) -> float:
    """Lift the fence (this run's, or one a killed run or a restored backup left) and see a new session write
    again; returns when (epoch seconds). FenceFailed says why it could not: the stack still refuses writes."""

    def lifted() -> bool | None:
        with database_connection(target) as conn:
            fence.lift(conn)
        return _client_sees(target, fenced=False)

    try:
        _until(lifted, LIFT_SECONDS, "the database did not take the lift of the write fence")
    except psycopg.Error as error:
        raise FenceFailed(f"the write fence could not be lifted: {_first_line(error)}") from None
    return time.time()


def left_on(target: Target) -> Marker | None:
    """The fence of deploycheck's the running database holds, if any (None too when no database runs)."""
    if not database_runs(target):
        return None
    try:
        with database_connection(target, as_client=True) as client:
            return fence.marker(client)
    except (psycopg.Error, NotReachable):
        return None
