# The four hospitals of the network benchmarks (network.sh, restore.sh).
# Source it after common.sh, with BASE_PORT set (the first of four ports).
#
# Four throwaway clusters in one work directory $NET (/tmp/ehrledger-bench-
# <name>.XXXXXX/<hospital>), set up as scripts/demo-network.sh does:
# st-mary, county-general, lakeside and riverside on ports BASE_PORT ..
# BASE_PORT+3, Unix sockets only, wal_level = logical,
# ehrledger.seal_interval = 200, database "ehr" with the extension (which
# publishes), and track_commit_timestamp = on (a row's commit time is
# pg_xact_commit_timestamp(xmin)).
#
#   net_start            the four, started, each add_peer()s the three others
#                        with their node keys; sets SETUP_S and QUORUM
#   hq HOSPITAL ARGS...  psql on a hospital's database
#   hv HOSPITAL SQL      one value from it
#   wait_true WHAT SECONDS HOSPITAL SQL   polls SQL (boolean) every 0.2 s
#   fail WHAT            prints what each hospital holds, and exits 1
#   all_final HOSPITAL TABLE   waits until its newest row's block and all
#                        before it are final at all four; prints the height
# On exit the clusters are stopped and $NET removed (kept with
# KEEP_WORKDIR=1 or after a failure).

SEAL_INTERVAL=200
DB=ehr
HOSPITALS=(st-mary county-general lakeside riverside)
declare -A HPORT
for i in "${!HOSPITALS[@]}"; do HPORT[${HOSPITALS[$i]}]=$((BASE_PORT + i)); done

# Four clusters instead of common.sh's one: our own cleanup.  A script may
# set SAMPLER to the pid of a background job to end first.
NET=""
SAMPLER=""
net_cleanup() {
    local rc=$? h
    trap - EXIT
    [ -n "$SAMPLER" ] && kill "$SAMPLER" 2>/dev/null
    if [ -n "$NET" ] && [ -d "$NET" ]; then
        for h in "${HOSPITALS[@]}"; do
            [ -f "$NET/$h/data/postmaster.pid" ] && stop_cluster "$NET/$h"
        done
        if [ "${KEEP_WORKDIR:-0}" = 1 ] || [ "$rc" -ne 0 ]; then
            echo "work directory kept: $NET (server.log of each hospital in $NET/<name>/)" >&2
        else
            rm -rf "$NET"
        fi
    fi
    exit "$rc"
}
trap net_cleanup EXIT

hq() {
    local h=$1
    shift
    psql_at "$NET/$h" "${HPORT[$h]}" "$DB" "$@"
}
hv() { hq "$1" -At -c "$2"; }

# diagnose: what each hospital holds, and the end of its log; for failures.
diagnose() {
    local h
    for h in "${HOSPITALS[@]}"; do
        echo "--- $h: network_status" >&2
        hq "$h" -c "SELECT * FROM ehrledger.network_status" >&2 || true
        hq "$h" -c "SELECT name, received_lsn, last_msg_receipt_time, height FROM ehrledger.peers" >&2 || true
        echo "--- $h: end of server.log" >&2
        tail -n 15 "$NET/$h/server.log" >&2 || true
    done
}
fail() {
    echo "FAILED: $*" >&2
    diagnose
    exit 1
}

wait_true() {
    local what=$1 limit=$2 h=$3 sql=$4 t=$SECONDS
    until [ "$(hv "$h" "$sql")" = t ]; do
        [ $((SECONDS - t)) -ge "$limit" ] && fail "$what: not after ${limit}s at $h"
        sleep 0.2
    done
}

