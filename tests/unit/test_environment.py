"""Environment files: valid ones load into one immutable Environment with its stack contract; every mistake is
one clear sentence, and a rejected file changes nothing."""

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
    environment = load(project / "environments.toml", "prod")
    assert environment.compose_project == "unit-prod"
    assert environment.worker_services == ["worker-1", "worker-2"]
    assert environment.database.name == "app" and environment.database.service == "coordinator"
    assert environment.stack.services == ["coordinator", "worker-1", "worker-2", "api", "nginx"], "the reference's"
    assert environment.db_password.reveal() == "s3cret-value"
    assert environment.secret("api_token").reveal() == "t0ken-value"
    assert "s3cret" not in repr(environment) and "t0ken" not in repr(environment)
    assert environment.compose_files == ((project / "compose.yaml").resolve(),)
    with pytest.raises(dataclasses.FrozenInstanceError):
        environment.name = "other"  # type: ignore[misc]


TEAM = """
[environments.parcels]
compose_project = "parcels-prod"
compose_files = ["deploy/compose.yaml"]
migrations_dir = "deploy/migrations/citus"
check_modules = ["deploy/checks"]
variables = { PARCELS_EDGE_PORT = "47201" }
secrets = { db_password = "PARCELS_DB_PASSWORD", api_key = "PARCELS_API_KEY" }
timeouts = { stage = 120, check = 10 }

[environments.parcels.stack.database]
service = "citus-main"
workers = ["citus-node-a", "citus-node-b"]
name = "parcels"
user = "parcels"

[[environments.parcels.stack.http]]
service = "tracker"
port = 9000
live = { path = "/livez" }
ready = { path = "/readyz" }
release = { path = "/about", field = "build" }

[[environments.parcels.stack.http]]
service = "pricing"
port = 9100
live = { path = "/health/live" }
ready = { path = "/health/ready" }

[environments.parcels.stack.proxy]
service = "edge"
port = 8080
health = { path = "/edge-ping" }
routes = { tracker = "/api", pricing = "/pricing" }
headers = { "X-Served-By" = "parcels-edge" }

[[environments.parcels.http_checks]]
service = "tracker"
method = "POST"
path = "/parcels"
body = { recipient = "Ada", city = "Lyon" }
headers = { "X-Parcels-Key" = "{secret:api_key}" }
status = 201
json = { recipient = "Ada" }
"""


def team_project(root: Path, environments: str = TEAM) -> Path:
    (root / "deploy" / "migrations" / "citus").mkdir(parents=True)
    (root / "deploy" / "checks").mkdir()
    (root / "deploy" / "compose.yaml").write_text("services: {}\n")
    path = root / "environments.toml"
    path.write_text(environments)
    return path


