#!/usr/bin/env bash
# Proofs and offline verification on a 1M-row ledger.
#
# Builds a protected table of ROWS Observations sealed in BLOCKS blocks, takes
# a digest, then measures:
#   - proof(): size and time to produce, for PROOFS random rows;
#   - ehrledger-verify PROOF DIGEST: time to check one proof offline;
#   - export(): time and size of a full export of the table;
#   - ehrledger-verify EXPORT DIGEST (offline, every row recomputed) against
#     ehrledger.verify('obs') in the server, both on one core.
#
# Knobs: ROWS (1000000), BLOCKS (500), PROOFS (20), PORT (54344).
NAME=proofs
. "$(dirname "$0")/common.sh"

ROWS=${ROWS:-1000000}
BLOCKS=${BLOCKS:-500}
PROOFS=${PROOFS:-20}
VERIFIER="$PGBIN/ehrledger-verify"
[ -x "$VERIFIER" ] || { echo "ehrledger-verify is not installed: run make install" >&2; exit 1; }

log "starting cluster on port ${PORT:-54344}"
bench_start "${PORT:-54344}" "ehrledger.seal_interval = 0
max_parallel_workers_per_gather = 0
jit = off"

log "loading $ROWS rows in $BLOCKS sealed blocks"
per=$(( ROWS / BLOCKS ))
qs >/dev/null <<SQL
$(obs_table_sql obs)
SELECT ehrledger.protect('obs');
CREATE PROCEDURE load_blocks(per int, blocks int) LANGUAGE plpgsql AS \$\$
BEGIN
    FOR b IN 1..blocks LOOP
        $(bulk_insert_sql obs per)
        PERFORM ehrledger.seal();
        COMMIT;
    END LOOP;
END \$\$;
CALL load_blocks($per, $BLOCKS);
VACUUM ANALYZE obs;
SQL
q "SELECT ehrledger.digest()" >"$W/digest.json"
key=$(q "SELECT encode(ehrledger.node_public_key(), 'hex')")
rows=$(q "SELECT count(*) FROM obs")
blocks=$(q "SELECT count(*) FROM ehrledger.blocks")

log "producing $PROOFS proofs"
q "SELECT ledger_seq FROM obs ORDER BY random() LIMIT $PROOFS" >"$W/seqs"
proof_s=$(elapsed "$(while read -r s; do echo "SELECT ehrledger.proof('obs', $s, (SELECT pg_read_file('$W/digest.json')::jsonb));"; done <"$W/seqs")")
first=$(head -1 "$W/seqs")
q "SELECT ehrledger.proof('obs', $first, pg_read_file('$W/digest.json')::jsonb)" >"$W/proof.json"
proof_bytes=$(wc -c <"$W/proof.json")
leaf_path=$(q "SELECT jsonb_array_length(p->'leaf_path') || '+' || jsonb_array_length(p->'history_path') FROM (SELECT pg_read_file('$W/proof.json')::jsonb AS p) x")

log "checking a proof offline"
t0=$(date +%s.%N)
for _ in $(seq 1 20); do "$VERIFIER" --key "$key" "$W/proof.json" "$W/digest.json" >/dev/null; done
t1=$(date +%s.%N)
cli_proof_ms=$(calc "($t1 - $t0) * 1000 / 20" 2)

log "exporting the table"
t0=$(date +%s.%N)
psql_at "$W" "$PORT" bench -At -c "SELECT line FROM ehrledger.export('obs')" >"$W/obs.jsonl"
t1=$(date +%s.%N)
export_s=$(calc "$t1 - $t0")
export_mb=$(calc "$(stat -c %s "$W/obs.jsonl") / 1048576" 1)

log "verifying: offline export vs server verify()"
t0=$(date +%s.%N)
"$VERIFIER" --key "$key" "$W/obs.jsonl" "$W/digest.json" >"$W/cli.out"
t1=$(date +%s.%N)
cli_export_s=$(calc "$t1 - $t0")
server_s=$(elapsed "SELECT ok FROM ehrledger.verify('obs');")

results_header | report
{
    printf 'ledger: %s rows of obs in %s blocks\n' "$rows" "$blocks"
    printf 'proof size (bytes)                         %s (leaf path + history path hashes: %s)\n' "$proof_bytes" "$leaf_path"
    printf 'proof() time per proof (ms)                %s\n' "$(calc "$proof_s * 1000 / $PROOFS" 2)"
    printf 'ehrledger-verify proof, per run (ms)       %s\n' "$cli_proof_ms"
    printf 'export() of the table (s, MB)              %s, %s\n' "$export_s" "$export_mb"
    printf 'ehrledger-verify of the export (s)         %s\n' "$cli_export_s"
    printf 'verify(obs) in the server (s)              %s\n' "$server_s"
    printf 'offline / server time ratio                %s\n' "$(calc "$cli_export_s / $server_s" 2)"
    printf 'verifier said: %s\n' "$(head -c 300 "$W/cli.out")"
} | report
summary "proofs: proof size bytes" "$proof_bytes"
summary "proofs: proof() ms" "$(calc "$proof_s * 1000 / $PROOFS" 2)"
summary "proofs: ehrledger-verify proof ms" "$cli_proof_ms"
summary "proofs: offline export verify s" "$cli_export_s"
summary "proofs: server verify() s" "$server_s"
