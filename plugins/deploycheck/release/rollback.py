"""The rollback decision and action.

- A failed deploy onto a stack whose previous release is in the ledger brings that release back (its images,
  its configuration) for the whole stack, then verifies it (``verify_serving``): every container healthy and
  running the image id the ledger recorded, every HTTP service's readiness request answering directly and
  through the proxy, and its release probe naming the restored release.
- A failed first deploy has its containers removed; its data volumes are kept unless the environment purges them.
- When the failed release changed the database (it applied migrations), every node's data is first put back
  to the backup the backup stage took before the deploy changed anything.

The decision is a pure function of what the run was asked to do and what it did (``Facts``); the action
records what it did in a ``RollbackRecord``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import docker
import psycopg
import requests

from deploycheck.engine import routes
from deploycheck.engine.commands import CommandFailed
from deploycheck.engine.compose import Compose, compose_for
from deploycheck.engine.containers import WaitFailed, project_containers, wait_healthy, wait_http_ok
from deploycheck.engine.polling import poll
from deploycheck.engine.target import EngineUnreachable, Target
from deploycheck.record.record import Mode, RollbackRecord
from deploycheck.release import backup, swap
from deploycheck.release.backup import Backup
from deploycheck.release.ledger import Ledger, Release
from deploycheck.stack import NotReachable, Stack, database_connection

Action = Literal["none", "remove", "restore", "keep", "leave"]


@dataclass(frozen=True)
class Facts:
    """What a run did to the stack, as far as its rollback must know."""

    changed_stack: bool = False  # it started, replaced or restored containers
    stack_existed_before: bool = False
    previous_release: str | None = None  # the ledger's current release when the run started
    backup: Backup | None = None  # taken before anything changed the database
    migrations_applied: tuple[str, ...] = ()
    compose: Compose | None = None  # the failed release's Compose model, to remove a first deploy
    removes_volumes: bool = False  # rollback.purge_volumes of the environment
    swaps: tuple[swap.Swap, ...] = ()  # services whose new containers run beside the old ones (release.swap)


@dataclass(frozen=True)
class Decision:
    action: Action
    why: str


def decide(mode: Mode, release: str, failed: bool, facts: Facts, *, keep_failed: bool) -> Decision:
    """What to do at the end of a run. Pure: it reads only what it is given."""
    if not failed:
        return Decision("none", "not needed: every stage and check passed")
    if mode == "verify-only":
        return Decision("none", "not performed: verify-only runs never roll back")
    if mode == "already-current":
        return Decision("none", f"not performed: release {release} was already current and this run changed nothing")
    if mode == "rollback-to":
        return Decision("none", "not performed: a manual rollback that fails is reported, not rolled back again")
    if mode == "restore-backup":
        taken = facts.backup.folder.name if facts.backup is not None else None
        again = f": --restore-backup={taken} puts back what was there before it" if taken else ""
        return Decision("none", f"not performed: a restore by hand that fails is reported{again}")
    if mode in ("teardown", "backup", "list-backups", "tenants"):
        return Decision("none", f"not performed: a {mode} run is reported, never rolled back")
    if not facts.changed_stack:
        return Decision("none", "not needed: the run failed before it changed anything")
    if keep_failed:
        return Decision("keep", "skipped: --keep-failed keeps the failed stack for debugging")
    previous = facts.previous_release
    if previous is not None and previous != release:
        return Decision("restore", f"restoring the previous release {previous}")
    if facts.stack_existed_before:
        return Decision(
            "leave",
            "not performed: the stack was running before this deploy and no other good release is in the ledger",
        )
    volumes = (
        "its data volumes are purged (rollback.purge_volumes)" if facts.removes_volumes else "its data volumes are kept"
    )
    return Decision("remove", f"removing this first deploy's containers; {volumes}")


class RollbackFailed(Exception):
    pass


def _remove(facts: Facts, target: Target, rollback: RollbackRecord) -> None:
    project = target.environment.compose_project
    if facts.compose is None:
        raise RollbackFailed("no Compose handle: the images stage did not run")
    facts.compose.down(remove_volumes=facts.removes_volumes)
    rollback.actions.append(
        f"removed the containers of project {project}"
        + (" and purged its volumes (rollback.purge_volumes)" if facts.removes_volumes else "; kept its volumes")
    )
    left = project_containers(target.docker, project)
    if left:
        raise RollbackFailed(f"containers still present after removal: {', '.join(sorted(left))}")


def compose_of(release: Release, target: Target) -> Compose:
    """The Compose handle that runs ``release`` as it was deployed: its own model, its images pinned."""
    environment = target.environment
    snapshot = environment.configurations_dir / release.configuration
    if not release.configuration or not snapshot.is_file():
        raise RollbackFailed(
            f"the configuration of release {release.id} ({snapshot}) is gone: restore it from a backup of "
            f"{environment.state_dir}, or deploy that release again"
        )
    return compose_for(environment, target.runner, release.id, release.citus_image, configuration=snapshot)


def good_release(release_id: str, ledger: Ledger) -> Release:
    """The ledger's entry of a release that deployed green; a rollback can only bring back such a release."""
    release = ledger.good(release_id)
    if release is None:
        raise RollbackFailed(f"release {release_id} never deployed green: it is not in the ledger {ledger.path}")
    return release


