/*
 * network.c
 *		Blocks and acknowledgments between hospitals: what of them C checks.
 *
 * Each hospital publishes its own blocks and its own acknowledgments
 * (publication ehrledger_net, filtered on origin and acker) and subscribes
 * to every peer's.  Logical replication carries them; the apply worker runs
 * in replica mode, where the triggers check every incoming block against
 * its origin's key and chain before it is stored.  A block that fails is
 * skipped (the trigger returns NULL), so a bad peer never stops the stream.
 *
 * A block is in one of the states that states.sql, beside this file, names
 * and draws: a peer's is pending, admitted or rejected, this node's sealed
 * or acknowledged, and either becomes final; conflicting signed statements
 * are evidence.  states.sql alone moves a block from one state to the
 * next.  Here, block_arrived() checks what only C can (signature,
 * soundness, chain) and hands its verdict to _to_admitted();
 * network_block_sealed() hands this node's new block to
 * _to_acknowledged(); the sealer's round runs _check_pending().
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/pg_class.h"
#include "commands/sequence.h"
#include "executor/executor.h"
#include "utils/fmgroids.h"
#include "utils/hsearch.h"
#include "utils/snapmgr.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "replication/walreceiver.h"
#include "replication/worker_internal.h"
#include "storage/fd.h"
#include "catalog/pg_subscription.h"
#include "utils/syscache.h"
#include "utils/pg_lsn.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "utils/tuplestore.h"
#include "parser/parse_relation.h"
#include "parser/parse_type.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/resowner.h"
#include "access/xact.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/timestamp.h"

#include "core/ledger_core.h"
#include "ledger/ledger.h"
#include "network/network.h"

PG_FUNCTION_INFO_V1(ehrledger_node_name);
PG_FUNCTION_INFO_V1(ehrledger_ack_message);
PG_FUNCTION_INFO_V1(ehrledger_sign_ack);
PG_FUNCTION_INFO_V1(ehrledger_erasure_message);
PG_FUNCTION_INFO_V1(ehrledger_sign_erasure);
PG_FUNCTION_INFO_V1(ehrledger_block_header);
PG_FUNCTION_INFO_V1(ehrledger_header_origin);
PG_FUNCTION_INFO_V1(ehrledger_block_arrived);
PG_FUNCTION_INFO_V1(ehrledger_check_conninfo);

/*
 * ehrledger._check_conninfo(conninfo): raises the error CREATE SUBSCRIPTION
 * would, before add_peer() creates a replication slot (which a failed
 * transaction does not take back).
 */
Datum
ehrledger_check_conninfo(PG_FUNCTION_ARGS)
{
	load_file("libpqwalreceiver", false);
	walrcv_check_conninfo(text_to_cstring(PG_GETARG_TEXT_PP(0)));
	PG_RETURN_VOID();
}

/* ehrledger.node_name(): this node's name in blocks and the network. */
Datum
ehrledger_node_name(PG_FUNCTION_ARGS)
{
	(void) fcinfo;
	PG_RETURN_TEXT_P(cstring_to_text(ledger_node_name()));
}

/* The message a hospital signs to acknowledge a block (docs/format.md §18). */
static void
ack_message(StringInfo buf, const char *origin, int64 height, const uint8 *hash)
{
	LcBuf		msg;

	lc_buf_init(&msg);
	lc_ack_message(&msg, origin, height, hash);
	if (msg.failed)
		core_failed(LC_ERR_NOMEM);
	appendBinaryStringInfo(buf, (const char *) msg.data, msg.len);
	lc_buf_free(&msg);
}

static const uint8 *
hash_arg(FunctionCallInfo fcinfo, int n)
{
	bytea	   *b = PG_GETARG_BYTEA_PP(n);

	if (VARSIZE_ANY_EXHDR(b) != LEDGER_HASH_LEN)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a block hash is %d bytes, not %d", LEDGER_HASH_LEN,
						(int) VARSIZE_ANY_EXHDR(b))));
	return (const uint8 *) VARDATA_ANY(b);
}

/* ehrledger.ack_message(origin, height, block_hash): the bytes acks sign. */
Datum
ehrledger_ack_message(PG_FUNCTION_ARGS)
{
	StringInfoData buf;

	initStringInfo(&buf);
	ack_message(&buf, text_to_cstring(PG_GETARG_TEXT_PP(0)), PG_GETARG_INT64(1),
				hash_arg(fcinfo, 2));
	PG_RETURN_BYTEA_P(ledger_bytea(buf.data, buf.len));
}

/*
 * ehrledger._sign_ack(origin, height, block_hash): this node's signature of
 * its acknowledgment.  Only ever a tagged ack message: the node key signs
 * nothing else through here.
 */
Datum
ehrledger_sign_ack(PG_FUNCTION_ARGS)
{
	StringInfoData buf;
	uint8		sig[LEDGER_SIG_LEN];

	initStringInfo(&buf);
	ack_message(&buf, text_to_cstring(PG_GETARG_TEXT_PP(0)), PG_GETARG_INT64(1),
				hash_arg(fcinfo, 2));
	ledger_node_sign((const uint8 *) buf.data, buf.len, sig);
	PG_RETURN_BYTEA_P(ledger_bytea(sig, LEDGER_SIG_LEN));
}

/* The message an origin signs for an erased shared row (docs/format.md §18). */
static bytea *
erasure_message(FunctionCallInfo fcinfo)
{
	LcBuf		msg;
	bytea	   *result;

	lc_buf_init(&msg);
	lc_erasure_message(&msg, text_to_cstring(PG_GETARG_TEXT_PP(0)), PG_GETARG_INT64(1),
					   (uint32) PG_GETARG_INT32(2), hash_arg(fcinfo, 3));
	if (msg.failed)
		core_failed(LC_ERR_NOMEM);
	result = ledger_bytea(msg.data, msg.len);
	lc_buf_free(&msg);
	return result;
}

/* ehrledger.erasure_message(origin, ledger_seq, table_id, leaf): the bytes signed. */
Datum
ehrledger_erasure_message(PG_FUNCTION_ARGS)
{
	PG_RETURN_BYTEA_P(erasure_message(fcinfo));
}

/*
 * ehrledger._sign_erasure(origin, ledger_seq, table_id, leaf): this node's
 * signature of the erasure of one of its own shared rows.  Only ever a
 * tagged erasure message naming this node: the node key signs nothing else
 * through here.
 */
