"""README.md stays true to the code as the code changes: every key of the environment file's schema, every
variable deploycheck passes to Compose, every option and ini key of the plugin, every stage, every key of
summary.json and every fixture a check may use is named in it (in backticks). Each failure names what is missing."""

from __future__ import annotations

import ast
import dataclasses
import re
import types
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, cast

import pytest

from deploycheck import deployment, plugin
from deploycheck.engine.commands import Runner
from deploycheck.engine.compose import WORKERS_FILE_NAME, WORKERS_PROFILE, compose_for, variables_for
from deploycheck.record.record import CheckRecord, RunRecord, StageRecord
from deploycheck.request.environment import Environment, load
from deploycheck.request.schema import settings_of
from tests.unit.conftest import PROJECT_ROOT, make_project

README = PROJECT_ROOT / "README.md"


@pytest.fixture(scope="module")
def named() -> set[str]:
    """Everything README.md writes in backticks (inline code, outside its fenced blocks)."""
    prose = re.sub(r"^```.*?^```", "", README.read_text(), flags=re.M | re.S)
    return set(re.findall(r"`([^`\n]+)`", prose))


def _missing(wanted: Mapping[str, str], named: set[str]) -> list[str]:
    """The entries of ``wanted`` (what to report -> the name the README must hold) that it does not name."""
    return sorted(where for where, name in wanted.items() if name not in named)


# --- the environment file -------------------------------------------------------------------------------------


def _tables_in(kind: Any) -> Iterator[type]:
    """The dataclasses a field's type holds: itself, an optional one, the items of a list or a table."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType, tuple, dict, Mapping):
        for arg in args:
            yield from _tables_in(arg)
    elif dataclasses.is_dataclass(kind):
        yield cast(type, kind)


def schema_keys(cls: type, prefix: str = "") -> dict[str, str]:
    """Every key the environment file may hold, by its dotted place in the file -> its own name."""
    keys: dict[str, str] = {}
    for name, (_, _, kind) in settings_of(cls).items():
        keys[f"{prefix}{name}"] = name
        for table in _tables_in(kind):
            keys.update(schema_keys(table, f"{prefix}{name}."))
    return keys


def test_the_schema_walk_reaches_the_nested_tables() -> None:
    keys = schema_keys(Environment)
    assert {"stack.database.worker_template", "stack.http.release.field", "stack.proxy.failure_probe.status"} <= set(
        keys
    )
    assert "http_checks.via" in keys and "timeouts.stage" in keys
    assert "name" not in keys and "state_dir" not in keys, "fields resolved by load are not the file's keys"


def test_every_key_of_the_environment_file_is_documented(named: set[str]) -> None:
    missing = _missing(schema_keys(Environment), named)
    assert not missing, f"README.md does not name these keys of the environment file (as `key`): {', '.join(missing)}"


# --- what deploycheck passes to Compose -----------------------------------------------------------------------

SAMPLE = """
[environments.sample]
compose_project = "sample"
compose_files = ["compose.yaml"]
timeouts = { stage = 30, check = 5 }
secrets = { db_password = "SAMPLE_DB_PASSWORD", api_token = "SAMPLE_API_TOKEN" }
"""


@pytest.fixture
def sample(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Environment:
    """An environment of the reference stack's contract (workers from the template), with two secrets."""
    monkeypatch.setenv("SAMPLE_DB_PASSWORD", "pw")
    monkeypatch.setenv("SAMPLE_API_TOKEN", "token")
    return load(make_project(tmp_path, SAMPLE), "sample")


def test_every_variable_passed_to_compose_is_documented(sample: Environment, named: set[str]) -> None:
    command = compose_for(sample, Runner(), "r1", "citusdata/citus:13.2").command("config")
    passed = set(command.env) | set(variables_for(sample, "r1", "citusdata/citus:13.2"))
    # Secrets: under their key in capitals (the README's names), and under the sample's own variable names.
    secrets = {key.upper() for key in sample.secrets}
    assert secrets | set(sample.secrets.values()) == set(command.secret_env)
    wanted = {name: name for name in (passed | secrets) - set(sample.variables)}
    wanted |= {f"the workers' profile {WORKERS_PROFILE}": WORKERS_PROFILE, "the workers file": WORKERS_FILE_NAME}
    missing = _missing(wanted, named)
    assert not missing, f"README.md does not name these variables passed to Compose: {', '.join(missing)}"


# --- the plugin's options and ini keys -----------------------------------------------------------------------


class _Group:
    def __init__(self, options: list[str]) -> None:
        self.options = options

    def addoption(self, *names: str, **_: object) -> None:
        self.options.extend(names)


