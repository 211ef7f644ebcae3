/*
 * triggers.c
 *		The triggers protect() installs on a ledger table.
 *
 * The insert trigger gives each new row version its ledger_seq, a fresh
 * secret salt (when the table has a ledger_salt column: protected by 0.4
 * or later) and the hash of its canonical encoding.  It takes no lock
 * that other writers wait on: the sequence hands out numbers without
 * blocking and the hash is computed from the row alone, so the cost of an
 * insert is the hash plus the row.
 * The guard trigger refuses UPDATE, DELETE and TRUNCATE on append-only
 * tables.  protect() marks both ENABLE ALWAYS, so they also fire under
 * session_replication_role = replica.
 *
 * Next: the row waits, hashed and numbered, until seal.c puts it in a block.
 */
#include "postgres.h"

#include <sodium.h>

#include "access/htup_details.h"
#include "access/heapam.h"
#include "access/genam.h"
#include "parser/parse_relation.h"
#include "executor/executor.h"
#include "catalog/index.h"
#include "access/table.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "utils/syscache.h"
#include "miscadmin.h"
#include "utils/memutils.h"
#include "storage/proc.h"
#include "utils/regproc.h"
#include "utils/timestamp.h"
#include "access/xact.h"
#include "commands/sequence.h"
#include "catalog/pg_trigger.h"
#include "commands/trigger.h"
#include "replication/worker_internal.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/inval.h"
#include "utils/rel.h"

#include "ledger/ledger.h"

PG_FUNCTION_INFO_V1(ehrledger_insert_row);
PG_FUNCTION_INFO_V1(ehrledger_refuse_change);

/*
 * What the insert and version triggers need: built once per table and
 * trigger in a backend, and again after any change to a relation, type or
 * function (the invalidation callbacks below), not once per statement (a
 * statement of one row used to pay for the catalog lookups of building it).
 */
typedef struct PlanKey
{
	Oid			relid;
	Oid			tgoid;
} PlanKey;

typedef struct InsertPlan
{
	PlanKey		key;			/* hash key: first */
	uint64		generation;		/* plan_generation it was built in */
	MemoryContext mcxt;			/* holds the plan and all it points to */
	int32		table_id;
	Oid			seq_relid;
	RowEncoder *encoder;
	AttrNumber	seq_attnum;
	AttrNumber	hash_attnum;
	AttrNumber	salt_attnum;	/* 0: no salt column */
	AttrNumber	signer_attnum;	/* signed tables only */
	AttrNumber	signature_attnum;
	Oid			signed_relid;	/* whose name rows are signed under */
	Oid			history_relid;	/* versioned tables only */
	struct HistoryWriter *history;
} InsertPlan;

/* schema.table, unquoted: messages put the name in double quotes. */
static char *
qualified_name(Relation rel)
{
	return psprintf("%s.%s", get_namespace_name(RelationGetNamespace(rel)),
					RelationGetRelationName(rel));
}

typedef struct PlanEntry
{
	PlanKey		key;
	InsertPlan *plan;
} PlanEntry;

/*
 * What a trigger call keeps in fn_extra: the plan, and the generation it
 * was current in; the plan is read only while that is still the current
 * one (a stale plan may have been freed since).
 */
typedef struct FnPlan
{
	PlanKey		key;
	uint64		generation;
	InsertPlan *plan;
} FnPlan;

static InsertPlan *
remember_plan(FunctionCallInfo fcinfo, InsertPlan *plan)
{
	FnPlan	   *fp = (FnPlan *) fcinfo->flinfo->fn_extra;

	if (fp == NULL)
		fp = fcinfo->flinfo->fn_extra = MemoryContextAlloc(fcinfo->flinfo->fn_mcxt, sizeof(FnPlan));
	fp->key = plan->key;
	fp->generation = plan->generation;
	fp->plan = plan;
	return plan;
}

static HTAB *plans = NULL;
static uint64 plan_generation = 1;
static List *retired_plans = NIL;	/* stale plans' contexts, freed at transaction end */

/*
 * Any relation, type or function changing may change what a plan holds (a
 * column, a composite type's fields, a send function): every plan is then
 * stale.  Nothing is freed here (a trigger may be using a plan): a stale
 * plan is retired when next looked up, and freed when its transaction ends.
 */
