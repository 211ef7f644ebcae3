-- Partitioned tables: protect() of a partitioned table protects every
-- partition, present and future, each a ledger table of its own; every
-- function that takes a table works through the partitioned table.
CREATE EXTENSION ehrledger;
\set SHOW_CONTEXT never
CREATE ROLE part_owner;
CREATE ROLE part_reader;
CREATE ROLE part_nobody;
GRANT CREATE ON SCHEMA public TO part_owner;

-- A hospital's observations, by month, owned by the application's role;
-- rows are already there, in a default partition too, and one partition
-- is itself partitioned (by patient, in two lists).
SET ROLE part_owner;
CREATE TABLE observation (
    id       int NOT NULL,
    taken    date NOT NULL,
    patient  text NOT NULL,
    resource jsonb
) PARTITION BY RANGE (taken);
CREATE TABLE observation_2024_01 PARTITION OF observation
    FOR VALUES FROM ('2024-01-01') TO ('2024-02-01');
CREATE TABLE observation_2024_02 PARTITION OF observation
    FOR VALUES FROM ('2024-02-01') TO ('2024-03-01') PARTITION BY LIST (patient);
CREATE TABLE observation_2024_02_a PARTITION OF observation_2024_02 FOR VALUES IN ('pat-1', 'pat-2');
CREATE TABLE observation_2024_02_b PARTITION OF observation_2024_02 DEFAULT;
CREATE TABLE observation_other PARTITION OF observation DEFAULT;
INSERT INTO observation VALUES
    (1, '2024-01-05', 'pat-1', '{"code": "8867-4", "value": 72}'),
    (2, '2024-02-07', 'pat-2', '{"code": "8867-4", "value": 80}'),
    (3, '2024-02-08', 'pat-3', '{"code": "8867-4", "value": 64}'),
    (4, '2023-12-30', 'pat-1', '{"code": "8867-4", "value": 70}');
GRANT SELECT, INSERT ON observation TO part_reader;
RESET ROLE;

SELECT ehrledger.protect('observation');
-- One ledger table per partition, each under the partitioned table above it.
SELECT tbl, table_id, mode, partitioned, partition_of, rows_at_protect
  FROM ehrledger.protected_tables WHERE NOT internal ORDER BY table_id;
-- The ledger's columns come from the partitioned table: NOT NULL there,
-- and so in every partition, each with its own unique index.
SELECT c.relname, a.attname, a.attnotnull
  FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
 WHERE c.relname LIKE 'observation%' AND a.attname LIKE 'ledger%' AND c.relkind IN ('r', 'p')
 ORDER BY 1, 2;
SELECT indexrelid::regclass FROM pg_index WHERE indrelid::regclass::text LIKE 'observation%' ORDER BY 1;

-- The application writes through the partitioned table, as before.
SET ROLE part_reader;
INSERT INTO observation VALUES (5, '2024-01-09', 'pat-2', '{"code": "8310-5", "value": 37.2}')
RETURNING id, ledger_seq, length(ledger_hash);
RESET ROLE;

-- A partition created later, and a table attached later, with rows in it
-- that claim ledger numbers and hashes of their own: renumbered and
-- rehashed as they enter the ledger.
SET ROLE part_owner;
CREATE TABLE observation_2024_03 PARTITION OF observation
    FOR VALUES FROM ('2024-03-01') TO ('2024-04-01');
CREATE TABLE observation_2024_04 (LIKE observation);
INSERT INTO observation_2024_04 VALUES
    (6, '2024-04-02', 'pat-1', '{"code": "8867-4", "value": 75}', 1, '\xdeadbeef'),
    (7, '2024-04-03', 'pat-3', '{"code": "8867-4", "value": 66}', 1, '\xdeadbeef');
ALTER TABLE observation ATTACH PARTITION observation_2024_04
    FOR VALUES FROM ('2024-04-01') TO ('2024-05-01');
RESET ROLE;
SELECT tbl, table_id, partition_of, rows_at_protect
  FROM ehrledger.protected_tables WHERE table_id > 6 AND NOT internal ORDER BY table_id;
SELECT id, ledger_seq > 1 AS renumbered, length(ledger_hash) FROM observation_2024_04 ORDER BY id;
INSERT INTO observation VALUES (8, '2024-03-15', 'pat-1', '{"code": "8867-4", "value": 74}');
SELECT ehrledger.seal() IS NOT NULL AS sealed;

