-- demo/data.sql
-- Deterministic synthetic FHIR R4 data for demo/schema.sql (plain SQL only).
--   300 patients, ~1,200 encounters (1-7 per patient, mean 4),
--   ~6,000 observations (3-7 vitals/labs per encounter, LOINC + UCUM),
--   ~1,500 medication requests (0-3 per encounter, RxNorm).
-- Randomness comes from md5() of a tag plus the row number, never random(),
-- so every run produces byte-identical resources regardless of plan or
-- session settings. All timestamps are UTC and written with a 'Z' suffix.
-- created_at is left to its default (load time).
-- Fictional data only: names, addresses, MRNs and phone numbers (555) are made up.

BEGIN;

-- h(tag, n): deterministic pseudo-random double in [0, 1)
CREATE FUNCTION pg_temp.h(tag text, n bigint) RETURNS double precision
LANGUAGE sql IMMUTABLE AS
$$ SELECT ('x' || substr(md5(tag || ':' || n), 1, 8))::bit(32)::bigint::double precision / 4294967296 $$;

-- pick(tag, n, k): deterministic pseudo-random integer in 1..k (an array index)
CREATE FUNCTION pg_temp.pick(tag text, n bigint, k int) RETURNS int
LANGUAGE sql IMMUTABLE AS
$$ SELECT 1 + floor(pg_temp.h(tag, n) * k)::int $$;

-- ts(t): FHIR dateTime text for a UTC timestamp
CREATE FUNCTION pg_temp.ts(t timestamp) RETURNS text
LANGUAGE sql IMMUTABLE AS
$$ SELECT to_char(t, 'YYYY-MM-DD"T"HH24:MI:SS"Z"') $$;

------------------------------------------------------------------------------
-- Patients: 300
------------------------------------------------------------------------------
INSERT INTO public.patient (id, resource)
WITH v AS (
    SELECT
        ARRAY['Smith','Johnson','Williams','Brown','Jones','Garcia','Miller','Davis',
              'Rodriguez','Martinez','Hernandez','Lopez','Gonzalez','Wilson','Anderson','Thomas',
              'Taylor','Moore','Jackson','Martin','Lee','Perez','Thompson','White',
              'Harris','Sanchez','Clark','Ramirez','Lewis','Robinson','Walker','Young',
              'Allen','King','Wright','Scott','Torres','Nguyen','Hill','Flores'] AS family,
        ARRAY['James','Robert','John','Michael','David','William','Richard','Joseph',
              'Thomas','Charles','Daniel','Matthew','Anthony','Mark','Steven','Andrew',
              'Joshua','Kevin','Brian','Luis'] AS male,
        ARRAY['Mary','Patricia','Jennifer','Linda','Elizabeth','Barbara','Susan','Jessica',
              'Sarah','Karen','Lisa','Nancy','Margaret','Sandra','Ashley','Emily',
              'Michelle','Maria','Olivia','Sophia'] AS female,
        ARRAY['Boston','Worcester','Springfield','Providence','Hartford','New Haven','Albany',
              'Buffalo','Rochester','Burlington','Portland','Manchester','Philadelphia',
              'Pittsburgh','Newark','Baltimore','Cleveland','Columbus','Chicago','Detroit'] AS city,
        ARRAY['MA','MA','MA','RI','CT','CT','NY','NY','NY','VT','ME','NH','PA','PA','NJ',
              'MD','OH','OH','IL','MI'] AS state,
        ARRAY['021','016','011','029','061','065','122','142','146','054','041','031','191',
              '152','071','212','441','432','606','482'] AS zip3,
        ARRAY['Main St','Oak Ave','Maple St','Cedar Ln','Elm St','Pine St','Washington Ave',
              'Lake Rd','Hill St','Park Ave','Church St','Highland Ave','Spring St','River Rd',
              'Union St','Chestnut St','Walnut St','Franklin St','Center St','Mill Rd'] AS street
), p AS (
    SELECT i,
           'pat-' || lpad(i::text, 5, '0') AS id,
           pg_temp.h('gender', i) < 0.5 AS is_female,
           date '1935-01-01'
             + floor(pg_temp.h('birth', i) * (date '2020-12-31' - date '1935-01-01' + 1))::int AS birth,
           pg_temp.pick('family', i, 40) AS fi,
           pg_temp.pick('given',  i, 20) AS gi,
           pg_temp.pick('city',   i, 20) AS ci,
           pg_temp.pick('street', i, 20) AS si
    FROM generate_series(1, 300) AS i
)
SELECT p.id,
       jsonb_build_object(
           'resourceType', 'Patient',
           'id',           p.id,
           'identifier',   jsonb_build_array(jsonb_build_object(
               'use',    'usual',
               'type',   jsonb_build_object('coding', jsonb_build_array(jsonb_build_object(
                             'system', 'http://terminology.hl7.org/CodeSystem/v2-0203',
                             'code',   'MR'))),
               'system', 'http://hospital.example.org/mrn',
               'value',  'MRN' || (7000000 + p.i * 3271))),
           'active',       true,
           'name',         jsonb_build_array(jsonb_build_object(
               'use',    'official',
               'family', v.family[p.fi],
               'given',  jsonb_build_array(CASE WHEN p.is_female THEN v.female[p.gi]
                                                ELSE v.male[p.gi] END))),
           'telecom',      jsonb_build_array(jsonb_build_object(
               'system', 'phone',
               'value',  format('555-%s-%s',
                                200 + floor(pg_temp.h('phone-a', p.i) * 800)::int,
                                lpad(floor(pg_temp.h('phone-b', p.i) * 10000)::int::text, 4, '0')),
               'use',    CASE WHEN pg_temp.h('phone-use', p.i) < 0.6 THEN 'mobile' ELSE 'home' END)),
           'gender',       CASE WHEN p.is_female THEN 'female' ELSE 'male' END,
           'birthDate',    to_char(p.birth, 'YYYY-MM-DD'),
           'address',      jsonb_build_array(jsonb_build_object(
               'use',        'home',
               'line',       jsonb_build_array(format('%s %s',
                                 10 + floor(pg_temp.h('house', p.i) * 990)::int, v.street[p.si])),
               'city',       v.city[p.ci],
               'state',      v.state[p.ci],
               'postalCode', v.zip3[p.ci] || lpad(floor(pg_temp.h('zip', p.i) * 100)::int::text, 2, '0'),
               'country',    'US'))
       )
