/*
 * ehrledger 0.1 -> 0.2: patient consent enforced by row-level security,
 * break-glass access, the access log and notifications.
 *
 * A fresh CREATE EXTENSION runs 0.1 and then this script, so a new
 * install and an upgraded one are the same by construction (sql/upgrade.sql
 * checks it).
 */
\echo Use "ALTER EXTENSION ehrledger UPDATE TO '0.2'" to load this file. \quit

-- C functions that run queries pin search_path too: an operator such as =
-- is looked up through it, and a caller's schema must not supply one.
ALTER FUNCTION ehrledger.seal() SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ehrledger.verify(pg_catalog.regclass, pg_catalog.jsonb) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ehrledger.digest() SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ehrledger.node_public_key() SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ehrledger.row_encoding(pg_catalog.regclass, pg_catalog.int8) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ehrledger.proof(pg_catalog.regclass, pg_catalog.int8, pg_catalog.jsonb) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ehrledger.consistency_proof(pg_catalog.jsonb, pg_catalog.jsonb) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ehrledger.history(pg_catalog.regclass) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ehrledger.check_hashable(pg_catalog.regclass) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ehrledger.signing_payload(pg_catalog.regclass, pg_catalog.jsonb) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ehrledger.verify_record(pg_catalog.regclass, pg_catalog.int8) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION ehrledger._actors_changed() SET search_path = pg_catalog, pg_temp;

-- Tables with a patient column may name a category, which consents can
-- scope to; the policies protect() installs are recorded so the schema
-- guard can tell when someone changes them.
ALTER TABLE ehrledger.registered_table
    ADD COLUMN category pg_catalog.text,
    ADD COLUMN policies pg_catalog.jsonb;

CREATE OR REPLACE VIEW ehrledger.protected_tables AS
    SELECT relid AS tbl, table_id, mode, patient_column, signer_column,
           signature_column, protected_at, protected_by, rows_at_protect, internal,
           history, retired_at, category
      FROM ehrledger.registered_table;

-- Every statement that reads a consent-protected table looks its role's
-- actor up, and its consents: these keep both lookups off sequential scans.
CREATE INDEX actor_event_actor ON ehrledger.actor_event (actor_id);
CREATE INDEX actor_event_pg_role ON ehrledger.actor_event (pg_role) WHERE pg_role IS NOT NULL;

-- Who the calling role is in the ledger: the actor mapped to it, if that
-- actor is not revoked.  Implemented in C because a SECURITY DEFINER
-- function cannot see its caller.
CREATE FUNCTION ehrledger.current_actor(OUT actor_id pg_catalog.text, OUT role pg_catalog.text)
    AS 'MODULE_PATHNAME', 'ehrledger_current_actor'
    LANGUAGE C STABLE
    SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION ehrledger.current_actor() IS
    'The actor (and its role) mapped to the current database role, or NULLs if there is none or it was revoked.';


-- Consents ---------------------------------------------------------------

CREATE SEQUENCE ehrledger.consent_id_seq AS pg_catalog.int8 MINVALUE 1;
SELECT pg_catalog.pg_extension_config_dump('ehrledger.consent_id_seq', '');

-- Grants and revocations, one row each; a ledgered table, so neither can
-- be changed or removed unnoticed.  scope_table is the ledger id of the
-- table a table-scoped consent names (table ids survive dump and restore,
-- table OIDs do not).
CREATE TABLE ehrledger.consent_event (
    consent_id  pg_catalog.int8 NOT NULL,
    action      pg_catalog.text NOT NULL CHECK (action IN ('grant', 'revoke')),
    patient     pg_catalog.text NOT NULL,
    grantee     pg_catalog.text,
    scope       pg_catalog.text,
    scope_table pg_catalog.int4,
    purpose     pg_catalog.text,
    valid_until pg_catalog.timestamptz,
    signature   pg_catalog.bytea,
    at          pg_catalog.timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    by_role     pg_catalog.name NOT NULL,
    by_actor    pg_catalog.text
);
COMMENT ON TABLE ehrledger.consent_event IS
    'The ledgered history of consents: every grant and revocation. Read it through ehrledger.consents.';
SELECT pg_catalog.pg_extension_config_dump('ehrledger.consent_event', '');
SELECT ehrledger._attach('ehrledger.consent_event', 2000000003, 'append_only', NULL, NULL, true);
CREATE UNIQUE INDEX consent_event_once ON ehrledger.consent_event (consent_id, action);
CREATE INDEX consent_event_grantee ON ehrledger.consent_event (grantee) WHERE action = 'grant';
CREATE INDEX consent_event_patient ON ehrledger.consent_event (patient);
-- A patient's signature grants or revokes once: a copy cannot be replayed.
CREATE UNIQUE INDEX consent_event_signature ON ehrledger.consent_event (signature)
    WHERE signature IS NOT NULL;

-- Every consent, current and past.  A patient sees consents it gave, a
-- grantee those it holds, auditors and admins all of them.
CREATE VIEW ehrledger.consents AS
    SELECT g.consent_id, g.patient, g.grantee, g.scope, g.purpose,
           g.at AS granted_at, g.valid_until, r.at AS revoked_at,
           g.by_role AS granted_by, r.by_role AS revoked_by,
           g.signature IS NOT NULL AS patient_signed,
           r.at IS NULL AND (g.valid_until IS NULL OR g.valid_until > pg_catalog.clock_timestamp()) AS active,
           CASE WHEN g.scope = '*' THEN 'all' WHEN g.scope_table IS NOT NULL THEN 'table'
                ELSE 'category' END AS scope_kind,
           g.ledger_seq
      FROM ehrledger.consent_event g
      LEFT JOIN ehrledger.consent_event r ON r.consent_id = g.consent_id AND r.action = 'revoke'
     CROSS JOIN ehrledger.current_actor() me
     WHERE g.action = 'grant'
       AND (me.actor_id IN (g.patient, g.grantee) OR me.role IN ('auditor', 'admin')
            OR COALESCE((SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = CURRENT_USER), false));
COMMENT ON VIEW ehrledger.consents IS
    'Consents, current and past: who may see whose rows, in what scope, for what purpose, until when; active says whether it holds now.';

