-- Erasure: a note filed in the wrong chart, or a patient's right to
-- erasure.  ehrledger.erase() and erase_patient() remove sealed row
-- versions (an earlier version of a versioned table with the end of it);
-- their leaves stay in their blocks, and a ledgered record in
-- ehrledger.erasure names each erased leaf.  Afterwards verify() is ok and
-- lists them as erased; proofs of every other row, consistency proofs, old
-- digests and exports still hold, and the offline checks accept an erased
-- row only with the record that names its leaf.
CREATE EXTENSION ehrledger;
\set SHOW_CONTEXT never
SET client_min_messages = warning;
CREATE ROLE erasure_admin;      -- admin adm-1
CREATE ROLE erasure_admin2;     -- admin adm-2
CREATE ROLE erasure_doc;        -- provider dr-a
CREATE ROLE erasure_owner;      -- owns the tables
CREATE ROLE erasure_nobody;     -- no actor, no grants
RESET client_min_messages;

CREATE TEMP TABLE keys AS
SELECT who, (kp).public_key, (kp).secret_key
  FROM (SELECT who, ehrledger.keypair() AS kp
          FROM unnest(ARRAY['adm-1', 'adm-2', 'dr-a', 'pat-1', 'pat-2']) AS w(who)) k;
SELECT ehrledger.register_actor(w.who, w.role, k.public_key, w.pg_role)
  FROM (VALUES ('adm-1', 'admin', 'erasure_admin'), ('adm-2', 'admin', 'erasure_admin2'),
               ('dr-a', 'provider', 'erasure_doc'), ('pat-1', 'patient', NULL),
               ('pat-2', 'patient', NULL)) AS w(who, role, pg_role)
  JOIN keys k ON k.who = w.who;

GRANT SELECT ON keys TO erasure_admin, erasure_admin2, erasure_doc;

-- Three tables with a patient column: append-only, versioned, signed.
CREATE TABLE observation (id int PRIMARY KEY, patient text NOT NULL, code text NOT NULL);
CREATE TABLE note (id int PRIMARY KEY, patient text NOT NULL, body text NOT NULL);
CREATE TABLE prescription (id int PRIMARY KEY, patient text NOT NULL, drug text NOT NULL,
                           prescriber text, signature bytea);
ALTER TABLE observation OWNER TO erasure_owner;
ALTER TABLE note OWNER TO erasure_owner;
ALTER TABLE prescription OWNER TO erasure_owner;
SELECT ehrledger.protect('observation', patient_column => 'patient');
SELECT ehrledger.protect('note', mode => 'versioned', patient_column => 'patient');
SELECT ehrledger.protect('prescription', patient_column => 'patient',
                         signer_column => 'prescriber', signature_column => 'signature');
INSERT INTO observation SELECT g, 'pat-' || (1 + g % 2), 'code-' || g FROM generate_series(1, 11) g;
INSERT INTO note VALUES (1, 'pat-1', 'first'), (2, 'pat-2', 'second');
INSERT INTO prescription
SELECT g, 'pat-' || (1 + g % 2), 'drug-' || g, 'dr-a',
       ehrledger.sign(ehrledger.signing_payload('prescription',
                          jsonb_build_object('id', g, 'patient', 'pat-' || (1 + g % 2), 'drug', 'drug-' || g,
                                             'prescriber', 'dr-a')),
                      (SELECT secret_key FROM keys WHERE who = 'dr-a'))
  FROM generate_series(1, 2) g;
SELECT ehrledger.seal();
UPDATE note SET body = 'first, revised' WHERE id = 1;
UPDATE note SET body = 'first, revised again' WHERE id = 1;
DELETE FROM note WHERE id = 2;
SELECT ehrledger.seal();
-- An auditor's digest, taken before any erasure.
CREATE TEMP TABLE kept AS SELECT ehrledger.digest() AS d;
SELECT ledger_seq AS obs1, ledger_hash AS obs1_hash FROM observation WHERE id = 1 \gset
SELECT ledger_seq AS obs2 FROM observation WHERE id = 2 \gset
SELECT ledger_seq AS note1_first, ended_seq AS note1_first_end
  FROM ehrledger.history('note') WHERE row->>'body' = 'first' \gset

