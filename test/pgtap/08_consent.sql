-- 08_consent.sql: consents, row-level security, break-glass, the access
-- log, FHIR output, privileges and search_path hygiene.
--
-- Not wrapped in one transaction like the other files: reads by actors are
-- recorded by the access log writer in its own transaction, which must see
-- the extension.  Everything is dropped at the end.
\set ON_ERROR_STOP 0
SET client_min_messages = warning;
CREATE EXTENSION ehrledger;
CREATE ROLE tap_pat;
CREATE ROLE tap_pat2;
CREATE ROLE tap_doc;
CREATE ROLE tap_rx;
CREATE ROLE tap_audit;
CREATE ROLE tap_admin;
CREATE ROLE tap_nobody;
CREATE TABLE tap_enc (id int PRIMARY KEY, patient_id text, note text);
CREATE TABLE tap_med (id int PRIMARY KEY, patient_id varchar(40), drug text);
INSERT INTO tap_enc SELECT g, CASE WHEN g % 2 = 0 THEN 'pat' ELSE 'pat2' END, 'note ' || g FROM generate_series(1, 10) g;
INSERT INTO tap_med VALUES (1, 'pat', 'aspirin'), (2, 'pat2', 'statin');
SELECT ehrledger.protect('tap_enc', patient_column => 'patient_id');
SELECT ehrledger.protect('tap_med', patient_column => 'patient_id', category => 'medication');
GRANT SELECT, INSERT ON tap_enc, tap_med TO tap_pat, tap_pat2, tap_doc, tap_rx, tap_audit, tap_admin, tap_nobody;
CREATE TABLE tap_keys AS
SELECT who, (kp).public_key, (kp).secret_key
  FROM (SELECT who, ehrledger.keypair() AS kp
          FROM unnest(ARRAY['pat', 'pat2', 'doc', 'rx', 'audit', 'admin']) AS w(who)) k;
GRANT SELECT ON tap_keys TO PUBLIC;
SELECT ehrledger.register_actor('pat', 'patient', (SELECT public_key FROM tap_keys WHERE who = 'pat'), 'tap_pat');
SELECT ehrledger.register_actor('pat2', 'patient', (SELECT public_key FROM tap_keys WHERE who = 'pat2'), 'tap_pat2');
SELECT ehrledger.register_actor('doc', 'provider', (SELECT public_key FROM tap_keys WHERE who = 'doc'), 'tap_doc');
SELECT ehrledger.register_actor('rx', 'pharmacist', (SELECT public_key FROM tap_keys WHERE who = 'rx'), 'tap_rx');
SELECT ehrledger.register_actor('audit', 'auditor', (SELECT public_key FROM tap_keys WHERE who = 'audit'), 'tap_audit');
SELECT ehrledger.register_actor('admin', 'admin', (SELECT public_key FROM tap_keys WHERE who = 'admin'), 'tap_admin');
RESET client_min_messages;

SELECT plan(117);

-- The SQL surface -------------------------------------------------------------
SELECT has_function('ehrledger', 'grant_consent',
    ARRAY['text', 'text', 'text', 'text', 'timestamp with time zone', 'bytea', 'text[]', 'text'], 'grant_consent() exists');
SELECT function_returns('ehrledger', 'grant_consent',
    ARRAY['text', 'text', 'text', 'text', 'timestamp with time zone', 'bytea', 'text[]', 'text'], 'bigint',
    'grant_consent() returns the consent id');
SELECT is(pg_get_function_arguments('ehrledger.grant_consent(text, text, text, text, timestamptz, bytea, text[], text)'::regprocedure),
    'patient text, grantee text, scope text DEFAULT ''*''::text, purpose text DEFAULT ''treatment''::text, '
    'valid_until timestamp with time zone DEFAULT NULL::timestamp with time zone, signature bytea DEFAULT NULL::bytea, '
    'actions text[] DEFAULT ''{read}''::text[], paper_form text DEFAULT NULL::text',
    'grant_consent() argument names and defaults: the contract''s six, then actions and paper_form');
SELECT has_function('ehrledger', 'revoke_consent', ARRAY['bigint', 'bytea', 'text'], 'revoke_consent() exists');
SELECT has_function('ehrledger', 'consent_payload',
    ARRAY['text', 'text', 'text', 'text', 'timestamp with time zone', 'text[]'], 'consent_payload() exists');
