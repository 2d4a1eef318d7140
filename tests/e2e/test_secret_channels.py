"""No secret in any output channel when the stack cannot be reached, on the real engine and the real stack
(issue 16 item 1). A green deploy (with a wrong $PGPASSWORD in its environment: deploycheck's sessions use their
password file), then verify-only runs as GitHub Actions runs them: the API stopped; the API dying as the HTTP
checks begin (requests and urllib3 hold the token in their frames); a worker stopped; the wrong database password
(psycopg's connect fails, in the frame that held the conninfo); the coordinator dying as the HTTP checks begin;
the coordinator stopped, with the default tracebacks and then with long ones, their locals, live logs at DEBUG,
JUnit XML with captured output and logs, and a log file. Each run fails; the marker secrets occur 0 times in its
stdout and stderr, junit.xml, report.html, summary.json, the kept history, the rest of reports/, the state
folder, the job summary and the log file. The figures are printed (``-s``) for the record."""

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

    def env(self, case: str, env: dict[str, str]) -> dict[str, str]:
        on_github = {"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(self.step_summary(case))}
        return {**self.deploy.env(), **on_github, **env}

    def run(self, case: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        """A verify-only run that fails, its failed checks printed, the marker secrets counted in its output."""
        result = subprocess.run(
            self.deploy.argv("--verify-only", *args),
            cwd=ROOT,
            env=self.env(case, env),
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        return self.counted(case, result)

    def dying(self, case: str, service_id: str, *, when: str) -> subprocess.CompletedProcess[str]:
        """A verify-only run (``-v``) during which ``service_id``'s container is stopped once a line of its output
        holds ``when``: the checks' stack still names its ports, and nothing answers there any more. Its stderr
        is read with its stdout."""
        running = subprocess.Popen(
            self.deploy.argv("--verify-only", "-v"),
            cwd=ROOT,
            env=self.env(case, {}),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert running.stdout is not None
        lines: list[str] = []
        stopped = False
        for line in running.stdout:
            lines.append(line)
            if not stopped and when in line:
                docker.from_env().containers.get(service_id).stop(timeout=5)
                stopped = True
        running.wait(timeout=900)
        assert stopped, "".join(lines[-200:])
        return self.counted(case, subprocess.CompletedProcess(running.args, running.returncode, "".join(lines), ""))

    def counted(self, case: str, result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
        assert result.returncode == 1, result.stdout[-5000:]
        reasons = [f"{c['name'].rsplit('/', 1)[-1]}: {c['reason'][:150]}" for c in self.failed_checks()]
        print(f"\n[secrets] {case}: exit 1, {len(reasons)} failed checks, e.g.", *reasons[:4], sep="\n    ")
        return result

    def count(
        self, case: str, result: subprocess.CompletedProcess[str], *files: Path, markers: tuple[str, ...] = MARKERS
    ) -> None:
        """The marker secrets in every channel of the run: none, printed for the record."""
        found = self.deploy.secret_occurrences(result, self.step_summary(case), *files, markers=markers)
        self.figures[case] = found
        print(f"[secrets] {case}: marker-secret occurrences by channel: {found}")
        assert found == dict.fromkeys(found, 0), found

    def failed_checks(self) -> list[dict[str, str]]:
        failed: list[dict[str, str]] = self.deploy.summary()["failed_checks"]
        return failed

    def reasons(self) -> str:
        return "\n".join(check["reason"] for check in self.failed_checks())


def test_no_secret_in_any_output_when_the_api_a_worker_or_the_coordinator_cannot_be_reached(deploy: Deploy) -> None:
    # deploycheck's own sessions authenticate with their password file, not with a $PGPASSWORD of the machine's.
    verify = Verifier(deploy)
    first = deploy.run(PGPASSWORD=WRONG_PASSWORD)
    assert first.returncode == 0, first.stdout[-5000:]
    verify.count("green-deploy", first, markers=(*MARKERS, WRONG_PASSWORD))
    containers = deploy.containers()
    client = docker.from_env()

    # (1) The API stopped, as the README's recipe stops a worker.
    client.containers.get(containers["api"]).stop(timeout=5)
    verify.count("api-stopped", verify.run("api-stopped"))
    assert "api" in verify.reasons(), verify.reasons()
    client.containers.get(containers["api"]).start()
    wait_healthy(containers["api"])

    # (2) The API dies as the HTTP checks begin: every request after that is refused, through requests and
    # urllib3, whose frames hold the headers (the API token).
    verify.count("api-dies", verify.dying("api-dies", containers["api"], when="checks/test_http.py::"))
    assert "Connection refused" in verify.reasons() or "ConnectionError" in verify.reasons(), verify.reasons()
    client.containers.get(containers["api"]).start()
    wait_healthy(containers["api"])

    # (3) A worker stopped: the Citus checks and the round trip fail on it.
    client.containers.get(containers["worker-2"]).stop(timeout=5)
    verify.count("worker-stopped", verify.run("worker-stopped"))
    assert "worker-2" in verify.reasons(), verify.reasons()
    client.containers.get(containers["worker-2"]).start()
    wait_healthy(containers["worker-2"])

    # (4) The wrong database password: the coordinator refuses deploycheck's sessions at psycopg's connect;
    # neither the wrong one nor the right one (in Compose's environment) shows anywhere.
    wrong = verify.run("wrong-password", DEPLOYCHECK_E2E_DB_PASSWORD=WRONG_PASSWORD)
    assert "password authentication failed" in wrong.stdout, wrong.stdout[-5000:]
    verify.count("wrong-password", wrong, markers=(*MARKERS, WRONG_PASSWORD))

    # (5) The coordinator dies as the HTTP checks begin (the database's checks passed before).
    verify.count(
        "coordinator-dies", verify.dying("coordinator-dies", containers["coordinator"], when="checks/test_http.py::")
    )

    # (6) The coordinator stopped.
    stopped = verify.run("coordinator-stopped")
    verify.count("coordinator-stopped", stopped)
    assert "coordinator" in verify.reasons(), verify.reasons()

    # (7) The same, with everything a run can be asked to show: long tracebacks with their locals, live logs at
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
    verify.count("coordinator-stopped-long", loud, log_file)
    assert log_file.stat().st_size > 0

    total = sum(sum(channels.values()) for channels in verify.figures.values())
    print(f"\n[secrets] {len(verify.figures)} runs, marker-secret occurrences in all their output: {total}")
