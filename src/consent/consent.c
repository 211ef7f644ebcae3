/*
 * consent.c
 *		Patients' consents enforced by row-level security, and the record of
 *		who read or changed which patient's rows.
 *
 * Tables protected with a patient column get policies that call
 * ehrledger.consent_check() per row.  What a role may see in a table (every
 * patient: its own, if it is a patient; those who consented; those it broke
 * the glass for) is loaded in one query and kept per backend until actors
 * or consents change (the shared generation of signatures.c, bumped when
 * such a change commits), the session's purpose changes, or the first of
 * its consents expires; each statement checks that once, and every row is
 * then a hash lookup.  Each patient whose rows pass is noted
 * once per statement and action; when the statement finishes the notes go
 * to the access log: changes in the acting transaction (a rolled-back
 * change never happened), reads through the access log writer
 * (access_log.c), which records them even if the reading transaction rolls
 * back, because what was read was seen.
 *
 * On a hot standby the same rules hold: consents and actors change only by
 * replay there, and the commit of such a change carries a relcache
 * invalidation of ehrledger.consent_event (_actors_changed() asks for it),
 * which every backend of the standby (and of the primary) takes as a
 * reason to rebuild its caches at its next statement.
 *
 * Only real accesses are recorded: a patient is noted only when the check
 * runs as a policy would, on a column of the table named by the call, in a
 * statement that really reads (or inserts, updates, deletes) that table
 * (for a partitioned table, on a column of one of its partitions).
 * consent_check() is callable by anyone, since policies run as the querying
 * role; a direct call that names another table or action records nothing.
 * Per-backend memory stays bounded: at most MAX_CONSENT_CACHES caches, each
 * freed once the last statement using it is done.
 *
 * Next: access_log.c makes the notes durable; src/fhir renders them.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/namespace.h"
#include "catalog/partition.h"
#include "common/hashfn.h"
#include "catalog/pg_namespace.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "nodes/nodeFuncs.h"
#include "nodes/parsenodes.h"
#include "parser/parsetree.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "consent/consent.h"
#include "ledger/ledger.h"

static const char *const action_names[] = {"read", "insert", "update", "delete"};
/* The privilege a statement must need on the table for each action to be real. */
static const AclMode action_privileges[] = {ACL_SELECT, ACL_INSERT, ACL_UPDATE, ACL_DELETE};

#define NACTIONS lengthof(action_names)
#define ACTION_READ 0
/* What a consent allows: reading (SELECT), or writing (INSERT, UPDATE, DELETE). */
#define ACCESS_READ 0
#define ACCESS_WRITE 1
#define ACCESS_OF(action) ((action) == ACTION_READ ? ACCESS_READ : ACCESS_WRITE)

/* Caches kept per backend; more distinct (role, table) pairs start afresh. */
#define MAX_CONSENT_CACHES 64

/* A patient the current role may act on, and why. */
typedef struct AllowedPatient
{
	char	   *patient;		/* NULL: an empty slot */
	int			len;
	uint32		hash;
	char	   *basis[2];		/* per ACCESS_*: why it is allowed, NULL if not */
	uint64		noted[NACTIONS];	/* access generation last noted in, per action */
} AllowedPatient;

typedef struct ConsentCacheKey
{
	Oid			userid;
	int32		table_id;
} ConsentCacheKey;

/* What a role may do on one table, kept per backend. */
typedef struct ConsentCache
{
	ConsentCacheKey key;
	MemoryContext mcxt;
	Oid			relid;			/* the table the policy protects */
	uint64		generation;		/* of actors and consents; 0: not to be kept */
	uint64		invalidations;	/* of consent_event seen when it was built */
	char	   *purpose;
	TimestampTz expires;		/* when its first consent or break-glass ends */
	char	   *actor_id;		/* NULL: the role is no live actor */
	char	   *pg_role;
	/* Open addressing over the patients' bytes: one probe per row, no copy. */
	AllowedPatient *slots;
	uint32		mask;
	int			users;			/* call sites using it now */
	bool		retired;		/* out of the table: freed when unused */
} ConsentCache;

/*
 * Per call site and statement: the cache it uses, the action it checks, and
 * whether what it lets through is a real access to record.  It lives in the
 * call site's memory, whose reset lets go of the cache.
 */
