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

A restore stops the database nodes, replaces each node's data volume with its backup (in helper containers
labelled with the project), and starts them again. It first writes a journal in the state folder
(``restore.json``: the backup, the release it is restored onto, why) and removes it only once every node is
healthy again: a run killed meanwhile (SIGKILL, a machine that stops) leaves nodes stopped or half filled, and
helpers holding their volumes; the next run finds the journal, removes the helpers, and restores that backup
again from the start (``stages/restore.py``) before it does anything else.
"""

from __future__ import annotations

import dataclasses
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
from deploycheck.engine.containers import HELPER_PROJECT_LABEL, PROJECT_LABEL, project_containers, wait_healthy
from deploycheck.engine.ssh import SSHError
from deploycheck.engine.target import EngineUnreachable, Target
from deploycheck.request.environment import RESTORE_JOURNAL

KEEP = 10
PARTIAL = ".partial"  # the suffix of a backup being written
MANIFEST = "manifest.json"
JOURNAL = RESTORE_JOURNAL
ROLE_LABEL = "org.deploycheck.role"
HELPER_ROLE = "restore-helper"
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


def fill_volume(client: docker.DockerClient, image: str, volume: str, archive: Path, project: str) -> None:
    """Replace the contents of a node's data volume with a backup, in a helper container with no network,
    labelled with ``project`` so that the next run finds it if this one is killed."""
    helper = client.containers.create(
        image,
        entrypoint=["sh", "-c", RESTORE_SCRIPT],
        user="root",
        volumes={volume: {"bind": DATA_DIR, "mode": "rw"}},
        network_mode="none",
        labels={ROLE_LABEL: HELPER_ROLE, HELPER_PROJECT_LABEL: project},
    )
    try:
        helper.put_archive("/", archive.read_bytes())
        helper.start()
        result = helper.wait(timeout=300)
        if result.get("StatusCode") != 0:
            raise BackupFailed(f"restoring {volume} failed: {helper.logs().decode(errors='replace')[-500:]}")
    finally:
        helper.remove(force=True)


def leftover_helpers(client: docker.DockerClient, project: str) -> list[Container]:
    """The helpers a killed run left on ``project``'s volumes: labelled with it, or (made before helpers had
    that label) mounting one of its volumes."""
    helpers = client.containers.list(all=True, filters={"label": f"{ROLE_LABEL}={HELPER_ROLE}"}, ignore_removed=True)
    volumes = {str(v.name) for v in client.volumes.list(filters={"label": f"{PROJECT_LABEL}={project}"})}
    return [
        helper
        for helper in helpers
        if helper.labels.get(HELPER_PROJECT_LABEL) == project
        or (HELPER_PROJECT_LABEL not in helper.labels and any(m.get("Name") in volumes for m in helper.attrs["Mounts"]))
    ]


def remove_leftover_helpers(client: docker.DockerClient, project: str) -> list[str]:
    """Remove the helpers a killed run left on ``project``'s volumes; their names."""
    removed = []
    for helper in leftover_helpers(client, project):
        helper.remove(force=True)
        removed.append(str(helper.name))
    return removed


@dataclass(frozen=True)
class Journal:
    """A restore under way: the backup it puts back, the release it is restored onto, and why."""

    backup: str  # the backup's folder name, in the backups folder
    release: str
    why: str
    started_at: float

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.started_at))
        return f"the restore of backup {self.backup} onto release {self.release} ({self.why}), begun at {when}"


class JournalDamaged(Exception):
    """The restore journal cannot be read: one sentence, which file and how to go on."""


def read_journal(path: Path) -> Journal | None:
    """The restore a killed run left under way, if any."""
    try:
        data = json.loads(path.read_text())
        return Journal(str(data["backup"]), str(data["release"]), str(data["why"]), float(data["started_at"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise JournalDamaged(
            f"the restore journal {path} cannot be read ({type(error).__name__}: {error}): an earlier restore of the "
            "database was cut short; put a backup back with --restore-backup=NAME once the database runs, then "
            "remove that file"
        ) from None


def _write_journal(path: Path, journal: Journal) -> None:
    """The journal on disk (flushed, then renamed into place) before the restore changes anything."""
    private_folder(path.parent)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with private_file(temporary) as handle:
        handle.write((json.dumps(dataclasses.asdict(journal), indent=2) + "\n").encode())
    os.replace(temporary, path)
    _fsync_folder(path.parent)


def _remove_journal(path: Path) -> None:
    path.unlink(missing_ok=True)
    _fsync_folder(path.parent)


def restore(target: Target, compose: Compose, folder: Path, *, release: str, why: str) -> float:
    """Put every database node back to the backup in ``folder`` (onto ``release``, run by ``compose``); returns
    the seconds it took. Journaled: a run killed meanwhile leaves what the next run needs to do it again."""
    environment, client = target.environment, target.docker
    start = time.monotonic()
    manifest = json.loads((folder / MANIFEST).read_text())
    services: list[str] = manifest["services"]
    journal_file = environment.restore_journal_file
    _write_journal(journal_file, Journal(folder.name, release, why, time.time()))
    _journal_to_where_the_state_lives(target, journal_file)
    project = environment.compose_project
    remove_leftover_helpers(client, project)  # a killed restore's, still holding the volumes
    containers = project_containers(client, project)
    missing = [s for s in services if s not in containers]
    if missing:
        raise BackupFailed(f"cannot restore {folder.name}: {', '.join(missing)} has no container to restore into")
    compose.stop(services, timeout=environment.timeouts.stage)
    with ThreadPoolExecutor(max_workers=min(8, len(services))) as pool:
        list(
            pool.map(
                lambda s: fill_volume(
                    client, containers[s].image.id, data_volume(containers[s]), folder / f"{s}.tar", project
                ),
                services,
            )
        )
    compose.start(services, timeout=environment.timeouts.stage)
    wait_healthy(client, project, services, environment.timeouts.stage, environment.all_secrets)
    _remove_journal(journal_file)  # every node is back and healthy: nothing left for a next run to finish
    _journal_to_where_the_state_lives(target, journal_file)
    return time.monotonic() - start


def _journal_to_where_the_state_lives(target: Target, journal_file: Path) -> None:
    """The journal (or its end) written where the stack's state lives (a server keeps its own) before the restore
    changes anything, so that a run killed on one machine is finished by the next run from any."""
    try:
        target.state.push()
    except (CommandFailed, EngineUnreachable, SSHError) as error:
        if journal_file.exists():
            _remove_journal(journal_file)  # nothing was changed: nothing for a next run to finish
            raise BackupFailed(
                f"the restore did not start: its journal could not be written on {target.where} ({error})"
            ) from None
        raise BackupFailed(
            f"the database is restored, but the end of its restore could not be written on {target.where} "
            f"({error}): the next run restores the same backup again"
        ) from None


def archive_member_names(path: Path) -> list[str]:
    """What a node's backup tar holds (for tests and reports)."""
    with tarfile.open(fileobj=io.BytesIO(path.read_bytes())) as archive:
        return archive.getnames()
