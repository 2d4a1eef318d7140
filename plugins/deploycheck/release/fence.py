"""The write fence: while a deploy's rollback may have to restore its backup, the database refuses writes.

A deploy that applies migrations is rolled back by putting every node back to the backup taken at its start, so
a write acknowledged after that backup would be lost. From just before the backup until the verdict (the
release verified, or the rollback finished), the database therefore refuses writes while reads go on: the
Citus coordinator (every write of the stack contract goes through it) or the PostgreSQL server is made read-only
for the whole server, ``default_transaction_read_only`` set by ``ALTER SYSTEM`` and a reload, which every
session takes for its next transaction. A session that asks for read-write itself (``BEGIN READ WRITE``,
``SET default_transaction_read_only = off``) is not fenced: deploycheck's own sessions that must write do so
(``SESSION_OPTIONS``: the migrations, the rehearsal's copy, the citus stage, the checks' probes).

The fence is marked in the server's configuration (``deploycheck.write_fence``: when it was put up, for which
release), so a fence that a killed run left on is told from an operator's own setting and lifted by the next
run, and so is the one a restored data directory brings back (a backup taken under the fence holds it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import psycopg
from psycopg import sql

Connection = psycopg.Connection[tuple[object, ...]]

MARKER = "deploycheck.write_fence"
SETTING = "default_transaction_read_only"
# What deploycheck's own sessions pass (libpq ``options``, or ``PGOPTIONS`` for psql) to write under the fence.
SESSION_OPTIONS = f"-c {SETTING}=off"
# After the fence shows in a new session, how long before its start counts as seen by every session: the
# reload reaches the other sessions by a signal the server sends them all at once, microseconds apart.
SETTLE_SECONDS = 0.05
POLL_SECONDS = 0.05


class FenceFailed(Exception):
    """The fence could not be put up, or the transactions begun before it did not end: one line."""


@dataclass(frozen=True)
class Marker:
    """What the configuration says of a fence of deploycheck's: since when, for which release."""

    since: float
    release: str

    def value(self) -> str:
        return f"{self.since:.3f} {self.release}"

    @classmethod
    def parse(cls, value: str | None) -> Marker | None:
        """The marker a configuration value holds; None for none (unset, or reset: an empty string)."""
        since, _, release = (value or "").strip().partition(" ")
        if not since:
            return None
        try:
            return cls(float(since), release)
        except ValueError:
            return cls(0.0, value or "")  # still a fence of ours, from a version that wrote it otherwise

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.since)) if self.since else "an unknown time"
        return f"put up at {when} by a deploy of release {self.release or 'unknown'}"


def _set_system(conn: Connection, name: str, value: str | None) -> None:
    """``ALTER SYSTEM SET name = value`` (RESET for None). PostgreSQL before 17 accepts a custom setting there
    only once the session knows its name: it is declared in the session first (an empty value, session-only)."""
    if name == MARKER:
        conn.execute(sql.SQL("SET {} = ''").format(sql.Identifier(*name.split("."))))
    setting = sql.Identifier(*name.split("."))
    if value is None:
        conn.execute(sql.SQL("ALTER SYSTEM RESET {}").format(setting))
    else:
        conn.execute(sql.SQL("ALTER SYSTEM SET {} = {}").format(setting, sql.Literal(value)))


def put_up(conn: Connection, release: str) -> float:
    """Mark and set the fence in the server's configuration and reload it; returns when (epoch seconds) the
    reload was asked, the start of the window in which writes are refused. ``conn`` is one of deploycheck's
    sessions (``SESSION_OPTIONS``): it keeps writing."""
    since = time.time()
    # The marker first: a fence is never on without it (a kill in between leaves a marker with no fence).
    _set_system(conn, MARKER, Marker(since, release).value())
    _set_system(conn, SETTING, "on")
    started = time.time()
    conn.execute("SELECT pg_reload_conf()")
    return started


def lift(conn: Connection) -> None:
    """Reset the fence and its marker in the server's configuration and reload it (the fence first: a kill in
    between leaves a marker with no fence, which the next run resets)."""
    _set_system(conn, SETTING, None)
    _set_system(conn, MARKER, None)
    conn.execute("SELECT pg_reload_conf()")


def marker(conn: Connection) -> Marker | None:
    """The fence of deploycheck's that the server's configuration holds, if any (as a new session sees it)."""
    row = conn.execute("SELECT current_setting(%s, true)", (MARKER,)).fetchone()
    return Marker.parse(str(row[0]) if row and row[0] is not None else None)


def refuses_writes(client_view: Connection) -> bool:
    """Whether a session that sets nothing itself (``client_view``: no ``SESSION_OPTIONS``) is read-only."""
    row = client_view.execute(f"SHOW {SETTING}").fetchone()
    return row is not None and str(row[0]) == "on"


@dataclass(frozen=True)
class Writer:
    """A session whose transaction began before the fence: it may still write, and commit after the backup."""

    pid: int
    application: str
    state: str
    seconds: float  # how long its transaction has been open
    wrote: bool  # it has written already (it has a transaction id)

    def describe(self) -> str:
        name = f"'{self.application}'" if self.application else "with no application_name"
        what = "has written and not committed" if self.wrote else "may still write"
        return f"session {self.pid} {name} ({self.state}, transaction open for {self.seconds:.0f} s) {what}"


# Client sessions (not the server's own workers, not replication) whose current transaction began before
# ``%s``, the fence's start as the server's clock gives it.
WRITERS_QUERY = """
SELECT pid, coalesce(application_name, ''), coalesce(state, ''),
       extract(epoch FROM clock_timestamp() - xact_start)::float8, backend_xid IS NOT NULL
FROM pg_stat_activity
WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() AND xact_start < %s
ORDER BY xact_start
"""


def settled_start(conn: Connection) -> object:
    """The server's time from which every session takes the fence for its next transaction (once a new session
    showed it: the reload reached every session by then, give or take ``SETTLE_SECONDS``)."""
    time.sleep(SETTLE_SECONDS)
    row = conn.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None
    return row[0]


def writers(conn: Connection, fenced_from: object) -> list[Writer]:
    """The sessions whose transaction began before ``fenced_from`` and is still open."""
    return [
        Writer(int(str(pid)), str(app), str(state), float(str(seconds)), bool(wrote))
        for pid, app, state, seconds, wrote in conn.execute(WRITERS_QUERY, (fenced_from,)).fetchall()
    ]


def wait_for_writers(conn: Connection, fenced_from: object, seconds: float) -> float:
    """Wait until every transaction begun before the fence has ended (committed or not, before the backup);
    returns how long that took. FenceFailed names the oldest still open after ``seconds``."""
    start = time.monotonic()
    while True:
        open_now = writers(conn, fenced_from)
        if not open_now:
            return time.monotonic() - start
        if time.monotonic() - start >= seconds:
            more = f" and {len(open_now) - 1} more" if len(open_now) > 1 else ""
            raise FenceFailed(
                f"{open_now[0].describe()}{more}, begun before writes were refused, still open after {seconds:.0f} s:"
                " the backup would miss what it commits; end that transaction, or deploy again once it is done"
            )
        time.sleep(POLL_SECONDS)
