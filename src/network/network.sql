-- network/network.sql: the hospital network.
--
-- Each hospital publishes its own blocks, acknowledgments and shared rows
-- (publication ehrledger_net) and subscribes to every peer's.  In the apply
-- worker (replica mode) the triggers here check a peer's block before it is
-- stored (src/network/network.c, src/core's rules) and hand it to
-- states.sql, which follows this file: the one place a block moves from
-- state to state (pending, admitted or rejected; sealed, acknowledged;
-- final; evidence), and whose head comment draws them.  Membership changes
-- are ledgered (ehrledger.membership); after every start a hospital learns
-- from its peers how far its chain reached (_learn_from_peers(),
-- ehrledger.rejoin).
--
-- Next: states.sql moves each block from state to state.

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
            ' ehrledger.ack WHERE (acker = %L), ehrledger.shared_row WHERE (origin = %L),'
            ' ehrledger.erasure_notice (origin, erased_seq, table_id, table_name, leaf_hash, erased_at, signature)'
            ' WHERE (origin = %L)', me, me, me, me);
        ALTER PUBLICATION ehrledger_net SET (publish = 'insert');
    ELSE
        EXECUTE pg_catalog.format(
            'CREATE PUBLICATION ehrledger_net FOR TABLE ehrledger.block WHERE (origin = %L),'
            ' ehrledger.ack WHERE (acker = %L), ehrledger.shared_row WHERE (origin = %L),'
            ' ehrledger.erasure_notice (origin, erased_seq, table_id, table_name, leaf_hash, erased_at, signature)'
            ' WHERE (origin = %L)'
            ' WITH (publish = %L)', me, me, me, me, 'insert');
    END IF;
END
$function$;
COMMENT ON FUNCTION ehrledger.network_init() IS 'Publishes this node''s blocks, acknowledgments, shared rows and erasure notices to the hospital network; run it on every hospital before adding peers.';

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

-- Functions: the triggers on blocks (states.sql moves the blocks) ---------

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

-- The triggers on ehrledger.block and ehrledger.ack below call
-- states.sql, the one place a block moves from state to state (its head
-- comment draws them).

-- AFTER INSERT on ehrledger.block in replica mode: a peer's block just
-- admitted; this node acknowledges it.
CREATE FUNCTION ehrledger._block_stored()
 RETURNS trigger
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
BEGIN
    PERFORM ehrledger._to_acknowledged(NEW.origin, NEW.height);
    RETURN NULL;
END
$function$;

CREATE FUNCTION ehrledger.block_arrived()
 RETURNS trigger
 LANGUAGE c
 SET search_path TO 'pg_catalog', 'pg_temp'
AS 'MODULE_PATHNAME', $function$ehrledger_block_arrived$function$;

