-- demo/schema.sql
-- Small EHR demo schema: four plain tables holding FHIR R4 resources as jsonb
-- (Patient, Encounter, Observation, MedicationRequest). No foreign keys,
-- triggers or extensions. Load demo/data.sql afterwards for synthetic rows.

CREATE TABLE public.patient (
    id          text        PRIMARY KEY,            -- 'pat-00001'
    resource    jsonb       NOT NULL,               -- FHIR R4 Patient
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE public.encounter (
    id          text        PRIMARY KEY,            -- 'enc-000001'
    patient_id  text        NOT NULL,               -- patient.id
    resource    jsonb       NOT NULL,               -- FHIR R4 Encounter
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE public.observation (
    id          text        PRIMARY KEY,            -- 'obs-0000001'
    patient_id  text        NOT NULL,               -- patient.id
    code        text        NOT NULL,               -- LOINC code, e.g. '8867-4'
    resource    jsonb       NOT NULL,               -- FHIR R4 Observation
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE public.medication_request (
    id          text        PRIMARY KEY,            -- 'mrq-000001'
    patient_id  text        NOT NULL,               -- patient.id
    resource    jsonb       NOT NULL,               -- FHIR R4 MedicationRequest
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX encounter_patient_id_idx          ON public.encounter (patient_id);
CREATE INDEX observation_patient_id_idx        ON public.observation (patient_id);
CREATE INDEX medication_request_patient_id_idx ON public.medication_request (patient_id);
