"""`pytest --deploy=NAME` end to end on the real engine: a clean deploy, verify-only, and injected faults,
each caught by the right stage and rolled back."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import docker
import pytest
import requests

from deploycheck.engine.polling import poll
from deploycheck.engine.target import LOCK_ROOT
from deploycheck.release import lock
from tests.e2e.conftest import (
    ROOT,
    TOKEN_MARKER,
    Deploy,
    build_broken_ready_api,
    coordinator_sql,
    count_rows,
    releases_override,
    tag_release_images,
)

pytestmark = pytest.mark.e2e

STAGES = ["plan", "preflight", "images", "backup", "rehearsal", "database", "citus", "migrations", "services", "proxy"]


def test_clean_deploy_passes_every_check_then_verify_only_changes_nothing(deploy: Deploy) -> None:
    result = deploy.run()
    assert result.returncode == 0, result.stdout[-5000:]
    summary = deploy.summary()
    assert summary["outcome"] == "passed"
    assert [(s["name"], s["outcome"]) for s in summary["stages"]] == [(name, "passed") for name in STAGES]
    assert summary["checks"]["failed"] == 0 and summary["checks"]["skipped"] == 0
    assert summary["checks"]["passed"] >= 20
    assert summary["rollback"]["performed"] is False
    assert summary["citus_version"].startswith("Citus 13.2"), "real Citus, the version the environment asks for"
    report = (deploy.reports / "report.html").read_text()
    assert "deploycheck-stages" in report and summary["citus_version"] in report
    assert summary["citus_image_origin"] and summary["citus_image_origin"] in report
    deploy.assert_no_secret_leaked(result)
    before = deploy.containers()
    assert set(before) == {"coordinator", "worker-1", "worker-2", "api", "nginx"}

    verify = deploy.run("--verify-only")
    assert verify.returncode == 0, verify.stdout[-5000:]
    verified = deploy.summary()
    assert verified["mode"] == "verify-only" and verified["outcome"] == "passed"
    assert [s["name"] for s in verified["stages"]] == ["preflight"]
    assert verified["release"] == summary["release"]
    assert verified["checks"]["passed"] >= 20
    assert deploy.containers() == before, "verify-only must not create, recreate or remove containers"

    smoke = deploy.run("--verify-only", "-m", "smoke")
    assert smoke.returncode == 0, smoke.stdout[-5000:]
    assert 0 < deploy.summary()["checks"]["passed"] < verified["checks"]["passed"]

    # A worker dies after the deploy: verification fails with reasons and evidence, under GitHub Actions.
    docker.from_env().containers.get(before["worker-2"]).stop(timeout=5)
    step_summary = deploy.directory / "step-summary.md"
    broken = deploy.run("--verify-only", GITHUB_ACTIONS="true", GITHUB_STEP_SUMMARY=str(step_summary))
    assert broken.returncode == 1, broken.stdout[-5000:]
    failed = deploy.summary()["failed_checks"]
    assert any("worker-2" in check["reason"] for check in failed), failed
    assert deploy.summary()["rollback"]["performed"] is False
    report = (deploy.reports / "report.html").read_text()
    assert "deploycheck evidence" in report and "worker-2-1: status exited" in report
    assert "| Failed check | Reason |" in step_summary.read_text()
    annotations = [line for line in broken.stdout.splitlines() if line.startswith("::error ")]
    assert 0 < len(annotations) <= 10
    deploy.assert_no_secret_leaked(broken, step_summary)


def test_verify_only_without_a_running_stack_fails_in_preflight(deploy: Deploy) -> None:
    result = deploy.run("--verify-only")
    assert result.returncode == 1
    summary = deploy.summary()
    assert summary["stages"][0]["outcome"] == "failed"
    assert f"no stack of project {deploy.project} is running" in summary["stages"][0]["reason"]
    assert summary["rollback"]["performed"] is False
    assert deploy.containers() == {}


def _assert_caught_and_rolled_back(
    deploy: Deploy, result: subprocess.CompletedProcess[str], stage: str, reason: str
) -> None:
    """The right stage failed with the reason, everything after it was skipped, the rollback removed the
    containers and kept the data, the reports explain it, and no secret leaked anywhere."""
    summary = deploy.summary()
    assert summary["outcome"] == "failed"
    failed = [s for s in summary["stages"] if s["outcome"] == "failed"]
    assert [s["name"] for s in failed] == [stage], summary["stages"]
    assert reason in failed[0]["reason"], failed[0]["reason"]
    assert summary["checks"]["passed"] == 0 and summary["checks"]["failed"] == 0 and summary["checks"]["skipped"] > 0
    rollback = summary["rollback"]
    assert rollback["performed"] is True and rollback["outcome"] == "passed", rollback
    assert deploy.containers() == {}, "the rollback must remove this first deploy's containers"
    assert any(v.endswith("coordinator-data") for v in deploy.volumes()), "the rollback must keep the data volumes"
    report = (deploy.reports / "report.html").read_text()
    assert reason in report and "deploycheck-rollback" in report
    junit = (deploy.reports / "junit.xml").read_text()
    assert f'classname="checks.test_stages" name="test_{stage}"' in junit and reason in junit
    assert f"stage {stage}: FAILED" in result.stdout
    deploy.assert_no_secret_leaked(result)


def test_worker_that_never_becomes_healthy_fails_the_database_stage(deploy: Deploy) -> None:
    sick = deploy.override(
        "sick-worker.yaml",
        """
        services:
          worker-2:
            healthcheck:
              test: ["CMD", "false"]
              interval: 1s
              retries: 1
              start_period: 0s
        """,
    )
    deploy.write_environment(overrides=[sick], stage_timeout=25)
    result = deploy.run()
    assert result.returncode == 1, result.stdout[-5000:]
    _assert_caught_and_rolled_back(deploy, result, "database", "worker-2 did not become healthy within 25 s")


def test_nginx_upstream_on_the_wrong_port_fails_the_proxy_stage(deploy: Deploy) -> None:
    """The proxy's own upstream, as a proxy without deploycheck's routes file has it (routes_file = ""), is wrong."""
    wrong_port = deploy.override(
        "wrong-upstream.yaml",
        """
        services:
          nginx:
            environment:
              API_UPSTREAM: api:9999
        """,
    )
    deploy.write_environment(overrides=[wrong_port], stage_timeout=20)
    text = deploy.env_file.read_text()
    deploy.env_file.write_text(text.replace("failure_probe = {", 'routes_file = ""\nfailure_probe = {', 1))
    result = deploy.run()
    assert result.returncode == 1, result.stdout[-5000:]
    _assert_caught_and_rolled_back(deploy, result, "proxy", "/ready did not answer 200 within 20 s (last: 502")


def test_api_release_whose_ready_fails_fails_the_services_stage(deploy: Deploy, tmp_path: Path) -> None:
    image = build_broken_ready_api(tmp_path)
    broken = deploy.override(
        "broken-api.yaml",
        f"""
        services:
          api:
            image: {image}
            build: !reset null
        """,
    )
    deploy.write_environment(overrides=[broken], stage_timeout=20)
    result = deploy.run()
    assert result.returncode == 1, result.stdout[-5000:]
    _assert_caught_and_rolled_back(deploy, result, "services", "release broken on purpose")


def test_sigterm_during_the_database_stage_rolls_back(deploy: Deploy) -> None:
    """CI cancels with SIGTERM: the run must still roll back, record it, and exit as interrupted."""
    process = deploy.start()
    assert process.stdout is not None
    seen = []
    for line in process.stdout:
        seen.append(line)
        if "stage database: started" in line:
            time.sleep(2)  # let Compose create the containers
            process.send_signal(signal.SIGTERM)
            break
    output = "".join(seen) + process.communicate(timeout=300)[0]
    assert process.returncode == pytest.ExitCode.INTERRUPTED, output[-5000:]
    summary = deploy.summary()
    assert summary["interrupted"] is True and summary["outcome"] == "failed"
    assert summary["rollback"]["performed"] is True and summary["rollback"]["outcome"] == "passed"
    assert deploy.containers() == {}


def test_release_b_that_fails_rolls_back_to_release_a_with_its_data(deploy: Deploy, tmp_path: Path) -> None:
    """A deploys green; re-deploying A recreates nothing; B's API never becomes ready, so A comes back
    with its rows; then C deploys and a manual --rollback-to=A brings A back again."""
    image = tag_release_images(tmp_path, good=("A", "C"), broken="B")
    releases = releases_override(deploy, image)
    deploy.write_environment(overrides=[releases], stage_timeout=20)

    first = deploy.run("--release=A")
    assert first.returncode == 0, first.stdout[-5000:]
    containers_of_a = deploy.containers()
    again = deploy.run("--release=A")
    assert again.returncode == 0, again.stdout[-5000:]
    assert deploy.containers() == containers_of_a, "re-deploying the current release must recreate nothing"
    redeployed = [line for line in again.stdout.splitlines() if "deploying it again" in line]
    assert deploy.summary()["mode"] == "already-current", redeployed

    token = {"Authorization": f"Bearer {TOKEN_MARKER}"}
    stores = [
        requests.post(f"{deploy.api}/stores", json={"name": f"kept-{i}"}, headers=token, timeout=10).json()
        for i in range(3)
    ]
    assert all("id" in store for store in stores), stores

    failed = deploy.run("--release=B")
    assert failed.returncode == 1, failed.stdout[-5000:]
    summary = deploy.summary()
    assert [s["name"] for s in summary["stages"] if s["outcome"] == "failed"] == ["services"]
    assert summary["previous_release"] == "A"
    rollback = summary["rollback"]
    assert rollback["performed"] is True and rollback["outcome"] == "passed", rollback
    assert rollback["restored_release"] == "A" and rollback["seconds"] > 0
    assert requests.get(f"{deploy.api}/version", timeout=10).json()["release"] == "A"
    for store in stores:
        kept = requests.get(f"{deploy.api}/stores/{store['id']}", timeout=10)
        assert kept.status_code == 200 and kept.json()["name"] == store["name"]
    ledger = json.loads((deploy.state_dir / "ledger.json").read_text())
    assert ledger["current"] == "A"
    # The re-deploy of A changed nothing, so it is no new entry.
    assert [(r["id"], r["outcome"]) for r in ledger["releases"]] == [("A", "passed"), ("B", "failed")]
    report = (deploy.reports / "report.html").read_text()
    assert "restored release: A" in report
    deploy.assert_no_secret_leaked(failed)

    # C deploys green; a manual rollback brings A back, verified by the smoke checks.
    assert deploy.run("--release=C").returncode == 0
    manual = deploy.run("--rollback-to=A")
    assert manual.returncode == 0, manual.stdout[-5000:]
    summary = deploy.summary()
    assert summary["mode"] == "rollback-to" and summary["release"] == "A"
    assert [(s["name"], s["outcome"]) for s in summary["stages"]] == [("preflight", "passed"), ("restore", "passed")]
    assert summary["checks"]["passed"] > 0 and summary["checks"]["failed"] == 0
    assert requests.get(f"{deploy.api}/version", timeout=10).json()["release"] == "A"
    assert json.loads((deploy.state_dir / "ledger.json").read_text())["current"] == "A"


def test_a_second_deploy_while_one_runs_is_refused_naming_the_holder(deploy: Deploy) -> None:
    engine_id = str(docker.from_env().info().get("ID", "local"))
    path = lock.lock_path(LOCK_ROOT, engine_id, deploy.project)
    holder = subprocess.Popen(
        [sys.executable, "-m", "tests.unit.lock_racers", str(path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": f"{ROOT / 'plugins'}:{ROOT}"},
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == f"held {holder.pid}\n"
        result = deploy.run()
        assert result.returncode == 1, result.stdout[-5000:]
        reason = next(s["reason"] for s in deploy.summary()["stages"] if s["name"] == "preflight")
        assert f"is being deployed by host {socket.gethostname()}, pid {holder.pid}, user " in reason
        assert deploy.containers() == {}, "a refused deploy must start nothing"
        still = lock.read(path)
        assert still is not None and still.pid == holder.pid, "the holder's lock stays"
    finally:
        holder.kill()
        holder.wait()


def api_containers(deploy: Deploy) -> list[str]:
    """The names of the project's API containers, running or not (two while a swap runs)."""
    labels = [f"com.docker.compose.project={deploy.project}", "com.docker.compose.service=api"]
    return sorted(c.name for c in docker.from_env().containers.list(all=True, filters={"label": labels}))


