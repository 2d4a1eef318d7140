"""The bounded load (scripts/load.py): a window's statistics from recorded requests, and the load's own counts
against what a tiny stdlib HTTP server answered (no Docker)."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from scripts.load import (
    BoundedLoad,
    LoadError,
    Recorded,
    longest_gap,
    lost_writes,
    window_stats,
)


def ok(kind: str, started: float, ended: float | None = None, order_id: int | None = None) -> Recorded:
    return Recorded(kind, started, started + 0.01 if ended is None else ended, 200, order_id=order_id)


def test_a_request_is_a_success_a_maintenance_answer_or_a_failure() -> None:
    assert ok("health", 0).succeeded and not ok("health", 0).failed
    maintenance = Recorded("read", 0, 1, 503, retry_after=True)
    assert maintenance.maintenance and not maintenance.failed and not maintenance.succeeded
    assert Recorded("read", 0, 1, 503).failed  # a 503 without Retry-After is a failure
    assert Recorded("read", 0, 1, 502, retry_after=True).failed  # Retry-After on anything else does not help
    refused = Recorded("write", 0, 1, error="ConnectionError")
    assert refused.failed and refused.outcome == "ConnectionError"
    no_id = Recorded("write", 0, 1, 201, error="NoOrderId")
    assert no_id.failed and no_id.outcome == "201 NoOrderId"


def test_the_longest_gap_counts_the_window_edges() -> None:
    assert longest_gap(0, 10, [1, 2, 3]) == 7  # the last success to the window's end
    assert longest_gap(0, 10, [6, 7, 9.5]) == 6  # the window's start to the first success
    assert longest_gap(0, 10, [1, 5.5, 9]) == 4.5  # between two
    assert longest_gap(0, 10, []) == 10  # none succeeded: the whole window
    assert longest_gap(0, 10, [-3, 12]) == 10  # clipped to the window


def test_window_statistics_separate_maintenance_answers_from_failures() -> None:
    records = [
        ok("health", 0.1),
        Recorded("health", 0.2, 0.3, 502),
        Recorded("health", 0.4, 5.4, error="ReadTimeout"),
        ok("health", 6.0, 6.1),
        Recorded("read", 1.0, 1.1, 503, retry_after=True),
        Recorded("read", 1.2, 1.3, 503),
        ok("read", 2.0),
        ok("write", 0.5, 0.6, order_id=1),
        Recorded("write", 3.0, 3.1, 503, retry_after=True),
        Recorded("write", 9.5, 9.6, error="ConnectionError"),
        ok("health", -1.0),  # before the window
        Recorded("read", 10.0, 10.1, 500),  # at its end: the next window's
    ]
    stats = window_stats("green", 0.0, 10.0, records, lost=[7, 3])
    assert stats.requests == 10
    assert stats.failed == 4  # the 502, the timeout, the 503 without Retry-After, the refused connection
    assert stats.maintenance == 2
    assert stats.by_status == {"200": 4, "502": 1, "503": 3, "ConnectionError": 1, "ReadTimeout": 1}
    assert stats.by_kind == {"health": 4, "read": 3, "write": 3}
    assert stats.longest_gap == {"health": 5.99, "read": 7.99, "write": 9.4}
    assert stats.writes_acknowledged == 1
    assert (stats.writes_lost, stats.lost_order_ids) == (2, (3, 7))
    assert [f.describe() for f in stats.first_failures] == [
        "0.20 s health 502",
        "0.40 s health ReadTimeout",
        "1.20 s read 503",
        "9.50 s write ConnectionError",
    ]
    assert "4 of 10 failed, 2 maintenance answers" in stats.describe()
    assert json.loads(json.dumps(stats.as_json()))["longest_gap"]["write"] == 9.4


def test_a_window_keeps_only_its_first_failures() -> None:
    records = [Recorded("health", t / 10, t / 10 + 0.01, 502) for t in range(20)]
    stats = window_stats("w", 0.0, 5.0, records, kinds=("health",), first_failures=3)
    assert stats.failed == 20 and len(stats.first_failures) == 3
    assert stats.longest_gap == {"health": 5.0}


def test_lost_writes_are_the_acknowledged_orders_not_listed() -> None:
    assert lost_writes([1, 2, 3, 4], [1, 3, 4, 5]) == {2}
    assert lost_writes([1, 2], []) == {1, 2}
    assert lost_writes([], [1]) == set()


def test_a_load_refuses_unknown_kinds_and_bad_rates() -> None:
    with pytest.raises(ValueError, match="unknown kinds"):
        BoundedLoad("http://127.0.0.1:1", "t", rates={"delete": 1})
    with pytest.raises(ValueError, match="rates"):
        BoundedLoad("http://127.0.0.1:1", "t", rates={"health": -1})
    assert "secret-token" not in repr(BoundedLoad("http://127.0.0.1:1", "secret-token"))


# --- against a real HTTP server -------------------------------------------------------------------------------

STORE_ID = 42
TOKEN = "unit-token"


class FakeApi:
    """What the stack's API answers, deterministically by count: some 503s with Retry-After (maintenance),
    some without (failures), some health requests dropped without an answer (a refused connection's like), and
    an order listing that leaves out one acknowledged order."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.answered: Counter[tuple[str, str]] = Counter()  # (kind, status) -> count
        self.counts: Counter[str] = Counter()
        self.orders: list[int] = []
        self.unauthorised = 0
        self.connections = 0
        self.requests = 0

    def answer(self, method: str, path: str, authorization: str | None) -> tuple[int | None, dict[str, str], Any]:
        with self.lock:
            if method == "POST" and path == "/stores":
                return 201, {}, {"id": STORE_ID, "name": "x"}
            if method == "GET" and path == f"/stores/{STORE_ID}/orders":
                return 200, {}, [{"id": i} for i in self.orders[1:]]  # the first acknowledged order is "lost"
            kind = {
                ("GET", "/health"): "health",
                ("GET", f"/stores/{STORE_ID}"): "read",
                ("POST", f"/stores/{STORE_ID}/orders"): "write",
            }[(method, path)]
            self.counts[kind] += 1
            n = self.counts[kind]
            status, headers, body = self._reply(kind, n, authorization)
            self.answered[kind, "ConnectionError" if status is None else str(status)] += 1
            return status, headers, body

    def _reply(self, kind: str, n: int, authorization: str | None) -> tuple[int | None, dict[str, str], Any]:
        if kind == "write" and authorization != f"Bearer {TOKEN}":
            self.unauthorised += 1
            return 401, {}, {"detail": "token"}
        if kind == "health" and n % 7 == 0:
            return None, {}, None  # the connection is closed without an answer
        if n % 4 == 0:
            return 503, {"Retry-After": "10"}, {"detail": "maintenance"}
        if n % 5 == 0:
            return 503, {}, {"detail": "database unavailable"}
        if kind == "write":
            order = 1000 + n
            self.orders.append(order)
            return 201, {}, {"id": order, "store_id": STORE_ID, "item": "i", "amount_cents": n}
        return 200, {}, {"status": "ok"}


@pytest.fixture
def fake_api() -> Iterator[tuple[FakeApi, str]]:
    api = FakeApi()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive offered: the load must still not reuse a connection

        def setup(self) -> None:
            super().setup()
            with api.lock:
                api.connections += 1

        def _serve(self) -> None:
            with api.lock:
                api.requests += 1
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            status, headers, body = api.answer(self.command, self.path, self.headers.get("Authorization"))
            if status is None:
                self.close_connection = True
                return
            data = json.dumps(body).encode()
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _serve

        def log_message(self, format: str, *args: Any) -> None:  # the stdlib's signature
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield api, f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def test_the_loads_counts_match_what_the_server_answered(fake_api: tuple[FakeApi, str]) -> None:
    api, url = fake_api
    with BoundedLoad(url, TOKEN, rates={"health": 20, "read": 20, "write": 10}, timeout=2) as load:
        assert load.store_id == STORE_ID
        with load.window("all") as window:
            time.sleep(1.5)
        time.sleep(0.3)  # requests outside the window are recorded too
    assert api.unauthorised == 0
    assert api.connections == api.requests, "every request on a new connection (a reload's keep-alive race)"
    records = load.records
    assert Counter((r.kind, r.outcome) for r in records) == api.answered
    assert api.counts["health"] >= 30 and api.counts["write"] >= 15  # open loop: the rates were kept

    stats = window.stats
    assert stats is not None and load.windows["all"] == stats
    inside = [r for r in records if window.started <= r.started < (window.ended or 0)]
    assert stats.requests == len(inside) > 0
    assert stats.maintenance == sum(1 for r in inside if r.status == 503 and r.retry_after) > 0
    dropped = sum(1 for r in inside if r.error == "ConnectionError")
    assert dropped > 0 and all(r.kind == "health" for r in inside if r.error is not None)
    assert stats.failed == sum(1 for r in inside if r.status == 503 and not r.retry_after) + dropped
    assert stats.writes_acknowledged == sum(1 for r in inside if r.kind == "write" and r.status == 201)
    # The listing leaves out the first acknowledged order: one write lost, and it is that one.
    assert stats.writes_lost == 1 and stats.lost_order_ids == (api.orders[0],)
    assert set(stats.longest_gap) == {"health", "read", "write"}


def test_a_load_that_cannot_create_its_store_says_so() -> None:
    load = BoundedLoad("http://127.0.0.1:9", TOKEN, setup_timeout=0.5, timeout=0.5)
    with pytest.raises(LoadError, match="no store could be created"), load:
        pass
