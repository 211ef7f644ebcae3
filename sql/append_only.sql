-- An EMR application's writes to an append-only ledger table.
CREATE EXTENSION ehrledger;
CREATE TABLE observation (
    id         bigserial PRIMARY KEY,
    patient_id text NOT NULL,
    resource   jsonb NOT NULL
);
SELECT ehrledger.protect('observation');

-- The application's SQL is unchanged: with a column list, without one,
-- several rows at once, with RETURNING, with ON CONFLICT, with COPY.
INSERT INTO observation (patient_id, resource)
VALUES ('pat-1', '{"resourceType": "Observation", "code": "8867-4", "value": 72}');
INSERT INTO observation
VALUES (10, 'pat-2', '{"resourceType": "Observation", "code": "8480-6", "value": 121}');
INSERT INTO observation (patient_id, resource)
VALUES ('pat-1', '{"code": "8310-5", "value": 36.9}'),
       ('pat-3', '{"code": "2339-0", "value": 97}')
RETURNING id, patient_id, ledger_seq;
INSERT INTO observation VALUES (10, 'pat-9', '{}') ON CONFLICT DO NOTHING;
COPY observation (patient_id, resource) FROM stdin;
pat-4	{"code": "718-7", "value": 13.1}
pat-5	{"code": "29463-7", "value": 81.4}
\.
PREPARE add_obs(text, jsonb) AS INSERT INTO observation (patient_id, resource) VALUES ($1, $2);
EXECUTE add_obs('pat-6', '{"code": "59408-5", "value": 98}');

-- ledger_seq is always assigned by the ledger, whatever the application says.
INSERT INTO observation (patient_id, resource, ledger_seq, ledger_hash)
VALUES ('pat-7', '{"value": 1}', 999, '\xdeadbeef');
SELECT id, patient_id, ledger_seq, length(ledger_hash) FROM observation ORDER BY ledger_seq;

-- Changes are refused with SQLSTATE LD001, also for replication roles.
UPDATE observation SET resource = '{}' WHERE id = 1;
\echo :LAST_ERROR_SQLSTATE
DELETE FROM observation WHERE id = 1;
TRUNCATE observation;
SET session_replication_role = replica;
UPDATE observation SET patient_id = 'pat-0';
DELETE FROM observation;
TRUNCATE observation;
RESET session_replication_role;
SELECT count(*) FROM observation;

-- An application role needs no privilege on the ledger's own objects.
CREATE ROLE emr_app;
GRANT SELECT, INSERT ON observation TO emr_app;
GRANT USAGE ON SEQUENCE observation_id_seq TO emr_app;
SET ROLE emr_app;
INSERT INTO observation (patient_id, resource) VALUES ('pat-8', '{"value": 2}')
RETURNING patient_id, ledger_seq;
SELECT ehrledger.seal();
SELECT ok, rows_checked FROM ehrledger.verify('observation');
RESET ROLE;

-- The trigger functions refuse to be misused.
SELECT ehrledger.insert_row();
CREATE TABLE other (x int);
CREATE TRIGGER bad AFTER INSERT ON other FOR EACH ROW EXECUTE FUNCTION ehrledger.insert_row('1');
INSERT INTO other VALUES (1);

DROP EXTENSION ehrledger CASCADE;
DROP TABLE observation, other;
DROP ROLE emr_app;
