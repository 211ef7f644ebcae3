-- network/network.sql: the hospital network.
--
-- Each hospital publishes its own blocks, acknowledgments and shared rows
-- (publication ehrledger_net) and subscribes to every peer's.  In the apply
-- worker (replica mode) the triggers here check a peer's block before it is
-- stored (src/network/network.c, src/core's rules): a block is held until its
-- predecessor arrives, admitted, or rejected; this node acknowledges an
-- admitted block once per (origin, height); a block with a quorum of
-- acknowledgments is final, with a certificate in ehrledger.final_block.
-- Conflicting signed statements are evidence.  Membership changes are
-- ledgered (ehrledger.membership); after every start a hospital learns from
-- its peers how far its chain reached (_learn_from_peers(), ehrledger.rejoin).

-- Tables and sequences ----------------------------------------------------

CREATE TABLE ehrledger.peer (
    name text NOT NULL,
    conninfo text NOT NULL,
    public_key bytea NOT NULL,
    added_at timestamp with time zone DEFAULT now() NOT NULL,
    removed_at timestamp with time zone,
    CONSTRAINT peer_pkey PRIMARY KEY (name),
    CONSTRAINT peer_public_key_check CHECK ((octet_length(public_key) = 32))
);
COMMENT ON TABLE ehrledger.peer IS 'The other hospitals of the network, with the key their blocks and acknowledgments must carry.';

-- One acknowledgment per (origin, height, acker): the acker's signature of
-- ack_message(origin, height, block_hash), with the origin-signed header it
-- acknowledged, so that a conflicting header elsewhere is evidence.
CREATE TABLE ehrledger.ack (
    origin text NOT NULL,
    height bigint NOT NULL,
    block_hash bytea NOT NULL,
    acker text NOT NULL,
    signature bytea NOT NULL,
    header bytea NOT NULL,
    origin_signature bytea NOT NULL,
    acked_at timestamp with time zone DEFAULT clock_timestamp() NOT NULL,
    CONSTRAINT ack_pkey PRIMARY KEY (origin, height, acker)
);
COMMENT ON TABLE ehrledger.ack IS 'Signed acknowledgments of blocks, by this node and by its peers.';

-- Two signed statements that cannot both be honest.
CREATE TABLE ehrledger.evidence (
    evidence_id bigint GENERATED ALWAYS AS IDENTITY,
    kind text NOT NULL,
    accused text NOT NULL,
    origin text NOT NULL,
    height bigint NOT NULL,
    statement_a jsonb NOT NULL,
    statement_b jsonb NOT NULL,
    detected_at timestamp with time zone DEFAULT clock_timestamp() NOT NULL,
    CONSTRAINT evidence_kind_check CHECK ((kind = ANY (ARRAY['equivocation'::text, 'double_ack'::text]))),
    CONSTRAINT evidence_pkey PRIMARY KEY (evidence_id)
);
COMMENT ON TABLE ehrledger.evidence IS 'Proof of a peer''s misbehaviour: two statements signed with its key that conflict (docs/format.md §18).';

-- Blocks that reached a quorum, with their certificate.
CREATE TABLE ehrledger.final_block (
    origin text NOT NULL,
    height bigint NOT NULL,
    block_hash bytea NOT NULL,
    certificate jsonb NOT NULL,
    final_at timestamp with time zone DEFAULT clock_timestamp() NOT NULL,
    CONSTRAINT final_block_pkey PRIMARY KEY (origin, height)
);
COMMENT ON TABLE ehrledger.final_block IS 'Blocks acknowledged by a quorum of hospitals, each with the certificate that proves it.';

-- Blocks refused on arrival, and why: for the DBA, not evidence.
CREATE TABLE ehrledger.rejected_block (
    origin text,
    height bigint,
    block_hash bytea,
    reason text NOT NULL,
    rejected_at timestamp with time zone DEFAULT clock_timestamp() NOT NULL
);

CREATE TABLE ehrledger.shared_row (
    origin text NOT NULL,
    table_name text NOT NULL,
    table_id integer NOT NULL,
    ledger_seq bigint NOT NULL,
    columns jsonb NOT NULL,
    "row" jsonb NOT NULL,
    received_at timestamp with time zone DEFAULT clock_timestamp() NOT NULL,
    CONSTRAINT shared_row_pkey PRIMARY KEY (origin, ledger_seq)
);
COMMENT ON TABLE ehrledger.shared_row IS 'Rows of shared tables: this node''s, as sent, and its peers'', as received. Read them through ehrledger.shared_rows.';

-- Blocks that came before their predecessor (a peer restarted while its
-- subscriptions were still catching up, a tablesync raced the stream):
-- held back here, not refused, and admitted through the usual checks once
-- the predecessor is stored (ehrledger._release_held()).  Only a block
-- signed with its origin's key is held: anything else is refused as before.
CREATE TABLE ehrledger.held_block (
    origin text NOT NULL,
    height bigint NOT NULL,
    block_hash bytea NOT NULL,
    block jsonb NOT NULL,
    held_at timestamp with time zone DEFAULT clock_timestamp() NOT NULL,
    CONSTRAINT held_block_pkey PRIMARY KEY (origin, height, block_hash)
);
COMMENT ON TABLE ehrledger.held_block IS 'Blocks from peers that arrived before their predecessor: admitted, through the usual checks, once it is here.';

-- Acknowledgments of blocks of a hospital that is not a peer here yet
-- (peering is done one hospital at a time: a peer's acknowledgments of a
-- third hospital's blocks may come first): held back too, signed by their
-- acker, a member, and judged once their origin is a peer.  An origin that
-- was a peer and was removed is not waited for.
CREATE TABLE ehrledger.held_ack (
    origin text NOT NULL,
    height bigint NOT NULL,
    acker text NOT NULL,
    ack jsonb NOT NULL,
    held_at timestamp with time zone DEFAULT clock_timestamp() NOT NULL,
    CONSTRAINT held_ack_pkey PRIMARY KEY (origin, height, acker)
);
COMMENT ON TABLE ehrledger.held_ack IS 'Acknowledgments from peers of blocks of a hospital that is not a peer here yet: judged once it is.';

-- What a peer sends that is not a well-formed row of ehrledger.block,
-- ehrledger.ack or ehrledger.shared_row (a NULL, a 63-byte signature, a
-- 31-byte hash, a name that is no node name), and any UPDATE or DELETE a
-- peer's publication sends (a hospital only ever adds rows): recorded
-- here and skipped, never an error in the apply worker, which would retry
-- the same transaction forever and stop everything that peer sends.
CREATE TABLE ehrledger.rejected_row (
    table_name text NOT NULL,
    operation text NOT NULL,
    origin text,
    reason text NOT NULL,
    "row" jsonb,
    rejected_at timestamp with time zone DEFAULT clock_timestamp() NOT NULL
);
COMMENT ON TABLE ehrledger.rejected_row IS 'Rows from peers that were malformed, or changes other than inserts: recorded and skipped.';

-- Membership, ledgered: every add_peer() and remove_peer() (any change of
-- ehrledger.peer's live rows) is a row here, sealed into this node's chain
-- like any ledger row.  A certificate names the newest change it was made
-- under ("membership"), and is judged by the members and the quorum of
-- that membership, not today's: removing a peer does not make the blocks
-- it helped finalize any less final.
CREATE TABLE ehrledger.membership (
    change_seq bigint GENERATED ALWAYS AS IDENTITY,
    change text NOT NULL,
    name text NOT NULL,
    public_key bytea NOT NULL,
    at timestamp with time zone DEFAULT clock_timestamp() NOT NULL,
    by_role name DEFAULT SESSION_USER NOT NULL,
    CONSTRAINT membership_change_check CHECK ((change = ANY (ARRAY['add'::text, 'remove'::text]))),
    CONSTRAINT membership_pkey PRIMARY KEY (change_seq)
);
COMMENT ON TABLE ehrledger.membership IS 'Every change of the network''s membership (add_peer, remove_peer), ledgered; certificates name the change they were made under.';

-- One row per start of the server (pg_postmaster_start_time()) after
-- which this node learned its chain: what it took back, and how long that
-- took.
CREATE TABLE ehrledger.rejoin (
    started_at timestamp with time zone NOT NULL,
    learned_at timestamp with time zone DEFAULT clock_timestamp() NOT NULL,
    peers_reached integer NOT NULL,
    blocks_taken_back integer NOT NULL,
    rows_taken_back bigint NOT NULL,
    acks_taken_back integer NOT NULL,
    peer_blocks_fetched integer NOT NULL,
    wal_switches integer NOT NULL,
    slots_made integer DEFAULT 0 NOT NULL,
    rows_lost bigint DEFAULT 0 NOT NULL,
    rows_restored bigint DEFAULT 0 NOT NULL,
    rows_renumbered bigint DEFAULT 0 NOT NULL,
    CONSTRAINT rejoin_pkey PRIMARY KEY (started_at)
);
COMMENT ON TABLE ehrledger.rejoin IS 'Each start after which this node learned from its peers how far its chain reached, and what it took back.';

-- Functions: membership and quorum ----------------------------------------

CREATE FUNCTION ehrledger._check_conninfo(conninfo text)
 RETURNS void
 LANGUAGE c
 STRICT
 SET search_path TO 'pg_catalog', 'pg_temp'
AS 'MODULE_PATHNAME', $function$ehrledger_check_conninfo$function$;

-- The members (this node and live peers), and the quorum they imply:
-- n = 3f + 1 tolerates f faulty hospitals; a block is final with 2f + 1
-- acknowledgments.  ehrledger.min_quorum may raise it, never lower it.
CREATE FUNCTION ehrledger._members(OUT name text, OUT public_key bytea)
 RETURNS SETOF record
 LANGUAGE sql
 STABLE SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
        SELECT ehrledger.node_name(), ehrledger.node_public_key()
        UNION ALL
        SELECT p.name, p.public_key FROM ehrledger.peer p WHERE p.removed_at IS NULL
    $function$;

CREATE FUNCTION ehrledger.quorum()
 RETURNS integer
 LANGUAGE sql
 STABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
    SELECT GREATEST(ehrledger.quorum_of(n),
                    LEAST(n, pg_catalog.current_setting('ehrledger.min_quorum')::pg_catalog.int4))::pg_catalog.int4
      FROM (SELECT pg_catalog.count(*)::pg_catalog.int4 AS n FROM ehrledger._members()) m
$function$;
COMMENT ON FUNCTION ehrledger.quorum() IS 'Acknowledgments a block needs to be final: ceil((n+f+1)/2) of n members, f = floor((n-1)/3) (ehrledger.min_quorum may raise it up to n).';

-- What this node publishes: its own blocks and its own acknowledgments,
-- inserts only.  (On PostgreSQL 15 a mesh avoids loops this way: rows a node
-- received are never sent on.)  Every hospital runs this before peers
-- subscribe to it; add_peer() runs it too.  A publication cannot belong to
-- an extension, so it is dumped with the database, and brought up to date
-- (the node's name may have changed) when found.
CREATE FUNCTION ehrledger.network_init()
 RETURNS void
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    me pg_catalog.text := ehrledger.node_name();
BEGIN
    IF pg_catalog.current_setting('wal_level') <> 'logical' THEN
        RAISE EXCEPTION 'the hospital network needs wal_level = logical'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Set wal_level = logical and restart the server.';
    END IF;
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_publication p WHERE p.pubname = 'ehrledger_net') THEN
        EXECUTE pg_catalog.format(
            'ALTER PUBLICATION ehrledger_net SET TABLE ehrledger.block WHERE (origin = %L),'
            ' ehrledger.ack WHERE (acker = %L), ehrledger.shared_row WHERE (origin = %L)', me, me, me);
        ALTER PUBLICATION ehrledger_net SET (publish = 'insert');
    ELSE
        EXECUTE pg_catalog.format(
            'CREATE PUBLICATION ehrledger_net FOR TABLE ehrledger.block WHERE (origin = %L),'
            ' ehrledger.ack WHERE (acker = %L), ehrledger.shared_row WHERE (origin = %L)'
            ' WITH (publish = %L)', me, me, me, 'insert');
    END IF;
END
$function$;
COMMENT ON FUNCTION ehrledger.network_init() IS 'Publishes this node''s blocks and acknowledgments to the hospital network; run it on every hospital before adding peers.';

-- A node name as it appears in slot and subscription names.
CREATE FUNCTION ehrledger._slot_part(name text)
 RETURNS text
 LANGUAGE sql
 IMMUTABLE STRICT
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
    SELECT pg_catalog.translate(pg_catalog.lower(name), '-.', '__')
$function$;

CREATE FUNCTION ehrledger.add_peer(name pg_catalog.text, conninfo pg_catalog.text,
                                   public_key pg_catalog.bytea)
    RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    me pg_catalog.text := ehrledger.node_name();
BEGIN
    IF name IS NULL OR conninfo IS NULL OR public_key IS NULL THEN
        RAISE EXCEPTION 'name, conninfo and public_key must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF name !~ '^[A-Za-z0-9._-]{1,63}$' THEN
        RAISE EXCEPTION 'peer name "%" is not a node name', name
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A node name has 1 to 63 letters, digits, ''-'', ''_'' or ''.'': the peer''s ehrledger.node_name.';
    END IF;
    IF pg_catalog.octet_length(public_key) <> 32 THEN
        RAISE EXCEPTION 'public key must be 32 bytes, not %', pg_catalog.octet_length(public_key)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass the peer''s ehrledger.node_public_key().';
    END IF;
    IF name = me OR public_key = ehrledger.node_public_key() THEN
        RAISE EXCEPTION 'a node cannot be its own peer'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF EXISTS (SELECT 1 FROM ehrledger.peer p WHERE p.name = add_peer.name) THEN
        RAISE EXCEPTION 'peer "%" exists already', name USING ERRCODE = 'duplicate_object';
    END IF;
    IF EXISTS (SELECT 1 FROM ehrledger.peer p WHERE p.public_key = add_peer.public_key) THEN
        RAISE EXCEPTION 'another peer has this public key' USING ERRCODE = 'duplicate_object';
    END IF;
    IF pg_catalog.current_setting('wal_level') <> 'logical' THEN
        RAISE EXCEPTION 'the hospital network needs wal_level = logical'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Set wal_level = logical and restart the server.';
    END IF;
    PERFORM ehrledger._check_conninfo(conninfo);
    -- The slot the peer will read this node's blocks from; created before
    -- this transaction writes anything, as logical slots require.  A slot
    -- is not transactional: one left by an earlier, failed add_peer() is
    -- taken over.
    -- (Inside a block with a handler, that is, in a subtransaction whose
    -- end gives back the resource owner.  On PostgreSQL 15, when a
    -- transaction with catalog changes commits while the slot looks for
    -- its consistent point, the decoding code runs that transaction's
    -- invalidations in a subtransaction of its own and leaves
    -- CurrentResourceOwner at the top transaction's, and this PERFORM's
    -- executor then fails to give back its snapshot: "snapshot reference
    -- ... is not owned by resource owner TopTransaction".)
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_replication_slots s WHERE s.slot_name = 'ehrledger_' || ehrledger._slot_part(name)) THEN
        BEGIN
            PERFORM pg_catalog.pg_create_logical_replication_slot('ehrledger_' || ehrledger._slot_part(name), 'pgoutput');
        EXCEPTION WHEN OTHERS THEN
            RAISE;
        END;
    END IF;
    -- A slot is not taken back with a failed transaction: if the rest fails
    -- (the peer cannot be reached, say), the slot goes too.
    BEGIN
        INSERT INTO ehrledger.peer (name, conninfo, public_key) VALUES (name, conninfo, public_key);
        PERFORM ehrledger.network_init();
        -- synchronous_commit: an acknowledgment signed while applying a
        -- block is sent on as soon as it commits, not after the next WAL
        -- writer round.
        EXECUTE pg_catalog.format(
            'CREATE SUBSCRIPTION %I CONNECTION %L PUBLICATION ehrledger_net'
            ' WITH (create_slot = false, slot_name = %L, copy_data = true, enabled = true,'
            ' synchronous_commit = on)',
            'ehrledger_from_' || ehrledger._slot_part(name), conninfo, 'ehrledger_' || ehrledger._slot_part(me));
        -- A subscription to a peer that publishes nothing yet would never
        -- learn its tables.
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_subscription_rel r JOIN pg_catalog.pg_subscription s ON s.oid = r.srsubid
                        WHERE s.subname = 'ehrledger_from_' || ehrledger._slot_part(name)) THEN
            RAISE EXCEPTION 'peer "%" does not publish its blocks yet', name
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      HINT = 'Run SELECT ehrledger.network_init() on that hospital first, then add it again.';
        END IF;
    EXCEPTION WHEN OTHERS THEN
        PERFORM pg_catalog.pg_drop_replication_slot(s.slot_name) FROM pg_catalog.pg_replication_slots s
         WHERE s.slot_name = 'ehrledger_' || ehrledger._slot_part(add_peer.name) AND NOT s.active;
        RAISE;
    END;
END
$$;
COMMENT ON FUNCTION ehrledger.add_peer(text,text,bytea) IS 'Adds a hospital to the network: a slot it reads this node''s blocks from, and a subscription to its blocks and acknowledgments.';

CREATE FUNCTION ehrledger.remove_peer(name text)
 RETURNS void
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    sub pg_catalog.text;
    slot pg_catalog.text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM ehrledger.peer p WHERE p.name = remove_peer.name AND p.removed_at IS NULL) THEN
        RAISE EXCEPTION 'peer "%" does not exist', name USING ERRCODE = 'undefined_object';
    END IF;
    sub := 'ehrledger_from_' || ehrledger._slot_part(name);
    slot := 'ehrledger_' || ehrledger._slot_part(name);
    UPDATE ehrledger.peer p SET removed_at = pg_catalog.now() WHERE p.name = remove_peer.name;
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_subscription s WHERE s.subname = sub) THEN
        EXECUTE pg_catalog.format('ALTER SUBSCRIPTION %I DISABLE', sub);
        EXECUTE pg_catalog.format('ALTER SUBSCRIPTION %I SET (slot_name = NONE)', sub);
        EXECUTE pg_catalog.format('DROP SUBSCRIPTION %I', sub);
    END IF;
    PERFORM pg_catalog.pg_drop_replication_slot(s.slot_name) FROM pg_catalog.pg_replication_slots s
     WHERE s.slot_name = slot AND NOT s.active;
