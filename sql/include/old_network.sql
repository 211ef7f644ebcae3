-- The network's C paths under the schema installed now (psql variable n,
-- a round number): this node seals a block and acknowledges it, and a
-- forged block of old-peer arrives, as the apply worker inserts it, and is
-- rejected.  Included by old_versions.sql before and after the update.
INSERT INTO old_net VALUES (:n);
SELECT ehrledger.seal() > 0 AS sealed;
SELECT count(*) AS own_acks FROM ehrledger.ack WHERE acker = ehrledger.node_name();
SET session_replication_role = replica;
SELECT pg_temp.forged_block(sha256(convert_to('round ' || :'n', 'UTF8')));
RESET session_replication_role;
SELECT origin, height, reason FROM ehrledger.rejected_block ORDER BY rejected_at;
SELECT count(*) AS stored FROM ehrledger.block WHERE origin = 'old-peer';
