/*
 * ehrledger 0.1: the install script.
 *
 * Everything is schema-qualified (pg_catalog included) so that a hostile
 * search_path cannot redirect it; functions that run with the owner's
 * rights pin their search_path.
 */
\echo Use "CREATE EXTENSION ehrledger" to load this file. \quit

-- Every protected row version gets a number from this one sequence.  CACHE 1
-- keeps numbers handed out in order, which the sealer's horizon relies on.
CREATE SEQUENCE ehrledger.ledger_seq AS pg_catalog.int8 MINVALUE 1 CACHE 1;

CREATE TABLE ehrledger.registered_table (
    table_id         pg_catalog.int4 PRIMARY KEY,
    relid            pg_catalog.regclass NOT NULL UNIQUE,
    mode             pg_catalog.text NOT NULL,
    patient_column   pg_catalog.name,
    signer_column    pg_catalog.name,
    signature_column pg_catalog.name,
    protected_at     pg_catalog.timestamptz NOT NULL DEFAULT pg_catalog.now(),
    protected_by     pg_catalog.name NOT NULL DEFAULT CURRENT_USER,
    rows_at_protect  pg_catalog.int8 NOT NULL DEFAULT 0,
    internal         pg_catalog.bool NOT NULL DEFAULT false,
    history          pg_catalog.regclass,
    columns          pg_catalog.jsonb NOT NULL DEFAULT '[]',
    retired_at       pg_catalog.timestamptz,
    signed_name      pg_catalog.text
);
COMMENT ON TABLE ehrledger.registered_table IS
    'Tables protected by ehrledger; read it through ehrledger.protected_tables.';

-- The columns of a table as the schema guard records them.
CREATE FUNCTION ehrledger._columns_of(tbl pg_catalog.regclass) RETURNS pg_catalog.jsonb
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT COALESCE(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
               'name', a.attname, 'type', pg_catalog.format_type(a.atttypid, a.atttypmod))
               ORDER BY a.attnum), '[]')
      FROM pg_catalog.pg_attribute a
     WHERE a.attrelid = tbl AND a.attnum > 0 AND NOT a.attisdropped
$$;

CREATE SEQUENCE ehrledger.registered_table_id AS pg_catalog.int4 MINVALUE 1;

-- The blocks of every chain this node holds.  leaves packs, per row version,
-- ledger_seq (8 bytes), table id (4) and leaf hash (32), in ledger_seq order.
-- history_root is the RFC 6962 tree hash of the chain's earlier block
-- hashes; history_frontier, the roots of that tree's perfect subtrees after
-- this block, lets the next block compute its history_root in log time.
CREATE TABLE ehrledger.block (
    origin      pg_catalog.text NOT NULL,
    height      pg_catalog.int8 NOT NULL,
    prev_hash   pg_catalog.bytea NOT NULL,
    history_root pg_catalog.bytea NOT NULL,
    root        pg_catalog.bytea NOT NULL,
    block_hash  pg_catalog.bytea NOT NULL,
    first_seq   pg_catalog.int8 NOT NULL,
    last_seq    pg_catalog.int8 NOT NULL,
    row_count   pg_catalog.int8 NOT NULL,
    sealed_at   pg_catalog.timestamptz NOT NULL,
    public_key  pg_catalog.bytea NOT NULL,
    signature   pg_catalog.bytea NOT NULL,
    history_frontier pg_catalog.bytea NOT NULL,
    leaves_hash pg_catalog.bytea NOT NULL,
    leaves      pg_catalog.bytea NOT NULL,
    PRIMARY KEY (origin, height)
);
ALTER TABLE ehrledger.block ALTER COLUMN leaves SET STORAGE EXTERNAL;

-- Every key this node has signed blocks with, per origin name.
CREATE TABLE ehrledger.node_key (
    origin      pg_catalog.text NOT NULL,
    public_key  pg_catalog.bytea NOT NULL,
    first_used  pg_catalog.timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (origin, public_key)
);

SELECT pg_catalog.pg_extension_config_dump('ehrledger.registered_table', 'WHERE NOT internal');
SELECT pg_catalog.pg_extension_config_dump('ehrledger.registered_table_id', '');
SELECT pg_catalog.pg_extension_config_dump('ehrledger.block', '');
SELECT pg_catalog.pg_extension_config_dump('ehrledger.node_key', '');
SELECT pg_catalog.pg_extension_config_dump('ehrledger.ledger_seq', '');

CREATE VIEW ehrledger.blocks AS
    SELECT origin, height, prev_hash, history_root, root, leaves_hash, block_hash,
           first_seq, last_seq, row_count, sealed_at, signature, public_key
      FROM ehrledger.block;
COMMENT ON VIEW ehrledger.blocks IS
    'One row per sealed block: its header, hash and Ed25519 signature.';

CREATE VIEW ehrledger.protected_tables AS
    SELECT relid AS tbl, table_id, mode, patient_column, signer_column,
           signature_column, protected_at, protected_by, rows_at_protect, internal,
           history, retired_at
      FROM ehrledger.registered_table;
COMMENT ON VIEW ehrledger.protected_tables IS
    'Tables protected by ehrledger, with the options they were protected with.';

-- Triggers protect() installs.
CREATE FUNCTION ehrledger.insert_row() RETURNS trigger
    AS 'MODULE_PATHNAME', 'ehrledger_insert_row' LANGUAGE C;
CREATE FUNCTION ehrledger.refuse_change() RETURNS trigger
    AS 'MODULE_PATHNAME', 'ehrledger_refuse_change' LANGUAGE C;
CREATE FUNCTION ehrledger.version_row() RETURNS trigger
    AS 'MODULE_PATHNAME', 'ehrledger_version_row' LANGUAGE C;

-- The ledger's own history is append-only too.  Guards raise the bar;
-- verify() is what catches a superuser who gets past them.
CREATE TRIGGER ehrledger_append_only BEFORE UPDATE OR DELETE ON ehrledger.block
    FOR EACH ROW EXECUTE FUNCTION ehrledger.refuse_change();
CREATE TRIGGER ehrledger_no_truncate BEFORE TRUNCATE ON ehrledger.block
    FOR EACH STATEMENT EXECUTE FUNCTION ehrledger.refuse_change();
ALTER TABLE ehrledger.block ENABLE ALWAYS TRIGGER ehrledger_append_only,
    ENABLE ALWAYS TRIGGER ehrledger_no_truncate;
