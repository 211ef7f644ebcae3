#!/usr/bin/env bash
# Insert throughput of a protected table against a plain one, and against a
# hand-made PL/pgSQL hash chain.
#
# Three tables of the same shape in database "bench":
#   obs_plain   no protection
#   obs_ledger  ehrledger.protect('obs_ledger'); background sealer at
#               ehrledger.seal_interval = 1000 (the default)
#   obs_chain   a BEFORE INSERT trigger that serialises writers with
#               pg_advisory_xact_lock(42), reads the previous row's hash and
#               stores sha256(prev_hash || resource as UTF-8)
# pgbench inserts one ~280-byte Observation per transaction, 8 clients,
# prepared statements, synchronous_commit = on.  A warm-up run of each table
# (WARMUP seconds, not counted) first fills the caches and makes the WAL
# segments the timed runs reuse; the first run on a new cluster otherwise
# pays for creating them.  The timed runs then alternate ROUNDS times, in
# the order (plain, ledger, chain) in odd rounds and (chain, ledger, plain)
# in even ones, so that a drift of the machine's speed over the run falls
# on plain and chain alike; each ratio is the mean of the per-round ratios.
#
# Knobs: DURATION (s per run, 30), ROUNDS (4), WARMUP (10), CLIENTS (8),
#        THREADS (2), PORT (54340), SEAL_INTERVAL (1000).
NAME=insert
. "$(dirname "$0")/common.sh"

DURATION=${DURATION:-30}
ROUNDS=${ROUNDS:-4}
WARMUP=${WARMUP:-10}
CLIENTS=${CLIENTS:-8}
THREADS=${THREADS:-2}
SEAL_INTERVAL=${SEAL_INTERVAL:-1000}

log "starting cluster on port ${PORT:-54340}"
bench_start "${PORT:-54340}" "ehrledger.seal_interval = $SEAL_INTERVAL"

qs >/dev/null <<SQL
$(obs_table_sql obs_plain)
$(obs_table_sql obs_ledger)
SELECT ehrledger.protect('obs_ledger');

$(obs_table_sql obs_chain)
ALTER TABLE obs_chain ADD COLUMN hash bytea;
-- The hand-made chain: one writer at a time links its row to the previous
-- one.  The id is taken again under the lock so that id order is chain order.
CREATE FUNCTION obs_chain_link() RETURNS trigger LANGUAGE plpgsql AS \$\$
DECLARE
    prev bytea;
BEGIN
    PERFORM pg_advisory_xact_lock(42);
    NEW.id := nextval('obs_chain_id_seq');
    SELECT hash INTO prev FROM obs_chain ORDER BY id DESC LIMIT 1;
    NEW.hash := sha256(coalesce(prev, '\x'::bytea) || convert_to(NEW.resource::text, 'UTF8'));
    RETURN NEW;
END
\$\$;
CREATE TRIGGER obs_chain_link BEFORE INSERT ON obs_chain
    FOR EACH ROW EXECUTE FUNCTION obs_chain_link();
SQL

# One pgbench script per table: one INSERT per transaction, rows all differ.
for t in plain ledger chain; do
    insert_script "$W/insert_$t.sql" "obs_$t"
done

declare -A TPS LAT
if [ "$WARMUP" -gt 0 ]; then
    for t in plain ledger chain; do
        log "warm-up: $t (${WARMUP}s, not counted)"
        DURATION=$WARMUP pgbench_run "$W/insert_$t.sql" >/dev/null
    done
fi
for r in $(seq 1 "$ROUNDS"); do
    order="plain ledger chain"
    [ $((r % 2)) = 0 ] && order="chain ledger plain"
    for t in $order; do
        log "round $r/$ROUNDS: $t (${DURATION}s)"
        res=$(pgbench_run "$W/insert_$t.sql")
        read -r "TPS[$t,$r]" "LAT[$t,$r]" <<<"$res"
        log "  tps ${TPS[$t,$r]}"
    done
done

# Sanity: rows are ~280 bytes, and the ledger table verifies once sealed.
log "waiting for the sealer, then verifying obs_ledger"
for _ in $(seq 1 120); do
    pending=$(q "SELECT count(*) FROM obs_ledger
                  WHERE ledger_seq > (SELECT coalesce(max(last_seq), 0) FROM ehrledger.blocks)")
    [ "$pending" = 0 ] && break
    sleep 1
done
verify=$(q "SELECT ok || ' (' || rows_checked || ' rows, ' || blocks_checked || ' blocks)'
              FROM ehrledger.verify('obs_ledger')")
sizes=$(q "SELECT (SELECT round(avg(octet_length(resource::text))) FROM obs_plain) || '/' ||
                  (SELECT round(avg(octet_length(resource::text))) FROM obs_ledger) || '/' ||
                  (SELECT round(avg(octet_length(resource::text))) FROM obs_chain)")
rows=$(q "SELECT (SELECT count(*) FROM obs_plain) || '/' || (SELECT count(*) FROM obs_ledger)
                 || '/' || (SELECT count(*) FROM obs_chain)")
chain_ok=$(q "SELECT bool_and(hash = sha256(coalesce(prev, '\x'::bytea) || convert_to(resource::text, 'UTF8')))
                FROM (SELECT hash, resource, lag(hash) OVER (ORDER BY id) AS prev FROM obs_chain) s")

ledger_ratio_sum=0
chain_ratio_sum=0
{
    results_header
    echo "pgbench -n -c $CLIENTS -j $THREADS -M prepared -T $DURATION, one INSERT per transaction," \
         "synchronous_commit=on, seal_interval=${SEAL_INTERVAL}ms"
    echo "after a ${WARMUP}s warm-up of each table; rounds alternate (plain, ledger, chain) and (chain, ledger, plain)"
    echo "avg resource size (bytes, plain/ledger/chain): $sizes; rows: $rows"
    echo "verify(obs_ledger) after the runs: $verify; hand-made chain links valid: $chain_ok"
    echo
    printf '%-6s %12s %12s %12s %14s %14s\n' round plain_tps ledger_tps chain_tps ledger/plain chain/plain
    for r in $(seq 1 "$ROUNDS"); do
        lr=$(calc "${TPS[ledger,$r]} / ${TPS[plain,$r]}")
        cr=$(calc "${TPS[chain,$r]} / ${TPS[plain,$r]}")
        ledger_ratio_sum=$(calc "$ledger_ratio_sum + $lr")
        chain_ratio_sum=$(calc "$chain_ratio_sum + $cr")
        printf '%-6s %12.1f %12.1f %12.1f %14s %14s\n' "$r" "${TPS[plain,$r]}" \
            "${TPS[ledger,$r]}" "${TPS[chain,$r]}" "$lr" "$cr"
    done
    LEDGER_RATIO=$(calc "$ledger_ratio_sum / $ROUNDS")
    CHAIN_RATIO=$(calc "$chain_ratio_sum / $ROUNDS")
    printf '%-6s %12s %12s %12s %14s %14s\n' mean "" "" "" "$LEDGER_RATIO" "$CHAIN_RATIO"
    echo
    printf '%-6s %12s %12s %12s\n' round plain_ms ledger_ms chain_ms
    for r in $(seq 1 "$ROUNDS"); do
        printf '%-6s %12s %12s %12s\n' "$r" "${LAT[plain,$r]}" "${LAT[ledger,$r]}" "${LAT[chain,$r]}"
    done
    echo "(average latency per transaction)"
    summary "insert: ledger/plain tps ratio" "$LEDGER_RATIO"
    summary "insert: hand-made chain/plain tps ratio" "$CHAIN_RATIO"
} | report
