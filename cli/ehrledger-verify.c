/*
 * ehrledger-verify.c
 *		Checks ehrledger digests, inclusion proofs, consistency proofs and
 *		table exports offline (docs/format.md §8, §9, §11-14).
 *
 *	ehrledger-verify [--key HEX] DIGEST_FILE
 *	ehrledger-verify [--key HEX] PROOF_FILE DIGEST_FILE
 *	ehrledger-verify [--key HEX] CONSISTENCY_FILE OLD_DIGEST_FILE NEW_DIGEST_FILE
 *	ehrledger-verify [--key HEX] EXPORT_FILE DIGEST_FILE
 *
 * Exit status 0: valid (one line on stdout saying what was proven); 1: not
 * valid ("invalid: ..." on stderr); 2: unusable input or usage ("error: ...").
 * All hashing, tree and signature rules come from src/core/ledger_core.c, the
 * code the server itself uses.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <sodium.h>

#include "core/ledger_core.h"
#include "json.h"

#define DIGEST_FORMAT		"ehrledger-digest-1"
#define PROOF_FORMAT		"ehrledger-proof-1"
#define CERTIFICATE_FORMAT	"ehrledger-certificate-1"
#define MAX_MEMBERS			1000
#define CONSISTENCY_FORMAT	"ehrledger-consistency-1"
#define EXPORT_FORMAT		"ehrledger-export-1"

/* Input limits: larger inputs are refused, never truncated. */
#define DIGEST_FILE_LIMIT	((size_t) 1 << 20)	/* a digest is ~400 bytes */
#define DOC_FILE_LIMIT		((size_t) 256 << 20)	/* a proof carries one row */
#define EXPORT_LINE_LIMIT	((size_t) 1 << 30)	/* a block line: 88 hex digits a leaf */
#define HEADER_PROBE_LIMIT	((size_t) 1 << 20)	/* an export's first line */
#define MAX_DEPTH			64
#define MAX_VALUES			100000	/* values kept per document or line */
#define MAX_ORIGIN			65535	/* it is hashed after a u16 length */

/* Bytes 0-13 of a row encoding: version, kind, table_id, ledger_seq. */
#define ENC_HEADER_LEN		14
/* A packed leaf: u64 ledger_seq, u32 table_id, 32-byte leaf hash. */
#define LEAF_SIZE			44

static const char *pinned_key_hex = NULL;
static uint8_t pinned_key[LC_PUBKEY_LEN];

/* --member NAME=HEX: the hospitals, and their keys, an auditor trusts. */
typedef struct Member
{
	const char *name;
	uint8_t		key[LC_PUBKEY_LEN];
} Member;
static Member members[MAX_MEMBERS];
static int	nmembers = 0;

/* ---------------------------------------------------------------- output */

static _Noreturn void
fail_with(int status, const char *prefix, const char *fmt, va_list ap)
{
	fflush(stdout);
	fputs(prefix, stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	exit(status);
}

/* Unusable input or usage: exit status 2. */
static _Noreturn void
unusable(const char *fmt,...)
{
	va_list		ap;

	va_start(ap, fmt);
	fail_with(2, "error: ", fmt, ap);
}

/* The input is well formed but does not prove what it claims: status 1. */
static _Noreturn void
invalid(const char *fmt,...)
{
	va_list		ap;

	va_start(ap, fmt);
	fail_with(1, "invalid: ", fmt, ap);
}

static _Noreturn void
on_oom(void)
{
	unusable("out of memory");
}

static void *
xmalloc(size_t n)
{
	void	   *p = malloc(n ? n : 1);

	if (p == NULL)
		on_oom();
	return p;
}

/* SHA-256 only fails if OpenSSL itself does. */
static void
need(bool ok)
{
	if (!ok)
		unusable("SHA-256 failed (OpenSSL)");
}

/*
 * Text from an input, safe to print on one line: control characters are
 * escaped, and long text is cut (at a character boundary) with "...".
 * Returns one of a few rotating static buffers.
 */
static const char *
shown(const char *s, size_t len)
{
	static char bufs[6][512];
	static int	next = 0;
	char	   *out = bufs[next];
	size_t		o = 0;
	size_t		i;

	next = (next + 1) % 6;
	for (i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) s[i];

		if (o + 8 >= sizeof(bufs[0]) && (c & 0xC0) != 0x80)
		{
			memcpy(out + o, "...", 3);
			o += 3;
			break;
		}
		if (c < 0x20 || c == 0x7f || c == '\\')
			o += (size_t) snprintf(out + o, sizeof(bufs[0]) - o, "\\x%02x", c);
		else
			out[o++] = (char) c;
	}
	out[o] = '\0';
	return out;
}

/* The same, in memory of its own (for text kept across other messages). */
static const char *
shown_dup(const char *s, size_t len)
{
	const char *t = shown(s, len);
	char	   *copy = xmalloc(strlen(t) + 1);

	strcpy(copy, t);
	return copy;
}

static const char *
hex_of(const uint8_t *data, size_t len)
{
	static char bufs[4][2 * LC_SIG_LEN + 1];
	static int	next = 0;
	char	   *out = bufs[next];

	next = (next + 1) % 4;
	if (len > LC_SIG_LEN)
		len = LC_SIG_LEN;
	lc_hex_encode(data, len, out);
	return out;
}

/* --------------------------------------------------------------- reading */

/* A file read in chunks; lines are split by hand so NUL bytes are kept. */
typedef struct Reader
{
	const char *path;
	FILE	   *f;
	char		chunk[1 << 16];
	size_t		pos;
	size_t		end;
	bool		eof;
} Reader;

static void
reader_open(Reader *r, const char *path)
{
	struct stat st;

	r->path = path;
	r->pos = r->end = 0;
	r->eof = false;
	r->f = fopen(path, "rb");
	if (r->f == NULL)
		unusable("%s: %s", shown(path, strlen(path)), strerror(errno));
	if (fstat(fileno(r->f), &st) != 0)
		unusable("%s: %s", shown(path, strlen(path)), strerror(errno));
	if (S_ISDIR(st.st_mode))
		unusable("%s: is a directory", shown(path, strlen(path)));
}

static void
reader_close(Reader *r)
{
	if (r->f != NULL)
		fclose(r->f);
	r->f = NULL;
}

static bool
fill(Reader *r)
{
	size_t		n;

	if (r->pos < r->end)
		return true;
	if (r->eof)
		return false;
	n = fread(r->chunk, 1, sizeof(r->chunk), r->f);
	if (n == 0)
	{
		if (ferror(r->f))
			unusable("%s: read failed: %s", shown(r->path, strlen(r->path)), strerror(errno));
		r->eof = true;
		return false;
	}
	r->pos = 0;
	r->end = n;
	return true;
}

/*
 * Reads one line into b (without its newline).  Returns false at the end
 * of the file when nothing is left.  A line longer than limit is an error;
 * what is what names the input in that message.
 */
static bool
read_line(Reader *r, LcBuf *b, size_t limit, const char *what, bool *newline)
{
	bool		any = false;

	b->len = 0;
	*newline = false;
	while (fill(r))
	{
		const char *s = r->chunk + r->pos;
		const char *nl = memchr(s, '\n', r->end - r->pos);
		size_t		take = nl != NULL ? (size_t) (nl - s) : r->end - r->pos;

		any = true;
		if (take > limit - b->len)
			unusable("%s: %s is longer than %zu bytes", shown(r->path, strlen(r->path)),
				  what, limit);
		lc_put(b, s, take);
		r->pos += take;
		if (nl != NULL)
		{
			r->pos++;
			*newline = true;
			return true;
		}
	}
	return any;
}

