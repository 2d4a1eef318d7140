"""Restore: a release of the ledger brought back for the whole stack and verified (a manual rollback), and the
repair of what a run killed outright left behind (its release "in progress", its write fence)."""

from __future__ import annotations

from deploycheck.engine.commands import CommandFailed
from deploycheck.engine.containers import WaitFailed, project_containers
from deploycheck.engine.target import Target
from deploycheck.release.fence import FenceFailed
from deploycheck.release.ledger import Ledger
from deploycheck.release.rollback import RollbackFailed, good_release, restore_release
from deploycheck.release.running import running_release
from deploycheck.stack import NotReachable
from deploycheck.stages import StageFailed
from deploycheck.stages import fence as fence_stage


def restore(target: Target, release: str, actions: list[str]) -> None:
    """Bring ``release`` back for the whole stack and verify it; what was done goes to ``actions``."""
    try:
        restore_release(good_release(release, Ledger(target.environment.ledger_file)), target, actions)
    except (RollbackFailed, WaitFailed, CommandFailed, NotReachable) as error:
        raise StageFailed(f"release {release} could not be restored: {str(error).splitlines()[0]}") from None


def repair(target: Target, ledger: Ledger, actions: list[str]) -> None:
    """A deploy that was killed outright left its release 'in progress': close it, and bring the current
    release back where the stack no longer runs it, before this run does anything else."""
    unfinished = ledger.unfinished()
    ledger.mark_interrupted()
    actions.append(f"an earlier run was killed while deploying {', '.join(unfinished)}")
    current = ledger.current()
    stack_runs = bool(project_containers(target.docker, target.environment.compose_project))
    if current is not None and stack_runs and running_release(target, ledger) != current.id:
        restore(target, current.id, actions)


def lift_left_fence(target: Target, actions: list[str]) -> str:
    """Lift the write fence an earlier run left on (killed while it was up, or its lift failed), once the stack
    runs again; what was lifted, or "" when no fence was on."""
    left = fence_stage.left_on(target)
    if left is None:
        return ""
    try:
        fence_stage.lift(target)
    except FenceFailed as error:
        raise StageFailed(f"the write fence an earlier run left on could not be lifted: {error}") from None
    lifted = f"lifted the write fence {left.describe()}: the database accepts writes again"
    actions.append(lifted)
    return lifted
