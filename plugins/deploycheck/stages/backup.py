"""Backup: before anything changes the database, every node of the running cluster. A deploy that will apply
migrations puts the write fence up first (``release.fence``): its rollback would restore this backup."""

from __future__ import annotations

from pathlib import Path

import docker.errors
import psycopg

from deploycheck.engine.target import Target
from deploycheck.release import backup
from deploycheck.release.backup import Backup
from deploycheck.release.migrations import MigrationError, pending
from deploycheck.stack import NotReachable, database_connection
from deploycheck.stages import StageFailed
from deploycheck.stages.fence import database_runs


def pending_migrations(target: Target) -> list[Path]:
    """The migrations this deploy will apply to the running database (read-only)."""
    migrations_dir = target.environment.migrations_dir
    if migrations_dir is None:
        return []
    try:
        with database_connection(target) as conn:
            return pending(conn, migrations_dir)
    except MigrationError as error:
        raise StageFailed(error.reason) from None
    except (psycopg.Error, NotReachable) as error:
        raise StageFailed(f"the pending migrations could not be read: {str(error).splitlines()[0]}") from None


def back_up(target: Target, release: str, *, fenced: bool) -> Backup | None:
    """The backup taken, or None when no database runs yet (a first deploy: nothing to lose). ``fenced``: the
    write fence is up, so no write can land during it and the nodes' backups need no lock to agree."""
    if not database_runs(target):
        return None
    try:
        with database_connection(target) as conn:
            return backup.take(target, release, conn, fenced=fenced)
    except (backup.BackupFailed, psycopg.Error, docker.errors.DockerException, NotReachable) as error:
        raise StageFailed(f"the backup failed: {str(error).splitlines()[0]}") from None
