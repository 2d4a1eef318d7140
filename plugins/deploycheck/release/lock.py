"""One deploy at a time per stack: an OS lock (``flock``) on a file named after the engine and the Compose project.

The kernel holds the lock for the process, on a file kept open for as long as it deploys: it is released when
the process ends, however it ends (SIGKILL included), so there is no stale lock to detect and nothing to
remove by hand. The lock is taken without waiting; once it is held, the file is rewritten with a description
of its holder (host, pid, start time, user, command line) so that a second deploy can name who it waits for.
The description is only ever read to word that refusal: whatever the file holds (nothing yet, a half-written
or foreign text) cannot make the lock be taken twice, only make the holder "an unknown holder".

The file's name comes from the engine's id and the Compose project (``lock_path``), not from the environment's
name: two environment names that deploy the same project on the same engine exclude each other too.

The lock excludes processes of this machine (the lock folder is machine-wide: engine/target.py LOCK_ROOT); a
stack on a server is locked on the server instead (engine/server.py). The file is removed by the holder
when it releases it (a taker checks that the file it locked is still the one at the path, and retries if not).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import pwd
import re
import shlex
import socket
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

# A description is a few hundred bytes; what is read of a foreign file is bounded.
MAX_DESCRIPTION_BYTES = 64 * 1024
MAX_COMMAND_CHARS = 500
# A taker retries only when the file it locked was removed by a holder releasing it meanwhile.
MAX_ATTEMPTS = 50
UNKNOWN_HOLDER = "an unknown holder"
# How long a refused taker waits for the holder's description to be readable before naming it unknown.
DESCRIPTION_WAIT_SECONDS = 0.2


@dataclass(frozen=True)
class Holder:
    """Who holds a lock, as its holder described itself in the lock file."""

    host: str
    pid: int
    started_at: float = 0.0  # when it took the lock (0: not said)
    user: str = ""
    command: str = ""

    def describe(self) -> str:
        """e.g. "host ci-1, pid 4242, user deploy, since 2024-05-01 10:00:00 UTC, running `pytest --deploy=prod`"."""
        if not self.host or self.pid <= 0:
            return UNKNOWN_HOLDER
        parts = [f"host {self.host}", f"pid {self.pid}"]
        if self.user:
            parts.append(f"user {self.user}")
        if self.started_at > 0:
            parts.append(f"since {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(self.started_at))}")
        if self.command:
            parts.append(f"running `{self.command}`")
        return ", ".join(parts)


# What ``LockHeld.holder`` is when the file does not say who holds the lock.
NOBODY = Holder(host="", pid=0)


def describe(holder: Holder | None) -> str:
    """A holder in words; "an unknown holder" when its description could not be read."""
    return UNKNOWN_HOLDER if holder is None else holder.describe()


class LockHeld(Exception):
    """Another process holds the lock; ``holder`` is its description (``NOBODY`` when unreadable)."""

    def __init__(self, path: Path, holder: Holder | None) -> None:
        self.path = path
        self.holder = holder if holder is not None else NOBODY
        super().__init__(f"the deploy lock {path} is held by {self.describe()}")

    @property
    def known(self) -> bool:
        return self.holder != NOBODY

    def describe(self) -> str:
        return self.holder.describe()


class LockUnusable(Exception):
    """The lock file cannot be created or locked at all (permissions, a folder in its place); one sentence."""


def lock_path(state_root: Path, engine_id: str, project: str) -> Path:
    """The lock file of Compose project ``project`` on the engine whose id is ``engine_id`` (``docker info`` ID).

    The project is compared as Compose compares it (case-insensitively); the name keeps it readable and a
    digest of both keeps two engines (or odd characters) apart.
    """
    engine, stack = engine_id.strip(), project.strip().lower()
    if not engine or not stack:
        raise ValueError(f"a deploy lock needs an engine id and a Compose project, not {engine_id!r} and {project!r}")
    digest = hashlib.sha256(f"{engine}\n{stack}".encode()).hexdigest()[:16]
    readable = re.sub(r"[^a-z0-9_.-]", "_", stack)[:64]
    return state_root / "locks" / f"{readable}-{digest}.lock"


def _user() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:  # a uid without a name (a container's): the number says it
        return str(os.getuid())


def me() -> Holder:
    """This process, described as a holder (taken now)."""
    command = shlex.join(getattr(sys, "orig_argv", sys.argv))
    if len(command) > MAX_COMMAND_CHARS:
        command = command[: MAX_COMMAND_CHARS - 1] + "…"
    return Holder(socket.gethostname(), os.getpid(), time.time(), _user(), command)


def parse(content: bytes) -> Holder | None:
    """The holder a lock file describes, or None when it does not say (empty, cut short, not ours)."""
    try:
        data: Any = json.loads(content.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    host, pid = data.get("host"), data.get("pid")
    # bool is an int to Python: "pid": true is not a pid.
    if not isinstance(host, str) or not host or isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        return None
    # The rest is optional: a field of the wrong type is left out, unknown fields are ignored.
    started = data.get("started_at")
    started_at = float(started) if isinstance(started, int | float) and not isinstance(started, bool) else 0.0
    user = data.get("user") if isinstance(data.get("user"), str) else ""
    command = data.get("command") if isinstance(data.get("command"), str) else ""
    return Holder(host[:255], pid, started_at, str(user)[:255], str(command)[:MAX_COMMAND_CHARS])


def read(path: Path) -> Holder | None:
    """The holder the lock file at ``path`` describes; None when there is none or it cannot be read."""
    try:
        with path.open("rb") as handle:
            return parse(handle.read(MAX_DESCRIPTION_BYTES))
    except OSError:
        return None


def _read_fd(fd: int) -> Holder | None:
    try:
        return parse(os.pread(fd, MAX_DESCRIPTION_BYTES, 0))
    except OSError:
        return None


def _holder_of(fd: int) -> Holder | None:
    """The description of the holder of the lock on ``fd``, given a moment to appear: a holder writes it just
    after it takes the lock, so a taker that lost by a hair finds the file empty or half-written."""
    deadline = time.monotonic() + DESCRIPTION_WAIT_SECONDS
    while (holder := _read_fd(fd)) is None and time.monotonic() < deadline:
        time.sleep(0.01)
    return holder


def _same_file(fd: int, path: Path) -> bool:
    try:
        at_path = os.stat(path)
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (opened.st_dev, opened.st_ino) == (at_path.st_dev, at_path.st_ino)


def _write_description(fd: int, holder: Holder) -> None:
    data = (json.dumps(asdict(holder)) + "\n").encode()
    os.ftruncate(fd, 0)
    written = 0
    while written < len(data):
        written += os.pwrite(fd, data[written:], written)
    os.fsync(fd)


class HeldLock:
    """A lock this process holds, until ``release()`` (or the end of a ``with`` block, or of the process)."""

    def __init__(self, path: Path, fd: int, holder: Holder) -> None:
        self.path = path
        self.holder = holder
        self._fd: int | None = fd
        self._owner_pid = os.getpid()
        self._guard = threading.Lock()

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Remove the lock file and free the lock; a second call does nothing."""
        with self._guard:  # one release closes the file, whichever thread calls first
            fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            # A forked child has the same open file: it must not free its parent's lock, only close its copy.
            if os.getpid() == self._owner_pid:
                # Removed while still locked, and only if it is still our file: a taker that opened it
                # meanwhile sees that it is gone once it locks it, and takes the new one.
                with contextlib.suppress(OSError):
                    if _same_file(fd, self.path):
                        self.path.unlink()
        finally:
            os.close(fd)

    def __enter__(self) -> HeldLock:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"HeldLock({str(self.path)!r}, held={self.held})"


