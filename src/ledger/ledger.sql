-- ledger/ledger.sql: the ledger itself.
--
-- A table enters the ledger through protect() (ehrledger._attach()): it gets
-- ledger_seq, ledger_hash and ledger_salt columns, the insert trigger that
-- numbers, salts and hashes each row version (src/ledger/triggers.c,
-- src/ledger/encode.c), append-only or versioned guards, and a row in
-- ehrledger.registered_table.  The sealer
-- (seal(), src/ledger/seal.c, run by src/worker.c) groups committed rows into
-- signed, hash-chained blocks in ehrledger.block.  The schema guard (event
-- triggers) keeps protected tables as sealed rows name them; retire() is the
-- way out.  Keys and signatures of this node and of row authors: src/keys.c,
-- src/ledger/signatures.c.  Table owners' code (casts, CHECKs, triggers) runs as
-- the owner, restricted: _as_table_owner(), src/privileges.c.
--
-- Next: verify.sql checks what this file's tables hold.

-- Tables and sequences ----------------------------------------------------

-- Every protected row version gets a number from this one sequence.  CACHE 1
-- keeps numbers handed out in order, which the sealer's horizon relies on.
CREATE SEQUENCE ehrledger.ledger_seq AS bigint;

CREATE TABLE ehrledger.registered_table (
    table_id integer NOT NULL,
    relid regclass NOT NULL,
    mode text NOT NULL,
    patient_column name,
    signer_column name,
    signature_column name,
    protected_at timestamp with time zone DEFAULT now() NOT NULL,
    protected_by name DEFAULT CURRENT_USER NOT NULL,
    rows_at_protect bigint DEFAULT 0 NOT NULL,
    internal boolean DEFAULT false NOT NULL,
    history regclass,
    columns jsonb DEFAULT '[]'::jsonb NOT NULL,
    retired_at timestamp with time zone,
    signed_name text,
    category text,
    policies jsonb,
    shared boolean DEFAULT false NOT NULL,
    partitioned boolean DEFAULT false NOT NULL,
    partition_of integer,
    CONSTRAINT registered_table_pkey PRIMARY KEY (table_id),
    CONSTRAINT registered_table_relid_key UNIQUE (relid)
);
COMMENT ON TABLE ehrledger.registered_table IS 'Tables protected by ehrledger; read it through ehrledger.protected_tables.';
COMMENT ON COLUMN ehrledger.registered_table.partitioned IS 'A partitioned table: it holds no rows itself; each of its partitions is a ledger table of its own.';
COMMENT ON COLUMN ehrledger.registered_table.partition_of IS 'The table_id of the partitioned ledger table this table is a partition of.';

CREATE SEQUENCE ehrledger.registered_table_id AS integer;

-- The blocks of every chain this node holds.  leaves packs, per row version,
-- ledger_seq (8 bytes), table id (4) and leaf hash (32), in ledger_seq order.
-- history_root is the RFC 6962 tree hash of the chain's earlier block
-- hashes; history_frontier, the roots of that tree's perfect subtrees after
-- this block, lets the next block compute its history_root in log time.
CREATE TABLE ehrledger.block (
    origin text NOT NULL,
    height bigint NOT NULL,
    prev_hash bytea NOT NULL,
    history_root bytea NOT NULL,
    root bytea NOT NULL,
    block_hash bytea NOT NULL,
    first_seq bigint NOT NULL,
    last_seq bigint NOT NULL,
    row_count bigint NOT NULL,
    sealed_at timestamp with time zone NOT NULL,
    public_key bytea NOT NULL,
    signature bytea NOT NULL,
    history_frontier bytea NOT NULL,
    leaves_hash bytea NOT NULL,
    leaves bytea NOT NULL,
    CONSTRAINT block_pkey PRIMARY KEY (origin, height)
);
ALTER TABLE ehrledger.block ALTER COLUMN leaves SET STORAGE EXTERNAL;

-- Every key this node has signed blocks with, per origin name.
CREATE TABLE ehrledger.node_key (
    origin text NOT NULL,
    public_key bytea NOT NULL,
    first_used timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT node_key_pkey PRIMARY KEY (origin, public_key)
);

-- Retiring a table: the documented way to take it out of the ledger.  The
-- retirement is a ledgered row; the table's ledger triggers go, so it may
-- then be altered or dropped, and verify() no longer expects its rows.
CREATE TABLE ehrledger.retirement (
    table_id integer NOT NULL,
    tbl text NOT NULL,
    reason text NOT NULL,
    live_rows bigint NOT NULL,
    at timestamp with time zone DEFAULT clock_timestamp() NOT NULL,
    by_role name DEFAULT SESSION_USER NOT NULL
);

-- Functions: protecting tables --------------------------------------------

-- The ledger's own columns, named in this one place: protect() adds them
-- to a table (to a partitioned table, whose partitions then have them
-- too), and sets them NOT NULL once every row has its values.  action is
-- a format() template of one ALTER TABLE clause, %1$I the column's name,
-- %2$s its type.
CREATE FUNCTION ehrledger._alter_ledger_columns(tbl regclass, action text, salted boolean DEFAULT false)
 RETURNS void
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
BEGIN
    EXECUTE pg_catalog.format('ALTER TABLE %s %s', tbl,
        (SELECT pg_catalog.string_agg(pg_catalog.format(action, c.name, c.type), ', ' ORDER BY c.n)
           FROM (VALUES (1, 'ledger_seq', 'pg_catalog.int8'),
                        (2, 'ledger_hash', 'pg_catalog.bytea'),
                        (3, 'ledger_salt', 'pg_catalog.bytea')) AS c(n, name, type)
          WHERE c.n < 3 OR salted));
END
$function$;

-- The columns of a table as the schema guard records them.
CREATE FUNCTION ehrledger._columns_of(tbl regclass)
 RETURNS jsonb
 LANGUAGE sql
 STABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
    SELECT COALESCE(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
               'name', a.attname, 'type', pg_catalog.format_type(a.atttypid, a.atttypmod))
               ORDER BY a.attnum), '[]')
      FROM pg_catalog.pg_attribute a
     WHERE a.attrelid = tbl AND a.attnum > 0 AND NOT a.attisdropped
$function$;

-- Triggers protect() installs.
CREATE FUNCTION ehrledger.insert_row()
 RETURNS trigger
 LANGUAGE c
AS 'MODULE_PATHNAME', $function$ehrledger_insert_row$function$;

CREATE FUNCTION ehrledger.refuse_change()
 RETURNS trigger
 LANGUAGE c
