#!/usr/bin/env bash
# The ehrledger hospital network demo: four throwaway clusters, one per
# hospital, that replicate each other's signed blocks over logical
# replication.  A block is final once a quorum (3 of the 4) has signed an
# acknowledgment of it.  The demo writes a record at one hospital and
# watches it become final everywhere, stops a hospital while the others keep
# finalizing, brings it back to catch up, and catches a hospital that signs
# two different blocks at one height.
#
#   scripts/demo-network.sh        (re)create the four clusters and walk
#                                  through it; they are left running for
#                                  you to explore
#   scripts/demo-network.sh stop   stop the four clusters and remove their
#                                  directory
#
# Runs as root (as CI does; clusters then run as the postgres user) or as
# the postgres user.  `make demo-network` and `make demo-network-stop` call
# it.
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

DIR=/tmp/ehrledger-net
DB=ehr
HOSPITALS=(st-mary county-general lakeside riverside)
declare -A PORT=([st-mary]=54421 [county-general]=54422 [lakeside]=54423 [riverside]=54424)
T0=$SECONDS

if [ -t 1 ]; then B=$'\e[1m' N=$'\e[0m'; else B='' N=''; fi
section() { printf '\n%s== %s ==%s\n' "$B" "$*" "$N"; }
say() { printf '%s\n' "$*"; }

# q HOSPITAL ARGS...: psql on a hospital's database, no pager, stopping at
# the first error.
q() {
    local h=$1
    shift
    psql_at "$DIR/$h" "${PORT[$h]}" "$DB" -P pager=off "$@"
}
# val HOSPITAL SQL: one unaligned value.
val() { q "$1" -At -c "$2"; }
# shown HOSPITAL SQL: prints the SQL, then runs it at the hospital.
shown() {
    say "  ${B}$1\$ ${2}${N}"
    q "$1" -c "$2"
}

# wait_for WHAT SECONDS HOSPITAL SQL: polls SQL (a boolean) at HOSPITAL every
# 0.2 s until it is true; fails the demo after SECONDS.
wait_for() {
    local what=$1 limit=$2 h=$3 sql=$4 t=$SECONDS
    until [ "$(val "$h" "$sql")" = t ]; do
        if [ $((SECONDS - t)) -ge "$limit" ]; then
            say "!! $what: not after ${limit}s at $h; see $DIR/$h/server.log"
            exit 1
        fi
        sleep 0.2
    done
}

# sealed_height HOSPITAL SEQ: waits until the hospital's sealer has sealed
# its row SEQ, and prints the height of the block holding it.
sealed_height() {
    local sql="SELECT height FROM ehrledger.block
                WHERE origin = ehrledger.node_name() AND $2 BETWEEN first_seq AND last_seq"
    wait_for "row $2 sealed" 20 "$1" "SELECT EXISTS ($sql)"
    val "$1" "$sql"
}

# wait_final ORIGIN HEIGHT HOSPITAL...: waits until the block is final at
# each hospital.
wait_final() {
    local origin=$1 height=$2 h
    shift 2
    for h in "$@"; do
        wait_for "block $height of $origin final" 30 "$h" \
            "SELECT EXISTS (SELECT 1 FROM ehrledger.final_block WHERE origin = '$origin' AND height = $height)"
    done
}