Datum
ehrledger_sign_erasure(PG_FUNCTION_ARGS)
{
	bytea	   *msg;
	uint8		sig[LEDGER_SIG_LEN];

	if (strcmp(text_to_cstring(PG_GETARG_TEXT_PP(0)), ledger_node_name()) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a node signs the erasure of its own rows only")));
	msg = erasure_message(fcinfo);
	ledger_node_sign((const uint8 *) VARDATA(msg), VARSIZE(msg) - VARHDRSZ, sig);
	PG_RETURN_BYTEA_P(ledger_bytea(sig, LEDGER_SIG_LEN));
}

/*
 * The bytes a block hash is the SHA-256 of (docs/format.md §7), rebuilt
 * from a stored block: what evidence and certificates carry, so that anyone
 * can recompute the hash and read the origin and height it commits to.
 */
static bytea *
header_bytes(const BlockHeader *h)
{
	StringInfoData buf;

	initStringInfo(&buf);
	block_header_bytes(h, &buf);
	return ledger_bytea(buf.data, buf.len);
}

/* ehrledger._block_header(origin, height): a stored block's header bytes. */
Datum
ehrledger_block_header(PG_FUNCTION_ARGS)
{
	Oid			types[2] = {TEXTOID, INT8OID};
	Datum		values[2] = {PG_GETARG_DATUM(0), PG_GETARG_DATUM(1)};
	StoredBlock *b = palloc(sizeof(StoredBlock));
	bytea	   *result = NULL;
	MemoryContext outer = CurrentMemoryContext;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute_with_args("SELECT " BLOCK_COLUMNS " FROM ehrledger.block"
							  " WHERE origin OPERATOR(pg_catalog.=) $1 AND height OPERATOR(pg_catalog.=) $2",
							  2, types, values, NULL, true, 1) == SPI_OK_SELECT &&
		SPI_processed == 1 &&
		block_from_spi(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, b))
	{
		MemoryContext spi = MemoryContextSwitchTo(outer);

		result = header_bytes(&b->h);
		MemoryContextSwitchTo(spi);
	}
	SPI_finish();
	if (result == NULL)
		PG_RETURN_NULL();
	PG_RETURN_BYTEA_P(result);
}

/*
 * ehrledger._header_origin(header, OUT origin, OUT height, OUT public_key):
 * what a header commits to, or NULLs if it is not a block header.
 */
Datum
ehrledger_header_origin(PG_FUNCTION_ARGS)
{
	bytea	   *b = PG_GETARG_BYTEA_PP(0);
	const char *origin;
	size_t		olen;
	int64_t		height;
	const uint8 *key;
	TupleDesc	desc;
	Datum		values[3];
	bool		nulls[3] = {true, true, true};

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	if (lc_header_fields((const uint8 *) VARDATA_ANY(b), VARSIZE_ANY_EXHDR(b),
						 &origin, &olen, &height, &key))
	{
		values[0] = PointerGetDatum(cstring_to_text_with_len(origin, olen));
		values[1] = Int64GetDatum(height);
		values[2] = PointerGetDatum(ledger_bytea(key, LEDGER_PUBKEY_LEN));
		nulls[0] = nulls[1] = nulls[2] = false;
	}
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), values, nulls)));
}

/* Why an incoming block was refused; NULL if it is sound in itself (src/core's rules). */
static const char *
block_fault(const StoredBlock *b, const uint8 *leaves, size_t leaves_len)
{
	const char *problem;
	LcBlockHeader h;
	int			faults;
	int64		bad_seq;

	if (b->malformed)
		return b->malformed;
	if ((problem = stored_block_problem(b)) != NULL)
		return problem;
	block_to_core(&b->h, &h);
	faults = lc_leaves_problems(&h, leaves, leaves_len, &bad_seq);
	if (faults & LC_LEAVES_FAILED)
		core_failed(lc_error);
	if (faults & LC_LEAVES_COUNT)
		return "its leaves do not match its row count";
	if (faults & LC_LEAVES_ORDER)
		return "its leaves are out of order or outside its range";
	if (faults & LC_LEAVES_HASH)
		return "its leaves do not hash to its leaves_hash";
	if (faults & LC_LEAVES_ROOT)
		return "its leaves do not hash to its Merkle root";
	return NULL;
}

/*
 * Why a block does not extend its origin's chain as stored here: its
 * previous block must be here, it must link to it (src/core's chain rule),
 * and its frontier must follow from it.  SPI is connected.
 */
static const char *
chain_fault(const StoredBlock *b)
{
	LcChain		chain;
	LcBlockHeader h;
	int			links;

	if (b->h.height < 1)
		return "its height is not positive";
	lc_chain_init(&chain);
	if (b->h.height > 1)
	{
		Oid			types[2] = {TEXTOID, INT8OID};
		Datum		values[2];
		StoredBlock *prev = palloc0(sizeof(StoredBlock));

		values[0] = CStringGetTextDatum(b->h.origin);
		values[1] = Int64GetDatum(b->h.height - 1);
		/* not read-only: a table sync's COPY stores a chain in one command */
		if (SPI_execute_with_args("SELECT " BLOCK_COLUMNS " FROM ehrledger.block"
								  " WHERE origin OPERATOR(pg_catalog.=) $1 AND height OPERATOR(pg_catalog.=) $2",
								  2, types, values, NULL, false, 1) != SPI_OK_SELECT ||
			SPI_processed != 1 ||
			!block_from_spi(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, prev))
			return "its previous block is not here";
		chain.height = prev->h.height;
		memcpy(chain.prev_hash, prev->block_hash, LEDGER_HASH_LEN);
		chain.prev_last_seq = prev->h.last_seq;
		memcpy(chain.frontier, prev->frontier, prev->frontier_count * LEDGER_HASH_LEN);
		chain.frontier_count = prev->frontier_count;
	}
	block_to_core(&b->h, &h);
	links = lc_chain_link_problems(&chain, &h);
	if (links & LC_LINK_FAILED)
		core_failed(lc_error);
	if ((links & LC_LINK_PREV_HASH) && b->h.height == 1)
		return "the first block of a chain must not link to another";
	if (links & LC_LINK_PREV_HASH)
		return "it does not link to its origin's previous block";
	if (links & (LC_LINK_RANGE | LC_LINK_EMPTY))
		return "its ledger_seq range does not continue the previous block's";
	if (links & LC_LINK_HISTORY)
		return "its history_root does not follow from the blocks before it";
	if (!lc_chain_append(&chain, &h, b->block_hash))
		core_failed(lc_error);
	if (chain.frontier_count != b->frontier_count ||
		memcmp(chain.frontier, b->frontier, chain.frontier_count * LEDGER_HASH_LEN) != 0)
		return "its history_frontier does not follow from the blocks before it";
	return NULL;
}

/*
 * The BEFORE INSERT trigger on ehrledger.block in replica mode (the apply
 * worker): a block from a peer is admitted only if it is signed by that
 * peer's key, sound in itself, and extends that peer's chain as stored
 * here.  This checks the block; states.sql's _to_admitted() decides, with
 * who may send it and whether its height is taken, and rejects it or
 * records evidence.  Once stored, this node acknowledges it
 * (_to_acknowledged(), from the AFTER INSERT trigger).
 */
