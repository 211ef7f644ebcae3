-- The schema guard follows a change down to the tables that inherit it,
-- and keeps the owner's BEFORE ROW triggers ahead of the ledger's own:
-- either would otherwise change rows after they were hashed, and sealed
-- rows would stop verifying.  Refusals are SQLSTATE LD020.
CREATE EXTENSION ehrledger;
\set SHOW_CONTEXT never
\set VERBOSITY default

-- A ledger table that INHERITS from a plain table, two levels down.
CREATE TABLE person (name text, born date);
CREATE TABLE patient_base (ward text) INHERITS (person);
CREATE TABLE admission (id int PRIMARY KEY) INHERITS (patient_base);
SELECT ehrledger.protect('admission');
CREATE TABLE stay (id int PRIMARY KEY) INHERITS (person);
SELECT ehrledger.protect('stay', mode => 'versioned');
INSERT INTO admission VALUES ('Ann', '1970-01-01', 'A', 1);
INSERT INTO stay VALUES ('Bob', '1980-02-02', 1);
UPDATE stay SET name = 'Rob' WHERE id = 1;
SELECT ehrledger.seal() > 0 AS sealed;

-- Refused: changes to a parent that reach a ledger table's columns.
ALTER TABLE person ADD COLUMN weight int DEFAULT 5;
\echo :LAST_ERROR_SQLSTATE
ALTER TABLE person ALTER COLUMN born TYPE timestamp;
\echo :LAST_ERROR_SQLSTATE
ALTER TABLE person RENAME COLUMN name TO full_name;
\echo :LAST_ERROR_SQLSTATE
ALTER TABLE patient_base RENAME COLUMN ward TO unit;
\echo :LAST_ERROR_SQLSTATE
ALTER TABLE person DROP COLUMN born;
\echo :LAST_ERROR_SQLSTATE
-- Allowed: a column that starts out NULL reaches every ledger table below
-- (and the history table of a versioned one), recorded as if added there.
ALTER TABLE person ADD COLUMN note text;
SELECT r.relid, c->>'name' AS recorded
  FROM ehrledger.registered_table r, jsonb_array_elements(r.columns) c
 WHERE r.relid IN ('admission'::regclass, 'stay'::regclass) AND c->>'name' = 'note'
 ORDER BY 1;
SELECT attname FROM pg_attribute
 WHERE attrelid = (SELECT history FROM ehrledger.registered_table WHERE relid = 'stay'::regclass)
   AND attname = 'note';
INSERT INTO admission (name, born, ward, id, note) VALUES ('Cy', '1990-03-03', 'B', 2, 'transfer');

-- A parent attached later: its changes are followed from then on; NO
-- INHERIT leaves the ledger table's columns as they were.
CREATE TABLE audited (name text, born date);
ALTER TABLE stay INHERIT audited;
ALTER TABLE audited ADD COLUMN checked boolean DEFAULT true;
\echo :LAST_ERROR_SQLSTATE
ALTER TABLE stay NO INHERIT audited;
ALTER TABLE audited ADD COLUMN checked boolean DEFAULT true;
ALTER TABLE audited ALTER COLUMN name TYPE varchar(20);
SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute
 WHERE attrelid = 'stay'::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum;

-- BEFORE ROW triggers fire in name order (byte order): one named after
-- zz_ehrledger_insert would change a row after it was hashed.
CREATE FUNCTION tamper() RETURNS trigger LANGUAGE plpgsql
    AS $$BEGIN IF TG_LEVEL = 'ROW' THEN NEW.ward := 'tampered'; END IF; RETURN NEW; END$$;
