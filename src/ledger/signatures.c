/*
 * signatures.c
 *		Authors' Ed25519 signatures over the rows they write.
 *
 * A table protected with signer_column and signature_column refuses, at
 * insert, a row whose signature is missing, malformed, made by an unknown
 * or revoked signer, made with another key, or made over other content.
 * Keys come from ehrledger.actor_keys, the ledgered history of actors'
 * keys; a row is judged with the key its signer held when it was written.
 *
 * Next: the signed row is encoded (encode.c) and sealed like any other;
 * verify.c and proofs.c show its signature again.
 */
#include "postgres.h"

#include <sodium.h>

#include "access/htup_details.h"
#include "access/xact.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/hsearch.h"
#include "catalog/pg_type.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "access/relation.h"

#include "core/ledger_core.h"
#include "ledger/ledger.h"

PG_FUNCTION_INFO_V1(ehrledger_keypair);
PG_FUNCTION_INFO_V1(ehrledger_sign);
PG_FUNCTION_INFO_V1(ehrledger_verify_signature);
PG_FUNCTION_INFO_V1(ehrledger_signing_payload);
PG_FUNCTION_INFO_V1(ehrledger_verify_record);
PG_FUNCTION_INFO_V1(ehrledger_actors_changed);

/*
 * Signers' current keys are cached per backend, so a signed insert costs
 * one Ed25519 verification and no query.  A generation counter in shared
 * memory, bumped after any transaction that changed actors commits,
 * invalidates every cache: a key read before a revocation committed is
 * never used after it.
 */
#define ACTOR_ID_MAX 200
/* Signers' keys kept per backend; more start the cache afresh. */
#define MAX_CACHED_SIGNERS 10000

typedef struct SignerEntry
{
	char		actor_id[ACTOR_ID_MAX + 1];
	uint8		key[LEDGER_PUBKEY_LEN];
} SignerEntry;

static pg_atomic_uint64 *actor_generation = NULL;
static uint64 cached_generation = 0;
static HTAB *signer_cache = NULL;
static bool bump_at_commit = false;
static bool xact_callback_registered = false;
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static void
signatures_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(pg_atomic_uint64)));
}

static void
signatures_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	actor_generation = ShmemInitStruct("ehrledger actor generation",
									   sizeof(pg_atomic_uint64), &found);
	if (!found)
		pg_atomic_init_u64(actor_generation, 1);
	LWLockRelease(AddinShmemInitLock);
}

/* Called from _PG_init. */
void
signatures_init(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = signatures_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = signatures_shmem_startup;
}

static void
actors_xact_callback(XactEvent event, void *arg)
{
	(void) arg;
	if (event == XACT_EVENT_COMMIT && bump_at_commit && actor_generation != NULL)
		pg_atomic_fetch_add_u64(actor_generation, 1);
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
		event == XACT_EVENT_PARALLEL_COMMIT || event == XACT_EVENT_PARALLEL_ABORT)
		bump_at_commit = false;
}

/* ehrledger._actors_changed(): register/rotate/revoke call it. */
Datum
ehrledger_actors_changed(PG_FUNCTION_ARGS)
{
	(void) fcinfo;
	if (!xact_callback_registered)
	{
		RegisterXactCallback(actors_xact_callback, NULL);
		xact_callback_registered = true;
	}
	bump_at_commit = true;
	PG_RETURN_VOID();
}

/*
 * The generation of actors and consents that caches built now belong to, or
 * 0 while this transaction changes them itself (it must see its own
 * uncommitted changes, so it may not use or fill a cache).
 */
uint64
ledger_actor_generation(void)
{
	if (actor_generation == NULL || bump_at_commit)
		return 0;
	return pg_atomic_read_u64(actor_generation);
}

static void
signer_cache_reset(uint64 gen)
{
	HASHCTL		ctl;

	if (signer_cache != NULL)
		hash_destroy(signer_cache);
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = ACTOR_ID_MAX + 1;
	ctl.entrysize = sizeof(SignerEntry);
	signer_cache = hash_create("ehrledger signer keys", 64, &ctl, HASH_ELEM | HASH_STRINGS);
	cached_generation = gen;
}