-- Only an admin actor erases: not a role with no grants, not a provider,
-- not a superuser that is no actor.  A table owner's DELETE stays refused.
SET ROLE erasure_nobody;
SELECT ehrledger.erase('observation', :obs1, 'filed in the wrong chart');
SET ROLE erasure_doc;
SELECT ehrledger.erase('observation', :obs1, 'filed in the wrong chart');
SELECT ehrledger.erase_patient('pat-1', 'erasure request');
RESET ROLE;
SELECT ehrledger.erase('observation', :obs1, 'filed in the wrong chart');
SET ROLE erasure_owner;
DELETE FROM observation WHERE id = 1;
RESET ROLE;
-- Nor does an erasure record come from anywhere but an erasure.
INSERT INTO ehrledger.erasure (table_id, erased_seq, leaf_hash, erased_by, approved_by, erased_at, reason)
VALUES (1, :obs1, :'obs1_hash', 'adm-1', 'adm-1', now(), 'forged');

-- The admin erases one row: it is gone, its leaf stays, and one ledgered
-- record names it (nothing of the content).
SET ROLE erasure_admin;
SELECT ehrledger.erase('observation', :obs1, 'filed in the wrong chart');
RESET ROLE;
SELECT count(*) AS rows_left FROM observation WHERE id = 1;
SELECT e.table_id, e.erased_seq = :obs1 AS its_seq, e.leaf_hash = :'obs1_hash' AS its_leaf,
       e.erased_by, e.approved_by, e.approval IS NULL AS unsigned, e.reason
  FROM ehrledger.erasure e;
SELECT ok, problems, jsonb_array_length(erased) AS erased,
       erased->0->>'table' AS tbl, (erased->0->>'ledger_seq')::bigint = :obs1 AS its_seq
  FROM ehrledger.verify();
SELECT ok, jsonb_array_length(erased) AS erased FROM ehrledger.verify('observation');
SELECT ok, erased FROM ehrledger.verify('note');

-- What erase() refuses, each with its own SQLSTATE.
SET ROLE erasure_admin;
SELECT ehrledger.erase(NULL, 1, 'x');
SELECT ehrledger.erase('observation', NULL, 'x');
SELECT ehrledger.erase('observation', :obs2, NULL);
SELECT ehrledger.erase('observation', :obs2, '   ');
SELECT ehrledger.erase('observation', :obs1, 'again');
SELECT ehrledger.erase('observation', 999999, 'unknown');
SELECT ehrledger.erase('observation', :note1_first, 'a row of another table');
SELECT ehrledger.erase('note', :note1_first_end, 'the end of a version');
SELECT ehrledger.erase('ehrledger.consent_event', 1, 'the ledger''s own');
SELECT ehrledger.erase('ehrledger.erasure', 1, 'the ledger''s own');
SELECT ehrledger.erase((SELECT history FROM ehrledger.protected_tables WHERE tbl = 'note'::regclass),
                       :note1_first, 'the history table');
SELECT ehrledger.erase('keys', 1, 'not protected');
RESET ROLE;
-- A retired table and a table a foreign key references are refused; a
-- shared table's row is erased with this node's copy, and a signed notice
-- for the other hospitals (test/t/023_network_erasure.pl) is kept.
SET client_min_messages = warning;
CREATE TABLE old_obs (id int PRIMARY KEY, patient text);
SELECT ehrledger.protect('old_obs', patient_column => 'patient');
INSERT INTO old_obs VALUES (1, 'pat-1');
SELECT ehrledger.retire('old_obs', 'moved to the archive');
CREATE TABLE encounter (id int PRIMARY KEY, patient text NOT NULL);
CREATE TABLE vital (id int PRIMARY KEY, encounter int REFERENCES encounter);
SELECT ehrledger.protect('encounter', patient_column => 'patient');
INSERT INTO encounter VALUES (1, 'pat-2');
CREATE TABLE shared_obs (id int PRIMARY KEY, patient text NOT NULL);
SELECT ehrledger.protect('shared_obs', patient_column => 'patient');
SELECT ehrledger.share('shared_obs');
INSERT INTO shared_obs VALUES (1, 'pat-2');
SELECT ehrledger.seal() > 0 AS sealed;
RESET client_min_messages;
SELECT min(ledger_seq) AS old1 FROM old_obs \gset
SELECT min(ledger_seq) AS enc1 FROM encounter \gset
SELECT min(ledger_seq) AS shared1 FROM shared_obs \gset
SET ROLE erasure_admin;
SELECT ehrledger.erase('old_obs', :old1, 'retired');
SELECT ehrledger.erase('encounter', :enc1, 'referenced');
SELECT ehrledger.erase('shared_obs', :shared1, 'shared');
RESET ROLE;
SELECT (SELECT count(*) FROM ehrledger.shared_row WHERE ledger_seq = :shared1) AS copies_left,
       (SELECT copies_removed FROM ehrledger.erasure_notice WHERE erased_seq = :shared1) AS copies_removed,
       (SELECT ehrledger.verify_signature(ehrledger.erasure_message(origin, erased_seq, table_id, leaf_hash),
                                          signature, ehrledger.node_public_key())
          FROM ehrledger.erasure_notice WHERE erased_seq = :shared1) AS signed;