END
$function$;
COMMENT ON FUNCTION ehrledger.remove_peer(text) IS 'Takes a hospital out of the network: its blocks stop arriving and its acknowledgments stop counting.';

-- The quorum of n members: with f = floor((n-1)/3) faulty ones tolerated,
-- ceil((n+f+1)/2), so that any two quorums share at least f+1 members, one
-- of them honest, which never acknowledges two blocks of one height: two
-- conflicting blocks are never both final.  (2f+1 is that only when
-- n = 3f+1: at n = 5 two quorums of 3 could meet in one faulty member
-- alone.)  ehrledger.min_quorum may raise it up to n, never lower it.
CREATE FUNCTION ehrledger.quorum_of(n integer)
 RETURNS integer
 LANGUAGE sql
 IMMUTABLE STRICT
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
    SELECT CASE WHEN n < 1 THEN NULL ELSE (n + (n - 1) / 3 + 2) / 2 END
$function$;
COMMENT ON FUNCTION ehrledger.quorum_of(integer) IS 'The Byzantine quorum of n members: ceil((n+f+1)/2) with f = floor((n-1)/3); any two such quorums share f+1 members.';

-- AFTER INSERT OR UPDATE on ehrledger.peer, whatever the mode: the change
-- to the live membership, unless the membership already shows it (a
-- restore brings both tables back).
CREATE FUNCTION ehrledger._peer_changed()
 RETURNS trigger
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    last ehrledger.membership%ROWTYPE;
BEGIN
    -- A ledgered row makes the sealer wait for this transaction, holding
    -- its lock on the blocks, which add_peer() needs next (to publish):
    -- take that lock first, so that the sealer waits instead.
    LOCK TABLE ehrledger.block IN SHARE UPDATE EXCLUSIVE MODE;
    SELECT * INTO last FROM ehrledger.membership m WHERE m.name = NEW.name ORDER BY m.change_seq DESC LIMIT 1;
    IF NEW.removed_at IS NULL THEN
        IF NOT FOUND OR last.change <> 'add' OR last.public_key <> NEW.public_key THEN
            INSERT INTO ehrledger.membership (change, name, public_key) VALUES ('add', NEW.name, NEW.public_key);
        END IF;
    ELSIF FOUND AND last.change = 'add' THEN
        INSERT INTO ehrledger.membership (change, name, public_key) VALUES ('remove', NEW.name, last.public_key);
    END IF;
    RETURN NULL;
END
$function$;
COMMENT ON FUNCTION ehrledger._peer_changed() IS 'Trigger: ledgers every change of the live membership in ehrledger.membership.';

-- The members a certificate was made under: this node, and the peers
-- live after the membership change it names; a 0.3 certificate, which
-- names none, is judged by the membership when its block became final.
CREATE FUNCTION ehrledger._members_of(certificate jsonb, final_at timestamp with time zone, OUT name text, OUT public_key bytea)
 RETURNS SETOF record
 LANGUAGE sql
 STABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
    SELECT ehrledger.node_name(), ehrledger.node_public_key()
    UNION ALL
    SELECT m.name, m.public_key
      FROM (SELECT DISTINCT ON (k.name) k.name, k.public_key, k.change
              FROM ehrledger.membership k
             WHERE CASE WHEN certificate ? 'membership'
                        THEN k.change_seq <= CASE WHEN certificate ->> 'membership' ~ '^[0-9]{1,18}$'
                                                  THEN (certificate ->> 'membership')::pg_catalog.int8 ELSE -1 END
                        ELSE k.at <= final_at END
             ORDER BY k.name, k.change_seq DESC) m
     WHERE m.change = 'add'
$function$;
COMMENT ON FUNCTION ehrledger._members_of(jsonb,timestamp with time zone) IS 'The members (name, key) of the membership a certificate was made under.';

-- The quorum a certificate must reach: the one it states, and at least
-- the quorum of the membership it was made under (2f+1 for a 0.3
-- certificate, the rule then).
CREATE FUNCTION ehrledger._quorum_of_certificate(certificate jsonb, final_at timestamp with time zone)
 RETURNS integer
 LANGUAGE sql
 STABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
    SELECT GREATEST(CASE WHEN certificate ->> 'quorum' ~ '^[0-9]{1,9}$' THEN (certificate ->> 'quorum')::pg_catalog.int4 END,
                    CASE WHEN certificate ? 'membership' THEN ehrledger.quorum_of(n) ELSE 2 * ((n - 1) / 3) + 1 END)
      FROM (SELECT pg_catalog.count(*)::pg_catalog.int4 AS n FROM ehrledger._members_of(certificate, final_at)) m
