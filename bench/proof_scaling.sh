#!/usr/bin/env bash
# How proof() scales with the length of the chain (issue 16, part 3).
#
# Builds a chain of BLOCKS blocks of one row each (seal_interval = 0), keeps
# a digest at height SMALL and one at height BLOCKS, then times, in one
# session with clock_timestamp() deltas and alternating, PROOFS calls of
#   proof('obs', <row of block SMALL/2>, <digest at SMALL>)
#   proof('obs', <row of block SMALL/2>, <digest at BLOCKS>)
# and the same for consistency_proof(<digest at 1>, <digest at SMALL or
# BLOCKS>).  It reports the mean time of each and the ratios BLOCKS/SMALL
# (issue 16's target: at most 2).  A proof's history path reads O(log n)
# stored blocks (src/ledger/proofs.c, HistoryTree); before, it read every
# block hash of the chain.
#
# Knobs: BLOCKS (10000), SMALL (100), PROOFS (200), PORT (54348).
NAME=proof_scaling
. "$(dirname "$0")/common.sh"

BLOCKS=${BLOCKS:-10000}
SMALL=${SMALL:-100}
PROOFS=${PROOFS:-200}

log "starting cluster on port ${PORT:-54348}"
bench_start "${PORT:-54348}" "ehrledger.seal_interval = 0
max_parallel_workers_per_gather = 0
jit = off"

log "sealing $BLOCKS blocks of one row each"
qs >/dev/null <<SQL
$(obs_table_sql obs)
SELECT ehrledger.protect('obs');
CREATE TABLE kept (height bigint PRIMARY KEY, d jsonb);
CREATE PROCEDURE load_blocks(blocks int, small int) LANGUAGE plpgsql AS \$\$
BEGIN
    FOR b IN 1..blocks LOOP
        $(bulk_insert_sql obs 1)
        PERFORM ehrledger.seal();
        IF b IN (1, small, blocks) THEN
            INSERT INTO kept VALUES (b, ehrledger.digest());
        END IF;
        COMMIT;
    END LOOP;
END \$\$;
CALL load_blocks($BLOCKS, $SMALL);
SQL
log "  $(q "SELECT count(*) || ' blocks, ' || (SELECT count(*) FROM obs) || ' rows' FROM ehrledger.block")"

q "CREATE FUNCTION mean_ms(query text, n int) RETURNS float8 LANGUAGE plpgsql AS \$\$
   DECLARE t0 timestamptz; r jsonb;
   BEGIN
       EXECUTE query INTO r;                 -- warm-up
       t0 := clock_timestamp();
       FOR i IN 1..n LOOP EXECUTE query INTO r; END LOOP;
       RETURN extract(epoch FROM clock_timestamp() - t0) * 1000 / n;
   END \$\$" >/dev/null

ROW="(SELECT o.ledger_seq FROM obs o JOIN ehrledger.block b ON o.ledger_seq BETWEEN b.first_seq AND b.last_seq WHERE b.height = $((SMALL / 2)))"
P_SMALL="SELECT ehrledger.proof('obs', $ROW, (SELECT d FROM kept WHERE height = $SMALL))"
P_BIG="SELECT ehrledger.proof('obs', $ROW, (SELECT d FROM kept WHERE height = $BLOCKS))"
C_SMALL="SELECT ehrledger.consistency_proof((SELECT d FROM kept WHERE height = 1), (SELECT d FROM kept WHERE height = $SMALL))"
C_BIG="SELECT ehrledger.consistency_proof((SELECT d FROM kept WHERE height = 1), (SELECT d FROM kept WHERE height = $BLOCKS))"

res=$(q "SELECT mean_ms(\$q\$$P_SMALL\$q\$, $PROOFS), mean_ms(\$q\$$P_BIG\$q\$, $PROOFS),
                mean_ms(\$q\$$C_SMALL\$q\$, $PROOFS), mean_ms(\$q\$$C_BIG\$q\$, $PROOFS)")
IFS='|' read -r ps pb cs cb <<<"$res"
printf '\n%-34s %12s %12s %8s\n' "" "at $SMALL" "at $BLOCKS" "ratio"
awk -v s="$ps" -v b="$pb" -v t="proof() of a row of block $((SMALL / 2))" \
    'BEGIN { printf "%-34s %10.3f ms %10.3f ms %8.2f\n", t, s, b, b / s }'
awk -v s="$cs" -v b="$cb" -v t="consistency_proof() from height 1" \
    'BEGIN { printf "%-34s %10.3f ms %10.3f ms %8.2f\n", t, s, b, b / s }'
