"""Pending migrations tried first on a throwaway copy of the live cluster.

The copy is made from the backup the backup stage just took: one container per node, each on a new volume
filled from that node's backup, with the same host names on a private internal network (so the Citus
metadata's node names resolve to the copies and nothing can reach the live cluster). The migrations are
applied there in order by the same executor as live (``migrations.run_files``), so a migration passes the
rehearsal exactly when it passes live; the first that fails stops the deploy before anything live has changed.
The copy is removed whatever happens.

The backup was taken under the write fence (``release.fence``), so the copy's coordinator starts read-only for
every session, as the live one is while the migrations run there: the executor's session lifts it for itself.
"""

from __future__ import annotations

import contextlib
import uuid
from pathlib import Path

import docker
import docker.errors
from docker.models.containers import Container

from deploycheck.engine import commands
from deploycheck.engine.containers import logs_tail, project_containers
from deploycheck.engine.polling import poll
from deploycheck.engine.target import Target
from deploycheck.release import migrations
from deploycheck.release.backup import DATA_DIR, fill_volume
from deploycheck.release.migrations import MigrationError
from deploycheck.request.secrets import mask_text

READY_SECONDS = 120


class MigrationFailedOnCopy(Exception):
    def __init__(self, failure: MigrationError) -> None:
        super().__init__(f"{failure.reason.replace(' failed ', ' failed on a copy of the database ', 1)}")
        self.failure = failure


def _wait_ready(target: Target, container: Container) -> None:
    environment = target.environment

    def ready() -> bool | None:
        container.reload()
        if container.status in ("exited", "dead"):
            logs = mask_text(logs_tail(container, 20), environment.all_secrets)
            raise RuntimeError(f"the copy of {container.name} exited: {logs}")
        command = commands.pg_isready(environment.database.user, environment.database.name)
        return True if target.runner.exec(container, command, check=False).returncode == 0 else None

    poll(
        ready,
        seconds=READY_SECONDS,
        every=0.25,
        timed_out=lambda: RuntimeError(f"the copy of {container.name} did not become ready within {READY_SECONDS} s"),
    )


def rehearse(target: Target, backup_folder: Path, pending: list[Path]) -> None:
    """Apply ``pending`` to a copy of the cluster made from ``backup_folder``; raise on the first failure."""
    environment, client = target.environment, target.docker
    live = project_containers(client, environment.compose_project)
    nodes = environment.node_services
    tag = f"dccopy-{environment.compose_project}-{uuid.uuid4().hex[:8]}"
    network = client.networks.create(tag, internal=True, labels={"org.deploycheck.role": "migration-copy"})
    copies: list[Container] = []
    volumes: list[str] = []
    password = environment.db_password.reveal()  # only into the copies' environment, as Compose does live
    node_environment = {
        "POSTGRES_USER": environment.database.user,
        "POSTGRES_DB": environment.database.name,
        "POSTGRES_PASSWORD": password,
        "PGUSER": environment.database.user,
        "PGPASSWORD": password,
    }
    try:
        for node in nodes:
            image = live[node].image.id
            volume = client.volumes.create(f"{tag}-{node}", labels={"org.deploycheck.role": "migration-copy"}).name
            volumes.append(volume)
            fill_volume(client, image, volume, backup_folder / f"{node}.tar", environment.compose_project)
            copies.append(
                client.containers.run(
                    image,
                    name=f"{tag}-{node}",
                    hostname=node,
                    detach=True,
                    environment=node_environment,
                    volumes={volume: {"bind": DATA_DIR, "mode": "rw"}},
                    network=tag,
                    labels={"org.deploycheck.role": "migration-copy"},
                )
            )
            # Reachable by the node's own name, as in the live cluster's metadata.
            network.disconnect(copies[-1])
            network.connect(copies[-1], aliases=[node])
        for copy in copies:
            _wait_ready(target, copy)
        coordinator = copies[0]
        try:
            migrations.run_files(
                target.runner, coordinator, environment.database.user, environment.database.name, pending
            )
        except MigrationError as failure:
            raise MigrationFailedOnCopy(failure) from None
    finally:
        for copy in copies:
            with contextlib.suppress(docker.errors.APIError):
                copy.remove(force=True, v=True)
        for volume in volumes:
            with contextlib.suppress(docker.errors.APIError):
                client.volumes.get(volume).remove(force=True)
        network.remove()
