"""What the Docker engine says about a project's containers, and waits driven by their state.

A wait ends as soon as every container is healthy, and fails at once, with the container's logs and health
log, when one exits or restarts: it never burns the whole deadline on a container that is already dead.
An early "unhealthy" does not end a wait: only the deadline does.

"Healthy" is the engine's verdict, or a pass of the container's own healthcheck command when deploycheck runs
it (`run_own_healthcheck`) while the engine still says "starting". Docker 20.10 runs the first check a whole
interval after the start and has no start_interval (Docker 25), so without this a deploy would wait for the
engine's ticks, and the stack would need short intervals: each check is a runc exec (~45 ms of CPU on these
machines), every interval, for as long as the stack runs.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import docker
import docker.errors
import requests
from docker.models.containers import Container

from deploycheck.engine.commands import Command, Runner
from deploycheck.engine.polling import poll
from deploycheck.request.secrets import Secret, mask_text

PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
HELPER_PROJECT_LABEL = "org.deploycheck.project"  # the Compose project whose volumes a helper container mounts
# Waits wake up on the engine's events of the project (a health status change, a start, an exit), so they
# end as soon as the engine has a verdict, without polling it; a look every second stays as a safety net
# (an event stream that broke, an event missed while subscribing). Polling every 0.1 s instead cost the
# engine ~50 inspects a second on 2 cores while the database nodes were initialising.
POLL_SECONDS = 0.1
EVENT_FALLBACK_SECONDS = 1.0
HTTP_POLL_SECONDS = 0.2
WAKE_EVENTS = ["health_status", "start", "die", "restart", "kill", "oom", "stop", "destroy", "pause", "unpause"]
# How often a wait runs a starting container's own healthcheck, independent of the interval the stack sets:
# twice a second took 0.4 s off a first deploy's database stage (4.27 s -> 3.87 s, 3 runs each, 2 cores); first
# deploys of 2 / 4 / 8 workers took 7.7 / 9.6 / 18.5 s against 8.2 / 10.6 / 18.2 s once a second (the execs,
# ~45 ms of CPU each, cost what they save only at 8 workers).
START_INTERVAL_SECONDS = 0.5
# How often a wait asks its probe of the services' answers (see ReadinessRuns): one query over TCP, which a node
# still running initdb refuses at once; at 0.5 s, the nodes' wait ended 0.1-0.5 s after they were ready.
PROBE_INTERVAL_SECONDS = 0.1
OWN_RESULT = "readiness-run"  # the wake-up a finished readiness run (see ReadinessRuns) sends
LOG_LINES = 40


class WaitFailed(Exception):
    """A container did not become healthy; ``evidence`` holds its state and logs (secrets masked)."""

    def __init__(self, reason: str, evidence: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.evidence = evidence


def service_containers(client: docker.DockerClient, project: str) -> dict[str, list[Container]]:
    """The project's containers by Compose service name (running or not), the newest of each service last: a
    service has more than one while a new container runs beside the old one (``release.swap``)."""
    # ignore_removed: a container removed between the engine's list and the SDK's inspect of it is simply gone.
    found = client.containers.list(all=True, filters={"label": f"{PROJECT_LABEL}={project}"}, ignore_removed=True)
    by_service: dict[str, list[Container]] = {}
    for container in sorted(found, key=lambda c: str(c.attrs.get("Created", ""))):
        by_service.setdefault(container.labels.get(SERVICE_LABEL, container.name), []).append(container)
    return by_service


def service_container(client: docker.DockerClient, project: str, service: str) -> Container | None:
    """One service's container (the newest, when it has more), or None: the engine lists only that service's,
    where ``project_containers`` inspects every container of the project (one API call each)."""
    labels = [f"{PROJECT_LABEL}={project}", f"{SERVICE_LABEL}={service}"]
    found = client.containers.list(all=True, filters={"label": labels}, ignore_removed=True)
    return max(found, key=lambda c: str(c.attrs.get("Created", "")), default=None)


def project_containers(client: docker.DockerClient, project: str) -> dict[str, Container]:
    """The project's container of each Compose service (running or not): the newest, when it has more."""
    return {service: found[-1] for service, found in service_containers(client, project).items()}


def remove_project(client: docker.DockerClient, project: str) -> None:
    """Every container, volume and network labelled with a Compose project: what `compose down --volumes` would
    remove, found without the project's compose files (for the tests and the benchmark's throwaway stacks)."""
    label = {"label": f"{PROJECT_LABEL}={project}"}
    helpers = {"label": f"{HELPER_PROJECT_LABEL}={project}"}  # a restore's or rehearsal's, on its volumes
    for filters in (label, helpers):
        for container in client.containers.list(all=True, filters=filters, ignore_removed=True):
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True, v=True)
    for volume in client.volumes.list(filters=label):
        volume.remove(force=True)
    for network in client.networks.list(filters=label):
        network.remove()


