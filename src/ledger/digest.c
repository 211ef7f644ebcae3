/*
 * digest.c
 *		Signed digests: small statements of the chain's state that an auditor
 *		takes away, and later holds the ledger to.
 *
 * Next: proofs.c proves rows and consistency against a digest; verify.c
 * holds the chain to one.
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

#include "core/check.h"
#include "ledger/ledger.h"

PG_FUNCTION_INFO_V1(ehrledger_digest);
PG_FUNCTION_INFO_V1(ehrledger_node_public_key);

/*
 * Reads a digest the way every check does (src/core/check.c): a malformed
 * one is refused with core's reason.  The caller checks its signature.
 */
void
parse_digest(Jsonb *jb, ParsedDigest *d)
{
	LcDoc		doc;
	LcDigest	core;
	LcResult	r;

	doc.name = "digest";
	doc.text = JsonbToCString(NULL, &jb->root, VARSIZE(jb));
	doc.len = strlen(doc.text);
	lc_result_init(&r);
	lc_digest_read(&doc, &core, &r);
	if (r.oom)
		core_failed(LC_ERR_NOMEM);
	if (r.status != LC_VALID)
	{
		const char *why = strncmp(r.message, "digest: ", 8) == 0 ? r.message + 8 : r.message;

		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid ehrledger digest: %s", why),
				 errhint("Pass the JSON object that ehrledger.digest() returned, unchanged.")));
	}
	d->origin = pstrdup(core.origin);
	d->height = core.height;
	memcpy(d->block_hash, core.block_hash, LEDGER_HASH_LEN);
	d->last_seq = core.last_seq;
	d->sealed_at = unix_micros_to_timestamptz(core.sealed_at_us);
	memcpy(d->public_key, core.public_key, LEDGER_PUBKEY_LEN);
	memcpy(d->signature, core.signature, LEDGER_SIG_LEN);
	lc_digest_free(&core);
}

static bool
digest_signature_ok(const ParsedDigest *d)
{
	bool		failed;
	bool		ok = lc_digest_signature_ok(d->origin, d->height, d->block_hash, d->last_seq,
											timestamptz_to_unix_micros(d->sealed_at),
											d->public_key, d->signature, &failed);

	if (failed)
		core_failed(LC_ERR_NOMEM);
	return ok;
}

/* Which field of a digest differs from a stored block's, or NULL (docs/format.md §12, step 4). */
const char *
digest_block_mismatch(const ParsedDigest *d, const StoredBlock *b)
{
	LcBlockHeader h;

	block_to_core(&b->h, &h);
	return lc_digest_block_mismatch(d->height, d->block_hash, d->last_seq,
									timestamptz_to_unix_micros(d->sealed_at), &h, b->block_hash);
}

/* Whether key is this node's key, now or earlier, under that origin name. */
static bool
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

	if (stored_block_problem(b) != NULL)
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
