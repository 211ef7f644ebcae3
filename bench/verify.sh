#!/usr/bin/env bash
# Full verification of a sealed ledger table against the naive "hash every
# row" query, on one core.
#
# Table obs (same shape as insert.sh, ~280-byte Observations) is protected
# while empty, then loaded with one INSERT ... SELECT generate_series of ROWS
# rows (the insert trigger numbers and hashes each row), then sealed with
# ehrledger.seal() (seal_interval = 0: no background sealing).  With
# max_parallel_workers_per_gather = 0 and jit = off it times, in one
# session with clock_timestamp() deltas,
#   verify: SELECT ok, rows_checked FROM ehrledger.verify('obs')
#   naive:  SELECT count(sha256(t::text::bytea)) FROM obs t
# one warm-up each, then RUNS timed runs each (alternating); the best of
# each and the ratio naive/verify are reported.
#
# Bonus: a second table obs_populated gets ROWS rows first and is protected
# afterwards; the time of that protect() is reported, with the times of the
# protected and the plain bulk loads.
#
# Knobs: ROWS (1000000), RUNS (3), PORT (54341), NAIVE_JIT (off).
NAME=verify
. "$(dirname "$0")/common.sh"

ROWS=${ROWS:-1000000}
RUNS=${RUNS:-3}
NAIVE_JIT=${NAIVE_JIT:-off}

log "starting cluster on port ${PORT:-54341}"
bench_start "${PORT:-54341}" "ehrledger.seal_interval = 0"