/* Appends the rest of the file to b, which may hold at most limit bytes. */
static void
read_rest(Reader *r, LcBuf *b, size_t limit)
{
	while (fill(r))
	{
		size_t		take = r->end - r->pos;

		if (take > limit - b->len)
			unusable("%s: larger than %zu bytes", shown(r->path, strlen(r->path)), limit);
		lc_put(b, r->chunk + r->pos, take);
		r->pos += take;
	}
}

static JsonValue *
parse_json(const char *path, const char *what, char *text, size_t len)
{
	JsonOptions opts = {MAX_DEPTH, MAX_VALUES, "row"};
	JsonValue  *root;
	char		err[256];
	bool		oom;

	if (!json_parse(text, len, &opts, &root, err, sizeof(err), &oom))
	{
		if (oom)
			on_oom();
		unusable("%s: %snot valid JSON: %s", shown(path, strlen(path)), what, err);
	}
	if (root->type != JSON_OBJECT)
		unusable("%s: %sexpected a JSON object, found %s", shown(path, strlen(path)), what,
			  json_type_name(root->type));
	return root;
}

/* A whole file holding one JSON object. */
static JsonValue *
load_json_file(const char *path, size_t limit, LcBuf *text)
{
	Reader	   *r = xmalloc(sizeof(Reader));

	reader_open(r, path);
	lc_buf_init(text);
	read_rest(r, text, limit);
	reader_close(r);
	free(r);
	if (text->len == 0)
		unusable("%s: empty file", shown(path, strlen(path)));
	return parse_json(path, "", (char *) text->data, text->len);
}

/* ---------------------------------------------------------------- fields */

/* Where a field sits, for messages: a file and a prefix like "block.". */
typedef struct Where
{
	const char *file;
	const char *line;			/* "line 5: " or "" */
	const char *prefix;			/* "block." or "" */
} Where;

static const JsonValue *
field(const Where *w, const JsonValue *obj, const char *key, JsonType type)
{
	const JsonValue *v = json_get(obj, key);

	if (v == NULL)
		unusable("%s: %sfield \"%s%s\" is missing", w->file, w->line, w->prefix, key);
	if (v->type != type)
		unusable("%s: %sfield \"%s%s\" must be %s, not %s", w->file, w->line, w->prefix, key,
			  json_type_name(type), json_type_name(v->type));
	return v;
}

static int64_t
get_int(const Where *w, const JsonValue *obj, const char *key, int64_t min, int64_t max)
{
	const JsonValue *v = json_get(obj, key);
	int64_t		result = 0;
	int			rc;

	if (v == NULL)
		unusable("%s: %sfield \"%s%s\" is missing", w->file, w->line, w->prefix, key);
	rc = json_int(v, min, max, &result);
	if (rc == -1)
		unusable("%s: %sfield \"%s%s\" must be an integer (digits only)", w->file, w->line,
			  w->prefix, key);
	if (rc == -2)
		unusable("%s: %sfield \"%s%s\" is out of range (%lld to %lld)", w->file, w->line,
			  w->prefix, key, (long long) min, (long long) max);
	return result;
}

static const char *
get_string(const Where *w, const JsonValue *obj, const char *key, size_t max_len,
		   size_t *len)
{
	const JsonValue *v = field(w, obj, key, JSON_STRING);

	if (v->len > max_len)
		unusable("%s: %sfield \"%s%s\" is longer than %zu bytes", w->file, w->line, w->prefix,
			  key, max_len);
	if (len != NULL)
		*len = v->len;
	return v->str;
}

static void
decode_hex_fixed(const Where *w, const char *name, const JsonValue *v, uint8_t *out,
				 size_t nbytes)
{
	if (v->type != JSON_STRING)
		unusable("%s: %s%s must be a string of %zu hex digits, not %s", w->file, w->line,
			  name, 2 * nbytes, json_type_name(v->type));
	if (v->len != 2 * nbytes)
		unusable("%s: %s%s must be %zu hex digits, not %zu", w->file, w->line, name,
			  2 * nbytes, v->len);
	if (!lc_hex_decode(v->str, v->len, out))
		unusable("%s: %s%s is not hexadecimal", w->file, w->line, name);
}

static void
get_hex_fixed(const Where *w, const JsonValue *obj, const char *key, uint8_t *out,
			  size_t nbytes)
{
	const JsonValue *v = json_get(obj, key);
	char		name[128];

	snprintf(name, sizeof(name), "field \"%s%s\"", w->prefix, key);
	if (v == NULL)
		unusable("%s: %s%s is missing", w->file, w->line, name);
	decode_hex_fixed(w, name, v, out, nbytes);
}

/* Hex of any even length, decoded into a fresh buffer. */
static uint8_t *
get_hex_bytes(const Where *w, const JsonValue *obj, const char *key, size_t *nbytes)
{
	const JsonValue *v = field(w, obj, key, JSON_STRING);
	uint8_t    *out;

	if (v->len % 2 != 0)
		unusable("%s: %sfield \"%s%s\" has an odd number of hex digits", w->file, w->line,
			  w->prefix, key);
	out = xmalloc(v->len / 2);
	if (!lc_hex_decode(v->str, v->len, out))
		unusable("%s: %sfield \"%s%s\" is not hexadecimal", w->file, w->line, w->prefix, key);
	*nbytes = v->len / 2;
	return out;
}

/* A time exactly as the server writes it; the canonical form only. */
static int64_t
get_time(const Where *w, const JsonValue *obj, const char *key, char *text)
{
	size_t		len;
	const char *s = get_string(w, obj, key, 64, &len);
	int64_t		us;
	char		again[LC_ISO_LEN + 1];

	if (len != LC_ISO_LEN || !lc_parse_iso_utc(s, &us))
		unusable("%s: %sfield \"%s%s\" must be a UTC time like 2026-01-31T12:00:00.000000Z",
			  w->file, w->line, w->prefix, key);
	lc_format_iso_utc(us, again);
	if (strcmp(again, s) != 0)
		unusable("%s: %sfield \"%s%s\" is not a real date and time (%s)", w->file, w->line,
			  w->prefix, key, shown(s, len));
	memcpy(text, s, LC_ISO_LEN + 1);
	return us;
}

/* An array of at most LC_MAX_PATH hashes. */
static int
get_path(const Where *w, const JsonValue *obj, const char *key, uint8_t *path)
{
	const JsonValue *v = field(w, obj, key, JSON_ARRAY);
	size_t		i;

	if (v->count > LC_MAX_PATH)
		unusable("%s: %sfield \"%s%s\" has %zu hashes, more than any tree needs (%d)",
			  w->file, w->line, w->prefix, key, v->count, LC_MAX_PATH);
	for (i = 0; i < v->count; i++)
	{
		char		name[128];

		snprintf(name, sizeof(name), "element %zu of \"%s%s\"", i, w->prefix, key);
		decode_hex_fixed(w, name, &v->items[i], path + i * LC_HASH_LEN, LC_HASH_LEN);
	}
	return (int) v->count;
}

