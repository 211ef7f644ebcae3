-- 04_seal_verify.sql: sealing rows into hash-chained, signed blocks, and
-- verifying rows, blocks and chain.
BEGIN;
CREATE EXTENSION ehrledger;
SELECT plan(60);

-- This node's name, as blocks carry it.
CREATE FUNCTION pg_temp.node_name() RETURNS text LANGUAGE sql AS $$
    SELECT COALESCE(NULLIF(current_setting('ehrledger.node_name'), ''),
                    'node-' || (SELECT system_identifier FROM pg_control_system()))
$$;
-- A block's hash recomputed independently from its header fields.
CREATE FUNCTION pg_temp.header_hash(b ehrledger.blocks) RETURNS bytea LANGUAGE sql AS $$
    SELECT sha256(convert_to('ehrledger-block-1', 'UTF8') || '\x00'::bytea
                  || int2send(octet_length(convert_to(b.origin, 'UTF8'))::int2)
                  || convert_to(b.origin, 'UTF8')
                  || int8send(b.height) || b.prev_hash || b.history_root || b.root || b.leaves_hash
                  || int8send(b.first_seq) || int8send(b.last_seq) || int8send(b.row_count)
                  || int8send((extract(epoch FROM b.sealed_at) * 1000000)::bigint)
                  || b.public_key)
$$;
CREATE FUNCTION pg_temp.node(l bytea, r bytea) RETURNS bytea LANGUAGE sql AS
$$SELECT sha256('\x01'::bytea || l || r)$$;
-- RFC 6962 Merkle tree hash of leaf hashes.
CREATE FUNCTION pg_temp.mth(h bytea[]) RETURNS bytea LANGUAGE plpgsql AS $$
DECLARE
    n int := coalesce(array_length(h, 1), 0);
    k int := 1;
BEGIN
    IF n = 1 THEN
        RETURN h[1];
    END IF;
    WHILE k * 2 < n LOOP
        k := k * 2;
    END LOOP;
    RETURN pg_temp.node(pg_temp.mth(h[1:k]), pg_temp.mth(h[k + 1:n]));
END $$;
CREATE FUNCTION pg_temp.blk(h bigint) RETURNS ehrledger.blocks LANGUAGE sql AS
$$SELECT b FROM ehrledger.blocks b WHERE height = h$$;

-- An empty ledger ---------------------------------------------------------------
SELECT is(ehrledger.seal(), NULL::bigint, 'seal() with no protected table returns NULL');
SELECT row_eq($$SELECT ok, blocks_checked, rows_checked, problems FROM ehrledger.verify()$$,
    ROW(true, 0::bigint, 0::bigint, '[]'::jsonb)::record,
    'verify() of an empty ledger: ok, nothing checked');

CREATE TABLE public.t1 (id int PRIMARY KEY, body text);
CREATE TABLE public.t2 (code text, amount numeric);
SELECT ehrledger.protect('public.t1');
SELECT ehrledger.protect('public.t2');
-- Every row of the ledger: the tables', and the enrolments the sealer
-- writes with the first rows of each (docs/format.md §19).
CREATE TEMP VIEW all_rows AS
    SELECT ledger_seq, ledger_hash FROM public.t1
    UNION ALL SELECT ledger_seq, ledger_hash FROM public.t2
    UNION ALL SELECT ledger_seq, ledger_hash FROM ehrledger.enrolled_table;
SELECT is(ehrledger.seal(), NULL::bigint, 'seal() with protected but empty tables returns NULL');
SELECT is(ehrledger.seal(), NULL::bigint, 'and again');
SELECT is((SELECT count(*) FROM ehrledger.blocks), 0::bigint, 'no empty block was written');

