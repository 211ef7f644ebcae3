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
#include "catalog/objectaddress.h"
#include "catalog/pg_attrdef.h"
#include "catalog/pg_cast.h"
#include "catalog/pg_default_acl.h"
#include "catalog/pg_policy.h"
#include "catalog/pg_rewrite.h"
#include "catalog/pg_trigger.h"
#include "catalog/pg_collation.h"
#include "catalog/pg_depend.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_namespace.h"
#include "catalog/pg_proc.h"
#include "commands/extension.h"
#include "commands/tablecmds.h"
#include "storage/proc.h"
#include "utils/inval.h"
#include "storage/lmgr.h"
#include "utils/memutils.h"
#include "catalog/objectaccess.h"
#include "catalog/pg_class.h"
#include "catalog/pg_inherits.h"
#include "access/table.h"
#include "catalog/indexing.h"
#include "catalog/pg_attribute.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "nodes/parsenodes.h"
#include "parser/parse_type.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "access/stratnum.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

#include "ledger/ledger.h"

/*
 * The types ledger tables hold values of, found once and kept until any
 * relation or type changes or the statement ends: what every guard
 * below asks, for each relation a command reaches, is whether one of
 * them is held.  A type maps to the first ledger table found holding it;
 * "named" marks a column's own type (or its array's element type), whose
 * name the schema guard records and compares.
 */
typedef struct HeldType
{
	Oid			typid;
	Oid			holder;
	bool		named;
} HeldType;

static HTAB *held = NULL;
static HTAB *held_rels = NULL;	/* the relations whose columns were read */
static bool held_valid = false;
static LocalTransactionId held_lxid = InvalidLocalTransactionId;
static TimestampTz held_statement = 0;
static uint64 held_signature = 0;	/* of the ledger tables it was built for */

/*
 * A relation changing matters only if its columns were read (a ledger
 * table, its history, a held composite type's relation): a cascaded DROP
 * of 200 partitions' columns then finds the held types once, not 200
 * times.  A table protected or retired since changes the registry's
 * signature, which every lookup compares.
 */
static void
held_invalidate(Datum arg, Oid relid)
{
	(void) arg;
	if (!OidIsValid(relid) || held_rels == NULL || hash_search(held_rels, &relid, HASH_FIND, NULL) != NULL)
		held_valid = false;
}

static void
held_invalidate_type(Datum arg, int cacheid, uint32 hashvalue)
{
	(void) arg;
	(void) cacheid;
	(void) hashvalue;
	held_valid = false;
}

static void collect_columns(Oid relid, Oid holder, bool named, int depth);

/*
 * The ledger tables, as committed now: under REPEATABLE READ the
 * transaction's snapshot would miss a protect() committed after it began,
 * while the catalog the command works on already shows that table's
 * ledger columns.
 */
static List *
guard_registry(void)
{
	Snapshot	snapshot = RegisterSnapshot(GetLatestSnapshot());
	List	   *registry = ledger_registry(snapshot);

	UnregisterSnapshot(snapshot);
	return registry;
}

static Oid	foreign_row_type_in(Oid relid, Oid owner, int depth);
static void refuse_temporary(Oid relid);
static bool temporary_type(Oid typid);
static bool guard_locks_names(void);
static CreateStmt *create_stmt(Node *parsetree);
static void refuse_moved_name(const RangeVar *rv, Oid relid);
static void refuse_foreign_row_type(Oid relid, Oid held_relid);
static void refuse_held_change(Oid relid, Oid holder, Oid which);

/* Adds typid and every type a value of it holds (as encode.c walks it). */
static void
collect_type(Oid typid, Oid holder, bool named, int depth)
{
	HeapTuple	tup;
	Form_pg_type typ;
	HeldType   *h;
	bool		found;

	check_stack_depth();
	/* (deeper than encode.c hashes: no such table can be protected) */
	if (!OidIsValid(typid) || depth > 32)
		return;
	h = hash_search(held, &typid, HASH_ENTER, &found);
	if (found)
	{
		h->named |= named;
		return;
	}
	h->holder = holder;
	h->named = named;
	tup = SearchSysCache1(TYPEOID, ObjectIdGetDatum(typid));
	if (!HeapTupleIsValid(tup))
		return;
	typ = (Form_pg_type) GETSTRUCT(tup);
	/* a domain is its base type's value, at no depth */
	if (typ->typtype == TYPTYPE_DOMAIN)
		collect_type(typ->typbasetype, holder, false, depth);
	else if (OidIsValid(typ->typelem) && typ->typsubscript == F_ARRAY_SUBSCRIPT_HANDLER)
		collect_type(typ->typelem, holder, named, depth + 1);
	else if (typ->typtype == TYPTYPE_RANGE)
		collect_type(get_range_subtype(typid), holder, false, depth + 1);
	else if (typ->typtype == TYPTYPE_MULTIRANGE)
		collect_type(get_multirange_range(typid), holder, false, depth + 1);
	else if (typ->typtype == TYPTYPE_COMPOSITE && OidIsValid(typ->typrelid))
		collect_columns(typ->typrelid, holder, false, depth + 1);
	ReleaseSysCache(tup);
}

/*
 * The types of relid's columns.  pg_attribute is read directly: locking
 * the relations here, before the command locks the one it alters, would
 * be a lock upgrade two such commands could deadlock on.
 */
static void
collect_columns(Oid relid, Oid holder, bool named, int depth)
{
	Relation	attrel = table_open(AttributeRelationId, AccessShareLock);
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tup;

	ScanKeyInit(&key, Anum_pg_attribute_attrelid, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(relid));
	(void) hash_search(held_rels, &relid, HASH_ENTER, NULL);
	scan = systable_beginscan(attrel, AttributeRelidNumIndexId, true, NULL, 1, &key);
	while (HeapTupleIsValid(tup = systable_getnext(scan)))
	{
		Form_pg_attribute att = (Form_pg_attribute) GETSTRUCT(tup);

		if (att->attnum > 0 && !att->attisdropped)
			collect_type(att->atttypid, holder, named, depth);
	}
	systable_endscan(scan);
	table_close(attrel, AccessShareLock);
}

