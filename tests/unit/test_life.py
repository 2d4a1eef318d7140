"""The stack's life besides a deploy (issue 19), its pure parts and its runs on the fake engine: the modes and
their options, the ledger's actions, a template's tenants (names, environments, ports recorded so they never
collide), the diagnosis of a verify-only run, a teardown (and its refusal when the backup fails), the backups
listed and a restore by name refused, and a template's tenants listed with their status."""

from __future__ import annotations

import json
import multiprocessing
import time
from pathlib import Path
from typing import Any

import pytest

from deploycheck.record.life import LifeRecord, ServiceState
from deploycheck.record.record import RunRecord
from deploycheck.release.ledger import Action, Ledger, LedgerDamaged
from deploycheck.request import options, tenants
from deploycheck.request.environment import ConfigError, load
from deploycheck.request.schema import ConfigError as SchemaConfigError
from tests.unit.conftest import commands_run, ledger_with_release_a, make_project
from tests.unit.test_plugin import lock_files, state_dir, summary

# --- the modes --------------------------------------------------------------------------------------------


def test_one_mode_per_run_and_the_teardown_options_go_with_teardown_only() -> None:
    assert options.mode_of({}) == "deploy"
    assert options.mode_of({"teardown": True, "verify-only": False}) == "teardown"
    with pytest.raises(SchemaConfigError, match=r"^--verify-only and --backup exclude each other: use one of them\.$"):
        options.mode_of({"backup": True, "verify-only": True})
    options.teardown_options("teardown", no_backup=True, purge_volumes=True)
    with pytest.raises(SchemaConfigError, match=r"^--no-backup applies to --teardown only: add --teardown, or"):
        options.teardown_options("deploy", no_backup=True, purge_volumes=False)
    with pytest.raises(SchemaConfigError, match=r"^--purge-volumes applies to --teardown only"):
        options.teardown_options("backup", no_backup=False, purge_volumes=True)


# --- the ledger's actions ---------------------------------------------------------------------------------


def test_a_teardown_that_passed_leaves_no_release_current_and_every_action_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "ledger.json"
    path.write_text(json.dumps({"current": "A", "releases": [LEDGER_ENTRY]}))
    ledger = Ledger(path)
    ledger.record_action(Action("backup", 1.0, "A", "passed", "20260101-000000-A"))
    assert ledger.current() is not None, "a backup changes nothing of what runs"
    ledger.record_action(Action("teardown", 2.0, "A", "failed", "", "teardown refused: the backup failed"))
    assert ledger.current() is not None, "a refused teardown removed nothing"
    ledger.record_action(Action("teardown", 3.0, "A", "passed", "20260101-000100-A", "volumes kept"))
    assert ledger.current() is None, "the stack no longer runs a release"
    assert ledger.good("A") is not None, "the release stays one a rollback can bring back"
    assert [(a.action, a.outcome) for a in ledger.actions()] == [
        ("backup", "passed"),
        ("teardown", "failed"),
        ("teardown", "passed"),
    ]


LEDGER_ENTRY = {
    "id": "A",
    "started_at": 1.0,
    "images": {},
    "image_ids": {"api": "sha256:a"},
    "citus_image": "",
    "outcome": "passed",
}


@pytest.mark.parametrize(
    ("actions", "what"),
    [
        ({"teardown": True}, "'actions' is an object, not a list"),
        (["teardown"], "action #1 is a string, not an object"),
        ([{"action": "purge", "at": 1.0, "release": "A", "outcome": "passed"}], "action #1: 'action' is a string"),
        ([{"action": "backup", "release": "A", "outcome": "passed"}], "action #1 has no 'at'"),
        ([{"action": "backup", "at": 1, "release": "A", "outcome": "ok"}], "action #1: 'outcome' is a string, not"),
        ([{"action": "backup", "at": 1, "release": "A", "outcome": "passed", "who": "me"}], "unknown field 'who'"),
    ],
)
def test_a_damaged_action_is_a_damaged_ledger(tmp_path: Path, actions: object, what: str) -> None:
    path = tmp_path / "ledger.json"
    path.write_text(json.dumps({"current": "A", "releases": [LEDGER_ENTRY], "actions": actions}))
    with pytest.raises(LedgerDamaged) as raised:
        Ledger(path).check()
    assert what in raised.value.what


