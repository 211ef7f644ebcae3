/*
 * check.c
 *		The checks of digests, inclusion proofs, consistency proofs, table
 *		exports and certificates (docs/format.md §9-14, §18, §19), for
 *		ehrledger-verify and for the server alike.
 *
 * A check stops at the first thing that does not hold, with a verdict:
 * invalid (the document does not prove what it claims) or unusable (it is
 * not a document of its kind, or memory ran out).  Stopping is a longjmp
 * back to the check's entry point, inside this file only, which then
 * frees everything the check allocated: nothing here exits or aborts, and
 * no caller's frame is ever skipped.
 *
 * Next: the verdict goes back to ehrledger-verify (cli/), which prints it,
 * or to src/ledger/checks.c and src/network/rules.c, which return it to SQL.
 */
#include "check.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "decode.h"
#include "json.h"

#define MAX_DEPTH			64
#define MAX_VALUES			100000	/* values kept per document or line */
#define MAX_ORIGIN			65535	/* it is hashed after a u16 length */

/* ------------------------------------------------------------- contexts */

typedef struct Resource
{
	void	   *p;
	void		(*release) (void *);
} Resource;

/* One check's state: where to stop to, and what to free then. */
typedef struct Ctx
{
	jmp_buf		stop;
	LcResult   *r;
	const LcOptions *o;
	Resource   *res;
	size_t		nres;
	size_t		capres;
} Ctx;

static void
release_json(void *p)
{
	json_free(p);
}

static void
release_encoding(void *p)
{
	lc_encoding_free(p);
	free(p);
}

static void
release_enrolment(void *p)
{
	lc_enrolment_free(p);
	free(p);
}

static void
release_buf(void *p)
{
	lc_buf_free(p);
	free(p);
}

static _Noreturn void finish(Ctx *c, int status, const char *prefix, const char *fmt,
							 va_list ap) __attribute__((format(printf, 4, 0)));
static _Noreturn void
finish(Ctx *c, int status, const char *prefix, const char *fmt, va_list ap)
{
	int			n = 0;

	c->r->status = status;
	if (prefix != NULL)
		n = snprintf(c->r->message, sizeof(c->r->message), "%s", prefix);
	vsnprintf(c->r->message + n, sizeof(c->r->message) - (size_t) n, fmt, ap);
	longjmp(c->stop, 1);
}

/* Not a document of its kind: LC_UNUSABLE. */
static _Noreturn void unusable(Ctx *c, const char *fmt,...) __attribute__((format(printf, 2, 3)));
static _Noreturn void
unusable(Ctx *c, const char *fmt,...)
{
	va_list		ap;

	va_start(ap, fmt);
	finish(c, LC_UNUSABLE, NULL, fmt, ap);
}

/* Well formed, but it does not prove what it claims: LC_INVALID. */
static _Noreturn void invalid(Ctx *c, const char *fmt,...) __attribute__((format(printf, 2, 3)));
static _Noreturn void
invalid(Ctx *c, const char *fmt,...)
{
	va_list		ap;

	va_start(ap, fmt);
	finish(c, LC_INVALID, NULL, fmt, ap);
}

static _Noreturn void
out_of_memory(Ctx *c)
{
	c->r->oom = true;
	unusable(c, "out of memory");
}

/* A core function failed: out of memory, or OpenSSL or libsodium. */
static _Noreturn void
core_failed(Ctx *c, int rc)
{
	if (rc == LC_ERR_NOMEM)
		out_of_memory(c);
	unusable(c, "SHA-256 or Ed25519 failed (OpenSSL or libsodium)");
}

static void
need(Ctx *c, bool ok)
{
	if (!ok)
		core_failed(c, lc_error);
}

/* Frees p with release when the check ends, however it ends. */
static void
keep(Ctx *c, void *p, void (*release) (void *))
{
	if (c->nres == c->capres)
	{
		size_t		grown = c->capres ? c->capres * 2 : 16;
		Resource   *res = realloc(c->res, grown * sizeof(Resource));

		if (res == NULL)
		{
			release(p);
			out_of_memory(c);
		}
		c->res = res;
		c->capres = grown;
	}
	c->res[c->nres].p = p;
	c->res[c->nres].release = release;
	c->nres++;
}

static void *
cmalloc(Ctx *c, size_t n)
{
	void	   *p = malloc(n ? n : 1);

	if (p == NULL)
		out_of_memory(c);
	keep(c, p, free);
	return p;
}

static LcBuf *
cbuf(Ctx *c)
{
	LcBuf	   *b = cmalloc(c, sizeof(LcBuf));

	lc_buf_init(b);
	/* replace the plain free with one that frees the contents too */
	c->res[c->nres - 1].release = release_buf;
	return b;
}

static void
buf_ok(Ctx *c, LcBuf *b)
{
	if (b->failed)
		out_of_memory(c);
}

static Ctx *
ctx_new(LcResult *r, const LcOptions *o)
{
	Ctx		   *c = calloc(1, sizeof(Ctx));

	if (c == NULL)
	{
		r->status = LC_UNUSABLE;
		r->oom = true;
		snprintf(r->message, sizeof(r->message), "out of memory");
		return NULL;
	}
	c->r = r;
	c->o = o;
	return c;
}

/* Frees what a check allocated; the context can serve another check. */
static void
ctx_release(Ctx *c)
{
	size_t		i;

	for (i = c->nres; i > 0; i--)
		c->res[i - 1].release(c->res[i - 1].p);
	c->nres = 0;
}

static void
ctx_free(Ctx *c)
{
	ctx_release(c);
	free(c->res);
	free(c);
}

void
lc_result_init(LcResult *r)
{
	memset(r, 0, sizeof(*r));
	lc_buf_init(&r->out);
}

void
lc_result_free(LcResult *r)
{
	lc_buf_free(&r->out);
}

/* Appends to the result's output (when valid). */
static void out(Ctx *c, const char *fmt,...) __attribute__((format(printf, 2, 3)));
static void
out(Ctx *c, const char *fmt,...)
{
	va_list		ap;
	int			n;
	char	   *s;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	s = cmalloc(c, (size_t) n + 1);
	va_start(ap, fmt);
	vsnprintf(s, (size_t) n + 1, fmt, ap);
	va_end(ap);
	lc_put(&c->r->out, s, (size_t) n);
	buf_ok(c, &c->r->out);
}

/* -------------------------------------------------------------- showing */

/*
 * Text from an input, safe to print on one line: control characters are
 * escaped, and long text is cut (at a character boundary) with "...".
 * Returns one of a few rotating static buffers.
 */
static const char *
shown(const char *s, size_t len)
{
	static char bufs[8][512];
	static int	next = 0;
	char	   *o = bufs[next];
	size_t		w = 0;
	size_t		i;

	next = (next + 1) % 8;
	for (i = 0; i < len; i++)
	{
		unsigned char ch = (unsigned char) s[i];

		if (w + 8 >= sizeof(bufs[0]) && (ch & 0xC0) != 0x80)
		{
			memcpy(o + w, "...", 3);
			w += 3;
			break;
		}
		if (ch < 0x20 || ch == 0x7f || ch == '\\')
			w += (size_t) snprintf(o + w, sizeof(bufs[0]) - w, "\\x%02x", ch);
		else
			o[w++] = (char) ch;
	}
	o[w] = '\0';
	return o;
}

static const char *
shown_z(const char *s)
{
	return shown(s, strlen(s));
}

/* The same, in memory of the check's own (for text kept across messages). */
static const char *
shown_dup(Ctx *c, const char *s, size_t len)
{
	const char *t = shown(s, len);
	char	   *copy = cmalloc(c, strlen(t) + 1);

	strcpy(copy, t);
	return copy;
}

static const char *
hex_of(const uint8_t *data, size_t len)
{
	static char bufs[4][2 * LC_SIG_LEN + 1];
	static int	next = 0;
	char	   *o = bufs[next];

	next = (next + 1) % 4;
	if (len > LC_SIG_LEN)
		len = LC_SIG_LEN;
	lc_hex_encode(data, len, o);
	return o;
}

/* --------------------------------------------------------------- fields */

/* Where a field sits, for messages: a document and a prefix like "block.". */
typedef struct Where
{
	const char *file;
	const char *line;			/* "line 5: " or "" */
	const char *prefix;			/* "block." or "" */
} Where;

static JsonValue *
parse(Ctx *c, const char *file, const char *what, char *text, size_t len)
{
	JsonOptions opts = {MAX_DEPTH, MAX_VALUES, "row", false};
	JsonValue  *root;
	char		err[256];
	bool		oom;

	if (!json_parse(text, len, &opts, &root, err, sizeof(err), &oom))
	{
		if (oom)
			out_of_memory(c);
		unusable(c, "%s: %snot valid JSON: %s", file, what, err);
	}
	keep(c, root, release_json);
	if (root->type != JSON_OBJECT)
		unusable(c, "%s: %sexpected a JSON object, found %s", file, what,
				 json_type_name(root->type));
	return root;
}

static const JsonValue *
field(Ctx *c, const Where *w, const JsonValue *obj, const char *key, JsonType type)
{
	const JsonValue *v = json_get(obj, key);

	if (v == NULL)
		unusable(c, "%s: %sfield \"%s%s\" is missing", w->file, w->line, w->prefix, key);
	if (v->type != type)
		unusable(c, "%s: %sfield \"%s%s\" must be %s, not %s", w->file, w->line, w->prefix, key,
				 json_type_name(type), json_type_name(v->type));
	return v;
}

static int64_t
get_int(Ctx *c, const Where *w, const JsonValue *obj, const char *key, int64_t min, int64_t max)
{
	const JsonValue *v = json_get(obj, key);
	int64_t		result = 0;
	int			rc;

	if (v == NULL)
		unusable(c, "%s: %sfield \"%s%s\" is missing", w->file, w->line, w->prefix, key);
	rc = json_int(v, min, max, &result);
	if (rc == -1)
		unusable(c, "%s: %sfield \"%s%s\" must be an integer (digits only)", w->file, w->line,
				 w->prefix, key);
	if (rc == -2)
		unusable(c, "%s: %sfield \"%s%s\" is out of range (%lld to %lld)", w->file, w->line,
				 w->prefix, key, (long long) min, (long long) max);
	return result;
}

static const char *
get_string(Ctx *c, const Where *w, const JsonValue *obj, const char *key, size_t max_len,
		   size_t *len)
{
	const JsonValue *v = field(c, w, obj, key, JSON_STRING);

	if (v->len > max_len)
		unusable(c, "%s: %sfield \"%s%s\" is longer than %zu bytes", w->file, w->line, w->prefix,
				 key, max_len);
	if (len != NULL)
		*len = v->len;
	return v->str;
}

static void
decode_hex_fixed(Ctx *c, const Where *w, const char *name, const JsonValue *v, uint8_t *o,
				 size_t nbytes)
{
	if (v->type != JSON_STRING)
		unusable(c, "%s: %s%s must be a string of %zu hex digits, not %s", w->file, w->line,
				 name, 2 * nbytes, json_type_name(v->type));
	if (v->len != 2 * nbytes)
		unusable(c, "%s: %s%s must be %zu hex digits, not %zu", w->file, w->line, name,
				 2 * nbytes, v->len);
	if (!lc_hex_decode(v->str, v->len, o))
		unusable(c, "%s: %s%s is not hexadecimal", w->file, w->line, name);
}

static void
get_hex_fixed(Ctx *c, const Where *w, const JsonValue *obj, const char *key, uint8_t *o,
			  size_t nbytes)
{
	const JsonValue *v = json_get(obj, key);
	char		name[128];

	snprintf(name, sizeof(name), "field \"%s%s\"", w->prefix, key);
	if (v == NULL)
		unusable(c, "%s: %s%s is missing", w->file, w->line, name);
	decode_hex_fixed(c, w, name, v, o, nbytes);
}

/* Hex of any even length, decoded into memory of the check's. */
static uint8_t *
get_hex_bytes(Ctx *c, const Where *w, const JsonValue *obj, const char *key, size_t *nbytes)
{
	const JsonValue *v = field(c, w, obj, key, JSON_STRING);
	uint8_t    *o;

	if (v->len % 2 != 0)
		unusable(c, "%s: %sfield \"%s%s\" has an odd number of hex digits", w->file, w->line,
				 w->prefix, key);
	o = cmalloc(c, v->len / 2);
	if (!lc_hex_decode(v->str, v->len, o))
		unusable(c, "%s: %sfield \"%s%s\" is not hexadecimal", w->file, w->line, w->prefix, key);
	*nbytes = v->len / 2;
	return o;
}

