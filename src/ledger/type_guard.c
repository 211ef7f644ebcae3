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
 * A table's or view's row type is a composite type too, and so are the
 * row types of the tables a change reaches: an inheritance child or
 * partition (ALTER TABLE of the parent), a table typed by a composite type
 * (ALTER TYPE ... CASCADE).  ALTER TABLE ... ADD, DROP or ALTER COLUMN and
 * CREATE OR REPLACE VIEW are refused when a ledger table holds any of
 * those row types, and a column dropped by a cascade (DROP TYPE or DROP
 * DOMAIN ... CASCADE of an attribute's type), which no ALTER announces, is
 * refused by the object access hook as it goes.
 *
 * Next: the command runs (partitions.c's hook calls this first).
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/heapam.h"
#include "access/tableam.h"
#include "catalog/dependency.h"
#include "catalog/objectaccess.h"
#include "catalog/pg_class.h"
#include "catalog/pg_inherits.h"
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
static Oid	table_holding(Oid typid);

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

	check_stack_depth();
	/* a domain is its base type's value, at no depth (as encode.c sees it) */
	for (;;)
	{
		if (typid == target)
			return true;
		if (!OidIsValid(typid))
			return false;
		tup = SearchSysCache1(TYPEOID, ObjectIdGetDatum(typid));
		if (!HeapTupleIsValid(tup))
			return false;
		typ = (Form_pg_type) GETSTRUCT(tup);
		if (typ->typtype != TYPTYPE_DOMAIN)
			break;
		typid = typ->typbasetype;
		ReleaseSysCache(tup);
	}
	/* (deeper than encode.c hashes: such a table cannot be protected) */
	if (depth > 32)
		holds = true;
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

/*
 * A ledger table holding values of the row type of relid or of any table
 * that inherits its columns (its children, partitions, and the tables
 * typed by it when it is a composite type), all of which a change to its
 * columns reaches.
 */
static Oid
table_holding_rows_of(Oid relid, Oid *which)
{
	List	   *reached = list_make1_oid(relid);
	ListCell   *lc;
	Oid			typid = get_rel_type_id(relid);
	int			i;

	/* tables typed by a composite type (ALTER TYPE ... CASCADE reaches them) */
	if (OidIsValid(typid) && get_rel_relkind(relid) == RELKIND_COMPOSITE_TYPE)
	{
		Relation	classrel = table_open(RelationRelationId, AccessShareLock);
		TableScanDesc scan = table_beginscan_catalog(classrel, 0, NULL);
		HeapTuple	tup;

		while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
		{
			Form_pg_class c = (Form_pg_class) GETSTRUCT(tup);

			if (c->reloftype == typid)
				reached = lappend_oid(reached, c->oid);
		}
		table_endscan(scan);
		table_close(classrel, AccessShareLock);
	}
	/* (the list grows as it is walked: each one's children join it) */
	for (i = 0; i < list_length(reached); i++)
	{
		ListCell   *lc2;

		foreach(lc2, find_inheritance_children(list_nth_oid(reached, i), NoLock))
			if (!list_member_oid(reached, lfirst_oid(lc2)))
				reached = lappend_oid(reached, lfirst_oid(lc2));
	}
	foreach(lc, reached)
	{
		Oid			holder;

		typid = get_rel_type_id(lfirst_oid(lc));
		if (OidIsValid(typid) && OidIsValid(holder = table_holding(typid)))
		{
			*which = lfirst_oid(lc);
			return holder;
		}
	}
	return InvalidOid;
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

static bool
ledger_installed(void)
{
	Oid			nsp;

	return IsTransactionState() && OidIsValid(nsp = get_namespace_oid("ehrledger", true)) &&
		OidIsValid(get_relname_relid("registered_table", nsp));
}

/*
 * A row's encoding leaves out generated columns (they are computed after
 * the hashing trigger): ALTER COLUMN ... DROP EXPRESSION would make one an
 * ordinary column that every sealed row's encoding then lacks.  Refused on
 * a ledger table, or on a parent whose change reaches one.
 */
static void
refuse_drop_expression(AlterTableStmt *stmt)
{
	ListCell   *lc;
	Oid			relid;

	foreach(lc, stmt->cmds)
		if (((AlterTableCmd *) lfirst(lc))->subtype == AT_DropExpression)
			break;
	if (lc == NULL || !OidIsValid(relid = RangeVarGetRelid(stmt->relation, NoLock, true)) ||
		!ledger_installed())
		return;
	foreach(lc, find_all_inheritors(relid, NoLock, NULL))
	{
		LedgerTable *t = ledger_table_of(lfirst_oid(lc), GetTransactionSnapshot());

		if (t != NULL && !t->retired)
			ereport(ERROR,
					(errcode(ERRCODE_LEDGER_SCHEMA_GUARD),
					 errmsg("cannot drop the expression of a generated column of ledger table %s",
							relation_name(t->relid)),
					 errdetail("Rows are hashed without their generated columns: the column would enter every sealed row's encoding."),
					 errhint("Add an ordinary column instead.")));
	}
}

/* "its row type", or "the row type of" the descendant whose it is. */
static char *
row_type_of(Oid relid, Oid which)
{
	return which == relid ? "its row type" : psprintf("the row type of %s", relation_name(which));
}


/*
 * Called before every utility command: refuses ALTER TYPE ... ADD, DROP
 * or ALTER ATTRIBUTE and ALTER TYPE ... RENAME VALUE of a type a ledger
 * table holds values of, ALTER TABLE ... ADD, DROP or ALTER COLUMN of a
 * table whose row type (or a descendant's) a ledger table holds, and
 * CREATE OR REPLACE VIEW of such a view.
 */
void
ledger_type_guard(Node *parsetree)
{
	Oid			relid = InvalidOid;
	Oid			which = InvalidOid;
	Oid			holder;

	if (IsA(parsetree, AlterEnumStmt) && ((AlterEnumStmt *) parsetree)->oldVal != NULL)
	{
		Oid			typid = LookupTypeNameOid(NULL, makeTypeNameFromNameList(((AlterEnumStmt *) parsetree)->typeName),
											  true);

		if (OidIsValid(typid) && ledger_installed() && OidIsValid(holder = table_holding(typid)))
			ereport(ERROR,
					(errcode(ERRCODE_LEDGER_SCHEMA_GUARD),
					 errmsg("cannot change the labels of type %s: ledger table %s holds values of it",
							format_type_be_qualified(typid), relation_name(holder)),
					 errdetail("Sealed rows were hashed with its labels: they would no longer verify."),
					 errhint("Add a value with ALTER TYPE ... ADD VALUE instead; existing labels stay as they are.")));
		return;
	}
	if (IsA(parsetree, AlterTableStmt))
		refuse_drop_expression((AlterTableStmt *) parsetree);
	if (IsA(parsetree, AlterTableStmt) &&
		(((AlterTableStmt *) parsetree)->objtype == OBJECT_TYPE || changes_columns((AlterTableStmt *) parsetree)))
		relid = RangeVarGetRelid(((AlterTableStmt *) parsetree)->relation, NoLock, true);
	else if (IsA(parsetree, ViewStmt) && ((ViewStmt *) parsetree)->replace)
		relid = RangeVarGetRelid(((ViewStmt *) parsetree)->view, NoLock, true);
	if (!OidIsValid(relid) || !ledger_installed() ||
		!OidIsValid(holder = table_holding_rows_of(relid, &which)))
		return;

	if (get_rel_relkind(relid) == RELKIND_COMPOSITE_TYPE)
		ereport(ERROR,
				(errcode(ERRCODE_LEDGER_SCHEMA_GUARD),
				 errmsg("cannot change the attributes of type %s: ledger table %s holds values of %s",
						format_type_be_qualified(get_rel_type_id(relid)), relation_name(holder),
						which == relid ? "it" : psprintf("the row type of %s, typed by it", relation_name(which))),
				 errdetail("Sealed rows were hashed with its attributes: they would no longer verify."),
				 errhint("Create a new type, and add a column of it to the table.")));
	else
		ereport(ERROR,
				(errcode(ERRCODE_LEDGER_SCHEMA_GUARD),
				 errmsg("cannot change the columns of %s: ledger table %s holds values of %s",
						relation_name(relid), relation_name(holder), row_type_of(relid, which)),
				 errdetail("Sealed rows were hashed with its columns: they would no longer verify.")));
}

/*
 * A column dropped by a cascade (DROP TYPE or DROP DOMAIN ... CASCADE of a
 * composite type's attribute type) never passes through ALTER: a dropped
 * column of a relation whose row type a ledger table holds is refused as
 * it goes.  The ledger tables' own columns are the event trigger's.
 */
static object_access_hook_type prev_object_access = NULL;

static void
type_guard_object_access(ObjectAccessType access, Oid classId, Oid objectId, int subId, void *arg)
{
	Oid			holder;
	Oid			which;

	if (prev_object_access)
		prev_object_access(access, classId, objectId, subId, arg);
	if (access != OAT_DROP || classId != RelationRelationId || subId <= 0 ||
		(((ObjectAccessDrop *) arg)->dropflags & PERFORM_DELETION_INTERNAL) != 0 ||
		!ledger_installed() || !OidIsValid(holder = table_holding_rows_of(objectId, &which)))
		return;
	ereport(ERROR,
			(errcode(ERRCODE_LEDGER_SCHEMA_GUARD),
			 errmsg("cannot drop column \"%s\" of %s: ledger table %s holds values of %s",
					get_attname(objectId, subId, false), relation_name(objectId), relation_name(holder),
					row_type_of(objectId, which)),
			 errdetail("Sealed rows were hashed with its columns: they would no longer verify.")));
}

/* Called from _PG_init. */
void
type_guard_init(void)
{
	prev_object_access = object_access_hook;
	object_access_hook = type_guard_object_access;
}