static void
plans_relcache_callback(Datum arg, Oid relid)
{
	(void) arg;
	(void) relid;
	plan_generation++;
}

static void
plans_syscache_callback(Datum arg, int cacheid, uint32 hashvalue)
{
	(void) arg;
	(void) cacheid;
	(void) hashvalue;
	plan_generation++;
}

/* Retired plans' contexts, when no trigger can still be using them. */
static void
free_retired_plans(void)
{
	ListCell   *lc;

	foreach(lc, retired_plans)
		MemoryContextDelete((MemoryContext) lfirst(lc));
	list_free(retired_plans);
	retired_plans = NIL;
}

/*
 * Calls of the triggers below under way in this backend (nested when a
 * trigger's work fires another): a retired plan is freed only when the
 * trigger asking for a plan is the only one.  An error leaves the count
 * high until the transaction ends, which only delays the freeing.
 */
static int	triggers_running = 0;

/*
 * At the end of a transaction no trigger is running: the retired plans go,
 * and so do stale ones still in the table (a dropped table's, which no
 * lookup would ever retire), so a session keeps only current plans.
 */
static void
plans_xact_callback(XactEvent event, void *arg)
{
	HASH_SEQ_STATUS status;
	PlanEntry  *entry;

	(void) arg;

	if (event != XACT_EVENT_COMMIT && event != XACT_EVENT_ABORT &&
		event != XACT_EVENT_PARALLEL_COMMIT && event != XACT_EVENT_PARALLEL_ABORT &&
		event != XACT_EVENT_PREPARE)
		return;
	triggers_running = 0;
	free_retired_plans();
	hash_seq_init(&status, plans);
	while ((entry = hash_seq_search(&status)) != NULL)
		if (entry->plan->generation != plan_generation)
		{
			MemoryContextDelete(entry->plan->mcxt);
			hash_search(plans, &entry->key, HASH_REMOVE, NULL);
		}
}

