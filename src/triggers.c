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
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "utils/syscache.h"
#include "miscadmin.h"
#include "utils/memutils.h"
#include "utils/regproc.h"
#include "utils/timestamp.h"
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

/*
 * Trigger arguments: the ledger table id, then for versioned tables the
 * history table (first_optional = 2), then for signed tables the signer and
 * signature columns.
 */
static InsertPlan *
insert_plan(FunctionCallInfo fcinfo, TriggerData *td, int first_optional)
{
	InsertPlan *plan = (InsertPlan *) fcinfo->flinfo->fn_extra;
	Relation	rel = td->tg_relation;
	Trigger    *trigger = td->tg_trigger;

	if (plan != NULL && plan->relid == RelationGetRelid(rel))
		return plan;

	if (trigger->tgnargs != first_optional && trigger->tgnargs != first_optional + 2)
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
	if (trigger->tgnargs == first_optional + 2)
	{
		plan->signer_attnum = SPI_fnumber(RelationGetDescr(rel), trigger->tgargs[first_optional]);
		plan->signature_attnum = SPI_fnumber(RelationGetDescr(rel), trigger->tgargs[first_optional + 1]);
		if (plan->signer_attnum <= 0 || plan->signature_attnum <= 0)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_COLUMN),
					 errmsg("signed ledger table \"%s\" lacks its signer or signature column",
							qualified_name(rel))));
	}
	fcinfo->flinfo->fn_extra = plan;
	return plan;
}

/* Numbers, checks and hashes the row version a trigger is about to write. */
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
	int			cols[2];
	Datum		newvals[2];
	bool		newnulls[2] = {false, false};

	tuple = TRIGGER_FIRED_BY_UPDATE(td->tg_event) ? td->tg_newtuple : td->tg_trigtuple;
	desc = RelationGetDescr(td->tg_relation);

	values = palloc(sizeof(Datum) * desc->natts);
	isnull = palloc(sizeof(bool) * desc->natts);
	heap_deform_tuple(tuple, desc, values, isnull);

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

	/*
	 * Take a transaction id before the sequence number: the sealer relies on
	 * every holder of an unsealed number already having one (see seal.c).
	 */
	(void) GetCurrentTransactionId();
	seq = nextval_internal(plan->seq_relid, false);

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

/*
 * BEFORE INSERT FOR EACH ROW: assigns ledger_seq and ledger_hash, whatever
 * the application supplied for them.  protect() also fires it BEFORE UPDATE
 * once, to bring the rows of a populated table into the ledger.
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

	return new_version(td, insert_plan(fcinfo, td, 1));
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

PG_FUNCTION_INFO_V1(ehrledger_version_row);

/*
 * What the versioning trigger needs for one table, kept per backend: the
 * history table and a prepared INSERT into it.  The statement's text is
 * rebuilt each time and compared, so a column added since is noticed.
 */
typedef struct VersionPlan
{
	Oid			relid;
	char	   *sql;
	SPIPlanPtr	plan;
	Oid		   *argtypes;
	int			nargs;
} VersionPlan;

static List *version_plans = NIL;

static Oid
history_owner(Oid history_relid)
{
	HeapTuple	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(history_relid));
	Oid			owner;

	if (!HeapTupleIsValid(tup))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("history table with OID %u does not exist", history_relid)));
	owner = ((Form_pg_class) GETSTRUCT(tup))->relowner;
	ReleaseSysCache(tup);
	return owner;
}

/* INSERT INTO history (cols..., ledger_op, ...) VALUES ($1, ..., $n+5). */
static VersionPlan *
version_plan(Relation rel, Oid history_relid)
{
	TupleDesc	desc = RelationGetDescr(rel);
	StringInfoData cols;
	StringInfoData vals;
	char	   *sql;
	Oid		   *argtypes = palloc(sizeof(Oid) * (desc->natts + 5));
	int			nargs = 0;
	int			i;
	ListCell   *lc;
	VersionPlan *vp = NULL;
	MemoryContext old;

	initStringInfo(&cols);
	initStringInfo(&vals);
	for (i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (att->attisdropped || att->attgenerated != '\0')
			continue;
		appendStringInfo(&cols, "%s, ", quote_identifier(NameStr(att->attname)));
		appendStringInfo(&vals, "$%d, ", nargs + 1);
		argtypes[nargs++] = att->atttypid;
	}
	appendStringInfo(&vals, "$%d, $%d, $%d, $%d, $%d", nargs + 1, nargs + 2, nargs + 3,
					 nargs + 4, nargs + 5);
	argtypes[nargs++] = TEXTOID;
	argtypes[nargs++] = INT8OID;
	argtypes[nargs++] = BYTEAOID;
	argtypes[nargs++] = TIMESTAMPTZOID;
	argtypes[nargs++] = NAMEOID;
	sql = psprintf("INSERT INTO %s (%s" LEDGER_OP_COLUMN ", " LEDGER_ENDED_SEQ_COLUMN ", "
				   LEDGER_ENDED_HASH_COLUMN ", " LEDGER_ENDED_AT_COLUMN ", "
				   LEDGER_ENDED_BY_COLUMN ") VALUES (%s)",
				   quote_qualified_identifier(get_namespace_name(get_rel_namespace(history_relid)),
											  get_rel_name(history_relid)),
				   cols.data, vals.data);

	foreach(lc, version_plans)
	{
		VersionPlan *p = lfirst(lc);

		if (p->relid == RelationGetRelid(rel))
			vp = p;
	}
	if (vp != NULL && strcmp(vp->sql, sql) == 0)
		return vp;

	old = MemoryContextSwitchTo(TopMemoryContext);
	if (vp == NULL)
	{
		vp = palloc0(sizeof(VersionPlan));
		vp->relid = RelationGetRelid(rel);
		version_plans = lappend(version_plans, vp);
	}
	else
	{
		SPI_freeplan(vp->plan);
		pfree(vp->sql);
		pfree(vp->argtypes);
	}
	vp->sql = pstrdup(sql);
	vp->nargs = nargs;
	vp->argtypes = palloc(sizeof(Oid) * nargs);
	memcpy(vp->argtypes, argtypes, sizeof(Oid) * nargs);
	MemoryContextSwitchTo(old);
	vp->plan = SPI_prepare(sql, nargs, argtypes);
	if (vp->plan == NULL)
		elog(ERROR, "could not prepare the history insert: %s",
			 SPI_result_code_string(SPI_result));
	SPI_keepplan(vp->plan);
	return vp;
}

