"""The deploycheck benchmark: how fast a deploy goes green, fails, and rolls back, on this machine.

Run it with ``./deploycheck bench`` (set-up first, then this module) or ``.venv/bin/python -m scripts.benchmark``:

    ./deploycheck bench                    # every scenario, 5 runs each
    ./deploycheck bench --runs 3 --only smoke --only rollback

Each scenario sets itself up in its own Compose projects (``dcbench-*``), environments (an environments file in
a temporary folder) and 127.0.0.1 ports (41000-41999), runs ``pytest --deploy=...`` as a user would, and is
cleaned up afterwards. The figures (median, min, max, n), the machine and the versions are written to
``reports/benchmark/benchmark.json`` and ``reports/benchmark/benchmark.md``. Timings are measured here, never
asserted by tests.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deploycheck.engine import containers

if TYPE_CHECKING:
    from deploycheck.engine.compose import Compose
    from deploycheck.request.environment import Environment
    from scripts.load import WindowStats

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = ROOT / "reports" / "benchmark"
PROJECT_PREFIX = "dcbench-"
PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
PASSWORD_VARIABLE = "DCBENCH_DB_PASSWORD"
TOKEN_VARIABLE = "DCBENCH_API_TOKEN"
RELEASE_IMAGE = "deploycheck/api-bench"
BROKEN_READY_IMAGE = "deploycheck/api:bench-broken-ready"
DOWNTIME_TAG_PREFIX = "downtime-"
DOWNTIME_RELEASES = "downtime-releases.yaml"
SCENARIOS = ("green", "redeploy", "smoke", "failfast", "rollback", "restore", "scale", "downtime")
SCALE_WORKERS = (2, 4, 8)
SCALE_TARGET = 1.5  # the checks but the all-pairs matrix at the most workers, at most this many times at the fewest
MATRIX_FLOOR_TARGET = 1.2  # the all-pairs matrix, at most this many times its CPU floor (pairs x CPU per pair / cores)
COUNT_UNITS = ("requests", "writes")  # figures that count things: shown without decimals when whole
QUIET_POLL_SECONDS = 30
QUIET_MAX_SECONDS = 20 * 60


class BenchmarkError(Exception):
    """A scenario could not be set up or did not behave as it must; the message says which and why."""


# --- figures: pure, unit-tested ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Stats:
    median: float
    minimum: float
    maximum: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Stats:
        if not values:
            raise ValueError("no values to summarise: a scenario must run at least once")
        return cls(round(statistics.median(values), 3), round(min(values), 3), round(max(values), 3), len(values))


@dataclass(frozen=True)
class Target:
    """A limit a figure's median (or, for peaks, its maximum) must stay within. A limit of 0 on the maximum
    says "none, in any run" (failed requests, lost writes)."""

    limit: float
    on: str = "median"  # "median" or "maximum"

    def met(self, stats: Stats) -> bool:
        value = stats.median if self.on == "median" else stats.maximum
        return value <= self.limit


@dataclass(frozen=True)
class Figure:
    scenario: str
    name: str
    unit: str
    stats: Stats
    target: Target | None = None
    note: str = ""

    @property
    def met(self) -> bool | None:
        return None if self.target is None else self.target.met(self.stats)

    def as_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "name": self.name,
            "unit": self.unit,
            **asdict(self.stats),
            "target": None if self.target is None else {"limit": self.target.limit, "on": self.target.on},
            "met": self.met,
            "note": self.note,
        }


def figure(
    scenario: str, name: str, unit: str, values: Sequence[float], target: Target | None = None, note: str = ""
) -> Figure:
    return Figure(scenario, name, unit, Stats.of(values), target, note)


def ratios(numerators: Sequence[float], denominators: Sequence[float]) -> list[float]:
    """Pairwise ratios of runs measured together (run i of one against run i of the other)."""
    if len(numerators) != len(denominators):
        raise ValueError("ratios need as many numerators as denominators")
    return [n / d for n, d in zip(numerators, denominators, strict=True) if d > 0]


def _number(value: float, unit: str) -> str:
    if unit in COUNT_UNITS:
        return f"{value:.0f}" if value == int(value) else f"{value:.1f}"
    if unit == "ratio":
        return f"{value:.2f}"
    if unit == "MB":
        return f"{value:.0f}"
    return f"{value:.2f}"


def markdown_table(figures: Sequence[Figure]) -> str:
    """The figures as one Markdown table: scenario, figure, median, min, max, n, target, met."""
    lines = [
        "| scenario | figure | median | min | max | n | target | met |",
        "|---|---|---:|---:|---:|---:|---|---|",
    ]
    for f in figures:
        unit = "" if f.unit == "ratio" else f" {f.unit}"
        target = (
            "" if f.target is None else f"{'max' if f.target.on == 'maximum' else 'median'} ≤ {f.target.limit:g}{unit}"
        )
        met = {None: "", True: "yes", False: "**no**"}[f.met]
        name = f"{f.name} ({f.note})" if f.note else f.name
        cells = [_number(v, f.unit) + unit for v in (f.stats.median, f.stats.minimum, f.stats.maximum)]
        lines.append(f"| {f.scenario} | {name} | {' | '.join(cells)} | {f.stats.n} | {target} | {met} |")
    return "\n".join(lines) + "\n"


def markdown_report(figures: Sequence[Figure], machine: dict[str, Any], versions: dict[str, str], runs: int) -> str:
    facts = [f"- machine: {machine['cores']} cores, {machine['memory_gib']} GiB, kernel {machine['kernel']}"]
    facts += [f"- {name}: {value}" for name, value in versions.items()]
    return (
        f"# deploycheck benchmark\n\n{runs} runs per scenario; figures are median, min and max of those runs.\n\n"
        + "\n".join(facts)
        + "\n\n"
        + markdown_table(figures)
    )


# --- running things ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PytestRun:
    wall: float
    returncode: int
    max_rss_mb: float
    summary: dict[str, Any]
    log: Path
    started_epoch: float  # time.time() when the process was started, to place the summary's timings

    def stage(self, name: str) -> dict[str, Any] | None:
        return next((s for s in self.summary.get("stages", []) if s["name"] == name), None)

    def failed_stage(self) -> dict[str, Any] | None:
        return next((s for s in self.summary.get("stages", []) if s["outcome"] == "failed"), None)


@dataclass
class Bench:
    """One benchmark environment: its name, Compose project, ports and compose overrides."""

    name: str
    ports: tuple[int, int]  # the stack's fixed host ports: the coordinator's, the proxy's
    workers: int = 2
    overrides: tuple[Path, ...] = ()
    stage_timeout: int = 300
    migrations_dir: Path = ROOT / "stack" / "migrations"

    @property
    def project(self) -> str:
        return f"{PROJECT_PREFIX}{self.name}"

    workdir: Path = ROOT

    @property
    def state_dir(self) -> Path:
        return self.workdir.resolve() / ".deploycheck" / f"bench-{self.name}"

    def toml(self) -> str:
        files = [str(ROOT / "stack" / "compose.yaml"), *map(str, self.overrides)]
        coordinator, proxy = self.ports
        ports = f'COORDINATOR_PORT = "{coordinator}", PROXY_PORT = "{proxy}"'
        return textwrap.dedent(
            f"""
            [environments.bench-{self.name}]
            compose_project = "{self.project}"
            compose_files = {json.dumps(files)}
            migrations_dir = "{self.migrations_dir}"
            check_modules = ["{ROOT / "stack" / "reference_checks"}"]
            citus_image = "citusdata/citus:13.2"
            timeouts = {{ stage = {self.stage_timeout}, check = 10 }}
            rollback = {{ purge_volumes = true }}
            variables = {{ {ports} }}
            secrets = {{ db_password = "{PASSWORD_VARIABLE}", api_token = "{TOKEN_VARIABLE}" }}

            [environments.bench-{self.name}.stack.database]
            worker_count = {self.workers}

            [environments.bench-{self.name}.stack.proxy]
            headers = {{ "X-Content-Type-Options" = "nosniff", "X-Frame-Options" = "DENY" }}
            failure_probe = {{ path = "/_dc_probe/upstream-failure", status = 502 }}
            """
        )


class Runner:
    """The environments file, the secrets (generated, only ever in the children's environment) and the runs."""

    def __init__(self, workdir: Path, benches: Sequence[Bench]) -> None:
        import docker

        self.workdir = workdir
        self.benches = {b.name: b for b in benches}
        self.env_file = workdir / "environments.toml"
        self.client = docker.from_env()
        self.secret_env = {PASSWORD_VARIABLE: secrets.token_urlsafe(24), TOKEN_VARIABLE: secrets.token_urlsafe(24)}
        self.write_environments()
        self.counter = 0

    def write_environments(self) -> None:
        self.env_file.write_text("".join(b.toml() for b in self.benches.values()))

    def env(self) -> dict[str, str]:
        return {**os.environ, **self.secret_env, "PYTHONUNBUFFERED": "1"}

    def pytest(self, bench: Bench, *args: str, timeout: float = 900) -> PytestRun:
        """``pytest --deploy=bench-NAME ARGS`` as a user runs it: wall time, exit code, peak memory, summary."""
        self.counter += 1
        out = self.workdir / f"run-{self.counter:03d}-{bench.name}"
        out.mkdir()
        argv = [
            str(ROOT / ".venv" / "bin" / "pytest"),
            f"--deploy=bench-{bench.name}",
            f"--environments={self.env_file}",
            f"--html={out / 'report.html'}",
            f"--junitxml={out / 'junit.xml'}",
            f"--summary-json={out / 'summary.json'}",
            "-p",
            "no:cacheprovider",
            *args,
        ]
        log = out / "output.txt"
        with log.open("w") as handle:
            started_epoch = time.time()
            start = time.monotonic()
            process = subprocess.Popen(argv, cwd=ROOT, env=self.env(), stdout=handle, stderr=subprocess.STDOUT)
            timer = threading.Timer(timeout, process.kill)
            timer.start()
            try:
                _, status, usage = os.wait4(process.pid, 0)
            finally:
                timer.cancel()
            wall = time.monotonic() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        summary_file = out / "summary.json"
        summary: dict[str, Any] = json.loads(summary_file.read_text()) if summary_file.exists() else {}
        # ru_maxrss of a waited-for child is in KiB on Linux: the peak of pytest (or of a larger child of it).
        return PytestRun(wall, process.returncode, usage.ru_maxrss / 1024, summary, log, started_epoch)

    def must_pass(self, run: PytestRun, what: str) -> PytestRun:
        if run.returncode != 0:
            tail = "\n".join(run.log.read_text(errors="replace").splitlines()[-25:])
            raise BenchmarkError(f"{what} did not pass (exit {run.returncode}); its output is in {run.log}:\n{tail}")
        return run

    def reset(self, bench: Bench) -> None:
        """Nothing of this environment left: its containers, volumes, network and deploycheck state."""
        remove_project(self.client, bench.project)
        shutil.rmtree(bench.state_dir, ignore_errors=True)

    def environment(self, bench: Bench) -> Environment:
        """The bench's environment as deploycheck loads it, with this run's secrets."""
        from deploycheck.request.environment import load

        with patched_environ(self.secret_env):
            return load(self.env_file, f"bench-{bench.name}")

    def compose(self, bench: Bench, release: str) -> tuple[Compose, Environment]:
        """The same Compose handle deploycheck builds for this environment (files, workers, variables)."""
        from deploycheck.engine import citus as citus_images
        from deploycheck.engine.compose import compose_for
        from deploycheck.engine.target import LocalTarget

        environment = self.environment(bench)
        runner = LocalTarget(environment).runner
        source = citus_images.source_from(None, dict(os.environ))
        remembered = citus_images.Remembered(environment.images_state_file)
        citus = citus_images.resolve(self.client, runner, environment.citus_image, source, remembered)
        compose = compose_for(environment, runner, release, citus.reference)
        compose.build(compose.model().built, timeout=600)  # the yardstick starts from images that are there
        return compose, environment

    def compose_up_wait(self, bench: Bench) -> float:
        """``docker compose up --wait`` of the whole stack from nothing: the yardstick a deploy is held to."""
        compose, environment = self.compose(bench, "upwait")
        services = environment.services
        start = time.monotonic()
        compose.run("up", "--detach", "--wait", *services, timeout=600)
        seconds = time.monotonic() - start
        compose.down(remove_volumes=True)
        return seconds


@contextlib.contextmanager
def patched_environ(values: dict[str, str]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def remove_project(client: Any, project: str) -> None:
    if not project.startswith(PROJECT_PREFIX):
        raise BenchmarkError(f"refusing to remove project {project}: the benchmark removes only {PROJECT_PREFIX}*")
    containers.remove_project(client, project)


def our_projects(client: Any) -> set[str]:
    found = client.containers.list(all=True, filters={"label": PROJECT_LABEL})
    return {c.labels[PROJECT_LABEL] for c in found if c.labels.get(PROJECT_LABEL, "").startswith(PROJECT_PREFIX)}


class DieWatcher:
    """The engine's `die` events of one project, with their times: when a container really exited."""

    def __init__(self, client: Any, project: str) -> None:
        self.deaths: list[tuple[float, str]] = []
        self._stream = client.events(
            decode=True, filters={"type": "container", "event": "die", "label": f"{PROJECT_LABEL}={project}"}
        )
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        with contextlib.suppress(Exception):  # the stream ends with an error when closed
            for event in self._stream:
                service = event.get("Actor", {}).get("Attributes", {}).get(SERVICE_LABEL, "?")
                self.deaths.append((int(event["timeNano"]) / 1e9, service))

    def close(self) -> None:
        self._stream.close()
        self._thread.join(timeout=5)

    def first(self, service: str) -> float | None:
        return min((t for t, s in self.deaths if s == service), default=None)


def tag_releases(runner: Runner, workdir: Path) -> str:
    """Release images as ``deploycheck/api-bench:RELEASE``: A is the real API, B one whose /ready always fails.
    The downtime scenario's releases are ``deploycheck/api-bench:downtime-RELEASE``: A and B the real API (B
    recreates the API all the same: its RELEASE differs), C and D the broken one."""
    api = ROOT / "stack" / "api"
    runner.client.images.build(path=str(api), tag=f"{RELEASE_IMAGE}:A", rm=True)
    context = workdir / "api-broken-ready"
    shutil.copytree(api, context)
    main = context / "app" / "main.py"
    main.write_text(
        main.read_text()
        + textwrap.dedent(
            """

            # benchmark fault: this release's readiness is broken on purpose.
            from fastapi.responses import JSONResponse as _JSONResponse

            app.router.routes = [r for r in app.router.routes if getattr(r, "path", None) != "/ready"]


            @app.get("/ready")
            def _broken_ready() -> _JSONResponse:
                return _JSONResponse({"status": "not ready", "reason": "release broken on purpose"}, status_code=503)
            """
        )
    )
    runner.client.images.build(path=str(context), tag=BROKEN_READY_IMAGE, rm=True)
    runner.client.images.get(BROKEN_READY_IMAGE).tag(RELEASE_IMAGE, tag="B")
    real, broken = f"{RELEASE_IMAGE}:A", BROKEN_READY_IMAGE
    for release, image in (("A", real), ("B", real), ("C", broken), ("D", broken)):
        runner.client.images.get(image).tag(RELEASE_IMAGE, tag=f"{DOWNTIME_TAG_PREFIX}{release}")
    override = workdir / "releases.yaml"
    override.write_text(f"services:\n  api:\n    image: {RELEASE_IMAGE}:${{RELEASE}}\n    build: !reset null\n")
    downtime = workdir / DOWNTIME_RELEASES
    downtime.write_text(
        f"services:\n  api:\n    image: {RELEASE_IMAGE}:{DOWNTIME_TAG_PREFIX}${{RELEASE}}\n    build: !reset null\n"
    )
    return str(override)


# --- scenarios ---------------------------------------------------------------------------------------------


@dataclass
class Results:
    figures: list[Figure] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)
    peak_rss_mb: list[float] = field(default_factory=list)
    citus: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def note_run(self, run: PytestRun) -> PytestRun:
        self.peak_rss_mb.append(run.max_rss_mb)
        if run.summary.get("citus_version") not in (None, "unknown"):
            self.citus = {"image": run.summary["citus_image"], "citus_version": run.summary["citus_version"]}
        return run


def say(line: str) -> None:
    print(f"[bench] {line}", flush=True)


def stage_medians(runs: Sequence[PytestRun]) -> dict[str, float]:
    names = [s["name"] for s in runs[0].summary.get("stages", [])]
    return {
        name: round(statistics.median([(r.stage(name) or {}).get("seconds", 0.0) for r in runs]), 3) for name in names
    }


def checks_seconds(run: PytestRun) -> float:
    timings = run.summary.get("timings", {})
    start, end = timings.get("checks_started_at"), timings.get("checks_finished_at")
    if start is None or end is None:
        raise BenchmarkError(f"the run in {run.log.parent} ran no check: its summary has no check timings")
    return float(end - start)


def one_second_ticks(workdir: Path, workers: int) -> Path:
    """A compose override that checks every service every second: the stack as it was before deploycheck ran
    the healthchecks itself while containers start (a second yardstick, the strictest one)."""
    path = workdir / "ticks-1s.yaml"
    services = ["coordinator", *(f"worker-{n}" for n in range(1, workers + 1)), "api", "nginx"]
    path.write_text("services:\n" + "".join(f"  {s}:\n    healthcheck:\n      interval: 1s\n" for s in services))
    return path


def scenario_green(runner: Runner, results: Results, runs: int) -> None:
    bench, yardstick, strict = runner.benches["green"], runner.benches["upwait"], runner.benches["upwait-1s"]
    deploys: list[PytestRun] = []
    ups: list[float] = []
    ups_1s: list[float] = []

    def quiet_start() -> None:
        # Each starts from nothing and from a quiet disk: another's removed containers and volumes must not
        # still be written back while this one runs initdb.
        for each in (yardstick, strict, bench):
            runner.reset(each)
        os.sync()

    order = ["up", "up-1s", "deploy"]
    for i in range(runs):
        # Which goes first rotates, so that none always runs after another's clean-up.
        for measure in order[i % 3 :] + order[: i % 3]:
            quiet_start()
            if measure == "up":
                ups.append(runner.compose_up_wait(yardstick))
            elif measure == "up-1s":
                ups_1s.append(runner.compose_up_wait(strict))
            else:
                run = runner.pytest(bench, "--release=G")
                deploys.append(results.note_run(runner.must_pass(run, "the deploy to green")))
        say(
            f"green {i + 1}/{runs}: compose up --wait {ups[-1]:.1f} s (1 s ticks: {ups_1s[-1]:.1f} s), "
            f"deploy to green {deploys[-1].wall:.1f} s"
        )
    walls = [r.wall for r in deploys]
    results.raw["green"] = {
        "deploy_seconds": walls,
        "compose_up_wait_seconds": ups,
        "compose_up_wait_1s_ticks_seconds": ups_1s,
        "stages": stage_medians(deploys),
    }
    results.raw["green"]["checks_seconds"] = [checks_seconds(r) for r in deploys]
    # From the command to the deployed stack, before the first check: what `compose up --wait` also does.
    deployed = [r.summary["timings"]["checks_started_at"] - r.started_epoch for r in deploys]
    results.raw["green"]["deployed_seconds"] = deployed
    results.figures += [
        figure("green", "compose up --wait of the same stack", "s", ups),
        figure("green", "deploy to green (pytest --deploy, all checks)", "s", walls),
        figure("green", "deploy / compose up --wait", "ratio", ratios(walls, ups), Target(1.5), "same run"),
        figure("green", "compose up --wait, every service checked every 1 s", "s", ups_1s),
        figure("green", "deploy / that compose up --wait", "ratio", ratios(walls, ups_1s), note="same run"),
        figure("green", "of which deploy stages, pytest start-up included", "s", deployed),
        figure("green", "of which checks (all of them)", "s", results.raw["green"]["checks_seconds"]),
        figure("green", "deploy stages / compose up --wait", "ratio", ratios(deployed, ups), note="same run"),
    ]


def ensure_current(runner: Runner, results: Results, bench: Bench, release: str) -> PytestRun | None:
    """Deploy ``release`` unless it is current and running; returns the deploy it took, if any."""
    from deploycheck.release.ledger import Ledger

    current = Ledger(bench.state_dir / "ledger.json").current()
    running = bench.project in our_projects(runner.client)
    if current is not None and current.id == release and running:
        return None
    runner.reset(bench)
    return results.note_run(runner.must_pass(runner.pytest(bench, f"--release={release}"), f"deploying {release}"))


def scenario_redeploy(runner: Runner, results: Results, runs: int) -> None:
    bench = runner.benches["green"]
    setup = ensure_current(runner, results, bench, "G")
    walls = []
    for i in range(runs):
        run = results.note_run(runner.must_pass(runner.pytest(bench, "--release=G"), "the re-deploy"))
        walls.append(run.wall)
        say(f"redeploy {i + 1}/{runs}: {run.wall:.1f} s")
    green = results.raw.get("green", {}).get("deploy_seconds") or ([setup.wall] if setup else [])
    results.raw["redeploy"] = {"seconds": walls}
    results.figures.append(figure("redeploy", "re-deploy of the current healthy release", "s", walls))
    if green:
        ratio = statistics.median(walls) / statistics.median(green)
        note = "against the green median" if "green" in results.raw else "against one deploy"
        results.figures.append(figure("redeploy", "re-deploy / deploy to green", "ratio", [ratio], Target(0.25), note))


def scenario_smoke(runner: Runner, results: Results, runs: int) -> None:
    bench = runner.benches["green"]
    ensure_current(runner, results, bench, "G")
    walls = []
    for i in range(runs):
        run = results.note_run(runner.must_pass(runner.pytest(bench, "--verify-only", "-m", "smoke"), "smoke"))
        walls.append(run.wall)
        say(f"smoke {i + 1}/{runs}: {run.wall:.2f} s")
    results.raw["smoke"] = {"seconds": walls}
    results.figures.append(
        figure("smoke", "post-deploy smoke (--verify-only -m smoke, start-up included)", "s", walls, Target(3))
    )


def failfast_overrides(workdir: Path) -> dict[str, tuple[str, str, Path]]:
    """Service that exits at start -> (the service, the stage that must fail, its compose override)."""
    # The API starts in the database stage's `compose up` (fixtures/stages.py), so that stage reports its exit.
    cases = {"worker": ("worker-1", "database"), "api": ("api", "database")}
    found = {}
    for case, (service, stage) in cases.items():
        path = workdir / f"exits-{case}.yaml"
        path.write_text(f'services:\n  {service}:\n    command: ["false"]\n')
        found[case] = (service, stage, path)
    return found


def scenario_failfast(runner: Runner, results: Results, runs: int) -> None:
    for case, (service, stage, _) in failfast_overrides(runner.workdir).items():
        bench = runner.benches[f"exits-{case}"]
        delays, walls = [], []
        for i in range(runs):
            runner.reset(bench)
            watcher = DieWatcher(runner.client, bench.project)
            try:
                run = results.note_run(runner.pytest(bench, "--release=F"))
            finally:
                watcher.close()
            failed = run.failed_stage()
            if run.returncode != 1 or failed is None:
                raise BenchmarkError(f"{service} exiting at start did not fail a stage; see {run.log}")
            if failed["name"] != stage:
                say(f"note: {service} exiting failed stage {failed['name']} (expected {stage})")
            died = watcher.first(service)
            if died is None:
                raise BenchmarkError(f"no `die` event of {service} was seen; see {run.log}")
            delays.append(failed["started_at"] + failed["seconds"] - died)
            walls.append(run.wall)
            say(f"failfast {case} {i + 1}/{runs}: stage {failed['name']} failed {delays[-1]:.2f} s after the exit")
        runner.reset(bench)
        results.raw[f"failfast-{case}"] = {"delay_seconds": delays, "run_seconds": walls}
        results.figures.append(
            figure(
                "failfast",
                f"{service} exits at start: exit -> stage FAILED",
                "s",
                delays,
                Target(5),
                "stage timeout 300 s",
            )
        )


def served_release(bench: Bench) -> str | None:
    """The release the API serves, asked through the proxy: the API's host port is the engine's pick (and
    there may be two API containers during a swap), the proxy's is the bench's."""
    import requests

    answer = requests.get(f"http://127.0.0.1:{bench.ports[1]}/version", timeout=10).json()
    return answer.get("release") if isinstance(answer, dict) else None


def _rollback_runs(
    runner: Runner, results: Results, bench: Bench, runs: int, migration: Path | None
) -> list[PytestRun]:
    runner.reset(bench)
    runner.must_pass(results.note_run(runner.pytest(bench, "--release=A")), "deploying release A")
    done = []
    for i in range(runs):
        if migration is not None:
            migration.write_text("CREATE TABLE bench_release_b (id bigint);\n")
        try:
            run = results.note_run(runner.pytest(bench, "--release=B"))
        finally:
            if migration is not None:
                migration.unlink()
        rollback = run.summary.get("rollback", {})
        if run.returncode != 1 or rollback.get("outcome") != "passed" or rollback.get("restored_release") != "A":
            raise BenchmarkError(f"release B was not rolled back to A (exit {run.returncode}); see {run.log}")
        served = served_release(bench)
        if served != "A":
            raise BenchmarkError(f"after the rollback the API serves {served}, not A; see {run.log}")
        done.append(run)
        say(f"{bench.name} {i + 1}/{runs}: rollback {rollback['seconds']:.1f} s")
    runner.reset(bench)
    return done


def rollback_seconds(run: PytestRun) -> float:
    """From the first failed stage or check to the previous release verified and serving."""
    timings = run.summary["timings"]
    return float(timings["rollback_finished_at"] - timings["first_failure_at"])


def scenario_rollback(runner: Runner, results: Results, runs: int) -> None:
    done = _rollback_runs(runner, results, runner.benches["rollback"], runs, None)
    firsts = [rollback_seconds(r) for r in done]
    results.raw["rollback"] = {"seconds": firsts, "rollback_seconds": [r.summary["rollback"]["seconds"] for r in done]}
    results.figures += [
        figure("rollback", "first failure -> previous release verified and serving", "s", firsts, Target(15)),
        figure("rollback", "of which the rollback itself", "s", results.raw["rollback"]["rollback_seconds"]),
    ]


def scenario_restore(runner: Runner, results: Results, runs: int) -> None:
    bench = runner.benches["restore"]
    done = _rollback_runs(runner, results, bench, runs, bench.migrations_dir / "0002_bench_release_b.sql")
    restores = [float(r.summary["rollback"]["database_restore_seconds"]) for r in done]
    sizes = [r.summary["backup"]["bytes"] / 2**20 for r in done]
    results.raw["restore"] = {
        "first_failure_to_serving_seconds": [rollback_seconds(r) for r in done],
        "database_restore_seconds": restores,
        "backup_mib": sizes,
        "backup_stage_seconds": [(r.stage("backup") or {}).get("seconds", 0.0) for r in done],
        "rehearsal_stage_seconds": [(r.stage("rehearsal") or {}).get("seconds", 0.0) for r in done],
    }
    size = f"backup {statistics.median(sizes):.1f} MiB"
    results.figures += [
        figure("restore", "database restore of every node", "s", restores, note=size),
        figure("restore", "first failure -> serving, restore included", "s", [rollback_seconds(r) for r in done]),
    ]


DOWNTIME_WINDOWS = {
    "green": "green deploy of a changed API (A -> B)",
    "rollback": "rollback without a restore (C -> B)",
    "restore": "rollback with a database restore (D -> B)",
}
DOWNTIME_MIGRATION = "0099_bench_downtime_d.sql"


def expect_rolled_back(run: PytestRun, release: str, to: str, restored: bool) -> None:
    rollback = run.summary.get("rollback", {})
    if run.returncode != 1 or rollback.get("outcome") != "passed" or rollback.get("restored_release") != to:
        raise BenchmarkError(f"release {release} was not rolled back to {to} (exit {run.returncode}); see {run.log}")
    if bool(rollback.get("database_restored")) != restored:
        did = "restored" if rollback.get("database_restored") else "did not restore"
        raise BenchmarkError(
            f"the rollback of {release} {did} the database, unlike what it is there for; see {run.log}"
        )


def expect_served(bench: Bench, release: str, after: str) -> None:
    served = served_release(bench)
    if served != release:
        raise BenchmarkError(f"after {after} the proxy serves release {served}, not {release}")


def downtime_figures(windows: dict[str, list[WindowStats]]) -> list[Figure]:
    """Per window, over the runs: failed requests (of the total), maintenance answers, the longest gap without
    a success of each kind, acknowledged writes lost; none failed and none lost in any run is the target."""
    found = []
    for name, label in DOWNTIME_WINDOWS.items():
        runs = windows[name]
        if not runs:
            continue
        totals = sorted(s.requests for s in runs)
        total = f"{totals[0]}" if totals[0] == totals[-1] else f"{totals[0]}-{totals[-1]}"
        only = ", only maintenance answers allowed" if name == "restore" else ""
        found += [
            figure(
                "downtime",
                f"{label}: failed requests",
                "requests",
                [s.failed for s in runs],
                Target(0, "maximum"),
                f"of {total}{only}",
            ),
            figure(
                "downtime",
                f"{label}: maintenance answers (503 + Retry-After)",
                "requests",
                [s.maintenance for s in runs],
            ),
            *(
                figure(
                    "downtime",
                    f"{label}: longest gap without a success, {kind}",
                    "s",
                    [s.longest_gap[kind] for s in runs],
                )
                for kind in runs[0].longest_gap
            ),
            figure(
                "downtime",
                f"{label}: acknowledged writes lost",
                "writes",
                [s.writes_lost for s in runs],
                Target(0, "maximum"),
                f"of {statistics.median([s.writes_acknowledged for s in runs]):.0f} acknowledged in the window, median",
            ),
        ]
    return found


def scenario_downtime(runner: Runner, results: Results, runs: int) -> None:
    """The bounded load (scripts/load.py) through the proxy during a green deploy of a changed API, a failed
    release's rollback without a restore, and one with a restore; each window is one ``pytest --deploy`` run."""
    from scripts.load import BoundedLoad, LoadError

    bench = runner.benches["downtime"]
    migration = bench.migrations_dir / DOWNTIME_MIGRATION
    windows: dict[str, list[WindowStats]] = {name: [] for name in DOWNTIME_WINDOWS}
    walls: dict[str, list[float]] = {name: [] for name in DOWNTIME_WINDOWS}
    for i in range(runs):
        runner.reset(bench)
        runner.must_pass(results.note_run(runner.pytest(bench, "--release=A")), "deploying release A")
        try:
            with BoundedLoad(f"http://127.0.0.1:{bench.ports[1]}", runner.secret_env[TOKEN_VARIABLE]) as load:
                with load.window("green"):
                    run = runner.must_pass(results.note_run(runner.pytest(bench, "--release=B")), "deploying B")
                walls["green"].append(run.wall)
                expect_served(bench, "B", "the deploy of B")
                with load.window("rollback"):
                    run = results.note_run(runner.pytest(bench, "--release=C"))
                walls["rollback"].append(run.wall)
                expect_rolled_back(run, "C", "B", restored=False)
                expect_served(bench, "B", "the rollback of C")
                migration.write_text("CREATE TABLE bench_downtime_d (id bigint);\n")
                try:
                    with load.window("restore"):
                        run = results.note_run(runner.pytest(bench, "--release=D"))
                finally:
                    migration.unlink(missing_ok=True)
                walls["restore"].append(run.wall)
                expect_rolled_back(run, "D", "B", restored=True)
                expect_served(bench, "B", "the rollback of D")
        except LoadError as error:
            raise BenchmarkError(f"the load through the proxy: {error}") from None
        for name in DOWNTIME_WINDOWS:
            windows[name].append(load.windows[name])
            say(f"downtime {i + 1}/{runs}: {load.windows[name].describe()}")
    runner.reset(bench)
    results.raw["downtime"] = {
        name: {"run_seconds": walls[name], "windows": [s.as_json() for s in windows[name]]} for name in DOWNTIME_WINDOWS
    }
    results.figures += downtime_figures(windows)


# The one check whose work grows with the square of the cluster: (N+1)^2 new node-to-node connections.
ALL_PAIRS_CHECK = "cluster_node_health"


def matrix_cpu_floor(pairs: int, cpu_per_pair: float, cores: int) -> float:
    """The least time the all-pairs matrix can take: its CPU spread over every core."""
    return pairs * cpu_per_pair / cores


def extra_pairs_core_seconds(pairs_small: int, pairs_large: int, cpu_per_pair: float, cores: int) -> float:
    """Seconds of every core that the larger cluster's extra node pairs take at least, at that CPU per pair."""
    return (pairs_large - pairs_small) * cpu_per_pair / cores


def containers_cpu_seconds(client: Any, project: str) -> float:
    """CPU seconds the project's containers have used so far, by the engine's own counters."""
    found = list(containers.project_containers(client, project).values())
    with ThreadPoolExecutor(len(found)) as pool:  # Docker 20.10 takes ~1 s to answer each, even one-shot
        usages = pool.map(
            lambda c: c.stats(stream=False, one_shot=True)["cpu_stats"]["cpu_usage"]["total_usage"], found
        )
        return float(sum(usages)) / 1e9


@dataclass(frozen=True)
class AllPairs:
    pairs: int
    seconds: list[float]
    cpu_per_pair: list[float]  # CPU seconds of the stack's containers per pair, run by run


def all_pairs_matrix(runner: Runner, bench: Bench, runs: int) -> AllPairs:
    """The all-pairs matrix alone on the running stack, as the check asks it (``deploycheck.cluster.health_matrix``:
    every source at once, each running `citus_check_connection_to_node` for every target), `runs` times."""
    import psycopg

    from deploycheck.cluster import health_matrix
    from deploycheck.engine.target import LocalTarget
    from deploycheck.request.secrets import mask_text
    from deploycheck.stack import coordinator_connection

    environment = runner.environment(bench)
    seconds, cpu, pairs = [], [], 0
    try:
        with coordinator_connection(LocalTarget(environment)) as conn:
            for _ in range(runs):
                before = containers_cpu_seconds(runner.client, bench.project)
                start = time.monotonic()
                results = [result for _, _, result in health_matrix(conn)]
                seconds.append(time.monotonic() - start)
                cpu.append(containers_cpu_seconds(runner.client, bench.project) - before)
                if not results or not all(results):
                    raise BenchmarkError(
                        f"{bench.project}: the all-pairs matrix is empty or has failed pairs: {results}"
                    )
                pairs = len(results)
    except psycopg.Error as error:
        reason = mask_text(str(error).strip().splitlines()[0], environment.all_secrets)
        raise BenchmarkError(f"{bench.project}: the all-pairs matrix could not be run: {reason}") from None
    return AllPairs(pairs, seconds, [c / pairs for c in cpu])


def scenario_scale(runner: Runner, results: Results, runs: int) -> None:
    every_check: dict[int, list[float]] = {}
    but_all_pairs: dict[int, list[float]] = {}
    matrix: dict[int, AllPairs] = {}
    for workers in SCALE_WORKERS:
        bench = runner.benches[f"scale-{workers}"]
        runner.reset(bench)
        deploy = results.note_run(runner.must_pass(runner.pytest(bench, "--release=S"), f"deploying {workers} workers"))
        values, without = [], []
        for _ in range(runs):
            run = results.note_run(runner.must_pass(runner.pytest(bench, "--verify-only"), "the checks"))
            values.append(checks_seconds(run))
            run = runner.pytest(bench, "--verify-only", "-k", f"not {ALL_PAIRS_CHECK}")
            without.append(checks_seconds(results.note_run(runner.must_pass(run, "the checks"))))
        matrix[workers] = all_pairs_matrix(runner, bench, runs)
        say(
            f"scale {workers} workers: deploy {deploy.wall:.1f} s, checks median {statistics.median(values):.2f} s "
            f"({statistics.median(without):.2f} s without the all-pairs matrix; the matrix alone "
            f"{statistics.median(matrix[workers].seconds):.2f} s, {matrix[workers].pairs} pairs)"
        )
        runner.reset(bench)
        every_check[workers], but_all_pairs[workers] = values, without
        results.figures.append(figure("scale", f"checks, {workers} workers (--verify-only)", "s", values))
        results.raw[f"scale-{workers}"] = {
            "checks_seconds": values,
            "checks_without_all_pairs_seconds": without,
            "deploy_seconds": deploy.wall,
        }
    first, last = SCALE_WORKERS[0], SCALE_WORKERS[-1]
    results.figures.append(
        figure(
            "scale",
            f"checks {last} workers / {first} workers",
            "ratio",
            ratios(every_check[last], every_check[first]),
            note="run by run; the all-pairs matrix included (its target is its CPU floor, below)",
        )
    )
    for workers in (first, last):
        results.figures.append(
            figure(
                "scale",
                f"checks but citus_check_cluster_node_health, {workers} workers",
                "s",
                but_all_pairs[workers],
                note="-k 'not cluster_node_health'",
            )
        )
    results.figures.append(
        figure(
            "scale",
            f"those checks, {last} workers / {first} workers",
            "ratio",
            ratios(but_all_pairs[last], but_all_pairs[first]),
            Target(SCALE_TARGET),
            "run by run",
        )
    )
    for workers in SCALE_WORKERS:
        m = matrix[workers]
        results.figures.append(
            figure("scale", f"the all-pairs matrix alone, {workers} workers ({m.pairs} pairs)", "s", m.seconds)
        )
        results.figures.append(
            figure(
                "scale",
                f"its CPU per pair, {workers} workers",
                "ms",
                [c * 1000 for c in m.cpu_per_pair],
                note="the stack's containers, by the engine's counters",
            )
        )
        results.raw[f"scale-{workers}"]["all_pairs"] = asdict(m)
    cores = os.cpu_count() or 1
    for workers in SCALE_WORKERS:
        m = matrix[workers]
        results.figures.append(
            figure(
                "scale",
                f"the all-pairs matrix / its CPU floor, {workers} workers",
                "ratio",
                [s / matrix_cpu_floor(m.pairs, c, cores) for s, c in zip(m.seconds, m.cpu_per_pair, strict=True)],
                Target(MATRIX_FLOOR_TARGET) if workers == last else None,
                f"floor: {m.pairs} pairs × CPU per pair / {cores} cores",
            )
        )
    extra = matrix[last].pairs - matrix[first].pairs
    results.figures.append(
        figure(
            "scale",
            f"growth the target allows from {first} to {last} workers: {SCALE_TARGET - 1:g} × checks at {first} workers",
            "s",
            [(SCALE_TARGET - 1) * v for v in every_check[first]],
        )
    )
    results.figures.append(
        figure(
            "scale",
            f"time of all {cores} cores that the {extra} extra pairs at {last} workers need",
            "s",
            [
                extra_pairs_core_seconds(matrix[first].pairs, matrix[last].pairs, c, cores)
                for c in matrix[last].cpu_per_pair
            ],
            note="extra pairs × CPU per pair / cores",
        )
    )


SCENARIO_FUNCTIONS: dict[str, Callable[[Runner, Results, int], None]] = {
    "green": scenario_green,
    "redeploy": scenario_redeploy,
    "smoke": scenario_smoke,
    "failfast": scenario_failfast,
    "rollback": scenario_rollback,
    "restore": scenario_restore,
    "scale": scenario_scale,
    "downtime": scenario_downtime,
}


SCENARIO_BENCHES: dict[str, tuple[str, ...]] = {
    "green": ("green", "upwait", "upwait-1s"),
    "redeploy": ("green",),
    "smoke": ("green",),
    "failfast": ("exits-worker", "exits-api"),
    "rollback": ("rollback",),
    "restore": ("restore",),
    "scale": tuple(f"scale-{n}" for n in SCALE_WORKERS),
    "downtime": ("downtime",),
}


def scenario_benches(scenarios: Sequence[str]) -> set[str]:
    """The benches (and so the Compose projects) these scenarios use."""
    return {bench for name in scenarios for bench in SCENARIO_BENCHES[name]}


def benches(workdir: Path) -> list[Bench]:
    migrations = workdir / "migrations"
    shutil.copytree(ROOT / "stack" / "migrations", migrations)
    failfast = failfast_overrides(workdir)
    releases = workdir / "releases.yaml"
    found = [
        Bench("green", (41101, 41103), workdir=workdir),
        Bench("upwait", (41111, 41113), workdir=workdir),
        Bench("exits-worker", (41201, 41203), overrides=(failfast["worker"][2],), workdir=workdir),
        Bench("exits-api", (41211, 41213), overrides=(failfast["api"][2],), workdir=workdir),
        # B's /ready never answers 200: the services stage fails at its deadline (not part of the figure).
        Bench("rollback", (41301, 41303), overrides=(releases,), stage_timeout=15, workdir=workdir),
        Bench(
            "restore",
            (41311, 41313),
            overrides=(releases,),
            stage_timeout=15,
            migrations_dir=migrations,
            workdir=workdir,
        ),
    ]
    downtime_migrations = workdir / "migrations-downtime"
    shutil.copytree(ROOT / "stack" / "migrations", downtime_migrations)
    # Releases C and D never answer ready (the rollback scenario's fault): each fails at the 15 s stage deadline.
    found.append(
        Bench(
            "downtime",
            (41501, 41503),
            overrides=(workdir / DOWNTIME_RELEASES,),
            stage_timeout=15,
            migrations_dir=downtime_migrations,
            workdir=workdir,
        )
    )
    strict = Bench("upwait-1s", (41121, 41123), workdir=workdir)
    strict.overrides = (one_second_ticks(workdir, strict.workers),)  # every worker it has, checked every 1 s
    found.append(strict)
    found += [Bench(f"scale-{n}", (41400 + 10 * n + 1, 41400 + 10 * n + 3), n, workdir=workdir) for n in SCALE_WORKERS]
    return found


# --- machine and versions ----------------------------------------------------------------------------------


def _output(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine() -> dict[str, Any]:
    memory_kib = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_kib = int(line.split()[1])
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(memory_kib / 2**20, 1),
        "kernel": platform.release(),
        "platform": platform.platform(),
    }


def versions(citus: dict[str, str]) -> dict[str, str]:
    return {
        "docker engine": _output(["docker", "version", "--format", "{{.Server.Version}}"]),
        "docker compose": _output(["docker", "compose", "version", "--short"]),
        "python": platform.python_version(),
        "pytest": importlib.metadata.version("pytest"),
        "Citus image": citus.get("image", "unknown"),
        "citus_version()": citus.get("citus_version", "unknown"),
    }


def wait_until_quiet(client: Any, prefix: str) -> None:
    """Wait (every 30 s, at most 20 min) until no container whose name starts with ``prefix`` runs."""
    deadline = time.monotonic() + QUIET_MAX_SECONDS
    while True:
        busy = [c.name for c in client.containers.list(filters={"name": prefix})]
        if not busy:
            return
        if time.monotonic() > deadline:
            raise BenchmarkError(f"containers named {prefix}* still run after 20 minutes: stop them or drop --quiet")
        say(f"waiting for a quiet machine: {len(busy)} {prefix}* containers run")
        time.sleep(QUIET_POLL_SECONDS)


# --- command line ------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="./deploycheck bench", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per scenario (default 5)")
    parser.add_argument(
        "--only", action="append", choices=SCENARIOS, metavar="SCENARIO", help=f"run only these: {', '.join(SCENARIOS)}"
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="folder for benchmark.json and .md")
    parser.add_argument(
        "--quiet", metavar="PREFIX", help="first wait (up to 20 min) until no container named PREFIX* runs"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder (run outputs) for inspection")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error(f"--runs must be at least 1, not {args.runs}: give a positive number of runs")
    return args


def write_reports(output: Path, results: Results, runs: int, scenarios: Sequence[str], started: float) -> list[Figure]:
    figures = list(results.figures)
    if results.peak_rss_mb:
        figures.append(
            figure(
                "memory", "peak RSS of the pytest process, every run", "MB", results.peak_rss_mb, Target(200, "maximum")
            )
        )
    mach, vers = machine(), versions(results.citus)
    output.mkdir(parents=True, exist_ok=True)
    document = {
        "runs": runs,
        "scenarios": list(scenarios),
        "seconds": round(time.monotonic() - started, 1),
        "machine": mach,
        "versions": vers,
        "figures": [f.as_json() for f in figures],
        "raw": results.raw,
        "errors": results.errors,
    }
    (output / "benchmark.json").write_text(json.dumps(document, indent=2) + "\n")
    errors = "".join(f"\n- scenario {name} failed: {why}" for name, why in results.errors.items())
    (output / "benchmark.md").write_text(markdown_report(figures, mach, vers, runs) + errors + ("\n" if errors else ""))
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    scenarios = [s for s in SCENARIOS if not args.only or s in args.only]
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="dcbench-"))
    try:
        import docker

        try:
            client = docker.from_env()
            client.ping()
        except docker.errors.DockerException as error:
            raise BenchmarkError(f"the Docker engine does not answer ({error}): run scripts/setup.sh first") from None
        if args.quiet:
            wait_until_quiet(client, args.quiet)
        runner = Runner(workdir, benches(workdir))
        if {"rollback", "restore", "downtime"} & set(scenarios):
            tag_releases(runner, workdir)
        results = Results()
        try:
            for index, name in enumerate(scenarios):
                say(f"scenario {name}")
                try:
                    SCENARIO_FUNCTIONS[name](runner, results, args.runs)
                except BenchmarkError as error:  # one broken scenario must not cost the figures of the others
                    say(f"scenario {name} failed: {error}")
                    results.errors[name] = str(error).splitlines()[0]
                if "green" in scenario_benches([name]) and not {"redeploy", "smoke"} & set(scenarios[index + 1 :]):
                    runner.reset(runner.benches["green"])  # its stack is not needed any more
        finally:
            # Only the projects of the scenarios run: another dcbench-* project is someone else's run.
            mine = {runner.benches[b].project for b in scenario_benches(scenarios)}
            for project in our_projects(runner.client) & mine:
                remove_project(runner.client, project)
            for bench in runner.benches.values():
                shutil.rmtree(bench.state_dir, ignore_errors=True)
        figures = write_reports(args.output, results, args.runs, scenarios, started)
        print(markdown_table(figures), end="")
        if results.errors:
            raise BenchmarkError(f"scenarios {', '.join(results.errors)} failed; their errors are in benchmark.md")
        say(f"written {args.output / 'benchmark.json'} and benchmark.md in {time.monotonic() - started:.0f} s")
        return 0
    except BenchmarkError as error:
        print(f"benchmark: {error}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            say(f"run outputs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