AS 'MODULE_PATHNAME', $function$ehrledger_refuse_change$function$;

CREATE FUNCTION ehrledger.version_row()
 RETURNS trigger
 LANGUAGE c
AS 'MODULE_PATHNAME', $function$ehrledger_version_row$function$;

-- Makes tbl a ledger table under ledger id tid: the work of protect(),
-- also used at install time for ehrledger's own ledgered tables.  Each row
-- version gets a secret salt in ledger_salt, which its leaf commits to
-- (docs/format.md §1, format 2); a table every role may read holds nothing
-- a salt would hide, and is attached without (salted => false).
CREATE FUNCTION ehrledger._attach(tbl regclass, tid integer, mode text, signer_column name, signature_column name, internal boolean, salted boolean DEFAULT true)
 RETURNS void
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    existing    pg_catalog.int8;
    trigger_args pg_catalog.text := pg_catalog.quote_literal(tid::pg_catalog.text);
    signer_args pg_catalog.text := '';
    history_name pg_catalog.text := 'ehrledger.history_' || tid::pg_catalog.text;
    is_partition pg_catalog.bool := (SELECT c.relispartition FROM pg_catalog.pg_class c WHERE c.oid = tbl);
    signed_as   pg_catalog.regclass;
BEGIN
    IF signer_column IS NOT NULL THEN
        signer_args := ', ' || pg_catalog.quote_literal(signer_column)
                       || ', ' || pg_catalog.quote_literal(signature_column);
        -- Authors of a partition's rows sign them under the name of the
        -- protected partitioned table they write to (its topmost ledger
        -- ancestor): the insert trigger is told which that is.
        IF is_partition THEN
            SELECT a.relid INTO signed_as
              FROM pg_catalog.pg_partition_ancestors(tbl) WITH ORDINALITY AS a(relid, n)
              JOIN ehrledger.registered_table r ON r.relid = a.relid
             ORDER BY a.n DESC LIMIT 1;
            signer_args := signer_args || ', ' || pg_catalog.quote_literal(signed_as::pg_catalog.text);
        END IF;
    END IF;

    -- The table first, then the seal lock: no block is sealed while rows
    -- enter the ledger here.  A table without a page (a partition the schema
    -- guard brings in as CREATE TABLE ... PARTITION OF or pg_partman makes
    -- it) numbers nothing and takes no seal lock: a DDL holding its
    -- partitioned table's lock then never waits for a sealer that waits for
    -- that DDL (a deadlock under load otherwise).
    EXECUTE pg_catalog.format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE', tbl);
    PERFORM ehrledger._guard_snapshot(tbl);
    -- (after the lock: a child made in a transaction still open is seen)
    IF (SELECT c.relkind FROM pg_catalog.pg_class c WHERE c.oid = tbl) <> 'p' AND
       EXISTS (SELECT 1 FROM pg_catalog.pg_inherits i WHERE i.inhparent = tbl) THEN
        RAISE EXCEPTION 'cannot protect %: table % inherits from it', tbl,
              (SELECT i.inhrelid::pg_catalog.regclass FROM pg_catalog.pg_inherits i
                WHERE i.inhparent = tbl ORDER BY i.inhrelid LIMIT 1)
            USING ERRCODE = 'LD020',
                  DETAIL = 'A child table''s rows would show in queries of the ledger table without being in the ledger.',
                  HINT = 'Detach it first with ALTER TABLE ... NO INHERIT.';
    END IF;
    IF pg_catalog.pg_relation_size(tbl) > 0 THEN
        LOCK TABLE ehrledger.block IN EXCLUSIVE MODE;
    END IF;
    PERFORM ehrledger.check_hashable(tbl);
    PERFORM ehrledger._check_trigger_order(tbl, mode = 'versioned');

    -- A partition has the ledger's columns from its partitioned table.
    IF NOT is_partition THEN
        PERFORM ehrledger._alter_ledger_columns(tbl, 'ADD COLUMN %1$I %2$s', salted);
    END IF;

    -- Rows already in the table enter the ledger: the table is rewritten
    -- once with each row numbered, salted and hashed (ehrledger._backfill(),
    -- src/ledger/backfill.c), leaving nothing for VACUUM.  No trigger or
    -- rule fires; the owner's code it runs (the send functions of its
    -- types, index expressions) runs as the owner, restricted.  Signatures
    -- of existing rows are not checked here: verify_record() checks them.
    existing := ehrledger._backfill(tbl, tid);

    PERFORM ehrledger._alter_ledger_columns(tbl, 'ALTER COLUMN %1$I SET NOT NULL');
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
                CASE WHEN signer_column IS NOT NULL AND NOT is_partition THEN tbl::pg_catalog.text END);
END
$function$;

