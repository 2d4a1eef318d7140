"""A restore that a killed run leaves for the next one: its journal, its helpers; and the signals that come while
a run ends (noted, not acted on). Without Docker: the restore's engine calls are replaced, its logic is ours."""

from __future__ import annotations

import os
import shutil
import signal
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from deploycheck.deployment import SignalShield
from deploycheck.engine import containers
from deploycheck.engine.compose import Compose
from deploycheck.engine.ssh import SSHError
from deploycheck.engine.target import Target
from deploycheck.release import backup
from deploycheck.release.ledger import Ledger, Release
from deploycheck.stages import StageFailed
from deploycheck.stages import restore as restore_stage

PROJECT = "unit-journal"
NODES = ["coordinator", "worker-1"]


@dataclass
class Timeouts:
    stage: float = 5.0


@dataclass
class Environment:
    state_dir: Path
    compose_project: str = PROJECT
    timeouts: Timeouts = field(default_factory=Timeouts)
    all_secrets: list[str] = field(default_factory=list)
    stack: SimpleNamespace = field(default_factory=lambda: SimpleNamespace(proxy=None, http=()))  # no proxy to route

    @property
    def backups_dir(self) -> Path:
        return self.state_dir / "backups"

    @property
    def ledger_file(self) -> Path:
        return self.state_dir / "ledger.json"

    @property
    def restore_journal_file(self) -> Path:
        return self.state_dir / backup.JOURNAL


@dataclass
class Helper:
    name: str
    labels: dict[str, str]
    volume: str
    removed: bool = False

    @property
    def attrs(self) -> dict[str, Any]:
        return {"Mounts": [{"Name": self.volume, "Destination": backup.DATA_DIR}]}

    def remove(self, force: bool = False) -> None:
        self.removed = True


@dataclass
class Volume:
    name: str


class Containers:
    def __init__(self, helpers: list[Helper]) -> None:
        self.helpers = helpers

    def list(
        self, all: bool = False, filters: dict[str, Any] | None = None, ignore_removed: bool = False
    ) -> list[Helper]:
        wanted = (filters or {}).get("label", "")
        key, _, value = wanted.partition("=")
        return [h for h in self.helpers if not h.removed and h.labels.get(key) == value]


class Volumes:
    def list(self, filters: dict[str, Any] | None = None) -> list[Volume]:
        assert filters == {"label": f"com.docker.compose.project={PROJECT}"}
        return [Volume(f"{PROJECT}_{node}-data") for node in NODES]


@dataclass
class Docker:
    containers: Containers
    volumes: Volumes = field(default_factory=Volumes)


class ServerState:
    """Where the stack's state lives (a server's, say): each push notes whether the journal went with it."""

    def __init__(self, journal: Path, fails: bool = False) -> None:
        self.journal, self.fails = journal, fails
        self.pushed: list[bool] = []

        self.on_server: dict[str, Path] = {}  # backups only the server has, by name

    def push(self, backup: Path | None = None) -> None:
        if self.fails:
            raise SSHError("the SSH connection to srv is gone")
        self.pushed.append(self.journal.is_file())

    def fetch_backup(self, name: str) -> bool:
        if name not in self.on_server:
            return False
        shutil.copytree(self.on_server[name], self.journal.parent / "backups" / name)
        return True


@dataclass
class JournalTarget:
    environment: Environment
    docker: Docker
    state: ServerState
    where: str = "the server ssh://srv"


class Node:
    class image:  # the attribute the engine's container has
        id = "sha256:node"


class Nodes:
    """What compose.stop / compose.start see of the journal: it is on disk before anything is stopped."""

    def __init__(self, journal: Path) -> None:
        self.journal = journal
        self.seen: list[tuple[str, bool]] = []

    def stop(self, services: list[str], timeout: float) -> None:
        self.seen.append(("stop", self.journal.is_file()))

    def start(self, services: list[str], timeout: float) -> None:
        self.seen.append(("start", self.journal.is_file()))


def helper(name: str, labels: dict[str, str], node: str = "coordinator", project: str = PROJECT) -> Helper:
    return Helper(name, labels, f"{project}_{node}-data")


def backup_folder(state: Path) -> Path:
    folder = backup.private_folder(state / "backups") / "20261202-010000-A"
    folder.mkdir()
    backup.write_manifest(folder, {"release": "A", "services": NODES, "bytes": 1})
    return folder