/*
 * BEFORE UPDATE OR DELETE FOR EACH ROW on versioned tables: the version
 * being replaced or deleted moves to the history table with its end event
 * (its own ledger_seq and hash: which version, how, when, by whom); an
 * updated row becomes a new version with a new ledger_seq and hash.  The
 * application sees an ordinary UPDATE or DELETE.
 */
Datum
ehrledger_version_row(PG_FUNCTION_ARGS)
{
	TriggerData *td;
	InsertPlan *plan;
	Relation	rel;
	TupleDesc	desc;
	HeapTuple	old_tuple;
	Datum	   *values;
	bool	   *isnull;
	Oid			history_relid;
	VersionPlan *vp;
	Datum	   *args;
	char	   *nulls;
	int			nargs = 0;
	int			i;
	int64		end_seq;
	int			op;
	TimestampTz now = GetCurrentTimestamp();
	const char *role = GetUserNameFromId(GetUserId(), false);
	StringInfoData buf;
	bytea	   *end_hash;
	bool		seq_null;
	int64		version_seq;
	Oid			save_userid;
	int			save_sec_context;
	int			ret;

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
	history_relid = DatumGetObjectId(DirectFunctionCall1(regclassin,
														 CStringGetDatum(td->tg_trigger->tgargs[1])));
	op = TRIGGER_FIRED_BY_UPDATE(td->tg_event) ? LEDGER_OP_UPDATE : LEDGER_OP_DELETE;
	old_tuple = td->tg_trigtuple;

	(void) GetCurrentTransactionId();
	end_seq = nextval_internal(plan->seq_relid, false);

	values = palloc(sizeof(Datum) * desc->natts);
	isnull = palloc(sizeof(bool) * desc->natts);
	heap_deform_tuple(old_tuple, desc, values, isnull);
	version_seq = DatumGetInt64(heap_getattr(old_tuple, plan->seq_attnum, desc, &seq_null));
	if (seq_null)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("a row of ledger table \"%s\" has no ledger_seq", qualified_name(rel))));

	initStringInfo(&buf);
	end_event_encode(&buf, plan->table_id, end_seq, version_seq, op, now, role);
	end_hash = palloc(VARHDRSZ + LEDGER_HASH_LEN);
	SET_VARSIZE(end_hash, VARHDRSZ + LEDGER_HASH_LEN);
	ledger_leaf_hash(buf.data, buf.len, (uint8 *) VARDATA(end_hash));

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	vp = version_plan(rel, history_relid);
	args = palloc(sizeof(Datum) * vp->nargs);
	nulls = palloc(vp->nargs);
	for (i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (att->attisdropped || att->attgenerated != '\0')
			continue;
		args[nargs] = values[i];
		nulls[nargs++] = isnull[i] ? 'n' : ' ';
	}
	args[nargs] = CStringGetTextDatum(op == LEDGER_OP_UPDATE ? "update" : "delete");
	nulls[nargs++] = ' ';
	args[nargs] = Int64GetDatum(end_seq);
	nulls[nargs++] = ' ';
	args[nargs] = PointerGetDatum(end_hash);
	nulls[nargs++] = ' ';
	args[nargs] = TimestampTzGetDatum(now);
	nulls[nargs++] = ' ';
	args[nargs] = DirectFunctionCall1(namein, CStringGetDatum(role));
	nulls[nargs++] = ' ';
	/* As the history table's owner, as RI triggers do: writers need no grant. */
	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(history_owner(history_relid),
						   save_sec_context | SECURITY_LOCAL_USERID_CHANGE | SECURITY_NOFORCE_RLS);
	ret = SPI_execute_plan(vp->plan, args, nulls, false, 0);
	SetUserIdAndSecContext(save_userid, save_sec_context);
	if (ret != SPI_OK_INSERT)
		elog(ERROR, "could not record the old version of a row of \"%s\"", qualified_name(rel));
	SPI_finish();

	if (op == LEDGER_OP_DELETE)
		return PointerGetDatum(old_tuple);

	/* The new version: numbered, checked and hashed like an insert. */
	return new_version(td, plan);
}
