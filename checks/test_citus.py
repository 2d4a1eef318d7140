"""The Citus cluster: one version everywhere, the contract's workers active and healthy, distributed SQL working.
Not applicable to a plain PostgreSQL database (skipped as such)."""

from __future__ import annotations

from concurrent.futures import Future

import psycopg
import pytest

from deploycheck.stack import Stack

pytestmark = [pytest.mark.evidence("database", "workers"), pytest.mark.usefixtures("citus_only")]


# What every node is asked, in one `run_command_on_all_nodes` for all the checks below (each call opens a new TLS
# and SCRAM connection to every node: three calls cost three times the connections): its citus_version(), the
# citus extension's version, and so that it runs commands at all.
NODE_QUESTIONS = {
    "SELECT citus_version()": "citus_version()",
    "SELECT extversion FROM pg_extension WHERE extname = 'citus'": "(SELECT extversion FROM pg_extension WHERE extname = 'citus')",
}
SEPARATOR = "\x1f"


@pytest.fixture(scope="session")
def node_answers(coordinator: psycopg.Connection[tuple[object, ...]]) -> dict[str, tuple[bool, list[str] | str]]:
    """Each node's answers to NODE_QUESTIONS, by node name: (True, [answers]) or (False, why it did not answer)."""
    command = "SELECT " + " || chr(31) || ".join(NODE_QUESTIONS.values())
    rows = coordinator.execute(
        "SELECT n.nodename, r.success, r.result FROM run_command_on_all_nodes(%s) r JOIN pg_dist_node n USING (nodeid)",
        (command,),
    ).fetchall()
    return {
        str(name): (True, str(result).split(SEPARATOR)) if success else (False, str(result))
        for name, success, result in rows
    }


@pytest.mark.parametrize("query", list(NODE_QUESTIONS))
def test_every_node_runs_the_same_citus_version(
    node_answers: dict[str, tuple[bool, list[str] | str]], stack: Stack, query: str
) -> None:
    failed = [f"node {name}: {answer}" for name, (success, answer) in node_answers.items() if not success]
    assert not failed, f"{query} failed on {', '.join(failed)}"
    position = list(NODE_QUESTIONS).index(query)
    versions = {answer[position] for _, answer in node_answers.values()}
    assert len(node_answers) == len(stack.environment.node_services), (
        f"{len(node_answers)} nodes answered: {node_answers}"
    )
    assert len(versions) == 1, f"nodes differ: {sorted(versions)}"


@pytest.mark.smoke
def test_active_workers_equal_the_expected_count(
    coordinator: psycopg.Connection[tuple[object, ...]], stack: Stack
) -> None:
    workers = sorted(str(name) for name, _ in coordinator.execute("SELECT * FROM citus_get_active_worker_nodes()"))
    assert workers == sorted(stack.environment.worker_services)


def test_cluster_node_health_is_all_true(
    background_cluster_health: Future[list[tuple[str, str, bool | None]]] | None, stack: Stack
) -> None:
    assert background_cluster_health is not None
    rows = background_cluster_health.result()
    nodes = len(stack.environment.node_services)
    assert len(rows) == nodes * nodes, f"expected a {nodes} x {nodes} matrix, got {len(rows)} rows"
    bad = [f"{a}->{b}: {r}" for a, b, r in rows if r is not True]
    assert not bad, f"unhealthy connections: {', '.join(bad)}"


@pytest.fixture(scope="session")
def dist_nodes(
    coordinator: psycopg.Connection[tuple[object, ...]], stack: Stack
) -> dict[str, list[tuple[object, ...]]]:
    """The pg_dist_node rows on port 5432, read once for every worker check, by node name."""
    by_node: dict[str, list[tuple[object, ...]]] = {}
    for nodename, *row in coordinator.execute(
        "SELECT nodename, isactive, noderole::text, shouldhaveshards FROM pg_dist_node WHERE nodeport = %s",
        (stack.environment.stack.database.port,),
    ):
        by_node.setdefault(str(nodename), []).append(tuple(row))
    return by_node


def test_worker_runs_commands(node_answers: dict[str, tuple[bool, list[str] | str]], worker: str) -> None:
    """The coordinator's command reached the worker and was answered (``node_answers``: run_command_on_all_nodes)."""
    assert worker in node_answers, f"run_command_on_all_nodes did not reach {worker}: {sorted(node_answers)}"
    success, answer = node_answers[worker]
    assert success and len(answer) == len(NODE_QUESTIONS), f"run_command_on_all_nodes on {worker}: {answer}"


def test_worker_is_registered_active_primary(dist_nodes: dict[str, list[tuple[object, ...]]], worker: str) -> None:
    rows = dist_nodes.get(worker, [])
    assert rows == [(True, "primary", True)], f"pg_dist_node rows of {worker}: {rows}"


def test_distributed_table_round_trip(background_round_trip: Future[None] | None) -> None:
    """Create a distributed table, write through the coordinator, read back, see shards on every worker, drop it."""
    assert background_round_trip is not None
    background_round_trip.result()  # its assertions fail the check here
