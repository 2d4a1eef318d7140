"""A team's own stack, deployed as that team would: deploycheck installed with pip into the team's virtualenv,
`pytest --deploy=ENV` run from the team's repository (tests/apps/parcels: its own services, names, ports,
probes and checks), on Citus and on PostgreSQL.

A first release deploys green; a customer's parcel is written; a release whose tracker mixes up two fields (every
probe still green) is caught by the team's own check, and the rollback brings the previous release back with
the customer's parcel."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import docker
import pytest
import requests

from tests.e2e.conftest import ROOT, free_ports, remove_project

APP = ROOT / "tests" / "apps" / "parcels"
DB_PASSWORD = "e2e-MARKER-parcels-db-9d2e51"
API_KEY = "e2e-MARKER-parcels-key-c07a3f"
PORT_VARIABLES = ("PARCELS_EDGE_PORT", "PARCELS_TRACKER_PORT", "PARCELS_PRICING_PORT", "PARCELS_DB_PORT")
GIT = ["git", "-c", "user.name=parcels", "-c", "user.email=dev@parcels.test"]


@pytest.fixture(scope="session")
def team_pytest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """pytest of a fresh virtualenv where deploycheck is installed as a team installs it (`pip install PATH`),
    from a copy of this checkout's package files (the build writes beside them)."""
    work = tmp_path_factory.mktemp("team-venv")
    source = work / "deploycheck"
    for part in ("plugins", "fixtures", "checks"):
        shutil.copytree(ROOT / part, source / part, ignore=shutil.ignore_patterns("__pycache__"))
    for part in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / part, source / part)
    venv = work / "venv"
    subprocess.run(["python3", "-m", "venv", str(venv)], check=True)
    installed = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", str(source)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    return venv / "bin" / "pytest"


@dataclass
class TeamRepo:
    """The team's repository: a git checkout of parcels, with its environments on ports of this run."""

    folder: Path
    environment: str
    project: str
    pytest: Path
    ports: dict[str, int]

    def commit(self, message: str) -> str:
        subprocess.run([*GIT, "add", "-A"], cwd=self.folder, check=True)
        subprocess.run([*GIT, "commit", "-qm", message], cwd=self.folder, check=True)
        head = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=self.folder, capture_output=True, text=True
        )
        return head.stdout.strip()

    def deploy(self) -> subprocess.CompletedProcess[str]:
        """What a person types in the team's repository. Not with this suite's PYTHONPATH: the team's pytest would
        import this checkout's deploycheck and load its conftest.py, and stop at collection (exit 4)."""
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        return subprocess.run(
            [str(self.pytest), f"--deploy={self.environment}", "-p", "no:cacheprovider"],
            cwd=self.folder,
            env={**env, "PARCELS_DB_PASSWORD": DB_PASSWORD, "PARCELS_API_KEY": API_KEY},
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )

    def summary(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.folder / "reports" / "summary.json").read_text())
        return data

    def team_check_outcomes(self) -> dict[str, str]:
        """The team's own checks in the run's JUnit XML (written to reports/ by default): name -> outcome."""
        suite = ElementTree.parse(self.folder / "reports" / "junit.xml").getroot()
        outcomes = {}
        for case in suite.iter("testcase"):
            if case.get("classname", "").startswith("deploy_checks."):
                found = {child.tag for child in case}
                outcome = next((o for o in ("failure", "error", "skipped") if o in found), "passed")
                outcomes[str(case.get("name"))] = outcome
        return outcomes

    def ledger(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.folder / ".deploycheck" / self.environment / "ledger.json").read_text())
        return data

    @property
    def edge(self) -> str:
        return f"http://127.0.0.1:{self.ports['PARCELS_EDGE_PORT']}"

    def running_image_ids(self) -> dict[str, str]:
        found = docker.from_env().containers.list(filters={"label": f"com.docker.compose.project={self.project}"})
        return {c.labels["com.docker.compose.service"]: str(c.image.id) for c in found}

    def assert_no_secret_leaked(self, result: subprocess.CompletedProcess[str]) -> None:
        for marker in (DB_PASSWORD, API_KEY):
            assert marker not in result.stdout and marker not in result.stderr
            for path in (self.folder / "reports").rglob("*"):
                if path.is_file():
                    assert marker not in path.read_text(errors="replace"), f"a secret leaked into {path}"


