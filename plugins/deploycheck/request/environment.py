"""Environments: one TOML file of named targets, validated into one immutable ``Environment``.

The classes below are the file's schema (``schema.setting`` fields: type, default, meaning), declared once.
Every problem is a ``ConfigError`` whose message is one sentence saying what is wrong and how to fix it.
Secrets are never written in the file: it names the environment variables that hold them.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deploycheck.request import secrets as secret_store
from deploycheck.request.schema import ConfigError, parse, setting
from deploycheck.request.secrets import Secret

DEFAULT_FILE = "environments.toml"
PROJECT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
VARIABLE_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")
MAX_WORKERS = 32

__all__ = ["DEFAULT_FILE", "ConfigError", "Environment", "load"]


def _port(value: int) -> str | None:
    return None if 1 <= value <= 65535 else f"must be between 1 and 65535, not {value}"


def _positive(value: float) -> str | None:
    return None if value > 0 else f"must be a positive number of seconds, not {value}"


def _variable(value: str) -> str | None:
    if VARIABLE_NAME.match(value):
        return None
    return "must name an environment variable (like DEPLOYCHECK_DB_PASSWORD), not hold a value"


def _project(value: str) -> str | None:
    if PROJECT_NAME.match(value):
        return None
    return f"'{value}' must be lowercase letters, digits, '-' or '_', starting with a letter or digit"


def _workers(value: int) -> str | None:
    return None if 1 <= value <= MAX_WORKERS else f"must be between 1 and {MAX_WORKERS}, not {value}"


@dataclass(frozen=True)
class Ports:
    """Host ports, published on 127.0.0.1 only."""

    coordinator: int = setting("the coordinator's host port", check=_port)
    api: int = setting("the API's host port", check=_port)
    proxy: int = setting("the proxy's host port", check=_port)

    def as_dict(self) -> dict[str, int]:
        return {"coordinator": self.coordinator, "api": self.api, "proxy": self.proxy}


@dataclass(frozen=True)
class Timeouts:
    """Seconds: a stage's deadline, and how long a check retries before it fails."""

    stage: float = setting("a stage's deadline in seconds", check=_positive)
    check: float = setting("how long a check retries, in seconds", check=_positive)


@dataclass(frozen=True)
class Database:
    name: str = setting("the database the stack's services use")
    user: str = setting("the database user")


@dataclass(frozen=True)
class SecretNames:
    """The names of the environment variables that hold the secrets (never the secrets themselves)."""

    db_password: str = setting("the variable that holds the database password", check=_variable)
    api_token: str = setting("the variable that holds the API token", check=_variable)

    def as_dict(self) -> dict[str, str]:
        return {"db_password": self.db_password, "api_token": self.api_token}


@dataclass(frozen=True)
class Rollback:
    purge_volumes: bool = setting(
        "whether a rollback of a first deploy also deletes its volumes (data is kept by default)", default=False
    )


SECRET_WORDS = {"db_password": "the database password", "api_token": "the API token"}


@dataclass(frozen=True, kw_only=True)
class Environment:
    """One validated environment: what the file says (the ``setting`` fields) and what is resolved from it."""

    compose_project: str = setting("the Compose project name (lowercase)", check=_project)
    compose_files: tuple[Path, ...] = setting(
        "compose files; the first is the base, later ones override it (your own stack, a site's ports)"
    )
    migrations_dir: Path = setting("the folder of SQL migrations, applied in name order")
    expected_workers: int = setting(
        "how many Citus workers the cluster must have (services worker-1 … worker-N)", check=_workers
    )
    docker_host: str = setting('the engine to use; "" is the local one (DOCKER_HOST or the default socket)')
    citus_image: str = setting(
        "the Citus image; where it cannot be pulled, real Citus is built from a source archive (--citus-source)"
    )
    ports: Ports = setting("coordinator, api, proxy: host ports, always published on 127.0.0.1 only")
    timeouts: Timeouts = setting("stage: a stage's deadline in seconds; check: how long a check retries")
    database: Database = setting("name, user")
    secrets: SecretNames = setting("the names of the environment variables that hold the secrets")
    rollback: Rollback = setting("purge_volumes: whether a rollback of a first deploy also deletes its volumes")
    generate_missing_secrets: bool = setting(
        "for throwaway environments: a missing secret is generated once and kept in .deploycheck/NAME/ (mode 0600)",
        default=False,
    )
    # Resolved by ``load``, not read from the file.
    name: str
    file: Path
    state_dir: Path
    secret_values: Mapping[str, Secret] = field(repr=False)

    @property
    def db_password(self) -> Secret:
        return self.secret_values["db_password"]

    @property
    def api_token(self) -> Secret:
        return self.secret_values["api_token"]

    @property
    def all_secrets(self) -> list[Secret]:
        return list(self.secret_values.values())

    @property
    def worker_services(self) -> list[str]:
        return [f"worker-{index}" for index in range(1, self.expected_workers + 1)]

    @property
    def node_services(self) -> list[str]:
        """The Citus nodes: the coordinator, then the workers."""
        return ["coordinator", *self.worker_services]

    @property
    def services(self) -> list[str]:
        """Every service of the stack: the nodes, the API and Nginx."""
        return [*self.node_services, "api", "nginx"]

    @property
    def lock_file(self) -> Path:
        return self.state_dir / "deploy.lock"

    @property
    def ledger_file(self) -> Path:
        return self.state_dir / "ledger.json"

    @property
    def configurations_dir(self) -> Path:
        """Each release's Compose configuration, kept for its rollback (``Compose.snapshot``)."""
        return self.state_dir / "configurations"

    @property
    def backups_dir(self) -> Path:
        return self.state_dir / "backups"

    @property
    def images_state_file(self) -> Path:
        """What each configured Citus image resolved to, per engine (beside the environments' state folders)."""
        return self.state_dir.parent / "images.json"


