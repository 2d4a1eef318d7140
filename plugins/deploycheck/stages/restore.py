"""Restore: a release of the ledger brought back for the whole stack and verified (a manual rollback), and the
repair of what a run killed outright left behind (a restore of the database under way, its release "in
progress", its write fence)."""

from __future__ import annotations

import docker.errors

from deploycheck.engine import routes
from deploycheck.engine.commands import CommandFailed
from deploycheck.engine.containers import WaitFailed, project_containers
from deploycheck.engine.ssh import SSHError
from deploycheck.engine.target import EngineUnreachable, Target
from deploycheck.release import backup
from deploycheck.release.fence import FenceFailed
from deploycheck.release.ledger import Ledger
from deploycheck.release.rollback import (
    RollbackFailed,
    compose_of,
    good_release,
    restore_release,
    wait_cluster_reachable,
)
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


def interrupted_restore(target: Target) -> backup.Journal | None:
    """The restore of the database a killed run left under way, if any (its journal)."""
    try:
        return backup.read_journal(target.environment.restore_journal_file)
    except backup.JournalDamaged as error:
        raise StageFailed(str(error)) from None


def journal_left(target: Target) -> backup.Journal | None:
    """The restore a killed run left under way, for a run that only says so (None too when it is unreadable)."""
    try:
        return interrupted_restore(target)
    except StageFailed:
        return None


def needs_repair(target: Target, ledger: Ledger) -> bool:
    """Whether a killed run left anything: a restore under way or its helpers, a release "in progress"."""
    try:
        if backup.read_journal(target.environment.restore_journal_file) is not None:
            return True
    except backup.JournalDamaged:
        return True  # said by the repair, which cannot go on
    return bool(backup.leftover_helpers(target.docker, target.environment.compose_project)) or bool(ledger.unfinished())


def finish_restore(target: Target, actions: list[str]) -> None:
    """Remove the restore helpers a killed run left, and do the restore it was killed in again, from the same
    backup onto the same release, before anything else (its write fence, in the backup, stays up until then)."""
    environment = target.environment
    journal = interrupted_restore(target)
    removed = backup.remove_leftover_helpers(target.docker, environment.compose_project)
    if removed:
        actions.append(f"removed {len(removed)} restore helper(s) an earlier run left: {', '.join(sorted(removed))}")
    if journal is None:
        return
    actions.append(f"an earlier run was killed during {journal.describe()}")
    folder = environment.backups_dir / journal.backup
    if not (folder / backup.MANIFEST).is_file():  # another machine's run took it: the server keeps it
        try:
            if target.state.fetch_backup(journal.backup):
                actions.append(f"copied backup {journal.backup} from {target.where}")
        except (CommandFailed, SSHError, EngineUnreachable) as error:
            raise StageFailed(
                f"{journal.describe()} was cut short and its backup could not be copied: {error}"
            ) from None
    if not (folder / backup.MANIFEST).is_file():
        raise StageFailed(
            f"{journal.describe()} was cut short and backup {journal.backup} is no longer in {environment.backups_dir}:"
            " put another backup back with --restore-backup=NAME once the database runs"
        )
    try:
        release = good_release(journal.release, Ledger(environment.ledger_file))
        routes.maintenance(target)
        seconds = backup.restore(target, compose_of(release, target), folder, release=release.id, why=journal.why)
        wait_cluster_reachable(target)  # maintenance ends only once a distributed query reaches every worker
    except (
        backup.BackupFailed,
        RollbackFailed,
        WaitFailed,
        CommandFailed,
        NotReachable,
        docker.errors.DockerException,
    ) as error:
        words = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise StageFailed(f"{journal.describe()} was cut short and could not be done again: {words}") from None
    actions.append(f"restored every database node from backup {journal.backup} again, in {seconds:.1f} s")
    problem = routes.follow(target)  # the proxy's maintenance answer ends, its routes name what runs
    if problem is not None:
        raise StageFailed(f"the proxy could not take the stack's services after the restore: {problem}")


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
