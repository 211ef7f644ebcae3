/*
 * ehrledger 0.2 -> 0.3: the hospital network.  Each hospital publishes its
 * own blocks and acknowledgments and subscribes to every peer's; a block is
 * final once a Byzantine quorum of hospitals has signed it.
 */
\echo Use "ALTER EXTENSION ehrledger UPDATE TO '0.3'" to load this file. \quit

CREATE FUNCTION ehrledger.node_name() RETURNS pg_catalog.text
    AS 'MODULE_PATHNAME', 'ehrledger_node_name'
    LANGUAGE C STABLE
    SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION ehrledger.node_name() IS
    'This node''s name: the origin of its blocks, and its name among peers.';

CREATE TABLE ehrledger.peer (
    name        pg_catalog.text PRIMARY KEY,
    conninfo    pg_catalog.text NOT NULL,
    public_key  pg_catalog.bytea NOT NULL CHECK (pg_catalog.octet_length(public_key) = 32),
    added_at    pg_catalog.timestamptz NOT NULL DEFAULT pg_catalog.now(),
    removed_at  pg_catalog.timestamptz
);
COMMENT ON TABLE ehrledger.peer IS
    'The other hospitals of the network, with the key their blocks and acknowledgments must carry.';

-- One acknowledgment per (origin, height, acker): the acker's signature of
-- ack_message(origin, height, block_hash), with the origin-signed header it
-- acknowledged, so that a conflicting header elsewhere is evidence.
CREATE TABLE ehrledger.ack (
    origin          pg_catalog.text NOT NULL,
    height          pg_catalog.int8 NOT NULL,
    block_hash      pg_catalog.bytea NOT NULL,
    acker           pg_catalog.text NOT NULL,
    signature       pg_catalog.bytea NOT NULL,
    header          pg_catalog.bytea NOT NULL,
    origin_signature pg_catalog.bytea NOT NULL,
    acked_at        pg_catalog.timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    PRIMARY KEY (origin, height, acker)
);
COMMENT ON TABLE ehrledger.ack IS
    'Signed acknowledgments of blocks, by this node and by its peers.';

-- Two signed statements that cannot both be honest.
CREATE TABLE ehrledger.evidence (
    evidence_id pg_catalog.int8 GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind        pg_catalog.text NOT NULL CHECK (kind IN ('equivocation', 'double_ack')),
    accused     pg_catalog.text NOT NULL,
    origin      pg_catalog.text NOT NULL,
    height      pg_catalog.int8 NOT NULL,
    statement_a pg_catalog.jsonb NOT NULL,
    statement_b pg_catalog.jsonb NOT NULL,
    detected_at pg_catalog.timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp()
);
COMMENT ON TABLE ehrledger.evidence IS
    'Proof of a peer''s misbehaviour: two statements signed with its key that conflict (docs/format.md §18).';
CREATE UNIQUE INDEX evidence_once ON ehrledger.evidence (kind, accused, origin, height);

-- Blocks that reached a quorum, with their certificate.
CREATE TABLE ehrledger.final_block (
    origin      pg_catalog.text NOT NULL,
    height      pg_catalog.int8 NOT NULL,
    block_hash  pg_catalog.bytea NOT NULL,
    certificate pg_catalog.jsonb NOT NULL,
    final_at    pg_catalog.timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    PRIMARY KEY (origin, height)
);
COMMENT ON TABLE ehrledger.final_block IS
    'Blocks acknowledged by a quorum of hospitals, each with the certificate that proves it.';

-- Blocks refused on arrival, and why: for the DBA, not evidence.
CREATE TABLE ehrledger.rejected_block (
    origin      pg_catalog.text,
    height      pg_catalog.int8,
    block_hash  pg_catalog.bytea,
    reason      pg_catalog.text NOT NULL,
    rejected_at pg_catalog.timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp()
);

SELECT pg_catalog.pg_extension_config_dump('ehrledger.peer', '');
SELECT pg_catalog.pg_extension_config_dump('ehrledger.ack', '');
SELECT pg_catalog.pg_extension_config_dump('ehrledger.evidence', '');
SELECT pg_catalog.pg_extension_config_dump('ehrledger.final_block', '');

