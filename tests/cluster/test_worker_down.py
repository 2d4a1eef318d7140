"""What checks see while a worker is stopped (node metadata, connectivity checks, run_command_on_*, queries),
and the recovery once it is started again. The worker is really stopped (`docker stop`): nothing is simulated."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from deploycheck.cluster import health_matrix

from .conftest import Cluster, Node, unresolvable_node_error

pytestmark = pytest.mark.e2e

STORES = "wd_stores"
ORDERS = "wd_orders"


@dataclass
class Outage:
    down: Node
    up: Node
    store_on_down: int
    store_on_up: int
    free_id_on_down: int
    free_id_on_up: int


def node_of(conn: psycopg.Connection[Any], table: str, value: int) -> str:
    row = conn.execute(
        "SELECT n.nodename FROM pg_dist_placement p JOIN pg_dist_node n USING (groupid) "
        "WHERE p.shardid = get_shard_id_for_distribution_column(%s, %s)",
        (table, value),
    ).fetchone()
    assert row is not None
    return str(row[0])


@pytest.fixture(scope="module")
def outage(cluster: Cluster) -> Iterator[Outage]:
    """Tables with rows on both workers, then the second worker stopped; started again (healthy) at the end."""
    down, up = cluster.workers[1], cluster.workers[0]
    with cluster.connect() as conn:
        conn.execute(f"DROP TABLE IF EXISTS {ORDERS}, {STORES}")
        conn.execute(f"CREATE TABLE {STORES} (id serial PRIMARY KEY, name text NOT NULL)")
        conn.execute(
            f"CREATE TABLE {ORDERS} (id bigserial, store_id int NOT NULL, item text NOT NULL, "
            "amount_cents int NOT NULL, PRIMARY KEY (store_id, id))"
        )
        conn.execute(f"SELECT create_distributed_table('{STORES}', 'id')")
        conn.execute(f"SELECT create_distributed_table('{ORDERS}', 'store_id', colocate_with => '{STORES}')")
        conn.execute(f"INSERT INTO {STORES}(name) SELECT 'store ' || g FROM generate_series(1, 10) g")
        conn.execute(f"INSERT INTO {ORDERS}(store_id, item, amount_cents) SELECT id, 'item', 100 FROM {STORES}")
        nodes = {i: node_of(conn, STORES, i) for i in range(1, 200)}
    on_down = [i for i, n in nodes.items() if n == down.name]
    on_up = [i for i, n in nodes.items() if n == up.name]
    assert on_down[0] <= 10 and on_up[0] <= 10, "the seed rows are not on both workers"
    state = Outage(
        down=down,
        up=up,
        store_on_down=on_down[0],
        store_on_up=on_up[0],
        free_id_on_down=next(i for i in on_down if i > 10),
        free_id_on_up=next(i for i in on_up if i > 10),
    )
    cluster.stop(down)
    try:
        yield state
    finally:
        down.container.reload()
        if down.container.status != "running":
            cluster.start(down)
        with cluster.connect() as conn:
            conn.execute(f"DROP TABLE IF EXISTS {ORDERS}, {STORES}")


def test_active_worker_nodes_still_list_the_stopped_worker(cluster: Cluster, outage: Outage) -> None:
    with cluster.connect() as conn:
        rows = conn.execute("SELECT node_name, node_port FROM citus_get_active_worker_nodes() ORDER BY 1").fetchall()
        assert rows == [(w.name, 5432) for w in cluster.workers]
        assert conn.execute("SELECT bool_and(isactive) FROM pg_dist_node").fetchone() == (True,)


def test_cluster_health_has_null_rows_from_and_false_rows_to_the_stopped_worker(
    cluster: Cluster, outage: Outage
) -> None:
    warnings: list[str] = []
    with cluster.connect(notices=warnings) as conn:
        rows = conn.execute("SELECT * FROM citus_check_cluster_node_health()").fetchall()
        summary = conn.execute("SELECT bool_and(coalesce(result, false)) FROM citus_check_cluster_node_health()")
        assert summary.fetchone() == (False,)
    names = sorted((n.name for n in cluster.nodes), key=lambda name: name.encode())
    assert [(r[0], r[2]) for r in rows] == [(s, t) for s in names for t in names]
    dead = outage.down.name
    for source, _, target, _, result in rows:
        if source == dead:
            assert result is None, (source, target)
        elif target == dead:
            assert result is False, (source, target)
        else:
            assert result is True, (source, target)
    # the coordinator warns of each connection to the stopped worker it tried, and of nothing else
    assert warnings and all(w.startswith("WARNING: " + unresolvable_node_error(dead)) for w in warnings), warnings


def test_deploycheck_s_parallel_matrix_has_the_same_null_and_false_rows(cluster: Cluster, outage: Outage) -> None:
    with cluster.connect() as conn:
        citus = conn.execute("SELECT from_nodename, to_nodename, result FROM citus_check_cluster_node_health()")
        assert health_matrix(conn) == [tuple(row) for row in citus.fetchall()]


def test_connection_check_to_the_stopped_worker_is_false(cluster: Cluster, outage: Outage) -> None:
    with cluster.connect() as conn:
        assert conn.execute("SELECT citus_check_connection_to_node(%s, 5432)", (outage.down.name,)).fetchone() == (
            False,
        )
        assert conn.execute("SELECT citus_check_connection_to_node(%s, 5432)", (outage.up.name,)).fetchone() == (True,)


def test_run_command_reports_failed_connection_without_error(cluster: Cluster, outage: Outage) -> None:
    dead = outage.down.name
    with cluster.connect() as conn:
        rows = conn.execute("SELECT * FROM run_command_on_workers('SELECT 1')").fetchall()
        assert sorted(rows) == sorted(
            [(outage.up.name, 5432, True, "1"), (dead, 5432, False, f"failed to connect to {dead}:5432")]
        )
        all_nodes = conn.execute(
            "SELECT n.nodename, r.success, r.result FROM run_command_on_all_nodes('SELECT 1') r JOIN pg_dist_node n USING (nodeid)"
        ).fetchall()
        assert sorted(all_nodes) == sorted(
            [
                (cluster.coordinator.name, True, "1"),
                (outage.up.name, True, "1"),
                (dead, False, f"failed to connect to {dead}:5432"),
            ]
        )
        shards = conn.execute(
            f"SELECT success, result FROM run_command_on_shards('{STORES}', 'SELECT count(*) FROM %s')"
        ).fetchall()
        assert len(shards) == 32
        assert sorted({(s[0], s[1]) for s in shards if not s[0]}) == [(False, f"failed to connect to {dead}:5432")]
        assert sum(int(s[1]) for s in shards if s[0]) > 0


def test_reads_and_writes_on_the_stopped_worker_fail(cluster: Cluster, outage: Outage) -> None:
    dead = outage.down.name
    with cluster.connect() as conn:
        for statement, params in [
            (f"SELECT id, name FROM {STORES} WHERE id = %s", (outage.store_on_down,)),
            (
                f"SELECT count(*), coalesce(sum(amount_cents),0) FROM {ORDERS} WHERE store_id=%s",
                (outage.store_on_down,),
            ),
            (f"SELECT count(*) FROM {ORDERS}", ()),
            (f"INSERT INTO {STORES}(id, name) VALUES (%s, 'new') RETURNING id, name", (outage.free_id_on_down,)),
            (
                f"INSERT INTO {ORDERS}(store_id, item, amount_cents) VALUES (%s, 'x', 1) RETURNING id",
                (outage.store_on_down,),
            ),
            (f"UPDATE {STORES} SET name = 'renamed' WHERE id = %s", (outage.store_on_down,)),
            (f"DELETE FROM {ORDERS} WHERE store_id = %s", (outage.store_on_down,)),
        ]:
            with pytest.raises(psycopg.Error) as raised:
                conn.execute(statement, params)
            assert str(raised.value).startswith(unresolvable_node_error(dead)), (statement, raised.value)


def test_reads_and_writes_on_the_live_worker_succeed(cluster: Cluster, outage: Outage) -> None:
    with cluster.connect() as conn:
        assert conn.execute(f"SELECT name FROM {STORES} WHERE id = %s", (outage.store_on_up,)).fetchone() == (
            f"store {outage.store_on_up}",
        )
        assert conn.execute(
            f"INSERT INTO {STORES}(id, name) VALUES (%s, 'during outage') RETURNING id, name", (outage.free_id_on_up,)
        ).fetchone() == (outage.free_id_on_up, "during outage")
        assert conn.execute(
            f"INSERT INTO {ORDERS}(store_id, item, amount_cents) VALUES (%s, 'y', 7) RETURNING store_id, amount_cents",
            (outage.store_on_up,),
        ).fetchone() == (outage.store_on_up, 7)
        assert conn.execute(
            f"SELECT count(*), coalesce(sum(amount_cents),0) FROM {ORDERS} WHERE store_id=%s", (outage.store_on_up,)
        ).fetchone() == (2, 107)


def test_node_management_with_the_worker_stopped(cluster: Cluster, outage: Outage) -> None:
    dead = outage.down.name
    with cluster.connect() as conn:
        nodeid = conn.execute("SELECT nodeid FROM pg_dist_node WHERE nodename = %s", (dead,)).fetchone()
        # add_node of a known node opens no connection: still idempotent
        assert conn.execute("SELECT citus_add_node(%s, 5432)", (dead,)).fetchone() == nodeid
        with pytest.raises(psycopg.Error) as raised:
            conn.execute("SELECT citus_activate_node(%s, 5432)", (dead,))
        assert str(raised.value).startswith(unresolvable_node_error(dead)), raised.value
        assert conn.execute("SELECT isactive FROM pg_dist_node WHERE nodename = %s", (dead,)).fetchone() == (True,)


def test_recovery_after_the_worker_is_started(cluster: Cluster, outage: Outage) -> None:
    cluster.start(outage.down)
    with cluster.connect() as conn:
        assert conn.execute("SELECT bool_and(result), count(*) FROM citus_check_cluster_node_health()").fetchone() == (
            True,
            9,
        )
        assert conn.execute(f"SELECT count(*) FROM {STORES}").fetchone() == (11,)
        assert conn.execute(f"SELECT name FROM {STORES} WHERE id = %s", (outage.store_on_down,)).fetchone() == (
            f"store {outage.store_on_down}",
        )
        assert conn.execute(
            f"INSERT INTO {STORES}(id, name) VALUES (%s, 'after') RETURNING name", (outage.free_id_on_down,)
        ).fetchone() == ("after",)
        assert {r[2] for r in conn.execute("SELECT * FROM run_command_on_workers('SELECT 1')").fetchall()} == {True}
