-- 11_consent_security.sql: the consent side of the security audit (issue
-- 10): consents state what they allow and the policies enforce it; only
-- real accesses are recorded; per-backend caches stay bounded; actors map
-- to roles by identity; consents on paper and break-glass for patients who
-- never registered; the consents view is a security barrier; and no lock
-- ehrledger uses for consents and actors can be taken by an ordinary role.
--
-- Not wrapped in one transaction: reads are recorded by the access log
-- writer in its own transaction.  Everything is dropped at the end.
\set ON_ERROR_STOP 0
SET client_min_messages = warning;
CREATE EXTENSION ehrledger;
CREATE ROLE sec_alice;
CREATE ROLE sec_doc;
CREATE ROLE sec_reg;
CREATE ROLE sec_audit;
CREATE ROLE sec_clerk;
CREATE TABLE sec_note (id int PRIMARY KEY, patient_id text NOT NULL, note text);
INSERT INTO sec_note VALUES (1, 'alice', 'asthma'), (2, 'alice', 'inhaler'), (3, 'nina', 'fracture'),
                            (4, 'omar', 'fever');
SELECT ehrledger.protect('sec_note', mode => 'versioned', patient_column => 'patient_id');
GRANT SELECT, INSERT, UPDATE, DELETE ON sec_note TO sec_alice, sec_doc, sec_reg, sec_audit, sec_clerk;
CREATE TABLE sec_keys AS
SELECT who, (kp).public_key, (kp).secret_key
  FROM (SELECT who, ehrledger.keypair() AS kp
          FROM unnest(ARRAY['alice', 'doc', 'reg', 'audit']) AS w(who)) k;
GRANT SELECT ON sec_keys TO PUBLIC;
SELECT ehrledger.register_actor('alice', 'patient', (SELECT public_key FROM sec_keys WHERE who = 'alice'), 'sec_alice');
SELECT ehrledger.register_actor('doc', 'provider', (SELECT public_key FROM sec_keys WHERE who = 'doc'), 'sec_doc');
SELECT ehrledger.register_actor('reg', 'admin', (SELECT public_key FROM sec_keys WHERE who = 'reg'), 'sec_reg');
SELECT ehrledger.register_actor('audit', 'auditor', (SELECT public_key FROM sec_keys WHERE who = 'audit'), 'sec_audit');
CREATE FUNCTION sec_entries(actor text, action text) RETURNS bigint
    LANGUAGE sql AS $$ SELECT count(*) FROM ehrledger.access_log l WHERE l.actor = $1 AND l.action = $2 $$;
CREATE FUNCTION sec_tid() RETURNS int
    LANGUAGE sql AS $$ SELECT table_id FROM ehrledger.protected_tables WHERE tbl = 'sec_note'::regclass $$;
GRANT EXECUTE ON FUNCTION sec_tid() TO PUBLIC;
RESET client_min_messages;

SELECT plan(68);

-- 7. A consent states what it allows, and the policies enforce it -------------
SET ROLE sec_alice;
SELECT ok(ehrledger.grant_consent('alice', 'doc') > 0, 'alice consents to doc reading (the default)');
SET ROLE sec_doc;
SELECT is((SELECT count(*)::int FROM sec_note), 2, 'doc reads alice''s notes');
SELECT throws_ok($$INSERT INTO sec_note VALUES (10, 'alice', 'added')$$, '42501', NULL,
    'a consent to read does not let doc add to alice''s record');
UPDATE sec_note SET note = 'rewritten' WHERE id = 1;
DELETE FROM sec_note WHERE id = 2;
RESET ROLE;
SELECT is((SELECT string_agg(note, ',' ORDER BY id) FROM sec_note WHERE patient_id = 'alice'), 'asthma,inhaler',
    'nor update or delete her versioned rows: both statements found nothing to change');
SELECT is((SELECT count(*)::int FROM ehrledger.history('sec_note') WHERE NOT current), 0,
    'and no version of hers ended');
SELECT is(sec_entries('doc', 'update') + sec_entries('doc', 'delete'), 0::bigint,
    'and no change is recorded in the access log');
SET ROLE sec_alice;
SELECT ok(ehrledger.grant_consent('alice', 'doc', actions => '{write,read}') > 0,
    'alice consents to doc reading and writing');
