"""Environments: one TOML file of named targets, validated into one immutable ``Environment``.

The classes below are the file's schema (``schema.setting`` fields: type, default, meaning), declared once.
An environment says where the stack runs (``docker_host``), which Compose project and files make it, and its
**stack contract** (``stack``): which service plays which role (the Citus coordinator and its workers, or one
PostgreSQL server; the HTTP services, with their liveness and readiness requests; the proxy in front). The
defaults describe the reference stack in stack/. Relative paths are read from the environment file's folder.

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
from types import MappingProxyType
from typing import Any, Literal

from deploycheck.request import secrets as secret_store
from deploycheck.request import tenants as tenancy
from deploycheck.request.schema import ConfigError, parse, setting
from deploycheck.request.secrets import Secret

DEFAULT_FILE = "environments.toml"
PROJECT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
SERVICE_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
VARIABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SECRET_KEY = re.compile(r"^[a-z][a-z0-9_]*$")
MAX_WORKERS = 32
STATE_FOLDER = ".deploycheck"
RESTORE_JOURNAL = "restore.json"  # in an environment's state folder (and a server's), while a restore is under way

__all__ = ["DEFAULT_FILE", "ConfigError", "Environment", "load"]


def _port(value: int) -> str | None:
    return None if 1 <= value <= 65535 else f"must be between 1 and 65535, not {value}"


def _positive(value: float) -> str | None:
    return None if value > 0 else f"must be a positive number of seconds, not {value}"


def _project(value: str) -> str | None:
    if PROJECT_NAME.match(value):
        return None
    return f"'{value}' must be lowercase letters, digits, '-' or '_', starting with a letter or digit"


def _service(value: str) -> str | None:
    return None if SERVICE_NAME.match(value) else f"'{value}' is not a Compose service name"


def _services(values: tuple[str, ...]) -> str | None:
    return next((problem for value in values if (problem := _service(value)) is not None), None)


def _workers(value: int) -> str | None:
    return None if 0 <= value <= MAX_WORKERS else f"must be between 0 and {MAX_WORKERS}, not {value}"


def _path(value: str) -> str | None:
    return None if value.startswith("/") else f"'{value}' must start with '/'"


def _routes(values: Mapping[str, str]) -> str | None:
    for service, prefix in values.items():
        if prefix != "" and not (prefix.startswith("/") and not prefix.endswith("/")):
            return f"'{prefix}' of {service} must be '' (the root) or start with '/' and not end with it"
    return None


def _secret_names(values: Mapping[str, str]) -> str | None:
    for key, variable in values.items():
        if not SECRET_KEY.match(key):
            return f"has the key '{key}': use lowercase letters, digits and '_' (like db_password)"
        if not VARIABLE_NAME.match(variable):
            return f"'{key}' must name an environment variable (like DEPLOYCHECK_{key.upper()}), not hold a value"
    if "db_password" not in values:
        return "must name the variable of db_password (the database password)"
    return None


def _variables(values: Mapping[str, str]) -> str | None:
    bad = next((name for name in values if not VARIABLE_NAME.match(name)), None)
    return None if bad is None else f"has '{bad}', which is not a variable name"


def _docker_host(value: str) -> str | None:
    if value == "" or value.startswith(("unix://", "tcp://")):
        return None
    if not value.startswith("ssh://"):
        return f"'{value}' must be \"\" (the local engine), unix://PATH, tcp://HOST:PORT or ssh://USER@HOST:PORT"
    from deploycheck.engine.ssh import SSHError, parse_destination  # the transport's own reading of the address

    try:
        parse_destination(value)
    except SSHError as error:
        return str(error).rstrip(".")
    return None


def _server_folder(value: str) -> str | None:
    if not value or any(c in value for c in "\n\r\x00") or value.startswith("~"):
        return f"'{value}' must be a folder on the server: absolute, or relative to the SSH user's home (no '~')"
    return None


def _registry(value: str) -> str | None:
    if value == "" or re.fullmatch(r"[A-Za-z0-9.-]+(:[0-9]{1,5})?", value):
        return None
    return f"'{value}' must be a registry's HOST or HOST:PORT (like 127.0.0.1:5000), or \"\" to ship images over SSH"


@dataclass(frozen=True)
class Server:
    """A stack on a server (``docker_host = "ssh://..."``): how it is reached, where its truth and images live."""

    ssh_config: Path | None = setting(
        "an ssh config file for this server (ssh -F FILE); default: your own ssh configuration", default=None
    )
    state_dir: str = setting(
        "the folder on the server holding the stack's lock, ledger, configurations and backups (relative: to the "
        "SSH user's home)",
        default=".deploycheck",
        check=_server_folder,
    )
    registry: str = setting(
        "a registry the images go through (HOST:PORT; one on this machine's loopback is reached from the server "
        'through the SSH connection); "" = the images the server lacks are shipped over SSH',
        default="",
        check=_registry,
    )
    copy_backups: bool = setting("keep a copy of each backup on this machine too", default=False)


# --- the stack contract -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """An HTTP request a check or a wait makes, and the status that means it passed."""

    path: str = setting("the path, from '/'", check=_path)
    method: str = setting("the method", default="GET")
    status: int = setting("the status that means it passed", default=200)


@dataclass(frozen=True)
class ReleaseProbe:
    """Where an HTTP service says which release it runs: a JSON field of a GET's answer."""

    path: str = setting("the path, from '/'", check=_path)
    field: str = setting("the JSON field that holds the release id")


