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
 * ehrledger.row_encoding(tbl, ledger_seq): the canonical bytes of one row,
 * for auditors and for anyone writing an independent verifier.  The caller
 * needs SELECT on the table; tables under row-level security are refused
 * rather than risk showing a row the policy hides.
 */
Datum
ehrledger_row_encoding(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);
	int64		seq = PG_GETARG_INT64(1);
	Relation	rel;
	int32		table_id;
	RowEncoder *enc;
	Oid			indexoid;
	Relation	irel;
	IndexScanDesc scan;
	TupleTableSlot *slot;
	ScanKeyData key;
	bytea	   *result = NULL;

	if (get_rel_name(relid) == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation with OID %u does not exist", relid)));
	table_id = ledger_table_id(relid, GetActiveSnapshot());
	if (table_id < 0)
		ereport(ERROR,
				(errcode(ERRCODE_LEDGER_NOT_PROTECTED),
				 errmsg("table \"%s\" is not protected by ehrledger",
						get_rel_name(relid))));
	if (pg_class_aclcheck(relid, GetUserId(), ACL_SELECT) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for table %s", get_rel_name(relid))));
	if (check_enable_rls(relid, InvalidOid, false) == RLS_ENABLED)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("row_encoding() is not available on table %s under row-level security",
						get_rel_name(relid))));

	rel = relation_open(relid, AccessShareLock);
	enc = row_encoder_create(RelationGetDescr(rel), CurrentMemoryContext);
	indexoid = ledger_seq_index(rel, row_encoder_seq_attnum(enc));
	if (!OidIsValid(indexoid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("protected table \"%s\" lacks its unique index on ledger_seq",
						RelationGetRelationName(rel))));
	irel = index_open(indexoid, AccessShareLock);
	ScanKeyInit(&key, 1, BTEqualStrategyNumber, F_INT8EQ, Int64GetDatum(seq));
	scan = index_beginscan(rel, irel, GetActiveSnapshot(), 1, 0);
	index_rescan(scan, &key, 1, NULL, 0);
	slot = table_slot_create(rel, NULL);
	if (index_getnext_slot(scan, ForwardScanDirection, slot))
	{
		StringInfoData buf;

		slot_getallattrs(slot);
		initStringInfo(&buf);
		row_encode(enc, &buf, table_id, seq, slot->tts_values, slot->tts_isnull);
		result = palloc(VARHDRSZ + buf.len);
		SET_VARSIZE(result, VARHDRSZ + buf.len);
		memcpy(VARDATA(result), buf.data, buf.len);
	}
	ExecDropSingleTupleTableSlot(slot);
	index_endscan(scan);
	index_close(irel, AccessShareLock);
	relation_close(rel, AccessShareLock);
	if (result == NULL)
		PG_RETURN_NULL();
	PG_RETURN_BYTEA_P(result);
}
