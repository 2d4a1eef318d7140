"""The proxy's routes file: which container each of the proxy's routes goes to, and whether the proxy answers
a maintenance response instead (during a database restore).

deploycheck writes it into the proxy's container (``stack.proxy.routes_file``), tests the configuration and
reloads the proxy gracefully (its ``reload``: workers that hold a request finish it on the old routes). For
Nginx it is ``set`` lines the team's server block includes after its defaults (README, "Zero downtime"):

    set $deploycheck_api "deploycheck-local-api-2:8000";
    set $deploycheck_maintenance "";

A container's name is its address on the stack's network (Docker's DNS), so a route names one container of a
service, never all of them: a new container that starts beside the old one serves nothing until it is switched to.
"""

from __future__ import annotations

import contextlib
import io
import re
import tarfile
import time
from collections.abc import Mapping
from pathlib import PurePosixPath

import docker.errors
from docker.models.containers import Container

from deploycheck.engine.commands import Command
from deploycheck.engine.containers import project_containers, service_container
from deploycheck.engine.target import Target

MAINTENANCE_VARIABLE = "deploycheck_maintenance"


class RoutesFailed(Exception):
    """The routes could not be written or taken by the proxy: one sentence saying why and what to do."""


class NoRoutesFolder(RoutesFailed):
    """The proxy's container has no folder for the routes file, or its configuration does not include the file:
    it does not take routes."""


def variable(service: str) -> str:
    """The proxy's variable that holds where ``service``'s route goes (``deploycheck_<service>``)."""
    return "deploycheck_" + re.sub(r"[^A-Za-z0-9_]", "_", service)


def routes_text(upstreams: Mapping[str, str], maintenance: bool) -> str:
    """The routes file: one ``set`` per routed service (its upstream, host:port), and the maintenance switch."""
    lines = ["# Written by deploycheck: which container each route goes to (README, Zero downtime)."]
    lines += [f'set ${variable(service)} "{upstream}";' for service, upstream in sorted(upstreams.items())]
    lines.append(f'set ${MAINTENANCE_VARIABLE} "{"1" if maintenance else ""}";')
    return "\n".join(lines) + "\n"


def upstream(container: Container, port: int) -> str:
    """A container's address on the stack's network, as a route names it."""
    return f"{container.name}:{port}"


def live_upstreams(target: Target) -> dict[str, str]:
    """Each routed HTTP service's upstream: its container (the newest, when a swap left more than one)."""
    environment = target.environment
    proxy = environment.stack.proxy
    containers = project_containers(target.docker, environment.compose_project)
    return {
        service.service: upstream(containers[service.service], service.port)
        for service in environment.stack.http
        if proxy is not None and service.service in proxy.routes and service.service in containers
    }


def _archive(name: str, text: str) -> bytes:
    data = text.encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(data), 0o644, int(time.time())
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _read(container: Container, path: PurePosixPath) -> str:
    """The file as it is in the container ("" when it is not there yet); NotFound when its folder is not."""
    try:
        chunks, _ = container.get_archive(str(path))
    except docker.errors.NotFound:
        container.get_archive(str(path.parent))  # the folder must be there
        return ""
    with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as tar:
        member = tar.extractfile(path.name)
        return member.read().decode() if member is not None else ""


def routed_now(target: Target) -> dict[str, str]:
    """Where the routes file sends each routed service now (its upstream, host:port); {} without a routes file."""
    environment = target.environment
    proxy = environment.stack.proxy
    if proxy is None or not proxy.routes_file:
        return {}
    container = service_container(target.docker, environment.compose_project, proxy.service)
    if container is None:
        return {}
    try:
        text = _read(container, PurePosixPath(proxy.routes_file))
    except docker.errors.NotFound:
        return {}
    by_variable = {variable(service): service for service in proxy.routes}
    found = {}
    for line in text.splitlines():
        parts = line.removeprefix("set $").rstrip(";").split(None, 1)
        if line.startswith("set $") and len(parts) == 2 and parts[0] in by_variable:
            found[by_variable[parts[0]]] = parts[1].strip('"')
    return found


