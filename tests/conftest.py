"""What every test of the project's own needs of the process it runs in."""

from __future__ import annotations

import signal


def pytest_configure() -> None:
    # A shell that starts a command in the background without job control (nohup, `cmd &` in a script, some CI
    # runners) makes it ignore SIGINT, and every child inherits that: a deploy the tests interrupt as a terminal
    # would (SIGINT to its process group) would not see it. The tests' children get SIGINT's default again.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
