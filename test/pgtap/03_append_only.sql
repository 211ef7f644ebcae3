-- 03_append_only.sql: inserts enter the ledger; updates, deletes and
-- truncates are refused, also under replica role and for unprivileged roles.
BEGIN;
CREATE EXTENSION ehrledger;
SELECT plan(57);

CREATE TABLE public.notes (id int PRIMARY KEY, body text, noted_on date DEFAULT DATE '2024-01-01');
SELECT ehrledger.protect('public.notes');

-- The hash a row should carry, recomputed from its canonical encoding.
CREATE FUNCTION pg_temp.expected_hash(seq bigint) RETURNS bytea LANGUAGE sql AS
$$SELECT sha256('\x00'::bytea || ehrledger.row_encoding('public.notes', seq))$$;

-- Inserts --------------------------------------------------------------------
SELECT lives_ok($$INSERT INTO public.notes VALUES (1, 'without a column list')$$,
    'INSERT without a column list');
SELECT lives_ok($$INSERT INTO public.notes (body, id) VALUES ('with a column list', 2)$$,
    'INSERT with a column list');
SELECT is((SELECT count(*) FROM public.notes WHERE ledger_seq IS NOT NULL), 2::bigint,
    'both rows got a ledger_seq');
SELECT is((SELECT octet_length(ledger_hash) FROM public.notes WHERE id = 1), 32,
    'ledger_hash is 32 bytes');
SELECT is((SELECT ledger_hash FROM public.notes WHERE id = 2),
    (SELECT pg_temp.expected_hash(ledger_seq) FROM public.notes WHERE id = 2),
    'ledger_hash is sha256(0x00 || row_encoding)');
SELECT cmp_ok((SELECT ledger_seq FROM public.notes WHERE id = 2), '>',
    (SELECT ledger_seq FROM public.notes WHERE id = 1),
    'a later insert gets a higher ledger_seq');
SELECT is((SELECT noted_on FROM public.notes WHERE id = 1), DATE '2024-01-01',
    'column defaults still apply');

-- An application that supplies ledger_seq and ledger_hash itself
SELECT lives_ok($$INSERT INTO public.notes (id, body, ledger_seq, ledger_hash)
                  VALUES (3, 'forged', 4000000000000000000, '\xdeadbeef')$$,
    'INSERT supplying ledger_seq and ledger_hash is accepted');
SELECT isnt((SELECT ledger_seq FROM public.notes WHERE id = 3), 4000000000000000000::bigint,
    'the supplied ledger_seq was overwritten');
SELECT cmp_ok((SELECT ledger_seq FROM public.notes WHERE id = 3), '>',
    (SELECT max(ledger_seq) FROM public.notes WHERE id < 3),
    'the overwritten ledger_seq follows the earlier rows');
SELECT isnt((SELECT ledger_hash FROM public.notes WHERE id = 3), '\xdeadbeef'::bytea,
    'the supplied ledger_hash was overwritten');
SELECT is((SELECT ledger_hash FROM public.notes WHERE id = 3),
    (SELECT pg_temp.expected_hash(ledger_seq) FROM public.notes WHERE id = 3),
    'the overwritten ledger_hash is the row''s true hash');
SELECT lives_ok($$INSERT INTO public.notes (id, body, ledger_seq, ledger_hash)
                  VALUES (4, 'nulls supplied', NULL, NULL)$$,
    'INSERT supplying NULL ledger columns is accepted');
SELECT ok((SELECT ledger_seq IS NOT NULL AND octet_length(ledger_hash) = 32 FROM public.notes WHERE id = 4),
    'NULL ledger columns are filled in');

-- Multi-row insert
INSERT INTO public.notes (id, body) VALUES (10, 'a'), (11, 'b'), (12, 'c'), (13, 'd');
SELECT is((SELECT count(DISTINCT ledger_seq) FROM public.notes WHERE id BETWEEN 10 AND 13), 4::bigint,
    'a multi-row insert gives each row its own ledger_seq');
SELECT results_eq(
    $$SELECT id FROM public.notes WHERE id BETWEEN 10 AND 13 ORDER BY ledger_seq$$,
    $$VALUES (10), (11), (12), (13)$$,
    'ledger_seq increases in insertion order');
SELECT cmp_ok((SELECT min(ledger_seq) FROM public.notes WHERE id BETWEEN 10 AND 13), '>',
    (SELECT max(ledger_seq) FROM public.notes WHERE id < 10),
    'the multi-row insert numbers follow the earlier rows');
