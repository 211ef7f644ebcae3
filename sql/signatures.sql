-- Signed records: a prescriber signs a prescription, the database refuses
-- anything else, and a pharmacist checks it.
CREATE EXTENSION ehrledger;
-- PL/pgSQL line numbers are not part of the interface.
\set SHOW_CONTEXT never
CREATE TABLE prescription (
    id         int PRIMARY KEY,
    patient    text NOT NULL,
    drug       text NOT NULL,
    dose       text NOT NULL,
    prescriber text NOT NULL,
    signature  bytea
);
SELECT ehrledger.protect('prescription', signer_column => 'prescriber',
                         signature_column => 'signature');
SELECT tbl, signer_column, signature_column FROM ehrledger.protected_tables
 WHERE NOT internal;

-- Keys live with their owners; ehrledger.keypair() stands in for a client
-- library here.
CREATE TEMP TABLE keys AS
SELECT 'dr-grey' AS who, * FROM ehrledger.keypair()
UNION ALL SELECT 'dr-shepherd', * FROM ehrledger.keypair()
UNION ALL SELECT 'dr-grey-2026', * FROM ehrledger.keypair();
SELECT ehrledger.register_actor('dr-grey', 'provider', (SELECT public_key FROM keys WHERE who = 'dr-grey'));
SELECT ehrledger.register_actor('dr-shepherd', 'provider', (SELECT public_key FROM keys WHERE who = 'dr-shepherd'));
SELECT ehrledger.register_actor('rx-bailey', 'pharmacist', (SELECT public_key FROM keys WHERE who = 'dr-shepherd'));
SELECT actor_id, role, pg_role, revoked_at FROM ehrledger.actors ORDER BY actor_id;

-- The client asks for the exact bytes to sign, signs them, and inserts the
-- row with its signature, using plain SQL.
CREATE FUNCTION signed(id int, patient text, drug text, dose text, prescriber text, key_of text)
RETURNS bytea LANGUAGE sql AS $$
    SELECT ehrledger.sign(
        ehrledger.signing_payload('prescription',
            jsonb_build_object('id', id, 'patient', patient, 'drug', drug,
                               'dose', dose, 'prescriber', prescriber)),
        (SELECT secret_key FROM keys WHERE who = key_of))
$$;
INSERT INTO prescription VALUES
    (1, 'pat-17', 'amoxicillin', '500 mg three times a day', 'dr-grey',
     signed(1, 'pat-17', 'amoxicillin', '500 mg three times a day', 'dr-grey', 'dr-grey'));
SELECT id, drug, prescriber, length(signature) FROM prescription;

-- What is refused, with SQLSTATE LD010.
INSERT INTO prescription VALUES (2, 'pat-17', 'amoxicillin', '5000 mg three times a day', 'dr-grey',
    signed(2, 'pat-17', 'amoxicillin', '500 mg three times a day', 'dr-grey', 'dr-grey'));
\echo :LAST_ERROR_SQLSTATE
INSERT INTO prescription VALUES (2, 'pat-17', 'oxycodone', '10 mg', 'dr-grey',
    signed(2, 'pat-17', 'oxycodone', '10 mg', 'dr-grey', 'dr-shepherd'));
INSERT INTO prescription VALUES (2, 'pat-17', 'oxycodone', '10 mg', 'dr-house',
    signed(2, 'pat-17', 'oxycodone', '10 mg', 'dr-house', 'dr-grey'));
INSERT INTO prescription VALUES (2, 'pat-17', 'oxycodone', '10 mg', 'dr-grey', NULL);
INSERT INTO prescription VALUES (2, 'pat-17', 'oxycodone', '10 mg', 'dr-grey', '\x0102');
SELECT count(*) FROM prescription;

-- The pharmacist's check.
SELECT * FROM ehrledger.verify_record('prescription', (SELECT ledger_seq FROM prescription WHERE id = 1));
SELECT ehrledger.seal();
SELECT * FROM ehrledger.verify_record('prescription', (SELECT ledger_seq FROM prescription WHERE id = 1));

-- Key rotation: new rows need the new key; old rows keep their validity.
SELECT ehrledger.rotate_key('dr-grey', (SELECT public_key FROM keys WHERE who = 'dr-grey-2026'));
INSERT INTO prescription VALUES (3, 'pat-18', 'ibuprofen', '400 mg', 'dr-grey',
    signed(3, 'pat-18', 'ibuprofen', '400 mg', 'dr-grey', 'dr-grey'));
