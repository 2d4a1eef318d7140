"""Backups of the whole Citus cluster, and their restore.

A backup is a physical one per node (``pg_basebackup``, WAL included), taken on every node at once, then
compressed and copied here.
The nodes' backups must belong to one moment (the coordinator's metadata and sequences, the workers' shards), so
no write may land while they are taken:

- when the deploy will apply migrations, the write fence is up (``release.fence``): the database refuses writes
  from before the backup until the verdict, and every transaction begun before it has ended;
- otherwise (the backup is then a safety copy: a rollback restores it only after migrations) writes through the
  Citus coordinator wait while the nodes' ``pg_basebackup`` run (the distributed tables locked in EXCLUSIVE
  mode, reads go on), and only then: the compression and the copy to this machine come after. A single
  PostgreSQL server's backup is consistent by itself, with no lock.

Backups are kept in ``.deploycheck/ENV/backups/TIME-RELEASE/`` (one tar per node and a manifest), the last 10
complete ones.

A backup holds the whole database: the backups folder and each backup's folder are 0700, every file in them
0600, whatever the umask. A backup is written into ``TIME-RELEASE.partial`` and renamed to its name only once
its manifest is written and everything is flushed to disk, so a backup that failed or was killed is never
taken for one to restore: it is removed at once, or (killed) with the next backup's retention.

A restore stops the database nodes, replaces each node's data volume with its backup, and starts them again.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import shutil
import tarfile
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import docker
import psycopg
from docker.models.containers import Container

from deploycheck.engine import commands
from deploycheck.engine.commands import CommandFailed
from deploycheck.engine.compose import Compose
from deploycheck.engine.containers import project_containers, wait_healthy
from deploycheck.engine.target import Target

KEEP = 10
PARTIAL = ".partial"  # the suffix of a backup being written
MANIFEST = "manifest.json"
DATA_DIR = "/var/lib/postgresql/data"
SCRATCH = "/tmp/deploycheck-backup"


class BackupFailed(Exception):
    pass


def private_folder(folder: Path) -> Path:
    """``folder`` (and its parents), made if needed, and mode 0700 whatever the umask or its mode before."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    return folder