-- An erasure seals what is committed first; a row written in the erasing
-- transaction itself is sealed with it (the row, its block and its erasure
-- commit, or roll back, together).
BEGIN;
INSERT INTO observation VALUES (100, 'pat-1', 'late');
SELECT ledger_seq AS late FROM observation WHERE id = 100 \gset
SET LOCAL ROLE erasure_admin;
SELECT ehrledger.erase('observation', :late, 'not sealed');
ROLLBACK;
-- The referenced table keeps erase_patient() from pat-2.
SET ROLE erasure_admin;
SELECT ehrledger.erase_patient('pat-2', 'erasure request');
RESET ROLE;
SET client_min_messages = warning;
SELECT ehrledger.retire('shared_obs', 'no longer shared');
SELECT ehrledger.retire('encounter', 'no longer kept');
RESET client_min_messages;

-- An earlier version of a versioned table goes with the end of it: two
-- erased leaves, two records.
SET ROLE erasure_admin;
SELECT ehrledger.erase('note', :note1_first, 'filed in the wrong chart');
RESET ROLE;
SELECT count(*) AS versions_left FROM ehrledger.history('note') WHERE ledger_seq = :note1_first;
SELECT erased_seq = :note1_first AS version, erased_seq = :note1_first_end AS end_of_it
  FROM ehrledger.erasure WHERE table_id = (SELECT table_id FROM ehrledger.protected_tables WHERE tbl = 'note'::regclass)
 ORDER BY erased_seq;
SELECT ok, problems, jsonb_array_length(erased) AS erased FROM ehrledger.verify('note');

-- Proofs.  An erased row's proof carries its leaf, still proven, and the
-- erasure record with its own proof; the offline check accepts it only as
-- it is.
SELECT ehrledger.seal() > 0 AS sealed;
CREATE TEMP TABLE now_digest AS SELECT ehrledger.digest() AS d;
CREATE TEMP TABLE erased_proof AS SELECT ehrledger.proof('observation', :obs1) AS p;
SELECT ARRAY(SELECT jsonb_object_keys(p) ORDER BY 1) AS members,
       p->>'leaf' = encode(:'obs1_hash', 'hex') AS its_leaf,
       ARRAY(SELECT jsonb_object_keys(p->'erasure') ORDER BY 1) AS erasure_members
  FROM erased_proof;
SELECT verdict, split_part(detail, ':', 1) AS what
  FROM erased_proof, now_digest, ehrledger.check_proof(p::text, d::text);
SELECT verdict, detail ~ 'erased at .* by adm-1, approved by adm-1, because: filed in the wrong chart' AS says_who
  FROM erased_proof, now_digest, ehrledger.check_proof(p::text, d::text);
SELECT verdict FROM erased_proof, now_digest,
       ehrledger.check_proof(jsonb_set(p, '{leaf}', to_jsonb(repeat('0', 64)))::text, d::text);
SELECT verdict FROM erased_proof, now_digest,
       ehrledger.check_proof(jsonb_set(p, '{erasure,ledger_seq}', to_jsonb((p->'erasure'->>'ledger_seq')::int + 1))::text, d::text);
SELECT verdict, detail FROM erased_proof, now_digest,
       ehrledger.check_proof((p - 'erasure')::text, d::text);
