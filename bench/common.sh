# Shared by the benchmark scripts in bench/.  Source it after setting NAME
# (the results file is bench/results/$NAME.txt).
#
# It sources scripts/lib.sh (PGBIN, as_pg, make_workdir, start_cluster,
# stop_cluster, psql_at) and adds:
#   BENCH_CONF          postgresql.conf lines every benchmark cluster gets
#   bench_start PORT [EXTRA]   throwaway cluster in $W with database "bench"
#                              and the extension; stopped and removed on exit
#   q SQL               one value from the "bench" database (psql -At)
#   qs [ARGS]           a SQL script (stdin) in "bench"
#   elapsed SQL         seconds SQL took, in one session
#   resource_expr C N P V      SQL expression: a ~280-byte FHIR Observation
#   insert_script FILE TABLE [COLUMN VALUE]   pgbench script: one Observation INSERT
#   pgbench_run SCRIPT [ROLE]  CHECKPOINT, then pgbench; prints "tps latency_ms"
#   q_as ROLE SQL       like q, connected as ROLE
#   consent_fixture_sql PATIENTS CONSENTED   patients, a provider, consents
#   patient_rows_sql TABLE ROWS PATIENTS     rows of patients p0001, p0002, ...
#   report / summary    output helpers (screen + results file + run-all)

set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
# shellcheck source=../scripts/lib.sh
. "$ROOT/scripts/lib.sh"

RESULTS_DIR="$BENCH_DIR/results"
mkdir -p "$RESULTS_DIR"
RESULTS_FILE="$RESULTS_DIR/${NAME:?set NAME before sourcing common.sh}.txt"

BENCH_CONF="shared_buffers = 1GB
max_wal_size = 4GB
checkpoint_timeout = 30min
synchronous_commit = on
ehrledger.database = 'bench'"

W=""
PORT=${PORT:-}            # a knob of every script: its default is the script's

cleanup() {
    local rc=$?
    if [ -n "$W" ] && [ -d "$W" ]; then
        stop_cluster "$W"
        if [ "${KEEP_WORKDIR:-0}" = 1 ]; then
            echo "work directory kept: $W" >&2
        else
            rm -rf "$W"
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# bench_start PORT [EXTRA_CONF]: a fresh cluster with database "bench" and the
# extension.  The cluster is restarted once after CREATE DATABASE so that the
# background sealer (which connects to ehrledger.database at start) finds it.
bench_start() {
    PORT=$1
    local extra=${2:-}
    W=$(make_workdir "ehrledger-bench-$NAME")
    start_cluster "$W" "$PORT" "$BENCH_CONF
$extra"
    psql_at "$W" "$PORT" postgres -c 'CREATE DATABASE bench'
    stop_cluster "$W"
    start_cluster "$W" "$PORT"
    psql_at "$W" "$PORT" bench -c 'CREATE EXTENSION ehrledger'
}

# q SQL: runs SQL in "bench", prints the unaligned, tuples-only result.
q() {
    psql_at "$W" "$PORT" bench -At -c "$1"
}

# q_as ROLE SQL: like q, connected as ROLE (trust authentication).
q_as() {
    as_pg psql -X -q -h "$W" -p "$PORT" -U "$1" -d bench -v ON_ERROR_STOP=1 -At -c "$2"
}

# Runs a SQL script (stdin) in "bench".
# shellcheck disable=SC2120
qs() {
    psql_at "$W" "$PORT" bench -At "$@"
}

# elapsed SQL: runs the statements in one session (output discarded) and
# prints the seconds they took, from clock_timestamp() deltas.
elapsed() {
    qs <<SQL
SELECT extract(epoch FROM clock_timestamp()) AS t0 \gset
\o /dev/null
$1
\o
SELECT round((extract(epoch FROM clock_timestamp()) - :t0)::numeric, 3);
SQL
}

# resource_expr CLIENT N PATIENT VALUE: a FHIR-like Observation built with
# jsonb_build_object; every argument is an SQL expression.  About 280 bytes
# as text (octet_length(resource::text)); the scripts print the real average.
resource_expr() {
    local c=$1 n=$2 p=$3 v=$4
    cat <<SQL
jsonb_build_object(
  'resourceType', 'Observation',
  'id', 'obs-' || ($c)::text || '-' || ($n)::text,
  'status', 'final',
  'code', jsonb_build_object('coding', jsonb_build_array(jsonb_build_object(
      'system', 'http://loinc.org', 'code', '8867-4'))),
  'subject', jsonb_build_object('reference', 'Patient/' || ($p)::text),
  'effectiveDateTime', date_trunc('second', clock_timestamp()),
  'valueQuantity', jsonb_build_object('value', ($v)::int, 'unit', '/min'))
SQL
}

# insert_script FILE TABLE [COLUMN VALUE]: writes a pgbench script of one
# INSERT per transaction of a random Observation into TABLE, with COLUMN set
# to VALUE (a pgbench expression, e.g. :phase) when given.
insert_script() {
    local file=$1 t=$2 col=${3:+$3, } val=${4:+$4, }
    as_pg tee "$file" >/dev/null <<SQL
\set n random(1, 1000000000)
\set pid random(1, 100000)
\set val random(40, 180)
INSERT INTO $t (${col}patient_id, resource)
VALUES (${val}'patient-' || (:pid)::text,
$(resource_expr :client_id :n :pid :val));
SQL
}

# The observation table of every benchmark: obs_table NAME [CREATED_AT_DEFAULT]
obs_table_sql() {
    local t=$1 def=${2:-now()}
    echo "CREATE TABLE $t (id bigserial PRIMARY KEY, patient_id text NOT NULL,
        resource jsonb NOT NULL, created_at timestamptz NOT NULL DEFAULT $def);"
}

