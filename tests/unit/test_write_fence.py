"""The write fence's pure parts: its marker, the wait for the transactions begun before it, how the run record and
every report show its window (or that it is still on), and when the backup holds writes with a lock."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest

from deploycheck.engine.commands import Runner
from deploycheck.engine.target import Target
from deploycheck.record import github, reporting
from deploycheck.record.record import RunRecord, WriteFenceRecord
from deploycheck.release import backup, fence
from deploycheck.release.fence import FenceFailed, Marker
from deploycheck.request.environment import Database as DatabaseRole
from deploycheck.request.environment import StackContract
from tests.unit.fakes import FakeContainer, FakeContainers

# --- the marker -----------------------------------------------------------------------------------------------


def test_the_marker_says_when_and_for_which_release_and_reads_back() -> None:
    marker = Marker(1700000000.25, "B-7")
    assert marker.value() == "1700000000.250 B-7"
    assert Marker.parse(marker.value()) == marker
    assert marker.describe() == "put up at 2023-11-14 22:13:20 UTC by a deploy of release B-7"


@pytest.mark.parametrize("value", [None, "", "  "])
def test_no_marker_is_no_fence(value: str | None) -> None:
    assert Marker.parse(value) is None


def test_a_marker_written_otherwise_is_still_a_fence_of_ours() -> None:
    found = Marker.parse("on")
    assert found is not None and found.describe() == "put up at an unknown time by a deploy of release on"


# --- waiting for the transactions begun before the fence ------------------------------------------------------


class ActivityConnection:
    """pg_stat_activity as the fence asks it: each call answers the next list of open transactions."""

    def __init__(self, answers: list[list[tuple[object, ...]]]) -> None:
        self.answers = answers
        self.asked = 0

    def execute(self, query: str, params: Sequence[object] = ()) -> ActivityConnection:
        assert "pg_stat_activity" in query and params == ("FENCED_FROM",)
        self.asked += 1
        return self

    def fetchall(self) -> list[tuple[object, ...]]:
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


def test_the_backup_waits_until_the_transactions_begun_before_the_fence_have_ended() -> None:
    writer = (4242, "shop-api", "idle in transaction", 3.0, True)
    conn = ActivityConnection([[writer], [writer], []])
    waited = fence.wait_for_writers(cast(Any, conn), "FENCED_FROM", seconds=30)
    assert conn.asked == 3 and waited >= 0


def test_a_transaction_that_stays_open_fails_the_fence_naming_it() -> None:
    conn = ActivityConnection([[(4242, "shop-api", "idle in transaction", 75.0, False), (17, "", "active", 2.0, True)]])
    with pytest.raises(FenceFailed) as failed:
        fence.wait_for_writers(cast(Any, conn), "FENCED_FROM", seconds=0)
    assert str(failed.value) == (
        "session 4242 'shop-api' (idle in transaction, transaction open for 75 s) may still write and 1 more, "
        "begun before writes were refused, still open after 0 s: the backup would miss what it commits; end that "
        "transaction, or deploy again once it is done"
    )


# --- the record and the reports -------------------------------------------------------------------------------

STARTED = 1700000000.125  # 22:13:20.125 UTC


def fenced_record(**fence_fields: Any) -> RunRecord:
    record = RunRecord(environment="staging", mode="deploy", release="B", finished_at=STARTED + 60)
    record.write_fence = WriteFenceRecord(
        put_up=True, reason="migration 0003_notes.sql pending", started_at=STARTED, **fence_fields
    )
    return record


def test_a_lifted_fence_reports_its_window_everywhere() -> None:
    record = fenced_record(ended_at=STARTED + 42.5, lifted=True, writers_seconds=0.02)
    summary = record.summary()["write_fence"]
    assert summary == {
        "put_up": True,
        "reason": "migration 0003_notes.sql pending",
        "started_at": STARTED,
        "ended_at": STARTED + 42.5,
        "seconds": 42.5,
        "writers_wait_seconds": 0.02,
        "lifted": True,
        "left_on": False,
        "error": "",
        "earlier_fence_lifted": "",
    }
    line = "write fence: writes refused from 22:13:20.125 UTC to 22:14:02.625 UTC (42.5 s; migration 0003_notes.sql pending)"
    assert line in reporting.terminal_lines(record)
    assert record.outcome == "passed"
    html = "".join(reporting.summary_html(record))
    assert 'id="deploycheck-write-fence"' in html and "from 22:13:20.125 UTC to 22:14:02.625 UTC (42.5 s" in html
    assert "writes refused" in reporting.timeline_svg(record)
    assert "**Write fence:** writes refused from 22:13:20.125 UTC to 22:14:02.625 UTC (42.5 s" in github.job_summary(
        record
    )
    assert not any("refuses every write" in a for a in github.error_annotations(record))


def test_a_fence_still_on_fails_the_run_and_says_so_loudly_everywhere() -> None:
    record = fenced_record(error="the database did not take the lift of the write fence within 30 s")
    assert record.write_fence.left_on and record.outcome == "failed"
    assert record.summary()["write_fence"]["left_on"] is True and record.summary()["outcome"] == "failed"
    line = reporting.write_fence_line(record.write_fence)
    assert line.startswith("WRITE FENCE STILL ON: the database refuses every write since 22:13:20.125 UTC")
    assert "the next deploy lifts it" in line and "ALTER SYSTEM RESET default_transaction_read_only" in line
    assert line in reporting.terminal_lines(record)
    assert "color:#c62828" in reporting.write_fence_html(record)
    assert "> [!CAUTION]" in github.job_summary(record)
    assert github.error_annotations(record)[0].startswith("::error title=the database refuses every write::")


def test_a_run_without_a_fence_says_why_not() -> None:
    record = RunRecord(environment="staging", mode="deploy")
    record.write_fence.reason = "not needed: no database ran before this deploy, nothing to lose"
    assert reporting.write_fence_line(record.write_fence) == (
        "write fence: not needed: no database ran before this deploy, nothing to lose"
    )
    assert record.summary()["write_fence"]["started_at"] is None
    assert "writes refused" not in reporting.timeline_svg(record)


def test_a_fence_an_earlier_run_left_is_reported_lifted() -> None:
    record = RunRecord(environment="staging", mode="deploy")
    record.write_fence.earlier_lifted = (
        "lifted the write fence put up at 2023-11-14 22:13:20 UTC by a deploy of release B"
    )
    assert f"  {record.write_fence.earlier_lifted}" in reporting.terminal_lines(record)
    assert record.write_fence.earlier_lifted in github.job_summary(record)
    assert record.summary()["write_fence"]["earlier_fence_lifted"] == record.write_fence.earlier_lifted


# --- the backup: a lock only when the fence is not up, and only while the nodes are copied ----------------------

NODES = ["coordinator", "worker-1"]


@dataclass
class Events:
    seen: list[str] = field(default_factory=list)


class Node(FakeContainer):
    def __init__(self, service: str, events: Events) -> None:
        super().__init__("unit-fence", service, None)
        self.events = events

    def exec_run(self, command: Sequence[str], **_: object) -> tuple[int, tuple[bytes, bytes]]:
        script = " ".join(command)
        for program in ("pg_basebackup", "gzip"):
            if program in script:
                self.events.seen.append(f"{program} {self.name}")
        return 0, (b"", b"")

    def get_archive(self, path: str) -> tuple[Iterator[bytes], dict[str, Any]]:
        return iter([b"\0" * 100]), {}


class Coordinator:
    """The coordinator's connection as the backup uses it: its distributed tables, the lock, the transaction."""

    def __init__(self, events: Events) -> None:
        self.events = events

    def execute(self, sql: str) -> list[tuple[object, ...]]:
        if sql.startswith("LOCK"):
            self.events.seen.append(sql)
        return [("orders",), ("stores",)] if "pg_dist_partition" in sql else []

    @contextmanager
    def transaction(self) -> Iterator[None]:
        yield
        self.events.seen.append("COMMIT")


