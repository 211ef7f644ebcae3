-- The server's own checks of proofs, digests, exports and certificates:
-- the code ehrledger-verify runs offline (src/core/check.c), on documents
-- given as text.  Each says valid, invalid or unusable, and why.
CREATE EXTENSION ehrledger;
\set SHOW_CONTEXT never
CREATE TABLE rx (id int PRIMARY KEY, patient text, drug text, dose text,
                 given_at timestamptz, strength numeric, codes text[], note jsonb);
SELECT ehrledger.protect('rx');
INSERT INTO rx VALUES (1, 'MRN1', 'amoxicillin', '500 mg', '2026-01-31 12:00:00+00', 2.50,
                       '{"J01CA04", "[x]"}', '{"route": "oral", "times": [8, 20]}');
INSERT INTO rx VALUES (2, 'MRN2', 'ibuprofen', '200 mg', NULL, NULL, NULL, NULL);
SELECT ehrledger.seal();

-- Hex, times and keys vary from run to run: shown as <hex> and <time>.
CREATE FUNCTION shown(t text) RETURNS text LANGUAGE sql AS $$
    SELECT regexp_replace(regexp_replace(t, '[0-9a-f]{64,}', '<hex>', 'g'),
                          '\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z', '<time>', 'g')
$$;
CREATE TABLE doc AS
    SELECT ehrledger.digest()::text AS digest, ehrledger.proof('rx', ledger_seq)::text AS proof
      FROM rx WHERE id = 1;

-- A proof made here, checked here: the row as sealed, decoded.
SELECT verdict, shown(detail) FROM doc, ehrledger.check_proof(proof, digest);
SELECT ehrledger.sealed_row('rx', ledger_seq) FROM rx WHERE id = 1;
SELECT verdict, shown(detail) FROM doc, ehrledger.check_digest(digest);
SELECT verdict FROM doc, ehrledger.check_digest(digest, ehrledger.node_public_key());
SELECT verdict, shown(detail) FROM doc,
       ehrledger.check_digest(digest, decode(repeat('00', 32), 'hex'));

-- The pharmacist's case: "row" says ten times the sealed dose.
SELECT verdict, shown(detail) FROM doc,
       ehrledger.check_proof(jsonb_set(proof::jsonb, '{row,dose}', '"5000 mg"')::text, digest);
-- Another table's name; another array element; a value inside jsonb.
SELECT verdict, shown(detail) FROM doc,
       ehrledger.check_proof(jsonb_set(proof::jsonb, '{table}', '"public.other"')::text, digest);
SELECT verdict, shown(detail) FROM doc,
       ehrledger.check_proof(jsonb_set(proof::jsonb, '{row,codes,1}', '"[y]"')::text, digest);
SELECT verdict, shown(detail) FROM doc,
       ehrledger.check_proof(jsonb_set(proof::jsonb, '{row,note,times,1}', '21')::text, digest);
-- The same instant in another offset, and 2.5 for 2.50, are the same values.
SELECT verdict FROM doc,
       ehrledger.check_proof(jsonb_set(jsonb_set(proof::jsonb, '{row,given_at}', '"2026-01-31T13:00:00+01:00"'),
                                       '{row,strength}', '2.5')::text, digest);
-- A field nothing would check is refused.
SELECT verdict, shown(detail) FROM doc,
       ehrledger.check_proof(jsonb_set(proof::jsonb, '{comment}', '"trust me"')::text, digest);

-- The digest's certificate is checked whenever present.
SELECT verdict, shown(detail) FROM doc,
       ehrledger.check_digest(jsonb_set(digest::jsonb, '{certificate,quorum}', '2')::text);
SELECT verdict, shown(detail) FROM doc,
       ehrledger.check_digest(jsonb_set(digest::jsonb, '{certificate,acks,0,acker}', '"someone"')::text,
                              members => jsonb_build_object(ehrledger.node_name(),
                                                            encode(ehrledger.node_public_key(), 'hex')));
SELECT verdict FROM doc,
       ehrledger.check_digest(digest, members => jsonb_build_object(ehrledger.node_name(),
                                                                    encode(ehrledger.node_public_key(), 'hex')));
SELECT verdict, shown(detail) FROM doc,
       ehrledger.check_certificate((digest::jsonb -> 'certificate')::text);
-- verify() holds a digest's certificate to the keys this node knows.
SELECT ok, shown(problems::text) FROM doc,
       ehrledger.verify(digest => jsonb_set(digest::jsonb, '{certificate,acks,0,public_key}',
                                            to_jsonb(repeat('ab', 32))));

-- An export, checked line by line as the file would be.
CREATE TABLE exp AS SELECT string_agg(line, E'\n') || E'\n' AS lines FROM ehrledger.export('rx');
SELECT verdict, shown(detail) FROM doc, exp, ehrledger.check_export(lines, digest);
SELECT verdict, shown(detail) FROM doc, exp,
       ehrledger.check_export(replace(lines, '"dose": "200 mg"', '"dose": "2000 mg"'), digest);
SELECT verdict, shown(detail) FROM doc, exp,
       ehrledger.check_export(replace(lines, '"table": "public.rx"', '"table": "public.rx2"'), digest);

-- Not documents: unusable, never a crash.
SELECT verdict, detail FROM ehrledger.check_proof('', '');
SELECT verdict, detail FROM ehrledger.check_proof('[1]', '{}');
SELECT verdict, detail FROM ehrledger.check_digest('{"format": "ehrledger-digest-1"}');
SELECT verdict, detail FROM ehrledger.check_export('{"format": "ehrledger-export-1"}', '{}');
SELECT verdict, detail FROM ehrledger.check_certificate('{"format": 1}');
SELECT * FROM ehrledger.check_digest(NULL);
SELECT * FROM ehrledger.check_digest('{}', '\x00');
SELECT * FROM ehrledger.check_digest('{}', NULL, '[]');
SELECT * FROM ehrledger.check_digest('{}', NULL, '{"h1": "zz"}');

-- sealed_row(): only sealed rows, as sealed.
INSERT INTO rx VALUES (3, 'MRN3', 'paracetamol', '1 g');
SELECT ehrledger.sealed_row('rx', ledger_seq) FROM rx WHERE id = 3;
SELECT ehrledger.sealed_row('rx', 999999);

DROP EXTENSION ehrledger CASCADE;
