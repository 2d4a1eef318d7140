"""The deploycheck pytest plugin: options and environments, the run record, rollback and reports.

Flow: options + environment file -> one validated Environment (pytest_configure) -> stage fixtures
(fixtures/stages.py) and checks (checks/) fill the run record -> at session end: the rollback decision and
action, then the reports, written from the record alone.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from collections.abc import Generator
from pathlib import Path
from types import FrameType

import pytest

from fixtures.stack import Stack
from plugins import github, history, lock, redeploy, reporting, rollback
from plugins.commands import Compose
from plugins.containers import client_for, evidence
from plugins.environment import DEFAULT_FILE, ConfigError, Environment, load
from plugins.ledger import Ledger
from plugins.record import RUN_RECORD, CheckRecord, Mode, RunRecord
from plugins.stages import say

ENVIRONMENT = pytest.StashKey[Environment]()
COMPOSE = pytest.StashKey[Compose]()
RELEASE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
EXIT_ROLLBACK_FAILED = 6  # documented in the README: the deploy failed and so did its rollback


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("deploycheck", "deploycheck: deploy and verify a stack")
    group.addoption(
        "--deploy", metavar="ENV", help="the environment to deploy and verify (default: ini deploycheck_environment)"
    )
    group.addoption("--environments", metavar="FILE", help="the environment file (default: environments.toml)")
    group.addoption(
        "--verify-only",
        action="store_true",
        help="check the stack that is already running: start nothing, change nothing, never roll back",
    )
    group.addoption(
        "--rollback-to",
        metavar="ID",
        help="bring back release ID from the ledger for the whole stack, then verify it with the smoke checks",
    )
    group.addoption(
        "--keep-failed", action="store_true", help="keep a failed stack running for debugging (no rollback)"
    )
    group.addoption(
        "--release", metavar="ID", help="the release id (default: from git, e.g. 1a2b3c4d5e6f or ...-dirty)"
    )
    group.addoption(
        "--summary-json", metavar="PATH", help="where to write the JSON summary (default: ini deploycheck_summary)"
    )
    parser.addini("deploycheck_environment", "the environment used when --deploy is not given", default="local")
    parser.addini("deploycheck_summary", "the JSON summary path", default="reports/summary.json")
    parser.addini("deploycheck_history_keep", "how many runs reports/history keeps", type="int", default=20)


def _release(config: pytest.Config) -> str:
    given = config.getoption("release")
    if given:
        if not RELEASE_PATTERN.match(given):
            raise ConfigError(
                f"--release={given!r} is not a valid release id: use letters, digits, '.', '_' or '-' (at most 64)."
            )
        return str(given)
    root = config.rootpath
    try:
        sha = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "dev"
    return f"{sha}-dirty" if dirty else sha


def _sigterm_as_interrupt(signum: int, frame: FrameType | None) -> None:
    # pytest handles SIGINT only; SIGTERM (CI cancel, docker stop) must also lead to the rollback.
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "smoke: a fast check, selected with -m smoke for post-deploy smoke runs")
    config.addinivalue_line("markers", "stage: a deployment stage reported as a test")
    config.addinivalue_line(
        "markers", "evidence(*services): whose state and logs a failure of these checks carries ('workers': all)"
    )
    if config.option.help:
        return
    name = config.getoption("deploy") or config.getini("deploycheck_environment")
    path = Path(config.getoption("environments") or config.rootpath / DEFAULT_FILE)
    try:
        environment = load(path, name, config.rootpath)
        release = _release(config)
    except ConfigError as error:
        raise pytest.UsageError(str(error)) from None
    verify_only = bool(config.getoption("verify_only"))
    rollback_to = config.getoption("rollback_to")
    mode: Mode = "verify-only" if verify_only else "deploy"
    if rollback_to:
        if verify_only:
            raise pytest.UsageError("--rollback-to and --verify-only exclude each other: use one of them.")
        known = [r.id for r in Ledger(environment.ledger_file).releases() if r.outcome == "passed"]
        if rollback_to not in known:
            choices = ", ".join(dict.fromkeys(reversed(known))) or "none yet"
            raise pytest.UsageError(
                f"release '{rollback_to}' never deployed green in environment '{environment.name}': "
                f"choose one of {choices} (from {environment.ledger_file})."
            )
        mode, release = "rollback-to", str(rollback_to)
    redeploy_reason: str | None = ""
    if mode == "deploy" and not config.option.collectonly:
        connect = lambda: client_for(environment.docker_host)  # noqa: E731  # asked only if the ledger says so
        redeploy_reason = redeploy.why_redeploy(environment, release, connect)
        if redeploy_reason is None:
            mode = "already-current"
    config.stash[ENVIRONMENT] = environment
    config.stash[RUN_RECORD] = RunRecord(
        environment=environment.name,
        mode=mode,
        release=release,
        citus_image=environment.citus_image,
        compose_project=environment.compose_project,
        redeploy_reason=redeploy_reason or "",
    )
    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    _update_metadata(config)
    config.pluginmanager.register(HistoryKeeper(), "deploycheck-history")


def _update_metadata(config: pytest.Config) -> None:
    try:
        from pytest_metadata.plugin import metadata_key
    except ImportError:  # pytest-html not installed: no environment table to fill
        return
    if metadata_key in config.stash:
        config.stash[metadata_key].update(reporting.environment_rows(config.stash[RUN_RECORD]))


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    # Stages run before any check, whatever the order of the files.
    items.sort(key=lambda item: 0 if item.get_closest_marker("stage") else 1)
    mode = config.stash[RUN_RECORD].mode if RUN_RECORD in config.stash else "deploy"
    if mode != "deploy":
        # Verify-only starts and changes nothing: no deploy stage but preflight. A manual rollback is verified
        # like an automatic one, and a release that is already current like a post-deploy smoke run: with the
        # smoke checks.
        def not_for_this_mode(item: pytest.Item) -> bool:
            if item.get_closest_marker("stage") is not None:
                return "preflight" not in item.name
            return mode in ("rollback-to", "already-current") and item.get_closest_marker("smoke") is None

        deselected = [item for item in items if not_for_this_mode(item)]
        if deselected:
            config.hook.pytest_deselected(items=deselected)
            items[:] = [item for item in items if not not_for_this_mode(item)]


def _reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple):  # a skip: (file, line, message)
        return str(longrepr[2]).removeprefix("Skipped: ")
    crash = getattr(longrepr, "reprcrash", None)
    text = crash.message if crash is not None else str(longrepr or "")
    return text.strip().splitlines()[0][:500] if text.strip() else ""


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    config = _config_of(report)
    if config is None or RUN_RECORD not in config.stash or "stage" in report.keywords:
        return
    record = config.stash[RUN_RECORD]
    if report.when == "call" or report.outcome != "passed":
        if report.when == "teardown" and report.outcome == "passed":
            return
        outcome = report.outcome
        existing = next((c for c in record.checks if c.nodeid == report.nodeid), None)
        if existing is not None:
            if outcome == "failed":
                existing.outcome, existing.reason = "failed", _reason(report)
            return
        started = report.start
        record.checks.append(CheckRecord(report.nodeid, outcome, report.duration, started, _reason(report)))


_CONFIG: list[pytest.Config] = []


def pytest_sessionstart(session: pytest.Session) -> None:
    _CONFIG[:] = [session.config]


def _config_of(report: pytest.TestReport) -> pytest.Config | None:
    return _CONFIG[0] if _CONFIG else None


def pytest_keyboard_interrupt(excinfo: pytest.ExceptionInfo[BaseException]) -> None:
    if _CONFIG and RUN_RECORD in _CONFIG[0].stash:
        _CONFIG[0].stash[RUN_RECORD].interrupted = True


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Before pytest-html and JUnit write their files: roll back if needed, then write the summary."""
    config = session.config
    if RUN_RECORD not in config.stash or config.option.collectonly:
        return
    record = config.stash[RUN_RECORD]
    if exitstatus == pytest.ExitCode.INTERRUPTED:
        record.interrupted = True
    environment = config.stash[ENVIRONMENT]
    decision = rollback.decide(record, keep_failed=bool(config.getoption("keep_failed")))
    if decision.action != "none" or record.failed:
        say(config, f"[deploycheck] rollback: {decision.why}")
    # A second Ctrl+C or SIGTERM must not cut the rollback short.
    handlers = {signum: signal.signal(signum, signal.SIG_IGN) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        rollback.perform(
            decision, record, environment, config.stash.get(COMPOSE, None), lambda: client_for(environment.docker_host)
        )
        if record.mode == "rollback-to" and record.outcome == "passed":
            Ledger(environment.ledger_file).mark_current(record.release)
        if record.in_ledger:
            passed = record.outcome == "passed" and record.mode == "deploy"
            outcome = "passed" if passed else "interrupted" if record.interrupted else "failed"
            Ledger(environment.ledger_file).finish(record.release, outcome, record.migrations_applied, passed)
    finally:
        if record.holds_lock:
            lock.release(environment.lock_file)
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    if record.rollback.performed:
        say(config, f"[deploycheck] rollback: {record.rollback.outcome} in {record.rollback.seconds:.1f} s")
        for action in record.rollback.actions:
            say(config, f"[deploycheck]   {action}")
    record.finished_at = time.time()
    _update_metadata(config)
    reporting.write_summary_json(record, _summary_path(config))
    if github.is_github_actions():
        github.write_job_summary(record)
    if record.rollback.outcome == "failed":
        session.exitstatus = EXIT_ROLLBACK_FAILED
    elif record.failed and session.exitstatus == pytest.ExitCode.OK:
        # A failed stage skips every check; the run must still end red.
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _summary_path(config: pytest.Config) -> Path:
    return Path(config.getoption("summary_json") or config.rootpath / config.getini("deploycheck_summary"))


class HistoryKeeper:
    """After every report is written (pytest-html and JUnit write theirs at session end too), keep a copy."""

    @pytest.hookimpl(wrapper=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> Generator[None, None, None]:
        yield
        config = session.config
        if RUN_RECORD not in config.stash or config.option.collectonly:
            return
        summary = _summary_path(config)
        files = [Path(p) for p in (config.option.htmlpath, config.option.xmlpath) if p]
        folder = history.keep_run(
            summary.parent / "history",
            config.stash[RUN_RECORD].summary(),
            [*files, summary],
            int(config.getini("deploycheck_history_keep")),
        )
        say(config, f"[deploycheck] reports kept in {folder}")


def pytest_html_results_summary(
    prefix: list[str], summary: list[str], postfix: list[str], session: pytest.Session
) -> None:
    if RUN_RECORD in session.config.stash:
        prefix.extend(reporting.summary_html(session.config.stash[RUN_RECORD]))


def pytest_html_report_title(report: object) -> None:
    config = _CONFIG[0] if _CONFIG else None
    if config is not None and RUN_RECORD in config.stash:
        record = config.stash[RUN_RECORD]
        # Asked before the checks run: a verify-only run learns the running release only later (from the stack).
        what = "verify-only" if record.mode == "verify-only" else f"release {record.release}"
        report.title = f"deploycheck: {record.environment} {what}"  # type: ignore[attr-defined]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config) -> None:
    if RUN_RECORD not in config.stash or config.option.collectonly:
        return
    record = config.stash[RUN_RECORD]
    terminalreporter.write_sep("=", "deploycheck")
    for line in reporting.terminal_lines(record):
        terminalreporter.write_line(line)
    if github.is_github_actions():
        for annotation in github.error_annotations(record):
            terminalreporter.write_line(annotation)


def _evidence_services(item: pytest.Item, worker_services: list[str]) -> list[str]:
    """The services a failed check is about: its own service parameter, else its module's evidence marker."""
    params = getattr(item, "callspec", None)
    for name in ("service", "node", "worker"):
        if params is not None and name in params.params:
            return [str(params.params[name])]
    marker = item.get_closest_marker("evidence")
    services: list[str] = []
    for service in marker.args if marker else ():
        services.extend(worker_services if service == "workers" else [service])
    return services


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed check carries the state and last log lines of the services it is about (secrets masked)."""
    report = yield
    stack = getattr(item, "funcargs", {}).get("stack")
    if report.failed and report.when == "call" and isinstance(stack, Stack):
        sections = []
        for service in _evidence_services(item, stack.environment.worker_services):
            container = stack.containers.get(service)
            if container is not None:
                sections.append(evidence(container, stack.environment.secrets, lines=30))
        if sections:
            report.sections.append(("deploycheck evidence", "\n\n".join(sections)))
    return report