-- Block 1 -------------------------------------------------------------------
INSERT INTO public.t1 VALUES (1, 'first');
INSERT INTO public.t2 VALUES ('A', 10.5);
INSERT INTO public.t1 VALUES (2, 'second');
SELECT is(ehrledger.seal(), 1::bigint, 'seal() after inserts returns height 1');
SELECT is(ehrledger.seal(), 1::bigint, 'seal() with nothing new returns the same height');
SELECT is((SELECT count(*) FROM ehrledger.blocks), 1::bigint, 'the second seal() wrote no empty block');

SELECT is((pg_temp.blk(1)).origin, pg_temp.node_name(), 'block 1 carries this node''s name');
SELECT is((pg_temp.blk(1)).prev_hash, decode(repeat('00', 32), 'hex'),
    'block 1 prev_hash is 32 zero bytes');
SELECT is((pg_temp.blk(1)).history_root, sha256(''::bytea),
    'block 1 history_root is the hash of the empty tree');
SELECT is((pg_temp.blk(1)).leaves_hash,
    (SELECT sha256('\x02'::bytea || leaves) FROM ehrledger.block WHERE height = 1),
    'block 1 leaves_hash is SHA-256 of 0x02 and its packed leaves');
SELECT is((pg_temp.blk(1)).first_seq, 1::bigint, 'block 1 starts at ledger_seq 1');
SELECT cmp_ok((pg_temp.blk(1)).last_seq, '>=', (SELECT max(ledger_seq) FROM all_rows),
    'block 1 covers every row inserted so far');
SELECT is((pg_temp.blk(1)).row_count, (SELECT count(*) FROM all_rows), 'block 1 row_count is the number of rows');
SELECT is((pg_temp.blk(1)).row_count,
    (SELECT count(*) FROM all_rows WHERE ledger_seq BETWEEN (pg_temp.blk(1)).first_seq AND (pg_temp.blk(1)).last_seq),
    'block 1 row_count matches the rows in its range');
SELECT is(octet_length((pg_temp.blk(1)).signature), 64, 'block 1 signature is 64 bytes');
SELECT is(octet_length((pg_temp.blk(1)).root), 32, 'block 1 root is 32 bytes');
SELECT is(octet_length((pg_temp.blk(1)).block_hash), 32, 'block 1 block_hash is 32 bytes');
SELECT is((pg_temp.blk(1)).public_key, ehrledger.node_public_key(), 'block 1 public_key is the node key');
SELECT is((pg_temp.blk(1)).block_hash, pg_temp.header_hash(pg_temp.blk(1)),
    'block 1 block_hash is the SHA-256 of its header');
SELECT is((pg_temp.blk(1)).root,
    (SELECT pg_temp.mth(array_agg(ledger_hash ORDER BY ledger_seq)) FROM all_rows),
    'block 1 root is the RFC 6962 Merkle root of its row hashes');
SELECT is((SELECT array_agg(name ORDER BY table_id) FROM ehrledger.enrolled_table WHERE table_id < 2000000000),
    ARRAY['public.t1', 'public.t2'], 'block 1 enrols the tables its rows are of');
SELECT ok((pg_temp.blk(1)).sealed_at BETWEEN now() AND clock_timestamp(),
    'block 1 sealed_at is the time of sealing');
SELECT is((SELECT count(*) FROM ehrledger.node_key
            WHERE origin = pg_temp.node_name() AND public_key = ehrledger.node_public_key()), 1::bigint,
    'the node key is recorded in ehrledger.node_key');

-- Block 2, after an aborted insert left a gap ------------------------------------
SAVEPOINT gap;
INSERT INTO public.t2 VALUES ('rolled back', 0);
ROLLBACK TO SAVEPOINT gap;
INSERT INTO public.t2 VALUES ('B', 20);
SELECT is(ehrledger.seal(), 2::bigint, 'the next seal() returns height 2');
SELECT is((pg_temp.blk(2)).prev_hash, (pg_temp.blk(1)).block_hash,
    'block 2 prev_hash is block 1 block_hash');
SELECT is((pg_temp.blk(2)).history_root, (pg_temp.blk(1)).block_hash,
    'block 2 history_root is the one-leaf tree of block 1''s hash');
