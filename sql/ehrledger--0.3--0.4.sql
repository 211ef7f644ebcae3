/*
 * ehrledger 0.3 -> 0.4.
 *
 * A fresh CREATE EXTENSION runs every script from 0.1 up to this one, so a
 * new install and an upgraded one are the same by construction.
 */
\echo Use "ALTER EXTENSION ehrledger UPDATE TO '0.4'" to load this file. \quit


-- Section: privileges.  ehrledger never runs a table owner's code (casts,
-- triggers, domain checks, index expressions) with raised rights.
--
-- Such code runs as the table's owner, under SECURITY_RESTRICTED_OPERATION,
-- the way VACUUM and amcheck run it (src/privileges.c), or not at all:
-- protect()'s backfill, the share trigger and share() switch to the owner;
-- history(), proof(), export() and verify_record() convert rows to JSON as
-- the owner; the schema guard extends history tables with a domain's base
-- type, so that no domain's CHECK runs there; shared_rows reads a peer's
-- values through base types, and runs what remains as the type's owner.

-- Runs one statement as the owner of tbl, restricted; returns the rows it
-- processed.  Superusers and members of the owner's role only.
CREATE FUNCTION ehrledger._as_table_owner(tbl pg_catalog.regclass, statement pg_catalog.text)
    RETURNS pg_catalog.int8
    AS 'MODULE_PATHNAME', 'ehrledger_as_table_owner'
    LANGUAGE C STRICT
    SET search_path = pg_catalog, pg_temp;

-- A row of a table as jsonb, converted (its columns' casts to json run) as
-- the table's owner, restricted.
CREATE FUNCTION ehrledger._row_jsonb("row" record) RETURNS pg_catalog.jsonb
    AS 'MODULE_PATHNAME', 'ehrledger_row_jsonb'
    LANGUAGE C STRICT
    SET search_path = pg_catalog, pg_temp;

-- The type a column of type typ (with typmod) has in a history table: a
-- domain's base type.  Versions are copied into history tables by the
-- versioning trigger, never inserted by SQL, so a domain there constrains
-- nothing; and adding a column of a domain type with a CHECK would run the
-- CHECK (its owner's code) on every earlier version, as the guard's owner.
-- Hashes and JSON depend on the base type only.
CREATE FUNCTION ehrledger._history_type(typ pg_catalog.oid, typmod pg_catalog.int4) RETURNS pg_catalog.text
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    WITH RECURSIVE d(oid, typmod, typtype) AS (
        SELECT t.oid, _history_type.typmod, t.typtype FROM pg_catalog.pg_type t WHERE t.oid = _history_type.typ
        UNION ALL
        SELECT b.oid, t.typtypmod, b.typtype
          FROM d JOIN pg_catalog.pg_type t ON t.oid = d.oid
                 JOIN pg_catalog.pg_type b ON b.oid = t.typbasetype
         WHERE d.typtype = 'd')
    SELECT pg_catalog.format_type(d.oid, d.typmod) FROM d WHERE d.typtype <> 'd'
$$;

CREATE OR REPLACE FUNCTION ehrledger._attach(tbl pg_catalog.regclass, tid pg_catalog.int4,
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
    -- role keeps the application's own triggers and rules out of it; those
    -- it does not (ENABLE ALWAYS or REPLICA triggers and rules, CHECK
    -- constraints, index expressions, generated columns) are the owner's
    -- code, and run as the owner, restricted.
    EXECUTE pg_catalog.format(
        'CREATE TRIGGER zz_ehrledger_backfill BEFORE UPDATE ON %s FOR EACH ROW EXECUTE FUNCTION ehrledger.insert_row(%L)',
        tbl, tid::pg_catalog.text);
    EXECUTE pg_catalog.format('ALTER TABLE %s ENABLE ALWAYS TRIGGER zz_ehrledger_backfill', tbl);
    PERFORM pg_catalog.set_config('session_replication_role', 'replica', true);
    existing := ehrledger._as_table_owner(tbl, pg_catalog.format('UPDATE ONLY %s SET ledger_seq = NULL', tbl));
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

CREATE OR REPLACE FUNCTION ehrledger._check_ledger_table(tid pg_catalog.int4, after_drop pg_catalog.bool) RETURNS void
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

CREATE OR REPLACE FUNCTION ehrledger._share_row() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    INSERT INTO ehrledger.shared_row (origin, table_name, table_id, ledger_seq, columns, "row")
        SELECT ehrledger.node_name(), pg_catalog.format('%I.%I', TG_TABLE_SCHEMA, TG_TABLE_NAME),
               r.table_id, NEW.ledger_seq, r.columns,
               ehrledger._row_jsonb(NEW) - ARRAY['ledger_seq', 'ledger_hash']
          FROM ehrledger.registered_table r WHERE r.relid = TG_RELID;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION ehrledger.share(tbl pg_catalog.regclass) RETURNS pg_catalog.int8
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
        '        ehrledger._row_jsonb(t) - ARRAY[''ledger_seq'', ''ledger_hash''] FROM ONLY %s t',
        ehrledger.node_name(), tbl::pg_catalog.text, r.table_id, r.columns, tbl);
    GET DIAGNOSTICS n = ROW_COUNT;
    UPDATE ehrledger.registered_table SET shared = true WHERE table_id = r.table_id;
    RETURN n;
END
$$;

-- verify() checks its caller's rights (SELECT on every table it reads;
-- under row-level security, an auditor or admin) and then verifies as the
-- ledger's owner: as SECURITY DEFINER it could not see its caller.
ALTER FUNCTION ehrledger.verify(pg_catalog.regclass, pg_catalog.jsonb) SECURITY INVOKER;

-- Whether an id is an actor, its role and keys, are not public: only the
-- insert trigger and verify_record() look them up, as the ledger's owner.
ALTER FUNCTION ehrledger._signer_key(pg_catalog.text, pg_catalog.int8) SECURITY INVOKER;

REVOKE ALL ON FUNCTION ehrledger._signer_key(pg_catalog.text, pg_catalog.int8),
    ehrledger._as_table_owner(pg_catalog.regclass, pg_catalog.text),
    ehrledger._row_jsonb(record),
    ehrledger._history_type(pg_catalog.oid, pg_catalog.int4)
    FROM PUBLIC;


-- Section: consent, actors and the access log.


-- Section: sealing and locks.


-- Section: verification core.


-- Section: views are security barriers (last, after every view is final).
-- A caller's own conditions (a leaky function in a WHERE clause) must never
-- see a row a view filters out: every view over ledger data is a security
-- barrier.  ALTER VIEW, because CREATE OR REPLACE VIEW resets the option.
DO $$
DECLARE
    v pg_catalog.regclass;
BEGIN
    FOR v IN SELECT c.oid FROM pg_catalog.pg_class c
              WHERE c.relnamespace = 'ehrledger'::pg_catalog.regnamespace AND c.relkind = 'v'
              ORDER BY c.relname LOOP
        EXECUTE pg_catalog.format('ALTER VIEW %s SET (security_barrier = true)', v);
    END LOOP;
END
$$;
