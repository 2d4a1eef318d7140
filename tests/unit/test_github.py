"""GitHub Actions output: the job summary and aggregated, escaped annotations."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploycheck.record.github import MAX_ANNOTATIONS, error_annotations, escape_data, escape_property, job_summary
from deploycheck.record.record import CheckRecord, RunRecord, StageRecord


def failing_record(checks: int) -> RunRecord:
    record = RunRecord(environment="ci", mode="deploy", release="abc123")
    record.stages = [StageRecord("database", "failed", 3.2, 0.0, "worker-2 exited while starting (exit code 1)")]
    record.checks = [
        CheckRecord(f"checks/test_m{i % 12}.py::test_{i}", "failed", 0.1, 0.0, f"reason {i}") for i in range(checks)
    ]
    return record


def test_escaping_follows_the_workflow_command_rules() -> None:
    assert escape_data("50% done\nnext\r") == "50%25 done%0Anext%0D"
    assert escape_property("a:b,c") == "a%3Ab%2Cc"


def test_annotations_are_aggregated_to_at_most_ten() -> None:
    lines = error_annotations(failing_record(checks=40))
    assert len(lines) == MAX_ANNOTATIONS
    assert all(line.startswith("::error ") for line in lines)
    assert lines[0].startswith("::error file=checks/test_stages.py,title=stage database failed::worker-2 exited")
    assert "more failing groups" in lines[-1]
    assert all("\n" not in line for line in lines)


def test_job_summary_has_the_outcome_stages_failed_checks_and_rollback() -> None:
    text = job_summary(failing_record(checks=2))
    assert "deploycheck: ci failed" in text and "`abc123`" in text
    assert "| database | failed | 3.20 | worker-2 exited while starting (exit code 1) |" in text
    assert "| `checks/test_m1.py::test_1` | reason 1 |" in text
    assert "**Rollback:**" in text


def test_a_failing_run_under_github_actions_writes_summary_and_annotations(
    suite: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    step_summary = tmp_path / "step_summary.md"
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(step_summary))
    monkeypatch.setenv("FAKE_SCENARIO", "up-fails")
    result = suite.runpytest("--deploy=local", "-p", "no:cacheprovider")
    assert result.ret == 1
    summary = step_summary.read_text()
    assert "deploycheck: local failed" in summary and "| database | failed |" in summary
    errors = [line for line in result.stdout.lines if line.startswith("::error")]
    assert errors == [
        "::error file=checks/test_stages.py,title=stage database failed::docker compose could not start coordinator,"
        " worker-1, worker-2, api, nginx"
    ]


def test_no_github_output_outside_github_actions(
    suite: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    monkeypatch.setenv("FAKE_SCENARIO", "up-fails")
    result = suite.runpytest("--deploy=local", "-p", "no:cacheprovider")
    assert result.ret == 1
    assert not [line for line in result.stdout.lines if line.startswith("::error")]


@pytest.mark.parametrize(
    ("kind", "line", "citus_keys"),
    [
        ("citus", "Citus image: citusdata/citus:13.2; citus_version(): Citus 13.2.2", "Citus 13.2.2"),
        ("postgres", "Database: PostgreSQL 15.18", None),
    ],
)
def test_the_database_is_named_as_what_it_is(kind: str, line: str, citus_keys: str | None) -> None:
    version = "Citus 13.2.2" if kind == "citus" else "PostgreSQL 15.18"
    image = "citusdata/citus:13.2" if kind == "citus" else ""
    record = RunRecord(environment="ci", mode="deploy", database_kind=kind, database_version=version, citus_image=image)
    assert f"- **Database:** {line}" in job_summary(record)
    summary = record.summary()
    assert summary["database"] == {"kind": kind, "version": version}
    assert summary["citus_version"] == citus_keys
