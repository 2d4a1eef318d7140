"""The SSH transport end to end, against a real server: a container with sshd and its own Docker engine
(tests/servers/ssh_server.py), reached with this machine's OpenSSH, its host key checked strictly.

One server for the module; the tests that break a connection (kill its master, take a port) open their own.
Local ports come from $DEPLOYCHECK_TEST_PORTS ("FIRST-LAST") when it is set, else from the system.
"""

from __future__ import annotations

import http.server
import os
import selectors
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from deploycheck.engine import commands, ssh
from deploycheck.engine.commands import Runner
from deploycheck.engine.ssh import LockHeld, RemoteLock, SSHConnection, SSHError
from tests.servers.ssh_server import LocalPorts, SSHServer, ssh_available, start_server, stop_server

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not ssh_available(), reason="OpenSSH's client (ssh, ssh-keygen) is not installed"),
]

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "dcssh"  # the test server's container and volume, the tiny image and compose project on it
PORTS = LocalPorts()
TINY_IMAGE = f"{PREFIX}-tiny:1"
SERVER_HTTP_PORT = 47391  # on the server's own loopback (its network namespace), not this machine's


def one_sentence(error: BaseException, *words: str) -> str:
    """The error's message: one line, no traceback or internals in it, with ``words`` in it."""
    text = str(error)
    assert "\n" not in text and "Traceback" not in text, text
    for word in words:
        assert word in text, text
    return text


def get(port: int, timeout: float = 5) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=timeout) as response:
        body: bytes = response.read()
        return body.decode().strip()


def refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as connection:
            connection.settimeout(2)
            return connection.recv(1) == b""  # accepted and closed at once: nothing behind it either
    except OSError:
        return True


def own_directories() -> set[str]:
    """The transport's private directories that this process owns."""
    found = set()
    bases = {Path(tempfile.gettempdir()), Path("/tmp")}
    for directory in (path for base in bases for path in base.glob(ssh.DIRECTORY_PREFIX + "*")):
        try:
            if (directory / "owner").read_text().strip() == str(os.getpid()):
                found.add(str(directory))
        except OSError:
            pass
    return found


def process_gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")  # a zombie no one reaped yet has ended too


def wait_until(condition: object, seconds: float) -> float:
    """Seconds until ``condition()`` is true; fails after ``seconds``."""
    start = time.monotonic()
    while not condition():  # type: ignore[operator]
        assert time.monotonic() - start < seconds, f"not within {seconds} s"
        time.sleep(0.05)
    return time.monotonic() - start


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SSHServer]:
    client = docker.from_env()
    started = start_server(client, f"{PREFIX}-e2e-{os.getpid()}", PORTS(), tmp_path_factory.mktemp("ssh-keys"))
    yield started
    stop_server(client, started)
    client.close()


@pytest.fixture(scope="module")
def connection(server: SSHServer) -> Iterator[SSHConnection]:
    with SSHConnection(server.destination, server.ssh_args, pick_port=PORTS) as opened:
        yield opened


@pytest.fixture(scope="module")
def tiny_image(connection: SSHConnection) -> str:
    """A one-file image on the server (its static busybox), since no registry can be reached from here."""
    connection.run(["sh", "-c", f"tar -C /bin -cf - busybox | docker import - {TINY_IMAGE}"], check=True, timeout=60)
    return TINY_IMAGE


@pytest.fixture(scope="module")
def server_http(connection: SSHConnection, server: SSHServer) -> Iterator[str]:
    """busybox httpd on the server's 127.0.0.1:SERVER_HTTP_PORT (not this machine's), serving a page naming it."""
    page = f"served on {server.name}"
    script = (
        f"mkdir -p /tmp/www && echo {shlex.quote(page)} > /tmp/www/index.html && "
        f"busybox httpd -p 127.0.0.1:{SERVER_HTTP_PORT} -h /tmp/www"
    )
    connection.run(["sh", "-c", script], check=True)
    yield page
    connection.run(["pkill", "-f", f"httpd -p 127.0.0.1:{SERVER_HTTP_PORT}"])