def test_a_deploy_killed_outright_is_repaired_by_the_next_run(deploy: Deploy, tmp_path: Path) -> None:
    """SIGKILL leaves no rollback: the next run sees B 'in progress', closes it, brings A back, then deploys C."""
    image = tag_release_images(tmp_path, good=("A", "C"), broken="B")
    releases = releases_override(deploy, image)
    deploy.write_environment(overrides=[releases], stage_timeout=60)
    assert deploy.run("--release=A").returncode == 0

    def kill_once_b_runs_beside_a(process: subprocess.Popen[str]) -> None:
        # The swap starts B's API beside A's (B never gets ready): killed then, the stack runs two releases, and
        # the repair must bring A back. Killed before B's container exists, the stack still runs A alone and
        # there is nothing to bring back (seen on a slow machine with a fixed 1 s wait).
        try:
            poll(
                lambda: len(api_containers(deploy)) == 2 or None,
                seconds=60,
                every=0.2,
                timed_out=lambda: AssertionError(f"B's API never ran beside A's: {api_containers(deploy)}"),
            )
        finally:
            process.kill()

    code, _ = deploy.run_until("stage services: started", kill_once_b_runs_beside_a, "--release=B", timeout=60)
    assert code == -signal.SIGKILL
    ledger = json.loads((deploy.state_dir / "ledger.json").read_text())
    assert [(r["id"], r["outcome"]) for r in ledger["releases"]] == [("A", "passed"), ("B", "in progress")]

    result = deploy.run("--release=C")
    assert result.returncode == 0, result.stdout[-5000:]
    assert "an earlier run was killed while deploying B" in result.stdout
    assert "brought release A back" in result.stdout
    stages = [(s["name"], s["outcome"]) for s in deploy.summary()["stages"]]
    assert stages[:4] == [("plan", "passed"), ("preflight", "passed"), ("repair", "passed"), ("images", "passed")]
    ledger = json.loads((deploy.state_dir / "ledger.json").read_text())
    assert [(r["id"], r["outcome"]) for r in ledger["releases"]] == [
        ("A", "passed"),
        ("B", "interrupted"),
        ("C", "passed"),
    ]
    assert ledger["current"] == "C"


