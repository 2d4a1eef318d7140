"""The deploycheck pytest plugin (its ``pytest11`` entry point, and what the suite's conftest.py loads).

Flow: options + environment file -> one validated Environment and RunRequest (``pytest_configure``) -> one
``Run`` registered as a plugin: it owns the run record and the ``Deployment`` (the stage fixtures in
``deploycheck.fixtures`` drive it, the checks use its stack) -> at session end the reports, written from the
record alone. The plugin is inert unless a run is asked for: ``--deploy=ENV`` or the ini option
``deploycheck_environment``.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import importlib.util
import os
import signal
import time
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

import pytest

from deploycheck import hookspecs
from deploycheck.deployment import Deployment
from deploycheck.engine import citus
from deploycheck.engine.commands import CommandFailed, Runner
from deploycheck.engine.compose import ComposeModel, ModelUnreadable, compose_for, read_model
from deploycheck.engine.containers import evidence
from deploycheck.engine.target import Target, make_target
from deploycheck.record import github, history, masking, reporting
from deploycheck.record.record import CheckRecord, RunRecord
from deploycheck.release import inventory
from deploycheck.release.ledger import Ledger, LedgerError
from deploycheck.request import options, tenants
from deploycheck.request.environment import DEFAULT_FILE, Environment, load
from deploycheck.request.options import RunRequest
from deploycheck.request.schema import ConfigError
from deploycheck.request.secrets import GeneratedSecretError, mask_text
from deploycheck.stack import Stack

PLUGIN_NAME = "deploycheck-run"
FIXTURE_MODULES = ("deploycheck.fixtures.stages", "deploycheck.fixtures.stack")
INERT_FIXTURES = "deploycheck.fixtures.inert"  # without a deployment asked for
EXIT_ROLLBACK_FAILED = 6  # documented in the README: the deploy failed and so did its rollback


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(hookspecs)


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
        "--teardown",
        action="store_true",
        help="back the stack up (unless --no-backup), then remove it with docker compose down, its volumes kept "
        "(unless --purge-volumes); recorded in the ledger",
    )
    group.addoption("--no-backup", action="store_true", help="with --teardown: take no backup first")
    group.addoption(
        "--purge-volumes", action="store_true", help="with --teardown: remove the stack's volumes (its data) too"
    )
    group.addoption(
        "--backup", action="store_true", help="back the running stack's database up now (the last 10 are kept)"
    )
    group.addoption(
        "--list-backups",
        action="store_true",
        help="list the environment's backups (release, time, size), newest first; changes nothing",
    )
    group.addoption(
        "--restore-backup",
        metavar="NAME",
        help="put the database back to backup NAME, onto the running release, after a fresh backup of what is "
        "there; verified with the smoke checks",
    )
    group.addoption(
        "--tenants",
        action="store_true",
        help="with --deploy=TEMPLATE: list the template's tenants with each one's status and ports",
    )
    group.addoption(
        "--release", metavar="ID", help="the release id (default: from git, e.g. 1a2b3c4d5e6f or ...-dirty)"
    )
    group.addoption(
        "--summary-json", metavar="PATH", help="where to write the JSON summary (default: ini deploycheck_summary)"
    )
    group.addoption(
        "--citus-source",
        metavar="ARCHIVE",
        help="a Citus source release (citus-X.Y.Z.tar.gz) to build real Citus from where the configured image "
        f"cannot be pulled (default: ${citus.SOURCE_VARIABLE})",
    )
    parser.addini("deploycheck_environment", "the environment deployed when --deploy is not given (none: inert)")
    parser.addini("deploycheck_summary", "the JSON summary path", default="reports/summary.json")
    parser.addini("deploycheck_history_keep", "how many runs reports/history keeps", type="int", default=20)


def _modes(config: pytest.Config) -> options.RequestedMode:
    asked = {
        "rollback-to": config.getoption("rollback_to") is not None,
        "verify-only": bool(config.getoption("verify_only")),
        "teardown": bool(config.getoption("teardown")),
        "backup": bool(config.getoption("backup")),
        "restore-backup": config.getoption("restore_backup") is not None,
        "list-backups": bool(config.getoption("list_backups")),
        "tenants": bool(config.getoption("tenants")),
    }
    mode = options.mode_of(asked)
    options.teardown_options(mode, bool(config.getoption("no_backup")), bool(config.getoption("purge_volumes")))
    return mode


def _templates_and_tenants(environment: Environment, mode: options.RequestedMode) -> None:
    """A template's tenants are deployed, never the template; --tenants lists a template's tenants."""
    name = environment.name
    if mode == "tenants" and not environment.is_template:
        if environment.tenant:
            raise ConfigError(
                f"--tenants lists the tenants of a template: pass --deploy={environment.template} --tenants."
            )
        raise ConfigError(
            f"environment '{name}' is not a template of tenants (it has no tenants table): --tenants lists the "
            "tenants of one."
        )
    if environment.is_template and mode != "tenants":
        raise ConfigError(
            f"environment '{name}' is a template of tenants: deploy one of them as --deploy={name}-TENANT "
            f"(TENANT: {tenants.TENANT_WORDS}), or list them with --tenants."
        )


def _backup_asked(environment: Environment, mode: options.RequestedMode, name: str | None) -> None:
    """Backups are listed and restored by name from the state folder of this machine."""
    if mode not in ("list-backups", "restore-backup"):
        return
    if environment.on_server:
        option = "--list-backups" if mode == "list-backups" else "--restore-backup"
        raise ConfigError(
            f"{option} reads the backups of this machine's state folder, and environment '{environment.name}' keeps "
            "its backups on its server: run it on the server's own deploycheck checkout, or copy them here "
            "(server.copy_backups)."
        )
    if name is None:
        return
    names = [found.name for found in inventory.backups(environment)]
    if name not in names:
        raise ConfigError(
            f"backup '{name}' is not a backup of environment '{environment.name}': choose one of "
            f"{', '.join(names) or 'none yet'} (in {environment.backups_dir}; --list-backups shows them)."
        )


def _request(config: pytest.Config, name: str) -> tuple[RunRequest, Environment]:
    """The run asked for, validated before anything is changed (a ConfigError otherwise)."""
    path = Path(config.getoption("environments") or config.rootpath / DEFAULT_FILE)
    rollback_to = config.getoption("rollback_to")
    mode = _modes(config)
    given = config.getoption("release")
    given_release = None if given is None else options.valid_release(str(given))  # before a tenant gets ports
    # A template needs no secret to list its tenants; only a deploy gives a new tenant its ports.
    environment = load(
        path, name, with_secrets=mode != "tenants", tenant_ports="allocate" if mode == "deploy" else "recorded"
    )
    _templates_and_tenants(environment, mode)
    backup_name = config.getoption("restore_backup")
    _backup_asked(environment, mode, backup_name)
    # A damaged ledger stops a run before it changes anything (verifying and listing need none). A server's
    # stack keeps its ledger on the server: it is read there, under the lock, at preflight.
    if mode not in ("verify-only", "list-backups", "tenants") and not environment.on_server:
        Ledger(environment.ledger_file).check()
    if rollback_to is not None:
        release = options.valid_release(str(rollback_to), "--rollback-to")
        known = [r.id for r in Ledger(environment.ledger_file).releases() if r.outcome == "passed"]
        if release not in known and not environment.on_server:
            choices = ", ".join(dict.fromkeys(reversed(known))) or "none yet"
            raise ConfigError(
                f"release '{release}' never deployed green in environment '{environment.name}': "
                f"choose one of {choices} (from {environment.ledger_file})."
            )
    elif given_release is not None:
        release = given_release
    elif mode in ("deploy", "verify-only"):
        release = options.release_from_git(environment.folder, Runner())
    else:  # a run by hand is about the release that runs (found in preflight); a listing, about none
        release = "unknown"
    source = citus.source_from(config.getoption("citus_source"), dict(os.environ))
    request = RunRequest(
        name,
        path,
        mode,
        release,
        bool(config.getoption("keep_failed")),
        source,
        no_backup=bool(config.getoption("no_backup")),
        purge_volumes=bool(config.getoption("purge_volumes")),
        backup_name=None if backup_name is None else str(backup_name),
    )
    return request, environment


def _tenants_own_stacks(environment: Environment, runner: Runner, release: str) -> None:
    """A tenant's stack must be its own: the template's compose files may name no container, network or
    volume outright (every tenant's would be the same one)."""
    compose = compose_for(environment, runner, release, environment.citus_image)
    try:
        data = compose.run("config", "--format", "json", timeout=60).data()
    except (CommandFailed, ValueError):
        return  # read_model says what is wrong with the files
    problem = tenants.shared_resources(data, environment.compose_project)
    if problem is not None:
        raise ConfigError(
            f"template '{environment.template}' cannot give tenant '{environment.tenant}' a stack of its own: "
            f"{mask_text(problem, environment.all_secrets)}; remove that name from the compose files so that Compose "
            "names it after each tenant's project."
        )


@dataclass(frozen=True)
class Accepted:
    """A run that passed every check of what it asks, before anything is written (``pytest_cmdline_main``)."""

    request: RunRequest
    environment: Environment
    target: Target
    model: ComposeModel


ACCEPTED = pytest.StashKey[Accepted]()


def _accept(config: pytest.Config, name: str) -> Accepted:
    """The run asked for, or a UsageError: its request, its environment file and its Compose model."""
    try:
        request, environment = _request(config, name)
    except (ConfigError, LedgerError, GeneratedSecretError) as error:
        raise pytest.UsageError(str(error)) from None
    made = config.hook.pytest_deploycheck_make_target(environment=environment)
    target: Target = made if made is not None else make_target(environment)
    if request.mode == "tenants":  # a template's own stack is never deployed: its model is its tenants'
        return Accepted(request, environment, target, ComposeModel({}))
    try:
        model = read_model(environment, target.runner, request.release)
        if environment.tenant and request.mode == "deploy":
            _tenants_own_stacks(environment, target.runner, request.release)
    except ModelUnreadable as error:
        raise pytest.UsageError(str(error)) from None
    except ConfigError as error:
        raise pytest.UsageError(str(error)) from None
    return Accepted(request, environment, target, model)


def _environment_asked(config: pytest.Config) -> str:
    return str(config.getoption("deploy") or config.getini("deploycheck_environment") or "")


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> None:
    """A run is accepted or refused here, before pytest-html and junitxml configure (and create their folders):
    a refused run writes nothing. An accepted one writes its HTML report and JUnit XML, in reports/ unless told
    where."""
    name = _environment_asked(config)
    if config.option.help or not name:
        return
    config.stash[ACCEPTED] = _accept(config, name)
    reports = config.rootpath / "reports"
    if not config.option.xmlpath:
        config.option.xmlpath = str(reports / "junit.xml")
    if hasattr(config.option, "htmlpath") and not config.option.htmlpath:  # unless -p no:html
        config.option.htmlpath = str(reports / "report.html")
        config.option.self_contained_html = True


@pytest.hookimpl(trylast=True)  # after pytest-metadata's configure: the environment table is there to fill
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "smoke: a fast check, selected with -m smoke for post-deploy smoke runs")
    config.addinivalue_line("markers", "stage(name): a deployment stage reported as a test")
    config.addinivalue_line(
        "markers", "evidence(*services): whose state and logs a failure of these checks carries ('workers': all)"
    )
    if config.option.help:
        return
    accepted = config.stash.get(ACCEPTED, None)
    if accepted is None:
        config.pluginmanager.import_plugin(INERT_FIXTURES)
        return
    for module in FIXTURE_MODULES:
        config.pluginmanager.import_plugin(module)
    _collect_checks(config, accepted.environment)
    secrets = accepted.environment.all_secrets
    if secrets:  # before anything is reported or logged
        masker = masking.SecretMasking(config, secrets)
        masker.install()
        config.pluginmanager.register(masker, masking.PLUGIN_NAME)
    # At a run's exit, every object is left to the process's end rather than to the interpreter's last
    # collection, which walked every object of pytest, docker, psycopg and ours: 0.15 s of every run's end (0.02 s
    # frozen). Files are closed by then (logging's own exit handler flushes its handlers). Only for a run: a
    # team's own test session with the plugin installed ends as it always did. Registered once per process.
    atexit.unregister(gc.freeze)
    atexit.register(gc.freeze)
    run = Run(config, accepted)
    config.pluginmanager.register(run, PLUGIN_NAME)
    config.pluginmanager.register(HistoryKeeper(run), f"{PLUGIN_NAME}-history")