# --- a template's tenants ---------------------------------------------------------------------------------

TEMPLATE = """
[environments.store]
compose_project = "unit-store"
compose_files = ["compose.yaml"]
timeouts = { stage = 30, check = 5 }
variables = { SITE = "eu" }
secrets = { db_password = "UNIT_STORE_DB_PASSWORD", api_token = "UNIT_STORE_API_TOKEN" }
generate_missing_secrets = true
tenants = { ports = "47850-47859", port_variables = ["COORDINATOR_PORT", "API_PORT", "PROXY_PORT"] }

[environments.store-eu]
compose_project = "unit-store-eu-table"
compose_files = ["compose.yaml"]
timeouts = { stage = 30, check = 5 }
secrets = { db_password = "UNIT_STORE_DB_PASSWORD" }
tenants = { ports = "47860-47869", port_variables = ["API_PORT"] }
"""


def test_a_tenant_is_named_after_the_longest_template_that_starts_it() -> None:
    assert tenants.split("store-42", ["store", "shop"]) == ("store", "42")
    assert tenants.split("store-eu-1", ["store", "store-eu"]) == ("store-eu", "1")
    assert tenants.split("store-", ["store"]) is None and tenants.split("storefront", ["store"]) is None
    assert [t for t in ("42", "eu-1", "a", "x" * 32) if tenants.valid_tenant(t)] == ["42", "eu-1", "a", "x" * 32]
    assert not [t for t in ("A", "-a", "a_b", "a.b", "x" * 33, "") if tenants.valid_tenant(t)]
    assert tenants.secret_variable("DEPLOYCHECK_STORE_DB_PASSWORD", "eu-1") == "DEPLOYCHECK_STORE_DB_PASSWORD_EU_1"
    assert tenants.port_range("47700-47799") == (47700, 47799)
    assert tenants.port_range("47799-47700") is None and tenants.port_range("0-10") is None


def test_a_tenant_gets_its_own_project_state_secrets_and_ports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Every port free: an outgoing connection of another process may hold one of these for a moment here.
    monkeypatch.setattr(tenants, "port_is_free_here", lambda port: True)
    path = make_project(tmp_path, TEMPLATE)
    tenant = load(path, "store-42", tenant_ports="allocate")
    assert (tenant.name, tenant.template, tenant.tenant) == ("store-42", "store", "42")
    assert tenant.compose_project == "unit-store-42" and not tenant.is_template
    assert tenant.state_dir == tmp_path / ".deploycheck" / "store-42"
    assert dict(tenant.secrets) == {
        "db_password": "UNIT_STORE_DB_PASSWORD_42",
        "api_token": "UNIT_STORE_API_TOKEN_42",
    }
    assert (tenant.state_dir / "db_password").is_file(), "its secret is generated in its own state folder"
    assert dict(tenant.variables) == {
        "SITE": "eu",
        "COORDINATOR_PORT": "47850",
        "API_PORT": "47851",
        "PROXY_PORT": "47852",
    }
    other = load(path, "store-43", tenant_ports="allocate")
    assert [other.variables[v] for v in ("COORDINATOR_PORT", "API_PORT", "PROXY_PORT")] == ["47853", "47854", "47855"]
    assert other.db_password != tenant.db_password, "each tenant's generated password is its own"
    again = load(path, "store-42")  # any later run: its recorded ports
    assert again.variables == tenant.variables and again.db_password == tenant.db_password
    recorded = json.loads((tmp_path / ".deploycheck" / "store" / "tenants.json").read_text())
    assert {name: entry["ports"]["API_PORT"] for name, entry in recorded["tenants"].items()} == {
        "42": 47851,
        "43": 47854,
    }
    assert load(path, "store", with_secrets=False).is_template
    explicit = load(path, "store-eu", with_secrets=False)  # a table of that name is itself, not a tenant of store
    assert explicit.compose_project == "unit-store-eu-table" and explicit.is_template