SELECT is((pg_temp.blk(2)).first_seq, (pg_temp.blk(1)).last_seq + 1,
    'block 2 first_seq is block 1 last_seq + 1');
SELECT is((pg_temp.blk(2)).row_count, 1::bigint, 'block 2 holds the one new row');
SELECT cmp_ok((pg_temp.blk(2)).last_seq - (pg_temp.blk(2)).first_seq + 1, '>', (pg_temp.blk(2)).row_count,
    'block 2 range also covers the rolled-back number');
SELECT is((pg_temp.blk(2)).root, (SELECT ledger_hash FROM public.t2 WHERE code = 'B'),
    'the root of a one-row block is that row''s hash');
SELECT is((pg_temp.blk(2)).block_hash, pg_temp.header_hash(pg_temp.blk(2)),
    'block 2 block_hash is the SHA-256 of its header');
SELECT is(octet_length((pg_temp.blk(2)).signature), 64, 'block 2 signature is 64 bytes');
SELECT isnt((pg_temp.blk(2)).signature, (pg_temp.blk(1)).signature, 'blocks have different signatures');
SELECT is((pg_temp.blk(2)).public_key, ehrledger.node_public_key(), 'block 2 public_key is the node key');

-- Verify ---------------------------------------------------------------------
SELECT row_eq($$SELECT ok, blocks_checked, rows_checked, problems FROM ehrledger.verify()$$,
    ROW(true, 2::bigint, (SELECT count(*) FROM all_rows), '[]'::jsonb)::record,
    'verify(): ok, both blocks and every row checked');
SELECT row_eq($$SELECT ok, blocks_checked, rows_checked FROM ehrledger.verify('public.t1')$$,
    ROW(true, 2::bigint, (SELECT count(*) FROM public.t1))::record,
    'verify(t1) checks only the rows of t1');
SELECT row_eq($$SELECT ok, blocks_checked, rows_checked FROM ehrledger.verify('public.t2')$$,
    ROW(true, 2::bigint, (SELECT count(*) FROM public.t2))::record,
    'verify(t2) checks only the rows of t2');
SELECT row_eq($$SELECT ok, rows_checked FROM ehrledger.verify(NULL, NULL)$$,
    ROW(true, (SELECT count(*) FROM all_rows))::record, 'verify(NULL, NULL) checks everything');
SELECT row_eq($$SELECT ok, rows_checked FROM ehrledger.verify(tbl => NULL)$$,
    ROW(true, (SELECT count(*) FROM all_rows))::record, 'verify(tbl => NULL) checks everything');
SELECT is((SELECT count(*) FROM ehrledger.verify()), 1::bigint, 'verify() returns exactly one row');

CREATE TABLE public.unprotected (id int);
SELECT throws_ok($$SELECT * FROM ehrledger.verify('public.unprotected')$$, 'LD002',
    'table "unprotected" is not protected by ehrledger', 'verify() of an unprotected table');
SELECT throws_ok($$SELECT * FROM ehrledger.verify(0::regclass)$$, '42P01',
    'relation with OID 0 does not exist', 'verify() of a nonexistent relation');

-- Unsealed rows are checked too
INSERT INTO public.t1 VALUES (3, 'unsealed');
SELECT row_eq($$SELECT ok, blocks_checked, rows_checked FROM ehrledger.verify()$$,
    ROW(true, 2::bigint, (SELECT count(*) FROM all_rows))::record,
    'an intact unsealed row verifies and is counted');

CREATE TEMP TABLE seq_of AS SELECT id, ledger_seq FROM public.t1;
SET session_replication_role = replica;
ALTER TABLE public.t1 DISABLE TRIGGER ALL;
RESET session_replication_role;
UPDATE public.t1 SET body = 'tampered' WHERE id = 3;
ALTER TABLE public.t1 ENABLE ALWAYS TRIGGER zz_ehrledger_insert,
    ENABLE ALWAYS TRIGGER ehrledger_append_only, ENABLE ALWAYS TRIGGER ehrledger_no_truncate;