@dataclass(frozen=True)
class Database:
    """The database role: a Citus coordinator and its workers, or one PostgreSQL server."""

    kind: Literal["citus", "postgres"] = setting("'citus' or 'postgres'", default="citus")
    service: str = setting(
        "the Compose service of the Citus coordinator, or of the PostgreSQL server",
        default="coordinator",
        check=_service,
    )
    workers: tuple[str, ...] = setting("Citus: the workers' services, by name", default=(), check=_services)
    worker_count: int = setting(
        "Citus, instead of workers: how many services worker-1 … worker-N deploycheck makes from worker_template",
        default=2,
        check=_workers,
    )
    worker_template: str = setting(
        "the Compose service (kept inactive by a profile) that worker-1 … worker-N extend",
        default="worker",
        check=_service,
    )
    port: int = setting("the port the database listens on inside its containers", default=5432, check=_port)
    name: str = setting("the database the stack's services use", default="deploycheck")
    user: str = setting("the database user", default="deploycheck")

    @property
    def is_citus(self) -> bool:
        return self.kind == "citus"

    @property
    def worker_services(self) -> list[str]:
        if not self.is_citus:
            return []
        if self.workers:
            return list(self.workers)
        return [f"worker-{index}" for index in range(1, self.worker_count + 1)]

    @property
    def uses_worker_template(self) -> bool:
        return self.is_citus and not self.workers and self.worker_count > 0

    @property
    def node_services(self) -> list[str]:
        """The database's services: the coordinator (or the server), then the workers."""
        return [self.service, *self.worker_services]


@dataclass(frozen=True)
class HttpService:
    """An HTTP service of the stack: its container port, how it is judged live and ready, its release."""

    service: str = setting("the Compose service", check=_service)
    port: int = setting("the port it listens on inside its container", check=_port)
    live: Request = setting("its liveness request", default=Request("/health"))
    ready: Request = setting("its readiness request (it must answer it once migrated)", default=Request("/ready"))
    release: ReleaseProbe | None = setting("where it says which release it runs (optional)", default=None)


@dataclass(frozen=True)
class FailureProbe:
    """A path of the proxy that proxies to a closed port, asked from inside the proxy's container only."""

    path: str = setting("the path, from '/'", check=_path)
    status: int = setting("the proxy's own error status", default=502)