/* Makes the held types current; held_lookup() then reads them. */
static void
held_refresh(void)
{
	List	   *registry;
	ListCell   *lc;
	uint64		signature = 0;

	/* (another session's protect() or DDL, committed since, is seen now) */
	AcceptInvalidationMessages();
	/* the ledger tables now: a table protected or retired since is seen */
	registry = guard_registry();
	foreach(lc, registry)
	{
		LedgerTable *t = lfirst(lc);

		if (!t->retired)
			signature = signature * 1000003 + t->relid * 31 + t->history_relid;
	}
	if (!held_valid || held_lxid != MyProc->lxid || held_statement != GetCurrentStatementStartTimestamp() ||
		held_signature != signature)
	{
		HASHCTL		ctl;

		if (held == NULL)
		{
			CacheRegisterRelcacheCallback(held_invalidate, (Datum) 0);
			CacheRegisterSyscacheCallback(TYPEOID, held_invalidate_type, (Datum) 0);
		}
		else
		{
			hash_destroy(held);
			hash_destroy(held_rels);
		}
		ctl.keysize = sizeof(Oid);
		ctl.entrysize = sizeof(HeldType);
		ctl.hcxt = TopMemoryContext;
		held = hash_create("ehrledger held types", 256, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
		ctl.entrysize = sizeof(Oid);
		held_rels = hash_create("ehrledger held relations", 256, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
		held_valid = true;
		held_lxid = MyProc->lxid;
		held_statement = GetCurrentStatementStartTimestamp();
		held_signature = signature;
		foreach(lc, registry)
		{
			LedgerTable *t = lfirst(lc);

			if (t->retired)
				continue;
			collect_columns(t->relid, t->relid, true, 0);
			if (OidIsValid(t->history_relid))
				collect_columns(t->history_relid, t->relid, true, 0);
		}
	}
}

static HeldType *
held_lookup(Oid typid)
{
	return hash_search(held, &typid, HASH_FIND, NULL);
}

static HeldType *
held_type(Oid typid)
{
	held_refresh();
	return held_lookup(typid);
}

/* A ledger table, not retired, with a column holding values of typid. */
static Oid
table_holding(Oid typid)
{
	HeldType   *h = held_type(typid);

	return h != NULL ? h->holder : InvalidOid;
}

/*
 * relid and every table that inherits its columns (its children,
 * partitions, and the tables typed by it when it is a composite type), all
 * of which a change to its columns reaches.
 */
static List *
relations_reached(Oid relid)
{
	List	   *reached = list_make1_oid(relid);
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
	return reached;
}

/* A ledger table holding values of the row type of a relation in reached. */
static Oid
table_holding_rows_in(List *reached, Oid *which)
{
	ListCell   *lc;

	held_refresh();
	foreach(lc, reached)
	{
		HeldType   *h;
		Oid			typid = get_rel_type_id(lfirst_oid(lc));

		if (OidIsValid(typid) && (h = held_lookup(typid)) != NULL)
		{
			*which = lfirst_oid(lc);
			return h->holder;
		}
	}
	return InvalidOid;
}

/*
 * A ledger table holding values of the row type of relid or of any table
 * relations_reached() from it.
 */
static Oid
table_holding_rows_of(Oid relid, Oid *which)
{
	return table_holding_rows_in(relations_reached(relid), which);
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
 * Whether ehrledger is installed in this database: its extension, owning
 * the registry (a schema and table of that name that someone else made
 * must not be read as the registry).
 */
bool
ledger_schema_installed(void)
{
	return IsTransactionState() && OidIsValid(ledger_owned_relid("registered_table"));
}

/* The ledger table relid is, or whose history table it is (not retired). */
static LedgerTable *
ledger_table_or_history(List *registry, Oid relid)
{
	ListCell   *lc;

	foreach(lc, registry)
	{
		LedgerTable *t = lfirst(lc);

		if (!t->retired && (t->relid == relid || t->history_relid == relid))
			return t;
	}
	return NULL;
}

/*
 * A child table's rows show in every query of its parent, unhashed and
 * unverified: a ledger table (or history table) is nobody's parent, but
 * for the partitions of a partitioned one, which enter the ledger.
 */
static void
refuse_inheriting(List *parents)
{
	ListCell   *lc;

	foreach(lc, parents)
	{
		/*
		 * (without a lock: PostgreSQL locks the parents later, after its
		 * schema and LIKE sources, and refuse_new_children() judges what the
		 * command did)
		 */
		Oid			relid = RangeVarGetRelid(lfirst_node(RangeVar, lc), NoLock, true);
		LedgerTable *t;

		if (OidIsValid(relid) && ledger_schema_installed() &&
			(t = ledger_table_or_history(guard_registry(), relid)) != NULL)
			ereport(ERROR,
					(errcode(ERRCODE_LEDGER_SCHEMA_GUARD),
					 errmsg("cannot inherit from ledger table %s", relation_qualified_name(relid)),
					 errdetail("A child table's rows would show in queries of the ledger table without being in the ledger.")));
	}
}

/* Whether a command makes a table inherit another (not a partition). */
static bool
inherits_something(Node *parsetree)
{
	ListCell   *lc;

	if (create_stmt(parsetree) != NULL)
		return create_stmt(parsetree)->inhRelations != NIL && create_stmt(parsetree)->partbound == NULL;
	if (!IsA(parsetree, AlterTableStmt))
		return false;
	foreach(lc, ((AlterTableStmt *) parsetree)->cmds)
		if (((AlterTableCmd *) lfirst(lc))->subtype == AT_AddInherit)
			return true;
	return false;
}

/* The CreateStmt of a CREATE TABLE or CREATE FOREIGN TABLE; NULL for another command. */
static CreateStmt *
create_stmt(Node *parsetree)
{
	if (IsA(parsetree, CreateStmt))
		return (CreateStmt *) parsetree;
	if (IsA(parsetree, CreateForeignTableStmt))
		return &((CreateForeignTableStmt *) parsetree)->base;
	return NULL;
}

/*
 * After such a command: no ledger or history table has a child that this
 * transaction gave it, but a registered partition of it.  (refuse_inheriting()
 * judged the parents' names before the command; this judges what the
 * command did, found by the catalog rows this transaction wrote, not by a
 * name, which another session can make reach elsewhere meanwhile.  A child
 * from before, a dump's say, is not this command's to refuse.)
 */
static void
refuse_new_children(List *registry)
{
	Relation	inhrel = table_open(InheritsRelationId, AccessShareLock);
	ListCell   *lc;

	foreach(lc, registry)
	{
		LedgerTable *t = lfirst(lc);
		Oid			parents[2] = {t->relid, t->history_relid};

		if (t->retired)
			continue;
		for (int i = 0; i < 2; i++)
		{
			ScanKeyData key;
			SysScanDesc scan;
			HeapTuple	tup;

			if (!OidIsValid(parents[i]))
				continue;
			ScanKeyInit(&key, Anum_pg_inherits_inhparent, BTEqualStrategyNumber, F_OIDEQ,
						ObjectIdGetDatum(parents[i]));
			scan = systable_beginscan(inhrel, InheritsParentIndexId, true, NULL, 1, &key);
			while (HeapTupleIsValid(tup = systable_getnext(scan)))
			{
				Oid			child = ((Form_pg_inherits) GETSTRUCT(tup))->inhrelid;

				if (!TransactionIdIsCurrentTransactionId(HeapTupleHeaderGetXmin(tup->t_data)) ||
					(i == 0 && ledger_is_partition_of(registry, child, t)))
					continue;
				ereport(ERROR,
						(errcode(ERRCODE_LEDGER_SCHEMA_GUARD),
						 errmsg("cannot inherit from ledger table %s", relation_qualified_name(parents[i])),
						 errdetail("A child table's rows would show in queries of the ledger table without being in the ledger.")));
			}
			systable_endscan(scan);
		}
	}
	table_close(inhrel, AccessShareLock);
}

/*
 * ALTER TABLE commands on a ledger table (or its history table, or a
 * parent whose change reaches one) that would change what its sealed rows
 * read back and that the schema guard's record of the columns cannot
 * see: ALTER COLUMN ... TYPE with the same type and a USING that rewrites
 * the values; DROP EXPRESSION (generated columns are left out of the
 * encoding: the column would enter every sealed row's); and OF a type
 * (whose ALTER TYPE ... CASCADE would then rename or retype the table's
 * columns).  A column of a temporary type is refused after the command,
 * with every other dependency on a temporary object (below).
 */
static void
refuse_ledger_alter(AlterTableStmt *stmt, Oid relid)
{
	ListCell   *lc;
	ListCell   *rc;
	List	   *reached = NIL;
	List	   *registry = NIL;

	foreach(lc, stmt->cmds)
	{
		AlterTableCmd *cmd = lfirst(lc);
		LedgerTable *t = NULL;
		char	   *what = NULL;
		const char *detail = NULL;
		const char *hint = NULL;

		switch (cmd->subtype)
		{
			case AT_AlterColumnType:
				what = psprintf("change the type of column \"%s\" of", cmd->name);
				detail = "Sealed rows were hashed with its values: ALTER COLUMN ... TYPE rewrites them.";
				hint = "Add a new column of the new type instead.";
				break;
			case AT_DropExpression:
				what = psprintf("drop the expression of generated column \"%s\" of", cmd->name);
				detail = "Rows are hashed without their generated columns: the column would enter every sealed row's encoding.";
				hint = "Add an ordinary column instead.";
				break;
			case AT_AddInherit:
				refuse_inheriting(list_make1(cmd->def));
				break;
			case AT_AddOf:
				what = "make a typed table of";
				detail = "ALTER TYPE ... CASCADE would then change the table's columns.";
				break;
			default:
				break;
		}
		if (what == NULL)
			continue;
		if (reached == NIL)
		{
			if (!OidIsValid(relid) || !ledger_schema_installed())
				return;
			reached = find_all_inheritors(relid, NoLock, NULL);
			registry = guard_registry();
		}
		foreach(rc, reached)
			if ((t = ledger_table_or_history(registry, lfirst_oid(rc))) != NULL)
				break;
		if (t != NULL)
			ereport(ERROR,
					(errcode(ERRCODE_LEDGER_SCHEMA_GUARD),
					 errmsg("cannot %s ledger table %s", what, relation_qualified_name(t->relid)),
					 errdetail("%s", detail),
					 hint ? errhint("%s", hint) : 0));
	}
}

/*
 * Whether obj depends, through normal, automatic or internal dependencies
 * (pg_depend, recursively through types, relations, collations, functions
 * (a generation expression's, with its parameters' defaults) and column
 * defaults), on an object in a temporary schema: PostgreSQL drops such an
 * object when its session ends, and with it whatever depends on it, a
 * ledger table's column and its values included, with no DDL to refuse.
 */
static bool
depends_on_temporary(Oid classId, Oid objectId, List **seen, int depth)
{
	Relation	deprel;
	ScanKeyData keys[2];
	SysScanDesc scan;
	HeapTuple	tup;
	bool		temporary = false;
	List	   *refs = NIL;
	ListCell   *lc;

	check_stack_depth();
	if (depth > 64)
		return false;
	deprel = table_open(DependRelationId, AccessShareLock);
	ScanKeyInit(&keys[0], Anum_pg_depend_classid, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(classId));
	ScanKeyInit(&keys[1], Anum_pg_depend_objid, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(objectId));
	scan = systable_beginscan(deprel, DependDependerIndexId, true, NULL, 2, keys);
	while (HeapTupleIsValid(tup = systable_getnext(scan)))
	{
		Form_pg_depend dep = (Form_pg_depend) GETSTRUCT(tup);
		ObjectAddress ref;

		if (dep->deptype != DEPENDENCY_NORMAL && dep->deptype != DEPENDENCY_AUTO &&
			dep->deptype != DEPENDENCY_INTERNAL)
			continue;
		ref.classId = dep->refclassid;
		ref.objectId = dep->refobjid;
		ref.objectSubId = 0;
		if (ref.classId == NamespaceRelationId)
			temporary = isAnyTempNamespace(ref.objectId);
		else if (is_objectclass_supported(ref.classId))
		{
			Oid			nsp = get_object_namespace(&ref);

			temporary = OidIsValid(nsp) && isAnyTempNamespace(nsp);
		}
		if (temporary)
			break;
		if ((ref.classId == TypeRelationId || ref.classId == RelationRelationId ||
			 ref.classId == CollationRelationId || ref.classId == ProcedureRelationId) &&
			!list_member_oid(*seen, ref.objectId))
		{
			*seen = lappend_oid(*seen, ref.objectId);
			refs = lappend(refs, list_make2_oid(ref.classId, ref.objectId));
		}
	}
	systable_endscan(scan);
	table_close(deprel, AccessShareLock);
	/* a composite type's attributes are its relation's columns, which it does not depend on */
	if (classId == TypeRelationId && OidIsValid(get_typ_typrelid(objectId)) &&
		!list_member_oid(*seen, get_typ_typrelid(objectId)))
	{
		*seen = lappend_oid(*seen, get_typ_typrelid(objectId));
		refs = lappend(refs, list_make2_oid(RelationRelationId, get_typ_typrelid(objectId)));
	}
	foreach(lc, refs)
		if (!temporary)
			temporary = depends_on_temporary(linitial_oid(lfirst(lc)), lsecond_oid(lfirst(lc)), seen,
											 depth + 1);
	return temporary;
}

/* A ledger table's columns, their defaults and generation expressions. */
static bool
table_depends_on_temporary(Oid relid)
{
	List	   *seen = list_make1_oid(relid);
	Relation	adrel;
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tup;
	bool		temporary = depends_on_temporary(RelationRelationId, relid, &seen, 0);

	adrel = table_open(AttrDefaultRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_attrdef_adrelid, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(relid));
	scan = systable_beginscan(adrel, AttrDefaultIndexId, true, NULL, 1, &key);
	while (!temporary && HeapTupleIsValid(tup = systable_getnext(scan)))
		temporary = depends_on_temporary(AttrDefaultRelationId, ((Form_pg_attrdef) GETSTRUCT(tup))->oid,
										 &seen, 0);
	systable_endscan(scan);
	table_close(adrel, AccessShareLock);
	return temporary;
}

/* protect() asks this (check_hashable()); the hook below after ALTER TABLE. */
void
ledger_refuse_temporary_dependencies(Oid relid)
{
	if (table_depends_on_temporary(relid))
		refuse_temporary(relid);
}

static void
refuse_temporary(Oid relid)
{
	ereport(ERROR,
			(errcode(ERRCODE_LEDGER_SCHEMA_GUARD),
			 errmsg("ledger table %s would depend on a temporary object", relation_qualified_name(relid)),
			 errdetail("PostgreSQL drops a temporary type, collation or function when its session ends, and the columns that use it with their values."),
			 errhint("Use objects of a permanent schema.")));
}

/*
 * Whether owner has the privileges of relid's owner and of every table it
 * inherits from or is a partition of, at any depth: the guard keeps their
 * columns from changing too while a ledger table holds relid's row type.
 */
static bool
owner_of_lineage(Oid owner, Oid relid, int depth)
{
	Relation	inhrel;
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tup;
	List	   *parents = NIL;
	ListCell   *lc;

	check_stack_depth();
	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	if (!HeapTupleIsValid(tup))
		return true;
	if (!has_privs_of_role(owner, ((Form_pg_class) GETSTRUCT(tup))->relowner))
	{
		ReleaseSysCache(tup);
		return false;
	}
	ReleaseSysCache(tup);
	if (depth > 64)
		return true;
	inhrel = table_open(InheritsRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_inherits_inhrelid, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(relid));
	scan = systable_beginscan(inhrel, InheritsRelidSeqnoIndexId, true, NULL, 1, &key);
	while (HeapTupleIsValid(tup = systable_getnext(scan)))
		parents = lappend_oid(parents, ((Form_pg_inherits) GETSTRUCT(tup))->inhparent);
	systable_endscan(scan);
	table_close(inhrel, AccessShareLock);
	foreach(lc, parents)
		if (!owner_of_lineage(owner, lfirst_oid(lc), depth + 1))
			return false;
	return true;
}

/*
 * The relation, other than a stand-alone composite type, whose row type a
 * value of typid holds (as encode.c walks it: through domains, arrays,
 * ranges, multiranges and composites' attributes) and whose owner owner
 * (or whose ancestors' owners, owner_of_lineage()) does not have the
 * privileges of; InvalidOid if none.
 */
static Oid
foreign_row_type(Oid typid, Oid owner, int depth)
{
	HeapTuple	tup;
	Form_pg_type typ;
	Oid			found = InvalidOid;

	check_stack_depth();
	if (!OidIsValid(typid) || depth > 32)
		return InvalidOid;
	tup = SearchSysCache1(TYPEOID, ObjectIdGetDatum(typid));
	if (!HeapTupleIsValid(tup))
		return InvalidOid;
	typ = (Form_pg_type) GETSTRUCT(tup);
	if (typ->typtype == TYPTYPE_DOMAIN)
		found = foreign_row_type(typ->typbasetype, owner, depth);
	else if (OidIsValid(typ->typelem) && typ->typsubscript == F_ARRAY_SUBSCRIPT_HANDLER)
		found = foreign_row_type(typ->typelem, owner, depth + 1);
	else if (typ->typtype == TYPTYPE_RANGE)
		found = foreign_row_type(get_range_subtype(typid), owner, depth + 1);
	else if (typ->typtype == TYPTYPE_MULTIRANGE)
		found = foreign_row_type(get_multirange_range(typid), owner, depth + 1);
	else if (typ->typtype == TYPTYPE_COMPOSITE && OidIsValid(typ->typrelid))
	{
		Oid			relid = typ->typrelid;
		HeapTuple	reltup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));

		if (HeapTupleIsValid(reltup))
		{
			bool		stand_alone = ((Form_pg_class) GETSTRUCT(reltup))->relkind == RELKIND_COMPOSITE_TYPE;

			ReleaseSysCache(reltup);
			if (!stand_alone && !owner_of_lineage(owner, relid, 0))
				found = relid;
		}
		if (!OidIsValid(found))
			found = foreign_row_type_in(relid, owner, depth + 1);
	}
	ReleaseSysCache(tup);
	return found;
}

/* foreign_row_type() of each of relid's columns. */
static Oid
foreign_row_type_in(Oid relid, Oid owner, int depth)
{
	Relation	attrel = table_open(AttributeRelationId, AccessShareLock);
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tup;
	Oid			found = InvalidOid;

	ScanKeyInit(&key, Anum_pg_attribute_attrelid, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(relid));
	scan = systable_beginscan(attrel, AttributeRelidNumIndexId, true, NULL, 1, &key);
	while (!OidIsValid(found) && HeapTupleIsValid(tup = systable_getnext(scan)))
	{
		Form_pg_attribute att = (Form_pg_attribute) GETSTRUCT(tup);

		if (att->attnum > 0 && !att->attisdropped)
			found = foreign_row_type(att->atttypid, owner, depth);
	}
	systable_endscan(scan);
	table_close(attrel, AccessShareLock);
	return found;
}

/*
 * A ledger table holding a table's or view's row type keeps that
 * relation's columns from being added, dropped or altered (the guard
 * above), which PostgreSQL itself allows; so its owner must have the
 * privileges of that relation's owner, who could alter it anyway.  Else
 * any role with USAGE on the row type (PUBLIC's by default) could freeze
 * another owner's table with a column of its own ledger table.  protect()
 * asks this, and ledger_type_guard_after() of the columns an ALTER TABLE
 * adds to a ledger table, and of all its columns when it gets a new owner.
 */
void
ledger_refuse_foreign_row_types(Oid relid)
{
	refuse_foreign_row_type(relid, foreign_row_type_in(relid, relation_owner(relid), 0));
}

static void
refuse_foreign_row_type(Oid relid, Oid held_relid)
{
	if (OidIsValid(held_relid))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("ledger table %s cannot hold the row type of %s", relation_qualified_name(relid),
						relation_qualified_name(held_relid)),
				 errdetail("The ledger table's owner does not have the privileges of the owner of %s "
						   "(or of a table it inherits from or is a partition of), "
						   "whose columns could no longer be added, dropped or altered.",
						   relation_qualified_name(held_relid)),
				 errhint("Use a composite type (CREATE TYPE ... AS), or a table the ledger table's owner owns.")));
}

