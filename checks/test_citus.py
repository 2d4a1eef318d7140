"""The Citus cluster: one version everywhere, the contract's workers active and healthy, distributed SQL working.
Not applicable to a plain PostgreSQL database (skipped as such)."""

from __future__ import annotations

from concurrent.futures import Future

import psycopg
import pytest

from deploycheck.stack import Stack

pytestmark = [pytest.mark.evidence("database", "workers"), pytest.mark.usefixtures("citus_only")]


@pytest.mark.parametrize(
    "query", ["SELECT citus_version()", "SELECT extversion FROM pg_extension WHERE extname = 'citus'"]
)
def test_every_node_runs_the_same_citus_version(
    coordinator: psycopg.Connection[tuple[object, ...]], stack: Stack, query: str
) -> None:
    rows = coordinator.execute("SELECT nodeid, success, result FROM run_command_on_all_nodes(%s)", (query,)).fetchall()
    failed = [f"node {nodeid}: {result}" for nodeid, success, result in rows if not success]
    assert not failed, f"{query} failed on {', '.join(failed)}"
    versions = {str(result) for _, _, result in rows}
    assert len(rows) == len(stack.environment.node_services), f"{len(rows)} nodes answered: {rows}"
    assert len(versions) == 1, f"nodes differ: {sorted(versions)}"


@pytest.mark.smoke
def test_active_workers_equal_the_expected_count(
    coordinator: psycopg.Connection[tuple[object, ...]], stack: Stack
) -> None:
    workers = sorted(str(name) for name, _ in coordinator.execute("SELECT * FROM citus_get_active_worker_nodes()"))
    assert workers == sorted(stack.environment.worker_services)


def test_cluster_node_health_is_all_true(
    background_cluster_health: Future[list[tuple[object, ...]]] | None, stack: Stack
) -> None:
    assert background_cluster_health is not None
    rows = background_cluster_health.result()
    nodes = len(stack.environment.node_services)
    assert len(rows) == nodes * nodes, f"expected a {nodes} x {nodes} matrix, got {len(rows)} rows"
    bad = [f"{a}->{b}: {r}" for a, b, r in rows if r is not True]
    assert not bad, f"unhealthy connections: {', '.join(bad)}"


@pytest.fixture(scope="session")
def commands_on_workers(coordinator: psycopg.Connection[tuple[object, ...]]) -> dict[str, list[tuple[object, ...]]]:
    """One `run_command_on_workers` for every worker at once (it reaches all of them anyway), by worker name.

    Asking it once per worker ran the command on every worker N times: N x N round trips for N workers.
    """
    by_worker: dict[str, list[tuple[object, ...]]] = {}
    for nodename, success, result in coordinator.execute(
        "SELECT nodename, success, result FROM run_command_on_workers('SELECT 1')"
    ):
        by_worker.setdefault(str(nodename), []).append((success, result))
    return by_worker


@pytest.fixture(scope="session")
def dist_nodes(
    coordinator: psycopg.Connection[tuple[object, ...]], stack: Stack
) -> dict[str, list[tuple[object, ...]]]:
    """The pg_dist_node rows on port 5432, read once for every worker check, by node name."""
    by_node: dict[str, list[tuple[object, ...]]] = {}
    for nodename, *row in coordinator.execute(
        "SELECT nodename, isactive, noderole::text, shouldhaveshards FROM pg_dist_node WHERE nodeport = %s",
        (stack.environment.stack.database.port,),
    ):
        by_node.setdefault(str(nodename), []).append(tuple(row))
    return by_node


def test_worker_runs_commands(commands_on_workers: dict[str, list[tuple[object, ...]]], worker: str) -> None:
    rows = commands_on_workers.get(worker, [])
    assert rows == [(True, "1")], f"run_command_on_workers on {worker}: {rows}"


def test_worker_is_registered_active_primary(dist_nodes: dict[str, list[tuple[object, ...]]], worker: str) -> None:
    rows = dist_nodes.get(worker, [])
    assert rows == [(True, "primary", True)], f"pg_dist_node rows of {worker}: {rows}"


def test_distributed_table_round_trip(background_round_trip: Future[None] | None) -> None:
    """Create a distributed table, write through the coordinator, read back, see shards on every worker, drop it."""
    assert background_round_trip is not None
    background_round_trip.result()  # its assertions fail the check here