def test_the_master_carries_the_docker_api_and_compose_deploys_through_it(
    connection: SSHConnection, server: SSHServer, tiny_image: str, tmp_path: Path
) -> None:
    client = docker.DockerClient(base_url=connection.docker_host, timeout=30)
    try:
        assert client.ping()
        assert client.info()["Name"] == server.name  # the server's engine, not this machine's
        compose_file = tmp_path / "compose.yaml"
        compose_file.write_text(
            textwrap.dedent(
                f"""
                services:
                  web:
                    image: {tiny_image}
                    init: true  # httpd as PID 1 would ignore SIGTERM: down would wait its timeout
                    entrypoint: ["/busybox", "sh", "-c"]
                    command:
                      - /busybox mkdir -p /www && echo "compose on $$HOSTNAME" > /www/index.html
                        && exec /busybox httpd -f -p 8000 -h /www
                    ports: ["127.0.0.1:${{WEB_PORT}}:8000"]
                    healthcheck:
                      test: ["CMD", "/busybox", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8000/"]
                      interval: 1s
                      timeout: 2s
                      retries: 20
                """
            )
        )
        project, remote_port = f"{PREFIX}-tiny", 47380
        runner = Runner({"DOCKER_HOST": connection.docker_host})

        def compose(*args: str) -> commands.Result:
            return runner.run(
                commands.compose(
                    project,
                    [compose_file],
                    args,
                    project_directory=compose_file.parent,
                    env={"WEB_PORT": str(remote_port)},
                    secret_env={},
                    timeout=120,
                )
            )

        compose("up", "--detach", "--wait", "--wait-timeout", "60")
        try:
            label = {"label": f"com.docker.compose.project={project}"}
            (web,) = client.containers.list(filters=label)
            assert web.attrs["State"]["Health"]["Status"] == "healthy"
            port = connection.forward(remote_port)  # published on the server's 127.0.0.1 only
            assert get(port) == f"compose on {web.attrs['Config']['Hostname']}"
            connection.cancel(remote_port)
        finally:
            compose("down", "--remove-orphans", "--timeout", "5")
        assert client.containers.list(all=True, filters=label) == []
    finally:
        client.close()


def test_a_forward_reaches_a_server_port_and_a_cancelled_one_is_closed(
    connection: SSHConnection, server_http: str
) -> None:
    assert refused(SERVER_HTTP_PORT)  # that port is the server's: nothing listens on it here
    port = connection.forward(SERVER_HTTP_PORT)
    assert get(port) == server_http
    assert connection.forward(SERVER_HTTP_PORT) == port  # the same remote port: the same forward
    assert connection.forwards() == {("127.0.0.1", SERVER_HTTP_PORT): port}
    connection.cancel(SERVER_HTTP_PORT)
    assert refused(port)
    assert connection.forwards() == {}
    connection.cancel(SERVER_HTTP_PORT)  # cancelled already: nothing to do


