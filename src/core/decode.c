/*
 * decode.c
 *		Canonical encodings read back into columns and values, shown as
 *		PostgreSQL's to_jsonb() shows them, and compared with the JSON a
 *		proof or an export carries for people (docs/format.md §1-5, §19).
 *
 * Everything here reads bytes a verifier was handed: every length is
 * checked before use, recursion is bounded, and a value that is not a
 * value of its type is shown as hex, never trusted.
 *
 * Next: check.c compares what it decoded with the JSON a document carries;
 * ehrledger-verify prints it.
 */
#include "decode.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Nesting of arrays in arrays and of jsonb containers, as in JSON rows. */
#define MAX_NESTING JSON_ROW_MAX_DEPTH

/* Days and microseconds between 1970-01-01 and PostgreSQL's epoch 2000-01-01. */
#define PG_EPOCH_DAYS	10957
#define PG_EPOCH_US		((int64_t) PG_EPOCH_DAYS * 86400 * 1000000)

/* numeric's sign word (docs/format.md §2) */
#define NUMERIC_POS		0x0000
#define NUMERIC_NEG		0x4000
#define NUMERIC_NAN		0xC000
#define NUMERIC_PINF	0xD000
#define NUMERIC_NINF	0xF000

/* Tags of the canonical jsonb encoding (docs/format.md §3). */
#define JB_NULL		0x00
#define JB_FALSE	0x01
#define JB_TRUE		0x02
#define JB_STRING	0x03
#define JB_NUMERIC	0x04
#define JB_OBJECT	0x05
#define JB_ARRAY	0x06

static const char *const codec_names[] = {
	[LC_CODEC_HEX] = "hex",
	[LC_CODEC_TEXT] = "text",
	[LC_CODEC_BOOL] = "bool",
	[LC_CODEC_INT2] = "int2",
	[LC_CODEC_INT4] = "int4",
	[LC_CODEC_INT8] = "int8",
	[LC_CODEC_NUMERIC] = "numeric",
	[LC_CODEC_FLOAT4] = "float4",
	[LC_CODEC_FLOAT8] = "float8",
	[LC_CODEC_DATE] = "date",
	[LC_CODEC_TIME] = "time",
	[LC_CODEC_TIMESTAMP] = "timestamp",
	[LC_CODEC_TIMESTAMPTZ] = "timestamptz",
	[LC_CODEC_UUID] = "uuid",
	[LC_CODEC_BYTEA] = "bytea",
	[LC_CODEC_JSON] = "json",
	[LC_CODEC_JSONB] = "jsonb",
	[LC_CODEC_OID] = "oid",
};

const char *
lc_codec_name(LcCodec c)
{
	if ((size_t) c >= sizeof(codec_names) / sizeof(codec_names[0]))
		return "hex";
	return codec_names[c];
}

bool
lc_codec_parse(const char *s, size_t len, LcCodec *codec, bool *array)
{
	size_t		i;

	*array = len > 2 && s[len - 2] == '[' && s[len - 1] == ']';
	if (*array)
		len -= 2;
	for (i = 0; i < sizeof(codec_names) / sizeof(codec_names[0]); i++)
		if (strlen(codec_names[i]) == len && memcmp(codec_names[i], s, len) == 0)
		{
			*codec = (LcCodec) i;
			return !(*array && *codec == LC_CODEC_HEX);
		}
	return false;
}

/* ------------------------------------------------------------ encodings */

const char *
lc_encoding_header_problem(const uint8_t *enc, size_t len, bool allow_ended, uint32_t table_id,
						   int64_t seq)
{
	if (len < LC_ENC_HEADER_LEN || (enc[0] != 1 && enc[0] != 2) ||
		(enc[0] == 2 && len < LC_ENC_HEADER_LEN + LC_SALT_LEN))
		return "version";
	if (enc[1] != LC_KIND_ROW && !(allow_ended && enc[1] == LC_KIND_ENDED))
		return "kind";
	if (lc_get_u32(enc + 2) != table_id)
		return "table_id";
	if (lc_get_u64(enc + 6) != (uint64_t) seq)
		return "ledger_seq";
	return NULL;
}

int
lc_encoding_parse(const uint8_t *enc, size_t len, LcEncoding *out, char *err, size_t errlen)
{
	size_t		pos;
	size_t		n;
	size_t		i;

	memset(out, 0, sizeof(*out));
	if (len < LC_ENC_HEADER_LEN)
	{
		snprintf(err, errlen, "it is %zu bytes long, shorter than its 14-byte header", len);
		return LC_ERR_MALFORMED;
	}
	if (enc[0] != 1 && enc[0] != 2)
	{
		snprintf(err, errlen, "its version is %d, neither 1 nor 2", enc[0]);
		return LC_ERR_MALFORMED;
	}
	out->format = enc[0];
	out->kind = enc[1];
	out->table_id = lc_get_u32(enc + 2);
	out->seq = (int64_t) lc_get_u64(enc + 6);
	pos = LC_ENC_HEADER_LEN;
	if (out->format == 2)
	{
		if (len < pos + LC_SALT_LEN)
		{
			snprintf(err, errlen, "its salt is truncated");
			return LC_ERR_MALFORMED;
		}
		out->salt = enc + pos;
		pos += LC_SALT_LEN;
	}
	if (out->kind == LC_KIND_ENDED)
	{
		if (len < pos + 8 + 1 + 8 + 2)
		{
			snprintf(err, errlen, "its end event is truncated");
			return LC_ERR_MALFORMED;
		}
		out->version_seq = (int64_t) lc_get_u64(enc + pos);
		out->op = enc[pos + 8];
		out->ended_at_us = (int64_t) lc_get_u64(enc + pos + 9);
		n = lc_get_u16(enc + pos + 17);
		pos += 19;
		if (len - pos != n)
		{
			snprintf(err, errlen, "its role is %zu bytes, not the %zu it announces", len - pos, n);
			return LC_ERR_MALFORMED;
		}
		if (out->op != LC_OP_UPDATE && out->op != LC_OP_DELETE)
		{
			snprintf(err, errlen, "its operation is %d, neither 1 (update) nor 2 (delete)", out->op);
			return LC_ERR_MALFORMED;
		}
		out->role = (const char *) enc + pos;
		out->role_len = n;
		return LC_OK;
	}
	if (out->kind != LC_KIND_ROW)
	{
		snprintf(err, errlen, "its kind is %d, neither 1 (a row) nor 2 (an end event)", out->kind);
		return LC_ERR_MALFORMED;
	}
	if (len < pos + 2)
	{
		snprintf(err, errlen, "it has no column count");
		return LC_ERR_MALFORMED;
	}
	n = lc_get_u16(enc + pos);
	pos += 2;
	out->fields = calloc(n ? n : 1, sizeof(LcField));
	if (out->fields == NULL)
	{
		lc_error = LC_ERR_NOMEM;
		return LC_ERR_NOMEM;
	}
	for (i = 0; i < n; i++)
	{
		LcField    *f = &out->fields[i];
		size_t		j;

		if (len - pos < 2 || len - pos - 2 < lc_get_u16(enc + pos))
			goto truncated;
		f->name_len = lc_get_u16(enc + pos);
		f->name = (const char *) enc + pos + 2;
		pos += 2 + f->name_len;
		if (len - pos < 4 || len - pos - 4 < lc_get_u32(enc + pos))
			goto truncated;
		f->value_len = lc_get_u32(enc + pos);
		f->value = enc + pos + 4;
		pos += 4 + f->value_len;
		for (j = 0; j < i; j++)
			if (out->fields[j].name_len == f->name_len &&
				memcmp(out->fields[j].name, f->name, f->name_len) == 0)
			{
				snprintf(err, errlen, "column \"%.*s\" appears twice", (int) (f->name_len > 64 ? 64 : f->name_len), f->name);
				lc_encoding_free(out);
				return LC_ERR_MALFORMED;
			}
		out->nfields = i + 1;
	}
	if (pos != len)
	{
		snprintf(err, errlen, "%zu bytes follow its last column", len - pos);
		lc_encoding_free(out);
		return LC_ERR_MALFORMED;
	}
	return LC_OK;
truncated:
	snprintf(err, errlen, "column %zu of %zu is truncated", i + 1, n);
	lc_encoding_free(out);
	return LC_ERR_MALFORMED;
}

void
lc_encoding_free(LcEncoding *e)
{
	free(e->fields);
	e->fields = NULL;
	e->nfields = 0;
}

const LcColumnType *
lc_column_find(const LcColumnType *types, size_t ntypes, const char *name, size_t name_len)
{
	size_t		i;

	for (i = 0; i < ntypes; i++)
		if (types[i].name_len == name_len && memcmp(types[i].name, name, name_len) == 0)
			return &types[i];
	return NULL;
}

