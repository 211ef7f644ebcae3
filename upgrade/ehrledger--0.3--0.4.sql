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

-- protect()'s backfill: rewrites a populated table once with every row
-- numbered and hashed (src/ledger/backfill.c); superuser only.
CREATE FUNCTION ehrledger._backfill(tbl pg_catalog.regclass, tid pg_catalog.int4)
    RETURNS pg_catalog.int8
    AS 'MODULE_PATHNAME', 'ehrledger_backfill'
    LANGUAGE C STRICT
    SET search_path = pg_catalog, pg_temp;
REVOKE ALL ON FUNCTION ehrledger._backfill(pg_catalog.regclass, pg_catalog.int4) FROM PUBLIC;

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

-- Salted leaves.  Each row version gets a secret random salt in a third
-- ledger column, ledger_salt, and its leaf commits to it (docs/format.md
-- §1, format 2): a leaf then reveals nothing about its row to whoever
-- cannot read the row.  Rows written before the update have no salt and
-- keep format 1, their leaves, proofs and digests unchanged.  Tables every
-- role may read (the enrolments, the membership) are attached unsalted.
DROP FUNCTION ehrledger._attach(pg_catalog.regclass, pg_catalog.int4, pg_catalog.text,
                                pg_catalog.name, pg_catalog.name, pg_catalog.bool);
CREATE FUNCTION ehrledger._attach(tbl pg_catalog.regclass, tid pg_catalog.int4,
                                  mode pg_catalog.text,
                                  signer_column pg_catalog.name,
                                  signature_column pg_catalog.name,
                                  internal pg_catalog.bool,
                                  salted pg_catalog.bool DEFAULT true)
    RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $attach$
DECLARE
    existing    pg_catalog.int8;
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
        'ALTER TABLE %s ADD COLUMN ledger_seq pg_catalog.int8, ADD COLUMN ledger_hash pg_catalog.bytea%s',
        tbl, CASE WHEN salted THEN ', ADD COLUMN ledger_salt pg_catalog.bytea' ELSE '' END);

    -- Rows already in the table enter the ledger: the table is rewritten
    -- once with each row numbered, salted and hashed (ehrledger._backfill(),
    -- src/ledger/backfill.c), leaving nothing for VACUUM.  No trigger or
    -- rule fires; the owner's code it runs (the send functions of its
    -- types, index expressions) runs as the owner, restricted.  Signatures
    -- of existing rows are not checked here: verify_record() checks them.
    existing := ehrledger._backfill(tbl, tid);

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
REVOKE ALL ON FUNCTION ehrledger._attach(pg_catalog.regclass, pg_catalog.int4, pg_catalog.text,
                                         pg_catalog.name, pg_catalog.name, pg_catalog.bool,
                                         pg_catalog.bool) FROM PUBLIC;

-- Every table protected before the update, and its history table, gets
-- the column (nullable, no default: a change of the catalog only, under a
-- brief ACCESS EXCLUSIVE lock).  The schema guard records it in the
-- table's columns and adds it to the history table as it does for any
-- new column; this does both again only where the guard did not.  A
-- table that has a column of that name already has it as data, hashed
-- into its sealed rows: the update stops rather than read it as salts.
DO $salt$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT k.table_id, k.relid, k.history FROM ehrledger.registered_table k
              WHERE k.retired_at IS NULL
                AND EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.oid = k.relid)
              ORDER BY k.table_id LOOP
        IF EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                    WHERE a.attrelid = r.relid AND a.attname = 'ledger_salt' AND NOT a.attisdropped) THEN
            RAISE EXCEPTION 'ledger table % has a column named ledger_salt, which ehrledger 0.4 reserves', r.relid
                USING ERRCODE = 'duplicate_column',
                      DETAIL = 'Its values are part of the sealed rows; from 0.4 on, a column of that name holds each row''s secret salt.',
                      HINT = 'Retire the table with ehrledger.retire(), rename the column and protect the table again, then update.';
        END IF;
        EXECUTE pg_catalog.format('ALTER TABLE %s ADD COLUMN ledger_salt pg_catalog.bytea', r.relid);
        IF r.history IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                            WHERE a.attrelid = r.history AND a.attname = 'ledger_salt' AND NOT a.attisdropped) THEN
            EXECUTE pg_catalog.format('ALTER TABLE %s ADD COLUMN ledger_salt pg_catalog.bytea', r.history);
        END IF;
        UPDATE ehrledger.registered_table k
           SET columns = k.columns || pg_catalog.jsonb_build_object('name', 'ledger_salt', 'type', 'bytea')
         WHERE k.table_id = r.table_id
           AND NOT EXISTS (SELECT 1 FROM pg_catalog.jsonb_array_elements(k.columns) c
                            WHERE c->>'name' = 'ledger_salt');
    END LOOP;
END
$salt$;

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

-- Actors map to database roles by identity (the role's OID and its name
-- together), not by name alone: a role dropped and created again under the
-- same name gets a new OID, and its predecessor's actor stays with the
-- predecessor.  A mapping also dies when its role is renamed, and after a
-- restore onto another cluster (whose roles have other OIDs); an admin maps
-- again with ehrledger.map_role().  Mappings are ledgered events ('map').
ALTER TABLE ehrledger.actor_event ADD COLUMN pg_role_oid pg_catalog.oid;
ALTER TABLE ehrledger.actor_event DROP CONSTRAINT actor_event_action_check;
ALTER TABLE ehrledger.actor_event ADD CONSTRAINT actor_event_action_check
    CHECK (action IN ('register', 'rotate', 'revoke', 'map'));
-- An actor_id is registered once; concurrent registrations of one id meet here.
CREATE UNIQUE INDEX actor_event_register_once ON ehrledger.actor_event (actor_id)
    WHERE action = 'register';

-- The mappings 0.3 made by name are taken over as they stand at the upgrade:
-- each live actor keeps the role that has its recorded name now.
INSERT INTO ehrledger.actor_event (actor_id, action, pg_role, pg_role_oid)
    SELECT e.actor_id, 'map', e.pg_role, g.oid
      FROM ehrledger.actor_event e
      JOIN pg_catalog.pg_roles g ON g.rolname = e.pg_role
     WHERE e.action = 'register'
       AND NOT EXISTS (SELECT 1 FROM ehrledger.actor_event v
                        WHERE v.actor_id = e.actor_id AND v.action = 'revoke')
     ORDER BY e.ledger_seq;

-- The newest mapping event of each actor: its registration, or a later map.
CREATE OR REPLACE VIEW ehrledger.actors AS
    SELECT r.actor_id, r.role, m.pg_role,
           (SELECT k.public_key FROM ehrledger.actor_keys k
             WHERE k.actor_id = r.actor_id ORDER BY k.from_seq DESC LIMIT 1) AS public_key,
           r.at AS registered_at,
           (SELECT v.at FROM ehrledger.actor_event v
             WHERE v.actor_id = r.actor_id AND v.action = 'revoke') AS revoked_at,
           m.pg_role_oid,
           (m.pg_role_oid IS NOT NULL
            AND EXISTS (SELECT 1 FROM pg_catalog.pg_roles g
                         WHERE g.oid = m.pg_role_oid AND g.rolname = m.pg_role)) AS role_live
      FROM ehrledger.actor_event r
      CROSS JOIN LATERAL (
          SELECT x.pg_role, x.pg_role_oid FROM ehrledger.actor_event x
           WHERE x.actor_id = r.actor_id AND x.action IN ('register', 'map')
           ORDER BY x.ledger_seq DESC LIMIT 1) m
     WHERE r.action = 'register';
COMMENT ON VIEW ehrledger.actors IS
    'Registered actors with their role, mapped database role (role_live: that very role still exists under that name), current (or last) public key and revocation.';

-- The live actor a role maps to: the role's newest mapping names this very
-- role (OID and name), and the actor is not revoked.  Index-driven, since
-- every consent cache and grant asks.
CREATE OR REPLACE FUNCTION ehrledger._actor_of(caller pg_catalog.name, OUT actor_id pg_catalog.text, OUT role pg_catalog.text)
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT r.actor_id, r.role
      FROM ehrledger.actor_event m
      JOIN pg_catalog.pg_roles g ON g.oid = m.pg_role_oid AND g.rolname = m.pg_role
      JOIN ehrledger.actor_event r ON r.actor_id = m.actor_id AND r.action = 'register'
     WHERE m.pg_role = caller AND m.action IN ('register', 'map')
       AND NOT EXISTS (SELECT 1 FROM ehrledger.actor_event l
                        WHERE l.actor_id = m.actor_id AND l.action IN ('register', 'map')
                          AND l.ledger_seq > m.ledger_seq)
       AND NOT EXISTS (SELECT 1 FROM ehrledger.actor_event v
                        WHERE v.actor_id = m.actor_id AND v.action = 'revoke')
$$;

-- Changes to actors are serialised by a lock on their ledgered table, which
-- no role without write rights on it can take (advisory locks are shared
-- with every role).  Actor changes are rare administrative acts.
CREATE OR REPLACE FUNCTION ehrledger._lock_actors() RETURNS void
    LANGUAGE sql
    SET search_path = pg_catalog, pg_temp
AS $$
    LOCK TABLE ehrledger.actor_event IN SHARE ROW EXCLUSIVE MODE
$$;

-- The OID of an existing role, or an error naming it.
CREATE FUNCTION ehrledger._role_oid(pg_role pg_catalog.name) RETURNS pg_catalog.oid
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    id pg_catalog.oid;
BEGIN
    SELECT g.oid INTO id FROM pg_catalog.pg_roles g WHERE g.rolname = pg_role;
    IF id IS NULL THEN
        RAISE EXCEPTION 'role "%" does not exist', pg_role USING ERRCODE = 'undefined_object';
    END IF;
    IF (SELECT a.actor_id FROM ehrledger._actor_of(pg_role) a) IS NOT NULL THEN
        RAISE EXCEPTION 'role "%" is already mapped to an actor', pg_role
            USING ERRCODE = 'duplicate_object',
                  HINT = 'Map that actor to no role first: ehrledger.map_role(actor_id, NULL).';
    END IF;
    RETURN id;
END
$$;

CREATE OR REPLACE FUNCTION ehrledger.register_actor(actor_id pg_catalog.text, role pg_catalog.text,
                                                    public_key pg_catalog.bytea,
                                                    pg_role pg_catalog.name DEFAULT NULL)
    RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    role_oid pg_catalog.oid;
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
    PERFORM ehrledger._lock_actors();
    IF EXISTS (SELECT 1 FROM ehrledger.actor_event e WHERE e.actor_id = register_actor.actor_id) THEN
        RAISE EXCEPTION 'actor "%" is already registered', actor_id
            USING ERRCODE = 'duplicate_object',
                  HINT = 'Use ehrledger.rotate_key() to give it a new key.';
    END IF;
    IF pg_role IS NOT NULL THEN
        role_oid := ehrledger._role_oid(pg_role);
    END IF;
    INSERT INTO ehrledger.actor_event (actor_id, action, role, pg_role, pg_role_oid, public_key)
        VALUES (actor_id, 'register', role, pg_role, role_oid, public_key);
    PERFORM ehrledger._actors_changed();
END
$$;

CREATE OR REPLACE FUNCTION ehrledger._live_actor(actor pg_catalog.text) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF actor IS NULL THEN
        RAISE EXCEPTION 'actor_id must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    PERFORM ehrledger._lock_actors();
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

CREATE FUNCTION ehrledger.map_role(actor_id pg_catalog.text, pg_role pg_catalog.name)
    RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    role_oid pg_catalog.oid;
BEGIN
    PERFORM ehrledger._live_actor(actor_id);
    IF pg_role IS NOT NULL THEN
        role_oid := ehrledger._role_oid(pg_role);
    END IF;
    INSERT INTO ehrledger.actor_event (actor_id, action, pg_role, pg_role_oid)
        VALUES (actor_id, 'map', pg_role, role_oid);
    PERFORM ehrledger._actors_changed();
END
$$;
COMMENT ON FUNCTION ehrledger.map_role(pg_catalog.text, pg_catalog.name) IS
    'Maps an actor to a database role (that very role: a role created later under the same name is another), or to none with NULL; ledgered.';


-- Consents state what they allow: reading, writing (insert, update,
-- delete), or both.  Grants from 0.3 named no actions and allow reading
-- only.  A consent given on paper is recorded by a registrar (an admin
-- actor) with a reference to the signed form, for patients who need not
-- be registered.
ALTER TABLE ehrledger.consent_event
    ADD COLUMN actions pg_catalog.text[],
    ADD COLUMN paper_form pg_catalog.text;

-- Actions in their canonical form: a non-empty, sorted set of read and write.
CREATE FUNCTION ehrledger._consent_actions(actions pg_catalog.text[]) RETURNS pg_catalog.text[]
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    a pg_catalog.text;
BEGIN
    IF actions IS NULL OR pg_catalog.cardinality(actions) = 0 THEN
        RAISE EXCEPTION 'a consent must allow read, write or both'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass actions => ''{read}'', ''{write}'' or ''{read,write}''.';
    END IF;
    FOREACH a IN ARRAY actions LOOP
        IF a IS NULL OR a NOT IN ('read', 'write') THEN
            RAISE EXCEPTION 'unknown consent action "%"', a
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'A consent allows read (SELECT) and write (INSERT, UPDATE, DELETE).';
        END IF;
    END LOOP;
    RETURN ARRAY(SELECT DISTINCT x FROM pg_catalog.unnest(actions) x ORDER BY x);
END
$$;

-- The message a patient signs to grant a consent through someone else:
-- version 2 adds the actions (docs/format.md §16).
DROP FUNCTION ehrledger.consent_payload(pg_catalog.text, pg_catalog.text, pg_catalog.text,
                                        pg_catalog.text, pg_catalog.timestamptz);
