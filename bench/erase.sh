#!/usr/bin/env bash
# Time and WAL of ehrledger.erase_patient() for one patient with PATIENT_ROWS row
# versions across three tables protected with a patient column: obs
# (append-only, 40%), note (versioned: 15% rows, each updated once, so 30%
# of the versions, half of them earlier versions with an end of their own)
# and rx (signed, 30%).  Around them, OTHERS rows of other patients in each
# table, and an index on each patient column, as an EMR has.
#
# Everything is sealed and CHECKPOINTed first (seal_interval = 0: no
# background sealing), so the erasure's WAL includes the full-page images of
# every page it touches: the figure is the worst case, right after a
# checkpoint.  Measured in one session with clock_timestamp() deltas and
# pg_current_wal_lsn() differences:
#   erase_patient('p0001', ...)    the erasure (it also seals what is pending: nothing)
#   seal()                         sealing the erasure records it wrote
#   verify()                       the whole ledger afterwards (ok, erased leaves)
#
# Knobs: PATIENT_ROWS (10000), OTHERS (100000 per table), PORT (55631).
NAME=erase
. "$(dirname "$0")/common.sh"

PATIENT_ROWS=${PATIENT_ROWS:-10000}
OTHERS=${OTHERS:-100000}
N_OBS=$((PATIENT_ROWS * 4 / 10))
N_NOTE=$((PATIENT_ROWS * 15 / 100))
N_RX=$((PATIENT_ROWS - N_OBS - 2 * N_NOTE))

log "starting cluster on port ${PORT:-55631}"
bench_start "${PORT:-55631}" "ehrledger.seal_interval = 0"

log "loading p0001's $PATIENT_ROWS row versions and $OTHERS rows of other patients per table"
qs >/dev/null <<SQL
CREATE TABLE keys AS SELECT * FROM ehrledger.keypair();
SELECT ehrledger.register_actor('dr-a', 'provider', (SELECT public_key FROM keys));
SELECT ehrledger.register_actor('adm', 'admin', (SELECT public_key FROM ehrledger.keypair()), current_user);
$(obs_table_sql obs)
CREATE INDEX ON obs (patient_id);
CREATE TABLE note (id bigserial PRIMARY KEY, patient_id text NOT NULL, body text NOT NULL);
CREATE INDEX ON note (patient_id);
CREATE TABLE rx (id bigserial PRIMARY KEY, patient_id text NOT NULL, drug text NOT NULL,
                 prescriber text NOT NULL, signature bytea);
CREATE INDEX ON rx (patient_id);
SELECT ehrledger.protect('obs', patient_column => 'patient_id');
SELECT ehrledger.protect('note', mode => 'versioned', patient_column => 'patient_id');
SELECT ehrledger.protect('rx', patient_column => 'patient_id',
                         signer_column => 'prescriber', signature_column => 'signature');
INSERT INTO obs (patient_id, resource)
SELECT CASE WHEN g <= $N_OBS THEN 'p0001' ELSE 'p' || lpad((2 + g % 5000)::text, 4, '0') END,
       $(resource_expr 0 g '(g % 5000)' '(60 + g % 60)')
  FROM generate_series(1, $N_OBS + $OTHERS) g;
INSERT INTO note (patient_id, body)
SELECT CASE WHEN g <= $N_NOTE THEN 'p0001' ELSE 'p' || lpad((2 + g % 5000)::text, 4, '0') END,
       'progress note ' || g || ': ' || repeat('observed and discussed; ', 8)
  FROM generate_series(1, $N_NOTE + $OTHERS) g;
UPDATE note SET body = body || ' (amended)' WHERE patient_id = 'p0001';
INSERT INTO rx (id, patient_id, drug, prescriber, signature)
SELECT g, p, d, 'dr-a',
       ehrledger.sign(ehrledger.signing_payload('rx', jsonb_build_object('id', g, 'patient_id', p, 'drug', d,
                                                                          'prescriber', 'dr-a')),
                      (SELECT secret_key FROM keys))
  FROM (SELECT g, CASE WHEN g <= $N_RX THEN 'p0001' ELSE 'p' || lpad((2 + g % 5000)::text, 4, '0') END AS p,
               'drug-' || g AS d
          FROM generate_series(1, $N_RX + $OTHERS) g) x;
