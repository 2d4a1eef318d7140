"""The migration executor on a real Citus coordinator: every pending file in one exec, each in its own
transaction with its row in the version table, stopping at the first that fails, and nothing left behind."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from deploycheck.engine.commands import Runner
from deploycheck.release.migrations import FOLDER, VERSION_TABLE, MigrationError, run_files

from .conftest import DB_NAME, DB_USER, Cluster, DockerResources

pytestmark = pytest.mark.e2e


TABLES = ("exec_parcels", "exec_refused", "exec_never")


@pytest.fixture
def leaves_the_cluster_as_found(cluster: Cluster) -> Iterator[None]:
    """The session's cluster shared with other tests: its distributed tables would keep a worker from being
    removed (test_nodes), so what this test makes is dropped again."""
    had_versions = cluster.coordinator.psql(f"SELECT to_regclass('{VERSION_TABLE}') IS NOT NULL") == "t"
    yield
    cluster.coordinator.psql(f"DROP TABLE IF EXISTS {', '.join(TABLES)}")
    if had_versions:
        cluster.coordinator.psql(f"DELETE FROM {VERSION_TABLE} WHERE version LIKE '900%'")
    else:
        cluster.coordinator.psql(f"DROP TABLE IF EXISTS {VERSION_TABLE}")


def recorded(cluster: Cluster, prefix: str) -> str:
    return cluster.coordinator.psql(
        f"SELECT coalesce(string_agg(version, ',' ORDER BY version), '') FROM {VERSION_TABLE} "
        f"WHERE version LIKE '{prefix}%'"
    )


def left_behind(cluster: Cluster) -> bool:
    code, _ = cluster.coordinator.container.exec_run(["test", "-e", FOLDER])
    return bool(code == 0)


@pytest.mark.usefixtures("leaves_the_cluster_as_found")
def test_files_apply_in_order_and_a_failure_names_its_file_keeping_those_before(
    cluster: Cluster, tmp_path: Path
) -> None:
    first = tmp_path / "9001_exec_parcels.sql"
    first.write_text(
        "CREATE TABLE exec_parcels (id bigint, tenant bigint, PRIMARY KEY (tenant, id));\n"
        "SELECT create_distributed_table('exec_parcels', 'tenant');\n"
    )
    refused = tmp_path / "9002_exec_refused.sql"
    refused.write_text(
        "-- a key without the distribution column: Citus refuses it\n"
        "CREATE TABLE exec_refused (id bigint PRIMARY KEY, tenant bigint);\n"
        "SELECT create_distributed_table('exec_refused', 'tenant');\n"
    )
    never = tmp_path / "9003_exec_never.sql"
    never.write_text("CREATE TABLE exec_never (id bigint);\n")
    runner = Runner()
    container = cluster.coordinator.container
    with pytest.raises(MigrationError) as failed:
        run_files(runner, container, DB_USER, DB_NAME, [first, refused, never])
    error = failed.value
    assert error.applied == ("9001_exec_parcels.sql",)
    assert error.reason.startswith(
        "migration 9002_exec_refused.sql failed at line 3 (SELECT create_distributed_table('exec_refused', "
        "'tenant');): cannot create constraint on \"exec_refused\""
    ), error.reason
    assert recorded(cluster, "900") == "9001_exec_parcels.sql"
    tables = "SELECT to_regclass('exec_parcels') IS NOT NULL, to_regclass('exec_refused'), to_regclass('exec_never')"
    assert cluster.coordinator.psql(tables) == "t||", "the failed file's transaction rolled back; the next never ran"
    assert not left_behind(cluster), f"{FOLDER} is removed after a failure"

    # The failed file fixed, the rest runs in the same way.
    refused.write_text("CREATE TABLE exec_refused (id bigint, tenant bigint);\n")
    assert run_files(runner, container, DB_USER, DB_NAME, [refused, never]) == [refused.name, never.name]
    assert recorded(cluster, "900") == "9001_exec_parcels.sql,9002_exec_refused.sql,9003_exec_never.sql"
    assert not left_behind(cluster), f"{FOLDER} is removed after the files ran"


def test_the_folder_is_removed_where_the_container_s_user_cannot_remove_it(
    cluster: Cluster, docker_resources: DockerResources, tmp_path: Path
) -> None:
    """A team's image that runs as postgres: the engine puts the files there as root, so the script cannot remove
    them itself; the executor removes them as root. (No server runs here: the file fails, the clean-up holds.)"""
    container = docker_resources.client.containers.run(
        cluster.image,
        entrypoint=["sleep", "600"],
        user="postgres",
        name=f"{docker_resources.prefix}-as-postgres",
        labels=docker_resources.labels,
        detach=True,
    )
    docker_resources.containers.append(container)
    path = tmp_path / "9101_nowhere.sql"
    path.write_text("SELECT 1;\n")
    with pytest.raises(MigrationError) as failed:
        run_files(Runner(), container, DB_USER, DB_NAME, [path])
    assert failed.value.reason.startswith("migration 9101_nowhere.sql failed: psql: error:"), failed.value.reason
    code, _ = container.exec_run(["test", "-e", FOLDER])
    assert code != 0, f"{FOLDER} is left in a container whose user is postgres"
