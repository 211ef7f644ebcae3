/*
 * decode.h
 *		Canonical encodings (docs/format.md §1-5) read back into columns and
 *		values, and compared with the JSON a person is shown.
 *
 * The encoding names each column but not its type; types come from the
 * table's ledgered registration (docs/format.md §19), as a decoder name
 * per column ("int4", "text[]", ...).  Values of types without a decoder
 * are shown as their hex with their type named, and compared as such.
 */
#ifndef LEDGER_DECODE_H
#define LEDGER_DECODE_H

#include "json.h"
#include "ledger_core.h"

typedef enum LcCodec
{
	LC_CODEC_HEX = 0,			/* no decoder: shown as hex */
	LC_CODEC_TEXT,				/* text, varchar, char(n), name, enum labels, xml */
	LC_CODEC_BOOL,
	LC_CODEC_INT2,
	LC_CODEC_INT4,
	LC_CODEC_INT8,
	LC_CODEC_NUMERIC,
	LC_CODEC_FLOAT4,
	LC_CODEC_FLOAT8,
	LC_CODEC_DATE,
	LC_CODEC_TIME,
	LC_CODEC_TIMESTAMP,
	LC_CODEC_TIMESTAMPTZ,
	LC_CODEC_UUID,
	LC_CODEC_BYTEA,
	LC_CODEC_JSON,
	LC_CODEC_JSONB,
	LC_CODEC_OID
} LcCodec;

/* How one column's values are read: its name, its SQL type, its decoder. */
typedef struct LcColumnType
{
	const char *name;
	size_t		name_len;
	const char *type;			/* the SQL type, for people */
	size_t		type_len;
	LcCodec		codec;
	bool		array;			/* an array of codec's values */
} LcColumnType;

/* The decoder name of a codec ("int4"), without "[]". */
extern const char *lc_codec_name(LcCodec c);

/* A decoder name ("int4", "text[]", "hex"); false if it is none of them. */
extern bool lc_codec_parse(const char *s, size_t len, LcCodec *codec, bool *array);

#define LC_KIND_ROW		1
#define LC_KIND_ENDED	2
#define LC_OP_UPDATE	1
#define LC_OP_DELETE	2
/* Bytes 0-13 of every encoding: version, kind, table_id, ledger_seq. */
#define LC_ENC_HEADER_LEN 14
/* Format 2 (a salted row version, or the end of one): the salt follows. */
#define LC_SALT_LEN 16

typedef struct LcField
{
	const char *name;			/* into the encoding; not terminated */
	size_t		name_len;
	const uint8_t *value;
	size_t		value_len;
} LcField;

/* An encoding taken apart; pointers lead into the encoding's bytes. */
typedef struct LcEncoding
{
	int			format;			/* 1, or 2 with a salt */
	const uint8_t *salt;		/* format 2: LC_SALT_LEN bytes; else NULL */
	int			kind;
	uint32_t	table_id;
	int64_t		seq;
	/* kind 1: the columns present (not NULL), in order */
	size_t		nfields;
	LcField    *fields;			/* malloc'ed: lc_encoding_free() */
	/* kind 2: the end of a version */
	int64_t		version_seq;
	int			op;
	int64_t		ended_at_us;	/* microseconds since 1970-01-01 UTC */
	const char *role;
	size_t		role_len;
} LcEncoding;

/*
 * Step 1 of docs/format.md §12: an encoding's first 14 bytes are version 1
 * or 2 (format 2 then has its 16-byte salt after them), kind 1 (or 2, when
 * ended versions are allowed), table_id and seq.  NULL, or which of them
 * is not.
 */
extern const char *lc_encoding_header_problem(const uint8_t *enc, size_t len, bool allow_ended,
											  uint32_t table_id, int64_t seq);

/*
 * Takes an encoding (format 1 or 2, kind 1 or 2) apart.  Returns 0, or
 * LC_ERR_MALFORMED with the reason in err, or LC_ERR_NOMEM.
 */
extern int	lc_encoding_parse(const uint8_t *enc, size_t len, LcEncoding *out,
							  char *err, size_t errlen);
extern void lc_encoding_free(LcEncoding *e);

/* The column of types named name, or NULL. */
extern const LcColumnType *lc_column_find(const LcColumnType *types, size_t ntypes,
										  const char *name, size_t name_len);

/*
 * A value as JSON, as PostgreSQL's to_jsonb() shows it (timestamptz in
 * UTC): a value of a type without a decoder, or whose bytes are not a
 * value of its type, as {"type": ..., "hex": ...}.  t may be NULL (a
 * column no registration names).  False only when out ran out of memory.
 */
