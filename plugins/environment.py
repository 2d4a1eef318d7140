"""Environments: one TOML file of named targets, validated into one immutable ``Environment``.

Every problem is a ``ConfigError`` whose message is one sentence saying what is wrong and how to fix it.
Secrets are never written in the file: it names the environment variables that hold them.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plugins import secrets as secret_store
from plugins.secrets import Secret

DEFAULT_FILE = "environments.toml"
PROJECT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


class ConfigError(Exception):
    """A user error in the environment file or the options: one sentence, no traceback."""


@dataclass(frozen=True)
class Ports:
    """Host ports, published on 127.0.0.1 only."""

    coordinator: int
    api: int
    proxy: int

    def as_dict(self) -> dict[str, int]:
        return {"coordinator": self.coordinator, "api": self.api, "proxy": self.proxy}


@dataclass(frozen=True)
class Timeouts:
    """Seconds: a stage's deadline, and how long a check retries before it fails."""

    stage: float
    check: float


@dataclass(frozen=True)
class Environment:
    name: str
    file: Path
    compose_project: str
    compose_files: tuple[Path, ...]
    migrations_dir: Path
    expected_workers: int
    docker_host: str
    ports: Ports
    timeouts: Timeouts
    db_name: str
    db_user: str
    db_password: Secret = field(repr=False)
    api_token: Secret = field(repr=False)
    citus_image: str
    purge_volumes_on_rollback: bool
    state_dir: Path

    @property
    def secrets(self) -> list[Secret]:
        return [self.db_password, self.api_token]

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
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.api}"

    @property
    def proxy_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.proxy}"


# key -> (type, required); defaults live in the file's [defaults] table, so the file is the one place to read.
_SCHEMA: dict[str, type] = {
    "compose_project": str,
    "compose_files": list,
    "migrations_dir": str,
    "expected_workers": int,
    "docker_host": str,
    "ports": dict,
    "timeouts": dict,
    "database": dict,
    "secrets": dict,
    "citus_image": str,
    "rollback": dict,
    "generate_missing_secrets": bool,
}
_SUBKEYS: dict[str, dict[str, type]] = {
    "ports": {"coordinator": int, "api": int, "proxy": int},
    "timeouts": {"stage": float, "check": float},
    "database": {"name": str, "user": str},
    "secrets": {"db_password": str, "api_token": str},
    "rollback": {"purge_volumes": bool},
}


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _check_type(where: str, key: str, value: object, expected: type) -> None:
    ok = isinstance(value, expected) and not (expected is int and isinstance(value, bool))
    if expected is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok:
        raise ConfigError(f"{where}: '{key}' must be a {expected.__name__}, not {value!r}; correct it in the file.")


def read_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"the environment file {path} does not exist: create it or pass --environments=FILE.")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"the environment file {path} is not valid TOML ({error}): fix that line.") from None


def environment_names(data: dict[str, Any]) -> list[str]:
    return list(data.get("environments", {}))


_SECRET_WORDS = {"db_password": "the database password", "api_token": "the API token"}


def _secrets(where: str, environment: str, names: dict[str, str], generate: bool, state_dir: Path) -> dict[str, Secret]:
    """Secrets from the environment variables the file names; generated once only where the file allows.

    Everything is checked before anything is generated, so a rejected file writes nothing.
    """
    found: dict[str, Secret | None] = {}
    for key, variable in names.items():
        if not re.match(r"^[A-Z_][A-Z0-9_]*$", variable):
            raise ConfigError(
                f"{where}: secrets.{key} must name an environment variable (like DEPLOYCHECK_{key.upper()}), not hold a value."
            )
        found[key] = secret_store.from_environment(variable)
        if found[key] is None and not generate:
            raise ConfigError(
                f"environment '{environment}' needs {_SECRET_WORDS[key]} in ${variable}: export it and run again."
            )
    return {
        key: secret if secret is not None else secret_store.generated(names[key], state_dir / key)
        for key, secret in found.items()
    }


