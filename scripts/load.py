"""A bounded load through a stack's front door (the proxy), and what it saw, window by window.

Three kinds of request at fixed rates, open loop: each kind is sent on its own schedule by its own small pool
of threads, so a slow answer never lowers the rate (a pool holds ``rate x (timeout + 1)`` requests in flight).

- ``health``: ``GET /health``, 10/s by default;
- ``read``: ``GET /stores/{id}`` of a store the load creates at its start, 10/s;
- ``write``: ``POST /stores/{id}/orders`` with ``Authorization: Bearer TOKEN``, 5/s.

Every request is recorded: its kind, when it started and ended (``time.monotonic()``), its status or, when no
answer came (a connection error, a timeout), the exception's class, and whether it is a **maintenance
answer**: a 503 carrying ``Retry-After`` (a proxy's maintenance page, or an API refusing a write under a
deploy's write fence). A request is a success (2xx), a maintenance answer, or a failure (anything else).

Windows mark spans of the load::

    with BoundedLoad("http://127.0.0.1:8080", token, rates={"health": 2, "read": 2, "write": 1}) as load:
        with load.window("deploy") as window:
            ...  # deploy, roll back, restore
        stats = window.stats  # a WindowStats: requests, failed, maintenance, gaps, writes lost
        assert stats.failed == 0 and stats.writes_lost == 0, stats.describe()

A window's requests are those that started in it; it ends once they have all been answered (at most the
timeout later). Its longest gap without a success, per kind, counts from the window's start to the first
success and from the last success to the window's end too (a success is placed at the time its answer
arrived). After the window every order the API acknowledged (2xx) since the load started must be listed by
``GET /stores/{id}/orders``; those that are not, and were not missing after an earlier window, are the window's
**acknowledged writes lost**.

Each request goes on a **new connection** (``Connection: close``). A graceful proxy reload, which a swap does,
closes the idle keep-alive connections of the proxy's old workers, and a request sent on one at that instant
gets a reset (the keep-alive race of RFC 9112 section 9.3.1). Browsers and Go's net/http send such a request
again on a new connection; ``requests`` does not. A reused connection would have the load measure that race
in its own client, not what the stack answered.

The standard library, ``requests`` and deploycheck's own poll-with-deadline (``engine.polling``): the benchmark
(scripts/benchmark.py) and end-to-end tests both use it.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from types import TracebackType
from typing import Any, TypeVar

import requests

from deploycheck.engine.polling import poll

KINDS = ("health", "read", "write")
DEFAULT_RATES: Mapping[str, float] = {"health": 10.0, "read": 10.0, "write": 5.0}
DEFAULT_TIMEOUT = 5.0
FIRST_FAILURES = 5
T = TypeVar("T")


class LoadError(Exception):
    """The load could not start (no store could be created) or could not verify its writes: one sentence."""


# --- what was recorded, and what a window of it says: pure ------------------------------------------------


@dataclass(frozen=True)
class Recorded:
    """One request: its kind, start and end (``time.monotonic()``), and its status or exception class."""

    kind: str
    started: float
    ended: float
    status: int | None = None
    error: str | None = None  # the exception's class when there was no answer (or a 2xx without an order id)
    retry_after: bool = False  # the answer carried a Retry-After header
    order_id: int | None = None  # the order a 2xx write created
    cause: str | None = None  # the class of the exception's root cause: RemoteDisconnected, ConnectionRefusedError

    @property
    def outcome(self) -> str:
        """``"503"`` or ``"ConnectionError"``: the status, else the exception's class."""
        if self.error is not None:
            return self.error if self.status is None else f"{self.status} {self.error}"
        return str(self.status)

    @property
    def succeeded(self) -> bool:
        return self.error is None and self.status is not None and 200 <= self.status < 300

    @property
    def maintenance(self) -> bool:
        """A 503 with Retry-After: the service says it is down for now, and when to come back."""
        return self.error is None and self.status == 503 and self.retry_after

    @property
    def failed(self) -> bool:
        return not self.succeeded and not self.maintenance


@dataclass(frozen=True)
class Failure:
    at: float  # seconds after the window's start
    kind: str
    outcome: str
    cause: str | None = None

    def describe(self) -> str:
        cause = f" ({self.cause})" if self.cause else ""
        return f"{self.at:.2f} s {self.kind} {self.outcome}{cause}"