-- The message a patient signs to grant a consent through someone else (a
-- front desk, an app): domain tag, then each field as a 4-byte big-endian
-- length and its UTF-8 bytes; valid_until as UTC ISO 8601 or "infinity".
CREATE FUNCTION ehrledger.consent_payload(patient pg_catalog.text, grantee pg_catalog.text,
                                          scope pg_catalog.text DEFAULT '*',
                                          purpose pg_catalog.text DEFAULT 'treatment',
                                          valid_until pg_catalog.timestamptz DEFAULT NULL)
    RETURNS pg_catalog.bytea
    LANGUAGE sql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.convert_to('ehrledger-consent-grant-1', 'UTF8')
        || (SELECT pg_catalog.string_agg(pg_catalog.int4send(pg_catalog.octet_length(f)) || pg_catalog.convert_to(f, 'UTF8'), ''::pg_catalog.bytea ORDER BY n)
              FROM pg_catalog.unnest(ARRAY[patient, grantee, scope, purpose,
                       COALESCE(pg_catalog.to_char(valid_until AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'), 'infinity')])
                   WITH ORDINALITY AS x(f, n))
$$;
COMMENT ON FUNCTION ehrledger.consent_payload(pg_catalog.text, pg_catalog.text, pg_catalog.text, pg_catalog.text, pg_catalog.timestamptz) IS
    'The bytes a patient signs with its Ed25519 key to grant a consent through someone else (docs/format.md §16).';

CREATE FUNCTION ehrledger.revocation_payload(consent_id pg_catalog.int8)
    RETURNS pg_catalog.bytea
    LANGUAGE sql IMMUTABLE STRICT
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.convert_to('ehrledger-consent-revoke-1', 'UTF8') || pg_catalog.int8send(consent_id)
$$;
COMMENT ON FUNCTION ehrledger.revocation_payload(pg_catalog.int8) IS
    'The bytes a patient signs to revoke a consent through someone else (docs/format.md §16).';

-- The actor a role maps to (NULL for none or revoked); for the functions
-- below, which receive their caller's role from ehrledger_with_caller.
CREATE FUNCTION ehrledger._actor_of(caller pg_catalog.name, OUT actor_id pg_catalog.text, OUT role pg_catalog.text)
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT a.actor_id, a.role FROM ehrledger.actors a
     WHERE a.pg_role = caller AND a.revoked_at IS NULL
$$;

-- An actor that exists, is not revoked, and (if wanted_role is given) has
-- that role.  Returns its current public key.
CREATE FUNCTION ehrledger._require_actor(actor pg_catalog.text, what pg_catalog.text,
                                         wanted_role pg_catalog.text DEFAULT NULL)
    RETURNS pg_catalog.bytea
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    a ehrledger.actors%ROWTYPE;
BEGIN
    IF actor IS NULL THEN
        RAISE EXCEPTION '% must not be NULL', what USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT * INTO a FROM ehrledger.actors x WHERE x.actor_id = actor;
    IF NOT FOUND THEN
        RAISE EXCEPTION '% "%" is not a registered actor', what, actor
            USING ERRCODE = 'undefined_object',
                  HINT = 'Register it with ehrledger.register_actor().';
    ELSIF a.revoked_at IS NOT NULL THEN
        RAISE EXCEPTION '% "%" was revoked', what, actor
            USING ERRCODE = 'object_not_in_prerequisite_state';
    ELSIF wanted_role IS NOT NULL AND a.role <> wanted_role THEN
        RAISE EXCEPTION '% "%" is a %, not a %', what, actor, a.role, wanted_role
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN a.public_key;
END
$$;

-- Records an access (or a grant, revocation or break-glass) in the access
-- log and announces it on channel ehrledger_events, one notification per
-- patient.  Called in the acting transaction for changes, grants,
-- revocations and break-glass, and by the access log writer for reads.
CREATE FUNCTION ehrledger._log_access(at pg_catalog.timestamptz, actor pg_catalog.text,
                                      pg_role pg_catalog.name, action pg_catalog.text,
                                      table_id pg_catalog.int4, patients pg_catalog.text[],
                                      bases pg_catalog.text[], detail pg_catalog.text)
    RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    tbl pg_catalog.text;
BEGIN
    INSERT INTO ehrledger.access_event (at, actor, pg_role, action, table_id, patients, bases, detail)
        VALUES (at, actor, pg_role, action, table_id, patients, bases, detail);
    SELECT r.relid::pg_catalog.text INTO tbl FROM ehrledger.registered_table r
     WHERE r.table_id = _log_access.table_id;
    PERFORM pg_catalog.pg_notify('ehrledger_events',
                pg_catalog.json_build_object('patient', p.patient, 'actor', actor, 'pg_role', pg_role,
                                             'action', action, 'table', tbl, 'at', at,
                                             'basis', p.basis)::pg_catalog.text)
       FROM ROWS FROM (pg_catalog.unnest(patients), pg_catalog.unnest(bases)) AS p(patient, basis);
END
$$;

CREATE FUNCTION ehrledger._grant_consent(caller pg_catalog.name, patient pg_catalog.text,
                                         grantee pg_catalog.text, scope pg_catalog.text,
                                         purpose pg_catalog.text, valid_until pg_catalog.timestamptz,
                                         signature pg_catalog.bytea)
    RETURNS pg_catalog.int8
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    me          record;
    patient_key pg_catalog.bytea;
    tid         pg_catalog.int4;
    n           pg_catalog.int8;
    id          pg_catalog.int8;
    basis       pg_catalog.text;
BEGIN
    patient_key := ehrledger._require_actor(patient, 'patient', 'patient');
    PERFORM ehrledger._require_actor(grantee, 'grantee');
    IF patient = grantee THEN
        RAISE EXCEPTION 'a patient needs no consent to see its own rows'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF scope IS NULL OR scope = '' THEN
        RAISE EXCEPTION 'scope must name a table, a category or ''*'''
            USING ERRCODE = 'invalid_parameter_value';
    ELSIF scope <> '*' THEN
        -- A table scope may be written with or without its schema.
        SELECT pg_catalog.min(r.table_id), pg_catalog.count(*) INTO tid, n
          FROM ehrledger.registered_table r
          JOIN pg_catalog.pg_class c ON c.oid = r.relid
          JOIN pg_catalog.pg_namespace s ON s.oid = c.relnamespace
         WHERE r.patient_column IS NOT NULL AND r.retired_at IS NULL
           AND scope IN (c.relname::pg_catalog.text, s.nspname || '.' || c.relname, r.relid::pg_catalog.text);
        IF n > 1 THEN
            RAISE EXCEPTION 'consent scope "%" names tables in more than one schema', scope
                USING ERRCODE = 'ambiguous_parameter',
                      HINT = 'Qualify the table name with its schema.';
        ELSIF tid IS NULL AND NOT EXISTS (SELECT 1 FROM ehrledger.registered_table r
                                           WHERE r.category = scope AND r.retired_at IS NULL) THEN
            RAISE EXCEPTION 'consent scope "%" is neither a table protected with a patient column nor a category', scope
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Use ''*'', a table name, or a category given to ehrledger.protect(..., category => ...).';
        END IF;
    END IF;
    IF purpose IS NULL OR purpose !~ '^[a-z][a-z0-9_-]{0,62}$' THEN
        RAISE EXCEPTION 'purpose "%" is not a lower-case word', purpose
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'For example treatment, emergency, research, payment.';
    END IF;
    IF valid_until IS NOT NULL AND valid_until <= pg_catalog.clock_timestamp() THEN
        RAISE EXCEPTION 'valid_until % is not in the future', valid_until
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    SELECT * INTO me FROM ehrledger._actor_of(caller);
    IF signature IS NOT NULL THEN
        IF NOT ehrledger.verify_signature(ehrledger.consent_payload(patient, grantee, scope, purpose, valid_until),
                                          signature, patient_key) THEN
            RAISE EXCEPTION 'signature is not patient "%"''s signature of this consent', patient
                USING ERRCODE = 'LD012',
                      HINT = 'The patient signs ehrledger.consent_payload() with its current key.';
        END IF;
        IF EXISTS (SELECT 1 FROM ehrledger.consent_event e WHERE e.signature = _grant_consent.signature) THEN
            RAISE EXCEPTION 'this signature was used before'
                USING ERRCODE = 'LD013',
                      DETAIL = 'A signed consent grants once; a copy cannot grant again.',
                      HINT = 'To grant the same again, the patient signs a payload with another valid_until.';
        END IF;
        basis := 'patient signature';
    ELSIF me.actor_id IS DISTINCT FROM patient THEN
        RAISE EXCEPTION 'only patient "%" may grant consent to its rows', patient
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Connect as the patient''s role, or pass the patient''s signature of ehrledger.consent_payload().';
    ELSE
        basis := 'patient role';
    END IF;

    id := pg_catalog.nextval('ehrledger.consent_id_seq');
    INSERT INTO ehrledger.consent_event (consent_id, action, patient, grantee, scope, scope_table,
                                         purpose, valid_until, signature, by_role, by_actor)
        VALUES (id, 'grant', patient, grantee, scope, tid, purpose, valid_until, signature,
                caller, me.actor_id);
    PERFORM ehrledger._actors_changed();
    PERFORM ehrledger._log_access(pg_catalog.clock_timestamp(), me.actor_id, caller, 'grant', tid,
                                  ARRAY[patient], ARRAY[basis],
                                  pg_catalog.format('consent %s to %s, scope %s, purpose %s, until %s',
                                                    id, grantee, scope, purpose, COALESCE(valid_until::pg_catalog.text, 'revoked')));
    RETURN id;
END
$$;

CREATE FUNCTION ehrledger.grant_consent(patient pg_catalog.text, grantee pg_catalog.text,
                                        scope pg_catalog.text DEFAULT '*',
                                        purpose pg_catalog.text DEFAULT 'treatment',
                                        valid_until pg_catalog.timestamptz DEFAULT NULL,
                                        signature pg_catalog.bytea DEFAULT NULL)
    RETURNS pg_catalog.int8
    AS 'MODULE_PATHNAME', 'ehrledger_with_caller'
    LANGUAGE C VOLATILE
    SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION ehrledger.grant_consent(pg_catalog.text, pg_catalog.text, pg_catalog.text, pg_catalog.text, pg_catalog.timestamptz, pg_catalog.bytea) IS
    'Grants an actor access to a patient''s rows (all, one table, or a category) for a purpose, until a time or revocation; by the patient''s role or with its signature. Returns the consent id.';

CREATE FUNCTION ehrledger._revoke_consent(caller pg_catalog.name, consent_id pg_catalog.int8,
                                          signature pg_catalog.bytea)
    RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    g           ehrledger.consent_event%ROWTYPE;
    me          record;
    patient_key pg_catalog.bytea;
    basis       pg_catalog.text;
BEGIN
    IF consent_id IS NULL THEN
        RAISE EXCEPTION 'consent_id must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('ehrledger.consent:' || consent_id));
    SELECT * INTO g FROM ehrledger.consent_event e
     WHERE e.consent_id = _revoke_consent.consent_id AND e.action = 'grant';
    IF g.consent_id IS NULL THEN
        RAISE EXCEPTION 'consent % does not exist', consent_id USING ERRCODE = 'undefined_object';
    END IF;
    SELECT * INTO me FROM ehrledger._actor_of(caller);
    IF signature IS NULL AND me.actor_id IS DISTINCT FROM g.patient THEN
        RAISE EXCEPTION 'only the patient may revoke consent %', consent_id
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Connect as the patient''s role, or pass the patient''s signature of ehrledger.revocation_payload().';
    END IF;
    IF signature IS NOT NULL THEN
        SELECT k.public_key INTO patient_key FROM ehrledger.actors k WHERE k.actor_id = g.patient;
        IF NOT ehrledger.verify_signature(ehrledger.revocation_payload(consent_id), signature, patient_key) THEN
            RAISE EXCEPTION 'signature is not patient "%"''s signature of this revocation', g.patient
                USING ERRCODE = 'LD012',
                      HINT = 'The patient signs ehrledger.revocation_payload(consent_id) with its current key.';
        END IF;
        basis := 'patient signature';
    ELSE
        basis := 'patient role';
    END IF;
    IF EXISTS (SELECT 1 FROM ehrledger.consent_event e
                WHERE e.consent_id = _revoke_consent.consent_id AND e.action = 'revoke') THEN
        RAISE EXCEPTION 'consent % was revoked already', consent_id
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    INSERT INTO ehrledger.consent_event (consent_id, action, patient, signature, by_role, by_actor)
        VALUES (consent_id, 'revoke', g.patient, signature, caller, me.actor_id);
    PERFORM ehrledger._actors_changed();
    PERFORM ehrledger._log_access(pg_catalog.clock_timestamp(), me.actor_id, caller, 'revoke', g.scope_table,
                                  ARRAY[g.patient], ARRAY[basis],
                                  pg_catalog.format('consent %s to %s revoked', consent_id, g.grantee));
END
$$;

CREATE FUNCTION ehrledger.revoke_consent(consent_id pg_catalog.int8, signature pg_catalog.bytea DEFAULT NULL)
    RETURNS void
    AS 'MODULE_PATHNAME', 'ehrledger_with_caller'
    LANGUAGE C VOLATILE
    SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION ehrledger.revoke_consent(pg_catalog.int8, pg_catalog.bytea) IS
    'Revokes a consent, by the patient''s role or with its signature of ehrledger.revocation_payload(); effective from the next statement of every session.';

-- A purpose as a FHIR Coding: the HL7 v3 ActReason code where one fits.
CREATE FUNCTION ehrledger._purpose_coding(purpose pg_catalog.text)
    RETURNS pg_catalog.jsonb
    LANGUAGE sql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN code IS NULL
                THEN pg_catalog.jsonb_build_object('system', 'urn:ehrledger:purpose', 'code', purpose)
                ELSE pg_catalog.jsonb_build_object('system', 'http://terminology.hl7.org/CodeSystem/v3-ActReason',
                                                   'code', code, 'display', purpose) END
      FROM (SELECT CASE purpose WHEN 'treatment' THEN 'TREAT' WHEN 'emergency' THEN 'ETREAT'
                                WHEN 'research' THEN 'HRESCH' WHEN 'payment' THEN 'HPAYMT'
                                WHEN 'operations' THEN 'HOPERAT' END AS code) x
$$;


-- A consent as a FHIR R4 Consent resource.
CREATE FUNCTION ehrledger.consent_as_fhir(consent_id pg_catalog.int8)
    RETURNS pg_catalog.jsonb
    LANGUAGE sql STABLE STRICT
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
        'resourceType', 'Consent',
        'id', c.consent_id::pg_catalog.text,
        'meta', pg_catalog.jsonb_build_object('source', 'urn:ehrledger:consent_event:' || c.ledger_seq),
        'status', CASE WHEN c.active THEN 'active' ELSE 'inactive' END,
        'scope', pg_catalog.jsonb_build_object('coding', pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
                    'system', 'http://terminology.hl7.org/CodeSystem/consentscope', 'code', 'patient-privacy'))),
        'category', pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object('coding', pg_catalog.jsonb_build_array(
                    pg_catalog.jsonb_build_object('system', 'http://loinc.org', 'code', '59284-0', 'display', 'Patient Consent')))),
        'patient', pg_catalog.jsonb_build_object('identifier', pg_catalog.jsonb_build_object(
                    'system', 'urn:ehrledger:actor', 'value', c.patient)),
        'dateTime', c.granted_at,
        'performer', pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object('identifier', pg_catalog.jsonb_build_object(
                    'system', 'urn:ehrledger:actor', 'value', c.patient))),
        'policyRule', pg_catalog.jsonb_build_object('coding', pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
                    'system', 'http://terminology.hl7.org/CodeSystem/v3-ActCode', 'code', 'OPTIN'))),
        'provision', pg_catalog.jsonb_build_object(
            'type', 'permit',
            'period', pg_catalog.jsonb_build_object('start', c.granted_at,
                                                    'end', LEAST(c.revoked_at, c.valid_until)),
            'actor', pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
                'role', pg_catalog.jsonb_build_object('coding', pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
                    'system', 'http://terminology.hl7.org/CodeSystem/v3-ParticipationType', 'code', 'IRCP',
                    'display', 'information recipient'))),
                'reference', pg_catalog.jsonb_build_object('identifier', pg_catalog.jsonb_build_object(
                    'system', 'urn:ehrledger:actor', 'value', c.grantee)))),
            'action', pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object('coding', pg_catalog.jsonb_build_array(
                pg_catalog.jsonb_build_object('system', 'http://terminology.hl7.org/CodeSystem/consentaction', 'code', 'access')))),
            'purpose', pg_catalog.jsonb_build_array(ehrledger._purpose_coding(c.purpose)),
            'class', CASE WHEN c.scope = '*' THEN NULL
                          ELSE pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
                              'system', 'urn:ehrledger:' || c.scope_kind,
                              'code', c.scope)) END)))
      FROM ehrledger.consents c
     WHERE c.consent_id = consent_as_fhir.consent_id
