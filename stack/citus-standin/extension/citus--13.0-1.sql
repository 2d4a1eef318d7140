/*
 * citus--13.0-1.sql of the deploycheck Citus stand-in.
 *
 * A PL/pgSQL emulation of the Citus 13.0 SQL surface that deployment checks use, on PostgreSQL 15,
 * doing real cross-node work with dblink (remote commands, health checks, shard DDL) and postgres_fdw
 * (shard data). It is NOT Citus: see README.md next to the Dockerfile for what it implements and what it
 * does not. Catalog shapes and function signatures follow citusdata/citus (sql/citus--8.0-1.sql and the
 * udfs/ files of 13.0); error texts follow its C sources where the emulation can reproduce them.
 */

-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "CREATE EXTENSION citus" to load this file. \quit

CREATE SCHEMA citus;
CREATE SCHEMA citus_internal;
-- everything that exists only because this is an emulation lives in citus_standin
CREATE SCHEMA citus_standin;
COMMENT ON SCHEMA citus_standin IS
  'deploycheck Citus stand-in: emulation internals (dblink/postgres_fdw bindings, shard foreign tables)';

SET search_path = pg_catalog;

---------------------------------------------------------------------------------------------------
-- 1. dblink and postgres_fdw, bound inside this extension (so CREATE EXTENSION citus needs nothing else)
---------------------------------------------------------------------------------------------------
CREATE FUNCTION citus_standin.dblink_connect(text, text) RETURNS text
  AS '$libdir/dblink', 'dblink_connect' LANGUAGE C STRICT PARALLEL RESTRICTED;
CREATE FUNCTION citus_standin.dblink_disconnect(text) RETURNS text
  AS '$libdir/dblink', 'dblink_disconnect' LANGUAGE C STRICT PARALLEL RESTRICTED;
CREATE FUNCTION citus_standin.dblink(text, text, boolean) RETURNS SETOF record
  AS '$libdir/dblink', 'dblink_record' LANGUAGE C STRICT PARALLEL RESTRICTED;
CREATE FUNCTION citus_standin.dblink(text, text) RETURNS SETOF record
  AS '$libdir/dblink', 'dblink_record' LANGUAGE C STRICT PARALLEL RESTRICTED;
CREATE FUNCTION citus_standin.dblink_exec(text, text, boolean) RETURNS text
  AS '$libdir/dblink', 'dblink_exec' LANGUAGE C STRICT PARALLEL RESTRICTED;
CREATE FUNCTION citus_standin.dblink_exec(text, text) RETURNS text
  AS '$libdir/dblink', 'dblink_exec' LANGUAGE C STRICT PARALLEL RESTRICTED;
CREATE FUNCTION citus_standin.dblink_error_message(text) RETURNS text
  AS '$libdir/dblink', 'dblink_error_message' LANGUAGE C STRICT PARALLEL RESTRICTED;
CREATE FUNCTION citus_standin.dblink_get_connections() RETURNS text[]
  AS '$libdir/dblink', 'dblink_get_connections' LANGUAGE C PARALLEL RESTRICTED;
CREATE FUNCTION citus_standin.dblink_send_query(text, text) RETURNS int
  AS '$libdir/dblink', 'dblink_send_query' LANGUAGE C STRICT PARALLEL RESTRICTED;
CREATE FUNCTION citus_standin.dblink_is_busy(text) RETURNS int
  AS '$libdir/dblink', 'dblink_is_busy' LANGUAGE C STRICT PARALLEL RESTRICTED;
CREATE FUNCTION citus_standin.dblink_get_result(text, boolean) RETURNS SETOF record
  AS '$libdir/dblink', 'dblink_get_result' LANGUAGE C STRICT PARALLEL RESTRICTED;

CREATE FUNCTION citus_standin.postgres_fdw_handler() RETURNS fdw_handler
  AS '$libdir/postgres_fdw', 'postgres_fdw_handler' LANGUAGE C STRICT;
CREATE FUNCTION citus_standin.postgres_fdw_validator(text[], oid) RETURNS void
  AS '$libdir/postgres_fdw', 'postgres_fdw_validator' LANGUAGE C STRICT;
CREATE FOREIGN DATA WRAPPER citus_standin_fdw
  HANDLER citus_standin.postgres_fdw_handler VALIDATOR citus_standin.postgres_fdw_validator;

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA citus_standin FROM PUBLIC;

---------------------------------------------------------------------------------------------------
-- 2. types, sequences and catalogs, in Citus's column order, types and defaults
---------------------------------------------------------------------------------------------------
CREATE TYPE citus.distribution_type AS ENUM ('hash', 'range', 'append');
CREATE TYPE citus.shard_transfer_mode AS ENUM ('auto', 'force_logical', 'block_writes');
CREATE TYPE pg_catalog.noderole AS ENUM (
  'primary',     -- node is available and accepting writes
  'secondary',   -- node is available but only accepts reads
  'unavailable'  -- node is in recovery or otherwise not usable
);

CREATE SEQUENCE citus.pg_dist_shardid_seq MINVALUE 102008 NO CYCLE;
ALTER SEQUENCE citus.pg_dist_shardid_seq SET SCHEMA pg_catalog;
CREATE SEQUENCE citus.pg_dist_placement_placementid_seq NO CYCLE;
ALTER SEQUENCE citus.pg_dist_placement_placementid_seq SET SCHEMA pg_catalog;
CREATE SEQUENCE citus.pg_dist_groupid_seq MINVALUE 1 MAXVALUE 4294967296;
ALTER SEQUENCE citus.pg_dist_groupid_seq SET SCHEMA pg_catalog;
CREATE SEQUENCE citus.pg_dist_node_nodeid_seq MINVALUE 1 MAXVALUE 4294967296;
ALTER SEQUENCE citus.pg_dist_node_nodeid_seq SET SCHEMA pg_catalog;
CREATE SEQUENCE citus.pg_dist_colocationid_seq MINVALUE 1 MAXVALUE 4294967296;
ALTER SEQUENCE citus.pg_dist_colocationid_seq SET SCHEMA pg_catalog;

CREATE TABLE citus.pg_dist_partition(
  logicalrelid regclass NOT NULL,
  partmethod "char" NOT NULL,
  partkey text,
  colocationid integer DEFAULT 0 NOT NULL,
  repmodel "char" DEFAULT 'c' NOT NULL,
  autoconverted boolean DEFAULT false
);
CREATE UNIQUE INDEX pg_dist_partition_logical_relid_index
  ON citus.pg_dist_partition USING btree(logicalrelid);
CREATE INDEX pg_dist_partition_colocationid_index
  ON citus.pg_dist_partition USING btree(colocationid);
ALTER TABLE citus.pg_dist_partition SET SCHEMA pg_catalog;

CREATE TABLE citus.pg_dist_shard(
  logicalrelid regclass NOT NULL,
  shardid int8 NOT NULL,
  shardstorage "char" NOT NULL,
  shardalias text,
  shardminvalue text,
  shardmaxvalue text
);
-- ALTER-after-CREATE keeps the tuple layout of Citus's catalog
ALTER TABLE citus.pg_dist_shard DROP shardalias;
CREATE UNIQUE INDEX pg_dist_shard_shardid_index ON citus.pg_dist_shard USING btree(shardid);
CREATE INDEX pg_dist_shard_logical_relid_index ON citus.pg_dist_shard USING btree(logicalrelid);
ALTER TABLE citus.pg_dist_shard SET SCHEMA pg_catalog;

CREATE TABLE citus.pg_dist_placement(
  placementid bigint NOT NULL DEFAULT nextval('pg_catalog.pg_dist_placement_placementid_seq'::regclass),
  shardid bigint NOT NULL,
  shardstate int NOT NULL,
  shardlength bigint NOT NULL,
  groupid int NOT NULL
);
CREATE INDEX pg_dist_placement_groupid_index ON citus.pg_dist_placement USING btree(groupid);
CREATE INDEX pg_dist_placement_shardid_index ON citus.pg_dist_placement USING btree(shardid);
CREATE UNIQUE INDEX pg_dist_placement_placementid_index ON citus.pg_dist_placement USING btree(placementid);
ALTER TABLE citus.pg_dist_placement SET SCHEMA pg_catalog;

-- The defaults of nodeid and groupid are crossed in Citus's own catalog (sql/citus--8.0-1.sql); kept as is.
-- citus_add_node assigns both explicitly from the right sequences.
CREATE TABLE citus.pg_dist_node(
  nodeid int NOT NULL DEFAULT nextval('pg_catalog.pg_dist_groupid_seq') PRIMARY KEY,
  groupid int NOT NULL DEFAULT nextval('pg_catalog.pg_dist_node_nodeid_seq'),
  nodename text NOT NULL,
  nodeport int NOT NULL DEFAULT 5432,
  noderack text NOT NULL DEFAULT 'default',
  UNIQUE (nodename, nodeport)
);
ALTER TABLE citus.pg_dist_node
  ADD hasmetadata bool NOT NULL DEFAULT false,
  ADD isactive bool NOT NULL DEFAULT true;
ALTER TABLE citus.pg_dist_node ADD COLUMN noderole pg_catalog.noderole NOT NULL DEFAULT 'primary';
ALTER TABLE citus.pg_dist_node ADD COLUMN nodecluster name NOT NULL DEFAULT 'default';
ALTER TABLE citus.pg_dist_node
  ADD CONSTRAINT primaries_are_only_allowed_in_the_default_cluster
  CHECK (NOT (nodecluster <> 'default' AND noderole = 'primary'));
ALTER TABLE citus.pg_dist_node ADD metadatasynced BOOLEAN DEFAULT FALSE;
ALTER TABLE citus.pg_dist_node ADD shouldhaveshards bool NOT NULL DEFAULT true;
ALTER TABLE citus.pg_dist_node SET SCHEMA pg_catalog;

CREATE TABLE citus.pg_dist_local_group(groupid int NOT NULL PRIMARY KEY);
INSERT INTO citus.pg_dist_local_group VALUES (0);
ALTER TABLE citus.pg_dist_local_group SET SCHEMA pg_catalog;

CREATE TABLE citus.pg_dist_colocation(
  colocationid int NOT NULL PRIMARY KEY,
  shardcount int NOT NULL,
  replicationfactor int NOT NULL,
  distributioncolumntype oid NOT NULL,
  distributioncolumncollation oid NOT NULL DEFAULT 0
);
CREATE INDEX pg_dist_colocation_configuration_index
  ON citus.pg_dist_colocation USING btree(shardcount, replicationfactor, distributioncolumntype);
ALTER TABLE citus.pg_dist_colocation SET SCHEMA pg_catalog;

CREATE TABLE citus.pg_dist_node_metadata(metadata jsonb NOT NULL);
INSERT INTO citus.pg_dist_node_metadata VALUES ('{}');
ALTER TABLE citus.pg_dist_node_metadata SET SCHEMA pg_catalog;

CREATE VIEW citus.pg_dist_shard_placement AS
  SELECT shardid, shardstate, shardlength, nodename, nodeport, placementid
  FROM pg_dist_placement placement INNER JOIN pg_dist_node node ON (
    placement.groupid = node.groupid AND node.noderole = 'primary'
  );
ALTER VIEW citus.pg_dist_shard_placement SET SCHEMA pg_catalog;

CREATE FUNCTION citus_internal.pg_dist_node_trigger_func() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  -- AddNodeMetadata also takes out a ShareRowExclusiveLock
  LOCK TABLE pg_dist_node IN SHARE ROW EXCLUSIVE MODE;
  IF NEW.noderole = 'primary'
     AND EXISTS (SELECT 1 FROM pg_dist_node WHERE groupid = NEW.groupid AND
                 noderole = 'primary' AND nodeid <> NEW.nodeid) THEN
    RAISE EXCEPTION 'there cannot be two primary nodes in a group';
  END IF;
  RETURN NEW;
END;
$$;
CREATE TRIGGER pg_dist_node_trigger
  BEFORE INSERT OR UPDATE ON pg_catalog.pg_dist_node
  FOR EACH ROW EXECUTE FUNCTION citus_internal.pg_dist_node_trigger_func();

GRANT SELECT ON pg_catalog.pg_dist_partition, pg_catalog.pg_dist_shard, pg_catalog.pg_dist_placement,
  pg_catalog.pg_dist_node, pg_catalog.pg_dist_local_group, pg_catalog.pg_dist_colocation,
  pg_catalog.pg_dist_node_metadata, pg_catalog.pg_dist_shard_placement TO public;
GRANT SELECT ON pg_catalog.pg_dist_shardid_seq, pg_catalog.pg_dist_placement_placementid_seq,
  pg_catalog.pg_dist_groupid_seq, pg_catalog.pg_dist_node_nodeid_seq, pg_catalog.pg_dist_colocationid_seq
  TO public;
GRANT USAGE ON SCHEMA citus, citus_internal, citus_standin TO public;

-- metadata is kept by pg_dump, as Citus marks it
SELECT pg_catalog.pg_extension_config_dump('pg_dist_partition', '');
SELECT pg_catalog.pg_extension_config_dump('pg_dist_shard', '');
SELECT pg_catalog.pg_extension_config_dump('pg_dist_placement', '');
SELECT pg_catalog.pg_extension_config_dump('pg_dist_node', '');
SELECT pg_catalog.pg_extension_config_dump('pg_dist_colocation', '');
SELECT pg_catalog.pg_extension_config_dump('pg_dist_node_metadata', '');
SELECT pg_catalog.pg_extension_config_dump('pg_dist_shardid_seq', '');
SELECT pg_catalog.pg_extension_config_dump('pg_dist_placement_placementid_seq', '');
SELECT pg_catalog.pg_extension_config_dump('pg_dist_groupid_seq', '');
SELECT pg_catalog.pg_extension_config_dump('pg_dist_node_nodeid_seq', '');
SELECT pg_catalog.pg_extension_config_dump('pg_dist_colocationid_seq', '');

-- emulation bookkeeping
CREATE TYPE citus_standin.node_address AS (groupid int, nodename text, nodeport int);
CREATE TABLE citus_standin.reference_replica(   -- where writes to a reference table are replicated
  shardid bigint NOT NULL,
  groupid int NOT NULL,
  replica regclass NOT NULL,                     -- foreign table (worker) or local table (coordinator)
  PRIMARY KEY (shardid, groupid)
);
CREATE TABLE citus_standin.deferred_fkey(       -- FKs of local tables to a table that got distributed
  conrelid oid NOT NULL,
  conname name NOT NULL,
  referenced_name text NOT NULL,                 -- qualified name of the referenced table
  condef text NOT NULL,
  PRIMARY KEY (conrelid, conname)
);
CREATE TABLE citus_standin.table_signature(     -- columns and name of each Citus table when it was created
  logicalrelid oid PRIMARY KEY,
  relname name NOT NULL,
  columns text NOT NULL
);
GRANT SELECT ON citus_standin.reference_replica, citus_standin.deferred_fkey, citus_standin.table_signature
  TO public;
SELECT pg_catalog.pg_extension_config_dump('citus_standin.reference_replica', '');
SELECT pg_catalog.pg_extension_config_dump('citus_standin.deferred_fkey', '');
SELECT pg_catalog.pg_extension_config_dump('citus_standin.table_signature', '');