static const char *
get_origin(const Where *w, const JsonValue *obj, size_t *len)
{
	return get_string(w, obj, "origin", MAX_ORIGIN, len);
}

static void
check_format(const Where *w, const JsonValue *obj, const char *expected)
{
	size_t		len;
	const char *f = get_string(w, obj, "format", 256, &len);

	if (strcmp(f, expected) != 0)
		unusable("%s: %sformat is \"%s\", expected \"%s\"", w->file, w->line, shown(f, len),
			  expected);
}

/* ---------------------------------------------------------------- blocks */

typedef struct Block
{
	LcBlockHeader h;
	uint8_t		block_hash[LC_HASH_LEN];
	uint8_t		signature[LC_SIG_LEN];
	char		sealed_at[LC_ISO_LEN + 1];
} Block;

/* A block object (docs/format.md §11) of the chain of origin. */
static void
get_block(const Where *outer, const JsonValue *parent, const char *key, const char *origin,
		  Block *b)
{
	const JsonValue *obj = field(outer, parent, key, JSON_OBJECT);
	char		prefix[64];
	Where		w = *outer;

	snprintf(prefix, sizeof(prefix), "%s%s.", outer->prefix, key);
	w.prefix = prefix;
	memset(b, 0, sizeof(*b));
	b->h.origin = origin;
	b->h.height = get_int(&w, obj, "height", 1, INT64_MAX);
	get_hex_fixed(&w, obj, "prev_hash", b->h.prev_hash, LC_HASH_LEN);
	get_hex_fixed(&w, obj, "history_root", b->h.history_root, LC_HASH_LEN);
	get_hex_fixed(&w, obj, "root", b->h.root, LC_HASH_LEN);
	get_hex_fixed(&w, obj, "leaves_hash", b->h.leaves_hash, LC_HASH_LEN);
	b->h.first_seq = get_int(&w, obj, "first_seq", 0, INT64_MAX);
	b->h.last_seq = get_int(&w, obj, "last_seq", 0, INT64_MAX);
	b->h.row_count = get_int(&w, obj, "row_count", 0, INT64_MAX);
	b->h.sealed_at_us = get_time(&w, obj, "sealed_at", b->sealed_at);
	get_hex_fixed(&w, obj, "public_key", b->h.public_key, LC_PUBKEY_LEN);
	get_hex_fixed(&w, obj, "block_hash", b->block_hash, LC_HASH_LEN);
	get_hex_fixed(&w, obj, "signature", b->signature, LC_SIG_LEN);
}

/* Why a block does not hash to its block_hash or its signature fails, or NULL. */
static const char *
block_problem(const Block *b)
{
	uint8_t		computed[LC_HASH_LEN];

	need(lc_block_hash(&b->h, computed));
	if (memcmp(computed, b->block_hash, LC_HASH_LEN) != 0)
		return "its fields do not hash to its block_hash";
	if (!lc_signature_ok(b->block_hash, LC_HASH_LEN, b->signature, b->h.public_key))
		return "its signature does not verify with its public_key";
	return NULL;
}

/* --------------------------------------------------------------- digests */

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
} Digest;

static void
digest_from_json(const char *file, const JsonValue *obj, Digest *d)
{
	Where		w = {file, "", ""};

	check_format(&w, obj, DIGEST_FORMAT);
	d->file = file;
	d->origin = get_origin(&w, obj, &d->origin_len);
	d->height = get_int(&w, obj, "height", 1, INT64_MAX);
	get_hex_fixed(&w, obj, "block_hash", d->block_hash, LC_HASH_LEN);
	d->last_seq = get_int(&w, obj, "last_seq", 0, INT64_MAX);
	d->sealed_at_us = get_time(&w, obj, "sealed_at", d->sealed_at);
	get_hex_fixed(&w, obj, "public_key", d->public_key, LC_PUBKEY_LEN);
	get_hex_fixed(&w, obj, "signature", d->signature, LC_SIG_LEN);
}

/* Reads a digest file; its document stays allocated (d points into it). */
static void
load_digest(const char *path, Digest *d)
{
	LcBuf	   *text = xmalloc(sizeof(LcBuf));
	JsonValue  *root = load_json_file(path, DIGEST_FILE_LIMIT, text);

	digest_from_json(shown_dup(path, strlen(path)), root, d);
}

/* docs/format.md §9: the signature, and the key the auditor pinned. */
static void
check_digest(const Digest *d)
{
	LcBuf		msg;
	bool		ok;

	if (pinned_key_hex != NULL && memcmp(d->public_key, pinned_key, LC_PUBKEY_LEN) != 0)
		invalid("%s: the digest carries public key %s, not the trusted key %s",
				d->file, hex_of(d->public_key, LC_PUBKEY_LEN), hex_of(pinned_key, LC_PUBKEY_LEN));
	lc_buf_init(&msg);
	lc_digest_message(&msg, d->origin, d->height, d->block_hash, d->last_seq, d->sealed_at_us);
	ok = lc_signature_ok(msg.data, msg.len, d->signature, d->public_key);
	lc_buf_free(&msg);
	if (!ok)
		invalid("%s: the digest's signature does not verify with its public_key %s",
				d->file, hex_of(d->public_key, LC_PUBKEY_LEN));
}

/* How the output names the key that signed a digest. */
static const char *
key_note(const Digest *d)
{
	static char note[256];

	if (pinned_key_hex != NULL)
		snprintf(note, sizeof(note), "signed by the trusted key %s",
				 hex_of(d->public_key, LC_PUBKEY_LEN));
	else
		snprintf(note, sizeof(note), "signed by key %s; pass --key to pin it",
				 hex_of(d->public_key, LC_PUBKEY_LEN));
	return note;
}

static bool
same_origin(const char *a, size_t alen, const char *b, size_t blen)
{
	return alen == blen && memcmp(a, b, alen) == 0;
}

/* Step 4 of docs/format.md §12: the block is the one the digest names. */
static const char *
digest_mismatch(const Digest *d, const Block *b)
{
	if (b->h.height != d->height)
		return "height";
	if (memcmp(b->block_hash, d->block_hash, LC_HASH_LEN) != 0)
		return "block_hash";
	if (b->h.last_seq != d->last_seq)
		return "last_seq";
	if (b->h.sealed_at_us != d->sealed_at_us)
		return "sealed_at";
	return NULL;
}

/* ------------------------------------------------------------ digest mode */

static int
verify_digest(const char *file, const JsonValue *root)
{
	Digest		d;

	digest_from_json(file, root, &d);
	check_digest(&d);
	printf("valid: digest of %s at height %lld (block_hash %s, last_seq %lld, sealed_at %s) "
		   "%s\n", shown(d.origin, d.origin_len), (long long) d.height,
		   hex_of(d.block_hash, LC_HASH_LEN), (long long) d.last_seq, d.sealed_at,
		   key_note(&d));
	return 0;
}

/* ------------------------------------------------------------- proof mode */