$$;
COMMENT ON FUNCTION ehrledger.consent_as_fhir(pg_catalog.int8) IS
    'A consent the caller may see, as a FHIR R4 Consent resource (NULL if it does not exist or is not the caller''s to see).';

-- Break-glass -------------------------------------------------------------

CREATE SEQUENCE ehrledger.break_glass_id_seq AS pg_catalog.int8 MINVALUE 1;
SELECT pg_catalog.pg_extension_config_dump('ehrledger.break_glass_id_seq', '');

CREATE TABLE ehrledger.break_glass (
    break_glass_id pg_catalog.int8 NOT NULL,
    patient     pg_catalog.text NOT NULL,
    actor       pg_catalog.text NOT NULL,
    pg_role     pg_catalog.name NOT NULL,
    reason      pg_catalog.text NOT NULL,
    opened_at   pg_catalog.timestamptz NOT NULL,
    expires_at  pg_catalog.timestamptz NOT NULL
);
COMMENT ON TABLE ehrledger.break_glass IS
    'Emergency access: who opened a patient''s records, why, and until when. Ledgered.';
SELECT pg_catalog.pg_extension_config_dump('ehrledger.break_glass', '');
SELECT ehrledger._attach('ehrledger.break_glass', 2000000004, 'append_only', NULL, NULL, true);
CREATE INDEX break_glass_actor ON ehrledger.break_glass (actor, expires_at);