---------------------------------------------------------------------------------------------------
-- 3. helpers: settings, connections, remote execution
---------------------------------------------------------------------------------------------------
CREATE FUNCTION citus_standin.guc(setting_name text, default_value text) RETURNS text
LANGUAGE sql STABLE AS $$
  SELECT coalesce(nullif(current_setting(setting_name, true), ''), default_value)
$$;

CREATE FUNCTION citus_standin.connect_timeout_seconds() RETURNS int
LANGUAGE plpgsql STABLE AS $$
DECLARE
  v text := lower(btrim(citus_standin.guc('citus.node_connection_timeout', '30000')));
  ms numeric;
BEGIN
  IF v ~ '^\d+$' THEN ms := v::numeric;
  ELSIF v ~ '^\d+\s*ms$' THEN ms := substring(v from '^\d+')::numeric;
  ELSIF v ~ '^\d+\s*s$' THEN ms := substring(v from '^\d+')::numeric * 1000;
  ELSIF v ~ '^\d+\s*min$' THEN ms := substring(v from '^\d+')::numeric * 60000;
  ELSE ms := 30000;
  END IF;
  RETURN greatest(2, ceil(ms / 1000.0))::int;   -- libpq's connect_timeout has a 2 s minimum
END;
$$;

CREATE FUNCTION citus_standin.conninfo_quote(v text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
  SELECT '''' || replace(replace(v, '\', '\\'), '''', '\''') || ''''
$$;

CREATE FUNCTION citus_standin.connstr(nodename text, nodeport int) RETURNS text
LANGUAGE sql STABLE AS $$
  SELECT format('host=%s port=%s dbname=%s user=%s connect_timeout=%s application_name=citus_standin',
                citus_standin.conninfo_quote(nodename), nodeport,
                citus_standin.conninfo_quote(current_database()),
                citus_standin.conninfo_quote(current_user),
                citus_standin.connect_timeout_seconds())
$$;

CREATE FUNCTION citus_standin.first_line(msg text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
  SELECT split_part(rtrim(coalesce(msg, ''), E'\n'), E'\n', 1)
$$;

CREATE FUNCTION citus_standin.disconnect(conn text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  IF conn = ANY (coalesce(citus_standin.dblink_get_connections(), '{}'::text[])) THEN
    PERFORM citus_standin.dblink_disconnect(conn);
  END IF;
END;
$$;

-- Opens the named dblink connection to a node. Returns NULL when connected, else libpq's error text.
CREATE FUNCTION citus_standin.connect_node(conn text, nodename text, nodeport int) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
  msg text;
  det text;
BEGIN
  PERFORM citus_standin.disconnect(conn);
  BEGIN
    PERFORM citus_standin.dblink_connect(conn, citus_standin.connstr(nodename, nodeport));
  EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL;
    RETURN rtrim(coalesce(nullif(det, ''), msg), E'\n ');
  END;
  RETURN NULL;
END;
$$;

CREATE FUNCTION citus_standin.connection_error(nodename text, nodeport int, err text) RETURNS text
LANGUAGE sql STABLE AS $$
  SELECT format('connection to the remote node %s@%s:%s failed with the following error: %s',
                current_user, nodename, nodeport, err)
$$;

-- Waits, interruptibly, until none of the connections is busy with an asynchronous query, or the deadline
-- passes. dblink's own waits (dblink(), dblink_get_result() on a busy connection) block in libpq and ignore
-- statement_timeout and cancels on PostgreSQL 15; this loop sleeps with pg_sleep, which does not.
-- Returns the connections still busy at the deadline.
CREATE FUNCTION citus_standin.wait_until_idle(conns text[], deadline timestamptz) RETURNS text[]
LANGUAGE plpgsql AS $$
DECLARE
  busy text[] := conns;
  pause float8 := 0.0002;
BEGIN
  LOOP
    SELECT coalesce(array_agg(c), '{}') INTO busy FROM unnest(busy) AS c WHERE citus_standin.dblink_is_busy(c) = 1;
    IF cardinality(busy) = 0 OR clock_timestamp() >= deadline THEN
      RETURN busy;
    END IF;
    PERFORM pg_sleep(pause);
    pause := least(pause * 2, 0.01);
  END LOOP;
END;
$$;

-- The session's connection to a node, kept open between calls as Citus keeps one per worker
-- (citus.max_cached_conns_per_worker, default 1; 0 closes it after each use, see release_node_connection).
-- A kept connection is reset and checked before each use with DISCARD ALL, asynchronously and within
-- citus.node_connection_timeout: so each use starts from a clean session, a connection the node has closed
-- (a restart) is replaced by a new one, and a node that stopped answering fails like an unreachable one
-- instead of hanging. Returns the connection's name, or raises Citus's connection error.
CREATE FUNCTION citus_standin.node_connection(nodename text, nodeport int) RETURNS text
LANGUAGE plpgsql SET client_min_messages = warning AS $$
DECLARE
  -- dblink cuts connection names at 63 bytes: a digest of the address, so long host names cannot collide
  conn text := 'citus_standin_node_' || md5(format('%s@%s:%s/%s', current_user, nodename, nodeport, current_database()));
  err text;
  status text;
BEGIN
  IF conn = ANY (coalesce(citus_standin.dblink_get_connections(), '{}'::text[])) THEN
    BEGIN
      IF citus_standin.dblink_send_query(conn, 'DISCARD ALL') = 1
         AND cardinality(citus_standin.wait_until_idle(ARRAY[conn],
               clock_timestamp() + citus_standin.connect_timeout_seconds() * interval '1 second')) = 0 THEN
        SELECT t.s INTO status FROM citus_standin.dblink_get_result(conn, false) AS t(s text);
        PERFORM 1 FROM citus_standin.dblink_get_result(conn, false) AS t(s text);  -- the end of the results
      END IF;
    EXCEPTION WHEN OTHERS THEN
      status := NULL;
    END;
    IF status = 'DISCARD ALL' THEN
      RETURN conn;
    END IF;
    PERFORM citus_standin.disconnect(conn);  -- closed by the node, stuck, or in a transaction: a new one
  END IF;
  err := citus_standin.connect_node(conn, nodename, nodeport);
  IF err IS NOT NULL THEN
    RAISE EXCEPTION '%', citus_standin.connection_error(nodename, nodeport, err)
      USING ERRCODE = 'connection_failure';
  END IF;
  RETURN conn;
END;
$$;

CREATE FUNCTION citus_standin.release_node_connection(conn text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  IF citus_standin.guc('citus.max_cached_conns_per_worker', '1') = '0' THEN
    PERFORM citus_standin.disconnect(conn);
  END IF;
END;
$$;

-- Runs commands on a node in one remote transaction (or one by one when transactional is false);
-- raises an ERROR when the node cannot be reached or a command fails.
CREATE FUNCTION citus_standin.run_commands_on_node(nodename text, nodeport int, commands text[],
                                                   transactional bool DEFAULT true) RETURNS void
LANGUAGE plpgsql SET client_min_messages = warning AS $$
DECLARE
  conn text;
  err text;
  cmd text;
  status text;
BEGIN
  IF coalesce(cardinality(commands), 0) = 0 THEN
    RETURN;
  END IF;
  conn := citus_standin.node_connection(nodename, nodeport);
  BEGIN
    IF transactional THEN
      PERFORM citus_standin.dblink_exec(conn, 'BEGIN');
    END IF;
    FOREACH cmd IN ARRAY commands LOOP
      status := citus_standin.dblink_exec(conn, cmd, false);
      IF status = 'ERROR' THEN
        err := citus_standin.first_line(citus_standin.dblink_error_message(conn));
        RAISE EXCEPTION '%', regexp_replace(err, '^[A-Z]+:\s+', '')
          USING DETAIL = format('while executing command on %s:%s: %s', nodename, nodeport, left(cmd, 500));
      END IF;
    END LOOP;
    IF transactional THEN
      PERFORM citus_standin.dblink_exec(conn, 'COMMIT');
    END IF;
  EXCEPTION WHEN OTHERS THEN
    PERFORM citus_standin.disconnect(conn);
    RAISE;
  END;
  PERFORM citus_standin.release_node_connection(conn);
END;
$$;

-- Applies Citus's result rules (EvaluateQueryResult in operations/citus_tools.c) to one command on an
-- open connection: utility command -> its tag; 1 row x 1 column -> the value (NULL -> ''); 0 rows -> '';
-- more than one column or row -> failure text; remote error -> the first line of libpq's message.
CREATE FUNCTION citus_standin.command_result(vals text[], errmsg text, OUT success bool, OUT result text)
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
  IF vals IS NULL AND errmsg IS NOT NULL AND errmsg <> 'OK' AND errmsg <> '' THEN
    success := false;
    result := citus_standin.first_line(errmsg);
  ELSIF coalesce(cardinality(vals), 0) > 1 THEN
    success := false;
    result := 'expected a single row in query result';
  ELSE
    success := true;
    result := coalesce(vals[1], '');
  END IF;
END;
$$;

-- Runs one command on an open connection and applies command_result; never raises: any error (the
-- connection lost, too) is the command's failure, with its first line as the result.
CREATE FUNCTION citus_standin.evaluate_command(conn text, command text, OUT success bool, OUT result text)
LANGUAGE plpgsql SET client_min_messages = warning AS $$
DECLARE
  vals text[];
BEGIN
  BEGIN
    SELECT array_agg(t.v) INTO vals FROM citus_standin.dblink(conn, command, false) AS t(v text);
  EXCEPTION WHEN datatype_mismatch THEN
    -- dblink could not fit the remote row into one text column
    success := false;
    result := 'expected a single column in query target';
    RETURN;
  END;
  SELECT r.success, r.result INTO success, result
  FROM citus_standin.command_result(vals, citus_standin.dblink_error_message(conn)) r;
EXCEPTION WHEN OTHERS THEN
  success := false;
  result := citus_standin.first_line(SQLERRM);
END;
$$;

-- Name of the postgres_fdw server through which the coordinator reaches a node's shards.
CREATE FUNCTION citus_standin.server_name(nodename text, nodeport int) RETURNS name
LANGUAGE sql IMMUTABLE AS $$
  SELECT left(format('%s:%s', nodename, nodeport), 63)::name
$$;

CREATE FUNCTION citus_standin.ensure_server(nodename text, nodeport int) RETURNS name
LANGUAGE plpgsql AS $$
DECLARE
  srv name := citus_standin.server_name(nodename, nodeport);
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_foreign_server WHERE srvname = srv) THEN
    EXECUTE format('CREATE SERVER %I FOREIGN DATA WRAPPER citus_standin_fdw OPTIONS '
                   '(host %L, port %L, dbname %L, connect_timeout %L, application_name %L, batch_size %L)',
                   srv, nodename, nodeport::text, current_database(),
                   citus_standin.connect_timeout_seconds()::text, 'citus_standin', '100');
    -- every local role reaches the shards as the role that registered the node; the password comes from
    -- PGPASSWORD (or ~/.pgpass) in the server's environment, as Citus's connections get it
    EXECUTE format('CREATE USER MAPPING FOR PUBLIC SERVER %I OPTIONS (user %L, password_required %L)',
                   srv, current_user, 'false');
  END IF;
  RETURN srv;
END;
$$;

CREATE FUNCTION citus_standin.ensure_superuser() RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
    RAISE EXCEPTION 'operation is not allowed' USING HINT = 'Run the command with a superuser.';
  END IF;
END;
$$;

CREATE FUNCTION citus_standin.ensure_coordinator() RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  IF (SELECT groupid FROM pg_dist_local_group) <> 0 THEN
    RAISE EXCEPTION 'operation is not allowed on this node'
      USING HINT = 'Connect to the coordinator and run it again.';
  END IF;
END;
$$;

---------------------------------------------------------------------------------------------------
-- 4. version
---------------------------------------------------------------------------------------------------
CREATE FUNCTION pg_catalog.citus_version() RETURNS text
LANGUAGE sql STABLE AS $$
  SELECT 'Citus 13.0.3 (stand-in: PostgreSQL ' || current_setting('server_version_num')::int / 10000
         || ' PL/pgSQL emulation, not Citus)'
         || coalesce(substring(version() from ' on .*$'), '')
$$;
COMMENT ON FUNCTION pg_catalog.citus_version() IS 'Citus version string';

---------------------------------------------------------------------------------------------------
-- 5. node management (operations/node_protocol.c, metadata/node_metadata.c)
---------------------------------------------------------------------------------------------------
CREATE FUNCTION pg_catalog.citus_get_active_worker_nodes(OUT node_name text, OUT node_port bigint)
RETURNS SETOF record
LANGUAGE sql STABLE STRICT ROWS 100 AS $$
  -- ActiveReadableNonCoordinatorNodeList(): reads the metadata only, opens no connection
  SELECT nodename, nodeport::bigint
  FROM pg_catalog.pg_dist_node
  WHERE isactive AND groupid <> 0
    AND nodecluster = citus_standin.guc('citus.cluster_name', 'default')
    AND ((citus_standin.guc('citus.use_secondary_nodes', 'never') = 'never' AND noderole = 'primary')
         OR (citus_standin.guc('citus.use_secondary_nodes', 'never') = 'always' AND noderole = 'secondary'))
  ORDER BY nodeid
$$;
COMMENT ON FUNCTION pg_catalog.citus_get_active_worker_nodes() IS 'fetch set of active worker nodes';

CREATE FUNCTION pg_catalog.master_get_active_worker_nodes(OUT node_name text, OUT node_port bigint)
RETURNS SETOF record
LANGUAGE sql STABLE STRICT ROWS 100 AS $$
  SELECT * FROM pg_catalog.citus_get_active_worker_nodes()
$$;

-- ActiveReadableNodeList(): active, readable nodes of the current cluster (the coordinator only if added)
CREATE FUNCTION citus_standin.active_readable_nodes()
RETURNS SETOF pg_catalog.pg_dist_node
LANGUAGE sql STABLE AS $$
  SELECT * FROM pg_catalog.pg_dist_node
  WHERE isactive
    AND nodecluster = citus_standin.guc('citus.cluster_name', 'default')
    AND ((citus_standin.guc('citus.use_secondary_nodes', 'never') = 'never' AND noderole = 'primary')
         OR (citus_standin.guc('citus.use_secondary_nodes', 'never') = 'always' AND noderole = 'secondary'))
$$;

CREATE FUNCTION citus_standin.modifiable_node(p_nodename text, p_nodeport int) RETURNS pg_catalog.pg_dist_node
LANGUAGE plpgsql AS $$
DECLARE
  n pg_catalog.pg_dist_node;
BEGIN
  PERFORM citus_standin.ensure_coordinator();
  PERFORM citus_standin.ensure_superuser();
  SELECT * INTO n FROM pg_catalog.pg_dist_node WHERE nodename = p_nodename AND nodeport = p_nodeport;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'node at "%:%" does not exist', p_nodename, p_nodeport;
  END IF;
  RETURN n;
END;
$$;

-- ErrorIfNodeContainsNonRemovablePlacements
CREATE FUNCTION citus_standin.error_if_only_placements(n pg_catalog.pg_dist_node) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
  r record;
BEGIN
  SELECT p.shardid, s.logicalrelid INTO r
  FROM pg_catalog.pg_dist_placement p JOIN pg_catalog.pg_dist_shard s USING (shardid)
  WHERE p.groupid = n.groupid AND p.shardstate = 1
    AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_placement o JOIN pg_catalog.pg_dist_node on2
                      ON on2.groupid = o.groupid AND on2.isactive
                    WHERE o.shardid = p.shardid AND o.groupid <> p.groupid AND o.shardstate = 1)
  ORDER BY p.shardid
  LIMIT 1;
  IF FOUND THEN
    RAISE EXCEPTION 'cannot remove or disable the node %:% because because it contains the only shard placement for shard %',
      n.nodename, n.nodeport, r.shardid
      USING DETAIL = format('One of the table(s) that prevents the operation complete successfully is %s',
                            r.logicalrelid::regclass::text),
            HINT = 'To proceed, either drop the tables or use undistribute_table() function to convert them to local tables';
  END IF;
END;
$$;

-- ActivateNode: connects (an unreachable node is an ERROR, so the caller's insert is rolled back),
-- prepares the foreign server, replicates reference tables and marks the node active with metadata.
CREATE FUNCTION citus_standin.activate_node(p_nodename text, p_nodeport int) RETURNS int
LANGUAGE plpgsql SET client_min_messages = warning AS $$
DECLARE
  n pg_catalog.pg_dist_node;
  conn text := 'citus_standin_activate';
  err text;
  remote_sysid text;
  r record;
BEGIN
  SELECT * INTO n FROM pg_catalog.pg_dist_node WHERE nodename = p_nodename AND nodeport = p_nodeport;
  err := citus_standin.connect_node(conn, p_nodename, p_nodeport);
  IF err IS NOT NULL THEN
    RAISE EXCEPTION '%', citus_standin.connection_error(p_nodename, p_nodeport, err)
      USING ERRCODE = 'connection_failure';
  END IF;
  BEGIN
    SELECT t.sysid INTO remote_sysid
    FROM citus_standin.dblink(conn, 'SELECT system_identifier::text FROM pg_control_system()') AS t(sysid text);
  EXCEPTION WHEN OTHERS THEN
    PERFORM citus_standin.disconnect(conn);
    RAISE;
  END;
  PERFORM citus_standin.disconnect(conn);

  IF n.groupid <> 0 AND n.noderole <> 'secondary'
     AND remote_sysid = (SELECT system_identifier::text FROM pg_control_system()) THEN
    RAISE EXCEPTION 'Node cannot add itself as a worker.'
      USING HINT = format('Add the node as a coordinator by using: SELECT citus_set_coordinator_host(''%s'', %s);',
                          p_nodename, p_nodeport);
  END IF;

  PERFORM citus_standin.ensure_server(p_nodename, p_nodeport);

  IF n.noderole = 'primary' THEN
    -- replicate the reference tables the node does not have yet
    FOR r IN
      SELECT s.shardid, s.logicalrelid FROM pg_catalog.pg_dist_shard s
      JOIN pg_catalog.pg_dist_partition p USING (logicalrelid)
      WHERE p.repmodel = 't' AND p.partmethod = 'n'
        AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_placement pl
                        WHERE pl.shardid = s.shardid AND pl.groupid = n.groupid)
      ORDER BY s.shardid
    LOOP
      PERFORM citus_standin.create_reference_placement(r.logicalrelid, r.shardid, n.groupid);
    END LOOP;
    UPDATE pg_catalog.pg_dist_node SET isactive = true, hasmetadata = true, metadatasynced = true
    WHERE nodeid = n.nodeid;
  ELSE
    UPDATE pg_catalog.pg_dist_node SET isactive = true WHERE nodeid = n.nodeid;
  END IF;
  RETURN n.nodeid;
END;
$$;

CREATE FUNCTION pg_catalog.citus_add_node(nodename text, nodeport integer, groupid integer DEFAULT -1,
    noderole pg_catalog.noderole DEFAULT 'primary', nodecluster name DEFAULT 'default')
RETURNS integer
LANGUAGE plpgsql STRICT AS $$
DECLARE
  existing int;
  coordinator_name text;
  v_groupid int := citus_add_node.groupid;
  v_nodeid int;
BEGIN
  PERFORM citus_standin.ensure_coordinator();
  PERFORM citus_standin.ensure_superuser();

  -- idempotent: an existing node gives its id back
  SELECT n.nodeid INTO existing FROM pg_catalog.pg_dist_node n
  WHERE n.nodename = citus_add_node.nodename AND n.nodeport = citus_add_node.nodeport;
  IF FOUND THEN
    RETURN existing;
  END IF;

  LOCK TABLE pg_catalog.pg_dist_node IN EXCLUSIVE MODE;
  SELECT n.nodeid INTO existing FROM pg_catalog.pg_dist_node n
  WHERE n.nodename = citus_add_node.nodename AND n.nodeport = citus_add_node.nodeport;
  IF FOUND THEN
    RETURN existing;
  END IF;

  IF v_groupid <> 0 AND citus_add_node.nodename <> 'localhost' THEN
    SELECT n.nodename INTO coordinator_name FROM pg_catalog.pg_dist_node n
    WHERE n.groupid = 0 AND n.noderole = 'primary';
    IF coordinator_name = 'localhost' THEN
      RAISE EXCEPTION 'cannot add a worker node when the coordinator hostname is set to localhost'
        USING DETAIL = 'Worker nodes need to be able to connect to the coordinator to transfer data.',
              HINT = 'Use SELECT citus_set_coordinator_host(''<hostname>'') to configure the coordinator hostname';
    END IF;
  END IF;

  IF v_groupid = -1 THEN
    v_groupid := nextval('pg_catalog.pg_dist_groupid_seq');
  END IF;

  IF citus_add_node.noderole = 'primary' THEN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_dist_node n
               WHERE n.groupid = v_groupid AND n.noderole = 'primary') THEN
      RAISE EXCEPTION 'group % already has a primary node', v_groupid;
    END IF;
    IF citus_add_node.nodecluster <> 'default' THEN
      RAISE EXCEPTION 'primaries must be added to the default cluster';
    END IF;
  END IF;

  v_nodeid := nextval('pg_catalog.pg_dist_node_nodeid_seq');
  INSERT INTO pg_catalog.pg_dist_node (nodeid, groupid, nodename, nodeport, noderack, hasmetadata,
                                       isactive, noderole, nodecluster, metadatasynced, shouldhaveshards)
  VALUES (v_nodeid, v_groupid, citus_add_node.nodename, citus_add_node.nodeport, 'default',
          v_groupid = 0, v_groupid = 0, citus_add_node.noderole, citus_add_node.nodecluster,
          v_groupid = 0, v_groupid <> 0);

  PERFORM citus_standin.activate_node(citus_add_node.nodename, citus_add_node.nodeport);
  RETURN v_nodeid;
END;
$$;
COMMENT ON FUNCTION pg_catalog.citus_add_node(text, integer, integer, pg_catalog.noderole, name)
  IS 'add node to the cluster';

CREATE FUNCTION pg_catalog.master_add_node(nodename text, nodeport integer, groupid integer DEFAULT -1,
    noderole pg_catalog.noderole DEFAULT 'primary', nodecluster name DEFAULT 'default')
RETURNS integer
LANGUAGE sql STRICT AS $$
  SELECT pg_catalog.citus_add_node($1, $2, $3, $4, $5)
$$;

CREATE FUNCTION pg_catalog.citus_set_coordinator_host(host text,
    port integer DEFAULT current_setting('port')::int,
    node_role pg_catalog.noderole DEFAULT 'primary', node_cluster name DEFAULT 'default')
RETURNS void
LANGUAGE plpgsql STRICT AS $$
DECLARE
  coordinator_id int;
BEGIN
  PERFORM citus_standin.ensure_coordinator();
  PERFORM citus_standin.ensure_superuser();
  LOCK TABLE pg_catalog.pg_dist_node IN EXCLUSIVE MODE;
  SELECT nodeid INTO coordinator_id FROM pg_catalog.pg_dist_node WHERE groupid = 0 AND noderole = 'primary';
  IF NOT FOUND THEN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_dist_node WHERE nodename = host AND nodeport = port) THEN
      RAISE EXCEPTION 'node at "%:%" already exists', host, port;
    END IF;
    INSERT INTO pg_catalog.pg_dist_node (nodeid, groupid, nodename, nodeport, noderack, hasmetadata,
                                         isactive, noderole, nodecluster, metadatasynced, shouldhaveshards)
    VALUES (nextval('pg_catalog.pg_dist_node_nodeid_seq'), 0, host, port, 'default', true, true,
            node_role, node_cluster, true, false);
  ELSE
    UPDATE pg_catalog.pg_dist_node SET nodename = host, nodeport = port WHERE nodeid = coordinator_id;
  END IF;
