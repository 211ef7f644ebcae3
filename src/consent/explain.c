/*
 * explain.c
 *		EXPLAIN ANALYZE of consent-protected tables, refused to the roles
 *		their consents restrict.
 *
 * EXPLAIN ANALYZE counts the rows each plan node removed.  Row-level
 * security removes the rows a provider may not see, so on an index of
 * (patient, code) "Rows Removed by Filter: 1" tells a provider without
 * consent that the patient has that diagnosis.  A statement that reads a
 * table protected with a patient column, by a role its row-level security
 * applies to, may be explained but not run under EXPLAIN ANALYZE.  What
 * EXPLAIN cannot hide (estimates from statistics, timing) is in the
 * README's threat model.
 *
 * The check is made when the explained statement's executor starts, on its
 * final range table: views are expanded there, and EXPLAIN ANALYZE EXECUTE
 * of a prepared statement arrives there too.
 *
 * Next: nothing; the statement runs or is refused.
 */
#include "postgres.h"

#include "commands/defrem.h"
#include "executor/executor.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "tcop/utility.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/rls.h"
#include "utils/snapmgr.h"

#include "consent/consent.h"
#include "ledger/ledger.h"

static ProcessUtility_hook_type prev_process_utility = NULL;
static ExecutorStart_hook_type prev_executor_start = NULL;

/* EXPLAIN ANALYZE statements being run by this backend, nested. */
static int	explain_analyze_depth = 0;

static bool
explains_with_analyze(Node *parsetree)
{
	ListCell   *lc;
	bool		analyze = false;

	if (!IsA(parsetree, ExplainStmt))
		return false;
	foreach(lc, ((ExplainStmt *) parsetree)->options)
	{
		DefElem    *opt = lfirst(lc);

		if (strcmp(opt->defname, "analyze") == 0)
			analyze = defGetBoolean(opt);
	}
	return analyze;
}

static void
explain_process_utility(PlannedStmt *pstmt, const char *queryString, bool readOnlyTree,
						ProcessUtilityContext context, ParamListInfo params,
						QueryEnvironment *queryEnv, DestReceiver *dest, QueryCompletion *qc)
{
	volatile bool analyze = explains_with_analyze(pstmt->utilityStmt);

	if (analyze)
		explain_analyze_depth++;
	PG_TRY();
	{
		next_process_utility(prev_process_utility, pstmt, queryString, readOnlyTree, context,
							 params, queryEnv, dest, qc);
	}
	PG_FINALLY();
	{
		if (analyze)
			explain_analyze_depth--;
	}
	PG_END_TRY();
}

/*
 * Whether a table is protected with a patient column (retired ones too, and
 * partitioned tables, whose policies apply to queries of them).
 */
static bool
consent_protected(Oid relid)
{
	LedgerTable *t = ledger_table_of(relid, GetActiveSnapshot());

	return t != NULL && t->consent;
}

/*
 * The statement EXPLAIN ANALYZE runs is instrumented; the queries of
 * functions it calls are not, and show no counts.
 */
static void
explain_executor_start(QueryDesc *queryDesc, int eflags)
{
	if (explain_analyze_depth > 0 && queryDesc->instrument_options != 0 &&
		!(eflags & EXEC_FLAG_EXPLAIN_ONLY))
	{
		ListCell   *lc;

		foreach(lc, queryDesc->plannedstmt->rtable)
		{
			RangeTblEntry *rte = lfirst(lc);

			if (rte->rtekind == RTE_RELATION &&
				check_enable_rls(rte->relid, rte->checkAsUser, true) == RLS_ENABLED &&
				consent_protected(rte->relid))
				ereport(ERROR,
						(errcode(ERRCODE_LEDGER_EXPLAIN_REFUSED),
						 errmsg("EXPLAIN ANALYZE of consent-protected table %s is refused to role %s",
								relation_qualified_name(rte->relid),
								GetUserNameFromId(OidIsValid(rte->checkAsUser) ? rte->checkAsUser : GetUserId(),
												  false)),
						 errdetail("Its counts of rows that row-level security removed would tell of patients whose rows the role may not see."),
						 errhint("Run EXPLAIN without ANALYZE, or as a role the table's consents do not restrict.")));
		}
	}
	if (prev_executor_start)
		prev_executor_start(queryDesc, eflags);
	else
		standard_ExecutorStart(queryDesc, eflags);
}

/* Called from _PG_init. */
void
explain_guard_init(void)
{
	prev_process_utility = ProcessUtility_hook;
	ProcessUtility_hook = explain_process_utility;
	prev_executor_start = ExecutorStart_hook;
	ExecutorStart_hook = explain_executor_start;
}
