"""Reports written from the run record alone: the HTML summary block, summary.json and the terminal lines."""

from __future__ import annotations

import html
import json
import time
from pathlib import Path

from deploycheck.record import life
from deploycheck.record.record import RunRecord, WriteFenceRecord

OUTCOME_COLOURS = {"passed": "#2e7d32", "failed": "#c62828", "skipped": "#9e9e9e", "refused": "#ef6c00"}


def clock(epoch: float) -> str:
    """A moment of the run, as the terminal and the reports show it: UTC time to the millisecond."""
    return time.strftime("%H:%M:%S", time.gmtime(epoch)) + f".{int(epoch * 1000) % 1000:03d} UTC"


# What to run on the database when the fence could not be lifted and no deploy will come soon.
LIFT_BY_HAND = (
    "ALTER SYSTEM RESET default_transaction_read_only; ALTER SYSTEM RESET deploycheck.write_fence; "
    "SELECT pg_reload_conf();"
)


def write_fence_line(fence: WriteFenceRecord) -> str:
    """The write fence in one line: the window in which writes were refused, or that it is still on."""
    if fence.left_on:
        return (
            f"WRITE FENCE STILL ON: the database refuses every write since {clock(fence.started_at)}"
            if fence.put_up
            else "WRITE FENCE STILL ON: the database refuses every write"
        ) + f" ({fence.error}); the next deploy lifts it, or run on the database: {LIFT_BY_HAND}"
    if not fence.put_up:
        return f"write fence: {fence.reason}"
    return (
        f"write fence: writes refused from {clock(fence.started_at)} to {clock(fence.ended_at)} "
        f"({fence.seconds:.1f} s; {fence.reason})"
    )


def environment_rows(record: RunRecord) -> dict[str, str]:
    """The rows of the report's environment table."""
    database = (
        {"Citus image": record.citus_image_origin or record.citus_image, "citus_version()": record.database_version}
        if record.is_citus
        else {"Database": record.database_version}
    )
    return {
        "Environment": record.environment,
        "Mode": record.mode,
        "Release": record.release,
        **database,
        "Compose project": record.compose_project,
    }


