/*
 * tables.c
 *		The registry of protected tables (ehrledger.registered_table).
 *
 * Read directly from the heap, so that neither the caller's privileges nor
 * row-level security can hide a protected table from the sealer or the
 * verifier.
 *
 * Next: seal.c, verify.c, proofs.c and src/network read protected tables
 * through ledger_tables() and ledger_read_rows().
 */
#include "postgres.h"

#include "parser/parse_relation.h"
#include "access/genam.h"
#include "access/heapam.h"
#include "access/relation.h"
#include "access/htup_details.h"
#include "access/relscan.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_am.h"
#include "catalog/pg_attribute.h"
#include "catalog/pg_class.h"
#include "catalog/pg_index.h"
#include "catalog/pg_inherits.h"
#include "catalog/pg_policy.h"
#include "catalog/pg_rewrite.h"
#include "catalog/pg_trigger.h"
#include "catalog/pg_type.h"
#include "executor/executor.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/array.h"
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

#include "ledger/ledger.h"

/* Columns of ehrledger.registered_table, in order. */
#define Anum_registered_table_id	1
#define Anum_registered_relid		2
#define Anum_registered_mode		3
#define Anum_registered_patient_column	4
#define Anum_registered_history		11
#define Anum_registered_retired_at	13

static int
table_id_cmp(const ListCell *a, const ListCell *b)
{
	int32		x = ((const LedgerTable *) lfirst(a))->table_id;
	int32		y = ((const LedgerTable *) lfirst(b))->table_id;

	return (x > y) - (x < y);
}

static int
row_cmp(const ListCell *a, const ListCell *b)
{
	return strcmp(lfirst(a), lfirst(b));
}

/*
 * The rows of catalog (or registry) table relid that snapshot sees, each
 * as text: all of them (indexid invalid), or those whose column attno, the
 * first of index indexid, is key.  A row is its fields (0-ended; their
 * text output, in order) or, with none given, its row version.  Sorted,
 * so that two snapshots' lists compare whatever order the index gives
 * equal keys in.
 */
