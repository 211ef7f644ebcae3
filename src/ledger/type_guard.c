/*
 * type_guard.c
 *		The schema guard's part that watches types: a change to a type
 *		that would change the encoding of values already sealed is refused.
 *
 * A row's encoding (docs/format.md §2, §5) holds a composite value as its
 * attributes and an enum value as its label.  ALTER TYPE ... ADD, DROP or
 * ALTER ATTRIBUTE of a composite type, and ALTER TYPE ... RENAME VALUE of
 * an enum, change how every stored value of the type reads back, so rows
 * sealed before the change would no longer verify (a DROP ATTRIBUTE also
 * loses what the attribute held).  The type's owner need not own any
 * ledger table, so the event trigger on the tables (ledger.sql) never sees
 * it: such commands are refused here, before they run, when any ledger
 * table not retired holds values of the type (in a column, or inside an
 * array, domain, composite, range or multirange there).  ADD VALUE,
 * RENAME ATTRIBUTE, RENAME, OWNER and SET SCHEMA change no encoding.
 *
 * Next: the command runs (partitions.c's hook calls this first).
 */
#include "postgres.h"

#include "access/relation.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "nodes/parsenodes.h"
#include "parser/parse_type.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/typcache.h"

#include "ledger/ledger.h"

/* Whether a value of type typid holds, at any depth, a value of target. */
static bool
type_holds(Oid typid, Oid target, int depth)
{
	HeapTuple	tup;
	Form_pg_type typ;
	bool		holds = false;

	if (typid == target)
		return true;
	if (depth > 32 || !OidIsValid(typid))
		return false;
	check_stack_depth();
	tup = SearchSysCache1(TYPEOID, ObjectIdGetDatum(typid));
	if (!HeapTupleIsValid(tup))
		return false;
	typ = (Form_pg_type) GETSTRUCT(tup);
	if (typ->typtype == TYPTYPE_DOMAIN)
		holds = type_holds(typ->typbasetype, target, depth + 1);
	else if (OidIsValid(typ->typelem) && typ->typsubscript == F_ARRAY_SUBSCRIPT_HANDLER)
		holds = type_holds(typ->typelem, target, depth + 1);
	else if (typ->typtype == TYPTYPE_RANGE)
		holds = type_holds(get_range_subtype(typid), target, depth + 1);
	else if (typ->typtype == TYPTYPE_MULTIRANGE)
		holds = type_holds(get_multirange_range(typid), target, depth + 1);
	else if (typ->typtype == TYPTYPE_COMPOSITE && OidIsValid(typ->typrelid))
	{
		Relation	rel = try_relation_open(typ->typrelid, AccessShareLock);

		if (rel != NULL)
		{
			TupleDesc	desc = RelationGetDescr(rel);
			int			i;

			for (i = 0; i < desc->natts && !holds; i++)
				if (!TupleDescAttr(desc, i)->attisdropped)
					holds = type_holds(TupleDescAttr(desc, i)->atttypid, target, depth + 1);
			relation_close(rel, AccessShareLock);
		}
	}
	ReleaseSysCache(tup);
	return holds;
}

/* A ledger table, not retired, with a column holding values of typid. */
static Oid
table_holding(Oid typid)
{
	List	   *registry = ledger_registry(GetTransactionSnapshot());
	ListCell   *lc;

	foreach(lc, registry)
	{
		LedgerTable *t = lfirst(lc);
		Oid			relids[2] = {t->relid, t->history_relid};
		int			k;

		if (t->retired)
			continue;
		for (k = 0; k < 2; k++)
		{
			Relation	rel;
			bool		holds = false;
			int			i;

			if (!OidIsValid(relids[k]) || (rel = try_relation_open(relids[k], AccessShareLock)) == NULL)
				continue;
			for (i = 0; i < RelationGetDescr(rel)->natts && !holds; i++)
			{
				Form_pg_attribute att = TupleDescAttr(RelationGetDescr(rel), i);

				if (!att->attisdropped)
					holds = type_holds(att->atttypid, typid, 0);
			}
			relation_close(rel, AccessShareLock);
			if (holds)
				return t->relid;
		}
	}
	return InvalidOid;
}

static void
refuse(Oid typid, Oid relid, const char *what, const char *hint)
{
	ereport(ERROR,
			(errcode(ERRCODE_LEDGER_SCHEMA_GUARD),
			 errmsg("cannot change the %s of type %s: ledger table %s holds values of it",
					what, format_type_be_qualified(typid),
					quote_qualified_identifier(get_namespace_name(get_rel_namespace(relid)),
											   get_rel_name(relid))),
			 errdetail("Sealed rows were hashed with its %s: they would no longer verify.", what),
			 errhint("%s", hint)));
}

/*
 * Called before every utility command: refuses ALTER TYPE ... ADD, DROP
 * or ALTER ATTRIBUTE and ALTER TYPE ... RENAME VALUE of a type a ledger
 * table holds values of.
 */
void
ledger_type_guard(Node *parsetree)
{
	Oid			nsp;
	Oid			typid = InvalidOid;
	bool		attributes;

	if (IsA(parsetree, AlterEnumStmt) && ((AlterEnumStmt *) parsetree)->oldVal != NULL)
	{
		TypeName   *name = makeTypeNameFromNameList(((AlterEnumStmt *) parsetree)->typeName);

		typid = LookupTypeNameOid(NULL, name, true);
		attributes = false;
	}
	else if (IsA(parsetree, AlterTableStmt) && ((AlterTableStmt *) parsetree)->objtype == OBJECT_TYPE)
	{
		Oid			relid = RangeVarGetRelid(((AlterTableStmt *) parsetree)->relation, NoLock, true);

		typid = OidIsValid(relid) ? get_rel_type_id(relid) : InvalidOid;
		attributes = true;
	}
	else
		return;

	if (!OidIsValid(typid) || !IsTransactionState() ||
		!OidIsValid(nsp = get_namespace_oid("ehrledger", true)) ||
		!OidIsValid(get_relname_relid("registered_table", nsp)))
		return;
	{
		Oid			relid = table_holding(typid);

		if (!OidIsValid(relid))
			return;
		if (attributes)
			refuse(typid, relid, "attributes",
				   "Create a new type, and add a column of it to the table.");
		else
			refuse(typid, relid, "labels",
				   "Add a value with ALTER TYPE ... ADD VALUE instead; existing labels stay as they are.");
	}
}
