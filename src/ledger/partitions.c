/*
 * partitions.c
 *		Partitioned ledger tables: the partitions a partitioned table stands
 *		for, the one that holds a row, and detaching refused.
 *
 * protect() of a partitioned table (src/ledger/ledger.sql) registers it as
 * a partitioned ledger table and each of its partitions, present and
 * future, as a ledger table of its own, with its own table id, triggers,
 * ledger_seq index and history; registered_table.partition_of links a
 * partition to its partitioned table.  The rows are the partitions': every
 * function that takes a table and reads rows (verify(), proof(), export(),
 * history(), verify_record(), erase(), ...) turns a partitioned table into
 * its partitions here, after checking the caller's rights on the
 * partitioned table itself, as a query of it would.
 *
 * A partition leaves the ledger through ehrledger.retire(); before that,
 * DETACH PARTITION is refused here, before anything happens (a refusal at
 * the end of DETACH ... CONCURRENTLY, by the schema guard's event trigger,
 * would leave the partition half detached).  The guard refuses a plain
 * DETACH and a DROP as well.
 *
 * Next: tables.c, verify.c, proofs.c read the partitions' rows.
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/relation.h"
#include "access/relscan.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/tablecmds.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "nodes/parsenodes.h"
#include "parser/parse_relation.h"
#include "tcop/utility.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "ledger/ledger.h"

static ProcessUtility_hook_type prev_process_utility = NULL;

static LedgerTable *
registry_find(List *registry, int32 table_id)
{
	ListCell   *lc;

	foreach(lc, registry)
		if (((LedgerTable *) lfirst(lc))->table_id == table_id)
			return lfirst(lc);
	return NULL;
}

/* Whether relid is a registered partition (retired or not) of the partitioned ledger table t. */
bool
ledger_is_partition_of(List *registry, Oid relid, const LedgerTable *t)
{
	ListCell   *lc;

	foreach(lc, registry)
		if (((LedgerTable *) lfirst(lc))->relid == relid)
			return ((LedgerTable *) lfirst(lc))->partition_of == t->table_id;
	return false;
}

/*
 * The topmost ledger table t is a partition of (through partitioned
 * partitions), or t itself: the table its authors sign rows under and
 * whose rights decide who may verify it.
 */
LedgerTable *
ledger_root(List *registry, LedgerTable *t)
{
	int			depth = 0;

	while (t->partition_of != 0 && depth++ < 1000)
	{
		LedgerTable *up = registry_find(registry, t->partition_of);

		if (up == NULL)
			break;
		t = up;
	}
	return t;
}

/* Whether t is registered as a partition, at any depth, of the table above. */
static bool
is_below(List *registry, LedgerTable *t, int32 above)
{
	int			depth = 0;

	while (t->partition_of != 0 && depth++ < 1000)
	{
		if (t->partition_of == above)
			return true;
		if ((t = registry_find(registry, t->partition_of)) == NULL)
			return false;
	}
	return false;
}

/*
 * The ledger tables holding t's rows, in table_id order: t itself, or for
 * a partitioned table every partition registered below it (retired ones
 * too: their sealed rows stay in the blocks).
 */
List *
ledger_partitions(LedgerTable *t, Snapshot snapshot)
{
	List	   *registry;
	List	   *result = NIL;
	ListCell   *lc;

	if (!t->partitioned)
		return list_make1(t);
	registry = ledger_registry(snapshot);
	foreach(lc, registry)
	{
		LedgerTable *p = lfirst(lc);

		if (!p->partitioned && is_below(registry, p, t->table_id))
			result = lappend(result, p);
	}
	return result;
}

/* Whether column `column` of relid has value seq, by its unique index. */
static bool
holds_seq(Oid relid, const char *column, int64 seq)
{
	Relation	rel = relation_open(relid, AccessShareLock);
	AttrNumber	att = attnameAttNum(rel, column, false);
	Oid			indexoid = att > 0 ? ledger_seq_index(rel, att) : InvalidOid;
	bool		found = false;

	if (OidIsValid(indexoid))
	{
		Relation	irel = index_open(indexoid, AccessShareLock);
		IndexScanDesc scan = index_beginscan(rel, irel, GetActiveSnapshot(), 1, 0);
		TupleTableSlot *slot = table_slot_create(rel, NULL);
		ScanKeyData key;

		ScanKeyInit(&key, 1, BTEqualStrategyNumber, F_INT8EQ, Int64GetDatum(seq));
		index_rescan(scan, &key, 1, NULL, 0);
		found = index_getnext_slot(scan, ForwardScanDirection, slot);
		ExecDropSingleTupleTableSlot(slot);
		index_endscan(scan);
		index_close(irel, AccessShareLock);
	}
	relation_close(rel, AccessShareLock);
	return found;
}

/*
 * Which of the tables (a partitioned table's partitions) holds row version
 * seq: in the table, in its history (a version, or the end of one), or
 * erased with a record naming it.  NULL if none does.
 */