def builtin_checks() -> Path:
    """The built-in checks' folder (deploycheck.checks: the suite's checks/, or the installed package's)."""
    spec = importlib.util.find_spec("deploycheck.checks")
    assert spec is not None and spec.submodule_search_locations, "deploycheck's checks are part of it"
    return Path(next(iter(spec.submodule_search_locations)))


def _collect_checks(config: pytest.Config, environment: Environment) -> None:
    """A run checks its stack with the built-in checks and the environment's own check modules, wherever
    pytest is run (a team's repository has its own tests, which are not a deployment's checks); paths given
    on the command line are run instead, as asked."""
    if config.args_source == pytest.Config.ArgsSource.ARGS:
        return
    config.args[:] = [str(builtin_checks()), *(str(path) for path in environment.check_modules)]


def pytest_unconfigure(config: pytest.Config) -> None:
    masker = config.pluginmanager.get_plugin(masking.PLUGIN_NAME)
    if isinstance(masker, masking.SecretMasking):
        masker.uninstall()
        config.pluginmanager.unregister(masker, masking.PLUGIN_NAME)
    run = config.pluginmanager.get_plugin(PLUGIN_NAME)
    if isinstance(run, Run):
        run.close()
        config.pluginmanager.unregister(name=f"{PLUGIN_NAME}-history")
        config.pluginmanager.unregister(run, PLUGIN_NAME)


