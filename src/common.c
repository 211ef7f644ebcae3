/*
 * common.c
 *		Small helpers every subsystem uses: byteas, big-endian writers, hex,
 *		and the extension's own schema, relations and functions.
 *
 * Nothing here knows about blocks, consents or peers; src/ledger,
 * src/consent and src/network build on it.
 */
#include "postgres.h"

#include "catalog/dependency.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "commands/extension.h"
#include "nodes/value.h"
#include "parser/parse_func.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"

#include "ehrledger.h"

/* A bytea holding a copy of len bytes (huge allocations allowed). */
bytea *
ledger_bytea(const void *data, size_t len)
{
	bytea	   *b = palloc_extended(VARHDRSZ + len, MCXT_ALLOC_HUGE);

	SET_VARSIZE(b, VARHDRSZ + len);
	memcpy(VARDATA(b), data, len);
	return b;
}

/* Big-endian integers appended to buf, with src/core's byte order helpers. */
void
put_u32(StringInfo buf, uint32 v)
{
	uint8		b[4];

	lc_store_u32(b, v);
	appendBinaryStringInfo(buf, (char *) b, 4);
}

void
put_u64(StringInfo buf, uint64 v)
{
	uint8		b[8];

	lc_store_u64(b, v);
	appendBinaryStringInfo(buf, (char *) b, 8);
}

/* Lower-case hex, palloc'ed. */
char *
hex_encode_bytes(const uint8 *data, size_t len)
{
	char	   *out = palloc_extended(len * 2 + 1, MCXT_ALLOC_HUGE);

	lc_hex_encode(data, len, out);
	return out;
}

Oid
ledger_namespace(void)
{
	Oid			nsp = get_namespace_oid("ehrledger", true);

	if (!OidIsValid(nsp))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("extension \"ehrledger\" is not installed in this database"),
				 errhint("Run CREATE EXTENSION ehrledger.")));
	return nsp;
}

/*
 * Whether the installed schema has function ehrledger.name(argtypes).  One
 * library serves every schema from 0.1 on, until ALTER EXTENSION UPDATE:
 * a path that needs a function a later version added asks here first.
 */
bool
ledger_has_function(const char *name, int nargs, const Oid *argtypes)
{
	List	   *qualified = list_make2(makeString("ehrledger"), makeString(pstrdup(name)));

	return OidIsValid(LookupFuncName(qualified, nargs, argtypes, true));
}

Oid
ledger_relid(const char *relname)
{
	Oid			relid = get_relname_relid(relname, ledger_namespace());

	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation \"ehrledger.%s\" does not exist", relname),
				 errhint("The ehrledger extension may be damaged; reinstall it.")));
	return relid;
}

/* A relation's schema-qualified name, quoted as SQL needs it. */
char *
relation_qualified_name(Oid relid)
{
	return quote_qualified_identifier(get_namespace_name(get_rel_namespace(relid)),
									  get_rel_name(relid));
}

/*
 * ehrledger.<relname> when the ehrledger extension owns it, else
 * InvalidOid: hooks that run in every database must not take a schema and
 * table of that name that someone else made for the extension's own.
 */
Oid
ledger_owned_relid(const char *relname)
{
	Oid			ext = get_extension_oid("ehrledger", true);
	Oid			nsp;
	Oid			relid;

	if (!OidIsValid(ext) || !OidIsValid(nsp = get_namespace_oid("ehrledger", true)) ||
		!OidIsValid(relid = get_relname_relid(relname, nsp)) ||
		getExtensionOfObject(RelationRelationId, relid) != ext)
		return InvalidOid;
	return relid;
}

/*
 * Reports a failure of a core function: out of memory is SQLSTATE 53200,
 * as for any allocation in the server.
 */
void
core_failed(int rc)
{
	if (rc == LC_ERR_NOMEM)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
	ereport(ERROR,
			(errcode(ERRCODE_INTERNAL_ERROR),
			 errmsg("a cryptographic computation failed in OpenSSL or libsodium")));
}

/* Runs a utility command through the next ProcessUtility hook (next), or PostgreSQL's own. */
void
next_process_utility(ProcessUtility_hook_type next, PlannedStmt *pstmt, const char *queryString,
					 bool readOnlyTree, ProcessUtilityContext context, ParamListInfo params,
					 QueryEnvironment *queryEnv, DestReceiver *dest, QueryCompletion *qc)
{
	if (next)
		next(pstmt, queryString, readOnlyTree, context, params, queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context, params,
								queryEnv, dest, qc);
}
