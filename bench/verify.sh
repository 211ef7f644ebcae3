#!/usr/bin/env bash
# Full verification of a sealed ledger table against the naive "hash every
# row" query, at the same number of cores.
#
# Table obs (same shape as insert.sh, ~280-byte Observations) is protected
# while empty, then loaded with one INSERT ... SELECT generate_series of ROWS
# rows (the insert trigger numbers and hashes each row), then sealed with
# ehrledger.seal() (seal_interval = 0: no background sealing).  With jit =
# off it times, in one session with clock_timestamp() deltas,
#   verify: SELECT ok, rows_checked FROM ehrledger.verify('obs')
#   naive:  SELECT count(sha256(t::text::bytea)) FROM obs t
# at each max_parallel_workers_per_gather of WORKERS (0 1 2), with
# parallel_setup_cost = parallel_tuple_cost = 0 and
# min_parallel_table_scan_size = 0 so that both really use that many
# workers (naive gets its parallel plan; verify its parallel row pass).
# Per setting: one warm-up each, then RUNS timed runs each (alternating);
# the best of each, the ratio naive/verify, and each one's scaling (its
# best time at 0 workers over its best time at this setting).
#
# Bonus: a second table obs_populated gets ROWS rows first and is protected
# afterwards; the time of that protect() is reported, with the times of the
# protected and the plain bulk loads.
#
# Knobs: ROWS (1000000), RUNS (3), WORKERS ("0 1 2"), PORT (54341),
# NAIVE_JIT (off).
NAME=verify
. "$(dirname "$0")/common.sh"

ROWS=${ROWS:-1000000}
RUNS=${RUNS:-3}
NAIVE_JIT=${NAIVE_JIT:-off}
WORKERS=${WORKERS:-0 1 2}

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

declare -A VT NT VBEST NBEST
VRES=""
NRES=""
runs_out=$(qs -F ' ' <<SQL
SET jit = $NAIVE_JIT;
SET parallel_setup_cost = 0;
SET parallel_tuple_cost = 0;
SET min_parallel_table_scan_size = 0;
$(for w in $WORKERS; do
    echo "SET max_parallel_workers_per_gather = $w;"
    echo "SELECT $w, 'warmup', 'verify', * FROM bench_time(\$q\$$VERIFY_Q\$q\$);"
    echo "SELECT $w, 'warmup', 'naive', * FROM bench_time(\$q\$$NAIVE_Q\$q\$);"
    for i in $(seq 1 "$RUNS"); do
        echo "SELECT $w, 'run$i', 'verify', * FROM bench_time(\$q\$$VERIFY_Q\$q\$);"
        echo "SELECT $w, 'run$i', 'naive', * FROM bench_time(\$q\$$NAIVE_Q\$q\$);"
    done
done)
SQL
)
while read -r w run kind secs res; do
    [ "$run" = warmup ] && continue
    if [ "$kind" = verify ]; then
        VT[$w]="${VT[$w]:-} $secs"; VRES=$res
    else
        NT[$w]="${NT[$w]:-} $secs"; NRES=$res
    fi
done <<<"$runs_out"

# The naive query's plan at each setting, to show its workers.
NAIVE_PLANS=$(for w in $WORKERS; do
    echo "max_parallel_workers_per_gather = $w:"
    qs <<SQL | grep -E 'Gather|Workers|Seq Scan' | sed 's/^/    /'
SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0; SET min_parallel_table_scan_size = 0;
SET max_parallel_workers_per_gather = $w;
EXPLAIN $NAIVE_Q;
SQL
done)

best() { printf '%s\n' "$@" | sort -g | head -1; }
FIRST=${WORKERS%% *}
for w in $WORKERS; do
    # shellcheck disable=SC2086
    VBEST[$w]=$(printf "%.3f" "$(best ${VT[$w]})")
    # shellcheck disable=SC2086
    NBEST[$w]=$(printf "%.3f" "$(best ${NT[$w]})")
done

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
    echo "jit = $NAIVE_JIT, parallel_setup_cost = parallel_tuple_cost = 0, min_parallel_table_scan_size = 0;" \
         "per max_parallel_workers_per_gather: one warm-up, then $RUNS runs each"
    echo "verify result (ok rows_checked): $VRES; naive result (count): $NRES"
    echo "naive plans:"
    echo "$NAIVE_PLANS"
    echo
    printf '%-8s %-30s %-30s\n' workers "verify_s (runs)" "naive_s (runs)"
    for w in $WORKERS; do
        printf '%-8s %-30s %-30s\n' "$w" "${VT[$w]# }" "${NT[$w]# }"
    done
    echo
    printf '%-8s %10s %10s %14s %16s %16s\n' workers verify_s naive_s naive/verify \
        "verify scaling" "naive scaling"
    for w in $WORKERS; do
        printf '%-8s %10s %10s %14s %16s %16s\n' "$w" "${VBEST[$w]}" "${NBEST[$w]}" \
            "$(calc "${NBEST[$w]} / ${VBEST[$w]}")" \
            "$(calc "${VBEST[$FIRST]} / ${VBEST[$w]}" 2)" "$(calc "${NBEST[$FIRST]} / ${NBEST[$w]}" 2)"
    done
    echo "(scaling: best time at $FIRST workers / best time at this setting)"
    echo
    printf '%-50s %10s\n' "figure ($ROWS rows)" seconds
    printf '%-50s %10s\n' "load into protected table (INSERT ... SELECT)" "$LOAD_S"
    printf '%-50s %10s\n' "same load into a plain table (for comparison)" "$PLAIN_LOAD_S"
    printf '%-50s %10s\n' "seal() of all loaded rows" "$SEAL_S"
    printf '%-50s %10s\n' "protect() of a populated table" "$PROTECT_S"
    printf '%-50s %10s\n' "protect() peak private memory (MB, estimate)" "$PROTECT_MB"
    echo "(obs_populated: $SIZE_BEFORE before protect(), $SIZE_AFTER after, before any vacuum)"
    for w in $WORKERS; do
        summary "verify: best verify() s, $w workers" "${VBEST[$w]}"
        summary "verify: best naive sha256 s, $w workers" "${NBEST[$w]}"
        summary "verify: speedup naive/verify, $w workers" "$(calc "${NBEST[$w]} / ${VBEST[$w]}")"
    done
    summary "verify: protect() of populated table s" "$PROTECT_S"
    summary "verify: protect() peak private memory MB" "$PROTECT_MB"
} | report
