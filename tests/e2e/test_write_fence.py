"""The write fence on the real engine: no write acknowledged during a deploy is lost by its rollback.

A write load through the proxy (a thread posting ~20 writes a second, every acknowledged id and body kept, and a
thread reading) runs while a release that applies a migration and then fails a check is deployed, so that its
rollback restores every node from the backup taken at its start. After it: every acknowledged write is in the
database with its body, every refused one got a non-2xx answer, no id was handed out twice, reads answered while
nothing was being replaced, and the window the reports give holds every refusal. The fence is lifted after a green
deploy, after that rollback, and by the next run after a SIGKILL while it was up. Citus with the reference stack,
PostgreSQL with a team's stack (tests/apps/parcels, as tests/e2e/test_team_stack.py sets it up).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import psycopg
import pytest
import requests

from tests.e2e.conftest import ROOT, SECRET_MARKER, TOKEN_MARKER, Deploy, free_ports, releases_override, remove_project
from tests.e2e.test_team_stack import (
    API_KEY,
    APP,
    DB_PASSWORD,
    PORT_VARIABLES,
    TeamRepo,
    break_the_tracker,
    team_pytest,  # noqa: F401  # the team's pip-installed pytest, a fixture of this module too
)

pytestmark = pytest.mark.e2e

# Every Docker object these tests make is named with this prefix (the shared engine's other users have theirs).
PREFIX = os.environ.get("DEPLOYCHECK_E2E_PREFIX", "dce2e")
WRITES_PER_SECOND = 20
READS_PER_SECOND = 10


# --- a write load and what it saw ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    started: float  # epoch seconds, as the reports' window
    ended: float
    status: int  # -1: no HTTP answer at all
    sent: dict[str, Any]
    body: Any  # the JSON answered, or the text
    retry_after: str | None

    @property
    def acknowledged(self) -> bool:
        return 200 <= self.status < 300


@dataclass
class Load:
    """Writes and reads through the proxy in two threads, at a steady pace, until stopped."""

    write: Callable[[requests.Session, int], tuple[requests.Response, dict[str, Any]]]
    read: Callable[[requests.Session], requests.Response]
    writes: list[Answer] = field(default_factory=list)
    reads: list[Answer] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)

    def _run(self, per_second: float, one: Callable[[requests.Session, int], Answer], into: list[Answer]) -> None:
        with requests.Session() as http:
            # A new connection per request, as scripts/load.py says why: the swap's graceful reload closes the old
            # workers' idle keep-alive connections, and a request sent on one then meets the race of RFC 9112
            # section 9.3.1 in this client (seen: RemoteDisconnected 0.08 s after the proxy stage), not the stack.
            http.headers["Connection"] = "close"
            start = time.monotonic()
            for number in range(10**9):
                if self.stopping.is_set():
                    return
                into.append(one(http, number))
                time.sleep(max(0.0, start + (number + 1) / per_second - time.monotonic()))

    def _write(self, http: requests.Session, number: int) -> Answer:
        started = time.time()
        try:
            response, sent = self.write(http, number)
        except requests.RequestException as error:
            return Answer(started, time.time(), -1, {}, str(error), None)
        return _answer(started, response, sent)

    def _read(self, http: requests.Session, number: int) -> Answer:
        started = time.time()
        try:
            response = self.read(http)
        except requests.RequestException as error:
            return Answer(started, time.time(), -1, {}, str(error), None)
        return _answer(started, response, {})

    def __enter__(self) -> Load:
        self.threads = [
            threading.Thread(target=self._run, args=(WRITES_PER_SECOND, self._write, self.writes), daemon=True),
            threading.Thread(target=self._run, args=(READS_PER_SECOND, self._read, self.reads), daemon=True),
        ]
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=60)


def _answer(started: float, response: requests.Response, sent: dict[str, Any]) -> Answer:
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text[:300]
    return Answer(started, time.time(), response.status_code, sent, body, response.headers.get("Retry-After"))


@dataclass(frozen=True)
class Figures:
    acknowledged: int
    present: int
    lost: int
    refused: int
    window_seconds: float


def assert_no_acknowledged_write_lost(
    load: Load, rows: dict[int, dict[str, Any]], summary: dict[str, Any], distinct_ids: bool
) -> Figures:
    """Every acknowledged write is in ``rows`` (id -> its columns) with what was sent; the refused ones got a non-2xx
    answer; no id was acknowledged twice nor is held twice; refusals lie in the reported window, with no write
    acknowledged between the first and the last."""
    acknowledged = [a for a in load.writes if a.acknowledged]
    refused = [a for a in load.writes if not a.acknowledged]
    ids = [int(a.body["id"]) for a in acknowledged]
    assert len(ids) == len(set(ids)), "an id was handed out twice"
    assert distinct_ids, "the table holds an id twice"
    present = [a for a in acknowledged if {k: rows.get(int(a.body["id"]), {}).get(k) for k in a.sent} == a.sent]
    lost = len(acknowledged) - len(present)
    assert lost == 0, [a for a in acknowledged if a not in present][:5]
    assert refused and all(not 200 <= a.status < 300 for a in refused)
    fence = summary["write_fence"]
    assert fence["put_up"] and fence["lifted"] and not fence["left_on"], fence
    start, end = fence["started_at"], fence["ended_at"]
    by_the_database = [a for a in refused if "read-only" in str(a.body)]
    assert by_the_database, "no write was refused by the read-only database"
    first, last = by_the_database[0], by_the_database[-1]
    assert start <= first.ended and last.started <= end, (start, end, first, last)
    between = [a for a in acknowledged if first.started < a.started and a.ended < last.ended]
    assert between == [], f"writes acknowledged while the fence was up: {between[:3]}"
    assert any(a.started > end for a in acknowledged), "no write was acknowledged once the fence was lifted"
    return Figures(len(acknowledged), len(present), lost, len(refused), end - start)


def assert_reads_answered(load: Load, summary: dict[str, Any], *, over_the_checks: bool = True) -> int:
    """Reads answered 200 throughout the fence wherever nothing was being replaced: from the fence's start to the
    services' replacement (backup, rehearsal, migrations), and over the checks until the rollback; returns how
    many reads that was."""
    stages = {s["name"]: s for s in summary["stages"]}
    start = summary["write_fence"]["started_at"]
    services_start = stages["services"]["started_at"]
    proxy_end = stages["proxy"]["started_at"] + stages["proxy"]["seconds"]
    rollback_start = summary["timings"]["rollback_started_at"] or summary["write_fence"]["ended_at"]
    spans = [(start, services_start), *([(proxy_end, rollback_start)] if over_the_checks else [])]
    during = [a for a in load.reads if any(s <= a.started and a.ended <= e for s, e in spans)]
    assert during, "no read ran while the fence was up"
    failed = [(round(a.started - start, 2), a.status, str(a.body)[:80]) for a in during if a.status != 200]
    spans_seen = [(round(s - start, 2), round(e - start, 2)) for s, e in spans]
    stages_seen = {n: (round(st["started_at"] - start, 2), round(st["seconds"], 2)) for n, st in stages.items()}
    assert failed == [], f"reads not answered while the fence was up: {failed[:5]}, in {spans_seen}, {stages_seen}"
    return len(during)


# --- Citus: the reference stack -----------------------------------------------------------------------------


def api_release(directory: Path, release: str, fault: str = "") -> None:
    """The reference API as release ``release`` of this module's image (``fault`` appended to its app)."""
    context = directory / f"api-{release}"
    shutil.copytree(ROOT / "stack" / "api", context)
    if fault:
        main = context / "app" / "main.py"
        main.write_text(main.read_text() + textwrap.dedent(fault))
    docker.from_env().images.build(path=str(context), tag=f"{PREFIX}/api-fence:{release}", rm=True)


