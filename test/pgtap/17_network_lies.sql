-- 17_network_lies.sql: what the network does about lying hospitals
-- (issue 17), on one node whose peers are rows of ehrledger.peer: the
-- quorum at n = 1..7 and its overlap, the forms of rows refused from
-- peers, certificates judged by the ledgered membership they were made
-- under, and blocks refused at admission that verify() would refuse.  Four real hospitals are in test/t/021_network_recovery.pl.
BEGIN;
CREATE EXTENSION ehrledger;
SELECT plan(66);

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

-- Membership is ledgered: the six peers added and the two removed above.
SELECT is((SELECT string_agg(change || ' ' || name, ', ' ORDER BY change_seq) FROM ehrledger.membership),
    'add p1, add p2, add p3, add p4, add p5, add p6, remove p5, remove p6', 'every membership change is a row');
SELECT ok(ehrledger.seal() > 0, 'sealed');
SELECT ok((SELECT bool_and(EXISTS (SELECT 1 FROM ehrledger.block b
                                    WHERE b.origin = ehrledger.node_name() AND m.ledger_seq BETWEEN b.first_seq AND b.last_seq))
             FROM ehrledger.membership m), 'and sealed into this node''s chain');
SELECT throws_ok($$DELETE FROM ehrledger.membership$$, 'LD001', NULL, 'it is append-only');

-- Certificates are judged by the membership they were made under.  A
-- network of four: this node and q1..q3, whose secret keys the test holds.
UPDATE ehrledger.peer SET removed_at = now() WHERE removed_at IS NULL;
CREATE TEMP TABLE q AS SELECT 'q' || i AS name, k.public_key, k.secret_key
  FROM generate_series(1, 3) i, LATERAL ehrledger.keypair() k;
INSERT INTO ehrledger.peer (name, conninfo, public_key) SELECT name, 'host=nowhere', public_key FROM q;
SELECT is(ehrledger.quorum(), 3, 'this node and q1..q3: quorum 3');
CREATE TABLE lies_obs (id int PRIMARY KEY);
SELECT ehrledger.protect('lies_obs');
INSERT INTO lies_obs VALUES (1);
CREATE TEMP TABLE blk AS SELECT ehrledger.seal() AS height;
SELECT ok(NOT (SELECT final FROM ehrledger.block_status(ehrledger.node_name(), (SELECT height FROM blk))),
    'the new block waits for acknowledgments');
-- q1 and q2 acknowledge it, as their hospitals would.
INSERT INTO ehrledger.ack (origin, height, block_hash, acker, signature, header, origin_signature)
    SELECT b.origin, b.height, b.block_hash, q.name,
           ehrledger.sign(ehrledger.ack_message(b.origin, b.height, b.block_hash), q.secret_key),
           ehrledger._block_header(b.origin, b.height), b.signature
      FROM ehrledger.block b, q
     WHERE b.origin = ehrledger.node_name() AND b.height = (SELECT height FROM blk) AND q.name IN ('q1', 'q2');
SELECT ehrledger._to_final(ehrledger.node_name(), (SELECT height FROM blk));
SELECT is((SELECT array_agg(a ->> 'acker' ORDER BY a ->> 'acker')
             FROM ehrledger.final_block f, jsonb_array_elements(f.certificate -> 'acks') a
            WHERE f.height = (SELECT height FROM blk)),
    (SELECT array_agg(x ORDER BY x) FROM unnest(ARRAY[ehrledger.node_name(), 'q1', 'q2']) x),
    'final with the acks of this node, q1 and q2');
SELECT is((SELECT (certificate ->> 'membership')::bigint FROM ehrledger.final_block WHERE height = (SELECT height FROM blk)),
          (SELECT max(change_seq) FROM ehrledger.membership), 'the certificate names the membership it was made under');
SELECT is((SELECT problems FROM ehrledger.verify()), '[]'::jsonb, 'verify() is ok');
SELECT ehrledger.remove_peer('q1');
SELECT is(ehrledger.quorum(), 2, 'q1 removed: quorum 2 of 3');
SELECT is((SELECT ok::text || ' ' || problems::text FROM ehrledger.verify()), 'true []',
    'verify() is still ok: the certificate is judged by the membership it was made under, q1 included');
SELECT is((SELECT change || ' ' || name FROM ehrledger.membership ORDER BY change_seq DESC LIMIT 1), 'remove q1',
    'the removal is ledgered');
