#!/usr/bin/env bash
# Entrypoint of parcels/pg: the official postgres image's interface, simplified.
#   POSTGRES_PASSWORD (required on first start), POSTGRES_USER (default postgres, the superuser),
#   POSTGRES_DB (default $POSTGRES_USER), POSTGRES_INITDB_ARGS (extra initdb arguments).
# First start on an empty $PGDATA: initdb, `host all all all scram-sha-256`, create POSTGRES_DB, run
# /docker-entrypoint-initdb.d/*.sql and *.sh once. Every start: `exec postgres` as the postgres user (PID 1).
set -Eeo pipefail

log() { printf '%s parcels-pg: %s\n' "$(date -u +%FT%TZ)" "$*" >&2; }

if [ "${1:0:1}" = '-' ]; then
    set -- postgres "$@"
fi

if [ "$1" != 'postgres' ]; then
    exec "$@"
fi

: "${POSTGRES_USER:=postgres}"
: "${POSTGRES_DB:=$POSTGRES_USER}"
export POSTGRES_USER POSTGRES_DB

if [ "$(id -u)" = '0' ]; then
    mkdir -p "$PGDATA" /var/run/postgresql
    chown postgres:postgres "$PGDATA" /var/run/postgresql
    chmod 0700 "$PGDATA"
    exec setpriv --reuid=postgres --regid=postgres --init-groups "${BASH_SOURCE[0]}" "$@"
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -z "${POSTGRES_PASSWORD:-}" ]; then
        log "error: the data directory is empty and POSTGRES_PASSWORD is not set: set it to initialise the database"
        exit 1
    fi
    log "initialising $PGDATA (superuser $POSTGRES_USER, database $POSTGRES_DB)"
    # shellcheck disable=SC2086
    initdb --username="$POSTGRES_USER" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") \
        --auth-local=trust --auth-host=scram-sha-256 ${POSTGRES_INITDB_ARGS:-} >/dev/null
    printf '\n# parcels-pg: password (scram-sha-256) for every TCP client\nhost all all all scram-sha-256\n' \
        >> "$PGDATA/pg_hba.conf"

    # a socket-only server for the set-up
    pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -p 5432" -w -s start
    psql=(psql -v ON_ERROR_STOP=1 -X -q --username "$POSTGRES_USER" --no-password)
    if [ "$POSTGRES_DB" != 'postgres' ]; then
        "${psql[@]}" --dbname postgres --set db="$POSTGRES_DB" <<-'EOSQL'
			SELECT format('CREATE DATABASE %I', :'db')
			WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'db') \gexec
		EOSQL
    fi
    for f in /docker-entrypoint-initdb.d/*; do
        case "$f" in
            *.sql) log "running $f"; "${psql[@]}" --dbname "$POSTGRES_DB" -f "$f" ;;
            *.sh)  log "running $f"; . "$f" ;;
            *)     if [ -e "$f" ]; then log "ignoring $f"; fi ;;
        esac
    done
    pg_ctl -D "$PGDATA" -m fast -w -s stop
    log "initialisation complete"
else
    log "$PGDATA holds a database: initialisation skipped"
fi

unset POSTGRES_PASSWORD PGPASSWORD
exec "$@"
