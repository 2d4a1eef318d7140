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


def test_worker_runs_commands(coordinator: psycopg.Connection[tuple[object, ...]], worker: str) -> None:
    rows = coordinator.execute(
        "SELECT success, result FROM run_command_on_workers('SELECT 1') WHERE nodename = %s", (worker,)
    ).fetchall()
    assert rows == [(True, "1")], f"run_command_on_workers on {worker}: {rows}"


def test_worker_is_registered_active_primary(coordinator: psycopg.Connection[tuple[object, ...]], worker: str) -> None:
    row = coordinator.execute(
        "SELECT isactive, noderole::text, shouldhaveshards FROM pg_dist_node WHERE nodename = %s AND nodeport = 5432",
        (worker,),
    ).fetchone()
    assert row == (True, "primary", True), f"pg_dist_node row of {worker}: {row}"


def test_distributed_table_round_trip(coordinator: psycopg.Connection[tuple[object, ...]], stack: Stack) -> None:
    """Create a distributed table, write through the coordinator, read back, see shards on every worker, drop it."""
    table = f"deploycheck_probe_{uuid.uuid4().hex[:8]}"
    coordinator.execute(f"CREATE TABLE {table} (tenant_id bigint NOT NULL, payload text NOT NULL)")
    try:
        coordinator.execute("SELECT create_distributed_table(%s, 'tenant_id', shard_count => 4)", (table,))
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
