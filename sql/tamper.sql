-- Tampering a superuser could attempt, and what verify() reports for each.
-- The schema guard refuses ALTER TABLE ... DISABLE TRIGGER; a superuser can
-- switch event triggers off with session_replication_role = replica, so
-- that is what the tamperer here does first.
-- Every case starts from a fresh ledger of three sealed blocks:
--   block 1: ledger_seq 1-4 (rows id 1-4)
--   block 2: ledger_seq 5-9 (rows id 5-8 hold 6-9; 5 went to the sealer)
--   block 3: ledger_seq 10-14 (rows id 9-12 hold 11-14)
SET client_min_messages = warning;
CREATE FUNCTION fresh_ledger() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    DROP EXTENSION IF EXISTS ehrledger CASCADE;
    DROP TABLE IF EXISTS observation;
    CREATE EXTENSION ehrledger;
    CREATE TABLE observation (id int PRIMARY KEY, patient_id text, resource jsonb);
    PERFORM ehrledger.protect('observation');
    FOR b IN 0..2 LOOP
        INSERT INTO observation (id, patient_id, resource)
        SELECT g, 'pat-' || g, jsonb_build_object('code', '8867-4', 'value', 60 + g)
          FROM generate_series(b * 4 + 1, b * 4 + 4) g;
        PERFORM ehrledger.seal();
    END LOOP;
END
$$;
SELECT fresh_ledger();
SELECT height, first_seq, last_seq, row_count FROM ehrledger.blocks ORDER BY height;
SELECT ok, blocks_checked, rows_checked FROM ehrledger.verify();
-- Block 3's history_root is the RFC 6962 tree over the hashes of blocks 1 and 2.
SELECT b3.history_root = sha256('\x01'::bytea || b1.block_hash || b2.block_hash) AS history_ok
  FROM ehrledger.blocks b1, ehrledger.blocks b2, ehrledger.blocks b3
 WHERE b1.height = 1 AND b2.height = 2 AND b3.height = 3;

-- Guards stand in the way first; a superuser can switch them off.
UPDATE ehrledger.block SET root = root;
DELETE FROM ehrledger.block;

-- 1. A changed value.
SELECT fresh_ledger();
SET session_replication_role = replica;
ALTER TABLE observation DISABLE TRIGGER ALL;
RESET session_replication_role;
UPDATE observation SET resource = jsonb_set(resource, '{value}', '999') WHERE id = 2;
SELECT ok, jsonb_pretty(problems) FROM ehrledger.verify();

-- 2. A deleted row.
SELECT fresh_ledger();
SET session_replication_role = replica;
ALTER TABLE observation DISABLE TRIGGER ALL;
RESET session_replication_role;
DELETE FROM observation WHERE id = 6;
SELECT ok, jsonb_pretty(problems) FROM ehrledger.verify();

-- 3. Two rows' order swapped.
SELECT fresh_ledger();
SET session_replication_role = replica;
ALTER TABLE observation DISABLE TRIGGER ALL;
RESET session_replication_role;
UPDATE observation SET ledger_seq = -1 WHERE id = 3;
UPDATE observation SET ledger_seq = 3 WHERE id = 4;
UPDATE observation SET ledger_seq = 4 WHERE id = 3;
SELECT ok, jsonb_pretty(problems) FROM ehrledger.verify();

-- 4. A row forged into a sealed range (ledger_seq 5 was never a row).
SELECT fresh_ledger();
SET session_replication_role = replica;
ALTER TABLE observation DISABLE TRIGGER ALL;
RESET session_replication_role;
INSERT INTO observation VALUES (99, 'pat-99', '{"code": "8867-4", "value": 40}', 5,
    sha256('forged'));
SELECT ok, jsonb_pretty(problems) FROM ehrledger.verify();

-- 5. A changed block root.
SELECT fresh_ledger();
ALTER TABLE ehrledger.block DISABLE TRIGGER ALL;
UPDATE ehrledger.block SET root = sha256(root) WHERE height = 2;
SELECT ok, jsonb_pretty(problems) FROM ehrledger.verify();

-- 5b. A rewritten history_root: it no longer matches the blocks before it,
-- and the block's fields no longer hash to its block_hash.
SELECT fresh_ledger();
ALTER TABLE ehrledger.block DISABLE TRIGGER ALL;
UPDATE ehrledger.block SET history_root = sha256('forged') WHERE height = 2;
SELECT ok, (SELECT array_agg(p->>'kind' || ' ' || (p->>'block') ORDER BY p->>'kind')
              FROM jsonb_array_elements(problems) p) AS problems
  FROM ehrledger.verify();

-- 6. A flipped signature byte.
SELECT fresh_ledger();
ALTER TABLE ehrledger.block DISABLE TRIGGER ALL;
UPDATE ehrledger.block SET signature = set_byte(signature, 10, get_byte(signature, 10) # 1)
 WHERE height = 1;
SELECT ok, jsonb_pretty(problems) FROM ehrledger.verify();

-- 7. A deleted block.
SELECT fresh_ledger();
ALTER TABLE ehrledger.block DISABLE TRIGGER ALL;
DELETE FROM ehrledger.block WHERE height = 2;
SELECT ok, jsonb_pretty(problems) FROM ehrledger.verify();

-- 8. The tail cut off, with this node's own record that it was final (a
-- node without peers finalizes its blocks itself).  The shorter chain is
-- consistent in itself: only a digest taken earlier and kept elsewhere (or,
-- in a hospital network, the other hospitals) shows what was lost.
SELECT fresh_ledger();
CREATE TABLE kept_digest AS SELECT ehrledger.digest() AS d;
ALTER TABLE ehrledger.block DISABLE TRIGGER ALL;
ALTER TABLE ehrledger.final_block DISABLE TRIGGER ALL;
DELETE FROM ehrledger.block WHERE height = 3;
DELETE FROM ehrledger.final_block WHERE height = 3;
SELECT ok, problems FROM ehrledger.verify();
SELECT ok, jsonb_pretty(problems) FROM ehrledger.verify(digest => (SELECT d FROM kept_digest));