def read_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"the environment file {path} does not exist: create it or pass --environments=FILE.")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"the environment file {path} is not valid TOML ({error}): fix that line.") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"the environment file {path} cannot be read ({error}): fix its permissions.") from None


def environment_tables(path: Path, data: dict[str, Any]) -> dict[str, Any]:
    """The [environments.NAME] tables of a file, after checking the file's own shape."""
    unknown_top = sorted(set(data) - {"defaults", "environments"})
    if unknown_top:
        raise ConfigError(
            f"{path}: unknown table '{unknown_top[0]}'; the file holds only [defaults] and [environments.NAME]."
        )
    if not isinstance(data.get("defaults", {}), dict):
        raise ConfigError(f"{path}: 'defaults' must be a table ([defaults]), not {data['defaults']!r}.")
    tables = data.get("environments", {})
    if not isinstance(tables, dict) or not all(isinstance(t, dict) for t in tables.values()):
        raise ConfigError(f"{path}: 'environments' must hold tables ([environments.NAME]), not {tables!r}.")
    if not tables:
        raise ConfigError(f"{path} defines no environment: add an [environments.NAME] table.")
    return tables


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _secrets(where: str, environment: str, names: SecretNames, generate: bool, state_dir: Path) -> dict[str, Secret]:
    """Secrets from the environment variables the file names; generated once only where the file allows.

    Everything is checked before anything is generated, so a rejected file writes nothing.
    """
    found: dict[str, Secret | None] = {}
    for key, variable in names.as_dict().items():
        found[key] = secret_store.from_environment(variable)
        if found[key] is None and not generate:
            raise ConfigError(
                f"environment '{environment}' needs {SECRET_WORDS[key]} in ${variable}: export it and run again."
            )
    variables = names.as_dict()
    return {
        key: secret if secret is not None else secret_store.generated(variables[key], state_dir / key)
        for key, secret in found.items()
    }


def load_settings(path: Path, name: str, project_root: Path) -> Environment:
    """``load`` without the secrets (for set-up, which needs no secret and must make none)."""
    return load(path, name, project_root, with_secrets=False)


def load(path: Path, name: str, project_root: Path, *, with_secrets: bool = True) -> Environment:
    """Read ``path``, select environment ``name`` and validate everything about it."""
    data = read_file(path)
    tables = environment_tables(path, data)
    if name not in tables:
        raise ConfigError(f"unknown environment '{name}': choose one of {', '.join(tables)} (defined in {path}).")
    raw = _merge(data.get("defaults", {}), tables[name])
    where = f"{path.name} [environments.{name}]"
    state_dir = project_root / ".deploycheck" / name
    # Secrets are resolved last (after every check of the file), with a placeholder until then.
    environment = parse(
        Environment, raw, project_root, context=where, name=name, file=path, state_dir=state_dir, secret_values={}
    )
    ports = environment.ports.as_dict()
    if len(set(ports.values())) != len(ports):
        raise ConfigError(f"{where}: ports.coordinator, ports.api and ports.proxy must be three different ports.")
    for compose_file in environment.compose_files:
        if not compose_file.is_file():
            raise ConfigError(f"{where}: compose file {compose_file} does not exist; correct compose_files.")
    if not environment.compose_files:
        raise ConfigError(f"{where}: compose_files is empty; name at least one compose file.")
    if not environment.migrations_dir.is_dir():
        raise ConfigError(f"{where}: migrations_dir {environment.migrations_dir} is not a folder; correct it.")
    if not with_secrets:
        return environment
    values = _secrets(where, name, environment.secrets, environment.generate_missing_secrets, state_dir)
    return dataclasses.replace(environment, secret_values=values)
