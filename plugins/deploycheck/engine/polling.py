"""One poll-with-deadline for the simple waits (a URL that must answer, a configuration test, a retried query).

An attempt returns a value when it is done, or None to be tried again; an exception it raises is fatal and
ends the wait at once (as Goss's fatal errors: no retrying what cannot get better). When the deadline passes,
the error ``timed_out`` makes is raised. The event-driven container waits (``containers.wait_healthy``) are
not built on this: they wake on the engine's events instead of polling it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def poll(attempt: Callable[[], T | None], *, seconds: float, every: float, timed_out: Callable[[], Exception]) -> T:
    """``attempt()`` until it returns something other than None, at most every ``every`` seconds; the last
    attempt starts before ``seconds`` have passed."""
    deadline = time.monotonic() + seconds
    while True:
        started = time.monotonic()
        value = attempt()
        if value is not None:
            return value
        if time.monotonic() >= deadline:
            raise timed_out()
        time.sleep(max(0.0, min(every - (time.monotonic() - started), deadline - time.monotonic())))
