"""A wait runs a starting container's own healthcheck: a ready container passes it at once, without waiting
for the engine's first check (a whole interval after the start, on Docker 20.10), and a container that is
not ready does not pass it. Given a probe of the services themselves (``answers``), the wait runs the
healthcheck only once the probe has passed, and still needs it to pass."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import docker
import pytest

from deploycheck.engine.containers import (
    PROJECT_LABEL,
    SERVICE_LABEL,
    State,
    WaitFailed,
    run_own_healthcheck,
    wait_healthy,
)
from tests.e2e.conftest import reference_api_image, remove_project

pytestmark = pytest.mark.e2e

MINUTES_5 = 300 * 1_000_000_000  # nanoseconds, as the engine takes them


@pytest.fixture
def slow_ticking() -> Iterator[tuple[str, Any]]:
    """A container whose healthcheck (a file exists, seen after half a second: a run must be waited for) the
    engine runs first after 5 minutes. Each run of it leaves /tmp/checked behind."""
    project = f"dce2e-waits-{os.getpid()}"
    client = docker.from_env()
    container = client.containers.run(
        reference_api_image(),
        ["sleep", "600"],
        detach=True,
        labels={PROJECT_LABEL: project, SERVICE_LABEL: "slow"},
        healthcheck={
            "test": ["CMD-SHELL", "touch /tmp/checked && sleep 0.5 && test -f /tmp/ready"],
            "interval": MINUTES_5,
            "start_period": MINUTES_5,
        },
    )
    yield project, container
    remove_project(project)


def make_ready(container: Any) -> None:
    """What its healthcheck looks for: from now on, each run of it passes."""
    code, _ = container.exec_run(["touch", "/tmp/ready"])
    assert code == 0


def test_a_container_that_is_not_ready_does_not_pass(slow_ticking: tuple[str, Any]) -> None:
    project, container = slow_ticking
    with pytest.raises(WaitFailed, match=r"slow did not become healthy within 3 s \(health starting\)"):
        wait_healthy(docker.from_env(), project, ["slow"], deadline_seconds=3)
    assert run_own_healthcheck(container) is False


def test_a_ready_container_passes_at_once_though_the_engine_has_not_checked_it(slow_ticking: tuple[str, Any]) -> None:
    project, container = slow_ticking
    make_ready(container)
    # The engine's first check is 5 minutes away: only a run of the check by the wait itself can end it.
    wait_healthy(docker.from_env(), project, ["slow"], deadline_seconds=30)
    container.reload()
    assert State.of(container).health == "starting", "the engine checked it: this test proves nothing then"
    assert run_own_healthcheck(container) is True


def healthcheck_ran(container: Any) -> bool:
    code, _ = container.exec_run(["test", "-f", "/tmp/checked"])
    return bool(code == 0)


def test_with_a_probe_of_its_answers_a_wait_runs_the_healthcheck_only_once_the_probe_passes(
    slow_ticking: tuple[str, Any],
) -> None:
    project, container = slow_ticking
    make_ready(container)
    checked_before: list[bool] = []

    def answers() -> bool:
        checked_before.append(healthcheck_ran(container))
        return len(checked_before) >= 3  # the third run of the probe passes

    wait_healthy(docker.from_env(), project, ["slow"], deadline_seconds=30, answers=answers)
    container.reload()
    assert State.of(container).health == "starting", "the engine checked it: this test proves nothing then"
    assert checked_before == [False, False, False], "the healthcheck ran before the probe passed"
    assert healthcheck_ran(container), "the wait passed without the container's healthcheck"


def test_with_a_probe_that_passes_a_container_whose_healthcheck_fails_does_not_pass(
    slow_ticking: tuple[str, Any],
) -> None:
    project, container = slow_ticking
    with pytest.raises(WaitFailed, match=r"slow did not become healthy within 3 s \(health starting\)"):
        wait_healthy(docker.from_env(), project, ["slow"], deadline_seconds=3, answers=lambda: True)
    assert healthcheck_ran(container)


def test_with_a_probe_that_fails_a_ready_container_does_not_pass_and_is_not_execed(
    slow_ticking: tuple[str, Any],
) -> None:
    project, container = slow_ticking
    make_ready(container)
    with pytest.raises(WaitFailed, match=r"slow did not become healthy within 3 s \(health starting\)"):
        wait_healthy(docker.from_env(), project, ["slow"], deadline_seconds=3, answers=lambda: False)
    assert not healthcheck_ran(container)
