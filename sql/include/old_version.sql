-- The current library under the schema of an earlier version (psql
-- variable v), then after ALTER EXTENSION ehrledger UPDATE.  Included by
-- old_versions.sql once for each earlier version.
CREATE EXTENSION ehrledger VERSION :'v';
SELECT extversion FROM pg_extension WHERE extname = 'ehrledger';
CREATE TABLE old_chart (id int PRIMARY KEY, note text);
SELECT ehrledger.protect('old_chart');
CREATE TABLE old_rx (id int PRIMARY KEY, dose text);
SELECT ehrledger.protect('old_rx', mode => 'versioned');
-- Patient columns came in 0.2: 0.1 says so.
CREATE TABLE old_visit (id int PRIMARY KEY, patient text NOT NULL);
SELECT ehrledger.protect('old_visit', patient_column => 'patient');
GRANT SELECT ON old_visit TO regress_old_reader;
INSERT INTO old_chart VALUES (1, 'first'), (2, 'second');
INSERT INTO old_rx VALUES (1, '5 mg');
UPDATE old_rx SET dose = '10 mg';
-- append-only holds
DELETE FROM old_chart;
INSERT INTO old_visit VALUES (1, 'p1');
SELECT count(*) AS numbered FROM old_chart WHERE ledger_seq IS NOT NULL AND ledger_hash IS NOT NULL;
SELECT ehrledger.seal() AS height;
SELECT ok, blocks_checked, rows_checked, problems FROM ehrledger.verify();
SELECT ok, rows_checked, problems FROM ehrledger.verify('old_rx');
SELECT array_agg(k ORDER BY k) AS digest_keys FROM jsonb_object_keys(ehrledger.digest()) k;
SELECT ehrledger.proof('old_chart', (SELECT min(ledger_seq) FROM old_chart)) -> 'row' AS proved_row;
-- A role no patient consented to sees no patient's rows (under 0.1, which
-- protected no patient column, it sees them all).
SET ROLE regress_old_reader;
SELECT count(*) AS visits_seen FROM old_visit;
RESET ROLE;
-- Functions of later versions do not exist yet.
SELECT ehrledger.sealed_row('old_chart', 1);

ALTER EXTENSION ehrledger UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'ehrledger';
SELECT ehrledger.protect('old_visit', patient_column => 'patient')
 WHERE NOT EXISTS (SELECT FROM ehrledger.protected_tables WHERE tbl = 'old_visit'::regclass);
INSERT INTO old_chart VALUES (3, 'third');
UPDATE old_rx SET dose = '20 mg';
INSERT INTO old_visit VALUES (2, 'p2');
SELECT ehrledger.seal() AS height;
SELECT ok, blocks_checked, rows_checked, problems FROM ehrledger.verify();
SELECT ok, rows_checked, problems FROM ehrledger.verify('old_rx');
SELECT array_agg(k ORDER BY k) AS digest_keys FROM jsonb_object_keys(ehrledger.digest()) k;
SELECT ehrledger.proof('old_chart', (SELECT min(ledger_seq) FROM old_chart)) -> 'row' AS proved_row;
SELECT verdict
  FROM ehrledger.check_proof(ehrledger.proof('old_chart', (SELECT max(ledger_seq) FROM old_chart))::text,
                             ehrledger.digest()::text);
SET ROLE regress_old_reader;
SELECT count(*) AS visits_seen FROM old_visit;
RESET ROLE;
DROP EXTENSION ehrledger CASCADE;
-- The schema outlives the extension (CREATE EXTENSION made it, for the
-- control file's schema), with the history tables protect() made in it.
DROP SCHEMA ehrledger CASCADE;
DROP TABLE old_chart, old_rx, old_visit;
