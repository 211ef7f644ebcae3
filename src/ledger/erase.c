/*
 * erase.c
 *		Erasure: sealed row versions removed, their leaves kept, and a
 *		ledgered record of each erased leaf.
 *
 * ehrledger.erase(tbl, ledger_seq, reason) erases one row version (a
 * current row, or an earlier version of a versioned table together with the
 * end of that version, a leaf of its own); erase_patient(patient, reason)
 * every version of a patient in every table protected with a patient
 * column.  Only an admin actor may, and ehrledger.erasure_approval may also
 * ask for the patient's or a second admin's signature over the request.
 *
 * The row versions are deleted from the heap directly, as the versioning
 * trigger inserts into history tables: no trigger, rule or foreign key
 * action of the table runs, and a table owner's own DELETE stays refused.
 * Each erased leaf gets an erasure record in ehrledger.erasure, a ledgered
 * table whose guard trigger lets in only what this file writes (and a
 * superuser's restore of a dumped record).  Rows must be sealed first: an
 * erasure seals what is committed, and refuses what is not.
 *
 * The seal lock (ExclusiveLock on ehrledger.block) is held from before the
 * erasure takes its time until it commits, so no block is sealed in
 * between: a block sealed after erased_at seals the record too (unless a
 * long backlog split that seal into several blocks).  verify(digest) and
 * ehrledger-verify rely on it to find records backdated before a digest.
 *
 * Next: verify.c reports erased leaves as erased; proofs.c proves them.
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/heapam.h"
#include "access/relscan.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "parser/parse_relation.h"
#include "storage/lmgr.h"
#include "tcop/utility.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "consent/consent.h"
#include "core/decode.h"
#include "ledger/ledger.h"
#include "network/network.h"

PG_FUNCTION_INFO_V1(ehrledger_erase);
PG_FUNCTION_INFO_V1(ehrledger_erase_patient);
PG_FUNCTION_INFO_V1(ehrledger_erasure_only);

/* Set while this file writes erasure records: the only inserts let in. */
static bool erasure_writing = false;

/* A protected table as erasure sees it (ehrledger.registered_table). */
typedef struct EraseTable
{
	int32		table_id;
	Oid			relid;
	Oid			history_relid;	/* versioned tables only */
	char	   *patient_column; /* or NULL */
	char	   *name;			/* schema-qualified, for messages */
	bool		internal;
	bool		retired;
	bool		shared;
} EraseTable;

/* One row version to erase, and the leaves that go with it. */
typedef struct Version
{
	const EraseTable *table;
	Oid			relid;			/* the table, or its history table */
	ItemPointerData tid;
	int64		seq;
	int64		end_seq;		/* an earlier version: the end of it; else 0 */
	uint8		leaf[LEDGER_HASH_LEN];
	uint8		end_leaf[LEDGER_HASH_LEN];
	char	   *patient;		/* the patient column's value, or NULL */
} Version;

typedef struct Erasure
{
	char	   *admin;			/* the caller's actor */
	char	   *reason;
	bytea	   *approval;
	char	   *approver;
	char	   *approved_by;
	Version    *versions;
	int			count;
	int			capacity;
} Erasure;

/* Reads row versions of one table (or history table) by ledger_seq. */
typedef struct VersionReader
{
	const EraseTable *table;
	Relation	rel;
	Relation	irel;
	RowEncoder *enc;
	AttrNumber	patient_att;
	bool		history;
	HistoryEndColumns hc;
	TupleTableSlot *slot;
} VersionReader;

static void no_version(const EraseTable *t, int64 seq) pg_attribute_noreturn();

/*
 * The caller's admin actor, or an error: erasing is for admins only,
 * whatever else the role may do.
 */
static char *
require_admin(void)
{
	char	   *actor_id;
	char	   *role;
	const char *who = GetUserNameFromId(GetUserId(), false);

	if (!actor_of_role(GetUserId(), &actor_id, &role))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("only an admin actor may erase rows of the ledger"),
				 errdetail("Role %s is mapped to no live actor.", who),
				 errhint("Connect as the role of an admin actor (ehrledger.register_actor(..., 'admin', ...)).")));
	if (strcmp(role, "admin") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("only an admin actor may erase rows of the ledger"),
				 errdetail("Role %s is mapped to actor \"%s\", a %s.", who, actor_id, role)));
	return actor_id;
}

/*
 * What every erasure does first: arguments, the caller, then the seal
 * lock and a seal of everything committed, after which this transaction
 * reads with a snapshot that sees the new blocks.
 */
