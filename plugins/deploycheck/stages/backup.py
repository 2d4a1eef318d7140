"""Backup: before anything changes the database, every node of the running cluster, writes blocked meanwhile."""

from __future__ import annotations

import docker.errors
import psycopg

from deploycheck.engine.containers import project_containers
from deploycheck.engine.target import Target
from deploycheck.release import backup
from deploycheck.release.backup import Backup
from deploycheck.stack import coordinator_connection
from deploycheck.stages import StageFailed


def back_up(target: Target, release: str) -> Backup | None:
    """The backup taken, or None when no database runs yet (a first deploy: nothing to lose)."""
    coordinator = project_containers(target.docker, target.environment.compose_project).get("coordinator")
    if coordinator is None or coordinator.status != "running":
        return None
    try:
        with coordinator_connection(target) as conn:
            return backup.take(target, release, conn)
    except (backup.BackupFailed, psycopg.Error, docker.errors.DockerException) as error:
        raise StageFailed(f"the backup failed: {str(error).splitlines()[0]}") from None