/* docs/format.md §12, steps 1-5. */
static int
verify_proof(const char *file, const JsonValue *root, const char *digest_path)
{
	Where		w = {file, "", ""};
	const char *origin;
	size_t		origin_len;
	const char *table;
	size_t		table_len;
	int64_t		table_id;
	int64_t		seq;
	uint8_t    *encoding;
	size_t		enc_len;
	Block		block;
	Block		head;
	int64_t		leaf_index;
	static uint8_t leaf_path[LC_MAX_PATH * LC_HASH_LEN];
	static uint8_t history_path[LC_MAX_PATH * LC_HASH_LEN];
	int			leaf_path_len;
	int			history_path_len;
	uint8_t		leaf[LC_HASH_LEN];
	Digest		d;
	const char *problem;
	const char *t;

	check_format(&w, root, PROOF_FORMAT);
	origin = get_origin(&w, root, &origin_len);
	table = get_string(&w, root, "table", MAX_ORIGIN, &table_len);
	table_id = get_int(&w, root, "table_id", 0, UINT32_MAX);
	seq = get_int(&w, root, "ledger_seq", 1, INT64_MAX);
	encoding = get_hex_bytes(&w, root, "encoding", &enc_len);
	get_block(&w, root, "block", origin, &block);
	leaf_index = get_int(&w, root, "leaf_index", 0, INT64_MAX);
	leaf_path_len = get_path(&w, root, "leaf_path", leaf_path);
	get_block(&w, root, "head", origin, &head);
	history_path_len = get_path(&w, root, "history_path", history_path);
	load_digest(digest_path, &d);
	t = shown_dup(table, table_len);

	/* The digest is the trust anchor: check it first. */
	check_digest(&d);

	/* 1. The encoding is of this table and ledger_seq. */
	if (enc_len < ENC_HEADER_LEN || encoding[0] != 1 || encoding[1] != 1)
		invalid("%s: the encoding is not a row encoding of format 1 (version 1, kind 1)", file);
	if (lc_get_u32(encoding + 2) != (uint32_t) table_id)
		invalid("%s: the encoding is of table_id %u, not %lld", file,
				lc_get_u32(encoding + 2), (long long) table_id);
	if (lc_get_u64(encoding + 6) != (uint64_t) seq)
		invalid("%s: the encoding is of ledger_seq %llu, not %lld", file,
				(unsigned long long) lc_get_u64(encoding + 6), (long long) seq);

	/* 2. Its leaf is at leaf_index of the block's tree. */
	need(lc_leaf_hash(encoding, enc_len, leaf));
	if (seq < block.h.first_seq || seq > block.h.last_seq)
		invalid("%s: ledger_seq %lld is outside block %lld's range %lld-%lld", file,
				(long long) seq, (long long) block.h.height, (long long) block.h.first_seq,
				(long long) block.h.last_seq);
	if (!lc_verify_inclusion(leaf, (uint64_t) leaf_index, (uint64_t) block.h.row_count,
							 leaf_path, leaf_path_len, block.h.root))
		invalid("%s: the row's leaf at leaf_index %lld with leaf_path does not give the "
				"root of block %lld (%lld rows): the row or the path was changed",
				file, (long long) leaf_index, (long long) block.h.height,
				(long long) block.h.row_count);

	/* 3. Both blocks hash to their block_hash, and their signatures verify. */
	if ((problem = block_problem(&block)) != NULL)
		invalid("%s: block %lld: %s", file, (long long) block.h.height, problem);
	if ((problem = block_problem(&head)) != NULL)
		invalid("%s: head block %lld: %s", file, (long long) head.h.height, problem);

	/* 4. The digest names head, of this origin. */
	if (!same_origin(d.origin, d.origin_len, origin, origin_len))
		invalid("the digest is of origin %s, the proof of %s",
				shown(d.origin, d.origin_len), shown(origin, origin_len));
	if ((problem = digest_mismatch(&d, &head)) != NULL)
		invalid("the proof's head (height %lld) is not the block the digest names "
				"(height %lld): %s differs", (long long) head.h.height,
				(long long) d.height, problem);

	/* 5. block is head, or is in head's history tree. */
	if (block.h.height == head.h.height)
	{
		if (memcmp(block.block_hash, head.block_hash, LC_HASH_LEN) != 0)
			invalid("%s: block and head both have height %lld but differ", file,
					(long long) block.h.height);
		if (history_path_len != 0)
			invalid("%s: history_path must be empty when block is head", file);
	}
	else if (block.h.height > head.h.height)
		invalid("%s: block %lld is newer than head %lld", file,
				(long long) block.h.height, (long long) head.h.height);
	else if (!lc_verify_inclusion(block.block_hash, (uint64_t) (block.h.height - 1),
								  (uint64_t) (head.h.height - 1), history_path,
								  history_path_len, head.h.history_root))
		invalid("%s: history_path does not lead from block %lld to the history_root of "
				"head %lld", file, (long long) block.h.height, (long long) head.h.height);

	printf("valid: row %lld of %s (table_id %lld) is in block %lld, included in the state "
		   "of %s at height %lld (digest %s)\n", (long long) seq, t, (long long) table_id,
		   (long long) block.h.height, shown(origin, origin_len), (long long) head.h.height,
		   key_note(&d));
	free(encoding);
	return 0;
}

/* ------------------------------------------------------- consistency mode */

/* docs/format.md §13. */
static int
verify_consistency(const char *file, const JsonValue *root, const char *old_path,
				   const char *new_path)
{
	Where		w = {file, "", ""};
	const char *origin;
	size_t		origin_len;
	Block		old_block;
	Block		new_block;
	static uint8_t history_path[LC_MAX_PATH * LC_HASH_LEN];
	static uint8_t consistency_path[LC_MAX_PATH * LC_HASH_LEN];
	int			history_len;
	int			consistency_len;
	Digest		od;
	Digest		nd;
	const char *problem;
	char		keys[512];

	check_format(&w, root, CONSISTENCY_FORMAT);
	origin = get_origin(&w, root, &origin_len);
	get_block(&w, root, "old", origin, &old_block);
	get_block(&w, root, "new", origin, &new_block);
	history_len = get_path(&w, root, "history_path", history_path);
	consistency_len = get_path(&w, root, "consistency_path", consistency_path);
	load_digest(old_path, &od);
	load_digest(new_path, &nd);

	check_digest(&od);
	check_digest(&nd);
	if (!same_origin(od.origin, od.origin_len, nd.origin, nd.origin_len))
		invalid("the digests are of different origins, %s and %s",
				shown(od.origin, od.origin_len), shown(nd.origin, nd.origin_len));
	if (!same_origin(od.origin, od.origin_len, origin, origin_len))
		invalid("the digests are of origin %s, the proof of %s",
				shown(od.origin, od.origin_len), shown(origin, origin_len));

	if ((problem = block_problem(&old_block)) != NULL)
		invalid("%s: old block %lld: %s", file, (long long) old_block.h.height, problem);
	if ((problem = block_problem(&new_block)) != NULL)
		invalid("%s: new block %lld: %s", file, (long long) new_block.h.height, problem);
	if ((problem = digest_mismatch(&od, &old_block)) != NULL)
		invalid("the proof's old block (height %lld) is not the block the old digest names "
				"(height %lld): %s differs", (long long) old_block.h.height,
				(long long) od.height, problem);
	if ((problem = digest_mismatch(&nd, &new_block)) != NULL)
		invalid("the proof's new block (height %lld) is not the block the new digest names "
				"(height %lld): %s differs", (long long) new_block.h.height,
				(long long) nd.height, problem);

	if (pinned_key_hex != NULL)
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
			invalid("the two digests name different blocks at the same height %lld: "
					"the chain was rewritten", (long long) old_block.h.height);
		if (history_len != 0 || consistency_len != 0)
			invalid("%s: the paths must be empty when the heights are equal", file);
		printf("valid: both digests name the same block %lld of %s (%s)\n",
			   (long long) old_block.h.height, shown(origin, origin_len), keys);
		return 0;
	}
	if (old_block.h.height > new_block.h.height)
		invalid("the old digest (height %lld) is newer than the new one (height %lld)",
				(long long) old_block.h.height, (long long) new_block.h.height);
	if (!lc_verify_inclusion(old_block.block_hash, (uint64_t) (old_block.h.height - 1),
							 (uint64_t) (new_block.h.height - 1), history_path, history_len,
							 new_block.h.history_root))
		invalid("%s: history_path does not lead from block %lld to the history_root of "
				"block %lld", file, (long long) old_block.h.height,
				(long long) new_block.h.height);
	if (!lc_verify_consistency((uint64_t) (old_block.h.height - 1),
							   (uint64_t) (new_block.h.height - 1),
							   old_block.h.history_root, new_block.h.history_root,
							   consistency_path, consistency_len))
		invalid("%s: consistency_path does not show that the history of block %lld "
				"extends that of block %lld", file, (long long) new_block.h.height,
				(long long) old_block.h.height);

	printf("valid: the chain of %s at height %lld extends its chain at height %lld "
		   "unchanged (%s)\n", shown(origin, origin_len), (long long) new_block.h.height,
		   (long long) old_block.h.height, keys);
	return 0;
}