FROM p CROSS JOIN v;

------------------------------------------------------------------------------
-- Encounters: 1-7 per patient (mean 4), 2024-01-01 .. 2025-12-31 (+ stay)
------------------------------------------------------------------------------
INSERT INTO public.encounter (id, patient_id, resource)
WITH v AS (
    SELECT
        ARRAY['Dr. Alice Chen','Dr. Robert Patel','Dr. Maria Alvarez','Dr. James O''Brien',
              'Dr. Fatima Rahman','Dr. Kenji Watanabe','Dr. Laura Becker','Dr. Samuel Okafor',
              'Dr. Hannah Novak','Dr. Diego Morales','Dr. Grace Kim','Dr. Peter Lindqvist'] AS prac,
        ARRAY['Riverside General Hospital','Lakeside Family Clinic',
              'St. Mary Medical Center','Northgate Community Health'] AS org
), e AS (
    SELECT p.i AS pi,
           row_number() OVER (ORDER BY p.i, s.k) AS n
    FROM generate_series(1, 300) AS p(i)
    CROSS JOIN LATERAL generate_series(1, pg_temp.pick('enc-count', p.i, 7)) AS s(k)
), c AS (
    SELECT e.*,
           CASE WHEN pg_temp.h('class', e.n) < 0.70 THEN 'AMB'
                WHEN pg_temp.h('class', e.n) < 0.85 THEN 'EMER'
                ELSE 'IMP' END AS cls,
           timestamp '2024-01-01' + floor(pg_temp.h('day', e.n) * 731)::int * interval '1 day' AS day,
           pg_temp.pick('prac', e.n, 12) AS pr,
           pg_temp.pick('org', e.pi, 4)  AS og   -- patients stick to one organization
    FROM e
), t AS (
    SELECT c.*,
           CASE cls WHEN 'AMB'  THEN day + interval '8 hours' + floor(pg_temp.h('time', n) * 40)::int * interval '15 min'
                    WHEN 'EMER' THEN day + floor(pg_temp.h('time', n) * 1440)::int * interval '1 min'
                    ELSE              day + interval '6 hours' + floor(pg_temp.h('time', n) * 960)::int * interval '1 min'
           END AS start_ts,
           CASE cls WHEN 'AMB'  THEN (1 + floor(pg_temp.h('dur', n) * 4)::int) * interval '15 min'
                    WHEN 'EMER' THEN (90 + floor(pg_temp.h('dur', n) * 600)::int) * interval '1 min'
                    ELSE              (1 + floor(pg_temp.h('dur', n) * 7)::int) * interval '1 day'
                                      + floor(pg_temp.h('dur2', n) * 600)::int * interval '1 min'
           END AS dur
    FROM c
)
SELECT 'enc-' || lpad(t.n::text, 6, '0'),
       'pat-' || lpad(t.pi::text, 5, '0'),
       jsonb_build_object(
           'resourceType',    'Encounter',
           'id',              'enc-' || lpad(t.n::text, 6, '0'),
           'status',          'finished',
           'class',           jsonb_build_object(
               'system',  'http://terminology.hl7.org/CodeSystem/v3-ActCode',
               'code',    t.cls,
               'display', CASE t.cls WHEN 'AMB' THEN 'ambulatory'
                                     WHEN 'EMER' THEN 'emergency'
                                     ELSE 'inpatient encounter' END),
           'type',            jsonb_build_array(jsonb_build_object('coding', jsonb_build_array(
               CASE t.cls
                 WHEN 'AMB'  THEN jsonb_build_object('system', 'http://snomed.info/sct',
                                     'code', '185349003', 'display', 'Encounter for check up')
                 WHEN 'EMER' THEN jsonb_build_object('system', 'http://snomed.info/sct',
                                     'code', '50849002', 'display', 'Emergency room admission')
                 ELSE             jsonb_build_object('system', 'http://snomed.info/sct',
                                     'code', '32485007', 'display', 'Hospital admission')
               END))),
           'subject',         jsonb_build_object('reference', 'Patient/pat-' || lpad(t.pi::text, 5, '0')),
           'participant',     jsonb_build_array(jsonb_build_object('individual', jsonb_build_object(
               'reference', 'Practitioner/prac-' || lpad(t.pr::text, 3, '0'),
               'display',   v.prac[t.pr]))),
           'period',          jsonb_build_object(
               'start', pg_temp.ts(t.start_ts),
               'end',   pg_temp.ts(t.start_ts + t.dur)),
           'serviceProvider', jsonb_build_object(
               'reference', 'Organization/org-' || lpad(t.og::text, 3, '0'),
               'display',   v.org[t.og])
       )
