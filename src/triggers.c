/*
 * triggers.c
 *		The triggers protect() installs on a ledger table.
 *
 * The insert trigger gives each new row version its ledger_seq and the hash
 * of its canonical encoding.  It takes no lock that other writers wait on:
 * the sequence hands out numbers without blocking and the hash is computed
 * from the row alone, so the cost of an insert is the hash plus the row.
 * The guard trigger refuses UPDATE, DELETE and TRUNCATE on append-only
 * tables.  protect() marks both ENABLE ALWAYS, so they also fire under
 * session_replication_role = replica.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "commands/sequence.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

#include "ehrledger.h"

PG_FUNCTION_INFO_V1(ehrledger_insert_row);
PG_FUNCTION_INFO_V1(ehrledger_refuse_change);

/* What the insert trigger needs, built once per statement. */
typedef struct InsertPlan
{
	Oid			relid;
	int32		table_id;
	Oid			seq_relid;
	RowEncoder *encoder;
	AttrNumber	seq_attnum;
	AttrNumber	hash_attnum;
	AttrNumber	signer_attnum;	/* signed tables only */
	AttrNumber	signature_attnum;
} InsertPlan;

/* schema.table, unquoted: messages put the name in double quotes. */
static char *
qualified_name(Relation rel)
{
	return psprintf("%s.%s", get_namespace_name(RelationGetNamespace(rel)),
					RelationGetRelationName(rel));
}

static InsertPlan *
insert_plan(FunctionCallInfo fcinfo, TriggerData *td)
{
	InsertPlan *plan = (InsertPlan *) fcinfo->flinfo->fn_extra;
	Relation	rel = td->tg_relation;
	Trigger    *trigger = td->tg_trigger;

	if (plan != NULL && plan->relid == RelationGetRelid(rel))
		return plan;

	if (trigger->tgnargs != 1 && trigger->tgnargs != 3)
		ereport(ERROR,
				(errcode(ERRCODE_TRIGGERED_ACTION_EXCEPTION),
				 errmsg("trigger \"%s\" on \"%s\" must pass the ledger table id (and signer and signature columns)",
						trigger->tgname, qualified_name(rel)),
				 errhint("Triggers of ehrledger are created by ehrledger.protect().")));

	plan = MemoryContextAllocZero(fcinfo->flinfo->fn_mcxt, sizeof(InsertPlan));
	plan->relid = RelationGetRelid(rel);
	plan->table_id = pg_strtoint32(trigger->tgargs[0]);
	plan->seq_relid = ledger_relid("ledger_seq");
	plan->encoder = row_encoder_create(RelationGetDescr(rel), fcinfo->flinfo->fn_mcxt);
	plan->seq_attnum = row_encoder_seq_attnum(plan->encoder);
	plan->hash_attnum = row_encoder_hash_attnum(plan->encoder);
	if (plan->seq_attnum == InvalidAttrNumber || plan->hash_attnum == InvalidAttrNumber)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("ledger table \"%s\" lacks its ledger_seq or ledger_hash column",
						qualified_name(rel))));
	if (trigger->tgnargs == 3)
	{
		plan->signer_attnum = SPI_fnumber(RelationGetDescr(rel), trigger->tgargs[1]);
		plan->signature_attnum = SPI_fnumber(RelationGetDescr(rel), trigger->tgargs[2]);
		if (plan->signer_attnum <= 0 || plan->signature_attnum <= 0)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_COLUMN),
					 errmsg("signed ledger table \"%s\" lacks its signer or signature column",
							qualified_name(rel))));
	}
	fcinfo->flinfo->fn_extra = plan;
	return plan;
}

/*
 * BEFORE INSERT FOR EACH ROW: assigns ledger_seq and ledger_hash, whatever
 * the application supplied for them.  protect() also fires it BEFORE UPDATE
 * once, to bring the rows of a populated table into the ledger.
 */
Datum
ehrledger_insert_row(PG_FUNCTION_ARGS)
{
	TriggerData *td;
	InsertPlan *plan;
	HeapTuple	tuple;
	TupleDesc	desc;
	Datum	   *values;
	bool	   *isnull;
	int64		seq;
	StringInfoData buf;
	bytea	   *hash;
	int			cols[2];
	Datum		newvals[2];
	bool		newnulls[2] = {false, false};

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

	plan = insert_plan(fcinfo, td);
	tuple = TRIGGER_FIRED_BY_UPDATE(td->tg_event) ? td->tg_newtuple : td->tg_trigtuple;
	desc = RelationGetDescr(td->tg_relation);

	/*
	 * Take a transaction id before the sequence number: the sealer relies on
	 * every holder of an unsealed number already having one (see seal.c).
	 */
	(void) GetCurrentTransactionId();
	seq = nextval_internal(plan->seq_relid, false);

	values = palloc(sizeof(Datum) * desc->natts);
	isnull = palloc(sizeof(bool) * desc->natts);
	heap_deform_tuple(tuple, desc, values, isnull);

	if (plan->signer_attnum > 0)
		check_row_signature(td->tg_relation, plan->encoder, plan->signer_attnum,
							plan->signature_attnum, values, isnull);

	initStringInfo(&buf);
	row_encode(plan->encoder, &buf, plan->table_id, seq, values, isnull);
	hash = palloc(VARHDRSZ + LEDGER_HASH_LEN);
	SET_VARSIZE(hash, VARHDRSZ + LEDGER_HASH_LEN);
	ledger_leaf_hash(buf.data, buf.len, (uint8 *) VARDATA(hash));
	pfree(buf.data);

	cols[0] = plan->seq_attnum;
	newvals[0] = Int64GetDatum(seq);
	cols[1] = plan->hash_attnum;
	newvals[1] = PointerGetDatum(hash);

	return PointerGetDatum(heap_modify_tuple_by_cols(tuple, desc, 2, cols,
													 newvals, newnulls));
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