END;
$$;
COMMENT ON FUNCTION pg_catalog.citus_set_coordinator_host(text, integer, pg_catalog.noderole, name)
  IS 'set the host and port of the coordinator';

CREATE FUNCTION pg_catalog.citus_activate_node(nodename text, nodeport integer) RETURNS integer
LANGUAGE plpgsql STRICT AS $$
BEGIN
  PERFORM citus_standin.modifiable_node(nodename, nodeport);
  RETURN citus_standin.activate_node(nodename, nodeport);
END;
$$;
CREATE FUNCTION pg_catalog.master_activate_node(nodename text, nodeport integer) RETURNS integer
LANGUAGE sql STRICT AS $$ SELECT pg_catalog.citus_activate_node($1, $2) $$;

CREATE FUNCTION pg_catalog.citus_disable_node(nodename text, nodeport integer, synchronous bool DEFAULT false)
RETURNS void
LANGUAGE plpgsql STRICT AS $$
DECLARE
  n pg_catalog.pg_dist_node;
  first_worker int;
BEGIN
  n := citus_standin.modifiable_node(nodename, nodeport);
  IF n.groupid = 0 THEN
    RAISE EXCEPTION 'cannot change "isactive" field of the coordinator node';
  END IF;
  -- GetFirstPrimaryWorkerNode(): the active primary worker that sorts first by name, port
  SELECT w.nodeid INTO first_worker FROM pg_catalog.pg_dist_node w
  WHERE w.isactive AND w.noderole = 'primary' AND w.groupid <> 0
  ORDER BY w.nodename COLLATE "C", w.nodeport LIMIT 1;
  IF first_worker = n.nodeid AND NOT synchronous THEN
    RAISE EXCEPTION 'disabling the first worker node in the metadata is not allowed'
      USING ERRCODE = 'object_not_in_prerequisite_state',
            DETAIL = 'Citus uses the first worker node in the metadata for certain internal operations when replicated tables are modified. Synchronous mode ensures that all nodes have the same view of the first worker node, which is used for certain locking operations.',
            HINT = format('You can force disabling node, SELECT citus_disable_node(''%s'', %s, synchronous:=true);',
                          nodename, nodeport);
  END IF;
  UPDATE pg_catalog.pg_dist_node SET isactive = false WHERE nodeid = n.nodeid;
  IF n.noderole = 'primary' THEN
    PERFORM citus_standin.error_if_only_placements(n);
  END IF;
END;
$$;
COMMENT ON FUNCTION pg_catalog.citus_disable_node(text, integer, bool)
  IS 'removes node from the cluster temporarily';

CREATE FUNCTION pg_catalog.master_disable_node(nodename text, nodeport integer) RETURNS void
LANGUAGE sql STRICT AS $$ SELECT pg_catalog.citus_disable_node($1, $2, true) $$;

CREATE FUNCTION pg_catalog.citus_remove_node(nodename text, nodeport integer) RETURNS void
LANGUAGE plpgsql STRICT AS $$
DECLARE
  n pg_catalog.pg_dist_node;
  r record;
BEGIN
  n := citus_standin.modifiable_node(nodename, nodeport);
  IF n.noderole = 'primary' THEN
    PERFORM citus_standin.error_if_only_placements(n);
    -- reference table placements on the node go away (the tables stay on the node, as in Citus)
    FOR r IN SELECT rr.shardid, rr.replica FROM citus_standin.reference_replica rr WHERE rr.groupid = n.groupid LOOP
      EXECUTE format('DROP FOREIGN TABLE IF EXISTS %s', r.replica);
      DELETE FROM citus_standin.reference_replica WHERE shardid = r.shardid AND groupid = n.groupid;
    END LOOP;
    DELETE FROM pg_catalog.pg_dist_placement WHERE groupid = n.groupid;
  END IF;
  DELETE FROM pg_catalog.pg_dist_node WHERE nodeid = n.nodeid;
  EXECUTE format('DROP SERVER IF EXISTS %I CASCADE', citus_standin.server_name(nodename, nodeport));
END;
$$;
COMMENT ON FUNCTION pg_catalog.citus_remove_node(text, integer) IS 'remove node from the cluster';

CREATE FUNCTION pg_catalog.master_remove_node(nodename text, nodeport integer) RETURNS void
LANGUAGE sql STRICT AS $$ SELECT pg_catalog.citus_remove_node($1, $2) $$;

CREATE FUNCTION pg_catalog.citus_set_node_property(nodename text, nodeport integer, property text, value boolean)
RETURNS void
LANGUAGE plpgsql STRICT AS $$
DECLARE
  n pg_catalog.pg_dist_node;
BEGIN
  n := citus_standin.modifiable_node(nodename, nodeport);
  IF property <> 'shouldhaveshards' THEN
    RAISE EXCEPTION 'only the ''shouldhaveshards'' property can be set using this function';
  END IF;
  UPDATE pg_catalog.pg_dist_node SET shouldhaveshards = value WHERE nodeid = n.nodeid;
END;
$$;

CREATE FUNCTION pg_catalog.citus_is_coordinator() RETURNS bool
LANGUAGE sql STABLE AS $$
  SELECT (SELECT groupid FROM pg_catalog.pg_dist_local_group) = 0
         AND EXISTS (SELECT 1 FROM citus_standin.active_readable_nodes())
$$;
CREATE FUNCTION pg_catalog.citus_coordinator_nodeid() RETURNS integer
LANGUAGE sql STABLE AS $$
  SELECT coalesce((SELECT nodeid FROM pg_catalog.pg_dist_node WHERE groupid = 0 AND noderole = 'primary'
                   AND nodecluster = citus_standin.guc('citus.cluster_name', 'default') LIMIT 1), 0)
$$;
CREATE FUNCTION pg_catalog.citus_nodename_for_nodeid(nodeid integer) RETURNS text
LANGUAGE sql STABLE AS $$ SELECT n.nodename FROM pg_catalog.pg_dist_node n WHERE n.nodeid = $1 $$;
CREATE FUNCTION pg_catalog.citus_nodeport_for_nodeid(nodeid integer) RETURNS integer
LANGUAGE sql STABLE AS $$ SELECT n.nodeport FROM pg_catalog.pg_dist_node n WHERE n.nodeid = $1 $$;