$function$;
COMMENT ON FUNCTION ehrledger._quorum_of_certificate(jsonb,timestamp with time zone) IS 'The quorum a certificate must reach: the larger of the one it states and its membership''s.';

-- Functions: a peer's block: held, admitted or rejected -------------------

CREATE FUNCTION ehrledger._block_header(origin text, height bigint)
 RETURNS bytea
 LANGUAGE c
 STABLE STRICT
 SET search_path TO 'pg_catalog', 'pg_temp'
AS 'MODULE_PATHNAME', $function$ehrledger_block_header$function$;

CREATE FUNCTION ehrledger._header_origin(header bytea, OUT origin text, OUT height bigint, OUT public_key bytea)
 RETURNS record
 LANGUAGE c
 IMMUTABLE STRICT
 SET search_path TO 'pg_catalog', 'pg_temp'
AS 'MODULE_PATHNAME', $function$ehrledger_header_origin$function$;

CREATE FUNCTION ehrledger._block_stored()
 RETURNS trigger
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
BEGIN
    PERFORM ehrledger._acknowledge(NEW.origin, NEW.height);
    RETURN NULL;
END
$function$;

-- Decides on a block from a peer that is sound in itself (fault NULL):
-- 'accept', or why not.  Another block already held at its height is
-- equivocation by its origin: both signed headers go to the evidence.
CREATE FUNCTION ehrledger._admit_block(origin text, height bigint, block_hash bytea, public_key bytea, fault text, header bytea, signature bytea)
 RETURNS text
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    peer  ehrledger.peer%ROWTYPE;
    held  ehrledger.block%ROWTYPE;
    why   pg_catalog.text := fault;
BEGIN
    SELECT * INTO peer FROM ehrledger.peer p WHERE p.name = _admit_block.origin AND p.removed_at IS NULL;
    IF origin = ehrledger.node_name() THEN
        why := 'it claims to come from this node';
    ELSIF NOT FOUND THEN
        why := 'its origin is not a peer';
    ELSIF peer.public_key <> public_key THEN
        why := 'it is not signed with the origin''s key';
    END IF;
    SELECT * INTO held FROM ehrledger.block b WHERE b.origin = _admit_block.origin AND b.height = _admit_block.height;
    IF FOUND AND why IS NULL THEN
        IF held.block_hash = block_hash THEN
            RETURN 'duplicate';
        END IF;
        PERFORM ehrledger._equivocation(origin, height, ehrledger._block_header(origin, height), held.signature,
                                        header, signature);
        why := 'another block of this height is held: equivocation';
    END IF;
    IF why IS NULL THEN
        -- A peer's acknowledgment may have brought another header of this
        -- height, signed by the origin, before the origin's block came:
        -- the origin showed different blocks to different hospitals.
        PERFORM ehrledger._equivocation(_admit_block.origin, _admit_block.height, a.header, a.origin_signature,
                                        _admit_block.header, _admit_block.signature)
           FROM ehrledger.ack a
          WHERE a.origin = _admit_block.origin AND a.height = _admit_block.height
            AND a.block_hash <> _admit_block.block_hash
          LIMIT 1;
        RETURN 'accept';
    END IF;
    INSERT INTO ehrledger.rejected_block (origin, height, block_hash, reason)
        VALUES (origin, height, block_hash, why);
    RAISE WARNING 'ehrledger refused block % of "%": %', height, origin, why;
    RETURN why;
END
$function$;

CREATE FUNCTION ehrledger.block_arrived()
 RETURNS trigger
 LANGUAGE c
 SET search_path TO 'pg_catalog', 'pg_temp'
AS 'MODULE_PATHNAME', $function$ehrledger_block_arrived$function$;

