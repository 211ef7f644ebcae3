-- Patients' consent, enforced by row-level security: a provider sees a
-- patient's rows only under a live consent for that table; a patient sees
-- its own; roles that are no actor see nothing.  The application's SQL does
-- not change.
CREATE EXTENSION ehrledger;
\set SHOW_CONTEXT never
SET client_min_messages = warning;

CREATE ROLE emr_alice;      -- patient alice
CREATE ROLE emr_bob;        -- patient bob
CREATE ROLE emr_grey;       -- provider dr-grey
CREATE ROLE emr_yang;       -- provider dr-yang
CREATE ROLE emr_rx;         -- pharmacist rx-bailey
CREATE ROLE emr_audit;      -- auditor
CREATE ROLE emr_clerk;      -- a database role that is no actor
CREATE ROLE emr_staff;
GRANT emr_staff TO emr_alice, emr_bob, emr_grey, emr_yang, emr_rx, emr_audit, emr_clerk;
RESET client_min_messages;

CREATE TABLE encounter (
    id         int PRIMARY KEY,
    patient_id text NOT NULL,
    reason     text NOT NULL
);
CREATE TABLE prescription (
    id         int PRIMARY KEY,
    patient_id text NOT NULL,
    drug       text NOT NULL
);
CREATE TABLE lab_result (
    id         int PRIMARY KEY,
    patient_id text NOT NULL,
    test       text NOT NULL,
    value      numeric
);
INSERT INTO encounter VALUES (1, 'alice', 'chest pain'), (2, 'bob', 'fracture'), (3, 'alice', 'follow-up');
INSERT INTO prescription VALUES (1, 'alice', 'aspirin'), (2, 'bob', 'ibuprofen');
INSERT INTO lab_result VALUES (1, 'alice', 'troponin', 0.01), (2, 'bob', 'hemoglobin', 13.5);
SELECT ehrledger.protect('encounter', patient_column => 'patient_id');
SELECT ehrledger.protect('prescription', patient_column => 'patient_id', category => 'medication');
SELECT ehrledger.protect('lab_result', mode => 'versioned', patient_column => 'patient_id',
                         category => 'diagnostics');
GRANT SELECT, INSERT ON encounter, prescription TO emr_staff;
GRANT SELECT, INSERT, UPDATE, DELETE ON lab_result TO emr_staff;
SELECT tbl, patient_column, category FROM ehrledger.protected_tables WHERE NOT internal ORDER BY table_id;
SELECT polname, polcmd FROM pg_policy WHERE polrelid = 'encounter'::regclass ORDER BY polname;

CREATE TEMP TABLE keys AS
SELECT who, (kp).public_key, (kp).secret_key
  FROM (SELECT who, ehrledger.keypair() AS kp
          FROM unnest(ARRAY['alice', 'bob', 'dr-grey', 'dr-yang', 'rx-bailey', 'auditor-1']) AS w(who)) k;
SELECT count(DISTINCT public_key) AS distinct_keys FROM keys;
GRANT SELECT ON keys TO emr_staff;
SELECT ehrledger.register_actor('alice', 'patient', (SELECT public_key FROM keys WHERE who = 'alice'), 'emr_alice');
SELECT ehrledger.register_actor('bob', 'patient', (SELECT public_key FROM keys WHERE who = 'bob'), 'emr_bob');
SELECT ehrledger.register_actor('dr-grey', 'provider', (SELECT public_key FROM keys WHERE who = 'dr-grey'), 'emr_grey');
SELECT ehrledger.register_actor('dr-yang', 'provider', (SELECT public_key FROM keys WHERE who = 'dr-yang'), 'emr_yang');
SELECT ehrledger.register_actor('rx-bailey', 'pharmacist', (SELECT public_key FROM keys WHERE who = 'rx-bailey'), 'emr_rx');
SELECT ehrledger.register_actor('auditor-1', 'auditor', (SELECT public_key FROM keys WHERE who = 'auditor-1'), 'emr_audit');

-- Before any consent: a patient sees its own rows, nobody else sees any.
SET ROLE emr_alice;
SELECT * FROM ehrledger.current_actor();
SELECT id, patient_id, reason FROM encounter ORDER BY id;
SET ROLE emr_grey;
SELECT id, patient_id, reason FROM encounter ORDER BY id;
SET ROLE emr_clerk;
SELECT * FROM ehrledger.current_actor();
SELECT count(*) FROM encounter;
RESET ROLE;
-- The table's owner (and superusers) are not subject to consents.
SELECT count(*) FROM encounter;