static void
erasure_begin(Erasure *er, FunctionCallInfo fcinfo, int reason_arg)
{
	const char *fn = get_func_name(fcinfo->flinfo->fn_oid);
	UserSwitch	sw;

	memset(er, 0, sizeof(Erasure));
	if (PG_ARGISNULL(reason_arg))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("an erasure needs a reason")));
	er->reason = text_to_cstring(PG_GETARG_TEXT_PP(reason_arg));
	if (strspn(er->reason, " \t\r\n") == strlen(er->reason) ||
		pg_mbstrlen(er->reason) > 1000)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the reason for an erasure must hold 1 to 1000 characters"),
				 errhint("Say why, without the content: \"filed in the wrong chart\", \"erasure request of 2026-03-02\".")));
	er->approval = PG_ARGISNULL(reason_arg + 1) ? NULL : PG_GETARG_BYTEA_PP(reason_arg + 1);
	er->approver = PG_ARGISNULL(reason_arg + 2) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(reason_arg + 2));
	PreventCommandIfReadOnly(psprintf("ehrledger.%s()", fn));
	PreventCommandDuringRecovery(psprintf("ehrledger.%s()", fn));

	er->admin = require_admin();

	ledger_require_rejoined();
	LockRelationOid(ledger_relid("block"), ExclusiveLock);
	user_switch_ledger_owner(&sw);
	(void) ledger_seal();
	user_switch_end(&sw);
	CommandCounterIncrement();
	PushCopiedSnapshot(GetTransactionSnapshot());
	UpdateActiveSnapshotCommandId();
	er->capacity = 16;
	er->versions = palloc(sizeof(Version) * er->capacity);
}

/* Protected tables, one by relid or every one with a patient column. */
static List *
erase_tables(Oid relid)
{
	Oid			types[1] = {OIDOID};
	Datum		values[1] = {ObjectIdGetDatum(relid)};
	List	   *tables = NIL;
	uint64		i;

	spi_as_owner("SELECT r.table_id, r.relid, r.history, r.patient_column::pg_catalog.text,"
				 " pg_catalog.format('%I.%I', s.nspname, c.relname), r.internal,"
				 " r.retired_at IS NOT NULL, r.shared"
				 " FROM ehrledger.registered_table r"
				 " LEFT JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) r.relid"
				 " LEFT JOIN pg_catalog.pg_namespace s ON s.oid OPERATOR(pg_catalog.=) c.relnamespace"
				 " WHERE CASE WHEN $1 OPERATOR(pg_catalog.=) 0"
				 "            THEN r.patient_column IS NOT NULL AND NOT r.internal AND NOT r.partitioned"
				 "            ELSE r.relid OPERATOR(pg_catalog.=) $1 END"
				 " ORDER BY r.table_id",
				 1, types, values, NULL, true, false);
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		EraseTable *t = palloc0(sizeof(EraseTable));
		bool		isnull;
		Datum		d;

		t->table_id = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));
		t->relid = DatumGetObjectId(SPI_getbinval(tup, desc, 2, &isnull));
		d = SPI_getbinval(tup, desc, 3, &isnull);
		t->history_relid = isnull ? InvalidOid : DatumGetObjectId(d);
		t->patient_column = SPI_getvalue(tup, desc, 4);
		t->name = SPI_getvalue(tup, desc, 5);
		if (t->name == NULL)
			t->name = psprintf("table with ledger id %d", t->table_id);
		t->internal = DatumGetBool(SPI_getbinval(tup, desc, 6, &isnull));
		t->retired = DatumGetBool(SPI_getbinval(tup, desc, 7, &isnull));
		t->shared = DatumGetBool(SPI_getbinval(tup, desc, 8, &isnull));
		tables = lappend(tables, t);
	}
	return tables;
}

/*
 * A table whose rows may be erased: a live ledger table of the application that no foreign key references (removing a referenced row
 * behind the constraint's back would break it, and every restore after).
 */
