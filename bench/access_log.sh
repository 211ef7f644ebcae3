#!/usr/bin/env bash
# What recording reads in the access log costs a read-heavy workload.
#
# One table obs of ROWS rows in database "bench" (id, patient_id among
# PATIENTS patients p0001..p1000, a ~215-byte FHIR Observation as text),
# indexed on patient_id and protected with patient_column => 'patient_id'.
# The provider dr-a (login role dr_a, SELECT granted) holds signed consents
# from the first CONSENTED (500) patients.  pgbench, 8 clients, prepared
# statements, one statement per transaction: all rows of one consented
# patient chosen at random (SELECT * FROM obs WHERE patient_id = $1, 200
# rows by default), run as
#   owner   postgres, the table's owner: row-level security is bypassed and
#           nothing is logged
#   wait    dr_a with ehrledger.access_log_wait = on (the default): every
#           statement hands a record to the access log writer and waits
#           until it is committed
#   nowait  dr_a with access_log_wait = off (ALTER ROLE dr_a SET, by the
#           superuser): the record is handed over, not waited for
#   denied  dr_a (access_log_wait on) reading a patient who gave no
#           consent: the same index scan and consent check of every row,
#           but no row passes, so nothing is returned or logged; what the
#           consent check costs without the access log
# in turn, ROUNDS times.  Afterwards, once the writer has caught up, the
# read records of ehrledger.access_event are counted against the
# transactions dr_a ran.
#
# Knobs: DURATION (s per run, 15), ROUNDS (2), ROWS (200000),
#        PATIENTS (1000), CONSENTED (500), CLIENTS (8), THREADS (2),
#        PORT (55502).
NAME=access_log
. "$(dirname "$0")/common.sh"

DURATION=${DURATION:-15}
ROUNDS=${ROUNDS:-2}
ROWS=${ROWS:-200000}
PATIENTS=${PATIENTS:-1000}
CONSENTED=${CONSENTED:-500}
CLIENTS=${CLIENTS:-8}
THREADS=${THREADS:-2}
[ "$PATIENTS" -gt "$CONSENTED" ] || { echo "PATIENTS must exceed CONSENTED" >&2; exit 2; }

log "starting cluster on port ${PORT:-55502}"
bench_start "${PORT:-55502}"

log "loading $ROWS rows, $PATIENTS patients, $CONSENTED consents"
qs >/dev/null <<SQL
CREATE TABLE obs (id bigint PRIMARY KEY, patient_id text NOT NULL, payload text NOT NULL);
CREATE INDEX obs_patient ON obs (patient_id);
SELECT ehrledger.protect('obs', patient_column => 'patient_id');
$(patient_rows_sql obs "$ROWS" "$PATIENTS")
$(consent_fixture_sql "$PATIENTS" "$CONSENTED")
GRANT SELECT ON obs TO dr_a;
SELECT ehrledger.seal();
VACUUM ANALYZE obs;
SQL

as_pg tee "$W/read.sql" >/dev/null <<SQL
\set i random(1, $CONSENTED)
SELECT * FROM obs WHERE patient_id = 'p' || lpad(:i::text, 4, '0');
SQL
as_pg tee "$W/denied.sql" >/dev/null <<SQL
\set i random($((CONSENTED + 1)), $PATIENTS)
SELECT * FROM obs WHERE patient_id = 'p' || lpad(:i::text, 4, '0');
SQL

plan=$(q_as dr_a "EXPLAIN (COSTS OFF) SELECT * FROM obs WHERE patient_id = 'p0001'" |
    sed 's/^ *//; s/^-> *//' | paste -sd';')
seen=$(q_as dr_a "SELECT count(*) || ' rows, ' || count(DISTINCT patient_id) || ' patients' FROM obs")
per_patient=$(q_as dr_a "SELECT count(*) FROM obs WHERE patient_id = 'p0001'")
denied_rows=$(q_as dr_a "SELECT count(*) FROM obs WHERE patient_id = '$(printf 'p%04d' "$PATIENTS")'")
t0=$(q "SELECT clock_timestamp()")

