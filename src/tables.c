/*
 * tables.c
 *		The registry of protected tables (ehrledger.registered_table).
 *
 * Read directly from the heap, so that neither the caller's privileges nor
 * row-level security can hide a protected table from the sealer or the
 * verifier.
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/heapam.h"
#include "access/relation.h"
#include "access/htup_details.h"
#include "access/relscan.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/pg_am.h"
#include "catalog/pg_class.h"
#include "catalog/pg_index.h"
#include "executor/executor.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/rls.h"
#include "utils/snapmgr.h"
#include "utils/relcache.h"
#include "utils/syscache.h"

#include "ehrledger.h"

/* Columns of ehrledger.registered_table, in order. */
#define Anum_registered_table_id	1
#define Anum_registered_relid		2
#define Anum_registered_history		11
#define Anum_registered_retired_at	13

List *
ledger_tables(Snapshot snapshot)
{
	Relation	rel = table_open(ledger_relid("registered_table"), AccessShareLock);
	TableScanDesc scan = table_beginscan(rel, snapshot, 0, NULL);
	HeapTuple	tup;
	List	   *result = NIL;

	while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		bool		isnull;
		Datum		id = heap_getattr(tup, Anum_registered_table_id,
									  RelationGetDescr(rel), &isnull);
		Datum		relid;
		LedgerTable *t;

		if (isnull)
			continue;
		relid = heap_getattr(tup, Anum_registered_relid, RelationGetDescr(rel), &isnull);
		if (isnull)
			continue;
		t = palloc(sizeof(LedgerTable));
		t->table_id = DatumGetInt32(id);
		t->relid = DatumGetObjectId(relid);
		t->history_relid = InvalidOid;
		t->retired = false;
		if (RelationGetDescr(rel)->natts >= Anum_registered_retired_at)
		{
			(void) heap_getattr(tup, Anum_registered_retired_at, RelationGetDescr(rel), &isnull);
			t->retired = !isnull;
		}
		if (RelationGetDescr(rel)->natts >= Anum_registered_history)
		{
			Datum		h = heap_getattr(tup, Anum_registered_history,
										 RelationGetDescr(rel), &isnull);

			if (!isnull)
				t->history_relid = DatumGetObjectId(h);
		}
		result = lappend(result, t);
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	return result;
}

/* The ledger's id of a table, or -1 when the table is not protected. */
int32
ledger_table_id(Oid relid, Snapshot snapshot)
{
	List	   *tables = ledger_tables(snapshot);
	ListCell   *lc;

	foreach(lc, tables)
	{
		LedgerTable *t = lfirst(lc);

		if (t->relid == relid)
			return t->table_id;
	}
	return -1;
}

static bool
index_is_btree(Oid indexoid)
{
	HeapTuple	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(indexoid));
	bool		result;

	if (!HeapTupleIsValid(tup))
		return false;
	result = ((Form_pg_class) GETSTRUCT(tup))->relam == BTREE_AM_OID;
	ReleaseSysCache(tup);
	return result;
}

/* The unique btree index on ledger_seq that protect() created. */
Oid
ledger_seq_index(Relation rel, AttrNumber seq_attnum)
{
	List	   *indexes = RelationGetIndexList(rel);
	ListCell   *lc;
	Oid			found = InvalidOid;

	foreach(lc, indexes)
	{
		Oid			indexoid = lfirst_oid(lc);
		HeapTuple	tup = SearchSysCache1(INDEXRELID, ObjectIdGetDatum(indexoid));
		Form_pg_index idx;

		if (!HeapTupleIsValid(tup))
			continue;
		idx = (Form_pg_index) GETSTRUCT(tup);
		if (idx->indnkeyatts == 1 && idx->indkey.values[0] == seq_attnum &&
			idx->indisvalid && idx->indisunique && heap_attisnull(tup, Anum_pg_index_indpred, NULL) &&
			index_is_btree(indexoid))
			found = indexoid;
		ReleaseSysCache(tup);
		if (OidIsValid(found))
			break;
	}
	list_free(indexes);
	return found;
}

PG_FUNCTION_INFO_V1(ehrledger_check_hashable);
PG_FUNCTION_INFO_V1(ehrledger_row_encoding);

