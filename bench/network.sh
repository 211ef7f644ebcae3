#!/usr/bin/env bash
# The hospital network: (a) how long a committed row takes to become final
# (its block acknowledged by a quorum, 3 of 4), at the hospital that wrote it
# and at the others, and (b) the highest insert rate at one hospital at which
# finality keeps up.
#
# Four hospitals on this machine (bench/net.sh): st-mary, county-general,
# lakeside and riverside on ports PORT .. PORT+3 (55611-55614), each
# add_peer()s the three others.  Only st-mary writes, into the protected
# table obs (the shape of the other benchmarks, plus a phase column); all
# clusters run on this machine, so they share one clock.
#
# (a) pgbench -R RATE_A (200) -c 2 for DURATION_A (20) s.  Per row:
#     final_at of the block of st-mary covering its ledger_seq (first_seq <=
#     ledger_seq <= last_seq), in ehrledger.final_block at st-mary and at
#     each other hospital (copied to st-mary), minus the row's commit time.
#     p50, p99 and max; target p50 <= 0.5 s.
# (b) pgbench -c CLIENTS -j THREADS for DURATION (15) s at each rate of
#     RATES (1000 2000 4000 0; 0 = unthrottled).  During each run a
#     procedure at st-mary samples network_status every 0.5 s: blocks not
#     yet final, and the lag = now - commit time of the oldest row not in a
#     final block.  After each run: seconds until every row is in a final
#     block (catch-up).  A rate is sustained when the max sampled lag and the
#     catch-up both stay under MAX_LAG (2) s; the highest achieved rows/s of
#     a sustained run is reported (target >= 2000).  After the runs: the
#     commit-to-final delays per run (local and at a remote hospital), and
#     how long until every hospital holds every block of st-mary as final.
#
# Knobs: DURATION_A (20), RATE_A (200), DURATION (15), RATES
#        ("1000 2000 4000 0"), CLIENTS (8), THREADS (2), MAX_LAG (2),
#        PORT (55611, the first of four), KEEP_WORKDIR.
NAME=network
. "$(dirname "$0")/common.sh"

DURATION_A=${DURATION_A:-20}
RATE_A=${RATE_A:-200}
DURATION=${DURATION:-15}
RATES=${RATES:-1000 2000 4000 0}
CLIENTS=${CLIENTS:-8}
THREADS=${THREADS:-2}
MAX_LAG=${MAX_LAG:-2}
BASE_PORT=${PORT:-55611}
WRITER=st-mary
REMOTE=county-general            # the remote hospital of the headline figure
# shellcheck source=net.sh
. "$(dirname "$0")/net.sh"

T_START=$SECONDS

# ---- four hospitals ---------------------------------------------------------
net_start

# ---- the table, the pgbench script, the helpers (at the writer) ---------------
hq "$WRITER" >/dev/null <<SQL
$(obs_table_sql obs 'clock_timestamp()')
ALTER TABLE obs ADD COLUMN phase int NOT NULL DEFAULT 0;
SELECT ehrledger.protect('obs');

-- (b) one sample of the writer's own chain every 0.5 s for SECONDS s.
CREATE TABLE net_sample (phase int, at timestamptz, local_height bigint, final_height bigint,
                         pending bigint, lag_s float8);
CREATE PROCEDURE net_sampler(p int, seconds float8) LANGUAGE plpgsql AS \$\$
DECLARE
    me      text := ehrledger.node_name();
    stop    timestamptz := clock_timestamp() + seconds * interval '1 second';
    waiting bigint;     -- the lowest height of ours not final
    covered bigint;     -- every row up to this ledger_seq is in a final block