Datum
ehrledger_block_arrived(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	HeapTuple	tuple;
	StoredBlock *b;
	bool		isnull;
	bytea	   *leaves;
	const char *fault;
	Oid			types[7] = {TEXTOID, INT8OID, BYTEAOID, BYTEAOID, TEXTOID, BYTEAOID, BYTEAOID};
	Datum		values[7];
	char		nulls[7] = "       ";
	const char *judge;
	bool		isnull_verdict;
	bool		admitted;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_BEFORE(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event) || !TRIGGER_FIRED_BY_INSERT(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("ehrledger.block_arrived() must fire BEFORE INSERT FOR EACH ROW")));
	tuple = trigdata->tg_trigtuple;
	b = palloc0(sizeof(StoredBlock));
	(void) block_from_spi(tuple, RelationGetDescr(trigdata->tg_relation), b);
	leaves = DatumGetByteaPP(heap_getattr(tuple, BLOCK_NCOLUMNS + 1,
										  RelationGetDescr(trigdata->tg_relation), &isnull));
	fault = isnull ? "it has no leaves"
		: block_fault(b, (const uint8 *) VARDATA_ANY(leaves), VARSIZE_ANY_EXHDR(leaves));

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (fault == NULL)
		fault = chain_fault(b);

	/*
	 * Who may send it, and whether this height is taken: states.sql's
	 * _to_admitted(), or in a 0.3 schema _admit_block() ('accept' or why not).
	 */
	judge = ledger_has_function("_to_admitted", 7, types)
		? "SELECT ehrledger._to_admitted($1, $2, $3, $4, $5, $6, $7)"
		: "SELECT ehrledger._admit_block($1, $2, $3, $4, $5, $6, $7) OPERATOR(pg_catalog.=) 'accept'";
	values[0] = CStringGetTextDatum(b->h.origin ? b->h.origin : "");
	values[1] = Int64GetDatum(b->h.height);
	values[2] = PointerGetDatum(ledger_bytea(b->block_hash, LEDGER_HASH_LEN));
	values[3] = PointerGetDatum(ledger_bytea(b->h.public_key, LEDGER_PUBKEY_LEN));
	values[4] = fault ? CStringGetTextDatum(fault) : (Datum) 0;
	nulls[4] = fault ? ' ' : 'n';
	values[5] = PointerGetDatum(header_bytes(&b->h));
	values[6] = PointerGetDatum(ledger_bytea(b->signature, LEDGER_SIG_LEN));
	if (SPI_execute_with_args(judge, 7, types, values, nulls, false, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "ehrledger could not judge block " INT64_FORMAT " of \"%s\"",
			 b->h.height, b->h.origin ? b->h.origin : "");
	admitted = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1,
										  &isnull_verdict)) && !isnull_verdict;
	SPI_finish();
	return PointerGetDatum(admitted ? tuple : NULL);
}

/*
 * This node's new block, just stored by the sealer, moves from sealed to
 * acknowledged, and on to final if this node alone is a quorum: states.sql's
 * _to_acknowledged(), or in a 0.3 schema _acknowledge().  A schema before
 * 0.3 has no network.  SPI is connected.
 */
void
network_block_sealed(const char *origin, int64 height)
{
	Oid			types[2] = {TEXTOID, INT8OID};
	Datum		values[2];
	const char *query;

	if (ledger_has_function("_to_acknowledged", 2, types))
		query = "SELECT ehrledger._to_acknowledged($1, $2)";
	else if (OidIsValid(get_relname_relid("final_block", ledger_namespace())))
		query = "SELECT ehrledger._acknowledge($1, $2)";
	else
		return;
	values[0] = CStringGetTextDatum(origin);
	values[1] = Int64GetDatum(height);
	if (SPI_execute_with_args(query, 2, types, values, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "ehrledger could not acknowledge its block " INT64_FORMAT, height);
}

/*
 * Once per sealing round, the sealer looks again at blocks that are not
 * final: acknowledgments applied at the same moment by different
 * subscriptions each count only what was committed before them.
 */
void
ledger_check_pending(void)
{
	if (!OidIsValid(get_relname_relid("final_block", ledger_namespace())))
		return;
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute("SELECT ehrledger._check_pending()", false, 0) != SPI_OK_SELECT)
		elog(ERROR, "ehrledger._check_pending failed");
	SPI_finish();
}

/*
 * Runs work(arg) in a subtransaction, in the caller's memory context: an
 * error in it is rolled back and its message returned (in that context),
 * instead of ending the caller's transaction; NULL if it ran through.
 */
static char *
run_caught(void (*work) (void *arg), void *arg)
{
	MemoryContext outer = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	char	   *volatile message = NULL;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(outer);
	PG_TRY();
	{
		work(arg);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(outer);
		CurrentResourceOwner = owner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(outer);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(outer);
		CurrentResourceOwner = owner;
		message = edata->message;
	}
	PG_END_TRY();
	return message;
}

/* ehrledger._learn_from_peers()'s answer, in *arg; SPI is connected. */
static void
learn_from_peers(void *arg)
{
	char	  **verdict = arg;

	if (SPI_execute("SELECT ehrledger._learn_from_peers()", false, 0) == SPI_OK_SELECT &&
		SPI_processed == 1)
		*verdict = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
}

/*
 * Whether the sealer may seal: only once this node has learned from its
 * peers, since the server started, how far its own chain reached
 * (ehrledger._learn_from_peers()); until then rows stay unsealed, and the
 * log says why, once a minute.
 */
bool
ledger_may_seal(void)
{
	static bool learned = false;
	static TimestampTz last_warning = 0;
	char	   *verdict = NULL;
	char	   *error;

	if (learned)
		return true;
	if (!OidIsValid(get_relname_relid("rejoin", ledger_namespace())))
		return true;
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	/* a failure here is a reason not to seal, not to stop the sealer */
	error = run_caught(learn_from_peers, &verdict);
	if (error != NULL)
		verdict = psprintf("waiting: %s", error);
	if (verdict != NULL && strncmp(verdict, "waiting", 7) != 0)
		learned = true;
	else if (TimestampDifferenceExceeds(last_warning, GetCurrentTimestamp(), 60 * 1000))
	{
		last_warning = GetCurrentTimestamp();
		ereport(WARNING,
				(errmsg("ehrledger does not seal yet: it has not learned from its peers how far its chain reached (%s)",
						verdict ? verdict : "no answer"),
				 errhint("Rows stay unsealed until enough peers answer; see ehrledger.peers.")));
	}
	SPI_finish();
	return learned;
}

/*
 * ehrledger.seal() by hand waits for the rejoin as the sealer does: a node
 * that had peers when its server started may have been restored from a
 * backup, and a block sealed before it learned how far its chain reached
 * could take a height its peers hold already.  Peers added since the start
 * need no rejoin: the node was running when they joined.
 */
