"""The command a wait runs as a container's own healthcheck: the engine's reading of Config.Healthcheck.Test."""

from __future__ import annotations

from typing import Any

import pytest

from deploycheck.engine.containers import healthcheck_command


class _Container:
    def __init__(self, healthcheck: dict[str, Any] | None) -> None:
        self.attrs = {"Config": {"Healthcheck": healthcheck} if healthcheck is not None else {}}


@pytest.mark.parametrize(
    ("test", "command"),
    [
        (["CMD", "pg_isready", "-q"], ["pg_isready", "-q"]),
        (["CMD-SHELL", 'pg_isready -U "$POSTGRES_USER"'], ["/bin/sh", "-c", 'pg_isready -U "$POSTGRES_USER"']),
        (["NONE"], None),
        ([], None),
    ],
)
def test_healthcheck_command_reads_the_test_as_the_engine_does(test: list[str], command: list[str] | None) -> None:
    found = healthcheck_command(_Container({"Test": test}))
    assert (list(found.argv) if found is not None else None) == command


def test_a_container_without_a_healthcheck_has_no_command() -> None:
    assert healthcheck_command(_Container(None)) is None
