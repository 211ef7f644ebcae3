-- Salted leaves (docs/format.md §1): every block's leaves are public, so a
-- leaf must not let anyone who cannot read its row guess the row.  Rows
-- written before 0.4 (format 1, no salt) can be guessed from their leaves;
-- rows written since (format 2) commit to a secret 16-byte salt kept with
-- the row, and cannot.
SET client_min_messages = warning;
\set SHOW_CONTEXT never
CREATE ROLE regress_salt_nobody;          -- no grants at all
CREATE ROLE regress_salt_owner;           -- owns a table, runs its triggers
CREATE ROLE regress_salt_reader;          -- may read the diagnoses

-- A diagnosis table protected under 0.3: five rows sealed then, five after
-- the update.
CREATE EXTENSION ehrledger VERSION '0.3';
CREATE TABLE diagnosis (id int PRIMARY KEY, patient text NOT NULL, code text NOT NULL);
SELECT ehrledger.protect('diagnosis');
INSERT INTO diagnosis VALUES (1, 'p1', 'E11.9'), (2, 'p2', 'F32.1'), (3, 'p3', 'I10'),
                             (4, 'p4', 'J45.909'), (5, 'p1', 'F20.0');
-- 0.3 did not reserve the name ledger_salt: a table protected with a
-- column of that name holds data there, sealed as such, and the update
-- refuses to take it for salts.  Retired, the table is out of the way.
CREATE TABLE legacy (id int PRIMARY KEY, ledger_salt text);
SELECT ehrledger.protect('legacy');
INSERT INTO legacy VALUES (1, 'pepper');
ALTER EXTENSION ehrledger UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'ehrledger';
SELECT ehrledger.retire('legacy', 'its column ledger_salt is reserved from 0.4 on');
SELECT height, row_count FROM ehrledger.blocks ORDER BY height;
ALTER EXTENSION ehrledger UPDATE;
-- The update adds the salt column to every protected table (and history).
SELECT attname, format_type(atttypid, atttypmod), attnotnull FROM pg_attribute
 WHERE attrelid = 'diagnosis'::regclass AND attnum > 0 ORDER BY attnum;
INSERT INTO diagnosis VALUES (6, 'p2', 'F32.1'), (7, 'p3', 'E11.9'), (8, 'p4', 'I10'),
                             (9, 'p1', 'J45.909'), (10, 'p2', 'C50.911');
SELECT ehrledger.seal() AS height;
SELECT id, ledger_salt IS NOT NULL AS salted, octet_length(ledger_salt) AS salt_bytes,
       get_byte(ehrledger.row_encoding('diagnosis', ledger_seq), 0) AS format
  FROM diagnosis ORDER BY id;
SELECT ok, rows_checked, problems FROM ehrledger.verify('diagnosis');
GRANT SELECT ON diagnosis TO regress_salt_reader;

-- The dictionary attack, by a role with no grants: the table id and the
-- blocks' leaves are public; 10 ids x 4 patients x 12 ICD-10 codes = 480
-- guesses at sha256(0x00 || 01 01 || table_id || ledger_seq || columns).
SET ROLE regress_salt_nobody;
SELECT count(*) FROM diagnosis;
CREATE TEMP TABLE guess AS
SELECT id, p, c FROM generate_series(1, 10) id,
       unnest(ARRAY['p1', 'p2', 'p3', 'p4']) p,
       unnest(ARRAY['E11.9', 'F32.1', 'I10', 'J45.909', 'F20.0', 'C50.911', 'K21.9', 'M54.5',
                    'N39.0', 'R51', 'Z00.00', 'G43.909']) c;
CREATE TEMP TABLE leaf AS
SELECT ('x' || encode(substr(b.leaves, i * 44 + 1, 8), 'hex'))::bit(64)::bigint AS seq,
       ('x' || encode(substr(b.leaves, i * 44 + 9, 4), 'hex'))::bit(32)::int AS table_id,
       substr(b.leaves, i * 44 + 13, 32) AS hash
  FROM ehrledger.block b, generate_series(0, octet_length(b.leaves) / 44 - 1) i
 WHERE ('x' || encode(substr(b.leaves, i * 44 + 9, 4), 'hex'))::bit(32)::int
       = (SELECT table_id FROM ehrledger.protected_tables WHERE tbl = 'diagnosis'::regclass);
SELECT (SELECT count(*) FROM guess) AS guesses, (SELECT count(*) FROM leaf) AS leaves;
-- Format 1's columns as the attacker guesses them.
CREATE FUNCTION pg_temp.columns(id int, p text, c text) RETURNS bytea LANGUAGE sql AS $$
    SELECT '\x0003'::bytea || '\x0002'::bytea || 'id'::bytea || int4send(4) || int4send(id)
           || '\x0007'::bytea || 'patient'::bytea || int4send(octet_length(p)) || convert_to(p, 'UTF8')
           || '\x0004'::bytea || 'code'::bytea || int4send(octet_length(c)) || convert_to(c, 'UTF8')
