"""Fixtures the checks share: HTTP sessions, a coordinator connection, and per-service parametrization."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
import requests

from fixtures.stack import Stack
from plugins.deploycheck import ENVIRONMENT
from plugins.environment import Environment


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """`service`, `node` and `worker` parameters come from the selected environment (its worker count)."""
    environment = metafunc.config.stash[ENVIRONMENT]
    nodes = environment.node_services
    if "service" in metafunc.fixturenames:
        metafunc.parametrize("service", [*nodes, "api", "nginx"])
    if "node" in metafunc.fixturenames:
        metafunc.parametrize("node", nodes)
    if "worker" in metafunc.fixturenames:
        metafunc.parametrize("worker", environment.worker_services)


@pytest.fixture(scope="session")
def http(environment: Environment) -> Iterator[requests.Session]:
    """HTTP with the API token the environment names (the API refuses writes without it)."""
    with requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {environment.api_token.reveal()}"
        yield session


@pytest.fixture(scope="session")
def coordinator(stack: Stack) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    with stack.connect() as conn:
        yield conn


@pytest.fixture(params=["api", "proxy"])
def base_url(request: pytest.FixtureRequest, stack: Stack) -> str:
    """The API, reached directly and through Nginx."""
    return stack.api_url if request.param == "api" else stack.proxy_url