@contextmanager
def private_file(path: Path) -> Iterator[BinaryIO]:
    """``path`` opened to be written from empty, mode 0600 whatever the umask; flushed to disk when closed."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT
    with os.fdopen(fd, "wb") as handle:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def is_partial(folder: Path) -> bool:
    return folder.name.endswith(PARTIAL)


def new_backup_folder(backups_dir: Path, release: str, now: float | None = None) -> Path:
    """A new empty folder (0700) for a backup of ``release``, under its ``.partial`` name, in ``backups_dir``
    (0700); ``complete`` gives it its name. Two backups in the same second get names of their own."""
    private_folder(backups_dir)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(time.time() if now is None else now))
    # A release id may end in ".partial" (a '.' is allowed): its complete backup must not look partial.
    base = f"{stamp}-{release}" + ("_" if release.endswith(PARTIAL) else "")
    for number in itertools.count(1):
        name = base if number == 1 else f"{base}-{number}"
        if (backups_dir / name).exists():
            continue
        partial = backups_dir / f"{name}{PARTIAL}"
        try:
            partial.mkdir(mode=0o700)
        except FileExistsError:
            continue
        os.chmod(partial, 0o700)
        return partial
    raise AssertionError("unreachable: itertools.count never ends")


def write_manifest(folder: Path, manifest: Mapping[str, object]) -> None:
    with private_file(folder / MANIFEST) as handle:
        handle.write((json.dumps(manifest, indent=2) + "\n").encode())


def complete(partial: Path) -> Path:
    """Give a written backup (its manifest last) its name; returns the folder under that name."""
    if not is_partial(partial) or not (partial / MANIFEST).is_file():
        raise BackupFailed(f"{partial} is not a written backup: it has no {MANIFEST} or no {PARTIAL} name")
    final = partial.with_name(partial.name[: -len(PARTIAL)])
    # The files' contents were flushed as they were closed; the folder's entries are flushed before the rename.
    _fsync_folder(partial)
    os.rename(partial, final)  # fails rather than replace an existing backup of that name
    _fsync_folder(final.parent)
    return final


def complete_backups(backups_dir: Path) -> list[Path]:
    """The complete backups, oldest first (their names start with their time)."""
    if not backups_dir.is_dir():
        return []
    return sorted(p for p in backups_dir.iterdir() if p.is_dir() and not is_partial(p) and (p / MANIFEST).is_file())


def prune(backups_dir: Path, keep: int = KEEP) -> list[Path]:
    """Keep the last ``keep`` complete backups; remove older ones and every ``.partial`` one left by a backup
    that was killed. Returns what was removed. (Under the deploy lock: no other backup is being written.)"""
    if not backups_dir.is_dir():
        return []
    leftovers = sorted(p for p in backups_dir.iterdir() if p.is_dir() and is_partial(p))
    complete_ones = complete_backups(backups_dir)
    old = complete_ones[: max(0, len(complete_ones) - keep)]
    for folder in [*leftovers, *old]:
        shutil.rmtree(folder)
    return [*leftovers, *old]


@dataclass(frozen=True)
class Backup:
    folder: Path
    release: str
    services: tuple[str, ...]
    seconds: float
    bytes: int
    writes_blocked_seconds: float = 0.0  # how long writes waited on the backup's lock (none under the fence)


def _base_backup(target: Target, container: Container) -> None:
    try:
        target.runner.exec(container, commands.pg_basebackup(target.environment.database.user, SCRATCH))
    except CommandFailed as error:
        raise BackupFailed(f"{container.name}: {error}") from None


def _fetch(target: Target, container: Container, archive: Path) -> int:
    """The node's backup, compressed in its container and copied to ``archive`` on this machine; its scratch copy
    removed."""
    try:
        try:
            target.runner.exec(container, commands.compress_backup(SCRATCH))
        except CommandFailed as error:
            raise BackupFailed(f"{container.name}: {error}") from None
        stream, _ = container.get_archive(SCRATCH)
        with private_file(archive) as handle:
            for chunk in stream:
                handle.write(chunk)
    finally:
        target.runner.exec(container, commands.remove_tree(SCRATCH), check=False)
    return archive.stat().st_size


def _distributed_tables(connection: psycopg.Connection[tuple[object, ...]]) -> list[str]:
    return [str(r[0]) for r in connection.execute("SELECT logicalrelid::regclass::text FROM pg_dist_partition")]


def take(target: Target, release: str, connection: psycopg.Connection[tuple[object, ...]], *, fenced: bool) -> Backup:
    """Back up every database node of the running stack, all at one moment; keep the last 10. ``fenced``: the
    write fence is up (no write can land); else writes through the Citus coordinator wait for the nodes'
    ``pg_basebackup``."""
    environment = target.environment
    start = time.monotonic()
    services = environment.node_services
    containers = project_containers(target.docker, environment.compose_project)
    missing = [s for s in services if s not in containers or containers[s].status != "running"]
    if missing:
        raise BackupFailed(f"cannot back up: {', '.join(missing)} not running")
    tables = _distributed_tables(connection) if environment.stack.database.is_citus and not fenced else []
    partial = new_backup_folder(environment.backups_dir, release)
    blocked = 0.0
    try:
        with ThreadPoolExecutor(max_workers=min(8, len(services))) as pool:
            asked = time.monotonic()  # from here new writes queue behind the lock, until its transaction ends
            with connection.transaction():
                if tables:
                    connection.execute(f"LOCK TABLE {', '.join(tables)} IN EXCLUSIVE MODE")
                list(pool.map(lambda s: _base_backup(target, containers[s]), services))
            blocked = time.monotonic() - asked if tables else 0.0
            sizes = list(pool.map(lambda s: _fetch(target, containers[s], partial / f"{s}.tar"), services))
        total = sum(sizes)
        write_manifest(partial, {"release": release, "taken_at": time.time(), "services": services, "bytes": total})
        folder = complete(partial)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        for service in services:  # a node's scratch copy, when its backup failed or was interrupted
            target.runner.exec(containers[service], commands.remove_tree(SCRATCH), check=False)
        raise
    prune(environment.backups_dir)
    return Backup(folder, release, tuple(services), time.monotonic() - start, total, blocked)


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