CREATE TRIGGER ehrledger_append_only BEFORE UPDATE OR DELETE ON ehrledger.node_key
    FOR EACH ROW EXECUTE FUNCTION ehrledger.refuse_change();
CREATE TRIGGER ehrledger_no_truncate BEFORE TRUNCATE ON ehrledger.node_key
    FOR EACH STATEMENT EXECUTE FUNCTION ehrledger.refuse_change();
ALTER TABLE ehrledger.node_key ENABLE ALWAYS TRIGGER ehrledger_append_only,
    ENABLE ALWAYS TRIGGER ehrledger_no_truncate;

CREATE FUNCTION ehrledger.seal() RETURNS pg_catalog.int8
    AS 'MODULE_PATHNAME', 'ehrledger_seal'
    LANGUAGE C VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION ehrledger.seal() IS
    'Seals every committed, not yet sealed row into a new block; returns the newest height.';

CREATE FUNCTION ehrledger.verify(tbl pg_catalog.regclass DEFAULT NULL,
                                 digest pg_catalog.jsonb DEFAULT NULL)
    RETURNS TABLE(ok pg_catalog.bool, blocks_checked pg_catalog.int8,
                  rows_checked pg_catalog.int8, problems pg_catalog.jsonb)
    AS 'MODULE_PATHNAME', 'ehrledger_verify'
    LANGUAGE C VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION ehrledger.verify(pg_catalog.regclass, pg_catalog.jsonb) IS
    'Recomputes the chain, the blocks and every row (of one table, or all) and lists every problem.';

CREATE FUNCTION ehrledger.digest() RETURNS pg_catalog.jsonb
    AS 'MODULE_PATHNAME', 'ehrledger_digest'
    LANGUAGE C VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION ehrledger.digest() IS
    'A signed statement of the newest block, to keep outside the database.';

CREATE FUNCTION ehrledger.node_public_key() RETURNS pg_catalog.bytea
    AS 'MODULE_PATHNAME', 'ehrledger_node_public_key'
    LANGUAGE C STABLE;
COMMENT ON FUNCTION ehrledger.node_public_key() IS
    'This node''s Ed25519 public key (32 bytes).';

CREATE FUNCTION ehrledger.row_encoding(tbl pg_catalog.regclass, ledger_seq pg_catalog.int8)
    RETURNS pg_catalog.bytea
    AS 'MODULE_PATHNAME', 'ehrledger_row_encoding'
    LANGUAGE C STABLE STRICT;
COMMENT ON FUNCTION ehrledger.row_encoding(pg_catalog.regclass, pg_catalog.int8) IS
    'The canonical bytes of one row version; its leaf hash is sha256(''\x00'' || these bytes).';

CREATE FUNCTION ehrledger.proof(tbl pg_catalog.regclass, ledger_seq pg_catalog.int8,
                                digest pg_catalog.jsonb DEFAULT NULL)
    RETURNS pg_catalog.jsonb
    AS 'MODULE_PATHNAME', 'ehrledger_proof'
    LANGUAGE C STABLE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION ehrledger.proof(pg_catalog.regclass, pg_catalog.int8, pg_catalog.jsonb) IS
    'A proof, checkable offline, that this row version is in the state a digest names (docs/format.md §12).';

CREATE FUNCTION ehrledger.consistency_proof(old_digest pg_catalog.jsonb,
                                            new_digest pg_catalog.jsonb DEFAULT NULL)
    RETURNS pg_catalog.jsonb
    AS 'MODULE_PATHNAME', 'ehrledger_consistency_proof'
    LANGUAGE C STABLE SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION ehrledger.consistency_proof(pg_catalog.jsonb, pg_catalog.jsonb) IS
    'A proof, checkable offline, that the newer digest''s chain extends the older one''s (docs/format.md §13).';

CREATE FUNCTION ehrledger.export(tbl pg_catalog.regclass)
    RETURNS TABLE(line pg_catalog.text)
    AS 'MODULE_PATHNAME', 'ehrledger_export'
    LANGUAGE C STABLE STRICT SECURITY INVOKER
    SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION ehrledger.export(pg_catalog.regclass) IS
    'Every block and every sealed row of a table as JSON Lines, for ehrledger-verify (docs/format.md §14).';

-- Makes tbl a ledger table under ledger id tid: the work of protect(),
-- also used at install time for ehrledger's own ledgered tables.
CREATE FUNCTION ehrledger._attach(tbl pg_catalog.regclass, tid pg_catalog.int4,
                                  mode pg_catalog.text,
                                  signer_column pg_catalog.name,
                                  signature_column pg_catalog.name,
                                  internal pg_catalog.bool)
    RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $attach$
DECLARE
    existing    pg_catalog.int8;
    caller_role pg_catalog.text := pg_catalog.current_setting('session_replication_role');
    trigger_args pg_catalog.text := pg_catalog.quote_literal(tid::pg_catalog.text);
    signer_args pg_catalog.text := '';
    history_name pg_catalog.text := 'ehrledger.history_' || tid::pg_catalog.text;