static void
require_erasable(const EraseTable *t)
{
	Oid			types[2] = {OIDOID, OIDOID};
	Datum		values[2];

	if (t->internal)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("cannot erase rows of %s: it belongs to ehrledger itself", t->name),
				 errdetail("The ledger's own records (actors, consents, the access log, erasures) are kept whole.")));
	if (t->retired)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("table %s was retired from the ledger", t->name),
				 errdetail("Its rows are no longer guarded."),
				 errhint("Remove them with DELETE.")));
	values[0] = ObjectIdGetDatum(t->relid);
	values[1] = ObjectIdGetDatum(t->history_relid);
	spi_as_owner("SELECT c.conname::pg_catalog.text, c.conrelid::pg_catalog.regclass::pg_catalog.text"
				 " FROM pg_catalog.pg_constraint c"
				 " WHERE c.contype OPERATOR(pg_catalog.=) 'f' AND c.confrelid IN ($1, $2)"
				 " ORDER BY c.oid LIMIT 1",
				 2, types, values, NULL, true, false);
	if (SPI_processed > 0)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot erase rows of %s: foreign key \"%s\" of %s references it", t->name,
						SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1),
						SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2)),
				 errdetail("An erasure removes rows without foreign key actions; a referencing row would be left dangling.")));
}

static void
reader_open(VersionReader *r, const EraseTable *t, bool history)
{
	AttrNumber	seq_att;
	Oid			indexoid;

	memset(r, 0, sizeof(VersionReader));
	r->table = t;
	r->history = history;
	r->rel = table_open(history ? t->history_relid : t->relid, RowExclusiveLock);
	r->enc = row_encoder_create(RelationGetDescr(r->rel), CurrentMemoryContext);
	seq_att = row_encoder_seq_attnum(r->enc);
	indexoid = seq_att == InvalidAttrNumber ? InvalidOid : ledger_seq_index(r->rel, seq_att);
	if (!OidIsValid(indexoid) || (history && !history_end_columns(r->rel, &r->hc)))
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("%s table of %s lacks a ledger column or its ledger_seq index",
						history ? "the history" : "the", t->name),
				 errhint("Run ehrledger.verify() to see what was changed.")));
	r->irel = index_open(indexoid, AccessShareLock);
	if (t->patient_column != NULL)
		r->patient_att = attnameAttNum(r->rel, t->patient_column, false);
	r->slot = table_slot_create(r->rel, NULL);
}

static void
reader_close(VersionReader *r)
{
	ExecDropSingleTupleTableSlot(r->slot);
	index_close(r->irel, AccessShareLock);
	table_close(r->rel, NoLock);
}

/*
 * The version numbered seq, with its leaves as its content encodes them
 * now (compared with the sealed ones later): false when there is none.
 */
static bool
reader_fetch(VersionReader *r, int64 seq, Version *v)
{
	ScanKeyData key;
	IndexScanDesc scan;
	bool		found;

	ScanKeyInit(&key, 1, BTEqualStrategyNumber, F_INT8EQ, Int64GetDatum(seq));
	scan = index_beginscan(r->rel, r->irel, GetActiveSnapshot(), 1, 0);
	index_rescan(scan, &key, 1, NULL, 0);
	found = index_getnext_slot(scan, ForwardScanDirection, r->slot);
	if (found)
	{
		Datum	   *values;
		bool	   *isnull;
		StringInfoData buf;

		slot_getallattrs(r->slot);
		values = r->slot->tts_values;
		isnull = r->slot->tts_isnull;
		memset(v, 0, sizeof(Version));
		v->table = r->table;
		v->relid = RelationGetRelid(r->rel);
		v->tid = r->slot->tts_tid;
		v->seq = seq;
		initStringInfo(&buf);
		row_encode(r->enc, &buf, r->table->table_id, seq, values, isnull);
		ledger_leaf_hash(buf.data, buf.len, v->leaf);
		if (r->history)
		{
			if (isnull[r->hc.end_seq - 1] || isnull[r->hc.op - 1] || isnull[r->hc.end_at - 1] ||
				isnull[r->hc.end_by - 1])
				ereport(ERROR,
						(errcode(ERRCODE_DATA_CORRUPTED),
						 errmsg("the end of version %lld of %s has lost a field",
								(long long) seq, r->table->name),
						 errhint("Run ehrledger.verify() to see what was changed.")));
			v->end_seq = DatumGetInt64(values[r->hc.end_seq - 1]);
			resetStringInfo(&buf);
			history_end_encode(&buf, r->table->table_id, v->end_seq, seq, &r->hc, values, isnull);
			ledger_leaf_hash(buf.data, buf.len, v->end_leaf);
		}
		if (r->patient_att > 0 && !isnull[r->patient_att - 1])
			v->patient = TextDatumGetCString(values[r->patient_att - 1]);
		pfree(buf.data);
	}
	index_endscan(scan);
	return found;
}

static void
add_version(Erasure *er, const Version *v)
{
	if (er->count == er->capacity)
	{
		er->capacity *= 2;
		er->versions = repalloc_huge(er->versions, sizeof(Version) * er->capacity);
	}
	er->versions[er->count++] = *v;
}

