"""The rollback decision and action.

- A failed deploy onto a stack whose previous release is in the ledger brings that release back (its images,
  its configuration) for the whole stack, then verifies it: every container healthy, /ready answering 200
  directly and through Nginx, and /version naming the restored release.
- A failed first deploy has its containers removed; its data volumes are kept unless the environment purges.
- When the failed release changed the database (it applied migrations), every node's data is first put back
  to the backup the backup stage took before the deploy changed anything.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import docker
import requests

from plugins import backup
from plugins.commands import CommandFailed, Compose, compose_for
from plugins.containers import WaitFailed, project_containers, wait_healthy, wait_http_ok
from plugins.environment import Environment
from plugins.images import split_reference
from plugins.ledger import Ledger, Release
from plugins.record import RunRecord

Action = Literal["none", "remove", "restore", "keep", "leave"]


@dataclass(frozen=True)
class Decision:
    action: Action
    why: str


def decide(record: RunRecord, *, keep_failed: bool) -> Decision:
    """What to do at the end of a run. Pure: it only reads the record and the options."""
    if not record.failed:
        return Decision("none", "not needed: every stage and check passed")
    if record.mode == "verify-only":
        return Decision("none", "not performed: verify-only runs never roll back")
    if record.mode == "already-current":
        return Decision(
            "none", f"not performed: release {record.release} was already current and this run changed nothing"
        )
    if record.mode == "rollback-to":
        return Decision("none", "not performed: a manual rollback that fails is reported, not rolled back again")
    if not record.deployed_anything:
        return Decision("none", "not needed: the run failed before it changed anything")
    if keep_failed:
        return Decision("keep", "skipped: --keep-failed keeps the failed stack for debugging")
    previous = record.previous_release
    if previous is not None and previous != record.release:
        return Decision("restore", f"restoring the previous release {previous}")
    if record.stack_existed_before:
        return Decision(
            "leave",
            "not performed: the stack was running before this deploy and no other good release is in the ledger",
        )
    return Decision("remove", "removing this first deploy's containers; its data volumes are kept")


class RollbackFailed(Exception):
    pass


def _remove(record: RunRecord, environment: Environment, compose: Compose | None, client: docker.DockerClient) -> None:
    if compose is None:
        raise RollbackFailed("no Compose handle: the images stage did not run")
    compose.down(remove_volumes=environment.purge_volumes_on_rollback)
    record.rollback.actions.append(
        f"removed the containers of project {record.compose_project}"
        + (
            " and purged its volumes (rollback.purge_volumes)"
            if environment.purge_volumes_on_rollback
            else "; kept its volumes"
        )
    )
    left = project_containers(client, record.compose_project)
    if left:
        raise RollbackFailed(f"containers still present after removal: {', '.join(sorted(left))}")


def compose_of(release: Release, environment: Environment) -> Compose:
    """The Compose handle that runs ``release`` as it was deployed: its images and its configuration snapshot."""
    snapshot = environment.configurations_dir / release.configuration if release.configuration else None
    if snapshot is not None and not snapshot.is_file():
        raise RollbackFailed(
            f"the configuration of release {release.id} ({snapshot}) is gone: restore it from a backup of "
            f"{environment.state_dir}, or deploy that release again"
        )
    return compose_for(environment, release.citus_image, release.id, release.images, configuration=snapshot)


def _pin_citus_image(release: Release, client: docker.DockerClient, actions: list[str]) -> None:
    """Point the Citus image's tag back at the build ``release`` ran, if the tag has moved since."""
    recorded = release.image_ids.get("citus")
    if not recorded:
        return  # a ledger entry from before Citus image ids were kept
    try:
        if client.images.get(release.citus_image).id == recorded:
            return
    except docker.errors.ImageNotFound:
        pass
    try:
        image = client.images.get(recorded)
    except docker.errors.ImageNotFound:
        actions.append(
            f"the Citus image {release.citus_image} of release {release.id} ({recorded[:19]}) is gone: "
            "running the one tagged now"
        )
        return
    image.tag(*split_reference(release.citus_image))
    actions.append(f"pointed {release.citus_image} back at the build release {release.id} ran ({recorded[:19]})")


