/*
 * json.c
 *		A small, strict JSON parser (RFC 8259) for the ledger's documents.
 *
 * Recursive descent over a buffer of known length (embedded NUL bytes are
 * never taken as the end), with the recursion bounded by max_depth.  Every
 * allocation is checked; on any failure everything built so far is freed.
 *
 * Next: check.c and decode.c read the tree it builds.
 */
#include "json.h"

#include "ledger_core.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct Parser
{
	char	   *start;
	char	   *p;
	char	   *end;
	const JsonOptions *opts;
	size_t		values;
	int			row_depth;		/* depth at which the row_key member began, or 0 */
	char	   *err;
	size_t		errlen;
	bool		failed;
	bool		oom;
} Parser;

static bool parse_value(Parser *ps, JsonValue *out, int depth);
static bool fail(Parser *ps, const char *fmt,...) __attribute__((format(printf, 2, 3)));

static bool
fail(Parser *ps, const char *fmt,...)
{
	va_list		ap;
	int			n;

	if (ps->failed)
		return false;
	ps->failed = true;
	n = snprintf(ps->err, ps->errlen, "at byte %zu: ", (size_t) (ps->p - ps->start));
	if (n < 0 || (size_t) n >= ps->errlen)
		return false;
	va_start(ap, fmt);
	vsnprintf(ps->err + n, ps->errlen - (size_t) n, fmt, ap);
	va_end(ap);
	return false;
}

static bool
out_of_memory(Parser *ps)
{
	ps->oom = true;
	return fail(ps, "out of memory");
}

