"""The Citus cluster: one version everywhere, the expected workers active and healthy, distributed SQL working."""

from __future__ import annotations

from concurrent.futures import Future

import psycopg
import pytest

from checks.probes import NODE_VERSION_QUERIES, ClusterNodes
from fixtures.stack import Stack

pytestmark = pytest.mark.evidence("coordinator", "workers")


@pytest.fixture(scope="session")
def cluster_nodes(background_cluster_nodes: Future[ClusterNodes]) -> ClusterNodes:
    return background_cluster_nodes.result()


@pytest.mark.parametrize("query", NODE_VERSION_QUERIES)
def test_every_node_runs_the_same_citus_version(cluster_nodes: ClusterNodes, stack: Stack, query: str) -> None:
    rows = cluster_nodes.versions[query]
    failed = [f"node {nodeid}: {result}" for nodeid, success, result in rows if not success]
    assert not failed, f"{query} failed on {', '.join(failed)}"
    versions = {str(result) for _, _, result in rows}
    assert len(rows) == stack.environment.expected_workers + 1, f"{len(rows)} nodes answered: {rows}"
    assert len(versions) == 1, f"nodes differ: {sorted(versions)}"


@pytest.mark.smoke
def test_active_workers_equal_the_expected_count(
    coordinator: psycopg.Connection[tuple[object, ...]], stack: Stack
) -> None:
    workers = sorted(str(name) for name, _ in coordinator.execute("SELECT * FROM citus_get_active_worker_nodes()"))
    assert workers == sorted(stack.environment.worker_services)


def test_cluster_node_health_is_all_true(
    background_cluster_health: Future[list[tuple[object, ...]]], stack: Stack
) -> None:
    rows = background_cluster_health.result()
    nodes = stack.environment.expected_workers + 1
    assert len(rows) == nodes * nodes, f"expected a {nodes} x {nodes} matrix, got {len(rows)} rows"
    bad = [f"{a}->{b}: {r}" for a, b, r in rows if r is not True]
    assert not bad, f"unhealthy connections: {', '.join(bad)}"


def test_worker_runs_commands(cluster_nodes: ClusterNodes, worker: str) -> None:
    rows = cluster_nodes.commands_on_workers.get(worker, [])
    assert rows == [(True, "1")], f"run_command_on_workers on {worker}: {rows}"


def test_worker_is_registered_active_primary(cluster_nodes: ClusterNodes, worker: str) -> None:
    rows = cluster_nodes.dist_nodes.get(worker, [])
    assert rows == [(True, "primary", True)], f"pg_dist_node rows of {worker}: {rows}"


def test_distributed_table_round_trip(background_round_trip: Future[None]) -> None:
    """Create a distributed table, write through the coordinator, read back, see shards on every worker, drop it."""
    background_round_trip.result()  # its assertions fail the check here