-- alice consents, from her own role, to dr-grey seeing and adding to her
-- encounters.
SET ROLE emr_alice;
SELECT ehrledger.grant_consent('alice', 'dr-grey', scope => 'encounter', actions => '{read,write}') AS grey_encounters \gset
SELECT consent_id, patient, grantee, scope, scope_kind, purpose, actions, given_as, active FROM ehrledger.consents;
SET ROLE emr_grey;
SELECT id, patient_id, reason FROM encounter ORDER BY id;
-- Her prescriptions and lab results are another table: not covered.
SELECT count(*) FROM prescription;
SELECT count(*) FROM lab_result;
-- dr-yang has no consent at all.
SET ROLE emr_yang;
SELECT count(*) FROM encounter;

-- No route around the policy: joins, subqueries, CTEs, set operations,
-- window functions, a view the provider makes, cursors, prepared
-- statements, COPY, and a leaky function in the WHERE clause.
SET ROLE emr_yang;
SELECT count(*) FROM encounter e JOIN prescription p USING (patient_id);
SELECT (SELECT count(*) FROM encounter) AS via_subquery,
       EXISTS (SELECT 1 FROM encounter WHERE patient_id = 'bob') AS bob_exists;
WITH e AS (SELECT * FROM encounter) SELECT count(*) FROM e;
SELECT count(*) FROM (SELECT patient_id FROM encounter UNION ALL SELECT patient_id FROM prescription) u;
SELECT count(*) OVER () FROM encounter;
RESET ROLE;
CREATE SCHEMA yang AUTHORIZATION emr_yang;
SET ROLE emr_yang;
CREATE VIEW yang.all_encounters AS SELECT * FROM encounter;
SELECT count(*) FROM yang.all_encounters;
BEGIN;
DECLARE c CURSOR FOR SELECT * FROM encounter;
FETCH ALL FROM c;
CLOSE c;
COMMIT;
PREPARE enc(text) AS SELECT count(*) FROM encounter WHERE patient_id = $1;
EXECUTE enc('alice');
COPY encounter TO STDOUT;
COPY (SELECT * FROM encounter) TO STDOUT;
-- A leaky function sees only rows the policy already let through.
CREATE FUNCTION yang.leak(text, text) RETURNS boolean LANGUAGE plpgsql COST 0.0000001 AS $$
BEGIN
    RAISE NOTICE 'leaked: % %', $1, $2;
    RETURN true;
END $$;
SELECT count(*) FROM encounter WHERE yang.leak(patient_id, reason);
EXPLAIN (COSTS OFF) SELECT * FROM encounter WHERE yang.leak(patient_id, reason);
SELECT count(*) FROM encounter WHERE reason = 'chest pain' OR yang.leak(patient_id, reason);
-- The same view, read by dr-grey, shows what dr-grey may see: consents
-- follow the role that runs the query.
GRANT USAGE ON SCHEMA yang TO emr_grey;
GRANT SELECT ON yang.all_encounters TO emr_grey;
SET ROLE emr_grey;
SELECT count(*) FROM yang.all_encounters;
SELECT id, reason FROM encounter ORDER BY id;
-- The leaky function sees only the rows dr-grey may see.
SELECT count(*) FROM encounter WHERE yang.leak(patient_id, reason);
-- Row-showing ledger functions refuse tables under row-level security.
SELECT ehrledger.row_encoding('encounter', 1) IS NOT NULL;

-- Inserts are checked too: dr-grey may write alice's encounters, not bob's,
-- and not alice's prescriptions.
INSERT INTO encounter VALUES (4, 'alice', 'ecg');
INSERT INTO encounter VALUES (5, 'bob', 'ecg');
INSERT INTO prescription VALUES (3, 'alice', 'statin');

-- A category scope: alice lets the pharmacist see her medication tables.
SET ROLE emr_alice;
SELECT ehrledger.grant_consent('alice', 'rx-bailey', scope => 'medication') AS rx_medication \gset
SET ROLE emr_rx;
SELECT id, patient_id, drug FROM prescription ORDER BY id;
SELECT count(*) FROM encounter;
SELECT count(*) FROM lab_result;

-- A consent holds for its purpose: research is another purpose of use.
SET ehrledger.purpose = 'research';
SELECT count(*) FROM prescription;
RESET ehrledger.purpose;