-- BEFORE INSERT on ehrledger.block in replica mode, before
-- ehrledger_block_arrived (a table's triggers fire in name order): a block
-- whose predecessor is not here yet is held back instead of refused.
CREATE FUNCTION ehrledger._block_ahead() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    SET bytea_output = hex
AS $$
DECLARE
    cap    pg_catalog.int4 := COALESCE(pg_catalog.current_setting('ehrledger.max_held_blocks', true), '1000')::pg_catalog.int4;
    stored pg_catalog.int8;
    why    pg_catalog.text;
BEGIN
    IF NEW.height IS NULL OR NEW.height <= 1 OR NEW.origin IS NULL
       OR EXISTS (SELECT 1 FROM ehrledger.block b WHERE b.origin = NEW.origin AND b.height = NEW.height - 1) THEN
        RETURN NEW;
    END IF;
    IF NEW.origin = ehrledger.node_name()
       OR pg_catalog.octet_length(NEW.block_hash) IS DISTINCT FROM 32
       OR pg_catalog.octet_length(NEW.signature) IS DISTINCT FROM 64
       OR NOT EXISTS (SELECT 1 FROM ehrledger.peer p
                       WHERE p.name = NEW.origin AND p.removed_at IS NULL AND p.public_key = NEW.public_key)
       OR NOT ehrledger.verify_signature(NEW.block_hash, NEW.signature, NEW.public_key) THEN
        RETURN NEW;
    END IF;
    IF EXISTS (SELECT 1 FROM ehrledger.held_block k
                WHERE k.origin = NEW.origin AND k.height = NEW.height AND k.block_hash = NEW.block_hash) THEN
        RETURN NULL;
    END IF;
    stored := (SELECT COALESCE(pg_catalog.max(b.height), 0) FROM ehrledger.block b WHERE b.origin = NEW.origin);
    IF NEW.height - stored > cap THEN
        why := pg_catalog.format('held back, it would be %s heights beyond the %s stored (ehrledger.max_held_blocks = %s)',
                                 NEW.height - stored, stored, cap);
    ELSIF (SELECT pg_catalog.count(*) FROM ehrledger.held_block k WHERE k.origin = NEW.origin) >= cap THEN
        why := pg_catalog.format('%s blocks of its origin are held back already (ehrledger.max_held_blocks)', cap);
    END IF;
    IF why IS NOT NULL THEN
        INSERT INTO ehrledger.rejected_row (table_name, operation, origin, reason, "row")
            VALUES (TG_TABLE_NAME, TG_OP, NEW.origin, why, pg_catalog.to_jsonb(NEW) - 'leaves');
        RAISE WARNING 'ehrledger refused block % of "%": %', NEW.height, NEW.origin, why;
        RETURN NULL;
    END IF;
    INSERT INTO ehrledger.held_block (origin, height, block_hash, block)
        VALUES (NEW.origin, NEW.height, NEW.block_hash, pg_catalog.to_jsonb(NEW))
        ON CONFLICT DO NOTHING;
    RAISE LOG 'ehrledger holds block % of "%" back until block % of "%" is here',
        NEW.height, NEW.origin, NEW.height - 1, NEW.origin;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION ehrledger._block_ahead() IS 'Trigger (replica mode): holds back a block from a peer whose predecessor is not here yet.';

-- Admits the blocks held back at (origin, height), now that their
-- predecessor is here: each is inserted again in replica mode, where every
-- check of ehrledger_block_arrived runs as for a block that just came.  A
-- block that fails is refused as usual (ehrledger.rejected_block); an
-- error is recorded there too, never raised.  Only in replica mode: in any
-- other, the insert would skip the checks.
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
            INSERT INTO ehrledger.rejected_block (origin, height, block_hash, reason)
                VALUES (h.origin, h.height, h.block_hash, 'held back, then: ' || SQLERRM);
        END;
    END LOOP;
    RETURN n;
END
$function$;
COMMENT ON FUNCTION ehrledger._release_held(text,bigint) IS 'Admits, through every admission check, the blocks held back at one (origin, height); replica mode only.';

-- AFTER INSERT on ehrledger.block in replica mode: a stored block admits
-- its successor if that was held back.  Chains held deeper than a few
-- blocks continue in the sealer's round, not in ever deeper triggers.
CREATE FUNCTION ehrledger._block_successor()
 RETURNS trigger
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
BEGIN
    IF pg_catalog.pg_trigger_depth() <= 8
       AND EXISTS (SELECT 1 FROM ehrledger.held_block k WHERE k.origin = NEW.origin AND k.height = NEW.height + 1) THEN
        PERFORM ehrledger._release_held(NEW.origin, NEW.height + 1);
    END IF;
    RETURN NULL;
END
$function$;
COMMENT ON FUNCTION ehrledger._block_successor() IS 'Trigger (replica mode): a stored block admits its successor if that was held back.';

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

-- Why a row from a peer (to_jsonb of it, bytea in hex) is not well formed,
-- or NULL.  Only the form: what it means is judged by the triggers that
-- follow.
CREATE FUNCTION ehrledger._malformed(tbl text, r jsonb)
 RETURNS text
 LANGUAGE plpgsql
 IMMUTABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    col pg_catalog.text;
    len pg_catalog.int4;
    want pg_catalog.int4;
    name_re CONSTANT pg_catalog.text := '^[A-Za-z0-9._-]{1,63}$';
BEGIN
    IF tbl = 'block' THEN
        IF NOT COALESCE(r ->> 'origin' ~ name_re, false) THEN
            RETURN 'its origin is not a node name';
        END IF;
        -- (sizes and NULLs of blocks: ehrledger.block_arrived refuses them)
        RETURN NULL;
    END IF;
    FOREACH col IN ARRAY CASE tbl
            WHEN 'ack' THEN ARRAY['origin', 'height', 'block_hash', 'acker', 'signature', 'header',
                                  'origin_signature', 'acked_at']
            ELSE ARRAY['origin', 'table_name', 'table_id', 'ledger_seq', 'columns', 'row', 'received_at'] END LOOP
        IF r -> col IS NULL OR pg_catalog.jsonb_typeof(r -> col) = 'null' THEN
            RETURN pg_catalog.format('its %s is NULL', col);
        END IF;
    END LOOP;
    IF NOT (r ->> 'origin') ~ name_re THEN
        RETURN 'its origin is not a node name';
    END IF;
    IF tbl = 'ack' THEN
        IF NOT (r ->> 'acker') ~ name_re THEN
            RETURN 'its acker is not a node name';
        END IF;
        IF (r ->> 'height')::pg_catalog.int8 < 1 THEN
            RETURN 'its height is not positive';
        END IF;
        FOREACH col IN ARRAY ARRAY['block_hash', 'signature', 'origin_signature'] LOOP
            len := pg_catalog.octet_length(pg_catalog.decode(pg_catalog.substr(r ->> col, 3), 'hex'));
            want := (CASE col WHEN 'block_hash' THEN 32 ELSE 64 END);
            IF len <> want THEN
                RETURN pg_catalog.format('its %s is %s bytes, not %s', col, len, want);
            END IF;
        END LOOP;
    ELSE
        IF pg_catalog.jsonb_typeof(r -> 'columns') <> 'array' OR pg_catalog.jsonb_typeof(r -> 'row') <> 'object' THEN
            RETURN 'its columns are not a JSON array or its row not a JSON object';
        END IF;
    END IF;
    RETURN NULL;
END
$function$;
COMMENT ON FUNCTION ehrledger._malformed(text,jsonb) IS 'Why a row a peer sent (to_jsonb, bytea in hex) is not well formed, or NULL.';

-- BEFORE INSERT, UPDATE or DELETE on the tables peers send, in replica
-- mode, before every other trigger there (a table's triggers fire in name
-- order, and "ehrledger_a_" sorts first).
CREATE FUNCTION ehrledger._well_formed()
 RETURNS trigger
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
 SET bytea_output TO 'hex'
AS $function$
DECLARE
    r   pg_catalog.jsonb;
    why pg_catalog.text;
BEGIN
    IF TG_OP = 'INSERT' THEN
        r := pg_catalog.to_jsonb(NEW);
        why := ehrledger._malformed(TG_TABLE_NAME, r);
        IF why IS NULL THEN
            RETURN NEW;
        END IF;
    ELSE
        r := pg_catalog.to_jsonb(OLD);
        why := 'a peer may only add rows, not ' || pg_catalog.lower(TG_OP) || ' them';
    END IF;
    INSERT INTO ehrledger.rejected_row (table_name, operation, origin, reason, "row")
        VALUES (TG_TABLE_NAME, TG_OP, pg_catalog.left(r ->> 'origin', 63), why, r);
    RAISE WARNING 'ehrledger refused a row of ehrledger.% (%) from a peer: %', TG_TABLE_NAME, pg_catalog.lower(TG_OP), why;
    RETURN NULL;
END
$function$;
COMMENT ON FUNCTION ehrledger._well_formed() IS 'Trigger (replica mode, first): records and skips malformed rows, updates and deletes from peers.';

-- Functions: acknowledgments and finality ---------------------------------

CREATE FUNCTION ehrledger.ack_message(origin text, height bigint, block_hash bytea)
 RETURNS bytea
 LANGUAGE c
 IMMUTABLE STRICT
 SET search_path TO 'pg_catalog', 'pg_temp'
AS 'MODULE_PATHNAME', $function$ehrledger_ack_message$function$;
COMMENT ON FUNCTION ehrledger.ack_message(text,bigint,bytea) IS 'The bytes a hospital signs to acknowledge a block (docs/format.md §18).';

CREATE FUNCTION ehrledger._sign_ack(origin text, height bigint, block_hash bytea)
 RETURNS bytea
 LANGUAGE c
 STRICT
 SET search_path TO 'pg_catalog', 'pg_temp'
AS 'MODULE_PATHNAME', $function$ehrledger_sign_ack$function$;

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

-- Records a block as final once it has a quorum of acknowledgments.
CREATE FUNCTION ehrledger._check_final(origin text, height bigint)
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
      WHERE b.origin = _check_final.origin AND b.height = _check_final.height
      FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF EXISTS (SELECT 1 FROM ehrledger.final_block f WHERE f.origin = _check_final.origin AND f.height = _check_final.height) THEN
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

-- As in 0.3, and first the held blocks whose predecessor came.
CREATE FUNCTION ehrledger._check_pending() RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
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
    FOR b IN SELECT k.origin, k.height FROM ehrledger.block k
              WHERE NOT EXISTS (SELECT 1 FROM ehrledger.final_block f
                                 WHERE f.origin = k.origin AND f.height = k.height)
                AND (SELECT pg_catalog.count(*) FROM ehrledger.ack a
                      WHERE a.origin = k.origin AND a.height = k.height
                        AND a.block_hash = k.block_hash) >= q
              ORDER BY k.origin, k.height LOOP
        PERFORM ehrledger._check_final(b.origin, b.height);
    END LOOP;
END
$$;

-- After a block is stored (sealed here, or admitted from a peer): this
-- node acknowledges it, once per (origin, height), and checks finality.
-- The sealer calls it for its own blocks, a replica-mode trigger for
-- admitted ones; pg_restore, which brings acknowledgments and finality
-- along, fires neither.
CREATE FUNCTION ehrledger._acknowledge(origin text, height bigint)
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
         WHERE b.origin = _acknowledge.origin AND b.height = _acknowledge.height
        ON CONFLICT ON CONSTRAINT ack_pkey DO NOTHING;
    PERFORM ehrledger._check_final(origin, height);
END
$function$;

-- Acknowledgments from peers, in replica mode: only a member's valid
-- signature of a validly signed header counts; a second, different ack by
-- the same member for one (origin, height) is evidence.
CREATE FUNCTION ehrledger._ack_arrived()
 RETURNS trigger
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    acker_key  pg_catalog.bytea;
    origin_key pg_catalog.bytea;
    held       ehrledger.ack%ROWTYPE;
    why        pg_catalog.text;
BEGIN
    -- This node's own acknowledgments of blocks it admits are inserted in
    -- replica mode too; like anyone's, they count only if validly signed.
    SELECT m.public_key INTO acker_key FROM ehrledger._members() m WHERE m.name = NEW.acker;
    SELECT m.public_key INTO origin_key FROM ehrledger._members() m WHERE m.name = NEW.origin;
    IF acker_key IS NULL THEN
        why := 'the acker is not a member of the network';
    ELSIF NOT ehrledger._ack_valid(NEW.origin, NEW.height, NEW.block_hash, acker_key, NEW.signature) THEN
        why := 'the acknowledgment''s signature does not verify';
    END IF;
    IF why IS NULL THEN
        -- Two validly signed acknowledgments by one member of different
        -- hashes at one (origin, height) are evidence, whatever they name.
        SELECT * INTO held FROM ehrledger.ack a
         WHERE a.origin = NEW.origin AND a.height = NEW.height AND a.acker = NEW.acker;
        IF FOUND THEN
            IF held.block_hash <> NEW.block_hash THEN
                INSERT INTO ehrledger.evidence (kind, accused, origin, height, statement_a, statement_b)
                    VALUES ('double_ack', NEW.acker, NEW.origin, NEW.height,
                            pg_catalog.jsonb_build_object('block_hash', pg_catalog.encode(held.block_hash, 'hex'),
                                                          'signature', pg_catalog.encode(held.signature, 'hex')),
                            pg_catalog.jsonb_build_object('block_hash', pg_catalog.encode(NEW.block_hash, 'hex'),
                                                          'signature', pg_catalog.encode(NEW.signature, 'hex')))
                    ON CONFLICT DO NOTHING;
            END IF;
            RETURN NULL;
        END IF;
        IF origin_key IS NULL
           OR NOT ehrledger._origin_header_valid(NEW.origin, NEW.height, NEW.block_hash, NEW.header,
                                                 NEW.origin_signature, origin_key) THEN
            why := 'the acknowledged header is not a block signed by its origin';
        END IF;
    END IF;
    IF why IS NOT NULL THEN
        RAISE WARNING 'ehrledger refused an acknowledgment by "%" of block % of "%": %',
            NEW.acker, NEW.height, NEW.origin, why;
        RETURN NULL;
    END IF;
    -- An origin-signed header that differs from the block held here is
    -- equivocation by the origin, whoever relayed it.
    IF EXISTS (SELECT 1 FROM ehrledger.block b WHERE b.origin = NEW.origin AND b.height = NEW.height
                AND b.block_hash <> NEW.block_hash) THEN
        PERFORM ehrledger._equivocation(b.origin, b.height, ehrledger._block_header(b.origin, b.height), b.signature,
                                        NEW.header, NEW.origin_signature)
           FROM ehrledger.block b WHERE b.origin = NEW.origin AND b.height = NEW.height;
    END IF;
    RETURN NEW;
END
$function$;

CREATE FUNCTION ehrledger._ack_stored()
 RETURNS trigger
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
BEGIN
    PERFORM ehrledger._check_final(NEW.origin, NEW.height);
    RETURN NULL;
END
$function$;

CREATE FUNCTION ehrledger.block_status(origin text, height bigint)
 RETURNS TABLE(block_hash bytea, acks integer, quorum integer, final boolean, certificate jsonb)
 LANGUAGE plpgsql
 STABLE SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    cert pg_catalog.jsonb;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM ehrledger.block b WHERE b.origin = block_status.origin AND b.height = block_status.height) THEN
        RAISE EXCEPTION 'no block % of "%" is held here', height, origin USING ERRCODE = 'LD007';
    END IF;
    cert := COALESCE((SELECT f.certificate FROM ehrledger.final_block f
                       WHERE f.origin = block_status.origin AND f.height = block_status.height),
                     ehrledger._certificate(origin, height));
    RETURN QUERY SELECT pg_catalog.decode(cert ->> 'block_hash', 'hex'),
                        pg_catalog.jsonb_array_length(cert -> 'acks')::pg_catalog.int4,
                        (cert ->> 'quorum')::pg_catalog.int4,
                        EXISTS (SELECT 1 FROM ehrledger.final_block f
                                 WHERE f.origin = block_status.origin AND f.height = block_status.height),
                        cert;
END
$function$;
COMMENT ON FUNCTION ehrledger.block_status(text,bigint) IS 'A block''s acknowledgments, the quorum, whether it is final, and its certificate.';

CREATE FUNCTION ehrledger.check_certificate(certificate text, members jsonb DEFAULT NULL::jsonb, OUT verdict text, OUT detail text)
 RETURNS record
 LANGUAGE c
 IMMUTABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS 'MODULE_PATHNAME', $function$ehrledger_check_certificate$function$;
COMMENT ON FUNCTION ehrledger.check_certificate(text,jsonb) IS 'Checks a certificate (docs/format.md §18) as ehrledger-verify does, with the pinned members if given.';

-- The network's rules, once, in src/core: an acknowledgment, a header its
-- origin signed, and a certificate (docs/format.md §18).  The functions that
-- build certificates, finalize blocks and admit acknowledgments call them
-- instead of composing signature checks of their own.
CREATE FUNCTION ehrledger._ack_valid(origin text, height bigint, block_hash bytea, public_key bytea, signature bytea)
 RETURNS boolean
 LANGUAGE c
 IMMUTABLE STRICT
 SET search_path TO 'pg_catalog', 'pg_temp'
AS 'MODULE_PATHNAME', $function$ehrledger_ack_valid$function$;
COMMENT ON FUNCTION ehrledger._ack_valid(text,bigint,bytea,bytea,bytea) IS 'The acknowledgment rule (docs/format.md §18), from src/core: the signature of ack_message(origin, height, block_hash) with public_key.';

CREATE FUNCTION ehrledger._origin_header_valid(origin text, height bigint, block_hash bytea, header bytea, origin_signature bytea, origin_key bytea)
 RETURNS boolean
 LANGUAGE c
 IMMUTABLE STRICT
 SET search_path TO 'pg_catalog', 'pg_temp'
AS 'MODULE_PATHNAME', $function$ehrledger_origin_header_valid$function$;
COMMENT ON FUNCTION ehrledger._origin_header_valid(text,bigint,bytea,bytea,bytea,bytea) IS 'A header its origin signed (docs/format.md §18), from src/core: it hashes to block_hash, names origin and height, carries origin_key, which signed block_hash.';

CREATE FUNCTION ehrledger._certificate_holds(certificate text)
 RETURNS boolean
 LANGUAGE c
 STABLE STRICT
 SET search_path TO 'pg_catalog', 'pg_temp'
AS 'MODULE_PATHNAME', $function$ehrledger_certificate_holds$function$;
COMMENT ON FUNCTION ehrledger._certificate_holds(text) IS 'The certificate rule (docs/format.md §18), from src/core, with this node''s members'' keys and the certificate''s own quorum.';

-- BEFORE INSERT on ehrledger.ack in replica mode, before
-- ehrledger_ack_arrived.
CREATE FUNCTION ehrledger._ack_ahead()
 RETURNS trigger
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    acker_key pg_catalog.bytea;
BEGIN
    IF EXISTS (SELECT 1 FROM ehrledger._members() m WHERE m.name = NEW.origin)
       OR EXISTS (SELECT 1 FROM ehrledger.peer p WHERE p.name = NEW.origin) THEN
        RETURN NEW;
    END IF;
    SELECT m.public_key INTO acker_key FROM ehrledger._members() m WHERE m.name = NEW.acker;
    IF acker_key IS NULL
       OR NOT ehrledger.verify_signature(ehrledger.ack_message(NEW.origin, NEW.height, NEW.block_hash),
                                         NEW.signature, acker_key) THEN
        RETURN NEW;
    END IF;
    INSERT INTO ehrledger.held_ack (origin, height, acker, ack)
        VALUES (NEW.origin, NEW.height, NEW.acker, pg_catalog.to_jsonb(NEW))
        ON CONFLICT DO NOTHING;
    RETURN NULL;