static void
skip_ws(Parser *ps)
{
	while (ps->p < ps->end &&
		   (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r'))
		ps->p++;
}

static void
free_children(JsonValue *v)
{
	size_t		i;

	if (v->items == NULL)
		return;
	for (i = 0; i < v->count; i++)
		free_children(&v->items[i]);
	free(v->items);
	v->items = NULL;
	v->count = 0;
}

void
json_free(JsonValue *v)
{
	if (v == NULL)
		return;
	free_children(v);
	free(v);
}


/* Four hex digits after "\u"; p points at the first. */
static bool
read_u4(Parser *ps, unsigned *out)
{
	unsigned	v = 0;
	int			i;

	if (ps->end - ps->p < 4)
		return fail(ps, "truncated \\u escape");
	for (i = 0; i < 4; i++)
	{
		int			d = lc_hex_digit(ps->p[i]);

		if (d < 0)
			return fail(ps, "bad \\u escape");
		v = v << 4 | (unsigned) d;
	}
	ps->p += 4;
	*out = v;
	return true;
}

/* Length of the valid UTF-8 sequence at p (at least 2 bytes), or 0. */
static size_t
utf8_sequence(const unsigned char *p, const unsigned char *end)
{
	unsigned char c = p[0];
	size_t		n;
	unsigned char lo = 0x80;
	unsigned char hi = 0xBF;
	size_t		i;

	if (c >= 0xC2 && c <= 0xDF)
		n = 2;
	else if (c >= 0xE0 && c <= 0xEF)
	{
		n = 3;
		if (c == 0xE0)
			lo = 0xA0;
		else if (c == 0xED)
			hi = 0x9F;			/* no UTF-16 surrogates */
	}
	else if (c >= 0xF0 && c <= 0xF4)
	{
		n = 4;
		if (c == 0xF0)
			lo = 0x90;
		else if (c == 0xF4)
			hi = 0x8F;			/* nothing above U+10FFFF */
	}
	else
		return 0;
	if ((size_t) (end - p) < n)
		return 0;
	if (p[1] < lo || p[1] > hi)
		return 0;
	for (i = 2; i < n; i++)
		if (p[i] < 0x80 || p[i] > 0xBF)
			return 0;
	return n;
}

/*
 * A string, unescaped in place: the result is never longer than its JSON
 * form, so writing trails reading, and the terminating NUL lands at the
 * latest on the closing quote.
 */
static bool
parse_string(Parser *ps, const char **str, size_t *len)
{
	char	   *w;
	char	   *s;

	ps->p++;					/* the opening quote */
	s = w = ps->p;
	for (;;)
	{
		unsigned char c;
		const char *run = ps->p;

		/* A run of plain ASCII, most of every document: moved only after an escape. */
		while (ps->p < ps->end)
		{
			c = (unsigned char) *ps->p;
			if (c < 0x20 || c == '"' || c == '\\' || c >= 0x80)
				break;
			ps->p++;
		}
		if (w != run)
			memmove(w, run, (size_t) (ps->p - run));
		w += ps->p - run;

		if (ps->p >= ps->end)
			return fail(ps, "unterminated string");
		c = (unsigned char) *ps->p;
		if (c == '"')
		{
			*w = '\0';
			ps->p++;
			*str = s;
			*len = (size_t) (w - s);
			return true;
		}
		if (c < 0x20)
			return fail(ps, "control character in string");
		if (c == '\\')
		{
			unsigned	cp;

			if (ps->end - ps->p < 2)
				return fail(ps, "unterminated string");
			ps->p++;
			switch (*ps->p++)
			{
				case '"':
					*w++ = '"';
					continue;
				case '\\':
					*w++ = '\\';
					continue;
				case '/':
					*w++ = '/';
					continue;
				case 'b':
					*w++ = '\b';
					continue;
				case 'f':
					*w++ = '\f';
					continue;
				case 'n':
					*w++ = '\n';
					continue;
				case 'r':
					*w++ = '\r';
					continue;
				case 't':
					*w++ = '\t';
					continue;
				case 'u':
					break;
				default:
					ps->p--;
					return fail(ps, "bad escape in string");
			}
			if (!read_u4(ps, &cp))
				return false;
			if (cp >= 0xDC00 && cp <= 0xDFFF)
				return fail(ps, "lone low surrogate in string");
			if (cp >= 0xD800 && cp <= 0xDBFF)
			{
				unsigned	low;

				if (ps->end - ps->p < 2 || ps->p[0] != '\\' || ps->p[1] != 'u')
					return fail(ps, "lone high surrogate in string");
				ps->p += 2;
				if (!read_u4(ps, &low))
					return false;
				if (low < 0xDC00 || low > 0xDFFF)
					return fail(ps, "lone high surrogate in string");
				cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
			}
			if (cp == 0)
				return fail(ps, "\\u0000 is not allowed in strings");
			if (cp < 0x80)
				*w++ = (char) cp;
			else if (cp < 0x800)
			{
				*w++ = (char) (0xC0 | cp >> 6);
				*w++ = (char) (0x80 | (cp & 0x3F));
			}
			else if (cp < 0x10000)
			{
				*w++ = (char) (0xE0 | cp >> 12);
				*w++ = (char) (0x80 | (cp >> 6 & 0x3F));
				*w++ = (char) (0x80 | (cp & 0x3F));
			}
			else
			{
				*w++ = (char) (0xF0 | cp >> 18);
				*w++ = (char) (0x80 | (cp >> 12 & 0x3F));
				*w++ = (char) (0x80 | (cp >> 6 & 0x3F));
				*w++ = (char) (0x80 | (cp & 0x3F));
			}
			continue;
		}
		if (c < 0x80)
		{
			*w++ = (char) c;
			ps->p++;
			continue;
		}
		{
			size_t		n = utf8_sequence((const unsigned char *) ps->p,
										  (const unsigned char *) ps->end);

			if (n == 0)
				return fail(ps, "invalid UTF-8 in string");
			memmove(w, ps->p, n);
			w += n;
			ps->p += n;
		}
	}
}

static bool
is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static bool
parse_number(Parser *ps, JsonValue *out)
{
	char	   *s = ps->p;

	if (ps->p < ps->end && *ps->p == '-')
		ps->p++;
	if (ps->p >= ps->end || !is_digit(*ps->p))
		return fail(ps, "bad number");
	if (*ps->p == '0')
		ps->p++;
	else
		while (ps->p < ps->end && is_digit(*ps->p))
			ps->p++;
	if (ps->p < ps->end && *ps->p == '.')
	{
		ps->p++;
		if (ps->p >= ps->end || !is_digit(*ps->p))
			return fail(ps, "bad number");
		while (ps->p < ps->end && is_digit(*ps->p))
			ps->p++;
	}
	if (ps->p < ps->end && (*ps->p == 'e' || *ps->p == 'E'))
	{
		ps->p++;
		if (ps->p < ps->end && (*ps->p == '+' || *ps->p == '-'))
			ps->p++;
		if (ps->p >= ps->end || !is_digit(*ps->p))
			return fail(ps, "bad number");
		while (ps->p < ps->end && is_digit(*ps->p))
			ps->p++;
	}
	if (out != NULL)
	{
		out->type = JSON_NUMBER;
		out->str = s;
		out->len = (size_t) (ps->p - s);
	}
	return true;
}

static bool
parse_literal(Parser *ps, const char *word, JsonType type, JsonValue *out)
{
	size_t		n = strlen(word);

	if ((size_t) (ps->end - ps->p) < n || memcmp(ps->p, word, n) != 0)
		return fail(ps, "unexpected character");
	ps->p += n;
	if (out != NULL)
		out->type = type;
	return true;
}

static int
compare_keys(const void *a, const void *b)
{
	const JsonValue *x = *(const JsonValue *const *) a;
	const JsonValue *y = *(const JsonValue *const *) b;
	size_t		n = x->key_len < y->key_len ? x->key_len : y->key_len;
	int			c = memcmp(x->key, y->key, n);

	if (c != 0)
		return c;
	return x->key_len < y->key_len ? -1 : x->key_len > y->key_len;
}

static bool
keys_equal(const JsonValue *x, const JsonValue *y)
{
	return x->key_len == y->key_len && memcmp(x->key, y->key, x->key_len) == 0;
}

/* Duplicate keys make a document mean different things to different readers. */
static bool
check_duplicates(Parser *ps, const JsonValue *obj)
{
	size_t		i;
	size_t		j;

	if (obj->count <= 16)
	{
		for (i = 1; i < obj->count; i++)
			for (j = 0; j < i; j++)
				if (keys_equal(&obj->items[i], &obj->items[j]))
					return fail(ps, "duplicate key \"%.64s\"", obj->items[i].key);
		return true;
	}
	else
	{
		const JsonValue **sorted = malloc(obj->count * sizeof(*sorted));

		if (sorted == NULL)
			return out_of_memory(ps);
		for (i = 0; i < obj->count; i++)
			sorted[i] = &obj->items[i];
		qsort(sorted, obj->count, sizeof(*sorted), compare_keys);
		for (i = 1; i < obj->count; i++)
			if (keys_equal(sorted[i], sorted[i - 1]))
			{
				const char *key = sorted[i]->key;

				free(sorted);
				return fail(ps, "duplicate key \"%.64s\"", key);
			}
		free(sorted);
		return true;
	}
}

/* Room for one more child of a kept container. */
static JsonValue *
new_child(Parser *ps, JsonValue *parent, size_t *cap)
{
	JsonValue  *child;

	if (ps->row_depth == 0 && ps->values >= ps->opts->max_values)
	{
		fail(ps, "more than %zu JSON values", ps->opts->max_values);
		return NULL;
	}
	if (parent->count == *cap)
	{
		size_t		grown = *cap ? *cap * 2 : 8;
		JsonValue  *items;

		if (grown > SIZE_MAX / sizeof(JsonValue))
		{
			out_of_memory(ps);
			return NULL;
		}
		items = realloc(parent->items, grown * sizeof(JsonValue));
		if (items == NULL)
		{
			out_of_memory(ps);
			return NULL;
		}
		parent->items = items;
		*cap = grown;
	}
	if (ps->row_depth == 0)
		ps->values++;
	child = &parent->items[parent->count++];
	memset(child, 0, sizeof(*child));
	return child;
}

/* An object key and its ':'; ps->p is at the key's opening quote. */
static bool
parse_key(Parser *ps, const char **key, size_t *key_len)
{
	if (ps->p >= ps->end || *ps->p != '"')
		return fail(ps, "expected a string as object key");
	if (!parse_string(ps, key, key_len))
		return false;
	skip_ws(ps);
	if (ps->p >= ps->end || *ps->p != ':')
		return fail(ps, "expected ':' after object key");
	ps->p++;
	return true;
}

/* An object or array, kept; depth counts it. */
static bool
parse_container(Parser *ps, JsonValue *out, int depth, bool object)
{
	char		close = object ? '}' : ']';
	size_t		cap = 0;

	if (ps->row_depth > 0 ? depth - ps->row_depth > JSON_ROW_MAX_DEPTH
		: depth > ps->opts->max_depth)
		return fail(ps, "nested deeper than %d levels",
					ps->row_depth > 0 ? JSON_ROW_MAX_DEPTH : ps->opts->max_depth);
	ps->p++;					/* the opening bracket */
	out->type = object ? JSON_OBJECT : JSON_ARRAY;
	out->items = NULL;
	out->count = 0;
	skip_ws(ps);
	if (ps->p < ps->end && *ps->p == close)
	{
		ps->p++;
		return true;
	}
	for (;;)
	{
		JsonValue  *child;
		const char *key = NULL;
		size_t		key_len = 0;

		skip_ws(ps);
		if (object)
		{
			if (!parse_key(ps, &key, &key_len))
				return false;
			skip_ws(ps);
		}
		child = new_child(ps, out, &cap);
		if (child == NULL)
			return false;
		child->key = key;
		child->key_len = key_len;
		if (object && depth == 1 && ps->opts->row_key != NULL &&
			key_len == strlen(ps->opts->row_key) &&
			memcmp(key, ps->opts->row_key, key_len) == 0)
		{
			bool		ok;

			ps->row_depth = depth;
			ok = parse_value(ps, child, depth);
			ps->row_depth = 0;
			if (!ok)
				return false;
		}
		else if (!parse_value(ps, child, depth))
			return false;
		skip_ws(ps);
		if (ps->p >= ps->end)
			return fail(ps, "unexpected end of input");
		if (*ps->p == ',')
		{
			ps->p++;
			continue;
		}
		if (*ps->p == close)
		{
			ps->p++;
			break;
		}
		return fail(ps, object ? "expected ',' or '}'" : "expected ',' or ']'");
	}
	if (object && !ps->opts->allow_duplicates)
		return check_duplicates(ps, out);
	return true;
}

/* One value at p, kept in out; depth is the number of containers around it. */
static bool
parse_value(Parser *ps, JsonValue *out, int depth)
{
	if (ps->p >= ps->end)
		return fail(ps, "unexpected end of input");
	switch (*ps->p)
	{
		case '{':
		case '[':
			if (parse_container(ps, out, depth + 1, *ps->p == '{'))
				return true;
			free_children(out);
			return false;
		case '"':
			out->type = JSON_STRING;
			return parse_string(ps, &out->str, &out->len);
		case 't':
			return parse_literal(ps, "true", JSON_TRUE, out);
		case 'f':
			return parse_literal(ps, "false", JSON_FALSE, out);
		case 'n':
			return parse_literal(ps, "null", JSON_NULL, out);
		default:
			if (*ps->p == '-' || is_digit(*ps->p))
				return parse_number(ps, out);
			return fail(ps, "unexpected character");
	}
}

bool
json_parse(char *text, size_t len, const JsonOptions *opts, JsonValue **out,
		   char *err, size_t errlen, bool *oom)
{
	Parser		ps;
	JsonValue  *root;

	*out = NULL;
	*oom = false;
	if (errlen > 0)
		err[0] = '\0';
	memset(&ps, 0, sizeof(ps));
	ps.start = ps.p = text;
	ps.end = text + len;
	ps.opts = opts;
	ps.err = err;
	ps.errlen = errlen;

	skip_ws(&ps);
	if (ps.p >= ps.end)
	{
		fail(&ps, "no JSON value (empty input)");
		return false;
	}
	root = calloc(1, sizeof(JsonValue));
	if (root == NULL)
	{
		out_of_memory(&ps);
		*oom = true;
		return false;
	}
	ps.values = 1;
	if (!parse_value(&ps, root, 0))
	{
		json_free(root);
		*oom = ps.oom;
		return false;
	}
	skip_ws(&ps);
	if (ps.p < ps.end)
	{
		fail(&ps, "trailing characters after the JSON value");
		json_free(root);
		return false;
	}
	*out = root;
	return true;
}

const JsonValue *
json_get_n(const JsonValue *obj, const char *key, size_t key_len)
{
	size_t		i;

	if (obj == NULL || obj->type != JSON_OBJECT)
		return NULL;
	for (i = obj->count; i > 0; i--)
		if (obj->items[i - 1].key_len == key_len &&
			memcmp(obj->items[i - 1].key, key, key_len) == 0)
			return &obj->items[i - 1];
	return NULL;
}

const JsonValue *
json_get(const JsonValue *obj, const char *key)
{
	return json_get_n(obj, key, strlen(key));
}

int
json_int(const JsonValue *v, int64_t min, int64_t max, int64_t *out)
{
	const char *s;
	size_t		n;
	size_t		i = 0;
	bool		negative = false;
	uint64_t	mag = 0;
	uint64_t	limit;

	if (v == NULL || v->type != JSON_NUMBER || v->len == 0)
		return -1;
	s = v->str;
	n = v->len;
	if (s[0] == '-')
	{
		negative = true;
		i = 1;
	}
	if (i >= n)
		return -1;
	for (; i < n; i++)
		if (!is_digit(s[i]))
			return -1;			/* a fraction or an exponent */
	limit = negative ? (uint64_t) INT64_MAX + 1 : (uint64_t) INT64_MAX;
	for (i = negative ? 1 : 0; i < n; i++)
	{
		unsigned	d = (unsigned) (s[i] - '0');

		if (mag > (limit - d) / 10)
			return -2;
		mag = mag * 10 + d;
	}
	if (negative)
	{
		int64_t		r = mag == (uint64_t) INT64_MAX + 1 ? INT64_MIN : -(int64_t) mag;

		if (r < min || r > max)
			return -2;
		*out = r;
	}
	else
	{
		if ((int64_t) mag < min || (int64_t) mag > max)
			return -2;
		*out = (int64_t) mag;
	}
	return 0;
}

const char *
json_type_name(JsonType t)
{
	switch (t)
	{
		case JSON_NULL:
			return "null";
		case JSON_FALSE:
		case JSON_TRUE:
			return "a boolean";
		case JSON_NUMBER:
			return "a number";
		case JSON_STRING:
			return "a string";
		case JSON_ARRAY:
			return "an array";
		case JSON_OBJECT:
			return "an object";
	}
	return "?";
}