-- 9. A rewritten block that keeps its hash and signature valid is impossible
-- without the key; rewriting a row's stored hash alone is reported too.
SELECT fresh_ledger();
SET session_replication_role = replica;
ALTER TABLE observation DISABLE TRIGGER ALL;
RESET session_replication_role;
UPDATE observation SET ledger_hash = sha256('x') WHERE id = 7;
SELECT ok, jsonb_pretty(problems) FROM ehrledger.verify('observation');

-- 10. A row deleted and its leaf relabelled as another table's, to hide
-- it: the block's leaves_hash covers the labels too.
SELECT fresh_ledger();
SET session_replication_role = replica;
ALTER TABLE observation DISABLE TRIGGER ALL;
RESET session_replication_role;
DELETE FROM observation WHERE id = 2;
ALTER TABLE ehrledger.block DISABLE TRIGGER ALL;
UPDATE ehrledger.block SET leaves = overlay(leaves PLACING '\x00000063'::bytea FROM 44 + 8 + 1 FOR 4)
 WHERE height = 1;
SELECT ok, jsonb_pretty(problems) FROM ehrledger.verify();

-- 11. A sealed leaf copied into a later block, so that two blocks carry one
-- ledger_seq: the copy is reported, and the later block's leaves no longer
-- match its root, count and range.
SELECT fresh_ledger();
ALTER TABLE ehrledger.block DISABLE TRIGGER ALL;
UPDATE ehrledger.block
   SET leaves = (SELECT substring(leaves FROM 1 FOR 44) FROM ehrledger.block WHERE height = 1) || leaves
 WHERE height = 2;
SELECT ok, (SELECT array_agg(DISTINCT p->>'kind') FROM jsonb_array_elements(problems) p) AS kinds,
       (SELECT p->>'ledger_seq' FROM jsonb_array_elements(problems) p
         WHERE p->>'kind' = 'duplicate_leaf') AS duplicate_seq
  FROM ehrledger.verify();

-- Several faults at once: all are listed, verification does not stop.
SELECT fresh_ledger();
SET session_replication_role = replica;
ALTER TABLE observation DISABLE TRIGGER ALL;
RESET session_replication_role;
ALTER TABLE ehrledger.block DISABLE TRIGGER ALL;
UPDATE observation SET patient_id = 'pat-x' WHERE id IN (1, 12);
DELETE FROM observation WHERE id = 9;
UPDATE ehrledger.block SET signature = set_byte(signature, 0, get_byte(signature, 0) # 1)
 WHERE height = 3;
SELECT ok, blocks_checked, rows_checked, jsonb_array_length(problems) AS problems,
       (SELECT array_agg(p->>'kind' ORDER BY p->>'kind') FROM jsonb_array_elements(problems) p) AS kinds
  FROM ehrledger.verify();

-- A table made to inherit from the ledger table behind the guard's back
-- (a catalog edit): its rows show in the ledger table's queries.
SELECT fresh_ledger();
CREATE TABLE observation_extra (LIKE observation);
INSERT INTO observation_extra SELECT * FROM observation WHERE id = 1;
SET allow_system_table_mods = on;
INSERT INTO pg_inherits VALUES ('observation_extra'::regclass, 'observation'::regclass, 1, false);
UPDATE pg_class SET relhassubclass = true WHERE oid = 'observation'::regclass;
RESET allow_system_table_mods;
SELECT count(*) AS rows_seen FROM observation;
SELECT ok, (SELECT array_agg(p->>'kind') FROM jsonb_array_elements(problems) p) AS kinds,
       (SELECT p->>'detail' FROM jsonb_array_elements(problems) p WHERE p->>'kind' = 'inheriting_table') AS detail
  FROM ehrledger.verify();
SET allow_system_table_mods = on;
DELETE FROM pg_inherits WHERE inhrelid = 'observation_extra'::regclass;
RESET allow_system_table_mods;
DROP TABLE observation_extra;
-- A partition made with the guard's event trigger off (a superuser in
-- replica mode) is in none of the ledger's records.
CREATE TABLE vitals (id int, taken date, pulse int) PARTITION BY RANGE (taken);
CREATE TABLE vitals_2026 PARTITION OF vitals FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
SELECT ehrledger.protect('vitals');
INSERT INTO vitals VALUES (1, '2026-05-01', 72);
SET session_replication_role = replica;
CREATE TABLE vitals_2027 PARTITION OF vitals FOR VALUES FROM ('2027-01-01') TO ('2028-01-01');
RESET session_replication_role;
INSERT INTO vitals_2027 (id, taken, pulse, ledger_seq, ledger_hash) VALUES (2, '2027-02-01', 200, 999999, '\x00');
SELECT count(*) AS rows_seen FROM vitals;
SELECT ok, (SELECT array_agg(p->>'kind') FROM jsonb_array_elements(problems) p) AS kinds,
       (SELECT p->>'detail' FROM jsonb_array_elements(problems) p WHERE p->>'kind' = 'inheriting_table') AS detail
  FROM ehrledger.verify('vitals');
SET session_replication_role = replica;
DROP TABLE vitals_2027;
RESET session_replication_role;

DROP EXTENSION ehrledger CASCADE;
DROP TABLE observation, kept_digest, vitals;
DROP FUNCTION fresh_ledger();
