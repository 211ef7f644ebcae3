-- 18_network_states.sql: a block's states, by name (src/network/states.sql
-- draws them): this node's block sealed, acknowledged, final; a peer's
-- pending, admitted, rejected; evidence; and who may read them.  On one
-- node whose peers are rows of ehrledger.peer; four real hospitals are in
-- test/t/020_network.pl.
BEGIN;
CREATE EXTENSION ehrledger;
SELECT plan(23);

-- This node alone is its own quorum: a block it seals is final at once.
CREATE TABLE states_obs (id int PRIMARY KEY);
SELECT ehrledger.protect('states_obs');
INSERT INTO states_obs VALUES (1);
CREATE TEMP TABLE blk1 AS SELECT ehrledger.seal() AS height;
SELECT is(ehrledger._block_state(ehrledger.node_name(), (SELECT height FROM blk1)), 'final',
    'alone, this node''s block is final as soon as it is sealed');
SELECT is(ehrledger._block_state(ehrledger.node_name(), 1000), NULL, 'no state for a block not held here');

-- Three peers, whose secret keys the test holds: a quorum of 3 of 4.
CREATE TEMP TABLE q AS SELECT 'q' || i AS name, k.public_key, k.secret_key
  FROM generate_series(1, 3) i, LATERAL ehrledger.keypair() k;
INSERT INTO ehrledger.peer (name, conninfo, public_key) SELECT name, 'host=nowhere', public_key FROM q;
INSERT INTO states_obs VALUES (2);
CREATE TEMP TABLE blk2 AS SELECT ehrledger.seal() AS height;
SELECT is(ehrledger._block_state(ehrledger.node_name(), (SELECT height FROM blk2)), 'acknowledged',
    'with peers, a new block is acknowledged by this node and waits for a quorum');
SELECT is((SELECT final FROM ehrledger.block_status(ehrledger.node_name(), (SELECT height FROM blk2))), false,
    'block_status() says it is not final');
SELECT is((SELECT pending FROM ehrledger.network_status WHERE origin = ehrledger.node_name()), 1::bigint,
    'network_status counts it as waiting for a quorum');

-- A block without this node's acknowledgment (one sealed under 0.2,
-- before the network) is sealed; acknowledging it moves it on.
ALTER TABLE ehrledger.ack DISABLE TRIGGER ehrledger_append_only;
DELETE FROM ehrledger.ack WHERE origin = ehrledger.node_name() AND height = (SELECT height FROM blk2);
ALTER TABLE ehrledger.ack ENABLE ALWAYS TRIGGER ehrledger_append_only;
SELECT is(ehrledger._block_state(ehrledger.node_name(), (SELECT height FROM blk2)), 'sealed',
    'without its own acknowledgment, this node''s block is sealed');
SELECT ehrledger._to_acknowledged(ehrledger.node_name(), (SELECT height FROM blk2));
SELECT is(ehrledger._block_state(ehrledger.node_name(), (SELECT height FROM blk2)), 'acknowledged',
    '_to_acknowledged() moves it to acknowledged');

-- q1 acknowledges it, as its hospital would (the apply worker inserts the
-- acknowledgment in replica mode): counted, two of the three needed.
CREATE FUNCTION pg_temp.ack_by(acker text) RETURNS ehrledger.ack LANGUAGE sql AS $$
    SELECT b.origin, b.height, b.block_hash, acker,
           ehrledger.sign(ehrledger.ack_message(b.origin, b.height, b.block_hash),
                          (SELECT secret_key FROM q WHERE name = acker)),
           ehrledger._block_header(b.origin, b.height), b.signature, clock_timestamp()
      FROM ehrledger.block b
     WHERE b.origin = ehrledger.node_name() AND b.height = (SELECT height FROM blk2)
$$;
SET session_replication_role = replica;
INSERT INTO ehrledger.ack SELECT * FROM pg_temp.ack_by('q1');
RESET session_replication_role;
SELECT is(ehrledger._block_state(ehrledger.node_name(), (SELECT height FROM blk2)) || ' '
          || (SELECT count(*) FROM ehrledger.ack WHERE origin = ehrledger.node_name() AND height = (SELECT height FROM blk2)),
    'acknowledged 2', 'q1''s acknowledgment counts: two of the three needed');
-- q2's, stored without the triggers (as a restore brings it back): the
-- sealer's round finds the quorum.
INSERT INTO ehrledger.ack SELECT * FROM pg_temp.ack_by('q2');
SELECT ehrledger._check_pending();
SELECT is(ehrledger._block_state(ehrledger.node_name(), (SELECT height FROM blk2)), 'final',
    'the sealer''s round moves it to final once a quorum acknowledged it');
