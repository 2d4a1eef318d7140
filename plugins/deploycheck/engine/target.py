"""Where a stack runs: the Docker API, the commands' environment, the addresses its published ports have, where
its images are built, where its deploy lock and state live.

Everything that reaches the engine or the stack goes through a ``Target``: the stages, the checks, the rollback.
``LocalTarget`` is the engine of this machine (or the one a unix:// or tcp:// ``docker_host`` names), with the
stack's ports on 127.0.0.1 and its state in the environment's state folder; ``engine.server.SSHTarget`` is a
server reached over SSH (``docker_host = "ssh://..."``). ``make_target`` chooses; a test or a plugin can give
another one through the ``pytest_deploycheck_make_target`` hook.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import docker
import docker.errors
from docker import DockerClient

from deploycheck.engine.commands import Runner
from deploycheck.release import lock
from deploycheck.request.environment import Environment
from deploycheck.request.tenants import port_is_free_here

# The deploy locks of the stacks this machine's engines run, whichever checkout or environment file deploys
# them: a lock is the engine's and the Compose project's (release/lock.py).
LOCK_ROOT = Path(tempfile.gettempdir()) / "deploycheck-locks"


class EngineUnreachable(Exception):
    """The Docker engine does not answer; the message says how to fix it."""


@dataclass(frozen=True)
class Builder:
    """The engine where a release's images are built, pulled and resolved (and the runner of its commands)."""

    docker: DockerClient
    runner: Runner


@dataclass(frozen=True)
class Shipped:
    """What it took to put a release's images on the engine that runs it."""

    images: int
    bytes: int
    seconds: float
    via: str  # "none needed", "ssh", "registry HOST:PORT"


class DeployLock(Protocol):
    def release(self) -> None: ...


class State(Protocol):
    """The stack's state (ledger, configurations, backups) where the target keeps it; the environment's state
    folder is where the run reads and writes it (``pull`` fills it, ``push`` writes it back)."""

    def pull(self) -> None: ...

    def push(self, backup: Path | None = None) -> None: ...

    def fetch_backup(self, name: str) -> bool: ...

    def end(self) -> None: ...


class LocalState:
    """A local engine's stack keeps its state in the environment's state folder itself: nothing to carry."""

    def pull(self) -> None:
        pass

    def push(self, backup: Path | None = None) -> None:
        pass

    def fetch_backup(self, name: str) -> bool:
        return False  # the backups are in the state folder already

    def end(self) -> None:
        pass


class Target(Protocol):
    environment: Environment
    runner: Runner
    where: str  # the stack's host in words: "this machine", "the server ssh://..."
    state: State

    @property
    def builder(self) -> Builder:
        """Where the release's images are built and had (then ``ship``ped to the engine that runs them)."""
        ...

    def ship(self, references: Sequence[str], say: Callable[[str], None]) -> Shipped:
        """Make the images ``references`` (on the builder's engine) present on the engine that runs the stack."""
        ...

    def disk_space(self, docker_root: str) -> list[tuple[str, str, float | None]]:
        """(what, where, free GiB or None when unknown) of the disks the deploy writes to."""
        ...

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

    def deploy_lock(self) -> DeployLock:
        """The stack's deploy lock (the engine's and the Compose project's), held by this process until released
        or its end; raises ``lock.LockHeld`` naming the holder, or ``lock.LockUnusable``."""
        ...

    def close(self) -> None: ...


def docker_client(base_url: str = "") -> DockerClient:
    """A Docker API client of ``base_url`` ("" = DOCKER_HOST or the default socket) that reads no proxy settings
    from the environment on each request: the engine is reached on its socket or through deploycheck's own SSH
    connection, and a client working on a background thread would iterate ``os.environ`` (requests' proxy
    lookup) while pytest's main thread sets and removes PYTEST_CURRENT_TEST: ``KeyError: 'PYTEST_CURRENT_TEST'``
    failed a check over SSH."""
    client = docker.DockerClient(base_url=base_url) if base_url else docker.from_env()
    client.api.trust_env = False
    return client


class LocalTarget:
    """The engine that ``docker_host`` names ("" = DOCKER_HOST or the default socket), ports on 127.0.0.1."""

    def __init__(self, environment: Environment) -> None:
        self.environment = environment
        env = {"DOCKER_HOST": environment.docker_host} if environment.docker_host else {}
        self.runner = Runner(env, environment.all_secrets)
        self.where = "this machine"
        self.state: State = LocalState()
        self._docker: DockerClient | None = None
        self._lock = threading.Lock()

    @property
    def builder(self) -> Builder:
        return Builder(self.docker, self.runner)

    def ship(self, references: Sequence[str], say: Callable[[str], None]) -> Shipped:
        return Shipped(0, 0, 0.0, "none needed")  # built where they run

    def disk_space(self, docker_root: str) -> list[tuple[str, str, float | None]]:
        places = [("the state folder", self.environment.state_dir.parent.parent), ("Docker", Path(docker_root))]
        return [(label, str(path), _free_gib(path)) for label, path in places]

    def new_docker_client(self) -> DockerClient:
        host = self.environment.docker_host
        try:
            return docker_client(host)
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

    def deploy_lock(self) -> DeployLock:
        engine = str(self.docker.info().get("ID", "local"))
        return lock.acquire(lock.lock_path(LOCK_ROOT, engine, self.environment.compose_project))

    def port_is_free(self, port: int) -> bool:
        return port_is_free_here(port)

    def close(self) -> None:
        if self._docker is not None:
            self._docker.close()
            self._docker = None


def _free_gib(path: Path) -> float | None:
    while not path.exists() and path != path.parent:  # a state folder not made yet: its disk
        path = path.parent
    try:
        return shutil.disk_usage(path).free / 2**30
    except OSError:
        return None


def make_target(environment: Environment) -> Target:
    """The target ``docker_host`` names: a server over SSH, or an engine this machine reaches."""
    if environment.on_server:
        from deploycheck.engine.server import SSHTarget  # the SSH transport only where it is used

        return SSHTarget(environment)
    return LocalTarget(environment)
