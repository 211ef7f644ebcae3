/*
 * seal.c
 *		Where committed rows are grouped into signed, hash-chained blocks.
 *
 * Writers never wait for each other or for the chain: each row is hashed on
 * its own when written.  Sealing later finds a horizon H below which every
 * row version is either committed or gone for good, in the way CREATE INDEX
 * CONCURRENTLY does:
 *
 *   1. Take the seal lock (ExclusiveLock on ehrledger.block; writers never
 *      touch that table, so they are not slowed).
 *   2. H = nextval(ehrledger.ledger_seq) - 1.  Every number up to H was
 *      handed out before this point, to an inserter that already held
 *      RowExclusiveLock on its table and, by the insert trigger, an xid.
 *   3. Wait for every transaction that holds a lock conflicting with
 *      ShareLock on a protected table and has an xid.  (Lockers without an
 *      xid, such as VACUUM, cannot hold a number up to H, so a long vacuum
 *      does not delay sealing.)  No session but a superuser's holds this
 *      up for longer than ehrledger.writer_timeout: then the sealer ends
 *      it, as pg_terminate_backend() would (see wait_bounded()).
 *   4. With a fresh snapshot, every committed row version numbered in
 *      (previous block's last_seq, H] is visible; seal exactly those.
 *
 * Blocks cover contiguous ranges of sequence numbers, so a row forged into
 * an already sealed range is detectable.  Aborted writers leave gaps, which
 * are harmless.
 *
 * A block sealed here goes on to the network's states (network.c's
 * network_block_sealed(), src/network/states.sql): this node acknowledges
 * it, and it becomes final with a quorum of acknowledgments.
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/relation.h"
#include "access/relscan.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_type.h"
#include "commands/sequence.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "parser/parse_relation.h"
#include "storage/lmgr.h"
#include "storage/lock.h"
#include "storage/proc.h"
#include "storage/sinvaladt.h"
#include "tcop/utility.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/resowner.h"

#include "core/ledger_core.h"
#include "ledger/ledger.h"
#include "network/network.h"

PG_FUNCTION_INFO_V1(ehrledger_seal);

typedef struct Leaf
{
	int64		seq;
	int32		table_id;
	uint8		hash[LEDGER_HASH_LEN];
} Leaf;

/* The newest block of this node's chain: where the next block links to. */
typedef struct ChainHead
{
	int64		height;
	int64		last_seq;
	uint8		block_hash[LEDGER_HASH_LEN];
	uint8		frontier[HISTORY_MAX_FRONTIER * LEDGER_HASH_LEN];
	int			frontier_count;
} ChainHead;

/* The first block a query (with the origin as $1) finds, or NULL. */
static StoredBlock *
first_block(const char *query, const char *origin, Snapshot snapshot)
{
	Oid			argtypes[1] = {TEXTOID};
	Datum		args[1];
	SPIPlanPtr	plan = SPI_prepare(query, 1, argtypes);
	StoredBlock *b = NULL;
	int			ret;

	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	args[0] = CStringGetTextDatum(origin);
	ret = SPI_execute_snapshot(plan, args, NULL, snapshot, InvalidSnapshot, true, false, 1);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "SPI_execute_snapshot failed: %s", SPI_result_code_string(ret));
	if (SPI_processed == 1)
	{
		b = palloc(sizeof(StoredBlock));
		if (!block_from_spi(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, b))
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("the newest block of \"%s\" has a malformed %s",
							b->h.origin, b->malformed),
					 errhint("Run ehrledger.verify() to see what was changed.")));
	}
	SPI_freeplan(plan);
	return b;
}