BEGIN
    WHILE clock_timestamp() < stop LOOP
        SELECT min(b.height) INTO waiting FROM ehrledger.block b
         WHERE b.origin = me
           AND NOT EXISTS (SELECT 1 FROM ehrledger.final_block f WHERE f.origin = b.origin AND f.height = b.height);
        SELECT coalesce(max(b.last_seq), 0) INTO covered FROM ehrledger.block b
         WHERE b.origin = me AND (waiting IS NULL OR b.height < waiting);
        INSERT INTO net_sample
        SELECT p, clock_timestamp(), s.local_height, s.final_height, s.pending,
               coalesce(extract(epoch FROM clock_timestamp() - (
                   SELECT pg_xact_commit_timestamp(o.xmin) FROM obs o
                    WHERE o.ledger_seq > covered ORDER BY o.ledger_seq LIMIT 1)), 0)
          FROM ehrledger.network_status s WHERE s.origin = me;
        COMMIT;
        PERFORM pg_sleep(0.5);
    END LOOP;
END
\$\$;

-- (b) seconds until every row committed so far is in a final block of this
-- node (every block up to the one holding the newest row final), NULL after
-- TIMEOUT s.
CREATE FUNCTION net_catch_up(timeout float8) RETURNS float8 LANGUAGE plpgsql AS \$\$
DECLARE
    t0   timestamptz := clock_timestamp();
    last bigint := (SELECT max(ledger_seq) FROM obs);
BEGIN
    LOOP
        IF EXISTS (SELECT 1 FROM ehrledger.block b WHERE b.origin = ehrledger.node_name() AND b.last_seq >= last)
           AND NOT EXISTS (SELECT 1 FROM ehrledger.block b
                            WHERE b.origin = ehrledger.node_name() AND b.first_seq <= last
                              AND NOT EXISTS (SELECT 1 FROM ehrledger.final_block f
                                               WHERE f.origin = b.origin AND f.height = b.height)) THEN
            RETURN extract(epoch FROM clock_timestamp() - t0);
        END IF;
        IF clock_timestamp() > t0 + timeout * interval '1 second' THEN
            RETURN NULL;
        END IF;
        PERFORM pg_sleep(0.05);
    END LOOP;
END
\$\$;
SQL
insert_script "$NET/insert.sql" obs phase :phase

# net_pgbench PHASE RATE CLIENTS THREADS SECONDS: CHECKPOINT at the writer,
# then pgbench (RATE 0: unthrottled); prints "tps latency_ms".
net_pgbench() {
    local phase=$1 rate=$2 out
    local throttle=()
    [ "$rate" -gt 0 ] && throttle=(-R "$rate")
    hv "$WRITER" 'CHECKPOINT' >/dev/null
    out=$(as_pg pgbench -h "$NET/$WRITER" -p "${HPORT[$WRITER]}" -U postgres -n -c "$3" -j "$4" \
        -M prepared -T "$5" "${throttle[@]}" -D phase="$phase" -f "$NET/insert.sql" "$DB" 2>&1) || {
        echo "$out" >&2
        return 1
    }
    echo "$out" | as_pg tee "$NET/pgbench.$phase.out" >/dev/null
    if grep -q 'number of failed transactions: [1-9]' <<<"$out"; then
        echo "$out" >&2
    fi
    echo "$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' <<<"$out") $(sed -n 's/^latency average = \([0-9.]*\) ms/\1/p' <<<"$out")"
}

# ---- (a) commit-to-final latency at a modest rate -------------------------------
log "(a) pgbench -R $RATE_A -c 2 for ${DURATION_A}s at $WRITER"
read -r A_TPS A_LAT <<<"$(net_pgbench 0 "$RATE_A" 2 2 "$DURATION_A")"
log "(a) $A_TPS tps; waiting until every row is final at all four"
A_HEIGHT=$(all_final "$WRITER" obs)