# The releases of this module (ids of its own: the reference stack tags its Nginx image with the release).
A, B, C, D = "fence-A", "fence-B-no-docs", "fence-C", "fence-D"
# B is a release that only a check catches: its API lost its /docs page (test_openapi_is_served).
NO_DOCS = """

# e2e fault: this release lost its /docs page.
app.router.routes = [r for r in app.router.routes if getattr(r, "path", None) != "/docs"]
"""


@dataclass
class Reference:
    deploy: Deploy
    migrations: Path
    override: str

    def environment(self) -> None:
        self.deploy.write_environment(overrides=[self.override], stage_timeout=120, migrations=self.migrations)

    def migration(self, name: str, sql: str) -> None:
        (self.migrations / name).write_text(sql)

    @property
    def proxy(self) -> str:
        return f"http://127.0.0.1:{self.deploy.ports[1]}"

    def connect(self) -> psycopg.Connection[tuple[Any, ...]]:
        """A session as a client of the stack gets it (the fence applies to it)."""
        return psycopg.connect(
            host="127.0.0.1",
            port=self.deploy.ports[0],
            dbname="deploycheck",
            user="deploycheck",
            password=SECRET_MARKER,
            autocommit=True,
        )

    def refuses_writes(self) -> bool:
        with self.connect() as conn:
            row = conn.execute("SHOW default_transaction_read_only").fetchone()
        return row is not None and row[0] == "on"

    def post_store(self, http: requests.Session, number: int) -> tuple[requests.Response, dict[str, Any]]:
        sent = {"name": f"load-{number}-{uuid.uuid4().hex[:8]}"}
        headers = {"Authorization": f"Bearer {TOKEN_MARKER}"}
        return http.post(f"{self.proxy}/stores", json=sent, headers=headers, timeout=10), sent

    def stores(self) -> tuple[dict[int, dict[str, Any]], bool]:
        with self.connect() as conn:
            rows = {int(i): {"name": n} for i, n in conn.execute("SELECT id, name FROM stores").fetchall()}
            row = conn.execute("SELECT count(*) = count(DISTINCT id) FROM stores").fetchone()
        return rows, bool(row and row[0])


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Reference]:
    directory = tmp_path_factory.mktemp("fence")
    deploy = Deploy(name="fence", project=f"{PREFIX}-fence-{os.getpid()}", directory=directory, ports=free_ports(2))
    for release, fault in ((A, ""), (B, NO_DOCS), (C, ""), (D, "")):
        api_release(directory, release, fault)
    migrations = directory / "migrations"
    shutil.copytree(ROOT / "stack" / "migrations", migrations, ignore=shutil.ignore_patterns("__pycache__"))
    override = releases_override(deploy, f"{PREFIX}/api-fence:${{RELEASE}}")
    case = Reference(deploy, migrations, override)
    case.environment()
    first = deploy.run(f"--release={A}")
    assert first.returncode == 0, first.stdout[-5000:]
    assert deploy.summary()["write_fence"]["put_up"] is False, "a first deploy has nothing to fence"
    yield case
    remove_project(deploy.project)
    client = docker.from_env()
    for release in (A, B, C, D):
        client.images.remove(f"{PREFIX}/api-fence:{release}")
    shutil.rmtree(deploy.state_dir, ignore_errors=True)