BEGIN
    IF signer_column IS NOT NULL THEN
        signer_args := ', ' || pg_catalog.quote_literal(signer_column)
                       || ', ' || pg_catalog.quote_literal(signature_column);
    END IF;

    -- The seal lock: no block is sealed while rows enter the ledger here.
    LOCK TABLE ehrledger.block IN EXCLUSIVE MODE;
    EXECUTE pg_catalog.format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE', tbl);
    PERFORM ehrledger.check_hashable(tbl);

    EXECUTE pg_catalog.format(
        'ALTER TABLE %s ADD COLUMN ledger_seq pg_catalog.int8, ADD COLUMN ledger_hash pg_catalog.bytea', tbl);

    -- Rows already in the table enter the ledger: the insert trigger, fired
    -- once by an UPDATE, numbers and hashes each (signatures of existing
    -- rows are not checked here: verify_record() checks them).  Replica
    -- role keeps the application's own triggers and rules out of it.
    EXECUTE pg_catalog.format(
        'CREATE TRIGGER zz_ehrledger_backfill BEFORE UPDATE ON %s FOR EACH ROW EXECUTE FUNCTION ehrledger.insert_row(%L)',
        tbl, tid::pg_catalog.text);
    EXECUTE pg_catalog.format('ALTER TABLE %s ENABLE ALWAYS TRIGGER zz_ehrledger_backfill', tbl);
    PERFORM pg_catalog.set_config('session_replication_role', 'replica', true);
    EXECUTE pg_catalog.format('UPDATE ONLY %s SET ledger_seq = NULL', tbl);
    GET DIAGNOSTICS existing = ROW_COUNT;
    PERFORM pg_catalog.set_config('session_replication_role', caller_role, true);
    EXECUTE pg_catalog.format('DROP TRIGGER zz_ehrledger_backfill ON %s', tbl);

    EXECUTE pg_catalog.format(
        'ALTER TABLE %s ALTER COLUMN ledger_seq SET NOT NULL, ALTER COLUMN ledger_hash SET NOT NULL', tbl);
    EXECUTE pg_catalog.format('CREATE UNIQUE INDEX ON %s (ledger_seq)', tbl);

    -- zz_ sorts last, so the row is hashed after the application's own
    -- BEFORE triggers have had their say.
    EXECUTE pg_catalog.format(
        'CREATE TRIGGER zz_ehrledger_insert BEFORE INSERT ON %s FOR EACH ROW EXECUTE FUNCTION ehrledger.insert_row(%s%s)',
        tbl, trigger_args, signer_args);
    IF mode = 'versioned' THEN
        -- Earlier versions go to a history table of the same columns, with
        -- the end of each version: how, when, by whom, and its own number.
        EXECUTE pg_catalog.format('CREATE TABLE %s (LIKE %s)', history_name, tbl);
        EXECUTE pg_catalog.format(
            'ALTER TABLE %s ADD COLUMN ledger_op pg_catalog.text NOT NULL,'
            ' ADD COLUMN ledger_ended_seq pg_catalog.int8 NOT NULL,'
            ' ADD COLUMN ledger_ended_hash pg_catalog.bytea NOT NULL,'
            ' ADD COLUMN ledger_ended_at pg_catalog.timestamptz NOT NULL,'
            ' ADD COLUMN ledger_ended_by pg_catalog.name NOT NULL', history_name);
        EXECUTE pg_catalog.format('CREATE UNIQUE INDEX ON %s (ledger_seq)', history_name);
        EXECUTE pg_catalog.format('CREATE UNIQUE INDEX ON %s (ledger_ended_seq)', history_name);
        EXECUTE pg_catalog.format('REVOKE ALL ON %s FROM PUBLIC', history_name);
        EXECUTE pg_catalog.format(
            'CREATE TRIGGER ehrledger_append_only BEFORE UPDATE OR DELETE ON %s FOR EACH ROW EXECUTE FUNCTION ehrledger.refuse_change()',
            history_name);
        EXECUTE pg_catalog.format(
            'CREATE TRIGGER ehrledger_no_truncate BEFORE TRUNCATE ON %s FOR EACH STATEMENT EXECUTE FUNCTION ehrledger.refuse_change()',
            history_name);
        EXECUTE pg_catalog.format(
            'ALTER TABLE %s ENABLE ALWAYS TRIGGER ehrledger_append_only, ENABLE ALWAYS TRIGGER ehrledger_no_truncate',
            history_name);
        EXECUTE pg_catalog.format(
            'CREATE TRIGGER zz_ehrledger_version BEFORE UPDATE OR DELETE ON %s FOR EACH ROW EXECUTE FUNCTION ehrledger.version_row(%s, %L%s)',
            tbl, trigger_args, history_name, signer_args);
        EXECUTE pg_catalog.format('ALTER TABLE %s ENABLE ALWAYS TRIGGER zz_ehrledger_version', tbl);
    ELSE
        EXECUTE pg_catalog.format(
            'CREATE TRIGGER ehrledger_append_only BEFORE UPDATE OR DELETE ON %s FOR EACH ROW EXECUTE FUNCTION ehrledger.refuse_change()',
            tbl);
        EXECUTE pg_catalog.format('ALTER TABLE %s ENABLE ALWAYS TRIGGER ehrledger_append_only', tbl);
    END IF;
    EXECUTE pg_catalog.format(
        'CREATE TRIGGER ehrledger_no_truncate BEFORE TRUNCATE ON %s FOR EACH STATEMENT EXECUTE FUNCTION ehrledger.refuse_change()',
        tbl);
    EXECUTE pg_catalog.format(
        'ALTER TABLE %s ENABLE ALWAYS TRIGGER zz_ehrledger_insert, ENABLE ALWAYS TRIGGER ehrledger_no_truncate',
        tbl);

    INSERT INTO ehrledger.registered_table (table_id, relid, mode, signer_column,
                                            signature_column, rows_at_protect, internal, history,
                                            columns, signed_name)
        VALUES (tid, tbl, mode, signer_column, signature_column, existing, internal,
                CASE WHEN mode = 'versioned' THEN history_name::pg_catalog.regclass END,
                ehrledger._columns_of(tbl),
                CASE WHEN signer_column IS NOT NULL THEN tbl::pg_catalog.text END);
END
$attach$;

CREATE FUNCTION ehrledger.history(tbl pg_catalog.regclass,
                                  OUT ledger_seq pg_catalog.int8, OUT "row" pg_catalog.jsonb,
                                  OUT current pg_catalog.bool, OUT ended_seq pg_catalog.int8,
                                  OUT ended_how pg_catalog.text, OUT ended_at pg_catalog.timestamptz,
                                  OUT ended_by pg_catalog.name)
    RETURNS SETOF record
    AS 'MODULE_PATHNAME', 'ehrledger_history'
    LANGUAGE C STABLE STRICT;
COMMENT ON FUNCTION ehrledger.history(pg_catalog.regclass) IS
    'Every version of every row of a versioned table, oldest first, with how, when and by whom each ended.';

CREATE FUNCTION ehrledger.protect(tbl pg_catalog.regclass,
                                  mode pg_catalog.text DEFAULT 'append_only',
                                  patient_column pg_catalog.name DEFAULT NULL,
                                  signer_column pg_catalog.name DEFAULT NULL,
                                  signature_column pg_catalog.name DEFAULT NULL)
    RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $protect$
DECLARE
    rel         pg_catalog.pg_class%ROWTYPE;
    nsp         pg_catalog.name;
    col_type    pg_catalog.regtype;