/*
 * The erasure record that names leaf seq of table_id (the first, if a
 * forger added more): its ledger_seq, and into leaf (when not NULL) the
 * leaf it names; 0 when there is none.  SPI is connected.
 */
int64
ledger_erasure_of(int32 table_id, int64 seq, uint8 *leaf)
{
	Oid			types[2] = {INT4OID, INT8OID};
	Datum		values[2] = {Int32GetDatum(table_id), Int64GetDatum(seq)};
	bool		isnull;
	bytea	   *hash;

	if (!OidIsValid(get_relname_relid("erasure", ledger_namespace())))
		return 0;
	spi_as_owner("SELECT ledger_seq, leaf_hash FROM ehrledger.erasure"
				 " WHERE table_id OPERATOR(pg_catalog.=) $1 AND erased_seq OPERATOR(pg_catalog.=) $2"
				 " ORDER BY ledger_seq LIMIT 1",
				 2, types, values, NULL, true, false);
	if (SPI_processed == 0)
		return 0;
	hash = DatumGetByteaPP(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	if (leaf != NULL)
	{
		memset(leaf, 0, LEDGER_HASH_LEN);
		if (!isnull && VARSIZE_ANY_EXHDR(hash) == LEDGER_HASH_LEN)
			memcpy(leaf, VARDATA_ANY(hash), LEDGER_HASH_LEN);
	}
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

/*
 * Why seq names no version of t: the end of a version (which goes with its
 * version), erased already, or nothing of t.
 */
static void
no_version(const EraseTable *t, int64 seq)
{
	Oid			types[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(seq)};
	int64		erased = ledger_erasure_of(t->table_id, seq, NULL);

	if (erased > 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("row %lld of %s was erased already", (long long) seq, t->name),
				 errdetail("Erasure record %lld names it.", (long long) erased)));
	if (OidIsValid(t->history_relid))
	{
		spi_as_owner(psprintf("SELECT ledger_seq FROM %s WHERE ledger_ended_seq OPERATOR(pg_catalog.=) $1",
							  relation_qualified_name(t->history_relid)),
					 1, types, values, NULL, true, false);
		if (SPI_processed > 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("ledger_seq %lld of %s is the end of version %s, not a version",
							(long long) seq, t->name,
							SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1)),
					 errhint("Erase version %s: the end of it goes with it.",
							 SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1))));
	}
	ereport(ERROR,
			(errcode(ERRCODE_NO_DATA),
			 errmsg("table %s has no row version with ledger_seq %lld", t->name, (long long) seq)));
}

/* A leaf to compare with the sealed one. */
typedef struct LeafCheck
{
	int64		seq;
	int32		table_id;
	const uint8 *leaf;
	const Version *version;
} LeafCheck;

static void leaf_refused(const LeafCheck *c, int result, int64 height) pg_attribute_noreturn();

static int
leaf_check_cmp(const void *a, const void *b)
{
	int64		x = ((const LeafCheck *) a)->seq;
	int64		y = ((const LeafCheck *) b)->seq;

	return (x > y) - (x < y);
}

static void
leaf_refused(const LeafCheck *c, int result, int64 height)
{
	const Version *v = c->version;
	const char *what = c->seq == v->seq ? "row" : "the end of row";

	if (height == 0)
		ereport(ERROR,
				(errcode(ERRCODE_LEDGER_NOT_SEALED),
				 errmsg("%s %lld of %s is not sealed", what, (long long) v->seq, v->table->name),
				 errdetail("Everything committed was sealed first: it was written in this transaction."),
				 errhint("Commit it, then erase it.")));
	if (result == LC_LEAF_CHANGED)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("%s %lld of %s no longer matches what block %lld sealed",
						what, (long long) v->seq, v->table->name, (long long) height),
				 errdetail("An erasure would hide the change."),
				 errhint("Run ehrledger.verify() to see what was changed.")));
	ereport(ERROR,
			(errcode(ERRCODE_DATA_CORRUPTED),
			 errmsg("%s %lld of %s is not among the leaves of block %lld, which sealed its range",
					what, (long long) v->seq, v->table->name, (long long) height),
			 errhint("Run ehrledger.verify() to see what was changed.")));
}

/*
 * Every leaf to erase must be sealed, as the version encodes now: one pass
 * over the blocks that cover them, each block's leaves read once.
 */
