"""Backups on disk, without Docker: private modes, a partial backup never kept, the retention of complete ones."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest

from deploycheck.engine.commands import Runner
from deploycheck.engine.target import Target
from deploycheck.release import backup
from deploycheck.release.backup import BackupFailed
from deploycheck.request.environment import Database as DatabaseRole
from deploycheck.request.environment import StackContract
from tests.unit.fakes import FakeContainer, FakeContainers

PROJECT = "unit-backup"
NODES = ["coordinator", "worker-1", "worker-2"]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def open_umask() -> Iterator[None]:
    """A umask that lets everything through: the modes must not depend on the user's."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


class NodeContainer(FakeContainer):
    """A database node whose pg_basebackup works (or fails, or is interrupted as its archive is copied)."""

    def __init__(self, service: str, fails: bool = False, interrupted: bool = False) -> None:
        super().__init__(PROJECT, service, None)
        self.fails = fails
        self.interrupted = interrupted

    def exec_run(self, command: Sequence[str], **_: object) -> tuple[int, tuple[bytes, bytes]]:
        if self.fails and "pg_basebackup" in " ".join(command):
            return 1, (b"", b"pg_basebackup: error: could not connect")
        return 0, (b"", b"")

    def get_archive(self, path: str) -> tuple[Iterator[bytes], dict[str, Any]]:
        def chunks() -> Iterator[bytes]:
            yield f"archive of {self.name}".encode()
            if self.interrupted:
                raise KeyboardInterrupt
            yield b"\0" * 1000

        return chunks(), {}


@dataclass
class Database:
    user: str = "app"


@dataclass
class BackupEnvironment:
    backups_dir: Path
    compose_project: str = PROJECT
    node_services: list[str] = field(default_factory=lambda: list(NODES))
    database: Database = field(default_factory=Database)
    # A plain PostgreSQL contract: no Citus metadata to lock while the nodes are backed up.
    stack: StackContract = field(
        default_factory=lambda: StackContract(database=DatabaseRole(kind="postgres", service=NODES[0]))
    )


class Docker:
    def __init__(self, containers: list[FakeContainer]) -> None:
        self.containers = FakeContainers()
        self.containers.running = containers


@dataclass
class BackupTarget:
    environment: BackupEnvironment
    docker: Docker
    runner: Runner = field(default_factory=Runner)


class Connection:
    """The coordinator's connection, as take() uses it: no distributed table, a transaction."""

    def execute(self, sql: str) -> list[tuple[object, ...]]:
        return []

    @contextmanager
    def transaction(self) -> Iterator[None]:
        yield


def target(tmp_path: Path, **node: dict[str, bool]) -> Target:
    containers: list[FakeContainer] = [NodeContainer(s, **node.get(s.replace("-", "_"), {})) for s in NODES]
    return cast(Target, BackupTarget(BackupEnvironment(tmp_path / "backups"), Docker(containers)))


def take(on: Target, release: str = "B") -> backup.Backup:
    return backup.take(on, release, cast(Any, Connection()), fenced=False)


def test_a_backup_is_readable_by_its_owner_only_and_complete_under_its_name(tmp_path: Path) -> None:
    taken = take(target(tmp_path))
    backups = tmp_path / "backups"
    assert taken.folder.parent == backups and taken.folder.name.endswith("-B")
    assert [p.name for p in backups.iterdir()] == [taken.folder.name], "no .partial folder is left"
    assert mode(backups) == 0o700 and mode(taken.folder) == 0o700
    files = sorted(p.name for p in taken.folder.iterdir())
    assert files == ["coordinator.tar", "manifest.json", "worker-1.tar", "worker-2.tar"]
    assert {name: mode(taken.folder / name) for name in files} == dict.fromkeys(files, 0o600)
    manifest = json.loads((taken.folder / "manifest.json").read_text())
    assert manifest["release"] == "B" and manifest["services"] == NODES and manifest["bytes"] == taken.bytes
    assert taken.bytes == sum((taken.folder / f"{s}.tar").stat().st_size for s in NODES) > 3000