-- A rewritten certificate is not believed: one that names a membership
-- before q1 and q2 came, or states a quorum below its membership's.
CREATE TEMP TABLE cert_saved AS SELECT certificate FROM ehrledger.final_block WHERE height = (SELECT height FROM blk);
SET session_replication_role = replica;
ALTER TABLE ehrledger.final_block DISABLE TRIGGER ALL;
RESET session_replication_role;
UPDATE ehrledger.final_block SET certificate = jsonb_set(certificate, '{membership}', '1')
 WHERE height = (SELECT height FROM blk);
SELECT ok((SELECT problems @> '[{"kind": "bad_certificate"}]' FROM ehrledger.verify()),
    'a certificate naming a membership without q1 and q2: their acks do not count');
UPDATE ehrledger.final_block
   SET certificate = jsonb_set(jsonb_set(certificate, '{membership}', to_jsonb((SELECT max(change_seq) - 1 FROM ehrledger.membership))),
                               '{quorum}', '1')
        #- '{acks,2}' #- '{acks,1}'
 WHERE height = (SELECT height FROM blk);
SELECT ok((SELECT problems @> '[{"kind": "bad_certificate"}]' FROM ehrledger.verify()),
    'a certificate stating quorum 1 with one ack, under a membership of four: not a quorum');
UPDATE ehrledger.final_block SET certificate = jsonb_set(certificate, '{quorum}', '"3; DROP"')
 WHERE height = (SELECT height FROM blk);
SELECT ok((SELECT problems @> '[{"kind": "bad_certificate"}]' FROM ehrledger.verify()),
    'a quorum that is no number is reported, not an error');
UPDATE ehrledger.final_block SET certificate = (SELECT certificate FROM cert_saved) WHERE height = (SELECT height FROM blk);
ALTER TABLE ehrledger.final_block ENABLE ALWAYS TRIGGER ehrledger_append_only, ENABLE ALWAYS TRIGGER ehrledger_no_truncate;

-- Admission is as strict as verify(): blocks of a lying peer "liar",
-- validly signed with its pinned key, whose ledger_seq range or leaves
-- verify() would refuse.  forge() builds a block (docs/format.md §7, §8)
-- with one leaf or none, signed with liar's secret key.
CREATE TEMP TABLE liar AS SELECT * FROM ehrledger.keypair();
INSERT INTO ehrledger.peer (name, conninfo, public_key) SELECT 'liar', 'host=nowhere', public_key FROM liar;
CREATE FUNCTION pg_temp.forge(height bigint, prev bytea, history_root bytea, first_seq bigint, last_seq bigint,
                              leaves bytea) RETURNS ehrledger.block
    LANGUAGE plpgsql AS $$
DECLARE
    b ehrledger.block;
    hdr bytea;
BEGIN
    b.origin := 'liar'; b.height := height; b.prev_hash := prev; b.history_root := history_root;
    b.first_seq := first_seq; b.last_seq := last_seq; b.row_count := octet_length(leaves) / 44;
    b.leaves := leaves; b.leaves_hash := sha256('\x02'::bytea || leaves);
    b.root := CASE WHEN octet_length(leaves) = 0 THEN sha256('') ELSE substr(leaves, 13, 32) END;
    b.sealed_at := '2026-01-01 00:00:00+00'; b.public_key := (SELECT public_key FROM liar);
    hdr := convert_to('ehrledger-block-1', 'UTF8') || '\x00'::bytea || '\x0004'::bytea || convert_to('liar', 'UTF8')
           || int8send(height) || prev || history_root || b.root || b.leaves_hash
           || int8send(first_seq) || int8send(last_seq) || int8send(b.row_count)
           || int8send(1767225600000000) || b.public_key;
    b.block_hash := sha256(hdr);
    b.signature := ehrledger.sign(b.block_hash, (SELECT secret_key FROM liar));
    -- the history after block 1 is its hash; after block 2, the node over
    -- both; after block 3, that node and block 3's hash
    b.history_frontier := CASE height WHEN 1 THEN b.block_hash
                                      WHEN 2 THEN sha256('\x01'::bytea || history_root || b.block_hash)
                                      ELSE history_root || b.block_hash END;
    RETURN b;
