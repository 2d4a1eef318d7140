"""The image's interface: the official postgres image's (users, auth, init scripts once, clean shutdown),
citusdata/citus's additions (citus preloaded and its extension created, healthcheck, PGPASSWORD kept) and the
Citus release it reports."""

from __future__ import annotations

import re
from typing import Any

import psycopg
import pytest

from .conftest import DB_USER, Cluster, DockerResources, published_port, put_files, wait_healthy

pytestmark = pytest.mark.e2e

VERSION_RE = r"^Citus (\d+\.\d+\.\d+)"


def citus_release(conn: psycopg.Connection[Any]) -> str:
    """X.Y.Z from citus_version(): the Citus library the server has loaded."""
    row = conn.execute(f"SELECT citus_version(), substring(citus_version() from '{VERSION_RE}')").fetchone()
    assert row is not None and row[1] is not None, row
    return str(row[1])


def test_citus_extension_is_installed_in_postgres_db(conn: psycopg.Connection[Any]) -> None:
    version = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'citus'").fetchone()
    assert version is not None, "the citus extension is not installed in POSTGRES_DB"
    # the extension's SQL objects are those of the loaded library: 13.2.2 loaded, 13.2-1 installed
    major, minor, _ = citus_release(conn).split(".")
    assert version[0] == f"{major}.{minor}-1"
    # 001-create-citus-extension.sql flags the node as made by Docker
    assert conn.execute("SELECT metadata->>'docker' FROM pg_dist_node_metadata").fetchone() == ("true",)


def test_citus_version_is_the_image_s(cluster: Cluster, conn: psycopg.Connection[Any], docker_client: Any) -> None:
    full = conn.execute("SELECT citus_version()").fetchone()
    assert full is not None
    assert re.fullmatch(r"Citus 13\.\d+\.\d+ on \S+, compiled by .+, 64-bit", full[0]), full[0]
    # citusdata/citus labels its images with the Citus release they carry (the alpine ones add -alpine)
    label = (docker_client.images.get(cluster.image).labels or {}).get("org.label-schema.version")
    assert label is not None, f"{cluster.image} has no org.label-schema.version label"
    assert label.split("-")[0] == citus_release(conn)
    assert conn.execute("SHOW shared_preload_libraries").fetchone() == ("citus",)


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
    solo = docker_resources.create_postgres(cluster.image, "solo", network, env, publish=True)
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
