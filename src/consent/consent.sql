-- consent/consent.sql: consents, break-glass and the access log.
--
-- A patient's consent (granted by the patient's role, by the patient's
-- signature, or on paper through a registrar) is a ledgered row of
-- ehrledger.consent_event; row-level security policies on tables protected
-- with a patient column (_attach_consent(), src/consent/consent.c) let a role see a
-- patient's rows only under a valid consent or break-glass.  Every read and
-- change of a patient's rows is noted and written to ehrledger.access_event
-- by the access log writer (src/consent/access_log.c), and announced on channel
-- ehrledger_events.
--
-- Next: fhir.sql shows consents and the access history as FHIR resources.

-- Tables and sequences ----------------------------------------------------

CREATE SEQUENCE ehrledger.consent_id_seq AS bigint;

-- Grants and revocations, one row each; a ledgered table, so neither can
-- be changed or removed unnoticed.  scope_table is the ledger id of the
-- table a table-scoped consent names (table ids survive dump and restore,
-- table OIDs do not).
CREATE TABLE ehrledger.consent_event (
    consent_id bigint NOT NULL,
    action text NOT NULL,
    patient text NOT NULL,
    grantee text,
    scope text,
    scope_table integer,
    purpose text,
    valid_until timestamp with time zone,
    signature bytea,
    at timestamp with time zone DEFAULT clock_timestamp() NOT NULL,
    by_role name NOT NULL,
    by_actor text,
    CONSTRAINT consent_event_action_check CHECK ((action = ANY (ARRAY['grant'::text, 'revoke'::text])))
);
COMMENT ON TABLE ehrledger.consent_event IS 'The ledgered history of consents: every grant and revocation. Read it through ehrledger.consents.';

CREATE SEQUENCE ehrledger.break_glass_id_seq AS bigint;

CREATE TABLE ehrledger.break_glass (
    break_glass_id bigint NOT NULL,
    patient text NOT NULL,
    actor text NOT NULL,
    pg_role name NOT NULL,
    reason text NOT NULL,
    opened_at timestamp with time zone NOT NULL,
    expires_at timestamp with time zone NOT NULL
);
COMMENT ON TABLE ehrledger.break_glass IS 'Emergency access: who opened a patient''s records, why, and until when. Ledgered.';

-- One row per statement, actor, table and action, naming every patient whose
-- rows it read or changed with the basis for each (a consent, a
-- break-glass, the patient itself).  Ledgered and append-only.
CREATE TABLE ehrledger.access_event (
    at timestamp with time zone NOT NULL,
    actor text,
    pg_role name NOT NULL,
    action text NOT NULL,
    table_id integer,
    patients text[] NOT NULL,
    bases text[] NOT NULL,
    detail text,
    CONSTRAINT access_event_action_check CHECK ((action = ANY (ARRAY['read'::text, 'insert'::text, 'update'::text, 'delete'::text, 'break_glass'::text, 'grant'::text, 'revoke'::text])))
);
COMMENT ON TABLE ehrledger.access_event IS 'The ledgered access log, one row per statement, table and action; read it through ehrledger.access_log.';

-- A reader writes its record to the WAL; the access log writer turns it
-- into a row of access_event (src/consent/access_log.c).  One row: the WAL
-- position up to which every read is written (at_rest: nothing was
-- pending then), moved in the writer's transactions; after a restart the
-- writer reads the WAL from here.  Not dumped: a WAL position means
-- nothing in another cluster.
CREATE TABLE ehrledger.access_log_position (
    lsn pg_lsn NOT NULL,
    at_rest boolean NOT NULL
);
COMMENT ON TABLE ehrledger.access_log_position IS 'How far the access log writer has written the reads recorded in the WAL; the writer''s own bookkeeping.';
INSERT INTO ehrledger.access_log_position VALUES (pg_catalog.pg_current_wal_insert_lsn(), true);

-- Hot standbys' sessions (src/consent/standby.c): how far the primary has
-- recorded each session's reads, so that a batch sent twice is recorded
-- once, and the break-glass requests carried out.  Not dumped.
CREATE TABLE ehrledger.standby_session (
    session bytea PRIMARY KEY,
    standby text NOT NULL,
    last_end bigint NOT NULL,
    first_seen timestamp with time zone DEFAULT pg_catalog.now() NOT NULL,
    last_seen timestamp with time zone DEFAULT pg_catalog.now() NOT NULL
);
COMMENT ON TABLE ehrledger.standby_session IS 'Standbys'' sessions: how far the primary has recorded each one''s reads.';

-- Functions: granting and revoking ----------------------------------------

