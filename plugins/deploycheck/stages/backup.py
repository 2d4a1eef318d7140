"""Backup: before anything changes the database, every node of the running cluster, writes blocked meanwhile."""

from __future__ import annotations

import docker.errors
import psycopg

from deploycheck.engine.containers import project_containers
from deploycheck.engine.target import Target
from deploycheck.release import backup
from deploycheck.release.backup import Backup
from deploycheck.stack import NotReachable, database_connection
from deploycheck.stages import StageFailed


def back_up(target: Target, release: str) -> Backup | None:
    """The backup taken, or None when no database runs yet (a first deploy: nothing to lose)."""
    environment = target.environment
    database = project_containers(target.docker, environment.compose_project).get(environment.database.service)
    if database is None or database.status != "running":
        return None
    try:
        with database_connection(target) as conn:
            return backup.take(target, release, conn)
    except (backup.BackupFailed, psycopg.Error, docker.errors.DockerException, NotReachable) as error:
        raise StageFailed(f"the backup failed: {str(error).splitlines()[0]}") from None