typedef struct ConsentSite
{
	Oid			userid;
	int32		table_id;
	int			action;
	bool		record;
	ConsentCache *cache;
	MemoryContextCallback release;
} ConsentSite;

typedef struct CacheSlot
{
	ConsentCacheKey key;
	ConsentCache *cache;
} CacheSlot;

static HTAB *consent_caches = NULL;

/* Patients noted during the current statement, per role, table and action. */
typedef struct PendingAccess
{
	Oid			userid;
	int32		table_id;
	int			action;
	char	   *actor_id;
	char	   *pg_role;
	List	   *patients;
	List	   *bases;
} PendingAccess;

static MemoryContext pending_context = NULL;
static List *pending = NIL;
static uint64 access_generation = 1;
static bool flushing = false;

/* The statements being run, innermost last: whose range table a call belongs to. */
static List *running = NIL;

/* Relcache invalidations of ehrledger.consent_event seen by this backend. */
static uint64 consent_invalidations = 0;
static Oid	consent_event_relid = InvalidOid;

static ExecutorRun_hook_type prev_executor_run = NULL;
static ExecutorFinish_hook_type prev_executor_finish = NULL;


/*
 * The live actor a role is mapped to: its actor_id and role, palloc'd in
 * the current context, or false if there is none.
 */
bool
actor_of_role(Oid roleid, char **actor_id, char **role)
{
	MemoryContext outer = CurrentMemoryContext;
	Oid			types[1] = {TEXTOID};
	Datum		values[1];
	bool		found = false;

	values[0] = CStringGetTextDatum(GetUserNameFromId(roleid, false));
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	spi_as_owner("SELECT actor_id, role FROM ehrledger._actor_of($1::pg_catalog.name)"
				 " WHERE actor_id IS NOT NULL",
				 1, types, values, NULL, true, true);
	if (SPI_processed == 1)
	{
		MemoryContext spi = MemoryContextSwitchTo(outer);

		*actor_id = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
		*role = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
		MemoryContextSwitchTo(spi);
		found = true;
	}
	SPI_finish();
	return found;
}

PG_FUNCTION_INFO_V1(ehrledger_current_actor);

/* ehrledger.current_actor(): the live actor mapped to the current role. */
Datum
ehrledger_current_actor(PG_FUNCTION_ARGS)
{
	TupleDesc	desc;
	Datum		values[2];
	bool		nulls[2] = {true, true};
	char	   *actor_id;
	char	   *role;

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	if (actor_of_role(GetUserId(), &actor_id, &role))
	{
		values[0] = CStringGetTextDatum(actor_id);
		values[1] = CStringGetTextDatum(role);
		nulls[0] = nulls[1] = false;
	}
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), values, nulls)));
}

PG_FUNCTION_INFO_V1(ehrledger_consents_changed);

/* src/ledger's bump of the actor generation (signatures.c), which this extends. */
extern PGDLLEXPORT Datum ehrledger_actors_changed(PG_FUNCTION_ARGS);

/*
 * ehrledger._actors_changed(): actors, consents or break-glass change in
 * this transaction.  Besides the shared generation the primary's backends
 * look at, the commit carries a relcache invalidation of consent_event:
 * hot standbys replay it, and their backends rebuild their caches too.
 */
Datum
ehrledger_consents_changed(PG_FUNCTION_ARGS)
{
	CacheInvalidateRelcacheByRelid(ledger_relid("consent_event"));
	return ehrledger_actors_changed(fcinfo);
}

/* Counts invalidations of consent_event (InvalidOid: of everything). */
static void
consent_relcache_callback(Datum arg, Oid relid)
{
	(void) arg;
	if (relid == InvalidOid || relid == consent_event_relid)
		consent_invalidations++;
}

PG_FUNCTION_INFO_V1(ehrledger_with_caller);

/*
 * The body of grant_consent(), revoke_consent(), break_glass() and
 * access_history(): calls ehrledger._<name>(caller, args...) as the
 * ledger's owner, where caller is the role calling us.  These functions
 * must know who calls them, which a SECURITY DEFINER function cannot see;
 * the caller cannot choose the name, which comes from the catalog entry of
 * the function being run.
 */
