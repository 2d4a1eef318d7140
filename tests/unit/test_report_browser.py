"""The HTML report in a real headless Chromium: it loads without script errors, pytest-html's JavaScript
renders a row per test, and the deploycheck timeline and stage table are there."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
]


def test_report_renders_in_chromium(suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is missing: ./deploycheck tests installs it (scripts/setup.sh --for-tests)"
    monkeypatch.setenv("FAIL_CHECK", "1")
    monkeypatch.setenv("FAKE_SCENARIO", "stack-running")
    report = suite.path / "reports" / "report.html"
    result = suite.runpytest(
        "--deploy=local", "--verify-only", "-p", "no:cacheprovider", f"--html={report}", "--self-contained-html"
    )
    assert result.ret == 1
    page = subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", report.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert page.returncode == 0, page.stderr[-2000:]
    assert "Uncaught" not in page.stderr, page.stderr[-2000:]
    dom, raw = page.stdout, report.read_text()
    rendered_rows = dom.count('class="results-table-row') - raw.count('class="results-table-row')
    assert rendered_rows == 4, f"pytest-html rendered {rendered_rows} result rows, expected one per test"
    assert 'id="deploycheck-timeline"' in dom and dom.count("<rect") >= 4
    assert 'id="deploycheck-stages"' in dom and "test_check_that_fails" in dom
