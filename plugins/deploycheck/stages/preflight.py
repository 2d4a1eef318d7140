"""Preflight: the engine, Compose v2, disk space, the stack that runs and the ports it needs. Changes nothing."""

from __future__ import annotations

from dataclasses import dataclass

import docker
import docker.errors

from deploycheck.engine import commands
from deploycheck.engine.commands import CommandFailed
from deploycheck.engine.compose import ComposeModel
from deploycheck.engine.containers import project_containers
from deploycheck.engine.target import EngineUnreachable, Target
from deploycheck.stages import StageFailed

MIN_FREE_DISK_GB = 2


def engine_ready(target: Target) -> None:
    """The engine answers, Compose v2 is there, and the disks the deploy writes to have room."""
    try:
        client = target.docker
        client.ping()
        docker_root = str(client.info().get("DockerRootDir", "/"))
    except EngineUnreachable as error:
        raise StageFailed(str(error)) from None
    except docker.errors.DockerException as error:
        raise StageFailed(
            f"the Docker engine of {target.where} does not answer ({error}): start it and run again (on this "
            "machine, scripts/setup.sh does)"
        ) from None
    try:
        version = target.runner.run(commands.compose_version()).stdout.strip()
    except CommandFailed as error:
        raise StageFailed(f"Compose v2 is missing ({error}): run scripts/setup.sh, which installs it") from None
    if not version.lstrip("v").startswith("2."):
        raise StageFailed(f"Compose v2 is needed, found {version}: run scripts/setup.sh, which installs it")
    for label, path, free_gb in target.disk_space(docker_root):
        if free_gb is not None and free_gb < MIN_FREE_DISK_GB:
            raise StageFailed(
                f"only {free_gb:.1f} GiB is free on the disk of {label} ({path}); free at least {MIN_FREE_DISK_GB} GiB"
            )


@dataclass(frozen=True)
class StackFound:
    """What runs of the environment's project before this run changes anything."""

    exists: bool
    published_ports: frozenset[int]


def running_stack(target: Target) -> StackFound:
    project = target.environment.compose_project
    containers = project_containers(target.docker, project)
    ports: set[int] = set()
    for container in containers.values():
        if container.status != "running":
            continue
        for bindings in (container.attrs.get("NetworkSettings", {}).get("Ports") or {}).values():
            ports.update(int(b["HostPort"]) for b in bindings or [] if b.get("HostPort"))
    return StackFound(bool(containers), frozenset(ports))


def stack_for_verification(target: Target) -> StackFound:
    """Verify-only needs a stack to verify."""
    found = running_stack(target)
    environment = target.environment
    if not found.exists:
        raise StageFailed(
            f"no stack of project {environment.compose_project} is running: deploy it first with "
            f"--deploy={environment.name}"
        )
    return found


def ports_free(target: Target, model: ComposeModel, found: StackFound) -> None:
    """Every port the stack publishes is free, or published by the stack itself."""
    environment = target.environment
    for where, port in model.host_ports().items():
        if port not in found.published_ports and not target.port_is_free(port):
            raise StageFailed(
                f"port {port} ({where}) on 127.0.0.1 of {target.where} is taken by another program: free it, or "
                "publish that service "
                f"on another port (environment '{environment.name}' in {environment.file.name}, its variables)"
            )
