"""The SSH transport: one OpenSSH connection per run carries everything deploycheck does on a remote server.

``docker_host = "ssh://user@host:port"`` names a server reached with this machine's own ``ssh`` and the user's
own ssh configuration (keys, agent, known_hosts, ProxyJump...): no SSH library, one host-key policy, OpenSSH's.
An ``SSHConnection`` starts one ControlMaster in a fresh private directory and carries, multiplexed on it:

- the Docker API: the server's /var/run/docker.sock forwarded to a local unix socket, so that the docker SDK
  and ``docker compose`` use ``DOCKER_HOST=unix://...`` (``docker_host``);
- TCP forwards of the ports the stack publishes on the server's 127.0.0.1 (``forward``), and reverse forwards,
  e.g. for a registry on this machine's loopback (``reverse``);
- commands on the server (``run``), and a deploy lock held there (``RemoteLock``).

Every ssh command is built as data here (the functions below; their argv are tested exactly) and run by the
project's ``Runner``. Why each option is there:

- A fresh private directory per connection (mode 0700, a short path: unix sockets allow about 100 bytes): a
  stale ControlPath makes ssh silently run WITHOUT a master (rc 0), a stale socket makes a forward fail.
- The master runs in the foreground of its own session (``Runner.start``: Ctrl+C in the terminal does not reach
  it, the rollback still has it), with no forwards of its own (``ClearAllForwardings``: none from the user's
  config) and ``ControlPersist=no``; its one session, ``exec cat >/dev/null``, reads the master's stdin, a pipe
  this process holds. When this process dies, even by SIGKILL, that session ends, and the master exits as soon
  as its last session (a command, the lock's holder) has: nothing is left running, here or on the server.
- Every forward is added to the running master (``-O forward``), so that its failure is that request's alone:
  OpenSSH takes no local port 0 for ``-L``, so a free one is chosen here, and chosen again if it was taken.
- Every client of the master says ``ControlMaster=no`` (a user's ``ControlMaster yes`` would make it a second
  master) and ``BatchMode=yes`` (no prompt ever waits for a terminal); a session also says
  ``ProxyCommand=false``: when the master is gone or refuses a session (sshd's MaxSessions), OpenSSH falls back
  silently to a new direct connection, which this makes fail (rc 255) instead of working around the master.
- ``RemoteCommand=none``: a RemoteCommand in the user's Host block would refuse the command given here.
- The transport's options come before the user's (``ssh_args``), so that they win (the first value ssh reads
  wins), and the user's come on every call, the master's clients included.
- ``-O check`` and every other control request run under a timeout: a stopped master never answers them.
- A remote command is one string, ``shlex.join(argv)`` (sshd hands it to the user's shell), after ``--``.

SSH failing is one sentence (``SSHError``) naming the server and what to check, never a traceback, never a hang.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import posixpath
import re
import selectors
import shlex
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO

from deploycheck.engine.commands import Command, CommandFailed, Result, Runner
from deploycheck.request.secrets import mask_text

REMOTE_DOCKER_SOCKET = "/var/run/docker.sock"
DIRECTORY_PREFIX = "dc-ssh-"
CONNECT_TIMEOUT = 30.0  # the master: connected and authenticated
CONTROL_TIMEOUT = 10.0  # a control request (-O forward, cancel, exit) to the master
CHECK_TIMEOUT = 5.0  # -O check: a master that does not answer this fast is not alive
COMMAND_TIMEOUT = 60.0
FORWARD_ATTEMPTS = 5  # local ports tried for one forward before giving up
LOCK_BUSY = 75  # flock's exit code when someone else holds the lock (flock -E)
LOCK_TAKEN = "deploycheck-lock-taken"  # what the lock's holder prints once it holds the lock
_SOCKET_PATH_MAX = 90  # sun_path is 108 bytes; ssh first binds the control socket at PATH + ".<16 random>"


class SSHError(Exception):
    """SSH itself failed (connect, authenticate, the master gone, a forward refused); one sentence that names the
    server and what to check."""


class LockHeld(Exception):
    """The remote lock is held by someone else; ``holder`` is the text its holder wrote (host, pid, time, who)."""

    def __init__(self, holder: str, where: str = "") -> None:
        super().__init__(f"the lock {where} is held by {holder}" if where else f"the lock is held by {holder}")
        self.holder = holder


# --- the destination ---------------------------------------------------------------------------------------------

_HOST = re.compile(r"[A-Za-z0-9._:%-]+")
_USER = re.compile(r"[A-Za-z0-9._@$-]+")


def parse_destination(url: str) -> tuple[str, list[str]]:
    """``ssh://[user@]host[:port]`` -> (ssh's destination ``user@host``, ssh's arguments ``["-p", port]``).

    The host may be a ``Host`` of the user's ssh config (``ssh://myserver``): everything else comes from there.
    """
    shown = url if len(url) <= 100 else url[:100] + "..."
    fix = "write it as ssh://user@host:port (user and port optional)"
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme != "ssh" or not parts.netloc:
        raise SSHError(f"{shown!r} is not an SSH address: {fix}")
    if parts.password is not None:
        raise SSHError(f"{shown!r} has a password in it: SSH logs in with a key (or the agent), remove ':password'")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise SSHError(f"{shown!r} has something after the host and port: {fix}")
    host = parts.hostname or ""
    if not host or not _HOST.fullmatch(host) or host.startswith("-"):
        raise SSHError(f"{shown!r} has no valid host name: {fix}")
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0 or (port is None and parts.netloc.endswith(":")):
        raise SSHError(f"{shown!r} has a port that is not a number from 1 to 65535: {fix}")
    user = urllib.parse.unquote(parts.username) if parts.username is not None else ""
    if parts.username is not None and (not _USER.fullmatch(user) or user.startswith("-")):
        raise SSHError(f"{shown!r} has no valid user name before '@': {fix}")
    destination = f"{user}@{host}" if user else host
    return destination, (["-p", str(port)] if port is not None else [])


# --- the ssh commands, as data ----------------------------------------------------------------------------------


def master_command(destination: str, ssh_args: Sequence[str], control: str, log: str) -> Command:
    """The ControlMaster: in the foreground (``Runner.start``), its log in a file, its one session watching stdin."""
    return Command(
        (
            "ssh",
            "-M",
            "-S",
            control,
            "-T",
            "-E",
            log,
            "-o",
            "ControlPersist=no",
            "-o",
            "RemoteCommand=none",
            "-o",
            "ClearAllForwardings=yes",
            "-o",
            "StreamLocalBindUnlink=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "ServerAliveInterval=15",
            "-o",
            "ServerAliveCountMax=3",
            *ssh_args,
            "--",
            destination,
            "exec cat >/dev/null",
        ),
        timeout=CONNECT_TIMEOUT,
    )


def _client(control: str) -> tuple[str, ...]:
    return ("ssh", "-S", control, "-o", "ControlMaster=no", "-o", "BatchMode=yes")


def control_command(
    destination: str,
    ssh_args: Sequence[str],
    control: str,
    operation: str,
    forward: Sequence[str] = (),
    *,
    timeout: float = CONTROL_TIMEOUT,
) -> Command:
    """A request to the master: ``check``, ``exit``, or ``forward``/``cancel`` with ``("-L" | "-R", spec)``."""
    return Command((*_client(control), *ssh_args, "-O", operation, *forward, "--", destination), timeout=timeout)


def session_command(
    destination: str,
    ssh_args: Sequence[str],
    control: str,
    argv: Sequence[str],
    *,
    stdin: bool = False,
    timeout: float = COMMAND_TIMEOUT,
) -> Command:
    """``argv`` on the server, as one session on the master; its stdin is /dev/null (``-n``) unless ``stdin``."""
    if isinstance(argv, str):
        raise TypeError("argv is a list of arguments, not a shell string")
    return Command(
        (
            *_client(control),
            "-o",
            "ProxyCommand=false",
            "-o",
            "ClearAllForwardings=yes",
            "-o",
            "RemoteCommand=none",
            "-T",
            *(() if stdin else ("-n",)),
            *ssh_args,
            "--",
            destination,
            shlex.join(argv),
        ),
        timeout=timeout,
    )


def local_forward_spec(local_port: int, remote_port: int, remote_host: str = "127.0.0.1") -> str:
    return f"127.0.0.1:{local_port}:{_bracket(remote_host)}:{remote_port}"


def remote_forward_spec(remote_port: int, local_port: int, local_host: str = "127.0.0.1") -> str:
    return f"127.0.0.1:{remote_port}:{_bracket(local_host)}:{local_port}"


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


# The lock, on the server: flock -n on PATH, held by a shell whose `cat` reads the session's stdin. It ends, and
# the lock is released, when that stdin ends: release(), this process dying (even by SIGKILL: the kernel closes
# the pipe), the master or the network gone (sshd closes the session). Its holder writes who it is beside the
# lock (PATH.holder) before it says LOCK_TAKEN; a refused taker prints that text and exits LOCK_BUSY.
_LOCK_HOLDER = f'printf "%s\\n" "$2" > "$1" && echo {LOCK_TAKEN} && exec cat >/dev/null'
_LOCK_TAKER = (
    f'mkdir -p -- "$1" && {{ flock -n -E {LOCK_BUSY} -- "$2" sh -c "$5" sh "$3" "$4"; rc=$?; '
    f'if [ "$rc" -eq {LOCK_BUSY} ]; then cat -- "$3" 2>/dev/null; fi; exit "$rc"; }}'
)


def lock_argv(path: str, holder_text: str) -> list[str]:
    """The remote command that takes the lock at ``path`` and holds it while its stdin is open."""
    directory = posixpath.dirname(path) or "."
    return ["sh", "-c", _LOCK_TAKER, "sh", directory, path, path + ".holder", holder_text, _LOCK_HOLDER]


def describe_holder() -> str:
    """Who takes a lock: this host, this process, its user, the time (UTC)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    return f"host {socket.gethostname()}, pid {os.getpid()}, user {user}, since {started}"


