"""The API: liveness, readiness, the deployed release, its OpenAPI, and a write that lands in Citus."""

from __future__ import annotations

from concurrent.futures import Future

import pytest
import requests

from deploycheck.stack import Stack

TIMEOUT = 10

pytestmark = pytest.mark.evidence("api", "coordinator")


@pytest.mark.smoke
def test_health(http: requests.Session, base_url: str) -> None:
    response = http.get(f"{base_url}/health", timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ok"}


@pytest.mark.smoke
def test_ready(http: requests.Session, base_url: str, stack: Stack) -> None:
    response = http.get(f"{base_url}/ready", timeout=TIMEOUT)
    assert response.status_code == 200, f"/ready answered {response.status_code}: {response.text}"
    assert response.json()["workers"] == stack.environment.expected_workers


@pytest.mark.smoke
def test_version_is_the_deployed_release(http: requests.Session, base_url: str, stack: Stack) -> None:
    response = http.get(f"{base_url}/version", timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    assert response.json()["release"] == stack.release


def test_openapi_is_served(http: requests.Session, base_url: str) -> None:
    response = http.get(f"{base_url}/openapi.json", timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    paths = response.json()["paths"]
    for path in ("/health", "/ready", "/version", "/stores", "/stores/{store_id}/orders"):
        assert path in paths, f"{path} missing from the OpenAPI document"
    docs = http.get(f"{base_url}/docs", timeout=TIMEOUT)
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


def test_write_then_read_lands_in_citus(background_write_then_read: dict[str, Future[None]], base_url: str) -> None:
    """A store and two orders written through the API, read back, and counted in the workers' shards."""
    background_write_then_read[base_url].result()  # its assertions fail the check here


def test_order_for_an_unknown_store_is_404(http: requests.Session, base_url: str) -> None:
    response = http.post(f"{base_url}/stores/987654321/orders", json={"item": "x", "amount_cents": 1}, timeout=TIMEOUT)
    assert response.status_code == 404, response.text


def test_write_without_the_api_token_is_refused(base_url: str) -> None:
    response = requests.post(f"{base_url}/stores", json={"name": "no token"}, timeout=TIMEOUT)
    assert response.status_code == 401, response.text
    wrong = requests.post(
        f"{base_url}/stores", json={"name": "wrong"}, headers={"Authorization": "Bearer wrong"}, timeout=TIMEOUT
    )
    assert wrong.status_code == 401, wrong.text
