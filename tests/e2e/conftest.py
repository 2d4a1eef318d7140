"""End-to-end helpers: run the real deploy suite (`pytest --deploy=NAME`) in a subprocess against the real
engine, each case in its own Compose project, environment and 127.0.0.1 ports, cleaned up afterwards."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import textwrap
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest
import requests

from deploycheck.engine import containers
from deploycheck.stack import published_port
from tests.citus import CITUS_IMAGE

ROOT = Path(__file__).resolve().parents[2]
PROJECT_LABEL = "com.docker.compose.project"
# Marker secrets: end-to-end tests assert they never reach a report, a captured log or the output.
SECRET_MARKER = "e2e-MARKER-5ecret-7f3a9c"
TOKEN_MARKER = "e2e-MARKER-t0ken-4b81d2"
MARKERS = (SECRET_MARKER, TOKEN_MARKER)


# The reference stack's contract as environments.toml declares it (the code's defaults, and what the reference
# app's own checks rely on: the proxy's headers and failure probe), with its declarative checks.
REFERENCE_CONTRACT = """
[environments.{name}.stack.proxy]
headers = {{ "X-Content-Type-Options" = "nosniff", "X-Frame-Options" = "DENY", "Referrer-Policy" = "no-referrer" }}
failure_probe = {{ path = "/_dc_probe/upstream-failure", status = 502 }}

