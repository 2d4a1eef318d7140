"""Secrets in every output channel of a run (the real plugin on the fake engine, in a pytest process of its own):
checks that fail with the secrets in a frame's arguments, a chained exception, their locals, their output and
their logs; the real ``database`` fixture when the coordinator cannot be reached (psycopg's ``connect``), and a
real HTTP session with the API token when the API cannot be reached (requests' and urllib3's frames). Not one
occurrence anywhere: the terminal, JUnit XML, report.html, summary.json, the kept history, the job summary."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import psycopg  # noqa: F401  # imported once for the in-process runs: psycopg_binary keeps its first classes
import pytest

from deploycheck.record.masking import mask_fields
from deploycheck.record.record import CheckRecord, RunRecord, StageRecord
from deploycheck.request.secrets import MASK, Secret, libpq_passfile, mask_data, mask_text
from tests.unit.conftest import ledger_with_release_a

PASSWORD = "unit-MARKER-pa55word-3e9d1f"
TOKEN = "unit-MARKER-t0ken-8c2a47"

LEAKING_CHECKS = """
import logging
import socket
import sys

import requests


def closed_port():
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return port


def give(password, token):  # a frame whose arguments are the secrets, as psycopg's connect(**kwargs) had
    raise ConnectionError("the coordinator cannot be reached")


def test_the_coordinator_cannot_be_reached(database):
    pass  # the database fixture's connection fails: nothing listens on the coordinator's port


def test_a_frame_argument_and_a_chained_cause(stack):
    password = stack.environment.db_password.reveal()
    try:
        give(password, stack.environment.secret("api_token").reveal())
    except ConnectionError as error:
        raise RuntimeError(f"checking failed for {password!r}") from error


def test_output_and_logs(stack):
    token = stack.environment.secret("api_token").reveal()
    print(f"stdout: token {token}")
    sys.stderr.write(f"stderr: token {token}\\n")
    logging.getLogger("team.check").warning("logged: token %s", token)
    try:
        raise ValueError(token)
    except ValueError:
        logging.getLogger("team.check").exception("with its traceback")
    assert token == "", f"assertion message: {token}"


def test_the_api_cannot_be_reached(stack):
    with requests.Session() as http:
        http.headers["Authorization"] = f"Bearer {stack.environment.secret('api_token').reveal()}"
        http.get(f"http://127.0.0.1:{closed_port()}/stores", headers={"X-Key": stack.environment.secret("api_token").reveal()}, timeout=5)
"""


def occurrences(text: str) -> int:
    return text.count(PASSWORD) + text.count(TOKEN)


def test_no_secret_reaches_any_output_channel(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("UNIT_DB_PASSWORD", PASSWORD)
    monkeypatch.setenv("UNIT_API_TOKEN", TOKEN)
    monkeypatch.setenv("FAKE_SCENARIO", "stack-running")
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    step_summary = tmp_path / "step-summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(step_summary))
    ledger_with_release_a(suite)
    suite.makepyfile(test_leaks=LEAKING_CHECKS)
    suite.makeini("[pytest]\naddopts = test_stages.py test_leaks.py\n")
    with socket.socket() as probe:  # the fake coordinator's port, where nothing may listen
        assert probe.connect_ex(("127.0.0.1", 47100)) != 0
    result = suite.runpytest_subprocess(
        "--deploy=local",
        "--verify-only",
        "-p",
        "no:cacheprovider",
        # Everything a run can be asked to show: long tracebacks with locals, live logs, every outcome, and JUnit
        # XML with the captured output and logs.
        "--tb=long",
        "--showlocals",
        "-rA",
        "-o",
        "log_cli=true",
        "--log-cli-level=DEBUG",
        "-o",
        "junit_logging=all",
        timeout=300,
    )
    reports = suite.path / "reports"
    history = sorted((reports / "history").rglob("*.*"))
    channels = {
        "stdout": "\n".join(result.outlines),
        "stderr": "\n".join(result.errlines),
        "junit.xml": (reports / "junit.xml").read_text(),
        "report.html": (reports / "report.html").read_text(),
        "summary.json": (reports / "summary.json").read_text(),
        "history": "".join(path.read_text() for path in history),
        "job summary": step_summary.read_text(),
    }
    counts = {channel: occurrences(text) for channel, text in channels.items()}
    print(f"marker-secret occurrences per channel: {counts}")
    assert result.ret == 1, "\n".join(result.outlines[-40:])
    assert counts == dict.fromkeys(channels, 0), counts
    assert len(history) >= 4, "the run was kept: report.html, junit.xml, summary.json and the index"
    # The secrets did reach each channel, masked: the checks failed as meant, with their tracebacks and logs.
    out, junit = channels["stdout"], channels["junit.xml"]
    assert "connection failed" in out and "ConnectionError" in out and "logged: token" in out, out[-3000:]
    assert f"password = '{MASK}'" in out, "the frame's argument, shown by the long traceback"
    assert f"Bearer {MASK}" in out and f"Bearer {MASK}" in junit, "urllib3's frame shows the request's headers"
    assert f"stdout: token {MASK}" in junit and f"logged: token {MASK}" in junit
    assert MASK in channels["report.html"] and MASK in channels["summary.json"]
    assert "passfile=" in out or "passfile" in junit, "psycopg's connect was given a password file, not the password"


def test_a_collection_error_is_masked(suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """A check module that cannot be imported, its error holding a secret: its collection report is masked."""
    monkeypatch.setenv("UNIT_DB_PASSWORD", PASSWORD)
    monkeypatch.setenv("UNIT_API_TOKEN", TOKEN)
    monkeypatch.setenv("FAKE_SCENARIO", "stack-running")
    ledger_with_release_a(suite)
    suite.makepyfile(test_leaks='import os\nraise RuntimeError("cannot import with " + os.environ["UNIT_API_TOKEN"])\n')
    suite.makeini("[pytest]\naddopts = test_stages.py test_leaks.py\n")
    result = suite.runpytest_subprocess("--deploy=local", "--verify-only", "-p", "no:cacheprovider", timeout=120)
    assert result.ret == 2, "\n".join(result.outlines[-30:])  # pytest's own exit code for a collection error
    out = "\n".join(result.outlines + result.errlines)
    junit = (suite.path / "reports" / "junit.xml").read_text()
    assert f"cannot import with {MASK}" in out and f"cannot import with {MASK}" in junit, out[-3000:]
    assert occurrences(out) == 0 and occurrences(junit) == 0


def test_the_log_records_are_masked_as_they_are_made(suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """In the process that runs: a team's own handler sees the record masked too, and the factory is restored."""
    monkeypatch.setenv("UNIT_DB_PASSWORD", PASSWORD)
    monkeypatch.setenv("UNIT_API_TOKEN", TOKEN)
    monkeypatch.setenv("FAKE_SCENARIO", "stack-running")
    ledger_with_release_a(suite)
    suite.makepyfile(
        test_leaks="""
import logging

def test_a_handler_of_its_own(stack):
    seen = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(logging.Formatter().format(record))
    logger = logging.getLogger("team.own")
    logger.addHandler(handler)
    logger.error("the token is %s", stack.environment.secret("api_token").reveal())
    assert seen == ["the token is ********"]
"""
    )
    suite.makeini("[pytest]\naddopts = test_stages.py test_leaks.py\n")
    before = logging.getLogRecordFactory()
    result = suite.runpytest("--deploy=local", "--verify-only", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, deselected=10)
    assert logging.getLogRecordFactory() is before


