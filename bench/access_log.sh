#!/usr/bin/env bash
# What recording reads in the access log costs a read-heavy workload, next
# to pgaudit, and the same reads on a hot standby.
#
# One table obs of ROWS rows in database "bench" (id, patient_id among
# PATIENTS patients p0001..p1000, a ~215-byte FHIR Observation as text),
# indexed on patient_id and protected with patient_column => 'patient_id'.
# The provider dr-a (login role dr_a, SELECT granted) holds signed consents
# from the first CONSENTED (500) patients.  pgbench, 8 clients, prepared
# statements, one statement per transaction: all rows of one consented
# patient chosen at random (SELECT * FROM obs WHERE patient_id = $1, 200
# rows by default), run as
#   owner    postgres, the table's owner: row-level security is bypassed
#            and nothing is logged
#   pgaudit  the owner again, with pgaudit.log = 'read' (ALTER ROLE SET):
#            one AUDIT line per statement in the server log, neither waited
#            for nor tamper-evident (pgaudit is preloaded for every mode)
#   wait     dr_a with ehrledger.access_log_wait = on (the default): every
#            statement writes its record to the WAL and returns once the
#            WAL is flushed up to it
#   nowait   dr_a with access_log_wait = off (ALTER ROLE dr_a SET, by the
#            superuser): the record is written, its flush not waited for
#   standby  dr_a (waiting) on a streaming standby of the cluster
#            (pg_basebackup -R, port PORT+1): every read is recorded in the
#            primary's access log before the standby returns it
# in turn, ROUNDS times, short runs so that the machine's changing load
# falls on every mode alike.  Afterwards the read records of
# ehrledger.access_event are counted against the statements dr_a ran, and
# the bytes the access log grew by (table, TOAST and indexes) are divided
# by them.
#
# Knobs: DURATION (s per run, 8), ROUNDS (4), ROWS (200000),
#        PATIENTS (1000), CONSENTED (500), CLIENTS (8), THREADS (2),
#        PORT (55502; the standby PORT+1), STANDBY (1; 0: no standby run),
#        PGAUDIT (the pgaudit library; found in pg_config --pkglibdir or
#        the system's PostgreSQL 15, installed by scripts/install-deps.sh),
#        COMMIT_DELAY (0: PostgreSQL's default; otherwise commit_delay in
#        microseconds, with commit_siblings = 0, group commit for readers).
NAME=access_log
. "$(dirname "$0")/common.sh"

DURATION=${DURATION:-8}
ROUNDS=${ROUNDS:-4}
ROWS=${ROWS:-200000}
PATIENTS=${PATIENTS:-1000}
CONSENTED=${CONSENTED:-500}
CLIENTS=${CLIENTS:-8}
THREADS=${THREADS:-2}
STANDBY=${STANDBY:-1}
COMMIT_DELAY=${COMMIT_DELAY:-0}
[ "$PATIENTS" -gt "$CONSENTED" ] || { echo "PATIENTS must exceed CONSENTED" >&2; exit 2; }

if [ -z "${PGAUDIT:-}" ]; then
    for lib in "$("$PG_CONFIG" --pkglibdir)/pgaudit.so" /usr/lib/postgresql/15/lib/pgaudit.so; do
        [ -f "$lib" ] && { PGAUDIT=${lib%.so}; break; }
    done
fi
[ -n "${PGAUDIT:-}" ] || { echo "pgaudit not found: run scripts/install-deps.sh (postgresql-15-pgaudit)" >&2; exit 2; }

MODES="owner pgaudit wait nowait"
[ "$STANDBY" = 1 ] && MODES="$MODES standby"
SPORT=$(( ${PORT:-55502} + 1 ))

log "starting cluster on port ${PORT:-55502} (pgaudit: $PGAUDIT)"
bench_start "${PORT:-55502}" "shared_preload_libraries = 'ehrledger, $PGAUDIT'
pgaudit.log = 'none'
track_wal_io_timing = on
commit_delay = $COMMIT_DELAY
$([ "$COMMIT_DELAY" = 0 ] || echo 'commit_siblings = 0')"
trap 'rc=$?; [ -n "$W" ] && stop_cluster "$W/standby"; (exit $rc); cleanup' EXIT

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

if [ "$STANDBY" = 1 ]; then
    log "starting a streaming standby on port $SPORT"
    as_pg mkdir -p "$W/standby"
    as_pg pg_basebackup -D "$W/standby/data" -R -X stream -c fast -h "$W" -p "$PORT" -U postgres
    as_pg tee -a "$W/standby/data/postgresql.conf" >/dev/null <<CONF
