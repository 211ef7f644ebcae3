-- network/states.sql: the one place a block moves from state to state.
--
-- Every block held here is in one state; ehrledger._block_state(origin,
-- height) names it, and the view ehrledger._block_states names them all.
--
--   a peer's block                                   this node's block
--
--   arrives (the apply worker, in                    sealed (seal.c stores it;
--   replica mode; network.c checks its               network.c's
--   signature, soundness and chain)                  network_block_sealed())
--      |                                                  |
--      +-- predecessor missing --> pending                | _to_acknowledged:
--      |   (_to_pending)           (held_block)           | its own ack stored
--      |                              |                   v
--      |<--- predecessor stored ------+                acknowledged
--      |     (_release_held)          |                (waiting for a quorum)
--      |                              +-- beyond          |
--      |                                  max_held_blocks:|
--      |                                  rejected        |
--      |                                  (rejected_row)  |
--      +-- the same block again --> skipped               |
--      +-- fails ---------------> rejected                |
--      |   (_to_rejected)         (rejected_block,        |
--      |                           WARNING)               |
--      +-- sound, from a live --> admitted                |
--          peer with its key,     (ehrledger.block; this  |
--          height not taken       node acknowledges it:   |
--          (_to_admitted)         _to_acknowledged)       |
--                                    |                    |
--                                    +---------+----------+
--                                              | a quorum of acks
--                                              v (_to_final)
--                                            final (final_block,
--                                            with its certificate)
--
--   Two signed statements that conflict, wherever they meet (two headers
--   of one height signed by their origin, two acks of one height by one
--   member) --> evidence (_to_evidence: ehrledger.evidence).
--
--   An acknowledgment arrives (a peer's; this node's own is judged alike):
--      +-- of a block of a hospital not a peer yet --> held (held_ack,
--      |   _ack_to_held); judged once it is a peer (_release_all_held)
--      +-- not a member's, not validly signed, or of a header its origin
--      |   did not sign --> refused (WARNING)
--      +-- its acker acknowledged another hash at that height --> evidence
--      +-- counted (ehrledger.ack, _ack_to_counted) --> its block may
--          become final (_to_final)
--
-- Who calls: the triggers on ehrledger.block and ehrledger.ack
-- (network.sql; they fire in replica mode, as the apply worker runs) are a
-- few lines each around the functions here; network.c's block_arrived()
-- checks what only C can and asks _to_admitted(); the sealer calls
-- _to_acknowledged() for each block it seals and _check_pending() every
-- round.  (network_status.pending counts the blocks stored here that are
-- not final yet, sealed, acknowledged or admitted; blocks in the pending
-- state are not stored yet.)

-- The states ---------------------------------------------------------------

-- Every block held here, with its state: one branch a state, which says
-- what the state is.  A rejected block may share its (origin, height) with
-- the block stored there.  (Each branch's state is a constant, so that a
-- query on some states reads only their branches.)
CREATE VIEW ehrledger._block_states WITH (security_barrier=true) AS
    SELECT b.origin, b.height, b.block_hash, 'final' AS state
      FROM ehrledger.block b
     WHERE EXISTS (SELECT 1 FROM ehrledger.final_block f WHERE f.origin = b.origin AND f.height = b.height)
    UNION ALL
    SELECT b.origin, b.height, b.block_hash, 'admitted'
      FROM ehrledger.block b
     WHERE b.origin <> (SELECT ehrledger.node_name())
       AND NOT EXISTS (SELECT 1 FROM ehrledger.final_block f WHERE f.origin = b.origin AND f.height = b.height)
    UNION ALL
    SELECT b.origin, b.height, b.block_hash, 'acknowledged'
      FROM ehrledger.block b
     WHERE b.origin = (SELECT ehrledger.node_name())
       AND EXISTS (SELECT 1 FROM ehrledger.ack a
                    WHERE a.origin = b.origin AND a.height = b.height AND a.acker = b.origin
                      AND a.block_hash = b.block_hash)
       AND NOT EXISTS (SELECT 1 FROM ehrledger.final_block f WHERE f.origin = b.origin AND f.height = b.height)
    UNION ALL
    SELECT b.origin, b.height, b.block_hash, 'sealed'
      FROM ehrledger.block b
     WHERE b.origin = (SELECT ehrledger.node_name())
       AND NOT EXISTS (SELECT 1 FROM ehrledger.ack a
                        WHERE a.origin = b.origin AND a.height = b.height AND a.acker = b.origin
                          AND a.block_hash = b.block_hash)
       AND NOT EXISTS (SELECT 1 FROM ehrledger.final_block f WHERE f.origin = b.origin AND f.height = b.height)
    UNION ALL
    SELECT h.origin, h.height, h.block_hash, 'pending' FROM ehrledger.held_block h
    UNION ALL
    SELECT r.origin, r.height, r.block_hash, 'rejected' FROM ehrledger.rejected_block r;
