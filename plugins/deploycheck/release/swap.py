"""Blue-green for the HTTP services behind the proxy: the release that serves keeps serving until the new one is
ready, and a rollback of those services is the switch back.

Onto a running stack, a routed HTTP service whose container Compose would replace (its configuration hash is not
the running container's) is swapped, not recreated in place:

1. the proxy's route is pinned to the container that serves now (``engine.routes``), so that nothing new serves;
2. the new container starts beside it (``docker compose up --no-recreate --scale SERVICE=n+1``) and is judged as
   the services stage judges any: healthy, ready directly;
3. the proxy stage switches the route to it (its routes file, its configuration test, a graceful reload) and
   judges it ready through the proxy;
4. at the verdict the old containers are retired (a graceful stop: their last requests finish), or, when the
   run rolls back, the route goes back to them and the new ones are removed: nothing is started or waited for.

A service that publishes a fixed host port, or has a fixed container name, cannot have two containers: it is
replaced in place, and the run says why and how to change that.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import docker.errors
from docker.models.containers import Container

from deploycheck.engine import routes
from deploycheck.engine.compose import Compose, ComposeModel
from deploycheck.engine.containers import service_containers
from deploycheck.engine.target import Target

CONFIG_HASH_LABEL = "com.docker.compose.config-hash"


@dataclass(frozen=True)
class Swap:
    """One service's swap: its running containers before it (by name), the one of them the proxy routes to (its
    upstream), and the new one, once started."""

    service: str
    port: int
    old: tuple[str, ...]
    serving: str  # host:port, the route's upstream while the new container is judged, and after a rollback
    new: str = ""


@dataclass(frozen=True)
class Plan:
    """Which services are swapped, and why each other routed service is replaced in place (said to the user)."""

    swaps: tuple[Swap, ...] = ()
    in_place: tuple[tuple[str, str], ...] = ()  # (service, why it cannot be swapped)


def why_not_swappable(model: ComposeModel, service: str) -> str | None:
    """Why ``service`` cannot run two containers at once, every obstacle at once (so that one change fixes them
    all), or None."""
    found = model.services.get(service)
    if found is None:
        return None
    obstacles = []
    if found.container_name:
        obstacles.append(
            f"it has a fixed container_name ({found.container_name}), which two containers cannot share: remove "
            "container_name from the service"
        )
    for port, (address, host_port) in found.published.items():
        obstacles.append(
            f"it publishes host port {host_port} ({address}:{host_port}:{port}), which the new container cannot bind "
            f'while the old one serves: publish it without a host port ("{address}::{port}"); deploycheck finds the '
            "port the engine picks"
        )
    return "; and ".join(obstacles) or None


def plan(target: Target, compose: Compose, model: ComposeModel, services: Sequence[str]) -> Plan:
    """The swaps of ``services`` onto the running stack: routed HTTP services whose running container Compose would
    replace. Nothing runs yet, or no proxy routes them: no swap, and nothing to say."""
    environment = target.environment
    proxy = environment.stack.proxy
    if proxy is None:
        return Plan()
    routed = [s for s in environment.stack.http if s.service in services and s.service in proxy.routes]
    running = service_containers(target.docker, environment.compose_project)
    candidates = [s for s in routed if any(c.status == "running" for c in running.get(s.service, []))]
    if not candidates:
        return Plan()
    if not proxy.routes_file:
        why = "stack.proxy.routes_file is '' (no routes file): set it to have it swapped with no downtime"
        return Plan(in_place=tuple((s.service, why) for s in candidates))
    wanted = config_hashes(compose, [s.service for s in candidates])
    now = routes.routed_now(target)
    swaps: list[Swap] = []
    in_place: list[tuple[str, str]] = []
    for http in candidates:
        containers = [c for c in running[http.service] if c.status == "running"]
        if all(c.labels.get(CONFIG_HASH_LABEL) == wanted.get(http.service) for c in containers):
            continue  # Compose leaves it as it is
        problem = why_not_swappable(model, http.service)
        if problem is not None:
            in_place.append((http.service, problem))
        else:
            names = tuple(c.name for c in containers)
            # The container the proxy routes to now (one a --keep-failed run left beside it is not), else the newest.
            upstream = now.get(http.service, "")
            serving = upstream if upstream.rsplit(":", 1)[0] in names else routes.upstream(containers[-1], http.port)
            swaps.append(Swap(http.service, http.port, names, serving))
    return Plan(tuple(swaps), tuple(in_place))


def config_hashes(compose: Compose, services: Sequence[str]) -> dict[str, str]:
    """The configuration hash Compose gives each service's containers (``docker compose config --hash``)."""
    out = compose.run("config", "--hash", ",".join(services), timeout=60).stdout
    return dict(line.split(None, 1) for line in out.splitlines() if len(line.split()) == 2)


