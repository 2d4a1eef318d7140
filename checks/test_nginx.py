"""Nginx in front of the API: a valid config, proxying, security headers, no version leak, gzip, limits,
a JSON access log, and a clean error page when the upstream fails."""

from __future__ import annotations

import json
import time
from concurrent.futures import Future

import pytest
import requests

from deploycheck.engine.polling import poll
from deploycheck.stack import Stack

from .probes import UPSTREAM_FAILURE_PROBE

TIMEOUT = 10
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": None,  # present; its value is the config's business
    "Permissions-Policy": None,
}

pytestmark = pytest.mark.evidence("nginx", "api")


def test_config_test_passes(background_nginx_config_test: Future[tuple[int, str]]) -> None:
    code, output = background_nginx_config_test.result()
    assert code == 0, output


@pytest.mark.smoke
def test_own_health_location(http: requests.Session, stack: Stack) -> None:
    response = http.get(f"{stack.proxy_url}/nginx-health", timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ok"}


def test_proxies_to_the_api(http: requests.Session, stack: Stack) -> None:
    direct = http.get(f"{stack.api_url}/version", timeout=TIMEOUT)
    proxied = http.get(f"{stack.proxy_url}/version", timeout=TIMEOUT)
    assert proxied.status_code == 200, proxied.text
    assert proxied.json() == direct.json()


@pytest.mark.parametrize("header", sorted(SECURITY_HEADERS))
@pytest.mark.parametrize("path", ["/version", "/no-such-path"])
def test_security_header(http: requests.Session, stack: Stack, header: str, path: str) -> None:
    response = http.get(f"{stack.proxy_url}{path}", timeout=TIMEOUT)
    assert header in response.headers, f"{header} missing on {path} ({response.status_code})"
    expected = SECURITY_HEADERS[header]
    if expected is not None:
        assert response.headers[header] == expected


def test_server_version_is_hidden(http: requests.Session, stack: Stack) -> None:
    for path in ("/version", "/no-such-path"):
        response = http.get(f"{stack.proxy_url}{path}", timeout=TIMEOUT)
        server = response.headers.get("Server", "")
        assert not any(ch.isdigit() for ch in server), f"Server header leaks a version: {server!r}"
    big = http.post(f"{stack.proxy_url}/stores", data=b"x" * (2 * 1024 * 1024), timeout=TIMEOUT)
    assert "nginx/" not in big.text, "an nginx error page shows its version"


def test_gzip(http: requests.Session, stack: Stack) -> None:
    response = http.get(f"{stack.proxy_url}/openapi.json", headers={"Accept-Encoding": "gzip"}, timeout=TIMEOUT)
    assert response.status_code == 200
    assert response.headers.get("Content-Encoding") == "gzip"
    assert "paths" in response.json()  # requests decompressed it: the body is valid gzip of the document


def test_request_size_limit(http: requests.Session, stack: Stack) -> None:
    response = http.post(f"{stack.proxy_url}/stores", data=b"x" * (2 * 1024 * 1024), timeout=TIMEOUT)
    assert response.status_code == 413


def test_access_log_is_json(http: requests.Session, stack: Stack) -> None:
    marker = f"/health?probe={time.time_ns()}"
    assert http.get(f"{stack.proxy_url}{marker}", timeout=TIMEOUT).status_code == 200
    nginx = stack.containers["nginx"]

    def logged() -> list[dict[str, object]] | None:
        lines = nginx.logs(stdout=True, stderr=False, tail=50).decode(errors="replace").splitlines()
        return [json.loads(line) for line in lines if marker in line] or None

    # The line is usually there on the second read.
    entries = poll(
        logged,
        seconds=stack.environment.timeouts.check,
        every=0.05,
        timed_out=lambda: AssertionError(f"no access log line for {marker}"),
    )
    assert entries[-1].get("status") in (200, "200"), entries[-1]


def test_clean_error_page_when_the_upstream_fails(background_upstream_failure: Future[tuple[int, str]]) -> None:
    """A real failed upstream connection inside Nginx (its probe location proxies to a closed port) gives the
    JSON 502 of the server's error pages, without HTML or version. The API is not touched: a deploy verified
    this way has no moment of downtime (stopping the API for this check took the service down ~2 s)."""
    code, text = background_upstream_failure.result()
    assert code == 0, f"curl inside nginx failed: {text}"
    head, _, body = text.replace("\r\n", "\n").partition("\n\n")
    status_line, *header_lines = head.splitlines()
    headers = {name.strip().lower(): value.strip() for name, _, value in (h.partition(":") for h in header_lines)}
    assert status_line.split()[1] == "502", f"{UPSTREAM_FAILURE_PROBE} answered {status_line!r}: {body}"
    assert headers.get("content-type", "").startswith("application/json"), headers
    assert json.loads(body) == {"error": "upstream unavailable", "status": 502}
    assert "nginx/" not in text and "<html" not in body.lower()


def test_upstream_failure_probe_is_refused_from_outside(http: requests.Session, stack: Stack) -> None:
    response = http.get(f"{stack.proxy_url}{UPSTREAM_FAILURE_PROBE}", timeout=TIMEOUT)
    assert response.status_code == 403, f"{UPSTREAM_FAILURE_PROBE} answered {response.status_code} from outside"
    assert response.json() == {"error": "forbidden", "status": 403}