def test_a_backup_that_fails_leaves_nothing_among_the_backups(tmp_path: Path) -> None:
    kept = take(target(tmp_path), "A")
    with pytest.raises(BackupFailed, match="pg_basebackup: error: could not connect"):
        take(target(tmp_path, worker_2={"fails": True}))
    assert backup.complete_backups(tmp_path / "backups") == [kept.folder]
    assert [p.name for p in (tmp_path / "backups").iterdir()] == [kept.folder.name]


def test_an_interrupted_backup_leaves_nothing_among_the_backups(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt):
        take(target(tmp_path, coordinator={"interrupted": True}))
    assert list((tmp_path / "backups").iterdir()) == []


def test_a_partial_backup_left_by_a_killed_run_is_removed_by_the_next_backup(tmp_path: Path) -> None:
    backups = backup.private_folder(tmp_path / "backups")
    killed = backup.new_backup_folder(backups, "A", now=1700000000.0)
    (killed / "coordinator.tar").write_bytes(b"half an archive")
    assert killed.name == "20231114-221320-A.partial"
    assert backup.complete_backups(backups) == []
    taken = take(target(tmp_path))
    assert [p.name for p in backups.iterdir()] == [taken.folder.name]


def complete_backup(backups: Path, release: str, now: float) -> Path:
    folder = backup.new_backup_folder(backups, release, now=now)
    with backup.private_file(folder / "coordinator.tar") as handle:
        handle.write(b"archive")
    backup.write_manifest(folder, {"release": release})
    return backup.complete(folder)


def test_the_retention_keeps_the_last_ten_complete_backups_and_removes_partial_ones(tmp_path: Path) -> None:
    backups = tmp_path / "backups"
    made = [complete_backup(backups, f"R{n}", 1700000000.0 + 60 * n) for n in range(12)]
    partial = [backup.new_backup_folder(backups, "X", now=1700000000.0 + 60 * n) for n in (3, 20)]
    # A folder without a manifest (an old version's interrupted backup) is not a backup: not counted, left alone.
    unknown = backups / "20231114-221320-old"
    unknown.mkdir()
    removed = backup.prune(backups)
    assert removed == [*partial, *made[:2]]
    assert backup.complete_backups(backups) == made[2:]
    assert sorted(p.name for p in backups.iterdir()) == sorted([unknown.name, *(p.name for p in made[2:])])
    assert backup.prune(backups) == []


def test_backups_taken_in_the_same_second_get_names_of_their_own(tmp_path: Path) -> None:
    backups = tmp_path / "backups"
    first = complete_backup(backups, "A", 1700000000.0)
    second = complete_backup(backups, "A", 1700000000.0)
    third = backup.new_backup_folder(backups, "A", now=1700000000.0)
    assert [first.name, second.name, third.name] == [
        "20231114-221320-A",
        "20231114-221320-A-2",
        "20231114-221320-A-3.partial",
    ]


def test_a_release_whose_id_ends_in_partial_still_makes_a_complete_backup(tmp_path: Path) -> None:
    made = complete_backup(tmp_path / "backups", "v1.partial", 1700000000.0)
    assert made.name == "20231114-221320-v1.partial_" and backup.complete_backups(tmp_path / "backups") == [made]


def test_only_a_written_backup_is_completed(tmp_path: Path) -> None:
    folder = backup.new_backup_folder(tmp_path / "backups", "A")
    with pytest.raises(BackupFailed, match=r"is not a written backup: it has no manifest\.json"):
        backup.complete(folder)
    assert folder.is_dir()


def test_private_files_and_folders_are_tightened_whatever_they_were(tmp_path: Path) -> None:
    folder = tmp_path / "backups"
    folder.mkdir(mode=0o755)
    file = folder / "manifest.json"
    file.write_text("{}")
    os.chmod(file, 0o644)
    backup.private_folder(folder)
    with backup.private_file(file) as handle:
        handle.write(b"{}")
    assert mode(folder) == 0o700 and mode(file) == 0o600