@dataclass(frozen=True)
class WindowStats:
    name: str
    seconds: float
    requests: int
    failed: int  # not 2xx and not a maintenance answer, exceptions included
    maintenance: int  # 503 with Retry-After
    by_status: dict[str, int]  # outcome -> count ("200", "503", "ConnectionError", ...)
    by_kind: dict[str, int]  # kind -> requests
    longest_gap: dict[str, float]  # kind -> the longest time without a success, seconds
    writes_acknowledged: int  # 2xx writes of this window
    writes_lost: int  # acknowledged orders (of this window or before) not listed after it
    lost_order_ids: tuple[int, ...] = ()
    first_failures: tuple[Failure, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        gaps = " / ".join(f"{self.longest_gap[k]:.1f}" for k in self.longest_gap)
        line = (
            f"{self.name}: {self.failed} of {self.requests} failed, {self.maintenance} maintenance answers, "
            f"longest gap ({' / '.join(self.longest_gap)}) {gaps} s, "
            f"{self.writes_lost} of the acknowledged writes lost"
        )
        if self.first_failures:
            line += "; first failures: " + ", ".join(f.describe() for f in self.first_failures)
        return line


def longest_gap(start: float, end: float, successes: Iterable[float]) -> float:
    """The longest time in [start, end] without a success: the start to the first, between two, the last to
    the end (the whole window when none succeeded). Successes outside the window are clipped to it."""
    points = sorted(min(max(t, start), end) for t in successes)
    edges = [start, *points, end]
    return max(b - a for a, b in itertools.pairwise(edges))


def lost_writes(acknowledged: Iterable[int], listed: Iterable[int]) -> set[int]:
    """The acknowledged orders that the listing does not hold."""
    return set(acknowledged) - set(listed)


def window_stats(
    name: str,
    start: float,
    end: float,
    records: Iterable[Recorded],
    kinds: Sequence[str] = KINDS,
    lost: Iterable[int] = (),
    first_failures: int = FIRST_FAILURES,
) -> WindowStats:
    """The statistics of the requests that started in [start, end); ``lost`` are the orders found lost."""
    inside = sorted((r for r in records if start <= r.started < end), key=lambda r: r.started)
    failures = [r for r in inside if r.failed]
    lost_ids = tuple(sorted(set(lost)))
    return WindowStats(
        name=name,
        seconds=round(end - start, 3),
        requests=len(inside),
        failed=len(failures),
        maintenance=sum(1 for r in inside if r.maintenance),
        by_status=dict(sorted(Counter(r.outcome for r in inside).items())),
        by_kind={k: sum(1 for r in inside if r.kind == k) for k in kinds},
        longest_gap={
            k: round(longest_gap(start, end, (r.ended for r in inside if r.kind == k and r.succeeded)), 3)
            for k in kinds
        },
        writes_acknowledged=sum(1 for r in inside if r.kind == "write" and r.succeeded),
        writes_lost=len(lost_ids),
        lost_order_ids=lost_ids,
        first_failures=tuple(
            Failure(round(r.started - start, 3), r.kind, r.outcome, r.cause) for r in failures[:first_failures]
        ),
    )


# --- the load ----------------------------------------------------------------------------------------------


@dataclass
class Window:
    """A window of the load; ``stats`` is set when it ends."""

    name: str
    started: float
    ended: float | None = None
    stats: WindowStats | None = None


Send = Callable[[requests.Session, int], requests.Response]
Answered = Callable[[str, float, requests.Response | Exception], None]


@dataclass
class _Kind:
    name: str
    rate: float
    send: Send
    pool: ThreadPoolExecutor
    thread: threading.Thread | None = None
    sent: int = 0


@dataclass
class _Sessions:
    """One requests.Session per worker thread (a Session is not meant to be shared between threads)."""

    local: threading.local = field(default_factory=threading.local)
    every: list[requests.Session] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self) -> requests.Session:
        session: requests.Session | None = getattr(self.local, "session", None)
        if session is None:
            session = requests.Session()
            self.local.session = session
            with self.lock:
                self.every.append(session)
        return session

    def close(self) -> None:
        with self.lock:
            for session in self.every:
                session.close()
            self.every.clear()


