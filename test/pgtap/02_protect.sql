-- 02_protect.sql: ehrledger.protect() on good and bad input.
BEGIN;
CREATE EXTENSION ehrledger;
SELECT plan(73);

-- An empty table ------------------------------------------------------------
CREATE TABLE public.empty_notes (id int PRIMARY KEY, body text);
SELECT hasnt_column('public', 'empty_notes', 'ledger_seq', 'before protect: no ledger_seq column');
SELECT lives_ok($$SELECT ehrledger.protect('public.empty_notes')$$, 'protect() an empty table');

SELECT has_column('public', 'empty_notes', 'ledger_seq', 'protect adds ledger_seq');
SELECT col_type_is('public', 'empty_notes', 'ledger_seq', 'bigint', 'ledger_seq is bigint');
SELECT col_not_null('public', 'empty_notes', 'ledger_seq', 'ledger_seq is NOT NULL');
SELECT col_hasnt_default('public', 'empty_notes', 'ledger_seq', 'ledger_seq has no default: the trigger assigns it');
SELECT has_column('public', 'empty_notes', 'ledger_hash', 'protect adds ledger_hash');
SELECT col_type_is('public', 'empty_notes', 'ledger_hash', 'bytea', 'ledger_hash is bytea');
SELECT col_not_null('public', 'empty_notes', 'ledger_hash', 'ledger_hash is NOT NULL');
SELECT col_hasnt_default('public', 'empty_notes', 'ledger_hash', 'ledger_hash has no default');

SELECT has_trigger('public', 'empty_notes', 'zz_ehrledger_insert', 'insert trigger exists');
SELECT has_trigger('public', 'empty_notes', 'ehrledger_append_only', 'update/delete guard trigger exists');
SELECT has_trigger('public', 'empty_notes', 'ehrledger_no_truncate', 'truncate guard trigger exists');
SELECT hasnt_trigger('public', 'empty_notes', 'zz_ehrledger_backfill', 'the backfill trigger is gone after protect');
SELECT trigger_is('public', 'empty_notes', 'zz_ehrledger_insert', 'ehrledger', 'insert_row',
    'insert trigger runs ehrledger.insert_row()');
SELECT trigger_is('public', 'empty_notes', 'ehrledger_append_only', 'ehrledger', 'refuse_change',
    'guard trigger runs ehrledger.refuse_change()');
SELECT trigger_is('public', 'empty_notes', 'ehrledger_no_truncate', 'ehrledger', 'refuse_change',
    'truncate trigger runs ehrledger.refuse_change()');
SELECT set_eq(
    $$SELECT tgname::text, tgenabled::text FROM pg_trigger
       WHERE tgrelid = 'public.empty_notes'::regclass AND NOT tgisinternal$$,
    $$VALUES ('zz_ehrledger_insert', 'A'), ('ehrledger_append_only', 'A'), ('ehrledger_no_truncate', 'A')$$,
    'exactly the three ledger triggers, each ENABLE ALWAYS (tgenabled = A)');
SELECT ok((SELECT (tgtype & 2) <> 0 AND (tgtype & 1) <> 0 AND (tgtype & 4) <> 0
             FROM pg_trigger WHERE tgrelid = 'public.empty_notes'::regclass
              AND tgname = 'zz_ehrledger_insert'),
    'insert trigger is BEFORE INSERT FOR EACH ROW');
SELECT ok((SELECT (tgtype & 2) <> 0 AND (tgtype & 1) <> 0 AND (tgtype & 16) <> 0 AND (tgtype & 8) <> 0
             FROM pg_trigger WHERE tgrelid = 'public.empty_notes'::regclass
              AND tgname = 'ehrledger_append_only'),
    'guard trigger is BEFORE UPDATE OR DELETE FOR EACH ROW');
SELECT ok((SELECT (tgtype & 2) <> 0 AND (tgtype & 1) = 0 AND (tgtype & 32) <> 0
             FROM pg_trigger WHERE tgrelid = 'public.empty_notes'::regclass
              AND tgname = 'ehrledger_no_truncate'),
    'truncate trigger is BEFORE TRUNCATE FOR EACH STATEMENT');