CREATE FUNCTION ehrledger._break_glass(caller pg_catalog.name, patient pg_catalog.text, reason pg_catalog.text)
    RETURNS pg_catalog.int8
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    me      record;
    id      pg_catalog.int8;
    opened  pg_catalog.timestamptz := pg_catalog.clock_timestamp();
    expires pg_catalog.timestamptz;
BEGIN
    SELECT * INTO me FROM ehrledger._actor_of(caller);
    IF me.actor_id IS NULL OR me.role NOT IN ('provider', 'pharmacist') THEN
        RAISE EXCEPTION 'only a provider or pharmacist may break the glass'
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = pg_catalog.format('Role %s is mapped to %s.', caller,
                                             COALESCE('actor ' || me.actor_id || ' (' || me.role || ')', 'no actor'));
    END IF;
    PERFORM ehrledger._require_actor(patient, 'patient', 'patient');
    IF reason IS NULL OR pg_catalog.length(pg_catalog.btrim(reason)) < 5 THEN
        RAISE EXCEPTION 'break-glass needs a reason of at least 5 characters'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    id := pg_catalog.nextval('ehrledger.break_glass_id_seq');
    expires := opened + pg_catalog.make_interval(secs => (SELECT s.setting::pg_catalog.int4 FROM pg_catalog.pg_settings s
                                                           WHERE s.name = 'ehrledger.break_glass_duration'));
    INSERT INTO ehrledger.break_glass (break_glass_id, patient, actor, pg_role, reason, opened_at, expires_at)
        VALUES (id, patient, me.actor_id, caller, reason, opened, expires);
    PERFORM ehrledger._actors_changed();
    PERFORM ehrledger._log_access(opened, me.actor_id, caller, 'break_glass', NULL,
                                  ARRAY[patient], ARRAY['break-glass ' || id || ': ' || reason],
                                  pg_catalog.format('until %s', expires));
    RETURN id;
END
$$;

CREATE FUNCTION ehrledger.break_glass(patient pg_catalog.text, reason pg_catalog.text)
    RETURNS pg_catalog.int8
    AS 'MODULE_PATHNAME', 'ehrledger_with_caller'
    LANGUAGE C VOLATILE
    SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION ehrledger.break_glass(pg_catalog.text, pg_catalog.text) IS
    'Emergency access to a patient''s rows for the calling provider or pharmacist, for ehrledger.break_glass_duration; recorded in the ledger and announced.';


-- The access log -----------------------------------------------------------

