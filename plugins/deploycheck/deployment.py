"""One deployment's lifetime, owned by one object.

``with Deployment(...) as deployment:`` (the ``deployment`` session fixture) takes the lock in preflight, runs
the stages in order, hands the checks a ``Stack``, and at its end decides and performs the rollback, lifts the
write fence (``release.fence``), closes the release's ledger entry and releases the lock, whatever happened in
between (a failure, Ctrl+C, SIGTERM).

Every stage runs through ``run_stage``: named, timed, shown on the terminal as it starts and ends, and recorded
in the run record. A stage that fails does not raise out of its fixture (pytest would re-raise the cached error
for every later test): it is recorded, its own stage test fails with the reason, and every later stage and
check is skipped with "stage X failed: reason". What the rollback needs to know of what the stages did lives
here (``rollback.Facts``), not in the record: the record is what happened, for the reports.
"""

from __future__ import annotations

import dataclasses
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Generic, Literal, TypeVar

import docker.errors
import pytest

from deploycheck.engine import routes
from deploycheck.engine.commands import CommandFailed
from deploycheck.engine.compose import Compose, ComposeModel
from deploycheck.engine.ssh import SSHError
from deploycheck.engine.target import DeployLock, EngineUnreachable, Target
from deploycheck.record import reporting
from deploycheck.record.record import Mode, RunRecord, StageRecord
from deploycheck.release import inventory, lock, redeploy, rollback, swap
from deploycheck.release.backup import Backup
from deploycheck.release.fence import FenceFailed
from deploycheck.release.inventory import BackupFound
from deploycheck.release.ledger import Action, Ledger, LedgerError
from deploycheck.release.migrations import MigrationError
from deploycheck.release.running import running_release
from deploycheck.request.options import RunRequest
from deploycheck.stack import Stack, database_version
from deploycheck.stages import StageFailed, StageNotApplicable
from deploycheck.stages import backup as backup_stage
from deploycheck.stages import citus as citus_stage
from deploycheck.stages import database as database_stage
from deploycheck.stages import diagnose as diagnose_stage
from deploycheck.stages import fence as fence_stage
from deploycheck.stages import images as images_stage
from deploycheck.stages import life as life_stage
from deploycheck.stages import migrations as migrations_stage
from deploycheck.stages import preflight as preflight_stage
from deploycheck.stages import rehearsal as rehearsal_stage
from deploycheck.stages import restore as restore_stage
from deploycheck.stages import services as services_stage
from deploycheck.stages.images import Images

T = TypeVar("T")

DEPLOY_STAGES = ("preflight", "images", "backup", "rehearsal", "database", "citus", "migrations", "services", "proxy")
# The stages of the stack's life by hand (stages/life.py): a named backup put back, and the stack removed.
STAGES = (*DEPLOY_STAGES, "restore_backup", "teardown")
# Steps that run only when needed, inside the stage named here, and are reported by that stage's test.
REPORTED_WITH = {"preflight": ("plan", "repair", "restore")}
# The runs that change nothing and take no lock; and the runs by hand, recorded in the ledger's actions.
READ_ONLY: tuple[Mode, ...] = ("verify-only", "list-backups", "tenants")
BY_HAND: tuple[Mode, ...] = ("teardown", "backup", "restore-backup")


@dataclass(frozen=True)
class Plan:
    """What a run does: its mode, the stages it runs, whether checks verify it (only the smoke checks, or none),
    and why."""

    mode: Mode
    stages: tuple[str, ...]
    smoke_only: bool
    why: str = ""
    checks: bool = True  # False: no check runs (a teardown, a backup, a listing)

    @classmethod
    def of(cls, mode: Mode, why: str = "", *, no_backup: bool = False) -> Plan:
        if mode == "deploy":
            return cls(mode, DEPLOY_STAGES, smoke_only=False, why=why)
        # A teardown backs up first (unless --no-backup), a backup by hand is only that, a named backup is put
        # back after a fresh backup and verified with the smoke checks; listings run preflight only, and no check.
        if mode == "teardown":
            stages = ("preflight", "teardown") if no_backup else ("preflight", "backup", "teardown")
            return cls(mode, stages, smoke_only=False, why=why, checks=False)
        if mode == "backup":
            return cls(mode, ("preflight", "backup"), smoke_only=False, why=why, checks=False)
        if mode == "restore-backup":
            return cls(mode, ("preflight", "backup", "restore_backup"), smoke_only=True, why=why)
        if mode in ("list-backups", "tenants"):
            return cls(mode, ("preflight",), smoke_only=False, why=why, checks=False)
        # Verify-only starts and changes nothing: no stage but preflight. A manual rollback is verified like an
        # automatic one, and a release that is already current like a post-deploy smoke run: with the smoke checks.
        return cls(mode, ("preflight",), smoke_only=mode in ("rollback-to", "already-current"), why=why)

    @property
    def takes_lock(self) -> bool:
        return self.mode not in READ_ONLY


