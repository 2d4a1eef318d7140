"""Stage bookkeeping: every deployment stage runs through ``run_stage``.

A stage is named, timed, shown on the terminal as it starts and ends, and recorded in the run record. A stage
that fails does not raise out of its fixture (pytest would re-raise the cached error for every later test):
it is recorded, its own stage test fails with the reason, and every later stage and check is skipped with
"stage X failed: reason".
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import TypeVar

import pytest

from plugins.record import RUN_RECORD, RunRecord, StageRecord

T = TypeVar("T")

STAGES = ("preflight", "images", "backup", "rehearsal", "database", "citus", "migrations", "api", "proxy")
# Stages run only when needed, by the fixture of the stage named here, and reported by its test.
REPORTED_WITH = {"preflight": ("repair", "restore")}


class StageFailed(Exception):
    """A stage could not do its job: ``reason`` is one line, ``evidence`` what a person needs to see why."""

    def __init__(self, reason: str, evidence: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.evidence = evidence


def skip_if_a_stage_failed(record: RunRecord) -> None:
    failed = record.failed_stage
    if failed is not None:
        pytest.skip(f"stage {failed.name} failed: {failed.reason}")
    if record.interrupted:
        pytest.skip("the run was interrupted")


def say(config: pytest.Config, line: str) -> None:
    """One line on the terminal, now, even from inside a fixture (where pytest captures output)."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return
    capture = config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
        reporter.ensure_newline()
        reporter.write_line(line, bold=True)


def run_stage(config: pytest.Config, name: str, action: Callable[[], T]) -> T | None:
    """Run one stage; returns its value, or None when it failed (recorded; its stage test reports it)."""
    record = config.stash[RUN_RECORD]
    skip_if_a_stage_failed(record)
    say(config, f"[deploycheck] stage {name}: started")
    started = time.time()
    start = time.monotonic()
    try:
        value = action()
    except StageFailed as failure:
        seconds = time.monotonic() - start
        record.stages.append(StageRecord(name, "failed", seconds, started, failure.reason, failure.evidence))
        say(config, f"[deploycheck] stage {name}: FAILED after {seconds:.1f} s: {failure.reason}")
        return None
    except KeyboardInterrupt:
        seconds = time.monotonic() - start
        record.interrupted = True
        record.stages.append(StageRecord(name, "failed", seconds, started, "interrupted"))
        raise
    except Exception as error:  # a bug or an unforeseen failure: still a failed stage, with its type
        seconds = time.monotonic() - start
        reason = f"{type(error).__name__}: {error}"
        record.stages.append(StageRecord(name, "failed", seconds, started, reason.splitlines()[0][:500], reason))
        say(config, f"[deploycheck] stage {name}: FAILED after {seconds:.1f} s: {reason.splitlines()[0][:200]}")
        return None
    seconds = time.monotonic() - start
    record.stages.append(StageRecord(name, "passed", seconds, started))
    say(config, f"[deploycheck] stage {name}: passed in {seconds:.1f} s")
    return value


def stage_result(record: RunRecord, name: str) -> StageRecord | None:
    return next((stage for stage in record.stages if stage.name == name), None)
