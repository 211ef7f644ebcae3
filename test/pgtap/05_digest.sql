-- 05_digest.sql: signed digests of the chain head, and holding the ledger
-- to a digest kept elsewhere.
BEGIN;
CREATE EXTENSION ehrledger;
SELECT plan(61);

CREATE FUNCTION pg_temp.node_name() RETURNS text LANGUAGE sql AS $$
    SELECT COALESCE(NULLIF(current_setting('ehrledger.node_name'), ''),
                    'node-' || (SELECT system_identifier FROM pg_control_system()))
$$;
-- Flips the first hex digit of a string.
CREATE FUNCTION pg_temp.flip(s text) RETURNS text LANGUAGE sql AS
$$SELECT CASE WHEN left(s, 1) = '0' THEN '1' ELSE '0' END || substr(s, 2)$$;

CREATE TABLE public.obs (id int, value numeric);
SELECT ehrledger.protect('public.obs');

-- No block yet ---------------------------------------------------------------
SELECT throws_ok($$SELECT ehrledger.digest()$$, 'LD005',
    format('the ledger of node "%s" has no sealed block yet', pg_temp.node_name()),
    'digest() of a ledger without blocks');
INSERT INTO public.obs VALUES (1, 98.6);
SELECT throws_ok($$SELECT ehrledger.digest()$$, 'LD005',
    format('the ledger of node "%s" has no sealed block yet', pg_temp.node_name()),
    'digest() with rows inserted but not sealed');

-- A digest of block 1 -------------------------------------------------------------
INSERT INTO public.obs VALUES (2, 37.0);
SELECT is(ehrledger.seal(), 1::bigint, 'sealed block 1');
CREATE TEMP TABLE dg AS SELECT ehrledger.digest() AS d;
-- The kept digest with one field replaced.
CREATE FUNCTION pg_temp.with(k text, v jsonb) RETURNS jsonb LANGUAGE sql AS
$$SELECT d || jsonb_build_object(k, v) FROM dg$$;
CREATE FUNCTION pg_temp.without(k text) RETURNS jsonb LANGUAGE sql AS
$$SELECT d - k FROM dg$$;
CREATE FUNCTION pg_temp.check(digest jsonb) RETURNS boolean LANGUAGE sql AS
$$SELECT ok FROM ehrledger.verify(digest => digest)$$;

SELECT is(jsonb_typeof((SELECT d FROM dg)), 'object', 'digest() returns a JSON object');
SELECT is((SELECT array_agg(k ORDER BY k) FROM dg, jsonb_object_keys(d) AS k),
    ARRAY['block_hash', 'certificate', 'format', 'height', 'last_seq', 'origin', 'public_key', 'sealed_at', 'signature'],
    'the digest has exactly the documented keys (a node without peers finalizes its own blocks: it carries their certificate)');
SELECT is((SELECT d ->> 'format' FROM dg), 'ehrledger-digest-1', 'format is ehrledger-digest-1');
SELECT is((SELECT d ->> 'origin' FROM dg), pg_temp.node_name(), 'origin is this node''s name');
SELECT is((SELECT d ->> 'origin' FROM dg), (SELECT origin FROM ehrledger.blocks WHERE height = 1),
    'origin is the block''s origin');
SELECT is((SELECT jsonb_typeof(d -> 'height') FROM dg), 'number', 'height is a JSON number');
SELECT is((SELECT (d ->> 'height')::bigint FROM dg), (SELECT max(height) FROM ehrledger.blocks),
    'height is the newest block''s');
SELECT is((SELECT d ->> 'block_hash' FROM dg),
    (SELECT encode(block_hash, 'hex') FROM ehrledger.blocks WHERE height = 1),
    'block_hash is the newest block''s hash in hex');
SELECT is((SELECT jsonb_typeof(d -> 'last_seq') FROM dg), 'number', 'last_seq is a JSON number');
SELECT is((SELECT (d ->> 'last_seq')::bigint FROM dg),
    (SELECT last_seq FROM ehrledger.blocks WHERE height = 1), 'last_seq is the block''s last_seq');