@dataclass(frozen=True)
class State:
    status: str  # created, running, restarting, exited, dead, ...
    health: str | None  # starting, healthy, unhealthy; None without a healthcheck
    exit_code: int
    restarts: int
    oom_killed: bool
    error: str

    @classmethod
    def of(cls, container: Container) -> State:
        state = container.attrs.get("State", {})
        health = state.get("Health")
        return cls(
            status=str(state.get("Status", "unknown")),
            health=health.get("Status") if health else None,
            exit_code=int(state.get("ExitCode", 0)),
            restarts=int(container.attrs.get("RestartCount", 0)),
            oom_killed=bool(state.get("OOMKilled", False)),
            error=str(state.get("Error", "")),
        )

    @property
    def exited(self) -> bool:
        """Stopped, or "restarting": it exited and its restart policy is about to start it again (after a
        back-off); either way it will not become healthy by waiting."""
        return self.status in ("exited", "dead", "restarting")

    def describe(self) -> str:
        parts = [f"status {self.status}", f"health {self.health or 'none'}", f"exit code {self.exit_code}"]
        parts.append(f"restarts {self.restarts}")
        if self.oom_killed:
            parts.append("killed for lack of memory (OOM)")
        if self.error:
            parts.append(f"error: {self.error}")
        return ", ".join(parts)


def healthcheck_command(container: Container) -> Command | None:
    """The command the engine runs to check the container (its Config.Healthcheck.Test), None without one."""
    test = (container.attrs.get("Config", {}).get("Healthcheck") or {}).get("Test") or []
    if not test or test[0] == "NONE":
        return None
    if test[0] == "CMD-SHELL":
        return Command(("/bin/sh", "-c", " ".join(test[1:])))
    return Command(tuple(test[1:]) if test[0] == "CMD" else tuple(test))


def run_own_healthcheck(container: Container) -> bool:
    """Run the container's healthcheck command now, as the engine would (its user, environment and working
    directory), and say whether it passed. A container without a healthcheck passes while it runs; one that
    stopped meanwhile does not (the caller's look at its state says why)."""
    command = healthcheck_command(container)
    if command is None:
        return State.of(container).status == "running"
    return Runner().exec(container, command, check=False).returncode == 0


def health_log(container: Container, entries: int = 3) -> str:
    log = (container.attrs.get("State", {}).get("Health") or {}).get("Log") or []
    lines = [f"  exit {item.get('ExitCode')}: {str(item.get('Output', '')).strip()[:300]}" for item in log[-entries:]]
    return "\n".join(lines)


def logs_tail(container: Container, lines: int = LOG_LINES) -> str:
    try:
        raw: bytes = container.logs(tail=lines, timestamps=False)
        return raw.decode(errors="replace")
    except docker.errors.APIError as error:
        return f"(logs unavailable: {error.explanation})"


def evidence(container: Container, secrets: Iterable[Secret] = (), lines: int = LOG_LINES) -> str:
    """State, health log and the last lines of the logs of one container, ready for a report."""
    try:
        container.reload()
    except docker.errors.NotFound:
        return f"container {container.name} no longer exists"
    text = f"container {container.name}: {State.of(container).describe()}\n"
    checks = health_log(container)
    if checks:
        text += f"last health checks:\n{checks}\n"
    text += f"last {lines} log lines:\n{logs_tail(container, lines)}"
    return mask_text(text, list(secrets))


class ProjectEvents:
    """The engine's container events of one project (see WAKE_EVENTS), as wake-ups for a wait.

    Subscribe before the first look at the containers, so that nothing that happens after it is missed.
    """

    def __init__(self, client: docker.DockerClient, project: str) -> None:
        self._queue: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._stream: Any = None
        try:
            self._stream = client.events(
                decode=True,
                filters={"type": "container", "event": WAKE_EVENTS, "label": f"{PROJECT_LABEL}={project}"},
            )
        except docker.errors.DockerException:
            return  # no events: the wait falls back to a look every EVENT_FALLBACK_SECONDS
        threading.Thread(target=self._read, name=f"events-{project}", daemon=True).start()

    def _read(self) -> None:
        with contextlib.suppress(Exception):  # the stream ends with an error when it is closed
            for event in self._stream:
                self._queue.put(str(event.get("Action", "")))

    def wait(self, seconds: float) -> set[str]:
        """Until an event arrives or ``seconds`` pass: the actions that arrived (any others queued too)."""
        try:
            actions = {self._queue.get(timeout=max(0.0, seconds))}
        except queue.Empty:
            return set()
        with contextlib.suppress(queue.Empty):
            while True:
                actions.add(self._queue.get_nowait())
        return actions

    def poke(self, action: str) -> None:
        """Wake the wait up from this process (a finished run of a container's own healthcheck)."""
        self._queue.put(action)

    def close(self) -> None:
        if self._stream is not None:
            with contextlib.suppress(Exception):
                self._stream.close()