COMMENT ON VIEW ehrledger._block_states IS 'Every block held here and its state: sealed, acknowledged, admitted, final (stored), pending (held back) or rejected.';

-- The state of the block at (origin, height): the stored one's, else
-- pending, else rejected; NULL if none is held here.
CREATE FUNCTION ehrledger._block_state(origin text, height bigint)
 RETURNS text
 LANGUAGE sql
 STABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
    SELECT s.state FROM ehrledger._block_states s
     WHERE s.origin = _block_state.origin AND s.height = _block_state.height
     ORDER BY s.state IN ('pending', 'rejected'), s.state = 'rejected'
     LIMIT 1
$function$;
COMMENT ON FUNCTION ehrledger._block_state(text,bigint) IS 'The state of the block held here at (origin, height): sealed, acknowledged, admitted, final, pending or rejected; NULL if none.';

-- Evidence and rejection ---------------------------------------------------

-- Two statements one hospital signed that cannot both be honest
-- (docs/format.md §18): for an equivocation, two headers of one height
-- signed by their origin (the accused); for a double_ack, two block hashes
-- of one height acknowledged by one member.  statement_a is the one held
-- here first.
CREATE FUNCTION ehrledger._to_evidence(kind text, accused text, origin text, height bigint, signed_a bytea, signature_a bytea, signed_b bytea, signature_b bytea)
 RETURNS void
 LANGUAGE sql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
    INSERT INTO ehrledger.evidence (kind, accused, origin, height, statement_a, statement_b)
        SELECT kind, accused, origin, height,
               pg_catalog.jsonb_build_object(k.field, pg_catalog.encode(signed_a, 'hex'),
                                             'signature', pg_catalog.encode(signature_a, 'hex')),
               pg_catalog.jsonb_build_object(k.field, pg_catalog.encode(signed_b, 'hex'),
                                             'signature', pg_catalog.encode(signature_b, 'hex'))
          FROM (SELECT CASE kind WHEN 'equivocation' THEN 'header' ELSE 'block_hash' END AS field) k
        ON CONFLICT DO NOTHING
$function$;
COMMENT ON FUNCTION ehrledger._to_evidence(text,text,text,bigint,bytea,bytea,bytea,bytea) IS 'Records two conflicting signed statements (an equivocation''s headers, a double_ack''s block hashes) in ehrledger.evidence.';

-- A peer's block refused on arrival: listed with the reason, for the DBA,
-- and logged.
CREATE FUNCTION ehrledger._to_rejected(origin text, height bigint, block_hash bytea, why text)
 RETURNS void
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
BEGIN
    INSERT INTO ehrledger.rejected_block (origin, height, block_hash, reason)
        VALUES (origin, height, block_hash, why);
    RAISE WARNING 'ehrledger refused block % of "%": %', height, origin, why;
END
$function$;
COMMENT ON FUNCTION ehrledger._to_rejected(text,bigint,bytea,text) IS 'A peer''s block refused on arrival: listed in ehrledger.rejected_block with why, and logged.';

-- Final --------------------------------------------------------------------