/*
 * What the utility command running at this level of nesting did (object
 * access hook below), in the current transaction: the columns it added
 * (attnum > 0, added), the columns it altered otherwise (attnum > 0) and
 * the relations it altered (attnum 0).  The checks after the command go by
 * these, not by the command's table name looked up again: a function the
 * command ran (a CHECK constraint's, a volatile default's) may have changed
 * search_path, and the name would then find another table or none.  Each
 * level has its own list (ledger_type_guard_begin() and _end()), so a
 * command such a function runs, and whose error it may catch, neither
 * takes the enclosing command's events nor leaves its own behind.
 */
typedef struct Touched
{
	Oid			classid;		/* pg_class, or the catalog of another object */
	Oid			relid;			/* (or that object) */
	int			attnum;			/* 0: the relation itself */
	bool		added;			/* a new column (OAT_POST_CREATE) */
} Touched;

static List *touched = NIL;
static LocalTransactionId touched_lxid = InvalidLocalTransactionId;

/* This level's list: empty if it was made in another transaction (and freed with it). */
static List *
touched_now(void)
{
	return touched_lxid == MyProc->lxid ? touched : NIL;
}

static void
note_touched(Oid classid, Oid relid, int attnum, bool added)
{
	MemoryContext old;
	Touched    *t;

	touched = touched_now();
	touched_lxid = MyProc->lxid;
	old = MemoryContextSwitchTo(TopTransactionContext);
	t = palloc(sizeof(Touched));
	t->classid = classid;
	t->relid = relid;
	t->attnum = attnum;
	t->added = added;
	touched = lappend(touched, t);
	MemoryContextSwitchTo(old);
}

