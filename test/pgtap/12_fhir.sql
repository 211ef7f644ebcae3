-- 12_fhir.sql: FHIR output that servers and audit repositories accept
-- (issue 14), one test or more for each defect the issue lists: empty
-- arrays and "infinity" dates; AuditEvent ids that collided; references
-- as urn:ehrledger identifiers only, and a signed grant whose signer was
-- nowhere; AuditEvents after IHE BALP (a read of one patient a
-- PatientRead, a statement that read several a PatientQuery whose search
-- names no SQL and no other patient); displays and narrative; Provenance
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
-- Three unknown patients of a mass casualty, each break-glass with a
-- 40,000-character reason: the record of their read outgrows the access
-- log's 64 kB, so the writer splits it.
CREATE TABLE fh_triage (id int PRIMARY KEY, patient_id text NOT NULL);
INSERT INTO fh_triage VALUES (1, 'unknown-1'), (2, 'unknown-2'), (3, 'unknown-3');
SELECT ehrledger.protect('fh_triage', patient_column => 'patient_id');
GRANT SELECT ON fh_triage TO fh_doc;
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
SELECT count(*) FROM (SELECT ehrledger.break_glass(p, 'mass casualty ' || repeat('x', 40000))
                        FROM unnest(ARRAY['unknown-1', 'unknown-2', 'unknown-3']) p) g;
SELECT count(*) FROM fh_triage;
RESET ROLE;
SELECT ehrledger.seal() > 0 AS sealed;
INSERT INTO fh_rx VALUES (1, 'amoxicillin', 'doc',
    ehrledger.sign(ehrledger.signing_payload('fh_rx', '{"id": 1, "drug": "amoxicillin", "prescriber": "doc"}'),
                   (SELECT secret_key FROM fh_keys WHERE who = 'doc')));
CREATE TABLE fh_events AS
SELECT p.patient, e.value AS ev
  FROM unnest(ARRAY['alice', 'bob', 'carol', 'dave', 'unknown-1', 'unknown-2', 'unknown-3']) p(patient),
       jsonb_array_elements(ehrledger.access_history_fhir(p.patient)->'entry') e;
RESET client_min_messages;

SELECT plan(70);

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
            WHERE ev #>> '{resource,subtype,0,code}' = 'search' AND patient IN ('alice', 'bob', 'carol')), 3::bigint,
    'one read of three patients gives three AuditEvents with three ids');