static void
plans_init(void)
{
	HASHCTL		ctl;

	ctl.keysize = sizeof(PlanKey);
	ctl.entrysize = sizeof(PlanEntry);
	ctl.hcxt = CacheMemoryContext;
	plans = hash_create("ehrledger insert plans", 16, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	CacheRegisterRelcacheCallback(plans_relcache_callback, (Datum) 0);
	CacheRegisterSyscacheCallback(TYPEOID, plans_syscache_callback, (Datum) 0);
	CacheRegisterSyscacheCallback(PROCOID, plans_syscache_callback, (Datum) 0);
	RegisterXactCallback(plans_xact_callback, NULL);
}

/*
 * PostgreSQL fires a table's triggers in the order of its trigger
 * descriptor: by name, through pg_trigger's index, but in the catalog's
 * physical order when the session ignores system indexes.  An enabled
 * BEFORE ROW trigger for the same event after this one could change the
 * row after it was hashed (the schema guard refuses late names; this also
 * covers ignore_system_indexes).
 */
static void
refuse_later_triggers(Relation rel, Trigger *ours, bool update)
{
	TriggerDesc *trigdesc = rel->trigdesc;
	bool		after = false;
	int			i;

	for (i = 0; trigdesc != NULL && i < trigdesc->numtriggers; i++)
	{
		Trigger    *t = &trigdesc->triggers[i];

		if (t->tgoid == ours->tgoid)
			after = true;
		else if (after && t->tgenabled != TRIGGER_DISABLED && TRIGGER_FOR_ROW(t->tgtype) &&
				 TRIGGER_FOR_BEFORE(t->tgtype) &&
				 (update ? TRIGGER_FOR_UPDATE(t->tgtype) : TRIGGER_FOR_INSERT(t->tgtype)))
			ereport(ERROR,
					(errcode(ERRCODE_LEDGER_SCHEMA_GUARD),
					 errmsg("trigger \"%s\" of ledger table \"%s\" would fire after the ledger's trigger \"%s\"",
							t->tgname, qualified_name(rel), ours->tgname),
					 errdetail("A change it made to a row would come after the row was hashed."),
					 errhint("Rename it so that its name sorts before \"%s\", and do not set ignore_system_indexes.",
							 ours->tgname)));
	}
}

/*
 * Trigger arguments: the ledger table id, then for versioned tables the
 * history table (first_optional = 2), then for signed tables the signer and
 * signature columns, and for a partition of a signed partitioned table the
 * table whose name its rows are signed under (by name, which a dump keeps).
 */
static InsertPlan *
insert_plan(FunctionCallInfo fcinfo, TriggerData *td, int first_optional)
{
	FnPlan	   *fp = (FnPlan *) fcinfo->flinfo->fn_extra;
	InsertPlan *plan;
	Relation	rel = td->tg_relation;
	Trigger    *trigger = td->tg_trigger;
	PlanKey		key;
	PlanEntry  *entry;
	bool		found;
	MemoryContext mcxt;
	uint64		generation;

	if (fp != NULL && fp->key.relid == RelationGetRelid(rel) &&
		fp->key.tgoid == trigger->tgoid && fp->generation == plan_generation)
		return fp->plan;

	if (plans == NULL)
		plans_init();
	memset(&key, 0, sizeof(key));
	key.relid = RelationGetRelid(rel);
	key.tgoid = trigger->tgoid;
	entry = hash_search(plans, &key, HASH_FIND, NULL);
	if (entry != NULL && entry->plan->generation == plan_generation)
		return remember_plan(fcinfo, entry->plan);
	if (triggers_running == 1)
		free_retired_plans();

	if (trigger->tgnargs != first_optional && trigger->tgnargs != first_optional + 2 &&
		trigger->tgnargs != first_optional + 3)
		ereport(ERROR,
				(errcode(ERRCODE_TRIGGERED_ACTION_EXCEPTION),
				 errmsg("trigger \"%s\" on \"%s\" must pass the ledger table id (and signer and signature columns)",
						trigger->tgname, qualified_name(rel)),
				 errhint("Triggers of ehrledger are created by ehrledger.protect().")));

	/* (under the transaction until built: an error frees what was begun) */
	generation = plan_generation;
	mcxt = AllocSetContextCreate(TopTransactionContext, "ehrledger insert plan",
								 ALLOCSET_SMALL_SIZES);
	plan = MemoryContextAllocZero(mcxt, sizeof(InsertPlan));
	plan->key = key;
	plan->mcxt = mcxt;
	plan->table_id = pg_strtoint32(trigger->tgargs[0]);
	plan->seq_relid = ledger_relid("ledger_seq");
	plan->encoder = row_encoder_create(RelationGetDescr(rel), mcxt);
	plan->seq_attnum = row_encoder_seq_attnum(plan->encoder);
	plan->hash_attnum = row_encoder_hash_attnum(plan->encoder);
	plan->salt_attnum = row_encoder_salt_attnum(plan->encoder);
	if (plan->seq_attnum == InvalidAttrNumber || plan->hash_attnum == InvalidAttrNumber)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("ledger table \"%s\" lacks its ledger_seq or ledger_hash column",
						qualified_name(rel))));
	if (first_optional == 2)
		plan->history_relid = DatumGetObjectId(DirectFunctionCall1(regclassin,
																   CStringGetDatum(trigger->tgargs[1])));
	plan->signed_relid = RelationGetRelid(rel);
	if (trigger->tgnargs == first_optional + 3)
		plan->signed_relid = DatumGetObjectId(DirectFunctionCall1(regclassin,
																  CStringGetDatum(trigger->tgargs[first_optional + 2])));
	if (trigger->tgnargs >= first_optional + 2)
	{
		plan->signer_attnum = SPI_fnumber(RelationGetDescr(rel), trigger->tgargs[first_optional]);
		plan->signature_attnum = SPI_fnumber(RelationGetDescr(rel), trigger->tgargs[first_optional + 1]);
		if (plan->signer_attnum <= 0 || plan->signature_attnum <= 0)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_COLUMN),
					 errmsg("signed ledger table \"%s\" lacks its signer or signature column",
							qualified_name(rel))));
	}

	refuse_later_triggers(rel, trigger, first_optional == 2);

	/*
	 * Built: it outlives the transaction, and the plan it replaces is
	 * retired (a trigger up the stack may still be using it).  The
	 * generation is the one read before building: a change announced
	 * while building (the lookups above process invalidations) makes the
	 * new plan stale at once, to be built again at the next row.
	 */
	plan->generation = generation;
	entry = hash_search(plans, &key, HASH_ENTER, &found);
	if (found)
	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

		retired_plans = lappend(retired_plans, entry->plan->mcxt);
		MemoryContextSwitchTo(old);
	}
	MemoryContextSetParent(mcxt, CacheMemoryContext);
	entry->plan = plan;
	return remember_plan(fcinfo, plan);
}

