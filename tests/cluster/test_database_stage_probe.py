"""The database stage's probe (`citus_problem_through`) on a real cluster: the first node whose citus extension
is not loaded, or that the coordinator cannot reach. Each case runs in a database of its own, made on every
node, so the cluster the other tests share keeps its extension."""

from __future__ import annotations

import secrets as random
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from deploycheck.request.secrets import Secret
from deploycheck.stages.database import NodeProblem, citus_problem_through

from .conftest import Cluster, Node, psql

pytestmark = pytest.mark.e2e

Probe = Callable[[list[str]], NodeProblem | None]


@pytest.fixture
def database_with_citus_on(cluster: Cluster) -> Iterator[Callable[[list[Node]], Probe]]:
    """A fresh database on every node, with the citus extension on the given nodes only; returns the probe
    through a coordinator connection to it. The databases are dropped afterwards."""
    name = f"probe_{random.token_hex(4)}"
    connections: list[psycopg.Connection[Any]] = []

    def make(with_citus: list[Node]) -> Probe:
        for node in cluster.nodes:
            node.psql(f"CREATE DATABASE {name}")
        for node in with_citus:
            psql(node.container, "CREATE EXTENSION citus", dbname=name)
        conn = cluster.connect(dbname=name)
        connections.append(conn)
        return lambda workers: citus_problem_through(conn, workers, [Secret(cluster.password, "test")])

    yield make
    for conn in connections:
        conn.close()
    for node in cluster.nodes:
        node.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_every_node_with_citus_is_no_problem(cluster: Cluster, database_with_citus_on: Any) -> None:
    probe = database_with_citus_on(cluster.nodes)
    assert probe([w.name for w in cluster.workers]) is None


def test_a_worker_without_citus_is_named(cluster: Cluster, database_with_citus_on: Any) -> None:
    first, second = cluster.workers
    probe = database_with_citus_on([cluster.coordinator, first])
    problem = probe([first.name, second.name])
    assert problem is not None
    assert problem.service == second.name
    assert problem.reason.startswith("the citus extension is not loaded in database probe_")
    assert not problem.unreachable


def test_a_coordinator_without_citus_is_named_before_any_worker(cluster: Cluster, database_with_citus_on: Any) -> None:
    probe = database_with_citus_on(cluster.workers)
    problem = probe([w.name for w in cluster.workers])
    assert problem is not None
    assert (problem.service, problem.unreachable) == ("coordinator", False)
    assert "citus extension is not loaded" in problem.reason


def test_a_worker_the_coordinator_cannot_reach_is_unreachable(cluster: Cluster, database_with_citus_on: Any) -> None:
    """Unreachable is what the stage retries for a few seconds (a worker's name may not resolve yet)."""
    probe = database_with_citus_on(cluster.nodes)
    missing = f"{cluster.coordinator.name}-no-such-worker"
    problem = probe([cluster.workers[0].name, missing])
    assert problem is not None
    assert (problem.service, problem.unreachable) == (missing, True)
    assert problem.reason.startswith("the coordinator could not query it: ")
    assert cluster.password not in problem.reason
