-- 12_fhir.sql: FHIR output that servers and audit repositories accept
-- (issue 14), one test or more for each defect the issue lists: empty
-- arrays and "infinity" dates; AuditEvent ids that collided; references
-- as urn:ehrledger identifiers only, and a signed grant whose signer was
-- nowhere; AuditEvents after IHE BALP; displays and narrative; Provenance
-- with signatures and the inclusion proof; transaction Bundles.  The R4
-- validators themselves run in test/fhir (make test's FHIR suite).
--
-- Not wrapped in one transaction: reads are recorded by the access log
-- writer in its own transaction.  Everything is dropped at the end.
\set ON_ERROR_STOP 0
SET client_min_messages = warning;
CREATE EXTENSION ehrledger;
CREATE ROLE fh_alice;
CREATE ROLE fh_bob;
CREATE ROLE fh_doc;
CREATE ROLE fh_reg;
CREATE ROLE fh_nobody;
CREATE TABLE fh_note (id int PRIMARY KEY, patient_id text NOT NULL, note text);
INSERT INTO fh_note VALUES (1, 'alice', 'asthma'), (2, 'bob', 'fracture'), (3, 'carol', 'fever'), (4, 'dave', 'overdose');
SELECT ehrledger.protect('fh_note', patient_column => 'patient_id');
GRANT SELECT, INSERT ON fh_note TO fh_alice, fh_bob, fh_doc, fh_reg;
CREATE TABLE fh_rx (id int PRIMARY KEY, drug text NOT NULL, prescriber text NOT NULL, signature bytea);
SELECT ehrledger.protect('fh_rx', signer_column => 'prescriber', signature_column => 'signature');
CREATE TABLE fh_keys AS
SELECT who, (kp).public_key, (kp).secret_key
  FROM (SELECT who, ehrledger.keypair() AS kp FROM unnest(ARRAY['alice', 'bob', 'doc', 'reg']) AS w(who)) k;
SELECT ehrledger.register_actor('alice', 'patient', (SELECT public_key FROM fh_keys WHERE who = 'alice'), 'fh_alice');
SELECT ehrledger.register_actor('bob', 'patient', (SELECT public_key FROM fh_keys WHERE who = 'bob'), 'fh_bob');
SELECT ehrledger.register_actor('doc', 'provider', (SELECT public_key FROM fh_keys WHERE who = 'doc'), 'fh_doc');
SELECT ehrledger.register_actor('reg', 'admin', (SELECT public_key FROM fh_keys WHERE who = 'reg'), 'fh_reg');
SET ehrledger.fhir_base_url = 'https://fhir.example.org/r4';
SET ehrledger.fhir_identifier_system = 'https://hospital.example.org/id';

-- alice consents forever from her own role; bob's signed consent is
-- presented by a superuser; carol's is on paper.
SET ROLE fh_alice;
SELECT ehrledger.grant_consent('alice', 'doc', valid_until => 'infinity') AS c_alice \gset
RESET ROLE;
SELECT ehrledger.grant_consent('bob', 'doc',
       signature => ehrledger.sign(ehrledger.consent_payload('bob', 'doc'), (SELECT secret_key FROM fh_keys WHERE who = 'bob'))) AS c_bob \gset
SET ROLE fh_reg;
SELECT ehrledger.grant_consent('carol', 'doc', paper_form => 'form 2026/5', valid_until => '2999-01-01 00:00+00') AS c_carol \gset
RESET ROLE;
-- One statement reads three patients' rows.
SET ROLE fh_doc;
SELECT count(*) FROM fh_note;
SELECT ehrledger.break_glass('dave', 'unconscious, no consent on file') AS glass \gset
SELECT count(*) FROM fh_note WHERE patient_id = 'dave';
RESET ROLE;
SELECT ehrledger.seal() > 0 AS sealed;
INSERT INTO fh_rx VALUES (1, 'amoxicillin', 'doc',
    ehrledger.sign(ehrledger.signing_payload('fh_rx', '{"id": 1, "drug": "amoxicillin", "prescriber": "doc"}'),
                   (SELECT secret_key FROM fh_keys WHERE who = 'doc')));
CREATE TABLE fh_events AS
SELECT p.patient, e.value AS ev
  FROM unnest(ARRAY['alice', 'bob', 'carol', 'dave']) p(patient),
       jsonb_array_elements(ehrledger.access_history_fhir(p.patient)->'entry') e;
RESET client_min_messages;

SELECT plan(54);

-- Empty arrays and "infinity".
SELECT is(ehrledger.access_history_fhir('erin') ? 'entry', false, 'an empty history has no entry element (no "entry": [])');
SELECT is(ehrledger.access_history_fhir('erin') ->> 'type', 'collection', 'an empty history is still a Bundle');
SELECT is(ehrledger.consent_as_fhir(:c_alice) #> '{provision,period}' ? 'end', false,
    'a consent valid until infinity has a period without an end');
SELECT is(ehrledger.consent_as_fhir(:c_carol) #>> '{provision,period,end}', '2999-01-01T00:00:00.000Z',
    'a finite end is a FHIR instant in UTC');
SELECT is(ehrledger._fhir_instant('-infinity'), NULL, 'minus infinity is left out too');

-- AuditEvent ids: unique across the whole log.
SELECT is((SELECT count(*) FROM fh_events), (SELECT count(DISTINCT ev #>> '{resource,id}') FROM fh_events),
    'no two AuditEvents of any patients share an id');
SELECT is((SELECT count(DISTINCT ev #>> '{resource,id}') FROM fh_events
            WHERE ev #>> '{resource,subtype,0,code}' = 'read' AND patient <> 'dave'), 3::bigint,
    'one read of three patients gives three AuditEvents with three ids');
SELECT is((SELECT ev #>> '{resource,id}' FROM fh_events
            WHERE patient = 'bob' AND ev #>> '{resource,subtype,0,code}' = 'read'),
          (SELECT l.event_seq || '-' || array_position(e.patients, 'bob') FROM ehrledger.access_log l
             JOIN ehrledger.access_event e ON e.ledger_seq = l.event_seq
            WHERE l.patient = 'bob' AND l.action = 'read'),
    'an AuditEvent''s id is its log entry and the patient''s place in it: stable');

-- References: literal, typed, under the hospital's base and systems.
SELECT is(ehrledger.consent_as_fhir(:c_alice) #>> '{patient,reference}', 'https://fhir.example.org/r4/Patient/alice',
    'Consent.patient is a literal reference a server''s Consent?patient= finds');
SELECT is(ehrledger.consent_as_fhir(:c_alice) #>> '{provision,actor,0,reference,reference}',
    'https://fhir.example.org/r4/Practitioner/doc', 'the grantee is a Practitioner');
SELECT is(ehrledger.consent_as_fhir(:c_alice) #> '{patient,identifier}',
    '{"system": "https://hospital.example.org/id/actor", "value": "alice"}'::jsonb,
    'identifiers are under the system the hospital set');
SELECT is((SELECT count(*) FROM fh_events WHERE ev::text LIKE '%urn:ehrledger%'), 0::bigint,
    'no urn:ehrledger anywhere in AuditEvents');
SELECT is((SELECT count(*) FROM fh_events
            WHERE NOT ev #> '{resource,entity}' @> jsonb_build_array(jsonb_build_object('what', jsonb_build_object(
                      'reference', 'https://fhir.example.org/r4/Patient/' || patient)))), 0::bigint,
    'every AuditEvent names its patient as Patient/ID (AuditEvent?patient= finds it)');
SELECT is((SELECT count(*) FROM fh_events, jsonb_array_elements(ev #> '{resource,agent}') a WHERE NOT a ? 'who'), 0::bigint,
    'every agent has a who');
SELECT ok((SELECT ev #> '{resource,agent}' @> '[{"requestor": true, "who": {"reference": "https://fhir.example.org/r4/Patient/bob"}}]'
             FROM fh_events WHERE patient = 'bob' AND ev #>> '{resource,subtype,0,code}' = 'create'),
    'a grant a superuser presented with the patient''s signature: the signing patient is the requesting agent');
SELECT ok((SELECT ev #> '{resource,agent}' @> '[{"who": {"display": "database role postgres"}}]'
             FROM fh_events WHERE patient = 'bob' AND ev #>> '{resource,subtype,0,code}' = 'create'),
    'and the role that presented it is the client');
SET ehrledger.fhir_base_url = '';
SET ehrledger.fhir_identifier_system = '';
SELECT is(ehrledger.consent_as_fhir(:c_alice) #> '{patient}',
    '{"reference": "Patient/alice", "type": "Patient", "identifier": {"value": "alice"}, "display": "alice"}'::jsonb,
    'without the settings: a relative reference, an identifier without a system');
SELECT matches(ehrledger.consent_as_fhir(:c_alice, 'transaction') #>> '{entry,0,fullUrl}',
    '^urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-3[0-9a-f]{3}-8[0-9a-f]{3}-[0-9a-f]{12}$', 'and urn:uuid full URLs');
SET ehrledger.fhir_base_url = 'https://fhir.example.org/r4';
SET ehrledger.fhir_identifier_system = 'https://hospital.example.org/id';
SELECT throws_ok($$SET ehrledger.fhir_base_url = 'https://fhir.example.org/r4/'$$, '22023', NULL,
    'a base URL ending in / is refused');
SELECT throws_ok($$SET ehrledger.fhir_identifier_system = 'urn:ehrledger:actor'$$, '22023', NULL,
    'an identifier system must be the hospital''s URL');
SELECT throws_ok($$SET ehrledger.fhir_base_url = 'https://x.example/<script>'$$, '22023', NULL,
    'no markup in URLs');

-- BALP.
SELECT is((SELECT count(*) FROM fh_events WHERE ev #>> '{resource,action}' = 'R'
              AND ev #> '{resource,type}' = '{"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest", "display": "RESTful Operation"}'
              AND ev #> '{resource,meta,profile}' = '["https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit.PatientRead"]'),
          4::bigint, 'reads are BALP PatientRead of type rest (three under consent, one break-glass)');
SELECT is((SELECT count(*) FROM fh_events WHERE ev #>> '{resource,action}' = 'R'
              AND ev #> '{resource,agent}' @> '[{"type": {"coding": [{"code": "110152"}]}}, {"type": {"coding": [{"code": "110153"}]}, "network": {"type": "1"}}, {"type": {"coding": [{"code": "IRCP"}]}, "requestor": true}]'),
          4::bigint, 'with client, server (with network) and user agents');
SELECT is((SELECT count(*) FROM fh_events WHERE ev #>> '{resource,action}' = 'R'
              AND ev #> '{resource,entity}' @> '[{"type": {"code": "2"}, "role": {"code": "4", "display": "Domain Resource"}, "what": {"identifier": {"value": "public.fh_note"}}}]'),
          4::bigint, 'and a data entity with its role');
SELECT ok((SELECT ev #> '{resource,entity}' @> ('[{"type": {"code": "Consent"}, "what": {"reference": "https://fhir.example.org/r4/Consent/' || :c_bob || '"}}]')::jsonb
             FROM fh_events WHERE patient = 'bob' AND ev #>> '{resource,action}' = 'R'),
    'the authorising consent is an entity Consent/ID');
SELECT is((SELECT count(*) FROM fh_events WHERE ev #>> '{resource,id}' LIKE '%-authz'
              AND ev #> '{resource,meta,profile}' = '["https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit.AuthZconsent"]'
              AND ev #>> '{resource,type,code}' = '110113' AND ev #>> '{resource,subtype,0,code}' = 'AuthZ-Consent'),
          3::bigint, 'each access a consent allowed has its BALP AuthZconsent decision');
SELECT is((SELECT count(*) FROM fh_events WHERE NOT ev #> '{resource}' ? 'purposeOfEvent'), 0::bigint,
    'every AuditEvent has a purposeOfEvent, not only break-glass');
SELECT is((SELECT count(DISTINCT ev #>> '{resource,source,site}') FROM fh_events), 1::bigint, 'one source site');
SELECT is((SELECT ev #>> '{resource,source,site}' FROM fh_events LIMIT 1), ehrledger.node_name(), 'the node is the source site');
SELECT is((SELECT ev #>> '{resource,source,observer,identifier,value}' FROM fh_events LIMIT 1), ehrledger.node_name(),
    'and the source observer');
SELECT ok((SELECT ev #> '{resource}' @> '{"type": {"code": "110113", "display": "Security Alert"}, "subtype": [{"code": "110127", "display": "Emergency Override Started"}], "purposeOfEvent": [{"coding": [{"code": "ETREAT", "display": "Emergency Treatment"}]}]}'
             FROM fh_events WHERE patient = 'dave' AND ev #>> '{resource,action}' = 'E'),
    'break-glass is a security alert (emergency override started) for emergency treatment');
SELECT ok((SELECT ev #> '{resource}' @> ('{"subtype": [{"code": "create"}], "action": "C", "entity": [{"what": {"reference": "https://fhir.example.org/r4/Consent/' || :c_alice || '"}, "role": {"code": "4"}}]}')::jsonb
             FROM fh_events WHERE patient = 'alice' AND ev #>> '{resource,subtype,0,code}' = 'create'),
    'a grant is the create of its Consent (BALP PatientCreate)');
SET ROLE fh_bob;
SELECT ehrledger.revoke_consent(:c_bob);
RESET ROLE;
SELECT ok((SELECT e #> '{resource}' @> ('{"subtype": [{"code": "update"}], "action": "U", "entity": [{"what": {"reference": "https://fhir.example.org/r4/Consent/' || :c_bob || '"}}]}')::jsonb
             FROM jsonb_array_elements(ehrledger.access_history_fhir('bob')->'entry') e
            WHERE e #>> '{resource,subtype,0,code}' = 'update'),
    'a revocation is the update of its Consent (BALP PatientUpdate)');

-- Displays and narrative.
SELECT is(ehrledger._purpose_coding('emergency'),
    '{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "ETREAT", "display": "Emergency Treatment"}'::jsonb, 'ETREAT is Emergency Treatment');
SELECT is(ehrledger._purpose_coding('research') ->> 'display', 'healthcare research', 'HRESCH is healthcare research');
SELECT is(ehrledger._purpose_coding('payment') ->> 'display', 'healthcare payment', 'HPAYMT is healthcare payment');
SELECT is((SELECT count(*) FROM fh_events WHERE ev #>> '{resource,text,div}' NOT LIKE '<div xmlns="http://www.w3.org/1999/xhtml">%'), 0::bigint,
    'every AuditEvent has a narrative');
SELECT is(ehrledger._fhir_text('<b>&"') ->> 'div', '<div xmlns="http://www.w3.org/1999/xhtml"><p>&lt;b&gt;&amp;&quot;</p></div>',
    'narrative text is escaped');

-- Consent: signed and paper consents show how they were given.
SELECT is(decode(ehrledger.consent_as_fhir(:c_bob) #>> '{sourceAttachment,data}', 'base64'),
          ehrledger.consent_payload('bob', 'doc'), 'a patient-signed consent carries the signed terms');
SELECT ok(ehrledger.consent_as_fhir(:c_bob) #>> '{sourceAttachment,title}' LIKE '%signature ' ||
          encode((SELECT signature FROM ehrledger.consent_event WHERE consent_id = :c_bob AND action = 'grant'), 'hex'),
    'and the patient''s signature');
SELECT is(ehrledger.consent_as_fhir(:c_alice) ? 'sourceAttachment', false, 'a consent given from the patient''s role has none');
SELECT is(ehrledger.consent_as_fhir(:c_carol) #>> '{verification,0,verifiedWith,reference}',
    'https://fhir.example.org/r4/Patient/carol', 'a paper consent is verified with the patient');

-- Provenance.
SELECT throws_ok($$SELECT ehrledger.provenance_fhir('fh_rx', (SELECT ledger_seq FROM fh_rx))$$, 'LD007', NULL,
    'an unsealed row has no Provenance yet');
SELECT ehrledger.seal() > 0 AS sealed_again;
SELECT ok(ehrledger.provenance_fhir('fh_rx', (SELECT ledger_seq FROM fh_rx)) #> '{signature,0}' @> jsonb_build_object(
        'type', '[{"system": "urn:iso-astm:E1762-95:2013", "code": "1.2.840.10065.1.12.1.1", "display": "Author''s Signature"}]'::jsonb,
        'who', jsonb_build_object('reference', 'https://fhir.example.org/r4/Practitioner/doc'),
        'sigFormat', 'application/octet-stream',
        'data', translate(encode((SELECT signature FROM fh_rx), 'base64'), E'\n', '')),
    'a signed prescription''s Provenance carries its author''s signature');
SELECT is(decode(ehrledger.provenance_fhir('fh_rx', (SELECT ledger_seq FROM fh_rx)) #>> '{contained,2,data}', 'base64'),
          ehrledger.signing_payload('fh_rx', (SELECT to_jsonb(r) FROM fh_rx r)), 'and the bytes it signed');
SELECT is(convert_from(decode(ehrledger.provenance_fhir('fh_rx', (SELECT ledger_seq FROM fh_rx)) #>> '{contained,0,data}', 'base64'), 'UTF8')::jsonb - 'head',
          ehrledger.proof('fh_rx', (SELECT ledger_seq FROM fh_rx)) - 'head', 'and the inclusion proof, to check offline');
SELECT ok(ehrledger.provenance_fhir('ehrledger.consent_event',
                                    (SELECT ledger_seq FROM ehrledger.consent_event WHERE consent_id = :c_bob AND action = 'grant'))
          @> ('{"target": [{"reference": "https://fhir.example.org/r4/Consent/' || :c_bob || '"}], "signature": [{"type": [{"display": "Consent Signature"}], "who": {"reference": "https://fhir.example.org/r4/Patient/bob"}}]}')::jsonb,
    'a signed consent''s Provenance carries the patient''s signature');
SELECT is(ehrledger.provenance_fhir('fh_note', (SELECT ledger_seq FROM fh_note WHERE id = 1)) ? 'signature', false,
    'an unsigned row has no signature');

-- Bundles.
SELECT ok(ehrledger.access_history_fhir('alice', 'transaction') @> jsonb_build_object('type', 'transaction', 'entry', jsonb_build_array(
        jsonb_build_object('fullUrl', 'https://fhir.example.org/r4/AuditEvent/' || (SELECT ev #>> '{resource,id}' FROM fh_events WHERE patient = 'alice' LIMIT 1),
                           'request', jsonb_build_object('method', 'PUT', 'url', 'AuditEvent/' || (SELECT ev #>> '{resource,id}' FROM fh_events WHERE patient = 'alice' LIMIT 1))))),
    'a transaction Bundle: full URLs and PUT requests');
SELECT is(ehrledger.access_history_fhir('alice') #> '{entry,0}' ? 'request', false, 'the plain Bundle has no requests');
SELECT throws_ok($$SELECT ehrledger.consent_as_fhir(1, 'document')$$, '22023', NULL, 'an unknown bundle type is refused');

-- Who may see what.
SET ROLE fh_nobody;
SELECT is(ehrledger.consent_as_fhir(:c_alice), NULL, 'a consent that is not the caller''s to see is NULL');
SELECT throws_ok($$SELECT ehrledger.access_history_fhir('alice')$$, '42501', NULL, 'another patient''s history is refused');
SELECT throws_ok($$SELECT ehrledger.provenance_fhir('fh_rx', 1)$$, '42501', NULL, 'Provenance needs SELECT on the table');
RESET ROLE;

SELECT * FROM finish();

DROP EXTENSION ehrledger CASCADE;
DROP TABLE fh_note, fh_rx, fh_keys, fh_events;
DROP ROLE fh_alice, fh_bob, fh_doc, fh_reg, fh_nobody;
