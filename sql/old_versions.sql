-- The current library serves every earlier schema: a database may run
-- 0.1, 0.2 or 0.3 until ALTER EXTENSION ehrledger UPDATE.  Protecting,
-- writing, sealing, verifying, digests and proofs work at each (or say
-- clearly that the schema is too old), and everything works after the
-- update.
SET client_min_messages = warning;
CREATE ROLE regress_old_reader;
-- From the source directory, so that errors name the steps' file the same
-- way wherever the test runs.
\getenv abs_srcdir PG_ABS_SRCDIR
\cd :abs_srcdir
\set v '0.1'
\i sql/include/old_version.sql
\set v '0.2'
\i sql/include/old_version.sql
\set v '0.3'
\i sql/include/old_version.sql
DROP ROLE regress_old_reader;