static SignerEntry *
cached_signer(const char *actor_id)
{
	uint64		gen;
	char		key[ACTOR_ID_MAX + 1];

	/* A transaction that changed actors sees its own uncommitted keys. */
	if (actor_generation == NULL || bump_at_commit || strlen(actor_id) > ACTOR_ID_MAX)
		return NULL;
	gen = pg_atomic_read_u64(actor_generation);
	if (signer_cache == NULL || gen != cached_generation)
	{
		signer_cache_reset(gen);
		return NULL;
	}
	memset(key, 0, sizeof(key));
	strcpy(key, actor_id);
	return hash_search(signer_cache, key, HASH_FIND, NULL);
}

static void
cache_signer(const char *actor_id, uint64 gen, const uint8 *public_key)
{
	char		key[ACTOR_ID_MAX + 1];
	SignerEntry *e;

	if (signer_cache == NULL || gen != cached_generation || bump_at_commit ||
		strlen(actor_id) > ACTOR_ID_MAX)
		return;
	if (hash_get_num_entries(signer_cache) >= MAX_CACHED_SIGNERS)
		signer_cache_reset(gen);
	memset(key, 0, sizeof(key));
	strcpy(key, actor_id);
	e = hash_search(signer_cache, key, HASH_ENTER, NULL);
	memcpy(e->key, public_key, LEDGER_PUBKEY_LEN);
}

static void
require_arg(FunctionCallInfo fcinfo, int n, const char *name)
{
	if (PG_ARGISNULL(n))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be NULL", name)));
}

static bytea *
sized_arg(FunctionCallInfo fcinfo, int n, const char *name, size_t len, size_t alt)
{
	bytea	   *b;

	require_arg(fcinfo, n, name);
	b = PG_GETARG_BYTEA_PP(n);
	if (VARSIZE_ANY_EXHDR(b) != len && VARSIZE_ANY_EXHDR(b) != alt)
	{
		if (alt != len)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s must be %zu or %zu bytes, not %zu", name, len, alt,
							VARSIZE_ANY_EXHDR(b))));
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be %zu bytes, not %zu", name, len, VARSIZE_ANY_EXHDR(b))));
	}
	return b;
}

/* ehrledger.keypair(): a fresh key pair, for tests, demos and simple clients. */
Datum
ehrledger_keypair(PG_FUNCTION_ARGS)
{
	uint8		pk[crypto_sign_PUBLICKEYBYTES];
	uint8		sk[crypto_sign_SECRETKEYBYTES];
	TupleDesc	desc;
	Datum		values[2];
	bool		nulls[2] = {false, false};

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	crypto_sign_keypair(pk, sk);
	values[0] = PointerGetDatum(ledger_bytea(pk, sizeof(pk)));
	values[1] = PointerGetDatum(ledger_bytea(sk, sizeof(sk)));
	sodium_memzero(sk, sizeof(sk));
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), values, nulls)));
}

/*
 * ehrledger.sign(message, secret_key): secret_key is the 32-byte seed or
 * libsodium's 64-byte form (seed, then public key).
 */
Datum
ehrledger_sign(PG_FUNCTION_ARGS)
{
	bytea	   *msg;
	bytea	   *key;
	uint8		pk[crypto_sign_PUBLICKEYBYTES];
	uint8		sk[crypto_sign_SECRETKEYBYTES];
	uint8		sig[crypto_sign_BYTES];

	require_arg(fcinfo, 0, "message");
	msg = PG_GETARG_BYTEA_PP(0);
	key = sized_arg(fcinfo, 1, "secret key", 32, 64);
	crypto_sign_seed_keypair(pk, sk, (const uint8 *) VARDATA_ANY(key));
	if (VARSIZE_ANY_EXHDR(key) == 64 &&
		memcmp(pk, (const uint8 *) VARDATA_ANY(key) + 32, sizeof(pk)) != 0)
	{
		sodium_memzero(sk, sizeof(sk));
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the 64-byte secret key's second half is not the public key of its first"),
				 errhint("Pass the 32-byte seed, or the secret_key ehrledger.keypair() returned.")));
	}
	crypto_sign_detached(sig, NULL, (const uint8 *) VARDATA_ANY(msg), VARSIZE_ANY_EXHDR(msg), sk);
	sodium_memzero(sk, sizeof(sk));
	PG_RETURN_BYTEA_P(ledger_bytea(sig, sizeof(sig)));
}

