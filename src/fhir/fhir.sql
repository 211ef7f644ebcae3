-- fhir/fhir.sql: FHIR R4 output.
--
-- Consents as Consent resources, the access history as AuditEvents of the
-- IHE Basic Audit Log Patterns, and a ledger row's Provenance with its
-- author's signature and the ledger's inclusion proof.  Everything here
-- reads what the other subsystems recorded; nothing is stored.
--
-- Next: the resources go to the hospital's FHIR server or audit repository
-- (transaction Bundles); test/fhir validates them.

-- Functions ---------------------------------------------------------------

-- An instant as FHIR writes it (UTC); NULL for NULL and the infinities,
-- which FHIR expresses by leaving the element out.
CREATE FUNCTION ehrledger._fhir_instant(ts timestamp with time zone)
 RETURNS text
 LANGUAGE sql
 IMMUTABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
    SELECT CASE WHEN pg_catalog.isfinite(ts)
                     AND pg_catalog.date_part('year', ts AT TIME ZONE 'UTC') BETWEEN 1 AND 9999
                THEN pg_catalog.to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') END
$function$;

-- The absolute URL of Type/id on the hospital's FHIR server, or the
-- relative one when no base is set.
CREATE FUNCTION ehrledger._fhir_url(path text)
 RETURNS text
 LANGUAGE sql
 STABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
    SELECT CASE WHEN COALESCE(pg_catalog.current_setting('ehrledger.fhir_base_url', true), '') = '' THEN path
                ELSE pg_catalog.current_setting('ehrledger.fhir_base_url') || '/' || path END
$function$;

-- The hospital's identifier system for one kind of thing (actor, table,
-- node, ledger-row, break-glass, consent, category, purpose, pg-role); NULL
-- while ehrledger.fhir_identifier_system is not set.
CREATE FUNCTION ehrledger._fhir_system(kind text)
 RETURNS text
 LANGUAGE sql
 STABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
    SELECT CASE WHEN COALESCE(pg_catalog.current_setting('ehrledger.fhir_identifier_system', true), '') <> ''
                THEN pg_catalog.current_setting('ehrledger.fhir_identifier_system') || '/' || kind END
$function$;

-- A Reference: literal (Type/id) when the value is a valid FHIR id, always
-- with its type, identifier and display.
CREATE FUNCTION ehrledger._fhir_ref(rtype text, id text, kind text, display text)
 RETURNS jsonb
 LANGUAGE sql
 STABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
    SELECT pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
        'reference', CASE WHEN id ~ '^[A-Za-z0-9.-]{1,64}$' AND rtype IN ('Patient', 'Practitioner', 'Consent', 'AuditEvent')
                          THEN ehrledger._fhir_url(rtype || '/' || id) END,
        'type', rtype,
        'identifier', pg_catalog.jsonb_build_object('system', ehrledger._fhir_system(kind), 'value', id),
        'display', display))
$function$;

-- An actor as a Reference: patients (registered or not) are Patients,
-- staff are Practitioners.
CREATE FUNCTION ehrledger._fhir_actor(actor text, role text)
 RETURNS jsonb
 LANGUAGE sql
 STABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
    SELECT ehrledger._fhir_ref(CASE WHEN role IS NULL OR role = 'patient' THEN 'Patient' ELSE 'Practitioner' END,
                               actor, 'actor', actor)
$function$;

-- This node: the device that records, serves and decides.
CREATE FUNCTION ehrledger._fhir_node()
 RETURNS jsonb
 LANGUAGE sql
 STABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
    SELECT ehrledger._fhir_ref('Device', ehrledger.node_name(), 'node', 'ehrledger node ' || ehrledger.node_name())
$function$;

CREATE FUNCTION ehrledger._fhir_coding(system text, code text, display text)
 RETURNS jsonb
 LANGUAGE sql
 IMMUTABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
    SELECT pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object('system', system, 'code', code, 'display', display))
$function$;

