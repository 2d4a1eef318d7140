"""Rehearsal: the pending migrations applied first to a throwaway copy of the live cluster, made from its backup."""

from __future__ import annotations

from pathlib import Path

import docker.errors

from deploycheck.engine.target import Target
from deploycheck.release import rehearsal
from deploycheck.release.backup import Backup
from deploycheck.release.migrations import MigrationError, pending
from deploycheck.stack import database_connection
from deploycheck.stages import StageFailed


def rehearse(target: Target, backup: Backup) -> list[Path]:
    """The migrations rehearsed (none pending: nothing to rehearse); StageFailed names the one that failed."""
    migrations_dir = target.environment.migrations_dir
    if migrations_dir is None:
        return []
    try:
        with database_connection(target) as conn:
            todo = pending(conn, migrations_dir)
    except MigrationError as error:
        raise StageFailed(error.reason) from None
    if not todo:
        return []
    try:
        rehearsal.rehearse(target, backup.folder, todo)
    except rehearsal.MigrationFailedOnCopy as failure:
        raise StageFailed(str(failure)) from None
    except (RuntimeError, docker.errors.DockerException) as error:
        raise StageFailed(f"the copy of the database for the rehearsal failed: {error}") from None
    return todo