REVOKE ALL ON FUNCTION pg_catalog.citus_add_node(text, integer, integer, pg_catalog.noderole, name) FROM PUBLIC;
REVOKE ALL ON FUNCTION pg_catalog.master_add_node(text, integer, integer, pg_catalog.noderole, name) FROM PUBLIC;
REVOKE ALL ON FUNCTION pg_catalog.citus_set_coordinator_host(text, integer, pg_catalog.noderole, name) FROM PUBLIC;
REVOKE ALL ON FUNCTION pg_catalog.citus_activate_node(text, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION pg_catalog.master_activate_node(text, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION pg_catalog.citus_disable_node(text, integer, bool) FROM PUBLIC;
REVOKE ALL ON FUNCTION pg_catalog.master_disable_node(text, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION pg_catalog.citus_remove_node(text, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION pg_catalog.master_remove_node(text, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION pg_catalog.citus_set_node_property(text, integer, text, boolean) FROM PUBLIC;

---------------------------------------------------------------------------------------------------
-- 6. connectivity checks (operations/health_check.c)
---------------------------------------------------------------------------------------------------
CREATE FUNCTION pg_catalog.citus_check_connection_to_node(nodename text, nodeport integer DEFAULT 5432)
RETURNS bool
LANGUAGE plpgsql STRICT SET client_min_messages = warning AS $$
DECLARE
  conn text := 'citus_standin_check_connection';
  err text;
  ok int;
BEGIN
  err := citus_standin.connect_node(conn, nodename, nodeport);
  IF err IS NULL THEN
    BEGIN
      SELECT t.x INTO ok FROM citus_standin.dblink(conn, 'SELECT 1') AS t(x int);
    EXCEPTION WHEN OTHERS THEN
      err := SQLERRM;
    END;
  END IF;
  PERFORM citus_standin.disconnect(conn);
  IF err IS NOT NULL THEN
    RAISE WARNING '%', citus_standin.connection_error(nodename, nodeport, err);
    RETURN false;
  END IF;
  RETURN true;
END;
$$;
COMMENT ON FUNCTION pg_catalog.citus_check_connection_to_node(text, integer)
  IS 'checks connection to another node';

CREATE FUNCTION pg_catalog.citus_check_cluster_node_health(
    OUT from_nodename text, OUT from_nodeport int,
    OUT to_nodename text, OUT to_nodeport int, OUT result bool)
RETURNS SETOF record
LANGUAGE plpgsql SET client_min_messages = warning AS $$
DECLARE
  nodes citus_standin.node_address[];
  names text[];
  ports int[];
  conns text[] := '{}';
  errors text[] := '{}';
  src citus_standin.node_address;
  dst citus_standin.node_address;
  conn text;
  err text;
  stuck text[];
  checks bool[];
  i int;
  j int;
BEGIN
  SELECT array_agg(ROW(n.groupid, n.nodename, n.nodeport)::citus_standin.node_address
                   ORDER BY n.nodename COLLATE "C", n.nodeport) INTO nodes
  FROM citus_standin.active_readable_nodes() n;
  IF nodes IS NULL THEN
    RETURN;
  END IF;
  SELECT array_agg(n.nodename ORDER BY o), array_agg(n.nodeport ORDER BY o) INTO names, ports
  FROM unnest(nodes) WITH ORDINALITY AS n(groupid, nodename, nodeport, o);
  -- The coordinator asks each source node to check every target, itself included, as Citus does; but it
  -- asks all sources at once (asynchronously) for their whole row of the matrix, so that the sources open
  -- their connections in parallel: (N+1)^2 connections one after the other grew too fast with N.
  FOR i IN 1 .. cardinality(nodes) LOOP
    src := nodes[i];
    conn := NULL;
    err := NULL;
    BEGIN
      conn := citus_standin.node_connection(src.nodename, src.nodeport);
      IF citus_standin.dblink_send_query(conn, format(
           'SELECT array_agg(citus_check_connection_to_node(t.n, t.p) ORDER BY t.o) '
           'FROM unnest(%L::text[], %L::int[]) WITH ORDINALITY AS t(n, p, o)', names, ports)) <> 1 THEN
        err := citus_standin.first_line(citus_standin.dblink_error_message(conn));
        PERFORM citus_standin.disconnect(conn);
        conn := NULL;
      END IF;
    EXCEPTION WHEN OTHERS THEN
      err := SQLERRM;
      conn := NULL;
    END;
    conns := conns || coalesce(conn, '');
    errors := errors || CASE WHEN conn IS NULL THEN coalesce(err, 'could not send the check') END;
  END LOOP;
  -- each source opens at most N+1 connections, each within the connection timeout
  stuck := citus_standin.wait_until_idle(array_remove(conns, ''),
             clock_timestamp() + (cardinality(nodes) + 1) * citus_standin.connect_timeout_seconds() * interval '1 second');
  FOR i IN 1 .. cardinality(nodes) LOOP
    src := nodes[i];
    conn := nullif(conns[i], '');
    checks := NULL;
    err := errors[i];
    IF conn IS NOT NULL AND conn = ANY (stuck) THEN
      err := 'timeout expired';
      PERFORM citus_standin.disconnect(conn);
    ELSIF conn IS NOT NULL THEN
      BEGIN
        SELECT t.r INTO checks FROM citus_standin.dblink_get_result(conn, false) AS t(r bool[]);
        IF checks IS NULL THEN
          err := citus_standin.first_line(citus_standin.dblink_error_message(conn));
        END IF;
        PERFORM 1 FROM citus_standin.dblink_get_result(conn, false) AS t(r bool[]);  -- the end of the results
        PERFORM citus_standin.release_node_connection(conn);
      EXCEPTION WHEN OTHERS THEN
        err := SQLERRM;
        PERFORM citus_standin.disconnect(conn);
      END;
    END IF;
    IF err IS NOT NULL THEN
      RAISE WARNING '%', CASE WHEN err LIKE 'connection to the remote node %' THEN err
                              ELSE citus_standin.connection_error(src.nodename, src.nodeport, err) END;
    END IF;
    FOR j IN 1 .. cardinality(nodes) LOOP
      dst := nodes[j];
      from_nodename := src.nodename;
      from_nodeport := src.nodeport;
      to_nodename := dst.nodename;
      to_nodeport := dst.nodeport;
      result := checks[j];
      RETURN NEXT;
    END LOOP;
  END LOOP;
END;
$$;
COMMENT ON FUNCTION pg_catalog.citus_check_cluster_node_health()
  IS 'checks connections between all nodes in the cluster';

---------------------------------------------------------------------------------------------------
-- 7. remote commands (sql/citus--8.0-1.sql, udfs/run_command_on_all_nodes; operations/citus_tools.c)
---------------------------------------------------------------------------------------------------
-- evaluate_command for a command sent asynchronously (dblink_send_query): the same rules, read from its
-- result; never raises either.
CREATE FUNCTION citus_standin.evaluate_sent_command(conn text, OUT success bool, OUT result text)
LANGUAGE plpgsql SET client_min_messages = warning AS $$
DECLARE
  vals text[];
  errmsg text;
BEGIN
  BEGIN
    SELECT array_agg(t.v) INTO vals FROM citus_standin.dblink_get_result(conn, false) AS t(v text);
  EXCEPTION WHEN datatype_mismatch THEN
    PERFORM 1 FROM citus_standin.dblink_get_result(conn, false) AS t(v text);  -- the end of the results
    success := false;
    result := 'expected a single column in query target';
    RETURN;
  END;
  errmsg := citus_standin.dblink_error_message(conn);
  PERFORM 1 FROM citus_standin.dblink_get_result(conn, false) AS t(v text);  -- the end of the results
  SELECT r.success, r.result INTO success, result FROM citus_standin.command_result(vals, errmsg) r;
EXCEPTION WHEN OTHERS THEN
  success := false;
  result := citus_standin.first_line(SQLERRM);
END;
$$;

CREATE FUNCTION pg_catalog.master_run_on_worker(worker_name text[], port integer[], command text[],
    parallel boolean, OUT node_name text, OUT node_port integer, OUT success boolean, OUT result text)
RETURNS SETOF record
LANGUAGE plpgsql STRICT SET client_min_messages = warning AS $$
DECLARE
  n int := coalesce(cardinality(worker_name), 0);
  conns text[] := array_fill(NULL::text, ARRAY[n]);  -- each command's connection, NULL: node unreachable
  opened jsonb := '{}';  -- node -> its connection in this call, checked once (node_connection) for all its commands
  successes bool[] := array_fill(NULL::bool, ARRAY[n]);
  results text[] := array_fill(NULL::text, ARRAY[n]);
  pending int[];  -- commands not yet run, in order
  sent int[];     -- commands under way, at most one per connection
  busy text[];
  node text;
  conn text;
  i int;
  r record;
BEGIN
  IF cardinality(worker_name) <> cardinality(port) OR cardinality(worker_name) <> cardinality(command) THEN
    RAISE EXCEPTION 'expected same number of node name, port, and query string' USING ERRCODE = 'syntax_error';
  END IF;
  -- A command of several statements runs alone (dblink gives its last statement's result; sent, its results
  -- would come one by one): any ';' inside sends the whole call down the serial path.
  parallel := parallel AND NOT EXISTS (SELECT 1 FROM unnest(command) c WHERE rtrim(c, E' \t\r\n;') LIKE '%;%');
  -- each command runs on the session's connection to its node (node_connection), which the node's other
  -- commands in this call reuse, one after the other
  FOR i IN 1 .. n LOOP
    node := worker_name[i] || ':' || port[i];
    IF NOT opened ? node THEN
      BEGIN
        conn := citus_standin.node_connection(worker_name[i], port[i]);
      EXCEPTION WHEN connection_failure THEN
        conn := NULL;
      END;
      opened := opened || jsonb_build_object(node, conn);
    END IF;
    conns[i] := opened->>node;
    IF conns[i] IS NULL THEN
      successes[i] := false;
      results[i] := format('failed to connect to %s:%s', worker_name[i], port[i]);
    ELSIF NOT parallel THEN
      r := citus_standin.evaluate_command(conns[i], command[i]);
      successes[i] := r.success;
      results[i] := r.result;
    END IF;
  END LOOP;
  IF parallel THEN
    -- as Citus's executor: every node runs its next command at the same time as the others
    SELECT coalesce(array_agg(k ORDER BY k), '{}') INTO pending FROM generate_series(1, n) k WHERE conns[k] IS NOT NULL;
    WHILE cardinality(pending) > 0 LOOP
      sent := '{}';
      busy := '{}';
      FOREACH i IN ARRAY pending LOOP
        CONTINUE WHEN conns[i] = ANY (busy);
        IF citus_standin.dblink_send_query(conns[i], command[i]) = 1 THEN
          sent := sent || i;
          busy := busy || conns[i];
        ELSE
          successes[i] := false;
          results[i] := citus_standin.first_line(citus_standin.dblink_error_message(conns[i]));
        END IF;
        pending := array_remove(pending, i);
      END LOOP;
      PERFORM citus_standin.wait_until_idle(busy, 'infinity');  -- interruptible, unlike dblink's own wait
      FOREACH i IN ARRAY sent LOOP
        r := citus_standin.evaluate_sent_command(conns[i]);
        successes[i] := r.success;
        results[i] := r.result;
      END LOOP;
    END LOOP;
  END IF;
  FOR i IN 1 .. n LOOP
    node_name := worker_name[i];
    node_port := port[i];
    success := successes[i];
    result := results[i];
    RETURN NEXT;
  END LOOP;
  FOR conn IN SELECT value FROM jsonb_each_text(opened) WHERE value IS NOT NULL LOOP
    PERFORM citus_standin.release_node_connection(conn);
  END LOOP;
END;
$$;

CREATE FUNCTION pg_catalog.run_command_on_workers(command text, parallel bool DEFAULT true,
    OUT nodename text, OUT nodeport int, OUT success bool, OUT result text)
RETURNS SETOF record
LANGUAGE plpgsql AS $function$
DECLARE
  workers text[];
  ports int[];
  commands text[];
BEGIN
  WITH citus_workers AS (
    SELECT * FROM master_get_active_worker_nodes() ORDER BY node_name, node_port)
  SELECT array_agg(node_name), array_agg(node_port), array_agg(command)
  INTO workers, ports, commands
  FROM citus_workers;

  RETURN QUERY SELECT * FROM master_run_on_worker(workers, ports, commands, parallel);
END;
$function$;

CREATE FUNCTION pg_catalog.run_command_on_all_nodes(command text, parallel bool DEFAULT true,
    give_warning_for_connection_errors bool DEFAULT false,
    OUT nodeid int, OUT success bool, OUT result text)
RETURNS SETOF record
LANGUAGE plpgsql AS $function$
DECLARE
  nodenames text[];
  ports int[];
  commands text[];
  current_node_is_in_metadata boolean;
BEGIN
  WITH citus_nodes AS (
    SELECT * FROM pg_dist_node
    WHERE isactive = 't' AND nodecluster = citus_standin.guc('citus.cluster_name', 'default')
    AND (
      (citus_standin.guc('citus.use_secondary_nodes', 'never') = 'never' AND noderole = 'primary')
      OR
      (citus_standin.guc('citus.use_secondary_nodes', 'never') = 'always' AND noderole = 'secondary')
    )
    ORDER BY nodename, nodeport
  )
  SELECT array_agg(citus_nodes.nodename), array_agg(citus_nodes.nodeport), array_agg(command)
  INTO nodenames, ports, commands
  FROM citus_nodes;

  SELECT count(*) > 0 FROM pg_dist_node
  WHERE isactive = 't'
  AND nodecluster = citus_standin.guc('citus.cluster_name', 'default')
  AND groupid IN (SELECT groupid FROM pg_dist_local_group)
  INTO current_node_is_in_metadata;

  -- This will happen when we call this function on coordinator and
  -- the coordinator is not added to the metadata.
  -- We'll manually add current node to the lists to actually run on all nodes.
  IF NOT current_node_is_in_metadata THEN
    SELECT
      array_append(nodenames, citus_standin.guc('citus.local_hostname', 'localhost')),
      array_append(ports, current_setting('port')::int),
      array_append(commands, command)
    INTO nodenames, ports, commands;
  END IF;

  FOR nodeid, success, result IN
    SELECT coalesce(pg_dist_node.nodeid, 0) AS nodeid, mrow.success, mrow.result
    FROM master_run_on_worker(nodenames, ports, commands, parallel) mrow
    LEFT JOIN pg_dist_node ON mrow.node_name = pg_dist_node.nodename AND mrow.node_port = pg_dist_node.nodeport
  LOOP
    IF give_warning_for_connection_errors AND NOT success THEN
      RAISE WARNING 'Error on node with node id %: %', nodeid, result;
    END IF;
    RETURN NEXT;
  END LOOP;
END;
$function$;

CREATE FUNCTION pg_catalog.run_command_on_coordinator(command text, give_warning_for_connection_errors bool DEFAULT false,
    OUT nodeid int, OUT success bool, OUT result text)
RETURNS SETOF record
LANGUAGE plpgsql AS $function$
DECLARE
  coordinator_host text;
  coordinator_port int;
BEGIN
  SELECT n.nodename, n.nodeport INTO coordinator_host, coordinator_port
  FROM pg_dist_node n WHERE n.groupid = 0 AND n.noderole = 'primary' AND n.isactive;
  IF NOT FOUND THEN
    coordinator_host := citus_standin.guc('citus.local_hostname', 'localhost');
    coordinator_port := current_setting('port')::int;
  END IF;
  FOR nodeid, success, result IN
    SELECT pg_catalog.citus_coordinator_nodeid(), mrow.success, mrow.result
    FROM master_run_on_worker(ARRAY[coordinator_host], ARRAY[coordinator_port], ARRAY[command], false) mrow
  LOOP
    IF give_warning_for_connection_errors AND NOT success THEN
      RAISE WARNING 'Error on node with node id %: %', nodeid, result;
    END IF;
    RETURN NEXT;
  END LOOP;
END;
$function$;

---------------------------------------------------------------------------------------------------
-- 8. table metadata helpers
---------------------------------------------------------------------------------------------------
-- shard_name(): schema-qualified (unless public), shard-extended identifier
CREATE FUNCTION citus_standin.shard_relname(relname text, shard_id bigint) RETURNS text
LANGUAGE sql IMMUTABLE STRICT AS $$
  SELECT left(relname, 63 - length('_' || shard_id::text)) || '_' || shard_id::text
$$;

CREATE FUNCTION pg_catalog.shard_name(object_name regclass, shard_id bigint) RETURNS text
LANGUAGE sql STABLE STRICT AS $$
  SELECT CASE WHEN n.nspname = 'public' THEN quote_ident(citus_standin.shard_relname(c.relname, shard_id))
              ELSE quote_ident(n.nspname) || '.' || quote_ident(citus_standin.shard_relname(c.relname, shard_id))
         END
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE c.oid = object_name
$$;
COMMENT ON FUNCTION pg_catalog.shard_name(regclass, bigint)
  IS 'returns schema-qualified, shard-extended identifier of object name';

CREATE FUNCTION citus_standin.qualified_shard_name(relid oid, shard_id bigint) RETURNS text
LANGUAGE sql STABLE STRICT AS $$
  SELECT quote_ident(n.nspname) || '.' || quote_ident(citus_standin.shard_relname(c.relname, shard_id))
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = relid
$$;

-- partkey is stored as Citus stores it: the text form of a Var node of PostgreSQL 15
CREATE FUNCTION pg_catalog.column_name_to_column(table_name regclass, column_name text) RETURNS text
LANGUAGE plpgsql STABLE STRICT AS $$
DECLARE
  a record;
BEGIN
  SELECT attnum, atttypid, atttypmod, attcollation INTO a FROM pg_attribute
  WHERE attrelid = table_name AND attname = column_name AND attnum > 0 AND NOT attisdropped;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'column "%" of relation "%" does not exist', column_name, table_name::text
      USING ERRCODE = 'undefined_column';
  END IF;
  RETURN format('{VAR :varno 1 :varattno %s :vartype %s :vartypmod %s :varcollid %s :varlevelsup 0 :varnosyn 1 :varattnosyn %s :location -1}',
                a.attnum, a.atttypid::int, a.atttypmod, a.attcollation::int, a.attnum);
END;
$$;

CREATE FUNCTION pg_catalog.column_to_column_name(table_name regclass, column_var_text text) RETURNS text
LANGUAGE sql STABLE STRICT AS $$
  SELECT attname::text FROM pg_attribute
  WHERE attrelid = table_name
    AND attnum = substring(column_var_text from ':varattno (-?\d+)')::int
    AND NOT attisdropped
$$;

CREATE FUNCTION citus_standin.distribution_column(relid oid) RETURNS name
LANGUAGE sql STABLE AS $$
  SELECT pg_catalog.column_to_column_name(p.logicalrelid, p.partkey)::name
  FROM pg_catalog.pg_dist_partition p WHERE p.logicalrelid = relid AND p.partkey IS NOT NULL
$$;

CREATE FUNCTION citus_standin.table_signature(relid oid) RETURNS text
LANGUAGE sql STABLE AS $$
  SELECT string_agg(format('%I %s', attname, format_type(atttypid, atttypmod)), ', ' ORDER BY attnum)
  FROM pg_attribute WHERE attrelid = relid AND attnum > 0 AND NOT attisdropped
$$;

CREATE FUNCTION citus_standin.column_list(relid oid, include_generated bool DEFAULT false) RETURNS text
LANGUAGE sql STABLE AS $$
  SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum)
  FROM pg_attribute WHERE attrelid = relid AND attnum > 0 AND NOT attisdropped
    AND (include_generated OR attgenerated = '')
$$;

CREATE FUNCTION citus_standin.column_defs(relid oid) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
  SELECT string_agg(format('%I %s', attname, format_type(atttypid, atttypmod)), ', ' ORDER BY attnum)
  FROM pg_attribute WHERE attrelid = relid AND attnum > 0 AND NOT attisdropped
$$;

CREATE FUNCTION citus_standin.is_citus_table(relid oid) RETURNS bool
LANGUAGE sql STABLE AS $$
  SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_partition WHERE logicalrelid = relid)
$$;

-- The statements that create a table's shard on a node: schema, enum types, columns, constraints
-- (constraint and index names get the _<shardid> suffix, as Citus names them), foreign keys pointing at the
-- colocated shard of the referenced table, indexes.
CREATE FUNCTION citus_standin.shard_ddl(relid oid, shard_id bigint, fkey_targets jsonb,
                                        with_foreign_keys bool DEFAULT true) RETURNS text[]
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  nsp name;
  rel name;
  shard text;
  cols text;
  cmds text[] := '{}';
  r record;
  def text;
  target text;
  suffix text := '_' || shard_id::text;
BEGIN
  SELECT n.nspname, c.relname INTO nsp, rel FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE c.oid = relid;
  shard := format('%I.%I', nsp, citus_standin.shard_relname(rel, shard_id));
  IF nsp <> 'public' THEN
    cmds := cmds || format('CREATE SCHEMA IF NOT EXISTS %I', nsp);
  END IF;
  -- enum types of the columns (Citus propagates types; the stand-in propagates enums)
  FOR r IN
    SELECT DISTINCT t.oid, tn.nspname, t.typname
    FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid JOIN pg_namespace tn ON tn.oid = t.typnamespace
    WHERE a.attrelid = relid AND a.attnum > 0 AND NOT a.attisdropped AND t.typtype = 'e'
  LOOP
    IF r.nspname <> 'public' THEN
      cmds := cmds || format('CREATE SCHEMA IF NOT EXISTS %I', r.nspname);
    END IF;
    cmds := cmds || format(
      'DO $standin$ BEGIN CREATE TYPE %I.%I AS ENUM (%s); EXCEPTION WHEN duplicate_object THEN NULL; END $standin$',
      r.nspname, r.typname,
      (SELECT string_agg(quote_literal(enumlabel), ', ' ORDER BY enumsortorder) FROM pg_enum WHERE enumtypid = r.oid));
  END LOOP;

  SELECT string_agg(format('%I %s%s%s', a.attname, format_type(a.atttypid, a.atttypmod),
                           CASE WHEN a.attcollation <> 0 AND a.attcollation <> t.typcollation
                                THEN ' COLLATE ' || (SELECT format('%I.%I', cn.nspname, co.collname)
                                                     FROM pg_collation co JOIN pg_namespace cn ON cn.oid = co.collnamespace
                                                     WHERE co.oid = a.attcollation)
                                ELSE '' END,
                           CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END), ', ' ORDER BY a.attnum)
  INTO cols
  FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
  WHERE a.attrelid = relid AND a.attnum > 0 AND NOT a.attisdropped;
  cmds := cmds || format('CREATE TABLE %s (%s)', shard, cols);

  -- primary key, unique, exclusion, check constraints
  FOR r IN
    SELECT c.conname, c.contype, pg_get_constraintdef(c.oid) AS def
    FROM pg_constraint c WHERE c.conrelid = relid AND c.contype IN ('p', 'u', 'x', 'c')
    ORDER BY CASE c.contype WHEN 'p' THEN 0 WHEN 'u' THEN 1 WHEN 'x' THEN 2 ELSE 3 END, c.conname
  LOOP
    cmds := cmds || format('ALTER TABLE %s ADD CONSTRAINT %I %s', shard,
                           left(r.conname, 63 - length(suffix)) || suffix, r.def);
  END LOOP;

  -- indexes that do not back a constraint
  FOR r IN
    SELECT ic.relname AS idxname, pg_get_indexdef(i.indexrelid) AS def, i.indisunique
    FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
    WHERE i.indrelid = relid
      AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid AND c.conrelid = relid)
    ORDER BY ic.relname
  LOOP
    cmds := cmds || format('CREATE %sINDEX %I ON %s %s', CASE WHEN r.indisunique THEN 'UNIQUE ' ELSE '' END,
                           left(r.idxname, 63 - length(suffix)) || suffix, shard,
                           substring(r.def from position(' USING ' in r.def) + 1));
  END LOOP;

  IF with_foreign_keys THEN
    -- foreign keys: fkey_targets maps "constraint name" -> {"from": qualified referenced table, "to": shard}
    FOR r IN SELECT key AS conname, value FROM jsonb_each(coalesce(fkey_targets, '{}'::jsonb)) ORDER BY key LOOP
      def := r.value->>'def';
      target := r.value->>'to';
      def := replace(def, 'REFERENCES ' || (r.value->>'from') || '(', 'REFERENCES ' || target || '(');
      cmds := cmds || format('ALTER TABLE %s ADD CONSTRAINT %I %s', shard,
                             left(r.conname, 63 - length(suffix)) || suffix, def);
    END LOOP;
  END IF;
  RETURN cmds;
END;
$$;

-- Nodes that get new shards: active primaries that should have shards, ordered by name and port
CREATE FUNCTION citus_standin.shard_placement_nodes()
RETURNS TABLE(groupid int, nodename text, nodeport int)
LANGUAGE sql STABLE AS $$
  SELECT n.groupid, n.nodename, n.nodeport FROM pg_catalog.pg_dist_node n
  WHERE n.isactive AND n.noderole = 'primary' AND n.shouldhaveshards
    AND n.nodecluster = citus_standin.guc('citus.cluster_name', 'default')
  ORDER BY n.nodename COLLATE "C", n.nodeport
$$;

-- The foreign keys of a table (and those deferred from when it was local), with where each one must point
-- on the shards; raises Citus's errors for foreign keys the distribution cannot keep.
CREATE FUNCTION citus_standin.foreign_keys_of(relid oid)
RETURNS TABLE(conname name, def text, referenced oid, referenced_name text)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
  SELECT c.conname, pg_get_constraintdef(c.oid), c.confrelid,
         format('%I.%I', n.nspname, rc.relname)
  FROM pg_constraint c JOIN pg_class rc ON rc.oid = c.confrelid JOIN pg_namespace n ON n.oid = rc.relnamespace
  WHERE c.conrelid = relid AND c.contype = 'f'
  UNION ALL
  SELECT d.conname, d.condef, to_regclass(d.referenced_name)::oid, d.referenced_name
  FROM citus_standin.deferred_fkey d
  WHERE d.conrelid = relid AND to_regclass(d.referenced_name) IS NOT NULL
$$;

---------------------------------------------------------------------------------------------------
-- 9. create_distributed_table / create_reference_table
---------------------------------------------------------------------------------------------------
CREATE FUNCTION citus_standin.check_distributable(relid oid) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
  c record;
BEGIN
  PERFORM citus_standin.ensure_coordinator();
  SELECT cl.relkind, cl.relname, cl.relpersistence, cl.relowner INTO c FROM pg_class cl WHERE cl.oid = relid;
  IF NOT pg_has_role(current_user, c.relowner, 'USAGE') THEN
    RAISE EXCEPTION 'must be owner of table %', c.relname USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
    RAISE EXCEPTION 'operation is not allowed'
      USING HINT = 'The Citus stand-in distributes tables as a superuser only.';
  END IF;
  IF citus_standin.is_citus_table(relid) THEN
    RAISE EXCEPTION 'table "%" is already distributed', c.relname USING ERRCODE = 'invalid_table_definition';
  END IF;
  IF c.relkind <> 'r' THEN
    RAISE EXCEPTION 'stand-in: cannot distribute relation "%": only regular (not partitioned, foreign or other) tables are supported', c.relname
      USING ERRCODE = 'feature_not_supported';
  END IF;
  IF c.relpersistence = 't' THEN
    RAISE EXCEPTION 'cannot distribute a temporary table' USING ERRCODE = 'invalid_table_definition';
  END IF;
  IF EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = relid AND NOT t.tgisinternal) THEN
    RAISE EXCEPTION 'cannot distribute relation "%" because it has triggers', c.relname
      USING ERRCODE = 'feature_not_supported',
            HINT = format('Consider dropping all the triggers on %s and retry.', c.relname);
  END IF;
  IF EXISTS (SELECT 1 FROM pg_inherits WHERE inhrelid = relid OR inhparent = relid) THEN
    RAISE EXCEPTION 'stand-in: cannot distribute relation "%": inheritance and partitions are not supported', c.relname
      USING ERRCODE = 'feature_not_supported';
  END IF;
END;
$$;

CREATE FUNCTION citus_standin.dependent_views(relid oid) RETURNS text
LANGUAGE sql STABLE AS $$
  SELECT string_agg(DISTINCT v.oid::regclass::text, ', ')
  FROM pg_depend d JOIN pg_rewrite rw ON rw.oid = d.objid JOIN pg_class v ON v.oid = rw.ev_class
  WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass
    AND d.refobjid = relid AND v.oid <> relid
$$;

CREATE FUNCTION pg_catalog.create_distributed_table(table_name regclass, distribution_column text,
    distribution_type citus.distribution_type DEFAULT 'hash', colocate_with text DEFAULT 'default',
    shard_count int DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  -- not STRICT, as in Citus: a NULL table or colocate_with is a no-op
  IF table_name IS NULL OR colocate_with IS NULL THEN
    RETURN;
  END IF;
  -- colocate_with names a table in the caller's search_path
  PERFORM citus_standin.create_distributed_table(table_name, distribution_column, distribution_type,
    colocate_with, CASE WHEN lower(colocate_with) IN ('default', 'none') THEN NULL
                        ELSE colocate_with::regclass END, shard_count);
END;
$$;
COMMENT ON FUNCTION pg_catalog.create_distributed_table(regclass, text, citus.distribution_type, text, int)
  IS 'creates a distributed table';

CREATE FUNCTION citus_standin.create_distributed_table(table_name regclass, distribution_column text,
    distribution_type citus.distribution_type, colocate_with text, colocate_with_relid regclass, shard_count int)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  relid oid := table_name;
  nsp name;
  rel name;
  tmp name;
  att record;
  colocated_relid oid;
  v_colocationid int;
  n_shards int;
  nodes citus_standin.node_address[];
  node_count int;
  shard_ids bigint[] := '{}';
  shard_groups int[] := '{}';
  i int;
  g int;
  step bigint;
  minv bigint;
  maxv bigint;
  node record;
  fk record;
  fk_targets jsonb;
  per_node jsonb := '{}';
  cmds text[];
  nrows bigint;
  seqs record;
  owned_serial jsonb := '[]';
  identities jsonb := '[]';
  item jsonb;
  views text;
  acl record;
  ref_shard bigint;
  ref_dist_att int;
  target_relid oid;
  created_on jsonb := '[]';
BEGIN
  -- not STRICT, as in Citus: a NULL table or colocate_with is a no-op
  IF table_name IS NULL OR colocate_with IS NULL THEN
    RETURN;
  END IF;
  PERFORM citus_standin.check_distributable(relid);
  IF distribution_column IS NULL THEN
    RAISE EXCEPTION 'stand-in: single shard tables (a NULL distribution column) are not supported'
      USING ERRCODE = 'feature_not_supported';
  END IF;
  IF distribution_type <> 'hash' THEN
    RAISE EXCEPTION 'stand-in: only hash distribution is supported, not %', distribution_type
      USING ERRCODE = 'feature_not_supported';
  END IF;

  SELECT n.nspname, c.relname INTO nsp, rel FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE c.oid = relid;
  SELECT a.attnum, a.attname, a.atttypid, a.atttypmod, a.attcollation INTO att FROM pg_attribute a
  WHERE a.attrelid = relid AND a.attname = distribution_column AND a.attnum > 0 AND NOT a.attisdropped;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'column "%" of relation "%" does not exist', distribution_column, rel
      USING ERRCODE = 'undefined_column';
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_opclass oc JOIN pg_am am ON am.oid = oc.opcmethod
                 WHERE am.amname = 'hash' AND oc.opcdefault
                   AND (oc.opcintype = att.atttypid
                        OR oc.opcintype = (SELECT t.typbasetype FROM pg_type t WHERE t.oid = att.atttypid)
                        OR (oc.opcintype = 'anyenum'::regtype
                            AND (SELECT t.typtype FROM pg_type t WHERE t.oid = att.atttypid) = 'e'))) THEN
    RAISE EXCEPTION 'could not identify a hash function for type %', format_type(att.atttypid, NULL)
      USING DETAIL = 'Partition column types must have a hash function defined to use hash partitioning.',
            ERRCODE = 'undefined_function';
  END IF;

  IF shard_count IS NOT NULL AND (shard_count < 1 OR shard_count > 64000) THEN
    RAISE EXCEPTION '% is outside the valid range for parameter "shard_count" (1 .. 64000)', shard_count
      USING ERRCODE = 'invalid_parameter_value';
  END IF;

  -- colocation
  IF lower(colocate_with) = 'default' THEN
    n_shards := coalesce(shard_count, citus_standin.guc('citus.shard_count', '32')::int);
    SELECT c.colocationid INTO v_colocationid FROM pg_dist_colocation c
    WHERE c.shardcount = n_shards AND c.replicationfactor = 1
      AND c.distributioncolumntype = att.atttypid AND c.distributioncolumncollation = att.attcollation
      AND EXISTS (SELECT 1 FROM pg_dist_partition p WHERE p.colocationid = c.colocationid AND p.partmethod = 'h')
    ORDER BY c.colocationid LIMIT 1;
  ELSIF lower(colocate_with) = 'none' THEN
    n_shards := coalesce(shard_count, citus_standin.guc('citus.shard_count', '32')::int);
  ELSE
    IF shard_count IS NOT NULL THEN
      RAISE EXCEPTION 'Cannot use colocate_with with a table and shard_count at the same time';
    END IF;
    colocated_relid := colocate_with_relid;
    IF NOT EXISTS (SELECT 1 FROM pg_dist_partition p WHERE p.logicalrelid = colocated_relid AND p.partmethod = 'h') THEN
      RAISE EXCEPTION 'relation % is not distributed', colocate_with;
    END IF;
    SELECT p.colocationid INTO v_colocationid FROM pg_dist_partition p WHERE p.logicalrelid = colocated_relid;
    IF (SELECT c.distributioncolumntype FROM pg_dist_colocation c WHERE c.colocationid = v_colocationid)
       <> att.atttypid THEN
      RAISE EXCEPTION 'cannot colocate tables % and %', colocated_relid::regclass::text, rel
        USING DETAIL = format('Distribution column types don''t match for %s and %s.',
                              colocated_relid::regclass::text, rel);
    END IF;
    SELECT c.shardcount INTO n_shards FROM pg_dist_colocation c WHERE c.colocationid = v_colocationid;
  END IF;

  -- placements: colocated shards go where the group's shards are, new groups round-robin over the nodes
  IF v_colocationid IS NOT NULL THEN
    SELECT array_agg(pl.groupid ORDER BY s.shardminvalue::bigint) INTO shard_groups
    FROM pg_dist_shard s JOIN pg_dist_placement pl USING (shardid)
    WHERE s.logicalrelid = (SELECT p.logicalrelid FROM pg_dist_partition p
                            WHERE p.colocationid = v_colocationid ORDER BY p.logicalrelid LIMIT 1);
  ELSE
    SELECT array_agg(ROW(x.groupid, x.nodename, x.nodeport)::citus_standin.node_address) INTO nodes
    FROM citus_standin.shard_placement_nodes() x;
    node_count := coalesce(cardinality(nodes), 0);
    IF node_count = 0 THEN
      RAISE EXCEPTION 'no worker nodes are available for placing shards'
        USING HINT = 'Add more worker nodes.', ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    FOR i IN 0 .. n_shards - 1 LOOP
      shard_groups := shard_groups || (nodes[(i % node_count) + 1]).groupid;
    END LOOP;
    v_colocationid := nextval('pg_dist_colocationid_seq');
    INSERT INTO pg_dist_colocation (colocationid, shardcount, replicationfactor, distributioncolumntype,
                                    distributioncolumncollation)
    VALUES (v_colocationid, n_shards, 1, att.atttypid, att.attcollation);
  END IF;

  views := citus_standin.dependent_views(relid);
  IF views IS NOT NULL THEN
    RAISE EXCEPTION 'stand-in: cannot distribute "%" while views depend on it (%)', rel, views
      USING ERRCODE = 'feature_not_supported', HINT = 'Create the views after distributing the table.';
  END IF;

  FOR i IN 0 .. n_shards - 1 LOOP
    shard_ids := shard_ids || nextval('pg_dist_shardid_seq');
  END LOOP;

  -- where each foreign key points on the shards (same shard index on a colocated table, or the
  -- reference table's shard), with Citus's error for foreign keys it cannot keep
  FOR fk IN SELECT * FROM citus_standin.foreign_keys_of(relid) LOOP
    target_relid := fk.referenced;
    IF target_relid = relid THEN
      CONTINUE;   -- self reference: resolved per shard below
    ELSIF EXISTS (SELECT 1 FROM pg_dist_partition p WHERE p.logicalrelid = target_relid AND p.repmodel = 't') THEN
      CONTINUE;
    ELSIF EXISTS (SELECT 1 FROM pg_dist_partition p WHERE p.logicalrelid = target_relid
                  AND p.partmethod = 'h' AND p.colocationid = v_colocationid) THEN
      ref_dist_att := (SELECT a.attnum FROM pg_attribute a WHERE a.attrelid = target_relid
                       AND a.attname = citus_standin.distribution_column(target_relid));
      IF NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conrelid = relid AND c.conname = fk.conname
                     AND EXISTS (SELECT 1 FROM generate_subscripts(c.conkey, 1) k
                                 WHERE c.conkey[k] = att.attnum AND c.confkey[k] = ref_dist_att))
         AND NOT EXISTS (SELECT 1 FROM citus_standin.deferred_fkey d WHERE d.conrelid = relid AND d.conname = fk.conname) THEN
        RAISE EXCEPTION 'cannot create foreign key constraint'
          USING DETAIL = 'Foreign keys are supported in two cases, either in between two colocated tables including partition column in the same ordinal in the both tables or from distributed to reference tables',
                ERRCODE = 'feature_not_supported';
      END IF;
    ELSE
      RAISE EXCEPTION 'cannot create foreign key constraint since relations are not colocated or not referencing a reference table'
        USING DETAIL = 'A distributed table can only have foreign keys if it is referencing another colocated hash distributed table or a reference table',
              ERRCODE = 'feature_not_supported';
    END IF;
  END LOOP;

  -- 1) shards on the nodes (one remote transaction per node, committed before the data moves through
  --    postgres_fdw's own connections)
  FOR node IN
    SELECT DISTINCT n.groupid, n.nodename, n.nodeport
    FROM unnest(shard_groups) AS sg(groupid) JOIN pg_dist_node n ON n.groupid = sg.groupid AND n.noderole = 'primary'
  LOOP
    cmds := '{}';
    FOR i IN 1 .. n_shards LOOP
      CONTINUE WHEN shard_groups[i] <> node.groupid;
      fk_targets := '{}';
      FOR fk IN SELECT * FROM citus_standin.foreign_keys_of(relid) LOOP
        IF fk.referenced = relid THEN
          fk_targets := fk_targets || jsonb_build_object(fk.conname, jsonb_build_object(
            'def', fk.def, 'from', fk.referenced_name, 'to', citus_standin.qualified_shard_name(relid, shard_ids[i])));
        ELSIF EXISTS (SELECT 1 FROM pg_dist_partition p WHERE p.logicalrelid = fk.referenced AND p.repmodel = 't') THEN
          SELECT s.shardid INTO ref_shard FROM pg_dist_shard s WHERE s.logicalrelid = fk.referenced;
          fk_targets := fk_targets || jsonb_build_object(fk.conname, jsonb_build_object(
            'def', fk.def, 'from', fk.referenced_name, 'to', citus_standin.qualified_shard_name(fk.referenced, ref_shard)));
        ELSE
          SELECT s.shardid INTO ref_shard FROM pg_dist_shard s WHERE s.logicalrelid = fk.referenced
          ORDER BY s.shardminvalue::bigint OFFSET i - 1 LIMIT 1;
          fk_targets := fk_targets || jsonb_build_object(fk.conname, jsonb_build_object(
            'def', fk.def, 'from', fk.referenced_name, 'to', citus_standin.qualified_shard_name(fk.referenced, ref_shard)));
        END IF;
      END LOOP;
      cmds := cmds || citus_standin.shard_ddl(relid, shard_ids[i], fk_targets);
    END LOOP;
    PERFORM citus_standin.run_commands_on_node(node.nodename, node.nodeport, cmds);
    created_on := created_on || jsonb_build_object('host', node.nodename, 'port', node.nodeport, 'group', node.groupid);
  END LOOP;

  BEGIN
    -- 2) the coordinator's table becomes a hash-partitioned table whose partitions are the shards
    tmp := left(rel, 40) || '_standin_' || shard_ids[1];
    -- sequences: serial sequences change owner, identity sequences are recreated with their state
    FOR seqs IN
      SELECT d.objid::regclass AS seq, a.attname, d.deptype, sn.nspname, sc.relname AS seqname
      FROM pg_depend d
      JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
      JOIN pg_class sc ON sc.oid = d.objid JOIN pg_namespace sn ON sn.oid = sc.relnamespace
      WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
        AND d.refobjid = relid AND d.deptype IN ('a', 'i') AND sc.relkind = 'S'
    LOOP
      IF seqs.deptype = 'a' THEN
        EXECUTE format('ALTER SEQUENCE %s OWNED BY NONE', seqs.seq);
        owned_serial := owned_serial || jsonb_build_object('seq', seqs.seq::text, 'att', seqs.attname);
      ELSE
        EXECUTE format('SELECT jsonb_build_object(''last'', last_value, ''called'', is_called) FROM %s', seqs.seq)
          INTO item;
        identities := identities || (item || jsonb_build_object('att', seqs.attname, 'nsp', seqs.nspname,
                                                                  'name', seqs.seqname));
      END IF;
    END LOOP;

    -- foreign keys of local tables to this table cannot stay on the coordinator; they are kept aside and
    -- created on the shards when the referencing table gets distributed
    FOR fk IN
      SELECT c.conrelid, c.conname, pg_get_constraintdef(c.oid) AS def
      FROM pg_constraint c WHERE c.contype = 'f' AND c.confrelid = relid AND c.conrelid <> relid
    LOOP
      INSERT INTO citus_standin.deferred_fkey (conrelid, conname, referenced_name, condef)
      VALUES (fk.conrelid, fk.conname, format('%I.%I', nsp, rel), fk.def)
      ON CONFLICT (conrelid, conname) DO UPDATE SET referenced_name = EXCLUDED.referenced_name,
                                                    condef = EXCLUDED.condef;
      EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', fk.conrelid::regclass, fk.conname);
    END LOOP;

    EXECUTE format('CREATE TABLE %I.%I (LIKE %s INCLUDING DEFAULTS INCLUDING IDENTITY INCLUDING GENERATED '
                   'INCLUDING STORAGE INCLUDING COMMENTS INCLUDING CONSTRAINTS INCLUDING COMPRESSION) '
                   'PARTITION BY HASH (%I)', nsp, tmp, relid::regclass, att.attname);
    FOR i IN 1 .. n_shards LOOP
      SELECT n.nodename, n.nodeport INTO node FROM pg_dist_node n
      WHERE n.groupid = shard_groups[i] AND n.noderole = 'primary';
      EXECUTE format('CREATE FOREIGN TABLE citus_standin.%I PARTITION OF %I.%I FOR VALUES WITH (MODULUS %s, REMAINDER %s) '
                     'SERVER %I OPTIONS (schema_name %L, table_name %L)',
                     citus_standin.shard_relname(rel, shard_ids[i]), nsp, tmp, n_shards, i - 1,
                     citus_standin.ensure_server(node.nodename, node.nodeport),
                     nsp, citus_standin.shard_relname(rel, shard_ids[i]));
    END LOOP;

    -- 3) existing rows move into the shards
    EXECUTE format('SELECT count(*) FROM %s', relid::regclass) INTO nrows;
    IF nrows > 0 THEN
      RAISE NOTICE 'Copying data from local table...';
      EXECUTE format('INSERT INTO %I.%I (%s) OVERRIDING SYSTEM VALUE SELECT %s FROM %s', nsp, tmp,
                     citus_standin.column_list(relid), citus_standin.column_list(relid), relid::regclass);
    END IF;

    -- 4) swap: owner, grants and comment carry over; the local table goes away
    EXECUTE format('ALTER TABLE %I.%I OWNER TO %I', nsp, tmp,
                   (SELECT r.rolname FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner WHERE c.oid = relid));
    FOR acl IN
      SELECT a.privilege_type, a.is_grantable,
             CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(r.rolname) END AS grantee
      FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) a LEFT JOIN pg_roles r ON r.oid = a.grantee
      WHERE c.oid = relid AND a.grantee <> c.relowner
    LOOP
      EXECUTE format('GRANT %s ON %I.%I TO %s%s', acl.privilege_type, nsp, tmp, acl.grantee,
                     CASE WHEN acl.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
    END LOOP;
    IF obj_description(relid, 'pg_class') IS NOT NULL THEN
      EXECUTE format('COMMENT ON TABLE %I.%I IS %L', nsp, tmp, obj_description(relid, 'pg_class'));
    END IF;
    EXECUTE format('DROP TABLE %s', relid::regclass);
    EXECUTE format('ALTER TABLE %I.%I RENAME TO %I', nsp, tmp, rel);
    relid := format('%I.%I', nsp, rel)::regclass;
    FOR item IN SELECT * FROM jsonb_array_elements(owned_serial) LOOP
      EXECUTE format('ALTER SEQUENCE %s OWNED BY %I.%I.%I', item->>'seq', nsp, rel, item->>'att');
    END LOOP;
    FOR item IN SELECT * FROM jsonb_array_elements(identities) LOOP
      EXECUTE format('SELECT setval(%L, %s, %s)', pg_get_serial_sequence(format('%I.%I', nsp, rel), item->>'att'),
                     item->>'last', item->>'called');
      EXECUTE format('ALTER SEQUENCE %s RENAME TO %I', pg_get_serial_sequence(format('%I.%I', nsp, rel), item->>'att'),
                     item->>'name');
    END LOOP;
    DELETE FROM citus_standin.deferred_fkey WHERE conrelid = table_name::oid;   -- now on the shards

    -- 5) metadata
    INSERT INTO pg_dist_partition (logicalrelid, partmethod, partkey, colocationid, repmodel, autoconverted)
    VALUES (relid, 'h', column_name_to_column(relid, att.attname::text), v_colocationid, 's', false);
    step := 4294967296 / n_shards;
    FOR i IN 1 .. n_shards LOOP
      minv := -2147483648 + (i - 1) * step;
      maxv := CASE WHEN i = n_shards THEN 2147483647 ELSE minv + step - 1 END;
      INSERT INTO pg_dist_shard (logicalrelid, shardid, shardstorage, shardminvalue, shardmaxvalue)
      VALUES (relid, shard_ids[i], 't', minv::text, maxv::text);
      INSERT INTO pg_dist_placement (placementid, shardid, shardstate, shardlength, groupid)
      VALUES (nextval('pg_dist_placement_placementid_seq'), shard_ids[i], 1, 0, shard_groups[i]);
    END LOOP;
    INSERT INTO citus_standin.table_signature VALUES (relid, rel, citus_standin.table_signature(relid));
  EXCEPTION WHEN OTHERS THEN
    -- best effort: remove the shards created on the nodes, then fail as the caller asked
    FOR item IN SELECT * FROM jsonb_array_elements(created_on) LOOP
      BEGIN
        PERFORM citus_standin.run_commands_on_node(item->>'host', (item->>'port')::int,
          ARRAY(SELECT format('DROP TABLE IF EXISTS %I.%I CASCADE', nsp, citus_standin.shard_relname(rel, sid))
                FROM unnest(shard_ids) AS sid));
      EXCEPTION WHEN OTHERS THEN
        NULL;
      END;
    END LOOP;
    RAISE;
  END;
  IF nrows > 0 THEN
    RAISE NOTICE 'copying the data has completed'
      USING DETAIL = 'The local data in the table is no longer visible, but is still on disk.',
            HINT = format('To remove the local data, run: SELECT truncate_local_data_after_distributing_table(%s%s%s)',
                          '$' || '$', format('%I.%I', nsp, rel), '$' || '$');
  END IF;
