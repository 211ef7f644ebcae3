#!/usr/bin/env bash
# The ehrledger demo: a throwaway cluster holding a small synthetic FHIR R4
# EHR, protected by ehrledger, sealed by the background worker, verified,
# tampered with by a superuser, and verified again.
#
#   scripts/demo.sh        (re)create the demo cluster and walk through it;
#                          the cluster is left running for you to explore
#   scripts/demo.sh stop   stop the demo cluster and remove its directory
#
# Runs as root (as CI does; clusters then run as the postgres user) or as
# the postgres user.  `make demo` and `make demo-stop` call it.
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

DIR=/tmp/ehrledger-demo
PORT=54329
DB=ehr
NODE=st-mary-hospital
T0=$SECONDS

if [ -t 1 ]; then B=$'\e[1m' N=$'\e[0m'; else B='' N=''; fi
section() { printf '\n%s== %s ==%s\n' "$B" "$*" "$N"; }
say() { printf '%s\n' "$*"; }

# q ARGS...: psql on the demo database, no pager, stopping at the first error.
q() { psql_at "$DIR" "$PORT" "$DB" -P pager=off "$@"; }
# val SQL: one unaligned value.
val() { q -At -c "$1"; }
# refused SQL: runs SQL that ehrledger must refuse and shows what it said.
refused() {
    local out
    say "  ${B}\$ $1${N}"
    out=$(q -v ON_ERROR_STOP=0 -v SHOW_CONTEXT=never -c "$1" 2>&1) || true
    printf '%s\n' "$out" | sed 's/^/    /'
    case $out in
        *ERROR*) ;;
        *) say "    !! the statement was NOT refused"; exit 1 ;;
    esac
}

# wait_sealed: waits (up to ~20 s) until the background sealer has sealed
# every protected row.  The sealer itself draws numbers from ledger_seq, so
# compare rows with the newest block rather than with the sequence.
wait_sealed() {
    local sql unsealed waited=0
    sql="WITH h AS (SELECT coalesce(max(last_seq), 0) AS s FROM ehrledger.blocks)
SELECT (SELECT count(*) FROM patient, h WHERE ledger_seq > h.s)
     + (SELECT count(*) FROM encounter, h WHERE ledger_seq > h.s)
     + (SELECT count(*) FROM observation, h WHERE ledger_seq > h.s)
     + (SELECT count(*) FROM medication_request, h WHERE ledger_seq > h.s)"
    while :; do
        unsealed=$(val "$sql")
        [ "$unsealed" -eq 0 ] && break
        if [ "$waited" -ge 20 ]; then
            say "!! the sealer left $unsealed rows unsealed after ${waited}s; see $DIR/server.log"
            say "   sealing by hand with ehrledger.seal() instead"
            val "SELECT ehrledger.seal()" >/dev/null
            return 0
        fi
        say "  waiting for the background sealer: $unsealed rows not sealed yet"
        sleep 1
        waited=$((waited + 1))
    done
    say "  all protected rows are sealed"
}

teardown() {
    if [ -d "$DIR" ]; then
        if [ -f "$DIR/data/postmaster.pid" ]; then
            say "Stopping the demo cluster in $DIR"
            stop_cluster "$DIR"
        fi
        rm -rf "$DIR"
    fi
}

if [ "${1:-}" = stop ]; then
    teardown
    say "ehrledger demo stopped; $DIR removed."
    exit 0
