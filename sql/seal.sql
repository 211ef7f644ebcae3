-- Sealing committed rows into signed, hash-chained blocks.
CREATE EXTENSION ehrledger;

-- Nothing to seal yet: NULL, and no block.
SELECT ehrledger.seal();
SELECT count(*) FROM ehrledger.blocks;

CREATE TABLE observation (id bigserial PRIMARY KEY, resource jsonb NOT NULL);
CREATE TABLE encounter (id bigserial PRIMARY KEY, resource jsonb NOT NULL);
SELECT ehrledger.protect('observation');
SELECT ehrledger.protect('encounter');
SELECT ehrledger.seal();

INSERT INTO observation (resource) SELECT jsonb_build_object('n', g) FROM generate_series(1, 3) g;
INSERT INTO encounter (resource) VALUES ('{"n": 1}');
SELECT ehrledger.seal();

-- Sealing again without new rows makes no empty block.
SELECT ehrledger.seal();

-- An aborted insert leaves a harmless gap in ledger_seq.
BEGIN;
INSERT INTO observation (resource) VALUES ('{"aborted": true}');
ROLLBACK;
INSERT INTO encounter (resource) VALUES ('{"n": 2}');
SELECT ehrledger.seal();

SELECT origin, height, first_seq, last_seq, row_count,
       length(prev_hash) AS prev, length(root) AS root, length(block_hash) AS hash,
       length(signature) AS sig, public_key = ehrledger.node_public_key() AS own_key
  FROM ehrledger.blocks ORDER BY height;

-- Blocks form a chain: the first links to 32 zero bytes, each next one to
-- the block before it.
SELECT b.height, b.prev_hash = coalesce(p.block_hash, decode(repeat('00', 32), 'hex')) AS linked
  FROM ehrledger.blocks b LEFT JOIN ehrledger.blocks p ON p.height = b.height - 1
 ORDER BY b.height;

-- Every row is in exactly one block's range.
SELECT t.tbl, t.ledger_seq, b.height
  FROM (SELECT 'observation' AS tbl, ledger_seq FROM observation
        UNION ALL SELECT 'encounter', ledger_seq FROM encounter) t
  JOIN ehrledger.blocks b ON t.ledger_seq BETWEEN b.first_seq AND b.last_seq
 ORDER BY t.ledger_seq;

-- seal() inside a transaction seals that transaction's own rows with it.
BEGIN;
INSERT INTO observation (resource) VALUES ('{"n": 4}');
SELECT ehrledger.seal();
ROLLBACK;
SELECT max(height) FROM ehrledger.blocks;

-- seal() refuses read-only transactions; it is not granted to PUBLIC.
BEGIN READ ONLY;
SELECT ehrledger.seal();
ROLLBACK;
CREATE ROLE viewer;
SET ROLE viewer;
SELECT ehrledger.seal();
SELECT count(*) FROM ehrledger.blocks;
RESET ROLE;
DROP ROLE viewer;

-- A backlog longer than ehrledger.max_block_rows is sealed into several
-- contiguous blocks at once.
SET ehrledger.max_block_rows = 3;
INSERT INTO observation (resource) SELECT jsonb_build_object('n', g) FROM generate_series(10, 17) g;
SELECT ehrledger.seal();
SELECT height, row_count, first_seq, last_seq FROM ehrledger.blocks WHERE height > 2 ORDER BY height;
SELECT ok, blocks_checked FROM ehrledger.verify();
RESET ehrledger.max_block_rows;

-- The node's public key is 32 bytes.
SELECT length(ehrledger.node_public_key());

DROP EXTENSION ehrledger CASCADE;
DROP TABLE observation, encounter;
