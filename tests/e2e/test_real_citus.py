"""Real Citus where it decides the outcome: migrations that only real Citus accepts or refuses, run the same way
live and in the rehearsal, and a node whose citus is installed but not loaded.

One environment serves the module: release A deploys green once; each case deploys a release B from A.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import ROOT, Deploy, coordinator_sql, free_ports, remove_project

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deploy]:
    directory = tmp_path_factory.mktemp("citus")
    deploy = Deploy(name="real-citus", project=f"dce2e-citus-{os.getpid()}", directory=directory, ports=free_ports(2))
    deploy.write_environment(stage_timeout=60)
    first = deploy.run("--release=A")
    assert first.returncode == 0, first.stdout[-5000:]
    yield deploy
    remove_project(deploy.project)
    shutil.rmtree(deploy.state_dir, ignore_errors=True)


def migrations_with(tmp_path: Path, name: str, sql: str) -> Path:
    folder = tmp_path / "migrations"
    shutil.copytree(ROOT / "stack" / "migrations", folder)
    (folder / name).write_text(sql)
    return folder


def applied(deploy: Deploy) -> str:
    return coordinator_sql(
        deploy, "SELECT string_agg(version, ',' ORDER BY version) FROM deploycheck_schema_migrations"
    )


def test_several_distributed_ddl_statements_in_one_file_are_rehearsed_and_applied(
    cluster: Deploy, tmp_path: Path
) -> None:
    """Two CREATE INDEX and an ADD COLUMN on a distributed table in one file: Citus refuses them sent as one
    string (citusdata/citus#6608); run statement by statement in one transaction, they deploy green."""
    sql = (
        "CREATE INDEX orders_item ON orders (item);\n"
        "CREATE INDEX orders_created ON orders (created_at);\n"
        "ALTER TABLE orders ADD COLUMN note text;\n"
    )
    cluster.write_environment(stage_timeout=60, migrations=migrations_with(tmp_path, "0003_indexes.sql", sql))
    result = cluster.run("--release=B-indexes")
    assert result.returncode == 0, result.stdout[-5000:]
    assert "rehearsal: 0003_indexes.sql applied cleanly on a copy" in result.stdout
    assert cluster.summary()["migrations_applied"] == ["0003_indexes.sql"]
    # Propagated to every shard: each shard of orders has both indexes, and the new column.
    per_shard = coordinator_sql(
        cluster,
        "SELECT count(DISTINCT result) || ':' || min(result) FROM run_command_on_shards('orders', "
        "$$SELECT count(*) FROM pg_indexes WHERE tablename = '%s' AND indexname LIKE 'orders_%%'$$)",
    )
    assert per_shard.startswith("1:"), f"shards differ: {per_shard}"
    assert int(per_shard.split(":")[1]) >= 2, per_shard
    columns = coordinator_sql(
        cluster,
        "SELECT bool_and(result = '1') FROM run_command_on_shards('orders', "
        "$$SELECT count(*) FROM information_schema.columns WHERE table_name = '%s' AND column_name = 'note'$$)",
    )
    assert columns == "t"


def test_a_migration_citus_refuses_fails_in_the_rehearsal_with_its_words_before_anything_live_changes(
    cluster: Deploy, tmp_path: Path
) -> None:
    cluster.write_environment(stage_timeout=60)
    assert cluster.run("--release=A2").returncode == 0, "a good release to start from"
    live = cluster.containers()
    before = applied(cluster)
    sql = "CREATE TABLE parcels (id bigint PRIMARY KEY, tenant bigint);\nSELECT create_distributed_table('parcels', 'tenant');\n"
    cluster.write_environment(stage_timeout=60, migrations=migrations_with(tmp_path, "0004_parcels.sql", sql))
    result = cluster.run("--release=B-refused")
    assert result.returncode == 1, result.stdout[-5000:]
    summary = cluster.summary()
    failed = [s for s in summary["stages"] if s["outcome"] == "failed"]
    assert [s["name"] for s in failed] == ["rehearsal"], summary["stages"]
    assert failed[0]["reason"].startswith(
        "migration 0004_parcels.sql failed on a copy of the database at line 2 "
        "(SELECT create_distributed_table('parcels', 'tenant');): cannot create constraint on \"parcels\""
    ), failed[0]["reason"]
    assert "Distributed relations cannot have UNIQUE, EXCLUDE, or PRIMARY KEY constraints" in failed[0]["reason"]
    assert summary["rollback"]["performed"] is False, "nothing live changed: nothing to roll back"
    assert cluster.containers() == live
    assert applied(cluster) == before
    assert coordinator_sql(cluster, "SELECT to_regclass('parcels') IS NULL") == "t"
    cluster.assert_no_secret_leaked(result)


def test_a_worker_whose_citus_is_not_loaded_fails_the_database_stage_naming_it(cluster: Deploy) -> None:
    """pg_extension still lists citus on a node started without it in shared_preload_libraries; the database
    stage asks every node citus_version(), which fails there, and names the node with Citus's words."""
    cluster.write_environment(stage_timeout=60)
    assert cluster.run("--release=A3").returncode == 0
    unloaded = cluster.override(
        "worker-2-without-citus.yaml",
        """
        services:
          worker-2:
            command: ["postgres", "-c", "shared_preload_libraries="]
        """,
    )
    cluster.write_environment(overrides=[unloaded], stage_timeout=60)
    result = cluster.run("--release=B-unloaded")
    assert result.returncode == 1, result.stdout[-5000:]
    summary = cluster.summary()
    failed = [s for s in summary["stages"] if s["outcome"] == "failed"]
    assert [s["name"] for s in failed] == ["database"], summary["stages"]
    assert failed[0]["reason"] == (
        "worker-2: citus does not answer in database deploycheck: ERROR: Citus can only be loaded via "
        "shared_preload_libraries"
    ), failed[0]["reason"]
    rollback = summary["rollback"]
    assert rollback["performed"] is True and rollback["outcome"] == "passed" and rollback["restored_release"] == "A3"
    worker = coordinator_sql(cluster, "SELECT result FROM run_command_on_workers('SELECT citus_version()') LIMIT 1")
    assert worker.startswith("Citus 13.2"), "A's worker, with citus loaded, is back"
