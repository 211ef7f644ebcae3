-- Schema changes on ledger tables: what keeps sealed rows verifiable is
-- allowed; what would not is refused (SQLSTATE LD020), unless the table is
-- first retired, which the ledger records.
CREATE EXTENSION ehrledger;
\set SHOW_CONTEXT never
CREATE TABLE observation (id int PRIMARY KEY, patient text, value numeric);
CREATE TABLE allergy (id int PRIMARY KEY, patient text, substance text);
SELECT ehrledger.protect('observation');
SELECT ehrledger.protect('allergy', mode => 'versioned');
INSERT INTO observation VALUES (1, 'pat-1', 72), (2, 'pat-2', 81);
INSERT INTO allergy VALUES (1, 'pat-1', 'penicillin');
UPDATE allergy SET substance = 'amoxicillin' WHERE id = 1;
SELECT ehrledger.seal();

-- Allowed: a new column that starts out NULL, a default for new rows,
-- indexes, comments, renaming an unsigned table.
ALTER TABLE observation ADD COLUMN unit text;
ALTER TABLE observation ALTER COLUMN unit SET DEFAULT 'bpm';
INSERT INTO observation (id, patient, value) VALUES (3, 'pat-3', 64);
CREATE INDEX ON observation (patient);
COMMENT ON TABLE observation IS 'vital signs';
ALTER TABLE allergy ADD COLUMN severity text;
UPDATE allergy SET severity = 'high' WHERE id = 1;
ALTER TABLE observation RENAME TO vital_sign;
ALTER TABLE vital_sign RENAME TO observation;
SELECT id, unit FROM observation ORDER BY id;
-- The new column reached the history table too.
SELECT attname FROM pg_attribute
 WHERE attrelid = 'ehrledger.history_2'::regclass AND attname = 'severity';
SELECT ehrledger.seal();
SELECT ok, rows_checked, problems FROM ehrledger.verify();
-- Each block that seals rows of a table new to the chain, or with new
-- columns, or renamed, enrols it again (docs/format.md §19).
SELECT table_id, name, event, jsonb_array_length(columns) AS columns
  FROM ehrledger.enrolled_table WHERE table_id < 2000000000 ORDER BY ledger_seq;

-- Refused: anything that changes what sealed rows hold or name.
ALTER TABLE observation ADD COLUMN source text DEFAULT 'device';
\echo :LAST_ERROR_SQLSTATE
ALTER TABLE observation ADD COLUMN n serial;
ALTER TABLE observation DROP COLUMN value;
ALTER TABLE observation RENAME COLUMN value TO reading;
ALTER TABLE observation ALTER COLUMN value TYPE float8;
ALTER TABLE observation DISABLE TRIGGER ALL;
ALTER TABLE observation DISABLE TRIGGER zz_ehrledger_insert;
DROP TRIGGER ehrledger_append_only ON observation;
DROP INDEX observation_ledger_seq_idx;
ALTER TABLE observation SET UNLOGGED;
CREATE RULE no_insert AS ON INSERT TO observation DO INSTEAD NOTHING;
DROP TABLE observation;
DROP TABLE allergy CASCADE;
ALTER TABLE ehrledger.history_2 DROP COLUMN severity;

-- A signed table keeps its name: authors signed rows under it.
CREATE TABLE note (id int, body text, author text, signature bytea);
SELECT ehrledger.protect('note', signer_column => 'author', signature_column => 'signature');
ALTER TABLE note RENAME TO clinical_note;