/* The newest block of this node's chain, read under the given snapshot. */
static ChainHead
chain_head(const char *origin, Snapshot snapshot)
{
	ChainHead	head;
	StoredBlock *b;

	memset(&head, 0, sizeof(head));
	b = first_block("SELECT " BLOCK_COLUMNS " FROM ehrledger.block"
					" WHERE origin = $1 ORDER BY height DESC LIMIT 1", origin, snapshot);
	if (b != NULL)
	{
		head.height = b->h.height;
		head.last_seq = b->h.last_seq;
		memcpy(head.block_hash, b->block_hash, LEDGER_HASH_LEN);
		memcpy(head.frontier, b->frontier, b->frontier_count * LEDGER_HASH_LEN);
		head.frontier_count = b->frontier_count;
		return head;
	}

	/*
	 * A node that takes over a ledger (a dump restored on another cluster,
	 * or a renamed node) starts its own chain where the previous node's
	 * ended: its first block links to that block and its range follows on.
	 */
	b = first_block("SELECT " BLOCK_COLUMNS " FROM ehrledger.block"
					" WHERE origin <> $1 AND origin IN (SELECT k.origin FROM ehrledger.node_key k)"
					" ORDER BY last_seq DESC LIMIT 1", origin, snapshot);
	if (b != NULL)
	{
		head.last_seq = b->h.last_seq;
		memcpy(head.block_hash, b->block_hash, LEDGER_HASH_LEN);
	}
	return head;
}

/*
 * Whether any number was handed out since the last block.  Each seal takes
 * one number itself (H + 1), so an idle ledger's sequence stands at exactly
 * the last block's last_seq + 1; then there is nothing to do, and an idle
 * sealer neither uses up numbers nor scans indexes.
 */