END
$function$;
COMMENT ON FUNCTION ehrledger._ack_ahead() IS 'Trigger (replica mode): holds back a member''s acknowledgment of a block of a hospital not yet a peer.';

-- Functions: evidence -----------------------------------------------------

-- Records that an origin signed two different headers of one height
-- (docs/format.md §18): statement_a is the one held here first.
CREATE FUNCTION ehrledger._equivocation(origin text, height bigint, header_a bytea, signature_a bytea, header_b bytea, signature_b bytea)
 RETURNS void
 LANGUAGE sql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
    INSERT INTO ehrledger.evidence (kind, accused, origin, height, statement_a, statement_b)
        VALUES ('equivocation', origin, origin, height,
                pg_catalog.jsonb_build_object('header', pg_catalog.encode(header_a, 'hex'),
                                              'signature', pg_catalog.encode(signature_a, 'hex')),
                pg_catalog.jsonb_build_object('header', pg_catalog.encode(header_b, 'hex'),
                                              'signature', pg_catalog.encode(signature_b, 'hex')))
        ON CONFLICT DO NOTHING
$function$;

-- Functions: shared rows --------------------------------------------------

CREATE FUNCTION ehrledger._shared_row_check(origin text, ledger_seq bigint, table_id integer, columns jsonb, "row" jsonb)
 RETURNS text
 LANGUAGE c
 STABLE STRICT
 SET search_path TO 'pg_catalog', 'pg_temp'
AS 'MODULE_PATHNAME', $function$ehrledger_shared_row_check$function$;

CREATE FUNCTION ehrledger._share_row()
 RETURNS trigger
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
BEGIN
    INSERT INTO ehrledger.shared_row (origin, table_name, table_id, ledger_seq, columns, "row")
        SELECT ehrledger.node_name(), pg_catalog.format('%I.%I', TG_TABLE_SCHEMA, TG_TABLE_NAME),
               r.table_id, NEW.ledger_seq, r.columns,
               ehrledger._row_jsonb(NEW) - ARRAY['ledger_seq', 'ledger_hash']
          FROM ehrledger.registered_table r WHERE r.relid = TG_RELID;
    RETURN NULL;
END
$function$;

CREATE FUNCTION ehrledger.share(tbl regclass)
 RETURNS bigint
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    r ehrledger.registered_table%ROWTYPE;
    n pg_catalog.int8;
BEGIN
    SELECT * INTO r FROM ehrledger.registered_table WHERE relid = tbl;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'table % is not protected by ehrledger', tbl USING ERRCODE = 'LD002',
            HINT = 'Protect it first: only ledger tables can be shared.';
    ELSIF r.internal THEN
        RAISE EXCEPTION 'cannot share %: it belongs to ehrledger itself', tbl USING ERRCODE = 'insufficient_privilege';
    ELSIF r.retired_at IS NOT NULL THEN
        RAISE EXCEPTION 'table % was retired', tbl USING ERRCODE = 'object_not_in_prerequisite_state';
    ELSIF r.shared THEN
        RAISE EXCEPTION 'table % is shared already', tbl USING ERRCODE = 'duplicate_object';
    END IF;
    EXECUTE pg_catalog.format('LOCK TABLE %s IN SHARE MODE', tbl);
    EXECUTE pg_catalog.format(
        'CREATE TRIGGER ehrledger_share AFTER INSERT OR UPDATE ON %s FOR EACH ROW EXECUTE FUNCTION ehrledger._share_row()', tbl);
    EXECUTE pg_catalog.format(
        'INSERT INTO ehrledger.shared_row (origin, table_name, table_id, ledger_seq, columns, "row")'
        ' SELECT %L, %L, %s, t.ledger_seq, %L::pg_catalog.jsonb,'
        '        ehrledger._row_jsonb(t) - ARRAY[''ledger_seq'', ''ledger_hash''] FROM ONLY %s t',
        ehrledger.node_name(), tbl::pg_catalog.text, r.table_id, r.columns, tbl);
    GET DIAGNOSTICS n = ROW_COUNT;
    UPDATE ehrledger.registered_table SET shared = true WHERE table_id = r.table_id;
    RETURN n;
END
$function$;
COMMENT ON FUNCTION ehrledger.share(regclass) IS 'Sends a ledger table''s rows, present and future, to the other hospitals with this node''s blocks; returns how many rows were already there.';

-- Rows from peers, in replica mode: only from a live peer, never under
-- this node's name, first version kept.
CREATE FUNCTION ehrledger._shared_arrived()
 RETURNS trigger
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
BEGIN
    IF NEW.origin = ehrledger.node_name()
       OR NOT EXISTS (SELECT 1 FROM ehrledger.peer p WHERE p.name = NEW.origin AND p.removed_at IS NULL) THEN
        RAISE WARNING 'ehrledger refused a shared row of "%": its origin is not a peer', NEW.origin;
        RETURN NULL;
    END IF;
    IF EXISTS (SELECT 1 FROM ehrledger.shared_row s WHERE s.origin = NEW.origin AND s.ledger_seq = NEW.ledger_seq) THEN
        RETURN NULL;
    END IF;
    RETURN NEW;
END
$function$;

-- Functions: after a start: learning from the peers -----------------------

-- After any start, before it seals, a hospital learns from its peers how
-- far its own chain reached.  Restored from a backup taken before its last
-- blocks, it takes those blocks back (its peers hold them, signed with its
-- own key), with their acknowledgments, and continues after them; it
-- fetches the peers' blocks and acknowledgments its restore lost (their
-- streams will not send them again: their slots are past them); and it
-- writes WAL past the positions from which its peers' subscriptions will
-- read its new blocks.  Until enough peers answered to be sure (any set
-- of n - quorum + 1 peers meets every quorum), it seals nothing.
CREATE FUNCTION ehrledger._peer_fetch(conninfo text, query text)
 RETURNS SETOF text
 LANGUAGE c
 STRICT
 SET search_path TO 'pg_catalog', 'pg_temp'
AS 'MODULE_PATHNAME', $function$ehrledger_peer_fetch$function$;
COMMENT ON FUNCTION ehrledger._peer_fetch(text,text) IS 'The rows of a one-column query run at a peer over a replication connection; superuser only.';

CREATE FUNCTION ehrledger._learn_from_peers() RETURNS pg_catalog.text
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    me      pg_catalog.text := ehrledger.node_name();
    peer_row record;
    r       pg_catalog.text;
    b       ehrledger.block;
    head    ehrledger.block;
    first_taken pg_catalog.int8;
    since   pg_catalog.timestamptz;
    lsn     pg_catalog.pg_lsn;
    max_lsn pg_catalog.pg_lsn := '0/0';
    need    pg_catalog.int4;
    reached pg_catalog.int4 := 0;
    taken   pg_catalog.int4 := 0;
    taken_rows pg_catalog.int8 := 0;
    acks    pg_catalog.int4 := 0;
    fetched pg_catalog.int4 := 0;
    switches pg_catalog.int4 := 0;
    slots   pg_catalog.int4 := 0;
    h       pg_catalog.int8;
    lost    pg_catalog.int8 := 0;
    restored pg_catalog.int8 := 0;
    renumbered pg_catalog.int8 := 0;
    prev    ehrledger.rejoin_attempt;
