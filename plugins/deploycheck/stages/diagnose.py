"""The diagnosis of a running stack, which every ``--verify-only`` run writes beside its checks' outcomes:
for every service, its container's state, health and last healthcheck, restarts, OOM, published ports, and the
image it runs against the ledger's releases; and the stack's connections: this machine to the database (and,
on Citus, the coordinator to each node), this machine to each HTTP service's readiness request, directly and
through the proxy, and the proxy's own container to each upstream it routes to.

Read only: it changes nothing and takes no lock. Every problem is one line naming its service; any problem
fails the run (exit 1), as a failed check does.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import docker.errors
import psycopg
import requests
from docker.models.containers import Container

from deploycheck.engine.commands import Command
from deploycheck.engine.containers import State, project_containers, run_own_healthcheck
from deploycheck.engine.target import EngineUnreachable, Target
from deploycheck.record.life import Connection, ServiceState
from deploycheck.release.ledger import Ledger, LedgerError, Release
from deploycheck.request.secrets import mask_text
from deploycheck.stack import NotReachable, database_connection, service_address

SECONDS = 5  # each connection tried waits at most this long
# An HTTP request from inside a container, with what it has: the status code on stdout, or why not (exit
# NO_CLIENT: it has neither curl nor wget, and the request is not tried).
NO_CLIENT = 127
HTTP_FROM_INSIDE = """url="$1"
if command -v curl >/dev/null 2>&1; then curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$url"
elif command -v wget >/dev/null 2>&1; then wget -q -S -O /dev/null -T 5 "$url" 2>&1 | awk '/HTTP\\//{c=$2} END{print c}'
else echo "neither curl nor wget in the container"; exit 127; fi
"""


@dataclass
class Diagnosis:
    services: dict[str, ServiceState] = field(default_factory=dict)
    general: list[str] = field(default_factory=list)  # the problems of no one service (the ledger, the engine)
    ledger_release: str | None = None

    @property
    def problems(self) -> list[str]:
        """Every problem: each service's, in the services' order, then the others."""
        return [problem for state in self.services.values() for problem in state.problems] + self.general


def _ports(container: Container) -> list[str]:
    bindings = container.attrs.get("NetworkSettings", {}).get("Ports") or {}
    return [
        f"{b.get('HostIp') or '0.0.0.0'}:{b['HostPort']}->{port}"
        for port, published in sorted(bindings.items())
        for b in published or []
        if b.get("HostPort")
    ]


def _last_health_check(container: Container) -> str:
    log = (container.attrs.get("State", {}).get("Health") or {}).get("Log") or []
    if not log:
        return ""
    last = log[-1]
    return f"exit {last.get('ExitCode')}: {' '.join(str(last.get('Output', '')).split())[:300]}".rstrip(": ")


def _release_of(service: str, image_id: str, releases: Sequence[Release]) -> str | None:
    """The newest release that deployed green with this image for this service."""
    return next(
        (r.id for r in reversed(releases) if r.outcome == "passed" and r.image_ids.get(service) == image_id), None
    )


def _service_state(
    service: str, container: Container, releases: Sequence[Release], current: Release | None
) -> ServiceState:
    state = State.of(container)
    image_id = str(container.attrs.get("Image", ""))
    found = ServiceState(
        container=container.name,
        status=state.status,
        health=state.health,
        last_health_check=_last_health_check(container),
        restarts=state.restarts,
        oom_killed=state.oom_killed,
        exit_code=state.exit_code,
        ports=_ports(container),
        image_id=image_id,
        release=_release_of(service, image_id, releases),
    )
    problems = found.problems
    if state.status != "running":
        problems.append(f"{service} is {state.status}, not running (exit code {state.exit_code})")
    elif state.health == "unhealthy":
        problems.append(f"{service} is unhealthy (last health check: {found.last_health_check or 'none'})")
    elif state.health == "starting" and not run_own_healthcheck(container):
        problems.append(f"{service} is starting, and its own healthcheck fails now")
    if state.restarts:
        problems.append(f"{service} restarted {state.restarts} times")
    if state.oom_killed:
        problems.append(f"{service} was killed for lack of memory (OOM)")
    beyond = [port for port in found.ports if not port.startswith("127.0.0.1:")]
    if beyond:
        problems.append(f"{service} publishes {', '.join(beyond)} beyond 127.0.0.1")
    if current is not None:
        wanted = current.image_ids.get(service)
        if wanted is None:
            problems.append(f"{service} is not a service of the ledger's current release {current.id}")
        elif image_id != wanted:
            runs = f"release {found.release}'s image" if found.release else "an image of no release of the ledger"
            problems.append(f"{service} runs {runs} ({image_id[:19]}), not that of the current release {current.id}")
    return found


class Reach:
    """How this machine reaches the stack's services: for real (a unit test's fake engine stands in its own)."""

    def database(self, target: Target) -> tuple[str, list[tuple[str, int, bool, str]]]:
        """Where the database answered ``SELECT 1`` (host:port), and on Citus each other node the coordinator
        knows: (name, port, whether it connects to it, what it said). Raises psycopg.Error or NotReachable."""
        database = target.environment.stack.database
        notices: list[str] = []
        with database_connection(target, timeout=SECONDS) as conn:
            where = f"{conn.info.host}:{conn.info.port}"
            conn.execute("SELECT 1")
            if not database.is_citus:
                return where, []
            conn.add_notice_handler(lambda notice: notices.append(str(notice.message_primary or "")))
            rows = conn.execute(
                "SELECT nodename, nodeport, citus_check_connection_to_node(nodename, nodeport) FROM pg_dist_node "
                "WHERE noderole = 'primary' AND nodename <> %s ORDER BY nodename",
                (database.service,),
            ).fetchall()
        nodes = []
        for name, port, ok in rows:
            said = next((n for n in notices if f"@{name}:" in n), "")
            nodes.append((str(name), int(str(port)), bool(ok), "connected" if ok else (said or "no connection")))
        return where, nodes

    def http(self, url: str, status: int) -> tuple[bool, str]:
        try:
            response = requests.get(url, timeout=SECONDS)
        except requests.RequestException as error:
            return False, type(error).__name__
        return response.status_code == status, f"HTTP {response.status_code}"


def _database(target: Target, diagnosis: Diagnosis, reach: Reach) -> None:
    """This machine to the database; on Citus, the coordinator to every node it knows."""
    database = target.environment.stack.database
    entry = diagnosis.services.get(database.service)
    if entry is None or entry.container is None:
        return
    try:
        where, nodes = reach.database(target)
    except (psycopg.Error, NotReachable) as error:
        words = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        entry.connectivity.append(Connection("this machine", database.service, False, words))
        entry.problems.append(f"{database.service}: this machine cannot query it ({words})")
        return
    entry.connectivity.append(Connection("this machine", f"{database.service} {where}", True, "SELECT 1"))
    for node, port, ok, detail in nodes:
        target_entry = diagnosis.services.get(node, entry)
        target_entry.connectivity.append(Connection(database.service, f"{node}:{port}", ok, detail))
        if not ok:
            target_entry.problems.append(f"{node}: the coordinator ({database.service}) cannot connect to it: {detail}")


def _http(target: Target, containers: dict[str, Container], diagnosis: Diagnosis, reach: Reach) -> None:
    """This machine to each HTTP service's readiness request, directly and through the proxy; the proxy's own
    container to each upstream it routes to, by its service name and container port."""
    environment = target.environment
    contract = environment.stack
    proxy = contract.proxy
    for http in contract.http:
        entry = diagnosis.services.get(http.service)
        if entry is None or entry.container is None:
            continue
        ready = http.ready
        ways: list[tuple[str, str, Container | None, int]] = [
            ("directly", http.service, containers[http.service], http.port)
        ]
        if proxy is not None and http.service in proxy.routes and proxy.service in containers:
            ways.append((f"through {proxy.service}", proxy.service, containers[proxy.service], proxy.port))
        routed: str | None = None  # what the request through the proxy's route answered, when it was ready
        for how, through, container, port in ways:
            try:
                host, host_port = service_address(target, container, through, port)
            except NotReachable as error:
                entry.connectivity.append(Connection("this machine", f"{http.service} {how}", False, str(error)))
                entry.problems.append(f"{http.service}: this machine cannot reach it {how} ({error})")
                continue
            route = proxy.routes[http.service] if proxy is not None and through == proxy.service else ""
            url = f"http://{host}:{host_port}{route}{ready.path}"
            ok, detail = reach.http(url, ready.status)
            entry.connectivity.append(Connection("this machine", f"{http.service} {how}: {url}", ok, detail))
            if ok and through != http.service:
                routed = detail
            if not ok:
                entry.problems.append(f"{http.service}: {ready.path} {how} answered {detail}, not {ready.status}")
        if proxy is None or http.service not in proxy.routes or proxy.service not in containers:
            continue
        proxy_container = containers[proxy.service]
        if State.of(proxy_container).status != "running":
            continue
        upstream = f"http://{http.service}:{http.port}{ready.path}"
        if routed is not None:  # the proxy answered the readiness request from its upstream: it reaches it
            entry.connectivity.append(Connection(proxy.service, upstream, True, f"{routed} through its route"))
            continue
        # The route did not answer ready: a request from inside the proxy's container tells which side fails.
        result = target.runner.exec(
            proxy_container, Command(("sh", "-c", HTTP_FROM_INSIDE, "sh", upstream), timeout=SECONDS + 10), check=False
        )
        said = result.output.strip()
        if result.returncode == NO_CLIENT:  # this machine's request through the proxy's route still tells
            words = result.stdout.strip().splitlines()
            entry.connectivity.append(Connection(proxy.service, upstream, None, words[-1][:200] if words else ""))
            continue
        ok = result.returncode == 0 and said == str(ready.status)
        if said.isdigit():
            detail = "no connection" if said == "000" else f"HTTP {said}"
        else:
            detail = said.splitlines()[-1][:200] if said else f"exit code {result.returncode}"
        entry.connectivity.append(Connection(proxy.service, upstream, ok, detail))
        if not ok:
            entry.problems.append(f"{http.service}: the proxy ({proxy.service}) cannot reach {upstream}: {detail}")


def diagnose(target: Target, services: Sequence[str], ledger: Ledger, reach: Reach | None = None) -> Diagnosis:
    """The diagnosis of the stack that runs: ``services`` are its model's (a container of the project that is
    none of them is listed too, as an orphan)."""
    diagnosis = Diagnosis()
    environment = target.environment
    try:
        releases = ledger.releases()
        current = ledger.current()
    except LedgerError as error:
        releases, current = [], None
        diagnosis.general.append(str(error))
    diagnosis.ledger_release = current.id if current is not None else None
    try:
        containers = project_containers(target.docker, environment.compose_project)
    except (EngineUnreachable, docker.errors.DockerException) as error:
        diagnosis.general.append(f"the Docker engine of {target.where} does not answer: {error}")
        return diagnosis
    for service in [*services, *sorted(set(containers) - set(services))]:
        container = containers.get(service)
        if container is None:
            diagnosis.services[service] = ServiceState(None, "missing", problems=[f"{service} has no container"])
            continue
        diagnosis.services[service] = _service_state(service, container, releases, current)
        if service not in services:
            diagnosis.services[service].problems.append(f"{service} is not a service of the stack's compose files")
    if containers and current is None and not diagnosis.general:
        diagnosis.general.append(
            "the ledger has no current release: this stack was never deployed green, or it was torn down"
        )
    reach = reach or Reach()
    # The database's connectivity and the HTTP services' fill different services' entries: asked at once.
    with ThreadPoolExecutor(max_workers=2) as pool:
        asked = [
            pool.submit(_database, target, diagnosis, reach),
            pool.submit(_http, target, containers, diagnosis, reach),
        ]
    for future in asked:
        future.result()
    secrets = environment.all_secrets
    diagnosis.general = [mask_text(problem, secrets) for problem in diagnosis.general]
    for state in diagnosis.services.values():
        state.problems = [mask_text(problem, secrets) for problem in state.problems]
        state.last_health_check = mask_text(state.last_health_check, secrets)
        for connection in state.connectivity:
            connection.detail = mask_text(connection.detail, secrets)
    return diagnosis