SELECT verdict FROM erased_proof, now_digest,
       ehrledger.check_proof((p || jsonb_build_object('row', '{}'::jsonb))::text, d::text);
-- Against the digest taken before the erasure, the erasure is not in that
-- state: no proof of the erased row with it.
SELECT ehrledger.proof('observation', :obs1, (SELECT d FROM kept));
-- Every other row still proves, against the old digest and the new one; the
-- new digest's chain extends the old one's; the old digest still verifies.
SELECT verdict FROM kept, ehrledger.check_proof(ehrledger.proof('observation', :obs2, kept.d)::text, kept.d::text);
SELECT verdict FROM now_digest, ehrledger.check_proof(ehrledger.proof('observation', :obs2)::text, d::text);
SELECT verdict FROM kept, now_digest n,
       ehrledger.check_consistency(ehrledger.consistency_proof(kept.d, n.d)::text, kept.d::text, n.d::text);
SELECT ok, problems FROM kept, ehrledger.verify(digest => kept.d);

-- Exports carry each erased leaf as its erasure record, and check offline.
SELECT count(*) FILTER (WHERE line::jsonb ? 'erased') AS erased_lines,
       count(*) FILTER (WHERE line::jsonb ? 'row') AS row_lines
  FROM ehrledger.export('note');
SELECT t, verdict, detail ~ 'erased leaves are each named by an erasure record' AS names_erased
  FROM unnest(ARRAY['observation', 'note', 'prescription']) t, now_digest,
       LATERAL (SELECT string_agg(line, E'\n') AS x FROM ehrledger.export(t::regclass)) e,
       ehrledger.check_export(e.x, d::text);
-- An erased line whose record is changed, or left out, does not check.
SELECT verdict, detail FROM now_digest,
       LATERAL (SELECT string_agg(CASE WHEN line::jsonb ? 'erased'
                                       THEN jsonb_set(line::jsonb, '{erased,encoding}',
                                                      to_jsonb(left(line::jsonb->'erased'->>'encoding', -2) || '00'))::text
                                       ELSE line END, E'\n') AS x FROM ehrledger.export('observation')) e,
       ehrledger.check_export(e.x, d::text);
SELECT verdict, detail FROM now_digest,
       LATERAL (SELECT string_agg(line, E'\n') AS x FROM ehrledger.export('observation')
                 WHERE NOT line::jsonb ? 'erased') e,
       ehrledger.check_export(e.x, d::text);

-- ehrledger.erasure_approval = 'patient': the patient's signature over
-- erase_patient_payload() (or erase_payload()) approves, once.
SET ehrledger.erasure_approval = 'patient';
SET ROLE erasure_admin;
SELECT ehrledger.erase_patient('pat-1', 'erasure request of pat-1');
SELECT ehrledger.erase_patient('pat-1', 'erasure request of pat-1',
       ehrledger.sign(ehrledger.erase_patient_payload('pat-1', 'another reason'),
                      (SELECT secret_key FROM keys WHERE who = 'pat-1')));
SELECT ehrledger.erase_patient('pat-1', 'erasure request of pat-1',
       ehrledger.sign(ehrledger.erase_patient_payload('pat-1', 'erasure request of pat-1'),
                      (SELECT secret_key FROM keys WHERE who = 'pat-2')));
SELECT ehrledger.erase_patient('pat-1', 'erasure request of pat-1',
       ehrledger.sign(ehrledger.erase_patient_payload('pat-1', 'erasure request of pat-1'),
                      (SELECT secret_key FROM keys WHERE who = 'pat-1')), approver => 'adm-2');
-- Every version of pat-1 in the three tables: observations 2, 4, 6, 8,
-- 10, the note's two remaining versions, prescription 2.
SELECT ehrledger.erase_patient('pat-1', 'erasure request of pat-1',
       ehrledger.sign(ehrledger.erase_patient_payload('pat-1', 'erasure request of pat-1'),
                      (SELECT secret_key FROM keys WHERE who = 'pat-1')));
SELECT ehrledger.erase_patient('pat-1', 'erasure request of pat-1',
       ehrledger.sign(ehrledger.erase_patient_payload('pat-1', 'erasure request of pat-1'),
                      (SELECT secret_key FROM keys WHERE who = 'pat-1')));
