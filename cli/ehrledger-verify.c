/*
 * ehrledger-verify.c
 *		Checks ehrledger digests, inclusion proofs, consistency proofs, table
 *		exports and certificates offline (docs/format.md §8-14, §18, §19).
 *
 *	ehrledger-verify [--key HEX] DIGEST_FILE
 *	ehrledger-verify [--key HEX] PROOF_FILE DIGEST_FILE
 *	ehrledger-verify [--key HEX] CONSISTENCY_FILE OLD_DIGEST_FILE NEW_DIGEST_FILE
 *	ehrledger-verify [--key HEX] EXPORT_FILE DIGEST_FILE
 *	ehrledger-verify [--member NAME=HEX ...] CERTIFICATE_FILE
 *
 * Exit status 0: valid (stdout says what was proven and shows the row as
 * sealed); 1: not valid ("invalid: ..." on stderr); 2: unusable input,
 * usage, or out of memory ("error: ...").  Every rule is in src/core, the
 * code the server's own checks (ehrledger.check_proof() and its kin) run:
 * this file only reads files and prints.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <sodium.h>

#include "core/check.h"
#include "core/ledger_core.h"

#define HEADER_PROBE_LIMIT	((size_t) 1 << 20)	/* an export's first line */

static uint8_t pinned_key[LC_PUBKEY_LEN];
static LcMember members[LC_MAX_MEMBERS];
static LcOptions options = {NULL, NULL, 0, false};

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
static _Noreturn void unusable(const char *fmt,...) __attribute__((format(printf, 1, 2)));
static _Noreturn void
unusable(const char *fmt,...)
{
	va_list		ap;

	va_start(ap, fmt);
	fail_with(2, "error: ", fmt, ap);
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

/* A file name safe to print: control characters escaped. */
static const char *
shown(const char *s)
{
	size_t		len = strlen(s);
	char	   *out = xmalloc(4 * len + 1);
	size_t		o = 0;
	size_t		i;

	for (i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) s[i];

		if (c < 0x20 || c == 0x7f || c == '\\')
			o += (size_t) sprintf(out + o, "\\x%02x", c);
		else
			out[o++] = (char) c;
	}
	out[o] = '\0';
	return out;
}

/* Prints a verdict and exits with it. */
static _Noreturn void
report(LcResult *r)
{
	if (r->status == LC_VALID)
	{
		fwrite(r->out.data, 1, r->out.len, stdout);
		if (fflush(stdout) != 0)
			unusable("cannot write the result: %s", strerror(errno));
		exit(0);
	}
	fflush(stdout);
	fprintf(stderr, "%s%s\n", r->status == LC_INVALID ? "invalid: " : "error: ", r->message);
	exit(r->status == LC_INVALID ? 1 : 2);
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
		unusable("%s: %s", shown(path), strerror(errno));
	if (fstat(fileno(r->f), &st) != 0)
		unusable("%s: %s", shown(path), strerror(errno));
	if (S_ISDIR(st.st_mode))
		unusable("%s: is a directory", shown(path));
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
			unusable("%s: read failed: %s", shown(r->path), strerror(errno));
		r->eof = true;
		return false;
	}
	r->pos = 0;
	r->end = n;
	return true;
}

static void
put(LcBuf *b, const void *data, size_t len)
{
	if (!lc_put(b, data, len))
		on_oom();
}