def verify_serving(release: Release, target: Target, actions: list[str]) -> None:
    """That ``release`` is what runs and serves: every container healthy and running the image the ledger
    recorded for its service, every HTTP service ready directly and through the proxy, and naming the release
    where it says which it runs. A rollback that did not bring the old images back fails here."""
    environment, client = target.environment, target.docker
    project, secrets, deadline = environment.compose_project, environment.all_secrets, environment.timeouts.stage
    wait_healthy(client, project, list(release.image_ids), deadline, secrets)
    containers = project_containers(client, project)
    running = {service: str(container.attrs.get("Image", "")) for service, container in containers.items()}
    wrong = [
        f"{service} runs {running.get(service, 'nothing')[:19]}, not {image_id[:19]}"
        for service, image_id in release.image_ids.items()
        if running.get(service) != image_id
    ]
    if wrong:
        raise RollbackFailed(f"release {release.id}'s images are not what runs: {'; '.join(wrong)}")
    stack = Stack.attach(target, release.id)
    contract = environment.stack
    # Ready directly first; only then does the proxy route to them (its maintenance answer, during a restore of
    # the database, ends here), and every routed one is ready through it.
    for service in contract.http:
        url = f"{stack.url(service.service)}{service.ready.path}"
        wait_http_ok(url, deadline, containers[service.service], service.service, secrets, status=service.ready.status)
    problem = routes.follow(target)
    if problem is not None:
        raise RollbackFailed(f"the proxy could not take release {release.id}'s services: {problem}")
    for service in contract.http:
        if contract.proxy is not None and service.service in contract.proxy.routes:
            proxy = contract.proxy.service
            url = f"{stack.url(service.service, 'proxy')}{service.ready.path}"
            wait_http_ok(url, deadline, containers[proxy], proxy, secrets, status=service.ready.status)
        if service.release is not None:
            answer = requests.get(f"{stack.url(service.service)}{service.release.path}", timeout=10).json()
            if answer.get(service.release.field) != release.id:
                raise RollbackFailed(
                    f"{service.service} says it runs {answer.get(service.release.field)!r} "
                    f"({service.release.path}), not release {release.id}"
                )
    naming = " and naming it" if any(s.release for s in contract.http) else ""
    actions.append(
        f"verified release {release.id}: every container healthy and running its recorded image, every HTTP "
        f"service ready{naming}"
    )


