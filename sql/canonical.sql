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

-- A test vector: these exact bytes and this hash, on any platform, under
-- any session settings.
INSERT INTO sample VALUES (1, 'MRN0001', '2026-01-31 12:00:00+00', '1970-05-17',
    81.5, ROW(5, 'mg'), ARRAY['8867-4', NULL], '\x00ff',
    '{"resourceType": "Observation", "valueQuantity": {"value": 72, "unit": "/min"}, "issued": true, "note": null}',
    NULL);
SELECT encode(enc('sample', 1), 'hex') AS encoding;
SELECT encode(ledger_hash, 'hex') AS leaf_hash FROM sample WHERE id = 1;
SELECT sha256('\x00'::bytea || enc('sample', 1)) = ledger_hash AS leaf_is_sha256_of_0x00_and_encoding
  FROM sample WHERE id = 1;

-- The same row written under other settings, into a table of the same
-- shape, encodes alike: the bytes after the 14-byte prefix of version, kind,
-- table id and ledger_seq are equal.
SET DateStyle = 'SQL, DMY';
SET TimeZone = 'Asia/Kolkata';
SET extra_float_digits = -3;
SET bytea_output = 'escape';
SET client_encoding = 'LATIN1';
INSERT INTO sample_b VALUES (1, 'MRN0001', '2026-01-31 17:30:00+05:30', '17/05/1970',
    81.5, ROW(5, 'mg'), ARRAY['8867-4', NULL], '\x00ff',
    '{"note": null, "issued": true, "valueQuantity": {"unit": "/min", "value": 72}, "resourceType": "Observation"}',
    NULL);
SELECT substring(enc('sample', 1) FROM 15) = substring(enc('sample_b', 1) FROM 15) AS same_content;
RESET ALL;

-- Length prefixes keep 'ab' || 'c' apart from 'a' || 'bc'.
CREATE TABLE pair (a text, b text);
SELECT ehrledger.protect('pair');
INSERT INTO pair VALUES ('ab', 'c'), ('a', 'bc');
SELECT count(DISTINCT substring(ehrledger.row_encoding('pair', ledger_seq) FROM 15)) AS distinct_encodings
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
SELECT substring(enc('sample', 3) FROM 15) = substring(enc('sample_b', 3) FROM 15) AS same_content;

-- Adding a nullable column leaves every existing hash valid.
SELECT ehrledger.seal();
ALTER TABLE sample ADD COLUMN reviewed_by text;
INSERT INTO sample (id, note, reviewed_by) VALUES (5, 'late entry', 'dr-who');
SELECT ok, rows_checked, problems FROM ehrledger.verify('sample');

-- row_encoding() bad input.
SELECT ehrledger.row_encoding('sample', 999) IS NULL AS no_such_row;
SELECT ehrledger.row_encoding('pg_class', 1);
SELECT ehrledger.row_encoding(NULL, 1) IS NULL AS strict;

DROP EXTENSION ehrledger CASCADE;
DROP TABLE sample, sample_b, pair;
DROP FUNCTION enc(regclass, int);
DROP DOMAIN mrn;
DROP TYPE dose;
DROP TYPE unit;