/*
 * Oid-valued fields of the catalog row of objid (found through the
 * catalog's oid index), into values; false when the row is not there.
 */
static bool
catalog_oid_fields(Oid classid, Oid indexid, AttrNumber oidcol, Oid objid,
				   int nfields, const AttrNumber *fields, Oid *values)
{
	Relation	catalog = table_open(classid, AccessShareLock);
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tup;
	bool		found;

	ScanKeyInit(&key, oidcol, BTEqualStrategyNumber, F_OIDEQ, ObjectIdGetDatum(objid));
	scan = systable_beginscan(catalog, indexid, true, NULL, 1, &key);
	found = HeapTupleIsValid(tup = systable_getnext(scan));
	for (int i = 0; i < nfields; i++)
	{
		bool		isnull = true;
		Datum		d = found ? heap_getattr(tup, fields[i], RelationGetDescr(catalog), &isnull) : (Datum) 0;

		values[i] = isnull ? InvalidOid : DatumGetObjectId(d);
	}
	systable_endscan(scan);
	table_close(catalog, AccessShareLock);
	return found;
}

/* The catalogs of objects that belong to a relation, and where they name it. */
static const struct
{
	Oid			classid;
	Oid			indexid;
	AttrNumber	oidcol;
	AttrNumber	relcol;
}			owned_by_relation[] =
{
	{RewriteRelationId, RewriteOidIndexId, Anum_pg_rewrite_oid, Anum_pg_rewrite_ev_class},
	{AttrDefaultRelationId, AttrDefaultOidIndexId, Anum_pg_attrdef_oid, Anum_pg_attrdef_adrelid},
	{TriggerRelationId, TriggerOidIndexId, Anum_pg_trigger_oid, Anum_pg_trigger_tgrelid},
	{PolicyRelationId, PolicyOidIndexId, Anum_pg_policy_oid, Anum_pg_policy_polrelid},
};

/*
 * The relation a rule, column default, trigger or policy belongs to
 * (*found false when the object is gone); InvalidOid for another class.
 */
static Oid
owning_relation(Oid classid, Oid objid, bool *found)
{
	Oid			relid = InvalidOid;

	*found = true;
	for (size_t i = 0; i < lengthof(owned_by_relation); i++)
		if (owned_by_relation[i].classid == classid)
			*found = catalog_oid_fields(classid, owned_by_relation[i].indexid, owned_by_relation[i].oidcol,
										objid, 1, &owned_by_relation[i].relcol, &relid);
	return relid;
}

/*
 * Whether the object an event names lies outside the temporary schemas
 * (or is of a class not told apart here): only a change there can make a
 * lasting object depend on a temporary one.  A rule, column default,
 * trigger or policy lies where its relation does; an object of a catalog
 * with a namespace column (a constraint, an operator, a collation, ...)
 * in its namespace.  A relation, function or type gone again (a rewrite's
 * transient table) counts as temporary; another object not found, as
 * lasting.  (A command whose events are all temporary takes
 * no guard's lock: a temporary view, a temporary table's default, check
 * or trigger, made by a role with no right but TEMP, would otherwise hold
 * up every protect() and ledger-table migration.)
 */
static bool
event_outside_temp(const Touched *e)
{
	Oid			nsp;
	Oid			owner;
	bool		found;

	if (OidIsValid(owner = owning_relation(e->classid, e->relid, &found)) || !found)
	{
		if (!found)
			return true;		/* (not seen: judged as lasting) */
		nsp = get_rel_namespace(owner);
	}
	else if (e->classid == CastRelationId)
	{
		/* a cast from or to a temporary type: no ledger column holds either */
		static const AttrNumber types[2] = {Anum_pg_cast_castsource, Anum_pg_cast_casttarget};
		Oid			typids[2];

		found = catalog_oid_fields(CastRelationId, CastOidIndexId, Anum_pg_cast_oid, e->relid,
								   2, types, typids);
		return !found || !(temporary_type(typids[0]) || temporary_type(typids[1]));
	}
	else if (e->classid == DefaultAclRelationId)
	{
		/* default privileges in one schema (0: in every schema) */
		static const AttrNumber field = Anum_pg_default_acl_defaclnamespace;

		found = catalog_oid_fields(DefaultAclRelationId, DefaultAclOidIndexId, Anum_pg_default_acl_oid,
								   e->relid, 1, &field, &nsp);
		if (!found || !OidIsValid(nsp))
			return true;
	}
	else if (e->classid == RelationRelationId)
		nsp = get_rel_namespace(e->relid);
	else if (e->classid == ProcedureRelationId)
		nsp = get_func_namespace(e->relid);
	else if (e->classid == TypeRelationId)
	{
		HeapTuple	tup = SearchSysCache1(TYPEOID, ObjectIdGetDatum(e->relid));

		if (!HeapTupleIsValid(tup))
			return false;
		nsp = ((Form_pg_type) GETSTRUCT(tup))->typnamespace;
		ReleaseSysCache(tup);
	}
	else if (is_objectclass_supported(e->classid) &&
			 get_object_attnum_namespace(e->classid) != InvalidAttrNumber &&
			 get_object_catcache_oid(e->classid) != -1)
	{
		int			cache = get_object_catcache_oid(e->classid);
		HeapTuple	tup = SearchSysCache1(cache, ObjectIdGetDatum(e->relid));
		bool		isnull;
		Datum		d;

		if (!HeapTupleIsValid(tup))
			return true;
		d = SysCacheGetAttr(cache, tup, get_object_attnum_namespace(e->classid), &isnull);
		nsp = isnull ? InvalidOid : DatumGetObjectId(d);
		ReleaseSysCache(tup);
		if (!OidIsValid(nsp))
			return true;
	}
	else
		return true;
	return OidIsValid(nsp) && !isAnyTempNamespace(nsp);
}

/*
 * What PostgreSQL will drop with the temporary schemas (this session's and
 * every other's) when their sessions end: everything that depends on it, at any depth, through any
 * kind of dependency (it drops with CASCADE), and the whole of any object
 * something dropped is an internal part of (a view for its _RETURN rule, a
 * generated column for its expression, a type for its array type).  The
 * ledger table (or candidate, a table being protected) that would lose a
 * column, or the whole table, or a column of a relation whose row type a
 * ledger table holds; InvalidOid if none.
 * Following PostgreSQL's own direction of deletion reaches what a walk
 * over chosen kinds of objects from the ledger tables would miss
 * (operators, views' rules, text search configurations, ...).
 */