def test_a_team_s_own_stack_contract(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARCELS_DB_PASSWORD", "pw")
    monkeypatch.setenv("PARCELS_API_KEY", "key")
    environment = load(team_project(tmp_path), "parcels")
    stack = environment.stack
    assert stack.services == ["citus-main", "citus-node-a", "citus-node-b", "tracker", "pricing", "edge"]
    assert not stack.database.uses_worker_template
    assert stack.http_service("tracker").ready.path == "/readyz"
    assert stack.proxy is not None and dict(stack.proxy.routes) == {"tracker": "/api", "pricing": "/pricing"}
    assert environment.http_checks[0].json == {"recipient": "Ada"} and environment.http_checks[0].status == 201
    # Relative paths, the state and the release id belong to the environment file's folder.
    assert environment.migrations_dir == (tmp_path / "deploy" / "migrations" / "citus").resolve()
    assert environment.check_modules == ((tmp_path / "deploy" / "checks").resolve(),)
    assert environment.state_dir == tmp_path.resolve() / ".deploycheck" / "parcels"
    assert dict(environment.variables) == {"PARCELS_EDGE_PORT": "47201"}


def test_a_plain_postgresql_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARCELS_DB_PASSWORD", "pw")
    monkeypatch.setenv("PARCELS_API_KEY", "key")
    postgres = TEAM.replace(
        'service = "citus-main"\nworkers = ["citus-node-a", "citus-node-b"]', 'kind = "postgres"\nservice = "pg"'
    )
    environment = load(team_project(tmp_path, postgres), "parcels")
    assert environment.stack.database.node_services == ["pg"] and environment.worker_services == []


def test_unknown_environment_lists_the_valid_ones(project: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown environment 'staging': choose one of local, prod"):
        load(project / "environments.toml", "staging")


def test_missing_secret_names_the_variable(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("UNIT_PROD_DB_PASSWORD", raising=False)
    with pytest.raises(ConfigError, match=r"needs the database password in \$UNIT_PROD_DB_PASSWORD: export it"):
        load(project / "environments.toml", "prod")
    monkeypatch.setenv("UNIT_PROD_DB_PASSWORD", "set")
    monkeypatch.delenv("UNIT_PROD_API_TOKEN", raising=False)
    with pytest.raises(ConfigError, match=r"needs the secret api_token in \$UNIT_PROD_API_TOKEN: export it"):
        load(project / "environments.toml", "prod")


def test_generated_secret_is_kept_private_and_stable(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("UNIT_DB_PASSWORD", raising=False)
    monkeypatch.delenv("UNIT_API_TOKEN", raising=False)
    first = load(project / "environments.toml", "local")
    second = load(project / "environments.toml", "local")
    assert first.db_password == second.db_password and len(first.db_password.reveal()) >= 24
    assert first.secret("api_token") == second.secret("api_token") and first.secret("api_token") != first.db_password
    for name in ("db_password", "api_token"):
        store = project / ".deploycheck" / "local" / name
        assert stat.S_IMODE(store.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("worker_count = 2", "worker_count = 40"), "stack.database.worker_count must be between 0 and 32, not 40"),
        (("worker_count = 2", 'worker_count = "two"'), "'stack.database.worker_count' must be an integer, not 'two'"),
        (("worker_count = 2", "worker_count = 0"), "a Citus database needs workers"),
        (('name = "app"', 'name = "app"\nkind = "mysql"'), "'stack.database.kind' must be one of 'citus', 'postgres'"),
        (('docker_host = ""', 'docker_host = ""\nprots = 1'), "unknown key 'prots'; valid keys are"),
        (('"UNIT_DB_PASSWORD"', '"hunter2 is my password"'), "'db_password' must name an environment variable"),
        (('db_password = "UNIT_DB_PASSWORD", ', ""), "must name the variable of db_password"),
        (('compose_project = "unit-local"', 'compose_project = "Unit Local"'), "must be lowercase letters"),
        (('["compose.yaml"]', '["missing.yaml"]'), "missing.yaml does not exist"),
        (('["compose.yaml"]', "[1]"), "'compose_files' must be a list of paths, not [1]"),
        (('["compose.yaml"]', "[]"), "compose_files is empty"),
        (("timeouts = { stage = 30, check = 5 }", "timeouts = { stage = 30 }"), "'timeouts.check' is not set"),
        (("timeouts = { stage = 30, check = 5 }", "timeouts = 5"), "'timeouts' must be a table, not 5"),
        (('API_PORT = "18000"', "API_PORT = 18000"), "'variables' must be a table of strings"),
        (("[defaults]", "[defaults\n"), "is not valid TOML"),
    ],
)
def test_mistakes_are_one_clear_sentence(tmp_path: Path, change: tuple[str, str], message: str) -> None:
    path = make_project(tmp_path, VALID_ENVIRONMENTS.replace(*change, 1))
    with pytest.raises(ConfigError) as error:
        load(path, "local")
    text = str(error.value)
    assert message in text
    assert "\n" not in text and text.endswith(".")
    assert not (tmp_path / ".deploycheck").exists(), "a rejected file must change nothing"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('service = "pricing"', 'service = "tracker"'), "service 'tracker' plays two roles in stack"),
        (('routes = { tracker = "/api", pricing = "/pricing" }', 'routes = { shop = "/shop" }'), "routes names 'shop'"),
        (
            ('routes = { tracker = "/api"', 'routes = { tracker = "/api/"'),
            "'/api/' of tracker must be '' (the root) or start",
        ),
        (('live = { path = "/livez" }', 'live = { path = "livez" }'), "'livez' must start with '/'"),
        (
            (
                '[[environments.parcels.http_checks]]\nservice = "tracker"',
                '[[environments.parcels.http_checks]]\nservice = "shop"',
            ),
            "an http_checks entry names 'shop'",
        ),
        (
            ('workers = ["citus-node-a", "citus-node-b"]', 'workers = ["citus node a"]'),
            "'citus node a' is not a Compose service name",
        ),
        (('check_modules = ["deploy/checks"]', 'check_modules = ["deploy/nope"]'), "check module"),
    ],
)
def test_contract_mistakes_are_one_clear_sentence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: tuple[str, str], message: str
) -> None:
    monkeypatch.setenv("PARCELS_DB_PASSWORD", "pw")
    monkeypatch.setenv("PARCELS_API_KEY", "key")
    with pytest.raises(ConfigError) as error:
        load(team_project(tmp_path, TEAM.replace(*change, 1)), "parcels")
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_stack_without_a_proxy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARCELS_DB_PASSWORD", "pw")
    monkeypatch.setenv("PARCELS_API_KEY", "key")
    without = (
        TEAM.split("[environments.parcels.stack.proxy]")[0]
        + TEAM.split('headers = { "X-Served-By" = "parcels-edge" }')[1]
    )
    without = without.replace(
        "[environments.parcels.stack.database]", "stack.proxy = false\n\n[environments.parcels.stack.database]"
    )
    environment = load(team_project(tmp_path, without), "parcels")
    assert environment.stack.proxy is None and "edge" not in environment.stack.services
    assert environment.http_checks[0].ways(routed=False) == ("direct",), "both = directly only, with no route"


