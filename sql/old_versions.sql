-- The current library serves every earlier schema: a database may run
-- 0.1, 0.2 or 0.3 until ALTER EXTENSION ehrledger UPDATE.  Protecting,
-- writing, sealing, verifying, digests and proofs work at each (or say
-- clearly that the schema is too old), and everything works after the
-- update.
SET client_min_messages = warning;
CREATE ROLE regress_old_reader;
-- From the source directory, so that errors name the steps' file the same
-- way wherever the test runs.
\getenv abs_srcdir PG_ABS_SRCDIR
\cd :abs_srcdir
\set v '0.1'
\i sql/include/old_version.sql
\set v '0.2'
\i sql/include/old_version.sql
\set v '0.3'
\i sql/include/old_version.sql

-- Access log entries sealed under 0.3, before access_event had a column for
-- the client's address: a break-glass (written by SQL) and a read (written
-- by the access log writer, which the current library gives the 0.3
-- _log_access()).  After the update they still verify, with no address.
CREATE EXTENSION ehrledger VERSION '0.3';
CREATE TABLE old_ward (id int PRIMARY KEY, patient text NOT NULL);
SELECT ehrledger.protect('old_ward', patient_column => 'patient');
INSERT INTO old_ward VALUES (1, 'p1'), (2, 'p2');
CREATE ROLE regress_old_nurse;
GRANT SELECT ON old_ward TO regress_old_nurse;
SELECT ehrledger.register_actor('nurse-1', 'provider', (SELECT public_key FROM ehrledger.keypair()), 'regress_old_nurse');
-- 0.3 broke the glass only for registered patients.
SELECT ehrledger.register_actor('p1', 'patient', (SELECT public_key FROM ehrledger.keypair()));
SET ROLE regress_old_nurse;
SELECT ehrledger.break_glass('p1', 'collapsed in the ward') > 0 AS glass_opened;
SELECT id FROM old_ward;
RESET ROLE;
SELECT action, actor, patients FROM ehrledger.access_event ORDER BY ledger_seq;
SELECT ehrledger.seal() > 0 AS sealed;
SELECT ok, rows_checked, problems FROM ehrledger.verify('ehrledger.access_event');
ALTER EXTENSION ehrledger UPDATE;
SELECT ok, rows_checked, problems FROM ehrledger.verify('ehrledger.access_event');
SELECT action, client_addr FROM ehrledger.access_log ORDER BY event_seq;
-- A read after the update is recorded with the new column (NULL: this
-- session came over a Unix socket), and everything verifies.
SET ROLE regress_old_nurse;
SELECT id FROM old_ward;
RESET ROLE;
SELECT count(*) AS reads, count(client_addr) AS with_address
  FROM ehrledger.access_event WHERE action = 'read';
SELECT ehrledger.seal() > 0 AS sealed;
SELECT ok, problems FROM ehrledger.verify();
DROP EXTENSION ehrledger CASCADE;
DROP SCHEMA ehrledger CASCADE;
DROP TABLE old_ward;
DROP ROLE regress_old_nurse;

-- A peer's block arriving under 0.3: the current library's check
-- (ehrledger.block_arrived) hands its verdict to 0.3's _admit_block(), and
-- a block it seals to 0.3's _acknowledge(), until the update brings
-- _to_admitted() and _to_acknowledged() (src/network/states.sql).
CREATE EXTENSION ehrledger VERSION '0.3';
INSERT INTO ehrledger.peer (name, conninfo, public_key)
    VALUES ('old-peer', 'host=nowhere', decode(repeat('ab', 32), 'hex'));
-- A block of old-peer whose fields do not hash to block_hash, as the apply
-- worker would insert it.
CREATE FUNCTION pg_temp.forged_block(block_hash bytea) RETURNS void LANGUAGE sql AS $$
    INSERT INTO ehrledger.block (origin, height, prev_hash, history_root, root, block_hash, first_seq, last_seq,
                                 row_count, sealed_at, public_key, signature, history_frontier, leaves_hash, leaves)
        VALUES ('old-peer', 1, decode(repeat('00', 32), 'hex'), decode(repeat('00', 32), 'hex'),
                decode(repeat('00', 32), 'hex'), block_hash, 1, 1, 0, now(), decode(repeat('ab', 32), 'hex'),
                decode(repeat('00', 64), 'hex'), decode(repeat('00', 32), 'hex'), decode(repeat('00', 32), 'hex'), '')
$$;
CREATE TABLE old_net (id int PRIMARY KEY);
SELECT ehrledger.protect('old_net');
\set n 1
\i sql/include/old_network.sql
ALTER EXTENSION ehrledger UPDATE;
\set n 2
\i sql/include/old_network.sql
SELECT origin, height, reason, ehrledger._block_state(origin, height) AS state
  FROM ehrledger.rejected_block ORDER BY rejected_at;
DROP EXTENSION ehrledger CASCADE;
DROP SCHEMA ehrledger CASCADE;
DROP TABLE old_net;
DROP ROLE regress_old_reader;