SELECT ok((SELECT d ->> 'sealed_at' FROM dg) ~ '^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$',
    'sealed_at is an ISO 8601 UTC time with microseconds');
SELECT is((SELECT (d ->> 'sealed_at')::timestamptz FROM dg),
    (SELECT sealed_at FROM ehrledger.blocks WHERE height = 1), 'sealed_at is the block''s sealed_at');
SELECT is((SELECT d ->> 'public_key' FROM dg), encode(ehrledger.node_public_key(), 'hex'),
    'public_key is encode(node_public_key(), ''hex'')');
SELECT ok((SELECT d ->> 'signature' FROM dg) ~ '^[0-9a-f]{128}$', 'signature is 128 hex digits');

SET LOCAL TimeZone = 'Pacific/Chatham';
SET LOCAL DateStyle = 'SQL, DMY';
SELECT is(ehrledger.digest() ->> 'sealed_at', (SELECT d ->> 'sealed_at' FROM dg),
    'sealed_at does not depend on TimeZone or DateStyle');
RESET TimeZone;
RESET DateStyle;

SELECT row_eq($$SELECT ok, problems FROM ehrledger.verify(digest => (SELECT d FROM dg))$$,
    ROW(true, '[]'::jsonb)::record, 'verify(digest => d) is ok');
SELECT row_eq($$SELECT ok, rows_checked FROM ehrledger.verify('public.obs', (SELECT d FROM dg))$$,
    ROW(true, (SELECT count(*) FROM public.obs))::record, 'verify(tbl, digest) is ok');

-- Tampered digests: the signature ----------------------------------------------------
SELECT throws_ok($$SELECT pg_temp.check(pg_temp.with('height', to_jsonb((SELECT (d ->> 'height')::int + 1 FROM dg))))$$,
    'LD004', 'the digest''s signature does not verify', 'a changed height breaks the signature');
SELECT throws_ok($$SELECT pg_temp.check(pg_temp.with('last_seq', to_jsonb((SELECT (d ->> 'last_seq')::bigint + 1 FROM dg))))$$,
    'LD004', 'the digest''s signature does not verify', 'a changed last_seq breaks the signature');
SELECT throws_ok($$SELECT pg_temp.check(pg_temp.with('block_hash', to_jsonb(pg_temp.flip((SELECT d ->> 'block_hash' FROM dg)))))$$,
    'LD004', 'the digest''s signature does not verify', 'a changed block_hash breaks the signature');
