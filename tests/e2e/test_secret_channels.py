"""No secret in any output channel when the stack cannot be reached, on the real engine and the real stack
(issue 16 item 1): a green deploy, then verify-only runs with the API stopped, a worker stopped, the wrong
database password, the coordinator dying while the checks run, and the coordinator stopped (with the default
tracebacks, then with long ones, their locals, live logs and a log file). Each run fails; the marker secrets
occur 0 times in its stdout and stderr, junit.xml, report.html, summary.json, the kept history, the state folder,
the GitHub job summary and the log file. The figures are printed for the record."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import docker
import pytest

from tests.e2e.conftest import MARKERS, ROOT, Deploy

pytestmark = pytest.mark.e2e

WRONG_PASSWORD = "e2e-MARKER-wr0ng-pa55-91c5e0"


def wait_healthy(container_id: str, seconds: float = 120) -> None:
    client = docker.from_env()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        container = client.containers.get(container_id)
        if (container.attrs["State"].get("Health") or {}).get("Status") == "healthy":
            return
        time.sleep(1)
    raise AssertionError(f"{container_id[:12]} did not become healthy within {seconds} s")


class Verifier:
    """Verify-only runs of one deploy as GitHub Actions runs them, each with its own job summary, and the
    marker-secret occurrences of each run, by channel."""

    def __init__(self, deploy: Deploy) -> None:
        self.deploy = deploy
        self.figures: dict[str, dict[str, int]] = {}

    def step_summary(self, case: str) -> Path:
        return self.deploy.directory / f"step-summary-{case}.md"

    def count(
        self, case: str, result: subprocess.CompletedProcess[str], *files: Path, markers: tuple[str, ...] = MARKERS
    ) -> dict[str, int]:
        found = self.deploy.secret_occurrences(result, self.step_summary(case), *files, markers=markers)
        self.figures[case] = found
        print(f"\n[secrets] {case}: exit {result.returncode}; marker-secret occurrences by channel: {found}")
        return found

    def run(self, case: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        on_github = {"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(self.step_summary(case))}
        return subprocess.run(
            self.deploy.argv("--verify-only", *args),
            cwd=ROOT,
            env={**self.deploy.env(), **on_github, **env},
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )

    def failed_checks(self) -> list[dict[str, str]]:
        failed: list[dict[str, str]] = self.deploy.summary()["failed_checks"]
        return failed


def test_no_secret_in_any_output_when_the_api_a_worker_or_the_coordinator_cannot_be_reached(deploy: Deploy) -> None:
    # deploycheck's own sessions authenticate with their password file, not with a $PGPASSWORD of the machine's.
    verify = Verifier(deploy)
    first = deploy.run(PGPASSWORD=WRONG_PASSWORD)
    assert first.returncode == 0, first.stdout[-5000:]
    found = verify.count("green-deploy", first, markers=(*MARKERS, WRONG_PASSWORD))
    assert found == dict.fromkeys(found, 0), found
    containers = deploy.containers()
    client = docker.from_env()

    # (1) The API stopped: every request to it fails, through requests and urllib3 (which hold the token).
    client.containers.get(containers["api"]).stop(timeout=5)
    api_down = verify.run("api-stopped")
    assert api_down.returncode == 1, api_down.stdout[-5000:]
    assert any("api" in check["name"] and "Connection" in check["reason"] for check in verify.failed_checks())
    assert verify.count("api-stopped", api_down) == dict.fromkeys(verify.figures["api-stopped"], 0)
    client.containers.get(containers["api"]).start()
    wait_healthy(containers["api"])

    # (2) A worker stopped: the Citus checks and the round trip fail on it.
    client.containers.get(containers["worker-2"]).stop(timeout=5)
    worker_down = verify.run("worker-stopped")
    assert worker_down.returncode == 1, worker_down.stdout[-5000:]
    assert any("worker-2" in check["reason"] for check in verify.failed_checks()), verify.failed_checks()
    assert verify.count("worker-stopped", worker_down) == dict.fromkeys(verify.figures["worker-stopped"], 0)
    client.containers.get(containers["worker-2"]).start()
    wait_healthy(containers["worker-2"])

    # (3) The wrong database password: the coordinator refuses deploycheck's sessions; neither it nor the right
    # one (the API's, in Compose's environment) shows anywhere.
    wrong = verify.run("wrong-password", DEPLOYCHECK_E2E_DB_PASSWORD=WRONG_PASSWORD)
    assert wrong.returncode == 1, wrong.stdout[-5000:]
    assert "password authentication failed" in wrong.stdout, wrong.stdout[-5000:]
    found = verify.count("wrong-password", wrong, markers=(*MARKERS, WRONG_PASSWORD))
    assert found == dict.fromkeys(found, 0), found

    # (4) The coordinator dies while the checks run: once the HTTP checks start, after the database's.
    running = deploy.start("--verify-only", "-v")
    assert running.stdout is not None
    lines: list[str] = []
    stopped = False
    for line in running.stdout:
        lines.append(line)
        if not stopped and "checks/test_http.py::" in line:
            client.containers.get(containers["coordinator"]).stop(timeout=5)
            stopped = True
    running.wait(timeout=900)
    assert stopped, "".join(lines[-200:])
    dies = subprocess.CompletedProcess(running.args, running.returncode, "".join(lines), "")
    assert dies.returncode == 1, dies.stdout[-5000:]
    assert any("connection" in check["reason"].lower() for check in verify.failed_checks()), verify.failed_checks()
    found = verify.count("coordinator-dies", dies)
    assert found == dict.fromkeys(found, 0), found

    # (5) The coordinator stopped, as the README's recipe stops a worker: every database check fails at connect.
    db_down = verify.run("coordinator-stopped")
    assert db_down.returncode == 1, db_down.stdout[-5000:]
    assert "connection failed" in db_down.stdout or "Connection refused" in db_down.stdout, db_down.stdout[-5000:]
    found = verify.count("coordinator-stopped", db_down)
    assert found == dict.fromkeys(found, 0), found

    # (6) The same, with everything a run can be asked to show: long tracebacks with their locals, live logs at
    # DEBUG, JUnit XML with the captured output and logs, and a log file.
    log_file = deploy.directory / "deploycheck.log"
    loud = verify.run(
        "coordinator-stopped-long",
        "--tb=long",
        "--showlocals",
        "-rA",
        "-o",
        "log_cli=true",
        "--log-cli-level=DEBUG",
        "-o",
        "junit_logging=all",
        f"--log-file={log_file}",
        "--log-file-level=DEBUG",
    )
    assert loud.returncode == 1, loud.stdout[-5000:]
    assert "kwargs" in loud.stdout and "passfile" in loud.stdout, "psycopg's connect frame, given a password file"
    found = verify.count("coordinator-stopped-long", loud, log_file)
    assert found == dict.fromkeys(found, 0), found
    assert log_file.stat().st_size > 0

    total = sum(sum(channels.values()) for channels in verify.figures.values())
    print(f"\n[secrets] {len(verify.figures)} runs, marker-secret occurrences in all their output: {total}")
