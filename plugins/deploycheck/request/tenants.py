"""One stack per tenant from one template: an environment with a ``tenants`` table is a template, and
``--deploy=TEMPLATE-TENANT`` deploys its tenant TENANT as an environment of its own.

A tenant's environment is the template's with, in place of the template's: the Compose project
``PROJECT-TENANT`` (so its containers, network and volumes are its own), the state folder
``.deploycheck/TEMPLATE-TENANT/`` (its own ledger, lock, backups and generated secrets), each secret read from
the template's variable suffixed with ``_TENANT`` (``DEPLOYCHECK_STORE_DB_PASSWORD_42``; generated in its own
state folder where the template allows it), and a host port of its own for each of the template's
``tenants.port_variables``, taken from ``tenants.ports``.

The ports are recorded in the template's state folder (``.deploycheck/TEMPLATE/tenants.json``), under an OS
lock, so two tenants never get the same port, even when deployed at the same moment, and a tenant keeps its
ports from one deploy to the next. They are given the first time a tenant is deployed; every other run of a
tenant reads them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import socket
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from deploycheck.request.schema import ConfigError

TENANT_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")
REGISTRY_FILE = "tenants.json"
RANGE = re.compile(r"^([0-9]{1,5})-([0-9]{1,5})$")
# What a run does about a tenant's ports: a deploy gives a new tenant its ports; other runs read the recorded
# ones (a tenant never deployed has none: an error); set-up, which reads only the model's images, makes do with
# placeholders.
PortsWanted = Literal["allocate", "recorded", "placeholder"]


TENANT_WORDS = "lowercase letters, digits and '-', at most 32, starting with a letter or a digit"


def valid_tenant(tenant: str) -> bool:
    return TENANT_NAME.fullmatch(tenant) is not None


def port_range(text: str) -> tuple[int, int] | None:
    """``"47700-47799"`` -> (47700, 47799); None when it is not such a range of valid ports."""
    match = RANGE.fullmatch(text)
    if match is None:
        return None
    first, last = int(match.group(1)), int(match.group(2))
    return (first, last) if 1 <= first <= last <= 65535 else None


def split(name: str, templates: Sequence[str]) -> tuple[str, str] | None:
    """``store-42`` -> ("store", "42") when ``store`` is one of ``templates`` (the longest that fits); None
    when no template's name starts ``name``."""
    fitting = [t for t in templates if name.startswith(f"{t}-") and len(name) > len(t) + 1]
    if not fitting:
        return None
    template = max(fitting, key=len)
    return template, name[len(template) + 1 :]


def secret_variable(variable: str, tenant: str) -> str:
    """The variable that holds a tenant's secret: the template's, suffixed with the tenant (``_42``)."""
    return f"{variable}_{tenant.upper().replace('-', '_')}"


def port_is_free_here(port: int) -> bool:
    """Whether nothing listens on ``port`` of 127.0.0.1 on this machine (a new tenant's ports skip taken ones)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class PortRegistry:
    """The template's record of its tenants' ports: ``{"tenants": {TENANT: {"ports": {VAR: PORT}, "since": T}}}``."""

    def __init__(self, path: Path, template: str) -> None:
        self.path = path
        self.template = template

    def _read(self) -> dict[str, Any]:
        try:
            data: Any = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {"tenants": {}}
        except (OSError, ValueError) as error:
            raise ConfigError(
                f"the tenants' ports of template '{self.template}' ({self.path}) cannot be read ({error}): restore "
                "the file from a backup of the state folder, or move it aside (every tenant then gets new ports)."
            ) from None
        tenants = data.get("tenants") if isinstance(data, dict) else None
        valid = isinstance(tenants, dict) and all(
            isinstance(entry, dict)
            and isinstance(entry.get("ports"), dict)
            and all(isinstance(p, int) and not isinstance(p, bool) for p in entry["ports"].values())
            for entry in tenants.values()
        )
        if not valid:
            raise ConfigError(
                f"the tenants' ports of template '{self.template}' ({self.path}) are damaged (not shaped as "
                "deploycheck writes them): restore the file from a backup of the state folder, or move it aside."
            )
        result: dict[str, Any] = data
        return result

    def tenants(self) -> dict[str, dict[str, int]]:
        """Every tenant that was given ports, with them, by name."""
        return {name: dict(entry["ports"]) for name, entry in sorted(self._read()["tenants"].items())}

    def ports_of(self, tenant: str) -> dict[str, int] | None:
        return self.tenants().get(tenant)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """The registry's own OS lock, held only while ports are given (two tenants deployed at once)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path.with_name(f".{self.path.name}.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing the descriptor lets the lock go

    def _write(self, data: Mapping[str, Any]) -> None:
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, self.path)

    def allocate(
        self,
        tenant: str,
        variables: Sequence[str],
        ports: tuple[int, int],
        is_free: Callable[[int], bool] | None = None,
    ) -> dict[str, int]:
        """The tenant's port for each of ``variables``: its recorded ones, and for a variable it has none for,
        the lowest port of ``ports`` no tenant has and nothing listens on; recorded before this returns."""
        with self._locked():
            data = self._read()
            entry = data["tenants"].setdefault(tenant, {"ports": {}, "since": time.time()})
            given: dict[str, int] = entry["ports"]
            missing = [variable for variable in variables if variable not in given]
            if not missing:
                return dict(given)
            taken = {port for other in data["tenants"].values() for port in other["ports"].values()}
            first, last = ports
            free = is_free or port_is_free_here  # looked up now: a test gives a machine whose ports are all free
            candidates = (port for port in range(first, last + 1) if port not in taken and free(port))
            for variable in missing:
                port = next(candidates, None)
                if port is None:
                    raise ConfigError(
                        f"template '{self.template}' has no free port left in tenants.ports ({first}-{last}) for "
                        f"tenant '{tenant}': widen the range, or free ports held by other programs."
                    )
                given[variable] = port
            self._write(data)
            return dict(given)


def tenant_ports(
    registry: PortRegistry, tenant: str, variables: Sequence[str], ports: tuple[int, int], wanted: PortsWanted
) -> dict[str, int]:
    """The tenant's ports, as the run needs them (see ``PortsWanted``)."""
    if wanted == "allocate":
        return registry.allocate(tenant, variables, ports)
    recorded = registry.ports_of(tenant) or {}
    missing = [variable for variable in variables if variable not in recorded]
    if not missing:
        return {variable: recorded[variable] for variable in variables}
    if wanted == "placeholder":
        return {variable: recorded.get(variable, ports[0] + index) for index, variable in enumerate(variables)}
    raise ConfigError(
        f"tenant '{tenant}' of template '{registry.template}' was never deployed (it has no port for "
        f"{missing[0]} in {registry.path}): deploy it first with --deploy={registry.template}-{tenant}."
    )


def shared_resources(config: Mapping[str, Any], project: str) -> str | None:
    """What in a Compose model (``docker compose config --format json``) every tenant's project would share: a
    container name, or a network or volume named outright or external; None when Compose names all after the
    project."""
    for name, service in sorted((config.get("services") or {}).items()):
        if service.get("container_name"):
            return f"service {name} sets container_name {service['container_name']!r}"
    for kind in ("networks", "volumes"):
        for key, declared in sorted((config.get(kind) or {}).items()):
            declared = declared or {}
            if declared.get("external"):
                return f"the {kind[:-1]} {key} is external"
            given = str(declared.get("name") or "")
            if given and not given.startswith(f"{project}_"):
                return f"the {kind[:-1]} {key} is named {given!r}"
    return None