/* ------------------------------------------------------------- numbers */

/* Writes v in decimal, zero-padded to at least width digits (no printf: this is hot). */
static bool
put_int(LcBuf *out, int64_t v, int width)
{
	char		buf[24];
	int			n = 0;
	uint64_t	u = v < 0 ? (uint64_t) 0 - (uint64_t) v : (uint64_t) v;

	do
	{
		buf[sizeof(buf) - 1 - n++] = (char) ('0' + u % 10);
		u /= 10;
	} while (u != 0 || n < width);
	if (v < 0)
		buf[sizeof(buf) - 1 - n++] = '-';
	return lc_put(out, buf + sizeof(buf) - n, (size_t) n);
}

/* ---------------------------------------------------------------- JSON */

/* Whether s[0..len) is valid UTF-8 without NUL (what a JSON string can hold). */
static bool
valid_utf8(const uint8_t *s, size_t len)
{
	size_t		i = 0;

	while (i < len)
	{
		uint8_t		c = s[i];
		size_t		n;
		uint8_t		lo = 0x80;
		uint8_t		hi = 0xBF;
		size_t		k;

		if (c == 0)
			return false;
		if (c < 0x80)
		{
			i++;
			continue;
		}
		if (c >= 0xC2 && c <= 0xDF)
			n = 2;
		else if (c >= 0xE0 && c <= 0xEF)
		{
			n = 3;
			if (c == 0xE0)
				lo = 0xA0;
			else if (c == 0xED)
				hi = 0x9F;
		}
		else if (c >= 0xF0 && c <= 0xF4)
		{
			n = 4;
			if (c == 0xF0)
				lo = 0x90;
			else if (c == 0xF4)
				hi = 0x8F;
		}
		else
			return false;
		if (len - i < n || s[i + 1] < lo || s[i + 1] > hi)
			return false;
		for (k = 2; k < n; k++)
			if (s[i + k] < 0x80 || s[i + k] > 0xBF)
				return false;
		i += n;
	}
	return true;
}

bool
lc_json_string(const char *s, size_t len, LcBuf *out)
{
	size_t		i;
	size_t		from = 0;

	lc_put_u8(out, '"');
	for (i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) s[i];

		if (c >= 0x20 && c != '"' && c != '\\')
			continue;
		lc_put(out, s + from, i - from);
		from = i + 1;
		switch (c)
		{
			case '"':
				lc_put_str(out, "\\\"");
				break;
			case '\\':
				lc_put_str(out, "\\\\");
				break;
			case '\n':
				lc_put_str(out, "\\n");
				break;
			case '\r':
				lc_put_str(out, "\\r");
				break;
			case '\t':
				lc_put_str(out, "\\t");
				break;
			case '\b':
				lc_put_str(out, "\\b");
				break;
			case '\f':
				lc_put_str(out, "\\f");
				break;
			default:
				lc_putf(out, "\\u%04x", c);
		}
	}
	lc_put(out, s + from, len - from);
	return lc_put_u8(out, '"');
}

bool
lc_json_render(const JsonValue *v, LcBuf *out)
{
	size_t		i;

	switch (v->type)
	{
		case JSON_NULL:
			return lc_put_str(out, "null");
		case JSON_TRUE:
			return lc_put_str(out, "true");
		case JSON_FALSE:
			return lc_put_str(out, "false");
		case JSON_NUMBER:
			return lc_put(out, v->str, v->len);
		case JSON_STRING:
			return lc_json_string(v->str, v->len, out);
		case JSON_ARRAY:
		case JSON_OBJECT:
			lc_put_u8(out, v->type == JSON_ARRAY ? '[' : '{');
			for (i = 0; i < v->count; i++)
			{
				if (i > 0)
					lc_put_str(out, ", ");
				if (v->type == JSON_OBJECT)
				{
					lc_json_string(v->items[i].key, v->items[i].key_len, out);
					lc_put_str(out, ": ");
				}
				lc_json_render(&v->items[i], out);
			}
			return lc_put_u8(out, v->type == JSON_ARRAY ? ']' : '}');
	}
	return false;
}

/*
 * A decimal number in a normal form: sign, significant digits (no leading
 * or trailing zeros) and a power of ten, so that "2.50", "2.5" and
 * "25e-1" compare equal.  False if s is not a JSON-style number.
 */
typedef struct Decimal
{
	bool		negative;
	char	   *digits;			/* "" for zero; small[] or malloc'ed */
	int64_t		exponent;
	char		small[64];
} Decimal;

static void
decimal_free(Decimal *d)
{
	if (d->digits != NULL && d->digits != d->small)
		free(d->digits);
	d->digits = NULL;
}

static int
decimal_parse(const char *s, size_t len, Decimal *d)
{
	size_t		i = 0;
	size_t		nd = 0;
	int64_t		exp = 0;
	int64_t		frac = 0;
	bool		seen_point = false;
	bool		any = false;

	d->negative = false;
	d->exponent = 0;
	d->digits = len < sizeof(d->small) ? d->small : malloc(len + 1);
	if (d->digits == NULL)
	{
		lc_error = LC_ERR_NOMEM;
		return LC_ERR_NOMEM;
	}
	if (i < len && (s[i] == '-' || s[i] == '+'))
		d->negative = s[i++] == '-';
	for (; i < len; i++)
	{
		if (s[i] >= '0' && s[i] <= '9')
		{
			any = true;
			if (nd > 0 || s[i] != '0')
				d->digits[nd++] = s[i];
			if (seen_point)
				frac++;
		}
		else if (s[i] == '.' && !seen_point)
			seen_point = true;
		else
			break;
	}
	if (!any)
		goto bad;
	if (i < len && (s[i] == 'e' || s[i] == 'E'))
	{
		bool		neg = false;
		bool		digits = false;

		i++;
		if (i < len && (s[i] == '-' || s[i] == '+'))
			neg = s[i++] == '-';
		for (; i < len && s[i] >= '0' && s[i] <= '9'; i++)
		{
			digits = true;
			if (exp < 100000000)
				exp = exp * 10 + (s[i] - '0');
		}
		if (!digits)
			goto bad;
		if (neg)
			exp = -exp;
	}
	if (i != len)
		goto bad;
	exp -= frac;
	while (nd > 0 && d->digits[nd - 1] == '0')
	{
		nd--;
		exp++;
	}
	d->digits[nd] = '\0';
	d->exponent = nd == 0 ? 0 : exp;
	if (nd == 0)
		d->negative = false;
	return LC_OK;
bad:
	decimal_free(d);
	return LC_ERR_MALFORMED;
}

/* Whether two number texts have the same value: LC_SAME, LC_DIFFERENT or an error. */
static int
numbers_equal(const char *a, size_t alen, const char *b, size_t blen)
{
	Decimal		x;
	Decimal		y;
	int			rc;
	int			result;

	if ((rc = decimal_parse(a, alen, &x)) != LC_OK)
		return rc == LC_ERR_NOMEM ? rc : LC_DIFFERENT;
	if ((rc = decimal_parse(b, blen, &y)) != LC_OK)
	{
		decimal_free(&x);
		return rc == LC_ERR_NOMEM ? rc : LC_DIFFERENT;
	}
	result = x.negative == y.negative && x.exponent == y.exponent &&
		strcmp(x.digits, y.digits) == 0 ? LC_SAME : LC_DIFFERENT;
	decimal_free(&x);
	decimal_free(&y);
	return result;
}

/* Deep equality of JSON values, numbers by value, objects as maps. */
static int
json_equal(const JsonValue *a, const JsonValue *b)
{
	size_t		i;

	if (a->type == JSON_NUMBER && b->type == JSON_NUMBER)
		return numbers_equal(a->str, a->len, b->str, b->len);
	if (a->type != b->type)
		return LC_DIFFERENT;
	switch (a->type)
	{
		case JSON_NULL:
		case JSON_TRUE:
		case JSON_FALSE:
			return LC_SAME;
		case JSON_STRING:
			return a->len == b->len && memcmp(a->str, b->str, a->len) == 0 ? LC_SAME : LC_DIFFERENT;
		case JSON_ARRAY:
			if (a->count != b->count)
				return LC_DIFFERENT;
			for (i = 0; i < a->count; i++)
			{
				int			rc = json_equal(&a->items[i], &b->items[i]);

				if (rc != LC_SAME)
					return rc;
			}
			return LC_SAME;
		case JSON_OBJECT:
			/* every key of each is in the other, with the same (last) value */
			for (i = 0; i < a->count; i++)
				if (json_get_n(b, a->items[i].key, a->items[i].key_len) == NULL)
					return LC_DIFFERENT;
			for (i = 0; i < b->count; i++)
			{
				const JsonValue *x = json_get_n(a, b->items[i].key, b->items[i].key_len);
				int			rc;

				if (x == NULL)
					return LC_DIFFERENT;
				rc = json_equal(x, json_get_n(b, b->items[i].key, b->items[i].key_len));
				if (rc != LC_SAME)
					return rc;
			}
			return LC_SAME;
		case JSON_NUMBER:
			break;
	}
	return LC_DIFFERENT;
}

