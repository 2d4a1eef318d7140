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
secrets = { db_password = "UNIT_DB_PASSWORD" }
generate_missing_secrets = true

[environments.prod]
compose_project = "unit-prod"
ports = { coordinator = 5432, api = 8000, proxy = 8080 }
secrets = { db_password = "UNIT_PROD_DB_PASSWORD" }
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
