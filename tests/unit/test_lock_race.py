"""The deploy lock under processes that race for it, and a holder killed outright."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from deploycheck.release import lock
from tests.unit import lock_racers

ROUNDS = 40
RACERS = 8
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def spawn_context() -> multiprocessing.context.SpawnContext:
    return multiprocessing.get_context("spawn")


def test_racing_processes_never_hold_the_lock_twice(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    context = spawn_context()
    path = tmp_path / "stack.lock"
    start, recorded = context.Barrier(RACERS), context.Barrier(RACERS + 1)
    results = context.Queue()
    racers = [
        context.Process(target=lock_racers.race_rounds, args=(str(path), ROUNDS, start, recorded, results))
        for _ in range(RACERS)
    ]
    for racer in racers:
        racer.start()
    try:
        rounds: dict[int, list[tuple[int, int]]] = {}
        for _ in range(ROUNDS):
            for _ in range(RACERS):
                number, racer_pid, holder_pid = results.get(timeout=60)
                rounds.setdefault(number, []).append((racer_pid, holder_pid))
            recorded.wait(timeout=60)
    finally:
        for racer in racers:
            racer.join(timeout=60)
            if racer.is_alive():
                racer.kill()
    holders_per_round = {number: sum(me == seen for me, seen in said) for number, said in rounds.items()}
    refusals = [seen for said in rounds.values() for me, seen in said if me != seen]
    holders = {number: next(me for me, seen in said if me == seen) for number, said in rounds.items()}
    named_right = sum(seen == holders[number] for number, said in rounds.items() for me, seen in said if me != seen)
    with capsys.disabled():
        print(
            f"\n[lock race] {ROUNDS} rounds of {RACERS} processes: holders per round "
            f"{dict(Counter(holders_per_round.values()))}; {len(refusals)} refusals, {named_right} named the "
            f"holder, {refusals.count(0)} an unknown holder"
        )
    assert all(racer.exitcode == 0 for racer in racers)
    assert len(rounds) == ROUNDS
    assert [number for number, count in holders_per_round.items() if count != 1] == [], "one holder each round"
    # A refusal names the holder, or says "an unknown holder" while the holder is still writing its description.
    assert all(seen in (0, holders[number]) for number, said in rounds.items() for me, seen in said if me != seen)
    assert not path.exists(), "the last holder removed the file as it released it"


def test_takers_and_releasers_churning_never_overlap(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    context = spawn_context()
    path = tmp_path / "stack.lock"
    holders, overlaps, guard = context.Value("i", 0), context.Value("i", 0), context.Lock()
    takes = 40
    churners = [
        context.Process(target=lock_racers.churn, args=(str(path), takes, holders, guard, overlaps))
        for _ in range(RACERS)
    ]
    for churner in churners:
        churner.start()
    for churner in churners:
        churner.join(timeout=120)
    with capsys.disabled():
        print(f"\n[lock churn] {RACERS} processes x {takes} takes each: {overlaps.value} overlapping holders")
    assert [churner.exitcode for churner in churners] == [0] * RACERS
    assert overlaps.value == 0


def holder_process(path: Path) -> subprocess.Popen[str]:
    """A process of its own that holds the lock (and says so) until it is killed."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.unit.lock_racers", str(path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=PROJECT_ROOT,
        env={**os.environ, "PYTHONPATH": f"{PROJECT_ROOT / 'plugins'}:{PROJECT_ROOT}"},
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == f"held {process.pid}"
    return process


def test_a_holder_killed_outright_frees_the_lock_at_once(tmp_path: Path) -> None:
    path = tmp_path / "stack.lock"
    holder = holder_process(path)
    try:
        with pytest.raises(lock.LockHeld) as refused:
            lock.acquire(path)
        assert refused.value.holder.pid == holder.pid
        assert f"pid {holder.pid}" in str(refused.value) and "running `" in str(refused.value)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    start = time.monotonic()
    # The killed holder's file is still there, with its description: nothing to detect, it is simply taken.
    assert lock.read(path) is not None and lock.read(path) == refused.value.holder
    with lock.acquire(path) as held:
        assert held.holder.pid == os.getpid()
    assert time.monotonic() - start < 0.5
