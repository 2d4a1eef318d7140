"""The deploy lock of a stack and the release ledger."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from deploycheck.release import ledger as ledger_module
from deploycheck.release import lock
from deploycheck.release.ledger import Ledger, LedgerDamaged, LedgerUnreadable, Release


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_the_lock_is_taken_described_and_released_by_its_holder(tmp_path: Path) -> None:
    path = tmp_path / "locks" / "stack.lock"
    held = lock.acquire(path)
    description = json.loads(path.read_text())
    assert description["host"] == socket.gethostname() and description["pid"] == os.getpid()
    assert description["user"] and description["command"] and description["started_at"] > 0
    assert lock.read(path) == held.holder == lock.Holder(**description)
    held.release()
    assert not path.exists() and not held.held
    held.release()  # a second release does nothing


def test_a_second_taker_is_refused_naming_the_holder(tmp_path: Path) -> None:
    path = tmp_path / "stack.lock"
    with lock.acquire(path) as held:
        # Another open of the file, as another process's: flock excludes it even in this process.
        with pytest.raises(lock.LockHeld) as refused:
            lock.acquire(path)
        assert refused.value.holder == held.holder and refused.value.known
        assert str(refused.value).startswith(f"the deploy lock {path} is held by host {socket.gethostname()}, ")
        assert f"pid {os.getpid()}, user " in str(refused.value) and "running `" in str(refused.value)
        # The refused taker closed its own file only: the lock is still held.
        with pytest.raises(lock.LockHeld):
            lock.acquire(path)
    assert not path.exists()
    lock.acquire(path).release()


def test_a_child_process_does_not_inherit_the_lock(tmp_path: Path) -> None:
    # A docker compose left running after deploycheck died must not keep the stack locked.
    path = tmp_path / "stack.lock"
    with lock.acquire(path):
        opened = subprocess.run(["ls", "-l", "/proc/self/fd"], capture_output=True, text=True, close_fds=False)
    assert opened.returncode == 0 and str(path) not in opened.stdout


@pytest.mark.parametrize(
    ("content", "named"),
    [
        (b"", lock.UNKNOWN_HOLDER),
        (b'{"host": "ci-1", "pid": 42', lock.UNKNOWN_HOLDER),  # cut short
        (b"not json at all", lock.UNKNOWN_HOLDER),
        (b"\xff\xfe\x00garbage", lock.UNKNOWN_HOLDER),
        (b"[1, 2, 3]", lock.UNKNOWN_HOLDER),
        (b'{"host": "ci-1", "pid": "42"}', lock.UNKNOWN_HOLDER),  # a pid that is a string
        (b'{"host": "ci-1", "pid": true}', lock.UNKNOWN_HOLDER),
        (b'{"host": "ci-1", "pid": -1}', lock.UNKNOWN_HOLDER),
        (b'{"host": 7, "pid": 42}', lock.UNKNOWN_HOLDER),
        (b"[" * 100000, lock.UNKNOWN_HOLDER),  # deeper than the JSON parser goes
        (b'{"host": "ci-1", "pid": 42, "started_at": "soon", "user": 5, "shoe_size": 44}', "host ci-1, pid 42"),
        (b'{"host": "ci-1", "pid": 42, "started_at": 1700000000}', "host ci-1, pid 42, since 2023-11-14 22:13:20 UTC"),
    ],
)
def test_any_content_of_a_held_lock_is_named_or_said_unknown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: bytes, named: str
) -> None:
    monkeypatch.setattr(lock, "DESCRIPTION_WAIT_SECONDS", 0.02)  # no holder is about to write here
    path = tmp_path / "stack.lock"
    with lock.acquire(path):
        path.write_bytes(content)  # the lock is advisory: the holder's description can be anything
        with pytest.raises(lock.LockHeld) as refused:
            lock.acquire(path)
    assert refused.value.describe() == named
    assert lock.describe(lock.read(path) if path.exists() else None) == lock.UNKNOWN_HOLDER
    assert refused.value.known is (named != lock.UNKNOWN_HOLDER)


def test_a_left_over_lock_file_of_a_dead_process_is_simply_taken(tmp_path: Path) -> None:
    path = tmp_path / "stack.lock"
    path.write_text(json.dumps({"host": socket.gethostname(), "pid": dead_pid(), "started_at": 1700000000.0}))
    with lock.acquire(path) as held:
        assert lock.read(path) == held.holder and held.holder.pid == os.getpid()


def test_a_file_that_no_process_locks_is_taken_whatever_it_says(tmp_path: Path) -> None:
    # The description is not the lock: even a live process's, or another host's, is taken when nothing holds it.
    live = subprocess.Popen(["sleep", "30"])
    try:
        for host in (socket.gethostname(), "some-other-host"):
            path = tmp_path / f"{host}.lock"
            path.write_text(json.dumps({"host": host, "pid": live.pid, "started_at": 0}))
            lock.acquire(path).release()
    finally:
        live.kill()
        live.wait()


def test_a_lock_that_cannot_be_made_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "stack.lock"
    path.mkdir()
    with pytest.raises(lock.LockUnusable, match=r"^cannot open the deploy lock .*stack\.lock \(Is a directory\): "):
        lock.acquire(path)


def test_the_lock_is_named_after_the_engine_and_the_compose_project(tmp_path: Path) -> None:
    one = lock.lock_path(tmp_path, "ENGINE:ONE", "shop")
    assert one.parent == tmp_path / "locks" and one.name.startswith("shop-") and one.suffix == ".lock"
    # Two environment names that deploy project "shop" on one engine take the same lock; Compose folds case.
    assert lock.lock_path(tmp_path, "ENGINE:ONE", "Shop") == one
    assert lock.lock_path(tmp_path, "ENGINE:TWO", "shop") != one
    assert lock.lock_path(tmp_path, "ENGINE:ONE", "shop-2") != one
    assert lock.lock_path(tmp_path, "E", "../../etc/passwd").parent == tmp_path / "locks"
    with pytest.raises(ValueError, match="needs an engine id"):
        lock.lock_path(tmp_path, "", "shop")


def test_a_holder_describes_what_it_knows() -> None:
    holder = lock.Holder("ci-1", 42, 1700000000.0, "deploy", "pytest --deploy=prod")
    assert holder.describe() == (
        "host ci-1, pid 42, user deploy, since 2023-11-14 22:13:20 UTC, running `pytest --deploy=prod`"
    )
    assert lock.Holder("ci-1", 42).describe() == "host ci-1, pid 42"
    assert lock.NOBODY.describe() == lock.describe(None) == "an unknown holder"


def test_ledger_records_releases_and_the_current_one(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.json")
    assert ledger.current() is None
    ledger.start(Release("A", 1.0, {"api": "deploycheck/api:A"}, {"api": "sha256:a"}, "citus:13"))
    ledger.finish("A", "passed", ["0001.sql"], make_current=True)
    ledger.start(Release("B", 2.0, {"api": "deploycheck/api:B"}, {"api": "sha256:b"}, "citus:13"))
    ledger.finish("B", "failed", ["0002.sql"], make_current=False)
    current = ledger.current()
    assert current is not None and current.id == "A" and current.migrations == ["0001.sql"]
    assert [(r.id, r.outcome) for r in ledger.releases()] == [("A", "passed"), ("B", "failed")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ledger.json"], "no temporary file is left"


def test_a_rollback_target_is_the_last_green_deploy_of_a_release(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.json")
    ledger.start(Release("A", 1.0, {"api": "deploycheck/api:A"}, {"api": "sha256:a1"}, "citus:13", "compose-1.yaml"))
    ledger.finish("A", "passed", [], make_current=True)
    # The same id again, with other files, fails: the rollback target stays the deploy that passed.
    ledger.start(Release("A", 2.0, {"api": "deploycheck/api:A"}, {"api": "sha256:a2"}, "citus:13", "compose-2.yaml"))
    ledger.finish("A", "failed", [], make_current=False)
    good = ledger.good("A")
    current = ledger.current()
    assert good is not None and good.image_ids == {"api": "sha256:a1"} and good.configuration == "compose-1.yaml"
    assert current == good
    assert ledger.good("B") is None


def test_a_ledger_written_before_configurations_were_kept_still_reads(tmp_path: Path) -> None:
    path = tmp_path / "ledger.json"
    path.write_text(
        json.dumps(
            {
                "current": "A",
                "releases": [
                    {
                        "id": "A",
                        "started_at": 1.0,
                        "images": {},
                        "image_ids": {},
                        "citus_image": "citus:13",
                        "migrations": [],
                        "outcome": "passed",
                        "finished_at": 2.0,
                    }
                ],
            }
        )
    )
    current = Ledger(path).current()
    assert current is not None and current.configuration == ""


ENTRY = {
    "id": "A",
    "started_at": 1.0,
    "images": {"api": "deploycheck/api:A"},
    "image_ids": {"api": "sha256:a"},
    "citus_image": "citus:13",
    "configuration": "",
    "migrations": ["0001.sql"],
    "outcome": "passed",
    "finished_at": 2.0,
}
GOOD = json.dumps({"current": "A", "releases": [ENTRY]}, indent=2)


def entry(**changes: object) -> str:
    item = {**ENTRY, **changes}
    return json.dumps({"current": "A", "releases": [{k: v for k, v in item.items() if v is not ...}]})


@pytest.mark.parametrize(
    ("content", "what"),
    [
        ("", "it is empty"),
        ("  \n\t", "it is empty"),
        (GOOD[: len(GOOD) // 2], "it is cut short: "),
        (GOOD[:-1], "it is cut short: expecting ',' delimiter, line "),
        (GOOD[: GOOD.index('"api"') + 3], "it is cut short: unterminated string starting at, line "),
        (
            "{'current': None}",
            "it is not valid JSON: expecting property name enclosed in double quotes, line 1, column 2",
        ),
        ("ledger", "it is not valid JSON: expecting value, line 1, column 1"),
        ("[1, 2]", "it holds a list, not an object with 'current' and 'releases'"),
        ("null", "it holds null, not an object"),
        ("[" * 100000 + "]" * 100000, "it is nested too deep to be a ledger"),
        ('{"current": null}', "it has no 'releases' list"),
        ('{"current": null, "releases": {"A": {}}}', "'releases' is an object, not a list"),
        ('{"current": 3, "releases": []}', "'current' is a number, not a release id or null"),
        ('{"current": null, "releases": [], "owner": "me"}', "it has an unknown field 'owner' beside"),
        ('{"current": null, "releases": ["A"]}', "release #1 is a string, not an object"),
        (entry(id=...), "release #1 has no 'id'"),
        (entry(id=""), "release #1: 'id' is an empty string, not a non-empty string"),
        (entry(started_at="yesterday"), "release #1 ('A'): 'started_at' is a string, not a number"),
        (entry(started_at=True), "release #1 ('A'): 'started_at' is a boolean, not a number"),
        (entry(images=["api"]), "release #1 ('A'): 'images' is a list, not an object of strings"),
        (entry(image_ids={"api": 1}), "release #1 ('A'): 'image_ids' is an object, not an object of strings"),
        (entry(citus_image=None), "release #1 ('A'): 'citus_image' is null, not a string"),
        (entry(migrations="0001.sql"), "release #1 ('A'): 'migrations' is a string, not a list of strings"),
        (entry(outcome="great"), "release #1 ('A'): 'outcome' is a string, not one of 'in progress', "),
        (entry(finished_at=[]), "release #1 ('A'): 'finished_at' is a list, not a number"),
        (entry(color="red"), "release #1 ('A') has an unknown field 'color'"),
    ],
)
def test_a_damaged_ledger_is_one_clear_error_and_is_not_written_over(tmp_path: Path, content: str, what: str) -> None:
    path = tmp_path / "ledger.json"
    path.write_text(content)
    ledger = Ledger(path)
    reads_and_writes: list[Callable[[], object]] = [
        ledger.check,
        ledger.releases,
        ledger.current,
        ledger.unfinished,
        ledger.mark_interrupted,
        lambda: ledger.good("A"),
        lambda: ledger.start(Release("B", 3.0, {}, {}, "citus:13")),
        lambda: ledger.finish("A", "passed", [], make_current=True),
        lambda: ledger.mark_current("A"),
    ]
    for action in reads_and_writes:
        with pytest.raises(LedgerDamaged) as damaged:
            action()
        message = str(damaged.value)
        assert message.startswith(f"the release ledger {path} is damaged ({what}")
        assert message.endswith(
            "): restore it from a backup of the state folder or move it aside to start a new history."
        )
        assert "\n" not in message and damaged.value.path == path
    assert path.read_text() == content, "a damaged ledger is left as it is"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ledger.json"]


def test_a_ledger_that_cannot_be_read_says_so(tmp_path: Path) -> None:
    path = tmp_path / "ledger.json"
    path.mkdir()
    with pytest.raises(
        LedgerUnreadable, match=r"^the release ledger .*ledger\.json cannot be read \(Is a directory\): "
    ):
        Ledger(path).releases()


def test_an_entry_without_the_optional_fields_reads_with_their_defaults(tmp_path: Path) -> None:
    path = tmp_path / "ledger.json"
    path.write_text(
        json.dumps({"releases": [{k: ENTRY[k] for k in ("id", "started_at", "images", "image_ids", "citus_image")}]})
    )
    ledger = Ledger(path)
    assert ledger.unfinished() == ["A"] and ledger.current() is None
    ledger.finish("A", "passed", ["0001.sql"], make_current=True)
    current = ledger.current()
    assert current is not None and current.migrations == ["0001.sql"] and current.configuration == ""


def test_every_field_of_a_release_is_checked() -> None:
    assert set(ledger_module._FIELDS) == set(Release.__dataclass_fields__)


def test_a_ledger_write_is_flushed_to_disk_file_and_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    flushed: list[tuple[int, bool]] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        flushed.append((os.fstat(fd).st_ino, os.path.isdir(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    path = tmp_path / "ledger.json"
    Ledger(path).start(Release("A", 1.0, {}, {}, "citus:13"))
    assert flushed == [(path.stat().st_ino, False), (tmp_path.stat().st_ino, True)]


def test_a_write_that_fails_leaves_the_previous_ledger_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "ledger.json"
    ledger = Ledger(path)
    ledger.start(Release("A", 1.0, {}, {}, "citus:13"))
    before = path.read_text()

    def no_room(fd: int, data: object) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", no_room)
    with pytest.raises(OSError, match="No space left"):
        ledger.finish("A", "passed", [], make_current=True)
    monkeypatch.undo()
    assert path.read_text() == before and ledger.unfinished() == ["A"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ledger.json"], "the temporary file is removed"
