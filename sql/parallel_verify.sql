-- Parallel verification: with max_parallel_workers_per_gather above zero,
-- verify() shares the rows of each large table with parallel workers.  Its
-- report is the serial one, row for row and problem for problem: for a
-- clean ledger, and for every kind of tampering below.  same_report()
-- runs verify() serially and with two workers on every table, however
-- small, and says whether the two reports are identical.
CREATE EXTENSION ehrledger;
\set SHOW_CONTEXT never
SET client_min_messages = warning;
CREATE ROLE pv_admin;
CREATE ROLE pv_owner;
RESET client_min_messages;
SELECT ehrledger.register_actor('pv-adm', 'admin', (SELECT public_key FROM ehrledger.keypair()), 'pv_admin');
GRANT CREATE ON SCHEMA public TO pv_owner;

CREATE FUNCTION verify_with(workers int, tbl regclass DEFAULT NULL)
RETURNS TABLE (ok boolean, blocks_checked bigint, rows_checked bigint, problems jsonb, erased jsonb)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('max_parallel_workers_per_gather', workers::text, true);
    PERFORM set_config('min_parallel_table_scan_size', '0', true);
    PERFORM set_config('parallel_setup_cost', '0', true);
    RETURN QUERY SELECT * FROM ehrledger.verify(tbl);
END
$$;
CREATE FUNCTION same_report(tbl regclass DEFAULT NULL) RETURNS boolean
LANGUAGE sql AS $$
    SELECT (SELECT row(v.*)::text FROM verify_with(0, tbl) v)
         = (SELECT row(v.*)::text FROM verify_with(2, tbl) v)
$$;

-- A versioned table of 2,000 rows sealed in two blocks, owned by the
-- application's role; some rows changed and deleted, others not sealed yet.
SET ROLE pv_owner;
CREATE TABLE obs (id int PRIMARY KEY, patient text NOT NULL, resource jsonb);
RESET ROLE;
SELECT ehrledger.protect('obs', mode => 'versioned', patient_column => 'patient');
INSERT INTO obs SELECT g, 'pat-' || g % 50,
       jsonb_build_object('code', '8867-4', 'value', 60 + g % 60, 'note', repeat('x', g % 300))
  FROM generate_series(1, 1000) g;
SELECT ehrledger.seal() IS NOT NULL AS sealed;
INSERT INTO obs SELECT g, 'pat-' || g % 50, jsonb_build_object('code', '8867-4', 'value', g % 90)
  FROM generate_series(1001, 2000) g;
UPDATE obs SET resource = resource || '{"status": "amended"}' WHERE id % 97 = 0;
DELETE FROM obs WHERE id % 89 = 0;
SELECT ehrledger.seal() IS NOT NULL AS sealed;
-- A plain append-only table beside it.
CREATE TABLE vitals (id int PRIMARY KEY, reading numeric);
SELECT ehrledger.protect('vitals');
INSERT INTO vitals SELECT g, g / 7.0 FROM generate_series(1, 3000) g;
SELECT ehrledger.seal() IS NOT NULL AS sealed;
INSERT INTO obs SELECT g, 'pat-' || g % 50, '{"code": "unsealed"}' FROM generate_series(2001, 2040) g;
UPDATE obs SET resource = '{"code": "unsealed change"}' WHERE id IN (5, 1500);

-- Clean: the same report, with every row and earlier version checked.
-- verify() says at DEBUG1 how many workers it used.
SELECT ok, rows_checked, problems FROM verify_with(2);
SET client_min_messages = debug1;
SELECT ok, rows_checked, problems FROM verify_with(2, 'obs');
RESET client_min_messages;
SELECT same_report(), same_report('obs'), same_report('vitals');

-- The tamperer switches the guards off first (see tamper.sql).
SET session_replication_role = replica;
ALTER TABLE obs DISABLE TRIGGER ALL;
ALTER TABLE vitals DISABLE TRIGGER ALL;
RESET session_replication_role;

-- A changed sealed row, and two rows whose contents exchanged places.
BEGIN;
UPDATE vitals SET reading = 0 WHERE id = 2500;
SELECT ledger_seq AS s10 FROM vitals WHERE id = 10 \gset
UPDATE vitals SET ledger_seq = -1 WHERE id = 10;
UPDATE vitals SET ledger_seq = :s10 WHERE id = 11;
UPDATE vitals SET ledger_seq = :s10 + 1 WHERE id = 10;
SELECT ok, ARRAY(SELECT p->>'kind' FROM jsonb_array_elements(problems) p) AS kinds
  FROM verify_with(2, 'vitals');
SELECT same_report(), same_report('vitals');
ROLLBACK;

-- A deleted sealed row, and a sealed row whose stored hash was forged.
BEGIN;
DELETE FROM vitals WHERE id = 1234;
UPDATE vitals SET ledger_hash = sha256('forged') WHERE id = 2999;
SELECT ok, ARRAY(SELECT p->>'kind' FROM jsonb_array_elements(problems) p) AS kinds
  FROM verify_with(2, 'vitals');
