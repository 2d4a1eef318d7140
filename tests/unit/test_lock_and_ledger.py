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


def write_holder(path: Path, host: str, pid: int) -> None:
    path.write_text(json.dumps({"host": host, "pid": pid, "started_at": 1700000000.0}))


def test_lock_is_taken_and_released_by_its_holder(tmp_path: Path) -> None:
    path = tmp_path / "deploy.lock"
    assert lock.acquire(path) is None
    holder = lock.read(path)
    assert holder is not None and holder.pid == os.getpid() and holder.host == socket.gethostname()
    lock.release(path)
    assert not path.exists()


def test_a_live_holder_refuses_a_second_deploy_naming_itself(tmp_path: Path) -> None:
    path = tmp_path / "deploy.lock"
    live = subprocess.Popen(["sleep", "30"])
    try:
        write_holder(path, socket.gethostname(), live.pid)
        with pytest.raises(lock.LockHeld) as held:
            lock.acquire(path)
        assert f"pid {live.pid}" in str(held.value) and socket.gethostname() in str(held.value)
        assert "2023-11-14 22:13:20 UTC" in str(held.value)
        lock.release(path)  # not ours: stays
        assert lock.read(path) == held.value.holder
    finally:
        live.kill()
        live.wait()


def test_a_stale_lock_is_taken_over(tmp_path: Path) -> None:
    path = tmp_path / "deploy.lock"
    write_holder(path, socket.gethostname(), dead_pid())
    stale = lock.acquire(path)
    assert stale is not None
    holder = lock.read(path)
    assert holder is not None and holder.pid == os.getpid()


def test_a_holder_on_another_host_is_not_assumed_gone(tmp_path: Path) -> None:
    path = tmp_path / "deploy.lock"
    write_holder(path, "some-other-host", dead_pid())
    with pytest.raises(lock.LockHeld, match="host some-other-host"):
        lock.acquire(path)


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