-- verify(): of the partitioned table, of one partition, of the ledger.
SELECT ok, rows_checked, problems FROM ehrledger.verify('observation');
SELECT ok, rows_checked FROM ehrledger.verify('observation_2024_02');
SELECT ok, rows_checked FROM ehrledger.verify('observation_2024_04');
SELECT ok FROM ehrledger.verify();

-- proof(), row_encoding(), sealed_row() find the partition that holds the
-- row; the proof names it, and checks as ehrledger-verify checks it.
CREATE TABLE digest AS SELECT ehrledger.digest() AS d;
SELECT (SELECT ledger_seq FROM observation WHERE id = 1) AS seq1,
       (SELECT ledger_seq FROM observation WHERE id = 3) AS seq3 \gset
SELECT ehrledger.proof('observation', :seq1)->>'table' AS proof_1,
       ehrledger.proof('observation', :seq3)->>'table' AS proof_3;
SELECT verdict FROM digest, ehrledger.check_proof(ehrledger.proof('observation', :seq3, d)::text, d::text);
SELECT ehrledger.row_encoding('observation', :seq1) = ehrledger.row_encoding('observation_2024_01', :seq1) AS same;
SELECT ehrledger.sealed_row('observation', :seq3);
SELECT ehrledger.proof('observation', 999999);
SELECT ehrledger.row_encoding('observation', 999999) IS NULL AS none;
SELECT ehrledger.check_hashable('observation');

-- export(): one document, the blocks once, then each partition's part.
SELECT line::jsonb->'partitions' FROM ehrledger.export('observation') LIMIT 1;
SELECT line::jsonb->'partition'->>'table' AS part FROM ehrledger.export('observation')
 WHERE line LIKE '{"partition"%';
SELECT verdict FROM digest,
       ehrledger.check_export((SELECT string_agg(line, E'\n') FROM ehrledger.export('observation')), d::text);

-- A tampered row in a partition (a superuser, behind the triggers) is
-- found by verify() of the partitioned table; its export no longer checks.
SET session_replication_role = replica;
ALTER TABLE observation_2024_02_b DISABLE TRIGGER ALL;
UPDATE observation_2024_02_b SET resource = '{"code": "8867-4", "value": 46}' WHERE id = 3;
ALTER TABLE observation_2024_02_b ENABLE ALWAYS TRIGGER zz_ehrledger_insert,
    ENABLE ALWAYS TRIGGER ehrledger_append_only, ENABLE ALWAYS TRIGGER ehrledger_no_truncate;
RESET session_replication_role;
SELECT ok, jsonb_path_query_array(problems, '$[*].kind') AS kinds,
       jsonb_path_query_array(problems, '$[*].table') AS tables
  FROM ehrledger.verify('observation');
SELECT verdict FROM digest,
       ehrledger.check_export((SELECT string_agg(line, E'\n') FROM ehrledger.export('observation')), d::text);
SET session_replication_role = replica;
ALTER TABLE observation_2024_02_b DISABLE TRIGGER ALL;
UPDATE observation_2024_02_b SET resource = '{"code": "8867-4", "value": 64}' WHERE id = 3;
ALTER TABLE observation_2024_02_b ENABLE ALWAYS TRIGGER zz_ehrledger_insert,
    ENABLE ALWAYS TRIGGER ehrledger_append_only, ENABLE ALWAYS TRIGGER ehrledger_no_truncate;
RESET session_replication_role;
SELECT ok FROM ehrledger.verify('observation');

-- The schema guard: partitions stay until they are retired.
ALTER TABLE observation DETACH PARTITION observation_2024_01;
ALTER TABLE observation DETACH PARTITION observation_2024_01 CONCURRENTLY;
ALTER TABLE observation_2024_02 DETACH PARTITION observation_2024_02_a;
DROP TABLE observation_2024_03;
DROP TABLE observation;
ALTER TABLE observation DROP COLUMN resource;
ALTER TABLE observation_2024_03 DISABLE TRIGGER zz_ehrledger_insert;
DROP INDEX observation_2024_03_ledger_seq_idx;
UPDATE observation SET patient = 'pat-9' WHERE id = 1;
DELETE FROM observation;
TRUNCATE observation;
-- A column added to the partitioned table reaches every partition, and is
-- recorded for each.
ALTER TABLE observation ADD COLUMN note text;
SELECT count(*) FROM ehrledger.registered_table
 WHERE columns @> '[{"name": "note"}]' AND (relid = 'observation'::regclass OR partition_of IS NOT NULL);