END;
$$;

CREATE FUNCTION pg_catalog.truncate_local_data_after_distributing_table(function_name regclass) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  -- the stand-in moves the rows out of the coordinator's table when distributing it: nothing is left
  IF NOT citus_standin.is_citus_table(function_name) THEN
    RAISE EXCEPTION 'cannot truncate a local table''s data because it is not distributed';
  END IF;
END;
$$;

-- Creates the placement of a reference table's shard on a node: the shard table (with the data) and the
-- replica the coordinator's table writes to (a foreign table, or the local shard table on the coordinator).
CREATE FUNCTION citus_standin.create_reference_placement(relid oid, shard_id bigint, target_group int) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  node record;
  nsp name;
  rel name;
  shard_rel text;
  replica text;
  fk record;
  fk_targets jsonb := '{}';
  ref_shard bigint;
  cols text := citus_standin.column_list(relid);
  pk text;
BEGIN
  SELECT n.nspname, c.relname INTO nsp, rel FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE c.oid = relid;
  SELECT * INTO node FROM pg_dist_node n WHERE n.groupid = target_group AND n.noderole = 'primary';
  shard_rel := citus_standin.shard_relname(rel, shard_id);
  IF target_group = 0 THEN
    -- coordinator placement: a local table kept in sync with the coordinator's table
    EXECUTE format('CREATE TABLE %I.%I (LIKE %s)', nsp, shard_rel, relid::regclass);
    SELECT string_agg(quote_ident(a.attname), ', ') INTO pk
    FROM pg_constraint c JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey)
    WHERE c.conrelid = relid AND c.contype = 'p';
    IF pk IS NOT NULL THEN
      EXECUTE format('ALTER TABLE %I.%I ADD PRIMARY KEY (%s)', nsp, shard_rel, pk);
    END IF;
    EXECUTE format('INSERT INTO %I.%I (%s) SELECT %s FROM %s', nsp, shard_rel, cols, cols, relid::regclass);
    replica := format('%I.%I', nsp, shard_rel);
  ELSE
    FOR fk IN SELECT * FROM citus_standin.foreign_keys_of(relid) LOOP
      SELECT s.shardid INTO ref_shard FROM pg_dist_shard s WHERE s.logicalrelid = fk.referenced;
      fk_targets := fk_targets || jsonb_build_object(fk.conname, jsonb_build_object(
        'def', fk.def, 'from', fk.referenced_name, 'to', citus_standin.qualified_shard_name(fk.referenced, ref_shard)));
    END LOOP;
    PERFORM citus_standin.run_commands_on_node(node.nodename, node.nodeport,
                                               citus_standin.shard_ddl(relid, shard_id, fk_targets));
    replica := format('citus_standin.%I', left(shard_rel, 50) || '_g' || target_group);
    EXECUTE format('CREATE FOREIGN TABLE %s (%s) SERVER %I OPTIONS (schema_name %L, table_name %L)',
                   replica, citus_standin.column_defs(relid),
                   citus_standin.ensure_server(node.nodename, node.nodeport), nsp, shard_rel);
    EXECUTE format('INSERT INTO %s (%s) SELECT %s FROM %s', replica, cols, cols, relid::regclass);
  END IF;
  INSERT INTO citus_standin.reference_replica (shardid, groupid, replica) VALUES (shard_id, target_group, replica::regclass);
  INSERT INTO pg_dist_placement (placementid, shardid, shardstate, shardlength, groupid)
  VALUES (nextval('pg_dist_placement_placementid_seq'), shard_id, 1, 0, target_group);