SELECT has_function('ehrledger', 'revocation_payload', ARRAY['bigint'], 'revocation_payload() exists');
SELECT has_function('ehrledger', 'break_glass', ARRAY['text', 'text'], 'break_glass() exists');
SELECT function_returns('ehrledger', 'break_glass', ARRAY['text', 'text'], 'bigint', 'break_glass() returns its id');
SELECT has_function('ehrledger', 'access_history', ARRAY['text'], 'access_history() exists');
SELECT has_function('ehrledger', 'access_history_fhir', ARRAY['text', 'text'], 'access_history_fhir() exists');
SELECT has_function('ehrledger', 'consent_as_fhir', ARRAY['bigint', 'text'], 'consent_as_fhir() exists');
SELECT has_function('ehrledger', 'current_actor', ARRAY[]::text[], 'current_actor() exists');
SELECT has_view('ehrledger', 'consents', 'view ehrledger.consents exists');
SELECT has_view('ehrledger', 'access_log', 'view ehrledger.access_log exists');
SELECT columns_are('ehrledger', 'consents',
    ARRAY['consent_id', 'patient', 'grantee', 'scope', 'purpose', 'granted_at', 'valid_until', 'revoked_at',
          'granted_by', 'revoked_by', 'patient_signed', 'active', 'scope_kind', 'ledger_seq',
          'actions', 'given_as', 'paper_form', 'recorded_by'],
    'ehrledger.consents has the documented columns');
SELECT columns_are('ehrledger', 'access_log',
    ARRAY['event_seq', 'at', 'actor', 'pg_role', 'patient', 'action', 'tbl', 'basis', 'detail', 'client_addr'],
    'ehrledger.access_log has the documented columns');
SELECT col_type_is('ehrledger', 'access_log', 'tbl', 'regclass', 'access_log.tbl is regclass');
SELECT col_type_is('ehrledger', 'access_log', 'at', 'timestamp with time zone', 'access_log.at is timestamptz');
SELECT col_type_is('ehrledger', 'access_log', 'pg_role', 'name', 'access_log.pg_role is name');
SELECT col_type_is('ehrledger', 'access_log', 'client_addr', 'inet', 'access_log.client_addr is inet');
SELECT is((SELECT array_agg(internal ORDER BY table_id) FROM ehrledger.protected_tables
            WHERE tbl IN ('ehrledger.consent_event'::regclass, 'ehrledger.break_glass'::regclass,
                          'ehrledger.access_event'::regclass)),
    ARRAY[true, true, true], 'consents, break-glass and the access log are ledger tables themselves');

-- Settings
SELECT is(current_setting('ehrledger.purpose'), 'treatment', 'ehrledger.purpose defaults to treatment');
SELECT is((SELECT setting FROM pg_settings WHERE name = 'ehrledger.break_glass_duration'), '3600',
    'break-glass lasts 60 minutes by default');
SELECT is((SELECT unit FROM pg_settings WHERE name = 'ehrledger.break_glass_duration'), 's',
    'ehrledger.break_glass_duration is in seconds');
SELECT is((SELECT context FROM pg_settings WHERE name = 'ehrledger.break_glass_duration'), 'superuser',
    'only a superuser changes the break-glass duration');
SELECT is(current_setting('ehrledger.access_log_wait'), 'on', 'reads wait for their access log record by default');
SELECT is((SELECT context FROM pg_settings WHERE name = 'ehrledger.access_log_wait'), 'superuser',
    'only a superuser turns access_log_wait off');

-- protect() with a patient column -----------------------------------------------
SELECT is((SELECT count(*)::int FROM pg_policy WHERE polrelid = 'tap_enc'::regclass AND polname LIKE 'ehrledger\_%'), 4,
    'protect(patient_column) installs four policies');
SELECT ok((SELECT relrowsecurity FROM pg_class WHERE oid = 'tap_enc'::regclass), 'and enables row-level security');
SELECT ok(NOT (SELECT relforcerowsecurity FROM pg_class WHERE oid = 'tap_enc'::regclass),
    'the table owner is not forced through the policies');
SELECT is((SELECT category FROM ehrledger.protected_tables WHERE tbl = 'tap_med'::regclass), 'medication',
    'the category is recorded');
