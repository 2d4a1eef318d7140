"""Deploying to a server over SSH, end to end: a real server (a container running sshd and its own Docker
engine, tests/servers/ssh_server.py, reached with this machine's OpenSSH and its host key checked strictly),
an environment whose docker_host is ssh://, and nothing done by hand but the key and the environment file.

The stack runs on the server's engine only; its images are built here and shipped (over SSH, or through a real
registry on this machine's loopback); the server holds the deploy lock and the stack's history, so a second
operator (another folder: another machine's working copy) sees it and is refused while a deploy runs; a run
whose SSH connection is cut mid-stage leaves the server what the next run repairs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest

from deploycheck.engine.commands import Runner
from deploycheck.engine.ssh import RemoteLock, SSHConnection
from tests.e2e.conftest import (
    ROOT,
    SECRET_MARKER,
    TOKEN_MARKER,
    Deploy,
    build_api_variant,
    free_ports,
    releases_override,
    tag_release_images,
)
from tests.servers.ssh_server import LocalPorts, SSHServer, ssh_available, start_server, stop_server

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not ssh_available(), reason="OpenSSH's client (ssh, ssh-keygen) is not installed"),
]

PORTS = LocalPorts()
PROJECT = f"dce2e-server-{os.getpid()}"
STAGE_TIMEOUT = 45  # a broken release's /ready is waited for this long


@dataclass
class OnServer:
    server: SSHServer
    operator: Deploy  # this machine's working copy
    second: Deploy  # another operator's: same environment, another folder
    releases: str  # the compose override whose API image is deploycheck/api-e2e:${RELEASE}

    def ssh(self, *argv: str, check: bool = True) -> str:
        result = subprocess.run(
            ["ssh", *self.server.ssh_args, self.server.destination, *argv],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert not check or result.returncode == 0, result.stderr
        return result.stdout.strip()

    def sql(self, query: str) -> str:
        return self.ssh(
            "docker", "exec", f"{PROJECT}-coordinator-1", "psql", "-X", "-U", "deploycheck", "-Atc", f'"{query}"'
        )

    def server_ledger(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.ssh("cat", f".deploycheck/{PROJECT}/ledger.json"))
        return data

    def running_images(self) -> dict[str, str]:
        lines = self.ssh(
            "docker",
            "ps",
            "--filter",
            f"label=com.docker.compose.project={PROJECT}",
            "--format",
            "'{{.Label \"com.docker.compose.service\"}} {{.ID}}'",
        ).splitlines()
        images = {}
        for line in lines:
            service, container = line.split()
            images[service] = self.ssh("docker", "inspect", "--format", "'{{.Image}}'", container)
        return images

    def environment(self, deploy: Deploy, *overrides: str, registry: str = "", migrations: Path | None = None) -> None:
        server = f'server = {{ ssh_config = "{self.server.ssh_config}", registry = "{registry}" }}'
        deploy.write_environment(
            overrides=[self.releases, *overrides],
            stage_timeout=STAGE_TIMEOUT,
            migrations=migrations or ROOT / "stack" / "migrations",
            extra=f'docker_host = "ssh://{self.server.destination}"\n{server}',
        )


@pytest.fixture(scope="module")
def on_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OnServer]:
    client = docker.from_env()
    work = tmp_path_factory.mktemp("server")
    server = start_server(client, f"dce2e-srv-{os.getpid()}", PORTS(), work / "keys")
    ports = free_ports(2)  # the stack's ports on the server's loopback (numbers of this machine's, unused here)
    operator = Deploy("server", PROJECT, work / "operator", ports)
    second = Deploy("server", PROJECT, work / "second", ports)
    for deploy in (operator, second):
        deploy.directory.mkdir()
    image = tag_release_images(work, good=("A", "A2"), broken="B")
    setup = OnServer(server, operator, second, releases_override(operator, image))
    shutil.copy(setup.releases, second.directory / "releases.yaml")
    try:
        yield setup
    finally:
        stop_server(client, server)


def test_a_stack_on_a_server_deploys_verifies_rolls_back_with_its_data_and_restores_a_release(
    on_server: OnServer, tmp_path: Path
) -> None:
    operator = on_server.operator
    on_server.environment(operator)

    first = operator.run("--release=A")
    assert first.returncode == 0, first.stdout[-5000:]
    summary = operator.summary()
    assert summary["outcome"] == "passed" and summary["citus_version"].startswith("Citus 13.2")
    shipped = summary["image_transfer"]
    assert shipped["via"] == "ssh" and shipped["images"] == 3 and shipped["bytes"] > 100 * 2**20, shipped
    print(
        f"\nserver: first deploy {summary['seconds']} s, {shipped['images']} images ({shipped['bytes'] / 2**20:.0f} MiB) shipped in {shipped['seconds']:.1f} s"
    )
    assert not operator.containers(), "the stack runs on the server's engine, not on this machine's"
    good_images = on_server.running_images()
    assert set(good_images) == {"coordinator", "worker-1", "worker-2", "api", "nginx"}
    assert on_server.server_ledger()["current"] == "A", "the server holds the history"

    on_server.sql("CREATE TABLE kept (id int PRIMARY KEY); INSERT INTO kept SELECT generate_series(1, 50)")

    verified = operator.run("--verify-only")
    assert verified.returncode == 0, verified.stdout[-3000:]
    again = operator.run("--release=A")
    assert again.returncode == 0 and operator.summary()["mode"] == "already-current", again.stdout[-3000:]
    assert operator.summary()["image_transfer"] == {}, "nothing to ship for a release already there"

    # Release B applies a migration and never gets ready: rolled back with the database restored.
    migrations = tmp_path / "migrations"
    shutil.copytree(ROOT / "stack" / "migrations", migrations)
    (migrations / "0099_release_b.sql").write_text("CREATE TABLE release_b_only (id int PRIMARY KEY);\n")
    on_server.environment(operator, migrations=migrations)
    failed = operator.run("--release=B")
    assert failed.returncode == 1, failed.stdout[-5000:]
    rollback = operator.summary()["rollback"]
    assert (rollback["outcome"], rollback["restored_release"], rollback["database_restored"]) == ("passed", "A", True)
    print(f"server: rollback with the database restored in {rollback['seconds']:.1f} s")
    assert on_server.running_images() == good_images, "release A's images run again, by id"
    assert on_server.sql("SELECT count(*) FROM kept") == "50"
    assert on_server.sql("SELECT to_regclass('release_b_only') IS NULL") == "t"
    backups = on_server.ssh("ls", f".deploycheck/{PROJECT}/backups").split()
    assert backups and all(name.endswith(("-A", "-B")) for name in backups), backups
    assert not operator.state_dir.joinpath("backups").exists(), "backups are kept on the server, not here"

    # Another operator's machine: its own folder, the server's history.
    second = on_server.second
    on_server.environment(second)
    shutil.copy(operator.env_file, second.env_file)
    second_deploy = second.run("--release=A2")
    assert second_deploy.returncode == 0, second_deploy.stdout[-3000:]
    assert second.summary()["previous_release"] == "A", "it read the server's ledger"
    swapped = second.summary()["swaps"]["api"]  # A2's API beside A's, on the server's engine, then switched to
    assert swapped.startswith("blue-green: ") and "stopped and removed" in swapped, swapped
    back = operator.run("--rollback-to=A")
    assert back.returncode == 0, back.stdout[-3000:]
    assert on_server.server_ledger()["current"] == "A"
    for result in (first, verified, again, failed, second_deploy, back):
        operator.assert_no_secret_leaked(result)


def test_a_second_operator_is_refused_by_the_servers_lock_naming_its_holder(on_server: OnServer) -> None:
    operator = on_server.operator
    on_server.environment(operator)
    server = on_server.server
    with SSHConnection(server.destination, server.ssh_args, runner=Runner()) as connection:
        held = RemoteLock(connection)
        held.acquire(f".deploycheck/{PROJECT}/deploy.lock", "host ci-runner-7, pid 4242, the CI job")
        try:
            refused = operator.run("--release=A")
        finally:
            held.release()
    assert refused.returncode == 1, refused.stdout[-3000:]
    preflight = next(s for s in operator.summary()["stages"] if s["name"] == "preflight")
    assert preflight["outcome"] == "failed"
    assert "being deployed by host ci-runner-7, pid 4242, the CI job" in preflight["reason"]
    assert operator.summary()["rollback"]["performed"] is False, "refused before it changed anything"


def _ssh_master_of(pid: int) -> int:
    found = subprocess.run(["pgrep", "-P", str(pid), "-f", "ssh -M"], capture_output=True, text=True, check=False)
    masters = [int(line) for line in found.stdout.split()]
    assert len(masters) == 1, f"the run's SSH master: {masters}"
    return masters[0]


def _read_until(run: subprocess.Popen[str], text: str) -> list[str]:
    """The run's output lines up to and with the first that holds ``text``; the run goes on."""
    assert run.stdout is not None
    seen = []
    for line in run.stdout:
        seen.append(line)
        if text in line:
            return seen
    raise AssertionError(f"the run ended before it printed {text!r}:\n{''.join(seen)[-4000:]}")