def good_release(release_id: str, environment: Environment) -> Release:
    """The ledger's entry of a release that deployed green; a rollback can only bring back such a release."""
    release = Ledger(environment.ledger_file).good(release_id)
    if release is None:
        raise RollbackFailed(
            f"release {release_id} never deployed green: it is not in the ledger {environment.ledger_file}"
        )
    return release


def restore_release(
    previous: Release, environment: Environment, client: docker.DockerClient, actions: list[str]
) -> None:
    """A release's images and configuration for the whole stack, then verified; what was done goes to ``actions``."""
    compose = compose_of(previous, environment)
    _pin_citus_image(previous, client, actions)
    services = environment.services
    compose.up(services, timeout=environment.timeouts.stage)
    configuration = (
        f"its configuration {previous.configuration}" if previous.configuration else "the current compose files"
    )
    actions.append(f"brought release {previous.id} back: {', '.join(previous.images.values())}, {configuration}")
    wait_healthy(client, environment.compose_project, services, environment.timeouts.stage, environment.secrets)
    for url, service in ((environment.api_url, "api"), (environment.proxy_url, "nginx")):
        wait_http_ok(
            f"{url}/ready",
            environment.timeouts.stage,
            client,
            environment.compose_project,
            service,
            environment.secrets,
        )
    served = requests.get(f"{environment.api_url}/version", timeout=10).json().get("release")
    if served != previous.id:
        raise RollbackFailed(f"/version says {served}, not the restored release {previous.id}")
    actions.append(f"verified release {previous.id}: every container healthy, /ready 200, /version")


def _restore(record: RunRecord, environment: Environment, client: docker.DockerClient) -> None:
    """The database first, when the failed release changed it, then the previous release's containers."""
    assert record.previous_release is not None
    previous = good_release(record.previous_release, environment)  # read once: for the database and the containers
    if record.migrations_applied:
        if record.backup_folder is None:
            raise RollbackFailed("the failed release changed the database, and no backup was taken before it")
        compose = compose_of(previous, environment)
        seconds = backup.restore(environment, client, compose, Path(record.backup_folder))
        record.rollback.database_restored = True
        record.rollback.database_restore_seconds = seconds
        record.rollback.actions.append(
            f"restored the database of every node from {record.backup_folder} "
            f"({record.backup_bytes / 2**20:.1f} MiB) in {seconds:.1f} s: migrations "
            f"{', '.join(record.migrations_applied)} of the failed release are undone"
        )
    restore_release(previous, environment, client, record.rollback.actions)
    record.rollback.restored_release = previous.id


def perform(
    decision: Decision,
    record: RunRecord,
    environment: Environment,
    compose: Compose | None,
    client: Callable[[], docker.DockerClient],
) -> None:
    """Carry the decision out and record what was done, how long it took and whether it worked."""
    rollback = record.rollback
    rollback.outcome = decision.why
    if decision.action not in ("remove", "restore"):
        if decision.action == "keep":
            rollback.actions.append(f"kept the failed stack of project {record.compose_project} running")
        return
    rollback.performed = True
    rollback.started_at = time.time()
    start = time.monotonic()
    try:
        if decision.action == "restore":
            _restore(record, environment, client())
        else:
            _remove(record, environment, compose, client())
        rollback.outcome = "passed"
    except (
        CommandFailed,
        RollbackFailed,
        WaitFailed,
        requests.RequestException,
        docker.errors.DockerException,
    ) as error:
        rollback.outcome = "failed"
        rollback.actions.append(
            f"rollback failed: {str(error).splitlines()[0] if str(error) else type(error).__name__}"
        )
    finally:
        rollback.seconds = time.monotonic() - start
