"""One stack per tenant from one template, on the real engine (issue 19): three tenants of one template deployed
side by side, each in its own project, network, volumes and ports, none able to reach another's database (from
one tenant's API container, by name and by address); one rolled back and one torn down while the others keep
serving, and the template's list of its tenants saying so."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import requests

from tests.citus import CITUS_IMAGE
from tests.e2e.conftest import REFERENCE_CONTRACT, ROOT, build_broken_ready_api, remove_project

pytestmark = pytest.mark.e2e

TENANTS = ("a", "b", "c")
GOOD, BROKEN = "dclife-t1", "dclife-t2"
PORTS = "47700-47799"  # this helper's range


class Template:
    """The template ``store`` in an environment file of its own, and runs of deploycheck on its tenants."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.project = f"dclife-store-{os.getpid()}"
        self.file = directory / "environments.toml"

    def write(self, override: Path) -> None:
        files = [str(ROOT / "stack" / "compose.yaml"), str(override)]
        self.file.write_text(
            f"""
[environments.store]
compose_project = "{self.project}"
compose_files = {json.dumps(files)}
migrations_dir = "{ROOT / "stack" / "migrations"}"
check_modules = ["{ROOT / "stack" / "reference_checks"}"]
citus_image = "{CITUS_IMAGE}"
timeouts = {{ stage = 120, check = 10 }}
secrets = {{ db_password = "DCLIFE_STORE_DB_PASSWORD", api_token = "DCLIFE_STORE_API_TOKEN" }}
generate_missing_secrets = true
tenants = {{ ports = "{PORTS}", port_variables = ["COORDINATOR_PORT", "PROXY_PORT"] }}

[environments.store.stack.database]
worker_count = 1
{REFERENCE_CONTRACT.format(name="store")}"""
        )

    def run(self, environment: str, *args: str) -> subprocess.CompletedProcess[str]:
        reports = self.directory / "reports" / environment
        reports.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("DCLIFE_STORE_")}  # generated per tenant
        return subprocess.run(
            [
                str(ROOT / ".venv" / "bin" / "pytest"),
                f"--deploy={environment}",
                f"--environments={self.file}",
                f"--html={reports / 'report.html'}",
                f"--junitxml={reports / 'junit.xml'}",
                f"--summary-json={reports / 'summary.json'}",
                "-p",
                "no:cacheprovider",
                *args,
            ],
            cwd=ROOT,
            env={**env, "PYTHONUNBUFFERED": "1"},
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )

    def summary(self, environment: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.directory / "reports" / environment / "summary.json").read_text())
        return data

    def ports(self, tenant: str) -> dict[str, int]:
        registry = json.loads((self.directory / ".deploycheck" / "store" / "tenants.json").read_text())
        ports: dict[str, int] = registry["tenants"][tenant]["ports"]
        return ports

    def containers(self, tenant: str) -> dict[str, str]:
        found = docker.from_env().containers.list(
            all=True, filters={"label": f"com.docker.compose.project={self.project}-{tenant}"}
        )
        return {c.labels["com.docker.compose.service"]: c.id for c in found}

    def serving(self, tenant: str) -> str:
        """The release the tenant's API names through its proxy, once /ready answers 200 there."""
        proxy = self.ports(tenant)["PROXY_PORT"]
        assert requests.get(f"http://127.0.0.1:{proxy}/ready", timeout=10).status_code == 200
        release: str = requests.get(f"http://127.0.0.1:{proxy}/version", timeout=10).json()["release"]
        return release


@pytest.fixture
def template(tmp_path: Path) -> Iterator[Template]:
    client = docker.from_env()
    good = client.images.build(path=str(ROOT / "stack" / "api"), tag="deploycheck/api:dclife-reference", rm=True)[0]
    broken = build_broken_ready_api(tmp_path, "dclife-broken-ready")
    good.tag("deploycheck/api-e2e", tag=GOOD)
    client.images.get(broken).tag("deploycheck/api-e2e", tag=BROKEN)
    override = tmp_path / "releases.yaml"  # each release runs its own API image, as from a registry
    override.write_text("services:\n  api:\n    image: deploycheck/api-e2e:${RELEASE}\n    build: !reset null\n")
    case = Template(tmp_path)
    case.write(override)
    try:
        yield case
    finally:
        for tenant in TENANTS:
            remove_project(f"{case.project}-{tenant}")
        shutil.rmtree(tmp_path / ".deploycheck", ignore_errors=True)


def connects(container: Any, host: str, port: int) -> bool:
    """Whether a TCP connection from inside ``container`` to host:port is accepted (3 s at most)."""
    code, _ = container.exec_run(
        [
            "python3",
            "-c",
            "import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3).close()",
            host,
            str(port),
        ]
    )
    return bool(code == 0)


