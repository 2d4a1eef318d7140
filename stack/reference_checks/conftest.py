"""The reference app's own checks' fixtures: HTTP with the API's token (its writes need it), the API reached
directly and through Nginx, and the write-then-read probe they run in the background.

These checks are loaded the way any team's are: the environment names this folder in check_modules."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import pytest
import requests

from deploycheck.stack import Stack, StackSession

pytest.register_assert_rewrite(f"{__package__}.probes")  # the write-then-read probe asserts for its check

from .probes import write_then_read  # noqa: E402  # after the rewrite registration


@pytest.fixture(scope="session")
def api_http(stack: Stack) -> Iterator[requests.Session]:
    """HTTP with the API token the environment names (the API refuses writes without it)."""
    with StackSession() as session:
        session.headers["Authorization"] = f"Bearer {stack.environment.secret('api_token').reveal()}"
        yield session


@pytest.fixture(params=["direct", "proxy"])
def base_url(request: pytest.FixtureRequest, stack: Stack) -> str:
    """The API, reached directly and through Nginx."""
    return stack.url("api", str(request.param))


@pytest.fixture(scope="session")
def background_write_then_read(
    stack: Stack, background: ThreadPoolExecutor, writes_refused: bool
) -> dict[str, Future[None]]:
    """The write-then-read round trip, directly and through Nginx (the ``base_url`` of the API checks); under a
    deploy's write fence, the API's refusal of the write, then the round trip's reads."""
    urls = [stack.url("api", via) for via in ("direct", "proxy")]
    return {url: background.submit(write_then_read, stack, url, writes_refused) for url in urls}