static void
require_sealed(Erasure *er)
{
	LeafCheck  *checks = palloc_extended(sizeof(LeafCheck) * Max(er->count * 2, 1), MCXT_ALLOC_HUGE);
	int			n = 0;
	int			next = 0;
	int			i;
	Oid			types[3] = {TEXTOID, INT8OID, INT8OID};
	Datum		values[3];
	SPIPlanPtr	plan;
	Portal		portal;
	UserSwitch	sw;

	for (i = 0; i < er->count; i++)
	{
		const Version *v = &er->versions[i];

		checks[n++] = (LeafCheck) {v->seq, v->table->table_id, v->leaf, v};
		if (v->end_seq > 0)
			checks[n++] = (LeafCheck) {v->end_seq, v->table->table_id, v->end_leaf, v};
	}
	if (n == 0)
		return;
	qsort(checks, n, sizeof(LeafCheck), leaf_check_cmp);

	user_switch_ledger_owner(&sw);
	plan = SPI_prepare("SELECT height, first_seq, last_seq, leaves FROM ehrledger.block"
					   " WHERE (origin OPERATOR(pg_catalog.=) $1"
					   "        OR origin IN (SELECT k.origin FROM ehrledger.node_key k))"
					   " AND last_seq OPERATOR(pg_catalog.>=) $2 AND first_seq OPERATOR(pg_catalog.<=) $3"
					   " ORDER BY first_seq", 3, types);
	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	values[0] = CStringGetTextDatum(ledger_node_name());
	values[1] = Int64GetDatum(checks[0].seq);
	values[2] = Int64GetDatum(checks[n - 1].seq);
	portal = SPI_cursor_open(NULL, plan, values, NULL, true);
	while (next < n)
	{
		HeapTuple	tup;
		TupleDesc	desc;
		bool		isnull;
		int64		height;
		int64		first;
		int64		last;
		bytea	   *leaves;

		SPI_cursor_fetch(portal, true, 1);
		if (SPI_processed == 0)
			break;
		tup = SPI_tuptable->vals[0];
		desc = SPI_tuptable->tupdesc;
		height = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
		first = DatumGetInt64(SPI_getbinval(tup, desc, 2, &isnull));
		last = DatumGetInt64(SPI_getbinval(tup, desc, 3, &isnull));
		leaves = DatumGetByteaPP(SPI_getbinval(tup, desc, 4, &isnull));
		if (isnull)
			continue;
		for (; next < n && checks[next].seq <= last; next++)
		{
			int64		at;
			int			result;

			CHECK_FOR_INTERRUPTS();
			if (checks[next].seq < first)
				leaf_refused(&checks[next], 0, 0);
			result = lc_sealed_leaf((const uint8 *) VARDATA_ANY(leaves),
									VARSIZE_ANY_EXHDR(leaves) / LEDGER_LEAF_SIZE, checks[next].seq,
									(uint32) checks[next].table_id, checks[next].leaf, &at);
			if (result != LC_LEAF_SAME)
				leaf_refused(&checks[next], result, height);
		}
		SPI_freetuptable(SPI_tuptable);
	}
	SPI_cursor_close(portal);
	SPI_freeplan(plan);
	user_switch_end(&sw);
	if (next < n)
		leaf_refused(&checks[next], 0, 0);
	pfree(checks);
}

/*
 * Who approved the erasure, as ehrledger.erasure_approval asks:
 * _erasure_approved() checks the signature over payload_query's payload.
 */
static void
approve(Erasure *er, const char *payload_query, int nargs, Oid *types, Datum *values,
		const char *patient)
{
	Oid			atypes[6] = {TEXTOID, TEXTOID, BYTEAOID, TEXTOID, BYTEAOID, TEXTOID};
	Datum		avalues[6];
	char		nulls[7] = "      ";
	bool		isnull;
	Datum		payload;

	spi_as_owner(payload_query, nargs, types, values, NULL, true, false);
	payload = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	avalues[0] = CStringGetTextDatum(er->admin);
	avalues[1] = CStringGetTextDatum(GetConfigOption("ehrledger.erasure_approval", false, false));
	avalues[2] = payload;
	avalues[3] = patient ? CStringGetTextDatum(patient) : (Datum) 0;
	avalues[4] = er->approval ? PointerGetDatum(er->approval) : (Datum) 0;
	avalues[5] = er->approver ? CStringGetTextDatum(er->approver) : (Datum) 0;
	nulls[3] = patient ? ' ' : 'n';
	nulls[4] = er->approval ? ' ' : 'n';
	nulls[5] = er->approver ? ' ' : 'n';
	spi_as_owner("SELECT ehrledger._erasure_approved($1, $2, $3, $4, $5, $6)",
				 6, atypes, avalues, nulls, true, true);
	er->approved_by = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
}