class OpenLoop:
    """Requests of several kinds, each sent every 1/rate s on a fixed schedule by a small pool of its own, open
    loop: a slow answer never lowers the rate (a pool holds ``rate x (timeout + 1)`` requests in flight). Each
    request's answer, or the exception that ended it, goes to ``answered(kind, started, outcome)`` on the pool's
    thread (``started``: ``time.monotonic()`` before it was sent); ``send(session, n)`` gets the
    kind's own count and a session of the pool thread's own."""

    def __init__(self, sends: Mapping[str, tuple[float, Send]], timeout: float, answered: Answered) -> None:
        self._answered = answered
        self._kinds = [
            _Kind(name, rate, send, ThreadPoolExecutor(max(2, math.ceil(rate * (timeout + 1))), f"load-{name}"))
            for name, (rate, send) in sends.items()
        ]
        self._in_flight: dict[int, float] = {}  # ticket -> when it was due
        self._tickets = 0
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._sessions = _Sessions()

    @property
    def running(self) -> bool:
        return any(kind.thread is not None for kind in self._kinds) and not self._stop.is_set()

    def start(self) -> None:
        for kind in self._kinds:
            kind.thread = threading.Thread(target=self._schedule, args=(kind,), name=f"load-{kind.name}", daemon=True)
            kind.thread.start()

    def stop(self) -> None:
        """Send no more; wait for the requests in flight (each ends by its timeout), then close the sessions."""
        self._stop.set()
        for kind in self._kinds:
            if kind.thread is not None:
                kind.thread.join()
            kind.pool.shutdown(wait=True)
        self._sessions.close()

    def wait_for_answers(self, until: float, seconds: float) -> None:
        """Until every request due before ``until`` has been answered; a LoadError after ``seconds``."""
        deadline = time.monotonic() + seconds
        with self._changed:
            while any(due < until for due in self._in_flight.values()):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise LoadError(f"requests sent before {until:.1f} still have no answer {seconds:.0f} s later")
                self._changed.wait(left)

    def _schedule(self, kind: _Kind) -> None:
        """Submit one request every 1/rate s on a fixed schedule: late ticks are caught up, never skipped."""
        interval = 1.0 / kind.rate
        due = time.monotonic()
        while not self._stop.is_set():
            wait = due - time.monotonic()
            if wait > 0 and self._stop.wait(wait):
                break
            kind.sent += 1
            with self._changed:
                self._tickets += 1
                ticket = self._tickets
                self._in_flight[ticket] = due
            kind.pool.submit(self._send, ticket, kind, kind.sent)
            due += interval

    def _send(self, ticket: int, kind: _Kind, number: int) -> None:
        started = time.monotonic()
        outcome: requests.Response | Exception
        try:
            outcome = kind.send(self._sessions.get(), number)
        except Exception as error:  # every request is answered for, whatever ended it
            outcome = error
        try:
            self._answered(kind.name, started, outcome)
        finally:
            with self._changed:  # after its record: a wait for answers then finds it recorded
                self._in_flight.pop(ticket, None)
                self._changed.notify_all()


