-- consent/actors.sql: the people behind database roles.
--
-- An actor (patient, provider, pharmacist, auditor, admin) is registered
-- with an Ed25519 public key and mapped to a database role by the role's
-- identity.  Every change is a ledgered row of ehrledger.actor_event; the
-- views actors and actor_keys read the newest state.  Signed rows
-- (src/ledger/signatures.c), consents and the access log name actors.
--
-- Next: consent.sql, whose consents and access records name these actors.

-- Tables and sequences ----------------------------------------------------

-- Actors: people and services that sign, read and consent.  Their history
-- (registration, key rotation, revocation) is a ledgered table itself.
CREATE TABLE ehrledger.actor_event (
    actor_id text NOT NULL,
    action text NOT NULL,
    role text,
    pg_role name,
    public_key bytea,
    at timestamp with time zone DEFAULT clock_timestamp() NOT NULL,
    by_role name DEFAULT SESSION_USER NOT NULL,
    CONSTRAINT actor_event_action_check CHECK ((action = ANY (ARRAY['register'::text, 'rotate'::text, 'revoke'::text, 'map'::text]))),
    CONSTRAINT actor_event_public_key_check CHECK ((octet_length(public_key) = 32)),
    CONSTRAINT actor_event_role_check CHECK ((role = ANY (ARRAY['patient'::text, 'provider'::text, 'pharmacist'::text, 'auditor'::text, 'admin'::text])))
);
COMMENT ON TABLE ehrledger.actor_event IS 'The ledgered history of actors: registrations, key rotations, revocations.';

-- Functions ---------------------------------------------------------------

-- Tells every backend's cache of signer keys, consents and break-glass to
-- forget, once the calling transaction commits: on the primary, and on
-- hot standbys when they replay the commit (a relcache invalidation).
CREATE FUNCTION ehrledger._actors_changed()
 RETURNS void
 LANGUAGE c
 SET search_path TO 'pg_catalog', 'pg_temp'
AS 'MODULE_PATHNAME', $function$ehrledger_consents_changed$function$;

CREATE FUNCTION ehrledger.register_actor(actor_id text, role text, public_key bytea, pg_role name DEFAULT NULL::name)
 RETURNS void
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
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
$function$;
COMMENT ON FUNCTION ehrledger.register_actor(text,text,bytea,name) IS 'Registers an actor (patient, provider, pharmacist, auditor or admin) with its Ed25519 public key; ledgered.';

-- The checks rotate_key() and revoke_actor() share: the actor exists and is
-- not revoked.  Takes the actor's lock.
CREATE FUNCTION ehrledger._live_actor(actor text)
 RETURNS void
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
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
$function$;

CREATE FUNCTION ehrledger.rotate_key(actor_id text, public_key bytea)
 RETURNS void
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
BEGIN
    PERFORM ehrledger._live_actor(actor_id);
    IF public_key IS NULL THEN
        RAISE EXCEPTION 'public_key must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF pg_catalog.octet_length(public_key) <> 32 THEN
        RAISE EXCEPTION 'public key must be 32 bytes, not %', pg_catalog.octet_length(public_key)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF EXISTS (SELECT 1 FROM ehrledger.actor_keys k
                WHERE k.actor_id = rotate_key.actor_id AND k.public_key = rotate_key.public_key) THEN
        RAISE EXCEPTION 'actor "%" has used this key before', actor_id
            USING ERRCODE = 'duplicate_object',
                  HINT = 'Rotate to a fresh key.';
    END IF;
    INSERT INTO ehrledger.actor_event (actor_id, action, public_key)
        VALUES (actor_id, 'rotate', public_key);
    PERFORM ehrledger._actors_changed();
END
$function$;
COMMENT ON FUNCTION ehrledger.rotate_key(text,bytea) IS 'Gives an actor a new key: rows written from now on must be signed with it; earlier rows stay judged by the key of their time.';

CREATE FUNCTION ehrledger.revoke_actor(actor_id text)
 RETURNS void
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
BEGIN
    PERFORM ehrledger._live_actor(actor_id);
    INSERT INTO ehrledger.actor_event (actor_id, action) VALUES (actor_id, 'revoke');
    PERFORM ehrledger._actors_changed();
END
$function$;
COMMENT ON FUNCTION ehrledger.revoke_actor(text) IS 'Revokes an actor and its key: it can sign nothing new; what it signed before stays valid.';

-- The key an actor held for a row numbered seq (NULL seq: its current
-- key, for a row being written).  What the insert trigger and
-- verify_record() need, and no more: actors are not public.
CREATE FUNCTION ehrledger._signer_key(actor text, seq bigint, OUT role text, OUT revoked_at text, OUT public_key bytea)
 RETURNS SETOF record
 LANGUAGE sql
 STABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
    SELECT a.role, a.revoked_at::pg_catalog.text,
           (SELECT k.public_key FROM ehrledger.actor_keys k
             WHERE k.actor_id = a.actor_id
               AND CASE WHEN seq IS NULL THEN k.until_seq IS NULL
                        ELSE k.from_seq < seq AND (k.until_seq IS NULL OR k.until_seq > seq) END)
      FROM ehrledger.actors a WHERE a.actor_id = actor
$function$;

