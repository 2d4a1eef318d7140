"""Migrations: what is pending applied on the coordinator, each file in its own transaction."""

from __future__ import annotations

from deploycheck.engine.containers import project_containers
from deploycheck.engine.target import Target
from deploycheck.release import migrations
from deploycheck.stack import database_connection
from deploycheck.stages import StageNotApplicable


def apply(target: Target) -> list[str]:
    """The migrations applied now; a failure raises ``migrations.MigrationError`` with those applied before it."""
    environment = target.environment
    if environment.migrations_dir is None:
        raise StageNotApplicable("the environment names no migrations_dir")
    database = project_containers(target.docker, environment.compose_project)[environment.database.service]
    with database_connection(target) as conn:
        return migrations.apply(conn, target.runner, database, environment.migrations_dir)