/* A time exactly as the server writes it; the canonical form only. */
static int64_t
get_time(Ctx *c, const Where *w, const JsonValue *obj, const char *key, char *text)
{
	size_t		len;
	const char *s = get_string(c, w, obj, key, 64, &len);
	int64_t		us;
	char		again[LC_ISO_LEN + 1];

	if (len != LC_ISO_LEN || !lc_parse_iso_utc(s, &us))
		unusable(c, "%s: %sfield \"%s%s\" must be a UTC time like 2026-01-31T12:00:00.000000Z",
				 w->file, w->line, w->prefix, key);
	lc_format_iso_utc(us, again);
	if (strcmp(again, s) != 0)
		unusable(c, "%s: %sfield \"%s%s\" is not a real date and time (%s)", w->file, w->line,
				 w->prefix, key, shown(s, len));
	memcpy(text, s, LC_ISO_LEN + 1);
	return us;
}

/* An array of at most LC_MAX_PATH hashes. */
static int
get_path(Ctx *c, const Where *w, const JsonValue *obj, const char *key, uint8_t *path)
{
	const JsonValue *v = field(c, w, obj, key, JSON_ARRAY);
	size_t		i;

	if (v->count > LC_MAX_PATH)
		unusable(c, "%s: %sfield \"%s%s\" has %zu hashes, more than any tree needs (%d)",
				 w->file, w->line, w->prefix, key, v->count, LC_MAX_PATH);
	for (i = 0; i < v->count; i++)
	{
		char		name[128];

		snprintf(name, sizeof(name), "element %zu of \"%s%s\"", i, w->prefix, key);
		decode_hex_fixed(c, w, name, &v->items[i], path + i * LC_HASH_LEN, LC_HASH_LEN);
	}
	return (int) v->count;
}

static const char *
get_origin(Ctx *c, const Where *w, const JsonValue *obj, size_t *len)
{
	const char *o = get_string(c, w, obj, "origin", MAX_ORIGIN, len);

	if (*len == 0)
		unusable(c, "%s: %sfield \"%sorigin\" is empty", w->file, w->line, w->prefix);
	if (strlen(o) != *len)
		unusable(c, "%s: %sfield \"%sorigin\" holds a NUL character", w->file, w->line, w->prefix);
	return o;
}

static void
check_format(Ctx *c, const Where *w, const JsonValue *obj, const char *expected)
{
	size_t		len;
	const char *f = get_string(c, w, obj, "format", 256, &len);

	if (strcmp(f, expected) != 0)
		unusable(c, "%s: %sformat is \"%s\", expected \"%s\"", w->file, w->line, shown(f, len),
				 expected);
}

/* Every member of obj must be one of the names listed (NULL-terminated). */
static void
only_fields(Ctx *c, const Where *w, const JsonValue *obj, const char *const *names)
{
	size_t		i;

	for (i = 0; i < obj->count; i++)
	{
		const char *const *n;
		bool		known = false;

		for (n = names; *n != NULL && !known; n++)
			known = strlen(*n) == obj->items[i].key_len &&
				memcmp(*n, obj->items[i].key, obj->items[i].key_len) == 0;
		if (!known)
			unusable(c, "%s: %sunknown field \"%s%s\" (a field nothing checks is refused)",
					 w->file, w->line, w->prefix, shown(obj->items[i].key, obj->items[i].key_len));
	}
}

/* --------------------------------------------------------------- blocks */

typedef struct Block
{
	LcBlockHeader h;
	uint8_t		block_hash[LC_HASH_LEN];
	uint8_t		signature[LC_SIG_LEN];
	char		sealed_at[LC_ISO_LEN + 1];
} Block;

static const char *const block_fields[] = {
	"height", "prev_hash", "history_root", "root", "leaves_hash", "first_seq", "last_seq",
	"row_count", "sealed_at", "public_key", "block_hash", "signature", NULL
};

/* A block object (docs/format.md §11) of the chain of origin. */
static void
get_block(Ctx *c, const Where *outer, const JsonValue *parent, const char *key,
		  const char *origin, Block *b)
{
	const JsonValue *obj = field(c, outer, parent, key, JSON_OBJECT);
	char		prefix[64];
	Where		w = *outer;

	snprintf(prefix, sizeof(prefix), "%s%s.", outer->prefix, key);
	w.prefix = prefix;
	only_fields(c, &w, obj, block_fields);
	memset(b, 0, sizeof(*b));
	b->h.origin = origin;
	b->h.height = get_int(c, &w, obj, "height", 1, INT64_MAX);
	get_hex_fixed(c, &w, obj, "prev_hash", b->h.prev_hash, LC_HASH_LEN);
	get_hex_fixed(c, &w, obj, "history_root", b->h.history_root, LC_HASH_LEN);
	get_hex_fixed(c, &w, obj, "root", b->h.root, LC_HASH_LEN);
	get_hex_fixed(c, &w, obj, "leaves_hash", b->h.leaves_hash, LC_HASH_LEN);
	b->h.first_seq = get_int(c, &w, obj, "first_seq", 0, INT64_MAX);
	b->h.last_seq = get_int(c, &w, obj, "last_seq", 0, INT64_MAX);
	b->h.row_count = get_int(c, &w, obj, "row_count", 0, INT64_MAX);
	b->h.sealed_at_us = get_time(c, &w, obj, "sealed_at", b->sealed_at);
	get_hex_fixed(c, &w, obj, "public_key", b->h.public_key, LC_PUBKEY_LEN);
	get_hex_fixed(c, &w, obj, "block_hash", b->block_hash, LC_HASH_LEN);
	get_hex_fixed(c, &w, obj, "signature", b->signature, LC_SIG_LEN);
}

/* Why a block does not hash to its block_hash or its signature fails, or NULL. */
static const char *
block_problem(Ctx *c, const Block *b)
{
	bool		failed;
	const char *problem = lc_block_problem(&b->h, b->block_hash, b->signature, &failed);

	if (failed)
		core_failed(c, lc_error);
	return problem;
}

/* -------------------------------------------------------------- digests */

typedef struct Digest
{
	const char *file;
	const char *origin;
	size_t		origin_len;
	int64_t		height;
	uint8_t		block_hash[LC_HASH_LEN];
	int64_t		last_seq;
	int64_t		sealed_at_us;
	char		sealed_at[LC_ISO_LEN + 1];
	uint8_t		public_key[LC_PUBKEY_LEN];
	uint8_t		signature[LC_SIG_LEN];
	const JsonValue *certificate;	/* or NULL */
	char		note[1024];		/* what was and was not checked of it */
} Digest;

static const char *const digest_fields[] = {
	"format", "origin", "height", "block_hash", "last_seq", "sealed_at", "public_key",
	"signature", "certificate", NULL
};

static void
digest_from_json(Ctx *c, const char *file, const JsonValue *obj, Digest *d)
{
	Where		w = {file, "", ""};

	check_format(c, &w, obj, LC_DIGEST_FORMAT);
	only_fields(c, &w, obj, digest_fields);
	memset(d, 0, sizeof(*d));
	d->file = file;
	d->origin = get_origin(c, &w, obj, &d->origin_len);
	d->height = get_int(c, &w, obj, "height", 1, INT64_MAX);
	get_hex_fixed(c, &w, obj, "block_hash", d->block_hash, LC_HASH_LEN);
	d->last_seq = get_int(c, &w, obj, "last_seq", 0, INT64_MAX);
	d->sealed_at_us = get_time(c, &w, obj, "sealed_at", d->sealed_at);
	get_hex_fixed(c, &w, obj, "public_key", d->public_key, LC_PUBKEY_LEN);
	get_hex_fixed(c, &w, obj, "signature", d->signature, LC_SIG_LEN);
	d->certificate = json_get(obj, "certificate");
	if (d->certificate != NULL && d->certificate->type != JSON_OBJECT)
		unusable(c, "%s: field \"certificate\" must be an object, not %s", file,
				 json_type_name(d->certificate->type));
}

static void load_certificate(Ctx *c, const Where *w, const JsonValue *root, const char *origin,
							 size_t origin_len, int64_t *height, uint8_t *hash,
							 int64_t *valid, int64_t *quorum, const uint8_t **key);

/*
 * docs/format.md §9: the signature, and the key the auditor pinned; and a
 * certificate the digest carries (§18), which must be valid and of a block
 * of the digest's chain no higher than the digest's.
 */
static void
check_digest(Ctx *c, Digest *d)
{
	bool		failed;

	if (c->o->trusted_key != NULL &&
		memcmp(d->public_key, c->o->trusted_key, LC_PUBKEY_LEN) != 0)
		invalid(c, "%s: the digest carries public key %s, not the trusted key %s",
				d->file, hex_of(d->public_key, LC_PUBKEY_LEN),
				hex_of(c->o->trusted_key, LC_PUBKEY_LEN));
	if (!lc_digest_signature_ok(d->origin, d->height, d->block_hash, d->last_seq,
								d->sealed_at_us, d->public_key, d->signature, &failed))
	{
		if (failed)
			core_failed(c, lc_error);
		invalid(c, "%s: the digest's signature does not verify with its public_key %s",
				d->file, hex_of(d->public_key, LC_PUBKEY_LEN));
	}
	if (d->certificate != NULL)
	{
		Where		w = {d->file, "", "certificate."};
		int64_t		height;
		uint8_t		hash[LC_HASH_LEN];
		int64_t		valid;
		int64_t		quorum;
		const uint8_t *key;

		load_certificate(c, &w, d->certificate, d->origin, d->origin_len, &height, hash,
						 &valid, &quorum, &key);
		if (height > d->height)
			invalid(c, "%s: the certificate is of block %lld, above the digest's block %lld",
					d->file, (long long) height, (long long) d->height);
		if (height == d->height && memcmp(hash, d->block_hash, LC_HASH_LEN) != 0)
			invalid(c, "%s: the certificate is of another block %lld than the digest's",
					d->file, (long long) height);
		if (memcmp(key, d->public_key, LC_PUBKEY_LEN) != 0)
			invalid(c, "%s: the certificate's block is signed with key %s, not the digest's",
					d->file, hex_of(key, LC_PUBKEY_LEN));
		snprintf(d->note, sizeof(d->note),
				 "; its certificate shows block %lld final: %lld of quorum %lld acknowledgments verify%s",
				 (long long) height, (long long) valid, (long long) quorum,
				 c->o->members != NULL ? ", by pinned hospitals" :
				 height == d->height ?
				 " with the keys the certificate carries (not checked: that they are the hospitals'; pass --member NAME=HEX to pin them)" :
				 " with the keys the certificate carries (not checked: that they are the hospitals', pass --member NAME=HEX; nor that this block is in the digest's chain)");
		if (c->o->members != NULL && height < d->height)
			strncat(d->note, " (not checked: that this block is in the digest's chain)",
					sizeof(d->note) - strlen(d->note) - 1);
	}
	else
		snprintf(d->note, sizeof(d->note), "%s", "");
}

/* Reads a digest document and checks it. */
static void
load_digest(Ctx *c, const LcDoc *doc, Digest *d)
{
	JsonValue  *root;
	const char *file = shown_dup(c, doc->name, strlen(doc->name));

	if (doc->len > LC_DIGEST_LIMIT)
		unusable(c, "%s: larger than %zu bytes", file, LC_DIGEST_LIMIT);
	if (doc->len == 0)
		unusable(c, "%s: empty file", file);
	root = parse(c, file, "", doc->text, doc->len);
	digest_from_json(c, file, root, d);
}

/* How the output names the key that signed a digest. */
static const char *
key_note(Ctx *c, const Digest *d)
{
	static char note[1400];

	if (c->o->trusted_key != NULL)
		snprintf(note, sizeof(note), "signed by the trusted key %s%s",
				 hex_of(d->public_key, LC_PUBKEY_LEN), d->note);
	else
		snprintf(note, sizeof(note), "signed by key %s; pass --key to pin it%s",
				 hex_of(d->public_key, LC_PUBKEY_LEN), d->note);
	return note;
}

static bool
same_text(const char *a, size_t alen, const char *b, size_t blen)
{
	return alen == blen && memcmp(a, b, alen) == 0;
}

static const char *
digest_mismatch(const Digest *d, const Block *b)
{
	return lc_digest_block_mismatch(d->height, d->block_hash, d->last_seq, d->sealed_at_us,
									&b->h, b->block_hash);
}