CREATE TRIGGER zzz_fill BEFORE INSERT ON admission FOR EACH ROW EXECUTE FUNCTION tamper();
\echo :LAST_ERROR_SQLSTATE
-- Names sort in byte order, whatever the database's collation.
CREATE TRIGGER "zz_ehrledger_insert_2" BEFORE INSERT OR UPDATE ON admission FOR EACH ROW EXECUTE FUNCTION tamper();
\echo :LAST_ERROR_SQLSTATE
CREATE TRIGGER "Zz_fill" BEFORE INSERT ON admission FOR EACH ROW EXECUTE FUNCTION tamper();
ALTER TRIGGER "Zz_fill" ON admission RENAME TO zzz_fill;
\echo :LAST_ERROR_SQLSTATE
-- Disabled, it fires never; enabling it is refused.
ALTER TABLE admission DISABLE TRIGGER "Zz_fill";
BEGIN;
ALTER TRIGGER "Zz_fill" ON admission RENAME TO zzz_fill;
ALTER TABLE admission ENABLE TRIGGER zzz_fill;
ROLLBACK;
\echo :LAST_ERROR_SQLSTATE
-- Allowed: an AFTER trigger, a statement trigger, a trigger named ahead.
CREATE TRIGGER zzz_after AFTER INSERT ON admission FOR EACH ROW EXECUTE FUNCTION tamper();
CREATE TRIGGER zzz_stmt BEFORE INSERT ON admission FOR EACH STATEMENT EXECUTE FUNCTION tamper();
ALTER TABLE admission ENABLE TRIGGER "Zz_fill";
INSERT INTO admission VALUES ('Di', '1991-04-04', 'C', 3);
SELECT id, ward FROM admission ORDER BY id;
-- For a versioned table, BEFORE UPDATE triggers go ahead of
-- zz_ehrledger_version too.
CREATE TRIGGER zz_ehrledger_w BEFORE UPDATE ON stay FOR EACH ROW EXECUTE FUNCTION tamper();
\echo :LAST_ERROR_SQLSTATE
-- protect() refuses a table that has such a trigger already, and a
-- partitioned table whose trigger its partitions would have.
CREATE TABLE discharge (id int, ward text);
CREATE TRIGGER zzz_fill BEFORE INSERT ON discharge FOR EACH ROW EXECUTE FUNCTION tamper();
SELECT ehrledger.protect('discharge');
\echo :LAST_ERROR_SQLSTATE
CREATE TABLE transfer (id int, ward text) PARTITION BY RANGE (id);
CREATE TABLE transfer_1 PARTITION OF transfer FOR VALUES FROM (0) TO (100);
CREATE TRIGGER zzz_fill BEFORE INSERT ON transfer FOR EACH ROW EXECUTE FUNCTION tamper();
SELECT ehrledger.protect('transfer');
\echo :LAST_ERROR_SQLSTATE
DROP TRIGGER zzz_fill ON transfer;
SELECT ehrledger.protect('transfer');
CREATE TRIGGER zzz_fill BEFORE INSERT ON transfer FOR EACH ROW EXECUTE FUNCTION tamper();
\echo :LAST_ERROR_SQLSTATE
CREATE TRIGGER zzz_fill BEFORE INSERT ON transfer_1 FOR EACH ROW EXECUTE FUNCTION tamper();
\echo :LAST_ERROR_SQLSTATE
-- A partition's own columns follow its partitioned table, as before.
ALTER TABLE transfer ADD COLUMN reason text DEFAULT 'none';
\echo :LAST_ERROR_SQLSTATE
ALTER TABLE transfer ADD COLUMN reason text;
INSERT INTO transfer (id, ward, reason) VALUES (1, 'A', 'bed');

-- CREATE OR REPLACE TRIGGER keeps a name: the ledger's own triggers keep
-- their function, events, WHEN clause and table id too.
CREATE TABLE dose_given (id int PRIMARY KEY, dose text);
SELECT ehrledger.protect('dose_given');
CREATE OR REPLACE TRIGGER zz_ehrledger_insert BEFORE INSERT ON dose_given
    FOR EACH ROW EXECUTE FUNCTION tamper();
CREATE OR REPLACE TRIGGER ehrledger_append_only BEFORE DELETE ON dose_given
    FOR EACH ROW EXECUTE FUNCTION ehrledger.refuse_change();
CREATE OR REPLACE TRIGGER zz_ehrledger_insert BEFORE INSERT ON dose_given
    FOR EACH ROW WHEN (false) EXECUTE FUNCTION ehrledger.insert_row('999');
-- A second hashing trigger named earlier leaves the ledger's to fire
-- after it: the insert trigger refuses to hash then.
SELECT format('CREATE TRIGGER a_hash BEFORE INSERT ON dose_given FOR EACH ROW EXECUTE FUNCTION ehrledger.insert_row(%L)',
              table_id) FROM ehrledger.registered_table WHERE relid = 'dose_given'::regclass \gexec
INSERT INTO dose_given VALUES (1, '5 mg');
DROP TRIGGER a_hash ON dose_given;
INSERT INTO dose_given VALUES (1, '5 mg');
-- Nothing inherits from a ledger table: a child's rows would show in its
-- queries without being in the ledger.
CREATE TABLE dose_forged () INHERITS (dose_given);
CREATE TABLE dose_other (id int, dose text, ledger_seq bigint, ledger_hash bytea, ledger_salt bytea);
ALTER TABLE dose_other INHERIT dose_given;
-- nor a foreign table (its rows would show too), and a table with a child
-- is not protected.
CREATE FOREIGN DATA WRAPPER dose_fdw;
CREATE SERVER dose_server FOREIGN DATA WRAPPER dose_fdw;
CREATE FOREIGN TABLE dose_remote () INHERITS (dose_given) SERVER dose_server;
CREATE TABLE dose_plan (id int, dose text);
CREATE TABLE dose_plan_old () INHERITS (dose_plan);
SELECT ehrledger.protect('dose_plan');

SELECT ehrledger.seal() > 0 AS sealed;
SELECT ok, rows_checked, problems FROM ehrledger.verify();

\set VERBOSITY terse
DROP EXTENSION ehrledger CASCADE;
DROP TABLE person, audited, discharge, transfer, ehrledger.history_2, dose_given, dose_other, dose_plan CASCADE;
DROP SERVER dose_server;
DROP FOREIGN DATA WRAPPER dose_fdw;
DROP FUNCTION tamper();