SELECT is_empty($$SELECT id FROM public.notes WHERE ledger_hash IS DISTINCT FROM pg_temp.expected_hash(ledger_seq)$$,
    'every row''s ledger_hash matches its encoding');
SELECT is((SELECT count(DISTINCT ledger_hash) FROM public.notes), (SELECT count(*) FROM public.notes),
    'no two rows share a hash');
INSERT INTO public.notes (id, body) SELECT g, 'bulk ' || g FROM generate_series(100, 149) AS g;
SELECT is((SELECT count(DISTINCT ledger_seq) FROM public.notes WHERE id >= 100), 50::bigint,
    'INSERT ... SELECT numbers every row');

CREATE TEMP TABLE notes_snapshot AS SELECT * FROM public.notes;

-- Update, delete, truncate are refused -------------------------------------------
SELECT throws_ok($$UPDATE public.notes SET body = 'changed' WHERE id = 1$$, 'LD001',
    'cannot update rows of append-only ledger table "public.notes"', 'UPDATE is refused');
SELECT throws_ok($$UPDATE public.notes SET ledger_hash = '\x00'$$, 'LD001',
    'cannot update rows of append-only ledger table "public.notes"', 'UPDATE of ledger_hash is refused');
SELECT throws_ok($$DELETE FROM public.notes WHERE id = 1$$, 'LD001',
    'cannot delete rows of append-only ledger table "public.notes"', 'DELETE is refused');
SELECT throws_ok($$TRUNCATE public.notes$$, 'LD001',
    'cannot truncate append-only ledger table "public.notes"', 'TRUNCATE is refused');
SELECT throws_ok($$INSERT INTO public.notes (id, body) VALUES (1, 'upsert')
                   ON CONFLICT (id) DO UPDATE SET body = excluded.body$$, 'LD001',
    'cannot update rows of append-only ledger table "public.notes"',
    'INSERT ... ON CONFLICT DO UPDATE cannot change a row');
SELECT lives_ok($$INSERT INTO public.notes (id, body) VALUES (1, 'dup') ON CONFLICT (id) DO NOTHING$$,
    'INSERT ... ON CONFLICT DO NOTHING is fine');
SELECT throws_ok($$MERGE INTO public.notes n USING (VALUES (2, 'merged')) AS s(id, body) ON n.id = s.id
                   WHEN MATCHED THEN UPDATE SET body = s.body$$, 'LD001',
    'cannot update rows of append-only ledger table "public.notes"', 'MERGE ... UPDATE is refused');
SELECT throws_ok($$MERGE INTO public.notes n USING (VALUES (2)) AS s(id) ON n.id = s.id
                   WHEN MATCHED THEN DELETE$$, 'LD001',
    'cannot delete rows of append-only ledger table "public.notes"', 'MERGE ... DELETE is refused');

-- ... also with session_replication_role = replica
SET LOCAL session_replication_role = replica;
SELECT throws_ok($$UPDATE public.notes SET body = 'changed' WHERE id = 1$$, 'LD001',
    'cannot update rows of append-only ledger table "public.notes"', 'UPDATE is refused under replica role');
SELECT throws_ok($$DELETE FROM public.notes WHERE id = 1$$, 'LD001',
    'cannot delete rows of append-only ledger table "public.notes"', 'DELETE is refused under replica role');
SELECT throws_ok($$TRUNCATE public.notes$$, 'LD001',
    'cannot truncate append-only ledger table "public.notes"', 'TRUNCATE is refused under replica role');
SELECT lives_ok($$INSERT INTO public.notes (id, body, ledger_seq) VALUES (20, 'replica', 1)$$,
    'INSERT works under replica role');
RESET session_replication_role;
SELECT ok((SELECT ledger_seq > (SELECT max(ledger_seq) FROM notes_snapshot)
                  AND ledger_hash = pg_temp.expected_hash(ledger_seq)
             FROM public.notes WHERE id = 20),
    'the insert trigger also fired under replica role');

SELECT set_eq($$SELECT * FROM public.notes WHERE id <> 20$$, $$SELECT * FROM notes_snapshot$$,
    'no refused statement changed any row');

-- An unprivileged role --------------------------------------------------------
CREATE ROLE ehrledger_test_clerk NOLOGIN;
GRANT INSERT, SELECT ON public.notes TO ehrledger_test_clerk;
SELECT ok(NOT has_sequence_privilege('ehrledger_test_clerk', 'ehrledger.ledger_seq', 'USAGE'),
    'the clerk has no privilege on ehrledger.ledger_seq');
