"""A history of runs: each run's reports kept under reports/history/, the last N, with an index page."""

from __future__ import annotations

import html
import json
import re
import shutil
import time
from pathlib import Path
from typing import Any

from deploycheck.record.reporting import OUTCOME_COLOURS

UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def run_folder_name(summary: dict[str, Any]) -> str:
    started = float(summary["started_at"])
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(started)) + f"{int(started % 1 * 1000):03d}"
    return UNSAFE.sub("_", f"{stamp}-{summary['environment']}-{summary['release']}")


def keep_run(history: Path, summary: dict[str, Any], files: list[Path], keep: int) -> Path:
    """Copy this run's report files into its own folder, drop the oldest runs beyond ``keep``, rewrite the index."""
    folder = history / run_folder_name(summary)
    folder.mkdir(parents=True, exist_ok=True)
    for path in files:
        if path.is_file():
            shutil.copy2(path, folder / path.name)
    (folder / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    runs = sorted((p for p in history.iterdir() if (p / "summary.json").is_file()), key=lambda p: p.name)
    for old in runs[: max(len(runs) - keep, 0)]:
        shutil.rmtree(old)
    write_index(history)
    return folder


def _runs(history: Path) -> list[tuple[Path, dict[str, Any]]]:
    runs = []
    for folder in sorted(history.iterdir(), key=lambda p: p.name, reverse=True):
        try:
            runs.append((folder, json.loads((folder / "summary.json").read_text())))
        except (OSError, ValueError):
            continue
    return runs


def durations_svg(runs: list[tuple[Path, dict[str, Any]]]) -> str:
    """A small bar chart of run durations, oldest on the left, coloured by outcome."""
    if not runs:
        return ""
    ordered = list(reversed(runs))
    longest = max(float(summary.get("seconds", 0)) for _, summary in ordered) or 1.0
    bar, gap, height = 14, 4, 80
    parts = [
        f'<svg id="deploycheck-durations" xmlns="http://www.w3.org/2000/svg" width="{len(ordered) * (bar + gap) + 60}"'
        f' height="{height + 16}" role="img" aria-label="run durations" style="font:10px sans-serif">'
    ]
    for index, (folder, summary) in enumerate(ordered):
        seconds = float(summary.get("seconds", 0))
        h = max(seconds / longest * height, 1)
        colour = OUTCOME_COLOURS.get(str(summary.get("outcome")), "#616161")
        parts.append(
            f'<rect x="{index * (bar + gap)}" y="{height - h:.1f}" width="{bar}" height="{h:.1f}" fill="{colour}">'
            f"<title>{html.escape(folder.name)}: {seconds:.1f} s, {html.escape(str(summary.get('outcome')))}"
            "</title></rect>"
        )
    parts.append(f'<text x="{len(ordered) * (bar + gap) + 4}" y="10">{longest:.0f} s</text></svg>')
    return "".join(parts)


def write_index(history: Path) -> None:
    runs = _runs(history)
    rows = []
    for folder, summary in runs:
        outcome = str(summary.get("outcome"))
        colour = OUTCOME_COLOURS.get(outcome, "#616161")
        checks = summary.get("checks", {})
        rows.append(
            f'<tr><td><a href="{html.escape(folder.name)}/report.html">{html.escape(folder.name)}</a></td>'
            f"<td>{html.escape(str(summary.get('environment')))}</td><td>{html.escape(str(summary.get('release')))}</td>"
            f'<td style="color:{colour}">{html.escape(outcome)}</td><td>{float(summary.get("seconds", 0)):.1f} s</td>'
            f"<td>{checks.get('passed', 0)} / {checks.get('failed', 0)} / {checks.get('skipped', 0)}</td>"
            f"<td>{html.escape(str(summary.get('rollback', {}).get('outcome', '')))}</td></tr>"
        )
    page = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>deploycheck runs</title>'
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ddd;padding:4px 8px;text-align:left}</style></head><body>"
        f"<h1>deploycheck runs</h1><p>The last {len(runs)} runs, newest first.</p>{durations_svg(runs)}"
        '<table id="deploycheck-runs"><thead><tr><th>Run</th><th>Environment</th><th>Release</th><th>Outcome</th>'
        "<th>Duration</th><th>Checks passed / failed / skipped</th><th>Rollback</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table></body></html>\n"
    )
    (history / "index.html").write_text(page)
