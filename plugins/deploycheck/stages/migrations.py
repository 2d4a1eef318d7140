"""Migrations: what is pending applied on the coordinator, each file in its own transaction."""

from __future__ import annotations

from deploycheck.engine.containers import project_containers
from deploycheck.engine.target import Target
from deploycheck.release import migrations
from deploycheck.stack import coordinator_connection


def apply(target: Target) -> list[str]:
    """The migrations applied now; a failure raises ``migrations.MigrationError`` with those applied before it."""
    environment = target.environment
    coordinator = project_containers(target.docker, environment.compose_project)["coordinator"]
    with coordinator_connection(target) as conn:
        return migrations.apply(conn, target.runner, coordinator, environment.migrations_dir)