INSERT INTO prescription VALUES (3, 'pat-18', 'ibuprofen', '400 mg', 'dr-grey',
    signed(3, 'pat-18', 'ibuprofen', '400 mg', 'dr-grey', 'dr-grey-2026'));
SELECT id, (ehrledger.verify_record('prescription', ledger_seq)).*
  FROM prescription ORDER BY id;

-- Revocation: the actor signs nothing new; what it signed stays valid.
SELECT ehrledger.revoke_actor('dr-grey');
INSERT INTO prescription VALUES (4, 'pat-19', 'aspirin', '81 mg', 'dr-grey',
    signed(4, 'pat-19', 'aspirin', '81 mg', 'dr-grey', 'dr-grey-2026'));
SELECT id, valid, detail FROM prescription, ehrledger.verify_record('prescription', ledger_seq)
 ORDER BY id;
SELECT actor_id, revoked_at IS NOT NULL AS revoked FROM ehrledger.actors ORDER BY actor_id;
SELECT actor_id, until_seq IS NULL AS current FROM ehrledger.actor_keys ORDER BY actor_id, from_seq;

-- Registering, rotating and revoking are ledgered like any row.
SELECT action, count(*) FROM ehrledger.actor_event GROUP BY action ORDER BY action;
SELECT ok, problems FROM ehrledger.verify();

-- A change behind the ledger's back is caught.
SET session_replication_role = replica;
ALTER TABLE prescription DISABLE TRIGGER ALL;
RESET session_replication_role;
UPDATE prescription SET dose = '5 g three times a day' WHERE id = 1;
SELECT valid, detail FROM ehrledger.verify_record('prescription', (SELECT ledger_seq FROM prescription WHERE id = 1));
ALTER TABLE prescription ENABLE TRIGGER ALL;

-- Bad input.
SELECT ehrledger.register_actor('dr-grey', 'provider', (SELECT public_key FROM keys WHERE who = 'dr-grey'));
SELECT ehrledger.register_actor('nurse-joy', 'nurse', (SELECT public_key FROM keys WHERE who = 'dr-grey'));
SELECT ehrledger.register_actor('nurse-joy', 'provider', '\x0102');
SELECT ehrledger.register_actor('nurse-joy', 'provider', NULL);
SELECT ehrledger.register_actor('nurse-joy', 'provider', (SELECT public_key FROM keys WHERE who = 'dr-grey'), 'no_such_role');
SELECT ehrledger.rotate_key('nobody', (SELECT public_key FROM keys WHERE who = 'dr-grey'));
SELECT ehrledger.revoke_actor('dr-grey');
SELECT ehrledger.sign('\x00', '\x0102');
SELECT ehrledger.verify_signature('\x00', '\x0102', (SELECT public_key FROM keys WHERE who = 'dr-grey'));
SELECT ehrledger.verify_signature(NULL, NULL, NULL);
SELECT ehrledger.verify_signature('\x00', ehrledger.sign('\x00', (SELECT secret_key FROM keys WHERE who = 'dr-grey')),
                                  (SELECT public_key FROM keys WHERE who = 'dr-grey')) AS good,
       ehrledger.verify_signature('\x01', ehrledger.sign('\x00', (SELECT secret_key FROM keys WHERE who = 'dr-grey')),
                                  (SELECT public_key FROM keys WHERE who = 'dr-grey')) AS other_message;
CREATE TABLE note (id int, body text, author text, sig bytea);
SELECT ehrledger.protect('note', signer_column => 'author');
SELECT ehrledger.protect('note', signer_column => 'author', signature_column => 'nope');
SELECT ehrledger.protect('note', signer_column => 'id', signature_column => 'sig');
SELECT ehrledger.protect('note', signer_column => 'author', signature_column => 'body');
SELECT ehrledger.protect('note');
SELECT * FROM ehrledger.verify_record('note', 1);
SELECT ehrledger.signing_payload('pg_class', '{}');

DROP EXTENSION ehrledger CASCADE;
DROP TABLE prescription, note;
DROP FUNCTION signed(int, text, text, text, text, text);