def _sigterm_as_interrupt(signum: int, frame: FrameType | None) -> None:
    # pytest handles SIGINT only; SIGTERM (CI cancel, docker stop) must also lead to the rollback.
    raise KeyboardInterrupt(f"signal {signum}")


def number_every_entry(error: BaseException | None) -> None:
    """Give every entry of the error's traceback (and of the errors it chains) a line number.

    A signal's KeyboardInterrupt can land on an instruction that has no line (Python 3.11+: a ``with``'s
    set-up, say); its traceback entry's ``tb_lineno`` is then None, and pytest's report of the interrupt
    crashes on it (TypeError), so the run ends with exit code 1 instead of "interrupted". Such an entry is
    relinked as one that points at its function's first line."""
    seen: set[int] = set()
    pending = [error]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        pending += [current.__cause__, current.__context__]
        head = current.__traceback__
        if head is None:
            continue
        if head.tb_lineno is None:
            head = current.__traceback__ = _numbered(head)
        entry = head
        while entry.tb_next is not None:
            if entry.tb_next.tb_lineno is None:
                entry.tb_next = _numbered(entry.tb_next)
            entry = entry.tb_next


def _numbered(entry: TracebackType) -> TracebackType:
    return TracebackType(entry.tb_next, entry.tb_frame, entry.tb_lasti, entry.tb_frame.f_code.co_firstlineno)