/* --------------------------------------------------------------- values */

/*
 * A decoded value written as JSON into out, or, when its bytes are not a
 * value of its codec, false with out unchanged in length (the caller then
 * shows hex).  Each writer below validates before it writes.
 */
typedef bool (*Writer) (const uint8_t *v, size_t len, LcBuf *out);

static bool
render_numeric(const uint8_t *v, size_t len, LcBuf *out)
{
	int			ndigits;
	int			weight;
	int			sign;
	int			dscale;
	int			i;
	int			d;
	const uint8_t *digits;

	if (len < 8)
		return false;
	ndigits = lc_get_u16(v);
	weight = (int16_t) lc_get_u16(v + 2);
	sign = lc_get_u16(v + 4);
	dscale = lc_get_u16(v + 6);
	digits = v + 8;
	if (len != 8 + 2 * (size_t) ndigits || dscale > 0x3FFF)
		return false;
	for (i = 0; i < ndigits; i++)
		if (lc_get_u16(digits + 2 * i) > 9999)
			return false;
	if (sign == NUMERIC_NAN || sign == NUMERIC_PINF || sign == NUMERIC_NINF)
		return ndigits == 0 &&
			lc_put_str(out, sign == NUMERIC_NAN ? "\"NaN\"" :
					   sign == NUMERIC_PINF ? "\"Infinity\"" : "\"-Infinity\"");
	if (sign != NUMERIC_POS && sign != NUMERIC_NEG)
		return false;
	if (sign == NUMERIC_NEG)
		lc_put_u8(out, '-');
	if (weight < 0)
		lc_put_u8(out, '0');
	else
		for (d = 0; d <= weight; d++)
		{
			int			dig = d < ndigits ? lc_get_u16(digits + 2 * d) : 0;

			put_int(out, dig, d == 0 ? 1 : 4);
		}
	if (dscale > 0)
	{
		int			written = 0;

		lc_put_u8(out, '.');
		for (d = weight + 1; written < dscale; d++)
		{
			int			dig = d >= 0 && d < ndigits ? lc_get_u16(digits + 2 * d) : 0;
			char		four[4] = {(char) ('0' + dig / 1000), (char) ('0' + dig / 100 % 10),
			(char) ('0' + dig / 10 % 10), (char) ('0' + dig % 10)};
			int			k = dscale - written < 4 ? dscale - written : 4;

			lc_put(out, four, (size_t) k);
			written += k;
		}
	}
	return !out->failed;
}

/* The shortest text that reads back as the same float, as PostgreSQL writes it. */
static bool
render_float(double x, bool single, LcBuf *out)
{
	char		buf[64];
	int			prec;

	if (isnan(x))
		return lc_put_str(out, "\"NaN\"");
	if (isinf(x))
		return lc_put_str(out, x > 0 ? "\"Infinity\"" : "\"-Infinity\"");
	for (prec = 1; prec <= 17; prec++)
	{
		snprintf(buf, sizeof(buf), "%.*g", prec, x);
		if (single ? strtof(buf, NULL) == (float) x : strtod(buf, NULL) == x)
			break;
	}
	return lc_put_str(out, buf);
}

static bool
render_float4(const uint8_t *v, size_t len, LcBuf *out)
{
	uint32_t	bits;
	float		f;

	if (len != 4)
		return false;
	bits = lc_get_u32(v);
	memcpy(&f, &bits, 4);
	return render_float(f, true, out);
}

static bool
render_float8(const uint8_t *v, size_t len, LcBuf *out)
{
	uint64_t	bits;
	double		f;

	if (len != 8)
		return false;
	bits = lc_get_u64(v);
	memcpy(&f, &bits, 8);
	return render_float(f, false, out);
}

/* "YYYY-MM-DD", with " BC" for years before 1 as PostgreSQL writes them. */
static void
put_date(LcBuf *out, int64_t unix_days, bool *bc)
{
	int64_t		y;
	int			m;
	int			d;

	lc_civil_from_days(unix_days, &y, &m, &d);
	*bc = y <= 0;
	lc_putf(out, "%04lld-%02d-%02d", (long long) (y > 0 ? y : 1 - y), m, d);
}

static void
put_time_of_day(LcBuf *out, int64_t us)
{
	int64_t		secs = us / 1000000;
	int64_t		frac = us % 1000000;

	lc_putf(out, "%02lld:%02lld:%02lld", (long long) (secs / 3600),
			(long long) (secs / 60 % 60), (long long) (secs % 60));
	if (frac != 0)
	{
		char		f[8];
		int			n = 6;

		snprintf(f, sizeof(f), "%06lld", (long long) frac);
		while (n > 0 && f[n - 1] == '0')
			n--;
		lc_put_u8(out, '.');
		lc_put(out, f, (size_t) n);
	}
}

/* Microseconds since 2000-01-01 as PostgreSQL's JSON shows a timestamp. */
static bool
render_timestamp_us(int64_t pg_us, bool tz, LcBuf *out)
{
	int64_t		days;
	int64_t		rest;
	bool		bc;

	if (pg_us == INT64_MAX || pg_us == INT64_MIN)
		return lc_put_str(out, pg_us == INT64_MAX ? "\"infinity\"" : "\"-infinity\"");
	/* PostgreSQL's range: 4713 BC to 294276 AD */
	if (pg_us < -211813488000000000LL || pg_us >= 9223371331200000000LL)
		return false;
	days = pg_us >= 0 ? pg_us / 86400000000LL : -((-pg_us + 86399999999LL) / 86400000000LL);
	rest = pg_us - days * 86400000000LL;
	lc_put_u8(out, '"');
	put_date(out, days + PG_EPOCH_DAYS, &bc);
	lc_put_u8(out, 'T');
	put_time_of_day(out, rest);
	if (tz)
		lc_put_str(out, "+00:00");
	if (bc)
		lc_put_str(out, " BC");
	return lc_put_u8(out, '"');
}

static bool
render_timestamp(const uint8_t *v, size_t len, LcBuf *out)
{
	return len == 8 && render_timestamp_us((int64_t) lc_get_u64(v), false, out);
}

static bool
render_timestamptz(const uint8_t *v, size_t len, LcBuf *out)
{
	return len == 8 && render_timestamp_us((int64_t) lc_get_u64(v), true, out);
}

static bool
render_date(const uint8_t *v, size_t len, LcBuf *out)
{
	int32_t		days;
	bool		bc;

	if (len != 4)
		return false;
	days = (int32_t) lc_get_u32(v);
	if (days == INT32_MAX || days == INT32_MIN)
		return lc_put_str(out, days == INT32_MAX ? "\"infinity\"" : "\"-infinity\"");
	/* PostgreSQL's range: 4713 BC to 5874897 AD */
	if (days < -2451545 || days > 2145031948)
		return false;
	lc_put_u8(out, '"');
	put_date(out, (int64_t) days + PG_EPOCH_DAYS, &bc);
	if (bc)
		lc_put_str(out, " BC");
	return lc_put_u8(out, '"');
}

static bool
render_time(const uint8_t *v, size_t len, LcBuf *out)
{
	int64_t		us;

	if (len != 8)
		return false;
	us = (int64_t) lc_get_u64(v);
	if (us < 0 || us > 86400000000LL)
		return false;
	lc_put_u8(out, '"');
	put_time_of_day(out, us);
	return lc_put_u8(out, '"');
}

static bool
render_bool(const uint8_t *v, size_t len, LcBuf *out)
{
	return len == 1 && v[0] <= 1 && lc_put_str(out, v[0] ? "true" : "false");
}

static bool
render_int2(const uint8_t *v, size_t len, LcBuf *out)
{
	return len == 2 && put_int(out, (int16_t) lc_get_u16(v), 1);
}

static bool
render_int4(const uint8_t *v, size_t len, LcBuf *out)
{
	return len == 4 && put_int(out, (int32_t) lc_get_u32(v), 1);
}

static bool
render_oid(const uint8_t *v, size_t len, LcBuf *out)
{
	return len == 4 && put_int(out, (int64_t) lc_get_u32(v), 1);
}

static bool
render_int8(const uint8_t *v, size_t len, LcBuf *out)
{
	return len == 8 && put_int(out, (int64_t) lc_get_u64(v), 1);
}