END;
$$;

-- Writes to a reference table are applied to every placement, synchronously: a node that cannot be
-- reached makes the write fail, as in Citus.
CREATE FUNCTION citus_standin.reference_table_write() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  r record;
  keycond text;
  setlist text;
BEGIN
  IF TG_OP IN ('UPDATE', 'DELETE') THEN
    SELECT string_agg(format('t.%1$I = ($1).%1$I', a.attname), ' AND ') INTO keycond
    FROM pg_constraint c JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey)
    WHERE c.conrelid = TG_RELID AND c.contype = 'p';
    IF keycond IS NULL THEN
      SELECT string_agg(format('t.%1$I IS NOT DISTINCT FROM ($1).%1$I', attname), ' AND ' ORDER BY attnum)
      INTO keycond FROM pg_attribute WHERE attrelid = TG_RELID AND attnum > 0 AND NOT attisdropped;
    END IF;
  END IF;
  FOR r IN
    SELECT rr.replica FROM citus_standin.reference_replica rr JOIN pg_dist_shard s USING (shardid)
    WHERE s.logicalrelid = TG_RELID ORDER BY rr.groupid
  LOOP
    IF TG_OP = 'TRUNCATE' THEN
      EXECUTE format('TRUNCATE %s', r.replica);
    ELSIF TG_OP = 'INSERT' THEN
      EXECUTE format('INSERT INTO %s SELECT ($1).*', r.replica) USING NEW;
    ELSIF TG_OP = 'DELETE' THEN
      EXECUTE format('DELETE FROM %s t WHERE %s', r.replica, keycond) USING OLD;
    ELSE
      SELECT string_agg(format('%1$I = ($2).%1$I', attname), ', ' ORDER BY attnum) INTO setlist
      FROM pg_attribute WHERE attrelid = TG_RELID AND attnum > 0 AND NOT attisdropped;
      EXECUTE format('UPDATE %s t SET %s WHERE %s', r.replica, setlist, keycond) USING OLD, NEW;
    END IF;
  END LOOP;
  RETURN NULL;