/* Deletes one version's tuple, behind every trigger, as the history trigger inserts. */
static void
delete_version(Relation rel, const Version *v)
{
	TM_FailureData tmfd;
	TM_Result	result;

	result = heap_delete(rel, (ItemPointer) &v->tid, GetCurrentCommandId(true), InvalidSnapshot,
						 true, &tmfd, false);
	if (result == TM_SelfModified)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("row %lld of %s was changed earlier in this transaction",
						(long long) v->seq, v->table->name)));
	if (result != TM_Ok)
		ereport(ERROR,
				(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
				 errmsg("row %lld of %s was changed by a concurrent transaction",
						(long long) v->seq, v->table->name),
				 errhint("Erase it again.")));
}

/*
 * The leaves of the versions as three arrays (table ids, ledger_seqs, leaf
 * hashes) in values[0..2]: with ends, the end of each earlier version too;
 * shared_only, only versions of shared tables.  Returns how many.
 */
static int
leaf_arrays(const Erasure *er, bool with_ends, bool shared_only, Datum *values)
{
	Datum	   *tids = palloc(sizeof(Datum) * Max(er->count * 2, 1));
	Datum	   *seqs = palloc(sizeof(Datum) * Max(er->count * 2, 1));
	Datum	   *leaves = palloc(sizeof(Datum) * Max(er->count * 2, 1));
	int			n = 0;
	int			i;

	for (i = 0; i < er->count; i++)
	{
		const Version *v = &er->versions[i];

		if (shared_only && !v->table->shared)
			continue;
		tids[n] = Int32GetDatum(v->table->table_id);
		seqs[n] = Int64GetDatum(v->seq);
		leaves[n++] = PointerGetDatum(ledger_bytea(v->leaf, LEDGER_HASH_LEN));
		if (with_ends && v->end_seq > 0)
		{
			tids[n] = Int32GetDatum(v->table->table_id);
			seqs[n] = Int64GetDatum(v->end_seq);
			leaves[n++] = PointerGetDatum(ledger_bytea(v->end_leaf, LEDGER_HASH_LEN));
		}
	}
	values[0] = PointerGetDatum(construct_array(tids, n, INT4OID, 4, true, TYPALIGN_INT));
	values[1] = PointerGetDatum(construct_array(seqs, n, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	values[2] = PointerGetDatum(construct_array(leaves, n, BYTEAOID, -1, false, TYPALIGN_INT));
	return n;
}

/*
 * Versions of shared tables: this node's copies in ehrledger.shared_row go,
 * and a notice signed with the node key goes to every hospital holding one
 * (ehrledger._erase_shared(), src/network/network.sql), which removes its
 * copy when the notice arrives.
 */
static void
erase_shared_copies(Erasure *er, Datum erased_at)
{
	Oid			types[4] = {INT4ARRAYOID, INT8ARRAYOID, BYTEAARRAYOID, TIMESTAMPTZOID};
	Datum		values[4];

	if (leaf_arrays(er, false, true, values) == 0)
		return;
	values[3] = erased_at;
	spi_as_owner("SELECT ehrledger._erase_shared($1, $2, $3, $4)", 4, types, values, NULL, false, false);
}

/*
 * Removes every version and writes one erasure record per leaf, numbered
 * in the order of the leaves they name.  Returns the versions erased.
 */
static int64
erasure_finish(Erasure *er)
{
	int			i;
	Oid			types[8] = {INT4ARRAYOID, INT8ARRAYOID, BYTEAARRAYOID, TEXTOID, TEXTOID,
	BYTEAOID, TIMESTAMPTZOID, TEXTOID};
	Datum		values[8];
	char		nulls[9] = "        ";
	Relation	rel = NULL;

	for (i = 0; i < er->count; i++)
	{
		const Version *v = &er->versions[i];

		CHECK_FOR_INTERRUPTS();
		if (rel == NULL || RelationGetRelid(rel) != v->relid)
		{
			if (rel != NULL)
				table_close(rel, NoLock);
			rel = table_open(v->relid, RowExclusiveLock);
		}
		delete_version(rel, v);
	}
	if (rel != NULL)
		table_close(rel, NoLock);
	CommandCounterIncrement();

	(void) leaf_arrays(er, true, false, values);
	values[3] = CStringGetTextDatum(er->admin);
	values[4] = CStringGetTextDatum(er->approved_by);
	values[5] = er->approval ? PointerGetDatum(er->approval) : (Datum) 0;
	nulls[5] = er->approval ? ' ' : 'n';
	/* after the seal lock was taken: no block sealed since is older */
	values[6] = TimestampTzGetDatum(GetCurrentTimestamp());
	values[7] = CStringGetTextDatum(er->reason);
	erasure_writing = true;
	PG_TRY();
	{
		spi_as_owner("INSERT INTO ehrledger.erasure (table_id, erased_seq, leaf_hash, erased_by,"
					 " approved_by, approval, erased_at, reason)"
					 " SELECT u.t, u.s, u.h, $4, $5, $6, $7, $8"
					 " FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2), pg_catalog.unnest($3)) AS u(t, s, h)"
					 " ORDER BY u.s",
					 8, types, values, nulls, false, false);
	}
	PG_FINALLY();
	{
		erasure_writing = false;
	}
	PG_END_TRY();
	erase_shared_copies(er, values[6]);
	PopActiveSnapshot();
	return er->count;
}

/*
 * ehrledger.erase(tbl, ledger_seq, reason, approval, approver): one row
 * version, or an earlier version with the end of it.
 */
Datum
ehrledger_erase(PG_FUNCTION_ARGS)
{
	Erasure		er;
	List	   *tables;
	EraseTable *t;
	int64		seq;
	Version		v;
	VersionReader r;
	bool		found;
	Oid			types[3] = {REGCLASSOID, INT8OID, TEXTOID};
	Datum		values[3];
	int64		erased;
	Oid			relid;
	LedgerTable *registered;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("table and ledger_seq must not be NULL")));
	seq = PG_GETARG_INT64(1);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	erasure_begin(&er, fcinfo, 2);

	if (get_rel_name(PG_GETARG_OID(0)) == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation with OID %u does not exist", PG_GETARG_OID(0))));
	/* of a partitioned table: the version in the partition that holds it */
	relid = PG_GETARG_OID(0);
	registered = ledger_table_of(relid, GetActiveSnapshot());
	if (registered != NULL && registered->partitioned)
	{
		LedgerTable *part = ledger_partition_holding(ledger_partitions(registered, GetActiveSnapshot()),
													 seq);

		if (part == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_NO_DATA),
					 errmsg("table %s has no row version with ledger_seq %lld",
							get_rel_name(relid), (long long) seq)));
		relid = part->relid;
	}
	tables = erase_tables(relid);
	if (tables == NIL)
		ereport(ERROR,
				(errcode(ERRCODE_LEDGER_NOT_PROTECTED),
				 errmsg("table \"%s\" is not protected by ehrledger", get_rel_name(PG_GETARG_OID(0))),
				 errhint("Name the protected table, not its history table.")));
	t = linitial(tables);
	require_erasable(t);

	reader_open(&r, t, false);
	found = reader_fetch(&r, seq, &v);
	reader_close(&r);
	if (!found && OidIsValid(t->history_relid))
	{
		reader_open(&r, t, true);
		found = reader_fetch(&r, seq, &v);
		reader_close(&r);
	}
	if (!found)
		no_version(t, seq);
	add_version(&er, &v);

	/* approved as asked: the table named, partitioned or not */
	values[0] = PG_GETARG_DATUM(0);
	values[1] = Int64GetDatum(seq);
	values[2] = CStringGetTextDatum(er.reason);
	approve(&er, "SELECT ehrledger.erase_payload($1, $2, $3)", 3, types, values, v.patient);
	require_sealed(&er);
	erased = erasure_finish(&er);
	SPI_finish();
	PG_RETURN_INT64(erased);
}

