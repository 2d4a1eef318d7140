"""The server's copy of a stack's state (engine/server.py ServerState): the shell scripts it runs on the server,
run here in a folder that plays the SSH user's home (the transport itself is tested in tests/e2e)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

import pytest

from deploycheck.engine.commands import Command, CommandFailed
from deploycheck.engine.server import KEPT_BACKUPS, ServerState
from deploycheck.request.environment import ConfigError, load_settings
from tests.unit.conftest import make_project


class LocalShell:
    """``SSHConnection.stream`` with the server's shell run here, in ``home``."""

    def __init__(self, home: Path) -> None:
        self.home = home

    def stream(
        self,
        argv: Sequence[str],
        *,
        send: Callable[[IO[bytes]], None] | None = None,
        receive: Callable[[IO[bytes]], None] | None = None,
        timeout: float = 60,
    ) -> None:
        process = subprocess.Popen(list(argv), cwd=self.home, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert process.stdin is not None and process.stdout is not None
        if send is not None:
            send(process.stdin)
        process.stdin.close()
        if receive is not None:
            receive(process.stdout)
        process.stdout.read()
        if process.wait(timeout=timeout) != 0:
            raise CommandFailed(Command(tuple(argv)), f"exited with {process.returncode}")


class Target:
    def __init__(self, environment: Any, home: Path) -> None:
        self.environment = environment
        self.shell = LocalShell(home)

    def connected(self) -> LocalShell:
        return self.shell


@pytest.fixture
def state(tmp_path: Path) -> ServerState:
    project = tmp_path / "project"
    project.mkdir()
    make_project(project)
    environment = load_settings(project / "environments.toml", "local")
    home = tmp_path / "home"
    home.mkdir()
    return ServerState(Target(environment, home))  # type: ignore[arg-type]


def server_folder(state: ServerState) -> Path:
    return state.target.connected().home / state.folder  # type: ignore[attr-defined, no-any-return]


def write_local(state: ServerState, ledger: dict[str, Any], configurations: Sequence[str]) -> None:
    state.local.mkdir(parents=True, exist_ok=True)
    (state.local / "ledger.json").write_text(json.dumps(ledger))
    (state.local / "configurations").mkdir(exist_ok=True)
    for name in configurations:
        (state.local / "configurations" / name).write_text("{}")


def test_pull_from_a_server_without_state_leaves_no_local_history(state: ServerState) -> None:
    write_local(state, {"current": "A", "releases": []}, ["compose-a.json"])
    state.pull()
    assert not (state.local / "ledger.json").exists() and not (state.local / "configurations").exists()


def test_push_then_pull_on_another_machine_gives_the_same_history_readable_by_its_owner_only(
    state: ServerState, tmp_path: Path
) -> None:
    write_local(state, {"current": "A", "releases": [{"id": "A"}]}, ["compose-a.json", "compose-b.json"])
    state.push()
    folder = server_folder(state)
    for path in (folder, folder / "ledger.json", folder / "configurations" / "compose-a.json"):
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path
    # Another operator's working copy, with an older history of its own: the server's replaces it.
    (state.local / "ledger.json").write_text(json.dumps({"current": "old", "releases": []}))
    (state.local / "configurations" / "compose-a.json").unlink()
    state.pull()
    assert json.loads((state.local / "ledger.json").read_text())["current"] == "A"
    assert sorted(os.listdir(state.local / "configurations")) == ["compose-a.json", "compose-b.json"]


def test_backups_pushed_one_by_one_and_the_server_keeps_the_last_ones(state: ServerState) -> None:
    write_local(state, {"current": None, "releases": []}, [])
    backups = state.local / "backups"
    for index in range(KEPT_BACKUPS + 2):
        backup = backups / f"20260101-0000{index:02d}-R{index}"
        backup.mkdir(parents=True)
        (backup / "manifest.json").write_text("{}")
        state.push(backup)
    (server_folder(state) / "backups" / "20260101-000099-R.partial").mkdir()
    write_local(state, {"current": None, "releases": []}, [])
    state.push(backups / "20260101-000011-R11")
    kept = sorted(os.listdir(server_folder(state) / "backups"))
    complete = [name for name in kept if not name.endswith(".partial")]
    assert len(complete) == KEPT_BACKUPS and complete[-1] == "20260101-000011-R11" and complete[0].endswith("-R2")
    assert not any(name.startswith(".incoming") for name in os.listdir(server_folder(state)))


def test_a_restore_journal_travels_both_ways_and_so_does_its_end(state: ServerState) -> None:
    write_local(state, {"current": "A", "releases": []}, [])
    journal = state.local / "restore.json"
    journal.write_text('{"backup": "b"}')
    state.push()
    on_server = server_folder(state) / "restore.json"
    assert on_server.read_text() == '{"backup": "b"}' and stat.S_IMODE(on_server.stat().st_mode) & 0o077 == 0
    journal.unlink()
    state.pull()  # another machine's working copy: the restore under way is known there
    assert journal.read_text() == '{"backup": "b"}'
    journal.unlink()  # the restore finished
    state.push()
    assert not on_server.exists()
    journal.write_text("{}")  # a journal of this machine's that the server does not have is not the truth
    state.pull()
    assert not journal.exists()


def test_a_backup_only_the_server_has_is_fetched_by_name(state: ServerState) -> None:
    write_local(state, {"current": None, "releases": []}, [])
    taken = state.local / "backups" / "20260101-000001-A"
    taken.mkdir(parents=True)
    (taken / "manifest.json").write_text('{"release": "A"}')
    (taken / "coordinator.tar").write_bytes(b"tar")
    state.push(taken)
    state.end()  # this machine keeps no backup
    assert state.fetch_backup("20260101-000001-A")
    assert (taken / "manifest.json").read_text() == '{"release": "A"}' and (
        taken / "coordinator.tar"
    ).read_bytes() == b"tar"
    assert not state.fetch_backup("20260101-000002-missing")
    assert not (state.local / "backups" / "20260101-000002-missing").exists()
    assert not any(name.startswith(".") for name in os.listdir(state.local))


def test_the_end_of_a_run_keeps_no_backup_here_unless_asked(state: ServerState) -> None:
    (state.local / "backups" / "b").mkdir(parents=True)
    state.end()
    assert not (state.local / "backups").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('docker_host = "ssh://root:secret@host"', "has a password in it"),
        ('docker_host = "ssh://host:99999"', "port that is not a number from 1 to 65535"),
        ('docker_host = "http://host"', "must be"),
        ('server = { registry = "https://reg" }', "must be a registry's HOST or HOST:PORT"),
        ('server = { state_dir = "~/state" }', "no '~'"),
        ('server = { ssh_config = "missing_config" }', "server.ssh_config"),
    ],
)
def test_a_server_given_wrong_is_one_sentence(tmp_path: Path, extra: str, message: str) -> None:
    make_project(tmp_path)
    path = tmp_path / "environments.toml"
    path.write_text(path.read_text().replace("[environments.local]\n", f"[environments.local]\n{extra}\n", 1))
    with pytest.raises(ConfigError) as raised:
        load_settings(path, "local")
    assert message in str(raised.value) and "\n" not in str(raised.value)