/* ------------------------------------------------------------ export mode */

/* A leaf of the exported table, waiting for its row line. */
typedef struct TableLeaf
{
	int64_t		seq;
	int64_t		height;
	uint8_t		hash[LC_HASH_LEN];
	bool		seen;
} TableLeaf;

typedef struct Export
{
	const char *file;
	const char *origin;
	size_t		origin_len;
	const char *table;			/* for messages, already made printable */
	int64_t		table_id;
	const Digest *digest;

	/* the chain so far */
	int64_t		height;			/* of the last block line */
	uint8_t		prev_hash[LC_HASH_LEN];
	int64_t		prev_last_seq;
	uint8_t		frontier[LC_MAX_FRONTIER * LC_HASH_LEN];
	int			frontier_count;

	/* the table's leaves, in ledger_seq order */
	TableLeaf  *leaves;
	size_t		nleaves;
	size_t		cap;

	/* a chain that took over from an earlier one (docs/format.md §8) */
	bool		takeover;
	uint8_t		takeover_prev[LC_HASH_LEN];
	int64_t		takeover_first_seq;

	/* row lines: row versions (kind 1) and end events (kind 2) */
	int64_t		last_row_seq;
	int64_t		rows_in_digest;
	int64_t		ends_in_digest;
	int64_t		rows_beyond;
} Export;

static void
add_leaf(Export *e, int64_t seq, int64_t height, const uint8_t *hash)
{
	TableLeaf  *l;

	if (e->nleaves == e->cap)
	{
		size_t		grown = e->cap ? e->cap * 2 : 1024;
		TableLeaf  *p;

		if (grown > SIZE_MAX / sizeof(TableLeaf))
			on_oom();
		p = realloc(e->leaves, grown * sizeof(TableLeaf));
		if (p == NULL)
			on_oom();
		e->leaves = p;
		e->cap = grown;
	}
	l = &e->leaves[e->nleaves++];
	l->seq = seq;
	l->height = height;
	memcpy(l->hash, hash, LC_HASH_LEN);
	l->seen = false;
}

static TableLeaf *
find_leaf(Export *e, int64_t seq)
{
	size_t		lo = 0;
	size_t		hi = e->nleaves;

	while (lo < hi)
	{
		size_t		mid = lo + (hi - lo) / 2;

		if (e->leaves[mid].seq < seq)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < e->nleaves && e->leaves[lo].seq == seq ? &e->leaves[lo] : NULL;
}

/*
 * One block line: recompute the block from its leaves and the chain before
 * it (docs/format.md §8, §14), and keep the leaves of the exported table.
 */
static void
export_block(Export *e, const Where *w, const JsonValue *obj)
{
	Block		b;
	const JsonValue *lv;
	uint8_t    *packed;
	size_t		nbytes;
	size_t		n;
	size_t		i;
	uint8_t		computed[LC_HASH_LEN];
	const char *problem;
	int64_t		h;

	get_block(w, obj, "block", e->origin, &b);
	h = b.h.height;
	lv = json_get(obj, "leaves");
	if (lv == NULL)
		unusable("%s: %sfield \"leaves\" is missing", w->file, w->line);
	if (lv->type == JSON_NULL)
		invalid("%s: %sblock %lld has no leaves to check", w->file, w->line, (long long) h);
	packed = get_hex_bytes(w, obj, "leaves", &nbytes);
	if (nbytes % LEAF_SIZE != 0)
		unusable("%s: %sfield \"leaves\" is not a whole number of %d-byte leaves", w->file,
			  w->line, LEAF_SIZE);
	n = nbytes / LEAF_SIZE;

	if (h - 1 != e->height)
		invalid("%s: %sblock %lld follows block %lld: the export lacks block %lld",
				w->file, w->line, (long long) h, (long long) e->height,
				(long long) e->height + 1);
	if (h == 1 && memcmp(b.h.prev_hash, e->prev_hash, LC_HASH_LEN) != 0)
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
			invalid("%s: %sblock 1: first_seq is 0", w->file, w->line);
		e->prev_last_seq = b.h.first_seq - 1;
	}
	else if (memcmp(b.h.prev_hash, e->prev_hash, LC_HASH_LEN) != 0)
		invalid("%s: %sblock %lld: prev_hash is not the hash of block %lld", w->file,
				w->line, (long long) h, (long long) h - 1);
	need(lc_history_root(e->frontier, e->frontier_count, computed));
	if (memcmp(b.h.history_root, computed, LC_HASH_LEN) != 0)
		invalid("%s: %sblock %lld: history_root is not the root of the history of blocks "
				"1 to %lld", w->file, w->line, (long long) h, (long long) h - 1);
	if (b.h.first_seq - 1 != e->prev_last_seq || b.h.last_seq < e->prev_last_seq)
		invalid("%s: %sblock %lld: covers ledger_seq %lld-%lld, but block %lld ended at %lld",
				w->file, w->line, (long long) h, (long long) b.h.first_seq,
				(long long) b.h.last_seq, (long long) h - 1, (long long) e->prev_last_seq);
	if ((uint64_t) b.h.row_count != (uint64_t) n)
		invalid("%s: %sblock %lld: row_count is %lld but it has %zu leaves", w->file,
				w->line, (long long) h, (long long) b.h.row_count, n);
	for (i = 0; i < n; i++)
	{
		uint64_t	seq = lc_get_u64(packed + i * LEAF_SIZE);

		if (seq < (uint64_t) b.h.first_seq || seq > (uint64_t) b.h.last_seq ||
			(i > 0 && seq <= lc_get_u64(packed + (i - 1) * LEAF_SIZE)))
			invalid("%s: %sblock %lld: leaf %zu (ledger_seq %llu) is out of order or "
					"outside the block's range %lld-%lld", w->file, w->line, (long long) h,
					i, (unsigned long long) seq, (long long) b.h.first_seq,
					(long long) b.h.last_seq);
	}
	need(lc_merkle_root(packed + 12, n, LEAF_SIZE, computed));
	if (memcmp(computed, b.h.root, LC_HASH_LEN) != 0)
		invalid("%s: %sblock %lld: its leaves do not give its root", w->file, w->line,
				(long long) h);
	need(lc_leaves_hash(packed, n * LEAF_SIZE, computed));
	if (memcmp(computed, b.h.leaves_hash, LC_HASH_LEN) != 0)
		invalid("%s: %sblock %lld: its leaves, with their ledger_seq and table labels, "
				"do not give its leaves_hash", w->file, w->line, (long long) h);
	if ((problem = block_problem(&b)) != NULL)
		invalid("%s: %sblock %lld: %s", w->file, w->line, (long long) h, problem);
	if (h == e->digest->height && (problem = digest_mismatch(e->digest, &b)) != NULL)
		invalid("%s: %sblock %lld is not the block the digest names: %s differs",
				w->file, w->line, (long long) h, problem);

	for (i = 0; i < n; i++)
		if (lc_get_u32(packed + i * LEAF_SIZE + 8) == (uint32_t) e->table_id)
			add_leaf(e, (int64_t) lc_get_u64(packed + i * LEAF_SIZE), h,
					 packed + i * LEAF_SIZE + 12);

	need(lc_history_append(e->frontier, &e->frontier_count, (uint64_t) (h - 1),
						   b.block_hash));
	memcpy(e->prev_hash, b.block_hash, LC_HASH_LEN);
	e->prev_last_seq = b.h.last_seq;
	e->height = h;
	free(packed);
}