elif [ $# -gt 0 ]; then
    echo "usage: $0 [stop]" >&2
    exit 2
fi

###########################################################################
section "1. A fresh demo cluster in $DIR (port $PORT)"
teardown
mkdir -p "$DIR"
[ "$(id -u)" -eq 0 ] && chown postgres: "$DIR"
chmod 755 "$DIR"
# The postgres user may not be able to read the source tree: hand it copies.
mkdir -p "$DIR/sql"
cp demo/schema.sql demo/data.sql "$DIR/sql/"
[ "$(id -u)" -eq 0 ] && chown -R postgres: "$DIR/sql"
chmod 755 "$DIR/sql"
chmod 644 "$DIR/sql/"*.sql

if ! start_cluster "$DIR" "$PORT" "ehrledger.database = '$DB'
ehrledger.seal_interval = 1000
ehrledger.node_name = '$NODE'"; then
    echo "The demo cluster did not start; the end of $DIR/server.log:" >&2
    tail -n 20 "$DIR/server.log" >&2 || true
    exit 1
fi
psql_at "$DIR" "$PORT" postgres -c "CREATE DATABASE $DB"
say "PostgreSQL $(val 'SHOW server_version'), shared_preload_libraries = ehrledger"
say "ehrledger.node_name = $(val 'SHOW ehrledger.node_name'), ehrledger.seal_interval = $(val 'SHOW ehrledger.seal_interval'), database '$DB'"

###########################################################################
section "2. The EHR before ehrledger: schema and synthetic FHIR R4 data"
q -f "$DIR/sql/schema.sql"
q -f "$DIR/sql/data.sql"
q <<'SQL'
SELECT 'patient' AS "table", count(*) AS "rows" FROM patient
UNION ALL SELECT 'encounter', count(*) FROM encounter
UNION ALL SELECT 'observation', count(*) FROM observation
UNION ALL SELECT 'medication_request', count(*) FROM medication_request;
SQL

###########################################################################
section "3. CREATE EXTENSION ehrledger and protect the four (already populated) tables"
say "(with their patient column: patients' consents will decide who sees which rows)"
q -e <<'SQL'
CREATE EXTENSION ehrledger;
SELECT ehrledger.protect('public.patient', patient_column => 'id') \gset
SELECT ehrledger.protect('public.encounter', patient_column => 'patient_id') \gset
SELECT ehrledger.protect('public.observation', patient_column => 'patient_id', category => 'diagnostics') \gset
SELECT ehrledger.protect('public.medication_request', patient_column => 'patient_id', category => 'medication') \gset
SQL
q -c "SELECT * FROM ehrledger.protected_tables ORDER BY table_id"
say "Every existing row now carries a ledger_seq and the hash of its content"
say "(protect() adds the two ledger columns last, after the application's own):"
q <<'SQL'
SELECT id, patient_id, code, ledger_seq,
       left(encode(ledger_hash, 'hex'), 16) || '...' AS ledger_hash
  FROM observation ORDER BY ledger_seq LIMIT 3;
SQL
say "The background sealer seals them into the first block (it connects to '$DB' within ~5 s):"
wait_sealed

###########################################################################
section "4. The unchanged EMR application keeps writing"
say "Plain INSERTs that know nothing about the ledger columns:"
q -v QUIET=off <<'SQL'
\echo '-- 300 new vital signs (3 each for 100 existing patients)'
INSERT INTO observation (id, patient_id, code, resource)
SELECT 'obs-' || lpad((b.m + 3 * (p.n - 1) + v.k)::text, 7, '0'),
       'pat-' || lpad(p.n::text, 5, '0'),
       v.code,
       jsonb_build_object(
           'resourceType', 'Observation',
           'id', 'obs-' || lpad((b.m + 3 * (p.n - 1) + v.k)::text, 7, '0'),
           'status', 'final',
           'code', jsonb_build_object('coding', jsonb_build_array(jsonb_build_object(
               'system', 'http://loinc.org', 'code', v.code, 'display', v.display))),
           'subject', jsonb_build_object('reference', 'Patient/pat-' || lpad(p.n::text, 5, '0')),
           'effectiveDateTime', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
           'valueQuantity', jsonb_build_object(
               'value', v.base + (p.n * 7 + v.k * 3) % v.spread,
               'unit', v.unit, 'system', 'http://unitsofmeasure.org', 'code', v.ucum))
  FROM (SELECT max(substr(id, 5)::int) AS m FROM observation) b,
       generate_series(1, 100) AS p(n),
       (VALUES (1, '8867-4', 'Heart rate',               'beats/minute', '/min',   60, 35),
               (2, '8480-6', 'Systolic blood pressure',  'mmHg',         'mm[Hg]', 105, 40),
               (3, '8462-4', 'Diastolic blood pressure', 'mmHg',         'mm[Hg]', 62, 28))
         AS v(k, code, display, unit, ucum, base, spread);

\echo '-- a new prescription for 40 existing patients'
INSERT INTO medication_request (id, patient_id, resource)
SELECT 'mrq-' || lpad((b.m + p.n)::text, 6, '0'),
       'pat-' || lpad((p.n * 7)::text, 5, '0'),
       jsonb_build_object(
           'resourceType', 'MedicationRequest',
           'id', 'mrq-' || lpad((b.m + p.n)::text, 6, '0'),
           'status', 'active', 'intent', 'order',
           'medicationCodeableConcept', jsonb_build_object('coding', jsonb_build_array(jsonb_build_object(
               'system', 'http://www.nlm.nih.gov/research/umls/rxnorm',
               'code', '314076', 'display', 'lisinopril 10 MG Oral Tablet'))),
           'subject', jsonb_build_object('reference', 'Patient/pat-' || lpad((p.n * 7)::text, 5, '0')),
           'authoredOn', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'))
  FROM (SELECT max(substr(id, 5)::int) AS m FROM medication_request) b,
       generate_series(1, 40) AS p(n);

\echo '-- a new patient and her first encounter'
INSERT INTO patient (id, resource) VALUES ('pat-00301', jsonb_build_object(
    'resourceType', 'Patient', 'id', 'pat-00301', 'gender', 'female', 'birthDate', '1987-04-12',
    'name', jsonb_build_array(jsonb_build_object('family', 'Rivera', 'given', jsonb_build_array('Ana')))));
INSERT INTO encounter (id, patient_id, resource) VALUES ('enc-900001', 'pat-00301', jsonb_build_object(
    'resourceType', 'Encounter', 'id', 'enc-900001', 'status', 'finished',
    'class', jsonb_build_object('system', 'http://terminology.hl7.org/CodeSystem/v3-ActCode', 'code', 'AMB'),
    'subject', jsonb_build_object('reference', 'Patient/pat-00301')));

\echo '-- no column list at all: ledger_seq and ledger_hash come last, so VALUES'
\echo '-- with only the application''s own columns still lines up'
\set ECHO queries
INSERT INTO observation VALUES ('obs-9000001', 'pat-00301', '8310-5', jsonb_build_object(
    'resourceType', 'Observation', 'id', 'obs-9000001', 'status', 'final',
    'code', jsonb_build_object('coding', jsonb_build_array(jsonb_build_object(
        'system', 'http://loinc.org', 'code', '8310-5', 'display', 'Body temperature'))),
    'subject', jsonb_build_object('reference', 'Patient/pat-00301'),
    'valueQuantity', jsonb_build_object('value', 36.8, 'unit', 'C',
        'system', 'http://unitsofmeasure.org', 'code', 'Cel')), now());
SQL
say "The insert trigger numbered and hashed each new row:"
q <<'SQL'
SELECT id, patient_id, code, resource #>> '{valueQuantity,value}' AS value, ledger_seq,
       left(encode(ledger_hash, 'hex'), 16) || '...' AS ledger_hash
  FROM observation ORDER BY ledger_seq DESC LIMIT 3;
SQL
say "Changing or removing a record is refused, even for a superuser:"
refused "UPDATE observation SET resource = jsonb_set(resource, '{valueQuantity,value}', '120') WHERE id = 'obs-0000042'"
refused "DELETE FROM medication_request WHERE id = 'mrq-000007'"
refused "TRUNCATE encounter"

###########################################################################
section "5. The background sealer groups committed rows into signed, chained blocks"
wait_sealed
q <<'SQL'
SELECT origin, height, row_count, first_seq, last_seq, sealed_at,
       left(encode(block_hash, 'hex'), 16) || '...' AS block_hash
  FROM (SELECT * FROM ehrledger.blocks ORDER BY height DESC LIMIT 5) newest
 ORDER BY height;
SELECT count(*) AS blocks, sum(row_count) AS rows_sealed, max(last_seq) AS sealed_up_to,
       (SELECT count(*) FROM patient) + (SELECT count(*) FROM encounter)
     + (SELECT count(*) FROM observation) + (SELECT count(*) FROM medication_request) AS rows_in_tables
  FROM ehrledger.blocks;
SQL
say "(gaps between a block's row_count and its seq range are numbers the sealer itself drew)"

###########################################################################
section "6. Verify everything, and keep a signed digest outside the database"
q -c "SELECT ok, blocks_checked, rows_checked, problems FROM ehrledger.verify()"
say "ehrledger.digest(), a signed statement of the newest block:"
q -At -c "SELECT jsonb_pretty(ehrledger.digest())"
val "SELECT ehrledger.digest()::text" > "$DIR/digest.json"
chmod 644 "$DIR/digest.json"
say "Saved it, compact, to $DIR/digest.json (an auditor would keep it elsewhere)."

###########################################################################
section "7. A superuser tampers behind the ledger's back"
sealed="(SELECT max(last_seq) FROM ehrledger.blocks)"
obs_id=$(val "SELECT id FROM observation WHERE ledger_seq <= $sealed AND code = '8480-6' ORDER BY ledger_seq OFFSET 20 LIMIT 1")
obs_seq=$(val "SELECT ledger_seq FROM observation WHERE id = '$obs_id'")
mrq_id=$(val "SELECT id FROM medication_request WHERE ledger_seq <= $sealed ORDER BY ledger_seq OFFSET 6 LIMIT 1")
mrq_seq=$(val "SELECT ledger_seq FROM medication_request WHERE id = '$mrq_id'")
say "Targets: observation $obs_id (a sealed systolic blood pressure) and medication_request $mrq_id."
q -c "SELECT id, patient_id, resource #>> '{valueQuantity,value}' AS value, ledger_seq FROM observation WHERE id = '$obs_id'"
say "The schema guard refuses to switch the ledger's triggers off, or to drop a sealed column:"
refused "ALTER TABLE observation DISABLE TRIGGER ALL"
refused "ALTER TABLE observation DROP COLUMN resource"
say "A superuser can switch the guard off with session_replication_role, and does:"
q -e -v QUIET=off <<SQL
SET session_replication_role = replica;
ALTER TABLE observation DISABLE TRIGGER ALL;
RESET session_replication_role;
UPDATE observation SET resource = jsonb_set(resource, '{valueQuantity,value}', '999') WHERE id = '$obs_id';
ALTER TABLE observation ENABLE TRIGGER ALL;
SET session_replication_role = replica;
ALTER TABLE medication_request DISABLE TRIGGER ALL;
RESET session_replication_role;
DELETE FROM medication_request WHERE id = '$mrq_id';
ALTER TABLE medication_request ENABLE TRIGGER ALL;
SQL
say "The table now says 999, with its ledger_seq and ledger_hash untouched:"
q -c "SELECT id, patient_id, resource #>> '{valueQuantity,value}' AS value, ledger_seq FROM observation WHERE id = '$obs_id'"

###########################################################################
section "8. Verification names every change"
say "Expected: row_modified at observation ledger_seq $obs_seq, missing_row at medication_request ledger_seq $mrq_seq."
say "\$ SELECT ok, jsonb_pretty(problems) FROM ehrledger.verify();"
q -x -c "SELECT ok, blocks_checked, rows_checked, jsonb_pretty(problems) AS problems FROM ehrledger.verify()"
say "The same, one problem per line:"
q <<'SQL'
SELECT p->>'kind' AS kind, p->>'table' AS "table", (p->>'ledger_seq')::int8 AS ledger_seq,
       (p->>'block')::int8 AS block, p->>'detail' AS detail
  FROM ehrledger.verify() v, jsonb_array_elements(v.problems) p;
SQL
say "Against the saved digest: the chain still matches it (no digest_mismatch or"
say "chain_truncated), so the signed blocks are intact and the rows are what changed:"
say "\$ SELECT * FROM ehrledger.verify(digest => '<$DIR/digest.json>'::jsonb);"
q -x -v digest="$(cat "$DIR/digest.json")" <<'SQL'
SELECT ok, blocks_checked, rows_checked, jsonb_pretty(problems) AS problems
  FROM ehrledger.verify(digest => :'digest'::jsonb);
SQL
say "One table at a time: public.patient was not touched and still verifies:"
q -c "SELECT ok, blocks_checked, rows_checked, problems FROM ehrledger.verify('public.patient')"

###########################################################################
section "9. Patients decide who sees their records"
say "Clinicians and patients log in as their own database roles, mapped to actors:"
q <<'SQL'
SET client_min_messages = warning;
CREATE ROLE dr_grey;  CREATE ROLE dr_yang;  CREATE ROLE rx_bailey;  CREATE ROLE pat_00001;  CREATE ROLE auditor_kim;
GRANT SELECT, INSERT ON patient, encounter, observation, medication_request
   TO dr_grey, dr_yang, rx_bailey, pat_00001, auditor_kim;
SELECT ehrledger.register_actor(a, r, (SELECT public_key FROM ehrledger.keypair()), g)
  FROM (VALUES ('dr-grey', 'provider', 'dr_grey'), ('dr-yang', 'provider', 'dr_yang'),
               ('rx-bailey', 'pharmacist', 'rx_bailey'), ('pat-00001', 'patient', 'pat_00001'),
               ('pat-00002', 'patient', NULL),
               ('auditor-kim', 'auditor', 'auditor_kim')) AS x(a, r, g) \g /dev/null
SELECT actor_id, role, pg_role FROM ehrledger.actors ORDER BY role, actor_id;
SQL
( q -c "LISTEN ehrledger_events" -c "SELECT pg_sleep(6)" > "$DIR/notifications.out" 2>&1 & )
sleep 0.5
say "Without consent, the same SQL the EMR runs shows a clinician nothing:"
q -c "SET ROLE dr_grey" -c "SELECT count(*) AS encounters_dr_grey_sees FROM encounter"
say "The patient consents, from her own role: dr-grey may see all her records,"
say "the pharmacist only her medication, for 30 days:"
q <<'SQL'
SET ROLE pat_00001;
SELECT ehrledger.grant_consent('pat-00001', 'dr-grey') AS consent_for_dr_grey;
SELECT ehrledger.grant_consent('pat-00001', 'rx-bailey', scope => 'medication',
                               valid_until => now() + interval '30 days') AS consent_for_pharmacist;
SELECT consent_id, grantee, scope, purpose, valid_until::date, active FROM ehrledger.consents;
SQL
q <<'SQL'
SET ROLE dr_grey;
SELECT patient_id, count(*) AS encounters_dr_grey_sees FROM encounter GROUP BY 1;
SET ROLE rx_bailey;
SELECT (SELECT count(*) FROM medication_request) AS medication_rows_pharmacist_sees,
       (SELECT count(*) FROM observation) AS observations_pharmacist_sees;
SQL
say "dr-grey cannot grant himself access to another patient:"
refused "SET ROLE dr_grey; SELECT ehrledger.grant_consent('pat-00002', 'dr-grey')"
say "An emergency: dr-yang breaks the glass for pat-00002 (recorded, announced, 60 minutes):"
q <<'SQL'
SET ROLE dr_yang;
SELECT ehrledger.break_glass('pat-00002', 'unconscious in the ED, suspected overdose') AS break_glass_id;
SELECT patient_id, count(*) AS observations_dr_yang_sees FROM observation GROUP BY 1;
SQL
say "The patient sees who read or changed her record, and on what basis:"
q -c "SET ROLE pat_00001" -c "SELECT to_char(at, 'HH24:MI:SS') AS at, actor, action, tbl, basis FROM ehrledger.access_history('pat-00001') ORDER BY event_seq"
say "An auditor sees the break-glass, and can take it away as FHIR R4 AuditEvents:"
q <<'SQL'
SET ROLE auditor_kim;
SELECT actor, action, tbl, basis FROM ehrledger.access_history('pat-00002') ORDER BY event_seq;
SELECT jsonb_pretty(jsonb_build_object('resourceType', e->'resource'->'resourceType', 'action', e->'resource'->'action',
                                       'agent', e->'resource'#>'{agent,0,who,identifier,value}',
                                       'purposeOfEvent', e->'resource'#>'{purposeOfEvent,0,coding,0,code}',
                                       'description', e->'resource'#>'{entity,1,description}'))
  FROM ehrledger.access_history_fhir('pat-00002') b, jsonb_array_elements(b->'entry') e
 WHERE e->'resource'->>'action' = 'R' LIMIT 1;
SQL
sleep 6
say "A patient-facing service LISTENing on channel ehrledger_events was told (first lines):"
sed -n 's/.*with payload "\(.*\)" received from server.*/    \1/p' "$DIR/notifications.out" | head -5
say "    notifications received: $(grep -c 'Asynchronous notification' "$DIR/notifications.out" || true)"
say "A notification names an access log entry and nothing else (anyone may listen, or"
say "notify); the service reads the entry under its own rights, here as an auditor:"
first=$(sed -n 's/.*with payload "{\"event_seq\" : \([0-9]*\)}" received from server.*/\1/p' "$DIR/notifications.out" | head -1)
q -c "SET ROLE auditor_kim" -c "SELECT event_seq, action, actor, patient, tbl, basis FROM ehrledger.access_event(${first:-0})"

###########################################################################
section "Done in $((SECONDS - T0))s: the demo cluster is still running"
if [ "$(id -u)" -eq 0 ]; then
    connect="runuser -u postgres -- psql -h $DIR -p $PORT -d $DB"
else
    connect="psql -h $DIR -p $PORT -d $DB"
fi
cat <<EOF
Connect:
    sudo -u postgres psql -h $DIR -p $PORT -d $DB
    (or, as root: $connect)

Try:
    SELECT height, row_count, first_seq, last_seq, sealed_at FROM ehrledger.blocks ORDER BY height;
    SELECT ok, jsonb_pretty(problems) FROM ehrledger.verify();
    SELECT * FROM ehrledger.verify(digest => pg_read_file('$DIR/digest.json')::jsonb);
    INSERT INTO patient (id, resource) VALUES ('pat-00302', '{"resourceType": "Patient"}');
    SELECT ehrledger.seal();   -- or wait a second for the background sealer

Stop and remove it:
    make demo-stop        (or: scripts/demo.sh stop)
EOF