CREATE FUNCTION ehrledger.consent_payload(patient pg_catalog.text, grantee pg_catalog.text,
                                          scope pg_catalog.text DEFAULT '*',
                                          purpose pg_catalog.text DEFAULT 'treatment',
                                          valid_until pg_catalog.timestamptz DEFAULT NULL,
                                          actions pg_catalog.text[] DEFAULT '{read}')
    RETURNS pg_catalog.bytea
    LANGUAGE sql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.convert_to('ehrledger-consent-grant-2', 'UTF8')
        || (SELECT pg_catalog.string_agg(pg_catalog.int4send(pg_catalog.octet_length(f)) || pg_catalog.convert_to(f, 'UTF8'), ''::pg_catalog.bytea ORDER BY n)
              FROM pg_catalog.unnest(ARRAY[patient, grantee, scope, purpose,
                       COALESCE(pg_catalog.to_char(valid_until AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'), 'infinity'),
                       pg_catalog.array_to_string(ehrledger._consent_actions(actions), ',')])
                   WITH ORDINALITY AS x(f, n))
$$;
COMMENT ON FUNCTION ehrledger.consent_payload(pg_catalog.text, pg_catalog.text, pg_catalog.text, pg_catalog.text, pg_catalog.timestamptz, pg_catalog.text[]) IS
    'The bytes a patient signs with its Ed25519 key to grant a consent through someone else (docs/format.md §16).';

DROP FUNCTION ehrledger.grant_consent(pg_catalog.text, pg_catalog.text, pg_catalog.text, pg_catalog.text,
                                      pg_catalog.timestamptz, pg_catalog.bytea);
DROP FUNCTION ehrledger._grant_consent(pg_catalog.name, pg_catalog.text, pg_catalog.text, pg_catalog.text,
                                       pg_catalog.text, pg_catalog.timestamptz, pg_catalog.bytea);
-- A consent granted or revoked on paper: a registrar (an admin actor)
-- vouches for a signed form it names, and no signature comes along.
CREATE FUNCTION ehrledger._check_paper(caller pg_catalog.name, actor_id pg_catalog.text,
                                       actor_role pg_catalog.text, paper_form pg_catalog.text,
                                       signature pg_catalog.bytea, act pg_catalog.text) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF signature IS NOT NULL THEN
        RAISE EXCEPTION 'a consent is % either on paper or with the patient''s signature, not both',
                        CASE act WHEN 'grant' THEN 'given' ELSE 'revoked' END
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF actor_role IS DISTINCT FROM 'admin' THEN
        RAISE EXCEPTION 'only a registrar (an admin actor) may record a % given on paper',
                        CASE act WHEN 'grant' THEN 'consent' ELSE 'revocation' END
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = pg_catalog.format('Role %s is mapped to %s.', caller,
                                             COALESCE('actor ' || actor_id || ' (' || actor_role || ')', 'no actor'));
    END IF;
    IF pg_catalog.btrim(paper_form) = '' OR pg_catalog.length(paper_form) > 500 THEN
        RAISE EXCEPTION 'paper_form must name the signed form in 1 to 500 characters'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'For example its document number in the records office.';
    END IF;
END
$$;

CREATE FUNCTION ehrledger._grant_consent(caller pg_catalog.name, patient pg_catalog.text,
                                         grantee pg_catalog.text, scope pg_catalog.text,
                                         purpose pg_catalog.text, valid_until pg_catalog.timestamptz,
                                         signature pg_catalog.bytea, actions pg_catalog.text[],
                                         paper_form pg_catalog.text)
    RETURNS pg_catalog.int8
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    me          record;
    patient_key pg_catalog.bytea;
    patient_role pg_catalog.text;
    tid         pg_catalog.int4;
    n           pg_catalog.int8;
    id          pg_catalog.int8;
    basis       pg_catalog.text;
    acts        pg_catalog.text[];
BEGIN
    IF patient IS NULL THEN
        RAISE EXCEPTION 'patient must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT * INTO me FROM ehrledger._actor_of(caller);
    IF paper_form IS NOT NULL THEN
        -- A paper consent: the registrar vouches for the signed form; the
        -- patient may never have registered.
        PERFORM ehrledger._check_paper(caller, me.actor_id, me.role, paper_form, signature, 'grant');
        SELECT a.role INTO patient_role FROM ehrledger.actors a WHERE a.actor_id = patient;
        IF patient_role IS NOT NULL AND patient_role <> 'patient' THEN
            RAISE EXCEPTION 'patient "%" is a registered %, not a patient', patient, patient_role
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    ELSE
        patient_key := ehrledger._require_actor(patient, 'patient', 'patient');
    END IF;
    PERFORM ehrledger._require_actor(grantee, 'grantee');
    IF patient = grantee THEN
        RAISE EXCEPTION 'a patient needs no consent to see its own rows'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    acts := ehrledger._consent_actions(actions);
    IF scope IS NULL OR scope = '' THEN
        RAISE EXCEPTION 'scope must name a table, a category or ''*'''
            USING ERRCODE = 'invalid_parameter_value';
    ELSIF scope <> '*' THEN
        -- A table scope may be written with or without its schema.
        SELECT pg_catalog.min(r.table_id), pg_catalog.count(*) INTO tid, n
          FROM ehrledger.registered_table r
          JOIN pg_catalog.pg_class c ON c.oid = r.relid
          JOIN pg_catalog.pg_namespace s ON s.oid = c.relnamespace
         WHERE r.patient_column IS NOT NULL AND r.retired_at IS NULL
           AND scope IN (c.relname::pg_catalog.text, s.nspname || '.' || c.relname, r.relid::pg_catalog.text);
        IF n > 1 THEN
            RAISE EXCEPTION 'consent scope "%" names tables in more than one schema', scope
                USING ERRCODE = 'ambiguous_parameter',
                      HINT = 'Qualify the table name with its schema.';
        ELSIF tid IS NULL AND NOT EXISTS (SELECT 1 FROM ehrledger.registered_table r
                                           WHERE r.category = scope AND r.retired_at IS NULL) THEN
            RAISE EXCEPTION 'consent scope "%" is neither a table protected with a patient column nor a category', scope
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Use ''*'', a table name, or a category given to ehrledger.protect(..., category => ...).';
        END IF;
    END IF;
    IF purpose IS NULL OR purpose !~ '^[a-z][a-z0-9_-]{0,62}$' THEN
        RAISE EXCEPTION 'purpose "%" is not a lower-case word', purpose
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'For example treatment, emergency, research, payment.';
    END IF;
    IF valid_until IS NOT NULL AND valid_until <= pg_catalog.clock_timestamp() THEN
        RAISE EXCEPTION 'valid_until % is not in the future', valid_until
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    IF paper_form IS NOT NULL THEN
        basis := 'paper form';
    ELSIF signature IS NOT NULL THEN
        IF NOT ehrledger.verify_signature(ehrledger.consent_payload(patient, grantee, scope, purpose, valid_until, acts),
                                          signature, patient_key) THEN
            RAISE EXCEPTION 'signature is not patient "%"''s signature of this consent', patient
                USING ERRCODE = 'LD012',
                      HINT = 'The patient signs ehrledger.consent_payload() with its current key.';
        END IF;
        IF EXISTS (SELECT 1 FROM ehrledger.consent_event e WHERE e.signature = _grant_consent.signature) THEN
            RAISE EXCEPTION 'this signature was used before'
                USING ERRCODE = 'LD013',
                      DETAIL = 'A signed consent grants once; a copy cannot grant again.',
                      HINT = 'To grant the same again, the patient signs a payload with another valid_until.';
        END IF;
        basis := 'patient signature';
    ELSIF me.actor_id IS DISTINCT FROM patient THEN
        RAISE EXCEPTION 'only patient "%" may grant consent to its rows', patient
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Connect as the patient''s role, pass the patient''s signature of ehrledger.consent_payload(), or have a registrar record a paper consent.';
    ELSE
        basis := 'patient role';
    END IF;

    id := pg_catalog.nextval('ehrledger.consent_id_seq');
    INSERT INTO ehrledger.consent_event (consent_id, action, patient, grantee, scope, scope_table,
                                         purpose, valid_until, signature, by_role, by_actor,
                                         actions, paper_form)
        VALUES (id, 'grant', patient, grantee, scope, tid, purpose, valid_until, signature,
                caller, me.actor_id, acts, paper_form);
    PERFORM ehrledger._actors_changed();
    PERFORM ehrledger._log_access(pg_catalog.clock_timestamp(), me.actor_id, caller, 'grant', tid,
                                  ARRAY[patient], ARRAY[basis],
                                  pg_catalog.format('consent %s to %s, scope %s, purpose %s, %s, until %s%s',
                                                    id, grantee, scope, purpose,
                                                    pg_catalog.array_to_string(acts, ' and '),
                                                    COALESCE(valid_until::pg_catalog.text, 'revoked'),
                                                    COALESCE(', paper form ' || paper_form, '')),
                                  pg_catalog.inet_client_addr());
    RETURN id;
END
$$;

CREATE FUNCTION ehrledger.grant_consent(patient pg_catalog.text, grantee pg_catalog.text,
                                        scope pg_catalog.text DEFAULT '*',
                                        purpose pg_catalog.text DEFAULT 'treatment',
                                        valid_until pg_catalog.timestamptz DEFAULT NULL,
                                        signature pg_catalog.bytea DEFAULT NULL,
                                        actions pg_catalog.text[] DEFAULT '{read}',
                                        paper_form pg_catalog.text DEFAULT NULL)
    RETURNS pg_catalog.int8
    AS 'MODULE_PATHNAME', 'ehrledger_with_caller'
    LANGUAGE C VOLATILE
    SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION ehrledger.grant_consent(pg_catalog.text, pg_catalog.text, pg_catalog.text, pg_catalog.text, pg_catalog.timestamptz, pg_catalog.bytea, pg_catalog.text[], pg_catalog.text) IS
    'Grants an actor access (actions: read, write or both) to a patient''s rows (all, one table, or a category) for a purpose, until a time or revocation; by the patient''s role, with its signature, or on paper through a registrar. Returns the consent id.';

DROP FUNCTION ehrledger.revoke_consent(pg_catalog.int8, pg_catalog.bytea);
DROP FUNCTION ehrledger._revoke_consent(pg_catalog.name, pg_catalog.int8, pg_catalog.bytea);
CREATE FUNCTION ehrledger._revoke_consent(caller pg_catalog.name, consent_id pg_catalog.int8,
                                          signature pg_catalog.bytea, paper_form pg_catalog.text)
    RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    g           ehrledger.consent_event%ROWTYPE;
    me          record;
    patient_key pg_catalog.bytea;
    basis       pg_catalog.text;
BEGIN
    IF consent_id IS NULL THEN
        RAISE EXCEPTION 'consent_id must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    -- Revocations of one consent meet at its grant, locked as a row: no
    -- role without write rights on the ledger can hold that lock.
    SELECT * INTO g FROM ehrledger.consent_event e
     WHERE e.consent_id = _revoke_consent.consent_id AND e.action = 'grant'
       FOR UPDATE;
    IF g.consent_id IS NULL THEN
        RAISE EXCEPTION 'consent % does not exist', consent_id USING ERRCODE = 'undefined_object';
    END IF;
    SELECT * INTO me FROM ehrledger._actor_of(caller);
    IF paper_form IS NOT NULL THEN
        PERFORM ehrledger._check_paper(caller, me.actor_id, me.role, paper_form, signature, 'revoke');
        basis := 'paper form';
    ELSIF signature IS NOT NULL THEN
        SELECT k.public_key INTO patient_key FROM ehrledger.actors k WHERE k.actor_id = g.patient;
        IF patient_key IS NULL
           OR NOT ehrledger.verify_signature(ehrledger.revocation_payload(consent_id), signature, patient_key) THEN
            RAISE EXCEPTION 'signature is not patient "%"''s signature of this revocation', g.patient
                USING ERRCODE = 'LD012',
                      HINT = 'The patient signs ehrledger.revocation_payload(consent_id) with its current key.';
        END IF;
        basis := 'patient signature';
    ELSIF me.actor_id IS DISTINCT FROM g.patient THEN
        RAISE EXCEPTION 'only the patient may revoke consent %', consent_id
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Connect as the patient''s role, pass the patient''s signature of ehrledger.revocation_payload(), or have a registrar record a revocation on paper.';
    ELSE
        basis := 'patient role';
    END IF;
    IF EXISTS (SELECT 1 FROM ehrledger.consent_event e
                WHERE e.consent_id = _revoke_consent.consent_id AND e.action = 'revoke') THEN
        RAISE EXCEPTION 'consent % was revoked already', consent_id
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    INSERT INTO ehrledger.consent_event (consent_id, action, patient, signature, by_role, by_actor, paper_form)
        VALUES (consent_id, 'revoke', g.patient, signature, caller, me.actor_id, paper_form);
    PERFORM ehrledger._actors_changed();
    PERFORM ehrledger._log_access(pg_catalog.clock_timestamp(), me.actor_id, caller, 'revoke', g.scope_table,
                                  ARRAY[g.patient], ARRAY[basis],
                                  pg_catalog.format('consent %s to %s revoked%s', consent_id, g.grantee,
                                                    COALESCE(', paper form ' || paper_form, '')),
                                  pg_catalog.inet_client_addr());
END
$$;

CREATE FUNCTION ehrledger.revoke_consent(consent_id pg_catalog.int8, signature pg_catalog.bytea DEFAULT NULL,
                                         paper_form pg_catalog.text DEFAULT NULL)
    RETURNS void
    AS 'MODULE_PATHNAME', 'ehrledger_with_caller'
    LANGUAGE C VOLATILE
    SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION ehrledger.revoke_consent(pg_catalog.int8, pg_catalog.bytea, pg_catalog.text) IS
    'Revokes a consent, by the patient''s role, with its signature of ehrledger.revocation_payload(), or on paper through a registrar; effective from the next statement of every session.';

-- Every consent, current and past, with what it allows and how it was given.
CREATE OR REPLACE VIEW ehrledger.consents WITH (security_barrier = true) AS
    SELECT g.consent_id, g.patient, g.grantee, g.scope, g.purpose,
           g.at AS granted_at, g.valid_until, r.at AS revoked_at,
           g.by_role AS granted_by, r.by_role AS revoked_by,
           g.signature IS NOT NULL AS patient_signed,
           r.at IS NULL AND (g.valid_until IS NULL OR g.valid_until > pg_catalog.clock_timestamp()) AS active,
           CASE WHEN g.scope = '*' THEN 'all' WHEN g.scope_table IS NOT NULL THEN 'table'
                ELSE 'category' END AS scope_kind,
           g.ledger_seq,
           COALESCE(g.actions, '{read}') AS actions,
           CASE WHEN g.paper_form IS NOT NULL THEN 'paper form'
                WHEN g.signature IS NOT NULL THEN 'patient signature'
                ELSE 'patient role' END AS given_as,
           g.paper_form,
           g.by_actor AS recorded_by
      FROM ehrledger.consent_event g
      LEFT JOIN ehrledger.consent_event r ON r.consent_id = g.consent_id AND r.action = 'revoke'
     CROSS JOIN ehrledger.current_actor() me
     WHERE g.action = 'grant'
       AND (me.actor_id IN (g.patient, g.grantee) OR me.role IN ('auditor', 'admin')
            OR COALESCE((SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = CURRENT_USER), false));

-- Every patient an actor may act on in a table, the basis, until when, and
-- whether it may read and write: itself (a patient), a live consent for the
-- session's purpose covering the table (its actions; grants from 0.3 allow
-- reading only), an open break-glass (emergency care reads and writes).
DROP FUNCTION ehrledger._permitted_patients(pg_catalog.text, pg_catalog.int4, pg_catalog.text);
CREATE FUNCTION ehrledger._permitted_patients(actor pg_catalog.text, tid pg_catalog.int4,
                                              purpose pg_catalog.text,
                                              OUT patient pg_catalog.text, OUT basis pg_catalog.text,
                                              OUT until pg_catalog.timestamptz,
                                              OUT can_read pg_catalog.bool, OUT can_write pg_catalog.bool)
    RETURNS SETOF record
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT a.actor_id, 'own record', NULL::pg_catalog.timestamptz, true, true
      FROM ehrledger.actors a
     WHERE a.actor_id = _permitted_patients.actor AND a.role = 'patient'
    UNION ALL
    SELECT g.patient, 'consent ' || g.consent_id || CASE WHEN g.paper_form IS NOT NULL THEN ' (paper form)' ELSE '' END,
           g.valid_until,
           COALESCE('read' = ANY (g.actions), true), COALESCE('write' = ANY (g.actions), false)
      FROM ehrledger.consent_event g
     WHERE g.action = 'grant' AND g.grantee = _permitted_patients.actor
       AND g.purpose = _permitted_patients.purpose
       AND (g.valid_until IS NULL OR g.valid_until > pg_catalog.clock_timestamp())
       AND (g.scope = '*' OR g.scope_table = _permitted_patients.tid
            OR (g.scope_table IS NULL AND g.scope = (SELECT r.category FROM ehrledger.registered_table r
                                                      WHERE r.table_id = _permitted_patients.tid)))
       AND NOT EXISTS (SELECT 1 FROM ehrledger.consent_event v
                        WHERE v.consent_id = g.consent_id AND v.action = 'revoke')
    UNION ALL
    SELECT b.patient, 'break-glass ' || b.break_glass_id || ': ' || b.reason, b.expires_at, true, true
      FROM ehrledger.break_glass b
     WHERE b.actor = _permitted_patients.actor AND b.expires_at > pg_catalog.clock_timestamp()
$$;

-- The table a consent policy names: its OID, if it is a live ledger table
-- with a patient column (consent_check() refuses any other id).
CREATE FUNCTION ehrledger._consent_table(tid pg_catalog.int4) RETURNS pg_catalog.oid
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT r.relid::pg_catalog.oid FROM ehrledger.registered_table r
     WHERE r.table_id = tid AND r.patient_column IS NOT NULL AND r.retired_at IS NULL
$$;

-- Break-glass works for any patient whose rows a protected table may hold:
-- most patients never register.  A registered actor of another role is not
-- a patient.
CREATE OR REPLACE FUNCTION ehrledger._break_glass(caller pg_catalog.name, patient pg_catalog.text, reason pg_catalog.text)
    RETURNS pg_catalog.int8
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    me      record;
    id      pg_catalog.int8;
    opened  pg_catalog.timestamptz := pg_catalog.clock_timestamp();
    expires pg_catalog.timestamptz;
    patient_role pg_catalog.text;
BEGIN
    SELECT * INTO me FROM ehrledger._actor_of(caller);
    IF me.actor_id IS NULL OR me.role NOT IN ('provider', 'pharmacist') THEN
        RAISE EXCEPTION 'only a provider or pharmacist may break the glass'
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = pg_catalog.format('Role %s is mapped to %s.', caller,
                                             COALESCE('actor ' || me.actor_id || ' (' || me.role || ')', 'no actor'));
    END IF;
    IF patient IS NULL OR pg_catalog.btrim(patient) = '' THEN
        RAISE EXCEPTION 'patient must name the patient whose records are opened'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT a.role INTO patient_role FROM ehrledger.actors a WHERE a.actor_id = patient;
    IF patient_role IS NOT NULL AND patient_role <> 'patient' THEN
        RAISE EXCEPTION 'patient "%" is a registered %, not a patient', patient, patient_role
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF reason IS NULL OR pg_catalog.length(pg_catalog.btrim(reason)) < 5 THEN
        RAISE EXCEPTION 'break-glass needs a reason of at least 5 characters'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    id := pg_catalog.nextval('ehrledger.break_glass_id_seq');
    expires := opened + pg_catalog.make_interval(secs => (SELECT s.setting::pg_catalog.int4 FROM pg_catalog.pg_settings s
                                                           WHERE s.name = 'ehrledger.break_glass_duration'));
    INSERT INTO ehrledger.break_glass (break_glass_id, patient, actor, pg_role, reason, opened_at, expires_at)
        VALUES (id, patient, me.actor_id, caller, reason, opened, expires);
    PERFORM ehrledger._actors_changed();
    PERFORM ehrledger._log_access(opened, me.actor_id, caller, 'break_glass', NULL,
                                  ARRAY[patient], ARRAY['break-glass ' || id || ': ' || reason],
                                  pg_catalog.format('until %s', expires), pg_catalog.inet_client_addr());
    RETURN id;
END
$$;

-- Notifications carry the number of the access log entry and nothing else:
-- a channel has no privileges, so anyone may listen and anyone may notify.
-- A listener fetches the entry with ehrledger.access_event(), under its own
-- rights; a number that names no entry (or none it may see) was not sent
-- by ehrledger, or is not for it.  client_addr is the client's address,
-- taken in the client's session (NULL over a Unix socket).
--
-- The client's address came in 0.4: entries sealed before it have none
-- (NULL, which the row encoding leaves out, so their hashes hold).
ALTER TABLE ehrledger.access_event ADD COLUMN client_addr pg_catalog.inet;
DROP FUNCTION ehrledger._log_access(pg_catalog.timestamptz, pg_catalog.text, pg_catalog.name, pg_catalog.text,
                                    pg_catalog.int4, pg_catalog.text[], pg_catalog.text[], pg_catalog.text);
CREATE FUNCTION ehrledger._log_access(at pg_catalog.timestamptz, actor pg_catalog.text,
                                      pg_role pg_catalog.name, action pg_catalog.text,
                                      table_id pg_catalog.int4, patients pg_catalog.text[],
                                      bases pg_catalog.text[], detail pg_catalog.text,
                                      client_addr pg_catalog.inet)
    RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    seq pg_catalog.int8;
BEGIN
    INSERT INTO ehrledger.access_event (at, actor, pg_role, action, table_id, patients, bases, detail, client_addr)
        VALUES (at, actor, pg_role, action, table_id, patients, bases, detail, client_addr)
        RETURNING ledger_seq INTO seq;
    PERFORM pg_catalog.pg_notify('ehrledger_events',
                pg_catalog.json_build_object('event_seq', seq)::pg_catalog.text);
END
$$;

-- One access log entry, as much of it as the caller may see: a patient its
-- own line, an auditor (or a superuser) every line.  Others may not ask.
CREATE FUNCTION ehrledger._access_event(caller pg_catalog.name, seq pg_catalog.int8,
                                        OUT event_seq pg_catalog.int8, OUT at pg_catalog.timestamptz,
                                        OUT actor pg_catalog.text, OUT pg_role pg_catalog.name,
                                        OUT patient pg_catalog.text,
                                        OUT action pg_catalog.text, OUT tbl pg_catalog.regclass,
                                        OUT basis pg_catalog.text, OUT detail pg_catalog.text,
                                        OUT client_addr pg_catalog.inet)
    RETURNS SETOF record
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    me record;
    everyone pg_catalog.bool;
    wanted pg_catalog.int8 := seq;
BEGIN
    IF wanted IS NULL THEN
        RAISE EXCEPTION 'event_seq must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT * INTO me FROM ehrledger._actor_of(caller);
    everyone := me.role IS NOT DISTINCT FROM 'auditor'
                OR COALESCE((SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = caller), false);
    IF NOT everyone AND me.role IS DISTINCT FROM 'patient' THEN
        RAISE EXCEPTION 'only a patient named in an access log entry or an auditor may read it'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN QUERY
        SELECT e.ledger_seq, e.at, e.actor, e.pg_role, p.patient, e.action, r.relid, p.basis, e.detail, e.client_addr
          FROM ehrledger.access_event e
          LEFT JOIN ehrledger.registered_table r ON r.table_id = e.table_id
         CROSS JOIN LATERAL ROWS FROM (pg_catalog.unnest(e.patients), pg_catalog.unnest(e.bases)) AS p(patient, basis)
         WHERE e.ledger_seq = wanted AND (everyone OR p.patient = me.actor_id);
END
$$;

CREATE FUNCTION ehrledger.access_event(seq pg_catalog.int8,
                                       OUT event_seq pg_catalog.int8, OUT at pg_catalog.timestamptz,
                                       OUT actor pg_catalog.text, OUT pg_role pg_catalog.name,
                                       OUT patient pg_catalog.text,
                                       OUT action pg_catalog.text, OUT tbl pg_catalog.regclass,
                                       OUT basis pg_catalog.text, OUT detail pg_catalog.text,
                                       OUT client_addr pg_catalog.inet)
    RETURNS SETOF record
    AS 'MODULE_PATHNAME', 'ehrledger_with_caller'
    LANGUAGE C STABLE
    SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION ehrledger.access_event(pg_catalog.int8) IS
    'The access log entry a notification on channel ehrledger_events names, one row per patient the caller may see (a patient its own, an auditor all); no rows for a number that names no entry the caller may see.';

-- The access log shows the client's address, last.
CREATE OR REPLACE VIEW ehrledger.access_log WITH (security_barrier = true) AS
    SELECT e.ledger_seq AS event_seq, e.at, e.actor, e.pg_role, p.patient, e.action,
           r.relid AS tbl, p.basis, e.detail, e.client_addr
      FROM ehrledger.access_event e
      LEFT JOIN ehrledger.registered_table r ON r.table_id = e.table_id
     CROSS JOIN LATERAL ROWS FROM (pg_catalog.unnest(e.patients), pg_catalog.unnest(e.bases)) AS p(patient, basis);
COMMENT ON VIEW ehrledger.access_log IS
    'Who read or changed which patient''s rows, when, from which client address, and on what basis (consent, break-glass, own record); one row per patient.';

DROP FUNCTION ehrledger.access_history(pg_catalog.text);
DROP FUNCTION ehrledger._access_history(pg_catalog.name, pg_catalog.text);
CREATE FUNCTION ehrledger._access_history(caller pg_catalog.name, patient pg_catalog.text,
                                          OUT event_seq pg_catalog.int8, OUT at pg_catalog.timestamptz,
                                          OUT actor pg_catalog.text, OUT pg_role pg_catalog.name,
                                          OUT action pg_catalog.text, OUT tbl pg_catalog.regclass,
                                          OUT basis pg_catalog.text, OUT detail pg_catalog.text,
                                          OUT client_addr pg_catalog.inet)
    RETURNS SETOF record
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    me record;
BEGIN
    IF _access_history.patient IS NULL THEN
        RAISE EXCEPTION 'patient must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT * INTO me FROM ehrledger._actor_of(caller);
    IF me.actor_id IS DISTINCT FROM _access_history.patient AND me.role IS DISTINCT FROM 'auditor'
       AND NOT COALESCE((SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = caller), false) THEN
        RAISE EXCEPTION 'only patient "%" itself or an auditor may read its access history', _access_history.patient
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN QUERY
        SELECT e.ledger_seq, e.at, e.actor, e.pg_role, e.action, r.relid, p.basis, e.detail, e.client_addr
          FROM ehrledger.access_event e
          LEFT JOIN ehrledger.registered_table r ON r.table_id = e.table_id
         CROSS JOIN LATERAL ROWS FROM (pg_catalog.unnest(e.patients), pg_catalog.unnest(e.bases)) AS p(patient, basis)
         WHERE e.patients OPERATOR(pg_catalog.@>) ARRAY[_access_history.patient] AND p.patient = _access_history.patient
         ORDER BY e.ledger_seq;
END
$$;

CREATE FUNCTION ehrledger.access_history(patient pg_catalog.text,
                                         OUT event_seq pg_catalog.int8, OUT at pg_catalog.timestamptz,
                                         OUT actor pg_catalog.text, OUT pg_role pg_catalog.name,
                                         OUT action pg_catalog.text, OUT tbl pg_catalog.regclass,
                                         OUT basis pg_catalog.text, OUT detail pg_catalog.text,
                                         OUT client_addr pg_catalog.inet)
    RETURNS SETOF record
    AS 'MODULE_PATHNAME', 'ehrledger_with_caller'
    LANGUAGE C STABLE
    SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION ehrledger.access_history(pg_catalog.text) IS
    'Who read or changed a patient''s rows, when, and on what basis; for the patient itself or an auditor.';

REVOKE ALL ON FUNCTION ehrledger._role_oid(pg_catalog.name), ehrledger._lock_actors(),
    ehrledger._log_access(pg_catalog.timestamptz, pg_catalog.text, pg_catalog.name, pg_catalog.text, pg_catalog.int4,
                          pg_catalog.text[], pg_catalog.text[], pg_catalog.text, pg_catalog.inet),
    ehrledger._access_history(pg_catalog.name, pg_catalog.text),
    ehrledger._check_paper(pg_catalog.name, pg_catalog.text, pg_catalog.text, pg_catalog.text, pg_catalog.bytea, pg_catalog.text),
    ehrledger.map_role(pg_catalog.text, pg_catalog.name),
    ehrledger._grant_consent(pg_catalog.name, pg_catalog.text, pg_catalog.text, pg_catalog.text, pg_catalog.text, pg_catalog.timestamptz, pg_catalog.bytea, pg_catalog.text[], pg_catalog.text),
    ehrledger._revoke_consent(pg_catalog.name, pg_catalog.int8, pg_catalog.bytea, pg_catalog.text),
    ehrledger._permitted_patients(pg_catalog.text, pg_catalog.int4, pg_catalog.text),
    ehrledger._consent_table(pg_catalog.int4),
    ehrledger._access_event(pg_catalog.name, pg_catalog.int8)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    ehrledger.consent_payload(pg_catalog.text, pg_catalog.text, pg_catalog.text, pg_catalog.text, pg_catalog.timestamptz, pg_catalog.text[]),
    ehrledger.grant_consent(pg_catalog.text, pg_catalog.text, pg_catalog.text, pg_catalog.text, pg_catalog.timestamptz, pg_catalog.bytea, pg_catalog.text[], pg_catalog.text),
    ehrledger.revoke_consent(pg_catalog.int8, pg_catalog.bytea, pg_catalog.text),
    ehrledger.access_event(pg_catalog.int8),
    ehrledger.access_history(pg_catalog.text)
    TO PUBLIC;


-- Section: sealing and locks.

-- Finality of one block is decided under a row lock on that block, not an
-- advisory lock: see ehrledger._to_final() in the network's states
-- section.


-- Section: verification core.  Proofs and exports carry what a verifier
-- needs to read a row's encoding and to know the table's name, and that is
-- itself in the ledger: each table is enrolled, in the chain that seals
-- its rows, with its name and the decoders of its columns
-- (docs/format.md §19).

-- Enrolments, written by the sealer (ehrledger._enrol_tables()) into the
-- block it seals: when a table enters this node's chain, and whenever its
-- name or its columns change.
CREATE TABLE ehrledger.enrolled_table (
    table_id    pg_catalog.int4 NOT NULL,
    name        pg_catalog.text NOT NULL,
    columns     pg_catalog.jsonb NOT NULL,
    event       pg_catalog.text NOT NULL
);
COMMENT ON TABLE ehrledger.enrolled_table IS
    'Each ledger table''s name and column decoders, ledgered: what binds a table name to its table_id in proofs and exports (docs/format.md §19).';
SELECT pg_catalog.pg_extension_config_dump('ehrledger.enrolled_table', '');
SELECT ehrledger._attach('ehrledger.enrolled_table', 2000000011, 'append_only', NULL, NULL, true, salted => false);
CREATE INDEX ON ehrledger.enrolled_table (table_id, ledger_seq);

-- The columns a table's encodings may hold: [{"name", "type", "decode"}].
CREATE FUNCTION ehrledger._encoded_columns(tbl pg_catalog.regclass) RETURNS pg_catalog.jsonb
    AS 'MODULE_PATHNAME', 'ehrledger_encoded_columns'
    LANGUAGE C STABLE STRICT
    SET search_path = pg_catalog, pg_temp;

-- Enrols, in this node's chain, every ledger table that it has not
-- enrolled yet or whose name or columns changed since; called by the
-- sealer in its transaction.  Returns how many it enrolled.
CREATE FUNCTION ehrledger._enrol_tables() RETURNS pg_catalog.int4
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    since   pg_catalog.int8;
    n       pg_catalog.int4;
BEGIN
    -- Enrolments of an earlier chain (before a restore on another node)
    -- are not in this one: only this chain's own count.
    since := COALESCE((SELECT b.first_seq FROM ehrledger.block b
                        WHERE b.origin = ehrledger.node_name() AND b.height = 1),
                      (SELECT pg_catalog.max(b.last_seq) + 1 FROM ehrledger.block b
                        WHERE b.origin IN (SELECT k.origin FROM ehrledger.node_key k)),
                      1);
    INSERT INTO ehrledger.enrolled_table (table_id, name, columns, event)
    SELECT t.table_id, t.name, t.columns, CASE WHEN e.table_id IS NULL THEN 'enrolled' ELSE 'changed' END
      FROM (SELECT r.table_id, pg_catalog.format('%I.%I', n.nspname, c.relname) AS name,
                   ehrledger._encoded_columns(r.relid) AS columns
              FROM ehrledger.registered_table r
              JOIN pg_catalog.pg_class c ON c.oid = r.relid
              JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
             WHERE r.retired_at IS NULL) t
      LEFT JOIN LATERAL (SELECT x.table_id, x.name, x.columns FROM ehrledger.enrolled_table x
                          WHERE x.table_id = t.table_id AND x.ledger_seq >= since
                          ORDER BY x.ledger_seq DESC LIMIT 1) e ON true
     WHERE e.table_id IS NULL OR e.name <> t.name OR e.columns <> t.columns
     ORDER BY t.table_id;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

-- A row version as it was sealed: its canonical encoding read back by the
-- decoder ehrledger-verify uses (an error if it is not what was sealed).
CREATE FUNCTION ehrledger.sealed_row(tbl pg_catalog.regclass, ledger_seq pg_catalog.int8)
    RETURNS pg_catalog.jsonb
    AS 'MODULE_PATHNAME', 'ehrledger_sealed_row'
    LANGUAGE C STABLE STRICT
    SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION ehrledger.sealed_row(pg_catalog.regclass, pg_catalog.int8) IS
    'A sealed row version as it was sealed, decoded from its canonical encoding (docs/format.md §19); values of types without a decoder as {"type", "hex"}.';

-- The checks ehrledger-verify runs offline, run here by the same code
-- (src/core/check.c) on documents given as text: one row, verdict 'valid',
-- 'invalid' or 'unusable', and what was proven or why not.  trusted_key
-- pins the node key (--key); members pins the network's hospitals
-- ({"name": "hex key", ...}, --member).
CREATE FUNCTION ehrledger.check_digest(digest pg_catalog.text,
                                       trusted_key pg_catalog.bytea DEFAULT NULL,
                                       members pg_catalog.jsonb DEFAULT NULL,
                                       OUT verdict pg_catalog.text, OUT detail pg_catalog.text)
    AS 'MODULE_PATHNAME', 'ehrledger_check_digest'
    LANGUAGE C IMMUTABLE
    SET search_path = pg_catalog, pg_temp;
CREATE FUNCTION ehrledger.check_proof(proof pg_catalog.text, digest pg_catalog.text,
                                      trusted_key pg_catalog.bytea DEFAULT NULL,
                                      members pg_catalog.jsonb DEFAULT NULL,
                                      OUT verdict pg_catalog.text, OUT detail pg_catalog.text)
    AS 'MODULE_PATHNAME', 'ehrledger_check_proof'
    LANGUAGE C IMMUTABLE
    SET search_path = pg_catalog, pg_temp;
CREATE FUNCTION ehrledger.check_consistency(proof pg_catalog.text, old_digest pg_catalog.text,
                                            new_digest pg_catalog.text,
                                            trusted_key pg_catalog.bytea DEFAULT NULL,
                                            members pg_catalog.jsonb DEFAULT NULL,
                                            OUT verdict pg_catalog.text, OUT detail pg_catalog.text)
    AS 'MODULE_PATHNAME', 'ehrledger_check_consistency'
    LANGUAGE C IMMUTABLE
    SET search_path = pg_catalog, pg_temp;
CREATE FUNCTION ehrledger.check_export(export pg_catalog.text, digest pg_catalog.text,
                                       trusted_key pg_catalog.bytea DEFAULT NULL,
                                       members pg_catalog.jsonb DEFAULT NULL,
                                       OUT verdict pg_catalog.text, OUT detail pg_catalog.text)
    AS 'MODULE_PATHNAME', 'ehrledger_check_export'
    LANGUAGE C IMMUTABLE
    SET search_path = pg_catalog, pg_temp;
CREATE FUNCTION ehrledger.check_certificate(certificate pg_catalog.text,
                                            members pg_catalog.jsonb DEFAULT NULL,
                                            OUT verdict pg_catalog.text, OUT detail pg_catalog.text)
    AS 'MODULE_PATHNAME', 'ehrledger_check_certificate'
    LANGUAGE C IMMUTABLE
    SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION ehrledger.check_digest(pg_catalog.text, pg_catalog.bytea, pg_catalog.jsonb) IS
    'Checks a digest (and its certificate) as ehrledger-verify does, by the same code: verdict valid, invalid or unusable, and why.';
COMMENT ON FUNCTION ehrledger.check_proof(pg_catalog.text, pg_catalog.text, pg_catalog.bytea, pg_catalog.jsonb) IS
    'Checks an inclusion proof against a digest as ehrledger-verify does, by the same code: verdict, and the row as sealed or why not.';
COMMENT ON FUNCTION ehrledger.check_consistency(pg_catalog.text, pg_catalog.text, pg_catalog.text, pg_catalog.bytea, pg_catalog.jsonb) IS
    'Checks a consistency proof against two digests as ehrledger-verify does, by the same code.';
COMMENT ON FUNCTION ehrledger.check_export(pg_catalog.text, pg_catalog.text, pg_catalog.bytea, pg_catalog.jsonb) IS
    'Checks a table export (JSON Lines, as text) against a digest as ehrledger-verify does, by the same code.';
COMMENT ON FUNCTION ehrledger.check_certificate(pg_catalog.text, pg_catalog.jsonb) IS
    'Checks a certificate (docs/format.md §18) as ehrledger-verify does, with the pinned members if given.';

-- The network's rules, once, in src/core: an acknowledgment, a header its
-- origin signed, and a certificate (docs/format.md §18).  The functions that
-- build certificates, finalize blocks and admit acknowledgments call them
-- instead of composing signature checks of their own.
CREATE FUNCTION ehrledger._ack_valid(origin pg_catalog.text, height pg_catalog.int8,
                                     block_hash pg_catalog.bytea, public_key pg_catalog.bytea,
                                     signature pg_catalog.bytea) RETURNS pg_catalog.bool
    AS 'MODULE_PATHNAME', 'ehrledger_ack_valid'
    LANGUAGE C IMMUTABLE STRICT
    SET search_path = pg_catalog, pg_temp;
CREATE FUNCTION ehrledger._origin_header_valid(origin pg_catalog.text, height pg_catalog.int8,
                                               block_hash pg_catalog.bytea, header pg_catalog.bytea,
                                               origin_signature pg_catalog.bytea,
                                               origin_key pg_catalog.bytea) RETURNS pg_catalog.bool
    AS 'MODULE_PATHNAME', 'ehrledger_origin_header_valid'
    LANGUAGE C IMMUTABLE STRICT
    SET search_path = pg_catalog, pg_temp;
CREATE FUNCTION ehrledger._certificate_holds(certificate pg_catalog.text) RETURNS pg_catalog.bool
    AS 'MODULE_PATHNAME', 'ehrledger_certificate_holds'
    LANGUAGE C STABLE STRICT
    SET search_path = pg_catalog, pg_temp;

CREATE OR REPLACE FUNCTION ehrledger._certificate(origin pg_catalog.text, height pg_catalog.int8)
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
                    AND ehrledger._ack_valid(a.origin, a.height, a.block_hash, m.public_key, a.signature)))
      FROM ehrledger.block b
     WHERE b.origin = _certificate.origin AND b.height = _certificate.height