def test_ssh_cut_during_a_stage_leaves_the_server_what_the_next_run_repairs(on_server: OnServer) -> None:
    operator = on_server.operator
    on_server.environment(operator)
    assert operator.run("--release=A").returncode == 0
    run = operator.start("--release=A2")
    seen = _read_until(run, "stage database: started")
    os.kill(_ssh_master_of(run.pid), signal.SIGKILL)  # the connection is gone mid-stage
    rest, _ = run.communicate(timeout=600)
    output = "".join(seen) + rest
    assert run.returncode in (1, 6), output[-4000:]
    assert "the SSH connection to" in output and "is gone" in output, output[-4000:]
    assert "A2" in on_server.server_ledger().get("releases", [{}])[-1].get("id", ""), "A2 in progress on the server"

    started = time.monotonic()
    repaired = operator.run("--release=A2")
    assert repaired.returncode == 0, repaired.stdout[-5000:]
    stages = {s["name"]: s for s in operator.summary()["stages"]}
    assert stages["repair"]["outcome"] == "passed", stages
    assert on_server.server_ledger()["current"] == "A2"
    print(f"server: the next run repaired and deployed A2 in {time.monotonic() - started:.1f} s")


def test_a_restore_killed_with_its_machine_is_finished_by_another_operators_run(
    on_server: OnServer, tmp_path: Path
) -> None:
    """The operator's machine dies (pytest and its SSH connection killed) while its rollback restores the database
    on the server: nodes stopped or half filled. Another operator's run, whose machine never saw that backup or
    that journal, finds both on the server, restores the backup again and deploys green with its rows."""
    operator, second = on_server.operator, on_server.second
    on_server.environment(operator)
    assert operator.run("--release=A").returncode == 0
    on_server.sql("DROP TABLE IF EXISTS kept_through_a_kill; CREATE TABLE kept_through_a_kill (id int PRIMARY KEY)")
    on_server.sql("INSERT INTO kept_through_a_kill SELECT generate_series(1, 70)")
    migrations = tmp_path / "migrations"
    shutil.copytree(ROOT / "stack" / "migrations", migrations)
    (migrations / "0098_release_b_killed.sql").write_text("CREATE TABLE release_b_killed (id int PRIMARY KEY);\n")
    on_server.environment(operator, migrations=migrations)
    journal = f".deploycheck/{PROJECT}/restore.json"

    run = operator.start("--release=B")
    seen = _read_until(run, "[deploycheck] rollback: restoring the previous release")
    deadline = time.monotonic() + 60
    while on_server.ssh("test", "-f", journal, "&&", "echo", "yes", check=False) != "yes":
        assert time.monotonic() < deadline and run.poll() is None, "".join(seen)[-4000:]
        time.sleep(0.1)
    master = _ssh_master_of(run.pid)
    run.kill()  # the machine is gone: pytest and its connection to the server
    os.kill(master, signal.SIGKILL)
    run.communicate(timeout=60)
    assert operator.state_dir.joinpath("backups").exists(), "the killed run had its backup here, and only here"
    assert on_server.ssh("cat", journal), "the server knows a restore was under way"

    on_server.environment(operator)  # release A's migrations: B's never landed
    shutil.copy(operator.env_file, second.env_file)
    shutil.rmtree(second.state_dir, ignore_errors=True)  # a machine that never saw this backup or that journal
    repaired = second.run("--release=A")
    assert repaired.returncode == 0, repaired.stdout[-8000:]
    stages = {s["name"]: s for s in second.summary()["stages"]}
    assert stages["repair"]["outcome"] == "passed", stages
    assert on_server.server_ledger()["current"] == "A"
    assert "from the server" in repaired.stdout and "copied backup" in repaired.stdout, repaired.stdout[-5000:]
    assert "restored every database node from backup" in repaired.stdout
    assert on_server.sql("SELECT count(*) FROM kept_through_a_kill") == "70"
    assert on_server.sql("SELECT to_regclass('release_b_killed') IS NULL") == "t"
    assert on_server.ssh("test", "-e", journal, "||", "echo", "gone", check=False) == "gone"
    print(f"server: another operator finished the killed restore in {stages['repair']['seconds']:.1f} s")


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[str]:
    """A real registry (Debian's docker-registry) on this machine's loopback, its storage in tmp_path."""
    if shutil.which("docker-registry") is None:
        pytest.fail("docker-registry is not installed: scripts/setup.sh --for-tests installs it")
    port = PORTS()
    config = tmp_path / "registry.yml"
    config.write_text(
        f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {tmp_path / 'storage'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    process = subprocess.Popen(
        ["docker-registry", "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 30
    import urllib.request

    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=2):
                break
        except OSError:
            assert process.poll() is None and time.monotonic() < deadline, "the registry did not start"
            time.sleep(0.2)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_images_go_through_the_environments_registry(on_server: OnServer, registry: str, tmp_path: Path) -> None:
    operator = on_server.operator
    image = build_api_variant(tmp_path, "registry", "\n\n# a release of its own: a new image id\n")
    docker.from_env().images.get(image).tag("deploycheck/api-e2e", tag="A3")
    on_server.environment(operator, registry=registry)
    result = operator.run("--release=A3")
    assert result.returncode == 0, result.stdout[-5000:]
    shipped = operator.summary()["image_transfer"]
    assert (shipped["via"], shipped["images"]) == (f"registry {registry}", 1), shipped
    import urllib.request

    with urllib.request.urlopen(f"http://{registry}/v2/_catalog", timeout=10) as answer:
        assert "deploycheck/pinned" in json.loads(answer.read())["repositories"]
    assert on_server.running_images()["api"] == str(docker.from_env().images.get(image).id)
    print(f"server: 1 image through the registry in {shipped['seconds']:.1f} s")


def test_no_secret_marker_reaches_the_server_state(on_server: OnServer) -> None:
    """The ledger and configurations on the server hold names of variables, never secret values."""
    listing = on_server.ssh("cat", f".deploycheck/{PROJECT}/ledger.json", f".deploycheck/{PROJECT}/configurations/*")
    assert SECRET_MARKER not in listing and TOKEN_MARKER not in listing