/*
 * Reads one line into b (without its newline).  Returns false at the end
 * of the file when nothing is left.  A line longer than limit is an error;
 * what names the input in that message.
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
			unusable("%s: %s is longer than %zu bytes", shown(r->path), what, limit);
		put(b, s, take);
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
			unusable("%s: larger than %zu bytes", shown(r->path), limit);
		put(b, r->chunk + r->pos, take);
		r->pos += take;
	}
}

/* A whole file as a document. */
static LcDoc
load_doc(const char *path, size_t limit)
{
	Reader	   *r = xmalloc(sizeof(Reader));
	LcBuf		text;
	LcDoc		doc;

	reader_open(r, path);
	lc_buf_init(&text);
	read_rest(r, &text, limit);
	reader_close(r);
	free(r);
	if (text.len == 0)
		unusable("%s: empty file", shown(path));
	if (lc_buf_cstr(&text) == NULL)
		on_oom();
	doc.name = path;
	doc.text = (char *) text.data;
	doc.len = text.len;
	return doc;
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
		  "Checks ehrledger digests, inclusion proofs, consistency proofs, table\n"
		  "exports and certificates (docs/format.md) without a database.  The kind of\n"
		  "the first file is taken from its \"format\" field.  A proof's row is shown as\n"
		  "sealed, decoded from its encoding.\n"
		  "\n"
		  "  --key HEX   the node's Ed25519 public key (64 hex digits) you trust; every\n"
		  "              digest must carry exactly this key.  Without it a digest is\n"
		  "              checked against the key it carries, and the output says so.\n"
		  "  --member NAME=HEX\n"
		  "              a hospital of the network and its public key; repeat for each.\n"
		  "              Certificates (alone, or in digests) then count only these\n"
		  "              hospitals' signatures.\n"
		  "\n"
		  "Exit status: 0 valid, 1 invalid, 2 unusable input or usage.\n", out);
}

static _Noreturn void usage_error(const char *fmt,...) __attribute__((format(printf, 1, 2)));
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
	options.trusted_key = pinned_key;
}

static void
add_member(const char *spec)
{
	const char *eq = spec ? strrchr(spec, '=') : NULL;
	char	   *name;
	size_t		i;

	if (eq == NULL || eq == spec || strlen(eq + 1) != 2 * LC_PUBKEY_LEN)
		usage_error("--member needs NAME=HEX, HEX being 64 hexadecimal digits");
	if (options.nmembers == LC_MAX_MEMBERS)
		usage_error("too many --member options");
	if (!lc_hex_decode(eq + 1, 2 * LC_PUBKEY_LEN, members[options.nmembers].key))
		usage_error("--member %s: the key is not hexadecimal", shown(spec));
	name = xmalloc((size_t) (eq - spec) + 1);
	memcpy(name, spec, (size_t) (eq - spec));
	name[eq - spec] = '\0';
	for (i = 0; i < options.nmembers; i++)
		if (strcmp(members[i].name, name) == 0)
			usage_error("--member %s is given twice", shown(name));
	members[options.nmembers++].name = name;
	options.members = members;
}

/* An export, line by line: memory grows with the table's leaves only. */
static _Noreturn void
check_export(Reader *r, LcBuf *first, const char *file, const char *digest_path)
{
	LcDoc		header = {file, (char *) first->data, first->len};
	LcDoc		digest = load_doc(digest_path, LC_DIGEST_LIMIT);
	LcResult	res;
	LcExport   *e;
	LcBuf		line;
	bool		newline;

	lc_result_init(&res);
	e = lc_export_begin(file, &header, &digest, &options, &res);
	if (e == NULL || res.status != LC_VALID)
		report(&res);
	lc_buf_init(&line);
	while (read_line(r, &line, LC_EXPORT_LINE_LIMIT, "a line", &newline))
	{
		lc_export_line(e, (char *) line.data, line.len, &res);
		if (res.status != LC_VALID)
			report(&res);
	}
	lc_export_end(e, &res);
	report(&res);
}