@dataclass(frozen=True)
class StageResult(Generic[T]):
    """What a stage fixture gives: the stage's output when it passed, or why it did not run or failed."""

    name: str
    ran: bool
    output: T | None = None
    records: tuple[StageRecord, ...] = ()  # the stage's record and those of the steps reported with it

    @property
    def failure(self) -> StageRecord | None:
        return next((r for r in self.records if r.outcome == "failed"), None)

    @property
    def value(self) -> T:
        """The stage's output; only asked by a later stage, which runs only when this one passed."""
        if not self.ran or self.failure is not None:
            raise RuntimeError(f"stage {self.name} has no output: it did not pass")
        return self.output  # type: ignore[return-value]  # None is a valid output of a passed stage

    def report(self) -> None:
        """Fail the stage's test with the reason (and evidence) of the first failed record; pass otherwise."""
        failure = self.failure
        if failure is not None:
            evidence = f"\n\n{failure.evidence}" if failure.evidence else ""
            pytest.fail(f"stage {failure.name} failed: {failure.reason}{evidence}", pytrace=False)


class SignalShield:
    """SIGINT and SIGTERM noted instead of acted on, while the run ends (the rollback, the fence's lift, the
    ledger, the lock): up from the first interrupt, so a second one cannot cut the end short. A handler that
    notes, rather than SIG_IGN, which the commands the rollback starts would inherit: the runner ends them
    with SIGINT at their deadline."""

    def __init__(self) -> None:
        self.noted: list[str] = []
        self._previous: dict[int, Any] = {}  # what signal.signal gave back: a handler, SIG_DFL or SIG_IGN

    def up(self) -> None:
        if threading.current_thread() is not threading.main_thread() or self._previous:
            return  # signal handlers are the main thread's; already up
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._note)

    def down(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _note(self, signum: int, frame: FrameType | None) -> None:
        self.noted.append(signal.Signals(signum).name)  # only this: a handler may run in the middle of anything

    def say_noted(self) -> str:
        """What came while it was up, in words ("" for nothing)."""
        if not self.noted:
            return ""
        names = ", ".join(f"{name} x{self.noted.count(name)}" for name in dict.fromkeys(self.noted))
        return f"{names} received while the run ended: noted, not acted on, so its end was not cut short"


@dataclass
class _Lifetime:
    """What this deployment did, as its end must know it (never read by the reports)."""

    lock: DeployLock | None = None  # the stack's deploy lock, while this run holds it
    started_entry: bool = False
    fence_up: bool = False  # this run may have put the write fence up: lifted at its end, whatever happened
    facts: rollback.Facts = field(default_factory=rollback.Facts)


class Deployment:
    """One run's deployment: the plan, the stages, the stack, and the end (rollback, ledger, lock)."""

    def __init__(
        self, request: RunRequest, target: Target, model: ComposeModel, record: RunRecord, say: Callable[[str], None]
    ) -> None:
        self.request = request
        self.target = target
        self.model = model  # the stack's services as Compose resolves the team's files
        self.environment = target.environment
        self.record = record
        self.say = say
        self.ledger = Ledger(self.environment.ledger_file)
        self.plan_ = Plan.of(request.mode, no_backup=request.no_backup)
        self._life = _Lifetime(facts=rollback.Facts(removes_volumes=self.environment.rollback.purge_volumes))
        self._named_backup: BackupFound | None = None  # --restore-backup: the backup, found in preflight
        self._engine_answered = False  # preflight reached the engine (a diagnosis asks it again)
        self.shield = SignalShield()  # up from the first interrupt (the plugin's hook) or the start of the end
        if self.environment.tenant:
            record.life.template, record.life.tenant = self.environment.template, self.environment.tenant
        self._no_fence_for(request.mode)

    def _no_fence_for(self, mode: Mode) -> None:
        """Why a run of ``mode`` puts no write fence up (a deploy says so once its backup stage knows)."""
        why = {
            "verify-only": "not needed: a verify-only run changes nothing",
            "rollback-to": "not needed: a manual rollback applies no migration",
            "already-current": "not needed: the release is current, nothing changes",
        }
        if mode in why:
            self.record.write_fence.reason = why[mode]

    # --- the plan: decided before the checks are selected --------------------------------------------------

    def plan(self) -> Plan:
        """A deploy of the release that is current and healthy, with nothing to change, only verifies it (a
        recorded, timed step, reported with preflight); every other request keeps its mode."""
        if self.request.mode != "deploy":
            return self.plan_

        def decide() -> str | None:
            self._state("pull")  # a snapshot of the stack's history (the lock, taken later, reads it again)
            return redeploy.why_redeploy(self.target, self.model, self.request.release)

        why = self._step("plan", decide)
        release = self.request.release
        if why is None:
            self.plan_ = Plan.of("already-current", "nothing to change")
            self._no_fence_for("already-current")
            self.say(
                f"[deploycheck] release {release} is already current and healthy: nothing to change, "
                "verifying it with the smoke checks"
            )
        else:
            self.plan_ = Plan.of("deploy", why)
            if why:
                self.say(f"[deploycheck] release {release} is current, deploying it again: {why}")
        self.record.mode = self.plan_.mode
        return self.plan_

    # --- the lifetime -------------------------------------------------------------------------------------

    def __enter__(self) -> Deployment:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.finish()

    def finish(self) -> None:
        """Roll back if needed, close the ledger entry, release the lock; a second signal cannot cut it short."""
        record, life = self.record, self._life
        if record.mode == "verify-only" and self._engine_answered and not record.interrupted:
            try:
                self._diagnose()
            except KeyboardInterrupt:  # asked to stop: the run ends without its diagnosis
                record.interrupted = True
        self.shield.up()  # before the decision is said: a test (or a user) may signal on that line
        decision = rollback.decide(
            record.mode, record.release, record.failed, life.facts, keep_failed=self.request.keep_failed
        )
        try:
            if decision.action != "none" or record.failed:
                self.say(f"[deploycheck] rollback: {decision.why}")
            try:
                rollback.perform(decision, life.facts, self.target, record.rollback)
                self._end_swaps(decision.action)
            finally:  # after the rollback's restore, if any: the write fence is never left on by this run
                self._end_write_fence()
            if record.mode == "rollback-to" and record.outcome == "passed":
                self.ledger.mark_current(record.release)
            if life.started_entry:
                passed = record.outcome == "passed" and record.mode == "deploy"
                outcome = "passed" if passed else "interrupted" if record.interrupted else "failed"
                self.ledger.finish(record.release, outcome, record.migrations_applied, passed)
            if record.mode in BY_HAND and life.lock is not None:
                self._record_action()
            if life.lock is not None:
                self._state_at_the_end()
        finally:
            if life.lock is not None:
                life.lock.release()
                life.lock = None
            self.shield.down()
            self.target.close()
        noted = self.shield.say_noted()
        if noted and record.rollback.performed:
            record.rollback.actions.append(noted)  # said with the rollback's actions below
        elif noted:
            self.say(f"[deploycheck] {noted}")
        if record.rollback.performed:
            self.say(f"[deploycheck] rollback: {record.rollback.outcome} in {record.rollback.seconds:.1f} s")
            for action in record.rollback.actions:
                self.say(f"[deploycheck]   {action}")
        if record.write_fence.put_up or record.write_fence.left_on:
            self.say(f"[deploycheck] {reporting.write_fence_line(record.write_fence)}")

    def _end_swaps(self, action: rollback.Action) -> None:
        """At the verdict: a green one retires the containers the swapped services' new ones replace; a failed
        deploy that brings no release back ("leave") still routes to the old ones again (a restore already did)."""
        swaps, record = self._life.facts.swaps, self.record
        if not swaps or action in ("restore", "remove"):
            return
        actions: list[str] = []
        try:
            if action == "none" and not record.failed:
                swap.retire(self.target, swaps, actions)
            elif action == "leave":
                swap.undo(self.target, swaps, actions)
            else:
                actions = [f"{s.service}: {s.new} and {', '.join(s.old)} both kept" for s in swaps]
        except (routes.RoutesFailed, docker.errors.DockerException, CommandFailed) as error:
            actions.append(f"WARNING: the swap could not be ended ({error}); the next deploy ends it")
        for line in actions:  # each service's own line ("SERVICE: what was done") goes to its swap's record
            service, _, done = line.partition(": ")
            if service in record.swaps:
                record.swaps[service] += f"; {done}"
        for line in actions:
            self.say(f"[deploycheck] zero downtime: {line}")

    # --- the write fence ----------------------------------------------------------------------------------

    @property
    def writes_refused(self) -> bool:
        """Whether this run's write fence is up now: the stack's database refuses its clients' writes."""
        return self._life.fence_up

    def _put_up_write_fence(self, pending: Sequence[Path]) -> None:
        """Refuse writes from now until the verdict: this deploy's rollback would restore the backup it takes."""
        fence = self.record.write_fence
        fence.put_up = True
        fence.reason = (
            f"migration{'s' if len(pending) > 1 else ''} {', '.join(p.name for p in pending)} pending: a rollback "
            "would put the database back to the backup taken now"
        )
        fence.started_at = time.time()
        self._life.fence_up = True  # from before the first statement: whatever it reached is lifted at the end
        try:
            fence.started_at, fence.writers_seconds = fence_stage.put_up(
                self.target, self.record.release, self.environment.timeouts.stage
            )
        except FenceFailed as error:
            raise StageFailed(str(error)) from None
        self.say(
            f"[deploycheck] write fence: the database refuses writes from {reporting.clock(fence.started_at)} "
            f"until the verdict ({fence.reason}); reads go on"
        )

    def _end_write_fence(self) -> None:
        """At the verdict, lift this run's fence, or one an earlier run or a restored backup left; a fence that
        cannot be lifted is reported loudly (the stack refuses writes) and lifted by the next deploy."""
        fence, life = self.record.write_fence, self._life
        if self.record.mode == "verify-only":  # changes nothing, a fence left on included (its checks show it)
            return
        try:
            if not life.fence_up:
                left = fence_stage.left_on(self.target)
                if left is None:
                    return
                fence.earlier_lifted = f"a write fence {left.describe()} was still on"
            ended = fence_stage.lift(self.target)
        except Exception as error:  # FenceFailed, or the engine gone: the stack may refuse writes, say so
            if life.fence_up or fence.earlier_lifted:
                fence.error = str(error) if isinstance(error, FenceFailed) else f"{type(error).__name__}: {error}"
                self.say(f"[deploycheck] {reporting.write_fence_line(fence)}")
            return
        if life.fence_up:
            fence.ended_at, fence.lifted = ended, True
            life.fence_up = False
        else:
            fence.earlier_lifted += ": lifted"
            self.say(f"[deploycheck] {fence.earlier_lifted}")

    def _state(self, how: Literal["pull", "push"], backup: Path | None = None) -> None:
        """The stack's state (ledger, configurations, backups) read from, or written to, where its target keeps
        it (a server keeps its own; a local engine's is the state folder itself)."""
        try:
            if how == "pull":
                self.target.state.pull()
            else:
                self.target.state.push(backup)
        except (CommandFailed, EngineUnreachable, SSHError) as error:
            raise StageFailed(f"the stack's state on {self.target.where} could not be {how}ed: {error}") from None

    def _state_at_the_end(self) -> None:
        """The ledger's last word written back before the lock is let go; said loudly when it cannot be."""
        try:
            self.target.state.push()
            self.target.state.end()
        except (CommandFailed, EngineUnreachable, SSHError) as error:
            self.say(
                f"[deploycheck] WARNING: the ledger of this run could not be written to {self.target.where} ({error});"
                " the next run finds the release in progress there and repairs it"
            )

    # --- running a stage ----------------------------------------------------------------------------------

    def _skip_if_stopped(self) -> None:
        failed = self.record.failed_stage
        if failed is not None:
            pytest.skip(f"stage {failed.name} failed: {failed.reason}")
        if self.record.interrupted:
            pytest.skip("the run was interrupted")

    def _step(self, name: str, action: Callable[[], T]) -> T | None:
        """Run, time and record one stage or step; its value, or None when it failed (recorded)."""
        say, record = self.say, self.record
        say(f"[deploycheck] stage {name}: started")
        started = time.time()
        start = time.monotonic()
        try:
            value = action()
        except StageFailed as failure:
            seconds = time.monotonic() - start
            record.stages.append(StageRecord(name, "failed", seconds, started, failure.reason, failure.evidence))
            say(f"[deploycheck] stage {name}: FAILED after {seconds:.1f} s: {failure.reason}")
            return None
        except StageNotApplicable as skipped:
            seconds = time.monotonic() - start
            record.stages.append(StageRecord(name, "passed", seconds, started, skipped.reason))
            say(f"[deploycheck] stage {name}: {skipped.reason}")
            return None
        except KeyboardInterrupt:
            seconds = time.monotonic() - start
            record.interrupted = True
            record.stages.append(StageRecord(name, "failed", seconds, started, "interrupted"))
            raise
        except Exception as error:  # a bug or an unforeseen failure: still a failed stage, with its type
            seconds = time.monotonic() - start
            reason = f"{type(error).__name__}: {error}"
            record.stages.append(StageRecord(name, "failed", seconds, started, reason.splitlines()[0][:500], reason))
            say(f"[deploycheck] stage {name}: FAILED after {seconds:.1f} s: {reason.splitlines()[0][:200]}")
            return None
        seconds = time.monotonic() - start
        record.stages.append(StageRecord(name, "passed", seconds, started))
        say(f"[deploycheck] stage {name}: passed in {seconds:.1f} s")
        return value

    def run_stage(self, name: str, action: Callable[[], T], steps: Callable[[], None] | None = None) -> StageResult[T]:
        """Run stage ``name`` when the plan has it and nothing stopped the run (else skip); ``steps`` run after
        it passed, recorded under their own names and reported with it."""
        if name not in self.plan_.stages:
            return StageResult(name, ran=False)
        self._skip_if_stopped()
        first = len(self.record.stages)
        output = self._step(name, action)
        if steps is not None and self.record.failed_stage is None:
            steps()
        records = tuple(self.record.stages[first:])
        planned = tuple(r for r in self.record.stages[:first] if r.name in REPORTED_WITH.get(name, ()))
        return StageResult(name, ran=True, output=output, records=planned + records)

    # --- the stages ---------------------------------------------------------------------------------------

    def preflight(self) -> StageResult[None]:
        """The engine, Compose, disk; the deploy lock; the ledger; the stack that runs and its ports. Then, when
        needed, the repair of what a killed run left, and the restore of a manual rollback. (A listing only
        lists; a run by hand checks what it needs: see ``_by_hand``.)"""
        mode = self.plan_.mode
        read_only = not self.plan_.takes_lock

        def check() -> None:
            if mode == "list-backups":  # what the state folder holds: no engine needed
                self.record.life.backups = [found.listed() for found in inventory.backups(self.environment)]
                return
            preflight_stage.engine_ready(self.target)
            self._engine_answered = True
            if mode == "tenants":
                self.record.life.tenants = inventory.tenants(self.target.docker, self.environment)
                return
            if not read_only:
                self._take_lock()
            self._state("pull")  # the stack's history as its host keeps it, read under the lock
            if not read_only:
                current = self.ledger.current()
                self.record.previous_release = current.id if current is not None else None
                self._life.facts = replace(self._life.facts, previous_release=self.record.previous_release)
            if read_only:
                found = preflight_stage.stack_for_verification(self.target)
                left = fence_stage.left_on(self.target)
                if left is not None:  # verifying changes nothing: the write checks will show it, and this says why
                    self.say(
                        f"[deploycheck] the database refuses writes: a write fence {left.describe()} is still on "
                        "(that deploy was killed); the next deploy of this environment lifts it"
                    )
                journal = restore_stage.journal_left(self.target)
                if journal is not None:
                    self.say(
                        f"[deploycheck] the database may be half restored: a run was killed during "
                        f"{journal.describe()}; the next run that is not --verify-only finishes it"
                    )
            else:
                found = preflight_stage.running_stack(self.target)
                if mode not in BY_HAND:  # they start nothing new
                    preflight_stage.ports_free(self.target, self.model, found)
            self._life.facts = replace(self._life.facts, stack_existed_before=found.exists)
            if mode in BY_HAND:
                self._by_hand()

        def steps() -> None:
            # Only a killed run leaves a restore under way, releases "in progress", or its write fence on: we hold
            # the lock now.
            if not read_only and (
                restore_stage.needs_repair(self.target, self.ledger) or fence_stage.left_on(self.target) is not None
            ):
                self._step("repair", lambda: self._narrated(self._repair))
            if self.plan_.mode == "rollback-to" and self.record.failed_stage is None:
                self._step("restore", lambda: self._narrated(self._restore))

        return self.run_stage("preflight", check, steps)

    def _by_hand(self) -> None:
        """A run by hand is about the release that runs (the ledger's current one when none of its releases
        runs); it checks what it needs before anything changes."""
        mode, request = self.plan_.mode, self.request
        running = running_release(self.target, self.ledger)
        self.record.release = running or self.record.previous_release or "unknown"
        if mode == "backup":
            life_stage.database_running(self.target, "there is nothing to back up: deploy it first")
        elif mode == "teardown" and request.purge_volumes and not request.no_backup:
            life_stage.database_running(
                self.target,
                "its data cannot be backed up before --purge-volumes deletes it: start it, or pass --no-backup",
            )
        elif mode == "restore-backup":
            name = request.backup_name or ""
            found = inventory.backup_named(self.environment, name)
            if found is None:  # there when the run was accepted: pruned since by another run's backup
                names = ", ".join(b.name for b in inventory.backups(self.environment)) or "none"
                raise StageFailed(f"backup {name} is no longer there: choose one of {names}")
            life_stage.backup_fits(self.target, found)
            life_stage.database_running(self.target, f"backup {name} cannot be restored onto it: deploy it first")
            if running is None:
                raise StageFailed(
                    f"the stack of project {self.environment.compose_project} runs no release of its ledger (its "
                    f"images are not those of a release that deployed green), so backup {name} has no release to "
                    "be restored onto: deploy a release first"
                )
            self._named_backup = found

    def _take_lock(self) -> None:
        """The stack's lock (its engine's and Compose project's): two environment names on one stack, or two runs
        of one, cannot deploy at once. Held by this process until ``finish``, or its end, however it ends."""
        environment = self.environment
        try:
            self._life.lock = self.target.deploy_lock()
        except lock.LockHeld as held:
            raise StageFailed(
                f"environment '{environment.name}' (Compose project '{environment.compose_project}' on this engine) is "
                f"being deployed by {held.describe()}: wait for that deploy to finish, its lock is freed when it ends"
            ) from None
        except lock.LockUnusable as error:
            raise StageFailed(str(error)) from None

    def _narrated(self, action: Callable[[list[str]], None]) -> None:
        """Run an action that lists what it does; each line is said, whether it passed or not."""
        actions: list[str] = []
        try:
            action(actions)
        finally:
            for line in actions:
                self.say(f"[deploycheck]   {line}")

    def _repair(self, actions: list[str]) -> None:
        # The database first: the release repair and the fence's lift below need it running, as it was backed up.
        restore_stage.finish_restore(self.target, actions)
        if self.ledger.unfinished():
            self._changed_stack()
            restore_stage.repair(self.target, self.ledger, actions)
        lifted = restore_stage.lift_left_fence(self.target, actions)
        if lifted:
            self.record.write_fence.earlier_lifted = lifted

    def _restore(self, actions: list[str]) -> None:
        self._changed_stack()
        restore_stage.restore(self.target, self.record.release, actions)

    def _changed_stack(self) -> None:
        self._life.facts = replace(self._life.facts, changed_stack=True)

    def images(self) -> StageResult[Images]:
        def prepare() -> Images:
            images = images_stage.prepare(
                self.target, self.record.release, self.model, self.request.citus_source, self.say
            )
            if images.citus is not None:
                self.record.citus_image, self.record.citus_image_origin = (
                    images.citus.reference,
                    images.citus.describe(),
                )
            shipped = images.shipped
            self.record.image_transfer = dataclasses.asdict(shipped)
            if shipped.images:
                self.say(
                    f"[deploycheck] images: {shipped.images} sent to {self.target.where} in {shipped.seconds:.1f} s"
                )
            self.ledger.start(images.entry)
            self._life.started_entry = True
            self._state("push")  # a run killed from here on leaves its host what the next run repairs
            self._life.facts = replace(self._life.facts, compose=images.compose)
            return images

        return self.run_stage("images", prepare)

    def backup(self) -> StageResult[Backup | None]:
        def take() -> Backup | None:
            if not fence_stage.database_runs(self.target):
                self.record.write_fence.reason = "not needed: no database ran before this deploy, nothing to lose"
                self.say("[deploycheck] backup: no database is running yet, nothing to back up")
                return None
            # Only a deploy applies migrations; a backup by hand (--backup, a teardown's, a restore's) applies none.
            pending = backup_stage.pending_migrations(self.target) if self.plan_.mode == "deploy" else []
            if pending:
                self._put_up_write_fence(pending)
            taken = backup_stage.back_up(self.target, self.record.release, fenced=bool(pending))
            if taken is None:  # the database stopped meanwhile
                raise StageFailed("the database stopped before it could be backed up")
            record = self.record
            record.backup_folder, record.backup_bytes = str(taken.folder), taken.bytes
            record.backup_writes_blocked_seconds = taken.writes_blocked_seconds
            self._state("push", taken.folder)
            self._life.facts = replace(self._life.facts, backup=taken)
            held = f", writes held for {taken.writes_blocked_seconds:.2f} s" if taken.writes_blocked_seconds else ""
            self.say(
                f"[deploycheck] backup: {taken.bytes / 2**20:.1f} MiB of {len(taken.services)} nodes in "
                f"{taken.folder} ({taken.seconds:.1f} s{held})"
            )
            return taken

        return self.run_stage("backup", take)

    def rehearsal(self, backup: StageResult[Backup | None]) -> StageResult[None]:
        def rehearse() -> None:
            taken = backup.value
            if taken is None:
                self.say("[deploycheck] rehearsal: no live database to copy; migrations will run on the new one")
                return
            rehearsed = rehearsal_stage.rehearse(self.target, taken)
            if not rehearsed:
                self.say("[deploycheck] rehearsal: no pending migration")
            else:
                self.say(f"[deploycheck] rehearsal: {', '.join(p.name for p in rehearsed)} applied cleanly on a copy")

        return self.run_stage("rehearsal", rehearse)

    def _early_services(self) -> list[str]:
        return services_stage.early_services(self.target, self.model, self._life.facts.stack_existed_before)

    def database(self, images: StageResult[Images]) -> StageResult[None]:
        def start() -> None:
            self._changed_stack()
            database_stage.start(self.target, images.value.compose, self._early_services())

        return self.run_stage("database", start)

    def citus(self) -> StageResult[None]:
        def configure() -> None:
            if not self.environment.stack.database.is_citus:
                raise StageNotApplicable("the database is plain PostgreSQL")
            self.record.database_version = citus_stage.configure(self.target)

        return self.run_stage("citus", configure)

    def migrations(self) -> StageResult[None]:
        def apply() -> None:
            try:
                applied = migrations_stage.apply(self.target)
            except MigrationError as error:
                self._applied(list(error.applied))
                raise StageFailed(error.reason, error.detail) from None
            self._applied(applied)

        return self.run_stage("migrations", apply)

    def _applied(self, migrations: list[str]) -> None:
        self.record.migrations_applied = migrations
        self._life.facts = replace(self._life.facts, migrations_applied=tuple(migrations))

    def services(self, images: StageResult[Images]) -> StageResult[None]:
        def start() -> None:
            compose = images.value.compose
            services = services_stage.application_services(self.target, self.model)
            early = bool(services) and set(services) <= set(self._early_services())
            swaps = () if early else self._swaps(compose, services)
            self._life.facts = replace(self._life.facts, swaps=swaps)  # from here on, a rollback switches back
            started = services_stage.start_services(self.target, compose, services, early, swaps)
            self._life.facts = replace(self._life.facts, swaps=started)
            for started_swap in started:
                self.record.swaps[started_swap.service] = (
                    f"blue-green: {started_swap.new} started beside {', '.join(started_swap.old)}, which kept "
                    "serving until the new one was ready"
                )

        return self.run_stage("services", start)

    def _swaps(self, compose: Compose, services: Sequence[str]) -> tuple[swap.Swap, ...]:
        """The routed services swapped with no downtime (their routes pinned to the containers that serve now);
        each one replaced in place instead is said, with why and how to change that."""
        try:
            plan = swap.plan(self.target, compose, self.model, services)
        except CommandFailed as error:
            raise StageFailed("docker compose could not say which services change", str(error)) from None
        if plan.swaps:
            try:
                swap.pin(self.target, plan.swaps)
            except routes.RoutesFailed as error:  # e.g. a team's proxy without a routes folder: said, in place
                plan = swap.Plan(in_place=(*plan.in_place, *((s.service, str(error)) for s in plan.swaps)))
        for service, why in plan.in_place:
            self.record.swaps[service] = f"in place: {why}"
            self.say(f"[deploycheck] {service} is replaced in place, so the proxy cannot serve it meanwhile: {why}")
        return plan.swaps

    def proxy(self, images: StageResult[Images]) -> StageResult[None]:
        def start() -> None:
            proxy = self.environment.stack.proxy
            early = proxy is not None and proxy.service in self._early_services()
            services_stage.start_proxy(self.target, images.value.compose, early)

        return self.run_stage("proxy", start)

    # --- the stack's life by hand (stages/life.py) -----------------------------------------------------------

    def restore_backup(self) -> StageResult[None]:
        def put_back(actions: list[str]) -> None:
            assert self._named_backup is not None, "found in preflight"
            self._changed_stack()
            self.record.life.restored_backup = life_stage.restore_backup(
                self.target, self.record.release, self._named_backup, actions
            )

        return self.run_stage("restore_backup", lambda: self._narrated(put_back))

    def teardown(self) -> StageResult[None]:
        failed = self.record.failed_stage
        if "teardown" in self.plan_.stages and failed is not None and failed.name == "backup":
            refusal = (
                f"teardown refused: {failed.reason}; nothing was removed: make the backup work, or tear the stack "
                "down without one (--no-backup)"
            )
            self.record.life.teardown = {"refused": refusal, "volumes": "kept", "removed": []}
            self.say(f"[deploycheck] {refusal}")

        def remove() -> None:
            self._changed_stack()
            purge = self.request.purge_volumes
            self.record.life.teardown = life_stage.tear_down(self.target, self.record.release, purge)
            self.say(
                f"[deploycheck] teardown: project {self.environment.compose_project} removed; its volumes "
                + ("purged" if purge else "kept")
            )

        return self.run_stage("teardown", remove)

    def _record_action(self) -> None:
        """What a run by hand did, in the ledger's actions (a teardown that passed leaves no release current)."""
        record, request = self.record, self.request
        mode = record.mode
        backup = Path(record.backup_folder).name if record.backup_folder else ""
        detail = ""
        if mode == "teardown":
            detail = f"volumes {'purged' if request.purge_volumes else 'kept'}" + (
                "; no backup (--no-backup)" if request.no_backup else ""
            )
            if record.life.teardown is not None and record.life.teardown.get("refused"):
                detail = str(record.life.teardown["refused"])
        elif mode == "restore-backup":
            detail = f"restored {request.backup_name}" + (f"; backup taken before it: {backup}" if backup else "")
            backup = request.backup_name or ""
        action = Action(mode, time.time(), record.release, record.outcome, backup, detail)
        try:
            self.ledger.record_action(action)
        except (LedgerError, OSError) as error:
            self.say(f"[deploycheck] WARNING: this {mode} could not be recorded in the ledger: {error}")

    def _diagnose(self) -> None:
        """Verify-only's diagnosis of every service (read only), whatever the checks found."""
        try:
            found = diagnose_stage.diagnose(self.target, self.model.names, self.ledger)
        except Exception as error:  # the diagnosis must not hide the run's own outcome: said, and a problem
            found = diagnose_stage.Diagnosis(general=[f"the diagnosis failed: {type(error).__name__}: {error}"])
        life = self.record.life
        life.diagnosed, life.services, life.ledger_release = True, found.services, found.ledger_release
        life.problems = found.problems
        healthy = sum(1 for state in found.services.values() if not state.problems)
        self.say(
            f"[deploycheck] diagnosis: {healthy} of {len(found.services)} services without a problem"
            + ("" if not found.problems else f"; {len(found.problems)} problem(s): {found.problems[0]}")
        )

    # --- the stack, for the checks ------------------------------------------------------------------------

    def stack(self) -> Stack:
        """The deployed stack (or, verifying, the running one, attached without changing anything)."""
        self._skip_if_stopped()
        record = self.record
        if record.mode == "verify-only":
            record.release = running_release(self.target, self.ledger) or "unknown (it runs no release of the ledger)"
        stack = Stack.attach(self.target, record.release)
        coordinator = stack.containers.get(self.environment.stack.database.service)
        if record.is_citus and record.mode != "deploy" and coordinator is not None:  # a deploy's images stage knows
            record.citus_image = coordinator.attrs.get("Config", {}).get("Image", record.citus_image)
        if record.database_version == "unknown":
            record.database_version = database_version(self.target) or "unknown"
        return stack