Datum
ehrledger_with_caller(PG_FUNCTION_ARGS)
{
	Oid			fn = fcinfo->flinfo->fn_oid;
	Oid			caller = GetUserId();
	Oid		   *argtypes;
	int			nargs;
	Oid			rettype = get_func_signature(fn, &argtypes, &nargs);
	bool		retset = get_func_retset(fn);
	Oid		   *types = palloc(sizeof(Oid) * (nargs + 1));
	Datum	   *values = palloc(sizeof(Datum) * (nargs + 1));
	char	   *nulls = palloc(nargs + 2);
	StringInfoData query;
	Datum		result = (Datum) 0;
	bool		isnull = true;
	int			i;

	/* Nothing is written on a standby: its primary opens the glass. */
	if (RecoveryInProgress() && strcmp(get_func_name(fn), "break_glass") == 0 && nargs == 2)
	{
		if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("break-glass needs a patient and a reason")));
		PG_RETURN_INT64(standby_break_glass(GetUserNameFromId(caller, false),
											text_to_cstring(PG_GETARG_TEXT_PP(0)),
											text_to_cstring(PG_GETARG_TEXT_PP(1))));
	}
	initStringInfo(&query);
	appendStringInfo(&query, "SELECT %sehrledger.%s($1",
					 retset ? "* FROM " : "",
					 quote_identifier(psprintf("_%s", get_func_name(fn))));
	types[0] = NAMEOID;
	values[0] = DirectFunctionCall1(namein, CStringGetDatum(GetUserNameFromId(caller, false)));
	nulls[0] = ' ';
	for (i = 0; i < nargs; i++)
	{
		types[i + 1] = argtypes[i];
		values[i + 1] = PG_ARGISNULL(i) ? (Datum) 0 : PG_GETARG_DATUM(i);
		nulls[i + 1] = PG_ARGISNULL(i) ? 'n' : ' ';
		appendStringInfo(&query, ", $%d", i + 2);
	}
	nulls[nargs + 1] = '\0';
	appendStringInfoChar(&query, ')');

	if (retset)
		InitMaterializedSRF(fcinfo, 0);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	spi_as_owner(query.data, nargs + 1, types, values, nulls,
				 func_volatile(fn) != PROVOLATILE_VOLATILE, false);
	if (retset)
	{
		ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
		uint64		row;

		for (row = 0; row < SPI_processed; row++)
			tuplestore_puttuple(rsinfo->setResult, SPI_tuptable->vals[row]);
	}
	else if (rettype != VOIDOID && SPI_processed == 1)
	{
		int16		typlen;
		bool		typbyval;

		result = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		get_typlenbyval(rettype, &typlen, &typbyval);
		if (!isnull)
			result = SPI_datumTransfer(result, typbyval, typlen);
	}
	SPI_finish();
	if (retset || rettype == VOIDOID)
		PG_RETURN_VOID();
	if (isnull)
		PG_RETURN_NULL();
	PG_RETURN_DATUM(result);
}

static AllowedPatient *
allowed_lookup(const ConsentCache *cache, const char *patient, int len, uint32 hash)
{
	uint32		i;

	for (i = hash & cache->mask; cache->slots[i].patient != NULL; i = (i + 1) & cache->mask)
	{
		AllowedPatient *entry = &cache->slots[i];
		int			j;

		if (entry->hash != hash || entry->len != len)
			continue;
		/* Patient ids are short: a loop beats a call of memcmp() on every row. */
		for (j = 0; j < len && entry->patient[j] == patient[j]; j++)
			;
		if (j == len)
			return entry;
	}
	return NULL;
}

/*
 * Loads what a role may do on one table: every patient it may act on, with
 * the basis for reading and for writing.  One query, kept until something
 * it depends on changes.  A table id that names no table with a patient
 * column is refused, so no call can make the backend keep caches for
 * tables that do not exist.
 */