void
ledger_require_rejoined(void)
{
	UserSwitch	sw;
	bool		pending = false;

	if (!OidIsValid(get_relname_relid("rejoin", ledger_namespace())))
		return;
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	user_switch_ledger_owner(&sw);
	if (SPI_execute("SELECT EXISTS (SELECT 1 FROM ehrledger.peer p WHERE p.removed_at IS NULL"
					"                  AND p.added_at OPERATOR(pg_catalog.<) pg_catalog.pg_postmaster_start_time())"
					"   AND NOT EXISTS (SELECT 1 FROM ehrledger.rejoin j"
					"                    WHERE j.started_at OPERATOR(pg_catalog.=) pg_catalog.pg_postmaster_start_time())",
					true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not read ehrledger.rejoin");
	{
		bool		isnull;

		pending = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	}
	user_switch_end(&sw);
	SPI_finish();
	if (pending)
		ereport(ERROR,
				(errcode(ERRCODE_LEDGER_NOT_REJOINED),
				 errmsg("ehrledger.seal() must wait until this node has learned from its peers how far its chain reached"),
				 errdetail("Since the server started, ehrledger.rejoin has no row: a restored node could seal a height its peers hold already."),
				 errhint("The background sealer learns first (SELECT * FROM ehrledger.rejoin WHERE started_at = pg_postmaster_start_time()); with ehrledger.seal_interval = 0 a superuser runs SELECT ehrledger._learn_from_peers().")));
}

PG_FUNCTION_INFO_V1(ehrledger_shared_row_check);

/*
 * One element of an array literal, quoted so that array_in takes it back
 * exactly: brackets, braces, commas and quotes inside strings stay text.
 */
static void
append_array_element(StringInfo buf, const JsonbValue *v)
{
	const char *s;
	int			len;
	int			i;

	switch (v->type)
	{
		case jbvNull:
			appendStringInfoString(buf, "NULL");
			return;
		case jbvBool:
			appendStringInfoString(buf, v->val.boolean ? "true" : "false");
			return;
		case jbvNumeric:
			appendStringInfoString(buf, DatumGetCString(DirectFunctionCall1(numeric_out,
																			NumericGetDatum(v->val.numeric))));
			return;
		case jbvString:
			s = v->val.string.val;
			len = v->val.string.len;
			break;
		default:
			/* an object inside an array of json or jsonb: its text */
			s = JsonbToCString(NULL, v->val.binary.data, v->val.binary.len);
			len = strlen(s);
			break;
	}
	appendStringInfoChar(buf, '"');
	for (i = 0; i < len; i++)
	{
		if (s[i] == '"' || s[i] == '\\')
			appendStringInfoChar(buf, '\\');
		appendStringInfoChar(buf, s[i]);
	}
	appendStringInfoChar(buf, '"');
}

/* A JSON array (of arrays, for several dimensions) as an array literal. */
static void
append_array_literal(StringInfo buf, JsonbContainer *array)
{
	JsonbIterator *it = JsonbIteratorInit(array);
	JsonbValue	v;
	JsonbIteratorToken tok;
	bool		first = true;

	tok = JsonbIteratorNext(&it, &v, true);
	Assert(tok == WJB_BEGIN_ARRAY);
	appendStringInfoChar(buf, '{');
	while ((tok = JsonbIteratorNext(&it, &v, true)) == WJB_ELEM)
	{
		if (!first)
			appendStringInfoChar(buf, ',');
		first = false;
		if (v.type == jbvBinary && JsonContainerIsArray(v.val.binary.data))
			append_array_literal(buf, v.val.binary.data);
		else
			append_array_element(buf, &v);
	}
	appendStringInfoChar(buf, '}');
}

/* A column's value from a shared row's JSON, as its type's Datum. */
static bool
value_from_json(Jsonb *row, const char *name, Oid typid, int32 typmod, Datum *value)
{
	JsonbValue	v;
	char	   *text;

	if (getKeyJsonValueFromContainer(&row->root, name, strlen(name), &v) == NULL ||
		v.type == jbvNull)
		return false;
	if (typid == JSONBOID)
	{
		*value = JsonbPGetDatum(JsonbValueToJsonb(&v));
		return true;
	}
	switch (v.type)
	{
		case jbvString:
			text = pnstrdup(v.val.string.val, v.val.string.len);
			break;
		case jbvNumeric:
			text = DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(v.val.numeric)));
			break;
		case jbvBool:
			text = v.val.boolean ? "true" : "false";
			break;
		default:
			if (v.type == jbvBinary && JsonContainerIsArray(v.val.binary.data) &&
				OidIsValid(get_element_type(typid)))
			{
				StringInfoData lit;

				initStringInfo(&lit);
				append_array_literal(&lit, v.val.binary.data);
				text = lit.data;
			}
			else
				text = JsonbToCString(NULL, &JsonbValueToJsonb(&v)->root, 0);
			break;
	}
	*value = input_as_type_owner(typid, text, typmod);
	return true;
}

/* A shared row to encode again, and what came of it. */
typedef struct SharedRowEncoding
{
	int64		seq;
	int32		table_id;
	Jsonb	   *columns;
	Jsonb	   *row;
	int			n;				/* columns */
	const char *fault;			/* why it cannot be encoded, or NULL */
	uint8		leaf[LEDGER_HASH_LEN];
} SharedRowEncoding;

/* Encodes a shared row again from its JSON and its origin's column types. */
static void
encode_shared_row(void *arg)
{
	SharedRowEncoding *e = arg;
	TupleDesc	desc = CreateTemplateTupleDesc(e->n);
	Datum	   *values = palloc0(sizeof(Datum) * e->n);
	bool	   *isnull = palloc0(sizeof(bool) * e->n);
	RowEncoder *enc;
	StringInfoData buf;
	int			i;

	for (i = 0; i < e->n; i++)
	{
		JsonbValue *col = getIthJsonbValueFromContainer(&e->columns->root, i);
		JsonbValue	nv;
		JsonbValue	tv;
		char	   *name;
		Oid			typid;
		int32		typmod;

		if (col == NULL || col->type != jbvBinary ||
			getKeyJsonValueFromContainer(col->val.binary.data, "name", 4, &nv) == NULL ||
			nv.type != jbvString ||
			getKeyJsonValueFromContainer(col->val.binary.data, "type", 4, &tv) == NULL ||
			tv.type != jbvString)
		{
			e->fault = "its column list is malformed";
			return;
		}
		name = pnstrdup(nv.val.string.val, nv.val.string.len);
		parseTypeString(pnstrdup(tv.val.string.val, tv.val.string.len), &typid, &typmod, true);
		if (!OidIsValid(typid))
		{
			e->fault = psprintf("column \"%s\" has a type unknown here", name);
			return;
		}
		/* a domain here is a local role's, and the hash knows only its base */
		typid = getBaseTypeAndTypmod(typid, &typmod);
		TupleDescInitEntry(desc, i + 1, name, typid, typmod, 0);
		isnull[i] = !value_from_json(e->row, name, typid, typmod, &values[i]);
	}
	enc = row_encoder_create(desc, CurrentMemoryContext);
	initStringInfo(&buf);
	row_encode(enc, &buf, e->table_id, e->seq, values, isnull);
	ledger_leaf_hash(buf.data, buf.len, e->leaf);
}

/*
 * ehrledger._shared_row_check(origin, ledger_seq, table_id, columns, row):
 * whether a row a peer shared is the row its origin sealed.  The row is
 * encoded again (docs/format.md §1) from its JSON and the column types its
 * origin recorded, and its leaf hash must be the one the origin's signed
 * block holds for that ledger_seq and table.  'verified', or why not.
 */