void
lc_check_digest(const LcDoc *doc, const LcOptions *o, LcResult *r)
{
	Ctx		   *volatile c = ctx_new(r, o);
	Digest		d;

	if (c == NULL)
		return;
	if (setjmp(c->stop) == 0)
	{
		load_digest(c, doc, &d);
		check_digest(c, &d);
		r->status = LC_VALID;
		out(c, "valid: digest of %s at height %lld (block_hash %s, last_seq %lld, sealed_at %s) "
			"%s\n", shown(d.origin, d.origin_len), (long long) d.height,
			hex_of(d.block_hash, LC_HASH_LEN), (long long) d.last_seq, d.sealed_at,
			key_note(c, &d));
	}
	ctx_free(c);
}

void
lc_digest_read(const LcDoc *doc, LcDigest *out, LcResult *r)
{
	Ctx		   *volatile c = ctx_new(r, NULL);
	Digest		d;

	memset(out, 0, sizeof(*out));
	if (c == NULL)
		return;
	if (setjmp(c->stop) == 0)
	{
		load_digest(c, doc, &d);
		out->origin = malloc(d.origin_len + 1);
		if (out->origin == NULL)
			out_of_memory(c);
		memcpy(out->origin, d.origin, d.origin_len);
		out->origin[d.origin_len] = '\0';
		out->origin_len = d.origin_len;
		out->height = d.height;
		memcpy(out->block_hash, d.block_hash, LC_HASH_LEN);
		out->last_seq = d.last_seq;
		out->sealed_at_us = d.sealed_at_us;
		memcpy(out->public_key, d.public_key, LC_PUBKEY_LEN);
		memcpy(out->signature, d.signature, LC_SIG_LEN);
		out->has_certificate = d.certificate != NULL;
		r->status = LC_VALID;
	}
	ctx_free(c);
}

void
lc_digest_free(LcDigest *d)
{
	free(d->origin);
	d->origin = NULL;
}

/* --------------------------------------------------------------- leaves */

/* An encoding taken apart, or invalid: "file: line: what is not a canonical encoding". */
static LcEncoding *
take_apart(Ctx *c, const char *file, const char *line, const char *what, const uint8_t *enc,
		   size_t len)
{
	LcEncoding *e = cmalloc(c, sizeof(LcEncoding));
	char		err[256];
	int			rc;

	rc = lc_encoding_parse(enc, len, e, err, sizeof(err));
	if (rc == LC_ERR_NOMEM)
		out_of_memory(c);
	/* keep it either way: a parsed encoding owns its fields */
	c->res[c->nres - 1].release = release_encoding;
	if (rc != LC_OK)
		invalid(c, "%s: %s%s is not a canonical encoding: %s", file, line, what, err);
	return e;
}

/* The enrolment in an encoding, or invalid. */
static LcEnrolment *
read_enrolment(Ctx *c, const char *where, const LcEncoding *e)
{
	LcEnrolment *en = cmalloc(c, sizeof(LcEnrolment));
	char		err[256];
	int			rc;

	rc = lc_enrolment_parse(e, en, err, sizeof(err));
	c->res[c->nres - 1].release = release_enrolment;
	if (rc == LC_ERR_NOMEM)
		out_of_memory(c);
	if (rc != LC_OK)
		invalid(c, "%s is not an enrolment: %s", where, err);
	return en;
}

/* A row shown as sealed, one column a line: "  name (type): value". */
static void
show_row(Ctx *c, const LcEncoding *e, const LcColumnType *types, size_t ntypes)
{
	size_t		i;

	for (i = 0; i < e->nfields; i++)
	{
		const LcField *f = &e->fields[i];
		const LcColumnType *t = lc_column_find(types, ntypes, f->name, f->name_len);
		LcBuf	   *v = cbuf(c);

		lc_value_render(f->value, f->value_len, t, v);
		buf_ok(c, v);
		out(c, "  %s", shown(f->name, f->name_len));
		if (t != NULL)
			out(c, " (%s)", shown(t->type, t->type_len));
		out(c, ": %.*s\n", (int) v->len, (const char *) v->data);
	}
}

/*
 * Step 1 of docs/format.md §12 for a row or enrolment: the encoding is of
 * this table and ledger_seq, and a row version.
 */
static void
check_header(Ctx *c, const char *file, const char *what, const uint8_t *enc, size_t len,
			 int64_t table_id, int64_t seq)
{
	const char *problem = lc_encoding_header_problem(enc, len, false, (uint32_t) table_id, seq);

	if (problem == NULL)
		return;
	if (strcmp(problem, "table_id") == 0)
		invalid(c, "%s: the %sencoding is of table_id %u, not %lld", file, what,
				lc_get_u32(enc + 2), (long long) table_id);
	if (strcmp(problem, "ledger_seq") == 0)
		invalid(c, "%s: the %sencoding is of ledger_seq %llu, not %lld", file, what,
				(unsigned long long) lc_get_u64(enc + 6), (long long) seq);
	invalid(c, "%s: the %sencoding is not a row encoding (version 1 or 2 with its salt, kind 1)",
			file, what);
}

/*
 * Steps 2, 3 and 5 of docs/format.md §12: leaf is at leaf_index of block's
 * tree, block is sound, and block is head or in head's history through
 * history_path.  what names the leaf in messages: "" (the row),
 * "enrolment " or "erasure ".
 */
static void
check_leaf_inclusion(Ctx *c, const char *file, const char *what, int64_t seq,
					 const uint8_t *leaf, const Block *block, int64_t leaf_index,
					 const uint8_t *leaf_path, int leaf_path_len, const Block *head,
					 const uint8_t *history_path, int history_path_len)
{
	const char *problem;

	if (seq < block->h.first_seq || seq > block->h.last_seq)
		invalid(c, "%s: %sledger_seq %lld is outside block %lld's range %lld-%lld", file, what,
				(long long) seq, (long long) block->h.height, (long long) block->h.first_seq,
				(long long) block->h.last_seq);
	if (!lc_verify_inclusion(leaf, (uint64_t) leaf_index, (uint64_t) block->h.row_count,
							 leaf_path, leaf_path_len, block->h.root))
		invalid(c, "%s: the %sleaf at leaf_index %lld with leaf_path does not give the "
				"root of block %lld (%lld rows): the %s or the path was changed",
				file, what, (long long) leaf_index, (long long) block->h.height,
				(long long) block->h.row_count,
				!*what ? "row" : *what == 'e' && what[1] == 'n' ? "enrolment" : "erasure record");
	if ((problem = block_problem(c, block)) != NULL)
		invalid(c, "%s: %sblock %lld: %s", file, what, (long long) block->h.height, problem);
	if (block->h.height == head->h.height)
	{
		if (memcmp(block->block_hash, head->block_hash, LC_HASH_LEN) != 0)
			invalid(c, "%s: %sblock and head both have height %lld but differ", file, what,
					(long long) block->h.height);
		if (history_path_len != 0)
			invalid(c, "%s: %shistory_path must be empty when block is head", file, what);
	}
	else if (block->h.height > head->h.height)
		invalid(c, "%s: %sblock %lld is newer than head %lld", file, what,
				(long long) block->h.height, (long long) head->h.height);
	else if (!lc_verify_inclusion(block->block_hash, (uint64_t) (block->h.height - 1),
								  (uint64_t) (head->h.height - 1), history_path,
								  history_path_len, head->h.history_root))
		invalid(c, "%s: %shistory_path does not lead from block %lld to the history_root of "
				"head %lld", file, what, (long long) block->h.height,
				(long long) head->h.height);
}

/* The same for the leaf of an encoding. */
static void
check_inclusion(Ctx *c, const char *file, const char *what, int64_t seq,
				const uint8_t *enc, size_t enc_len, const Block *block, int64_t leaf_index,
				const uint8_t *leaf_path, int leaf_path_len, const Block *head,
				const uint8_t *history_path, int history_path_len)
{
	uint8_t		leaf[LC_HASH_LEN];

	need(c, lc_leaf_hash(enc, enc_len, leaf));
	check_leaf_inclusion(c, file, what, seq, leaf, block, leaf_index, leaf_path, leaf_path_len,
						 head, history_path, history_path_len);
}

/*
 * An erasure record (docs/format.md §12, §14): a record of the erasures'
 * table that names this table, ledger_seq and leaf, erased no earlier
 * than the row was sealed (sealed_at_us, of the block that sealed it).
 */
static LcErasure *
check_erasure(Ctx *c, const char *where, const uint8_t *enc, size_t len, int64_t table_id,
			  int64_t seq, const uint8_t *leaf, int64_t sealed_at_us)
{
	LcEncoding *x = take_apart(c, where, "", "the erasure record", enc, len);
	LcErasure  *er = cmalloc(c, sizeof(LcErasure));
	char		err[256];
	char		at[LC_ISO_LEN + 1];
	char		sealed[LC_ISO_LEN + 1];

	if (lc_erasure_parse(x, er, err, sizeof(err)) != LC_OK)
		invalid(c, "%s: the erasure record cannot be read: %s", where, err);
	if (er->table_id != (uint32_t) table_id || er->erased_seq != seq)
		invalid(c, "%s: the erasure record names ledger_seq %lld of table_id %u, not %lld of %lld",
				where, (long long) er->erased_seq, er->table_id, (long long) seq,
				(long long) table_id);
	if (memcmp(er->leaf_hash, leaf, LC_HASH_LEN) != 0)
		invalid(c, "%s: the erasure record names leaf %s, not the leaf sealed at ledger_seq %lld",
				where, hex_of(er->leaf_hash, LC_HASH_LEN), (long long) seq);
	if (er->erased_at_us < sealed_at_us)
	{
		lc_format_iso_utc(er->erased_at_us, at);
		lc_format_iso_utc(sealed_at_us, sealed);
		invalid(c, "%s: the erasure record says the row was erased at %s, before it was sealed "
				"(%s): it was backdated", where, at, sealed);
	}
	return er;
}

/* ---------------------------------------------------------------- proofs */

static const char *const proof_fields[] = {
	"format", "origin", "table", "table_id", "ledger_seq", "row", "encoding", "leaf", "erasure",
	"block", "leaf_index", "leaf_path", "head", "history_path", "enrolment", NULL
};

static const char *const enrolment_fields[] = {
	"ledger_seq", "encoding", "block", "leaf_index", "leaf_path", "history_path", NULL
};

/* An erased row's proof: its erasure record, with the record's own inclusion. */
typedef struct ErasureInclusion
{
	int64_t		seq;
	uint8_t    *encoding;
	size_t		len;
	Block		block;
	int64_t		index;
	uint8_t    *path;
	int			path_len;
	uint8_t    *history;
	int			history_len;
} ErasureInclusion;

/* Reads an "enrolment" or "erasure" member: a sealed encoding and its inclusion. */
static void
get_inclusion(Ctx *c, const Where *w, const JsonValue *obj, const char *origin,
			  ErasureInclusion *in)
{
	only_fields(c, w, obj, enrolment_fields);
	in->seq = get_int(c, w, obj, "ledger_seq", 1, INT64_MAX);
	in->encoding = get_hex_bytes(c, w, obj, "encoding", &in->len);
	get_block(c, w, obj, "block", origin, &in->block);
	in->index = get_int(c, w, obj, "leaf_index", 0, INT64_MAX);
	in->path = cmalloc(c, LC_MAX_PATH * LC_HASH_LEN);
	in->history = cmalloc(c, LC_MAX_PATH * LC_HASH_LEN);
	in->path_len = get_path(c, w, obj, "leaf_path", in->path);
	in->history_len = get_path(c, w, obj, "history_path", in->history);
}

/*
 * docs/format.md §12, steps 1-7; for an erased row, step 1 and 7 give way
 * to step 8: the erasure record names the leaf, and is in the chain too.
 */