-- Retired, a partition may go.
SELECT ehrledger.retire('observation_2024_03', 'moved to the archive');
ALTER TABLE observation DETACH PARTITION observation_2024_03;
DROP TABLE observation_2024_03;
SELECT ehrledger.seal() IS NOT NULL AS sealed;
SELECT ok, problems FROM ehrledger.verify('observation');

-- Hostile attachments by the table's owner: refused, each with why.
SET ROLE part_owner;
CREATE UNLOGGED TABLE obs_unlogged (LIKE observation);
ALTER TABLE observation ATTACH PARTITION obs_unlogged FOR VALUES FROM ('2024-06-01') TO ('2024-07-01');
CREATE TABLE obs_trigger (LIKE observation);
CREATE TRIGGER zz_ehrledger_insert BEFORE INSERT ON obs_trigger FOR EACH ROW EXECUTE FUNCTION ehrledger.insert_row('1');
ALTER TABLE observation ATTACH PARTITION obs_trigger FOR VALUES FROM ('2024-06-01') TO ('2024-07-01');
CREATE TABLE obs_generated (id int NOT NULL, taken date NOT NULL, patient text NOT NULL, resource jsonb,
                            ledger_seq bigint NOT NULL, ledger_hash bytea NOT NULL GENERATED ALWAYS AS ('\x00') STORED,
                            ledger_salt bytea, note text);
ALTER TABLE observation ATTACH PARTITION obs_generated FOR VALUES FROM ('2024-06-01') TO ('2024-07-01');
CREATE TABLE obs_protected (LIKE observation);
RESET ROLE;
CREATE TABLE obs_own (LIKE observation EXCLUDING ALL);
ALTER TABLE obs_own DROP COLUMN ledger_seq, DROP COLUMN ledger_hash, DROP COLUMN ledger_salt;
SELECT ehrledger.protect('obs_own');
ALTER TABLE obs_own OWNER TO part_owner;
SET ROLE part_owner;
ALTER TABLE observation ATTACH PARTITION obs_own FOR VALUES FROM ('2024-06-01') TO ('2024-07-01');
-- A rule that rewrites writes to it.
CREATE TABLE obs_rule (LIKE observation);
CREATE RULE no_insert AS ON INSERT TO obs_rule DO INSTEAD NOTHING;
ALTER TABLE observation ATTACH PARTITION obs_rule FOR VALUES FROM ('2024-06-01') TO ('2024-07-01');
RESET ROLE;
SELECT count(*) AS partitions FROM ehrledger.protected_tables WHERE partition_of IS NOT NULL;

-- A role without grants learns nothing through the partitioned table.
SET ROLE part_nobody;
SELECT * FROM ehrledger.verify('observation');
SELECT ehrledger.proof('observation', :seq1);
SELECT count(*) FROM ehrledger.export('observation');
SELECT ehrledger.row_encoding('observation', :seq1);
SELECT ehrledger.sealed_row('observation', :seq1);
SELECT ehrledger.protect('obs_protected');
SELECT ehrledger.retire('observation', 'no');
RESET ROLE;
-- SELECT on the partitioned table is enough, as for a query of it.
SET ROLE part_reader;
SELECT ok FROM ehrledger.verify('observation');
SELECT ehrledger.proof('observation', :seq3)->>'table' AS proof_3;
RESET ROLE;

-- Versioned: updates and deletes keep every version, in each partition's
-- history; an update that moves a row to another partition ends its
-- version once, and the new version lives in the new partition.
CREATE TABLE medication_request (
    id     int NOT NULL,
    month  date NOT NULL,
    status text NOT NULL
) PARTITION BY RANGE (month);
CREATE TABLE medication_request_01 PARTITION OF medication_request FOR VALUES FROM ('2024-01-01') TO ('2024-02-01');
CREATE TABLE medication_request_02 PARTITION OF medication_request FOR VALUES FROM ('2024-02-01') TO ('2024-03-01');
INSERT INTO medication_request VALUES (1, '2024-01-01', 'active'), (2, '2024-02-01', 'active');
SELECT ehrledger.protect('medication_request', mode => 'versioned');
SELECT tbl, history IS NOT NULL AS has_history FROM ehrledger.protected_tables
 WHERE tbl::text LIKE 'medication_request%' ORDER BY table_id;
UPDATE medication_request SET status = 'on-hold' WHERE id = 1;
UPDATE medication_request SET month = '2024-02-01', status = 'active' WHERE id = 1;
DELETE FROM medication_request WHERE id = 2;
SELECT tableoid::regclass, id, status FROM medication_request;
SELECT row, current, ended_how FROM ehrledger.history('medication_request') ORDER BY ledger_seq;
SELECT ehrledger.seal() IS NOT NULL AS sealed;
SELECT ok, rows_checked FROM ehrledger.verify('medication_request');
SELECT verdict FROM ehrledger.check_export(
    (SELECT string_agg(line, E'\n') FROM ehrledger.export('medication_request')), ehrledger.digest()::text);
