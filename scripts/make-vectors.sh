#!/usr/bin/env bash
# Makes test/vectors/ from a real cluster (docs/format.md, "Test vectors").
#
#   scripts/make-vectors.sh [OUTDIR]      (default test/vectors)
#
# A throwaway cluster (node "vector-node") gets a table of the column types
# EHR tables use and a versioned table with updates and a delete, sealed in
# four blocks with a digest after each: block 1 under the 0.3 schema (rows
# without a salt, encoding format 1), blocks 2-4 after ALTER EXTENSION
# UPDATE (salted rows, format 2), and erases a row of the first and an
# earlier version of the second; from it come digests, inclusion proofs (of
# a format 1 and of a format 2 row, and of the erased row), a consistency
# proof, two exports (with their erased leaves) and a certificate, each
# valid.  Then
# scripts/make-vectors.pl writes, for every field of every format, a copy
# that changes that field alone, and the MANIFEST with each file's expected
# verdict.  Run once; the files are committed.  Needs the extension
# installed (make install).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
OUT=${1:-test/vectors}
W=$(make_workdir ehrledger-vectors)
PORT=${EHRLEDGER_VECTORS_PORT:-54379}
trap 'stop_cluster "$W"; rm -rf "$W"' EXIT

start_cluster "$W" "$PORT" "ehrledger.seal_interval = 0
ehrledger.node_name = 'vector-node'
ehrledger.database = 'postgres'"
q() { psql_at "$W" "$PORT" postgres -At "$@"; }

q >/dev/null <<'SQL'
CREATE EXTENSION ehrledger VERSION '0.3';
CREATE TYPE dose_unit AS ENUM ('mg', 'ml', 'tablet');
CREATE TABLE public.rx (
    id          int PRIMARY KEY,
    patient     varchar(16) NOT NULL,
    drug        text NOT NULL,
    dose        numeric(8,2),
    unit        dose_unit,
    refills     smallint,
    total_mg    bigint,
    weight      real,
    score       double precision,
    urgent      boolean,
    born        date,
    take_at     time,
    written     timestamp,
    given_at    timestamptz,
    order_id    uuid,
    scan        bytea,
    resource    jsonb,
    raw         json,
    codes       text[],
    doses       numeric[],
    clinic      inet
);
SELECT ehrledger.protect('public.rx');
CREATE TABLE public.chart (id int PRIMARY KEY, note text NOT NULL, version int NOT NULL);
SELECT ehrledger.protect('public.chart', mode => 'versioned');
SELECT ehrledger.register_actor('vector-admin', 'admin', (SELECT public_key FROM ehrledger.keypair()), current_user);
SQL

for h in 1 2 3 4; do
    [ "$h" = 2 ] && q -c "ALTER EXTENSION ehrledger UPDATE" >/dev/null
    if [ "$h" = 3 ]; then
        # Everything so far is sealed: the erasure records go into block 3.
        q >/dev/null <<'SQL'
SELECT ehrledger.erase('public.rx', (SELECT ledger_seq FROM public.rx WHERE id = 3), 'filed in the wrong chart');
SELECT ehrledger.erase('public.chart', (SELECT min(ledger_seq) FROM ehrledger.history('public.chart') WHERE NOT current),
                       'erasure request');
SQL
    fi
    q >/dev/null <<SQL
INSERT INTO public.rx
SELECT g + 10 * ($h - 1), 'MRN' || lpad(g::text, 5, '0'), 'drug-$h-' || g, g * 12.5, 'mg', g % 3,
       g * 1000000000000, 81.5 + g, 1.0 / (g + 2), g % 2 = 0, DATE '1970-05-17' + g,
       TIME '08:30:00' + g * INTERVAL '1 minute', TIMESTAMP '2026-01-31 12:00:00.25' + g * INTERVAL '1 hour',
       TIMESTAMPTZ '2026-01-31 12:00:00+01' + g * INTERVAL '1 day',
       ('a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a' || lpad(g::text, 2, '0'))::uuid,
       decode('00ff' || lpad(to_hex(g), 2, '0'), 'hex'),
       jsonb_build_object('resourceType', 'MedicationRequest', 'n', g, 'dose', g * 12.5,
                          'note', E'line\nbreak "quoted" \u00e9', 'ok', true, 'none', NULL,
                          'coding', jsonb_build_array(jsonb_build_object('code', '[x]', 'v', 2.50))),
       '{"b": 1, "a": [1, 2.0], "a": "last"}',
       ARRAY['J01CA04', NULL, '[br]ack{et}', 'q"uote'], ARRAY[1.5, NULL, 2.50],
       ('10.0.0.' || g)::inet
  FROM generate_series(1, 3) g;
INSERT INTO public.rx (id, patient, drug) VALUES (100 + $h, 'MRN-N$h', 'nulls-$h');
INSERT INTO public.chart VALUES ($h, 'note $h', 1);
UPDATE public.chart SET note = note || ' revised', version = version + 1 WHERE id < $h;
DELETE FROM public.chart WHERE id = $h - 2;
SELECT ehrledger.seal();
SQL
    q -c "SELECT ehrledger.digest()" > "$W/digest-$h.json"
done
q -c "SELECT encode(ehrledger.node_public_key(), 'hex')" > "$W/key.hex"
q -c "SELECT jsonb_build_object(ehrledger.node_name(), encode(ehrledger.node_public_key(), 'hex'))" \
    > "$W/members.json"
# A row of block 1 against the digest of block 4 (non-empty history_path),
# and a salted row of block 2.
q -c "SELECT ehrledger.proof('public.rx', (SELECT ledger_seq FROM public.rx WHERE id = 2),
                             pg_read_file('$W/digest-4.json')::jsonb)" > "$W/proof.json"
# The erased row of block 1 against the digest of block 4.
q -c "SELECT ehrledger.proof('public.rx', (SELECT erased_seq FROM ehrledger.erasure WHERE table_id = 1),
                             pg_read_file('$W/digest-4.json')::jsonb)" > "$W/proof-erased.json"
q -c "SELECT ehrledger.proof('public.rx', (SELECT ledger_seq FROM public.rx WHERE id = 12),
                             pg_read_file('$W/digest-4.json')::jsonb)" > "$W/proof-salted.json"
q -c "SELECT ehrledger.consistency_proof(pg_read_file('$W/digest-1.json')::jsonb,
                                         pg_read_file('$W/digest-4.json')::jsonb)" > "$W/consistency.json"
q -c "SELECT line FROM ehrledger.export('public.rx')" > "$W/export-rx.jsonl"
q -c "SELECT line FROM ehrledger.export('public.chart')" > "$W/export-chart.jsonl"
q -c "SELECT certificate FROM ehrledger.final_block WHERE height = 4" > "$W/certificate.json"

# every file made here, not the README beside them
mkdir -p "$OUT"
find "$OUT" -mindepth 1 ! -name README.md -delete
perl scripts/make-vectors.pl "$W" "$OUT"
echo "vectors written to $OUT ($(grep -vc '^#' "$OUT/MANIFEST") entries)"