RESET ROLE;
SELECT (SELECT count(*) FROM observation WHERE patient = 'pat-1') AS observations,
       (SELECT count(*) FROM note WHERE patient = 'pat-1') AS notes,
       (SELECT count(*) FROM ehrledger.history('note') WHERE row->>'patient' = 'pat-1') AS note_versions,
       (SELECT count(*) FROM prescription WHERE patient = 'pat-1') AS prescriptions;
SELECT approved_by, approval IS NOT NULL AS signed, count(*) AS leaves
  FROM ehrledger.erasure WHERE reason = 'erasure request of pat-1' GROUP BY 1, 2;
SELECT ok, problems, jsonb_array_length(erased) AS erased FROM ehrledger.verify();
-- Under 'patient', erase() needs the patient of the row.
SELECT min(ledger_seq) AS obs_min FROM observation \gset
SET ROLE erasure_admin;
SELECT ehrledger.erase('observation', :obs_min, 'one row');
SELECT ehrledger.erase('observation', :obs_min, 'one row',
       ehrledger.sign(ehrledger.erase_payload('observation', :obs_min, 'one row'),
                      (SELECT secret_key FROM keys WHERE who = 'pat-2')));
RESET ROLE;

-- 'two_admins': a second, different admin signs the same request.
SET ehrledger.erasure_approval = 'two_admins';
SELECT ledger_seq AS rx1 FROM prescription WHERE id = 1 \gset
SELECT min(ledger_seq) AS obs_min FROM observation \gset
SET ROLE erasure_admin;
SELECT ehrledger.erase('prescription', :rx1, 'wrong patient');
SELECT ehrledger.erase('prescription', :rx1, 'wrong patient',
       ehrledger.sign(ehrledger.erase_payload('prescription', :rx1, 'wrong patient'),
                      (SELECT secret_key FROM keys WHERE who = 'adm-1')), 'adm-1');
SELECT ehrledger.erase('prescription', :rx1, 'wrong patient',
       ehrledger.sign(ehrledger.erase_payload('prescription', :rx1, 'wrong patient'),
                      (SELECT secret_key FROM keys WHERE who = 'dr-a')), 'dr-a');
SELECT ehrledger.erase('prescription', :rx1, 'wrong patient',
       ehrledger.sign(ehrledger.erase_payload('prescription', :rx1, 'wrong patient'),
                      (SELECT secret_key FROM keys WHERE who = 'adm-2')), 'adm-2');
RESET ROLE;
-- Under 'admin' an approval is refused rather than ignored.
SET ehrledger.erasure_approval = 'admin';
SET ROLE erasure_admin;
SELECT ehrledger.erase('observation', :obs_min, 'x', '\x00', 'adm-2');
RESET ROLE;
RESET ehrledger.erasure_approval;
SELECT erased_by, approved_by, approval IS NOT NULL AS signed FROM ehrledger.erasure WHERE reason = 'wrong patient';
-- A role may not lower the setting itself.
SET ROLE erasure_admin;
SET ehrledger.erasure_approval = 'admin';
RESET ROLE;

-- After every erasure: verify(), the old digest, proofs, consistency and
-- exports all still hold.
SELECT ehrledger.seal() > 0 AS sealed;
SELECT ok, problems, jsonb_array_length(erased) AS erased FROM ehrledger.verify();
SELECT ok, problems FROM kept, ehrledger.verify(digest => kept.d);
TRUNCATE now_digest;
INSERT INTO now_digest SELECT ehrledger.digest();
SELECT verdict FROM kept, now_digest n,
       ehrledger.check_consistency(ehrledger.consistency_proof(kept.d, n.d)::text, kept.d::text, n.d::text);
SELECT verdict FROM now_digest, ehrledger.check_proof(ehrledger.proof('prescription', :rx1)::text, d::text);
SELECT verdict FROM now_digest, ehrledger.check_proof(ehrledger.proof('note', :note1_first_end)::text, d::text);
SELECT ehrledger.provenance_fhir('prescription', :rx1);
SELECT t, verdict, detail FROM unnest(ARRAY['observation', 'note', 'prescription']) t, now_digest,
       LATERAL (SELECT string_agg(line, E'\n') AS x FROM ehrledger.export(t::regclass)) e,
       ehrledger.check_export(e.x, d::text) WHERE verdict <> 'valid';