$$;
-- Rows sealed before the update: every one recovered.
SELECT l.seq, g.id, g.p AS patient, g.c AS code
  FROM leaf l JOIN guess g
    ON sha256('\x000101'::bytea || int4send(l.table_id) || int8send(l.seq) || pg_temp.columns(g.id, g.p, g.c)) = l.hash
 ORDER BY l.seq;
-- Rows sealed after it: format 2 puts 16 secret bytes between ledger_seq
-- and the columns; the same guesses (under either version byte, with any
-- salt the attacker can name) recover nothing.
SELECT count(*) AS recovered
  FROM leaf l CROSS JOIN guess g
  CROSS JOIN (VALUES ('\x0001'::bytea), ('\x0002'::bytea)) v(version)
  CROSS JOIN (VALUES (''::bytea), ('\x00000000000000000000000000000000'::bytea)) s(salt)
 WHERE l.seq > (SELECT last_seq FROM ehrledger.blocks WHERE height = 1)
   AND sha256('\x00'::bytea || v.version || '\x01'::bytea || int4send(l.table_id) || int8send(l.seq) || s.salt
              || pg_temp.columns(g.id, g.p, g.c)) = l.hash;
-- Nothing hands it a salt, or an encoding carrying one.
SELECT ehrledger.row_encoding('diagnosis', 1);
SELECT ehrledger.proof('diagnosis', (SELECT max(seq) FROM leaf));
SELECT count(*) FROM ehrledger.export('diagnosis');
SELECT ehrledger.sealed_row('diagnosis', (SELECT max(seq) FROM leaf));
SELECT * FROM ehrledger.verify('diagnosis');
-- Nor the bytes an author would sign: a row's encoding without number and salt.
SELECT ehrledger.signing_payload('diagnosis', '{"id": 6, "patient": "p2", "code": "F32.1"}');
-- No relation of ehrledger's that this role may read has a salt column.
SELECT c.oid::regclass AS readable_with_a_salt
  FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid
 WHERE c.relnamespace = 'ehrledger'::regnamespace AND a.attname = 'ledger_salt' AND NOT a.attisdropped
   AND (has_table_privilege(c.oid, 'SELECT') OR has_column_privilege(c.oid, a.attnum, 'SELECT'));
-- Nor may it read the copies of shared rows, which travel with their salts.
SELECT has_table_privilege('ehrledger.shared_row', 'SELECT') AS shared_row,
       has_table_privilege('ehrledger.shared_rows', 'SELECT') AS shared_rows,
       has_table_privilege('ehrledger.rejected_row', 'SELECT') AS rejected_row;
RESET ROLE;

-- A role that may read the table gets the salts with the rows: in the
-- table itself, and in the encodings of proofs and exports.
SET ROLE regress_salt_reader;
SELECT count(*) AS rows_with_salt FROM diagnosis WHERE ledger_salt IS NOT NULL;
SELECT substring(ehrledger.row_encoding('diagnosis', ledger_seq) FROM 15 FOR 16) = ledger_salt AS encoding_carries_salt
  FROM diagnosis WHERE id = 6;
SELECT ehrledger.signing_payload('diagnosis', '{"id": 6, "patient": "p2", "code": "F32.1"}') IS NOT NULL AS payload;
RESET ROLE;

-- Proofs of rows of both formats hold, checked by ehrledger-verify's code.
SELECT id, (SELECT verdict FROM ehrledger.check_proof(ehrledger.proof('diagnosis', ledger_seq)::text,
                                                     ehrledger.digest()::text)) AS verdict,
       ehrledger.proof('diagnosis', ledger_seq) -> 'row' AS proved_row
  FROM diagnosis WHERE id IN (1, 6) ORDER BY id;
SELECT verdict FROM ehrledger.check_export(
    (SELECT string_agg(line, E'\n') FROM ehrledger.export('diagnosis')), ehrledger.digest()::text);

-- A shared row travels with its salt, and re-encodes to its leaf; rows of
-- format 1 travel without one.
SELECT ehrledger.share('diagnosis');
SELECT ("row"->>'id')::int AS id, "row" ? 'ledger_salt' AS has_salt_member,
       "row"->>'ledger_salt' IS NOT NULL AS salted, verdict
  FROM ehrledger.shared_rows WHERE table_name = 'public.diagnosis' AND ("row"->>'id')::int IN (1, 6)
 ORDER BY 1;

-- A versioned table: a new version gets a salt of its own; the earlier one
-- keeps its salt in the history table; the end of a salted version is of
-- format 2 and commits to the ended version's salt.  history() shows rows
-- without the ledger's columns.
CREATE TABLE problem_list (id int PRIMARY KEY, patient text, code text);
SELECT ehrledger.protect('problem_list', mode => 'versioned');
INSERT INTO problem_list VALUES (1, 'p1', 'R51');
CREATE TEMP TABLE first_version AS SELECT ledger_seq, ledger_salt FROM problem_list;
UPDATE problem_list SET code = 'G43.909';
SELECT history AS problem_history FROM ehrledger.protected_tables WHERE tbl = 'problem_list'::regclass \gset
SELECT (SELECT ledger_salt FROM problem_list) <> (SELECT ledger_salt FROM first_version) AS new_salt,
       h.ledger_salt = f.ledger_salt AS history_keeps_salt
  FROM :problem_history h, first_version f WHERE h.ledger_seq = f.ledger_seq;