def free_local_port() -> int:
    """A port free on 127.0.0.1 now (the system's choice); someone may take it before ssh binds it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


# --- why ssh failed, in one sentence ----------------------------------------------------------------------------

# (what ssh says, the reason, what to check); the first that matches a line of ssh's log wins.
_DIAGNOSES: tuple[tuple[str, str, str], ...] = (
    (
        "has changed and you have requested strict checking",
        "its host key is not the one known_hosts has for it",
        "known_hosts: a reinstalled server has new host keys, a server that did not change may be an impostor",
    ),
    (
        "host key is known for",
        "known_hosts has no host key for it",
        "known_hosts: add the server's host key, checked out of band (ssh-keyscan prints it)",
    ),
    ("Host key verification failed", "its host key could not be verified", "known_hosts"),
    (
        "Too many authentication failures",
        "too many keys were offered before the right one",
        "the key: IdentitiesOnly=yes with the right IdentityFile",
    ),
    (
        "Permission denied",
        "the server refused the key",
        "the key (IdentityFile or ssh-agent) and that its public key is in the user's authorized_keys on the server",
    ),
    (
        "Connection refused",
        "nothing accepts connections at its address and port",
        "that the server's sshd runs, and the port",
    ),
    ("Could not resolve hostname", "its host name does not resolve", "the host name and your ssh config's Host"),
    ("timed out", "it does not answer", "the address, the port, and any firewall in between"),
    ("No route to host", "the network has no route to it", "the address and the network"),
    ("Network is unreachable", "the network has no route to it", "the address and the network"),
    (
        "Connection closed",
        "it closed the connection before the login",
        "the server's sshd: its log, MaxStartups, AllowUsers/DenyUsers",
    ),
    (
        "Connection reset",
        "it closed the connection before the login",
        "the server's sshd: its log, MaxStartups, AllowUsers/DenyUsers",
    ),
)


def diagnose(log: str) -> tuple[str, str, str]:
    """ssh's own words (its log or stderr) -> (the reason, what to check, the line that says so)."""
    lines = [line.strip() for line in log.splitlines() if line.strip() and not line.startswith("@")]
    for pattern, reason, check in _DIAGNOSES:
        for line in lines:
            if pattern in line:
                return reason, check, line
    return "", "", lines[-1] if lines else ""


