"""The image's interface: the official postgres image's (users, auth, init scripts once, clean shutdown),
citusdata/citus's additions (extension, healthcheck, PGPASSWORD kept) and the version it reports."""

from __future__ import annotations

import re
from typing import Any

import psycopg
import pytest

from .conftest import DB_USER, Cluster, DockerResources, published_port, put_files, wait_healthy

pytestmark = pytest.mark.e2e

VERSION_RE = r"^Citus (\d+\.\d+\.\d+)"


def test_citus_extension_is_installed_in_postgres_db(cluster: Cluster, conn: psycopg.Connection[Any]) -> None:
    version = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'citus'").fetchone()
    assert version is not None, "the citus extension is not installed in POSTGRES_DB"
    assert re.fullmatch(r"13\.\d+-\d+", version[0])
    if cluster.is_standin:
        assert version[0] == "13.0-1"
    # 001-create-citus-extension.sql flags the node as made by Docker
    assert conn.execute("SELECT metadata->>'docker' FROM pg_dist_node_metadata").fetchone() == ("true",)


def test_citus_version_parses_and_says_stand_in(cluster: Cluster, conn: psycopg.Connection[Any]) -> None:
    row = conn.execute(f"SELECT citus_version(), substring(citus_version() from '{VERSION_RE}')").fetchone()
    assert row is not None
    full, parsed = str(row[0]), row[1]
    assert parsed is not None and parsed.startswith("13."), full
    assert re.search(r" on \S+, compiled by .+, 64-bit", full)
    if cluster.is_standin:
        assert parsed == "13.0.3"
        assert "stand-in" in full and "not Citus" in full


def test_the_stand_in_says_in_its_log_that_it_is_not_citus(cluster: Cluster) -> None:
    for node in cluster.nodes:
        log = node.container.logs().decode(errors="replace")
        if cluster.is_standin:
            assert "deploycheck Citus stand-in" in log and "This is NOT Citus." in log, node.name
        else:
            assert "stand-in" not in log, node.name


def test_every_node_runs_the_same_citus(conn: psycopg.Connection[Any]) -> None:
    for probe in ("SELECT extversion FROM pg_extension WHERE extname='citus'", "SELECT citus_version()"):
        same = conn.execute(
            "SELECT bool_and(success) AND count(DISTINCT result) = 1, count(*) FROM run_command_on_all_nodes(%s)",
            (probe,),
        ).fetchone()
        assert same == (True, 3), probe


def test_password_authentication_for_host_connections(cluster: Cluster) -> None:
    with cluster.connect() as good:
        assert good.execute("SELECT current_user, usesuper FROM pg_user WHERE usename = current_user").fetchone() == (
            DB_USER,
            True,
        )
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        cluster.connect(password="not-the-password")
    hba = cluster.coordinator.psql("SELECT auth_method FROM pg_hba_file_rules WHERE type = 'host' AND address = 'all'")
    assert hba.split() == ["scram-sha-256"]


def test_server_keeps_pgpassword_for_connections_to_workers(cluster: Cluster) -> None:
    # citusdata/citus removes the official entrypoint's `unset PGPASSWORD`: the server process has it
    # only the variable's name is looked at, its value is never shown
    code, out = cluster.coordinator.container.exec_run(["cat", "/proc/1/environ"], user="postgres")
    assert code == 0
    names = {item.split(b"=", 1)[0] for item in out.split(b"\0") if item}
    assert b"PGPASSWORD" in names
    # the entrypoint exec'd postgres: it is PID 1
    code, cmdline = cluster.coordinator.container.exec_run(["cat", "/proc/1/cmdline"], user="postgres")
    assert code == 0 and cmdline.split(b"\0")[0] == b"postgres"


def test_healthcheck_is_citus_pg_isready(cluster: Cluster) -> None:
    container = cluster.coordinator.container
    container.reload()
    check = container.attrs["Config"]["Healthcheck"]
    assert check["Interval"] == 4_000_000_000 and check["StartPeriod"] == 6_000_000_000
    assert "pg_healthcheck" in " ".join(check["Test"])
    assert container.attrs["State"]["Health"]["Status"] == "healthy"
    assert container.attrs["Config"]["ExposedPorts"] == {"5432/tcp": {}}


def test_trust_auth_init_scripts_once_and_clean_shutdown(cluster: Cluster, docker_resources: DockerResources) -> None:
    network = docker_resources.network("solo-net")
    env = {"POSTGRES_USER": "solo", "POSTGRES_DB": "solodb", "POSTGRES_HOST_AUTH_METHOD": "trust"}
    solo = docker_resources.create_postgres(cluster.image.ref, "solo", network, env, publish=True)
    put_files(
        solo,
        "/docker-entrypoint-initdb.d",
        {
            "010-marker.sql": ("CREATE TABLE init_runs (source text); INSERT INTO init_runs VALUES ('sql');\n", 0o644),
            "020-marker.sh": (
                '#!/bin/bash\nset -e\npsql -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d "$POSTGRES_DB" '
                "-c \"INSERT INTO init_runs VALUES ('sh')\"\n",
                0o755,
            ),
        },
    )
    solo.start()
    wait_healthy(solo)

    def runs() -> list[str]:
        # trust: no password (the ephemeral host port changes with each start)
        port = published_port(solo)
        with psycopg.connect(host="127.0.0.1", port=port, user="solo", dbname="solodb", connect_timeout=10) as c:
            assert c.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone() == (True,)
            assert c.execute("SELECT count(*) FROM pg_extension WHERE extname = 'citus'").fetchone() == (1,)
            return [r[0] for r in c.execute("SELECT source FROM init_runs ORDER BY source").fetchall()]

    assert runs() == ["sh", "sql"]
    solo.stop(timeout=20)
    solo.reload()
    assert solo.attrs["State"]["ExitCode"] == 0
    assert "database system is shut down" in solo.logs(tail=20).decode()
    solo.start()
    wait_healthy(solo)
    assert runs() == ["sh", "sql"], "init scripts ran again on an existing data directory"
    assert "Skipping initialization" in solo.logs(tail=40).decode()
