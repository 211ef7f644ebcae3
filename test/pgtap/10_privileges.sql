-- 10_privileges.sql: the walk.  Every SECURITY DEFINER function of
-- ehrledger, and every path ehrledger runs with more rights than a table's
-- owner (protect(), share(), retire(), the schema guard, history() and the
-- other functions that turn rows into JSON, the sealer, the access log
-- writer, a peer's blocks, acknowledgments and shared rows as the apply
-- worker stores them, the shared_rows view), runs here with a hostile
-- object of every kind in play, each owned by the ordinary role
-- tap10_mallory: a function in a domain CHECK (also nested in a composite
-- type a peer's row names), a cast to json on her type, ENABLE ALWAYS,
-- ENABLE REPLICA and AFTER triggers, an ALWAYS rule, a CHECK constraint,
-- an index expression, a partial index predicate, a generated column, a
-- default, a row-level security policy, a deferred constraint trigger.
-- Every one of her functions records who ran it and tries ALTER ROLE ...
-- SUPERUSER.  None may run as a superuser or as ehrledger's owner; each
-- must have run; every SECURITY DEFINER function must have been walked.
--
-- Not one transaction: reads by actors are recorded by the access log
-- writer in its own transaction.  Everything is dropped at the end.
\set ON_ERROR_STOP 0
SET client_min_messages = warning;
CREATE EXTENSION ehrledger;
CREATE ROLE tap10_mallory;
CREATE ROLE tap10_pat;
CREATE ROLE tap10_doc;
CREATE ROLE tap10_audit;
CREATE ROLE tap10_nobody;
CREATE SCHEMA tap10 AUTHORIZATION tap10_mallory;
GRANT USAGE ON SCHEMA tap10 TO tap10_pat, tap10_doc, tap10_audit;
-- What hostile code did: rows in a table, and a sequence that counts runs
-- with raised rights even in work that was rolled back.
CREATE TABLE public.tap10_ran (what text, who name, super boolean, ext_owner boolean);
GRANT INSERT ON public.tap10_ran TO PUBLIC;
CREATE SEQUENCE public.tap10_raised;
GRANT USAGE ON SEQUENCE public.tap10_raised TO PUBLIC;
-- The SECURITY DEFINER functions the walk went through.
CREATE TABLE public.tap10_walked (fn regprocedure);
CREATE TABLE public.tap10_keys AS
SELECT who, (kp).public_key, (kp).secret_key
  FROM (SELECT who, ehrledger.keypair() AS kp FROM unnest(ARRAY['pat', 'doc', 'audit', 'dr-m']) AS w(who)) k;
GRANT SELECT ON public.tap10_keys TO tap10_mallory;

SET ROLE tap10_mallory;
CREATE FUNCTION tap10.spy(what text) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    super boolean := (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = current_user);
    ext_owner boolean := current_user = (SELECT n.nspowner::regrole::name FROM pg_catalog.pg_namespace n
                                          WHERE n.nspname = 'ehrledger');
BEGIN
    IF super OR ext_owner THEN
        PERFORM pg_catalog.nextval('public.tap10_raised');
    END IF;
    INSERT INTO public.tap10_ran VALUES (what, current_user, super, ext_owner);
    BEGIN
        ALTER ROLE tap10_mallory SUPERUSER;
    EXCEPTION WHEN OTHERS THEN
        NULL;
    END;
    RETURN true;
END $$;
CREATE FUNCTION tap10.spy_int(what text, v int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    PERFORM tap10.spy(what);
    RETURN v;
END $$;
CREATE FUNCTION tap10.spy_text(what text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    PERFORM tap10.spy(what);
    RETURN what;
END $$;
CREATE FUNCTION tap10.trg() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM tap10.spy('trigger ' || TG_NAME);
    RETURN NEW;
END $$;
CREATE DOMAIN tap10.score AS int CHECK (tap10.spy('domain check'));
CREATE TYPE tap10.pair AS (s tap10.score, note text);
CREATE TYPE tap10.mood AS ENUM ('calm', 'cross');
CREATE FUNCTION tap10.mood_json(tap10.mood) RETURNS json LANGUAGE plpgsql AS $$
BEGIN
    PERFORM tap10.spy('cast to json');
    RETURN pg_catalog.to_json($1::text);
END $$;
CREATE CAST (tap10.mood AS json) WITH FUNCTION tap10.mood_json(tap10.mood);

-- Every kind of owner's code a table can run.  protect()'s backfill
-- rewrites the table (src/ledger/backfill.c): its index entries, with their
-- expressions and predicates, are made again; no trigger, rule, CHECK or
-- generated column fires (an UPDATE of every row, as in earlier versions,
-- fired them all).
CREATE TABLE tap10.obs (
    id    int PRIMARY KEY,
    body  text DEFAULT tap10.spy_text('default'),
    mood  tap10.mood,
    score tap10.score,
    g     int GENERATED ALWAYS AS (tap10.spy_int('generated column', id)) STORED,
    CHECK (tap10.spy('check constraint'))
);
CREATE INDEX obs_expr ON tap10.obs (tap10.spy_int('index expression', id));
CREATE INDEX obs_partial ON tap10.obs (id) WHERE tap10.spy_int('partial index predicate', id) > 0;
INSERT INTO tap10.obs (id, mood, score) SELECT g, 'calm', g FROM generate_series(1, 300) g;
UPDATE tap10.obs SET body = repeat('x', 100);
VACUUM FULL tap10.obs;
CREATE TRIGGER t_always BEFORE UPDATE ON tap10.obs FOR EACH ROW EXECUTE FUNCTION tap10.trg();
ALTER TABLE tap10.obs ENABLE ALWAYS TRIGGER t_always;
CREATE TRIGGER t_replica BEFORE UPDATE ON tap10.obs FOR EACH ROW EXECUTE FUNCTION tap10.trg();
ALTER TABLE tap10.obs ENABLE REPLICA TRIGGER t_replica;
CREATE TRIGGER t_after AFTER UPDATE ON tap10.obs FOR EACH ROW EXECUTE FUNCTION tap10.trg();
ALTER TABLE tap10.obs ENABLE ALWAYS TRIGGER t_after;
CREATE RULE r_always AS ON UPDATE TO tap10.obs DO ALSO SELECT tap10.spy('rule');
ALTER TABLE tap10.obs ENABLE ALWAYS RULE r_always;

-- A versioned table, whose rows are turned into JSON by history(), proof(),
-- export(), share() and its trigger.
CREATE TABLE tap10.chart (id int PRIMARY KEY, body text, mood tap10.mood);
INSERT INTO tap10.chart VALUES (1, 'first', 'calm'), (2, 'second', 'cross');
CREATE TRIGGER t_always BEFORE UPDATE ON tap10.chart FOR EACH ROW EXECUTE FUNCTION tap10.trg();
ALTER TABLE tap10.chart ENABLE ALWAYS TRIGGER t_always;

-- A table protected with a patient column.
CREATE TABLE tap10.dx (id int PRIMARY KEY, patient_id text NOT NULL, code text NOT NULL, mood tap10.mood);
CREATE INDEX ON tap10.dx (patient_id, code);
INSERT INTO tap10.dx VALUES (1, 'pat', 'F32', 'calm'), (2, 'other', 'J45', 'cross');

-- A signed table.
CREATE TABLE tap10.rx (id int PRIMARY KEY, prescriber text, drug text, mood tap10.mood, signature bytea);

-- A deferred constraint trigger would run at commit, after any restriction
-- is over.
CREATE TABLE tap10.late (id int PRIMARY KEY);
INSERT INTO tap10.late VALUES (1);
CREATE CONSTRAINT TRIGGER t_deferred AFTER UPDATE ON tap10.late DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION tap10.trg();
ALTER TABLE tap10.late ENABLE ALWAYS TRIGGER t_deferred;
RESET ROLE;
TRUNCATE public.tap10_ran;
RESET client_min_messages;

SELECT plan(65);

-- protect() -------------------------------------------------------------------
SELECT lives_ok($$SELECT ehrledger.protect('tap10.obs')$$, 'a superuser protects mallory''s populated table');
-- (The schema guard refuses rules on ledger tables at the next DDL.)
SET ROLE tap10_mallory;
DROP RULE r_always ON tap10.obs;
RESET ROLE;
INSERT INTO public.tap10_walked VALUES ('ehrledger._guard_drop()');
SELECT set_eq($$SELECT DISTINCT what FROM public.tap10_ran WHERE who = 'tap10_mallory'$$,
    ARRAY['index expression', 'partial index predicate'],
    'the backfill rebuilt her index expression and predicate as her, and fired no trigger, rule, CHECK or generated column');
SELECT is((SELECT count(*)::int FROM public.tap10_ran WHERE who <> 'tap10_mallory'), 0, 'and as nobody else');
SELECT is((SELECT rows_at_protect FROM ehrledger.protected_tables WHERE tbl = 'tap10.obs'::regclass), 300::bigint,
    'every row entered the ledger');
SELECT lives_ok($$SELECT ehrledger.protect('tap10.chart', mode => 'versioned')$$, 'protect() a versioned table');
SELECT lives_ok($$SELECT ehrledger.protect('tap10.dx', patient_column => 'patient_id')$$,
    'protect() a table with a patient column');
SELECT lives_ok($$SELECT ehrledger.protect('tap10.rx', signer_column => 'prescriber', signature_column => 'signature')$$,
    'protect() a signed table');
SELECT lives_ok($$SELECT ehrledger.protect('tap10.late')$$,
    'a table with a deferred trigger is protected: the backfill queues nothing to run at commit');
SET CONSTRAINTS ALL IMMEDIATE;   -- fires whatever was deferred, now
SELECT is((SELECT count(*)::int FROM public.tap10_ran WHERE what LIKE 'trigger%'), 0,
    'no trigger of hers fired, now or deferred');
SET ROLE tap10_mallory;
SELECT throws_ok($$SELECT ehrledger._backfill('tap10.late', 1)$$, '42501', NULL,
    'the table owner cannot run the backfill herself');
RESET ROLE;

-- The schema guard (event triggers, SECURITY DEFINER) ---------------------------
SET ROLE tap10_mallory;
UPDATE tap10.chart SET body = 'first, revised' WHERE id = 1;
SELECT lives_ok($$ALTER TABLE tap10.chart ADD COLUMN score tap10.score$$,
    'mallory adds a column of her domain to her versioned table');
SELECT lives_ok($$CREATE POLICY spy ON tap10.dx AS RESTRICTIVE FOR SELECT USING (tap10.spy('policy'))$$,
    'mallory adds a restrictive policy that calls her function');
RESET ROLE;
INSERT INTO public.tap10_walked VALUES ('ehrledger._guard_ddl()'), ('ehrledger._guard_policies()');
SELECT is((SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
            WHERE a.attrelid = (SELECT history FROM ehrledger.protected_tables WHERE tbl = 'tap10.chart'::regclass)
              AND a.attname = 'score'), 'integer',
    'the guard added the column to the history table in the domain''s base type');

-- Actors (SECURITY DEFINER) ---------------------------------------------------------
SELECT lives_ok($$
    SELECT ehrledger.register_actor(who, role, (SELECT public_key FROM public.tap10_keys k WHERE k.who = w.who), pg_role)
      FROM (VALUES ('pat', 'patient', 'tap10_pat'), ('doc', 'provider', 'tap10_doc'),
                   ('audit', 'auditor', 'tap10_audit'), ('dr-m', 'provider', 'tap10_mallory')) AS w(who, role, pg_role)
$$, 'register_actor()');
SELECT lives_ok($$SELECT ehrledger.rotate_key('audit', (SELECT public_key FROM ehrledger.keypair()))$$, 'rotate_key()');
SELECT lives_ok($$SELECT ehrledger.map_role('audit', NULL), ehrledger.map_role('audit', 'tap10_audit')$$, 'map_role()');
INSERT INTO public.tap10_walked VALUES ('ehrledger.register_actor(text,text,bytea,name)'),
    ('ehrledger.rotate_key(text,bytea)'), ('ehrledger.map_role(text,name)');

-- A signed row: the insert trigger looks up the signer's key as the ledger's
-- owner; _signer_key() is nobody else's.
SET ROLE tap10_mallory;
SELECT lives_ok($$
    INSERT INTO tap10.rx
    SELECT 1, 'dr-m', 'aspirin', 'calm',
           ehrledger.sign(ehrledger.signing_payload('tap10.rx',
                              '{"id": 1, "prescriber": "dr-m", "drug": "aspirin", "mood": "calm"}'),
                          (SELECT secret_key FROM public.tap10_keys WHERE who = 'dr-m'))
$$, 'mallory inserts a signed row');
SELECT throws_ok($$SELECT * FROM ehrledger._signer_key('pat', NULL)$$, '42501',
    'permission denied for function _signer_key', 'she cannot ask whether an id is an actor');
RESET ROLE;
INSERT INTO public.tap10_walked VALUES ('ehrledger._signer_key(text,bigint)');

-- Sealing, digests, verification (SECURITY DEFINER, and the sealer's round) ------
SELECT ok(ehrledger.seal() > 0, 'seal()');
SELECT lives_ok($$SELECT ehrledger._check_pending()$$, 'the background sealer''s finality round');
SELECT ok(ehrledger.digest() IS NOT NULL, 'digest()');
SELECT ok((SELECT ok FROM ehrledger.verify()), 'verify() of the whole ledger, as a superuser');
SELECT ok((SELECT ok FROM ehrledger.verify('tap10.chart')), 'verify() of mallory''s versioned table');
INSERT INTO public.tap10_walked VALUES ('ehrledger.seal()'), ('ehrledger.digest()'),
    ('ehrledger.verify(regclass,jsonb)');

-- Rows as JSON, for a superuser ---------------------------------------------------
TRUNCATE public.tap10_ran;
SELECT is((SELECT count(*)::int FROM ehrledger.history('tap10.chart')), 3, 'history()');
SELECT ok((SELECT ehrledger.proof('tap10.chart', min(ledger_seq)) IS NOT NULL FROM tap10.chart), 'proof()');
SELECT ok((SELECT count(*) > 2 FROM ehrledger.export('tap10.chart')), 'export()');
SELECT ok(ehrledger.row_encoding('tap10.obs', 1) IS NOT NULL, 'row_encoding()');
SELECT is((SELECT valid FROM ehrledger.verify_record('tap10.rx', (SELECT ledger_seq FROM tap10.rx))), true,
    'verify_record()');
SELECT ok(ehrledger.signing_payload('tap10.obs', '{"id": 7, "mood": "cross", "score": 7}') IS NOT NULL,
    'signing_payload()');
SELECT set_eq($$SELECT DISTINCT what || ' by ' || who FROM public.tap10_ran$$,
    ARRAY['cast to json by tap10_mallory', 'domain check by tap10_mallory'],
    'each ran her cast (and signing_payload her domain) as her');

-- Sharing: share() and its trigger (SECURITY DEFINER) ------------------------------
TRUNCATE public.tap10_ran;
SELECT is(ehrledger.share('tap10.chart'), 2::bigint, 'share()');
SET ROLE tap10_mallory;
INSERT INTO tap10.chart (id, body, mood) VALUES (3, 'third', 'calm');
RESET ROLE;
INSERT INTO public.tap10_walked VALUES ('ehrledger._share_row()');
SELECT is((SELECT string_agg(DISTINCT who, ',') FROM public.tap10_ran WHERE what = 'cast to json'), 'tap10_mallory',
    'share() and the share trigger ran her cast as her');
SELECT is((SELECT count(*)::int FROM ehrledger.shared_row WHERE table_name = 'tap10.chart'), 3,
    'with the rows shared');

-- The network: members, block status, and what the apply worker stores -------------
SELECT is(ehrledger.quorum(), 1, 'quorum() through _members()');
SELECT ok((SELECT final FROM ehrledger.block_status(ehrledger.node_name(), 1)), 'block_status()');
INSERT INTO public.tap10_walked VALUES ('ehrledger._members()'), ('ehrledger.block_status(text,bigint)');
INSERT INTO ehrledger.peer (name, conninfo, public_key) VALUES ('tap10-peer', 'host=nowhere', decode(repeat('ab', 32), 'hex'));
SET client_min_messages = error;
SET session_replication_role = replica;
INSERT INTO ehrledger.block (origin, height, prev_hash, history_root, root, block_hash, first_seq, last_seq,
                             row_count, sealed_at, public_key, signature, history_frontier, leaves_hash, leaves)
    VALUES ('tap10-peer', 1, decode(repeat('00', 32), 'hex'), decode(repeat('00', 32), 'hex'),
            decode(repeat('00', 32), 'hex'), decode(repeat('01', 32), 'hex'), 1, 1, 0, now(),
            decode(repeat('ab', 32), 'hex'), decode(repeat('00', 64), 'hex'), '', decode(repeat('00', 32), 'hex'), '');
INSERT INTO ehrledger.ack (origin, height, block_hash, acker, signature, header, origin_signature)
    VALUES ('tap10-peer', 1, decode(repeat('01', 32), 'hex'), 'tap10-peer', decode(repeat('00', 64), 'hex'),
            '\x00', decode(repeat('00', 64), 'hex'));
INSERT INTO ehrledger.shared_row (origin, table_name, table_id, ledger_seq, columns, "row")
    VALUES ('tap10-peer', 'tap10.vitals', 7, 1,
            '[{"name": "s", "type": "tap10.score"}, {"name": "p", "type": "tap10.pair"}, {"name": "m", "type": "tap10.mood"}]',
            '{"s": 5, "p": "(6,x)", "m": "calm"}');
RESET session_replication_role;
RESET client_min_messages;
SELECT is((SELECT count(*)::int FROM ehrledger.rejected_block WHERE origin = 'tap10-peer'), 1,
    'a forged block from a peer is refused as the apply worker would');
SELECT is((SELECT count(*)::int FROM ehrledger.ack WHERE origin = 'tap10-peer'), 0, 'so is a forged acknowledgment');
TRUNCATE public.tap10_ran;
SELECT is((SELECT verdict FROM ehrledger.shared_rows WHERE origin = 'tap10-peer'),
    'its origin has not sealed it (in a block held here) yet',
    'a peer''s row naming her types is read again here, as a superuser');
SELECT is((SELECT string_agg(what || ' by ' || who, ',') FROM public.tap10_ran),
    'domain check by tap10_mallory',
    'her domain ran only inside her composite type, as her (the domain itself is read as its base type)');

-- Consents, the access log writer, break-glass, access history --------------------
SET ROLE tap10_pat;
SELECT ok(ehrledger.grant_consent('pat', 'doc', 'tap10.dx') > 0, 'the patient grants a consent');
RESET ROLE;
GRANT SELECT ON tap10.dx TO tap10_doc, tap10_audit;
TRUNCATE public.tap10_ran;
SET ROLE tap10_doc;
SELECT is((SELECT count(*)::int FROM tap10.dx), 1, 'the provider reads the consented rows');
SELECT ok(ehrledger.break_glass('pat', 'unconscious in the emergency room') > 0, 'break_glass()');
SELECT throws_ok($$EXPLAIN (ANALYZE, COSTS OFF) SELECT * FROM tap10.dx WHERE patient_id = 'other' AND code = 'J45'$$,
    'LD021', NULL, 'EXPLAIN ANALYZE is refused to the provider');
SELECT throws_ok($$SELECT ok FROM ehrledger.verify('tap10.dx')$$, '42501', NULL,
    'verify() of the table is refused to the provider');
SET ROLE tap10_audit;
SELECT ok((SELECT ok FROM ehrledger.verify('tap10.dx')), 'the auditor may verify it');
SELECT ok((SELECT count(*) > 0 FROM ehrledger.access_history('pat') WHERE action = 'read'),
    'the access log writer recorded the provider''s read');
RESET ROLE;
SELECT is((SELECT string_agg(DISTINCT what || ' by ' || who, ',') FROM public.tap10_ran),
    'policy by tap10_doc', 'her policy ran as the reader, never as the access log writer');

-- Erasure: rows leave the heap directly, so none of her code runs ------------------
CREATE ROLE tap10_admin;
GRANT USAGE ON SCHEMA tap10 TO tap10_admin;
SELECT ehrledger.register_actor('adm', 'admin', (SELECT public_key FROM ehrledger.keypair()), 'tap10_admin');
TRUNCATE public.tap10_ran;
SET ROLE tap10_admin;
SELECT is(ehrledger.erase('tap10.obs', 1, 'filed in the wrong chart'), 1::bigint,
    'an admin erases a row of her table with every kind of her code');
SELECT is(ehrledger.erase_patient('other', 'erasure request'), 1::bigint,
    'and a patient''s rows of her table under row-level security');
RESET ROLE;
SELECT is((SELECT count(*)::int FROM public.tap10_ran), 0,
    'no trigger, rule, CHECK, index expression, predicate, generated column or policy of hers ran');

-- A partitioned table ----------------------------------------------------------------
-- Its partitions enter the ledger as mallory creates or attaches them, in
-- the schema guard, which runs as ehrledger's owner: the code of a table
-- she attaches runs as her, or not at all.
SET ROLE tap10_mallory;
CREATE TABLE tap10.vitals (id int NOT NULL, at date NOT NULL, mood tap10.mood, score tap10.score)
    PARTITION BY RANGE (at);
CREATE TABLE tap10.vitals_1 PARTITION OF tap10.vitals FOR VALUES FROM ('2024-01-01') TO ('2024-02-01');
RESET ROLE;
SELECT lives_ok($$SELECT ehrledger.protect('tap10.vitals', mode => 'versioned')$$,
    'a superuser protects mallory''s partitioned table');
SET ROLE tap10_mallory;
CREATE TABLE tap10.vitals_2 (LIKE tap10.vitals, CHECK (tap10.spy('check constraint')));
CREATE INDEX ON tap10.vitals_2 (tap10.spy_int('index expression', id));
CREATE TRIGGER t_always BEFORE INSERT OR UPDATE ON tap10.vitals_2 FOR EACH ROW EXECUTE FUNCTION tap10.trg();
ALTER TABLE tap10.vitals_2 ENABLE ALWAYS TRIGGER t_always;
INSERT INTO tap10.vitals_2 VALUES (1, '2024-02-02', 'calm', 1, 1, '\x00'), (2, '2024-02-03', 'cross', 2, 1, '\x00');
RESET ROLE;
TRUNCATE public.tap10_ran;
SET ROLE tap10_mallory;
SELECT lives_ok($$ALTER TABLE tap10.vitals ATTACH PARTITION tap10.vitals_2 FOR VALUES FROM ('2024-02-01') TO ('2024-03-01')$$,
    'mallory attaches her populated table with her trigger, CHECK, domain and index expression');
SELECT lives_ok($$CREATE TABLE tap10.vitals_3 PARTITION OF tap10.vitals FOR VALUES FROM ('2024-03-01') TO ('2024-04-01')$$,
    'and creates a partition');
RESET ROLE;
SELECT is((SELECT string_agg(DISTINCT what || ' by ' || who, ',') FROM public.tap10_ran),
    'index expression by tap10_mallory',
    'bringing her partition into the ledger rebuilt her index as her, and ran nothing else of hers');
SELECT is((SELECT count(*)::int FROM ehrledger.protected_tables WHERE partition_of = 'tap10.vitals'::regclass), 3,
    'every partition of hers is a ledger table');
SELECT ok((SELECT count(DISTINCT ledger_seq) = 2 AND min(ledger_seq) > 1 FROM tap10.vitals_2),
    'her rows were numbered by the ledger, not as she claimed');
TRUNCATE public.tap10_ran;
SELECT is((SELECT count(*)::int FROM ehrledger.history('tap10.vitals')), 2, 'history() through the partitioned table');
SELECT is((SELECT string_agg(DISTINCT who, ',') FROM public.tap10_ran WHERE what = 'cast to json'), 'tap10_mallory',
    'converts her rows to JSON as her');

-- Retiring, and revoking an actor ---------------------------------------------------
SELECT lives_ok($$SELECT ehrledger.retire('tap10.obs', 'the walk is over')$$, 'retire()');
SELECT lives_ok($$SELECT ehrledger.revoke_actor('dr-m')$$, 'revoke_actor()');
INSERT INTO public.tap10_walked VALUES ('ehrledger.revoke_actor(text)');

-- What the walk shows ----------------------------------------------------------------
SELECT is_empty($$
    SELECT p.oid::regprocedure::text FROM pg_proc p
     WHERE p.pronamespace = 'ehrledger'::regnamespace AND p.prosecdef
    EXCEPT SELECT fn::text FROM public.tap10_walked
$$, 'every SECURITY DEFINER function of ehrledger was walked');
SELECT is_empty($$
    SELECT c.relname FROM pg_class c
     WHERE c.relnamespace = 'ehrledger'::regnamespace AND c.relkind = 'v'
       AND NOT COALESCE('security_barrier=true' = ANY (c.reloptions), false)
$$, 'every view of ehrledger is a security barrier');
-- What a role with no grants may execute is a deliberate list: a new
-- function is PUBLIC only when it is added here (a CREATE FUNCTION in an
-- upgrade script is executable by PUBLIC unless revoked).
SELECT set_eq($$
    SELECT p.oid::regprocedure::text FROM pg_proc p
     WHERE p.pronamespace = 'ehrledger'::regnamespace
       AND has_function_privilege('tap10_nobody', p.oid, 'EXECUTE')
$$, ARRAY[
    'ehrledger._balp(text)',
    'ehrledger._consent_actions(text[])',
    'ehrledger._fhir_actor(text,text)',
    'ehrledger._fhir_base64(bytea)',
    'ehrledger._fhir_bundle(jsonb,text)',
    'ehrledger._fhir_check_bundle(text)',
    'ehrledger._fhir_coding(text,text,text)',
    'ehrledger._fhir_instant(timestamp with time zone)',
    'ehrledger._fhir_node()',
    'ehrledger._fhir_ref(text,text,text,text)',
    'ehrledger._fhir_system(text)',
    'ehrledger._fhir_text(text)',
    'ehrledger._fhir_url(text)',
    'ehrledger._header_origin(bytea)',
    'ehrledger._members()',
    'ehrledger._purpose_coding(text)',
    'ehrledger._signed_fields(text,text[])',
    'ehrledger._slot_part(text)',
    'ehrledger.access_event(bigint)',
    'ehrledger.access_history(text)',
    'ehrledger.access_history_fhir(text,text)',
    'ehrledger.ack_message(text,bigint,bytea)',
    'ehrledger.block_status(text,bigint)',
    'ehrledger.break_glass(text,text)',
    'ehrledger.check_certificate(text,jsonb)',
    'ehrledger.check_consistency(text,text,text,bytea,jsonb)',
    'ehrledger.check_digest(text,bytea,jsonb)',
    'ehrledger.check_export(text,text,bytea,jsonb)',
    'ehrledger.check_proof(text,text,bytea,jsonb)',
    'ehrledger.consent_as_fhir(bigint,text)',
    'ehrledger.consent_check(integer,text,text)',
    'ehrledger.consent_payload(text,text,text,text,timestamp with time zone,text[])',
    'ehrledger.consistency_proof(jsonb,jsonb)',
    'ehrledger.current_actor()',
    'ehrledger.digest()',
    'ehrledger.erase(regclass,bigint,text,bytea,text)',
    'ehrledger.erase_patient(text,text,bytea,text)',
    'ehrledger.erase_patient_payload(text,text)',
    'ehrledger.erase_payload(regclass,bigint,text)',
    'ehrledger.erasure_message(text,bigint,integer,bytea)',
    'ehrledger.export(regclass)',
    'ehrledger.grant_consent(text,text,text,text,timestamp with time zone,bytea,text[],text)',
    'ehrledger.history(regclass)',
    'ehrledger.insert_row()',
    'ehrledger.keypair()',
    'ehrledger.node_name()',
    'ehrledger.node_public_key()',
    'ehrledger.proof(regclass,bigint,jsonb)',
    'ehrledger.provenance_fhir(regclass,bigint,text)',
    'ehrledger.quorum()',
    'ehrledger.quorum_of(integer)',
    'ehrledger.refuse_change()',
    'ehrledger.revocation_payload(bigint)',
    'ehrledger.revoke_consent(bigint,bytea,text)',
    'ehrledger.row_encoding(regclass,bigint)',
    'ehrledger.sealed_row(regclass,bigint)',
    'ehrledger.sign(bytea,bytea)',
    'ehrledger.signing_payload(regclass,jsonb)',
    'ehrledger.verify(regclass,jsonb)',
    'ehrledger.verify_record(regclass,bigint)',
    'ehrledger.verify_signature(bytea,bytea,bytea)'
], 'a role with no grants executes exactly the listed functions of ehrledger');
SELECT ok(NOT (SELECT is_called FROM public.tap10_raised),
    'no hostile code ran as a superuser or as ehrledger''s owner, not even in work rolled back');
SELECT ok(NOT (SELECT rolsuper FROM pg_roles WHERE rolname = 'tap10_mallory'), 'mallory is no superuser');

SELECT * FROM finish();

SET client_min_messages = warning;
DROP EXTENSION ehrledger CASCADE;
DROP SCHEMA ehrledger CASCADE;
DROP SCHEMA tap10 CASCADE;
DROP TABLE public.tap10_ran, public.tap10_walked, public.tap10_keys;
DROP SEQUENCE public.tap10_raised;
DROP OWNED BY tap10_mallory, tap10_pat, tap10_doc, tap10_audit, tap10_admin;
DROP ROLE tap10_mallory, tap10_pat, tap10_doc, tap10_audit, tap10_nobody, tap10_admin;