BEGIN
    IF tbl IS NULL THEN
        RAISE EXCEPTION 'table to protect must not be NULL'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF mode IS NULL OR mode NOT IN ('append_only', 'versioned') THEN
        RAISE EXCEPTION 'unknown ledger mode "%"', mode
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use mode => ''append_only'' or mode => ''versioned''.';
    END IF;
    IF patient_column IS NOT NULL THEN
        RAISE EXCEPTION 'patient_column is not available in ehrledger 0.1'
            USING ERRCODE = 'feature_not_supported';
    END IF;
    IF (signer_column IS NULL) <> (signature_column IS NULL) THEN
        RAISE EXCEPTION 'signer_column and signature_column go together'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Name both columns, or neither.';
    END IF;

    SELECT * INTO rel FROM pg_catalog.pg_class WHERE oid = tbl;
    SELECT nspname INTO nsp FROM pg_catalog.pg_namespace WHERE oid = rel.relnamespace;
    IF rel.relkind = 'p' THEN
        RAISE EXCEPTION 'cannot protect partitioned table %', tbl
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'Protect each partition instead.';
    ELSIF rel.relkind <> 'r' THEN
        RAISE EXCEPTION '"%" is not a table', tbl
            USING ERRCODE = 'wrong_object_type',
                  DETAIL = 'Only ordinary tables can be protected.';
    END IF;
    IF rel.relpersistence = 't' THEN
        RAISE EXCEPTION 'cannot protect temporary table %', tbl
            USING ERRCODE = 'feature_not_supported',
                  DETAIL = 'A temporary table vanishes at the end of its session.';
    ELSIF rel.relpersistence = 'u' THEN
        RAISE EXCEPTION 'cannot protect unlogged table %', tbl
            USING ERRCODE = 'feature_not_supported',
                  DETAIL = 'An unlogged table loses its rows in a crash.',
                  HINT = pg_catalog.format('Run ALTER TABLE %s SET LOGGED first.', tbl);
    END IF;
    IF nsp = 'ehrledger' THEN
        RAISE EXCEPTION 'cannot protect %: it belongs to ehrledger itself', tbl
            USING ERRCODE = 'insufficient_privilege';
    ELSIF nsp IN ('pg_catalog', 'information_schema') OR nsp LIKE 'pg\_toast%' THEN
        RAISE EXCEPTION 'cannot protect system catalog %', tbl
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF EXISTS (SELECT 1 FROM ehrledger.registered_table r WHERE r.relid = tbl) THEN
        RAISE EXCEPTION 'table % is already protected', tbl
            USING ERRCODE = 'duplicate_object';
    END IF;
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                WHERE a.attrelid = tbl AND NOT a.attisdropped
                  AND a.attname IN ('ledger_seq', 'ledger_hash', 'ledger_op', 'ledger_ended_seq',
                                    'ledger_ended_hash', 'ledger_ended_at', 'ledger_ended_by')) THEN
        RAISE EXCEPTION 'table % already has a column whose name ehrledger reserves', tbl
            USING ERRCODE = 'duplicate_column',
                  DETAIL = 'ledger_seq, ledger_hash, ledger_op, ledger_ended_seq, ledger_ended_hash, ledger_ended_at and ledger_ended_by are reserved.',
                  HINT = 'Rename that column before protecting the table.';
    END IF;
    IF signer_column IS NOT NULL AND signer_column = signature_column THEN
        RAISE EXCEPTION 'signer and signature must be two different columns'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF signer_column IS NOT NULL THEN
        SELECT a.atttypid INTO col_type FROM pg_catalog.pg_attribute a
         WHERE a.attrelid = tbl AND a.attname = signer_column AND NOT a.attisdropped AND a.attnum > 0;
        IF col_type IS NULL THEN
            RAISE EXCEPTION 'column "%" of % does not exist', signer_column, tbl
                USING ERRCODE = 'undefined_column';
        ELSIF (SELECT CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
                 FROM pg_catalog.pg_type t WHERE t.oid = col_type)::pg_catalog.regtype NOT IN
              ('pg_catalog.text'::pg_catalog.regtype, 'pg_catalog.varchar'::pg_catalog.regtype) THEN
            RAISE EXCEPTION 'signer column "%" of % must be of type text, not %', signer_column, tbl, col_type
                USING ERRCODE = 'datatype_mismatch',
                      HINT = 'The signer column holds the actor_id of the row''s author.';
        END IF;
        col_type := NULL;
        SELECT a.atttypid INTO col_type FROM pg_catalog.pg_attribute a
         WHERE a.attrelid = tbl AND a.attname = signature_column AND NOT a.attisdropped AND a.attnum > 0;
        IF col_type IS NULL THEN
            RAISE EXCEPTION 'column "%" of % does not exist', signature_column, tbl
                USING ERRCODE = 'undefined_column';
        ELSIF col_type <> 'pg_catalog.bytea'::pg_catalog.regtype THEN
            RAISE EXCEPTION 'signature column "%" of % must be of type bytea, not %', signature_column, tbl, col_type
                USING ERRCODE = 'datatype_mismatch';
        END IF;
    END IF;

    PERFORM ehrledger._attach(tbl, pg_catalog.nextval('ehrledger.registered_table_id')::pg_catalog.int4,
                              mode, signer_column, signature_column, false);
END
$protect$;
COMMENT ON FUNCTION ehrledger.protect(pg_catalog.regclass, pg_catalog.text, pg_catalog.name, pg_catalog.name, pg_catalog.name) IS
    'Makes a table a ledger table: numbers and hashes every row, existing ones included, refuses UPDATE, DELETE and TRUNCATE, and with signer_column and signature_column checks authors'' signatures at insert.';

CREATE FUNCTION ehrledger.check_hashable(tbl pg_catalog.regclass) RETURNS void
    AS 'MODULE_PATHNAME', 'ehrledger_check_hashable'
    LANGUAGE C STRICT;
COMMENT ON FUNCTION ehrledger.check_hashable(pg_catalog.regclass) IS
    'Raises an error if some column type of the table cannot be encoded canonically.';


-- Actors: people and services that sign, read and consent.  Their history
-- (registration, key rotation, revocation) is a ledgered table itself.
CREATE TABLE ehrledger.actor_event (
    actor_id    pg_catalog.text NOT NULL,
    action      pg_catalog.text NOT NULL
                CHECK (action IN ('register', 'rotate', 'revoke')),
    role        pg_catalog.text
                CHECK (role IN ('patient', 'provider', 'pharmacist', 'auditor', 'admin')),
    pg_role     pg_catalog.name,
    public_key  pg_catalog.bytea CHECK (pg_catalog.octet_length(public_key) = 32),
    at          pg_catalog.timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    by_role     pg_catalog.name NOT NULL DEFAULT SESSION_USER
);
COMMENT ON TABLE ehrledger.actor_event IS
    'The ledgered history of actors: registrations, key rotations, revocations.';
