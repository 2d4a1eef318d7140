"""deploycheck's own hooks, for a plugin or a test that changes where a run deploys."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from deploycheck.engine.target import Target
    from deploycheck.request.environment import Environment


@pytest.hookspec(firstresult=True)
def pytest_deploycheck_make_target(environment: Environment) -> Target | None:
    """The target of the run (the engine, the commands' environment, the stack's addresses); None: the default
    (``LocalTarget``). The project's unit tests give a fake engine this way."""
