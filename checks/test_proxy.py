"""The proxy in front of the HTTP services: its configuration test passes, it answers its own health request,
each declared header is on its answers, and it answers with its own error when an upstream connection fails
(its declared failure probe, asked from inside it: no service is touched)."""

from __future__ import annotations

from concurrent.futures import Future

import pytest
import requests

from deploycheck.stack import Stack

TIMEOUT = 10

pytestmark = pytest.mark.evidence("proxy")


@pytest.fixture(scope="session")
def proxied(stack: Stack) -> Stack:
    if stack.environment.stack.proxy is None:
        pytest.skip("not applicable: the stack has no proxy (stack.proxy)")
    return stack


def test_configuration_test_passes(proxied: Stack, background_proxy_config_test: Future[tuple[int, str]]) -> None:
    code, output = background_proxy_config_test.result()
    assert code == 0, output


@pytest.mark.smoke
def test_own_health(http: requests.Session, proxied: Stack) -> None:
    health = proxied.environment.stack.proxy.health  # type: ignore[union-attr]
    response = http.request(health.method, f"{proxied.proxy_url()}{health.path}", timeout=TIMEOUT)
    assert response.status_code == health.status, response.text[:300]


@pytest.mark.parametrize("kind", ["a proxied answer", "an answer of its own"])
def test_declared_headers(http: requests.Session, proxied: Stack, kind: str) -> None:
    proxy = proxied.environment.stack.proxy
    assert proxy is not None
    if not proxy.headers:
        pytest.skip("not applicable: the proxy declares no header (stack.proxy.headers)")
    if kind == "a proxied answer" and proxy.routes:
        service = next(iter(proxy.routes))
        url = f"{proxied.url(service, 'proxy')}{proxied.http(service).ready.path}"
    else:
        url = f"{proxied.proxy_url()}{proxy.health.path}"
    response = http.get(url, timeout=TIMEOUT)
    for name, value in proxy.headers.items():
        assert name in response.headers, f"{name} missing on {url} ({response.status_code})"
        if value:
            assert response.headers[name] == value, f"{name}: {response.headers[name]!r} on {url}"


def test_own_error_when_an_upstream_fails(
    proxied: Stack, background_failure_probe: Future[tuple[int, str]] | None
) -> None:
    """A real failed upstream connection inside the proxy (its probe path proxies to a closed port) gives the
    proxy's own error status; the services are not touched, so a deploy verified this way has no downtime."""
    probe = proxied.environment.stack.proxy.failure_probe  # type: ignore[union-attr]
    if background_failure_probe is None or probe is None:
        pytest.skip("not applicable: the proxy declares no failure probe (stack.proxy.failure_probe)")
    code, text = background_failure_probe.result()
    assert code == 0, f"the probe request inside the proxy failed: {text}"
    status_line = text.replace("\r\n", "\n").split("\n", 1)[0]
    assert status_line.split()[1] == str(probe.status), f"{probe.path} answered {status_line!r}"
