"""A fake engine at the target's boundary, for unit tests of the real plugin and its real stage wiring.

``FakeTarget`` stands where ``LocalTarget`` stands: its Docker API client answers from a list of fake containers
and images, and its runner records every command it is given (``commands.jsonl`` in the working folder, one
argv per line) and answers as the scenario (``$FAKE_SCENARIO``) says. Nothing reaches a real engine.

Scenarios (comma-separated):
- ``engine-down``: the engine does not answer.
- ``stack-running``: the project's five containers run, healthy (a stack to verify).
- ``up-fails``: ``docker compose up`` exits 1.
- ``up-interrupted``: ``docker compose up`` is interrupted (Ctrl+C while it runs).
- ``interrupt-lineless``: with ``up-interrupted``, the interrupt lands on an instruction that has no line number
  (as a signal's can): its traceback ends in an entry whose ``tb_lineno`` is None.
- ``worker-stopped``: with ``stack-running``, worker-2's container has exited.
- ``tenant-a-running``: the five containers of the project ``unit-store-a`` (tenant ``a`` of template ``store``) run;
  ``unit-store-b`` has only a volume left (torn down, its volumes kept).
- ``no-http-client``: a container has neither curl nor wget (an HTTP request from inside it is not tried).
- ``route-fails``: in a diagnosis, the readiness request through the proxy's route answers 502.
- ``volumes``: the project has a data volume (a stack torn down with its volumes kept, or running).

The fake engine runs no database: a backup, which connects to it, fails.

``FakeReach`` stands for this machine's connections to the stack's services in a diagnosis (the database, the
HTTP services): every running one answers.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import types
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import docker.errors

from deploycheck.engine.commands import Command, CommandFailed, Result, Runner
from deploycheck.engine.containers import PROJECT_LABEL, SERVICE_LABEL
from deploycheck.engine.target import Builder, LocalState, Shipped
from deploycheck.release import lock
from deploycheck.request.environment import Environment

COMMANDS_LOG = "commands.jsonl"
FAKE_ENGINE_ID = "FAKE:ENGINE"


def lineless_traceback() -> types.TracebackType:
    """A traceback entry at an instruction of this function's that has no line number: the clean-up of its
    ``with`` block, which Python 3.11+ compiles without one."""
    with contextlib.nullcontext():
        frame = sys._getframe()
    offset = next(start for start, _, line in frame.f_code.co_lines() if line is None)
    entry = types.TracebackType(None, frame, offset, -1)  # -1: the line is looked up from the offset
    assert entry.tb_lineno is None, "this Python numbers every instruction"
    return entry


class FakeImage:
    def __init__(self, reference: str) -> None:
        self.id = f"sha256:{abs(hash(reference)):064x}"[:71]
        self.labels: dict[str, str] = {}

    def tag(self, repository: str, tag: str | None = None) -> bool:
        return True


class FakeImages:
    def get(self, reference: str) -> FakeImage:
        return FakeImage(reference)


class FakeContainer:
    def __init__(self, project: str, service: str, port: int | None, host_port: int = 0) -> None:
        self.name = f"{project}-{service}-1"
        self.id = f"id-{self.name}"
        self.labels = {PROJECT_LABEL: project, SERVICE_LABEL: service}
        self.status = "running"
        ports = {f"{port}/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(host_port)}]} if port else {}
        self.attrs: dict[str, Any] = {
            "State": {"Status": "running", "Health": {"Status": "healthy", "Log": []}, "ExitCode": 0},
            "RestartCount": 0,
            "NetworkSettings": {"Ports": ports},
            "Config": {"Image": f"{service}-image", "Healthcheck": {"Test": ["NONE"]}},
            "Mounts": [],
            "Image": FakeImage(f"unit/{service}:1").id,
        }
        self.image = FakeImage(service)

    def reload(self) -> None:
        return None

    def logs(self, **_: object) -> bytes:
        return b"fake log line\n"

    def exec_run(self, command: Sequence[str], **_: object) -> tuple[int, tuple[bytes, bytes]]:
        return 0, (b"", b"")

    def stop(self) -> None:
        self.status = "exited"
        self.attrs["State"] = {"Status": "exited", "ExitCode": 0}


def _labelled(container: FakeContainer, labels: list[str]) -> bool:
    return all(
        "=" in label and container.labels.get(label.split("=", 1)[0]) == label.split("=", 1)[1] for label in labels
    )


class FakeContainers:
    def __init__(self) -> None:
        self.running: list[FakeContainer] = []

    def list(
        self, all: bool = False, filters: dict[str, Any] | None = None, ignore_removed: bool = False
    ) -> list[FakeContainer]:
        wanted = (filters or {}).get("label", [])
        labels = [wanted] if isinstance(wanted, str) else list(wanted)  # the engine's "label" filter: all must match
        return [c for c in self.running if _labelled(c, labels)]

    def get(self, container_id: str) -> FakeContainer:
        for container in self.running:
            if container.id == container_id:
                return container
        raise docker.errors.NotFound(container_id)


class FakeVolume:
    def __init__(self, volumes: FakeVolumes, project: str, name: str) -> None:
        self.volumes = volumes
        self.name = f"{project}_{name}"
        self.labels = {PROJECT_LABEL: project}

    def remove(self, force: bool = False) -> None:
        self.volumes.kept.remove(self)


class FakeVolumes:
    def __init__(self) -> None:
        self.kept: list[FakeVolume] = []

    def add(self, project: str, name: str) -> None:
        self.kept.append(FakeVolume(self, project, name))

    def list(self, filters: dict[str, Any] | None = None) -> list[FakeVolume]:
        label = (filters or {}).get("label", "")
        return [v for v in self.kept if not label or f"{PROJECT_LABEL}={v.labels[PROJECT_LABEL]}" == label]


class FakeEvents:
    def __iter__(self) -> Iterator[dict[str, str]]:
        return iter(())

    def close(self) -> None:
        return None


class FakeDocker:
    def __init__(self, down: bool) -> None:
        self.down = down
        self.containers = FakeContainers()
        self.images = FakeImages()
        self.volumes = FakeVolumes()

    def ping(self) -> bool:
        if self.down:
            raise docker.errors.DockerException("Error while fetching server API version: connection refused")
        return True

    def info(self) -> dict[str, str]:
        return {"DockerRootDir": "/", "ID": FAKE_ENGINE_ID}

    def events(self, **_: object) -> FakeEvents:
        return FakeEvents()

    def close(self) -> None:
        return None


class FakeRunner(Runner):
    """Records each command (its argv) and answers as the scenario says, without running anything."""

    def __init__(self, environment: Environment, docker_client: FakeDocker, scenario: set[str], log: Path) -> None:
        super().__init__({}, environment.all_secrets)
        self.environment = environment
        self.docker_client = docker_client
        self.scenario = scenario
        self.log = log

    def _answer(self, command: Command, stdout: str = "", code: int = 0, check: bool = True) -> Result:
        result = Result(command, code, self._masked(command, stdout), "fake: failed on purpose" if code else "", stdout)
        return self._check(result, check)

    def run(self, command: Command, *, check: bool = True, cwd: Path | None = None, input: str | None = None) -> Result:
        with self.log.open("a") as handle:
            handle.write(json.dumps(list(command.argv)) + "\n")
        argv = command.argv
        if argv[:3] == ("docker", "compose", "version"):
            return self._answer(command, "2.40.3\n")
        if argv[0] == "git":
            raise CommandFailed(command, "exited with 128: not a git repository")
        if "config" in argv:
            return self._answer(command, json.dumps(self.model()))
        if "up" in argv and "--dry-run" not in argv:
            if "up-interrupted" in self.scenario:
                interrupt = KeyboardInterrupt("fake: Ctrl+C while compose up runs")
                if "interrupt-lineless" in self.scenario:
                    raise interrupt.with_traceback(lineless_traceback())
                raise interrupt
            if "up-fails" in self.scenario:
                return self._answer(command, code=1, check=check)
        if "down" in argv:
            self.docker_client.containers.running.clear()
        return self._answer(command)

    def exec(self, container: Any, command: Command, *, check: bool = True) -> Result:
        if command.argv[:2] == ("sh", "-c") and "curl" in command.argv[2]:  # an HTTP request from inside: answered
            if "no-http-client" in self.scenario:
                return self._answer(command, "neither curl nor wget in the container\n", 127, check)
            return self._answer(command, "200")
        return self._answer(command)

    def model(self) -> dict[str, Any]:
        """What ``docker compose config --format json`` says of the environment's stack: its contract's services,
        the database and the proxy publishing their ports on 127.0.0.1."""
        stack = self.environment.stack
        published = {stack.database.service: stack.database.port}
        if stack.proxy is not None:
            published[stack.proxy.service] = stack.proxy.port
        services: dict[str, Any] = {}
        for index, name in enumerate(stack.services):
            service: dict[str, Any] = {"image": f"unit/{name}:1"}
            if name in published:
                port = {
                    "mode": "ingress",
                    "host_ip": "127.0.0.1",
                    "target": published[name],
                    "published": str(47000 + index),
                }
                service["ports"] = [port]
            services[name] = service
        return {"name": self.environment.compose_project, "services": services}


class FakeTarget:
    def __init__(self, environment: Environment, scenario: str, log: Path) -> None:
        wanted = {s for s in scenario.split(",") if s}
        self.environment = environment
        self._docker = FakeDocker(down="engine-down" in wanted)
        self.runner = FakeRunner(environment, self._docker, wanted, log)
        if "volumes" in wanted:
            self._docker.volumes.add(environment.compose_project, "coordinator-data")
        if "tenant-a-running" in wanted:
            for service in environment.stack.services:
                self._docker.containers.running.append(FakeContainer("unit-store-a", service, None))
            self._docker.volumes.add("unit-store-b", "coordinator-data")
        if "stack-running" in wanted:
            stack = environment.stack
            ports = {stack.database.service: stack.database.port, **{h.service: h.port for h in stack.http}}
            if stack.proxy is not None:
                ports[stack.proxy.service] = stack.proxy.port
            for index, service in enumerate(stack.services):
                container = FakeContainer(environment.compose_project, service, ports.get(service), 47100 + index)
                if service == "worker-2" and "worker-stopped" in wanted:
                    container.stop()
                self._docker.containers.running.append(container)

    where = "this machine"
    state = LocalState()

    @property
    def docker(self) -> Any:
        return self._docker

    @property
    def builder(self) -> Builder:
        return Builder(self._docker, self.runner)

    def ship(self, references: Sequence[str], say: Callable[[str], None]) -> Shipped:
        return Shipped(0, 0, 0.0, "none needed")

    def disk_space(self, docker_root: str) -> list[tuple[str, str, float | None]]:
        return [("the state folder", str(self.environment.state_dir), 100.0)]

    def new_docker_client(self) -> Any:
        return self._docker

    def host_address(self, port: int) -> tuple[str, int]:
        return ("127.0.0.1", port)

    def port_is_free(self, port: int) -> bool:
        return True

    def deploy_lock(self) -> lock.HeldLock:
        """A real lock, in the project's own folder (tests look for it there)."""
        root = self.environment.state_dir.parent
        return lock.acquire(lock.lock_path(root, FAKE_ENGINE_ID, self.environment.compose_project))

    def close(self) -> None:
        return None


def fake_target(environment: Environment) -> FakeTarget:
    return FakeTarget(environment, os.environ.get("FAKE_SCENARIO", ""), Path.cwd() / COMMANDS_LOG)


FAKE_PROXY_PORT = 47104  # the fake stack publishes its services on 47100 + their index; nginx is the fifth


class FakeReach:
    """This machine's connections to the fake stack, in a diagnosis: the database answers, and each worker whose
    container runs; every HTTP service answers its readiness request."""

    def database(self, target: Any) -> tuple[str, list[tuple[str, int, bool, str]]]:
        containers = {c.labels[SERVICE_LABEL]: c for c in target.docker.containers.running}
        workers = target.environment.stack.database.worker_services
        nodes = [(w, 5432, containers[w].status == "running", "fake") for w in workers if w in containers]
        return "127.0.0.1:47100", nodes

    def http(self, url: str, status: int) -> tuple[bool, str]:
        through_proxy = url.startswith(f"http://127.0.0.1:{FAKE_PROXY_PORT}/")
        if through_proxy and "route-fails" in os.environ.get("FAKE_SCENARIO", "").split(","):
            return False, "HTTP 502"
        return True, f"HTTP {status}"
