-- A day at a hospital, for the FHIR validation step (test/fhir/run.sh):
-- consents granted by patients' roles, signed and on paper, revoked, valid
-- forever; reads and writes under them; break-glass; a patient with no
-- history; signed prescriptions.  Statements that read one patient's rows
-- (BALP PatientRead) and several patients' (PatientQuery), one of them a
-- patient whose id is no FHIR id.  dr-grey's application connects over TCP
-- (its AuditEvents name the client's address), everyone else's over a
-- Unix socket (no address).  The last statement prints, one JSON line
-- each, the output of every FHIR function over it.
\set ON_ERROR_STOP 1
SET client_min_messages = warning;
CREATE EXTENSION ehrledger;
SET ehrledger.fhir_base_url = 'https://fhir.st-mary.example/r4';
SET ehrledger.fhir_identifier_system = 'https://st-mary.example/id';

CREATE ROLE fx_alice;  CREATE ROLE fx_bob;  CREATE ROLE fx_grey;  CREATE ROLE fx_yang;
CREATE ROLE fx_desk;   CREATE ROLE fx_registrar;  CREATE ROLE fx_audit;  CREATE ROLE fx_app;
GRANT fx_app TO fx_alice, fx_bob, fx_grey, fx_yang, fx_desk, fx_registrar, fx_audit;

CREATE TABLE encounter (id text PRIMARY KEY, patient_id text NOT NULL, resource jsonb NOT NULL);
CREATE TABLE lab_result (id int PRIMARY KEY, patient_id text NOT NULL, test text NOT NULL, value numeric);
CREATE TABLE prescription (id int PRIMARY KEY, patient text NOT NULL, drug text NOT NULL, dose text NOT NULL,
                           prescriber text NOT NULL, signature bytea);
INSERT INTO encounter VALUES
    ('enc-1', 'alice', '{"resourceType": "Encounter", "id": "enc-1", "status": "finished", "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "EMER"}, "subject": {"reference": "Patient/alice"}}'),
    ('enc-2', 'bob', '{"resourceType": "Encounter", "id": "enc-2", "status": "finished", "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"}, "subject": {"reference": "Patient/bob"}}'),
    ('enc-3', 'carol', '{"resourceType": "Encounter", "id": "enc-3", "status": "in-progress", "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"}, "subject": {"reference": "Patient/carol"}}'),
    ('enc-4', 'dave', '{"resourceType": "Encounter", "id": "enc-4", "status": "in-progress", "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "EMER"}, "subject": {"reference": "Patient/dave"}}'),
    ('enc-6', 'frank & co|ward 3', '{"resourceType": "Encounter", "id": "enc-6", "status": "in-progress", "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "EMER"}, "subject": {"display": "unknown man, ward 3"}}');
INSERT INTO lab_result VALUES (1, 'alice', 'troponin', 0.01), (2, 'bob', 'hemoglobin', 13.5);
SELECT ehrledger.protect('encounter', patient_column => 'patient_id');
SELECT ehrledger.protect('lab_result', mode => 'versioned', patient_column => 'patient_id', category => 'diagnostics');
SELECT ehrledger.protect('prescription', signer_column => 'prescriber', signature_column => 'signature');
GRANT SELECT, INSERT, UPDATE, DELETE ON encounter, lab_result TO fx_app;

CREATE TABLE keys AS
SELECT who, (kp).public_key, (kp).secret_key
  FROM (SELECT who, ehrledger.keypair() AS kp
          FROM unnest(ARRAY['alice', 'bob', 'dr-grey', 'dr-yang', 'desk-1', 'registrar-1', 'auditor-1']) AS w(who)) k;
SELECT ehrledger.register_actor('alice', 'patient', (SELECT public_key FROM keys WHERE who = 'alice'), 'fx_alice');
SELECT ehrledger.register_actor('bob', 'patient', (SELECT public_key FROM keys WHERE who = 'bob'), 'fx_bob');
SELECT ehrledger.register_actor('dr-grey', 'provider', (SELECT public_key FROM keys WHERE who = 'dr-grey'), 'fx_grey');
SELECT ehrledger.register_actor('dr-yang', 'provider', (SELECT public_key FROM keys WHERE who = 'dr-yang'), 'fx_yang');
SELECT ehrledger.register_actor('registrar-1', 'admin', (SELECT public_key FROM keys WHERE who = 'registrar-1'), 'fx_registrar');
SELECT ehrledger.register_actor('auditor-1', 'auditor', (SELECT public_key FROM keys WHERE who = 'auditor-1'), 'fx_audit');

-- alice grants from her own role: encounters, read and write, forever
-- ('infinity'); and her diagnostics, read, for research.
SET ROLE fx_alice;
SELECT ehrledger.grant_consent('alice', 'dr-grey', scope => 'encounter', actions => '{read,write}',
                               valid_until => 'infinity') AS c_alice \gset
SELECT ehrledger.grant_consent('alice', 'dr-yang', scope => 'diagnostics', purpose => 'research') AS c_research \gset
RESET ROLE;
-- bob's consent arrives signed by his phone, presented by a superuser.
SELECT ehrledger.grant_consent('bob', 'dr-grey', '*', actions => '{read,write}',
       signature => ehrledger.sign(ehrledger.consent_payload('bob', 'dr-grey', '*', 'treatment', NULL, '{read,write}'),
                                   (SELECT secret_key FROM keys WHERE who = 'bob'))) AS c_bob \gset
-- carol, never registered, signed a paper form at the front desk.
SET ROLE fx_registrar;
SELECT ehrledger.grant_consent('carol', 'dr-grey', 'encounter', paper_form => 'records office, form 2026/117') AS c_carol \gset
RESET ROLE;

-- dr-grey reads and writes under those consents, from an application
-- that connects over TCP (run.sh listens on 127.0.0.1 too).
\set sock :HOST
\connect fhir_test postgres 127.0.0.1
SET ROLE fx_grey;
SELECT count(*) FROM encounter;
INSERT INTO encounter VALUES ('enc-5', 'alice', '{"resourceType": "Encounter", "id": "enc-5", "status": "planned", "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"}, "subject": {"reference": "Patient/alice"}}');
UPDATE lab_result SET value = 13.9 WHERE id = 2;
DELETE FROM lab_result WHERE id = 2;
RESET ROLE;
\connect fhir_test postgres :sock
SET client_min_messages = warning;
SET ehrledger.fhir_base_url = 'https://fhir.st-mary.example/r4';
SET ehrledger.fhir_identifier_system = 'https://st-mary.example/id';
-- Research reads alice's diagnostics.
SET ROLE fx_yang;
SET ehrledger.purpose = 'research';
SELECT count(*) FROM lab_result;
RESET ehrledger.purpose;
RESET ROLE;

-- bob revokes with his signature; carol's consent ends on paper.
SELECT ehrledger.revoke_consent(:c_bob, signature => ehrledger.sign(ehrledger.revocation_payload(:c_bob),
                                                                   (SELECT secret_key FROM keys WHERE who = 'bob')));
SET ROLE fx_registrar;
SELECT ehrledger.revoke_consent(:c_carol, paper_form => 'records office, form 2026/118');
RESET ROLE;

-- dave, unconscious and unregistered: dr-yang breaks the glass and reads.
SET ROLE fx_yang;
SELECT ehrledger.break_glass('dave', 'unconscious in the ED, suspected overdose') AS glass \gset
SELECT count(*) FROM encounter WHERE patient_id = 'dave';
-- Then two more unknown patients, and a search over everyone it may see.
SELECT ehrledger.break_glass('carol', 'brought in with dave') IS NOT NULL AS glass_carol;
SELECT ehrledger.break_glass('frank & co|ward 3', 'brought in with dave, no name') IS NOT NULL AS glass_frank;
SELECT count(*) FROM encounter;
RESET ROLE;
-- alice reads her own record.
SET ROLE fx_alice;
SELECT count(*) FROM encounter;
RESET ROLE;

-- Signed prescriptions.
INSERT INTO prescription
SELECT id, patient, drug, dose, 'dr-grey',
       ehrledger.sign(ehrledger.signing_payload('prescription',
                          jsonb_build_object('id', id, 'patient', patient, 'drug', drug, 'dose', dose, 'prescriber', 'dr-grey')),
                      (SELECT secret_key FROM keys WHERE who = 'dr-grey'))
  FROM (VALUES (1, 'alice', 'amoxicillin', '500 mg three times a day'), (2, 'bob', 'ibuprofen', '400 mg')) v(id, patient, drug, dose);

SELECT ehrledger.seal() > 0 AS sealed;

-- Every FHIR function's output, one JSON line each: {"case": ..., "fhir": ...}.
\pset format unaligned
\pset tuples_only on
\o :out
SELECT jsonb_build_object('case', c, 'fhir', f)
  FROM (
    SELECT 'consent ' || consent_id || ' ' || COALESCE(b, 'plain'), ehrledger.consent_as_fhir(consent_id, b)
      FROM ehrledger.consents, unnest(ARRAY[NULL, 'transaction']) b
    UNION ALL
    SELECT 'history ' || p || ' ' || COALESCE(b, 'plain'), ehrledger.access_history_fhir(p, b)
      FROM unnest(ARRAY['alice', 'bob', 'carol', 'dave', 'erin', 'frank & co|ward 3']) p,
           unnest(ARRAY[NULL, 'transaction', 'batch']) b
    UNION ALL
    SELECT 'provenance prescription ' || id || ' ' || COALESCE(b, 'plain'), ehrledger.provenance_fhir('prescription', ledger_seq, b)
      FROM prescription, unnest(ARRAY[NULL, 'transaction']) b
    UNION ALL
    SELECT 'provenance encounter ' || id, ehrledger.provenance_fhir('encounter', ledger_seq) FROM encounter
    UNION ALL
    SELECT 'provenance lab_result ' || id, ehrledger.provenance_fhir('lab_result', ledger_seq) FROM lab_result
    UNION ALL
    SELECT 'provenance consent_event ' || consent_id || ' ' || action, ehrledger.provenance_fhir('ehrledger.consent_event', ledger_seq)
      FROM ehrledger.consent_event
    UNION ALL
    (SELECT 'provenance access_event ' || ledger_seq, ehrledger.provenance_fhir('ehrledger.access_event', ledger_seq)
       FROM ehrledger.access_event ORDER BY ledger_seq LIMIT 3)
  ) x(c, f);
-- The same without the hospital's settings: relative references, urn:uuid
-- full URLs, identifiers without a system.
RESET ehrledger.fhir_base_url;
RESET ehrledger.fhir_identifier_system;
SELECT jsonb_build_object('case', c || ' (no settings)', 'fhir', f)
  FROM (
    SELECT 'consent ' || consent_id || ' transaction', ehrledger.consent_as_fhir(consent_id, 'transaction') FROM ehrledger.consents
    UNION ALL
    SELECT 'history ' || p || ' transaction', ehrledger.access_history_fhir(p, 'transaction')
      FROM unnest(ARRAY['alice', 'bob', 'dave', 'erin', 'frank & co|ward 3']) p
    UNION ALL
    SELECT 'provenance prescription ' || id, ehrledger.provenance_fhir('prescription', ledger_seq, 'transaction') FROM prescription
  ) x(c, f);
\o
