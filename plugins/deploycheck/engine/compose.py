"""``docker compose`` for one environment's project: its files, its variables, run by the target's runner."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from deploycheck.engine import commands
from deploycheck.engine.commands import Result, Runner
from deploycheck.request.environment import Environment
from deploycheck.request.secrets import Secret

WORKERS_FILE_NAME = "workers.compose.json"
WORKERS_PROFILE = "citus-workers"  # the generated worker services' profile, active in every command


@dataclass(frozen=True)
class Compose:
    """One project's Compose model (its files and variables); each method is one ``docker compose`` command."""

    project: str
    files: tuple[Path, ...]
    runner: Runner
    variables: Mapping[str, str] = field(default_factory=dict)
    secret_variables: Mapping[str, Secret] = field(default_factory=dict)

    def command(self, *args: str, timeout: float = 600) -> commands.Command:
        return commands.compose(
            self.project,
            self.files,
            args,
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

    def would_change(self, services: Sequence[str]) -> list[str]:
        """What ``up`` of ``services`` would do besides leaving running containers as they are (Compose's own
        dry run: a changed image or configuration shows as "Recreate", a stopped container as "Start")."""
        out = self.run("--dry-run", "up", "--detach", "--no-deps", "--remove-orphans", *services, timeout=60)
        return dry_run_changes(out.stdout + "\n" + out.stderr)

    def snapshot(self, directory: Path) -> Path:
        """This configuration as one Compose file, variables (and so secrets) left as ``${...}``; named by its
        content, so a release's configuration can be brought back exactly by a rollback."""
        text = self.run("config", "--no-interpolate", timeout=60).stdout
        path = directory / f"compose-{hashlib.sha256(text.encode()).hexdigest()[:16]}.yaml"
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
    """The Compose override that declares one service per expected worker, each with its own volume.

    Workers extend the ``worker`` template of the base file (kept inactive by its profile), so the node's
    definition lives in the compose file and only the count lives here.
    """
    services = {
        name: {
            "extends": {"file": str(base_file), "service": "worker"},
            "profiles": [WORKERS_PROFILE],
            "hostname": name,
            "volumes": [f"{name}-data:/var/lib/postgresql/data"],
        }
        for name in environment.worker_services
    }
    volumes: dict[str, dict[str, str]] = {f"{name}-data": {} for name in environment.worker_services}
    path = environment.state_dir / WORKERS_FILE_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    content = json.dumps({"services": services, "volumes": volumes}, indent=2) + "\n"
    if not path.exists() or path.read_text() != content:
        path.write_text(content)
    return path


def compose_for(
    environment: Environment,
    runner: Runner,
    citus_image: str,
    release: str,
    images: Mapping[str, str],
    configuration: Path | None = None,
) -> Compose:
    """The Compose handle of an environment: its files plus the generated workers file, and its variables.

    With ``configuration`` (a release's snapshot, see ``Compose.snapshot``) that file alone is the model.
    """
    if configuration is not None:
        files: tuple[Path, ...] = (configuration,)
    else:
        base = environment.compose_files[0]
        # The workers file right after the base file, so later files (overrides) can change a worker too.
        files = (base, write_workers_file(environment, base), *environment.compose_files[1:])
    variables = {
        "CITUS_IMAGE": citus_image,
        "API_IMAGE": images.get("api", ""),
        "NGINX_IMAGE": images.get("nginx", ""),
        "RELEASE": release,
        "DB_NAME": environment.database.name,
        "DB_USER": environment.database.user,
        "EXPECTED_WORKERS": str(environment.expected_workers),
        "COORDINATOR_PORT": str(environment.ports.coordinator),
        "API_PORT": str(environment.ports.api),
        "PROXY_PORT": str(environment.ports.proxy),
    }
    return Compose(
        project=environment.compose_project,
        files=files,
        runner=runner,
        variables=variables,
        secret_variables={"DB_PASSWORD": environment.db_password, "API_TOKEN": environment.api_token},
    )
