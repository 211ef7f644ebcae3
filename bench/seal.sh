#!/usr/bin/env bash
# The sealer: (a) how long a row waits to be sealed under insert load, and
# (b) time and peak memory of one seal() over ROWS pending rows.
#
# (a) Protected table obs_load with created_at DEFAULT clock_timestamp();
#     pgbench inserts one ~280-byte Observation per transaction (CLIENTS
#     clients, DURATION s) while the background sealer runs at
#     ehrledger.seal_interval = SEAL_INTERVAL (1000 ms, the default).  Then
#     it waits until every row is sealed and computes, per row,
#     delay = block.sealed_at - row.created_at (joining rows to
#     ehrledger.blocks on ledger_seq BETWEEN first_seq AND last_seq).
#     created_at is taken when the row is built, a little before its commit,
#     so the delay slightly over-states commit-to-sealed.
# (b) seal_interval is set to 0 (ALTER SYSTEM + reload: only manual seals),
#     ROWS rows are inserted into protected table obs_seal in one statement,
#     and one psql session reads its backend's /proc/<pid>/status (through
#     \! , which runs as the postgres user) before and after
#     SELECT ehrledger.seal().  VmHWM counts every shared_buffers page the
#     backend touched, so with PRETOUCH=1 (default) the session first reads
#     every row through the ledger_seq index, as the seal does: the shared
#     pages the seal reads are then counted before it starts (the seal also
#     runs warm).  The private peak is estimated as VmHWM - RssShmem - RssFile
#     after the seal (a lower bound: shared pages only grow in a session).
#
# Knobs: DURATION (30), CLIENTS (8), THREADS (2), SEAL_INTERVAL (1000),
#        ROWS (1000000), PRETOUCH (1), PORT (54342).
NAME=seal
. "$(dirname "$0")/common.sh"

DURATION=${DURATION:-30}
CLIENTS=${CLIENTS:-8}
THREADS=${THREADS:-2}
SEAL_INTERVAL=${SEAL_INTERVAL:-1000}
ROWS=${ROWS:-1000000}
PRETOUCH=${PRETOUCH:-1}

log "starting cluster on port ${PORT:-54342}"
bench_start "${PORT:-54342}" "ehrledger.seal_interval = $SEAL_INTERVAL"

# ---- (a) delay from insert to seal under load ------------------------------
q "$(obs_table_sql obs_load 'clock_timestamp()')" >/dev/null
q "SELECT ehrledger.protect('obs_load')" >/dev/null
insert_script "$W/insert_load.sql" obs_load

log "(a) pgbench $CLIENTS clients for ${DURATION}s, sealer every ${SEAL_INTERVAL}ms"
q 'CHECKPOINT' >/dev/null
out=$(as_pg pgbench -h "$W" -p "$PORT" -U postgres -n -c "$CLIENTS" -j "$THREADS" \
    -M prepared -T "$DURATION" -f "$W/insert_load.sql" bench 2>&1) || { echo "$out" >&2; exit 1; }
TPS=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' <<<"$out")
SEALER_PID=$(q "SELECT pid FROM pg_stat_activity WHERE backend_type = 'ehrledger sealer'")
SEALER_HWM=$(awk '/^VmHWM/ { printf "%.1f", $2 / 1024 }' "/proc/$SEALER_PID/status" 2>/dev/null || echo '?')

