"""Citus: the coordinator's host, each worker registered idempotently after a connectivity check (with retries
within the stage's deadline), then the active worker count and the cluster's health matrix verified."""

from __future__ import annotations

import time

import psycopg

from deploycheck.cluster import health_matrix
from deploycheck.engine.polling import poll
from deploycheck.engine.target import Target
from deploycheck.stack import Connection, coordinator_connection
from deploycheck.stages import StageFailed

RETRY_PAUSE = 0.5


def _register(conn: Connection, worker: str, port: int, seconds: float) -> None:
    last_error = [""]

    def registered() -> bool | None:
        try:
            reachable = conn.execute("SELECT citus_check_connection_to_node(%s, %s)", (worker, port)).fetchone()
            if reachable and reachable[0]:
                conn.execute("SELECT citus_add_node(%s, %s)", (worker, port))
                return True
            last_error[0] = f"the coordinator cannot connect to {worker}:{port}"
        except psycopg.Error as error:
            last_error[0] = str(error).strip().splitlines()[0]
        return None

    poll(
        registered,
        seconds=seconds,
        every=RETRY_PAUSE,
        timed_out=lambda: StageFailed(f"worker {worker} could not be registered: {last_error[0]}"),
    )


def configure(target: Target) -> str:
    """Register the workers and verify the cluster; returns what ``citus_version()`` says."""
    environment = target.environment
    database = environment.stack.database
    deadline = time.monotonic() + environment.timeouts.stage
    with coordinator_connection(target) as conn:
        conn.execute("SELECT citus_set_coordinator_host(%s, %s)", (database.service, database.port))
        for worker in database.worker_services:
            _register(conn, worker, database.port, max(0.0, deadline - time.monotonic()))
        row = conn.execute("SELECT count(*) FROM citus_get_active_worker_nodes()").fetchone()
        active = int(str(row[0])) if row else 0
        expected = len(database.worker_services)
        if active != expected:
            raise StageFailed(f"{active} active Citus workers, expected {expected}")
        unhealthy = [(a, b, r) for a, b, r in health_matrix(conn) if r is not True]
        if unhealthy:
            pairs = ", ".join(f"{a}->{b}: {r}" for a, b, r in unhealthy)
            raise StageFailed(f"cluster health check failed for {pairs}")
        version = conn.execute("SELECT citus_version()").fetchone()
    return str(version[0]) if version else "unknown"
