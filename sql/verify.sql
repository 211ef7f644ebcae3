-- Verifying an intact ledger: the whole of it, one table, sealed and not.
CREATE EXTENSION ehrledger;

-- An empty ledger verifies.
SELECT * FROM ehrledger.verify();

CREATE TABLE observation (id bigserial PRIMARY KEY, resource jsonb NOT NULL);
CREATE TABLE encounter (id bigserial PRIMARY KEY, resource jsonb NOT NULL);
SELECT ehrledger.protect('observation');
SELECT ehrledger.protect('encounter');
INSERT INTO observation (resource) SELECT jsonb_build_object('n', g) FROM generate_series(1, 50) g;
INSERT INTO encounter (resource) SELECT jsonb_build_object('n', g) FROM generate_series(1, 20) g;
SELECT ehrledger.seal();
INSERT INTO observation (resource) SELECT jsonb_build_object('n', g) FROM generate_series(51, 60) g;

-- Sealed and unsealed rows are all checked.
SELECT * FROM ehrledger.verify();
SELECT * FROM ehrledger.verify('observation');
SELECT * FROM ehrledger.verify(tbl => 'encounter');
SELECT * FROM ehrledger.verify(NULL, NULL);

-- An unsealed row whose content changes is caught against its own hash.
SET session_replication_role = replica;
ALTER TABLE observation DISABLE TRIGGER ALL;
RESET session_replication_role;
UPDATE observation SET resource = '{"n": -1}' WHERE id = 55;
ALTER TABLE observation ENABLE TRIGGER ALL;
SELECT ok, problems FROM ehrledger.verify('observation');
SELECT ok FROM ehrledger.verify('encounter');

-- Bad input.
CREATE TABLE plain (x int);
SELECT * FROM ehrledger.verify('plain');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM ehrledger.verify('no_such_table');
SELECT * FROM ehrledger.verify(0);

-- Verifying a table tells how many rows it holds and which were changed:
-- it takes SELECT on the table (sql/privileges.sql shows the rest).
CREATE ROLE auditor;
SET ROLE auditor;
SELECT ok, blocks_checked FROM ehrledger.verify('encounter');
RESET ROLE;
GRANT SELECT ON encounter TO auditor;
SET ROLE auditor;
SELECT ok, blocks_checked FROM ehrledger.verify('encounter');
RESET ROLE;
REVOKE SELECT ON encounter FROM auditor;
DROP ROLE auditor;

DROP EXTENSION ehrledger CASCADE;
DROP TABLE observation, encounter, plain;