CREATE FUNCTION ehrledger.protect(tbl regclass, mode text DEFAULT 'append_only'::text, patient_column name DEFAULT NULL::name, signer_column name DEFAULT NULL::name, signature_column name DEFAULT NULL::name, category text DEFAULT NULL::text)
 RETURNS void
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    rel         pg_catalog.pg_class%ROWTYPE;
    nsp         pg_catalog.name;
    col_type    pg_catalog.regtype;
    tid         pg_catalog.int4;
    problem     pg_catalog.text;
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
    IF (signer_column IS NULL) <> (signature_column IS NULL) THEN
        RAISE EXCEPTION 'signer_column and signature_column go together'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Name both columns, or neither.';
    END IF;
    IF category IS NOT NULL AND patient_column IS NULL THEN
        RAISE EXCEPTION 'a category needs a patient column'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Consents scope to categories of tables protected with patient_column.';
    ELSIF category IS NOT NULL AND (category = '*' OR category !~ '^[a-z][a-z0-9_-]{0,62}$') THEN
        RAISE EXCEPTION 'category "%" is not a lower-case word', category
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'For example medication, diagnostics, mental-health.';
    END IF;

    SELECT * INTO rel FROM pg_catalog.pg_class WHERE oid = tbl;
    SELECT nspname INTO nsp FROM pg_catalog.pg_namespace WHERE oid = rel.relnamespace;
    IF rel.relkind NOT IN ('r', 'p') THEN
        RAISE EXCEPTION '"%" is not a table', tbl
            USING ERRCODE = 'wrong_object_type',
                  DETAIL = 'Only ordinary and partitioned tables can be protected.';
    ELSIF rel.relispartition THEN
        RAISE EXCEPTION 'cannot protect partition % on its own', tbl
            USING ERRCODE = 'wrong_object_type',
                  DETAIL = pg_catalog.format('It is a partition of %s.',
                                             (SELECT i.inhparent::pg_catalog.regclass FROM pg_catalog.pg_inherits i
                                               WHERE i.inhrelid = tbl)),
                  HINT = 'Protect the partitioned table: its partitions, present and future, are protected with it.';
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
                  AND a.attname IN ('ledger_seq', 'ledger_hash', 'ledger_salt', 'ledger_op', 'ledger_ended_seq',
                                    'ledger_ended_hash', 'ledger_ended_at', 'ledger_ended_by')) THEN
        RAISE EXCEPTION 'table % already has a column whose name ehrledger reserves', tbl
            USING ERRCODE = 'duplicate_column',
                  DETAIL = 'ledger_seq, ledger_hash, ledger_salt, ledger_op, ledger_ended_seq, ledger_ended_hash, ledger_ended_at and ledger_ended_by are reserved.',
                  HINT = 'Rename that column before protecting the table.';
    END IF;
    IF signer_column IS NOT NULL AND signer_column = signature_column THEN
        RAISE EXCEPTION 'signer and signature must be two different columns'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF signer_column IS NOT NULL THEN
        PERFORM ehrledger._require_text_column(tbl, signer_column, 'signer',
                                               'The signer column holds the actor_id of the row''s author.');
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
    IF patient_column IS NOT NULL THEN
        PERFORM ehrledger._require_text_column(tbl, patient_column, 'patient',
                                               'The patient column holds the actor_id of the patient a row is about.');
        IF EXISTS (SELECT 1 FROM pg_catalog.pg_policy p WHERE p.polrelid = tbl AND p.polpermissive) THEN
            RAISE EXCEPTION 'table % already has permissive row-level security policies', tbl
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      DETAIL = 'They would widen what consents allow.',
                      HINT = 'Drop them, or make them AS RESTRICTIVE, before protecting the table.';
        END IF;
    END IF;

    IF rel.relkind = 'p' THEN
        -- Every partition, at any depth, must be able to enter the ledger
        -- before anything changes.
        SELECT pg_catalog.format('partition %s: %s', t.relid::pg_catalog.regclass, p.problem) INTO problem
          FROM pg_catalog.pg_partition_tree(tbl) t
         CROSS JOIN LATERAL ehrledger._partition_problem(t.parentrelid, t.relid, patient_column, signer_column) p(problem)
         WHERE t.level > 0 AND p.problem IS NOT NULL
         ORDER BY t.level, t.relid::pg_catalog.regclass::pg_catalog.text LIMIT 1;
        IF problem IS NOT NULL THEN
            RAISE EXCEPTION 'cannot protect partitioned table %', tbl
                USING ERRCODE = 'object_not_in_prerequisite_state', DETAIL = problem;
        END IF;
        LOCK TABLE ehrledger.block IN EXCLUSIVE MODE;
        EXECUTE pg_catalog.format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE', tbl);
        PERFORM ehrledger._guard_snapshot(tbl);
        PERFORM ehrledger.check_hashable(tbl);
        -- Its BEFORE ROW triggers are cloned to every partition.
        PERFORM ehrledger._check_trigger_order(tbl, mode = 'versioned');
        -- The columns go on the partitioned table, whence every partition,
        -- present and future, has them; each partition then enters the
        -- ledger as a table of its own (_protect_partitions()); NOT NULL
        -- comes last, once every row has its values.
        PERFORM ehrledger._alter_ledger_columns(tbl, 'ADD COLUMN %1$I %2$s', true);
        tid := pg_catalog.nextval('ehrledger.registered_table_id')::pg_catalog.int4;
        INSERT INTO ehrledger.registered_table (table_id, relid, mode, patient_column, signer_column,
                                                signature_column, category, columns, signed_name, partitioned)
            VALUES (tid, tbl, mode, patient_column, signer_column, signature_column, category,
                    ehrledger._columns_of(tbl),
                    CASE WHEN signer_column IS NOT NULL THEN tbl::pg_catalog.text END, true);
        UPDATE ehrledger.registered_table r SET rows_at_protect = ehrledger._protect_partitions(tid)
         WHERE r.table_id = tid;
        PERFORM ehrledger._alter_ledger_columns(tbl, 'ALTER COLUMN %1$I SET NOT NULL');
        IF patient_column IS NOT NULL THEN
            PERFORM ehrledger._attach_consent(tbl, tid, patient_column);
        END IF;
        RETURN;
    END IF;

    tid := pg_catalog.nextval('ehrledger.registered_table_id')::pg_catalog.int4;
    PERFORM ehrledger._attach(tbl, tid, mode, signer_column, signature_column, false);
    IF patient_column IS NOT NULL THEN
        UPDATE ehrledger.registered_table r
           SET patient_column = protect.patient_column, category = protect.category
         WHERE r.table_id = tid;
        PERFORM ehrledger._attach_consent(tbl, tid, patient_column);
    END IF;
END
$function$;
COMMENT ON FUNCTION ehrledger.protect(regclass,text,name,name,name,text) IS 'Makes a table a ledger table: numbers and hashes every row, existing ones included, refuses UPDATE, DELETE and TRUNCATE (or versions them), checks authors'' signatures with signer_column and signature_column, and with patient_column enforces patients'' consents by row-level security. A partitioned table''s partitions, present and future, become ledger tables each.';

-- Why child cannot enter the ledger as a partition of parent, protected
-- with these options, or NULL if it can.
CREATE FUNCTION ehrledger._partition_problem(parent regclass, child regclass, patient_column name, signer_column name)
 RETURNS text
 LANGUAGE plpgsql
 STABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    rel     pg_catalog.pg_class%ROWTYPE;
    clash   pg_catalog.text;