static ConsentCache *
consent_cache_build(Oid userid, int32 table_id, uint64 generation)
{
	MemoryContext mcxt;
	ConsentCache *cache;
	MemoryContext outer = CurrentMemoryContext;
	char	   *role = NULL;
	Oid			relid = InvalidOid;
	Oid			tid_type[1] = {INT4OID};
	Datum		tid_value[1] = {Int32GetDatum(table_id)};

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	/* A schema before 0.4 lacks _consent_table(): the same question, asked directly. */
	spi_as_owner(ledger_has_function("_consent_table", 1, tid_type)
				 ? "SELECT ehrledger._consent_table($1)"
				 : "SELECT r.relid::pg_catalog.oid FROM ehrledger.registered_table r"
				 " WHERE r.table_id OPERATOR(pg_catalog.=) $1 AND r.patient_column IS NOT NULL"
				 " AND r.retired_at IS NULL",
				 1, tid_type, tid_value, NULL, true, true);
	if (SPI_processed == 1)
	{
		bool		isnull;
		Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

		if (!isnull)
			relid = DatumGetObjectId(d);
	}
	SPI_finish();
	consent_event_relid = ledger_relid("consent_event");
	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("ledger table id %d is not a table protected with a patient column", table_id),
				 errhint("ehrledger.consent_check() is the policy protect(..., patient_column => ...) installs.")));

	/* Under the caller's context until complete: an error leaves nothing behind. */
	mcxt = AllocSetContextCreate(outer, "ehrledger consent cache", ALLOCSET_SMALL_SIZES);
	cache = MemoryContextAllocZero(mcxt, sizeof(ConsentCache));
	MemoryContextSwitchTo(mcxt);
	cache->key.userid = userid;
	cache->key.table_id = table_id;
	cache->mcxt = mcxt;
	cache->relid = relid;
	cache->generation = generation;
	cache->invalidations = consent_invalidations;
	cache->purpose = pstrdup(ehrledger_purpose);
	cache->expires = DT_NOEND;
	cache->pg_role = pstrdup(GetUserNameFromId(userid, false));
	cache->mask = 15;
	cache->slots = palloc0(sizeof(AllowedPatient) * (cache->mask + 1));

	if (actor_of_role(userid, &cache->actor_id, &role))
	{
		Oid			types[3] = {TEXTOID, INT4OID, TEXTOID};
		Datum		values[3];
		uint64		i;

		values[0] = CStringGetTextDatum(cache->actor_id);
		values[1] = Int32GetDatum(table_id);
		values[2] = CStringGetTextDatum(ehrledger_purpose);
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		/*
		 * A schema before 0.4 has no can_read and can_write: its consents
		 * named no actions and allow reading only, as after the update.
		 */
		spi_as_owner(ledger_has_function("_consent_table", 1, &types[1])
					 ? "SELECT patient, basis, until, can_read, can_write"
					 " FROM ehrledger._permitted_patients($1, $2, $3)"
					 : "SELECT patient, basis, until, true,"
					 " basis OPERATOR(pg_catalog.!~~) 'consent %'"
					 " FROM ehrledger._permitted_patients($1, $2, $3)",
					 3, types, values, NULL, true, true);
		/* At most half full, so probes stay short. */
		while ((cache->mask + 1) < 2 * SPI_processed)
			cache->mask = cache->mask * 2 + 1;
		cache->slots = MemoryContextAllocZero(mcxt, sizeof(AllowedPatient) * (cache->mask + 1));
		for (i = 0; i < SPI_processed; i++)
		{
			HeapTuple	tup = SPI_tuptable->vals[i];
			TupleDesc	desc = SPI_tuptable->tupdesc;
			char	   *patient = SPI_getvalue(tup, desc, 1);
			bool		no_end;
			Datum		until = SPI_getbinval(tup, desc, 3, &no_end);
			bool		allows[2];
			bool		isnull;
			AllowedPatient *entry;
			int			len;
			uint32		hash;
			int			access;

			if (!no_end && DatumGetTimestampTz(until) < cache->expires)
				cache->expires = DatumGetTimestampTz(until);
			if (patient == NULL)
				continue;
			allows[ACCESS_READ] = DatumGetBool(SPI_getbinval(tup, desc, 4, &isnull)) && !isnull;
			allows[ACCESS_WRITE] = DatumGetBool(SPI_getbinval(tup, desc, 5, &isnull)) && !isnull;
			len = strlen(patient);
			hash = hash_bytes((const unsigned char *) patient, len);
			entry = allowed_lookup(cache, patient, len, hash);
			if (entry == NULL)
			{
				uint32		slot;

				for (slot = hash & cache->mask; cache->slots[slot].patient != NULL;
					 slot = (slot + 1) & cache->mask)
					;
				entry = &cache->slots[slot];
				entry->patient = MemoryContextStrdup(mcxt, patient);
				entry->len = len;
				entry->hash = hash;
			}
			/* The first basis for each access wins: own record, then consents. */
			for (access = ACCESS_READ; access <= ACCESS_WRITE; access++)
				if (allows[access] && entry->basis[access] == NULL)
					entry->basis[access] = MemoryContextStrdup(mcxt, SPI_getvalue(tup, desc, 2));
		}
		SPI_finish();
	}
	MemoryContextSwitchTo(outer);
	MemoryContextSetParent(mcxt, TopMemoryContext);
	return cache;
}