SELECT is((SELECT patient_column FROM ehrledger.protected_tables WHERE tbl = 'tap_med'::regclass), 'patient_id'::name,
    'a varchar patient column is accepted');
CREATE TABLE tap_bad (id int, p int, q text);
SELECT throws_ok($$SELECT ehrledger.protect('tap_bad', patient_column => 'nope')$$, '42703',
    'column "nope" of public.tap_bad does not exist', 'an unknown patient column is refused');
SELECT throws_ok($$SELECT ehrledger.protect('tap_bad', patient_column => 'p')$$, '42804', NULL,
    'a non-text patient column is refused');
SELECT throws_ok($$SELECT ehrledger.protect('tap_bad', category => 'x')$$, '22023',
    'a category needs a patient column', 'a category without a patient column is refused');
SELECT throws_ok($$SELECT ehrledger.protect('tap_bad', patient_column => 'q', category => '*')$$, '22023', NULL,
    'the category * is refused');
CREATE POLICY tap_open ON tap_bad FOR SELECT USING (true);
SELECT throws_ok($$SELECT ehrledger.protect('tap_bad', patient_column => 'q')$$, '55000', NULL,
    'a table with permissive policies of its own is refused');
DROP TABLE tap_bad;

-- Who sees what, before consent ---------------------------------------------------
SET ROLE tap_pat;
SELECT results_eq('SELECT * FROM ehrledger.current_actor()', $$VALUES ('pat'::text, 'patient'::text)$$,
    'current_actor() names the patient');
SELECT is((SELECT count(*)::int FROM tap_enc), 5, 'a patient sees its own rows');
SELECT is((SELECT count(*)::int FROM tap_enc WHERE patient_id <> 'pat'), 0, 'and no one else''s');
SET ROLE tap_doc;
SELECT is((SELECT count(*)::int FROM tap_enc), 0, 'a provider without consent sees nothing');
SET ROLE tap_nobody;
SELECT is((SELECT count(*)::int FROM tap_enc), 0, 'a role that is no actor sees nothing');
SELECT ok((SELECT actor_id IS NULL FROM ehrledger.current_actor()), 'current_actor() is NULL for it');
SET ROLE tap_audit;
SELECT is((SELECT count(*)::int FROM tap_enc), 0, 'an auditor sees no clinical rows');
RESET ROLE;
SELECT is((SELECT count(*)::int FROM tap_enc), 10, 'the table owner sees every row');

-- Granting ------------------------------------------------------------------------
SET ROLE tap_pat;
SELECT lives_ok($$SELECT ehrledger.grant_consent('pat', 'doc', 'tap_enc', actions => '{read,write}')$$,
    'a patient grants from its own role, to read and write');
SET ROLE tap_doc;
SELECT is((SELECT count(*)::int FROM tap_enc), 5, 'the provider now sees that patient''s rows');
SELECT is((SELECT count(DISTINCT patient_id)::int FROM tap_enc), 1, 'only that patient''s');
SELECT is((SELECT count(*)::int FROM tap_med), 0, 'a table scope covers that table only');
SELECT lives_ok($$INSERT INTO tap_enc VALUES (11, 'pat', 'by doc')$$, 'the provider may add rows for the patient');
SELECT throws_ok($$INSERT INTO tap_enc VALUES (12, 'pat2', 'by doc')$$, '42501', NULL,
    'but not for another patient');
SELECT throws_ok($$SELECT ehrledger.grant_consent('pat2', 'doc')$$, '42501',
    'only patient "pat2" may grant consent to its rows', 'a provider cannot grant itself consent');
SELECT throws_ok($$SELECT ehrledger.grant_consent('pat2', 'doc', signature =>
        ehrledger.sign(ehrledger.consent_payload('pat2', 'doc'), (SELECT secret_key FROM tap_keys WHERE who = 'doc')))$$,
    'LD012', NULL, 'nor sign for the patient with its own key');
SELECT throws_ok($$SELECT ehrledger.grant_consent('pat2', 'doc', signature => '\x00'::bytea)$$,
    '22023', 'signature must be 64 bytes, not 1', 'nor present a malformed signature');