def test_a_local_port_that_is_taken_is_skipped_and_closing_leaves_nothing_behind(
    server: SSHServer, server_http: str
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", PORTS()))
        taken.listen()
        taken_port, free_port = taken.getsockname()[1], PORTS()
        picks = iter([taken_port, free_port])
        before = own_directories()
        opened = SSHConnection(server.destination, server.ssh_args, pick_port=lambda: next(picks))
        with opened:
            assert opened.forward(SERVER_HTTP_PORT) == free_port  # the taken one was tried, and skipped
            assert get(free_port) == server_http
            with pytest.raises(SSHError) as raised:
                opened.forward(SERVER_HTTP_PORT + 1, local_port=taken_port)  # a port asked for: no other one
            one_sentence(raised.value, f"127.0.0.1:{taken_port} was taken", server.name)
            master = opened.master_pid
            assert master is not None
        assert refused(free_port)
        assert process_gone(master)
        assert own_directories() == before


@pytest.mark.parametrize("case", ["changed host key", "unknown host key", "wrong client key", "no sshd there"])
def test_ssh_failing_to_connect_is_one_sentence_naming_the_server_and_what_to_check(
    server: SSHServer, tmp_path: Path, case: str
) -> None:
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    wrong_known_hosts = tmp_path / "known_hosts"
    args = list(server.ssh_args)
    if case == "changed host key":  # another key for [127.0.0.1]:PORT, as a reinstalled server (or an impostor)
        key_type, key = other.with_suffix(".pub").read_text().split()[:2]
        wrong_known_hosts.write_text(f"[127.0.0.1]:{server.port} {key_type} {key}\n")
        args += ["-o", f"UserKnownHostsFile={wrong_known_hosts}"]  # before the file's: it wins
        words = ["its host key is not the one known_hosts has for it", "check known_hosts"]
    elif case == "unknown host key":
        wrong_known_hosts.write_text("")
        args += ["-o", f"UserKnownHostsFile={wrong_known_hosts}"]
        words = ["known_hosts has no host key for it", "check known_hosts"]
    elif case == "wrong client key":
        config = tmp_path / "ssh_config"
        config.write_text(server.ssh_config.read_text().replace(str(server.key), str(other)))
        args = ["-F", str(config)]
        words = ["the server refused the key", "authorized_keys"]
    else:
        args += ["-o", f"Port={PORTS()}"]
        words = ["nothing accepts connections at its address and port", "check that the server's sshd runs"]
    before = own_directories()
    start = time.monotonic()
    opened = SSHConnection(server.destination, args, connect_timeout=20)
    with pytest.raises(SSHError) as raised:
        opened.open()
    assert time.monotonic() - start < 10  # ssh's own answer, not a timeout of ours
    one_sentence(raised.value, f"SSH to {server.name} failed: ", *words)
    assert opened.master_pid is None and own_directories() == before


def test_a_server_whose_docker_engine_does_not_answer_fails_the_open_in_one_sentence(server: SSHServer) -> None:
    before = own_directories()
    opened = SSHConnection(server.destination, server.ssh_args, remote_docker_socket="/run/no-docker-here.sock")
    with pytest.raises(SSHError) as raised:
        opened.open()
    one_sentence(raised.value, f"{server.name} answers SSH, but its Docker engine does not answer", "dockerd")
    assert opened.master_pid is None and own_directories() == before


def test_a_server_that_never_speaks_ssh_fails_at_the_connect_timeout_instead_of_hanging(server: SSHServer) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
        silent.bind(("127.0.0.1", PORTS()))
        silent.listen()  # the kernel completes the TCP handshake; no one ever sends a banner
        args = [*server.ssh_args, "-o", f"Port={silent.getsockname()[1]}", "-o", "ConnectTimeout=30"]
        start = time.monotonic()
        with pytest.raises(SSHError) as raised:
            SSHConnection(server.destination, args, connect_timeout=2).open()
        assert time.monotonic() - start < 2 + 2
    one_sentence(raised.value, f"SSH to {server.name} did not connect within 2 s", "check the address and port")


def test_the_user_s_own_master_tty_and_remote_command_settings_do_not_change_the_transport(
    server: SSHServer, tmp_path: Path
) -> None:
    config = tmp_path / "ssh_config"
    user_master = tmp_path / "user-master-%C"
    config.write_text(
        server.ssh_config.read_text()
        + f"    ControlMaster yes\n    ControlPath {user_master}\n    ControlPersist 10m\n"
        + "    RemoteCommand echo from the user config\n    RequestTTY yes\n"
    )
    with SSHConnection(server.destination, ["-F", str(config)]) as opened:
        assert opened.run(["sh", "-c", "echo ran; tty"]).stdout == "ran\nnot a tty\n"
        lock = RemoteLock(opened)
        lock.acquire(f"/var/lib/deploycheck/e2e-{os.getpid()}-config.lock")
        lock.release()
    assert list(tmp_path.glob("user-master-*")) == []  # no master of the user's config was made


def test_a_master_killed_mid_run_makes_alive_false_and_the_next_command_one_sentence(server: SSHServer) -> None:
    with SSHConnection(server.destination, server.ssh_args, pick_port=PORTS) as opened:
        assert opened.alive()
        assert opened.run(["hostname"], check=True).stdout.strip() == server.name
        master = opened.master_pid
        assert master is not None
        os.kill(master, signal.SIGKILL)
        assert wait_until(lambda: not opened.alive(), 5) < 5
        start = time.monotonic()
        with pytest.raises(SSHError) as raised:
            opened.run(["true"])  # no silent fallback to a connection of its own
        one_sentence(raised.value, f"the SSH connection to {server.name} is gone", "its master process ended")
        with pytest.raises(SSHError) as raised:
            opened.forward(SERVER_HTTP_PORT)
        one_sentence(raised.value, "is gone")
        assert time.monotonic() - start < 5


def test_a_stopped_master_is_not_alive_and_a_command_on_it_fails_in_time_instead_of_hanging(
    server: SSHServer,
) -> None:
    with SSHConnection(server.destination, server.ssh_args, check_timeout=1, pick_port=PORTS) as opened:
        master = opened.master_pid
        assert master is not None
        os.kill(master, signal.SIGSTOP)
        try:
            start = time.monotonic()
            assert not opened.alive()  # -O check under its timeout: no answer
            with pytest.raises(SSHError) as raised:
                opened.run(["true"], timeout=2)  # the command's timeout, then -O check's
            one_sentence(raised.value, "is gone", "its master process does not answer")
            assert time.monotonic() - start < 1 + 2 + 1 + 3
        finally:
            os.kill(master, signal.SIGCONT)


def test_the_remote_lock_refuses_a_second_holder_naming_the_first(connection: SSHConnection, server: SSHServer) -> None:
    path = f"/var/lib/deploycheck/e2e-{os.getpid()}.lock"
    first, second = RemoteLock(connection), RemoteLock(connection)
    first.acquire(path, "host ci-7, pid 4242, user deployer, since 2025-01-01 00:00:00 UTC")
    try:
        assert first.held
        with pytest.raises(LockHeld) as raised:
            second.acquire(path)
        assert raised.value.holder == "host ci-7, pid 4242, user deployer, since 2025-01-01 00:00:00 UTC"
        one_sentence(raised.value, path, server.name)
        assert not second.held
    finally:
        first.release()
    assert not first.held
    second.acquire(path)  # released: the next one takes it
    second.release()


HOLDER = """
import sys
from deploycheck.engine.ssh import RemoteLock, SSHConnection

destination, config, path = sys.argv[1:4]
connection = SSHConnection(destination, ["-F", config])
connection.open()
RemoteLock(connection).acquire(path, "the child")
print(connection.master_pid, connection.control_path, flush=True)
sys.stdin.read()
"""


def read_line(process: subprocess.Popen[str], seconds: float) -> str:
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        assert selector.select(seconds), "the child said nothing"
    return process.stdout.readline()


def test_the_remote_lock_is_released_when_its_holding_process_is_killed(
    connection: SSHConnection, server: SSHServer
) -> None:
    path = f"/var/lib/deploycheck/e2e-{os.getpid()}-killed.lock"
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, server.destination, str(server.ssh_config), path],
        env={**os.environ, "PYTHONPATH": str(ROOT / "plugins")},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        master_pid, control = read_line(child, 30).split()
        with pytest.raises(LockHeld) as raised:
            RemoteLock(connection).acquire(path)
        assert raised.value.holder == "the child"
        child.send_signal(signal.SIGKILL)  # no close(), no release(): only the kernel closes its pipes
        child.wait(timeout=10)
    finally:
        child.kill()
        child.wait()
    after = RemoteLock(connection)

    def taken() -> bool:
        try:
            after.acquire(path)
        except LockHeld:
            return False
        return True

    released_in = wait_until(taken, 10)
    after.release()
    # The child's master ends once its sessions have: nothing of it is left running.
    assert wait_until(lambda: process_gone(int(master_pid)), 10) < 10
    # Its private directory is left (a killed process removes nothing); the next connection removes it.
    left = Path(control).parent
    assert left.exists()
    with SSHConnection(server.destination, server.ssh_args):
        assert not left.exists()
    print(f"lock released {released_in:.2f} s after the SIGKILL")