SELECT is((SELECT ok FROM ehrledger.verify()), false, 'verify() notices a tampered unsealed row');
SELECT is((SELECT jsonb_typeof(problems) FROM ehrledger.verify()), 'array', 'problems is a JSON array');
SELECT is_empty($$SELECT p FROM ehrledger.verify() v, jsonb_array_elements(v.problems) p
                   WHERE jsonb_typeof(p) <> 'object' OR jsonb_typeof(p -> 'kind') IS DISTINCT FROM 'string'$$,
    'every problem is an object with a string kind');
SELECT is((SELECT jsonb_array_length(problems) FROM ehrledger.verify()), 1, 'exactly one problem');
SELECT is((SELECT problems -> 0 ->> 'kind' FROM ehrledger.verify()), 'row_hash_mismatch',
    'the problem is row_hash_mismatch');
SELECT is((SELECT (problems -> 0 ->> 'ledger_seq')::bigint FROM ehrledger.verify()),
    (SELECT ledger_seq FROM seq_of WHERE id = 3), 'the problem names the tampered row''s ledger_seq');
SELECT is((SELECT problems -> 0 ->> 'table' FROM ehrledger.verify()), 'public.t1',
    'the problem names the table');
SELECT ok((SELECT NOT (problems -> 0 ? 'block') FROM ehrledger.verify()),
    'an unsealed row''s problem names no block');
SELECT is((SELECT ok FROM ehrledger.verify('public.t1')), false, 'verify(t1) reports it too');
SELECT row_eq($$SELECT ok, problems FROM ehrledger.verify('public.t2')$$, ROW(true, '[]'::jsonb)::record,
    'verify(t2) is not concerned with t1');

-- A sealed row changed behind the triggers' back
SET session_replication_role = replica;
ALTER TABLE public.t2 DISABLE TRIGGER ALL;
RESET session_replication_role;
UPDATE public.t2 SET amount = 10.51 WHERE code = 'A';
ALTER TABLE public.t2 ENABLE ALWAYS TRIGGER zz_ehrledger_insert,
    ENABLE ALWAYS TRIGGER ehrledger_append_only, ENABLE ALWAYS TRIGGER ehrledger_no_truncate;
SELECT set_eq($$SELECT p ->> 'kind' AS kind, (p ->> 'block')::bigint AS block, p ->> 'table' AS tbl
                  FROM ehrledger.verify('public.t2') v, jsonb_array_elements(v.problems) p$$,
    $$VALUES ('row_modified', 1::bigint, 'public.t2')$$,
    'a changed sealed row is reported as row_modified in block 1');
SELECT is((SELECT (problems -> 0 ->> 'ledger_seq')::bigint FROM ehrledger.verify('public.t2')),
    (SELECT ledger_seq FROM public.t2 WHERE code = 'A'), 'row_modified names the row''s ledger_seq');
SELECT set_eq($$SELECT p ->> 'kind' FROM ehrledger.verify() v, jsonb_array_elements(v.problems) p$$,
    ARRAY['row_hash_mismatch', 'row_modified'], 'verify() lists both problems');

-- A block changed behind the guard triggers' back
ALTER TABLE ehrledger.block DISABLE TRIGGER ALL;
UPDATE ehrledger.block SET row_count = row_count + 1 WHERE height = 2;
ALTER TABLE ehrledger.block ENABLE ALWAYS TRIGGER ehrledger_append_only,
    ENABLE ALWAYS TRIGGER ehrledger_no_truncate;
SELECT ok((SELECT problems @> '[{"kind": "block_hash_mismatch", "block": 2}]' FROM ehrledger.verify()),
    'a changed block header is reported as block_hash_mismatch');
SELECT ok((SELECT problems @> '[{"kind": "row_count_mismatch", "block": 2}]' FROM ehrledger.verify()),
    'a wrong row_count is reported as row_count_mismatch');

SELECT * FROM finish();
ROLLBACK;
