"""What several stages do: start services with Compose, and wait until they are healthy, as stage failures."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from deploycheck.engine.commands import CommandFailed
from deploycheck.engine.compose import Compose
from deploycheck.engine.containers import WaitFailed, wait_healthy
from deploycheck.engine.target import Target
from deploycheck.stages import StageFailed


def up(target: Target, compose: Compose, services: Sequence[str]) -> None:
    try:
        compose.up(services, timeout=target.environment.timeouts.stage)
    except CommandFailed as error:
        raise StageFailed(f"docker compose could not start {', '.join(services)}", str(error)) from None


def wait(
    target: Target,
    services: Sequence[str],
    watch: Sequence[str] = (),
    restarts_before: Mapping[str, int] | None = None,
    answers: Callable[[], bool] | None = None,
) -> None:
    environment = target.environment
    try:
        wait_healthy(
            target.docker,
            environment.compose_project,
            list(services),
            environment.timeouts.stage,
            environment.all_secrets,
            watch=watch,
            restarts_before=restarts_before,
            answers=answers,
        )
    except WaitFailed as failure:
        raise StageFailed(failure.reason, failure.evidence) from None
