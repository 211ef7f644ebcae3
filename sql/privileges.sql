-- Privileges: code a table's owner controls (its triggers, constraints,
-- domains, casts) runs with the owner's rights when ehrledger calls it,
-- never with a superuser's; and ledger metadata is shown only to whom may
-- know it.  mallory is an ordinary role that owns a schema, tables, types
-- and functions.  Each of her functions writes down who ran it and tries to
-- make her a superuser.
CREATE EXTENSION ehrledger;
\set SHOW_CONTEXT never
SET client_min_messages = warning;
CREATE ROLE mallory;
CREATE ROLE dr_house;       -- a provider with no consent
CREATE ROLE ward_audit;     -- an auditor
CREATE ROLE nobody;         -- no grants at all
CREATE SCHEMA mallory AUTHORIZATION mallory;
CREATE TABLE ran (what text, who name, superuser boolean);
GRANT INSERT ON ran TO PUBLIC;
RESET client_min_messages;

SET ROLE mallory;
CREATE FUNCTION mallory.spy(what text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.ran
        VALUES (what, current_user, (SELECT rolsuper FROM pg_roles WHERE rolname = current_user));
    BEGIN
        ALTER ROLE mallory SUPERUSER;
    EXCEPTION WHEN insufficient_privilege THEN
        NULL;
    END;
    RETURN true;
END $$;
CREATE FUNCTION mallory.on_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM mallory.spy(TG_NAME);
    RETURN NEW;
END $$;

-- 1. An ENABLE ALWAYS trigger on a table a superuser then protects.  The
-- rows already there enter the ledger by a rewrite of the table
-- (src/ledger/backfill.c), not an UPDATE: no trigger of mallory's fires
-- (earlier versions fired this one, as mallory), and she gains nothing.
CREATE TABLE mallory.notes (id int PRIMARY KEY, body text);
INSERT INTO mallory.notes VALUES (1, 'first'), (2, 'second');
CREATE TRIGGER watch BEFORE UPDATE ON mallory.notes FOR EACH ROW EXECUTE FUNCTION mallory.on_update();
ALTER TABLE mallory.notes ENABLE ALWAYS TRIGGER watch;
RESET ROLE;
SELECT ehrledger.protect('mallory.notes', mode => 'versioned');
SELECT what, who, superuser FROM ran ORDER BY what;
SELECT rolsuper FROM pg_roles WHERE rolname = 'mallory';
TRUNCATE ran;

-- 2. A domain CHECK on a column added to a versioned table.  The schema
-- guard adds the column to the history table too; there it has the
-- domain's base type, so the CHECK runs only where PostgreSQL runs it, on
-- mallory's own table, as mallory.
SET ROLE mallory;
CREATE DOMAIN mallory.score AS int CHECK (mallory.spy('score check'));
UPDATE mallory.notes SET body = 'first, revised' WHERE id = 1;
RESET ROLE;
TRUNCATE ran;
SET ROLE mallory;
ALTER TABLE mallory.notes ADD COLUMN score mallory.score;
RESET ROLE;
SELECT what, who, superuser FROM ran ORDER BY what;
SELECT a.attname, format_type(a.atttypid, a.atttypmod)
  FROM pg_attribute a JOIN ehrledger.protected_tables p ON a.attrelid = p.history
 WHERE p.tbl = 'mallory.notes'::regclass AND a.attname = 'score';
SELECT rolsuper FROM pg_roles WHERE rolname = 'mallory';
TRUNCATE ran;

-- 3. A cast to json on a column's type, which history() calls to show rows
-- as JSON, here for a superuser.  It runs as mallory.
SET ROLE mallory;
CREATE TYPE mallory.mood AS ENUM ('calm', 'cross');
CREATE FUNCTION mallory.mood_json(mallory.mood) RETURNS json LANGUAGE plpgsql AS $$
BEGIN
    PERFORM mallory.spy('mood cast');
    RETURN to_json($1::text);
END $$;
CREATE CAST (mallory.mood AS json) WITH FUNCTION mallory.mood_json(mallory.mood);
ALTER TABLE mallory.notes ADD COLUMN mood mallory.mood;
UPDATE mallory.notes SET mood = 'calm' WHERE id = 2;
RESET ROLE;
TRUNCATE ran;
SELECT ledger_seq, "row", current, ended_how FROM ehrledger.history('mallory.notes');
SELECT what, who, superuser, count(*) FROM ran GROUP BY 1, 2, 3;
TRUNCATE ran;

-- The same cast, when a superuser shares the table and when its rows are
-- then sent on by the share trigger (which runs as ehrledger's owner).
SELECT ehrledger.share('mallory.notes');
SET ROLE mallory;
INSERT INTO mallory.notes (id, body, mood) VALUES (3, 'third', 'cross');
RESET ROLE;
SELECT what, who, superuser, count(*) FROM ran GROUP BY 1, 2, 3;
-- A shared row travels with its salt (peers re-encode it to check its
-- leaf); shared_row is not readable by PUBLIC.
SELECT "row" - 'ledger_salt' AS "row", octet_length(decode(substr("row"->>'ledger_salt', 3), 'hex')) AS salt_bytes
  FROM ehrledger.shared_rows WHERE table_name = 'mallory.notes' ORDER BY ledger_seq;
TRUNCATE ran;

-- Nothing ran as a superuser, and mallory is none.
SELECT rolsuper FROM pg_roles WHERE rolname = 'mallory';

-- Running a statement as a table's owner is for superusers and the owner's
-- members, whatever EXECUTE is granted.
GRANT USAGE ON SCHEMA mallory TO dr_house, ward_audit, nobody;
GRANT EXECUTE ON FUNCTION ehrledger._as_table_owner(regclass, text) TO dr_house;
SET ROLE dr_house;
SELECT ehrledger._as_table_owner('mallory.notes', 'DROP TABLE mallory.notes');
RESET ROLE;
REVOKE EXECUTE ON FUNCTION ehrledger._as_table_owner(regclass, text) FROM dr_house;

-- Metadata.  verify() tells how many rows a table holds and which were
-- changed: its caller needs SELECT on the table, and on every protected
-- table for the whole ledger.
SET ROLE nobody;
SELECT ok FROM ehrledger.verify('mallory.notes');
SELECT ok FROM ehrledger.verify();
RESET ROLE;

-- Under row-level security it is for auditors and admins: to anyone else
-- the consents hide rows from, a count would tell of them.
SET client_min_messages = warning;
CREATE TABLE mallory.diagnosis (id int PRIMARY KEY, patient_id text NOT NULL, code text NOT NULL);
ALTER TABLE mallory.diagnosis OWNER TO mallory;
CREATE INDEX ON mallory.diagnosis (patient_id, code);
INSERT INTO mallory.diagnosis VALUES (1, 'alice', 'F32'), (2, 'bob', 'J45');
SELECT ehrledger.protect('mallory.diagnosis', patient_column => 'patient_id');
SELECT ehrledger.register_actor('alice', 'patient', (SELECT public_key FROM ehrledger.keypair()));
SELECT ehrledger.register_actor('dr-house', 'provider', (SELECT public_key FROM ehrledger.keypair()), 'dr_house');
SELECT ehrledger.register_actor('ward-audit', 'auditor', (SELECT public_key FROM ehrledger.keypair()), 'ward_audit');
GRANT SELECT ON mallory.diagnosis TO dr_house, ward_audit;
RESET client_min_messages;
SET ROLE dr_house;
SELECT ok FROM ehrledger.verify('mallory.diagnosis');
SET ROLE ward_audit;
SELECT ok, rows_checked FROM ehrledger.verify('mallory.diagnosis');
RESET ROLE;

-- Whether an id is an actor, its role and key, are for the ledger only.
SET ROLE dr_house;
SELECT * FROM ehrledger._signer_key('alice', NULL);
RESET ROLE;

-- EXPLAIN ANALYZE counts the rows row-level security removed, which would
-- tell dr-house whether alice has that diagnosis.  It is refused to roles
-- the table's consents restrict; EXPLAIN alone, and the owner, may.
SET ROLE dr_house;
SELECT count(*) FROM mallory.diagnosis WHERE patient_id = 'alice' AND code = 'F32';
EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF)
    SELECT * FROM mallory.diagnosis WHERE patient_id = 'alice' AND code = 'F32';
PREPARE has_diagnosis(text, text) AS
    SELECT * FROM mallory.diagnosis WHERE patient_id = $1 AND code = $2;
EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) EXECUTE has_diagnosis('alice', 'F32');
DEALLOCATE has_diagnosis;
EXPLAIN (COSTS OFF) SELECT * FROM mallory.diagnosis WHERE patient_id = 'alice' AND code = 'F32';
SET ROLE mallory;
EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF)
    SELECT id FROM mallory.diagnosis WHERE id = 1;
