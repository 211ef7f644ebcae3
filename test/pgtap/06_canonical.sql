-- 06_canonical.sql: a row's hash depends on its values only, not on session
-- settings, TOAST, or the table's later nullable columns; values that differ
-- encode differently.
BEGIN;
CREATE EXTENSION ehrledger;
SELECT plan(56);

-- Rows of tbl whose ledger_hash is not sha256(0x00 || row_encoding(tbl, seq)).
CREATE FUNCTION pg_temp.bad_hashes(tbl regclass) RETURNS SETOF bigint LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY EXECUTE format(
        'SELECT ledger_seq FROM %s
          WHERE ledger_hash IS DISTINCT FROM
                sha256(''\x00''::bytea || ehrledger.row_encoding(%L, ledger_seq))', tbl, tbl);
END $$;
-- The encoding of a row without its 30-byte header (version 2, kind, table
-- id, ledger_seq, the row's own salt), so that rows can be compared by
-- content alone.
CREATE FUNCTION pg_temp.body(tbl regclass, seq bigint) RETURNS bytea LANGUAGE sql AS
$$SELECT substr(ehrledger.row_encoding(tbl, seq), 31)$$;

-- Session settings ---------------------------------------------------------------
CREATE TABLE public.vitals (
    id int, taken_at timestamptz, born date, local_ts timestamp, at_time timetz,
    temp float8, ratio real, dose numeric, fee money, span interval,
    raw bytea, note text, extra jsonb, doc json
);
SELECT ehrledger.protect('public.vitals');
CREATE FUNCTION pg_temp.add_vitals(i int) RETURNS void LANGUAGE sql AS $$
    INSERT INTO public.vitals VALUES (i, '2024-02-29 23:59:59.123456+05:30', '2024-02-29',
        '2024-02-29 12:00:00.5', '12:34:56.789+05:30',
        0.1, 1.1, 12345.678900, 12.34, '1 day 02:03:04.5',
        '\x00ff10', 'caf' || chr(233) || ' ' || chr(26085),
        ('{"t": 0.1, "big": 1e30, "s": "caf' || chr(233) || '", "a": [1, null, true]}')::jsonb,
        '{"b": 1,  "a": 2}')
$$;
SELECT pg_temp.add_vitals(1);
CREATE TEMP TABLE kept AS SELECT ledger_seq, ledger_hash FROM public.vitals WHERE id = 1;

SELECT is_empty($$SELECT pg_temp.bad_hashes('public.vitals')$$,
    'with default settings the hash is sha256(0x00 || row_encoding)');

SET LOCAL DateStyle = 'SQL, DMY';
SELECT is_empty($$SELECT pg_temp.bad_hashes('public.vitals')$$, 'DateStyle SQL, DMY');
SET LOCAL DateStyle = 'German';
SELECT is_empty($$SELECT pg_temp.bad_hashes('public.vitals')$$, 'DateStyle German');
SET LOCAL DateStyle = 'Postgres, MDY';
SELECT is_empty($$SELECT pg_temp.bad_hashes('public.vitals')$$, 'DateStyle Postgres, MDY');
RESET DateStyle;

SET LOCAL TimeZone = 'Asia/Kathmandu';
SELECT is_empty($$SELECT pg_temp.bad_hashes('public.vitals')$$, 'TimeZone Asia/Kathmandu');
SET LOCAL TimeZone = 'America/St_Johns';
SELECT is_empty($$SELECT pg_temp.bad_hashes('public.vitals')$$, 'TimeZone America/St_Johns');
RESET TimeZone;

SET LOCAL extra_float_digits = -15;
SELECT is_empty($$SELECT pg_temp.bad_hashes('public.vitals')$$, 'extra_float_digits -15');
SET LOCAL extra_float_digits = 0;
SELECT is_empty($$SELECT pg_temp.bad_hashes('public.vitals')$$, 'extra_float_digits 0');
SET LOCAL extra_float_digits = 3;
SELECT is_empty($$SELECT pg_temp.bad_hashes('public.vitals')$$, 'extra_float_digits 3');
RESET extra_float_digits;

SET LOCAL bytea_output = 'escape';
SELECT is_empty($$SELECT pg_temp.bad_hashes('public.vitals')$$, 'bytea_output escape');
RESET bytea_output;

SET LOCAL lc_monetary = 'C';
SELECT is_empty($$SELECT pg_temp.bad_hashes('public.vitals')$$, 'lc_monetary C');
RESET lc_monetary;

SET LOCAL IntervalStyle = 'sql_standard';
SELECT is_empty($$SELECT pg_temp.bad_hashes('public.vitals')$$, 'IntervalStyle sql_standard');
SET LOCAL IntervalStyle = 'iso_8601';
SELECT is_empty($$SELECT pg_temp.bad_hashes('public.vitals')$$, 'IntervalStyle iso_8601');
RESET IntervalStyle;

SET LOCAL client_encoding = 'LATIN1';
SELECT is_empty($$SELECT pg_temp.bad_hashes('public.vitals')$$, 'client_encoding LATIN1');
RESET client_encoding;

-- All of them at once, and a second row with the same values inserted so
SET LOCAL DateStyle = 'German';
SET LOCAL TimeZone = 'Pacific/Chatham';
SET LOCAL extra_float_digits = -15;
SET LOCAL bytea_output = 'escape';
SET LOCAL lc_monetary = 'C';
SET LOCAL IntervalStyle = 'postgres_verbose';
SELECT is_empty($$SELECT pg_temp.bad_hashes('public.vitals')$$, 'all settings changed at once');
SELECT pg_temp.add_vitals(1);
SELECT is(
    (SELECT pg_temp.body('public.vitals', max(ledger_seq)) FROM public.vitals),
    (SELECT pg_temp.body('public.vitals', ledger_seq) FROM kept),
    'the same values inserted under other settings encode to the same bytes');
SELECT row_eq($$SELECT ok, problems FROM ehrledger.verify('public.vitals')$$,
    ROW(true, '[]'::jsonb)::record, 'verify() under other settings is ok');
RESET DateStyle;
RESET TimeZone;
RESET extra_float_digits;
RESET bytea_output;
RESET lc_monetary;
RESET IntervalStyle;
SELECT is((SELECT ledger_hash FROM public.vitals WHERE ledger_seq = (SELECT ledger_seq FROM kept)),
    (SELECT ledger_hash FROM kept), 'the first row''s stored hash is unchanged');
SELECT is(ehrledger.seal(), 1::bigint, 'sealed the rows');
SELECT row_eq($$SELECT ok, problems FROM ehrledger.verify('public.vitals')$$,
    ROW(true, '[]'::jsonb)::record, 'verify() after sealing is ok');

-- Types whose binary send functions emit text: the client encoding must not leak in
CREATE TABLE public.search_terms (id int, tsv tsvector, query tsquery, path jsonpath);
SELECT ehrledger.protect('public.search_terms');
INSERT INTO public.search_terms VALUES
    (1, to_tsvector('simple', 'caf' || chr(233)), ('caf' || chr(233))::tsquery,
     ('$."caf' || chr(233) || '"')::jsonpath);
SELECT is_empty($$SELECT pg_temp.bad_hashes('public.search_terms')$$,
    'tsvector, tsquery and jsonpath hash consistently under the default client encoding');
-- tsvector, tsquery and jsonpath are encoded with their send functions, which
-- convert text to the client encoding (pq_sendtext/pq_sendstring); an earlier
-- version let the hash change with client_encoding.
SET LOCAL client_encoding = 'LATIN1';
SELECT is_empty($$SELECT pg_temp.bad_hashes('public.search_terms')$$,
    'tsvector, tsquery and jsonpath hash the same under client_encoding LATIN1');
-- Same cause: a value the client encoding cannot represent made the insert
-- trigger fail.
SELECT lives_ok($$INSERT INTO public.search_terms (id, tsv) VALUES (2, to_tsvector('simple', chr(26085)))$$,
    'a tsvector the client encoding cannot represent can still be inserted');
RESET client_encoding;

-- TOAST and compression ------------------------------------------------------
CREATE TABLE public.big (id int, doc jsonb, blob text, bin bytea);
ALTER TABLE public.big ALTER COLUMN blob SET STORAGE EXTERNAL;
SELECT ehrledger.protect('public.big');
INSERT INTO public.big
    SELECT 1,
           (SELECT jsonb_build_object('items', jsonb_agg(jsonb_build_object('i', g, 'v', md5(g::text)))) FROM generate_series(1, 3000) AS g),
           (SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 500)),
           (SELECT string_agg(sha256(int4send(g)), ''::bytea) FROM generate_series(1, 1000) AS g);
SELECT cmp_ok((SELECT octet_length(doc::text) FROM public.big), '>', 8192, 'the jsonb value is larger than 8 kB');
SELECT isnt((SELECT pg_column_compression(doc) FROM public.big), NULL, 'the jsonb value is stored compressed');
SELECT cmp_ok((SELECT pg_column_size(doc) FROM public.big), '<', (SELECT octet_length(doc::text) FROM public.big),
    'the stored jsonb is smaller than its text');
SELECT is((SELECT pg_column_compression(blob) FROM public.big), NULL, 'the large text is stored uncompressed');
SELECT cmp_ok((SELECT pg_column_size(blob) FROM public.big), '>', 8192, 'the large text is out of line, > 8 kB');
SELECT is_empty($$SELECT pg_temp.bad_hashes('public.big')$$, 'TOASTed values hash as they did before storage');
SELECT is(ehrledger.seal(), 2::bigint, 'sealed the large row');
SELECT row_eq($$SELECT ok, problems FROM ehrledger.verify('public.big')$$,
    ROW(true, '[]'::jsonb)::record, 'a TOASTed, compressed row verifies after sealing');

-- A nullable column added later -------------------------------------------------
CREATE TABLE public.visits (id int, reason text);
SELECT ehrledger.protect('public.visits');
INSERT INTO public.visits VALUES (1, 'checkup'), (2, NULL);
SELECT is(ehrledger.seal(), 3::bigint, 'sealed the visits');
CREATE TEMP TABLE visits_before AS SELECT ledger_seq, ehrledger.row_encoding('public.visits', ledger_seq) AS enc FROM public.visits;
ALTER TABLE public.visits ADD COLUMN followup date;
SELECT row_eq($$SELECT ok, problems FROM ehrledger.verify('public.visits')$$,
    ROW(true, '[]'::jsonb)::record, 'ADD COLUMN (nullable, no default) leaves sealed rows verifying');
SELECT is_empty($$SELECT ledger_seq FROM visits_before
                   WHERE enc IS DISTINCT FROM ehrledger.row_encoding('public.visits', ledger_seq)$$,
    'old rows encode exactly as before the new column');
INSERT INTO public.visits (id, reason, followup) VALUES (3, 'follow-up', '2024-03-01');
SELECT is_empty($$SELECT pg_temp.bad_hashes('public.visits')$$, 'a row using the new column hashes correctly');
SELECT is(ehrledger.seal(), 4::bigint, 'sealed the new row');
SELECT row_eq($$SELECT ok, problems FROM ehrledger.verify('public.visits')$$,
    ROW(true, '[]'::jsonb)::record, 'verify() is ok with old and new rows');

-- Value boundaries ------------------------------------------------------------
CREATE TABLE public.pairs (a text, b text);
SELECT ehrledger.protect('public.pairs');
-- One statement: ledger_seq follows the order of the VALUES list.
INSERT INTO public.pairs VALUES ('ab', 'c'), ('a', 'bc'), ('ab', 'c'), ('', NULL), (NULL, ''), (NULL, NULL);
CREATE TEMP TABLE pair_seq AS SELECT row_number() OVER (ORDER BY ledger_seq) AS n, ledger_seq FROM public.pairs;
CREATE FUNCTION pg_temp.pair_body(i int) RETURNS bytea LANGUAGE sql AS
$$SELECT pg_temp.body('public.pairs', ledger_seq) FROM pair_seq WHERE n = i$$;
SELECT is(pg_temp.pair_body(1), pg_temp.pair_body(3), 'equal values encode equally');
SELECT isnt(pg_temp.pair_body(1), pg_temp.pair_body(2), '(ab, c) and (a, bc) encode differently');
SELECT isnt((SELECT ledger_hash FROM public.pairs WHERE a = 'ab'  LIMIT 1),
            (SELECT ledger_hash FROM public.pairs WHERE a = 'a'),
    '(ab, c) and (a, bc) hash differently');
SELECT isnt(pg_temp.pair_body(4), pg_temp.pair_body(5), '('''', NULL) and (NULL, '''') encode differently');
SELECT isnt(pg_temp.pair_body(4), pg_temp.pair_body(6), 'an empty string is not NULL');
SELECT is_empty($$SELECT pg_temp.bad_hashes('public.pairs')$$, 'all pairs hash correctly');

-- Arrays, enums, composites, domains ------------------------------------------------
CREATE TYPE public.mood AS ENUM ('calm', 'anxious', 'agitated');
CREATE DOMAIN public.zipcode AS text CHECK (VALUE ~ '^\d{5}$');
CREATE DOMAIN public.dosage AS numeric CHECK (VALUE > 0);
CREATE TYPE public.address AS (street text, zip public.zipcode, seen date);
CREATE TABLE public.rich (
    id int, tags text[], grid int[], moods public.mood[], mood public.mood,
    home public.address, past public.address[], amount public.dosage, zip public.zipcode,
    stay tstzrange, pos point, uid uuid
);
ALTER TABLE public.rich DROP COLUMN uid;
SELECT ehrledger.protect('public.rich');
INSERT INTO public.rich VALUES
    (1, '{a,"b c",NULL}', '{{1,2},{3,4}}', '{calm,agitated}', 'anxious',
     ROW('1 Main St', '12345', '2020-01-01'), ARRAY[ROW('2 Elm St', '54321', NULL)::public.address, NULL],
     2.5, '99999', '[2024-01-01 00:00+00, 2024-01-02 00:00+00)', '(1.5,2.5)'),
    (2, '{}', '[0:1]={1,2}', NULL, 'calm', ROW(NULL, NULL, NULL), '{}', 0.001, NULL, 'empty', NULL),
    (2, '{}', '{1,2}', NULL, 'calm', ROW(NULL, NULL, NULL), '{}', 0.001, NULL, 'empty', NULL),
    (2, '{}', '{1,2}', NULL, 'calm', ROW(NULL, NULL, NULL), '{}', 0.001, NULL, 'empty', NULL);
SELECT is_empty($$SELECT pg_temp.bad_hashes('public.rich')$$,
    'arrays, enums, composites, domains and ranges hash correctly');
SELECT is(
    (SELECT pg_temp.body('public.rich', ledger_seq) FROM public.rich WHERE id = 2 ORDER BY ledger_seq OFFSET 1 LIMIT 1),
    (SELECT pg_temp.body('public.rich', ledger_seq) FROM public.rich WHERE id = 2 ORDER BY ledger_seq OFFSET 2 LIMIT 1),
    'equal composite, array and range values encode equally');
SELECT isnt(
    (SELECT pg_temp.body('public.rich', ledger_seq) FROM public.rich WHERE id = 2 ORDER BY ledger_seq LIMIT 1),
    (SELECT pg_temp.body('public.rich', ledger_seq) FROM public.rich WHERE id = 2 ORDER BY ledger_seq OFFSET 1 LIMIT 1),
    'arrays with other lower bounds encode differently');
SELECT is(ehrledger.seal(), 5::bigint, 'sealed the rich rows');
SELECT row_eq($$SELECT ok, problems FROM ehrledger.verify('public.rich')$$,
    ROW(true, '[]'::jsonb)::record, 'rows with arrays, enums, composites and domains verify');
ALTER TYPE public.mood ADD VALUE 'euphoric' BEFORE 'calm';
SELECT row_eq($$SELECT ok, problems FROM ehrledger.verify('public.rich')$$,
    ROW(true, '[]'::jsonb)::record, 'adding an enum label does not change existing hashes');

-- Generated columns are derived, and left out of the hash
CREATE TABLE public.derived (id int, kg numeric, lb numeric GENERATED ALWAYS AS (kg * 2.20462) STORED);
SELECT ehrledger.protect('public.derived');
INSERT INTO public.derived (id, kg) VALUES (1, 70);
SELECT is_empty($$SELECT pg_temp.bad_hashes('public.derived')$$, 'a table with a generated column hashes correctly');
SELECT row_eq($$SELECT ok, problems FROM ehrledger.verify('public.derived')$$,
    ROW(true, '[]'::jsonb)::record, 'a table with a generated column verifies');

-- Types that cannot be hashed -----------------------------------------------------------
CREATE TABLE public.acl_tbl (id int, acl aclitem);
SELECT throws_ok($$SELECT ehrledger.protect('public.acl_tbl')$$, '0A000',
    'type aclitem has no binary send function, so its values cannot be hashed',
    'a column of a type without a send function is refused');
SELECT hasnt_column('public', 'acl_tbl', 'ledger_seq', 'the refused table is unchanged');
CREATE TABLE public.acl_arr (id int, acls aclitem[]);
SELECT throws_ok($$SELECT ehrledger.protect('public.acl_arr')$$, '0A000',
    'type aclitem has no binary send function, so its values cannot be hashed',
    'an array of such a type is refused');
CREATE TYPE public.with_acl AS (who text, acl aclitem);
CREATE TABLE public.acl_comp (id int, w public.with_acl);
SELECT throws_ok($$SELECT ehrledger.protect('public.acl_comp')$$, '0A000',
    'type aclitem has no binary send function, so its values cannot be hashed',
    'a composite holding such a type is refused');

SELECT row_eq($$SELECT ok, problems FROM ehrledger.verify()$$,
    ROW(true, '[]'::jsonb)::record, 'in the end the whole ledger verifies');

SELECT * FROM finish();
ROLLBACK;
