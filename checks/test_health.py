"""Every service of the stack is running, healthy, has not restarted, and is published on 127.0.0.1 only."""

from __future__ import annotations

import pytest

from fixtures.stack import Stack
from plugins.containers import State


@pytest.mark.smoke
def test_service_is_running_and_healthy(stack: Stack, service: str) -> None:
    container = stack.containers.get(service)
    assert container is not None, f"{service} has no container in project {stack.environment.compose_project}"
    container.reload()
    state = State.of(container)
    assert state.status == "running", f"{service} is {state.describe()}"
    assert state.health in ("healthy", None), f"{service} is {state.describe()}"


def test_service_has_not_restarted(stack: Stack, service: str) -> None:
    container = stack.containers[service]
    container.reload()
    state = State.of(container)
    assert state.restarts == 0, f"{service} restarted {state.restarts} times ({state.describe()})"
    assert not state.oom_killed, f"{service} was killed for lack of memory"


def test_service_ports_are_published_on_loopback_only(stack: Stack, service: str) -> None:
    container = stack.containers[service]
    container.reload()
    bindings = [
        (container_port, binding)
        for container_port, host_bindings in (container.attrs["NetworkSettings"].get("Ports") or {}).items()
        for binding in host_bindings or []
    ]
    exposed = [
        f"{b['HostIp'] or '0.0.0.0'}:{b['HostPort']}->{p}" for p, b in bindings if b.get("HostIp") != "127.0.0.1"
    ]
    assert not exposed, f"{service} publishes ports beyond 127.0.0.1: {', '.join(exposed)}"
