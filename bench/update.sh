#!/usr/bin/env bash
# Update throughput of a versioned table against a plain one.
#
# Two tables of the same shape and contents in database "bench", ROWS rows
# each:
#   obs_plain      no protection
#   obs_versioned  ehrledger.protect('obs_versioned', mode => 'versioned'):
#                  every UPDATE moves the earlier version, with its sealed
#                  end event, to the history table; background sealer at
#                  ehrledger.seal_interval = 1000 (the default)
# pgbench updates one row per transaction, chosen at random by primary key,
# 8 clients, prepared statements, synchronous_commit = on.  The runs
# alternate (plain, versioned) ROUNDS times to spread drift; the ratio is
# the mean of the per-round ratios.
#
# Knobs: DURATION (s per run, 30), ROUNDS (2), ROWS (100000), CLIENTS (8),
#        THREADS (2), PORT (54345), SEAL_INTERVAL (1000).
NAME=update
. "$(dirname "$0")/common.sh"

DURATION=${DURATION:-30}
ROUNDS=${ROUNDS:-2}
ROWS=${ROWS:-100000}
CLIENTS=${CLIENTS:-8}
THREADS=${THREADS:-2}
SEAL_INTERVAL=${SEAL_INTERVAL:-1000}

log "starting cluster on port ${PORT:-54345}"
bench_start "${PORT:-54345}" "ehrledger.seal_interval = $SEAL_INTERVAL"

log "loading $ROWS rows into each table"
for t in obs_plain obs_versioned; do
    qs >/dev/null <<SQL
CREATE TABLE $t (id bigint PRIMARY KEY, patient_id text NOT NULL,
                 resource jsonb NOT NULL, updated_at timestamptz NOT NULL DEFAULT now());
INSERT INTO $t (id, patient_id, resource)
SELECT g, 'patient-' || (g % 100000)::text,
       $(resource_expr 0 g '(g % 100000)' '(60 + g % 60)')
  FROM generate_series(1, $ROWS) g;
SQL
done
# protect() numbers and hashes the rows already there; seal them now so that
# the runs start with an empty backlog.
qs >/dev/null <<SQL
SELECT ehrledger.protect('obs_versioned', mode => 'versioned');
SELECT ehrledger.seal();
VACUUM ANALYZE obs_plain;
VACUUM ANALYZE obs_versioned;
SQL
HIST=$(q "SELECT history FROM ehrledger.protected_tables WHERE tbl = 'obs_versioned'::regclass")

# One pgbench script per table: one single-row UPDATE per transaction.
for t in plain versioned; do
    as_pg tee "$W/update_$t.sql" >/dev/null <<SQL
\set id random(1, $ROWS)
UPDATE obs_$t SET resource = jsonb_set(resource, '{valueQuantity,value}', to_jsonb(:id % 200)),
                  updated_at = now()
 WHERE id = :id;
SQL
done

declare -A TPS LAT
for r in $(seq 1 "$ROUNDS"); do
    for t in plain versioned; do
        log "round $r/$ROUNDS: $t (${DURATION}s)"
        res=$(pgbench_run "$W/update_$t.sql")
        read -r "TPS[$t,$r]" "LAT[$t,$r]" <<<"$res"
        log "  tps ${TPS[$t,$r]}"
    done
done

# Sanity: every version and end event gets sealed, and the table verifies.
log "waiting for the sealer, then verifying obs_versioned"
pending=unknown
for _ in $(seq 1 180); do
    pending=$(q "SELECT (SELECT count(*) FROM obs_versioned WHERE ledger_seq > top)
                      + (SELECT count(*) FROM $HIST WHERE ledger_seq > top OR ledger_ended_seq > top)
                   FROM (SELECT coalesce(max(last_seq), 0) AS top FROM ehrledger.blocks) b")
    [ "$pending" = 0 ] && break
    sleep 1
done
verify=$(q "SELECT ok || ' (' || rows_checked || ' rows, ' || blocks_checked || ' blocks)'
              FROM ehrledger.verify('obs_versioned')")
hist_rows=$(q "SELECT count(*) FROM $HIST")
hist_ops=$(q "SELECT string_agg(ledger_op || ' ' || n, ', ') FROM
                (SELECT ledger_op, count(*) n FROM $HIST GROUP BY 1 ORDER BY 1) s")
leaves_ok=$(q "SELECT sum(row_count) = (SELECT count(*) FROM obs_versioned) + 2 * (SELECT count(*) FROM $HIST)
                 FROM ehrledger.blocks")
sizes=$(q "SELECT pg_size_pretty(pg_total_relation_size('obs_plain')) || ' / ' ||
                  pg_size_pretty(pg_total_relation_size('obs_versioned')) || ' + history ' ||
                  pg_size_pretty(pg_total_relation_size('$HIST'))")
avg_size=$(q "SELECT (SELECT round(avg(octet_length(resource::text))) FROM obs_plain) || '/' ||
                     (SELECT round(avg(octet_length(resource::text))) FROM obs_versioned)")

ratio_sum=0
{
    results_header
    echo "pgbench -n -c $CLIENTS -j $THREADS -M prepared -T $DURATION, one single-row UPDATE by" \
         "random primary key per transaction, $ROWS rows per table, synchronous_commit=on," \
         "seal_interval=${SEAL_INTERVAL}ms"
    echo "avg resource size (bytes, plain/versioned): $avg_size; total size plain / versioned: $sizes"
    echo "history rows ($HIST): $hist_rows ($hist_ops); pending after the wait: $pending"
    echo "verify(obs_versioned) after the runs: $verify; sum(row_count) = live + 2 x history: $leaves_ok"
    echo
    printf '%-6s %12s %14s %16s %12s %14s\n' round plain_tps versioned_tps versioned/plain plain_ms versioned_ms
    for r in $(seq 1 "$ROUNDS"); do
        vr=$(calc "${TPS[versioned,$r]} / ${TPS[plain,$r]}")
        ratio_sum=$(calc "$ratio_sum + $vr")
        printf '%-6s %12.1f %14.1f %16s %12s %14s\n' "$r" "${TPS[plain,$r]}" \
            "${TPS[versioned,$r]}" "$vr" "${LAT[plain,$r]}" "${LAT[versioned,$r]}"
    done
    RATIO=$(calc "$ratio_sum / $ROUNDS")
    printf '%-6s %12s %14s %16s\n' mean "" "" "$RATIO"
    echo "(latency: average per transaction, ms; target versioned/plain >= 0.7)"
    summary "update: versioned/plain tps ratio" "$RATIO"
} | report