def test_three_tenants_side_by_side_isolated_one_rolled_back_one_torn_down(template: Template) -> None:
    for tenant in TENANTS:
        deployed = template.run(f"store-{tenant}", f"--release={GOOD}")
        assert deployed.returncode == 0, deployed.stdout[-5000:]
        summary = template.summary(f"store-{tenant}")
        assert summary["compose_project"] == f"{template.project}-{tenant}"
        assert summary["tenant"] == {"template": "store", "name": tenant}
    ports = {tenant: template.ports(tenant) for tenant in TENANTS}
    every = [port for given in ports.values() for port in given.values()]
    # Two each: the coordinator's and the proxy's (the API publishes on a port the engine picks).
    assert len(set(every)) == 2 * len(TENANTS) and all(47700 <= port <= 47799 for port in every), ports
    assert all(template.serving(tenant) == GOOD for tenant in TENANTS)

    listed = template.run("store", "--tenants")
    assert listed.returncode == 0, listed.stdout[-5000:]
    statuses = {t["tenant"]: (t["status"], t["release"], t["ports"]) for t in template.summary("store")["tenants"]}
    assert statuses == {tenant: ("running", GOOD, ports[tenant]) for tenant in TENANTS}

    # Each tenant's own network, volumes and generated secrets.
    client = docker.from_env()
    for tenant in TENANTS:
        project = f"{template.project}-{tenant}"
        networks = [n.name for n in client.networks.list(filters={"label": f"com.docker.compose.project={project}"})]
        assert networks == [f"{project}_default"]
        volumes = {v.name for v in client.volumes.list(filters={"label": f"com.docker.compose.project={project}"})}
        assert volumes == {f"{project}_coordinator-data", f"{project}_worker-1-data"}
    secrets = {(template.directory / ".deploycheck" / f"store-{t}" / "db_password").read_text() for t in TENANTS}
    assert len(secrets) == 3, "each tenant's database password is its own"

    # From one tenant's API container, another tenant's database cannot be reached: not by its name, not by its
    # address on its own network, not through the port it publishes on the host. Its own is.
    for tenant, other in (("a", "b"), ("b", "c"), ("c", "a")):
        api = client.containers.get(f"{template.project}-{tenant}-api-1")
        assert connects(api, "coordinator", 5432), f"{tenant}'s API reaches its own coordinator"
        theirs = client.containers.get(f"{template.project}-{other}-coordinator-1")
        address = theirs.attrs["NetworkSettings"]["Networks"][f"{template.project}-{other}_default"]["IPAddress"]
        gateway = api.attrs["NetworkSettings"]["Networks"][f"{template.project}-{tenant}_default"]["Gateway"]
        assert address and gateway
        assert not connects(api, theirs.name, 5432), f"{tenant} reaches {other}'s coordinator by its name"
        assert not connects(api, address, 5432), f"{tenant} reaches {other}'s coordinator at {address}"
        published = ports[other]["COORDINATOR_PORT"]
        assert not connects(api, gateway, published), f"{tenant} reaches {other}'s published port {published}"

    # A release that fails on tenant b is rolled back there; a and c keep running, untouched.
    others = {tenant: template.containers(tenant) for tenant in ("a", "c")}
    failed = template.run("store-b", f"--release={BROKEN}")
    assert failed.returncode == 1, failed.stdout[-5000:]
    rollback = template.summary("store-b")["rollback"]
    assert rollback["outcome"] == "passed" and rollback["restored_release"] == GOOD, rollback
    assert template.serving("b") == GOOD
    assert {tenant: template.containers(tenant) for tenant in ("a", "c")} == others
    assert template.serving("a") == GOOD and template.serving("c") == GOOD

    # Tenant c is torn down; a and b keep serving.
    kept = {tenant: template.containers(tenant) for tenant in ("a", "b")}
    torn = template.run("store-c", "--teardown")
    assert torn.returncode == 0, torn.stdout[-5000:]
    assert template.containers("c") == {}
    assert {tenant: template.containers(tenant) for tenant in ("a", "b")} == kept
    assert template.serving("a") == GOOD and template.serving("b") == GOOD
    verified = template.run("store-a", "--verify-only")
    assert verified.returncode == 0, verified.stdout[-5000:]
    assert template.summary("store-a")["diagnosis"]["healthy"] is True

    listed = template.run("store", "--tenants")
    assert listed.returncode == 0, listed.stdout[-5000:]
    after = {t["tenant"]: (t["status"], t["detail"]) for t in template.summary("store")["tenants"]}
    assert after == {"a": ("running", ""), "b": ("running", ""), "c": ("stopped", "torn down, its volumes kept")}
    assert template.ports("c") == ports["c"], "a torn-down tenant keeps its ports"
    for tenant in TENANTS:
        for password in secrets:
            assert (
                password.strip()
                not in (template.directory / "reports" / f"store-{tenant}" / "summary.json").read_text()
            )
