"""Where a stack runs: the Docker API, the commands' environment, and the addresses its published ports have.

Everything that reaches the engine or the stack goes through a ``Target``: the stages, the checks, the rollback.
``LocalTarget`` is the engine of this machine (or the one ``docker_host`` names), with the stack's ports on
127.0.0.1. A test or a plugin can give another one through the ``pytest_deploycheck_make_target`` hook.
"""

from __future__ import annotations

import socket
import tempfile
import threading
from pathlib import Path
from typing import Protocol

import docker
import docker.errors
from docker import DockerClient

from deploycheck.engine.commands import Runner
from deploycheck.release import lock
from deploycheck.request.environment import Environment

# The deploy locks of the stacks this machine's engines run, whichever checkout or environment file deploys
# them: a lock is the engine's and the Compose project's (release/lock.py).
LOCK_ROOT = Path(tempfile.gettempdir()) / "deploycheck-locks"


class EngineUnreachable(Exception):
    """The Docker engine does not answer; the message says how to fix it."""


class Target(Protocol):
    environment: Environment
    runner: Runner

    @property
    def docker(self) -> DockerClient:
        """The Docker API client of the run (one, shared; raises EngineUnreachable)."""
        ...

    def new_docker_client(self) -> DockerClient:
        """A client of its own, for a thread that works beside the others (the caller closes it)."""
        ...

    def host_address(self, port: int) -> tuple[str, int]:
        """Where this machine reaches a port the stack publishes on its host."""
        ...

    def port_is_free(self, port: int) -> bool:
        """Whether the stack's host could publish ``port`` on 127.0.0.1 (nothing listens there)."""
        ...

    def deploy_lock(self) -> lock.HeldLock:
        """The stack's deploy lock (the engine's and the Compose project's), held by this process until released
        or its end; raises ``lock.LockHeld`` naming the holder, or ``lock.LockUnusable``."""
        ...

    def close(self) -> None: ...


class LocalTarget:
    """The engine that ``docker_host`` names ("" = DOCKER_HOST or the default socket), ports on 127.0.0.1."""

    def __init__(self, environment: Environment) -> None:
        self.environment = environment
        env = {"DOCKER_HOST": environment.docker_host} if environment.docker_host else {}
        self.runner = Runner(env, environment.all_secrets)
        self._docker: DockerClient | None = None
        self._lock = threading.Lock()

    def new_docker_client(self) -> DockerClient:
        host = self.environment.docker_host
        try:
            return docker.DockerClient(base_url=host) if host else docker.from_env()
        except docker.errors.DockerException as error:
            raise EngineUnreachable(
                f"the Docker engine does not answer ({error}): start it (scripts/setup.sh does) and run again"
            ) from None

    @property
    def docker(self) -> DockerClient:
        with self._lock:
            if self._docker is None:
                self._docker = self.new_docker_client()
            return self._docker

    def host_address(self, port: int) -> tuple[str, int]:
        return ("127.0.0.1", port)

    def deploy_lock(self) -> lock.HeldLock:
        engine = str(self.docker.info().get("ID", "local"))
        return lock.acquire(lock.lock_path(LOCK_ROOT, engine, self.environment.compose_project))

    def port_is_free(self, port: int) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                return False
        return True

    def close(self) -> None:
        if self._docker is not None:
            self._docker.close()
            self._docker = None