-- As in 0.3, and naming the membership it is made under.
CREATE FUNCTION ehrledger._certificate(origin text, height bigint)
 RETURNS jsonb
 LANGUAGE sql
 STABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
    SELECT pg_catalog.jsonb_build_object(
        'format', 'ehrledger-certificate-1',
        'origin', b.origin, 'height', b.height,
        'block_hash', pg_catalog.encode(b.block_hash, 'hex'),
        'header', pg_catalog.encode(ehrledger._block_header(b.origin, b.height), 'hex'),
        'origin_signature', pg_catalog.encode(b.signature, 'hex'),
        'quorum', ehrledger.quorum(),
        'membership', (SELECT COALESCE(pg_catalog.max(m.change_seq), 0) FROM ehrledger.membership m),
        'acks', (SELECT COALESCE(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
                        'acker', a.acker, 'public_key', pg_catalog.encode(m.public_key, 'hex'),
                        'signature', pg_catalog.encode(a.signature, 'hex')) ORDER BY a.acker), '[]')
                   FROM ehrledger.ack a JOIN ehrledger._members() m ON m.name = a.acker
                  WHERE a.origin = b.origin AND a.height = b.height AND a.block_hash = b.block_hash
                    AND ehrledger.verify_signature(ehrledger.ack_message(a.origin, a.height, a.block_hash),
                                                   a.signature, m.public_key)))
      FROM ehrledger.block b
     WHERE b.origin = _certificate.origin AND b.height = _certificate.height
$function$;

-- A stored block becomes final once its acknowledgments make a quorum: its
-- certificate goes to ehrledger.final_block.
CREATE FUNCTION ehrledger._to_final(origin text, height bigint)
 RETURNS void
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    cert pg_catalog.jsonb;
BEGIN
    -- Acks of one block applied at once by two subscriptions: the second
    -- waits here, then counts the first's too.  The lock is the block's
    -- row: only a role that may update the block table can take it (an
    -- advisory lock could be taken by anyone and hold finality back), and
    -- FOR NO KEY UPDATE leaves the acknowledgments' foreign key checks free.
    PERFORM 1 FROM ehrledger.block b
      WHERE b.origin = _to_final.origin AND b.height = _to_final.height
      FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF EXISTS (SELECT 1 FROM ehrledger.final_block f WHERE f.origin = _to_final.origin AND f.height = _to_final.height) THEN
        RETURN;
    END IF;
    cert := ehrledger._certificate(origin, height);
    IF cert IS NOT NULL AND ehrledger._certificate_holds(cert::pg_catalog.text) THEN
        INSERT INTO ehrledger.final_block (origin, height, block_hash, certificate)
            VALUES (origin, height, pg_catalog.decode(cert ->> 'block_hash', 'hex'), cert)
            ON CONFLICT DO NOTHING;
    END IF;
END
$function$;
COMMENT ON FUNCTION ehrledger._to_final(text,bigint) IS 'A stored block with a quorum of acknowledgments becomes final: its certificate goes to ehrledger.final_block.';

-- Acknowledged -------------------------------------------------------------

-- This node acknowledges a stored block, once per (origin, height), and
-- the block becomes final if that makes a quorum: its own block after
-- sealing (sealed to acknowledged), a peer's once admitted (the AFTER
-- INSERT trigger in replica mode).  pg_restore, which brings
-- acknowledgments and finality along, calls neither.
CREATE FUNCTION ehrledger._to_acknowledged(origin text, height bigint)
 RETURNS void
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
BEGIN
    INSERT INTO ehrledger.ack (origin, height, block_hash, acker, signature, header, origin_signature)
        SELECT b.origin, b.height, b.block_hash, ehrledger.node_name(),
               ehrledger._sign_ack(b.origin, b.height, b.block_hash),
               ehrledger._block_header(b.origin, b.height), b.signature
          FROM ehrledger.block b
         WHERE b.origin = _to_acknowledged.origin AND b.height = _to_acknowledged.height
        ON CONFLICT ON CONSTRAINT ack_pkey DO NOTHING;
    PERFORM ehrledger._to_final(origin, height);