def test_no_acknowledged_write_is_lost_when_the_rollback_restores_the_backup(reference: Reference) -> None:
    deploy = reference.deploy
    seeded = reference.post_store(requests.Session(), -1)[0].json()["id"]
    reference.migration("0003_store_notes.sql", "ALTER TABLE stores ADD COLUMN note text NOT NULL DEFAULT '';\n")
    read = f"{reference.proxy}/stores/{seeded}"
    with Load(reference.post_store, lambda http: http.get(read, timeout=10)) as load:
        result = deploy.run(f"--release={B}")
        time.sleep(2)  # writes acknowledged again once the fence is lifted
    assert result.returncode == 1, result.stdout[-5000:]
    summary = deploy.summary()
    assert [c["name"].split("::")[-1] for c in summary["failed_checks"]] == [
        "test_openapi_is_served[direct]",
        "test_openapi_is_served[proxy]",
    ]
    assert summary["migrations_applied"] == ["0003_store_notes.sql"]
    rollback = summary["rollback"]
    assert (rollback["outcome"], rollback["restored_release"], rollback["database_restored"]) == ("passed", A, True)

    rows, distinct = reference.stores()
    figures = assert_no_acknowledged_write_lost(load, rows, summary, distinct)
    reads = assert_reads_answered(load, summary)
    refused_by_api = [a for a in load.writes if a.status == 503 and "read-only" in str(a.body)]
    assert refused_by_api and all(a.retry_after and a.retry_after.isdigit() for a in refused_by_api)

    assert not reference.refuses_writes()
    assert reference.post_store(requests.Session(), -2)[0].status_code == 201
    window = f"writes refused from {time.strftime('%H:%M:%S', time.gmtime(summary['write_fence']['started_at']))}"
    assert window in result.stdout and "write fence:" in (deploy.reports / "report.html").read_text()
    deploy.assert_no_secret_leaked(result)
    print(
        f"\nfence figures (Citus): {figures.acknowledged} acknowledged, {figures.present} present, {figures.lost} lost, "
        f"{figures.refused} refused ({len(refused_by_api)} with 503 + Retry-After by the API), window "
        f"{figures.window_seconds:.1f} s, {reads} reads answered under the fence; backup held writes for "
        f"{summary['backup']['writes_blocked_seconds']:.2f} s"
    )


