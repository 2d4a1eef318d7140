"""The Citus cluster: one version everywhere, the expected workers active and healthy, distributed SQL working."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from fixtures.stack import Stack

pytestmark = pytest.mark.evidence("coordinator", "workers")


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
    assert len(rows) == stack.environment.expected_workers + 1, f"{len(rows)} nodes answered: {rows}"
    assert len(versions) == 1, f"nodes differ: {sorted(versions)}"


@pytest.mark.smoke
def test_active_workers_equal_the_expected_count(
    coordinator: psycopg.Connection[tuple[object, ...]], stack: Stack
) -> None:
    workers = sorted(str(name) for name, _ in coordinator.execute("SELECT * FROM citus_get_active_worker_nodes()"))
    assert workers == sorted(stack.environment.worker_services)


def test_cluster_node_health_is_all_true(coordinator: psycopg.Connection[tuple[object, ...]], stack: Stack) -> None:
    rows = coordinator.execute(
        "SELECT from_nodename, to_nodename, result FROM citus_check_cluster_node_health()"
    ).fetchall()
    nodes = stack.environment.expected_workers + 1
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
def dist_nodes(coordinator: psycopg.Connection[tuple[object, ...]]) -> dict[str, list[tuple[object, ...]]]:
    """The pg_dist_node rows on port 5432, read once for every worker check, by node name."""
    by_node: dict[str, list[tuple[object, ...]]] = {}
    for nodename, *row in coordinator.execute(
        "SELECT nodename, isactive, noderole::text, shouldhaveshards FROM pg_dist_node WHERE nodeport = 5432"
    ):
        by_node.setdefault(str(nodename), []).append(tuple(row))
    return by_node


def test_worker_runs_commands(commands_on_workers: dict[str, list[tuple[object, ...]]], worker: str) -> None:
    rows = commands_on_workers.get(worker, [])
    assert rows == [(True, "1")], f"run_command_on_workers on {worker}: {rows}"


def test_worker_is_registered_active_primary(dist_nodes: dict[str, list[tuple[object, ...]]], worker: str) -> None:
    rows = dist_nodes.get(worker, [])
    assert rows == [(True, "primary", True)], f"pg_dist_node rows of {worker}: {rows}"


def test_distributed_table_round_trip(coordinator: psycopg.Connection[tuple[object, ...]], stack: Stack) -> None:
    """Create a distributed table, write through the coordinator, read back, see shards on every worker, drop it."""
    table = f"deploycheck_probe_{uuid.uuid4().hex[:8]}"
    coordinator.execute(f"CREATE TABLE {table} (tenant_id bigint NOT NULL, payload text NOT NULL)")
    try:
        # At least one shard per worker, so that every worker must hold some (4 shards left 8 workers half idle).
        shards = max(4, stack.environment.expected_workers)
        coordinator.execute("SELECT create_distributed_table(%s, 'tenant_id', shard_count => %s)", (table, shards))
        coordinator.execute(
            f"INSERT INTO {table} (tenant_id, payload) SELECT i, 'row ' || i FROM generate_series(1, 40) AS i"
        )
        row = coordinator.execute(f"SELECT count(*), sum(tenant_id) FROM {table}").fetchone()
        assert row == (40, 820), f"read back {row} from {table}"
        one = coordinator.execute(f"SELECT payload FROM {table} WHERE tenant_id = 7").fetchall()
        assert one == [("row 7",)]
        nodes = {
            str(name)
            for (name,) in coordinator.execute(
                "SELECT DISTINCT nodename FROM citus_shards WHERE table_name = %s::regclass", (table,)
            )
        }
        assert nodes == set(stack.environment.worker_services), f"shards of {table} are on {sorted(nodes)}"
        placed = coordinator.execute(
            "SELECT sum(result::bigint) FROM run_command_on_placements(%s, %s)", (table, "SELECT count(*) FROM %s")
        ).fetchone()
        assert placed == (40,), f"the shard tables on the workers hold {placed} rows"
    finally:
        coordinator.execute(f"DROP TABLE IF EXISTS {table}")
    left = coordinator.execute(
        "SELECT count(*) FROM pg_dist_partition WHERE logicalrelid::text = %s", (table,)
    ).fetchone()
    assert left == (0,), f"{table} left metadata behind after DROP"