@dataclass(frozen=True)
class Proxy:
    """The proxy in front of the HTTP services."""

    service: str = setting("the Compose service", default="nginx", check=_service)
    port: int = setting("the port it listens on inside its container", default=80, check=_port)
    health: Request = setting("its own health request", default=Request("/nginx-health"))
    routes: Mapping[str, str] = setting(
        "HTTP service -> the path prefix the proxy serves it under ('' = the root)",
        default=MappingProxyType({"api": ""}),
        check=_routes,
    )
    headers: Mapping[str, str] = setting(
        "headers every answer of the proxy carries, with their value ('' = any value)", default=MappingProxyType({})
    )
    config_test: tuple[str, ...] = setting("the command that tests its configuration", default=("nginx", "-t"))
    reload: tuple[str, ...] = setting(
        "the command that makes it take its upstreams anew (a graceful reload), run once the services it routes to "
        "were started or brought back; [] = none",
        default=("nginx", "-s", "reload"),
    )
    failure_probe: FailureProbe | None = setting(
        "a path that fails a real upstream connection, asked from inside the proxy (optional)", default=None
    )
    routes_file: str = setting(
        "the file in the proxy's container where deploycheck writes which container each route goes to (README: "
        "Zero downtime); '' = none: the services it routes to are replaced in place",
        default="/etc/nginx/deploycheck/routes.conf",
        check=lambda value: None if value == "" else _path(value),
    )


REFERENCE_HTTP = (
    HttpService(
        service="api",
        port=8000,
        live=Request("/health"),
        ready=Request("/ready"),
        release=ReleaseProbe("/version", "release"),
    ),
)


@dataclass(frozen=True)
class StackContract:
    """Which service plays which role (defaults: the reference stack in stack/)."""

    database: Database = setting("the database role", default=Database())
    http: tuple[HttpService, ...] = setting("the HTTP services", default=REFERENCE_HTTP)
    proxy: Proxy | None = setting(
        "the proxy in front of the HTTP services (false: the stack has none)", default=Proxy()
    )

    @property
    def http_services(self) -> list[str]:
        return [service.service for service in self.http]

    @property
    def services(self) -> list[str]:
        """Every service of the stack deploycheck deploys and checks: the database's, the HTTP ones, the proxy."""
        proxy = [self.proxy.service] if self.proxy is not None else []
        return [*self.database.node_services, *self.http_services, *proxy]

    def http_service(self, name: str) -> HttpService:
        return next(service for service in self.http if service.service == name)


@dataclass(frozen=True)
class HttpCheck:
    """A declarative HTTP check (as Goss's): a request to a service, and what its answer must be."""

    service: str = setting("the HTTP service", check=_service)
    path: str = setting("the path, from '/'", check=_path)
    method: str = setting("the method", default="GET")
    status: int = setting("the status it must answer", default=200)
    json: object = setting("a JSON subset its answer must contain (optional)", default=None)
    body: object = setting("a JSON body to send (optional)", default=None)
    headers: Mapping[str, str] = setting(
        "request headers; '{secret:NAME}' in a value is the secret NAME", default=MappingProxyType({})
    )
    via: Literal["direct", "proxy", "both"] = setting(
        "'direct', 'proxy' or 'both' (both: directly, and through the proxy where it routes the service)",
        default="both",
    )

    def ways(self, routed: bool) -> tuple[str, ...]:
        """How this check is sent: directly and/or through the proxy (``routed``: the proxy routes its service)."""
        if self.via == "both":
            return ("direct", "proxy") if routed else ("direct",)
        return (self.via,)


@dataclass(frozen=True)
class Timeouts:
    """Seconds: a stage's deadline, and how long a check may wait for what it checks to settle."""

    stage: float = setting("a stage's deadline in seconds", check=_positive)
    check: float = setting(
        "how long a check may wait for what it checks to settle (a container just restarted, a log line), in seconds",
        check=_positive,
    )


@dataclass(frozen=True)
class Rollback:
    purge_volumes: bool = setting(
        "whether a rollback of a first deploy also deletes its volumes (data is kept by default)", default=False
    )


def _port_range(value: str) -> str | None:
    if tenancy.port_range(value) is not None:
        return None
    return f"'{value}' must be a range of ports 'FIRST-LAST' (like \"47700-47799\"), each between 1 and 65535"


def _port_variables(values: tuple[str, ...]) -> str | None:
    if not values:
        return "must name at least one variable (the tenant's host ports, like API_PORT)"
    bad = next((name for name in values if not VARIABLE_NAME.match(name)), None)
    if bad is not None:
        return f"has '{bad}', which is not a variable name"
    doubled = next((name for name in values if values.count(name) > 1), None)
    return None if doubled is None else f"names '{doubled}' twice"