# bulk_insert_sql TABLE ROWS: INSERT ... SELECT generate_series of ROWS rows.
bulk_insert_sql() {
    local t=$1 rows=$2
    echo "INSERT INTO $t (patient_id, resource)
          SELECT 'patient-' || (g % 100000)::text,
                 $(resource_expr 0 g '(g % 100000)' '(60 + g % 60)')
            FROM generate_series(1, $rows) g;"
}

# consent_fixture_sql PATIENTS CONSENTED: SQL (for one session) that
# registers PATIENTS patient actors p0001, p0002, ... (each with its own key
# pair, kept in the temporary table patient_key), a provider actor "dr-a"
# mapped to the login role dr_a, and grants dr-a a consent (scope '*',
# purpose treatment) from each of the first CONSENTED patients, signed with
# the patient's key, as a front desk would.
consent_fixture_sql() {
    local n=$1 consented=$2
    cat <<SQL
CREATE ROLE dr_a LOGIN;
SELECT ehrledger.register_actor('dr-a', 'provider', (SELECT public_key FROM ehrledger.keypair()), 'dr_a');
CREATE TEMP TABLE patient_key AS
SELECT g AS n, 'p' || lpad(g::text, 4, '0') AS patient, k.public_key, k.secret_key
  FROM generate_series(1, $n) g CROSS JOIN LATERAL ehrledger.keypair() k;
SELECT count(ehrledger.register_actor(patient, 'patient', public_key)) FROM patient_key;
SELECT count(ehrledger.grant_consent(patient, 'dr-a', signature =>
           ehrledger.sign(ehrledger.consent_payload(patient, 'dr-a'), secret_key)))
  FROM patient_key WHERE n <= $consented;
SQL
}

# patient_rows_sql TABLE ROWS PATIENTS: inserts ROWS rows (id, patient_id,
# payload) into TABLE, row g for patient 1 + g % PATIENTS (p0001, p0002,
# ...), payload a ~215-byte FHIR Observation as text.
patient_rows_sql() {
    local t=$1 rows=$2 n=$3
    cat <<SQL
INSERT INTO $t (id, patient_id, payload)
SELECT g, p, jsonb_build_object('resourceType', 'Observation', 'id', 'obs-' || g,
           'code', jsonb_build_object('coding', jsonb_build_array(jsonb_build_object(
               'system', 'http://loinc.org', 'code', '8867-4'))),
           'subject', jsonb_build_object('reference', 'Patient/' || p),
           'valueQuantity', jsonb_build_object('value', 60 + g % 60, 'unit', '/min'))::text
  FROM generate_series(1, $rows) g, LATERAL (SELECT 'p' || lpad((1 + g % $n)::text, 4, '0') AS p) x;
SQL
}

# pgbench_run SCRIPT [ROLE]: a CHECKPOINT, then pgbench with the script for
# DURATION seconds (CLIENTS clients, THREADS threads, prepared statements)
# against "bench", connected as ROLE (postgres); prints "tps latency_ms".
# Failed transactions are shown on stderr; the whole output is kept in
# $W/pgbench.out.
pgbench_run() {
    local out
    q 'CHECKPOINT' >/dev/null
    out=$(as_pg pgbench -h "$W" -p "$PORT" -U "${2:-postgres}" -n -c "$CLIENTS" -j "$THREADS" \
        -M prepared -T "$DURATION" -f "$1" bench 2>&1) || {
        echo "$out" >&2
        return 1
    }
    echo "$out" >"$W/pgbench.out"
    if grep -q 'number of failed transactions: [1-9]' <<<"$out"; then
        echo "$out" >&2
    fi
    echo "$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' <<<"$out") $(sed -n 's/^latency average = \([0-9.]*\) ms/\1/p' <<<"$out")"
}

# The number of transactions the last pgbench_run committed.
pgbench_xacts() {
    sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$W/pgbench.out"
}

# wait_reads SINCE N: waits (up to 30 s) until the access log holds N read
# records since SINCE (with access_log_wait off the last ones may still be
# on their way), and prints how many it holds.
wait_reads() {
    local reads=0
    for _ in $(seq 1 30); do
        reads=$(q "SELECT count(*) FROM ehrledger.access_event WHERE action = 'read' AND at >= '$1'")
        [ "$reads" -ge "$2" ] && break
        sleep 1
    done
    echo "$reads"
}

# A header for the results file: when, what, on which machine.
results_header() {
    local commit dirty=""
    commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
    git -C "$ROOT" diff --quiet HEAD -- src sql 2>/dev/null || dirty=" (+uncommitted changes in src/ or sql/)"
    printf '\n=== %s  %s  commit %s%s\n' "$NAME" "$(date -u '+%Y-%m-%d %H:%M:%SZ')" "$commit" "$dirty"
    printf 'host: %s cores, load average %s, %s\n' "$(nproc)" \
        "$(cut -d' ' -f1-3 /proc/loadavg)" "$("$PGBIN/postgres" --version)"
}

# report: copies stdin to the screen and appends it to the results file.
report() {
    tee -a "$RESULTS_FILE"
}

# summary KEY VALUE: one line for run-all.sh's final summary, if it asked.
summary() {
    if [ -n "${BENCH_SUMMARY:-}" ]; then
        printf '%-44s %s\n' "$1" "$2" >>"$BENCH_SUMMARY"
    fi
}

# Floating-point arithmetic for the shell: calc EXPR [DECIMALS] (awk syntax).
calc() {
    awk "BEGIN { printf \"%.${2:-3}f\", $1 }"
}

log() {
    echo "[$NAME $(date '+%H:%M:%S')] $*" >&2
}