Datum
ehrledger_shared_row_check(PG_FUNCTION_ARGS)
{
	text	   *origin = PG_GETARG_TEXT_PP(0);
	SharedRowEncoding e = {0};
	Oid			types[2] = {TEXTOID, INT8OID};
	Datum		args[2];
	const char *verdict = "verified";
	char	   *error;

	e.seq = PG_GETARG_INT64(1);
	e.table_id = PG_GETARG_INT32(2);
	e.columns = PG_GETARG_JSONB_P(3);
	e.row = PG_GETARG_JSONB_P(4);
	e.n = JB_ROOT_IS_ARRAY(e.columns) ? JB_ROOT_COUNT(e.columns) : 0;
	if (e.n == 0)
		PG_RETURN_TEXT_P(cstring_to_text("its origin recorded no columns"));

	/* Re-encoding runs input functions on a peer's data: failures are a verdict. */
	error = run_caught(encode_shared_row, &e);
	if (error != NULL)
		PG_RETURN_TEXT_P(cstring_to_text(psprintf("it cannot be encoded again here: %s", error)));
	if (e.fault != NULL)
		PG_RETURN_TEXT_P(cstring_to_text(e.fault));

	args[0] = PointerGetDatum(origin);
	args[1] = Int64GetDatum(e.seq);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute_with_args("SELECT leaves FROM ehrledger.block WHERE origin OPERATOR(pg_catalog.=) $1"
							  " AND first_seq OPERATOR(pg_catalog.<=) $2 AND last_seq OPERATOR(pg_catalog.>=) $2",
							  2, types, args, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "SPI_execute failed");
	if (SPI_processed == 0)
		verdict = "its origin has not sealed it (in a block held here) yet";
	else
	{
		bool		null;
		bytea	   *packed = DatumGetByteaPP(SPI_getbinval(SPI_tuptable->vals[0],
														   SPI_tuptable->tupdesc, 1, &null));
		int64		at;

		switch (lc_sealed_leaf((const uint8 *) VARDATA_ANY(packed),
							   VARSIZE_ANY_EXHDR(packed) / LEDGER_LEAF_SIZE, e.seq,
							   (uint32) e.table_id, e.leaf, &at))
		{
			case LC_LEAF_ABSENT:
				verdict = "its origin's block holds no row of this ledger_seq";
				break;
			case LC_LEAF_OTHER_TABLE:
				verdict = "its origin's block holds this ledger_seq for another table";
				break;
			case LC_LEAF_CHANGED:
				verdict = "it is not the row its origin sealed";
				break;
		}
	}
	SPI_finish();
	PG_RETURN_TEXT_P(cstring_to_text(verdict));
}

PG_FUNCTION_INFO_V1(ehrledger_peer_fetch);

/*
 * ehrledger._peer_fetch(conninfo, query): the rows of a one-column query
 * run at a peer, as text, over the connection its subscription uses.  A
 * hospital that starts (after a restore, say) learns from its peers what
 * their streams will not send it again: its own blocks they hold, and
 * theirs that it lost (ehrledger._learn_from_peers()).  Superuser only:
 * it runs any query under the peer's replication role.
 */
Datum
ehrledger_peer_fetch(PG_FUNCTION_ARGS)
{
	char	   *conninfo = text_to_cstring(PG_GETARG_TEXT_PP(0));
	char	   *query = text_to_cstring(PG_GETARG_TEXT_PP(1));
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Oid			types[1] = {TEXTOID};
	WalReceiverConn *volatile conn;
	char	   *err = NULL;

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	load_file("libpqwalreceiver", false);
	conn = walrcv_connect(conninfo, true, "ehrledger", &err);
	if (conn == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("could not connect to the peer: %s", err ? err : "")));
	PG_TRY();
	{
		WalRcvExecResult *res = walrcv_exec(conn, query, 1, types);
		TupleTableSlot *slot;

		if (res->status != WALRCV_OK_TUPLES)
			ereport(ERROR,
					(errcode(ERRCODE_CONNECTION_FAILURE),
					 errmsg("the peer could not answer: %s", res->err ? res->err : "")));
		slot = MakeSingleTupleTableSlot(res->tupledesc, &TTSOpsMinimalTuple);
		while (tuplestore_gettupleslot(res->tuplestore, true, false, slot))
		{
			bool		isnull;
			Datum		value = slot_getattr(slot, 1, &isnull);

			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, &value, &isnull);
			ExecClearTuple(slot);
		}
		ExecDropSingleTupleTableSlot(slot);
		walrcv_clear_result(res);
	}
	PG_FINALLY();
	{
		walrcv_disconnect(conn);
	}
	PG_END_TRY();
	return (Datum) 0;
}

PG_FUNCTION_INFO_V1(ehrledger_restore_row);

/*
 * ehrledger._restore_row(tbl, ledger_seq, leaf, statement): brings back a
 * row of a shared table that a restore lost, from a peer's copy.  The
 * statement (one INSERT of that row) runs as the table's owner, restricted,
 * as any code of the owner's does; the insert trigger keeps the row's
 * number only if it encodes to leaf (restored_version()).  Exactly one row
 * must come back, or nothing does.  Superuser only.
 */
Datum
ehrledger_restore_row(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);
	int64		seq = PG_GETARG_INT64(1);
	bytea	   *leaf = PG_GETARG_BYTEA_PP(2);
	Datum		statement = PG_GETARG_DATUM(3);
	int64		processed;

	if (!superuser())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("only a superuser may restore ledger rows")));
	if (VARSIZE_ANY_EXHDR(leaf) != LEDGER_HASH_LEN)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a leaf hash is %d bytes, not %d",
						LEDGER_HASH_LEN, (int) VARSIZE_ANY_EXHDR(leaf))));
	if (OidIsValid(ledger_restoring.relid))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("a row is being restored already")));
	ledger_restoring.relid = relid;
	ledger_restoring.seq = seq;
	memcpy(ledger_restoring.leaf, VARDATA_ANY(leaf), LEDGER_HASH_LEN);
	ledger_restoring.inserted = 0;
	PG_TRY();
	{
		processed = DatumGetInt64(DirectFunctionCall2(ehrledger_as_table_owner,
													  ObjectIdGetDatum(relid), statement));
		if (processed != 1 || ledger_restoring.inserted != 1)
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("restoring row %lld of \"%s\" inserted %lld rows, %d of them checked against the leaf",
							(long long) seq, get_rel_name(relid), (long long) processed,
							ledger_restoring.inserted)));
	}
	PG_FINALLY();
	{
		ledger_restoring.relid = InvalidOid;
	}
	PG_END_TRY();
	PG_RETURN_VOID();
}

