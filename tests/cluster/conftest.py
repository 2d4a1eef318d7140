"""Real containers for the Citus cluster tests: the image named by DEPLOYCHECK_CITUS_IMAGE, else the one the
environments' Citus resolves to (tests/citus.py: real Citus, official or built from its source), and one cluster per
session of a coordinator and two workers on a private Docker network, the coordinator published on 127.0.0.1 only.

Every Docker object made here is named dccluster-<pid>-... and removed by a finalizer, even when set-up fails.
Containers get `--dns 127.0.0.1 --dns-opt ndots:1`: Docker's embedded DNS then answers the single-label names
of stopped containers at once (no address) instead of forwarding them, so no lookup leaves the machine and a
stopped worker fails fast.
"""

from __future__ import annotations

import io
import os
import secrets
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import docker
import psycopg
import pytest

from deploycheck.engine import citus
from tests.citus import resolved_citus_image

TEST_LABEL = "org.deploycheck.cluster-test"
IMAGE_ENV = "DEPLOYCHECK_CITUS_IMAGE"
HEALTH_TIMEOUT = 120.0
POLL_INTERVAL = 0.25
DB_USER = "deploycheck"
DB_NAME = "deploycheck"


@pytest.fixture(scope="session")
def docker_client() -> Iterator[Any]:
    client = docker.from_env()
    yield client
    client.close()


@pytest.fixture(scope="session")
def citus_image(docker_client: Any) -> str:
    """The Citus image the cluster runs: DEPLOYCHECK_CITUS_IMAGE, which must exist locally, else the one the
    environments' Citus resolves to on this engine. One that cannot be had stops the whole session (one
    sentence, exit status 4) instead of every test failing alike."""
    ref = os.environ.get(IMAGE_ENV, "").strip()
    if not ref:
        try:
            return resolved_citus_image()
        except citus.CitusUnavailable as error:
            pytest.exit(str(error).splitlines()[0], returncode=pytest.ExitCode.USAGE_ERROR)
    try:
        docker_client.images.get(ref)
    except docker.errors.ImageNotFound:
        pytest.exit(
            f"{IMAGE_ENV} names {ref}, which is not an image on this Docker engine.",
            returncode=pytest.ExitCode.USAGE_ERROR,
        )
    return ref


def unresolvable_node_error(name: str) -> str:
    """How real Citus words a connection to a node whose name does not resolve (a stopped container's, here:
    Docker's DNS drops it), up to the resolver's own reason: Citus's sentence around libpq's message."""
    return (
        f"connection to the remote node {DB_USER}@{name}:5432 failed with the following error: "
        f'could not translate host name "{name}" to address: '
    )


def container_diagnostics(container: Any) -> str:
    """The container's last log lines and health log, for failure messages."""
    try:
        container.reload()
        logs = container.logs(tail=60).decode(errors="replace")
        health = container.attrs["State"].get("Health", {}).get("Log", [])[-3:]
    except docker.errors.APIError as error:
        return f"(no diagnostics: {error})"
    probes = "\n".join(f"  exit {h.get('ExitCode')}: {h.get('Output', '').strip()}" for h in health)
    return f"--- logs of {container.name} ---\n{logs}\n--- last health probes ---\n{probes}"


def wait_healthy(container: Any, timeout: float = HEALTH_TIMEOUT) -> None:
    """Poll the container's health state until it is healthy; fail at once if it exits. Unhealthy is not the end:
    the image's healthcheck gives initdb 6 s + 3 probes of 4 s, which a loaded machine's first start outlasts."""
    deadline = time.monotonic() + timeout
    while True:
        container.reload()
        state = container.attrs["State"]
        health = state.get("Health", {}).get("Status")
        if health == "healthy":
            return
        if state.get("Status") in ("exited", "dead"):
            raise AssertionError(
                f"{container.name} is {state.get('Status')}/{health}\n{container_diagnostics(container)}"
            )
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{container.name} not healthy after {timeout:.0f} s\n{container_diagnostics(container)}"
            )
        time.sleep(POLL_INTERVAL)


@dataclass
class DockerResources:
    """Docker objects made by the tests, all named with one dccluster-<pid> prefix, removed by cleanup()."""

    client: Any
    prefix: str = field(default_factory=lambda: f"dccluster-{os.getpid()}")
    containers: list[Any] = field(default_factory=list)
    volumes: list[Any] = field(default_factory=list)
    networks: list[Any] = field(default_factory=list)

    @property
    def labels(self) -> dict[str, str]:
        return {TEST_LABEL: self.prefix}

    def network(self, suffix: str) -> Any:
        network = self.client.networks.create(f"{self.prefix}-{suffix}", driver="bridge", labels=self.labels)
        self.networks.append(network)
        return network

    def volume(self, suffix: str) -> Any:
        volume = self.client.volumes.create(name=f"{self.prefix}-{suffix}", labels=self.labels)
        self.volumes.append(volume)
        return volume

    def create_postgres(
        self, image: str, suffix: str, network: Any, env: dict[str, str], *, publish: bool = False
    ) -> Any:
        """A container of the image, data in its own named volume, reachable as its name on the network."""
        name = f"{self.prefix}-{suffix}"
        volume = self.volume(f"{suffix}-data")
        container = self.client.containers.create(
            image,
            name=name,
            hostname=name,
            environment=env,
            labels=self.labels,
            network=network.name,
            volumes={volume.name: {"bind": "/var/lib/postgresql/data", "mode": "rw"}},
            ports={"5432/tcp": ("127.0.0.1", None)} if publish else {},
            dns=["127.0.0.1"],
            dns_opt=["ndots:1"],
        )
        self.containers.append(container)
        return container

    def cleanup(self) -> None:
        errors: list[str] = []
        for container in reversed(self.containers):
            try:
                container.remove(force=True, v=True)  # and its anonymous volumes (the image's VOLUME)
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as error:
                errors.append(f"container {container.name}: {error}")
        for volume in self.volumes:
            try:
                volume.remove(force=True)
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as error:
                errors.append(f"volume {volume.name}: {error}")
        for network in self.networks:
            try:
                network.remove()
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as error:
                errors.append(f"network {network.name}: {error}")
        if errors:
            raise AssertionError("cleanup left Docker objects behind: " + "; ".join(errors))


