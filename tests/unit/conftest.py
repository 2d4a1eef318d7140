"""Helpers for the plugin's unit tests: a throwaway project with an environment file, no Docker."""

from __future__ import annotations

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

# A miniature suite: three stages through the real run_stage, one failing when asked, and checks on top.
STAGED_CONFTEST = """
import os
import pytest
from plugins.stages import StageFailed, run_stage, skip_if_a_stage_failed, stage_result
from plugins.record import RUN_RECORD

pytest_plugins = ["plugins.deploycheck"]

def _stage(config, name):
    def action():
        if os.environ.get("FAIL_STAGE") == name:
            raise StageFailed(f"{name} broke on purpose", "evidence: last log lines")
        return name
    return run_stage(config, name, action)

@pytest.fixture(scope="session")
def stage_first(pytestconfig):
    return _stage(pytestconfig, "first")

@pytest.fixture(scope="session")
def stage_second(pytestconfig, stage_first):
    return _stage(pytestconfig, "second")

@pytest.fixture(scope="session")
def stage_third(pytestconfig, stage_second):
    return _stage(pytestconfig, "third")

@pytest.fixture(scope="session")
def stack(pytestconfig, stage_third):
    skip_if_a_stage_failed(pytestconfig.stash[RUN_RECORD])
    return "stack"

@pytest.fixture(scope="session")
def run_record(pytestconfig):
    return pytestconfig.stash[RUN_RECORD]
"""

STAGED_TESTS = """
import pytest
from plugins.stages import stage_result

@pytest.mark.stage
@pytest.mark.parametrize("name", ["first", "second", "third"])
def test_stage(name, request, run_record):
    request.getfixturevalue(f"stage_{name}")
    stage = stage_result(run_record, name)
    if stage.outcome == "failed":
        pytest.fail(f"stage {name} failed: {stage.reason}", pytrace=False)

@pytest.mark.smoke
def test_check_one(stack):
    assert stack == "stack"

def test_check_two(stack):
    assert stack == "stack"

def test_check_that_fails(stack):
    import os
    assert os.environ.get("FAIL_CHECK") != "1", "the check failed on purpose"
"""


@pytest.fixture
def suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    make_project(pytester.path)
    pytester.makeconftest(STAGED_CONFTEST)
    pytester.makepyfile(test_suite=STAGED_TESTS)
    monkeypatch.delenv("FAIL_STAGE", raising=False)
    monkeypatch.delenv("FAIL_CHECK", raising=False)
    monkeypatch.setenv("PYTHONPATH", str(PROJECT_ROOT))  # for runpytest_subprocess
    return pytester