@dataclass(frozen=True)
class Tenants:
    """A template of tenants: ``--deploy=NAME-TENANT`` deploys tenant TENANT as a stack of its own."""

    ports: str = setting(
        "the host ports its tenants are given, 'FIRST-LAST' (published on 127.0.0.1)", check=_port_range
    )
    port_variables: tuple[str, ...] = setting(
        "the variables that get a port of their own per tenant (your compose files publish them)",
        check=_port_variables,
    )

    @property
    def port_range(self) -> tuple[int, int]:
        found = tenancy.port_range(self.ports)
        assert found is not None, "checked when the file was read"
        return found


SECRET_WORDS = {"db_password": "the database password"}


@dataclass(frozen=True, kw_only=True)
class Environment:
    """One validated environment: what the file says (the ``setting`` fields) and what is resolved from it."""

    compose_project: str = setting("the Compose project name (lowercase)", check=_project)
    compose_files: tuple[Path, ...] = setting(
        "compose files; the first is the base, later ones override it (a site's ports, a fault to test)"
    )
    migrations_dir: Path | None = setting(
        "the folder of SQL migrations, applied in name order (optional)", default=None
    )
    docker_host: str = setting(
        'the engine to use: "" is the local one (DOCKER_HOST or the default socket); ssh://USER@HOST:PORT a server',
        default="",
        check=_docker_host,
    )
    server: Server = setting("for a docker_host on ssh://: how the server is reached and keeps state", default=Server())
    citus_image: str = setting(
        "the Citus image the stack's CITUS_IMAGE names; where it cannot be pulled, real Citus is built from a "
        "source archive (--citus-source)",
        default="citusdata/citus:13.2",
    )
    stack: StackContract = setting("which service plays which role", default=StackContract())
    variables: Mapping[str, str] = setting(
        "variables passed to Compose as they are (your ports, your tags...)",
        default=MappingProxyType({}),
        check=_variables,
    )
    secrets: Mapping[str, str] = setting(
        "secret -> the environment variable that holds it; db_password is required", check=_secret_names
    )
    timeouts: Timeouts = setting(
        "stage: a stage's deadline in seconds; check: how long a check may wait for what it checks to settle"
    )
    rollback: Rollback = setting(
        "purge_volumes: whether a rollback of a first deploy also deletes its volumes", default=Rollback()
    )
    generate_missing_secrets: bool = setting(
        "for throwaway environments: a missing secret is generated once and kept in .deploycheck/NAME/ (mode 0600)",
        default=False,
    )
    check_modules: tuple[Path, ...] = setting(
        "your own check modules or folders, run after the built-in checks", default=()
    )
    http_checks: tuple[HttpCheck, ...] = setting("declarative HTTP checks", default=())
    tenants: Tenants | None = setting(
        "makes this environment a template of tenants: ports, the host ports they are given; port_variables, the "
        "variables each tenant gets one of (--deploy=NAME-TENANT deploys one)",
        default=None,
    )
    # Resolved by ``load``, not read from the file.
    name: str
    file: Path
    state_dir: Path
    secret_values: Mapping[str, Secret] = field(repr=False)
    template: str = ""  # a tenant's environment: its template's name ("" otherwise)
    tenant: str = ""  # a tenant's environment: its tenant's name

    @property
    def is_template(self) -> bool:
        """An environment with a ``tenants`` table: its tenants are deployed, never itself."""
        return self.tenants is not None and not self.tenant

    @property
    def tenant_registry(self) -> tenancy.PortRegistry:
        """Where a template records its tenants' ports (in the template's own state folder)."""
        template = self.template or self.name
        return tenancy.PortRegistry(self.folder / STATE_FOLDER / template / tenancy.REGISTRY_FILE, template)

    @property
    def on_server(self) -> bool:
        """The stack runs on a server reached over SSH (``docker_host = "ssh://..."``)."""
        return self.docker_host.startswith("ssh://")

    @property
    def folder(self) -> Path:
        """The environment file's folder: where relative paths, the release id and the state are read."""
        return self.file.parent

    @property
    def database(self) -> Database:
        return self.stack.database

    @property
    def db_password(self) -> Secret:
        return self.secret_values["db_password"]

    def secret(self, key: str) -> Secret:
        return self.secret_values[key]

    @property
    def all_secrets(self) -> list[Secret]:
        return list(self.secret_values.values())

    @property
    def worker_services(self) -> list[str]:
        return self.stack.database.worker_services

    @property
    def node_services(self) -> list[str]:
        """The database's services: the coordinator (or the server), then the workers."""
        return self.stack.database.node_services

    @property
    def services(self) -> list[str]:
        """Every service of the stack contract."""
        return self.stack.services

    @property
    def ledger_file(self) -> Path:
        return self.state_dir / "ledger.json"

    @property
    def restore_journal_file(self) -> Path:
        """There while a restore of the database is under way: what a killed run leaves for the next to finish."""
        return self.state_dir / RESTORE_JOURNAL

    @property
    def configurations_dir(self) -> Path:
        """Each release's Compose model, kept for its rollback (``Compose.snapshot``)."""
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