def test_a_tenant_name_or_a_tenant_never_deployed_is_one_sentence(tmp_path: Path) -> None:
    path = make_project(tmp_path, TEMPLATE)
    with pytest.raises(ConfigError, match=r"^environment 'store-Big' names tenant 'Big' of template 'store', which"):
        load(path, "store-Big", tenant_ports="allocate")
    with pytest.raises(ConfigError, match=r"^unknown environment 'shop-1': choose one of store, store-eu, or a tenant"):
        load(path, "shop-1")
    with pytest.raises(ConfigError, match=r"^tenant '7' of template 'store' was never deployed .*--deploy=store-7\.$"):
        load(path, "store-7")
    assert not (tmp_path / ".deploycheck" / "store").exists(), "a refused run gives no tenant its ports"


def test_ports_skip_those_taken_and_run_out_in_one_sentence(tmp_path: Path) -> None:
    registry = tenants.PortRegistry(tmp_path / "tenants.json", "store")
    busy = {47001}
    assert registry.allocate("a", ["P", "Q"], (47000, 47004), lambda port: port not in busy) == {"P": 47000, "Q": 47002}
    assert registry.allocate("a", ["P", "Q", "R"], (47000, 47004), lambda port: True) == {
        "P": 47000,
        "Q": 47002,
        "R": 47001,
    }, "a new variable gets a port; the old ones are kept"
    with pytest.raises(SchemaConfigError, match=r"^template 'store' has no free port left in tenants.ports"):
        registry.allocate("b", ["P", "Q", "R"], (47000, 47004), lambda port: True)  # 47003 and 47004 are left
    assert registry.tenants() == {"a": {"P": 47000, "Q": 47002, "R": 47001}}, "the refused tenant got nothing"


def _allocate(path: str, tenant: str, start: Any) -> dict[str, int]:
    start.wait()
    registry = tenants.PortRegistry(Path(path), "store")
    return registry.allocate(tenant, ["A", "B"], (47000, 47099), lambda port: True)


def test_tenants_deployed_at_the_same_moment_never_share_a_port(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    start = context.Manager().Event()
    with context.Pool(6) as pool:
        results = [pool.apply_async(_allocate, (str(tmp_path / "tenants.json"), f"t{i}", start)) for i in range(12)]
        time.sleep(0.2)
        start.set()
        given = [result.get(timeout=60) for result in results]
    ports = [port for ports in given for port in ports.values()]
    assert len(ports) == 24 and len(set(ports)) == 24, sorted(ports)
    recorded = tenants.PortRegistry(tmp_path / "tenants.json", "store").tenants()
    assert recorded == {f"t{i}": given[i] for i in range(12)}


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        ({"services": {"api": {"container_name": "api"}}}, "service api sets container_name 'api'"),
        ({"networks": {"default": {"name": "shared"}}}, "the network default is named 'shared'"),
        ({"volumes": {"data": {"name": "data", "external": True}}}, "the volume data is external"),
        ({"services": {"api": {}}, "networks": {"default": {"name": "p-42_default"}}, "volumes": {"d": {}}}, None),
    ],
)
def test_a_template_whose_tenants_would_share_a_name_is_refused(config: dict[str, Any], problem: str | None) -> None:
    assert tenants.shared_resources(config, "p-42") == problem


# --- the record -------------------------------------------------------------------------------------------


def test_a_diagnosis_with_a_problem_fails_the_run_and_fills_its_summary_keys() -> None:
    record = RunRecord(environment="local", mode="verify-only")
    before = record.summary()
    assert before["outcome"] == "passed" and before["diagnosis"] is None and before["services"] == {}
    record.life = LifeRecord(
        services={"worker-2": ServiceState("p-worker-2-1", "exited", problems=["worker-2 is exited"])},
        diagnosed=True,
        problems=["worker-2 is exited"],
    )
    assert record.failed and record.outcome == "failed"
    data = record.summary()
    assert data["diagnosis"] == {"healthy": False, "problems": ["worker-2 is exited"], "ledger_release": None}
    assert data["services"]["worker-2"]["status"] == "exited" and data["services"]["worker-2"]["connectivity"] == []


# --- the runs, on the fake engine -------------------------------------------------------------------------


