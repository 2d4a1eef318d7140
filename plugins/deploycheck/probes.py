"""Probes the built-in checks run in the background (the ``background`` pool, and the ``background_*`` fixtures
of deploycheck.fixtures.stack), each with its own connection or Docker client. A one-query probe returns what it
saw and its check asserts on it; a probe of several steps asserts as it goes (pytest rewrites this module's
asserts), and its check re-raises that."""

from __future__ import annotations

import uuid

from deploycheck.cluster import health_matrix
from deploycheck.engine.commands import Command
from deploycheck.stack import Stack


def cluster_health_matrix(stack: Stack) -> list[tuple[str, str, bool | None]]:
    """The (N+1) x (N+1) connection matrix (``health_matrix``), on a session of its own."""
    with stack.connect() as conn:
        return health_matrix(conn)


def distributed_table_round_trip(stack: Stack) -> None:
    """Create a distributed table, write through the coordinator, read back, see shards on every worker, drop it."""
    table = f"deploycheck_probe_{uuid.uuid4().hex[:8]}"
    workers = stack.environment.stack.database.worker_services
    with stack.connect() as conn:
        conn.execute(f"CREATE TABLE {table} (tenant_id bigint NOT NULL, payload text NOT NULL)")
        try:
            # At least one shard per worker, so that every worker must hold some (4 left 8 workers half idle).
            shards = max(4, len(workers))
            conn.execute("SELECT create_distributed_table(%s, 'tenant_id', shard_count => %s)", (table, shards))
            conn.execute(
                f"INSERT INTO {table} (tenant_id, payload) SELECT i, 'row ' || i FROM generate_series(1, 40) AS i"
            )
            row = conn.execute(f"SELECT count(*), sum(tenant_id) FROM {table}").fetchone()
            assert row == (40, 820), f"read back {row} from {table}"
            assert conn.execute(f"SELECT payload FROM {table} WHERE tenant_id = 7").fetchall() == [("row 7",)]
            query = "SELECT DISTINCT nodename FROM citus_shards WHERE table_name = %s::regclass"
            nodes = {str(name) for (name,) in conn.execute(query, (table,))}
            # With every placement on a worker, the count above was read from the workers' shard tables, over this
            # session's connections. (run_command_on_placements would count them again on a new TLS and SCRAM
            # connection per shard: 8 more handshakes at 8 workers, for what the count already says.)
            assert nodes == set(workers), f"shards of {table} are on {sorted(nodes)}"
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
