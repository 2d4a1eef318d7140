"""Reports written from the run record alone: the HTML summary block, summary.json and the terminal lines."""

from __future__ import annotations

import html
import json
from pathlib import Path

from plugins.record import RunRecord

OUTCOME_COLOURS = {"passed": "#2e7d32", "failed": "#c62828", "skipped": "#9e9e9e"}


def environment_rows(record: RunRecord) -> dict[str, str]:
    """The rows of the report's environment table."""
    citus = record.citus_image + (" (offline stand-in: NOT Citus)" if record.citus_is_standin else "")
    return {
        "Environment": record.environment,
        "Mode": record.mode,
        "Release": record.release,
        "Citus image": citus,
        "citus_version()": record.citus_version,
        "Compose project": record.compose_project,
    }


def stage_timeline_html(record: RunRecord) -> str:
    """Stages as rows with an inline SVG bar each, placed on one time axis (no external assets)."""
    if not record.stages:
        return "<p>No deployment stage ran.</p>"
    origin = min(stage.started_at for stage in record.stages)
    end = max(stage.started_at + stage.seconds for stage in record.stages)
    span = max(end - origin, 0.001)
    width = 300
    rows = []
    for stage in record.stages:
        x = (stage.started_at - origin) / span * width
        w = max(stage.seconds / span * width, 1.5)
        colour = OUTCOME_COLOURS.get(stage.outcome, "#616161")
        bar = (
            f'<svg width="{width}" height="12" role="img" aria-label="{html.escape(stage.name)} {stage.seconds:.1f} s">'
            f'<rect x="{x:.1f}" y="1" width="{w:.1f}" height="10" fill="{colour}"/></svg>'
        )
        rows.append(
            f'<tr><td>{html.escape(stage.name)}</td><td style="color:{colour}">{stage.outcome}</td>'
            f"<td>{stage.seconds:.2f} s</td><td>{bar}</td><td>{html.escape(stage.reason)}</td></tr>"
        )
    return (
        '<table id="deploycheck-stages"><thead><tr><th>Stage</th><th>Outcome</th><th>Duration</th>'
        "<th>Timeline</th><th>Reason</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
    )


def rollback_html(record: RunRecord) -> str:
    rollback = record.rollback
    actions = "".join(f"<li>{html.escape(action)}</li>" for action in rollback.actions)
    restored = html.escape(rollback.restored_release or "none")
    return (
        f'<div id="deploycheck-rollback"><p><strong>Rollback:</strong> {html.escape(rollback.outcome)} '
        f"(performed: {'yes' if rollback.performed else 'no'}, {rollback.seconds:.2f} s, restored release: "
        f"{restored})</p>" + (f"<ul>{actions}</ul>" if actions else "") + "</div>"
    )


def summary_html(record: RunRecord) -> list[str]:
    """The block pytest-html puts above the results table."""
    banner = ""
    if record.citus_is_standin:
        banner = (
            '<p id="deploycheck-standin" style="color:#c62828"><strong>This deployment ran on the offline Citus '
            "stand-in (PostgreSQL 15 with an emulation of Citus's SQL surface): it is NOT Citus.</strong></p>"
        )
    outcome = record.outcome
    failed_stage = record.failed_stage
    reason = f": stage {failed_stage.name} failed: {failed_stage.reason}" if failed_stage else ""
    return [
        banner,
        f'<h2>Deployment <span id="deploycheck-outcome" style="color:{OUTCOME_COLOURS[outcome]}">{outcome}</span>'
        f"{html.escape(reason)}</h2>",
        "<h3>Stages</h3>",
        stage_timeline_html(record),
        rollback_html(record),
    ]


def write_summary_json(record: RunRecord, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record.summary(), indent=2) + "\n")


def terminal_lines(record: RunRecord) -> list[str]:
    lines = [
        f"environment {record.environment} ({record.mode}), release {record.release}, outcome {record.outcome.upper()}",
        f"Citus image: {environment_rows(record)['Citus image']}; citus_version(): {record.citus_version}",
    ]
    for stage in record.stages:
        lines.append(f"  stage {stage.name:<11} {stage.outcome:<8} {stage.seconds:6.2f} s  {stage.reason}".rstrip())
    counts = record.check_counts
    lines.append(f"checks: {counts.passed} passed, {counts.failed} failed, {counts.skipped} skipped")
    for check in record.checks:
        if check.outcome == "failed":
            lines.append(f"  FAILED {check.nodeid}: {check.reason}")
    rollback = record.rollback
    lines.append(f"rollback: {rollback.outcome} ({rollback.seconds:.1f} s)")
    lines.extend(f"  {action}" for action in rollback.actions)
    return lines