/* ehrledger.verify_signature(message, signature, public_key). */
Datum
ehrledger_verify_signature(PG_FUNCTION_ARGS)
{
	bytea	   *msg;
	bytea	   *sig;
	bytea	   *pk;

	require_arg(fcinfo, 0, "message");
	msg = PG_GETARG_BYTEA_PP(0);
	sig = sized_arg(fcinfo, 1, "signature", LEDGER_SIG_LEN, LEDGER_SIG_LEN);
	pk = sized_arg(fcinfo, 2, "public key", LEDGER_PUBKEY_LEN, LEDGER_PUBKEY_LEN);
	PG_RETURN_BOOL(ledger_signature_ok((const uint8 *) VARDATA_ANY(msg), VARSIZE_ANY_EXHDR(msg),
									   (const uint8 *) VARDATA_ANY(sig),
									   (const uint8 *) VARDATA_ANY(pk)));
}

/* The signed-table options of a protected table, or false. */
static bool
ledger_signed_columns(Relation rel, AttrNumber *signer, AttrNumber *signature)
{
	Oid			types[1] = {OIDOID};
	Datum		values[1] = {ObjectIdGetDatum(RelationGetRelid(rel))};
	int			ret;
	bool		found = false;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	ret = SPI_execute_with_args("SELECT signer_column::text, signature_column::text"
								" FROM ehrledger.protected_tables WHERE tbl OPERATOR(pg_catalog.=) $1::pg_catalog.regclass"
								" AND signer_column IS NOT NULL",
								1, types, values, NULL, true, 1);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "SPI_execute failed: %s", SPI_result_code_string(ret));
	if (SPI_processed == 1)
	{
		TupleDesc	desc = RelationGetDescr(rel);

		*signer = SPI_fnumber(desc, SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1));
		*signature = SPI_fnumber(desc, SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2));
		found = *signer > 0 && *signature > 0;
	}
	SPI_finish();
	return found;
}

/* A copy in the context that was current before SPI_connect(). */
static char *
spi_strdup(const char *s)
{
	char	   *copy;

	if (s == NULL)
		return NULL;
	copy = SPI_palloc(strlen(s) + 1);
	strcpy(copy, s);
	return copy;
}

/*
 * The key actor_id held for a row numbered seq (seq < 0: now, for a new row).
 * Returns NULL, with *why set, when there is none.  Actors are not public:
 * ehrledger._signer_key() is the ledger owner's, and this, reached from the
 * insert trigger and verify_record(), its only caller.
 */
static bytea *
signer_key(const char *actor_id, int64 seq, char **role, char **why)
{
	Oid			types[2] = {TEXTOID, INT8OID};
	Datum		values[2];
	char		nulls[2] = {' ', ' '};
	int			ret;
	bytea	   *key = NULL;
	UserSwitch	sw;

	*why = NULL;
	*role = NULL;
	values[0] = CStringGetTextDatum(actor_id);
	values[1] = Int64GetDatum(seq);
	if (seq < 0)
		nulls[1] = 'n';
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	user_switch_ledger_owner(&sw);
	ret = SPI_execute_with_args("SELECT role, revoked_at, public_key"
								" FROM ehrledger._signer_key($1, $2)",
								2, types, values, nulls, true, 1);
	user_switch_end(&sw);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "SPI_execute failed: %s", SPI_result_code_string(ret));
	if (SPI_processed == 0)
		*why = spi_strdup(psprintf("\"%s\" is not a registered actor", actor_id));
	else
	{
		HeapTuple	tup = SPI_tuptable->vals[0];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		char	   *revoked = SPI_getvalue(tup, desc, 2);
		bool		isnull;
		Datum		k = SPI_getbinval(tup, desc, 3, &isnull);

		*role = spi_strdup(SPI_getvalue(tup, desc, 1));
		if (!isnull)
		{
			bytea	   *b = DatumGetByteaPP(k);

			key = SPI_palloc(VARHDRSZ + VARSIZE_ANY_EXHDR(b));
			SET_VARSIZE(key, VARHDRSZ + VARSIZE_ANY_EXHDR(b));
			memcpy(VARDATA(key), VARDATA_ANY(b), VARSIZE_ANY_EXHDR(b));
		}
		else if (seq < 0 && revoked != NULL)
			*why = spi_strdup(psprintf("actor \"%s\" was revoked and can sign nothing new",
									   actor_id));
		else
			*why = spi_strdup(psprintf("actor \"%s\" held no key when this row was written",
									   actor_id));
	}
	SPI_finish();
	return key;
}