END;
$$;

CREATE FUNCTION pg_catalog.create_reference_table(table_name regclass) RETURNS void
LANGUAGE plpgsql STRICT SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  relid oid := table_name;
  rel name;
  v_colocationid int;
  shard_id bigint;
  fk record;
  g int;
BEGIN
  PERFORM citus_standin.check_distributable(relid);
  -- the coordinator's table stays in place (views on it keep working); triggers replicate its writes
  SELECT c.relname INTO rel FROM pg_class c WHERE c.oid = relid;
  FOR fk IN SELECT * FROM citus_standin.foreign_keys_of(relid) LOOP
    IF fk.referenced <> relid AND NOT EXISTS (SELECT 1 FROM pg_dist_partition p
                                              WHERE p.logicalrelid = fk.referenced AND p.repmodel = 't') THEN
      IF citus_standin.is_citus_table(fk.referenced) THEN
        RAISE EXCEPTION 'cannot create foreign key constraint since foreign keys from reference tables and local tables to distributed tables are not supported'
          USING DETAIL = 'Reference tables and local tables can only have foreign keys to reference tables and local tables',
                ERRCODE = 'feature_not_supported';
      END IF;
      RAISE EXCEPTION 'stand-in: a reference table can only have foreign keys to reference tables (% references local table %)',
        rel, fk.referenced_name USING ERRCODE = 'feature_not_supported';
    END IF;
  END LOOP;
  IF NOT EXISTS (SELECT 1 FROM pg_dist_node n WHERE n.isactive AND n.noderole = 'primary') THEN
    RAISE EXCEPTION 'no worker nodes are available for placing shards'
      USING HINT = 'Add more worker nodes.', ERRCODE = 'object_not_in_prerequisite_state';
  END IF;

  SELECT c.colocationid INTO v_colocationid FROM pg_dist_colocation c
  WHERE c.shardcount = 1 AND c.replicationfactor = -1 AND c.distributioncolumntype = 0
  ORDER BY c.colocationid LIMIT 1;
  IF NOT FOUND THEN
    v_colocationid := nextval('pg_dist_colocationid_seq');
    INSERT INTO pg_dist_colocation (colocationid, shardcount, replicationfactor, distributioncolumntype,
                                    distributioncolumncollation)
    VALUES (v_colocationid, 1, -1, 0, 0);
  END IF;

  shard_id := nextval('pg_dist_shardid_seq');
  INSERT INTO pg_dist_partition (logicalrelid, partmethod, partkey, colocationid, repmodel, autoconverted)
  VALUES (relid, 'n', NULL, v_colocationid, 't', false);
  INSERT INTO pg_dist_shard (logicalrelid, shardid, shardstorage, shardminvalue, shardmaxvalue)
  VALUES (relid, shard_id, 't', NULL, NULL);
  FOR g IN SELECT n.groupid FROM pg_dist_node n WHERE n.isactive AND n.noderole = 'primary'
           ORDER BY n.nodename COLLATE "C", n.nodeport LOOP
    PERFORM citus_standin.create_reference_placement(relid, shard_id, g);
  END LOOP;
  EXECUTE format('CREATE TRIGGER citus_standin_reference_write AFTER INSERT OR UPDATE OR DELETE ON %s '
                 'FOR EACH ROW EXECUTE FUNCTION citus_standin.reference_table_write()', relid::regclass);
  EXECUTE format('CREATE TRIGGER citus_standin_reference_truncate AFTER TRUNCATE ON %s '
                 'FOR EACH STATEMENT EXECUTE FUNCTION citus_standin.reference_table_write()', relid::regclass);
  INSERT INTO citus_standin.table_signature VALUES (relid, rel, citus_standin.table_signature(relid));
END;
$$;
COMMENT ON FUNCTION pg_catalog.create_reference_table(regclass) IS 'create a distributed reference table';

