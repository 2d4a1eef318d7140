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
docker_host = ""
citus_image = "citusdata/citus:13.2"
timeouts = { stage = 30, check = 5 }
rollback = { purge_volumes = false }

[defaults.stack.database]
name = "app"
user = "app"
worker_count = 2

[environments.local]
compose_project = "unit-local"
variables = { COORDINATOR_PORT = "15432", API_PORT = "18000", PROXY_PORT = "18080" }
secrets = { db_password = "UNIT_DB_PASSWORD", api_token = "UNIT_API_TOKEN" }
generate_missing_secrets = true

[environments.prod]
compose_project = "unit-prod"
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
    assert stack.release

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
    # The run's modules named on its command line: the built-in checks (which need a real stack) stay out.
    pytester.makeini("[pytest]\naddopts = test_stages.py test_checks.py\n")
    for variable in ("FAIL_CHECK", "FAKE_SCENARIO"):
        monkeypatch.delenv(variable, raising=False)
    from deploycheck.stages import diagnose
    from tests.unit.fakes import FakeReach

    monkeypatch.setattr(diagnose, "Reach", FakeReach)  # a diagnosis reaches the fake stack (in-process runs)
    # For runpytest_subprocess: the project's code, as the suite imports it.
    monkeypatch.setenv("PYTHONPATH", f"{PROJECT_ROOT / 'plugins'}:{PROJECT_ROOT}")
    return pytester


def ledger_with_release_a(pytester: pytest.Pytester) -> None:
    """A ledger in which release A deployed green, running the fake engine's images (tests/unit/fakes.py)."""
    from tests.unit.fakes import FakeImage

    services = ["coordinator", "worker-1", "worker-2", "api", "nginx"]
    entry = {
        "id": "A",
        "started_at": 1.0,
        "images": {s: f"deploycheck/pinned:{s}" for s in services},
        "image_ids": {s: FakeImage(f"unit/{s}:1").id for s in services},
        "citus_image": "citusdata/citus:13.2",
        "configuration": "compose-a.json",
        "outcome": "passed",
        "finished_at": 2.0,
    }
    ledger = pytester.path / ".deploycheck" / "local" / "ledger.json"
    ledger.parent.mkdir(parents=True, exist_ok=True)
    ledger.write_text(json.dumps({"current": "A", "releases": [entry]}))


def commands_run(pytester: pytest.Pytester) -> list[list[str]]:
    """Every command the fake engine's runner was given, in order (argv lists)."""
    log = pytester.path / "commands.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