@dataclass
class Environment:
    backups_dir: Path
    compose_project: str = "unit-fence"
    node_services: list[str] = field(default_factory=lambda: list(NODES))
    database: Any = field(default_factory=lambda: type("Role", (), {"user": "app"})())
    stack: StackContract = field(default_factory=lambda: StackContract(database=DatabaseRole(service=NODES[0])))


@dataclass
class Docker:
    containers: FakeContainers


@dataclass
class BackupTarget:
    environment: Environment
    docker: Docker
    runner: Runner = field(default_factory=Runner)


def citus_backup(tmp_path: Path, *, fenced: bool) -> tuple[backup.Backup, list[str]]:
    events = Events()
    containers = FakeContainers()
    containers.running = [Node(s, events) for s in NODES]
    target = cast(Target, BackupTarget(Environment(tmp_path / "backups"), Docker(containers)))
    taken = backup.take(target, "B", cast(Any, Coordinator(events)), fenced=fenced)
    return taken, events.seen


def test_without_the_fence_writes_wait_only_while_the_nodes_pg_basebackup_run(tmp_path: Path) -> None:
    taken, seen = citus_backup(tmp_path, fenced=False)
    assert seen[0] == "LOCK TABLE orders, stores IN EXCLUSIVE MODE"
    commit = seen.index("COMMIT")
    assert sorted(seen[1:commit]) == ["pg_basebackup unit-fence-coordinator-1", "pg_basebackup unit-fence-worker-1-1"]
    assert sorted(seen[commit + 1 :]) == ["gzip unit-fence-coordinator-1", "gzip unit-fence-worker-1-1"]
    assert taken.writes_blocked_seconds > 0


def test_under_the_fence_the_backup_holds_no_lock(tmp_path: Path) -> None:
    taken, seen = citus_backup(tmp_path, fenced=True)
    assert not any(event.startswith("LOCK") for event in seen)
    assert taken.writes_blocked_seconds == 0.0
    assert sorted(p.name for p in taken.folder.iterdir()) == ["coordinator.tar", "manifest.json", "worker-1.tar"]