class _Parser:
    """What ``pytest_addoption`` registers: option names and ini keys."""

    def __init__(self) -> None:
        self.options: list[str] = []
        self.ini: list[str] = []

    def getgroup(self, name: str, description: str = "") -> _Group:
        return _Group(self.options)

    def addoption(self, *names: str, **_: object) -> None:
        self.options.extend(names)

    def addini(self, name: str, *_: object, **__: object) -> None:
        self.ini.append(name)


def registered() -> _Parser:
    parser = _Parser()
    plugin.pytest_addoption(cast(pytest.Parser, parser))
    return parser


def test_every_option_is_documented(named: set[str]) -> None:
    options = registered().options
    assert "--deploy" in options and "--citus-source" in options
    missing = sorted(o for o in options if not any(n == o or n.startswith(f"{o}=") for n in named))
    assert not missing, f"README.md does not name these options (as `--option` or `--option=VALUE`): {missing}"


def test_every_ini_key_is_documented(named: set[str]) -> None:
    keys = registered().ini
    assert "deploycheck_history_keep" in keys
    missing = _missing({key: key for key in keys}, named)
    assert not missing, f"README.md does not name these ini keys: {', '.join(missing)}"


def test_the_exit_code_of_a_failed_rollback_is_documented() -> None:
    assert f"| {plugin.EXIT_ROLLBACK_FAILED} |" in README.read_text(), (
        f"README.md's exit codes have no row for {plugin.EXIT_ROLLBACK_FAILED} (EXIT_ROLLBACK_FAILED)"
    )


# --- stages, summary.json --------------------------------------------------------------------------------------


def test_every_stage_and_step_is_documented(named: set[str]) -> None:
    steps = [step for reported in deployment.REPORTED_WITH.values() for step in reported]
    missing = _missing({name: name for name in [*deployment.STAGES, *steps]}, named)
    assert not missing, f"README.md does not name these stages or steps: {', '.join(missing)}"


def test_every_stage_is_the_test_case_the_readme_names(named: set[str]) -> None:
    """The README says each stage is the JUnit case checks/test_stages.py::test_NAME."""
    assert "checks/test_stages.py::test_NAME" in named, "README.md no longer names the stages' test cases"
    tree = ast.parse((PROJECT_ROOT / "checks" / "test_stages.py").read_text())
    tests = {node.name for node in tree.body if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")}
    assert tests == {f"test_{name}" for name in deployment.STAGES}, "checks/test_stages.py has a test per stage"


def summary_keys(value: object, prefix: str = "") -> dict[str, str]:
    """Every key of a summary, by its dotted place -> its own name (a list's items as its first one)."""
    keys: dict[str, str] = {}
    if isinstance(value, list) and value:
        return summary_keys(value[0], f"{prefix}[].")
    if isinstance(value, dict):
        for key, item in value.items():
            keys[f"{prefix}{key}"] = key
            keys.update(summary_keys(item, f"{prefix}{key}."))
    return keys


def test_every_key_of_summary_json_is_documented(named: set[str]) -> None:
    record = RunRecord(environment="sample", mode="deploy", release="r1", compose_project="sample")
    record.stages.append(StageRecord("preflight", "passed", 0.1, 1.0))
    record.checks.append(CheckRecord("checks/test_health.py::test_x", "failed", 0.1, 2.0, "broken"))
    record.rollback.actions.append("an action")
    keys = summary_keys(record.summary())
    assert {"database.kind", "stages.[].started_at", "failed_checks.[].reason", "timings.rollback_finished_at"} <= set(
        keys
    )
    missing = _missing(keys, named)
    assert not missing, f"README.md does not name these keys of summary.json: {', '.join(missing)}"


# --- the fixtures a check may use -----------------------------------------------------------------------------


def fixtures_defined(path: Path) -> list[str]:
    """The public fixtures a module defines (functions decorated with pytest.fixture)."""

    def is_fixture(decorator: ast.expr) -> bool:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        return isinstance(target, ast.Attribute) and target.attr == "fixture"

    return [
        node.name
        for node in ast.parse(path.read_text()).body
        if isinstance(node, ast.FunctionDef)
        and not node.name.startswith("_")
        and any(map(is_fixture, node.decorator_list))
    ]


@pytest.mark.parametrize(("module", "one_of_them"), [("stack.py", "service_http"), ("inert.py", "stack")])
def test_every_fixture_a_check_may_use_is_documented(module: str, one_of_them: str, named: set[str]) -> None:
    fixtures = fixtures_defined(PROJECT_ROOT / "fixtures" / module)
    assert one_of_them in fixtures
    missing = _missing({name: name for name in fixtures}, named)
    assert not missing, f"README.md does not name these fixtures of fixtures/{module}: {', '.join(missing)}"