def write(target: Target, upstreams: Mapping[str, str] | None = None, *, maintenance: bool = False) -> None:
    """The proxy routes each service to ``upstreams`` (default: its live container), or answers maintenance; the
    configuration is tested before the graceful reload, so a rejected file leaves the proxy serving as it was."""
    environment = target.environment
    proxy = environment.stack.proxy
    if proxy is None or not proxy.routes_file:
        return
    container = service_container(target.docker, environment.compose_project, proxy.service)
    if container is None or container.status != "running":
        raise RoutesFailed(f"{proxy.service} is not running, so its routes cannot be switched")
    path = PurePosixPath(proxy.routes_file)
    text = routes_text(live_upstreams(target) if upstreams is None else upstreams, maintenance)
    try:
        before = _read(container, path)
        container.put_archive(str(path.parent), _archive(path.name, text))
    except docker.errors.NotFound:
        raise NoRoutesFolder(
            f"the proxy's routes file {path} cannot be written: {path.parent} is not a folder in {proxy.service}'s "
            "container; create it in the proxy's image and include the file in its configuration (README: Zero "
            "downtime), or set stack.proxy.routes_file = '' to have routed services replaced in place"
        ) from None
    except docker.errors.APIError as error:
        raise RoutesFailed(f"the proxy's routes file {path} cannot be written: {error.explanation}") from None
    for argv, what in ((proxy.config_test, "rejected"), (proxy.reload, "did not reload with")):
        if not argv:
            continue
        result = target.runner.exec(container, Command(argv, timeout=30), check=False)
        if result.returncode != 0:
            if what == "rejected":  # the file as it was, so that no later reload or restart takes the rejected one
                with contextlib.suppress(docker.errors.APIError):
                    container.put_archive(str(path.parent), _archive(path.name, before))
            words = result.output.strip().splitlines()[-1] if result.output.strip() else f"exit {result.returncode}"
            if result.returncode < 0:  # not the proxy's verdict: the command could not run in its container
                raise RoutesFailed(f"{proxy.service} could not take its routes file {path}: {words}")
            raise RoutesFailed(f"{proxy.service} {what} its routes file {path}: {words}")


def check_included(target: Target) -> None:
    """An Nginx proxy's whole configuration (``nginx -T``) includes the routes file; NoRoutesFolder when it does
    not: a file written but not included would leave every container of a service answering its route, and a swap
    would be a claim, not a switch. A proxy that is not Nginx (its config_test is not ``nginx ...``) is trusted."""
    environment = target.environment
    proxy = environment.stack.proxy
    if proxy is None or not proxy.routes_file or not proxy.config_test or proxy.config_test[0] != "nginx":
        return
    container = service_container(target.docker, environment.compose_project, proxy.service)
    if container is None or container.status != "running":
        raise RoutesFailed(f"{proxy.service} is not running, so its routes cannot be switched")
    result = target.runner.exec(container, Command(("nginx", "-T"), timeout=30), check=False)
    if result.returncode == 0 and f"# configuration file {proxy.routes_file}:" not in result.output:
        raise NoRoutesFolder(
            f"{proxy.service}'s configuration does not include deploycheck's routes file {proxy.routes_file} "
            "(nginx -T): include it after the routes' defaults (README: Zero downtime), or set "
            "stack.proxy.routes_file = '' to have routed services replaced in place"
        )


def reload(target: Target) -> str | None:
    """The proxy's graceful reload (its ``reload``: no connection dropped), so that no worker keeps the address of
    a container that is gone (nginx resolves a variable upstream once per ``valid`` period, per worker). Why it
    failed, or None."""
    environment = target.environment
    proxy = environment.stack.proxy
    if proxy is None or not proxy.reload:
        return None
    container = service_container(target.docker, environment.compose_project, proxy.service)
    if container is None or container.status != "running":
        return f"{proxy.service} is not running"
    result = target.runner.exec(container, Command(proxy.reload, timeout=30), check=False)
    if result.returncode != 0:
        words = result.output.strip().splitlines()[-1] if result.output.strip() else f"exit {result.returncode}"
        return f"`{' '.join(proxy.reload)}` in {proxy.service} failed: {words}"
    return None


def follow(target: Target) -> str | None:
    """The proxy takes the stack's live containers, once they were started, swapped or brought back: its routes
    file names them (maintenance off), or, for a proxy without one (or without its folder), a reload. Why it
    failed, or None."""
    proxy = target.environment.stack.proxy
    if proxy is None or not proxy.routes_file:
        return reload(target)
    try:
        write(target)
    except NoRoutesFolder:
        return reload(target)
    except RoutesFailed as error:
        return str(error)
    return None


def maintenance(target: Target) -> str:
    """The proxy answers its maintenance response (503 with Retry-After) on every route, before a restore of the
    database stops its nodes; ``follow`` ends it. What was done, for the actions ("" for a proxy without routes)."""
    try:
        write(target, maintenance=True)
    except NoRoutesFolder:
        return ""
    except RoutesFailed as error:
        return f"the proxy could not answer maintenance during the restore: {error}"
    proxy = target.environment.stack.proxy
    return (
        "" if proxy is None or not proxy.routes_file else "the proxy answered maintenance (503, Retry-After) meanwhile"
    )
