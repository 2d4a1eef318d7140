"""A rollback that finishes (issue 16 items 3, 6, 7), on the real engine, the data counted before and after.

Each rollback case deploys a release B whose migration applies and whose API never becomes ready, so that its
rollback restores the database from the backup taken before B, then brings the previous release back:

- signals to the whole process group (a terminal's Ctrl+C, a CI cancel) while that restore runs, several of
  them: the rollback finishes, the previous release serves with every row, nothing is left half made;
- SIGKILL while that restore runs: the next run removes the restore helpers, does the restore again from the
  same backup, and goes on to a green deploy with the backup's rows;
- and the checks that write (the reference app's write-then-read probe) leave the live database as they found
  it, with and without the write fence.

One environment serves the file (its own Compose project and ports): release A is deployed once with rows
written through the API; each case starts from the release that is current.
"""

from __future__ import annotations

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
import requests

from deploycheck.engine import containers
from deploycheck.release import backup
from deploycheck.release.ledger import Ledger
from tests.e2e.conftest import (
    ROOT,
    Deploy,
    coordinator_sql,
    count_rows,
    free_ports,
    releases_override,
    remove_project,
    row_ids,
    tag_release_images,
)

pytestmark = pytest.mark.e2e

GOOD_RELEASES = ("A", "A-fenced", "A-unfenced")
BROKEN = "B-never-ready"  # B's releases below are this image under other tags
B_RELEASES = ("B-signals", "B-term-then-int", "B-killed")


@dataclass
class Case:
    deploy: Deploy
    releases_override: str
    b_migrations: Path  # the stack's migrations and B's own

    def environment(self, *, migrations: Path | None = None, stage_timeout: int = 120) -> None:
        self.deploy.write_environment(
            overrides=[self.releases_override],
            stage_timeout=stage_timeout,
            migrations=migrations or ROOT / "stack" / "migrations",
        )

    def environment_of_b(self) -> None:
        """B's migration, and a deadline that B's API, never ready, spends quickly (the restore's nodes too)."""
        self.environment(migrations=self.b_migrations, stage_timeout=40)

    def current(self) -> str:
        """The release the ledger holds current: what a rollback brings back."""
        current = Ledger(self.deploy.state_dir / "ledger.json").current()
        assert current is not None
        return current.id


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Case]:
    directory = tmp_path_factory.mktemp("finishes")
    deploy = Deploy(name="finishes", project=f"dce2e-finishes-{os.getpid()}", directory=directory, ports=free_ports(2))
    client = docker.from_env()
    image = tag_release_images(directory, good=GOOD_RELEASES, broken=BROKEN)
    for release in B_RELEASES:
        client.images.get(f"deploycheck/api-e2e:{BROKEN}").tag("deploycheck/api-e2e", tag=release)
    migrations = directory / "migrations-b"
    shutil.copytree(ROOT / "stack" / "migrations", migrations)
    (migrations / "0003_release_b_audit.sql").write_text("CREATE TABLE release_b_audit (note text);\n")
    found = Case(deploy, releases_override(deploy, image), migrations)
    found.environment()
    first = deploy.run("--release=A")
    assert first.returncode == 0, first.stdout[-5000:]
    deploy.seed_stores()
    yield found
    remove_project(deploy.project)
    shutil.rmtree(deploy.state_dir, ignore_errors=True)


def helpers(project: str) -> list[Any]:
    """The restore helpers on this case's volumes (rehearsal copies' helpers too: wait for the rollback first)."""
    label = [f"{backup.ROLE_LABEL}={backup.HELPER_ROLE}", f"{containers.HELPER_PROJECT_LABEL}={project}"]
    # ignore_removed: a helper listed and then removed (its volume filled) before the SDK inspects it is gone.
    return list(docker.from_env().containers.list(all=True, filters={"label": label}, ignore_removed=True))


def node_stopped(project: str) -> bool:
    coordinator = docker.from_env().containers.get(f"{project}-coordinator-1")
    return str(coordinator.status) != "running"