static bool
render_text(const uint8_t *v, size_t len, LcBuf *out)
{
	return valid_utf8(v, len) && lc_json_string((const char *) v, len, out);
}

static bool
render_uuid(const uint8_t *v, size_t len, LcBuf *out)
{
	char		hex[33];

	if (len != 16)
		return false;
	lc_hex_encode(v, 16, hex);
	return lc_putf(out, "\"%.8s-%.4s-%.4s-%.4s-%.12s\"", hex, hex + 8, hex + 12, hex + 16,
				   hex + 20);
}

static bool
render_bytea(const uint8_t *v, size_t len, LcBuf *out)
{
	size_t		i;
	char		two[3];

	lc_put_str(out, "\"\\\\x");
	for (i = 0; i < len; i++)
	{
		lc_hex_encode(v + i, 1, two);
		lc_put(out, two, 2);
	}
	return lc_put_u8(out, '"');
}

/*
 * The json type's exact text, which must be one JSON value (keys may
 * repeat, the last one counts, as in jsonb).  The tree points into *copy.
 */
static bool
parse_json_text(const uint8_t *v, size_t len, JsonValue **root, char **copy, bool *oom)
{
	JsonOptions opts = {MAX_NESTING, SIZE_MAX, NULL, true};
	char		err[64];

	*root = NULL;
	*oom = false;
	*copy = malloc(len + 1);
	if (*copy == NULL)
	{
		*oom = true;
		lc_error = LC_ERR_NOMEM;
		return false;
	}
	memcpy(*copy, v, len);
	(*copy)[len] = '\0';
	if (!valid_utf8(v, len) || !json_parse(*copy, len, &opts, root, err, sizeof(err), oom))
	{
		free(*copy);
		*copy = NULL;
		if (*oom)
			lc_error = LC_ERR_NOMEM;
		return false;
	}
	return true;
}

/*
 * A json value as to_jsonb() reads it: of keys repeated in an object, the
 * last counts (and only it is shown), so that what is shown is one JSON
 * value with one meaning.
 */
static bool
render_json_last(const JsonValue *v, LcBuf *out)
{
	size_t		i;
	bool		first = true;

	if (v->type != JSON_ARRAY && v->type != JSON_OBJECT)
		return lc_json_render(v, out);
	lc_put_u8(out, v->type == JSON_ARRAY ? '[' : '{');
	for (i = 0; i < v->count; i++)
	{
		const JsonValue *item = &v->items[i];

		if (v->type == JSON_OBJECT && json_get_n(v, item->key, item->key_len) != item)
			continue;			/* a later one of the same key counts */
		if (!first)
			lc_put_str(out, ", ");
		first = false;
		if (v->type == JSON_OBJECT)
		{
			lc_json_string(item->key, item->key_len, out);
			lc_put_str(out, ": ");
		}
		render_json_last(item, out);
	}
	return lc_put_u8(out, v->type == JSON_ARRAY ? ']' : '}');
}

static bool
render_json(const uint8_t *v, size_t len, LcBuf *out)
{
	JsonValue  *root;
	char	   *copy;
	bool		oom;
	bool		ok;

	if (!parse_json_text(v, len, &root, &copy, &oom))
	{
		if (oom)
			out->failed = true;
		return false;
	}
	ok = render_json_last(root, out);
	json_free(root);
	free(copy);
	return ok;
}

/* One canonical jsonb value at *pos (docs/format.md §3); false if malformed. */
static bool
render_jsonb_at(const uint8_t *v, size_t len, size_t *pos, int depth, LcBuf *out)
{
	uint8_t		tag;
	uint32_t	n;
	uint32_t	i;

	if (depth > MAX_NESTING || *pos >= len)
		return false;
	tag = v[(*pos)++];
	switch (tag)
	{
		case JB_NULL:
			return lc_put_str(out, "null");
		case JB_FALSE:
			return lc_put_str(out, "false");
		case JB_TRUE:
			return lc_put_str(out, "true");
		case JB_STRING:
		case JB_NUMERIC:
			if (len - *pos < 4 || len - *pos - 4 < lc_get_u32(v + *pos))
				return false;
			n = lc_get_u32(v + *pos);
			*pos += 4;
			if (tag == JB_STRING ? !render_text(v + *pos, n, out)
				: !render_numeric(v + *pos, n, out) ||
				lc_get_u16(v + *pos + 4) >= NUMERIC_NAN)
				return false;
			*pos += n;
			return true;
		case JB_OBJECT:
		case JB_ARRAY:
			if (len - *pos < 4)
				return false;
			n = lc_get_u32(v + *pos);
			*pos += 4;
			lc_put_u8(out, tag == JB_OBJECT ? '{' : '[');
			for (i = 0; i < n; i++)
			{
				if (i > 0)
					lc_put_str(out, ", ");
				if (tag == JB_OBJECT)
				{
					if (*pos >= len || v[*pos] != JB_STRING ||
						!render_jsonb_at(v, len, pos, depth + 1, out))
						return false;
					lc_put_str(out, ": ");
				}
				if (!render_jsonb_at(v, len, pos, depth + 1, out))
					return false;
			}
			return lc_put_u8(out, tag == JB_OBJECT ? '}' : ']');
		default:
			return false;
	}
}

static bool
render_jsonb(const uint8_t *v, size_t len, LcBuf *out)
{
	size_t		pos = 0;

	return render_jsonb_at(v, len, &pos, 0, out) && pos == len;
}

static Writer
writer_of(LcCodec codec)
{
	switch (codec)
	{
		case LC_CODEC_TEXT:
			return render_text;
		case LC_CODEC_BOOL:
			return render_bool;
		case LC_CODEC_INT2:
			return render_int2;
		case LC_CODEC_INT4:
			return render_int4;
		case LC_CODEC_INT8:
			return render_int8;
		case LC_CODEC_NUMERIC:
			return render_numeric;
		case LC_CODEC_FLOAT4:
			return render_float4;
		case LC_CODEC_FLOAT8:
			return render_float8;
		case LC_CODEC_DATE:
			return render_date;
		case LC_CODEC_TIME:
			return render_time;
		case LC_CODEC_TIMESTAMP:
			return render_timestamp;
		case LC_CODEC_TIMESTAMPTZ:
			return render_timestamptz;
		case LC_CODEC_UUID:
			return render_uuid;
		case LC_CODEC_BYTEA:
			return render_bytea;
		case LC_CODEC_JSON:
			return render_json;
		case LC_CODEC_JSONB:
			return render_jsonb;
		case LC_CODEC_OID:
			return render_oid;
		case LC_CODEC_HEX:
			break;
	}
	return NULL;
}

/*
 * An array (docs/format.md §4) as nested JSON arrays, one per dimension.
 * Validated as it is written.
 */
typedef struct ArrayShape
{
	uint32_t	ndim;
	uint32_t	dims[6];
	const uint8_t *elems;		/* the element part */
	size_t		elems_len;
} ArrayShape;

static bool
array_shape(const uint8_t *v, size_t len, ArrayShape *s)
{
	uint32_t	i;
	uint64_t	total = 1;

	if (len < 4)
		return false;
	s->ndim = lc_get_u32(v);
	if (s->ndim > 6 || len < 4 + 8 * (size_t) s->ndim)
		return false;
	for (i = 0; i < s->ndim; i++)
	{
		s->dims[i] = lc_get_u32(v + 4 + 8 * i);
		total *= s->dims[i];
		if (total > len)
			return false;
	}
	s->elems = v + 4 + 8 * s->ndim;
	s->elems_len = len - 4 - 8 * s->ndim;
	return true;
}

/* The next element at *pos: present (value, vlen) or NULL; false if malformed. */
static bool
next_element(const ArrayShape *s, size_t *pos, const uint8_t **value, size_t *vlen)
{
	if (*pos >= s->elems_len)
		return false;
	if (s->elems[*pos] == 0)
	{
		(*pos)++;
		*value = NULL;
		return true;
	}
	if (s->elems[*pos] != 1 || s->elems_len - *pos < 5 ||
		s->elems_len - *pos - 5 < lc_get_u32(s->elems + *pos + 1))
		return false;
	*vlen = lc_get_u32(s->elems + *pos + 1);
	*value = s->elems + *pos + 5;
	*pos += 5 + *vlen;
	return true;
}