$$;

COMMENT ON FUNCTION ehrledger._encoded_columns(pg_catalog.regclass) IS
    'The columns a table''s encodings may hold, with their decoders: [{"name", "type", "decode"}] (docs/format.md §19).';
COMMENT ON FUNCTION ehrledger._enrol_tables() IS
    'The sealer''s: enrols every ledger table new to this node''s chain, renamed or with new columns; returns how many.';
COMMENT ON FUNCTION ehrledger._ack_valid(pg_catalog.text, pg_catalog.int8, pg_catalog.bytea, pg_catalog.bytea, pg_catalog.bytea) IS
    'The acknowledgment rule (docs/format.md §18), from src/core: the signature of ack_message(origin, height, block_hash) with public_key.';
COMMENT ON FUNCTION ehrledger._origin_header_valid(pg_catalog.text, pg_catalog.int8, pg_catalog.bytea, pg_catalog.bytea, pg_catalog.bytea, pg_catalog.bytea) IS
    'A header its origin signed (docs/format.md §18), from src/core: it hashes to block_hash, names origin and height, carries origin_key, which signed block_hash.';
COMMENT ON FUNCTION ehrledger._certificate_holds(pg_catalog.text) IS
    'The certificate rule (docs/format.md §18), from src/core, with this node''s members'' keys and the certificate''s own quorum.';

REVOKE ALL ON FUNCTION ehrledger._encoded_columns(pg_catalog.regclass), ehrledger._enrol_tables(),
    ehrledger._ack_valid(pg_catalog.text, pg_catalog.int8, pg_catalog.bytea, pg_catalog.bytea, pg_catalog.bytea),
    ehrledger._origin_header_valid(pg_catalog.text, pg_catalog.int8, pg_catalog.bytea, pg_catalog.bytea,
                                   pg_catalog.bytea, pg_catalog.bytea),
    ehrledger._certificate_holds(pg_catalog.text)
    FROM PUBLIC;
GRANT SELECT ON ehrledger.enrolled_table TO PUBLIC;


-- Section: FHIR.
--
-- FHIR R4 output that servers and audit repositories take as it is:
-- literal references (Patient/ID, Practitioner/ID, Consent/ID) under
-- ehrledger.fhir_base_url, identifiers under the hospital's own systems
-- (ehrledger.fhir_identifier_system), AuditEvents after IHE's Basic Audit
-- Log Patterns (BALP), Consents with their signature or paper form,
-- Provenance with the author's signature and the ledger's inclusion proof,
-- and transaction Bundles.  test/fhir/ validates all of it.

