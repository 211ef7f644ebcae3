/*
 * encode.c
 *		Where a row becomes bytes: the canonical row encoding.
 *
 * A row's hash must not depend on session settings (DateStyle, TimeZone,
 * extra_float_digits, bytea_output, client_encoding), on TOAST or
 * compression, or on the platform.  So values are never turned into their
 * text output; each is encoded from its binary form, length-prefixed, in
 * network byte order.  docs/format.md specifies the result byte by byte.
 * Each row version's secret salt comes right after its number (format 2),
 * so that its leaf tells nothing to whoever cannot read the row.
 *
 * Next: triggers.c hashes the bytes into the row's leaf (block.c) as the row
 * is written; verify.c, proofs.c and src/network encode again to check.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/fmgrprotos.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/syscache.h"
#include "utils/typcache.h"
#include "utils/uuid.h"

#include "ledger/ledger.h"

#define ROW_ENCODING_VERSION	1	/* no salt: rows written before 0.4 */
#define ROW_ENCODING_SALTED		2	/* a 16-byte salt after ledger_seq */
#define ROW_ENCODING_BAD_SALT	0xff	/* a salt of another length: see encode_header() */
#define ROW_KIND_INSERTED		1
#define ROW_KIND_ENDED			2

/* Tags of the canonical jsonb encoding. */
#define JB_NULL		0x00
#define JB_FALSE	0x01
#define JB_TRUE		0x02
#define JB_STRING	0x03
#define JB_NUMERIC	0x04
#define JB_OBJECT	0x05
#define JB_ARRAY	0x06

typedef enum ValueKind
{
	VK_BOOL,
	VK_INT2,
	VK_INT4,
	VK_INT8,
	VK_TEXT,					/* text-like: its bytes, in UTF-8 */
	VK_NAME,
	VK_BYTES,					/* bytea: its bytes */
	VK_JSONB,
	VK_ENUM,
	VK_ARRAY,
	VK_COMPOSITE,
	VK_FIXED4,					/* 4-byte by-value types whose send is their bits */
	VK_FIXED8,					/* likewise, 8 bytes */
	VK_UUID,
	VK_NUMERIC,					/* numeric_send()'s bytes, read off the layout */
	VK_SEND						/* the type's binary send function */
} ValueKind;

typedef struct TypeCodec
{
	ValueKind	kind;
	Oid			typid;
	int16		typlen;
	bool		typbyval;
	char		typalign;
	FmgrInfo	send;			/* VK_SEND only */
	struct TypeCodec *elem;		/* VK_ARRAY only */
	int			natts;			/* VK_COMPOSITE only */
	struct TypeCodec **atts;	/* VK_COMPOSITE only; NULL for dropped */
} TypeCodec;

typedef struct ColumnPlan
{
	AttrNumber	attnum;
	char	   *name;			/* UTF-8 */
	int			namelen;
	TypeCodec  *codec;
} ColumnPlan;

struct RowEncoder
{
	int			ncolumns;
	ColumnPlan *columns;
	AttrNumber	seq_attnum;		/* InvalidAttrNumber when absent */
	AttrNumber	hash_attnum;
	AttrNumber	salt_attnum;	/* absent in tables protected before 0.4 */
	bool		convert_text;	/* database encoding is not UTF-8 */
};

/*
 * Inline appends: rows are encoded many small pieces at a time, and
 * appendBinaryStringInfo's call and memmove cost more than the copy.
 */
static inline void
buf_reserve(StringInfo buf, int need)
{
	if (buf->len + need >= buf->maxlen)
		enlargeStringInfo(buf, need);
}

/*
 * Most pieces are short (jsonb keys and strings, a few bytes each): up to 16
 * bytes are copied as two overlapping fixed-size moves, which the compiler
 * inlines, instead of a call to memcpy().  Only the len bytes at from are
 * read.
 */
static inline void
copy_bytes(char *to, const char *from, int len)
{
	if (len >= 8 && len <= 16)
	{
		uint64		a;
		uint64		b;

		memcpy(&a, from, 8);
		memcpy(&b, from + len - 8, 8);
		memcpy(to, &a, 8);
		memcpy(to + len - 8, &b, 8);
	}
	else if (len >= 4 && len < 8)
	{
		uint32		a;
		uint32		b;

		memcpy(&a, from, 4);
		memcpy(&b, from + len - 4, 4);
		memcpy(to, &a, 4);
		memcpy(to + len - 4, &b, 4);
	}
	else if (len > 0 && len < 4)
	{
		to[0] = from[0];
		to[len >> 1] = from[len >> 1];
		to[len - 1] = from[len - 1];
	}
	else if (len > 16)
		memcpy(to, from, len);
}

static inline void
buf_put(StringInfo buf, const void *data, int len)
{
	buf_reserve(buf, len);
	copy_bytes(buf->data + buf->len, data, len);
	buf->len += len;
}