END
$function$;
COMMENT ON FUNCTION ehrledger._to_acknowledged(text,bigint) IS 'This node signs its acknowledgment of a stored block (once per origin and height), which becomes final if that makes a quorum.';

-- A peer's block: pending, admitted or rejected ----------------------------

-- A peer's block whose predecessor is not here yet is pending: held in
-- ehrledger.held_block, not judged, until the predecessor is stored
-- (_release_held()).  Only a block signed with its origin's pinned key is
-- held; anything else goes on to be judged, and rejected.  Beyond
-- ehrledger.max_held_blocks it is rejected here, in ehrledger.rejected_row
-- (without its leaves).  Whether the block leaves the stream: held (now or
-- before) or rejected.
CREATE FUNCTION ehrledger._to_pending(arrived ehrledger.block)
 RETURNS boolean
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
 SET bytea_output TO 'hex'
AS $function$
DECLARE
    cap    pg_catalog.int4 := COALESCE(pg_catalog.current_setting('ehrledger.max_held_blocks', true), '1000')::pg_catalog.int4;
    stored pg_catalog.int8;
    why    pg_catalog.text;
BEGIN
    IF arrived.height IS NULL OR arrived.height <= 1 OR arrived.origin IS NULL
       OR EXISTS (SELECT 1 FROM ehrledger.block b WHERE b.origin = arrived.origin AND b.height = arrived.height - 1) THEN
        RETURN false;
    END IF;
    IF arrived.origin = ehrledger.node_name()
       OR pg_catalog.octet_length(arrived.block_hash) IS DISTINCT FROM 32
       OR pg_catalog.octet_length(arrived.signature) IS DISTINCT FROM 64
       OR NOT EXISTS (SELECT 1 FROM ehrledger.peer p
                       WHERE p.name = arrived.origin AND p.removed_at IS NULL AND p.public_key = arrived.public_key)
       OR NOT ehrledger.verify_signature(arrived.block_hash, arrived.signature, arrived.public_key) THEN
        RETURN false;
    END IF;
    IF EXISTS (SELECT 1 FROM ehrledger.held_block k
                WHERE k.origin = arrived.origin AND k.height = arrived.height AND k.block_hash = arrived.block_hash) THEN
        RETURN true;
    END IF;
    stored := (SELECT COALESCE(pg_catalog.max(b.height), 0) FROM ehrledger.block b WHERE b.origin = arrived.origin);
    IF arrived.height - stored > cap THEN
        why := pg_catalog.format('held back, it would be %s heights beyond the %s stored (ehrledger.max_held_blocks = %s)',
                                 arrived.height - stored, stored, cap);
    ELSIF (SELECT pg_catalog.count(*) FROM ehrledger.held_block k WHERE k.origin = arrived.origin) >= cap THEN
        why := pg_catalog.format('%s blocks of its origin are held back already (ehrledger.max_held_blocks)', cap);
    END IF;
    IF why IS NOT NULL THEN
        INSERT INTO ehrledger.rejected_row (table_name, operation, origin, reason, "row")
            VALUES ('block', 'INSERT', arrived.origin, why, pg_catalog.to_jsonb(arrived) - 'leaves');
        RAISE WARNING 'ehrledger refused block % of "%": %', arrived.height, arrived.origin, why;
        RETURN true;
    END IF;
    INSERT INTO ehrledger.held_block (origin, height, block_hash, block)
        VALUES (arrived.origin, arrived.height, arrived.block_hash, pg_catalog.to_jsonb(arrived))
        ON CONFLICT DO NOTHING;
    RAISE LOG 'ehrledger holds block % of "%" back until block % of "%" is here',
        arrived.height, arrived.origin, arrived.height - 1, arrived.origin;
    RETURN true;
END
$function$;
COMMENT ON FUNCTION ehrledger._to_pending(ehrledger.block) IS 'A peer''s block whose predecessor is not here yet is held back (or, beyond ehrledger.max_held_blocks, rejected); whether it left the stream.';

