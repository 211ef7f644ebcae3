-- 07_signatures_proofs.sql: Ed25519 keys and signatures, actors and their
-- ledgered key history, signed tables checked at insert, verify_record(),
-- and the offline-checkable evidence: proof(), consistency_proof(), export().
--
-- Nothing here hard-codes a hash: every expected value is recomputed in SQL
-- from the formats of docs/format.md (RFC 6962 trees included).
BEGIN;
CREATE EXTENSION ehrledger;
SELECT plan(221);

-- Helpers ---------------------------------------------------------------------
CREATE FUNCTION pg_temp.node_name() RETURNS text LANGUAGE sql AS $$
    SELECT COALESCE(NULLIF(current_setting('ehrledger.node_name'), ''),
                    'node-' || (SELECT system_identifier FROM pg_control_system()))
$$;
CREATE FUNCTION pg_temp.h(l bytea, r bytea) RETURNS bytea LANGUAGE sql AS
$$SELECT sha256('\x01'::bytea || l || r)$$;
-- Like bool_and(), but a NULL counts as false and no rows at all give NULL:
-- an ok() over it fails unless there are rows and every one is true.
CREATE FUNCTION pg_temp.and_true(s boolean, v boolean) RETURNS boolean LANGUAGE sql AS
$$SELECT coalesce(s, true) AND coalesce(v, false)$$;
CREATE AGGREGATE pg_temp.every_true(boolean) (sfunc = pg_temp.and_true, stype = boolean);
-- A JSON array of hex strings as bytea[].
CREATE FUNCTION pg_temp.hexes(a jsonb) RETURNS bytea[] LANGUAGE sql AS $$
    SELECT COALESCE(array_agg(decode(e, 'hex') ORDER BY i), '{}')
      FROM jsonb_array_elements_text(a) WITH ORDINALITY AS t(e, i)
$$;
-- Largest power of two strictly smaller than n (n >= 2).
CREATE FUNCTION pg_temp.split(n int) RETURNS int LANGUAGE plpgsql AS $$
DECLARE k int := 1;
BEGIN
    WHILE k * 2 < n LOOP k := k * 2; END LOOP;
    RETURN k;
END $$;
-- RFC 6962 Merkle Tree Hash of leaf hashes d[lo..hi] (1-based, inclusive).
CREATE FUNCTION pg_temp.mth(d bytea[], lo int, hi int) RETURNS bytea LANGUAGE plpgsql AS $$
DECLARE k int;
BEGIN
    IF hi < lo THEN RETURN sha256(''::bytea); END IF;
    IF hi = lo THEN RETURN d[lo]; END IF;
    k := pg_temp.split(hi - lo + 1);
    RETURN pg_temp.h(pg_temp.mth(d, lo, lo + k - 1), pg_temp.mth(d, lo + k, hi));
END $$;
-- RFC 6962 audit path PATH(m, D[lo..hi]) (m 0-based within the range).
CREATE FUNCTION pg_temp.audit(d bytea[], lo int, hi int, m int) RETURNS bytea[] LANGUAGE plpgsql AS $$
DECLARE n int := hi - lo + 1; k int;
BEGIN
    IF n <= 1 THEN RETURN '{}'::bytea[]; END IF;
    k := pg_temp.split(n);
    IF m < k THEN
        RETURN pg_temp.audit(d, lo, lo + k - 1, m) || pg_temp.mth(d, lo + k, hi);
    END IF;
    RETURN pg_temp.audit(d, lo + k, hi, m - k) || pg_temp.mth(d, lo, lo + k - 1);
END $$;
-- RFC 9162 §2.1.3.2: does path prove leaf at index idx of a tree of size n with this root?
CREATE FUNCTION pg_temp.incl_ok(leaf bytea, idx bigint, n bigint, path jsonb, root bytea)
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE fn bigint := idx; sn bigint := n - 1; r bytea := leaf; p bytea;
BEGIN
    IF idx < 0 OR idx >= n THEN RETURN false; END IF;
    FOREACH p IN ARRAY pg_temp.hexes(path) LOOP
        IF sn = 0 THEN RETURN false; END IF;
        IF fn % 2 = 1 OR fn = sn THEN
            r := pg_temp.h(p, r);
            WHILE fn % 2 = 0 AND fn <> 0 LOOP fn := fn >> 1; sn := sn >> 1; END LOOP;
        ELSE
            r := pg_temp.h(r, p);
        END IF;
        fn := fn >> 1; sn := sn >> 1;
    END LOOP;
    RETURN sn = 0 AND r = root;
END $$;
-- RFC 9162 §2.1.4.2: does path prove the tree of size m (root1) a prefix of size n (root2)?
CREATE FUNCTION pg_temp.cons_ok(m bigint, n bigint, path jsonb, root1 bytea, root2 bytea)
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE p bytea[] := pg_temp.hexes(path); fn bigint; sn bigint; fr bytea; sr bytea; i int;
BEGIN
    IF m = 0 THEN RETURN cardinality(p) = 0; END IF;      -- the empty tree is a prefix of all
    IF m = n THEN RETURN cardinality(p) = 0 AND root1 = root2; END IF;
    IF m > n OR cardinality(p) = 0 THEN RETURN false; END IF;
    IF m & (m - 1) = 0 THEN p := root1 || p; END IF;
    fn := m - 1; sn := n - 1;
    WHILE fn % 2 = 1 LOOP fn := fn >> 1; sn := sn >> 1; END LOOP;
    fr := p[1]; sr := p[1];
    FOR i IN 2 .. cardinality(p) LOOP
        IF sn = 0 THEN RETURN false; END IF;
        IF fn % 2 = 1 OR fn = sn THEN
            fr := pg_temp.h(p[i], fr);
            sr := pg_temp.h(p[i], sr);
            WHILE fn % 2 = 0 AND fn <> 0 LOOP fn := fn >> 1; sn := sn >> 1; END LOOP;
        ELSE
            sr := pg_temp.h(sr, p[i]);
        END IF;
        fn := fn >> 1; sn := sn >> 1;
    END LOOP;
    RETURN fr = root1 AND sr = root2 AND sn = 0;
END $$;
-- A block object of a proof or export, hashed from its fields (docs/format.md §8, §11).
CREATE FUNCTION pg_temp.block_hash_of(origin text, b jsonb) RETURNS bytea LANGUAGE sql AS $$
    SELECT sha256(convert_to('ehrledger-block-1', 'UTF8') || '\x00'::bytea
                  || int2send(octet_length(convert_to(origin, 'UTF8'))::int2)
                  || convert_to(origin, 'UTF8')
                  || int8send((b ->> 'height')::bigint) || decode(b ->> 'prev_hash', 'hex')
                  || decode(b ->> 'history_root', 'hex') || decode(b ->> 'root', 'hex')
                  || decode(b ->> 'leaves_hash', 'hex')
                  || int8send((b ->> 'first_seq')::bigint) || int8send((b ->> 'last_seq')::bigint)
                  || int8send((b ->> 'row_count')::bigint)
                  || int8send((extract(epoch FROM (b ->> 'sealed_at')::timestamptz) * 1000000)::bigint)
                  || decode(b ->> 'public_key', 'hex'))
$$;
-- A block object matches the stored block of that height.
CREATE FUNCTION pg_temp.block_matches(b jsonb) RETURNS boolean LANGUAGE sql AS $$
    SELECT x.block_hash = decode(b ->> 'block_hash', 'hex') AND x.root = decode(b ->> 'root', 'hex')
       AND x.leaves_hash = decode(b ->> 'leaves_hash', 'hex')
       AND x.signature = decode(b ->> 'signature', 'hex')
       AND x.row_count = (b ->> 'row_count')::bigint AND x.first_seq = (b ->> 'first_seq')::bigint
      FROM ehrledger.blocks x WHERE x.height = (b ->> 'height')::bigint
$$;
-- The leaf hashes of a stored block, in order (44-byte packed leaves: seq, table id, hash).
CREATE FUNCTION pg_temp.leaves(hgt bigint) RETURNS bytea[] LANGUAGE sql AS $$
    SELECT array_agg(substr(b.leaves, i * 44 + 13, 32) ORDER BY i)
      FROM ehrledger.block b, generate_series(0, octet_length(b.leaves) / 44 - 1) AS i
     WHERE b.height = hgt AND b.origin = pg_temp.node_name()
$$;
-- Seals, and keeps a digest of the new head.
CREATE TEMP TABLE dg (height bigint PRIMARY KEY, d jsonb NOT NULL);
CREATE FUNCTION pg_temp.seal_and_keep() RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE h bigint := ehrledger.seal();
BEGIN
    INSERT INTO dg VALUES (h, ehrledger.digest());
    RETURN h;
END $$;
CREATE FUNCTION pg_temp.dig(h bigint) RETURNS jsonb LANGUAGE sql AS $$SELECT d FROM dg WHERE height = h$$;