SELECT is((SELECT count(*)::int FROM ehrledger.consents), 1, 'a grantee sees the consents it holds');
SET ROLE tap_nobody;
SELECT is((SELECT count(*)::int FROM ehrledger.consents), 0, 'others see no consents');
SET ROLE tap_audit;
SELECT is((SELECT count(*)::int FROM ehrledger.consents), 1, 'an auditor sees every consent');
SET ROLE tap_admin;
SELECT is((SELECT count(*)::int FROM ehrledger.consents), 1, 'so does an admin');
SELECT is((SELECT count(*)::int FROM tap_enc), 0, 'but an admin sees no clinical rows without consent');

-- A signed grant, presented by someone else
SET ROLE tap_nobody;
SELECT lives_ok(format($$SELECT ehrledger.grant_consent('pat2', 'rx', 'medication', signature => %L)$$,
        ehrledger.sign(ehrledger.consent_payload('pat2', 'rx', 'medication'), (SELECT secret_key FROM tap_keys WHERE who = 'pat2'))),
    'anyone may present the patient''s signature');
SELECT throws_ok(format($$SELECT ehrledger.grant_consent('pat2', 'rx', 'medication', signature => %L)$$,
        ehrledger.sign(ehrledger.consent_payload('pat2', 'rx', 'medication'), (SELECT secret_key FROM tap_keys WHERE who = 'pat2'))),
    'LD013', 'this signature was used before', 'a signed grant cannot be replayed');
SET ROLE tap_rx;
SELECT is((SELECT count(*)::int FROM tap_med), 1, 'a category scope covers the tables of that category');
SELECT is((SELECT count(*)::int FROM tap_enc), 0, 'and no others');
SET ehrledger.purpose = 'research';
SELECT is((SELECT count(*)::int FROM tap_med), 0, 'a consent for treatment does not cover research');
RESET ehrledger.purpose;
RESET ROLE;
SELECT ok((SELECT patient_signed FROM ehrledger.consents WHERE grantee = 'rx'), 'consents say whether the patient signed');

-- Payloads
SELECT ok(position('\x656872'::bytea IN ehrledger.consent_payload('a', 'b')) = 1,
    'a consent payload starts with its domain tag');
SELECT isnt(ehrledger.consent_payload('ab', 'c'), ehrledger.consent_payload('a', 'bc'),
    'fields are length-prefixed: ab|c and a|bc differ');
SELECT is(ehrledger.consent_payload('a', 'b', '*', 'treatment', '2030-01-01 00:00:00+00'),
    ehrledger.consent_payload('a', 'b', '*', 'treatment', '2030-01-01 01:00:00+01'),
    'valid_until is signed in UTC, whatever the session time zone');
SELECT is(octet_length(ehrledger.revocation_payload(1)), 34, 'a revocation payload is its tag and an 8-byte id');

-- Revoking and expiry
SET ROLE tap_doc;
SELECT throws_ok(format('SELECT ehrledger.revoke_consent(%s)', (SELECT min(consent_id) FROM ehrledger.consents)),
    '42501', NULL, 'a provider cannot revoke');
SET ROLE tap_pat;
SELECT lives_ok(format('SELECT ehrledger.revoke_consent(%s)', (SELECT min(consent_id) FROM ehrledger.consents)),
    'the patient revokes');
SELECT throws_ok(format('SELECT ehrledger.revoke_consent(%s)', (SELECT min(consent_id) FROM ehrledger.consents)),
    '55000', NULL, 'a consent is revoked once');
SET ROLE tap_doc;
SELECT is((SELECT count(*)::int FROM tap_enc), 0, 'after revocation the provider sees nothing');
SET ROLE tap_pat;
SELECT lives_ok($$SELECT ehrledger.grant_consent('pat', 'doc', valid_until => clock_timestamp() + interval '300 ms')$$,
    'a consent may expire');
SET ROLE tap_doc;
SELECT is((SELECT count(*)::int FROM tap_enc), 6, 'it holds until then');
SELECT pg_sleep(0.4);
SELECT is((SELECT count(*)::int FROM tap_enc), 0, 'and not after');
RESET ROLE;
SELECT throws_ok($$SELECT ehrledger.revoke_consent(NULL)$$, '22004', NULL, 'revoke_consent(NULL) is refused');
SELECT throws_ok($$SELECT ehrledger.grant_consent('pat', 'doc', scope => '')$$, '22023', NULL, 'an empty scope is refused');