def test_the_fence_is_lifted_after_a_green_deploy_that_applied_a_migration(reference: Reference) -> None:
    deploy = reference.deploy
    reference.migration("0003_store_notes.sql", "ALTER TABLE stores ADD COLUMN note text NOT NULL DEFAULT '';\n")
    result = deploy.run(f"--release={C}")
    assert result.returncode == 0, result.stdout[-5000:]
    summary = deploy.summary()
    assert summary["migrations_applied"] == ["0003_store_notes.sql"]
    fence = summary["write_fence"]
    assert fence["put_up"] and fence["lifted"] and fence["seconds"] > 0, fence
    assert summary["backup"]["writes_blocked_seconds"] == 0, "under the fence the backup holds no lock"
    assert not reference.refuses_writes()
    created = reference.post_store(requests.Session(), -3)[0]
    assert created.status_code == 201, created.text
    with reference.connect() as conn:
        assert conn.execute("SELECT note FROM stores WHERE id = %s", (created.json()["id"],)).fetchone() == ("",)


FENCE_UP = "[deploycheck] write fence: the database refuses writes from"
TAGS = ("0004_store_tags.sql", "ALTER TABLE stores ADD COLUMN tags text NOT NULL DEFAULT '';\n")


def signal_when_fenced(deploy: Deploy, signum: int, *args: str) -> tuple[int, str]:
    """A deploy started as from a terminal; once its fence is up, ``signum`` to its process group."""
    return deploy.run_until(FENCE_UP, lambda process: os.killpg(process.pid, signum), *args, timeout=600)


def test_an_interrupt_while_the_fence_is_up_lifts_it(reference: Reference) -> None:
    deploy = reference.deploy
    reference.migration(*TAGS)
    code, output = signal_when_fenced(deploy, signal.SIGINT, f"--release={D}")
    assert code == 2, output[-5000:]
    summary = deploy.summary()
    assert summary["interrupted"] is True
    fence = summary["write_fence"]
    assert fence["put_up"] and fence["lifted"] and not fence["left_on"], fence
    assert not reference.refuses_writes()
    assert reference.post_store(requests.Session(), -6)[0].status_code == 201


def test_a_backup_that_fails_under_the_fence_lifts_it(reference: Reference) -> None:
    deploy = reference.deploy
    reference.migration(*TAGS)
    worker = docker.from_env().containers.get(f"{deploy.project}-worker-1-1")
    worker.stop()
    try:
        result = deploy.run(f"--release={D}")
    finally:
        worker.start()
    assert result.returncode == 1, result.stdout[-5000:]
    summary = deploy.summary()
    backup = next(s for s in summary["stages"] if s["name"] == "backup")
    assert (backup["outcome"], backup["reason"]) == (
        "failed",
        "the backup failed: cannot back up: worker-1 not running",
    )
    fence = summary["write_fence"]
    assert fence["put_up"] and fence["lifted"] and not fence["left_on"], fence
    assert not reference.refuses_writes()


def test_a_run_killed_while_the_fence_is_up_leaves_it_to_the_next_run_to_lift(reference: Reference) -> None:
    deploy = reference.deploy
    reference.migration(*TAGS)
    code, _ = signal_when_fenced(deploy, signal.SIGKILL, f"--release={D}")
    assert code == -signal.SIGKILL
    assert reference.refuses_writes(), "the killed run's fence is still up"
    refused = reference.post_store(requests.Session(), -4)[0]
    assert refused.status_code == 503 and refused.headers.get("Retry-After"), refused.text

    (reference.migrations / TAGS[0]).unlink()  # the next run applies nothing: no fence of its own
    again = deploy.run(f"--release={C}")
    assert again.returncode == 0, again.stdout[-5000:]
    summary = deploy.summary()
    assert summary["write_fence"]["put_up"] is False
    assert f"by a deploy of release {D}" in summary["write_fence"]["earlier_fence_lifted"]
    assert "lifted the write fence put up at" in again.stdout
    assert not reference.refuses_writes()
    assert reference.post_store(requests.Session(), -5)[0].status_code == 201


# --- PostgreSQL: a team's stack ------------------------------------------------------------------------------


