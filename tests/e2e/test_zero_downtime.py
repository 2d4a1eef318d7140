"""Zero downtime on the real engine (issue 18), measured with a bounded load through the proxy (scripts/load.py):

- a green deploy of a changed API fails no request: the new API container starts beside the old one, the proxy
  switches once it is ready, and the old one is retired;
- the rollback of a release whose API never gets ready fails no request and starts nothing: the proxy never left
  the old container, which keeps running (the same container before and after);
- the rollback of a release that applied a migration answers only maintenance (503 with Retry-After: the write
  fence's refusals, then the proxy's maintenance page during the restore) and loses no acknowledged write.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import docker
import pytest

from scripts.load import BoundedLoad, WindowStats
from tests.e2e.conftest import ROOT, TOKEN_MARKER, Deploy, releases_override, tag_release_images

pytestmark = pytest.mark.e2e

RATES = {"health": 4.0, "read": 4.0, "write": 2.0}  # smaller than the benchmark's 10 / 10 / 5


def api_containers(deploy: Deploy) -> list[str]:
    client = docker.from_env()
    found = client.containers.list(
        all=True, filters={"label": [f"com.docker.compose.project={deploy.project}", "com.docker.compose.service=api"]}
    )
    return sorted(c.id for c in found)


def assert_no_failure(stats: WindowStats | None) -> WindowStats:
    assert stats is not None
    assert stats.requests > 0, stats.describe()
    assert stats.failed == 0, stats.describe()
    assert stats.writes_lost == 0, stats.describe()
    return stats


def test_a_changed_api_is_swapped_and_a_failed_one_is_switched_back_under_load(deploy: Deploy, tmp_path: Path) -> None:
    image = tag_release_images(tmp_path, good=("A", "B"), broken="C")
    client = docker.from_env()
    client.images.get(image.replace("${RELEASE}", "C")).tag("deploycheck/api-e2e", tag="D")  # broken too
    migrations = tmp_path / "migrations"
    shutil.copytree(ROOT / "stack" / "migrations", migrations)
    deploy.write_environment(overrides=[releases_override(deploy, image)], stage_timeout=20, migrations=migrations)
    first = deploy.run("--release=A")
    assert first.returncode == 0, first.stdout[-5000:]

    with BoundedLoad(deploy.proxy, TOKEN_MARKER, rates=RATES) as load:
        with load.window("green") as green:
            result = deploy.run("--release=B")
        assert result.returncode == 0, result.stdout[-5000:]
        assert_no_failure(green.stats)
        swapped = deploy.summary()["swaps"]["api"]
        assert swapped.startswith("blue-green: ") and "stopped and removed" in swapped, swapped
        serving = api_containers(deploy)
        assert len(serving) == 1, "the old API container is retired at a green verdict"

        with load.window("rollback") as rollback:
            result = deploy.run("--release=C")
        assert result.returncode == 1, result.stdout[-5000:]
        assert_no_failure(rollback.stats)
        summary = deploy.summary()
        assert summary["rollback"]["outcome"] == "passed" and summary["rollback"]["restored_release"] == "B"
        assert any(
            "the proxy routes to" in a and "again, which kept running" in a for a in summary["rollback"]["actions"]
        )
        assert api_containers(deploy) == serving, "the rollback starts nothing: B's container never stopped"

        (migrations / "0003_release_d.sql").write_text("CREATE TABLE release_d (id bigint);\n")
        with load.window("restore") as restore:
            result = deploy.run("--release=D")
        (migrations / "0003_release_d.sql").unlink()
        assert result.returncode == 1, result.stdout[-5000:]
        stats = assert_no_failure(restore.stats)  # maintenance answers only
        assert stats.maintenance > 0, stats.describe()
        rollback_record = deploy.summary()["rollback"]
        assert rollback_record["outcome"] == "passed" and rollback_record["database_restored"] is True
        assert any("answered maintenance" in action for action in rollback_record["actions"]), rollback_record

    for stats in load.windows.values():
        print(stats.describe())  # the figures, for the note (pytest -s)