SELECT pg_catalog.pg_extension_config_dump('ehrledger.actor_event', '');
SELECT ehrledger._attach('ehrledger.actor_event', 2000000001, 'append_only', NULL, NULL, true);

CREATE VIEW ehrledger.actor_keys AS
    SELECT e.actor_id, e.public_key, e.at AS valid_from, e.ledger_seq AS from_seq,
           n.at AS valid_until, n.ledger_seq AS until_seq
      FROM ehrledger.actor_event e
      LEFT JOIN LATERAL (
          SELECT x.at, x.ledger_seq FROM ehrledger.actor_event x
           WHERE x.actor_id = e.actor_id AND x.ledger_seq > e.ledger_seq
           ORDER BY x.ledger_seq LIMIT 1) n ON true
     WHERE e.action IN ('register', 'rotate');
COMMENT ON VIEW ehrledger.actor_keys IS
    'Every key every actor has held: a row numbered between from_seq and until_seq was written while it was valid.';

CREATE VIEW ehrledger.actors AS
    SELECT r.actor_id, r.role, r.pg_role,
           (SELECT k.public_key FROM ehrledger.actor_keys k
             WHERE k.actor_id = r.actor_id ORDER BY k.from_seq DESC LIMIT 1) AS public_key,
           r.at AS registered_at,
           (SELECT v.at FROM ehrledger.actor_event v
             WHERE v.actor_id = r.actor_id AND v.action = 'revoke') AS revoked_at
      FROM ehrledger.actor_event r
     WHERE r.action = 'register';
COMMENT ON VIEW ehrledger.actors IS
    'Registered actors with their role, database role, current (or last) public key and revocation.';

-- Tells every backend's cache of signer keys to forget, once the calling
-- transaction commits.
CREATE FUNCTION ehrledger._actors_changed() RETURNS void
    AS 'MODULE_PATHNAME', 'ehrledger_actors_changed'
    LANGUAGE C VOLATILE;

CREATE FUNCTION ehrledger.register_actor(actor_id pg_catalog.text, role pg_catalog.text,
                                         public_key pg_catalog.bytea,
                                         pg_role pg_catalog.name DEFAULT NULL)
    RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF actor_id IS NULL OR role IS NULL OR public_key IS NULL THEN
        RAISE EXCEPTION 'actor_id, role and public_key must not be NULL'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF actor_id = '' OR pg_catalog.length(actor_id) > 200 THEN
        RAISE EXCEPTION 'actor_id must hold 1 to 200 characters'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF role NOT IN ('patient', 'provider', 'pharmacist', 'auditor', 'admin') THEN
        RAISE EXCEPTION 'unknown actor role "%"', role
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use patient, provider, pharmacist, auditor or admin.';
    END IF;
    IF pg_catalog.octet_length(public_key) <> 32 THEN
        RAISE EXCEPTION 'public key must be 32 bytes, not %', pg_catalog.octet_length(public_key)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass an Ed25519 public key, such as ehrledger.keypair() returns.';
    END IF;
    IF pg_role IS NOT NULL AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname = pg_role) THEN
        RAISE EXCEPTION 'role "%" does not exist', pg_role
            USING ERRCODE = 'undefined_object';
    END IF;
    PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('ehrledger.actor:' || actor_id));
    IF EXISTS (SELECT 1 FROM ehrledger.actor_event e WHERE e.actor_id = register_actor.actor_id) THEN
        RAISE EXCEPTION 'actor "%" is already registered', actor_id
            USING ERRCODE = 'duplicate_object',
                  HINT = 'Use ehrledger.rotate_key() to give it a new key.';
    END IF;
    IF pg_role IS NOT NULL AND EXISTS (SELECT 1 FROM ehrledger.actors a
                                        WHERE a.pg_role = register_actor.pg_role AND a.revoked_at IS NULL) THEN
        RAISE EXCEPTION 'role "%" is already mapped to an actor', pg_role
            USING ERRCODE = 'duplicate_object';
    END IF;
    INSERT INTO ehrledger.actor_event (actor_id, action, role, pg_role, public_key)
        VALUES (actor_id, 'register', role, pg_role, public_key);
    PERFORM ehrledger._actors_changed();
END
$$;
COMMENT ON FUNCTION ehrledger.register_actor(pg_catalog.text, pg_catalog.text, pg_catalog.bytea, pg_catalog.name) IS
    'Registers an actor (patient, provider, pharmacist, auditor or admin) with its Ed25519 public key; ledgered.';

-- The checks rotate_key() and revoke_actor() share: the actor exists and is
-- not revoked.  Takes the actor's lock.
CREATE FUNCTION ehrledger._live_actor(actor pg_catalog.text) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF actor IS NULL THEN
        RAISE EXCEPTION 'actor_id must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('ehrledger.actor:' || actor));
    IF NOT EXISTS (SELECT 1 FROM ehrledger.actor_event e WHERE e.actor_id = actor) THEN
        RAISE EXCEPTION 'actor "%" is not registered', actor USING ERRCODE = 'undefined_object';
    END IF;
    IF EXISTS (SELECT 1 FROM ehrledger.actor_event e WHERE e.actor_id = actor AND e.action = 'revoke') THEN
        RAISE EXCEPTION 'actor "%" was revoked', actor
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'A revoked actor stays revoked; register a new actor_id.';
    END IF;
END
$$;

CREATE FUNCTION ehrledger.rotate_key(actor_id pg_catalog.text, public_key pg_catalog.bytea)
    RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM ehrledger._live_actor(actor_id);
    IF public_key IS NULL THEN
        RAISE EXCEPTION 'public_key must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF pg_catalog.octet_length(public_key) <> 32 THEN
        RAISE EXCEPTION 'public key must be 32 bytes, not %', pg_catalog.octet_length(public_key)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF EXISTS (SELECT 1 FROM ehrledger.actor_keys k
                WHERE k.actor_id = rotate_key.actor_id AND k.public_key = rotate_key.public_key) THEN
        RAISE EXCEPTION 'actor "%" has used this key before', actor_id
            USING ERRCODE = 'duplicate_object',
                  HINT = 'Rotate to a fresh key.';
    END IF;
    INSERT INTO ehrledger.actor_event (actor_id, action, public_key)
        VALUES (actor_id, 'rotate', public_key);
    PERFORM ehrledger._actors_changed();