SELECT ehrledger.seal();
VACUUM ANALYZE obs, note, rx;
SQL
versions=$(q "SELECT (SELECT count(*) FROM obs WHERE patient_id = 'p0001')
                   + (SELECT count(*) FROM note WHERE patient_id = 'p0001')
                   + (SELECT count(*) FROM ehrledger.history('note') WHERE NOT current AND row->>'patient_id' = 'p0001')
                   + (SELECT count(*) FROM rx WHERE patient_id = 'p0001')")
info=$(q "SELECT 'obs ' || pg_size_pretty(pg_table_size('obs')) || ', note ' || pg_size_pretty(pg_table_size('note'))
              || ', rx ' || pg_size_pretty(pg_table_size('rx')) || ', blocks ' || (SELECT count(*) FROM ehrledger.blocks)")
log "  p0001 has $versions row versions; $info"

log "erasing p0001"
out=$(qs -F ' ' <<'SQL'
CHECKPOINT;
SELECT pg_current_wal_lsn() AS l0, extract(epoch FROM clock_timestamp()) AS t0 \gset
SELECT ehrledger.erase_patient('p0001', 'benchmark erasure request') AS erased \gset
SELECT pg_current_wal_lsn() AS l1, extract(epoch FROM clock_timestamp()) AS t1 \gset
SELECT ehrledger.seal() AS height \gset
SELECT pg_current_wal_lsn() AS l2, extract(epoch FROM clock_timestamp()) AS t2 \gset
SELECT ok AS ok, jsonb_array_length(erased) AS leaves FROM ehrledger.verify() \gset
SELECT extract(epoch FROM clock_timestamp()) AS t3 \gset
SELECT :erased, round((:t1 - :t0)::numeric, 3), pg_wal_lsn_diff(:'l1', :'l0'),
       round((:t2 - :t1)::numeric, 3), pg_wal_lsn_diff(:'l2', :'l1'),
       round((:t3 - :t2)::numeric, 3), :'ok', :leaves,
       (SELECT count(*) FROM ehrledger.erasure);
SQL
)
read -r ERASED ERASE_S ERASE_WAL SEAL_S SEAL_WAL VERIFY_S OK LEAVES RECORDS <<<"$out"
[ "$OK" = t ] || { echo "verify() after the erasure is not ok" >&2; exit 1; }

{
    results_header
    echo "patient p0001: $versions row versions (obs $N_OBS, note $N_NOTE rows updated once," \
         "rx $N_RX signed); $OTHERS rows of other patients per table; $info"
    echo "sealed and CHECKPOINTed before the erasure: its WAL includes full-page images (worst case)"
    echo
    printf '%-52s %12s %14s\n' step seconds "WAL bytes"
    printf '%-52s %12s %14s\n' "erase_patient('p0001'): $ERASED versions, $RECORDS records" "$ERASE_S" "$ERASE_WAL"
    printf '%-52s %12s %14s\n' "seal() of the erasure records" "$SEAL_S" "$SEAL_WAL"
    printf '%-52s %12s %14s\n' "verify() of the whole ledger afterwards" "$VERIFY_S" "-"
    echo "verify(): ok = $OK, $LEAVES erased leaves reported"
    echo "per row version: $(calc "$ERASE_S * 1000000 / $ERASED" 0) us, $(calc "$ERASE_WAL / $ERASED" 0) WAL bytes"
    summary "erase: erase_patient() s ($ERASED versions)" "$ERASE_S"
    summary "erase: erase_patient() WAL MB" "$(calc "$ERASE_WAL / 1048576" 2)"
} | report