log "loading $ROWS rows into protected table obs"
q "$(obs_table_sql obs)" >/dev/null
q "SELECT ehrledger.protect('obs')" >/dev/null
LOAD_S=$(elapsed "$(bulk_insert_sql obs "$ROWS")")
log "  ${LOAD_S}s; sealing"
SEAL_S=$(elapsed "SELECT ehrledger.seal();")
q 'VACUUM (ANALYZE) obs' >/dev/null
q 'CHECKPOINT' >/dev/null
info=$(q "SELECT count(*) || ' rows, avg resource ' || round(avg(octet_length(resource::text)))
              || ' bytes, table ' || pg_size_pretty(pg_table_size('obs'))
              || ', blocks ' || (SELECT count(*) FROM ehrledger.blocks) FROM obs")
log "  $info"

# Timed runs: the session function bench_time() returns seconds and the
# result, so a failing verify shows up in the table.
q "CREATE FUNCTION bench_time(query text, OUT seconds float8, OUT result text)
   LANGUAGE plpgsql AS \$\$
   DECLARE t0 timestamptz;
   BEGIN
       t0 := clock_timestamp();
       EXECUTE query INTO result;
       seconds := extract(epoch FROM clock_timestamp() - t0);
   END \$\$" >/dev/null

VERIFY_Q="SELECT ok || ' ' || rows_checked FROM ehrledger.verify('obs')"
NAIVE_Q="SELECT count(sha256(t::text::bytea))::text FROM obs t"

declare -a VT NT
VRES=""
NRES=""
runs_out=$(qs -F ' ' <<SQL
SET max_parallel_workers_per_gather = 0;
SET jit = $NAIVE_JIT;
SELECT 'warmup', 'verify', * FROM bench_time(\$q\$$VERIFY_Q\$q\$);
SELECT 'warmup', 'naive', * FROM bench_time(\$q\$$NAIVE_Q\$q\$);
$(for i in $(seq 1 "$RUNS"); do
    echo "SELECT 'run$i', 'verify', * FROM bench_time(\$q\$$VERIFY_Q\$q\$);"
    echo "SELECT 'run$i', 'naive', * FROM bench_time(\$q\$$NAIVE_Q\$q\$);"
done)
SQL
)
while read -r run kind secs res; do
    [ "$run" = warmup ] && continue
    if [ "$kind" = verify ]; then VT+=("$secs"); VRES=$res; else NT+=("$secs"); NRES=$res; fi
done <<<"$runs_out"

best() { printf '%s\n' "$@" | sort -g | head -1; }
VBEST=$(printf "%.3f" "$(best "${VT[@]}")")
NBEST=$(printf "%.3f" "$(best "${NT[@]}")")
SPEEDUP=$(calc "$NBEST / $VBEST")

log "bonus: protect() of a populated table"
q "$(obs_table_sql obs_populated)" >/dev/null
PLAIN_LOAD_S=$(elapsed "$(bulk_insert_sql obs_populated "$ROWS")")
q 'VACUUM (ANALYZE) obs_populated' >/dev/null
q 'CHECKPOINT' >/dev/null
SIZE_BEFORE=$(q "SELECT pg_size_pretty(pg_table_size('obs_populated'))")
# protect() in one session, with that backend's peak private memory read
# from /proc (VmHWM minus shared and file pages, as in seal.sh).
qs >/dev/null <<SQL
SELECT pg_backend_pid() AS pid \gset
\setenv BPID :pid
SELECT extract(epoch FROM clock_timestamp()) AS t0 \gset
SELECT ehrledger.protect('obs_populated');
SELECT round((extract(epoch FROM clock_timestamp()) - :t0)::numeric, 3) AS s \gset
\setenv PROTECT_S :s
\! echo \$PROTECT_S > $W/protect_s
\! grep -E '^(VmHWM|RssShmem|RssFile):' /proc/\$BPID/status > $W/protect_mem
SQL
PROTECT_S=$(cat "$W/protect_s")
PROTECT_MB=$(awk '/^VmHWM/ {h=$2} /^RssShmem/ {s=$2} /^RssFile/ {f=$2} END { printf "%.1f", (h - s - f) / 1024 }' "$W/protect_mem")
SIZE_AFTER=$(q "SELECT pg_size_pretty(pg_table_size('obs_populated'))")

{
    results_header
    echo "table obs: $info"
    echo "obs was protected while empty, then loaded with one INSERT ... SELECT generate_series" \
         "(${LOAD_S}s), then sealed with ehrledger.seal() (${SEAL_S}s)"
    echo "max_parallel_workers_per_gather = 0, jit = $NAIVE_JIT; one warm-up, then $RUNS runs each"
    echo "verify result (ok rows_checked): $VRES; naive result (count): $NRES"
    echo
    printf '%-8s %12s %12s\n' run verify_s naive_s
    for i in $(seq 0 $((RUNS - 1))); do
        printf '%-8s %12.3f %12.3f\n' "$((i + 1))" "${VT[$i]}" "${NT[$i]}"
    done
    printf '%-8s %12.3f %12.3f\n' best "$VBEST" "$NBEST"
    echo "speedup naive/verify: $SPEEDUP"
    echo
    printf '%-50s %10s\n' "figure ($ROWS rows)" seconds
    printf '%-50s %10s\n' "load into protected table (INSERT ... SELECT)" "$LOAD_S"
    printf '%-50s %10s\n' "same load into a plain table (for comparison)" "$PLAIN_LOAD_S"
    printf '%-50s %10s\n' "seal() of all loaded rows" "$SEAL_S"
    printf '%-50s %10s\n' "protect() of a populated table" "$PROTECT_S"
    printf '%-50s %10s\n' "protect() peak private memory (MB, estimate)" "$PROTECT_MB"
    echo "(obs_populated: $SIZE_BEFORE before protect(), $SIZE_AFTER after, before any vacuum)"
    summary "verify: best verify() s ($ROWS rows)" "$VBEST"
    summary "verify: best naive sha256 s ($ROWS rows)" "$NBEST"
    summary "verify: speedup naive/verify" "$SPEEDUP"
    summary "verify: protect() of populated table s" "$PROTECT_S"
    summary "verify: protect() peak private memory MB" "$PROTECT_MB"
} | report
