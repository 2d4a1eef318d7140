"""Every secret of the environment masked in everything a run writes: the test reports (tracebacks with their
frames' arguments and locals, captured output and logs) before the terminal, JUnit XML and pytest-html see them,
every log record as it is made, the terminal itself, the run record before any report is written from it, and
the report files before they are kept in the history.

Secrets are kept out of what a traceback can show in the first place (libpq is given a password file, a child
its environment); this is the defense in depth, for what no code of deploycheck's controls: the frames of
requests and urllib3 hold an HTTP session's headers, a team's check may print or log a secret.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any, TextIO

import pytest

from deploycheck.request.secrets import Secret, mask_data, mask_text

PLUGIN_NAME = "deploycheck-masking"


def mask_fields(record: Any, secrets: list[Secret]) -> None:
    """Mask every secret in the strings of a dataclass (the run record and the records it holds), in place."""

    def masked(value: Any) -> Any:
        if isinstance(value, str):
            return mask_text(value, secrets)
        if isinstance(value, list):
            return [masked(item) for item in value]
        if isinstance(value, tuple):
            return tuple(masked(item) for item in value)
        if isinstance(value, dict):
            return {masked(key): masked(item) for key, item in value.items()}
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            mask_fields(value, secrets)
        return value

    for field in dataclasses.fields(record):
        object.__setattr__(record, field.name, masked(getattr(record, field.name)))


def mask_report(config: pytest.Config, report: pytest.TestReport | pytest.CollectReport, secrets: list[Secret]) -> None:
    """Mask every secret in a report, in place: its traceback (every entry's lines, arguments and locals, the
    chained exceptions', the crash message), its sections (captured output, captured logs, deploycheck's
    evidence) and anything else it carries. Through pytest's own serialization of reports (the one xdist uses),
    so that the traceback keeps its structure for the terminal, JUnit XML and pytest-html."""
    if not secrets:
        return
    data = config.hook.pytest_report_to_serializable(config=config, report=report)
    if data is None:
        return
    masked = mask_data(data, secrets)
    if masked == data:
        return
    clean = config.hook.pytest_report_from_serializable(config=config, data=masked)
    for name in list(vars(report)):
        if name in data and data[name] != masked[name] and name in vars(clean):
            setattr(report, name, getattr(clean, name))


def mask_file(path: Path, secrets: list[Secret]) -> None:
    """A report file another plugin wrote (pytest-html's, JUnit XML), rewritten with every secret masked."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return
    masked = mask_text(text, secrets)
    if masked != text:
        path.write_text(masked, encoding="utf-8")


class _MaskedStream:
    """The terminal's stream, every secret masked in what is written to it (pytest writes a line at a time)."""

    def __init__(self, stream: TextIO, secrets: list[Secret]) -> None:
        self._stream = stream
        self._secrets = secrets

    def write(self, text: str) -> int:
        return self._stream.write(mask_text(text, self._secrets))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class SecretMasking:
    """The pytest plugin: registered for a run whose environment holds secrets, before anything is written."""

    def __init__(self, config: pytest.Config, secrets: list[Secret]) -> None:
        self.config = config
        self.secrets = secrets
        self._record_factory: Callable[..., logging.LogRecord] | None = None
        self._terminal: Any = None

    def install(self) -> None:
        """Mask log records as they are made (every handler sees them masked: pytest's captured logs, live
        logs and log file, and any of a team's), and the terminal's stream."""
        previous = logging.getLogRecordFactory()
        secrets = self.secrets

        def masked_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            _mask_log_record(record, secrets)
            return record

        self._record_factory = previous
        logging.setLogRecordFactory(masked_record)
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        writer = getattr(reporter, "_tw", None)  # pytest's TerminalWriter: everything the terminal shows
        stream = getattr(writer, "_file", None)
        if stream is not None and not isinstance(stream, _MaskedStream):
            writer._file = _MaskedStream(stream, secrets)  # type: ignore[union-attr]
            self._terminal = writer

    def uninstall(self) -> None:
        if self._record_factory is not None:
            logging.setLogRecordFactory(self._record_factory)
            self._record_factory = None
        if self._terminal is not None and isinstance(self._terminal._file, _MaskedStream):
            self._terminal._file = self._terminal._file._stream
            self._terminal = None

    # The outermost wrappers: every other plugin's makereport (pytest-html's extras, deploycheck's evidence) has
    # added what it adds before the report is masked, and the terminal, JUnit XML and pytest-html see it masked.
    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_makereport(self) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        mask_report(self.config, report, self.secrets)
        return report

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_make_collect_report(self) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
        report = yield
        mask_report(self.config, report, self.secrets)
        return report


def _mask_log_record(record: logging.LogRecord, secrets: list[Secret]) -> None:
    try:
        message = record.getMessage()
    except Exception:  # a bad format string: the handler reports it, as logging does
        return
    masked = mask_text(message, secrets)
    if masked != message:
        record.msg, record.args = masked, ()
    if record.exc_info and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)  # as a handler would, masked
    if record.exc_text:
        record.exc_text = mask_text(record.exc_text, secrets)
    if record.stack_info:
        record.stack_info = mask_text(record.stack_info, secrets)
