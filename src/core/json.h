/*
 * json.h
 *		A small, strict JSON parser (RFC 8259) for the ledger's documents.
 *
 * The parser works in place: strings are unescaped inside the caller's
 * buffer, which must stay alive (and unchanged) while the tree is used.
 * It accepts exactly one JSON value surrounded by optional whitespace and
 * rejects everything else: trailing garbage, a byte order mark, control
 * characters or invalid UTF-8 in strings, lone surrogates, "\u0000",
 * duplicate object keys (unless allowed), nesting deeper than a limit, and
 * more values than a limit.  Numbers are kept as their text; json_int() converts the plain
 * integers the ledger formats use, with range checks.
 */
#ifndef EHRLEDGER_CORE_JSON_H
#define EHRLEDGER_CORE_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum JsonType
{
	JSON_NULL,
	JSON_FALSE,
	JSON_TRUE,
	JSON_NUMBER,
	JSON_STRING,
	JSON_ARRAY,
	JSON_OBJECT
} JsonType;

typedef struct JsonValue
{
	JsonType	type;
	const char *key;			/* member name when inside an object, else NULL */
	size_t		key_len;
	const char *str;			/* JSON_STRING: unescaped, NUL-terminated; */
	size_t		len;			/* JSON_NUMBER: its text (not terminated) */
	struct JsonValue *items;	/* members or elements, in document order */
	size_t		count;
} JsonValue;

typedef struct JsonOptions
{
	int			max_depth;		/* containers nested deeper are rejected */
	size_t		max_values;		/* values kept, those under row_key excepted */
	/*
	 * A member of the top-level object with this name (the "row" members,
	 * which show a row as the database made it) is kept like the rest, but
	 * may nest up to JSON_ROW_MAX_DEPTH deep and its values are not counted
	 * against max_values.  NULL for none.
	 */
	const char *row_key;
	/* Objects may repeat a key (the json type allows it; the last one counts). */
	bool		allow_duplicates;
} JsonOptions;

#define JSON_ROW_MAX_DEPTH 1000

/*
 * Parses text[0..len) in place.  On success returns true and sets *out (free
 * it with json_free).  On failure returns false and writes a message to err;
 * *oom is set when the failure is running out of memory.
 */
extern bool json_parse(char *text, size_t len, const JsonOptions *opts,
					   JsonValue **out, char *err, size_t errlen, bool *oom);
extern void json_free(JsonValue *v);

/* The member of an object with this name (the last, if repeated), or NULL. */
extern const JsonValue *json_get(const JsonValue *obj, const char *key);
extern const JsonValue *json_get_n(const JsonValue *obj, const char *key, size_t key_len);

/*
 * A JSON number that is a plain integer ("-"? digits, no fraction or
 * exponent, no leading zeros) within [min, max].  Returns 0 on success,
 * -1 when it is not a plain integer, -2 when it is out of range.
 */
extern int	json_int(const JsonValue *v, int64_t min, int64_t max, int64_t *out);

extern const char *json_type_name(JsonType t);

#endif							/* EHRLEDGER_CORE_JSON_H */