/*
 * The row ehrledger._restore_row() is bringing back from a peer's copy
 * (relid invalid when none): an insert into that table keeps its number
 * only if the row encodes to the sealed leaf, whoever runs it.
 */
LedgerRestore ledger_restoring = {InvalidOid};

/* The restored row's number and hash, or an error: nothing else is kept. */
static Datum
restored_version(TriggerData *td, InsertPlan *plan, Datum *values, bool *isnull)
{
	StringInfoData buf;
	uint8		computed[LEDGER_HASH_LEN];
	int64		seq;

	if (isnull[plan->seq_attnum - 1] ||
		(seq = DatumGetInt64(values[plan->seq_attnum - 1])) != ledger_restoring.seq ||
		ledger_restoring.inserted > 0)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("a row restored into \"%s\" must be row %lld alone",
						qualified_name(td->tg_relation), (long long) ledger_restoring.seq)));
	initStringInfo(&buf);
	row_encode(plan->encoder, &buf, plan->table_id, seq, values, isnull);
	ledger_leaf_hash(buf.data, buf.len, computed);
	pfree(buf.data);
	if (memcmp(computed, ledger_restoring.leaf, LEDGER_HASH_LEN) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("the copy of row %lld of \"%s\" does not encode to the leaf its block holds",
						(long long) seq, qualified_name(td->tg_relation))));
	ledger_restoring.inserted++;
	{
		bytea	   *hash = palloc(VARHDRSZ + LEDGER_HASH_LEN);
		int			col = plan->hash_attnum;
		bool		nonull = false;
		Datum		v;

		SET_VARSIZE(hash, VARHDRSZ + LEDGER_HASH_LEN);
		memcpy(VARDATA(hash), computed, LEDGER_HASH_LEN);
		v = PointerGetDatum(hash);
		return PointerGetDatum(heap_modify_tuple_by_cols(td->tg_trigtuple, RelationGetDescr(td->tg_relation),
														 1, &col, &v, &nonull));
	}
}

/*
 * Salts come from a ChaCha20 key stream under a key this process drew
 * from pg_strong_random(), SALT_POOL salts at a time, each block of the
 * stream under a nonce never used with that key: as unpredictable as
 * pg_strong_random()'s own output, for about 1/300 of its cost (a call of
 * it costs 2 to 4 us, as much as the rest of the row's hashing).
 */
#define SALT_POOL	32

static uint8 salt_key[crypto_stream_chacha20_ietf_KEYBYTES];
static uint8 salt_nonce[crypto_stream_chacha20_ietf_NONCEBYTES];
static uint8 salt_pool[SALT_POOL * LEDGER_SALT_LEN];
static int	salt_next = SALT_POOL;
static pid_t salt_pid = 0;

/* A fresh secret salt for a new row version of rel (docs/format.md §1). */
bytea *
ledger_new_salt(Relation rel)
{
	bytea	   *salt = palloc(VARHDRSZ + LEDGER_SALT_LEN);

	SET_VARSIZE(salt, VARHDRSZ + LEDGER_SALT_LEN);
	/* (a process forked with a key must not repeat its parent's salts) */
	if (salt_pid != MyProcPid)
	{
		if (!pg_strong_random(salt_key, sizeof(salt_key)))
			ereport(ERROR,
					(errcode(ERRCODE_INTERNAL_ERROR),
					 errmsg("could not generate a random salt for a row of \"%s\"",
							qualified_name(rel))));
		memset(salt_nonce, 0, sizeof(salt_nonce));
		salt_next = SALT_POOL;
		salt_pid = MyProcPid;
	}
	if (salt_next == SALT_POOL)
	{
		sodium_increment(salt_nonce, sizeof(salt_nonce));
		crypto_stream_chacha20_ietf(salt_pool, sizeof(salt_pool), salt_nonce, salt_key);
		salt_next = 0;
	}
	memcpy(VARDATA(salt), salt_pool + salt_next * LEDGER_SALT_LEN, LEDGER_SALT_LEN);
	sodium_memzero(salt_pool + salt_next * LEDGER_SALT_LEN, LEDGER_SALT_LEN);
	salt_next++;
	return salt;
}

