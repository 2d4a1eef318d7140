"""What the built-in checks share: per-service parametrization, the API's two addresses, background probes.

(The fixtures any check may use, a team's own too, are deploycheck's: ``stack``, ``http``, ``coordinator``.)"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

from deploycheck.engine import commands
from deploycheck.plugin import Run
from deploycheck.stack import Stack

pytest.register_assert_rewrite(f"{__package__}.probes")  # the write-then-read probe asserts for its check

from .probes import (  # noqa: E402  # after the rewrite registration, which must come first
    UPSTREAM_FAILURE_PROBE,
    cluster_health_matrix,
    distributed_table_round_trip,
    run_in_container,
    write_then_read,
)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """`service`, `node` and `worker` parameters come from the selected environment (its worker count)."""
    environment = Run.of(metafunc.config).environment
    nodes = environment.node_services
    if "service" in metafunc.fixturenames:
        metafunc.parametrize("service", [*nodes, "api", "nginx"])
    if "node" in metafunc.fixturenames:
        metafunc.parametrize("node", nodes)
    if "worker" in metafunc.fixturenames:
        metafunc.parametrize("worker", environment.worker_services)


@pytest.fixture(params=["api", "proxy"])
def base_url(request: pytest.FixtureRequest, stack: Stack) -> str:
    """The API, reached directly and through Nginx."""
    return stack.api_url if request.param == "api" else stack.proxy_url


@pytest.fixture(scope="session")
def background() -> Iterator[ThreadPoolExecutor]:
    """Runs the slow, independent probes (the `background_*` fixtures) while the other checks run: pytest runs
    one test at a time, and the Citus health matrix and the distributed-table probe mostly wait on the nodes.
    Each probe has its own connection. At the end (an interrupt included) it waits for probes still running,
    so that nothing of theirs overlaps a rollback."""
    # A thread for each probe (there are 6): one queued behind the health matrix kept its check waiting ~1 s.
    with ThreadPoolExecutor(max_workers=8, thread_name_prefix="deploycheck-probe") as pool:
        yield pool


BACKGROUND_STARTED = pytest.StashKey[bool]()


@pytest.fixture(autouse=True)
def _background_probes_start_with_the_first_check(request: pytest.FixtureRequest) -> None:
    """The first check starts every `background_*` probe that a selected check uses."""
    session = request.session
    if request.node.get_closest_marker("stage") is not None or session.stash.get(BACKGROUND_STARTED, False):
        return
    session.stash[BACKGROUND_STARTED] = True
    wanted = {
        name
        for item in session.items
        for name in getattr(item, "fixturenames", ())  # test functions have them; other items none
        if name.startswith("background_")
    }
    for name in sorted(wanted):
        request.getfixturevalue(name)


# The background probes: the Citus ones grow with the workers, each docker exec costs ~70 ms; each has its own
# connection or Docker client.


@pytest.fixture(scope="session")
def background_cluster_health(stack: Stack, background: ThreadPoolExecutor) -> Future[list[tuple[object, ...]]]:
    return background.submit(cluster_health_matrix, stack)


@pytest.fixture(scope="session")
def background_round_trip(stack: Stack, background: ThreadPoolExecutor) -> Future[None]:
    return background.submit(distributed_table_round_trip, stack)


@pytest.fixture(scope="session")
def background_nginx_config_test(stack: Stack, background: ThreadPoolExecutor) -> Future[tuple[int, str]]:
    return background.submit(run_in_container, stack, "nginx", commands.nginx_config_test())


@pytest.fixture(scope="session")
def background_upstream_failure(stack: Stack, background: ThreadPoolExecutor) -> Future[tuple[int, str]]:
    """The upstream-failure probe location, asked from inside the nginx container, response headers included."""
    command = commands.http_get_with_headers(f"http://127.0.0.1{UPSTREAM_FAILURE_PROBE}")
    return background.submit(run_in_container, stack, "nginx", command)


@pytest.fixture(scope="session")
def background_write_then_read(stack: Stack, background: ThreadPoolExecutor) -> dict[str, Future[None]]:
    """The write-then-read round trip, directly and through Nginx (the `base_url` of the API checks)."""
    return {url: background.submit(write_then_read, stack, url) for url in (stack.api_url, stack.proxy_url)}
