#!/usr/bin/env bash
# A throwaway local PostgreSQL cluster for the demo, the tests and the benchmark.
#
#   scripts/db.sh up      start it (idempotent) and print DATABASE_URL=...
#   scripts/db.sh down    stop it and delete its data
#   scripts/db.sh url     print the URL of the running cluster
#   scripts/db.sh ctl ARGS  run pg_ctl against it (restart -m fast, stop -m immediate, start)
#
# State (port, data directory, URL) lives in .pg/ at the repository root (git-ignored). Run as
# root, the cluster is initdb'ed and run as the `postgres` user, in a directory under /tmp that
# user can reach (a clone under /root is not reachable by it).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
state="$root/.pg"
mkdir -p "$state"

pg_bindir() {
    local dir=""
    if command -v pg_config >/dev/null 2>&1; then
        dir=$(pg_config --bindir 2>/dev/null || true)
    fi
    if [ -z "$dir" ] || [ ! -x "$dir/initdb" ]; then
        dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    fi
    if [ -z "$dir" ] || [ ! -x "$dir/initdb" ]; then
        echo "db.sh: PostgreSQL server binaries not found; install them with: apt-get install -y postgresql" >&2
        exit 1
    fi
    echo "$dir"
}

as_owner() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

port_free() {
    ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

running() {
    [ -f "$state/datadir" ] || return 1
    local bindir datadir
    bindir=$(pg_bindir)
    datadir=$(cat "$state/datadir")
    [ -d "$datadir" ] && as_owner "$bindir/pg_ctl" -D "$datadir" status >/dev/null 2>&1
}

url() {
    echo "postgresql://postgres@127.0.0.1:$(cat "$state/port")/imagejobs"
}

up() {
    if running; then
        echo "DATABASE_URL=$(url)"
        return
    fi
    local bindir datadir port
    bindir=$(pg_bindir)
    if [ "$(id -u)" = 0 ]; then
        datadir=$(mktemp -d /tmp/imagejobs-pg.XXXXXX)
        chown postgres: "$datadir"
        chmod 700 "$datadir"
    else
        datadir="$state/data"
        rm -rf "$datadir"
        mkdir -p "$datadir"
    fi
    port=${PGPORT_LOCAL:-$((54320 + RANDOM % 2000))}
    while ! port_free "$port"; do port=$((port + 1)); done
    as_owner "$bindir/initdb" -D "$datadir" -U postgres --auth=trust -E UTF8 --locale=C >"$state/initdb.log" 2>&1 || {
        cat "$state/initdb.log" >&2
        exit 1
    }
    cat >>"$datadir/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$datadir'
max_connections = 300
shared_buffers = 256MB
fsync = ${PG_FSYNC:-off}
synchronous_commit = on
full_page_writes = ${PG_FSYNC:-off}
max_wal_size = 2GB
log_min_messages = warning
log_min_error_statement = panic
autovacuum_naptime = 10s
shared_preload_libraries = 'pg_stat_statements'
CONF
    echo "$datadir" >"$state/datadir"
    echo "$port" >"$state/port"
    as_owner "$bindir/pg_ctl" -D "$datadir" -l "$datadir/server.log" -w -t 30 start >/dev/null
    as_owner "$bindir/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres -qAt \
        -c "CREATE DATABASE imagejobs" >/dev/null
    as_owner "$bindir/psql" -h 127.0.0.1 -p "$port" -U postgres -d imagejobs -qAt \
        -c "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" >/dev/null
    echo "DATABASE_URL=$(url)"
}

down() {
    [ -f "$state/datadir" ] || return 0
    local bindir datadir
    bindir=$(pg_bindir)
    datadir=$(cat "$state/datadir")
    if [ -d "$datadir" ]; then
        as_owner "$bindir/pg_ctl" -D "$datadir" -m immediate -w stop >/dev/null 2>&1 || true
        rm -rf "$datadir"
    fi
    rm -f "$state/datadir" "$state/port"
}

ctl() {
    local bindir datadir
    bindir=$(pg_bindir)
    datadir=$(cat "$state/datadir")
    as_owner "$bindir/pg_ctl" -D "$datadir" -l "$datadir/server.log" -w "$@"
}

case "${1:-}" in
up) up ;;
down) down ;;
url) running && url ;;
ctl) shift; ctl "$@" ;;
*) echo "usage: scripts/db.sh up|down|url|ctl ARGS" >&2; exit 2 ;;
esac