SELECT ok(NOT has_table_privilege('ehrledger_test_clerk', 'public.notes', 'UPDATE'),
    'the clerk has only INSERT and SELECT on the table');
SELECT is(ehrledger.seal(), 1::bigint, 'superuser seals the rows so far into block 1');

SET LOCAL ROLE ehrledger_test_clerk;
SELECT is(current_user, 'ehrledger_test_clerk'::name, 'now running as the clerk');
SELECT lives_ok($$INSERT INTO public.notes (id, body) VALUES (30, 'by the clerk')$$,
    'the clerk can insert into a protected table');
SELECT ok((SELECT ledger_seq IS NOT NULL AND octet_length(ledger_hash) = 32 FROM public.notes WHERE id = 30),
    'the clerk''s row got a ledger_seq and ledger_hash');
SELECT throws_ok($$DELETE FROM public.notes WHERE id = 30$$, '42501', NULL,
    'the clerk cannot delete (no privilege)');
SELECT throws_ok($$SELECT ehrledger.seal()$$, '42501',
    'permission denied for function seal', 'the clerk cannot call seal()');
SELECT throws_ok($$SELECT ehrledger.protect('public.notes')$$, '42501',
    'permission denied for function protect', 'the clerk cannot call protect()');
SELECT throws_ok($$SELECT nextval('ehrledger.ledger_seq')$$, '42501',
    'permission denied for sequence ledger_seq', 'the clerk cannot draw ledger numbers');
SELECT throws_ok($$DELETE FROM ehrledger.block$$, '42501',
    'permission denied for table block', 'the clerk cannot delete from ehrledger.block');
SELECT throws_ok($$INSERT INTO ehrledger.registered_table (table_id, relid, mode) VALUES (99, 'public.notes', 'append_only')$$,
    '42501', 'permission denied for table registered_table', 'the clerk cannot register tables');
SELECT throws_ok($$SELECT ok, problems FROM ehrledger.verify()$$, '42501', NULL,
    'the clerk cannot verify the whole ledger: it may not read ehrledger''s own ledgered tables');
SELECT is((SELECT rows_checked FROM ehrledger.verify('public.notes')),
    (SELECT count(*) FROM public.notes), 'the clerk''s verify() sees every row');
SELECT lives_ok($$SELECT ehrledger.digest()$$, 'the clerk can call digest()');
SELECT is((SELECT ehrledger.digest() ->> 'public_key'), encode(ehrledger.node_public_key(), 'hex'),
    'the clerk''s digest carries the node key');
SELECT is((SELECT count(*) FROM ehrledger.blocks), 1::bigint, 'the clerk can read ehrledger.blocks');
SELECT is((SELECT ledger_hash FROM public.notes WHERE id = 30),
    (SELECT sha256('\x00'::bytea || ehrledger.row_encoding('public.notes', ledger_seq)) FROM public.notes WHERE id = 30),
    'the clerk can call row_encoding() on a table it may read');
RESET ROLE;

-- With UPDATE and DELETE granted, the ledger still refuses
GRANT UPDATE, DELETE, TRUNCATE ON public.notes TO ehrledger_test_clerk;
SET LOCAL ROLE ehrledger_test_clerk;
SELECT throws_ok($$UPDATE public.notes SET body = 'x' WHERE id = 30$$, 'LD001',
    'cannot update rows of append-only ledger table "public.notes"',
    'a role granted UPDATE still cannot update');
SELECT throws_ok($$DELETE FROM public.notes WHERE id = 30$$, 'LD001',
    'cannot delete rows of append-only ledger table "public.notes"',
    'a role granted DELETE still cannot delete');
SELECT throws_ok($$TRUNCATE public.notes$$, 'LD001',
    'cannot truncate append-only ledger table "public.notes"',
    'a role granted TRUNCATE still cannot truncate');
RESET ROLE;

-- A role that may not read the table cannot see its encodings
CREATE ROLE ehrledger_test_outsider NOLOGIN;
SET LOCAL ROLE ehrledger_test_outsider;
SELECT throws_ok($$SELECT ehrledger.row_encoding('public.notes', 1)$$, '42501',
    'permission denied for table notes', 'row_encoding() needs SELECT on the table');
RESET ROLE;

SELECT row_eq($$SELECT ok, problems FROM ehrledger.verify()$$, ROW(true, '[]'::jsonb)::record,
    'after all of this the ledger verifies');

SELECT * FROM finish();
ROLLBACK;
