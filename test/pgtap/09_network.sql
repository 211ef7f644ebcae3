-- 09_network.sql: the hospital network's SQL surface on a node without
-- peers (a quorum of one: it finalizes its own blocks), its formats, and
-- bad input.  Four real hospitals are in test/t/020_network.pl.
BEGIN;
CREATE EXTENSION ehrledger;
SELECT plan(50);

SELECT has_function('ehrledger', 'add_peer', ARRAY['text', 'text', 'bytea'], 'add_peer() exists');
SELECT has_function('ehrledger', 'remove_peer', ARRAY['text'], 'remove_peer() exists');
SELECT has_function('ehrledger', 'network_init', ARRAY[]::text[], 'network_init() exists');
SELECT has_function('ehrledger', 'block_status', ARRAY['text', 'bigint'], 'block_status() exists');
SELECT has_view('ehrledger', 'peers', 'view ehrledger.peers exists');
SELECT has_view('ehrledger', 'network_status', 'view ehrledger.network_status exists');
SELECT has_table('ehrledger', 'evidence', 'table ehrledger.evidence exists');
SELECT columns_are('ehrledger', 'network_status',
    ARRAY['origin', 'local_height', 'final_height', 'pending', 'quorum'],
    'network_status has the documented columns');
SELECT is(pg_get_function_result('ehrledger.block_status(text, bigint)'::regprocedure),
    'TABLE(block_hash bytea, acks integer, quorum integer, final boolean, certificate jsonb)',
    'block_status() returns the documented columns');
SELECT is(ehrledger.node_name(), COALESCE(NULLIF(current_setting('ehrledger.node_name'), ''),
                                          'node-' || (SELECT system_identifier FROM pg_control_system())),
    'node_name() is the node''s name');

-- Quorum: 2f+1 of n = 3f+1 members, this node included.
SELECT is(ehrledger.quorum(), 1, 'alone, a node is its own quorum');
SELECT is((SELECT count(*)::int FROM ehrledger.network_status), 1, 'network_status lists this node');
SELECT is(current_setting('ehrledger.min_quorum'), '0', 'ehrledger.min_quorum defaults to 0');
SELECT is((SELECT context FROM pg_settings WHERE name = 'ehrledger.min_quorum'), 'sighup',
    'ehrledger.min_quorum is set in the server''s configuration');

-- A node without peers finalizes what it seals, with a certificate.
CREATE TABLE net_obs (id int PRIMARY KEY, v text);
SELECT ehrledger.protect('net_obs');
INSERT INTO net_obs VALUES (1, 'a'), (2, 'b');
SELECT ok(ehrledger.seal() > 0, 'sealed');
SELECT is((SELECT count(*)::int FROM ehrledger.ack WHERE acker = ehrledger.node_name()), 1,
    'the node acknowledged its block');
SELECT ok((SELECT final FROM ehrledger.block_status(ehrledger.node_name(), 1)), 'the block is final');
SELECT is((SELECT acks FROM ehrledger.block_status(ehrledger.node_name(), 1)), 1, 'with one acknowledgment');
SELECT is((SELECT final_height FROM ehrledger.network_status WHERE origin = ehrledger.node_name()), 1::bigint,
    'network_status shows the final height');
SELECT is((SELECT certificate ->> 'format' FROM ehrledger.final_block), 'ehrledger-certificate-1',
    'the certificate names its format');
SELECT is((SELECT decode(certificate ->> 'block_hash', 'hex') FROM ehrledger.final_block),
          (SELECT block_hash FROM ehrledger.blocks WHERE height = 1), 'it names the block''s hash');
SELECT is((SELECT sha256(decode(certificate ->> 'header', 'hex')) FROM ehrledger.final_block),
          (SELECT block_hash FROM ehrledger.blocks WHERE height = 1), 'the header bytes hash to it');