-- Pending blocks at (origin, height), now that their predecessor is here,
-- arrive again: each is inserted again in replica mode, where every check
-- runs as for a block that just came, and is admitted or rejected; an
-- error rejects it too, never raised.  Only in replica mode: in any other,
-- the insert would skip the checks.
CREATE FUNCTION ehrledger._release_held(origin text, height bigint)
 RETURNS integer
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    h ehrledger.held_block%ROWTYPE;
    n pg_catalog.int4 := 0;
BEGIN
    IF pg_catalog.current_setting('session_replication_role') <> 'replica' THEN
        RAISE EXCEPTION 'held blocks are admitted in replica mode only' USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    FOR h IN DELETE FROM ehrledger.held_block k
              WHERE k.origin = _release_held.origin AND k.height = _release_held.height
             RETURNING k.* LOOP
        BEGIN
            INSERT INTO ehrledger.block SELECT (pg_catalog.jsonb_populate_record(NULL::ehrledger.block, h.block)).*;
            n := n + 1;
        EXCEPTION WHEN OTHERS THEN
            PERFORM ehrledger._to_rejected(h.origin, h.height, h.block_hash, 'held back, then: ' || SQLERRM);
        END;
    END LOOP;
    RETURN n;
END
$function$;
COMMENT ON FUNCTION ehrledger._release_held(text,bigint) IS 'Admits, through every admission check, the blocks held back at one (origin, height); replica mode only.';

-- The verdict on a peer's block that arrived, once network.c's
-- block_arrived() has checked its signature, its soundness and its link to
-- its origin's chain (fault: why not, or NULL).  Admitted (true: the
-- trigger stores it, and this node acknowledges it after the insert) if it
-- also comes from a live peer, with that peer's key, at a height not held
-- yet; the same block again is skipped (false); anything else is rejected
-- (false).  Another block already held at its height, or an
-- acknowledgment's header of that height that differs, is equivocation by
-- its origin: evidence.
CREATE FUNCTION ehrledger._to_admitted(origin text, height bigint, block_hash bytea, public_key bytea, fault text, header bytea, signature bytea)
 RETURNS boolean
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    peer  ehrledger.peer%ROWTYPE;
    held  ehrledger.block%ROWTYPE;
    why   pg_catalog.text := fault;
BEGIN
    SELECT * INTO peer FROM ehrledger.peer p WHERE p.name = _to_admitted.origin AND p.removed_at IS NULL;
    IF origin = ehrledger.node_name() THEN
        why := 'it claims to come from this node';
    ELSIF NOT FOUND THEN
        why := 'its origin is not a peer';
    ELSIF peer.public_key <> public_key THEN
        why := 'it is not signed with the origin''s key';
    END IF;
    SELECT * INTO held FROM ehrledger.block b WHERE b.origin = _to_admitted.origin AND b.height = _to_admitted.height;
    IF FOUND AND why IS NULL THEN
        IF held.block_hash = block_hash THEN
            RETURN false;
        END IF;
        PERFORM ehrledger._to_evidence('equivocation', origin, origin, height, ehrledger._block_header(origin, height),
                                       held.signature, header, signature);
        why := 'another block of this height is held: equivocation';
    END IF;
    IF why IS NULL THEN
        -- A peer's acknowledgment may have brought another header of this
        -- height, signed by the origin, before the origin's block came:
        -- the origin showed different blocks to different hospitals.
        PERFORM ehrledger._to_evidence('equivocation', _to_admitted.origin, _to_admitted.origin, _to_admitted.height,
                                       a.header, a.origin_signature, _to_admitted.header, _to_admitted.signature)
           FROM ehrledger.ack a
          WHERE a.origin = _to_admitted.origin AND a.height = _to_admitted.height
            AND a.block_hash <> _to_admitted.block_hash
          LIMIT 1;
        RETURN true;
    END IF;
    PERFORM ehrledger._to_rejected(origin, height, block_hash, why);
    RETURN false;