/* A cache out of the table is freed as soon as no call site uses it. */
static void
retire_cache(ConsentCache *cache)
{
	cache->retired = true;
	if (cache->users == 0)
		MemoryContextDelete(cache->mcxt);
}

static void
release_cache(ConsentCache *cache)
{
	if (cache != NULL && --cache->users == 0 && cache->retired)
		MemoryContextDelete(cache->mcxt);
}

/* The call site's memory is going away: so is its hold on a cache. */
static void
site_released(void *arg)
{
	ConsentSite *site = arg;

	release_cache(site->cache);
	site->cache = NULL;
}

/*
 * The cache for a role and table, rebuilt if actors or consents changed
 * since it was built, the session's purpose changed, or one of its
 * consents or break-glasses has ended.  Called once per statement and call
 * site.
 */
static ConsentCache *
consent_cache_get(Oid userid, int32 table_id)
{
	uint64		generation;
	ConsentCacheKey key;
	CacheSlot  *slot;
	ConsentCache *cache;
	bool		found;

	/* A change replayed on a standby arrives as an invalidation. */
	AcceptInvalidationMessages();
	generation = ledger_actor_generation();

	if (consent_caches == NULL)
	{
		HASHCTL		ctl;

		memset(&ctl, 0, sizeof(ctl));
		ctl.keysize = sizeof(ConsentCacheKey);
		ctl.entrysize = sizeof(CacheSlot);
		consent_caches = hash_create("ehrledger consent caches", MAX_CONSENT_CACHES, &ctl,
									 HASH_ELEM | HASH_BLOBS);
	}
	memset(&key, 0, sizeof(key));
	key.userid = userid;
	key.table_id = table_id;
	slot = hash_search(consent_caches, &key, HASH_FIND, NULL);
	if (slot != NULL)
	{
		cache = slot->cache;
		if (generation != 0 && cache->generation == generation &&
			cache->invalidations == consent_invalidations &&
			strcmp(cache->purpose, ehrledger_purpose) == 0 &&
			GetCurrentTimestamp() < cache->expires)
			return cache;
		hash_search(consent_caches, &key, HASH_REMOVE, NULL);
		retire_cache(cache);
	}

	cache = consent_cache_build(userid, table_id, generation);
	/* A transaction that changes actors or consents keeps nothing it sees. */
	if (generation == 0)
	{
		cache->retired = true;
		return cache;
	}
	if (hash_get_num_entries(consent_caches) >= MAX_CONSENT_CACHES)
	{
		HASH_SEQ_STATUS status;
		CacheSlot  *old;

		hash_seq_init(&status, consent_caches);
		while ((old = hash_seq_search(&status)) != NULL)
		{
			ConsentCache *evicted = old->cache;

			hash_search(consent_caches, &old->key, HASH_REMOVE, NULL);
			retire_cache(evicted);
		}
	}
	slot = hash_search(consent_caches, &key, HASH_ENTER, &found);
	slot->cache = cache;
	return cache;
}

/*
 * A partitioned table's policies run on its partitions' rows: the planner
 * gives them the partition's range table entry, which needs no privilege
 * itself.  Whether partition is one of relid's, at any depth, and the
 * statement needs the action's privilege on relid.
 */
