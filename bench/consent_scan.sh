#!/usr/bin/env bash
# A provider's full scan of a consent-protected table against the same scan
# of a plain table, and of a table guarded by a hand-written RLS policy.
#
# Three tables of the same ROWS rows in database "bench" (id, patient_id
# among PATIENTS patients p0001..p1000, a ~220-byte FHIR Observation as
# text):
#   obs_plain  no protection, no row-level security
#   obs_ehr    ehrledger.protect(..., patient_column => 'patient_id'): the
#              read policy calls ehrledger.consent_check() per row
#   obs_naive  plain RLS, the obvious policy: EXISTS (a live row of
#              consents_naive for current_user and the row's patient), with
#              an index on consents_naive (grantee, patient)
# The provider dr-a (login role dr_a, no owner, SELECT granted) holds
# signed consents from the first CONSENTED (500) patients; consents_naive
# holds the same 500.  pgbench -c 1 runs, as dr_a, SELECT count(*),
# sum(length(payload)) over each table in turn, ROUNDS times, one core
# (max_parallel_workers_per_gather = 0, jit = off), ehrledger.access_log_wait
# at its default (on): every scan of obs_ehr waits for its access log record
# (500 patients).  Two more runs per round: obs_plain with WHERE id % 1000
# < 500, which keeps the same 100,000 rows the consents let through (so
# the aggregate does the same work; the full plain scan sums twice as many
# lengths), and obs_ehr with access_log_wait = off, to show what the wait
# costs.
#
# Knobs: DURATION (s per run, 10), ROUNDS (2), ROWS (200000),
#        PATIENTS (1000), CONSENTED (500), PORT (55501).
NAME=consent_scan
. "$(dirname "$0")/common.sh"

DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-2}
ROWS=${ROWS:-200000}
PATIENTS=${PATIENTS:-1000}
CONSENTED=${CONSENTED:-500}
CLIENTS=1
THREADS=1

log "starting cluster on port ${PORT:-55501}"
bench_start "${PORT:-55501}"

log "loading $ROWS rows into each table, $PATIENTS patients, $CONSENTED consents"
qs >/dev/null <<SQL
CREATE TABLE obs_plain (id bigint PRIMARY KEY, patient_id text NOT NULL, payload text NOT NULL);
CREATE TABLE obs_ehr (LIKE obs_plain INCLUDING ALL);
CREATE TABLE obs_naive (LIKE obs_plain INCLUDING ALL);
-- Protected while empty, so that the load is not followed by protect()'s
-- UPDATE of every row (which would leave obs_ehr twice as large).
SELECT ehrledger.protect('obs_ehr', patient_column => 'patient_id');
$(patient_rows_sql obs_plain "$ROWS" "$PATIENTS")
INSERT INTO obs_ehr (id, patient_id, payload) SELECT * FROM obs_plain;
INSERT INTO obs_naive SELECT * FROM obs_plain;

$(consent_fixture_sql "$PATIENTS" "$CONSENTED")

-- The hand-written peer: the same consents in an ordinary table.
CREATE TABLE consents_naive (grantee name NOT NULL, patient text NOT NULL, valid_until timestamptz);
INSERT INTO consents_naive SELECT 'dr_a', patient, valid_until
  FROM ehrledger.consents WHERE grantee = 'dr-a' AND active;
CREATE INDEX ON consents_naive (grantee, patient);
ALTER TABLE obs_naive ENABLE ROW LEVEL SECURITY;
CREATE POLICY naive_read ON obs_naive FOR SELECT
    USING (EXISTS (SELECT 1 FROM consents_naive c
                    WHERE c.grantee = current_user AND c.patient = patient_id
                      AND (c.valid_until IS NULL OR c.valid_until > now())));

GRANT SELECT ON obs_plain, obs_ehr, obs_naive, consents_naive TO dr_a;
ALTER ROLE dr_a SET max_parallel_workers_per_gather = 0;
ALTER ROLE dr_a SET jit = off;
SELECT ehrledger.seal();
VACUUM ANALYZE obs_plain;
VACUUM ANALYZE obs_ehr;
VACUUM ANALYZE obs_naive;
VACUUM ANALYZE consents_naive;
SQL

