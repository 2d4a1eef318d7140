"""A stack on a server reached over SSH: the target of ``docker_host = "ssh://USER@HOST:PORT"``.

Everything goes through one ``SSHConnection`` (engine/ssh.py: this machine's OpenSSH and the user's own ssh
configuration, or ``server.ssh_config``), opened by the first thing that needs the server (preflight), so that
SSH failing is preflight failing, recorded, in one sentence:

- the Docker API and ``docker compose`` use the server's engine through its forwarded socket;
- a port the stack publishes on the server's 127.0.0.1 is reached through a forward to a free local port that
  deploycheck picks, opens and closes itself: whatever listens on that port number here is never asked;
- preflight checks the server's ports, disk space and engine;
- images are built and had on this machine's engine (``builder``) and then shipped to the server
  (``ship``): through the environment's registry when it names one, otherwise ``docker save | docker load``
  over the connection, only those the server lacks (by image id);
- the server holds the truth (``ServerState``): the deploy lock is taken there, and the ledger, the releases'
  configurations and the backups are kept in ``server.state_dir/PROJECT/`` there. The environment's local state
  folder is this run's working copy: filled from the server once the lock is held, written back after each
  change, so that any operator's machine (or CI job) sees the same history, and a run killed anywhere leaves
  the server what the next run needs to repair it.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import shutil
import subprocess
import tarfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import docker
import docker.errors
from docker import DockerClient

from deploycheck.engine import commands
from deploycheck.engine.commands import CommandFailed, Runner
from deploycheck.engine.images import split_reference
from deploycheck.engine.ssh import LockHeld as RemoteLockHeld
from deploycheck.engine.ssh import RemoteLock, SSHConnection, SSHError
from deploycheck.engine.target import Builder, EngineUnreachable, Shipped, State, docker_client
from deploycheck.release import lock
from deploycheck.request.environment import RESTORE_JOURNAL, Environment

# Until the connection is open, a command that would reach an engine reaches none (never this machine's).
NOT_CONNECTED = "unix:///nonexistent/deploycheck-ssh-not-connected.sock"
SHIP_TIMEOUT = 1800.0
STATE_TIMEOUT = 600.0
KEPT_BACKUPS = 10
# The state files that travel between the server and the working copy; backups go one by one, when taken. The
# restore journal travels too, and so does its absence: a restore killed on one machine is finished from any.
STATE_ENTRIES = ("ledger.json", "configurations", RESTORE_JOURNAL)


class ServerLockHeld(lock.LockHeld):
    """The server's deploy lock is held; its holder as the holder wrote itself there."""

    def __init__(self, where: str, holder_text: str) -> None:
        self.holder_text = holder_text  # before the base class describes it
        super().__init__(Path(where), None)

    @property
    def known(self) -> bool:
        return True

    def describe(self) -> str:
        return self.holder_text


class ServerLock:
    """The deploy lock held on the server (``RemoteLock``), with the interface of a local ``HeldLock``."""

    def __init__(self, remote: RemoteLock) -> None:
        self._remote = remote

    @property
    def held(self) -> bool:
        return self._remote.held

    def release(self) -> None:
        self._remote.release()