SELECT throws_ok($$SELECT pg_temp.check(pg_temp.with('sealed_at', to_jsonb(
        to_char(((SELECT d ->> 'sealed_at' FROM dg)::timestamptz + interval '1 second') AT TIME ZONE 'UTC',
                'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))))$$,
    'LD004', 'the digest''s signature does not verify', 'a changed sealed_at breaks the signature');
SELECT throws_ok($$SELECT pg_temp.check(pg_temp.with('signature', to_jsonb(pg_temp.flip((SELECT d ->> 'signature' FROM dg)))))$$,
    'LD004', 'the digest''s signature does not verify', 'a flipped signature does not verify');
SELECT throws_ok($$SELECT pg_temp.check(pg_temp.with('signature', to_jsonb(repeat('0', 128))))$$,
    'LD004', 'the digest''s signature does not verify', 'an all-zero signature does not verify');

-- Tampered digests: the issuer -------------------------------------------------------
SELECT throws_ok($$SELECT pg_temp.check(pg_temp.with('origin', '"some-other-node"'))$$, 'LD003',
    format('the digest was issued by node "some-other-node", not by this node ("%s")', pg_temp.node_name()),
    'a digest of another origin is refused');
SELECT throws_ok($$SELECT pg_temp.check(pg_temp.with('public_key', to_jsonb(encode(sha256('another key'), 'hex'))))$$, 'LD003',
    format('the digest is signed with a key that node "%s" never used', pg_temp.node_name()),
    'a digest signed with an unknown key is refused');

-- Malformed digests --------------------------------------------------------------------
SELECT throws_ok($$SELECT pg_temp.check('[]')$$, '22023',
    'invalid ehrledger digest: expected a JSON object, found an array', 'a JSON array is not a digest');
SELECT throws_ok($$SELECT pg_temp.check('"x"')$$, '22023',
    'invalid ehrledger digest: expected a JSON object, found a string', 'a JSON string is not a digest');
SELECT throws_ok($$SELECT pg_temp.check('42')$$, '22023',
    'invalid ehrledger digest: expected a JSON object, found a number', 'a JSON number is not a digest');
SELECT throws_ok($$SELECT pg_temp.check('null')$$, '22023',
    'invalid ehrledger digest: expected a JSON object, found null', 'JSON null is not a digest');
SELECT throws_ok($$SELECT pg_temp.check('{}')$$, '22023',
    'invalid ehrledger digest: field "format" is missing', 'an empty object is not a digest');
SELECT throws_ok($$SELECT pg_temp.check(pg_temp.with('format', '"ehrledger-digest-2"'))$$, '22023',
    'invalid ehrledger digest: format is "ehrledger-digest-2", expected "ehrledger-digest-1"', 'wrong format string');
SELECT throws_ok($$SELECT pg_temp.check(pg_temp.without('height'))$$, '22023',
    'invalid ehrledger digest: field "height" is missing', 'missing height');
SELECT throws_ok($$SELECT pg_temp.check(pg_temp.without('signature'))$$, '22023',
    'invalid ehrledger digest: field "signature" is missing', 'missing signature');
SELECT throws_ok($$SELECT pg_temp.check(pg_temp.without('public_key'))$$, '22023',
    'invalid ehrledger digest: field "public_key" is missing', 'missing public_key');
SELECT throws_ok($$SELECT pg_temp.check(pg_temp.with('height', to_jsonb((SELECT d ->> 'height' FROM dg))))$$, '22023',
    'invalid ehrledger digest: field "height" must be an integer (digits only)', 'height as a string');
SELECT throws_ok($$SELECT pg_temp.check(pg_temp.with('origin', '5'))$$, '22023',
    'invalid ehrledger digest: field "origin" must be a string, not a number', 'origin as a number');
SELECT throws_ok($$SELECT pg_temp.check(pg_temp.with('origin', '""'))$$, '22023',
    'invalid ehrledger digest: field "origin" is empty', 'empty origin');
SELECT throws_ok($$SELECT pg_temp.check(pg_temp.with('block_hash', '[]'))$$, '22023',
    'invalid ehrledger digest: field "block_hash" must be a string of 64 hex digits, not an array', 'block_hash as an array');
SELECT throws_ok($$SELECT pg_temp.check(pg_temp.with('height', '0'))$$, '22023',
    'invalid ehrledger digest: field "height" is out of range (1 to 9223372036854775807)', 'height 0');
SELECT throws_ok($$SELECT pg_temp.check(pg_temp.with('height', '1.5'))$$, '22023',
    'invalid ehrledger digest: field "height" must be an integer (digits only)', 'fractional height');
SELECT throws_ok($$SELECT pg_temp.check(pg_temp.with('height', '99999999999999999999'))$$, '22023',
    'invalid ehrledger digest: field "height" is out of range (1 to 9223372036854775807)', 'height beyond bigint');
SELECT throws_ok($$SELECT pg_temp.check(pg_temp.with('last_seq', '-1'))$$, '22023',
    'invalid ehrledger digest: field "last_seq" is out of range (0 to 9223372036854775807)', 'negative last_seq');
SELECT throws_ok($$SELECT pg_temp.check(pg_temp.with('block_hash', to_jsonb(repeat('zz', 32))))$$, '22023',
    'invalid ehrledger digest: field "block_hash" is not hexadecimal', 'non-hex block_hash');
SELECT throws_ok($$SELECT pg_temp.check(pg_temp.with('block_hash', to_jsonb(left((SELECT d ->> 'block_hash' FROM dg), 62))))$$, '22023',
    'invalid ehrledger digest: field "block_hash" must be 64 hex digits, not 62', 'truncated block_hash');
SELECT throws_ok($$SELECT pg_temp.check(pg_temp.with('public_key', to_jsonb(left((SELECT d ->> 'public_key' FROM dg), 63))))$$, '22023',
    'invalid ehrledger digest: field "public_key" must be 64 hex digits, not 63', 'truncated public_key');
SELECT throws_ok($$SELECT pg_temp.check(pg_temp.with('signature', to_jsonb(left((SELECT d ->> 'signature' FROM dg), 126))))$$, '22023',
    'invalid ehrledger digest: field "signature" must be 128 hex digits, not 126', 'truncated signature');
SELECT throws_ok($$SELECT pg_temp.check(pg_temp.with('signature', to_jsonb('g' || substr((SELECT d ->> 'signature' FROM dg), 2))))$$, '22023',
    'invalid ehrledger digest: field "signature" is not hexadecimal', 'non-hex signature');
SELECT throws_ok($$SELECT pg_temp.check(pg_temp.with('sealed_at', '"2024-01-01 00:00:00"'))$$, '22023',
    'invalid ehrledger digest: field "sealed_at" must be a UTC time like 2026-01-31T12:00:00.000000Z',
    'sealed_at not in the digest''s time format');
SELECT throws_ok($$SELECT pg_temp.check(pg_temp.with('sealed_at', '"2024-13-01T00:00:00.000000Z"'))$$, '22023',
    'invalid ehrledger digest: field "sealed_at" must be a UTC time like 2026-01-31T12:00:00.000000Z',
    'sealed_at with month 13');

-- Later blocks ---------------------------------------------------------------------------
INSERT INTO public.obs VALUES (3, 36.9);
SELECT is(ehrledger.seal(), 2::bigint, 'sealed block 2');
SELECT row_eq($$SELECT ok, problems FROM ehrledger.verify(digest => (SELECT d FROM dg))$$,
    ROW(true, '[]'::jsonb)::record, 'the digest of block 1 still verifies after block 2');
CREATE TEMP TABLE dg2 AS SELECT ehrledger.digest() AS d;
SELECT is((SELECT (d ->> 'height')::bigint FROM dg2), 2::bigint, 'a new digest names block 2');
SELECT isnt((SELECT d ->> 'block_hash' FROM dg2), (SELECT d ->> 'block_hash' FROM dg),
    'the new digest names another block hash');
SELECT is((SELECT pg_temp.check(d) FROM dg2), true, 'the new digest verifies');

-- The chain rewritten behind the guard triggers' back
ALTER TABLE ehrledger.block DISABLE TRIGGER ALL;
DELETE FROM ehrledger.block WHERE height = 2;
SELECT ok((SELECT problems @> '[{"kind": "chain_truncated", "block": 2}]'
             FROM ehrledger.verify(digest => (SELECT d FROM dg2))),
    'a digest of a removed newest block reports chain_truncated');
SELECT is((SELECT pg_temp.check(d) FROM dg2), false, 'and verify() is not ok');
UPDATE ehrledger.block SET root = sha256(root) WHERE height = 1;
SELECT throws_ok($$SELECT ehrledger.digest()$$, 'XX001',
    format('the newest block (height 1) of node "%s" fails its own hash or signature check', pg_temp.node_name()),
    'digest() refuses to vouch for a block that fails its own check');
UPDATE ehrledger.block SET block_hash = sha256(block_hash) WHERE height = 1;
SELECT ok((SELECT problems @> '[{"kind": "digest_mismatch", "block": 1}]'
             FROM ehrledger.verify(digest => (SELECT d FROM dg))),
    'a digest of a rewritten block reports digest_mismatch');
ALTER TABLE ehrledger.block ENABLE ALWAYS TRIGGER ehrledger_append_only,
    ENABLE ALWAYS TRIGGER ehrledger_no_truncate;

SELECT * FROM finish();
ROLLBACK;
