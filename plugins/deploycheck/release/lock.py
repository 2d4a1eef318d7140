"""One deploy at a time per environment: a lock file naming its holder (host, pid, start time).

A lock whose holder is gone (same host, no such process) is stale and is taken over; a live holder, or one
on another host that cannot be checked from here, makes the second deploy refuse at preflight.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Holder:
    host: str
    pid: int
    started_at: float

    def describe(self) -> str:
        started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.started_at))
        return f"host {self.host}, pid {self.pid}, since {started}"

    def is_gone(self) -> bool:
        if self.host != socket.gethostname():
            return False  # cannot be checked from here: assume it is alive
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False


class LockHeld(Exception):
    def __init__(self, holder: Holder) -> None:
        super().__init__(holder.describe())
        self.holder = holder


def me() -> Holder:
    return Holder(socket.gethostname(), os.getpid(), time.time())


def read(path: Path) -> Holder | None:
    try:
        return Holder(**json.loads(path.read_text()))
    except (FileNotFoundError, ValueError, TypeError):
        return None


def acquire(path: Path) -> Holder | None:
    """Take the lock; returns the stale holder it replaced, if any. Raises LockHeld for a live holder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mine = me()
    content = json.dumps(mine.__dict__)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        holder = read(path)
        if holder is not None and not holder.is_gone():
            raise LockHeld(holder) from None
        # Stale (or unreadable): replace it atomically, so two takers cannot both believe they hold it.
        temporary = path.with_suffix(f".{mine.pid}.tmp")
        temporary.write_text(content)
        os.replace(temporary, path)
        if read(path) != mine:
            raise LockHeld(read(path) or mine) from None
        return holder
    with os.fdopen(fd, "w") as handle:
        handle.write(content)
    return None


def release(path: Path) -> None:
    """Remove the lock only if this process holds it."""
    holder = read(path)
    if holder is not None and holder.host == socket.gethostname() and holder.pid == os.getpid():
        path.unlink(missing_ok=True)
