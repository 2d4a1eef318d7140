"""A real SSH server for the tests: a container on this engine running sshd and its own Docker engine.

``start_server(client, name, port, keydir)`` builds the image when it is missing (``ssh-docker/``, tagged by a
digest of its files, built once), runs it as container ``name`` with sshd on 127.0.0.1:port
and the inner engine's storage on volume ``name + "-docker"``, and writes into ``keydir``:

- ``id_ed25519``: the client key (made with ssh-keygen when missing), root's only login;
- ``known_hosts``: the server's own host keys, read from the container (ssh checks them strictly, no
  StrictHostKeyChecking=no anywhere);
- ``ssh_config``: a ``Host name`` block, so that ``ssh -F keydir/ssh_config name`` (``server.ssh_args`` and
  ``server.destination``) reaches it, and nothing of the user's own ~/.ssh is read.

It returns once ``docker info`` answers over ssh. ``stop_server`` removes the container and its volume, also
after a failed start (start_server does it itself before it raises). The container is not --privileged (refused
here): it gets every capability but CAP_SYS_RESOURCE, no seccomp or AppArmor profile, and its entrypoint remounts
/sys and the cgroups read-write.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors
from docker.models.containers import Container

from deploycheck.engine.images import build_context_digest
from deploycheck.engine.ssh import free_local_port

CONTEXT = Path(__file__).resolve().parent / "ssh-docker"
REPOSITORY = "deploycheck/ssh-test-server"
LABEL = "org.deploycheck.test-server"
START_TIMEOUT = 90.0


class ServerFailed(RuntimeError):
    """The test server did not start; the message ends with the container's last log lines."""


@dataclass(frozen=True)
class SSHServer:
    name: str  # the container, its volume's prefix, and the Host of ssh_config
    port: int  # sshd on 127.0.0.1
    key: Path
    known_hosts: Path
    ssh_config: Path

    @property
    def ssh_args(self) -> list[str]:
        return ["-F", str(self.ssh_config)]

    @property
    def destination(self) -> str:
        """ssh's destination: the Host block of ``ssh_config``."""
        return self.name

    @property
    def volume(self) -> str:
        return volume_name(self.name)


def volume_name(name: str) -> str:
    return f"{name}-docker"


def server_image(client: docker.DockerClient) -> str:
    """The test server's image, tagged by a digest of its build folder: built only when its files change."""
    reference = f"{REPOSITORY}:ctx-{build_context_digest(CONTEXT)[:12]}"
    try:
        client.images.get(reference)
    except docker.errors.ImageNotFound:
        client.images.build(path=str(CONTEXT), tag=reference, rm=True, forcerm=True)
    return reference


def start_server(
    client: docker.DockerClient,
    name: str,
    port: int,
    keydir: Path,
    *,
    storage_driver: str = "overlay2",
    timeout: float = START_TIMEOUT,
) -> SSHServer:
    """Start the test server ``name`` on 127.0.0.1:``port`` (``storage_driver``: overlay2, or vfs as a fallback)."""
    image = server_image(client)
    keydir.mkdir(parents=True, exist_ok=True)
    keydir.chmod(0o700)
    key = keydir / "id_ed25519"
    if not key.exists():
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"deploycheck-test {name}", "-f", str(key)],
            check=True,
            capture_output=True,
        )
    server = SSHServer(name, port, key, keydir / "known_hosts", keydir / "ssh_config")
    stop_server(client, server)  # a container or volume left by an earlier run of the same name
    try:
        container = client.containers.run(
            image,
            name=name,
            hostname=name,
            detach=True,
            cap_add=["ALL"],
            cap_drop=["SYS_RESOURCE"],
            security_opt=["seccomp=unconfined", "apparmor=unconfined"],
            volumes={server.volume: {"bind": "/var/lib/docker", "mode": "rw"}},
            environment={"AUTHORIZED_KEYS": Path(f"{key}.pub").read_text().strip(), "STORAGE_DRIVER": storage_driver},
            ports={"22/tcp": ("127.0.0.1", port)},
            labels={LABEL: "1"},
        )
        deadline = time.monotonic() + timeout
        write_known_hosts(server, _host_keys(container, deadline))
        write_ssh_config(server)
        _wait_for_docker_over_ssh(container, server, deadline)
    except BaseException:
        stop_server(client, server)
        raise
    return server