SET ROLE sec_doc;
SELECT lives_ok($$INSERT INTO sec_note VALUES (10, 'alice', 'added')$$, 'now doc may add to her record');
SELECT lives_ok($$UPDATE sec_note SET note = 'inhaler, twice daily' WHERE id = 2$$, 'and update it');
RESET ROLE;
SELECT is((SELECT note FROM sec_note WHERE id = 2), 'inhaler, twice daily', 'the update happened');
SELECT is((SELECT actions FROM ehrledger.consents ORDER BY consent_id DESC LIMIT 1), '{read,write}',
    'actions are kept in their canonical order');
SELECT throws_ok($$SELECT ehrledger.grant_consent('alice', 'doc', actions => '{read,erase}')$$, '22023',
    'unknown consent action "erase"', 'an unknown action is refused');
SELECT throws_ok($$SELECT ehrledger.grant_consent('alice', 'doc', actions => '{}')$$, '22023',
    'a consent must allow read, write or both', 'an empty set of actions is refused');
SELECT isnt(ehrledger.consent_payload('alice', 'doc'), ehrledger.consent_payload('alice', 'doc', actions => '{read,write}'),
    'the patient''s signature covers the actions');
SELECT is(position('\x656872'::bytea IN ehrledger.consent_payload('alice', 'doc')), 1,
    'the payload starts with its tag');
SELECT is(substring(ehrledger.consent_payload('alice', 'doc') FROM 1 FOR 25), convert_to('ehrledger-consent-grant-2', 'UTF8'),
    'version 2 of the grant payload');
SELECT is(ehrledger.consent_as_fhir((SELECT max(consent_id) FROM ehrledger.consents))
          #> '{provision,action}',
    '[{"coding": [{"code": "access", "system": "http://terminology.hl7.org/CodeSystem/consentaction", "display": "Access"}]},
      {"coding": [{"code": "correct", "system": "http://terminology.hl7.org/CodeSystem/consentaction", "display": "Access and Correct"}]}]'::jsonb,
    'FHIR: reading is access, writing is correct');

-- 5. Only real accesses are recorded -------------------------------------------
SET ROLE sec_doc;
SELECT is(ehrledger.consent_check(sec_tid(), 'alice', 'delete'), true,
    'consent_check() answers a direct call (doc may write alice''s rows)');
SELECT is((SELECT count(*) FROM ehrledger.consent_check(sec_tid(), 'alice', 'delete') x), 1::bigint,
    'also from a FROM clause');
SELECT is((SELECT count(*)::int FROM sec_note WHERE ehrledger.consent_check(sec_tid(), patient_id, 'delete')), 3,
    'and over the table''s own rows in a SELECT');
DO $$ BEGIN PERFORM ehrledger.consent_check(sec_tid(), 'alice', 'update'); END $$;
RESET ROLE;
SELECT is(sec_entries('doc', 'delete'), 0::bigint,
    'none of that invents a deletion: a SELECT deletes nothing');
SELECT is((SELECT count(*)::int FROM ehrledger.access_log WHERE actor = 'doc' AND action = 'update'), 1,
    'nor an update: only the one real UPDATE is recorded');
SET ROLE sec_doc;
RESET ROLE;
SELECT sec_entries('doc', 'read') AS reads_before \gset
SET ROLE sec_doc;
SELECT is((SELECT count(*)::int FROM (SELECT ehrledger.consent_check(sec_tid(), 'alice', 'read')) x), 1,
    'a direct call for reading with a constant patient');
RESET ROLE;
SELECT is(sec_entries('doc', 'read'), :reads_before::bigint, 'is not recorded as a read');
SET ROLE sec_doc;
SELECT throws_ok($$SELECT ehrledger.consent_check(424242, 'alice', 'read')$$, '22023',
    'ledger table id 424242 is not a table protected with a patient column',
    'a table id that names no consent-protected table is refused');

-- 6. Per-backend caches are bounded --------------------------------------------
DO $$
BEGIN
    FOR i IN 1..20000 LOOP
        BEGIN
            PERFORM ehrledger.consent_check(i + 1000000, 'alice', 'read');
        EXCEPTION WHEN invalid_parameter_value THEN NULL;
        END;
    END LOOP;
END $$;
RESET ROLE;
SELECT cmp_ok((SELECT count(*) FROM pg_backend_memory_contexts WHERE name = 'ehrledger consent cache'), '<=', 64::bigint,
    '20,000 direct calls with distinct table ids leave at most 64 consent caches');
SELECT cmp_ok((SELECT coalesce(sum(total_bytes), 0) FROM pg_backend_memory_contexts WHERE name = 'ehrledger consent cache'),
    '<', 1048576::numeric, 'and under a megabyte of them');