BEGIN
    IF EXISTS (SELECT 1 FROM ehrledger.rejoin j WHERE j.started_at = pg_catalog.pg_postmaster_start_time()) THEN
        RETURN 'learned';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM ehrledger.peer k WHERE k.removed_at IS NULL) THEN
        INSERT INTO ehrledger.rejoin (started_at, peers_reached, blocks_taken_back, rows_taken_back,
                                      acks_taken_back, peer_blocks_fetched, wal_switches)
            VALUES (pg_catalog.pg_postmaster_start_time(), 0, 0, 0, 0, 0, 0);
        RETURN 'alone';
    END IF;
    SELECT * INTO prev FROM ehrledger.rejoin_attempt a WHERE a.started_at = pg_catalog.pg_postmaster_start_time();
    IF FOUND THEN
        slots := prev.slots_made;
        taken := prev.blocks_taken_back;
        taken_rows := prev.rows_taken_back;
        acks := prev.acks_taken_back;
        fetched := prev.peer_blocks_fetched;
    END IF;
    -- A physical backup holds no replication slots: the slot each peer
    -- reads this node's blocks from is made again, before this
    -- transaction writes anything (as logical slots require), and before
    -- any new block.
    FOR peer_row IN SELECT k.name FROM ehrledger.peer k
                     WHERE k.removed_at IS NULL
                       AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_replication_slots s
                                        WHERE s.slot_name = 'ehrledger_' || ehrledger._slot_part(k.name)) LOOP
        PERFORM pg_catalog.pg_create_logical_replication_slot('ehrledger_' || ehrledger._slot_part(peer_row.name), 'pgoutput');
        slots := slots + 1;
    END LOOP;
    need := (SELECT pg_catalog.count(*)::pg_catalog.int4 FROM ehrledger._members()) - ehrledger.quorum() + 1;
    SELECT * INTO head FROM ehrledger.block k WHERE k.origin = me ORDER BY k.height DESC LIMIT 1;
    first_taken := COALESCE(prev.first_taken, COALESCE(head.height, 0) + 1);
    FOR peer_row IN SELECT * FROM ehrledger.peer k WHERE k.removed_at IS NULL ORDER BY k.name LOOP
        BEGIN
            -- (this node's own blocks are stored as its sealer stores them)
            PERFORM pg_catalog.set_config('session_replication_role', 'origin', true);
            -- 1. This node's own blocks the peer holds beyond those held
            -- here: each must carry one of this node's keys, its signature,
            -- link to the one before, and its fields and leaves must hash
            -- to what was signed.
            FOR r IN SELECT * FROM ehrledger._peer_fetch(peer_row.conninfo, pg_catalog.format(
                         'SELECT pg_catalog.row_to_json(b)::pg_catalog.text FROM ehrledger.block b'
                         ' WHERE b.origin = %L AND b.height > %s ORDER BY b.height', me, COALESCE(head.height, 0))) LOOP
                b := pg_catalog.json_populate_record(NULL::ehrledger.block, r::pg_catalog.json);
                EXIT WHEN b.height IS DISTINCT FROM COALESCE(head.height, 0) + 1
                       OR (b.height > 1 AND b.prev_hash IS DISTINCT FROM head.block_hash)
                       OR pg_catalog.octet_length(b.signature) IS DISTINCT FROM 64
                       OR pg_catalog.octet_length(b.block_hash) IS DISTINCT FROM 32
                       OR NOT EXISTS (SELECT 1 FROM ehrledger.node_key k WHERE k.origin = me AND k.public_key = b.public_key)
                       OR NOT ehrledger.verify_signature(b.block_hash, b.signature, b.public_key)
                       OR pg_catalog.sha256('\x02'::pg_catalog.bytea || b.leaves) IS DISTINCT FROM b.leaves_hash;
                INSERT INTO ehrledger.block SELECT b.*;
                IF pg_catalog.sha256(ehrledger._block_header(me, b.height)) IS DISTINCT FROM b.block_hash THEN
                    RAISE EXCEPTION 'block % of "%" from "%" does not hash to its block_hash', b.height, me, peer_row.name;
                END IF;
                head := b;
                taken := taken + 1;
                taken_rows := taken_rows + b.row_count;
            END LOOP;
            -- After a restore only (its slots were gone, or it took blocks
            -- back): what the peers' streams will not send again.  (After a
            -- plain restart the streams resume where they stopped.)  Each
            -- row on its own: one that the stream brings at the same
            -- moment is simply there already.
            PERFORM pg_catalog.set_config('session_replication_role', 'replica', true);
            IF slots > 0 OR taken > 0 THEN
                -- 2. The peer's own blocks beyond those held here, admitted
                -- through every check as if they came now.
                h := (SELECT COALESCE(pg_catalog.max(k.height), 0) FROM ehrledger.block k WHERE k.origin = peer_row.name);
                FOR r IN SELECT * FROM ehrledger._peer_fetch(peer_row.conninfo, pg_catalog.format(
                             'SELECT pg_catalog.row_to_json(b)::pg_catalog.text FROM ehrledger.block b'
                             ' WHERE b.origin = %L AND b.height > %s ORDER BY b.height', peer_row.name, h)) LOOP
                    BEGIN
                        INSERT INTO ehrledger.block
                            SELECT (pg_catalog.json_populate_record(NULL::ehrledger.block, r::pg_catalog.json)).*
                            ON CONFLICT DO NOTHING;
                        fetched := fetched + 1;
                    EXCEPTION WHEN OTHERS THEN
                        RAISE WARNING 'ehrledger could not store a block of peer "%": %', peer_row.name, SQLERRM;
                    END;
                END LOOP;
            END IF;
            -- 3. The peer's acknowledgments of the blocks taken back, and,
            -- after a restore, all since the newest held here (checked like
            -- any that arrive; those held already are skipped).
            since := CASE WHEN slots > 0 OR taken > 0
                          THEN (SELECT pg_catalog.max(a.acked_at) FROM ehrledger.ack a WHERE a.acker = peer_row.name) END;
            FOR r IN SELECT * FROM ehrledger._peer_fetch(peer_row.conninfo, pg_catalog.format(
                         'SELECT pg_catalog.row_to_json(a)::pg_catalog.text FROM ehrledger.ack a'
                         ' WHERE a.acker = %L AND (a.acked_at >= %L OR (a.origin = %L AND a.height >= %s))',
                         peer_row.name, COALESCE(since, CASE WHEN slots > 0 OR taken > 0 THEN '-infinity' ELSE 'infinity' END::pg_catalog.timestamptz),
                         me, first_taken)) LOOP
                BEGIN
                    INSERT INTO ehrledger.ack
                        SELECT (pg_catalog.json_populate_record(NULL::ehrledger.ack, r::pg_catalog.json)).*
                        ON CONFLICT DO NOTHING;
                    acks := acks + 1;
                EXCEPTION WHEN OTHERS THEN
                    RAISE WARNING 'ehrledger could not store an acknowledgment by peer "%": %', peer_row.name, SQLERRM;
                END;
            END LOOP;
            -- 4. Where the peer's subscription to this node will read from.
            SELECT pg_catalog.max(x::pg_catalog.pg_lsn) INTO lsn FROM ehrledger._peer_fetch(peer_row.conninfo, pg_catalog.format(
                'SELECT o.remote_lsn::pg_catalog.text FROM pg_catalog.pg_replication_origin_status o'
                ' JOIN pg_catalog.pg_subscription s ON o.external_id OPERATOR(pg_catalog.=) (''pg_'' OPERATOR(pg_catalog.||) s.oid)'
                ' WHERE s.subname = %L', 'ehrledger_from_' || ehrledger._slot_part(me))) x;
            IF lsn > max_lsn THEN
                max_lsn := lsn;
            END IF;
            reached := reached + 1;
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'ehrledger could not learn from peer "%": %', peer_row.name, SQLERRM;
        END;
    END LOOP;
    PERFORM pg_catalog.set_config('session_replication_role', 'origin', true);
    IF reached < need THEN
        INSERT INTO ehrledger.rejoin_attempt AS a (started_at, first_taken, blocks_taken_back, rows_taken_back,
                                                   acks_taken_back, peer_blocks_fetched, slots_made)
            VALUES (pg_catalog.pg_postmaster_start_time(), first_taken, taken, taken_rows, acks, fetched, slots)
            ON CONFLICT (started_at) DO UPDATE
               SET blocks_taken_back = EXCLUDED.blocks_taken_back, rows_taken_back = EXCLUDED.rows_taken_back,
                   acks_taken_back = EXCLUDED.acks_taken_back, peer_blocks_fetched = EXCLUDED.peer_blocks_fetched,
                   slots_made = EXCLUDED.slots_made;
        RETURN pg_catalog.format('waiting: %s of the %s peers needed answered', reached, need);
    END IF;
    -- New blocks must come after every position a peer will read from.
    WHILE pg_catalog.pg_current_wal_insert_lsn() <= max_lsn AND switches < 256 LOOP
        PERFORM pg_catalog.pg_logical_emit_message(false, 'ehrledger', 'rejoin');
        PERFORM pg_catalog.pg_switch_wal();
        switches := switches + 1;
    END LOOP;
    -- Numbers the blocks taken back used are not handed out again (one
    -- past them, as a sealing round leaves it: see rows_may_be_pending()).
    IF taken > 0 THEN
        PERFORM pg_catalog.setval('ehrledger.ledger_seq',
                                  GREATEST(head.last_seq + 1, (SELECT s.last_value FROM ehrledger.ledger_seq s)));
    END IF;
    FOR h IN SELECT k.height FROM ehrledger.block k WHERE k.origin = me AND k.height >= first_taken ORDER BY 1 LOOP
        PERFORM ehrledger._acknowledge(me, h);
    END LOOP;
    IF taken > 0 THEN
        renumbered := ehrledger._renumber_unsealed(first_taken);
        SELECT x.rows_lost, x.rows_restored INTO lost, restored
          FROM ehrledger._recover_lost_rows(pg_catalog.pg_postmaster_start_time(), first_taken) x;
    END IF;
    INSERT INTO ehrledger.rejoin (started_at, peers_reached, blocks_taken_back, rows_taken_back,
                                  acks_taken_back, peer_blocks_fetched, wal_switches, slots_made,
                                  rows_lost, rows_restored, rows_renumbered)
        VALUES (pg_catalog.pg_postmaster_start_time(), reached, taken, taken_rows, acks, fetched, switches, slots,
                lost, restored, renumbered);
    DELETE FROM ehrledger.rejoin_attempt a WHERE a.started_at = pg_catalog.pg_postmaster_start_time();
    IF taken > 0 THEN
        RAISE WARNING 'ehrledger took back blocks % to % of "%" (% rows) from its peers: this node was restored from an earlier state',
            first_taken, head.height, me, taken_rows;
    END IF;
    RETURN 'learned';
END
$$;
COMMENT ON FUNCTION ehrledger._learn_from_peers() IS 'After a start, before sealing: learns from the peers how far this node''s chain reached and takes back what a restore lost.';

-- The extension's own ledger tables ---------------------------------------

SELECT ehrledger._attach('ehrledger.membership', 2000000017, 'append_only', NULL, NULL, true, salted => false);

-- Views -------------------------------------------------------------------

CREATE VIEW ehrledger.shared_rows WITH (security_barrier=true) AS
    SELECT s.origin, s.table_name, s.ledger_seq, s."row", c.verdict = 'verified' AS verified,
           EXISTS (SELECT 1 FROM ehrledger.final_block f JOIN ehrledger.block b
                     ON b.origin = f.origin AND b.height = f.height
                    WHERE b.origin = s.origin AND s.ledger_seq BETWEEN b.first_seq AND b.last_seq) AS final,
           c.verdict, s.received_at
      FROM ehrledger.shared_row s
     CROSS JOIN LATERAL (SELECT ehrledger._shared_row_check(s.origin, s.ledger_seq, s.table_id, s.columns, s."row")
                                AS verdict) c;
COMMENT ON VIEW ehrledger.shared_rows IS 'Shared rows, this node''s and its peers'': verified once a row re-encodes to the leaf its origin''s signed block holds; final once that block is.';

CREATE VIEW ehrledger.peers WITH (security_barrier=true) AS
    SELECT p.name, p.public_key, p.added_at, p.removed_at,
           s.received_lsn, s.last_msg_receipt_time,
           (SELECT pg_catalog.max(b.height) FROM ehrledger.block b WHERE b.origin = p.name) AS height
      FROM ehrledger.peer p
      LEFT JOIN pg_catalog.pg_stat_subscription s
        ON s.subname = 'ehrledger_from_' || ehrledger._slot_part(p.name)
       AND s.relid IS NULL;
COMMENT ON VIEW ehrledger.peers IS 'The network''s other hospitals: key, membership, and the state of the link from each.';

CREATE VIEW ehrledger.network_status WITH (security_barrier=true) AS
    SELECT o.origin,
           (SELECT pg_catalog.max(b.height) FROM ehrledger.block b WHERE b.origin = o.origin) AS local_height,
           (SELECT pg_catalog.max(f.height) FROM ehrledger.final_block f WHERE f.origin = o.origin) AS final_height,
           (SELECT pg_catalog.count(*) FROM ehrledger.block b
             WHERE b.origin = o.origin
               AND NOT EXISTS (SELECT 1 FROM ehrledger.final_block f
                                WHERE f.origin = b.origin AND f.height = b.height)) AS pending,
           ehrledger.quorum() AS quorum
      FROM (SELECT name AS origin FROM ehrledger._members()) o;
COMMENT ON VIEW ehrledger.network_status IS 'Per hospital: the newest block held here, the newest final one, and how many wait for a quorum.';

-- Indexes -----------------------------------------------------------------
CREATE UNIQUE INDEX evidence_once ON ehrledger.evidence USING btree (kind, accused, origin, height);

-- Triggers ----------------------------------------------------------------

CREATE TRIGGER ehrledger_a_well_formed BEFORE INSERT OR DELETE OR UPDATE ON ehrledger.block FOR EACH ROW EXECUTE FUNCTION ehrledger._well_formed();
ALTER TABLE ehrledger.block ENABLE REPLICA TRIGGER ehrledger_a_well_formed;

CREATE TRIGGER ehrledger_block_ahead BEFORE INSERT ON ehrledger.block FOR EACH ROW EXECUTE FUNCTION ehrledger._block_ahead();
ALTER TABLE ehrledger.block ENABLE REPLICA TRIGGER ehrledger_block_ahead;

CREATE TRIGGER ehrledger_block_arrived BEFORE INSERT ON ehrledger.block FOR EACH ROW EXECUTE FUNCTION ehrledger.block_arrived();
ALTER TABLE ehrledger.block ENABLE REPLICA TRIGGER ehrledger_block_arrived;

CREATE TRIGGER ehrledger_block_stored AFTER INSERT ON ehrledger.block FOR EACH ROW EXECUTE FUNCTION ehrledger._block_stored();
ALTER TABLE ehrledger.block ENABLE REPLICA TRIGGER ehrledger_block_stored;

CREATE TRIGGER ehrledger_block_successor AFTER INSERT ON ehrledger.block FOR EACH ROW EXECUTE FUNCTION ehrledger._block_successor();
ALTER TABLE ehrledger.block ENABLE REPLICA TRIGGER ehrledger_block_successor;

