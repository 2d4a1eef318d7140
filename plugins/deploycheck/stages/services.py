"""The services and the proxy in front of them.

Services: every service of the stack that is neither the database's nor the proxy (the contract's HTTP
services and whatever else the team's model has), started unless the database stage started them early,
healthy, and each HTTP service ready on the migrated database. Proxy: its configuration tested first, then
healthy, answering its own health request, and each HTTP service ready through its route.
"""

from __future__ import annotations

from collections.abc import Sequence

from deploycheck.engine import commands, routes
from deploycheck.engine.commands import CommandFailed
from deploycheck.engine.compose import Compose, ComposeModel
from deploycheck.engine.containers import (
    POLL_SECONDS,
    State,
    WaitFailed,
    evidence,
    logs_tail,
    project_containers,
    service_container,
)
from deploycheck.engine.containers import wait_http_ok as _wait_http_ok
from deploycheck.engine.polling import poll
from deploycheck.engine.target import Target
from deploycheck.release import swap
from deploycheck.request.environment import Request
from deploycheck.stack import NotReachable, Stack
from deploycheck.stages import StageFailed, StageNotApplicable
from deploycheck.stages.common import up, wait


def application_services(target: Target, model: ComposeModel) -> list[str]:
    """The services the services stage starts: all but the database's and the proxy."""
    stack = target.environment.stack
    others = {*stack.database.node_services, *([stack.proxy.service] if stack.proxy else [])}
    return [name for name in model.names if name not in others]


def early_services(target: Target, model: ComposeModel, stack_existed_before: bool) -> list[str]:
    """What the database stage starts besides the nodes: every other service, on a first deploy only (their
    start overlaps the database's). Onto a running stack they are replaced only in their own stages, after the
    migrations: the release that serves keeps serving until the new one's database is ready."""
    if stack_existed_before:
        return []
    return [name for name in model.names if name not in target.environment.node_services]


def wait_answers(target: Target, url: str, request: Request, service: str, through: str) -> None:
    """``request`` at ``url`` answers its status, the container of ``through`` (the service, or the proxy in
    front of it) still running."""
    environment = target.environment
    container = project_containers(target.docker, environment.compose_project)[through]
    try:
        _wait_http_ok(
            f"{url}{request.path}",
            environment.timeouts.stage,
            container,
            through,
            environment.all_secrets,
            status=request.status,
            method=request.method,
        )
    except WaitFailed as failure:
        raise StageFailed(failure.reason, failure.evidence) from None


def _stack(target: Target) -> Stack:
    return Stack.attach(target, "")


def start_services(
    target: Target, compose: Compose, services: Sequence[str], started_early: bool, swaps: Sequence[swap.Swap] = ()
) -> tuple[swap.Swap, ...]:
    """Every application service started and healthy, each HTTP service ready on the migrated database; the
    ``swaps`` (their routes already pinned to the old containers) start beside the old ones. The swaps as started."""
    if not services:
        raise StageNotApplicable("the stack has no service besides its database and its proxy")
    swapped = {s.service for s in swaps}
    if not started_early and [s for s in services if s not in swapped]:
        up(target, compose, [s for s in services if s not in swapped])
    started: tuple[swap.Swap, ...] = ()
    if swaps:
        try:
            started = swap.start_beside(target, compose, swaps)
        except CommandFailed as error:
            raise StageFailed(
                f"docker compose could not start {', '.join(swapped)} beside the old", str(error)
            ) from None
    wait(target, services)
    stack = _stack(target)
    for http in target.environment.stack.http:
        try:
            url = stack.url(http.service)
        except NotReachable as error:
            raise StageFailed(str(error)) from None
        # Healthy, and ready on the migrated database (a swapped service: its new container, which serves nothing yet).
        wait_answers(target, url, http.ready, http.service, http.service)
    return started


def _complaint(output: str) -> str:
    """The proxy's own words for a configuration it rejects (nginx's last [emerg] line), as a reason's end."""
    complaints = [line.strip() for line in output.splitlines() if "[emerg]" in line]
    return f": {complaints[-1]}" if complaints else ""


def start_proxy(target: Target, compose: Compose, started_early: bool) -> None:
    environment = target.environment
    proxy = environment.stack.proxy
    if proxy is None:
        raise StageNotApplicable("the stack has no proxy (stack.proxy)")
    if not started_early:
        up(target, compose, [proxy.service])
    container = service_container(target.docker, environment.compose_project, proxy.service)
    if container is None:
        raise StageFailed(f"no container for service {proxy.service} in project {environment.compose_project}")

    def not_running() -> StageFailed:
        logs = logs_tail(container, 20)
        return StageFailed(
            f"{proxy.service} is {container.status}, not running{_complaint(logs)}",
            evidence(container, environment.all_secrets),
        )

    def configuration_passes() -> bool | None:
        """The configuration test first: a broken configuration fails here with the proxy's own words."""
        container.reload()
        if container.status == "running":
            test = commands.Command(proxy.config_test, timeout=30)
            result = target.runner.exec(container, test, check=False)
            if result.returncode == 0:
                return True
            container.reload()
            if result.returncode > 0 and container.status == "running":
                last_line = result.output.strip().splitlines()[-1] if result.output.strip() else ""
                words = _complaint(result.output) or (f": {last_line}" if last_line else "")
                raise StageFailed(f"{' '.join(proxy.config_test)} rejected the configuration{words}", result.output)
            # Not the proxy's verdict: the exec itself failed (the container stopped meanwhile); look again.
            return None
        # An exited container (restarting or not) would not change its configuration by waiting.
        if State.of(container).exited:
            raise not_running()
        return None

    poll(configuration_passes, seconds=environment.timeouts.stage, every=POLL_SECONDS, timed_out=not_running)
    wait(target, [proxy.service])
    # The proxy takes the live containers: a swapped service's new one from here on.
    problem = routes.follow(target)
    if problem is not None:
        raise StageFailed(problem, evidence(container, environment.all_secrets))
    stack = _stack(target)
    try:
        wait_answers(target, stack.proxy_url(), proxy.health, proxy.service, proxy.service)
        for http in environment.stack.http:
            if http.service in proxy.routes:
                wait_answers(target, stack.url(http.service, "proxy"), http.ready, http.service, proxy.service)
    except NotReachable as error:
        raise StageFailed(str(error)) from None
