"""The rollback decision and action (first version: undo this run's deploy; the data volumes are kept)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import docker

from plugins.commands import CommandFailed, Compose
from plugins.containers import project_containers
from plugins.record import RunRecord

Action = Literal["none", "remove", "keep", "leave"]


@dataclass(frozen=True)
class Decision:
    action: Action
    why: str


def decide(record: RunRecord, *, verify_only: bool, keep_failed: bool) -> Decision:
    """What to do at the end of a run. Pure: it only reads the record and the options."""
    if not record.failed:
        return Decision("none", "not needed: every stage and check passed")
    if verify_only:
        return Decision("none", "not performed: verify-only runs never roll back")
    if not record.deployed_anything:
        return Decision("none", "not needed: the run failed before it changed anything")
    if keep_failed:
        return Decision("keep", "skipped: --keep-failed keeps the failed stack for debugging")
    if record.stack_existed_before:
        # Restoring the previous release needs the release ledger; until then, do not take down what ran.
        return Decision(
            "leave",
            "not performed: the stack was running before this deploy, and restoring a previous release is not available yet",
        )
    return Decision("remove", "removing this first deploy's containers; its data volumes are kept")


def perform(
    decision: Decision,
    record: RunRecord,
    compose: Compose | None,
    client: Callable[[], docker.DockerClient],
    purge_volumes: bool,
) -> None:
    """Carry the decision out and record what was done, how long it took and whether it worked."""
    rollback = record.rollback
    rollback.outcome = decision.why
    if decision.action != "remove":
        rollback.performed = False
        if decision.action == "keep":
            rollback.actions.append(f"kept the failed stack of project {record.compose_project} running")
        return
    rollback.performed = True
    rollback.started_at = time.time()
    start = time.monotonic()
    try:
        if compose is None:
            raise RuntimeError("no Compose handle: the images stage did not run")
        compose.down(remove_volumes=purge_volumes)
        rollback.actions.append(
            f"removed the containers of project {record.compose_project}"
            + (" and purged its volumes (rollback.purge_volumes)" if purge_volumes else "; kept its volumes")
        )
        left = project_containers(client(), record.compose_project)
        if left:
            raise RuntimeError(f"containers still present after removal: {', '.join(sorted(left))}")
        rollback.outcome = "passed"
    except (CommandFailed, RuntimeError, docker.errors.DockerException) as error:
        rollback.outcome = "failed"
        rollback.actions.append(f"rollback failed: {error}")
    finally:
        rollback.seconds = time.monotonic() - start