/* protect() asks this before changing anything: can every column be hashed? */
Datum
ehrledger_check_hashable(PG_FUNCTION_ARGS)
{
	Relation	rel = relation_open(PG_GETARG_OID(0), AccessShareLock);

	(void) row_encoder_create(RelationGetDescr(rel), CurrentMemoryContext);
	relation_close(rel, AccessShareLock);
	PG_RETURN_VOID();
}

/*
 * The ledger id of a protected table whose rows the caller is about to see:
 * the caller needs SELECT on it, and tables under row-level security are
 * refused rather than risk showing a row the policy hides.
 */
int32
ledger_table_for_reader(Oid relid)
{
	int32		table_id;

	if (get_rel_name(relid) == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation with OID %u does not exist", relid)));
	table_id = ledger_table_id(relid, GetActiveSnapshot());
	if (table_id < 0)
		ereport(ERROR,
				(errcode(ERRCODE_LEDGER_NOT_PROTECTED),
				 errmsg("table \"%s\" is not protected by ehrledger",
						get_rel_name(relid)),
				 errhint("Protect it with ehrledger.protect('%s').", get_rel_name(relid))));
	if (pg_class_aclcheck(relid, GetUserId(), ACL_SELECT) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for table %s", get_rel_name(relid))));
	if (check_enable_rls(relid, InvalidOid, false) == RLS_ENABLED)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("ehrledger cannot show rows of table %s, which is under row-level security",
						get_rel_name(relid))));
	return table_id;
}

/*
 * Calls fn for each row version of a protected table numbered in [lo, hi],
 * in ledger_seq order, with its canonical encoding and the row as jsonb.
 * Returns the number of rows visited.
 */
int64
ledger_read_rows(Oid relid, int32 table_id, int64 lo, int64 hi,
				 LedgerRowCallback fn, void *arg)
{
	Relation	rel = relation_open(relid, AccessShareLock);
	RowEncoder *enc = row_encoder_create(RelationGetDescr(rel), CurrentMemoryContext);
	Oid			indexoid = ledger_seq_index(rel, row_encoder_seq_attnum(enc));
	Relation	irel;
	IndexScanDesc scan;
	TupleTableSlot *slot;
	ScanKeyData keys[2];
	StringInfoData buf;
	MemoryContext rowcxt;
	int64		count = 0;

	if (!OidIsValid(indexoid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("protected table \"%s\" lacks its unique index on ledger_seq",
						RelationGetRelationName(rel))));
	irel = index_open(indexoid, AccessShareLock);
	ScanKeyInit(&keys[0], 1, BTGreaterEqualStrategyNumber, F_INT8GE, Int64GetDatum(lo));
	ScanKeyInit(&keys[1], 1, BTLessEqualStrategyNumber, F_INT8LE, Int64GetDatum(hi));
	scan = index_beginscan(rel, irel, GetActiveSnapshot(), 2, 0);
	index_rescan(scan, keys, 2, NULL, 0);
	slot = table_slot_create(rel, NULL);
	initStringInfo(&buf);
	rowcxt = AllocSetContextCreate(CurrentMemoryContext, "ehrledger row",
								   ALLOCSET_DEFAULT_SIZES);

	while (index_getnext_slot(scan, ForwardScanDirection, slot))
	{
		MemoryContext old = MemoryContextSwitchTo(rowcxt);
		bool		isnull;
		int64		seq;
		Datum		json;

		CHECK_FOR_INTERRUPTS();
		slot_getallattrs(slot);
		seq = DatumGetInt64(slot_getattr(slot, row_encoder_seq_attnum(enc), &isnull));
		resetStringInfo(&buf);
		row_encode(enc, &buf, table_id, seq, slot->tts_values, slot->tts_isnull);
		json = DirectFunctionCall1(row_to_json, ExecFetchSlotHeapTupleDatum(slot));
		json = DirectFunctionCall1(jsonb_in, CStringGetDatum(TextDatumGetCString(json)));
		MemoryContextSwitchTo(old);
		fn(arg, seq, &buf, json, slot);
		MemoryContextReset(rowcxt);
		count++;
	}
	MemoryContextDelete(rowcxt);
	pfree(buf.data);
	ExecDropSingleTupleTableSlot(slot);
	index_endscan(scan);
	index_close(irel, AccessShareLock);
	relation_close(rel, AccessShareLock);
	return count;
}