SELECT ok(EXISTS (
    SELECT 1 FROM pg_index i
     WHERE i.indrelid = 'public.empty_notes'::regclass AND i.indisunique AND i.indnkeyatts = 1
       AND i.indkey[0] = (SELECT attnum FROM pg_attribute
                           WHERE attrelid = 'public.empty_notes'::regclass AND attname = 'ledger_seq')),
    'a unique index on ledger_seq exists');

SELECT is((SELECT mode FROM ehrledger.protected_tables WHERE tbl = 'public.empty_notes'::regclass),
    'append_only', 'protected_tables lists the table in mode append_only');
SELECT is((SELECT rows_at_protect FROM ehrledger.protected_tables WHERE tbl = 'public.empty_notes'::regclass),
    0::bigint, 'rows_at_protect is 0 for an empty table');
SELECT is((SELECT protected_by FROM ehrledger.protected_tables WHERE tbl = 'public.empty_notes'::regclass),
    current_user::name, 'protected_by is the role that called protect()');
SELECT ok((SELECT patient_column IS NULL AND signer_column IS NULL AND signature_column IS NULL
             FROM ehrledger.protected_tables WHERE tbl = 'public.empty_notes'::regclass),
    'patient, signer and signature columns are NULL');
SELECT is(current_setting('session_replication_role'), 'origin',
    'session_replication_role is origin again after protect()');

-- A populated table, with an application trigger that refuses UPDATE ---------
CREATE TABLE public.old_notes (id int PRIMARY KEY, body text, noted_on date);
INSERT INTO public.old_notes
    SELECT g, CASE WHEN g % 3 = 0 THEN NULL ELSE 'note ' || g END, DATE '2020-01-01' + g
      FROM generate_series(1, 7) AS g;
CREATE TEMP TABLE old_notes_before AS SELECT id, body, noted_on FROM public.old_notes;
CREATE FUNCTION public.no_updates() RETURNS trigger LANGUAGE plpgsql AS
$$BEGIN RAISE EXCEPTION 'application trigger refuses updates'; END$$;
CREATE TRIGGER app_no_updates BEFORE UPDATE ON public.old_notes
    FOR EACH ROW EXECUTE FUNCTION public.no_updates();

SELECT lives_ok($$SELECT ehrledger.protect('public.old_notes')$$,
    'protect() a populated table whose own triggers refuse UPDATE');
SELECT is((SELECT count(ledger_seq) FROM public.old_notes), (SELECT count(*) FROM old_notes_before),
    'every existing row got a ledger_seq');
SELECT is((SELECT count(DISTINCT ledger_seq) FROM public.old_notes), (SELECT count(*) FROM old_notes_before),
    'existing rows got distinct ledger_seq values');
SELECT is((SELECT count(*) FROM public.old_notes WHERE octet_length(ledger_hash) = 32),
    (SELECT count(*) FROM old_notes_before),
    'every existing row got a 32-byte ledger_hash');
SELECT is((SELECT count(DISTINCT ledger_hash) FROM public.old_notes), (SELECT count(*) FROM old_notes_before),
    'existing rows got distinct hashes');
SELECT is_empty($$
    SELECT ledger_seq FROM public.old_notes
     WHERE ledger_hash IS DISTINCT FROM
           sha256('\x00'::bytea || ehrledger.row_encoding('public.old_notes', ledger_seq))
$$, 'each backfilled hash is sha256(0x00 || row_encoding)');
SELECT set_eq('SELECT id, body, noted_on FROM public.old_notes', 'SELECT * FROM old_notes_before',
    'protect() left the application data unchanged');
SELECT is((SELECT rows_at_protect FROM ehrledger.protected_tables WHERE tbl = 'public.old_notes'::regclass),
    (SELECT count(*) FROM old_notes_before), 'rows_at_protect counts the existing rows');
SELECT is((SELECT tgenabled::text FROM pg_trigger
            WHERE tgrelid = 'public.old_notes'::regclass AND tgname = 'app_no_updates'),
    'O', 'the application''s own trigger is still there and enabled as before');
SELECT is(current_setting('session_replication_role'), 'origin',
    'session_replication_role is origin after protecting a populated table');
SELECT row_eq($$SELECT ok, rows_checked FROM ehrledger.verify('public.old_notes')$$,
    ROW(true, (SELECT count(*) FROM old_notes_before))::record,
    'verify() checks the backfilled rows and finds them intact');