# heights HOSPITAL...: what each hospital holds of every chain, as
# "local_height/final_height" (pending blocks in brackets).
heights() {
    local h o row
    printf '  %-16s' 'held at \ chain'
    for o in "${HOSPITALS[@]}"; do printf ' %-15s' "$o"; done
    printf '\n'
    for h in "$@"; do
        printf '  %-16s' "$h"
        for o in "${HOSPITALS[@]}"; do
            row=$(val "$h" "SELECT coalesce(local_height, 0) || '/' || coalesce(final_height, 0)
                                   || CASE WHEN pending > 0 THEN ' (' || pending || ' pending)' ELSE '' END
                              FROM ehrledger.network_status WHERE origin = '$o'")
            printf ' %-15s' "$row"
        done
        printf '\n'
    done
    say "  (local_height/final_height of each hospital's chain, as seen at each hospital)"
}

# all_caught_up: true when every hospital holds the same blocks of every
# chain, all of them final.
all_caught_up() {
    local h s ref=""
    for h in "${HOSPITALS[@]}"; do
        s=$(val "$h" "SELECT string_agg(origin || ':' || coalesce(local_height, 0) || '/' || coalesce(final_height, 0),
                                        ' ' ORDER BY origin) || ' ' || (sum(pending) = 0)
                        FROM ehrledger.network_status")
        [ -z "$ref" ] && ref=$s
        [ "$s" = "$ref" ] && [ "${s##* }" = true ] || return 1
    done
    return 0
}

teardown() {
    local h
    if [ -d "$DIR" ]; then
        for h in "${HOSPITALS[@]}"; do
            if [ -f "$DIR/$h/data/postmaster.pid" ]; then
                say "Stopping $h in $DIR/$h"
                stop_cluster "$DIR/$h"
            fi
        done
        rm -rf "$DIR"
    fi
}

if [ "${1:-}" = stop ]; then
    teardown
    say "ehrledger network demo stopped; $DIR removed."
    exit 0
elif [ $# -gt 0 ]; then
    echo "usage: $0 [stop]" >&2
    exit 2
fi

###########################################################################
section "1. Four hospitals, four clusters in $DIR"
teardown
mkdir -p "$DIR"
[ "$(id -u)" -eq 0 ] && chown postgres: "$DIR"
chmod 755 "$DIR"
for h in "${HOSPITALS[@]}"; do
    mkdir -p "$DIR/$h"
    [ "$(id -u)" -eq 0 ] && chown postgres: "$DIR/$h"
    chmod 755 "$DIR/$h"
    if ! start_cluster "$DIR/$h" "${PORT[$h]}" "wal_level = logical
ehrledger.database = '$DB'
ehrledger.node_name = '$h'
ehrledger.seal_interval = 200
max_worker_processes = 24
max_logical_replication_workers = 12
max_replication_slots = 10
max_wal_senders = 10"; then
        echo "$h did not start; the end of $DIR/$h/server.log:" >&2
        tail -n 20 "$DIR/$h/server.log" >&2 || true
        exit 1
    fi
    psql_at "$DIR/$h" "${PORT[$h]}" postgres -c "CREATE DATABASE $DB"
    # The sealer connects to ehrledger.database when the server starts:
    # restart once so that it finds the new database at once.
    stop_cluster "$DIR/$h"
    start_cluster "$DIR/$h" "${PORT[$h]}"
    q "$h" -c "CREATE EXTENSION ehrledger"
done
say "Each hospital runs its own PostgreSQL $(val st-mary "SELECT split_part(current_setting('server_version'), ' ', 1)") on a Unix socket in $DIR/<name>, with"
say "  shared_preload_libraries = 'ehrledger', wal_level = logical, ehrledger.database = '$DB',"
say "  ehrledger.node_name = '<name>', ehrledger.seal_interval = 200 (ms), max_worker_processes = 24,"
say "  max_logical_replication_workers = 12, max_replication_slots = 10, max_wal_senders = 10"
say "and CREATE EXTENSION ehrledger in database '$DB'.  Its node key signs its blocks and its"
say "acknowledgments; the public half is what the other hospitals pin:"
for h in "${HOSPITALS[@]}"; do
    printf '  %-16s port %s  node_public_key %s\n' "$h" "${PORT[$h]}" \
        "$(val "$h" "SELECT encode(ehrledger.node_public_key(), 'hex')")"
done

###########################################################################
section "2. Every hospital adds the other three as peers"
say "add_peer(name, conninfo, public_key) creates the replication slot the peer will read this"
say "hospital's blocks from, and a subscription to the peer's own blocks and acknowledgments."
say "The peer's key is pinned: a block or acknowledgment signed with another key is refused."
declare -A KEY
for h in "${HOSPITALS[@]}"; do
    KEY[$h]=$(val "$h" "SELECT encode(ehrledger.node_public_key(), 'hex')")
done
for h in "${HOSPITALS[@]}"; do
    sql=""
    for p in "${HOSPITALS[@]}"; do
        [ "$p" = "$h" ] && continue
        sql+="SELECT ehrledger.add_peer('$p', 'host=$DIR/$p port=${PORT[$p]} dbname=$DB user=postgres',
                          '\\x${KEY[$p]}');
"
    done
    say ""
    say "-- at $h (psql -h $DIR/$h -p ${PORT[$h]} -d $DB):"
    printf '%s' "$sql" | sed 's/^/    /'
    # one transaction each: add_peer() creates a replication slot first
    q "$h" >/dev/null <<<"$sql"
done
say ""
say "Waiting until every subscription has copied its tables and streams..."
for h in "${HOSPITALS[@]}"; do
    wait_for "subscriptions of $h ready" 30 "$h" \
        "SELECT (SELECT count(*) FROM pg_stat_subscription WHERE relid IS NULL AND pid IS NOT NULL) = 3
            AND NOT EXISTS (SELECT 1 FROM pg_subscription_rel WHERE srsubstate <> 'r')"
done
shown st-mary "SELECT name, left(encode(public_key, 'hex'), 16) || '...' AS public_key, received_lsn IS NOT NULL AS linked, height FROM ehrledger.peers ORDER BY name"
shown st-mary "SELECT ehrledger.quorum()"
say "(n = 4 members tolerate f = 1 faulty hospital: a block is final with 2f+1 = 3 acknowledgments)"

###########################################################################
section "3. A protected table at every hospital"
say "Each hospital's EHR has its own encounter table, protected by ehrledger (here without a"
say "patient_column: no consent rules, only the ledger):"
for h in "${HOSPITALS[@]}"; do
    q "$h" <<'SQL'
CREATE TABLE encounter (
    id          text PRIMARY KEY,
    patient_id  text NOT NULL,
    resource    jsonb NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
SELECT ehrledger.protect('public.encounter') \g /dev/null
SQL
done
say "    CREATE TABLE encounter (id text PRIMARY KEY, patient_id text NOT NULL, resource jsonb NOT NULL,"
say "                            recorded_at timestamptz NOT NULL DEFAULT now());"
say "    SELECT ehrledger.protect('public.encounter');"
shown lakeside "SELECT * FROM ehrledger.protected_tables"
say "st-mary shares its encounters with the network; the others keep theirs at home (their"
say "rows' hashes still travel in their blocks):"
say "  ${B}st-mary\$ SELECT ehrledger.share('public.encounter');${N}"
val st-mary "SELECT ehrledger.share('public.encounter')" >/dev/null

# encounter_sql ID PATIENT [RETURNING]: an INSERT of a FHIR R4 Encounter.
encounter_sql() {
    cat <<SQL
INSERT INTO encounter (id, patient_id, resource) VALUES ('$1', '$2', jsonb_build_object(
    'resourceType', 'Encounter', 'id', '$1', 'status', 'finished',
    'class', jsonb_build_object('system', 'http://terminology.hl7.org/CodeSystem/v3-ActCode', 'code', 'EMER'),
    'subject', jsonb_build_object('reference', 'Patient/$2'),
    'period', jsonb_build_object('start', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'))))${3:+
$3};
SQL
}
# write HOSPITAL ID PATIENT: inserts an encounter, prints its ledger_seq.
write() { val "$1" "$(encounter_sql "$2" "$3" 'RETURNING ledger_seq')"; }

###########################################################################
section "4. A record written at st-mary becomes final at all four hospitals"
say "  ${B}st-mary\$ INSERT INTO encounter (id, patient_id, resource) VALUES ('enc-sm-0001', 'pat-0042', '{\"resourceType\": \"Encounter\", ...}');${N}"
seq=$(write st-mary enc-sm-0001 pat-0042)
H=$(sealed_height st-mary "$seq")
say "st-mary's sealer put it (ledger_seq $seq) in st-mary's block $H within 200 ms and signed it;"
say "the block goes to the three others, each checks it against st-mary's key and chain, stores it"
say "and signs an acknowledgment, which goes back to everyone."
wait_final st-mary "$H" "${HOSPITALS[@]}"
say ""
say "Block $H of st-mary, as each hospital sees it:"
printf '  %-16s %-22s %4s %6s %5s\n' seen_at block_hash acks quorum final
for h in "${HOSPITALS[@]}"; do
    IFS='|' read -r bh acks quorum final <<<"$(val "$h" "SELECT left(encode(block_hash, 'hex'), 16) || '...', acks, quorum, final
                                                          FROM ehrledger.block_status('st-mary', $H)")"
    printf '  %-16s %-22s %4s %6s %5s\n' "$h" "$bh" "$acks" "$quorum" "$final"
done
say "  (${B}\$ SELECT block_hash, acks, quorum, final FROM ehrledger.block_status('st-mary', $H)${N} at each)"
say ""
say "Who acknowledged it (at county-general):"
shown county-general "SELECT acker, left(encode(signature, 'hex'), 16) || '...' AS signature, acked_at FROM ehrledger.ack WHERE origin = 'st-mary' AND height = $H ORDER BY acked_at"
say "The network status at each hospital:"
for h in "${HOSPITALS[@]}"; do
    shown "$h" "SELECT * FROM ehrledger.network_status"
done
say "The certificate that proves it final, at riverside: the header, st-mary's signature, and"
say "the acknowledgments (anyone holding the four public keys can check it offline):"
q riverside -At -c "SELECT jsonb_pretty(jsonb_set(jsonb_set(certificate, '{header}', to_jsonb(left(certificate->>'header', 32) || '...')),
                                    '{acks}', (SELECT jsonb_agg(jsonb_build_object('acker', a->'acker',
                                                'signature', left(a->>'signature', 32) || '...')) FROM jsonb_array_elements(certificate->'acks') a)))
                      FROM ehrledger.final_block WHERE origin = 'st-mary' AND height = $H" | sed 's/^/    /'
say "The encounter itself reached the others with the block; county-general checks it against"
say "st-mary's signed block before trusting it:"
wait_for "the shared encounter, verified" 30 county-general \
    "SELECT EXISTS (SELECT 1 FROM ehrledger.shared_rows WHERE origin = 'st-mary' AND verified AND final)"
shown county-general "SELECT origin, table_name, ledger_seq, \"row\" ->> 'id' AS id, \"row\" ->> 'patient_id' AS patient, verified, final FROM ehrledger.shared_rows"
say "Time from sealing at st-mary to final, at each hospital:"
for h in "${HOSPITALS[@]}"; do
    secs=$(val "$h" "SELECT round(extract(epoch FROM f.final_at - b.sealed_at)::numeric, 3)
                       FROM ehrledger.final_block f JOIN ehrledger.block b USING (origin, height)
                      WHERE origin = 'st-mary' AND height = $H")
    printf '  %-16s %s s\n' "$h" "$secs"
done

###########################################################################
section "5. riverside goes down; the other three keep finalizing"
say "  ${B}\$ pg_ctl -D $DIR/riverside/data stop${N}"
stop_cluster "$DIR/riverside"
say "st-mary and county-general keep writing, a few records each:"
for i in 2 3 4; do
    seq1=$(write st-mary "enc-sm-000$i" "pat-00$((i * 7))")
    seq2=$(write county-general "enc-cg-000$i" "pat-03$((i * 3))")
    sleep 0.3
done
H1=$(sealed_height st-mary "$seq1")
H2=$(sealed_height county-general "$seq2")
say "  st-mary's newest block is $H1, county-general's $H2."
wait_final st-mary "$H1" st-mary county-general lakeside
wait_final county-general "$H2" st-mary county-general lakeside
say "Three acknowledgments are a quorum: their blocks are final without riverside (at lakeside):"
q lakeside -c "SELECT 'st-mary' AS origin, $H1 AS height, acks, quorum, final FROM ehrledger.block_status('st-mary', $H1)
               UNION ALL
               SELECT 'county-general', $H2, acks, quorum, final FROM ehrledger.block_status('county-general', $H2)"
heights st-mary county-general lakeside
say "st-mary's replication slot for riverside is idle, and keeps the WAL riverside has not read:"
shown st-mary "SELECT slot_name, active, pg_size_pretty(pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)) AS not_yet_read_by_peer
                 FROM pg_replication_slots WHERE slot_type = 'logical' ORDER BY slot_name"

###########################################################################
section "6. riverside comes back and catches up"
say "  ${B}\$ pg_ctl -D $DIR/riverside/data start${N}"
start_cluster "$DIR/riverside" "${PORT[riverside]}"
say "Its subscriptions resume where they left off (the others' slots kept what it missed); it"
say "checks and acknowledges every block it missed, and its acknowledgments go back to the others:"
wait_final st-mary "$H1" riverside
wait_final county-general "$H2" riverside
t=$SECONDS
until all_caught_up; do
    if [ $((SECONDS - t)) -ge 30 ]; then
        say "!! the hospitals did not agree on their heights after 30s"
        heights "${HOSPITALS[@]}"
        exit 1
    fi
    sleep 0.2
done
heights "${HOSPITALS[@]}"
say "Every hospital holds the same blocks of every chain, all of them final."

###########################################################################
section "7. lakeside equivocates, and is caught"
seq=$(write lakeside enc-ls-0001 pat-0099)
E=$(sealed_height lakeside "$seq")
wait_final lakeside "$E" "${HOSPITALS[@]}"
say "lakeside wrote enc-ls-0001; its block $E is final everywhere:"
q lakeside -c "SELECT height, first_seq, last_seq, row_count, left(encode(block_hash, 'hex'), 16) || '...' AS block_hash
                 FROM ehrledger.block WHERE origin = 'lakeside' AND height = $E"
say "Now lakeside's superuser rewrites history: deletes block $E and lakeside's own acknowledgment"
say "of it behind the ledger's back, and writes another record, so that lakeside's sealer seals a"
say "different block $E, and signs it, and acknowledges it:"
# ENABLE TRIGGER ALL would reset every trigger to fire on origin only; put
# back the modes (origin, replica, always) the extension gave them.
restore=$(val lakeside "SELECT string_agg(format('ALTER TABLE %s ENABLE %s TRIGGER %I;', tgrelid::regclass,
                                                  CASE tgenabled WHEN 'A' THEN 'ALWAYS' WHEN 'R' THEN 'REPLICA' ELSE '' END,
                                                  tgname), ' ')
                          FROM pg_trigger WHERE tgrelid IN ('ehrledger.block'::regclass, 'ehrledger.ack'::regclass)
                           AND NOT tgisinternal AND tgenabled <> 'D'")
q lakeside -e -v QUIET=off <<SQL
BEGIN;
SET session_replication_role = replica;
ALTER TABLE ehrledger.block DISABLE TRIGGER ALL;
ALTER TABLE ehrledger.ack DISABLE TRIGGER ALL;
RESET session_replication_role;
DELETE FROM ehrledger.ack WHERE origin = 'lakeside' AND height = $E AND acker = 'lakeside';
DELETE FROM ehrledger.block WHERE origin = 'lakeside' AND height = $E;
\\echo -- (the triggers back as the extension set them: origin, replica or always)
\\set ECHO none
\\set QUIET on
$restore
\\set QUIET off
\\set ECHO all
$(encounter_sql enc-ls-0002 pat-0100)
COMMIT;
SQL
wait_for "lakeside seals another block $E" 20 lakeside \
    "SELECT EXISTS (SELECT 1 FROM ehrledger.block WHERE origin = 'lakeside' AND height = $E AND $seq BETWEEN first_seq AND last_seq
                      AND (SELECT max(ledger_seq) FROM encounter) BETWEEN first_seq AND last_seq)"
say "lakeside now holds another block $E, also signed with lakeside's key:"
q lakeside -c "SELECT height, first_seq, last_seq, row_count, left(encode(block_hash, 'hex'), 16) || '...' AS block_hash
                 FROM ehrledger.block WHERE origin = 'lakeside' AND height = $E"
say "It reaches the others, who already hold block $E of lakeside, signed by lakeside: that is"
say "equivocation.  lakeside's acknowledgment of its new block also contradicts its acknowledgment"
say "of the first one: a double_ack."
for h in st-mary county-general riverside; do
    wait_for "equivocation evidence at $h" 20 "$h" \
        "SELECT EXISTS (SELECT 1 FROM ehrledger.evidence WHERE kind = 'equivocation' AND accused = 'lakeside' AND height = $E)"
done
for h in st-mary county-general riverside; do
    shown "$h" "SELECT evidence_id, kind, accused, origin, height, left(statement_a->>'header', 24) || '...' AS header_a,
                       left(statement_b->>'header', 24) || '...' AS header_b, detected_at
                  FROM ehrledger.evidence ORDER BY evidence_id"
done
say "The two statements, at st-mary: two headers of lakeside's block $E, both signed with its key,"
say "with different hashes; anyone can check both signatures, so lakeside cannot deny it:"
q st-mary -x -c "SELECT kind, accused,
                        encode(sha256(decode(statement_a->>'header', 'hex')), 'hex') AS hash_a,
                        ehrledger.verify_signature(sha256(decode(statement_a->>'header', 'hex')),
                            decode(statement_a->>'signature', 'hex'), (SELECT public_key FROM ehrledger.peer WHERE name = 'lakeside')) AS a_signed_by_lakeside,
                        encode(sha256(decode(statement_b->>'header', 'hex')), 'hex') AS hash_b,
                        ehrledger.verify_signature(sha256(decode(statement_b->>'header', 'hex')),
                            decode(statement_b->>'signature', 'hex'), (SELECT public_key FROM ehrledger.peer WHERE name = 'lakeside')) AS b_signed_by_lakeside
                   FROM ehrledger.evidence WHERE kind = 'equivocation' AND accused = 'lakeside' LIMIT 1"
say "The second block was refused, and the block $E the network finalized stands:"
shown st-mary "SELECT origin, height, left(encode(block_hash, 'hex'), 16) || '...' AS block_hash, reason FROM ehrledger.rejected_block"
q st-mary -c "SELECT origin, height, left(encode(block_hash, 'hex'), 16) || '...' AS block_hash, final_at
                FROM ehrledger.final_block WHERE origin = 'lakeside' AND height = $E"
say "lakeside's chain now forks from the network's: its next block builds on the block the others"
say "refused, so they refuse it too, and nothing lakeside writes becomes final any more:"
seq=$(write lakeside enc-ls-0003 pat-0101)
E2=$(sealed_height lakeside "$seq")
wait_for "block $E2 of lakeside refused at st-mary" 20 st-mary \
    "SELECT EXISTS (SELECT 1 FROM ehrledger.rejected_block WHERE origin = 'lakeside' AND height = $E2)"
q st-mary -c "SELECT origin, height, reason FROM ehrledger.rejected_block WHERE origin = 'lakeside' ORDER BY rejected_at"
heights "${HOSPITALS[@]}"

###########################################################################
section "Done in $((SECONDS - T0))s: the four hospitals are still running"
if [ "$(id -u)" -eq 0 ]; then
    connect="runuser -u postgres -- psql -h $DIR/st-mary -p ${PORT[st-mary]} -d $DB"
else
    connect="psql -h $DIR/st-mary -p ${PORT[st-mary]} -d $DB"
fi
cat <<EOF
Connect (st-mary; the others likewise):
EOF
for h in "${HOSPITALS[@]}"; do
    printf '    %-16s sudo -u postgres psql -h %s -p %s -d %s\n' "$h" "$DIR/$h" "${PORT[$h]}" "$DB"
done
cat <<EOF
    (or, as root: $connect)

Try:
    SELECT * FROM ehrledger.network_status;
    SELECT * FROM ehrledger.peers;
    INSERT INTO encounter (id, patient_id, resource) VALUES ('enc-x', 'pat-1', '{"resourceType": "Encounter"}');
    SELECT origin, height, final_at FROM ehrledger.final_block ORDER BY final_at DESC LIMIT 5;
    SELECT * FROM ehrledger.block_status('st-mary', 1);
    SELECT kind, accused, origin, height FROM ehrledger.evidence;

Stop them and remove $DIR:
    make demo-network-stop        (or: scripts/demo-network.sh stop)
EOF