static inline void
buf_u8(StringInfo buf, uint8 v)
{
	buf_reserve(buf, 1);
	buf->data[buf->len++] = (char) v;
}

static inline void
buf_u16(StringInfo buf, uint16 v)
{
	buf_reserve(buf, 2);
	lc_store_u16((uint8 *) buf->data + buf->len, v);
	buf->len += 2;
}

static inline void
buf_u32(StringInfo buf, uint32 v)
{
	buf_reserve(buf, 4);
	lc_store_u32((uint8 *) buf->data + buf->len, v);
	buf->len += 4;
}

static inline void
buf_u64(StringInfo buf, uint64 v)
{
	buf_reserve(buf, 8);
	lc_store_u64((uint8 *) buf->data + buf->len, v);
	buf->len += 8;
}

static TypeCodec *codec_for_type(Oid typid, MemoryContext mcxt, int depth);
static void encode_value(const TypeCodec *codec, StringInfo buf, Datum value,
						 bool convert_text);

/* Text is hashed as UTF-8 so that the database encoding does not matter. */
static inline void
append_text(StringInfo buf, const char *s, int len, bool convert_text)
{
	if (convert_text)
	{
		char	   *utf8 = pg_server_to_any(s, len, PG_UTF8);

		if (utf8 != s)
		{
			buf_put(buf, utf8, strlen(utf8));
			pfree(utf8);
			return;
		}
	}
	buf_put(buf, s, len);
}

/* Builds how one type's values are encoded; recursion covers arrays and rows. */
static TypeCodec *
codec_for_type(Oid typid, MemoryContext mcxt, int depth)
{
	TypeCodec  *codec;
	Oid			base = getBaseType(typid);
	HeapTuple	tup;
	Form_pg_type typ;

	check_stack_depth();
	if (depth > 32)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("type %s is nested too deeply to be hashed",
						format_type_be(typid))));

	tup = SearchSysCache1(TYPEOID, ObjectIdGetDatum(base));
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for type %u", base);
	typ = (Form_pg_type) GETSTRUCT(tup);

	codec = MemoryContextAllocZero(mcxt, sizeof(TypeCodec));
	codec->typid = base;
	codec->typlen = typ->typlen;
	codec->typbyval = typ->typbyval;
	codec->typalign = typ->typalign;

	switch (typ->typsend)
	{
		case F_BOOLSEND:
			codec->kind = VK_BOOL;
			break;
		case F_INT2SEND:
			codec->kind = VK_INT2;
			break;
		case F_INT4SEND:
			codec->kind = VK_INT4;
			break;
		case F_INT8SEND:
			codec->kind = VK_INT8;
			break;
		case F_NAMESEND:
			codec->kind = VK_NAME;
			break;
		case F_DATE_SEND:
		case F_FLOAT4SEND:
		case F_OIDSEND:
			codec->kind = VK_FIXED4;
			break;
		case F_TIMESTAMPTZ_SEND:
		case F_TIMESTAMP_SEND:
		case F_TIME_SEND:
		case F_FLOAT8SEND:
			codec->kind = VK_FIXED8;
			break;
		case F_UUID_SEND:
			codec->kind = VK_UUID;
			break;
		case F_TEXTSEND:
		case F_VARCHARSEND:
		case F_BPCHARSEND:
		case F_JSON_SEND:
		case F_XML_SEND:
		case F_UNKNOWNSEND:
			codec->kind = VK_TEXT;
			break;
		case F_BYTEASEND:
			codec->kind = VK_BYTES;
			break;
		case F_JSONB_SEND:
			codec->kind = VK_JSONB;
			break;
		case F_NUMERIC_SEND:
			codec->kind = VK_NUMERIC;
			break;
		case F_ENUM_SEND:
			codec->kind = VK_ENUM;
			break;
		case F_ARRAY_SEND:
			codec->kind = VK_ARRAY;
			codec->elem = codec_for_type(typ->typelem, mcxt, depth + 1);
			break;
		case F_RECORD_SEND:
			{
				TupleDesc	desc;
				int			i;

				if (base == RECORDOID)
					ereport(ERROR,
							(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
							 errmsg("columns of anonymous record type cannot be hashed")));
				desc = lookup_rowtype_tupdesc(base, -1);
				codec->kind = VK_COMPOSITE;
				codec->natts = desc->natts;
				codec->atts = MemoryContextAllocZero(mcxt,
													 sizeof(TypeCodec *) * desc->natts);
				for (i = 0; i < desc->natts; i++)
				{
					Form_pg_attribute att = TupleDescAttr(desc, i);

					if (!att->attisdropped)
						codec->atts[i] = codec_for_type(att->atttypid, mcxt,
														depth + 1);
				}
				ReleaseTupleDesc(desc);
			}
			break;
		default:
			if (!OidIsValid(typ->typsend))
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("type %s has no binary send function, so its values cannot be hashed",
								format_type_be(typid)),
						 errhint("Store such values in a column of a type with a binary representation.")));
			codec->kind = VK_SEND;
			fmgr_info_cxt(typ->typsend, &codec->send, mcxt);
			break;
	}
	ReleaseSysCache(tup);
	return codec;
}