-- BEFORE INSERT on ehrledger.block in replica mode, before
-- ehrledger_block_arrived (a table's triggers fire in name order): a block
-- whose predecessor is not here yet is pending, not judged.
CREATE FUNCTION ehrledger._block_ahead()
 RETURNS trigger
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
BEGIN
    IF ehrledger._to_pending(NEW) THEN
        RETURN NULL;
    END IF;
    RETURN NEW;
END
$function$;
COMMENT ON FUNCTION ehrledger._block_ahead() IS 'Trigger (replica mode): holds back a block from a peer whose predecessor is not here yet.';

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
            WHEN 'erasure_notice' THEN ARRAY['origin', 'erased_seq', 'table_id', 'table_name', 'leaf_hash',
                                             'erased_at', 'signature']
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
    END IF;
    IF tbl IN ('ack', 'erasure_notice') THEN
        FOREACH col IN ARRAY CASE tbl WHEN 'ack' THEN ARRAY['block_hash', 'signature', 'origin_signature']
                                      ELSE ARRAY['leaf_hash', 'signature'] END LOOP
            len := pg_catalog.octet_length(pg_catalog.decode(pg_catalog.substr(r ->> col, 3), 'hex'));
            want := (CASE WHEN col IN ('block_hash', 'leaf_hash') THEN 32 ELSE 64 END);
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

-- Functions: acknowledgments and their triggers ---------------------------

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

-- BEFORE INSERT on ehrledger.ack in replica mode: an acknowledgment is
-- stored only if it counts.
CREATE FUNCTION ehrledger._ack_arrived()
 RETURNS trigger
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
BEGIN
    IF ehrledger._ack_to_counted(NEW) THEN
        RETURN NEW;
    END IF;
    RETURN NULL;
END
$function$;

-- AFTER INSERT on ehrledger.ack in replica mode: its block may be final.
CREATE FUNCTION ehrledger._ack_stored()
 RETURNS trigger
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
BEGIN
    PERFORM ehrledger._to_final(NEW.origin, NEW.height);
    RETURN NULL;
END
$function$;

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
-- ehrledger_ack_arrived: an acknowledgment of a block of a hospital that
-- is not a peer yet is held.
CREATE FUNCTION ehrledger._ack_ahead()
 RETURNS trigger
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
BEGIN
    IF ehrledger._ack_to_held(NEW) THEN
        RETURN NULL;
    END IF;
    RETURN NEW;
END
$function$;
COMMENT ON FUNCTION ehrledger._ack_ahead() IS 'Trigger (replica mode): holds back a member''s acknowledgment of a block of a hospital not yet a peer.';

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
    part pg_catalog.regclass;
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
    IF r.partitioned THEN
        -- Its partitions are shared, each as the ledger table it is; one
        -- created or attached later is shared as it enters the ledger.
        EXECUTE pg_catalog.format('LOCK TABLE %s IN SHARE MODE', tbl);
        n := 0;
        FOR part IN SELECT k.relid FROM ehrledger.registered_table k
                     WHERE k.partition_of = r.table_id AND k.retired_at IS NULL AND NOT k.shared
                     ORDER BY k.table_id LOOP
            n := n + ehrledger.share(part);
        END LOOP;
        UPDATE ehrledger.registered_table SET shared = true WHERE table_id = r.table_id;
        RETURN n;
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
COMMENT ON FUNCTION ehrledger.share(regclass) IS 'Sends a ledger table''s rows, present and future, to the other hospitals with this node''s blocks (a partitioned table''s: those of its partitions, present and future); returns how many rows were already there.';

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
        PERFORM ehrledger._to_acknowledged(me, h);
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

-- Erasures of shared rows (issue 13): an origin that erases a row it
-- shared removes its own copy in ehrledger.shared_row and publishes a
-- notice signed with its node key; each hospital that receives it removes
-- its copy and keeps the notice with how many copies it removed.  A notice
-- is ledgered where it is kept; peers receive it without the origin's
-- ledger columns (the publication's column list) and number it anew.
CREATE TABLE ehrledger.erasure_notice (
    origin text NOT NULL,
    erased_seq bigint NOT NULL,
    table_id integer NOT NULL,
    table_name text NOT NULL,
    leaf_hash bytea NOT NULL,
    erased_at timestamp with time zone NOT NULL,
    signature bytea NOT NULL,
    received_at timestamp with time zone DEFAULT clock_timestamp() NOT NULL,
    copies_removed integer DEFAULT 0 NOT NULL,
    CONSTRAINT erasure_notice_pkey PRIMARY KEY (origin, erased_seq)
);
COMMENT ON TABLE ehrledger.erasure_notice IS 'Erasures of shared rows: this node''s, as published, and its peers'', as received and applied (copies_removed).';

CREATE FUNCTION ehrledger.erasure_message(origin text, ledger_seq bigint, table_id integer, leaf bytea)
 RETURNS bytea
 LANGUAGE c
 IMMUTABLE STRICT
 SET search_path TO 'pg_catalog', 'pg_temp'
AS 'MODULE_PATHNAME', $function$ehrledger_erasure_message$function$;
COMMENT ON FUNCTION ehrledger.erasure_message(text,bigint,integer,bytea) IS 'The bytes an origin signs when it erases a row it shared (docs/format.md §18).';

CREATE FUNCTION ehrledger._sign_erasure(origin text, ledger_seq bigint, table_id integer, leaf bytea)
 RETURNS bytea
 LANGUAGE c
 STRICT
 SET search_path TO 'pg_catalog', 'pg_temp'
AS 'MODULE_PATHNAME', $function$ehrledger_sign_erasure$function$;

-- Called by erase() and erase_patient() (src/ledger/erase.c) for the
-- erased row versions of shared tables: this node's copies go, and a
-- signed notice per version goes to the peers.
CREATE FUNCTION ehrledger._erase_shared(table_ids integer[], seqs bigint[], leaves bytea[], erased_at timestamp with time zone)
 RETURNS integer
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    me pg_catalog.text := ehrledger.node_name();
    n  pg_catalog.int4 := 0;
    e  record;
    removed pg_catalog.int4;
BEGIN
    FOR e IN SELECT u.t, u.s, u.h, r.relid::pg_catalog.regclass::pg_catalog.text AS name
               FROM ROWS FROM (pg_catalog.unnest(table_ids), pg_catalog.unnest(seqs), pg_catalog.unnest(leaves)) AS u(t, s, h)
               JOIN ehrledger.registered_table r ON r.table_id = u.t AND r.shared
              ORDER BY u.s LOOP
        DELETE FROM ehrledger.shared_row s WHERE s.origin = me AND s.ledger_seq = e.s;
        GET DIAGNOSTICS removed = ROW_COUNT;
        INSERT INTO ehrledger.erasure_notice (origin, erased_seq, table_id, table_name, leaf_hash, erased_at,
                                              signature, copies_removed)
            VALUES (me, e.s, e.t, e.name, e.h, erased_at, ehrledger._sign_erasure(me, e.s, e.t, e.h), removed);
        n := n + 1;
    END LOOP;
    RETURN n;
END
$function$;

-- A peer's notice, in replica mode: from a live peer, signed with its key;
-- the copy it names is removed here (session_replication_role = origin
-- for that one DELETE: shared_row's guard refuses a peer's own deletes)
-- and the notice is kept with how many copies went.
CREATE FUNCTION ehrledger._erasure_arrived()
 RETURNS trigger
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    key pg_catalog.bytea;
    why pg_catalog.text;
    removed pg_catalog.int4;
BEGIN
    SELECT p.public_key INTO key FROM ehrledger.peer p WHERE p.name = NEW.origin AND p.removed_at IS NULL;
    IF NEW.origin = ehrledger.node_name() OR key IS NULL THEN
        why := 'its origin is not a peer';
    ELSIF NOT ehrledger.verify_signature(ehrledger.erasure_message(NEW.origin, NEW.erased_seq, NEW.table_id, NEW.leaf_hash),
                                         NEW.signature, key) THEN
        why := 'it is not signed with the origin''s key';
    ELSIF EXISTS (SELECT 1 FROM ehrledger.erasure_notice n WHERE n.origin = NEW.origin AND n.erased_seq = NEW.erased_seq) THEN
        RETURN NULL;
    END IF;
    IF why IS NOT NULL THEN
        INSERT INTO ehrledger.rejected_row (table_name, operation, origin, reason, "row")
            VALUES (TG_TABLE_NAME, TG_OP, pg_catalog.left(NEW.origin, 63), why, pg_catalog.to_jsonb(NEW));
        RAISE WARNING 'ehrledger refused an erasure notice of "%": %', NEW.origin, why;
        RETURN NULL;
    END IF;
    PERFORM pg_catalog.set_config('session_replication_role', 'origin', true);
    DELETE FROM ehrledger.shared_row s WHERE s.origin = NEW.origin AND s.ledger_seq = NEW.erased_seq;
    GET DIAGNOSTICS removed = ROW_COUNT;
    PERFORM pg_catalog.set_config('session_replication_role', 'replica', true);
    NEW.received_at := pg_catalog.clock_timestamp();
    NEW.copies_removed := removed;
    RETURN NEW;
END
$function$;

CREATE TRIGGER ehrledger_a_well_formed BEFORE INSERT OR DELETE OR UPDATE ON ehrledger.erasure_notice FOR EACH ROW EXECUTE FUNCTION ehrledger._well_formed();
ALTER TABLE ehrledger.erasure_notice ENABLE REPLICA TRIGGER ehrledger_a_well_formed;
CREATE TRIGGER ehrledger_erasure_arrived BEFORE INSERT ON ehrledger.erasure_notice FOR EACH ROW EXECUTE FUNCTION ehrledger._erasure_arrived();
ALTER TABLE ehrledger.erasure_notice ENABLE REPLICA TRIGGER ehrledger_erasure_arrived;
SELECT ehrledger._attach('ehrledger.erasure_notice', 2000000019, 'append_only', NULL, NULL, true, salted => false);
REVOKE ALL ON ehrledger.erasure_notice FROM PUBLIC;
GRANT SELECT ON ehrledger.erasure_notice TO PUBLIC;
REVOKE ALL ON FUNCTION ehrledger._sign_erasure(text,bigint,integer,bytea),
    ehrledger._erase_shared(integer[],bigint[],bytea[],timestamp with time zone),
    ehrledger._erasure_arrived() FROM PUBLIC;

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
GRANT SELECT ON ehrledger.membership TO PUBLIC;
GRANT SELECT ON ehrledger.rejoin TO PUBLIC;
REVOKE ALL ON FUNCTION
    ehrledger._sign_ack(text,bigint,bytea),
    ehrledger._check_conninfo(text),
    ehrledger._block_header(text,bigint),
    ehrledger._block_stored(),
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
    ehrledger._block_successor(),
    ehrledger._ack_ahead(),
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