def acquire(path: Path) -> HeldLock:
    """Take the lock at ``path`` without waiting, and describe this process in it.

    Raises ``LockHeld`` (naming the holder as far as its file says) when another process holds it, and
    ``LockUnusable`` when the file cannot be created or locked.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise LockUnusable(
            f"cannot create the folder of the deploy lock {path} ({error.strerror}): fix the permissions of "
            f"{path.parent.parent} or choose another state folder."
        ) from None
    for _ in range(MAX_ATTEMPTS):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as error:
            raise LockUnusable(
                f"cannot open the deploy lock {path} ({error.strerror}): fix its permissions, or remove what is "
                "in its place if it is not a file."
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            holder = _holder_of(fd) if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN) else None
            os.close(fd)
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise LockHeld(path, holder) from None
            raise LockUnusable(
                f"cannot lock the deploy lock {path} ({error.strerror}): keep the state folder on a local file "
                "system that supports flock."
            ) from None
        if not _same_file(fd, path):
            os.close(fd)  # its holder removed it as it released it: lock the file that is there now
            continue
        holder = me()
        try:
            _write_description(fd, holder)
        except OSError as error:
            os.close(fd)
            raise LockUnusable(
                f"cannot write the deploy lock {path} ({error.strerror}): free space or fix the permissions of "
                f"{path.parent}."
            ) from None
        return HeldLock(path, fd, holder)
    # Only a storm of takers and releasers, each removing the file just as it is opened, gets here.
    raise LockHeld(path, read(path))
