"""A process that runs one child through the Runner, for tests/unit/test_runner_signals.py.

``python -m tests.unit.runner_host MODE FOLDER``; the child writes ``FOLDER/started``, works for a while, then
writes ``FOLDER/finished``; it restores the default SIGINT/SIGTERM actions first, as ``docker compose`` (which
handles both) does, so only a signal that does not reach it lets it finish. MODE:

- ``rollback``: the host ignores SIGINT and SIGTERM while it runs the child, as ``Deployment.finish`` does
  during a rollback, and writes the child's exit code to ``FOLDER/result``.
- ``rollback-unshielded``: the same, but the child started by ``subprocess.run`` in the host's own process
  group (the runner before children had a session of their own): the control that shows the signals kill it.
- ``stage``: the host does not ignore the signals (a stage runs); an interrupt stops the child. The child
  starts a grandchild (``FOLDER/grandchild`` holds its pid) and, with ``stage-stubborn``, ignores SIGINT (it is killed after the grace period).
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from deploycheck.engine import commands
from deploycheck.engine.commands import Command, Runner

GRACE_SECONDS = 3.0  # short, for the test, and long enough to tell a child stopped by SIGINT from one killed

CHILD = """
import signal, subprocess, sys, time
from pathlib import Path
folder, seconds, stubborn = Path(sys.argv[1]), float(sys.argv[2]), sys.argv[3] == "stubborn"
signal.signal(signal.SIGINT, signal.SIG_IGN if stubborn else signal.SIG_DFL)
signal.signal(signal.SIGTERM, signal.SIG_DFL)
grandchild = subprocess.Popen(["sleep", "60"])
(folder / "grandchild").write_text(str(grandchild.pid))
(folder / "started").write_text("")
time.sleep(seconds)
grandchild.kill()
(folder / "finished").write_text("")
"""


def child(folder: Path, seconds: float, stubborn: bool = False) -> list[str]:
    return [sys.executable, "-c", CHILD, str(folder), str(seconds), "stubborn" if stubborn else "plain"]


def main(mode: str, folder: Path) -> int:
    if mode.startswith("rollback"):
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_IGN)
        # What the child does with the signals must not depend on the host ignoring them: it sets its own.
        if mode == "rollback-unshielded":
            code = subprocess.run(child(folder, 1.5), check=False).returncode
        else:
            code = Runner().run(Command(tuple(child(folder, 1.5)), timeout=30), check=False).returncode
        (folder / "result").write_text(str(code))
        return 0
    stubborn = mode == "stage-stubborn"
    commands.INTERRUPT_GRACE_SECONDS = GRACE_SECONDS
    try:
        Runner().run(Command(tuple(child(folder, 30, stubborn)), timeout=60))
    except KeyboardInterrupt:
        (folder / "result").write_text("interrupted")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], Path(sys.argv[2])))