-- An instant as FHIR writes it (UTC); NULL for NULL and the infinities,
-- which FHIR expresses by leaving the element out.
CREATE FUNCTION ehrledger._fhir_instant(ts pg_catalog.timestamptz) RETURNS pg_catalog.text
    LANGUAGE sql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN pg_catalog.isfinite(ts)
                     AND pg_catalog.date_part('year', ts AT TIME ZONE 'UTC') BETWEEN 1 AND 9999
                THEN pg_catalog.to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') END
$$;

-- The absolute URL of Type/id on the hospital's FHIR server, or the
-- relative one when no base is set.
CREATE FUNCTION ehrledger._fhir_url(path pg_catalog.text) RETURNS pg_catalog.text
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN COALESCE(pg_catalog.current_setting('ehrledger.fhir_base_url', true), '') = '' THEN path
                ELSE pg_catalog.current_setting('ehrledger.fhir_base_url') || '/' || path END
$$;

-- The hospital's identifier system for one kind of thing (actor, table,
-- node, ledger-row, break-glass, consent, category, purpose, pg-role); NULL
-- while ehrledger.fhir_identifier_system is not set.
CREATE FUNCTION ehrledger._fhir_system(kind pg_catalog.text) RETURNS pg_catalog.text
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN COALESCE(pg_catalog.current_setting('ehrledger.fhir_identifier_system', true), '') <> ''
                THEN pg_catalog.current_setting('ehrledger.fhir_identifier_system') || '/' || kind END
$$;

-- A Reference: literal (Type/id) when the value is a valid FHIR id, always
-- with its type, identifier and display.
CREATE FUNCTION ehrledger._fhir_ref(rtype pg_catalog.text, id pg_catalog.text, kind pg_catalog.text,
                                    display pg_catalog.text) RETURNS pg_catalog.jsonb
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
        'reference', CASE WHEN id ~ '^[A-Za-z0-9.-]{1,64}$' AND rtype IN ('Patient', 'Practitioner', 'Consent', 'AuditEvent')
                          THEN ehrledger._fhir_url(rtype || '/' || id) END,
        'type', rtype,
        'identifier', pg_catalog.jsonb_build_object('system', ehrledger._fhir_system(kind), 'value', id),
        'display', display))
$$;

-- An actor as a Reference: patients (registered or not) are Patients,
-- staff are Practitioners.
CREATE FUNCTION ehrledger._fhir_actor(actor pg_catalog.text, role pg_catalog.text) RETURNS pg_catalog.jsonb
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT ehrledger._fhir_ref(CASE WHEN role IS NULL OR role = 'patient' THEN 'Patient' ELSE 'Practitioner' END,
                               actor, 'actor', actor)
$$;

-- This node: the device that records, serves and decides.
CREATE FUNCTION ehrledger._fhir_node() RETURNS pg_catalog.jsonb
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT ehrledger._fhir_ref('Device', ehrledger.node_name(), 'node', 'ehrledger node ' || ehrledger.node_name())
$$;

CREATE FUNCTION ehrledger._fhir_coding(system pg_catalog.text, code pg_catalog.text, display pg_catalog.text)
    RETURNS pg_catalog.jsonb
    LANGUAGE sql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object('system', system, 'code', code, 'display', display))
$$;