/* A u16 length and the text in UTF-8. */
static void
put_short_text(StringInfo buf, const char *s, bool convert_text)
{
	int			at = buf->len;
	int			len;

	buf_u16(buf, 0);
	append_text(buf, s, strlen(s), convert_text);
	len = buf->len - at - 2;
	lc_store_u16((uint8 *) buf->data + at, (uint16) len);
}

/* Whether a column is one of the ledger's own, never part of a row's hash. */
static bool
ledger_column_name(const char *name)
{
	static const char *const names[] = {
		LEDGER_SEQ_COLUMN, LEDGER_HASH_COLUMN, LEDGER_SALT_COLUMN, LEDGER_OP_COLUMN,
		LEDGER_ENDED_SEQ_COLUMN, LEDGER_ENDED_HASH_COLUMN, LEDGER_ENDED_AT_COLUMN,
		LEDGER_ENDED_BY_COLUMN
	};
	int			i;

	for (i = 0; i < (int) lengthof(names); i++)
		if (strcmp(name, names[i]) == 0)
			return true;
	return false;
}

/*
 * The bytes every encoding starts with (docs/format.md §1): format 1
 * without a salt; format 2, the salt after ledger_seq, with one.  A salt
 * of another length than LEDGER_SALT_LEN (which only a direct edit of the
 * table makes) gives version 0xff and the salt with its length: bytes that
 * no verifier reads and that cannot be a valid encoding, so that such a
 * row never matches its leaf.
 */
static void
encode_header(StringInfo buf, int kind, int32 table_id, int64 seq, const struct varlena *salt)
{
	int			salt_len = salt != NULL ? VARSIZE_ANY_EXHDR(salt) : 0;

	if (salt == NULL)
		buf_u8(buf, ROW_ENCODING_VERSION);
	else
		buf_u8(buf, salt_len == LEDGER_SALT_LEN ? ROW_ENCODING_SALTED : ROW_ENCODING_BAD_SALT);
	buf_u8(buf, (uint8) kind);
	buf_u32(buf, (uint32) table_id);
	buf_u64(buf, (uint64) seq);
	if (salt == NULL)
		return;
	if (salt_len != LEDGER_SALT_LEN)
		buf_u32(buf, (uint32) salt_len);
	buf_put(buf, VARDATA_ANY(salt), salt_len);
}

/*
 * The salt of a row version (its ledger_salt, detoasted), or NULL when it
 * has none: the table was protected before 0.4, or the row written then.
 */
const struct varlena *
row_encoder_salt(const RowEncoder *enc, const Datum *values, const bool *isnull)
{
	if (enc->salt_attnum == InvalidAttrNumber || isnull[enc->salt_attnum - 1])
		return NULL;
	return PG_DETOAST_DATUM_PACKED(values[enc->salt_attnum - 1]);
}

/*
 * The end of a version of a row of a versioned table (docs/format.md §1):
 * which version, how (update or delete), when and by which role.  It is a
 * leaf of its own, numbered when the version ended.  salt is the ended
 * version's (NULL for a version without one): the end of a salted version
 * commits to it, since the role and the microsecond of an update could
 * otherwise be guessed.
 */
void
end_event_encode(StringInfo buf, int32 table_id, int64 end_seq, int64 version_seq,
				 int op, TimestampTz at, const char *role, const struct varlena *salt)
{
	encode_header(buf, ROW_KIND_ENDED, table_id, end_seq, salt);
	buf_u64(buf, (uint64) version_seq);
	buf_u8(buf, (uint8) op);
	buf_u64(buf, (uint64) timestamptz_to_unix_micros(at));
	put_short_text(buf, role, GetDatabaseEncoding() != PG_UTF8 && GetDatabaseEncoding() != PG_SQL_ASCII);
}

/*
 * Plans the encoding of a table's rows.  Ledger columns and generated
 * columns (derived from the others, and computed only after BEFORE
 * triggers) are left out.
 */