FROM t CROSS JOIN v;

------------------------------------------------------------------------------
-- Observations: 3-7 distinct vitals/labs per encounter (mean 5)
------------------------------------------------------------------------------
INSERT INTO public.observation (id, patient_id, code, resource)
WITH loinc (idx, code, display, category, unit, ucum, lo, hi, dec, tail_p, tail_add) AS (
    -- value = lo + (hi-lo) * triangular(0..1), plus tail_add * U(0..1) with probability tail_p
    VALUES (1, '8867-4',  'Heart rate',                                 'vital-signs', 'beats/minute', '/min',    58,   100,  0, 0.10, 25),
           (2, '8480-6',  'Systolic blood pressure',                    'vital-signs', 'mmHg',         'mm[Hg]',  102,  148,  0, 0.20, 30),
           (3, '8462-4',  'Diastolic blood pressure',                   'vital-signs', 'mmHg',         'mm[Hg]',  60,   92,   0, 0.15, 15),
           (4, '8310-5',  'Body temperature',                           'vital-signs', 'C',            'Cel',     36.2, 37.6, 1, 0.06, 1.8),
           (5, '2339-0',  'Glucose [Mass/volume] in Blood',             'laboratory',  'mg/dL',        'mg/dL',   72,   125,  0, 0.20, 110),
           (6, '718-7',   'Hemoglobin [Mass/volume] in Blood',          'laboratory',  'g/dL',         'g/dL',    11.2, 16.8, 1, 0.00, 0),
           (7, '29463-7', 'Body weight',                                'vital-signs', 'kg',           'kg',      0,    0,    1, 0.00, 0),
           (8, '59408-5', 'Oxygen saturation in Arterial blood by Pulse oximetry',
                                                                        'vital-signs', '%',            '%',       93,   100,  0, 0.00, 0)
), e AS (
    SELECT enc.id AS enc_id,
           enc.patient_id,
           substr(enc.id, 5)::int        AS en,
           substr(enc.patient_id, 5)::int AS pn,
           (enc.resource #>> '{period,start}')::timestamptz AT TIME ZONE 'UTC' AS start_ts,
           (enc.resource #>> '{period,end}')::timestamptz   AT TIME ZONE 'UTC' AS end_ts,
           extract(year FROM age(((enc.resource #>> '{period,start}')::timestamptz AT TIME ZONE 'UTC')::date,
                                 (pat.resource ->> 'birthDate')::date))::int AS age_y,
           pat.resource ->> 'gender' AS gender
    FROM public.encounter enc
    JOIN public.patient pat ON pat.id = enc.patient_id
), o AS (
    SELECT e.*,
           row_number() OVER (ORDER BY e.enc_id, s.k) AS n,
           (pg_temp.pick('obs-offset', e.en, 8) + s.k - 2) % 8 + 1 AS idx   -- distinct codes per encounter
    FROM e
    CROSS JOIN LATERAL generate_series(1, 2 + pg_temp.pick('obs-count', e.en, 5)) AS s(k)
), x AS (
    SELECT o.*, l.code, l.display, l.category, l.unit, l.ucum, l.dec,
           'obs-' || lpad(o.n::text, 7, '0') AS id,
           date_trunc('minute', o.start_ts + (o.end_ts - o.start_ts) * pg_temp.h('eff', o.n)) AS eff_ts,
           CASE
             WHEN l.code = '29463-7' THEN   -- weight: per-patient baseline by age and sex, +/- 1.5 kg
               CASE WHEN o.age_y < 18 THEN (9 + 3.1 * o.age_y) * (0.85 + 0.3 * pg_temp.h('wt', o.pn))
                    ELSE 52 + 45 * pg_temp.h('wt', o.pn) + CASE WHEN o.gender = 'male' THEN 12 ELSE 0 END
               END + 3 * (pg_temp.h('v1', o.n) - 0.5)
             WHEN l.code = '8867-4' AND o.age_y < 5 THEN   -- young children: faster heart rate
               90 + 45 * (pg_temp.h('v1', o.n) + pg_temp.h('v2', o.n)) / 2
             ELSE
               l.lo + (l.hi - l.lo) * (pg_temp.h('v1', o.n) + pg_temp.h('v2', o.n)) / 2
               + CASE WHEN pg_temp.h('v3', o.n) < l.tail_p THEN l.tail_add * pg_temp.h('v4', o.n) ELSE 0 END
           END AS raw_value
    FROM o JOIN loinc l ON l.idx = o.idx
)
SELECT x.id, x.patient_id, x.code,
       jsonb_build_object(
           'resourceType',      'Observation',
           'id',                x.id,
           'status',            'final',
           'category',          jsonb_build_array(jsonb_build_object('coding', jsonb_build_array(
               jsonb_build_object('system', 'http://terminology.hl7.org/CodeSystem/observation-category',
                                  'code',   x.category)))),
           'code',              jsonb_build_object('coding', jsonb_build_array(jsonb_build_object(
               'system',  'http://loinc.org',
               'code',    x.code,
               'display', x.display))),
           'subject',           jsonb_build_object('reference', 'Patient/' || x.patient_id),
           'encounter',         jsonb_build_object('reference', 'Encounter/' || x.enc_id),
           'effectiveDateTime', pg_temp.ts(x.eff_ts),
           'valueQuantity',     jsonb_build_object(
               'value',  round(x.raw_value::numeric, x.dec),
               'unit',   x.unit,
               'system', 'http://unitsofmeasure.org',
               'code',   x.ucum)
       )
FROM x;

------------------------------------------------------------------------------
-- Medication requests: 0-3 per encounter (mean 1.25); children get PRN
-- analgesics only. Requester = the encounter's practitioner.
------------------------------------------------------------------------------
INSERT INTO public.medication_request (id, patient_id, resource)
WITH rx (idx, code, display, sig, prn) AS (
    -- ordered so that the two statins (3, 7) and the two analgesics (4, 8)
    -- never fall into the same window of 3 consecutive picks
    VALUES (1, '197361', 'amlodipine 5 MG Oral Tablet',
               'Take 1 tablet by mouth once daily', false),
           (2, '860975', '24 HR metformin hydrochloride 500 MG Extended Release Oral Tablet',
               'Take 1 tablet by mouth once daily with the evening meal', false),
           (3, '617312', 'atorvastatin 40 MG Oral Tablet',
               'Take 1 tablet by mouth once daily at bedtime', false),
           (4, '310965', 'ibuprofen 200 MG Oral Tablet',
               'Take 1-2 tablets by mouth every 6 hours as needed for pain', true),
           (5, '314076', 'lisinopril 10 MG Oral Tablet',
               'Take 1 tablet by mouth once daily', false),
           (6, '311702', 'levothyroxine sodium 0.05 MG Oral Tablet',
               'Take 1 tablet by mouth every morning on an empty stomach', false),
           (7, '198211', 'simvastatin 40 MG Oral Tablet',
               'Take 1 tablet by mouth once daily in the evening', false),
           (8, '313782', 'acetaminophen 325 MG Oral Tablet',
               'Take 2 tablets by mouth every 6 hours as needed for pain or fever', true)
), e AS (
    SELECT enc.id AS enc_id,
           enc.patient_id,
           substr(enc.id, 5)::int AS en,
           (enc.resource #>> '{period,start}')::timestamptz AT TIME ZONE 'UTC' AS start_ts,
           (enc.resource #>> '{period,end}')::timestamptz   AT TIME ZONE 'UTC' AS end_ts,
           enc.resource #> '{participant,0,individual}' AS requester,
           extract(year FROM age(((enc.resource #>> '{period,start}')::timestamptz AT TIME ZONE 'UTC')::date,
                                 (pat.resource ->> 'birthDate')::date)) < 18 AS is_child
    FROM public.encounter enc
    JOIN public.patient pat ON pat.id = enc.patient_id
), m AS (
    SELECT e.*,
           row_number() OVER (ORDER BY e.enc_id, s.k) AS n,
           CASE WHEN e.is_child
                THEN CASE WHEN (pg_temp.pick('mrq-offset', e.en, 8) + s.k) % 2 = 0 THEN 4 ELSE 8 END
                ELSE (pg_temp.pick('mrq-offset', e.en, 8) + s.k - 2) % 8 + 1
           END AS idx
    FROM e
    CROSS JOIN LATERAL generate_series(
        1,
        least(CASE WHEN e.is_child THEN 2 ELSE 3 END,
              (ARRAY[0, 1, 1, 1, 2, 2, 3, 0])[pg_temp.pick('mrq-count', e.en, 8)])) AS s(k)
)
SELECT 'mrq-' || lpad(m.n::text, 6, '0'),
       m.patient_id,
       jsonb_build_object(
           'resourceType',              'MedicationRequest',
           'id',                        'mrq-' || lpad(m.n::text, 6, '0'),
           'status',                    CASE WHEN pg_temp.h('status', m.n) < CASE WHEN rx.prn THEN 0.15 ELSE 0.75 END
                                             THEN 'active' ELSE 'completed' END,
           'intent',                    'order',
           'medicationCodeableConcept', jsonb_build_object('coding', jsonb_build_array(jsonb_build_object(
               'system',  'http://www.nlm.nih.gov/research/umls/rxnorm',
               'code',    rx.code,
               'display', rx.display))),
           'subject',                   jsonb_build_object('reference', 'Patient/' || m.patient_id),
           'encounter',                 jsonb_build_object('reference', 'Encounter/' || m.enc_id),
           'authoredOn',                pg_temp.ts(date_trunc('minute',
                                            m.start_ts + (m.end_ts - m.start_ts) * pg_temp.h('authored', m.n))),
           'requester',                 m.requester,
           'dosageInstruction',         jsonb_build_array(jsonb_build_object(
               'sequence',        1,
               'text',            rx.sig,
               'asNeededBoolean', rx.prn))
       )
FROM m JOIN rx ON rx.idx = m.idx;

DROP FUNCTION pg_temp.ts(timestamp);
DROP FUNCTION pg_temp.pick(text, bigint, int);
DROP FUNCTION pg_temp.h(text, bigint);

COMMIT;

ANALYZE public.patient, public.encounter, public.observation, public.medication_request;