# ---- (b) increasing insert rates --------------------------------------------------
declare -A B_TPS B_LAT B_ROWS B_LAG B_PEND B_CATCH B_OK
phase=0
SUSTAINED=0
SUSTAINED_AT=none
for rate in $RATES; do
    phase=$((phase + 1))
    label=$([ "$rate" -gt 0 ] && echo "$rate" || echo unthrottled)
    log "(b) run $phase: pgbench -c $CLIENTS -j $THREADS, rate $label, ${DURATION}s"
    hq "$WRITER" -c "CALL net_sampler($phase, $DURATION)" &
    SAMPLER=$!
    read -r "B_TPS[$phase]" "B_LAT[$phase]" <<<"$(net_pgbench "$phase" "$rate" "$CLIENTS" "$THREADS" "$DURATION")"
    B_CATCH[$phase]=$(hv "$WRITER" "SELECT coalesce(round(net_catch_up(30)::numeric, 2)::text, 'none')")
    wait "$SAMPLER"
    SAMPLER=""
    IFS='|' read -r "B_ROWS[$phase]" "B_LAG[$phase]" "B_PEND[$phase]" <<<"$(hv "$WRITER" "
        SELECT (SELECT count(*) FROM obs WHERE phase = $phase),
               round(max(lag_s)::numeric, 2), max(pending) FROM net_sample WHERE phase = $phase")"
    if [ "${B_CATCH[$phase]}" != none ] && [ "$(calc "(${B_LAG[$phase]} < $MAX_LAG && ${B_CATCH[$phase]} < $MAX_LAG)" 0)" = 1 ]; then
        B_OK[$phase]=yes
        if [ "$(calc "(${B_TPS[$phase]} > $SUSTAINED)" 0)" = 1 ]; then
            SUSTAINED=${B_TPS[$phase]}
            SUSTAINED_AT=$label
        fi
    else
        B_OK[$phase]=no
    fi
    log "  ${B_TPS[$phase]} rows/s, max lag ${B_LAG[$phase]}s, caught up after ${B_CATCH[$phase]}s: ${B_OK[$phase]}"
    if [ "${B_CATCH[$phase]}" = none ]; then
        log "  finality did not catch up within 30s; no higher rates"
        break
    fi
done
PHASES=$phase

# Every hospital holds every block of the writer as final.
log "waiting until all four hold every block of $WRITER as final"
LAST_HEIGHT=$(hv "$WRITER" "SELECT max(height) FROM ehrledger.block WHERE origin = '$WRITER'")
t=$(date +%s.%N)
for h in "${HOSPITALS[@]}"; do
    wait_true "every block of $WRITER up to $LAST_HEIGHT final" 60 "$h" \
        "SELECT count(*) = $LAST_HEIGHT FROM ehrledger.final_block WHERE origin = '$WRITER'"
done
ALL_FINAL_S=$(calc "$(date +%s.%N) - $t" 2)

# ---- analysis at the writer: every hospital's final_at per block --------------------
hq "$WRITER" -c "CREATE TABLE net_final (node text, height bigint, final_at timestamptz)"
for h in "${HOSPITALS[@]}"; do
    hq "$h" -c "\\copy (SELECT '$h', height, final_at FROM ehrledger.final_block WHERE origin = '$WRITER') TO STDOUT" |
        hq "$WRITER" -c "\\copy net_final FROM STDIN"
done
hq "$WRITER" >/dev/null <<SQL
CREATE INDEX ON net_final (node, height);
ANALYZE net_final;
CREATE TABLE net_delay AS
SELECT o.phase, f.node, b.height,
       extract(epoch FROM f.final_at - pg_xact_commit_timestamp(o.xmin)) AS s,
       extract(epoch FROM f.final_at - o.created_at) AS s_created,
       extract(epoch FROM b.sealed_at - pg_xact_commit_timestamp(o.xmin)) AS s_sealed
  FROM ehrledger.block b
  JOIN obs o ON o.ledger_seq BETWEEN b.first_seq AND b.last_seq
  JOIN net_final f ON f.height = b.height
 WHERE b.origin = '$WRITER';