CREATE FUNCTION ehrledger.ack_message(origin pg_catalog.text, height pg_catalog.int8,
                                      block_hash pg_catalog.bytea)
    RETURNS pg_catalog.bytea
    AS 'MODULE_PATHNAME', 'ehrledger_ack_message'
    LANGUAGE C IMMUTABLE STRICT
    SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION ehrledger.ack_message(pg_catalog.text, pg_catalog.int8, pg_catalog.bytea) IS
    'The bytes a hospital signs to acknowledge a block (docs/format.md §18).';
CREATE FUNCTION ehrledger._sign_ack(origin pg_catalog.text, height pg_catalog.int8,
                                    block_hash pg_catalog.bytea)
    RETURNS pg_catalog.bytea
    AS 'MODULE_PATHNAME', 'ehrledger_sign_ack'
    LANGUAGE C STRICT
    SET search_path = pg_catalog, pg_temp;
CREATE FUNCTION ehrledger._check_conninfo(conninfo pg_catalog.text) RETURNS void
    AS 'MODULE_PATHNAME', 'ehrledger_check_conninfo'
    LANGUAGE C STRICT
    SET search_path = pg_catalog, pg_temp;
CREATE FUNCTION ehrledger._block_header(origin pg_catalog.text, height pg_catalog.int8)
    RETURNS pg_catalog.bytea
    AS 'MODULE_PATHNAME', 'ehrledger_block_header'
    LANGUAGE C STABLE STRICT
    SET search_path = pg_catalog, pg_temp;
CREATE FUNCTION ehrledger._header_origin(header pg_catalog.bytea, OUT origin pg_catalog.text,
                                         OUT height pg_catalog.int8, OUT public_key pg_catalog.bytea)
    AS 'MODULE_PATHNAME', 'ehrledger_header_origin'
    LANGUAGE C IMMUTABLE STRICT
    SET search_path = pg_catalog, pg_temp;

-- The members (this node and live peers), and the quorum they imply:
-- n = 3f + 1 tolerates f faulty hospitals; a block is final with 2f + 1
-- acknowledgments.  ehrledger.min_quorum may raise it, never lower it.
CREATE FUNCTION ehrledger._members(OUT name pg_catalog.text, OUT public_key pg_catalog.bytea)
    RETURNS SETOF record
    SECURITY DEFINER
    AS $$
        SELECT ehrledger.node_name(), ehrledger.node_public_key()
        UNION ALL
        SELECT p.name, p.public_key FROM ehrledger.peer p WHERE p.removed_at IS NULL
    $$
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION ehrledger.quorum() RETURNS pg_catalog.int4
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT GREATEST(2 * ((n - 1) / 3) + 1,
                    LEAST(n, pg_catalog.current_setting('ehrledger.min_quorum')::pg_catalog.int4))::pg_catalog.int4
      FROM (SELECT pg_catalog.count(*)::pg_catalog.int4 AS n FROM ehrledger._members()) m
$$;
COMMENT ON FUNCTION ehrledger.quorum() IS
    'Acknowledgments a block needs to be final: 2f+1 of n = 3f+1 members (ehrledger.min_quorum may raise it up to n).';

-- The certificate of a block: its header and origin signature, and the
-- members' valid acknowledgments of exactly this hash.
CREATE FUNCTION ehrledger._certificate(origin pg_catalog.text, height pg_catalog.int8)
    RETURNS pg_catalog.jsonb
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.jsonb_build_object(
        'format', 'ehrledger-certificate-1',
        'origin', b.origin, 'height', b.height,
        'block_hash', pg_catalog.encode(b.block_hash, 'hex'),
        'header', pg_catalog.encode(ehrledger._block_header(b.origin, b.height), 'hex'),
        'origin_signature', pg_catalog.encode(b.signature, 'hex'),
        'quorum', ehrledger.quorum(),
        'acks', (SELECT COALESCE(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
                        'acker', a.acker, 'public_key', pg_catalog.encode(m.public_key, 'hex'),
                        'signature', pg_catalog.encode(a.signature, 'hex')) ORDER BY a.acker), '[]')
                   FROM ehrledger.ack a JOIN ehrledger._members() m ON m.name = a.acker
                  WHERE a.origin = b.origin AND a.height = b.height AND a.block_hash = b.block_hash
                    AND ehrledger.verify_signature(ehrledger.ack_message(a.origin, a.height, a.block_hash),
                                                   a.signature, m.public_key)))
      FROM ehrledger.block b
     WHERE b.origin = _certificate.origin AND b.height = _certificate.height
$$;

