"""Background probes never iterate ``os.environ`` per request: pytest's main thread sets and removes
PYTEST_CURRENT_TEST at every phase of every test, and an iteration that meets the removal raises KeyError (a
check over SSH failed so: requests' proxy lookup in the Docker SDK's client, on a probe's thread)."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from deploycheck.engine import commands
from deploycheck.engine.target import docker_client
from deploycheck.stack import StackSession


@pytest.fixture
def server_url() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def test_a_stack_session_does_not_read_the_environment_per_request(
    server_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def iterated(*args: object, **kwargs: object) -> None:
        raise KeyError("PYTEST_CURRENT_TEST")  # what an iteration of os.environ met beside pytest's main thread

    monkeypatch.setattr(requests.sessions, "get_environ_proxies", iterated)
    with StackSession() as session:
        assert session.get(server_url, timeout=5).text == "ok"
    with requests.Session() as plain, pytest.raises(KeyError):  # the lookup a plain session makes per request
        plain.get(server_url, timeout=5)


def test_a_stack_session_keeps_the_ca_bundle_the_environment_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/team-ca.pem")
    assert StackSession().verify == "/etc/ssl/team-ca.pem"
    monkeypatch.delenv("REQUESTS_CA_BUNDLE")
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    assert StackSession().verify is True


def test_the_engine_client_reads_no_proxy_settings_per_request() -> None:
    client = docker_client()  # this machine's engine, as the run's
    try:
        assert client.api.trust_env is False
    finally:
        client.close()


def test_a_copy_of_the_environment_that_meets_a_removal_is_made_again() -> None:
    class Racing(Mapping[str, str]):
        """Loses a key between listing and reading it, once, as os.environ does beside pytest's main thread."""

        def __init__(self, **values: str) -> None:
            self._held = values
            self.raced = False

        def __iter__(self) -> Iterator[str]:
            if not self.raced:
                self.raced = True
                return iter([*self._held, "PYTEST_CURRENT_TEST"])
            return iter(self._held)

        def __getitem__(self, key: str) -> str:
            return self._held[key]

        def __len__(self) -> int:
            return len(self._held)

    racing = Racing(HOME="/root")
    with pytest.raises(KeyError):
        dict(Racing(HOME="/root"))  # a plain copy
    assert commands.environ_now(racing) == {"HOME": "/root"}
    assert racing.raced
