"""The life of a stack besides its deploys, on the real engine (issue 19): the diagnosis every verify-only run
writes (a healthy stack, then one with a stopped worker), a teardown that keeps the data (and one refused when
its backup fails) and a re-deploy that finds it, a backup by hand and a restore by name that brings back the
rows of that moment."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from deploycheck.engine.target import LOCK_ROOT
from deploycheck.release import lock
from tests.e2e.conftest import Deploy, coordinator_sql, remove_project

pytestmark = pytest.mark.e2e

RELEASE = "--release=dclife-e2e"  # this helper's own image tags (deploycheck/api:dclife-e2e)
PORTS = {"diagnose": [47800, 47801], "teardown": [47803, 47804], "restore": [47806, 47807]}
STAGES = ["plan", "preflight", "images", "backup", "rehearsal", "database", "citus", "migrations", "services", "proxy"]


@pytest.fixture
def stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Deploy]:
    """A reference stack of this case, on its own project (``dclife-...``) and ports, deployed green."""
    name = request.node.name.removeprefix("test_").split("_", 1)[0]
    case = Deploy(name=f"life-{name}", project=f"dclife-{name}-{os.getpid()}", directory=tmp_path, ports=PORTS[name])
    case.write_environment()
    try:
        deployed = case.run(RELEASE)
        assert deployed.returncode == 0, deployed.stdout[-5000:]
        yield case
    finally:
        remove_project(case.project)
        shutil.rmtree(case.state_dir, ignore_errors=True)


def ledger(deploy: Deploy) -> dict[str, object]:
    data: dict[str, object] = json.loads((deploy.state_dir / "ledger.json").read_text())
    return data


def markers(deploy: Deploy) -> int:
    """The stores this test wrote itself (the checks write stores of their own)."""
    return int(coordinator_sql(deploy, "SELECT count(*) FROM stores WHERE name LIKE 'dclife-marker-%'"))


def write_markers(deploy: Deploy, first: int, count: int) -> None:
    coordinator_sql(
        deploy,
        "INSERT INTO stores (name) SELECT 'dclife-marker-' || i FROM "
        f"generate_series({first}, {first + count - 1}) AS i RETURNING 0",
    )


def wait_healthy(container_name: str, seconds: float = 90) -> None:
    client = docker.from_env()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        container = client.containers.get(container_name)
        if (container.attrs["State"].get("Health") or {}).get("Status") == "healthy":
            return
        time.sleep(1)
    raise AssertionError(f"{container_name} did not become healthy within {seconds} s")


def test_diagnose_a_healthy_stack_then_one_with_a_stopped_worker(stack: Deploy) -> None:
    before = stack.containers()
    engine_id = str(docker.from_env().info().get("ID", "local"))
    with lock.acquire(lock.lock_path(LOCK_ROOT, engine_id, stack.project)):  # a deploy runs: a diagnosis needs no lock
        healthy = stack.run("--verify-only")
    assert healthy.returncode == 0, healthy.stdout[-5000:]
    summary = stack.summary()
    assert summary["diagnosis"] == {"healthy": True, "problems": [], "ledger_release": "dclife-e2e"}
    services = summary["services"]
    assert set(services) == {"coordinator", "worker-1", "worker-2", "api", "nginx"}
    for name, state in services.items():
        assert (state["status"], state["health"], state["restarts"], state["release"]) == (
            "running",
            "healthy",
            0,
            "dclife-e2e",
        ), name
        assert state["image_id"].startswith("sha256:") and all(c["ok"] for c in state["connectivity"]), state
    coordinator, proxy = stack.ports
    assert services["coordinator"]["ports"] == [f"127.0.0.1:{coordinator}->5432/tcp"]
    assert {(c["from"], c["to"]) for c in services["api"]["connectivity"]} == {
        ("this machine", f"api directly: {stack.api}/ready"),  # the port the engine picked
        ("this machine", f"api through nginx: http://127.0.0.1:{proxy}/ready"),
        ("nginx", "http://api:8000/ready"),
    }
    assert [c["to"] for c in services["worker-2"]["connectivity"]] == ["worker-2:5432"]
    assert services["worker-2"]["connectivity"][0]["from"] == "coordinator"
    assert "services: 5 of 5 without a problem (ledger: dclife-e2e)" in healthy.stdout
    assert 'id="deploycheck-services"' in (stack.reports / "report.html").read_text()
    stack.assert_no_secret_leaked(healthy)

    docker.from_env().containers.get(before["worker-2"]).stop(timeout=5)
    broken = stack.run("--verify-only")
    assert broken.returncode == 1, broken.stdout[-5000:]
    diagnosis = stack.summary()["diagnosis"]
    assert diagnosis["healthy"] is False
    assert "worker-2 is exited, not running (exit code 0)" in diagnosis["problems"]
    assert any(
        p.startswith("worker-2: the coordinator (coordinator) cannot connect to it: ") for p in diagnosis["problems"]
    )
    worker = stack.summary()["services"]["worker-2"]
    assert worker["status"] == "exited" and worker["connectivity"][0]["ok"] is False
    assert "PROBLEM worker-2 is exited, not running (exit code 0)" in broken.stdout
    assert stack.containers() == before, "a diagnosis changes nothing"
    stack.assert_no_secret_leaked(broken)


def test_teardown_keeps_the_data_and_a_redeploy_finds_it(stack: Deploy) -> None:
    write_markers(stack, 1, 5)
    assert markers(stack) == 5
    before = stack.containers()

    # Its backup cannot be taken with a worker down: refused, nothing removed.
    client = docker.from_env()
    client.containers.get(before["worker-1"]).stop(timeout=5)
    refused = stack.run("--teardown")
    assert refused.returncode == 1, refused.stdout[-5000:]
    refusal = stack.summary()["teardown"]["refused"]
    assert refusal.startswith("teardown refused: the backup failed: cannot back up: worker-1 not running")
    assert refusal.endswith(
        "nothing was removed: make the backup work, or tear the stack down without one (--no-backup)"
    )
    assert f"[deploycheck] {refusal}" in refused.stdout
    assert stack.containers() == before, "nothing removed"
    assert ledger(stack)["current"] == "dclife-e2e"
    client.containers.get(before["worker-1"]).start()
    wait_healthy(f"{stack.project}-worker-1-1")

    torn = stack.run("--teardown")
    assert torn.returncode == 0, torn.stdout[-5000:]
    summary = stack.summary()
    assert summary["mode"] == "teardown" and summary["release"] == "dclife-e2e"
    assert [(s["name"], s["outcome"]) for s in summary["stages"]] == [
        ("preflight", "passed"),
        ("backup", "passed"),
        ("teardown", "passed"),
    ]
    assert Path(summary["backup"]["folder"]).is_dir() and summary["backup"]["bytes"] > 0
    assert summary["teardown"]["volumes"] == "kept" and len(summary["teardown"]["removed"]) == 5
    assert stack.containers() == {}
    volumes = stack.volumes()
    assert {f"{stack.project}_{v}-data" for v in ("coordinator", "worker-1", "worker-2")} <= set(volumes), volumes
    entries = ledger(stack)
    assert entries["current"] is None
    assert [(a["action"], a["outcome"]) for a in entries["actions"]] == [("teardown", "failed"), ("teardown", "passed")]  # type: ignore[attr-defined]
    assert entries["actions"][-1]["backup"] == Path(summary["backup"]["folder"]).name  # type: ignore[index]

    again = stack.run(RELEASE)
    assert again.returncode == 0, again.stdout[-5000:]
    redeployed = stack.summary()
    assert redeployed["mode"] == "deploy", "a torn-down release is deployed again, never already current"
    assert [s["name"] for s in redeployed["stages"]] == STAGES
    assert markers(stack) == 5, "the data kept in the volumes is found by the new stack"
    assert ledger(stack)["current"] == "dclife-e2e"

    purged = stack.run("--teardown", "--purge-volumes", "--no-backup")
    assert purged.returncode == 0, purged.stdout[-5000:]
    assert stack.summary()["teardown"]["volumes"] == "purged" and stack.summary()["backup"]["folder"] is None
    assert stack.containers() == {} and stack.volumes() == []
    stack.assert_no_secret_leaked(purged)


def test_restore_by_name_brings_back_the_rows_of_that_moment(stack: Deploy) -> None:
    write_markers(stack, 1, 3)
    taken = stack.run("--backup")
    assert taken.returncode == 0, taken.stdout[-5000:]
    backup = stack.summary()["backup"]
    name = Path(backup["folder"]).name
    assert name.endswith("-dclife-e2e") and backup["bytes"] > 0
    assert f"backup: {backup['folder']} ({backup['bytes'] / 2**20:.1f} MiB)" in taken.stdout
    assert [(s["name"], s["outcome"]) for s in stack.summary()["stages"]] == [
        ("preflight", "passed"),
        ("backup", "passed"),
    ]
    write_markers(stack, 4, 4)
    assert markers(stack) == 7

    listed = stack.run("--list-backups")
    assert listed.returncode == 0, listed.stdout[-5000:]
    backups = stack.summary()["backups"]
    assert backups[0]["name"] == name and backups[0]["release"] == "dclife-e2e"
    assert backups[0]["bytes"] == backup["bytes"] and backups[0]["services"] == ["coordinator", "worker-1", "worker-2"]
    assert [b["taken_at"] for b in backups] == sorted((b["taken_at"] for b in backups), reverse=True)
    assert f"  {name}: release dclife-e2e, " in listed.stdout

    unknown = stack.run("--restore-backup=20200101-000000-nothing")
    assert unknown.returncode == 4
    assert f"choose one of {', '.join(b['name'] for b in backups)}" in unknown.stderr
    assert markers(stack) == 7

    api_before = stack.containers()["api"]
    restored = stack.run(f"--restore-backup={name}")
    assert restored.returncode == 0, restored.stdout[-5000:]
    summary = stack.summary()
    assert [(s["name"], s["outcome"]) for s in summary["stages"]] == [
        ("preflight", "passed"),
        ("backup", "passed"),
        ("restore_backup", "passed"),
    ]
    assert summary["checks"]["passed"] > 0 and summary["checks"]["failed"] == 0, "verified by the smoke checks"
    assert summary["restored_backup"]["name"] == name and summary["restored_backup"]["onto"] == "dclife-e2e"
    fresh = Path(summary["backup"]["folder"]).name
    assert fresh != name, "a fresh backup of what was there, first"
    assert markers(stack) == 3, "the rows of the backup's moment, and only those"
    assert stack.containers()["api"] == api_before, "the data is put back; the release keeps running"
    actions = ledger(stack)["actions"]
    assert [(a["action"], a["outcome"], a["backup"]) for a in actions] == [  # type: ignore[attr-defined]
        ("backup", "passed", name),
        ("restore-backup", "passed", name),
    ]
    assert fresh in actions[-1]["detail"]  # type: ignore[index]

    # The fresh backup puts back what was there before the restore: the seven rows.
    again = stack.run(f"--restore-backup={fresh}")
    assert again.returncode == 0, again.stdout[-5000:]
    assert markers(stack) == 7
    stack.assert_no_secret_leaked(again)