SET client_min_messages = warning;
DO $$
BEGIN
    FOR i IN 1..70 LOOP
        EXECUTE format('CREATE TABLE sec_many_%s (id int, patient_id text)', i);
        EXECUTE format('INSERT INTO sec_many_%s VALUES (1, ''alice'')', i);
        PERFORM ehrledger.protect(format('sec_many_%s', i)::regclass, patient_column => 'patient_id');
        EXECUTE format('GRANT SELECT ON sec_many_%s TO sec_doc', i);
    END LOOP;
END $$;
RESET client_min_messages;
SET ROLE sec_doc;
DO $$
BEGIN
    FOR round IN 1..3 LOOP
        FOR i IN 1..70 LOOP
            EXECUTE format('SELECT count(*) FROM sec_many_%s', i);
        END LOOP;
    END LOOP;
END $$;
SELECT is((SELECT count(*)::int FROM sec_many_70), 1, 'each of 70 consent-protected tables answers right');
RESET ROLE;
SELECT cmp_ok((SELECT count(*) FROM pg_backend_memory_contexts WHERE name = 'ehrledger consent cache'), '<=', 64::bigint,
    'reading them all, three times, kept at most 64 caches');

-- 4. Actors map to roles by identity -------------------------------------------
SELECT is((SELECT role_live FROM ehrledger.actors WHERE actor_id = 'doc'), true, 'doc''s role is live');
SET client_min_messages = warning;
REVOKE ALL ON sec_note FROM sec_doc;
DO $$ BEGIN FOR i IN 1..70 LOOP EXECUTE format('REVOKE ALL ON sec_many_%s FROM sec_doc', i); END LOOP; END $$;
DROP ROLE sec_doc;
CREATE ROLE sec_doc;
GRANT SELECT ON sec_note TO sec_doc;
RESET client_min_messages;
SELECT is((SELECT role_live FROM ehrledger.actors WHERE actor_id = 'doc'), false,
    'after DROP ROLE and CREATE ROLE of the same name, doc''s mapping is dead');
SET ROLE sec_doc;
SELECT ok((SELECT actor_id FROM ehrledger.current_actor()) IS NULL, 'the new role is no actor');
SELECT is((SELECT count(*)::int FROM sec_note), 0, 'and inherits none of doc''s consents');
RESET ROLE;
SELECT throws_ok($$SELECT ehrledger.register_actor('doc2', 'provider', (SELECT public_key FROM sec_keys WHERE who = 'doc'), 'sec_alice')$$,
    '42710', 'role "sec_alice" is already mapped to an actor', 'a live role maps to one actor');
SELECT throws_ok($$SELECT ehrledger.map_role('doc', 'no_such_role')$$, '42704', 'role "no_such_role" does not exist',
    'map_role() of a role that does not exist');
SELECT throws_ok($$SELECT ehrledger.map_role('nobody', 'sec_doc')$$, '42704', 'actor "nobody" is not registered',
    'map_role() of an actor that does not exist');
SELECT lives_ok($$SELECT ehrledger.map_role('doc', 'sec_doc')$$, 'an admin maps doc to the new role, deliberately');
SET ROLE sec_doc;
SELECT is((SELECT count(*)::int FROM sec_note), 3, 'which then acts as doc');
RESET ROLE;
SELECT is((SELECT count(*)::int FROM ehrledger.actor_event WHERE actor_id = 'doc' AND action = 'map'), 1,
    'the mapping is a ledgered event');
SET ROLE sec_clerk;
SELECT throws_ok($$SELECT ehrledger.map_role('doc', 'sec_clerk')$$, '42501', NULL, 'only whom superusers grant maps roles');
RESET ROLE;

-- Patients who never registered --------------------------------------------------
SET ROLE sec_doc;
SELECT is((SELECT count(*)::int FROM sec_note WHERE patient_id = 'nina'), 0, 'doc has no consent from nina');
SELECT ok(ehrledger.break_glass('nina', 'unconscious, brought in without papers') > 0,
    'break-glass works for nina, who never registered');
SELECT is((SELECT count(*)::int FROM sec_note WHERE patient_id = 'nina'), 1, 'doc sees her rows');
SELECT throws_ok($$SELECT ehrledger.break_glass('reg', 'an admin is no patient')$$, '22023',
    'patient "reg" is a registered admin, not a patient', 'a registered actor of another role is no patient');
RESET ROLE;
SET ROLE sec_reg;
SELECT ok(ehrledger.grant_consent('omar', 'doc', paper_form => 'scan 2026-11-30/0042') > 0,
    'a registrar records omar''s consent given on paper');