-- Revoked: nothing, from the next statement on.
SET ROLE emr_alice;
SELECT ehrledger.revoke_consent(:rx_medication);
SET ROLE emr_rx;
SELECT count(*) FROM prescription;
SELECT consent_id, grantee, scope, active, revoked_at IS NOT NULL AS revoked FROM ehrledger.consents ORDER BY consent_id;

-- Expired: nothing.
SET ROLE emr_bob;
SELECT ehrledger.grant_consent('bob', 'dr-yang', valid_until => clock_timestamp() + interval '1 second') AS short_lived \gset
SET ROLE emr_yang;
SELECT count(*) AS while_valid FROM encounter;
SELECT pg_sleep(1.2);
SELECT count(*) AS after_expiry FROM encounter;

-- Versioned tables: updates are checked against the consent both for the
-- row as it was and as it becomes.
SET ROLE emr_bob;
SELECT ehrledger.grant_consent('bob', 'dr-yang', scope => 'diagnostics', actions => '{read,write}') AS bob_labs \gset
SET ROLE emr_yang;
UPDATE lab_result SET value = 13.9 WHERE id = 2;
UPDATE lab_result SET value = 0.02 WHERE id = 1;     -- alice's: not visible, so no row
UPDATE lab_result SET patient_id = 'alice' WHERE id = 2;   -- moving a row to another patient
SELECT id, patient_id, value FROM lab_result ORDER BY id;
RESET ROLE;
SELECT id, patient_id, value FROM lab_result ORDER BY id;

-- Granting is the patient's: a provider cannot grant itself consent, nor
-- revoke one, nor forge a patient's signature.
SET ROLE emr_grey;
SELECT ehrledger.grant_consent('bob', 'dr-grey');
SELECT ehrledger.revoke_consent(:grey_encounters);
SELECT ehrledger.grant_consent('bob', 'dr-grey',
       signature => ehrledger.sign(ehrledger.consent_payload('bob', 'dr-grey'),
                                   (SELECT secret_key FROM keys WHERE who = 'dr-grey')));
-- With bob's own signature (an app on bob's phone signed it), anyone may
-- present it, once.
SELECT ehrledger.sign(ehrledger.consent_payload('bob', 'dr-grey', 'encounter'),
                      (SELECT secret_key FROM keys WHERE who = 'bob')) AS bob_sig \gset
SET ROLE emr_clerk;
SELECT ehrledger.grant_consent('bob', 'dr-grey', 'encounter', signature => :'bob_sig') > 0 AS granted;
SELECT ehrledger.grant_consent('bob', 'dr-grey', 'encounter', signature => :'bob_sig');
-- A signature over other terms does not grant these.
SELECT ehrledger.grant_consent('bob', 'dr-grey', '*', signature => :'bob_sig');
SET ROLE emr_grey;
SELECT id, patient_id FROM encounter ORDER BY id;

-- Break-glass: dr-yang has no consent from alice, who arrives unconscious.
SET ROLE emr_yang;
SELECT count(*) FROM prescription;
SELECT ehrledger.break_glass('alice', 'unconscious in the ED, suspected overdose') > 0 AS opened;
SELECT id, patient_id, drug FROM prescription ORDER BY id;
RESET ROLE;
SELECT patient, actor, reason, expires_at - opened_at AS lasts FROM ehrledger.break_glass;
-- Only providers and pharmacists break the glass, with a reason.
SET ROLE emr_alice;
SELECT ehrledger.break_glass('bob', 'curious');
SET ROLE emr_clerk;
SELECT ehrledger.break_glass('bob', 'curious');
SET ROLE emr_grey;
SELECT ehrledger.break_glass('bob', 'why');
SELECT ehrledger.break_glass('dr-yang', 'cardiac arrest in ward 3');
-- It expires (ehrledger.break_glass_duration, 60 minutes unless a superuser
-- sets otherwise).
RESET ROLE;
SET ehrledger.break_glass_duration = '1s';
SET ROLE emr_grey;
SELECT ehrledger.break_glass('bob', 'cardiac arrest in ward 3') > 0 AS opened;
SELECT id, patient_id, value FROM lab_result ORDER BY id;
SELECT pg_sleep(1.2);
SELECT count(*) AS after_expiry FROM lab_result;
RESET ROLE;
RESET ehrledger.break_glass_duration;

-- A read is recorded even if the reading transaction rolls back: what was
-- read was seen.
SET ROLE emr_grey;
BEGIN;
SELECT id, reason FROM encounter WHERE patient_id = 'bob';
ROLLBACK;

