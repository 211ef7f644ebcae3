/*
 * json.h
 *		A small, strict JSON parser (RFC 8259) for ehrledger-verify.
 *
 * The parser works in place: strings are unescaped inside the caller's
 * buffer, which must stay alive (and unchanged) while the tree is used.
 * It accepts exactly one JSON value surrounded by optional whitespace and
 * rejects everything else: trailing garbage, a byte order mark, control
 * characters or invalid UTF-8 in strings, lone surrogates, "\u0000",
 * duplicate object keys (in kept objects), nesting deeper than a limit, and
 * more values than a limit.  Numbers are kept as their text; json_int() converts the plain
 * integers the ledger formats use, with range checks.
 */
#ifndef EHRLEDGER_CLI_JSON_H
#define EHRLEDGER_CLI_JSON_H

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
	bool		skipped;		/* skip_key's value: syntax checked, nothing kept */
} JsonValue;

typedef struct JsonOptions
{
	int			max_depth;		/* containers nested deeper are rejected */
	size_t		max_values;		/* values kept (skipped ones not counted) */
	/*
	 * A member of the top-level object with this name is checked for syntax
	 * but its contents are not kept, nor limited by max_depth or max_values
	 * (only by JSON_SKIP_MAX_DEPTH): used for the "row" members, which show
	 * a row to people, may nest as deeply as the database allowed, and are
	 * not what is checked.  NULL for none.
	 */
	const char *skip_key;
} JsonOptions;

#define JSON_SKIP_MAX_DEPTH 1000000

/*
 * Parses text[0..len) in place.  On success returns true and sets *out (free
 * it with json_free).  On failure returns false and writes a message to err;
 * *oom is set when the failure is running out of memory.
 */
extern bool json_parse(char *text, size_t len, const JsonOptions *opts,
					   JsonValue **out, char *err, size_t errlen, bool *oom);
extern void json_free(JsonValue *v);

/* The member of an object with this name, or NULL. */
extern const JsonValue *json_get(const JsonValue *obj, const char *key);

/*
 * A JSON number that is a plain integer ("-"? digits, no fraction or
 * exponent, no leading zeros) within [min, max].  Returns 0 on success,
 * -1 when it is not a plain integer, -2 when it is out of range.
 */
extern int	json_int(const JsonValue *v, int64_t min, int64_t max, int64_t *out);

extern const char *json_type_name(JsonType t);

#endif							/* EHRLEDGER_CLI_JSON_H */