[[environments.{name}.http_checks]]
service = "api"
path = "/health"
json = {{ status = "ok" }}
"""


def free_ports(count: int) -> list[int]:
    sockets = []
    for _ in range(count):
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        sockets.append(probe)
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@dataclass
class Deploy:
    """One end-to-end case: its environment file, its reports, and a way to run the suite on it."""

    name: str
    project: str
    directory: Path
    ports: list[int]  # the stack's fixed host ports: the coordinator's, the proxy's (the API's is the engine's pick)

    @property
    def env_file(self) -> Path:
        return self.directory / "environments.toml"

    @property
    def state_dir(self) -> Path:
        """Where deploycheck keeps this environment's ledger, lock and generated files (beside its file)."""
        return self.directory.resolve() / ".deploycheck" / self.name

    @property
    def reports(self) -> Path:
        return self.directory / "reports"

    def write_environment(
        self,
        *,
        overrides: Sequence[str] = (),
        stage_timeout: int = 120,
        migrations: Path = ROOT / "stack" / "migrations",
        citus_image: str = CITUS_IMAGE,
        extra: str = "",
    ) -> None:
        """The reference stack's environment on this case's project and ports; ``extra``: more keys of its table."""
        files = [str(ROOT / "stack" / "compose.yaml"), *overrides]
        coordinator, proxy = self.ports
        ports = f'COORDINATOR_PORT = "{coordinator}", PROXY_PORT = "{proxy}"'
        self.env_file.write_text(
            f"""
[environments.{self.name}]
compose_project = "{self.project}"
compose_files = {json.dumps(files)}
migrations_dir = "{migrations}"
check_modules = ["{ROOT / "stack" / "reference_checks"}"]
citus_image = "{citus_image}"
timeouts = {{ stage = {stage_timeout}, check = 10 }}
variables = {{ {ports} }}
secrets = {{ db_password = "DEPLOYCHECK_E2E_DB_PASSWORD", api_token = "DEPLOYCHECK_E2E_API_TOKEN" }}
{extra}
{REFERENCE_CONTRACT.format(name=self.name)}"""
        )

    def override(self, name: str, content: str) -> str:
        path = self.directory / name
        path.write_text(textwrap.dedent(content))
        return str(path)

    def run(self, *args: str, timeout: float = 900, **extra_env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(*args),
            cwd=ROOT,
            env={**self.env(), **extra_env},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def start(self, *args: str) -> subprocess.Popen[str]:
        """The suite in the background, its output readable line by line (for interrupt tests), in a process
        group of its own, as a command started from a terminal: Ctrl+C there signals the whole group."""
        return subprocess.Popen(
            self.argv(*args),
            cwd=ROOT,
            env=self.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )

    def run_until(
        self, line: str, act: Callable[[subprocess.Popen[str]], None], *args: str, timeout: float = 900
    ) -> tuple[int, str]:
        """The suite started in the background (``start``); once ``line`` is in its output, ``act`` on the
        process (a signal, a kill); its exit code and whole output."""
        process = self.start(*args)
        assert process.stdout is not None
        seen = []
        for text in process.stdout:
            seen.append(text)
            if line in text:
                act(process)
                break
        output = "".join(seen) + process.communicate(timeout=timeout)[0]
        return process.returncode, output

    def seed_stores(self, count: int = 5) -> None:
        """``count`` stores with two orders each, written through the API: the customer's rows a rollback keeps."""
        api = self.api
        token = {"Authorization": f"Bearer {TOKEN_MARKER}"}
        for i in range(count):
            store = requests.post(f"{api}/stores", json={"name": f"kept-{i}"}, headers=token, timeout=10).json()
            for item in ("tea", "cake"):
                requests.post(
                    f"{api}/stores/{store['id']}/orders",
                    json={"item": item, "amount_cents": 100 + i},
                    headers=token,
                    timeout=10,
                ).raise_for_status()

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "DEPLOYCHECK_E2E_DB_PASSWORD": SECRET_MARKER,
            "DEPLOYCHECK_E2E_API_TOKEN": TOKEN_MARKER,
            "PYTHONUNBUFFERED": "1",
        }

    def argv(self, *args: str) -> list[str]:
        self.reports.mkdir(exist_ok=True)
        return [
            str(ROOT / ".venv" / "bin" / "pytest"),
            f"--deploy={self.name}",
            f"--environments={self.env_file}",
            f"--html={self.reports / 'report.html'}",
            f"--junitxml={self.reports / 'junit.xml'}",
            f"--summary-json={self.reports / 'summary.json'}",
            "-p",
            "no:cacheprovider",
            *args,
        ]

    def summary(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.reports / "summary.json").read_text())
        return data

    def containers(self) -> dict[str, str]:
        """Each service's container id (the newest, while a swap runs two)."""
        return {service: c.id for service, c in containers.project_containers(docker.from_env(), self.project).items()}

    @property
    def api(self) -> str:
        """The API's base URL: the host port the engine picked for its container (it publishes no fixed one)."""
        container = containers.project_containers(docker.from_env(), self.project)["api"]
        port = published_port(container, 8000)
        assert port is not None, f"{container.name} publishes no port for 8000"
        return f"http://127.0.0.1:{port}"

    @property
    def proxy(self) -> str:
        return f"http://127.0.0.1:{self.ports[1]}"

    def volumes(self) -> list[str]:
        client = docker.from_env()
        return sorted(v.name for v in client.volumes.list(filters={"label": f"{PROJECT_LABEL}={self.project}"}))

    def secret_occurrences(
        self, result: subprocess.CompletedProcess[str], *files: Path, markers: Sequence[str] = MARKERS
    ) -> dict[str, int]:
        """How often the marker secrets occur in each output channel of a run: its stdout and stderr, each of
        its reports, the kept history, anything else under reports/, the state folder (ledger, configurations,
        backups, the model given to pytest-docker), and ``files`` (a job summary, a log file), each by name."""

        def count(text: str) -> int:
            return sum(text.count(marker) for marker in markers)

        def in_files(paths: Iterable[Path]) -> int:
            return sum(count(path.read_text(errors="replace")) for path in paths if path.is_file())

        reports, history = self.reports, self.reports / "history"
        named = [reports / "junit.xml", reports / "report.html", reports / "summary.json"]
        rest = [p for p in reports.rglob("*") if p not in named and history not in p.parents]
        return {
            "stdout": count(result.stdout),
            "stderr": count(result.stderr),
            **{path.name: in_files([path]) for path in named},
            "history": in_files(history.rglob("*")),
            "other reports": in_files(rest),
            "state folder": in_files(self.state_dir.rglob("*")),
            **{path.name: in_files([path]) for path in files},
        }

    def assert_no_secret_leaked(self, result: subprocess.CompletedProcess[str], *files: Path) -> None:
        found = self.secret_occurrences(result, *files)
        assert not any(found.values()), f"a marker secret leaked: {found}"


def remove_project(project: str) -> None:
    """Everything a case left behind, found by its Compose project label."""
    containers.remove_project(docker.from_env(), project)