SET ROLE sec_doc;
SELECT is((SELECT string_agg(note, ',') FROM sec_note WHERE patient_id = 'omar'), 'fever', 'doc reads omar''s rows');
RESET ROLE;
SELECT is((SELECT given_as || ' ' || paper_form || ' ' || recorded_by FROM ehrledger.consents WHERE patient = 'omar'),
    'paper form scan 2026-11-30/0042 reg', 'the consents view says it was given on paper, which form, recorded by whom');
SELECT is((SELECT basis FROM ehrledger.access_log WHERE actor = 'doc' AND patient = 'omar' AND action = 'read' LIMIT 1),
    'consent ' || (SELECT consent_id FROM ehrledger.consents WHERE patient = 'omar') || ' (paper form)',
    'the access log says the read was under a paper consent');
SELECT is(ehrledger.consent_as_fhir((SELECT consent_id FROM ehrledger.consents WHERE patient = 'omar')) #>> '{sourceAttachment,title}',
    'consent form signed on paper: scan 2026-11-30/0042', 'FHIR names the paper form as the consent''s source');
SET ROLE sec_doc;
SELECT throws_ok($$SELECT ehrledger.grant_consent('omar', 'doc', paper_form => 'forged')$$, '42501',
    'only a registrar (an admin actor) may record a consent given on paper', 'a provider cannot record a paper consent');
RESET ROLE;
SET ROLE sec_reg;
SELECT throws_ok($$SELECT ehrledger.grant_consent('omar', 'doc', paper_form => '  ')$$, '22023', NULL,
    'a paper consent names its form');
SELECT throws_ok($$SELECT ehrledger.grant_consent('omar', 'doc', paper_form => 'x', signature => '\x00'::bytea)$$, '22023',
    'a consent is given either on paper or with the patient''s signature, not both', 'paper or signature, not both');
SELECT lives_ok(format('SELECT ehrledger.revoke_consent(%s, paper_form => %L)',
                       (SELECT consent_id FROM ehrledger.consents WHERE patient = 'omar'), 'scan 2026-12-01/0007'),
    'a registrar records a revocation given on paper');
RESET ROLE;
SET ROLE sec_doc;
SELECT is((SELECT count(*)::int FROM sec_note WHERE patient_id = 'omar'), 0, 'which is in force at once');
RESET ROLE;

-- 8. The consents view is a security barrier ----------------------------------
CREATE TABLE public.sec_seen (msg text);
GRANT INSERT ON public.sec_seen TO PUBLIC;
CREATE FUNCTION public.sec_leak(text) RETURNS boolean LANGUAGE plpgsql COST 0.0000001 AS $$
BEGIN
    INSERT INTO public.sec_seen VALUES ($1);
    RETURN true;
END $$;
SELECT is((SELECT reloptions FROM pg_class WHERE oid = 'ehrledger.consents'::regclass), '{security_barrier=true}',
    'ehrledger.consents is a security barrier view');
SET ROLE sec_alice;
SELECT is((SELECT count(*)::int FROM ehrledger.consents WHERE public.sec_leak(grantee || ' for ' || patient)), 2,
    'alice sees her own two consents through the view');
RESET ROLE;
SELECT is((SELECT count(*)::int FROM ehrledger.consents), 3, 'while there are three');
SELECT is((SELECT string_agg(DISTINCT msg, ',') FROM public.sec_seen), 'doc for alice',
    'and a cheap leaky function of hers in the WHERE clause saw only those two');

CREATE FUNCTION sec_plan(q text) RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE l text;
BEGIN
    FOR l IN EXECUTE 'EXPLAIN (COSTS OFF) ' || q LOOP RETURN NEXT l; END LOOP;
END $$;
GRANT EXECUTE ON FUNCTION sec_plan(text) TO sec_doc;
-- An index-only scan reads the patient column from the index, not the
-- table: the read is recorded all the same.
CREATE TABLE sec_ios (id int PRIMARY KEY, patient_id text NOT NULL);
INSERT INTO sec_ios SELECT g, 'ios-' || (g % 3) FROM generate_series(1, 300) g;
CREATE INDEX sec_ios_patient ON sec_ios (patient_id);
SELECT ehrledger.protect('sec_ios', patient_column => 'patient_id') IS NULL AS protected \gset
GRANT SELECT ON sec_ios TO sec_doc;
VACUUM ANALYZE sec_ios;
SET ROLE sec_doc;
SELECT ehrledger.break_glass('ios-1', 'index-only scan test') > 0 AS glass \gset
SET enable_seqscan = off;
SET enable_bitmapscan = off;
SELECT ok((SELECT string_agg(l, ' ') FROM sec_plan('SELECT count(*) FROM sec_ios WHERE patient_id = ''ios-1''') l)
          LIKE '%Index Only Scan%', 'the provider''s count of one patient''s rows is an index-only scan');
