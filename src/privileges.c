/*
 * privileges.c
 *		A table owner's code runs with the owner's rights, never ehrledger's.
 *
 * Whatever the owner of a protected table controls (its triggers and rules,
 * CHECK constraints, index expressions and predicates, generated columns,
 * and the domains, casts and types of its columns) runs when ehrledger
 * changes, reads or converts the table's rows.  ehrledger's own paths
 * often run with more rights than the owner: protect() and share() by a
 * superuser, the schema guard and the share trigger as the extension's
 * owner, history(), proof() and export() for whoever asks.  So before it
 * calls such code ehrledger switches to the owner, under
 * SECURITY_RESTRICTED_OPERATION and in a GUC nest level, as VACUUM,
 * CLUSTER, CREATE INDEX and amcheck do: the code gets exactly its author's
 * rights, cannot SET ROLE, leave a setting behind, or queue work (a
 * deferred trigger, a held cursor) that would run later with more.
 *
 * The other direction, ehrledger's own queries on its own tables, switches
 * to the ledger's owner with nothing of the caller's in between.
 *
 * Next: whichever path called it carries on as its caller.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_class.h"
#include "catalog/pg_namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

#include "ehrledger.h"

PG_FUNCTION_INFO_V1(ehrledger_as_table_owner);
PG_FUNCTION_INFO_V1(ehrledger_row_jsonb);

/*
 * Runs the code that follows as role, restricted; user_switch_end() undoes
 * it.  An error in between needs no cleanup: aborting the (sub)transaction
 * restores the user and pops the GUC nest level.
 */
void
user_switch_restricted(Oid role, UserSwitch *sw)
{
	GetUserIdAndSecContext(&sw->userid, &sw->sec_context);
	SetUserIdAndSecContext(role, sw->sec_context | SECURITY_RESTRICTED_OPERATION);
	sw->nestlevel = NewGUCNestLevel();
}

/* The role that owns ehrledger's schema: who its internal functions run as. */
Oid
ledger_owner(void)
{
	HeapTuple	tup = SearchSysCache1(NAMESPACEOID, ObjectIdGetDatum(ledger_namespace()));
	Oid			owner;

	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for schema ehrledger");
	owner = ((Form_pg_namespace) GETSTRUCT(tup))->nspowner;
	ReleaseSysCache(tup);
	return owner;
}

/* Runs ehrledger's own queries as the ledger's owner. */
void
user_switch_ledger_owner(UserSwitch *sw)
{
	GetUserIdAndSecContext(&sw->userid, &sw->sec_context);
	SetUserIdAndSecContext(ledger_owner(), sw->sec_context | SECURITY_LOCAL_USERID_CHANGE);
	sw->nestlevel = 0;
}

void
user_switch_end(UserSwitch *sw)
{
	if (sw->nestlevel > 0)
		AtEOXact_GUC(false, sw->nestlevel);
	SetUserIdAndSecContext(sw->userid, sw->sec_context);
}

/*
 * Runs a query through SPI as the ledger's owner, with the given parameters.
 * The caller has connected SPI.  With latest, the query sees everything
 * committed so far, even in a REPEATABLE READ transaction: a revoked
 * consent or actor must not live on in an old snapshot.
 */
int
spi_as_owner(const char *query, int nargs, Oid *types, Datum *values,
			 const char *nulls, bool read_only, bool latest)
{
	Oid			save_userid;
	int			save_sec_context;
	int			ret;

	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(ledger_owner(), save_sec_context | SECURITY_LOCAL_USERID_CHANGE);
	if (latest)
	{
		SPIPlanPtr	plan = SPI_prepare(query, nargs, types);

		if (plan == NULL)
			elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
		ret = SPI_execute_snapshot(plan, values, nulls, GetLatestSnapshot(),
								   InvalidSnapshot, read_only, false, 0);
	}
	else
		ret = SPI_execute_with_args(query, nargs, types, values, nulls, read_only, 0);
	SetUserIdAndSecContext(save_userid, save_sec_context);
	if (ret < 0)
		elog(ERROR, "SPI_execute failed: %s", SPI_result_code_string(ret));
	return ret;
}

