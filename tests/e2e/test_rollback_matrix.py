"""The rollback fault matrix: each case goes from a known good release A to a release B that fails, and
asserts that the right failure is reported, that release A serves again, that every row written before the
deploy is still there, and that the reports explain it.

One environment serves the whole matrix: A is deployed once with rows written through the API, and every
case starts by deploying A again, which, A being current and healthy, changes nothing and only verifies.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest
import requests

from deploycheck.engine.images import split_reference
from tests.citus import resolved_citus_image
from tests.e2e.conftest import (
    ROOT,
    Deploy,
    build_crashing_api,
    coordinator_sql,
    free_ports,
    releases_override,
    remove_project,
    row_ids,
    tag_release_images,
)

pytestmark = pytest.mark.e2e

# The matrix's own tag of the Citus image set-up chose, so a case can move it as a new Citus build would.
CITUS_IMAGE = "deploycheck/citus-e2e:13.2"
GOOD_RELEASES = ("A", "B-worker-stopped", "B-worker-killed", "B-nginx", "B-sigint", "B-sigterm")


@dataclass
class Matrix:
    deploy: Deploy
    releases_override: str  # image: deploycheck/api-e2e:${RELEASE}

    def environment(self, *overrides: str, stage_timeout: int = 20, migrations: Path | None = None) -> None:
        self.deploy.write_environment(
            overrides=[self.releases_override, *overrides],
            stage_timeout=stage_timeout,
            migrations=migrations or ROOT / "stack" / "migrations",
            citus_image=CITUS_IMAGE,
        )


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Matrix]:
    directory = tmp_path_factory.mktemp("matrix")
    deploy = Deploy(name="matrix", project=f"dce2e-matrix-{os.getpid()}", directory=directory, ports=free_ports(2))
    client = docker.from_env()
    client.images.get(resolved_citus_image()).tag(*split_reference(CITUS_IMAGE))
    image = tag_release_images(directory, good=GOOD_RELEASES, broken="B-never-ready")
    client.images.get(build_crashing_api(directory)).tag("deploycheck/api-e2e", tag="B-crash-loop")
    client.images.get("deploycheck/api-e2e:B-never-ready").tag("deploycheck/api-e2e", tag="B-new-citus")
    matrix = Matrix(deploy, releases_override(deploy, image))
    matrix.environment(stage_timeout=120)  # the first start runs initdb and CREATE EXTENSION citus on every node
    first = deploy.run("--release=A")
    assert first.returncode == 0, first.stdout[-5000:]
    deploy.seed_stores()
    yield matrix
    remove_project(deploy.project)
    shutil.rmtree(deploy.state_dir, ignore_errors=True)


@pytest.fixture
def from_a(matrix: Matrix) -> tuple[set[int], set[int]]:
    """Release A current and serving (a re-deploy of A, which changes nothing); the rows it holds."""
    matrix.environment()
    again = matrix.deploy.run("--release=A")
    assert again.returncode == 0, again.stdout[-5000:]
    print(f"\nmatrix: release A before the case: {matrix.deploy.summary()['mode']}")
    return row_ids(matrix.deploy)


def _assert_a_is_back(
    matrix: Matrix, result: subprocess.CompletedProcess[str] | str, rows_before: tuple[set[int], set[int]]
) -> dict[str, Any]:
    """A serves again with every row written before the deploy, and the reports say what happened."""
    deploy = matrix.deploy
    output = result if isinstance(result, str) else result.stdout
    summary = deploy.summary()
    assert summary["outcome"] == "failed"
    assert summary["previous_release"] == "A"
    rollback = summary["rollback"]
    assert rollback["performed"] is True and rollback["outcome"] == "passed", rollback
    assert rollback["restored_release"] == "A"
    assert any("verified release A" in action for action in rollback["actions"]), rollback["actions"]
    api = deploy.api
    assert requests.get(f"{api}/version", timeout=10).json()["release"] == "A"
    assert requests.get(f"http://127.0.0.1:{deploy.ports[1]}/ready", timeout=10).status_code == 200
    stores_after, orders_after = row_ids(deploy)
    assert rows_before[0] <= stores_after and rows_before[1] <= orders_after, "rows written before B were lost"
    report = (deploy.reports / "report.html").read_text()
    assert "restored release: A" in report and "deploycheck-rollback" in report
    assert "[deploycheck] rollback: passed in" in output
    if not isinstance(result, str):
        deploy.assert_no_secret_leaked(result)
    case = os.environ.get("PYTEST_CURRENT_TEST", "").split("::")[-1].split(" ")[0]
    print(
        f"\nmatrix figures: {case}: rollback {rollback['seconds']:.1f} s; rows before: {len(rows_before[0])} stores, "
        f"{len(rows_before[1])} orders; after: {len(stores_after)} stores, {len(orders_after)} orders"
    )
    return summary


def _failed_stage(summary: dict[str, Any]) -> dict[str, Any]:
    failed = [s for s in summary["stages"] if s["outcome"] == "failed"]
    assert len(failed) == 1, summary["stages"]
    return dict(failed[0])


def _container(matrix: Matrix, service: str) -> docker.models.containers.Container:
    return docker.from_env().containers.get(f"{matrix.deploy.project}-{service}-1")


def test_re_deploy_of_the_current_release_recreates_nothing_and_only_verifies(matrix: Matrix) -> None:
    matrix.environment()
    before = matrix.deploy.containers()
    result = matrix.deploy.run("--release=A")
    assert result.returncode == 0, result.stdout[-5000:]
    assert "release A is already current and healthy: nothing to change" in result.stdout
    summary = matrix.deploy.summary()
    assert summary["mode"] == "already-current" and summary["outcome"] == "passed"
    assert [s["name"] for s in summary["stages"]] == ["plan", "preflight"]
    assert summary["checks"]["passed"] > 0 and summary["checks"]["failed"] == 0
    assert matrix.deploy.containers() == before, "a re-deploy of the current release must recreate nothing"


def test_worker_stopped_during_the_citus_stage(matrix: Matrix, from_a: tuple[set[int], set[int]]) -> None:
    def stop_worker(process: subprocess.Popen[str]) -> None:
        process.send_signal(signal.SIGSTOP)  # hold the deploy at the start of its citus stage
        try:
            _container(matrix, "worker-2").stop(timeout=5)
        finally:
            process.send_signal(signal.SIGCONT)

    code, output = matrix.deploy.run_until("stage citus: started", stop_worker, "--release=B-worker-stopped")
    assert code == 1, output[-5000:]
    summary = _assert_a_is_back(matrix, output, from_a)
    stage = _failed_stage(summary)
    assert stage["name"] == "citus" and "worker-2" in stage["reason"], stage


def test_worker_killed_during_the_checks(matrix: Matrix, from_a: tuple[set[int], set[int]]) -> None:
    worker = _container(matrix, "worker-2")

    def kill_worker(process: subprocess.Popen[str]) -> None:
        # The checks take about half a second: hold the run until the engine says the worker is dead, so the
        # checks still to run meet it dead (an unheld kill once landed after the last check, and the run passed).
        process.send_signal(signal.SIGSTOP)
        try:
            worker.kill()
            worker.wait(timeout=30)
        finally:
            process.send_signal(signal.SIGCONT)

    try:
        code, output = matrix.deploy.run_until("checks/test_http.py", kill_worker, "--release=B-worker-killed")
    finally:
        worker.reload()
        back_after_the_run = worker.status == "running"
        if not back_after_the_run:  # the next cases start from A, not from this case's dead worker
            worker.start()
    assert code == 1, output[-5000:]
    assert back_after_the_run, "the rollback must start the killed worker again"
    summary = _assert_a_is_back(matrix, output, from_a)
    assert all(s["outcome"] == "passed" for s in summary["stages"]), summary["stages"]
    failed = summary["failed_checks"]
    assert failed and any("worker-2" in check["reason"] for check in failed), failed


def test_migration_that_passes_but_the_api_never_becomes_ready(
    matrix: Matrix, from_a: tuple[set[int], set[int]], tmp_path: Path
) -> None:
    migrations = tmp_path / "migrations-b"
    shutil.copytree(ROOT / "stack" / "migrations", migrations)
    (migrations / "0003_release_b_audit.sql").write_text("CREATE TABLE release_b_audit (note text);\n")
    matrix.environment(migrations=migrations)
    result = matrix.deploy.run("--release=B-never-ready")
    assert result.returncode == 1, result.stdout[-5000:]
    summary = _assert_a_is_back(matrix, result, from_a)
    stage = _failed_stage(summary)
    assert stage["name"] == "services" and "release broken on purpose" in stage["reason"], stage
    assert summary["rollback"]["database_restored"] is True
    assert row_ids(matrix.deploy) == from_a, "the database must be exactly as before B"
    assert summary["migrations_applied"] == ["0003_release_b_audit.sql"]
    applied = coordinator_sql(
        matrix.deploy, "SELECT string_agg(version, ',' ORDER BY version) FROM deploycheck_schema_migrations"
    )
    assert applied == "0001_create_stores_and_orders.sql,0002_keys.sql", "B's migration must be undone"
    assert coordinator_sql(matrix.deploy, "SELECT to_regclass('release_b_audit') IS NULL") == "t"
    print(f"matrix figures: database restore {summary['rollback']['database_restore_seconds']:.1f} s")


def test_broken_nginx_config(matrix: Matrix, from_a: tuple[set[int], set[int]]) -> None:
    template = matrix.deploy.directory / "broken.conf.template"
    template.write_text("server {\n    listen 80;\n    proxy_pass_everything_please on;\n}\n")
    broken = matrix.deploy.override(
        "broken-nginx.yaml",
        f"services:\n  nginx:\n    volumes:\n      - {template}:/etc/nginx/templates/default.conf.template:ro\n",
    )
    matrix.environment(broken)
    result = matrix.deploy.run("--release=B-nginx")
    assert result.returncode == 1, result.stdout[-5000:]
    summary = _assert_a_is_back(matrix, result, from_a)
    stage = _failed_stage(summary)
    assert stage["name"] == "proxy" and 'unknown directive "proxy_pass_everything_please"' in stage["reason"], stage
    # A's configuration came back with A: the broken template is not mounted any more.
    mounts = [m["Destination"] for m in _container(matrix, "nginx").attrs["Mounts"]]
    assert "/etc/nginx/templates/default.conf.template" not in mounts


def test_api_container_that_crash_loops(matrix: Matrix, from_a: tuple[set[int], set[int]]) -> None:
    matrix.environment(stage_timeout=120)
    result = matrix.deploy.run("--release=B-crash-loop")
    assert result.returncode == 1, result.stdout[-5000:]
    summary = _assert_a_is_back(matrix, result, from_a)
    stage = _failed_stage(summary)
    # Failed on the exit itself, not on the 120 s deadline ("did not become healthy within").
    assert stage["name"] in ("database", "services") and re.search(
        r"^api (exited|restarted) while starting", stage["reason"]
    ), stage
    report = (matrix.deploy.reports / "report.html").read_text()
    assert "e2e fault: this release cannot start" in report, "the crashing container's logs must be in the report"


def test_new_citus_build_with_a_release_that_fails(
    matrix: Matrix, from_a: tuple[set[int], set[int]], tmp_path: Path
) -> None:
    """The Citus image's tag moves to a new build, and B, deployed on it, fails: A comes back on A's build."""
    client = docker.from_env()
    build_of_a = client.images.get(CITUS_IMAGE).id
    (tmp_path / "Dockerfile").write_text(f"FROM {CITUS_IMAGE}\nLABEL org.deploycheck.e2e=new-citus-build\n")
    new_build, _ = client.images.build(path=str(tmp_path), tag=CITUS_IMAGE, rm=True)
    try:
        assert new_build.id != build_of_a
        matrix.environment()
        result = matrix.deploy.run("--release=B-new-citus")
        assert result.returncode == 1, result.stdout[-5000:]
        summary = _assert_a_is_back(matrix, result, from_a)
        assert _failed_stage(summary)["name"] == "services"
        # A's nodes run A's build again: its images are pinned by id, whatever the tag points at now.
        assert client.images.get(CITUS_IMAGE).id == new_build.id
        for node in ("coordinator", "worker-1", "worker-2"):
            assert _container(matrix, node).image.id == build_of_a, f"{node} must run A's Citus build again"
    finally:
        client.images.get(build_of_a).tag(*split_reference(CITUS_IMAGE))


def test_ctrl_c_during_the_database_stage(matrix: Matrix, from_a: tuple[set[int], set[int]]) -> None:
    """B changes the coordinator's configuration, so its database stage recreates it, with a healthcheck that
    never passes: Ctrl+C in the terminal (SIGINT to the whole process group, Compose included) lands while the
    stage waits for it."""
    changed = matrix.deploy.override(
        "b-coordinator.yaml",
        """
        services:
          coordinator:
            labels:
              org.deploycheck.e2e: release-b
            healthcheck:
              test: ["CMD", "false"]
        """,
    )
    matrix.environment(changed)

    def ctrl_c(process: subprocess.Popen[str]) -> None:
        client = docker.from_env()
        label = {"label": [f"com.docker.compose.project={matrix.deploy.project}", "org.deploycheck.e2e=release-b"]}
        deadline = time.monotonic() + 120
        while not client.containers.list(filters={**label, "status": "running"}) and time.monotonic() < deadline:
            time.sleep(0.1)  # until B's coordinator runs: the database stage then waits for it to be healthy
        os.killpg(process.pid, signal.SIGINT)

    code, output = matrix.deploy.run_until("stage database: started", ctrl_c, "--release=B-sigint")
    assert code == pytest.ExitCode.INTERRUPTED, output[-5000:]
    summary = _assert_a_is_back(matrix, output, from_a)
    assert summary["interrupted"] is True
    assert [s["name"] for s in summary["stages"] if s["reason"] == "interrupted"] == ["database"], summary["stages"]
    labels = _container(matrix, "coordinator").labels
    assert "org.deploycheck.e2e" not in labels, "A's configuration of the coordinator must come back"


def test_sigterm_during_the_checks(matrix: Matrix, from_a: tuple[set[int], set[int]]) -> None:
    code, output = matrix.deploy.run_until(
        "checks/test_http.py",
        lambda process: process.send_signal(signal.SIGTERM),
        "--release=B-sigterm",
    )
    assert code == pytest.ExitCode.INTERRUPTED, output[-5000:]
    summary = _assert_a_is_back(matrix, output, from_a)
    assert summary["interrupted"] is True
    assert all(s["outcome"] == "passed" for s in summary["stages"]), "SIGTERM came during the checks"