SQL
# delays PHASE NODE COLUMN: "rows|p50|p99|max" of the commit-to-final delays.
delays() {
    hv "$WRITER" "SELECT count(*), round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ${3:-s})::numeric, 3),
                         round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ${3:-s})::numeric, 3),
                         round(max(${3:-s})::numeric, 3)
                    FROM net_delay WHERE phase = $1 AND node = '$2'"
}
A_ROWS=$(hv "$WRITER" "SELECT count(*) FROM obs WHERE phase = 0")
A_BLOCKS=$(hv "$WRITER" "SELECT count(DISTINCT height) FROM net_delay WHERE phase = 0")
IFS='|' read -r _ A_P50_L A_P99_L _ <<<"$(delays 0 "$WRITER")"
IFS='|' read -r _ A_P50_R A_P99_R _ <<<"$(delays 0 "$REMOTE")"
MISSING=$(hv "$WRITER" "SELECT (SELECT count(*) FROM obs) * ${#HOSPITALS[@]} - (SELECT count(*) FROM net_delay)")
NULL_TS=$(hv "$WRITER" "SELECT count(*) FROM net_delay WHERE s IS NULL")
EVIDENCE=$(for h in "${HOSPITALS[@]}"; do hv "$h" "SELECT (SELECT count(*) FROM ehrledger.evidence) + (SELECT count(*) FROM ehrledger.rejected_block)"; done | paste -sd/)
VERIFY=$(hv "$WRITER" "SELECT ok || ' (' || rows_checked || ' rows, ' || blocks_checked || ' blocks)' FROM ehrledger.verify('obs')")
# quorum_ack HOSPITAL: "p50|p99" of final_at - acked_at of the acknowledgment
# that completed the quorum (acked_at is when its signer made it), over the
# blocks of (a), at HOSPITAL: how long the last needed ack took to count.
quorum_ack() {
    hv "$1" "WITH a AS (SELECT height, acked_at, row_number() OVER (PARTITION BY height ORDER BY acked_at) AS k
                          FROM ehrledger.ack WHERE origin = '$WRITER' AND height <= $A_HEIGHT)
             SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM f.final_at - a.acked_at))::numeric, 3)
                    || '|' || round(percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM f.final_at - a.acked_at))::numeric, 3)
               FROM ehrledger.final_block f JOIN a USING (height)
              WHERE f.origin = '$WRITER' AND a.k = $QUORUM"
}
IFS='|' read -r QA_P50_L QA_P99_L <<<"$(quorum_ack "$WRITER")"
IFS='|' read -r QA_P50_R QA_P99_R <<<"$(quorum_ack "$REMOTE")"
RUNTIME=$((SECONDS - T_START))