SELECT * FROM ehrledger.history('observation');

-- Signed: authors sign a row under the partitioned table's name, whatever
-- partition it goes to; a partition whose columns are in another order
-- cannot join.
CREATE TABLE prescription (
    id         int NOT NULL,
    written    date NOT NULL,
    drug       text NOT NULL,
    prescriber text NOT NULL,
    signature  bytea
) PARTITION BY RANGE (written);
CREATE TABLE prescription_2024 PARTITION OF prescription FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
SELECT ehrledger.protect('prescription', signer_column => 'prescriber', signature_column => 'signature');
CREATE TABLE keys AS SELECT * FROM ehrledger.keypair();
SELECT ehrledger.register_actor('dr-p', 'provider', (SELECT public_key FROM keys));
INSERT INTO prescription
SELECT 1, '2024-03-01', 'amoxicillin', 'dr-p',
       ehrledger.sign(ehrledger.signing_payload('prescription',
                          '{"id": 1, "written": "2024-03-01", "drug": "amoxicillin", "prescriber": "dr-p"}'),
                      (SELECT secret_key FROM keys));
INSERT INTO prescription VALUES (2, '2024-03-02', 'ibuprofen', 'dr-p', '\x00');
SELECT ehrledger.seal() IS NOT NULL AS sealed;
SELECT valid, signer, detail LIKE 'signed by dr-p and sealed in block%' AS sealed
  FROM ehrledger.verify_record('prescription', (SELECT ledger_seq FROM prescription WHERE id = 1));
SELECT ehrledger.signing_payload('prescription', '{"id": 1}') = ehrledger.signing_payload('prescription_2024', '{"id": 1}') AS same_payload;
CREATE TABLE prescription_2025 (written date NOT NULL, id int NOT NULL, drug text NOT NULL, prescriber text NOT NULL,
                                signature bytea, ledger_seq bigint NOT NULL, ledger_hash bytea NOT NULL, ledger_salt bytea);
ALTER TABLE prescription ATTACH PARTITION prescription_2025 FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
SELECT p->>'resourceType', jsonb_array_length(p->'signature')
  FROM ehrledger.provenance_fhir('prescription', (SELECT ledger_seq FROM prescription WHERE id = 1)) p;

-- Consent: policies on the partitioned table (for queries of it) and on
-- each partition; a consent scoped to the partitioned table covers its
-- partitions; the access log names the table that was read.
CREATE TABLE encounter (
    id         int NOT NULL,
    at         date NOT NULL,
    patient_id text NOT NULL,
    note       text
) PARTITION BY RANGE (at);
CREATE TABLE encounter_2024 PARTITION OF encounter FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
INSERT INTO encounter VALUES (1, '2024-05-01', 'pat-1', 'checkup'), (2, '2024-05-02', 'pat-2', 'flu');
SELECT ehrledger.protect('encounter', patient_column => 'patient_id', category => 'encounters');
CREATE TABLE encounter_2025 PARTITION OF encounter FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
SELECT c.relname, count(*) AS policies, bool_and(c.relrowsecurity) AS rls
  FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid WHERE c.relname LIKE 'encounter%' GROUP BY 1 ORDER BY 1;
CREATE ROLE part_doc;
CREATE ROLE part_pat;
GRANT SELECT, INSERT ON encounter, encounter_2024 TO part_doc;
SELECT ehrledger.register_actor('dr-e', 'provider', (ehrledger.keypair()).public_key, 'part_doc');
CREATE TABLE pat_key AS SELECT * FROM ehrledger.keypair();
SELECT ehrledger.register_actor('pat-1', 'patient', (SELECT public_key FROM pat_key), 'part_pat');
SET ROLE part_doc;
SELECT id FROM encounter;
RESET ROLE;
SET ROLE part_pat;
SELECT ehrledger.grant_consent('pat-1', 'dr-e', 'encounter', actions => '{read,write}');
RESET ROLE;
SET ROLE part_doc;
SELECT id, patient_id FROM encounter;
SELECT id FROM encounter_2024;
INSERT INTO encounter VALUES (3, '2025-02-01', 'pat-1', 'follow-up');
INSERT INTO encounter VALUES (4, '2025-02-01', 'pat-2', 'no consent');
RESET ROLE;
SELECT actor, action, tbl, basis FROM ehrledger.access_history('pat-1') ORDER BY event_seq;
-- verify() of a table under row-level security needs an auditor (or BYPASSRLS).
SET ROLE part_doc;
SELECT ok FROM ehrledger.verify('encounter');
RESET ROLE;
-- The consent policies of the partitioned table are guarded like a table's.
DROP POLICY ehrledger_read ON encounter;
ALTER TABLE encounter DISABLE ROW LEVEL SECURITY;
-- A partition with policies of its own would widen what consents allow.
CREATE TABLE encounter_2026 (LIKE encounter);
ALTER TABLE encounter_2026 ENABLE ROW LEVEL SECURITY;
CREATE POLICY everyone ON encounter_2026 USING (true);
ALTER TABLE encounter ATTACH PARTITION encounter_2026 FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');