-- One row per statement, actor, table and action, naming every patient whose
-- rows it read or changed with the basis for each (a consent, a
-- break-glass, the patient itself).  Ledgered and append-only.
CREATE TABLE ehrledger.access_event (
    at          pg_catalog.timestamptz NOT NULL,
    actor       pg_catalog.text,
    pg_role     pg_catalog.name NOT NULL,
    action      pg_catalog.text NOT NULL
                CHECK (action IN ('read', 'insert', 'update', 'delete', 'break_glass', 'grant', 'revoke')),
    table_id    pg_catalog.int4,
    patients    pg_catalog.text[] NOT NULL,
    bases       pg_catalog.text[] NOT NULL,
    detail      pg_catalog.text
);
COMMENT ON TABLE ehrledger.access_event IS
    'The ledgered access log, one row per statement, table and action; read it through ehrledger.access_log.';
SELECT pg_catalog.pg_extension_config_dump('ehrledger.access_event', '');
SELECT ehrledger._attach('ehrledger.access_event', 2000000005, 'append_only', NULL, NULL, true);
CREATE INDEX access_event_patients ON ehrledger.access_event USING gin (patients);

CREATE VIEW ehrledger.access_log AS
    SELECT e.ledger_seq AS event_seq, e.at, e.actor, e.pg_role, p.patient, e.action,
           r.relid AS tbl, p.basis, e.detail
      FROM ehrledger.access_event e
      LEFT JOIN ehrledger.registered_table r ON r.table_id = e.table_id
     CROSS JOIN LATERAL ROWS FROM (pg_catalog.unnest(e.patients), pg_catalog.unnest(e.bases)) AS p(patient, basis);
COMMENT ON VIEW ehrledger.access_log IS
    'Who read or changed which patient''s rows, when, and on what basis (consent, break-glass, own record); one row per patient.';

CREATE FUNCTION ehrledger._access_history(caller pg_catalog.name, patient pg_catalog.text,
                                          OUT event_seq pg_catalog.int8, OUT at pg_catalog.timestamptz,
                                          OUT actor pg_catalog.text, OUT pg_role pg_catalog.name,
                                          OUT action pg_catalog.text, OUT tbl pg_catalog.regclass,
                                          OUT basis pg_catalog.text, OUT detail pg_catalog.text)
    RETURNS SETOF record
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    me record;
BEGIN
    IF _access_history.patient IS NULL THEN
        RAISE EXCEPTION 'patient must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT * INTO me FROM ehrledger._actor_of(caller);
    IF me.actor_id IS DISTINCT FROM _access_history.patient AND me.role IS DISTINCT FROM 'auditor'
       AND NOT COALESCE((SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = caller), false) THEN
        RAISE EXCEPTION 'only patient "%" itself or an auditor may read its access history', _access_history.patient
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN QUERY
        SELECT e.ledger_seq, e.at, e.actor, e.pg_role, e.action, r.relid, p.basis, e.detail
          FROM ehrledger.access_event e
          LEFT JOIN ehrledger.registered_table r ON r.table_id = e.table_id
         CROSS JOIN LATERAL ROWS FROM (pg_catalog.unnest(e.patients), pg_catalog.unnest(e.bases)) AS p(patient, basis)
         WHERE e.patients OPERATOR(pg_catalog.@>) ARRAY[_access_history.patient] AND p.patient = _access_history.patient
         ORDER BY e.ledger_seq;
END
$$;

CREATE FUNCTION ehrledger.access_history(patient pg_catalog.text,
                                         OUT event_seq pg_catalog.int8, OUT at pg_catalog.timestamptz,
                                         OUT actor pg_catalog.text, OUT pg_role pg_catalog.name,
                                         OUT action pg_catalog.text, OUT tbl pg_catalog.regclass,
                                         OUT basis pg_catalog.text, OUT detail pg_catalog.text)
    RETURNS SETOF record
    AS 'MODULE_PATHNAME', 'ehrledger_with_caller'
    LANGUAGE C STABLE
    SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION ehrledger.access_history(pg_catalog.text) IS
    'Who read or changed a patient''s rows, when, and on what basis; for the patient itself or an auditor.';

-- A patient's access history as a FHIR R4 Bundle of AuditEvent resources.
CREATE FUNCTION ehrledger.access_history_fhir(patient pg_catalog.text)
    RETURNS pg_catalog.jsonb
    LANGUAGE sql STABLE STRICT
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.jsonb_build_object(
        'resourceType', 'Bundle',
        'type', 'collection',
        'entry', COALESCE(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object('resource', pg_catalog.jsonb_strip_nulls(
            pg_catalog.jsonb_build_object(
                'resourceType', 'AuditEvent',
                'id', h.event_seq::pg_catalog.text || '-' || h.n::pg_catalog.text,
                'type', CASE WHEN h.action IN ('grant', 'revoke')
                             THEN pg_catalog.jsonb_build_object('system', 'http://terminology.hl7.org/CodeSystem/iso-21089-lifecycle',
                                                                'code', 'access', 'display', 'Consent ' || h.action)
                             ELSE pg_catalog.jsonb_build_object('system', 'http://dicom.nema.org/resources/ontology/DCM',
                                                                'code', '110110', 'display', 'Patient Record') END,
                'subtype', CASE h.action
                    WHEN 'read' THEN pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
                        'system', 'http://hl7.org/fhir/restful-interaction', 'code', 'read'))
                    WHEN 'insert' THEN pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
                        'system', 'http://hl7.org/fhir/restful-interaction', 'code', 'create'))
                    WHEN 'update' THEN pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
                        'system', 'http://hl7.org/fhir/restful-interaction', 'code', 'update'))
                    WHEN 'delete' THEN pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
                        'system', 'http://hl7.org/fhir/restful-interaction', 'code', 'delete'))
                    ELSE pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
                        'system', 'urn:ehrledger:action', 'code', h.action)) END,
                'action', CASE h.action WHEN 'read' THEN 'R' WHEN 'insert' THEN 'C' WHEN 'update' THEN 'U'
                                        WHEN 'delete' THEN 'D' ELSE 'E' END,
                'recorded', h.at,
                'outcome', '0',
                'purposeOfEvent', CASE WHEN h.action = 'break_glass' OR h.basis LIKE 'break-glass %'
                    THEN pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object('coding', pg_catalog.jsonb_build_array(
                        ehrledger._purpose_coding('emergency')))) END,
                'agent', pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
                    'who', pg_catalog.jsonb_build_object('identifier', pg_catalog.jsonb_build_object(
                        'system', 'urn:ehrledger:actor', 'value', h.actor)),
                    'altId', h.pg_role::pg_catalog.text,
                    'requestor', true)),
                'source', pg_catalog.jsonb_build_object('observer', pg_catalog.jsonb_build_object(
                    'display', 'ehrledger'),
                    'type', pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
                        'system', 'http://terminology.hl7.org/CodeSystem/security-source-type', 'code', '6',
                        'display', 'Security Server'))),
                'entity', pg_catalog.jsonb_build_array(
                    pg_catalog.jsonb_build_object(
                        'what', pg_catalog.jsonb_build_object('identifier', pg_catalog.jsonb_build_object(
                            'system', 'urn:ehrledger:actor', 'value', patient)),
                        'type', pg_catalog.jsonb_build_object('system', 'http://terminology.hl7.org/CodeSystem/audit-entity-type',
                                                              'code', '1', 'display', 'Person'),
                        'role', pg_catalog.jsonb_build_object('system', 'http://terminology.hl7.org/CodeSystem/object-role',
                                                              'code', '1', 'display', 'Patient')),
                    pg_catalog.jsonb_build_object(
                        'what', pg_catalog.jsonb_build_object('display', COALESCE(h.tbl::pg_catalog.text, 'ehrledger')),
                        'type', pg_catalog.jsonb_build_object('system', 'http://terminology.hl7.org/CodeSystem/audit-entity-type',
                                                              'code', '2', 'display', 'System Object'),
                        'description', h.basis,
                        'detail', CASE WHEN h.detail IS NOT NULL THEN pg_catalog.jsonb_build_array(
                            pg_catalog.jsonb_build_object('type', 'detail', 'valueString', h.detail)) END)))))
            ORDER BY h.event_seq, h.n), '[]'::pg_catalog.jsonb))
      FROM (SELECT x.*, pg_catalog.row_number() OVER (PARTITION BY x.event_seq) AS n
              FROM ehrledger.access_history(patient) x) h
