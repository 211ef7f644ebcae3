-- 01_schema.sql: the objects CREATE EXTENSION ehrledger installs, their
-- signatures, types, and the security properties of its functions.
BEGIN;
CREATE EXTENSION ehrledger;
SELECT plan(77);

-- Schema and relations ------------------------------------------------------
SELECT has_schema('ehrledger', 'schema ehrledger exists');
SELECT has_view('ehrledger', 'blocks', 'view ehrledger.blocks exists');
SELECT has_view('ehrledger', 'protected_tables', 'view ehrledger.protected_tables exists');
SELECT has_table('ehrledger', 'block', 'table ehrledger.block (storage of blocks) exists');
SELECT has_table('ehrledger', 'registered_table', 'table ehrledger.registered_table exists');
SELECT has_table('ehrledger', 'node_key', 'table ehrledger.node_key exists');
SELECT has_sequence('ehrledger', 'ledger_seq', 'sequence ehrledger.ledger_seq exists');

SELECT columns_are('ehrledger', 'blocks',
    ARRAY['origin', 'height', 'prev_hash', 'history_root', 'root', 'leaves_hash', 'block_hash', 'first_seq',
          'last_seq', 'row_count', 'sealed_at', 'signature', 'public_key'],
    'ehrledger.blocks has exactly the documented columns');
SELECT columns_are('ehrledger', 'protected_tables',
    ARRAY['tbl', 'table_id', 'mode', 'patient_column', 'signer_column',
          'signature_column', 'protected_at', 'protected_by', 'rows_at_protect', 'internal',
          'history', 'retired_at', 'category', 'partitioned', 'partition_of'],
    'ehrledger.protected_tables has exactly the documented columns');

-- Column types of ehrledger.blocks
SELECT col_type_is('ehrledger', 'blocks', 'origin',     'text',                     'blocks.origin is text');
SELECT col_type_is('ehrledger', 'blocks', 'height',     'bigint',                   'blocks.height is bigint');
SELECT col_type_is('ehrledger', 'blocks', 'prev_hash',  'bytea',                    'blocks.prev_hash is bytea');
SELECT col_type_is('ehrledger', 'blocks', 'root',       'bytea',                    'blocks.root is bytea');
SELECT col_type_is('ehrledger', 'blocks', 'block_hash', 'bytea',                    'blocks.block_hash is bytea');
SELECT col_type_is('ehrledger', 'blocks', 'first_seq',  'bigint',                   'blocks.first_seq is bigint');
SELECT col_type_is('ehrledger', 'blocks', 'last_seq',   'bigint',                   'blocks.last_seq is bigint');
SELECT col_type_is('ehrledger', 'blocks', 'row_count',  'bigint',                   'blocks.row_count is bigint');
SELECT col_type_is('ehrledger', 'blocks', 'sealed_at',  'timestamp with time zone', 'blocks.sealed_at is timestamptz');
SELECT col_type_is('ehrledger', 'blocks', 'signature',  'bytea',                    'blocks.signature is bytea');
SELECT col_type_is('ehrledger', 'blocks', 'public_key', 'bytea',                    'blocks.public_key is bytea');

-- Column types of ehrledger.protected_tables
SELECT col_type_is('ehrledger', 'protected_tables', 'tbl',              'regclass',                 'protected_tables.tbl is regclass');
SELECT col_type_is('ehrledger', 'protected_tables', 'table_id',         'integer',                  'protected_tables.table_id is integer');
SELECT col_type_is('ehrledger', 'protected_tables', 'mode',             'text',                     'protected_tables.mode is text');
SELECT col_type_is('ehrledger', 'protected_tables', 'patient_column',   'name',                     'protected_tables.patient_column is name');
SELECT col_type_is('ehrledger', 'protected_tables', 'signer_column',    'name',                     'protected_tables.signer_column is name');
SELECT col_type_is('ehrledger', 'protected_tables', 'signature_column', 'name',                     'protected_tables.signature_column is name');
SELECT col_type_is('ehrledger', 'protected_tables', 'protected_at',     'timestamp with time zone', 'protected_tables.protected_at is timestamptz');
SELECT col_type_is('ehrledger', 'protected_tables', 'protected_by',     'name',                     'protected_tables.protected_by is name');
SELECT col_type_is('ehrledger', 'protected_tables', 'rows_at_protect',  'bigint',                   'protected_tables.rows_at_protect is bigint');

-- Functions: exact signatures ----------------------------------------------
SELECT has_function('ehrledger', 'protect', ARRAY['regclass', 'text', 'name', 'name', 'name', 'text'],
    'ehrledger.protect(regclass, text, name, name, name, text) exists');