-- Break-glass
SET ROLE tap_pat;
SELECT throws_ok($$SELECT ehrledger.break_glass('pat2', 'just looking')$$, '42501', NULL,
    'a patient cannot break the glass');
SET ROLE tap_audit;
SELECT throws_ok($$SELECT ehrledger.break_glass('pat2', 'just looking')$$, '42501', NULL,
    'nor can an auditor');
SET ROLE tap_doc;
SELECT throws_ok($$SELECT ehrledger.break_glass('pat2', '')$$, '22023', NULL, 'break-glass needs a reason');
SELECT throws_ok($$SELECT ehrledger.break_glass('doc', 'a reason here')$$, '22023', NULL,
    'break-glass is for patients');
SELECT ok(ehrledger.break_glass('pat2', 'unresponsive on arrival') > 0, 'a provider breaks the glass');
SELECT is((SELECT count(*)::int FROM tap_enc WHERE patient_id = 'pat2'), 5, 'and sees that patient''s rows');
SELECT is((SELECT count(*)::int FROM tap_enc WHERE patient_id = 'pat'), 0, 'and no one else''s');
RESET ROLE;
SELECT is((SELECT expires_at - opened_at FROM ehrledger.break_glass), interval '1 hour', 'for an hour');

-- The access log
SELECT ok((SELECT count(*) > 0 FROM ehrledger.access_log WHERE actor = 'doc' AND action = 'read' AND patient = 'pat'),
    'reads are in the access log');
SELECT ok((SELECT count(*) > 0 FROM ehrledger.access_log WHERE actor = 'doc' AND action = 'insert'
            AND patient = 'pat' AND tbl = 'tap_enc'::regclass),
    'inserts are in the access log, with their table');
SELECT ok((SELECT bool_and(basis LIKE 'consent %') FROM ehrledger.access_log WHERE actor = 'doc' AND patient = 'pat'),
    'with the consent they relied on');
SELECT ok((SELECT count(*) = 1 FROM ehrledger.access_log WHERE action = 'break_glass' AND patient = 'pat2'
            AND basis LIKE '%unresponsive on arrival'),
    'break-glass is logged with its reason');
SELECT ok((SELECT count(*) > 0 FROM ehrledger.access_log WHERE actor = 'doc' AND patient = 'pat2'
            AND action = 'read' AND basis LIKE 'break-glass %'),
    'and reads under it name it');
SELECT ok((SELECT count(*) = 2 FROM ehrledger.access_log WHERE action = 'grant' AND patient = 'pat'),
    'grants are logged');
SELECT ok((SELECT count(*) = 1 FROM ehrledger.access_log WHERE action = 'revoke' AND patient = 'pat'),
    'revocations are logged');
SELECT ok((SELECT count(*) = 0 FROM ehrledger.access_log WHERE actor IS NULL AND pg_role = 'tap_nobody' AND action = 'read'),
    'a role that saw nothing read nothing');
SET ROLE tap_pat;
SELECT ok((SELECT count(*) > 0 FROM ehrledger.access_history('pat') WHERE actor = 'doc'),
    'a patient sees who accessed its rows');
SELECT throws_ok($$SELECT * FROM ehrledger.access_history('pat2')$$, '42501', NULL,
    'but not another patient''s history');
SELECT throws_ok($$SELECT * FROM ehrledger.access_log$$, '42501', NULL, 'nor the raw log');
SET ROLE tap_doc;
SELECT throws_ok($$SELECT * FROM ehrledger.access_history('pat')$$, '42501', NULL,
    'a provider cannot read a patient''s access history');
SELECT throws_ok($$DELETE FROM ehrledger.access_event$$, '42501', NULL, 'nor edit the access log');
SELECT throws_ok($$INSERT INTO ehrledger.break_glass VALUES (9, 'pat', 'doc', 'tap_doc', 'x', now(), now() + interval '1 day')$$,
    '42501', NULL, 'nor open break-glass by hand');
SET ROLE tap_audit;
SELECT ok((SELECT count(*) > 0 FROM ehrledger.access_history('pat2')), 'an auditor reads any patient''s history');
SET ROLE tap_pat;
SELECT is((SELECT b->>'resourceType' FROM ehrledger.access_history_fhir('pat') b), 'Bundle',
    'the FHIR history is a Bundle');
