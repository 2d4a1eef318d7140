"""The runner's children and the signals of a terminal's Ctrl+C or a CI cancel (sent to a whole process group).

Each scenario runs in a host process of its own session (tests/unit/runner_host.py), and the signals go to
that session's group: never to pytest's.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deploycheck.engine.commands import Command, CommandFailed, Runner
from tests.unit.runner_host import GRACE_SECONDS

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def host(mode: str, folder: Path) -> subprocess.Popen[bytes]:
    """The host, in a new session (its group is its own), once its child has started."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.unit.runner_host", mode, str(folder)],
        cwd=PROJECT_ROOT,
        env={**os.environ, "PYTHONPATH": f"{PROJECT_ROOT / 'plugins'}:{PROJECT_ROOT}"},
        start_new_session=True,
    )
    deadline = time.monotonic() + 20
    while not (folder / "started").exists():
        assert process.poll() is None, f"the host ended early with {process.returncode}"
        assert time.monotonic() < deadline, "the child never started"
        time.sleep(0.02)
    return process


def cancel(process: subprocess.Popen[bytes]) -> None:
    """What a Ctrl+C, then a CI cancel, do: SIGINT, then SIGTERM, to the whole process group."""
    os.killpg(process.pid, signal.SIGINT)
    time.sleep(0.1)
    os.killpg(process.pid, signal.SIGTERM)


def is_gone(pid: int) -> bool:
    """No such process, or a zombie no one reaps (this machine's PID 1 may not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


def wait_gone(pid: int, seconds: float = 5) -> bool:
    deadline = time.monotonic() + seconds
    while not is_gone(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    return is_gone(pid)


def test_a_rollbacks_command_finishes_its_work_through_ctrl_c_and_a_ci_cancel(tmp_path: Path) -> None:
    process = host("rollback", tmp_path)
    cancel(process)
    assert process.wait(timeout=30) == 0
    assert (tmp_path / "finished").exists(), "the child was not reached by the signals: it finished its work"
    assert (tmp_path / "result").read_text() == "0"


def test_the_same_signals_kill_a_child_of_deploycheck_s_own_process_group(tmp_path: Path) -> None:
    # The control: without a session of its own, the child the same signals reach is killed.
    process = host("rollback-unshielded", tmp_path)
    cancel(process)
    assert process.wait(timeout=30) == 0
    assert not (tmp_path / "finished").exists()
    assert (tmp_path / "result").read_text() == str(-signal.SIGINT)


@pytest.mark.parametrize("mode", ["stage", "stage-stubborn"])
def test_an_interrupt_during_a_stage_stops_the_childs_whole_group(tmp_path: Path, mode: str) -> None:
    process = host(mode, tmp_path)
    grandchild = int((tmp_path / "grandchild").read_text())
    start = time.monotonic()
    os.killpg(process.pid, signal.SIGINT)
    assert process.wait(timeout=30) == 130
    elapsed = time.monotonic() - start
    assert (tmp_path / "result").read_text() == "interrupted" and not (tmp_path / "finished").exists()
    assert wait_gone(grandchild), "the child's group is gone, its grandchild with it"
    if mode == "stage":  # stopped by the interrupt passed on to it, before any kill
        assert elapsed < GRACE_SECONDS - 0.5
    else:  # a child that ignores the interrupt is killed after the grace period, not left running
        assert GRACE_SECONDS - 0.1 <= elapsed < GRACE_SECONDS + 5


def test_a_command_that_does_not_finish_in_time_is_killed_with_its_whole_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild"
    script = f"sleep 60 & echo $! > {pid_file}; wait"
    start = time.monotonic()
    with pytest.raises(CommandFailed, match="did not finish within 1 s"):
        Runner().run(Command(("sh", "-c", script), timeout=1))
    # The grandchild kept the output pipes open: without the group's kill, the runner would wait for it.
    assert time.monotonic() - start < 3
    assert wait_gone(int(pid_file.read_text()))


def test_a_child_runs_in_a_session_of_its_own() -> None:
    result = Runner().run(Command((sys.executable, "-c", "import os; print(os.getsid(0), os.getpgid(0), os.getpid())")))
    session, group, pid = (int(word) for word in result.stdout.split())
    assert session == group == pid != os.getsid(0)


def test_output_that_is_not_utf8_does_not_hide_the_exit_code() -> None:
    command = Command((sys.executable, "-c", "import sys; sys.stdout.buffer.write(b'\\xff\\xfe ok'); sys.exit(3)"))
    result = Runner().run(command, check=False)
    assert result.returncode == 3 and result.stdout.endswith(" ok")