static bool
rows_may_be_pending(const ChainHead *head)
{
	int			ret;
	bool		isnull;
	Datum		last;

	if (head->height == 0)
		return true;
	ret = SPI_execute("SELECT pg_catalog.pg_sequence_last_value('ehrledger.ledger_seq')",
					  true, 1);
	if (ret != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not read ehrledger.ledger_seq: %s", SPI_result_code_string(ret));
	last = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	return isnull || DatumGetInt64(last) > head->last_seq + 1;
}

/*
 * Ends the session running vxid because it has held up sealing for
 * ehrledger.writer_timeout: with SIGTERM, as pg_terminate_backend() does,
 * and only where that would be allowed to the sealing role.  A superuser's
 * session, a prepared transaction and a process without a role are waited
 * for (with a warning): those are the DBA's to end.
 */
static void
end_holdout(VirtualTransactionId vxid, const char *what)
{
	PGPROC	   *proc = NULL;
	int			pid = 0;
	Oid			role = InvalidOid;

	if (!VirtualTransactionIdIsRecoveredPreparedXact(vxid))
		proc = BackendIdGetProc(vxid.backendId);
	if (proc != NULL && proc->lxid == vxid.localTransactionId)
	{
		pid = proc->pid;
		role = proc->roleId;
	}
	if (pid == 0 || !OidIsValid(role) || superuser_arg(role) ||
		(!has_privs_of_role(GetUserId(), role) &&
		 !has_privs_of_role(GetUserId(), ROLE_PG_SIGNAL_BACKEND)))
	{
		ereport(WARNING,
				(errmsg("sealing has waited %d ms for %s of %s",
						ehrledger_writer_timeout, what,
						pid != 0 ? psprintf("process %d", pid) : "a prepared transaction"),
				 errdetail("No row written after it can be sealed until it ends."),
				 errhint("End it with pg_terminate_backend() or COMMIT PREPARED / ROLLBACK PREPARED.")));
		return;
	}
	ereport(LOG,
			(errmsg("terminating process %d of role \"%s\": it held up sealing for %d ms (%s)",
					pid, GetUserNameFromId(role, true) ? GetUserNameFromId(role, true) : "?",
					ehrledger_writer_timeout, what),
			 errhint("ehrledger.writer_timeout bounds how long one session can delay sealing.")));
	if (kill(pid, SIGTERM) != 0)
		ereport(WARNING,
				(errmsg("could not send signal to process %d: %m", pid)));
}

/*
 * Ends the sessions queued for tag in a mode that conflicts with mode: a
 * request queued ahead of the sealer's makes it wait as long as whatever
 * that request waits for (an owner's LOCK TABLE behind their own idle
 * reader, say), though it holds nothing itself.
 */
static void
end_waiters_ahead(const LOCKTAG *tag, LOCKMODE mode, const char *what)
{
	LockData   *data = GetLockStatusData();
	int			i;

	for (i = 0; i < data->nelements; i++)
	{
		LockInstanceData *l = &data->locks[i];
		VirtualTransactionId vxid;

		if (l->waitLockMode == NoLock || l->pid == MyProcPid ||
			memcmp(&l->locktag, tag, sizeof(LOCKTAG)) != 0 ||
			!DoLockModesConflict(l->waitLockMode, mode))
			continue;
		vxid.backendId = l->backend;
		vxid.localTransactionId = l->lxid;
		end_holdout(vxid, what);
	}
}

/*
 * Runs wait(arg), which waits for a heavyweight lock, with lock_timeout set
 * to ehrledger.writer_timeout, in a subtransaction: false when the lock
 * timed out (the wait shows in pg_locks and pg_blocking_pids() meanwhile).
 */
static bool
lock_within_timeout(void (*wait) (void *), void *arg)
{
	MemoryContext mcxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	int			saved = LockTimeout;
	volatile bool taken = true;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(mcxt);
	PG_TRY();
	{
		LockTimeout = ehrledger_writer_timeout;
		wait(arg);
		LockTimeout = saved;
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(mcxt);
		CurrentResourceOwner = owner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		LockTimeout = saved;
		MemoryContextSwitchTo(mcxt);
		edata = CopyErrorData();
		if (edata->sqlerrcode != ERRCODE_LOCK_NOT_AVAILABLE)
			PG_RE_THROW();
		FlushErrorState();
		FreeErrorData(edata);
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(mcxt);
		CurrentResourceOwner = owner;
		taken = false;
	}
	PG_END_TRY();
	return taken;
}

/*
 * Gets a lock with try(arg), which does not wait; while it cannot, waits
 * with wait(arg), which takes the lock and lets it go.  Each time
 * ehrledger.writer_timeout passes without it, the sessions in the way
 * (those holding or queued for tag in a mode conflicting with mode, or the
 * one running vxid) are ended by end_holdout().  No session but a
 * superuser's can thus delay sealing for longer than that bound.  (The
 * lock is kept only when try() takes it, outside the subtransaction, so
 * that it belongs to the caller's resource owner.)
 */
static void
wait_bounded(bool (*try) (void *), void (*wait) (void *), void *arg,
			 const LOCKTAG *tag, LOCKMODE mode, VirtualTransactionId vxid, const char *what)
{
	while (!try(arg))
	{
		if (lock_within_timeout(wait, arg))
			continue;
		if (tag != NULL)
		{
			VirtualTransactionId *holders = GetLockConflicts(tag, mode, NULL);

			for (; VirtualTransactionIdIsValid(*holders); holders++)
				end_holdout(*holders, what);
			end_waiters_ahead(tag, mode, what);
		}
		else
			end_holdout(vxid, what);
		CHECK_FOR_INTERRUPTS();
	}
}

static bool
try_vxid(void *arg)
{
	return VirtualXactLock(*(VirtualTransactionId *) arg, false);
}

static void
wait_vxid(void *arg)
{
	(void) VirtualXactLock(*(VirtualTransactionId *) arg, true);
}

static bool
try_relation_lock(void *arg)
{
	return ConditionalLockRelationOid(*(Oid *) arg, AccessShareLock);
}

static void
wait_relation_lock(void *arg)
{
	LockRelationOid(*(Oid *) arg, AccessShareLock);
	UnlockRelationOid(*(Oid *) arg, AccessShareLock);
}

/*
 * Locks a relation the sealer reads in AccessShareLock, within the bound:
 * a table owner who holds an exclusive lock on their own table does not
 * stall sealing for longer than ehrledger.writer_timeout.
 */
static void
lock_relation_bounded(Oid relid)
{
	LOCKTAG		tag;
	VirtualTransactionId none;

	SetInvalidVirtualTransactionId(none);
	SET_LOCKTAG_RELATION(tag, MyDatabaseId, relid);
	wait_bounded(try_relation_lock, wait_relation_lock, &relid, &tag, AccessShareLock, none,
				 "a lock on a protected table");
}

/*
 * Step 3 above: wait out every writer that may hold a number up to H (the
 * rejoin's renumbering waits the same way, see network.c).
 */
void
ledger_wait_for_writers(List *tables)
{
	ListCell   *lc;

	foreach(lc, tables)
	{
		LedgerTable *t = lfirst(lc);
		LOCKTAG		tag;
		VirtualTransactionId *holders;

		SET_LOCKTAG_RELATION(tag, MyDatabaseId, t->relid);
		holders = GetLockConflicts(&tag, ShareLock, NULL);
		for (; VirtualTransactionIdIsValid(*holders); holders++)
		{
			if (!VirtualTransactionIdIsRecoveredPreparedXact(*holders))
			{
				TransactionId xid;
				TransactionId xmin;

				BackendIdGetTransactionIds(holders->backendId, &xid, &xmin);
				if (!TransactionIdIsValid(xid))
					continue;
			}
			wait_bounded(try_vxid, wait_vxid, holders, NULL, NoLock, *holders,
						 "a transaction that may hold unsealed ledger rows");
		}
	}
}

/*
 * One protected table's row versions numbered in (lo, hi], read in
 * ledger_seq order through its unique index.  Sealing merges these cursors,
 * so it holds at most one block's leaves however long the backlog.
 */
typedef struct TableCursor
{
	const LedgerTable *table;
	Relation	rel;
	Relation	irel;
	IndexScanDesc scan;
	TupleTableSlot *slot;
	AttrNumber	seq_att;
	AttrNumber	hash_att;
	bool		has;			/* seq and hash hold the next leaf */
	int64		seq;
	uint8		hash[LEDGER_HASH_LEN];
} TableCursor;

static void
cursor_advance(TableCursor *c)
{
	c->has = false;
	while (index_getnext_slot(c->scan, ForwardScanDirection, c->slot))
	{
		bool		seq_null;
		bool		hash_null;
		Datum		seq = slot_getattr(c->slot, c->seq_att, &seq_null);
		Datum		hash = slot_getattr(c->slot, c->hash_att, &hash_null);
		bytea	   *h;

		CHECK_FOR_INTERRUPTS();
		if (seq_null || hash_null)
			continue;
		h = DatumGetByteaPP(hash);
		if (VARSIZE_ANY_EXHDR(h) != LEDGER_HASH_LEN)
		{
			ereport(WARNING,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("row %lld of \"%s\" has a malformed ledger_hash and was not sealed",
							(long long) DatumGetInt64(seq), RelationGetRelationName(c->rel))));
			continue;
		}
		c->seq = DatumGetInt64(seq);
		memcpy(c->hash, VARDATA_ANY(h), LEDGER_HASH_LEN);
		if ((Pointer) h != DatumGetPointer(hash))
			pfree(h);
		c->has = true;
		return;
	}
}