# add_peer HOSPITAL PEER: on PostgreSQL 15 add_peer() may fail inside
# pg_create_logical_replication_slot() with "snapshot reference ... is not
# owned by resource owner" while another subscription's table
# synchronization commits (see README, Hospital network); it leaves nothing
# behind, and is run again, as a DBA would.
add_peer() {
    local h=$1 p=$2 try out
    for try in 1 2 3 4 5; do
        out=$(hq "$h" -c "SELECT ehrledger.add_peer('$p', 'host=$NET/$p port=${HPORT[$p]} dbname=$DB user=postgres',
                                                     '\\x${KEY[$p]}')" 2>&1) && return 0
        grep -q 'is not owned by resource owner' <<<"$out" || { echo "$out" >&2; return 1; }
        log "add_peer('$p') at $h, try $try: $out"
    done
    return 1
}

# all_final HOSPITAL TABLE: waits until the newest row of TABLE at
# HOSPITAL is sealed and every block of HOSPITAL up to the one holding it
# is final at all four; prints that block's height.
all_final() {
    local w=$1 t=$2 last top h
    last=$(hv "$w" "SELECT max(ledger_seq) FROM $t")
    wait_true "the block holding row $last sealed" 60 "$w" \
        "SELECT EXISTS (SELECT 1 FROM ehrledger.block WHERE origin = '$w' AND last_seq >= $last)"
    top=$(hv "$w" "SELECT min(height) FROM ehrledger.block WHERE origin = '$w' AND last_seq >= $last")
    for h in "${HOSPITALS[@]}"; do
        wait_true "every block of $w up to $top final" 60 "$h" \
            "SELECT count(*) = $top FROM ehrledger.final_block WHERE origin = '$w' AND height <= $top"
    done
    echo "$top"
}

declare -A KEY
net_start() {
    local h p t0=$SECONDS
    NET=$(make_workdir "ehrledger-bench-$NAME")
    log "starting four hospitals in $NET, ports ${HPORT[${HOSPITALS[0]}]}-${HPORT[${HOSPITALS[3]}]}"
    for h in "${HOSPITALS[@]}"; do
        mkdir -p "$NET/$h"
        [ "$(id -u)" -eq 0 ] && chown postgres: "$NET/$h"
        chmod 755 "$NET/$h"
        start_cluster "$NET/$h" "${HPORT[$h]}" "$BENCH_CONF
shared_buffers = 256MB
wal_level = logical
track_commit_timestamp = on
ehrledger.database = '$DB'
ehrledger.node_name = '$h'
ehrledger.seal_interval = $SEAL_INTERVAL
max_worker_processes = 24
max_logical_replication_workers = 12
max_replication_slots = 10
max_wal_senders = 10" || { tail -n 20 "$NET/$h/server.log" >&2; exit 1; }
        psql_at "$NET/$h" "${HPORT[$h]}" postgres -c "CREATE DATABASE $DB"
        # the sealer connects to ehrledger.database at start: restart once
        stop_cluster "$NET/$h"
        start_cluster "$NET/$h" "${HPORT[$h]}"
        hq "$h" -c 'CREATE EXTENSION ehrledger'
    done
    for h in "${HOSPITALS[@]}"; do
        KEY[$h]=$(hv "$h" "SELECT encode(ehrledger.node_public_key(), 'hex')")
    done
    for h in "${HOSPITALS[@]}"; do
        for p in "${HOSPITALS[@]}"; do
            [ "$p" = "$h" ] || add_peer "$h" "$p" || fail "add_peer('$p') at $h"
        done
    done
    for h in "${HOSPITALS[@]}"; do
        wait_true "subscriptions ready" 30 "$h" \
            "SELECT (SELECT count(*) FROM pg_stat_subscription WHERE relid IS NULL AND pid IS NOT NULL) = 3
                AND NOT EXISTS (SELECT 1 FROM pg_subscription_rel WHERE srsubstate <> 'r')"
    done
    QUORUM=$(hv "${HOSPITALS[0]}" "SELECT ehrledger.quorum()")
    SETUP_S=$((SECONDS - t0))
    log "network up in ${SETUP_S}s, quorum $QUORUM of ${#HOSPITALS[@]}"
}