/* After the last block line: the chain must reach the digest's block. */
static void
export_blocks_done(Export *e)
{
	if (e->height < e->digest->height)
		invalid("%s: the export's chain ends at block %lld; the digest names block %lld",
				e->file, (long long) e->height, (long long) e->digest->height);
}

/* One row line: its leaf is the sealed leaf at its ledger_seq. */
static void
export_row(Export *e, const Where *w, const JsonValue *obj)
{
	int64_t		seq = get_int(w, obj, "ledger_seq", 1, INT64_MAX);
	size_t		len;
	uint8_t    *enc = get_hex_bytes(w, obj, "encoding", &len);
	uint8_t		leaf[LC_HASH_LEN];
	TableLeaf  *l;
	int			kind;

	if (seq <= e->last_row_seq)
		invalid("%s: %sthe row with ledger_seq %lld is out of order or repeated",
				w->file, w->line, (long long) seq);
	e->last_row_seq = seq;
	/* A row version (kind 1) or, in a versioned table, an end event (kind 2). */
	if (len < ENC_HEADER_LEN || enc[0] != 1 || (enc[1] != 1 && enc[1] != 2) ||
		lc_get_u32(enc + 2) != (uint32_t) e->table_id || lc_get_u64(enc + 6) != (uint64_t) seq)
		invalid("%s: %sthe encoding of row %lld does not start with version 1, kind 1 "
				"or 2, table_id %lld and ledger_seq %lld", w->file, w->line,
				(long long) seq, (long long) e->table_id, (long long) seq);
	kind = enc[1];
	need(lc_leaf_hash(enc, len, leaf));
	free(enc);
	l = find_leaf(e, seq);
	if (l == NULL)
		invalid("%s: %sno block has a leaf of table_id %lld with ledger_seq %lld: the row "
				"was not sealed in this table", w->file, w->line, (long long) e->table_id,
				(long long) seq);
	if (memcmp(l->hash, leaf, LC_HASH_LEN) != 0)
		invalid("%s: %srow %lld does not match its leaf in block %lld: the row was changed",
				w->file, w->line, (long long) seq, (long long) l->height);
	l->seen = true;
	if (l->height > e->digest->height)
		e->rows_beyond++;
	else if (kind == 1)
		e->rows_in_digest++;
	else
		e->ends_in_digest++;
}

/* docs/format.md §14, streaming: memory grows with the table's leaves only. */
static int
verify_export(Reader *r, LcBuf *line, const char *file, const char *digest_path)
{
	Export		e;
	Digest		d;
	JsonValue  *header;
	Where		w = {file, "line 1: ", ""};
	char		where[64];
	int64_t		lineno = 1;
	bool		rows = false;
	bool		newline;
	size_t		i;
	size_t		table_len;
	const char *table;
	char		beyond[256] = "";
	char		ends[64] = "";
	char		earlier[256] = "";

	memset(&e, 0, sizeof(e));
	e.file = file;
	header = parse_json(file, "line 1: ", (char *) line->data, line->len);
	check_format(&w, header, EXPORT_FORMAT);
	e.origin = get_origin(&w, header, &e.origin_len);
	table = get_string(&w, header, "table", MAX_ORIGIN, &table_len);
	e.table = shown_dup(table, table_len);
	e.table_id = get_int(&w, header, "table_id", 0, UINT32_MAX);
	load_digest(digest_path, &d);
	e.digest = &d;

	check_digest(&d);
	if (!same_origin(d.origin, d.origin_len, e.origin, e.origin_len))
		invalid("the digest is of origin %s, the export of %s",
				shown(d.origin, d.origin_len), shown(e.origin, e.origin_len));

	/* The origin lives in line, which the next lines reuse. */
	{
		char	   *origin = xmalloc(e.origin_len + 1);

		memcpy(origin, e.origin, e.origin_len + 1);
		e.origin = origin;
	}
	json_free(header);

	while (read_line(r, line, EXPORT_LINE_LIMIT, "a line", &newline))
	{
		JsonValue  *obj;

		lineno++;
		snprintf(where, sizeof(where), "line %lld: ", (long long) lineno);
		w.line = where;
		if (line->len == 0)
			unusable("%s: %sempty line", file, where);
		obj = parse_json(file, where, (char *) line->data, line->len);
		if (json_get(obj, "block") != NULL)
		{
			if (rows)
				unusable("%s: %sa block line after row lines", file, where);
			export_block(&e, &w, obj);
		}
		else if (json_get(obj, "ledger_seq") != NULL)
		{
			if (!rows)
				export_blocks_done(&e);
			rows = true;
			export_row(&e, &w, obj);
		}
		else
			unusable("%s: %sneither a block line (\"block\") nor a row line (\"ledger_seq\")",
				  file, where);
		json_free(obj);
	}
	if (!rows)
		export_blocks_done(&e);

	/* Nothing left out: every leaf of the table has its row. */
	for (i = 0; i < e.nleaves; i++)
		if (!e.leaves[i].seen)
			invalid("%s: the row with ledger_seq %lld, sealed in block %lld, is missing from "
					"the export", file, (long long) e.leaves[i].seq,
					(long long) e.leaves[i].height);

	if (e.height > d.height)
		snprintf(beyond, sizeof(beyond), "; %lld more rows in blocks %lld-%lld match their "
				 "blocks, which extend the digest's chain but are beyond the digest",
				 (long long) e.rows_beyond, (long long) d.height + 1, (long long) e.height);
	if (e.ends_in_digest > 0)
		snprintf(ends, sizeof(ends), " and %lld end events", (long long) e.ends_in_digest);
	if (e.takeover)
		snprintf(earlier, sizeof(earlier), "; block 1 continues an earlier chain (its "
				 "prev_hash is %s), which this export does not cover: rows numbered below "
				 "%lld are not checked", hex_of(e.takeover_prev, LC_HASH_LEN),
				 (long long) e.takeover_first_seq);
	printf("valid: all %lld rows%s of %s (table_id %lld) sealed in blocks 1-%lld of %s are "
		   "in the export unchanged, the state at height %lld (digest %s)%s%s\n",
		   (long long) e.rows_in_digest, ends, e.table, (long long) e.table_id,
		   (long long) d.height, shown(e.origin, e.origin_len), (long long) d.height,
		   key_note(&d), earlier, beyond);
	free(e.leaves);
	return 0;
}

