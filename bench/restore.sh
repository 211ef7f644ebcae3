#!/usr/bin/env bash
# A hospital restored from a backup rejoins the network (issue 17): how long
# from the restored server's start until it has learned its chain from its
# peers (its row in ehrledger.rejoin), and until its first new block is
# final at a quorum; how many blocks and rows it took back from its peers.
#
# Four hospitals on this machine (bench/net.sh) on ports PORT .. PORT+3
# (55621-55624).  st-mary writes into the protected table obs:
#   1. pgbench -c CLIENTS for LOAD_S (10) s;
#   2. a pg_basebackup of st-mary (-X stream, fast checkpoint);
#   3. pgbench for MORE_S (10) s more, until every block of st-mary is final
#      at all four: the blocks sealed after the backup are final;
#   4. st-mary is lost (stopped with -m immediate, its data directory moved
#      aside) and its backup started in its place (the node key file made
#      private again, as the README says);
#   5. a session waits (polling every 20 ms) for st-mary's rejoin row of
#      this start, then inserts one row: the first new block.
# Measured from pg_postmaster_start_time() of the restored server (one
# clock: all run here): learned_at of its rejoin row, and final_at of the
# block holding the new row at st-mary (final there = acknowledged by a
# quorum) and at all four; what ehrledger.rejoin says it took back; and
# checks: no evidence at any hospital, the peers hold st-mary's chain as it
# is now, and verify() at st-mary names only missing rows, as many as it
# took back.
#
# Knobs: LOAD_S (10), MORE_S (10), CLIENTS (2), PORT (55621, the first of
#        four), KEEP_WORKDIR.
NAME=restore
. "$(dirname "$0")/common.sh"

LOAD_S=${LOAD_S:-10}
MORE_S=${MORE_S:-10}
CLIENTS=${CLIENTS:-2}
BASE_PORT=${PORT:-55621}
# shellcheck source=net.sh
. "$(dirname "$0")/net.sh"
R=st-mary                         # the hospital restored
T_START=$SECONDS

net_start
hq "$R" >/dev/null <<SQL
$(obs_table_sql obs)
SELECT ehrledger.protect('obs');
-- 5. Waits for this start's rejoin row (at most 300 s), then writes one row.
CREATE PROCEDURE first_new_row() LANGUAGE plpgsql AS \$\$
BEGIN
    FOR i IN 1 .. 15000 LOOP
        EXIT WHEN EXISTS (SELECT 1 FROM ehrledger.rejoin WHERE started_at = pg_postmaster_start_time());
        PERFORM pg_sleep(0.02);
    END LOOP;
    INSERT INTO obs (id, patient_id, resource) VALUES (0, 'patient-0', '{"after": "the restore"}');
END
\$\$;
SQL
insert_script "$NET/insert.sql" obs

# pgbench_at SECONDS: pgbench at the hospital restored; prints its tps.
pgbench_at() {
    as_pg pgbench -h "$NET/$R" -p "${HPORT[$R]}" -U postgres -n -c "$CLIENTS" -j 1 -M prepared \
        -T "$1" -f "$NET/insert.sql" "$DB" 2>&1 | sed -n 's/^tps = \([0-9.]*\) .*/\1/p'
}