/*
 * A peer's TRUNCATE.  A hospital's publication sends inserts only, but a
 * lying one can publish a TRUNCATE, which row triggers never see and a
 * statement trigger cannot skip: ehrledger.refuse_change() refuses it with
 * LD031, which would stop the apply worker for good (it retries the same
 * transaction).  The refusal is turned into a skip: as the worker reports
 * the error, this hook reads from the error's context the subscription
 * (replication origin "pg_<oid>") and the LSN the peer's transaction ends
 * at, and leaves them in a file; the sealer's next round
 * (ehrledger._skip_peer_truncates()) records the TRUNCATE in
 * ehrledger.rejected_row and sets ALTER SUBSCRIPTION ... SKIP to that LSN,
 * so that the restarted worker passes over it.  Only the peer's own
 * transaction is lost, which held nothing but the TRUNCATE a hospital
 * never sends.
 */
#define PEER_TRUNCATE_FILE "ehrledger_peer_truncate."

static emit_log_hook_type prev_emit_log_hook = NULL;

static void
note_peer_truncate(ErrorData *edata)
{
	const char *origin;
	const char *finish;
	unsigned int subid;
	unsigned int hi;
	unsigned int lo;

	if (prev_emit_log_hook)
		prev_emit_log_hook(edata);
	if (edata->elevel < ERROR || edata->sqlerrcode != ERRCODE_LEDGER_PEER_TRUNCATE ||
		MyLogicalRepWorker == NULL || edata->context == NULL)
		return;
	/*
	 * The context is translated under lc_messages: read only what no
	 * translation changes, the origin's name "pg_<oid>" and the one LSN
	 * (X/X) in it, the transaction's end.
	 */
	origin = strstr(edata->context, "\"pg_");
	finish = NULL;
	for (const char *p = edata->context; *p; p++)
	{
		unsigned int h;
		unsigned int l;
		int			n = 0;

		if (isxdigit((unsigned char) *p) && (p == edata->context || !isalnum((unsigned char) p[-1])) &&
			sscanf(p, "%X/%X%n", &h, &l, &n) == 2 && n > 0 && strchr(p, '/') < p + n)
		{
			finish = p;
			hi = h;
			lo = l;
			p += n - 1;
		}
	}
	if (origin == NULL || finish == NULL ||
		sscanf(origin, "\"pg_%u\"", &subid) != 1 ||
		subid != MyLogicalRepWorker->subid)
		return;
	{
		char		path[MAXPGPATH];
		char		line[512];
		FILE	   *f;

		snprintf(path, sizeof(path), PEER_TRUNCATE_FILE "%u", subid);
		snprintf(line, sizeof(line), "%X/%X\n%s\n", hi, lo, edata->message ? edata->message : "");
		/* no ereport here: this runs while an error is being reported */
		f = fopen(path, "w");
		if (f != NULL)
		{
			fputs(line, f);
			fclose(f);
		}
	}
}

void
network_init_hooks(void)
{
	prev_emit_log_hook = emit_log_hook;
	emit_log_hook = note_peer_truncate;
}

PG_FUNCTION_INFO_V1(ehrledger_peer_truncates);

/*
 * ehrledger._peer_truncates(): the peers' TRUNCATEs refused since the last
 * call (subscription, the LSN its peer's transaction ends at, and the
 * error), each once: the files are removed as they are read.  Superuser only.
 */
Datum
ehrledger_peer_truncates(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	DIR		   *dir;
	struct dirent *de;

	if (!superuser())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("only a superuser may read the peers' refused TRUNCATEs")));
	InitMaterializedSRF(fcinfo, 0);
	dir = AllocateDir(".");
	while ((de = ReadDir(dir, ".")) != NULL)
	{
		unsigned int subid;
		unsigned int hi;
		unsigned int lo;
		FILE	   *f;
		Datum		values[3];
		bool		nulls[3] = {false, false, false};
		int			got;
		char		message[512] = "";

		if (strncmp(de->d_name, PEER_TRUNCATE_FILE, strlen(PEER_TRUNCATE_FILE)) != 0 ||
			sscanf(de->d_name + strlen(PEER_TRUNCATE_FILE), "%u", &subid) != 1)
			continue;
		f = AllocateFile(de->d_name, "r");
		if (f == NULL)
			continue;
		got = fscanf(f, "%X/%X\n", &hi, &lo);
		if (fgets(message, sizeof(message), f) != NULL)
			message[strcspn(message, "\n")] = '\0';
		FreeFile(f);
		unlink(de->d_name);
		if (got != 2)
			continue;
		values[0] = ObjectIdGetDatum((Oid) subid);
		values[1] = LSNGetDatum(((XLogRecPtr) hi << 32) | lo);
		values[2] = CStringGetTextDatum(message);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	FreeDir(dir);
	return (Datum) 0;
}

PG_FUNCTION_INFO_V1(ehrledger_renumber_unsealed);

/* A leaf of a block taken back at a rejoin: the row version it sealed. */
typedef struct TakenLeaf
{
	int64		seq;			/* hash key */
	int32		table_id;
	uint8		hash[LEDGER_HASH_LEN];
} TakenLeaf;

/* A row version to renumber: where it is, and its number then. */
typedef struct RenumberTarget
{
	ItemPointerData tid;
	int64		seq;
} RenumberTarget;

/* Whether (seq, table_id, hash) is the row version a block taken back sealed. */
static bool
sealed_in_taken_block(HTAB *leaves, int64 seq, int32 table_id, Datum hash, bool hash_null)
{
	TakenLeaf  *leaf = hash_search(leaves, &seq, HASH_FIND, NULL);
	bytea	   *h;

	if (leaf == NULL || hash_null || leaf->table_id != table_id)
		return false;
	h = DatumGetByteaPP(hash);
	return VARSIZE_ANY_EXHDR(h) == LEDGER_HASH_LEN &&
		memcmp(VARDATA_ANY(h), leaf->hash, LEDGER_HASH_LEN) == 0;
}

static int
target_by_seq(const ListCell *a, const ListCell *b)
{
	int64		x = ((const RenumberTarget *) lfirst(a))->seq;
	int64		y = ((const RenumberTarget *) lfirst(b))->seq;

	return x < y ? -1 : x > y ? 1 : 0;
}

/*
 * The row versions of rel numbered (through seq_column's unique index) in
 * [lo, hi] that are not what a block taken back sealed there, added to
 * targets unless already in it (a history row is found by its version and
 * by its end).
 */
