"""The real plugin and its real stage wiring in pytest runs (pytester), on a fake engine (tests/unit/fakes.py):
options, the stage graph, stage bookkeeping, the deployment's end (rollback, ledger, lock), the summary."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from deploycheck.release import lock
from deploycheck.release.rollback import Facts, decide
from tests.unit.conftest import PROJECT_ROOT, commands_run, ledger_with_release_a
from tests.unit.fakes import FAKE_ENGINE_ID, lineless_traceback

RELEASE = "--release=B"
STAGES = [
    "preflight",
    "images",
    "backup",
    "rehearsal",
    "database",
    "citus",
    "migrations",
    "services",
    "proxy",
    "restore_backup",  # a check's stack waits for it too (it runs only with --restore-backup)
]


def summary(pytester: pytest.Pytester) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((pytester.path / "reports" / "summary.json").read_text())
    return data


def state_dir(pytester: pytest.Pytester) -> Path:
    return pytester.path / ".deploycheck" / "local"


def lock_files(pytester: pytest.Pytester) -> list[Path]:
    """The deploy locks left in the project's state folder (a run that ends removes its own)."""
    locks = pytester.path / ".deploycheck" / "locks"
    return sorted(locks.iterdir()) if locks.is_dir() else []


def test_verify_only_runs_preflight_then_every_check_on_the_running_stack(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_SCENARIO", "stack-running")
    ledger_with_release_a(suite)
    result = suite.runpytest("--deploy=local", "--verify-only", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=4, deselected=10)  # preflight's test runs, the other stages' do not
    data = summary(suite)
    assert data["mode"] == "verify-only" and data["release"] == "A", "the release is the running stack's"
    assert [(s["name"], s["outcome"]) for s in data["stages"]] == [("preflight", "passed")]
    assert data["checks"] == {"passed": 3, "failed": 0, "skipped": 0}
    assert data["rollback"]["performed"] is False
    assert not lock_files(suite), "verify-only takes no lock"
    assert ["docker", "compose", "version", "--short"] in commands_run(suite)
    assert not [argv for argv in commands_run(suite) if "up" in argv], "verify-only starts nothing"


def test_a_failed_check_fails_the_run_with_its_reason(suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_SCENARIO", "stack-running")
    monkeypatch.setenv("FAIL_CHECK", "1")
    result = suite.runpytest("--deploy=local", "--verify-only", "-p", "no:cacheprovider")
    assert result.ret == 1
    assert summary(suite)["failed_checks"] == [
        {"name": "test_checks.py::test_check_that_fails", "reason": "AssertionError: the check failed on purpose"}
    ]


def test_a_failed_stage_skips_the_later_stages_and_checks_and_the_first_deploy_is_removed(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_SCENARIO", "up-fails")
    result = suite.runpytest("--deploy=local", RELEASE, "-p", "no:cacheprovider", "-rs")
    result.assert_outcomes(passed=4, failed=1, skipped=7)
    result.stdout.fnmatch_lines(["*stage database: FAILED after * s: docker compose could not start coordinator*"])
    result.stdout.fnmatch_lines(["SKIPPED*stage database failed: docker compose could not start*"])
    data = summary(suite)
    assert [(s["name"], s["outcome"]) for s in data["stages"]] == [
        ("plan", "passed"),
        ("preflight", "passed"),
        ("images", "passed"),
        ("backup", "passed"),
        ("rehearsal", "passed"),
        ("database", "failed"),
    ]
    assert data["checks"] == {"passed": 0, "failed": 0, "skipped": 3}
    rollback = data["rollback"]
    assert rollback["performed"] is True and rollback["outcome"] == "passed", rollback
    assert rollback["actions"] == ["removed the containers of project unit-local; kept its volumes"]
    # Both run the release's own model (its images pinned), in the team's project directory.
    (snapshot,) = (state_dir(suite) / "configurations").glob("compose-*.json")
    project = ["docker", "compose", "-p", "unit-local", "--project-directory", str(suite.path), "-f", str(snapshot)]
    services = ["coordinator", "worker-1", "worker-2", "api", "nginx"]
    up = [*project, "up", "--detach", "--no-deps", "--remove-orphans", *services]
    down = [*project, "down", "--remove-orphans"]
    ran = commands_run(suite)
    assert up in ran and down in ran and ran.index(up) < ran.index(down)
    ledger = json.loads((state_dir(suite) / "ledger.json").read_text())
    assert [(r["id"], r["outcome"]) for r in ledger["releases"]] == [("B", "failed")] and ledger["current"] is None
    assert not lock_files(suite), "the deployment's end releases the lock"


def test_the_stage_graph_is_pytests_own(suite: pytest.Pytester) -> None:
    result = suite.runpytest("--deploy=local", RELEASE, "--setup-plan", "-p", "no:cacheprovider")
    text = result.stdout.str()
    order = [text.index(f"SETUP    S stage_{name} ") for name in STAGES]
    assert order == sorted(order), "the stages are set up in their order"
    assert "SETUP    S stack (fixtures used: deployment, stage_proxy, stage_restore_backup)" in text
    assert all("config" in argv for argv in commands_run(suite)), "a setup plan only reads the stack's model"


def test_an_engine_that_does_not_answer_fails_preflight_and_changes_nothing(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_SCENARIO", "engine-down")
    result = suite.runpytest("--deploy=local", RELEASE, "-p", "no:cacheprovider")
    assert result.ret == 1
    data = summary(suite)
    failed = [s for s in data["stages"] if s["outcome"] == "failed"]
    assert [s["name"] for s in failed] == ["preflight"]
    assert failed[0]["reason"].startswith(
        "the Docker engine of this machine does not answer (Error while fetching server API"
    )
    assert data["rollback"]["outcome"] == "not needed: the run failed before it changed anything"
    assert not (state_dir(suite) / "ledger.json").exists() and not lock_files(suite)


def test_a_live_holder_of_the_lock_refuses_the_deploy_and_keeps_its_lock(suite: pytest.Pytester) -> None:
    path = lock.lock_path(suite.path / ".deploycheck", FAKE_ENGINE_ID, "unit-local")
    holder = subprocess.Popen(
        [sys.executable, "-m", "tests.unit.lock_racers", str(path)], stdout=subprocess.PIPE, text=True, cwd=PROJECT_ROOT
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == f"held {holder.pid}\n"
        result = suite.runpytest("--deploy=local", RELEASE, "-p", "no:cacheprovider")
        assert result.ret == 1
        reason = summary(suite)["stages"][1]["reason"]
        assert (
            "environment 'local' (Compose project 'unit-local' on this engine) is being deployed by "
            f"host {socket.gethostname()}, pid {holder.pid}, user "
        ) in reason
        assert reason.endswith("wait for that deploy to finish, its lock is freed when it ends")
        still = lock.read(path)
        assert still is not None and still.pid == holder.pid, "the holder's lock stays"
        assert not [argv for argv in commands_run(suite) if "up" in argv]
    finally:
        holder.kill()
        holder.wait()


def test_a_damaged_ledger_is_a_usage_error_that_changes_nothing(suite: pytest.Pytester) -> None:
    ledger = state_dir(suite) / "ledger.json"
    ledger.parent.mkdir(parents=True)
    ledger.write_text('{"current": null, "releases": [{"id": "A"')
    result = suite.runpytest_subprocess("--deploy=local", RELEASE, "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: the release ledger {ledger} is damaged (it is cut short: *): restore it*"])
    assert not commands_run(suite) and not lock_files(suite)
    assert ledger.read_text() == '{"current": null, "releases": [{"id": "A"'


def test_an_empty_generated_secret_is_a_usage_error(suite: pytest.Pytester) -> None:
    secret = state_dir(suite) / "db_password"
    secret.parent.mkdir(parents=True)
    secret.write_text("\n")
    result = suite.runpytest_subprocess("--deploy=local", RELEASE, "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: the generated secret {secret} (for $UNIT_DB_PASSWORD) is empty: delete it*"])


@pytest.mark.parametrize(
    "scenario",
    [
        "up-interrupted",
        # A signal can land where Python has no line number; pytest's report of that interrupt crashed (exit 1).
        "up-interrupted,interrupt-lineless",
    ],
)
def test_an_interrupt_during_a_stage_rolls_back_and_exits_as_interrupted(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, scenario: str
) -> None:
    monkeypatch.setenv("FAKE_SCENARIO", scenario)
    result = suite.runpytest("--deploy=local", RELEASE, "-p", "no:cacheprovider", no_reraise_ctrlc=True)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    if "interrupt-lineless" in scenario:  # the entry without a line is reported at its function's first line
        result.stdout.fnmatch_lines([f"*fakes.py:{lineless_traceback.__code__.co_firstlineno}: KeyboardInterrupt*"])
    data = summary(suite)
    assert data["interrupted"] is True
    assert [s["name"] for s in data["stages"] if s["reason"] == "interrupted"] == ["database"]
    assert data["rollback"]["performed"] is True and data["rollback"]["outcome"] == "passed"
    ledger = json.loads((state_dir(suite) / "ledger.json").read_text())
    assert [(r["id"], r["outcome"]) for r in ledger["releases"]] == [("B", "interrupted")]
    assert not lock_files(suite)


def test_the_sigterm_handler_is_restored_when_the_run_ends(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_SCENARIO", "stack-running")
    before = signal.getsignal(signal.SIGTERM)
    suite.runpytest("--deploy=local", "--verify-only", "-p", "no:cacheprovider")
    assert signal.getsignal(signal.SIGTERM) is before


def test_without_a_run_asked_for_the_plugin_is_inert(suite: pytest.Pytester) -> None:
    result = suite.runpytest("-p", "no:cacheprovider", "-rs")
    # The stage tests' fixtures are not there: nothing deploys by accident; a check asking for the stack skips.
    result.assert_outcomes(errors=11, skipped=3)
    assert "fixture 'stage_preflight' not found" in result.stdout.str()
    assert result.stdout.str().count("a deploy check: it runs with pytest --deploy=ENV") == 3
    assert not (suite.path / "reports").exists() and not commands_run(suite)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--deploy=nowhere"], "ERROR: unknown environment 'nowhere': choose one of local, prod (defined in *"),
        (["--deploy=prod"], "ERROR: environment 'prod' needs the database password in $UNIT_PROD_DB_PASSWORD*"),
        (["--deploy=local", "--release=not a release"], "ERROR: --release='not a release' is not a valid release id*"),
        (["--deploy=local", "--release="], "ERROR: --release='' is not a valid release id*"),
        (["--deploy=local", "--release=A\n"], "ERROR: --release='A\\n' is not a valid release id*"),
        (["--deploy=local", "--environments=missing.toml"], "ERROR: the environment file missing.toml does not exist*"),
        (
            ["--deploy=local", "--rollback-to=nope"],
            "ERROR: release 'nope' never deployed green in environment 'local': choose one of none yet*",
        ),
        (
            ["--deploy=local", "--rollback-to=x", "--verify-only"],
            "ERROR: --rollback-to and --verify-only exclude each other*",
        ),
    ],
)
def test_usage_errors_are_one_sentence_without_traceback(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    monkeypatch.delenv("UNIT_PROD_DB_PASSWORD", raising=False)
    result = suite.runpytest_subprocess(*args, "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
    assert "Traceback" not in result.stderr.str() + result.stdout.str()
    assert not (suite.path / "reports").exists(), "a usage error must write nothing"
    assert not commands_run(suite)


@pytest.mark.parametrize(
    ("mode", "release", "failed", "facts", "keep_failed", "action"),
    [
        ("deploy", "B", False, Facts(changed_stack=True), False, "none"),
        ("deploy", "B", True, Facts(changed_stack=True), False, "remove"),
        ("verify-only", "B", True, Facts(changed_stack=True), False, "none"),
        ("deploy", "B", True, Facts(changed_stack=True), True, "keep"),
        ("deploy", "B", True, Facts(changed_stack=False), False, "none"),
        ("deploy", "B", True, Facts(changed_stack=True, stack_existed_before=True), False, "leave"),
        (
            "deploy",
            "B",
            True,
            Facts(changed_stack=True, stack_existed_before=True, previous_release="A"),
            False,
            "restore",
        ),
        (
            "deploy",
            "B",
            True,
            Facts(changed_stack=True, stack_existed_before=True, previous_release="B"),
            False,
            "leave",
        ),
        ("deploy", "B", True, Facts(changed_stack=True, previous_release="A"), False, "restore"),
        ("rollback-to", "A", True, Facts(changed_stack=True, previous_release="A"), False, "none"),
        ("already-current", "A", True, Facts(previous_release="A"), False, "none"),
    ],
    ids=[
        "green",
        "first-deploy-failed",
        "verify-only",
        "keep-failed",
        "nothing-changed",
        "stack-existed",
        "previous-release",
        "same-release",
        "interrupted-with-previous",
        "manual-rollback",
        "already-current",
    ],
)
def test_rollback_decision(mode: Any, release: str, failed: bool, facts: Facts, keep_failed: bool, action: str) -> None:
    assert decide(mode, release, failed, facts, keep_failed=keep_failed).action == action


def test_a_deploy_run_writes_its_html_report_and_junit_xml_where_none_is_asked_for(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_SCENARIO", "stack-running")
    ledger_with_release_a(suite)
    result = suite.runpytest("--deploy=local", "--verify-only", "-p", "no:cacheprovider")
    assert result.ret == 0
    junit = (suite.path / "reports" / "junit.xml").read_text()
    assert 'name="test_check_one"' in junit
    assert "deploycheck-stages" in (suite.path / "reports" / "report.html").read_text()


def test_secret_values_do_not_reach_the_reports_or_the_output(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UNIT_PROD_DB_PASSWORD", "MARKER-d6f1c0ffee")
    monkeypatch.setenv("UNIT_PROD_API_TOKEN", "MARKER-t0ken-77aa")
    monkeypatch.setenv("FAKE_SCENARIO", "up-fails")
    result = suite.runpytest("--deploy=prod", RELEASE, "-p", "no:cacheprovider")
    assert result.ret == 1
    for path in (p for p in Path(suite.path / "reports").rglob("*") if p.is_file()):
        text = path.read_text(errors="replace")
        assert "MARKER-d6f1c0ffee" not in text and "MARKER-t0ken-77aa" not in text, path
    assert "MARKER-d6f1c0ffee" not in result.stdout.str() and "MARKER-t0ken-77aa" not in result.stdout.str()


def test_history_keeps_the_last_runs_with_an_index(suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_SCENARIO", "stack-running")
    ledger_with_release_a(suite)
    outcomes = []
    for fail in ("", "1", ""):
        monkeypatch.setenv("FAIL_CHECK", fail)
        outcomes.append(
            suite.runpytest(
                "--deploy=local", "--verify-only", "-p", "no:cacheprovider", "-o", "deploycheck_history_keep=2"
            ).ret
        )
    assert outcomes == [0, 1, 0]
    history = suite.path / "reports" / "history"
    runs = sorted(p.name for p in history.iterdir() if p.is_dir())
    assert len(runs) == 2, runs
    assert all("-local-" in run for run in runs)
    assert json.loads((history / runs[0] / "summary.json").read_text())["outcome"] == "failed"
    index = (history / "index.html").read_text()
    assert index.count("<tr><td><a href=") == 2 and 'id="deploycheck-durations"' in index
    table = index.split('id="deploycheck-runs"', 1)[1]
    assert table.index(runs[1]) < table.index(runs[0]), "newest run first"


def test_a_run_pytest_cannot_run_is_never_a_pass(suite: pytest.Pytester) -> None:
    """A team's check folder whose conftest breaks pytest itself (an internal error: no check runs)."""
    folder = suite.mkpydir("team_checks")
    (folder / "conftest.py").write_text(
        "def pytest_collection_modifyitems(items):\n    raise RuntimeError('a broken team conftest')\n"
    )
    (folder / "test_team.py").write_text("def test_team():\n    pass\n")
    result = suite.runpytest_subprocess("--deploy=local", "--verify-only", "-p", "no:cacheprovider", "team_checks")
    assert result.ret == pytest.ExitCode.INTERNAL_ERROR, result.stdout.str()
    recorded = summary(suite)
    assert (recorded["outcome"], recorded["pytest_error"]) == ("failed", "pytest ended with exit code 3")
