-- ledger/erase.sql: erasure.
--
-- A note filed in the wrong chart, or a patient's right to erasure:
-- ehrledger.erase() and erase_patient() (src/ledger/erase.c) remove sealed
-- row versions (their content, and a salt with it) while their leaves stay
-- in their blocks, and write one ledgered ehrledger.erasure record per
-- erased leaf.  Only an admin actor may erase; ehrledger.erasure_approval
-- may also ask for the patient's signature or a second admin's over the
-- request (_erasure_approved()).  verify() reports a sealed leaf whose row is
-- gone as erased when an intact record names it (src/ledger/verify.c);
-- proof() and export() carry the record (src/ledger/proofs.c), which
-- ehrledger-verify checks (src/core/check.c).
--
-- Next: network.sql.

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