static bool
partition_read_through(List *rtable, Oid partition, Oid relid, int action)
{
	ListCell   *lc;

	if (!get_rel_relispartition(partition) ||
		!list_member_oid(get_partition_ancestors(partition), relid))
		return false;
	foreach(lc, rtable)
	{
		RangeTblEntry *rte = lfirst(lc);

		if (rte->rtekind == RTE_RELATION && rte->relid == relid &&
			(rte->requiredPerms & action_privileges[action]) != 0)
			return true;
	}
	return false;
}

/* Whether an expression tree holds the very node target. */
static bool
holds_node(Node *node, void *target)
{
	if (node == NULL)
		return false;
	if (node == target)
		return true;
	return expression_tree_walker(node, holds_node, target);
}

/* The index-only scan whose filter holds the call target: its scanrelid, or 0. */
typedef struct IndexOnlyCall
{
	Node	   *call;
	Index		scanrelid;
} IndexOnlyCall;

static bool
find_index_only_call(PlanState *ps, void *arg)
{
	IndexOnlyCall *ioc = arg;

	if (ps == NULL)
		return false;
	if (IsA(ps, IndexOnlyScanState) && holds_node((Node *) ps->plan->qual, ioc->call))
	{
		ioc->scanrelid = ((Scan *) ps->plan)->scanrelid;
		return true;
	}
	return planstate_tree_walker(ps, find_index_only_call, arg);
}

/*
 * Whether a call is a policy's check of a row of the table it names, in a
 * statement that needs the action's privilege on that table: the patient
 * argument is a column of that very table, in the range table of the
 * statement being run.  In an index-only scan the column is read from the
 * index (INDEX_VAR): the scan whose filter holds the call says which table.
 * Anything else (a direct call with a constant, a column of another table,
 * an action the statement does not perform) may still be answered, but is
 * not recorded as an access.
 */
static bool
call_is_policy(FunctionCallInfo fcinfo, Oid relid, int action)
{
	Node	   *expr = fcinfo->flinfo->fn_expr;
	FuncExpr   *call;
	Node	   *arg;
	Var		   *var;
	QueryDesc  *statement;
	List	   *rtable;
	RangeTblEntry *rte;
	int			varno;

	if (expr == NULL || !IsA(expr, FuncExpr) || running == NIL)
		return false;
	call = (FuncExpr *) expr;
	if (list_length(call->args) != 3 || !IsA(linitial(call->args), Const) ||
		!IsA(lthird(call->args), Const))
		return false;
	arg = lsecond(call->args);
	while (arg != NULL && (IsA(arg, RelabelType) || IsA(arg, CollateExpr)))
		arg = IsA(arg, RelabelType) ? (Node *) ((RelabelType *) arg)->arg
			: (Node *) ((CollateExpr *) arg)->arg;
	if (arg == NULL || !IsA(arg, Var))
		return false;
	var = (Var *) arg;
	statement = llast(running);
	rtable = statement->plannedstmt->rtable;
	varno = var->varno;
	if (varno == INDEX_VAR && var->varlevelsup == 0)
	{
		IndexOnlyCall ioc = {expr, 0};

		if (!find_index_only_call(statement->planstate, &ioc))
			return false;
		varno = (int) ioc.scanrelid;
	}
	if (IS_SPECIAL_VARNO(varno) || var->varlevelsup != 0 ||
		varno < 1 || varno > list_length(rtable))
		return false;
	rte = rt_fetch(varno, rtable);
	if (rte->rtekind != RTE_RELATION)
		return false;
	if (rte->relid == relid)
		return (rte->requiredPerms & action_privileges[action]) != 0;
	return partition_read_through(rtable, rte->relid, relid, action);
}