def wait_for_the_restore(project: str, seconds: float = 120) -> str:
    """Until the rollback's restore is under way: a helper fills a volume (or, missed, the nodes are stopped)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if helpers(project):
            return "a restore helper runs"
        if node_stopped(project):
            # The helpers come right after the stop: look for them a little longer, then take the stop.
            until = time.monotonic() + 15
            while time.monotonic() < until:
                if helpers(project):
                    return "a restore helper runs"
                time.sleep(0.02)
            return "the database nodes are stopped"
        time.sleep(0.02)
    raise AssertionError("the rollback's restore did not start")


def stray_containers(project: str) -> list[str]:
    """Containers of the project that are not running (a Created one a cut-short command left), and helpers."""
    client = docker.from_env()
    found = client.containers.list(
        all=True, filters={"label": f"com.docker.compose.project={project}"}, ignore_removed=True
    )
    return [f"{c.name} ({c.status})" for c in found if c.status != "running"] + [h.name for h in helpers(project)]


def assert_previous_serves_with_its_rows(
    case: Case, previous: str, rows_before: tuple[set[int], set[int]], output: str
) -> dict[str, Any]:
    deploy = case.deploy
    summary = deploy.summary()
    rollback = summary["rollback"]
    assert rollback["performed"] is True and rollback["outcome"] == "passed", (rollback, output[-5000:])
    assert rollback["database_restored"] is True and rollback["restored_release"] == previous
    assert requests.get(f"{deploy.api}/version", timeout=10).json()["release"] == previous
    assert requests.get(f"http://127.0.0.1:{deploy.ports[1]}/ready", timeout=10).status_code == 200
    rows_after = row_ids(deploy)
    assert rows_after == rows_before, "the database must be exactly as before B"
    assert coordinator_sql(deploy, "SELECT to_regclass('release_b_audit') IS NULL") == "t", (
        "B's migration must be undone"
    )
    assert stray_containers(deploy.project) == []
    assert not (deploy.state_dir / backup.JOURNAL).exists()
    # The write fence (in the restored backup) is lifted: a client of the stack writes again.
    assert coordinator_sql(deploy, "SHOW default_transaction_read_only") == "off"
    print(
        f"\nfinishes figures: {summary['release']}: rollback {rollback['seconds']:.1f} s (database restore "
        f"{rollback['database_restore_seconds']:.1f} s); rows before: {len(rows_before[0])} stores, "
        f"{len(rows_before[1])} orders; after: {len(rows_after[0])} stores, {len(rows_after[1])} orders"
    )
    return summary


def test_group_sigint_sigterm_and_a_second_sigint_during_the_rollbacks_restore(case: Case) -> None:
    """Ctrl+C, a CI cancel, Ctrl+C again, each to the whole process group, while the rollback restores the
    database: none of them cuts it short; the run ends with B's failure, as without them."""
    case.environment()
    previous, rows_before = case.current(), row_ids(case.deploy)
    case.environment_of_b()
    moments: list[str] = []

    def signals(process: subprocess.Popen[str]) -> None:
        moments.append(wait_for_the_restore(case.deploy.project))
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGINT):
            os.killpg(process.pid, signum)
            time.sleep(0.5)

    code, output = case.deploy.run_until(
        "[deploycheck] rollback: restoring the previous release", signals, "--release=B-signals"
    )
    assert code == pytest.ExitCode.TESTS_FAILED, output[-5000:]
    summary = assert_previous_serves_with_its_rows(case, previous, rows_before, output)
    assert summary["outcome"] == "failed" and summary["migrations_applied"] == ["0003_release_b_audit.sql"]
    assert "SIGINT x2, SIGTERM x1 received while the run ended: noted, not acted on" in output
    print(f"finishes figures: signals sent when {moments[0]}; exit code {code}")


def test_sigterm_interrupts_the_deploy_then_sigint_lands_during_its_rollbacks_restore(case: Case) -> None:
    """A CI cancel (SIGTERM to the group) while B's services start: the run is interrupted and rolls back; a
    Ctrl+C to the group during that rollback's restore does not cut it short."""
    case.environment()
    previous, rows_before = case.current(), row_ids(case.deploy)
    case.environment_of_b()
    moments: list[str] = []

    def cancel_then_ctrl_c(process: subprocess.Popen[str]) -> None:
        time.sleep(2)  # B's API is started: the stage waits for it to be ready (it never is)
        os.killpg(process.pid, signal.SIGTERM)
        moments.append(wait_for_the_restore(case.deploy.project))
        os.killpg(process.pid, signal.SIGINT)

    code, output = case.deploy.run_until("stage services: started", cancel_then_ctrl_c, "--release=B-term-then-int")
    assert code == pytest.ExitCode.INTERRUPTED, output[-5000:]
    summary = assert_previous_serves_with_its_rows(case, previous, rows_before, output)
    assert summary["interrupted"] is True
    assert "SIGINT x1 received while the run ended: noted, not acted on" in output
    print(f"finishes figures: SIGINT sent when {moments[0]}; exit code {code}")


