"""Zero downtime on a team's own stack (issue 18): parcels (tests/apps/parcels: tracker and pricing behind the
nginx edge, on PostgreSQL), deployed from its own repository with its own pip-installed pytest, as in
test_team_stack.py.

- Adopted as the README's "Zero downtime" tells a team (tracker and pricing published without a fixed host port,
  the routes folder in the edge's image, the defaults, the routes file and a variable per route in its
  nginx.conf): a release that recreates tracker and pricing (their PARCELS_BUILD follows RELEASE) is swapped
  blue-green under a bounded GET load through the edge, and no request fails.
- As it is (fixed host ports): the same redeploy passes, replacing both in place, and the run says why (the
  fixed host port) and how to publish it instead.
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import tarfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
import requests

from deploycheck.engine import routes
from scripts.load import OpenLoop, Send
from tests.e2e.conftest import free_ports, remove_project
from tests.e2e.test_team_stack import API_KEY, APP, PORT_VARIABLES, TeamRepo
from tests.e2e.test_team_stack import team_pytest as team_pytest  # the team's venv: a session fixture

pytestmark = pytest.mark.e2e

ENVIRONMENT = "postgres"
RATE = 2.0  # requests a second, per route below: 8/s through the edge
ROUTES = {
    "tracker /about": "/api/about",
    "tracker read": "/api/parcels/{parcel}",
    "pricing ready": "/pricing/health/ready",
    "pricing quote": "/pricing/quote?weight_kg=2",
}
TIMEOUT = 5.0


# --- the team's repository -----------------------------------------------------------------------------------


def replace_once(path: Path, old: str, new: str) -> None:
    """``old`` (there exactly once: parcels' file as it is) becomes ``new``."""
    text = path.read_text()
    assert text.count(old) == 1, f"{path.name} no longer has {old!r} once"
    path.write_text(text.replace(old, new))


def adopt_zero_downtime(folder: Path) -> None:
    """What the README's "Zero downtime" tells a team to change, and nothing else."""
    compose = folder / "compose.yaml"
    # Two containers of a service cannot bind one host port: the engine picks one, deploycheck finds it.
    replace_once(
        compose, '"127.0.0.1:${PARCELS_TRACKER_PORT:?PARCELS_TRACKER_PORT must be set}:9000"', '"127.0.0.1::9000"'
    )
    replace_once(
        compose, '"127.0.0.1:${PARCELS_PRICING_PORT:?PARCELS_PRICING_PORT must be set}:9100"', '"127.0.0.1::9100"'
    )
    # The routes file's folder (stack.proxy.routes_file's default) in the edge's image.
    replace_once(
        folder / "edge" / "Dockerfile",
        "COPY nginx.conf /etc/nginx/nginx.conf\n",
        "RUN mkdir -p /etc/nginx/deploycheck\nCOPY nginx.conf /etc/nginx/nginx.conf\n",
    )
    nginx = folder / "edge" / "nginx.conf"
    # The defaults in the server block, deploycheck's routes file included after them.
    replace_once(
        nginx,
        "        resolver_timeout 2s;\n",
        "        resolver_timeout 2s;\n"
        "\n"
        "        # deploycheck's routes (its README, Zero downtime): each route's default (every container of the\n"
        "        # service) until deploycheck's routes file pins it to one container, and its maintenance switch.\n"
        '        set $deploycheck_tracker "tracker:9000";\n'
        '        set $deploycheck_pricing "pricing:9100";\n'
        '        set $deploycheck_maintenance "";\n'
        "        include /etc/nginx/deploycheck/*.conf;\n",
    )
    # Each location through its variable; deploycheck's maintenance switch answers our own 503 page.
    for service, old_variable, address in (
        ("tracker", "parcels_tracker", "tracker:9000"),
        ("pricing", "parcels_pricing", "pricing:9100"),
    ):
        replace_once(nginx, f'            set ${old_variable} "{address}";\n', "")
        replace_once(nginx, f"proxy_pass http://${old_variable};", f"proxy_pass http://$deploycheck_{service};")
    maintenance = (
        "            if (-f /var/lib/parcels-edge/maintenance) {\n                return 503;\n            }\n"
    )
    text = nginx.read_text()
    assert text.count(maintenance) == 2
    nginx.write_text(
        text.replace(
            maintenance,
            maintenance + "            if ($deploycheck_maintenance) {\n                return 503;\n            }\n",
        )
    )
    # Retry-After on deploycheck's maintenance answer only: a server-level add_header (one in a location would drop
    # the server's headers there), empty, so not sent, otherwise.
    replace_once(
        nginx,
        "        add_header X-Parcels-Trace $request_id always;\n",
        "        add_header X-Parcels-Trace $request_id always;\n"
        "        add_header Retry-After $parcels_retry_after always;\n",
    )
    replace_once(
        nginx,
        "    limit_req_status 503;\n",
        "    limit_req_status 503;\n"
        "\n"
        "    map $deploycheck_maintenance $parcels_retry_after {\n"
        '        ""      "";\n'
        '        default "5";\n'
        "    }\n",
    )


def team_repo(folder: Path, pytest_path: Path, *, adopted: bool) -> TeamRepo:
    """parcels as a team's git repository on this run's project and ports (adopted, or as it is)."""
    shutil.copytree(APP, folder, ignore=shutil.ignore_patterns("__pycache__", ".deploycheck", "reports"))
    project = f"dce2e-teamswap-{'adopted' if adopted else 'fixed'}-{uuid.uuid4().hex[:6]}"
    ports = dict(zip(PORT_VARIABLES, free_ports(len(PORT_VARIABLES)), strict=True))
    text = (folder / "environments.toml").read_text()
    text = text.replace(f'compose_project = "parcels-{ENVIRONMENT}"', f'compose_project = "{project}"')
    for variable, port in ports.items():
        text = re.sub(rf'{variable} = "\d+"', f'{variable} = "{port}"', text)
    if adopted:  # images of its own tag: its edge is not the parcels/edge:dev that test_team_stack.py deploys
        text = text.replace("variables = { ", 'variables = { PARCELS_TAG = "teamswap", ')
    (folder / "environments.toml").write_text(text)
    (folder / ".gitignore").write_text(".deploycheck/\nreports/\n")
    if adopted:
        adopt_zero_downtime(folder)
    subprocess.run(["git", "init", "-q"], cwd=folder, check=True)
    return TeamRepo(folder, ENVIRONMENT, project, pytest_path, ports)


@pytest.fixture
def adopted(tmp_path: Path, team_pytest: Path) -> Iterator[TeamRepo]:
    repo = team_repo(tmp_path / "parcels", team_pytest, adopted=True)
    yield repo
    remove_project(repo.project)


@pytest.fixture
def as_it_is(tmp_path: Path, team_pytest: Path) -> Iterator[TeamRepo]:
    repo = team_repo(tmp_path / "parcels", team_pytest, adopted=False)
    yield repo
    remove_project(repo.project)


def next_release(repo: TeamRepo) -> str:
    """Release B: a commit that changes no image, so only RELEASE (the services' PARCELS_BUILD) changes."""
    with (repo.folder / "CHANGES").open("a") as changes:
        changes.write(f"release {time.time()}\n")
    return repo.commit("parcels 1.1: a note")


def first_release(repo: TeamRepo) -> str:
    release = repo.commit("parcels 1.0")
    result = repo.deploy()
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
    return release


# --- a bounded GET load through the edge -------------------------------------------------------------------


class GetLoad:
    """GETs of each of ROUTES at RATE a second through the edge, open loop (scripts/load.py's OpenLoop: a slow
    answer does not lower the rate, each request on a new connection); each answer recorded: its status or
    exception, and the build a probe named."""

    def __init__(self, edge: str, parcel: int) -> None:
        self.outcomes: Counter[tuple[str, str]] = Counter()
        self.builds: dict[str, list[str]] = {}
        self.first_failures: list[str] = []
        self._lock = threading.Lock()
        fresh = {"Connection": "close"}  # scripts/load.py says why

        def get(path: str) -> Send:
            url = edge + path.format(parcel=parcel)
            return lambda http, _: http.get(url, headers=fresh, timeout=TIMEOUT)

        self._loop = OpenLoop({name: (RATE, get(path)) for name, path in ROUTES.items()}, TIMEOUT, self._answered)

    def __enter__(self) -> GetLoad:
        self._loop.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._loop.stop()

    def _answered(self, name: str, started: float, outcome: requests.Response | Exception) -> None:
        build = ""
        if isinstance(outcome, Exception):
            status = type(outcome).__name__
        else:
            status = str(outcome.status_code)
            if outcome.ok and name in ("tracker /about", "pricing ready"):
                try:
                    build = str(outcome.json().get("build", ""))
                except ValueError:
                    status = "200 without JSON"  # counted as failed: a probe's answer is JSON
        with self._lock:
            self.outcomes[name, status] += 1
            if status != "200" and len(self.first_failures) < 5:
                self.first_failures.append(f"{name}: {status}")
            if build and (not self.builds.get(name) or self.builds[name][-1] != build):
                self.builds.setdefault(name, []).append(build)  # each change of build, in order

    @property
    def sent(self) -> int:
        return sum(self.outcomes.values())

    @property
    def failed(self) -> int:
        return sum(count for (_, outcome), count in self.outcomes.items() if outcome != "200")

    def describe(self, what: str) -> str:
        by_route = ", ".join(f"{name} {outcome} x{count}" for (name, outcome), count in sorted(self.outcomes.items()))
        builds = "; ".join(f"{name}: {' -> '.join(seen)}" for name, seen in sorted(self.builds.items()))
        first = f"; first failures: {', '.join(self.first_failures)}" if self.first_failures else ""
        return f"{what}: {self.sent} requests sent, {self.failed} failed ({by_route}); builds seen: {builds}{first}"


def customer_parcel(repo: TeamRepo) -> int:
    created = requests.post(
        f"{repo.edge}/api/parcels",
        json={"recipient": "Grace", "city": "Porto"},
        headers={"X-Parcels-Key": API_KEY},
        timeout=10,
    )
    assert created.status_code == 201, created.text
    return int(created.json()["id"])


def service_containers(repo: TeamRepo, service: str) -> list[str]:
    found = docker.from_env().containers.list(
        all=True,
        filters={"label": [f"com.docker.compose.project={repo.project}", f"com.docker.compose.service={service}"]},
    )
    return sorted(c.name for c in found)


# --- the tests ---------------------------------------------------------------------------------------------------


def test_a_team_stack_that_adopted_zero_downtime_is_swapped_with_no_failed_request(adopted: TeamRepo) -> None:
    release_a = first_release(adopted)
    assert requests.get(f"{adopted.edge}/api/about", timeout=10).json()["build"] == release_a
    assert adopted.summary()["swaps"] == {}, "a first deploy swaps nothing"
    parcel = customer_parcel(adopted)

    release_b = next_release(adopted)
    with GetLoad(adopted.edge, parcel) as load:
        time.sleep(2)  # the load answers A before B's deploy starts
        result = adopted.deploy()
        time.sleep(2)  # and B after it
    print(load.describe(f"blue-green deploy of {release_b} over {release_a}"))
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
    assert load.sent > 0 and load.failed == 0, load.describe("during B's deploy")
    assert load.builds == {"tracker /about": [release_a, release_b], "pricing ready": [release_a, release_b]}

    swaps = adopted.summary()["swaps"]
    print(f"summary.json swaps: {swaps}")
    assert set(swaps) == {"tracker", "pricing"}, swaps
    for service, how in swaps.items():
        assert how.startswith("blue-green: ") and "stopped and removed" in how, (service, how)
        new = how.removeprefix("blue-green: ").split(" ", 1)[0]
        assert service_containers(adopted, service) == [new], how
    assert "is replaced in place" not in result.stdout
    assert requests.get(f"{adopted.edge}/api/about", timeout=10).json()["build"] == release_b
    assert requests.get(f"{adopted.edge}/pricing/health/ready", timeout=10).json()["build"] == release_b
    assert adopted.ledger()["current"] == release_b

    # The maintenance switch of the routes file (what a database restore turns on) answers parcels' own 503,
    # with Retry-After and the edge's headers; off again, the release serves.
    edge = docker.from_env().containers.get(service_containers(adopted, "edge")[0])
    upstreams = {s: f"{service_containers(adopted, s)[0]}:{port}" for s, port in (("tracker", 9000), ("pricing", 9100))}
    for on in (True, False):
        put_routes(edge, routes.routes_text(upstreams, maintenance=on))
        answer = poll_status(f"{adopted.edge}/api/about", 503 if on else 200)
        assert answer.headers.get("X-Served-By") == "parcels-edge", answer.headers
        assert ("Retry-After" in answer.headers) is on, answer.headers


def put_routes(edge: docker.models.containers.Container, text: str) -> None:
    """The routes file as deploycheck writes it (engine/routes.py), tested and taken with a graceful reload."""
    data = text.encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("routes.conf")
        info.size, info.mode = len(data), 0o644
        tar.addfile(info, io.BytesIO(data))
    assert edge.put_archive("/etc/nginx/deploycheck", buffer.getvalue())
    for argv in (["nginx", "-t"], ["nginx", "-s", "reload"]):
        code, output = edge.exec_run(argv)
        assert code == 0, output.decode(errors="replace")


def poll_status(url: str, status: int, seconds: float = 10) -> requests.Response:
    """The first answer with ``status`` (the reload's new workers take over within a moment)."""
    deadline = time.monotonic() + seconds
    while True:
        answer = requests.get(url, timeout=TIMEOUT)
        if answer.status_code == status or time.monotonic() > deadline:
            assert answer.status_code == status, (answer.status_code, answer.text[:300])
            return answer
        time.sleep(0.2)


def test_a_team_stack_with_fixed_host_ports_is_replaced_in_place_and_says_how_to_change_that(
    as_it_is: TeamRepo,
) -> None:
    release_a = first_release(as_it_is)
    parcel = customer_parcel(as_it_is)
    release_b = next_release(as_it_is)
    with GetLoad(as_it_is.edge, parcel) as load:
        time.sleep(2)
        result = as_it_is.deploy()
        time.sleep(2)
    print(load.describe(f"in-place deploy of {release_b} over {release_a} (fixed host ports)"))
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]

    swaps = as_it_is.summary()["swaps"]
    print(f"summary.json swaps: {swaps}")
    assert set(swaps) == {"tracker", "pricing"}, swaps
    for service, variable, port in (
        ("tracker", "PARCELS_TRACKER_PORT", 9000),
        ("pricing", "PARCELS_PRICING_PORT", 9100),
    ):
        host_port = as_it_is.ports[variable]
        why = (
            f"it publishes host port {host_port} (127.0.0.1:{host_port}:{port}), which the new container cannot bind "
            f'while the old one serves: publish it without a host port ("127.0.0.1::{port}")'
        )
        assert swaps[service].startswith(f"in place: {why}"), swaps[service]
        said = f"[deploycheck] {service} is replaced in place, so the proxy cannot serve it meanwhile: {why}"
        assert said in result.stdout, result.stdout[-5000:]
        assert len(service_containers(as_it_is, service)) == 1
    assert requests.get(f"{as_it_is.edge}/api/about", timeout=10).json()["build"] == release_b