@pytest.fixture
def restore_engine(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The engine's side of a restore replaced: the nodes exist, each fill is logged, they come back healthy."""
    filled: list[str] = []
    monkeypatch.setattr(backup, "project_containers", lambda client, project: dict.fromkeys(NODES, Node()))
    monkeypatch.setattr(backup, "data_volume", lambda container: "volume")
    monkeypatch.setattr(backup, "wait_healthy", lambda *args: None)
    monkeypatch.setattr(
        backup, "fill_volume", lambda client, image, volume, archive, project: filled.append(archive.name)
    )
    return filled


def journal_target(tmp_path: Path, helpers: list[Helper] | None = None, state: ServerState | None = None) -> Target:
    state = state or ServerState(tmp_path / "state" / backup.JOURNAL)
    return cast(Target, JournalTarget(Environment(tmp_path / "state"), Docker(Containers(helpers or [])), state))


def test_the_journal_is_written_before_the_nodes_stop_and_removed_once_they_are_healthy(
    tmp_path: Path, restore_engine: list[str]
) -> None:
    on = journal_target(tmp_path)
    folder = backup_folder(tmp_path / "state")
    nodes = Nodes(tmp_path / "state" / backup.JOURNAL)
    backup.restore(on, cast(Compose, nodes), folder, release="A", why="the rollback of a deploy")
    assert nodes.seen == [("stop", True), ("start", True)]
    assert sorted(restore_engine) == ["coordinator.tar", "worker-1.tar"]
    assert not (tmp_path / "state" / backup.JOURNAL).exists(), "a verified restore leaves no journal"
    # Where the state lives had the journal before anything stopped, and its end once every node was back.
    assert cast(JournalTarget, on).state.pushed == [True, False]


def test_a_restore_whose_journal_cannot_reach_the_server_changes_nothing(
    tmp_path: Path, restore_engine: list[str]
) -> None:
    state = ServerState(tmp_path / "state" / backup.JOURNAL, fails=True)
    nodes = Nodes(tmp_path / "state" / backup.JOURNAL)
    with pytest.raises(backup.BackupFailed) as failed:
        backup.restore(
            journal_target(tmp_path, state=state),
            cast(Compose, nodes),
            backup_folder(tmp_path / "state"),
            release="A",
            why="w",
        )
    assert str(failed.value) == (
        "the restore did not start: its journal could not be written on the server ssh://srv "
        "(the SSH connection to srv is gone)"
    )
    assert nodes.seen == [] and restore_engine == [], "no node stopped, no volume touched"
    assert not (tmp_path / "state" / backup.JOURNAL).exists(), "no journal of a restore that never began"


def test_a_restore_cut_short_leaves_a_journal_naming_its_backup_and_release(
    tmp_path: Path, restore_engine: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def killed(*args: object) -> None:
        raise KeyboardInterrupt  # as good as a kill here: nothing after it runs

    monkeypatch.setattr(backup, "fill_volume", killed)
    folder = backup_folder(tmp_path / "state")
    with pytest.raises(KeyboardInterrupt):
        backup.restore(journal_target(tmp_path), cast(Compose, Nodes(tmp_path / "x")), folder, release="A", why="w")
    journal = backup.read_journal(tmp_path / "state" / backup.JOURNAL)
    assert journal is not None and (journal.backup, journal.release, journal.why) == (folder.name, "A", "w")
    assert os.stat(tmp_path / "state" / backup.JOURNAL).st_mode & 0o777 == 0o600
    assert f"the restore of backup {folder.name} onto release A (w), begun at " in journal.describe()


def test_no_journal_is_no_restore_under_way_and_a_damaged_one_says_how_to_go_on(tmp_path: Path) -> None:
    path = tmp_path / backup.JOURNAL
    assert backup.read_journal(path) is None
    path.write_text('{"backup": "x"')
    with pytest.raises(backup.JournalDamaged, match=r"cannot be read .*--restore-backup=NAME"):
        backup.read_journal(path)


def test_the_helpers_left_on_this_projects_volumes_are_removed_and_no_other(tmp_path: Path) -> None:
    role = {backup.ROLE_LABEL: backup.HELPER_ROLE}
    ours = helper("ours", {**role, containers.HELPER_PROJECT_LABEL: PROJECT})
    older = helper("older", role, node="worker-1")  # from before helpers carried their project
    other = helper("other", {**role, containers.HELPER_PROJECT_LABEL: "another"}, project="another")
    unlabelled_other = helper("unlabelled-other", role, project="another")
    not_a_helper = helper("app", {containers.HELPER_PROJECT_LABEL: PROJECT})
    on = journal_target(tmp_path, [ours, older, other, unlabelled_other, not_a_helper])
    assert [h.name for h in backup.leftover_helpers(on.docker, PROJECT)] == ["ours", "older"]
    assert backup.remove_leftover_helpers(on.docker, PROJECT) == ["ours", "older"]
    assert [h.removed for h in (ours, older, other, unlabelled_other, not_a_helper)] == [
        True,
        True,
        False,
        False,
        False,
    ]
    assert backup.leftover_helpers(on.docker, PROJECT) == []


def test_a_restore_removes_the_helpers_a_killed_one_left_before_it_fills_the_volumes(
    tmp_path: Path, restore_engine: list[str]
) -> None:
    left = helper("left", {backup.ROLE_LABEL: backup.HELPER_ROLE, containers.HELPER_PROJECT_LABEL: PROJECT})
    on = journal_target(tmp_path, [left])
    backup.restore(on, cast(Compose, Nodes(tmp_path / "x")), backup_folder(tmp_path / "state"), release="A", why="w")
    assert left.removed


def test_signals_while_the_run_ends_are_noted_not_acted_on_and_the_handlers_come_back() -> None:
    shield = SignalShield()
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    shield.up()
    shield.up()  # from the interrupt hook, then from the end itself: once
    try:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGINT):
            os.kill(os.getpid(), signum)  # no KeyboardInterrupt, no end of the process
    finally:
        shield.down()
    assert shield.noted == ["SIGINT", "SIGTERM", "SIGINT"]
    assert shield.say_noted().startswith("SIGINT x2, SIGTERM x1 received while the run ended")
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    assert SignalShield().say_noted() == ""


def left_journal(state: Path, folder_name: str) -> None:
    backup._write_journal(state / backup.JOURNAL, backup.Journal(folder_name, "A", "the rollback of B", 1.0))


def test_the_next_run_removes_the_helpers_and_does_the_killed_restore_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "state"
    folder = backup_folder(state)
    left_journal(state, folder.name)
    left = helper("left", {backup.ROLE_LABEL: backup.HELPER_ROLE, containers.HELPER_PROJECT_LABEL: PROJECT})
    on = journal_target(tmp_path, [left])
    done: list[tuple[Path, str, str, bool]] = []

    def again(target: Target, compose: Compose, where: Path, *, release: str, why: str) -> float:
        done.append((where, release, why, left.removed))
        (state / backup.JOURNAL).unlink()
        return 1.5

    monkeypatch.setattr(backup, "restore", again)
    reached_after: list[int] = []  # how many restores had run when the cluster's reach was awaited
    monkeypatch.setattr(restore_stage, "wait_cluster_reachable", lambda target: reached_after.append(len(done)))
    monkeypatch.setattr(restore_stage, "good_release", lambda release, ledger: Release(release, 0.0, {}, {}, ""))
    monkeypatch.setattr(restore_stage, "compose_of", lambda release, target: f"compose of {release.id}")
    assert restore_stage.needs_repair(on, cast(Ledger, NoUnfinished()))
    actions: list[str] = []
    restore_stage.finish_restore(on, actions)
    assert done == [(folder, "A", "the rollback of B", True)], "the helpers first, then the same restore"
    assert reached_after == [1], "the maintenance ends only once the coordinator reaches every worker again"
    assert actions == [
        "removed 1 restore helper(s) an earlier run left: left",
        "an earlier run was killed during the restore of backup 20261202-010000-A onto release A (the rollback "
        "of B), begun at 1970-01-01 00:00:01 UTC",
        "restored every database node from backup 20261202-010000-A again, in 1.5 s",
    ]
    assert not restore_stage.needs_repair(on, cast(Ledger, NoUnfinished()))


def test_a_restore_killed_on_another_machine_is_done_again_from_the_servers_backup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "state"
    taken_elsewhere = backup_folder(tmp_path / "server")  # the killed run's machine took it; the server kept it
    left_journal(state, taken_elsewhere.name)  # as this machine's run pulled it from the server
    server = ServerState(state / backup.JOURNAL)
    server.on_server[taken_elsewhere.name] = taken_elsewhere
    done: list[Path] = []

    def again(target: Target, compose: Compose, where: Path, *, release: str, why: str) -> float:
        done.append(where)
        assert (where / backup.MANIFEST).is_file(), "the backup is here before the restore begins"
        return 2.0

    monkeypatch.setattr(backup, "restore", again)
    monkeypatch.setattr(restore_stage, "wait_cluster_reachable", lambda target: None)
    monkeypatch.setattr(restore_stage, "good_release", lambda release, ledger: Release(release, 0.0, {}, {}, ""))
    monkeypatch.setattr(restore_stage, "compose_of", lambda release, target: f"compose of {release.id}")
    actions: list[str] = []
    restore_stage.finish_restore(journal_target(tmp_path, state=server), actions)
    assert done == [state / "backups" / taken_elsewhere.name]
    assert f"copied backup {taken_elsewhere.name} from the server ssh://srv" in actions


def test_a_killed_restore_whose_backup_is_gone_fails_preflight_and_keeps_its_journal(tmp_path: Path) -> None:
    state = tmp_path / "state"
    left_journal(state, "20261202-010000-gone")
    with pytest.raises(StageFailed, match=r"backup 20261202-010000-gone is no longer in .*--restore-backup=NAME"):
        restore_stage.finish_restore(journal_target(tmp_path), [])
    assert (state / backup.JOURNAL).is_file()


class NoUnfinished:
    def unfinished(self) -> list[str]:
        return []