$$;
COMMENT ON FUNCTION ehrledger.access_history_fhir(pg_catalog.text) IS
    'A patient''s access history as a FHIR R4 Bundle of AuditEvent resources; for the patient itself or an auditor.';


-- Row-level security -------------------------------------------------------

-- Every patient an actor may act on in a table, with the basis: itself (a
-- patient), a live consent for the session's purpose covering the table
-- (all tables, the table, or its category), an open break-glass.
-- consent_check() runs this once per statement.
CREATE FUNCTION ehrledger._permitted_patients(actor pg_catalog.text, tid pg_catalog.int4,
                                              purpose pg_catalog.text,
                                              OUT patient pg_catalog.text, OUT basis pg_catalog.text,
                                              OUT until pg_catalog.timestamptz)
    RETURNS SETOF record
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT a.actor_id, 'own record', NULL::pg_catalog.timestamptz
      FROM ehrledger.actors a
     WHERE a.actor_id = _permitted_patients.actor AND a.role = 'patient'
    UNION ALL
    SELECT g.patient, 'consent ' || g.consent_id, g.valid_until
      FROM ehrledger.consent_event g
     WHERE g.action = 'grant' AND g.grantee = _permitted_patients.actor
       AND g.purpose = _permitted_patients.purpose
       AND (g.valid_until IS NULL OR g.valid_until > pg_catalog.clock_timestamp())
       AND (g.scope = '*' OR g.scope_table = _permitted_patients.tid
            OR (g.scope_table IS NULL AND g.scope = (SELECT r.category FROM ehrledger.registered_table r
                                                      WHERE r.table_id = _permitted_patients.tid)))
       AND NOT EXISTS (SELECT 1 FROM ehrledger.consent_event v
                        WHERE v.consent_id = g.consent_id AND v.action = 'revoke')
    UNION ALL
    SELECT b.patient, 'break-glass ' || b.break_glass_id || ': ' || b.reason, b.expires_at
      FROM ehrledger.break_glass b
     WHERE b.actor = _permitted_patients.actor AND b.expires_at > pg_catalog.clock_timestamp()
$$;

-- The policy function: whether the current role may act (read, insert,
-- update, delete) on a row of patient `patient` in ledger table `table_id`.
-- Decisions are cached per statement; the rows it lets through are
-- recorded in the access log once per statement, patient and action.  Its
-- high cost lets the planner test cheap leak-proof conditions of the query
-- (patient_id = $1, id = $1) first, so rows those exclude are not recorded
-- as accessed.
CREATE FUNCTION ehrledger.consent_check(table_id pg_catalog.int4, patient pg_catalog.text,
                                        action pg_catalog.text)
    RETURNS pg_catalog.bool
    AS 'MODULE_PATHNAME', 'ehrledger_consent_check'
    LANGUAGE C STABLE PARALLEL RESTRICTED COST 100;
COMMENT ON FUNCTION ehrledger.consent_check(pg_catalog.int4, pg_catalog.text, pg_catalog.text) IS
    'Row-level security policy of tables protected with a patient column; see README, Consent.';

-- The permissive policies of a table as the schema guard compares them.
CREATE FUNCTION ehrledger._policies_of(tbl pg_catalog.regclass) RETURNS pg_catalog.jsonb
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT COALESCE(pg_catalog.jsonb_object_agg(p.polname, pg_catalog.jsonb_build_array(
               p.polcmd, p.polroles::pg_catalog.text, pg_catalog.pg_get_expr(p.polqual, p.polrelid),
               pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid))), '{}')
      FROM pg_catalog.pg_policy p
     WHERE p.polrelid = tbl AND p.polpermissive
$$;

CREATE FUNCTION ehrledger._attach_consent(tbl pg_catalog.regclass, tid pg_catalog.int4,
                                          patient_column pg_catalog.name)
    RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    check_call pg_catalog.text;
    pol        record;
BEGIN
    FOR pol IN SELECT * FROM (VALUES ('read', 'SELECT'), ('insert', 'INSERT'),
                                     ('update', 'UPDATE'), ('delete', 'DELETE')) AS x(action, cmd) LOOP
        check_call := pg_catalog.format('ehrledger.consent_check(%s, %I::pg_catalog.text, %L)',
                                        tid, patient_column, pol.action);
        EXECUTE pg_catalog.format('CREATE POLICY %I ON %s FOR %s %s',
                                  'ehrledger_' || pol.action, tbl, pol.cmd,
                                  CASE pol.cmd WHEN 'INSERT' THEN 'WITH CHECK (' || check_call || ')'
                                               WHEN 'UPDATE' THEN 'USING (' || check_call || ') WITH CHECK (' || check_call || ')'
                                               ELSE 'USING (' || check_call || ')' END);
    END LOOP;
    EXECUTE pg_catalog.format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', tbl);
    UPDATE ehrledger.registered_table SET policies = ehrledger._policies_of(tbl) WHERE table_id = tid;
END
$$;

DROP FUNCTION ehrledger.protect(pg_catalog.regclass, pg_catalog.text, pg_catalog.name, pg_catalog.name, pg_catalog.name);
CREATE FUNCTION ehrledger.protect(tbl pg_catalog.regclass,
                                  mode pg_catalog.text DEFAULT 'append_only',
                                  patient_column pg_catalog.name DEFAULT NULL,
                                  signer_column pg_catalog.name DEFAULT NULL,
                                  signature_column pg_catalog.name DEFAULT NULL,
                                  category pg_catalog.text DEFAULT NULL)
    RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $protect$