def stage_table_html(record: RunRecord) -> str:
    """Stages with outcome, duration and reason."""
    if not record.stages:
        return "<p>No deployment stage ran.</p>"
    rows = "".join(
        f'<tr><td>{html.escape(s.name)}</td><td style="color:{OUTCOME_COLOURS.get(s.outcome, "#616161")}">'
        f"{s.outcome}</td><td>{s.seconds:.2f} s</td><td>{html.escape(s.reason)}</td></tr>"
        for s in record.stages
    )
    return (
        '<table id="deploycheck-stages"><thead><tr><th>Stage</th><th>Outcome</th><th>Duration</th>'
        f"<th>Reason</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def timeline_svg(record: RunRecord) -> str:
    """The run as one inline SVG on a shared time axis: a row per stage, a row per check module, the rollback."""
    rows: list[tuple[str, str, list[tuple[float, float, str, str]]]] = []  # (css class, label, bars)
    for stage in record.stages:
        rows.append(("stage", stage.name, [(stage.started_at, stage.seconds, stage.outcome, stage.reason)]))
    modules: dict[str, list[tuple[float, float, str, str]]] = {}
    for check in record.checks:
        module = check.nodeid.split("::", 1)[0].rsplit("/", 1)[-1].removesuffix(".py")
        modules.setdefault(module, []).append((check.started_at, check.seconds, check.outcome, check.nodeid))
    rows += [("check", module, bars) for module, bars in modules.items()]
    if record.rollback.performed:
        rollback = record.rollback
        rows.append(("rollback", "rollback", [(rollback.started_at, rollback.seconds, rollback.outcome, "rollback")]))
    fence = record.write_fence
    if fence.put_up:
        end = fence.ended_at or record.finished_at or time.time()
        outcome = "failed" if fence.left_on else "refused"
        rows.append(("fence", "writes refused", [(fence.started_at, end - fence.started_at, outcome, "write fence")]))
    if not rows:
        return ""
    origin = min(bar[0] for _, _, bars in rows for bar in bars)
    end = max(bar[0] + bar[1] for _, _, bars in rows for bar in bars)
    span = max(end - origin, 0.001)
    label_width, plot_width, row_height = 120, 640, 18
    height = row_height * len(rows) + 24
    parts = [
        f'<svg id="deploycheck-timeline" xmlns="http://www.w3.org/2000/svg" width="{label_width + plot_width + 10}" '
        f'height="{height}" role="img" aria-label="timeline of stages, checks and rollback" '
        'style="font:11px sans-serif">'
    ]
    for index, (kind, label, bars) in enumerate(rows):
        y = index * row_height
        parts.append(f'<g class="{kind}"><text x="0" y="{y + 12}">{html.escape(label)}</text>')
        for started, seconds, outcome, title in bars:
            x = label_width + (started - origin) / span * plot_width
            width = max(seconds / span * plot_width, 1.5)
            colour = OUTCOME_COLOURS.get(outcome, "#616161")
            parts.append(
                f'<rect x="{x:.1f}" y="{y + 3}" width="{width:.1f}" height="{row_height - 6}" fill="{colour}">'
                f"<title>{html.escape(title)}: {outcome}, {seconds:.2f} s</title></rect>"
            )
        parts.append("</g>")
    axis_y = len(rows) * row_height + 4
    parts.append(
        f'<line x1="{label_width}" y1="{axis_y}" x2="{label_width + plot_width}" y2="{axis_y}" stroke="#999"/>'
    )
    for tick in range(5):
        x = label_width + tick / 4 * plot_width
        parts.append(f'<text x="{x:.1f}" y="{axis_y + 14}" text-anchor="middle">{span * tick / 4:.1f} s</text>')
    parts.append("</svg>")
    return "".join(parts)


def rollback_html(record: RunRecord) -> str:
    rollback = record.rollback
    actions = "".join(f"<li>{html.escape(action)}</li>" for action in rollback.actions)
    restored = html.escape(rollback.restored_release or "none")
    if rollback.database_restored:
        restored += f", database restored in {rollback.database_restore_seconds:.1f} s"
    return (
        f'<div id="deploycheck-rollback"><p><strong>Rollback:</strong> {html.escape(rollback.outcome)} '
        f"(performed: {'yes' if rollback.performed else 'no'}, {rollback.seconds:.2f} s, restored release: "
        f"{restored})</p>" + (f"<ul>{actions}</ul>" if actions else "") + "</div>"
    )


def write_fence_html(record: RunRecord) -> str:
    """The window in which the database refused writes; a fence still on, in red."""
    fence = record.write_fence
    if fence.left_on:
        return (
            '<div id="deploycheck-write-fence" style="color:#c62828;border:2px solid #c62828;padding:4px">'
            f"<p><strong>{html.escape(write_fence_line(fence))}</strong></p></div>"
        )
    earlier = f"<p>{html.escape(fence.earlier_lifted)}</p>" if fence.earlier_lifted else ""
    return f'<div id="deploycheck-write-fence"><p><strong>Write fence:</strong> {html.escape(write_fence_line(fence).removeprefix("write fence: "))}</p>{earlier}</div>'


def summary_html(record: RunRecord) -> list[str]:
    """The block pytest-html puts above the results table."""
    outcome = record.outcome
    failed_stage = record.failed_stage
    reason = f": stage {failed_stage.name} failed: {failed_stage.reason}" if failed_stage else ""
    return [
        f'<h2>Deployment <span id="deploycheck-outcome" style="color:{OUTCOME_COLOURS[outcome]}">{outcome}</span>'
        f"{html.escape(reason)}</h2>",
        "<h3>Timeline</h3>",
        timeline_svg(record),
        "<h3>Stages</h3>",
        stage_table_html(record),
        *life.html_blocks(record.life),
        rollback_html(record),
        write_fence_html(record),
    ]


def write_summary_json(record: RunRecord, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record.summary(), indent=2) + "\n")


def terminal_lines(record: RunRecord) -> list[str]:
    lines = [
        f"environment {record.environment} ({record.mode}), release {record.release}, outcome {record.outcome.upper()}",
        record.database_line,
    ]
    for stage in record.stages:
        lines.append(f"  stage {stage.name:<14} {stage.outcome:<8} {stage.seconds:6.2f} s  {stage.reason}".rstrip())
    if record.backup_folder:
        lines.append(f"backup: {record.backup_folder} ({record.backup_bytes / 2**20:.1f} MiB)")
    counts = record.check_counts
    lines.append(f"checks: {counts.passed} passed, {counts.failed} failed, {counts.skipped} skipped")
    for check in record.checks:
        if check.outcome == "failed":
            lines.append(f"  FAILED {check.nodeid}: {check.reason}")
    lines.extend(life.terminal_lines(record.life))
    rollback = record.rollback
    lines.append(f"rollback: {rollback.outcome} ({rollback.seconds:.1f} s)")
    lines.extend(f"  {action}" for action in rollback.actions)
    lines.append(write_fence_line(record.write_fence))
    if record.write_fence.earlier_lifted:
        lines.append(f"  {record.write_fence.earlier_lifted}")
    return lines
