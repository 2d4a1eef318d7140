"""The run record: what happened in one run (stages, checks, rollback).

The deployment that owns the run writes its part (stages, releases, backup, rollback), the plugin the checks'
outcomes; the reports are written from this record alone. Nothing reads it back to decide what to do.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from deploycheck.record.life import LifeRecord

StageOutcome = Literal["passed", "failed", "skipped"]
# deploy; verify-only (--verify-only); rollback-to (--rollback-to=ID); already-current (a deploy of the release
# that is current and healthy, with nothing to change: only verified); the stack's life by hand (record/life.py):
# teardown, backup, restore-backup, list-backups, tenants.
Mode = Literal[
    "deploy",
    "verify-only",
    "rollback-to",
    "already-current",
    "teardown",
    "backup",
    "restore-backup",
    "list-backups",
    "tenants",
]


@dataclass
class StageRecord:
    name: str
    outcome: StageOutcome
    seconds: float
    started_at: float
    reason: str = ""
    evidence: str = ""


@dataclass
class CheckCounts:
    passed: int = 0
    failed: int = 0
    skipped: int = 0


@dataclass
class CheckRecord:
    nodeid: str
    outcome: str
    seconds: float
    started_at: float
    reason: str = ""


@dataclass
class RollbackRecord:
    performed: bool = False
    outcome: str = "not needed"
    seconds: float = 0.0
    restored_release: str | None = None
    database_restored: bool = False
    database_restore_seconds: float = 0.0
    actions: list[str] = field(default_factory=list)
    started_at: float = 0.0


@dataclass
class WriteFenceRecord:
    """The window in which the database refused writes for this run (``release.fence``), and a fence lifted
    that an earlier run had left on."""

    put_up: bool = False  # this run refused writes: it deployed over a running database with pending migrations
    reason: str = "not needed: no migration was pending"  # why it was put up, or why not
    started_at: float = 0.0  # epoch seconds: writes refused from here...
    ended_at: float = 0.0  # ...to here (0: not lifted)
    writers_seconds: float = 0.0  # how long the backup waited for the transactions begun before the fence
    lifted: bool = False
    error: str = ""  # why it could not be lifted: the stack still refuses writes
    earlier_lifted: str = ""  # a fence an earlier run left on (killed, or its lift failed), lifted by this one

    @property
    def seconds(self) -> float:
        return max(0.0, self.ended_at - self.started_at) if self.put_up and self.ended_at else 0.0

    @property
    def left_on(self) -> bool:
        """The run ends with the stack refusing writes: say so loudly, exit 6."""
        return bool(self.error)

    def summary(self) -> dict[str, Any]:
        return {
            "put_up": self.put_up,
            "reason": self.reason,
            "started_at": round(self.started_at, 3) if self.put_up else None,
            "ended_at": round(self.ended_at, 3) if self.ended_at else None,
            "seconds": round(self.seconds, 3) if self.ended_at else None,
            "writers_wait_seconds": round(self.writers_seconds, 3),
            "lifted": self.lifted,
            "left_on": self.left_on,
            "error": self.error,
            "earlier_fence_lifted": self.earlier_lifted,
        }


@dataclass
class RunRecord:
    environment: str
    mode: Mode
    release: str = "unknown"
    database_kind: str = "citus"  # the stack contract's: "citus" or "postgres"
    database_version: str = "unknown"  # what the database says it is: citus_version(), or PostgreSQL's version()
    citus_image: str = "unknown"  # Citus only
    citus_image_origin: str = ""  # how the Citus image came to be: present, pulled, or built from which source
    compose_project: str = ""
    started_at: float = field(default_factory=time.time)
    finished_at: float = 0.0
    interrupted: bool = False
    stages: list[StageRecord] = field(default_factory=list)
    checks: list[CheckRecord] = field(default_factory=list)
    rollback: RollbackRecord = field(default_factory=RollbackRecord)
    previous_release: str | None = None  # the ledger's current release when this run started
    migrations_applied: list[str] = field(default_factory=list)
    image_transfer: dict[str, Any] = field(
        default_factory=dict
    )  # images put on the stack's engine: count, bytes, seconds, via
    backup_folder: str | None = None  # the backup the backup stage took, if a database was running
    backup_bytes: int = 0
    life: LifeRecord = field(default_factory=LifeRecord)  # the diagnosis, and the stack's life by hand
    backup_writes_blocked_seconds: float = 0.0  # how long the backup held writes waiting (a lock), if it did
    write_fence: WriteFenceRecord = field(default_factory=WriteFenceRecord)
    swaps: dict[str, str] = field(default_factory=dict)  # routed service -> how it was replaced (release.swap)
    pytest_error: str = ""  # pytest itself could not run the checks (a usage or internal error): never a pass

    @property
    def is_citus(self) -> bool:
        return self.database_kind == "citus"

    @property
    def database_line(self) -> str:
        """The database in one line, for the terminal and the job summary."""
        if self.is_citus:
            return (
                f"Citus image: {self.citus_image_origin or self.citus_image}; citus_version(): {self.database_version}"
            )
        return f"Database: {self.database_version}"

    @property
    def failed_stage(self) -> StageRecord | None:
        return next((stage for stage in self.stages if stage.outcome == "failed"), None)

    @property
    def first_failure_at(self) -> float | None:
        """When the first stage or check failed (epoch seconds, at its end), for timing the rollback."""
        ends = [s.started_at + s.seconds for s in self.stages if s.outcome == "failed"]
        ends += [c.started_at + c.seconds for c in self.checks if c.outcome == "failed"]
        return min(ends) if ends else None

    def timings(self) -> dict[str, float | None]:
        """Epoch seconds of the run's milestones, for benchmarks (scripts/benchmark.py); None when not reached."""
        ran = [c for c in self.checks if c.outcome != "skipped"]
        return {
            "first_failure_at": self.first_failure_at,
            "checks_started_at": min((c.started_at for c in ran), default=None),
            "checks_finished_at": max((c.started_at + c.seconds for c in ran), default=None),
            "rollback_started_at": self.rollback.started_at or None,
            "rollback_finished_at": (self.rollback.started_at + self.rollback.seconds)
            if self.rollback.performed
            else None,
        }

    @property
    def check_counts(self) -> CheckCounts:
        counts = CheckCounts()
        for check in self.checks:
            if check.outcome in ("passed", "failed", "skipped"):
                setattr(counts, check.outcome, getattr(counts, check.outcome) + 1)
        return counts

    @property
    def failed(self) -> bool:
        return (
            self.interrupted
            or bool(self.pytest_error)
            or self.failed_stage is not None
            or any(c.outcome == "failed" for c in self.checks)
            or self.life.failed
        )

    @property
    def outcome(self) -> Literal["passed", "failed"]:
        ended_badly = self.rollback.outcome == "failed" or self.write_fence.left_on
        return "failed" if self.failed or ended_badly else "passed"

    def summary(self) -> dict[str, Any]:
        """The JSON summary (reports/summary.json)."""
        return {
            "environment": self.environment,
            "mode": self.mode,
            "release": self.release,
            "database": {"kind": self.database_kind, "version": self.database_version},
            # Citus's own keys; null for a PostgreSQL stack
            "citus_image": self.citus_image if self.is_citus else None,
            "citus_image_origin": self.citus_image_origin if self.is_citus else None,
            "citus_version": self.database_version if self.is_citus else None,
            "compose_project": self.compose_project,
            "previous_release": self.previous_release,
            "migrations_applied": self.migrations_applied,
            "image_transfer": self.image_transfer,
            "backup": {
                "folder": self.backup_folder,
                "bytes": self.backup_bytes,
                "writes_blocked_seconds": round(self.backup_writes_blocked_seconds, 3),
            },
            "write_fence": self.write_fence.summary(),
            "swaps": self.swaps,
            "outcome": self.outcome,
            "interrupted": self.interrupted,
            "pytest_error": self.pytest_error,
            "started_at": self.started_at,
            "seconds": round((self.finished_at or time.time()) - self.started_at, 3),
            "stages": [
                {
                    "name": s.name,
                    "outcome": s.outcome,
                    "seconds": round(s.seconds, 3),
                    "started_at": round(s.started_at, 3),
                    "reason": s.reason,
                }
                for s in self.stages
            ],
            "checks": asdict(self.check_counts),
            "failed_checks": [{"name": c.nodeid, "reason": c.reason} for c in self.checks if c.outcome == "failed"],
            "rollback": {
                "performed": self.rollback.performed,
                "outcome": self.rollback.outcome,
                "seconds": round(self.rollback.seconds, 3),
                "restored_release": self.rollback.restored_release,
                "database_restored": self.rollback.database_restored,
                "database_restore_seconds": round(self.rollback.database_restore_seconds, 3),
                "actions": self.rollback.actions,
            },
            "timings": self.timings(),
            **self.life.summary(),
        }