static void
check_proof(Ctx *c, const LcDoc *doc, const LcDoc *digest_doc)
{
	const char *file = shown_dup(c, doc->name, strlen(doc->name));
	Where		w = {file, "", ""};
	Where		ew = {file, "", "enrolment."};
	Where		xw = {file, "", "erasure."};
	JsonValue  *root;
	const char *origin;
	size_t		origin_len;
	const char *table;
	size_t		table_len;
	int64_t		table_id;
	int64_t		seq;
	uint8_t    *encoding = NULL;
	size_t		enc_len = 0;
	uint8_t		leaf[LC_HASH_LEN];
	Block		block;
	Block		head;
	int64_t		leaf_index;
	uint8_t    *leaf_path = cmalloc(c, LC_MAX_PATH * LC_HASH_LEN);
	uint8_t    *history_path = cmalloc(c, LC_MAX_PATH * LC_HASH_LEN);
	int			leaf_path_len;
	int			history_path_len;
	const JsonValue *row = NULL;
	const JsonValue *ej;
	const JsonValue *xj;
	ErasureInclusion en;
	ErasureInclusion ex;
	Digest		d;
	const char *problem;
	LcEncoding *e = NULL;
	LcEncoding *ee;
	LcEnrolment *enr;
	LcErasure  *er = NULL;
	char		why[1024];
	int			rc;

	if (doc->len > LC_DOC_LIMIT)
		unusable(c, "%s: larger than %zu bytes", file, LC_DOC_LIMIT);
	root = parse(c, file, "", doc->text, doc->len);
	check_format(c, &w, root, LC_PROOF_FORMAT);
	only_fields(c, &w, root, proof_fields);
	origin = get_origin(c, &w, root, &origin_len);
	table = get_string(c, &w, root, "table", MAX_ORIGIN, &table_len);
	table_id = get_int(c, &w, root, "table_id", 0, UINT32_MAX);
	seq = get_int(c, &w, root, "ledger_seq", 1, INT64_MAX);
	xj = json_get(root, "erasure");
	if (xj == NULL)
	{
		if (json_get(root, "leaf") != NULL)
			unusable(c, "%s: field \"leaf\" belongs to the proof of an erased row, with "
					 "\"erasure\"", file);
		row = field(c, &w, root, "row", JSON_OBJECT);
		encoding = get_hex_bytes(c, &w, root, "encoding", &enc_len);
	}
	else
	{
		if (json_get(root, "row") != NULL || json_get(root, "encoding") != NULL)
			unusable(c, "%s: the proof of an erased row has \"leaf\" and \"erasure\", not "
					 "\"row\" or \"encoding\"", file);
		get_hex_fixed(c, &w, root, "leaf", leaf, LC_HASH_LEN);
		if (xj->type != JSON_OBJECT)
			unusable(c, "%s: field \"erasure\" must be an object, not %s", file,
					 json_type_name(xj->type));
		get_inclusion(c, &xw, xj, origin, &ex);
	}
	get_block(c, &w, root, "block", origin, &block);
	leaf_index = get_int(c, &w, root, "leaf_index", 0, INT64_MAX);
	leaf_path_len = get_path(c, &w, root, "leaf_path", leaf_path);
	get_block(c, &w, root, "head", origin, &head);
	history_path_len = get_path(c, &w, root, "history_path", history_path);
	ej = json_get(root, "enrolment");
	if (ej == NULL)
		unusable(c, "%s: field \"enrolment\" is missing (proofs made before ehrledger 0.4 "
				 "lack it: take the proof again)", file);
	if (ej->type != JSON_OBJECT)
		unusable(c, "%s: field \"enrolment\" must be an object, not %s", file,
				 json_type_name(ej->type));
	get_inclusion(c, &ew, ej, origin, &en);
	load_digest(c, digest_doc, &d);

	/* The digest is the trust anchor: check it first. */
	check_digest(c, &d);

	/* 1-3, 5: the row is sealed in block, which is head or in its history. */
	if (encoding != NULL)
	{
		check_header(c, file, "", encoding, enc_len, table_id, seq);
		need(c, lc_leaf_hash(encoding, enc_len, leaf));
	}
	if ((problem = block_problem(c, &head)) != NULL)
		invalid(c, "%s: head block %lld: %s", file, (long long) head.h.height, problem);
	check_leaf_inclusion(c, file, "", seq, leaf, &block, leaf_index, leaf_path, leaf_path_len,
						 &head, history_path, history_path_len);

	/* 4. The digest names head, of this origin. */
	if (!same_text(d.origin, d.origin_len, origin, origin_len))
		invalid(c, "the digest is of origin %s, the proof of %s",
				shown(d.origin, d.origin_len), shown(origin, origin_len));
	if ((problem = digest_mismatch(&d, &head)) != NULL)
		invalid(c, "the proof's head (height %lld) is not the block the digest names "
				"(height %lld): %s differs", (long long) head.h.height,
				(long long) d.height, problem);

	/* 6. The table's enrolment is sealed in the chain too, and binds table to table_id. */
	check_header(c, file, "enrolment ", en.encoding, en.len, LC_ENROLMENT_TABLE_ID, en.seq);
	check_inclusion(c, file, "enrolment ", en.seq, en.encoding, en.len, &en.block, en.index,
					en.path, en.path_len, &head, en.history, en.history_len);
	snprintf(why, sizeof(why), "%s: the enrolment", file);
	ee = take_apart(c, file, "", "the enrolment", en.encoding, en.len);
	enr = read_enrolment(c, why, ee);
	if (enr->table_id != (uint32_t) table_id)
		invalid(c, "%s: the enrolment is of table_id %u, not %lld", file, enr->table_id,
				(long long) table_id);
	if (!same_text(enr->name, enr->name_len, table, table_len))
		invalid(c, "%s: the proof names table %s, but table_id %lld is enrolled as %s",
				file, shown(table, table_len), (long long) table_id,
				shown(enr->name, enr->name_len));

	if (encoding != NULL)
	{
		/* 7. "row" shows exactly what the encoding holds. */
		e = take_apart(c, file, "", "the encoding", encoding, enc_len);
		rc = lc_row_check(e, enr->types, enr->ntypes, row, why, sizeof(why));
		if (rc == LC_ERR_NOMEM)
			out_of_memory(c);
		if (rc != LC_SAME)
			invalid(c, "%s: \"row\" is not the sealed row: %s", file, why);
	}
	else
	{
		/* 8. An erased row: a record in the chain names this leaf. */
		check_header(c, file, "erasure ", ex.encoding, ex.len, LC_ERASURE_TABLE_ID, ex.seq);
		check_inclusion(c, file, "erasure ", ex.seq, ex.encoding, ex.len, &ex.block, ex.index,
						ex.path, ex.path_len, &head, ex.history, ex.history_len);
		snprintf(why, sizeof(why), "%s: erasure", file);
		er = check_erasure(c, why, ex.encoding, ex.len, table_id, seq, leaf, block.h.sealed_at_us);
	}

	c->r->status = LC_VALID;
	if (er != NULL)
		out(c, "valid: row %lld of %s (table_id %lld) was sealed in block %lld and erased: its "
			"leaf %s and the erasure record that names it (ledger_seq %lld, block %lld) are "
			"included in the state of %s at height %lld (digest %s)\n", (long long) seq,
			shown(table, table_len), (long long) table_id, (long long) block.h.height,
			hex_of(leaf, LC_HASH_LEN), (long long) ex.seq, (long long) ex.block.h.height,
			shown(origin, origin_len), (long long) head.h.height, key_note(c, &d));
	else
		out(c, "valid: row %lld of %s (table_id %lld) is in block %lld, included in the state "
			"of %s at height %lld (digest %s)\n", (long long) seq, shown(table, table_len),
			(long long) table_id, (long long) block.h.height, shown(origin, origin_len),
			(long long) head.h.height, key_note(c, &d));
	out(c, "table_id %lld is %s by its enrolment (ledger_seq %lld, block %lld)\n",
		(long long) table_id, shown(enr->name, enr->name_len), (long long) en.seq,
		(long long) en.block.h.height);
	if (er != NULL)
	{
		char		at[LC_ISO_LEN + 1];

		lc_format_iso_utc(er->erased_at_us, at);
		out(c, "erased at %s by %s, approved by %s%s, because: %s\n", at,
			shown(er->erased_by, er->erased_by_len), shown(er->approved_by, er->approved_by_len),
			er->signed_approval ? " (signed)" : "", shown(er->reason, er->reason_len));
		return;
	}
	out(c, "the row as sealed (\"row\" shows the same):\n");
	show_row(c, e, enr->types, enr->ntypes);
}

void
lc_check_proof(const LcDoc *proof, const LcDoc *digest, const LcOptions *o, LcResult *r)
{
	Ctx		   *volatile c = ctx_new(r, o);

	if (c == NULL)
		return;
	if (setjmp(c->stop) == 0)
		check_proof(c, proof, digest);
	ctx_free(c);
}

/* ---------------------------------------------------------- consistency */

static const char *const consistency_fields[] = {
	"format", "origin", "old", "new", "history_path", "consistency_path", NULL
};

/* docs/format.md §13. */
static void
check_consistency(Ctx *c, const LcDoc *doc, const LcDoc *old_doc, const LcDoc *new_doc)
{
	const char *file = shown_dup(c, doc->name, strlen(doc->name));
	Where		w = {file, "", ""};
	JsonValue  *root;
	const char *origin;
	size_t		origin_len;
	Block		old_block;
	Block		new_block;
	uint8_t    *history_path = cmalloc(c, LC_MAX_PATH * LC_HASH_LEN);
	uint8_t    *consistency_path = cmalloc(c, LC_MAX_PATH * LC_HASH_LEN);
	int			history_len;
	int			consistency_len;
	Digest		od;
	Digest		nd;
	const char *problem;
	char		keys[512];

	if (doc->len > LC_DOC_LIMIT)
		unusable(c, "%s: larger than %zu bytes", file, LC_DOC_LIMIT);
	root = parse(c, file, "", doc->text, doc->len);
	check_format(c, &w, root, LC_CONSISTENCY_FORMAT);
	only_fields(c, &w, root, consistency_fields);
	origin = get_origin(c, &w, root, &origin_len);
	get_block(c, &w, root, "old", origin, &old_block);
	get_block(c, &w, root, "new", origin, &new_block);
	history_len = get_path(c, &w, root, "history_path", history_path);
	consistency_len = get_path(c, &w, root, "consistency_path", consistency_path);
	load_digest(c, old_doc, &od);
	load_digest(c, new_doc, &nd);

	check_digest(c, &od);
	check_digest(c, &nd);
	if (!same_text(od.origin, od.origin_len, nd.origin, nd.origin_len))
		invalid(c, "the digests are of different origins, %s and %s",
				shown(od.origin, od.origin_len), shown(nd.origin, nd.origin_len));
	if (!same_text(od.origin, od.origin_len, origin, origin_len))
		invalid(c, "the digests are of origin %s, the proof of %s",
				shown(od.origin, od.origin_len), shown(origin, origin_len));

	if ((problem = block_problem(c, &old_block)) != NULL)
		invalid(c, "%s: old block %lld: %s", file, (long long) old_block.h.height, problem);
	if ((problem = block_problem(c, &new_block)) != NULL)
		invalid(c, "%s: new block %lld: %s", file, (long long) new_block.h.height, problem);
	if ((problem = digest_mismatch(&od, &old_block)) != NULL)
		invalid(c, "the proof's old block (height %lld) is not the block the old digest names "
				"(height %lld): %s differs", (long long) old_block.h.height,
				(long long) od.height, problem);
	if ((problem = digest_mismatch(&nd, &new_block)) != NULL)
		invalid(c, "the proof's new block (height %lld) is not the block the new digest names "
				"(height %lld): %s differs", (long long) new_block.h.height,
				(long long) nd.height, problem);

	if (c->o->trusted_key != NULL)
		snprintf(keys, sizeof(keys), "both digests signed by the trusted key %s",
				 hex_of(od.public_key, LC_PUBKEY_LEN));
	else if (memcmp(od.public_key, nd.public_key, LC_PUBKEY_LEN) == 0)
		snprintf(keys, sizeof(keys), "both digests signed by key %s; pass --key to pin it",
				 hex_of(od.public_key, LC_PUBKEY_LEN));
	else
		snprintf(keys, sizeof(keys), "old digest signed by key %s, new by key %s; "
				 "pass --key to pin them", hex_of(od.public_key, LC_PUBKEY_LEN),
				 hex_of(nd.public_key, LC_PUBKEY_LEN));

	if (old_block.h.height == new_block.h.height)
	{
		if (memcmp(old_block.block_hash, new_block.block_hash, LC_HASH_LEN) != 0)
			invalid(c, "the two digests name different blocks at the same height %lld: "
					"the chain was rewritten", (long long) old_block.h.height);
		if (history_len != 0 || consistency_len != 0)
			invalid(c, "%s: the paths must be empty when the heights are equal", file);
		c->r->status = LC_VALID;
		out(c, "valid: both digests name the same block %lld of %s (%s)%s%s\n",
			(long long) old_block.h.height, shown(origin, origin_len), keys, od.note, nd.note);
		return;
	}
	if (old_block.h.height > new_block.h.height)
		invalid(c, "the old digest (height %lld) is newer than the new one (height %lld)",
				(long long) old_block.h.height, (long long) new_block.h.height);
	if (!lc_verify_inclusion(old_block.block_hash, (uint64_t) (old_block.h.height - 1),
							 (uint64_t) (new_block.h.height - 1), history_path, history_len,
							 new_block.h.history_root))
		invalid(c, "%s: history_path does not lead from block %lld to the history_root of "
				"block %lld", file, (long long) old_block.h.height,
				(long long) new_block.h.height);
	if (!lc_verify_consistency((uint64_t) (old_block.h.height - 1),
							   (uint64_t) (new_block.h.height - 1),
							   old_block.h.history_root, new_block.h.history_root,
							   consistency_path, consistency_len))
		invalid(c, "%s: consistency_path does not show that the history of block %lld "
				"extends that of block %lld", file, (long long) new_block.h.height,
				(long long) old_block.h.height);

	c->r->status = LC_VALID;
	out(c, "valid: the chain of %s at height %lld extends its chain at height %lld "
		"unchanged (%s)%s%s\n", shown(origin, origin_len), (long long) new_block.h.height,
		(long long) old_block.h.height, keys, od.note, nd.note);
}

