"""The HTTP services: each live and ready, directly and through the proxy; each naming the deployed release
where it says which it runs; and the environment's declarative HTTP checks."""

from __future__ import annotations

import re
from typing import Any

import pytest
import requests

from deploycheck.plugin import Run
from deploycheck.request.environment import HttpCheck
from deploycheck.stack import Stack

TIMEOUT = 10

pytestmark = pytest.mark.evidence("http")


@pytest.mark.smoke
def test_live(http: requests.Session, stack: Stack, http_service: str, via: str) -> None:
    live = stack.http(http_service).live
    response = http.request(live.method, f"{stack.url(http_service, via)}{live.path}", timeout=TIMEOUT)
    assert response.status_code == live.status, f"{live.path} answered {response.status_code}: {response.text[:300]}"


@pytest.mark.smoke
def test_ready(http: requests.Session, stack: Stack, http_service: str, via: str) -> None:
    ready = stack.http(http_service).ready
    response = http.request(ready.method, f"{stack.url(http_service, via)}{ready.path}", timeout=TIMEOUT)
    assert response.status_code == ready.status, f"{ready.path} answered {response.status_code}: {response.text[:300]}"


@pytest.mark.smoke
def test_names_the_deployed_release(http: requests.Session, stack: Stack, http_service: str) -> None:
    probe = stack.http(http_service).release
    if probe is None:
        pytest.skip(f"not applicable: {http_service} declares no release probe (stack.http release)")
    response = http.get(f"{stack.url(http_service)}{probe.path}", timeout=TIMEOUT)
    assert response.status_code == 200, response.text[:300]
    assert response.json().get(probe.field) == stack.release, f"{probe.path} says {response.json()!r}"


def _contains(answer: Any, expected: Any) -> bool:
    """Whether ``answer`` holds ``expected``: tables by their keys, lists item by item, values equal."""
    if isinstance(expected, dict):
        return isinstance(answer, dict) and all(k in answer and _contains(answer[k], v) for k, v in expected.items())
    if isinstance(expected, list):
        return isinstance(answer, list) and len(answer) == len(expected) and all(map(_contains, answer, expected))
    return bool(answer == expected)


def _headers(check: HttpCheck, stack: Stack) -> dict[str, str]:
    """The check's request headers, ``{secret:NAME}`` replaced by that secret (only here, as it is sent)."""

    def reveal(match: re.Match[str]) -> str:
        return stack.environment.secret(match.group(1)).reveal()

    return {name: re.sub(r"\{secret:([a-z][a-z0-9_]*)\}", reveal, value) for name, value in check.headers.items()}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "declared" in metafunc.fixturenames:
        run = Run.of(metafunc.config)
        proxy = run.environment.stack.proxy
        routes = proxy.routes if proxy is not None else {}
        cases = [(check, via) for check in run.environment.http_checks for via in check.ways(check.service in routes)]
        metafunc.parametrize("declared", cases, ids=[f"{c.method} {c.service}{c.path} {v}" for c, v in cases] or None)


def test_declared_http_check(http: requests.Session, stack: Stack, declared: tuple[HttpCheck, str]) -> None:
    check, via = declared
    url = f"{stack.url(check.service, via)}{check.path}"
    response = http.request(check.method, url, json=check.body, headers=_headers(check, stack), timeout=TIMEOUT)
    assert response.status_code == check.status, (
        f"{check.method} {check.path} answered {response.status_code}: {response.text[:300]}"
    )
    if check.json is not None:
        assert _contains(response.json(), check.json), f"{check.path} answered {response.text[:500]}"