def test_verify_only_diagnoses_every_service_and_a_stopped_worker_fails_it(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger_with_release_a(suite)
    monkeypatch.setenv("FAKE_SCENARIO", "stack-running")
    assert suite.runpytest("--deploy=local", "--verify-only", "-p", "no:cacheprovider").ret == 0
    healthy = summary(suite)
    assert healthy["diagnosis"] == {"healthy": True, "problems": [], "ledger_release": "A"}
    assert set(healthy["services"]) == {"coordinator", "worker-1", "worker-2", "api", "nginx"}
    assert healthy["services"]["api"]["release"] == "A" and healthy["services"]["api"]["ports"] == [
        "127.0.0.1:47103->8000/tcp"
    ]
    assert {(c["from"], c["to"]) for c in healthy["services"]["api"]["connectivity"]} == {
        ("this machine", "api directly: http://127.0.0.1:47103/ready"),
        ("this machine", "api through nginx: http://127.0.0.1:47104/ready"),
        ("nginx", "http://api:8000/ready"),
    }
    assert 'id="deploycheck-services"' in (suite.path / "reports" / "report.html").read_text()

    # A team's proxy without curl or wget: its route answered ready, so it reaches its upstream, and nothing is
    # run inside its container.
    monkeypatch.setenv("FAKE_SCENARIO", "stack-running,no-http-client")
    without = suite.runpytest("--deploy=local", "--verify-only", "-p", "no:cacheprovider")
    assert without.ret == 0
    inside = next(c for c in summary(suite)["services"]["api"]["connectivity"] if c["from"] == "nginx")
    assert inside["to"] == "http://api:8000/ready" and inside["ok"] is True, inside
    assert inside["detail"].endswith("through its route"), inside
    # Its route failing, the proxy's container is asked, and with no client there it is not tried (ok null).
    monkeypatch.setenv("FAKE_SCENARIO", "stack-running,no-http-client,route-fails")
    failing = suite.runpytest("--deploy=local", "--verify-only", "-p", "no:cacheprovider")
    assert failing.ret == 1, "the route's 502 is a problem of the api"
    failing.stdout.fnmatch_lines(
        ["    nginx -> http://api:8000/ready: not tried neither curl nor wget in the container"]
    )
    data = summary(suite)
    inside = next(c for c in data["services"]["api"]["connectivity"] if c["from"] == "nginx")
    assert inside == {
        "from": "nginx",
        "to": "http://api:8000/ready",
        "ok": None,
        "detail": "neither curl nor wget in the container",
    }
    assert data["diagnosis"]["problems"] == ["api: /ready through nginx answered HTTP 502, not 200"]

    monkeypatch.setenv("FAKE_SCENARIO", "stack-running,worker-stopped")
    result = suite.runpytest("--deploy=local", "--verify-only", "-p", "no:cacheprovider")
    assert result.ret == 1, "every check passes: the diagnosis alone fails the run"
    data = summary(suite)
    assert data["outcome"] == "failed" and data["checks"]["failed"] == 0
    assert data["diagnosis"]["problems"] == [
        "worker-2 is exited, not running (exit code 0)",
        "worker-2: the coordinator (coordinator) cannot connect to it: fake",
    ]
    assert data["services"]["worker-2"]["status"] == "exited"
    result.stdout.fnmatch_lines(["*PROBLEM worker-2 is exited, not running (exit code 0)"])
    assert not lock_files(suite) and not [argv for argv in commands_run(suite) if "up" in argv or "down" in argv]


def test_a_diagnosis_names_every_missing_service_and_none_is_made_without_an_engine(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger_with_release_a(suite)
    assert suite.runpytest("--deploy=local", "--verify-only", "-p", "no:cacheprovider").ret == 1
    data = summary(suite)
    assert (
        data["stages"][0]["reason"] == "no stack of project unit-local is running: deploy it first with --deploy=local"
    )
    assert data["diagnosis"]["problems"] == [
        f"{s} has no container" for s in ("coordinator", "worker-1", "worker-2", "api", "nginx")
    ]
    assert data["services"]["api"] == {**data["services"]["api"], "container": None, "status": "missing"}
    monkeypatch.setenv("FAKE_SCENARIO", "engine-down")
    assert suite.runpytest("--deploy=local", "--verify-only", "-p", "no:cacheprovider").ret == 1
    assert summary(suite)["diagnosis"] is None, "an engine that did not answer preflight is not asked again"


def test_a_teardown_without_a_backup_removes_the_stack_and_the_ledger_says_so(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger_with_release_a(suite)
    monkeypatch.setenv("FAKE_SCENARIO", "stack-running")
    result = suite.runpytest("--deploy=local", "--teardown", "--no-backup", "-p", "no:cacheprovider")
    assert result.ret == 0
    result.assert_outcomes(passed=2, deselected=12)  # preflight's and teardown's tests; no check
    data = summary(suite)
    assert data["mode"] == "teardown" and data["release"] == "A", "the release that ran"
    assert [(s["name"], s["outcome"]) for s in data["stages"]] == [("preflight", "passed"), ("teardown", "passed")]
    assert data["teardown"] == {
        "volumes": "kept",
        "removed": [f"unit-local-{s}-1" for s in ("api", "coordinator", "nginx", "worker-1", "worker-2")],
        "volumes_kept": [],
    }
    downs = [argv for argv in commands_run(suite) if "down" in argv]
    assert len(downs) == 1 and downs[0][-2:] == ["down", "--remove-orphans"], "volumes kept"
    ledger = json.loads((state_dir(suite) / "ledger.json").read_text())
    assert ledger["current"] is None
    (action,) = ledger["actions"]
    assert (action["action"], action["release"], action["outcome"], action["backup"]) == ("teardown", "A", "passed", "")
    assert action["detail"] == "volumes kept; no backup (--no-backup)"
    assert not lock_files(suite)


def test_a_teardown_whose_backup_fails_is_refused_and_removes_nothing(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger_with_release_a(suite)
    monkeypatch.setenv("FAKE_SCENARIO", "stack-running")  # the fake engine runs no database: its backup fails
    result = suite.runpytest("--deploy=local", "--teardown", "-p", "no:cacheprovider")
    assert result.ret == 1
    refusal = summary(suite)["teardown"]["refused"]
    assert refusal.startswith("teardown refused: the backup failed: ")
    assert refusal.endswith(
        "; nothing was removed: make the backup work, or tear the stack down without one (--no-backup)"
    )
    result.stdout.fnmatch_lines(["[[]deploycheck[]] teardown refused: the backup failed: *"])
    assert not [argv for argv in commands_run(suite) if "down" in argv], "nothing removed"
    ledger = json.loads((state_dir(suite) / "ledger.json").read_text())
    assert ledger["current"] == "A" and [(a["action"], a["outcome"]) for a in ledger["actions"]] == [
        ("teardown", "failed")
    ]


def test_a_teardown_that_purges_removes_the_volumes_and_refuses_to_without_a_backup(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger_with_release_a(suite)
    monkeypatch.setenv("FAKE_SCENARIO", "volumes")  # torn down before, its volumes kept: no database runs
    refused = suite.runpytest("--deploy=local", "--teardown", "--purge-volumes", "-p", "no:cacheprovider")
    assert refused.ret == 1
    reason = summary(suite)["stages"][0]["reason"]
    assert reason == (
        "the database (coordinator) of project unit-local has no container, so its data cannot be backed up before "
        "--purge-volumes deletes it: start it, or pass --no-backup"
    )
    assert not [argv for argv in commands_run(suite) if "down" in argv]
    purged = suite.runpytest("--deploy=local", "--teardown", "--purge-volumes", "--no-backup", "-p", "no:cacheprovider")
    assert purged.ret == 0
    assert [argv[-3:] for argv in commands_run(suite) if "down" in argv] == [["down", "--remove-orphans", "--volumes"]]
    assert summary(suite)["teardown"]["volumes"] == "purged"


def _write_backup(folder: Path, release: str, taken_at: float, size: int) -> None:
    folder.mkdir(parents=True)
    (folder / "coordinator.tar").write_bytes(b"x" * size)
    manifest = {
        "release": release,
        "taken_at": taken_at,
        "services": ["coordinator", "worker-1", "worker-2"],
        "bytes": size,
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_backups_are_listed_newest_first_without_engine_or_lock(suite: pytest.Pytester) -> None:
    backups = state_dir(suite) / "backups"
    _write_backup(backups / "20260101-000000-A", "A", 1767225600.0, 2**20)
    _write_backup(backups / "20260102-000000-B", "B", 1767312000.0, 3 * 2**20)
    (backups / "20260103-000000-C.partial").mkdir()  # a backup being written is no backup yet
    result = suite.runpytest("--deploy=local", "--list-backups", "-p", "no:cacheprovider")
    assert result.ret == 0
    listed = summary(suite)["backups"]
    assert [(b["name"], b["release"], b["bytes"]) for b in listed] == [
        ("20260102-000000-B", "B", 3 * 2**20),
        ("20260101-000000-A", "A", 2**20),
    ]
    result.stdout.fnmatch_lines(
        ["backups: 2, newest first", "  20260102-000000-B: release B, 2026-01-02 00:00:00 UTC, 3.0 MiB", "  20260101-*"]
    )
    assert all("config" in argv for argv in commands_run(suite)), "only the model is read"
    assert not lock_files(suite) and not (state_dir(suite) / "ledger.json").exists()


def test_a_backup_name_that_does_not_exist_is_a_usage_error_listing_the_names(suite: pytest.Pytester) -> None:
    _write_backup(state_dir(suite) / "backups" / "20260101-000000-A", "A", 1767225600.0, 10)
    result = suite.runpytest_subprocess(
        "--deploy=local", "--restore-backup=20250101-000000-A", "-p", "no:cacheprovider"
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: backup '20250101-000000-A' is not a backup of environment 'local': choose one of 20260101-000000-A"
            f" (in {state_dir(suite) / 'backups'}; --list-backups shows them)."
        ]
    )
    assert not (suite.path / "reports").exists()


def test_a_restore_by_name_needs_its_fresh_backup_first(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger_with_release_a(suite)
    _write_backup(state_dir(suite) / "backups" / "20260101-000000-A", "A", 1767225600.0, 10)
    monkeypatch.setenv("FAKE_SCENARIO", "stack-running")  # no database: the fresh backup fails
    result = suite.runpytest("--deploy=local", "--restore-backup=20260101-000000-A", "-p", "no:cacheprovider", "-rs")
    assert result.ret == 1
    data = summary(suite)
    assert [(s["name"], s["outcome"]) for s in data["stages"]] == [("preflight", "passed"), ("backup", "failed")]
    assert data["restored_backup"] is None and data["rollback"]["outcome"] == (
        "not performed: a restore by hand that fails is reported"
    )
    result.stdout.fnmatch_lines(["SKIPPED [[]1[]] test_stages.py:*: stage backup failed: the backup failed: *"])
    ledger = json.loads((state_dir(suite) / "ledger.json").read_text())
    assert [(a["action"], a["outcome"], a["backup"]) for a in ledger["actions"]] == [
        ("restore-backup", "failed", "20260101-000000-A")
    ]


def test_a_backup_of_a_stack_whose_database_does_not_run_is_refused(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = suite.runpytest("--deploy=local", "--backup", "-p", "no:cacheprovider")
    assert result.ret == 1
    assert summary(suite)["stages"][0]["reason"] == (
        "the database (coordinator) of project unit-local has no container, so there is nothing to back up: "
        "deploy it first"
    )


TENANT_SUITE = """
[environments.store]
compose_project = "unit-store"
compose_files = ["compose.yaml"]
timeouts = { stage = 30, check = 5 }
secrets = { db_password = "UNIT_STORE_DB_PASSWORD", api_token = "UNIT_STORE_API_TOKEN" }
generate_missing_secrets = true
tenants = { ports = "47870-47879", port_variables = ["COORDINATOR_PORT", "API_PORT", "PROXY_PORT"] }

[environments.local]
compose_project = "unit-local"
compose_files = ["compose.yaml"]
timeouts = { stage = 30, check = 5 }
secrets = { db_password = "UNIT_DB_PASSWORD" }
generate_missing_secrets = true
"""


def test_a_tenant_deploys_in_its_own_project_with_its_own_ports(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_project(suite.path, TENANT_SUITE)
    # Every port free: an outgoing connection of another process may hold one of these for a moment here.
    monkeypatch.setattr(tenants, "port_is_free_here", lambda port: True)
    monkeypatch.setenv("FAKE_SCENARIO", "up-fails")
    result = suite.runpytest("--deploy=store-a", "--release=B", "-p", "no:cacheprovider")
    assert result.ret == 1
    data = summary(suite)
    assert data["environment"] == "store-a" and data["compose_project"] == "unit-store-a"
    assert data["tenant"] == {"template": "store", "name": "a"}
    ups = [argv for argv in commands_run(suite) if "up" in argv and "--dry-run" not in argv]
    assert ups and all(argv[argv.index("-p") + 1] == "unit-store-a" for argv in ups)
    assert (suite.path / ".deploycheck" / "store-a" / "ledger.json").is_file(), "its own ledger"
    registry = json.loads((suite.path / ".deploycheck" / "store" / "tenants.json").read_text())
    assert registry["tenants"]["a"]["ports"] == {"COORDINATOR_PORT": 47870, "API_PORT": 47871, "PROXY_PORT": 47872}


def test_the_tenants_of_a_template_are_listed_with_their_status(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_project(suite.path, TENANT_SUITE)
    registry = tenants.PortRegistry(suite.path / ".deploycheck" / "store" / "tenants.json", "store")
    for name in ("a", "b", "c"):
        registry.allocate(name, ["COORDINATOR_PORT", "API_PORT", "PROXY_PORT"], (47870, 47879), lambda port: True)
    monkeypatch.setenv("FAKE_SCENARIO", "tenant-a-running")
    result = suite.runpytest("--deploy=store", "--tenants", "-p", "no:cacheprovider")
    assert result.ret == 0
    listed = {t["tenant"]: t for t in summary(suite)["tenants"]}
    assert {name: (t["status"], t["detail"]) for name, t in listed.items()} == {
        "a": ("running", ""),
        "b": ("stopped", "no container, its volumes kept"),
        "c": ("not deployed", ""),
    }
    assert listed["b"]["ports"] == {"COORDINATOR_PORT": 47873, "API_PORT": 47874, "PROXY_PORT": 47875}
    assert listed["a"]["compose_project"] == "unit-store-a" and listed["a"]["environment"] == "store-a"
    result.stdout.fnmatch_lines(["tenants: 3", "  tenant a * running; ports COORDINATOR_PORT=47870, API_PORT=47871, *"])
    assert not lock_files(suite)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--deploy=store"],
            "ERROR: environment 'store' is a template of tenants: deploy one of them as --deploy=store-TENANT*",
        ),
        (
            ["--deploy=store-A_1"],
            "ERROR: environment 'store-A_1' names tenant 'A_1' of template 'store', which is not *",
        ),
        (["--deploy=store-x", "--verify-only"], "ERROR: tenant 'x' of template 'store' was never deployed*"),
        (["--deploy=local", "--tenants"], "ERROR: environment 'local' is not a template of tenants*"),
        (["--deploy=local", "--no-backup"], "ERROR: --no-backup applies to --teardown only*"),
        (["--deploy=local", "--backup", "--teardown"], "ERROR: --teardown and --backup exclude each other*"),
    ],
)
def test_the_life_modes_usage_errors_are_one_sentence(suite: pytest.Pytester, args: list[str], message: str) -> None:
    make_project(suite.path, TENANT_SUITE)
    result = suite.runpytest_subprocess(*args, "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
    assert "Traceback" not in result.stderr.str() + result.stdout.str()
    assert not (suite.path / "reports").exists() and not (suite.path / ".deploycheck" / "store").exists()


class StartingContainer:
    """Running, and "starting" by the engine's clock; its own healthcheck passes or not when run now."""

    def __init__(self, passes: bool) -> None:
        self.passes = passes
        self.attrs = {
            "State": {"Status": "running", "Health": {"Status": "starting", "Log": []}, "ExitCode": 0},
            "Config": {"Healthcheck": {"Test": ["CMD", "pg_isready"]}},
            "RestartCount": 0,
            "Image": "sha256:node",
        }

    def exec_run(self, command: list[str], **_: object) -> tuple[int, tuple[bytes, bytes]]:
        assert command == ["pg_isready"]
        return (0 if self.passes else 2), (b"", b"")


@pytest.mark.parametrize(("passes", "status"), [(True, "running"), (False, "error")])
def test_a_tenant_the_engine_still_calls_starting_is_judged_by_its_own_healthcheck(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, passes: bool, status: str
) -> None:
    # A deploy that went green before the engine's first health tick (one interval after the start) is running.
    from deploycheck.release import inventory

    template = load(make_project(tmp_path, TEMPLATE), "store", with_secrets=False)
    nodes = {"coordinator": StartingContainer(True), "api": StartingContainer(passes)}
    monkeypatch.setattr(inventory, "project_containers", lambda client, project: nodes)
    listed = inventory.tenant_status(object(), template, "a", {})
    assert listed.status == status
    assert ("api: status running, health starting" in listed.detail) is (not passes)