@pytest.fixture(scope="session")
def docker_resources(docker_client: Any, request: pytest.FixtureRequest) -> DockerResources:
    resources = DockerResources(docker_client)
    request.addfinalizer(resources.cleanup)
    return resources


def published_port(container: Any) -> int:
    container.reload()
    bindings = container.attrs["NetworkSettings"]["Ports"]["5432/tcp"]
    host_ip, host_port = bindings[0]["HostIp"], int(bindings[0]["HostPort"])
    assert host_ip == "127.0.0.1", f"port published on {host_ip}"
    return host_port


def psql(container: Any, sql: str, *, user: str = DB_USER, dbname: str = DB_NAME) -> str:
    """Run SQL inside a container with its own psql (local socket), return the unaligned, tuples-only output."""
    code, (out, err) = container.exec_run(
        ["psql", "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-U", user, "-d", dbname, "-c", sql], demux=True
    )
    stdout = (out or b"").decode().strip()
    if code != 0:
        raise AssertionError(f"psql on {container.name} failed ({code}): {(err or b'').decode().strip()}")
    return stdout


def put_files(container: Any, directory: str, files: dict[str, tuple[str, int]]) -> None:
    """Copy files (name -> (content, mode)) into a created container, owned by root and world-readable."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, (content, mode) in files.items():
            data = content.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = mode
            archive.addfile(info, io.BytesIO(data))
    assert container.put_archive(directory, buffer.getvalue())


@dataclass
class Node:
    name: str
    container: Any

    def psql(self, sql: str) -> str:
        return psql(self.container, sql)


@dataclass
class Cluster:
    """A coordinator and two workers, registered in the coordinator's metadata."""

    image: str
    coordinator: Node
    workers: list[Node]
    port: int
    network: Any
    password: str = field(repr=False)
    env: dict[str, str] = field(repr=False)  # the nodes' environment, for another node of the same cluster

    @property
    def nodes(self) -> list[Node]:
        return [self.coordinator, *self.workers]

    def connect(
        self,
        *,
        password: str | None = None,
        notices: list[str] | None = None,
        dbname: str = DB_NAME,
        port: int | None = None,
    ) -> psycopg.Connection[Any]:
        """A connection to the coordinator (or to another published node of the cluster: its host port)."""
        conn = psycopg.connect(
            host="127.0.0.1",
            port=self.port if port is None else port,
            user=DB_USER,
            dbname=dbname,
            password=self.password if password is None else password,
            connect_timeout=10,
            autocommit=True,
        )
        if notices is not None:
            conn.add_notice_handler(lambda diag: notices.append(f"{diag.severity}: {diag.message_primary}"))
        return conn

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    def stop(self, node: Node) -> None:
        node.container.stop(timeout=20)
        node.container.reload()
        assert node.container.status == "exited"

    def start(self, node: Node) -> None:
        node.container.start()
        wait_healthy(node.container)


@pytest.fixture(scope="session")
def cluster(citus_image: str, docker_resources: DockerResources) -> Cluster:
    password = secrets.token_urlsafe(18)
    env = {
        "POSTGRES_USER": DB_USER,
        "POSTGRES_PASSWORD": password,
        "POSTGRES_DB": DB_NAME,
        # as citusdata/docker's compose file: the coordinator authenticates to workers with it
        "PGPASSWORD": password,
    }
    network = docker_resources.network("net")
    coordinator = docker_resources.create_postgres(citus_image, "coord", network, env, publish=True)
    workers = [docker_resources.create_postgres(citus_image, f"worker{i}", network, env) for i in (1, 2)]
    for container in (coordinator, *workers):
        container.start()
    for container in (coordinator, *workers):
        wait_healthy(container)
    result = Cluster(
        image=citus_image,
        coordinator=Node(coordinator.name, coordinator),
        workers=[Node(w.name, w) for w in workers],
        port=published_port(coordinator),
        network=network,
        password=password,
        env=env,
    )
    with result.connect() as conn:
        conn.execute("SELECT citus_set_coordinator_host(%s, 5432)", (result.coordinator.name,))
        for worker in result.workers:
            conn.execute("SELECT citus_add_node(%s, 5432)", (worker.name,))
    return result


@pytest.fixture
def conn(cluster: Cluster) -> Iterator[psycopg.Connection[Any]]:
    with cluster.connect() as connection:
        yield connection


@pytest.fixture
def notices(cluster: Cluster) -> Iterator[tuple[psycopg.Connection[Any], list[str]]]:
    """A connection whose notices and warnings are collected."""
    collected: list[str] = []
    with cluster.connect(notices=collected) as connection:
        yield connection, collected


@pytest.fixture
def make_table(conn: psycopg.Connection[Any]) -> Iterator[Callable[[str], str]]:
    """Names tables for a test and drops the ones still there afterwards."""
    made: list[str] = []

    def make(name: str) -> str:
        made.append(name)
        return name

    yield make
    for name in reversed(made):
        conn.execute(f"DROP TABLE IF EXISTS {name} CASCADE")