SELECT has_function('ehrledger', 'seal', ARRAY[]::name[], 'ehrledger.seal() exists');
SELECT has_function('ehrledger', 'verify', ARRAY['regclass', 'jsonb'],
    'ehrledger.verify(regclass, jsonb) exists');
SELECT has_function('ehrledger', 'digest', ARRAY[]::name[], 'ehrledger.digest() exists');
SELECT has_function('ehrledger', 'node_public_key', ARRAY[]::name[], 'ehrledger.node_public_key() exists');
SELECT has_function('ehrledger', 'row_encoding', ARRAY['regclass', 'bigint'],
    'ehrledger.row_encoding(regclass, bigint) exists');

SELECT is((SELECT count(*)::int FROM pg_proc
            WHERE pronamespace = 'ehrledger'::regnamespace AND proname = 'protect'), 1,
    'protect has exactly one overload');
SELECT is((SELECT count(*)::int FROM pg_proc
            WHERE pronamespace = 'ehrledger'::regnamespace AND proname = 'verify'), 1,
    'verify has exactly one overload');

-- Return types
SELECT function_returns('ehrledger', 'protect', ARRAY['regclass', 'text', 'name', 'name', 'name', 'text'], 'void',
    'protect() returns void');
SELECT function_returns('ehrledger', 'seal', ARRAY[]::name[], 'bigint', 'seal() returns bigint');
SELECT function_returns('ehrledger', 'verify', ARRAY['regclass', 'jsonb'], 'setof record',
    'verify() returns a set of records');
SELECT is(pg_get_function_result('ehrledger.verify(regclass, jsonb)'::regprocedure),
    'TABLE(ok boolean, blocks_checked bigint, rows_checked bigint, problems jsonb, erased jsonb)',
    'verify() returns TABLE(ok, blocks_checked, rows_checked, problems, erased)');
SELECT function_returns('ehrledger', 'digest', ARRAY[]::name[], 'jsonb', 'digest() returns jsonb');
SELECT function_returns('ehrledger', 'node_public_key', ARRAY[]::name[], 'bytea',
    'node_public_key() returns bytea');
SELECT function_returns('ehrledger', 'row_encoding', ARRAY['regclass', 'bigint'], 'bytea',
    'row_encoding() returns bytea');

-- Argument names and defaults, which callers use with named notation
SELECT is(pg_get_function_arguments('ehrledger.protect(regclass, text, name, name, name, text)'::regprocedure),
    'tbl regclass, mode text DEFAULT ''append_only''::text, patient_column name DEFAULT NULL::name, '
    'signer_column name DEFAULT NULL::name, signature_column name DEFAULT NULL::name, '
    'category text DEFAULT NULL::text',
    'protect() argument names and defaults');
SELECT is(pg_get_function_arguments('ehrledger.verify(regclass, jsonb)'::regprocedure),
    'tbl regclass DEFAULT NULL::regclass, digest jsonb DEFAULT NULL::jsonb',
    'verify() arguments both default to NULL');
SELECT is(pg_get_function_arguments('ehrledger.row_encoding(regclass, bigint)'::regprocedure),
    'tbl regclass, ledger_seq bigint',
    'row_encoding() argument names');

-- Security definer and search_path pinning ---------------------------------
SELECT is_definer('ehrledger', 'seal', ARRAY[]::name[], 'seal() is SECURITY DEFINER');
SELECT isnt_definer('ehrledger', 'verify', ARRAY['regclass', 'jsonb'],
    'verify() runs with the caller''s rights, which it checks');
SELECT is_definer('ehrledger', 'digest', ARRAY[]::name[], 'digest() is SECURITY DEFINER');
SELECT isnt_definer('ehrledger', 'protect', ARRAY['regclass', 'text', 'name', 'name', 'name', 'text'],
    'protect() runs with the caller''s rights');
SELECT isnt_definer('ehrledger', 'row_encoding', ARRAY['regclass', 'bigint'],
    'row_encoding() runs with the caller''s rights');
SELECT isnt_definer('ehrledger', 'node_public_key', ARRAY[]::name[],
    'node_public_key() runs with the caller''s rights');

SELECT cmp_ok((SELECT count(*)::int FROM pg_proc
                WHERE pronamespace = 'ehrledger'::regnamespace AND prosecdef), '>=', 3,
    'at least seal, digest and the schema guard are security definer functions');