CREATE TRIGGER ehrledger_membership AFTER INSERT OR UPDATE OF removed_at, public_key ON ehrledger.peer FOR EACH ROW EXECUTE FUNCTION ehrledger._peer_changed();
ALTER TABLE ehrledger.peer ENABLE ALWAYS TRIGGER ehrledger_membership;

CREATE TRIGGER ehrledger_a_well_formed BEFORE INSERT OR DELETE OR UPDATE ON ehrledger.ack FOR EACH ROW EXECUTE FUNCTION ehrledger._well_formed();
ALTER TABLE ehrledger.ack ENABLE REPLICA TRIGGER ehrledger_a_well_formed;

CREATE TRIGGER ehrledger_ack_ahead BEFORE INSERT ON ehrledger.ack FOR EACH ROW EXECUTE FUNCTION ehrledger._ack_ahead();
ALTER TABLE ehrledger.ack ENABLE REPLICA TRIGGER ehrledger_ack_ahead;

CREATE TRIGGER ehrledger_ack_arrived BEFORE INSERT ON ehrledger.ack FOR EACH ROW EXECUTE FUNCTION ehrledger._ack_arrived();
ALTER TABLE ehrledger.ack ENABLE REPLICA TRIGGER ehrledger_ack_arrived;

CREATE TRIGGER ehrledger_ack_stored AFTER INSERT ON ehrledger.ack FOR EACH ROW EXECUTE FUNCTION ehrledger._ack_stored();
ALTER TABLE ehrledger.ack ENABLE REPLICA TRIGGER ehrledger_ack_stored;

CREATE TRIGGER ehrledger_append_only BEFORE DELETE OR UPDATE ON ehrledger.ack FOR EACH ROW EXECUTE FUNCTION ehrledger.refuse_change();
ALTER TABLE ehrledger.ack ENABLE ALWAYS TRIGGER ehrledger_append_only;

CREATE TRIGGER ehrledger_no_truncate BEFORE TRUNCATE ON ehrledger.ack FOR EACH STATEMENT EXECUTE FUNCTION ehrledger.refuse_change();
ALTER TABLE ehrledger.ack ENABLE ALWAYS TRIGGER ehrledger_no_truncate;

CREATE TRIGGER ehrledger_append_only BEFORE DELETE OR UPDATE ON ehrledger.evidence FOR EACH ROW EXECUTE FUNCTION ehrledger.refuse_change();
ALTER TABLE ehrledger.evidence ENABLE ALWAYS TRIGGER ehrledger_append_only;

CREATE TRIGGER ehrledger_no_truncate BEFORE TRUNCATE ON ehrledger.evidence FOR EACH STATEMENT EXECUTE FUNCTION ehrledger.refuse_change();
ALTER TABLE ehrledger.evidence ENABLE ALWAYS TRIGGER ehrledger_no_truncate;

CREATE TRIGGER ehrledger_append_only BEFORE DELETE OR UPDATE ON ehrledger.final_block FOR EACH ROW EXECUTE FUNCTION ehrledger.refuse_change();
ALTER TABLE ehrledger.final_block ENABLE ALWAYS TRIGGER ehrledger_append_only;

CREATE TRIGGER ehrledger_no_truncate BEFORE TRUNCATE ON ehrledger.final_block FOR EACH STATEMENT EXECUTE FUNCTION ehrledger.refuse_change();
ALTER TABLE ehrledger.final_block ENABLE ALWAYS TRIGGER ehrledger_no_truncate;

CREATE TRIGGER ehrledger_a_well_formed BEFORE INSERT OR DELETE OR UPDATE ON ehrledger.shared_row FOR EACH ROW EXECUTE FUNCTION ehrledger._well_formed();
ALTER TABLE ehrledger.shared_row ENABLE REPLICA TRIGGER ehrledger_a_well_formed;

CREATE TRIGGER ehrledger_shared_arrived BEFORE INSERT ON ehrledger.shared_row FOR EACH ROW EXECUTE FUNCTION ehrledger._shared_arrived();
ALTER TABLE ehrledger.shared_row ENABLE REPLICA TRIGGER ehrledger_shared_arrived;

-- What a start's attempts to learn did before enough peers answered: the
-- blocks taken back and slots made stay (a later attempt of the same start
-- must still know it follows a restore, and from which height it took
-- blocks back), and count in the rejoin's row once it learns.
CREATE TABLE ehrledger.rejoin_attempt (
    started_at          pg_catalog.timestamptz PRIMARY KEY,
    first_taken         pg_catalog.int8 NOT NULL,
    blocks_taken_back   pg_catalog.int4 NOT NULL,
    rows_taken_back     pg_catalog.int8 NOT NULL,
    acks_taken_back     pg_catalog.int4 NOT NULL,
    peer_blocks_fetched pg_catalog.int4 NOT NULL,
    slots_made          pg_catalog.int4 NOT NULL
);
COMMENT ON TABLE ehrledger.rejoin_attempt IS
    'What the attempts to learn from the peers after a start did while too few peers answered; counted in ehrledger.rejoin once it learns.';
REVOKE ALL ON ehrledger.rejoin_attempt FROM PUBLIC;

-- The rows a restore lost: each leaf of a block taken back at a rejoin
-- whose row was not in its table (nor its history) then.  Written by
-- ehrledger._learn_from_peers() alone (no role but the extension's owner
-- may write it); verify() reports such a leaf, if its row is still absent,
-- as lost_in_restore instead of missing_row, provided the block it names
-- is still the block at that height, hash for hash.  restored_at is set
-- when the row came back from a peer's copy of a shared table; from then
-- on its absence is a missing_row again.
CREATE TABLE ehrledger.lost_row (
    started_at    pg_catalog.timestamptz NOT NULL,
    origin        pg_catalog.text NOT NULL,
    height        pg_catalog.int8 NOT NULL,
    block_hash    pg_catalog.bytea NOT NULL,
    ledger_seq    pg_catalog.int8 NOT NULL,
    table_id      pg_catalog.int4 NOT NULL,
    leaf_hash     pg_catalog.bytea NOT NULL,
    restored_at   pg_catalog.timestamptz,
    restored_from pg_catalog.text,
    PRIMARY KEY (started_at, origin, ledger_seq)
);
COMMENT ON TABLE ehrledger.lost_row IS
    'Rows sealed in blocks taken back from the peers at a rejoin that were not in their tables: lost in the restore, not tampered with.';
SELECT pg_catalog.pg_extension_config_dump('ehrledger.lost_row', '');
REVOKE ALL ON ehrledger.lost_row FROM PUBLIC;
GRANT SELECT ON ehrledger.lost_row TO PUBLIC;

-- Brings back one row of a shared table from a peer's copy: statement (an
-- INSERT of the row, with its ledger_seq and ledger_hash) runs as the
-- table's owner, restricted, and the insert trigger keeps the row's number
-- only if the row encodes to leaf, the leaf its block holds: anything else
-- is an error, and nothing is inserted.  Superuser only.
CREATE FUNCTION ehrledger._restore_row(tbl pg_catalog.regclass, ledger_seq pg_catalog.int8,
                                       leaf pg_catalog.bytea, statement pg_catalog.text)
    RETURNS void
    AS 'MODULE_PATHNAME', 'ehrledger_restore_row'
    LANGUAGE C STRICT
    SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION ehrledger._restore_row(pg_catalog.regclass, pg_catalog.int8, pg_catalog.bytea, pg_catalog.text) IS
    'Inserts one row lost in a restore, from a peer''s copy, only if it encodes to its sealed leaf; superuser only.';
REVOKE ALL ON FUNCTION ehrledger._restore_row(pg_catalog.regclass, pg_catalog.int8, pg_catalog.bytea, pg_catalog.text) FROM PUBLIC;

-- At a rejoin, after blocks from height first_taken on were taken back and
-- ledger_seq moved past them: every row version (of a protected table or
-- a history table) numbered inside their range that is not the one they
-- sealed there was written after the restore; it gets a fresh number after
-- the range and its hash for it, so that it is sealed like any other.  The
-- heap is updated directly (no trigger, rule or policy runs), as the
-- table's owner, restricted.  Returns how many were renumbered; each is
-- named in a WARNING.  Superuser only.
CREATE FUNCTION ehrledger._renumber_unsealed(first_taken pg_catalog.int8)
    RETURNS pg_catalog.int8
    AS 'MODULE_PATHNAME', 'ehrledger_renumber_unsealed'
    LANGUAGE C STRICT
    SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION ehrledger._renumber_unsealed(pg_catalog.int8) IS
    'At a rejoin: gives rows written after a restore, numbered inside the blocks taken back, fresh numbers after them; superuser only.';
REVOKE ALL ON FUNCTION ehrledger._renumber_unsealed(pg_catalog.int8) FROM PUBLIC;

-- After blocks were taken back (at the start started_at): records which of
-- their rows are not here (ehrledger.lost_row), and brings back those of
-- shared tables from the peers' copies, each checked against its leaf; a
-- copy that does not give the leaf is refused and recorded in
-- ehrledger.rejected_row, never inserted.  Returns the rows lost and
-- restored.
CREATE FUNCTION ehrledger._recover_lost_rows(started_at pg_catalog.timestamptz, first_taken pg_catalog.int8,
                                             OUT rows_lost pg_catalog.int8, OUT rows_restored pg_catalog.int8)
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    SET bytea_output = hex
AS $$
DECLARE
    me    pg_catalog.text := ehrledger.node_name();
    t     record;
    p     record;
    r     pg_catalog.text;
    s     ehrledger.shared_row;
    l     ehrledger.lost_row;
    cols  pg_catalog.text;
    seqs  pg_catalog.int8[];