END
$$;
-- leaf(seq): a leaf of table 1 with that ledger_seq.
CREATE FUNCTION pg_temp.leaf(seq bigint) RETURNS bytea LANGUAGE sql
    AS $$ SELECT int8send(seq) || int4send(1) || sha256(convert_to('row ' || seq, 'UTF8')) $$;
SET session_replication_role = replica;
-- The empty range: 1..0, no leaves.
INSERT INTO ehrledger.block SELECT * FROM pg_temp.forge(1, decode(repeat('00', 32), 'hex'), sha256(''), 1, 0, '');
-- A leaf outside its block's range: range 1..1, leaf 5.
INSERT INTO ehrledger.block SELECT * FROM pg_temp.forge(1, decode(repeat('00', 32), 'hex'), sha256(''), 1, 1, pg_temp.leaf(5));
-- A sound block 1 (range 1..1, leaf 1) is admitted: the forging is right.
INSERT INTO ehrledger.block SELECT * FROM pg_temp.forge(1, decode(repeat('00', 32), 'hex'), sha256(''), 1, 1, pg_temp.leaf(1));
-- Block 1's leaf re-signed as block 2, range 2..2.
INSERT INTO ehrledger.block
    SELECT f.* FROM ehrledger.block b, pg_temp.forge(2, b.block_hash, b.block_hash, 2, 2, pg_temp.leaf(1)) f
     WHERE b.origin = 'liar' AND b.height = 1;
RESET session_replication_role;
SELECT is((SELECT string_agg(height || ': ' || reason, '; ' ORDER BY rejected_at) FROM ehrledger.rejected_block
            WHERE origin = 'liar'),
    '1: its ledger_seq range does not continue the previous block''s; '
    || '1: its leaves are out of order or outside its range; '
    || '2: its leaves are out of order or outside its range',
    'the empty range, the leaf outside its range and the re-signed old leaf are refused at admission, each with why');
SELECT is((SELECT string_agg(height || ':' || first_seq || '..' || last_seq, ',' ORDER BY height)
             FROM ehrledger.block WHERE origin = 'liar'), '1:1..1', 'only the sound block 1 of liar is stored');
SELECT is((SELECT count(*)::int FROM ehrledger.ack WHERE origin = 'liar' AND acker = ehrledger.node_name()), 1,
    'and only it is acknowledged');
SELECT is((SELECT problems FROM ehrledger.verify()), '[]'::jsonb, 'verify() is ok with liar''s block in the ledger');

-- An acknowledgment, by a member, of a block of a hospital that is not a
-- peer here yet is held back, and judged once that hospital is a peer.
CREATE TEMP TABLE ghost AS SELECT * FROM ehrledger.keypair();
CREATE TEMP TABLE ghost_block AS
    SELECT h AS header, sha256(h) AS block_hash, ehrledger.sign(sha256(h), (SELECT secret_key FROM ghost)) AS signature
      FROM (SELECT convert_to('ehrledger-block-1', 'UTF8') || '\x00'::bytea || '\x0005'::bytea || convert_to('ghost', 'UTF8')
                   || int8send(1) || decode(repeat('00', 32), 'hex') || sha256('') || sha256('') || sha256('\x02'::bytea)
                   || int8send(1) || int8send(0) || int8send(0) || int8send(0) || (SELECT public_key FROM ghost) AS h) x;
SET session_replication_role = replica;
INSERT INTO ehrledger.ack (origin, height, block_hash, acker, signature, header, origin_signature)
    SELECT 'ghost', 1, g.block_hash, 'q2', ehrledger.sign(ehrledger.ack_message('ghost', 1, g.block_hash), q.secret_key),
           g.header, g.signature
      FROM ghost_block g, q WHERE q.name = 'q2';
RESET session_replication_role;
SELECT is((SELECT count(*)::int FROM ehrledger.ack WHERE origin = 'ghost') || ' ' || (SELECT count(*) FROM ehrledger.held_ack),
    '0 1', 'q2''s ack of a block of ghost, not a peer yet, is held back');
SELECT is(ehrledger._release_all_held(), 0, 'the sealer''s round leaves it held while ghost is no peer');
INSERT INTO ehrledger.peer (name, conninfo, public_key) SELECT 'ghost', 'host=nowhere', public_key FROM ghost;
SELECT is(ehrledger._release_all_held(), 1, 'once ghost is a peer, the sealer''s round judges it');
SELECT is((SELECT count(*)::int FROM ehrledger.ack WHERE origin = 'ghost' AND acker = 'q2') || ' ' || (SELECT count(*) FROM ehrledger.held_ack),
    '1 0', 'and stores it: it is a valid ack of a block signed by ghost');