def test_a_declarative_check_through_a_proxy_that_has_no_route_to_it_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PARCELS_DB_PASSWORD", "pw")
    monkeypatch.setenv("PARCELS_API_KEY", "key")
    text = TEAM.replace('routes = { tracker = "/api", pricing = "/pricing" }', 'routes = { pricing = "/pricing" }')
    text = text.replace(
        'status = 201\njson = { recipient = "Ada" }', 'status = 201\njson = { recipient = "Ada" }\nvia = "proxy"'
    )
    with pytest.raises(ConfigError) as error:
        load(team_project(tmp_path, text), "parcels")
    assert "the proxy has no route to tracker" in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("environments = 5\n", "'environments' must hold tables ([environments.NAME]), not 5"),
        ("[environments]\nlocal = 5\n", "'environments' must hold tables"),
        ("defaults = 5\n[environments.local]\n", "'defaults' must be a table ([defaults]), not 5"),
        ("[defaults]\n", "defines no environment"),
        ("[stuff]\n", "unknown table 'stuff'"),
    ],
)
def test_wrong_file_shapes_are_one_clear_sentence(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "environments.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        load(path, "local")
    assert message in str(error.value)


def test_missing_file_says_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist: create it or pass --environments=FILE"):
        load(tmp_path / "nope.toml", "local")


def test_secret_never_shows_its_value() -> None:
    secret = Secret("topsecret-123", "$X")
    assert "topsecret" not in str(secret) and "topsecret" not in repr(secret) and "topsecret" not in f"{secret}"
    assert mask_text("password=topsecret-123 ok", [secret]) == f"password={MASK} ok"
    with pytest.raises(TypeError):
        import pickle

        pickle.dumps(secret)
