/*
 * digest.c
 *		Signed digests: small statements of the chain's state that an auditor
 *		takes away, and later holds the ledger to.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"

#include "ehrledger.h"

PG_FUNCTION_INFO_V1(ehrledger_digest);
PG_FUNCTION_INFO_V1(ehrledger_node_public_key);

static void
bad_digest(const char *field, const char *requirement)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid ehrledger digest: field \"%s\" %s", field, requirement),
			 errhint("Pass the JSON object that ehrledger.digest() returned, unchanged.")));
}

static bool
digest_field(Jsonb *jb, const char *key, JsonbValue *out)
{
	return getKeyJsonValueFromContainer(&jb->root, key, strlen(key), out) != NULL;
}

static char *
digest_string(Jsonb *jb, const char *key, int maxlen)
{
	JsonbValue	v;

	if (!digest_field(jb, key, &v))
		bad_digest(key, "is missing");
	if (v.type != jbvString)
		bad_digest(key, "must be a string");
	if (v.val.string.len == 0 || v.val.string.len > maxlen)
		bad_digest(key, psprintf("must hold 1 to %d characters", maxlen));
	return pnstrdup(v.val.string.val, v.val.string.len);
}

static int64
digest_int(Jsonb *jb, const char *key, int64 min)
{
	JsonbValue	v;
	char	   *text;
	int64		result;
	char	   *end;

	if (!digest_field(jb, key, &v))
		bad_digest(key, "is missing");
	if (v.type != jbvNumeric)
		bad_digest(key, "must be a number");
	text = DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(v.val.numeric)));
	errno = 0;
	result = strtoll(text, &end, 10);
	if (errno != 0 || *end != '\0' || result < min)
		bad_digest(key, psprintf("must be an integer of at least " INT64_FORMAT, min));
	return result;
}

static void
digest_hex(Jsonb *jb, const char *key, uint8 *out, size_t len)
{
	char	   *text = digest_string(jb, key, (int) (len * 2 + 16));
	size_t		i;

	if (strlen(text) != len * 2)
		bad_digest(key, psprintf("must be %zu hexadecimal digits", len * 2));
	for (i = 0; i < len * 2; i++)
		if (!isxdigit((unsigned char) text[i]))
			bad_digest(key, "must hold only hexadecimal digits");
	hex_decode(text, len * 2, (char *) out);
}

/* Checks a digest's form and fields; the caller checks its signature. */
void
parse_digest(Jsonb *jb, ParsedDigest *d)
{
	char	   *format;
	char	   *sealed_at;

	if (!JB_ROOT_IS_OBJECT(jb) || JB_ROOT_IS_SCALAR(jb))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid ehrledger digest: expected a JSON object"),
				 errhint("Pass the JSON object that ehrledger.digest() returned, unchanged.")));
	format = digest_string(jb, "format", 64);
	if (strcmp(format, DIGEST_FORMAT) != 0)
		bad_digest("format", "must be \"" DIGEST_FORMAT "\"");
	d->origin = digest_string(jb, "origin", 255);
	d->height = digest_int(jb, "height", 1);
	digest_hex(jb, "block_hash", d->block_hash, LEDGER_HASH_LEN);
	d->last_seq = digest_int(jb, "last_seq", 0);
	sealed_at = digest_string(jb, "sealed_at", 64);
	if (!parse_iso_utc(sealed_at, &d->sealed_at))
		bad_digest("sealed_at", "must be a UTC time like 2026-01-31T12:00:00.000000Z");
	digest_hex(jb, "public_key", d->public_key, LEDGER_PUBKEY_LEN);
	digest_hex(jb, "signature", d->signature, LEDGER_SIG_LEN);
}

bool
digest_signature_ok(const ParsedDigest *d)
{
	StringInfoData msg;
	bool		ok;

	initStringInfo(&msg);
	digest_message(&msg, d->origin, d->height, d->block_hash, d->last_seq, d->sealed_at);
	ok = ledger_signature_ok((uint8 *) msg.data, msg.len, d->signature, d->public_key);
	pfree(msg.data);
	return ok;
}

/* Whether key is this node's key, now or earlier, under that origin name. */
bool
ledger_key_trusted(const char *origin, const uint8 *key)
{
	Oid			types[2] = {TEXTOID, BYTEAOID};
	Datum		values[2];
	int			ret;
	bool		trusted;

	if (strcmp(origin, ledger_node_name()) == 0 &&
		memcmp(key, ledger_node_public_key(), LEDGER_PUBKEY_LEN) == 0)
		return true;
	values[0] = CStringGetTextDatum(origin);
	values[1] = PointerGetDatum(ledger_bytea(key, LEDGER_PUBKEY_LEN));
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	ret = SPI_execute_with_args("SELECT 1 FROM ehrledger.node_key"
								" WHERE origin = $1 AND public_key = $2",
								2, types, values, NULL, true, 1);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "SPI_execute failed: %s", SPI_result_code_string(ret));
	trusted = SPI_processed > 0;
	SPI_finish();
	return trusted;
}