-- Key pairs, one at a time so that each is fresh.
CREATE TEMP TABLE kp (name text PRIMARY KEY, public_key bytea, secret_key bytea);
INSERT INTO kp SELECT 'dr', * FROM ehrledger.keypair();
INSERT INTO kp SELECT 'dr2', * FROM ehrledger.keypair();
INSERT INTO kp SELECT 'ph', * FROM ehrledger.keypair();
INSERT INTO kp SELECT 'nurse', * FROM ehrledger.keypair();
INSERT INTO kp SELECT 'stranger', * FROM ehrledger.keypair();
INSERT INTO kp SELECT 'aud', * FROM ehrledger.keypair();
CREATE FUNCTION pg_temp.pk(n text) RETURNS bytea LANGUAGE sql AS $$SELECT public_key FROM kp WHERE name = n$$;
CREATE FUNCTION pg_temp.sk(n text) RETURNS bytea LANGUAGE sql AS $$SELECT secret_key FROM kp WHERE name = n$$;

-- keypair(), sign(), verify_signature() -----------------------------------------
SELECT is((SELECT count(DISTINCT public_key)::int FROM kp), 6, 'keypair() gives a fresh key each call');
SELECT ok((SELECT pg_temp.every_true(octet_length(public_key) = 32) FROM kp), 'keypair() public keys are 32 bytes');
SELECT ok((SELECT pg_temp.every_true(octet_length(secret_key) = 64) FROM kp), 'keypair() secret keys are 64 bytes');
SELECT ok((SELECT pg_temp.every_true(substr(secret_key, 33) = public_key) FROM kp),
    'a secret key''s second half is its public key');
SELECT is(octet_length(ehrledger.sign('\x68656c6c6f', pg_temp.sk('dr'))), 64, 'sign() gives 64 bytes');
SELECT ok(ehrledger.verify_signature('\x68656c6c6f', ehrledger.sign('\x68656c6c6f', pg_temp.sk('dr')), pg_temp.pk('dr')),
    'a signature made with the 64-byte secret key verifies');
SELECT ok(ehrledger.verify_signature('\x68656c6c6f', ehrledger.sign('\x68656c6c6f', substr(pg_temp.sk('dr'), 1, 32)), pg_temp.pk('dr')),
    'a signature made with the 32-byte seed verifies');
SELECT is(ehrledger.sign('\x68656c6c6f', substr(pg_temp.sk('dr'), 1, 32)), ehrledger.sign('\x68656c6c6f', pg_temp.sk('dr')),
    'seed and 64-byte forms give the same (deterministic) signature');
SELECT ok(ehrledger.verify_signature('', ehrledger.sign('', pg_temp.sk('dr')), pg_temp.pk('dr')),
    'the empty message can be signed and verified');
SELECT is(ehrledger.verify_signature('\x68656c6c6f', ehrledger.sign('\x68656c6c6f', pg_temp.sk('dr')), pg_temp.pk('ph')),
    false, 'a signature does not verify with another key');
SELECT is(ehrledger.verify_signature('\x68656c6c6e', ehrledger.sign('\x68656c6c6f', pg_temp.sk('dr')), pg_temp.pk('dr')),
    false, 'a signature does not verify over another message');
