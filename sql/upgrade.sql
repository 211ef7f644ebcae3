-- The upgrade path: install the first released version, walk every
-- ALTER EXTENSION ... UPDATE step to the default version, and compare the
-- result with a fresh install of the default version.
SET client_min_messages = warning;
SELECT name, version FROM pg_available_extension_versions
 WHERE name = 'ehrledger' ORDER BY string_to_array(version, '.')::int[];
SELECT default_version FROM pg_available_extensions WHERE name = 'ehrledger';

DO $$
DECLARE
    first text;
    target text;
    step text;
BEGIN
    SELECT version INTO first FROM pg_available_extension_versions
     WHERE name = 'ehrledger' ORDER BY string_to_array(version, '.')::int[] LIMIT 1;
    SELECT default_version INTO target FROM pg_available_extensions WHERE name = 'ehrledger';
    EXECUTE format('CREATE EXTENSION ehrledger VERSION %L', first);
    FOR step IN
        SELECT version FROM pg_available_extension_versions
         WHERE name = 'ehrledger'
           AND string_to_array(version, '.')::int[] > string_to_array(first, '.')::int[]
           AND string_to_array(version, '.')::int[] <= string_to_array(target, '.')::int[]
         ORDER BY string_to_array(version, '.')::int[]
    LOOP
        EXECUTE format('ALTER EXTENSION ehrledger UPDATE TO %L', step);
    END LOOP;
END $$;
SELECT extversion = (SELECT default_version FROM pg_available_extensions WHERE name = 'ehrledger')
       AS at_default_version
  FROM pg_extension WHERE extname = 'ehrledger';

-- The upgraded extension has exactly the objects of a fresh install.
CREATE TEMP TABLE upgraded AS
SELECT pg_describe_object(classid, objid, objsubid) AS object
  FROM pg_depend
 WHERE refclassid = 'pg_extension'::regclass AND deptype = 'e'
   AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'ehrledger');
DROP EXTENSION ehrledger;
CREATE EXTENSION ehrledger;
CREATE TEMP TABLE fresh AS
SELECT pg_describe_object(classid, objid, objsubid) AS object
  FROM pg_depend
 WHERE refclassid = 'pg_extension'::regclass AND deptype = 'e'
   AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'ehrledger');
SELECT 'only after upgrade' AS difference, object FROM (SELECT object FROM upgraded EXCEPT SELECT object FROM fresh) x
UNION ALL
SELECT 'only in fresh install', object FROM (SELECT object FROM fresh EXCEPT SELECT object FROM upgraded) y;
SELECT count(*) > 40 AS has_objects FROM fresh;

DROP EXTENSION ehrledger;