void
lc_check_consistency(const LcDoc *proof, const LcDoc *old_digest, const LcDoc *new_digest,
					 const LcOptions *o, LcResult *r)
{
	Ctx		   *volatile c = ctx_new(r, o);

	if (c == NULL)
		return;
	if (setjmp(c->stop) == 0)
		check_consistency(c, proof, old_digest, new_digest);
	ctx_free(c);
}

/* --------------------------------------------------------- certificates */

static const char *const certificate_fields[] = {
	"format", "origin", "height", "block_hash", "header", "origin_signature", "quorum", "acks",
	"membership", NULL
};
static const char *const ack_fields[] = {"acker", "public_key", "signature", NULL};

/*
 * Reads a certificate and applies the certificate rule (docs/format.md
 * §18) to it, with the pinned members if any: returns its height, block
 * hash, valid acknowledgments, quorum and the key that signed its header;
 * invalid or unusable otherwise.  origin, when not NULL, is the origin it
 * must be of.
 */
static void
load_certificate(Ctx *c, const Where *w, const JsonValue *root, const char *origin,
				 size_t origin_len, int64_t *height, uint8_t *hash, int64_t *valid,
				 int64_t *quorum, const uint8_t **key)
{
	const char *c_origin;
	size_t		c_origin_len;
	uint8_t    *header;
	size_t		header_len;
	uint8_t		origin_sig[LC_SIG_LEN];
	const JsonValue *acks;
	LcAck	   *list;
	LcKeyPin   *pins = NULL;
	size_t		i;
	char		problem[512];
	int			rc;
	const char *h_origin;
	size_t		h_origin_len;
	int64_t		h_height;

	check_format(c, w, root, LC_CERTIFICATE_FORMAT);
	only_fields(c, w, root, certificate_fields);
	c_origin = get_origin(c, w, root, &c_origin_len);
	*height = get_int(c, w, root, "height", 1, INT64_MAX);
	get_hex_fixed(c, w, root, "block_hash", hash, LC_HASH_LEN);
	header = get_hex_bytes(c, w, root, "header", &header_len);
	get_hex_fixed(c, w, root, "origin_signature", origin_sig, LC_SIG_LEN);
	*quorum = get_int(c, w, root, "quorum", 1, LC_MAX_MEMBERS);
	acks = field(c, w, root, "acks", JSON_ARRAY);
	if (acks->count > LC_MAX_MEMBERS)
		unusable(c, "%s: %sfield \"%sacks\" has more than %d acknowledgments", w->file, w->line,
				 w->prefix, LC_MAX_MEMBERS);
	list = cmalloc(c, sizeof(LcAck) * (acks->count ? acks->count : 1));
	for (i = 0; i < acks->count; i++)
	{
		char		prefix[64];
		Where		aw = *w;

		snprintf(prefix, sizeof(prefix), "%sacks[%zu].", w->prefix, i);
		aw.prefix = prefix;
		if (acks->items[i].type != JSON_OBJECT)
			unusable(c, "%s: %s%sacks[%zu] must be an object", w->file, w->line, w->prefix, i);
		only_fields(c, &aw, &acks->items[i], ack_fields);
		list[i].acker = get_string(c, &aw, &acks->items[i], "acker", MAX_ORIGIN, &list[i].acker_len);
		get_hex_fixed(c, &aw, &acks->items[i], "public_key", list[i].public_key, LC_PUBKEY_LEN);
		get_hex_fixed(c, &aw, &acks->items[i], "signature", list[i].signature, LC_SIG_LEN);
	}
	if (origin != NULL && !same_text(c_origin, c_origin_len, origin, origin_len))
		invalid(c, "%s: %sthe certificate is of origin %s, not %s", w->file, w->line,
				shown(c_origin, c_origin_len), shown(origin, origin_len));
	if (c->o->members != NULL)
	{
		pins = cmalloc(c, sizeof(LcKeyPin) * (c->o->nmembers ? c->o->nmembers : 1));
		for (i = 0; i < c->o->nmembers; i++)
		{
			pins[i].name = c->o->members[i].name;
			pins[i].name_len = strlen(c->o->members[i].name);
			pins[i].key = c->o->members[i].key;
		}
	}
	rc = lc_certificate_rule(c_origin, c_origin_len, *height, hash, header, header_len,
							 origin_sig, *quorum, list, acks->count, pins, c->o->nmembers,
							 pins != NULL && !c->o->own_quorum ?
							 lc_quorum_of((int64_t) c->o->nmembers) : 1,
							 valid, problem, sizeof(problem));
	if (rc < 0)
		core_failed(c, rc);
	if (rc != LC_OK)
		invalid(c, "%s: %s%s%s", w->file, w->line,
				*w->prefix ? "the certificate: " : "", problem);
	(void) lc_header_fields(header, header_len, &h_origin, &h_origin_len, &h_height, key);
}

static void
check_certificate(Ctx *c, const LcDoc *doc)
{
	const char *file = shown_dup(c, doc->name, strlen(doc->name));
	Where		w = {file, "", ""};
	JsonValue  *root;
	int64_t		height;
	uint8_t		hash[LC_HASH_LEN];
	int64_t		valid;
	int64_t		quorum;
	const uint8_t *key;
	size_t		origin_len;
	const char *origin;

	if (doc->len > LC_DOC_LIMIT)
		unusable(c, "%s: larger than %zu bytes", file, LC_DOC_LIMIT);
	root = parse(c, file, "", doc->text, doc->len);
	load_certificate(c, &w, root, NULL, 0, &height, hash, &valid, &quorum, &key);
	origin = get_origin(c, &w, root, &origin_len);
	c->r->status = LC_VALID;
	out(c, "valid: block %lld of %s (block_hash %s) is final: %lld of quorum %lld "
		"acknowledgments verify%s\n", (long long) height, shown(origin, origin_len),
		hex_of(hash, LC_HASH_LEN), (long long) valid, (long long) quorum,
		c->o->members != NULL ? ", by pinned hospitals" :
		"; keys are those the certificate carries, pass --member NAME=HEX to pin them");
}

void
lc_check_certificate(const LcDoc *certificate, const LcOptions *o, LcResult *r)
{
	Ctx		   *volatile c = ctx_new(r, o);

	if (c == NULL)
		return;
	if (setjmp(c->stop) == 0)
		check_certificate(c, certificate);
	ctx_free(c);
}

/* -------------------------------------------------------------- exports */

/* A leaf of the exported table (or an enrolment), waiting for its line. */
typedef struct TableLeaf
{
	int64_t		seq;
	int64_t		height;
	uint8_t		hash[LC_HASH_LEN];
	uint32_t	table_id;
	bool		seen;
} TableLeaf;

/*
 * A partition of the partitioned table an export is of (docs/format.md
 * §14), as its header names it, and what its part of the export showed.
 */
typedef struct ExportPartition
{
	char	   *table;
	size_t		table_len;
	int64_t		table_id;
	int64_t		leaves_in_digest;	/* its leaves in the digest's blocks */
	bool		bound;			/* an enrolment binds its name */
	int64_t		enrolment_seq;	/* that enrolment's ledger_seq and block */
	int64_t		enrolment_height;
} ExportPartition;

typedef struct Leaves
{
	TableLeaf  *items;
	size_t		n;
	size_t		cap;
} Leaves;

/* An enrolment line, once matched with its leaf. */
typedef struct ExportEnrolment
{
	LcEncoding	e;
	LcEnrolment en;
	uint8_t    *bytes;			/* the encoding the above point into */
	int64_t		seq;
	int64_t		height;
} ExportEnrolment;

struct LcExport
{
	const char *file;
	char	   *origin;
	size_t		origin_len;
	char	   *table;			/* as the header names it */
	size_t		table_len;
	int64_t		table_id;
	Digest		digest;
	LcDoc		digest_doc;		/* the digest's text: digest points into it */
	const LcOptions *o;
	bool		done;			/* a verdict was reached */
	int64_t		lineno;
	int			stage;			/* 0 blocks, 1 enrolments, 2 rows */

	/* the chain so far */
	LcChain		chain;

	Leaves		leaves;			/* the table's, in ledger_seq order */
	Leaves		enrol_leaves;	/* the enrolments' */
	Leaves		erasure_leaves; /* the erasure records' */
	int64_t    *sealed_at;		/* sealed_at_us of block h at [h - 1] */
	size_t		cap_sealed;

	ExportEnrolment *enrolments;
	size_t		nenrolments;
	const ExportEnrolment *in_digest;	/* newest within the digest's blocks */
	const ExportEnrolment *newest;

	/* a chain that took over from an earlier one (docs/format.md §8) */
	bool		takeover;
	uint8_t		takeover_prev[LC_HASH_LEN];
	int64_t		takeover_first_seq;

	/*
	 * The export of a partitioned table: its partitions by the header, by
	 * table_id in by_id (indexes into partitions); each partition's part
	 * (current, its index + 1) sets table and table_id above to its own.
	 */
	bool		partitioned;
	char	   *parent;
	size_t		parent_len;
	ExportPartition *partitions;
	size_t		npartitions;
	size_t	   *by_id;
	size_t		current;

	/* row lines: row versions (kind 1) and end events (kind 2) */
	int64_t		last_row_seq;
	int64_t		rows_in_digest;
	int64_t		ends_in_digest;
	int64_t		rows_beyond;
	int64_t		erased_in_digest;	/* erased leaves among rows_in_digest and ends_in_digest */
	Ctx		   *line_ctx;		/* reused by every line */
};

/*
 * An array of items of size bytes with room for need of them: items
 * itself, or a larger copy (doubling), whose capacity goes to *cap.
 */
static void *
array_for(Ctx *c, void *items, size_t *cap, size_t need, size_t size)
{
	size_t		grown;
	void	   *p;

	if (need <= *cap)
		return items;
	grown = *cap ? *cap * 2 : 1024;
	if (grown < need)
		grown = need;
	if (grown > SIZE_MAX / size)
		out_of_memory(c);
	p = realloc(items, grown * size);
	if (p == NULL)
		out_of_memory(c);
	*cap = grown;
	return p;
}

static void
add_leaf(Ctx *c, Leaves *l, int64_t seq, int64_t height, const uint8_t *hash, uint32_t table_id)
{
	TableLeaf  *t;

	l->items = array_for(c, l->items, &l->cap, l->n + 1, sizeof(TableLeaf));
	t = &l->items[l->n++];
	t->seq = seq;
	t->height = height;
	memcpy(t->hash, hash, LC_HASH_LEN);
	t->table_id = table_id;
	t->seen = false;
}