def _said(line: str) -> str:
    line = " ".join(line.split())
    return f" (ssh: {line[:200]!r})" if line else ""


def _transport_words(stderr: str) -> bool:
    """Whether a session's rc 255 came from ssh (the master unreachable or refusing it), not from the command."""
    return any(word in stderr for word in ("Control socket connect(", "mux_client", "muxclient:"))


# --- the connection ---------------------------------------------------------------------------------------------


class SSHConnection:
    """One ControlMaster to one server, for one run (a context manager: ``with SSHConnection(...) as ssh:``).

    ``destination`` is ssh's (``user@host`` or a ``Host`` of the user's ssh config; ``from_url`` takes
    ``ssh://...``), ``ssh_args`` the user's own ssh options (``["-F", config]``, ``["-p", "2222"]``), ``name``
    the server as messages show it (the destination). ``connect_timeout``: for the master to be up;
    ``check_timeout``: for it to answer ``-O check`` (``alive``); ``pick_port`` chooses local ports for forwards.
    """

    def __init__(
        self,
        destination: str,
        ssh_args: Sequence[str] = (),
        *,
        name: str = "",
        runner: Runner | None = None,
        connect_timeout: float = CONNECT_TIMEOUT,
        check_timeout: float = CHECK_TIMEOUT,
        pick_port: Callable[[], int] = free_local_port,
        remote_docker_socket: str = REMOTE_DOCKER_SOCKET,
    ) -> None:
        if not destination or destination.startswith("-"):
            raise SSHError(f"{destination!r} is no SSH destination: give user@host, or a Host of your ssh config")
        self.destination = destination
        self.ssh_args = tuple(ssh_args)
        self.name = name or destination
        self.runner = runner or Runner()
        self.connect_timeout = connect_timeout
        self.check_timeout = check_timeout
        self.remote_docker_socket = remote_docker_socket
        self._pick_port = pick_port
        self._directory: Path | None = None
        self._master: subprocess.Popen[bytes] | None = None
        self._forwards: dict[tuple[str, int], int] = {}  # (remote host, remote port) -> local port
        self._reverses: dict[int, str] = {}  # remote port -> its spec
        self._lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str, ssh_args: Sequence[str] = (), *, runner: Runner | None = None) -> SSHConnection:
        """A connection to ``ssh://user@host:port`` (``parse_destination``), shown by that address."""
        destination, url_args = parse_destination(url)
        return cls(destination, [*url_args, *ssh_args], name=url, runner=runner)

    # --- paths -------------------------------------------------------------------------------------------------

    def _path(self, name: str) -> str:
        if self._directory is None:
            raise SSHError(f"the SSH connection to {self.name} is not open: open() it first")
        return str(self._directory / name)

    @property
    def control_path(self) -> str:
        return self._path("control")

    @property
    def docker_socket(self) -> str:
        """The local end of the server's Docker socket."""
        return self._path("docker.sock")

    @property
    def docker_host(self) -> str:
        """``DOCKER_HOST`` for the docker SDK and ``docker compose``: the server's engine, through the master."""
        return f"unix://{self.docker_socket}"

    @property
    def master_pid(self) -> int | None:
        return self._master.pid if self._master is not None else None

    # --- the master --------------------------------------------------------------------------------------------

    def __enter__(self) -> SSHConnection:
        self.open()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def open(self) -> None:
        """Connect (the master up and answering), forward the server's Docker socket, and ping its engine."""
        if self._master is not None:
            return
        self._directory = _private_directory()
        command = master_command(self.destination, self.ssh_args, self.control_path, self._path("master.log"))
        try:
            self._master = self.runner.start(command)
        except CommandFailed:
            self.close()
            raise SSHError(f"cannot reach {self.name}: OpenSSH's client (ssh) is not installed here") from None
        try:
            self._wait_for_master()
            self._forward_docker_socket()
            self._ping_docker()
        except BaseException:
            self.close()
            raise

    def _wait_for_master(self) -> None:
        master = self._master
        assert master is not None
        deadline = time.monotonic() + self.connect_timeout
        control = Path(self.control_path)
        while master.poll() is None:
            if control.exists() and self.alive():
                return
            if time.monotonic() > deadline:
                master.kill()
                master.wait()
                reason, _, line = diagnose(self._log())
                raise SSHError(
                    f"SSH to {self.name} did not connect within {self.connect_timeout:g} s"
                    f"{': ' + reason if reason else ''}{_said(line)}; check the address and port, and that the "
                    "server's sshd answers there"
                )
            time.sleep(0.02)
        reason, check, line = diagnose(self._log())
        if not reason:
            reason = f"ssh exited with {master.returncode}"
            check = f"the server's sshd and your ssh configuration (ssh -v {shlex.quote(self.destination)} says more)"
            if master.returncode == 0:
                reason, check = "the server ended the session at once", "the user's shell and any forced command"
        raise SSHError(f"SSH to {self.name} failed: {reason}{_said(line)}; check {check}")

    def _log(self) -> str:
        try:
            return Path(self._path("master.log")).read_text(errors="replace")[-4000:]
        except (OSError, SSHError):
            return ""

    def _forward_docker_socket(self) -> None:
        result = self._control("forward", ("-L", f"{self.docker_socket}:{self.remote_docker_socket}"))
        if result.returncode != 0:
            raise self._request_failed(
                result,
                "forwarding the server's Docker socket",
                "AllowStreamLocalForwarding in the server's sshd_config",
            )

    def _ping_docker(self, timeout: float = 15) -> None:
        answer = b""
        with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.settimeout(timeout)
            client.connect(self.docker_socket)
            client.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            while len(answer) < 4096 and (chunk := client.recv(4096)):
                answer += chunk
        status = answer.split(b"\r\n", 1)[0].split()
        if len(status) < 2 or status[1] != b"200":
            raise SSHError(
                f"{self.name} answers SSH, but its Docker engine does not answer on {self.remote_docker_socket}; "
                "check that dockerd runs there and that the SSH user may use its socket (root, or the docker group)"
            )

    def alive(self) -> bool:
        """The master runs and answers ``-O check`` within a few seconds. (The network may still be gone: a round
        trip, ``run(["true"])``, tells; ssh's keepalives end a silent connection in about 45 s.)"""
        master = self._master
        if master is None or master.poll() is not None:
            return False
        command = control_command(
            self.destination, self.ssh_args, self.control_path, "check", timeout=self.check_timeout
        )
        try:
            return self.runner.run(command, check=False).returncode == 0
        except CommandFailed:  # no answer in time: a stopped or hung master
            return False

    def _gone(self) -> SSHError:
        master = self._master
        if master is not None and master.poll() is None:
            state = "its master process does not answer"
        else:
            state = "its master process ended"
        _, _, line = diagnose(self._log())
        return SSHError(
            f"the SSH connection to {self.name} is gone ({state}){_said(line)}; check the network and the server's "
            "sshd, then run again"
        )

    def _control(self, operation: str, forward: Sequence[str] = (), timeout: float = CONTROL_TIMEOUT) -> Result:
        command = control_command(
            self.destination, self.ssh_args, self.control_path, operation, forward, timeout=timeout
        )
        try:
            return self.runner.run(command, check=False)
        except CommandFailed:
            raise self._gone() from None

    def _request_failed(self, result: Result, what: str, check: str) -> SSHError:
        if "Control socket connect(" in result.stderr or not self.alive():
            return self._gone()
        _, _, line = diagnose(result.stderr)
        return SSHError(f"{what} on the SSH connection to {self.name} failed{_said(line)}; check {check}")

    def close(self) -> None:
        """End the master (``-O exit``; every forward and session with it) and remove the private directory."""
        master, self._master = self._master, None
        if master is not None:
            if master.poll() is None:
                command = control_command(self.destination, self.ssh_args, self.control_path, "exit", timeout=5)
                with contextlib.suppress(CommandFailed):
                    self.runner.run(command, check=False)
                try:
                    master.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    master.kill()
                    master.wait()
            if master.stdin is not None:
                master.stdin.close()
        with self._lock:
            self._forwards.clear()
            self._reverses.clear()
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = None

    # --- commands ----------------------------------------------------------------------------------------------

    def run(
        self,
        argv: Sequence[str],
        *,
        input: str | None = None,
        timeout: float = COMMAND_TIMEOUT,
        check: bool = False,
    ) -> Result:
        """``argv`` on the server (one session on the master); its exit code, stdout and stderr in the Result.

        ``check`` raises CommandFailed on a non-zero exit, as does a command that outlives ``timeout`` (killed
        here; it may still run on the server). SSH failing raises SSHError.
        """
        if self._master is None:
            raise SSHError(f"the SSH connection to {self.name} is not open: open() it first")
        command = session_command(
            self.destination, self.ssh_args, self.control_path, argv, stdin=input is not None, timeout=timeout
        )
        shown = mask_text(shlex.join(argv), self.runner.secrets)
        try:
            result = self.runner.run(command, check=False, input=input)
        except CommandFailed:
            if not self.alive():
                raise self._gone() from None
            raise CommandFailed(
                command, f"on {self.name} did not finish within {timeout:g} s (it may still run there)", shown
            ) from None
        if result.returncode == 255 and (_transport_words(result.stderr) or not self.alive()):
            if not self.alive():
                raise self._gone()
            if "Session open refused" in result.stderr:
                raise SSHError(
                    f"{self.name} refused another session on the SSH connection; check MaxSessions in the server's "
                    "sshd_config (each command running at once is one session)"
                )
            _, _, line = diagnose(result.stderr)
            raise SSHError(
                f"a command on the SSH connection to {self.name} failed{_said(line)}; check the server's sshd"
            )
        if check and result.returncode != 0:
            output = (result.stderr.strip() or result.stdout.strip())[-1500:]
            raise CommandFailed(command, f"on {self.name} exited with {result.returncode}: {output}", shown)
        return result

    def stream(
        self,
        argv: Sequence[str],
        *,
        send: Callable[[IO[bytes]], None] | None = None,
        receive: Callable[[IO[bytes]], None] | None = None,
        timeout: float = COMMAND_TIMEOUT,
    ) -> None:
        """``argv`` on the server with binary data: ``send`` writes its stdin (closed after), ``receive`` reads its
        stdout (e.g. a tar stream); CommandFailed on a non-zero exit or after ``timeout``, SSHError when SSH fails."""
        if self._master is None:
            raise SSHError(f"the SSH connection to {self.name} is not open: open() it first")
        command = session_command(
            self.destination, self.ssh_args, self.control_path, argv, stdin=send is not None, timeout=timeout
        )
        shown = mask_text(shlex.join(argv), self.runner.secrets)
        process = self.runner.start(command, capture=True)
        assert process.stdin is not None and process.stdout is not None and process.stderr is not None
        errors: list[bytes] = []
        failures: list[BaseException] = []

        def feed() -> None:
            try:
                if send is not None:
                    send(process.stdin)  # type: ignore[arg-type]
            except BaseException as error:  # the command ended early (its error says why) or ``send`` failed
                failures.append(error)
            finally:
                with contextlib.suppress(OSError):
                    process.stdin.close()  # type: ignore[union-attr]

        def drain() -> None:
            errors.append(process.stderr.read())  # type: ignore[union-attr]

        threads = [threading.Thread(target=feed, daemon=True), threading.Thread(target=drain, daemon=True)]
        for thread in threads:
            thread.start()
        try:
            if receive is not None:
                receive(process.stdout)
            else:
                process.stdout.read()
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise CommandFailed(command, f"on {self.name} did not finish within {timeout:g} s", shown) from None
        except BaseException:
            process.kill()
            process.wait()
            raise
        finally:
            for thread in threads:
                thread.join(timeout=5)
            _close(process)
        error = mask_text(b"".join(errors).decode(errors="replace"), self.runner.secrets)
        if code == 255 and (_transport_words(error) or not self.alive()):
            if not self.alive():
                raise self._gone()
            _, _, line = diagnose(error)
            raise SSHError(f"a transfer on the SSH connection to {self.name} failed{_said(line)}; check the server")
        if code != 0:
            raise CommandFailed(command, f"on {self.name} exited with {code}: {error.strip()[-1500:]}", shown)
        if failures and not isinstance(failures[0], BrokenPipeError):
            raise failures[0]

    # --- forwards ----------------------------------------------------------------------------------------------

    def forward(self, remote_port: int, *, remote_host: str = "127.0.0.1", local_port: int | None = None) -> int:
        """Forward a local port on 127.0.0.1 to ``remote_host:remote_port`` as the server sees it; returns it.

        The same remote port again returns the same local port. Without ``local_port``, a free one is chosen, and
        another one when ssh finds it taken. A forward to a closed server port is accepted: each connection to it
        is then opened and closed at once.
        """
        with self._lock:
            if (remote_host, remote_port) in self._forwards:
                return self._forwards[(remote_host, remote_port)]
            tried: list[int] = []
            for _ in range(1 if local_port else FORWARD_ATTEMPTS):
                port = local_port or self._pick_port()
                tried.append(port)
                result = self._control("forward", ("-L", local_forward_spec(port, remote_port, remote_host)))
                if result.returncode == 0:
                    self._forwards[(remote_host, remote_port)] = port
                    return port
                if "Port forwarding failed" not in result.stderr:  # not a taken port: the master itself
                    raise self._request_failed(
                        result,
                        f"forwarding {remote_host}:{remote_port}",
                        "AllowTcpForwarding in the server's sshd_config",
                    )
        ports = ", ".join(str(port) for port in tried)
        raise SSHError(
            f"no local port for a forward to {remote_host}:{remote_port} on {self.name}: 127.0.0.1:{ports} "
            f"{'was' if len(tried) == 1 else 'were'} taken; check what listens there (ss -ltnp)"
        )

    def cancel(self, remote_port: int, *, remote_host: str = "127.0.0.1") -> None:
        """Close the local port that ``forward`` opened to ``remote_host:remote_port`` (none: nothing to do)."""
        with self._lock:
            port = self._forwards.pop((remote_host, remote_port), None)
            if port is None:
                return
            result = self._control("cancel", ("-L", local_forward_spec(port, remote_port, remote_host)))
        if result.returncode != 0:
            raise self._request_failed(
                result, f"closing the forward to {remote_host}:{remote_port}", "the master's log"
            )

    def reverse(self, local_port: int, *, remote_port: int | None = None, local_host: str = "127.0.0.1") -> int:
        """Make the server's 127.0.0.1:``remote_port`` (default: the same number) reach ``local_host:local_port``
        here, e.g. a registry on this machine, so that the server pulls ``127.0.0.1:PORT/image`` from it (a
        loopback registry needs no --insecure-registry). Returns the server's port."""
        remote = remote_port or local_port
        with self._lock:
            spec = remote_forward_spec(remote, local_port, local_host)
            if self._reverses.get(remote) == spec:
                return remote
            result = self._control("forward", ("-R", spec))
            if result.returncode != 0:
                raise self._request_failed(
                    result,
                    f"a reverse forward from the server's 127.0.0.1:{remote}",
                    "that nothing listens on that port on the server, and AllowTcpForwarding in its sshd_config",
                )
            self._reverses[remote] = spec
            return remote

    def cancel_reverse(self, remote_port: int) -> None:
        with self._lock:
            spec = self._reverses.pop(remote_port, None)
            if spec is None:
                return
            result = self._control("cancel", ("-R", spec))
        if result.returncode != 0:
            raise self._request_failed(result, f"closing the reverse forward {spec}", "the master's log")

    def forwards(self) -> dict[tuple[str, int], int]:
        """The open forwards: (remote host, remote port) -> local port."""
        with self._lock:
            return dict(self._forwards)