-- Generated narrative: one paragraph of escaped text.
CREATE FUNCTION ehrledger._fhir_text(body pg_catalog.text) RETURNS pg_catalog.jsonb
    LANGUAGE sql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.jsonb_build_object('status', 'generated',
        'div', '<div xmlns="http://www.w3.org/1999/xhtml"><p>'
               || pg_catalog.replace(pg_catalog.replace(pg_catalog.replace(pg_catalog.replace(pg_catalog.replace(
                      pg_catalog.regexp_replace(body, '[\x01-\x08\x0b\x0c\x0e-\x1f\x7f]', '', 'g'),
                      '&', '&amp;'), '<', '&lt;'), '>', '&gt;'), '"', '&quot;'), '''', '&#39;')
               || '</p></div>')
$$;

-- base64 without the line breaks encode() puts in.
CREATE FUNCTION ehrledger._fhir_base64(data pg_catalog.bytea) RETURNS pg_catalog.text
    LANGUAGE sql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.translate(pg_catalog.encode(data, 'base64'), E'\n', '')
$$;

-- A purpose of use as a Coding of HL7 v3 ActReason (the PurposeOfUse value
-- set) with its display; a purpose of the hospital's own as a code of its
-- purpose system.
CREATE OR REPLACE FUNCTION ehrledger._purpose_coding(purpose pg_catalog.text)
    RETURNS pg_catalog.jsonb
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN x.code IS NULL
                THEN ehrledger._fhir_coding(ehrledger._fhir_system('purpose'), purpose, purpose)
                ELSE ehrledger._fhir_coding('http://terminology.hl7.org/CodeSystem/v3-ActReason', x.code, x.display) END
      FROM (SELECT * FROM (VALUES ('treatment', 'TREAT', 'treatment'),
                                  ('emergency', 'ETREAT', 'Emergency Treatment'),
                                  ('research', 'HRESCH', 'healthcare research'),
                                  ('payment', 'HPAYMT', 'healthcare payment'),
                                  ('operations', 'HOPERAT', 'healthcare operations'),
                                  ('patient-request', 'PATRQT', 'patient requested')) v(word, code, display)
             WHERE v.word = purpose
            UNION ALL SELECT NULL, NULL, NULL LIMIT 1) x
$$;

-- A list of resources as a Bundle: 'collection' (the plain list), or
-- 'transaction' / 'batch' that a FHIR server processes as it is (PUT of each
-- resource under its id, so that sending twice changes nothing).  Full URLs
-- are absolute under ehrledger.fhir_base_url, or name-based urn:uuids
-- without it.  An empty list has no entry element (JSON FHIR has no empty
-- arrays).
CREATE FUNCTION ehrledger._fhir_bundle(resources pg_catalog.jsonb, bundle pg_catalog.text) RETURNS pg_catalog.jsonb
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
        'resourceType', 'Bundle',
        'type', bundle,
        'timestamp', ehrledger._fhir_instant(pg_catalog.now()),
        'entry', (SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
                      'fullUrl', CASE WHEN COALESCE(pg_catalog.current_setting('ehrledger.fhir_base_url', true), '') <> ''
                                      THEN ehrledger._fhir_url((r->>'resourceType') || '/' || (r->>'id'))
                                      ELSE 'urn:uuid:' || pg_catalog.regexp_replace(
                                               overlay(overlay(
                                                   pg_catalog.md5(ehrledger.node_name() || '/' || (r->>'resourceType') || '/' || (r->>'id'))
                                                   PLACING '3' FROM 13 FOR 1) PLACING '8' FROM 17 FOR 1),
                                               '^(.{8})(.{4})(.{4})(.{4})(.{12})$', '\1-\2-\3-\4-\5') END,
                      'resource', r,
                      'request', CASE WHEN bundle IN ('transaction', 'batch') THEN pg_catalog.jsonb_build_object(
                                      'method', 'PUT', 'url', (r->>'resourceType') || '/' || (r->>'id')) END)) ORDER BY n)
                      FROM pg_catalog.jsonb_array_elements(resources) WITH ORDINALITY AS e(r, n))))
$$;

-- The bundle argument of the FHIR functions: NULL (or 'collection' for a
-- list), 'collection', 'transaction' or 'batch'.
CREATE FUNCTION ehrledger._fhir_check_bundle(bundle pg_catalog.text) RETURNS void
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF bundle IS NOT NULL AND bundle NOT IN ('collection', 'transaction', 'batch') THEN
        RAISE EXCEPTION 'unknown bundle type "%"', bundle
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use NULL for the plain output, or ''collection'', ''transaction'' or ''batch''.';
    END IF;
END
$$;


-- Consent -----------------------------------------------------------------

-- A consent as an R4 Consent: the patient's privacy consent allowing the
-- grantee (the recipient) to read (access) or write (correct) rows in its
-- scope (provision.class: a table or category of the hospital's) for its
-- purpose, from the grant to its revocation or end.  How it was given is
-- shown: the terms the patient signed (sourceAttachment, with the
-- signature; the ledger checked it at the grant, verification), or the
-- paper form a registrar recorded.  The same visibility as
-- ehrledger.consents: the patient, the grantee, auditors, admins and
-- superusers.
CREATE FUNCTION ehrledger._consent_as_fhir(caller pg_catalog.name, consent_id pg_catalog.int8, bundle pg_catalog.text)
    RETURNS pg_catalog.jsonb
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    me       record;
    g        ehrledger.consent_event%ROWTYPE;
    r        ehrledger.consent_event%ROWTYPE;
    acts     pg_catalog.text[];
    ends     pg_catalog.timestamptz;
    active   pg_catalog.bool;
    grantee_role pg_catalog.text;
    kind     pg_catalog.text;
    how      pg_catalog.text;
    terms    pg_catalog.bytea;
    res      pg_catalog.jsonb;
BEGIN
    PERFORM ehrledger._fhir_check_bundle(bundle);
    IF consent_id IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT * INTO g FROM ehrledger.consent_event e
     WHERE e.consent_id = _consent_as_fhir.consent_id AND e.action = 'grant';
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    SELECT * INTO me FROM ehrledger._actor_of(caller);
    IF NOT (COALESCE(me.actor_id IN (g.patient, g.grantee), false) OR COALESCE(me.role IN ('auditor', 'admin'), false)
            OR COALESCE((SELECT x.rolsuper FROM pg_catalog.pg_roles x WHERE x.rolname = caller), false)) THEN
        RETURN NULL;
    END IF;
    SELECT * INTO r FROM ehrledger.consent_event e
     WHERE e.consent_id = _consent_as_fhir.consent_id AND e.action = 'revoke';
    acts := COALESCE(g.actions, '{read}');
    ends := LEAST(r.at, g.valid_until);
    active := r.at IS NULL AND (g.valid_until IS NULL OR g.valid_until > pg_catalog.clock_timestamp());
    SELECT a.role INTO grantee_role FROM ehrledger.actors a WHERE a.actor_id = g.grantee;
    kind := CASE WHEN g.scope = '*' THEN NULL WHEN g.scope_table IS NOT NULL THEN 'table' ELSE 'category' END;
    how := CASE WHEN g.paper_form IS NOT NULL
                THEN pg_catalog.format('on paper (form %s), recorded by registrar %s', g.paper_form, COALESCE(g.by_actor, g.by_role))
                WHEN g.signature IS NOT NULL THEN 'with the patient''s Ed25519 signature, checked at the grant'
                ELSE 'by the patient''s own database role' END;
    IF g.signature IS NOT NULL AND g.actions IS NOT NULL THEN
        terms := ehrledger.consent_payload(g.patient, g.grantee, g.scope, g.purpose, g.valid_until, g.actions);
    END IF;

    res := pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
        'resourceType', 'Consent',
        'id', g.consent_id::pg_catalog.text,
        'text', ehrledger._fhir_text(pg_catalog.format(
                    'Consent %s: patient %s allows %s to %s %s for %s, from %s%s; given %s.%s',
                    g.consent_id, g.patient, g.grantee, pg_catalog.array_to_string(acts, ' and '),
                    CASE WHEN g.scope = '*' THEN 'all of its records' ELSE 'its records in ' || kind || ' ' || g.scope END,
                    g.purpose, ehrledger._fhir_instant(g.at),
                    COALESCE(' until ' || ehrledger._fhir_instant(g.valid_until), ''),
                    how,
                    CASE WHEN r.at IS NOT NULL THEN pg_catalog.format(' Revoked %s %s.', ehrledger._fhir_instant(r.at),
                             CASE WHEN r.paper_form IS NOT NULL THEN 'on paper (form ' || r.paper_form || ')'
                                  WHEN r.signature IS NOT NULL THEN 'with the patient''s signature'
                                  ELSE 'by the patient''s own database role' END)
                         WHEN NOT active THEN ' Expired.' ELSE '' END)),
        'identifier', CASE WHEN ehrledger._fhir_system('consent') IS NOT NULL THEN pg_catalog.jsonb_build_array(
                          pg_catalog.jsonb_build_object('system', ehrledger._fhir_system('consent'),
                                                        'value', g.consent_id::pg_catalog.text)) END,
        'status', CASE WHEN active THEN 'active' ELSE 'inactive' END,
        'scope', pg_catalog.jsonb_build_object('coding', pg_catalog.jsonb_build_array(ehrledger._fhir_coding(
                    'http://terminology.hl7.org/CodeSystem/consentscope', 'patient-privacy', 'Privacy Consent'))),
        'category', pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object('coding', pg_catalog.jsonb_build_array(
                    ehrledger._fhir_coding('http://loinc.org', '59284-0', 'Patient Consent')))),
        'patient', ehrledger._fhir_actor(g.patient, 'patient'),
        'dateTime', ehrledger._fhir_instant(g.at),
        'performer', pg_catalog.jsonb_build_array(ehrledger._fhir_actor(g.patient, 'patient')),
        'sourceAttachment', CASE
            WHEN g.paper_form IS NOT NULL THEN pg_catalog.jsonb_build_object(
                'title', 'consent form signed on paper: ' || g.paper_form)
            WHEN g.signature IS NOT NULL THEN pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
                'contentType', CASE WHEN terms IS NOT NULL THEN 'application/octet-stream' END,
                'data', ehrledger._fhir_base64(terms),
                'title', pg_catalog.format('consent terms (%s, docs/format.md section 16) signed by patient %s with Ed25519; signature %s',
                                           CASE WHEN terms IS NOT NULL THEN 'ehrledger-consent-grant-2' ELSE 'ehrledger-consent-grant-1' END,
                                           g.patient, pg_catalog.encode(g.signature, 'hex')))) END,
        'verification', CASE WHEN g.paper_form IS NOT NULL OR g.signature IS NOT NULL THEN pg_catalog.jsonb_build_array(
                    pg_catalog.jsonb_build_object(
                        'verified', true,
                        'verifiedWith', ehrledger._fhir_actor(g.patient, 'patient'),
                        'verificationDate', ehrledger._fhir_instant(g.at))) END,
        'policyRule', pg_catalog.jsonb_build_object('coding', pg_catalog.jsonb_build_array(ehrledger._fhir_coding(
                    'http://terminology.hl7.org/CodeSystem/v3-ActCode', 'OPTIN', 'opt-in'))),
        'provision', pg_catalog.jsonb_build_object(
            'type', 'permit',
            'period', pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
                'start', ehrledger._fhir_instant(g.at),
                'end', ehrledger._fhir_instant(ends))),
            'actor', pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
                'role', pg_catalog.jsonb_build_object('coding', pg_catalog.jsonb_build_array(ehrledger._fhir_coding(
                    'http://terminology.hl7.org/CodeSystem/v3-ParticipationType', 'IRCP', 'information recipient'))),
                'reference', ehrledger._fhir_actor(g.grantee, grantee_role))),
            'action', (SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object('coding', pg_catalog.jsonb_build_array(
                            CASE a WHEN 'read' THEN ehrledger._fhir_coding('http://terminology.hl7.org/CodeSystem/consentaction', 'access', 'Access')
                                   ELSE ehrledger._fhir_coding('http://terminology.hl7.org/CodeSystem/consentaction', 'correct', 'Access and Correct') END)) ORDER BY a)
                         FROM pg_catalog.unnest(acts) a),
            'purpose', pg_catalog.jsonb_build_array(ehrledger._purpose_coding(g.purpose)),
            'class', CASE WHEN kind IS NOT NULL THEN pg_catalog.jsonb_build_array(
                          ehrledger._fhir_coding(ehrledger._fhir_system(kind), g.scope, kind || ' ' || g.scope)) END)));
    IF bundle IS NULL THEN
        RETURN res;
    END IF;
    RETURN ehrledger._fhir_bundle(pg_catalog.jsonb_build_array(res), bundle);
END
$$;

DROP FUNCTION ehrledger.consent_as_fhir(pg_catalog.int8);
CREATE FUNCTION ehrledger.consent_as_fhir(consent_id pg_catalog.int8, bundle pg_catalog.text DEFAULT NULL)
    RETURNS pg_catalog.jsonb
    AS 'MODULE_PATHNAME', 'ehrledger_with_caller'
    LANGUAGE C STABLE
    SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION ehrledger.consent_as_fhir(pg_catalog.int8, pg_catalog.text) IS
    'A consent the caller may see as a FHIR R4 Consent (NULL if it does not exist or is not the caller''s to see); with bundle => ''transaction'' (or ''batch'', ''collection'') in a Bundle.';


-- AuditEvent ----------------------------------------------------------------

-- BALP's profiles, by the canonical URL of each.
CREATE FUNCTION ehrledger._balp(profile pg_catalog.text) RETURNS pg_catalog.jsonb
    LANGUAGE sql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.jsonb_build_object('profile', pg_catalog.jsonb_build_array(
        'https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit.' || profile))
$$;

-- Percent-encoding (RFC 3986) of every UTF-8 byte of s but the unreserved
-- characters and those in keep; NULL for NULL.
CREATE FUNCTION ehrledger._fhir_pct(s pg_catalog.text, keep pg_catalog.text) RETURNS pg_catalog.text
    LANGUAGE sql IMMUTABLE STRICT
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT COALESCE(pg_catalog.string_agg(
               CASE WHEN x.c ~ '^[A-Za-z0-9._~-]$' OR pg_catalog.strpos(keep, x.c) > 0 THEN x.c
                    ELSE pg_catalog.upper(pg_catalog.regexp_replace(
                             pg_catalog.encode(pg_catalog.convert_to(x.c, 'UTF8'), 'hex'), '(..)', '%\1', 'g')) END,
               '' ORDER BY x.n), '')
      FROM pg_catalog.regexp_split_to_table(s, '') WITH ORDINALITY AS x(c, n)
$$;

-- The search a BALP PatientQuery event records for one patient of an access
-- log entry that names several, made of what the entry keeps (it keeps no
-- SQL text, which may name other patients or carry free text):
-- TABLE?patient=REFERENCE, the patient's reference as the event's patient
-- entity has it (Patient/ID, under ehrledger.fhir_base_url when set), or
-- TABLE?patient:identifier=SYSTEM|ID for a patient id that is no FHIR id
-- (\ | , $ escaped with \ as FHIR search asks; SYSTEM is empty, as the
-- identifier's, while ehrledger.fhir_identifier_system is).  TABLE is the
-- table's schema-qualified name.  Everything but unreserved characters (and
-- : / in the reference and system) is percent-encoded, so that no table or
-- patient name can pose as another parameter or another patient.
CREATE FUNCTION ehrledger._fhir_search(tbl pg_catalog.regclass, patient pg_catalog.text) RETURNS pg_catalog.text
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT ehrledger._fhir_pct(COALESCE(tbl::pg_catalog.text, ''), '') || '?'
           || CASE WHEN r.ref ? 'reference'
                   THEN 'patient=' || ehrledger._fhir_pct(r.ref->>'reference', ':/')
                   ELSE 'patient:identifier='
                        || COALESCE(ehrledger._fhir_pct(r.ref #>> '{identifier,system}', ':/'), '') || '|'
                        || ehrledger._fhir_pct(pg_catalog.regexp_replace(patient, '([\\|,$])', '\\\1', 'g'), '') END
      FROM (SELECT ehrledger._fhir_actor(patient, 'patient')) r(ref)
$$;

-- One AuditEvent of one patient's line of an access log entry (and, for an
-- access a consent allowed, the AuthZconsent event of that decision when
-- authz): the patient is the k-th of the n the entry names.  A read of one
-- patient's rows is a BALP PatientRead, a statement that read several
-- patients' rows a PatientQuery (a search).  See the README, FHIR, for which
-- profile each action follows.
CREATE FUNCTION ehrledger._fhir_audit_event(seq pg_catalog.int8, k pg_catalog.int4, n pg_catalog.int4,
                                            authz pg_catalog.bool,
                                            at pg_catalog.timestamptz, actor pg_catalog.text,
                                            actor_role pg_catalog.text, pg_role pg_catalog.name,
                                            action pg_catalog.text, tbl pg_catalog.regclass,
                                            patient pg_catalog.text, basis pg_catalog.text,
                                            detail pg_catalog.text, client_addr pg_catalog.inet)
    RETURNS pg_catalog.jsonb
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    dcm  pg_catalog.text := 'http://dicom.nema.org/resources/ontology/DCM';
    part pg_catalog.text := 'http://terminology.hl7.org/CodeSystem/v3-ParticipationType';
    basis_consent pg_catalog.int8;
    glass_id   pg_catalog.int8;
    glass_why  pg_catalog.text;
    purpose    pg_catalog.jsonb;
    who        pg_catalog.jsonb;
    who_type   pg_catalog.text;
    profile    pg_catalog.text;
    data_what  pg_catalog.jsonb;
    node       pg_catalog.jsonb := ehrledger._fhir_node();
    client     pg_catalog.jsonb;
    server     pg_catalog.jsonb;
    entities   pg_catalog.jsonb;
    m          pg_catalog.text[];
    search     pg_catalog.bool := action = 'read' AND n > 1 AND NOT authz;
BEGIN
    IF basis ~ '^consent [0-9]+' THEN
        basis_consent := (pg_catalog.regexp_match(basis, '^consent ([0-9]+)'))[1]::pg_catalog.int8;
    ELSIF basis ~ '^break-glass [0-9]+: ' THEN
        m := pg_catalog.regexp_match(basis, '^break-glass ([0-9]+): (.*)$');
        glass_id := m[1]::pg_catalog.int8;
        glass_why := m[2];
    END IF;

    -- Why: the consent's purpose, emergency treatment under break-glass,
    -- the patient's own request for its own record and its consents.
    purpose := pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object('coding', pg_catalog.jsonb_build_array(
        CASE WHEN basis_consent IS NOT NULL
             THEN ehrledger._purpose_coding((SELECT g.purpose FROM ehrledger.consent_event g
                                              WHERE g.consent_id = basis_consent AND g.action = 'grant'))
             WHEN glass_id IS NOT NULL OR action = 'break_glass' THEN ehrledger._purpose_coding('emergency')
             ELSE ehrledger._purpose_coding('patient-request') END)));

    -- Who: the actor; a grant or revocation presented with the patient's
    -- signature is the patient's own act, whoever presented it.
    IF action IN ('grant', 'revoke') AND basis = 'patient signature' THEN
        who := ehrledger._fhir_actor(patient, 'patient');
    ELSIF actor IS NOT NULL THEN
        who := ehrledger._fhir_actor(actor, actor_role);
    END IF;
    who_type := CASE WHEN authz OR action IN ('read', 'break_glass') THEN 'IRCP'
                     WHEN basis = 'paper form' THEN 'INF' ELSE 'AUT' END;

    -- A read's client is where the data goes (Destination Role ID); a
    -- search's, as in DICOM and BALP's Query, where the query comes from
    -- (Source Role ID), and the server the reverse.
    client := pg_catalog.jsonb_build_object(
        'type', pg_catalog.jsonb_build_object('coding', pg_catalog.jsonb_build_array(
            CASE WHEN authz OR action = 'break_glass' THEN ehrledger._fhir_coding(dcm, '110150', 'Application')
                 WHEN action = 'read' AND NOT search THEN ehrledger._fhir_coding(dcm, '110152', 'Destination Role ID')
                 ELSE ehrledger._fhir_coding(dcm, '110153', 'Source Role ID') END)),
        'who', ehrledger._fhir_ref(NULL, pg_role, 'pg-role', 'database role ' || pg_role),
        'requestor', false);
    -- The client's IP address (network type 2), when it connected over TCP.
    IF client_addr IS NOT NULL THEN
        client := client || pg_catalog.jsonb_build_object('network', pg_catalog.jsonb_build_object(
            'address', pg_catalog.host(client_addr), 'type', '2'));
    END IF;
    server := pg_catalog.jsonb_build_object(
        'type', pg_catalog.jsonb_build_object('coding', pg_catalog.jsonb_build_array(
            CASE WHEN authz THEN ehrledger._fhir_coding('http://terminology.hl7.org/CodeSystem/extra-security-role-type',
                                                        'authserver', 'authorization server')
                 WHEN action = 'read' AND NOT search THEN ehrledger._fhir_coding(dcm, '110153', 'Source Role ID')
                 ELSE ehrledger._fhir_coding(dcm, '110152', 'Destination Role ID') END)),
        'who', node,
        'requestor', false,
        'network', CASE WHEN NOT authz THEN pg_catalog.jsonb_build_object('address', ehrledger.node_name(), 'type', '1') END);

    entities := pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
        'what', ehrledger._fhir_actor(patient, 'patient'),
        'type', ehrledger._fhir_coding('http://terminology.hl7.org/CodeSystem/audit-entity-type', '1', 'Person'),
        'role', ehrledger._fhir_coding('http://terminology.hl7.org/CodeSystem/object-role', '1', 'Patient')));
    IF search THEN
        -- What was searched: this patient's rows of the table, as a FHIR
        -- search; never the statement's text, nor the other patients (this
        -- event is the patient's to see).
        entities := entities || pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
            'type', ehrledger._fhir_coding('http://terminology.hl7.org/CodeSystem/audit-entity-type', '2', 'System Object'),
            'role', ehrledger._fhir_coding('http://terminology.hl7.org/CodeSystem/object-role', '24', 'Query'),
            'description', pg_catalog.format(
                'synthesized from access log entry %s (ehrledger keeps no SQL text): one statement read rows of %s of several patients; this event shows patient %s''s part only',
                seq, COALESCE(tbl::pg_catalog.text, 'an unknown table'), patient),
            'query', ehrledger._fhir_base64(pg_catalog.convert_to(ehrledger._fhir_search(tbl, patient), 'UTF8'))));
    ELSIF NOT authz AND action <> 'break_glass' THEN
        IF action IN ('grant', 'revoke') THEN
            data_what := ehrledger._fhir_ref('Consent', (pg_catalog.regexp_match(detail, '^consent ([0-9]+)'))[1], 'consent',
                                             'consent ' || (pg_catalog.regexp_match(detail, '^consent ([0-9]+)'))[1]);
        ELSE
            data_what := ehrledger._fhir_ref(NULL, tbl::pg_catalog.text, 'table', 'rows of ' || tbl::pg_catalog.text);
        END IF;
        entities := entities || pg_catalog.jsonb_build_array(pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
            'what', data_what,
            'type', ehrledger._fhir_coding('http://terminology.hl7.org/CodeSystem/audit-entity-type', '2', 'System Object'),
            'role', ehrledger._fhir_coding('http://terminology.hl7.org/CodeSystem/object-role', '4', 'Domain Resource'),
            'description', detail)));
    END IF;
    IF basis_consent IS NOT NULL THEN
        entities := entities || pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
            'what', ehrledger._fhir_ref('Consent', basis_consent::pg_catalog.text, 'consent', 'consent ' || basis_consent),
            'type', ehrledger._fhir_coding('http://hl7.org/fhir/resource-types', 'Consent', 'Consent')));
    END IF;
    IF action = 'break_glass' THEN
        m := pg_catalog.regexp_match(basis, '^break-glass ([0-9]+): (.*)$');
        glass_id := m[1]::pg_catalog.int8;
        glass_why := m[2];
    END IF;
    -- BALP tells a read's or change's entities apart by their type alone:
    -- its one System Object is the data (or the query).  The break-glass
    -- there is Other; the break-glass alert's own is a System Object.
    IF glass_id IS NOT NULL AND NOT authz THEN
        entities := entities || pg_catalog.jsonb_build_array(pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
            'what', ehrledger._fhir_ref(NULL, glass_id::pg_catalog.text, 'break-glass', 'break-glass ' || glass_id),
            'type', CASE WHEN action = 'break_glass'
                         THEN ehrledger._fhir_coding('http://terminology.hl7.org/CodeSystem/audit-entity-type', '2', 'System Object')
                         ELSE ehrledger._fhir_coding('http://terminology.hl7.org/CodeSystem/audit-entity-type', '4', 'Other') END,
            'role', ehrledger._fhir_coding('http://terminology.hl7.org/CodeSystem/object-role', '13', 'Security Resource'),
            'description', glass_why,
            'detail', CASE WHEN action = 'break_glass' AND detail IS NOT NULL THEN pg_catalog.jsonb_build_array(
                          pg_catalog.jsonb_build_object('type', 'open', 'valueString', detail)) END)));
    END IF;

    profile := CASE WHEN authz THEN 'AuthZconsent'
                    WHEN search THEN 'PatientQuery'
                    WHEN action = 'read' THEN 'PatientRead'
                    WHEN action IN ('insert', 'grant') THEN 'PatientCreate'
                    WHEN action IN ('update', 'revoke') THEN 'PatientUpdate'
                    WHEN action = 'delete' THEN 'PatientDelete' END;

    RETURN pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
        'resourceType', 'AuditEvent',
        'id', seq || '-' || k || CASE WHEN authz THEN '-authz' ELSE '' END,
        'meta', CASE WHEN profile IS NOT NULL THEN ehrledger._balp(profile) END,
        'text', ehrledger._fhir_text(pg_catalog.format('%s %s: %s%s, patient %s, on the basis %s%s.',
                    ehrledger._fhir_instant(at),
                    CASE WHEN authz THEN 'access permitted by ' || 'consent ' || basis_consent
                         WHEN search THEN 'search (one statement read the rows of several patients)'
                         ELSE pg_catalog.replace(action, '_', '-') END,
                    COALESCE(actor, 'no actor') || ' (database role ' || pg_role || ')',
                    COALESCE(', ' || tbl::pg_catalog.text, ''), patient, basis,
                    COALESCE('; ' || detail, ''))),
        'type', CASE WHEN authz OR action = 'break_glass' THEN ehrledger._fhir_coding(dcm, '110113', 'Security Alert')
                     ELSE ehrledger._fhir_coding('http://terminology.hl7.org/CodeSystem/audit-event-type', 'rest', 'RESTful Operation') END,
        'subtype', pg_catalog.jsonb_build_array(CASE
                     WHEN authz THEN ehrledger._fhir_coding('https://profiles.ihe.net/ITI/BALP/CodeSystem/AuthZsubType',
                                                            'AuthZ-Consent', 'Authorization Decision using Roles and Consent')
                     WHEN action = 'break_glass' THEN ehrledger._fhir_coding(dcm, '110127', 'Emergency Override Started')
                     WHEN search THEN ehrledger._fhir_coding('http://hl7.org/fhir/restful-interaction', 'search', 'search')
                     ELSE ehrledger._fhir_coding('http://hl7.org/fhir/restful-interaction',
                              CASE action WHEN 'read' THEN 'read' WHEN 'insert' THEN 'create' WHEN 'grant' THEN 'create'
                                          WHEN 'delete' THEN 'delete' ELSE 'update' END,
                              CASE action WHEN 'read' THEN 'read' WHEN 'insert' THEN 'create' WHEN 'grant' THEN 'create'
                                          WHEN 'delete' THEN 'delete' ELSE 'update' END) END),
        'action', CASE WHEN authz OR action = 'break_glass' OR search THEN 'E'
                       WHEN action = 'read' THEN 'R' WHEN action IN ('insert', 'grant') THEN 'C'
                       WHEN action = 'delete' THEN 'D' ELSE 'U' END,
        'recorded', ehrledger._fhir_instant(at),
        'outcome', '0',
        'purposeOfEvent', purpose,
        'agent', pg_catalog.jsonb_build_array(client, server)
                 || CASE WHEN who IS NULL THEN '[]'::pg_catalog.jsonb ELSE pg_catalog.jsonb_build_array(pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
                        'type', pg_catalog.jsonb_build_object('coding', pg_catalog.jsonb_build_array(
                            CASE who_type WHEN 'IRCP' THEN ehrledger._fhir_coding(part, 'IRCP', 'information recipient')
                                          WHEN 'INF' THEN ehrledger._fhir_coding(part, 'INF', 'informant')
                                          ELSE ehrledger._fhir_coding(part, 'AUT', 'author (originator)') END)),
                        'who', who,
                        'name', who->>'display',
                        'requestor', true,
                        'purposeOfUse', purpose))) END
                 || CASE WHEN authz THEN pg_catalog.jsonb_build_array(
                        pg_catalog.jsonb_build_object(
                            'type', pg_catalog.jsonb_build_object('coding', pg_catalog.jsonb_build_array(ehrledger._fhir_coding(
                                'http://terminology.hl7.org/CodeSystem/v3-RoleClass', 'PROV', 'healthcare provider'))),
                            'who', ehrledger._fhir_ref('Organization', ehrledger.node_name(), 'node',
                                                       'the hospital of ehrledger node ' || ehrledger.node_name()),
                            'requestor', false))
                    ELSE '[]'::pg_catalog.jsonb END,
        'source', pg_catalog.jsonb_build_object(
            'site', ehrledger.node_name(),
            'observer', node,
            'type', pg_catalog.jsonb_build_array(ehrledger._fhir_coding(
                'http://terminology.hl7.org/CodeSystem/security-source-type', '5', 'Database Server'))),
        'entity', entities));
END
$$;

-- A patient's access history: every line, as one AuditEvent (two for an
-- access a consent allowed: the access and the decision).  Ids are the
-- access log entry's number and the patient's place in it: stable, and
-- unique across the whole log.  An entry names patients of one statement
-- (the writer never leaves one patient of several in an entry of its own):
-- an entry of several patients was a search.
CREATE FUNCTION ehrledger._access_history_fhir(caller pg_catalog.name, patient pg_catalog.text, bundle pg_catalog.text)
    RETURNS pg_catalog.jsonb
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    events pg_catalog.jsonb;
BEGIN
    PERFORM ehrledger._fhir_check_bundle(bundle);
    SELECT COALESCE(pg_catalog.jsonb_agg(ev ORDER BY h.event_seq, k, authz), '[]') INTO events
      FROM ehrledger._access_history(caller, patient) h
      JOIN ehrledger.access_event e ON e.ledger_seq = h.event_seq
      LEFT JOIN ehrledger.actors a ON a.actor_id = h.actor
     CROSS JOIN LATERAL (SELECT pg_catalog.array_position(e.patients, _access_history_fhir.patient)) p(k)
     CROSS JOIN LATERAL (SELECT false UNION ALL SELECT true WHERE h.basis ~ '^consent [0-9]+') z(authz)
     CROSS JOIN LATERAL ehrledger._fhir_audit_event(h.event_seq, p.k, pg_catalog.cardinality(e.patients), z.authz,
                                                    h.at, h.actor, a.role, h.pg_role, h.action, h.tbl,
                                                    _access_history_fhir.patient, h.basis, h.detail, h.client_addr) ev;
    RETURN ehrledger._fhir_bundle(events, COALESCE(bundle, 'collection'));
END
$$;

DROP FUNCTION ehrledger.access_history_fhir(pg_catalog.text);
CREATE FUNCTION ehrledger.access_history_fhir(patient pg_catalog.text, bundle pg_catalog.text DEFAULT NULL)
    RETURNS pg_catalog.jsonb
    AS 'MODULE_PATHNAME', 'ehrledger_with_caller'
    LANGUAGE C STABLE
    SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION ehrledger.access_history_fhir(pg_catalog.text, pg_catalog.text) IS
    'A patient''s access history as a FHIR R4 Bundle of AuditEvents after IHE BALP (a collection; bundle => ''transaction'' or ''batch'' for a FHIR server); for the patient itself or an auditor.';


-- Provenance -----------------------------------------------------------------

-- The Provenance of one sealed ledger row: what it is (target), when the
-- ledger sealed it (recorded), who made it and who keeps it (agents), the
-- author's Ed25519 signature for rows of signed tables, and, contained,
-- the inclusion proof with the digest it is checked against
-- (ehrledger-verify proof digest) and the bytes the author signed.  The
-- caller needs what ehrledger.proof() needs: SELECT on the table.
CREATE FUNCTION ehrledger.provenance_fhir(tbl pg_catalog.regclass, ledger_seq pg_catalog.int8,
                                          bundle pg_catalog.text DEFAULT NULL)
    RETURNS pg_catalog.jsonb
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t        record;
    d        pg_catalog.jsonb;
    p        pg_catalog.jsonb;
    r        pg_catalog.jsonb;
    v        record;
    sealed   pg_catalog.text;
    targets  pg_catalog.jsonb;
    agents   pg_catalog.jsonb := '[]';
    entities pg_catalog.jsonb;
    contained pg_catalog.jsonb;
    signer   pg_catalog.jsonb;
    sig      pg_catalog.bytea;
    payload  pg_catalog.bytea;
    sig_type pg_catalog.jsonb;
    about    pg_catalog.text;
    res      pg_catalog.jsonb;
BEGIN
    PERFORM ehrledger._fhir_check_bundle(bundle);
    IF tbl IS NULL OR ledger_seq IS NULL THEN
        RAISE EXCEPTION 'table and ledger_seq must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT x.table_id, x.signer_column, x.signature_column, x.internal INTO t
      FROM ehrledger.protected_tables x WHERE x.tbl = provenance_fhir.tbl;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'table % is not protected by ehrledger', tbl USING ERRCODE = 'LD002';
    END IF;
    -- proof() checks the caller's rights, that the row exists and is sealed.
    d := ehrledger.digest();
    p := ehrledger.proof(tbl, ledger_seq, d);
    IF p ? 'erasure' THEN
        RAISE EXCEPTION 'row % of % was erased', ledger_seq, tbl
            USING ERRCODE = '02000',
                  HINT = 'ehrledger.proof() shows its leaf and the record of its erasure.';
    END IF;
    r := p->'row';
    sealed := p->'block'->>'sealed_at';
    about := pg_catalog.format('%s row %s', tbl, ledger_seq);

    IF t.table_id = 2000000003 THEN
        -- A consent's grant or revocation: the Consent it makes or ends,
        -- given by the patient (its signature, its role) or entered by a
        -- registrar from a paper form.
        targets := pg_catalog.jsonb_build_array(ehrledger._fhir_ref('Consent', r->>'consent_id', 'consent', 'consent ' || (r->>'consent_id')));
        about := pg_catalog.format('the %s of consent %s', CASE r->>'action' WHEN 'grant' THEN 'grant' ELSE 'revocation' END, r->>'consent_id');
        agents := pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
            'type', pg_catalog.jsonb_build_object('coding', pg_catalog.jsonb_build_array(ehrledger._fhir_coding(
                'http://terminology.hl7.org/CodeSystem/provenance-participant-type', 'author', 'Author'))),
            'who', ehrledger._fhir_actor(r->>'patient', 'patient')));
        IF r->>'paper_form' IS NOT NULL AND r->>'by_actor' IS NOT NULL THEN
            agents := agents || pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
                'type', pg_catalog.jsonb_build_object('coding', pg_catalog.jsonb_build_array(ehrledger._fhir_coding(
                    'http://terminology.hl7.org/CodeSystem/provenance-participant-type', 'enterer', 'Enterer'))),
                'who', ehrledger._fhir_actor(r->>'by_actor', 'admin')));
        END IF;
        IF r->>'signature' IS NOT NULL THEN
            sig := pg_catalog.decode(pg_catalog.substr(r->>'signature', 3), 'hex');
            signer := ehrledger._fhir_actor(r->>'patient', 'patient');
            sig_type := ehrledger._fhir_coding('urn:iso-astm:E1762-95:2013', '1.2.840.10065.1.12.1.7', 'Consent Signature');
            IF r->>'action' = 'revoke' THEN
                payload := ehrledger.revocation_payload((r->>'consent_id')::pg_catalog.int8);
            ELSIF r->'actions' <> 'null' THEN
                payload := ehrledger.consent_payload(r->>'patient', r->>'grantee', r->>'scope', r->>'purpose',
                                                     (r->>'valid_until')::pg_catalog.timestamptz,
                                                     ARRAY(SELECT pg_catalog.jsonb_array_elements_text(r->'actions')));
            END IF;
        END IF;
    ELSIF t.table_id = 2000000005 THEN
        -- An access log entry: the AuditEvents made of it.
        targets := (SELECT pg_catalog.jsonb_agg(ehrledger._fhir_ref('AuditEvent', ledger_seq || '-' || n, 'ledger-row',
                                                                    'access log entry ' || ledger_seq || ', patient ' || x) ORDER BY n)
                      FROM pg_catalog.jsonb_array_elements_text(r->'patients') WITH ORDINALITY AS q(x, n));
        about := 'access log entry ' || ledger_seq;
    ELSE
        -- A row holding a FHIR resource (a jsonb column with resourceType
        -- and id) is that resource; any other row is named by its number.
        targets := (SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
                               'reference', ehrledger._fhir_url((c.value->>'resourceType') || '/' || (c.value->>'id')),
                               'type', c.value->>'resourceType',
                               'display', pg_catalog.format('%s %s (%s)', c.value->>'resourceType', c.value->>'id', about)) ORDER BY c.key)
                      FROM pg_catalog.jsonb_each(r) c
                     WHERE pg_catalog.jsonb_typeof(c.value) = 'object'
                       AND c.value->>'resourceType' ~ '^[A-Z][A-Za-z]{1,63}$'
                       AND c.value->>'id' ~ '^[A-Za-z0-9.-]{1,64}$');
        IF t.signer_column IS NOT NULL THEN
            SELECT * INTO v FROM ehrledger.verify_record(tbl, ledger_seq);
            IF v.valid THEN
                sig := pg_catalog.decode(pg_catalog.substr(r->>t.signature_column, 3), 'hex');
                signer := ehrledger._fhir_actor(v.signer, v.role);
                sig_type := ehrledger._fhir_coding('urn:iso-astm:E1762-95:2013', '1.2.840.10065.1.12.1.1', 'Author''s Signature');
                payload := ehrledger.signing_payload(tbl, r);
                agents := pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
                    'type', pg_catalog.jsonb_build_object('coding', pg_catalog.jsonb_build_array(ehrledger._fhir_coding(
                        'http://terminology.hl7.org/CodeSystem/provenance-participant-type', 'author', 'Author'))),
                    'who', signer));
            END IF;
        END IF;
    END IF;
    IF targets IS NULL THEN
        targets := pg_catalog.jsonb_build_array(ehrledger._fhir_ref(NULL, ehrledger.node_name() || ':' || ledger_seq,
                                                                    'ledger-row', about));
    END IF;
    agents := agents || pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
        'type', pg_catalog.jsonb_build_object('coding', pg_catalog.jsonb_build_array(ehrledger._fhir_coding(
            'http://terminology.hl7.org/CodeSystem/provenance-participant-type', 'custodian', 'Custodian'))),
        'who', ehrledger._fhir_node()));

    contained := pg_catalog.jsonb_build_array(
        pg_catalog.jsonb_build_object('resourceType', 'Binary', 'id', 'proof', 'contentType', 'application/json',
                                      'data', ehrledger._fhir_base64(pg_catalog.convert_to(p::pg_catalog.text, 'UTF8'))),
        pg_catalog.jsonb_build_object('resourceType', 'Binary', 'id', 'digest', 'contentType', 'application/json',
                                      'data', ehrledger._fhir_base64(pg_catalog.convert_to(d::pg_catalog.text, 'UTF8'))));
    entities := pg_catalog.jsonb_build_array(
        pg_catalog.jsonb_build_object('role', 'source', 'what', pg_catalog.jsonb_build_object(
            'reference', '#proof', 'type', 'Binary',
            'display', pg_catalog.format('ehrledger inclusion proof of ledger row %s in block %s of %s (docs/format.md section 12)',
                                         ledger_seq, p->'block'->>'height', p->>'origin'))),
        pg_catalog.jsonb_build_object('role', 'source', 'what', pg_catalog.jsonb_build_object(
            'reference', '#digest', 'type', 'Binary',
            'display', pg_catalog.format('signed ehrledger digest of %s at height %s, which the proof is checked against',
                                         d->>'origin', d->>'height'))));
    IF payload IS NOT NULL THEN
        contained := contained || pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
            'resourceType', 'Binary', 'id', 'signed', 'contentType', 'application/octet-stream',
            'data', ehrledger._fhir_base64(payload)));
        entities := entities || pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object('role', 'quotation',
            'what', pg_catalog.jsonb_build_object('reference', '#signed', 'type', 'Binary',
                                                  'display', 'the bytes the signature is over')));
    END IF;

    res := pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
        'resourceType', 'Provenance',
        'id', 'ledger-' || ledger_seq,
        'text', ehrledger._fhir_text(pg_catalog.format('Provenance of %s, sealed by ehrledger node %s in block %s at %s%s.',
                    about, p->>'origin', p->'block'->>'height', sealed,
                    CASE WHEN sig IS NOT NULL THEN pg_catalog.format('; signed with Ed25519 by %s', signer->>'display')
                         WHEN t.signer_column IS NOT NULL THEN '; its signature does not verify'
                         ELSE '' END)),
        'contained', contained,
        'target', targets,
        'recorded', sealed,
        'agent', agents,
        'entity', entities,
        'signature', CASE WHEN sig IS NOT NULL THEN pg_catalog.jsonb_build_array(pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
            'type', pg_catalog.jsonb_build_array(sig_type),
            'when', sealed,
            'who', signer,
            'targetFormat', CASE WHEN payload IS NOT NULL THEN 'application/octet-stream' END,
            'sigFormat', 'application/octet-stream',
            'data', ehrledger._fhir_base64(sig)))) END));
    IF bundle IS NULL THEN
        RETURN res;
    END IF;
    RETURN ehrledger._fhir_bundle(pg_catalog.jsonb_build_array(res), bundle);
END
$$;
COMMENT ON FUNCTION ehrledger.provenance_fhir(pg_catalog.regclass, pg_catalog.int8, pg_catalog.text) IS
    'A FHIR R4 Provenance of a sealed ledger row: target, recorded, agents, the author''s Ed25519 signature for signed rows, and the inclusion proof with its digest (contained); with bundle => ''transaction'' in a Bundle. Needs SELECT on the table.';

REVOKE ALL ON FUNCTION ehrledger._consent_as_fhir(pg_catalog.name, pg_catalog.int8, pg_catalog.text),
    ehrledger._access_history_fhir(pg_catalog.name, pg_catalog.text, pg_catalog.text),
    ehrledger._fhir_pct(pg_catalog.text, pg_catalog.text), ehrledger._fhir_search(pg_catalog.regclass, pg_catalog.text),
    ehrledger._fhir_audit_event(pg_catalog.int8, pg_catalog.int4, pg_catalog.int4, pg_catalog.bool, pg_catalog.timestamptz, pg_catalog.text,
                                pg_catalog.text, pg_catalog.name, pg_catalog.text, pg_catalog.regclass, pg_catalog.text,
                                pg_catalog.text, pg_catalog.text, pg_catalog.inet)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ehrledger.consent_as_fhir(pg_catalog.int8, pg_catalog.text),
    ehrledger.access_history_fhir(pg_catalog.text, pg_catalog.text),
    ehrledger.provenance_fhir(pg_catalog.regclass, pg_catalog.int8, pg_catalog.text),
    ehrledger._fhir_instant(pg_catalog.timestamptz), ehrledger._fhir_url(pg_catalog.text),
    ehrledger._fhir_system(pg_catalog.text),
    ehrledger._fhir_ref(pg_catalog.text, pg_catalog.text, pg_catalog.text, pg_catalog.text),
    ehrledger._fhir_actor(pg_catalog.text, pg_catalog.text), ehrledger._fhir_node(),
    ehrledger._fhir_coding(pg_catalog.text, pg_catalog.text, pg_catalog.text),
    ehrledger._fhir_text(pg_catalog.text), ehrledger._fhir_base64(pg_catalog.bytea),
    ehrledger._fhir_bundle(pg_catalog.jsonb, pg_catalog.text), ehrledger._fhir_check_bundle(pg_catalog.text),
    ehrledger._balp(pg_catalog.text)
    TO PUBLIC;


-- Section: access log at scale, and hot standbys.

-- Section: network: restarts, restores and lying peers.

-- Blocks that came before their predecessor (a peer restarted while its
-- subscriptions were still catching up, a tablesync raced the stream):
-- held back here, not refused, and admitted through the usual checks once
-- the predecessor is stored (ehrledger._release_held()).  Only a block
-- signed with its origin's key is held: anything else is refused as before.
CREATE TABLE ehrledger.held_block (
    origin      pg_catalog.text NOT NULL,
    height      pg_catalog.int8 NOT NULL,
    block_hash  pg_catalog.bytea NOT NULL,
    block       pg_catalog.jsonb NOT NULL,
    held_at     pg_catalog.timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    PRIMARY KEY (origin, height, block_hash)
);
COMMENT ON TABLE ehrledger.held_block IS
    'Blocks from peers that arrived before their predecessor: admitted, through the usual checks, once it is here.';
SELECT pg_catalog.pg_extension_config_dump('ehrledger.held_block', '');

-- BEFORE INSERT on ehrledger.block in replica mode, before
-- ehrledger_block_arrived (a table's triggers fire in name order): a block
-- whose predecessor is not here yet is held back instead of refused.  A
-- lying peer, which holds its own key, could sign blocks without end at
-- heights far ahead: at most ehrledger.max_held_blocks of one origin are
-- held, none more than that many heights beyond its stored height; a block
-- beyond is recorded in ehrledger.rejected_row (without its leaves) and
-- skipped, never an error in the apply worker.
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
            PERFORM ehrledger._to_rejected(h.origin, h.height, h.block_hash, 'held back, then: ' || SQLERRM);
        END;
    END LOOP;
    RETURN n;
END
$function$;

-- AFTER INSERT on ehrledger.block in replica mode: a stored block admits
-- its successor if that was held back.  Chains held deeper than a few
-- blocks continue in the sealer's round, not in ever deeper triggers.
CREATE FUNCTION ehrledger._block_successor() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF pg_catalog.pg_trigger_depth() <= 8
       AND EXISTS (SELECT 1 FROM ehrledger.held_block k WHERE k.origin = NEW.origin AND k.height = NEW.height + 1) THEN
        PERFORM ehrledger._release_held(NEW.origin, NEW.height + 1);
    END IF;
    RETURN NULL;
END
$$;

-- Acknowledgments of blocks of a hospital that is not a peer here yet
-- (peering is done one hospital at a time: a peer's acknowledgments of a
-- third hospital's blocks may come first): held back too, signed by their
-- acker, a member, and judged once their origin is a peer.  An origin that
-- was a peer and was removed is not waited for.
CREATE TABLE ehrledger.held_ack (
    origin      pg_catalog.text NOT NULL,
    height      pg_catalog.int8 NOT NULL,
    acker       pg_catalog.text NOT NULL,
    ack         pg_catalog.jsonb NOT NULL,
    held_at     pg_catalog.timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    PRIMARY KEY (origin, height, acker)
);
COMMENT ON TABLE ehrledger.held_ack IS
    'Acknowledgments from peers of blocks of a hospital that is not a peer here yet: judged once it is.';
SELECT pg_catalog.pg_extension_config_dump('ehrledger.held_ack', '');

-- BEFORE INSERT on ehrledger.ack in replica mode, before
-- ehrledger_ack_arrived.
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
CREATE TRIGGER ehrledger_ack_ahead BEFORE INSERT ON ehrledger.ack
    FOR EACH ROW EXECUTE FUNCTION ehrledger._ack_ahead();
ALTER TABLE ehrledger.ack ENABLE REPLICA TRIGGER ehrledger_ack_ahead;

CREATE TRIGGER ehrledger_block_ahead BEFORE INSERT ON ehrledger.block
    FOR EACH ROW EXECUTE FUNCTION ehrledger._block_ahead();
ALTER TABLE ehrledger.block ENABLE REPLICA TRIGGER ehrledger_block_ahead;
CREATE TRIGGER ehrledger_block_successor AFTER INSERT ON ehrledger.block
    FOR EACH ROW EXECUTE FUNCTION ehrledger._block_successor();
ALTER TABLE ehrledger.block ENABLE REPLICA TRIGGER ehrledger_block_successor;

-- The sealer's round: every held block whose predecessor is here now is
-- admitted (whatever brought the predecessor: the stream, a tablesync, a
-- trigger too deep to admit it), every held acknowledgment whose origin is
-- a peer now is judged, and what was held for a hospital that is no
-- longer a peer is dropped.  The sealer runs as a superuser, which may
-- enter replica mode for the length of this call.
CREATE FUNCTION ehrledger._release_all_held() RETURNS pg_catalog.int4
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
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
$$;

REVOKE ALL ON ehrledger.held_block, ehrledger.held_ack FROM PUBLIC;
REVOKE ALL ON FUNCTION ehrledger._block_ahead(), ehrledger._block_successor(), ehrledger._ack_ahead(),
    ehrledger._release_held(pg_catalog.text, pg_catalog.int8), ehrledger._release_all_held()
    FROM PUBLIC;

-- What a peer sends that is not a well-formed row of ehrledger.block,
-- ehrledger.ack or ehrledger.shared_row (a NULL, a 63-byte signature, a
-- 31-byte hash, a name that is no node name), and any UPDATE or DELETE a
-- peer's publication sends (a hospital only ever adds rows): recorded
-- here and skipped, never an error in the apply worker, which would retry
-- the same transaction forever and stop everything that peer sends.
CREATE TABLE ehrledger.rejected_row (
    table_name  pg_catalog.text NOT NULL,
    operation   pg_catalog.text NOT NULL,
    origin      pg_catalog.text,
    reason      pg_catalog.text NOT NULL,
    "row"       pg_catalog.jsonb,
    rejected_at pg_catalog.timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp()
);
COMMENT ON TABLE ehrledger.rejected_row IS
    'Rows from peers that were malformed, or changes other than inserts: recorded and skipped.';

-- Why a row from a peer (to_jsonb of it, bytea in hex) is not well formed,
-- or NULL.  Only the form: what it means is judged by the triggers that
-- follow.
CREATE FUNCTION ehrledger._malformed(tbl pg_catalog.text, r pg_catalog.jsonb) RETURNS pg_catalog.text
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
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
$$;

-- BEFORE INSERT, UPDATE or DELETE on the tables peers send, in replica
-- mode, before every other trigger there (a table's triggers fire in name
-- order, and "ehrledger_a_" sorts first).
CREATE FUNCTION ehrledger._well_formed() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    SET bytea_output = hex
AS $$
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
$$;

DO $$
DECLARE
    tbl pg_catalog.text;
BEGIN
    FOREACH tbl IN ARRAY ARRAY['ehrledger.block', 'ehrledger.ack', 'ehrledger.shared_row'] LOOP
        EXECUTE pg_catalog.format(
            'CREATE TRIGGER ehrledger_a_well_formed BEFORE INSERT OR UPDATE OR DELETE ON %s'
            ' FOR EACH ROW EXECUTE FUNCTION ehrledger._well_formed()', tbl);
        EXECUTE pg_catalog.format('ALTER TABLE %s ENABLE REPLICA TRIGGER ehrledger_a_well_formed', tbl);
    END LOOP;
END
$$;

REVOKE ALL ON ehrledger.rejected_row FROM PUBLIC;
REVOKE ALL ON FUNCTION ehrledger._well_formed(), ehrledger._malformed(pg_catalog.text, pg_catalog.jsonb) FROM PUBLIC;

-- A peer's TRUNCATE (a lying hospital can publish one): ehrledger.block and
-- ehrledger.ack refuse it already; ehrledger.shared_row, which would lose
-- every hospital's shared rows, refuses it too.  In the apply worker the
-- refusal (LD031) is noted by the server (src/network.c), and the
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

-- The quorum of n members: with f = floor((n-1)/3) faulty ones tolerated,
-- ceil((n+f+1)/2), so that any two quorums share at least f+1 members, one
-- of them honest, which never acknowledges two blocks of one height: two
-- conflicting blocks are never both final.  (2f+1 is that only when
-- n = 3f+1: at n = 5 two quorums of 3 could meet in one faulty member
-- alone.)  ehrledger.min_quorum may raise it up to n, never lower it.
CREATE FUNCTION ehrledger.quorum_of(n pg_catalog.int4) RETURNS pg_catalog.int4
    LANGUAGE sql IMMUTABLE STRICT
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN n < 1 THEN NULL ELSE (n + (n - 1) / 3 + 2) / 2 END
$$;
COMMENT ON FUNCTION ehrledger.quorum_of(pg_catalog.int4) IS
    'The Byzantine quorum of n members: ceil((n+f+1)/2) with f = floor((n-1)/3); any two such quorums share f+1 members.';

CREATE OR REPLACE FUNCTION ehrledger.quorum() RETURNS pg_catalog.int4
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT GREATEST(ehrledger.quorum_of(n),
                    LEAST(n, pg_catalog.current_setting('ehrledger.min_quorum')::pg_catalog.int4))::pg_catalog.int4
      FROM (SELECT pg_catalog.count(*)::pg_catalog.int4 AS n FROM ehrledger._members()) m
$$;
COMMENT ON FUNCTION ehrledger.quorum() IS
    'Acknowledgments a block needs to be final: ceil((n+f+1)/2) of n members, f = floor((n-1)/3) (ehrledger.min_quorum may raise it up to n).';

-- Membership, ledgered: every add_peer() and remove_peer() (any change of
-- ehrledger.peer's live rows) is a row here, sealed into this node's chain
-- like any ledger row.  A certificate names the newest change it was made
-- under ("membership"), and is judged by the members and the quorum of
-- that membership, not today's: removing a peer does not make the blocks
-- it helped finalize any less final.
CREATE TABLE ehrledger.membership (
    change_seq  pg_catalog.int8 GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    change      pg_catalog.text NOT NULL CHECK (change IN ('add', 'remove')),
    name        pg_catalog.text NOT NULL,
    public_key  pg_catalog.bytea NOT NULL,
    at          pg_catalog.timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    by_role     pg_catalog.name NOT NULL DEFAULT SESSION_USER
);
COMMENT ON TABLE ehrledger.membership IS
    'Every change of the network''s membership (add_peer, remove_peer), ledgered; certificates name the change they were made under.';
SELECT pg_catalog.pg_extension_config_dump('ehrledger.membership', '');
SELECT pg_catalog.pg_extension_config_dump('ehrledger.membership_change_seq_seq', '');
-- The peers of a 0.3 network, as far as ehrledger.peer remembers them.
INSERT INTO ehrledger.membership (change, name, public_key, at)
    SELECT c.change, c.name, c.public_key, c.at
      FROM (SELECT 'add' AS change, p.name, p.public_key, p.added_at AS at FROM ehrledger.peer p
            UNION ALL
            SELECT 'remove', p.name, p.public_key, p.removed_at FROM ehrledger.peer p WHERE p.removed_at IS NOT NULL) c
     ORDER BY c.at, c.change;
SELECT ehrledger._attach('ehrledger.membership', 2000000017, 'append_only', NULL, NULL, true, salted => false);

-- AFTER INSERT OR UPDATE on ehrledger.peer, whatever the mode: the change
-- to the live membership, unless the membership already shows it (a
-- restore brings both tables back).
CREATE FUNCTION ehrledger._peer_changed() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
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
$$;
CREATE TRIGGER ehrledger_membership AFTER INSERT OR UPDATE OF removed_at, public_key ON ehrledger.peer
    FOR EACH ROW EXECUTE FUNCTION ehrledger._peer_changed();
ALTER TABLE ehrledger.peer ENABLE ALWAYS TRIGGER ehrledger_membership;

-- The members a certificate was made under: this node, and the peers
-- live after the membership change it names; a 0.3 certificate, which
-- names none, is judged by the membership when its block became final.
CREATE FUNCTION ehrledger._members_of(certificate pg_catalog.jsonb, final_at pg_catalog.timestamptz,
                                      OUT name pg_catalog.text, OUT public_key pg_catalog.bytea)
    RETURNS SETOF record
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
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
$$;

-- The quorum a certificate must reach: the one it states, and at least
-- the quorum of the membership it was made under (2f+1 for a 0.3
-- certificate, the rule then).
CREATE FUNCTION ehrledger._quorum_of_certificate(certificate pg_catalog.jsonb, final_at pg_catalog.timestamptz)
    RETURNS pg_catalog.int4
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT GREATEST(CASE WHEN certificate ->> 'quorum' ~ '^[0-9]{1,9}$' THEN (certificate ->> 'quorum')::pg_catalog.int4 END,
                    CASE WHEN certificate ? 'membership' THEN ehrledger.quorum_of(n) ELSE 2 * ((n - 1) / 3) + 1 END)
      FROM (SELECT pg_catalog.count(*)::pg_catalog.int4 AS n FROM ehrledger._members_of(certificate, final_at)) m
$$;

-- As in 0.3, and naming the membership it is made under.
CREATE OR REPLACE FUNCTION ehrledger._certificate(origin pg_catalog.text, height pg_catalog.int8)
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
$$;

REVOKE ALL ON ehrledger.membership FROM PUBLIC;
GRANT SELECT ON ehrledger.membership TO PUBLIC;
REVOKE ALL ON FUNCTION ehrledger._peer_changed(),
    ehrledger._members_of(pg_catalog.jsonb, pg_catalog.timestamptz),
    ehrledger._quorum_of_certificate(pg_catalog.jsonb, pg_catalog.timestamptz) FROM PUBLIC;

-- add_peer() as in 0.3, with its replication slot made in a subtransaction.
CREATE OR REPLACE FUNCTION ehrledger.add_peer(name pg_catalog.text, conninfo pg_catalog.text,
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

-- After any start, before it seals, a hospital learns from its peers how
-- far its own chain reached.  Restored from a backup taken before its last
-- blocks, it takes those blocks back (its peers hold them, signed with its
-- own key), with their acknowledgments, and continues after them; it
-- fetches the peers' blocks and acknowledgments its restore lost (their
-- streams will not send them again: their slots are past them); and it
-- writes WAL past the positions from which its peers' subscriptions will
-- read its new blocks.  Until enough peers answered to be sure (any set
-- of n - quorum + 1 peers meets every quorum), it seals nothing.
CREATE FUNCTION ehrledger._peer_fetch(conninfo pg_catalog.text, query pg_catalog.text)
    RETURNS SETOF pg_catalog.text
    AS 'MODULE_PATHNAME', 'ehrledger_peer_fetch'
    LANGUAGE C STRICT
    SET search_path = pg_catalog, pg_temp;

-- One row per start of the server (pg_postmaster_start_time()) after
-- which this node learned its chain: what it took back, and how long that
-- took.
CREATE TABLE ehrledger.rejoin (
    started_at          pg_catalog.timestamptz PRIMARY KEY,
    learned_at          pg_catalog.timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    peers_reached       pg_catalog.int4 NOT NULL,
    blocks_taken_back   pg_catalog.int4 NOT NULL,
    rows_taken_back     pg_catalog.int8 NOT NULL,
    acks_taken_back     pg_catalog.int4 NOT NULL,
    peer_blocks_fetched pg_catalog.int4 NOT NULL,
    wal_switches        pg_catalog.int4 NOT NULL,
    slots_made          pg_catalog.int4 NOT NULL DEFAULT 0,
    rows_lost           pg_catalog.int8 NOT NULL DEFAULT 0,
    rows_restored       pg_catalog.int8 NOT NULL DEFAULT 0,
    rows_renumbered     pg_catalog.int8 NOT NULL DEFAULT 0
);
COMMENT ON TABLE ehrledger.rejoin IS
    'Each start after which this node learned from its peers how far its chain reached, and what it took back.';

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

REVOKE ALL ON ehrledger.rejoin FROM PUBLIC;
GRANT SELECT ON ehrledger.rejoin TO PUBLIC;
REVOKE ALL ON FUNCTION ehrledger._peer_fetch(pg_catalog.text, pg_catalog.text), ehrledger._learn_from_peers() FROM PUBLIC;

COMMENT ON FUNCTION ehrledger._block_ahead() IS
    'Trigger (replica mode): holds back a block from a peer whose predecessor is not here yet.';
COMMENT ON FUNCTION ehrledger._release_held(pg_catalog.text, pg_catalog.int8) IS
    'Admits, through every admission check, the blocks held back at one (origin, height); replica mode only.';
COMMENT ON FUNCTION ehrledger._block_successor() IS
    'Trigger (replica mode): a stored block admits its successor if that was held back.';
COMMENT ON FUNCTION ehrledger._release_all_held() IS
    'The sealer''s round: admits held blocks whose predecessor came, judges held acknowledgments whose origin became a peer.';
COMMENT ON FUNCTION ehrledger._ack_ahead() IS
    'Trigger (replica mode): holds back a member''s acknowledgment of a block of a hospital not yet a peer.';
COMMENT ON FUNCTION ehrledger._malformed(pg_catalog.text, pg_catalog.jsonb) IS
    'Why a row a peer sent (to_jsonb, bytea in hex) is not well formed, or NULL.';
COMMENT ON FUNCTION ehrledger._well_formed() IS
    'Trigger (replica mode, first): records and skips malformed rows, updates and deletes from peers.';
COMMENT ON FUNCTION ehrledger._peer_changed() IS
    'Trigger: ledgers every change of the live membership in ehrledger.membership.';
COMMENT ON FUNCTION ehrledger._members_of(pg_catalog.jsonb, pg_catalog.timestamptz) IS
    'The members (name, key) of the membership a certificate was made under.';
COMMENT ON FUNCTION ehrledger._quorum_of_certificate(pg_catalog.jsonb, pg_catalog.timestamptz) IS
    'The quorum a certificate must reach: the larger of the one it states and its membership''s.';
COMMENT ON FUNCTION ehrledger._peer_fetch(pg_catalog.text, pg_catalog.text) IS
    'The rows of a one-column query run at a peer over a replication connection; superuser only.';
COMMENT ON FUNCTION ehrledger._learn_from_peers() IS
    'After a start, before sealing: learns from the peers how far this node''s chain reached and takes back what a restore lost.';


-- Section: the network's states (src/network/states.sql).  One file names
-- the states a block is in (pending, admitted or rejected for a peer's;
-- sealed, acknowledged for this node's; final; evidence) and is the one
-- place that moves a block from one to the next; the triggers on
-- ehrledger.block and ehrledger.ack are a few lines each around it.
-- _admit_block, _acknowledge, _check_final and _equivocation of 0.3 become
-- _to_admitted, _to_acknowledged, _to_final and _to_evidence.  (The
-- triggers new in 0.4, _block_ahead and _ack_ahead, and _release_held, are
-- created above in their 0.4 form.)

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

-- The sealer's round (network.c's ledger_check_pending()): pending blocks
-- whose predecessor came arrive again, peers' TRUNCATEs are skipped, and
-- every block stored but not final with a quorum of acknowledgments is
-- looked at again: acknowledgments applied at one moment by different
-- subscriptions each counted only what was committed before them.
CREATE OR REPLACE FUNCTION ehrledger._check_pending()
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

CREATE OR REPLACE FUNCTION ehrledger.block_status(origin text, height bigint)
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

CREATE OR REPLACE VIEW ehrledger.network_status WITH (security_barrier=true) AS
    SELECT o.origin,
           (SELECT pg_catalog.max(b.height) FROM ehrledger.block b WHERE b.origin = o.origin) AS local_height,
           (SELECT pg_catalog.max(f.height) FROM ehrledger.final_block f WHERE f.origin = o.origin) AS final_height,
           (SELECT pg_catalog.count(*) FROM ehrledger._block_states s
             WHERE s.origin = o.origin AND s.state IN ('sealed', 'acknowledged', 'admitted')) AS pending,
           ehrledger.quorum() AS quorum
      FROM (SELECT name AS origin FROM ehrledger._members()) o;

-- AFTER INSERT on ehrledger.block in replica mode: a peer's block just
-- admitted; this node acknowledges it.
CREATE OR REPLACE FUNCTION ehrledger._block_stored()
 RETURNS trigger
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
BEGIN
    PERFORM ehrledger._to_acknowledged(NEW.origin, NEW.height);
    RETURN NULL;
END
$function$;

-- BEFORE INSERT on ehrledger.ack in replica mode: an acknowledgment is
-- stored only if it counts.
CREATE OR REPLACE FUNCTION ehrledger._ack_arrived()
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
CREATE OR REPLACE FUNCTION ehrledger._ack_stored()
 RETURNS trigger
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
BEGIN
    PERFORM ehrledger._to_final(NEW.origin, NEW.height);
    RETURN NULL;
END
$function$;

DROP FUNCTION ehrledger._admit_block(pg_catalog.text, pg_catalog.int8, pg_catalog.bytea, pg_catalog.bytea,
                                    pg_catalog.text, pg_catalog.bytea, pg_catalog.bytea),
    ehrledger._acknowledge(pg_catalog.text, pg_catalog.int8),
    ehrledger._check_final(pg_catalog.text, pg_catalog.int8),
    ehrledger._equivocation(pg_catalog.text, pg_catalog.int8, pg_catalog.bytea, pg_catalog.bytea,
                            pg_catalog.bytea, pg_catalog.bytea);
REVOKE ALL ON FUNCTION
    ehrledger._block_state(pg_catalog.text, pg_catalog.int8),
    ehrledger._to_evidence(pg_catalog.text, pg_catalog.text, pg_catalog.text, pg_catalog.int8,
                           pg_catalog.bytea, pg_catalog.bytea, pg_catalog.bytea, pg_catalog.bytea),
    ehrledger._to_rejected(pg_catalog.text, pg_catalog.int8, pg_catalog.bytea, pg_catalog.text),
    ehrledger._to_final(pg_catalog.text, pg_catalog.int8),
    ehrledger._to_acknowledged(pg_catalog.text, pg_catalog.int8),
    ehrledger._to_pending(ehrledger.block),
    ehrledger._to_admitted(pg_catalog.text, pg_catalog.int8, pg_catalog.bytea, pg_catalog.bytea,
                           pg_catalog.text, pg_catalog.bytea, pg_catalog.bytea),
    ehrledger._ack_to_held(ehrledger.ack),
    ehrledger._ack_to_counted(ehrledger.ack)
    FROM PUBLIC;


-- Section: erasure.  A note filed in the wrong chart, or a patient's
-- right to erasure: ehrledger.erase() and erase_patient() remove sealed row
-- versions while their leaves stay in their blocks, and write one ledgered
-- ehrledger.erasure record per erased leaf (src/ledger/erase.sql).
-- verify() reports erased rows in a new last column, erased.

DROP FUNCTION ehrledger.verify(pg_catalog.regclass, pg_catalog.jsonb);
CREATE FUNCTION ehrledger.verify(tbl regclass DEFAULT NULL::regclass, digest jsonb DEFAULT NULL::jsonb)
 RETURNS TABLE(ok boolean, blocks_checked bigint, rows_checked bigint, problems jsonb, erased jsonb)
 LANGUAGE c
 SET search_path TO 'pg_catalog', 'pg_temp'
AS 'MODULE_PATHNAME', $function$ehrledger_verify$function$;
COMMENT ON FUNCTION ehrledger.verify(regclass,jsonb) IS 'Recomputes the chain, the blocks and every row (of one table, or all) and lists every problem, and every erased row with its erasure record.';

-- Tables ------------------------------------------------------------------

-- One row per erased leaf: a row version, or the end of an earlier
-- version, which goes with that version.  Nothing of the content.
CREATE TABLE ehrledger.erasure (
    table_id integer NOT NULL,
    erased_seq bigint NOT NULL,
    leaf_hash bytea NOT NULL,
    erased_by text NOT NULL,
    approved_by text NOT NULL,
    approval bytea,
    erased_at timestamp with time zone NOT NULL,
    reason text NOT NULL
);
COMMENT ON TABLE ehrledger.erasure IS 'The ledgered record of every erased leaf: table, ledger_seq, the leaf as sealed, who erased it, who approved, when and why; written by ehrledger.erase() and erase_patient() only.';

-- Functions ---------------------------------------------------------------

-- Refuses every insert into ehrledger.erasure but erase()'s own and a
-- superuser's restore of a dumped record (with its number and hash).
CREATE FUNCTION ehrledger._erasure_only()
 RETURNS trigger
 LANGUAGE c
 SET search_path TO 'pg_catalog', 'pg_temp'
AS 'MODULE_PATHNAME', $function$ehrledger_erasure_only$function$;

-- What a patient, or a second admin, signs to approve an erasure: domain
-- tag, then each field as a 4-byte big-endian length and its UTF-8 bytes
-- (docs/format.md §16).  A NULL field is left out.
CREATE FUNCTION ehrledger._signed_fields(tag text, fields text[])
 RETURNS bytea
 LANGUAGE sql
 IMMUTABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
    SELECT pg_catalog.convert_to(tag, 'UTF8')
        || (SELECT pg_catalog.string_agg(pg_catalog.int4send(pg_catalog.octet_length(f)) || pg_catalog.convert_to(f, 'UTF8'), ''::pg_catalog.bytea ORDER BY n)
              FROM pg_catalog.unnest(fields) WITH ORDINALITY AS x(f, n))
$function$;

CREATE FUNCTION ehrledger.erase_payload(tbl regclass, ledger_seq bigint, reason text)
 RETURNS bytea
 LANGUAGE sql
 STABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
    SELECT ehrledger._signed_fields('ehrledger-erase-row-1',
               ARRAY[(SELECT pg_catalog.format('%I.%I', s.nspname, c.relname)
                        FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace s ON s.oid = c.relnamespace
                       WHERE c.oid = tbl),
                     ledger_seq::pg_catalog.text, reason])
$function$;
COMMENT ON FUNCTION ehrledger.erase_payload(regclass,bigint,text) IS 'The bytes a patient or a second admin signs with its Ed25519 key to approve ehrledger.erase(tbl, ledger_seq, reason) (docs/format.md §16).';

CREATE FUNCTION ehrledger.erase_patient_payload(patient text, reason text)
 RETURNS bytea
 LANGUAGE sql
 IMMUTABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
    SELECT ehrledger._signed_fields('ehrledger-erase-patient-1', ARRAY[patient, reason])
$function$;
COMMENT ON FUNCTION ehrledger.erase_patient_payload(text,text) IS 'The bytes a patient or a second admin signs with its Ed25519 key to approve ehrledger.erase_patient(patient, reason) (docs/format.md §16).';

-- The approval ehrledger.erasure_approval (mode) asks of an erasure the
-- admin actor admin requested, whose payload is payload and whose rows
-- are patient's: none ('admin'), the patient's signature ('patient'), or
-- another admin's ('two_admins').  Returns who approved it.  A signature
-- approves once.
CREATE FUNCTION ehrledger._erasure_approved(admin text, mode text, payload bytea, patient text, approval bytea, approver text)
 RETURNS text
 LANGUAGE plpgsql
 STABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    who      pg_catalog.text;
    wanted   pg_catalog.text;
    a        ehrledger.actors%ROWTYPE;
BEGIN
    IF mode = 'admin' THEN
        IF approval IS NOT NULL OR approver IS NOT NULL THEN
            RAISE EXCEPTION 'ehrledger.erasure_approval is ''admin'': an erasure takes no approval'
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Leave approval and approver out.';
        END IF;
        RETURN admin;
    ELSIF mode = 'patient' THEN
        IF patient IS NULL THEN
            RAISE EXCEPTION 'ehrledger.erasure_approval is ''patient'', but the row names no patient to approve its erasure'
                USING ERRCODE = 'LD014',
                      HINT = 'Only rows of tables protected with a patient column can be erased with the patient''s approval.';
        ELSIF approver IS NOT NULL AND approver <> patient THEN
            RAISE EXCEPTION 'ehrledger.erasure_approval is ''patient'': patient "%" approves, not "%"', patient, approver
                USING ERRCODE = 'LD014';
        END IF;
        who := patient;
        wanted := 'patient';
    ELSE
        IF approver IS NULL THEN
            RAISE EXCEPTION 'ehrledger.erasure_approval is ''two_admins'': a second admin must approve the erasure'
                USING ERRCODE = 'LD014',
                      HINT = 'Pass approver => the second admin''s actor_id and approval => its signature of the erasure''s payload.';
        ELSIF approver = admin THEN
            RAISE EXCEPTION 'ehrledger.erasure_approval is ''two_admins'': admin "%" cannot approve its own erasure', admin
                USING ERRCODE = 'LD014',
                      HINT = 'Another admin signs the payload.';
        END IF;
        who := approver;
        wanted := 'admin';
    END IF;
    IF approval IS NULL THEN
        RAISE EXCEPTION '% "%" must approve the erasure with its signature', wanted, who
            USING ERRCODE = 'LD014',
                  HINT = 'Pass approval => the Ed25519 signature of ehrledger.erase_payload() or ehrledger.erase_patient_payload() with the same arguments.';
    END IF;
    SELECT * INTO a FROM ehrledger.actors x WHERE x.actor_id = who;
    IF NOT FOUND OR a.revoked_at IS NOT NULL OR a.role <> wanted THEN
        RAISE EXCEPTION '"%" is not a live % actor: it cannot approve an erasure', who, wanted
            USING ERRCODE = 'LD014';
    END IF;
    IF NOT ehrledger.verify_signature(payload, approval, a.public_key) THEN
        RAISE EXCEPTION 'approval is not % "%"''s signature of this erasure', wanted, who
            USING ERRCODE = 'LD014',
                  HINT = 'It signs ehrledger.erase_payload() or ehrledger.erase_patient_payload() with the same arguments, with its current key.';
    END IF;
    IF EXISTS (SELECT 1 FROM ehrledger.erasure e WHERE e.approval = _erasure_approved.approval) THEN
        RAISE EXCEPTION 'this approval was used before'
            USING ERRCODE = 'LD013',
                  DETAIL = 'A signed approval erases once; a copy cannot erase rows written since.',
                  HINT = 'To erase again, have it sign a payload with another reason.';
    END IF;
    RETURN who;
END
$function$;

CREATE FUNCTION ehrledger.erase(tbl regclass, ledger_seq bigint, reason text, approval bytea DEFAULT NULL::bytea, approver text DEFAULT NULL::text)
 RETURNS bigint
 LANGUAGE c
 SET search_path TO 'pg_catalog', 'pg_temp'
AS 'MODULE_PATHNAME', $function$ehrledger_erase$function$;
COMMENT ON FUNCTION ehrledger.erase(regclass,bigint,text,bytea,text) IS 'Erases one sealed row version (an earlier version with the end of it): its content goes, its leaf stays, and a ledgered record says who erased it, who approved, when and why. For an admin actor, with the approval ehrledger.erasure_approval asks for. Returns the row versions erased.';

CREATE FUNCTION ehrledger.erase_patient(patient text, reason text, approval bytea DEFAULT NULL::bytea, approver text DEFAULT NULL::text)
 RETURNS bigint
 LANGUAGE c
 SET search_path TO 'pg_catalog', 'pg_temp'
AS 'MODULE_PATHNAME', $function$ehrledger_erase_patient$function$;
COMMENT ON FUNCTION ehrledger.erase_patient(text,text,bytea,text) IS 'Erases every row version of a patient in every table protected with a patient column, as erase() does one. Returns the row versions erased.';

-- The extension's own ledger tables ---------------------------------------

SELECT ehrledger._attach('ehrledger.erasure', 2000000013, 'append_only', NULL, NULL, true);

-- Views -------------------------------------------------------------------

CREATE VIEW ehrledger.erasures WITH (security_barrier=true) AS
    SELECT e.ledger_seq AS erasure_seq, r.relid AS tbl, e.table_id, e.erased_seq, e.leaf_hash,
           e.erased_at, e.erased_by, e.approved_by, e.approval IS NOT NULL AS signed, e.reason
      FROM ehrledger.erasure e
      LEFT JOIN ehrledger.registered_table r ON r.table_id = e.table_id
     CROSS JOIN ehrledger.current_actor() me
     WHERE me.role IN ('auditor', 'admin')
        OR COALESCE((SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = CURRENT_USER), false);
COMMENT ON VIEW ehrledger.erasures IS 'Erased leaves, for auditors and admins: which table and ledger_seq, when, by whom, approved by whom, why.';

-- Triggers ----------------------------------------------------------------

-- Sorts before zz_ehrledger_insert: a refused record takes no number.
CREATE TRIGGER ehrledger_erasure_only BEFORE INSERT ON ehrledger.erasure FOR EACH ROW EXECUTE FUNCTION ehrledger._erasure_only();
ALTER TABLE ehrledger.erasure ENABLE ALWAYS TRIGGER ehrledger_erasure_only;

-- Indexes -----------------------------------------------------------------
CREATE INDEX erasure_table_id_erased_seq_idx ON ehrledger.erasure USING btree (table_id, erased_seq);
CREATE INDEX erasure_approval_idx ON ehrledger.erasure USING btree (approval) WHERE (approval IS NOT NULL);

-- What pg_dump dumps ------------------------------------------------------
SELECT pg_catalog.pg_extension_config_dump('ehrledger.erasure', '');

-- Privileges --------------------------------------------------------------
GRANT SELECT ON ehrledger.erasures TO PUBLIC;
REVOKE ALL ON FUNCTION
    ehrledger._erasure_only(),
    ehrledger._erasure_approved(text,text,bytea,text,bytea,text)
    FROM PUBLIC;
-- Section: partitioned tables.  protect() of a partitioned table adds the
-- ledger's columns to it (its partitions have them from it) and brings
-- each partition, present and future, into the ledger as a table of its
-- own; registered_table says which tables are partitioned and which
-- partitioned table each partition belongs to.  The schema guard protects
-- partitions created or attached later and refuses to detach or drop one
-- that was not retired (src/ledger/ledger.sql, src/ledger/partitions.c).

ALTER TABLE ehrledger.registered_table ADD COLUMN partitioned boolean DEFAULT false NOT NULL;
ALTER TABLE ehrledger.registered_table ADD COLUMN partition_of integer;
COMMENT ON COLUMN ehrledger.registered_table.partitioned IS 'A partitioned table: it holds no rows itself; each of its partitions is a ledger table of its own.';
COMMENT ON COLUMN ehrledger.registered_table.partition_of IS 'The table_id of the partitioned ledger table this table is a partition of.';

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

CREATE OR REPLACE FUNCTION ehrledger._attach(tbl regclass, tid integer, mode text, signer_column name, signature_column name, internal boolean, salted boolean DEFAULT true)
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

CREATE OR REPLACE FUNCTION ehrledger.protect(tbl regclass, mode text DEFAULT 'append_only'::text, patient_column name DEFAULT NULL::name, signer_column name DEFAULT NULL::name, signature_column name DEFAULT NULL::name, category text DEFAULT NULL::text)
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

CREATE OR REPLACE FUNCTION ehrledger.retire(tbl regclass, reason text)
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

REVOKE ALL ON FUNCTION ehrledger._check_trigger_order(regclass,boolean) FROM PUBLIC;

CREATE OR REPLACE FUNCTION ehrledger._check_ledger_table(tid integer, after_drop boolean)
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

CREATE OR REPLACE FUNCTION ehrledger._guard_ddl()
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

CREATE OR REPLACE FUNCTION ehrledger._guard_drop()
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

CREATE OR REPLACE FUNCTION ehrledger._enrol_tables()
 RETURNS integer
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    since   pg_catalog.int8;
    n       pg_catalog.int4;
BEGIN
    -- Enrolments of an earlier chain (before a restore on another node)
    -- are not in this one: only this chain's own count.
    since := COALESCE((SELECT b.first_seq FROM ehrledger.block b
                        WHERE b.origin = ehrledger.node_name() AND b.height = 1),
                      (SELECT pg_catalog.max(b.last_seq) + 1 FROM ehrledger.block b
                        WHERE b.origin IN (SELECT k.origin FROM ehrledger.node_key k)),
                      1);
    INSERT INTO ehrledger.enrolled_table (table_id, name, columns, event)
    SELECT t.table_id, t.name, t.columns, CASE WHEN e.table_id IS NULL THEN 'enrolled' ELSE 'changed' END
      FROM (SELECT r.table_id, pg_catalog.format('%I.%I', n.nspname, c.relname) AS name,
                   ehrledger._encoded_columns(r.relid) AS columns
              FROM ehrledger.registered_table r
              JOIN pg_catalog.pg_class c ON c.oid = r.relid
              JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
             WHERE r.retired_at IS NULL AND NOT r.partitioned) t
      LEFT JOIN LATERAL (SELECT x.table_id, x.name, x.columns FROM ehrledger.enrolled_table x
                          WHERE x.table_id = t.table_id AND x.ledger_seq >= since
                          ORDER BY x.ledger_seq DESC LIMIT 1) e ON true
     WHERE e.table_id IS NULL OR e.name <> t.name OR e.columns <> t.columns
     ORDER BY t.table_id;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$function$;

CREATE OR REPLACE FUNCTION ehrledger._permitted_patients(actor text, tid integer, purpose text, OUT patient text, OUT basis text, OUT until timestamp with time zone, OUT can_read boolean, OUT can_write boolean)
 RETURNS SETOF record
 LANGUAGE sql
 STABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
    SELECT a.actor_id, 'own record', NULL::pg_catalog.timestamptz, true, true
      FROM ehrledger.actors a
     WHERE a.actor_id = _permitted_patients.actor AND a.role = 'patient'
    UNION ALL
    SELECT g.patient, 'consent ' || g.consent_id || CASE WHEN g.paper_form IS NOT NULL THEN ' (paper form)' ELSE '' END,
           g.valid_until,
           COALESCE('read' = ANY (g.actions), true), COALESCE('write' = ANY (g.actions), false)
      FROM ehrledger.consent_event g
     WHERE g.action = 'grant' AND g.grantee = _permitted_patients.actor
       AND g.purpose = _permitted_patients.purpose
       AND (g.valid_until IS NULL OR g.valid_until > pg_catalog.clock_timestamp())
       AND (g.scope = '*'
            OR g.scope_table IN (WITH RECURSIVE up(table_id) AS (
                                     SELECT _permitted_patients.tid
                                     UNION
                                     SELECT r.partition_of FROM up JOIN ehrledger.registered_table r
                                         ON r.table_id = up.table_id AND r.partition_of IS NOT NULL)
                                 SELECT up.table_id FROM up)
            OR (g.scope_table IS NULL AND g.scope = (SELECT r.category FROM ehrledger.registered_table r
                                                      WHERE r.table_id = _permitted_patients.tid)))
       AND NOT EXISTS (SELECT 1 FROM ehrledger.consent_event v
                        WHERE v.consent_id = g.consent_id AND v.action = 'revoke')
    UNION ALL
    SELECT b.patient, 'break-glass ' || b.break_glass_id || ': ' || b.reason, b.expires_at, true, true
      FROM ehrledger.break_glass b
     WHERE b.actor = _permitted_patients.actor AND b.expires_at > pg_catalog.clock_timestamp()
$function$;

CREATE OR REPLACE FUNCTION ehrledger._guard_policies()
 RETURNS event_trigger
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    tid pg_catalog.int4;
BEGIN
    -- The commands are read once (a partitioned table's partitions make
    -- many tables with a patient column).
    FOR tid IN
        WITH c AS MATERIALIZED (SELECT c.classid, c.objid FROM pg_catalog.pg_event_trigger_ddl_commands() c)
        SELECT r.table_id FROM ehrledger.registered_table r
         WHERE r.patient_column IS NOT NULL AND r.retired_at IS NULL AND r.policies IS NOT NULL
           AND (TG_TAG = 'DROP POLICY'
                OR r.relid IN (SELECT c.objid FROM c WHERE c.classid = 'pg_catalog.pg_class'::pg_catalog.regclass)
                OR r.relid IN (SELECT p.polrelid FROM c JOIN pg_catalog.pg_policy p ON p.oid = c.objid
                                WHERE c.classid = 'pg_catalog.pg_policy'::pg_catalog.regclass))
         ORDER BY r.table_id
    LOOP
        PERFORM ehrledger._check_consent_policies(tid, TG_TAG);
    END LOOP;
END
$function$;

CREATE OR REPLACE FUNCTION ehrledger.share(tbl regclass)
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

COMMENT ON FUNCTION ehrledger.protect(regclass,text,name,name,name,text) IS 'Makes a table a ledger table: numbers and hashes every row, existing ones included, refuses UPDATE, DELETE and TRUNCATE (or versions them), checks authors'' signatures with signer_column and signature_column, and with patient_column enforces patients'' consents by row-level security. A partitioned table''s partitions, present and future, become ledger tables each.';
COMMENT ON FUNCTION ehrledger.retire(regclass,text) IS 'Takes a table (a partitioned table with its partitions, or one partition) out of the ledger, recording why in the ledger itself; the table may then be changed, detached or dropped.';
COMMENT ON FUNCTION ehrledger.share(regclass) IS 'Sends a ledger table''s rows, present and future, to the other hospitals with this node''s blocks (a partitioned table''s: those of its partitions, present and future); returns how many rows were already there.';

CREATE OR REPLACE VIEW ehrledger.protected_tables WITH (security_barrier=true) AS
    SELECT r.relid AS tbl, r.table_id, r.mode, r.patient_column, r.signer_column,
           r.signature_column, r.protected_at, r.protected_by, r.rows_at_protect, r.internal,
           r.history, r.retired_at, r.category, r.partitioned,
           (SELECT p.relid FROM ehrledger.registered_table p WHERE p.table_id = r.partition_of) AS partition_of
      FROM ehrledger.registered_table r;

REVOKE ALL ON FUNCTION
    ehrledger._alter_ledger_columns(regclass,text,boolean),
    ehrledger._partition_problem(regclass,regclass,name,name),
    ehrledger._protect_partitions(integer)
    FROM PUBLIC;





-- Section: erasures of shared rows (src/network/network.sql).

CREATE OR REPLACE FUNCTION ehrledger.network_init()
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

-- A networked hospital publishes its erasure notices from now on; each
-- peer's subscription takes the new table after ALTER SUBSCRIPTION ...
-- REFRESH PUBLICATION (README, Hospital network: upgrading).
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_publication p WHERE p.pubname = 'ehrledger_net') THEN
        PERFORM ehrledger.network_init();
    END IF;
END
$$;

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


-- Section: reads at hospital scale (access log in the WAL, hot standbys).
-- Readers make their records durable in the WAL; the writer keeps its
-- position there.  Standbys ship their reads to the primary.  Consent
-- changes reach standbys' caches through a relcache invalidation.
CREATE OR REPLACE FUNCTION ehrledger._actors_changed()
 RETURNS void
 LANGUAGE c
 SET search_path TO 'pg_catalog', 'pg_temp'
AS 'MODULE_PATHNAME', $function$ehrledger_consents_changed$function$;

CREATE TABLE ehrledger.access_log_position (
    lsn pg_lsn NOT NULL,
    at_rest boolean NOT NULL
);
COMMENT ON TABLE ehrledger.access_log_position IS 'How far the access log writer has written the reads recorded in the WAL; the writer''s own bookkeeping.';
INSERT INTO ehrledger.access_log_position VALUES (pg_catalog.pg_current_wal_insert_lsn(), true);

CREATE TABLE ehrledger.standby_session (
    session bytea PRIMARY KEY,
    standby text NOT NULL,
    last_end bigint NOT NULL,
    first_seen timestamp with time zone DEFAULT pg_catalog.now() NOT NULL,
    last_seen timestamp with time zone DEFAULT pg_catalog.now() NOT NULL
);
COMMENT ON TABLE ehrledger.standby_session IS 'Standbys'' sessions: how far the primary has recorded each one''s reads.';

CREATE FUNCTION ehrledger._standby_reads(batch bytea)
 RETURNS integer
 LANGUAGE c
 STRICT
 SET search_path TO 'pg_catalog', 'pg_temp'
AS 'MODULE_PATHNAME', $function$ehrledger_standby_reads$function$;
COMMENT ON FUNCTION ehrledger._standby_reads(bytea) IS 'Records a hot standby''s reads (a batch signed with the node key) in the access log, each once; for the standby''s replication role.';

CREATE FUNCTION ehrledger._standby_break_glass(request bytea)
 RETURNS bigint
 LANGUAGE c
 STRICT
 SET search_path TO 'pg_catalog', 'pg_temp'
AS 'MODULE_PATHNAME', $function$ehrledger_standby_break_glass$function$;
COMMENT ON FUNCTION ehrledger._standby_break_glass(bytea) IS 'Carries out a break-glass asked for on a hot standby (a request signed with the node key), once; for the standby''s replication role.';
REVOKE ALL ON FUNCTION
    ehrledger._standby_reads(bytea),
    ehrledger._standby_break_glass(bytea)
    FROM PUBLIC;

-- Entries arrive in time order: a BRIN index on at finds a day's entries in
-- years of them and stays a few megabytes.
CREATE INDEX access_event_at ON ehrledger.access_event USING brin (at);