END
$function$;
COMMENT ON FUNCTION ehrledger._to_admitted(text,bigint,bytea,bytea,text,bytea,bytea) IS 'The verdict on a peer''s block network.c checked: admitted (true), a duplicate (false), or rejected (false), with evidence of equivocation.';

-- Acknowledgments arriving -------------------------------------------------

-- A member's acknowledgment of a block of a hospital that is not a peer
-- here yet is held in ehrledger.held_ack, and judged once it is
-- (_release_all_held()).  Whether it was held.
CREATE FUNCTION ehrledger._ack_to_held(arrived ehrledger.ack)
 RETURNS boolean
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
BEGIN
    IF EXISTS (SELECT 1 FROM ehrledger._members() m WHERE m.name = arrived.origin)
       OR EXISTS (SELECT 1 FROM ehrledger.peer p WHERE p.name = arrived.origin) THEN
        RETURN false;
    END IF;
    -- (signed by its acker, a member: src/core's acknowledgment rule)
    IF NOT COALESCE(ehrledger._ack_valid(arrived.origin, arrived.height, arrived.block_hash,
                                         (SELECT m.public_key FROM ehrledger._members() m
                                           WHERE m.name = arrived.acker LIMIT 1),
                                         arrived.signature), false) THEN
        RETURN false;
    END IF;
    INSERT INTO ehrledger.held_ack (origin, height, acker, ack)
        VALUES (arrived.origin, arrived.height, arrived.acker, pg_catalog.to_jsonb(arrived))
        ON CONFLICT DO NOTHING;
    RETURN true;
END
$function$;
COMMENT ON FUNCTION ehrledger._ack_to_held(ehrledger.ack) IS 'Holds back a member''s acknowledgment of a block of a hospital not yet a peer; whether it was held.';

-- Whether an acknowledgment counts (and is stored): only a member's valid
-- signature of a header its origin validly signed.  This node's own
-- acknowledgments of blocks it admits are inserted in replica mode too,
-- and judged alike.  A second, different acknowledgment by one member of
-- one (origin, height) is evidence; so is a header that differs from the
-- block held here, whoever relayed it.
CREATE FUNCTION ehrledger._ack_to_counted(arrived ehrledger.ack)
 RETURNS boolean
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    acker_key  pg_catalog.bytea;
    origin_key pg_catalog.bytea;
    earlier    ehrledger.ack%ROWTYPE;
    why        pg_catalog.text;
BEGIN
    SELECT m.public_key INTO acker_key FROM ehrledger._members() m WHERE m.name = arrived.acker;
    SELECT m.public_key INTO origin_key FROM ehrledger._members() m WHERE m.name = arrived.origin;
    IF acker_key IS NULL THEN
        why := 'the acker is not a member of the network';
    ELSIF NOT ehrledger._ack_valid(arrived.origin, arrived.height, arrived.block_hash, acker_key, arrived.signature) THEN
        why := 'the acknowledgment''s signature does not verify';
    END IF;
    IF why IS NULL THEN
        -- Two validly signed acknowledgments by one member of different
        -- hashes at one (origin, height) are evidence, whatever they name.
        SELECT * INTO earlier FROM ehrledger.ack a
         WHERE a.origin = arrived.origin AND a.height = arrived.height AND a.acker = arrived.acker;
        IF FOUND THEN
            IF earlier.block_hash <> arrived.block_hash THEN
                PERFORM ehrledger._to_evidence('double_ack', arrived.acker, arrived.origin, arrived.height,
                                               earlier.block_hash, earlier.signature, arrived.block_hash, arrived.signature);
            END IF;
            RETURN false;
        END IF;
        IF origin_key IS NULL
           OR NOT ehrledger._origin_header_valid(arrived.origin, arrived.height, arrived.block_hash, arrived.header,
                                                 arrived.origin_signature, origin_key) THEN
            why := 'the acknowledged header is not a block signed by its origin';
        END IF;
    END IF;
    IF why IS NOT NULL THEN
        RAISE WARNING 'ehrledger refused an acknowledgment by "%" of block % of "%": %',
            arrived.acker, arrived.height, arrived.origin, why;
        RETURN false;
    END IF;
    PERFORM ehrledger._to_evidence('equivocation', b.origin, b.origin, b.height, ehrledger._block_header(b.origin, b.height),
                                   b.signature, arrived.header, arrived.origin_signature)
       FROM ehrledger.block b
      WHERE b.origin = arrived.origin AND b.height = arrived.height AND b.block_hash <> arrived.block_hash;
    RETURN true;
END
$function$;
COMMENT ON FUNCTION ehrledger._ack_to_counted(ehrledger.ack) IS 'Whether an acknowledgment counts: a member''s valid signature of a header its origin signed; conflicts go to ehrledger.evidence.';

-- The sealer's round -------------------------------------------------------

-- The sealer's round: every held block whose predecessor is here now is
-- admitted (whatever brought the predecessor: the stream, a tablesync, a
-- trigger too deep to admit it), every held acknowledgment whose origin is
-- a peer now is judged, and what was held for a hospital that is no
-- longer a peer is dropped.  The sealer runs as a superuser, which may
-- enter replica mode for the length of this call.
CREATE FUNCTION ehrledger._release_all_held()
 RETURNS integer
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    k record;
    n pg_catalog.int4 := 0;
    role pg_catalog.text := pg_catalog.current_setting('session_replication_role');
BEGIN
    DELETE FROM ehrledger.held_block h
     WHERE NOT EXISTS (SELECT 1 FROM ehrledger.peer p WHERE p.name = h.origin AND p.removed_at IS NULL);
    DELETE FROM ehrledger.held_ack h
     WHERE EXISTS (SELECT 1 FROM ehrledger.peer p WHERE p.name = h.origin AND p.removed_at IS NOT NULL)
        OR NOT EXISTS (SELECT 1 FROM ehrledger.peer p WHERE p.name = h.acker AND p.removed_at IS NULL);
    IF NOT EXISTS (SELECT 1 FROM ehrledger.held_block h JOIN ehrledger.block b
                     ON b.origin = h.origin AND b.height = h.height - 1)
       AND NOT EXISTS (SELECT 1 FROM ehrledger.held_ack h JOIN ehrledger._members() m ON m.name = h.origin) THEN
        RETURN 0;
    END IF;
    IF NOT (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = CURRENT_USER) THEN
        RETURN 0;
    END IF;
    PERFORM pg_catalog.set_config('session_replication_role', 'replica', true);
    -- Acknowledgments whose origin became a peer: judged as if they came now.
    FOR k IN DELETE FROM ehrledger.held_ack h
              WHERE EXISTS (SELECT 1 FROM ehrledger._members() m WHERE m.name = h.origin)
             RETURNING h.ack LOOP
        BEGIN
            INSERT INTO ehrledger.ack SELECT (pg_catalog.jsonb_populate_record(NULL::ehrledger.ack, k.ack)).*;
            n := n + 1;
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'ehrledger could not judge a held acknowledgment: %', SQLERRM;
        END;
    END LOOP;
    FOR k IN SELECT DISTINCT h.origin, h.height FROM ehrledger.held_block h
              WHERE EXISTS (SELECT 1 FROM ehrledger.block b WHERE b.origin = h.origin AND b.height = h.height - 1)
              ORDER BY 1, 2 LOOP
        n := n + ehrledger._release_held(k.origin, k.height);
    END LOOP;
    PERFORM pg_catalog.set_config('session_replication_role', role, true);
    RETURN n;
END
$function$;
COMMENT ON FUNCTION ehrledger._release_all_held() IS 'The sealer''s round: admits held blocks whose predecessor came, judges held acknowledgments whose origin became a peer.';

-- The sealer's round (network.c's ledger_check_pending()): pending blocks
-- whose predecessor came arrive again, peers' TRUNCATEs are skipped, and
-- every block stored but not final with a quorum of acknowledgments is
-- looked at again: acknowledgments applied at one moment by different
-- subscriptions each counted only what was committed before them.
CREATE FUNCTION ehrledger._check_pending()
 RETURNS void
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    b record;
    q pg_catalog.int4;