/*
 * Gives a new row version its ledger_seq and returns its leaf hash (a
 * bytea): the insert trigger's work, and the backfill's (backfill.c).
 */
bytea *
ledger_number_version(const RowEncoder *enc, int32 table_id, Oid seq_relid,
					  const Datum *values, const bool *isnull, int64 *seq)
{
	StringInfoData buf;
	bytea	   *hash;

	/*
	 * Take a transaction id before the sequence number: the sealer relies on
	 * every holder of an unsealed number already having one (see seal.c).
	 */
	(void) GetCurrentTransactionId();
	*seq = nextval_internal(seq_relid, false);

	initStringInfo(&buf);
	row_encode(enc, &buf, table_id, *seq, values, isnull);
	hash = palloc(VARHDRSZ + LEDGER_HASH_LEN);
	SET_VARSIZE(hash, VARHDRSZ + LEDGER_HASH_LEN);
	ledger_leaf_hash(buf.data, buf.len, (uint8 *) VARDATA(hash));
	pfree(buf.data);
	return hash;
}

static Datum
new_version(TriggerData *td, InsertPlan *plan)
{
	HeapTuple	tuple;
	TupleDesc	desc;
	Datum	   *values;
	bool	   *isnull;
	int64		seq;
	StringInfoData buf;
	bytea	   *hash;
	int			cols[3];
	Datum		newvals[3];
	bool		newnulls[3] = {false, false, false};
	int			ncols = 2;

	tuple = TRIGGER_FIRED_BY_UPDATE(td->tg_event) ? td->tg_newtuple : td->tg_trigtuple;
	desc = RelationGetDescr(td->tg_relation);

	values = palloc(sizeof(Datum) * desc->natts);
	isnull = palloc(sizeof(bool) * desc->natts);
	heap_deform_tuple(tuple, desc, values, isnull);

	if (TRIGGER_FIRED_BY_INSERT(td->tg_event) && OidIsValid(ledger_restoring.relid) &&
		ledger_restoring.relid == RelationGetRelid(td->tg_relation))
		return restored_version(td, plan, values, isnull);

	/*
	 * A superuser restoring a dump re-inserts rows that already carry their
	 * number and a hash that matches them: those are kept as they are.
	 */
	if (TRIGGER_FIRED_BY_INSERT(td->tg_event) && superuser() &&
		!isnull[plan->seq_attnum - 1] && !isnull[plan->hash_attnum - 1])
	{
		bytea	   *given = DatumGetByteaPP(values[plan->hash_attnum - 1]);
		uint8		computed[LEDGER_HASH_LEN];

		seq = DatumGetInt64(values[plan->seq_attnum - 1]);
		initStringInfo(&buf);
		row_encode(plan->encoder, &buf, plan->table_id, seq, values, isnull);
		ledger_leaf_hash(buf.data, buf.len, computed);
		pfree(buf.data);
		if (VARSIZE_ANY_EXHDR(given) == LEDGER_HASH_LEN &&
			memcmp(VARDATA_ANY(given), computed, LEDGER_HASH_LEN) == 0)
			return PointerGetDatum(tuple);
	}

	if (plan->signer_attnum > 0)
		check_row_signature(td->tg_relation, plan->signed_relid, plan->encoder, plan->signer_attnum,
							plan->signature_attnum, values, isnull);

	/*
	 * Every new version gets a salt of its own, whatever the writer put
	 * there: a leaf then reveals nothing to whoever cannot read the row.
	 */
	if (plan->salt_attnum > 0)
	{
		bytea	   *salt = ledger_new_salt(td->tg_relation);

		values[plan->salt_attnum - 1] = PointerGetDatum(salt);
		isnull[plan->salt_attnum - 1] = false;
		cols[ncols] = plan->salt_attnum;
		newvals[ncols++] = PointerGetDatum(salt);
	}
	hash = ledger_number_version(plan->encoder, plan->table_id, plan->seq_relid,
								 values, isnull, &seq);

	cols[0] = plan->seq_attnum;
	newvals[0] = Int64GetDatum(seq);
	cols[1] = plan->hash_attnum;
	newvals[1] = PointerGetDatum(hash);

	return PointerGetDatum(heap_modify_tuple_by_cols(tuple, desc, ncols, cols,
													 newvals, newnulls));
}