/*
 * A cursor over (seq_column, hash_column) of relid: a protected table's
 * rows, or a history table's earlier versions or their end events.
 */
static void
cursor_open(TableCursor *c, const LedgerTable *t, Oid relid, const char *seq_column,
			const char *hash_column, int64 lo, int64 hi, Snapshot snapshot)
{
	Oid			indexoid;
	ScanKeyData keys[2];

	memset(c, 0, sizeof(TableCursor));
	c->table = t;
	lock_relation_bounded(relid);
	c->rel = try_relation_open(relid, NoLock);
	if (c->rel == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("a table of ledger id %d (oid %u) no longer exists",
						t->table_id, relid),
				 errhint("Run ehrledger.verify() to see what was removed.")));
	c->seq_att = attnameAttNum(c->rel, seq_column, false);
	c->hash_att = attnameAttNum(c->rel, hash_column, false);
	if (c->seq_att <= 0 || c->hash_att <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("protected table \"%s\" lacks its ledger columns",
						RelationGetRelationName(c->rel))));
	indexoid = ledger_seq_index(c->rel, c->seq_att);
	if (!OidIsValid(indexoid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("protected table \"%s\" lacks its unique index on ledger_seq",
						RelationGetRelationName(c->rel)),
				 errhint("Recreate it with CREATE UNIQUE INDEX ON %s (ledger_seq).",
						 RelationGetRelationName(c->rel))));
	lock_relation_bounded(indexoid);
	c->irel = index_open(indexoid, NoLock);
	ScanKeyInit(&keys[0], 1, BTGreaterStrategyNumber, F_INT8GT, Int64GetDatum(lo));
	ScanKeyInit(&keys[1], 1, BTLessEqualStrategyNumber, F_INT8LE, Int64GetDatum(hi));
	c->scan = index_beginscan(c->rel, c->irel, snapshot, 2, 0);
	index_rescan(c->scan, keys, 2, NULL, 0);
	c->slot = table_slot_create(c->rel, NULL);
	cursor_advance(c);
}