SELECT same_report(), same_report('vitals');
ROLLBACK;

-- A row forged into the sealed range with a hash of its own (the number
-- of a row of another table), and a row that carries another row's
-- ledger_seq (the tamperer dropped the unique index, event triggers off).
BEGIN;
SET LOCAL session_replication_role = replica;
DROP INDEX vitals_ledger_seq_idx;
INSERT INTO vitals VALUES (9001, 1, (SELECT ledger_seq FROM obs WHERE id = 1), sha256('forged'));
INSERT INTO vitals SELECT 9002, reading, ledger_seq, ledger_hash FROM vitals WHERE id = 3;
SELECT ok, ARRAY(SELECT p->>'kind' FROM jsonb_array_elements(problems) p) AS kinds
  FROM verify_with(2, 'vitals');
SELECT same_report(), same_report('vitals');
ROLLBACK;

-- Unsealed rows changed or without a hash, and a changed earlier version
-- in the history of a versioned table.
BEGIN;
UPDATE obs SET resource = '{"code": "rewritten"}' WHERE id = 2010;
UPDATE obs SET ledger_hash = '\x00' WHERE id = 2020;
SELECT history AS hist FROM ehrledger.protected_tables WHERE tbl = 'obs'::regclass \gset
SET LOCAL session_replication_role = replica;
ALTER TABLE :hist DISABLE TRIGGER ALL;
UPDATE :hist SET resource = '{}' WHERE id = 97 AND ledger_seq = (
    SELECT min(ledger_seq) FROM :hist WHERE id = 97);
RESET session_replication_role;
SELECT ok, ARRAY(SELECT p->>'kind' FROM jsonb_array_elements(problems) p) AS kinds
  FROM verify_with(2, 'obs');
SELECT same_report(), same_report('obs');
ROLLBACK;

-- Erased rows: verify() lists them as erased, serially or not; and a row
-- an erasure record names that is still in the table.
GRANT SELECT ON obs, vitals TO pv_admin;
SET ROLE pv_admin;
SELECT ehrledger.erase('vitals', (SELECT ledger_seq FROM vitals WHERE id = 42), 'filed in the wrong chart') IS NOT NULL AS erased;
SELECT ehrledger.erase_patient('pat-7', 'erasure request') IS NOT NULL AS erased;
RESET ROLE;
SELECT ok, jsonb_array_length(erased) > 1 AS erased_listed FROM verify_with(2);
SELECT same_report(), same_report('obs'), same_report('vitals');
BEGIN;
INSERT INTO vitals SELECT 42, 6, e.erased_seq, sha256('x')
  FROM ehrledger.erasure e JOIN ehrledger.protected_tables p USING (table_id)
 WHERE p.tbl = 'vitals'::regclass;
SELECT ok, ARRAY(SELECT p->>'kind' FROM jsonb_array_elements(problems) p) AS kinds
  FROM verify_with(2, 'vitals');
SELECT same_report('vitals');
ROLLBACK;

-- A partitioned table, verified through its parent, with a tampered row
-- in one partition.
CREATE TABLE visit (id int NOT NULL, day date NOT NULL, note text) PARTITION BY RANGE (day);
CREATE TABLE visit_2024 PARTITION OF visit FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE visit_2025 PARTITION OF visit FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
SELECT ehrledger.protect('visit');
INSERT INTO visit SELECT g, date '2024-06-01' + g % 400, 'visit ' || g FROM generate_series(1, 2000) g;
SELECT ehrledger.seal() IS NOT NULL AS sealed;
SELECT ok, rows_checked FROM verify_with(2, 'visit');
SELECT same_report('visit');
SET session_replication_role = replica;
ALTER TABLE visit_2025 DISABLE TRIGGER ALL;
RESET session_replication_role;
UPDATE visit_2025 SET note = 'changed' WHERE id = 1999;
SELECT ok, ARRAY(SELECT p->>'kind' || ' ' || (p->>'table') FROM jsonb_array_elements(problems) p) AS kinds
  FROM verify_with(2, 'visit');
SELECT same_report('visit'), same_report();

-- No worker to be had (max_parallel_workers = 0): the leader checks the
-- rows alone, with the same report.
SET max_parallel_workers = 0;
SELECT same_report(), same_report('visit');
RESET max_parallel_workers;

-- verify() plans its own queries without workers, and gives the session
-- its setting back, also when it fails.
SET max_parallel_workers_per_gather = 3;
SELECT ok FROM ehrledger.verify('obs');
SHOW max_parallel_workers_per_gather;
SELECT ok FROM ehrledger.verify('obs', '{"format": "no digest"}');
SHOW max_parallel_workers_per_gather;
RESET max_parallel_workers_per_gather;

SET client_min_messages = warning;
DROP EXTENSION ehrledger CASCADE;
DROP SCHEMA IF EXISTS ehrledger CASCADE;
DROP TABLE obs, vitals, visit;
DROP FUNCTION same_report(regclass), verify_with(int, regclass);
REVOKE CREATE ON SCHEMA public FROM pv_owner;
DROP ROLE pv_admin, pv_owner;