BEGIN
    SELECT * INTO rel FROM pg_catalog.pg_class c WHERE c.oid = child;
    IF EXISTS (SELECT 1 FROM ehrledger.registered_table r WHERE r.relid = child AND r.retired_at IS NULL) THEN
        RETURN 'it is protected on its own already';
    ELSIF EXISTS (SELECT 1 FROM ehrledger.registered_table r WHERE r.relid = child) THEN
        RETURN 'it was retired from the ledger';
    ELSIF rel.relkind = 'f' THEN
        RETURN 'it is a foreign table, whose rows are not in this database';
    ELSIF rel.relkind NOT IN ('r', 'p') THEN
        RETURN 'it is not an ordinary table';
    ELSIF rel.relpersistence <> 'p' THEN
        RETURN 'it is unlogged, and would lose its rows in a crash';
    ELSIF EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                   WHERE a.attrelid = child AND a.attnum > 0 AND NOT a.attisdropped
                     AND a.attname LIKE 'ledger\_%' AND (a.attgenerated <> '' OR a.attidentity <> '')) THEN
        RETURN 'its ledger columns must be plain columns, not generated or identity columns';
    ELSIF patient_column IS NOT NULL
          AND EXISTS (SELECT 1 FROM pg_catalog.pg_policy p WHERE p.polrelid = child AND p.polpermissive) THEN
        RETURN 'it has permissive row-level security policies, which would widen what consents allow';
    ELSIF signer_column IS NOT NULL AND ehrledger._columns_of(child) <> ehrledger._columns_of(parent) THEN
        RETURN pg_catalog.format('its columns are not in the order of %s''s, in which authors sign a row', parent);
    END IF;
    SELECT pg_catalog.format('trigger %I', t.tgname) INTO clash FROM pg_catalog.pg_trigger t
     WHERE t.tgrelid = child
       AND t.tgname IN ('zz_ehrledger_insert', 'zz_ehrledger_version', 'ehrledger_append_only', 'ehrledger_no_truncate')
    UNION ALL
    SELECT pg_catalog.format('policy %I', p.polname) FROM pg_catalog.pg_policy p
     WHERE p.polrelid = child AND p.polname LIKE 'ehrledger\_%'
    LIMIT 1;
    IF clash IS NOT NULL THEN
        RETURN pg_catalog.format('it already has a %s, a name ehrledger gives its own', clash);
    END IF;
    RETURN NULL;
END
$function$;

-- Brings every partition of the partitioned ledger table ptid that is not
-- in the ledger yet into it, as a ledger table of its own with the
-- parent's mode, signer and signature columns, patient column and
-- category (a partitioned partition as a partitioned ledger table, whose
-- partitions follow), and shares it when the parent is shared.  protect()
-- calls it for the partitions there are, the schema guard for a partition
-- created or attached later.  Returns how many rows entered the ledger.
CREATE FUNCTION ehrledger._protect_partitions(ptid integer)
 RETURNS bigint
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    p       ehrledger.registered_table%ROWTYPE;
    child   record;
    problem pg_catalog.text;
    tid     pg_catalog.int4;
    n       pg_catalog.int8 := 0;
BEGIN
    PERFORM ehrledger._guard_snapshot();
    SELECT * INTO p FROM ehrledger.registered_table WHERE table_id = ptid;
    FOR child IN SELECT i.inhrelid::pg_catalog.regclass AS relid, c.relkind
                   FROM pg_catalog.pg_inherits i
                   JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
                  WHERE i.inhparent = p.relid
                    AND NOT EXISTS (SELECT 1 FROM ehrledger.registered_table r
                                     WHERE r.relid = i.inhrelid AND r.partition_of = ptid)
                  ORDER BY i.inhrelid::pg_catalog.regclass::pg_catalog.text LOOP
        problem := ehrledger._partition_problem(p.relid, child.relid, p.patient_column, p.signer_column);
        IF problem IS NOT NULL THEN
            RAISE EXCEPTION 'cannot make % a partition of ledger table %', child.relid, p.relid
                USING ERRCODE = 'LD020', DETAIL = pg_catalog.format('Table %s: %s.', child.relid, problem),
                      HINT = 'Every partition of a ledger table enters the ledger as it is attached: attach an ordinary, logged table that ehrledger does not protect yet.';
        END IF;
        tid := pg_catalog.nextval('ehrledger.registered_table_id')::pg_catalog.int4;
        IF child.relkind = 'p' THEN
            INSERT INTO ehrledger.registered_table (table_id, relid, mode, patient_column, signer_column,
                                                    signature_column, category, columns, partitioned, partition_of)
                VALUES (tid, child.relid, p.mode, p.patient_column, p.signer_column, p.signature_column,
                        p.category, ehrledger._columns_of(child.relid), true, ptid);
            UPDATE ehrledger.registered_table r SET rows_at_protect = ehrledger._protect_partitions(tid)
             WHERE r.table_id = tid;
        ELSE
            PERFORM ehrledger._attach(child.relid, tid, p.mode, p.signer_column, p.signature_column, false);
            UPDATE ehrledger.registered_table r
               SET partition_of = ptid, patient_column = p.patient_column, category = p.category
             WHERE r.table_id = tid;
        END IF;
        n := n + (SELECT r.rows_at_protect FROM ehrledger.registered_table r WHERE r.table_id = tid);
        IF p.patient_column IS NOT NULL THEN
            PERFORM ehrledger._attach_consent(child.relid, tid, p.patient_column);
        END IF;
        IF p.shared THEN
            PERFORM ehrledger.share(child.relid);
        END IF;
    END LOOP;
    RETURN n;
END
$function$;

CREATE FUNCTION ehrledger.check_hashable(tbl regclass)
 RETURNS void
 LANGUAGE c
 STRICT
 SET search_path TO 'pg_catalog', 'pg_temp'
AS 'MODULE_PATHNAME', $function$ehrledger_check_hashable$function$;
COMMENT ON FUNCTION ehrledger.check_hashable(regclass) IS 'Raises an error if some column type of the table cannot be encoded canonically.';

CREATE FUNCTION ehrledger.retire(tbl regclass, reason text)
 RETURNS void
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    r ehrledger.registered_table%ROWTYPE;
    n pg_catalog.int8;
    part pg_catalog.regclass;
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
    -- A partitioned table's partitions leave the ledger with it, each
    -- with its own retirement.
    IF r.partitioned THEN
        FOR part IN SELECT k.relid FROM ehrledger.registered_table k
                     WHERE k.partition_of = r.table_id AND k.retired_at IS NULL
                       AND EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.oid = k.relid)
                     ORDER BY k.table_id LOOP
            PERFORM ehrledger.retire(part, reason);
        END LOOP;
    END IF;
    LOCK TABLE ehrledger.block IN EXCLUSIVE MODE;
    EXECUTE pg_catalog.format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE', tbl);
    PERFORM ehrledger._guard_snapshot(tbl);
    EXECUTE pg_catalog.format('SELECT pg_catalog.count(*) FROM %s', tbl) INTO n;
    INSERT INTO ehrledger.retirement (table_id, tbl, reason, live_rows)
        VALUES (r.table_id, tbl::pg_catalog.text, reason, n);
    UPDATE ehrledger.registered_table SET retired_at = pg_catalog.now() WHERE table_id = r.table_id;
    IF r.partitioned THEN
        RETURN;
    END IF;
    EXECUTE pg_catalog.format('DROP TRIGGER zz_ehrledger_insert ON %s', tbl);
    EXECUTE pg_catalog.format('DROP TRIGGER ehrledger_no_truncate ON %s', tbl);
    IF r.mode = 'versioned' THEN
        EXECUTE pg_catalog.format('DROP TRIGGER zz_ehrledger_version ON %s', tbl);
    ELSE
        EXECUTE pg_catalog.format('DROP TRIGGER ehrledger_append_only ON %s', tbl);
    END IF;