SELECT ledger_seq = (SELECT ledger_seq FROM first_version) AS first, "row", current, ended_how
  FROM ehrledger.history('problem_list') ORDER BY ledger_seq;
SELECT ehrledger.seal() > 0 AS sealed;
SELECT substr(decode(j->>'encoding', 'hex'), 1, 2) AS version_kind,
       substr(decode(j->>'encoding', 'hex'), 15, 16) = (SELECT ledger_salt FROM first_version) AS ended_versions_salt
  FROM (SELECT line::jsonb AS j FROM ehrledger.export('problem_list')) x WHERE j ? 'ended';
SELECT ok, rows_checked, problems FROM ehrledger.verify('problem_list');

-- Hostile table owners.  A salt the writer gives is replaced.
CREATE TABLE owned (id int PRIMARY KEY, note text);
ALTER TABLE owned OWNER TO regress_salt_owner;
SELECT ehrledger.protect('owned');
CREATE FUNCTION owned_pin_salt() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.ledger_salt := CASE WHEN NEW.id = 2 THEN '\x00000000000000000000000000000000'::bytea ELSE '\x01'::bytea END;
    RETURN NEW;
END $$;
SET ROLE regress_salt_owner;
INSERT INTO owned (id, note, ledger_salt, ledger_seq, ledger_hash)
    VALUES (1, 'given', '\x000102030405060708090a0b0c0d0e0f', 1, '\x00');
SELECT ledger_salt <> '\x000102030405060708090a0b0c0d0e0f' AS salt_replaced, octet_length(ledger_salt) AS salt_bytes
  FROM owned;
-- A BEFORE trigger that would fire after the ledger's (its name sorts
-- after zz_ehrledger_insert) is refused (see guard_inheritance), and the
-- insert trigger refuses to hash while one would fire after it.  A
-- superuser can switch the schema guard off and change salts behind the
-- ledger's triggers: the stored row no longer matches the hash taken of
-- the salted row, and verify() says so, before and after sealing.  A salt
-- of another length makes no valid encoding at all.
CREATE TRIGGER zzz_pin_salt BEFORE INSERT ON owned FOR EACH ROW EXECUTE FUNCTION owned_pin_salt();
\echo :LAST_ERROR_SQLSTATE
INSERT INTO owned VALUES (2, 'pinned'), (3, 'short');
RESET ROLE;
SET session_replication_role = replica;
ALTER TABLE owned DISABLE TRIGGER ehrledger_append_only;
UPDATE owned SET ledger_salt = CASE id WHEN 2 THEN '\x00000000000000000000000000000000'::bytea ELSE '\x01' END
 WHERE id > 1;
ALTER TABLE owned ENABLE ALWAYS TRIGGER ehrledger_append_only;
RESET session_replication_role;
SELECT id, encode(ledger_salt, 'hex') AS salt FROM owned WHERE id > 1 ORDER BY id;
SELECT p->>'kind' AS kind, p->>'ledger_seq' = (SELECT ledger_seq::text FROM owned WHERE id = 2) AS row_2
  FROM ehrledger.verify('owned') v, jsonb_array_elements(v.problems) p ORDER BY p->>'ledger_seq';
SELECT ehrledger.seal() > 0 AS sealed;
SELECT p->>'kind' AS kind FROM ehrledger.verify('owned') v, jsonb_array_elements(v.problems) p
 ORDER BY p->>'ledger_seq';

-- Salts come from a key stream each server process keys on its own, 32
-- salts at a time: 2,000 rows never share a salt, nor any with the rows
-- above.
CREATE TABLE salt_check (id int PRIMARY KEY);
SELECT ehrledger.protect('salt_check');
INSERT INTO salt_check SELECT g FROM generate_series(1, 2000) g;
SELECT count(*) AS rows, count(DISTINCT ledger_salt) AS distinct_salts,
       count(*) FILTER (WHERE octet_length(ledger_salt) = 16) AS sixteen_bytes,
       count(*) FILTER (WHERE ledger_salt IN (SELECT ledger_salt FROM diagnosis
                                             UNION ALL SELECT ledger_salt FROM owned)) AS seen_before
  FROM salt_check;

-- protect() refuses a table that has a ledger_salt column already.
CREATE TABLE has_salt (id int, ledger_salt bytea);
SELECT ehrledger.protect('has_salt');

DROP EXTENSION ehrledger CASCADE;
DROP SCHEMA ehrledger CASCADE;
DROP TABLE diagnosis, problem_list, owned, has_salt, legacy, salt_check;
DROP FUNCTION owned_pin_salt();
DROP TABLE guess, leaf, first_version;
DROP FUNCTION pg_temp.columns(int, text, text);
DROP ROLE regress_salt_nobody;
DROP ROLE regress_salt_owner;
DROP ROLE regress_salt_reader;