def test_a_migration_that_fails_on_the_copy_stops_the_deploy_before_anything_live_changes(
    deploy: Deploy, tmp_path: Path
) -> None:
    assert deploy.run("--release=A").returncode == 0
    live_containers = deploy.containers()
    rows_before = count_rows(deploy)
    migrations_b = tmp_path / "migrations-b"
    shutil.copytree(ROOT / "stack" / "migrations", migrations_b)
    (migrations_b / "0003_broken.sql").write_text(
        "CREATE TABLE release_b_ok (id bigserial);\nALTER TABLE no_such_table ADD COLUMN x int;\n"
    )
    deploy.write_environment(migrations=migrations_b)
    result = deploy.run("--release=B")
    assert result.returncode == 1, result.stdout[-5000:]
    summary = deploy.summary()
    failed = [s for s in summary["stages"] if s["outcome"] == "failed"]
    assert [s["name"] for s in failed] == ["rehearsal"]
    assert failed[0]["reason"] == (
        "migration 0003_broken.sql failed on a copy of the database at line 2 (ALTER TABLE no_such_table ADD COLUMN x "
        'int;): relation "no_such_table" does not exist'
    )
    assert summary["rollback"]["performed"] is False, "nothing live changed: nothing to roll back"
    assert deploy.containers() == live_containers
    assert count_rows(deploy) == rows_before
    assert coordinator_sql(deploy, "SELECT to_regclass('release_b_ok') IS NULL") == "t"
    assert coordinator_sql(deploy, "SELECT count(*) FROM deploycheck_schema_migrations") == "2"
    copies = docker.from_env().containers.list(all=True, filters={"label": "org.deploycheck.role=migration-copy"})
    assert copies == [], "the copy must be removed"
    deploy.assert_no_secret_leaked(result)