int
main(int argc, char **argv)
{
	const char *files[3];
	int			nfiles = 0;
	bool		opts = true;
	int			i;
	Reader	   *r;
	LcBuf		text;
	bool		newline;
	const char *file;
	char		format[512];
	int			rc;
	LcDoc		doc;
	LcResult	res;

	for (i = 1; i < argc; i++)
	{
		const char *a = argv[i];

		if (opts && strcmp(a, "--help") == 0)
		{
			usage(stdout);
			return 0;
		}
		else if (opts && strcmp(a, "--key") == 0)
		{
			if (i + 1 >= argc)
				usage_error("--key needs a value");
			set_key(argv[++i]);
		}
		else if (opts && strncmp(a, "--key=", 6) == 0)
			set_key(a + 6);
		else if (opts && strcmp(a, "--member") == 0)
			add_member(i + 1 < argc ? argv[++i] : NULL);
		else if (opts && strncmp(a, "--member=", 9) == 0)
			add_member(a + 9);
		else if (opts && strcmp(a, "--") == 0)
			opts = false;
		else if (opts && a[0] == '-' && a[1] != '\0')
			usage_error("unknown option \"%s\"", shown(a));
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
	 * The first file: an export is JSON Lines whose first line is the
	 * header; anything else is one JSON document.
	 */
	file = shown(files[0]);
	r = xmalloc(sizeof(Reader));
	reader_open(r, files[0]);
	lc_buf_init(&text);
	if (!read_line(r, &text, LC_DOC_LIMIT, "the file", &newline))
		unusable("%s: empty file", file);
	if (text.len <= HEADER_PROBE_LIMIT &&
		lc_doc_format((const char *) text.data, text.len, format, sizeof(format)) == LC_OK &&
		strcmp(format, LC_EXPORT_FORMAT) == 0)
	{
		if (nfiles != 2)
			usage_error("an export is checked against one digest: "
						"ehrledger-verify [--key HEX] EXPORT_FILE DIGEST_FILE");
		check_export(r, &text, files[0], files[1]);
	}
	if (newline)
		put(&text, "\n", 1);
	read_rest(r, &text, LC_DOC_LIMIT);
	reader_close(r);
	if (lc_buf_cstr(&text) == NULL)
		on_oom();
	doc.name = files[0];
	doc.text = (char *) text.data;
	doc.len = text.len;

	lc_result_init(&res);
	rc = lc_doc_format(doc.text, doc.len, format, sizeof(format));
	if (rc == LC_ERR_NOMEM)
		on_oom();
	if (rc == LC_DOC_NOT_JSON)
		unusable("%s: not valid JSON: %s", file, format);
	if (rc != LC_OK)
		unusable("%s: %s", file, format);
	if (strcmp(format, LC_DIGEST_FORMAT) == 0)
	{
		if (nfiles != 1)
			usage_error("%s is a digest; check it alone: ehrledger-verify [--key HEX] "
						"DIGEST_FILE", file);
		lc_check_digest(&doc, &options, &res);
	}
	else if (strcmp(format, LC_PROOF_FORMAT) == 0)
	{
		LcDoc		digest;

		if (nfiles != 2)
			usage_error("%s is an inclusion proof: ehrledger-verify [--key HEX] "
						"PROOF_FILE DIGEST_FILE", file);
		digest = load_doc(files[1], LC_DIGEST_LIMIT);
		lc_check_proof(&doc, &digest, &options, &res);
	}
	else if (strcmp(format, LC_CONSISTENCY_FORMAT) == 0)
	{
		LcDoc		old_digest;
		LcDoc		new_digest;

		if (nfiles != 3)
			usage_error("%s is a consistency proof: ehrledger-verify [--key HEX] "
						"CONSISTENCY_FILE OLD_DIGEST_FILE NEW_DIGEST_FILE", file);
		old_digest = load_doc(files[1], LC_DIGEST_LIMIT);
		new_digest = load_doc(files[2], LC_DIGEST_LIMIT);
		lc_check_consistency(&doc, &old_digest, &new_digest, &options, &res);
	}
	else if (strcmp(format, LC_CERTIFICATE_FORMAT) == 0)
	{
		if (nfiles != 1)
			usage_error("%s is a certificate; check it alone: ehrledger-verify "
						"[--member NAME=HEX ...] CERTIFICATE_FILE", file);
		lc_check_certificate(&doc, &options, &res);
	}
	else if (strcmp(format, LC_EXPORT_FORMAT) == 0)
		unusable("%s: an export must be JSON Lines, its header alone on the first line", file);
	else
		unusable("%s: unknown format \"%s\" (expected %s, %s, %s, %s or %s)", file,
				 format, LC_DIGEST_FORMAT, LC_PROOF_FORMAT, LC_CONSISTENCY_FORMAT,
				 LC_EXPORT_FORMAT, LC_CERTIFICATE_FORMAT);
	report(&res);
}