CREATE FUNCTION pg_catalog.get_shard_id_for_distribution_column(table_name regclass, distribution_value text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
  p record;
  col name;
  typ text;
  n int;
  s record;
  ok bool;
BEGIN
  IF table_name IS NULL THEN
    RAISE EXCEPTION 'relation cannot be NULL' USING ERRCODE = 'null_value_not_allowed';
  END IF;
  SELECT * INTO p FROM pg_dist_partition WHERE logicalrelid = table_name;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'relation is not distributed' USING ERRCODE = 'invalid_table_definition';
  END IF;
  IF p.partmethod = 'n' THEN
    RETURN coalesce((SELECT shardid FROM pg_dist_shard WHERE logicalrelid = table_name LIMIT 1), 0);
  END IF;
  IF distribution_value IS NULL THEN
    RAISE EXCEPTION 'distribution value cannot be NULL for tables other than reference tables.'
      USING ERRCODE = 'null_value_not_allowed';
  END IF;
  col := citus_standin.distribution_column(table_name);
  SELECT format_type(atttypid, atttypmod) INTO typ FROM pg_attribute WHERE attrelid = table_name AND attname = col;
  n := (SELECT count(*) FROM pg_dist_shard WHERE logicalrelid = table_name);
  -- the stand-in routes rows with PostgreSQL's hash partitioning: shard i holds remainder i-1
  FOR s IN SELECT shardid, row_number() OVER (ORDER BY shardminvalue::bigint) - 1 AS remainder
           FROM pg_dist_shard WHERE logicalrelid = table_name LOOP
    EXECUTE format('SELECT satisfies_hash_partition(%s, %s, %s, $1::%s)', table_name::oid, n, s.remainder, typ)
      INTO ok USING distribution_value;
    IF ok THEN
      RETURN s.shardid;
    END IF;
  END LOOP;
  RETURN 0;
END;
$$;
CREATE FUNCTION pg_catalog.get_shard_id_for_distribution_column(table_name regclass, distribution_value anyelement)
RETURNS bigint
LANGUAGE sql AS $$
  SELECT pg_catalog.get_shard_id_for_distribution_column(table_name, distribution_value::text)
$$;

---------------------------------------------------------------------------------------------------
-- 10. sizes and the citus_shards / citus_tables views
---------------------------------------------------------------------------------------------------
CREATE FUNCTION pg_catalog.citus_shard_sizes(OUT shard_id int, OUT size bigint)
RETURNS SETOF record
LANGUAGE plpgsql STRICT SET client_min_messages = warning AS $$
DECLARE
  node record;
  conn text;
  q text;
  r record;
BEGIN
  FOR node IN
    SELECT n.groupid, n.nodename, n.nodeport,
           array_agg(pl.shardid ORDER BY pl.shardid) AS shardids,
           array_agg(citus_standin.qualified_shard_name(s.logicalrelid, s.shardid) ORDER BY pl.shardid) AS names
    FROM pg_dist_node n
    JOIN pg_dist_placement pl ON pl.groupid = n.groupid AND pl.shardstate = 1
    JOIN pg_dist_shard s ON s.shardid = pl.shardid
    WHERE n.isactive AND n.noderole = 'primary'
    GROUP BY n.groupid, n.nodename, n.nodeport
    ORDER BY n.nodename, n.nodeport
  LOOP
    q := format('SELECT v.id, pg_total_relation_size(to_regclass(v.name)) AS sz FROM unnest(%L::bigint[], %L::text[]) AS v(id, name) '
                'WHERE to_regclass(v.name) IS NOT NULL', node.shardids, node.names);
    IF node.groupid = 0 THEN
      FOR r IN EXECUTE q LOOP
        shard_id := r.id;
        size := r.sz;
        RETURN NEXT;
      END LOOP;
      CONTINUE;
    END IF;
    BEGIN
      conn := citus_standin.node_connection(node.nodename, node.nodeport);
    EXCEPTION WHEN connection_failure THEN
      RAISE WARNING '%', SQLERRM;
      CONTINUE;
    END;
    BEGIN
      RETURN QUERY SELECT t.id::int, t.sz FROM citus_standin.dblink(conn, q) AS t(id bigint, sz bigint);
    EXCEPTION WHEN OTHERS THEN
      RAISE WARNING '%', citus_standin.connection_error(node.nodename, node.nodeport, SQLERRM);
    END;
    PERFORM citus_standin.release_node_connection(conn);
  END LOOP;
END;
$$;
COMMENT ON FUNCTION pg_catalog.citus_shard_sizes() IS 'returns shards sizes across citus cluster';

CREATE FUNCTION pg_catalog.citus_total_relation_size(logicalrelid regclass, fail_on_error boolean DEFAULT true)
RETURNS bigint
LANGUAGE plpgsql STRICT AS $$
DECLARE
  total bigint;
BEGIN
  IF NOT citus_standin.is_citus_table(logicalrelid) THEN
    IF fail_on_error THEN
      RAISE EXCEPTION 'cannot calculate the size because relation ''%'' is not distributed', logicalrelid::text;
    END IF;
    RETURN NULL;
  END IF;
  SELECT sum(css.size) INTO total FROM citus_shard_sizes() css
  WHERE css.shard_id IN (SELECT shardid FROM pg_dist_shard s WHERE s.logicalrelid = citus_total_relation_size.logicalrelid);
  RETURN total;
END;
$$;
CREATE FUNCTION pg_catalog.citus_table_size(logicalrelid regclass) RETURNS bigint
LANGUAGE sql STRICT AS $$ SELECT pg_catalog.citus_total_relation_size($1, true) $$;
CREATE FUNCTION pg_catalog.citus_relation_size(logicalrelid regclass) RETURNS bigint
LANGUAGE sql STRICT AS $$ SELECT pg_catalog.citus_total_relation_size($1, true) $$;

CREATE VIEW citus.citus_shards AS
SELECT
     pg_dist_shard.logicalrelid AS table_name,
     pg_dist_shard.shardid,
     shard_name(pg_dist_shard.logicalrelid, pg_dist_shard.shardid) as shard_name,
     CASE WHEN partkey IS NOT NULL THEN 'distributed'
      WHEN repmodel = 't' THEN 'reference'
      WHEN colocationid = 0 THEN 'local'
      ELSE 'distributed' END AS citus_table_type,
     colocationid AS colocation_id,
     pg_dist_node.nodename,
     pg_dist_node.nodeport,
     size as shard_size
FROM
   pg_dist_shard
JOIN
   pg_dist_placement
ON
   pg_dist_shard.shardid = pg_dist_placement.shardid
JOIN
   pg_dist_node
ON
   pg_dist_placement.groupid = pg_dist_node.groupid
JOIN
   pg_dist_partition
ON
   pg_dist_partition.logicalrelid = pg_dist_shard.logicalrelid
LEFT JOIN
   (SELECT shard_id, max(size) as size from citus_shard_sizes() GROUP BY shard_id) as shard_sizes
ON
    pg_dist_shard.shardid = shard_sizes.shard_id
WHERE
   pg_dist_placement.shardstate = 1
AND
   -- filter out tables owned by extensions
   pg_dist_partition.logicalrelid NOT IN (
      SELECT
         objid
      FROM
         pg_depend
      WHERE
         classid = 'pg_class'::regclass AND refclassid = 'pg_extension'::regclass AND deptype = 'e'
   )
ORDER BY
   pg_dist_shard.logicalrelid::text, shardid
;
ALTER VIEW citus.citus_shards SET SCHEMA pg_catalog;
GRANT SELECT ON pg_catalog.citus_shards TO public;

DO $$
declare
citus_tables_create_query text;
BEGIN
citus_tables_create_query=$CTCQ$
    CREATE OR REPLACE VIEW %I.citus_tables AS
    SELECT
        logicalrelid AS table_name,
        CASE WHEN partkey IS NOT NULL THEN 'distributed'
            WHEN repmodel = 't' THEN 'reference'
            WHEN colocationid = 0 THEN 'local'
            ELSE 'distributed'
        END AS citus_table_type,
        coalesce(column_to_column_name(logicalrelid, partkey), '<none>') AS distribution_column,
        colocationid AS colocation_id,
        pg_size_pretty(table_sizes.table_size) AS table_size,
        (select count(*) from pg_dist_shard where logicalrelid = p.logicalrelid) AS shard_count,
        pg_get_userbyid(relowner) AS table_owner,
        -- the stand-in's distributed tables are partitioned (no access method) over heap shards
        CASE WHEN c.relkind = 'p' THEN 'heap'::name ELSE amname END AS access_method
    FROM
        pg_dist_partition p
    JOIN
        pg_class c ON (p.logicalrelid = c.oid)
    LEFT JOIN
        pg_am a ON (a.oid = c.relam)
    JOIN
        (
            SELECT ds.logicalrelid AS table_id, SUM(css.size) AS table_size
            FROM citus_shard_sizes() css, pg_dist_shard ds
            WHERE css.shard_id = ds.shardid
            GROUP BY ds.logicalrelid
        ) table_sizes ON (table_sizes.table_id = p.logicalrelid)
    WHERE
        -- filter out tables owned by extensions
        logicalrelid NOT IN (
            SELECT
                objid
            FROM
                pg_depend
            WHERE
                classid = 'pg_class'::regclass AND refclassid = 'pg_extension'::regclass AND deptype = 'e'
        )
    ORDER BY
        logicalrelid::text;
$CTCQ$;

IF EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'public') THEN
    EXECUTE format(citus_tables_create_query, 'public');
    GRANT SELECT ON public.citus_tables TO public;
ELSE
    EXECUTE format(citus_tables_create_query, 'citus');
    ALTER VIEW citus.citus_tables SET SCHEMA pg_catalog;
    GRANT SELECT ON pg_catalog.citus_tables TO public;
END IF;

END;
$$;

---------------------------------------------------------------------------------------------------
-- 11. shard-wide commands
---------------------------------------------------------------------------------------------------
CREATE FUNCTION pg_catalog.run_command_on_placements(table_name regclass, command text, parallel bool default true,
    OUT nodename text, OUT nodeport int, OUT shardid bigint, OUT success bool, OUT result text)
RETURNS SETOF record
LANGUAGE plpgsql AS $function$
DECLARE
  workers text[];
  ports int[];
  shards bigint[];
  commands text[];
BEGIN
  WITH citus_placements AS (
    SELECT
      ds.logicalrelid::regclass AS tablename,
      ds.shardid AS shardid,
      shard_name(ds.logicalrelid, ds.shardid) AS shardname,
      dsp.nodename AS nodename, dsp.nodeport::int AS nodeport
    FROM pg_dist_shard ds JOIN pg_dist_shard_placement dsp USING (shardid)
    WHERE dsp.shardstate = 1 and ds.logicalrelid::regclass = table_name
    ORDER BY ds.logicalrelid, ds.shardid, dsp.nodename, dsp.nodeport)
  SELECT
    array_agg(cp.nodename), array_agg(cp.nodeport), array_agg(cp.shardid),
    array_agg(format(command, cp.shardname))
  INTO workers, ports, shards, commands
  FROM citus_placements cp;

  RETURN QUERY
    SELECT r.node_name, r.node_port, shards[ordinality],
      r.success, r.result
    FROM master_run_on_worker(workers, ports, commands, parallel) WITH ORDINALITY r;
END;
$function$;

CREATE FUNCTION pg_catalog.run_command_on_shards(table_name regclass, command text, parallel bool default true,
    OUT shardid bigint, OUT success bool, OUT result text)
RETURNS SETOF record
LANGUAGE plpgsql AS $function$
DECLARE
  workers text[];
  ports int[];
  shards bigint[];
  commands text[];
  shard_count int;
BEGIN
  SELECT COUNT(*) INTO shard_count FROM pg_dist_shard
  WHERE logicalrelid = table_name;

  WITH citus_shards AS (
    SELECT ds.logicalrelid::regclass AS tablename,
      ds.shardid AS shardid,
      shard_name(ds.logicalrelid, ds.shardid) AS shardname,
      array_agg(dsp.nodename) AS nodenames,
      array_agg(dsp.nodeport) AS nodeports
    FROM pg_dist_shard ds LEFT JOIN pg_dist_shard_placement dsp USING (shardid)
    WHERE dsp.shardstate = 1 and ds.logicalrelid::regclass = table_name
    GROUP BY ds.logicalrelid, ds.shardid
    ORDER BY ds.logicalrelid, ds.shardid)
  SELECT
    array_agg(cs.nodenames[1]), array_agg(cs.nodeports[1]), array_agg(cs.shardid),
    array_agg(format(command, cs.shardname))
  INTO workers, ports, shards, commands
  FROM citus_shards cs;

  IF (shard_count != array_length(workers, 1)) THEN
    RAISE NOTICE 'some shards do  not have active placements';
  END IF;

  RETURN QUERY
    SELECT shards[ordinality], r.success, r.result
    FROM master_run_on_worker(workers, ports, commands, parallel) WITH ORDINALITY r;
END;
$function$;

---------------------------------------------------------------------------------------------------
-- 12. DDL on Citus tables: DROP cleans up shards and metadata; CREATE INDEX reaches the shards; changes
--     of columns or names (which the stand-in cannot carry to the shards) are refused
---------------------------------------------------------------------------------------------------
CREATE FUNCTION citus_standin.on_sql_drop() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  obj record;
  node record;
  r record;
  colocation int;
BEGIN
  IF to_regclass('pg_catalog.pg_dist_partition') IS NULL
     OR EXISTS (SELECT 1 FROM pg_event_trigger_dropped_objects() WHERE object_type = 'extension') THEN
    RETURN;
  END IF;
  FOR obj IN
    SELECT d.objid, d.schema_name, d.object_name FROM pg_event_trigger_dropped_objects() d
    WHERE d.classid = 'pg_class'::regclass AND d.objsubid = 0 AND d.object_type = 'table'
      AND EXISTS (SELECT 1 FROM pg_dist_partition p WHERE p.logicalrelid::oid = d.objid)
  LOOP
    SELECT p.colocationid INTO colocation FROM pg_dist_partition p WHERE p.logicalrelid::oid = obj.objid;
    -- replicas of reference tables
    FOR r IN
      SELECT rr.replica, rr.groupid, rr.shardid FROM citus_standin.reference_replica rr
      JOIN pg_dist_shard s USING (shardid) WHERE s.logicalrelid::oid = obj.objid
    LOOP
      IF r.groupid = 0 THEN
        EXECUTE format('DROP TABLE IF EXISTS %s', r.replica);
      ELSE
        EXECUTE format('DROP FOREIGN TABLE IF EXISTS %s', r.replica);
      END IF;
      DELETE FROM citus_standin.reference_replica WHERE shardid = r.shardid AND groupid = r.groupid;
    END LOOP;
    -- shard tables on the nodes (a node that cannot be reached makes the DROP fail, as in Citus)
    FOR node IN
      SELECT n.nodename, n.nodeport, n.groupid,
             array_agg(format('DROP TABLE IF EXISTS %I.%I CASCADE', obj.schema_name,
                              citus_standin.shard_relname(obj.object_name, s.shardid)) ORDER BY s.shardid) AS cmds
      FROM pg_dist_shard s JOIN pg_dist_placement pl USING (shardid)
      JOIN pg_dist_node n ON n.groupid = pl.groupid AND n.noderole = 'primary'
      WHERE s.logicalrelid::oid = obj.objid AND n.groupid <> 0
      GROUP BY n.nodename, n.nodeport, n.groupid
    LOOP
      PERFORM citus_standin.run_commands_on_node(node.nodename, node.nodeport, node.cmds);
    END LOOP;
    DELETE FROM pg_dist_placement WHERE shardid IN (SELECT s.shardid FROM pg_dist_shard s WHERE s.logicalrelid::oid = obj.objid);
    DELETE FROM pg_dist_shard WHERE logicalrelid::oid = obj.objid;
    DELETE FROM pg_dist_partition WHERE logicalrelid::oid = obj.objid;
    DELETE FROM citus_standin.table_signature WHERE logicalrelid = obj.objid;
    IF NOT EXISTS (SELECT 1 FROM pg_dist_partition p WHERE p.colocationid = colocation) THEN
      DELETE FROM pg_dist_colocation WHERE colocationid = colocation;
    END IF;
  END LOOP;
  DELETE FROM citus_standin.deferred_fkey d
  WHERE d.conrelid IN (SELECT objid FROM pg_event_trigger_dropped_objects() WHERE classid = 'pg_class'::regclass);
END;
$$;
CREATE EVENT TRIGGER citus_standin_sql_drop ON sql_drop EXECUTE FUNCTION citus_standin.on_sql_drop();

CREATE FUNCTION citus_standin.on_ddl_command_end() RETURNS event_trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  cmd record;
  sig record;
  tbl oid;
  node record;
  idx record;
  suffix text;
BEGIN
  IF to_regclass('pg_catalog.pg_dist_partition') IS NULL THEN
    RETURN;
  END IF;
  FOR cmd IN SELECT * FROM pg_event_trigger_ddl_commands() WHERE classid = 'pg_class'::regclass LOOP
    IF cmd.command_tag = 'CREATE INDEX' THEN
      SELECT i.indrelid, ic.relname, pg_get_indexdef(i.indexrelid) AS def, i.indisunique INTO idx
      FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid WHERE i.indexrelid = cmd.objid;
      tbl := idx.indrelid;
      CONTINUE WHEN tbl IS NULL OR NOT citus_standin.is_citus_table(tbl);
      FOR node IN
        SELECT n.nodename, n.nodeport, array_agg(s.shardid ORDER BY s.shardid) AS shardids
        FROM pg_dist_shard s JOIN pg_dist_placement pl USING (shardid)
        JOIN pg_dist_node n ON n.groupid = pl.groupid AND n.noderole = 'primary'
        WHERE s.logicalrelid = tbl AND n.groupid <> 0
        GROUP BY n.nodename, n.nodeport
      LOOP
        PERFORM citus_standin.run_commands_on_node(node.nodename, node.nodeport,
          ARRAY(SELECT format('CREATE %sINDEX IF NOT EXISTS %I ON %s %s',
                              CASE WHEN idx.indisunique THEN 'UNIQUE ' ELSE '' END,
                              left(idx.relname, 63 - length('_' || sid)) || '_' || sid,
                              citus_standin.qualified_shard_name(tbl, sid),
                              substring(idx.def from position(' USING ' in idx.def) + 1))
                FROM unnest(node.shardids) AS sid));
      END LOOP;
    ELSIF cmd.command_tag = 'ALTER TABLE' THEN
      SELECT * INTO sig FROM citus_standin.table_signature WHERE logicalrelid = cmd.objid;
      CONTINUE WHEN NOT FOUND;
      IF sig.columns IS DISTINCT FROM citus_standin.table_signature(cmd.objid)
         OR sig.relname IS DISTINCT FROM (SELECT relname FROM pg_class WHERE oid = cmd.objid) THEN
        RAISE EXCEPTION 'stand-in: % cannot change the columns or the name of Citus table %',
          cmd.command_tag, cmd.object_identity
          USING ERRCODE = 'feature_not_supported',
                HINT = 'The Citus stand-in does not propagate such DDL to the shards; drop and recreate the table instead.';
      END IF;
    END IF;
  END LOOP;
END;
$$;
CREATE EVENT TRIGGER citus_standin_ddl_command_end ON ddl_command_end
  WHEN TAG IN ('ALTER TABLE', 'CREATE INDEX')
  EXECUTE FUNCTION citus_standin.on_ddl_command_end();

RESET search_path;
