"""GitHub Actions output, from the run record: a job summary and at most 10 aggregated error annotations."""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

from deploycheck.record.record import RunRecord
from deploycheck.record.reporting import write_fence_line

MAX_ANNOTATIONS = 10  # GitHub shows at most 10 errors per step: aggregate rather than lose them


def is_github_actions() -> bool:
    return os.environ.get("GITHUB_ACTIONS") == "true"


def escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def job_summary(record: RunRecord) -> str:
    """Markdown for $GITHUB_STEP_SUMMARY: outcome, release, stages, failed checks, rollback."""
    icon = ":white_check_mark:" if record.outcome == "passed" else ":x:"
    lines = [
        f"## {icon} deploycheck: {record.environment} {record.outcome}",
        "",
        f"- **Release:** `{record.release}` ({record.mode})",
        f"- **Database:** {_cell(record.database_line)}",
    ]
    if record.interrupted:
        lines.append("- **Interrupted** (Ctrl+C or SIGTERM)")
    lines += ["", "| Stage | Outcome | Seconds | Reason |", "|---|---|---:|---|"]
    lines += [f"| {s.name} | {s.outcome} | {s.seconds:.2f} | {_cell(s.reason)} |" for s in record.stages]
    counts = record.check_counts
    lines += ["", f"**Checks:** {counts.passed} passed, {counts.failed} failed, {counts.skipped} skipped"]
    failed = [c for c in record.checks if c.outcome == "failed"]
    if failed:
        lines += ["", "| Failed check | Reason |", "|---|---|"]
        lines += [f"| `{c.nodeid}` | {_cell(c.reason)} |" for c in failed]
    rollback = record.rollback
    lines += ["", f"**Rollback:** {rollback.outcome} ({rollback.seconds:.1f} s)"]
    lines += [f"- {_cell(action)}" for action in rollback.actions]
    fence = record.write_fence
    if fence.left_on:
        lines += ["", f"> [!CAUTION]\n> **{_cell(write_fence_line(fence))}**"]
    else:
        lines += ["", f"**Write fence:** {_cell(write_fence_line(fence).removeprefix('write fence: '))}"]
    if fence.earlier_lifted:
        lines.append(f"- {_cell(fence.earlier_lifted)}")
    return "\n".join(lines) + "\n"


def error_annotations(record: RunRecord) -> list[str]:
    """``::error`` lines: the failed stage, then failed checks grouped by file, at most 10 in all."""
    found: list[tuple[str, str, str]] = []  # (file, title, message)
    if record.write_fence.left_on:
        found.append(("", "the database refuses every write", write_fence_line(record.write_fence)))
    stage = record.failed_stage
    if stage is not None:
        found.append(("checks/test_stages.py", f"stage {stage.name} failed", stage.reason))
    by_file: dict[str, list[str]] = defaultdict(list)
    for check in record.checks:
        if check.outcome == "failed":
            by_file[check.nodeid.split("::", 1)[0]].append(f"{check.nodeid.split('::', 1)[-1]}: {check.reason}")
    for path, failures in by_file.items():
        title = f"{len(failures)} check{'s' if len(failures) > 1 else ''} failed in {path}"
        found.append((path, title, "\n".join(failures)))
    if len(found) > MAX_ANNOTATIONS:
        rest = found[MAX_ANNOTATIONS - 1 :]
        found = found[: MAX_ANNOTATIONS - 1]
        found.append(("", f"{len(rest)} more failing groups", "\n".join(title for _, title, _ in rest)))
    return [
        f"::error {'file=' + escape_property(path) + ',' if path else ''}title={escape_property(title)}::"
        f"{escape_data(message)}"
        for path, title, message in found
    ]


def write_job_summary(record: RunRecord) -> None:
    target = os.environ.get("GITHUB_STEP_SUMMARY")
    if target:
        with Path(target).open("a", encoding="utf-8") as handle:
            handle.write(job_summary(record))