SELECT is((SELECT final FROM ehrledger.block_status(ehrledger.node_name(), (SELECT height FROM blk2))), true,
    'block_status() says so, with its certificate');
SELECT is((SELECT pending FROM ehrledger.network_status WHERE origin = ehrledger.node_name()), 0::bigint,
    'and network_status counts nothing waiting');

-- A peer's blocks, as the apply worker inserts them (replica mode).  Block
-- 2 of q1, validly signed by q1, comes before block 1: it is pending.
CREATE FUNCTION pg_temp.q1_block(height bigint, block_hash bytea, signature bytea) RETURNS ehrledger.block
    LANGUAGE sql AS $$
    SELECT 'q1', height, decode(repeat('00', 32), 'hex'), decode(repeat('00', 32), 'hex'),
           decode(repeat('00', 32), 'hex'), block_hash, height, height, 0::bigint, now(),
           (SELECT public_key FROM q WHERE name = 'q1'), signature, '\x'::bytea,
           decode(repeat('00', 32), 'hex'), '\x'::bytea
$$;
SET client_min_messages = error;
SET session_replication_role = replica;
INSERT INTO ehrledger.block
    SELECT * FROM pg_temp.q1_block(2, sha256('q1 block 2'),
                                   ehrledger.sign(sha256('q1 block 2'), (SELECT secret_key FROM q WHERE name = 'q1')));
-- Block 1 of q1, signed with another key: rejected.
INSERT INTO ehrledger.block
    SELECT * FROM pg_temp.q1_block(1, sha256('q1 block 1'),
                                   ehrledger.sign(sha256('q1 block 1'), (SELECT secret_key FROM q WHERE name = 'q2')));
RESET session_replication_role;
RESET client_min_messages;
SELECT is(ehrledger._block_state('q1', 2), 'pending', 'a peer''s block before its predecessor is pending');
SELECT is(ehrledger._block_state('q1', 1), 'rejected', 'a peer''s block that fails its checks is rejected');
SELECT is((SELECT string_agg(height || ':' || state, ',' ORDER BY height) FROM ehrledger._block_states WHERE origin = 'q1'),
    '1:rejected,2:pending', '_block_states lists both');
SELECT throws_ok($$SELECT * FROM ehrledger.block_status('q1', 2)$$, 'LD007', NULL,
    'block_status() knows no pending block: it is not stored');
SELECT throws_ok($$SELECT * FROM ehrledger.block_status('q1', 1)$$, 'LD007', NULL,
    'nor a rejected one');
-- Block 1 of q1 stored (here without the triggers, as a restore would):
-- admitted, whatever was rejected at its height before.
INSERT INTO ehrledger.block
    SELECT * FROM pg_temp.q1_block(1, sha256('q1 block 1 again'), decode(repeat('00', 64), 'hex'));
SELECT is(ehrledger._block_state('q1', 1), 'admitted', 'a peer''s stored block is admitted, not final yet');
SELECT is((SELECT pending FROM ehrledger.network_status WHERE origin = 'q1'), 1::bigint,
    'network_status counts the admitted block, not the pending one');

-- Evidence: two statements one member signed that conflict.
SELECT ehrledger._to_evidence('double_ack', 'q3', 'q1', 1, sha256('a'), decode(repeat('01', 64), 'hex'),
                              sha256('b'), decode(repeat('02', 64), 'hex'));
SELECT is((SELECT ARRAY(SELECT jsonb_object_keys(statement_a) ORDER BY 1)
                   || ARRAY(SELECT jsonb_object_keys(statement_b) ORDER BY 1)
              FROM ehrledger.evidence WHERE kind = 'double_ack'),
    ARRAY['block_hash', 'signature', 'block_hash', 'signature'],
    'a double_ack is two block hashes, each with its signature');
SELECT ehrledger._to_evidence('double_ack', 'q3', 'q1', 1, sha256('c'), decode(repeat('03', 64), 'hex'),
                              sha256('d'), decode(repeat('04', 64), 'hex'));
SELECT is((SELECT count(*)::int FROM ehrledger.evidence WHERE kind = 'double_ack'), 1,
    'one piece of evidence per member, kind and height');

-- Who may read the states: not a role with no grants, except through
-- network_status.
CREATE ROLE states_nobody;
SET ROLE states_nobody;
SELECT throws_ok($$SELECT ehrledger._block_state('q1', 1)$$, '42501', NULL,
    'a role with no grants cannot call _block_state()');
SELECT throws_ok($$SELECT * FROM ehrledger._block_states$$, '42501', NULL,
    'nor read _block_states');
SELECT is((SELECT pending FROM ehrledger.network_status WHERE origin = 'q1'), 1::bigint,
    'but it reads network_status, which counts from the states');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