RowEncoder *
row_encoder_create(TupleDesc desc, MemoryContext mcxt)
{
	RowEncoder *enc = MemoryContextAllocZero(mcxt, sizeof(RowEncoder));
	int			i;
	int			encoding = GetDatabaseEncoding();

	enc->columns = MemoryContextAllocZero(mcxt, sizeof(ColumnPlan) * Max(desc->natts, 1));
	enc->convert_text = (encoding != PG_UTF8 && encoding != PG_SQL_ASCII);

	for (i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);
		const char *name = NameStr(att->attname);
		ColumnPlan *col;
		StringInfoData nb;

		if (att->attisdropped || att->attgenerated != '\0')
			continue;
		if (ledger_column_name(name))
		{
			if (strcmp(name, LEDGER_SEQ_COLUMN) == 0)
				enc->seq_attnum = att->attnum;
			else if (strcmp(name, LEDGER_HASH_COLUMN) == 0)
				enc->hash_attnum = att->attnum;
			else if (strcmp(name, LEDGER_SALT_COLUMN) == 0)
				enc->salt_attnum = att->attnum;
			continue;
		}

		col = &enc->columns[enc->ncolumns++];
		col->attnum = att->attnum;
		initStringInfo(&nb);
		append_text(&nb, name, strlen(name), enc->convert_text);
		col->name = MemoryContextAlloc(mcxt, nb.len);
		memcpy(col->name, nb.data, nb.len);
		col->namelen = nb.len;
		pfree(nb.data);
		col->codec = codec_for_type(att->atttypid, mcxt, 0);
	}
	return enc;
}

AttrNumber
row_encoder_seq_attnum(const RowEncoder *enc)
{
	return enc->seq_attnum;
}

AttrNumber
row_encoder_hash_attnum(const RowEncoder *enc)
{
	return enc->hash_attnum;
}

AttrNumber
row_encoder_salt_attnum(const RowEncoder *enc)
{
	return enc->salt_attnum;
}

/*
 * The decoder a verifier reads a value of this codec with (docs/format.md
 * §19), or "hex" for types without one.
 */
static const char *
decoder_name(const TypeCodec *c)
{
	switch (c->kind)
	{
		case VK_BOOL:
			return "bool";
		case VK_INT2:
			return "int2";
		case VK_INT4:
			return "int4";
		case VK_INT8:
			return "int8";
		case VK_NAME:
		case VK_ENUM:
			return "text";
		case VK_TEXT:
			return c->typid == JSONOID ? "json" : "text";
		case VK_BYTES:
			return "bytea";
		case VK_JSONB:
			return "jsonb";
		case VK_UUID:
			return "uuid";
		case VK_FIXED4:
			return c->typid == DATEOID ? "date" : c->typid == FLOAT4OID ? "float4" :
				c->typid == OIDOID ? "oid" : "hex";
		case VK_FIXED8:
			return c->typid == TIMESTAMPTZOID ? "timestamptz" :
				c->typid == TIMESTAMPOID ? "timestamp" :
				c->typid == TIMEOID ? "time" : c->typid == FLOAT8OID ? "float8" : "hex";
		case VK_NUMERIC:
			return "numeric";
		case VK_SEND:
			return "hex";
		case VK_ARRAY:
		case VK_COMPOSITE:
			break;
	}
	return "hex";
}

/*
 * The columns a row's encoding may hold, in order, as a verifier needs
 * them: [{"name", "type", "decode"}] (docs/format.md §19).  desc is the
 * table's, for the types' names.
 */
void
row_encoder_columns_json(const RowEncoder *enc, TupleDesc desc, StringInfo buf)
{
	int			i;

	appendStringInfoChar(buf, '[');
	for (i = 0; i < enc->ncolumns; i++)
	{
		const ColumnPlan *col = &enc->columns[i];
		Form_pg_attribute att = TupleDescAttr(desc, col->attnum - 1);
		const TypeCodec *c = col->codec;

		if (i > 0)
			appendStringInfoString(buf, ", ");
		appendStringInfoString(buf, "{\"name\": ");
		escape_json(buf, NameStr(att->attname));
		appendStringInfoString(buf, ", \"type\": ");
		escape_json(buf, format_type_with_typemod(att->atttypid, att->atttypmod));
		appendStringInfoString(buf, ", \"decode\": ");
		if (c->kind == VK_ARRAY && strcmp(decoder_name(c->elem), "hex") != 0)
			appendStringInfo(buf, "\"%s[]\"}", decoder_name(c->elem));
		else
			appendStringInfo(buf, "\"%s\"}", decoder_name(c));
	}
	appendStringInfoChar(buf, ']');
}

/* Reserves a 4-byte length and returns where it goes. */
static int
begin_length(StringInfo buf)
{
	int			at = buf->len;

	buf_u32(buf, 0);
	return at;
}

static void
end_length(StringInfo buf, int at)
{
	lc_store_u32((uint8 *) buf->data + at, (uint32) (buf->len - at - 4));
}

/*
 * numeric_send()'s bytes (ndigits, weight, sign and dscale, then the
 * base-10000 digits, each a big-endian int16), read straight off the
 * stored layout (numeric.c's NumericShort and NumericLong, which pg_upgrade
 * keeps stable) rather than through numeric_send() and its two palloc()s.
 * False for NaN, the infinities and compressed or out-of-line values, which
 * go through numeric_send() itself.  The stored header may be a short one,
 * so fields are read with memcpy().
 */