def test_a_run_killed_during_the_restore_is_repaired_by_the_next_run(case: Case) -> None:
    """SIGKILL to pytest while its rollback restores the database: nodes stopped or half filled, helpers on the
    volumes, a journal. The next deploy removes the helpers, restores that backup again, brings the previous
    release back, lifts the fence of the restored backup, and deploys green with the backup's rows."""
    case.environment()
    previous, rows_before = case.current(), row_ids(case.deploy)
    counted_before = count_rows(case.deploy)
    case.environment_of_b()
    moments: list[str] = []

    def kill(process: subprocess.Popen[str]) -> None:
        moments.append(wait_for_the_restore(case.deploy.project))
        process.kill()  # pytest only: what it started runs on, in sessions of their own

    code, output = case.deploy.run_until(
        "[deploycheck] rollback: restoring the previous release", kill, "--release=B-killed"
    )
    assert code == -signal.SIGKILL, output[-5000:]
    journal = backup.read_journal(case.deploy.state_dir / backup.JOURNAL)
    assert journal is not None and journal.release == previous, "the killed restore left its journal"
    time.sleep(3)  # a compose command the killed run started ends on its own
    left_helpers = [h.name for h in helpers(case.deploy.project)]
    nodes_down = node_stopped(case.deploy.project)
    print(
        f"\nfinishes figures: killed when {moments[0]}; left {len(left_helpers)} helpers, nodes stopped: {nodes_down}"
    )

    case.environment()
    again = case.deploy.run(f"--release={previous}")
    assert again.returncode == 0, again.stdout[-8000:]
    summary = case.deploy.summary()
    assert summary["outcome"] == "passed" and summary["release"] == previous
    repair = next(s for s in summary["stages"] if s["name"] == "repair")
    assert repair["outcome"] == "passed", repair
    assert (
        f"an earlier run was killed during the restore of backup {journal.backup} onto release {previous}"
        in again.stdout
    )
    assert f"restored every database node from backup {journal.backup} again" in again.stdout
    if left_helpers:
        assert f"removed {len(left_helpers)} restore helper(s) an earlier run left" in again.stdout
    assert "an earlier run was killed while deploying B-killed" in again.stdout
    assert summary["write_fence"]["earlier_fence_lifted"], summary["write_fence"]
    assert helpers(case.deploy.project) == [] and stray_containers(case.deploy.project) == []
    assert not (case.deploy.state_dir / backup.JOURNAL).exists()
    assert row_ids(case.deploy) == rows_before and count_rows(case.deploy) == counted_before
    assert coordinator_sql(case.deploy, "SELECT to_regclass('release_b_audit') IS NULL") == "t"
    assert requests.get(f"{case.deploy.api}/version", timeout=10).json()["release"] == previous
    listed = case.deploy.run("--list-backups")
    assert listed.returncode == 0, listed.stdout[-5000:]
    names = [b["name"] for b in case.deploy.summary()["backups"]]
    assert names and not any(name.endswith(backup.PARTIAL) for name in names)
    assert journal.backup in names
    print(
        f"finishes figures: repaired in {repair['seconds']:.1f} s; rows {counted_before} before B, "
        f"{count_rows(case.deploy)} after the repair (the backup's)"
    )


def test_a_backup_killed_midway_is_never_listed_and_the_next_backup_removes_it(case: Case) -> None:
    """SIGKILL to a --backup while its nodes' archives are written: a .partial folder, never listed, never one to
    restore; the next backup's retention removes it."""
    case.environment()
    backups = case.deploy.state_dir / "backups"
    before = {p.name for p in backups.iterdir()}
    process = case.deploy.start("--backup")
    try:
        deadline = time.monotonic() + 120
        partial: list[Path] = []
        while not partial and time.monotonic() < deadline and process.poll() is None:
            partial = [p for p in backups.iterdir() if p.name.endswith(backup.PARTIAL) and p.name not in before]
            time.sleep(0.01)
        assert partial, "the backup never began its .partial folder"
    finally:
        process.kill()
        process.communicate(timeout=60)
    assert partial[0].is_dir(), "the killed backup left its .partial folder"
    listed = case.deploy.run("--list-backups")
    assert listed.returncode == 0, listed.stdout[-5000:]
    names = [b["name"] for b in case.deploy.summary()["backups"]]
    assert set(names) == {name for name in before if not name.endswith(backup.PARTIAL)}, names
    assert partial[0].name not in listed.stdout
    time.sleep(5)  # the nodes' pg_basebackup the killed run started end on their own
    taken = case.deploy.run("--backup")
    assert taken.returncode == 0, taken.stdout[-5000:]
    assert not partial[0].exists(), "the next backup's retention removes what a killed one left"
    assert not any(p.name.endswith(backup.PARTIAL) for p in backups.iterdir())
    print(f"\nfinishes figures: killed backup {partial[0].name} not listed among {len(names)}; removed by the next")


@pytest.mark.parametrize("release", ["A-fenced", "A-unfenced"])
def test_a_green_run_leaves_the_live_database_as_it_found_it(case: Case, release: str, tmp_path: Path) -> None:
    """The checks that write (the write-then-read probe, directly and through the proxy) delete what they wrote:
    under the write fence (a pending migration: the API refuses, deploycheck's session writes) and without."""
    migrations = tmp_path / "migrations"
    shutil.copytree(ROOT / "stack" / "migrations", migrations)
    (migrations / "0003_harmless.sql").write_text("CREATE TABLE finishes_harmless (note text);\n")
    case.environment(migrations=migrations)
    before = count_rows(case.deploy)
    result = case.deploy.run(f"--release={release}")
    assert result.returncode == 0, result.stdout[-8000:]
    summary = case.deploy.summary()
    assert summary["mode"] == "deploy" and summary["write_fence"]["put_up"] is (release == "A-fenced")
    junit = (case.deploy.reports / "junit.xml").read_text()
    probes = junit.count('name="test_write_then_read_lands_in_citus[')
    assert probes == 2 and summary["checks"]["failed"] == 0, "the write-then-read probe ran, directly and by the proxy"
    after = count_rows(case.deploy)
    assert after == before, f"the checks left rows behind: {before} before, {after} after"
    print(f"\nfinishes figures: {release}: stores, orders {before} before the run, {after} after; {probes} probes")
