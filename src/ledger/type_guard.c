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
 * RENAME ATTRIBUTE, RENAME, OWNER and SET SCHEMA change no encoding.  A
 * table's row type is a composite type too: ALTER TABLE ... ADD, DROP or
 * ALTER COLUMN of a table whose rows a ledger table holds is refused alike.
 *
 * Next: the command runs (partitions.c's hook calls this first).
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/table.h"
#include "catalog/indexing.h"
#include "catalog/pg_attribute.h"
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
#include "access/stratnum.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

#include "ledger/ledger.h"

static bool type_holds(Oid typid, Oid target, int depth);

/*
 * Whether a column of relid holds a value of target.  pg_attribute is read
 * directly: locking the relations here, before the command locks the one
 * it alters, would be a lock upgrade two such commands could deadlock on.
 */
static bool
columns_hold(Oid relid, Oid target, int depth)
{
	Relation	attrel = table_open(AttributeRelationId, AccessShareLock);
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tup;
	bool		holds = false;

	ScanKeyInit(&key, Anum_pg_attribute_attrelid, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(relid));
	scan = systable_beginscan(attrel, AttributeRelidNumIndexId, true, NULL, 1, &key);
	while (!holds && HeapTupleIsValid(tup = systable_getnext(scan)))
	{
		Form_pg_attribute att = (Form_pg_attribute) GETSTRUCT(tup);

		if (att->attnum > 0 && !att->attisdropped)
			holds = type_holds(att->atttypid, target, depth);
	}
	systable_endscan(scan);
	table_close(attrel, AccessShareLock);
	return holds;
}

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
		holds = columns_hold(typ->typrelid, target, depth + 1);
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
			if (OidIsValid(relids[k]) && columns_hold(relids[k], typid, 0))
				return t->relid;
	}
	return InvalidOid;
}

static char *
relation_name(Oid relid)
{
	return quote_qualified_identifier(get_namespace_name(get_rel_namespace(relid)),
									  get_rel_name(relid));
}

/* Whether an ALTER TABLE adds, drops or retypes a column. */
static bool
changes_columns(AlterTableStmt *stmt)
{
	ListCell   *lc;

	foreach(lc, stmt->cmds)
	{
		AlterTableType type = ((AlterTableCmd *) lfirst(lc))->subtype;

		if (type == AT_AddColumn || type == AT_DropColumn || type == AT_AlterColumnType)
			return true;
	}
	return false;
}

/*
 * Called before every utility command: refuses ALTER TYPE ... ADD, DROP
 * or ALTER ATTRIBUTE and ALTER TYPE ... RENAME VALUE of a type a ledger
 * table holds values of, and ALTER TABLE ... ADD, DROP or ALTER COLUMN
 * of a table whose row type a ledger table holds values of.
 */
void
ledger_type_guard(Node *parsetree)
{
	Oid			nsp;
	Oid			typid = InvalidOid;
	Oid			relid = InvalidOid;
	Oid			holder;
	AlterTableStmt *alter = (AlterTableStmt *) parsetree;

	if (IsA(parsetree, AlterEnumStmt) && ((AlterEnumStmt *) parsetree)->oldVal != NULL)
		typid = LookupTypeNameOid(NULL, makeTypeNameFromNameList(((AlterEnumStmt *) parsetree)->typeName),
								  true);
	else if (IsA(parsetree, AlterTableStmt) && (alter->objtype == OBJECT_TYPE || changes_columns(alter)))
	{
		relid = RangeVarGetRelid(alter->relation, NoLock, true);
		typid = OidIsValid(relid) ? get_rel_type_id(relid) : InvalidOid;
	}
	if (!OidIsValid(typid) || !IsTransactionState() ||
		!OidIsValid(nsp = get_namespace_oid("ehrledger", true)) ||
		!OidIsValid(get_relname_relid("registered_table", nsp)) ||
		!OidIsValid(holder = table_holding(typid)))
		return;

	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_LEDGER_SCHEMA_GUARD),
				 errmsg("cannot change the labels of type %s: ledger table %s holds values of it",
						format_type_be_qualified(typid), relation_name(holder)),
				 errdetail("Sealed rows were hashed with its labels: they would no longer verify."),
				 errhint("Add a value with ALTER TYPE ... ADD VALUE instead; existing labels stay as they are.")));
	else if (alter->objtype == OBJECT_TYPE)
		ereport(ERROR,
				(errcode(ERRCODE_LEDGER_SCHEMA_GUARD),
				 errmsg("cannot change the attributes of type %s: ledger table %s holds values of it",
						format_type_be_qualified(typid), relation_name(holder)),
				 errdetail("Sealed rows were hashed with its attributes: they would no longer verify."),
				 errhint("Create a new type, and add a column of it to the table.")));
	else
		ereport(ERROR,
				(errcode(ERRCODE_LEDGER_SCHEMA_GUARD),
				 errmsg("cannot change the columns of table %s: ledger table %s holds values of its row type",
						relation_name(relid), relation_name(holder)),
				 errdetail("Sealed rows were hashed with its columns: they would no longer verify.")));
}