SELECT ok((SELECT bool_and(e->'resource'->>'resourceType' = 'AuditEvent')
             FROM ehrledger.access_history_fhir('pat') b, jsonb_array_elements(b->'entry') e),
    'of AuditEvent resources');
SELECT ok((SELECT bool_and(e->'resource'->>'action' IN ('R', 'C', 'U', 'D', 'E'))
             FROM ehrledger.access_history_fhir('pat') b, jsonb_array_elements(b->'entry') e),
    'each with a FHIR action code');
SELECT is((SELECT ehrledger.consent_as_fhir(min(consent_id))->>'resourceType' FROM ehrledger.consents), 'Consent',
    'a consent is a FHIR Consent');
SELECT is((SELECT ehrledger.consent_as_fhir(min(consent_id))->>'status' FROM ehrledger.consents), 'inactive',
    'a revoked consent is inactive');
SELECT is((SELECT ehrledger.consent_as_fhir(max(consent_id))#>>'{provision,actor,0,reference,identifier,value}'
             FROM ehrledger.consents), 'doc', 'its provision names the grantee');
RESET ROLE;

-- Privileges and search_path -----------------------------------------------------
SELECT is((SELECT count(*)::int FROM pg_proc p JOIN pg_depend d ON d.objid = p.oid AND d.deptype = 'e'
            WHERE d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'ehrledger')
              AND p.prosecdef AND NOT EXISTS (SELECT 1 FROM unnest(p.proconfig) c WHERE c LIKE 'search\_path=%')), 0,
    'every SECURITY DEFINER function pins its search_path');
SELECT is((SELECT count(*)::int FROM pg_proc p JOIN pg_depend d ON d.objid = p.oid AND d.deptype = 'e'
            JOIN pg_language l ON l.oid = p.prolang
            WHERE d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'ehrledger')
              AND l.lanname IN ('sql', 'plpgsql')
              AND NOT EXISTS (SELECT 1 FROM unnest(p.proconfig) c WHERE c = 'search_path=pg_catalog, pg_temp')), 0,
    'every SQL and PL/pgSQL function runs with search_path pg_catalog, pg_temp');
SELECT set_eq($$SELECT p.proname::text FROM pg_proc p JOIN pg_depend d ON d.objid = p.oid AND d.deptype = 'e'
                 JOIN pg_language l ON l.oid = p.prolang
                WHERE d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'ehrledger')
                  AND l.lanname = 'c' AND p.proconfig IS NULL$$,
    ARRAY['insert_row', 'refuse_change', 'version_row', 'consent_check', 'keypair', 'sign', 'verify_signature'],
    'C functions without a pinned search_path are the per-row ones and pure crypto (no name lookups through it)');
SELECT set_eq($$SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_depend d ON d.objid = p.oid AND d.deptype = 'e'
                WHERE d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'ehrledger')
                  AND has_function_privilege('public', p.oid, 'EXECUTE')
                  AND (p.proname IN ('grant_consent', 'revoke_consent', 'break_glass', 'access_history',
                                     'access_history_fhir', 'consent_as_fhir', 'consent_payload', 'access_event',
                                     'revocation_payload', 'current_actor', 'consent_check')
                       OR p.proname LIKE '\_%')$$,
    ARRAY['ehrledger.current_actor()',
          'ehrledger.consent_payload(text,text,text,text,timestamp with time zone,text[])',
          'ehrledger._consent_actions(text[])',
          'ehrledger.revocation_payload(bigint)',
          'ehrledger.grant_consent(text,text,text,text,timestamp with time zone,bytea,text[],text)',
          'ehrledger.revoke_consent(bigint,bytea,text)', 'ehrledger.access_event(bigint)',
          'ehrledger.consent_as_fhir(bigint,text)', 'ehrledger._purpose_coding(text)',
          'ehrledger.break_glass(text,text)', 'ehrledger.access_history(text)',
          'ehrledger.access_history_fhir(text,text)', 'ehrledger.consent_check(integer,text,text)',
          -- FHIR formatting, for provenance_fhir(), which runs with its caller's rights
          'ehrledger._fhir_instant(timestamp with time zone)', 'ehrledger._fhir_url(text)',
          'ehrledger._fhir_system(text)', 'ehrledger._fhir_ref(text,text,text,text)',
          'ehrledger._fhir_actor(text,text)', 'ehrledger._fhir_node()',
          'ehrledger._fhir_coding(text,text,text)', 'ehrledger._fhir_text(text)',
          'ehrledger._fhir_base64(bytea)', 'ehrledger._fhir_bundle(jsonb,text)',
          'ehrledger._fhir_check_bundle(text)', 'ehrledger._balp(text)',
          'ehrledger._members()', 'ehrledger._slot_part(text)',
          'ehrledger._header_origin(bytea)',
          -- the fields of erase_payload() and erase_patient_payload()
          'ehrledger._signed_fields(text,text[])'],
    'PUBLIC executes the consent API and no internal function that writes or reads private state');