END
$$;
COMMENT ON FUNCTION ehrledger.rotate_key(pg_catalog.text, pg_catalog.bytea) IS
    'Gives an actor a new key: rows written from now on must be signed with it; earlier rows stay judged by the key of their time.';

CREATE FUNCTION ehrledger.revoke_actor(actor_id pg_catalog.text)
    RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM ehrledger._live_actor(actor_id);
    INSERT INTO ehrledger.actor_event (actor_id, action) VALUES (actor_id, 'revoke');
    PERFORM ehrledger._actors_changed();
END
$$;
COMMENT ON FUNCTION ehrledger.revoke_actor(pg_catalog.text) IS
    'Revokes an actor and its key: it can sign nothing new; what it signed before stays valid.';

-- The key an actor held for a row numbered seq (NULL seq: its current
-- key, for a row being written).  What the insert trigger and
-- verify_record() need, and no more: actors are not public.
CREATE FUNCTION ehrledger._signer_key(actor pg_catalog.text, seq pg_catalog.int8,
                                      OUT role pg_catalog.text, OUT revoked_at pg_catalog.text,
                                      OUT public_key pg_catalog.bytea)
    RETURNS SETOF record
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT a.role, a.revoked_at::pg_catalog.text,
           (SELECT k.public_key FROM ehrledger.actor_keys k
             WHERE k.actor_id = a.actor_id
               AND CASE WHEN seq IS NULL THEN k.until_seq IS NULL
                        ELSE k.from_seq < seq AND (k.until_seq IS NULL OR k.until_seq > seq) END)
      FROM ehrledger.actors a WHERE a.actor_id = actor
$$;

CREATE FUNCTION ehrledger.keypair(OUT public_key pg_catalog.bytea, OUT secret_key pg_catalog.bytea)
    AS 'MODULE_PATHNAME', 'ehrledger_keypair'
    LANGUAGE C VOLATILE;
COMMENT ON FUNCTION ehrledger.keypair() IS
    'A fresh Ed25519 key pair (secret_key: 64 bytes, seed then public key). For tests and demos: real signers keep secret keys out of the database.';

CREATE FUNCTION ehrledger.sign(message pg_catalog.bytea, secret_key pg_catalog.bytea)
    RETURNS pg_catalog.bytea
    AS 'MODULE_PATHNAME', 'ehrledger_sign'
    LANGUAGE C IMMUTABLE;
COMMENT ON FUNCTION ehrledger.sign(pg_catalog.bytea, pg_catalog.bytea) IS
    'Ed25519 signature (64 bytes) of message with a 32-byte seed or 64-byte secret key.';

CREATE FUNCTION ehrledger.verify_signature(message pg_catalog.bytea, signature pg_catalog.bytea,
                                           public_key pg_catalog.bytea)
    RETURNS pg_catalog.bool
    AS 'MODULE_PATHNAME', 'ehrledger_verify_signature'
    LANGUAGE C IMMUTABLE;
COMMENT ON FUNCTION ehrledger.verify_signature(pg_catalog.bytea, pg_catalog.bytea, pg_catalog.bytea) IS
    'Whether signature is a valid Ed25519 signature of message by public_key.';

CREATE FUNCTION ehrledger.signing_payload(tbl pg_catalog.regclass, "row" pg_catalog.jsonb)
    RETURNS pg_catalog.bytea
    AS 'MODULE_PATHNAME', 'ehrledger_signing_payload'
    LANGUAGE C STABLE;
COMMENT ON FUNCTION ehrledger.signing_payload(pg_catalog.regclass, pg_catalog.jsonb) IS
    'The exact bytes the author of a row signs (docs/format.md §15).';

CREATE FUNCTION ehrledger.verify_record(tbl pg_catalog.regclass, ledger_seq pg_catalog.int8,
                                        OUT valid pg_catalog.bool, OUT signer pg_catalog.text,
                                        OUT role pg_catalog.text, OUT block pg_catalog.int8,
                                        OUT detail pg_catalog.text)
    AS 'MODULE_PATHNAME', 'ehrledger_verify_record'
    LANGUAGE C STABLE;
COMMENT ON FUNCTION ehrledger.verify_record(pg_catalog.regclass, pg_catalog.int8) IS
    'The pharmacist''s check of a signed row: intact, signed by whom, in which role, sealed in which block.';


-- The schema guard.  Sealed rows name their columns, values and table, so
-- a change to those would make them unverifiable.  After every DDL command
-- each protected table must still have every recorded column with its
-- type, any new column must start out NULL (it is then recorded, and added
-- to the history table too), its triggers must be there and enabled, its
-- ledger_seq index must exist, it must stay logged, a signed table keeps
-- its name, and no rule may rewrite writes to it.  Refusals are SQLSTATE
-- LD020.  ehrledger.retire() is the documented way out.
CREATE FUNCTION ehrledger._check_ledger_table(tid pg_catalog.int4, after_drop pg_catalog.bool) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r           ehrledger.registered_table%ROWTYPE;
    rel         pg_catalog.pg_class%ROWTYPE;
    col         record;
    att         record;
    trig        pg_catalog.text;
    state       pg_catalog."char";
    expected    pg_catalog.text[];