log "(a) waiting until every row is sealed"
WAITED=0
while :; do
    pending=$(q "SELECT count(*) FROM obs_load
                  WHERE ledger_seq > (SELECT coalesce(max(last_seq), 0) FROM ehrledger.blocks)")
    [ "$pending" = 0 ] && break
    [ "$WAITED" -ge 300 ] && { echo "rows still unsealed after 300s: $pending" >&2; exit 1; }
    sleep 1
    WAITED=$((WAITED + 1))
done

IFS='|' read -r A_ROWS A_BLOCKS A_MAX A_P99 A_P50 A_MIN A_PERBLOCK <<<"$(q "
    WITH d AS (
        SELECT b.height, extract(epoch FROM b.sealed_at - o.created_at) AS s
          FROM obs_load o
          JOIN ehrledger.blocks b ON o.ledger_seq BETWEEN b.first_seq AND b.last_seq)
    SELECT count(*), count(DISTINCT height),
           round(max(s)::numeric, 3),
           round(percentile_cont(0.99) WITHIN GROUP (ORDER BY s)::numeric, 3),
           round(percentile_cont(0.50) WITHIN GROUP (ORDER BY s)::numeric, 3),
           round(min(s)::numeric, 3),
           round(count(*)::numeric / greatest(count(DISTINCT height), 1))
      FROM d")"
A_TOTAL=$(q "SELECT count(*) FROM obs_load")

# ---- (b) one seal() over ROWS pending rows -----------------------------------
log "(b) seal_interval = 0, loading $ROWS rows into protected table obs_seal"
q "ALTER SYSTEM SET ehrledger.seal_interval = 0" >/dev/null
q "SELECT pg_reload_conf()" >/dev/null
sleep 2
q "$(obs_table_sql obs_seal)" >/dev/null
q "SELECT ehrledger.protect('obs_seal')" >/dev/null
LOAD_S=$(elapsed "$(bulk_insert_sql obs_seal "$ROWS")")
q 'CHECKPOINT' >/dev/null
sleep 2
PENDING=$(q "SELECT count(*) FROM obs_seal
              WHERE ledger_seq > (SELECT coalesce(max(last_seq), 0) FROM ehrledger.blocks)")
if [ "$PENDING" != "$ROWS" ]; then
    echo "expected $ROWS pending rows, found $PENDING (did the background sealer run?)" >&2
    exit 1
fi

MEM="grep -E '^(VmHWM|VmRSS|RssAnon|RssFile|RssShmem):'"
as_pg rm -f "$W/mem0" "$W/mem1" "$W/mem2"
log "(b) sealing $ROWS rows in one session"
seal_out=$(qs <<SQL
SELECT pg_backend_pid() AS pid \gset
\setenv BPID :pid
\! $MEM /proc/\$BPID/status > $W/mem0
$(if [ "$PRETOUCH" = 1 ]; then echo "
SET max_parallel_workers_per_gather = 0;
SET enable_seqscan = off;
SET enable_bitmapscan = off;
SELECT count(ledger_hash) AS touched FROM obs_seal WHERE ledger_seq > 0 \\gset
RESET max_parallel_workers_per_gather;
RESET enable_seqscan;
RESET enable_bitmapscan;"; fi)
\! $MEM /proc/\$BPID/status > $W/mem1
SELECT extract(epoch FROM clock_timestamp()) AS t0 \gset
SELECT ehrledger.seal() AS height \gset
SELECT round((extract(epoch FROM clock_timestamp()) - :t0)::numeric, 3) AS seal_s \gset
\! $MEM /proc/\$BPID/status > $W/mem2
\echo :seal_s :height :pid
SQL
)
read -r SEAL_S HEIGHT BPID <<<"$seal_out"
# mem FILE FIELD: a /proc status field in MB.
mem() { awk -v f="$2:" '$1 == f { printf "%.1f", $2 / 1024 }' "$W/$1"; }
HWM0=$(mem mem0 VmHWM)
HWM1=$(mem mem1 VmHWM)
HWM2=$(mem mem2 VmHWM)
HWM_DELTA=$(calc "$HWM2 - $HWM1" 1)
PRIVATE=$(calc "$HWM2 - $(mem mem2 RssShmem) - $(mem mem2 RssFile)" 1)
SEALED=$(q "SELECT row_count FROM ehrledger.blocks ORDER BY height DESC LIMIT 1")
B_VERIFY=$(q "SELECT ok FROM ehrledger.verify('obs_seal')")

{
    results_header
    echo "(a) insert-to-sealed delay: pgbench -n -c $CLIENTS -j $THREADS -M prepared -T $DURATION," \
         "synchronous_commit=on, seal_interval=${SEAL_INTERVAL}ms"
    echo "    $A_TOTAL rows at $(printf '%.0f' "$TPS") tps; $A_BLOCKS blocks (~$A_PERBLOCK rows each);" \
         "all sealed ${WAITED}s after pgbench ended; sealer worker VmHWM ${SEALER_HWM} MB"
    echo
    printf '    %-10s %10s\n' delay seconds
    printf '    %-10s %10s\n' max "$A_MAX" p99 "$A_P99" p50 "$A_P50" min "$A_MIN"
    [ "$A_ROWS" = "$A_TOTAL" ] || echo "    WARNING: only $A_ROWS of $A_TOTAL rows fall in a block's range"
    echo
    echo "(b) one seal() of $ROWS pending rows (backend pid $BPID, pretouch=$PRETOUCH," \
         "loaded in ${LOAD_S}s; block height $HEIGHT holds $SEALED rows; verify ok: $B_VERIFY)"
    echo
    printf '    %-40s %10s\n' figure value
    printf '    %-40s %10s\n' "seal() seconds" "$SEAL_S"
    printf '    %-40s %10s\n' "peak RSS (VmHWM after seal, MB)" "$HWM2"
    printf '    %-40s %10s\n' "VmHWM before seal (MB)" "$HWM1"
    printf '    %-40s %10s\n' "VmHWM delta over the seal (MB)" "$HWM_DELTA"
    printf '    %-40s %10s\n' "private peak estimate (MB, see header)" "$PRIVATE"
    printf '    %-40s %10s\n' "VmHWM at session start (MB)" "$HWM0"
    printf '    %-40s %10s\n' "RssShmem before / after seal (MB)" "$(mem mem1 RssShmem) / $(mem mem2 RssShmem)"
    printf '    %-40s %10s\n' "RssAnon before / after seal (MB)" "$(mem mem1 RssAnon) / $(mem mem2 RssAnon)"
    summary "seal: max insert-to-sealed delay s (${SEAL_INTERVAL}ms)" "$A_MAX"
    summary "seal: p99 insert-to-sealed delay s" "$A_P99"
    summary "seal: p50 insert-to-sealed delay s" "$A_P50"
    summary "seal: seal() of $ROWS rows s" "$SEAL_S"
    summary "seal: seal() peak RSS MB (VmHWM)" "$HWM2"
    summary "seal: seal() VmHWM delta MB" "$HWM_DELTA"
    summary "seal: seal() private peak estimate MB" "$PRIVATE"
} | report