-- Records a block as final once it has a quorum of acknowledgments.
CREATE FUNCTION ehrledger._check_final(origin pg_catalog.text, height pg_catalog.int8) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cert pg_catalog.jsonb;
BEGIN
    -- Acks of one block applied at once by two subscriptions: the second
    -- waits here, then counts the first's too.
    PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('ehrledger.final:' || origin), height::pg_catalog.int4);
    IF EXISTS (SELECT 1 FROM ehrledger.final_block f WHERE f.origin = _check_final.origin AND f.height = _check_final.height) THEN
        RETURN;
    END IF;
    cert := ehrledger._certificate(origin, height);
    IF cert IS NOT NULL AND pg_catalog.jsonb_array_length(cert -> 'acks') >= (cert ->> 'quorum')::pg_catalog.int4 THEN
        INSERT INTO ehrledger.final_block (origin, height, block_hash, certificate)
            VALUES (origin, height, pg_catalog.decode(cert ->> 'block_hash', 'hex'), cert)
            ON CONFLICT DO NOTHING;
    END IF;
END
$$;

-- Blocks held here, not final, with a quorum of acks: finalized by the
-- sealer's round (see ledger_check_pending()).
CREATE FUNCTION ehrledger._check_pending() RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    b record;
    q pg_catalog.int4;
BEGIN
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
CREATE FUNCTION ehrledger._acknowledge(origin pg_catalog.text, height pg_catalog.int8) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
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
$$;

CREATE FUNCTION ehrledger._block_stored() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM ehrledger._acknowledge(NEW.origin, NEW.height);
    RETURN NULL;
END
$$;

-- Records that an origin signed two different headers of one height
-- (docs/format.md §18): statement_a is the one held here first.
CREATE FUNCTION ehrledger._equivocation(origin pg_catalog.text, height pg_catalog.int8,
                                        header_a pg_catalog.bytea, signature_a pg_catalog.bytea,
                                        header_b pg_catalog.bytea, signature_b pg_catalog.bytea)
    RETURNS void
    LANGUAGE sql
    SET search_path = pg_catalog, pg_temp
AS $$
    INSERT INTO ehrledger.evidence (kind, accused, origin, height, statement_a, statement_b)
        VALUES ('equivocation', origin, origin, height,
                pg_catalog.jsonb_build_object('header', pg_catalog.encode(header_a, 'hex'),
                                              'signature', pg_catalog.encode(signature_a, 'hex')),
                pg_catalog.jsonb_build_object('header', pg_catalog.encode(header_b, 'hex'),
                                              'signature', pg_catalog.encode(signature_b, 'hex')))
        ON CONFLICT DO NOTHING
$$;

-- Decides on a block from a peer that is sound in itself (fault NULL):
-- 'accept', or why not.  Another block already held at its height is
-- equivocation by its origin: both signed headers go to the evidence.
CREATE FUNCTION ehrledger._admit_block(origin pg_catalog.text, height pg_catalog.int8,
                                       block_hash pg_catalog.bytea, public_key pg_catalog.bytea,
                                       fault pg_catalog.text, header pg_catalog.bytea,
                                       signature pg_catalog.bytea)
    RETURNS pg_catalog.text
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
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
$$;

-- Acknowledgments from peers, in replica mode: only a member's valid
-- signature of a validly signed header counts; a second, different ack by
-- the same member for one (origin, height) is evidence.
CREATE FUNCTION ehrledger._ack_arrived() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    acker_key  pg_catalog.bytea;
    origin_key pg_catalog.bytea;
    hdr        record;
    held       ehrledger.ack%ROWTYPE;
    why        pg_catalog.text;
BEGIN
    -- This node's own acknowledgments of blocks it admits are inserted in
    -- replica mode too; like anyone's, they count only if validly signed.
    SELECT m.public_key INTO acker_key FROM ehrledger._members() m WHERE m.name = NEW.acker;
    SELECT m.public_key INTO origin_key FROM ehrledger._members() m WHERE m.name = NEW.origin;
    SELECT * INTO hdr FROM ehrledger._header_origin(NEW.header);
    IF acker_key IS NULL THEN
        why := 'the acker is not a member of the network';
    ELSIF NOT ehrledger.verify_signature(ehrledger.ack_message(NEW.origin, NEW.height, NEW.block_hash),
                                         NEW.signature, acker_key) THEN
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
        IF origin_key IS NULL OR hdr.origin IS DISTINCT FROM NEW.origin OR hdr.height IS DISTINCT FROM NEW.height
           OR hdr.public_key IS DISTINCT FROM origin_key
           OR pg_catalog.sha256(NEW.header) <> NEW.block_hash
           OR NOT ehrledger.verify_signature(NEW.block_hash, NEW.origin_signature, origin_key) THEN
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
$$;

