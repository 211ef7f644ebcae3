/*
 * network.c
 *		Blocks and acknowledgments between hospitals.
 *
 * Each hospital publishes its own blocks and its own acknowledgments
 * (publication ehrledger_net, filtered on origin and acker) and subscribes
 * to every peer's.  Logical replication carries them; the apply worker runs
 * in replica mode, where the triggers here check every incoming block
 * against its origin's key and chain before it is stored, and sign one
 * acknowledgment per (origin, height).  A block that fails is skipped (the
 * trigger returns NULL), so a bad peer never stops the stream; two signed
 * statements that conflict are kept in ehrledger.evidence.
 */
#include "postgres.h"

#include "access/htup_details.h"
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
#include "parser/parse_type.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/resowner.h"
#include "access/xact.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/timestamp.h"

#include "core/ledger_core.h"
#include "ehrledger.h"

PG_FUNCTION_INFO_V1(ehrledger_node_name);
PG_FUNCTION_INFO_V1(ehrledger_ack_message);
PG_FUNCTION_INFO_V1(ehrledger_sign_ack);
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
 * worker): a block from a peer is stored only if it is signed by that
 * peer's key, sound in itself, and extends that peer's chain as stored
 * here.  The same block again is skipped; another block at a height
 * already held is evidence of equivocation.  Acknowledgment and finality
 * follow in ehrledger._block_stored().
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
	char	   *verdict;
	bool		accepted;

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

	/* Who may send it, and whether this height is taken: ehrledger._admit_block(). */
	values[0] = CStringGetTextDatum(b->h.origin ? b->h.origin : "");
	values[1] = Int64GetDatum(b->h.height);
	values[2] = PointerGetDatum(ledger_bytea(b->block_hash, LEDGER_HASH_LEN));
	values[3] = PointerGetDatum(ledger_bytea(b->h.public_key, LEDGER_PUBKEY_LEN));
	values[4] = fault ? CStringGetTextDatum(fault) : (Datum) 0;
	nulls[4] = fault ? ' ' : 'n';
	values[5] = PointerGetDatum(header_bytes(&b->h));
	values[6] = PointerGetDatum(ledger_bytea(b->signature, LEDGER_SIG_LEN));
	if (SPI_execute_with_args("SELECT ehrledger._admit_block($1, $2, $3, $4, $5, $6, $7)",
							  7, types, values, nulls, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "ehrledger._admit_block failed");
	verdict = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	accepted = verdict != NULL && strcmp(verdict, "accept") == 0;
	SPI_finish();
	return PointerGetDatum(accepted ? tuple : NULL);
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
	char	   *volatile verdict = NULL;
	MemoryContext outer = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;

	if (learned)
		return true;
	if (!OidIsValid(get_relname_relid("rejoin", ledger_namespace())))
		return true;
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	/* a failure here is a reason not to seal, not to stop the sealer */
	BeginInternalSubTransaction(NULL);
	PG_TRY();
	{
		if (SPI_execute("SELECT ehrledger._learn_from_peers()", false, 0) == SPI_OK_SELECT &&
			SPI_processed == 1)
			verdict = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
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
		verdict = psprintf("waiting: %s", edata->message);
	}
	PG_END_TRY();
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
	int64		seq = PG_GETARG_INT64(1);
	int32		table_id = PG_GETARG_INT32(2);
	Jsonb	   *columns = PG_GETARG_JSONB_P(3);
	Jsonb	   *row = PG_GETARG_JSONB_P(4);
	int			n = JB_ROOT_IS_ARRAY(columns) ? JB_ROOT_COUNT(columns) : 0;
	TupleDesc	desc;
	Datum	   *values;
	bool	   *isnull;
	int			i;
	RowEncoder *enc;
	StringInfoData buf;
	uint8		leaf[LEDGER_HASH_LEN];
	Oid			types[2] = {TEXTOID, INT8OID};
	Datum		args[2];
	const char *verdict = "verified";
	const char *volatile fault = NULL;
	MemoryContext outer = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;

	if (n == 0)
		PG_RETURN_TEXT_P(cstring_to_text("its origin recorded no columns"));

	/* Re-encoding runs input functions on a peer's data: failures are a verdict. */
	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(outer);
	PG_TRY();
	{
		desc = CreateTemplateTupleDesc(n);
		values = palloc0(sizeof(Datum) * n);
		isnull = palloc0(sizeof(bool) * n);
		for (i = 0; i < n && fault == NULL; i++)
		{
			JsonbValue *col = getIthJsonbValueFromContainer(&columns->root, i);
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
				fault = "its column list is malformed";
				break;
			}
			name = pnstrdup(nv.val.string.val, nv.val.string.len);
			parseTypeString(pnstrdup(tv.val.string.val, tv.val.string.len), &typid, &typmod, true);
			if (!OidIsValid(typid))
			{
				fault = psprintf("column \"%s\" has a type unknown here", name);
				break;
			}
			/* a domain here is a local role's, and the hash knows only its base */
			typid = getBaseTypeAndTypmod(typid, &typmod);
			TupleDescInitEntry(desc, i + 1, name, typid, typmod, 0);
			isnull[i] = !value_from_json(row, name, typid, typmod, &values[i]);
		}
		if (fault == NULL)
		{
			enc = row_encoder_create(desc, outer);
			initStringInfo(&buf);
			row_encode(enc, &buf, table_id, seq, values, isnull);
			ledger_leaf_hash(buf.data, buf.len, leaf);
		}
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
		fault = psprintf("it cannot be encoded again here: %s", edata->message);
	}
	PG_END_TRY();
	if (fault != NULL)
		PG_RETURN_TEXT_P(cstring_to_text(fault));

	args[0] = PointerGetDatum(origin);
	args[1] = Int64GetDatum(seq);
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
							   VARSIZE_ANY_EXHDR(packed) / LEDGER_LEAF_SIZE, seq,
							   (uint32) table_id, leaf, &at))
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
	origin = strstr(edata->context, "replication origin \"pg_");
	finish = strstr(edata->context, "finished at ");
	if (origin == NULL || finish == NULL ||
		sscanf(origin, "replication origin \"pg_%u\"", &subid) != 1 ||
		sscanf(finish, "finished at %X/%X", &hi, &lo) != 2 ||
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