-- The types a ledger table holds values of, whoever owns them: a change
-- that would re-encode stored values is refused before it runs (a
-- composite inside a domain over an array, an enum inside a range);
-- renaming an attribute, adding a label or changing the owner is not.
CREATE ROLE type_owner;
CREATE TYPE reading AS (value numeric, flag text);
CREATE DOMAIN readings AS reading[];
CREATE TYPE triage AS ENUM ('green', 'yellow', 'red');
CREATE TYPE triage_span AS RANGE (subtype = triage);
ALTER TYPE reading OWNER TO type_owner;
ALTER TYPE triage OWNER TO type_owner;
CREATE TABLE panel (id int PRIMARY KEY, results readings, urgency triage_span);
SELECT ehrledger.protect('panel');
INSERT INTO panel VALUES (1, ARRAY[ROW(7.2, 'H')::reading], '[green,red)');
SET ROLE type_owner;
ALTER TYPE reading ADD ATTRIBUTE unit text;
ALTER TYPE reading DROP ATTRIBUTE flag;
ALTER TYPE triage RENAME VALUE 'green' TO 'minor';
ALTER TYPE reading RENAME ATTRIBUTE flag TO abnormal_flag;
ALTER TYPE triage ADD VALUE 'black';
RESET ROLE;
-- A table's row type is a composite type too.
CREATE TABLE address (street text, city text);
CREATE TABLE patient_address (id int PRIMARY KEY, home address);
SELECT ehrledger.protect('patient_address');
ALTER TABLE address DROP COLUMN city;
ALTER TABLE address ADD COLUMN zip text;
ALTER TABLE address RENAME COLUMN city TO town;
-- Its name is the column's type's name: the table keeps it.
ALTER TABLE address RENAME TO addresses;
ALTER TABLE address SET SCHEMA ehrledger;
-- A parent's change reaches it, but not one made ONLY on the parent.
CREATE TABLE address_base (street text);
ALTER TABLE address INHERIT address_base;
ALTER TABLE address_base DROP COLUMN street;
ALTER TABLE ONLY address_base DROP COLUMN street;
ALTER TABLE address NO INHERIT address_base;
DROP TABLE address_base;
-- So a ledger table holds only the row types of tables and views its owner
-- has the privileges of the owner of (SQLSTATE 42501): any role with USAGE
-- on a row type, PUBLIC's by default, could otherwise freeze another
-- owner's table with a column of its own ledger table.  Composite types of
-- CREATE TYPE are the types' to share, and stay allowed.
CREATE ROLE clinic_app;
GRANT CREATE ON SCHEMA public TO clinic_app;
CREATE TABLE staff (id int, name text);
CREATE VIEW staff_view AS SELECT 1 AS id;
CREATE TABLE app_log (id int);
ALTER TABLE app_log OWNER TO clinic_app;
SELECT ehrledger.protect('app_log');
SET ROLE clinic_app;
ALTER TABLE app_log ADD COLUMN who staff;
\echo :LAST_ERROR_SQLSTATE
ALTER TABLE app_log ADD COLUMN who staff_view;
CREATE TYPE app_pair AS (n int, who staff);
CREATE DOMAIN app_pairs AS app_pair[];
ALTER TABLE app_log ADD COLUMN pairs app_pairs;
CREATE TABLE app_unit (code text);
CREATE TYPE app_reading AS (value numeric);
ALTER TABLE app_log ADD COLUMN unit app_unit, ADD COLUMN reading app_reading;
RESET ROLE;
ALTER TABLE staff ADD COLUMN ward text;
CREATE TABLE app_log2 (id int, who staff);
ALTER TABLE app_log2 OWNER TO clinic_app;
SELECT ehrledger.protect('app_log2');
-- A superuser's ledger table may hold it; given to clinic_app, it may not.
ALTER TABLE app_log2 OWNER TO CURRENT_USER;
SELECT ehrledger.protect('app_log2');
ALTER TABLE app_log2 OWNER TO clinic_app;
-- The checks after ALTER TABLE go by the columns it added, not by its
-- table's name looked up again: a CHECK constraint's function that changes
-- search_path does not hide the table (nor a temporary type).
CREATE FUNCTION lose_path(int) RETURNS bool LANGUAGE sql
    AS $$ SELECT set_config('search_path', 'pg_catalog', false) IS NOT NULL $$;
