"""Database: its services up and healthy (their healthcheck) and a real query answered; on Citus, the
coordinator and every worker, with citus loaded on each."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import psycopg

from deploycheck.engine.compose import Compose
from deploycheck.engine.containers import State, evidence, project_containers
from deploycheck.engine.polling import poll
from deploycheck.engine.target import Target
from deploycheck.request.secrets import Secret, mask_text
from deploycheck.stack import Connection, coordinator_connection
from deploycheck.stages import StageFailed
from deploycheck.stages.common import up, wait

RETRY_PAUSE = 0.5
UNREACHABLE_GRACE_SECONDS = 5  # a worker the coordinator cannot reach yet (its name not resolving yet)


def start(target: Target, compose: Compose, early: Sequence[str]) -> None:
    """The nodes up and healthy and answering a query; on Citus, the citus extension loaded on each.

    ``early``: services started by the same `compose up` so that their start overlaps the database's (on a
    first deploy: the API and Nginx); their own stages still wait for them after the migrations, and meanwhile
    one that exits or restarts fails this stage at once, with its logs.
    """
    environment, client = target.environment, target.docker
    nodes = environment.node_services
    # Restart counts before `compose up`: a container that dies (and restarts) while compose is still starting
    # the others must fail the stage too, not only one that dies once the wait has begun.
    before = {c.id: State.of(c).restarts for c in project_containers(client, environment.compose_project).values()}
    up(target, compose, [*nodes, *early])
    # The nodes' healthchecks (a docker exec each) are run once the database answers on every node, asked through
    # one connection; a node that answers wrongly is judged once the healthchecks pass, as before.
    answered: list[bool] = []  # the probe passed: every node answered, so asking again would say the same

    def answers() -> bool:
        if database_problem(target) is not None:
            return False
        answered.append(True)
        return True

    wait(target, nodes, watch=early, restarts_before=before, answers=answers)
    if answered:
        return
    last: list[NodeProblem] = []

    def settled() -> tuple[NodeProblem | None] | None:
        # Healthy nodes answer at once; a worker that the coordinator cannot reach yet gets a few seconds.
        problem = database_problem(target)
        if problem is not None and problem.unreachable:
            last[:] = [problem]
            return None
        return (problem,)

    def failure(problem: NodeProblem) -> StageFailed:
        container = project_containers(client, environment.compose_project)[problem.service]
        return StageFailed(f"{problem.service}: {problem.reason}", evidence(container, environment.all_secrets))

    (problem,) = poll(settled, seconds=UNREACHABLE_GRACE_SECONDS, every=RETRY_PAUSE, timed_out=lambda: failure(last[0]))
    if problem is not None:
        raise failure(problem)


@dataclass(frozen=True)
class NodeProblem:
    service: str
    reason: str
    unreachable: bool = False  # from the coordinator: may pass once the worker's name resolves


def database_problem(target: Target) -> NodeProblem | None:
    """A real query on every node, through the coordinator on Citus (one connection, instead of a `docker exec`
    per node: ~0.2 s): the first node that does not answer or whose citus extension is not loaded; None if none."""
    environment = target.environment
    database = environment.stack.database
    try:
        with coordinator_connection(target) as conn:
            if not database.is_citus:
                conn.execute("SELECT 1").fetchone()
                return None
            return citus_problem_through(
                conn, database.service, environment.worker_services, environment.all_secrets, database.port
            )
    except psycopg.Error as error:
        first_line = mask_text(str(error).strip().splitlines()[0], environment.all_secrets)
        return NodeProblem(database.service, f"the database did not answer a query: {first_line}")


def citus_problem_through(
    conn: Connection, coordinator: str, workers: list[str], secrets: list[Secret], port: int = 5432
) -> NodeProblem | None:
    """`database_problem` of a Citus cluster, on an open connection to its coordinator (service ``coordinator``).

    ``citus_version()`` fails on a node where citus is not loaded ("Citus can only be loaded via
    shared_preload_libraries") even though pg_extension lists it, so every node is asked that; psycopg errors
    other than the coordinator's own answer propagate."""
    query = "SELECT citus_version()"
    try:
        with conn.transaction():
            conn.execute(query).fetchone()
    except psycopg.errors.DatabaseError as error:
        if isinstance(error, psycopg.OperationalError):
            raise
        words = mask_text(str(error).strip().splitlines()[0], secrets)
        return NodeProblem(coordinator, f"citus does not answer in database {conn.info.dbname}: {words}")
    # Citus's own fan-out; the workers are not registered yet, so it is given their addresses.
    rows = conn.execute(
        "SELECT node_name, success, result FROM master_run_on_worker(%s, %s, %s, true)",
        (workers, [port] * len(workers), [query] * len(workers)),
    ).fetchall()
    for node, success, result in rows:
        if success:
            continue
        words = mask_text(" ".join(str(result).split()), secrets)
        if words.startswith("failed to connect to"):
            return NodeProblem(str(node), f"the coordinator could not query it: {words}", unreachable=True)
        return NodeProblem(str(node), f"citus does not answer in database {conn.info.dbname}: {words}")
    return None
