#!/usr/bin/env bash
# Signed inserts against unsigned inserts into protected tables.
#
# Two protected tables of prescriptions in database "bench":
#   rx_unsigned  ehrledger.protect('rx_unsigned')
#   rx_signed    ehrledger.protect(..., signer_column => 'prescriber',
#                signature_column => 'signature'): every insert checks an
#                Ed25519 signature (about 60 us of CPU on this machine)
# The rows are signed beforehand, as a prescriber's client would, and kept
# in a staging table; pgbench (8 clients, one row per transaction,
# synchronous_commit = on) copies one staged row per transaction into each
# table in turn, ROUNDS times.
#
# Knobs: DURATION (s per run, 20), ROUNDS (2), ROWS (staged rows, 400000),
#        CLIENTS (8), THREADS (2), PORT (54343).
NAME=signed_insert
. "$(dirname "$0")/common.sh"

DURATION=${DURATION:-20}
ROUNDS=${ROUNDS:-2}
ROWS=${ROWS:-400000}
CLIENTS=${CLIENTS:-8}
THREADS=${THREADS:-2}

log "starting cluster on port ${PORT:-54343}"
bench_start "${PORT:-54343}" "ehrledger.seal_interval = 1000"

log "staging $ROWS signed prescriptions"
qs >/dev/null <<SQL
CREATE TABLE rx_unsigned (id bigint PRIMARY KEY, patient text NOT NULL, drug text NOT NULL,
                          dose text NOT NULL, prescriber text NOT NULL, signature bytea);
CREATE TABLE rx_signed (LIKE rx_unsigned INCLUDING ALL);
CREATE TABLE rx_stage (LIKE rx_unsigned INCLUDING ALL);
SELECT ehrledger.protect('rx_unsigned');
SELECT ehrledger.protect('rx_signed', signer_column => 'prescriber', signature_column => 'signature');
CREATE TABLE k AS SELECT * FROM ehrledger.keypair();
SELECT ehrledger.register_actor('dr-bench', 'provider', (SELECT public_key FROM k));
INSERT INTO rx_stage (id, patient, drug, dose, prescriber)
SELECT g, 'pat-' || (g % 5000), (ARRAY['amoxicillin 500 mg capsule', 'lisinopril 10 mg tablet',
        'metformin 500 mg tablet', 'atorvastatin 40 mg tablet'])[1 + g % 4],
       (1 + g % 3) || ' tablet(s) ' || (ARRAY['once', 'twice', 'three times'])[1 + g % 3] || ' a day',
       'dr-bench'
  FROM generate_series(1, $ROWS) g;
UPDATE rx_stage s SET signature = ehrledger.sign(
    ehrledger.signing_payload('rx_signed', to_jsonb(s) - 'signature'), (SELECT secret_key FROM k));
CREATE SEQUENCE pick_unsigned;
CREATE SEQUENCE pick_signed;
VACUUM ANALYZE rx_stage;
SQL

cat >"$W/unsigned.sql" <<'SQL'
INSERT INTO rx_unsigned SELECT * FROM rx_stage WHERE id = (SELECT nextval('pick_unsigned'));
SQL
cat >"$W/signed.sql" <<'SQL'
INSERT INTO rx_signed SELECT * FROM rx_stage WHERE id = (SELECT nextval('pick_signed'));
SQL
chown postgres "$W"/*.sql

run() {
    as_pg pgbench -n -h "$W" -p "$PORT" -U postgres -c "$CLIENTS" -j "$THREADS" \
        -T "$DURATION" -f "$W/$1.sql" bench 2>&1 |
        awk '/^tps = / { printf "%.1f", $3 }'
}

results_header | report
printf '%-6s %12s %12s %8s\n' round unsigned_tps signed_tps ratio | report
sum=0
for r in $(seq 1 "$ROUNDS"); do
    q 'CHECKPOINT' >/dev/null
    u=$(run unsigned)
    q 'CHECKPOINT' >/dev/null
    s=$(run signed)
    ratio=$(calc "$s / $u")
    sum=$(calc "$sum + $ratio" 6)
    printf '%-6s %12s %12s %8s\n' "$r" "$u" "$s" "$ratio" | report
done
mean=$(calc "$sum / $ROUNDS")
bad=$(q "SELECT count(*) FROM rx_signed WHERE NOT (ehrledger.verify_record('rx_signed', ledger_seq)).valid")
{
    printf 'signed/unsigned insert tps ratio (mean of %s rounds): %s\n' "$ROUNDS" "$mean"
    printf 'rows in rx_signed: %s, failing verify_record: %s\n' "$(q 'SELECT count(*) FROM rx_signed')" "$bad"
} | report
summary "signed: signed/unsigned insert tps ratio" "$mean"