ALTER FUNCTION lose_path(int) OWNER TO clinic_app;
SET ROLE clinic_app;
INSERT INTO app_log (id) VALUES (1);
ALTER TABLE app_log ADD COLUMN who public.staff, ADD CONSTRAINT c CHECK (public.lose_path(id));
RESET search_path;
CREATE TYPE pg_temp.session_shape AS (x int);
ALTER TABLE app_log ADD COLUMN shape pg_temp.session_shape, ADD CONSTRAINT c CHECK (public.lose_path(id));
RESET search_path;
-- Nor does a utility command such a function runs, whose error it catches.
CREATE FUNCTION lose_path_quietly(int) RETURNS bool LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('search_path', 'pg_catalog', false);
    BEGIN
        SET LOCAL work_mem = '4MB';
    EXCEPTION WHEN others THEN NULL;
    END;
    RETURN true;
END $$;
ALTER TABLE public.app_log ADD COLUMN who public.staff, ADD CONSTRAINT c CHECK (public.lose_path_quietly(id));
RESET search_path;
ALTER TABLE app_log ADD COLUMN shape pg_temp.session_shape, ADD CONSTRAINT c CHECK (public.lose_path_quietly(id));
RESET search_path;
DROP TYPE pg_temp.session_shape;
RESET ROLE;
-- A partition given to clinic_app is still part of a table it cannot alter.
CREATE TABLE ward_stay (ward int, bed int) PARTITION BY LIST (ward);
CREATE TABLE ward_stay_1 PARTITION OF ward_stay FOR VALUES IN (1);
ALTER TABLE ward_stay_1 OWNER TO clinic_app;
SET ROLE clinic_app;
ALTER TABLE app_log ADD COLUMN stay ward_stay_1;
-- The rule is checked when a column is added or retyped, or the owner
-- changes: a hold that was allowed then stays, and does not block other
-- changes of the ledger table.
RESET ROLE;
CREATE ROLE ward_admin;
CREATE TABLE ward (id int);
ALTER TABLE ward OWNER TO ward_admin;
GRANT ward_admin TO clinic_app;
SET ROLE clinic_app;
ALTER TABLE app_log ADD COLUMN ward ward;
RESET ROLE;
REVOKE ward_admin FROM clinic_app;
SET ROLE clinic_app;
ALTER TABLE app_log ADD COLUMN note text;
ALTER TABLE app_log ALTER COLUMN ward SET STATISTICS 50;
-- A failed ALTER whose error was caught leaves nothing for the next command.
DO $$
BEGIN
    BEGIN
        ALTER TABLE app_log ALTER COLUMN ward SET STATISTICS 5, ADD CONSTRAINT never CHECK (id > 1);
    EXCEPTION WHEN check_violation THEN RAISE NOTICE 'caught: %', SQLERRM;
    END;
    CREATE TABLE app_scratch (x int);
END $$;
DROP TABLE app_scratch;
RESET ROLE;
-- What a change reaches: an inheritance child's or a partition's row type
-- (ALTER TABLE of the parent), a typed table's (ALTER TYPE ... CASCADE), a
-- view's (CREATE OR REPLACE VIEW), an enum under a long chain of domains,
-- and a composite attribute dropped by DROP ... CASCADE of its type.
CREATE TABLE person (name text);
CREATE TABLE clinician (npi text) INHERITS (person);
CREATE TABLE shift (ward int, lead text) PARTITION BY LIST (ward);
CREATE TABLE shift_icu PARTITION OF shift FOR VALUES IN (1);
CREATE TYPE vitals AS (pulse int, spo2 int);
CREATE TABLE vitals_row OF vitals;
CREATE VIEW ward_view AS SELECT 1 AS ward, 'icu'::text AS name;
CREATE TYPE allergy_code AS ENUM ('nka', 'peanut');
DO $$
BEGIN
    EXECUTE 'CREATE DOMAIN allergy_d1 AS allergy_code';
    FOR i IN 2..40 LOOP
        EXECUTE format('CREATE DOMAIN allergy_d%s AS allergy_d%s', i, i - 1);
    END LOOP;