SELECT ok((SELECT ehrledger.verify_signature(
              ehrledger.ack_message(f.origin, f.height, f.block_hash),
              decode(certificate #>> '{acks,0,signature}', 'hex'), ehrledger.node_public_key())
             FROM ehrledger.final_block f), 'the acknowledgment verifies with the node key');
SELECT is(ehrledger.ack_message('h1', 7, sha256('x')),
    convert_to('ehrledger-ack-1', 'UTF8') || '\x00'::bytea || '\x0002'::bytea || convert_to('h1', 'UTF8')
    || int8send(7) || sha256('x'), 'ack_message() is tag, origin, height, hash (docs/format.md §18)');
SELECT is((SELECT ehrledger.digest() -> 'certificate' ->> 'height'), '1', 'digest() carries the newest certificate');
SELECT ok((SELECT ok FROM ehrledger.verify()), 'verify() accepts the certificate');

-- Rewriting a final block, even with the node's own key, is caught.
SET session_replication_role = replica;
ALTER TABLE ehrledger.final_block DISABLE TRIGGER ALL;
RESET session_replication_role;
UPDATE ehrledger.final_block SET block_hash = sha256('forged');
SELECT ok((SELECT problems @> '[{"kind": "final_block_rewritten"}]' FROM ehrledger.verify()),
    'a final block that is not the acknowledged one is reported');
UPDATE ehrledger.final_block SET block_hash = decode(certificate ->> 'block_hash', 'hex'),
       certificate = jsonb_set(certificate, '{acks,0,signature}', to_jsonb(repeat('00', 64)));
SELECT ok((SELECT problems @> '[{"kind": "bad_certificate"}]' FROM ehrledger.verify()),
    'a certificate without a quorum of valid acknowledgments is reported');
ALTER TABLE ehrledger.final_block ENABLE ALWAYS TRIGGER ehrledger_append_only,
    ENABLE ALWAYS TRIGGER ehrledger_no_truncate;

-- Shared tables: their rows go to the outbox, and a row counts as verified
-- once it re-encodes to the leaf of a signed block (here, this node's own).
CREATE TABLE net_rx (id int PRIMARY KEY, at timestamptz, dose numeric, data jsonb, raw bytea, tags text[]);
SELECT ehrledger.protect('net_rx');
INSERT INTO net_rx VALUES (1, '2026-11-24 10:00:00+00', 2.50, '{"code": "8867-4", "n": [1, 2]}', '\x00ff', '{a,b}');
SELECT is(ehrledger.share('net_rx'), 1::bigint, 'share() sends the rows already there');
INSERT INTO net_rx VALUES (2, NULL, 0.1, NULL, NULL, NULL);
SELECT is((SELECT count(*)::int FROM ehrledger.shared_rows WHERE table_name = 'public.net_rx'), 2,
    'and every new one');
SELECT is((SELECT verdict FROM ehrledger.shared_rows WHERE ("row" ->> 'id') = '2'),
    'its origin has not sealed it (in a block held here) yet', 'an unsealed row is not verified');
-- Brackets, braces, commas and quotes inside array elements stay text.
INSERT INTO net_rx VALUES (3, NULL, 1, '[{"a": "[b]"}]', NULL,
                           ARRAY['[x]', 'a]b,c', 'q"u\o{te}', 'NULL', NULL, '']);
SELECT ok(ehrledger.seal() > 0, 'sealed');
SELECT is((SELECT verdict FROM ehrledger.shared_rows WHERE ("row" ->> 'id') = '3'), 'verified',
    'a text[] whose elements hold brackets is verified');
SELECT ok((SELECT bool_and(verified) AND bool_and(final) FROM ehrledger.shared_rows WHERE table_name = 'public.net_rx'),
    'sealed rows re-encode to their leaves, whatever their types: verified and final');
UPDATE ehrledger.shared_row SET "row" = jsonb_set("row", '{dose}', '2.5') WHERE ("row" ->> 'id') = '1';
SELECT is((SELECT verdict FROM ehrledger.shared_rows WHERE ("row" ->> 'id') = '1'),
    'it is not the row its origin sealed', 'a changed row is not verified (2.50 is not 2.5)');
SELECT throws_ok($$SELECT ehrledger.share('net_rx')$$, '42710', NULL, 'a table is shared once');
SELECT throws_ok($$SELECT ehrledger.share('pg_class')$$, 'LD002', NULL, 'only ledger tables are shared');
SELECT throws_ok($$SELECT ehrledger.share('ehrledger.access_event')$$, '42501', NULL,
    'ehrledger''s own tables are not shared');

-- Bad input.
SELECT throws_ok($$SELECT ehrledger.add_peer(NULL, 'host=x', '\x00')$$, '22004', NULL, 'NULL arguments');
SELECT throws_ok($$SELECT ehrledger.add_peer('a b', 'host=x', decode(repeat('ab', 32), 'hex'))$$, '22023', NULL,
    'a peer name that is no node name');
SELECT throws_ok($$SELECT ehrledger.add_peer('h2', 'host=x', '\x0102')$$, '22023',
    'public key must be 32 bytes, not 2', 'a malformed key');
SELECT throws_ok($$SELECT ehrledger.add_peer(ehrledger.node_name(), 'host=x', decode(repeat('ab', 32), 'hex'))$$,
    '22023', 'a node cannot be its own peer', 'self by name');
SELECT throws_ok($$SELECT ehrledger.add_peer('h2', 'host=x', ehrledger.node_public_key())$$,
    '22023', 'a node cannot be its own peer', 'self by key');
SELECT throws_ok($$SELECT ehrledger.add_peer('h2', 'host=x', decode(repeat('ab', 32), 'hex'))$$,
    '55000', 'the hospital network needs wal_level = logical', 'no network without logical replication');
SELECT throws_ok($$SELECT ehrledger.network_init()$$, '55000', NULL, 'network_init() says the same');
SELECT throws_ok($$SELECT ehrledger.remove_peer('nobody')$$, '42704', 'peer "nobody" does not exist',
    'removing an unknown peer');
SELECT throws_ok($$SELECT * FROM ehrledger.block_status('nobody', 1)$$, 'LD007', NULL,
    'the status of a block not held here');
SELECT throws_ok($$SELECT ehrledger.ack_message('h1', 1, '\x00')$$, '22023', NULL, 'a malformed block hash');
SELECT ok(NOT has_function_privilege('public', 'ehrledger._sign_ack(text, bigint, bytea)', 'EXECUTE'),
    'PUBLIC cannot have the node key sign acknowledgments');
SELECT ok(NOT has_table_privilege('public', 'ehrledger.peer', 'SELECT'),
    'PUBLIC cannot read peers'' conninfo');

SELECT * FROM finish();
ROLLBACK;