class BoundedLoad:
    """``with BoundedLoad(base_url, token) as load:`` sends the load until the block ends; ``load.window(name)``
    marks a window, whose ``WindowStats`` are in ``window.stats`` (and ``load.windows[name]``) once it ended."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        rates: Mapping[str, float] = DEFAULT_RATES,
        timeout: float = DEFAULT_TIMEOUT,
        setup_timeout: float = 30.0,
        verify_timeout: float = 60.0,
        store_name: str = "bounded load",
        first_failures: int = FIRST_FAILURES,
    ) -> None:
        unknown = set(rates) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown kinds of request {sorted(unknown)}: the kinds are {', '.join(KINDS)}")
        if any(rate < 0 for rate in rates.values()) or timeout <= 0:
            raise ValueError("rates must be 0 (not sent) or more, and the timeout more than 0")
        self.base_url = base_url.rstrip("/")
        self._token = token
        self.rates = {k: float(rates.get(k, 0.0)) for k in KINDS}
        self.kinds = tuple(k for k in KINDS if self.rates[k] > 0)
        self.timeout = timeout
        self.setup_timeout = setup_timeout
        self.verify_timeout = verify_timeout
        self.store_name = store_name
        self.first_failures = first_failures
        self.store_id: int | None = None
        self.windows: dict[str, WindowStats] = {}
        self._records: list[Recorded] = []
        self._recorded = threading.Lock()
        self._lost: set[int] = set()
        self._loop: OpenLoop | None = None

    def __repr__(self) -> str:  # never the token
        return f"BoundedLoad({self.base_url!r}, rates={self.rates})"

    # -- life ------------------------------------------------------------------------------------------------

    def __enter__(self) -> BoundedLoad:
        self.store_id = self._create_store()
        sends = {kind: (self.rates[kind], self._sender(kind)) for kind in self.kinds}
        self._loop = OpenLoop(sends, self.timeout, self._record)
        self._loop.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    def stop(self) -> None:
        """Send no more; wait for the requests in flight (each ends by its timeout)."""
        if self._loop is not None:
            self._loop.stop()

    @property
    def records(self) -> list[Recorded]:
        """Every request answered so far (a copy), in the order the answers came."""
        with self._recorded:
            return list(self._records)

    @contextlib.contextmanager
    def window(self, name: str) -> Iterator[Window]:
        """Mark a window; at its end wait for its requests' answers, then check the acknowledged writes."""
        loop = self._loop
        if loop is None or not loop.running:
            raise LoadError(f"window {name!r}: the load is not running (use it inside `with BoundedLoad(...)`)")
        window = Window(name, time.monotonic())
        yield window
        window.ended = time.monotonic()
        loop.wait_for_answers(window.ended, self.timeout + 5.0)  # each request ends by its timeout
        lost = self._verify_writes() - self._lost
        self._lost |= lost
        window.stats = window_stats(
            name, window.started, window.ended, self.records, self.kinds, lost, self.first_failures
        )
        self.windows[name] = window.stats

    # -- sending ---------------------------------------------------------------------------------------------

    def _sender(self, kind: str) -> Send:
        url, timeout, store = self.base_url, self.timeout, self.store_id
        fresh = {"Connection": "close"}  # a new connection for each request: the module's docstring says why
        if kind == "health":
            return lambda http, _: http.get(f"{url}/health", headers=fresh, timeout=timeout)
        if kind == "read":
            return lambda http, _: http.get(f"{url}/stores/{store}", headers=fresh, timeout=timeout)
        headers = {**fresh, "Authorization": f"Bearer {self._token}"}
        return lambda http, n: http.post(
            f"{url}/stores/{store}/orders",
            json={"item": f"load order {n}", "amount_cents": n},
            headers=headers,
            timeout=timeout,
        )

    def _record(self, kind: str, started: float, outcome: requests.Response | Exception) -> None:
        ended = time.monotonic()
        if isinstance(outcome, Exception):
            record = Recorded(kind, started, ended, error=type(outcome).__name__, cause=_root_cause(outcome))
        else:
            record = self._answer(kind, started, ended, outcome)
        with self._recorded:
            self._records.append(record)

    @staticmethod
    def _answer(kind: str, started: float, ended: float, response: requests.Response) -> Recorded:
        status, retry_after = response.status_code, "Retry-After" in response.headers
        if kind == "write" and 200 <= status < 300:
            order_id = _order_id(response)
            if order_id is None:
                return Recorded(kind, started, ended, status, "NoOrderId", retry_after)
            return Recorded(kind, started, ended, status, None, retry_after, order_id)
        return Recorded(kind, started, ended, status, None, retry_after)

    # -- the store, and the writes' verification -----------------------------------------------------------

    def _create_store(self) -> int:
        def ask(http: requests.Session) -> int | str:
            response = http.post(
                f"{self.base_url}/stores",
                json={"name": self.store_name},
                headers={"Authorization": f"Bearer {self._token}"},
                timeout=self.timeout,
            )
            return int(response.json()["id"]) if response.status_code == 201 else f"status {response.status_code}"

        return _retried(
            ask,
            self.setup_timeout,
            lambda last: (
                f"no store could be created through {self.base_url} in {self.setup_timeout:.0f} s "
                f"(last: {last}): is the stack up and the token right?"
            ),
        )

    def _verify_writes(self) -> set[int]:
        """The orders acknowledged so far that ``GET /stores/{id}/orders`` does not list (retried until it
        answers 200, or 404: a store that is gone lists nothing)."""
        acknowledged = {r.order_id for r in self.records if r.order_id is not None}

        def ask(http: requests.Session) -> set[int] | str:
            response = http.get(f"{self.base_url}/stores/{self.store_id}/orders", timeout=self.timeout)
            if response.status_code == 404:
                return lost_writes(acknowledged, ())
            if response.status_code == 200:
                return lost_writes(acknowledged, (int(order["id"]) for order in response.json()))
            return f"status {response.status_code}"

        return _retried(
            ask,
            self.verify_timeout,
            lambda last: (
                f"the orders of store {self.store_id} could not be listed through {self.base_url} in "
                f"{self.verify_timeout:.0f} s (last: {last}): the acknowledged writes cannot be verified"
            ),
        )


def _retried(ask: Callable[[requests.Session], T | str], seconds: float, sentence: Callable[[str], str]) -> T:
    """``ask`` on one session, every 0.5 s for ``seconds``, until it returns its value; a string it returns, or a
    request or JSON error, is why not yet. Then a LoadError with ``sentence(the last why)``."""
    last = "nothing answered"
    with requests.Session() as http:

        def attempt() -> T | None:
            nonlocal last
            try:
                answer = ask(http)
            except (requests.RequestException, ValueError, KeyError, TypeError) as error:
                last = type(error).__name__
                return None
            if isinstance(answer, str):
                last = answer
                return None
            return answer

        return poll(attempt, seconds=seconds, every=0.5, timed_out=lambda: LoadError(sentence(last)))


def _root_cause(error: BaseException) -> str | None:
    """The class of the innermost exception that led to ``error`` (None: it is its own cause)."""
    seen, cause = {id(error)}, error
    while True:
        inner = cause.__cause__ or cause.__context__
        if inner is None or id(inner) in seen:
            break
        seen.add(id(inner))
        cause = inner
    return None if cause is error else type(cause).__name__


def _order_id(response: requests.Response) -> int | None:
    try:
        body = response.json()
        return int(body["id"]) if isinstance(body, dict) else None
    except (ValueError, KeyError, TypeError):
        return None