/* Notes that the statement acted on a patient's rows, for the access log. */
static void
note_access(ConsentSite *site, AllowedPatient *entry)
{
	ConsentCache *cache = site->cache;
	PendingAccess *group = NULL;
	ListCell   *lc;
	MemoryContext outer;

	if (pending_context == NULL)
		pending_context = AllocSetContextCreate(TopMemoryContext, "ehrledger access notes",
												ALLOCSET_DEFAULT_SIZES);
	outer = MemoryContextSwitchTo(pending_context);
	foreach(lc, pending)
	{
		PendingAccess *p = lfirst(lc);

		if (p->userid == site->userid && p->table_id == site->table_id &&
			p->action == site->action)
		{
			group = p;
			break;
		}
	}
	if (group == NULL)
	{
		group = palloc0(sizeof(PendingAccess));
		group->userid = site->userid;
		group->table_id = site->table_id;
		group->action = site->action;
		group->actor_id = pstrdup(cache->actor_id);
		group->pg_role = pstrdup(cache->pg_role);
		pending = lappend(pending, group);
	}
	group->patients = lappend(group->patients, pstrdup(entry->patient));
	group->bases = lappend(group->bases, pstrdup(entry->basis[ACCESS_OF(site->action)]));
	entry->noted[site->action] = access_generation;
	MemoryContextSwitchTo(outer);
}

PG_FUNCTION_INFO_V1(ehrledger_consent_check);

/*
 * ehrledger.consent_check(table_id, patient, action): the row-level
 * security policy of tables protected with a patient column.
 */
Datum
ehrledger_consent_check(PG_FUNCTION_ARGS)
{
	ConsentSite *site = fcinfo->flinfo->fn_extra;
	Oid			userid = GetUserId();
	text	   *patient;
	int			len;
	AllowedPatient *entry;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2))
		PG_RETURN_BOOL(false);
	if (site == NULL || site->userid != userid || site->table_id != PG_GETARG_INT32(0))
	{
		char	   *action_name = text_to_cstring(PG_GETARG_TEXT_PP(2));
		int			action;
		const int	nactions = NACTIONS;
		ConsentCache *cache;

		for (action = 0; action < nactions; action++)
			if (strcmp(action_name, action_names[action]) == 0)
				break;
		if (action == nactions)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("unknown consent action \"%s\"", action_name),
					 errhint("Use read, insert, update or delete.")));
		cache = consent_cache_get(userid, PG_GETARG_INT32(0));
		if (site == NULL)
		{
			site = MemoryContextAllocZero(fcinfo->flinfo->fn_mcxt, sizeof(ConsentSite));
			site->release.func = site_released;
			site->release.arg = site;
			MemoryContextRegisterResetCallback(fcinfo->flinfo->fn_mcxt, &site->release);
			fcinfo->flinfo->fn_extra = site;
		}
		release_cache(site->cache);
		site->cache = cache;
		cache->users++;
		site->userid = userid;
		site->table_id = PG_GETARG_INT32(0);
		site->action = action;
		site->record = call_is_policy(fcinfo, cache->relid, action);
	}
	if (site->cache->actor_id == NULL)
		PG_RETURN_BOOL(false);

	patient = PG_GETARG_TEXT_PP(1);
	len = VARSIZE_ANY_EXHDR(patient);
	entry = allowed_lookup(site->cache, VARDATA_ANY(patient), len,
						   hash_bytes((const unsigned char *) VARDATA_ANY(patient), len));
	if (entry == NULL || entry->basis[ACCESS_OF(site->action)] == NULL)
		PG_RETURN_BOOL(false);
	if (site->record && entry->noted[site->action] != access_generation)
		note_access(site, entry);
	PG_RETURN_BOOL(true);
}

/* A text[] of the given C strings. */
static Datum
text_array(List *strings)
{
	int			n = list_length(strings);
	Datum	   *elems = palloc(sizeof(Datum) * Max(n, 1));
	ListCell   *lc;
	int			i = 0;

	foreach(lc, strings)
		elems[i++] = CStringGetTextDatum(lfirst(lc));
	return PointerGetDatum(construct_array(elems, n, TEXTOID, -1, false, TYPALIGN_INT));
}

/*
 * Records changes in the acting transaction, with their notifications and
 * the client's address (a schema before 0.4 has no place for it).
 */
