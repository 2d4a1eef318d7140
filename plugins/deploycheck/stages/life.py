"""The stack's life by hand, as stages: what a teardown, a backup taken now and a named backup put back check
first (in preflight), the ``teardown`` stage, and the ``restore_backup`` stage.

- ``--teardown``: preflight takes the lock; the backup stage backs the database up (``--no-backup``: it does
  not run); then ``docker compose down``, its volumes kept unless ``--purge-volumes``. A backup that fails
  refuses the teardown: nothing is removed.
- ``--backup``: preflight takes the lock and finds the database running; the backup stage takes the backup.
- ``--restore-backup=NAME``: preflight takes the lock, finds the database running a release of the ledger and
  the backup fitting its nodes; the backup stage takes a fresh backup of what is there; then every database
  node is put back to NAME (``put_back``: the one function every such restore goes through), the release is
  verified as a rollback verifies it, and the smoke checks run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import docker.errors
import psycopg

from deploycheck.engine import routes
from deploycheck.engine.commands import CommandFailed
from deploycheck.engine.compose import Compose, compose_for
from deploycheck.engine.containers import PROJECT_LABEL, WaitFailed, project_containers, service_container
from deploycheck.engine.target import Target
from deploycheck.release import backup
from deploycheck.release.inventory import BackupFound
from deploycheck.release.ledger import Ledger
from deploycheck.release.migrations import MigrationError, pending
from deploycheck.release.rollback import (
    RollbackFailed,
    compose_of,
    good_release,
    verify_serving,
    wait_cluster_reachable,
)
from deploycheck.stack import NotReachable, database_connection
from deploycheck.stages import StageFailed


def database_running(target: Target, why: str) -> None:
    """The database's service runs, or the stage fails saying ``why`` it must."""
    environment = target.environment
    service = environment.stack.database.service
    container = service_container(target.docker, environment.compose_project, service)
    if container is None or container.status != "running":
        state = "has no container" if container is None else f"is {container.status}"
        raise StageFailed(f"the database ({service}) of project {environment.compose_project} {state}, so {why}")


def backup_fits(target: Target, found: BackupFound) -> None:
    """A backup can be put back only onto the nodes it holds."""
    nodes = target.environment.stack.database.node_services
    if sorted(found.services) != sorted(nodes):
        raise StageFailed(
            f"backup {found.name} holds the nodes {', '.join(found.services) or 'none'}, and the stack's database "
            f"has {', '.join(nodes)}: it cannot be restored onto it"
        )


def tear_down(target: Target, release: str, purge: bool) -> dict[str, Any]:
    """``docker compose down`` of the stack (its volumes too when ``purge``); what was removed."""
    environment = target.environment
    project = environment.compose_project
    client = target.docker
    before = sorted(c.name for c in project_containers(client, project).values())
    compose = compose_for(environment, target.runner, release, environment.citus_image)
    try:
        compose.down(remove_volumes=purge, timeout=environment.timeouts.stage)
    except CommandFailed as error:
        raise StageFailed(f"docker compose could not remove the stack of project {project}", str(error)) from None
    left = sorted(project_containers(client, project))
    if left:
        raise StageFailed(
            f"containers of project {project} are still there after docker compose down: {', '.join(left)}"
        )
    label = {"label": f"{PROJECT_LABEL}={project}"}
    removed_volumes: list[str] = []
    if purge:  # also a volume of the project that the compose files no longer declare
        try:
            for volume in client.volumes.list(filters=label):
                volume.remove(force=True)
                removed_volumes.append(str(volume.name))
        except docker.errors.DockerException as error:
            raise StageFailed(f"a volume of project {project} could not be removed: {error}") from None
    kept = sorted(str(v.name) for v in client.volumes.list(filters=label))
    return {"volumes": "purged" if purge else "kept", "removed": before, "volumes_kept": kept}


def put_back(target: Target, release: str, compose: Compose, folder: Path) -> float:
    """Every database node put back to the backup in ``folder``, onto ``release``; the seconds it took. The one
    function a restore of a named backup goes through (where the write fence of a rollback's restore wraps it
    too)."""
    routes.maintenance(target)  # ended once the release is verified (verify_serving)
    seconds = backup.restore(target, compose, folder, release=release, why=f"--restore-backup={folder.name}")
    wait_cluster_reachable(target)
    return seconds


def restore_backup(target: Target, release_id: str, found: BackupFound, actions: list[str]) -> dict[str, Any]:
    """``found`` put back onto the running release ``release_id``, then that release verified as a rollback
    verifies it; what was done goes to ``actions``."""
    environment = target.environment
    try:
        release = good_release(release_id, Ledger(environment.ledger_file))
        seconds = put_back(target, release.id, compose_of(release, target), found.folder)
        actions.append(
            f"restored every database node from backup {found.name} (taken for release {found.release}, "
            f"{found.bytes / 2**20:.1f} MiB) in {seconds:.1f} s"
        )
        verify_serving(release, target, actions)
        if environment.migrations_dir is not None:
            with database_connection(target) as conn:
                todo = pending(conn, environment.migrations_dir)
            if todo:
                raise StageFailed(
                    f"backup {found.name} holds the database from before migration {todo[0].name}, which release "
                    f"{release.id} needs: deploy release {release.id} again to apply it (--release={release.id})"
                )
    except (
        backup.BackupFailed,
        CommandFailed,
        WaitFailed,
        RollbackFailed,
        NotReachable,
        MigrationError,
        psycopg.Error,
        docker.errors.DockerException,
    ) as error:
        words = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise StageFailed(f"backup {found.name} could not be restored: {words}") from None
    return {
        "name": found.name,
        "release": found.release,
        "taken_at": found.taken_at,
        "bytes": found.bytes,
        "seconds": round(seconds, 3),
        "onto": release.id,
    }
