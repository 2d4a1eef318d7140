"""``docker compose`` for one environment's project: the team's files, the variables deploycheck passes, the
model Compose makes of them, and each release's own model (its images pinned), run by the target's runner.

The variables deploycheck passes to every Compose command (beside the process's own environment):
``RELEASE``; ``CITUS_IMAGE`` (the Citus image the release runs); ``DB_NAME``, ``DB_USER`` (the contract's
database); ``WORKER_COUNT`` and ``EXPECTED_WORKERS`` (its number of Citus workers); every secret as its key in
capitals (``DB_PASSWORD``, ``API_TOKEN``, ...) and under the variable the environment file names for it; the
environment's ``variables`` table as it is; ``COMPOSE_PROFILES`` with the generated workers' profile.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deploycheck.engine import commands
from deploycheck.engine.commands import CommandFailed, Result, Runner
from deploycheck.request.environment import Environment
from deploycheck.request.secrets import Secret

WORKERS_FILE_NAME = "workers.compose.json"
WORKERS_PROFILE = "citus-workers"  # the generated worker services' profile, active in every command


@dataclass(frozen=True)
class ServiceModel:
    """One service of the stack as Compose resolves it."""

    name: str
    image: str
    build_context: Path | None  # its build section's context folder; None without one
    dockerfile: str
    published: Mapping[int, tuple[str, int]]  # container port -> (host address, host port)
    container_name: str | None
    has_healthcheck: bool


@dataclass(frozen=True)
class ComposeModel:
    """The stack's services as ``docker compose config`` resolves them (variables interpolated): names, images,
    build folders and ports, never an environment value (where the secrets are)."""

    services: Mapping[str, ServiceModel]

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> ComposeModel:
        services = {}
        for name, service in (data.get("services") or {}).items():
            published: dict[int, tuple[str, int]] = {}
            for port in service.get("ports") or []:
                if isinstance(port, dict) and port.get("published"):
                    address = str(port.get("host_ip") or "0.0.0.0")
                    published[int(port["target"])] = (address, int(str(port["published"]).split("-")[0]))
            healthcheck = service.get("healthcheck") or {}
            build = service.get("build") or {}
            services[name] = ServiceModel(
                name=name,
                image=str(service.get("image") or f"{data.get('name', '')}-{name}"),
                build_context=Path(build["context"]) if build.get("context") else None,
                dockerfile=str(build.get("dockerfile") or "Dockerfile"),
                published=published,
                container_name=service.get("container_name"),
                has_healthcheck=bool(healthcheck) and not healthcheck.get("disable", False),
            )
        return cls(services)

    @property
    def names(self) -> list[str]:
        return list(self.services)

    @property
    def built(self) -> list[str]:
        """The services built from a build section."""
        return [name for name, service in self.services.items() if service.build_context is not None]

    def host_ports(self) -> dict[str, int]:
        """Every host port the stack publishes, by ``service:container port``."""
        return {f"{s.name}:{c}": host for s in self.services.values() for c, (_, host) in s.published.items()}


@dataclass(frozen=True)
class Compose:
    """One project's Compose model (its files and variables); each method is one ``docker compose`` command."""

    project: str
    files: tuple[Path, ...]
    runner: Runner
    project_directory: Path
    variables: Mapping[str, str] = field(default_factory=dict)
    secret_variables: Mapping[str, Secret] = field(default_factory=dict)

    def command(self, *args: str, timeout: float = 600) -> commands.Command:
        return commands.compose(
            self.project,
            self.files,
            args,
            project_directory=self.project_directory,
            env={**self.variables, "COMPOSE_PROFILES": WORKERS_PROFILE},
            secret_env=self.secret_variables,
            timeout=timeout,
        )

    def run(self, *args: str, timeout: float = 600, check: bool = True) -> Result:
        return self.runner.run(self.command(*args, timeout=timeout), check=check)

    def up(self, services: Sequence[str], timeout: float = 600) -> Result:
        # No --wait: deploycheck waits itself, per container, failing at once when one exits.
        return self.run("up", "--detach", "--no-deps", "--remove-orphans", *services, timeout=timeout)

    def down(self, remove_volumes: bool, timeout: float = 300) -> Result:
        return self.run("down", "--remove-orphans", *(["--volumes"] if remove_volumes else []), timeout=timeout)

    def stop(self, services: Sequence[str], timeout: float) -> Result:
        return self.run("stop", *services, timeout=timeout)

    def start(self, services: Sequence[str], timeout: float) -> Result:
        return self.run("start", *services, timeout=timeout)

    def build(self, services: Sequence[str], timeout: float) -> Result:
        return self.run("build", *services, timeout=timeout)

    def would_change(self, services: Sequence[str]) -> list[str]:
        """What ``up`` of ``services`` would do besides leaving running containers as they are (Compose's own
        dry run: a changed image or configuration shows as "Recreate", a stopped container as "Start")."""
        out = self.run("--dry-run", "up", "--detach", "--no-deps", "--remove-orphans", *services, timeout=60)
        return dry_run_changes(out.stdout + "\n" + out.stderr)

    def model(self) -> ComposeModel:
        """The services as Compose resolves them; invalid files raise ``CommandFailed`` with Compose's words."""
        return ComposeModel.of(self.run("config", "--format", "json", timeout=60).data())

    def uninterpolated(self) -> dict[str, Any]:
        """The configuration with its variables (and so secrets) left as ``${...}``: what ``snapshot`` pins."""
        data: dict[str, Any] = self.run("config", "--no-interpolate", "--format", "json", timeout=60).data()
        return data

    def snapshot(
        self, directory: Path, images: Mapping[str, str], uninterpolated: Mapping[str, Any] | None = None
    ) -> Path:
        """This configuration as one Compose file for a release: variables (and so secrets) left as ``${...}``,
        every service's image pinned to ``images`` and its build section dropped, so that the release runs
        exactly these images whenever it is brought back. Named by its content. ``uninterpolated``: this
        configuration as ``uninterpolated`` read it, when it was read already."""
        data = copy.deepcopy(dict(uninterpolated)) if uninterpolated is not None else self.uninterpolated()
        for name, service in (data.get("services") or {}).items():
            if name in images:
                service["image"] = images[name]
                service.pop("build", None)
        data.pop("name", None)  # the project is -p's
        text = json.dumps(data, indent=2, sort_keys=True) + "\n"
        path = directory / f"compose-{hashlib.sha256(text.encode()).hexdigest()[:16]}.json"
        if not path.exists():
            directory.mkdir(parents=True, exist_ok=True)
            temporary = path.with_suffix(".tmp")
            temporary.write_text(text)
            temporary.replace(path)
        return path


