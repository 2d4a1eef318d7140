"""What deploycheck asks a Citus cluster as a whole (the citus stage and the checks alike)."""

from __future__ import annotations

from psycopg import sql

from deploycheck.stack import Connection


def health_matrix(conn: Connection) -> list[tuple[str, str, bool | None]]:
    """Every active node's connection to every active node, itself included, as `citus_check_cluster_node_health()`
    reports it: (from, to, result), result None when the source itself cannot be reached.

    Citus's own function asks the sources one after another from the coordinator, so its (N+1)^2 new TLS and SCRAM
    connections run one at a time on a machine of several cores. Here the coordinator sends every source its row
    at once (`run_command_on_all_nodes`, in parallel), and each source runs `citus_check_connection_to_node` for
    every target, the same function Citus's matrix calls for each pair."""
    nodes = conn.execute(
        'SELECT nodeid, nodename, nodeport FROM pg_dist_node WHERE isactive ORDER BY nodename COLLATE "C", nodeport'
    ).fetchall()
    targets = sql.SQL(", ").join(
        sql.SQL("({}, {}, {})").format(sql.Literal(name), sql.Literal(port), sql.Literal(order))
        for order, (_, name, port) in enumerate(nodes)
    )
    row = sql.SQL(
        "SELECT string_agg(citus_check_connection_to_node(name, port)::text, ',' ORDER BY position) "
        "FROM (VALUES {}) AS targets(name, port, position)"
    ).format(targets)
    answers = {
        nodeid: str(result).split(",") if success else None
        for nodeid, success, result in conn.execute(
            "SELECT nodeid, success, result FROM run_command_on_all_nodes(%s, parallel => true)",
            (row.as_string(conn),),
        )
    }
    matrix: list[tuple[str, str, bool | None]] = []
    for nodeid, source, _ in nodes:
        results = answers.get(nodeid)
        for position, (_, target, _) in enumerate(nodes):
            result = None if results is None or position >= len(results) else results[position] == "true"
            matrix.append((str(source), str(target), result))
    return matrix
