"""Connectivity checks between nodes: citus_check_connection_to_node and citus_check_cluster_node_health."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from deploycheck.cluster import health_matrix

from .conftest import Cluster, unresolvable_node_error

pytestmark = pytest.mark.e2e


def test_check_connection_to_each_node(cluster: Cluster, conn: psycopg.Connection[Any]) -> None:
    for node in cluster.nodes:
        assert conn.execute("SELECT citus_check_connection_to_node(%s, 5432)", (node.name,)).fetchone() == (True,)
    # the port defaults to 5432
    assert conn.execute("SELECT citus_check_connection_to_node(%s)", (cluster.workers[0].name,)).fetchone() == (True,)


def test_check_connection_to_unknown_host_is_false_with_a_warning(
    cluster: Cluster, notices: tuple[psycopg.Connection[Any], list[str]]
) -> None:
    conn, collected = notices
    missing = f"{cluster.coordinator.name}-nosuchnode"
    assert conn.execute("SELECT citus_check_connection_to_node(%s, 5432)", (missing,)).fetchone() == (False,)
    warnings = [n for n in collected if n.startswith("WARNING")]
    assert len(warnings) == 1, collected
    assert warnings[0].startswith("WARNING: " + unresolvable_node_error(missing)), warnings[0]


def test_cluster_node_health_is_all_true(cluster: Cluster, conn: psycopg.Connection[Any]) -> None:
    rows = conn.execute("SELECT * FROM citus_check_cluster_node_health()").fetchall()
    names = sorted((n.name for n in cluster.nodes), key=lambda name: name.encode())
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [(s, 5432, t, 5432) for s in names for t in names]
    assert all(r[4] is True for r in rows)
    assert conn.execute(
        "SELECT bool_and(coalesce(result, false)) FROM citus_check_cluster_node_health()"
    ).fetchone() == (True,)


def test_deploycheck_s_parallel_matrix_is_citus_s_matrix(cluster: Cluster, conn: psycopg.Connection[Any]) -> None:
    """The checks' matrix (every source asked at once) is the one citus_check_cluster_node_health() gives."""
    citus = conn.execute("SELECT from_nodename, to_nodename, result FROM citus_check_cluster_node_health()").fetchall()
    assert health_matrix(conn) == [tuple(row) for row in citus]