SELECT isnt((SELECT table_id FROM ehrledger.protected_tables WHERE tbl = 'public.old_notes'::regclass),
    (SELECT table_id FROM ehrledger.protected_tables WHERE tbl = 'public.empty_notes'::regclass),
    'each protected table has its own table_id');

-- protect() under session_replication_role = replica keeps the caller's setting
CREATE TABLE public.replica_notes (id int);
INSERT INTO public.replica_notes VALUES (1), (2);
SET LOCAL session_replication_role = replica;
SELECT lives_ok($$SELECT ehrledger.protect('public.replica_notes')$$,
    'protect() while session_replication_role = replica');
-- protect() switches to replica for its backfill with set_config(..., true),
-- which outlives the function (its SET clause covers only search_path); an
-- earlier version then left the caller in origin.
SELECT is(current_setting('session_replication_role'), 'replica',
    'protect() restores the caller''s session_replication_role');
RESET session_replication_role;
SELECT is((SELECT count(ledger_seq) FROM public.replica_notes), 2::bigint,
    'rows were backfilled under replica role');

-- Names that need quoting ----------------------------------------------------
CREATE SCHEMA "My Schema";
CREATE TABLE "My Schema"."Patient Notes" ("Id" int, "Body Text" text);
INSERT INTO "My Schema"."Patient Notes" VALUES (1, 'first');
SELECT lives_ok($$SELECT ehrledger.protect('"My Schema"."Patient Notes"')$$,
    'protect() a table whose schema and name need quoting');
SELECT lives_ok($$INSERT INTO "My Schema"."Patient Notes" VALUES (2, 'second')$$,
    'insert into the quoted-name table');
SELECT is((SELECT count(ledger_seq) FROM "My Schema"."Patient Notes"), 2::bigint,
    'both rows of the quoted-name table are in the ledger');
-- Messages name the table as schema.table inside one pair of double quotes
-- (an earlier version quoted the quoted identifiers again).
SELECT throws_ok($$DELETE FROM "My Schema"."Patient Notes"$$, 'LD001',
    'cannot delete rows of append-only ledger table "My Schema.Patient Notes"',
    'the quoted-name table is append-only, and the message quotes its name once');

-- A table that once had a column named ledger_seq, since dropped
CREATE TABLE public.renamed_notes (id int, ledger_seq int);
ALTER TABLE public.renamed_notes DROP COLUMN ledger_seq;
SELECT lives_ok($$SELECT ehrledger.protect('public.renamed_notes')$$,
    'a dropped column named ledger_seq does not block protect()');

SELECT is((SELECT count(*) FROM ehrledger.protected_tables WHERE NOT internal), 5::bigint,
    'protected_tables lists every table protected so far (besides ehrledger''s own)');

-- Bad input ------------------------------------------------------------------
CREATE TABLE public.plain (id int);
SELECT throws_ok($$SELECT ehrledger.protect(NULL)$$, '22004',
    'table to protect must not be NULL', 'NULL table');
SELECT throws_ok($$SELECT ehrledger.protect('public.plain', 'bogus')$$, '22023',
    'unknown ledger mode "bogus"', 'unknown mode');
SELECT throws_ok($$SELECT ehrledger.protect('public.plain', NULL)$$, '22023',
    'unknown ledger mode "<NULL>"', 'NULL mode');
SELECT throws_ok($$SELECT ehrledger.protect('public.plain', 'Versioned')$$, '22023',
    'unknown ledger mode "Versioned"', 'modes are spelled exactly');
SELECT throws_ok($$SELECT ehrledger.protect('public.plain', patient_column => 'id')$$, '42804',
    'patient column "id" of public.plain must be of type text, not integer',
    'the patient column holds actor ids, so it is text (08_consent.sql covers consent tables)');
SELECT throws_ok($$SELECT ehrledger.protect('public.plain', signer_column => 'id')$$, '22023',
    'signer_column and signature_column go together',
    'signer_column without signature_column is refused (07_signatures_proofs.sql covers signed tables)');

CREATE VIEW public.plain_view AS SELECT * FROM public.plain;
SELECT throws_ok($$SELECT ehrledger.protect('public.plain_view')$$, '42809',
    '"public.plain_view" is not a table', 'a view is refused');
