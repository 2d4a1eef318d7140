"""Helpers for the plugin's unit tests: a throwaway project with an environment file, no Docker."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

VALID_ENVIRONMENTS = """
[defaults]
compose_files = ["compose.yaml"]
migrations_dir = "migrations"
expected_workers = 2
docker_host = ""
citus_image = "citusdata/citus:13.0"
database = { name = "app", user = "app" }
timeouts = { stage = 30, check = 5 }
rollback = { purge_volumes = false }

[environments.local]
compose_project = "unit-local"
ports = { coordinator = 15432, api = 18000, proxy = 18080 }
secrets = { db_password = "UNIT_DB_PASSWORD", api_token = "UNIT_API_TOKEN" }
generate_missing_secrets = true

[environments.prod]
compose_project = "unit-prod"
ports = { coordinator = 5432, api = 8000, proxy = 8080 }
secrets = { db_password = "UNIT_PROD_DB_PASSWORD", api_token = "UNIT_PROD_API_TOKEN" }
"""


def make_project(root: Path, environments: str = VALID_ENVIRONMENTS) -> Path:
    (root / "compose.yaml").write_text("services: {}\n")
    (root / "migrations").mkdir(exist_ok=True)
    path = root / "environments.toml"
    path.write_text(textwrap.dedent(environments))
    return path


@pytest.fixture
def project(tmp_path: Path) -> Path:
    make_project(tmp_path)
    return tmp_path


PROJECT_ROOT = Path(__file__).resolve().parents[2]

# The real plugin and its real stage fixtures, on the fake engine of tests/unit/fakes.py.
FAKE_ENGINE_CONFTEST = """
from tests.unit.fakes import fake_target

pytest_plugins = ["deploycheck.plugin"]


def pytest_deploycheck_make_target(environment):
    return fake_target(environment)
"""

# Checks of the run's own, beside the real stage tests (checks/test_stages.py, linked in).
CHECKS = """
import os
import pytest

@pytest.mark.smoke
def test_check_one(stack):
    assert stack.release == "A"

def test_check_two(stack):
    assert set(stack.containers) == {"coordinator", "worker-1", "worker-2", "api", "nginx"}

def test_check_that_fails(stack):
    assert os.environ.get("FAIL_CHECK") != "1", "the check failed on purpose"
"""


@pytest.fixture
def suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A project with an environment file, the real plugin on the fake engine, the real stage tests and three
    checks of its own. ``$FAKE_SCENARIO`` says what the fake engine does (tests/unit/fakes.py)."""
    make_project(pytester.path)
    pytester.makeconftest(FAKE_ENGINE_CONFTEST)
    (pytester.path / "test_stages.py").symlink_to(PROJECT_ROOT / "checks" / "test_stages.py")
    pytester.makepyfile(test_checks=CHECKS)
    for variable in ("FAIL_CHECK", "FAKE_SCENARIO"):
        monkeypatch.delenv(variable, raising=False)
    # For runpytest_subprocess: the project's code, as the suite imports it.
    monkeypatch.setenv("PYTHONPATH", f"{PROJECT_ROOT / 'plugins'}:{PROJECT_ROOT}")
    return pytester


def commands_run(pytester: pytest.Pytester) -> list[list[str]]:
    """Every command the fake engine's runner was given, in order (argv lists)."""
    log = pytester.path / "commands.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