-- Access history: alice sees who read or changed her rows, and on what
-- basis; an auditor may see anyone's; a provider may not.
SET ROLE emr_alice;
SELECT actor, action, tbl, basis FROM ehrledger.access_history('alice')
 WHERE actor IS DISTINCT FROM 'alice' ORDER BY event_seq;
SELECT count(*) > 0 AS sees_own_reads FROM ehrledger.access_history('alice') WHERE actor = 'alice';
SELECT ehrledger.access_history('bob');
SET ROLE emr_audit;
SELECT actor, action, tbl, basis FROM ehrledger.access_history('bob') ORDER BY event_seq;
SET ROLE emr_grey;
SELECT ehrledger.access_history('alice');
-- The same history as FHIR R4 AuditEvent resources.
SET ROLE emr_alice;
SELECT b->>'resourceType' AS resource, jsonb_array_length(b->'entry') > 5 AS has_entries,
       jsonb_pretty((b->'entry'-> -1->'resource') - 'recorded' - 'text' - 'id') AS last_event
  FROM ehrledger.access_history_fhir('alice') b;
RESET ROLE;

-- Nobody but ehrledger writes the ledger's own tables.
SET ROLE emr_grey;
INSERT INTO ehrledger.consent_event (consent_id, action, patient, grantee, scope, purpose, by_role)
    VALUES (99, 'grant', 'bob', 'dr-grey', '*', 'treatment', 'emr_grey');
SELECT * FROM ehrledger.access_log;
DELETE FROM ehrledger.access_event;
SELECT pg_read_file('ehrledger_node.key');
RESET ROLE;

-- Bad input.
SET ROLE emr_alice;
SELECT ehrledger.grant_consent('alice', 'nobody');
SELECT ehrledger.grant_consent('alice', 'alice');
SELECT ehrledger.grant_consent('alice', 'dr-yang', scope => 'no_such_table');
SELECT ehrledger.grant_consent('alice', 'dr-yang', purpose => 'Treatment!');
SELECT ehrledger.grant_consent('alice', 'dr-yang', valid_until => '2020-01-01 00:00:00+00');
SELECT ehrledger.grant_consent('dr-grey', 'dr-yang');
SELECT ehrledger.grant_consent(NULL, 'dr-yang');
SELECT ehrledger.revoke_consent(123456);
SELECT ehrledger.revoke_consent(:grey_encounters);
SELECT ehrledger.revoke_consent(:grey_encounters);
RESET ROLE;
SELECT ehrledger.protect('encounter', patient_column => 'nope');
CREATE TABLE misc (id int, patient int);
SELECT ehrledger.protect('misc', patient_column => 'patient');
SELECT ehrledger.protect('misc', category => 'x');
SELECT ehrledger.protect('misc', patient_column => 'id', category => 'Bad Category');
SELECT ehrledger.consent_check(1, 'alice', 'peek');

-- The schema guard keeps row-level security and the consent policies.
ALTER TABLE encounter DISABLE ROW LEVEL SECURITY;
DROP POLICY ehrledger_read ON encounter;
ALTER POLICY ehrledger_read ON encounter USING (true);
CREATE POLICY open_all ON encounter FOR SELECT USING (true);
-- A restrictive policy narrows access further and is allowed.
CREATE POLICY no_followups ON encounter AS RESTRICTIVE FOR SELECT USING (reason <> 'follow-up');
SET ROLE emr_alice;
SELECT id, reason FROM encounter ORDER BY id;
RESET ROLE;
DROP POLICY no_followups ON encounter;

-- FHIR: a consent as an R4 Consent resource.
SET ROLE emr_alice;
SELECT jsonb_pretty(ehrledger.consent_as_fhir(:grey_encounters) - 'dateTime' - 'text' #- '{provision,period}');
SET ROLE emr_yang;
SELECT ehrledger.consent_as_fhir(:grey_encounters) IS NULL AS not_yang_s_to_see;
RESET ROLE;

-- Everything above is in the ledger and verifies.
SELECT ehrledger.seal() > 0 AS sealed;
SELECT ok, problems FROM ehrledger.verify();

DROP SCHEMA yang CASCADE;
DROP EXTENSION ehrledger CASCADE;
DROP TABLE encounter, prescription, lab_result, misc, ehrledger.history_3;
DROP OWNED BY emr_alice, emr_bob, emr_grey, emr_yang, emr_rx, emr_audit, emr_clerk, emr_staff;
DROP ROLE emr_alice, emr_bob, emr_grey, emr_yang, emr_rx, emr_audit, emr_clerk, emr_staff;
