"""SQL migrations: files applied in name order, each once, recorded in a version table on the coordinator."""

from __future__ import annotations

import hashlib
from pathlib import Path

import psycopg

VERSION_TABLE = "deploycheck_schema_migrations"
Connection = psycopg.Connection[tuple[object, ...]]


class MigrationError(Exception):
    """A migration cannot be applied (it failed, or it was changed after it was applied): one line.

    ``applied`` are the migrations this run applied before it: the database has changed all the same.
    """

    def __init__(self, reason: str, detail: str = "", applied: tuple[str, ...] = ()) -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail
        self.applied = applied


def migration_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.sql"))


def checksum(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def pending(conn: Connection, directory: Path) -> list[Path]:
    """The migrations not applied yet, in order. Read-only.

    A file that was applied and then changed stops the deploy: history is not rewritten silently.
    """
    exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (VERSION_TABLE,)).fetchone()
    done: dict[str, str] = {}
    if exists and exists[0]:
        done = {str(row[0]): str(row[1]) for row in conn.execute(f"SELECT version, checksum FROM {VERSION_TABLE}")}
    todo = []
    for path in migration_files(directory):
        if path.name not in done:
            todo.append(path)
        elif done[path.name] != checksum(path):
            raise MigrationError(f"migration {path.name} was changed after it was applied: add a new migration instead")
    return todo


def apply(conn: Connection, directory: Path) -> list[str]:
    """Apply what is not applied yet, each file in its own transaction; return the versions applied now."""
    applied_now: list[str] = []
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {VERSION_TABLE} ("
        "version text PRIMARY KEY, checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
    )
    for path in pending(conn, directory):
        version, digest = path.name, checksum(path)
        try:
            with conn.transaction():
                conn.execute(path.read_text().encode())
                conn.execute(f"INSERT INTO {VERSION_TABLE} (version, checksum) VALUES (%s, %s)", (version, digest))
        except psycopg.Error as error:
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise MigrationError(f"migration {version} failed: {first_line}", str(error), tuple(applied_now)) from None
        applied_now.append(version)
    return applied_now