SELECT count(*) AS listed, count(DISTINCT tbl) AS tables FROM ehrledger.erasures;
SET ROLE erasure_doc;
SELECT count(*) AS a_provider_sees FROM ehrledger.erasures;
RESET ROLE;

-- A superuser who deletes a row behind the guards is caught: without a
-- record it is missing; with a record naming another leaf too; with a
-- forged record backdated before the auditor's digest, verify(digest)
-- catches the date, and so does the offline check of an export.
SET session_replication_role = replica;
ALTER TABLE observation DISABLE TRIGGER ALL;
ALTER TABLE ehrledger.erasure DISABLE TRIGGER ehrledger_erasure_only;
RESET session_replication_role;
SELECT ledger_seq AS obs5 FROM observation WHERE id = 5 \gset
SELECT ledger_seq AS obs7, ledger_hash AS obs7_hash FROM observation WHERE id = 7 \gset
SELECT ledger_seq AS obs11, ledger_hash AS obs11_hash FROM observation WHERE id = 11 \gset
DELETE FROM observation WHERE id IN (5, 7, 11);
SELECT ok, problems FROM ehrledger.verify('observation');
INSERT INTO ehrledger.erasure (table_id, erased_seq, leaf_hash, erased_by, approved_by, erased_at, reason)
VALUES (1, :obs5, sha256('another leaf'), 'adm-1', 'adm-1', now(), 'forged');
-- Backdated between the sealing of the row (block 1) and the auditor's
-- digest (block 2).
INSERT INTO ehrledger.erasure (table_id, erased_seq, leaf_hash, erased_by, approved_by, erased_at, reason)
SELECT 1, :obs7, :'obs7_hash', 'adm-1', 'adm-1', b1.sealed_at + (b2.sealed_at - b1.sealed_at) / 2, 'forged'
  FROM ehrledger.blocks b1, ehrledger.blocks b2 WHERE b1.height = 1 AND b2.height = 2;
-- Backdated before the row was even sealed: caught without a digest.
INSERT INTO ehrledger.erasure (table_id, erased_seq, leaf_hash, erased_by, approved_by, erased_at, reason)
SELECT 1, :obs11, :'obs11_hash', 'adm-1', 'adm-1', sealed_at - interval '1 hour', 'forged'
  FROM ehrledger.blocks WHERE height = 1;
SELECT ehrledger.seal() > 0 AS sealed;
SELECT ok, jsonb_pretty(regexp_replace(problems::text, '\d{4}-\d\d-\d\dT[0-9:.]+Z', '<time>', 'g')::jsonb)
  FROM ehrledger.verify('observation');
SELECT ok, jsonb_pretty(regexp_replace(problems::text, '\d{4}-\d\d-\d\dT[0-9:.]+Z', '<time>', 'g')::jsonb)
  FROM kept, ehrledger.verify('observation', kept.d);
SELECT verdict, regexp_replace(detail, '\d{4}-\d\d-\d\dT[0-9:.]+Z', '<time>', 'g') AS detail
  FROM kept, LATERAL (SELECT string_agg(line, E'\n') AS x FROM ehrledger.export('observation')
                       WHERE NOT (line::jsonb ? 'erased' AND (line::jsonb->>'ledger_seq')::bigint = :obs5)) e,
       ehrledger.check_export(e.x, kept.d::text);
-- A record for a row that is still there says an erasure that did not happen.
INSERT INTO ehrledger.erasure (table_id, erased_seq, leaf_hash, erased_by, approved_by, erased_at, reason)
SELECT 1, ledger_seq, ledger_hash, 'adm-1', 'adm-1', now(), 'forged' FROM observation WHERE id = 9;
SELECT ok, problems->-1->>'kind' AS kind FROM ehrledger.verify('observation');

SET client_min_messages = warning;
DROP EXTENSION ehrledger CASCADE;
DROP SCHEMA ehrledger CASCADE;
DROP TABLE observation, note, prescription, old_obs, encounter, vital, shared_obs, keys;
DROP ROLE erasure_admin, erasure_admin2, erasure_doc, erasure_owner, erasure_nobody;