def dry_run_changes(output: str) -> list[str]:
    """The actions in the output of ``docker compose --dry-run up`` other than leaving a container running."""
    lines = [line.split("DRY-RUN MODE -", 1)[-1].strip() for line in output.splitlines()]
    return [line for line in lines if line and not line.endswith(" Running")]


def write_workers_file(environment: Environment, base_file: Path) -> Path:
    """The Compose override that declares one service per Citus worker the contract counts, each with its own
    volume, extending the contract's worker template (kept inactive by its profile) in the base file, so the
    node's definition lives in the compose file and only the count lives here."""
    database = environment.stack.database
    services = {
        name: {
            "extends": {"file": str(base_file), "service": database.worker_template},
            "profiles": [WORKERS_PROFILE],
            "hostname": name,
            "volumes": [f"{name}-data:/var/lib/postgresql/data"],
        }
        for name in database.worker_services
    }
    volumes: dict[str, dict[str, str]] = {f"{name}-data": {} for name in database.worker_services}
    path = environment.state_dir / WORKERS_FILE_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    content = json.dumps({"services": services, "volumes": volumes}, indent=2) + "\n"
    if not path.exists() or path.read_text() != content:
        path.write_text(content)
    return path


def variables_for(environment: Environment, release: str, citus_image: str) -> dict[str, str]:
    """The variables deploycheck passes to Compose (see the module's doc), secrets apart."""
    database = environment.stack.database
    workers = str(len(database.worker_services))
    return {
        **environment.variables,
        "RELEASE": release,
        "CITUS_IMAGE": citus_image,
        "DB_NAME": database.name,
        "DB_USER": database.user,
        "WORKER_COUNT": workers,
        "EXPECTED_WORKERS": workers,
    }


def secret_variables_for(environment: Environment) -> dict[str, Secret]:
    """Every secret, as its key in capitals and under the variable the environment file names for it."""
    found: dict[str, Secret] = {}
    for key, variable in environment.secrets.items():
        secret = environment.secret(key)
        found[key.upper()] = secret
        found[variable] = secret
    return found


def compose_for(
    environment: Environment,
    runner: Runner,
    release: str,
    citus_image: str,
    configuration: Path | None = None,
) -> Compose:
    """The Compose handle of an environment: its files (plus the generated workers file, when the contract
    counts workers from a template) and its variables; with ``configuration`` (a release's snapshot, see
    ``Compose.snapshot``) that file alone is the model."""
    base = environment.compose_files[0]
    if configuration is not None:
        files: tuple[Path, ...] = (configuration,)
    elif environment.stack.database.uses_worker_template:
        # The workers file right after the base file, so later files (overrides) can change a worker too.
        files = (base, write_workers_file(environment, base), *environment.compose_files[1:])
    else:
        files = environment.compose_files
    return Compose(
        project=environment.compose_project,
        files=files,
        runner=runner,
        project_directory=base.parent,
        variables=variables_for(environment, release, citus_image),
        secret_variables=secret_variables_for(environment),
    )


class ModelUnreadable(Exception):
    """The environment's compose files cannot be read by Compose: one sentence with Compose's words."""


def read_model(environment: Environment, runner: Runner, release: str) -> ComposeModel:
    """The stack's model before anything is built or started; read before anything changes, so invalid compose
    files (or no Compose) change nothing."""
    try:
        model = compose_for(environment, runner, release, environment.citus_image).model()
    except CommandFailed as error:
        if error.missing_program:
            raise ModelUnreadable(
                f"docker compose cannot run ({error}): run scripts/setup.sh, which installs it."
            ) from None
        words = str(error).rsplit(": ", 1)[-1].strip().splitlines()[-1] if str(error).strip() else ""
        raise ModelUnreadable(
            f"the compose files of environment '{environment.name}' are not valid ({words}): fix them and run again."
        ) from None
    missing = [s for s in environment.stack.services if s not in model.services]
    if missing:
        raise ModelUnreadable(
            f"the stack contract of environment '{environment.name}' names service '{missing[0]}', which its "
            f"compose files do not define: correct stack in {environment.file.name} or the compose files."
        )
    return model


__all__ = ["CommandFailed", "Compose", "ComposeModel", "ModelUnreadable", "ServiceModel", "compose_for", "read_model"]