def test_the_masks_cover_every_form_a_secret_is_written_in() -> None:
    secret = Secret('p"a<ss>&\\w:rd/ö', "$X")
    forms = [
        'p"a<ss>&\\w:rd/ö',
        'p\\"a<ss>&\\\\w:rd/\\u00f6',
        "p&quot;a&lt;ss&gt;&amp;\\w:rd/ö",
        "p%22a%3Css%3E%26%5Cw%3Ard/%C3%B6",
    ]
    for form in forms:
        assert mask_text(f"[{form}]", [secret]) == f"[{MASK}]", form
    inner, outer = Secret("abc", "$A"), Secret("xxabcxx", "$B")
    assert mask_text("xxabcxx abc", [inner, outer]) == f"{MASK} {MASK}", "the longer one first, none of it left"
    assert mask_data({"k abc": ["abc", ("abc", 1)], "n": None}, [inner]) == {f"k {MASK}": [MASK, (MASK, 1)], "n": None}


def test_the_run_record_is_masked_in_place_to_its_nested_records() -> None:
    secret = Secret("s3cr3t-value", "$X")
    record = RunRecord(environment="local", mode="deploy")
    record.stages.append(StageRecord("database", "failed", 1.0, 0.0, "password s3cr3t-value refused", "s3cr3t-value"))
    record.checks.append(CheckRecord("test_x", "failed", 1.0, 0.0, "s3cr3t-value"))
    record.rollback.actions.append("restored with s3cr3t-value")
    record.life.problems.append("s3cr3t-value")
    mask_fields(record, [secret])
    assert "s3cr3t-value" not in repr(record) and "s3cr3t-value" not in str(record.summary())
    assert record.stages[0].reason == f"password {MASK} refused"


def test_the_password_file_is_private_escaped_and_removed() -> None:
    with libpq_passfile(Secret("a:b\\c", "$X")) as path:
        assert Path(path).stat().st_mode & 0o777 == 0o600
        assert Path(path).read_text() == "*:*:*:*:a\\:b\\\\c\n"
    assert not Path(path).exists()


def test_a_commands_data_is_read_as_printed_and_its_text_masked(tmp_path: Path) -> None:
    """A password that is part of a path (``postgres`` of ``/var/lib/postgresql``): a Compose model read from the
    masked text named a service ``ngin********`` for a password ``x``, and a release snapshot would keep the
    mask in its paths."""
    import json

    from deploycheck.engine.commands import Command, Runner

    printed = {"services": {"coordinator": {"volumes": ["data:/var/lib/postgresql/data"]}}}
    config = tmp_path / "config.json"
    config.write_text(json.dumps(printed))
    runner = Runner(secrets=[Secret("postgres", "$DB_PASSWORD")])
    result = runner.run(Command(("cat", str(config)), timeout=30))
    assert result.data() == printed
    assert "postgres" not in result.stdout and "postgres" not in repr(result)
    assert f"/var/lib/{MASK}ql/data" in result.stdout