log "1. pgbench -c $CLIENTS for ${LOAD_S}s at $R"
TPS1=$(pgbench_at "$LOAD_S")
H1=$(all_final "$R" obs)
log "2. pg_basebackup of $R (its chain at height $H1)"
t=$(date +%s.%N)
as_pg pg_basebackup -h "$NET/$R" -p "${HPORT[$R]}" -U postgres -D "$NET/$R/backup" -X stream -c fast
BACKUP_S=$(calc "$(date +%s.%N) - $t" 2)
H_BACKUP_END=$(hv "$R" "SELECT max(height) FROM ehrledger.block WHERE origin = '$R'")
log "3. pgbench for ${MORE_S}s more"
TPS2=$(pgbench_at "$MORE_S")
H2=$(all_final "$R" obs)
CHAIN_BEFORE=$(hv "$R" "SELECT string_agg(height || ':' || encode(block_hash, 'hex'), ',' ORDER BY height)
                          FROM ehrledger.block WHERE origin = '$R'")
log "   its chain reached height $H2, final at all four; 4. $R is lost and restored from the backup"
as_pg pg_ctl -D "$NET/$R/data" -m immediate -w stop >/dev/null
as_pg mv "$NET/$R/data" "$NET/$R/data.lost"
as_pg mv "$NET/$R/backup" "$NET/$R/data"
as_pg chmod 600 "$NET/$R/data/ehrledger_node.key"
t=$(date +%s.%N)
start_cluster "$NET/$R" "${HPORT[$R]}" || { tail -n 20 "$NET/$R/server.log" >&2; exit 1; }
PGCTL_S=$(calc "$(date +%s.%N) - $t" 2)
H_RESTORED=$(hv "$R" "SELECT max(height) FROM ehrledger.block WHERE origin = '$R'")
log "   started in ${PGCTL_S}s; 5. waiting for its rejoin row, then one new row"
hq "$R" -c 'CALL first_new_row()'
NEW_BLOCK="FROM ehrledger.block WHERE origin = '$R' AND (SELECT ledger_seq FROM obs WHERE id = 0) BETWEEN first_seq AND last_seq"
wait_true "the new row sealed" 60 "$R" "SELECT EXISTS (SELECT 1 $NEW_BLOCK)"
B_NEW=$(hv "$R" "SELECT height $NEW_BLOCK")
for h in "${HOSPITALS[@]}"; do
    wait_true "its first new block $B_NEW final" 120 "$h" \
        "SELECT EXISTS (SELECT 1 FROM ehrledger.final_block WHERE origin = '$R' AND height = $B_NEW)"
done

# ---- figures ---------------------------------------------------------------------
START=$(hv "$R" "SELECT pg_postmaster_start_time()")
IFS='|' read -r LEARNED_S PEERS TAKEN TAKEN_ROWS ACKS FETCHED SWITCHES SLOTS <<<"$(hv "$R" "
    SELECT round(extract(epoch FROM learned_at - started_at)::numeric, 2), peers_reached, blocks_taken_back,
           rows_taken_back, acks_taken_back, peer_blocks_fetched, wal_switches, slots_made
      FROM ehrledger.rejoin WHERE started_at = pg_postmaster_start_time()")"
WRITTEN_S=$(hv "$R" "SELECT round(extract(epoch FROM pg_xact_commit_timestamp(xmin) - pg_postmaster_start_time())::numeric, 2)
                        FROM obs WHERE id = 0")
QUORUM_S=$(hv "$R" "SELECT round(extract(epoch FROM final_at - pg_postmaster_start_time())::numeric, 2)
                      FROM ehrledger.final_block WHERE origin = '$R' AND height = $B_NEW")
ALL_S=$(for h in "${HOSPITALS[@]}"; do
    hv "$h" "SELECT extract(epoch FROM final_at - '$START'::timestamptz) FROM ehrledger.final_block
              WHERE origin = '$R' AND height = $B_NEW"
done | sort -n | tail -1)
# what the peers hold of the blocks the backup lacked
LOST_ROWS=$(hv "${HOSPITALS[1]}" "SELECT sum(row_count) FROM ehrledger.block WHERE origin = '$R' AND height > $H_RESTORED AND height <= $H2")
EVIDENCE=$(for h in "${HOSPITALS[@]}"; do hv "$h" "SELECT (SELECT count(*) FROM ehrledger.evidence) + (SELECT count(*) FROM ehrledger.rejected_block)"; done | paste -sd/)
CHAIN_NOW=$(hv "$R" "SELECT string_agg(height || ':' || encode(block_hash, 'hex'), ',' ORDER BY height)
                       FROM ehrledger.block WHERE origin = '$R' AND height <= $H2")
SAME=yes
for h in "${HOSPITALS[@]}"; do
    [ "$(hv "$h" "SELECT string_agg(height || ':' || encode(block_hash, 'hex'), ',' ORDER BY height)
                   FROM ehrledger.block WHERE origin = '$R' AND height <= $B_NEW")" = \
      "$(hv "$R" "SELECT string_agg(height || ':' || encode(block_hash, 'hex'), ',' ORDER BY height)
                   FROM ehrledger.block WHERE origin = '$R' AND height <= $B_NEW")" ] || SAME="no ($h differs)"
done
VERIFY=$(hv "$R" "SELECT ok || ': ' || coalesce((SELECT string_agg(n || ' ' || k, ', ') FROM (
                      SELECT p ->> 'kind' AS k, count(*) AS n FROM jsonb_array_elements(problems) p GROUP BY 1) x), 'no problems')
                    FROM ehrledger.verify()")
RUNTIME=$((SECONDS - T_START))

{
    results_header
    echo "four hospitals on one machine (one clock), quorum $QUORUM of ${#HOSPITALS[@]}, seal_interval=${SEAL_INTERVAL}ms;" \
         "$R restored from a pg_basebackup; network set up in ${SETUP_S}s, whole run ${RUNTIME}s"
    echo
    echo "before the backup: pgbench -c $CLIENTS -T $LOAD_S at $R, $(printf '%.0f' "$TPS1") tps; its chain at height $H1" \
         "(final at all four); pg_basebackup took ${BACKUP_S}s (height $H_BACKUP_END when it ended)"
    echo "after the backup:  pgbench -T $MORE_S, $(printf '%.0f' "$TPS2") tps; its chain at height $H2, final at all four;" \
         "blocks $((H_RESTORED + 1))..$H2 (${LOST_ROWS} rows) sealed after the backup"
    echo "restored: the backup holds its chain up to height $H_RESTORED; pg_ctl start (recovery included) ${PGCTL_S}s"
    echo
    printf '    %-58s %8s\n' "from the restored server's start (pg_postmaster_start_time) to" seconds
    printf '    %-58s %8s\n' "its rejoin row (learned_at): it knows how far its chain reached" "$LEARNED_S"
    printf '    %-58s %8s\n' "the commit of its first new row (written once rejoined)" "$WRITTEN_S"
    printf '    %-58s %8s\n' "its first new block $B_NEW final at a quorum (final_at at $R)" "$QUORUM_S"
    printf '    %-58s %8.2f\n' "that block final at all four" "$ALL_S"
    echo
    echo "    ehrledger.rejoin: $PEERS peers reached; took back $TAKEN blocks ($((H_RESTORED + 1))..$((H_RESTORED + TAKEN)))" \
         "with $TAKEN_ROWS rows, $ACKS acknowledgments; fetched $FETCHED peer blocks; $SWITCHES WAL switches; $SLOTS slots made again"
    echo "    its chain up to height $H2 as before the loss: $([ "$CHAIN_NOW" = "$CHAIN_BEFORE" ] && echo yes || echo NO);" \
         "the four hold the same chain of $R up to $B_NEW: $SAME; evidence + rejected blocks per hospital: $EVIDENCE"
    echo "    verify() at $R: $VERIFY (rows sealed after the backup and lost with it: missing_row)"
    summary "restore: start to rejoin row, s" "$LEARNED_S"
    summary "restore: start to first new block final (quorum), s" "$QUORUM_S"
    summary "restore: blocks / rows taken back" "$TAKEN / $TAKEN_ROWS"
} | report
