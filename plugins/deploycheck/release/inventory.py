"""What an environment has, read without changing anything: its backups (``--list-backups``), and a template's
tenants with the status of each one's stack (``--tenants``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import docker

from deploycheck.engine.containers import PROJECT_LABEL, State, project_containers, run_own_healthcheck
from deploycheck.record.life import BackupListed, TenantListed
from deploycheck.release.backup import MANIFEST, complete_backups
from deploycheck.release.ledger import Ledger, LedgerError
from deploycheck.release.running import runs
from deploycheck.request.environment import STATE_FOLDER, Environment


@dataclass(frozen=True)
class BackupFound:
    """A complete backup of the environment: its folder and what its manifest says."""

    folder: Path
    release: str
    taken_at: float
    bytes: int
    services: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.folder.name

    def listed(self) -> BackupListed:
        return BackupListed(self.name, self.release, self.taken_at, self.bytes, list(self.services))


def _read_backup(folder: Path) -> BackupFound:
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        return BackupFound(
            folder,
            str(manifest["release"]),
            float(manifest["taken_at"]),
            int(manifest["bytes"]),
            tuple(str(s) for s in manifest["services"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        size = sum(path.stat().st_size for path in folder.iterdir() if path.is_file())
        return BackupFound(folder, "unknown (its manifest cannot be read)", folder.stat().st_mtime, size, ())


def backups(environment: Environment) -> list[BackupFound]:
    """The environment's complete backups (in its state folder), newest first."""
    return [_read_backup(folder) for folder in reversed(complete_backups(environment.backups_dir))]


def backup_named(environment: Environment, name: str) -> BackupFound | None:
    return next((found for found in backups(environment) if found.name == name), None)


def _release_running(ledger: Ledger, containers: dict[str, object]) -> str | None:
    running = {service: str(getattr(c, "attrs", {}).get("Image", "")) for service, c in containers.items()}
    return next((r.id for r in reversed(ledger.releases()) if r.outcome == "passed" and runs(r, running)), None)


def tenant_status(
    client: docker.DockerClient, template: Environment, tenant: str, ports: dict[str, int]
) -> TenantListed:
    """A tenant's status: not deployed (nothing of it on the engine), running (every container running and
    healthy), stopped (no container running, or only its volumes left), or error (some are not)."""
    name = f"{template.name}-{tenant}"
    project = f"{template.compose_project}-{tenant}"
    containers = project_containers(client, project)
    ledger = Ledger(template.folder / STATE_FOLDER / name / "ledger.json")
    release: str | None = None
    detail = ""
    try:
        release = _release_running(ledger, dict(containers)) if containers else None
        actions = ledger.actions()
    except LedgerError as error:
        actions, detail = [], f"its ledger cannot be read: {error}"
    torn_down = bool(actions) and actions[-1].action == "teardown" and actions[-1].outcome == "passed"
    if not containers:
        volumes = client.volumes.list(filters={"label": f"{PROJECT_LABEL}={project}"})
        if volumes:
            status = "stopped"
            detail = detail or ("torn down, its volumes kept" if torn_down else "no container, its volumes kept")
        else:
            status = "not deployed"
            detail = detail or ("torn down, its volumes purged" if torn_down else "")
        return TenantListed(tenant, name, project, status, ports, None, detail)
    states = {service: State.of(container) for service, container in containers.items()}

    def healthy(service: str, state: State) -> bool:
        if state.status != "running":
            return False
        # Still "starting" by the engine's clock (its first check comes one interval after the start): its own
        # healthcheck, run now, says what the deploy's wait and the health check would.
        return state.health in ("healthy", None) or (
            state.health == "starting" and run_own_healthcheck(containers[service])
        )

    wrong = {service: state for service, state in states.items() if not healthy(service, state)}
    if not wrong:
        status = "running"
    elif all(state.status != "running" for state in states.values()):
        status = "stopped"
    else:
        status = "error"
    if wrong and not detail:
        detail = "; ".join(f"{service}: {state.describe()}" for service, state in sorted(wrong.items()))
    return TenantListed(tenant, name, project, status, ports, release, detail)


def tenants(client: docker.DockerClient, template: Environment) -> list[TenantListed]:
    """Every tenant the template gave ports to, with its status, by name."""
    variables = template.tenants.port_variables if template.tenants is not None else ()
    return [
        tenant_status(client, template, tenant, {v: ports[v] for v in sorted(ports, key=_order(variables))})
        for tenant, ports in template.tenant_registry.tenants().items()
    ]


def _order(variables: tuple[str, ...]) -> Callable[[str], tuple[int, str]]:
    """The template's port variables in its order (one it no longer names, after them)."""
    return lambda variable: (variables.index(variable) if variable in variables else len(variables), variable)
