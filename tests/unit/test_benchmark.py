"""The benchmark's own logic: statistics, targets, ratios and the Markdown table (no Docker, no timing)."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploycheck.record.record import CheckRecord, RunRecord, StageRecord
from scripts.benchmark import (
    DOWNTIME_WINDOWS,
    SCENARIO_BENCHES,
    SCENARIO_FUNCTIONS,
    SCENARIOS,
    Figure,
    Stats,
    Target,
    benches,
    downtime_figures,
    extra_pairs_core_seconds,
    figure,
    markdown_report,
    markdown_table,
    parse_args,
    ratios,
    scenario_benches,
)
from scripts.load import WindowStats


def test_stats_are_median_min_max_and_count() -> None:
    assert Stats.of([3.0, 1.0, 2.0, 10.0, 4.0]) == Stats(3.0, 1.0, 10.0, 5)
    assert Stats.of([1.0, 2.0]) == Stats(1.5, 1.0, 2.0, 2)
    with pytest.raises(ValueError, match="at least once"):
        Stats.of([])


def test_targets_judge_the_median_or_the_maximum() -> None:
    stats = Stats(1.0, 0.5, 4.0, 3)
    assert Target(1.5).met(stats) is True
    assert Target(3.0, "maximum").met(stats) is False
    assert figure("x", "y", "s", [1.0]).met is None


def test_a_target_of_zero_on_the_maximum_means_none_in_any_run() -> None:
    none = Target(0, "maximum")
    assert none.met(Stats(0, 0, 0, 3)) is True
    assert none.met(Stats(0, 0, 1, 3)) is False  # one run in three failed a request: not met
    row = markdown_table([figure("downtime", "failed", "requests", [0, 0, 2], none, "of 630")]).splitlines()[2]
    assert (
        row == "| downtime | failed (of 630) | 0 requests | 0 requests | 2 requests | 3 | max ≤ 0 requests | **no** |"
    )
    assert "| 1.5 writes |" in markdown_table([figure("d", "lost", "writes", [1, 2])])


def test_ratios_pair_runs_of_the_same_iteration() -> None:
    assert ratios([3.0, 8.0], [2.0, 4.0]) == [1.5, 2.0]
    with pytest.raises(ValueError):
        ratios([1.0], [1.0, 2.0])


def test_extra_pairs_take_their_cpu_spread_over_every_core() -> None:
    # 2 workers: 3 nodes, 9 pairs; 8 workers: 9 nodes, 81 pairs; 10 ms of CPU each, 2 cores
    assert extra_pairs_core_seconds(9, 81, 0.010, 2) == pytest.approx(0.36)
    assert extra_pairs_core_seconds(9, 9, 0.010, 2) == 0


def test_markdown_table_has_one_row_per_figure_with_target_and_verdict() -> None:
    figures = [
        figure("green", "deploy / compose up --wait", "ratio", [1.2, 1.4, 1.3], Target(1.5), "same run"),
        figure("smoke", "smoke", "s", [4.0, 3.5, 5.0], Target(3)),
        Figure("memory", "peak RSS", "MB", Stats(61.0, 60.0, 64.0, 7), Target(200, "maximum")),
        figure("green", "of which checks", "s", [2.0]),
    ]
    lines = markdown_table(figures).splitlines()
    assert lines[0] == "| scenario | figure | median | min | max | n | target | met |"
    assert len(lines) == 2 + len(figures)
    assert lines[2] == "| green | deploy / compose up --wait (same run) | 1.30 | 1.20 | 1.40 | 3 | median ≤ 1.5 | yes |"
    assert lines[3] == "| smoke | smoke | 4.00 s | 3.50 s | 5.00 s | 3 | median ≤ 3 s | **no** |"
    assert lines[4] == "| memory | peak RSS | 61 MB | 60 MB | 64 MB | 7 | max ≤ 200 MB | yes |"
    assert lines[5].endswith("| 1 |  |  |")


def test_markdown_report_names_the_machine_and_versions() -> None:
    text = markdown_report(
        [figure("smoke", "smoke", "s", [1.0])],
        {"cores": 2, "memory_gib": 23.4, "kernel": "6.1.0"},
        {"docker engine": "20.10.24", "citus_version()": "Citus 13.2.2 on x86_64-pc-linux-gnu"},
        5,
    )
    assert "2 cores, 23.4 GiB, kernel 6.1.0" in text
    assert "- docker engine: 20.10.24" in text and "- citus_version(): Citus 13.2.2 on x86_64-pc-linux-gnu" in text
    assert "5 runs per scenario" in text


def test_bad_runs_is_one_sentence(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--runs", "0"])
    assert "--runs must be at least 1, not 0: give a positive number of runs" in capsys.readouterr().err


def test_summary_timings_give_the_first_failure_and_the_checks_span() -> None:
    record = RunRecord(environment="unit", mode="deploy")
    record.stages.append(StageRecord("database", "passed", 2.0, 100.0))
    record.checks += [
        CheckRecord("a", "passed", 1.0, 110.0),
        CheckRecord("b", "failed", 0.5, 111.0),
        CheckRecord("c", "skipped", 0.0, 120.0),
    ]
    record.rollback.performed, record.rollback.started_at, record.rollback.seconds = True, 112.0, 3.0
    timings = record.summary()["timings"]
    assert timings == {
        "first_failure_at": 111.5,
        "checks_started_at": 110.0,
        "checks_finished_at": 111.5,
        "rollback_started_at": 112.0,
        "rollback_finished_at": 115.0,
    }
    assert record.summary()["stages"][0]["started_at"] == 100.0


def window(name: str, failed: int, maintenance: int, lost: int, requests: int = 630) -> WindowStats:
    return WindowStats(
        name=name,
        seconds=25.0,
        requests=requests,
        failed=failed,
        maintenance=maintenance,
        by_status={},
        by_kind={"health": 250, "read": 250, "write": 130},
        longest_gap={"health": 1.5, "read": 1.7, "write": 4.0},
        writes_acknowledged=120,
        writes_lost=lost,
    )


def test_downtime_figures_per_window_with_zero_targets() -> None:
    windows = {
        "green": [window("green", 0, 0, 0), window("green", 0, 0, 0, requests=640)],
        "rollback": [window("rollback", 3, 0, 0), window("rollback", 0, 0, 0)],
        "restore": [window("restore", 0, 40, 0), window("restore", 0, 38, 1)],
    }
    figures = downtime_figures(windows)
    assert len(figures) == 3 * 6  # failed, maintenance, three gaps, writes lost
    by_name = {f.name: f for f in figures}
    green, rollback, restore = (DOWNTIME_WINDOWS[w] for w in ("green", "rollback", "restore"))
    assert by_name[f"{green}: failed requests"].met is True
    assert by_name[f"{green}: failed requests"].note == "of 630-640"
    assert by_name[f"{rollback}: failed requests"].met is False  # one run failed 3: the maximum counts
    assert by_name[f"{restore}: failed requests"].met is True
    assert by_name[f"{restore}: maintenance answers (503 + Retry-After)"].target is None
    assert by_name[f"{restore}: acknowledged writes lost"].met is False
    assert by_name[f"{green}: longest gap without a success, write"].stats.median == 4.0
    assert downtime_figures({"green": [], "rollback": [], "restore": []}) == []


def test_the_downtime_scenario_is_wired_and_has_its_own_ports(tmp_path: Path) -> None:
    assert "downtime" in SCENARIOS and set(SCENARIO_FUNCTIONS) == set(SCENARIOS)
    found = {b.name: b for b in benches(tmp_path)}
    downtime = found["downtime"]
    assert downtime.ports == (41501, 41503) and downtime.stage_timeout == 15
    assert downtime.migrations_dir != found["restore"].migrations_dir  # its migration is its own
    assert len({b.ports for b in found.values()}) == len(found)


def test_a_run_cleans_up_only_the_benches_of_its_scenarios(tmp_path: Path) -> None:
    names = {b.name for b in benches(tmp_path)}
    assert set(SCENARIO_BENCHES) == set(SCENARIOS)
    assert scenario_benches(SCENARIOS) == names  # every bench belongs to a scenario
    assert scenario_benches(["downtime"]) == {"downtime"}  # not dcbench-green, which may be another run's