BEGIN
    SELECT * INTO r FROM ehrledger.registered_table WHERE table_id = tid;
    IF NOT FOUND OR r.retired_at IS NOT NULL THEN
        RETURN;
    END IF;
    SELECT * INTO rel FROM pg_catalog.pg_class WHERE oid = r.relid;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'cannot drop ledger table with ledger id %', tid
            USING ERRCODE = 'LD020',
                  HINT = 'Retire it first with ehrledger.retire(table, reason).';
    END IF;
    IF rel.relpersistence <> 'p' THEN
        RAISE EXCEPTION 'ledger table % must stay logged', r.relid
            USING ERRCODE = 'LD020', DETAIL = 'An unlogged table loses its rows in a crash.';
    END IF;
    IF r.signed_name IS NOT NULL AND r.signed_name <> r.relid::pg_catalog.text THEN
        RAISE EXCEPTION 'cannot rename signed ledger table % (signed as %)', r.relid, r.signed_name
            USING ERRCODE = 'LD020',
                  DETAIL = 'Authors signed rows of the table under its name.';
    END IF;

    FOR col IN SELECT * FROM pg_catalog.jsonb_to_recordset(r.columns) AS x(name pg_catalog.text, type pg_catalog.text) LOOP
        SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod) AS type INTO att
          FROM pg_catalog.pg_attribute a
         WHERE a.attrelid = r.relid AND a.attname = col.name AND a.attnum > 0 AND NOT a.attisdropped;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'cannot drop or rename column "%" of ledger table %', col.name, r.relid
                USING ERRCODE = 'LD020',
                      DETAIL = 'Sealed rows name their columns: they would no longer verify.',
                      HINT = 'Add a new column instead, or retire the table with ehrledger.retire().';
        ELSIF att.type <> col.type THEN
            RAISE EXCEPTION 'cannot change the type of column "%" of ledger table % from % to %',
                  col.name, r.relid, col.type, att.type
                USING ERRCODE = 'LD020',
                      DETAIL = 'Sealed rows were hashed in the old type.',
                      HINT = 'Add a new column of the new type instead.';
        END IF;
    END LOOP;

    FOR att IN SELECT a.attname, a.atthasdef, a.attidentity, a.attgenerated,
                      pg_catalog.format_type(a.atttypid, a.atttypmod) AS type
                 FROM pg_catalog.pg_attribute a
                WHERE a.attrelid = r.relid AND a.attnum > 0 AND NOT a.attisdropped
                  AND NOT EXISTS (SELECT 1 FROM pg_catalog.jsonb_array_elements(r.columns) c
                                   WHERE c->>'name' = a.attname)
                ORDER BY a.attnum LOOP
        IF (att.atthasdef AND att.attgenerated = '') OR att.attidentity <> '' THEN
            RAISE EXCEPTION 'column "%" added to ledger table % must start out NULL', att.attname, r.relid
                USING ERRCODE = 'LD020',
                      DETAIL = 'A default would change what the sealed rows hold.',
                      HINT = 'Add the column without a default, then ALTER COLUMN ... SET DEFAULT for new rows.';
        END IF;
        UPDATE ehrledger.registered_table
           SET columns = columns || pg_catalog.jsonb_build_object('name', att.attname, 'type', att.type)
         WHERE table_id = tid;
        IF r.history IS NOT NULL THEN
            EXECUTE pg_catalog.format('ALTER TABLE %s ADD COLUMN %I %s', r.history, att.attname, att.type);
        END IF;
    END LOOP;

    -- The history table keeps every recorded column and its own ledger columns.
    IF r.history IS NOT NULL THEN
        FOR col IN SELECT * FROM pg_catalog.jsonb_to_recordset(r.columns) AS x(name pg_catalog.text, type pg_catalog.text)
                   UNION ALL VALUES ('ledger_op', 'text'), ('ledger_ended_seq', 'bigint'),
                                    ('ledger_ended_hash', 'bytea'),
                                    ('ledger_ended_at', 'timestamp with time zone'),
                                    ('ledger_ended_by', 'name') LOOP
            IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                            WHERE a.attrelid = r.history AND a.attname = col.name AND a.attnum > 0
                              AND NOT a.attisdropped
                              AND pg_catalog.format_type(a.atttypid, a.atttypmod) = col.type) THEN
                RAISE EXCEPTION 'cannot change column "%" of history table %', col.name, r.history
                    USING ERRCODE = 'LD020',
                          DETAIL = 'Earlier versions were sealed with it.';
            END IF;
        END LOOP;
        IF (SELECT c.relpersistence FROM pg_catalog.pg_class c WHERE c.oid = r.history) IS DISTINCT FROM 'p' THEN
            RAISE EXCEPTION 'history table % must exist and stay logged', r.history USING ERRCODE = 'LD020';
        END IF;
    END IF;

    expected := ARRAY['zz_ehrledger_insert', 'ehrledger_no_truncate',
                      CASE WHEN r.mode = 'versioned' THEN 'zz_ehrledger_version' ELSE 'ehrledger_append_only' END];
    FOREACH trig IN ARRAY expected LOOP
        SELECT t.tgenabled INTO state FROM pg_catalog.pg_trigger t
         WHERE t.tgrelid = r.relid AND t.tgname = trig;
        -- Only a DROP can lose a trigger; while pg_restore rebuilds a table
        -- its triggers simply do not exist yet.
        IF NOT FOUND AND NOT after_drop THEN
            CONTINUE;
        ELSIF NOT FOUND THEN
            RAISE EXCEPTION 'cannot drop trigger % of ledger table %', trig, r.relid
                USING ERRCODE = 'LD020';
        ELSIF state NOT IN ('A', 'O') THEN
            RAISE EXCEPTION 'cannot disable trigger % of ledger table %', trig, r.relid
                USING ERRCODE = 'LD020',
                      HINT = 'The ledger''s triggers stay enabled; verify() reports what a superuser changes behind them.';
        END IF;
    END LOOP;
    IF after_drop AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_index i JOIN pg_catalog.pg_attribute a
                     ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
                    WHERE i.indrelid = r.relid AND i.indisunique AND i.indnkeyatts = 1
                      AND a.attname = 'ledger_seq') THEN
        RAISE EXCEPTION 'cannot drop the ledger_seq index of ledger table %', r.relid
            USING ERRCODE = 'LD020';
    END IF;
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_rewrite w
                WHERE w.ev_class IN (r.relid, r.history) AND w.ev_type <> '1') THEN
        RAISE EXCEPTION 'rules that rewrite writes to ledger table % are not allowed', r.relid
            USING ERRCODE = 'LD020',
                  HINT = 'Use a trigger, or write to the table directly.';
    END IF;
END
$$;

CREATE FUNCTION ehrledger._guard_ddl() RETURNS event_trigger
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    tid pg_catalog.int4;
BEGIN
    FOR tid IN
        SELECT DISTINCT r.table_id
          FROM pg_catalog.pg_event_trigger_ddl_commands() c
          JOIN ehrledger.registered_table r
            ON (c.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
                AND c.objid IN (r.relid, r.history))
            OR (c.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass
                AND EXISTS (SELECT 1 FROM pg_catalog.pg_rewrite w
                             WHERE w.oid = c.objid AND w.ev_class IN (r.relid, r.history)))
    LOOP
        PERFORM ehrledger._check_ledger_table(tid, false);
    END LOOP;