/*
 * The payload of a row given as values of the table's own tuple
 * descriptor, signed under the name of table signed_relid: the table's
 * own, or for a partition its partitioned table's (ledger_signed_relid()).
 */
static void
payload_of(Oid signed_relid, const RowEncoder *enc, StringInfo buf, const Datum *values,
		   const bool *isnull, AttrNumber signature_attnum)
{
	row_signing_payload(enc, buf, get_namespace_name(get_rel_namespace(signed_relid)),
						get_rel_name(signed_relid), values, isnull, signature_attnum);
}

/*
 * Called by the insert trigger for signed tables: refuses a row whose
 * signature is not its current signer's over exactly this content, signed
 * under the name of table signed_relid.
 */
void
check_row_signature(Relation rel, Oid signed_relid, const RowEncoder *enc, AttrNumber signer_attnum,
					AttrNumber signature_attnum, const Datum *values, const bool *isnull)
{
	const char *table = get_rel_name(signed_relid);
	const char *sigcol = NameStr(TupleDescAttr(RelationGetDescr(rel), signature_attnum - 1)->attname);
	char	   *signer;
	bytea	   *sig;
	SignerEntry *cached;
	const uint8 *key_bytes;
	char	   *role;
	char	   *why;
	StringInfoData payload;

	if (table == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("the table rows of \"%s\" are signed under does not exist",
						RelationGetRelationName(rel))));
	if (isnull[signer_attnum - 1])
		ereport(ERROR,
				(errcode(ERRCODE_LEDGER_BAD_ROW_SIGNATURE),
				 errmsg("row of signed table \"%s\" names no signer", table)));
	signer = TextDatumGetCString(values[signer_attnum - 1]);
	if (isnull[signature_attnum - 1])
		ereport(ERROR,
				(errcode(ERRCODE_LEDGER_BAD_ROW_SIGNATURE),
				 errmsg("row of signed table \"%s\" has no signature", table),
				 errhint("Sign ehrledger.signing_payload('%s', row) with %s's key and store it in column \"%s\".",
						 table, signer, sigcol)));
	sig = DatumGetByteaPP(values[signature_attnum - 1]);
	if (VARSIZE_ANY_EXHDR(sig) != LEDGER_SIG_LEN)
		ereport(ERROR,
				(errcode(ERRCODE_LEDGER_BAD_ROW_SIGNATURE),
				 errmsg("signature of a row of \"%s\" must be %d bytes, not %zu",
						table, LEDGER_SIG_LEN, VARSIZE_ANY_EXHDR(sig))));
	cached = cached_signer(signer);
	if (cached != NULL)
		key_bytes = cached->key;
	else
	{
		uint64		gen = actor_generation ? pg_atomic_read_u64(actor_generation) : 0;
		bytea	   *key = signer_key(signer, -1, &role, &why);

		if (key == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_LEDGER_BAD_ROW_SIGNATURE),
					 errmsg("row of \"%s\" cannot be accepted: %s", table, why)));
		key_bytes = (const uint8 *) VARDATA_ANY(key);
		cache_signer(signer, gen, key_bytes);
	}

	initStringInfo(&payload);
	payload_of(signed_relid, enc, &payload, values, isnull, signature_attnum);
	if (!ledger_signature_ok((uint8 *) payload.data, payload.len,
							 (const uint8 *) VARDATA_ANY(sig), key_bytes))
		ereport(ERROR,
				(errcode(ERRCODE_LEDGER_BAD_ROW_SIGNATURE),
				 errmsg("signature of \"%s\" does not verify over this row of \"%s\"", signer, table),
				 errdetail("The row differs from what was signed, or another key signed it.")));
	pfree(payload.data);
}

/*
 * ehrledger.signing_payload(tbl, row): the exact bytes the author of a row
 * signs.  row is the row as JSON (as to_jsonb gives it); columns it lacks
 * are NULL, and the signature and ledger columns are ignored.  The caller
 * needs SELECT on the table: the payload is a row's encoding without its
 * number and salt, an oracle for guessing rows otherwise.
 */
