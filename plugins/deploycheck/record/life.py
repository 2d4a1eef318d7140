"""What a run found of the stack's life, or did to it by hand, for the reports: the diagnosis of every service
(``--verify-only``), the backups (``--list-backups``), the tenants of a template (``--tenants``), a teardown
(``--teardown``), a named backup put back (``--restore-backup``), and the tenant a run is about.

Part of the run record (``RunRecord.life``), written from it alone like the rest of the reports.
"""

from __future__ import annotations

import html
import time
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Connection:
    """One connection the diagnosis tried: from where, to what, whether it worked, and what it saw."""

    source: str  # "this machine", or the service whose container it was tried from
    to: str
    ok: bool | None  # None: not tried (the container has no HTTP client)
    detail: str = ""

    @property
    def mark(self) -> str:
        return "not tried" if self.ok is None else "ok" if self.ok else "FAILED"


@dataclass
class ServiceState:
    """One service of the running stack as the diagnosis found it."""

    container: str | None  # None: the service has no container
    status: str  # the container's status ("missing" without one)
    health: str | None = None
    last_health_check: str = ""  # the output of its last healthcheck (secrets masked), "" without one
    restarts: int = 0
    oom_killed: bool = False
    exit_code: int = 0
    ports: list[str] = field(default_factory=list)  # "127.0.0.1:47701->5432/tcp"
    image_id: str = ""
    release: str | None = None  # the ledger's release whose recorded image for this service it runs
    connectivity: list[Connection] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        data = asdict(self)
        data["connectivity"] = [
            {"from": c.source, "to": c.to, "ok": c.ok, "detail": c.detail} for c in self.connectivity
        ]
        return data


@dataclass
class BackupListed:
    name: str
    release: str  # the release it was taken for (a deploy's: the release being deployed, data from before it)
    taken_at: float
    bytes: int
    services: list[str] = field(default_factory=list)


@dataclass
class TenantListed:
    tenant: str
    environment: str  # TEMPLATE-TENANT, as --deploy names it
    compose_project: str
    status: str  # not deployed, running, stopped, error
    ports: dict[str, int] = field(default_factory=dict)
    release: str | None = None  # the ledger's release it runs, when it runs one
    detail: str = ""


@dataclass
class LifeRecord:
    services: dict[str, ServiceState] = field(default_factory=dict)
    diagnosed: bool = False
    ledger_release: str | None = None  # the ledger's current release, as the diagnosis read it
    problems: list[str] = field(default_factory=list)  # the diagnosis's, one line each, naming the service
    backups: list[BackupListed] | None = None  # --list-backups: newest first (None: not listed)
    tenants: list[TenantListed] | None = None  # --tenants (None: not listed)
    teardown: dict[str, Any] | None = None  # volumes ("kept", "purged"), removed (containers), refused
    restored_backup: dict[str, Any] | None = None  # name, release, taken_at, bytes, seconds
    template: str = ""  # the run is about a tenant of this template ("" otherwise)
    tenant: str = ""

    @property
    def failed(self) -> bool:
        """A diagnosis that found a problem fails the run (exit 1), as a failed check does."""
        return bool(self.problems)

    def summary(self) -> dict[str, Any]:
        """Its keys of the JSON summary."""
        return {
            "services": {name: state.summary() for name, state in self.services.items()},
            "diagnosis": {
                "healthy": not self.problems,
                "problems": self.problems,
                "ledger_release": self.ledger_release,
            }
            if self.diagnosed
            else None,
            "backups": None if self.backups is None else [asdict(b) for b in self.backups],
            "tenants": None if self.tenants is None else [asdict(t) for t in self.tenants],
            "teardown": self.teardown,
            "restored_backup": self.restored_backup,
            "tenant": {"template": self.template, "name": self.tenant} if self.tenant else None,
        }


def _when(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch))


def _size(count: int) -> str:
    return f"{count / 2**20:.1f} MiB"


def _state_words(state: ServiceState) -> str:
    words = [state.status] + ([f"health {state.health}"] if state.health else [])
    if state.status not in ("running", "missing"):
        words.append(f"exit code {state.exit_code}")
    words.append(f"restarts {state.restarts}")
    if state.oom_killed:
        words.append("OOM-killed")
    return ", ".join(words)