END
$$;

CREATE FUNCTION ehrledger._guard_drop() RETURNS event_trigger
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    tid pg_catalog.int4;
    dropped pg_catalog.text;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_event_trigger_dropped_objects() d
                WHERE d.object_type = 'extension' AND d.object_identity = 'ehrledger') THEN
        RETURN;
    END IF;
    FOR dropped IN
        SELECT d.object_identity FROM pg_catalog.pg_event_trigger_dropped_objects() d
          JOIN ehrledger.registered_table r ON d.objid IN (r.relid, r.history)
         WHERE d.object_type = 'table' AND r.retired_at IS NULL
    LOOP
        RAISE EXCEPTION 'cannot drop ledger table %', dropped
            USING ERRCODE = 'LD020',
                  HINT = 'Retire it first with ehrledger.retire(table, reason).';
    END LOOP;
    FOR tid IN SELECT r.table_id FROM ehrledger.registered_table r WHERE r.retired_at IS NULL LOOP
        PERFORM ehrledger._check_ledger_table(tid, true);
    END LOOP;
END
$$;

CREATE EVENT TRIGGER ehrledger_guard_ddl ON ddl_command_end
    EXECUTE FUNCTION ehrledger._guard_ddl();
CREATE EVENT TRIGGER ehrledger_guard_drop ON sql_drop
    EXECUTE FUNCTION ehrledger._guard_drop();

-- Retiring a table: the documented way to take it out of the ledger.  The
-- retirement is a ledgered row; the table's ledger triggers go, so it may
-- then be altered or dropped, and verify() no longer expects its rows.
CREATE TABLE ehrledger.retirement (
    table_id    pg_catalog.int4 NOT NULL,
    tbl         pg_catalog.text NOT NULL,
    reason      pg_catalog.text NOT NULL,
    live_rows   pg_catalog.int8 NOT NULL,
    at          pg_catalog.timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    by_role     pg_catalog.name NOT NULL DEFAULT SESSION_USER
);
SELECT pg_catalog.pg_extension_config_dump('ehrledger.retirement', '');
SELECT ehrledger._attach('ehrledger.retirement', 2000000002, 'append_only', NULL, NULL, true);

CREATE FUNCTION ehrledger.retire(tbl pg_catalog.regclass, reason pg_catalog.text) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r ehrledger.registered_table%ROWTYPE;
    n pg_catalog.int8;
BEGIN
    IF tbl IS NULL OR reason IS NULL OR pg_catalog.btrim(reason) = '' THEN
        RAISE EXCEPTION 'table and a reason are required to retire a ledger table'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT * INTO r FROM ehrledger.registered_table WHERE relid = tbl;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'table % is not protected by ehrledger', tbl USING ERRCODE = 'LD002';
    ELSIF r.internal THEN
        RAISE EXCEPTION 'cannot retire %: it belongs to ehrledger itself', tbl
            USING ERRCODE = 'insufficient_privilege';
    ELSIF r.retired_at IS NOT NULL THEN
        RAISE EXCEPTION 'table % was retired already', tbl USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    -- Everything written so far is sealed first; then no row is pending.
    EXECUTE pg_catalog.format('LOCK TABLE %s IN EXCLUSIVE MODE', tbl);
    PERFORM ehrledger.seal();
    LOCK TABLE ehrledger.block IN EXCLUSIVE MODE;
    EXECUTE pg_catalog.format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE', tbl);
    EXECUTE pg_catalog.format('SELECT pg_catalog.count(*) FROM %s', tbl) INTO n;
    INSERT INTO ehrledger.retirement (table_id, tbl, reason, live_rows)
        VALUES (r.table_id, tbl::pg_catalog.text, reason, n);
    UPDATE ehrledger.registered_table SET retired_at = pg_catalog.now() WHERE table_id = r.table_id;
    EXECUTE pg_catalog.format('DROP TRIGGER zz_ehrledger_insert ON %s', tbl);
    EXECUTE pg_catalog.format('DROP TRIGGER ehrledger_no_truncate ON %s', tbl);
    IF r.mode = 'versioned' THEN
        EXECUTE pg_catalog.format('DROP TRIGGER zz_ehrledger_version ON %s', tbl);
    ELSE
        EXECUTE pg_catalog.format('DROP TRIGGER ehrledger_append_only ON %s', tbl);
    END IF;
END
$$;
COMMENT ON FUNCTION ehrledger.retire(pg_catalog.regclass, pg_catalog.text) IS
    'Takes a table out of the ledger, recording why in the ledger itself; the table may then be changed or dropped.';

-- Privileges: reading the ledger's state is public (blocks and keys hold
-- hashes and public keys, not patient data); changing it is for superusers
-- and whom they grant.  Functions that show rows (row_encoding, proof,
-- export) run with the caller's rights and check SELECT on the table.
REVOKE ALL ON ALL TABLES IN SCHEMA ehrledger FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA ehrledger FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA ehrledger FROM PUBLIC;
GRANT USAGE ON SCHEMA ehrledger TO PUBLIC;
GRANT SELECT ON ehrledger.blocks, ehrledger.protected_tables, ehrledger.block,
    ehrledger.node_key TO PUBLIC;
GRANT EXECUTE ON FUNCTION ehrledger.insert_row(), ehrledger.refuse_change(),
    ehrledger.verify(pg_catalog.regclass, pg_catalog.jsonb), ehrledger.digest(),
    ehrledger.node_public_key(), ehrledger.row_encoding(pg_catalog.regclass, pg_catalog.int8),
    ehrledger.proof(pg_catalog.regclass, pg_catalog.int8, pg_catalog.jsonb),
    ehrledger.consistency_proof(pg_catalog.jsonb, pg_catalog.jsonb),
    ehrledger.export(pg_catalog.regclass), ehrledger.history(pg_catalog.regclass),
    ehrledger.keypair(), ehrledger.sign(pg_catalog.bytea, pg_catalog.bytea),
    ehrledger.verify_signature(pg_catalog.bytea, pg_catalog.bytea, pg_catalog.bytea),
    ehrledger.signing_payload(pg_catalog.regclass, pg_catalog.jsonb),
    ehrledger.verify_record(pg_catalog.regclass, pg_catalog.int8),
    ehrledger._signer_key(pg_catalog.text, pg_catalog.int8)
    TO PUBLIC;