END
$function$;
COMMENT ON FUNCTION ehrledger.retire(regclass,text) IS 'Takes a table (a partitioned table with its partitions, or one partition) out of the ledger, recording why in the ledger itself; the table may then be changed, detached or dropped.';

-- A column of tbl whose type is text or varchar (or a domain over them).
CREATE FUNCTION ehrledger._require_text_column(tbl regclass, col name, what text, hint text)
 RETURNS void
 LANGUAGE plpgsql
 STABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    col_type pg_catalog.regtype;
BEGIN
    SELECT a.atttypid INTO col_type FROM pg_catalog.pg_attribute a
     WHERE a.attrelid = tbl AND a.attname = col AND NOT a.attisdropped AND a.attnum > 0;
    IF col_type IS NULL THEN
        RAISE EXCEPTION 'column "%" of % does not exist', col, tbl
            USING ERRCODE = 'undefined_column';
    ELSIF (SELECT CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
             FROM pg_catalog.pg_type t WHERE t.oid = col_type)::pg_catalog.regtype NOT IN
          ('pg_catalog.text'::pg_catalog.regtype, 'pg_catalog.varchar'::pg_catalog.regtype) THEN
        RAISE EXCEPTION '% column "%" of % must be of type text, not %', what, col, tbl, col_type
            USING ERRCODE = 'datatype_mismatch', HINT = hint;
    END IF;
END
$function$;

-- Functions: sealing, and this node's name and key ------------------------

CREATE FUNCTION ehrledger.seal()
 RETURNS bigint
 LANGUAGE c
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS 'MODULE_PATHNAME', $function$ehrledger_seal$function$;
COMMENT ON FUNCTION ehrledger.seal() IS 'Seals every committed, not yet sealed row into a new block; returns the newest height.';

CREATE FUNCTION ehrledger.node_public_key()
 RETURNS bytea
 LANGUAGE c
 STABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS 'MODULE_PATHNAME', $function$ehrledger_node_public_key$function$;
COMMENT ON FUNCTION ehrledger.node_public_key() IS 'This node''s Ed25519 public key (32 bytes).';

CREATE FUNCTION ehrledger.keypair(OUT public_key bytea, OUT secret_key bytea)
 RETURNS record
 LANGUAGE c
AS 'MODULE_PATHNAME', $function$ehrledger_keypair$function$;
COMMENT ON FUNCTION ehrledger.keypair() IS 'A fresh Ed25519 key pair (secret_key: 64 bytes, seed then public key). For tests and demos: real signers keep secret keys out of the database.';

CREATE FUNCTION ehrledger.sign(message bytea, secret_key bytea)
 RETURNS bytea
 LANGUAGE c
 IMMUTABLE
AS 'MODULE_PATHNAME', $function$ehrledger_sign$function$;
COMMENT ON FUNCTION ehrledger.sign(bytea,bytea) IS 'Ed25519 signature (64 bytes) of message with a 32-byte seed or 64-byte secret key.';

CREATE FUNCTION ehrledger.verify_signature(message bytea, signature bytea, public_key bytea)
 RETURNS boolean
 LANGUAGE c
 IMMUTABLE
AS 'MODULE_PATHNAME', $function$ehrledger_verify_signature$function$;
COMMENT ON FUNCTION ehrledger.verify_signature(bytea,bytea,bytea) IS 'Whether signature is a valid Ed25519 signature of message by public_key.';

CREATE FUNCTION ehrledger.node_name()
 RETURNS text
 LANGUAGE c
 STABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS 'MODULE_PATHNAME', $function$ehrledger_node_name$function$;
COMMENT ON FUNCTION ehrledger.node_name() IS 'This node''s name: the origin of its blocks, and its name among peers.';

-- Functions: the schema guard ---------------------------------------------

-- Refuses (LD020) an enabled BEFORE ROW trigger of tbl that PostgreSQL
-- would fire after the ledger's own: triggers fire in name order (strcmp,
-- hence COLLATE "C"), and one named after zz_ehrledger_insert (for UPDATE
-- of a versioned table, zz_ehrledger_version) could change the row after
-- it was hashed, so the stored row would not match its hash.  protect()
-- (through _attach()) and the schema guard both call it.
CREATE FUNCTION ehrledger._check_trigger_order(tbl regclass, versioned boolean)
 RETURNS void
 LANGUAGE plpgsql
 STABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    late    pg_catalog.text;
    ours    pg_catalog.text;
BEGIN
    SELECT t.tgname, CASE WHEN (t.tgtype::pg_catalog.int4 & 4) <> 0
                               AND t.tgname::pg_catalog.text COLLATE "C" > 'zz_ehrledger_insert'
                          THEN 'zz_ehrledger_insert' ELSE 'zz_ehrledger_version' END
      INTO late, ours
      FROM pg_catalog.pg_trigger t
     WHERE t.tgrelid = tbl AND t.tgenabled <> 'D'
       AND (t.tgtype::pg_catalog.int4 & 67) = 3     -- ROW and BEFORE, not INSTEAD OF
       AND (((t.tgtype::pg_catalog.int4 & 4) <> 0   -- INSERT
             AND t.tgname::pg_catalog.text COLLATE "C" > 'zz_ehrledger_insert')
            OR (versioned AND (t.tgtype::pg_catalog.int4 & 16) <> 0    -- UPDATE
                AND t.tgname::pg_catalog.text COLLATE "C" > 'zz_ehrledger_version'))
     ORDER BY t.tgname::pg_catalog.text COLLATE "C" LIMIT 1;
    IF late IS NOT NULL THEN
        RAISE EXCEPTION 'trigger "%" of ledger table % would fire after the ledger''s trigger %', late, tbl, ours
            USING ERRCODE = 'LD020',
                  DETAIL = 'BEFORE ROW triggers fire in order of their names; a change it made to a row would come after the row was hashed.',
                  HINT = 'Rename it (ALTER TRIGGER ... RENAME TO) so that its name sorts before zz_ehrledger_insert in byte order, or make it an AFTER trigger.';
    END IF;