-- Generated narrative: one paragraph of escaped text.
CREATE FUNCTION ehrledger._fhir_text(body text)
 RETURNS jsonb
 LANGUAGE sql
 IMMUTABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
    SELECT pg_catalog.jsonb_build_object('status', 'generated',
        'div', '<div xmlns="http://www.w3.org/1999/xhtml"><p>'
               || pg_catalog.replace(pg_catalog.replace(pg_catalog.replace(pg_catalog.replace(pg_catalog.replace(
                      pg_catalog.regexp_replace(body, '[\x01-\x08\x0b\x0c\x0e-\x1f\x7f]', '', 'g'),
                      '&', '&amp;'), '<', '&lt;'), '>', '&gt;'), '"', '&quot;'), '''', '&#39;')
               || '</p></div>')
$function$;

-- base64 without the line breaks encode() puts in.
CREATE FUNCTION ehrledger._fhir_base64(data bytea)
 RETURNS text
 LANGUAGE sql
 IMMUTABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
    SELECT pg_catalog.translate(pg_catalog.encode(data, 'base64'), E'\n', '')
$function$;

-- A purpose of use as a Coding of HL7 v3 ActReason (the PurposeOfUse value
-- set) with its display; a purpose of the hospital's own as a code of its
-- purpose system.
CREATE FUNCTION ehrledger._purpose_coding(purpose text)
 RETURNS jsonb
 LANGUAGE sql
 STABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
    SELECT CASE WHEN x.code IS NULL
                THEN ehrledger._fhir_coding(ehrledger._fhir_system('purpose'), purpose, purpose)
                ELSE ehrledger._fhir_coding('http://terminology.hl7.org/CodeSystem/v3-ActReason', x.code, x.display) END
      FROM (SELECT * FROM (VALUES ('treatment', 'TREAT', 'treatment'),
                                  ('emergency', 'ETREAT', 'Emergency Treatment'),
                                  ('research', 'HRESCH', 'healthcare research'),
                                  ('payment', 'HPAYMT', 'healthcare payment'),
                                  ('operations', 'HOPERAT', 'healthcare operations'),
                                  ('patient-request', 'PATRQT', 'patient requested')) v(word, code, display)
             WHERE v.word = purpose
            UNION ALL SELECT NULL, NULL, NULL LIMIT 1) x
$function$;

-- A list of resources as a Bundle: 'collection' (the plain list), or
-- 'transaction' / 'batch' that a FHIR server processes as it is (PUT of each
-- resource under its id, so that sending twice changes nothing).  Full URLs
-- are absolute under ehrledger.fhir_base_url, or name-based urn:uuids
-- without it.  An empty list has no entry element (JSON FHIR has no empty
-- arrays).
CREATE FUNCTION ehrledger._fhir_bundle(resources jsonb, bundle text)
 RETURNS jsonb
 LANGUAGE sql
 STABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
    SELECT pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
        'resourceType', 'Bundle',
        'type', bundle,
        'timestamp', ehrledger._fhir_instant(pg_catalog.now()),
        'entry', (SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
                      'fullUrl', CASE WHEN COALESCE(pg_catalog.current_setting('ehrledger.fhir_base_url', true), '') <> ''
                                      THEN ehrledger._fhir_url((r->>'resourceType') || '/' || (r->>'id'))
                                      ELSE 'urn:uuid:' || pg_catalog.regexp_replace(
                                               overlay(overlay(
                                                   pg_catalog.md5(ehrledger.node_name() || '/' || (r->>'resourceType') || '/' || (r->>'id'))
                                                   PLACING '3' FROM 13 FOR 1) PLACING '8' FROM 17 FOR 1),
                                               '^(.{8})(.{4})(.{4})(.{4})(.{12})$', '\1-\2-\3-\4-\5') END,
                      'resource', r,
                      'request', CASE WHEN bundle IN ('transaction', 'batch') THEN pg_catalog.jsonb_build_object(
                                      'method', 'PUT', 'url', (r->>'resourceType') || '/' || (r->>'id')) END)) ORDER BY n)
                      FROM pg_catalog.jsonb_array_elements(resources) WITH ORDINALITY AS e(r, n))))
$function$;

-- The bundle argument of the FHIR functions: NULL (or 'collection' for a
-- list), 'collection', 'transaction' or 'batch'.
CREATE FUNCTION ehrledger._fhir_check_bundle(bundle text)
 RETURNS void
 LANGUAGE plpgsql
 IMMUTABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
BEGIN
    IF bundle IS NOT NULL AND bundle NOT IN ('collection', 'transaction', 'batch') THEN
        RAISE EXCEPTION 'unknown bundle type "%"', bundle
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use NULL for the plain output, or ''collection'', ''transaction'' or ''batch''.';
    END IF;
END
$function$;

-- A consent as an R4 Consent: the patient's privacy consent allowing the
-- grantee (the recipient) to read (access) or write (correct) rows in its
-- scope (provision.class: a table or category of the hospital's) for its
-- purpose, from the grant to its revocation or end.  How it was given is
-- shown: the terms the patient signed (sourceAttachment, with the
-- signature; the ledger checked it at the grant, verification), or the
-- paper form a registrar recorded.  The same visibility as
-- ehrledger.consents: the patient, the grantee, auditors, admins and
-- superusers.
CREATE FUNCTION ehrledger._consent_as_fhir(caller name, consent_id bigint, bundle text)
 RETURNS jsonb
 LANGUAGE plpgsql
 STABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    me       record;
    g        ehrledger.consent_event%ROWTYPE;
    r        ehrledger.consent_event%ROWTYPE;
    acts     pg_catalog.text[];
    ends     pg_catalog.timestamptz;
    active   pg_catalog.bool;
    grantee_role pg_catalog.text;
    kind     pg_catalog.text;
    how      pg_catalog.text;
    terms    pg_catalog.bytea;
    res      pg_catalog.jsonb;
BEGIN
    PERFORM ehrledger._fhir_check_bundle(bundle);
    IF consent_id IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT * INTO g FROM ehrledger.consent_event e
     WHERE e.consent_id = _consent_as_fhir.consent_id AND e.action = 'grant';
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    SELECT * INTO me FROM ehrledger._actor_of(caller);
    IF NOT (COALESCE(me.actor_id IN (g.patient, g.grantee), false) OR COALESCE(me.role IN ('auditor', 'admin'), false)
            OR COALESCE((SELECT x.rolsuper FROM pg_catalog.pg_roles x WHERE x.rolname = caller), false)) THEN
        RETURN NULL;
    END IF;
    SELECT * INTO r FROM ehrledger.consent_event e
     WHERE e.consent_id = _consent_as_fhir.consent_id AND e.action = 'revoke';
    acts := COALESCE(g.actions, '{read}');
    ends := LEAST(r.at, g.valid_until);
    active := r.at IS NULL AND (g.valid_until IS NULL OR g.valid_until > pg_catalog.clock_timestamp());
    SELECT a.role INTO grantee_role FROM ehrledger.actors a WHERE a.actor_id = g.grantee;
    kind := CASE WHEN g.scope = '*' THEN NULL WHEN g.scope_table IS NOT NULL THEN 'table' ELSE 'category' END;
    how := CASE WHEN g.paper_form IS NOT NULL
                THEN pg_catalog.format('on paper (form %s), recorded by registrar %s', g.paper_form, COALESCE(g.by_actor, g.by_role))
                WHEN g.signature IS NOT NULL THEN 'with the patient''s Ed25519 signature, checked at the grant'
                ELSE 'by the patient''s own database role' END;
    IF g.signature IS NOT NULL AND g.actions IS NOT NULL THEN
        terms := ehrledger.consent_payload(g.patient, g.grantee, g.scope, g.purpose, g.valid_until, g.actions);
    END IF;

    res := pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
        'resourceType', 'Consent',
        'id', g.consent_id::pg_catalog.text,
        'text', ehrledger._fhir_text(pg_catalog.format(
                    'Consent %s: patient %s allows %s to %s %s for %s, from %s%s; given %s.%s',
                    g.consent_id, g.patient, g.grantee, pg_catalog.array_to_string(acts, ' and '),
                    CASE WHEN g.scope = '*' THEN 'all of its records' ELSE 'its records in ' || kind || ' ' || g.scope END,
                    g.purpose, ehrledger._fhir_instant(g.at),
                    COALESCE(' until ' || ehrledger._fhir_instant(g.valid_until), ''),
                    how,
                    CASE WHEN r.at IS NOT NULL THEN pg_catalog.format(' Revoked %s %s.', ehrledger._fhir_instant(r.at),
                             CASE WHEN r.paper_form IS NOT NULL THEN 'on paper (form ' || r.paper_form || ')'
                                  WHEN r.signature IS NOT NULL THEN 'with the patient''s signature'
                                  ELSE 'by the patient''s own database role' END)
                         WHEN NOT active THEN ' Expired.' ELSE '' END)),
        'identifier', CASE WHEN ehrledger._fhir_system('consent') IS NOT NULL THEN pg_catalog.jsonb_build_array(
                          pg_catalog.jsonb_build_object('system', ehrledger._fhir_system('consent'),
                                                        'value', g.consent_id::pg_catalog.text)) END,
        'status', CASE WHEN active THEN 'active' ELSE 'inactive' END,
        'scope', pg_catalog.jsonb_build_object('coding', pg_catalog.jsonb_build_array(ehrledger._fhir_coding(
                    'http://terminology.hl7.org/CodeSystem/consentscope', 'patient-privacy', 'Privacy Consent'))),
        'category', pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object('coding', pg_catalog.jsonb_build_array(
                    ehrledger._fhir_coding('http://loinc.org', '59284-0', 'Patient Consent')))),
        'patient', ehrledger._fhir_actor(g.patient, 'patient'),
        'dateTime', ehrledger._fhir_instant(g.at),
        'performer', pg_catalog.jsonb_build_array(ehrledger._fhir_actor(g.patient, 'patient')),
        'sourceAttachment', CASE
            WHEN g.paper_form IS NOT NULL THEN pg_catalog.jsonb_build_object(
                'title', 'consent form signed on paper: ' || g.paper_form)
            WHEN g.signature IS NOT NULL THEN pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
                'contentType', CASE WHEN terms IS NOT NULL THEN 'application/octet-stream' END,
                'data', ehrledger._fhir_base64(terms),
                'title', pg_catalog.format('consent terms (%s, docs/format.md section 16) signed by patient %s with Ed25519; signature %s',
                                           CASE WHEN terms IS NOT NULL THEN 'ehrledger-consent-grant-2' ELSE 'ehrledger-consent-grant-1' END,
                                           g.patient, pg_catalog.encode(g.signature, 'hex')))) END,
        'verification', CASE WHEN g.paper_form IS NOT NULL OR g.signature IS NOT NULL THEN pg_catalog.jsonb_build_array(
                    pg_catalog.jsonb_build_object(
                        'verified', true,
                        'verifiedWith', ehrledger._fhir_actor(g.patient, 'patient'),
                        'verificationDate', ehrledger._fhir_instant(g.at))) END,
        'policyRule', pg_catalog.jsonb_build_object('coding', pg_catalog.jsonb_build_array(ehrledger._fhir_coding(
                    'http://terminology.hl7.org/CodeSystem/v3-ActCode', 'OPTIN', 'opt-in'))),
        'provision', pg_catalog.jsonb_build_object(
            'type', 'permit',
            'period', pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
                'start', ehrledger._fhir_instant(g.at),
                'end', ehrledger._fhir_instant(ends))),
            'actor', pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
                'role', pg_catalog.jsonb_build_object('coding', pg_catalog.jsonb_build_array(ehrledger._fhir_coding(
                    'http://terminology.hl7.org/CodeSystem/v3-ParticipationType', 'IRCP', 'information recipient'))),
                'reference', ehrledger._fhir_actor(g.grantee, grantee_role))),
            'action', (SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object('coding', pg_catalog.jsonb_build_array(
                            CASE a WHEN 'read' THEN ehrledger._fhir_coding('http://terminology.hl7.org/CodeSystem/consentaction', 'access', 'Access')
                                   ELSE ehrledger._fhir_coding('http://terminology.hl7.org/CodeSystem/consentaction', 'correct', 'Access and Correct') END)) ORDER BY a)
                         FROM pg_catalog.unnest(acts) a),
            'purpose', pg_catalog.jsonb_build_array(ehrledger._purpose_coding(g.purpose)),
            'class', CASE WHEN kind IS NOT NULL THEN pg_catalog.jsonb_build_array(
                          ehrledger._fhir_coding(ehrledger._fhir_system(kind), g.scope, kind || ' ' || g.scope)) END)));
    IF bundle IS NULL THEN
        RETURN res;
    END IF;
    RETURN ehrledger._fhir_bundle(pg_catalog.jsonb_build_array(res), bundle);
END
$function$;

-- A consent as a FHIR R4 Consent resource.
CREATE FUNCTION ehrledger.consent_as_fhir(consent_id bigint, bundle text DEFAULT NULL::text)
 RETURNS jsonb
 LANGUAGE c
 STABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS 'MODULE_PATHNAME', $function$ehrledger_with_caller$function$;
COMMENT ON FUNCTION ehrledger.consent_as_fhir(bigint,text) IS 'A consent the caller may see as a FHIR R4 Consent (NULL if it does not exist or is not the caller''s to see); with bundle => ''transaction'' (or ''batch'', ''collection'') in a Bundle.';

-- BALP's profiles, by the canonical URL of each.
CREATE FUNCTION ehrledger._balp(profile text)
 RETURNS jsonb
 LANGUAGE sql
 IMMUTABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
    SELECT pg_catalog.jsonb_build_object('profile', pg_catalog.jsonb_build_array(
        'https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit.' || profile))
$function$;

-- Percent-encoding (RFC 3986) of every UTF-8 byte of s but the unreserved
-- characters and those in keep; NULL for NULL.
CREATE FUNCTION ehrledger._fhir_pct(s text, keep text)
 RETURNS text
 LANGUAGE sql
 IMMUTABLE STRICT
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
    SELECT COALESCE(pg_catalog.string_agg(
               CASE WHEN x.c ~ '^[A-Za-z0-9._~-]$' OR pg_catalog.strpos(keep, x.c) > 0 THEN x.c
                    ELSE pg_catalog.upper(pg_catalog.regexp_replace(
                             pg_catalog.encode(pg_catalog.convert_to(x.c, 'UTF8'), 'hex'), '(..)', '%\1', 'g')) END,
               '' ORDER BY x.n), '')
      FROM pg_catalog.regexp_split_to_table(s, '') WITH ORDINALITY AS x(c, n)
$function$;

-- The search a BALP PatientQuery event records for one patient of an access
-- log entry that names several, made of what the entry keeps (it keeps no
-- SQL text, which may name other patients or carry free text):
-- TABLE?patient=REFERENCE, the patient's reference as the event's patient
-- entity has it (Patient/ID, under ehrledger.fhir_base_url when set), or
-- TABLE?patient:identifier=SYSTEM|ID for a patient id that is no FHIR id
-- (\ | , $ escaped with \ as FHIR search asks; SYSTEM is empty, as the
-- identifier's, while ehrledger.fhir_identifier_system is).  TABLE is the
-- table's schema-qualified name.  Everything but unreserved characters (and
-- : / in the reference and system) is percent-encoded, so that no table or
-- patient name can pose as another parameter or another patient.
CREATE FUNCTION ehrledger._fhir_search(tbl regclass, patient text)
 RETURNS text
 LANGUAGE sql
 STABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
    SELECT ehrledger._fhir_pct(COALESCE(tbl::pg_catalog.text, ''), '') || '?'
           || CASE WHEN r.ref ? 'reference'
                   THEN 'patient=' || ehrledger._fhir_pct(r.ref->>'reference', ':/')
                   ELSE 'patient:identifier='
                        || COALESCE(ehrledger._fhir_pct(r.ref #>> '{identifier,system}', ':/'), '') || '|'
                        || ehrledger._fhir_pct(pg_catalog.regexp_replace(patient, '([\\|,$])', '\\\1', 'g'), '') END
      FROM (SELECT ehrledger._fhir_actor(patient, 'patient')) r(ref)
$function$;

-- One AuditEvent of one patient's line of an access log entry (and, for an
-- access a consent allowed, the AuthZconsent event of that decision when
-- authz): the patient is the k-th of the n the entry names.  A read of one
-- patient's rows is a BALP PatientRead, a statement that read several
-- patients' rows a PatientQuery (a search).  See the README, FHIR, for which
-- profile each action follows.
CREATE FUNCTION ehrledger._fhir_audit_event(seq bigint, k integer, n integer, authz boolean, at timestamp with time zone, actor text, actor_role text, pg_role name, action text, tbl regclass, patient text, basis text, detail text, client_addr inet)
 RETURNS jsonb
 LANGUAGE plpgsql
 STABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    dcm  pg_catalog.text := 'http://dicom.nema.org/resources/ontology/DCM';
    part pg_catalog.text := 'http://terminology.hl7.org/CodeSystem/v3-ParticipationType';
    basis_consent pg_catalog.int8;
    glass_id   pg_catalog.int8;
    glass_why  pg_catalog.text;
    purpose    pg_catalog.jsonb;
    who        pg_catalog.jsonb;
    who_type   pg_catalog.text;
    profile    pg_catalog.text;
    data_what  pg_catalog.jsonb;
    node       pg_catalog.jsonb := ehrledger._fhir_node();
    client     pg_catalog.jsonb;
    server     pg_catalog.jsonb;
    entities   pg_catalog.jsonb;
    m          pg_catalog.text[];
    search     pg_catalog.bool := action = 'read' AND n > 1 AND NOT authz;
BEGIN
    IF basis ~ '^consent [0-9]+' THEN
        basis_consent := (pg_catalog.regexp_match(basis, '^consent ([0-9]+)'))[1]::pg_catalog.int8;
    ELSIF basis ~ '^break-glass [0-9]+: ' THEN
        m := pg_catalog.regexp_match(basis, '^break-glass ([0-9]+): (.*)$');
        glass_id := m[1]::pg_catalog.int8;
        glass_why := m[2];
    END IF;

    -- Why: the consent's purpose, emergency treatment under break-glass,
    -- the patient's own request for its own record and its consents.
    purpose := pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object('coding', pg_catalog.jsonb_build_array(
        CASE WHEN basis_consent IS NOT NULL
             THEN ehrledger._purpose_coding((SELECT g.purpose FROM ehrledger.consent_event g
                                              WHERE g.consent_id = basis_consent AND g.action = 'grant'))
             WHEN glass_id IS NOT NULL OR action = 'break_glass' THEN ehrledger._purpose_coding('emergency')
             ELSE ehrledger._purpose_coding('patient-request') END)));

    -- Who: the actor; a grant or revocation presented with the patient's
    -- signature is the patient's own act, whoever presented it.
    IF action IN ('grant', 'revoke') AND basis = 'patient signature' THEN
        who := ehrledger._fhir_actor(patient, 'patient');
    ELSIF actor IS NOT NULL THEN
        who := ehrledger._fhir_actor(actor, actor_role);
    END IF;
    who_type := CASE WHEN authz OR action IN ('read', 'break_glass') THEN 'IRCP'
                     WHEN basis = 'paper form' THEN 'INF' ELSE 'AUT' END;

    -- A read's client is where the data goes (Destination Role ID); a
    -- search's, as in DICOM and BALP's Query, where the query comes from
    -- (Source Role ID), and the server the reverse.
    client := pg_catalog.jsonb_build_object(
        'type', pg_catalog.jsonb_build_object('coding', pg_catalog.jsonb_build_array(
            CASE WHEN authz OR action = 'break_glass' THEN ehrledger._fhir_coding(dcm, '110150', 'Application')
                 WHEN action = 'read' AND NOT search THEN ehrledger._fhir_coding(dcm, '110152', 'Destination Role ID')
                 ELSE ehrledger._fhir_coding(dcm, '110153', 'Source Role ID') END)),
        'who', ehrledger._fhir_ref(NULL, pg_role, 'pg-role', 'database role ' || pg_role),
        'requestor', false);
    -- The client's IP address (network type 2), when it connected over TCP.
    IF client_addr IS NOT NULL THEN
        client := client || pg_catalog.jsonb_build_object('network', pg_catalog.jsonb_build_object(
            'address', pg_catalog.host(client_addr), 'type', '2'));
    END IF;
    server := pg_catalog.jsonb_build_object(
        'type', pg_catalog.jsonb_build_object('coding', pg_catalog.jsonb_build_array(
            CASE WHEN authz THEN ehrledger._fhir_coding('http://terminology.hl7.org/CodeSystem/extra-security-role-type',
                                                        'authserver', 'authorization server')
                 WHEN action = 'read' AND NOT search THEN ehrledger._fhir_coding(dcm, '110153', 'Source Role ID')
                 ELSE ehrledger._fhir_coding(dcm, '110152', 'Destination Role ID') END)),
        'who', node,
        'requestor', false,
        'network', CASE WHEN NOT authz THEN pg_catalog.jsonb_build_object('address', ehrledger.node_name(), 'type', '1') END);

    entities := pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
        'what', ehrledger._fhir_actor(patient, 'patient'),
        'type', ehrledger._fhir_coding('http://terminology.hl7.org/CodeSystem/audit-entity-type', '1', 'Person'),
        'role', ehrledger._fhir_coding('http://terminology.hl7.org/CodeSystem/object-role', '1', 'Patient')));
    IF search THEN
        -- What was searched: this patient's rows of the table, as a FHIR
        -- search; never the statement's text, nor the other patients (this
        -- event is the patient's to see).
        entities := entities || pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
            'type', ehrledger._fhir_coding('http://terminology.hl7.org/CodeSystem/audit-entity-type', '2', 'System Object'),
            'role', ehrledger._fhir_coding('http://terminology.hl7.org/CodeSystem/object-role', '24', 'Query'),
            'description', pg_catalog.format(
                'synthesized from access log entry %s (ehrledger keeps no SQL text): one statement read rows of %s of several patients; this event shows patient %s''s part only',
                seq, COALESCE(tbl::pg_catalog.text, 'an unknown table'), patient),
            'query', ehrledger._fhir_base64(pg_catalog.convert_to(ehrledger._fhir_search(tbl, patient), 'UTF8'))));
    ELSIF NOT authz AND action <> 'break_glass' THEN
        IF action IN ('grant', 'revoke') THEN
            data_what := ehrledger._fhir_ref('Consent', (pg_catalog.regexp_match(detail, '^consent ([0-9]+)'))[1], 'consent',
                                             'consent ' || (pg_catalog.regexp_match(detail, '^consent ([0-9]+)'))[1]);
        ELSE
            data_what := ehrledger._fhir_ref(NULL, tbl::pg_catalog.text, 'table', 'rows of ' || tbl::pg_catalog.text);
        END IF;
        entities := entities || pg_catalog.jsonb_build_array(pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
            'what', data_what,
            'type', ehrledger._fhir_coding('http://terminology.hl7.org/CodeSystem/audit-entity-type', '2', 'System Object'),
            'role', ehrledger._fhir_coding('http://terminology.hl7.org/CodeSystem/object-role', '4', 'Domain Resource'),
            'description', detail)));
    END IF;
    IF basis_consent IS NOT NULL THEN
        entities := entities || pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
            'what', ehrledger._fhir_ref('Consent', basis_consent::pg_catalog.text, 'consent', 'consent ' || basis_consent),
            'type', ehrledger._fhir_coding('http://hl7.org/fhir/resource-types', 'Consent', 'Consent')));
    END IF;
    IF action = 'break_glass' THEN
        m := pg_catalog.regexp_match(basis, '^break-glass ([0-9]+): (.*)$');
        glass_id := m[1]::pg_catalog.int8;
        glass_why := m[2];
    END IF;
    -- BALP tells a read's or change's entities apart by their type alone:
    -- its one System Object is the data (or the query).  The break-glass
    -- there is Other; the break-glass alert's own is a System Object.
    IF glass_id IS NOT NULL AND NOT authz THEN
        entities := entities || pg_catalog.jsonb_build_array(pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
            'what', ehrledger._fhir_ref(NULL, glass_id::pg_catalog.text, 'break-glass', 'break-glass ' || glass_id),
            'type', CASE WHEN action = 'break_glass'
                         THEN ehrledger._fhir_coding('http://terminology.hl7.org/CodeSystem/audit-entity-type', '2', 'System Object')
                         ELSE ehrledger._fhir_coding('http://terminology.hl7.org/CodeSystem/audit-entity-type', '4', 'Other') END,
            'role', ehrledger._fhir_coding('http://terminology.hl7.org/CodeSystem/object-role', '13', 'Security Resource'),
            'description', glass_why,
            'detail', CASE WHEN action = 'break_glass' AND detail IS NOT NULL THEN pg_catalog.jsonb_build_array(
                          pg_catalog.jsonb_build_object('type', 'open', 'valueString', detail)) END)));
    END IF;

    profile := CASE WHEN authz THEN 'AuthZconsent'
                    WHEN search THEN 'PatientQuery'
                    WHEN action = 'read' THEN 'PatientRead'
                    WHEN action IN ('insert', 'grant') THEN 'PatientCreate'
                    WHEN action IN ('update', 'revoke') THEN 'PatientUpdate'
                    WHEN action = 'delete' THEN 'PatientDelete' END;

    RETURN pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
        'resourceType', 'AuditEvent',
        'id', seq || '-' || k || CASE WHEN authz THEN '-authz' ELSE '' END,
        'meta', CASE WHEN profile IS NOT NULL THEN ehrledger._balp(profile) END,
        'text', ehrledger._fhir_text(pg_catalog.format('%s %s: %s%s, patient %s, on the basis %s%s.',
                    ehrledger._fhir_instant(at),
                    CASE WHEN authz THEN 'access permitted by ' || 'consent ' || basis_consent
                         WHEN search THEN 'search (one statement read the rows of several patients)'
                         ELSE pg_catalog.replace(action, '_', '-') END,
                    COALESCE(actor, 'no actor') || ' (database role ' || pg_role || ')',
                    COALESCE(', ' || tbl::pg_catalog.text, ''), patient, basis,
                    COALESCE('; ' || detail, ''))),
        'type', CASE WHEN authz OR action = 'break_glass' THEN ehrledger._fhir_coding(dcm, '110113', 'Security Alert')
                     ELSE ehrledger._fhir_coding('http://terminology.hl7.org/CodeSystem/audit-event-type', 'rest', 'RESTful Operation') END,
        'subtype', pg_catalog.jsonb_build_array(CASE
                     WHEN authz THEN ehrledger._fhir_coding('https://profiles.ihe.net/ITI/BALP/CodeSystem/AuthZsubType',
                                                            'AuthZ-Consent', 'Authorization Decision using Roles and Consent')
                     WHEN action = 'break_glass' THEN ehrledger._fhir_coding(dcm, '110127', 'Emergency Override Started')
                     WHEN search THEN ehrledger._fhir_coding('http://hl7.org/fhir/restful-interaction', 'search', 'search')
                     ELSE ehrledger._fhir_coding('http://hl7.org/fhir/restful-interaction',
                              CASE action WHEN 'read' THEN 'read' WHEN 'insert' THEN 'create' WHEN 'grant' THEN 'create'
                                          WHEN 'delete' THEN 'delete' ELSE 'update' END,
                              CASE action WHEN 'read' THEN 'read' WHEN 'insert' THEN 'create' WHEN 'grant' THEN 'create'
                                          WHEN 'delete' THEN 'delete' ELSE 'update' END) END),
        'action', CASE WHEN authz OR action = 'break_glass' OR search THEN 'E'
                       WHEN action = 'read' THEN 'R' WHEN action IN ('insert', 'grant') THEN 'C'
                       WHEN action = 'delete' THEN 'D' ELSE 'U' END,
        'recorded', ehrledger._fhir_instant(at),
        'outcome', '0',
        'purposeOfEvent', purpose,
        'agent', pg_catalog.jsonb_build_array(client, server)
                 || CASE WHEN who IS NULL THEN '[]'::pg_catalog.jsonb ELSE pg_catalog.jsonb_build_array(pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
                        'type', pg_catalog.jsonb_build_object('coding', pg_catalog.jsonb_build_array(
                            CASE who_type WHEN 'IRCP' THEN ehrledger._fhir_coding(part, 'IRCP', 'information recipient')
                                          WHEN 'INF' THEN ehrledger._fhir_coding(part, 'INF', 'informant')
                                          ELSE ehrledger._fhir_coding(part, 'AUT', 'author (originator)') END)),
                        'who', who,
                        'name', who->>'display',
                        'requestor', true,
                        'purposeOfUse', purpose))) END
                 || CASE WHEN authz THEN pg_catalog.jsonb_build_array(
                        pg_catalog.jsonb_build_object(
                            'type', pg_catalog.jsonb_build_object('coding', pg_catalog.jsonb_build_array(ehrledger._fhir_coding(
                                'http://terminology.hl7.org/CodeSystem/v3-RoleClass', 'PROV', 'healthcare provider'))),
                            'who', ehrledger._fhir_ref('Organization', ehrledger.node_name(), 'node',
                                                       'the hospital of ehrledger node ' || ehrledger.node_name()),
                            'requestor', false))
                    ELSE '[]'::pg_catalog.jsonb END,
        'source', pg_catalog.jsonb_build_object(
            'site', ehrledger.node_name(),
            'observer', node,
            'type', pg_catalog.jsonb_build_array(ehrledger._fhir_coding(
                'http://terminology.hl7.org/CodeSystem/security-source-type', '5', 'Database Server'))),
        'entity', entities));
END
$function$;

-- A patient's access history: every line, as one AuditEvent (two for an
-- access a consent allowed: the access and the decision).  Ids are the
-- access log entry's number and the patient's place in it: stable, and
-- unique across the whole log.  An entry names patients of one statement
-- (the writer never leaves one patient of several in an entry of its own):
-- an entry of several patients was a search.
CREATE FUNCTION ehrledger._access_history_fhir(caller name, patient text, bundle text)
 RETURNS jsonb
 LANGUAGE plpgsql
 STABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    events pg_catalog.jsonb;
BEGIN
    PERFORM ehrledger._fhir_check_bundle(bundle);
    SELECT COALESCE(pg_catalog.jsonb_agg(ev ORDER BY h.event_seq, k, authz), '[]') INTO events
      FROM ehrledger._access_history(caller, patient) h
      JOIN ehrledger.access_event e ON e.ledger_seq = h.event_seq
      LEFT JOIN ehrledger.actors a ON a.actor_id = h.actor
     CROSS JOIN LATERAL (SELECT pg_catalog.array_position(e.patients, _access_history_fhir.patient)) p(k)
     CROSS JOIN LATERAL (SELECT false UNION ALL SELECT true WHERE h.basis ~ '^consent [0-9]+') z(authz)
     CROSS JOIN LATERAL ehrledger._fhir_audit_event(h.event_seq, p.k, pg_catalog.cardinality(e.patients), z.authz,
                                                    h.at, h.actor, a.role, h.pg_role, h.action, h.tbl,
                                                    _access_history_fhir.patient, h.basis, h.detail, h.client_addr) ev;
    RETURN ehrledger._fhir_bundle(events, COALESCE(bundle, 'collection'));
END
$function$;

-- A patient's access history as a FHIR R4 Bundle of AuditEvent resources.
CREATE FUNCTION ehrledger.access_history_fhir(patient text, bundle text DEFAULT NULL::text)
 RETURNS jsonb
 LANGUAGE c
 STABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS 'MODULE_PATHNAME', $function$ehrledger_with_caller$function$;
COMMENT ON FUNCTION ehrledger.access_history_fhir(text,text) IS 'A patient''s access history as a FHIR R4 Bundle of AuditEvents after IHE BALP (a collection; bundle => ''transaction'' or ''batch'' for a FHIR server); for the patient itself or an auditor.';

-- The Provenance of one sealed ledger row: what it is (target), when the
-- ledger sealed it (recorded), who made it and who keeps it (agents), the
-- author's Ed25519 signature for rows of signed tables, and, contained,
-- the inclusion proof with the digest it is checked against
-- (ehrledger-verify proof digest) and the bytes the author signed.  The
-- caller needs what ehrledger.proof() needs: SELECT on the table.
CREATE FUNCTION ehrledger.provenance_fhir(tbl regclass, ledger_seq bigint, bundle text DEFAULT NULL::text)
 RETURNS jsonb
 LANGUAGE plpgsql
 STABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    t        record;
    d        pg_catalog.jsonb;
    p        pg_catalog.jsonb;
    r        pg_catalog.jsonb;
    v        record;
    sealed   pg_catalog.text;
    targets  pg_catalog.jsonb;
    agents   pg_catalog.jsonb := '[]';
    entities pg_catalog.jsonb;
    contained pg_catalog.jsonb;
    signer   pg_catalog.jsonb;
    sig      pg_catalog.bytea;
    payload  pg_catalog.bytea;
    sig_type pg_catalog.jsonb;
    about    pg_catalog.text;
    res      pg_catalog.jsonb;
BEGIN
    PERFORM ehrledger._fhir_check_bundle(bundle);
    IF tbl IS NULL OR ledger_seq IS NULL THEN
        RAISE EXCEPTION 'table and ledger_seq must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT x.table_id, x.signer_column, x.signature_column, x.internal INTO t
      FROM ehrledger.protected_tables x WHERE x.tbl = provenance_fhir.tbl;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'table % is not protected by ehrledger', tbl USING ERRCODE = 'LD002';
    END IF;
    -- proof() checks the caller's rights, that the row exists and is sealed.
    d := ehrledger.digest();
    p := ehrledger.proof(tbl, ledger_seq, d);
    IF p ? 'erasure' THEN
        RAISE EXCEPTION 'row % of % was erased', ledger_seq, tbl
            USING ERRCODE = '02000',
                  HINT = 'ehrledger.proof() shows its leaf and the record of its erasure.';
    END IF;
    r := p->'row';
    sealed := p->'block'->>'sealed_at';
    about := pg_catalog.format('%s row %s', tbl, ledger_seq);

    IF t.table_id = 2000000003 THEN
        -- A consent's grant or revocation: the Consent it makes or ends,
        -- given by the patient (its signature, its role) or entered by a
        -- registrar from a paper form.
        targets := pg_catalog.jsonb_build_array(ehrledger._fhir_ref('Consent', r->>'consent_id', 'consent', 'consent ' || (r->>'consent_id')));
        about := pg_catalog.format('the %s of consent %s', CASE r->>'action' WHEN 'grant' THEN 'grant' ELSE 'revocation' END, r->>'consent_id');
        agents := pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
            'type', pg_catalog.jsonb_build_object('coding', pg_catalog.jsonb_build_array(ehrledger._fhir_coding(
                'http://terminology.hl7.org/CodeSystem/provenance-participant-type', 'author', 'Author'))),
            'who', ehrledger._fhir_actor(r->>'patient', 'patient')));
        IF r->>'paper_form' IS NOT NULL AND r->>'by_actor' IS NOT NULL THEN
            agents := agents || pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
                'type', pg_catalog.jsonb_build_object('coding', pg_catalog.jsonb_build_array(ehrledger._fhir_coding(
                    'http://terminology.hl7.org/CodeSystem/provenance-participant-type', 'enterer', 'Enterer'))),
                'who', ehrledger._fhir_actor(r->>'by_actor', 'admin')));
        END IF;
        IF r->>'signature' IS NOT NULL THEN
            sig := pg_catalog.decode(pg_catalog.substr(r->>'signature', 3), 'hex');
            signer := ehrledger._fhir_actor(r->>'patient', 'patient');
            sig_type := ehrledger._fhir_coding('urn:iso-astm:E1762-95:2013', '1.2.840.10065.1.12.1.7', 'Consent Signature');
            IF r->>'action' = 'revoke' THEN
                payload := ehrledger.revocation_payload((r->>'consent_id')::pg_catalog.int8);
            ELSIF r->'actions' <> 'null' THEN
                payload := ehrledger.consent_payload(r->>'patient', r->>'grantee', r->>'scope', r->>'purpose',
                                                     (r->>'valid_until')::pg_catalog.timestamptz,
                                                     ARRAY(SELECT pg_catalog.jsonb_array_elements_text(r->'actions')));
            END IF;
        END IF;
    ELSIF t.table_id = 2000000005 THEN
        -- An access log entry: the AuditEvents made of it.
        targets := (SELECT pg_catalog.jsonb_agg(ehrledger._fhir_ref('AuditEvent', ledger_seq || '-' || n, 'ledger-row',
                                                                    'access log entry ' || ledger_seq || ', patient ' || x) ORDER BY n)
                      FROM pg_catalog.jsonb_array_elements_text(r->'patients') WITH ORDINALITY AS q(x, n));
        about := 'access log entry ' || ledger_seq;
    ELSE
        -- A row holding a FHIR resource (a jsonb column with resourceType
        -- and id) is that resource; any other row is named by its number.
        targets := (SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
                               'reference', ehrledger._fhir_url((c.value->>'resourceType') || '/' || (c.value->>'id')),
                               'type', c.value->>'resourceType',
                               'display', pg_catalog.format('%s %s (%s)', c.value->>'resourceType', c.value->>'id', about)) ORDER BY c.key)
                      FROM pg_catalog.jsonb_each(r) c
                     WHERE pg_catalog.jsonb_typeof(c.value) = 'object'
                       AND c.value->>'resourceType' ~ '^[A-Z][A-Za-z]{1,63}$'
                       AND c.value->>'id' ~ '^[A-Za-z0-9.-]{1,64}$');
        IF t.signer_column IS NOT NULL THEN
            SELECT * INTO v FROM ehrledger.verify_record(tbl, ledger_seq);
            IF v.valid THEN
                sig := pg_catalog.decode(pg_catalog.substr(r->>t.signature_column, 3), 'hex');
                signer := ehrledger._fhir_actor(v.signer, v.role);
                sig_type := ehrledger._fhir_coding('urn:iso-astm:E1762-95:2013', '1.2.840.10065.1.12.1.1', 'Author''s Signature');
                payload := ehrledger.signing_payload(tbl, r);
                agents := pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
                    'type', pg_catalog.jsonb_build_object('coding', pg_catalog.jsonb_build_array(ehrledger._fhir_coding(
                        'http://terminology.hl7.org/CodeSystem/provenance-participant-type', 'author', 'Author'))),
                    'who', signer));
            END IF;
        END IF;
    END IF;
    IF targets IS NULL THEN
        targets := pg_catalog.jsonb_build_array(ehrledger._fhir_ref(NULL, ehrledger.node_name() || ':' || ledger_seq,
                                                                    'ledger-row', about));
    END IF;
    agents := agents || pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
        'type', pg_catalog.jsonb_build_object('coding', pg_catalog.jsonb_build_array(ehrledger._fhir_coding(
            'http://terminology.hl7.org/CodeSystem/provenance-participant-type', 'custodian', 'Custodian'))),
        'who', ehrledger._fhir_node()));

    contained := pg_catalog.jsonb_build_array(
        pg_catalog.jsonb_build_object('resourceType', 'Binary', 'id', 'proof', 'contentType', 'application/json',
                                      'data', ehrledger._fhir_base64(pg_catalog.convert_to(p::pg_catalog.text, 'UTF8'))),
        pg_catalog.jsonb_build_object('resourceType', 'Binary', 'id', 'digest', 'contentType', 'application/json',
                                      'data', ehrledger._fhir_base64(pg_catalog.convert_to(d::pg_catalog.text, 'UTF8'))));
    entities := pg_catalog.jsonb_build_array(
        pg_catalog.jsonb_build_object('role', 'source', 'what', pg_catalog.jsonb_build_object(
            'reference', '#proof', 'type', 'Binary',
            'display', pg_catalog.format('ehrledger inclusion proof of ledger row %s in block %s of %s (docs/format.md section 12)',
                                         ledger_seq, p->'block'->>'height', p->>'origin'))),
        pg_catalog.jsonb_build_object('role', 'source', 'what', pg_catalog.jsonb_build_object(
            'reference', '#digest', 'type', 'Binary',
            'display', pg_catalog.format('signed ehrledger digest of %s at height %s, which the proof is checked against',
                                         d->>'origin', d->>'height'))));
    IF payload IS NOT NULL THEN
        contained := contained || pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
            'resourceType', 'Binary', 'id', 'signed', 'contentType', 'application/octet-stream',
            'data', ehrledger._fhir_base64(payload)));
        entities := entities || pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object('role', 'quotation',
            'what', pg_catalog.jsonb_build_object('reference', '#signed', 'type', 'Binary',
                                                  'display', 'the bytes the signature is over')));
    END IF;

    res := pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
        'resourceType', 'Provenance',
        'id', 'ledger-' || ledger_seq,
        'text', ehrledger._fhir_text(pg_catalog.format('Provenance of %s, sealed by ehrledger node %s in block %s at %s%s.',
                    about, p->>'origin', p->'block'->>'height', sealed,
                    CASE WHEN sig IS NOT NULL THEN pg_catalog.format('; signed with Ed25519 by %s', signer->>'display')
                         WHEN t.signer_column IS NOT NULL THEN '; its signature does not verify'
                         ELSE '' END)),
        'contained', contained,
        'target', targets,
        'recorded', sealed,
        'agent', agents,
        'entity', entities,
        'signature', CASE WHEN sig IS NOT NULL THEN pg_catalog.jsonb_build_array(pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
            'type', pg_catalog.jsonb_build_array(sig_type),
            'when', sealed,
            'who', signer,
            'targetFormat', CASE WHEN payload IS NOT NULL THEN 'application/octet-stream' END,
            'sigFormat', 'application/octet-stream',
            'data', ehrledger._fhir_base64(sig)))) END));
    IF bundle IS NULL THEN
        RETURN res;
    END IF;
    RETURN ehrledger._fhir_bundle(pg_catalog.jsonb_build_array(res), bundle);
END
$function$;
COMMENT ON FUNCTION ehrledger.provenance_fhir(regclass,bigint,text) IS 'A FHIR R4 Provenance of a sealed ledger row: target, recorded, agents, the author''s Ed25519 signature for signed rows, and the inclusion proof with its digest (contained); with bundle => ''transaction'' in a Bundle. Needs SELECT on the table.';

-- Privileges -------------------------------------------------------------
REVOKE ALL ON FUNCTION
    ehrledger._consent_as_fhir(name,bigint,text),
    ehrledger._fhir_pct(text,text),
    ehrledger._fhir_search(regclass,text),
    ehrledger._fhir_audit_event(bigint,integer,integer,boolean,timestamp with time zone,text,text,name,text,regclass,text,text,text,inet),
    ehrledger._access_history_fhir(name,text,text)
    FROM PUBLIC;