static List *
unsealed_in_range(List *targets, Relation rel, int32 table_id, const char *seq_column,
				  const char *hash_column, int64 lo, int64 hi, HTAB *leaves, Snapshot snapshot)
{
	AttrNumber	seq_att = attnameAttNum(rel, seq_column, false);
	AttrNumber	hash_att = attnameAttNum(rel, hash_column, false);
	Oid			indexoid;
	Relation	irel;
	IndexScanDesc scan;
	TupleTableSlot *slot;
	ScanKeyData keys[2];

	if (seq_att <= 0 || hash_att <= 0 ||
		!OidIsValid(indexoid = ledger_seq_index(rel, seq_att)))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("ledger table \"%s\" lacks its %s column or its unique index",
						RelationGetRelationName(rel), seq_column)));
	irel = index_open(indexoid, AccessShareLock);
	ScanKeyInit(&keys[0], 1, BTGreaterEqualStrategyNumber, F_INT8GE, Int64GetDatum(lo));
	ScanKeyInit(&keys[1], 1, BTLessEqualStrategyNumber, F_INT8LE, Int64GetDatum(hi));
	scan = index_beginscan(rel, irel, snapshot, 2, 0);
	index_rescan(scan, keys, 2, NULL, 0);
	slot = table_slot_create(rel, NULL);
	while (index_getnext_slot(scan, ForwardScanDirection, slot))
	{
		bool		seq_null;
		bool		hash_null;
		Datum		seq = slot_getattr(slot, seq_att, &seq_null);
		Datum		hash = slot_getattr(slot, hash_att, &hash_null);
		RenumberTarget *t;
		ListCell   *lc;
		bool		known = false;

		CHECK_FOR_INTERRUPTS();
		if (seq_null || sealed_in_taken_block(leaves, DatumGetInt64(seq), table_id, hash, hash_null))
			continue;
		foreach(lc, targets)
			if (ItemPointerEquals(&((RenumberTarget *) lfirst(lc))->tid, &slot->tts_tid))
				known = true;
		if (known)
			continue;
		t = palloc(sizeof(RenumberTarget));
		t->tid = slot->tts_tid;
		t->seq = DatumGetInt64(seq);
		targets = lappend(targets, t);
	}
	ExecDropSingleTupleTableSlot(slot);
	index_endscan(scan);
	index_close(irel, AccessShareLock);
	return targets;
}

/*
 * Gives the row versions of one table (or its history) found in the range
 * of the blocks taken back, but not sealed there, fresh numbers after that
 * range and their hashes for them, as the insert trigger (and for an end
 * of a version, version_row()) computes them.  The heap is updated
 * directly, with the indexes: no trigger, rule or policy runs, the table's
 * owner's or anyone's.  Runs as the table's owner, restricted (index
 * expressions, a column type's send function).  Returns the old and new
 * numbers of renumbered versions of the table itself (for shared_row).
 */
static int64
renumber_relation(Oid relid, int32 table_id, bool history, int64 lo, int64 hi,
				  HTAB *leaves, Snapshot snapshot, Oid seq_relid, List **moved)
{
	Relation	rel = table_open(relid, RowExclusiveLock);
	TupleDesc	desc = RelationGetDescr(rel);
	RowEncoder *enc = row_encoder_create(desc, CurrentMemoryContext);
	AttrNumber	seq_att = row_encoder_seq_attnum(enc);
	AttrNumber	hash_att = row_encoder_hash_attnum(enc);
	HistoryEndColumns hc = {0};
	List	   *targets = NIL;
	ListCell   *lc;
	EState	   *estate;
	ResultRelInfo *rri;
	TupleTableSlot *slot;
	int64		count = 0;
	const char *name = quote_qualified_identifier(get_namespace_name(RelationGetNamespace(rel)),
												  RelationGetRelationName(rel));

	if (seq_att == InvalidAttrNumber || hash_att == InvalidAttrNumber)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("ledger table %s lacks its ledger_seq or ledger_hash column", name)));
	targets = unsealed_in_range(targets, rel, table_id, LEDGER_SEQ_COLUMN, LEDGER_HASH_COLUMN,
								lo, hi, leaves, snapshot);
	if (history)
	{
		if (!history_end_columns(rel, &hc))
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_COLUMN),
					 errmsg("history table %s lacks its ledger columns", name)));
		targets = unsealed_in_range(targets, rel, table_id, LEDGER_ENDED_SEQ_COLUMN,
									LEDGER_ENDED_HASH_COLUMN, lo, hi, leaves, snapshot);
	}
	if (targets == NIL)
	{
		table_close(rel, NoLock);
		return 0;
	}
	list_sort(targets, target_by_seq);

	estate = CreateExecutorState();
	rri = makeNode(ResultRelInfo);
	InitResultRelInfo(rri, rel, 1, NULL, 0);
	ExecOpenIndices(rri, false);
	slot = table_slot_create(rel, NULL);
	foreach(lc, targets)
	{
		RenumberTarget *t = lfirst(lc);
		Datum	   *values = palloc(sizeof(Datum) * desc->natts);
		bool	   *isnull = palloc(sizeof(bool) * desc->natts);
		int64		seq;
		bool		version_moves;
		bool		end_moves = false;
		HeapTuple	tup;
		StringInfoData buf;
		bytea	   *hash;

		CHECK_FOR_INTERRUPTS();
		if (!table_tuple_fetch_row_version(rel, &t->tid, snapshot, slot))
			continue;
		slot_getallattrs(slot);
		memcpy(values, slot->tts_values, sizeof(Datum) * desc->natts);
		memcpy(isnull, slot->tts_isnull, sizeof(bool) * desc->natts);
		seq = DatumGetInt64(values[seq_att - 1]);
		version_moves = seq >= lo && seq <= hi &&
			!sealed_in_taken_block(leaves, seq, table_id, values[hash_att - 1], isnull[hash_att - 1]);
		if (history)
		{
			int64		end_seq = DatumGetInt64(values[hc.end_seq - 1]);

			/* a version numbered again needs a new end: that names it */
			end_moves = version_moves ||
				(end_seq >= lo && end_seq <= hi &&
				 !sealed_in_taken_block(leaves, end_seq, table_id, values[hc.end_hash - 1],
										isnull[hc.end_hash - 1]));
		}
		if (!version_moves && !end_moves)
			continue;

		/* numbers in the order of the old ones: a version before its end */
		(void) GetCurrentTransactionId();
		initStringInfo(&buf);
		if (version_moves)
		{
			int64		new_seq = nextval_internal(seq_relid, false);

			row_encode(enc, &buf, table_id, new_seq, values, isnull);
			hash = palloc(VARHDRSZ + LEDGER_HASH_LEN);
			SET_VARSIZE(hash, VARHDRSZ + LEDGER_HASH_LEN);
			ledger_leaf_hash(buf.data, buf.len, (uint8 *) VARDATA(hash));
			values[seq_att - 1] = Int64GetDatum(new_seq);
			values[hash_att - 1] = PointerGetDatum(hash);
			isnull[hash_att - 1] = false;
			ereport(WARNING,
					(errcode(ERRCODE_WARNING),
					 errmsg("ehrledger renumbered %s %lld of %s to %lld",
							history ? "earlier version" : "row", (long long) seq, name,
							(long long) new_seq),
					 errdetail("It was written after this node was restored, with a number inside the blocks taken back from its peers.")));
			if (!history)
			{
				int64	   *pair = palloc(2 * sizeof(int64));

				pair[0] = seq;
				pair[1] = new_seq;
				*moved = lappend(*moved, pair);
			}
			seq = new_seq;
		}
		if (end_moves)
		{
			int64		old_end = DatumGetInt64(values[hc.end_seq - 1]);
			int64		new_end = nextval_internal(seq_relid, false);

			resetStringInfo(&buf);
			history_end_encode(&buf, table_id, new_end, seq, &hc, values, isnull);
			hash = palloc(VARHDRSZ + LEDGER_HASH_LEN);
			SET_VARSIZE(hash, VARHDRSZ + LEDGER_HASH_LEN);
			ledger_leaf_hash(buf.data, buf.len, (uint8 *) VARDATA(hash));
			values[hc.end_seq - 1] = Int64GetDatum(new_end);
			values[hc.end_hash - 1] = PointerGetDatum(hash);
			ereport(WARNING,
					(errcode(ERRCODE_WARNING),
					 errmsg("ehrledger renumbered the end of a version %lld of %s to %lld",
							(long long) old_end, name, (long long) new_end),
					 errdetail("It was written after this node was restored, or ends a version renumbered.")));
		}
		tup = heap_form_tuple(desc, values, isnull);
		simple_heap_update(rel, &t->tid, tup);
		if (!HeapTupleIsHeapOnly(tup))
		{
			TupleTableSlot *newslot = MakeSingleTupleTableSlot(desc, &TTSOpsHeapTuple);

			ExecStoreHeapTuple(tup, newslot, false);
			(void) ExecInsertIndexTuples(rri, newslot, estate, false, false, NULL, NIL);
			ExecDropSingleTupleTableSlot(newslot);
		}
		count++;
	}
	ExecDropSingleTupleTableSlot(slot);
	ExecCloseIndices(rri);
	FreeExecutorState(estate);
	table_close(rel, NoLock);
	return count;
}