{
    results_header
    echo "four hospitals on one machine (one clock), quorum $QUORUM of ${#HOSPITALS[@]}, seal_interval=${SEAL_INTERVAL}ms," \
         "synchronous_commit=on; $WRITER writes one ~280-byte Observation per transaction into protected table obs"
    echo "delay = final_at of the block of $WRITER holding the row (ehrledger.final_block at each hospital)" \
         "- the row's commit time (pg_xact_commit_timestamp(xmin), track_commit_timestamp = on)"
    echo "network set up in ${SETUP_S}s; whole run ${RUNTIME}s; verify(obs): $VERIFY;" \
         "evidence + rejected blocks per hospital: $EVIDENCE"
    [ "$MISSING" = 0 ] || echo "WARNING: $MISSING (row, hospital) pairs have no final block"
    [ "$NULL_TS" = 0 ] || echo "WARNING: $NULL_TS rows without a commit timestamp"
    echo
    echo "(a) pgbench -R $RATE_A -c 2 -T $DURATION_A: $A_ROWS rows at $(printf '%.0f' "$A_TPS") tps" \
         "(latency ${A_LAT} ms) in $A_BLOCKS blocks; commit-to-final delay, seconds:"
    echo
    printf '    %-16s %-7s %8s %8s %8s %8s   %s\n' hospital "" rows p50 p99 max "(commit-to-sealed p50/p99; created_at-to-final p50)"
    for h in "${HOSPITALS[@]}"; do
        IFS='|' read -r n p50 p99 mx <<<"$(delays 0 "$h")"
        IFS='|' read -r _ s50 s99 _ <<<"$(delays 0 "$h" s_sealed)"
        IFS='|' read -r _ c50 _ _ <<<"$(delays 0 "$h" s_created)"
        printf '    %-16s %-7s %8s %8s %8s %8s   %s / %s; %s\n' "$h" "$([ "$h" = "$WRITER" ] && echo local || echo remote)" \
            "$n" "$p50" "$p99" "$mx" "$s50" "$s99" "$c50"
    done
    echo "    quorum-completing ack signed -> final: p50/p99 $QA_P50_L/$QA_P99_L s at $WRITER," \
         "$QA_P50_R/$QA_P99_R s at $REMOTE (the peers' apply workers commit with the subscription's" \
         "synchronous_commit, off by default: their acks leave after the next WAL flush)"
    echo "    p50 local $A_P50_L s, remote ($REMOTE) $A_P50_R s (target <= 0.5 s):" \
         "$([ "$(calc "($A_P50_L <= 0.5 && $A_P50_R <= 0.5)" 0)" = 1 ] && echo met || echo NOT met)"
    echo
    echo "(b) pgbench -c $CLIENTS -j $THREADS -T $DURATION at rising target rates; lag sampled every 0.5 s at $WRITER" \
         "(now - commit time of the oldest row not in a final block); catch-up = seconds after pgbench ended" \
         "until every row is in a final block; ok = max lag and catch-up < ${MAX_LAG} s"
    echo
    printf '    %-12s %9s %9s %8s %7s %8s %8s %8s %8s %8s %8s %4s\n' target rows/s lat_ms rows blocks \
        max_lag pend_blk catchup p50_loc p99_loc p99_rem ok
    phase=0
    for rate in $RATES; do
        phase=$((phase + 1))
        [ "$phase" -le "$PHASES" ] || break
        IFS='|' read -r _ p50 p99 _ <<<"$(delays "$phase" "$WRITER")"
        IFS='|' read -r _ _ r99 _ <<<"$(delays "$phase" "$REMOTE")"
        blocks=$(hv "$WRITER" "SELECT count(DISTINCT height) FROM net_delay WHERE phase = $phase AND node = '$WRITER'")
        printf '    %-12s %9.0f %9s %8s %7s %8s %8s %8s %8s %8s %8s %4s\n' \
            "$([ "$rate" -gt 0 ] && echo "-R $rate" || echo unthrottled)" "${B_TPS[$phase]}" "${B_LAT[$phase]}" \
            "${B_ROWS[$phase]}" "$blocks" "${B_LAG[$phase]}" "${B_PEND[$phase]}" "${B_CATCH[$phase]}" \
            "$p50" "$p99" "$r99" "${B_OK[$phase]}"
    done
    echo "    (p50_loc/p99_loc/p99_rem: commit-to-final delay of the run's rows at $WRITER / at $REMOTE, s)"
    echo "    max sustained rate: $(printf '%.0f' "$SUSTAINED") rows/s (run $SUSTAINED_AT; target >= 2000:" \
         "$([ "$(calc "($SUSTAINED >= 2000)" 0)" = 1 ] && echo met || echo NOT met));" \
         "every block final at all four ${ALL_FINAL_S}s after the last catch-up"
    echo "    ratios: sustained/target $(calc "$SUSTAINED / 2000" 2); (a) p50 local/target $(calc "$A_P50_L / 0.5" 2)," \
         "remote/target $(calc "$A_P50_R / 0.5" 2); remote/local p50 $(calc "$A_P50_R / $A_P50_L" 2)"
    summary "network: p50 commit-to-final s, local" "$A_P50_L"
    summary "network: p99 commit-to-final s, local" "$A_P99_L"
    summary "network: p50 commit-to-final s, remote" "$A_P50_R"
    summary "network: p99 commit-to-final s, remote" "$A_P99_R"
    summary "network: max sustained rows/s (lag < ${MAX_LAG}s)" "$(printf '%.0f' "$SUSTAINED")"
} | report