SELECT is((SELECT ev #>> '{resource,id}' FROM fh_events
            WHERE patient = 'bob' AND ev #>> '{resource,subtype,0,code}' = 'search'),
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

-- BALP.  A read recorded in the access log is one statement, an entry of it
-- names every patient whose rows it read: one patient is a PatientRead,
-- several a PatientQuery (a search).
CREATE TABLE fh_profiles AS
SELECT patient, ev #>> '{resource,id}' AS id, replace(ev #>> '{resource,meta,profile,0}',
           'https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit.', '') AS profile, ev -> 'resource' AS r
  FROM fh_events WHERE ev #>> '{resource,id}' NOT LIKE '%-authz';
SELECT is((SELECT array_agg(patient ORDER BY patient) FROM fh_profiles WHERE profile = 'PatientRead'), ARRAY['dave'],
    'the one read of one patient''s rows (dave''s, under break-glass) is a BALP PatientRead');
SELECT is((SELECT array_agg(patient ORDER BY patient) FROM fh_profiles WHERE profile = 'PatientQuery'),
          ARRAY['alice', 'bob', 'carol', 'unknown-1', 'unknown-2', 'unknown-3'],
    'the statements that read several patients'' rows are BALP PatientQuery, one event a patient');
SELECT is((SELECT count(*) FROM fh_profiles WHERE profile = 'PatientRead' AND r #>> '{action}' = 'R'
              AND r #> '{type}' = '{"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest", "display": "RESTful Operation"}'
              AND r #> '{subtype}' = '[{"system": "http://hl7.org/fhir/restful-interaction", "code": "read", "display": "read"}]'
              AND r #> '{agent}' @> '[{"type": {"coding": [{"code": "110152"}]}}, {"type": {"coding": [{"code": "110153"}]}, "network": {"type": "1"}}, {"type": {"coding": [{"code": "IRCP"}]}, "requestor": true}]'
              AND r #> '{entity}' @> '[{"type": {"code": "2"}, "role": {"code": "4", "display": "Domain Resource"}, "what": {"identifier": {"value": "public.fh_note"}}}]'),
          1::bigint, 'a PatientRead: type rest, subtype read, action R, client (destination), server (source, with network), user, a data entity');
SELECT is((SELECT count(*) FROM fh_profiles WHERE profile = 'PatientQuery' AND r #>> '{action}' = 'E'
              AND r #> '{type}' = '{"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest", "display": "RESTful Operation"}'
              AND r #> '{subtype}' = '[{"system": "http://hl7.org/fhir/restful-interaction", "code": "search", "display": "search"}]'
              AND r #> '{agent}' @> '[{"type": {"coding": [{"code": "110153", "display": "Source Role ID"}]}}, {"type": {"coding": [{"code": "110152", "display": "Destination Role ID"}]}, "network": {"type": "1"}}, {"type": {"coding": [{"code": "IRCP"}]}, "requestor": true}]'),
          6::bigint, 'a PatientQuery: type rest, subtype search, action E, client (source), server (destination, with network), user');
SELECT is((SELECT count(*) FROM fh_profiles, jsonb_array_elements(r -> 'entity') e
            WHERE profile = 'PatientQuery' AND e #>> '{type,code}' = '2'
              AND e -> 'role' = '{"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "24", "display": "Query"}'
              AND e ? 'query' AND NOT e ? 'what'),
          6::bigint, 'each has a query entity (type 2, role 24) with its query');
SELECT is((SELECT count(*) FROM fh_profiles, jsonb_array_elements(r -> 'entity') e
            WHERE profile = 'PatientQuery' AND e #>> '{type,code}' = '2'), 6::bigint, 'and no other System Object (no data entity)');
SELECT is((SELECT array_agg(convert_from(decode(e ->> 'query', 'base64'), 'UTF8') ORDER BY patient) FROM fh_profiles, jsonb_array_elements(r -> 'entity') e
            WHERE profile = 'PatientQuery' AND patient IN ('alice', 'bob', 'carol') AND e ? 'query'),
          ARRAY['public.fh_note?patient=https://fhir.example.org/r4/Patient/alice',
                'public.fh_note?patient=https://fhir.example.org/r4/Patient/bob',
                'public.fh_note?patient=https://fhir.example.org/r4/Patient/carol'],
    'the query is the search the entry records, TABLE?patient=Patient/ID under the base: no SQL text');
SELECT is((SELECT count(*) FROM fh_profiles, jsonb_array_elements(r -> 'entity') e
            WHERE profile = 'PatientQuery' AND e ? 'query'
              AND (convert_from(decode(e ->> 'query', 'base64'), 'UTF8') ~* 'select|count|from|where|fh_doc'
                   OR e::text ~* 'select|count\(')),
          0::bigint, 'neither the query nor the rest of its entity carries the statement''s SQL');
SELECT is((SELECT count(*) FROM fh_profiles p, jsonb_array_elements(p.r -> 'entity') e
            WHERE p.profile = 'PatientQuery' AND e ? 'query'
              AND EXISTS (SELECT 1 FROM fh_profiles o
                           WHERE o.patient <> p.patient
                             AND (convert_from(decode(e ->> 'query', 'base64'), 'UTF8') LIKE '%' || o.patient || '%'
                                  OR p.r::text LIKE '%"' || o.patient || '"%'))),
          0::bigint, 'a patient''s PatientQuery names no other patient (the patient may read it)');
SELECT ok((SELECT bool_and(e ->> 'description' LIKE 'synthesized from access log entry ' || split_part(p.id, '-', 1) || ' (ehrledger keeps no SQL text)%')
             FROM fh_profiles p, jsonb_array_elements(p.r -> 'entity') e WHERE p.profile = 'PatientQuery' AND e ? 'query'),
    'and says that it was synthesized, from which entry');
SELECT is((SELECT count(DISTINCT split_part(id, '-', 1)) FROM fh_profiles WHERE patient LIKE 'unknown-%' AND profile = 'PatientQuery'),
          1::bigint, 'a read of three patients whose record outgrows 64 kB is still one entry: the writer leaves no part of one patient');
SELECT is((SELECT array_agg(cardinality(patients) ORDER BY ledger_seq) FROM ehrledger.access_event
            WHERE action = 'read' AND patients && ARRAY['unknown-1', 'unknown-2', 'unknown-3']), ARRAY[3],
    'its entry names all three');
SELECT is((SELECT array_agg(e #>> '{type,code}' ORDER BY p.profile NULLS FIRST) FROM fh_profiles p, jsonb_array_elements(p.r -> 'entity') e
            WHERE p.patient = 'dave' AND e #>> '{role,code}' = '13'),
          ARRAY['2', '4'],
    'the break-glass is a System Object in its alert, Other in a read (whose one System Object is the data)');
SELECT ok((SELECT r -> 'entity' @> ('[{"type": {"code": "Consent"}, "what": {"reference": "https://fhir.example.org/r4/Consent/' || :c_bob || '"}}]')::jsonb
             FROM fh_profiles WHERE patient = 'bob' AND profile = 'PatientQuery'),
    'the authorising consent is an entity Consent/ID');
SELECT is(ehrledger._fhir_search('fh_note', 'x&patient=Patient/bob'),
    'public.fh_note?patient:identifier=https://hospital.example.org/id/actor|x%26patient%3DPatient%2Fbob',
    'a patient id that is no FHIR id is an identifier token, percent-encoded: it cannot add a parameter or a patient');
SELECT is(ehrledger._fhir_search('fh_note', E'a,b|c\\d e\u00e9'),
    'public.fh_note?patient:identifier=https://hospital.example.org/id/actor|a%5C%2Cb%5C%7Cc%5C%5Cd%20e%C3%A9',
    'FHIR search''s escapes (\ | , $) come first, then UTF-8 percent-encoding');
CREATE TABLE "fh odd?&t" (id int);
SELECT is(ehrledger._fhir_search('"fh odd?&t"', 'alice'),
    'public.%22fh%20odd%3F%26t%22?patient=https://fhir.example.org/r4/Patient/alice', 'so is the table''s name');
DROP TABLE "fh odd?&t";
SET ehrledger.fhir_base_url = '';
SET ehrledger.fhir_identifier_system = '';
SELECT is(ehrledger._fhir_search('fh_note', 'alice') || ' ' || ehrledger._fhir_search('fh_note', 'x y'),
    'public.fh_note?patient=Patient/alice public.fh_note?patient:identifier=|x%20y',
    'without the settings: a relative reference, and a token whose identifier has no system');
SET ehrledger.fhir_base_url = 'https://fhir.example.org/r4';
SET ehrledger.fhir_identifier_system = 'https://hospital.example.org/id';
SELECT is(ehrledger._fhir_search('fh_note', NULL), NULL, 'no patient, no search');
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
SELECT throws_ok($$SELECT ehrledger._fhir_search('fh_note', 'alice')$$, '42501', NULL,
    'the search of an AuditEvent is made only inside access_history_fhir()');
RESET ROLE;

SELECT * FROM finish();

DROP EXTENSION ehrledger CASCADE;
DROP TABLE fh_note, fh_triage, fh_rx, fh_keys, fh_events, fh_profiles;
DROP ROLE fh_alice, fh_bob, fh_doc, fh_reg, fh_nobody;