SELECT is_empty($$
    SELECT p.oid::regprocedure::text FROM pg_proc p
     WHERE p.pronamespace = 'ehrledger'::regnamespace AND p.prosecdef
       AND NOT EXISTS (SELECT 1 FROM unnest(p.proconfig) AS c WHERE c LIKE 'search_path=%')
$$, 'every SECURITY DEFINER function in ehrledger pins search_path with proconfig');
SELECT is_empty($$
    SELECT p.oid::regprocedure::text FROM pg_proc p, unnest(p.proconfig) AS c
     WHERE p.pronamespace = 'ehrledger'::regnamespace AND p.prosecdef
       AND c LIKE 'search_path=%'
       AND (c NOT LIKE '%pg_temp' OR c NOT LIKE 'search_path=pg_catalog%')
$$, 'every SECURITY DEFINER function searches pg_catalog first and pg_temp last');
SELECT is_empty($$
    SELECT p.oid::regprocedure::text FROM pg_proc p
     WHERE p.pronamespace = 'ehrledger'::regnamespace
       AND p.prolang = (SELECT oid FROM pg_language WHERE lanname = 'plpgsql')
       AND NOT EXISTS (SELECT 1 FROM unnest(p.proconfig) AS c WHERE c LIKE 'search_path=%')
$$, 'every PL/pgSQL function in ehrledger pins search_path');

-- Other function properties
SELECT is_strict('ehrledger', 'row_encoding', ARRAY['regclass', 'bigint'], 'row_encoding() is STRICT');
SELECT volatility_is('ehrledger', 'seal', ARRAY[]::name[], 'volatile', 'seal() is VOLATILE');
SELECT volatility_is('ehrledger', 'verify', ARRAY['regclass', 'jsonb'], 'volatile', 'verify() is VOLATILE');
SELECT volatility_is('ehrledger', 'digest', ARRAY[]::name[], 'volatile', 'digest() is VOLATILE');

-- Privileges -----------------------------------------------------------------
SELECT ok(NOT has_function_privilege('public', 'ehrledger.seal()', 'EXECUTE'),
    'PUBLIC cannot execute seal()');
SELECT ok(NOT has_function_privilege('public',
        'ehrledger.protect(regclass, text, name, name, name, text)', 'EXECUTE'),
    'PUBLIC cannot execute protect()');
SELECT ok(NOT has_function_privilege('public', 'ehrledger.check_hashable(regclass)', 'EXECUTE'),
    'PUBLIC cannot execute check_hashable()');
SELECT ok(has_function_privilege('public', 'ehrledger.verify(regclass, jsonb)', 'EXECUTE'),
    'PUBLIC can execute verify()');
SELECT ok(has_function_privilege('public', 'ehrledger.digest()', 'EXECUTE'),
    'PUBLIC can execute digest()');
SELECT ok(has_function_privilege('public', 'ehrledger.node_public_key()', 'EXECUTE'),
    'PUBLIC can execute node_public_key()');
SELECT ok(has_function_privilege('public', 'ehrledger.row_encoding(regclass, bigint)', 'EXECUTE'),
    'PUBLIC can execute row_encoding()');
SELECT ok(has_table_privilege('public', 'ehrledger.blocks', 'SELECT'),
    'PUBLIC can read ehrledger.blocks');
SELECT ok(has_table_privilege('public', 'ehrledger.protected_tables', 'SELECT'),
    'PUBLIC can read ehrledger.protected_tables');
SELECT ok(has_table_privilege('public', 'ehrledger.block', 'SELECT')
          AND NOT has_table_privilege('public', 'ehrledger.block', 'INSERT')
          AND NOT has_table_privilege('public', 'ehrledger.block', 'UPDATE')
          AND NOT has_table_privilege('public', 'ehrledger.block', 'DELETE'),
    'PUBLIC may read the (hash-only) ehrledger.block but not change it');
SELECT ok(NOT has_table_privilege('public', 'ehrledger.registered_table', 'INSERT')
          AND NOT has_table_privilege('public', 'ehrledger.registered_table', 'DELETE'),
    'PUBLIC cannot change ehrledger.registered_table');
SELECT ok(NOT has_table_privilege('public', 'ehrledger.node_key', 'INSERT'),
    'PUBLIC cannot add node keys');
SELECT ok(NOT has_sequence_privilege('public', 'ehrledger.ledger_seq', 'USAGE')
          AND NOT has_sequence_privilege('public', 'ehrledger.ledger_seq', 'UPDATE'),
    'PUBLIC cannot draw or set ledger sequence numbers');

-- Simple behaviour of the key function
SELECT is(octet_length(ehrledger.node_public_key()), 32, 'node_public_key() is 32 bytes');
SELECT is(ehrledger.node_public_key(), ehrledger.node_public_key(), 'node_public_key() is stable');
SELECT isnt(ehrledger.node_public_key(), '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea,
    'node_public_key() is not all zeros');

SELECT * FROM finish();
ROLLBACK;