@pytest.fixture(params=["citus", "postgres"])
def team_repo(request: pytest.FixtureRequest, tmp_path: Path, team_pytest: Path) -> Iterator[TeamRepo]:
    environment = str(request.param)
    folder = tmp_path / "parcels"
    shutil.copytree(APP, folder, ignore=shutil.ignore_patterns("__pycache__", ".deploycheck", "reports"))
    project = f"dce2e-parcels-{environment}-{uuid.uuid4().hex[:6]}"
    ports = dict(zip(PORT_VARIABLES, free_ports(len(PORT_VARIABLES)), strict=True))
    text = (folder / "environments.toml").read_text()
    text = text.replace(f'compose_project = "parcels-{environment}"', f'compose_project = "{project}"')
    for variable, port in ports.items():  # this run's ports, in both environments' tables
        text = re.sub(rf'{variable} = "\d+"', f'{variable} = "{port}"', text)
    (folder / "environments.toml").write_text(text)
    (folder / ".gitignore").write_text(".deploycheck/\nreports/\n")
    subprocess.run(["git", "init", "-q"], cwd=folder, check=True)
    repo = TeamRepo(folder, environment, project, team_pytest, ports)
    yield repo
    remove_project(project)


def break_the_tracker(repo: TeamRepo) -> None:
    """A refactoring slip: a parcel is read back with its recipient as its city. Every probe stays green."""
    web = repo.folder / "tracker" / "parcels_tracker" / "web.py"
    text = web.read_text()
    good = "        raise _no_parcel(parcel_id)\n    return Parcel(**row)\n"
    assert text.count(good) == 1
    web.write_text(
        text.replace(
            good, '        raise _no_parcel(parcel_id)\n    return Parcel(**{**row, "city": row["recipient"]})\n'
        )
    )


def test_a_teams_stack_deploys_and_its_broken_release_is_rolled_back(team_repo: TeamRepo) -> None:
    good = team_repo.commit("parcels 1.0")
    first = team_repo.deploy()
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-2000:]
    summary = team_repo.summary()
    assert (summary["outcome"], summary["release"]) == ("passed", good)
    assert summary["database"]["kind"] == team_repo.environment
    expected = {
        "test_parcel_round_trip_through_the_edge": "passed",
        "test_unknown_parcel_is_the_trackers_own_404[direct]": "passed",
        "test_unknown_parcel_is_the_trackers_own_404[proxy]": "passed",
        "test_parcels_and_scans_are_colocated_on_citus": "passed" if team_repo.environment == "citus" else "skipped",
        "test_tracker_runs_as_its_own_user": "passed",
        "test_edge_is_published_where_pytest_docker_finds_it": "passed",
    }
    assert team_repo.team_check_outcomes() == expected
    assert requests.get(f"{team_repo.edge}/api/about", timeout=10).json()["build"] == good
    good_images = team_repo.running_image_ids()

    # A customer's parcel, acknowledged (201) by the release that runs.
    headers = {"X-Parcels-Key": API_KEY}
    created = requests.post(
        f"{team_repo.edge}/api/parcels", json={"recipient": "Grace", "city": "Porto"}, headers=headers, timeout=10
    )
    assert created.status_code == 201, created.text
    parcel = created.json()

    break_the_tracker(team_repo)
    broken = team_repo.commit("parcels 1.1: tidy the tracker")
    second = team_repo.deploy()
    assert second.returncode == 1, second.stdout[-4000:]
    summary = team_repo.summary()
    assert (summary["outcome"], summary["release"]) == ("failed", broken)
    failed = [c["name"] for c in summary["failed_checks"]]
    assert failed == ["deploy_checks/test_parcels.py::test_parcel_round_trip_through_the_edge"]
    assert team_repo.team_check_outcomes()["test_parcel_round_trip_through_the_edge"] == "failure"
    assert all(s["outcome"] == "passed" for s in summary["stages"]), "only the team's check saw the slip"
    assert summary["rollback"]["outcome"] == "passed"
    assert summary["rollback"]["restored_release"] == good
    # The team's services publish fixed host ports: replaced in place, and the run says why and what to change.
    for service, port in (("tracker", 9000), ("pricing", 9100)):
        why = summary["swaps"][service]
        assert why.startswith("in place: it publishes host port ") and f'"127.0.0.1::{port}"' in why, why
        assert f"[deploycheck] {service} is replaced in place, so the proxy cannot serve it meanwhile" in second.stdout

    # The previous release runs again: its images, by id, and its own answer; the customer's parcel is there.
    assert team_repo.running_image_ids() == good_images
    assert requests.get(f"{team_repo.edge}/api/about", timeout=10).json()["build"] == good
    read = requests.get(f"{team_repo.edge}/api/parcels/{parcel['id']}", timeout=10)
    assert read.status_code == 200 and read.json()["city"] == "Porto", read.text
    assert team_repo.ledger()["current"] == good

    team_repo.assert_no_secret_leaked(first)
    team_repo.assert_no_secret_leaked(second)