@pytest.fixture
def deploy(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Deploy]:
    name = request.node.name.removeprefix("test_").replace("_", "-")[:30]
    case = Deploy(name=name, project=f"dce2e-{name}-{os.getpid()}", directory=tmp_path, ports=free_ports(2))
    case.write_environment()
    yield case
    remove_project(case.project)
    shutil.rmtree(case.state_dir, ignore_errors=True)


def reference_api_image() -> str:
    """The reference stack's API image, built from stack/api (the engine's layer cache makes it quick)."""
    tag = "deploycheck/api:e2e-reference"
    docker.from_env().images.build(path=str(ROOT / "stack" / "api"), tag=tag, rm=True)
    return tag


def releases_override(deploy: Deploy, image: str) -> str:
    """A compose override that runs ``image`` as the API instead of building it (as a team pulling release
    images from a registry does): ``build: !reset`` drops the base file's build section."""
    return deploy.override("releases.yaml", f"services:\n  api:\n    image: {image}\n    build: !reset null\n")


def tag_release_images(tmp_path: Path, good: tuple[str, ...], broken: str) -> str:
    """Two releases of the API as `deploycheck/api-e2e:RELEASE`: the real one, and one whose /ready fails.

    An override `image: deploycheck/api-e2e:${RELEASE}` then runs each release's own API image, as a
    registry of release images would, and a rollback to a good release really brings its image back.
    """
    client = docker.from_env()
    real = reference_api_image()
    for release in good:
        client.images.get(real).tag("deploycheck/api-e2e", tag=release)
    client.images.get(build_broken_ready_api(tmp_path)).tag("deploycheck/api-e2e", tag=broken)
    return "deploycheck/api-e2e:${RELEASE}"


def build_api_variant(tmp_path: Path, name: str, fault: str) -> str:
    """A release of the API with a fault: the real app's code with ``fault`` appended to app/main.py."""
    context = tmp_path / f"api-{name}"
    subprocess.run(["cp", "-r", str(ROOT / "stack" / "api"), str(context)], check=True)
    main = context / "app" / "main.py"
    main.write_text(main.read_text() + textwrap.dedent(fault))
    tag = f"deploycheck/api:e2e-{name}"
    docker.from_env().images.build(path=str(context), tag=tag, rm=True)
    return tag


def build_broken_ready_api(tmp_path: Path, name: str = "broken-ready") -> str:
    """A release of the API whose /ready always fails: the real app with its /ready route replaced."""
    return build_api_variant(
        tmp_path,
        name,
        """

        # e2e fault: this release's readiness is broken on purpose.
        from fastapi.responses import JSONResponse as _JSONResponse

        app.router.routes = [r for r in app.router.routes if getattr(r, "path", None) != "/ready"]


        @app.get("/ready")
        def _broken_ready() -> _JSONResponse:
            return _JSONResponse({"status": "not ready", "reason": "release broken on purpose"}, status_code=503)
        """,
    )


def build_crashing_api(tmp_path: Path) -> str:
    """A release of the API that dies at import: its container exits at once, and its restart policy loops."""
    return build_api_variant(tmp_path, "crashing", '\n\nraise RuntimeError("e2e fault: this release cannot start")\n')


def coordinator_sql(deploy: Deploy, query: str) -> str:
    """One value from the coordinator, through psql in its container."""
    container = docker.from_env().containers.get(f"{deploy.project}-coordinator-1")
    code, output = container.exec_run(["psql", "-X", "-U", "deploycheck", "-d", "deploycheck", "-Atc", query])
    assert code == 0, output.decode(errors="replace")
    return str(output.decode().strip())


def row_ids(deploy: Deploy) -> tuple[set[int], set[int]]:
    """The ids of every store and every order, read through the coordinator from the workers' shards."""

    def ids(table: str) -> set[int]:
        text = coordinator_sql(deploy, f"SELECT coalesce(string_agg(id::text, ','), '') FROM {table}")
        return {int(value) for value in text.split(",") if value}

    return ids("stores"), ids("orders")


def count_rows(deploy: Deploy) -> tuple[int, int]:
    """Stores and orders, read through the coordinator from the workers' shards."""
    stores = int(coordinator_sql(deploy, "SELECT count(*) FROM stores"))
    orders = int(coordinator_sql(deploy, "SELECT count(*) FROM orders"))
    return stores, orders
