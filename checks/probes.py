"""Probes that the checks run in the background (see `background` in conftest.py), each with its own connection
or Docker client. A one-query probe returns what it saw and its check asserts on it; a probe of several steps
asserts as it goes (pytest rewrites this module's asserts), and its check re-raises that."""

from __future__ import annotations

import uuid

from deploycheck.engine.commands import Command
from deploycheck.stack import Stack

# Allowed from inside the nginx container only: a location that proxies to a closed port (stack/nginx).
UPSTREAM_FAILURE_PROBE = "/_dc_probe/upstream-failure"


HTTP_TIMEOUT = 10


def cluster_health_matrix(stack: Stack) -> list[tuple[object, ...]]:
    """The (N+1) x (N+1) connection matrix of `citus_check_cluster_node_health()`."""
    with stack.connect() as conn:
        return conn.execute(
            "SELECT from_nodename, to_nodename, result FROM citus_check_cluster_node_health()"
        ).fetchall()


def distributed_table_round_trip(stack: Stack) -> None:
    """Create a distributed table, write through the coordinator, read back, see shards on every worker, drop it."""
    table = f"deploycheck_probe_{uuid.uuid4().hex[:8]}"
    with stack.connect() as conn:
        conn.execute(f"CREATE TABLE {table} (tenant_id bigint NOT NULL, payload text NOT NULL)")
        try:
            # At least one shard per worker, so that every worker must hold some (4 left 8 workers half idle).
            shards = max(4, stack.environment.expected_workers)
            conn.execute("SELECT create_distributed_table(%s, 'tenant_id', shard_count => %s)", (table, shards))
            conn.execute(
                f"INSERT INTO {table} (tenant_id, payload) SELECT i, 'row ' || i FROM generate_series(1, 40) AS i"
            )
            row = conn.execute(f"SELECT count(*), sum(tenant_id) FROM {table}").fetchone()
            assert row == (40, 820), f"read back {row} from {table}"
            assert conn.execute(f"SELECT payload FROM {table} WHERE tenant_id = 7").fetchall() == [("row 7",)]
            query = "SELECT DISTINCT nodename FROM citus_shards WHERE table_name = %s::regclass"
            nodes = {str(name) for (name,) in conn.execute(query, (table,))}
            assert nodes == set(stack.environment.worker_services), f"shards of {table} are on {sorted(nodes)}"
            placed = conn.execute(
                "SELECT sum(result::bigint) FROM run_command_on_placements(%s, %s)", (table, "SELECT count(*) FROM %s")
            ).fetchone()
            assert placed == (40,), f"the shard tables on the workers hold {placed} rows"
        finally:
            conn.execute(f"DROP TABLE IF EXISTS {table}")
        left = conn.execute("SELECT count(*) FROM pg_dist_partition WHERE logicalrelid::text = %s", (table,)).fetchone()
        assert left == (0,), f"{table} left metadata behind after DROP"


def run_in_container(stack: Stack, service: str, command: Command) -> tuple[int, str]:
    """A command inside a service's container: its exit code and output (stdout, then stderr). With a Docker
    client of its own, as it runs beside the checks that use the stack's."""
    client = stack.target.new_docker_client()
    try:
        container = client.containers.get(stack.containers[service].id)
        result = stack.target.runner.exec(container, command, check=False)
    finally:
        client.close()
    return result.returncode, result.output


def write_then_read(stack: Stack, base_url: str) -> None:
    """A store and two orders written through the API at base_url, read back, and found in the workers' shards,
    not on the coordinator. Its assertions are the check's (pytest rewrites this module's asserts)."""
    timeout = HTTP_TIMEOUT
    with stack.http_session() as http, stack.connect() as conn:
        store = http.post(f"{base_url}/stores", json={"name": f"probe-{uuid.uuid4().hex[:8]}"}, timeout=timeout)
        assert store.status_code == 201, store.text
        store_id = int(store.json()["id"])
        for item, cents in (("tea", 250), ("cake", 475)):
            order = http.post(
                f"{base_url}/stores/{store_id}/orders", json={"item": item, "amount_cents": cents}, timeout=timeout
            )
            assert order.status_code == 201, order.text
        orders = http.get(f"{base_url}/stores/{store_id}/orders", timeout=timeout).json()
        assert [(o["item"], o["amount_cents"]) for o in orders] == [("tea", 250), ("cake", 475)]
        summary = http.get(f"{base_url}/stores/{store_id}/summary", timeout=timeout).json()
        assert (summary["orders"], summary["total_cents"]) == (2, 725)
        # The store's shard, where Citus routed its rows, asked on its worker (one connection, where counting in
        # every placement made each probe connect to every worker).
        placement = conn.execute(
            "SELECT n.nodename, n.nodeport, shard_name('orders'::regclass, p.shardid)"
            " FROM pg_dist_placement p JOIN pg_dist_node n USING (groupid)"
            # A scalar subquery: asked once, where in the WHERE clause the (volatile) function ran for every
            # placement row of every table (128 calls, ~0.26 s of the coordinator's CPU per run of the checks).
            " WHERE p.shardid = (SELECT get_shard_id_for_distribution_column('orders', %s))",
            (store_id,),
        ).fetchall()
        assert len(placement) == 1, f"the shard of store {store_id} has placements {placement}"
        node, port, shard = placement[0]
        in_shard = conn.execute(
            "SELECT success, result FROM master_run_on_worker(ARRAY[%s], ARRAY[%s], ARRAY[%s], false)",
            (node, port, f"SELECT count(*) FROM {shard} WHERE store_id = {store_id}"),
        ).fetchone()
        assert in_shard == (True, "2"), f"shard {shard} on {node}:{port} holds {in_shard} orders of store {store_id}"