/*
 * BEFORE INSERT FOR EACH ROW: assigns ledger_seq, ledger_salt and
 * ledger_hash, whatever the application supplied for them.  protect() also
 * fires it BEFORE UPDATE once, to bring the rows of a populated table into
 * the ledger.
 */
Datum
ehrledger_insert_row(PG_FUNCTION_ARGS)
{
	TriggerData *td;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("ehrledger.insert_row() must be called as a trigger")));
	td = (TriggerData *) fcinfo->context;
	if (!TRIGGER_FIRED_BEFORE(td->tg_event) || !TRIGGER_FIRED_FOR_ROW(td->tg_event) ||
		!(TRIGGER_FIRED_BY_INSERT(td->tg_event) || TRIGGER_FIRED_BY_UPDATE(td->tg_event)))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("ehrledger.insert_row() must be fired BEFORE INSERT FOR EACH ROW")));

	{
		Datum		result;

		triggers_running++;
		result = new_version(td, insert_plan(fcinfo, td, 1));
		triggers_running--;
		return result;
	}
}

/* BEFORE UPDATE OR DELETE (per row) and BEFORE TRUNCATE: always refuses. */
Datum
ehrledger_refuse_change(PG_FUNCTION_ARGS)
{
	TriggerData *td;
	char	   *name;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("ehrledger.refuse_change() must be called as a trigger")));
	td = (TriggerData *) fcinfo->context;
	name = qualified_name(td->tg_relation);

	/* a peer's, of ehrledger's own tables: see note_peer_truncate() */
	if (TRIGGER_FIRED_BY_TRUNCATE(td->tg_event) && MyLogicalRepWorker != NULL &&
		RelationGetNamespace(td->tg_relation) == ledger_namespace())
		ereport(ERROR,
				(errcode(ERRCODE_LEDGER_PEER_TRUNCATE),
				 errmsg("a peer's TRUNCATE of \"%s\" is refused", name),
				 errdetail("A hospital only ever adds rows to the tables it shares."),
				 errhint("The sealer's next round records it in ehrledger.rejected_row and skips the peer's transaction.")));
	if (TRIGGER_FIRED_BY_TRUNCATE(td->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_LEDGER_ROW_IMMUTABLE),
				 errmsg("cannot truncate append-only ledger table \"%s\"", name),
				 errdetail("Rows of a ledger table are permanent once written."),
				 errhint("Record corrections as new rows.")));
	ereport(ERROR,
			(errcode(ERRCODE_LEDGER_ROW_IMMUTABLE),
			 errmsg("cannot %s rows of append-only ledger table \"%s\"",
					TRIGGER_FIRED_BY_UPDATE(td->tg_event) ? "update" : "delete", name),
			 errdetail("Rows of a ledger table are permanent once written."),
			 errhint("Record corrections as new rows.")));
	PG_RETURN_NULL();
}

PG_FUNCTION_INFO_V1(ehrledger_version_row);

/*
 * Writing an ended version into the history table, directly: a heap insert
 * and its index entries, as the catalogs do, without an executor per row.
 * The history table has no insert triggers, rules or policies, and its
 * columns are the protected table's plus the ledger's end-of-version
 * columns; the mapping by name is kept for the statement.
 */
typedef struct HistoryWriter
{
	Oid			history_relid;
	int			natts;			/* of the history table */
	AttrNumber *from;			/* history attno -> protected table attno, 0 if none */
	AttrNumber	op_att;
	AttrNumber	end_seq_att;
	AttrNumber	end_hash_att;
	AttrNumber	end_at_att;
	AttrNumber	end_by_att;
} HistoryWriter;

