# Shell helpers shared by the test runner, the demo and the benchmarks.
# Source it; it defines PGBIN and functions to run throwaway clusters as the
# unprivileged "postgres" user (initdb refuses root).

PG_CONFIG=${PG_CONFIG:-pg_config}
PGBIN=$("$PG_CONFIG" --bindir)
PGXS_DIR=$(dirname "$(dirname "$(dirname "$("$PG_CONFIG" --pgxs)")")")

# as_pg CMD...: runs a command as the postgres user when we are root.
as_pg() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- env PATH="$PGBIN:$PATH" "$@"
    else
        env PATH="$PGBIN:$PATH" "$@"
    fi
}

# make_workdir PREFIX: a fresh directory the postgres user owns.
make_workdir() {
    local d
    d=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
    [ "$(id -u)" -eq 0 ] && chown postgres: "$d"
    chmod 755 "$d"
    echo "$d"
}

# start_cluster DIR PORT [EXTRA_CONF_LINES]: initdb (once) and start a cluster
# preloading ehrledger, listening on a Unix socket in DIR only.
start_cluster() {
    local dir=$1 port=$2 extra=${3:-}
    if [ ! -d "$dir/data" ]; then
        as_pg initdb -D "$dir/data" -A trust -U postgres >/dev/null
        as_pg tee -a "$dir/data/postgresql.conf" >/dev/null <<CONF
port = $port
listen_addresses = ''
unix_socket_directories = '$dir'
shared_preload_libraries = 'ehrledger'
$extra
CONF
    fi
    as_pg pg_ctl -D "$dir/data" -l "$dir/server.log" -w start >/dev/null
}

stop_cluster() {
    as_pg pg_ctl -D "$1/data" -m fast -w stop >/dev/null 2>&1 || true
}

# psql_at DIR PORT DB ARGS...: psql against a cluster started above.
psql_at() {
    local dir=$1 port=$2 db=$3
    shift 3
    as_pg psql -X -q -h "$dir" -p "$port" -U postgres -d "$db" -v ON_ERROR_STOP=1 "$@"
}