typedef struct NumericParts
{
	uint16		ndigits;
	int16		weight;
	uint16		sign;
	uint16		dscale;
	const char *digits;			/* ndigits native int16s, maybe unaligned */
} NumericParts;

static bool
numeric_parts(Datum value, NumericParts *n)
{
	struct varlena *v = (struct varlena *) DatumGetPointer(value);
	const char *p;
	int			len;
	uint16		header;

	if (VARATT_IS_EXTERNAL(v) || VARATT_IS_COMPRESSED(v))
		return false;
	p = VARDATA_ANY(v);
	len = VARSIZE_ANY_EXHDR(v);
	if (len < 2)
		elog(ERROR, "numeric value of %d bytes", len);
	memcpy(&header, p, sizeof(header));
	if ((header & 0xC000) == 0xC000)	/* NUMERIC_SPECIAL: NaN, +-Infinity */
		return false;
	if (header & 0x8000)		/* NUMERIC_SHORT */
	{
		n->sign = (header & 0x2000) ? 0x4000 : 0x0000;
		n->dscale = (header & 0x1F80) >> 7;
		n->weight = (int16) (((header & 0x0040) ? ~0x003F : 0) | (header & 0x003F));
		p += 2;
		len -= 2;
	}
	else
	{
		if (len < 4)
			elog(ERROR, "numeric value of %d bytes", len);
		n->sign = header & 0xC000;
		n->dscale = header & 0x3FFF;
		memcpy(&n->weight, p + 2, sizeof(n->weight));
		p += 4;
		len -= 4;
	}
	n->ndigits = len / (int) sizeof(int16);
	n->digits = p;
	return true;
}

/* Writes the 8 + 2 * ndigits bytes of n at p; returns where they end. */
static char *
numeric_write(char *p, const NumericParts *n)
{
	int			i;

	lc_store_u16((uint8 *) p, n->ndigits);
	lc_store_u16((uint8 *) p + 2, (uint16) n->weight);
	lc_store_u16((uint8 *) p + 4, n->sign);
	lc_store_u16((uint8 *) p + 6, n->dscale);
	p += 8;
	for (i = 0; i < n->ndigits; i++)
	{
		int16		digit;

		memcpy(&digit, n->digits + i * sizeof(int16), sizeof(digit));
		lc_store_u16((uint8 *) p, (uint16) digit);
		p += 2;
	}
	return p;
}

static bytea *
numeric_sent(Datum value)
{
	return DatumGetByteaPP(DirectFunctionCall1(numeric_send, value));
}

static void
put_numeric(StringInfo buf, Datum value)
{
	NumericParts n;

	if (numeric_parts(value, &n))
	{
		buf_reserve(buf, 8 + 2 * n.ndigits);
		buf->len = numeric_write(buf->data + buf->len, &n) - buf->data;
	}
	else
	{
		bytea	   *b = numeric_sent(value);

		buf_put(buf, VARDATA_ANY(b), VARSIZE_ANY_EXHDR(b));
		pfree(b);
	}
}

/*
 * jsonb is walked over its binary layout (utils/jsonb.h: a container's
 * JEntry array, then its children's data), in its own order: an array's
 * elements in order, an object's pairs in jsonb's sorted key order, so
 * equal documents encode alike.  Its text form would cost a
 * numeric-to-text conversion, and JsonbIteratorNext() a palloc() a level
 * and a JsonbValue a token (a fifth of verify()'s time on FHIR rows).
 *
 * The walk writes through a cursor that it passes along and returns,
 * rather than through the StringInfo, whose length the compiler must
 * reload after every byte stored (a seventh of the walk's time).  Every
 * write first makes sure of its room (jb_room()); encode_jsonb() reserves
 * about what a document needs up front, so the buffer seldom grows.
 */
typedef struct JbOut
{
	StringInfo	buf;
	char	   *end;			/* the end of buf's room */
	bool		convert_text;
} JbOut;

static pg_noinline char *
jb_grow(JbOut *o, char *p, Size need)
{
	StringInfo	buf = o->buf;

	buf->len = p - buf->data;
	enlargeStringInfo(buf, need);
	o->end = buf->data + buf->maxlen - 1;
	return buf->data + buf->len;
}

static inline char *
jb_room(JbOut *o, char *p, Size need)
{
	return likely((Size) (o->end - p) >= need) ? p : jb_grow(o, p, need);
}

/* A tag and a u32 (a length or a count) at p, whose room is made sure of. */
static inline char *
jb_head(char *p, uint8 tag, uint32 v)
{
	*p = (char) tag;
	lc_store_u32((uint8 *) p + 1, v);
	return p + 5;
}