static List *
rows_seen(Oid relid, Oid indexid, AttrNumber attno, Oid key, const AttrNumber *fields,
		  Snapshot snapshot)
{
	Relation	rel = table_open(relid, AccessShareLock);
	TupleDesc	desc = RelationGetDescr(rel);
	ScanKeyData skey;
	SysScanDesc scan;
	HeapTuple	tup;
	List	   *rows = NIL;
	int			nfields = 0;
	Oid		   *outs;

	/* (the fields' output functions, looked up once, not for every row) */
	while (fields != NULL && fields[nfields] != 0)
		nfields++;
	outs = palloc(sizeof(Oid) * Max(nfields, 1));
	for (int i = 0; i < nfields; i++)
	{
		bool		varlena;

		getTypeOutputInfo(TupleDescAttr(desc, fields[i] - 1)->atttypid, &outs[i], &varlena);
	}
	ScanKeyInit(&skey, attno, BTEqualStrategyNumber, F_OIDEQ, ObjectIdGetDatum(key));
	scan = systable_beginscan(rel, indexid, OidIsValid(indexid), snapshot,
							  OidIsValid(indexid) ? 1 : 0, &skey);
	while ((tup = systable_getnext(scan)) != NULL)
	{
		StringInfoData row;

		/* of indexes, only what could be the ledger_seq one */
		if (relid == IndexRelationId &&
			!(((Form_pg_index) GETSTRUCT(tup))->indisunique &&
			  ((Form_pg_index) GETSTRUCT(tup))->indnkeyatts == 1))
			continue;
		initStringInfo(&row);
		if (fields == NULL)
			appendStringInfo(&row, "(%u,%u)", ItemPointerGetBlockNumber(&tup->t_self),
							 ItemPointerGetOffsetNumber(&tup->t_self));
		for (int i = 0; i < nfields; i++)
		{
			bool		isnull;
			Datum		d = heap_getattr(tup, fields[i], desc, &isnull);

			appendStringInfo(&row, "%s\x1f", isnull ? "\x1e" : OidOutputFunctionCall(outs[i], d));
		}
		rows = lappend(rows, row.data);
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	pfree(outs);
	list_sort(rows, row_cmp);
	return rows;
}

/* Whether the two snapshots see the same rows (as rows_seen() gives them). */
static bool
same_rows(Oid relid, Oid indexid, AttrNumber attno, Oid key, const AttrNumber *fields,
		  Snapshot seen, Snapshot now)
{
	List	   *a = rows_seen(relid, indexid, attno, key, fields, seen);
	List	   *b = rows_seen(relid, indexid, attno, key, fields, now);
	bool		same = list_length(a) == list_length(b);

	for (int i = 0; same && i < list_length(a); i++)
		same = strcmp(list_nth(a, i), list_nth(b, i)) == 0;
	list_free_deep(a);
	list_free_deep(b);
	return same;
}

/*
 * What the guard's checks read of a relation's catalog rows: a change to
 * anything else (a GRANT, VACUUM FULL, SET STATISTICS, a storage option, an
 * index other than a unique one-column one) is not a change to judge.
 */
static const AttrNumber class_fields[] = {
	Anum_pg_class_relname, Anum_pg_class_relnamespace, Anum_pg_class_reloftype,
	Anum_pg_class_relkind, Anum_pg_class_relpersistence, Anum_pg_class_relispartition,
	Anum_pg_class_relrowsecurity, Anum_pg_class_relforcerowsecurity, 0
};
static const AttrNumber attribute_fields[] = {
	Anum_pg_attribute_attnum, Anum_pg_attribute_attname, Anum_pg_attribute_atttypid,
	Anum_pg_attribute_atttypmod, Anum_pg_attribute_attnotnull, Anum_pg_attribute_atthasdef,
	Anum_pg_attribute_attidentity, Anum_pg_attribute_attgenerated, Anum_pg_attribute_attisdropped,
	Anum_pg_attribute_attcollation, 0
};
static const AttrNumber index_fields[] = {
	Anum_pg_index_indkey, Anum_pg_index_indisunique, Anum_pg_index_indnkeyatts,
	Anum_pg_index_indisvalid, Anum_pg_index_indisready, Anum_pg_index_indislive, 0
};
static const AttrNumber trigger_fields[] = {
	Anum_pg_trigger_tgname, Anum_pg_trigger_tgfoid, Anum_pg_trigger_tgtype,
	Anum_pg_trigger_tgenabled, Anum_pg_trigger_tgattr, Anum_pg_trigger_tgargs,
	Anum_pg_trigger_tgqual, 0
};
static const AttrNumber rewrite_fields[] = {
	Anum_pg_rewrite_rulename, Anum_pg_rewrite_ev_type, Anum_pg_rewrite_ev_enabled,
	Anum_pg_rewrite_is_instead, 0
};
static const AttrNumber inherits_fields[] = {
	Anum_pg_inherits_inhrelid, Anum_pg_inherits_inhparent, Anum_pg_inherits_inhseqno,
	Anum_pg_inherits_inhdetachpending, 0
};
static const AttrNumber policy_fields[] = {
	Anum_pg_policy_polname, Anum_pg_policy_polcmd, Anum_pg_policy_polpermissive,
	Anum_pg_policy_polroles, Anum_pg_policy_polqual, Anum_pg_policy_polwithcheck, 0
};

/* Whether the two snapshots see the same of relation relid (as above). */
static bool
same_relation(Oid relid, Snapshot seen, Snapshot now)
{
	return same_rows(RelationRelationId, ClassOidIndexId, Anum_pg_class_oid, relid, class_fields,
					 seen, now) &&
		same_rows(AttributeRelationId, AttributeRelidNumIndexId, Anum_pg_attribute_attrelid, relid,
				  attribute_fields, seen, now) &&
		same_rows(IndexRelationId, IndexIndrelidIndexId, Anum_pg_index_indrelid, relid, index_fields,
				  seen, now) &&
		same_rows(TriggerRelationId, TriggerRelidNameIndexId, Anum_pg_trigger_tgrelid, relid,
				  trigger_fields, seen, now) &&
		same_rows(RewriteRelationId, RewriteRelRulenameIndexId, Anum_pg_rewrite_ev_class, relid,
				  rewrite_fields, seen, now) &&
		same_rows(PolicyRelationId, PolicyPolrelidPolnameIndexId, Anum_pg_policy_polrelid, relid,
				  policy_fields, seen, now);
}

PG_FUNCTION_INFO_V1(ehrledger_guard_snapshot);

/*
 * The schema guard's event triggers, protect() and the partitions' entry
 * are plpgsql: their queries read the registry and the catalogs with the
 * transaction's snapshot.  Under REPEATABLE READ or SERIALIZABLE that may
 * have been taken before another session committed a protect(), a
 * retire(), an ALTER of a ledger table or of what it inherits, or a new
 * partition, and the checks would judge a world that is gone: a DROP TABLE
 * of a table protected since passed as the drop of a plain one.  This
 * refuses, as a serialization failure, when the snapshot does not see what
 * a fresh one sees of: the registry; the pg_class, pg_attribute, pg_index,
 * pg_trigger, pg_rewrite and pg_policy rows of every ledger table, its
 * history table and tbl (when not NULL), what the checks read of them;
 * and pg_inherits.  PostgreSQL refuses a change to a row changed since the
 * snapshot the same way; a retry sees the new state.
 */
Datum
ehrledger_guard_snapshot(PG_FUNCTION_ARGS)
{
	Snapshot	seen;
	Snapshot	now;
	bool		same;
	ListCell   *lc;
	MemoryContext cxt;
	MemoryContext old;

	if (!IsolationUsesXactSnapshot())
		PG_RETURN_VOID();
	/* (the rows' text, a few kilobytes a table, goes when the check ends) */
	cxt = AllocSetContextCreate(CurrentMemoryContext, "ehrledger guard snapshot",
								ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(cxt);
	seen = GetTransactionSnapshot();
	now = RegisterSnapshot(GetLatestSnapshot());
	same = same_rows(ledger_relid("registered_table"), InvalidOid, 0, InvalidOid, NULL, seen, now) &&
		same_rows(InheritsRelationId, InvalidOid, 0, InvalidOid, inherits_fields, seen, now) &&
		(PG_ARGISNULL(0) || same_relation(PG_GETARG_OID(0), seen, now));
	if (same)
		foreach(lc, ledger_registry(now))
		{
			LedgerTable *t = lfirst(lc);

			if (t->retired)
				continue;
			if (!same_relation(t->relid, seen, now) ||
				(OidIsValid(t->history_relid) && !same_relation(t->history_relid, seen, now)))
			{
				same = false;
				break;
			}
		}
	UnregisterSnapshot(now);
	MemoryContextSwitchTo(old);
	MemoryContextDelete(cxt);
	if (!same)
		ereport(ERROR,
				(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
				 errmsg("could not serialize access due to a concurrent change of the ledger's tables"),
				 errdetail("A ledger table, its registry entry or a table it inherits from changed after this transaction's snapshot was taken."),
				 errhint("Retry the transaction.")));
	PG_RETURN_VOID();
}

/*
 * Every registered table, partitioned ones too, in table_id order: whatever
 * walks them (the sealer, verify(), the rights checks that name the first
 * table refused) does so the same way every time, not in the heap's order
 * of the day.
 */
List *
ledger_registry(Snapshot snapshot)
{
	Relation	rel = table_open(ledger_relid("registered_table"), AccessShareLock);
	TableScanDesc scan = table_beginscan(rel, snapshot, 0, NULL);
	HeapTuple	tup;
	List	   *result = NIL;

	/* a schema before 0.4 has no partitioned tables */
	AttrNumber	partitioned_att = attnameAttNum(rel, "partitioned", false);
	AttrNumber	partition_of_att = attnameAttNum(rel, "partition_of", false);

	while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		bool		isnull;
		Datum		id = heap_getattr(tup, Anum_registered_table_id,
									  RelationGetDescr(rel), &isnull);
		Datum		relid;
		Datum		d;
		LedgerTable *t;

		if (isnull)
			continue;
		relid = heap_getattr(tup, Anum_registered_relid, RelationGetDescr(rel), &isnull);
		if (isnull)
			continue;
		t = palloc0(sizeof(LedgerTable));
		t->table_id = DatumGetInt32(id);
		t->relid = DatumGetObjectId(relid);
		t->history_relid = InvalidOid;
		t->retired = false;
		d = heap_getattr(tup, Anum_registered_mode, RelationGetDescr(rel), &isnull);
		t->versioned = !isnull && strcmp(TextDatumGetCString(d), "versioned") == 0;
		if (partitioned_att > 0)
		{
			d = heap_getattr(tup, partitioned_att, RelationGetDescr(rel), &isnull);
			t->partitioned = !isnull && DatumGetBool(d);
		}
		if (partition_of_att > 0)
		{
			d = heap_getattr(tup, partition_of_att, RelationGetDescr(rel), &isnull);
			t->partition_of = isnull ? 0 : DatumGetInt32(d);
		}
		(void) heap_getattr(tup, Anum_registered_patient_column, RelationGetDescr(rel), &isnull);
		t->consent = !isnull;
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
	list_sort(result, table_id_cmp);
	return result;
}

/*
 * Every registered table that holds rows, in table_id order: all but the
 * partitioned ones, whose partitions are registered each.
 */
List *
ledger_tables(Snapshot snapshot)
{
	List	   *result = NIL;
	ListCell   *lc;

	foreach(lc, ledger_registry(snapshot))
		if (!((LedgerTable *) lfirst(lc))->partitioned)
			result = lappend(result, lfirst(lc));
	return result;
}

/* The registration of a table (a partitioned one too), or NULL. */
LedgerTable *
ledger_table_of(Oid relid, Snapshot snapshot)
{
	ListCell   *lc;

	foreach(lc, ledger_registry(snapshot))
		if (((LedgerTable *) lfirst(lc))->relid == relid)
			return lfirst(lc);
	return NULL;
}

/* The ledger's id of a table, or -1 when the table is not protected. */
int32
ledger_table_id(Oid relid, Snapshot snapshot)
{
	LedgerTable *t = ledger_table_of(relid, snapshot);

	return t ? t->table_id : -1;
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

/* Finds a history table's end-of-version columns; false if one is missing. */
bool
history_end_columns(Relation rel, HistoryEndColumns *c)
{
	c->op = attnameAttNum(rel, LEDGER_OP_COLUMN, false);
	c->end_seq = attnameAttNum(rel, LEDGER_ENDED_SEQ_COLUMN, false);
	c->end_hash = attnameAttNum(rel, LEDGER_ENDED_HASH_COLUMN, false);
	c->end_at = attnameAttNum(rel, LEDGER_ENDED_AT_COLUMN, false);
	c->end_by = attnameAttNum(rel, LEDGER_ENDED_BY_COLUMN, false);
	c->salt = Max(attnameAttNum(rel, LEDGER_SALT_COLUMN, false), 0);
	return c->op > 0 && c->end_seq > 0 && c->end_hash > 0 && c->end_at > 0 && c->end_by > 0;
}

/*
 * Encodes the end of a version as a history row states it (its op, when,
 * by whom, the version's salt), numbered end_seq and naming version
 * version_seq: verify() checks the stored hash against it, the rejoin's
 * renumbering rehashes with it, export() shows it.  The end columns must
 * not be NULL.
 */
void
history_end_encode(StringInfo buf, int32 table_id, int64 end_seq, int64 version_seq,
				   const HistoryEndColumns *hc, const Datum *values, const bool *isnull)
{
	const char *opname = TextDatumGetCString(values[hc->op - 1]);

	end_event_encode(buf, table_id, end_seq, version_seq,
					 strcmp(opname, "update") == 0 ? LEDGER_OP_UPDATE :
					 strcmp(opname, "delete") == 0 ? LEDGER_OP_DELETE : 0,
					 DatumGetTimestampTz(values[hc->end_at - 1]),
					 NameStr(*DatumGetName(values[hc->end_by - 1])),
					 hc->salt > 0 && !isnull[hc->salt - 1] ?
					 PG_DETOAST_DATUM_PACKED(values[hc->salt - 1]) : NULL);
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
	ledger_refuse_temporary_dependencies(RelationGetRelid(rel));
	ledger_refuse_foreign_row_types(RelationGetRelid(rel));
	ledger_refuse_temporary_schemas(RelationGetRelid(rel));
	relation_close(rel, AccessShareLock);
	PG_RETURN_VOID();
}

/*
 * A protected table whose rows the caller is about to see (a partitioned
 * one too): the caller needs SELECT on it, and tables under row-level
 * security are refused rather than risk showing a row the policy hides.
 * A partitioned table's rows are its partitions': SELECT on it and its
 * row-level security decide, as for a query of it.
 */
LedgerTable *
ledger_table_for_reader(Oid relid)
{
	LedgerTable *t;

	if (get_rel_name(relid) == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation with OID %u does not exist", relid)));
	t = ledger_table_of(relid, GetActiveSnapshot());
	if (t == NULL)
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
	return t;
}

/*
 * The table holding row version seq whose rows the caller is about to
 * see: relid itself, or for a partitioned table the partition that holds
 * it (NULL when none does).  Rights as ledger_table_for_reader().
 */
LedgerTable *
ledger_row_table_for_reader(Oid relid, int64 seq)
{
	LedgerTable *t = ledger_table_for_reader(relid);

	if (!t->partitioned)
		return t;
	return ledger_partition_holding(ledger_partitions(t, GetActiveSnapshot()), seq);
}

/*
 * Whose code the rows of a ledger table carry (the casts, domains and types
 * of its columns): its owner's, and for a history table, whose columns are
 * the protected table's, the protected table's owner's.
 */
static Oid
ledger_code_owner(Oid relid)
{
	ListCell   *lc;

	foreach(lc, ledger_tables(GetActiveSnapshot()))
	{
		LedgerTable *t = lfirst(lc);

		if (t->history_relid == relid)
			return relation_owner(t->relid);
	}
	return relation_owner(relid);
}

/*
 * Calls fn for each row version of a protected table (or of a history
 * table) numbered in [lo, hi], in ledger_seq order, with its canonical
 * encoding and the row as jsonb, converted with the rights of the owner of
 * the row's code.  Returns the number of rows visited.
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
	Oid			owner;
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
	owner = ledger_code_owner(relid);

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
		json = row_to_json_as(owner, ExecFetchSlotHeapTupleDatum(slot));
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
	int64		seq = PG_GETARG_INT64(1);
	LedgerTable *t = ledger_row_table_for_reader(PG_GETARG_OID(0), seq);
	OneRow		one = {NULL};

	if (t == NULL)
		PG_RETURN_NULL();
	ledger_read_rows(t->relid, t->table_id, seq, seq, keep_encoding, &one);
	if (one.encoding == NULL)
		PG_RETURN_NULL();
	PG_RETURN_BYTEA_P(one.encoding);
}

PG_FUNCTION_INFO_V1(ehrledger_history);

/* One version of a row, for history(). */
typedef struct Version
{
	int64		seq;
	Datum		row;
	bool		current;
	int64		ended_seq;
	Datum		ended_how;
	TimestampTz ended_at;
	Datum		ended_by;
} Version;

typedef struct Versions
{
	Version    *items;
	int			count;
	int			capacity;
	bool		history;		/* reading the history table */
	AttrNumber	ended_seq_att;
	AttrNumber	op_att;
	AttrNumber	at_att;
	AttrNumber	by_att;
	Datum		ledger_keys;	/* text[] of the ledger's column names */
} Versions;

static void
keep_version(void *arg, int64 seq, StringInfo encoding, Datum json, TupleTableSlot *slot)
{
	Versions   *vs = arg;
	Version    *v;

	(void) encoding;
	if (vs->count == vs->capacity)
	{
		vs->capacity *= 2;
		vs->items = repalloc_huge(vs->items, sizeof(Version) * vs->capacity);
	}
	v = &vs->items[vs->count++];
	memset(v, 0, sizeof(Version));
	v->seq = seq;
	v->row = DirectFunctionCall2(jsonb_delete_array, json, vs->ledger_keys);
	v->current = !vs->history;
	if (vs->history)
	{
		v->ended_seq = DatumGetInt64(slot->tts_values[vs->ended_seq_att - 1]);
		v->ended_how = PointerGetDatum(DatumGetTextPCopy(slot->tts_values[vs->op_att - 1]));
		v->ended_at = DatumGetTimestampTz(slot->tts_values[vs->at_att - 1]);
		v->ended_by = DirectFunctionCall1(namein, CStringGetDatum(NameStr(*DatumGetName(slot->tts_values[vs->by_att - 1]))));
	}
}

static int
version_cmp(const void *a, const void *b)
{
	int64		x = ((const Version *) a)->seq;
	int64		y = ((const Version *) b)->seq;

	return (x > y) - (x < y);
}

/* A column of a history table that ehrledger keeps NOT NULL. */
static AttrNumber
history_att(Oid history_relid, const char *name)
{
	AttrNumber	att = get_attnum(history_relid, name);

	if (att == InvalidAttrNumber)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("history table \"%s\" lacks its column %s",
						get_rel_name(history_relid), name)));
	return att;
}

/*
 * ehrledger.history(tbl): every version of every row of a versioned table,
 * oldest first, with how each version ended (operation, ledger_seq of the
 * end event, time, role).  The caller needs SELECT on the table.  Both
 * tables are read directly, as the versioning trigger wrote them; only the
 * conversion of rows to JSON runs code of the table (its columns' casts),
 * with its owner's rights.
 */
Datum
ehrledger_history(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	LedgerTable *registered = ledger_table_for_reader(relid);
	ListCell   *lc;
	Versions	vs;
	Datum		keys[8];
	int			i;

	if (!registered->versioned ||
		(!registered->partitioned && !OidIsValid(registered->history_relid)))
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("table \"%s\" is not a versioned ledger table", get_rel_name(relid)),
				 errhint("Only tables protected with mode => 'versioned' keep a history.")));

	InitMaterializedSRF(fcinfo, 0);
	memset(&vs, 0, sizeof(vs));
	vs.capacity = 64;
	vs.items = palloc_extended(sizeof(Version) * vs.capacity, MCXT_ALLOC_HUGE);
	keys[0] = CStringGetTextDatum(LEDGER_SEQ_COLUMN);
	keys[1] = CStringGetTextDatum(LEDGER_HASH_COLUMN);
	keys[2] = CStringGetTextDatum(LEDGER_OP_COLUMN);
	keys[3] = CStringGetTextDatum(LEDGER_ENDED_SEQ_COLUMN);
	keys[4] = CStringGetTextDatum(LEDGER_ENDED_HASH_COLUMN);
	keys[5] = CStringGetTextDatum(LEDGER_ENDED_AT_COLUMN);
	keys[6] = CStringGetTextDatum(LEDGER_ENDED_BY_COLUMN);
	keys[7] = CStringGetTextDatum(LEDGER_SALT_COLUMN);
	vs.ledger_keys = PointerGetDatum(construct_array(keys, lengthof(keys), TEXTOID, -1, false,
													  TYPALIGN_INT));

	/* a partitioned table's versions are its partitions', each with its history */
	foreach(lc, ledger_partitions(registered, GetActiveSnapshot()))
	{
		LedgerTable *table = lfirst(lc);

		if (!OidIsValid(table->history_relid) || get_rel_name(table->relid) == NULL ||
			get_rel_name(table->history_relid) == NULL)
			continue;
		vs.history = true;
		vs.ended_seq_att = history_att(table->history_relid, LEDGER_ENDED_SEQ_COLUMN);
		vs.op_att = history_att(table->history_relid, LEDGER_OP_COLUMN);
		vs.at_att = history_att(table->history_relid, LEDGER_ENDED_AT_COLUMN);
		vs.by_att = history_att(table->history_relid, LEDGER_ENDED_BY_COLUMN);
		ledger_read_rows(table->history_relid, table->table_id, PG_INT64_MIN, PG_INT64_MAX,
						 keep_version, &vs);
		vs.history = false;
		ledger_read_rows(table->relid, table->table_id, PG_INT64_MIN, PG_INT64_MAX,
						 keep_version, &vs);
	}
	qsort(vs.items, vs.count, sizeof(Version), version_cmp);

	for (i = 0; i < vs.count; i++)
	{
		Version    *v = &vs.items[i];
		Datum		values[7];
		bool		nulls[7] = {false, false, false, v->current, v->current, v->current, v->current};

		values[0] = Int64GetDatum(v->seq);
		values[1] = v->row;
		values[2] = BoolGetDatum(v->current);
		values[3] = Int64GetDatum(v->ended_seq);
		values[4] = v->ended_how;
		values[5] = TimestampTzGetDatum(v->ended_at);
		values[6] = v->ended_by;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