CREATE FUNCTION ehrledger._ack_stored() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM ehrledger._check_final(NEW.origin, NEW.height);
    RETURN NULL;
END
$$;

CREATE FUNCTION ehrledger.block_arrived() RETURNS trigger
    AS 'MODULE_PATHNAME', 'ehrledger_block_arrived' LANGUAGE C
    SET search_path = pg_catalog, pg_temp;

CREATE TRIGGER ehrledger_block_arrived BEFORE INSERT ON ehrledger.block
    FOR EACH ROW EXECUTE FUNCTION ehrledger.block_arrived();
ALTER TABLE ehrledger.block ENABLE REPLICA TRIGGER ehrledger_block_arrived;
CREATE TRIGGER ehrledger_block_stored AFTER INSERT ON ehrledger.block
    FOR EACH ROW EXECUTE FUNCTION ehrledger._block_stored();
ALTER TABLE ehrledger.block ENABLE REPLICA TRIGGER ehrledger_block_stored;
CREATE TRIGGER ehrledger_ack_arrived BEFORE INSERT ON ehrledger.ack
    FOR EACH ROW EXECUTE FUNCTION ehrledger._ack_arrived();
ALTER TABLE ehrledger.ack ENABLE REPLICA TRIGGER ehrledger_ack_arrived;
CREATE TRIGGER ehrledger_ack_stored AFTER INSERT ON ehrledger.ack
    FOR EACH ROW EXECUTE FUNCTION ehrledger._ack_stored();
ALTER TABLE ehrledger.ack ENABLE REPLICA TRIGGER ehrledger_ack_stored;
-- Acknowledgments, finality and evidence are append-only, like the blocks.
DO $$
DECLARE
    tbl pg_catalog.text;
BEGIN
    FOREACH tbl IN ARRAY ARRAY['ehrledger.ack', 'ehrledger.final_block', 'ehrledger.evidence'] LOOP
        EXECUTE pg_catalog.format(
            'CREATE TRIGGER ehrledger_append_only BEFORE UPDATE OR DELETE ON %s'
            ' FOR EACH ROW EXECUTE FUNCTION ehrledger.refuse_change()', tbl);
        EXECUTE pg_catalog.format(
            'CREATE TRIGGER ehrledger_no_truncate BEFORE TRUNCATE ON %s'
            ' FOR EACH STATEMENT EXECUTE FUNCTION ehrledger.refuse_change()', tbl);
        EXECUTE pg_catalog.format(
            'ALTER TABLE %s ENABLE ALWAYS TRIGGER ehrledger_append_only,'
            ' ENABLE ALWAYS TRIGGER ehrledger_no_truncate', tbl);
    END LOOP;
END
$$;

-- Shared tables: rows a hospital shares travel with its blocks, in this
-- outbox.  A receiving hospital holds them here too, and treats a row as
-- verified only once it re-encodes to the leaf its origin's signed block
-- holds (ehrledger.shared_rows).  Unshared tables stay home; their hashes
-- are still in the blocks.
ALTER TABLE ehrledger.registered_table ADD COLUMN shared pg_catalog.bool NOT NULL DEFAULT false;

CREATE TABLE ehrledger.shared_row (
    origin      pg_catalog.text NOT NULL,
    table_name  pg_catalog.text NOT NULL,
    table_id    pg_catalog.int4 NOT NULL,
    ledger_seq  pg_catalog.int8 NOT NULL,
    columns     pg_catalog.jsonb NOT NULL,
    "row"       pg_catalog.jsonb NOT NULL,
    received_at pg_catalog.timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    PRIMARY KEY (origin, ledger_seq)
);
COMMENT ON TABLE ehrledger.shared_row IS
    'Rows of shared tables: this node''s, as sent, and its peers'', as received. Read them through ehrledger.shared_rows.';

