-- ledger/verify.sql: verification, proofs and digests.
--
-- verify() rechecks every block and row version against the chain
-- (src/ledger/verify.c), digest() signs the chain's current state (src/ledger/digest.c),
-- proof(), consistency_proof() and export() give what an offline verifier
-- needs (src/ledger/proofs.c); the check_*() functions run src/core's checks, the
-- very code of ehrledger-verify, from SQL (src/ledger/checks.c).  Enrolments
-- (ehrledger.enrolled_table) put the columns of each table into the chain,
-- so that encodings can be read back without the catalog.
--
-- Next: the documents leave for ehrledger-verify (cli/); consent/actors.sql
-- follows in the install script.

-- Tables and sequences ----------------------------------------------------

-- Enrolments, written by the sealer (ehrledger._enrol_tables()) into the
-- block it seals: when a table enters this node's chain, and whenever its
-- name or its columns change.
CREATE TABLE ehrledger.enrolled_table (
    table_id integer NOT NULL,
    name text NOT NULL,
    columns jsonb NOT NULL,
    event text NOT NULL
);
COMMENT ON TABLE ehrledger.enrolled_table IS 'Each ledger table''s name and column decoders, ledgered: what binds a table name to its table_id in proofs and exports (docs/format.md §19).';

-- Functions: verification, digests, proofs --------------------------------

CREATE FUNCTION ehrledger.verify(tbl regclass DEFAULT NULL::regclass, digest jsonb DEFAULT NULL::jsonb)
 RETURNS TABLE(ok boolean, blocks_checked bigint, rows_checked bigint, problems jsonb, erased jsonb)
 LANGUAGE c
 SET search_path TO 'pg_catalog', 'pg_temp'
AS 'MODULE_PATHNAME', $function$ehrledger_verify$function$;
COMMENT ON FUNCTION ehrledger.verify(regclass,jsonb) IS 'Recomputes the chain, the blocks and every row (of one table, or all) and lists every problem, and every erased row with its erasure record.';

CREATE FUNCTION ehrledger.digest()
 RETURNS jsonb
 LANGUAGE c
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS 'MODULE_PATHNAME', $function$ehrledger_digest$function$;
COMMENT ON FUNCTION ehrledger.digest() IS 'A signed statement of the newest block, to keep outside the database.';

CREATE FUNCTION ehrledger.row_encoding(tbl regclass, ledger_seq bigint)
 RETURNS bytea
 LANGUAGE c
 STABLE STRICT
 SET search_path TO 'pg_catalog', 'pg_temp'
AS 'MODULE_PATHNAME', $function$ehrledger_row_encoding$function$;
COMMENT ON FUNCTION ehrledger.row_encoding(regclass,bigint) IS 'The canonical bytes of one row version; its leaf hash is sha256(''\x00'' || these bytes).';

CREATE FUNCTION ehrledger.proof(tbl regclass, ledger_seq bigint, digest jsonb DEFAULT NULL::jsonb)
 RETURNS jsonb
 LANGUAGE c
 STABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS 'MODULE_PATHNAME', $function$ehrledger_proof$function$;
COMMENT ON FUNCTION ehrledger.proof(regclass,bigint,jsonb) IS 'A proof, checkable offline, that this row version is in the state a digest names (docs/format.md §12).';

CREATE FUNCTION ehrledger.consistency_proof(old_digest jsonb, new_digest jsonb DEFAULT NULL::jsonb)
 RETURNS jsonb
 LANGUAGE c
 STABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS 'MODULE_PATHNAME', $function$ehrledger_consistency_proof$function$;
COMMENT ON FUNCTION ehrledger.consistency_proof(jsonb,jsonb) IS 'A proof, checkable offline, that the newer digest''s chain extends the older one''s (docs/format.md §13).';

CREATE FUNCTION ehrledger.export(tbl regclass)
 RETURNS TABLE(line text)
 LANGUAGE c
 STABLE STRICT
 SET search_path TO 'pg_catalog', 'pg_temp'
AS 'MODULE_PATHNAME', $function$ehrledger_export$function$;
COMMENT ON FUNCTION ehrledger.export(regclass) IS 'Every block and every sealed row of a table as JSON Lines, for ehrledger-verify (docs/format.md §14).';

CREATE FUNCTION ehrledger.history(tbl regclass, OUT ledger_seq bigint, OUT "row" jsonb, OUT current boolean, OUT ended_seq bigint, OUT ended_how text, OUT ended_at timestamp with time zone, OUT ended_by name)
 RETURNS SETOF record
 LANGUAGE c
 STABLE STRICT
 SET search_path TO 'pg_catalog', 'pg_temp'
AS 'MODULE_PATHNAME', $function$ehrledger_history$function$;
COMMENT ON FUNCTION ehrledger.history(regclass) IS 'Every version of every row of a versioned table, oldest first, with how, when and by whom each ended.';

-- Functions: signed records -----------------------------------------------

CREATE FUNCTION ehrledger.signing_payload(tbl regclass, "row" jsonb)
 RETURNS bytea
 LANGUAGE c
 STABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS 'MODULE_PATHNAME', $function$ehrledger_signing_payload$function$;
COMMENT ON FUNCTION ehrledger.signing_payload(regclass,jsonb) IS 'The exact bytes the author of a row signs (docs/format.md §15).';

CREATE FUNCTION ehrledger.verify_record(tbl regclass, ledger_seq bigint, OUT valid boolean, OUT signer text, OUT role text, OUT block bigint, OUT detail text)
 RETURNS record
 LANGUAGE c
 STABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS 'MODULE_PATHNAME', $function$ehrledger_verify_record$function$;