def load(path: Path, name: str, project_root: Path) -> Environment:
    """Read ``path``, select environment ``name`` and validate everything about it."""
    data = read_file(path)
    unknown_top = set(data) - {"defaults", "environments"}
    if unknown_top:
        raise ConfigError(
            f"{path}: unknown table '{sorted(unknown_top)[0]}'; the file holds only [defaults] and [environments.NAME]."
        )
    names = environment_names(data)
    if not names:
        raise ConfigError(f"{path} defines no environment: add an [environments.NAME] table.")
    if name not in names:
        raise ConfigError(f"unknown environment '{name}': choose one of {', '.join(names)} (defined in {path}).")
    raw = _merge(data.get("defaults", {}), data["environments"][name])
    where = f"{path.name} [environments.{name}]"
    for key, value in raw.items():
        if key not in _SCHEMA:
            raise ConfigError(f"{where}: unknown key '{key}'; valid keys are {', '.join(sorted(_SCHEMA))}.")
        _check_type(where, key, value, _SCHEMA[key])
        for subkey, subvalue in value.items() if key in _SUBKEYS else []:
            if subkey not in _SUBKEYS[key]:
                raise ConfigError(
                    f"{where}: unknown key '{key}.{subkey}'; valid keys are {', '.join(sorted(_SUBKEYS[key]))}."
                )
            _check_type(where, f"{key}.{subkey}", subvalue, _SUBKEYS[key][subkey])
    missing = [key for key in _SCHEMA if key not in raw and key not in ("generate_missing_secrets",)]
    missing += [f"{key}.{sub}" for key in _SUBKEYS if key in raw for sub in _SUBKEYS[key] if sub not in raw[key]]
    if missing:
        raise ConfigError(f"{where}: '{missing[0]}' is not set; set it there or in [defaults].")

    project = raw["compose_project"]
    if not PROJECT_NAME.match(project):
        raise ConfigError(
            f"{where}: compose_project '{project}' must be lowercase letters, digits, '-' or '_', starting with a letter or digit."
        )
    workers = raw["expected_workers"]
    if not 1 <= workers <= 32:
        raise ConfigError(f"{where}: expected_workers must be between 1 and 32, not {workers}.")
    ports = Ports(**raw["ports"])
    for port_name, port in ports.as_dict().items():
        if not 1 <= port <= 65535:
            raise ConfigError(f"{where}: ports.{port_name} must be between 1 and 65535, not {port}.")
    if len(set(ports.as_dict().values())) != 3:
        raise ConfigError(f"{where}: ports.coordinator, ports.api and ports.proxy must be three different ports.")
    timeouts = Timeouts(stage=float(raw["timeouts"]["stage"]), check=float(raw["timeouts"]["check"]))
    if timeouts.stage <= 0 or timeouts.check <= 0:
        raise ConfigError(f"{where}: timeouts must be positive numbers of seconds.")

    compose_files = tuple((project_root / f).resolve() for f in raw["compose_files"])
    for compose_file in compose_files:
        if not compose_file.is_file():
            raise ConfigError(f"{where}: compose file {compose_file} does not exist; correct compose_files.")
    migrations_dir = (project_root / raw["migrations_dir"]).resolve()
    if not migrations_dir.is_dir():
        raise ConfigError(f"{where}: migrations_dir {migrations_dir} is not a folder; correct it.")

    state_dir = project_root / ".deploycheck" / name
    secrets = _secrets(where, name, raw["secrets"], raw.get("generate_missing_secrets", False), state_dir)

    return Environment(
        name=name,
        file=path,
        compose_project=project,
        compose_files=compose_files,
        migrations_dir=migrations_dir,
        expected_workers=workers,
        docker_host=raw["docker_host"],
        ports=ports,
        timeouts=timeouts,
        db_name=raw["database"]["name"],
        db_user=raw["database"]["user"],
        db_password=secrets["db_password"],
        api_token=secrets["api_token"],
        citus_image=raw["citus_image"],
        purge_volumes_on_rollback=raw["rollback"]["purge_volumes"],
        state_dir=state_dir,
    )