static bool
render_array_dim(const ArrayShape *s, uint32_t dim, size_t *pos, Writer w, LcBuf *out)
{
	uint32_t	i;

	lc_put_u8(out, '[');
	for (i = 0; i < s->dims[dim]; i++)
	{
		if (i > 0)
			lc_put_str(out, ", ");
		if (dim + 1 < s->ndim)
		{
			if (!render_array_dim(s, dim + 1, pos, w, out))
				return false;
		}
		else
		{
			const uint8_t *value;
			size_t		vlen = 0;

			if (!next_element(s, pos, &value, &vlen))
				return false;
			if (value == NULL)
				lc_put_str(out, "null");
			else if (!w(value, vlen, out))
				return false;
		}
	}
	return lc_put_u8(out, ']');
}

static bool
render_array(const uint8_t *v, size_t len, Writer w, LcBuf *out)
{
	ArrayShape	s;
	size_t		pos = 0;

	if (!array_shape(v, len, &s))
		return false;
	if (s.ndim == 0)
		return s.elems_len == 0 && lc_put_str(out, "[]");
	return render_array_dim(&s, 0, &pos, w, out) && pos == s.elems_len;
}

static bool
render_hex(const uint8_t *v, size_t len, const LcColumnType *t, LcBuf *out)
{
	size_t		i;
	char		two[3];

	lc_put_str(out, "{\"type\": ");
	if (t != NULL)
		lc_json_string(t->type, t->type_len, out);
	else
		lc_put_str(out, "null");
	lc_put_str(out, ", \"hex\": \"");
	for (i = 0; i < len; i++)
	{
		lc_hex_encode(v + i, 1, two);
		lc_put(out, two, 2);
	}
	return lc_put_str(out, "\"}");
}

bool
lc_value_render(const uint8_t *v, size_t len, const LcColumnType *t, LcBuf *out)
{
	Writer		w = t != NULL ? writer_of(t->codec) : NULL;
	size_t		at = out->len;

	if (w != NULL && (t->array ? render_array(v, len, w, out) : w(v, len, out)))
		return true;
	if (out->failed)
		return false;
	out->len = at;				/* not a value of its type: its bytes */
	return render_hex(v, len, t, out);
}

/* ------------------------------------------------------------ comparing */

/* Parses digits of s from *i, exactly n of them (or at least n when more). */
static bool
read_digits(const char *s, size_t len, size_t *i, int n, bool more, int64_t *out)
{
	int64_t		v = 0;
	int			k = 0;

	while (*i < len && s[*i] >= '0' && s[*i] <= '9' && (more || k < n))
	{
		if (v < 100000000)
			v = v * 10 + (s[*i] - '0');
		(*i)++;
		k++;
	}
	*out = v;
	return k == n || (more && k > n);
}

/* "HH:MM:SS[.f...]" into microseconds since midnight. */
static bool
parse_time_of_day(const char *s, size_t len, size_t *i, int64_t *us)
{
	int64_t		h;
	int64_t		m;
	int64_t		sec;
	int64_t		frac = 0;

	if (!read_digits(s, len, i, 2, false, &h) || *i >= len || s[(*i)++] != ':' ||
		!read_digits(s, len, i, 2, false, &m) || *i >= len || s[(*i)++] != ':' ||
		!read_digits(s, len, i, 2, false, &sec))
		return false;
	if (*i < len && s[*i] == '.')
	{
		int			k = 0;

		(*i)++;
		while (*i < len && s[*i] >= '0' && s[*i] <= '9')
		{
			if (k < 6)
				frac = frac * 10 + (s[*i] - '0');
			else if (s[*i] != '0')
				return false;
			k++;
			(*i)++;
		}
		if (k == 0)
			return false;
		for (; k < 6; k++)
			frac *= 10;
	}
	if (m > 59 || sec > 60 || h > 24)
		return false;
	*us = ((h * 60 + m) * 60 + sec) * 1000000 + frac;
	return true;
}

/* "YYYY-MM-DD" (four or more year digits). */
static bool
parse_date_part(const char *s, size_t len, size_t *i, int64_t *y, int *m, int *d)
{
	int64_t		mm;
	int64_t		dd;

	if (!read_digits(s, len, i, 4, true, y) || *i >= len || s[(*i)++] != '-' ||
		!read_digits(s, len, i, 2, false, &mm) || *i >= len || s[(*i)++] != '-' ||
		!read_digits(s, len, i, 2, false, &dd) || mm < 1 || mm > 12 || dd < 1 || dd > 31)
		return false;
	*m = (int) mm;
	*d = (int) dd;
	return true;
}

/*
 * The date's days since 1970-01-01, after what may end the text: " BC"
 * (PostgreSQL writes year 1 BC, astronomical year 0, as "0001 ... BC").
 */
static bool
date_days(const char *s, size_t len, size_t *i, int64_t y, int m, int d, int64_t *days)
{
	if (len - *i == 3 && memcmp(s + *i, " BC", 3) == 0)
	{
		y = 1 - y;
		*i += 3;
	}
	*days = lc_days_from_civil(y, m, d);
	return *i == len;
}

/*
 * A date, time or timestamp as the JSON text PostgreSQL writes (or the
 * same instant written another way) into a number comparable with the
 * encoding's: days, microseconds since midnight, or since 2000-01-01.
 */
static bool
parse_temporal(LcCodec codec, const char *s, size_t len, int64_t *out)
{
	size_t		i = 0;
	int64_t		y;
	int			m;
	int			d;
	int64_t		days;
	int64_t		tod;

	if (codec != LC_CODEC_TIME && (len == 8 || len == 9) &&
		(memcmp(s, "infinity", 8) == 0 || (len == 9 && memcmp(s, "-infinity", 9) == 0)))
	{
		bool		neg = s[0] == '-';

		if (codec == LC_CODEC_DATE)
			*out = neg ? INT32_MIN : INT32_MAX;
		else
			*out = neg ? INT64_MIN : INT64_MAX;
		return true;
	}
	if (codec == LC_CODEC_TIME)
		return parse_time_of_day(s, len, &i, out) && i == len;
	if (!parse_date_part(s, len, &i, &y, &m, &d))
		return false;
	if (codec == LC_CODEC_DATE)
	{
		if (!date_days(s, len, &i, y, m, d, &days))
			return false;
		*out = days - PG_EPOCH_DAYS;
		return true;
	}
	if (i >= len || (s[i] != 'T' && s[i] != ' '))
		return false;
	i++;
	if (!parse_time_of_day(s, len, &i, &tod))
		return false;
	if (codec == LC_CODEC_TIMESTAMPTZ)
	{
		int64_t		off = 0;

		if (i < len && s[i] == 'Z')
			i++;
		else if (i < len && (s[i] == '+' || s[i] == '-'))
		{
			int			sign = s[i] == '-' ? -1 : 1;
			int64_t		oh;
			int64_t		om = 0;
			int64_t		os = 0;

			i++;
			if (!read_digits(s, len, &i, 2, false, &oh))
				return false;
			if (i < len && s[i] == ':')
			{
				i++;
				if (!read_digits(s, len, &i, 2, false, &om))
					return false;
				if (i < len && s[i] == ':')
				{
					i++;
					if (!read_digits(s, len, &i, 2, false, &os))
						return false;
				}
			}
			off = sign * ((oh * 60 + om) * 60 + os) * 1000000;
		}
		else
			return false;
		tod -= off;
	}
	if (!date_days(s, len, &i, y, m, d, &days))
		return false;
	*out = (days - PG_EPOCH_DAYS) * 86400000000LL + tod;
	return true;
}