def stop_server(client: docker.DockerClient, server: SSHServer | str) -> None:
    """Remove the server's container and its /var/lib/docker volume (either may be missing)."""
    name = server.name if isinstance(server, SSHServer) else server
    with contextlib.suppress(docker.errors.NotFound):
        client.containers.get(name).remove(force=True, v=True)
    with contextlib.suppress(docker.errors.NotFound):
        client.volumes.get(volume_name(name)).remove(force=True)


def write_known_hosts(server: SSHServer, host_keys: list[str]) -> None:
    """known_hosts for ``[127.0.0.1]:port``: the server's host keys (``TYPE BASE64`` each)."""
    server.known_hosts.write_text("".join(f"[127.0.0.1]:{server.port} {key}\n" for key in host_keys))
    server.known_hosts.chmod(0o600)


def write_ssh_config(server: SSHServer) -> None:
    server.ssh_config.write_text(
        f"""# the deploycheck test server {server.name} (tests/servers/ssh_server.py)
Host {server.name}
    HostName 127.0.0.1
    Port {server.port}
    User root
    IdentityFile {server.key}
    IdentitiesOnly yes
    UserKnownHostsFile {server.known_hosts}
    GlobalKnownHostsFile /dev/null
    StrictHostKeyChecking yes
    UpdateHostKeys no
    BatchMode yes
    ConnectTimeout 5
"""
    )
    server.ssh_config.chmod(0o600)


def _host_keys(container: Container, deadline: float) -> list[str]:
    """The server's public host keys, made by its entrypoint before dockerd and sshd start."""
    while True:
        _fail_if_exited(container)
        code, output = container.exec_run(["sh", "-c", "cat /etc/ssh/ssh_host_*_key.pub"])
        keys = [" ".join(line.split()[:2]) for line in output.decode(errors="replace").splitlines() if line.strip()]
        if code == 0 and keys:
            return keys
        if time.monotonic() > deadline:
            raise ServerFailed(f"{container.name} made no host keys in time{_logs(container)}")
        time.sleep(0.2)


def _wait_for_docker_over_ssh(container: Container, server: SSHServer, deadline: float) -> None:
    argv = ["ssh", *server.ssh_args, "-o", "ConnectTimeout=2", "--", server.destination, "docker info"]
    while True:
        _fail_if_exited(container)
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            done = None
        if done is not None and done.returncode == 0:
            return
        if time.monotonic() > deadline:
            said = done.stderr.strip()[-500:] if done is not None else "ssh hung"
            raise ServerFailed(
                f"`docker info` over ssh to {server.name} did not answer in time ({said}){_logs(container)}"
            )
        time.sleep(0.25)


def _fail_if_exited(container: Container) -> None:
    container.reload()
    if container.status in ("exited", "dead"):
        raise ServerFailed(f"{container.name} exited{_logs(container)}")


def _logs(container: Container) -> str:
    try:
        logs: bytes = container.logs(tail=40)
        return ":\n" + logs.decode(errors="replace")
    except docker.errors.APIError:
        return ""


def ssh_available() -> bool:
    return shutil.which("ssh") is not None and shutil.which("ssh-keygen") is not None


class LocalPorts:
    """Free ports on 127.0.0.1 for the tests: from ``$DEPLOYCHECK_TEST_PORTS`` ("FIRST-LAST", for a machine whose
    users share out port ranges) when it is set, else the system's choice. Callable: ``pick_port`` of a
    connection. A port is given once per range cycle, so that two picks in a row differ."""

    def __init__(self, spec: str | None = None) -> None:
        spec = os.environ.get("DEPLOYCHECK_TEST_PORTS", "") if spec is None else spec
        self._range: range | None = None
        if spec:
            first, _, last = spec.partition("-")
            self._range = range(int(first), int(last or first) + 1)
        self._next = 0

    def __call__(self) -> int:
        if self._range is None:
            return free_local_port()
        for _ in range(len(self._range)):
            port = self._range[self._next % len(self._range)]
            self._next += 1
            if _is_free(port):
                return port
        raise RuntimeError(f"no free port in {self._range.start}-{self._range.stop - 1} on 127.0.0.1")


def _is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