SELECT is(ehrledger.verify_signature('\x68656c6c6f',
        set_byte(ehrledger.sign('\x68656c6c6f', pg_temp.sk('dr')), 10,
                 get_byte(ehrledger.sign('\x68656c6c6f', pg_temp.sk('dr')), 10) # 1),
        pg_temp.pk('dr')),
    false, 'a signature with one flipped bit does not verify');
SELECT is(ehrledger.verify_signature('\x68656c6c6f', decode(repeat('00', 64), 'hex'), decode(repeat('00', 32), 'hex')),
    false, 'all-zero signature and key: false, not an error');
SELECT throws_ok($$SELECT ehrledger.sign('\x01', '\x0102')$$, '22023',
    'secret key must be 32 or 64 bytes, not 2', 'sign() with a 2-byte key');
SELECT throws_ok($$SELECT ehrledger.sign('\x01', substr(pg_temp.sk('dr'), 1, 33))$$, '22023',
    'secret key must be 32 or 64 bytes, not 33', 'sign() with a 33-byte key');
SELECT throws_ok($$SELECT ehrledger.sign('\x01', substr(pg_temp.sk('dr'), 1, 32) || pg_temp.pk('ph'))$$, '22023',
    'the 64-byte secret key''s second half is not the public key of its first',
    'sign() with a 64-byte key whose halves do not match');
SELECT throws_ok($$SELECT ehrledger.sign(NULL, pg_temp.sk('dr'))$$, '22004',
    'message must not be NULL', 'sign() with a NULL message');
SELECT throws_ok($$SELECT ehrledger.sign('\x01', NULL)$$, '22004',
    'secret key must not be NULL', 'sign() with a NULL key');
SELECT throws_ok($$SELECT ehrledger.verify_signature('\x01', '\x01', pg_temp.pk('dr'))$$, '22023',
    'signature must be 64 bytes, not 1', 'verify_signature() with a short signature');
SELECT throws_ok($$SELECT ehrledger.verify_signature('\x01', ehrledger.sign('\x01', pg_temp.sk('dr')) || '\x00'::bytea, pg_temp.pk('dr'))$$,
    '22023', 'signature must be 64 bytes, not 65', 'verify_signature() with a 65-byte signature');
SELECT throws_ok($$SELECT ehrledger.verify_signature('\x01', ehrledger.sign('\x01', pg_temp.sk('dr')), pg_temp.sk('dr'))$$,
    '22023', 'public key must be 32 bytes, not 64', 'verify_signature() with the secret key as public key');
SELECT throws_ok($$SELECT ehrledger.verify_signature(NULL, ehrledger.sign('\x01', pg_temp.sk('dr')), pg_temp.pk('dr'))$$,
    '22004', 'message must not be NULL', 'verify_signature() with a NULL message');
SELECT throws_ok($$SELECT ehrledger.verify_signature('\x01', NULL, pg_temp.pk('dr'))$$,
    '22004', 'signature must not be NULL', 'verify_signature() with a NULL signature');
SELECT throws_ok($$SELECT ehrledger.verify_signature('\x01', ehrledger.sign('\x01', pg_temp.sk('dr')), NULL)$$,
    '22004', 'public key must not be NULL', 'verify_signature() with a NULL key');
-- PostgreSQL's own bytea input errors (hex digits: 22023; escape syntax: 22P02).
SELECT throws_ok($$SELECT ehrledger.verify_signature('\xzz', '\x00', '\x00')$$, '22023',
    'invalid hexadecimal digit: "z"', 'a non-hex \x bytea literal is PostgreSQL''s input error');
SELECT throws_ok($$SELECT ehrledger.sign('\q', pg_temp.sk('dr'))$$, '22P02',
    'invalid input syntax for type bytea', 'a malformed escape-format bytea literal is PostgreSQL''s input error');

-- Actors --------------------------------------------------------------------------
CREATE ROLE ehrledger_t7_pharm NOLOGIN;
CREATE ROLE ehrledger_t7_outsider NOLOGIN;
CREATE ROLE ehrledger_t7_clerk NOLOGIN;

SELECT lives_ok($$SELECT ehrledger.register_actor('dr-house', 'provider', pg_temp.pk('dr'))$$,
    'register_actor() a provider');
SELECT lives_ok($$SELECT ehrledger.register_actor('ph-1', 'pharmacist', pg_temp.pk('ph'), 'ehrledger_t7_pharm')$$,
    'register_actor() a pharmacist mapped to a database role');
SELECT lives_ok($$SELECT ehrledger.register_actor('nurse-1', 'provider', pg_temp.pk('nurse'))$$,
    'register_actor() a second provider');
SELECT throws_ok($$SELECT ehrledger.register_actor('dr-house', 'provider', pg_temp.pk('stranger'))$$, '42710',
    'actor "dr-house" is already registered', 'registering an actor_id twice');
SELECT throws_ok($$SELECT ehrledger.register_actor('dr-house', 'auditor', pg_temp.pk('dr'))$$, '42710',
    'actor "dr-house" is already registered', 'registering an actor_id twice, even with another role');
SELECT throws_ok($$SELECT ehrledger.register_actor('x', 'doctor', pg_temp.pk('stranger'))$$, '22023',
    'unknown actor role "doctor"', 'an unknown role');
SELECT throws_ok($$SELECT ehrledger.register_actor('x', 'provider', substr(pg_temp.pk('stranger'), 1, 31))$$, '22023',
    'public key must be 32 bytes, not 31', 'a 31-byte key');
SELECT throws_ok($$SELECT ehrledger.register_actor('x', 'provider', pg_temp.pk('stranger') || '\x00'::bytea)$$, '22023',
    'public key must be 32 bytes, not 33', 'a 33-byte key');
SELECT throws_ok($$SELECT ehrledger.register_actor(NULL, 'provider', pg_temp.pk('stranger'))$$, '22004',
    'actor_id, role and public_key must not be NULL', 'a NULL actor_id');
SELECT throws_ok($$SELECT ehrledger.register_actor('x', NULL, pg_temp.pk('stranger'))$$, '22004',
    'actor_id, role and public_key must not be NULL', 'a NULL role');
SELECT throws_ok($$SELECT ehrledger.register_actor('x', 'provider', NULL)$$, '22004',
    'actor_id, role and public_key must not be NULL', 'a NULL key');
SELECT throws_ok($$SELECT ehrledger.register_actor('', 'provider', pg_temp.pk('stranger'))$$, '22023',
    'actor_id must hold 1 to 200 characters', 'an empty actor_id');
SELECT throws_ok($$SELECT ehrledger.register_actor(repeat('x', 201), 'provider', pg_temp.pk('stranger'))$$, '22023',
    'actor_id must hold 1 to 200 characters', 'a 201-character actor_id');
SELECT throws_ok($$SELECT ehrledger.register_actor('x', 'provider', pg_temp.pk('stranger'), 'ehrledger_t7_nobody')$$, '42704',
    'role "ehrledger_t7_nobody" does not exist', 'an unknown pg_role');
SELECT throws_ok($$SELECT ehrledger.register_actor('x', 'auditor', pg_temp.pk('stranger'), 'ehrledger_t7_pharm')$$, '42710',
    'role "ehrledger_t7_pharm" is already mapped to an actor', 'a pg_role already mapped to a live actor');
SELECT is((SELECT count(*)::int FROM ehrledger.actor_event WHERE actor_id = 'x'), 0,
    'no refused registration left an event');

SELECT is((SELECT array_agg(actor_id || ':' || role || ':' || coalesce(pg_role, '-') ORDER BY actor_id) FROM ehrledger.actors),
    ARRAY['dr-house:provider:-', 'nurse-1:provider:-', 'ph-1:pharmacist:ehrledger_t7_pharm'],
    'actors lists the three registered actors with role and pg_role');
SELECT ok((SELECT pg_temp.every_true(a.public_key = pg_temp.pk(k.name) AND a.revoked_at IS NULL)
             FROM ehrledger.actors a JOIN (VALUES ('dr-house', 'dr'), ('ph-1', 'ph'), ('nurse-1', 'nurse')) AS k(id, name)
               ON a.actor_id = k.id),
    'actors shows each actor''s key, none revoked');
SELECT ok((SELECT pg_temp.every_true(k.from_seq = e.ledger_seq AND k.until_seq IS NULL AND k.valid_until IS NULL)
             FROM ehrledger.actor_keys k JOIN ehrledger.actor_event e USING (actor_id)),
    'actor_keys: each key valid from its register event''s ledger_seq, open-ended');

-- Rotation and revocation
SELECT throws_ok($$SELECT ehrledger.rotate_key('nobody', pg_temp.pk('stranger'))$$, '42704',
    'actor "nobody" is not registered', 'rotate_key() of an unknown actor');
SELECT throws_ok($$SELECT ehrledger.rotate_key(NULL, pg_temp.pk('stranger'))$$, '22004',
    'actor_id must not be NULL', 'rotate_key() with a NULL actor');
SELECT throws_ok($$SELECT ehrledger.rotate_key('dr-house', NULL)$$, '22004',
    'public_key must not be NULL', 'rotate_key() with a NULL key');
SELECT throws_ok($$SELECT ehrledger.rotate_key('dr-house', substr(pg_temp.pk('dr2'), 1, 31))$$, '22023',
    'public key must be 32 bytes, not 31', 'rotate_key() with a 31-byte key');
SELECT throws_ok($$SELECT ehrledger.rotate_key('dr-house', pg_temp.pk('dr'))$$, '42710',
    'actor "dr-house" has used this key before', 'rotate_key() to the current key');
SELECT throws_ok($$SELECT ehrledger.revoke_actor('nobody')$$, '42704',
    'actor "nobody" is not registered', 'revoke_actor() of an unknown actor');
SELECT throws_ok($$SELECT ehrledger.revoke_actor(NULL)$$, '22004',
    'actor_id must not be NULL', 'revoke_actor() of NULL');

-- actor_event is a ledger table itself
SELECT is((SELECT table_id FROM ehrledger.protected_tables WHERE tbl = 'ehrledger.actor_event'::regclass),
    2000000001, 'actor_event is protected under table id 2000000001');
SELECT ok((SELECT internal FROM ehrledger.protected_tables WHERE tbl = 'ehrledger.actor_event'::regclass),
    'and marked internal');
SELECT ok((SELECT pg_temp.every_true(ledger_hash = sha256('\x00'::bytea || ehrledger.row_encoding('ehrledger.actor_event', ledger_seq)))
             FROM ehrledger.actor_event),
    'every actor event carries a ledger_seq and the hash of its canonical encoding');
SELECT throws_ok($$UPDATE ehrledger.actor_event SET role = 'admin' WHERE actor_id = 'ph-1'$$, 'LD001',
    'cannot update rows of append-only ledger table "ehrledger.actor_event"',
    'an actor event cannot be updated');
SELECT throws_ok($$DELETE FROM ehrledger.actor_event WHERE actor_id = 'nurse-1'$$, 'LD001',
    'cannot delete rows of append-only ledger table "ehrledger.actor_event"',
    'an actor event cannot be deleted');

-- Signed tables: protect() ------------------------------------------------------
CREATE TABLE public.rx (id int, drug text, dose numeric, note text, author text, sig bytea);
CREATE TABLE public.rx_bad (id int, drug text, author text, sig bytea, who varchar(40), sig2 bytea);
SELECT throws_ok($$SELECT ehrledger.protect('public.rx_bad', signer_column => 'author')$$, '22023',
    'signer_column and signature_column go together', 'signer_column without signature_column');
SELECT throws_ok($$SELECT ehrledger.protect('public.rx_bad', signature_column => 'sig')$$, '22023',
    'signer_column and signature_column go together', 'signature_column without signer_column');
SELECT throws_ok($$SELECT ehrledger.protect('public.rx_bad', signer_column => 'nope', signature_column => 'sig')$$, '42703',
    'column "nope" of public.rx_bad does not exist', 'an unknown signer column');
SELECT throws_ok($$SELECT ehrledger.protect('public.rx_bad', signer_column => 'author', signature_column => 'nope')$$, '42703',
    'column "nope" of public.rx_bad does not exist', 'an unknown signature column');
SELECT throws_ok($$SELECT ehrledger.protect('public.rx_bad', signer_column => 'id', signature_column => 'sig')$$, '42804',
    'signer column "id" of public.rx_bad must be of type text, not integer', 'a signer column that is not text');
SELECT throws_ok($$SELECT ehrledger.protect('public.rx_bad', signer_column => 'author', signature_column => 'drug')$$, '42804',
    'signature column "drug" of public.rx_bad must be of type bytea, not text', 'a signature column that is not bytea');
-- Naming one column twice is caught before the type checks (no column is
-- both text and bytea, so a type error would hide the real mistake).
SELECT throws_ok($$SELECT ehrledger.protect('public.rx_bad', signer_column => 'author', signature_column => 'author')$$, '22023',
    'signer and signature must be two different columns', 'the same column as signer and signature');
SELECT is((SELECT count(*)::int FROM ehrledger.protected_tables WHERE tbl = 'public.rx_bad'::regclass), 0,
    'no refused call protected rx_bad');
SELECT lives_ok($$SELECT ehrledger.protect('public.rx_bad', signer_column => 'who', signature_column => 'sig2')$$,
    'a varchar signer column is accepted');

SELECT lives_ok($$SELECT ehrledger.protect('public.rx', signer_column => 'author', signature_column => 'sig')$$,
    'protect() with signer and signature columns');
SELECT row_eq($$SELECT mode, signer_column, signature_column FROM ehrledger.protected_tables WHERE tbl = 'public.rx'::regclass$$,
    ROW('append_only'::text, 'author'::name, 'sig'::name)::record,
    'protected_tables records the signer and signature columns');

-- signing_payload() ---------------------------------------------------------------
CREATE FUNCTION pg_temp.rx_json(id int, drug text, dose numeric, note text, author text) RETURNS jsonb
LANGUAGE sql AS $$SELECT jsonb_build_object('id', id, 'drug', drug, 'dose', dose, 'note', note, 'author', author)$$;
CREATE FUNCTION pg_temp.payload(j jsonb) RETURNS bytea LANGUAGE sql AS
$$SELECT ehrledger.signing_payload('public.rx', j)$$;
CREATE FUNCTION pg_temp.rx_sig(id int, drug text, dose numeric, note text, author text, key text) RETURNS bytea
LANGUAGE sql AS $$SELECT ehrledger.sign(pg_temp.payload(pg_temp.rx_json(id, drug, dose, note, author)), pg_temp.sk(key))$$;
CREATE TEMP TABLE base AS SELECT pg_temp.rx_json(1, 'amoxicillin', 500, NULL, 'dr-house') AS j;
CREATE FUNCTION pg_temp.f(name text, value bytea) RETURNS bytea LANGUAGE sql AS $$
    SELECT int2send(octet_length(convert_to(name, 'UTF8'))::int2) || convert_to(name, 'UTF8')
           || int4send(octet_length(value)) || value
$$;

SELECT is(pg_temp.payload((SELECT j FROM base)),
    convert_to('ehrledger-row-signature-1', 'UTF8') || '\x00'::bytea
    || int2send(6::int2) || convert_to('public', 'UTF8') || int2send(2::int2) || convert_to('rx', 'UTF8')
    || int2send(4::int2) || pg_temp.f('id', int4send(1)) || pg_temp.f('drug', convert_to('amoxicillin', 'UTF8'))
    || pg_temp.f('dose', numeric_send(500::numeric)) || pg_temp.f('author', convert_to('dr-house', 'UTF8')),
    'signing_payload() is the bytes of docs/format.md §15 (NULL note left out)');
SELECT is(pg_temp.payload((SELECT j || '{"sig": "\\x0102", "ledger_seq": 77, "ledger_hash": "\\x00"}' FROM base)),
    pg_temp.payload((SELECT j FROM base)),
    'the signature and ledger columns are ignored');
SELECT is(pg_temp.payload((SELECT j - 'note' FROM base)), pg_temp.payload((SELECT j FROM base)),
    'a column absent from the JSON is NULL');
SELECT isnt(pg_temp.payload((SELECT j || '{"id": 2}' FROM base)), pg_temp.payload((SELECT j FROM base)),
    'the payload depends on id');
SELECT isnt(pg_temp.payload((SELECT j || '{"drug": "amoxicillin "}' FROM base)), pg_temp.payload((SELECT j FROM base)),
    'the payload depends on drug');
SELECT isnt(pg_temp.payload((SELECT j || '{"dose": 500.0}' FROM base)), pg_temp.payload((SELECT j FROM base)),
    'the payload depends on dose (even its scale)');
SELECT isnt(pg_temp.payload((SELECT j || '{"note": ""}' FROM base)), pg_temp.payload((SELECT j FROM base)),
    'the payload depends on note (empty is not NULL)');
SELECT isnt(pg_temp.payload((SELECT j || '{"author": "ph-1"}' FROM base)), pg_temp.payload((SELECT j FROM base)),
    'the payload depends on the signer column');
CREATE TABLE public.rx2 (id int, drug text, dose numeric, note text, author text, sig bytea);
SELECT ehrledger.protect('public.rx2', signer_column => 'author', signature_column => 'sig');
SELECT isnt(ehrledger.signing_payload('public.rx2', (SELECT j FROM base)), pg_temp.payload((SELECT j FROM base)),
    'the payload depends on the table name');
SELECT throws_ok($$SELECT ehrledger.signing_payload('public.rx', NULL)$$, '22004',
    'row must not be NULL', 'signing_payload() of a NULL row');
SELECT throws_ok($$SELECT ehrledger.signing_payload(NULL, '{}')$$, '22004',
    'table must not be NULL', 'signing_payload() of a NULL table');
CREATE TABLE public.plain (id int, author text, sig bytea);
SELECT throws_ok($$SELECT ehrledger.signing_payload('public.plain', '{}')$$, 'LD002',
    'table "plain" is not protected by ehrledger', 'signing_payload() of an unprotected table');
-- The payload is a row's encoding without number and salt: a role that may
-- not read the table could test guesses of its rows with it.
SET ROLE ehrledger_t7_outsider;
SELECT throws_ok($$SELECT ehrledger.signing_payload('public.rx', '{"id": 1, "drug": "amoxicillin"}')$$, '42501',
    'permission denied for table rx', 'signing_payload() needs SELECT on the table');
RESET ROLE;

-- Signed tables: inserts ------------------------------------------------------------
SELECT throws_ok($$INSERT INTO public.rx (id, drug, dose, author) VALUES (1, 'amoxicillin', 500, 'dr-house')$$,
    'LD010', 'row of signed table "rx" has no signature', 'a row without signature is refused');
SELECT throws_ok($$INSERT INTO public.rx (id, drug, dose, author, sig)
                   VALUES (1, 'amoxicillin', 500, 'dr-house', substr(pg_temp.rx_sig(1, 'amoxicillin', 500, NULL, 'dr-house', 'dr'), 1, 63))$$,
    'LD010', 'signature of a row of "rx" must be 64 bytes, not 63', 'a 63-byte signature is refused');
SELECT throws_ok($$INSERT INTO public.rx (id, drug, dose, author, sig)
                   VALUES (1, 'amoxicillin', 500, 'dr-nobody', pg_temp.rx_sig(1, 'amoxicillin', 500, NULL, 'dr-nobody', 'stranger'))$$,
    'LD010', 'row of "rx" cannot be accepted: "dr-nobody" is not a registered actor', 'an unknown signer is refused');
SELECT throws_ok($$INSERT INTO public.rx (id, drug, dose, author, sig)
                   VALUES (1, 'amoxicillin', 500, NULL, pg_temp.rx_sig(1, 'amoxicillin', 500, NULL, NULL, 'dr'))$$,
    'LD010', 'row of signed table "rx" names no signer', 'a NULL signer is refused');
SELECT throws_ok($$INSERT INTO public.rx (id, drug, dose, author, sig)
                   VALUES (1, 'amoxicillin', 5000, 'dr-house', pg_temp.rx_sig(1, 'amoxicillin', 500, NULL, 'dr-house', 'dr'))$$,
    'LD010', 'signature of "dr-house" does not verify over this row of "rx"', 'a signature over other content is refused');
SELECT throws_ok($$INSERT INTO public.rx (id, drug, dose, author, sig)
                   VALUES (1, 'amoxicillin', 500, 'dr-house', pg_temp.rx_sig(1, 'amoxicillin', 500, NULL, 'dr-house', 'ph'))$$,
    'LD010', 'signature of "dr-house" does not verify over this row of "rx"',
    'a signature by another registered actor''s key, claimed as dr-house, is refused');
SELECT throws_ok($$INSERT INTO public.rx2 (id, drug, dose, author, sig)
                   VALUES (1, 'amoxicillin', 500, 'dr-house', pg_temp.rx_sig(1, 'amoxicillin', 500, NULL, 'dr-house', 'dr'))$$,
    'LD010', 'signature of "dr-house" does not verify over this row of "rx2"',
    'a signature made for another table is refused');
SELECT is((SELECT count(*)::int FROM public.rx), 0, 'no refused row entered rx');

SELECT lives_ok($$INSERT INTO public.rx (id, drug, dose, author, sig)
                  VALUES (1, 'amoxicillin', 500, 'dr-house', pg_temp.rx_sig(1, 'amoxicillin', 500, NULL, 'dr-house', 'dr'))$$,
    'a correctly signed row is accepted');
SELECT lives_ok($$INSERT INTO public.rx (id, drug, dose, note, author, sig)
                  VALUES (2, 'ibuprofen', 400, 'after meals', 'nurse-1', pg_temp.rx_sig(2, 'ibuprofen', 400, 'after meals', 'nurse-1', 'nurse'))$$,
    'a row signed by another actor with its own key is accepted');
SELECT ok((SELECT ehrledger.verify_signature(ehrledger.signing_payload('public.rx', to_jsonb(r)), r.sig, pg_temp.pk('dr'))
             FROM public.rx r WHERE id = 1),
    'signing_payload(tbl, to_jsonb(stored row)) is what was signed');

-- verify_record() before sealing
SELECT row_eq($$SELECT valid, signer, role, block, detail FROM ehrledger.verify_record('public.rx', (SELECT ledger_seq FROM public.rx WHERE id = 1))$$,
    ROW(true, 'dr-house'::text, 'provider'::text, NULL::bigint, 'signed by dr-house; not sealed yet'::text)::record,
    'verify_record() of an unsealed row: valid, signer and role, no block');
SELECT throws_ok($$SELECT ehrledger.proof('public.rx', (SELECT ledger_seq FROM public.rx WHERE id = 1))$$, 'LD005',
    format('the ledger of node "%s" has no sealed block yet', pg_temp.node_name()), 'proof() before any block');
SELECT is((SELECT count(*)::int FROM ehrledger.export('public.rx')), 1, 'export() before any block is the header line only');

-- Block 1 -----------------------------------------------------------------------------
SELECT is(pg_temp.seal_and_keep(), 1::bigint, 'sealed block 1');
SELECT row_eq($$SELECT valid, signer, role, block, detail FROM ehrledger.verify_record('public.rx', (SELECT ledger_seq FROM public.rx WHERE id = 1))$$,
    ROW(true, 'dr-house'::text, 'provider'::text, 1::bigint, 'signed by dr-house and sealed in block 1'::text)::record,
    'verify_record() of a sealed row: valid, block 1');
-- A missing row is SQLSTATE 02000 (no_data), not PL/pgSQL's P0002.
SELECT throws_ok($$SELECT * FROM ehrledger.verify_record('public.rx', 999999)$$, '02000',
    'table "rx" has no row with ledger_seq 999999', 'verify_record() of a missing row');
CREATE TABLE public.obs (id int, value numeric);
SELECT ehrledger.protect('public.obs');
SELECT throws_ok($$SELECT * FROM ehrledger.verify_record('public.obs', 1)$$, 'LD011',
    'table "obs" is not protected with signer and signature columns', 'verify_record() of an unsigned table');
SELECT throws_ok($$SELECT * FROM ehrledger.verify_record('public.plain', 1)$$, 'LD002',
    'table "plain" is not protected by ehrledger', 'verify_record() of an unprotected table');
SELECT throws_ok($$SELECT * FROM ehrledger.verify_record(NULL, 1)$$, '22004',
    'table must not be NULL', 'verify_record() of a NULL table');

-- Rotation: old key refused for new rows, old rows still valid
SELECT lives_ok($$SELECT ehrledger.rotate_key('dr-house', pg_temp.pk('dr2'))$$, 'rotate_key() to a fresh key');
SELECT throws_ok($$SELECT ehrledger.rotate_key('dr-house', pg_temp.pk('dr'))$$, '42710',
    'actor "dr-house" has used this key before', 'rotate_key() back to an earlier key');
SELECT throws_ok($$INSERT INTO public.rx (id, drug, dose, author, sig)
                   VALUES (3, 'codeine', 30, 'dr-house', pg_temp.rx_sig(3, 'codeine', 30, NULL, 'dr-house', 'dr'))$$,
    'LD010', 'signature of "dr-house" does not verify over this row of "rx"',
    'after rotation, a new row signed with the old key is refused');
SELECT lives_ok($$INSERT INTO public.rx (id, drug, dose, author, sig)
                  VALUES (3, 'codeine', 30, 'dr-house', pg_temp.rx_sig(3, 'codeine', 30, NULL, 'dr-house', 'dr2'))$$,
    'after rotation, a new row signed with the new key is accepted');
SELECT is((SELECT valid FROM ehrledger.verify_record('public.rx', (SELECT ledger_seq FROM public.rx WHERE id = 1))), true,
    'after rotation, the row signed with the old key is still valid');
SELECT is((SELECT valid FROM ehrledger.verify_record('public.rx', (SELECT ledger_seq FROM public.rx WHERE id = 3))), true,
    'the row signed with the new key is valid');
SELECT is((SELECT public_key FROM ehrledger.actors WHERE actor_id = 'dr-house'), pg_temp.pk('dr2'),
    'actors shows the current key');
SELECT set_eq($$SELECT public_key, from_seq, until_seq FROM ehrledger.actor_keys WHERE actor_id = 'dr-house'$$,
    $$SELECT pg_temp.pk('dr') AS k, (SELECT ledger_seq FROM ehrledger.actor_event WHERE actor_id = 'dr-house' AND action = 'register') AS f,
             (SELECT ledger_seq FROM ehrledger.actor_event WHERE actor_id = 'dr-house' AND action = 'rotate') AS u
      UNION ALL
      SELECT pg_temp.pk('dr2'), (SELECT ledger_seq FROM ehrledger.actor_event WHERE actor_id = 'dr-house' AND action = 'rotate'), NULL$$,
    'actor_keys: the old key ends where the new one starts');

-- Revocation
SELECT lives_ok($$SELECT ehrledger.revoke_actor('nurse-1')$$, 'revoke_actor()');
SELECT throws_ok($$SELECT ehrledger.revoke_actor('nurse-1')$$, '55000',
    'actor "nurse-1" was revoked', 'revoking twice');
SELECT throws_ok($$SELECT ehrledger.rotate_key('nurse-1', pg_temp.pk('stranger'))$$, '55000',
    'actor "nurse-1" was revoked', 'rotate_key() of a revoked actor');
SELECT throws_ok($$INSERT INTO public.rx (id, drug, dose, author, sig)
                   VALUES (4, 'ibuprofen', 200, 'nurse-1', pg_temp.rx_sig(4, 'ibuprofen', 200, NULL, 'nurse-1', 'nurse'))$$,
    'LD010', 'row of "rx" cannot be accepted: actor "nurse-1" was revoked and can sign nothing new',
    'a revoked signer is refused');
SELECT row_eq($$SELECT valid, signer, role, block FROM ehrledger.verify_record('public.rx', (SELECT ledger_seq FROM public.rx WHERE id = 2))$$,
    ROW(true, 'nurse-1'::text, 'provider'::text, 1::bigint)::record,
    'after revocation, the revoked actor''s earlier row is still valid');
SELECT ok((SELECT revoked_at IS NOT NULL AND public_key = pg_temp.pk('nurse') FROM ehrledger.actors WHERE actor_id = 'nurse-1'),
    'actors shows the revocation and the last key');
SELECT row_eq($$SELECT from_seq, until_seq FROM ehrledger.actor_keys WHERE actor_id = 'nurse-1'$$,
    ROW((SELECT ledger_seq FROM ehrledger.actor_event WHERE actor_id = 'nurse-1' AND action = 'register'),
        (SELECT ledger_seq FROM ehrledger.actor_event WHERE actor_id = 'nurse-1' AND action = 'revoke'))::record,
    'actor_keys: a revoked key ends at the revoke event');
SELECT lives_ok($$SELECT ehrledger.register_actor('aud-1', 'auditor', pg_temp.pk('aud'), 'ehrledger_t7_clerk')$$,
    'register an auditor mapped to another role');
SELECT lives_ok($$SELECT ehrledger.revoke_actor('aud-1')$$, 'revoke it');
SELECT lives_ok($$SELECT ehrledger.register_actor('aud-2', 'auditor', pg_temp.pk('aud'), 'ehrledger_t7_clerk')$$,
    'a role mapped only to a revoked actor can be mapped again');

-- A table with rows before it was protected: signatures are checked by verify_record()
CREATE TABLE public.rx_old (id int, author text, sig bytea);
INSERT INTO public.rx_old VALUES (1, 'ph-1', NULL), (2, 'ph-1', NULL);
UPDATE public.rx_old SET sig = ehrledger.sign(
    convert_to('ehrledger-row-signature-1', 'UTF8') || '\x00'::bytea || int2send(6::int2) || convert_to('public', 'UTF8')
    || int2send(6::int2) || convert_to('rx_old', 'UTF8') || int2send(2::int2)
    || pg_temp.f('id', int4send(id)) || pg_temp.f('author', convert_to(author, 'UTF8')),
    pg_temp.sk(CASE id WHEN 1 THEN 'ph' ELSE 'stranger' END));
SELECT lives_ok($$SELECT ehrledger.protect('public.rx_old', signer_column => 'author', signature_column => 'sig')$$,
    'protect() a populated table with a signer column: existing rows are taken as they are');
SELECT row_eq($$SELECT valid, signer, role FROM ehrledger.verify_record('public.rx_old', (SELECT ledger_seq FROM public.rx_old WHERE id = 1))$$,
    ROW(true, 'ph-1'::text, 'pharmacist'::text)::record, 'an existing row correctly signed is valid');
SELECT row_eq($$SELECT valid, detail FROM ehrledger.verify_record('public.rx_old', (SELECT ledger_seq FROM public.rx_old WHERE id = 2))$$,
    ROW(false, 'the signature does not verify over the row with the signer''s key'::text)::record,
    'an existing row signed with the wrong key is reported invalid');

-- Privileges ------------------------------------------------------------------------------
GRANT SELECT ON public.rx TO ehrledger_t7_pharm;
GRANT SELECT, INSERT ON public.rx TO ehrledger_t7_clerk;
SET LOCAL ROLE ehrledger_t7_outsider;
SELECT throws_ok($$SELECT ehrledger.register_actor('y', 'patient', decode(repeat('ab', 32), 'hex'))$$, '42501',
    'permission denied for function register_actor', 'a non-superuser cannot register actors');
SELECT throws_ok($$SELECT ehrledger.rotate_key('dr-house', decode(repeat('ab', 32), 'hex'))$$, '42501',
    'permission denied for function rotate_key', 'a non-superuser cannot rotate keys');
SELECT throws_ok($$SELECT ehrledger.revoke_actor('dr-house')$$, '42501',
    'permission denied for function revoke_actor', 'a non-superuser cannot revoke actors');
SELECT throws_ok($$SELECT * FROM ehrledger.actors$$, '42501',
    'permission denied for view actors', 'a non-superuser cannot read ehrledger.actors');
SELECT throws_ok($$SELECT * FROM ehrledger.actor_keys$$, '42501',
    'permission denied for view actor_keys', 'a non-superuser cannot read ehrledger.actor_keys');
SELECT throws_ok($$SELECT * FROM ehrledger.actor_event$$, '42501',
    'permission denied for table actor_event', 'a non-superuser cannot read ehrledger.actor_event');
SELECT throws_ok($$SELECT * FROM ehrledger.verify_record('public.rx', (SELECT 1::bigint))$$, '42501',
    'permission denied for table rx', 'verify_record() needs SELECT on the table');
SELECT lives_ok($$SELECT ehrledger.verify_signature('\x01', ehrledger.sign('\x01', (ehrledger.keypair()).secret_key), '\x00'::bytea || substr(ehrledger.node_public_key(), 2))$$,
    'anyone may use keypair(), sign() and verify_signature()');
RESET ROLE;
CREATE TEMP TABLE seqs AS SELECT id, ledger_seq FROM public.rx;
GRANT SELECT ON seqs TO ehrledger_t7_pharm, ehrledger_t7_clerk;
SET LOCAL ROLE ehrledger_t7_pharm;
SELECT row_eq($$SELECT valid, signer, role, block FROM ehrledger.verify_record('public.rx', (SELECT ledger_seq FROM seqs WHERE id = 1))$$,
    ROW(true, 'dr-house'::text, 'provider'::text, 1::bigint)::record,
    'a pharmacist with SELECT on the table can verify_record()');
RESET ROLE;
CREATE TEMP TABLE clerk_row AS SELECT pg_temp.rx_sig(5, 'paracetamol', 1000, NULL, 'dr-house', 'dr2') AS sig;
GRANT SELECT ON clerk_row TO ehrledger_t7_clerk;
SET LOCAL ROLE ehrledger_t7_clerk;
SELECT lives_ok($$INSERT INTO public.rx (id, drug, dose, author, sig) SELECT 5, 'paracetamol', 1000, 'dr-house', sig FROM clerk_row$$,
    'a non-superuser with INSERT can add a correctly signed row');
SELECT throws_ok($$INSERT INTO public.rx (id, drug, dose, author, sig) SELECT 6, 'paracetamol', 1000, 'dr-house', sig FROM clerk_row$$,
    'LD010', 'signature of "dr-house" does not verify over this row of "rx"',
    'and is refused a row whose signature is for other content');
RESET ROLE;

-- Block 2 ---------------------------------------------------------------------------------
SELECT is(pg_temp.seal_and_keep(), 2::bigint, 'sealed block 2');

-- Tampering is seen by verify_record()
SET session_replication_role = replica;
ALTER TABLE public.rx DISABLE TRIGGER ALL;
RESET session_replication_role;
UPDATE public.rx SET note = 'twice a day' WHERE id = 1;
SELECT row_eq($$SELECT valid, block, detail FROM ehrledger.verify_record('public.rx', (SELECT ledger_seq FROM public.rx WHERE id = 1))$$,
    ROW(false, 1::bigint, 'the row no longer matches its sealed hash'::text)::record,
    'verify_record() of a tampered sealed row: not valid');
UPDATE public.rx SET note = NULL WHERE id = 1;
ALTER TABLE public.rx ENABLE ALWAYS TRIGGER zz_ehrledger_insert,
    ENABLE ALWAYS TRIGGER ehrledger_append_only, ENABLE ALWAYS TRIGGER ehrledger_no_truncate;
SELECT is((SELECT valid FROM ehrledger.verify_record('public.rx', (SELECT ledger_seq FROM public.rx WHERE id = 1))), true,
    'valid again once the row is restored');

-- Blocks 3 (5 rows), 4 (3 rows) and 5 (1 row) of an unsigned table ------------------------
INSERT INTO public.obs SELECT i, i * 1.5 FROM generate_series(1, 5) AS i;
SELECT is(pg_temp.seal_and_keep(), 3::bigint, 'sealed block 3');
INSERT INTO public.obs SELECT i, i * 1.5 FROM generate_series(6, 8) AS i;
SELECT is(pg_temp.seal_and_keep(), 4::bigint, 'sealed block 4');
INSERT INTO public.obs VALUES (9, 13.5);
SELECT is(pg_temp.seal_and_keep(), 5::bigint, 'sealed block 5');
INSERT INTO public.obs VALUES (10, 15);   -- never sealed
SELECT is((SELECT array_agg(row_count ORDER BY height) FROM ehrledger.blocks WHERE height >= 3), ARRAY[5, 3, 1]::bigint[],
    'blocks 3, 4 and 5 hold 5, 3 and 1 rows');

-- proof() -------------------------------------------------------------------------------------
CREATE TEMP TABLE pr AS
    SELECT o.id, o.ledger_seq, o.ledger_hash, o.ledger_salt, ehrledger.proof('public.obs', o.ledger_seq) AS p
      FROM public.obs o WHERE o.id <= 9;
CREATE TEMP VIEW p3 AS SELECT p FROM pr WHERE id = 2;

SELECT is((SELECT array_agg(k ORDER BY k) FROM p3, jsonb_object_keys(p) AS k),
    ARRAY['block', 'encoding', 'enrolment', 'format', 'head', 'history_path', 'leaf_index', 'leaf_path',
          'ledger_seq', 'origin', 'row', 'table', 'table_id'],
    'proof() has exactly the documented keys');
SELECT is((SELECT p ->> 'format' FROM p3), 'ehrledger-proof-1', 'format is ehrledger-proof-1');
SELECT is((SELECT p ->> 'origin' FROM p3), pg_temp.node_name(), 'origin is this node');
SELECT is((SELECT p ->> 'table' FROM p3), 'public.obs', 'table is schema-qualified');
SELECT is((SELECT (p ->> 'table_id')::int FROM p3),
    (SELECT table_id FROM ehrledger.protected_tables WHERE tbl = 'public.obs'::regclass), 'table_id is the table''s');
SELECT is((SELECT (p ->> 'ledger_seq')::bigint FROM pr WHERE id = 2), (SELECT ledger_seq FROM public.obs WHERE id = 2),
    'ledger_seq is the row''s');
SELECT is((SELECT p -> 'row' FROM p3), (SELECT to_jsonb(o) - ARRAY['ledger_seq', 'ledger_hash', 'ledger_salt'] FROM public.obs o WHERE id = 2),
    'row is the row as JSON, without the ledger''s columns');
SELECT is((SELECT p -> 'row' FROM p3), (SELECT ehrledger.sealed_row('public.obs', ledger_seq) FROM public.obs WHERE id = 2),
    'row is the row as sealed_row() decodes it from its encoding');
SELECT is((SELECT array_agg(k ORDER BY k) FROM p3, jsonb_object_keys(p -> 'enrolment') AS k),
    ARRAY['block', 'encoding', 'history_path', 'leaf_index', 'leaf_path', 'ledger_seq'],
    'the enrolment carries its encoding and its own inclusion in the chain');
SELECT is((SELECT e.name FROM p3, ehrledger.enrolled_table e WHERE e.ledger_seq = (p -> 'enrolment' ->> 'ledger_seq')::bigint),
    'public.obs', 'the enrolment names the table');
SELECT is((SELECT decode(p -> 'enrolment' ->> 'encoding', 'hex') FROM p3),
    ehrledger.row_encoding('ehrledger.enrolled_table', (SELECT (p -> 'enrolment' ->> 'ledger_seq')::bigint FROM p3)),
    'its encoding is the enrolment row''s');
SELECT is((SELECT decode(p ->> 'encoding', 'hex') FROM p3),
    ehrledger.row_encoding('public.obs', (SELECT ledger_seq FROM public.obs WHERE id = 2)),
    'encoding is the row''s canonical encoding');
SELECT ok((SELECT pg_temp.every_true(substr(decode(p ->> 'encoding', 'hex'), 1, 30)
                           = '\x0201'::bytea || int4send((p ->> 'table_id')::int) || int8send((p ->> 'ledger_seq')::bigint)
                             || ledger_salt)
             FROM pr),
    'every encoding starts with version 2, kind, table_id, ledger_seq and the row''s salt');
SELECT ok((SELECT pg_temp.every_true(sha256('\x00'::bytea || decode(p ->> 'encoding', 'hex')) = ledger_hash) FROM pr),
    'every encoding hashes to the row''s leaf hash');
SELECT ok((SELECT pg_temp.every_true(sha256('\x00'::bytea || decode(p ->> 'encoding', 'hex'))
                           = (pg_temp.leaves((p -> 'block' ->> 'height')::bigint))[(p ->> 'leaf_index')::int + 1])
             FROM pr),
    'the leaf at leaf_index of the block is the row''s leaf');
SELECT is((SELECT array_agg((p -> 'block' ->> 'height')::int ORDER BY id) FROM pr), ARRAY[3, 3, 3, 3, 3, 4, 4, 4, 5],
    'each proof names the block that sealed the row');
SELECT is((SELECT array_agg((p ->> 'leaf_index')::int ORDER BY id) FROM pr), ARRAY[0, 1, 2, 3, 4, 0, 1, 2, 0],
    'leaf_index is the row''s position in its block');
SELECT is((SELECT array_agg(jsonb_array_length(p -> 'leaf_path') ORDER BY id) FROM pr), ARRAY[3, 3, 3, 3, 1, 2, 2, 1, 0],
    'leaf_path lengths in trees of 5, 3 and 1 leaves are RFC 6962''s');
SELECT ok((SELECT pg_temp.every_true(jsonb_array_length(p -> 'leaf_path')
                           <= ceil(log(2, greatest((p -> 'block' ->> 'row_count')::numeric, 1)))) FROM pr),
    'no leaf_path is longer than ceil(log2(row_count))');
SELECT ok((SELECT pg_temp.every_true(pg_temp.hexes(p -> 'leaf_path')
                           = pg_temp.audit(pg_temp.leaves((p -> 'block' ->> 'height')::bigint), 1,
                                           (p -> 'block' ->> 'row_count')::int, (p ->> 'leaf_index')::int))
             FROM pr),
    'every leaf_path is the RFC 6962 audit path recomputed in SQL');
SELECT ok((SELECT pg_temp.every_true(pg_temp.incl_ok(ledger_hash, (p ->> 'leaf_index')::bigint, (p -> 'block' ->> 'row_count')::bigint,
                                           p -> 'leaf_path', decode(p -> 'block' ->> 'root', 'hex')))
             FROM pr),
    'every leaf_path passes the RFC 9162 inclusion check against the block root');
SELECT is((SELECT pg_temp.incl_ok(ledger_hash, (p ->> 'leaf_index')::bigint + 1, 5, p -> 'leaf_path',
                                  decode(p -> 'block' ->> 'root', 'hex')) FROM pr WHERE id = 2),
    false, 'the inclusion check fails at the wrong index');
SELECT is((SELECT pg_temp.incl_ok(ledger_hash, 1, 5, (p -> 'leaf_path') - 0, decode(p -> 'block' ->> 'root', 'hex'))
             FROM pr WHERE id = 2),
    false, 'the inclusion check fails with a shortened path');
SELECT is((SELECT decode(p -> 'block' ->> 'root', 'hex') FROM pr WHERE id = 1), pg_temp.mth(pg_temp.leaves(3), 1, 5),
    'block 3 root is the RFC 6962 root of its leaves');
SELECT is((SELECT decode(p -> 'block' ->> 'root', 'hex') FROM pr WHERE id = 9), (SELECT ledger_hash FROM pr WHERE id = 9),
    'a one-row block: the root is the leaf, the path empty');
SELECT ok((SELECT pg_temp.every_true(pg_temp.block_matches(p -> 'block') AND pg_temp.block_matches(p -> 'head')) FROM pr),
    'block and head objects are the stored blocks');
SELECT ok((SELECT pg_temp.every_true(pg_temp.block_hash_of(p ->> 'origin', p -> 'block') = decode(p -> 'block' ->> 'block_hash', 'hex')
                      AND pg_temp.block_hash_of(p ->> 'origin', p -> 'head') = decode(p -> 'head' ->> 'block_hash', 'hex'))
             FROM pr),
    'block and head hash, from their JSON fields, to their block_hash');
SELECT ok((SELECT pg_temp.every_true(ehrledger.verify_signature(decode(p -> 'block' ->> 'block_hash', 'hex'),
                                                      decode(p -> 'block' ->> 'signature', 'hex'),
                                                      decode(p -> 'block' ->> 'public_key', 'hex'))) FROM pr),
    'block signatures verify with verify_signature()');
SELECT ok((SELECT pg_temp.every_true((p -> 'head' ->> 'height')::int = 5) FROM pr), 'without a digest, head is the newest block');
SELECT ok((SELECT pg_temp.every_true(pg_temp.incl_ok(decode(p -> 'block' ->> 'block_hash', 'hex'), (p -> 'block' ->> 'height')::bigint - 1,
                                           (p -> 'head' ->> 'height')::bigint - 1, p -> 'history_path',
                                           decode(p -> 'head' ->> 'history_root', 'hex')))
             FROM pr WHERE (p -> 'block' ->> 'height')::int < 5),
    'history_path proves the block in the head''s history tree');
SELECT is((SELECT p -> 'history_path' FROM pr WHERE id = 9), '[]'::jsonb, 'when block is head, history_path is empty');

-- With digests
SELECT is((ehrledger.proof('public.obs', (SELECT ledger_seq FROM public.obs WHERE id = 2), pg_temp.dig(3)) -> 'head' ->> 'height')::int,
    3, 'proof with the digest of block 3: head is block 3');
SELECT is(ehrledger.proof('public.obs', (SELECT ledger_seq FROM public.obs WHERE id = 2), pg_temp.dig(3)) -> 'history_path',
    '[]'::jsonb, 'and the history path is empty');
SELECT is((ehrledger.proof('public.obs', (SELECT ledger_seq FROM public.obs WHERE id = 2), pg_temp.dig(3)) -> 'head' ->> 'block_hash'),
    pg_temp.dig(3) ->> 'block_hash', 'head is the block the digest names');
SELECT ok((SELECT pg_temp.incl_ok(decode(q -> 'block' ->> 'block_hash', 'hex'), 2, 3, q -> 'history_path',
                                  decode(q -> 'head' ->> 'history_root', 'hex'))
             FROM (SELECT ehrledger.proof('public.obs', (SELECT ledger_seq FROM public.obs WHERE id = 2), pg_temp.dig(4)) AS q) x),
    'proof with the digest of block 4: history_path proves block 3 in the tree of blocks 1-3');
SELECT ok((SELECT (q -> 'head' ->> 'height')::int = 2 AND pg_temp.incl_ok(decode(q -> 'block' ->> 'block_hash', 'hex'), 0, 1,
                                  q -> 'history_path', decode(q -> 'head' ->> 'history_root', 'hex'))
             FROM (SELECT ehrledger.proof('public.rx', (SELECT ledger_seq FROM public.rx WHERE id = 1), pg_temp.dig(2)) AS q) x),
    'a signed row of block 1 proven against the digest of block 2');
SELECT throws_ok($$SELECT ehrledger.proof('public.obs', (SELECT ledger_seq FROM public.obs WHERE id = 6), pg_temp.dig(3))$$,
    'LD007', format('row %s of "obs" is not sealed in block 3 or earlier of "regress-node"', (SELECT ledger_seq FROM public.obs WHERE id = 6)),
    'proof() of a row sealed after the digest''s block');
SELECT throws_ok($$SELECT ehrledger.proof('public.obs', (SELECT ledger_seq FROM public.obs WHERE id = 10))$$,
    'LD007', format('row %s of "obs" is not sealed in block 5 or earlier of "regress-node"', (SELECT ledger_seq FROM public.obs WHERE id = 10)),
    'proof() of an unsealed row');
-- A missing row is 02000 here too.
SELECT throws_ok($$SELECT ehrledger.proof('public.obs', 999999)$$, '02000',
    'table "obs" has no row with ledger_seq 999999', 'proof() of a missing row');
SELECT throws_ok($$SELECT ehrledger.proof('public.obs', (SELECT ledger_seq FROM public.obs WHERE id = 2),
                                          pg_temp.dig(3) || jsonb_build_object('last_seq', (pg_temp.dig(3) ->> 'last_seq')::bigint + 1))$$,
    'LD004', 'the digest''s signature does not verify', 'proof() with an altered digest');
SELECT throws_ok($$SELECT ehrledger.proof(NULL, 1)$$, '22004',
    'table and ledger_seq must not be NULL', 'proof() of a NULL table');
SELECT throws_ok($$SELECT ehrledger.proof('public.obs', NULL)$$, '22004',
    'table and ledger_seq must not be NULL', 'proof() of a NULL ledger_seq');
SELECT throws_ok($$SELECT ehrledger.proof('public.plain', 1)$$, 'LD002',
    'table "plain" is not protected by ehrledger', 'proof() of an unprotected table');
SELECT ok((SELECT (q ->> 'table') = 'ehrledger.actor_event' AND sha256('\x00'::bytea || decode(q ->> 'encoding', 'hex'))
                  = (SELECT ledger_hash FROM ehrledger.actor_event WHERE actor_id = 'dr-house' AND action = 'rotate')
             FROM (SELECT ehrledger.proof('ehrledger.actor_event',
                      (SELECT ledger_seq FROM ehrledger.actor_event WHERE actor_id = 'dr-house' AND action = 'rotate')) AS q) x),
    'the key history is provable too: proof() of an actor event');

-- Tampering: proof refuses
SET session_replication_role = replica;
ALTER TABLE public.obs DISABLE TRIGGER ALL;
RESET session_replication_role;
UPDATE public.obs SET value = 99 WHERE id = 2;
SELECT throws_ok($$SELECT ehrledger.proof('public.obs', (SELECT ledger_seq FROM public.obs WHERE id = 2))$$,
    'XX001', format('row %s of "obs" no longer matches what block 3 sealed', (SELECT ledger_seq FROM public.obs WHERE id = 2)),
    'proof() of a tampered row');
UPDATE public.obs SET value = 3.0 WHERE id = 2;
ALTER TABLE public.obs ENABLE ALWAYS TRIGGER zz_ehrledger_insert,
    ENABLE ALWAYS TRIGGER ehrledger_append_only, ENABLE ALWAYS TRIGGER ehrledger_no_truncate;
SELECT is(ehrledger.proof('public.obs', (SELECT ledger_seq FROM public.obs WHERE id = 2)), (SELECT p FROM p3),
    'once restored, the proof is the same as before');

-- consistency_proof() ---------------------------------------------------------------------
CREATE TEMP TABLE cp AS
    SELECT a.height AS m, b.height AS n, ehrledger.consistency_proof(a.d, b.d) AS c
      FROM dg a JOIN dg b ON a.height <= b.height;
SELECT is((SELECT array_agg(k ORDER BY k) FROM cp, jsonb_object_keys(c) AS k WHERE m = 2 AND n = 5),
    ARRAY['consistency_path', 'format', 'history_path', 'new', 'old', 'origin'],
    'consistency_proof() has exactly the documented keys');
SELECT is((SELECT c ->> 'format' FROM cp WHERE m = 2 AND n = 5), 'ehrledger-consistency-1', 'format is ehrledger-consistency-1');
SELECT is((SELECT c ->> 'origin' FROM cp WHERE m = 2 AND n = 5), pg_temp.node_name(), 'origin is this node');
SELECT ok((SELECT pg_temp.every_true((c -> 'old' ->> 'height')::bigint = m AND (c -> 'new' ->> 'height')::bigint = n
                           AND c -> 'old' ->> 'block_hash' = pg_temp.dig(m) ->> 'block_hash'
                           AND c -> 'new' ->> 'block_hash' = pg_temp.dig(n) ->> 'block_hash') FROM cp),
    'old and new are the blocks the digests name');
SELECT ok((SELECT pg_temp.every_true(pg_temp.block_matches(c -> 'old') AND pg_temp.block_matches(c -> 'new')
                      AND pg_temp.block_hash_of(c ->> 'origin', c -> 'old') = decode(c -> 'old' ->> 'block_hash', 'hex')
                      AND pg_temp.block_hash_of(c ->> 'origin', c -> 'new') = decode(c -> 'new' ->> 'block_hash', 'hex'))
             FROM cp),
    'old and new are the stored blocks and hash to their block_hash');
SELECT ok((SELECT pg_temp.every_true(c -> 'history_path' = '[]' AND c -> 'consistency_path' = '[]') FROM cp WHERE m = n),
    'equal digests: both paths empty');
SELECT is((SELECT count(*)::int FROM cp WHERE m < n), 10, 'ten pairs of distinct digests');
SELECT ok((SELECT pg_temp.every_true(pg_temp.incl_ok(decode(c -> 'old' ->> 'block_hash', 'hex'), m - 1, n - 1, c -> 'history_path',
                                           decode(c -> 'new' ->> 'history_root', 'hex')))
             FROM cp WHERE m < n),
    'every history_path proves the old block in the new block''s history tree');
SELECT ok((SELECT pg_temp.every_true(pg_temp.hexes(c -> 'history_path')
                           = pg_temp.audit(ARRAY(SELECT block_hash FROM ehrledger.blocks ORDER BY height), 1, n::int - 1, m::int - 1))
             FROM cp WHERE m < n),
    'every history_path is the RFC 6962 audit path recomputed in SQL');
SELECT ok((SELECT pg_temp.every_true(pg_temp.cons_ok(m - 1, n - 1, c -> 'consistency_path',
                                           decode(c -> 'old' ->> 'history_root', 'hex'), decode(c -> 'new' ->> 'history_root', 'hex')))
             FROM cp WHERE m < n),
    'every consistency_path passes the RFC 9162 consistency check');
SELECT is((SELECT pg_temp.cons_ok(2, 3, c -> 'consistency_path', decode(c -> 'old' ->> 'history_root', 'hex'),
                                  decode(c -> 'old' ->> 'history_root', 'hex'))
             FROM cp WHERE m = 3 AND n = 4),
    false, 'the consistency check fails against a wrong new root');
SELECT ok((SELECT pg_temp.every_true(jsonb_array_length(c -> 'history_path') <= ceil(log(2, (n - 1)::numeric))
                      AND jsonb_array_length(c -> 'consistency_path') <= 2 * ceil(log(2, (n - 1)::numeric)))
             FROM cp WHERE m < n AND n > 2),
    'path lengths are logarithmic');
SELECT is((SELECT c -> 'consistency_path' FROM cp WHERE m = 1 AND n = 5), '[]'::jsonb,
    'from height 1 (an empty history tree) the consistency path is empty');
SELECT ok((SELECT pg_temp.incl_ok((SELECT block_hash FROM ehrledger.blocks WHERE height = 1), 0, 4, c -> 'history_path',
                                  (SELECT history_root FROM ehrledger.blocks WHERE height = 5))
             FROM cp WHERE m = 1 AND n = 5),
    'heights 1 -> 5: history_path proves block 1 in the tree of blocks 1-4');
SELECT is(ehrledger.consistency_proof(pg_temp.dig(3)), (SELECT c FROM cp WHERE m = 3 AND n = 5),
    'without a new digest, the newest block is the new one');
SELECT throws_ok($$SELECT ehrledger.consistency_proof(pg_temp.dig(4), pg_temp.dig(2))$$, '22023',
    'the old digest (height 4) is newer than the new one (height 2)', 'old digest newer than new');
SELECT throws_ok($$SELECT ehrledger.consistency_proof(NULL, pg_temp.dig(2))$$, '22004',
    'the old digest must not be NULL', 'consistency_proof() with a NULL old digest');
SELECT throws_ok($$SELECT ehrledger.consistency_proof(pg_temp.dig(2) || jsonb_build_object('height', 3))$$, 'LD004',
    'the digest''s signature does not verify', 'consistency_proof() with an altered digest');

-- export() -----------------------------------------------------------------------------------
CREATE TEMP TABLE ex AS SELECT n, line::jsonb AS j FROM ehrledger.export('public.obs') WITH ORDINALITY AS e(line, n);
SELECT is((SELECT j FROM ex WHERE n = 1),
    jsonb_build_object('format', 'ehrledger-export-1', 'origin', pg_temp.node_name(), 'table', 'public.obs',
                       'table_id', (SELECT table_id FROM ehrledger.protected_tables WHERE tbl = 'public.obs'::regclass)),
    'the first line names format, origin, table and table_id');
SELECT is((SELECT array_agg((j -> 'block' ->> 'height')::int ORDER BY n) FROM ex WHERE j ? 'block'), ARRAY[1, 2, 3, 4, 5],
    'one line per block, in height order, right after the header');
SELECT is((SELECT max(n) FROM ex WHERE j ? 'block'), 6::bigint, 'block lines are lines 2 to 6');
SELECT ok((SELECT pg_temp.every_true(length(j ->> 'leaves') = 88 * (j -> 'block' ->> 'row_count')::int) FROM ex WHERE j ? 'block'),
    'leaves hold 44 bytes per row');
SELECT ok((SELECT pg_temp.every_true(decode(j ->> 'leaves', 'hex') = b.leaves AND pg_temp.block_matches(j -> 'block'))
             FROM ex JOIN ehrledger.block b ON b.height = (j -> 'block' ->> 'height')::bigint WHERE j ? 'block'),
    'block lines are the stored blocks and their leaves');
SELECT is((SELECT array_agg((j ->> 'ledger_seq')::bigint ORDER BY n) FROM ex WHERE j ? 'encoding'),
    (SELECT array_agg(ledger_seq ORDER BY ledger_seq) FROM public.obs WHERE id <= 9),
    'one line per sealed row, in ledger_seq order; the unsealed row is left out');
SELECT ok((SELECT pg_temp.every_true(sha256('\x00'::bytea || decode(e.j ->> 'encoding', 'hex')) = o.ledger_hash AND e.j -> 'row' = to_jsonb(o) - ARRAY['ledger_seq', 'ledger_hash', 'ledger_salt'])
             FROM ex e JOIN public.obs o ON o.ledger_seq = (e.j ->> 'ledger_seq')::bigint WHERE e.j ? 'encoding'),
    'each row line''s encoding hashes to its leaf, and row is the row');
SELECT is((SELECT array_agg((j -> 'enrolment' ->> 'ledger_seq')::bigint ORDER BY n) FROM ex WHERE j ? 'enrolment'),
    (SELECT array_agg(ledger_seq ORDER BY ledger_seq) FROM ehrledger.enrolled_table
      WHERE table_id = (SELECT table_id FROM ehrledger.protected_tables WHERE tbl = 'public.obs'::regclass)),
    'the table''s enrolments follow the blocks');
SELECT is((SELECT count(*)::int FROM ehrledger.export('public.rx') AS e(line) WHERE line::jsonb ? 'encoding'),
    (SELECT count(*)::int FROM public.rx WHERE ledger_seq <= (SELECT max(last_seq) FROM ehrledger.blocks)),
    'export() of rx has every sealed row of rx and nothing of other tables');
SELECT throws_ok($$SELECT * FROM ehrledger.export('public.plain')$$, 'LD002',
    'table "plain" is not protected by ehrledger', 'export() of an unprotected table');

SET LOCAL ROLE ehrledger_t7_outsider;
SELECT throws_ok($$SELECT ehrledger.proof('public.obs', 1)$$, '42501',
    'permission denied for table obs', 'proof() needs SELECT on the table');
SELECT throws_ok($$SELECT * FROM ehrledger.export('public.obs')$$, '42501',
    'permission denied for table obs', 'export() needs SELECT on the table');
SELECT throws_ok($$SELECT ehrledger.proof('ehrledger.actor_event', 1)$$, '42501',
    'permission denied for table actor_event', 'proof() of actor events needs SELECT on them');
RESET ROLE;
GRANT SELECT ON public.obs, pr TO ehrledger_t7_outsider;
SET LOCAL ROLE ehrledger_t7_outsider;
SELECT is(ehrledger.proof('public.obs', (SELECT ledger_seq FROM pr WHERE id = 2)), (SELECT p FROM pr WHERE id = 2),
    'with SELECT granted, proof() gives the same proof');
RESET ROLE;

-- The chain changed under a digest -----------------------------------------------------------
SELECT row_eq($$SELECT ok, problems FROM ehrledger.verify()$$, ROW(true, '[]'::jsonb)::record,
    'before the last test, the whole ledger verifies');
ALTER TABLE ehrledger.block DISABLE TRIGGER ALL;
DELETE FROM ehrledger.block WHERE height = 5;
ALTER TABLE ehrledger.block ENABLE ALWAYS TRIGGER ehrledger_append_only,
    ENABLE ALWAYS TRIGGER ehrledger_no_truncate;
SELECT throws_ok($$SELECT ehrledger.proof('public.obs', (SELECT ledger_seq FROM public.obs WHERE id = 2), pg_temp.dig(5))$$,
    'LD008', 'block 5 named by the digest is no longer in the chain as it was',
    'proof() against a digest whose block was deleted');
SELECT throws_ok($$SELECT ehrledger.consistency_proof(pg_temp.dig(3), pg_temp.dig(5))$$,
    'LD008', 'block 5 named by the digest is no longer in the chain as it was',
    'consistency_proof() to a digest whose block was deleted');

SELECT * FROM finish();
ROLLBACK;
