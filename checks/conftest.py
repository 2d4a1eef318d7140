"""What the built-in checks share: their parameters, from the environment's stack (every service of its
model, the database's nodes, the Citus workers, the HTTP services and how each is reached). Their background
probes are deploycheck's fixtures (``background_*``, deploycheck.fixtures.stack)."""

from __future__ import annotations

import pytest

from deploycheck.plugin import Run
from deploycheck.stack import Stack


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``service``: every service of the stack's model; ``node``: the database's; ``worker``: the Citus
    workers; ``http_service`` and ``via``: each HTTP service, directly and (where it has a route) through the
    proxy."""
    run = Run.of(metafunc.config)
    stack = run.environment.stack
    names = metafunc.fixturenames
    if "service" in names:
        metafunc.parametrize("service", run.model.names)
    if "node" in names:
        metafunc.parametrize("node", stack.database.node_services)
    if "worker" in names:
        metafunc.parametrize("worker", stack.database.worker_services)
    if "http_service" in names and "via" in names:
        routes = stack.proxy.routes if stack.proxy is not None else {}
        ways = [(s, v) for s in stack.http_services for v in ("direct", "proxy") if v == "direct" or s in routes]
        metafunc.parametrize(("http_service", "via"), ways, ids=[f"{s}-{v}" for s, v in ways])
    elif "http_service" in names:
        metafunc.parametrize("http_service", stack.http_services)


@pytest.fixture(scope="session")
def citus_only(stack: Stack) -> None:
    """The Citus checks are not applicable to a plain PostgreSQL database: reported so, not as failures."""
    if not stack.environment.stack.database.is_citus:
        pytest.skip("not applicable: the database is plain PostgreSQL")