def pin(target: Target, swaps: Sequence[Swap]) -> None:
    """The proxy's routes name the containers that serve now (a service without a routes file yet is routed to
    all its containers by its name): a new container started beside them serves nothing."""
    pinned = routes.live_upstreams(target)
    pinned.update({s.service: s.serving for s in swaps})
    routes.write(target, pinned)
    routes.check_included(target)  # written, and read: else the new container would serve before it is judged


def start_beside(target: Target, compose: Compose, swaps: Sequence[Swap]) -> tuple[Swap, ...]:
    """Each swapped service's new container, started beside the old ones (which Compose leaves as they are)."""
    found = service_containers(target.docker, target.environment.compose_project)
    # A stopped container of the service (a retirement cut short) would count for the scale, and be started.
    _remove(target, [c for s in swaps for c in found.get(s.service, []) if c.name not in s.old], stop_timeout=10)
    scales = [arg for s in swaps for arg in ("--scale", f"{s.service}={len(s.old) + 1}")]
    services = [s.service for s in swaps]
    compose.run(
        "up", "--detach", "--no-deps", "--no-recreate", *scales, *services, timeout=target.environment.timeouts.stage
    )
    found = service_containers(target.docker, target.environment.compose_project)
    started = []
    for swap in swaps:
        new = [c.name for c in found.get(swap.service, []) if c.name not in swap.old]
        started.append(Swap(swap.service, swap.port, swap.old, swap.serving, new[-1] if new else ""))
    return tuple(started)


def _remove(target: Target, containers: Sequence[Container], stop_timeout: int) -> list[str]:
    removed = []
    for container in containers:
        try:
            container.stop(timeout=stop_timeout)  # its stop signal first: the requests it holds finish
            container.remove()
        except docker.errors.NotFound:
            continue  # gone already
        removed.append(container.name)
    return removed


def retire(target: Target, swaps: Sequence[Swap], actions: list[str]) -> None:
    """The verdict is green: the old containers go, after the last requests the proxy gave them finish."""
    found = service_containers(target.docker, target.environment.compose_project)
    for swap in swaps:
        removed = _remove(target, [c for c in found.get(swap.service, []) if c.name in swap.old], stop_timeout=30)
        if removed:
            actions.append(
                f"{swap.service}: the proxy switched to {swap.new}; {', '.join(removed)} stopped and removed"
            )


def undo(target: Target, swaps: Sequence[Swap], actions: list[str]) -> None:
    """A rollback of swapped services: the routes go back to the old containers, which kept running, and every
    newer container of those services is removed; nothing is started or waited for."""
    if not swaps:
        return
    pinned = routes.live_upstreams(target)
    pinned.update({s.service: s.serving for s in swaps})
    try:
        routes.write(target, pinned)
    except routes.RoutesFailed as error:
        # The failed release's proxy itself may be what failed (not running, a rejected configuration): the
        # rollback brings the previous one back, and its routes are written once the release is ready again.
        actions.append(f"the proxy's routes could not be switched back yet ({error}); written once it serves again")
    found = service_containers(target.docker, target.environment.compose_project)
    for swap in swaps:
        newer = [c for c in found.get(swap.service, []) if c.name not in swap.old]
        removed = _remove(target, newer, stop_timeout=10)
        actions.append(
            f"{swap.service}: the proxy routes to {swap.serving.rsplit(':', 1)[0]} again, which kept running; "
            + (f"{', '.join(removed)} of the failed release removed" if removed else "no new container to remove")
        )
