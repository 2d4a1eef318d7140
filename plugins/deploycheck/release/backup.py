"""Backups of the whole Citus cluster, and their restore.

A backup is a physical one per node (``pg_basebackup``, compressed, WAL included), taken on every node while
writes through the coordinator are blocked (the distributed tables locked in EXCLUSIVE mode, reads go on),
so the coordinator's metadata and the workers' shards belong to the same moment. Backups are kept in
``.deploycheck/ENV/backups/TIME-RELEASE/`` (one tar per node and a manifest), the last 10.

A restore stops the database nodes, replaces each node's data volume with its backup, and starts them again.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import docker
import psycopg
from docker.models.containers import Container

from deploycheck.engine import commands
from deploycheck.engine.commands import CommandFailed
from deploycheck.engine.compose import Compose
from deploycheck.engine.containers import project_containers, wait_healthy
from deploycheck.engine.target import Target

KEEP = 10
DATA_DIR = "/var/lib/postgresql/data"
SCRATCH = "/tmp/deploycheck-backup"


class BackupFailed(Exception):
    pass


@dataclass(frozen=True)
class Backup:
    folder: Path
    release: str
    services: tuple[str, ...]
    seconds: float
    bytes: int


def _backup_node(target: Target, container: Container, archive: Path) -> int:
    try:
        target.runner.exec(container, commands.pg_basebackup(target.environment.database.user, SCRATCH))
        stream, _ = container.get_archive(SCRATCH)
        with archive.open("wb") as handle:
            for chunk in stream:
                handle.write(chunk)
        target.runner.exec(container, commands.remove_tree(SCRATCH))
    except CommandFailed as error:
        raise BackupFailed(f"{container.name}: {error}") from None
    return archive.stat().st_size


def take(target: Target, release: str, connection: psycopg.Connection[tuple[object, ...]]) -> Backup:
    """Back up every database node of the running stack, writes blocked meanwhile; keep the last 10."""
    environment = target.environment
    start = time.monotonic()
    services = environment.node_services
    containers = project_containers(target.docker, environment.compose_project)
    missing = [s for s in services if s not in containers or containers[s].status != "running"]
    if missing:
        raise BackupFailed(f"cannot back up: {', '.join(missing)} not running")
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    folder = environment.backups_dir / f"{stamp}-{release}"
    folder.mkdir(parents=True, exist_ok=True)
    # Citus: the nodes' backups must be of one moment, so writes through the coordinator wait meanwhile (reads go
    # on); a single PostgreSQL server's backup is consistent by itself.
    tables = []
    if environment.stack.database.is_citus:
        tables = [str(r[0]) for r in connection.execute("SELECT logicalrelid::regclass::text FROM pg_dist_partition")]
    try:
        with connection.transaction():
            if tables:
                connection.execute(f"LOCK TABLE {', '.join(tables)} IN EXCLUSIVE MODE")
            with ThreadPoolExecutor(max_workers=min(8, len(services))) as pool:
                sizes = list(pool.map(lambda s: _backup_node(target, containers[s], folder / f"{s}.tar"), services))
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    backup = Backup(folder, release, tuple(services), time.monotonic() - start, sum(sizes))
    manifest = {"release": release, "taken_at": time.time(), "services": services, "bytes": backup.bytes}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    for old in sorted(p for p in environment.backups_dir.iterdir() if p.is_dir())[:-KEEP]:
        shutil.rmtree(old)
    return backup


RESTORE_SCRIPT = (
    f"set -e; find {DATA_DIR} -mindepth 1 -delete; "
    f"tar -xzf /deploycheck-backup/base.tar.gz -C {DATA_DIR}; "
    f"chown -R postgres:postgres {DATA_DIR}; chmod 700 {DATA_DIR}"
)


def data_volume(container: Container) -> str:
    return str(next(m["Name"] for m in container.attrs["Mounts"] if m["Destination"] == DATA_DIR))


def fill_volume(client: docker.DockerClient, image: str, volume: str, archive: Path) -> None:
    """Replace the contents of a node's data volume with a backup, in a helper container with no network."""
    helper = client.containers.create(
        image,
        entrypoint=["sh", "-c", RESTORE_SCRIPT],
        user="root",
        volumes={volume: {"bind": DATA_DIR, "mode": "rw"}},
        network_mode="none",
        labels={"org.deploycheck.role": "restore-helper"},
    )
    try:
        helper.put_archive("/", archive.read_bytes())
        helper.start()
        result = helper.wait(timeout=300)
        if result.get("StatusCode") != 0:
            raise BackupFailed(f"restoring {volume} failed: {helper.logs().decode(errors='replace')[-500:]}")
    finally:
        helper.remove(force=True)


def restore(target: Target, compose: Compose, folder: Path) -> float:
    """Put every database node back to the backup in ``folder``; returns the seconds it took."""
    environment, client = target.environment, target.docker
    start = time.monotonic()
    manifest = json.loads((folder / "manifest.json").read_text())
    services: list[str] = manifest["services"]
    containers = project_containers(client, environment.compose_project)
    compose.stop(services, timeout=environment.timeouts.stage)
    with ThreadPoolExecutor(max_workers=min(8, len(services))) as pool:
        list(
            pool.map(
                lambda s: fill_volume(client, containers[s].image.id, data_volume(containers[s]), folder / f"{s}.tar"),
                services,
            )
        )
    compose.start(services, timeout=environment.timeouts.stage)
    wait_healthy(client, environment.compose_project, services, environment.timeouts.stage, environment.all_secrets)
    return time.monotonic() - start


def archive_member_names(path: Path) -> list[str]:
    """What a node's backup tar holds (for tests and reports)."""
    with tarfile.open(fileobj=io.BytesIO(path.read_bytes())) as archive:
        return archive.getnames()
