"""Signatures of the Citus functions and the shape of the shard catalogs that deploycheck's checks use, as in
Citus 13 (sql/citus--8.0-1.sql, udfs/*/latest.sql)."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

pytestmark = pytest.mark.e2e

SIGNATURES = {
    "citus_add_node": "nodename text, nodeport integer, groupid integer DEFAULT '-1'::integer, "
    "noderole noderole DEFAULT 'primary'::noderole, nodecluster name DEFAULT 'default'::name",
    "master_add_node": "nodename text, nodeport integer, groupid integer DEFAULT '-1'::integer, "
    "noderole noderole DEFAULT 'primary'::noderole, nodecluster name DEFAULT 'default'::name",
    "citus_remove_node": "nodename text, nodeport integer",
    "citus_activate_node": "nodename text, nodeport integer",
    "citus_disable_node": "nodename text, nodeport integer, synchronous boolean DEFAULT false",
    "citus_get_active_worker_nodes": "OUT node_name text, OUT node_port bigint",
    "citus_check_connection_to_node": "nodename text, nodeport integer DEFAULT 5432",
    "citus_check_cluster_node_health": "OUT from_nodename text, OUT from_nodeport integer, "
    "OUT to_nodename text, OUT to_nodeport integer, OUT result boolean",
    "run_command_on_workers": "command text, parallel boolean DEFAULT true, "
    "OUT nodename text, OUT nodeport integer, OUT success boolean, OUT result text",
    "run_command_on_all_nodes": "command text, parallel boolean DEFAULT true, "
    "give_warning_for_connection_errors boolean DEFAULT false, OUT nodeid integer, OUT success boolean, OUT result text",
    "run_command_on_shards": "table_name regclass, command text, parallel boolean DEFAULT true, "
    "OUT shardid bigint, OUT success boolean, OUT result text",
    "run_command_on_placements": "table_name regclass, command text, parallel boolean DEFAULT true, "
    "OUT nodename text, OUT nodeport integer, OUT shardid bigint, OUT success boolean, OUT result text",
    "create_distributed_table": "table_name regclass, distribution_column text, "
    "distribution_type citus.distribution_type DEFAULT 'hash'::citus.distribution_type, "
    "colocate_with text DEFAULT 'default'::text, shard_count integer DEFAULT NULL::integer",
    "create_reference_table": "table_name regclass",
    "citus_version": "",
}

CATALOGS = {
    "pg_dist_partition": [
        ("logicalrelid", "regclass"),
        ("partmethod", '"char"'),
        ("partkey", "text"),
        ("colocationid", "integer"),
        ("repmodel", '"char"'),
        ("autoconverted", "boolean"),
    ],
    "pg_dist_shard": [
        ("logicalrelid", "regclass"),
        ("shardid", "bigint"),
        ("shardstorage", '"char"'),
        ("shardminvalue", "text"),
        ("shardmaxvalue", "text"),
    ],
    "pg_dist_placement": [
        ("placementid", "bigint"),
        ("shardid", "bigint"),
        ("shardstate", "integer"),
        ("shardlength", "bigint"),
        ("groupid", "integer"),
    ],
    "citus_shards": [
        ("table_name", "regclass"),
        ("shardid", "bigint"),
        ("shard_name", "text"),
        ("citus_table_type", "text"),
        ("colocation_id", "integer"),
        ("nodename", "text"),
        ("nodeport", "integer"),
        ("shard_size", "bigint"),
    ],
    "public.citus_tables": [
        ("table_name", "regclass"),
        ("citus_table_type", "text"),
        ("distribution_column", "text"),
        ("colocation_id", "integer"),
        ("table_size", "text"),
        ("shard_count", "bigint"),
        ("table_owner", "name"),
        ("access_method", "name"),
    ],
}


@pytest.mark.parametrize("function", sorted(SIGNATURES))
def test_function_signature(conn: psycopg.Connection[Any], function: str) -> None:
    found = conn.execute(
        "SELECT pg_get_function_arguments(p.oid) FROM pg_proc p WHERE p.proname = %s "
        "AND p.pronamespace = 'pg_catalog'::regnamespace",
        (function,),
    ).fetchall()
    assert (SIGNATURES[function],) in found


@pytest.mark.parametrize("relation", sorted(CATALOGS))
def test_catalog_columns(conn: psycopg.Connection[Any], relation: str) -> None:
    columns = conn.execute(
        "SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        (relation,),
    ).fetchall()
    expected = CATALOGS[relation]
    # the columns the checks read, in this order; later Citus releases may append columns (13.2.2 has none more)
    assert columns[: len(expected)] == expected


def test_distribution_type_and_shard_count_setting(conn: psycopg.Connection[Any]) -> None:
    assert conn.execute("SELECT enum_range(NULL::citus.distribution_type)::text").fetchone() == ("{hash,range,append}",)
    assert conn.execute("SHOW citus.shard_count").fetchone() == ("32",)