END
$function$;

-- The schema guard.  Sealed rows name their columns, values and table, so
-- a change to those would make them unverifiable.  After every DDL command
-- each protected table must still have every recorded column with its
-- type, any new column must start out NULL (it is then recorded, and added
-- to the history table too), its triggers must be there and enabled, its
-- ledger_seq index must exist, it must stay logged, a signed table keeps
-- its name, and no rule may rewrite writes to it.  Refusals are SQLSTATE
-- LD020.  ehrledger.retire() is the documented way out.
CREATE FUNCTION ehrledger._check_ledger_table(tid integer, after_drop boolean)
 RETURNS void
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
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
                      pg_catalog.format_type(a.atttypid, a.atttypmod) AS type,
                      ehrledger._history_type(a.atttypid, a.atttypmod) AS history_type
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
            -- (NULL when this snapshot, older than the type, cannot see it)
            IF att.history_type IS NULL THEN
                RAISE EXCEPTION 'could not serialize access due to a concurrent change of the type of column "%"', att.attname
                    USING ERRCODE = '40001',
                          DETAIL = 'The column''s type was created or changed after this transaction''s snapshot was taken.',
                          HINT = 'Retry the transaction.';
            END IF;
            EXECUTE pg_catalog.format('ALTER TABLE %s ADD COLUMN %I %s', r.history, att.attname, att.history_type);
        END IF;
    END LOOP;

    -- The history table keeps every recorded column (in its type, or that
    -- type's base for a domain: see _history_type) and its own ledger columns.
    IF r.history IS NOT NULL THEN
        FOR col IN SELECT x.name, x.type,
                          (SELECT ehrledger._history_type(m.atttypid, m.atttypmod) FROM pg_catalog.pg_attribute m
                            WHERE m.attrelid = r.relid AND m.attname = x.name AND m.attnum > 0
                              AND NOT m.attisdropped) AS history_type
                     FROM (SELECT * FROM pg_catalog.jsonb_to_recordset(r.columns) AS x(name pg_catalog.text, type pg_catalog.text)
                           UNION ALL VALUES ('ledger_op', 'text'), ('ledger_ended_seq', 'bigint'),
                                            ('ledger_ended_hash', 'bytea'),
                                            ('ledger_ended_at', 'timestamp with time zone'),
                                            ('ledger_ended_by', 'name')) x LOOP
            IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                            WHERE a.attrelid = r.history AND a.attname = col.name AND a.attnum > 0
                              AND NOT a.attisdropped
                              AND pg_catalog.format_type(a.atttypid, a.atttypmod) IN (col.type, col.history_type)) THEN
                RAISE EXCEPTION 'cannot change column "%" of history table %', col.name, r.history
                    USING ERRCODE = 'LD020',
                          DETAIL = 'Earlier versions were sealed with it.';
            END IF;
        END LOOP;
        IF (SELECT c.relpersistence FROM pg_catalog.pg_class c WHERE c.oid = r.history) IS DISTINCT FROM 'p' THEN
            RAISE EXCEPTION 'history table % must exist and stay logged', r.history USING ERRCODE = 'LD020';
        END IF;
    END IF;

    -- A partitioned table holds no rows (no triggers, no ledger_seq
    -- index); its partitions stay attached until they are retired.
    IF r.partitioned THEN
        SELECT k.relid INTO att FROM ehrledger.registered_table k
         WHERE k.partition_of = tid AND k.retired_at IS NULL
           AND EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.oid = k.relid)
           AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_inherits i
                            WHERE i.inhrelid = k.relid AND i.inhparent = r.relid AND NOT i.inhdetachpending)
         ORDER BY k.table_id LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'cannot detach partition % from ledger table %', att.relid, r.relid
                USING ERRCODE = 'LD020',
                      DETAIL = 'Its rows are in the ledger as rows of the partitioned table.',
                      HINT = pg_catalog.format('Retire it first with ehrledger.retire(%L, reason).', att.relid::pg_catalog.text);
        END IF;
        expected := '{}';
    ELSE
        expected := ARRAY['zz_ehrledger_insert', 'ehrledger_no_truncate',
                          CASE WHEN r.mode = 'versioned' THEN 'zz_ehrledger_version' ELSE 'ehrledger_append_only' END];
    END IF;
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
        -- CREATE OR REPLACE TRIGGER keeps the name: the function, events,
        -- WHEN clause, columns and table id must still be ehrledger's.
        ELSIF NOT EXISTS (
                SELECT 1 FROM pg_catalog.pg_trigger t
                 WHERE t.tgrelid = r.relid AND t.tgname = trig
                   AND t.tgfoid = CASE trig WHEN 'zz_ehrledger_insert' THEN 'ehrledger.insert_row()'::pg_catalog.regprocedure
                                            WHEN 'zz_ehrledger_version' THEN 'ehrledger.version_row()'::pg_catalog.regprocedure
                                            ELSE 'ehrledger.refuse_change()'::pg_catalog.regprocedure END
                   AND (t.tgtype::pg_catalog.int4 & 64) = 0
                   AND (t.tgtype::pg_catalog.int4 & CASE trig WHEN 'zz_ehrledger_insert' THEN 7
                                                              WHEN 'ehrledger_no_truncate' THEN 34 ELSE 27 END)
                       = CASE trig WHEN 'zz_ehrledger_insert' THEN 7 WHEN 'ehrledger_no_truncate' THEN 34 ELSE 27 END
                   AND t.tgqual IS NULL AND t.tgattr::pg_catalog.text = ''
                   AND (trig NOT IN ('zz_ehrledger_insert', 'zz_ehrledger_version')
                        OR pg_catalog.split_part(pg_catalog.encode(t.tgargs, 'escape'), '\000', 1) = tid::pg_catalog.text)) THEN
            RAISE EXCEPTION 'cannot replace trigger % of ledger table %', trig, r.relid
                USING ERRCODE = 'LD020',
                      DETAIL = 'The ledger''s triggers call ehrledger''s functions, for every row, on the events protect() gave them.';
        END IF;
    END LOOP;
    PERFORM ehrledger._check_trigger_order(r.relid, r.mode = 'versioned');
    IF after_drop AND NOT r.partitioned AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_index i JOIN pg_catalog.pg_attribute a
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
$function$;