def _secrets(environment: str, names: Mapping[str, str], generate: bool, state_dir: Path) -> dict[str, Secret]:
    """Secrets from the environment variables the file names; generated once only where the file allows.

    Everything is checked before anything is generated, so a rejected file writes nothing.
    """
    found: dict[str, Secret | None] = {}
    for key, variable in names.items():
        found[key] = secret_store.from_environment(variable)
        if found[key] is None and not generate:
            what = SECRET_WORDS.get(key, f"the secret {key}")
            raise ConfigError(f"environment '{environment}' needs {what} in ${variable}: export it and run again.")
    return {
        key: secret if secret is not None else secret_store.generated(names[key], state_dir / key)
        for key, secret in found.items()
    }


def _check_contract(where: str, environment: Environment) -> None:
    """What no single key can say wrong: the roles' services against each other, the files on disk."""
    stack, database = environment.stack, environment.stack.database
    if database.is_citus and not database.worker_services:
        raise ConfigError(f"{where}: a Citus database needs workers: set stack.database.workers or worker_count.")
    if not database.is_citus and database.workers:
        raise ConfigError(f"{where}: a PostgreSQL database has no workers: remove stack.database.workers.")
    services = stack.services
    doubled = sorted({s for s in services if services.count(s) > 1})
    if doubled:
        raise ConfigError(f"{where}: service '{doubled[0]}' plays two roles in stack; give each role its own service.")
    if stack.proxy is not None:
        unknown = sorted(set(stack.proxy.routes) - set(stack.http_services))
        if unknown:
            raise ConfigError(
                f"{where}: stack.proxy.routes names '{unknown[0]}', which is not one of stack.http; add it there "
                "or remove the route."
            )
    routes = stack.proxy.routes if stack.proxy is not None else {}
    for check in environment.http_checks:
        if check.service not in stack.http_services:
            raise ConfigError(f"{where}: an http_checks entry names '{check.service}', which is not one of stack.http.")
        if check.via == "proxy" and check.service not in routes:
            raise ConfigError(
                f"{where}: an http_checks entry on {check.service} has via = 'proxy', but the proxy has no route to "
                f"{check.service}; add it to stack.proxy.routes or set via to 'direct'."
            )
    if not environment.compose_files:
        raise ConfigError(f"{where}: compose_files is empty; name at least one compose file.")
    for compose_file in environment.compose_files:
        if not compose_file.is_file():
            raise ConfigError(f"{where}: compose file {compose_file} does not exist; correct compose_files.")
    if environment.migrations_dir is not None and not environment.migrations_dir.is_dir():
        raise ConfigError(f"{where}: migrations_dir {environment.migrations_dir} is not a folder; correct it.")
    ssh_config = environment.server.ssh_config
    if ssh_config is not None and not ssh_config.is_file():
        raise ConfigError(f"{where}: server.ssh_config {ssh_config} does not exist; correct it or remove it.")
    for module in environment.check_modules:
        if not module.exists():
            raise ConfigError(f"{where}: check module {module} does not exist; correct check_modules.")
    tenants = environment.tenants
    if tenants is not None:
        fixed = next((name for name in tenants.port_variables if name in environment.variables), None)
        if fixed is not None and not environment.tenant:
            raise ConfigError(
                f"{where}: tenants.port_variables names {fixed}, which variables also sets; remove it from "
                "variables (each tenant gets a port of its own)."
            )
        first, last = tenants.port_range
        if last - first + 1 < len(tenants.port_variables):
            raise ConfigError(
                f"{where}: tenants.ports ({tenants.ports}) holds fewer ports than one tenant needs "
                f"({len(tenants.port_variables)}); widen it."
            )


