"""The reference app itself (stack/api, stack/nginx): what no other stack shares, checked beside the built-in
checks, loaded the way a team's own check modules are (check_modules in environments.toml)."""

from __future__ import annotations

import json
import time
from concurrent.futures import Future

import pytest
import requests

from deploycheck.engine.polling import poll
from deploycheck.stack import Stack

TIMEOUT = 10
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": None,  # present; its value is the config's business
    "Permissions-Policy": None,
}

pytestmark = pytest.mark.evidence("api", "coordinator")


@pytest.mark.smoke
def test_health_says_ok(api_http: requests.Session, base_url: str) -> None:
    response = api_http.get(f"{base_url}/health", timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ok"}


@pytest.mark.smoke
def test_ready_counts_the_workers(api_http: requests.Session, base_url: str, stack: Stack) -> None:
    response = api_http.get(f"{base_url}/ready", timeout=TIMEOUT)
    assert response.status_code == 200, f"/ready answered {response.status_code}: {response.text}"
    assert response.json()["workers"] == len(stack.environment.stack.database.worker_services)


def test_openapi_is_served(api_http: requests.Session, base_url: str) -> None:
    response = api_http.get(f"{base_url}/openapi.json", timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    paths = response.json()["paths"]
    for path in ("/health", "/ready", "/version", "/stores", "/stores/{store_id}/orders"):
        assert path in paths, f"{path} missing from the OpenAPI document"
    docs = api_http.get(f"{base_url}/docs", timeout=TIMEOUT)
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


def test_write_then_read_lands_in_citus(background_write_then_read: dict[str, Future[None]], base_url: str) -> None:
    """A store and two orders written through the API, read back, and counted in the workers' shards."""
    background_write_then_read[base_url].result()  # its assertions fail the check here


def test_order_for_an_unknown_store_is_404(api_http: requests.Session, base_url: str) -> None:
    response = api_http.post(
        f"{base_url}/stores/987654321/orders", json={"item": "x", "amount_cents": 1}, timeout=TIMEOUT
    )
    assert response.status_code == 404, response.text


def test_write_without_the_api_token_is_refused(base_url: str) -> None:
    response = requests.post(f"{base_url}/stores", json={"name": "no token"}, timeout=TIMEOUT)
    assert response.status_code == 401, response.text
    wrong = requests.post(
        f"{base_url}/stores", json={"name": "wrong"}, headers={"Authorization": "Bearer wrong"}, timeout=TIMEOUT
    )
    assert wrong.status_code == 401, wrong.text


@pytest.mark.evidence("nginx", "api")
@pytest.mark.parametrize("header", sorted(SECURITY_HEADERS))
@pytest.mark.parametrize("path", ["/version", "/no-such-path"])
def test_security_header(http: requests.Session, stack: Stack, header: str, path: str) -> None:
    response = http.get(f"{stack.proxy_url()}{path}", timeout=TIMEOUT)
    assert header in response.headers, f"{header} missing on {path} ({response.status_code})"
    expected = SECURITY_HEADERS[header]
    if expected is not None:
        assert response.headers[header] == expected


@pytest.mark.evidence("nginx")
def test_server_version_is_hidden(http: requests.Session, stack: Stack) -> None:
    for path in ("/version", "/no-such-path"):
        response = http.get(f"{stack.proxy_url()}{path}", timeout=TIMEOUT)
        server = response.headers.get("Server", "")
        assert not any(ch.isdigit() for ch in server), f"Server header leaks a version: {server!r}"
    big = http.post(f"{stack.proxy_url()}/stores", data=b"x" * (2 * 1024 * 1024), timeout=TIMEOUT)
    assert "nginx/" not in big.text, "an nginx error page shows its version"


@pytest.mark.evidence("nginx")
def test_gzip(http: requests.Session, stack: Stack) -> None:
    response = http.get(f"{stack.proxy_url()}/openapi.json", headers={"Accept-Encoding": "gzip"}, timeout=TIMEOUT)
    assert response.status_code == 200
    assert response.headers.get("Content-Encoding") == "gzip"
    assert "paths" in response.json()  # requests decompressed it: the body is valid gzip of the document


@pytest.mark.evidence("nginx")
def test_request_size_limit(http: requests.Session, stack: Stack) -> None:
    response = http.post(f"{stack.proxy_url()}/stores", data=b"x" * (2 * 1024 * 1024), timeout=TIMEOUT)
    assert response.status_code == 413
    assert response.json() == {"error": "request body too large", "status": 413}


@pytest.mark.evidence("nginx")
def test_access_log_is_json(http: requests.Session, stack: Stack) -> None:
    marker = f"/health?probe={time.time_ns()}"
    assert http.get(f"{stack.proxy_url()}{marker}", timeout=TIMEOUT).status_code == 200
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


@pytest.mark.evidence("nginx")
def test_the_upstream_failure_page_is_json(background_failure_probe: Future[tuple[int, str]] | None) -> None:
    """The JSON 502 of the server's error pages, without HTML or version (the built-in check sees the status)."""
    assert background_failure_probe is not None, "the reference stack declares its failure probe"
    code, text = background_failure_probe.result()
    assert code == 0, f"curl inside nginx failed: {text}"
    head, _, body = text.replace("\r\n", "\n").partition("\n\n")
    headers = {
        name.strip().lower(): value.strip() for name, _, value in (h.partition(":") for h in head.splitlines()[1:])
    }
    assert headers.get("content-type", "").startswith("application/json"), headers
    assert json.loads(body) == {"error": "upstream unavailable", "status": 502}
    assert "nginx/" not in text and "<html" not in body.lower()


@pytest.mark.evidence("nginx")
def test_the_failure_probe_is_refused_from_outside(http: requests.Session, stack: Stack) -> None:
    proxy = stack.environment.stack.proxy
    assert proxy is not None and proxy.failure_probe is not None
    response = http.get(f"{stack.proxy_url()}{proxy.failure_probe.path}", timeout=TIMEOUT)
    assert response.status_code == 403, f"{proxy.failure_probe.path} answered {response.status_code} from outside"
    assert response.json() == {"error": "forbidden", "status": 403}