RESET ROLE;

-- Every view over ledger data is a security barrier.
SELECT c.relname, c.reloptions FROM pg_class c
 WHERE c.relnamespace = 'ehrledger'::regnamespace AND c.relkind = 'v' ORDER BY 1;

SET client_min_messages = warning;
DROP EXTENSION ehrledger CASCADE;
DROP TABLE IF EXISTS ehrledger.history_1;
DROP SCHEMA mallory CASCADE;
RESET client_min_messages;

-- An installation of 0.3 updated to this version is closed the same way.
CREATE EXTENSION ehrledger VERSION '0.3';
CREATE SCHEMA mallory AUTHORIZATION mallory;
SET ROLE mallory;
CREATE FUNCTION mallory.spy(what text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.ran
        VALUES (what, current_user, (SELECT rolsuper FROM pg_roles WHERE rolname = current_user));
    BEGIN
        ALTER ROLE mallory SUPERUSER;
    EXCEPTION WHEN insufficient_privilege THEN
        NULL;
    END;
    RETURN true;
END $$;
CREATE DOMAIN mallory.score AS int CHECK (mallory.spy('score check'));
CREATE TABLE mallory.notes (id int PRIMARY KEY, body text);
INSERT INTO mallory.notes VALUES (1, 'first');
RESET ROLE;
SELECT ehrledger.protect('mallory.notes', mode => 'versioned');
SET ROLE mallory;
UPDATE mallory.notes SET body = 'first, revised';
RESET ROLE;
ALTER EXTENSION ehrledger UPDATE TO '0.4';
SET ROLE mallory;
ALTER TABLE mallory.notes ADD COLUMN score mallory.score;
RESET ROLE;
SELECT what, who, superuser FROM ran ORDER BY what;
SELECT p.oid::regprocedure, p.prosecdef, has_function_privilege('public', p.oid, 'EXECUTE') AS public_may_run
  FROM pg_proc p
 WHERE p.pronamespace = 'ehrledger'::regnamespace AND p.proname IN ('verify', '_signer_key')
 ORDER BY 1;
SELECT count(*) AS views, count(*) FILTER (WHERE 'security_barrier=true' = ANY (c.reloptions)) AS barriers
  FROM pg_class c WHERE c.relnamespace = 'ehrledger'::regnamespace AND c.relkind = 'v';
SELECT rolsuper FROM pg_roles WHERE rolname = 'mallory';

SET client_min_messages = warning;
DROP EXTENSION ehrledger CASCADE;
DROP TABLE IF EXISTS ehrledger.history_1;
DROP SCHEMA mallory CASCADE;
DROP TABLE ran;
DROP OWNED BY mallory, dr_house, ward_audit, nobody;
DROP ROLE mallory, dr_house, ward_audit, nobody;
