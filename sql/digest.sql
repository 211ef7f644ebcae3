-- Digests: signed statements of the chain an auditor keeps elsewhere.
CREATE EXTENSION ehrledger;

-- No block, no digest.
SELECT ehrledger.digest();
\echo :LAST_ERROR_SQLSTATE

CREATE TABLE observation (id bigserial PRIMARY KEY, resource jsonb NOT NULL);
SELECT ehrledger.protect('observation');
INSERT INTO observation (resource) SELECT jsonb_build_object('n', g) FROM generate_series(1, 10) g;
SELECT ehrledger.seal();
CREATE TABLE kept AS SELECT ehrledger.digest() AS d;

-- What a digest holds.
SELECT jsonb_object_keys(d) AS field FROM kept ORDER BY 1;
SELECT d->>'format' AS format, d->>'origin' AS origin, d->'height' AS height,
       d->'last_seq' AS last_seq, length(d->>'block_hash') AS hash_hex,
       length(d->>'signature') AS sig_hex,
       d->>'public_key' = encode(ehrledger.node_public_key(), 'hex') AS own_key,
       d->>'block_hash' = (SELECT encode(block_hash, 'hex') FROM ehrledger.blocks WHERE height = 1) AS names_block
  FROM kept;

-- A digest verifies now, and still after the chain grows.
SELECT ok, problems FROM ehrledger.verify(digest => (SELECT d FROM kept));
INSERT INTO observation (resource) VALUES ('{"n": 11}');
SELECT ehrledger.seal();
SELECT ok, blocks_checked, problems FROM ehrledger.verify(digest => (SELECT d FROM kept));
SELECT ok FROM ehrledger.verify('observation', (SELECT d FROM kept));

-- Altered digests are refused: the signature covers every field.
SELECT * FROM ehrledger.verify(digest => (SELECT jsonb_set(d, '{height}', '2') FROM kept));
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM ehrledger.verify(digest => (SELECT jsonb_set(d, '{last_seq}', '9') FROM kept));
SELECT * FROM ehrledger.verify(digest => (SELECT jsonb_set(d, '{sealed_at}', '"2020-01-01T00:00:00.000000Z"') FROM kept));
SELECT * FROM ehrledger.verify(digest => (SELECT jsonb_set(d, '{signature}',
    to_jsonb(overlay(d->>'signature' PLACING '00' FROM 1))) FROM kept));

-- A digest of another node, or signed with another key.
SELECT * FROM ehrledger.verify(digest => (SELECT jsonb_set(d, '{origin}', '"st-elsewhere"') FROM kept));
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM ehrledger.verify(digest => (SELECT jsonb_set(d, '{public_key}',
    to_jsonb(repeat('ab', 32))) FROM kept));

-- Garbage, truncated and malformed digests.
SELECT * FROM ehrledger.verify(digest => '[]');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM ehrledger.verify(digest => '"digest"');
SELECT * FROM ehrledger.verify(digest => '{}');
SELECT * FROM ehrledger.verify(digest => (SELECT d - 'signature' FROM kept));
SELECT * FROM ehrledger.verify(digest => (SELECT jsonb_set(d, '{format}', '"v2"') FROM kept));
SELECT * FROM ehrledger.verify(digest => (SELECT jsonb_set(d, '{height}', '"1"') FROM kept));
SELECT * FROM ehrledger.verify(digest => (SELECT jsonb_set(d, '{height}', '1.5') FROM kept));
SELECT * FROM ehrledger.verify(digest => (SELECT jsonb_set(d, '{height}', '0') FROM kept));
SELECT * FROM ehrledger.verify(digest => (SELECT jsonb_set(d, '{block_hash}', '"abc"') FROM kept));
SELECT * FROM ehrledger.verify(digest => (SELECT jsonb_set(d, '{block_hash}',
    to_jsonb(left(d->>'block_hash', 62))) FROM kept));
SELECT * FROM ehrledger.verify(digest => (SELECT jsonb_set(d, '{block_hash}',
    to_jsonb(repeat('zz', 32))) FROM kept));
SELECT * FROM ehrledger.verify(digest => (SELECT jsonb_set(d, '{sealed_at}', '"yesterday"') FROM kept));
SELECT * FROM ehrledger.verify(digest => (SELECT jsonb_set(d, '{origin}', '""') FROM kept));
SELECT * FROM ehrledger.verify(digest => (SELECT jsonb_set(d, '{origin}', to_jsonb(repeat('x', 300))) FROM kept));
SELECT * FROM ehrledger.verify(digest => 'null');

-- digest() refuses to vouch for a head block that was rewritten.
ALTER TABLE ehrledger.block DISABLE TRIGGER ALL;
UPDATE ehrledger.block SET row_count = row_count + 1
 WHERE height = (SELECT max(height) FROM ehrledger.block);
SELECT ehrledger.digest();
\echo :LAST_ERROR_SQLSTATE

DROP EXTENSION ehrledger CASCADE;
DROP TABLE observation, kept;
