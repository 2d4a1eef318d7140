"""The command a wait runs as a container's own healthcheck (the engine's reading of Config.Healthcheck.Test),
and how often a wait asks its probe of the services' answers."""

from __future__ import annotations

from typing import Any

import pytest

from deploycheck.engine import containers
from deploycheck.engine.containers import healthcheck_command


class _Container:
    def __init__(self, healthcheck: dict[str, Any] | None) -> None:
        self.attrs = {"Config": {"Healthcheck": healthcheck} if healthcheck is not None else {}}


@pytest.mark.parametrize(
    ("test", "command"),
    [
        (["CMD", "pg_isready", "-q"], ["pg_isready", "-q"]),
        (["CMD-SHELL", 'pg_isready -U "$POSTGRES_USER"'], ["/bin/sh", "-c", 'pg_isready -U "$POSTGRES_USER"']),
        (["NONE"], None),
        ([], None),
    ],
)
def test_healthcheck_command_reads_the_test_as_the_engine_does(test: list[str], command: list[str] | None) -> None:
    found = healthcheck_command(_Container({"Test": test}))
    assert (list(found.argv) if found is not None else None) == command


def test_a_container_without_a_healthcheck_has_no_command() -> None:
    assert healthcheck_command(_Container(None)) is None


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_wait_s_probe_is_asked_at_most_once_an_interval_and_once_passed_is_not_asked_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = _Clock()
    monkeypatch.setattr("deploycheck.engine.containers.time.monotonic", clock)
    answers = iter([False, True])
    asked: list[float] = []

    def probe() -> bool:
        asked.append(clock.now)
        return next(answers)

    shared = containers._Probe(probe, interval=0.1)
    assert shared() is False
    clock.now += 0.06
    assert shared() is False, "within the interval: the last answer, the probe not asked"
    clock.now += 0.06
    assert shared() is True
    clock.now += 10
    assert shared() is True
    assert asked == [100.0, pytest.approx(100.12)], "asked once per interval, and never again once it passed"