/* ------------------------------------------------------- certificate mode */

static const Member *
member_named(const char *name, size_t len)
{
	int			i;

	for (i = 0; i < nmembers; i++)
		if (strlen(members[i].name) == len && memcmp(members[i].name, name, len) == 0)
			return &members[i];
	return NULL;
}

/*
 * docs/format.md §18: the header hashes to block_hash and names origin and
 * height, the origin signed it, and a quorum of distinct members signed
 * ack_message(origin, height, block_hash).  With --member pins, every key
 * must be the pinned one and the quorum is at least ceil((n+f+1)/2) of
 * the n pinned members, f = floor((n-1)/3).
 */
static int
verify_certificate(const char *file, const JsonValue *root)
{
	Where		w = {file, "", ""};
	size_t		origin_len;
	const char *origin;
	int64_t		height;
	uint8_t		hash[LC_HASH_LEN];
	uint8_t		computed[LC_HASH_LEN];
	uint8_t		origin_sig[LC_SIG_LEN];
	uint8_t    *header;
	size_t		header_len;
	const char *h_origin;
	size_t		h_origin_len;
	int64_t		h_height;
	const uint8_t *h_key;
	int64_t		quorum;
	const JsonValue *acks;
	size_t		i;
	int64_t		valid = 0;
	char	   *origin_z;
	LcBuf		msg;
	const char **seen;

	check_format(&w, root, CERTIFICATE_FORMAT);
	origin = get_origin(&w, root, &origin_len);
	height = get_int(&w, root, "height", 1, INT64_MAX);
	get_hex_fixed(&w, root, "block_hash", hash, LC_HASH_LEN);
	header = get_hex_bytes(&w, root, "header", &header_len);
	get_hex_fixed(&w, root, "origin_signature", origin_sig, LC_SIG_LEN);
	quorum = get_int(&w, root, "quorum", 1, MAX_MEMBERS);
	acks = field(&w, root, "acks", JSON_ARRAY);

	if (!lc_header_fields(header, header_len, &h_origin, &h_origin_len, &h_height, &h_key))
		invalid("%s: \"header\" is not a block header", file);
	if (!lc_sha256(header, header_len, computed))
		unusable("SHA-256 failed");
	if (memcmp(computed, hash, LC_HASH_LEN) != 0)
		invalid("%s: the header does not hash to block_hash", file);
	if (h_origin_len != origin_len || memcmp(h_origin, origin, origin_len) != 0 || h_height != height)
		invalid("%s: the header is block %lld of %s, not block %lld of %s", file,
				(long long) h_height, shown(h_origin, h_origin_len), (long long) height,
				shown(origin, origin_len));
	if (!lc_signature_ok(hash, LC_HASH_LEN, origin_sig, h_key))
		invalid("%s: origin_signature is not the header key's signature of block_hash", file);
	if (nmembers > 0)
	{
		const Member *m = member_named(origin, origin_len);

		if (m == NULL)
			invalid("%s: origin %s is not one of the --member hospitals", file,
					shown(origin, origin_len));
		if (memcmp(m->key, h_key, LC_PUBKEY_LEN) != 0)
			invalid("%s: the block is signed with key %s, not %s's pinned key", file,
					hex_of(h_key, LC_PUBKEY_LEN), m->name);
		if (quorum < (nmembers + (nmembers - 1) / 3 + 2) / 2)
			invalid("%s: quorum %lld is below ceil((n+f+1)/2) = %d for the n = %d pinned hospitals", file,
					(long long) quorum, (nmembers + (nmembers - 1) / 3 + 2) / 2, nmembers);
	}

	origin_z = xmalloc(origin_len + 1);
	memcpy(origin_z, origin, origin_len);
	origin_z[origin_len] = '\0';
	lc_buf_init(&msg);
	lc_ack_message(&msg, origin_z, height, hash);
	seen = xmalloc(sizeof(char *) * (acks->count + 1));
	for (i = 0; i < acks->count; i++)
	{
		char		prefix[64];
		Where		aw = {file, "", prefix};
		size_t		acker_len;
		const char *acker;
		uint8_t		key[LC_PUBKEY_LEN];
		uint8_t		sig[LC_SIG_LEN];
		size_t		j;
		bool		dup = false;

		snprintf(prefix, sizeof(prefix), "acks[%zu].", i);
		if (acks->items[i].type != JSON_OBJECT)
			unusable("%s: acks[%zu] must be an object", file, i);
		acker = get_string(&aw, &acks->items[i], "acker", MAX_ORIGIN, &acker_len);
		get_hex_fixed(&aw, &acks->items[i], "public_key", key, LC_PUBKEY_LEN);
		get_hex_fixed(&aw, &acks->items[i], "signature", sig, LC_SIG_LEN);
		if (nmembers > 0)
		{
			const Member *m = member_named(acker, acker_len);

			if (m == NULL || memcmp(m->key, key, LC_PUBKEY_LEN) != 0)
				continue;		/* not a pinned member: does not count */
		}
		if (!lc_signature_ok(msg.data, msg.len, sig, key))
			continue;
		for (j = 0; j < (size_t) valid; j++)
			dup |= strlen(seen[j]) == acker_len && memcmp(seen[j], acker, acker_len) == 0;
		if (!dup)
			seen[valid++] = acker;
	}
	lc_buf_free(&msg);
	if (valid < quorum)
		invalid("%s: %lld valid acknowledgments by distinct %s, fewer than the quorum %lld",
				file, (long long) valid, nmembers > 0 ? "pinned hospitals" : "ackers",
				(long long) quorum);
	printf("valid: block %lld of %s (block_hash %s) is final: %lld of quorum %lld "
		   "acknowledgments verify%s\n", (long long) height, shown(origin, origin_len),
		   hex_of(hash, LC_HASH_LEN), (long long) valid, (long long) quorum,
		   nmembers > 0 ? ", by pinned hospitals" :
		   "; keys are those the certificate carries, pass --member NAME=HEX to pin them");
	free(seen);
	free(origin_z);
	free(header);
	return 0;
}

/* ------------------------------------------------------------------ main */