class SSHTarget:
    """The server's engine over one SSH connection; ports through forwards; state and lock on the server."""

    def __init__(self, environment: Environment) -> None:
        self.environment = environment
        secrets = environment.all_secrets
        ssh_config = environment.server.ssh_config
        ssh_args = ["-F", str(ssh_config)] if ssh_config is not None else []
        self.connection = SSHConnection.from_url(environment.docker_host, ssh_args, runner=Runner({}, secrets))
        self.runner = Runner({"DOCKER_HOST": NOT_CONNECTED}, secrets)
        self.where = f"the server {environment.docker_host}"
        self.server_state = ServerState(self)
        self.state: State = self.server_state
        self._docker: DockerClient | None = None
        self._builder: Builder | None = None
        self._lock = threading.RLock()

    # --- the connection ---------------------------------------------------------------------------------------

    def connected(self) -> SSHConnection:
        """The open connection (opened now if needed); raises EngineUnreachable in one sentence when SSH fails."""
        with self._lock:
            if self.connection.master_pid is None:
                try:
                    self.connection.open()
                except SSHError as error:
                    raise EngineUnreachable(str(error)) from None
                self.runner.env["DOCKER_HOST"] = self.connection.docker_host
            return self.connection

    def new_docker_client(self) -> DockerClient:
        connection = self.connected()
        try:
            return docker_client(connection.docker_host)
        except docker.errors.DockerException as error:
            raise EngineUnreachable(f"the Docker engine of {self.where} does not answer ({error})") from None

    @property
    def docker(self) -> DockerClient:
        with self._lock:
            if self._docker is None:
                self._docker = self.new_docker_client()
            return self._docker

    def host_address(self, port: int) -> tuple[str, int]:
        return ("127.0.0.1", self.connected().forward(port))

    def port_is_free(self, port: int) -> bool:
        result = self.connected().run(["ss", "-H", "-t", "-l", "-n", f"sport = :{port}"], check=True)
        return result.stdout.strip() == ""

    def disk_space(self, docker_root: str) -> list[tuple[str, str, float | None]]:
        """(what, where, free GiB) for this machine's working copy and, on the server, the state and Docker."""
        local = self.environment.state_dir.parent.parent
        places = [("the server's deploycheck state", self.server_state.folder), ("the server's Docker", docker_root)]
        free = [("this machine's state folder", str(local), _local_free_gib(local))]
        for label, path in places:
            # the folder or, not made yet, the nearest one above it that is
            walk_up = 'p="$1"; while [ ! -e "$p" ] && [ "$p" != . ] && [ "$p" != / ]; do p=$(dirname "$p"); done; df -P -k "$p"'
            result = self.connected().run(["sh", "-c", walk_up, "sh", path], check=False)
            lines = result.stdout.strip().splitlines()
            gib = int(lines[-1].split()[3]) / 2**20 if result.returncode == 0 and len(lines) > 1 else None
            free.append((label, path, gib))
        return free

    def deploy_lock(self) -> lock.HeldLock | ServerLock:
        remote = RemoteLock(self.connected())
        path = posixpath.join(self.server_state.folder, "deploy.lock")
        try:
            remote.acquire(path, lock.me().describe())
        except RemoteLockHeld as held:
            raise ServerLockHeld(f"{path} on {self.connection.name}", held.holder) from None
        except SSHError as error:
            raise lock.LockUnusable(str(error)) from None
        return ServerLock(remote)

    # --- images -------------------------------------------------------------------------------------------------

    @property
    def builder(self) -> Builder:
        """This machine's engine: images are built, pulled and resolved here, then shipped."""
        with self._lock:
            if self._builder is None:
                try:
                    client = docker_client()
                    client.ping()
                except docker.errors.DockerException as error:
                    raise EngineUnreachable(
                        f"this machine's Docker engine does not answer ({error}): deploycheck builds the images "
                        "here and ships them to the server; start it (scripts/setup.sh does) and run again"
                    ) from None
                self._builder = Builder(client, Runner({}, self.environment.all_secrets))
            return self._builder

    def ship(self, references: Sequence[str], say: Callable[[str], None]) -> Shipped:
        """Make every image of ``references`` (built here) present on the server, sending only what it lacks."""
        start = time.monotonic()
        builder = self.builder
        wanted = {reference: str(builder.docker.images.get(reference).id) for reference in references}
        missing = [reference for reference, image_id in wanted.items() if not _has_image(self.docker, image_id)]
        if not missing:
            return Shipped(0, 0, time.monotonic() - start, "none needed")
        size = sum(int(builder.docker.images.get(r).attrs.get("Size", 0)) for r in missing)
        registry = self.environment.server.registry
        say(
            f"[deploycheck] images: {len(missing)} of {len(wanted)} not on the server, sending them "
            f"({size / 2**20:.0f} MiB) {'through ' + registry if registry else 'over SSH'}"
        )
        if registry:
            self._through_registry(registry, missing)
        else:
            self._over_ssh(missing)
        for reference in missing:  # what arrived is what was built: its id
            if not _has_image(self.docker, wanted[reference]):
                raise CommandFailed(
                    commands.Command(("docker", "load")),
                    f"did not leave {reference} ({wanted[reference][:19]}) on {self.where}",
                )
        return Shipped(len(missing), size, time.monotonic() - start, f"registry {registry}" if registry else "ssh")

    def _over_ssh(self, references: Sequence[str]) -> None:
        """``docker save`` here piped into ``docker load`` on the server (its engine, through the connection)."""
        save = subprocess.Popen(
            ["docker", "save", *references],
            env={**commands.environ_now(), **self.builder.runner.env},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        assert save.stdout is not None and save.stderr is not None
        try:
            load = subprocess.run(
                ["docker", "load", "-q"],
                env={**commands.environ_now(), **self.runner.env},
                stdin=save.stdout,
                capture_output=True,
                timeout=SHIP_TIMEOUT,
                start_new_session=True,
                check=False,
            )
            save.stdout.close()
            saved = save.wait(timeout=60)
        finally:
            if save.poll() is None:
                save.kill()
                save.wait()
        if saved != 0 or load.returncode != 0:
            detail = (save.stderr.read() + load.stderr).decode(errors="replace").strip()[-800:]
            raise CommandFailed(
                commands.Command(("docker", "save", *references)), f"| docker load on {self.where} failed: {detail}"
            )

    def _through_registry(self, registry: str, references: Sequence[str]) -> None:
        """Pushed from here, pulled by the server, tagged there as here. A registry on this machine's loopback
        is reached from the server's same address through the connection (a reverse forward)."""
        host, _, port = registry.partition(":")
        if host in ("127.0.0.1", "localhost") and port:
            self.connected().reverse(int(port))
        for reference in references:
            repository, tag = split_reference(reference)
            remote = f"{registry}/{repository}:{tag}"
            self.builder.docker.images.get(reference).tag(f"{registry}/{repository}", tag=tag)
            self.builder.runner.run(commands.Command(("docker", "push", "-q", remote), timeout=SHIP_TIMEOUT))
            self.runner.run(commands.docker_pull(remote, SHIP_TIMEOUT))
            self.docker.images.get(remote).tag(repository, tag=tag)

    def close(self) -> None:
        with self._lock:
            for client in (self._docker, self._builder.docker if self._builder else None):
                if client is not None:
                    with contextlib.suppress(Exception):
                        client.close()
            self._docker = None
            self._builder = None
            self.connection.close()
            self.runner.env["DOCKER_HOST"] = NOT_CONNECTED


def _has_image(client: DockerClient, image_id: str) -> bool:
    try:
        client.images.get(image_id)
    except docker.errors.ImageNotFound:
        return False
    return True


def _local_free_gib(path: Path) -> float | None:
    try:
        return shutil.disk_usage(path if path.exists() else path.parent).free / 2**30
    except OSError:
        return None


# --- the state, kept on the server ----------------------------------------------------------------------------

# Receives a tar on stdin into the state folder: the files first, the ledger last (it names the
# configurations), each put in place by a rename; backups beyond the last KEPT_BACKUPS removed.
_RECEIVE = """set -e
umask 077
d="$1"; keep="$2"; mkdir -p "$d"; chmod 700 "$d"
t="$d/.incoming-$$"; rm -rf "$t"; mkdir "$t"; trap 'rm -rf "$t"' EXIT
tar -C "$t" -xf -
chmod -R go-rwx "$t"
if [ -d "$t/configurations" ]; then
  mkdir -p "$d/configurations"
  for f in "$t"/configurations/*; do [ -e "$f" ] && mv -f "$f" "$d/configurations/"; done
fi
if [ -d "$t/backups" ]; then
  mkdir -p "$d/backups"; chmod 700 "$d/backups"
  for b in "$t"/backups/*; do [ -e "$b" ] || continue; rm -rf "$d/backups/${b##*/}"; mv "$b" "$d/backups/"; done
  ls -1 "$d/backups" | grep -v '\\.partial$' | sort | head -n "-$keep" | while read -r old; do rm -rf "$d/backups/$old"; done
fi
if [ -f "$t/restore.json" ]; then mv -f "$t/restore.json" "$d/restore.json"; else rm -f "$d/restore.json"; fi
if [ -f "$t/ledger.json" ]; then mv -f "$t/ledger.json" "$d/ledger.json"; fi
"""

# Sends the state folder's ledger and configurations as a tar (an empty one for a server that has none yet).
_SEND = """set -e
d="$1"; cd "$d" 2>/dev/null || { tar -cf - -T /dev/null; exit 0; }
set --; for f in ledger.json configurations restore.json; do [ -e "$f" ] && set -- "$@" "$f"; done
tar -cf - -T /dev/null "$@"
"""

# Sends one complete backup folder of the state folder as a tar (an empty one when the server has no such backup).
_SEND_BACKUP = """set -e
if cd "$1/backups" 2>/dev/null && [ -f "$2/manifest.json" ]; then exec tar -cf - "$2"; fi
tar -cf - -T /dev/null
"""


@dataclass
class ServerState:
    """The stack's state folder on the server, and this run's working copy of it (the environment's state
    folder here)."""

    target: SSHTarget

    @property
    def folder(self) -> str:
        """``server.state_dir/PROJECT`` on the server: the stack's, whichever environment name deploys it."""
        return posixpath.join(self.target.environment.server.state_dir, self.target.environment.compose_project)

    @property
    def local(self) -> Path:
        return self.target.environment.state_dir

    @contextlib.contextmanager
    def _received(self, script: str, *args: str, beside: Path) -> Iterator[Path]:
        """What ``script`` sends from the server as a tar, unpacked in a scratch folder beside ``beside`` (removed
        after the block), for the caller to move into place."""
        incoming = beside.parent / f".{beside.name}.incoming-{os.getpid()}"
        shutil.rmtree(incoming, ignore_errors=True)
        incoming.mkdir(parents=True, mode=0o700)
        try:

            def receive(stream: IO[bytes]) -> None:
                with tarfile.open(fileobj=stream, mode="r|") as archive:
                    archive.extractall(incoming, filter="data")

            self.target.connected().stream(
                ["sh", "-c", script, "sh", self.folder, *args], receive=receive, timeout=STATE_TIMEOUT
            )
            yield incoming
        finally:
            shutil.rmtree(incoming, ignore_errors=True)

    def pull(self) -> None:
        """Replace the working copy's ledger, configurations and restore journal with the server's (none there:
        none here)."""
        with self._received(_SEND, beside=self.local) as incoming:
            self.local.mkdir(parents=True, exist_ok=True)
            for entry in STATE_ENTRIES:
                here = self.local / entry
                if here.is_dir():
                    shutil.rmtree(here)
                elif here.exists():
                    here.unlink()
                if (incoming / entry).exists():
                    os.replace(incoming / entry, here)

    def push(self, backup: Path | None = None) -> None:
        """Write the working copy's ledger and configurations (and a backup just taken) to the server."""

        def send(stream: IO[bytes]) -> None:
            with tarfile.open(fileobj=stream, mode="w|") as archive:
                for entry in STATE_ENTRIES:
                    if (self.local / entry).exists():
                        archive.add(self.local / entry, arcname=entry)
                if backup is not None:
                    archive.add(backup, arcname=f"backups/{backup.name}")

        argv = ["sh", "-c", _RECEIVE, "sh", self.folder, str(KEPT_BACKUPS)]
        self.target.connected().stream(argv, send=send, timeout=STATE_TIMEOUT)

    def fetch_backup(self, name: str) -> bool:
        """The server's backup ``name`` copied into the working copy's backups folder (a repair's restore on a
        machine that did not take it); False when the server has no such backup."""
        folder = self.target.environment.backups_dir
        with self._received(_SEND_BACKUP, name, beside=folder) as incoming:
            if not (incoming / name / "manifest.json").is_file():
                return False
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            shutil.rmtree(folder / name, ignore_errors=True)
            os.replace(incoming / name, folder / name)
            return True

    def end(self) -> None:
        """The run's end: the server has everything; this machine keeps no backup unless told to."""
        if not self.target.environment.server.copy_backups:
            shutil.rmtree(self.target.environment.backups_dir, ignore_errors=True)