BEGIN
    PERFORM ehrledger._release_all_held();
    PERFORM ehrledger._skip_peer_truncates();
    -- Alone, a node finalizes each block as it stores it: no race to repair.
    IF NOT EXISTS (SELECT 1 FROM ehrledger.peer p WHERE p.removed_at IS NULL) THEN
        RETURN;
    END IF;
    q := ehrledger.quorum();
    FOR b IN SELECT s.origin, s.height FROM ehrledger._block_states s
              WHERE s.state IN ('sealed', 'acknowledged', 'admitted')
                AND (SELECT pg_catalog.count(*) FROM ehrledger.ack a
                      WHERE a.origin = s.origin AND a.height = s.height
                        AND a.block_hash = s.block_hash) >= q
              ORDER BY s.origin, s.height LOOP
        PERFORM ehrledger._to_final(b.origin, b.height);
    END LOOP;
END
$function$;

-- The states as users read them --------------------------------------------

CREATE FUNCTION ehrledger.block_status(origin text, height bigint)
 RETURNS TABLE(block_hash bytea, acks integer, quorum integer, final boolean, certificate jsonb)
 LANGUAGE plpgsql
 STABLE SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    state pg_catalog.text := ehrledger._block_state(origin, height);
    cert  pg_catalog.jsonb;