static void
cursor_close(TableCursor *c)
{
	ExecDropSingleTupleTableSlot(c->slot);
	index_endscan(c->scan);
	index_close(c->irel, AccessShareLock);
	relation_close(c->rel, AccessShareLock);
}

/* The cursor holding the lowest next ledger_seq, or NULL when all are done. */
static TableCursor *
cursor_min(TableCursor *cursors, int n)
{
	TableCursor *min = NULL;
	int			i;

	for (i = 0; i < n; i++)
		if (cursors[i].has && (min == NULL || cursors[i].seq < min->seq))
			min = &cursors[i];
	return min;
}

/* Packs leaves for storage and computes their Merkle root. */
static bytea *
pack_leaves(const Leaf *leaves, size_t count, uint8 *root, uint8 *leaves_hash)
{
	bytea	   *packed = palloc_extended(VARHDRSZ + count * LEDGER_LEAF_SIZE, MCXT_ALLOC_HUGE);
	uint8	   *p = (uint8 *) VARDATA(packed);
	size_t		i;

	SET_VARSIZE(packed, VARHDRSZ + count * LEDGER_LEAF_SIZE);
	for (i = 0; i < count; i++, p += LEDGER_LEAF_SIZE)
	{
		lc_store_u64(p, (uint64) leaves[i].seq);
		lc_store_u32(p + 8, (uint32) leaves[i].table_id);
		memcpy(p + 12, leaves[i].hash, LEDGER_HASH_LEN);
	}
	ledger_merkle_root((uint8 *) VARDATA(packed) + 12, count, LEDGER_LEAF_SIZE, root);
	if (!lc_leaves_hash((uint8 *) VARDATA(packed), count * LEDGER_LEAF_SIZE, leaves_hash))
		core_failed(lc_error);
	return packed;
}

static void
insert_block(const BlockHeader *h, const uint8 *block_hash, const uint8 *signature,
			 const ChainHead *after, bytea *leaves)
{
	Oid			types[15] = {TEXTOID, INT8OID, BYTEAOID, BYTEAOID, BYTEAOID, BYTEAOID,
		INT8OID, INT8OID, INT8OID, TIMESTAMPTZOID, BYTEAOID, BYTEAOID, BYTEAOID, BYTEAOID,
	BYTEAOID};
	Datum		values[15];
	int			ret;

	values[0] = CStringGetTextDatum(h->origin);
	values[1] = Int64GetDatum(h->height);
	values[2] = PointerGetDatum(ledger_bytea(h->prev_hash, LEDGER_HASH_LEN));
	values[3] = PointerGetDatum(ledger_bytea(h->history_root, LEDGER_HASH_LEN));
	values[4] = PointerGetDatum(ledger_bytea(h->root, LEDGER_HASH_LEN));
	values[5] = PointerGetDatum(ledger_bytea(block_hash, LEDGER_HASH_LEN));
	values[6] = Int64GetDatum(h->first_seq);
	values[7] = Int64GetDatum(h->last_seq);
	values[8] = Int64GetDatum(h->row_count);
	values[9] = TimestampTzGetDatum(h->sealed_at);
	values[10] = PointerGetDatum(ledger_bytea(h->public_key, LEDGER_PUBKEY_LEN));
	values[11] = PointerGetDatum(ledger_bytea(signature, LEDGER_SIG_LEN));
	values[12] = PointerGetDatum(ledger_bytea(after->frontier,
											after->frontier_count * LEDGER_HASH_LEN));
	values[13] = PointerGetDatum(ledger_bytea(h->leaves_hash, LEDGER_HASH_LEN));
	values[14] = PointerGetDatum(leaves);

	ret = SPI_execute_with_args("INSERT INTO ehrledger.block (" BLOCK_COLUMNS ", leaves)"
								" VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11,"
								" $12, $13, $14, $15)",
								15, types, values, NULL, false, 0);
	if (ret != SPI_OK_INSERT)
		elog(ERROR, "could not store block: %s", SPI_result_code_string(ret));
}