-- The message a patient signs to grant a consent through someone else (a
-- front desk, an app): domain tag, then each field as a 4-byte big-endian
-- length and its UTF-8 bytes; valid_until as UTC ISO 8601 or "infinity".
CREATE FUNCTION ehrledger.consent_payload(patient text, grantee text, scope text DEFAULT '*'::text, purpose text DEFAULT 'treatment'::text, valid_until timestamp with time zone DEFAULT NULL::timestamp with time zone, actions text[] DEFAULT '{read}'::text[])
 RETURNS bytea
 LANGUAGE sql
 IMMUTABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
    SELECT pg_catalog.convert_to('ehrledger-consent-grant-2', 'UTF8')
        || (SELECT pg_catalog.string_agg(pg_catalog.int4send(pg_catalog.octet_length(f)) || pg_catalog.convert_to(f, 'UTF8'), ''::pg_catalog.bytea ORDER BY n)
              FROM pg_catalog.unnest(ARRAY[patient, grantee, scope, purpose,
                       COALESCE(pg_catalog.to_char(valid_until AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'), 'infinity'),
                       pg_catalog.array_to_string(ehrledger._consent_actions(actions), ',')])
                   WITH ORDINALITY AS x(f, n))
$function$;
COMMENT ON FUNCTION ehrledger.consent_payload(text,text,text,text,timestamp with time zone,text[]) IS 'The bytes a patient signs with its Ed25519 key to grant a consent through someone else (docs/format.md §16).';

CREATE FUNCTION ehrledger.revocation_payload(consent_id bigint)
 RETURNS bytea
 LANGUAGE sql
 IMMUTABLE STRICT
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
    SELECT pg_catalog.convert_to('ehrledger-consent-revoke-1', 'UTF8') || pg_catalog.int8send(consent_id)
$function$;
COMMENT ON FUNCTION ehrledger.revocation_payload(bigint) IS 'The bytes a patient signs to revoke a consent through someone else (docs/format.md §16).';

CREATE FUNCTION ehrledger._grant_consent(caller name, patient text, grantee text, scope text, purpose text, valid_until timestamp with time zone, signature bytea, actions text[], paper_form text)
 RETURNS bigint
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    me          record;
    patient_key pg_catalog.bytea;
    patient_role pg_catalog.text;
    tid         pg_catalog.int4;
    n           pg_catalog.int8;
    id          pg_catalog.int8;
    basis       pg_catalog.text;
    acts        pg_catalog.text[];
BEGIN
    IF patient IS NULL THEN
        RAISE EXCEPTION 'patient must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT * INTO me FROM ehrledger._actor_of(caller);
    IF paper_form IS NOT NULL THEN
        -- A paper consent: the registrar vouches for the signed form; the
        -- patient may never have registered.
        PERFORM ehrledger._check_paper(caller, me.actor_id, me.role, paper_form, signature, 'grant');
        SELECT a.role INTO patient_role FROM ehrledger.actors a WHERE a.actor_id = patient;
        IF patient_role IS NOT NULL AND patient_role <> 'patient' THEN
            RAISE EXCEPTION 'patient "%" is a registered %, not a patient', patient, patient_role
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    ELSE
        patient_key := ehrledger._require_actor(patient, 'patient', 'patient');
    END IF;
    PERFORM ehrledger._require_actor(grantee, 'grantee');
    IF patient = grantee THEN
        RAISE EXCEPTION 'a patient needs no consent to see its own rows'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    acts := ehrledger._consent_actions(actions);
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

    IF paper_form IS NOT NULL THEN
        basis := 'paper form';
    ELSIF signature IS NOT NULL THEN
        IF NOT ehrledger.verify_signature(ehrledger.consent_payload(patient, grantee, scope, purpose, valid_until, acts),
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
                  HINT = 'Connect as the patient''s role, pass the patient''s signature of ehrledger.consent_payload(), or have a registrar record a paper consent.';
    ELSE
        basis := 'patient role';
    END IF;

    id := pg_catalog.nextval('ehrledger.consent_id_seq');
    INSERT INTO ehrledger.consent_event (consent_id, action, patient, grantee, scope, scope_table,
                                         purpose, valid_until, signature, by_role, by_actor,
                                         actions, paper_form)
        VALUES (id, 'grant', patient, grantee, scope, tid, purpose, valid_until, signature,
                caller, me.actor_id, acts, paper_form);
    PERFORM ehrledger._actors_changed();
    PERFORM ehrledger._log_access(pg_catalog.clock_timestamp(), me.actor_id, caller, 'grant', tid,
                                  ARRAY[patient], ARRAY[basis],
                                  pg_catalog.format('consent %s to %s, scope %s, purpose %s, %s, until %s%s',
                                                    id, grantee, scope, purpose,
                                                    pg_catalog.array_to_string(acts, ' and '),
                                                    COALESCE(valid_until::pg_catalog.text, 'revoked'),
                                                    COALESCE(', paper form ' || paper_form, '')),
                                  pg_catalog.inet_client_addr());
    RETURN id;
END
$function$;

CREATE FUNCTION ehrledger.grant_consent(patient text, grantee text, scope text DEFAULT '*'::text, purpose text DEFAULT 'treatment'::text, valid_until timestamp with time zone DEFAULT NULL::timestamp with time zone, signature bytea DEFAULT NULL::bytea, actions text[] DEFAULT '{read}'::text[], paper_form text DEFAULT NULL::text)
 RETURNS bigint
 LANGUAGE c
 SET search_path TO 'pg_catalog', 'pg_temp'
AS 'MODULE_PATHNAME', $function$ehrledger_with_caller$function$;
COMMENT ON FUNCTION ehrledger.grant_consent(text,text,text,text,timestamp with time zone,bytea,text[],text) IS 'Grants an actor access (actions: read, write or both) to a patient''s rows (all, one table, or a category) for a purpose, until a time or revocation; by the patient''s role, with its signature, or on paper through a registrar. Returns the consent id.';

CREATE FUNCTION ehrledger._revoke_consent(caller name, consent_id bigint, signature bytea, paper_form text)
 RETURNS void
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    g           ehrledger.consent_event%ROWTYPE;
    me          record;
    patient_key pg_catalog.bytea;
    basis       pg_catalog.text;
BEGIN
    IF consent_id IS NULL THEN
        RAISE EXCEPTION 'consent_id must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    -- Revocations of one consent meet at its grant, locked as a row: no
    -- role without write rights on the ledger can hold that lock.
    SELECT * INTO g FROM ehrledger.consent_event e
     WHERE e.consent_id = _revoke_consent.consent_id AND e.action = 'grant'
       FOR UPDATE;
    IF g.consent_id IS NULL THEN
        RAISE EXCEPTION 'consent % does not exist', consent_id USING ERRCODE = 'undefined_object';
    END IF;
    SELECT * INTO me FROM ehrledger._actor_of(caller);
    IF paper_form IS NOT NULL THEN
        PERFORM ehrledger._check_paper(caller, me.actor_id, me.role, paper_form, signature, 'revoke');
        basis := 'paper form';
    ELSIF signature IS NOT NULL THEN
        SELECT k.public_key INTO patient_key FROM ehrledger.actors k WHERE k.actor_id = g.patient;
        IF patient_key IS NULL
           OR NOT ehrledger.verify_signature(ehrledger.revocation_payload(consent_id), signature, patient_key) THEN
            RAISE EXCEPTION 'signature is not patient "%"''s signature of this revocation', g.patient
                USING ERRCODE = 'LD012',
                      HINT = 'The patient signs ehrledger.revocation_payload(consent_id) with its current key.';
        END IF;
        basis := 'patient signature';
    ELSIF me.actor_id IS DISTINCT FROM g.patient THEN
        RAISE EXCEPTION 'only the patient may revoke consent %', consent_id
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Connect as the patient''s role, pass the patient''s signature of ehrledger.revocation_payload(), or have a registrar record a revocation on paper.';
    ELSE
        basis := 'patient role';
    END IF;
    IF EXISTS (SELECT 1 FROM ehrledger.consent_event e
                WHERE e.consent_id = _revoke_consent.consent_id AND e.action = 'revoke') THEN
        RAISE EXCEPTION 'consent % was revoked already', consent_id
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    INSERT INTO ehrledger.consent_event (consent_id, action, patient, signature, by_role, by_actor, paper_form)
        VALUES (consent_id, 'revoke', g.patient, signature, caller, me.actor_id, paper_form);
    PERFORM ehrledger._actors_changed();
    PERFORM ehrledger._log_access(pg_catalog.clock_timestamp(), me.actor_id, caller, 'revoke', g.scope_table,
                                  ARRAY[g.patient], ARRAY[basis],
                                  pg_catalog.format('consent %s to %s revoked%s', consent_id, g.grantee,
                                                    COALESCE(', paper form ' || paper_form, '')),
                                  pg_catalog.inet_client_addr());
END
$function$;

CREATE FUNCTION ehrledger.revoke_consent(consent_id bigint, signature bytea DEFAULT NULL::bytea, paper_form text DEFAULT NULL::text)
 RETURNS void
 LANGUAGE c
 SET search_path TO 'pg_catalog', 'pg_temp'
AS 'MODULE_PATHNAME', $function$ehrledger_with_caller$function$;
COMMENT ON FUNCTION ehrledger.revoke_consent(bigint,bytea,text) IS 'Revokes a consent, by the patient''s role, with its signature of ehrledger.revocation_payload(), or on paper through a registrar; effective from the next statement of every session.';

-- Actions in their canonical form: a non-empty, sorted set of read and write.
CREATE FUNCTION ehrledger._consent_actions(actions text[])
 RETURNS text[]
 LANGUAGE plpgsql
 IMMUTABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    a pg_catalog.text;
BEGIN
    IF actions IS NULL OR pg_catalog.cardinality(actions) = 0 THEN
        RAISE EXCEPTION 'a consent must allow read, write or both'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass actions => ''{read}'', ''{write}'' or ''{read,write}''.';
    END IF;
    FOREACH a IN ARRAY actions LOOP
        IF a IS NULL OR a NOT IN ('read', 'write') THEN
            RAISE EXCEPTION 'unknown consent action "%"', a
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'A consent allows read (SELECT) and write (INSERT, UPDATE, DELETE).';
        END IF;
    END LOOP;
    RETURN ARRAY(SELECT DISTINCT x FROM pg_catalog.unnest(actions) x ORDER BY x);
END
$function$;

-- A consent granted or revoked on paper: a registrar (an admin actor)
-- vouches for a signed form it names, and no signature comes along.
CREATE FUNCTION ehrledger._check_paper(caller name, actor_id text, actor_role text, paper_form text, signature bytea, act text)
 RETURNS void
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
BEGIN
    IF signature IS NOT NULL THEN
        RAISE EXCEPTION 'a consent is % either on paper or with the patient''s signature, not both',
                        CASE act WHEN 'grant' THEN 'given' ELSE 'revoked' END
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF actor_role IS DISTINCT FROM 'admin' THEN
        RAISE EXCEPTION 'only a registrar (an admin actor) may record a % given on paper',
                        CASE act WHEN 'grant' THEN 'consent' ELSE 'revocation' END
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = pg_catalog.format('Role %s is mapped to %s.', caller,
                                             COALESCE('actor ' || actor_id || ' (' || actor_role || ')', 'no actor'));
    END IF;
    IF pg_catalog.btrim(paper_form) = '' OR pg_catalog.length(paper_form) > 500 THEN
        RAISE EXCEPTION 'paper_form must name the signed form in 1 to 500 characters'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'For example its document number in the records office.';
    END IF;
END
$function$;

-- Functions: row-level security -------------------------------------------

-- Every patient an actor may act on in a table, with the basis: itself (a
-- patient), a live consent for the session's purpose covering the table
-- (all tables, the table or a partitioned table it is a partition of, or
-- its category), an open break-glass.
-- consent_check() runs this once per statement.
CREATE FUNCTION ehrledger._permitted_patients(actor text, tid integer, purpose text, OUT patient text, OUT basis text, OUT until timestamp with time zone, OUT can_read boolean, OUT can_write boolean)
 RETURNS SETOF record
 LANGUAGE sql
 STABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
    SELECT a.actor_id, 'own record', NULL::pg_catalog.timestamptz, true, true
      FROM ehrledger.actors a
     WHERE a.actor_id = _permitted_patients.actor AND a.role = 'patient'
    UNION ALL
    SELECT g.patient, 'consent ' || g.consent_id || CASE WHEN g.paper_form IS NOT NULL THEN ' (paper form)' ELSE '' END,
           g.valid_until,
           COALESCE('read' = ANY (g.actions), true), COALESCE('write' = ANY (g.actions), false)
      FROM ehrledger.consent_event g
     WHERE g.action = 'grant' AND g.grantee = _permitted_patients.actor
       AND g.purpose = _permitted_patients.purpose
       AND (g.valid_until IS NULL OR g.valid_until > pg_catalog.clock_timestamp())
       AND (g.scope = '*'
            OR g.scope_table IN (WITH RECURSIVE up(table_id) AS (
                                     SELECT _permitted_patients.tid
                                     UNION
                                     SELECT r.partition_of FROM up JOIN ehrledger.registered_table r
                                         ON r.table_id = up.table_id AND r.partition_of IS NOT NULL)
                                 SELECT up.table_id FROM up)
            OR (g.scope_table IS NULL AND g.scope = (SELECT r.category FROM ehrledger.registered_table r
                                                      WHERE r.table_id = _permitted_patients.tid)))
       AND NOT EXISTS (SELECT 1 FROM ehrledger.consent_event v
                        WHERE v.consent_id = g.consent_id AND v.action = 'revoke')
    UNION ALL
    SELECT b.patient, 'break-glass ' || b.break_glass_id || ': ' || b.reason, b.expires_at, true, true
      FROM ehrledger.break_glass b
     WHERE b.actor = _permitted_patients.actor AND b.expires_at > pg_catalog.clock_timestamp()
$function$;

-- The policy function: whether the current role may act (read, insert,
-- update, delete) on a row of patient `patient` in ledger table `table_id`.
-- Decisions are cached per statement; the rows it lets through are
-- recorded in the access log once per statement, patient and action.  Its
-- high cost lets the planner test cheap leak-proof conditions of the query
-- (patient_id = $1, id = $1) first, so rows those exclude are not recorded
-- as accessed.
CREATE FUNCTION ehrledger.consent_check(table_id integer, patient text, action text)
 RETURNS boolean
 LANGUAGE c
 STABLE PARALLEL RESTRICTED COST 100
AS 'MODULE_PATHNAME', $function$ehrledger_consent_check$function$;
COMMENT ON FUNCTION ehrledger.consent_check(integer,text,text) IS 'Row-level security policy of tables protected with a patient column; see README, Consent.';

-- The permissive policies of a table as the schema guard compares them.
CREATE FUNCTION ehrledger._policies_of(tbl regclass)
 RETURNS jsonb
 LANGUAGE sql
 STABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
    SELECT COALESCE(pg_catalog.jsonb_object_agg(p.polname, pg_catalog.jsonb_build_array(
               p.polcmd, p.polroles::pg_catalog.text, pg_catalog.pg_get_expr(p.polqual, p.polrelid),
               pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid))), '{}')
      FROM pg_catalog.pg_policy p
     WHERE p.polrelid = tbl AND p.polpermissive
$function$;

CREATE FUNCTION ehrledger._attach_consent(tbl regclass, tid integer, patient_column name)
 RETURNS void
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
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
$function$;

-- The schema guard also keeps row-level security on, and the consent
-- policies as protect() made them, on tables with a patient column: no
-- permissive policy may be added, changed or dropped (restrictive ones
-- narrow access and are fine).  Like the trigger checks, it tolerates
-- policies that do not exist yet, since pg_restore creates them one by one.
CREATE FUNCTION ehrledger._check_consent_policies(tid integer, tag text)
 RETURNS void
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
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
$function$;

CREATE FUNCTION ehrledger._guard_policies()
 RETURNS event_trigger
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    tid pg_catalog.int4;
BEGIN
    -- The commands are read once (a partitioned table's partitions make
    -- many tables with a patient column).
    FOR tid IN
        WITH c AS MATERIALIZED (SELECT c.classid, c.objid FROM pg_catalog.pg_event_trigger_ddl_commands() c)
        SELECT r.table_id FROM ehrledger.registered_table r
         WHERE r.patient_column IS NOT NULL AND r.retired_at IS NULL AND r.policies IS NOT NULL
           AND (TG_TAG = 'DROP POLICY'
                OR r.relid IN (SELECT c.objid FROM c WHERE c.classid = 'pg_catalog.pg_class'::pg_catalog.regclass)
                OR r.relid IN (SELECT p.polrelid FROM c JOIN pg_catalog.pg_policy p ON p.oid = c.objid
                                WHERE c.classid = 'pg_catalog.pg_policy'::pg_catalog.regclass))
         ORDER BY r.table_id
    LOOP
        PERFORM ehrledger._check_consent_policies(tid, TG_TAG);
    END LOOP;
END
$function$;

-- The table a consent policy names: its OID, if it is a live ledger table
-- with a patient column (consent_check() refuses any other id).
CREATE FUNCTION ehrledger._consent_table(tid integer)
 RETURNS oid
 LANGUAGE sql
 STABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
    SELECT r.relid::pg_catalog.oid FROM ehrledger.registered_table r
     WHERE r.table_id = tid AND r.patient_column IS NOT NULL AND r.retired_at IS NULL
$function$;

-- Functions: break-glass --------------------------------------------------

-- Break-glass works for any patient whose rows a protected table may hold:
-- most patients never register.  A registered actor of another role is not
-- a patient.
CREATE FUNCTION ehrledger._break_glass(caller name, patient text, reason text)
 RETURNS bigint
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    me      record;
    id      pg_catalog.int8;
    opened  pg_catalog.timestamptz := pg_catalog.clock_timestamp();
    expires pg_catalog.timestamptz;
    patient_role pg_catalog.text;
BEGIN
    SELECT * INTO me FROM ehrledger._actor_of(caller);
    IF me.actor_id IS NULL OR me.role NOT IN ('provider', 'pharmacist') THEN
        RAISE EXCEPTION 'only a provider or pharmacist may break the glass'
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = pg_catalog.format('Role %s is mapped to %s.', caller,
                                             COALESCE('actor ' || me.actor_id || ' (' || me.role || ')', 'no actor'));
    END IF;
    IF patient IS NULL OR pg_catalog.btrim(patient) = '' THEN
        RAISE EXCEPTION 'patient must name the patient whose records are opened'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT a.role INTO patient_role FROM ehrledger.actors a WHERE a.actor_id = patient;
    IF patient_role IS NOT NULL AND patient_role <> 'patient' THEN
        RAISE EXCEPTION 'patient "%" is a registered %, not a patient', patient, patient_role
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
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
                                  pg_catalog.format('until %s', expires), pg_catalog.inet_client_addr());
    RETURN id;
END
$function$;

CREATE FUNCTION ehrledger.break_glass(patient text, reason text)
 RETURNS bigint
 LANGUAGE c
 SET search_path TO 'pg_catalog', 'pg_temp'
AS 'MODULE_PATHNAME', $function$ehrledger_with_caller$function$;
COMMENT ON FUNCTION ehrledger.break_glass(text,text) IS 'Emergency access to a patient''s rows for the calling provider or pharmacist, for ehrledger.break_glass_duration; recorded in the ledger and announced.';

-- Functions: the access log -----------------------------------------------

-- Notifications carry the number of the access log entry and nothing else:
-- a channel has no privileges, so anyone may listen and anyone may notify.
-- A listener fetches the entry with ehrledger.access_event(), under its own
-- rights; a number that names no entry (or none it may see) was not sent
-- by ehrledger, or is not for it.  client_addr is the client's address,
-- taken in the client's session (NULL over a Unix socket).
CREATE FUNCTION ehrledger._log_access(at timestamp with time zone, actor text, pg_role name, action text, table_id integer, patients text[], bases text[], detail text, client_addr inet)
 RETURNS void
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    seq pg_catalog.int8;
BEGIN
    INSERT INTO ehrledger.access_event (at, actor, pg_role, action, table_id, patients, bases, detail, client_addr)
        VALUES (at, actor, pg_role, action, table_id, patients, bases, detail, client_addr)
        RETURNING ledger_seq INTO seq;
    PERFORM pg_catalog.pg_notify('ehrledger_events',
                pg_catalog.json_build_object('event_seq', seq)::pg_catalog.text);
END
$function$;

CREATE FUNCTION ehrledger._access_history(caller name, patient text, OUT event_seq bigint, OUT at timestamp with time zone, OUT actor text, OUT pg_role name, OUT action text, OUT tbl regclass, OUT basis text, OUT detail text, OUT client_addr inet)
 RETURNS SETOF record
 LANGUAGE plpgsql
 STABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
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
        SELECT e.ledger_seq, e.at, e.actor, e.pg_role, e.action, r.relid, p.basis, e.detail, e.client_addr
          FROM ehrledger.access_event e
          LEFT JOIN ehrledger.registered_table r ON r.table_id = e.table_id
         CROSS JOIN LATERAL ROWS FROM (pg_catalog.unnest(e.patients), pg_catalog.unnest(e.bases)) AS p(patient, basis)
         WHERE e.patients OPERATOR(pg_catalog.@>) ARRAY[_access_history.patient] AND p.patient = _access_history.patient
         ORDER BY e.ledger_seq;
END
$function$;

CREATE FUNCTION ehrledger.access_history(patient text, OUT event_seq bigint, OUT at timestamp with time zone, OUT actor text, OUT pg_role name, OUT action text, OUT tbl regclass, OUT basis text, OUT detail text, OUT client_addr inet)
 RETURNS SETOF record
 LANGUAGE c
 STABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS 'MODULE_PATHNAME', $function$ehrledger_with_caller$function$;
COMMENT ON FUNCTION ehrledger.access_history(text) IS 'Who read or changed a patient''s rows, when, and on what basis; for the patient itself or an auditor.';

-- One access log entry, as much of it as the caller may see: a patient its
-- own line, an auditor (or a superuser) every line.  Others may not ask.
CREATE FUNCTION ehrledger._access_event(caller name, seq bigint, OUT event_seq bigint, OUT at timestamp with time zone, OUT actor text, OUT pg_role name, OUT patient text, OUT action text, OUT tbl regclass, OUT basis text, OUT detail text, OUT client_addr inet)
 RETURNS SETOF record
 LANGUAGE plpgsql
 STABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    me record;
    everyone pg_catalog.bool;
    wanted pg_catalog.int8 := seq;
BEGIN
    IF wanted IS NULL THEN
        RAISE EXCEPTION 'event_seq must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT * INTO me FROM ehrledger._actor_of(caller);
    everyone := me.role IS NOT DISTINCT FROM 'auditor'
                OR COALESCE((SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = caller), false);
    IF NOT everyone AND me.role IS DISTINCT FROM 'patient' THEN
        RAISE EXCEPTION 'only a patient named in an access log entry or an auditor may read it'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN QUERY
        SELECT e.ledger_seq, e.at, e.actor, e.pg_role, p.patient, e.action, r.relid, p.basis, e.detail, e.client_addr
          FROM ehrledger.access_event e
          LEFT JOIN ehrledger.registered_table r ON r.table_id = e.table_id
         CROSS JOIN LATERAL ROWS FROM (pg_catalog.unnest(e.patients), pg_catalog.unnest(e.bases)) AS p(patient, basis)
         WHERE e.ledger_seq = wanted AND (everyone OR p.patient = me.actor_id);
END
$function$;

CREATE FUNCTION ehrledger.access_event(seq bigint, OUT event_seq bigint, OUT at timestamp with time zone, OUT actor text, OUT pg_role name, OUT patient text, OUT action text, OUT tbl regclass, OUT basis text, OUT detail text, OUT client_addr inet)
 RETURNS SETOF record
 LANGUAGE c
 STABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS 'MODULE_PATHNAME', $function$ehrledger_with_caller$function$;
COMMENT ON FUNCTION ehrledger.access_event(bigint) IS 'The access log entry a notification on channel ehrledger_events names, one row per patient the caller may see (a patient its own, an auditor all); no rows for a number that names no entry the caller may see.';

-- Functions: reads on hot standbys --------------------------------------

-- A standby's writer hands its reads to the primary through these, over a
-- replication connection.  Not granted to PUBLIC: the DBA grants them to
-- the standby's replication role (a superuser needs no grant).  They
-- also refuse roles without the REPLICATION attribute, and documents not
-- signed with the node key the standby shares with its primary (LD040).
CREATE FUNCTION ehrledger._standby_reads(batch bytea)
 RETURNS integer
 LANGUAGE c
 STRICT
 SET search_path TO 'pg_catalog', 'pg_temp'
AS 'MODULE_PATHNAME', $function$ehrledger_standby_reads$function$;
COMMENT ON FUNCTION ehrledger._standby_reads(bytea) IS 'Records a hot standby''s reads (a batch signed with the node key) in the access log, each once; for the standby''s replication role.';

CREATE FUNCTION ehrledger._standby_break_glass(request bytea)
 RETURNS bigint
 LANGUAGE c
 STRICT
 SET search_path TO 'pg_catalog', 'pg_temp'
AS 'MODULE_PATHNAME', $function$ehrledger_standby_break_glass$function$;
COMMENT ON FUNCTION ehrledger._standby_break_glass(bytea) IS 'Carries out a break-glass asked for on a hot standby (a request signed with the node key), once; for the standby''s replication role.';

-- The extension's own ledger tables ---------------------------------------

SELECT ehrledger._attach('ehrledger.consent_event', 2000000003, 'append_only', NULL, NULL, true);
ALTER TABLE ehrledger.consent_event ADD COLUMN actions text[];
ALTER TABLE ehrledger.consent_event ADD COLUMN paper_form text;

SELECT ehrledger._attach('ehrledger.break_glass', 2000000004, 'append_only', NULL, NULL, true);

SELECT ehrledger._attach('ehrledger.access_event', 2000000005, 'append_only', NULL, NULL, true);
-- The client's address came in 0.4; entries sealed before it have none
-- (NULL, which the row encoding leaves out, so their hashes hold).
ALTER TABLE ehrledger.access_event ADD COLUMN client_addr inet;

-- Views -------------------------------------------------------------------

-- Every consent, current and past, with what it allows and how it was given.
CREATE VIEW ehrledger.consents WITH (security_barrier=true) AS
    SELECT g.consent_id, g.patient, g.grantee, g.scope, g.purpose,
           g.at AS granted_at, g.valid_until, r.at AS revoked_at,
           g.by_role AS granted_by, r.by_role AS revoked_by,
           g.signature IS NOT NULL AS patient_signed,
           r.at IS NULL AND (g.valid_until IS NULL OR g.valid_until > pg_catalog.clock_timestamp()) AS active,
           CASE WHEN g.scope = '*' THEN 'all' WHEN g.scope_table IS NOT NULL THEN 'table'
                ELSE 'category' END AS scope_kind,
           g.ledger_seq,
           COALESCE(g.actions, '{read}') AS actions,
           CASE WHEN g.paper_form IS NOT NULL THEN 'paper form'
                WHEN g.signature IS NOT NULL THEN 'patient signature'
                ELSE 'patient role' END AS given_as,
           g.paper_form,
           g.by_actor AS recorded_by
      FROM ehrledger.consent_event g
      LEFT JOIN ehrledger.consent_event r ON r.consent_id = g.consent_id AND r.action = 'revoke'
     CROSS JOIN ehrledger.current_actor() me
     WHERE g.action = 'grant'
       AND (me.actor_id IN (g.patient, g.grantee) OR me.role IN ('auditor', 'admin')
            OR COALESCE((SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = CURRENT_USER), false));
COMMENT ON VIEW ehrledger.consents IS 'Consents, current and past: who may see whose rows, in what scope, for what purpose, until when; active says whether it holds now.';

CREATE VIEW ehrledger.access_log WITH (security_barrier=true) AS
    SELECT e.ledger_seq AS event_seq, e.at, e.actor, e.pg_role, p.patient, e.action,
           r.relid AS tbl, p.basis, e.detail, e.client_addr
      FROM ehrledger.access_event e
      LEFT JOIN ehrledger.registered_table r ON r.table_id = e.table_id
     CROSS JOIN LATERAL ROWS FROM (pg_catalog.unnest(e.patients), pg_catalog.unnest(e.bases)) AS p(patient, basis);
COMMENT ON VIEW ehrledger.access_log IS 'Who read or changed which patient''s rows, when, from which client address, and on what basis (consent, break-glass, own record); one row per patient.';

-- Indexes -----------------------------------------------------------------
CREATE INDEX consent_event_grantee ON ehrledger.consent_event USING btree (grantee) WHERE (action = 'grant'::text);
CREATE UNIQUE INDEX consent_event_once ON ehrledger.consent_event USING btree (consent_id, action);
CREATE INDEX consent_event_patient ON ehrledger.consent_event USING btree (patient);
CREATE UNIQUE INDEX consent_event_signature ON ehrledger.consent_event USING btree (signature) WHERE (signature IS NOT NULL);
CREATE INDEX break_glass_actor ON ehrledger.break_glass USING btree (actor, expires_at);
CREATE INDEX access_event_patients ON ehrledger.access_event USING gin (patients);
-- Entries arrive in time order: a BRIN index on at finds a day's entries in
-- years of them and stays a few megabytes.
CREATE INDEX access_event_at ON ehrledger.access_event USING brin (at);

-- Event triggers ----------------------------------------------------------
CREATE EVENT TRIGGER ehrledger_guard_policies ON ddl_command_end
    WHEN TAG IN ('CREATE POLICY', 'ALTER POLICY', 'DROP POLICY', 'ALTER TABLE')
    EXECUTE FUNCTION ehrledger._guard_policies();

-- What pg_dump dumps ------------------------------------------------------
SELECT pg_catalog.pg_extension_config_dump('ehrledger.consent_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('ehrledger.consent_event', '');
SELECT pg_catalog.pg_extension_config_dump('ehrledger.break_glass_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('ehrledger.break_glass', '');
SELECT pg_catalog.pg_extension_config_dump('ehrledger.access_event', '');

-- Privileges --------------------------------------------------------------
GRANT SELECT ON ehrledger.consents TO PUBLIC;
REVOKE ALL ON FUNCTION
    ehrledger._log_access(timestamp with time zone,text,name,text,integer,text[],text[],text,inet),
    ehrledger._grant_consent(name,text,text,text,text,timestamp with time zone,bytea,text[],text),
    ehrledger._revoke_consent(name,bigint,bytea,text),
    ehrledger._break_glass(name,text,text),
    ehrledger._access_history(name,text),
    ehrledger._permitted_patients(text,integer,text),
    ehrledger._policies_of(regclass),
    ehrledger._attach_consent(regclass,integer,name),
    ehrledger._check_consent_policies(integer,text),
    ehrledger._guard_policies(),
    ehrledger._check_paper(name,text,text,text,bytea,text),
    ehrledger._consent_table(integer),
    ehrledger._access_event(name,bigint),
    ehrledger._standby_reads(bytea),
    ehrledger._standby_break_glass(bytea)
    FROM PUBLIC;
