"""Environment files: valid ones load into one immutable Environment; every mistake is one clear sentence."""

from __future__ import annotations

import dataclasses
import stat
from pathlib import Path

import pytest

from deploycheck.request.environment import ConfigError, load
from deploycheck.request.secrets import MASK, Secret, mask_text
from tests.unit.conftest import VALID_ENVIRONMENTS, make_project


def test_valid_environment_loads_with_defaults_merged(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNIT_PROD_DB_PASSWORD", "s3cret-value")
    monkeypatch.setenv("UNIT_PROD_API_TOKEN", "t0ken-value")
    environment = load(project / "environments.toml", "prod", project)
    assert environment.compose_project == "unit-prod"
    assert environment.expected_workers == 2
    assert environment.worker_services == ["worker-1", "worker-2"]
    assert environment.ports.proxy == 8080 and environment.database.name == "app"
    assert environment.db_password.reveal() == "s3cret-value"
    assert environment.api_token.reveal() == "t0ken-value"
    assert "s3cret" not in repr(environment) and "t0ken" not in repr(environment)
    assert environment.compose_files == ((project / "compose.yaml").resolve(),)
    with pytest.raises(dataclasses.FrozenInstanceError):
        environment.name = "other"  # type: ignore[misc]


def test_unknown_environment_lists_the_valid_ones(project: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown environment 'staging': choose one of local, prod"):
        load(project / "environments.toml", "staging", project)


def test_missing_secret_names_the_variable(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("UNIT_PROD_DB_PASSWORD", raising=False)
    with pytest.raises(ConfigError, match=r"needs the database password in \$UNIT_PROD_DB_PASSWORD: export it"):
        load(project / "environments.toml", "prod", project)
    monkeypatch.setenv("UNIT_PROD_DB_PASSWORD", "set")
    monkeypatch.delenv("UNIT_PROD_API_TOKEN", raising=False)
    with pytest.raises(ConfigError, match=r"needs the API token in \$UNIT_PROD_API_TOKEN: export it"):
        load(project / "environments.toml", "prod", project)


def test_generated_secret_is_kept_private_and_stable(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("UNIT_DB_PASSWORD", raising=False)
    monkeypatch.delenv("UNIT_API_TOKEN", raising=False)
    first = load(project / "environments.toml", "local", project)
    second = load(project / "environments.toml", "local", project)
    assert first.db_password == second.db_password and len(first.db_password.reveal()) >= 24
    assert first.api_token == second.api_token and first.api_token != first.db_password
    for name in ("db_password", "api_token"):
        store = project / ".deploycheck" / "local" / name
        assert stat.S_IMODE(store.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("expected_workers = 2", "expected_workers = 0"), "expected_workers must be between 1 and 32, not 0"),
        (("expected_workers = 2", 'expected_workers = "two"'), "'expected_workers' must be an integer, not 'two'"),
        (('docker_host = ""', 'docker_host = ""\nprots = 1'), "unknown key 'prots'; valid keys are"),
        (("api = 18000", "api = 15432"), "must be three different ports"),
        (("api = 18000", "api = 70000"), "ports.api must be between 1 and 65535"),
        (('"UNIT_DB_PASSWORD"', '"hunter2 is my password"'), "must name an environment variable"),
        (('"UNIT_API_TOKEN"', '"tok en"'), "secrets.api_token must name an environment variable"),
        (('compose_project = "unit-local"', 'compose_project = "Unit Local"'), "must be lowercase letters"),
        (('["compose.yaml"]', '["missing.yaml"]'), "missing.yaml does not exist"),
        (("timeouts = { stage = 30, check = 5 }", "timeouts = { stage = 30 }"), "'timeouts.check' is not set"),
        (("[defaults]", "[defaults\n"), "is not valid TOML"),
    ],
)
def test_mistakes_are_one_clear_sentence(tmp_path: Path, change: tuple[str, str], message: str) -> None:
    path = make_project(tmp_path, VALID_ENVIRONMENTS.replace(*change))
    with pytest.raises(ConfigError) as error:
        load(path, "local", tmp_path)
    text = str(error.value)
    assert message in text
    assert "\n" not in text and text.endswith(".")
    assert not (tmp_path / ".deploycheck").exists(), "a rejected file must change nothing"


def test_missing_file_says_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist: create it or pass --environments=FILE"):
        load(tmp_path / "nope.toml", "local", tmp_path)


def test_secret_never_shows_its_value() -> None:
    secret = Secret("topsecret-123", "$X")
    assert "topsecret" not in str(secret) and "topsecret" not in repr(secret) and "topsecret" not in f"{secret}"
    assert mask_text("password=topsecret-123 ok", [secret]) == f"password={MASK} ok"
    with pytest.raises(TypeError):
        import pickle

        pickle.dumps(secret)