def wait_healthy(
    client: docker.DockerClient,
    project: str,
    services: list[str],
    deadline_seconds: float,
    secrets: Iterable[Secret] = (),
    watch: Iterable[str] = (),
    restarts_before: Mapping[str, int] | None = None,
    answers: Callable[[], bool] | None = None,
) -> None:
    """Wait until each service's container is healthy (or running, without a healthcheck).

    ``restarts_before``: restart counts by container id, read before the containers were (re)created: a
    container that died and restarted before the wait began fails it too (new containers count from 0).

    ``watch``: services started at the same time that need not be healthy yet, but whose exit or restart
    fails the wait at once all the same (its `die` event wakes the wait up).

    While the engine still says ``starting``, the wait runs a container's own healthcheck itself (see
    ReadinessRuns). ``answers``: a probe of the services themselves that needs no exec (the database answering
    a query on every node), which must pass before any of those runs: each is a ``docker exec`` (~45 ms of CPU),
    and three Citus nodes' every 0.5 s made them ~2 s slower to boot on 2 cores (4.8 s -> 6.9 s, 4 deploys each).
    """
    events = ProjectEvents(client, project)
    readiness = ReadinessRuns(events, answers)
    try:
        _wait_healthy(
            client, project, services, deadline_seconds, list(secrets), watch, events, restarts_before, readiness
        )
    finally:
        readiness.close()
        events.close()


class ReadinessRuns:
    """Runs of a starting container's own healthcheck during a wait, as the engine would run it (a ``docker
    exec``), so that the wait need not wait for the engine's first tick (an interval after the start): one run at
    a time per container, at most every START_INTERVAL_SECONDS, each on a thread of its own, so that a slow run
    holds up no other container. A finished run wakes the wait up (``ProjectEvents.poke``).

    Given a probe of the services themselves that needs no exec (``answers``), a container's healthcheck is run
    only once the probe has passed: the healthcheck stays what "healthy" means, and is run about once per
    container instead of twice a second for as long as the container starts. The probe is asked every
    PROBE_INTERVAL_SECONDS (shared by every container), so the healthchecks start at most that long after the
    services answer."""

    def __init__(self, events: ProjectEvents, answers: Callable[[], bool] | None = None) -> None:
        self._events = events
        self._answers = None if answers is None else _Probe(answers, PROBE_INTERVAL_SECONDS)
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="readiness")
        # container id -> (started at, run: None when the probe did not pass, so no healthcheck ran, else its verdict)
        self._runs: dict[str, tuple[float, Future[bool | None]]] = {}

    def _check(self, container: Container) -> bool | None:
        if self._answers is not None and not self._answers():
            return None
        return run_own_healthcheck(container)

    @staticmethod
    def _interval(run: Future[bool | None]) -> float:
        """How long after a finished run's start the next one may start."""
        unanswered = run.exception() is None and run.result() is None
        return PROBE_INTERVAL_SECONDS if unanswered else START_INTERVAL_SECONDS

    def passed(self, container: Container) -> bool:
        """Whether a run for this container has passed; starts the next run when one is due."""
        key = str(container.id)
        last = self._runs.get(key)
        if last is not None and last[1].done() and last[1].exception() is None and last[1].result():
            return True  # a run that raised (the engine unreachable) is a run that did not pass
        if last is None or (last[1].done() and time.monotonic() - last[0] >= self._interval(last[1])):
            run = self._pool.submit(self._check, container)
            run.add_done_callback(lambda _: self._events.poke(OWN_RESULT))
            self._runs[key] = (time.monotonic(), run)
        return False

    def next_due(self) -> float:
        """Seconds until a finished, failed run may be run again (EVENT_FALLBACK_SECONDS if none waits)."""
        now = time.monotonic()
        due = [started + self._interval(run) - now for started, run in self._runs.values() if run.done()]
        return max(0.0, min(due, default=EVENT_FALLBACK_SECONDS))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class _Probe:
    """A probe asked at most every ``interval`` seconds, however many containers' runs ask it (a run within that
    time gets the last answer), which, once it has passed, passes: the services answered; what follows is their
    healthchecks."""

    def __init__(self, probe: Callable[[], bool], interval: float) -> None:
        self._probe = probe
        self._interval = interval
        self._passed = False
        self._asked_at = -interval
        self._lock = threading.Lock()

    def __call__(self) -> bool:
        with self._lock:
            if not self._passed and time.monotonic() - self._asked_at >= self._interval:
                self._asked_at = time.monotonic()
                self._passed = self._probe()
            return self._passed