LedgerTable *
ledger_partition_holding(List *tables, int64 seq)
{
	ListCell   *lc;
	Oid			types[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(seq)};
	LedgerTable *found = NULL;
	uint64		i;

	foreach(lc, tables)
	{
		LedgerTable *t = lfirst(lc);

		if (get_rel_name(t->relid) == NULL)
			continue;
		if (holds_seq(t->relid, LEDGER_SEQ_COLUMN, seq))
			return t;
		if (OidIsValid(t->history_relid) && get_rel_name(t->history_relid) != NULL &&
			(holds_seq(t->history_relid, LEDGER_SEQ_COLUMN, seq) ||
			 holds_seq(t->history_relid, LEDGER_ENDED_SEQ_COLUMN, seq)))
			return t;
	}
	if (tables == NIL || !OidIsValid(get_relname_relid("erasure", ledger_namespace())))
		return NULL;
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	spi_as_owner("SELECT DISTINCT table_id FROM ehrledger.erasure WHERE erased_seq OPERATOR(pg_catalog.=) $1",
				 1, types, values, NULL, true, false);
	for (i = 0; i < SPI_processed && found == NULL; i++)
	{
		bool		isnull;
		int32		id = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));

		foreach(lc, tables)
			if (((LedgerTable *) lfirst(lc))->table_id == id)
				found = lfirst(lc);
	}
	SPI_finish();
	return found;
}

/* The table whose name a row of relid is signed under (docs/format.md §15). */
Oid
ledger_signed_relid(Oid relid)
{
	List	   *registry = ledger_registry(GetActiveSnapshot());
	ListCell   *lc;

	foreach(lc, registry)
		if (((LedgerTable *) lfirst(lc))->relid == relid)
			return ledger_root(registry, lfirst(lc))->relid;
	return relid;
}

/* A protected partition, not retired, that cmd would detach: refused. */
static void
refuse_detach(AlterTableStmt *stmt, AlterTableCmd *cmd)
{
	PartitionCmd *pc = (PartitionCmd *) cmd->def;
	Oid			relid;
	Oid			parent;
	LedgerTable *t;
	char	   *name;
	Snapshot	snapshot;

	if (!ledger_schema_installed() || pc == NULL || pc->name == NULL)
		return;
	/* (PostgreSQL refuses it there, before any lock) */
	if (pc->concurrent && IsTransactionBlock())
		return;

	/*
	 * DETACH ... CONCURRENTLY commits its first step before the guard's
	 * event trigger could refuse it (leaving the partition half detached),
	 * so it is judged here, after the lock its first step takes on the
	 * parent: a protect() of the parent still open then ends first, and a
	 * fresh snapshot sees it.  (The owner's check first, as ALTER TABLE's,
	 * so that no one else can queue for the lock.)  A plain DETACH is
	 * refused here early, or by the event trigger in its own transaction.
	 */
	if (pc->concurrent || cmd->subtype == AT_DetachPartitionFinalize)
		parent = RangeVarGetRelidExtended(stmt->relation, ShareUpdateExclusiveLock, RVR_MISSING_OK,
										  RangeVarCallbackOwnsRelation, NULL);
	else
		parent = RangeVarGetRelid(stmt->relation, NoLock, true);
	/* (for the two steps, locked as the command will: see above) */
	if (cmd->subtype == AT_DetachPartitionFinalize)
		relid = RangeVarGetRelidExtended(pc->name, AccessExclusiveLock, RVR_MISSING_OK, NULL, NULL);
	else if (pc->concurrent)
		relid = RangeVarGetRelidExtended(pc->name, ShareUpdateExclusiveLock, RVR_MISSING_OK, NULL, NULL);
	else
		relid = RangeVarGetRelid(pc->name, NoLock, true);
	if (!OidIsValid(relid))
		return;
	snapshot = RegisterSnapshot(GetLatestSnapshot());
	t = ledger_table_of(relid, snapshot);
	UnregisterSnapshot(snapshot);
	if (t == NULL || t->retired || t->partition_of == 0)
		return;
	name = relation_qualified_name(relid);
	ereport(ERROR,
			(errcode(ERRCODE_LEDGER_SCHEMA_GUARD),
			 errmsg("cannot detach partition %s from ledger table %s", name,
					OidIsValid(parent)
					? relation_qualified_name(parent) : stmt->relation->relname),
			 errdetail("Its rows are in the ledger as rows of the partitioned table."),
			 errhint("Retire it first with ehrledger.retire('%s', reason).", name)));
}

static void
partitions_process_utility(PlannedStmt *pstmt, const char *queryString, bool readOnlyTree,
						   ProcessUtilityContext context, ParamListInfo params,
						   QueryEnvironment *queryEnv, DestReceiver *dest, QueryCompletion *qc)
{
	Node	   *parsetree = pstmt->utilityStmt;
	TouchedLevel outer;
	Oid			altered;

	altered = ledger_type_guard(parsetree);
	if (IsA(parsetree, AlterTableStmt) && IsTransactionState())
	{
		ListCell   *lc;

		foreach(lc, ((AlterTableStmt *) parsetree)->cmds)
		{
			AlterTableCmd *cmd = lfirst(lc);

			if (cmd->subtype == AT_DetachPartition || cmd->subtype == AT_DetachPartitionFinalize)
				refuse_detach((AlterTableStmt *) parsetree, cmd);
		}
	}
	outer = ledger_type_guard_begin();
	PG_TRY();
	{
		next_process_utility(prev_process_utility, pstmt, queryString, readOnlyTree, context,
							 params, queryEnv, dest, qc);
		ledger_type_guard_after(parsetree, altered);
	}
	PG_FINALLY();
	{
		ledger_type_guard_end(outer);
	}
	PG_END_TRY();
}

/* Called from _PG_init. */
void
partitions_init(void)
{
	prev_process_utility = ProcessUtility_hook;
	ProcessUtility_hook = partitions_process_utility;
}
