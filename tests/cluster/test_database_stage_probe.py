"""The database stage's probe (`citus_problem_through`) on a real cluster: citus must be LOADED on every node, not
merely installed. The coordinator runs `SELECT citus_version()`, the workers are asked through the coordinator
with master_run_on_worker. None when all answer; the node that answers with an error (Citus's words in the
reason); unreachable for a worker the coordinator cannot connect to ("failed to connect to ...").

A node whose server runs without citus in shared_preload_libraries is one more node of the cluster (the spare,
not registered: the probe is given the workers' names, as the stage is before they are registered): made like
the others, citus's extension created by the image's init, then the server started without the library."""

from __future__ import annotations

import secrets as random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from deploycheck.request.secrets import Secret
from deploycheck.stages.database import NodeProblem, citus_problem_through

from .conftest import Cluster, DockerResources, Node, psql, published_port, put_files, wait_healthy

pytestmark = pytest.mark.e2e

Probe = Callable[[list[str]], NodeProblem | None]

NOT_PRELOADED = "Citus can only be loaded via shared_preload_libraries"  # citus's _PG_init, shared_library_init.c
NO_FUNCTION = "function citus_version() does not exist"  # a database without the citus extension
# Runs last at the spare's first start (after 001-create-citus-extension.sql): the server the entrypoint then
# starts reads postgresql.conf without citus. The same as `postgres -c shared_preload_libraries=`, which cannot be
# the command from the start: the entrypoint's init server gets the same options, and CREATE EXTENSION fails.
UNPRELOAD = 'sed -i "s/^shared_preload_libraries *= *\'citus\'/#&/" "$PGDATA/postgresql.conf"\n'


@dataclass
class Spare:
    node: Node

    @property
    def name(self) -> str:
        return self.node.name

    @property
    def port(self) -> int:
        """Its port published on 127.0.0.1 (a new one after each start)."""
        return published_port(self.node.container)


@pytest.fixture(scope="module")
def spare(cluster: Cluster, docker_resources: DockerResources) -> Iterator[Spare]:
    """A node on the cluster's network whose server runs without citus in shared_preload_libraries."""
    container = docker_resources.create_postgres(cluster.image, "nocitus", cluster.network, cluster.env, publish=True)
    put_files(container, "/docker-entrypoint-initdb.d", {"999-citus-not-preloaded.sh": (UNPRELOAD, 0o755)})
    container.start()
    wait_healthy(container)
    node = Node(container.name, container)
    # the premise: citus installed in the database, its library not preloaded
    assert node.psql("SELECT extversion FROM pg_extension WHERE extname = 'citus'") != ""
    assert node.psql("SHOW shared_preload_libraries") == ""
    yield Spare(node)
    container.remove(force=True)


@pytest.fixture
def running_spare(spare: Spare) -> Spare:
    spare.node.container.reload()
    if spare.node.container.status != "running":
        spare.node.container.start()
        wait_healthy(spare.node.container)
    return spare


def probe_through(cluster: Cluster, conn: psycopg.Connection[Any]) -> Probe:
    return lambda workers: citus_problem_through(conn, "coordinator", workers, [Secret(cluster.password, "test")])


@pytest.fixture
def probe(cluster: Cluster, conn: psycopg.Connection[Any]) -> Probe:
    """The probe through the cluster's coordinator, in POSTGRES_DB."""
    return probe_through(cluster, conn)


def test_every_node_with_citus_loaded_is_no_problem(cluster: Cluster, probe: Probe) -> None:
    assert probe([w.name for w in cluster.workers]) is None


def test_a_worker_without_citus_preloaded_is_named(cluster: Cluster, probe: Probe, running_spare: Spare) -> None:
    first, second = cluster.workers
    problem = probe([first.name, running_spare.name, second.name])
    assert problem is not None
    assert (problem.service, problem.unreachable) == (running_spare.name, False)
    assert NOT_PRELOADED in problem.reason


def test_a_coordinator_without_citus_preloaded_is_named_before_any_worker(
    cluster: Cluster, running_spare: Spare
) -> None:
    missing = f"{cluster.coordinator.name}-no-such-worker"
    with cluster.connect(port=running_spare.port) as conn:
        problem = probe_through(cluster, conn)([cluster.workers[0].name, missing])
    assert problem is not None
    assert (problem.service, problem.unreachable) == ("coordinator", False)
    assert NOT_PRELOADED in problem.reason


def test_a_database_without_the_extension_is_named_node_by_node(cluster: Cluster) -> None:
    """Citus preloaded everywhere, but the extension created in another database only: the coordinator first,
    then the worker still without it, then none."""
    first, second = cluster.workers
    name = f"probe_{random.token_hex(4)}"
    try:
        for node in cluster.nodes:
            node.psql(f"CREATE DATABASE {name}")
        psql(first.container, "CREATE EXTENSION citus", dbname=name)
        with cluster.connect(dbname=name) as conn:
            probe = probe_through(cluster, conn)
            workers = [first.name, second.name]
            problem = probe(workers)
            assert problem is not None
            assert (problem.service, problem.unreachable) == ("coordinator", False)
            assert NO_FUNCTION in problem.reason
            psql(cluster.coordinator.container, "CREATE EXTENSION citus", dbname=name)
            problem = probe(workers)
            assert problem is not None
            assert (problem.service, problem.unreachable) == (second.name, False)
            assert NO_FUNCTION in problem.reason
            psql(second.container, "CREATE EXTENSION citus", dbname=name)
            assert probe(workers) is None
    finally:
        for node in cluster.nodes:
            node.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_a_worker_whose_name_does_not_resolve_is_unreachable(cluster: Cluster, probe: Probe) -> None:
    """Unreachable is what the stage retries for a few seconds (a worker's name may not resolve yet)."""
    missing = f"{cluster.coordinator.name}-no-such-worker"
    problem = probe([cluster.workers[0].name, missing])
    assert problem is not None
    assert (problem.service, problem.unreachable) == (missing, True)
    assert f"failed to connect to {missing}:5432" in problem.reason
    assert cluster.password not in problem.reason


def test_a_stopped_worker_is_unreachable(cluster: Cluster, probe: Probe, spare: Spare) -> None:
    """The spare, stopped (last in this module, so that it is not started again)."""
    spare.node.container.stop(timeout=20)
    spare.node.container.reload()
    assert spare.node.container.status == "exited"
    problem = probe([cluster.workers[0].name, spare.name, cluster.workers[1].name])
    assert problem is not None
    assert (problem.service, problem.unreachable) == (spare.name, True)
    assert f"failed to connect to {spare.name}:5432" in problem.reason
    assert cluster.password not in problem.reason
