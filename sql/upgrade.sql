-- The upgrade path: install the first released version, walk every
-- ALTER EXTENSION ... UPDATE step to the default version, and compare the
-- result, property by property, with a fresh install of the default version
-- (ehrledger--VERSION.sql, built from src/*/*.sql).
SET client_min_messages = warning;
SELECT name, version FROM pg_available_extension_versions
 WHERE name = 'ehrledger' ORDER BY string_to_array(version, '.')::int[];
SELECT default_version FROM pg_available_extensions WHERE name = 'ehrledger';

-- Privileges as a sorted list, the owner of the object named "owner".
CREATE FUNCTION pg_temp.acl_text(acl aclitem[], owner oid) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT string_agg(item, ' ' ORDER BY item)
      FROM (SELECT format('%s:%s%s', CASE a.grantee WHEN 0 THEN 'PUBLIC' WHEN owner THEN 'owner' ELSE a.grantee::regrole::text END,
                          a.privilege_type, CASE WHEN a.is_grantable THEN '*' ELSE '' END) AS item
              FROM aclexplode(acl) a) x
$$;

-- Everything about the installed extension that a fresh install and an
-- upgrade must agree on, one (object, property, value) per row.  Values of
-- more than one line or 200 characters are shown as their md5: the object
-- and property say where to look.  Privileges name the owner "owner".
CREATE FUNCTION pg_temp.ext_shape() RETURNS TABLE (object text, property text, value text)
LANGUAGE plpgsql AS $shape$
#variable_conflict use_column
BEGIN
RETURN QUERY
WITH ext AS (
    SELECT oid, extowner FROM pg_extension WHERE extname = 'ehrledger'
), members AS (
    SELECT d.classid, d.objid FROM pg_depend d, ext
     WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid = ext.oid AND d.deptype = 'e'
), ns AS (
    SELECT oid FROM pg_namespace WHERE nspname = 'ehrledger'
), props(object, property, value) AS (
    SELECT 'extension member', pg_describe_object(classid, objid, 0), NULL FROM members
    UNION ALL
    -- functions
    SELECT p.oid::regprocedure::text, x.property, x.value
      FROM pg_proc p, ns,
           LATERAL (VALUES ('definition', pg_get_functiondef(p.oid)),
                           ('volatility', p.provolatile::text),
                           ('security definer', p.prosecdef::text),
                           ('strict', p.proisstrict::text),
                           ('leakproof', p.proleakproof::text),
                           ('parallel', p.proparallel::text),
                           ('config', p.proconfig::text),
                           ('result', pg_get_function_result(p.oid)),
                           ('arguments', pg_get_function_arguments(p.oid)),
                           ('owner is the extension''s', (p.proowner = (SELECT extowner FROM ext))::text),
                           ('privileges', pg_temp.acl_text(coalesce(p.proacl, acldefault('f'::"char", p.proowner)), p.proowner)),
                           ('comment', obj_description(p.oid, 'pg_proc'))) x(property, value)
     WHERE p.pronamespace = ns.oid
    UNION ALL
    -- tables, views, sequences, indexes
    SELECT format('%s %s', c.relkind, c.oid::regclass), x.property, x.value
      FROM pg_class c, ns,
           LATERAL (VALUES ('persistence', c.relpersistence::text),
                           ('options', c.reloptions::text),
                           ('row level security', c.relrowsecurity::text),
                           ('forced row level security', c.relforcerowsecurity::text),
                           ('replica identity', c.relreplident::text),
                           ('view', pg_get_viewdef(c.oid)),
                           ('index', CASE WHEN c.relkind = 'i' THEN pg_get_indexdef(c.oid) END),
                           ('owner is the extension''s', (c.relowner = (SELECT extowner FROM ext))::text),
                           ('privileges', pg_temp.acl_text(coalesce(c.relacl, acldefault(CASE WHEN c.relkind = 'S' THEN 's' ELSE 'r' END::"char", c.relowner)), c.relowner)),
                           ('comment', obj_description(c.oid, 'pg_class'))) x(property, value)
     WHERE c.relnamespace = ns.oid AND c.relkind <> 'c'
    UNION ALL
    SELECT format('sequence %s', s.seqrelid::regclass), x.property, x.value
      FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid, ns,
           LATERAL (VALUES ('parameters', format('%s start %s increment %s min %s max %s cache %s cycle %s',
                                                 s.seqtypid::regtype, s.seqstart, s.seqincrement, s.seqmin, s.seqmax, s.seqcache, s.seqcycle)),
                           ('owned by', (SELECT format('%s.%s %s', d.refobjid::regclass, a.attname, d.deptype)
                                           FROM pg_depend d JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
                                          WHERE d.classid = 'pg_class'::regclass AND d.objid = s.seqrelid
                                            AND d.refclassid = 'pg_class'::regclass AND d.refobjsubid > 0))) x(property, value)
     WHERE c.relnamespace = ns.oid
    UNION ALL
    -- columns, in order (dropped ones left out: an upgrade may leave them)
    SELECT format('column %s.%s', c.oid::regclass, a.attname), x.property, x.value
      FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped, ns,
           LATERAL (VALUES ('position', (SELECT count(*) FROM pg_attribute b
                                          WHERE b.attrelid = c.oid AND b.attnum > 0 AND b.attnum <= a.attnum AND NOT b.attisdropped)::text),
                           ('type', format_type(a.atttypid, a.atttypmod)),
                           ('not null', a.attnotnull::text),
                           ('default', (SELECT pg_get_expr(ad.adbin, ad.adrelid) FROM pg_attrdef ad
                                         WHERE ad.adrelid = c.oid AND ad.adnum = a.attnum)),
                           ('identity', a.attidentity::text),
                           ('generated', a.attgenerated::text),
                           ('collation', a.attcollation::regcollation::text),
                           ('storage', a.attstorage::text),
                           ('compression', a.attcompression::text),
                           ('statistics', a.attstattarget::text),
                           ('privileges', pg_temp.acl_text(a.attacl, c.relowner)),
                           ('comment', col_description(c.oid, a.attnum))) x(property, value)
     WHERE c.relnamespace = ns.oid AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
    UNION ALL
    SELECT format('constraint %s on %s', co.conname, co.conrelid::regclass), x.property, x.value
      FROM pg_constraint co JOIN pg_class c ON c.oid = co.conrelid, ns,
           LATERAL (VALUES ('definition', pg_get_constraintdef(co.oid)),
                           ('validated', co.convalidated::text),
                           ('comment', obj_description(co.oid, 'pg_constraint'))) x(property, value)
     WHERE c.relnamespace = ns.oid
    UNION ALL
    SELECT format('trigger %s on %s', t.tgname, t.tgrelid::regclass), x.property, x.value
      FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid, ns,
           LATERAL (VALUES ('definition', pg_get_triggerdef(t.oid)),
                           ('enabled', t.tgenabled::text),
                           ('comment', obj_description(t.oid, 'pg_trigger'))) x(property, value)
     WHERE c.relnamespace = ns.oid AND NOT t.tgisinternal
    UNION ALL
    SELECT format('policy %s on %s.%s', p.policyname, p.schemaname, p.tablename), x.property, x.value
      FROM pg_policies p,
           LATERAL (VALUES ('definition', format('%s %s to %s using %s check %s', p.permissive, p.cmd, p.roles, p.qual, p.with_check))) x(property, value)
     WHERE p.schemaname = 'ehrledger'
    UNION ALL
    SELECT format('event trigger %s', e.evtname), x.property, x.value
      FROM pg_event_trigger e JOIN members m ON m.classid = 'pg_event_trigger'::regclass AND m.objid = e.oid,
           LATERAL (VALUES ('definition', format('%s %s %s', e.evtevent, e.evtfoid::regprocedure, e.evttags)),
                           ('enabled', e.evtenabled::text),
                           ('comment', obj_description(e.oid, 'pg_event_trigger'))) x(property, value)
    UNION ALL
    SELECT 'schema ehrledger', x.property, x.value
      FROM pg_namespace n,
           LATERAL (VALUES ('privileges', pg_temp.acl_text(coalesce(n.nspacl, acldefault('n'::"char", n.nspowner)), n.nspowner)),
                           ('comment', obj_description(n.oid, 'pg_namespace'))) x(property, value)
     WHERE n.nspname = 'ehrledger'
    UNION ALL
    -- privileges recorded at install, which pg_dump compares against
    SELECT pg_describe_object(i.classoid, i.objoid, i.objsubid), 'initial privileges',
           pg_temp.acl_text(i.initprivs, e.extowner)
      FROM pg_init_privs i JOIN members m ON m.classid = i.classoid AND m.objid = i.objoid, ext e
     WHERE i.privtype = 'e'
       -- an entry equal to the kind's default is what no entry means
       AND pg_temp.acl_text(i.initprivs, e.extowner)
           <> pg_temp.acl_text(acldefault(CASE WHEN i.classoid = 'pg_proc'::regclass THEN 'f'
                                               WHEN i.objsubid <> 0 THEN 'c'
                                               WHEN i.classoid = 'pg_namespace'::regclass THEN 'n'
                                               WHEN (SELECT relkind FROM pg_class WHERE oid = i.objoid) = 'S' THEN 's'
                                               ELSE 'r' END::"char", e.extowner), e.extowner)
    UNION ALL
    -- what pg_dump dumps of the extension's tables
    SELECT format('dumped %s', x.rel::regclass), 'condition', x.cond
      FROM pg_extension e, unnest(e.extconfig, e.extcondition) x(rel, cond)
     WHERE e.extname = 'ehrledger'
    UNION ALL
    -- the extension's own ledger tables, as registered at install
    SELECT format('ledger table %s', r.relid), 'registration', (to_jsonb(r) - 'protected_at')::text
      FROM ehrledger.registered_table r
     WHERE r.internal
)
SELECT object, property,
       CASE WHEN length(value) > 200 OR value LIKE '%' || chr(10) || '%' THEN 'md5 ' || md5(value) ELSE value END AS value
  FROM props;
END
$shape$;

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
CREATE TEMP TABLE upgraded AS SELECT * FROM pg_temp.ext_shape();
DROP EXTENSION ehrledger;
-- CREATE EXTENSION made the schema (the control file names it) but it is
-- not the extension's: it would keep the upgrade's privileges.
DROP SCHEMA ehrledger CASCADE;

-- A fresh install runs the current version's own script, not the chain:
-- the script is installed.
SELECT (pg_stat_file(c.setting || '/extension/ehrledger--' || e.default_version || '.sql')).size > 0
       AS fresh_script_installed
  FROM pg_config c, pg_available_extensions e
 WHERE c.name = 'SHAREDIR' AND e.name = 'ehrledger';
CREATE EXTENSION ehrledger;
CREATE TEMP TABLE fresh AS SELECT * FROM pg_temp.ext_shape();

-- The upgraded extension is the fresh one, property by property.
SELECT 'only after upgrade' AS difference, * FROM (SELECT * FROM upgraded EXCEPT SELECT * FROM fresh) x
UNION ALL
SELECT 'only in fresh install', * FROM (SELECT * FROM fresh EXCEPT SELECT * FROM upgraded) y
ORDER BY 2, 3, 1;
SELECT count(*) FILTER (WHERE property = 'definition' AND object LIKE 'ehrledger.%(%') > 100 AS has_functions,
       count(*) FILTER (WHERE object LIKE 'r %') > 15 AS has_tables,
       count(*) FILTER (WHERE object LIKE 'trigger %') > 30 AS has_triggers,
       count(*) FILTER (WHERE object LIKE 'column %') > 150 AS has_columns
  FROM fresh;

DROP EXTENSION ehrledger;
DROP SCHEMA ehrledger CASCADE;
