"""SQL migrations: files applied in name order, each once, recorded in a version table on the coordinator.

One executor runs a file, live and in the rehearsal alike: ``psql`` inside the coordinator's container, which
sends the file statement by statement (dollar quotes and all: Citus refuses several distributed DDL statements
sent as one string, citusdata/citus#6608), in one transaction together with the file's row in the version
table, stopping at the first error. A file whose first line is ``-- deploycheck: no-transaction`` runs without
that transaction (for what PostgreSQL or Citus refuse inside one, such as CREATE INDEX CONCURRENTLY); it is
recorded once it has run. An error names the file, the line and the statement, in Citus's own words.

Migrations run while the write fence refuses every other session's writes (``release.fence``), live and on the
rehearsal's copy alike (its configuration comes from a backup taken under the fence): psql's session lifts it
for itself. A statement that makes the server open a session of its own on the coordinator (a background job)
finds that session read-only, in the rehearsal first.
"""

from __future__ import annotations

import hashlib
import io
import re
import shlex
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg
from docker.models.containers import Container

from deploycheck.engine import commands
from deploycheck.engine.commands import Runner
from deploycheck.release.fence import SESSION_OPTIONS

VERSION_TABLE = "deploycheck_schema_migrations"
NO_TRANSACTION = "-- deploycheck: no-transaction"
FOLDER = "/tmp/deploycheck-migrations"
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


@dataclass(frozen=True)
class Statement:
    first_line: int
    last_line: int
    text: str


# What can hide a semicolon: comments, quoted strings and identifiers, dollar-quoted bodies.
_TOKEN = re.compile(r"--[^\n]*|/\*.*?\*/|'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|(\$[A-Za-z_]*\$).*?\1|;", re.S)


_LEADING_COMMENTS = re.compile(r"(?:\s+|--[^\n]*(?:\n|\Z)|/\*.*?\*/)*", re.S)


def statements(sql: str) -> list[Statement]:
    """The file's statements (without the comments before them) and their lines, split where psql splits them,
    to name the one that failed."""
    found: list[Statement] = []
    ends = [token.end() for token in _TOKEN.finditer(sql) if token.group(0) == ";"]
    start = 0
    for end in [*ends, len(sql)]:
        lead = _LEADING_COMMENTS.match(sql, start)
        begin = lead.end() if lead else start
        text = sql[begin:end].strip()
        if text.strip(";").strip():
            found.append(Statement(sql.count("\n", 0, begin) + 1, sql.count("\n", 0, end) + 1, text))
        start = end
    return found


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _archive(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(f"deploycheck-migrations/{name}")
            info.size, info.mode = len(data), 0o644
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _failure(path: Path, output: str) -> MigrationError:
    """The file, the line and the statement that failed, and the server's words (its ERROR, DETAIL and HINT)."""
    found = re.search(r"psql:[^:\n]*:(\d+): ERROR:\s+(.*)", output)
    if found is None:
        lines = output.strip().splitlines()
        # psql's own failure ("psql: error: connection ... failed: ...") is its first line; other words, the last.
        words = next((line for line in lines if line.startswith("psql: ")), lines[-1] if lines else "")
        words = words or "psql failed without a message"
        return MigrationError(f"migration {path.name} failed: {words}", output)
    line, message = int(found.group(1)), found.group(2).strip()
    detail = " ".join(m.group(0).strip() for m in re.finditer(r"^(DETAIL|HINT):\s+.*$", output[found.end() :], re.M))
    failed = next((s for s in statements(path.read_text()) if s.first_line <= line <= s.last_line), None)
    where = f"at line {line}"
    if failed is not None:
        first = " ".join(failed.text.split())
        where += f" ({first[:80]}{'…' if len(first) > 80 else ''})"
    reason = f"migration {path.name} failed {where}: {message}" + (f" {detail}" if detail else "")
    return MigrationError(reason, output)


# What the script that runs the files prints before each file and after each file that applied (psql prints
# nothing else on stdout with -q; its errors are sent to stdout too, so that they stand between these marks).
_STARTS = "@@deploycheck-migration-starts "
_APPLIED = "@@deploycheck-migration-applied "
_LEFT = "@@deploycheck-migrations-left"


def _script(user: str, database: str, paths: Sequence[Path]) -> str:
    """One shell script that runs the files in order, each in its own psql (its own transaction unless it says
    no-transaction, with its row in the version table), stops at the first that fails, and removes the folder."""
    lines = ["status=0"]
    for path in paths:
        text = path.read_text(errors="replace")
        files = [f"{FOLDER}/{path.name}", f"{FOLDER}/{path.name}.record"]
        psql = commands.psql_files(user, database, files, one_transaction=not text.lstrip().startswith(NO_TRANSACTION))
        lines.append(
            f"if [ $status -eq 0 ]; then echo {shlex.quote(_STARTS + path.name)}; "
            f"{shlex.join(psql.argv)} 2>&1 && echo {shlex.quote(_APPLIED + path.name)} || status=$?; fi"
        )
    # A container whose user cannot remove what the engine put there as root says so; the caller removes it.
    lines += [f"rm -rf {FOLDER} 2>/dev/null", f"[ -e {FOLDER} ] && echo {_LEFT}", "exit $status"]
    return "\n".join(lines) + "\n"


def run_files(runner: Runner, coordinator: Container, user: str, database: str, paths: Sequence[Path]) -> list[str]:
    """Run migration files in order, each recorded in the version table, with psql inside the coordinator's
    container: one copy into it and one exec for all of them (each exec costs ~65 ms here). The names applied;
    MigrationError (with those applied before it) for the first that failed."""
    if not paths:
        return []
    files: dict[str, bytes] = {}
    for path in paths:
        record = (
            f"CREATE TABLE IF NOT EXISTS {VERSION_TABLE} (version text PRIMARY KEY, checksum text NOT NULL, "
            "applied_at timestamptz NOT NULL DEFAULT now());\n"
            f"INSERT INTO {VERSION_TABLE} (version, checksum) VALUES ({_literal(path.name)}, {_literal(checksum(path))});\n"
        )
        files[path.name], files[f"{path.name}.record"] = path.read_bytes(), record.encode()
    files["run.sh"] = _script(user, database, paths).encode()
    coordinator.put_archive("/tmp", _archive(files))
    script = commands.Command(("sh", f"{FOLDER}/run.sh"), env={"PGOPTIONS": SESSION_OPTIONS})
    result = runner.exec(coordinator, script, check=False)
    if _LEFT in result.stdout:  # the engine put the folder there as root
        runner.exec(coordinator, commands.remove_tree(FOLDER, user="root"), check=False)
    applied: list[str] = []
    started: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in result.output.splitlines(keepends=True):
        if line.startswith(_LEFT):  # the script's own word after the files, not a file's output
            current = None
        elif line.startswith(_STARTS):
            current = started.setdefault(line[len(_STARTS) :].strip(), [])
        elif line.startswith(_APPLIED):
            applied.append(line[len(_APPLIED) :].strip())
            current = None
        elif current is not None:
            current.append(line)
    if result.returncode == 0 and len(applied) == len(paths):
        return applied
    failed = paths[len(applied)]
    output = "".join(started.get(failed.name) or []) or result.output.replace(_LEFT, "").strip()
    error = _failure(failed, output)
    raise MigrationError(error.reason, error.detail, tuple(applied))


def apply(conn: Connection, runner: Runner, coordinator: Container, directory: Path) -> list[str]:
    """Apply what is not applied yet, each file in its own transaction; return the versions applied now."""
    return run_files(runner, coordinator, conn.info.user, conn.info.dbname, pending(conn, directory))