port = $SPORT
cluster_name = 'bench-standby'
CONF
    as_pg pg_ctl -D "$W/standby/data" -l "$W/standby/server.log" -w start >/dev/null
fi

as_pg tee "$W/read.sql" >/dev/null <<SQL
\set i random(1, $CONSENTED)
SELECT * FROM obs WHERE patient_id = 'p' || lpad(:i::text, 4, '0');
SQL

plan=$(q_as dr_a "EXPLAIN (COSTS OFF) SELECT * FROM obs WHERE patient_id = 'p0001'" |
    sed 's/^ *//; s/^-> *//' | paste -sd';')
seen=$(q_as dr_a "SELECT count(*) || ' rows, ' || count(DISTINCT patient_id) || ' patients' FROM obs")
per_patient=$(q_as dr_a "SELECT count(*) FROM obs WHERE patient_id = 'p0001'")
if [ "$STANDBY" = 1 ]; then
    # The standby has replayed everything (and a read there works).
    for _ in $(seq 1 60); do
        [ "$(as_pg psql -X -h "$W" -p "$SPORT" -U dr_a -d bench -At -c \
             "SELECT count(*) FROM obs WHERE patient_id = 'p0001'" 2>/dev/null)" = "$per_patient" ] && break
        sleep 1
    done
fi
t0=$(q "SELECT clock_timestamp()")
size0=$(q "SELECT pg_total_relation_size('ehrledger.access_event')")
reads0=$(q "SELECT count(*) FROM ehrledger.access_event")

declare -A TPS LAT
xacts=0
standby_xacts=0
audit_lines=0
audit_bytes=0
syncs=0
sync_ms=0
wait_xacts=0
for r in $(seq 1 "$ROUNDS"); do
    for v in $MODES; do
        log "round $r/$ROUNDS: $v (${DURATION}s)"
        role=dr_a
        port=$PORT
        case $v in
            owner) role=postgres ;;
            pgaudit) role=postgres; q "ALTER ROLE postgres SET pgaudit.log = 'read'" >/dev/null ;;
            nowait) q "ALTER ROLE dr_a SET ehrledger.access_log_wait = off" >/dev/null ;;
            standby) port=$SPORT ;;
        esac
        log0=$(stat -c %s "$W/server.log")
        [ "$v" = wait ] && q "SELECT pg_stat_reset_shared('wal')" >/dev/null
        res=$(PORT=$port pgbench_run "$W/read.sql" "$role")
        q "ALTER ROLE dr_a RESET ehrledger.access_log_wait" >/dev/null
        q "ALTER ROLE postgres RESET pgaudit.log" >/dev/null
        read -r "TPS[$v,$r]" "LAT[$v,$r]" <<<"$res"
        case $v in
            wait | nowait) xacts=$((xacts + $(pgbench_xacts))) ;;
            standby) standby_xacts=$((standby_xacts + $(pgbench_xacts))) ;;
            pgaudit)
                audit_lines=$((audit_lines + $(tail -c +$((log0 + 1)) "$W/server.log" | grep -c 'AUDIT: SESSION,')))
                audit_bytes=$((audit_bytes + $(tail -c +$((log0 + 1)) "$W/server.log" | grep 'AUDIT: SESSION,' | wc -c)))
                audit_xacts=$(( ${audit_xacts:-0} + $(pgbench_xacts) )) ;;
        esac
        if [ "$v" = wait ]; then
            wait_xacts=$((wait_xacts + $(pgbench_xacts)))
            read -r s ms <<<"$(q "SELECT wal_sync, round(wal_sync_time::numeric) FROM pg_stat_wal" | tr '|' ' ')"
            syncs=$((syncs + s))
            sync_ms=$((sync_ms + ms))
        fi
        log "  tps ${TPS[$v,$r]}"
    done
done

