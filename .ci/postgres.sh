#!/usr/bin/env bash
# A throwaway PostgreSQL server on loopback for the tests (several-worker searches on one study).
#   .ci/postgres.sh start DIR   init a cluster in DIR, start it, print its URL on stdout
#   .ci/postgres.sh stop DIR    stop it
#   .ci/postgres.sh restart DIR stop it (closing every connection) and start it again on the same port
# The server refuses to run as root, so as root it runs as the `postgres` user (DIR must then be reachable
# by that user, e.g. directly under /tmp). Exit 3: no server binaries.
set -euo pipefail
cmd="${1:?start|stop}"
dir="${2:?data directory}"
port="${PG_TEST_PORT:-54329}"
bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
as_pg=()
if [[ "$(id -u)" == 0 ]]; then as_pg=(runuser -u postgres --); fi

case "$cmd" in
start)
    if [[ -z "$bin" ]]; then
        echo "postgres.sh: no PostgreSQL server binaries (apt-get install postgresql)" >&2
        exit 3
    fi
    mkdir -p "$dir"
    [[ "$(id -u)" == 0 ]] && chown postgres "$dir"
    chmod 700 "$dir"
    "${as_pg[@]}" "$bin/initdb" -D "$dir" -U postgres --auth-local=trust --auth-host=scram-sha-256 >/dev/null
    "${as_pg[@]}" "$bin/pg_ctl" -D "$dir" -l "$dir/server.log" -w \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c max_connections=100" start >/dev/null
    "${as_pg[@]}" psql -q -h "$dir" -p "$port" -U postgres -d postgres \
        -c "CREATE ROLE harness LOGIN PASSWORD 'harness-secret-pw';" \
        -c "CREATE DATABASE optuna_test OWNER harness;" >/dev/null
    echo "postgresql://harness:harness-secret-pw@127.0.0.1:$port/optuna_test"
    ;;
stop)
    "${as_pg[@]}" "$bin/pg_ctl" -D "$dir" -m fast stop >/dev/null 2>&1 || true
    ;;
restart)
    "${as_pg[@]}" "$bin/pg_ctl" -D "$dir" -m fast -w restart >/dev/null
    ;;
*)
    echo "usage: $0 start|stop|restart DIR" >&2
    exit 2
    ;;
esac