INTERRUPTED = """
import sys
from deploycheck.engine.ssh import RemoteLock, SSHConnection

destination, config, path = sys.argv[1:4]
with SSHConnection(destination, ["-F", config]) as connection:
    lock = RemoteLock(connection)
    lock.acquire(path, "the interrupted one")
    try:  # (from before "ready": Ctrl+C may come as soon as it is said)
        print("ready", flush=True)
        sys.stdin.read()
    except KeyboardInterrupt:  # the rollback's turn: it still has the connection and the lock
        print("held" if lock.held else "released", connection.run(["true"]).returncode, flush=True)
        lock.release()
"""


def test_ctrl_c_in_the_terminal_leaves_the_master_and_the_lock_to_the_rollback(
    connection: SSHConnection, server: SSHServer
) -> None:
    path = f"/var/lib/deploycheck/e2e-{os.getpid()}-interrupted.lock"
    child = subprocess.Popen(
        [sys.executable, "-c", INTERRUPTED, server.destination, str(server.ssh_config), path],
        env={**os.environ, "PYTHONPATH": str(ROOT / "plugins")},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,  # as a command started from a terminal: Ctrl+C signals its whole process group
    )
    try:
        assert read_line(child, 30) == "ready\n"
        os.killpg(child.pid, signal.SIGINT)
        assert read_line(child, 30) == "held 0\n"
        assert child.wait(timeout=30) == 0
    finally:
        child.kill()
        child.wait()
    lock = RemoteLock(connection)
    lock.acquire(path)  # released by the rollback, then the connection closed
    lock.release()


def test_a_reverse_forward_lets_the_server_reach_a_port_on_this_machine(connection: SSHConnection) -> None:
    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"served on this machine\n")

        def log_message(self, format: str, *args: object) -> None:
            pass

    local = http.server.HTTPServer(("127.0.0.1", PORTS()), Page)
    thread = threading.Thread(target=local.serve_forever, daemon=True)
    thread.start()
    try:
        port = local.server_address[1]
        assert connection.reverse(port) == port  # the same number on the server: image names stay valid
        fetch = ["busybox", "wget", "-q", "-O", "-", f"http://127.0.0.1:{port}/"]  # (its -T segfaults)
        assert connection.run(fetch, check=True).stdout == "served on this machine\n"
        connection.cancel_reverse(port)
        assert connection.run(fetch).returncode != 0
    finally:
        local.shutdown()
        local.server_close()