CREATE FUNCTION ehrledger._shared_row_check(origin pg_catalog.text, ledger_seq pg_catalog.int8,
                                            table_id pg_catalog.int4, columns pg_catalog.jsonb,
                                            "row" pg_catalog.jsonb)
    RETURNS pg_catalog.text
    AS 'MODULE_PATHNAME', 'ehrledger_shared_row_check'
    LANGUAGE C STABLE STRICT
    SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION ehrledger._share_row() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    INSERT INTO ehrledger.shared_row (origin, table_name, table_id, ledger_seq, columns, "row")
        SELECT ehrledger.node_name(), pg_catalog.format('%I.%I', TG_TABLE_SCHEMA, TG_TABLE_NAME),
               r.table_id, NEW.ledger_seq, r.columns,
               pg_catalog.to_jsonb(NEW) - ARRAY['ledger_seq', 'ledger_hash']
          FROM ehrledger.registered_table r WHERE r.relid = TG_RELID;
    RETURN NULL;
END
$$;

CREATE FUNCTION ehrledger.share(tbl pg_catalog.regclass) RETURNS pg_catalog.int8
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
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
        '        pg_catalog.to_jsonb(t) - ARRAY[''ledger_seq'', ''ledger_hash''] FROM %s t',
        ehrledger.node_name(), tbl::pg_catalog.text, r.table_id, r.columns, tbl);
    GET DIAGNOSTICS n = ROW_COUNT;
    UPDATE ehrledger.registered_table SET shared = true WHERE table_id = r.table_id;
    RETURN n;
END
$$;
COMMENT ON FUNCTION ehrledger.share(pg_catalog.regclass) IS
    'Sends a ledger table''s rows, present and future, to the other hospitals with this node''s blocks; returns how many rows were already there.';

-- Rows from peers, in replica mode: only from a live peer, never under
-- this node's name, first version kept.
CREATE FUNCTION ehrledger._shared_arrived() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
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
$$;
CREATE TRIGGER ehrledger_shared_arrived BEFORE INSERT ON ehrledger.shared_row
    FOR EACH ROW EXECUTE FUNCTION ehrledger._shared_arrived();
ALTER TABLE ehrledger.shared_row ENABLE REPLICA TRIGGER ehrledger_shared_arrived;

CREATE VIEW ehrledger.shared_rows AS
    SELECT s.origin, s.table_name, s.ledger_seq, s."row", c.verdict = 'verified' AS verified,
           EXISTS (SELECT 1 FROM ehrledger.final_block f JOIN ehrledger.block b
                     ON b.origin = f.origin AND b.height = f.height
                    WHERE b.origin = s.origin AND s.ledger_seq BETWEEN b.first_seq AND b.last_seq) AS final,
           c.verdict, s.received_at
      FROM ehrledger.shared_row s
     CROSS JOIN LATERAL (SELECT ehrledger._shared_row_check(s.origin, s.ledger_seq, s.table_id, s.columns, s."row")
                                AS verdict) c;
COMMENT ON VIEW ehrledger.shared_rows IS
    'Shared rows, this node''s and its peers'': verified once a row re-encodes to the leaf its origin''s signed block holds; final once that block is.';

-- What this node publishes: its own blocks and its own acknowledgments,
-- inserts only.  (On PostgreSQL 15 a mesh avoids loops this way: rows a node
-- received are never sent on.)  Every hospital runs this before peers
-- subscribe to it; add_peer() runs it too.  A publication cannot belong to
-- an extension, so it is dumped with the database, and brought up to date
-- (the node's name may have changed) when found.
CREATE FUNCTION ehrledger.network_init() RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
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
$$;
COMMENT ON FUNCTION ehrledger.network_init() IS
    'Publishes this node''s blocks and acknowledgments to the hospital network; run it on every hospital before adding peers.';

-- A node name as it appears in slot and subscription names.
CREATE FUNCTION ehrledger._slot_part(name pg_catalog.text) RETURNS pg_catalog.text
    LANGUAGE sql IMMUTABLE STRICT
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.translate(pg_catalog.lower(name), '-.', '__')
$$;

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
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_replication_slots s WHERE s.slot_name = 'ehrledger_' || ehrledger._slot_part(name)) THEN
        PERFORM pg_catalog.pg_create_logical_replication_slot('ehrledger_' || ehrledger._slot_part(name), 'pgoutput');
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
COMMENT ON FUNCTION ehrledger.add_peer(pg_catalog.text, pg_catalog.text, pg_catalog.bytea) IS
    'Adds a hospital to the network: a slot it reads this node''s blocks from, and a subscription to its blocks and acknowledgments.';

CREATE FUNCTION ehrledger.remove_peer(name pg_catalog.text) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
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
$$;
COMMENT ON FUNCTION ehrledger.remove_peer(pg_catalog.text) IS
    'Takes a hospital out of the network: its blocks stop arriving and its acknowledgments stop counting.';