/* The owner of a relation. */
Oid
relation_owner(Oid relid)
{
	HeapTuple	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	Oid			owner;

	if (!HeapTupleIsValid(tup))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation with OID %u does not exist", relid)));
	owner = ((Form_pg_class) GETSTRUCT(tup))->relowner;
	ReleaseSysCache(tup);
	return owner;
}

/*
 * A row of a table as JSON text, converted with its owner's rights: a
 * column type's cast to json is the owner's code.
 */
Datum
row_to_json_as(Oid owner, Datum row)
{
	UserSwitch	sw;
	Datum		json;

	user_switch_restricted(owner, &sw);
	json = DirectFunctionCall1(row_to_json, row);
	user_switch_end(&sw);
	return json;
}

/*
 * The value a type's input function makes of text, run as the type's
 * owner: a domain's CHECK, or a field's, is its owner's code.
 */
Datum
input_as_type_owner(Oid typid, char *text, int32 typmod)
{
	HeapTuple	tup = SearchSysCache1(TYPEOID, ObjectIdGetDatum(typid));
	Oid			owner;
	Oid			typinput;
	Oid			typioparam;
	UserSwitch	sw;
	Datum		value;

	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for type %u", typid);
	owner = ((Form_pg_type) GETSTRUCT(tup))->typowner;
	ReleaseSysCache(tup);
	getTypeInputInfo(typid, &typinput, &typioparam);
	user_switch_restricted(owner, &sw);
	value = OidInputFunctionCall(typinput, text, typioparam, typmod);
	user_switch_end(&sw);
	return value;
}

/*
 * Running code as a role is for superusers and the role's own members,
 * whatever EXECUTE was granted: for anyone else it would be a way in.
 */
static void
require_may_act_as(Oid role, const char *what)
{
	if (!superuser() && !has_privs_of_role(GetUserId(), role))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to run %s as role %s", what,
						GetUserNameFromId(role, false)),
				 errdetail("Only superusers and members of role %s may.",
						   GetUserNameFromId(role, false))));
}

/*
 * ehrledger._as_table_owner(tbl, statement): runs one statement as the
 * owner of tbl, restricted, and returns the rows it processed.  For
 * protect()'s backfill and the schema guard, whose statements fire the
 * owner's triggers and check its constraints and domains.
 */
Datum
ehrledger_as_table_owner(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);
	char	   *statement = text_to_cstring(PG_GETARG_TEXT_PP(1));
	Oid			owner = relation_owner(relid);
	UserSwitch	sw;
	int			ret;
	uint64		processed;

	require_may_act_as(owner, "ehrledger._as_table_owner()");
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	user_switch_restricted(owner, &sw);
	ret = SPI_execute(statement, false, 0);
	processed = SPI_processed;
	user_switch_end(&sw);
	if (ret < 0)
		elog(ERROR, "SPI_execute failed: %s", SPI_result_code_string(ret));
	SPI_finish();
	PG_RETURN_INT64((int64) processed);
}

/*
 * ehrledger._row_jsonb(row): a row of a table as jsonb, converted with the
 * table owner's rights; for share() and the share trigger.
 */
Datum
ehrledger_row_jsonb(PG_FUNCTION_ARGS)
{
	HeapTupleHeader row = PG_GETARG_HEAPTUPLEHEADER(0);
	Oid			relid = get_typ_typrelid(HeapTupleHeaderGetTypeId(row));
	Oid			owner;
	Datum		json;

	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("ehrledger._row_jsonb() takes a row of a table, not of type %s",
						format_type_be(HeapTupleHeaderGetTypeId(row)))));
	owner = relation_owner(relid);
	require_may_act_as(owner, "ehrledger._row_jsonb()");
	json = row_to_json_as(owner, PointerGetDatum(row));
	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(TextDatumGetCString(json))));
}