BEGIN
    INSERT INTO ehrledger.lost_row (started_at, origin, height, block_hash, ledger_seq, table_id, leaf_hash)
        SELECT _recover_lost_rows.started_at, b.origin, b.height, b.block_hash,
               ('x' || pg_catalog.encode(pg_catalog.substr(b.leaves, i * 44 + 1, 8), 'hex'))::pg_catalog.bit(64)::pg_catalog.int8,
               ('x' || pg_catalog.encode(pg_catalog.substr(b.leaves, i * 44 + 9, 4), 'hex'))::pg_catalog.bit(32)::pg_catalog.int4,
               pg_catalog.substr(b.leaves, i * 44 + 13, 32)
          FROM ehrledger.block b
         CROSS JOIN LATERAL pg_catalog.generate_series(0, pg_catalog.octet_length(b.leaves) / 44 - 1) i
         WHERE b.origin = me AND b.height >= first_taken
        ON CONFLICT DO NOTHING;
    -- A row written before the backup and sealed after it is here: not lost.
    FOR t IN SELECT k.table_id, k.relid, k.history FROM ehrledger.registered_table k
              WHERE EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.oid = k.relid) LOOP
        BEGIN
            EXECUTE pg_catalog.format(
                'DELETE FROM ehrledger.lost_row x WHERE x.started_at OPERATOR(pg_catalog.=) $1 AND x.table_id OPERATOR(pg_catalog.=) %s'
                ' AND (EXISTS (SELECT 1 FROM %s y WHERE y.ledger_seq OPERATOR(pg_catalog.=) x.ledger_seq)%s)',
                t.table_id, t.relid,
                CASE WHEN t.history IS NULL THEN '' ELSE pg_catalog.format(
                    ' OR EXISTS (SELECT 1 FROM %s h WHERE h.ledger_seq OPERATOR(pg_catalog.=) x.ledger_seq'
                    '                                   OR h.ledger_ended_seq OPERATOR(pg_catalog.=) x.ledger_seq)', t.history) END)
                USING _recover_lost_rows.started_at;
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'ehrledger could not look for the rows of % the restore lost: %', t.relid, SQLERRM;
        END;
    END LOOP;
    rows_lost := (SELECT pg_catalog.count(*) FROM ehrledger.lost_row x WHERE x.started_at = _recover_lost_rows.started_at);
    rows_restored := 0;
    -- Rows of shared append-only tables come back from the peers' copies.
    FOR p IN SELECT * FROM ehrledger.peer k WHERE k.removed_at IS NULL ORDER BY k.name LOOP
        seqs := ARRAY(SELECT x.ledger_seq FROM ehrledger.lost_row x JOIN ehrledger.registered_table k ON k.table_id = x.table_id
                       WHERE x.started_at = _recover_lost_rows.started_at AND x.restored_at IS NULL
                         AND k.shared AND k.mode = 'append_only' AND k.retired_at IS NULL
                       ORDER BY 1);
        EXIT WHEN pg_catalog.cardinality(seqs) = 0;
        BEGIN
            FOR r IN SELECT * FROM ehrledger._peer_fetch(p.conninfo, pg_catalog.format(
                         'SELECT pg_catalog.row_to_json(s)::pg_catalog.text FROM ehrledger.shared_row s'
                         ' WHERE s.origin OPERATOR(pg_catalog.=) %L AND s.ledger_seq OPERATOR(pg_catalog.=) ANY (%L::pg_catalog.int8[])',
                         me, seqs)) LOOP
                BEGIN
                    s := pg_catalog.json_populate_record(NULL::ehrledger.shared_row, r::pg_catalog.json);
                    SELECT * INTO l FROM ehrledger.lost_row x
                     WHERE x.started_at = _recover_lost_rows.started_at AND x.ledger_seq = s.ledger_seq AND x.restored_at IS NULL;
                    CONTINUE WHEN NOT FOUND;
                    SELECT k.relid, k.table_id INTO t FROM ehrledger.registered_table k WHERE k.table_id = l.table_id;
                    IF pg_catalog.jsonb_typeof(s."row") IS DISTINCT FROM 'object' THEN
                        RAISE EXCEPTION 'the copy is not a JSON object';
                    END IF;
                    -- The table's own columns, read from the copy by name;
                    -- the insert trigger encodes the row again and keeps it
                    -- only if it gives the leaf.
                    cols := (SELECT pg_catalog.string_agg(pg_catalog.quote_ident(a.attname), ', ' ORDER BY a.attnum)
                               FROM pg_catalog.pg_attribute a
                              WHERE a.attrelid = t.relid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
                                AND a.attname NOT IN ('ledger_seq', 'ledger_hash'));
                    PERFORM ehrledger._restore_row(t.relid, l.ledger_seq, l.leaf_hash, pg_catalog.format(
                        'INSERT INTO %s (%s, ledger_seq, ledger_hash) OVERRIDING SYSTEM VALUE'
                        ' SELECT %s, %s, %L::pg_catalog.bytea FROM pg_catalog.jsonb_populate_record(NULL::%s, %L::pg_catalog.jsonb)',
                        t.relid, cols, cols, l.ledger_seq, l.leaf_hash, t.relid, s."row"));
                    UPDATE ehrledger.lost_row x SET restored_at = pg_catalog.clock_timestamp(), restored_from = p.name
                     WHERE x.started_at = _recover_lost_rows.started_at AND x.ledger_seq = l.ledger_seq;
                    rows_restored := rows_restored + 1;
                EXCEPTION WHEN OTHERS THEN
                    INSERT INTO ehrledger.rejected_row (table_name, operation, origin, reason, "row")
                        VALUES ('shared_row', 'RESTORE', me,
                                pg_catalog.format('a copy of row %s from peer "%s" was refused: %s', s.ledger_seq, p.name, SQLERRM),
                                pg_catalog.to_jsonb(s));
                    RAISE WARNING 'ehrledger refused peer "%"''s copy of its row %: %', p.name, s.ledger_seq, SQLERRM;
                END;
            END LOOP;
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'ehrledger could not fetch its lost shared rows from peer "%": %', p.name, SQLERRM;
        END;
    END LOOP;
END
$$;
COMMENT ON FUNCTION ehrledger._recover_lost_rows(pg_catalog.timestamptz, pg_catalog.int8) IS
    'After blocks were taken back: records the rows a restore lost, and brings back shared ones from the peers'' copies, checked against their leaves.';
REVOKE ALL ON FUNCTION ehrledger._recover_lost_rows(pg_catalog.timestamptz, pg_catalog.int8) FROM PUBLIC;

-- A peer's TRUNCATE (a lying hospital can publish one): ehrledger.block and
-- ehrledger.ack refuse it already; ehrledger.shared_row, which would lose
-- every hospital's shared rows, refuses it too.  In the apply worker the
-- refusal (LD031) is noted by the server (src/network/network.c), and the
-- sealer's round records it here and skips the peer's transaction, so
-- that the worker, restarted, goes on with the next one.
CREATE TRIGGER ehrledger_no_truncate BEFORE TRUNCATE ON ehrledger.shared_row
    FOR EACH STATEMENT EXECUTE FUNCTION ehrledger.refuse_change();
ALTER TABLE ehrledger.shared_row ENABLE ALWAYS TRIGGER ehrledger_no_truncate;

CREATE FUNCTION ehrledger._peer_truncates(OUT subid pg_catalog.oid, OUT finish_lsn pg_catalog.pg_lsn,
                                          OUT message pg_catalog.text)
    RETURNS SETOF record
    AS 'MODULE_PATHNAME', 'ehrledger_peer_truncates'
    LANGUAGE C STRICT
    SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION ehrledger._peer_truncates() IS
    'The peers'' TRUNCATEs the apply workers refused since the last call: subscription, the LSN the peer''s transaction ends at, the error; superuser only.';

CREATE FUNCTION ehrledger._skip_peer_truncates() RETURNS pg_catalog.int4
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t   record;
    n   pg_catalog.int4 := 0;
    why pg_catalog.text;
BEGIN
    IF NOT (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = CURRENT_USER) THEN
        RETURN 0;
    END IF;
    FOR t IN SELECT x.finish_lsn, x.message, s.subname, p.name AS peer
               FROM ehrledger._peer_truncates() x
               JOIN pg_catalog.pg_subscription s ON s.oid = x.subid
               LEFT JOIN ehrledger.peer p ON s.subname = 'ehrledger_from_' || ehrledger._slot_part(p.name)
              WHERE s.subname LIKE 'ehrledger\_from\_%' LOOP
        BEGIN
            why := pg_catalog.format('a peer may only add rows, not truncate tables: its transaction ending at %s was skipped',
                                     t.finish_lsn);
            -- (the worker may fail on it again before the skip is set: once is enough)
            CONTINUE WHEN EXISTS (SELECT 1 FROM ehrledger.rejected_row j
                                   WHERE j.operation = 'TRUNCATE' AND j.origin IS NOT DISTINCT FROM t.peer AND j.reason = why);
            EXECUTE pg_catalog.format('ALTER SUBSCRIPTION %I SKIP (lsn = %L)', t.subname, t.finish_lsn);
            INSERT INTO ehrledger.rejected_row (table_name, operation, origin, reason)
                VALUES (COALESCE(pg_catalog.substring(t.message, '"ehrledger\.([a-z_]+)"'), '?'), 'TRUNCATE', t.peer, why);
            RAISE WARNING 'ehrledger skipped a TRUNCATE that peer "%" published (its transaction ending at %)', t.peer, t.finish_lsn;
            n := n + 1;
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'ehrledger could not skip a TRUNCATE that peer "%" published: %', t.peer, SQLERRM;
        END;
    END LOOP;
    RETURN n;
END
$$;
COMMENT ON FUNCTION ehrledger._skip_peer_truncates() IS
    'The sealer''s round: records each peer''s refused TRUNCATE in ehrledger.rejected_row and skips its transaction (ALTER SUBSCRIPTION ... SKIP).';
REVOKE ALL ON FUNCTION ehrledger._peer_truncates(), ehrledger._skip_peer_truncates() FROM PUBLIC;

-- What pg_dump dumps ------------------------------------------------------
SELECT pg_catalog.pg_extension_config_dump('ehrledger.peer', '');
SELECT pg_catalog.pg_extension_config_dump('ehrledger.ack', '');
SELECT pg_catalog.pg_extension_config_dump('ehrledger.evidence', '');
SELECT pg_catalog.pg_extension_config_dump('ehrledger.final_block', '');
SELECT pg_catalog.pg_extension_config_dump('ehrledger.held_block', '');
SELECT pg_catalog.pg_extension_config_dump('ehrledger.held_ack', '');
SELECT pg_catalog.pg_extension_config_dump('ehrledger.membership', '');
SELECT pg_catalog.pg_extension_config_dump('ehrledger.membership_change_seq_seq', '');

-- Privileges --------------------------------------------------------------
GRANT SELECT ON ehrledger.ack TO PUBLIC;
GRANT SELECT ON ehrledger.evidence TO PUBLIC;
GRANT SELECT ON ehrledger.final_block TO PUBLIC;
GRANT SELECT ON ehrledger.peers TO PUBLIC;
GRANT SELECT ON ehrledger.network_status TO PUBLIC;
GRANT SELECT ON ehrledger.membership TO PUBLIC;
GRANT SELECT ON ehrledger.rejoin TO PUBLIC;
REVOKE ALL ON FUNCTION
    ehrledger._sign_ack(text,bigint,bytea),
    ehrledger._check_conninfo(text),
    ehrledger._block_header(text,bigint),
    ehrledger._certificate(text,bigint),
    ehrledger._check_final(text,bigint),
    ehrledger._check_pending(),
    ehrledger._acknowledge(text,bigint),
    ehrledger._block_stored(),
    ehrledger._equivocation(text,bigint,bytea,bytea,bytea,bytea),
    ehrledger._admit_block(text,bigint,bytea,bytea,text,bytea,bytea),
    ehrledger._ack_arrived(),
    ehrledger._ack_stored(),
    ehrledger.block_arrived(),
    ehrledger._shared_row_check(text,bigint,integer,jsonb,jsonb),
    ehrledger._share_row(),
    ehrledger.share(regclass),
    ehrledger._shared_arrived(),
    ehrledger.network_init(),
    ehrledger.add_peer(text,text,bytea),
    ehrledger.remove_peer(text),
    ehrledger._ack_valid(text,bigint,bytea,bytea,bytea),
    ehrledger._origin_header_valid(text,bigint,bytea,bytea,bytea,bytea),
    ehrledger._certificate_holds(text),
    ehrledger._block_ahead(),
    ehrledger._release_held(text,bigint),
    ehrledger._block_successor(),
    ehrledger._ack_ahead(),
    ehrledger._release_all_held(),
    ehrledger._malformed(text,jsonb),
    ehrledger._well_formed(),
    ehrledger._peer_changed(),
    ehrledger._members_of(jsonb,timestamp with time zone),
    ehrledger._quorum_of_certificate(jsonb,timestamp with time zone),
    ehrledger._peer_fetch(text,text),
    ehrledger._learn_from_peers()
    FROM PUBLIC;

-- A node that can publish does so from the start (add_peer() runs this too).
DO $$
BEGIN
    IF pg_catalog.current_setting('wal_level') = 'logical' THEN
        PERFORM ehrledger.network_init();
    END IF;
END
$$;