static HistoryWriter *
history_writer(InsertPlan *plan, Relation rel, Relation hrel)
{
	HistoryWriter *hw = plan->history;
	TupleDesc	hdesc = RelationGetDescr(hrel);
	int			i;

	if (hw != NULL && hw->history_relid == RelationGetRelid(hrel) && hw->natts == hdesc->natts)
		return hw;
	hw = MemoryContextAllocZero(plan->mcxt, sizeof(HistoryWriter));
	hw->history_relid = RelationGetRelid(hrel);
	hw->natts = hdesc->natts;
	hw->from = MemoryContextAllocZero(plan->mcxt, sizeof(AttrNumber) * hdesc->natts);
	for (i = 0; i < hdesc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(hdesc, i);
		const char *name = NameStr(att->attname);

		if (att->attisdropped)
			continue;
		if (strcmp(name, LEDGER_OP_COLUMN) == 0)
			hw->op_att = att->attnum;
		else if (strcmp(name, LEDGER_ENDED_SEQ_COLUMN) == 0)
			hw->end_seq_att = att->attnum;
		else if (strcmp(name, LEDGER_ENDED_HASH_COLUMN) == 0)
			hw->end_hash_att = att->attnum;
		else if (strcmp(name, LEDGER_ENDED_AT_COLUMN) == 0)
			hw->end_at_att = att->attnum;
		else if (strcmp(name, LEDGER_ENDED_BY_COLUMN) == 0)
			hw->end_by_att = att->attnum;
		else
		{
			AttrNumber	src = attnameAttNum(rel, name, false);

			hw->from[i] = src > 0 ? src : 0;
		}
	}
	if (!hw->op_att || !hw->end_seq_att || !hw->end_hash_att || !hw->end_at_att || !hw->end_by_att)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("history table \"%s\" lacks its ledger columns",
						RelationGetRelationName(hrel))));
	plan->history = hw;
	return hw;
}

/*
 * Stores a version in the history table, with its index entries as the
 * executor makes them: a DBA's expression or partial index on a history
 * table is evaluated (as the caller, as for any insert) or skipped by its
 * predicate, and unique indexes are checked.
 */
static void
history_insert(Relation hrel, HeapTuple tup)
{
	EState	   *estate = CreateExecutorState();
	ResultRelInfo *rri = makeNode(ResultRelInfo);
	TupleTableSlot *slot;

	InitResultRelInfo(rri, hrel, 1, NULL, 0);
	ExecOpenIndices(rri, false);
	simple_heap_insert(hrel, tup);
	slot = MakeSingleTupleTableSlot(RelationGetDescr(hrel), &TTSOpsHeapTuple);
	ExecStoreHeapTuple(tup, slot, false);
	(void) ExecInsertIndexTuples(rri, slot, estate, false, false, NULL, NIL);
	ExecDropSingleTupleTableSlot(slot);
	ExecCloseIndices(rri);
	FreeExecutorState(estate);
}

/*
 * An UPDATE that moves a row into another partition fires the trigger
 * BEFORE UPDATE on the row's partition (its version ends, by "update", and
 * the new version is numbered), then, as the row moves, BEFORE DELETE on
 * the same partition for the same version, which is not ended twice; the
 * new version enters its new partition through that one's insert trigger,
 * numbered anew.  The version the last BEFORE UPDATE ended, by statement.
 */
static struct
{
	LocalTransactionId lxid;
	CommandId	cid;
	Oid			relid;
	int64		seq;
}			ended_by_update;

/*
 * BEFORE UPDATE OR DELETE FOR EACH ROW on versioned tables: the version
 * being replaced or deleted moves to the history table with its end event
 * (its own ledger_seq and hash: which version, how, when, by whom); an
 * updated row becomes a new version with a new ledger_seq and hash.  The
 * application sees an ordinary UPDATE or DELETE.
 */