END $$;
CREATE TYPE severity AS ENUM ('mild', 'severe');
CREATE DOMAIN dose_mg AS numeric;
CREATE TYPE reaction AS (code text, level severity, dose dose_mg);
CREATE TABLE roster (id int PRIMARY KEY, who clinician, on_shift shift_icu, seen vitals_row,
                     ward ward_view, allergy allergy_d40, worst reaction);
SELECT ehrledger.protect('roster');
ALTER TABLE person ADD COLUMN title text;
ALTER TABLE shift DROP COLUMN lead;
ALTER TYPE vitals ADD ATTRIBUTE temp numeric CASCADE;
CREATE OR REPLACE VIEW ward_view AS SELECT 1 AS ward, 'icu'::text AS name, 2 AS beds;
-- ... judged by the view it changes: a temporary view of the name, first
-- in search_path, does not hide the held one; the same columns from
-- another query change no row type.
CREATE TEMP VIEW ward_view AS SELECT 2 AS ward;
CREATE OR REPLACE VIEW ward_view AS SELECT 1 AS ward, 'icu'::text AS name, 2 AS beds;
DROP VIEW pg_temp.ward_view;
CREATE OR REPLACE VIEW ward_view AS SELECT 2 AS ward, 'ward ' || 2 AS name;
ALTER TYPE allergy_code RENAME VALUE 'nka' TO 'none';
DROP TYPE severity CASCADE;
DROP DOMAIN dose_mg CASCADE;
-- Generated columns are not hashed: one cannot become an ordinary column.
CREATE TABLE bmi (id int PRIMARY KEY, kg numeric, m numeric,
                  bmi numeric GENERATED ALWAYS AS (round(kg / (m * m), 1)) STORED);
SELECT ehrledger.protect('bmi');
INSERT INTO bmi (id, kg, m) VALUES (1, 81.5, 1.8);
ALTER TABLE bmi ALTER COLUMN bmi DROP EXPRESSION;
-- Values rewritten in place by a USING of the same type; a column of a
-- temporary type (dropped, values and all, when its session ends); a
-- table made OF a type (whose ALTER TYPE ... CASCADE would reach it).
ALTER TABLE bmi ALTER COLUMN kg TYPE numeric USING kg * 2;
CREATE DOMAIN pg_temp.session_kg AS numeric;
ALTER TABLE bmi ADD COLUMN kg_today pg_temp.session_kg;
CREATE TYPE bmi_shape AS (id int, kg numeric, m numeric, bmi numeric, ledger_seq bigint,
                          ledger_hash bytea, ledger_salt bytea);