-- Erasure, by an admin actor, of a row named through the partitioned table.
CREATE ROLE part_admin;
SELECT ehrledger.register_actor('admin-1', 'admin', (ehrledger.keypair()).public_key, 'part_admin');
SELECT ehrledger.seal() IS NOT NULL AS sealed;
SELECT ledger_seq AS seq2 FROM encounter WHERE id = 2 \gset
-- What a second admin or the patient would sign names the table as asked.
SELECT ehrledger.erase_payload('encounter', :seq2, 'filed in the wrong chart')
     <> ehrledger.erase_payload('encounter_2024', :seq2, 'filed in the wrong chart') AS names_the_table;
SET ROLE part_admin;
SELECT ehrledger.erase('encounter', :seq2, 'filed in the wrong chart');
RESET ROLE;
SELECT ehrledger.seal() IS NOT NULL AS sealed;
-- With the patient's approval, signed over the request as the admin makes it.
SET ehrledger.erasure_approval = 'patient';
SELECT ledger_seq AS seq3 FROM encounter WHERE id = 3 \gset
SELECT encode(ehrledger.sign(ehrledger.erase_payload('encounter', :seq3, 'duplicate'),
                             (SELECT secret_key FROM pat_key)), 'hex') AS approval \gset
SET ROLE part_admin;
SELECT ehrledger.erase('encounter', :seq3, 'duplicate', decode(:'approval', 'hex'), 'pat-1');
RESET ROLE;
RESET ehrledger.erasure_approval;
SELECT ehrledger.seal() IS NOT NULL AS sealed;
SELECT ok, jsonb_array_length(erased) AS erased FROM ehrledger.verify('encounter');
SELECT ehrledger.proof('encounter', :seq2) ? 'erasure' AS erased_proof;
SELECT verdict FROM ehrledger.check_export(
    (SELECT string_agg(line, E'\n') FROM ehrledger.export('encounter')), ehrledger.digest()::text);

-- share(): every partition, and those to come.
SELECT ehrledger.share('observation');
CREATE TABLE observation_2024_05 PARTITION OF observation FOR VALUES FROM ('2024-05-01') TO ('2024-06-01');
INSERT INTO observation VALUES (9, '2024-05-02', 'pat-1', '{"code": "8867-4", "value": 71}');
SELECT table_name, ledger_seq = (SELECT ledger_seq FROM observation WHERE id = 9) AS shared_row
  FROM ehrledger.shared_rows WHERE row->>'id' = '9';
SELECT relid::regclass, shared FROM ehrledger.registered_table
 WHERE relid::regclass::text LIKE 'observation%' ORDER BY table_id;

-- retire() of a partitioned table retires its partitions; it may then go.
SELECT ehrledger.retire('medication_request', 'replaced');
SELECT tbl, retired_at IS NOT NULL AS retired FROM ehrledger.protected_tables
 WHERE tbl::text LIKE 'medication_request%' ORDER BY table_id;
SELECT tbl, live_rows FROM ehrledger.retirement WHERE tbl LIKE 'public.medication_request%' ORDER BY table_id;
DROP TABLE medication_request;

SET client_min_messages = warning;
DROP EXTENSION ehrledger CASCADE;
DROP TABLE observation, obs_unlogged, obs_trigger, obs_generated, obs_protected, obs_own, obs_rule,
           prescription, prescription_2025, encounter, encounter_2026, keys, pat_key, digest CASCADE;
DROP SCHEMA IF EXISTS ehrledger CASCADE;
REVOKE CREATE ON SCHEMA public FROM part_owner;
DROP ROLE part_owner, part_reader, part_nobody, part_doc, part_pat, part_admin;