declare -A TPS LAT
xacts=0
for r in $(seq 1 "$ROUNDS"); do
    for v in owner wait nowait denied; do
        log "round $r/$ROUNDS: $v (${DURATION}s)"
        role=dr_a
        case $v in
            owner) role=postgres ;;
            nowait) q "ALTER ROLE dr_a SET ehrledger.access_log_wait = off" >/dev/null ;;
        esac
        log "  as $role, access_log_wait $(q_as "$role" 'SHOW ehrledger.access_log_wait')"
        script="read"
        [ "$v" = denied ] && script=denied
        res=$(pgbench_run "$W/$script.sql" "$role")
        q "ALTER ROLE dr_a RESET ehrledger.access_log_wait" >/dev/null
        read -r "TPS[$v,$r]" "LAT[$v,$r]" <<<"$res"
        if [ "$v" = wait ] || [ "$v" = nowait ]; then
            xacts=$((xacts + $(pgbench_xacts)))
        fi
        log "  tps ${TPS[$v,$r]}"
    done
done

# Every statement dr_a ran is one read record naming one patient; with
# access_log_wait off the last ones may still be on their way.
reads=$(wait_reads "$t0" "$xacts")
log_rows=$(q "SELECT count(*) || ' rows, ' || sum(cardinality(patients)) || ' patients named'
                FROM ehrledger.access_event")
run_reads=$(q "SELECT count(*) || ' rows, ' || coalesce(sum(cardinality(patients)), 0) || ' patients named, '
                      || count(DISTINCT patients[1]) || ' distinct, by ' || coalesce(string_agg(DISTINCT pg_role, ','), '-')
                 FROM ehrledger.access_event WHERE action = 'read' AND at >= '$t0'")
owner_reads=$(q "SELECT count(*) FROM ehrledger.access_event WHERE pg_role = 'postgres' AND action = 'read'")

# ratio V: mean over the rounds of TPS[V,r] / TPS[owner,r].
ratio() {
    local sum=0 r
    for r in $(seq 1 "$ROUNDS"); do
        sum=$(calc "$sum + ${TPS[$1,$r]} / ${TPS[owner,$r]}" 6)
    done
    calc "$sum / $ROUNDS"
}

{
    results_header
    echo "pgbench -n -c $CLIENTS -j $THREADS -M prepared -T $DURATION, one SELECT * of one consented" \
         "patient's rows ($per_patient) by index per transaction; $ROWS rows, $PATIENTS patients," \
         "consents from $CONSENTED; synchronous_commit=on, seal_interval=1000ms"
    echo "dr_a sees: $seen ($denied_rows of patient $(printf 'p%04d' "$PATIENTS")); plan as dr_a: $plan"
    echo "access_event after the runs: $log_rows (grants and the checks above included)"
    echo "read records of the runs: $run_reads; dr_a ran $xacts statements;" \
         "reads recorded for postgres (owner): $owner_reads"
    echo
    printf '%-6s %10s %9s %10s %10s %9s %8s %10s %10s\n' round owner_tps wait_tps nowait_tps \
        denied_tps owner_ms wait_ms nowait_ms denied_ms
    for r in $(seq 1 "$ROUNDS"); do
        printf '%-6s %10.1f %9.1f %10.1f %10.1f %9s %8s %10s %10s\n' "$r" "${TPS[owner,$r]}" \
            "${TPS[wait,$r]}" "${TPS[nowait,$r]}" "${TPS[denied,$r]}" "${LAT[owner,$r]}" \
            "${LAT[wait,$r]}" "${LAT[nowait,$r]}" "${LAT[denied,$r]}"
    done
    echo "(latency: average per transaction, ms)"
    echo
    WAIT=$(ratio wait)
    NOWAIT=$(ratio nowait)
    printf '%-44s %6s\n' "wait/owner tps (b/a, access_log_wait=on)" "$WAIT" \
        "nowait/owner tps (c/a, access_log_wait=off)" "$NOWAIT" \
        "denied/owner tps (consent check, no log)" "$(ratio denied)"
    echo "(means of the per-round ratios)"
    summary "access_log: wait/owner read tps" "$WAIT"
    summary "access_log: nowait/owner read tps" "$NOWAIT"
    if [ "$reads" -ne "$xacts" ]; then
        echo "WARNING: $reads read records for $xacts statements"
    fi
} | report