SELECT is((SELECT count(*)::int FROM sec_ios WHERE patient_id = 'ios-1'), 100, 'it counts the patient''s rows');
RESET enable_seqscan;
RESET enable_bitmapscan;
RESET ROLE;
SELECT is((SELECT count(*)::int FROM ehrledger.access_log WHERE actor = 'doc' AND patient = 'ios-1' AND action = 'read'),
    1, 'and the index-only scan is recorded as a read of that patient');

-- Reads on a hot standby reach the primary through _standby_reads() and
-- _standby_break_glass() (TAP test 006 runs a real standby).  Only a role
-- with the REPLICATION attribute may call them, and only with a document
-- signed with the node key: no other role can add, alter or suppress a
-- record through them, nor open the glass for someone.
CREATE ROLE sec_repl REPLICATION;
GRANT EXECUTE ON FUNCTION ehrledger._standby_reads(bytea), ehrledger._standby_break_glass(bytea) TO sec_repl, sec_clerk;
CREATE FUNCTION pg_temp.sec_batch(tag text, sysid bigint, key bytea) RETURNS bytea LANGUAGE sql AS $$
    SELECT b || ehrledger.sign(b, key)
      FROM (SELECT convert_to(tag, 'UTF8') || int8send(sysid)
                   || '\x0102030405060708090a0b0c0d0e0f1000000000'::bytea
                   || int4send(2) || convert_to('me', 'UTF8') || int4send(0) AS b) x
$$;
SELECT ok(NOT has_function_privilege('public', 'ehrledger._standby_reads(bytea)', 'EXECUTE')
          AND NOT has_function_privilege('public', 'ehrledger._standby_break_glass(bytea)', 'EXECUTE'),
    'the standby functions are not granted to PUBLIC');
SET ROLE sec_clerk;
SELECT throws_ok($$SELECT ehrledger._standby_reads('\x00')$$, '42501',
    'only a role with the REPLICATION attribute may record a standby''s reads',
    'a role granted the function by mistake but without REPLICATION cannot record reads as a standby');
SELECT throws_ok($$SELECT * FROM ehrledger.standby_session$$, '42501', NULL,
    'nor read the standbys'' sessions');
SELECT throws_ok($$UPDATE ehrledger.access_log_position SET lsn = '0/0'$$, '42501', NULL,
    'nor move the access log''s WAL position');
SET ROLE sec_repl;
SELECT throws_ok(format('SELECT ehrledger._standby_reads(%L)',
                        pg_temp.sec_batch('ehrledger standby reads 1',
                                          (SELECT system_identifier FROM pg_control_system()),
                                          (SELECT secret_key FROM sec_keys WHERE who = 'doc'))),
    'LD040', 'this document is not signed with this node''s key',
    'a replication role cannot record reads signed with any key but the node''s');
SELECT throws_ok(format('SELECT ehrledger._standby_reads(%L)',
                        pg_temp.sec_batch('ehrledger standby reads 1', 42,
                                          (SELECT secret_key FROM sec_keys WHERE who = 'doc'))),
    'LD040', 'this document is from a standby of another cluster',
    'nor a batch meant for another cluster');
SELECT throws_ok(format('SELECT ehrledger._standby_break_glass(%L)',
                        pg_temp.sec_batch('ehrledger standby reads 1',
                                          (SELECT system_identifier FROM pg_control_system()),
                                          (SELECT secret_key FROM sec_keys WHERE who = 'doc'))),
    '22023', NULL, 'nor pass a batch of reads off as a break-glass request');
RESET ROLE;
REVOKE ALL ON FUNCTION ehrledger._standby_reads(bytea), ehrledger._standby_break_glass(bytea) FROM sec_repl, sec_clerk;
DROP ROLE sec_repl;

SELECT * FROM finish();

SET client_min_messages = warning;
DROP EXTENSION ehrledger CASCADE;
DO $$ BEGIN FOR i IN 1..70 LOOP EXECUTE format('DROP TABLE sec_many_%s', i); END LOOP; END $$;
DROP TABLE sec_note, sec_keys, public.sec_seen, sec_ios;
DROP FUNCTION sec_entries(text, text), sec_tid(), public.sec_leak(text), sec_plan(text);
DROP ROLE sec_alice, sec_doc, sec_reg, sec_audit, sec_clerk;