/*
 * ehrledger._renumber_unsealed(first_taken): at a rejoin, after blocks
 * from height first_taken on were taken back and ledger_seq was moved past
 * them.  A row written on the restored copy before the rejoin may hold a
 * number inside those blocks' range that a lost row was sealed under: it
 * is not what the block sealed, so verify() would call it changed, and the
 * sealer, already past that number, would never seal it.  Every such row
 * version of a protected table, and of a history table, gets a fresh
 * number after the range and its hash for it (the copy of a shared row
 * too), so that it is sealed like any other.  Writers that may hold a
 * number in the range are waited for first.  Returns how many row
 * versions were renumbered.  Superuser only.
 */
Datum
ehrledger_renumber_unsealed(PG_FUNCTION_ARGS)
{
	int64		first_taken = PG_GETARG_INT64(0);
	MemoryContext cxt = CurrentMemoryContext;
	HASHCTL		ctl;
	HTAB	   *leaves;
	int64		lo = PG_INT64_MAX;
	int64		hi = PG_INT64_MIN;
	Datum		arg = Int64GetDatum(first_taken);
	Oid			argtype = INT8OID;
	List	   *tables;
	ListCell   *lc;
	Snapshot	snapshot;
	Oid			seq_relid = ledger_relid("ledger_seq");
	int64		count = 0;
	uint64		i;

	if (!superuser())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("only a superuser may renumber ledger rows")));

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(int64);
	ctl.entrysize = sizeof(TakenLeaf);
	ctl.hcxt = cxt;
	leaves = hash_create("ehrledger leaves taken back", 1024, &ctl,
						 HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute_with_args("SELECT b.first_seq, b.last_seq, b.leaves FROM ehrledger.block b"
							  " WHERE b.origin OPERATOR(pg_catalog.=) ehrledger.node_name()"
							  " AND b.height OPERATOR(pg_catalog.>=) $1",
							  1, &argtype, &arg, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the blocks taken back");
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	row = SPI_tuptable->vals[i];
		TupleDesc	rdesc = SPI_tuptable->tupdesc;
		bool		n1,
					n2,
					n3;
		int64		first = DatumGetInt64(SPI_getbinval(row, rdesc, 1, &n1));
		int64		last = DatumGetInt64(SPI_getbinval(row, rdesc, 2, &n2));
		Datum		packed = SPI_getbinval(row, rdesc, 3, &n3);
		bytea	   *b;
		const uint8 *p;
		size_t		k;

		if (n1 || n2 || n3)
			continue;
		lo = Min(lo, first);
		hi = Max(hi, last);
		b = DatumGetByteaPP(packed);
		p = (const uint8 *) VARDATA_ANY(b);
		for (k = 0; k + LEDGER_LEAF_SIZE <= VARSIZE_ANY_EXHDR(b); k += LEDGER_LEAF_SIZE)
		{
			int64		seq = (int64) lc_get_u64(p + k);
			TakenLeaf  *leaf = hash_search(leaves, &seq, HASH_ENTER, NULL);

			leaf->table_id = (int32) lc_get_u32(p + k + 8);
			memcpy(leaf->hash, p + k + 12, LEDGER_HASH_LEN);
		}
	}
	if (lo > hi)
	{
		SPI_finish();
		PG_RETURN_INT64(0);
	}

	/* No number in [lo, hi] is handed out any more: wait out those that were. */
	tables = ledger_tables(GetTransactionSnapshot());
	ledger_wait_for_writers(tables);
	snapshot = RegisterSnapshot(GetLatestSnapshot());
	foreach(lc, tables)
	{
		LedgerTable *t = lfirst(lc);
		List	   *moved = NIL;
		ListCell   *mc;
		int			pass;

		for (pass = 0; pass < 2; pass++)
		{
			Oid			relid = pass == 0 ? t->relid : t->history_relid;
			UserSwitch	sw;

			if (!OidIsValid(relid) || get_rel_relkind(relid) != RELKIND_RELATION)
				continue;
			user_switch_restricted(relation_owner(relid), &sw);
			count += renumber_relation(relid, t->table_id, pass == 1, lo, hi, leaves,
									   snapshot, seq_relid, &moved);
			user_switch_end(&sw);
		}
		/* The copy sent to the peers follows its row's new number. */
		foreach(mc, moved)
		{
			int64	   *pair = lfirst(mc);
			Datum		args[3] = {Int64GetDatum(pair[0]), Int64GetDatum(pair[1]), Int32GetDatum(t->table_id)};
			Oid			types[3] = {INT8OID, INT8OID, INT4OID};

			if (SPI_execute_with_args("WITH d AS (DELETE FROM ehrledger.shared_row s"
									  " WHERE s.origin OPERATOR(pg_catalog.=) ehrledger.node_name()"
									  " AND s.ledger_seq OPERATOR(pg_catalog.=) $1 AND s.table_id OPERATOR(pg_catalog.=) $3"
									  " RETURNING s.*)"
									  " INSERT INTO ehrledger.shared_row (origin, table_name, table_id, ledger_seq, columns, \"row\")"
									  " SELECT d.origin, d.table_name, d.table_id, $2, d.columns, d.\"row\" FROM d",
									  3, types, args, NULL, false, 0) != SPI_OK_INSERT)
				elog(ERROR, "could not renumber the shared copy of row %lld", (long long) pair[0]);
		}
	}
	UnregisterSnapshot(snapshot);
	SPI_finish();
	PG_RETURN_INT64(count);
}