typedef struct OneRow
{
	bytea	   *encoding;
} OneRow;

static void
keep_encoding(void *arg, int64 seq, StringInfo encoding, Datum json, TupleTableSlot *slot)
{
	OneRow	   *one = arg;

	(void) seq;
	(void) slot;
	(void) json;
	one->encoding = ledger_bytea(encoding->data, encoding->len);
}

/*
 * ehrledger.row_encoding(tbl, ledger_seq): the canonical bytes of one row,
 * for auditors and for anyone writing an independent verifier.
 */
Datum
ehrledger_row_encoding(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);
	int64		seq = PG_GETARG_INT64(1);
	int32		table_id = ledger_table_for_reader(relid);
	OneRow		one = {NULL};

	ledger_read_rows(relid, table_id, seq, seq, keep_encoding, &one);
	if (one.encoding == NULL)
		PG_RETURN_NULL();
	PG_RETURN_BYTEA_P(one.encoding);
}

PG_FUNCTION_INFO_V1(ehrledger_history);

/*
 * ehrledger.history(tbl): every version of every row of a versioned table,
 * oldest first, with how each version ended (operation, ledger_seq of the
 * end event, time, role).  The caller needs SELECT on the table; the
 * history table is then read as its owner, as the versioning trigger wrote it.
 */
Datum
ehrledger_history(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	List	   *tables;
	ListCell   *lc;
	LedgerTable *table = NULL;
	char	   *main_name;
	char	   *history_name;
	char	   *query;
	Oid			save_userid;
	int			save_sec_context;
	Oid			owner;
	uint64		i;
	volatile int ret = 0;

	(void) ledger_table_for_reader(relid);
	tables = ledger_tables(GetActiveSnapshot());
	foreach(lc, tables)
		if (((LedgerTable *) lfirst(lc))->relid == relid)
			table = lfirst(lc);
	if (table == NULL || !OidIsValid(table->history_relid))
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("table \"%s\" is not a versioned ledger table", get_rel_name(relid)),
				 errhint("Only tables protected with mode => 'versioned' keep a history.")));

	InitMaterializedSRF(fcinfo, 0);
	main_name = quote_qualified_identifier(get_namespace_name(get_rel_namespace(relid)),
										   get_rel_name(relid));
	history_name = quote_qualified_identifier(get_namespace_name(get_rel_namespace(table->history_relid)),
											  get_rel_name(table->history_relid));
	query = psprintf("SELECT ledger_seq, pg_catalog.to_jsonb(h) - ARRAY['ledger_seq', 'ledger_hash',"
					 " 'ledger_op', 'ledger_ended_seq', 'ledger_ended_hash', 'ledger_ended_at',"
					 " 'ledger_ended_by'], false, ledger_ended_seq, ledger_op, ledger_ended_at,"
					 " ledger_ended_by FROM %s h"
					 " UNION ALL SELECT ledger_seq, pg_catalog.to_jsonb(t) - ARRAY['ledger_seq',"
					 " 'ledger_hash'], true, NULL, NULL, NULL, NULL FROM %s t ORDER BY 1",
					 history_name, main_name);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	{
		Relation	hrel = relation_open(table->history_relid, AccessShareLock);

		owner = hrel->rd_rel->relowner;
		relation_close(hrel, AccessShareLock);
	}
	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(owner, save_sec_context | SECURITY_LOCAL_USERID_CHANGE);
	PG_TRY();
	{
		ret = SPI_execute(query, true, 0);
	}
	PG_FINALLY();
	{
		SetUserIdAndSecContext(save_userid, save_sec_context);
	}
	PG_END_TRY();
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "could not read the history of \"%s\"", main_name);
	for (i = 0; i < SPI_processed; i++)
	{
		Datum		values[7];
		bool		nulls[7];
		int			c;

		for (c = 0; c < 7; c++)
			values[c] = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, c + 1, &nulls[c]);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	SPI_finish();
	return (Datum) 0;
}
