"""run_command_on_* and master_run_on_worker, and their result rules (Citus's EvaluateSingleQueryResult)."""

from __future__ import annotations

import re
from typing import Any

import psycopg
import pytest

from .conftest import Cluster

pytestmark = pytest.mark.e2e


def on_workers(conn: psycopg.Connection[Any], command: str, parallel: bool = True) -> list[tuple[Any, ...]]:
    return conn.execute("SELECT * FROM run_command_on_workers(%s, %s)", (command, parallel)).fetchall()


def single_result(
    cluster: Cluster, conn: psycopg.Connection[Any], command: str, parallel: bool = True
) -> tuple[bool, str]:
    """The (success, result) every worker gave; they must agree."""
    rows = on_workers(conn, command, parallel)
    assert [(r[0], r[1]) for r in rows] == [(w.name, 5432) for w in sorted(cluster.workers, key=lambda w: w.name)]
    outcomes = {(r[2], r[3]) for r in rows}
    assert len(outcomes) == 1, rows
    return outcomes.pop()


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("SELECT 42", (True, "42")),
        ("SELECT NULL", (True, "")),
        ("SELECT 1 WHERE false", (True, "")),
        ("SHOW port", (True, "5432")),
        ("SELECT 1, 2", (False, "expected a single column in query target")),
        ("SELECT 1, 2 WHERE false", (False, "expected a single column in query target")),
        ("SELECT generate_series(1, 3)", (False, "expected a single row in query result")),
        ("SELECT * FROM no_such_table_anywhere", (False, 'ERROR:  relation "no_such_table_anywhere" does not exist')),
        ("SELEC 1", (False, 'ERROR:  syntax error at or near "SELEC"')),
    ],
)
@pytest.mark.parametrize("parallel", [True, False], ids=["parallel", "one-by-one"])
def test_result_rules(
    cluster: Cluster, conn: psycopg.Connection[Any], command: str, expected: tuple[bool, str], parallel: bool
) -> None:
    assert single_result(cluster, conn, command, parallel) == expected


@pytest.mark.parametrize("parallel", [True, False], ids=["parallel", "one-by-one"])
def test_master_run_on_worker_gives_each_command_a_connection_of_its_own(
    conn: psycopg.Connection[Any], parallel: bool
) -> None:
    """master_run_on_worker runs each (node, command) on a new connection: a node's SET is not seen by its next
    command (that connection has Citus's own application_name), and every row keeps its place."""
    workers = [name for name, _ in conn.execute("SELECT * FROM citus_get_active_worker_nodes() ORDER BY 1")]
    names = [w for w in workers for _ in range(3)]
    commands = [
        c for w in workers for c in ("SET application_name = 'rc_" + w + "'", "SHOW application_name", "SELECT 7")
    ]
    rows = conn.execute(
        "SELECT node_name, success, result FROM master_run_on_worker(%s, %s, %s, %s)",
        (names, [5432] * len(names), commands, parallel),
    ).fetchall()
    assert [(r[0], r[1]) for r in rows] == [(w, True) for w in names]
    for i, worker in enumerate(workers):
        set_result, show_result, select_result = (r[2] for r in rows[3 * i : 3 * i + 3])
        assert (set_result, select_result) == ("SET", "7")
        assert re.fullmatch(r"citus_run_command gpid=\d+", show_result), (worker, show_result)


@pytest.mark.parametrize("parallel", [True, False], ids=["parallel", "one-by-one"])
def test_a_command_of_several_statements_gives_the_first_result(
    cluster: Cluster, conn: psycopg.Connection[Any], parallel: bool
) -> None:
    """Every statement runs, but only the first one's result is read: a later statement's error is not seen."""
    assert single_result(cluster, conn, "SELECT 1; SELECT 2", parallel) == (True, "1")
    assert single_result(cluster, conn, "SELECT 1; SELECT 1/0", parallel) == (True, "1")
    assert single_result(cluster, conn, "SELECT 1/0; SELECT 2", parallel) == (False, "ERROR:  division by zero")
    try:
        assert single_result(cluster, conn, "SELECT 1; CREATE TABLE rc_multi (a int)", parallel) == (True, "1")
        assert single_result(cluster, conn, "SELECT to_regclass('rc_multi') IS NOT NULL", parallel) == (True, "t")
    finally:
        assert single_result(cluster, conn, "DROP TABLE IF EXISTS rc_multi", parallel) == (True, "DROP TABLE")
    assert single_result(cluster, conn, "SELECT 42", parallel) == (True, "42")  # the connections are clean afterwards


def test_utility_commands_give_their_tag(cluster: Cluster, conn: psycopg.Connection[Any]) -> None:
    try:
        assert single_result(cluster, conn, "CREATE TABLE rc_probe (a int)") == (True, "CREATE TABLE")
        assert single_result(cluster, conn, "INSERT INTO rc_probe VALUES (1), (2)") == (True, "INSERT 0 2")
        assert single_result(cluster, conn, "INSERT INTO rc_probe VALUES (3) RETURNING a") == (True, "3")
        assert single_result(cluster, conn, "SELECT count(*) FROM rc_probe") == (True, "3")
        assert single_result(cluster, conn, "VACUUM rc_probe") == (True, "VACUUM")
    finally:
        assert single_result(cluster, conn, "DROP TABLE IF EXISTS rc_probe") == (True, "DROP TABLE")


def test_run_command_on_all_nodes_covers_coordinator(cluster: Cluster, conn: psycopg.Connection[Any]) -> None:
    rows = conn.execute(
        "SELECT r.nodeid, n.nodename, r.success, r.result FROM run_command_on_all_nodes('SELECT current_database()') r "
        "LEFT JOIN pg_dist_node n USING (nodeid) ORDER BY n.nodename"
    ).fetchall()
    assert sorted(r[1] for r in rows) == sorted(n.name for n in cluster.nodes)
    assert {(r[2], r[3]) for r in rows} == {(True, "deploycheck")}
    assert all(r[0] > 0 for r in rows)


def test_run_command_on_shards_and_placements(cluster: Cluster, conn: psycopg.Connection[Any], make_table: Any) -> None:
    table = make_table("rc_dist")
    conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, v text)")
    conn.execute(f"SELECT create_distributed_table('{table}', 'id', shard_count => 4)")
    conn.execute(f"INSERT INTO {table} SELECT g, 'v' || g FROM generate_series(1, 20) g")
    shards = conn.execute(
        f"SELECT shardid, success, result FROM run_command_on_shards('{table}', 'SELECT count(*) FROM %s') ORDER BY 1"
    ).fetchall()
    expected = conn.execute(
        f"SELECT shardid FROM pg_dist_shard WHERE logicalrelid = '{table}'::regclass ORDER BY 1"
    ).fetchall()
    assert [s[0] for s in shards] == [e[0] for e in expected]
    assert all(s[1] for s in shards) and sum(int(s[2]) for s in shards) == 20
    placements = conn.execute(
        f"SELECT nodename, nodeport, shardid, success, result "
        f"FROM run_command_on_placements('{table}', 'SELECT count(*) FROM %s') ORDER BY shardid"
    ).fetchall()
    assert {p[0] for p in placements} == {w.name for w in cluster.workers}
    assert [(p[2], p[4]) for p in placements] == [(s[0], s[2]) for s in shards]
