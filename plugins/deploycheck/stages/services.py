"""The API and the proxy in front of it: started (unless the database stage started them early), healthy, and
ready on the migrated database, directly and through the proxy; the proxy's configuration tested first."""

from __future__ import annotations

from deploycheck.engine import commands
from deploycheck.engine.compose import Compose
from deploycheck.engine.containers import POLL_SECONDS, State, WaitFailed, evidence, logs_tail, project_containers
from deploycheck.engine.containers import wait_http_ok as _wait_http_ok
from deploycheck.engine.polling import poll
from deploycheck.engine.target import Target
from deploycheck.stages import StageFailed
from deploycheck.stages.common import up, wait

# On a first deploy, started with the database nodes (see ``database.start``); their own stages find them running.
EARLY_SERVICES = ("api", "nginx")


def early_services(stack_existed_before: bool) -> tuple[str, ...]:
    """What the database stage starts besides the nodes: the API and Nginx, on a first deploy only. Onto a
    running stack they are replaced only in their own stages, after the migrations: the release that serves
    keeps serving until the new one's database is ready."""
    return () if stack_existed_before else EARLY_SERVICES


def wait_ready(target: Target, port: int, service: str) -> None:
    """GET /ready through ``port`` answers 200, the service's container still running."""
    environment = target.environment
    host, port = target.host_address(port)
    container = project_containers(target.docker, environment.compose_project)[service]
    try:
        _wait_http_ok(
            f"http://{host}:{port}/ready", environment.timeouts.stage, container, service, environment.all_secrets
        )
    except WaitFailed as failure:
        raise StageFailed(failure.reason, failure.evidence) from None


def start_api(target: Target, compose: Compose, started_early: bool) -> None:
    if not started_early:
        up(target, compose, ["api"])
    # Healthy, and ready on the migrated database.
    wait(target, ["api"])
    wait_ready(target, target.environment.ports.api, "api")


def _nginx_complaint(output: str) -> str:
    """nginx's own words for a configuration it rejects (its last [emerg] line), as the end of a reason."""
    complaints = [line.strip() for line in output.splitlines() if "[emerg]" in line]
    return f": {complaints[-1]}" if complaints else ""


def start_proxy(target: Target, compose: Compose, started_early: bool) -> None:
    environment = target.environment
    if not started_early:
        up(target, compose, ["nginx"])
    nginx = project_containers(target.docker, environment.compose_project).get("nginx")
    if nginx is None:
        raise StageFailed(f"no container for service nginx in project {environment.compose_project}")

    def not_running() -> StageFailed:
        logs = logs_tail(nginx, 20)
        return StageFailed(
            f"nginx is {nginx.status}, not running{_nginx_complaint(logs)}", evidence(nginx, environment.all_secrets)
        )

    def configuration_passes() -> bool | None:
        """The configuration test first: a broken config fails here with nginx's own words."""
        nginx.reload()
        if nginx.status == "running":
            result = target.runner.exec(nginx, commands.nginx_config_test(), check=False)
            if result.returncode == 0:
                return True
            if "[emerg]" in result.output or "test failed" in result.output:
                raise StageFailed(
                    f"nginx -t rejected the configuration{_nginx_complaint(result.output)}", result.output
                )
            # Not nginx's verdict: the exec itself failed (the container stopped meanwhile); look again.
        # An exited container (restarting or not) would not change its configuration by waiting.
        if State.of(nginx).exited:
            raise not_running()
        return None

    poll(configuration_passes, seconds=environment.timeouts.stage, every=POLL_SECONDS, timed_out=not_running)
    wait(target, ["nginx"])
    wait_ready(target, environment.ports.proxy, "nginx")