-- Refuses (40001) when the transaction's snapshot (REPEATABLE READ or
-- SERIALIZABLE) sees another registry, or other catalog rows of a ledger
-- table, of tbl, or of pg_inherits, than a fresh one: the guards below,
-- protect(), _attach(), retire() and _protect_partitions() read them with
-- that snapshot (src/ledger/tables.c says which rows and fields).
CREATE FUNCTION ehrledger._guard_snapshot(tbl regclass DEFAULT NULL)
 RETURNS void
 LANGUAGE c
 SET search_path TO 'pg_catalog', 'pg_temp'
AS 'MODULE_PATHNAME', $function$ehrledger_guard_snapshot$function$;
REVOKE ALL ON FUNCTION ehrledger._guard_snapshot(regclass) FROM PUBLIC;

CREATE FUNCTION ehrledger._guard_ddl()
 RETURNS event_trigger
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
 SET jit TO 'off'
AS $function$
DECLARE
    tid pg_catalog.int4;
BEGIN
    PERFORM ehrledger._guard_snapshot();
    -- A partition created (CREATE TABLE ... PARTITION OF names it) or
    -- attached (ALTER TABLE ... ATTACH PARTITION names its parent) under a
    -- partitioned ledger table enters the ledger in the same transaction.
    -- Only those commands: the ones _protect_partitions() itself runs on a
    -- partition it brings in must not start it again.
    FOR tid IN
        SELECT DISTINCT r.table_id
          FROM pg_catalog.pg_event_trigger_ddl_commands() c
          JOIN ehrledger.registered_table r ON r.partitioned AND r.retired_at IS NULL
         WHERE c.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
           AND (c.objid = r.relid
                OR (c.command_tag IN ('CREATE TABLE', 'CREATE FOREIGN TABLE')
                    AND EXISTS (SELECT 1 FROM pg_catalog.pg_inherits i
                                 WHERE i.inhrelid = c.objid AND i.inhparent = r.relid)))
         ORDER BY r.table_id
    LOOP
        PERFORM ehrledger._protect_partitions(tid);
    END LOOP;
    -- The tables the commands touched (a relation, or the table of a rule or
    -- trigger), and every table that inherits from one of them, at any
    -- depth: ALTER TABLE of a parent (a plain parent of a table that
    -- INHERITS it, or a partitioned table) adds, retypes, renames or drops
    -- the columns of its children too.  For a partitioned ledger table,
    -- also every partition recorded below it (a detached one included).
    FOR tid IN
        WITH RECURSIVE rels(relid) AS (
            SELECT x.relid
              FROM pg_catalog.pg_event_trigger_ddl_commands() c
             CROSS JOIN LATERAL (
                    SELECT c.objid WHERE c.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
                    UNION ALL
                    SELECT w.ev_class FROM pg_catalog.pg_rewrite w
                     WHERE c.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass AND w.oid = c.objid
                    UNION ALL
                    SELECT g.tgrelid FROM pg_catalog.pg_trigger g
                     WHERE c.classid = 'pg_catalog.pg_trigger'::pg_catalog.regclass AND g.oid = c.objid) x(relid)
            UNION
            SELECT i.inhrelid FROM rels
              JOIN pg_catalog.pg_inherits i ON i.inhparent = rels.relid AND NOT i.inhdetachpending),
        touched(table_id) AS (
            SELECT r.table_id
              FROM rels JOIN ehrledger.registered_table r ON rels.relid IN (r.relid, r.history)
            UNION
            SELECT k.table_id FROM touched t JOIN ehrledger.registered_table k ON k.partition_of = t.table_id)
        SELECT t.table_id FROM touched t ORDER BY t.table_id
    LOOP
        PERFORM ehrledger._check_ledger_table(tid, false);
    END LOOP;
    -- The ledger tables of a schema the commands changed: ALTER SCHEMA ...
    -- RENAME renames a signed table too.  (Apart from the walk above, whose
    -- row estimate, and so the hash table it sets up, it would swell.)
    FOR tid IN
        SELECT DISTINCT r.table_id
          FROM pg_catalog.pg_event_trigger_ddl_commands() c
          JOIN pg_catalog.pg_class k ON k.relnamespace = c.objid
          JOIN ehrledger.registered_table r ON k.oid IN (r.relid, r.history)
         WHERE c.classid = 'pg_catalog.pg_namespace'::pg_catalog.regclass
         ORDER BY r.table_id
    LOOP
        PERFORM ehrledger._check_ledger_table(tid, false);
    END LOOP;
END
$function$;

CREATE FUNCTION ehrledger._guard_drop()
 RETURNS event_trigger
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    tid pg_catalog.int4;
    dropped pg_catalog.text;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_event_trigger_dropped_objects() d
                WHERE d.object_type = 'extension' AND d.object_identity = 'ehrledger') THEN
        RETURN;
    END IF;
    PERFORM ehrledger._guard_snapshot();
    FOR dropped IN
        SELECT d.object_identity FROM pg_catalog.pg_event_trigger_dropped_objects() d
          JOIN ehrledger.registered_table r ON d.objid IN (r.relid, r.history)
         WHERE d.object_type = 'table' AND r.retired_at IS NULL
         ORDER BY r.table_id
    LOOP
        RAISE EXCEPTION 'cannot drop ledger table %', dropped
            USING ERRCODE = 'LD020',
                  HINT = 'Retire it first with ehrledger.retire(table, reason).';
    END LOOP;
    FOR tid IN SELECT r.table_id FROM ehrledger.registered_table r WHERE r.retired_at IS NULL
                ORDER BY r.table_id LOOP
        PERFORM ehrledger._check_ledger_table(tid, true);
    END LOOP;
END
$function$;

-- Functions: a table owner's code runs as the owner -----------------------

-- Runs one statement as the owner of tbl, restricted; returns the rows it
-- processed.  Superusers and members of the owner's role only.
CREATE FUNCTION ehrledger._as_table_owner(tbl regclass, statement text)
 RETURNS bigint
 LANGUAGE c
 STRICT
 SET search_path TO 'pg_catalog', 'pg_temp'
AS 'MODULE_PATHNAME', $function$ehrledger_as_table_owner$function$;

-- protect()'s backfill: rewrites a populated table once with every row
-- numbered and hashed (src/ledger/backfill.c); superuser only.
CREATE FUNCTION ehrledger._backfill(tbl regclass, tid integer)
 RETURNS bigint
 LANGUAGE c
 STRICT
 SET search_path TO 'pg_catalog', 'pg_temp'
AS 'MODULE_PATHNAME', $function$ehrledger_backfill$function$;