DECLARE
    rel         pg_catalog.pg_class%ROWTYPE;
    nsp         pg_catalog.name;
    col_type    pg_catalog.regtype;
    tid         pg_catalog.int4;
BEGIN
    IF tbl IS NULL THEN
        RAISE EXCEPTION 'table to protect must not be NULL'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF mode IS NULL OR mode NOT IN ('append_only', 'versioned') THEN
        RAISE EXCEPTION 'unknown ledger mode "%"', mode
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use mode => ''append_only'' or mode => ''versioned''.';
    END IF;
    IF (signer_column IS NULL) <> (signature_column IS NULL) THEN
        RAISE EXCEPTION 'signer_column and signature_column go together'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Name both columns, or neither.';
    END IF;
    IF category IS NOT NULL AND patient_column IS NULL THEN
        RAISE EXCEPTION 'a category needs a patient column'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Consents scope to categories of tables protected with patient_column.';
    ELSIF category IS NOT NULL AND (category = '*' OR category !~ '^[a-z][a-z0-9_-]{0,62}$') THEN
        RAISE EXCEPTION 'category "%" is not a lower-case word', category
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'For example medication, diagnostics, mental-health.';
    END IF;

    SELECT * INTO rel FROM pg_catalog.pg_class WHERE oid = tbl;
    SELECT nspname INTO nsp FROM pg_catalog.pg_namespace WHERE oid = rel.relnamespace;
    IF rel.relkind = 'p' THEN
        RAISE EXCEPTION 'cannot protect partitioned table %', tbl
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'Protect each partition instead.';
    ELSIF rel.relkind <> 'r' THEN
        RAISE EXCEPTION '"%" is not a table', tbl
            USING ERRCODE = 'wrong_object_type',
                  DETAIL = 'Only ordinary tables can be protected.';
    END IF;
    IF rel.relpersistence = 't' THEN
        RAISE EXCEPTION 'cannot protect temporary table %', tbl
            USING ERRCODE = 'feature_not_supported',
                  DETAIL = 'A temporary table vanishes at the end of its session.';
    ELSIF rel.relpersistence = 'u' THEN
        RAISE EXCEPTION 'cannot protect unlogged table %', tbl
            USING ERRCODE = 'feature_not_supported',
                  DETAIL = 'An unlogged table loses its rows in a crash.',
                  HINT = pg_catalog.format('Run ALTER TABLE %s SET LOGGED first.', tbl);
    END IF;
    IF nsp = 'ehrledger' THEN
        RAISE EXCEPTION 'cannot protect %: it belongs to ehrledger itself', tbl
            USING ERRCODE = 'insufficient_privilege';
    ELSIF nsp IN ('pg_catalog', 'information_schema') OR nsp LIKE 'pg\_toast%' THEN
        RAISE EXCEPTION 'cannot protect system catalog %', tbl
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF EXISTS (SELECT 1 FROM ehrledger.registered_table r WHERE r.relid = tbl) THEN
        RAISE EXCEPTION 'table % is already protected', tbl
            USING ERRCODE = 'duplicate_object';
    END IF;
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                WHERE a.attrelid = tbl AND NOT a.attisdropped
                  AND a.attname IN ('ledger_seq', 'ledger_hash', 'ledger_op', 'ledger_ended_seq',
                                    'ledger_ended_hash', 'ledger_ended_at', 'ledger_ended_by')) THEN
        RAISE EXCEPTION 'table % already has a column whose name ehrledger reserves', tbl
            USING ERRCODE = 'duplicate_column',
                  DETAIL = 'ledger_seq, ledger_hash, ledger_op, ledger_ended_seq, ledger_ended_hash, ledger_ended_at and ledger_ended_by are reserved.',
                  HINT = 'Rename that column before protecting the table.';
    END IF;
    IF signer_column IS NOT NULL AND signer_column = signature_column THEN
        RAISE EXCEPTION 'signer and signature must be two different columns'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF signer_column IS NOT NULL THEN
        PERFORM ehrledger._require_text_column(tbl, signer_column, 'signer',
                                               'The signer column holds the actor_id of the row''s author.');
        SELECT a.atttypid INTO col_type FROM pg_catalog.pg_attribute a
         WHERE a.attrelid = tbl AND a.attname = signature_column AND NOT a.attisdropped AND a.attnum > 0;
        IF col_type IS NULL THEN
            RAISE EXCEPTION 'column "%" of % does not exist', signature_column, tbl
                USING ERRCODE = 'undefined_column';
        ELSIF col_type <> 'pg_catalog.bytea'::pg_catalog.regtype THEN
            RAISE EXCEPTION 'signature column "%" of % must be of type bytea, not %', signature_column, tbl, col_type
                USING ERRCODE = 'datatype_mismatch';
        END IF;
    END IF;
    IF patient_column IS NOT NULL THEN
        PERFORM ehrledger._require_text_column(tbl, patient_column, 'patient',
                                               'The patient column holds the actor_id of the patient a row is about.');
        IF EXISTS (SELECT 1 FROM pg_catalog.pg_policy p WHERE p.polrelid = tbl AND p.polpermissive) THEN
            RAISE EXCEPTION 'table % already has permissive row-level security policies', tbl
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      DETAIL = 'They would widen what consents allow.',
                      HINT = 'Drop them, or make them AS RESTRICTIVE, before protecting the table.';
        END IF;
    END IF;

    tid := pg_catalog.nextval('ehrledger.registered_table_id')::pg_catalog.int4;
    PERFORM ehrledger._attach(tbl, tid, mode, signer_column, signature_column, false);
    IF patient_column IS NOT NULL THEN
        UPDATE ehrledger.registered_table r
           SET patient_column = protect.patient_column, category = protect.category
         WHERE r.table_id = tid;
        PERFORM ehrledger._attach_consent(tbl, tid, patient_column);
    END IF;
END
$protect$;
COMMENT ON FUNCTION ehrledger.protect(pg_catalog.regclass, pg_catalog.text, pg_catalog.name, pg_catalog.name, pg_catalog.name, pg_catalog.text) IS
    'Makes a table a ledger table: numbers and hashes every row, existing ones included, refuses UPDATE, DELETE and TRUNCATE (or versions them), checks authors'' signatures with signer_column and signature_column, and with patient_column enforces patients'' consents by row-level security.';

-- A column of tbl whose type is text or varchar (or a domain over them).
CREATE FUNCTION ehrledger._require_text_column(tbl pg_catalog.regclass, col pg_catalog.name,
                                               what pg_catalog.text, hint pg_catalog.text)
    RETURNS void
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    col_type pg_catalog.regtype;
BEGIN
    SELECT a.atttypid INTO col_type FROM pg_catalog.pg_attribute a
     WHERE a.attrelid = tbl AND a.attname = col AND NOT a.attisdropped AND a.attnum > 0;
    IF col_type IS NULL THEN
        RAISE EXCEPTION 'column "%" of % does not exist', col, tbl
            USING ERRCODE = 'undefined_column';
    ELSIF (SELECT CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
             FROM pg_catalog.pg_type t WHERE t.oid = col_type)::pg_catalog.regtype NOT IN
          ('pg_catalog.text'::pg_catalog.regtype, 'pg_catalog.varchar'::pg_catalog.regtype) THEN
        RAISE EXCEPTION '% column "%" of % must be of type text, not %', what, col, tbl, col_type
            USING ERRCODE = 'datatype_mismatch', HINT = hint;
    END IF;
