-- The canonical row encoding: what a row's hash covers (docs/format.md).
CREATE EXTENSION ehrledger;
CREATE TYPE unit AS ENUM ('mg', 'mL');
CREATE TYPE dose AS (amount numeric, unit unit);
CREATE DOMAIN mrn AS text CHECK (VALUE LIKE 'MRN%');
CREATE TABLE sample (
    id        int PRIMARY KEY,
    patient   mrn,
    taken_at  timestamptz,
    born      date,
    weight    float8,
    dose      dose,
    codes     text[],
    photo     bytea,
    resource  jsonb,
    note      text
);
CREATE TABLE sample_b (LIKE sample INCLUDING ALL);
SELECT ehrledger.protect('sample');
SELECT ehrledger.protect('sample_b');

-- A row's encoding, looked up by id.
CREATE FUNCTION enc(tbl regclass, row_id int) RETURNS bytea LANGUAGE plpgsql AS $$
DECLARE s bigint;
BEGIN
    EXECUTE format('SELECT ledger_seq FROM %s WHERE id = $1', tbl) INTO s USING row_id;
    RETURN ehrledger.row_encoding(tbl, s);
END $$;

-- The test vectors (docs/format.md §6): these exact bytes and these hashes,
-- on any platform, under any session settings.  The insert trigger gives a
-- new row a fresh salt and number, except to a superuser restoring a dump,
-- whose rows keep theirs when they hash to the ledger_hash they carry: so
-- these rows keep the vectors' numbers and salts only if the encoder makes
-- exactly the vectors' bytes.
--
-- Format 1: a row without a salt, as every row written before 0.4 (or
-- restored from a dump of one) is encoded; table id 1, ledger_seq 1.
INSERT INTO sample (id, patient, taken_at, born, weight, dose, codes, photo, resource, note,
                    ledger_seq, ledger_hash)
VALUES (1, 'MRN0001', '2026-01-31 12:00:00+00', '1970-05-17',
    81.5, ROW(5, 'mg'), ARRAY['8867-4', NULL], '\x00ff',
    '{"resourceType": "Observation", "valueQuantity": {"value": 72, "unit": "/min"}, "issued": true, "note": null}',
    NULL, 1, '\x65b1c8e065d207990c99c0fd802c71c660ba66527e9fe15ea121acfbe188a76c');
SELECT encode(enc('sample', 1), 'hex') AS encoding;
SELECT encode(ledger_hash, 'hex') AS leaf_hash, ledger_seq, ledger_salt FROM sample WHERE id = 1;
SELECT sha256('\x00'::bytea || enc('sample', 1)) = ledger_hash AS leaf_is_sha256_of_0x00_and_encoding
  FROM sample WHERE id = 1;
-- Format 2: the same row with id 2, ledger_seq 2 and the salt 00 01 .. 0f.
INSERT INTO sample (id, patient, taken_at, born, weight, dose, codes, photo, resource, note,
                    ledger_seq, ledger_salt, ledger_hash)
VALUES (2, 'MRN0001', '2026-01-31 12:00:00+00', '1970-05-17',
    81.5, ROW(5, 'mg'), ARRAY['8867-4', NULL], '\x00ff',
    '{"resourceType": "Observation", "valueQuantity": {"value": 72, "unit": "/min"}, "issued": true, "note": null}',
    NULL, 2, '\x000102030405060708090a0b0c0d0e0f',
    '\x4ff361f25c35230f4707b03ecfa14cb9cb55d4a8d37739b38e437edc79df2ae6');
SELECT encode(enc('sample', 2), 'hex') AS encoding;
SELECT encode(ledger_hash, 'hex') AS leaf_hash, ledger_seq, ledger_salt FROM sample WHERE id = 2;
SELECT sha256('\x00'::bytea || enc('sample', 2)) = ledger_hash AS leaf_is_sha256_of_0x00_and_encoding
  FROM sample WHERE id = 2;
-- Numbers handed out from now on follow the vectors'.
SELECT setval('ehrledger.ledger_seq', 2) > 0 AS numbered_after_the_vectors;