static void
remember_node_key(const char *origin, const uint8 *public_key)
{
	Oid			types[2] = {TEXTOID, BYTEAOID};
	Datum		values[2];
	int			ret;

	values[0] = CStringGetTextDatum(origin);
	values[1] = PointerGetDatum(ledger_bytea(public_key, LEDGER_PUBKEY_LEN));
	ret = SPI_execute_with_args("INSERT INTO ehrledger.node_key (origin, public_key)"
								" VALUES ($1, $2) ON CONFLICT DO NOTHING",
								2, types, values, NULL, false, 0);
	if (ret != SPI_OK_INSERT)
		elog(ERROR, "could not record node key: %s", SPI_result_code_string(ret));
}

/* Signs and stores one block of leaves, which extends the chain at head. */
static void
seal_block(const char *origin, ChainHead *head, const Leaf *leaves, size_t count,
		   int64 last_seq)
{
	BlockHeader h;
	uint8		block_hash[LEDGER_HASH_LEN];
	uint8		signature[LEDGER_SIG_LEN];
	bytea	   *packed;

	h.origin = (char *) origin;
	h.height = head->height + 1;
	memcpy(h.prev_hash, head->block_hash, LEDGER_HASH_LEN);
	history_root(head->frontier, head->frontier_count, h.history_root);
	h.first_seq = head->last_seq + 1;
	h.last_seq = last_seq;
	h.row_count = count;
	h.sealed_at = GetCurrentTimestamp();
	memcpy(h.public_key, ledger_node_public_key(), LEDGER_PUBKEY_LEN);
	packed = pack_leaves(leaves, count, h.root, h.leaves_hash);

	block_header_hash(&h, block_hash);
	ledger_node_sign(block_hash, LEDGER_HASH_LEN, signature);
	history_append(head->frontier, &head->frontier_count, (uint64) head->height, block_hash);
	insert_block(&h, block_hash, signature, head, packed);
	network_block_sealed(h.origin, h.height);
	pfree(packed);

	head->height = h.height;
	head->last_seq = h.last_seq;
	memcpy(head->block_hash, block_hash, LEDGER_HASH_LEN);
}

/* Cursors over every leaf of tables numbered in (lo, hi]; returns how many. */
static int
open_cursors(TableCursor *cursors, List *tables, int64 lo, int64 hi, Snapshot snapshot)
{
	int			n = 0;
	ListCell   *lc;

	foreach(lc, tables)
	{
		LedgerTable *t = lfirst(lc);

		cursor_open(&cursors[n++], t, t->relid, LEDGER_SEQ_COLUMN, LEDGER_HASH_COLUMN,
					lo, hi, snapshot);
		if (OidIsValid(t->history_relid))
		{
			/* versions that ended, and their end events */
			cursor_open(&cursors[n++], t, t->history_relid, LEDGER_SEQ_COLUMN,
						LEDGER_HASH_COLUMN, lo, hi, snapshot);
			cursor_open(&cursors[n++], t, t->history_relid, LEDGER_ENDED_SEQ_COLUMN,
						LEDGER_ENDED_HASH_COLUMN, lo, hi, snapshot);
		}
	}
	return n;
}

/*
 * Seals every committed, not yet sealed row version and returns the height
 * of the newest block (0 when the chain is still empty).  At most
 * ehrledger.max_block_rows rows go into one block; more make several blocks,
 * and memory stays bounded by one block however long the backlog.
 */