-- A row of a table as jsonb, converted (its columns' casts to json run) as
-- the table's owner, restricted.
CREATE FUNCTION ehrledger._row_jsonb("row" record)
 RETURNS jsonb
 LANGUAGE c
 STRICT
 SET search_path TO 'pg_catalog', 'pg_temp'
AS 'MODULE_PATHNAME', $function$ehrledger_row_jsonb$function$;

-- The type a column of type typ (with typmod) has in a history table: a
-- domain's base type.  Versions are copied into history tables by the
-- versioning trigger, never inserted by SQL, so a domain there constrains
-- nothing; and adding a column of a domain type with a CHECK would run the
-- CHECK (its owner's code) on every earlier version, as the guard's owner.
-- Hashes and JSON depend on the base type only.
CREATE FUNCTION ehrledger._history_type(typ oid, typmod integer)
 RETURNS text
 LANGUAGE sql
 STABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
    WITH RECURSIVE d(oid, typmod, typtype) AS (
        SELECT t.oid, _history_type.typmod, t.typtype FROM pg_catalog.pg_type t WHERE t.oid = _history_type.typ
        UNION ALL
        SELECT b.oid, t.typtypmod, b.typtype
          FROM d JOIN pg_catalog.pg_type t ON t.oid = d.oid
                 JOIN pg_catalog.pg_type b ON b.oid = t.typbasetype
         WHERE d.typtype = 'd')
    SELECT pg_catalog.format_type(d.oid, d.typmod) FROM d WHERE d.typtype <> 'd'
$function$;

-- The extension's own ledger tables ---------------------------------------

SELECT ehrledger._attach('ehrledger.retirement', 2000000002, 'append_only', NULL, NULL, true);

-- Views -------------------------------------------------------------------

CREATE VIEW ehrledger.blocks WITH (security_barrier=true) AS
    SELECT origin, height, prev_hash, history_root, root, leaves_hash, block_hash,
           first_seq, last_seq, row_count, sealed_at, signature, public_key
      FROM ehrledger.block;
COMMENT ON VIEW ehrledger.blocks IS 'One row per sealed block: its header, hash and Ed25519 signature.';

CREATE VIEW ehrledger.protected_tables WITH (security_barrier=true) AS
    SELECT r.relid AS tbl, r.table_id, r.mode, r.patient_column, r.signer_column,
           r.signature_column, r.protected_at, r.protected_by, r.rows_at_protect, r.internal,
           r.history, r.retired_at, r.category, r.partitioned,
           (SELECT p.relid FROM ehrledger.registered_table p WHERE p.table_id = r.partition_of) AS partition_of
      FROM ehrledger.registered_table r;
COMMENT ON VIEW ehrledger.protected_tables IS 'Tables protected by ehrledger, with the options they were protected with.';

-- Triggers ----------------------------------------------------------------

CREATE TRIGGER ehrledger_append_only BEFORE DELETE OR UPDATE ON ehrledger.block FOR EACH ROW EXECUTE FUNCTION ehrledger.refuse_change();
ALTER TABLE ehrledger.block ENABLE ALWAYS TRIGGER ehrledger_append_only;

CREATE TRIGGER ehrledger_no_truncate BEFORE TRUNCATE ON ehrledger.block FOR EACH STATEMENT EXECUTE FUNCTION ehrledger.refuse_change();
ALTER TABLE ehrledger.block ENABLE ALWAYS TRIGGER ehrledger_no_truncate;

CREATE TRIGGER ehrledger_append_only BEFORE DELETE OR UPDATE ON ehrledger.node_key FOR EACH ROW EXECUTE FUNCTION ehrledger.refuse_change();
ALTER TABLE ehrledger.node_key ENABLE ALWAYS TRIGGER ehrledger_append_only;

CREATE TRIGGER ehrledger_no_truncate BEFORE TRUNCATE ON ehrledger.node_key FOR EACH STATEMENT EXECUTE FUNCTION ehrledger.refuse_change();
ALTER TABLE ehrledger.node_key ENABLE ALWAYS TRIGGER ehrledger_no_truncate;

-- Event triggers ----------------------------------------------------------
CREATE EVENT TRIGGER ehrledger_guard_ddl ON ddl_command_end
    EXECUTE FUNCTION ehrledger._guard_ddl();
CREATE EVENT TRIGGER ehrledger_guard_drop ON sql_drop
    EXECUTE FUNCTION ehrledger._guard_drop();

-- What pg_dump dumps ------------------------------------------------------
SELECT pg_catalog.pg_extension_config_dump('ehrledger.registered_table', 'WHERE NOT internal');
SELECT pg_catalog.pg_extension_config_dump('ehrledger.registered_table_id', '');
SELECT pg_catalog.pg_extension_config_dump('ehrledger.block', '');
SELECT pg_catalog.pg_extension_config_dump('ehrledger.node_key', '');
SELECT pg_catalog.pg_extension_config_dump('ehrledger.ledger_seq', '');
SELECT pg_catalog.pg_extension_config_dump('ehrledger.retirement', '');

-- Privileges --------------------------------------------------------------
GRANT USAGE ON SCHEMA ehrledger TO PUBLIC;
GRANT SELECT ON ehrledger.block TO PUBLIC;
GRANT SELECT ON ehrledger.node_key TO PUBLIC;
GRANT SELECT ON ehrledger.blocks TO PUBLIC;
GRANT SELECT ON ehrledger.protected_tables TO PUBLIC;
REVOKE ALL ON FUNCTION
    ehrledger._columns_of(regclass),
    ehrledger.version_row(),
    ehrledger.seal(),
    ehrledger._attach(regclass,integer,text,name,name,boolean,boolean),
    ehrledger.protect(regclass,text,name,name,name,text),
    ehrledger.check_hashable(regclass),
    ehrledger._check_trigger_order(regclass,boolean),
    ehrledger._check_ledger_table(integer,boolean),
    ehrledger._guard_ddl(),
    ehrledger._guard_drop(),
    ehrledger.retire(regclass,text),
    ehrledger._require_text_column(regclass,name,text,text),
    ehrledger._as_table_owner(regclass,text),
    ehrledger._backfill(regclass,integer),
    ehrledger._alter_ledger_columns(regclass,text,boolean),
    ehrledger._partition_problem(regclass,regclass,name,name),
    ehrledger._protect_partitions(integer),
    ehrledger._row_jsonb(record),
    ehrledger._history_type(oid,integer)
    FROM PUBLIC;
