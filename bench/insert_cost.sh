#!/usr/bin/env bash
# Instructions one INSERT costs the server, counted by valgrind's callgrind:
# unlike insert.sh's transactions per second, the count does not move with
# the machine's load, its other tenants or its disk, so it shows where a
# protected insert's extra cost goes and how large a share of it a change
# removes.  Three tables of insert.sh's shape, each in a fresh cluster's
# database "bench":
#   plain    no protection
#   bare     the three ledger columns, filled by defaults (ledger_seq from
#            the ledger's sequence, a constant salt, a constant hash)
#   cols     the same and the unique btree on ledger_seq: the storage a
#            protected table has, without its trigger
#   ledger   ehrledger.protect()
# Each table gets N1 and then N2 prepared INSERTs of an Observation like
# insert.sh's, one transaction each, in a single-user backend (postgres
# --single, fsync off) under callgrind; the instructions per insert are
# (count at N2 - count at N1) / (N2 - N1), which leaves out the start and
# the end of the backend.  Sealing is not counted (single-user mode runs no
# sealer): seal.sh times it.
#
# Valgrind does not run the CPU's SHA extensions, so OpenSSL takes a
# generic path there, about ten times longer than on hardware that has
# them; "ledger - sha" leaves the SHA-256 calls out.
#
# Needs valgrind (apt-get install valgrind).  Knobs: N1 (200), N2 (1200),
# PORT (54349).
NAME=insert_cost
. "$(dirname "$0")/common.sh"

N1=${N1:-200}
N2=${N2:-1200}
command -v valgrind >/dev/null && command -v callgrind_annotate >/dev/null || {
    echo "insert_cost.sh needs valgrind (apt-get install valgrind)" >&2
    exit 1
}
[ "$N2" -gt "$N1" ] || { echo "N2 must exceed N1" >&2; exit 1; }

log "starting cluster on port ${PORT:-54349}"
bench_start "${PORT:-54349}"
qs >/dev/null <<SQL
$(obs_table_sql obs_plain)
$(obs_table_sql obs_bare)
ALTER TABLE obs_bare
    ADD COLUMN ledger_seq bigint NOT NULL DEFAULT nextval('ehrledger.ledger_seq'),
    ADD COLUMN ledger_hash bytea NOT NULL DEFAULT sha256('\x00'),
    ADD COLUMN ledger_salt bytea DEFAULT '\x00112233445566778899aabbccddeeff';
CREATE TABLE obs_cols (LIKE obs_bare INCLUDING ALL);
CREATE UNIQUE INDEX ON obs_cols (ledger_seq);
$(obs_table_sql obs_ledger)
SELECT ehrledger.protect('obs_ledger');
SQL
stop_cluster "$W"

# One statement a line, as the single-user backend reads them.
statements() {
    local t=$1 n=$2 i
    echo "PREPARE ins(int, int, int) AS INSERT INTO $t (patient_id, resource) VALUES ('patient-' || (\$2)::text, $(resource_expr 1 '$1' '$2' '$3' | tr -s '\n ' ' '));"
    for i in $(seq 1 "$n"); do
        echo "EXECUTE ins($i, $(((i * 7919) % 100000 + 1)), $((40 + i % 141)));"
    done
}

# count TABLE N: callgrind's inclusive counts of the backend that inserts N rows.
count() {
    local t=$1 n=$2 out="$W/cg.$1.$2"
    statements "$t" "$n" | as_pg tee "$W/in.sql" >/dev/null
    as_pg valgrind --tool=callgrind --callgrind-out-file="$out" \
        "$PGBIN/postgres" --single -F -D "$W/data" bench <"$W/in.sql" >"$W/single.log" 2>&1
    if grep -q 'ERROR' "$W/single.log"; then
        grep -m3 'ERROR' "$W/single.log" >&2
        exit 1
    fi
    callgrind_annotate --inclusive=yes --threshold=100 "$out" 2>/dev/null >"$out.txt"
}

# cost TABLE FUNCTION: instructions per insert in FUNCTION (inclusive), or
# in the whole backend for TOTAL.
cost() {
    local t=$1 f=$2 a b
    if [ "$f" = TOTAL ]; then
        a=$(awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }' "$W/cg.$t.$N1.txt")
        b=$(awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }' "$W/cg.$t.$N2.txt")
    else
        a=$(fn_count "$W/cg.$t.$N1.txt" "$f")
        b=$(fn_count "$W/cg.$t.$N2.txt" "$f")
    fi
    calc "(${b:-0} - ${a:-0}) / ($N2 - $N1)" 0
}

# fn_count FILE FUNCTION: a function's inclusive count in callgrind_annotate's output.
fn_count() {
    awk -v f="$2" '$0 !~ /=>/ {
        line = $0
        if (!sub(/^ *[0-9,]+ +\([ 0-9.]+%\) +/, "", line)) next
        sub(/ \[.*/, "", line); sub(/.*:/, "", line)
        if (line == f) { n = $1; gsub(",", "", n); if (n + 0 > best) best = n + 0 }
    } END { print best + 0 }' "$1"
}

for t in obs_plain obs_bare obs_cols obs_ledger; do
    for n in "$N1" "$N2"; do
        log "$t: $n inserts under callgrind"
        count "$t" "$n"
    done
done

{
    results_header
    echo "instructions per INSERT (single-user backend under callgrind, $N1 and $N2 inserts, sealing not counted)"
    echo
    printf '%-34s %12s %12s %12s %12s\n' "" plain bare cols ledger
    for f in TOTAL standard_ExecutorStart btinsert nextval_internal ExecBRInsertTriggers lc_sha256_parts; do
        printf '%-34s %12s %12s %12s %12s\n' "$f" "$(cost obs_plain "$f")" "$(cost obs_bare "$f")" \
            "$(cost obs_cols "$f")" "$(cost obs_ledger "$f")"
    done
    plain=$(cost obs_plain TOTAL)
    bare=$(cost obs_bare TOTAL)
    cols=$(cost obs_cols TOTAL)
    ledger=$(cost obs_ledger TOTAL)
    sha=$(cost obs_ledger lc_sha256_parts)
    echo
    printf '%-34s %12s\n' "plain / bare" "$(calc "$plain / $bare")"
    printf '%-34s %12s\n' "plain / cols" "$(calc "$plain / $cols")"
    printf '%-34s %12s\n' "plain / ledger" "$(calc "$plain / $ledger")"
    printf '%-34s %12s\n' "plain / (ledger - sha)" "$(calc "$plain / ($ledger - $sha)")"
    echo "(btinsert: both btrees; ExecBRInsertTriggers: the ledger's trigger, its SHA-256 included)"
    summary "insert_cost: plain/ledger instructions (no sha)" "$(calc "$plain / ($ledger - $sha)")"
} | report