/* Every version of t (or its history) whose patient column holds patient. */
static void
add_patient_versions(Erasure *er, const EraseTable *t, bool history, const char *patient)
{
	Oid			relid = history ? t->history_relid : t->relid;
	Oid			types[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(patient)};
	VersionReader r;
	SPITupleTable *found;
	uint64		count;
	uint64		i;

	spi_as_owner(psprintf("SELECT ledger_seq FROM ONLY %s WHERE %s OPERATOR(pg_catalog.=) $1"
						  " ORDER BY ledger_seq",
						  relation_qualified_name(relid),
						  quote_identifier(t->patient_column)),
				 1, types, values, NULL, true, false);
	found = SPI_tuptable;
	count = SPI_processed;
	if (count == 0)
		return;
	require_erasable(t);
	reader_open(&r, t, history);
	for (i = 0; i < count; i++)
	{
		bool		isnull;
		int64		seq = DatumGetInt64(SPI_getbinval(found->vals[i], found->tupdesc, 1, &isnull));
		Version		v;

		CHECK_FOR_INTERRUPTS();
		/* a collation that calls other bytes equal must not reach another patient */
		if (reader_fetch(&r, seq, &v) && v.patient != NULL && strcmp(v.patient, patient) == 0)
			add_version(er, &v);
	}
	reader_close(&r);
}