ALTER TABLE bmi OF bmi_shape;
-- The guard knows columns by their types' names: a column's type keeps
-- its name and schema while a ledger table has the column.
CREATE SCHEMA coding;
CREATE TYPE coding.loinc AS (code text, display text);
CREATE TABLE lab (id int PRIMARY KEY, test coding.loinc[]);
SELECT ehrledger.protect('lab');
ALTER TYPE coding.loinc RENAME TO loinc_code;
ALTER TYPE coding.loinc SET SCHEMA public;
ALTER SCHEMA coding RENAME TO terminology;
-- ... nor through its extension (citext's owner could move it).
CREATE EXTENSION citext;
CREATE TABLE login (id int PRIMARY KEY, email citext);
SELECT ehrledger.protect('login');
ALTER EXTENSION citext SET SCHEMA coding;
-- Whatever a column depends on must outlive the session: a temporary
-- collation, a function of a generation expression, or a collation inside
-- a composite type (PostgreSQL drops those, and the columns using them,
-- with their values, when the session ends).
CREATE COLLATION pg_temp.session_c (locale = 'C');
CREATE FUNCTION pg_temp.twice(numeric) RETURNS numeric IMMUTABLE LANGUAGE sql AS 'SELECT $1 * 2';
CREATE TYPE note_part AS (n int, body text COLLATE pg_temp.session_c);
ALTER TABLE lab ADD COLUMN remark text COLLATE pg_temp.session_c;
ALTER TABLE lab ADD COLUMN twice_id numeric GENERATED ALWAYS AS (pg_temp.twice(id)) STORED;
ALTER TABLE lab ADD COLUMN part note_part;
CREATE TABLE lab2 (id int PRIMARY KEY, remark text COLLATE pg_temp.session_c);
SELECT ehrledger.protect('lab2');
DROP TABLE lab2;
DROP TYPE note_part;
-- Nor may a type or function a ledger column uses come to depend on one:
-- a domain's default, a generation expression's function's parameter
-- default (PostgreSQL would drop the domain, or the function, and the
-- column with it).  A function no ledger column uses may.
CREATE DOMAIN lab_code AS int;
CREATE FUNCTION lab_twice(numeric, numeric DEFAULT 0) RETURNS numeric IMMUTABLE LANGUAGE sql AS 'SELECT $1 * 2';
ALTER TABLE lab ADD COLUMN code lab_code, ADD COLUMN doubled numeric GENERATED ALWAYS AS (lab_twice(id)) STORED;
ALTER DOMAIN lab_code SET DEFAULT pg_temp.twice(1);
CREATE OR REPLACE FUNCTION lab_twice(numeric, numeric DEFAULT pg_temp.twice(1)) RETURNS numeric
    IMMUTABLE LANGUAGE sql AS 'SELECT $1 * 2';
CREATE FUNCTION unused_twice(numeric DEFAULT pg_temp.twice(1)) RETURNS numeric
    IMMUTABLE LANGUAGE sql AS 'SELECT $1 * 2';
DROP FUNCTION unused_twice(numeric);
-- Whatever the way: what the session's temporary schema would take with
-- it is followed as PostgreSQL will (an operator's function, a text search
-- configuration, a view's rule, a held table's own generated column).
CREATE FUNCTION lab_plus(int, int) RETURNS int IMMUTABLE LANGUAGE sql AS 'SELECT $1 + $2';
CREATE OPERATOR ### (LEFTARG = int, RIGHTARG = int, FUNCTION = lab_plus);
CREATE TEXT SEARCH CONFIGURATION lab_cfg (COPY = simple);
CREATE FUNCTION lab_one() RETURNS int IMMUTABLE LANGUAGE sql BEGIN ATOMIC SELECT 1; END;
CREATE VIEW lab_view AS SELECT lab_one() AS a;
CREATE VIEW lab_k AS SELECT 2 AS a;
CREATE FUNCTION lab_kf(int) RETURNS int IMMUTABLE LANGUAGE sql BEGIN ATOMIC SELECT $1 * a FROM lab_k; END;
ALTER TABLE lab ADD COLUMN plus1 int GENERATED ALWAYS AS (id ### 1) STORED,
    ADD COLUMN words tsvector GENERATED ALWAYS AS (to_tsvector('public.lab_cfg'::regconfig, id::text)) STORED,
    ADD COLUMN seen lab_view,
    ADD COLUMN k_times int GENERATED ALWAYS AS (lab_kf(id)) STORED;
CREATE OR REPLACE FUNCTION lab_plus(int, int) RETURNS int IMMUTABLE LANGUAGE sql
    BEGIN ATOMIC SELECT pg_temp.twice($1)::int + $2; END;
CREATE TEXT SEARCH DICTIONARY pg_temp.lab_dict (TEMPLATE = simple);
ALTER TEXT SEARCH CONFIGURATION lab_cfg ALTER MAPPING FOR asciiword WITH pg_temp.lab_dict;
CREATE OR REPLACE FUNCTION lab_one() RETURNS int IMMUTABLE LANGUAGE sql BEGIN ATOMIC SELECT pg_temp.twice(1)::int; END;
CREATE OR REPLACE VIEW lab_k AS SELECT pg_temp.twice(1)::int AS a;
CREATE TABLE lab_inner (p int, q int GENERATED ALWAYS AS (p * pg_temp.twice(1)::int) STORED);
ALTER TABLE lab ADD COLUMN inner_row lab_inner;
DROP TABLE lab_inner;
INSERT INTO panel VALUES (2, ARRAY[ROW(5.1, NULL)::reading], '[yellow,black]');
SELECT ehrledger.seal() > 0 AS sealed;

-- Every refusal left the ledger as it was.
SELECT ok, problems FROM ehrledger.verify();

-- Retiring: recorded in the ledger; afterwards the table is an ordinary
-- table again, and its sealed rows stay verifiable while it exists.
SELECT ehrledger.retire('observation', 'replaced by vital_signs_v2');
SELECT table_id, tbl, reason, live_rows FROM ehrledger.retirement;
SELECT tbl, retired_at IS NOT NULL AS retired FROM ehrledger.protected_tables
 WHERE NOT internal ORDER BY table_id;
ALTER TABLE observation DROP COLUMN unit;
DROP TABLE observation;
SELECT ok, problems FROM ehrledger.verify();
SELECT ehrledger.retire('observation', 'again');
SELECT ehrledger.retire('allergy', NULL);
SELECT ehrledger.retire('ehrledger.actor_event', 'no');

-- Once the table is retired, its types are the owner's to change again.
SELECT ehrledger.retire('panel', 'types to be reworked');
ALTER TYPE triage RENAME VALUE 'green' TO 'minor';

-- A signed table keeps its schema's name too (a plain ledger table's
-- schema may be renamed).
CREATE SCHEMA notes;
CREATE TABLE notes.signed_note (id int, body text, author text, signature bytea);
SELECT ehrledger.protect('notes.signed_note', signer_column => 'author', signature_column => 'signature');
ALTER SCHEMA notes RENAME TO old_notes;
SELECT ehrledger.retire('notes.signed_note', 'moved with its schema');
ALTER SCHEMA notes RENAME TO old_notes;
CREATE SCHEMA ward;
CREATE TABLE ward.bed_log (id int PRIMARY KEY, bed text);
SELECT ehrledger.protect('ward.bed_log');
ALTER SCHEMA ward RENAME TO old_ward;
SELECT ok FROM ehrledger.verify('old_ward.bed_log');

DROP EXTENSION ehrledger CASCADE;
DROP SCHEMA old_notes, old_ward CASCADE;
DROP TYPE app_pairs, app_pair;
DROP FUNCTION lose_path(int), lose_path_quietly(int);
DROP TABLE allergy, note, ehrledger.history_2, panel, patient_address, address, roster, clinician, person, shift, vitals_row, bmi, lab, login,
    app_log, app_log2, staff, app_unit, ward_stay, ward;
DROP VIEW staff_view;
DROP TYPE app_reading;
REVOKE CREATE ON SCHEMA public FROM clinic_app;
DROP ROLE clinic_app, ward_admin;
DROP EXTENSION citext;
DROP TYPE bmi_shape;
DROP SCHEMA coding CASCADE;
DROP VIEW ward_view;
SET client_min_messages = warning;
DROP TYPE reaction, severity, vitals, allergy_code CASCADE;
RESET client_min_messages;
DROP DOMAIN dose_mg, lab_code;
DROP FUNCTION lab_twice(numeric, numeric);
DROP VIEW lab_view;
DROP FUNCTION lab_kf(int);
DROP VIEW lab_k;
DROP FUNCTION lab_one();
DROP OPERATOR ### (int, int);
DROP FUNCTION lab_plus(int, int);
DROP TEXT SEARCH CONFIGURATION lab_cfg;
DROP TYPE triage_span, readings, reading, triage;
DROP ROLE type_owner;
