"""Processes that race for one deploy lock (tests/unit/test_lock_race.py runs them, spawned, not forked).

Spawned, because a forked child would share its parent's open files, and a lock is held by an open file.
"""

from __future__ import annotations

import os
import sys
import time
from multiprocessing.queues import Queue
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Barrier, Lock
from pathlib import Path

from deploycheck.release import lock


def race_rounds(
    path: str, rounds: int, start: Barrier, recorded: Barrier, results: Queue[tuple[int, int, int]]
) -> None:
    """Each round: every racer tries at once; each says (round, its pid, the pid it holds or was refused by:
    its own when it holds the lock, 0 for an unknown holder); the holder lets go once all have said."""
    for number in range(rounds):
        start.wait()
        held: lock.HeldLock | None = None
        try:
            held = lock.acquire(Path(path))
            results.put((number, os.getpid(), os.getpid()))
        except lock.LockHeld as refused:
            results.put((number, os.getpid(), refused.holder.pid))
        recorded.wait()
        if held is not None:
            held.release()


def churn(path: str, takes: int, holders: Synchronized[int], guard: Lock, overlaps: Synchronized[int]) -> None:
    """Take and release the lock ``takes`` times as fast as it comes, counting holders meanwhile: a holder that
    finds another one counts an overlap. Taking and releasing without pause is where a released (removed) lock
    file and a taker that had just opened it meet."""
    deadline = time.monotonic() + 60
    taken = 0
    while taken < takes and time.monotonic() < deadline:
        try:
            held = lock.acquire(Path(path))
        except lock.LockHeld:
            time.sleep(0.0002)
            continue
        with guard:
            holders.value += 1
            if holders.value != 1:
                overlaps.value += 1
        time.sleep(0.0005)
        with guard:
            holders.value -= 1
        held.release()
        taken += 1
    if taken < takes:
        sys.exit(f"took the lock only {taken} times of {takes}")


def hold_until_killed(path: str) -> None:
    """Run as a script: take the lock, say so on stdout, and sleep until killed."""
    held = lock.acquire(Path(path))
    print(f"held {held.holder.pid}", flush=True)
    time.sleep(600)


if __name__ == "__main__":
    hold_until_killed(sys.argv[1])