-- A block that comes before its predecessor is held back, not refused;
-- the sealer's round admits it, through every check, once the predecessor
-- is here.  (Here block 2 is stored without the triggers, as a superuser
-- could: only the sealer's round can notice it.)
CREATE TEMP TABLE b2 AS SELECT f.* FROM ehrledger.block b, pg_temp.forge(2, b.block_hash, b.block_hash, 2, 2, pg_temp.leaf(2)) f
                         WHERE b.origin = 'liar' AND b.height = 1;
CREATE TEMP TABLE b3 AS SELECT f.* FROM b2, pg_temp.forge(3, b2.block_hash, b2.history_frontier, 3, 3, pg_temp.leaf(3)) f;
SET session_replication_role = replica;
INSERT INTO ehrledger.block SELECT * FROM b3;
RESET session_replication_role;
SELECT is((SELECT string_agg(origin || ':' || height, ',') FROM ehrledger.held_block), 'liar:3',
    'block 3 of liar, before block 2, is held back');
SELECT is(ehrledger._release_all_held(), 0, 'the sealer''s round leaves it while block 2 is missing');
INSERT INTO ehrledger.block SELECT * FROM b2;
SELECT is(ehrledger._release_all_held(), 1, 'once block 2 is here the sealer''s round admits block 3');
SELECT is((SELECT string_agg(height::text, ',' ORDER BY height) FROM ehrledger.block WHERE origin = 'liar')
          || ' ' || (SELECT count(*) FROM ehrledger.held_block)
          || ' ' || (SELECT count(*) FROM ehrledger.ack WHERE origin = 'liar' AND height = 3 AND acker = ehrledger.node_name()),
    '1,2,3 0 1', 'block 3 is stored, nothing is held, and this node acknowledged it');
SELECT throws_ok($$SELECT ehrledger._release_held('liar', 3)$$, '55000', NULL,
    'held blocks are released in replica mode only, where the admission checks run');

-- A lying peer cannot fill ehrledger.held_block: at most
-- ehrledger.max_held_blocks (1000) blocks of one origin wait, none more
-- than 1000 heights beyond its stored height (3 here).  Beyond, a validly
-- signed block is recorded in ehrledger.rejected_row and skipped.
SET session_replication_role = replica;
INSERT INTO ehrledger.block SELECT * FROM pg_temp.forge(1004, sha256('x'), sha256('y'), 1004, 1004, pg_temp.leaf(1004));
INSERT INTO ehrledger.block SELECT * FROM pg_temp.forge(1003, sha256('x'), sha256('y'), 1003, 1003, pg_temp.leaf(1003));
RESET session_replication_role;
SELECT is((SELECT string_agg(height::text, ',') FROM ehrledger.held_block WHERE origin = 'liar')
          || ' / ' || (SELECT string_agg(reason, '; ') FROM ehrledger.rejected_row WHERE origin = 'liar'),
    '1003 / held back, it would be 1001 heights beyond the 3 stored (ehrledger.max_held_blocks = 1000)',
    'a block 1001 heights ahead is refused and recorded; one 1000 ahead is held');
SET session_replication_role = replica;
INSERT INTO ehrledger.block SELECT f.* FROM generate_series(5, 1002) h,
    LATERAL pg_temp.forge(h, sha256('x'), sha256('y'), h, h, pg_temp.leaf(h)) f;
INSERT INTO ehrledger.block SELECT * FROM pg_temp.forge(5, sha256('z'), sha256('y'), 5, 5, pg_temp.leaf(5));
INSERT INTO ehrledger.block SELECT * FROM pg_temp.forge(5, sha256('w'), sha256('y'), 5, 5, pg_temp.leaf(5));
RESET session_replication_role;
SELECT is((SELECT count(*)::int FROM ehrledger.held_block WHERE origin = 'liar')
          || ' / ' || (SELECT reason FROM ehrledger.rejected_row WHERE origin = 'liar' ORDER BY rejected_at DESC LIMIT 1),
    '1000 / 1000 blocks of its origin are held back already (ehrledger.max_held_blocks)',
    'the 1001st held block of one origin is refused and recorded, not an error');
DELETE FROM ehrledger.held_block WHERE origin = 'liar';

-- Rows lost in a restore (ehrledger._recover_lost_rows(), which
-- ehrledger._learn_from_peers() runs after taking blocks back): a leaf of
-- a block taken back whose row was not here then is lost_in_restore, not
-- missing_row.  Rows deleted later stay missing_row.
CREATE TABLE lost_t (id int PRIMARY KEY, v text);
SELECT ehrledger.protect('lost_t');
INSERT INTO lost_t VALUES (1, 'a'), (2, 'b');
CREATE TEMP TABLE lost_blk AS SELECT ehrledger.seal() AS height,
    (SELECT ledger_seq FROM lost_t WHERE id = 1) AS seq1, (SELECT ledger_seq FROM lost_t WHERE id = 2) AS seq2;
CREATE TEMP TABLE lost_copy AS SELECT * FROM lost_t WHERE id = 1;
SET session_replication_role = replica;
ALTER TABLE lost_t DISABLE TRIGGER ALL;
RESET session_replication_role;
DELETE FROM lost_t WHERE id = 1;
SELECT is((SELECT string_agg(p ->> 'kind', ',') FROM ehrledger.verify('lost_t') v, jsonb_array_elements(v.problems) p),
    'missing_row', 'a sealed row gone: missing_row');
SELECT is((SELECT rows_lost || ' ' || rows_restored
             FROM ehrledger._recover_lost_rows('2026-01-01 00:00:00+00', (SELECT height FROM lost_blk))),
    '1 0', 'a rejoin that took this block back finds one of its rows lost (the other is here), and restores none (not shared)');
SELECT is((SELECT string_agg((p ->> 'kind') || ' ' || (p ->> 'block') || ' ' || (p ->> 'ledger_seq'), ',')
             FROM ehrledger.verify('lost_t') v, jsonb_array_elements(v.problems) p),
    (SELECT 'lost_in_restore ' || height || ' ' || seq1 FROM lost_blk),
    'verify() names it lost_in_restore, with its block and ledger_seq');
DELETE FROM lost_t WHERE id = 2;
SELECT is((SELECT string_agg(p ->> 'kind', ',' ORDER BY (p ->> 'ledger_seq')::bigint)
             FROM ehrledger.verify('lost_t') v, jsonb_array_elements(v.problems) p),
    'lost_in_restore,missing_row', 'a row of the same block deleted after the rejoin is missing_row');
UPDATE ehrledger.lost_row SET block_hash = sha256('another block') WHERE ledger_seq = (SELECT seq1 FROM lost_blk);
SELECT is((SELECT string_agg(p ->> 'kind', ',') FROM ehrledger.verify('lost_t') v, jsonb_array_elements(v.problems) p),
    'missing_row,missing_row', 'a record that names another block than the one at that height does not count');
UPDATE ehrledger.lost_row l SET block_hash = b.block_hash FROM ehrledger.block b
 WHERE b.origin = ehrledger.node_name() AND b.height = (SELECT height FROM lost_blk) AND l.ledger_seq = (SELECT seq1 FROM lost_blk);
SET session_replication_role = replica;
ALTER TABLE lost_t ENABLE ALWAYS TRIGGER zz_ehrledger_insert, ENABLE ALWAYS TRIGGER ehrledger_append_only,
    ENABLE ALWAYS TRIGGER ehrledger_no_truncate;
RESET session_replication_role;
CREATE ROLE lost_owner;
ALTER TABLE lost_t OWNER TO lost_owner;
SET ROLE lost_owner;
SELECT throws_ok($$INSERT INTO ehrledger.lost_row SELECT * FROM ehrledger.lost_row$$, '42501', NULL,
    'the table''s owner cannot record a row as lost');
SELECT throws_ok($$SELECT ehrledger._recover_lost_rows(now(), 1)$$, '42501', NULL, 'nor run the rejoin''s recording');
SELECT throws_ok($$SELECT ehrledger._restore_row('lost_t', 1, sha256(''), 'SELECT 1')$$, '42501', NULL, 'nor restore a row');
RESET ROLE;

-- A lost row comes back only if its copy encodes to the leaf its block
-- holds: a changed copy, or two rows, are refused and nothing is inserted.
SELECT throws_ok(format($$SELECT ehrledger._restore_row('lost_t', %s, (SELECT leaf_hash FROM ehrledger.lost_row WHERE ledger_seq = %s),
                    'INSERT INTO public.lost_t (id, v, ledger_seq, ledger_hash) VALUES (1, ''forged'', %s, NULL)')$$,
                  seq1, seq1, seq1), 'XX001', NULL, 'a copy that is not the sealed row is refused') FROM lost_blk;
SELECT throws_ok(format($$SELECT ehrledger._restore_row('lost_t', %s, (SELECT leaf_hash FROM ehrledger.lost_row WHERE ledger_seq = %s),
                    'INSERT INTO public.lost_t (id, v, ledger_seq, ledger_hash, ledger_salt) VALUES (1, ''a'', %s, NULL, ''\x%s''), (3, ''c'', %s, NULL, ''\x%s'')')$$,
                  seq1, seq1, seq1, encode(c.ledger_salt, 'hex'), seq1, encode(c.ledger_salt, 'hex')), 'XX001', NULL, 'a restore of more than the one row is refused')
  FROM lost_blk, lost_copy c;
-- The leaf commits to the row's salt: the copy must bring it.
SELECT throws_ok(format($$SELECT ehrledger._restore_row('lost_t', %s, (SELECT leaf_hash FROM ehrledger.lost_row WHERE ledger_seq = %s),
                    'INSERT INTO public.lost_t (id, v, ledger_seq, ledger_hash) VALUES (1, ''a'', %s, NULL)')$$,
                  seq1, seq1, seq1), 'XX001', NULL, 'a copy without its salt is refused') FROM lost_blk;
SELECT lives_ok(format($$SELECT ehrledger._restore_row('lost_t', %s, (SELECT leaf_hash FROM ehrledger.lost_row WHERE ledger_seq = %s),
                    'INSERT INTO public.lost_t (id, v, ledger_seq, ledger_hash, ledger_salt) VALUES (1, ''a'', %s, NULL, ''\x%s'')')$$,
                  seq1, seq1, seq1, encode(c.ledger_salt, 'hex')), 'the sealed row itself comes back, with its salt') FROM lost_blk, lost_copy c;
SELECT is((SELECT string_agg(id || ':' || v || ':' || (ledger_seq = (SELECT seq1 FROM lost_blk))
                            || ':' || (ledger_salt = (SELECT ledger_salt FROM lost_copy)), ',') FROM lost_t),
    '1:a:true:true', 'with its own ledger_seq and salt, as the only row');
SELECT is((SELECT string_agg(p ->> 'kind', ',') FROM ehrledger.verify('lost_t') v, jsonb_array_elements(v.problems) p),
    'missing_row', 'verify() finds it again; only the row deleted after the rejoin is missing');

-- seal() by hand waits, as the sealer does, until this node learned from
-- its peers after this start, when it had peers before the start.
INSERT INTO ehrledger.peer (name, conninfo, public_key, added_at)
    VALUES ('old_peer', 'host=nowhere', (SELECT public_key FROM ehrledger.keypair()), '-infinity');
SELECT throws_ok($$SELECT ehrledger.seal()$$, 'LD030', NULL,
    'seal() by hand is refused before the rejoin for this start, when a peer predates the start');
INSERT INTO ehrledger.rejoin (started_at, peers_reached, blocks_taken_back, rows_taken_back, acks_taken_back,
                              peer_blocks_fetched, wal_switches)
    VALUES (pg_postmaster_start_time(), 3, 0, 0, 0, 0, 0);
SELECT lives_ok($$SELECT ehrledger.seal()$$, 'and works once ehrledger.rejoin has its row for this start');

-- A TRUNCATE of the tables peers send is refused (a peer's, in the apply
-- worker, with LD031, which the sealer's round turns into a skip: see
-- test/t/021_network_recovery.pl, part 8).
SELECT throws_ok($$TRUNCATE ehrledger.shared_row$$, 'LD001', NULL, 'shared_row cannot be truncated');
SELECT is(ehrledger._skip_peer_truncates(), 0, 'the sealer''s round has no TRUNCATE of a peer to skip');
SET ROLE lost_owner;
SELECT throws_ok($$SELECT * FROM ehrledger._peer_truncates()$$, '42501', NULL, 'a role with no grants cannot read them');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
