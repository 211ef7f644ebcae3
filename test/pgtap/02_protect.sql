-- 02_protect.sql: ehrledger.protect() on good and bad input.
BEGIN;
CREATE EXTENSION ehrledger;
SELECT plan(72);

-- An empty table ------------------------------------------------------------
CREATE TABLE public.empty_notes (id int PRIMARY KEY, body text);
SELECT hasnt_column('public', 'empty_notes', 'ledger_seq', 'before protect: no ledger_seq column');
SELECT lives_ok($$SELECT ehrledger.protect('public.empty_notes')$$, 'protect() an empty table');

SELECT has_column('public', 'empty_notes', 'ledger_seq', 'protect adds ledger_seq');
SELECT col_type_is('public', 'empty_notes', 'ledger_seq', 'bigint', 'ledger_seq is bigint');
SELECT col_not_null('public', 'empty_notes', 'ledger_seq', 'ledger_seq is NOT NULL');
SELECT has_column('public', 'empty_notes', 'ledger_hash', 'protect adds ledger_hash');
SELECT col_type_is('public', 'empty_notes', 'ledger_hash', 'bytea', 'ledger_hash is bytea');
SELECT col_not_null('public', 'empty_notes', 'ledger_hash', 'ledger_hash is NOT NULL');
SELECT col_has_default('public', 'empty_notes', 'ledger_seq', 'ledger_seq has no default (the trigger assigns it)')
  IS NULL;  -- placeholder never reached; see the next assertion
