-- 13_history_paths.sql: proofs read O(log n) blocks (issue 16): each
-- subtree hash of a history path comes from one stored block's frontier
-- and hash, or from the head's frontier.  Every history and consistency
-- path of a 40-block chain, for every pair of heights, is compared with
-- RFC 6962's paths computed here in SQL from all the block hashes, and
-- checked by the very checks ehrledger-verify runs.
BEGIN;
CREATE EXTENSION ehrledger;
SELECT plan(6);

CREATE FUNCTION pg_temp.h(l bytea, r bytea) RETURNS bytea LANGUAGE sql AS
$$SELECT sha256('\x01'::bytea || l || r)$$;
CREATE FUNCTION pg_temp.split(n int) RETURNS int LANGUAGE plpgsql AS $$
DECLARE k int := 1;
BEGIN
    WHILE k * 2 < n LOOP k := k * 2; END LOOP;
    RETURN k;
END $$;
-- MTH of block hashes lo+1 .. hi (RFC 6962, recursive).
CREATE FUNCTION pg_temp.mth(lo int, hi int) RETURNS bytea LANGUAGE plpgsql AS $$
DECLARE k int;
BEGIN
    IF hi - lo = 1 THEN
        RETURN (SELECT block_hash FROM ehrledger.block WHERE height = hi);
    END IF;
    k := pg_temp.split(hi - lo);
    RETURN pg_temp.h(pg_temp.mth(lo, lo + k), pg_temp.mth(lo + k, hi));
END $$;
-- PATH(m, D[lo:hi]) as hex strings, leaf first.
CREATE FUNCTION pg_temp.path(m int, lo int, hi int) RETURNS text[] LANGUAGE plpgsql AS $$
DECLARE k int;
BEGIN
    IF hi - lo <= 1 THEN RETURN '{}'; END IF;
    k := pg_temp.split(hi - lo);
    IF m < lo + k THEN
        RETURN pg_temp.path(m, lo, lo + k) || encode(pg_temp.mth(lo + k, hi), 'hex');
    END IF;
    RETURN pg_temp.path(m, lo + k, hi) || encode(pg_temp.mth(lo, lo + k), 'hex');
END $$;
-- SUBPROOF(m, D[lo:hi], whole).
CREATE FUNCTION pg_temp.subproof(m int, lo int, hi int, whole boolean) RETURNS text[] LANGUAGE plpgsql AS $$
DECLARE k int;
BEGIN
    IF m = hi - lo THEN
        RETURN CASE WHEN whole THEN '{}'::text[] ELSE ARRAY[encode(pg_temp.mth(lo, hi), 'hex')] END;
    END IF;
    k := pg_temp.split(hi - lo);
    IF m <= k THEN
        RETURN pg_temp.subproof(m, lo, lo + k, whole) || encode(pg_temp.mth(lo + k, hi), 'hex');
    END IF;
    RETURN pg_temp.subproof(m - k, lo + k, hi, false) || encode(pg_temp.mth(lo, lo + k), 'hex');
END $$;
CREATE FUNCTION pg_temp.texts(a jsonb) RETURNS text[] LANGUAGE sql AS $$
    SELECT COALESCE(array_agg(e ORDER BY i), '{}') FROM jsonb_array_elements_text(a) WITH ORDINALITY t(e, i)
$$;

-- A chain of 40 blocks, one row each, and a digest of every height.
CREATE TABLE public.obs (id int PRIMARY KEY, v text);
SELECT ehrledger.protect('public.obs');
CREATE TEMP TABLE dg (height int PRIMARY KEY, d jsonb);
DO $$
BEGIN
    FOR i IN 1..40 LOOP
        INSERT INTO public.obs VALUES (i, 'value ' || i);
        PERFORM ehrledger.seal();
        INSERT INTO dg VALUES (i, ehrledger.digest());
    END LOOP;
END $$;
SELECT is((SELECT max(height) FROM ehrledger.block)::int, 40, 'a chain of 40 blocks');

-- Inclusion: the row of block b proved against the digest of head h >= b.
CREATE TEMP TABLE inc AS
    SELECT b.height::int AS b, d.height AS h,
           ehrledger.proof('public.obs', o.ledger_seq, d.d) AS p, d.d
      FROM ehrledger.block b JOIN public.obs o ON o.ledger_seq BETWEEN b.first_seq AND b.last_seq
      JOIN dg d ON d.height >= b.height;
SELECT is((SELECT count(*) FROM inc)::int, 820, 'every (block, head) pair proved');
SELECT is((SELECT count(*) FROM inc
            WHERE pg_temp.texts(p -> 'history_path')
                  IS DISTINCT FROM CASE WHEN b = h THEN '{}'::text[] ELSE pg_temp.path(b - 1, 0, h - 1) END)::int,
          0, 'each history path is RFC 6962''s PATH over every block hash');
SELECT is((SELECT count(*) FROM inc, ehrledger.check_proof(p::text, d::text) c WHERE c.verdict <> 'valid')::int,
          0, 'each proof is valid by the checks ehrledger-verify runs');

-- Consistency: every old digest against every newer one.
CREATE TEMP TABLE con AS
    SELECT o.height AS m, n.height AS n, ehrledger.consistency_proof(o.d, n.d) AS p, o.d AS od, n.d AS nd
      FROM dg o JOIN dg n ON o.height <= n.height;
SELECT is((SELECT count(*) FROM con
            WHERE pg_temp.texts(p -> 'consistency_path')
                  IS DISTINCT FROM CASE WHEN m = n OR m = 1 THEN '{}'::text[]
                                        ELSE pg_temp.subproof(m - 1, 0, n - 1, true) END
               OR pg_temp.texts(p -> 'history_path')
                  IS DISTINCT FROM CASE WHEN m = n THEN '{}'::text[] ELSE pg_temp.path(m - 1, 0, n - 1) END)::int,
          0, 'each consistency and history path is RFC 6962''s, over every block hash');
SELECT is((SELECT count(*) FROM con, ehrledger.check_consistency(p::text, od::text, nd::text) c
            WHERE c.verdict <> 'valid')::int,
          0, 'each consistency proof is valid by the checks ehrledger-verify runs');

SELECT * FROM finish();
ROLLBACK;
