#!/usr/bin/env bash
# protect() of a populated table: time, size before and after, and what is
# left for VACUUM (issue 16, part 4).
#
# Table obs (same shape as insert.sh, ~280-byte Observations) is loaded with
# ROWS rows by one INSERT ... SELECT, vacuumed and checkpointed; then
# ehrledger.protect('obs') is timed.  Reported: the seconds protect() took,
# pg_table_size() before and after and their ratio (target: at most 1.2),
# and the dead row versions left behind (n_dead_tup once the statistics
# are flushed; target 0), then verify('obs') after a seal.
#
# Knobs: ROWS (1000000), PORT (54353).
NAME=protect
. "$(dirname "$0")/common.sh"

ROWS=${ROWS:-1000000}

log "starting cluster on port ${PORT:-54353}"
bench_start "${PORT:-54353}" "ehrledger.seal_interval = 0
max_parallel_workers_per_gather = 0
jit = off"

log "loading $ROWS rows into plain table obs"
q "$(obs_table_sql obs)" >/dev/null
LOAD_S=$(elapsed "$(bulk_insert_sql obs "$ROWS")")
q 'VACUUM (ANALYZE) obs' >/dev/null
q 'CHECKPOINT' >/dev/null
BEFORE=$(q "SELECT pg_table_size('obs')")
log "  ${LOAD_S}s, $(q "SELECT pg_size_pretty($BEFORE::bigint)"); protect()"
PROTECT_S=$(elapsed "SELECT ehrledger.protect('obs');")
AFTER=$(q "SELECT pg_table_size('obs')")
DEAD=$(qs <<'SQL'
SELECT pg_stat_force_next_flush();
\c bench
SELECT pg_sleep(0.5);
SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'obs';
SQL
)
DEAD=$(echo "$DEAD" | tail -1)
log "sealing and verifying"
q "SELECT ehrledger.seal()" >/dev/null
VERIFY=$(q "SELECT ok || ' (' || rows_checked || ' rows)' FROM ehrledger.verify('obs')")

printf '\n%-40s %s\n' "rows" "$ROWS"
printf '%-40s %s s\n' "protect()" "$PROTECT_S"
printf '%-40s %s\n' "table size before" "$(q "SELECT pg_size_pretty($BEFORE::bigint)")"
printf '%-40s %s\n' "table size after" "$(q "SELECT pg_size_pretty($AFTER::bigint)")"
awk -v a="$AFTER" -v b="$BEFORE" 'BEGIN { printf "%-40s %.3f\n", "after / before", a / b }'
printf '%-40s %s\n' "dead row versions left for VACUUM" "$DEAD"
printf '%-40s %s\n' "verify('obs')" "$VERIFY"
summary "protect: seconds" "$PROTECT_S"
summary "protect: size after/before" "$(awk -v a="$AFTER" -v b="$BEFORE" 'BEGIN { printf "%.3f", a / b }')"
summary "protect: dead tuples" "$DEAD"