def terminal_lines(life: LifeRecord) -> list[str]:
    lines: list[str] = []
    if life.diagnosed:
        healthy = sum(1 for s in life.services.values() if not s.problems)
        lines.append(f"services: {healthy} of {len(life.services)} without a problem (ledger: {life.ledger_release})")
        for name, state in life.services.items():
            ports = ", ".join(state.ports) or "no published port"
            image = state.image_id.removeprefix("sha256:")[:12] or "no image"
            lines.append(f"  {name:<14} {_state_words(state)}; {ports}; release {state.release}; image {image}")
            for connection in state.connectivity:
                line = f"    {connection.source} -> {connection.to}: {connection.mark} {connection.detail}"
                lines.append(line.rstrip())
        lines.extend(f"  PROBLEM {problem}" for problem in life.problems)
    if life.backups is not None:
        lines.append(f"backups: {len(life.backups)}" + (", newest first" if life.backups else " (none yet)"))
        for backup in life.backups:
            when, size = _when(backup.taken_at), _size(backup.bytes)
            lines.append(f"  {backup.name}: release {backup.release}, {when}, {size}")
    if life.tenants is not None:
        lines.append(f"tenants: {len(life.tenants)}" + ("" if life.tenants else " (none deployed yet)"))
    for tenant in life.tenants or []:
        ports = ", ".join(f"{v}={p}" for v, p in tenant.ports.items())
        release = f", release {tenant.release}" if tenant.release else ""
        detail = f" ({tenant.detail})" if tenant.detail else ""
        lines.append(f"  tenant {tenant.tenant:<12} {tenant.status}{detail}{release}; ports {ports}")
    if life.teardown is not None:
        teardown = life.teardown
        if teardown.get("refused"):
            lines.append(str(teardown["refused"]))
        else:
            removed = len(teardown.get("removed", []))
            lines.append(f"teardown: removed {removed} containers; volumes {teardown['volumes']}")
    if life.restored_backup is not None:
        restored = life.restored_backup
        lines.append(
            f"restored backup {restored['name']} (release {restored['release']}, {_when(restored['taken_at'])}, "
            f"{_size(restored['bytes'])}) in {restored['seconds']:.1f} s"
        )
    return lines


def html_blocks(life: LifeRecord) -> list[str]:
    """Its blocks of the HTML report, above the results table."""
    blocks: list[str] = []
    if life.diagnosed:
        rows = []
        for name, state in life.services.items():
            connections = "<br>".join(
                html.escape(f"{c.source} -> {c.to}: {c.mark} {c.detail}".rstrip()) for c in state.connectivity
            )
            problems = "<br>".join(html.escape(p) for p in state.problems)
            colour = "#c62828" if state.problems else "#2e7d32"
            rows.append(
                f'<tr><td>{html.escape(name)}</td><td style="color:{colour}">{html.escape(_state_words(state))}</td>'
                f"<td>{html.escape(', '.join(state.ports))}</td><td>{html.escape(str(state.release))}</td>"
                f"<td>{html.escape(state.image_id[:19])}</td><td>{html.escape(state.last_health_check)}</td>"
                f"<td>{connections}</td><td>{problems}</td></tr>"
            )
        verdict = "no problem" if not life.problems else f"{len(life.problems)} problem(s)"
        blocks += [
            f"<h3>Services ({html.escape(verdict)}; the ledger's release: {html.escape(str(life.ledger_release))})</h3>",
            '<table id="deploycheck-services"><thead><tr><th>Service</th><th>State</th><th>Ports</th>'
            "<th>Release</th><th>Image</th><th>Last health check</th><th>Connectivity</th><th>Problems</th></tr>"
            f"</thead><tbody>{''.join(rows)}</tbody></table>",
        ]
    if life.backups is not None:
        rows = [
            f"<tr><td>{html.escape(b.name)}</td><td>{html.escape(b.release)}</td><td>{_when(b.taken_at)}</td>"
            f"<td>{_size(b.bytes)}</td></tr>"
            for b in life.backups
        ]
        blocks += [
            "<h3>Backups (newest first)</h3>",
            '<table id="deploycheck-backups"><thead><tr><th>Name</th><th>Release</th><th>Taken</th><th>Size</th>'
            f"</tr></thead><tbody>{''.join(rows)}</tbody></table>",
        ]
    if life.tenants is not None:
        rows = [
            f"<tr><td>{html.escape(t.tenant)}</td><td>{html.escape(t.status)}</td><td>{html.escape(t.detail)}</td>"
            f"<td>{html.escape(', '.join(f'{v}={p}' for v, p in t.ports.items()))}</td>"
            f"<td>{html.escape(t.release or '')}</td><td>{html.escape(t.compose_project)}</td></tr>"
            for t in life.tenants
        ]
        blocks += [
            "<h3>Tenants</h3>",
            '<table id="deploycheck-tenants"><thead><tr><th>Tenant</th><th>Status</th><th>Detail</th><th>Ports</th>'
            f"<th>Release</th><th>Compose project</th></tr></thead><tbody>{''.join(rows)}</tbody></table>",
        ]
    blocks += [
        f'<p class="deploycheck-life">{html.escape(line)}</p>'
        for line in terminal_lines(LifeRecord(teardown=life.teardown, restored_backup=life.restored_backup))
    ]
    return blocks