@pytest.fixture
def parcels(tmp_path: Path, team_pytest: Path) -> Iterator[TeamRepo]:  # noqa: F811
    """parcels on PostgreSQL, in a git repository of its own, on this run's ports (as test_team_stack's)."""
    folder = tmp_path / "parcels"
    shutil.copytree(APP, folder, ignore=shutil.ignore_patterns("__pycache__", ".deploycheck", "reports"))
    project = f"{PREFIX}-fence-parcels-{uuid.uuid4().hex[:6]}"
    ports = dict(zip(PORT_VARIABLES, free_ports(len(PORT_VARIABLES)), strict=True))
    text = (folder / "environments.toml").read_text()
    text = text.replace('compose_project = "parcels-postgres"', f'compose_project = "{project}"')
    for variable, port in ports.items():  # this run's ports, in both environments' tables
        text = re.sub(rf'{variable} = "\d+"', f'{variable} = "{port}"', text)
    (folder / "environments.toml").write_text(text)
    (folder / ".gitignore").write_text(".deploycheck/\nreports/\n")
    subprocess.run(["git", "init", "-q"], cwd=folder, check=True)
    yield TeamRepo(folder, "postgres", project, team_pytest, ports)
    remove_project(project)


def test_no_acknowledged_write_is_lost_on_postgresql_either(parcels: TeamRepo) -> None:
    good = parcels.commit("parcels 1.0")
    first = parcels.deploy()
    assert first.returncode == 0, first.stdout[-4000:]
    headers = {"X-Parcels-Key": API_KEY}
    seeded = requests.post(
        f"{parcels.edge}/api/parcels", json={"recipient": "Grace", "city": "Porto"}, headers=headers, timeout=10
    ).json()["id"]

    def post_parcel(http: requests.Session, number: int) -> tuple[requests.Response, dict[str, Any]]:
        sent = {"recipient": f"load-{number}", "city": f"city-{uuid.uuid4().hex[:8]}"}
        return http.post(f"{parcels.edge}/api/parcels", json=sent, headers=headers, timeout=10), sent

    (parcels.folder / "migrations" / "postgres" / "0003_parcel_notes.sql").write_text(
        "ALTER TABLE parcels ADD COLUMN note text NOT NULL DEFAULT '';\n"
    )
    break_the_tracker(parcels)  # caught by the team's round trip, which reads a parcel back under the fence
    parcels.commit("parcels 1.1: notes, and a tidied tracker")
    read = f"{parcels.edge}/api/parcels/{seeded}"
    with Load(post_parcel, lambda http: http.get(read, timeout=10)) as load:
        second = parcels.deploy()
        time.sleep(2)
    assert second.returncode == 1, second.stdout[-4000:]
    summary = parcels.summary()
    # The team's round trip catches the slip (its edge may fail a check of its own besides, see below).
    failed = [c["name"] for c in summary["failed_checks"]]
    assert "deploy_checks/test_parcels.py::test_parcel_round_trip_through_the_edge" in failed, failed
    assert summary["migrations_applied"] == ["0003_parcel_notes.sql"]
    rollback = summary["rollback"]
    assert (rollback["outcome"], rollback["restored_release"], rollback["database_restored"]) == ("passed", good, True)

    port = parcels.ports["PARCELS_DB_PORT"]
    with psycopg.connect(
        host="127.0.0.1", port=port, dbname="parcels", user="parcels", password=DB_PASSWORD, autocommit=True
    ) as conn:
        rows = {
            int(i): {"recipient": r, "city": c}
            for i, r, c in conn.execute("SELECT id, recipient, city FROM parcels").fetchall()
        }
        distinct = conn.execute("SELECT count(*) = count(DISTINCT id) FROM parcels").fetchone()
        read_only = conn.execute("SHOW default_transaction_read_only").fetchone()
    figures = assert_no_acknowledged_write_lost(load, rows, summary, bool(distinct and distinct[0]))
    # Not over the checks: parcels' edge resolves the tracker in each nginx worker, every 5 s (resolver valid=5s),
    # so for up to 5 s after the tracker is replaced a read can reach its old address (502), fence or not.
    reads = assert_reads_answered(load, summary, over_the_checks=False)
    assert read_only == ("off",)
    assert post_parcel(requests.Session(), -1)[0].status_code == 201
    parcels.assert_no_secret_leaked(second)
    print(
        f"\nfence figures (PostgreSQL): {figures.acknowledged} acknowledged, {figures.present} present, "
        f"{figures.lost} lost, {figures.refused} refused, window {figures.window_seconds:.1f} s, {reads} reads "
        "answered under the fence"
    )
