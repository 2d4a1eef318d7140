"""The per-environment deploy lock and the release ledger."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import pytest

from deploycheck.release import lock
from deploycheck.release.ledger import Ledger, Release


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


def test_the_module_release_frees_only_a_lock_this_process_holds(tmp_path: Path) -> None:
    path = tmp_path / "stack.lock"
    lock.release(path)  # not held: nothing to do
    lock.acquire(path)
    lock.release(path)
    assert not path.exists()
    lock.acquire(path).release()


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
    assert not (tmp_path / "ledger.tmp").exists()


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