static void
log_changes(List *groups, TimestampTz at)
{
	Oid			types[9] = {TIMESTAMPTZOID, TEXTOID, NAMEOID, TEXTOID, INT4OID,
	TEXTARRAYOID, TEXTARRAYOID, TEXTOID, INETOID};
	const char *addr = access_log_client_addr();
	bool		with_addr;
	ListCell   *lc;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	with_addr = ledger_has_function("_log_access", 9, types);
	foreach(lc, groups)
	{
		PendingAccess *p = lfirst(lc);
		Datum		values[9];

		values[0] = TimestampTzGetDatum(at);
		values[1] = CStringGetTextDatum(p->actor_id);
		values[2] = DirectFunctionCall1(namein, CStringGetDatum(p->pg_role));
		values[3] = CStringGetTextDatum(action_names[p->action]);
		values[4] = Int32GetDatum(p->table_id);
		values[5] = text_array(p->patients);
		values[6] = text_array(p->bases);
		values[7] = (Datum) 0;
		values[8] = addr ? DirectFunctionCall1(inet_in, CStringGetDatum(addr)) : (Datum) 0;
		if (with_addr)
			spi_as_owner("SELECT ehrledger._log_access($1, $2, $3, $4, $5, $6, $7, $8, $9)",
						 9, types, values, addr ? "       n " : "       nn", false, false);
		else
			spi_as_owner("SELECT ehrledger._log_access($1, $2, $3, $4, $5, $6, $7, $8)",
						 8, types, values, "       n", false, false);
	}
	SPI_finish();
}

/*
 * Sends what the finished statement noted to the access log: reads to the
 * writer (waiting, unless ehrledger.access_log_wait is off, until they are
 * durable), changes into the current transaction.
 */
static void
flush_access(bool aborting)
{
	List	   *groups = pending;
	List	   *volatile changes = NIL;
	TimestampTz at = GetCurrentTimestamp();
	ListCell   *lc;

	pending = NIL;
	access_generation++;
	flushing = true;
	PG_TRY();
	{
		foreach(lc, groups)
		{
			PendingAccess *p = lfirst(lc);

			if (p->action != ACTION_READ)
				changes = lappend(changes, p);
			else
				access_log_send(at, p->actor_id, p->pg_role, action_names[p->action],
								p->table_id, p->patients, p->bases, aborting);
		}
		access_log_settle(!aborting && ehrledger_access_log_wait);
		if (changes != NIL && !aborting)
			log_changes(changes, at);
	}
	PG_FINALLY();
	{
		flushing = false;
		MemoryContextReset(pending_context);
	}
	PG_END_TRY();
}

/* The statement being run is the one whose range table a policy call belongs to. */
static void
consent_executor_run(QueryDesc *queryDesc, ScanDirection direction, uint64 count,
					 bool execute_once)
{
	running = lappend(running, queryDesc);
	PG_TRY();
	{
		if (prev_executor_run)
			prev_executor_run(queryDesc, direction, count, execute_once);
		else
			standard_ExecutorRun(queryDesc, direction, count, execute_once);
	}
	PG_FINALLY();
	{
		running = list_delete_last(running);
	}
	PG_END_TRY();
}

static void
consent_executor_finish(QueryDesc *queryDesc)
{
	running = lappend(running, queryDesc);
	PG_TRY();
	{
		if (prev_executor_finish)
			prev_executor_finish(queryDesc);
		else
			standard_ExecutorFinish(queryDesc);
	}
	PG_FINALLY();
	{
		running = list_delete_last(running);
	}
	PG_END_TRY();
	if (pending != NIL && !flushing)
		flush_access(false);
}

/*
 * A statement that fails after reading still read: its reads are sent to
 * the writer (without waiting; the transaction is going away).  Changes
 * roll back with the transaction, and so do their notes.
 */
static void
consent_xact_callback(XactEvent event, void *arg)
{
	(void) arg;
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
		event == XACT_EVENT_PARALLEL_COMMIT || event == XACT_EVENT_PARALLEL_ABORT)
	{
		list_free(running);
		running = NIL;
	}
	if (event != XACT_EVENT_ABORT && event != XACT_EVENT_PARALLEL_ABORT)
		return;
	flushing = false;
	if (pending != NIL)
		flush_access(true);
}

void
consent_init(void)
{
	prev_executor_run = ExecutorRun_hook;
	ExecutorRun_hook = consent_executor_run;
	prev_executor_finish = ExecutorFinish_hook;
	ExecutorFinish_hook = consent_executor_finish;
	RegisterXactCallback(consent_xact_callback, NULL);
	CacheRegisterRelcacheCallback(consent_relcache_callback, (Datum) 0);
}