static inline char *
jb_string(JbOut *o, char *p, const char *s, uint32 len)
{
	char	   *utf8 = NULL;

	if (unlikely(o->convert_text))
	{
		utf8 = pg_server_to_any(s, len, PG_UTF8);
		if (utf8 != s)
		{
			s = utf8;
			len = strlen(utf8);
		}
		else
			utf8 = NULL;
	}
	p = jb_head(jb_room(o, p, 5 + (Size) len), JB_STRING, len);
	copy_bytes(p, s, len);
	if (utf8 != NULL)
		pfree(utf8);
	return p + len;
}

static char *
jb_numeric(JbOut *o, char *p, Numeric num)
{
	NumericParts n;
	bytea	   *b;
	uint32		len;

	if (numeric_parts(NumericGetDatum(num), &n))
	{
		p = jb_head(jb_room(o, p, 13 + 2 * (Size) n.ndigits), JB_NUMERIC,
					8 + 2 * (uint32) n.ndigits);
		return numeric_write(p, &n);
	}
	b = numeric_sent(NumericGetDatum(num));
	len = VARSIZE_ANY_EXHDR(b);
	p = jb_head(jb_room(o, p, 5 + (Size) len), JB_NUMERIC, len);
	memcpy(p, VARDATA_ANY(b), len);
	pfree(b);
	return p + len;
}

static char *jb_container(JbOut *o, char *p, const JsonbContainer *jc);

/* The child of a container whose JEntry is entry, at base + offset. */
static inline char *
jb_entry(JbOut *o, char *p, JEntry entry, const char *base, uint32 offset, uint32 len)
{
	if (JBE_ISSTRING(entry))
		return jb_string(o, p, base + offset, len);
	if (JBE_ISNUMERIC(entry))
		return jb_numeric(o, p, (Numeric) (base + INTALIGN(offset)));
	if (JBE_ISCONTAINER(entry))
		return jb_container(o, p, (const JsonbContainer *) (base + INTALIGN(offset)));
	p = jb_room(o, p, 1);
	if (JBE_ISNULL(entry))
		*p = JB_NULL;
	else if (JBE_ISBOOL_FALSE(entry))
		*p = JB_FALSE;
	else if (JBE_ISBOOL_TRUE(entry))
		*p = JB_TRUE;
	else
		elog(ERROR, "unexpected jsonb entry type %u", (unsigned) (entry & JENTRY_TYPEMASK));
	return p + 1;
}

/* An entry's length, from its offset (where the previous one ended). */
static inline uint32
jentry_length(JEntry entry, uint32 offset)
{
	return JBE_HAS_OFF(entry) ? JBE_OFFLENFLD(entry) - offset : JBE_OFFLENFLD(entry);
}

static char *
jb_container(JbOut *o, char *p, const JsonbContainer *jc)
{
	uint32		count = JsonContainerSize(jc);
	uint32		i;

	check_stack_depth();
	if (JsonContainerIsObject(jc))
	{
		const char *base = (const char *) &jc->children[count * 2];
		uint32		key_at = 0;
		uint32		value_at = getJsonbOffset(jc, count);

		p = jb_head(jb_room(o, p, 5), JB_OBJECT, count);
		for (i = 0; i < count; i++)
		{
			JEntry		key = jc->children[i];
			JEntry		value = jc->children[i + count];
			uint32		key_len = jentry_length(key, key_at);
			uint32		value_len = jentry_length(value, value_at);

			if (!JBE_ISSTRING(key))
				elog(ERROR, "unexpected jsonb object key type %u", (unsigned) (key & JENTRY_TYPEMASK));
			p = jb_string(o, p, base + key_at, key_len);
			p = jb_entry(o, p, value, base, value_at, value_len);
			key_at += key_len;
			value_at += value_len;
		}
	}
	else
	{
		const char *base = (const char *) &jc->children[count];
		uint32		at = 0;

		/* a scalar document is stored as an array of one: the scalar alone */
		if (!JsonContainerIsScalar(jc))
		{
			p = jb_head(jb_room(o, p, 5), JB_ARRAY, count);
		}
		for (i = 0; i < count; i++)
		{
			uint32		len = jentry_length(jc->children[i], at);

			p = jb_entry(o, p, jc->children[i], base, at, len);
			at += len;
		}
	}
	return p;
}

/*
 * A jsonb value stored inline with a short header (most rows' documents)
 * must be copied to a 4-byte-aligned one for the iterator; it goes to one
 * buffer kept for the backend's life rather than a palloc() a row.
 * Compressed or out-of-line values are detoasted as usual.  encode_jsonb()
 * calls no other encoder, so one buffer serves.
 */
static char *jsonb_scratch = NULL;
static Size jsonb_scratch_size = 0;