static Oid
temporary_schemas_take(List *registry, Oid candidate)
{
	HASHCTL		ctl;
	HTAB	   *seen;
	List	   *work = NIL;
	Relation	deprel;
	Relation	nsprel;
	TableScanDesc nspscan;
	HeapTuple	nsptup;
	Oid			hit = InvalidOid;

	ctl.keysize = sizeof(ObjectAddress);
	ctl.entrysize = sizeof(ObjectAddress);
	ctl.hcxt = CurrentMemoryContext;
	seen = hash_create("ehrledger temporary closure", 256, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	/* every session's temporary schemas (and those of sessions that crashed) */
	nsprel = table_open(NamespaceRelationId, AccessShareLock);
	nspscan = table_beginscan_catalog(nsprel, 0, NULL);
	while ((nsptup = heap_getnext(nspscan, ForwardScanDirection)) != NULL)
	{
		Oid			nsp = ((Form_pg_namespace) GETSTRUCT(nsptup))->oid;

		if (isAnyTempNamespace(nsp))
		{
			ObjectAddress *start = palloc(sizeof(ObjectAddress));

			start->classId = NamespaceRelationId;
			start->objectId = nsp;
			start->objectSubId = 0;
			(void) hash_search(seen, start, HASH_ENTER, NULL);
			work = lappend(work, start);
		}
	}
	table_endscan(nspscan);
	table_close(nsprel, AccessShareLock);
	deprel = table_open(DependRelationId, AccessShareLock);
	/* (the walk ends: each object is visited once) */
	while (work != NIL && !OidIsValid(hit))
	{
		ObjectAddress *x = linitial(work);
		ScanKeyData keys[3];
		SysScanDesc scan;
		HeapTuple	tup;
		int			pass;

		work = list_delete_first(work);
		CHECK_FOR_INTERRUPTS();
		if (x->classId == RelationRelationId)
		{
			LedgerTable *t = ledger_table_or_history(registry, x->objectId);
			Oid			which;

			if ((t != NULL && !t->retired) || x->objectId == candidate)
				hit = t != NULL ? t->relid : candidate;
			else if (x->objectSubId > 0)
				hit = table_holding_rows_of(x->objectId, &which);
			if (OidIsValid(hit))
				break;
		}
		/* pass 0: what depends on x; pass 1: the whole of what x is an internal part of */
		for (pass = 0; pass < 2; pass++)
		{
			int			nkeys = 2;

			ScanKeyInit(&keys[0], pass == 0 ? Anum_pg_depend_refclassid : Anum_pg_depend_classid,
						BTEqualStrategyNumber, F_OIDEQ, ObjectIdGetDatum(x->classId));
			ScanKeyInit(&keys[1], pass == 0 ? Anum_pg_depend_refobjid : Anum_pg_depend_objid,
						BTEqualStrategyNumber, F_OIDEQ, ObjectIdGetDatum(x->objectId));
			if (x->objectSubId != 0)
			{
				ScanKeyInit(&keys[2], pass == 0 ? Anum_pg_depend_refobjsubid : Anum_pg_depend_objsubid,
							BTEqualStrategyNumber, F_INT4EQ, Int32GetDatum(x->objectSubId));
				nkeys = 3;
			}
			scan = systable_beginscan(deprel, pass == 0 ? DependReferenceIndexId : DependDependerIndexId,
									  true, NULL, nkeys, keys);
			while (HeapTupleIsValid(tup = systable_getnext(scan)))
			{
				Form_pg_depend dep = (Form_pg_depend) GETSTRUCT(tup);
				ObjectAddress next;
				bool		found;

				if (pass == 0)
				{
					next.classId = dep->classid;
					next.objectId = dep->objid;
					next.objectSubId = dep->objsubid;
				}
				else
				{
					if (dep->deptype != DEPENDENCY_INTERNAL && dep->deptype != DEPENDENCY_PARTITION_PRI)
						continue;
					next.classId = dep->refclassid;
					next.objectId = dep->refobjid;
					next.objectSubId = dep->refobjsubid;
				}
				(void) hash_search(seen, &next, HASH_ENTER, &found);
				if (!found)
				{
					ObjectAddress *n = palloc(sizeof(ObjectAddress));

					*n = next;
					work = lappend(work, n);
				}
			}
			systable_endscan(scan);
		}
	}
	table_close(deprel, AccessShareLock);
	hash_destroy(seen);
	return hit;
}

/*
 * Two sessions could each pass the temporary-schema walk while the other's
 * link of a chain is still uncommitted (one makes a function depend on its
 * temporary function, the other adds a ledger column of a table whose
 * generated column uses that function), and together build what neither
 * would have been let build.  So a command that adds to a ledger table, or
 * makes a lasting object depend on a temporary one, and protect(), take
 * this lock (on the extension, self-conflicting, to the transaction's end)
 * before they walk, and walk a fresh catalog: the second waits for the
 * first to end and then sees what it did.
 */
static void
guard_serialize(void)
{
	Oid			ext = get_extension_oid("ehrledger", true);

	if (OidIsValid(ext))
		LockDatabaseObject(ExtensionRelationId, ext, 0, ShareUpdateExclusiveLock);
	InvalidateCatalogSnapshot();
}

static Oid
type_namespace(Oid typid)
{
	HeapTuple	tup = SearchSysCache1(TYPEOID, ObjectIdGetDatum(typid));
	Oid			nsp = InvalidOid;

	if (HeapTupleIsValid(tup))
	{
		nsp = ((Form_pg_type) GETSTRUCT(tup))->typnamespace;
		ReleaseSysCache(tup);
	}
	return nsp;
}

/*
 * Whether typid is a type of a temporary schema, any session's.  No ledger
 * column can hold one, whatever its labels, attributes or name (the guard
 * refuses a ledger table that would depend on a temporary object), and
 * PostgreSQL moves no type out of a temporary schema; so a change to it
 * takes no guard's lock.  Else a role with no right but TEMP on the
 * database could take the lock in an open transaction (renaming a label of
 * its own temporary enum) and hold up every protect() and every migration
 * of a ledger table.
 */
static bool
temporary_type(Oid typid)
{
	return isAnyTempNamespace(type_namespace(typid));
}

/* The guard's lock before a change to typid is judged, unless typid is temporary. */
static void
guard_serialize_for(Oid typid)
{
	if (!temporary_type(typid))
		guard_serialize();
}

/*
 * Whether a column, a table or a type other than its own array type (a
 * domain, a range, a composite's attribute, a typed table) depends on
 * typid, committed or not: a dirty snapshot sees what an open transaction
 * is adding.  (A function returning the type cannot make a ledger column
 * hold its values, and does not count.)
 */
static bool
has_dependents(Oid typid, Oid except)
{
	SnapshotData dirty;
	Relation	deprel = table_open(DependRelationId, AccessShareLock);
	ScanKeyData keys[2];
	SysScanDesc scan;
	HeapTuple	tup;
	bool		found = false;

	InitDirtySnapshot(dirty);
	ScanKeyInit(&keys[0], Anum_pg_depend_refclassid, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(TypeRelationId));
	ScanKeyInit(&keys[1], Anum_pg_depend_refobjid, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(typid));
	scan = systable_beginscan(deprel, DependReferenceIndexId, true, &dirty, 2, keys);
	while (!found && (tup = systable_getnext(scan)) != NULL)
	{
		Form_pg_depend d = (Form_pg_depend) GETSTRUCT(tup);

		found = (d->classid == RelationRelationId || d->classid == TypeRelationId) &&
			!(d->classid == TypeRelationId && d->objid == except);
	}
	systable_endscan(scan);
	table_close(deprel, AccessShareLock);
	return found;
}

/*
 * Before a command that would re-encode values of typid (or of its array
 * type) is judged: when anything could hold such values, even in a
 * transaction still open, it takes the guard's lock first (which an ADD
 * COLUMN of a ledger table and protect() hold to their transaction's end),
 * then judges the catalog as it is once that transaction has ended.  Else
 * an ALTER TYPE or RENAME VALUE judged while another session's new ledger
 * column of the type was uncommitted went through once it committed, and
 * the sealed rows stopped verifying.
 */
static void
serialize_if_used(Oid typid)
{
	Oid			array = OidIsValid(typid) ? get_array_type(typid) : InvalidOid;

	if (OidIsValid(typid) && !temporary_type(typid) &&
		(has_dependents(typid, array) || (OidIsValid(array) && has_dependents(array, InvalidOid))))
		guard_serialize();
}

/*
 * protect() asks this of the table it is about to protect: a table that
 * depends on something a temporary schema would take with it (through an
 * operator, a view's rule, ... that ledger_refuse_temporary_dependencies()
 * does not follow) is refused, whichever session's schema it is.
 */
void
ledger_refuse_temporary_schemas(Oid relid)
{
	Oid			taken;

	guard_serialize();
	taken = temporary_schemas_take(guard_registry(), relid);

	if (OidIsValid(taken))
		refuse_temporary(taken);
}

/* Before a utility command: it starts a list of its own; the enclosing one's is returned. */
TouchedLevel
ledger_type_guard_begin(void)
{
	TouchedLevel outer;

	outer.list = touched_now();
	outer.lxid = MyProc->lxid;
	touched = NIL;
	touched_lxid = MyProc->lxid;
	return outer;
}

/*
 * After the command, done or failed: its list goes (checked, or undone with
 * it) and the enclosing command's comes back, unless the transaction it
 * was made in has ended since (a procedure's COMMIT).
 */
void
ledger_type_guard_end(TouchedLevel outer)
{
	touched = outer.lxid == MyProc->lxid ? outer.list : NIL;
	touched_lxid = MyProc->lxid;
}

/* Whether stmt gives its table a new owner. */
static bool
changes_owner(AlterTableStmt *stmt)
{
	ListCell   *lc;

	foreach(lc, stmt->cmds)
		if (((AlterTableCmd *) lfirst(lc))->subtype == AT_ChangeOwner)
			return true;
	return false;
}

/*
 * Called after every utility command, between ledger_type_guard_begin()
 * and _end().  A ledger table whose columns it added or altered, or that it
 * altered otherwise (or that the ALTER TABLE's name reaches), must not
 * have come to depend on a temporary object (a column's type, collation or
 * generation expression, at any depth).  The columns it added must not
 * hold another owner's row type (ledger_refuse_foreign_row_types()), nor
 * may any column once the table has a new owner.  (A ledger column cannot
 * be retyped: the event trigger refuses it.)
 */
void
ledger_type_guard_after(Node *parsetree, Oid altered)
{
	List	   *events = touched_now();
	List	   *lasting = NIL;	/* the events outside pg_temp */
	List	   *relids = NIL;
	ListCell   *lc;
	List	   *registry;
	bool		new_owner = IsA(parsetree, AlterTableStmt) && changes_owner((AlterTableStmt *) parsetree);
	bool		serialize = false;
	bool		view;

	if (OidIsValid(altered) && get_rel_relkind(altered) != '\0')
		relids = find_all_inheritors(altered, NoLock, NULL);
	foreach(lc, events)
	{
		Touched    *e = lfirst(lc);

		if (e->classid == RelationRelationId)
			relids = list_append_unique_oid(relids, e->relid);
		if (event_outside_temp(e))
			lasting = lappend(lasting, e);
	}
	if (inherits_something(parsetree) && ledger_schema_installed())
		refuse_new_children(guard_registry());
	if ((relids == NIL && lasting == NIL) || !ledger_schema_installed())
		return;
	registry = guard_registry();
	/* (see guard_serialize(); then the registry is read again, after the lock) */
	foreach(lc, relids)
		if (!serialize && ledger_table_or_history(registry, lfirst_oid(lc)) != NULL)
			serialize = true;
	foreach(lc, lasting)
	{
		Touched    *e = lfirst(lc);
		List	   *seen = NIL;

		if (!serialize && depends_on_temporary(e->classid, e->relid, &seen, 0))
			serialize = true;
	}
	if (serialize)
	{
		guard_serialize();
		registry = guard_registry();
	}
	/*
	 * A lasting object made or changed by the command (a domain's default,
	 * a function's body or parameter default, a view, an operator, a text
	 * search configuration, a ledger table's new column) may now depend on
	 * a temporary one, this session's or another's, and a ledger column on
	 * it: what the temporary schemas would take with them at their
	 * sessions' end is refused now.
	 */
	if (lasting != NIL)
	{
		Oid			taken = temporary_schemas_take(registry, InvalidOid);

		if (OidIsValid(taken))
			refuse_temporary(taken);
	}
	foreach(lc, relids)
	{
		LedgerTable *t = ledger_table_or_history(registry, lfirst_oid(lc));

		if (t == NULL || get_rel_relkind(lfirst_oid(lc)) == '\0')
			continue;
		ledger_refuse_temporary_dependencies(t->relid);
		if (OidIsValid(t->history_relid))
			ledger_refuse_temporary_dependencies(t->history_relid);
		if (new_owner)
			ledger_refuse_foreign_row_types(t->relid);
	}
	foreach(lc, events)
	{
		Touched    *e = lfirst(lc);
		LedgerTable *t;
		Oid			typid;

		if (!e->added || e->classid != RelationRelationId ||
			(t = ledger_table_or_history(registry, e->relid)) == NULL ||
			!OidIsValid(typid = get_atttype(e->relid, (AttrNumber) e->attnum)))
			continue;
		refuse_foreign_row_type(t->relid, foreign_row_type(typid, relation_owner(t->relid), 0));
	}

	/*
	 * Judged again now that the command holds its locks: a column added to
	 * or changed in a relation whose row type a ledger table holds.  Before
	 * the command, a table still joining the altered one's hierarchy in an
	 * open transaction (ALTER TABLE ... INHERIT, ATTACH PARTITION) was not
	 * among those its change reaches; the command reaches it once that
	 * transaction has committed and it has the lock.  (The commands
	 * ledger_type_guard() judges; renames of columns and attributes are
	 * allowed.)  A CREATE OR REPLACE VIEW is judged here only, by the view
	 * it gave new columns: before the command, its name could not tell
	 * which view that would be (a permanent one while a temporary one of
	 * the name is first in search_path, or a temporary one PostgreSQL
	 * makes of a query that reads a temporary table); its lock comes
	 * first (see serialize_if_used()).
	 */
	view = IsA(parsetree, ViewStmt) && ((ViewStmt *) parsetree)->replace;
	if (!view &&
		(!IsA(parsetree, AlterTableStmt) ||
		 !(((AlterTableStmt *) parsetree)->objtype == OBJECT_TYPE ||
		   changes_columns((AlterTableStmt *) parsetree))))
		return;
	foreach(lc, events)
	{
		Touched    *e = lfirst(lc);
		Oid			typid;
		HeldType   *h;

		if (e->classid != RelationRelationId || e->attnum <= 0 ||
			!OidIsValid(typid = get_rel_type_id(e->relid)))
			continue;
		if (view)
			serialize_if_used(typid);
		if ((h = held_type(typid)) != NULL)
			refuse_held_change(e->relid, h->holder, e->relid);
	}
}

/* "its row type", or "the row type of" the descendant whose it is. */
static char *
row_type_of(Oid relid, Oid which)
{
	return which == relid ? "its row type" : psprintf("the row type of %s", relation_qualified_name(which));
}


/* ALTER EXTENSION ... SET SCHEMA moves its types: the same rule. */
static void
refuse_extension_move(Oid ext)
{
	Relation	deprel;
	ScanKeyData keys[2];
	SysScanDesc scan;
	HeapTuple	tup;
	Oid			found = InvalidOid;
	Oid			holder = InvalidOid;

	if (!OidIsValid(ext) || !ledger_schema_installed())
		return;
	deprel = table_open(DependRelationId, AccessShareLock);
	ScanKeyInit(&keys[0], Anum_pg_depend_refclassid, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(ExtensionRelationId));
	ScanKeyInit(&keys[1], Anum_pg_depend_refobjid, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(ext));
	held_refresh();
	scan = systable_beginscan(deprel, DependReferenceIndexId, true, NULL, 2, keys);
	while (HeapTupleIsValid(tup = systable_getnext(scan)))
	{
		Form_pg_depend dep = (Form_pg_depend) GETSTRUCT(tup);
		HeldType   *h;

		if (dep->deptype == DEPENDENCY_EXTENSION && dep->classid == TypeRelationId &&
			(h = held_lookup(dep->objid)) != NULL && h->named &&
			(!OidIsValid(found) || dep->objid < found))
		{
			found = dep->objid;
			holder = h->holder;
		}
	}
	systable_endscan(scan);
	table_close(deprel, AccessShareLock);
	if (OidIsValid(found))
		ereport(ERROR,
				(errcode(ERRCODE_LEDGER_SCHEMA_GUARD),
				 errmsg("cannot move extension %s: ledger table %s has a column of its type %s",
						get_extension_name(ext), relation_qualified_name(holder), format_type_be_qualified(found)),
				 errdetail("The schema guard knows the ledger's columns by their types' names.")));
}

/*
 * The type names reach once the guard's lock is held: PostgreSQL takes no
 * lock on a type, so the name may reach another one than before the wait
 * (a type of the name earlier in search_path dropped meanwhile), and the
 * command will act on that one; its lock too, then.
 */
static Oid
type_again(List *names, Oid typid)
{
	Oid			now = LookupTypeNameOid(NULL, makeTypeNameFromNameList(names), true);

	if (!OidIsValid(now) || now == typid)
		return typid;
	guard_serialize_for(now);
	return now;
}

/*
 * The row type of the relation a RENAME or SET SCHEMA names, as the
 * command will look it up: with its lock (ACCESS EXCLUSIVE, the owner's
 * check first), so that the name cannot come to reach another relation
 * meanwhile.  The guard's lock comes first where the name reached a used
 * row type without a lock, as for every taker of both.
 */
static Oid
row_type_locked(RangeVar *rv, ObjectType objtype, bool missing_ok, Oid *relid)
{
	Oid			guess = RangeVarGetRelid(rv, NoLock, true);
	Oid			typid;
	char		kind = OidIsValid(guess) ? get_rel_relkind(guess) : '\0';

	*relid = guess;

	/*
	 * (an index has no row type: ALTER INDEX ... RENAME of one takes its own,
	 * weaker lock; and where the statement names another kind of relation,
	 * ALTER VIEW of a table say, PostgreSQL refuses it before any lock)
	 */
	if (!guard_locks_names() || kind == RELKIND_INDEX || kind == RELKIND_PARTITIONED_INDEX ||
		(objtype == OBJECT_VIEW && kind != RELKIND_VIEW) ||
		(objtype == OBJECT_MATVIEW && kind != RELKIND_MATVIEW) ||
		(objtype == OBJECT_FOREIGN_TABLE && kind != RELKIND_FOREIGN_TABLE) ||
		(objtype == OBJECT_SEQUENCE && kind != RELKIND_SEQUENCE))
		return OidIsValid(guess) ? get_rel_type_id(guess) : InvalidOid;
	if (OidIsValid(guess))
		serialize_if_used(get_rel_type_id(guess));
	*relid = RangeVarGetRelidExtended(rv, AccessExclusiveLock, missing_ok ? RVR_MISSING_OK : 0,
									  RangeVarCallbackOwnsRelation, NULL);
	typid = OidIsValid(*relid) ? get_rel_type_id(*relid) : InvalidOid;
	if (*relid != guess && OidIsValid(typid))
		serialize_if_used(typid);
	return typid;
}

/*
 * The schema guard records a column's type by name (format_type()): a
 * type a ledger column is declared with (or an array of) keeps its name
 * and schema.  ALTER TYPE ... SET (SEND = ...) of a held type would change
 * how its values encode.
 */
static void
refuse_type_rename(Node *parsetree)
{
	Oid			typid = InvalidOid;
	Oid			nsp = InvalidOid;
	HeldType   *h;
	const char *how = NULL;
	bool		of_type = false;	/* a type's or domain's own command */
	RangeVar   *rv = NULL;			/* a relation's RENAME or SET SCHEMA */
	Oid			relid = InvalidOid;

	if (IsA(parsetree, RenameStmt))
	{
		RenameStmt *stmt = (RenameStmt *) parsetree;

		if ((of_type = (stmt->renameType == OBJECT_TYPE || stmt->renameType == OBJECT_DOMAIN)))
			typid = LookupTypeNameOid(NULL, makeTypeNameFromNameList(castNode(List, stmt->object)), true);
		else if (stmt->renameType == OBJECT_SCHEMA)
			nsp = get_namespace_oid(stmt->subname, true);
		else if (stmt->relation != NULL &&
				 (stmt->renameType == OBJECT_TABLE || stmt->renameType == OBJECT_VIEW ||
				  stmt->renameType == OBJECT_FOREIGN_TABLE || stmt->renameType == OBJECT_MATVIEW ||
				  stmt->renameType == OBJECT_INDEX || stmt->renameType == OBJECT_SEQUENCE))
		{
			/* (ALTER INDEX and ALTER SEQUENCE rename a table too: by what the name reaches) */
			rv = stmt->relation;
			typid = row_type_locked(rv, stmt->renameType, stmt->missing_ok, &relid);
		}
		how = "rename";
	}
	else if (IsA(parsetree, AlterObjectSchemaStmt))
	{
		AlterObjectSchemaStmt *stmt = (AlterObjectSchemaStmt *) parsetree;

		if ((of_type = (stmt->objectType == OBJECT_TYPE || stmt->objectType == OBJECT_DOMAIN)))
			typid = LookupTypeNameOid(NULL, makeTypeNameFromNameList(castNode(List, stmt->object)), true);
		else if (stmt->objectType == OBJECT_EXTENSION)
		{
			refuse_extension_move(get_extension_oid(strVal(stmt->object), true));
			return;
		}
		else if (stmt->relation != NULL)
		{
			rv = stmt->relation;
			typid = row_type_locked(rv, stmt->objectType, stmt->missing_ok, &relid);
		}
		how = "move";
	}
	else if (IsA(parsetree, AlterTypeStmt))
	{
		List	   *names = ((AlterTypeStmt *) parsetree)->typeName;

		typid = LookupTypeNameOid(NULL, makeTypeNameFromNameList(names), true);
		if (!OidIsValid(typid) || !ledger_schema_installed())
			return;
		guard_serialize_for(typid);
		typid = type_again(names, typid);
		if ((h = held_type(typid)) != NULL)
			ereport(ERROR,
					(errcode(ERRCODE_LEDGER_SCHEMA_GUARD),
					 errmsg("cannot change the properties of type %s: ledger table %s holds values of it",
							format_type_be_qualified(typid), relation_qualified_name(h->holder)),
					 errdetail("Sealed rows were hashed with its send function's output.")));
		return;
	}
	if ((!OidIsValid(typid) && !OidIsValid(nsp)) || !ledger_schema_installed())
		return;
	if (OidIsValid(nsp))
	{
		HASH_SEQ_STATUS status;
		HeldType   *first = NULL;

		/* (the lowest OID, so that the message does not depend on hashing) */
		held_refresh();
		hash_seq_init(&status, held);
		while ((h = hash_seq_search(&status)) != NULL)
			if (h->named && type_namespace(h->typid) == nsp && (first == NULL || h->typid < first->typid))
				first = h;
		if (first != NULL)
			ereport(ERROR,
					(errcode(ERRCODE_LEDGER_SCHEMA_GUARD),
					 errmsg("cannot rename schema %s: ledger table %s has a column of its type %s",
							get_namespace_name(nsp), relation_qualified_name(first->holder),
							format_type_be_qualified(first->typid)),
					 errdetail("The schema guard knows the ledger's columns by their types' names.")));
		return;
	}
	/*
	 * PostgreSQL locks a relation's row type where a column takes it
	 * (CheckAttributeType()), so a relation's rename waits for an open
	 * transaction adding such a column; no lock covers a type of CREATE
	 * TYPE or DOMAIN: its rename takes the guard's lock whatever uses it,
	 * so that a ledger column added meanwhile waits (ledger_type_guard())
	 * and records the new name.
	 */
	if (of_type)
	{
		guard_serialize_for(typid);
		typid = type_again(castNode(List, IsA(parsetree, RenameStmt) ? ((RenameStmt *) parsetree)->object
										: ((AlterObjectSchemaStmt *) parsetree)->object), typid);
	}
	if ((h = held_type(typid)) != NULL && h->named)
		ereport(ERROR,
				(errcode(ERRCODE_LEDGER_SCHEMA_GUARD),
				 errmsg("cannot %s type %s: ledger table %s has a column of it",
						how, format_type_be_qualified(typid), relation_qualified_name(h->holder)),
				 errdetail("The schema guard knows the ledger's columns by their types' names.")));
	if (rv != NULL && guard_locks_names())
		refuse_moved_name(rv, relid);
}

/* Refuses a change to the columns of relid, whose row type (or which's) holder holds. */
static void
refuse_held_change(Oid relid, Oid holder, Oid which)
{
	if (get_rel_relkind(relid) == RELKIND_COMPOSITE_TYPE)
		ereport(ERROR,
				(errcode(ERRCODE_LEDGER_SCHEMA_GUARD),
				 errmsg("cannot change the attributes of type %s: ledger table %s holds values of %s",
						format_type_be_qualified(get_rel_type_id(relid)), relation_qualified_name(holder),
						which == relid ? "it" : psprintf("the row type of %s, typed by it", relation_qualified_name(which))),
				 errdetail("Sealed rows were hashed with its attributes: they would no longer verify."),
				 errhint("Create a new type, and add a column of it to the table.")));
	else
		ereport(ERROR,
				(errcode(ERRCODE_LEDGER_SCHEMA_GUARD),
				 errmsg("cannot change the columns of %s: ledger table %s holds values of %s",
						relation_qualified_name(relid), relation_qualified_name(holder), row_type_of(relid, which)),
				 errdetail("Sealed rows were hashed with its columns: they would no longer verify.")));
}

/*
 * The relations whose columns an ALTER TABLE (or ALTER TYPE) of relid
 * changes: ALTER TABLE ONLY reaches relid alone (PostgreSQL refuses it
 * where children would have to follow; a column dropped ONLY stays in
 * them).
 */
static List *
reached_by(AlterTableStmt *stmt, Oid relid)
{
	if (stmt->objtype != OBJECT_TYPE && !stmt->relation->inh)
		return list_make1_oid(relid);
	return relations_reached(relid);
}

/*
 * The guard's lock before an ALTER TABLE (or ALTER TYPE) of relid is
 * judged, where relid is a ledger table, or where the command changes the
 * columns of relations whose row types something uses (serialize_if_used());
 * returns those relations (reached_by()), NIL for another command.  An
 * ALTER TABLE of a ledger table takes the lock before it runs, not only
 * after (ledger_type_guard_after()): the event trigger records a new
 * column's type by name while the command runs, and a type's rename, label
 * rename or new send function still open in another transaction (which
 * holds the lock) must end first.
 */
static List *
serialize_alter(AlterTableStmt *stmt, Oid relid)
{
	List	   *reached = NIL;
	ListCell   *lc;

	if (!OidIsValid(relid) || !ledger_schema_installed())
		return NIL;
	if (ledger_table_or_history(guard_registry(), relid) != NULL)
		guard_serialize();
	if (stmt->objtype == OBJECT_TYPE || changes_columns(stmt))
	{
		reached = reached_by(stmt, relid);
		foreach(lc, reached)
			serialize_if_used(get_rel_type_id(lfirst_oid(lc)));
	}
	return reached;
}

/*
 * Whether the guard looks names up with the locks their commands will take
 * (see ledger_type_guard()): not where the extension is absent, nor where
 * PostgreSQL refuses the command anyway before it looks (a read-only
 * transaction, a standby), with its own error.
 */
static bool
guard_locks_names(void)
{
	return IsTransactionState() && !XactReadOnly && !RecoveryInProgress() &&
		ledger_schema_installed();
}

/*
 * After the guard's waits, the name must still reach relid: else the
 * command, looking it up again, would act on another relation than the one
 * judged (another transaction renamed one to that name meanwhile).
 */
static void
refuse_moved_name(const RangeVar *rv, Oid relid)
{
	if (OidIsValid(relid) && RangeVarGetRelid(rv, NoLock, true) != relid)
		ereport(ERROR,
				(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
				 errmsg("could not serialize access due to a concurrent change of what \"%s\" names",
						rv->relname),
				 errdetail("Another transaction renamed, dropped or created a relation of that name while this command waited."),
				 errhint("Retry the command.")));
}

/*
 * Whether an ALTER TABLE detaches a partition CONCURRENTLY (or finalizes
 * it): partitions.c's refuse_detach() judges those with their own locks,
 * and PostgreSQL refuses the first in a transaction block before it locks.
 */
static bool
detaches_concurrently(AlterTableStmt *stmt)
{
	ListCell   *lc;

	foreach(lc, stmt->cmds)
	{
		AlterTableCmd *cmd = lfirst(lc);

		if (cmd->subtype == AT_DetachPartitionFinalize ||
			(cmd->subtype == AT_DetachPartition && cmd->def != NULL &&
			 ((PartitionCmd *) cmd->def)->concurrent))
			return true;
	}
	return false;
}

/*
 * Called before every utility command: refuses ALTER TYPE ... ADD, DROP
 * or ALTER ATTRIBUTE and ALTER TYPE ... RENAME VALUE of a type a ledger
 * table holds values of, ALTER TABLE ... ADD, DROP or ALTER COLUMN of a
 * table whose row type (or a descendant's) a ledger table holds (a
 * CREATE OR REPLACE VIEW that adds columns to such a view is refused
 * after it: ledger_type_guard_after()).  altered is the relation an ALTER
 * TABLE names, as its name resolves before the command.
 */
static void
type_guard_before(Node *parsetree, Oid altered)
{
	Oid			which = InvalidOid;
	Oid			holder;
	List	   *reached = NIL;

	if (IsA(parsetree, AlterEnumStmt) && ((AlterEnumStmt *) parsetree)->oldVal != NULL)
	{
		Oid			typid = LookupTypeNameOid(NULL, makeTypeNameFromNameList(((AlterEnumStmt *) parsetree)->typeName),
											  true);

		if (!OidIsValid(typid) || !ledger_schema_installed())
			return;
		/* (no lock of PostgreSQL's covers an enum: see refuse_type_rename()) */
		guard_serialize_for(typid);
		typid = type_again(((AlterEnumStmt *) parsetree)->typeName, typid);
		if (OidIsValid(holder = table_holding(typid)))
			ereport(ERROR,
					(errcode(ERRCODE_LEDGER_SCHEMA_GUARD),
					 errmsg("cannot change the labels of type %s: ledger table %s holds values of it",
							format_type_be_qualified(typid), relation_qualified_name(holder)),
					 errdetail("Sealed rows were hashed with its labels: they would no longer verify."),
					 errhint("Add a value with ALTER TYPE ... ADD VALUE instead; existing labels stay as they are.")));
		return;
	}
	if (IsA(parsetree, AlterTableStmt))
	{
		refuse_ledger_alter((AlterTableStmt *) parsetree, altered);
		reached = serialize_alter((AlterTableStmt *) parsetree, altered);
	}
	if (create_stmt(parsetree) != NULL && create_stmt(parsetree)->partbound == NULL)
		refuse_inheriting(create_stmt(parsetree)->inhRelations);
	refuse_type_rename(parsetree);
	if (reached == NIL || !OidIsValid(holder = table_holding_rows_in(reached, &which)))
		return;

	refuse_held_change(altered, holder, which);
}

/*
 * Called before every utility command (type_guard_before()); returns the
 * relation an ALTER TABLE names, as its name resolves now, for
 * ledger_type_guard_after(): resolved again after the command, the name
 * could reach another relation (a function the command ran may have
 * changed search_path).
 */
Oid
ledger_type_guard(Node *parsetree)
{
	Oid			altered = InvalidOid;

	if (IsA(parsetree, AlterTableStmt) && guard_locks_names() &&
		!detaches_concurrently((AlterTableStmt *) parsetree))
	{
		AlterTableStmt *stmt = (AlterTableStmt *) parsetree;
		Oid			guess = RangeVarGetRelid(stmt->relation, NoLock, true);

		/*
		 * The guard's lock before the table's, as every taker of both (where
		 * the name reaches a ledger table, or a row type something uses, as
		 * type_guard_before() would take it); then the table as ALTER TABLE
		 * itself looks it up and locks it, so that the name cannot come to
		 * reach another table (a table of the name earlier in search_path
		 * dropped meanwhile) before the command.  The lock's wait may have
		 * changed the answer: then type_guard_before() takes the guard's
		 * lock after the table's, and the name is checked once more after
		 * every wait (refuse_moved_name()).
		 */
		(void) serialize_alter(stmt, guess);
		altered = AlterTableLookupRelation(stmt, AlterTableGetLockLevel(stmt->cmds));
		type_guard_before(parsetree, altered);
		refuse_moved_name(stmt->relation, altered);
		return altered;
	}
	if (IsA(parsetree, AlterTableStmt))
		altered = RangeVarGetRelid(((AlterTableStmt *) parsetree)->relation, NoLock, true);
	type_guard_before(parsetree, altered);
	return altered;
}

/*
 * A column dropped by a cascade (DROP TYPE or DROP DOMAIN ... CASCADE of a
 * composite type's attribute type) never passes through ALTER: a dropped
 * column of a relation whose row type a ledger table holds is refused as
 * it goes.  Each relation's own row type: a column a child or typed table
 * loses with its parent's or type's is dropped as an object of its own,
 * and one dropped ONLY from the parent stays in the children.  The ledger
 * tables' own columns are the event trigger's.
 */
static object_access_hook_type prev_object_access = NULL;

static void
type_guard_object_access(ObjectAccessType access, Oid classId, Oid objectId, int subId, void *arg)
{
	Oid			holder;
	Oid			which;

	if (prev_object_access)
		prev_object_access(access, classId, objectId, subId, arg);
	if ((access == OAT_POST_CREATE || access == OAT_POST_ALTER) && IsTransactionState())
	{
		/*
		 * For ledger_type_guard_after(): a column added or altered, a
		 * relation altered, any other object made or changed (ALTER DOMAIN,
		 * CREATE OR REPLACE FUNCTION or VIEW).  A relation made anew is seen
		 * through its columns and row type.
		 */
		if (classId != RelationRelationId)
			note_touched(classId, objectId, 0, false);
		else if (subId > 0 || (subId == 0 && access == OAT_POST_ALTER))
			note_touched(classId, objectId, subId, access == OAT_POST_CREATE);
		return;
	}
	if (access != OAT_DROP || classId != RelationRelationId || subId <= 0 ||
		(((ObjectAccessDrop *) arg)->dropflags & PERFORM_DELETION_INTERNAL) != 0 ||
		!ledger_schema_installed() || !OidIsValid(holder = table_holding_rows_in(list_make1_oid(objectId), &which)))
		return;
	ereport(ERROR,
			(errcode(ERRCODE_LEDGER_SCHEMA_GUARD),
			 errmsg("cannot drop column \"%s\" of %s: ledger table %s holds values of %s",
					get_attname(objectId, subId, false), relation_qualified_name(objectId), relation_qualified_name(holder),
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