/* bytea as to_jsonb shows it: "\x" and hex, or the escape format. */
static int
bytea_equal(const uint8_t *v, size_t len, const char *s, size_t slen)
{
	size_t		i;
	size_t		n = 0;

	if (slen >= 2 && s[0] == '\\' && s[1] == 'x')
	{
		if ((slen - 2) != 2 * len)
			return LC_DIFFERENT;
		for (i = 0; i < len; i++)
		{
			int			hi = lc_hex_digit(s[2 + 2 * i]);
			int			lo = lc_hex_digit(s[3 + 2 * i]);

			if (hi < 0 || lo < 0 || (uint8_t) (hi << 4 | lo) != v[i])
				return LC_DIFFERENT;
		}
		return LC_SAME;
	}
	for (i = 0; i < slen; n++)
	{
		uint8_t		c;

		if (s[i] == '\\' && i + 1 < slen && s[i + 1] == '\\')
		{
			c = '\\';
			i += 2;
		}
		else if (s[i] == '\\' && slen - i >= 4 &&
				 s[i + 1] >= '0' && s[i + 1] <= '3' && s[i + 2] >= '0' && s[i + 2] <= '7' &&
				 s[i + 3] >= '0' && s[i + 3] <= '7')
		{
			c = (uint8_t) ((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0'));
			i += 4;
		}
		else if (s[i] == '\\')
			return LC_DIFFERENT;
		else
			c = (uint8_t) s[i++];
		if (n >= len || v[n] != c)
			return LC_DIFFERENT;
	}
	return n == len ? LC_SAME : LC_DIFFERENT;
}

static int	compare_scalar(const uint8_t *v, size_t len, LcCodec codec, const JsonValue *j);
static int	value_compare_decoded(const uint8_t *v, size_t len, const LcColumnType *t,
								  const JsonValue *j);

/* compare_scalar()'s buffer for numbers as text, kept for the next call. */
static LcBuf scratch;

/* A canonical jsonb value at *pos against j. */
static int
compare_jsonb_at(const uint8_t *v, size_t len, size_t *pos, int depth, const JsonValue *j)
{
	uint8_t		tag;
	uint32_t	n;
	uint32_t	i;

	if (depth > MAX_NESTING || *pos >= len)
		return LC_UNCHECKED;
	tag = v[(*pos)++];
	switch (tag)
	{
		case JB_NULL:
			return j->type == JSON_NULL ? LC_SAME : LC_DIFFERENT;
		case JB_FALSE:
			return j->type == JSON_FALSE ? LC_SAME : LC_DIFFERENT;
		case JB_TRUE:
			return j->type == JSON_TRUE ? LC_SAME : LC_DIFFERENT;
		case JB_STRING:
		case JB_NUMERIC:
			{
				int			rc;

				if (len - *pos < 4 || len - *pos - 4 < lc_get_u32(v + *pos))
					return LC_UNCHECKED;
				n = lc_get_u32(v + *pos);
				*pos += 4;
				rc = compare_scalar(v + *pos, n, tag == JB_STRING ? LC_CODEC_TEXT : LC_CODEC_NUMERIC, j);
				*pos += n;
				return rc;
			}
		case JB_ARRAY:
		case JB_OBJECT:
			{
				int			result = LC_SAME;

				if (len - *pos < 4)
					return LC_UNCHECKED;
				n = lc_get_u32(v + *pos);
				*pos += 4;
				if (j->type != (tag == JB_ARRAY ? JSON_ARRAY : JSON_OBJECT) || j->count != n)
					result = LC_DIFFERENT;
				for (i = 0; i < n; i++)
				{
					const JsonValue *item = NULL;
					int			rc;

					if (tag == JB_OBJECT)
					{
						uint32_t	klen;

						if (len - *pos < 5 || v[*pos] != JB_STRING ||
							len - *pos - 5 < lc_get_u32(v + *pos + 1))
							return LC_UNCHECKED;
						klen = lc_get_u32(v + *pos + 1);
						if (result == LC_SAME)
							item = json_get_n(j, (const char *) v + *pos + 5, klen);
						*pos += 5 + klen;
						if (item == NULL)
							result = LC_DIFFERENT;
					}
					else if (result == LC_SAME)
						item = &j->items[i];
					if (item != NULL)
					{
						rc = compare_jsonb_at(v, len, pos, depth + 1, item);
						if (rc != LC_SAME && rc != LC_DIFFERENT)
							return rc;
						if (rc == LC_DIFFERENT)
							result = LC_DIFFERENT;
					}
					else
					{
						/* skip the value: render it into a scratch buffer */
						LcBuf		scratch;
						bool		ok;

						lc_buf_init(&scratch);
						ok = render_jsonb_at(v, len, pos, depth + 1, &scratch);
						if (scratch.failed)
						{
							lc_buf_free(&scratch);
							return LC_ERR_NOMEM;
						}
						lc_buf_free(&scratch);
						if (!ok)
							return LC_UNCHECKED;
					}
				}
				return result;
			}
		default:
			return LC_UNCHECKED;
	}
}

/*
 * One value of a scalar codec against j.  LC_UNCHECKED when the bytes are
 * not a value of the codec (the value is then shown as hex).
 */
static int
compare_scalar(const uint8_t *v, size_t len, LcCodec codec, const JsonValue *j)
{
	LcBuf		text;
	int			result;
	int64_t		want;
	int64_t		have;

	switch (codec)
	{
		case LC_CODEC_TEXT:
			if (!valid_utf8(v, len))
				return LC_UNCHECKED;
			return j->type == JSON_STRING && j->len == len && memcmp(j->str, v, len) == 0
				? LC_SAME : LC_DIFFERENT;
		case LC_CODEC_BOOL:
			if (len != 1 || v[0] > 1)
				return LC_UNCHECKED;
			return j->type == (v[0] ? JSON_TRUE : JSON_FALSE) ? LC_SAME : LC_DIFFERENT;
		case LC_CODEC_BYTEA:
			return j->type == JSON_STRING ? bytea_equal(v, len, j->str, j->len) : LC_DIFFERENT;
		case LC_CODEC_DATE:
		case LC_CODEC_TIME:
		case LC_CODEC_TIMESTAMP:
		case LC_CODEC_TIMESTAMPTZ:
			if (len != (codec == LC_CODEC_DATE ? 4u : 8u))
				return LC_UNCHECKED;
			have = codec == LC_CODEC_DATE ? (int32_t) lc_get_u32(v) : (int64_t) lc_get_u64(v);
			if (j->type != JSON_STRING || !parse_temporal(codec, j->str, j->len, &want))
				return LC_DIFFERENT;
			return want == have ? LC_SAME : LC_DIFFERENT;
		case LC_CODEC_JSON:
			{
				JsonValue  *root;
				char	   *copy;
				bool		oom;

				if (!parse_json_text(v, len, &root, &copy, &oom))
					return oom ? LC_ERR_NOMEM : LC_UNCHECKED;
				result = json_equal(root, j);
				json_free(root);
				free(copy);
				return result;
			}
		case LC_CODEC_JSONB:
			{
				size_t		pos = 0;

				result = compare_jsonb_at(v, len, &pos, 0, j);
				if (result == LC_SAME && pos != len)
					return LC_UNCHECKED;
				return result;
			}
		case LC_CODEC_HEX:
			return LC_UNCHECKED;
		default:
			break;
	}

	/*
	 * Numbers, and uuids: compare their rendered text with j by value.  The
	 * text goes to a buffer kept from call to call: this runs for every
	 * number of every row.
	 */
	text = scratch;
	text.len = 0;
	text.failed = false;
	if (!writer_of(codec) (v, len, &text))
	{
		result = text.failed ? LC_ERR_NOMEM : LC_UNCHECKED;
		scratch = text;
		return result;
	}
	if (text.data[0] == '"')
	{
		/* NaN, Infinity, a uuid: a string */
		size_t		n = text.len - 2;

		result = LC_DIFFERENT;
		if (j->type == JSON_STRING && j->len == n)
		{
			size_t		i;

			/* a uuid may be written in capitals; NaN and Infinity exactly */
			result = LC_SAME;
			for (i = 0; i < n; i++)
				if (codec == LC_CODEC_UUID ? (j->str[i] | 0x20) != (text.data[1 + i] | 0x20)
					: j->str[i] != (char) text.data[1 + i])
					result = LC_DIFFERENT;
		}
	}
	else if (j->type != JSON_NUMBER)
		result = LC_DIFFERENT;
	else if (codec == LC_CODEC_FLOAT4 || codec == LC_CODEC_FLOAT8)
	{
		char	   *num = malloc(j->len + 1);
		double		x;
		double		y;

		if (num == NULL)
		{
			lc_buf_free(&text);
			return LC_ERR_NOMEM;
		}
		memcpy(num, j->str, j->len);
		num[j->len] = '\0';
		if (codec == LC_CODEC_FLOAT4)
		{
			x = strtof(num, NULL);
			y = strtof((const char *) lc_buf_cstr(&text), NULL);
		}
		else
		{
			x = strtod(num, NULL);
			y = strtod((const char *) lc_buf_cstr(&text), NULL);
		}
		free(num);
		result = x == y ? LC_SAME : LC_DIFFERENT;
	}
	else
		result = numbers_equal((const char *) text.data, text.len, j->str, j->len);
	if (text.failed)
		result = LC_ERR_NOMEM;
	scratch = text;
	return result;
}

static int
compare_array_dim(const ArrayShape *s, uint32_t dim, size_t *pos, LcCodec codec,
				  const JsonValue *j)
{
	uint32_t	i;
	int			result = LC_SAME;

	if (j->type != JSON_ARRAY || j->count != s->dims[dim])
		result = LC_DIFFERENT;
	for (i = 0; i < s->dims[dim]; i++)
	{
		const JsonValue *item = result == LC_SAME ? &j->items[i] : NULL;
		int			rc;

		if (dim + 1 < s->ndim)
		{
			static const JsonValue nothing = {JSON_NULL, NULL, 0, NULL, 0, NULL, 0};

			rc = compare_array_dim(s, dim + 1, pos, codec, item ? item : &nothing);
		}
		else
		{
			const uint8_t *value;
			size_t		vlen = 0;

			if (!next_element(s, pos, &value, &vlen))
				return LC_UNCHECKED;
			if (item == NULL)
				continue;
			if (value == NULL)
				rc = item->type == JSON_NULL ? LC_SAME : LC_DIFFERENT;
			else
				rc = compare_scalar(value, vlen, codec, item);
		}
		if (rc != LC_SAME && rc != LC_DIFFERENT)
			return rc;
		if (rc == LC_DIFFERENT)
			result = LC_DIFFERENT;
	}
	return result;
}

/*
 * A value shown as hex (no decoder for its type, or bytes that are not a
 * value of it) against j: j must be exactly {"type": its type, "hex": its
 * bytes}, as lc_value_render() shows it.
 */
static int
compare_hex(const uint8_t *v, size_t len, const LcColumnType *t, const JsonValue *j)
{
	const JsonValue *ty = json_get(j, "type");
	const JsonValue *hx = json_get(j, "hex");
	size_t		i;

	if (j->type != JSON_OBJECT || j->count != 2 || ty == NULL || hx == NULL ||
		hx->type != JSON_STRING || hx->len != 2 * len)
		return LC_DIFFERENT;
	if (t != NULL ? ty->type != JSON_STRING || ty->len != t->type_len ||
		memcmp(ty->str, t->type, t->type_len) != 0 : ty->type != JSON_NULL)
		return LC_DIFFERENT;
	for (i = 0; i < len; i++)
	{
		int			hi = lc_hex_digit(hx->str[2 * i]);
		int			lo = lc_hex_digit(hx->str[2 * i + 1]);

		if (hi < 0 || lo < 0 || (uint8_t) (hi << 4 | lo) != v[i])
			return LC_DIFFERENT;
	}
	return LC_SAME;
}

int
lc_value_compare(const uint8_t *v, size_t len, const LcColumnType *t, const JsonValue *j)
{
	int			rc = value_compare_decoded(v, len, t, j);

	return rc == LC_UNCHECKED ? compare_hex(v, len, t, j) : rc;
}

/* LC_UNCHECKED: no decoder, or not a value of its type (then compared as hex). */
static int
value_compare_decoded(const uint8_t *v, size_t len, const LcColumnType *t, const JsonValue *j)
{
	ArrayShape	s;
	size_t		pos = 0;
	int			rc;

	if (t == NULL || t->codec == LC_CODEC_HEX)
		return LC_UNCHECKED;
	if (!t->array)
		return compare_scalar(v, len, t->codec, j);
	if (!array_shape(v, len, &s))
		return LC_UNCHECKED;
	if (s.ndim == 0)
		return s.elems_len != 0 ? LC_UNCHECKED :
			j->type == JSON_ARRAY && j->count == 0 ? LC_SAME : LC_DIFFERENT;
	rc = compare_array_dim(&s, 0, &pos, t->codec, j);
	if ((rc == LC_SAME || rc == LC_DIFFERENT) && pos != s.elems_len)
		return LC_UNCHECKED;
	return rc;
}

/* ----------------------------------------------------------------- rows */

bool
lc_row_render(const LcEncoding *e, const LcColumnType *types, size_t ntypes, LcBuf *out)
{
	size_t		i;

	lc_put_u8(out, '{');
	for (i = 0; i < e->nfields; i++)
	{
		const LcField *f = &e->fields[i];

		if (i > 0)
			lc_put_str(out, ", ");
		lc_json_string(f->name, f->name_len, out);
		lc_put_str(out, ": ");
		lc_value_render(f->value, f->value_len,
						lc_column_find(types, ntypes, f->name, f->name_len), out);
	}
	return lc_put_u8(out, '}');
}

/* At most this much of a value goes into a message. */
#define SHOWN_VALUE 120

static void
shown_value(char *dst, size_t dlen, const char *s, size_t len)
{
	size_t		n = len;

	if (dlen == 0)
		return;
	if (n > SHOWN_VALUE)
	{
		n = SHOWN_VALUE;
		while (n > 0 && ((unsigned char) s[n] & 0xC0) == 0x80)
			n--;
	}
	snprintf(dst, dlen, "%.*s%s", (int) n, s, n < len ? "..." : "");
}

int
lc_row_check(const LcEncoding *e, const LcColumnType *types, size_t ntypes,
			 const JsonValue *row, char *problem, size_t plen)
{
	size_t		i;

	if (row == NULL || row->type != JSON_OBJECT)
	{
		snprintf(problem, plen, "\"row\" is not a JSON object");
		return LC_DIFFERENT;
	}
	for (i = 0; i < e->nfields; i++)
	{
		const LcField *f = &e->fields[i];
		const LcColumnType *t = lc_column_find(types, ntypes, f->name, f->name_len);
		const JsonValue *j = json_get_n(row, f->name, f->name_len);
		int			rc;
		LcBuf		have;
		LcBuf		want;
		char		a[SHOWN_VALUE + 8];
		char		b[SHOWN_VALUE + 8];

		if (j == NULL)
		{
			snprintf(problem, plen, "column \"%.*s\" is in the encoding but not in \"row\"",
					 (int) (f->name_len > 64 ? 64 : f->name_len), f->name);
			return LC_DIFFERENT;
		}
		rc = lc_value_compare(f->value, f->value_len, t, j);
		if (rc == LC_SAME)
			continue;
		if (rc != LC_DIFFERENT)
			return rc;
		lc_buf_init(&have);
		lc_buf_init(&want);
		lc_json_render(j, &have);
		lc_value_render(f->value, f->value_len, t, &want);
		if (have.failed || want.failed)
		{
			lc_buf_free(&have);
			lc_buf_free(&want);
			return LC_ERR_NOMEM;
		}
		shown_value(a, sizeof(a), (const char *) have.data, have.len);
		shown_value(b, sizeof(b), (const char *) want.data, want.len);
		snprintf(problem, plen, "column \"%.*s\": \"row\" shows %s, the encoding holds %s",
				 (int) (f->name_len > 64 ? 64 : f->name_len), f->name, a, b);
		lc_buf_free(&have);
		lc_buf_free(&want);
		return LC_DIFFERENT;
	}
	for (i = 0; i < row->count; i++)
	{
		const JsonValue *j = &row->items[i];
		size_t		k;
		bool		found = false;

		for (k = 0; k < e->nfields && !found; k++)
			found = e->fields[k].name_len == j->key_len &&
				memcmp(e->fields[k].name, j->key, j->key_len) == 0;
		if (!found && j->type != JSON_NULL)
		{
			snprintf(problem, plen, "column \"%.*s\" is in \"row\" but not in the encoding "
					 "(only NULLs are left out of it)",
					 (int) (j->key_len > 64 ? 64 : j->key_len), j->key);
			return LC_DIFFERENT;
		}
	}
	return LC_SAME;
}

static const char *
op_name(int op)
{
	return op == LC_OP_UPDATE ? "update" : "delete";
}

bool
lc_ended_render(const LcEncoding *e, LcBuf *out)
{
	char		at[LC_ISO_LEN + 1];

	lc_format_iso_utc(e->ended_at_us, at);
	lc_putf(out, "{\"version\": %lld, \"how\": \"%s\", \"at\": \"%s\", \"by\": ",
			(long long) e->version_seq, op_name(e->op), at);
	if (valid_utf8((const uint8_t *) e->role, e->role_len))
		lc_json_string(e->role, e->role_len, out);
	else
		lc_put_str(out, "null");
	return lc_put_u8(out, '}');
}

int
lc_ended_check(const LcEncoding *e, const JsonValue *ended, char *problem, size_t plen)
{
	const JsonValue *v;
	int64_t		n;
	char		at[LC_ISO_LEN + 1];
	static const char *const keys[] = {"version", "how", "at", "by"};
	size_t		i;

	if (ended == NULL || ended->type != JSON_OBJECT)
	{
		snprintf(problem, plen, "\"ended\" is not a JSON object");
		return LC_DIFFERENT;
	}
	for (i = 0; i < ended->count; i++)
	{
		size_t		k;
		bool		known = false;

		for (k = 0; k < 4; k++)
			known |= strlen(keys[k]) == ended->items[i].key_len &&
				memcmp(keys[k], ended->items[i].key, ended->items[i].key_len) == 0;
		if (!known)
		{
			snprintf(problem, plen, "\"ended\" has a field \"%.*s\" the encoding does not hold",
					 (int) (ended->items[i].key_len > 64 ? 64 : ended->items[i].key_len),
					 ended->items[i].key);
			return LC_DIFFERENT;
		}
	}
	v = json_get(ended, "version");
	if (v == NULL || json_int(v, 1, INT64_MAX, &n) != 0 || n != e->version_seq)
	{
		snprintf(problem, plen, "\"ended.version\" is not the version the encoding ends (%lld)",
				 (long long) e->version_seq);
		return LC_DIFFERENT;
	}
	v = json_get(ended, "how");
	if (v == NULL || v->type != JSON_STRING || strcmp(v->str, op_name(e->op)) != 0)
	{
		snprintf(problem, plen, "\"ended.how\" is not \"%s\", as the encoding holds", op_name(e->op));
		return LC_DIFFERENT;
	}
	lc_format_iso_utc(e->ended_at_us, at);
	v = json_get(ended, "at");
	if (v == NULL || v->type != JSON_STRING || strcmp(v->str, at) != 0)
	{
		snprintf(problem, plen, "\"ended.at\" is not %s, as the encoding holds", at);
		return LC_DIFFERENT;
	}
	v = json_get(ended, "by");
	if (v == NULL || v->type != JSON_STRING || v->len != e->role_len ||
		memcmp(v->str, e->role, e->role_len) != 0)
	{
		snprintf(problem, plen, "\"ended.by\" is not the role the encoding holds (%.*s)",
				 (int) (e->role_len > 64 ? 64 : e->role_len), e->role);
		return LC_DIFFERENT;
	}
	return LC_SAME;
}

/* ----------------------------------------------------------- enrolments */

int
lc_columns_from_json(const JsonValue *arr, LcColumnType **types, size_t *ntypes,
					 char *err, size_t errlen)
{
	size_t		i;
	LcColumnType *t;

	*types = NULL;
	*ntypes = 0;
	if (arr == NULL || arr->type != JSON_ARRAY)
	{
		snprintf(err, errlen, "\"columns\" is not an array");
		return LC_ERR_MALFORMED;
	}
	t = calloc(arr->count ? arr->count : 1, sizeof(LcColumnType));
	if (t == NULL)
	{
		lc_error = LC_ERR_NOMEM;
		return LC_ERR_NOMEM;
	}
	for (i = 0; i < arr->count; i++)
	{
		const JsonValue *c = &arr->items[i];
		const JsonValue *name = json_get(c, "name");
		const JsonValue *type = json_get(c, "type");
		const JsonValue *decode = json_get(c, "decode");

		if (name == NULL || name->type != JSON_STRING || type == NULL ||
			type->type != JSON_STRING || decode == NULL || decode->type != JSON_STRING)
		{
			snprintf(err, errlen, "column %zu lacks a string \"name\", \"type\" or \"decode\"", i + 1);
			free(t);
			return LC_ERR_MALFORMED;
		}
		t[i].name = name->str;
		t[i].name_len = name->len;
		t[i].type = type->str;
		t[i].type_len = type->len;
		if (!lc_codec_parse(decode->str, decode->len, &t[i].codec, &t[i].array))
		{
			/* a decoder this verifier does not know: shown as hex */
			t[i].codec = LC_CODEC_HEX;
			t[i].array = false;
		}
		if (lc_column_find(t, i, name->str, name->len) != NULL)
		{
			snprintf(err, errlen, "column \"%.64s\" is listed twice", name->str);
			free(t);
			return LC_ERR_MALFORMED;
		}
	}
	*types = t;
	*ntypes = arr->count;
	return LC_OK;
}

void
lc_enrolment_free(LcEnrolment *en)
{
	json_free(en->columns);
	free(en->columns_text);
	free(en->types);
	memset(en, 0, sizeof(*en));
}

/* The field of a kind 1 encoding with this name, or NULL. */
static const LcField *
field_named(const LcEncoding *e, const char *name)
{
	size_t		i;
	size_t		n = strlen(name);

	for (i = 0; i < e->nfields; i++)
		if (e->fields[i].name_len == n && memcmp(e->fields[i].name, name, n) == 0)
			return &e->fields[i];
	return NULL;
}

int
lc_enrolment_parse(const LcEncoding *e, LcEnrolment *out, char *err, size_t errlen)
{
	const LcField *table_id = field_named(e, "table_id");
	const LcField *name = field_named(e, "name");
	const LcField *columns = field_named(e, "columns");
	const LcField *event = field_named(e, "event");
	LcBuf		text;
	JsonOptions opts = {8, 1000000, NULL, false};
	char		jerr[128];
	bool		oom;
	int			rc;

	memset(out, 0, sizeof(*out));
	if (e->kind != LC_KIND_ROW || e->table_id != LC_ENROLMENT_TABLE_ID)
	{
		snprintf(err, errlen, "it is not a row of the enrolments (table_id %u)",
				 LC_ENROLMENT_TABLE_ID);
		return LC_ERR_MALFORMED;
	}
	if (table_id == NULL || table_id->value_len != 4 || name == NULL || columns == NULL ||
		event == NULL || e->nfields != 4 ||
		!valid_utf8(name->value, name->value_len) || !valid_utf8(event->value, event->value_len))
	{
		snprintf(err, errlen, "it does not hold exactly table_id, name, columns and event");
		return LC_ERR_MALFORMED;
	}
	out->table_id = lc_get_u32(table_id->value);
	out->name = (const char *) name->value;
	out->name_len = name->value_len;
	out->event = (const char *) event->value;
	out->event_len = event->value_len;

	lc_buf_init(&text);
	if (!render_jsonb(columns->value, columns->value_len, &text) || !lc_buf_cstr(&text))
	{
		rc = text.failed ? LC_ERR_NOMEM : LC_ERR_MALFORMED;
		lc_buf_free(&text);
		snprintf(err, errlen, "its columns are not canonical jsonb");
		return rc;
	}
	out->columns_text = (char *) text.data;
	if (!json_parse(out->columns_text, text.len, &opts, &out->columns, jerr, sizeof(jerr), &oom))
	{
		lc_enrolment_free(out);
		if (oom)
		{
			lc_error = LC_ERR_NOMEM;
			return LC_ERR_NOMEM;
		}
		snprintf(err, errlen, "its columns cannot be read: %s", jerr);
		return LC_ERR_MALFORMED;
	}
	rc = lc_columns_from_json(out->columns, &out->types, &out->ntypes, err, errlen);
	if (rc != LC_OK)
		lc_enrolment_free(out);
	return rc;
}

/* A text field of an erasure record: UTF-8, or NULL. */
static const LcField *
text_field(const LcEncoding *e, const char *name)
{
	const LcField *f = field_named(e, name);

	return f != NULL && valid_utf8(f->value, f->value_len) ? f : NULL;
}

int
lc_erasure_parse(const LcEncoding *e, LcErasure *out, char *err, size_t errlen)
{
	const LcField *table_id = field_named(e, "table_id");
	const LcField *erased_seq = field_named(e, "erased_seq");
	const LcField *leaf_hash = field_named(e, "leaf_hash");
	const LcField *erased_at = field_named(e, "erased_at");
	const LcField *approval = field_named(e, "approval");
	const LcField *erased_by = text_field(e, "erased_by");
	const LcField *approved_by = text_field(e, "approved_by");
	const LcField *reason = text_field(e, "reason");

	memset(out, 0, sizeof(*out));
	if (e->kind != LC_KIND_ROW || e->table_id != LC_ERASURE_TABLE_ID)
	{
		snprintf(err, errlen, "it is not a row of the erasures (table_id %u)", LC_ERASURE_TABLE_ID);
		return LC_ERR_MALFORMED;
	}
	if (table_id == NULL || table_id->value_len != 4 || erased_seq == NULL ||
		erased_seq->value_len != 8 || leaf_hash == NULL || leaf_hash->value_len != LC_HASH_LEN ||
		erased_at == NULL || erased_at->value_len != 8 || erased_by == NULL ||
		approved_by == NULL || reason == NULL ||
		e->nfields != (approval != NULL ? 8u : 7u))
	{
		snprintf(err, errlen, "it does not hold exactly table_id, erased_seq, leaf_hash, erased_by, "
				 "approved_by, erased_at, reason and an optional approval");
		return LC_ERR_MALFORMED;
	}
	out->table_id = lc_get_u32(table_id->value);
	out->erased_seq = (int64_t) lc_get_u64(erased_seq->value);
	memcpy(out->leaf_hash, leaf_hash->value, LC_HASH_LEN);
	out->erased_at_us = (int64_t) lc_get_u64(erased_at->value) + PG_EPOCH_US;
	out->erased_by = (const char *) erased_by->value;
	out->erased_by_len = erased_by->value_len;
	out->approved_by = (const char *) approved_by->value;
	out->approved_by_len = approved_by->value_len;
	out->reason = (const char *) reason->value;
	out->reason_len = reason->value_len;
	out->signed_approval = approval != NULL;
	return LC_OK;
}