# Every statement dr_a ran is one read record naming one patient; a query
# on the access log waits for the writer, so nothing is still on its way.
all_reads=$((xacts + standby_xacts))
reads=$(wait_reads "$t0" "$all_reads")
on_standby=$(q "SELECT count(*) FROM ehrledger.access_event WHERE action = 'read' AND at >= '$t0'
                   AND detail = 'read on standby bench-standby'")
run_reads=$(q "SELECT count(*) || ' rows, ' || coalesce(sum(cardinality(patients)), 0) || ' patients named, '
                      || count(DISTINCT patients[1]) || ' distinct, by ' || coalesce(string_agg(DISTINCT pg_role, ','), '-')
                 FROM ehrledger.access_event WHERE action = 'read' AND at >= '$t0'")
owner_reads=$(q "SELECT count(*) FROM ehrledger.access_event WHERE pg_role = 'postgres' AND action = 'read'")
added=$(( $(q "SELECT count(*) FROM ehrledger.access_event") - reads0 ))
grown=$(( $(q "SELECT pg_total_relation_size('ehrledger.access_event')") - size0 ))
row_bytes=$(q "SELECT round(avg(pg_column_size(e.*))) FROM ehrledger.access_event e WHERE action = 'read' AND at >= '$t0'")
load=$(cut -d' ' -f1-3 /proc/loadavg)

# ratio V BASE: mean over the rounds of TPS[V,r] / TPS[BASE,r].
ratio() {
    local sum=0 r
    for r in $(seq 1 "$ROUNDS"); do
        sum=$(calc "$sum + ${TPS[$1,$r]} / ${TPS[$2,$r]}" 6)
    done
    calc "$sum / $ROUNDS"
}

{
    results_header
    echo "pgbench -n -c $CLIENTS -j $THREADS -M prepared -T $DURATION, one SELECT * of one consented" \
         "patient's rows ($per_patient) by index per transaction; $ROWS rows, $PATIENTS patients," \
         "consents from $CONSENTED; synchronous_commit=on, seal_interval=1000ms, commit_delay=$COMMIT_DELAY;" \
         "modes alternate" \
         "(${MODES// /, }), $ROUNDS rounds; load average at the end $load"
    echo "dr_a sees: $seen; plan as dr_a: $plan"
    echo "read records of the runs: $run_reads; dr_a ran $all_reads statements" \
         "($standby_xacts on the standby, recorded there: $on_standby); reads recorded for postgres (owner): $owner_reads"
    echo
    printf '%-6s' round
    for v in $MODES; do printf ' %10s' "${v}_tps"; done
    for v in $MODES; do printf ' %10s' "${v}_ms"; done
    echo
    for r in $(seq 1 "$ROUNDS"); do
        printf '%-6s' "$r"
        for v in $MODES; do printf ' %10.1f' "${TPS[$v,$r]}"; done
        for v in $MODES; do printf ' %10s' "${LAT[$v,$r]}"; done
        echo
    done
    echo "(latency: average per transaction, ms)"
    echo
    PGA=$(ratio pgaudit owner)
    WAIT=$(ratio wait owner)
    NOWAIT=$(ratio nowait owner)
    printf '%-52s %6s\n' "pgaudit/owner tps (pgaudit.log = read)" "$PGA" \
        "wait/owner tps (ehrledger, access_log_wait = on)" "$WAIT" \
        "nowait/owner tps (ehrledger, access_log_wait = off)" "$NOWAIT"
    if [ "$STANDBY" = 1 ]; then
        STBY=$(ratio standby wait)
        printf '%-52s %6s\n' "standby/primary tps (dr_a, waiting, same reads)" "$STBY"
    fi
    echo "(means of the per-round ratios)"
    echo
    echo "access log: $added rows, $grown bytes more (table, TOAST, indexes): $((grown / (added > 0 ? added : 1)))" \
         "bytes per recorded read (the row alone: $row_bytes bytes)"
    echo "pgaudit: $audit_lines AUDIT lines for ${audit_xacts:-0} statements, $((audit_bytes / (audit_lines > 0 ? audit_lines : 1))) bytes each in the server log"
    echo "waiting reads: $wait_xacts statements, $syncs WAL flushes ($(calc "$wait_xacts / ($syncs > 0 ? $syncs : 1)" 1) reads per flush)," \
         "$(calc "$sync_ms / ($syncs > 0 ? $syncs : 1)" 2) ms per flush"
    summary "access_log: pgaudit/owner read tps" "$PGA"
    summary "access_log: wait/owner read tps" "$WAIT"
    summary "access_log: nowait/owner read tps" "$NOWAIT"
    [ "$STANDBY" = 1 ] && summary "access_log: standby/primary read tps" "$STBY"
    summary "access_log: bytes per recorded read" "$((grown / (added > 0 ? added : 1)))"
    if [ "$reads" -ne "$all_reads" ]; then
        echo "WARNING: $reads read records for $all_reads statements"
    fi
} | report