-- A hostile search_path cannot redirect ehrledger: an = operator that says
-- every two texts (or byteas) are equal, found before pg_catalog.
CREATE SCHEMA tap_evil;
CREATE FUNCTION tap_evil.yes(text, text) RETURNS boolean LANGUAGE sql AS 'SELECT true';
CREATE FUNCTION tap_evil.yes(bytea, bytea) RETURNS boolean LANGUAGE sql AS 'SELECT true';
CREATE OPERATOR tap_evil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = tap_evil.yes);
CREATE OPERATOR tap_evil.= (LEFTARG = bytea, RIGHTARG = bytea, FUNCTION = tap_evil.yes);
GRANT USAGE ON SCHEMA tap_evil TO PUBLIC;
-- What each call does under that search_path is captured first, and judged
-- after it is reset (pgTAP itself would be fooled by the operator).
CREATE TEMP TABLE tap_outcome (what text, result text);
GRANT ALL ON tap_outcome TO PUBLIC;
CREATE FUNCTION pg_temp.try(what text, query text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE r text;
BEGIN
    EXECUTE query INTO r;
    INSERT INTO tap_outcome VALUES (what, 'ok ' || COALESCE(r, 'NULL'));
EXCEPTION WHEN OTHERS THEN
    INSERT INTO tap_outcome VALUES (what, SQLSTATE);
END $$;
SELECT ehrledger.seal();
SET search_path = tap_evil, pg_catalog, public;
SELECT pg_temp.try('evil', $$SELECT 'a'::text = 'b'::text$$);
SET ROLE tap_doc;
SELECT pg_temp.try('count', $$SELECT count(*) FROM tap_enc WHERE patient_id = 'pat2'$$);
SELECT pg_temp.try('grant', $$SELECT ehrledger.grant_consent('pat', 'doc', signature => decode(repeat('00', 64), 'hex'))$$);
SELECT pg_temp.try('history', $$SELECT count(*) FROM ehrledger.access_history('pat')$$);
RESET ROLE;
SELECT pg_temp.try('digest', format('SELECT ok FROM ehrledger.verify(digest => %L)',
        jsonb_set(ehrledger.digest(), '{public_key}', to_jsonb(encode(sha256('x'), 'hex')))));
RESET search_path;
SELECT is((SELECT result FROM tap_outcome WHERE what = 'evil'), 'ok true',
    'the hostile operator was in effect for plain queries');
SELECT is((SELECT result FROM tap_outcome WHERE what = 'count'), 'ok 5', 'consent checks ignore it');
SELECT is((SELECT result FROM tap_outcome WHERE what = 'grant'), 'LD012', 'signature checks ignore it');
SELECT is((SELECT result FROM tap_outcome WHERE what = 'history'), '42501', 'access checks ignore it');
SELECT is((SELECT result FROM tap_outcome WHERE what = 'digest'), 'LD003', 'digest checks ignore it');
SELECT ok((SELECT ok FROM ehrledger.verify()), 'and the ledger, access log included, verifies');

SELECT * FROM finish();

SET client_min_messages = warning;
DROP SCHEMA tap_evil CASCADE;
DROP EXTENSION ehrledger CASCADE;
DROP TABLE tap_enc, tap_med, tap_keys;
DROP ROLE tap_pat, tap_pat2, tap_doc, tap_rx, tap_audit, tap_admin, tap_nobody;