Datum
ehrledger_signing_payload(PG_FUNCTION_ARGS)
{
	Oid			relid;
	Relation	rel;
	RowEncoder *enc;
	AttrNumber	signer = InvalidAttrNumber;
	AttrNumber	signature = InvalidAttrNumber;
	Oid			types[1] = {JSONBOID};
	Datum		args[1];
	int			ret;
	bool		isnull;
	HeapTupleHeader rec;
	HeapTupleData tuple;
	Datum	   *values;
	bool	   *nulls;
	StringInfoData buf;
	bytea	   *result;
	UserSwitch	sw;

	require_arg(fcinfo, 0, "table");
	require_arg(fcinfo, 1, "row");
	relid = PG_GETARG_OID(0);
	if (ledger_table_id(relid, GetActiveSnapshot()) < 0)
		ereport(ERROR,
				(errcode(ERRCODE_LEDGER_NOT_PROTECTED),
				 errmsg("table \"%s\" is not protected by ehrledger",
						get_rel_name(relid) ? get_rel_name(relid) : "?")));
	if (pg_class_aclcheck(relid, GetUserId(), ACL_SELECT) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for table %s", get_rel_name(relid)),
				 errdetail("The signing payload of a row shows how rows of the table are encoded."),
				 errhint("An author who signs rows of the table needs SELECT on it.")));
	rel = relation_open(relid, AccessShareLock);
	enc = row_encoder_create(RelationGetDescr(rel), CurrentMemoryContext);
	(void) ledger_signed_columns(rel, &signer, &signature);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	args[0] = PG_GETARG_DATUM(1);
	/* The columns' input functions and domains are the table owner's code. */
	user_switch_restricted(rel->rd_rel->relowner, &sw);
	ret = SPI_execute_with_args(psprintf("SELECT pg_catalog.jsonb_populate_record(NULL::%s, $1)",
										 quote_qualified_identifier(get_namespace_name(RelationGetNamespace(rel)),
																	RelationGetRelationName(rel))),
								1, types, args, NULL, true, 1);
	user_switch_end(&sw);
	if (ret != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not read the row: %s", SPI_result_code_string(ret));
	rec = DatumGetHeapTupleHeader(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	tuple.t_len = HeapTupleHeaderGetDatumLength(rec);
	ItemPointerSetInvalid(&tuple.t_self);
	tuple.t_tableOid = relid;
	tuple.t_data = rec;
	values = palloc(sizeof(Datum) * RelationGetDescr(rel)->natts);
	nulls = palloc(sizeof(bool) * RelationGetDescr(rel)->natts);
	heap_deform_tuple(&tuple, RelationGetDescr(rel), values, nulls);

	initStringInfo(&buf);
	payload_of(ledger_signed_relid(relid), enc, &buf, values, nulls, signature);
	result = SPI_palloc(VARHDRSZ + buf.len);
	SET_VARSIZE(result, VARHDRSZ + buf.len);
	memcpy(VARDATA(result), buf.data, buf.len);
	SPI_finish();
	relation_close(rel, AccessShareLock);
	PG_RETURN_BYTEA_P(result);
}

typedef struct RecordCheck
{
	Relation	rel;
	Oid			signed_relid;
	RowEncoder *enc;
	AttrNumber	signer;
	AttrNumber	signature;
	bool		found;
	char	   *signer_id;
	bytea	   *sig;
	bytea	   *stored_hash;
	StringInfoData payload;
	uint8		leaf[LEDGER_HASH_LEN];
} RecordCheck;

static void
record_row(void *arg, int64 seq, StringInfo encoding, Datum json, TupleTableSlot *slot)
{
	RecordCheck *rc = arg;

	(void) seq;
	(void) json;
	rc->found = true;
	ledger_leaf_hash(encoding->data, encoding->len, rc->leaf);
	if (!slot->tts_isnull[rc->signer - 1])
		rc->signer_id = TextDatumGetCString(slot->tts_values[rc->signer - 1]);
	if (!slot->tts_isnull[rc->signature - 1])
		rc->sig = DatumGetByteaPCopy(slot->tts_values[rc->signature - 1]);
	if (!slot->tts_isnull[row_encoder_hash_attnum(rc->enc) - 1])
		rc->stored_hash = DatumGetByteaPCopy(slot->tts_values[row_encoder_hash_attnum(rc->enc) - 1]);
	payload_of(rc->signed_relid, rc->enc, &rc->payload, slot->tts_values, slot->tts_isnull,
			   rc->signature);
}

/*
 * ehrledger.verify_record(tbl, ledger_seq): the pharmacist's check.  Is the
 * row intact (against its sealed hash, or its own while unsealed), and does
 * its signature verify with the key its signer held when it was written?
 */
Datum
ehrledger_verify_record(PG_FUNCTION_ARGS)
{
	Oid			relid;
	int64		seq;
	int32		table_id;
	LedgerTable *t;
	RecordCheck rc;
	TupleDesc	desc;
	Datum		values[5];
	bool		nulls[5] = {false, false, false, false, false};
	bool		valid = true;
	char	   *detail = NULL;
	int64		height = 0;
	bytea	   *key;
	char	   *role = NULL;
	char	   *why;

	require_arg(fcinfo, 0, "table");
	require_arg(fcinfo, 1, "ledger_seq");
	relid = PG_GETARG_OID(0);
	seq = PG_GETARG_INT64(1);
	/* of a partitioned table: the row in the partition that holds it */
	t = ledger_row_table_for_reader(relid, seq);
	if (t == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA),
				 errmsg("table \"%s\" has no row with ledger_seq " INT64_FORMAT,
						get_rel_name(relid), seq)));
	relid = t->relid;
	table_id = t->table_id;
	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");

	memset(&rc, 0, sizeof(rc));
	rc.rel = relation_open(relid, AccessShareLock);
	rc.signed_relid = ledger_signed_relid(relid);
	if (!ledger_signed_columns(rc.rel, &rc.signer, &rc.signature))
		ereport(ERROR,
				(errcode(ERRCODE_LEDGER_NOT_SIGNED),
				 errmsg("table \"%s\" is not protected with signer and signature columns",
						RelationGetRelationName(rc.rel)),
				 errhint("Check rows of unsigned tables with ehrledger.verify().")));
	rc.enc = row_encoder_create(RelationGetDescr(rc.rel), CurrentMemoryContext);
	initStringInfo(&rc.payload);
	ledger_read_rows(relid, table_id, seq, seq, record_row, &rc);
	if (!rc.found)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA),
				 errmsg("table \"%s\" has no row with ledger_seq " INT64_FORMAT,
						RelationGetRelationName(rc.rel), seq)));

	/* Integrity first: the sealed leaf, or the row's own stored hash. */
	height = ledger_sealed_leaf(seq, table_id, rc.leaf, &detail);
	if (height == 0 &&
		(rc.stored_hash == NULL || VARSIZE_ANY_EXHDR(rc.stored_hash) != LEDGER_HASH_LEN ||
		 memcmp(VARDATA_ANY(rc.stored_hash), rc.leaf, LEDGER_HASH_LEN) != 0))
		detail = "the unsealed row no longer matches the hash taken when it was written";
	if (detail != NULL)
		valid = false;

	if (rc.signer_id == NULL || rc.sig == NULL || VARSIZE_ANY_EXHDR(rc.sig) != LEDGER_SIG_LEN)
	{
		valid = false;
		detail = detail ? detail : "the row has no well-formed signer and signature";
	}
	else
	{
		key = signer_key(rc.signer_id, seq, &role, &why);
		if (key == NULL)
		{
			valid = false;
			detail = detail ? detail : why;
		}
		else if (!ledger_signature_ok((uint8 *) rc.payload.data, rc.payload.len,
									  (const uint8 *) VARDATA_ANY(rc.sig),
									  (const uint8 *) VARDATA_ANY(key)))
		{
			valid = false;
			detail = detail ? detail : "the signature does not verify over the row with the signer's key";
		}
	}
	if (detail == NULL)
		detail = height > 0 ? psprintf("signed by %s and sealed in block " INT64_FORMAT,
									   rc.signer_id, height)
			: psprintf("signed by %s; not sealed yet", rc.signer_id);

	values[0] = BoolGetDatum(valid);
	if (rc.signer_id)
		values[1] = CStringGetTextDatum(rc.signer_id);
	else
		nulls[1] = true;
	if (role)
		values[2] = CStringGetTextDatum(role);
	else
		nulls[2] = true;
	if (height > 0)
		values[3] = Int64GetDatum(height);
	else
		nulls[3] = true;
	values[4] = CStringGetTextDatum(detail);
	relation_close(rc.rel, AccessShareLock);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), values, nulls)));
}