def wait_cluster_reachable(target: Target) -> None:
    """After a restore of the database: the Citus coordinator connects to every active worker (a node healthy by
    its pg_isready may still refuse a distributed query's connection), so that the proxy's maintenance answer ends
    only once the application's queries can reach every shard. Not applicable to PostgreSQL."""
    environment = target.environment
    if not environment.stack.database.is_citus:
        return
    last = ["no answer yet"]

    def reachable() -> bool | None:
        try:
            with database_connection(target) as conn:
                row = conn.execute(
                    "SELECT bool_and(citus_check_connection_to_node(nodename, nodeport)) FROM pg_dist_node "
                    "WHERE isactive AND groupid <> 0"
                ).fetchone()
        except (psycopg.Error, NotReachable) as error:
            last[0] = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            return None
        if row is not None and row[0] is not False:  # NULL: no worker at all
            return True
        last[0] = "the coordinator cannot connect to every worker"
        return None

    poll(
        reachable,
        seconds=environment.timeouts.stage,
        every=0.2,
        timed_out=lambda: RollbackFailed(f"after the restore, {last[0]}"),
    )


def restore_release(previous: Release, target: Target, actions: list[str]) -> None:
    """A release's images and configuration for the whole stack, then verified; what was done goes to ``actions``."""
    compose_of(previous, target).up(list(previous.image_ids), timeout=target.environment.timeouts.stage)
    actions.append(f"brought release {previous.id} back: its images and its configuration {previous.configuration}")
    verify_serving(previous, target, actions)


def _restore(facts: Facts, target: Target, rollback: RollbackRecord) -> None:
    """The database first, when the failed release changed it, then the previous release's containers."""
    assert facts.previous_release is not None
    # Read once: for the database and the containers.
    previous = good_release(facts.previous_release, Ledger(target.environment.ledger_file))
    swap.undo(target, facts.swaps, rollback.actions)  # the old containers serve again before anything else
    if facts.migrations_applied:
        if facts.backup is None:
            raise RollbackFailed("the failed release changed the database, and no backup was taken before it")
        why = f"the rollback of a deploy that applied {', '.join(facts.migrations_applied)}"
        meanwhile = routes.maintenance(target)
        seconds = backup.restore(
            target, compose_of(previous, target), facts.backup.folder, release=previous.id, why=why
        )
        wait_cluster_reachable(target)
        rollback.database_restored = True
        rollback.database_restore_seconds = seconds
        rollback.actions.append(
            f"restored the database of every node from {facts.backup.folder} "
            f"({facts.backup.bytes / 2**20:.1f} MiB) in {seconds:.1f} s: migrations "
            f"{', '.join(facts.migrations_applied)} of the failed release are undone"
            + (f"; {meanwhile}" if meanwhile else "")
        )
    restore_release(previous, target, rollback.actions)
    rollback.restored_release = previous.id


def perform(decision: Decision, facts: Facts, target: Target, rollback: RollbackRecord) -> None:
    """Carry the decision out and record what was done, how long it took and whether it worked."""
    rollback.outcome = decision.why
    if decision.action not in ("remove", "restore"):
        if decision.action == "keep":
            rollback.actions.append(f"kept the failed stack of project {target.environment.compose_project} running")
        return
    rollback.performed = True
    rollback.started_at = time.time()
    start = time.monotonic()
    try:
        if decision.action == "restore":
            _restore(facts, target, rollback)
        else:
            _remove(facts, target, rollback)
        rollback.outcome = "passed"
    except (
        CommandFailed,
        RollbackFailed,
        WaitFailed,
        requests.RequestException,
        docker.errors.DockerException,
        EngineUnreachable,
        NotReachable,
        backup.BackupFailed,
        routes.RoutesFailed,
    ) as error:
        rollback.outcome = "failed"
        rollback.actions.append(
            f"rollback failed: {str(error).splitlines()[0] if str(error) else type(error).__name__}"
        )
    finally:
        rollback.seconds = time.monotonic() - start