def load_settings(path: Path, name: str) -> Environment:
    """``load`` without the secrets (for set-up, which needs no secret and must make none, nor give a tenant
    its ports)."""
    return load(path, name, with_secrets=False, tenant_ports="placeholder")


def _templates(data: dict[str, Any], tables: dict[str, Any]) -> list[str]:
    """The environments that are templates of tenants (a ``tenants`` table, theirs or their defaults')."""
    return [name for name, table in tables.items() if _merge(data.get("defaults", {}), table).get("tenants")]


def _unknown(name: str, path: Path, tables: dict[str, Any], templates: list[str]) -> ConfigError:
    tenants = "".join(f", or a tenant of {t} as {t}-NAME" for t in templates)
    return ConfigError(f"unknown environment '{name}': choose one of {', '.join(tables)}{tenants} (defined in {path}).")


def _tenant_of(template: Environment, tenant: str, ports: tenancy.PortsWanted, state_dir: Path) -> Environment:
    """The environment of ``tenant`` of the template: its own project, state folder, secrets and ports."""
    tenants = template.tenants
    assert tenants is not None, "only a template has tenants"
    given = tenancy.tenant_ports(template.tenant_registry, tenant, tenants.port_variables, tenants.port_range, ports)
    return dataclasses.replace(
        template,
        compose_project=f"{template.compose_project}-{tenant}",
        variables=MappingProxyType({**template.variables, **{v: str(p) for v, p in given.items()}}),
        secrets=MappingProxyType({k: tenancy.secret_variable(v, tenant) for k, v in template.secrets.items()}),
        state_dir=state_dir,
        template=template.name,
        tenant=tenant,
    )


def load(
    path: Path, name: str, *, with_secrets: bool = True, tenant_ports: tenancy.PortsWanted = "recorded"
) -> Environment:
    """Read ``path``, select environment ``name`` and validate everything about it. A name that is no table's
    but ``TEMPLATE-TENANT`` of a template is that tenant's environment; ``tenant_ports`` says whether a tenant is
    given its ports now (a deploy) or must have them already."""
    path = path.resolve() if path.is_file() else path
    data = read_file(path)
    tables = environment_tables(path, data)
    table, tenant = name, ""
    if name not in tables:
        templates = _templates(data, tables)
        found = tenancy.split(name, templates)
        if found is None:
            raise _unknown(name, path, tables, templates)
        table, tenant = found
        if not tenancy.valid_tenant(tenant):
            raise ConfigError(
                f"environment '{name}' names tenant '{tenant}' of template '{table}', which is not a valid tenant "
                f"name: use {tenancy.TENANT_WORDS}."
            )
    raw = _merge(data.get("defaults", {}), tables[table])
    where = f"{path.name} [environments.{table}]"
    state_dir = path.parent / STATE_FOLDER / name
    # Secrets are resolved last (after every check of the file), with none until then.
    environment = parse(
        Environment, raw, path.parent, context=where, name=table, file=path, state_dir=state_dir, secret_values={}
    )
    _check_contract(where, environment)
    if tenant:
        environment = dataclasses.replace(_tenant_of(environment, tenant, tenant_ports, state_dir), name=name)
    if not with_secrets or environment.is_template:  # a template is never deployed: its tenants have the secrets
        return environment
    values = _secrets(name, environment.secrets, environment.generate_missing_secrets, state_dir)
    return dataclasses.replace(environment, secret_values=values)