END
$$;

-- The schema guard also keeps row-level security on, and the consent
-- policies as protect() made them, on tables with a patient column: no
-- permissive policy may be added, changed or dropped (restrictive ones
-- narrow access and are fine).  Like the trigger checks, it tolerates
-- policies that do not exist yet, since pg_restore creates them one by one.
CREATE FUNCTION ehrledger._check_consent_policies(tid pg_catalog.int4, tag pg_catalog.text) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r       ehrledger.registered_table%ROWTYPE;
    current pg_catalog.jsonb;
    missing pg_catalog.bool;
BEGIN
    SELECT * INTO r FROM ehrledger.registered_table WHERE table_id = tid;
    current := ehrledger._policies_of(r.relid);
    missing := EXISTS (SELECT 1 FROM pg_catalog.jsonb_object_keys(r.policies) k WHERE NOT current ? k);
    IF EXISTS (SELECT 1 FROM pg_catalog.jsonb_each(current) c
                WHERE NOT r.policies ? c.key OR r.policies -> c.key <> c.value)
       OR (tag = 'DROP POLICY' AND missing) THEN
        RAISE EXCEPTION 'cannot change, drop or add permissive row-level security policies of ledger table %', r.relid
            USING ERRCODE = 'LD020',
                  DETAIL = 'Permissive policies would widen what patients'' consents allow.',
                  HINT = 'Restrictive policies (CREATE POLICY ... AS RESTRICTIVE) may narrow access further.';
    END IF;
    IF tag = 'ALTER TABLE' AND NOT missing
       AND NOT (SELECT c.relrowsecurity FROM pg_catalog.pg_class c WHERE c.oid = r.relid) THEN
        RAISE EXCEPTION 'cannot disable row-level security on ledger table %', r.relid
            USING ERRCODE = 'LD020',
                  DETAIL = 'Patients'' consents are enforced by it.';
    END IF;
END
$$;

CREATE FUNCTION ehrledger._guard_policies() RETURNS event_trigger
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    tid pg_catalog.int4;
BEGIN
    FOR tid IN
        SELECT r.table_id FROM ehrledger.registered_table r
         WHERE r.patient_column IS NOT NULL AND r.retired_at IS NULL AND r.policies IS NOT NULL
           AND (TG_TAG = 'DROP POLICY'
                OR EXISTS (SELECT 1 FROM pg_catalog.pg_event_trigger_ddl_commands() c
                            WHERE (c.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND c.objid = r.relid)
                               OR (c.classid = 'pg_catalog.pg_policy'::pg_catalog.regclass
                                   AND EXISTS (SELECT 1 FROM pg_catalog.pg_policy p
                                                WHERE p.oid = c.objid AND p.polrelid = r.relid))))
    LOOP
        PERFORM ehrledger._check_consent_policies(tid, TG_TAG);
    END LOOP;
END
$$;
CREATE EVENT TRIGGER ehrledger_guard_policies ON ddl_command_end
    WHEN TAG IN ('CREATE POLICY', 'ALTER POLICY', 'DROP POLICY', 'ALTER TABLE')
    EXECUTE FUNCTION ehrledger._guard_policies();

-- Retiring a table with a patient column keeps its row-level security: the
-- rows still belong to patients.  Only the ledger's triggers go.

-- Privileges.  Reading consents, the access log and break-glass goes
-- through the views and functions above, which decide who sees what.
REVOKE ALL ON ehrledger.consent_event, ehrledger.break_glass, ehrledger.access_event,
    ehrledger.access_log, ehrledger.consents FROM PUBLIC;
REVOKE ALL ON SEQUENCE ehrledger.consent_id_seq, ehrledger.break_glass_id_seq FROM PUBLIC;
REVOKE ALL ON FUNCTION ehrledger._actor_of(pg_catalog.name), ehrledger._require_actor(pg_catalog.text, pg_catalog.text, pg_catalog.text),
    ehrledger._log_access(pg_catalog.timestamptz, pg_catalog.text, pg_catalog.name, pg_catalog.text, pg_catalog.int4, pg_catalog.text[], pg_catalog.text[], pg_catalog.text),
    ehrledger._grant_consent(pg_catalog.name, pg_catalog.text, pg_catalog.text, pg_catalog.text, pg_catalog.text, pg_catalog.timestamptz, pg_catalog.bytea),
    ehrledger._revoke_consent(pg_catalog.name, pg_catalog.int8, pg_catalog.bytea),
    ehrledger._break_glass(pg_catalog.name, pg_catalog.text, pg_catalog.text),
    ehrledger._access_history(pg_catalog.name, pg_catalog.text),
    ehrledger._policies_of(pg_catalog.regclass),
    ehrledger._permitted_patients(pg_catalog.text, pg_catalog.int4, pg_catalog.text),
    ehrledger._attach_consent(pg_catalog.regclass, pg_catalog.int4, pg_catalog.name),
    ehrledger._require_text_column(pg_catalog.regclass, pg_catalog.name, pg_catalog.text, pg_catalog.text),
    ehrledger._check_consent_policies(pg_catalog.int4, pg_catalog.text),
    ehrledger._guard_policies(),
    ehrledger.protect(pg_catalog.regclass, pg_catalog.text, pg_catalog.name, pg_catalog.name, pg_catalog.name, pg_catalog.text)
    FROM PUBLIC;
GRANT SELECT ON ehrledger.consents TO PUBLIC;
GRANT EXECUTE ON FUNCTION ehrledger.current_actor(),
    ehrledger.consent_payload(pg_catalog.text, pg_catalog.text, pg_catalog.text, pg_catalog.text, pg_catalog.timestamptz),
    ehrledger.revocation_payload(pg_catalog.int8),
    ehrledger.grant_consent(pg_catalog.text, pg_catalog.text, pg_catalog.text, pg_catalog.text, pg_catalog.timestamptz, pg_catalog.bytea),
    ehrledger.revoke_consent(pg_catalog.int8, pg_catalog.bytea),
    ehrledger.consent_as_fhir(pg_catalog.int8), ehrledger._purpose_coding(pg_catalog.text),
    ehrledger.break_glass(pg_catalog.text, pg_catalog.text),
    ehrledger.access_history(pg_catalog.text), ehrledger.access_history_fhir(pg_catalog.text),
    ehrledger.consent_check(pg_catalog.int4, pg_catalog.text, pg_catalog.text)
    TO PUBLIC;