CREATE VIEW ehrledger.peers AS
    SELECT p.name, p.public_key, p.added_at, p.removed_at,
           s.received_lsn, s.last_msg_receipt_time,
           (SELECT pg_catalog.max(b.height) FROM ehrledger.block b WHERE b.origin = p.name) AS height
      FROM ehrledger.peer p
      LEFT JOIN pg_catalog.pg_stat_subscription s
        ON s.subname = 'ehrledger_from_' || ehrledger._slot_part(p.name)
       AND s.relid IS NULL;
COMMENT ON VIEW ehrledger.peers IS
    'The network''s other hospitals: key, membership, and the state of the link from each.';

CREATE VIEW ehrledger.network_status AS
    SELECT o.origin,
           (SELECT pg_catalog.max(b.height) FROM ehrledger.block b WHERE b.origin = o.origin) AS local_height,
           (SELECT pg_catalog.max(f.height) FROM ehrledger.final_block f WHERE f.origin = o.origin) AS final_height,
           (SELECT pg_catalog.count(*) FROM ehrledger.block b
             WHERE b.origin = o.origin
               AND NOT EXISTS (SELECT 1 FROM ehrledger.final_block f
                                WHERE f.origin = b.origin AND f.height = b.height)) AS pending,
           ehrledger.quorum() AS quorum
      FROM (SELECT name AS origin FROM ehrledger._members()) o;
COMMENT ON VIEW ehrledger.network_status IS
    'Per hospital: the newest block held here, the newest final one, and how many wait for a quorum.';

CREATE FUNCTION ehrledger.block_status(origin pg_catalog.text, height pg_catalog.int8)
    RETURNS TABLE(block_hash pg_catalog.bytea, acks pg_catalog.int4, quorum pg_catalog.int4,
                  final pg_catalog.bool, certificate pg_catalog.jsonb)
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
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
$$;
COMMENT ON FUNCTION ehrledger.block_status(pg_catalog.text, pg_catalog.int8) IS
    'A block''s acknowledgments, the quorum, whether it is final, and its certificate.';

REVOKE ALL ON ehrledger.peer, ehrledger.ack, ehrledger.evidence, ehrledger.final_block,
    ehrledger.rejected_block, ehrledger.shared_row, ehrledger.shared_rows FROM PUBLIC;
REVOKE ALL ON FUNCTION ehrledger._sign_ack(pg_catalog.text, pg_catalog.int8, pg_catalog.bytea),
    ehrledger._check_conninfo(pg_catalog.text),
    ehrledger.share(pg_catalog.regclass), ehrledger._share_row(), ehrledger._shared_arrived(),
    ehrledger._shared_row_check(pg_catalog.text, pg_catalog.int8, pg_catalog.int4, pg_catalog.jsonb, pg_catalog.jsonb),
    ehrledger._certificate(pg_catalog.text, pg_catalog.int8),
    ehrledger._block_header(pg_catalog.text, pg_catalog.int8),
    ehrledger.add_peer(pg_catalog.text, pg_catalog.text, pg_catalog.bytea),
    ehrledger.remove_peer(pg_catalog.text), ehrledger.network_init(),
    ehrledger._admit_block(pg_catalog.text, pg_catalog.int8, pg_catalog.bytea, pg_catalog.bytea, pg_catalog.text, pg_catalog.bytea, pg_catalog.bytea),
    ehrledger._check_final(pg_catalog.text, pg_catalog.int8),
    ehrledger._equivocation(pg_catalog.text, pg_catalog.int8, pg_catalog.bytea, pg_catalog.bytea, pg_catalog.bytea, pg_catalog.bytea),
    ehrledger._acknowledge(pg_catalog.text, pg_catalog.int8), ehrledger._check_pending(),
    ehrledger._block_stored(), ehrledger._ack_arrived(), ehrledger._ack_stored(), ehrledger.block_arrived()
    FROM PUBLIC;
-- Acknowledgments, certificates and evidence are signatures over block
-- hashes, public like the blocks; the peer table holds conninfo and is not.
GRANT SELECT ON ehrledger.peers, ehrledger.network_status, ehrledger.evidence, ehrledger.final_block,
    ehrledger.ack TO PUBLIC;

-- A server ready for the network publishes from the start, so that peers
-- may add it in any order.
DO $$
BEGIN
    IF pg_catalog.current_setting('wal_level') = 'logical' THEN
        PERFORM ehrledger.network_init();
    END IF;
END
$$;