CREATE MATERIALIZED VIEW public.plain_matview AS SELECT * FROM public.plain;
SELECT throws_ok($$SELECT ehrledger.protect('public.plain_matview')$$, '42809',
    '"public.plain_matview" is not a table', 'a materialized view is refused');
CREATE SEQUENCE public.plain_seq;
SELECT throws_ok($$SELECT ehrledger.protect('public.plain_seq')$$, '42809',
    '"public.plain_seq" is not a table', 'a sequence is refused');

CREATE TEMP TABLE temp_notes (id int);
SELECT throws_ok($$SELECT ehrledger.protect('temp_notes')$$, '0A000',
    'cannot protect temporary table temp_notes', 'a temporary table is refused');
CREATE UNLOGGED TABLE public.unlogged_notes (id int);
SELECT throws_ok($$SELECT ehrledger.protect('public.unlogged_notes')$$, '0A000',
    'cannot protect unlogged table public.unlogged_notes', 'an unlogged table is refused');
SELECT hasnt_column('public', 'unlogged_notes', 'ledger_seq', 'the refused unlogged table is unchanged');
CREATE TABLE public.part_notes (id int) PARTITION BY RANGE (id);
CREATE TABLE public.part_notes_1 PARTITION OF public.part_notes FOR VALUES FROM (1) TO (10);
CREATE UNLOGGED TABLE public.part_notes_2 PARTITION OF public.part_notes FOR VALUES FROM (10) TO (20);
SELECT throws_ok($$SELECT ehrledger.protect('public.part_notes')$$, '55000',
    'cannot protect partitioned table public.part_notes', 'a partitioned table with an unlogged partition is refused');
SELECT hasnt_column('public', 'part_notes_1', 'ledger_seq', 'the refused partitioned table is unchanged');
SELECT throws_ok($$SELECT ehrledger.protect('public.part_notes_1')$$, '42809',
    'cannot protect partition public.part_notes_1 on its own', 'a partition alone is refused');

SELECT throws_ok($$SELECT ehrledger.protect('public.old_notes')$$, '42710',
    'table public.old_notes is already protected', 'protecting twice is refused');
SELECT is((SELECT count(*) FROM pg_trigger WHERE tgrelid = 'public.old_notes'::regclass
            AND tgname LIKE '%ehrledger%'), 3::bigint,
    'the refused second protect() added no triggers');

CREATE TABLE public.has_seq (id int, ledger_seq bigint);
SELECT throws_ok($$SELECT ehrledger.protect('public.has_seq')$$, '42701',
    'table public.has_seq already has a column whose name ehrledger reserves',
    'a table with a ledger_seq column is refused');
CREATE TABLE public.has_hash (id int, ledger_hash bytea);
SELECT throws_ok($$SELECT ehrledger.protect('public.has_hash')$$, '42701',
    'table public.has_hash already has a column whose name ehrledger reserves',
    'a table with a ledger_hash column is refused');

CREATE TABLE ehrledger.inside (id int);
SELECT throws_ok($$SELECT ehrledger.protect('ehrledger.inside')$$, '42501',
    'cannot protect ehrledger.inside: it belongs to ehrledger itself', 'a table in schema ehrledger is refused');
SELECT throws_ok($$SELECT ehrledger.protect('ehrledger.block')$$, '42501',
    'cannot protect ehrledger.block: it belongs to ehrledger itself', 'the ledger''s own block table is refused');
SELECT throws_ok($$SELECT ehrledger.protect('pg_catalog.pg_class')$$, '42501',
    'cannot protect system catalog pg_class', 'a system catalog is refused');
SELECT throws_ok($$SELECT ehrledger.protect('information_schema.sql_features')$$, '42501',
    'cannot protect system catalog information_schema.sql_features', 'a table in information_schema is refused');

SELECT throws_ok($$SELECT ehrledger.protect('nope')$$, '42P01',
    'relation "nope" does not exist', 'a nonexistent table is refused');

SELECT is((SELECT count(*) FROM ehrledger.protected_tables WHERE NOT internal), 5::bigint,
    'no refused call added a row to protected_tables');

SELECT * FROM finish();
ROLLBACK;