static Jsonb *
jsonb_readable(Datum value)
{
	struct varlena *v = (struct varlena *) DatumGetPointer(value);
	Size		len;

	if (!VARATT_IS_SHORT(v) || VARATT_IS_EXTERNAL(v))
		return DatumGetJsonbP(value);
	len = VARSIZE_SHORT(v) - VARHDRSZ_SHORT;
	if (jsonb_scratch_size < len + VARHDRSZ)
	{
		char	   *bigger = MemoryContextAlloc(TopMemoryContext, len + VARHDRSZ);

		if (jsonb_scratch != NULL)
			pfree(jsonb_scratch);
		jsonb_scratch = bigger;
		jsonb_scratch_size = len + VARHDRSZ;
	}
	SET_VARSIZE(jsonb_scratch, len + VARHDRSZ);
	memcpy(VARDATA(jsonb_scratch), VARDATA_SHORT(v), len);
	return (Jsonb *) jsonb_scratch;
}

/*
 * A document's encoding is about its stored size (a fifth more for FHIR
 * resources: a tag a string, numerics a little longer); that much and a
 * half is reserved at once.
 */
static void
encode_jsonb(StringInfo buf, Jsonb *jb, bool convert_text)
{
	Size		stored = VARSIZE(jb) - VARHDRSZ;
	JbOut		o;
	char	   *p;

	enlargeStringInfo(buf, Min(stored + stored / 2 + 64, MaxAllocSize - 1 - (Size) buf->len));
	o.buf = buf;
	o.end = buf->data + buf->maxlen - 1;
	o.convert_text = convert_text;
	p = jb_container(&o, buf->data + buf->len, &jb->root);
	buf->len = p - buf->data;
}

static void
encode_array(const TypeCodec *codec, StringInfo buf, Datum value, bool convert_text)
{
	ArrayType  *arr = DatumGetArrayTypeP(value);
	const TypeCodec *elem = codec->elem;
	int			ndim = ARR_NDIM(arr);
	Datum	   *elems;
	bool	   *nulls;
	int			nelems;
	int			i;

	buf_u32(buf, ndim);
	for (i = 0; i < ndim; i++)
	{
		buf_u32(buf, (uint32) ARR_DIMS(arr)[i]);
		buf_u32(buf, (uint32) ARR_LBOUND(arr)[i]);
	}
	deconstruct_array(arr, ARR_ELEMTYPE(arr), elem->typlen, elem->typbyval,
					  elem->typalign, &elems, &nulls, &nelems);
	for (i = 0; i < nelems; i++)
	{
		if (nulls[i])
			buf_u8(buf, 0);
		else
		{
			int			at;

			buf_u8(buf, 1);
			at = begin_length(buf);
			encode_value(elem, buf, elems[i], convert_text);
			end_length(buf, at);
		}
	}
}

static void
encode_composite(const TypeCodec *codec, StringInfo buf, Datum value, bool convert_text)
{
	HeapTupleHeader rec = DatumGetHeapTupleHeader(value);
	TupleDesc	desc = lookup_rowtype_tupdesc(HeapTupleHeaderGetTypeId(rec),
											  HeapTupleHeaderGetTypMod(rec));
	HeapTupleData tuple;
	Datum	   *values;
	bool	   *nulls;
	int			i;
	int			live = 0;

	tuple.t_len = HeapTupleHeaderGetDatumLength(rec);
	ItemPointerSetInvalid(&tuple.t_self);
	tuple.t_tableOid = InvalidOid;
	tuple.t_data = rec;

	values = palloc(sizeof(Datum) * desc->natts);
	nulls = palloc(sizeof(bool) * desc->natts);
	heap_deform_tuple(&tuple, desc, values, nulls);

	for (i = 0; i < desc->natts && i < codec->natts; i++)
		if (codec->atts[i] != NULL)
			live++;
	buf_u16(buf, live);
	for (i = 0; i < desc->natts && i < codec->natts; i++)
	{
		if (codec->atts[i] == NULL)
			continue;
		if (nulls[i])
			buf_u8(buf, 0);
		else
		{
			int			at;

			buf_u8(buf, 1);
			at = begin_length(buf);
			encode_value(codec->atts[i], buf, values[i], convert_text);
			end_length(buf, at);
		}
	}
	ReleaseTupleDesc(desc);
	pfree(values);
	pfree(nulls);
}

/*
 * Some send functions (tsvector, tsquery, jsonpath, ...) emit text through
 * pq_sendtext(), which converts to the client's encoding.  A hash must not
 * depend on that, so such calls run with the client encoding set to the
 * server's for their duration.
 */
static bytea *
send_in_server_encoding(const TypeCodec *codec, Datum value)
{
	int			client = pg_get_client_encoding();
	bytea	   *result;

	if (client == GetDatabaseEncoding())
		return SendFunctionCall((FmgrInfo *) &codec->send, value);

	SetClientEncoding(GetDatabaseEncoding());
	PG_TRY();
	{
		result = SendFunctionCall((FmgrInfo *) &codec->send, value);
	}
	PG_FINALLY();
	{
		SetClientEncoding(client);
	}
	PG_END_TRY();
	return result;
}