# What dr_a sees: all rows of obs_plain, the consented patients' rows of the
# other two, and the same ones in both.
declare -A SEEN
for t in plain ehr naive; do
    SEEN[$t]=$(q_as dr_a "SELECT count(*) || ' rows, ' || count(DISTINCT patient_id) || ' patients, sum(length) '
                            || sum(length(payload)) FROM obs_$t")
done
differ=$(q_as dr_a "SELECT count(*) FROM (SELECT id FROM obs_ehr) e FULL JOIN (SELECT id FROM obs_naive) n
                     USING (id) WHERE e.id IS NULL OR n.id IS NULL")
plans=$(for t in ehr naive; do
    q_as dr_a "EXPLAIN (COSTS OFF) SELECT count(*), sum(length(payload)) FROM obs_$t" |
        sed 's/^ *//; s/^-> *//' | paste -sd';' | sed "s/^/  obs_$t: /"
done)
avg_size=$(q "SELECT round(avg(octet_length(payload))) FROM obs_plain")
sizes=$(q "SELECT string_agg(t || ' ' || pg_size_pretty(pg_relation_size(t)), ', ')
             FROM unnest(ARRAY['obs_plain', 'obs_ehr', 'obs_naive']) t")

for t in plain ehr naive; do
    echo "SELECT count(*), sum(length(payload)) FROM obs_$t;" | as_pg tee "$W/scan_$t.sql" >/dev/null
done
# The plain table's rows of the consented patients (1 + id % PATIENTS <=
# CONSENTED), and the scan of obs_ehr again, run with access_log_wait off.
echo "SELECT count(*), sum(length(payload)) FROM obs_plain WHERE id % $PATIENTS < $CONSENTED;" |
    as_pg tee "$W/scan_half.sql" >/dev/null
as_pg cp "$W/scan_ehr.sql" "$W/scan_nowait.sql"
half_seen=$(q_as dr_a "SELECT count(*) || ' rows, sum(length) ' || sum(length(payload))
                         FROM obs_plain WHERE id % $PATIENTS < $CONSENTED")

declare -A LAT
t0=$(q "SELECT clock_timestamp()")
xacts=0
for r in $(seq 1 "$ROUNDS"); do
    for t in plain half ehr naive nowait; do
        log "round $r/$ROUNDS: $t (${DURATION}s)"
        if [ "$t" = nowait ]; then
            q "ALTER ROLE dr_a SET ehrledger.access_log_wait = off" >/dev/null
        fi
        res=$(pgbench_run "$W/scan_$t.sql" dr_a)
        q "ALTER ROLE dr_a RESET ehrledger.access_log_wait" >/dev/null
        read -r _ "LAT[$t,$r]" <<<"$res"
        if [ "$t" = ehr ] || [ "$t" = nowait ]; then
            xacts=$((xacts + $(pgbench_xacts)))
        fi
        log "  ${LAT[$t,$r]} ms"
    done
done
# Each scan of obs_ehr is one read record naming the CONSENTED patients.
reads=$(wait_reads "$t0" "$xacts")
events=$(q "SELECT count(*) || ' records, ' || coalesce(sum(cardinality(patients)), 0) || ' patients named'
              FROM ehrledger.access_event WHERE action = 'read' AND at >= '$t0'")

# ratio NAME OVER: mean over the rounds of LAT[NAME,r] / LAT[OVER,r].
ratio() {
    local sum=0 r
    for r in $(seq 1 "$ROUNDS"); do
        sum=$(calc "$sum + ${LAT[$1,$r]} / ${LAT[$2,$r]}" 6)
    done
    calc "$sum / $ROUNDS"
}

{
    results_header
    echo "pgbench -n -c 1 -M prepared -T $DURATION as dr_a (provider, not owner), one" \
         "SELECT count(*), sum(length(payload)) per transaction; $ROWS rows per table," \
         "$PATIENTS patients, consents from $CONSENTED; max_parallel_workers_per_gather=0, jit=off"
    echo "avg payload $avg_size bytes; table sizes: $sizes"
    for t in plain ehr naive; do echo "dr_a sees in obs_$t: ${SEEN[$t]}"; done
    echo "dr_a sees in obs_plain WHERE id % $PATIENTS < $CONSENTED (half): $half_seen"
    echo "rows seen in only one of obs_ehr, obs_naive: $differ"
    echo "plans as dr_a:"
    echo "$plans"
    echo "access log during the runs: $events, for $xacts scans of obs_ehr"
    echo
    printf '%-6s %9s %9s %9s %9s %10s\n' round plain_ms half_ms ehr_ms naive_ms nowait_ms
    for r in $(seq 1 "$ROUNDS"); do
        printf '%-6s %9s %9s %9s %9s %10s\n' "$r" "${LAT[plain,$r]}" "${LAT[half,$r]}" \
            "${LAT[ehr,$r]}" "${LAT[naive,$r]}" "${LAT[nowait,$r]}"
    done
    echo "(average latency of one scan, ms; ehr: access_log_wait=on, the default;" \
         "nowait: obs_ehr with access_log_wait=off; half: obs_plain, consented patients' rows only)"
    echo
    EHR=$(ratio ehr plain)
    NAIVE=$(ratio naive plain)
    printf '%-34s %6s\n' "ehr/plain (target <= 2.0)" "$EHR" "naive/plain" "$NAIVE" \
        "ehr/half" "$(ratio ehr half)" "naive/half" "$(ratio naive half)" \
        "nowait/plain" "$(ratio nowait plain)"
    echo "(means of the per-round ratios of scan latencies)"
    summary "consent_scan: protected/plain scan time" "$EHR"
    summary "consent_scan: naive RLS/plain scan time" "$NAIVE"
    if [ "$reads" -ne "$xacts" ]; then
        echo "WARNING: $reads read records for $xacts scans"
    fi
} | report