def _private_directory() -> Path:
    """A new directory only this user can enter, short enough for unix sockets in it; stale ones are removed."""
    base = tempfile.gettempdir()
    if len(base) + len(DIRECTORY_PREFIX) + 8 + len("/docker.sock") > _SOCKET_PATH_MAX:
        base = "/tmp"
    _remove_stale_directories(Path(base))
    directory = Path(tempfile.mkdtemp(prefix=DIRECTORY_PREFIX, dir=base))  # mode 0700
    (directory / "owner").write_text(f"{os.getpid()}\n")
    return directory


def _remove_stale_directories(base: Path) -> None:
    """Directories that a process killed before its close() left: their owner is gone and no master answers."""
    with contextlib.suppress(OSError):
        for directory in base.glob(DIRECTORY_PREFIX + "*"):
            with contextlib.suppress(OSError, ValueError):
                if directory.stat().st_uid != os.getuid():
                    continue
                owner = int((directory / "owner").read_text().strip() or "0")
                if owner and _process_exists(owner):
                    continue
                if (directory / "control").exists() and _socket_answers(directory / "control"):
                    continue
                shutil.rmtree(directory, ignore_errors=True)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _socket_answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1)
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


# --- the lock ---------------------------------------------------------------------------------------------------


class RemoteLock:
    """A deploy lock on the server: ``flock -n`` on a path there, held by one session on the connection.

    The holder is an ssh client in a session of its own (Ctrl+C in the terminal does not release the lock before
    the rollback has run), whose stdin is a pipe from this process: ``release()``, or this process dying for any
    reason (even SIGKILL), ends it, and the server's side lets go of the lock. The master ending (the network
    gone) releases it too.
    """

    def __init__(self, connection: SSHConnection, *, timeout: float = 30) -> None:
        self.connection = connection
        self.timeout = timeout
        self.path = ""
        self._holder: subprocess.Popen[bytes] | None = None

    @property
    def held(self) -> bool:
        return self._holder is not None and self._holder.poll() is None

    def acquire(self, path: str, holder_text: str = "") -> None:
        """Take the lock at ``path`` on the server, or raise LockHeld with the text its holder wrote.

        ``holder_text`` says who takes it (default: ``describe_holder()``: host, pid, user, time); it is written
        beside the lock, at ``path + ".holder"``.
        """
        connection = self.connection
        if self._holder is not None:
            raise SSHError(f"the lock {self.path} on {connection.name} is held by this process already")
        command = session_command(
            connection.destination,
            connection.ssh_args,
            connection.control_path,
            lock_argv(path, holder_text or describe_holder()),
            stdin=True,
            timeout=self.timeout,
        )
        try:
            holder = connection.runner.start(command, capture=True)
        except CommandFailed:
            raise SSHError(f"cannot reach {connection.name}: OpenSSH's client (ssh) is not installed here") from None
        assert holder.stdout is not None and holder.stderr is not None
        first, answered = _first_line(holder.stdout, self.timeout)
        if first.strip() == LOCK_TAKEN.encode():
            self._holder, self.path = holder, path
            return
        try:
            code = holder.wait(timeout=10 if answered else 0.01)
        except subprocess.TimeoutExpired:
            holder.kill()
            holder.wait()
            _close(holder)
            if not connection.alive():
                raise connection._gone() from None
            raise SSHError(
                f"taking the lock {path} on {connection.name} did not answer within {self.timeout:g} s; check the "
                "server (its load, its disk)"
            ) from None
        text = (first + holder.stdout.read()).decode(errors="replace").strip()
        error = holder.stderr.read().decode(errors="replace")
        _close(holder)
        if code == LOCK_BUSY:
            raise LockHeld(text or "someone who did not write who they are", f"{path} on {connection.name}")
        if code == 255 and (_transport_words(error) or not connection.alive()):
            if not connection.alive():
                raise connection._gone()
            _, _, line = diagnose(error)
            raise SSHError(f"taking the lock {path} on {connection.name} failed{_said(line)}; check the server's sshd")
        lines = [line for line in error.splitlines() if line.strip()]
        raise SSHError(
            f"taking the lock {path} on {connection.name} failed (exit {code}{': ' + lines[-1][:200] if lines else ''}); "
            f"check that flock (util-linux) is installed there and that the SSH user may write {posixpath.dirname(path)}"
        )

    def release(self) -> None:
        """Let go of the lock (the holder's stdin closed; it ends, and the server releases the lock)."""
        holder, self._holder = self._holder, None
        if holder is None:
            return
        if holder.stdin is not None:
            with contextlib.suppress(OSError):
                holder.stdin.close()
        try:
            holder.wait(timeout=10)
        except subprocess.TimeoutExpired:
            holder.kill()
            holder.wait()
        _close(holder)


def _first_line(stream: IO[bytes], timeout: float) -> tuple[bytes, bool]:
    """The first line a process prints, waited for no longer than ``timeout``; (what came, whether it came whole
    or the stream ended)."""
    data = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(stream.fileno(), selectors.EVENT_READ)
        while b"\n" not in data:
            left = deadline - time.monotonic()
            if left <= 0:
                return data, False
            if not selector.select(left):
                continue
            chunk = os.read(stream.fileno(), 4096)
            if not chunk:
                return data, True
            data += chunk
    return data, True


def _close(process: subprocess.Popen[bytes]) -> None:
    for stream in (process.stdin, process.stdout, process.stderr):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()
