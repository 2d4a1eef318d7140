"""The plugin in a real pytest run (pytester, no Docker): options, stage bookkeeping, summary, rollback decision."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from plugins.record import RunRecord, StageRecord
from plugins.rollback import decide


def summary(pytester: pytest.Pytester) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((pytester.path / "reports" / "summary.json").read_text())
    return data


def test_clean_run_records_every_stage_and_check(suite: pytest.Pytester) -> None:
    result = suite.runpytest("--deploy=local", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=6)
    result.stdout.fnmatch_lines(["*stage first: started*", "*stage first: passed in*", "*stage third: passed*"])
    data = summary(suite)
    assert data["environment"] == "local" and data["outcome"] == "passed"
    assert [s["name"] for s in data["stages"]] == ["first", "second", "third"]
    assert data["checks"] == {"passed": 3, "failed": 0, "skipped": 0}
    assert data["rollback"] == {
        "performed": False,
        "outcome": "not needed: every stage and check passed",
        "seconds": 0.0,
        "restored_release": None,
        "database_restored": False,
        "database_restore_seconds": 0.0,
        "actions": [],
    }


def test_failed_stage_skips_later_stages_and_checks_with_its_reason(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAIL_STAGE", "second")
    result = suite.runpytest("--deploy=local", "-p", "no:cacheprovider", "-rs")
    result.assert_outcomes(passed=1, failed=1, skipped=4)
    result.stdout.fnmatch_lines(["*stage second failed: second broke on purpose*"])
    result.stdout.fnmatch_lines(["SKIPPED*stage second failed: second broke on purpose*"])
    assert "error" not in result.stdout.str().lower().split("short test summary")[-1]
    data = summary(suite)
    assert data["outcome"] == "failed"
    stages = {s["name"]: s for s in data["stages"]}
    assert stages["second"]["outcome"] == "failed" and stages["second"]["reason"] == "second broke on purpose"
    assert "third" not in stages
    assert data["checks"] == {"passed": 0, "failed": 0, "skipped": 3}


def test_failed_stage_fails_the_run_even_when_only_checks_are_selected(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAIL_STAGE", "first")
    result = suite.runpytest("--deploy=local", "-p", "no:cacheprovider", "-m", "smoke")
    result.assert_outcomes(skipped=1)
    assert result.ret == 1, "every check skipped because a stage failed must not end green"


def test_failed_check_fails_the_run(suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAIL_CHECK", "1")
    result = suite.runpytest("--deploy=local", "-p", "no:cacheprovider")
    assert result.ret == 1
    data = summary(suite)
    assert data["checks"] == {"passed": 2, "failed": 1, "skipped": 0}
    assert data["failed_checks"] == [
        {"name": "test_suite.py::test_check_that_fails", "reason": "AssertionError: the check failed on purpose"}
    ]


def test_verify_only_deselects_deploy_stages(suite: pytest.Pytester) -> None:
    result = suite.runpytest("--deploy=local", "--verify-only", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3, deselected=3)
    assert summary(suite)["mode"] == "verify-only"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--deploy=nowhere"], "ERROR: unknown environment 'nowhere': choose one of local, prod (defined in *"),
        (["--deploy=prod"], "ERROR: environment 'prod' needs the database password in $UNIT_PROD_DB_PASSWORD*"),
        (["--release=not a release"], "ERROR: --release='not a release' is not a valid release id*"),
        (["--environments=missing.toml"], "ERROR: the environment file missing.toml does not exist*"),
        (
            ["--rollback-to=nope"],
            "ERROR: release 'nope' never deployed green in environment 'local': choose one of none yet*",
        ),
        (["--rollback-to=x", "--verify-only"], "ERROR: --rollback-to and --verify-only exclude each other*"),
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


def _record(**changes: object) -> RunRecord:
    record = RunRecord(environment="local", mode="deploy", deployed_anything=True)
    for key, value in changes.items():
        setattr(record, key, value)
    return record


FAILED_STAGE = [StageRecord("citus", "failed", 1.0, 0.0, "worker down")]


@pytest.mark.parametrize(
    ("record", "keep_failed", "action"),
    [
        (_record(), False, "none"),
        (_record(stages=FAILED_STAGE), False, "remove"),
        (_record(interrupted=True), False, "remove"),
        (_record(stages=FAILED_STAGE, mode="verify-only"), False, "none"),
        (_record(stages=FAILED_STAGE), True, "keep"),
        (_record(stages=FAILED_STAGE, deployed_anything=False), False, "none"),
        (_record(stages=FAILED_STAGE, stack_existed_before=True), False, "leave"),
        (
            _record(stages=FAILED_STAGE, stack_existed_before=True, previous_release="A", release="B"),
            False,
            "restore",
        ),
        (
            _record(stages=FAILED_STAGE, stack_existed_before=True, previous_release="B", release="B"),
            False,
            "leave",
        ),
        (_record(interrupted=True, previous_release="A", release="B"), False, "restore"),
        (_record(stages=FAILED_STAGE, mode="rollback-to", previous_release="A"), False, "none"),
        (_record(stages=FAILED_STAGE, mode="already-current", previous_release="A", release="A"), False, "none"),
    ],
    ids=[
        "green",
        "stage-failed",
        "interrupted",
        "verify-only",
        "keep-failed",
        "nothing-deployed",
        "stack-existed",
        "previous-release",
        "same-release",
        "interrupted-with-previous",
        "manual-rollback",
        "already-current",
    ],
)
def test_rollback_decision(record: RunRecord, keep_failed: bool, action: str) -> None:
    assert decide(record, keep_failed=keep_failed).action == action


def test_secret_values_do_not_reach_the_summary(suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNIT_PROD_DB_PASSWORD", "MARKER-d6f1c0ffee")
    monkeypatch.setenv("UNIT_PROD_API_TOKEN", "MARKER-t0ken-77aa")
    monkeypatch.setenv("FAIL_STAGE", "first")
    result = suite.runpytest("--deploy=prod", "-p", "no:cacheprovider")
    assert result.ret == 1
    for path in (p for p in Path(suite.path / "reports").rglob("*") if p.is_file()):
        text = path.read_text(errors="replace")
        assert "MARKER-d6f1c0ffee" not in text and "MARKER-t0ken-77aa" not in text, path
    assert "MARKER-d6f1c0ffee" not in result.stdout.str() and "MARKER-t0ken-77aa" not in result.stdout.str()


def test_history_keeps_the_last_runs_with_an_index(suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    outcomes = []
    for fail in ("", "second", ""):
        monkeypatch.setenv("FAIL_STAGE", fail)
        outcomes.append(
            suite.runpytest("--deploy=local", "-p", "no:cacheprovider", "-o", "deploycheck_history_keep=2").ret
        )
    assert outcomes == [0, 1, 0]
    history = suite.path / "reports" / "history"
    runs = sorted(p.name for p in history.iterdir() if p.is_dir())
    assert len(runs) == 2, runs
    assert all("-local-" in run for run in runs)
    assert json.loads((history / runs[0] / "summary.json").read_text())["outcome"] == "failed"
    assert (history / runs[1] / "summary.json").is_file()
    index = (history / "index.html").read_text()
    assert index.count("<tr><td><a href=") == 2 and 'id="deploycheck-durations"' in index
    table = index.split('id="deploycheck-runs"', 1)[1]
    assert table.index(runs[1]) < table.index(runs[0]), "newest run first"