def _reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple):  # a skip: (file, line, message)
        return str(longrepr[2]).removeprefix("Skipped: ")
    crash = getattr(longrepr, "reprcrash", None)
    text = crash.message if crash is not None else str(longrepr or "")
    return text.strip().splitlines()[0][:500] if text.strip() else ""


def _evidence_services(item: pytest.Item, environment: Environment) -> list[str]:
    """The services a failed check is about: its own service parameter, else its module's evidence marker
    (roles: 'database', 'workers', 'http', 'proxy'; or service names)."""
    params = getattr(item, "callspec", None)
    for name in ("service", "node", "worker", "http_service"):
        if params is not None and name in params.params:
            return [str(params.params[name])]
    stack = environment.stack
    roles = {
        "database": [stack.database.service],
        "workers": stack.database.worker_services,
        "http": stack.http_services,
        "proxy": [stack.proxy.service] if stack.proxy is not None else [],
    }
    marker = item.get_closest_marker("evidence")
    services: list[str] = []
    for named in marker.args if marker else ():
        services.extend(roles.get(named, [named]))
    return list(dict.fromkeys(services))


class Run:
    """One run of deploycheck: what was asked, the run record, the deployment, and the reports at the end."""

    def __init__(self, config: pytest.Config, accepted: Accepted) -> None:
        request, environment = accepted.request, accepted.environment
        self.config = config
        self.request = request
        self.environment = environment
        self.record = RunRecord(
            environment=environment.name,
            mode=request.mode,
            release=request.release,
            database_kind=environment.stack.database.kind,
            citus_image=environment.citus_image if environment.stack.database.is_citus else "",
            compose_project=environment.compose_project,
        )
        self.target = accepted.target
        self.model = accepted.model
        self.deployment = Deployment(request, self.target, self.model, self.record, self.say)
        self._previous_sigterm = signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
        self._update_metadata()

    @classmethod
    def of(cls, config: pytest.Config) -> Run:
        run = config.pluginmanager.get_plugin(PLUGIN_NAME)
        if not isinstance(run, cls):
            raise pytest.UsageError("deploycheck's fixtures need a run: pass --deploy=ENV.")
        return run

    def close(self) -> None:
        self.deployment.shield.down()  # up from an interrupt in a run whose deployment never ended (none began)
        signal.signal(signal.SIGTERM, self._previous_sigterm)

    def masked_record(self) -> RunRecord:
        """The run record, every secret of the environment masked in it (in place: it is only ever written out
        from here on), for the reports written from it."""
        masking.mask_fields(self.record, self.environment.all_secrets)
        return self.record

    def say(self, line: str) -> None:
        """One line on the terminal, now, even from inside a fixture (where pytest captures output)."""
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is None:
            return
        capture = self.config.pluginmanager.get_plugin("capturemanager")
        with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
            reporter.ensure_newline()
            reporter.write_line(line, bold=True)

    def _update_metadata(self) -> None:
        try:
            from pytest_metadata.plugin import metadata_key
        except ImportError:  # pytest-html not installed: no environment table to fill
            return
        if metadata_key in self.config.stash:
            self.config.stash[metadata_key].update(reporting.environment_rows(self.record))

    @property
    def summary_path(self) -> Path:
        config = self.config
        return Path(config.getoption("summary_json") or config.rootpath / config.getini("deploycheck_summary"))

    # --- collection: stages first; what the plan does not run is deselected ------------------------------

    def pytest_collection_modifyitems(self, session: pytest.Session, items: list[pytest.Item]) -> None:
        items.sort(key=lambda item: 0 if item.get_closest_marker("stage") else 1)
        option = self.config.option
        plan = self.deployment.plan_ if option.collectonly or option.setupplan else self.deployment.plan()

        def not_in_plan(item: pytest.Item) -> bool:
            stage = item.get_closest_marker("stage")
            if stage is not None:
                return bool(stage.args) and stage.args[0] not in plan.stages
            return not plan.checks or (plan.smoke_only and item.get_closest_marker("smoke") is None)

        deselected = [item for item in items if not_in_plan(item)]
        if deselected:
            self.config.hook.pytest_deselected(items=deselected)
            items[:] = [item for item in items if not not_in_plan(item)]

    # --- what happened to the checks ----------------------------------------------------------------------

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if "stage" in report.keywords:
            return
        if report.when != "call" and report.outcome == "passed":
            return
        record = self.record
        existing = next((c for c in record.checks if c.nodeid == report.nodeid), None)
        if existing is not None:
            if report.outcome == "failed":
                existing.outcome, existing.reason = "failed", _reason(report)
            return
        record.checks.append(CheckRecord(report.nodeid, report.outcome, report.duration, report.start, _reason(report)))

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        """A failed check carries the state and last log lines of the services it is about (secrets masked)."""
        report = yield
        stack = getattr(item, "funcargs", {}).get("stack")
        if report.failed and report.when == "call" and isinstance(stack, Stack):
            sections = []
            for service in _evidence_services(item, stack.environment):
                container = stack.containers.get(service)
                if container is not None:
                    sections.append(evidence(container, stack.environment.all_secrets, lines=30))
            if sections:
                report.sections.append(("deploycheck evidence", "\n\n".join(sections)))
        return report

    @pytest.hookimpl(tryfirst=True)  # before the terminal's report of it, which needs every line numbered
    def pytest_keyboard_interrupt(self, excinfo: pytest.ExceptionInfo[BaseException]) -> None:
        self.record.interrupted = True
        self.deployment.shield.up()  # the run ends now: a second Ctrl+C or SIGTERM must not cut its rollback short
        number_every_entry(excinfo.value)

    # --- the end: the deployment ended with the session's fixtures; the reports -------------------------

    @pytest.hookimpl(trylast=True)  # after the fixtures' teardown (the deployment's end, its rollback)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.config.option.collectonly:
            return
        record = self.masked_record()
        if exitstatus == pytest.ExitCode.INTERRUPTED:
            record.interrupted = True
        elif exitstatus in (pytest.ExitCode.USAGE_ERROR, pytest.ExitCode.INTERNAL_ERROR):
            # e.g. a check module's conftest pytest refuses: no check ran, which is no pass
            record.pytest_error = f"pytest ended with exit code {int(exitstatus)}"
        record.finished_at = time.time()
        reporting.write_summary_json(record, self.summary_path)
        if github.is_github_actions():
            github.write_job_summary(record)
        if record.rollback.outcome == "failed" or record.write_fence.left_on:  # the stack is not left serving
            session.exitstatus = EXIT_ROLLBACK_FAILED
        elif record.failed and session.exitstatus == pytest.ExitCode.OK:
            # A failed stage skips every check; the run must still end red.
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_html_results_summary(
        self, prefix: list[str], summary: list[str], postfix: list[str], session: pytest.Session
    ) -> None:
        """Asked by pytest-html right before it writes its file, once the fixtures (the deployment) have ended."""
        self._update_metadata()  # the environment table is pytest-metadata's dict: filled in place
        prefix.extend(reporting.summary_html(self.masked_record()))

    def pytest_html_report_title(self, report: Any) -> None:
        record = self.record
        # Asked before the checks run: a verify-only run learns the running release only later (from the stack), a
        # run by hand in preflight.
        what = (
            f"release {record.release}" if record.mode in ("deploy", "rollback-to", "already-current") else record.mode
        )
        report.title = f"deploycheck: {record.environment} {what}"

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter, exitstatus: int) -> None:
        if self.config.option.collectonly:
            return
        record = self.masked_record()
        terminalreporter.write_sep("=", "deploycheck")
        for line in reporting.terminal_lines(record):
            terminalreporter.write_line(line)
        if github.is_github_actions():
            for annotation in github.error_annotations(record):
                terminalreporter.write_line(annotation)


class HistoryKeeper:
    """After every report is written (pytest-html and JUnit write theirs at session end too), keep a copy."""

    def __init__(self, run: Run) -> None:
        self.run = run

    @pytest.hookimpl(wrapper=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> Generator[None, None, None]:
        yield
        run = self.run
        config = run.config
        if config.option.collectonly:
            return
        files = [Path(p) for p in (getattr(config.option, "htmlpath", None), config.option.xmlpath) if p]
        for path in files:  # written by pytest-html and JUnit XML from masked reports; masked again, as kept
            masking.mask_file(path, run.environment.all_secrets)
        folder = history.keep_run(
            run.summary_path.parent / "history",
            run.masked_record().summary(),
            [*files, run.summary_path],
            int(config.getini("deploycheck_history_keep")),
        )
        run.say(f"[deploycheck] reports kept in {folder}")