/* A digest is usable here only if this node issued it, unaltered. */
void
digest_require_trusted(const ParsedDigest *d)
{
	if (!ledger_key_trusted(d->origin, d->public_key))
	{
		if (strcmp(d->origin, ledger_node_name()) != 0)
			ereport(ERROR,
					(errcode(ERRCODE_LEDGER_FOREIGN_DIGEST),
					 errmsg("the digest was issued by node \"%s\", not by this node (\"%s\")",
							d->origin, ledger_node_name()),
					 errhint("Verify a digest on the node that issued it.")));
		ereport(ERROR,
				(errcode(ERRCODE_LEDGER_FOREIGN_DIGEST),
				 errmsg("the digest is signed with a key that node \"%s\" never used",
						d->origin)));
	}
	if (!digest_signature_ok(d))
		ereport(ERROR,
				(errcode(ERRCODE_LEDGER_BAD_SIGNATURE),
				 errmsg("the digest's signature does not verify"),
				 errdetail("The digest was altered after it was issued, or was not issued by node \"%s\".",
						   d->origin)));
}

/*
 * ehrledger.digest(): signs a statement of the newest block.  The node first
 * checks that block's own hash and signature, so it never vouches for a
 * head someone rewrote in the table.
 */
/*
 * In a hospital network, a digest carries the certificate of this node's
 * newest final block (docs/format.md §18): outside signatures that its
 * chain up to there is what the other hospitals saw.  SPI is connected;
 * the text is appended in the caller's memory context.
 */
static void
append_certificate(StringInfo json, const char *origin)
{
	Oid			argtypes[1] = {TEXTOID};
	Datum		args[1];
	char	   *cert;
	MemoryContext outer = CurrentMemoryContext;

	if (!OidIsValid(get_relname_relid("final_block", ledger_namespace())))
		return;
	args[0] = CStringGetTextDatum(origin);
	if (SPI_execute_with_args("SELECT certificate::pg_catalog.text FROM ehrledger.final_block"
							  " WHERE origin OPERATOR(pg_catalog.=) $1 ORDER BY height DESC LIMIT 1",
							  1, argtypes, args, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "SPI_execute failed");
	/* SPI leaves its own context current; the digest is built in the caller's. */
	MemoryContextSwitchTo(outer);
	if (SPI_processed != 1)
		return;
	cert = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	appendStringInfo(json, ", \"certificate\": %s", cert);
}

Datum
ehrledger_digest(PG_FUNCTION_ARGS)
{
	const char *origin = ledger_node_name();
	Oid			argtypes[1] = {TEXTOID};
	Datum		args[1];
	int			ret;
	MemoryContext caller = CurrentMemoryContext;
	Datum		result;
	StoredBlock *b;
	uint8		computed[LEDGER_HASH_LEN];
	uint8		signature[LEDGER_SIG_LEN];
	StringInfoData msg;
	StringInfoData json;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	args[0] = CStringGetTextDatum(origin);
	ret = SPI_execute_with_args("SELECT " BLOCK_COLUMNS " FROM ehrledger.block"
								" WHERE origin = $1 ORDER BY height DESC LIMIT 1",
								1, argtypes, args, NULL, true, 1);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "SPI_execute failed: %s", SPI_result_code_string(ret));
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_LEDGER_EMPTY),
				 errmsg("the ledger of node \"%s\" has no sealed block yet", origin),
				 errhint("Protect a table, insert rows and call ehrledger.seal().")));
	b = palloc(sizeof(StoredBlock));
	if (!block_from_spi(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, b))
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("the newest block of node \"%s\" has a malformed %s",
						origin, b->malformed),
				 errhint("Run ehrledger.verify() to see what was changed.")));

	block_header_hash(&b->h, computed);
	if (memcmp(computed, b->block_hash, LEDGER_HASH_LEN) != 0 ||
		!ledger_signature_ok(b->block_hash, LEDGER_HASH_LEN, b->signature, b->h.public_key))
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("the newest block (height %lld) of node \"%s\" fails its own hash or signature check",
						(long long) b->h.height, origin),
				 errdetail("No digest is issued for a block that does not verify."),
				 errhint("Run ehrledger.verify() to see what was changed.")));

	initStringInfo(&msg);
	digest_message(&msg, origin, b->h.height, b->block_hash, b->h.last_seq, b->h.sealed_at);
	ledger_node_sign((uint8 *) msg.data, msg.len, signature);

	caller = MemoryContextSwitchTo(caller);
	initStringInfo(&json);
	appendStringInfoString(&json, "{\"format\": ");
	escape_json(&json, DIGEST_FORMAT);
	appendStringInfoString(&json, ", \"origin\": ");
	escape_json(&json, origin);
	appendStringInfo(&json, ", \"height\": " INT64_FORMAT, b->h.height);
	appendStringInfo(&json, ", \"block_hash\": \"%s\"", hex_encode_bytes(b->block_hash, LEDGER_HASH_LEN));
	appendStringInfo(&json, ", \"last_seq\": " INT64_FORMAT, b->h.last_seq);
	appendStringInfo(&json, ", \"sealed_at\": \"%s\"", format_iso_utc(b->h.sealed_at));
	appendStringInfo(&json, ", \"public_key\": \"%s\"",
					 hex_encode_bytes(ledger_node_public_key(), LEDGER_PUBKEY_LEN));
	appendStringInfo(&json, ", \"signature\": \"%s\"", hex_encode_bytes(signature, LEDGER_SIG_LEN));
	append_certificate(&json, origin);
	appendStringInfoChar(&json, '}');

	result = DirectFunctionCall1(jsonb_in, CStringGetDatum(json.data));
	MemoryContextSwitchTo(caller);
	SPI_finish();
	PG_RETURN_DATUM(result);
}

Datum
ehrledger_node_public_key(PG_FUNCTION_ARGS)
{
	PG_RETURN_BYTEA_P(ledger_bytea(ledger_node_public_key(), LEDGER_PUBKEY_LEN));
}
