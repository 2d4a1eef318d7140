"""Every service of the stack is running, healthy, has not restarted, and is published on 127.0.0.1 only."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import docker.errors
import pytest
from docker.models.containers import Container

from deploycheck.engine.containers import State, run_own_healthcheck
from deploycheck.stack import Stack


@pytest.fixture(scope="session")
def inspected(stack: Stack) -> dict[str, Container]:
    """Every service's container as the engine sees it now, asked once for all three checks, at once (a
    container removed since the stack was attached is left out: its checks say it has none)."""

    def inspect(container: Container) -> bool:
        try:
            container.reload()
        except docker.errors.NotFound:
            return False
        return True

    with ThreadPoolExecutor(max_workers=4) as pool:
        found = list(pool.map(inspect, stack.containers.values()))
    return {service: c for (service, c), ok in zip(stack.containers.items(), found, strict=True) if ok}


@pytest.mark.smoke
def test_service_is_running_and_healthy(stack: Stack, inspected: dict[str, Container], service: str) -> None:
    container = inspected.get(service)
    assert container is not None, f"{service} has no container in project {stack.environment.compose_project}"
    state = State.of(container)
    assert state.status == "running", f"{service} is {state.describe()}"
    if state.health == "starting":  # the engine's first check is still to come (an interval after the start)
        assert run_own_healthcheck(container), f"{service} is {state.describe()}, and its healthcheck fails now"
    else:
        assert state.health in ("healthy", None), f"{service} is {state.describe()}"


def test_service_has_not_restarted(inspected: dict[str, Container], service: str) -> None:
    container = inspected.get(service)
    assert container is not None, f"{service} has no container"
    state = State.of(container)
    assert state.restarts == 0, f"{service} restarted {state.restarts} times ({state.describe()})"
    assert not state.oom_killed, f"{service} was killed for lack of memory"


def test_service_ports_are_published_on_loopback_only(inspected: dict[str, Container], service: str) -> None:
    container = inspected.get(service)
    assert container is not None, f"{service} has no container"
    bindings = [
        (container_port, binding)
        for container_port, host_bindings in (container.attrs["NetworkSettings"].get("Ports") or {}).items()
        for binding in host_bindings or []
    ]
    exposed = [
        f"{b['HostIp'] or '0.0.0.0'}:{b['HostPort']}->{p}" for p, b in bindings if b.get("HostIp") != "127.0.0.1"
    ]
    assert not exposed, f"{service} publishes ports beyond 127.0.0.1: {', '.join(exposed)}"
