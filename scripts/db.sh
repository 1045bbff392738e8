#!/usr/bin/env bash
# A throwaway local PostgreSQL cluster for the demo, the tests and the benchmark.
#
#   scripts/db.sh up      start it (idempotent) and print DATABASE_URL=...
#   scripts/db.sh down    stop it and delete its data
#   scripts/db.sh url     print the URL of the running cluster
#   scripts/db.sh ctl ARGS  run pg_ctl against it (restart -m fast, stop -m immediate, start)
#   scripts/db.sh tls-up  start a second, TLS-only cluster for the TLS tests, with a local CA
#                         (its certificates, port and URL in .pg/tls/); `down` stops it too
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
    # From /, which postgres can enter: a clone under /root or a private temp folder is not.
    if [ "$(id -u)" = 0 ]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi
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

# A TLS-only cluster: a throwaway CA signs a server certificate for `localhost` (not for
# 127.0.0.1, so verify-full against the IP fails as it must); a second CA signs nothing. Only
# `hostssl` connections are accepted. Kept apart from the main cluster so that the tests,
# the drills and the benchmarks (ours and the peers') do not pay for TLS.
tls_up() {
    local tls="$state/tls" bindir datadir port
    if [ -f "$tls/datadir" ] && as_owner "$(pg_bindir)/pg_ctl" -D "$(cat "$tls/datadir")" status >/dev/null 2>&1; then
        echo "IMAGEJOBS_TLS_DIR=$tls"
        return
    fi
    command -v openssl >/dev/null || { echo "db.sh: openssl not found; install it with: apt-get install -y openssl" >&2; exit 1; }
    bindir=$(pg_bindir)
    rm -rf "$tls"
    mkdir -p "$tls"
    (
        cd "$tls"
        openssl req -x509 -newkey rsa:2048 -nodes -days 3 -subj "/CN=imagejobs test CA" -keyout ca.key -out ca.pem
        openssl req -x509 -newkey rsa:2048 -nodes -days 3 -subj "/CN=another CA" -keyout other-ca.key -out other-ca.pem
        openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout server.key -out server.csr
        printf 'subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' >server.ext
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 3 -extfile server.ext -out server.pem
    ) >"$tls/openssl.log" 2>&1 || { cat "$tls/openssl.log" >&2; exit 1; }
    if [ "$(id -u)" = 0 ]; then
        datadir=$(mktemp -d /tmp/imagejobs-pg-tls.XXXXXX)
        chown postgres: "$datadir"
        chmod 700 "$datadir"
    else
        datadir="$tls/data"
        mkdir -p "$datadir"
    fi
    as_owner "$bindir/initdb" -D "$datadir" -U postgres --auth=trust -E UTF8 --locale=C >"$tls/initdb.log" 2>&1 || {
        cat "$tls/initdb.log" >&2
        exit 1
    }
    cp "$tls/server.pem" "$tls/server.key" "$datadir/"
    if [ "$(id -u)" = 0 ]; then chown postgres: "$datadir/server.pem" "$datadir/server.key"; fi
    chmod 600 "$datadir/server.key"
    port=$((56320 + RANDOM % 2000))
    while ! port_free "$port"; do port=$((port + 1)); done
    cat >>"$datadir/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$datadir'
ssl = on
ssl_cert_file = 'server.pem'
ssl_key_file = 'server.key'
fsync = off
log_min_messages = warning
CONF
    cat >"$datadir/pg_hba.conf" <<HBA
local   all all          trust
hostssl all all 127.0.0.1/32 trust
HBA
    echo "$datadir" >"$tls/datadir"
    echo "$port" >"$tls/port"
    as_owner "$bindir/pg_ctl" -D "$datadir" -l "$datadir/server.log" -w -t 30 start >/dev/null
    echo "IMAGEJOBS_TLS_DIR=$tls"
}

tls_down() {
    local tls="$state/tls"
    [ -f "$tls/datadir" ] || return 0
    local datadir
    datadir=$(cat "$tls/datadir")
    if [ -d "$datadir" ]; then
        as_owner "$(pg_bindir)/pg_ctl" -D "$datadir" -m immediate -w stop >/dev/null 2>&1 || true
        rm -rf "$datadir"
    fi
    rm -rf "$tls"
}

down() {
    tls_down
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
tls-up) tls_up ;;
tls-down) tls_down ;;
*) echo "usage: scripts/db.sh up|down|url|ctl ARGS|tls-up|tls-down" >&2; exit 2 ;;
esac