static void
encode_value(const TypeCodec *codec, StringInfo buf, Datum value, bool convert_text)
{
	switch (codec->kind)
	{
		case VK_BOOL:
			buf_u8(buf, DatumGetBool(value) ? 1 : 0);
			break;
		case VK_INT2:
			buf_u16(buf, (uint16) DatumGetInt16(value));
			break;
		case VK_INT4:
			buf_u32(buf, (uint32) DatumGetInt32(value));
			break;
		case VK_INT8:
			buf_u64(buf, (uint64) DatumGetInt64(value));
			break;
		case VK_FIXED4:
			/* date_send, float4send, oidsend: the value's 32 bits, big-endian */
			buf_u32(buf, (uint32) DatumGetUInt32(value));
			break;
		case VK_FIXED8:
			/* timestamp(tz)_send, time_send, float8send: its 64 bits */
			buf_u64(buf, (uint64) DatumGetInt64(value));
			break;
		case VK_UUID:
			buf_put(buf, DatumGetUUIDP(value)->data, UUID_LEN);
			break;
		case VK_NAME:
			{
				const char *s = NameStr(*DatumGetName(value));

				append_text(buf, s, strlen(s), convert_text);
			}
			break;
		case VK_TEXT:
			{
				struct varlena *t = PG_DETOAST_DATUM_PACKED(value);

				append_text(buf, VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t), convert_text);
				if ((Pointer) t != DatumGetPointer(value))
					pfree(t);
			}
			break;
		case VK_BYTES:
			{
				struct varlena *t = PG_DETOAST_DATUM_PACKED(value);

				buf_put(buf, VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
				if ((Pointer) t != DatumGetPointer(value))
					pfree(t);
			}
			break;
		case VK_JSONB:
			{
				Jsonb	   *jb = jsonb_readable(value);

				encode_jsonb(buf, jb, convert_text);
				if ((Pointer) jb != DatumGetPointer(value) && (Pointer) jb != jsonb_scratch)
					pfree(jb);
			}
			break;
		case VK_ENUM:
			{
				char	   *label = DatumGetCString(DirectFunctionCall1(enum_out, value));

				append_text(buf, label, strlen(label), convert_text);
				pfree(label);
			}
			break;
		case VK_NUMERIC:
			put_numeric(buf, value);
			break;
		case VK_ARRAY:
			encode_array(codec, buf, value, convert_text);
			break;
		case VK_COMPOSITE:
			encode_composite(codec, buf, value, convert_text);
			break;
		case VK_SEND:
			{
				bytea	   *b = send_in_server_encoding(codec, value);

				buf_put(buf, VARDATA(b), VARSIZE(b) - VARHDRSZ);
				pfree(b);
			}
			break;
	}
}

/* The column part of an encoding: count, then (name, value) pairs. */
static void
encode_columns(const RowEncoder *enc, StringInfo buf, const Datum *values,
			   const bool *isnull, AttrNumber skip)
{
	int			i;
	int			count = 0;
	int			count_at = buf->len;

	buf_u16(buf, 0);
	for (i = 0; i < enc->ncolumns; i++)
	{
		const ColumnPlan *col = &enc->columns[i];
		int			idx = col->attnum - 1;
		int			at;

		if (isnull[idx] || col->attnum == skip)
			continue;
		count++;
		buf_u16(buf, col->namelen);
		buf_put(buf, col->name, col->namelen);
		at = begin_length(buf);
		encode_value(col->codec, buf, values[idx], enc->convert_text);
		end_length(buf, at);
	}
	lc_store_u16((uint8 *) buf->data + count_at, (uint16) count);
}

/*
 * Appends the canonical encoding of one row version to buf: format 2 with
 * its salt, format 1 for a row without one.  NULL columns are left out, so
 * adding a nullable column does not change older hashes.
 */
void
row_encode(const RowEncoder *enc, StringInfo buf, int32 table_id, int64 seq,
		   const Datum *values, const bool *isnull)
{
	encode_header(buf, ROW_KIND_INSERTED, table_id, seq, row_encoder_salt(enc, values, isnull));
	encode_columns(enc, buf, values, isnull, InvalidAttrNumber);
}

/*
 * The bytes an author signs (docs/format.md §15): the table's name and the
 * row's columns, without the signature column.  No ledger_seq: the author
 * signs before the row is numbered.
 */
void
row_signing_payload(const RowEncoder *enc, StringInfo buf, const char *schema,
					const char *table, const Datum *values, const bool *isnull,
					AttrNumber signature_attnum)
{
	static const char tag[] = "ehrledger-row-signature-1";

	buf_put(buf, tag, sizeof(tag));	/* with its NUL */
	put_short_text(buf, schema, enc->convert_text);
	put_short_text(buf, table, enc->convert_text);
	encode_columns(enc, buf, values, isnull, signature_attnum);
}
