#!/usr/bin/env bash
# Runs every benchmark (insert, verify, seal, signed_insert, proofs, update,
# erase, consent_scan, access_log, network, restore) one after the other and prints
# a summary of their headline figures; the summary is also appended to
# bench/results/summary.txt.  The knobs of the single scripts (DURATION,
# ROWS, ...) pass through the environment.  `make bench` calls this script.
set -uo pipefail

BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$BENCH_DIR/results"
BENCH_SUMMARY=$(mktemp /tmp/ehrledger-bench-summary.XXXXXX)
export BENCH_SUMMARY
trap 'rm -f "$BENCH_SUMMARY"' EXIT

failed=()
for b in insert verify seal signed_insert proofs update erase consent_scan access_log network restore; do
    echo "##### bench/$b.sh"
    if ! "$BENCH_DIR/$b.sh"; then
        failed+=("$b")
        echo "##### bench/$b.sh FAILED" >&2
    fi
    echo
done

{
    printf '\n=== summary  %s  commit %s\n' "$(date -u '+%Y-%m-%d %H:%M:%SZ')" \
        "$(git -C "$BENCH_DIR/.." rev-parse --short HEAD 2>/dev/null || echo unknown)"
    printf 'host: %s cores; DURATION=%s ROWS=%s (defaults 30 s, 1000000 rows)\n' "$(nproc)" \
        "${DURATION:-30}" "${ROWS:-1000000}"
    printf '%-44s %s\n' figure value
    cat "$BENCH_SUMMARY"
    [ ${#failed[@]} -eq 0 ] || echo "FAILED: ${failed[*]}"
} | tee -a "$BENCH_DIR/results/summary.txt"

[ ${#failed[@]} -eq 0 ]
