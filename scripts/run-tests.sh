#!/usr/bin/env bash
# Runs every test suite of ehrledger on throwaway clusters owned by the
# postgres user, then prints one line "total: N passed, N failed".
#
#   pg_regress        sql/ + expected/         user-visible behaviour
#   isolation         test/isolation/          races between sessions
#   pgTAP (pg_prove)  test/pgtap/              the SQL API, assertion by assertion
#   TAP (prove)       test/t/                  crashes, restarts, the sealer
#   FHIR              test/fhir/               FHIR output through the R4 validators
#
# Assumes the extension is built and installed (make test does both).
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ROOT=$(pwd)
# Ports: BASE (pg_regress), +1 isolation, +2 pgTAP, +4 FHIR; TAP tests pick
# their own. Set EHRLEDGER_TEST_PORT to run two checkouts side by side.
BASE=${EHRLEDGER_TEST_PORT:-54370}

W=$(make_workdir ehrledger-test)
tar -cf - --exclude=node_modules sql expected test demo | tar -xf - -C "$W"
[ "$(id -u)" -eq 0 ] && chown -R postgres: "$W"

total_passed=0
total_failed=0
summary=()
failures=()

record() {    # record SUITE PASSED FAILED
    total_passed=$((total_passed + $2))
    total_failed=$((total_failed + $3))
    summary+=("$(printf '%-12s %5d passed, %d failed' "$1" "$2" "$3")")
}

# pg_regress-style output: one "... ok" or "... FAILED" line per test.
count_regress() {    # count_regress SUITE LOG EXIT
    local ok bad
    ok=$(grep -cE '\.\.\. ok|^ok [0-9]+ ' "$2")
    bad=$(grep -cE '\.\.\. FAILED|\.\.\. failed|^not ok [0-9]+ ' "$2")
    if [ "$3" -ne 0 ] && [ "$bad" -eq 0 ]; then bad=1; fi
    record "$1" "$ok" "$bad"
}

# prove-style output: "Files=F, Tests=T" and "Failed X/Y subtests".
count_prove() {    # count_prove SUITE LOG EXIT
    local tests bad
    tests=$(grep -oE 'Tests=[0-9]+' "$2" | tail -1 | cut -d= -f2)
    tests=${tests:-0}
    bad=$(grep -oE 'Failed [0-9]+/[0-9]+ subtests' "$2" | awk '{split($2,a,"/"); s+=a[1]} END {print s+0}')
    if [ "$3" -ne 0 ] && [ "$bad" -eq 0 ]; then bad=1; fi
    record "$1" $(( tests > bad ? tests - bad : 0 )) "$bad"
    # Name what failed, so that the tail of a CI log says where to look.
    if [ "$bad" -ne 0 ]; then
        mapfile -t -O "${#failures[@]}" failures < <(
            sed -n '/^Test Summary Report/,/^Files=/p' "$2" |
                grep -E '\(Wstat|Failed tests?:|Parse errors' | head -8 |
                sed "s/^/$1: /")
        mapfile -t -O "${#failures[@]}" failures < <(
            grep -E '^\s*#\s+(Failed test|at .* line)' "$2" | head -8 | sed "s/^/$1: /")
    fi
}

echo "== pg_regress"
as_pg "$PGXS_DIR/src/test/regress/pg_regress" \
    --temp-instance="$W/regress-instance" --temp-config="$W/test/regress.conf" \
    --inputdir="$W" --outputdir="$W/regress" --bindir="$PGBIN" --port=$BASE \
    --dbname=contrib_regression --schedule="$W/test/schedule" 2>&1 | tee "$W/regress.log"
rc=${PIPESTATUS[0]}
count_regress regress "$W/regress.log" "$rc"
if [ -f "$W/regress/regression.diffs" ]; then
    cp "$W/regress/regression.diffs" "$ROOT/regression.diffs"
    echo "   differences are in regression.diffs"
fi

echo "== isolation"
specs=$(cd test/isolation/specs && ls *.spec | sed 's/\.spec$//' | sort)
as_pg "$PGXS_DIR/src/test/isolation/pg_isolation_regress" \
    --temp-instance="$W/isolation-instance" --temp-config="$W/test/regress.conf" \
    --inputdir="$W/test/isolation" --outputdir="$W/isolation" --bindir="$PGBIN" \
    --port=$((BASE + 1)) --dbname=isolation_regression $specs 2>&1 | tee "$W/isolation.log"
rc=${PIPESTATUS[0]}
count_regress isolation "$W/isolation.log" "$rc"
if [ -f "$W/isolation/regression.diffs" ]; then
    cp "$W/isolation/regression.diffs" "$ROOT/isolation.diffs"
    echo "   differences are in isolation.diffs"
fi

echo "== pgTAP"
start_cluster "$W/pgtap" $((BASE + 2)) "$(cat test/regress.conf)"
psql_at "$W/pgtap" $((BASE + 2)) postgres -c 'CREATE DATABASE pgtap_test'
psql_at "$W/pgtap" $((BASE + 2)) pgtap_test -c 'CREATE EXTENSION pgtap'
(cd "$W" && as_pg pg_prove -h "$W/pgtap" -p $((BASE + 2)) -U postgres -d pgtap_test test/pgtap/*.sql) \
    2>&1 | tee "$W/pgtap.log"
rc=${PIPESTATUS[0]}
stop_cluster "$W/pgtap"
count_prove pgtap "$W/pgtap.log" "$rc"

echo "== TAP"
as_pg mkdir -p "$W/tap"
(cd "$W" && as_pg env TESTDIR="$W/tap" PG_REGRESS="$PGXS_DIR/src/test/regress/pg_regress" \
    prove -I "$PGXS_DIR/src/test/perl" test/t/*.pl) 2>&1 | tee "$W/tap.log"
rc=${PIPESTATUS[0]}
count_prove tap "$W/tap.log" "$rc"

echo "== FHIR"
test/fhir/run.sh "$W/fhir" $((BASE + 4)) 2>&1 | tee "$W/fhir.log"
rc=${PIPESTATUS[0]}
read -r fhir_ok fhir_bad <<<"$(sed -nE 's/^fhir: ([0-9]+) passed, ([0-9]+) failed$/\1 \2/p' "$W/fhir.log" | tail -1)"
[ "$rc" -ne 0 ] && [ "${fhir_bad:-0}" -eq 0 ] && fhir_bad=1
record fhir "${fhir_ok:-0}" "${fhir_bad:-0}"

echo
if [ "${#failures[@]}" -gt 0 ]; then
    echo "== failures"
    printf '%s\n' "${failures[@]}"
fi
echo "== summary"
printf '%s\n' "${summary[@]}"
if [ "$total_failed" -eq 0 ]; then
    rm -rf "$W"
else
    echo "work files kept in $W"
fi
echo "total: $total_passed passed, $total_failed failed"
[ "$total_failed" -eq 0 ]
