-- Protecting tables: populated and empty, and what protect() refuses.
CREATE EXTENSION ehrledger;
-- PL/pgSQL line numbers are not part of the interface.
\set SHOW_CONTEXT never

-- A populated table: its existing rows enter the ledger in one step.
CREATE TABLE encounter (
    id         text PRIMARY KEY,
    patient_id text NOT NULL,
    resource   jsonb NOT NULL
);
INSERT INTO encounter
SELECT 'enc-' || g, 'pat-' || (g % 3),
       jsonb_build_object('resourceType', 'Encounter', 'id', 'enc-' || g,
                          'status', 'finished')
  FROM generate_series(1, 5) g;

SELECT ehrledger.protect('encounter');

SELECT id, ledger_seq, length(ledger_hash) AS hash_bytes
  FROM encounter ORDER BY ledger_seq;

SELECT tbl, table_id, mode, rows_at_protect FROM ehrledger.protected_tables ORDER BY internal DESC, table_id;

-- The ledger columns come last and are NOT NULL.
SELECT attname, format_type(atttypid, atttypmod), attnotnull
  FROM pg_attribute
 WHERE attrelid = 'encounter'::regclass AND attnum > 0 AND NOT attisdropped
 ORDER BY attnum;

-- Its triggers fire even under session_replication_role = replica.
SELECT tgname, tgenabled FROM pg_trigger
 WHERE tgrelid = 'encounter'::regclass AND NOT tgisinternal ORDER BY tgname;

-- An empty table.
CREATE TABLE observation (id bigserial PRIMARY KEY, resource jsonb);
SELECT ehrledger.protect('public.observation', mode => 'append_only');
SELECT tbl, mode, rows_at_protect FROM ehrledger.protected_tables ORDER BY table_id;

-- What protect() refuses, each with its own SQLSTATE.
\set VERBOSITY sqlstate
SELECT ehrledger.protect(NULL);
\set VERBOSITY default
SELECT ehrledger.protect(NULL);
SELECT ehrledger.protect('nope');
SELECT ehrledger.protect('encounter');
SELECT ehrledger.protect('observation', mode => 'immutable');
SELECT ehrledger.protect('observation', mode => NULL);
CREATE TABLE medication_request (id int, resource jsonb);
SELECT ehrledger.protect('medication_request', mode => 'versioned');
CREATE VIEW encounter_view AS SELECT * FROM encounter;
SELECT ehrledger.protect('encounter_view');
CREATE TEMPORARY TABLE scratch (x int);
SELECT ehrledger.protect('scratch');
CREATE UNLOGGED TABLE fast (x int);
SELECT ehrledger.protect('fast');
CREATE TABLE vitals (at date, v int) PARTITION BY RANGE (at);
CREATE TABLE vitals_2024 PARTITION OF vitals FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
SELECT ehrledger.protect('vitals_2024');    -- a partition: through its partitioned table (regress partitioned)
CREATE TABLE has_seq (id int, ledger_seq bigint);
SELECT ehrledger.protect('has_seq');
SELECT ehrledger.protect('ehrledger.block');
SELECT ehrledger.protect('pg_class');
CREATE TABLE weird (id int, acl aclitem);
SELECT ehrledger.protect('weird');

-- A failed protect() leaves the table as it was.
SELECT count(*) AS ledger_columns FROM pg_attribute
 WHERE attrelid = 'has_seq'::regclass AND attname = 'ledger_hash';

-- Only superusers may protect (the function is not granted to PUBLIC).
CREATE ROLE clerk;
SET ROLE clerk;
SELECT ehrledger.protect('medication_request');
RESET ROLE;
DROP ROLE clerk;

DROP EXTENSION ehrledger CASCADE;
DROP TABLE encounter, observation, medication_request, vitals, has_seq, fast, weird, ehrledger.history_3 CASCADE;