-- Who the calling role is in the ledger: the actor mapped to it, if that
-- actor is not revoked.  Implemented in C because a SECURITY DEFINER
-- function cannot see its caller.
CREATE FUNCTION ehrledger.current_actor(OUT actor_id text, OUT role text)
 RETURNS record
 LANGUAGE c
 STABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS 'MODULE_PATHNAME', $function$ehrledger_current_actor$function$;
COMMENT ON FUNCTION ehrledger.current_actor() IS 'The actor (and its role) mapped to the current database role, or NULLs if there is none or it was revoked.';

-- The live actor a role maps to: the role's newest mapping names this very
-- role (OID and name), and the actor is not revoked.  Index-driven, since
-- every consent cache and grant asks.
CREATE FUNCTION ehrledger._actor_of(caller name, OUT actor_id text, OUT role text)
 RETURNS record
 LANGUAGE sql
 STABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
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
$function$;

-- An actor that exists, is not revoked, and (if wanted_role is given) has
-- that role.  Returns its current public key.
CREATE FUNCTION ehrledger._require_actor(actor text, what text, wanted_role text DEFAULT NULL::text)
 RETURNS bytea
 LANGUAGE plpgsql
 STABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    a ehrledger.actors%ROWTYPE;
BEGIN
    IF actor IS NULL THEN
        RAISE EXCEPTION '% must not be NULL', what USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT * INTO a FROM ehrledger.actors x WHERE x.actor_id = actor;
    IF NOT FOUND THEN
        RAISE EXCEPTION '% "%" is not a registered actor', what, actor
            USING ERRCODE = 'undefined_object',
                  HINT = 'Register it with ehrledger.register_actor().';
    ELSIF a.revoked_at IS NOT NULL THEN
        RAISE EXCEPTION '% "%" was revoked', what, actor
            USING ERRCODE = 'object_not_in_prerequisite_state';
    ELSIF wanted_role IS NOT NULL AND a.role <> wanted_role THEN
        RAISE EXCEPTION '% "%" is a %, not a %', what, actor, a.role, wanted_role
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN a.public_key;
END
$function$;

-- Changes to actors are serialised by a lock on their ledgered table, which
-- no role without write rights on it can take (advisory locks are shared
-- with every role).  Actor changes are rare administrative acts.
CREATE FUNCTION ehrledger._lock_actors()
 RETURNS void
 LANGUAGE sql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
    LOCK TABLE ehrledger.actor_event IN SHARE ROW EXCLUSIVE MODE
$function$;

-- The OID of an existing role, or an error naming it.
CREATE FUNCTION ehrledger._role_oid(pg_role name)
 RETURNS oid
 LANGUAGE plpgsql
 STABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
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
$function$;

CREATE FUNCTION ehrledger.map_role(actor_id text, pg_role name)
 RETURNS void
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
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
$function$;
COMMENT ON FUNCTION ehrledger.map_role(text,name) IS 'Maps an actor to a database role (that very role: a role created later under the same name is another), or to none with NULL; ledgered.';

-- The extension's own ledger tables ---------------------------------------

SELECT ehrledger._attach('ehrledger.actor_event', 2000000001, 'append_only', NULL, NULL, true);
ALTER TABLE ehrledger.actor_event ADD COLUMN pg_role_oid oid;

-- Views -------------------------------------------------------------------

CREATE VIEW ehrledger.actor_keys WITH (security_barrier=true) AS
    SELECT e.actor_id, e.public_key, e.at AS valid_from, e.ledger_seq AS from_seq,
           n.at AS valid_until, n.ledger_seq AS until_seq
      FROM ehrledger.actor_event e
      LEFT JOIN LATERAL (
          SELECT x.at, x.ledger_seq FROM ehrledger.actor_event x
           WHERE x.actor_id = e.actor_id AND x.ledger_seq > e.ledger_seq
           ORDER BY x.ledger_seq LIMIT 1) n ON true
     WHERE e.action IN ('register', 'rotate');
COMMENT ON VIEW ehrledger.actor_keys IS 'Every key every actor has held: a row numbered between from_seq and until_seq was written while it was valid.';

-- The newest mapping event of each actor: its registration, or a later map.
CREATE VIEW ehrledger.actors WITH (security_barrier=true) AS
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
COMMENT ON VIEW ehrledger.actors IS 'Registered actors with their role, mapped database role (role_live: that very role still exists under that name), current (or last) public key and revocation.';

-- Indexes -----------------------------------------------------------------
CREATE INDEX actor_event_actor ON ehrledger.actor_event USING btree (actor_id);
CREATE INDEX actor_event_pg_role ON ehrledger.actor_event USING btree (pg_role) WHERE (pg_role IS NOT NULL);
CREATE UNIQUE INDEX actor_event_register_once ON ehrledger.actor_event USING btree (actor_id) WHERE (action = 'register'::text);

-- What pg_dump dumps ------------------------------------------------------
SELECT pg_catalog.pg_extension_config_dump('ehrledger.actor_event', '');

-- Privileges -------------------------------------------------------------
REVOKE ALL ON FUNCTION
    ehrledger._actors_changed(),
    ehrledger.register_actor(text,text,bytea,name),
    ehrledger._live_actor(text),
    ehrledger.rotate_key(text,bytea),
    ehrledger.revoke_actor(text),
    ehrledger._signer_key(text,bigint),
    ehrledger._actor_of(name),
    ehrledger._require_actor(text,text,text),
    ehrledger._lock_actors(),
    ehrledger._role_oid(name),
    ehrledger.map_role(text,name)
    FROM PUBLIC;