/*
 * ehrledger.erase_patient(patient, reason, approval, approver): every
 * version of a patient in every table protected with a patient column.
 */
Datum
ehrledger_erase_patient(PG_FUNCTION_ARGS)
{
	Erasure		er;
	char	   *patient;
	ListCell   *lc;
	Oid			types[2] = {TEXTOID, TEXTOID};
	Datum		values[2];
	int64		erased;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("patient must not be NULL")));
	patient = text_to_cstring(PG_GETARG_TEXT_PP(0));
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	erasure_begin(&er, fcinfo, 1);

	values[0] = CStringGetTextDatum(patient);
	values[1] = CStringGetTextDatum(er.reason);
	approve(&er, "SELECT ehrledger.erase_patient_payload($1, $2)", 2, types, values, patient);

	foreach(lc, erase_tables(InvalidOid))
	{
		EraseTable *t = lfirst(lc);

		if (t->retired || get_rel_name(t->relid) == NULL)
			continue;			/* its rows are not guarded any more */
		add_patient_versions(&er, t, false, patient);
		if (OidIsValid(t->history_relid))
			add_patient_versions(&er, t, true, patient);
	}
	require_sealed(&er);
	erased = erasure_finish(&er);
	SPI_finish();
	PG_RETURN_INT64(erased);
}

/*
 * Whether a superuser is restoring a dumped record: it carries its number
 * and the hash of what it holds, which the insert trigger then keeps.
 */
static bool
restoring_record(TriggerData *td)
{
	Relation	rel = td->tg_relation;
	RowEncoder *enc = row_encoder_create(RelationGetDescr(rel), CurrentMemoryContext);
	AttrNumber	seq_att = row_encoder_seq_attnum(enc);
	AttrNumber	hash_att = row_encoder_hash_attnum(enc);
	Datum	   *values = palloc(sizeof(Datum) * RelationGetDescr(rel)->natts);
	bool	   *isnull = palloc(sizeof(bool) * RelationGetDescr(rel)->natts);
	StringInfoData buf;
	uint8		computed[LEDGER_HASH_LEN];
	bytea	   *given;

	if (!superuser() || seq_att == InvalidAttrNumber || hash_att == InvalidAttrNumber)
		return false;
	heap_deform_tuple(td->tg_trigtuple, RelationGetDescr(rel), values, isnull);
	if (isnull[seq_att - 1] || isnull[hash_att - 1])
		return false;
	given = DatumGetByteaPP(values[hash_att - 1]);
	initStringInfo(&buf);
	row_encode(enc, &buf, (int32) LC_ERASURE_TABLE_ID, DatumGetInt64(values[seq_att - 1]),
			   values, isnull);
	ledger_leaf_hash(buf.data, buf.len, computed);
	return VARSIZE_ANY_EXHDR(given) == LEDGER_HASH_LEN &&
		memcmp(VARDATA_ANY(given), computed, LEDGER_HASH_LEN) == 0;
}

/*
 * BEFORE INSERT FOR EACH ROW on ehrledger.erasure (ENABLE ALWAYS): an
 * erasure record comes from erase() or erase_patient(), never from SQL.
 */
Datum
ehrledger_erasure_only(PG_FUNCTION_ARGS)
{
	TriggerData *td;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("ehrledger._erasure_only() must be called as a trigger")));
	td = (TriggerData *) fcinfo->context;
	if (!TRIGGER_FIRED_BEFORE(td->tg_event) || !TRIGGER_FIRED_FOR_ROW(td->tg_event) ||
		!TRIGGER_FIRED_BY_INSERT(td->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("ehrledger._erasure_only() must be fired BEFORE INSERT FOR EACH ROW")));
	if (!erasure_writing && !restoring_record(td))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("erasure records are written by ehrledger.erase() and ehrledger.erase_patient() only"),
				 errdetail("A record that no erasure wrote would pass a removed row off as erased.")));
	return PointerGetDatum(td->tg_trigtuple);
}
