-- 17_network_lies.sql: what the network does about lying hospitals
-- (issue 17), on one node whose peers are rows of ehrledger.peer: the
-- quorum at n = 1..7 and its overlap, and the forms of rows refused from
-- peers.  Four real hospitals are in test/t/021_network_recovery.pl.
BEGIN;
CREATE EXTENSION ehrledger;
SELECT plan(17);

-- The quorum: ceil((n+f+1)/2), f = floor((n-1)/3).
SELECT is(ARRAY(SELECT ehrledger.quorum_of(n) FROM generate_series(1, 10) n),
          ARRAY[1, 2, 2, 3, 4, 4, 5, 6, 6, 7], 'quorum_of(1..10)');
SELECT ok(bool_and(2 * ehrledger.quorum_of(n) - n >= (n - 1) / 3 + 1), 'any two quorums share f+1 members, n = 1..200')
  FROM generate_series(1, 200) n;
SELECT ok(bool_and(ehrledger.quorum_of(n) <= n - (n - 1) / 3), 'the n-f honest members make a quorum, n = 1..200')
  FROM generate_series(1, 200) n;
SELECT is(ehrledger.quorum_of(0), NULL, 'no quorum of no members');

SELECT is(ehrledger.quorum(), 1, 'n = 1: the node alone');
INSERT INTO ehrledger.peer (name, conninfo, public_key)
    SELECT 'p' || i, 'host=nowhere', (SELECT public_key FROM ehrledger.keypair()) FROM generate_series(1, 3) i;
SELECT is(ehrledger.quorum(), 3, 'n = 4: 3');
SELECT is((SELECT DISTINCT quorum FROM ehrledger.network_status), 3, 'network_status says 3 for every member');
INSERT INTO ehrledger.peer (name, conninfo, public_key)
    VALUES ('p4', 'host=nowhere', (SELECT public_key FROM ehrledger.keypair()));
SELECT is(ehrledger.quorum(), 4, 'n = 5: 4, not 2f+1 = 3 (two quorums of 3 could meet only in the liar)');
INSERT INTO ehrledger.peer (name, conninfo, public_key)
    SELECT 'p' || i, 'host=nowhere', (SELECT public_key FROM ehrledger.keypair()) FROM generate_series(5, 6) i;
SELECT is(ehrledger.quorum(), 5, 'n = 7: 5');
UPDATE ehrledger.peer SET removed_at = now() WHERE name IN ('p5', 'p6');
SELECT is(ehrledger.quorum(), 4, 'removed peers do not count: n = 5 again, 4');

-- Forms refused from peers (ehrledger._malformed, on to_jsonb of the row).
SELECT is(ehrledger._malformed('ack', jsonb_build_object('origin', 'h1', 'height', 1, 'block_hash', '\x' || repeat('ab', 32),
              'acker', 'h2', 'signature', '\x' || repeat('00', 64), 'header', '\x00',
              'origin_signature', '\x' || repeat('00', 64), 'acked_at', now())), NULL, 'a well-formed ack');
SELECT is(ehrledger._malformed('ack', jsonb_build_object('origin', 'h1', 'height', 1, 'block_hash', '\x' || repeat('ab', 32),
              'acker', 'h2', 'signature', '\x' || repeat('00', 63), 'header', '\x00',
              'origin_signature', '\x' || repeat('00', 64), 'acked_at', now())),
          'its signature is 63 bytes, not 64', 'an ack with a 63-byte signature');
SELECT is(ehrledger._malformed('ack', jsonb_build_object('origin', 'h1', 'height', 1, 'block_hash', '\x' || repeat('ab', 31),
              'acker', 'h2', 'signature', '\x' || repeat('00', 64), 'header', '\x00',
              'origin_signature', '\x' || repeat('00', 64), 'acked_at', now())),
          'its block_hash is 31 bytes, not 32', 'an ack of a 31-byte hash');
SELECT is(ehrledger._malformed('ack', jsonb_build_object('origin', 'h1', 'height', 1, 'block_hash', '\x' || repeat('ab', 32),
              'acker', 'h2', 'signature', '\x' || repeat('00', 64), 'header', NULL,
              'origin_signature', '\x' || repeat('00', 64), 'acked_at', now())),
          'its header is NULL', 'an ack without its header');
SELECT is(ehrledger._malformed('ack', jsonb_build_object('origin', 'h1', 'height', 0, 'block_hash', '\x' || repeat('ab', 32),
              'acker', 'a b', 'signature', '\x' || repeat('00', 64), 'header', '\x00',
              'origin_signature', '\x' || repeat('00', 64), 'acked_at', now())),
          'its acker is not a node name', 'an ack by a name that is no node name');
SELECT is(ehrledger._malformed('block', jsonb_build_object('origin', repeat('x', 70000))),
          'its origin is not a node name', 'a block of an origin longer than a node name');
SELECT is(ehrledger._malformed('shared_row', jsonb_build_object('origin', 'h1', 'table_name', 't', 'table_id', 1,
              'ledger_seq', 1, 'columns', '{}'::jsonb, 'row', '{}'::jsonb, 'received_at', now())),
          'its columns are not a JSON array or its row not a JSON object', 'a shared row whose columns are no array');

SELECT * FROM finish();
ROLLBACK;