def _wait_healthy(
    client: docker.DockerClient,
    project: str,
    services: list[str],
    deadline_seconds: float,
    secrets: list[Secret],
    watch: Iterable[str],
    events: ProjectEvents,
    restarts_before: Mapping[str, int] | None,
    readiness: ReadinessRuns,
) -> None:
    watched = [s for s in watch if s not in services]
    containers = project_containers(client, project)
    missing = [s for s in [*services, *watched] if s not in containers]
    if missing:
        raise WaitFailed(f"no container for service {', '.join(missing)} in project {project}", "")
    baseline = {
        s: State.of(containers[s]).restarts if restarts_before is None else restarts_before.get(containers[s].id, 0)
        for s in [*services, *watched]
    }
    deadline = time.monotonic() + deadline_seconds
    pending = list(services)
    looked_at = -EVENT_FALLBACK_SECONDS  # the engine is asked on its events, and at least every second
    woken_by: set[str] = set()
    while pending:
        if woken_by - {OWN_RESULT} or time.monotonic() - looked_at >= EVENT_FALLBACK_SECONDS:
            looked_at = time.monotonic()
            for service in [*pending, *watched]:
                _fail_if_stopped(containers[service], service, baseline[service], secrets)
        for service in list(pending):
            container = containers[service]
            state = State.of(container)  # as the engine last said
            if state.status == "running" and (
                state.health in ("healthy", None) or (state.health == "starting" and readiness.passed(container))
            ):
                pending.remove(service)
        if not pending:
            return
        if time.monotonic() > deadline:
            service = pending[0]
            state = State.of(containers[service])
            raise WaitFailed(
                f"{service} did not become healthy within {deadline_seconds:.0f} s (health {state.health})",
                evidence(containers[service], secrets),
            )
        until_look = looked_at + EVENT_FALLBACK_SECONDS - time.monotonic()
        woken_by = events.wait(
            min(until_look, readiness.next_due(), max(0.0, deadline - time.monotonic()) + POLL_SECONDS)
        )


def _fail_if_stopped(container: Container, service: str, restarts_before: int, secrets: list[Secret]) -> None:
    """Read the container's state; raise WaitFailed if it exited or restarted since the wait began."""
    try:
        container.reload()
    except docker.errors.NotFound:
        raise WaitFailed(f"{service}: its container was removed while starting", "") from None
    state = State.of(container)
    if state.exited or state.restarts > restarts_before:
        if state.exited:
            why = f"exited while starting (exit code {state.exit_code})"
        else:  # running again: its exit code is gone, the restart count tells
            why = f"restarted while starting ({state.restarts - restarts_before} times)"
        raise WaitFailed(f"{service} {why}", evidence(container, secrets))


def wait_http_ok(
    url: str,
    deadline_seconds: float,
    container: Container,
    service: str,
    secrets: Iterable[Secret] = (),
    status: int = 200,
    method: str = "GET",
) -> None:
    """``method url`` until it answers ``status``; fail at once if ``container`` (the service's, or the proxy's
    in front of it) exits or restarts."""
    secrets = list(secrets)
    restarts = State.of(container).restarts
    last = ["no answer yet"]

    def answered() -> bool | None:
        container.reload()
        state = State.of(container)
        if state.exited or state.restarts > restarts:
            raise WaitFailed(f"{service} stopped while waiting for {url}", evidence(container, secrets))
        try:
            response = requests.request(method, url, timeout=5)
        except requests.RequestException as error:
            last[0] = type(error).__name__
            return None
        if response.status_code == status:
            return True
        last[0] = f"{response.status_code} {response.text[:300]}"
        return None

    poll(
        answered,
        seconds=deadline_seconds,
        every=HTTP_POLL_SECONDS,
        timed_out=lambda: WaitFailed(
            f"{url} did not answer {status} within {deadline_seconds:.0f} s (last: {last[0]})",
            evidence(container, secrets),
        ),
    )