int64
ledger_seal(void)
{
	const char *origin = ledger_node_name();
	Oid			block_relid;
	Snapshot	snapshot;
	ChainHead	head;
	List	   *tables;
	ListCell   *lc;
	int64		horizon;
	TableCursor *cursors;
	int			ncursors = 0;
	Leaf	   *chunk;
	size_t		capacity;
	size_t		count = 0;
	int64		sealed = 0;
	int			i;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	block_relid = ledger_relid("block");
	LockRelationOid(block_relid, ExclusiveLock);

	snapshot = RegisterSnapshot(GetLatestSnapshot());
	head = chain_head(origin, snapshot);
	tables = NIL;
	foreach(lc, ledger_tables(snapshot))
		if (!((LedgerTable *) lfirst(lc))->retired)
			tables = lappend(tables, lfirst(lc));
	UnregisterSnapshot(snapshot);

	if (tables == NIL)
	{
		SPI_finish();
		return head.height;
	}
	if (!rows_may_be_pending(&head))
	{
		SPI_finish();
		return head.height;
	}
	horizon = nextval_internal(ledger_relid("ledger_seq"), false) - 1;
	if (horizon <= head.last_seq)
	{
		SPI_finish();
		return head.height;
	}

	ledger_wait_for_writers(tables);

	snapshot = RegisterSnapshot(GetLatestSnapshot());
	cursors = palloc(sizeof(TableCursor) * list_length(tables) * 3);
	ncursors = open_cursors(cursors, tables, head.last_seq, horizon, snapshot);

	/*
	 * Rows to seal, of a table new to this chain, renamed or with new
	 * columns: the table's enrolment (docs/format.md §19) goes into the same
	 * block.  It takes numbers after the horizon, which moves past them once
	 * the writers of the numbers in between are waited for too.
	 */
	if (cursor_min(cursors, ncursors) != NULL && ledger_enrol_tables())
	{
		for (i = 0; i < ncursors; i++)
			cursor_close(&cursors[i]);
		UnregisterSnapshot(snapshot);
		horizon = nextval_internal(ledger_relid("ledger_seq"), false) - 1;
		ledger_wait_for_writers(tables);
		snapshot = RegisterSnapshot(GetLatestSnapshot());
		ncursors = open_cursors(cursors, tables, head.last_seq, horizon, snapshot);
	}
	capacity = 1024;
	chunk = palloc_extended(sizeof(Leaf) * capacity, MCXT_ALLOC_HUGE);

	for (;;)
	{
		TableCursor *next = cursor_min(cursors, ncursors);

		if (next != NULL)
		{
			if (count == capacity)
			{
				capacity *= 2;
				chunk = repalloc_huge(chunk, sizeof(Leaf) * capacity);
			}
			chunk[count].seq = next->seq;
			chunk[count].table_id = next->table->table_id;
			memcpy(chunk[count].hash, next->hash, LEDGER_HASH_LEN);
			count++;
			cursor_advance(next);
			if (count < (size_t) ehrledger_max_block_rows)
				continue;
		}
		if (count == 0)
			break;
		/* A full block ends at its last row; the final one at the horizon. */
		seal_block(origin, &head, chunk, count,
				   cursor_min(cursors, ncursors) != NULL ? chunk[count - 1].seq : horizon);
		sealed += count;
		count = 0;
	}

	for (i = 0; i < ncursors; i++)
		cursor_close(&cursors[i]);
	UnregisterSnapshot(snapshot);
	if (sealed > 0)
		remember_node_key(origin, ledger_node_public_key());

	SPI_finish();
	return head.height;
}

/* ehrledger.seal(): seals what is committed; returns the newest height. */
Datum
ehrledger_seal(PG_FUNCTION_ARGS)
{
	int64		height;

	PreventCommandIfReadOnly("ehrledger.seal()");
	PreventCommandDuringRecovery("ehrledger.seal()");
	ledger_require_rejoined();
	height = ledger_seal();
	if (height <= 0)
		PG_RETURN_NULL();
	PG_RETURN_INT64(height);
}