/* The partition of this table_id, or NULL (by_id is sorted by table_id). */
static ExportPartition *
partition_of_id(LcExport *e, int64_t table_id)
{
	size_t		lo = 0;
	size_t		hi = e->npartitions;

	while (lo < hi)
	{
		size_t		mid = lo + (hi - lo) / 2;
		ExportPartition *p = &e->partitions[e->by_id[mid]];

		if (p->table_id == table_id)
			return p;
		if (p->table_id < table_id)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

static TableLeaf *
find_leaf(Leaves *l, int64_t seq)
{
	int64_t		at = lc_find_seq(l->items, l->n, sizeof(TableLeaf), seq);

	return at < 0 ? NULL : &l->items[at];
}

static const char *const block_line_fields[] = {"block", "leaves", NULL};
static const char *const enrolment_line_fields[] = {"ledger_seq", "encoding", NULL};
static const char *const row_line_fields[] = {"ledger_seq", "encoding", "row", "ended", NULL};
static const char *const erased_line_fields[] = {"ledger_seq", "erased", NULL};
static const char *const export_fields[] = {"format", "origin", "table", "table_id", NULL};
static const char *const partitioned_export_fields[] = {"format", "origin", "table", "partitions", NULL};
static const char *const partition_fields[] = {"table", "table_id", NULL};

/*
 * One block line: recompute the block from its leaves and the chain before
 * it (docs/format.md §8, §14), and keep the leaves of the exported table
 * and of the enrolments.
 */
static void
export_block(Ctx *c, LcExport *e, const Where *w, const JsonValue *obj)
{
	Block		b;
	const JsonValue *lv;
	uint8_t    *packed;
	size_t		nbytes;
	size_t		n;
	size_t		i;
	const char *problem;
	int64_t		h;
	int64_t		bad_seq;
	int			links;
	int			leaves;

	only_fields(c, w, obj, block_line_fields);
	get_block(c, w, obj, "block", e->origin, &b);
	h = b.h.height;
	lv = json_get(obj, "leaves");
	if (lv == NULL)
		unusable(c, "%s: %sfield \"leaves\" is missing", w->file, w->line);
	if (lv->type == JSON_NULL)
		invalid(c, "%s: %sblock %lld has no leaves to check", w->file, w->line, (long long) h);
	packed = get_hex_bytes(c, w, obj, "leaves", &nbytes);
	if (nbytes % LC_LEAF_SIZE != 0)
		unusable(c, "%s: %sfield \"leaves\" is not a whole number of %d-byte leaves", w->file,
				 w->line, LC_LEAF_SIZE);
	n = nbytes / LC_LEAF_SIZE;

	if (h - 1 != e->chain.height)
		invalid(c, "%s: %sblock %lld follows block %lld: the export lacks block %lld",
				w->file, w->line, (long long) h, (long long) e->chain.height,
				(long long) e->chain.height + 1);
	if (h == 1 && memcmp(b.h.prev_hash, e->chain.prev_hash, LC_HASH_LEN) != 0)
	{
		/*
		 * A chain that took over where another origin's ended, after a
		 * restore: its first block links to that chain's last block and
		 * goes on from its last_seq.  That chain is not in this export.
		 */
		e->takeover = true;
		memcpy(e->takeover_prev, b.h.prev_hash, LC_HASH_LEN);
		e->takeover_first_seq = b.h.first_seq;
		if (b.h.first_seq < 1)
			invalid(c, "%s: %sblock 1: first_seq is 0", w->file, w->line);
		memcpy(e->chain.prev_hash, b.h.prev_hash, LC_HASH_LEN);
		e->chain.prev_last_seq = b.h.first_seq - 1;
	}
	links = lc_chain_link_problems(&e->chain, &b.h);
	if (links & LC_LINK_FAILED)
		core_failed(c, lc_error);
	if (links & LC_LINK_PREV_HASH)
		invalid(c, "%s: %sblock %lld: prev_hash is not the hash of block %lld", w->file,
				w->line, (long long) h, (long long) h - 1);
	if (links & LC_LINK_HISTORY)
		invalid(c, "%s: %sblock %lld: history_root is not the root of the history of blocks "
				"1 to %lld", w->file, w->line, (long long) h, (long long) h - 1);
	if (links & (LC_LINK_RANGE | LC_LINK_EMPTY))
		invalid(c, "%s: %sblock %lld: covers ledger_seq %lld-%lld, but block %lld ended at %lld",
				w->file, w->line, (long long) h, (long long) b.h.first_seq,
				(long long) b.h.last_seq, (long long) h - 1, (long long) e->chain.prev_last_seq);
	leaves = lc_leaves_problems(&b.h, packed, nbytes, &bad_seq);
	if (leaves & LC_LEAVES_FAILED)
		core_failed(c, lc_error);
	if (leaves & LC_LEAVES_COUNT)
		invalid(c, "%s: %sblock %lld: row_count is %lld but it has %zu leaves", w->file,
				w->line, (long long) h, (long long) b.h.row_count, n);
	if (leaves & LC_LEAVES_ORDER)
		invalid(c, "%s: %sblock %lld: a leaf (ledger_seq %lld) is out of order or "
				"outside the block's range %lld-%lld", w->file, w->line, (long long) h,
				(long long) bad_seq, (long long) b.h.first_seq, (long long) b.h.last_seq);
	if (leaves & LC_LEAVES_ROOT)
		invalid(c, "%s: %sblock %lld: its leaves do not give its root", w->file, w->line,
				(long long) h);
	if (leaves & LC_LEAVES_HASH)
		invalid(c, "%s: %sblock %lld: its leaves, with their ledger_seq and table labels, "
				"do not give its leaves_hash", w->file, w->line, (long long) h);
	if ((problem = block_problem(c, &b)) != NULL)
		invalid(c, "%s: %sblock %lld: %s", w->file, w->line, (long long) h, problem);
	if (h == e->digest.height && (problem = digest_mismatch(&e->digest, &b)) != NULL)
		invalid(c, "%s: %sblock %lld is not the block the digest names: %s differs",
				w->file, w->line, (long long) h, problem);

	for (i = 0; i < n; i++)
	{
		uint32_t	t = lc_get_u32(packed + i * LC_LEAF_SIZE + 8);
		int64_t		seq = (int64_t) lc_get_u64(packed + i * LC_LEAF_SIZE);

		if (e->partitioned)
		{
			ExportPartition *p = partition_of_id(e, t);

			if (p != NULL)
			{
				add_leaf(c, &e->leaves, seq, h, packed + i * LC_LEAF_SIZE + 12, t);
				if (h <= e->digest.height)
					p->leaves_in_digest++;
			}
		}
		else if (t == (uint32_t) e->table_id)
			add_leaf(c, &e->leaves, seq, h, packed + i * LC_LEAF_SIZE + 12, t);
		if (t == LC_ENROLMENT_TABLE_ID)
			add_leaf(c, &e->enrol_leaves, seq, h, packed + i * LC_LEAF_SIZE + 12, t);
		if (t == LC_ERASURE_TABLE_ID)
			add_leaf(c, &e->erasure_leaves, seq, h, packed + i * LC_LEAF_SIZE + 12, t);
	}
	e->sealed_at = array_for(c, e->sealed_at, &e->cap_sealed, (size_t) h, sizeof(int64_t));
	e->sealed_at[h - 1] = b.h.sealed_at_us;
	need(c, lc_chain_append(&e->chain, &b.h, b.block_hash));
}

/* After the last block line: the chain must reach the digest's block. */
static void
export_blocks_done(Ctx *c, LcExport *e)
{
	if (e->chain.height < e->digest.height)
		invalid(c, "%s: the export's chain ends at block %lld; the digest names block %lld",
				e->file, (long long) e->chain.height, (long long) e->digest.height);
}

/* One enrolment line: an enrolment of this table, sealed in the chain. */
static void
export_enrolment(Ctx *c, LcExport *e, const Where *w, const JsonValue *obj)
{
	const JsonValue *ej = field(c, w, obj, "enrolment", JSON_OBJECT);
	Where		ew = *w;
	int64_t		seq;
	size_t		len;
	uint8_t    *enc;
	uint8_t		leaf[LC_HASH_LEN];
	TableLeaf  *l;
	ExportEnrolment *x;
	ExportEnrolment *grown;
	char		where[128];
	char		err[256];
	int			rc;

	ew.prefix = "enrolment.";
	if (obj->count != 1)
		unusable(c, "%s: %san enrolment line holds \"enrolment\" alone", w->file, w->line);
	only_fields(c, &ew, ej, enrolment_line_fields);
	seq = get_int(c, &ew, ej, "ledger_seq", 1, INT64_MAX);
	enc = get_hex_bytes(c, &ew, ej, "encoding", &len);
	snprintf(where, sizeof(where), "%s: %s", w->file, w->line);
	check_header(c, where, "enrolment ", enc, len, LC_ENROLMENT_TABLE_ID, seq);
	need(c, lc_leaf_hash(enc, len, leaf));
	l = find_leaf(&e->enrol_leaves, seq);
	if (l == NULL)
		invalid(c, "%s: %sno block has an enrolment leaf with ledger_seq %lld", w->file,
				w->line, (long long) seq);
	if (memcmp(l->hash, leaf, LC_HASH_LEN) != 0)
		invalid(c, "%s: %sthe enrolment %lld does not match its leaf in block %lld", w->file,
				w->line, (long long) seq, (long long) l->height);
	if (l->seen)
		invalid(c, "%s: %sthe enrolment %lld is repeated", w->file, w->line, (long long) seq);
	l->seen = true;

	grown = realloc(e->enrolments, (e->nenrolments + 1) * sizeof(ExportEnrolment));
	if (grown == NULL)
		out_of_memory(c);
	e->enrolments = grown;
	x = &e->enrolments[e->nenrolments];
	memset(x, 0, sizeof(*x));
	x->bytes = malloc(len ? len : 1);
	if (x->bytes == NULL)
		out_of_memory(c);
	memcpy(x->bytes, enc, len);
	e->nenrolments++;			/* owned by e from here on */
	x->seq = seq;
	x->height = l->height;
	rc = lc_encoding_parse(x->bytes, len, &x->e, err, sizeof(err));
	if (rc == LC_ERR_NOMEM)
		out_of_memory(c);
	if (rc != LC_OK)
		invalid(c, "%s: %sthe enrolment is not a canonical encoding: %s", w->file, w->line, err);
	rc = lc_enrolment_parse(&x->e, &x->en, err, sizeof(err));
	if (rc == LC_ERR_NOMEM)
		out_of_memory(c);
	if (rc != LC_OK)
		invalid(c, "%s: %sthe enrolment cannot be read: %s", w->file, w->line, err);
	if (x->en.table_id != (uint32_t) e->table_id)
		invalid(c, "%s: %sthe enrolment is of table_id %u, not %lld", w->file, w->line,
				x->en.table_id, (long long) e->table_id);
}

/*
 * Before the first row line: the table's name is bound by an enrolment
 * within the digest.  A partition none of whose rows the digest's blocks
 * hold (one created later) may have none there: then its newest
 * enrolment, if it has rows at all, binds its name.
 */
static void
export_enrolments_done(Ctx *c, LcExport *e)
{
	size_t		i;
	ExportPartition *p = e->partitioned ? &e->partitions[e->current - 1] : NULL;

	e->newest = e->in_digest = NULL;
	for (i = 0; i < e->nenrolments; i++)
	{
		ExportEnrolment *x = &e->enrolments[i];

		if (e->newest == NULL || e->newest->seq < x->seq)
			e->newest = x;
		if (x->height <= e->digest.height && (e->in_digest == NULL || e->in_digest->seq < x->seq))
			e->in_digest = x;
	}
	if (e->in_digest == NULL && p != NULL && p->leaves_in_digest == 0)
	{
		if (e->newest == NULL)
			return;
		if (!same_text(e->newest->en.name, e->newest->en.name_len, e->table, e->table_len))
			invalid(c, "%s: the export names partition %s, but table_id %lld is enrolled as %s",
					e->file, shown(e->table, e->table_len), (long long) e->table_id,
					shown(e->newest->en.name, e->newest->en.name_len));
		p->bound = true;
		p->enrolment_seq = e->newest->seq;
		p->enrolment_height = e->newest->height;
		return;
	}
	if (e->in_digest == NULL)
		invalid(c, "%s: no enrolment of table_id %lld sealed in blocks 1-%lld is in the export: "
				"nothing binds the name %s to it", e->file, (long long) e->table_id,
				(long long) e->digest.height, shown(e->table, e->table_len));
	if (p != NULL)
	{
		p->bound = true;
		p->enrolment_seq = e->in_digest->seq;
		p->enrolment_height = e->in_digest->height;
	}
	for (i = 0; i < e->nenrolments; i++)
		if (same_text(e->enrolments[i].en.name, e->enrolments[i].en.name_len, e->table,
					  e->table_len) && e->enrolments[i].height <= e->digest.height)
			return;
	invalid(c, "%s: the export names table %s, but table_id %lld is enrolled as %s",
			e->file, shown(e->table, e->table_len), (long long) e->table_id,
			shown(e->in_digest->en.name, e->in_digest->en.name_len));
}

/* The enrolments read so far belong to the part of the export before. */
static void
forget_enrolments(LcExport *e)
{
	size_t		i;

	for (i = 0; i < e->nenrolments; i++)
	{
		lc_enrolment_free(&e->enrolments[i].en);
		lc_encoding_free(&e->enrolments[i].e);
		free(e->enrolments[i].bytes);
	}
	e->nenrolments = 0;
	e->newest = e->in_digest = NULL;
}

/*
 * A partition line: the part of a partitioned table's export that follows
 * is of the next partition the header names, which it must name the same.
 */
static void
export_partition(Ctx *c, LcExport *e, const Where *w, const JsonValue *obj)
{
	const JsonValue *pj = field(c, w, obj, "partition", JSON_OBJECT);
	Where		pw = *w;
	const char *table;
	size_t		table_len;
	int64_t		table_id;
	ExportPartition *p;

	pw.prefix = "partition.";
	if (obj->count != 1)
		unusable(c, "%s: %sa partition line holds \"partition\" alone", w->file, w->line);
	only_fields(c, &pw, pj, partition_fields);
	table = get_string(c, &pw, pj, "table", MAX_ORIGIN, &table_len);
	table_id = get_int(c, &pw, pj, "table_id", 0, UINT32_MAX);
	if (e->current == e->npartitions)
		unusable(c, "%s: %sa partition line beyond the %zu partitions the header names",
				 w->file, w->line, e->npartitions);
	p = &e->partitions[e->current++];
	if (p->table_id != table_id || !same_text(p->table, p->table_len, table, table_len))
		unusable(c, "%s: %sthe partition line names %s (table_id %lld), but the header's "
				 "partition %zu is %s (table_id %lld)", w->file, w->line,
				 shown(table, table_len), (long long) table_id, e->current,
				 shown(p->table, p->table_len), (long long) p->table_id);
	e->table = p->table;
	e->table_len = p->table_len;
	e->table_id = p->table_id;
	e->last_row_seq = 0;
	forget_enrolments(e);
}

/* The header's "partitions": names and distinct table_ids. */
static void
export_partitions(Ctx *c, LcExport *x, const Where *w, const JsonValue *h)
{
	const JsonValue *list = field(c, w, h, "partitions", JSON_ARRAY);
	size_t		i;

	x->partitioned = true;
	x->partitions = calloc(list->count ? list->count : 1, sizeof(ExportPartition));
	x->by_id = calloc(list->count ? list->count : 1, sizeof(size_t));
	if (x->partitions == NULL || x->by_id == NULL)
		out_of_memory(c);
	for (i = 0; i < list->count; i++)
	{
		const JsonValue *pj = &list->items[i];
		ExportPartition *p = &x->partitions[i];
		Where		pw = *w;
		char		prefix[64];
		const char *table;
		size_t		j;

		snprintf(prefix, sizeof(prefix), "partitions[%zu].", i);
		pw.prefix = prefix;
		if (pj->type != JSON_OBJECT)
			unusable(c, "%s: %selement %zu of \"partitions\" must be an object, not %s", w->file,
					 w->line, i, json_type_name(pj->type));
		only_fields(c, &pw, pj, partition_fields);
		table = get_string(c, &pw, pj, "table", MAX_ORIGIN, &p->table_len);
		p->table_id = get_int(c, &pw, pj, "table_id", 0, UINT32_MAX);
		p->table = malloc(p->table_len + 1);
		if (p->table == NULL)
			out_of_memory(c);
		memcpy(p->table, table, p->table_len + 1);
		x->npartitions++;		/* owned by x from here on */
		/* by table_id, kept sorted as they come */
		for (j = i; j > 0 && x->partitions[x->by_id[j - 1]].table_id >= p->table_id; j--)
		{
			if (x->partitions[x->by_id[j - 1]].table_id == p->table_id)
				unusable(c, "%s: %sthe header names table_id %lld twice", w->file, w->line,
						 (long long) p->table_id);
			x->by_id[j] = x->by_id[j - 1];
		}
		x->by_id[j] = i;
	}
}

/* The ledger_seq of a row line, which must follow the line before. */
static int64_t
row_line_seq(Ctx *c, LcExport *e, const Where *w, const JsonValue *obj)
{
	int64_t		seq = get_int(c, w, obj, "ledger_seq", 1, INT64_MAX);

	if (seq <= e->last_row_seq)
		invalid(c, "%s: %sthe row with ledger_seq %lld is out of order or repeated",
				w->file, w->line, (long long) seq);
	e->last_row_seq = seq;
	return seq;
}

/*
 * One erased line: in place of the row, the erasure record that names the
 * leaf sealed at its ledger_seq; the record is sealed in the chain too, and
 * not backdated before the digest (docs/format.md §14).
 */
static void
export_erased(Ctx *c, LcExport *e, const Where *w, const JsonValue *obj)
{
	const JsonValue *xj = field(c, w, obj, "erased", JSON_OBJECT);
	Where		xw = *w;
	int64_t		seq;
	int64_t		rseq;
	size_t		len;
	uint8_t    *enc;
	uint8_t		leaf[LC_HASH_LEN];
	TableLeaf  *l;
	TableLeaf  *r;
	LcErasure  *er;
	char		where[128];

	xw.prefix = "erased.";
	only_fields(c, w, obj, erased_line_fields);
	seq = row_line_seq(c, e, w, obj);
	only_fields(c, &xw, xj, enrolment_line_fields);
	rseq = get_int(c, &xw, xj, "ledger_seq", 1, INT64_MAX);
	enc = get_hex_bytes(c, &xw, xj, "encoding", &len);
	snprintf(where, sizeof(where), "%s: %s", w->file, w->line);
	check_header(c, where, "erasure ", enc, len, LC_ERASURE_TABLE_ID, rseq);
	need(c, lc_leaf_hash(enc, len, leaf));
	if ((r = find_leaf(&e->erasure_leaves, rseq)) == NULL)
		invalid(c, "%s: %sno block has an erasure record leaf with ledger_seq %lld", w->file,
				w->line, (long long) rseq);
	if (memcmp(r->hash, leaf, LC_HASH_LEN) != 0)
		invalid(c, "%s: %sthe erasure record %lld does not match its leaf in block %lld",
				w->file, w->line, (long long) rseq, (long long) r->height);
	if ((l = find_leaf(&e->leaves, seq)) == NULL || l->table_id != (uint32_t) e->table_id)
		invalid(c, "%s: %sno block has a leaf of table_id %lld with ledger_seq %lld: the row "
				"was not sealed in this table", w->file, w->line, (long long) e->table_id,
				(long long) seq);
	snprintf(where, sizeof(where), "%s: %serased row %lld", w->file, w->line, (long long) seq);
	er = check_erasure(c, where, enc, len, e->table_id, seq, l->hash, e->sealed_at[l->height - 1]);
	if (r->height > e->digest.height && er->erased_at_us < e->digest.sealed_at_us)
	{
		char		at[LC_ISO_LEN + 1];

		lc_format_iso_utc(er->erased_at_us, at);
		invalid(c, "%s: the erasure record (ledger_seq %lld, block %lld) says the row was "
				"erased at %s, before the digest's block %lld was sealed (%s), but it was "
				"sealed after that block: it was backdated", where, (long long) rseq,
				(long long) r->height, at, (long long) e->digest.height, e->digest.sealed_at);
	}
	l->seen = true;
	if (l->height > e->digest.height)
		e->rows_beyond++;
	else
		e->erased_in_digest++;
}

/* One row line: its leaf is the sealed leaf at its ledger_seq, and "row" is its content. */
static void
export_row(Ctx *c, LcExport *e, const Where *w, const JsonValue *obj)
{
	int64_t		seq;
	size_t		len;
	uint8_t    *enc;
	uint8_t		leaf[LC_HASH_LEN];
	TableLeaf  *l;
	LcEncoding *x;
	char		why[1024];
	int			rc;

	if (json_get(obj, "erased") != NULL)
	{
		export_erased(c, e, w, obj);
		return;
	}
	only_fields(c, w, obj, row_line_fields);
	seq = row_line_seq(c, e, w, obj);
	enc = get_hex_bytes(c, w, obj, "encoding", &len);
	/* A row version (kind 1) or, in a versioned table, an end event (kind 2). */
	if (lc_encoding_header_problem(enc, len, true, (uint32_t) e->table_id, seq) != NULL)
		invalid(c, "%s: %sthe encoding of row %lld does not start with version 1 or 2, kind 1 "
				"or 2, table_id %lld and ledger_seq %lld", w->file, w->line,
				(long long) seq, (long long) e->table_id, (long long) seq);
	need(c, lc_leaf_hash(enc, len, leaf));
	l = find_leaf(&e->leaves, seq);
	if (l == NULL || l->table_id != (uint32_t) e->table_id)
		invalid(c, "%s: %sno block has a leaf of table_id %lld with ledger_seq %lld: the row "
				"was not sealed in this table", w->file, w->line, (long long) e->table_id,
				(long long) seq);
	if (memcmp(l->hash, leaf, LC_HASH_LEN) != 0)
		invalid(c, "%s: %srow %lld does not match its leaf in block %lld: the row was changed",
				w->file, w->line, (long long) seq, (long long) l->height);
	l->seen = true;

	/* What the line shows people must be what the encoding holds. */
	x = take_apart(c, w->file, w->line, "the encoding", enc, len);
	if (x->kind == LC_KIND_ROW)
	{
		const ExportEnrolment *en = l->height <= e->digest.height ? e->in_digest : e->newest;

		if (en == NULL)
			invalid(c, "%s: %sno enrolment of table_id %lld in the export tells the columns of "
					"row %lld", w->file, w->line, (long long) e->table_id, (long long) seq);
		if (json_get(obj, "ended") != NULL)
			unusable(c, "%s: %sa row version has no \"ended\"", w->file, w->line);
		rc = lc_row_check(x, en->en.types, en->en.ntypes,
						  field(c, w, obj, "row", JSON_OBJECT), why, sizeof(why));
		if (rc == LC_ERR_NOMEM)
			out_of_memory(c);
		if (rc != LC_SAME)
			invalid(c, "%s: %s\"row\" of row %lld is not the sealed row: %s", w->file, w->line,
					(long long) seq, why);
	}
	else
	{
		if (json_get(obj, "row") != NULL)
			unusable(c, "%s: %sthe end of a version has no \"row\"", w->file, w->line);
		rc = lc_ended_check(x, field(c, w, obj, "ended", JSON_OBJECT), why, sizeof(why));
		if (rc != LC_SAME)
			invalid(c, "%s: %s\"ended\" of %lld is not the sealed end of a version: %s",
					w->file, w->line, (long long) seq, why);
	}
	if (l->height > e->digest.height)
		e->rows_beyond++;
	else if (x->kind == LC_KIND_ROW)
		e->rows_in_digest++;
	else
		e->ends_in_digest++;
}

/* "line N: ", written by hand: this is done for every line. */
static const char *
line_where(LcExport *e, char *buf, size_t len)
{
	char		digits[24];
	int			n = 0;
	int			i;
	int64_t		v = e->lineno;

	do
	{
		digits[n++] = (char) ('0' + v % 10);
		v /= 10;
	} while (v > 0 && n < (int) sizeof(digits));
	if (len < (size_t) n + 8)
		return "";
	memcpy(buf, "line ", 5);
	for (i = 0; i < n; i++)
		buf[5 + i] = digits[n - 1 - i];
	memcpy(buf + 5 + n, ": ", 3);
	return buf;
}

LcExport *
lc_export_begin(const char *name, LcDoc *header, const LcDoc *digest, const LcOptions *o,
				LcResult *r)
{
	Ctx		   *volatile c = ctx_new(r, o);
	LcExport   *volatile e = NULL;

	if (c == NULL)
		return NULL;
	if (setjmp(c->stop) == 0)
	{
		JsonValue  *h;
		Where		w;
		const char *origin;
		const char *table;
		LcExport   *x = calloc(1, sizeof(LcExport));

		if (x == NULL)
			out_of_memory(c);
		e = x;
		x->o = o;
		x->lineno = 1;
		lc_chain_init(&x->chain);
		x->file = strdup(shown_z(name));
		x->digest_doc.text = malloc(digest->len + 1);
		if (x->file == NULL || x->digest_doc.text == NULL)
			out_of_memory(c);
		x->digest_doc.name = strdup(shown_z(digest->name));
		if (x->digest_doc.name == NULL)
			out_of_memory(c);
		memcpy(x->digest_doc.text, digest->text, digest->len);
		x->digest_doc.len = digest->len;

		w.file = x->file;
		w.line = "line 1: ";
		w.prefix = "";
		h = parse(c, x->file, "line 1: ", header->text, header->len);
		check_format(c, &w, h, LC_EXPORT_FORMAT);
		only_fields(c, &w, h, json_get(h, "partitions") != NULL ? partitioned_export_fields
					: export_fields);
		origin = get_origin(c, &w, h, &x->origin_len);
		table = get_string(c, &w, h, "table", MAX_ORIGIN, &x->table_len);
		if (json_get(h, "partitions") != NULL)
			export_partitions(c, x, &w, h);
		else
			x->table_id = get_int(c, &w, h, "table_id", 0, UINT32_MAX);
		x->origin = malloc(x->origin_len + 1);
		x->table = malloc(x->table_len + 1);
		if (x->origin == NULL || x->table == NULL)
			out_of_memory(c);
		memcpy(x->origin, origin, x->origin_len + 1);
		memcpy(x->table, table, x->table_len + 1);
		/* each partition's part of the export names its own table */
		x->parent = x->table;
		x->parent_len = x->table_len;

		/* the digest lives in e, in whose copy of its text its strings are */
		{
			JsonValue  *droot;
			JsonOptions opts = {MAX_DEPTH, MAX_VALUES, NULL, false};
			char		err[256];
			bool		oom;
			const char *dfile = shown_dup(c, digest->name, strlen(digest->name));

			if (digest->len > LC_DIGEST_LIMIT)
				unusable(c, "%s: larger than %zu bytes", dfile, LC_DIGEST_LIMIT);
			if (digest->len == 0)
				unusable(c, "%s: empty file", dfile);
			if (!json_parse(x->digest_doc.text, x->digest_doc.len, &opts, &droot, err,
							sizeof(err), &oom))
			{
				if (oom)
					out_of_memory(c);
				unusable(c, "%s: not valid JSON: %s", dfile, err);
			}
			keep(c, droot, release_json);
			if (droot->type != JSON_OBJECT)
				unusable(c, "%s: expected a JSON object, found %s", dfile,
						 json_type_name(droot->type));
			digest_from_json(c, x->digest_doc.name, droot, &x->digest);
			check_digest(c, &x->digest);
			/*
			 * Its strings stay in e's copy of the text, parsed in place;
			 * the tree goes with this call.
			 */
			x->digest.certificate = NULL;
		}
		if (!same_text(x->digest.origin, x->digest.origin_len, x->origin, x->origin_len))
			invalid(c, "the digest is of origin %s, the export of %s",
					shown(x->digest.origin, x->digest.origin_len),
					shown(x->origin, x->origin_len));
		r->status = LC_VALID;
	}
	else if (e != NULL)
		e->done = true;
	ctx_free(c);
	return e;
}

void
lc_export_line(LcExport *e, char *line, size_t len, LcResult *r)
{
	Ctx		   *volatile c;

	if (e == NULL || e->done)
		return;
	if (e->line_ctx == NULL)
		e->line_ctx = ctx_new(r, e->o);
	c = e->line_ctx;
	if (c == NULL)
	{
		e->done = true;
		return;
	}
	c->r = r;
	if (setjmp(c->stop) == 0)
	{
		char		where[64];
		Where		w;
		JsonValue  *obj;

		e->lineno++;
		w.file = e->file;
		w.line = line_where(e, where, sizeof(where));
		w.prefix = "";
		if (len == 0)
			unusable(c, "%s: %sempty line", e->file, where);
		if (len > LC_EXPORT_LINE_LIMIT)
			unusable(c, "%s: %sa line is longer than %zu bytes", e->file, where,
					 LC_EXPORT_LINE_LIMIT);
		obj = parse(c, e->file, where, line, len);
		if (json_get(obj, "block") != NULL)
		{
			if (e->stage > 0)
				unusable(c, "%s: %sa block line after enrolment or row lines", e->file, where);
			export_block(c, e, &w, obj);
		}
		else if (json_get(obj, "partition") != NULL)
		{
			if (!e->partitioned)
				unusable(c, "%s: %sa partition line in the export of a table that names no "
						 "partitions", e->file, where);
			if (e->stage == 0)
				export_blocks_done(c, e);
			if (e->current > 0 && e->stage < 2)
				export_enrolments_done(c, e);
			e->stage = 1;
			export_partition(c, e, &w, obj);
		}
		else if (e->partitioned && e->current == 0 &&
				 (json_get(obj, "enrolment") != NULL || json_get(obj, "ledger_seq") != NULL))
			unusable(c, "%s: %sin the export of a partitioned table, enrolment and row lines "
					 "come after the line naming their partition", e->file, where);
		else if (json_get(obj, "enrolment") != NULL)
		{
			if (e->stage > 1)
				unusable(c, "%s: %san enrolment line after row lines", e->file, where);
			if (e->stage == 0)
				export_blocks_done(c, e);
			e->stage = 1;
			export_enrolment(c, e, &w, obj);
		}
		else if (json_get(obj, "ledger_seq") != NULL)
		{
			if (e->stage == 0)
				export_blocks_done(c, e);
			if (e->stage < 2)
				export_enrolments_done(c, e);
			e->stage = 2;
			export_row(c, e, &w, obj);
		}
		else
			unusable(c, "%s: %sneither a block line (\"block\"), %san enrolment line "
					 "(\"enrolment\") nor a row line (\"ledger_seq\")", e->file, where,
					 e->partitioned ? "a partition line (\"partition\"), " : "");
	}
	else
		e->done = true;
	ctx_release(c);
}

void
lc_export_end(LcExport *e, LcResult *r)
{
	Ctx		   *volatile c;

	if (e == NULL || e->done)
		return;
	c = ctx_new(r, e->o);
	if (c == NULL)
	{
		e->done = true;
		return;
	}
	if (setjmp(c->stop) == 0)
	{
		char		beyond[256] = "";
		char		ends[64] = "";
		char		earlier[256] = "";
		char		erased[160] = "";
		size_t		i;
		const Digest *d = &e->digest;

		if (e->stage == 0)
			export_blocks_done(c, e);
		if (e->stage < 2 && (!e->partitioned || e->current > 0))
			export_enrolments_done(c, e);
		if (e->partitioned && e->current < e->npartitions)
			invalid(c, "%s: the export lacks the part of partition %s (table_id %lld), which "
					"its header names", e->file,
					shown(e->partitions[e->current].table, e->partitions[e->current].table_len),
					(long long) e->partitions[e->current].table_id);

		/* Nothing left out: every leaf of the table has its row, or its erasure. */
		for (i = 0; i < e->leaves.n; i++)
			if (!e->leaves.items[i].seen)
			{
				ExportPartition *p = e->partitioned
					? partition_of_id(e, e->leaves.items[i].table_id) : NULL;

				invalid(c, "%s: the row with ledger_seq %lld%s%s, sealed in block %lld, is "
						"missing from the export, and no erasure record names it", e->file,
						(long long) e->leaves.items[i].seq, p ? " of partition " : "",
						p ? shown(p->table, p->table_len) : "",
						(long long) e->leaves.items[i].height);
			}
		if (e->erased_in_digest > 0)
			snprintf(erased, sizeof(erased), ", and its %lld erased leaves are each named by "
					 "an erasure record sealed in the chain", (long long) e->erased_in_digest);

		if (e->chain.height > d->height)
			snprintf(beyond, sizeof(beyond), "; %lld more rows in blocks %lld-%lld match their "
					 "blocks, which extend the digest's chain but are beyond the digest",
					 (long long) e->rows_beyond, (long long) d->height + 1,
					 (long long) e->chain.height);
		if (e->ends_in_digest > 0)
			snprintf(ends, sizeof(ends), " and %lld end events", (long long) e->ends_in_digest);
		if (e->takeover)
			snprintf(earlier, sizeof(earlier), "; block 1 continues an earlier chain (its "
					 "prev_hash is %s), which this export does not cover: rows numbered below "
					 "%lld are not checked", hex_of(e->takeover_prev, LC_HASH_LEN),
					 (long long) e->takeover_first_seq);
		r->status = LC_VALID;
		if (!e->partitioned)
		{
			out(c, "valid: all %lld rows%s of %s (table_id %lld) sealed in blocks 1-%lld of %s are "
				"in the export unchanged%s, the state at height %lld (digest %s)%s%s\n",
				(long long) e->rows_in_digest, ends,
				shown(e->table, e->table_len), (long long) e->table_id, (long long) d->height,
				shown(e->origin, e->origin_len), erased, (long long) d->height, key_note(c, d),
				earlier, beyond);
			out(c, "table_id %lld is %s by its enrolment (ledger_seq %lld, block %lld); every "
				"\"row\" and \"ended\" shows what its encoding holds\n", (long long) e->table_id,
				shown(e->in_digest->en.name, e->in_digest->en.name_len),
				(long long) e->in_digest->seq, (long long) e->in_digest->height);
		}
		else
		{
			out(c, "valid: all %lld rows%s of the %zu partitions of %s the export names, sealed "
				"in blocks 1-%lld of %s, are in the export unchanged%s, the state at height %lld "
				"(digest %s)%s%s\n", (long long) e->rows_in_digest, ends, e->npartitions,
				shown(e->parent, e->parent_len), (long long) d->height,
				shown(e->origin, e->origin_len), erased, (long long) d->height, key_note(c, d),
				earlier, beyond);
			for (i = 0; i < e->npartitions; i++)
			{
				const ExportPartition *p = &e->partitions[i];

				if (p->bound)
					out(c, "table_id %lld is %s by its enrolment (ledger_seq %lld, block %lld)\n",
						(long long) p->table_id, shown(p->table, p->table_len),
						(long long) p->enrolment_seq, (long long) p->enrolment_height);
				else
					out(c, "table_id %lld (%s) has no row sealed in these blocks\n",
						(long long) p->table_id, shown(p->table, p->table_len));
			}
			out(c, "every \"row\" and \"ended\" shows what its encoding holds; which "
				"partitions %s has is the exporting server's word (the ledger records each "
				"partition as a table of its own)\n", shown(e->parent, e->parent_len));
		}
	}
	ctx_free(c);
	e->done = true;
}

void
lc_export_free(LcExport *e)
{
	size_t		i;

	if (e == NULL)
		return;
	if (e->line_ctx != NULL)
		ctx_free(e->line_ctx);
	forget_enrolments(e);
	free(e->enrolments);
	for (i = 0; i < e->npartitions; i++)
		free(e->partitions[i].table);
	free(e->partitions);
	free(e->by_id);
	free(e->leaves.items);
	free(e->enrol_leaves.items);
	free(e->erasure_leaves.items);
	free(e->sealed_at);
	free((char *) e->digest_doc.name);
	free(e->digest_doc.text);
	free((char *) e->file);
	free(e->origin);
	free(e->parent);
	free(e);
}

/* ----------------------------------------------------------------- misc */

int
lc_doc_format(const char *text, size_t len, char *buf, size_t buflen)
{
	char	   *copy;
	JsonOptions opts = {MAX_DEPTH, MAX_VALUES, "row", false};
	JsonValue  *root;
	char		err[256];
	bool		oom;
	const JsonValue *f;
	int			result;

	copy = malloc(len + 1);
	if (copy == NULL)
	{
		snprintf(buf, buflen, "out of memory");
		return LC_ERR_NOMEM;
	}
	memcpy(copy, text, len);
	copy[len] = '\0';
	if (!json_parse(copy, len, &opts, &root, err, sizeof(err), &oom))
	{
		free(copy);
		snprintf(buf, buflen, "%s", oom ? "out of memory" : err);
		return oom ? LC_ERR_NOMEM : LC_DOC_NOT_JSON;
	}
	f = json_get(root, "format");
	if (root->type != JSON_OBJECT)
	{
		snprintf(buf, buflen, "expected a JSON object, found %s", json_type_name(root->type));
		result = LC_DOC_NO_FORMAT;
	}
	else if (f == NULL)
	{
		snprintf(buf, buflen, "field \"format\" is missing");
		result = LC_DOC_NO_FORMAT;
	}
	else if (f->type != JSON_STRING)
	{
		snprintf(buf, buflen, "field \"format\" must be a string, not %s", json_type_name(f->type));
		result = LC_DOC_NO_FORMAT;
	}
	else
	{
		snprintf(buf, buflen, "%s", shown(f->str, f->len));
		result = LC_OK;
	}
	json_free(root);
	free(copy);
	return result;
}