COMMENT ON FUNCTION ehrledger.verify_record(regclass,bigint) IS 'The pharmacist''s check of a signed row: intact, signed by whom, in which role, sealed in which block.';

-- Functions: enrolments ---------------------------------------------------

-- The columns a table's encodings may hold: [{"name", "type", "decode"}].
CREATE FUNCTION ehrledger._encoded_columns(tbl regclass)
 RETURNS jsonb
 LANGUAGE c
 STABLE STRICT
 SET search_path TO 'pg_catalog', 'pg_temp'
AS 'MODULE_PATHNAME', $function$ehrledger_encoded_columns$function$;
COMMENT ON FUNCTION ehrledger._encoded_columns(regclass) IS 'The columns a table''s encodings may hold, with their decoders: [{"name", "type", "decode"}] (docs/format.md §19).';

-- Enrols, in this node's chain, every ledger table that it has not
-- enrolled yet or whose name or columns changed since; called by the
-- sealer in its transaction.  Returns how many it enrolled.
CREATE FUNCTION ehrledger._enrol_tables()
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
COMMENT ON FUNCTION ehrledger._enrol_tables() IS 'The sealer''s: enrols every ledger table new to this node''s chain, renamed or with new columns; returns how many.';

-- A row version as it was sealed: its canonical encoding read back by the
-- decoder ehrledger-verify uses (an error if it is not what was sealed).
CREATE FUNCTION ehrledger.sealed_row(tbl regclass, ledger_seq bigint)
 RETURNS jsonb
 LANGUAGE c
 STABLE STRICT
 SET search_path TO 'pg_catalog', 'pg_temp'
AS 'MODULE_PATHNAME', $function$ehrledger_sealed_row$function$;
COMMENT ON FUNCTION ehrledger.sealed_row(regclass,bigint) IS 'A sealed row version as it was sealed, decoded from its canonical encoding (docs/format.md §19); values of types without a decoder as {"type", "hex"}.';

-- Functions: src/core's checks, from SQL ----------------------------------

-- The checks ehrledger-verify runs offline, run here by the same code
-- (src/core/check.c) on documents given as text: one row, verdict 'valid',
-- 'invalid' or 'unusable', and what was proven or why not.  trusted_key
-- pins the node key (--key); members pins the network's hospitals
-- ({"name": "hex key", ...}, --member).
CREATE FUNCTION ehrledger.check_digest(digest text, trusted_key bytea DEFAULT NULL::bytea, members jsonb DEFAULT NULL::jsonb, OUT verdict text, OUT detail text)
 RETURNS record
 LANGUAGE c
 IMMUTABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS 'MODULE_PATHNAME', $function$ehrledger_check_digest$function$;
COMMENT ON FUNCTION ehrledger.check_digest(text,bytea,jsonb) IS 'Checks a digest (and its certificate) as ehrledger-verify does, by the same code: verdict valid, invalid or unusable, and why.';

CREATE FUNCTION ehrledger.check_proof(proof text, digest text, trusted_key bytea DEFAULT NULL::bytea, members jsonb DEFAULT NULL::jsonb, OUT verdict text, OUT detail text)
 RETURNS record
 LANGUAGE c
 IMMUTABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS 'MODULE_PATHNAME', $function$ehrledger_check_proof$function$;
COMMENT ON FUNCTION ehrledger.check_proof(text,text,bytea,jsonb) IS 'Checks an inclusion proof against a digest as ehrledger-verify does, by the same code: verdict, and the row as sealed or why not.';

CREATE FUNCTION ehrledger.check_consistency(proof text, old_digest text, new_digest text, trusted_key bytea DEFAULT NULL::bytea, members jsonb DEFAULT NULL::jsonb, OUT verdict text, OUT detail text)
 RETURNS record
 LANGUAGE c
 IMMUTABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS 'MODULE_PATHNAME', $function$ehrledger_check_consistency$function$;
COMMENT ON FUNCTION ehrledger.check_consistency(text,text,text,bytea,jsonb) IS 'Checks a consistency proof against two digests as ehrledger-verify does, by the same code.';

CREATE FUNCTION ehrledger.check_export(export text, digest text, trusted_key bytea DEFAULT NULL::bytea, members jsonb DEFAULT NULL::jsonb, OUT verdict text, OUT detail text)
 RETURNS record
 LANGUAGE c
 IMMUTABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS 'MODULE_PATHNAME', $function$ehrledger_check_export$function$;
COMMENT ON FUNCTION ehrledger.check_export(text,text,bytea,jsonb) IS 'Checks a table export (JSON Lines, as text) against a digest as ehrledger-verify does, by the same code.';

-- The extension's own ledger tables ---------------------------------------

SELECT ehrledger._attach('ehrledger.enrolled_table', 2000000011, 'append_only', NULL, NULL, true, salted => false);

-- Indexes -----------------------------------------------------------------
CREATE INDEX enrolled_table_table_id_ledger_seq_idx ON ehrledger.enrolled_table USING btree (table_id, ledger_seq);

-- What pg_dump dumps ------------------------------------------------------
SELECT pg_catalog.pg_extension_config_dump('ehrledger.enrolled_table', '');

-- Privileges --------------------------------------------------------------
GRANT SELECT ON ehrledger.enrolled_table TO PUBLIC;
REVOKE ALL ON FUNCTION
    ehrledger._encoded_columns(regclass),
    ehrledger._enrol_tables()
    FROM PUBLIC;