static Datum
version_row(FunctionCallInfo fcinfo)
{
	TriggerData *td;
	InsertPlan *plan;
	Relation	rel;
	TupleDesc	desc;
	HeapTuple	old_tuple;
	Datum	   *values;
	bool	   *isnull;
	Oid			history_relid;
	int			i;
	int64		end_seq;
	int			op;
	TimestampTz now = GetCurrentTimestamp();
	const char *role = GetUserNameFromId(GetUserId(), false);
	StringInfoData buf;
	bytea	   *end_hash;
	bool		seq_null;
	int64		version_seq;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("ehrledger.version_row() must be called as a trigger")));
	td = (TriggerData *) fcinfo->context;
	if (!TRIGGER_FIRED_BEFORE(td->tg_event) || !TRIGGER_FIRED_FOR_ROW(td->tg_event) ||
		!(TRIGGER_FIRED_BY_UPDATE(td->tg_event) || TRIGGER_FIRED_BY_DELETE(td->tg_event)))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("ehrledger.version_row() must be fired BEFORE UPDATE OR DELETE FOR EACH ROW")));
	if (td->tg_trigger->tgnargs < 2)
		ereport(ERROR,
				(errcode(ERRCODE_TRIGGERED_ACTION_EXCEPTION),
				 errmsg("trigger \"%s\" must pass the ledger table id and its history table",
						td->tg_trigger->tgname)));

	rel = td->tg_relation;
	desc = RelationGetDescr(rel);
	plan = insert_plan(fcinfo, td, 2);
	history_relid = plan->history_relid;
	op = TRIGGER_FIRED_BY_UPDATE(td->tg_event) ? LEDGER_OP_UPDATE : LEDGER_OP_DELETE;
	old_tuple = td->tg_trigtuple;

	version_seq = DatumGetInt64(heap_getattr(old_tuple, plan->seq_attnum, desc, &seq_null));
	if (seq_null)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("a row of ledger table \"%s\" has no ledger_seq", qualified_name(rel))));
	if (op == LEDGER_OP_DELETE && rel->rd_rel->relispartition &&
		ended_by_update.lxid == MyProc->lxid && ended_by_update.cid == GetCurrentCommandId(false) &&
		ended_by_update.relid == RelationGetRelid(rel) && ended_by_update.seq == version_seq)
		return PointerGetDatum(old_tuple);

	(void) GetCurrentTransactionId();
	end_seq = nextval_internal(plan->seq_relid, false);

	values = palloc(sizeof(Datum) * desc->natts);
	isnull = palloc(sizeof(bool) * desc->natts);
	heap_deform_tuple(old_tuple, desc, values, isnull);

	initStringInfo(&buf);
	end_event_encode(&buf, plan->table_id, end_seq, version_seq, op, now, role,
					 row_encoder_salt(plan->encoder, values, isnull));
	end_hash = palloc(VARHDRSZ + LEDGER_HASH_LEN);
	SET_VARSIZE(end_hash, VARHDRSZ + LEDGER_HASH_LEN);
	ledger_leaf_hash(buf.data, buf.len, (uint8 *) VARDATA(end_hash));

	{
		Relation	hrel = table_open(history_relid, RowExclusiveLock);
		HistoryWriter *hw = history_writer(plan, rel, hrel);
		Datum	   *hvalues = palloc(sizeof(Datum) * hw->natts);
		bool	   *hnulls = palloc(sizeof(bool) * hw->natts);

		for (i = 0; i < hw->natts; i++)
		{
			AttrNumber	src = hw->from[i];

			hnulls[i] = true;
			hvalues[i] = (Datum) 0;
			if (src > 0 && !TupleDescAttr(desc, src - 1)->attisdropped)
			{
				hvalues[i] = values[src - 1];
				hnulls[i] = isnull[src - 1];
			}
		}
		hvalues[hw->op_att - 1] = CStringGetTextDatum(op == LEDGER_OP_UPDATE ? "update" : "delete");
		hnulls[hw->op_att - 1] = false;
		hvalues[hw->end_seq_att - 1] = Int64GetDatum(end_seq);
		hnulls[hw->end_seq_att - 1] = false;
		hvalues[hw->end_hash_att - 1] = PointerGetDatum(end_hash);
		hnulls[hw->end_hash_att - 1] = false;
		hvalues[hw->end_at_att - 1] = TimestampTzGetDatum(now);
		hnulls[hw->end_at_att - 1] = false;
		hvalues[hw->end_by_att - 1] = DirectFunctionCall1(namein, CStringGetDatum(role));
		hnulls[hw->end_by_att - 1] = false;
		history_insert(hrel, heap_form_tuple(RelationGetDescr(hrel), hvalues, hnulls));
		table_close(hrel, RowExclusiveLock);
	}

	if (op == LEDGER_OP_DELETE)
		return PointerGetDatum(old_tuple);

	ended_by_update.lxid = MyProc->lxid;
	ended_by_update.cid = GetCurrentCommandId(false);
	ended_by_update.relid = RelationGetRelid(rel);
	ended_by_update.seq = version_seq;

	/* The new version: numbered, checked and hashed like an insert. */
	return new_version(td, plan);
}

Datum
ehrledger_version_row(PG_FUNCTION_ARGS)
{
	Datum		result;

	triggers_running++;
	result = version_row(fcinfo);
	triggers_running--;
	return result;
}
