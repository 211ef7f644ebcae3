/*
 * backfill.c
 *		How the rows already in a table enter the ledger when protect()
 *		attaches it.
 *
 * protect() adds the ledger's columns (metadata only), then the table is
 * rewritten once, the way ALTER TABLE rewrites a table: every live row is
 * copied into a new heap with its ledger_seq, salt and leaf hash, and the new heap
 * takes the old one's place with its indexes rebuilt (finish_heap_swap()).
 * An UPDATE of every row would leave the old versions behind and double
 * the table until VACUUM; the rewrite leaves nothing for VACUUM and grows
 * the table only by the ledger's columns.  Like any table rewrite it is not
 * MVCC-safe: a transaction that started before protect() and reads the
 * table afterwards sees it empty (as after CLUSTER or VACUUM FULL).
 *
 * The table owner's code (the send functions of its types, its index
 * expressions and predicates) runs as the owner, restricted, as CLUSTER
 * runs it.  Signatures of rows already there are not checked here:
 * verify_record() checks them.
 *
 * Next: the rows wait, numbered and hashed, until seal.c puts them in a
 * block, like rows the insert trigger (triggers.c) numbered.
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/multixact.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_class.h"
#include "commands/cluster.h"
#include "executor/tuptable.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "ledger/ledger.h"

PG_FUNCTION_INFO_V1(ehrledger_backfill);

/*
 * ehrledger._backfill(tbl, table_id): rewrites tbl with every row numbered
 * and hashed as a row of ledger table table_id; returns how many rows.
 * Superuser only; protect() calls it holding ACCESS EXCLUSIVE on tbl.
 */
Datum
ehrledger_backfill(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);
	int32		table_id = PG_GETARG_INT32(1);
	Oid			seq_relid;
	Relation	rel;
	Relation	newrel;
	Oid			newrelid;
	char		persistence;
	RowEncoder *enc;
	AttrNumber	seq_att;
	AttrNumber	hash_att;
	AttrNumber	salt_att;
	Snapshot	snapshot;
	TableScanDesc scan;
	TupleTableSlot *oldslot;
	TupleTableSlot *newslot;
	BulkInsertState bistate;
	CommandId	cid = GetCurrentCommandId(true);
	MemoryContext rowcxt;
	MemoryContext outer;
	UserSwitch	sw;
	int64		count = 0;
	int			natts;

	if (!superuser())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("only a superuser may bring a table's rows into the ledger"),
				 errhint("Call ehrledger.protect().")));
	seq_relid = ledger_relid("ledger_seq");
	rel = table_open(relid, AccessExclusiveLock);
	if (rel->rd_rel->relkind != RELKIND_RELATION)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("\"%s\" is not a table", RelationGetRelationName(rel))));
	persistence = rel->rd_rel->relpersistence;
	natts = RelationGetDescr(rel)->natts;

	user_switch_restricted(rel->rd_rel->relowner, &sw);
	enc = row_encoder_create(RelationGetDescr(rel), CurrentMemoryContext);
	seq_att = row_encoder_seq_attnum(enc);
	hash_att = row_encoder_hash_attnum(enc);
	salt_att = row_encoder_salt_attnum(enc);
	if (seq_att == InvalidAttrNumber || hash_att == InvalidAttrNumber)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("table \"%s\" lacks its ledger_seq or ledger_hash column",
						RelationGetRelationName(rel))));

	newrelid = make_new_heap(relid, rel->rd_rel->reltablespace, rel->rd_rel->relam,
							 persistence, AccessExclusiveLock);
	newrel = table_open(newrelid, NoLock);

	snapshot = RegisterSnapshot(GetLatestSnapshot());
	scan = table_beginscan(rel, snapshot, 0, NULL);
	oldslot = table_slot_create(rel, NULL);
	newslot = table_slot_create(newrel, NULL);
	bistate = GetBulkInsertState();
	rowcxt = AllocSetContextCreate(CurrentMemoryContext, "ehrledger backfill row",
								   ALLOCSET_DEFAULT_SIZES);
	while (table_scan_getnextslot(scan, ForwardScanDirection, oldslot))
	{
		int64		seq;
		bytea	   *hash;

		CHECK_FOR_INTERRUPTS();
		outer = MemoryContextSwitchTo(rowcxt);
		slot_getallattrs(oldslot);
		ExecClearTuple(newslot);
		memcpy(newslot->tts_values, oldslot->tts_values, sizeof(Datum) * natts);
		memcpy(newslot->tts_isnull, oldslot->tts_isnull, sizeof(bool) * natts);
		if (salt_att != InvalidAttrNumber)
		{
			newslot->tts_values[salt_att - 1] = PointerGetDatum(ledger_new_salt(rel));
			newslot->tts_isnull[salt_att - 1] = false;
		}
		hash = ledger_number_version(enc, table_id, seq_relid, newslot->tts_values,
									 newslot->tts_isnull, &seq);
		newslot->tts_values[seq_att - 1] = Int64GetDatum(seq);
		newslot->tts_isnull[seq_att - 1] = false;
		newslot->tts_values[hash_att - 1] = PointerGetDatum(hash);
		newslot->tts_isnull[hash_att - 1] = false;
		ExecStoreVirtualTuple(newslot);
		/* values TOASTed in the old heap are fetched and stored anew */
		table_tuple_insert(newrel, newslot, cid, TABLE_INSERT_SKIP_FSM, bistate);
		MemoryContextSwitchTo(outer);
		MemoryContextReset(rowcxt);
		count++;
	}
	table_endscan(scan);
	UnregisterSnapshot(snapshot);
	ExecDropSingleTupleTableSlot(oldslot);
	ExecDropSingleTupleTableSlot(newslot);
	FreeBulkInsertState(bistate);
	table_finish_bulk_insert(newrel, TABLE_INSERT_SKIP_FSM);
	MemoryContextDelete(rowcxt);

	table_close(newrel, NoLock);
	table_close(rel, NoLock);
	/* the new heap takes the old one's place; its indexes are rebuilt */
	finish_heap_swap(relid, newrelid, false, false, true, true,
					 RecentXmin, ReadNextMultiXactId(), persistence);
	user_switch_end(&sw);
	PG_RETURN_INT64(count);
}