static void
usage(FILE *out)
{
	fputs("Usage:\n"
		  "  ehrledger-verify [--key HEX] DIGEST_FILE\n"
		  "  ehrledger-verify [--key HEX] PROOF_FILE DIGEST_FILE\n"
		  "  ehrledger-verify [--key HEX] CONSISTENCY_FILE OLD_DIGEST_FILE NEW_DIGEST_FILE\n"
		  "  ehrledger-verify [--key HEX] EXPORT_FILE DIGEST_FILE\n"
		  "  ehrledger-verify [--member NAME=HEX ...] CERTIFICATE_FILE\n"
		  "  ehrledger-verify --help\n"
		  "\n"
		  "Checks ehrledger digests, inclusion proofs, consistency proofs and table\n"
		  "exports (docs/format.md) without a database.  The kind of the first file is\n"
		  "taken from its \"format\" field.\n"
		  "\n"
		  "  --key HEX   the node's Ed25519 public key (64 hex digits) you trust; every\n"
		  "              digest must carry exactly this key.  Without it a digest is\n"
		  "              checked against the key it carries, and the output says so.\n"
		  "  --member NAME=HEX\n"
		  "              a hospital of the network and its public key; repeat for each.\n"
		  "              A certificate then counts only these hospitals' signatures.\n"
		  "\n"
		  "Exit status: 0 valid, 1 invalid, 2 unusable input or usage.\n", out);
}

static _Noreturn void
usage_error(const char *fmt,...)
{
	va_list		ap;

	fflush(stdout);
	fputs("error: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs("\nTry \"ehrledger-verify --help\".\n", stderr);
	exit(2);
}

static void
set_key(const char *hex)
{
	if (strlen(hex) != 2 * LC_PUBKEY_LEN || !lc_hex_decode(hex, strlen(hex), pinned_key))
		usage_error("--key must be %d hexadecimal digits", 2 * LC_PUBKEY_LEN);
	pinned_key_hex = hex;
}

int
main(int argc, char **argv)
{
	const char *files[3];
	int			nfiles = 0;
	bool		options = true;
	int			i;
	Reader	   *r;
	LcBuf		text;
	bool		newline;
	const char *file;
	JsonValue  *root;
	const char *format;
	const JsonValue *fv;

	lc_oom = on_oom;
	for (i = 1; i < argc; i++)
	{
		const char *a = argv[i];

		if (options && strcmp(a, "--help") == 0)
		{
			usage(stdout);
			return 0;
		}
		else if (options && strcmp(a, "--key") == 0)
		{
			if (i + 1 >= argc)
				usage_error("--key needs a value");
			set_key(argv[++i]);
		}
		else if (options && strncmp(a, "--key=", 6) == 0)
			set_key(a + 6);
		else if (options && (strcmp(a, "--member") == 0 || strncmp(a, "--member=", 9) == 0))
		{
			const char *spec = a[8] == '=' ? a + 9 : (i + 1 < argc ? argv[++i] : NULL);
			const char *eq = spec ? strrchr(spec, '=') : NULL;
			char	   *name;

			if (eq == NULL || eq == spec || strlen(eq + 1) != 2 * LC_PUBKEY_LEN)
				usage_error("--member needs NAME=HEX, HEX being 64 hexadecimal digits");
			if (nmembers == MAX_MEMBERS)
				usage_error("too many --member options");
			if (!lc_hex_decode(eq + 1, 2 * LC_PUBKEY_LEN, members[nmembers].key))
				usage_error("--member %s: the key is not hexadecimal", shown(spec, strlen(spec)));
			name = xmalloc(eq - spec + 1);
			memcpy(name, spec, eq - spec);
			name[eq - spec] = '\0';
			members[nmembers++].name = name;
		}
		else if (options && strcmp(a, "--") == 0)
			options = false;
		else if (options && a[0] == '-' && a[1] != '\0')
			usage_error("unknown option \"%s\"", shown(a, strlen(a)));
		else
		{
			if (nfiles == 3)
				usage_error("too many files");
			files[nfiles++] = a;
		}
	}
	if (nfiles == 0)
		usage_error("no file given");
	if (sodium_init() < 0)
		unusable("libsodium could not be initialised");

	/*
	 * The first file: an export is JSON Lines whose first line is the header;
	 * anything else is one JSON document.  Peek at the first line (on a copy,
	 * as parsing works in place) before reading the rest.
	 */
	file = shown_dup(files[0], strlen(files[0]));
	r = xmalloc(sizeof(Reader));
	reader_open(r, files[0]);
	lc_buf_init(&text);
	if (!read_line(r, &text, DOC_FILE_LIMIT, "the file", &newline))
		unusable("%s: empty file", file);
	if (text.len <= HEADER_PROBE_LIMIT)
	{
		char	   *copy = xmalloc(text.len);
		JsonOptions opts = {MAX_DEPTH, MAX_VALUES, "row"};
		JsonValue  *probe;
		char		err[64];
		bool		oom;

		memcpy(copy, text.data, text.len);
		if (json_parse(copy, text.len, &opts, &probe, err, sizeof(err), &oom))
		{
			const JsonValue *f = json_get(probe, "format");
			bool		is_export = f != NULL && f->type == JSON_STRING &&
				strcmp(f->str, EXPORT_FORMAT) == 0;

			json_free(probe);
			if (is_export)
			{
				free(copy);
				if (nfiles != 2)
					usage_error("an export is checked against one digest: "
								"ehrledger-verify [--key HEX] EXPORT_FILE DIGEST_FILE");
				return verify_export(r, &text, file, files[1]);
			}
		}
		else if (oom)
			on_oom();
		free(copy);
	}
	if (newline)
		lc_put_u8(&text, '\n');
	if (text.len > DOC_FILE_LIMIT)
		unusable("%s: larger than %zu bytes", file, DOC_FILE_LIMIT);
	read_rest(r, &text, DOC_FILE_LIMIT);
	reader_close(r);
	free(r);

	root = parse_json(file, "", (char *) text.data, text.len);
	fv = json_get(root, "format");
	if (fv == NULL)
		unusable("%s: field \"format\" is missing", file);
	if (fv->type != JSON_STRING)
		unusable("%s: field \"format\" must be a string", file);
	format = fv->str;

	if (strcmp(format, DIGEST_FORMAT) == 0)
	{
		if (nfiles != 1)
			usage_error("%s is a digest; check it alone: ehrledger-verify [--key HEX] "
						"DIGEST_FILE", file);
		return verify_digest(file, root);
	}
	if (strcmp(format, PROOF_FORMAT) == 0)
	{
		if (nfiles != 2)
			usage_error("%s is an inclusion proof: ehrledger-verify [--key HEX] "
						"PROOF_FILE DIGEST_FILE", file);
		return verify_proof(file, root, files[1]);
	}
	if (strcmp(format, CONSISTENCY_FORMAT) == 0)
	{
		if (nfiles != 3)
			usage_error("%s is a consistency proof: ehrledger-verify [--key HEX] "
						"CONSISTENCY_FILE OLD_DIGEST_FILE NEW_DIGEST_FILE", file);
		return verify_consistency(file, root, files[1], files[2]);
	}
	if (strcmp(format, CERTIFICATE_FORMAT) == 0)
	{
		if (nfiles != 1)
			usage_error("%s is a certificate; check it alone: ehrledger-verify "
						"[--member NAME=HEX ...] CERTIFICATE_FILE", file);
		return verify_certificate(file, root);
	}
	if (strcmp(format, EXPORT_FORMAT) == 0)
		unusable("%s: an export must be JSON Lines, its header alone on the first line", file);
	unusable("%s: unknown format \"%s\" (expected %s, %s, %s, %s or %s)", file,
		  shown(format, fv->len), DIGEST_FORMAT, PROOF_FORMAT, CONSISTENCY_FORMAT,
		  EXPORT_FORMAT, CERTIFICATE_FORMAT);
}
