-- Versioned tables: the application updates and deletes as usual; every
-- earlier version stays, sealed and verifiable, with who ended it and how.
CREATE EXTENSION ehrledger;
\set SHOW_CONTEXT never
CREATE TABLE medication_request (
    id       int PRIMARY KEY,
    patient  text NOT NULL,
    drug     text NOT NULL,
    status   text NOT NULL,
    changed  int NOT NULL DEFAULT 0
);
-- The application's own trigger keeps working.
CREATE FUNCTION count_changes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.changed := OLD.changed + 1; RETURN NEW; END $$;
CREATE TRIGGER count_changes BEFORE UPDATE ON medication_request
    FOR EACH ROW EXECUTE FUNCTION count_changes();
INSERT INTO medication_request VALUES
    (1, 'pat-1', 'amoxicillin', 'active'),
    (2, 'pat-2', 'ibuprofen', 'active'),
    (3, 'pat-1', 'lisinopril', 'active');
SELECT ehrledger.protect('medication_request', mode => 'versioned');
SELECT tbl, mode, history FROM ehrledger.protected_tables WHERE NOT internal;

CREATE ROLE clinician;
GRANT SELECT, INSERT, UPDATE, DELETE ON medication_request TO clinician;
SET ROLE clinician;

-- UPDATE and DELETE, with RETURNING and row counts, as on a plain table.
UPDATE medication_request SET status = 'on-hold' WHERE id = 1
RETURNING id, status, changed;
UPDATE medication_request SET status = 'stopped' WHERE patient = 'pat-1';
DELETE FROM medication_request WHERE id = 2 RETURNING id, drug;
-- A join, and an upsert.
CREATE TEMP TABLE stop_list (drug text);
INSERT INTO stop_list VALUES ('lisinopril');
UPDATE medication_request m SET status = 'completed' FROM stop_list s
 WHERE m.drug = s.drug RETURNING m.id, m.status;
INSERT INTO medication_request VALUES (4, 'pat-3', 'metformin', 'active')
ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status;
INSERT INTO medication_request VALUES (4, 'pat-3', 'metformin', 'draft')
ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status;
PREPARE stop_rx(int) AS UPDATE medication_request SET status = 'stopped' WHERE id = $1;
EXECUTE stop_rx(4);
SELECT id, patient, drug, status, changed FROM medication_request ORDER BY id;
DROP TABLE stop_list;
RESET ROLE;

-- Every version, oldest first, and how each ended.
SELECT ledger_seq, "row"->>'id' AS id, "row"->>'status' AS status, current,
       ended_seq, ended_how, ended_by
  FROM ehrledger.history('medication_request');

-- History and ends of versions are sealed like rows.
SELECT ehrledger.seal();
SELECT ok, blocks_checked, rows_checked, problems FROM ehrledger.verify();

-- Earlier versions cannot be changed either, and a changed or removed one
-- is found.
UPDATE ehrledger.history_1 SET status = 'never' WHERE id = 1;
SET session_replication_role = replica;
ALTER TABLE ehrledger.history_1 DISABLE TRIGGER ALL;
RESET session_replication_role;
UPDATE ehrledger.history_1 SET status = 'never-prescribed' WHERE id = 1 AND ledger_op = 'update'
   AND ledger_seq = (SELECT min(ledger_seq) FROM ehrledger.history_1 WHERE id = 1);
DELETE FROM ehrledger.history_1 WHERE ledger_op = 'delete';
SELECT ok, jsonb_pretty(problems) FROM ehrledger.verify('medication_request');
ALTER TABLE ehrledger.history_1 ENABLE TRIGGER ALL;

-- TRUNCATE would erase the history: refused.
TRUNCATE medication_request;

-- history() is for versioned tables, and for those who may read them.
CREATE TABLE plain_ledger (x int);
SELECT ehrledger.protect('plain_ledger');
SELECT * FROM ehrledger.history('plain_ledger');
CREATE ROLE outsider;
SET ROLE outsider;
SELECT * FROM ehrledger.history('medication_request');
RESET ROLE;

-- A DBA's expression and partial indexes on a history table are kept as
-- PostgreSQL keeps any index: an UPDATE evaluates the expression, skips
-- rows outside the predicate, and the server does not fall over.
CREATE INDEX history_drug_upper ON ehrledger.history_1 (upper(drug));
CREATE INDEX history_high_ids ON ehrledger.history_1 (id) WHERE id > 1000;
INSERT INTO medication_request VALUES (5, 'pat-4', 'warfarin', 'active'), (1001, 'pat-5', 'heparin', 'active');
UPDATE medication_request SET status = 'stopped' WHERE id IN (5, 1001);
SET enable_seqscan = off;
SET enable_bitmapscan = off;
SELECT id, drug, status FROM ehrledger.history_1 WHERE upper(drug) = 'WARFARIN';
SELECT id, drug, status FROM ehrledger.history_1 WHERE id > 1000;
SELECT count(*) AS in_partial_index FROM ehrledger.history_1 WHERE id > 1000 AND upper(drug) <> '';
RESET enable_seqscan;
RESET enable_bitmapscan;

DROP EXTENSION ehrledger CASCADE;
DROP TABLE medication_request, plain_ledger, ehrledger.history_1;
DROP FUNCTION count_changes();
DROP ROLE clinician;
DROP ROLE outsider;