-- Every other row gets a fresh 16-byte salt, whatever the writer gave
-- (these are the table owner's): format 2, the salt at bytes 14-29.
INSERT INTO sample (id, note, ledger_salt) VALUES (10, 'same', '\x00'), (11, 'same', '\x00');
SELECT id, ledger_seq > 2 AS numbered, octet_length(ledger_salt) AS salt_bytes,
       ledger_salt <> '\x00' AS salt_replaced,
       get_byte(enc('sample', id), 0) AS version,
       substring(enc('sample', id) FROM 15 FOR 16) = ledger_salt AS encoding_has_salt
  FROM sample WHERE id IN (10, 11) ORDER BY id;
-- Rows of equal content (but for id) under different salts: nothing in
-- their leaves relates them.
SELECT count(DISTINCT ledger_salt) AS salts, count(DISTINCT ledger_hash) AS leaves
  FROM sample WHERE id IN (10, 11);

-- The same row written under other settings, into a table of the same
-- shape, encodes alike: the bytes after the 30-byte prefix of version,
-- kind, table id, ledger_seq and salt are equal.
SET DateStyle = 'SQL, DMY';
SET TimeZone = 'Asia/Kolkata';
SET extra_float_digits = -3;
SET bytea_output = 'escape';
SET client_encoding = 'LATIN1';
INSERT INTO sample_b VALUES (2, 'MRN0001', '2026-01-31 17:30:00+05:30', '17/05/1970',
    81.5, ROW(5, 'mg'), ARRAY['8867-4', NULL], '\x00ff',
    '{"note": null, "issued": true, "valueQuantity": {"unit": "/min", "value": 72}, "resourceType": "Observation"}',
    NULL);
SELECT substring(enc('sample', 2) FROM 31) = substring(enc('sample_b', 2) FROM 31) AS same_content;
RESET ALL;

-- Length prefixes keep 'ab' || 'c' apart from 'a' || 'bc'.
CREATE TABLE pair (a text, b text);
SELECT ehrledger.protect('pair');
INSERT INTO pair VALUES ('ab', 'c'), ('a', 'bc');
SELECT count(DISTINCT substring(ehrledger.row_encoding('pair', ledger_seq) FROM 31)) AS distinct_encodings
  FROM pair;

-- TOAST and compression do not change a hash.
INSERT INTO sample (id, resource)
SELECT 3, jsonb_build_object('text', repeat('hemoglobin within normal range; ', 2000));
ALTER TABLE sample_b ALTER COLUMN resource SET STORAGE EXTERNAL;
INSERT INTO sample_b (id, resource)
SELECT 3, jsonb_build_object('text', repeat('hemoglobin within normal range; ', 2000));
SELECT 'sample' AS tbl, pg_column_size(resource) < 10000 AS compressed FROM sample WHERE id = 3
UNION ALL
SELECT 'sample_b', pg_column_size(resource) < 10000 FROM sample_b WHERE id = 3;
SELECT substring(enc('sample', 3) FROM 31) = substring(enc('sample_b', 3) FROM 31) AS same_content;

-- Adding a nullable column leaves every existing hash valid.
SELECT ehrledger.seal();
ALTER TABLE sample ADD COLUMN reviewed_by text;
INSERT INTO sample (id, note, reviewed_by) VALUES (5, 'late entry', 'dr-who');
SELECT ok, rows_checked, problems FROM ehrledger.verify('sample');

-- Strings of every length are copied whole (the encoder copies short
-- pieces its own way): each text value, jsonb key and jsonb string of 0 to
-- 43 bytes is in its row's encoding, its length in front.
CREATE TABLE lens (id int PRIMARY KEY, note text, doc jsonb);
SELECT ehrledger.protect('lens');
INSERT INTO lens (id, note, doc)
SELECT n, s, jsonb_build_object(s, s || '-' || n)
  FROM generate_series(0, 40) n,
       LATERAL (SELECT left(md5(n::text) || md5(n::text || 'x'), n) AS s) x;
SELECT count(*) AS rows,
       count(*) FILTER (
           WHERE position(int4send(octet_length(note)) || convert_to(note, 'UTF8') IN e) > 0
             AND position('\x03'::bytea || int4send(octet_length(note)) || convert_to(note, 'UTF8')
                          IN e) > 0
             AND position('\x03'::bytea || int4send(octet_length(note || '-' || id))
                          || convert_to(note || '-' || id, 'UTF8') IN e) > 0) AS found
  FROM (SELECT *, ehrledger.row_encoding('lens', ledger_seq) AS e FROM lens) r;

-- A numeric, in a column or in jsonb, is encoded as numeric_send()'s bytes
-- (the encoder reads them off the stored layout): short and long stored
-- headers, negative weights and scales, zero, NaN and the infinities.
CREATE TABLE nums (id int PRIMARY KEY, n numeric, doc jsonb);
SELECT ehrledger.protect('nums');
INSERT INTO nums (id, n, doc)
SELECT row_number() OVER (), v, CASE WHEN v IN ('NaN', 'Infinity', '-Infinity') THEN NULL
                                     ELSE jsonb_build_array(v, -v) END
  FROM unnest(ARRAY[0, -0.0, 1, -1, 0.5, -0.0001, 9999, 10000, 72, 98.6, -273.15,
                    12345678901234567890.123456789, 1e-130, -1e-20, 1e300, -1e131,
                    1.000000000000000000000000000000000000000000000000000000000000000001,
                    'NaN', 'Infinity', '-Infinity']::numeric[]) v;
SELECT count(*) AS rows,
       count(*) FILTER (
           WHERE position(int4send(length(numeric_send(n))) || numeric_send(n) IN e) > 0
             AND (doc IS NULL
                  OR position('\x04'::bytea || int4send(length(numeric_send(n))) || numeric_send(n)
                              || '\x04'::bytea || int4send(length(numeric_send(-n))) || numeric_send(-n)
                              IN e) > 0)) AS found
  FROM (SELECT *, ehrledger.row_encoding('nums', ledger_seq) AS e FROM nums) r;

-- Text is hashed as UTF-8 whatever the database encoding: in a LATIN1
-- database a text column and jsonb keys and strings encode to the same
-- bytes as in this one (after the prefix: format, table id, number, salt),
-- as long as jsonb sorts the keys alike in both (docs/format.md section 3).
CREATE TABLE latin (id int PRIMARY KEY, note text, doc jsonb);
SELECT ehrledger.protect('latin');
INSERT INTO latin VALUES (1, 'café', '{"clé": "crème brûlée", "n": [1.5, "à"]}');
SELECT encode(substring(ehrledger.row_encoding('latin', ledger_seq) FROM 31), 'hex') AS body
  FROM latin;
CREATE DATABASE canonical_latin1 ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0;
\c canonical_latin1
SET client_encoding = 'UTF8';
SET client_min_messages = warning;
CREATE EXTENSION ehrledger;
CREATE TABLE latin (id int PRIMARY KEY, note text, doc jsonb);
SELECT ehrledger.protect('latin');
INSERT INTO latin VALUES (1, 'café', '{"clé": "crème brûlée", "n": [1.5, "à"]}');
SELECT encode(substring(ehrledger.row_encoding('latin', ledger_seq) FROM 31), 'hex') AS body
  FROM latin;
SELECT ok, rows_checked FROM ehrledger.verify('latin');
\c contrib_regression
DROP DATABASE canonical_latin1;

-- row_encoding() bad input.
SELECT ehrledger.row_encoding('sample', 999) IS NULL AS no_such_row;
SELECT ehrledger.row_encoding('pg_class', 1);
SELECT ehrledger.row_encoding(NULL, 1) IS NULL AS strict;

DROP EXTENSION ehrledger CASCADE;
DROP TABLE sample, sample_b, pair, lens, nums, latin;
DROP FUNCTION enc(regclass, int);
DROP DOMAIN mrn;
DROP TYPE dose;
DROP TYPE unit;