BEGIN
    IF state IS NULL OR state IN ('pending', 'rejected') THEN
        RAISE EXCEPTION 'no block % of "%" is held here', height, origin USING ERRCODE = 'LD007';
    END IF;
    cert := CASE WHEN state = 'final'
                 THEN (SELECT f.certificate FROM ehrledger.final_block f
                        WHERE f.origin = block_status.origin AND f.height = block_status.height)
                 ELSE ehrledger._certificate(origin, height) END;
    RETURN QUERY SELECT pg_catalog.decode(cert ->> 'block_hash', 'hex'),
                        pg_catalog.jsonb_array_length(cert -> 'acks')::pg_catalog.int4,
                        (cert ->> 'quorum')::pg_catalog.int4,
                        state = 'final',
                        cert;
END
$function$;
COMMENT ON FUNCTION ehrledger.block_status(text,bigint) IS 'A block''s acknowledgments, the quorum, whether it is final, and its certificate.';

CREATE VIEW ehrledger.network_status WITH (security_barrier=true) AS
    SELECT o.origin,
           (SELECT pg_catalog.max(b.height) FROM ehrledger.block b WHERE b.origin = o.origin) AS local_height,
           (SELECT pg_catalog.max(f.height) FROM ehrledger.final_block f WHERE f.origin = o.origin) AS final_height,
           (SELECT pg_catalog.count(*) FROM ehrledger._block_states s
             WHERE s.origin = o.origin AND s.state IN ('sealed', 'acknowledged', 'admitted')) AS pending,
           ehrledger.quorum() AS quorum
      FROM (SELECT name AS origin FROM ehrledger._members()) o;
COMMENT ON VIEW ehrledger.network_status IS 'Per hospital: the newest block held here, the newest final one, and how many wait for a quorum.';

-- Privileges ---------------------------------------------------------------
GRANT SELECT ON ehrledger.network_status TO PUBLIC;
REVOKE ALL ON FUNCTION
    ehrledger._block_state(text,bigint),
    ehrledger._to_evidence(text,text,text,bigint,bytea,bytea,bytea,bytea),
    ehrledger._to_rejected(text,bigint,bytea,text),
    ehrledger._certificate(text,bigint),
    ehrledger._to_final(text,bigint),
    ehrledger._to_acknowledged(text,bigint),
    ehrledger._to_pending(ehrledger.block),
    ehrledger._release_held(text,bigint),
    ehrledger._to_admitted(text,bigint,bytea,bytea,text,bytea,bytea),
    ehrledger._ack_to_held(ehrledger.ack),
    ehrledger._ack_to_counted(ehrledger.ack),
    ehrledger._release_all_held(),
    ehrledger._check_pending()
    FROM PUBLIC;
