#!/usr/bin/env bash
# The FHIR validation step: runs scenario.sql on a throwaway cluster, then
# validate.js over the output of every FHIR function.  Prints one "ok" or
# "not ok" line per output and "fhir: N passed, N failed"; exits non-zero on
# any failure.
#
#   test/fhir/run.sh WORKDIR PORT      (WORKDIR writable by the postgres user)
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../.."
. scripts/lib.sh
W=${1:?usage: run.sh WORKDIR PORT}
PORT=${2:?usage: run.sh WORKDIR PORT}

if [ ! -d "$here/node_modules/fhirpath" ]; then
    echo "not ok 1 - the FHIR validators are not installed (scripts/install-deps.sh runs npm ci in test/fhir)"
    echo "fhir: 0 passed, 1 failed"
    exit 1
fi

as_pg mkdir -p "$W"
as_pg cp "$here/scenario.sql" "$W/scenario.sql"
start_cluster "$W" "$PORT" "$(cat test/regress.conf)
listen_addresses = '127.0.0.1'"
psql_at "$W" "$PORT" postgres -c 'CREATE DATABASE fhir_test'
as_pg psql -X -q -h "$W" -p "$PORT" -U postgres -d fhir_test -v ON_ERROR_STOP=1 \
    -v out="$W/fhir.jsonl" -f "$W/scenario.sql" > "$W/scenario.log" 2>&1
rc=$?
stop_cluster "$W"
if [ "$rc" -ne 0 ]; then
    cat "$W/scenario.log"
    echo "not ok 1 - test/fhir/scenario.sql failed"
    echo "fhir: 0 passed, 1 failed"
    exit 1
fi
node "$here/validate.js" "$W/fhir.jsonl"