extern bool lc_value_render(const uint8_t *v, size_t len, const LcColumnType *t, LcBuf *out);

/* Results of comparing a value with the JSON shown for it. */
#define LC_SAME			0
#define LC_DIFFERENT	1
#define LC_UNCHECKED	2		/* (inside decode.c: shown, and compared, as hex) */

/*
 * Compares a value with j, as lc_value_render() shows it: LC_SAME,
 * LC_DIFFERENT or LC_ERR_NOMEM.  A value shown as hex equals only exactly
 * that {"type", "hex"} object.
 */
extern int	lc_value_compare(const uint8_t *v, size_t len, const LcColumnType *t,
							 const JsonValue *j);

/*
 * The row of a kind 1 encoding as a JSON object, column by column in
 * encoding order.  False only when out ran out of memory.
 */
extern bool lc_row_render(const LcEncoding *e, const LcColumnType *types, size_t ntypes,
						  LcBuf *out);

/*
 * Whether row (a JSON object: column name to value) shows exactly the
 * columns of a kind 1 encoding: every column of the encoding with the same
 * value, and no other column unless its value is null (NULLs are not
 * encoded).  Returns LC_SAME, LC_DIFFERENT (problem names the column), or
 * LC_ERR_NOMEM.
 */
extern int	lc_row_check(const LcEncoding *e, const LcColumnType *types, size_t ntypes,
						 const JsonValue *row, char *problem, size_t plen);

/* The end event of a kind 2 encoding as JSON: {"version", "how", "at", "by"}. */
extern bool lc_ended_render(const LcEncoding *e, LcBuf *out);

/* Whether an export's "ended" object shows exactly a kind 2 encoding. */
extern int	lc_ended_check(const LcEncoding *e, const JsonValue *ended, char *problem,
						   size_t plen);

/*
 * Column types from an enrolment's "columns" (docs/format.md §19):
 * [{"name", "type", "decode"}].  The types point into arr; *types is
 * malloc'ed.  LC_OK, LC_ERR_MALFORMED (err says why) or LC_ERR_NOMEM.
 */
extern int	lc_columns_from_json(const JsonValue *arr, LcColumnType **types, size_t *ntypes,
								 char *err, size_t errlen);

/* The ledgered table of enrolments, ehrledger.enrolled_table. */
#define LC_ENROLMENT_TABLE_ID 2000000011u

/* An enrolment (a kind 1 encoding of table LC_ENROLMENT_TABLE_ID) read. */
typedef struct LcEnrolment
{
	uint32_t	table_id;		/* the table enrolled */
	const char *name;			/* its name, schema-qualified; into the encoding */
	size_t		name_len;
	const char *event;
	size_t		event_len;
	char	   *columns_text;	/* malloc'ed: the columns as JSON text */
	JsonValue  *columns;
	LcColumnType *types;		/* malloc'ed, pointing into columns */
	size_t		ntypes;
} LcEnrolment;

/* Reads an enrolment; LC_OK, LC_ERR_MALFORMED (err) or LC_ERR_NOMEM. */
extern int	lc_enrolment_parse(const LcEncoding *e, LcEnrolment *out, char *err, size_t errlen);
extern void lc_enrolment_free(LcEnrolment *en);

/*
 * The ledgered table of erasures, ehrledger.erasure: one record per erased
 * leaf (docs/format.md §12, §14).
 */
#define LC_ERASURE_TABLE_ID 2000000013u

/* An erasure record (a kind 1 encoding of table LC_ERASURE_TABLE_ID) read. */
typedef struct LcErasure
{
	uint32_t	table_id;		/* the table whose leaf was erased */
	int64_t		erased_seq;		/* the erased leaf's ledger_seq */
	uint8_t		leaf_hash[LC_HASH_LEN]; /* the erased leaf, as sealed */
	int64_t		erased_at_us;	/* microseconds since 1970-01-01 UTC */
	const char *erased_by;		/* into the encoding, not terminated */
	size_t		erased_by_len;
	const char *approved_by;
	size_t		approved_by_len;
	const char *reason;
	size_t		reason_len;
	bool		signed_approval;	/* an approval signature is recorded */
} LcErasure;

/* Reads an erasure record; LC_OK or LC_ERR_MALFORMED (err). */
extern int	lc_erasure_parse(const LcEncoding *e, LcErasure *out, char *err, size_t errlen);

/* A JSON value written back compactly (for messages and output). */
extern bool lc_json_render(const JsonValue *v, LcBuf *out);

/* A string as a JSON string literal. */
extern bool lc_json_string(const char *s, size_t len, LcBuf *out);

#endif							/* LEDGER_DECODE_H */
