"""Commands as data, one runner.

Every external command is built as an argument list in one place (``Compose``) and run by ``run`` here.
Secrets travel only in the child's environment, never on the command line, and any secret value that shows
up in output is masked before it is kept or raised.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from plugins.environment import Environment
from plugins.secrets import Secret, mask_text

log = logging.getLogger("deploycheck.commands")


class CommandFailed(Exception):
    """A command exited non-zero or timed out; the message says which and ends with its output (masked)."""

    def __init__(self, argv: Sequence[str], detail: str) -> None:
        super().__init__(f"`{' '.join(argv)}` {detail}")
        self.argv = list(argv)


@dataclass(frozen=True)
class Result:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str


def run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    secret_env: Mapping[str, Secret] | None = None,
    timeout: float = 600,
    check: bool = True,
    cwd: Path | None = None,
) -> Result:
    secret_env = secret_env or {}
    child_env = {**os.environ, **(env or {}), **{key: value.reveal() for key, value in secret_env.items()}}
    secrets = list(secret_env.values())
    log.info("run: %s", " ".join(argv))
    try:
        completed = subprocess.run(
            list(argv), env=child_env, capture_output=True, text=True, timeout=timeout, check=False, cwd=cwd
        )
    except subprocess.TimeoutExpired:
        raise CommandFailed(argv, f"did not finish within {timeout:.0f} s") from None
    except FileNotFoundError:
        raise CommandFailed(argv, f"cannot run: {argv[0]} is not installed") from None
    result = Result(
        list(argv), completed.returncode, mask_text(completed.stdout, secrets), mask_text(completed.stderr, secrets)
    )
    if check and result.returncode != 0:
        output = (result.stderr.strip() or result.stdout.strip())[-1500:]
        raise CommandFailed(argv, f"exited with {result.returncode}: {output}")
    return result


@dataclass(frozen=True)
class Compose:
    """``docker compose`` for one environment's project: argument lists built here, run by ``run``."""

    project: str
    files: tuple[Path, ...]
    variables: Mapping[str, str] = field(default_factory=dict)
    secret_variables: Mapping[str, Secret] = field(default_factory=dict)
    docker_host: str = ""

    def argv(self, *args: str) -> list[str]:
        files = [arg for path in self.files for arg in ("-f", str(path))]
        return ["docker", "compose", "-p", self.project, *files, *args]

    def run(self, *args: str, timeout: float = 600, check: bool = True) -> Result:
        env = {**self.variables, "COMPOSE_PROFILES": "citus-workers"}
        if self.docker_host:
            env["DOCKER_HOST"] = self.docker_host
        return run(self.argv(*args), env=env, secret_env=self.secret_variables, timeout=timeout, check=check)

    def up(self, services: Sequence[str], timeout: float = 600) -> Result:
        # No --wait: deploycheck waits itself, per container, failing at once when one exits.
        return self.run("up", "--detach", "--no-deps", "--remove-orphans", *services, timeout=timeout)

    def down(self, remove_volumes: bool, timeout: float = 300) -> Result:
        return self.run("down", "--remove-orphans", *(["--volumes"] if remove_volumes else []), timeout=timeout)

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


WORKERS_FILE_NAME = "workers.compose.json"


def write_workers_file(environment: Environment, base_file: Path) -> Path:
    """The Compose override that declares one service per expected worker, each with its own volume.

    Workers extend the ``worker`` template of the base file (kept inactive by its profile), so the node's
    definition lives in the compose file and only the count lives here.
    """
    services = {
        name: {
            "extends": {"file": str(base_file), "service": "worker"},
            "profiles": ["citus-workers"],
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
        "DB_NAME": environment.db_name,
        "DB_USER": environment.db_user,
        "EXPECTED_WORKERS": str(environment.expected_workers),
        "COORDINATOR_PORT": str(environment.ports.coordinator),
        "API_PORT": str(environment.ports.api),
        "PROXY_PORT": str(environment.ports.proxy),
    }
    return Compose(
        project=environment.compose_project,
        files=files,
        variables=variables,
        secret_variables={"DB_PASSWORD": environment.db_password, "API_TOKEN": environment.api_token},
        docker_host=environment.docker_host,
    )
