"""pg_dist_node and node management, as in Citus 13 (sql/citus--8.0-1.sql, udfs/citus_add_node etc.)."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from .conftest import Cluster, unresolvable_node_error

pytestmark = pytest.mark.e2e

# name, type, NOT NULL (sql/citus--8.0-1.sql and the upgrade scripts up to 13.0)
PG_DIST_NODE_13_0 = [
    ("nodeid", "integer", True),
    ("groupid", "integer", True),
    ("nodename", "text", True),
    ("nodeport", "integer", True),
    ("noderack", "text", True),
    ("hasmetadata", "boolean", True),
    ("isactive", "boolean", True),
    ("noderole", "noderole", True),
    ("nodecluster", "name", True),
    ("metadatasynced", "boolean", False),
    ("shouldhaveshards", "boolean", True),
]
ADDED_IN_13_2 = [("nodeisclone", "boolean", True), ("nodeprimarynodeid", "integer", True)]


def test_pg_dist_node_columns_types_and_order(conn: psycopg.Connection[Any]) -> None:
    columns = conn.execute(
        "SELECT attname::text, format_type(atttypid, atttypmod), attnotnull FROM pg_attribute "
        "WHERE attrelid = 'pg_catalog.pg_dist_node'::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum"
    ).fetchall()
    assert columns[:11] == PG_DIST_NODE_13_0
    release = conn.execute("SELECT substring(citus_version() from '^Citus (\\d+\\.\\d+)\\.')").fetchone()
    assert release is not None and release[0] is not None
    major, minor = (int(part) for part in release[0].split("."))
    assert columns[11:] == (ADDED_IN_13_2 if (major, minor) >= (13, 2) else [])


def test_pg_dist_node_defaults_and_enum(conn: psycopg.Connection[Any]) -> None:
    defaults = dict(
        conn.execute(
            "SELECT a.attname::text, pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d "
            "JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum "
            "WHERE d.adrelid = 'pg_catalog.pg_dist_node'::regclass"
        ).fetchall()
    )
    assert defaults["nodeport"] == "5432"
    assert defaults["noderack"] == "'default'::text"
    assert defaults["hasmetadata"] == "false"
    assert defaults["isactive"] == "true"
    assert defaults["noderole"] == "'primary'::noderole"
    assert defaults["nodecluster"] == "'default'::name"
    assert defaults["metadatasynced"] == "false"
    assert defaults["shouldhaveshards"] == "true"
    assert defaults["nodeid"].startswith("nextval(") and defaults["groupid"].startswith("nextval(")
    labels = conn.execute("SELECT enum_range(NULL::pg_catalog.noderole)::text").fetchone()
    assert labels == ("{primary,secondary,unavailable}",)
    unique = conn.execute(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'pg_dist_node'::regclass AND contype = 'u'"
    ).fetchall()
    assert ("UNIQUE (nodename, nodeport)",) in unique


def test_registered_nodes(cluster: Cluster, conn: psycopg.Connection[Any]) -> None:
    rows = conn.execute(
        "SELECT nodename, nodeport, groupid, isactive, hasmetadata, metadatasynced, shouldhaveshards, "
        "noderole::text, nodecluster::text FROM pg_dist_node ORDER BY groupid"
    ).fetchall()
    coordinator, *workers = rows
    assert coordinator == (cluster.coordinator.name, 5432, 0, True, True, True, False, "primary", "default")
    assert [w[0] for w in workers] == [w.name for w in cluster.workers]
    for worker in workers:
        assert worker[1:] == (5432, worker[2], True, True, True, True, "primary", "default")
        assert worker[2] > 0
    assert len({w[2] for w in workers}) == 2


def test_add_node_is_idempotent(cluster: Cluster, conn: psycopg.Connection[Any]) -> None:
    worker = cluster.workers[0].name
    nodeid = conn.execute("SELECT nodeid FROM pg_dist_node WHERE nodename = %s", (worker,)).fetchone()
    before = conn.execute("SELECT count(*) FROM pg_dist_node").fetchone()
    assert conn.execute("SELECT citus_add_node(%s, 5432)", (worker,)).fetchone() == nodeid
    assert conn.execute("SELECT master_add_node(%s, 5432)", (worker,)).fetchone() == nodeid
    assert conn.execute("SELECT count(*) FROM pg_dist_node").fetchone() == before


def test_add_unreachable_node_errors_and_inserts_nothing(cluster: Cluster, conn: psycopg.Connection[Any]) -> None:
    before = conn.execute("SELECT count(*), max(nodeid) FROM pg_dist_node").fetchone()
    missing = f"{cluster.coordinator.name}-nosuchnode"
    with pytest.raises(psycopg.Error) as raised:
        conn.execute("SELECT citus_add_node(%s, 5432)", (missing,))
    assert str(raised.value).startswith(unresolvable_node_error(missing)), raised.value
    assert conn.execute("SELECT count(*), max(nodeid) FROM pg_dist_node").fetchone() == before
    assert conn.execute("SELECT count(*) FROM pg_dist_node WHERE nodename = %s", (missing,)).fetchone() == (0,)


def test_active_worker_nodes(cluster: Cluster, conn: psycopg.Connection[Any]) -> None:
    rows = conn.execute(
        "SELECT node_name, node_port, pg_typeof(node_port)::text FROM citus_get_active_worker_nodes() ORDER BY 1"
    ).fetchall()
    assert rows == [(w.name, 5432, "bigint") for w in cluster.workers]
    legacy = conn.execute("SELECT node_name, node_port FROM master_get_active_worker_nodes() ORDER BY 1").fetchall()
    assert legacy == [(w.name, 5432) for w in cluster.workers]


def test_node_management_errors(cluster: Cluster, conn: psycopg.Connection[Any]) -> None:
    with pytest.raises(psycopg.Error, match=r'node at "nosuchnode:5432" does not exist'):
        conn.execute("SELECT citus_disable_node('nosuchnode', 5432)")
    with pytest.raises(psycopg.Error, match=r'node at "nosuchnode:5432" does not exist'):
        conn.execute("SELECT citus_remove_node('nosuchnode', 5432)")
    with pytest.raises(psycopg.Error, match=r'node at "nosuchnode:5432" does not exist'):
        conn.execute("SELECT citus_activate_node('nosuchnode', 5432)")
    with pytest.raises(psycopg.Error, match=r'cannot change "isactive" field of the coordinator node'):
        conn.execute("SELECT citus_disable_node(%s, 5432)", (cluster.coordinator.name,))
    first = sorted(w.name for w in cluster.workers)[0]
    with pytest.raises(psycopg.Error, match="disabling the first worker node in the metadata is not allowed"):
        conn.execute("SELECT citus_disable_node(%s, 5432)", (first,))
    # nothing changed
    assert conn.execute("SELECT bool_and(isactive), count(*) FROM pg_dist_node").fetchone() == (True, 3)


def test_activate_live_worker_returns_its_id(cluster: Cluster, conn: psycopg.Connection[Any]) -> None:
    worker = cluster.workers[1].name
    nodeid = conn.execute("SELECT nodeid FROM pg_dist_node WHERE nodename = %s", (worker,)).fetchone()
    assert conn.execute("SELECT citus_activate_node(%s, 5432)", (worker,)).fetchone() == nodeid
    assert conn.execute("SELECT isactive FROM pg_dist_node WHERE nodename = %s", (worker,)).fetchone() == (True,)


def test_disable_activate_remove_and_add_back_a_worker(
    cluster: Cluster, conn: psycopg.Connection[Any], make_table: Any
) -> None:
    worker = cluster.workers[1].name
    # a worker holding the only placement of a shard can be neither disabled nor removed
    table = make_table("nm_probe")
    conn.execute(f"CREATE TABLE {table} (id int)")
    conn.execute(f"SELECT create_distributed_table('{table}', 'id', shard_count => 2)")
    with pytest.raises(psycopg.Error, match=f"{worker}:5432 because because it contains the only shard placement"):
        conn.execute("SELECT citus_remove_node(%s, 5432)", (worker,))
    with pytest.raises(psycopg.Error, match="contains the only shard placement"):
        conn.execute("SELECT citus_disable_node(%s, 5432, synchronous => true)", (worker,))
    conn.execute(f"DROP TABLE {table}")

    conn.execute("SELECT citus_disable_node(%s, 5432, synchronous => true)", (worker,))
    assert conn.execute("SELECT isactive FROM pg_dist_node WHERE nodename = %s", (worker,)).fetchone() == (False,)
    active = conn.execute("SELECT node_name FROM citus_get_active_worker_nodes()").fetchall()
    assert active == [(cluster.workers[0].name,)]
    nodeid = conn.execute("SELECT nodeid FROM pg_dist_node WHERE nodename = %s", (worker,)).fetchone()
    assert conn.execute("SELECT citus_activate_node(%s, 5432)", (worker,)).fetchone() == nodeid
    assert conn.execute("SELECT isactive FROM pg_dist_node WHERE nodename = %s", (worker,)).fetchone() == (True,)

    conn.execute("SELECT citus_remove_node(%s, 5432)", (worker,))
    assert conn.execute("SELECT count(*) FROM pg_dist_node WHERE nodename = %s", (worker,)).fetchone() == (0,)
    new_id = conn.execute("SELECT citus_add_node(%s, 5432)", (worker,)).fetchone()
    assert new_id is not None and nodeid is not None and new_id[0] > nodeid[0]
    assert conn.execute(
        "SELECT isactive, hasmetadata, metadatasynced, shouldhaveshards, groupid > 0 FROM pg_dist_node "
        "WHERE nodename = %s",
        (worker,),
    ).fetchone() == (True, True, True, True, True)
    rows = conn.execute("SELECT node_name FROM citus_get_active_worker_nodes() ORDER BY 1").fetchall()
    assert rows == [(w.name,) for w in cluster.workers]
