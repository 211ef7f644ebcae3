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
    rows_at_protect  pg_catalog.int8 NOT NULL DEFAULT 0
);
COMMENT ON TABLE ehrledger.registered_table IS
    'Tables protected by ehrledger; read it through ehrledger.protected_tables.';

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

SELECT pg_catalog.pg_extension_config_dump('ehrledger.registered_table', '');
SELECT pg_catalog.pg_extension_config_dump('ehrledger.registered_table_id', '');
SELECT pg_catalog.pg_extension_config_dump('ehrledger.block', '');
SELECT pg_catalog.pg_extension_config_dump('ehrledger.node_key', '');
SELECT pg_catalog.pg_extension_config_dump('ehrledger.ledger_seq', '');

CREATE VIEW ehrledger.blocks AS
    SELECT origin, height, prev_hash, history_root, root, block_hash, first_seq,
           last_seq, row_count, sealed_at, signature, public_key
      FROM ehrledger.block;
COMMENT ON VIEW ehrledger.blocks IS
    'One row per sealed block: its header, hash and Ed25519 signature.';

CREATE VIEW ehrledger.protected_tables AS
    SELECT relid AS tbl, table_id, mode, patient_column, signer_column,
           signature_column, protected_at, protected_by, rows_at_protect
      FROM ehrledger.registered_table;
COMMENT ON VIEW ehrledger.protected_tables IS
    'Tables protected by ehrledger, with the options they were protected with.';

-- Triggers protect() installs.
CREATE FUNCTION ehrledger.insert_row() RETURNS trigger
    AS 'MODULE_PATHNAME', 'ehrledger_insert_row' LANGUAGE C;
CREATE FUNCTION ehrledger.refuse_change() RETURNS trigger
    AS 'MODULE_PATHNAME', 'ehrledger_refuse_change' LANGUAGE C;

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
    tid         pg_catalog.int4;
    existing    pg_catalog.int8;
    caller_role pg_catalog.text := pg_catalog.current_setting('session_replication_role');
BEGIN
    IF tbl IS NULL THEN
        RAISE EXCEPTION 'table to protect must not be NULL'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF mode IS NULL OR mode NOT IN ('append_only', 'versioned') THEN
        RAISE EXCEPTION 'unknown ledger mode "%"', mode
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use mode => ''append_only''.';
    END IF;
    IF mode = 'versioned' THEN
        RAISE EXCEPTION 'versioned ledger tables are not available in ehrledger 0.1'
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'Protect the table in append_only mode.';
    END IF;
    IF patient_column IS NOT NULL OR signer_column IS NOT NULL OR signature_column IS NOT NULL THEN
        RAISE EXCEPTION 'patient_column, signer_column and signature_column are not available in ehrledger 0.1'
            USING ERRCODE = 'feature_not_supported';
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
                  AND a.attname IN ('ledger_seq', 'ledger_hash')) THEN
        RAISE EXCEPTION 'table % already has a column named ledger_seq or ledger_hash', tbl
            USING ERRCODE = 'duplicate_column',
                  HINT = 'Rename that column before protecting the table.';
    END IF;

    -- The seal lock: no block is sealed while rows enter the ledger here.
    LOCK TABLE ehrledger.block IN EXCLUSIVE MODE;
    EXECUTE pg_catalog.format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE', tbl);
    PERFORM ehrledger.check_hashable(tbl);

    tid := pg_catalog.nextval('ehrledger.registered_table_id');
    EXECUTE pg_catalog.format(
        'ALTER TABLE %s ADD COLUMN ledger_seq pg_catalog.int8, ADD COLUMN ledger_hash pg_catalog.bytea', tbl);

    -- Rows already in the table enter the ledger: the insert trigger, fired
    -- once by an UPDATE, numbers and hashes each.  Replica role keeps the
    -- application's own triggers and rules out of it.
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
        'CREATE TRIGGER zz_ehrledger_insert BEFORE INSERT ON %s FOR EACH ROW EXECUTE FUNCTION ehrledger.insert_row(%L)',
        tbl, tid::pg_catalog.text);
    EXECUTE pg_catalog.format(
        'CREATE TRIGGER ehrledger_append_only BEFORE UPDATE OR DELETE ON %s FOR EACH ROW EXECUTE FUNCTION ehrledger.refuse_change()',
        tbl);
    EXECUTE pg_catalog.format(
        'CREATE TRIGGER ehrledger_no_truncate BEFORE TRUNCATE ON %s FOR EACH STATEMENT EXECUTE FUNCTION ehrledger.refuse_change()',
        tbl);
    EXECUTE pg_catalog.format(
        'ALTER TABLE %s ENABLE ALWAYS TRIGGER zz_ehrledger_insert, ENABLE ALWAYS TRIGGER ehrledger_append_only, ENABLE ALWAYS TRIGGER ehrledger_no_truncate',
        tbl);

    INSERT INTO ehrledger.registered_table (table_id, relid, mode, rows_at_protect)
        VALUES (tid, tbl, mode, existing);
END
$protect$;
COMMENT ON FUNCTION ehrledger.protect(pg_catalog.regclass, pg_catalog.text, pg_catalog.name, pg_catalog.name, pg_catalog.name) IS
    'Makes a table a ledger table: numbers and hashes every row, existing ones included, and refuses UPDATE, DELETE and TRUNCATE.';

CREATE FUNCTION ehrledger.check_hashable(tbl pg_catalog.regclass) RETURNS void
    AS 'MODULE_PATHNAME', 'ehrledger_check_hashable'
    LANGUAGE C STRICT;
COMMENT ON FUNCTION ehrledger.check_hashable(pg_catalog.regclass) IS
    'Raises an error if some column type of the table cannot be encoded canonically.';

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
    ehrledger.export(pg_catalog.regclass)
    TO PUBLIC;
