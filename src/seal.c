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
 *      does not delay sealing.)
 *   4. With a fresh snapshot, every committed row version numbered in
 *      (previous block's last_seq, H] is visible; seal exactly those.
 *
 * Blocks cover contiguous ranges of sequence numbers, so a row forged into
 * an already sealed range is detectable.  Aborted writers leave gaps, which
 * are harmless.
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/relation.h"
#include "access/relscan.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/sequence.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "parser/parse_relation.h"
#include "storage/lmgr.h"
#include "storage/lock.h"
#include "storage/sinvaladt.h"
#include "tcop/utility.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "ehrledger.h"

PG_FUNCTION_INFO_V1(ehrledger_seal);

typedef struct Leaf
{
	int64		seq;
	int32		table_id;
	uint8		hash[LEDGER_HASH_LEN];
} Leaf;

typedef struct LeafArray
{
	Leaf	   *items;
	size_t		count;
	size_t		capacity;
} LeafArray;

/* The newest block of this node's chain: where the next block links to. */
typedef struct ChainHead
{
	int64		height;
	int64		last_seq;
	uint8		block_hash[LEDGER_HASH_LEN];
	uint8		frontier[HISTORY_MAX_FRONTIER * LEDGER_HASH_LEN];
	int			frontier_count;
} ChainHead;

static void
leaf_append(LeafArray *arr, int64 seq, int32 table_id, const uint8 *hash)
{
	if (arr->count == arr->capacity)
	{
		arr->capacity = Max(1024, arr->capacity * 2);
		if (arr->items == NULL)
			arr->items = palloc_extended(arr->capacity * sizeof(Leaf), MCXT_ALLOC_HUGE);
		else
			arr->items = repalloc_huge(arr->items, arr->capacity * sizeof(Leaf));
	}
	arr->items[arr->count].seq = seq;
	arr->items[arr->count].table_id = table_id;
	memcpy(arr->items[arr->count].hash, hash, LEDGER_HASH_LEN);
	arr->count++;
}

static int
leaf_cmp(const void *a, const void *b)
{
	int64		x = ((const Leaf *) a)->seq;
	int64		y = ((const Leaf *) b)->seq;

	return (x > y) - (x < y);
}

/* The newest block of this node's chain, read under the given snapshot. */
static ChainHead
chain_head(const char *origin, Snapshot snapshot)
{
	ChainHead	head;
	SPIPlanPtr	plan;
	Oid			argtypes[1] = {TEXTOID};
	Datum		args[1];
	int			ret;

	memset(&head, 0, sizeof(head));
	plan = SPI_prepare("SELECT " BLOCK_COLUMNS " FROM ehrledger.block"
					   " WHERE origin = $1 ORDER BY height DESC LIMIT 1",
					   1, argtypes);
	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	args[0] = CStringGetTextDatum(origin);
	ret = SPI_execute_snapshot(plan, args, NULL, snapshot, InvalidSnapshot,
							   true, false, 1);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "SPI_execute_snapshot failed: %s", SPI_result_code_string(ret));
	if (SPI_processed == 1)
	{
		StoredBlock *b = palloc(sizeof(StoredBlock));

		if (!block_from_spi(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, b))
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("the newest block of \"%s\" has a malformed %s",
							origin, b->malformed),
					 errhint("Run ehrledger.verify() to see what was changed.")));
		head.height = b->h.height;
		head.last_seq = b->h.last_seq;
		memcpy(head.block_hash, b->block_hash, LEDGER_HASH_LEN);
		memcpy(head.frontier, b->frontier, b->frontier_count * LEDGER_HASH_LEN);
		head.frontier_count = b->frontier_count;
		pfree(b);
	}
	SPI_freeplan(plan);
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

/* Step 3 above: wait out every writer that may hold a number up to H. */
static void
wait_for_writers(List *tables)
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
			VirtualXactLock(*holders, true);
			CHECK_FOR_INTERRUPTS();
		}
	}
}

/* Collects (seq, table, hash) of one table's row versions in (lo, hi]. */
static void
collect_leaves(LeafArray *leaves, const LedgerTable *t, int64 lo, int64 hi,
			   Snapshot snapshot)
{
	Relation	rel = try_relation_open(t->relid, AccessShareLock);
	AttrNumber	seq_att;
	AttrNumber	hash_att;
	Oid			indexoid;
	Relation	irel;
	IndexScanDesc scan;
	TupleTableSlot *slot;
	ScanKeyData keys[2];

	if (rel == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("protected table with ledger id %d (oid %u) no longer exists",
						t->table_id, t->relid),
				 errhint("Run ehrledger.verify() to see what was removed.")));
	seq_att = attnameAttNum(rel, LEDGER_SEQ_COLUMN, false);
	hash_att = attnameAttNum(rel, LEDGER_HASH_COLUMN, false);
	if (seq_att <= 0 || hash_att <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("protected table \"%s\" lacks its ledger columns",
						RelationGetRelationName(rel))));
	indexoid = ledger_seq_index(rel, seq_att);
	if (!OidIsValid(indexoid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("protected table \"%s\" lacks its unique index on ledger_seq",
						RelationGetRelationName(rel)),
				 errhint("Recreate it with CREATE UNIQUE INDEX ON %s (ledger_seq).",
						 RelationGetRelationName(rel))));

	irel = index_open(indexoid, AccessShareLock);
	ScanKeyInit(&keys[0], 1, BTGreaterStrategyNumber, F_INT8GT, Int64GetDatum(lo));
	ScanKeyInit(&keys[1], 1, BTLessEqualStrategyNumber, F_INT8LE, Int64GetDatum(hi));
	scan = index_beginscan(rel, irel, snapshot, 2, 0);
	index_rescan(scan, keys, 2, NULL, 0);
	slot = table_slot_create(rel, NULL);

	while (index_getnext_slot(scan, ForwardScanDirection, slot))
	{
		bool		seq_null;
		bool		hash_null;
		Datum		seq = slot_getattr(slot, seq_att, &seq_null);
		Datum		hash = slot_getattr(slot, hash_att, &hash_null);
		bytea	   *h;

		if (seq_null || hash_null)
			continue;
		h = DatumGetByteaPP(hash);
		if (VARSIZE_ANY_EXHDR(h) != LEDGER_HASH_LEN)
		{
			ereport(WARNING,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("row %lld of \"%s\" has a malformed ledger_hash and was not sealed",
							(long long) DatumGetInt64(seq), RelationGetRelationName(rel))));
			continue;
		}
		leaf_append(leaves, DatumGetInt64(seq), t->table_id, (uint8 *) VARDATA_ANY(h));
		CHECK_FOR_INTERRUPTS();
	}
	ExecDropSingleTupleTableSlot(slot);
	index_endscan(scan);
	index_close(irel, AccessShareLock);
	relation_close(rel, AccessShareLock);
}

static bytea *
make_bytea(const void *data, size_t len)
{
	bytea	   *b = palloc_extended(VARHDRSZ + len, MCXT_ALLOC_HUGE);

	SET_VARSIZE(b, VARHDRSZ + len);
	memcpy(VARDATA(b), data, len);
	return b;
}

/* Packs leaves for storage and computes their Merkle root. */
static bytea *
pack_leaves(const Leaf *leaves, size_t count, uint8 *root)
{
	bytea	   *packed = palloc_extended(VARHDRSZ + count * LEDGER_LEAF_SIZE, MCXT_ALLOC_HUGE);
	uint8	   *p = (uint8 *) VARDATA(packed);
	size_t		i;

	SET_VARSIZE(packed, VARHDRSZ + count * LEDGER_LEAF_SIZE);
	for (i = 0; i < count; i++, p += LEDGER_LEAF_SIZE)
	{
		uint64		s = (uint64) leaves[i].seq;
		uint32		t = (uint32) leaves[i].table_id;
		int			b;

		for (b = 0; b < 8; b++)
			p[b] = (uint8) (s >> (56 - 8 * b));
		for (b = 0; b < 4; b++)
			p[8 + b] = (uint8) (t >> (24 - 8 * b));
		memcpy(p + 12, leaves[i].hash, LEDGER_HASH_LEN);
	}
	ledger_merkle_root((uint8 *) VARDATA(packed) + 12, count, LEDGER_LEAF_SIZE, root);
	return packed;
}

static void
insert_block(const BlockHeader *h, const uint8 *block_hash, const uint8 *signature,
			 const ChainHead *after, bytea *leaves)
{
	Oid			types[14] = {TEXTOID, INT8OID, BYTEAOID, BYTEAOID, BYTEAOID, BYTEAOID,
		INT8OID, INT8OID, INT8OID, TIMESTAMPTZOID, BYTEAOID, BYTEAOID, BYTEAOID, BYTEAOID};
	Datum		values[14];
	int			ret;

	values[0] = CStringGetTextDatum(h->origin);
	values[1] = Int64GetDatum(h->height);
	values[2] = PointerGetDatum(make_bytea(h->prev_hash, LEDGER_HASH_LEN));
	values[3] = PointerGetDatum(make_bytea(h->history_root, LEDGER_HASH_LEN));
	values[4] = PointerGetDatum(make_bytea(h->root, LEDGER_HASH_LEN));
	values[5] = PointerGetDatum(make_bytea(block_hash, LEDGER_HASH_LEN));
	values[6] = Int64GetDatum(h->first_seq);
	values[7] = Int64GetDatum(h->last_seq);
	values[8] = Int64GetDatum(h->row_count);
	values[9] = TimestampTzGetDatum(h->sealed_at);
	values[10] = PointerGetDatum(make_bytea(h->public_key, LEDGER_PUBKEY_LEN));
	values[11] = PointerGetDatum(make_bytea(signature, LEDGER_SIG_LEN));
	values[12] = PointerGetDatum(make_bytea(after->frontier,
											after->frontier_count * LEDGER_HASH_LEN));
	values[13] = PointerGetDatum(leaves);

	ret = SPI_execute_with_args("INSERT INTO ehrledger.block (" BLOCK_COLUMNS ", leaves)"
								" VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11,"
								" $12, $13, $14)",
								14, types, values, NULL, false, 0);
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
	values[1] = PointerGetDatum(make_bytea(public_key, LEDGER_PUBKEY_LEN));
	ret = SPI_execute_with_args("INSERT INTO ehrledger.node_key (origin, public_key)"
								" VALUES ($1, $2) ON CONFLICT DO NOTHING",
								2, types, values, NULL, false, 0);
	if (ret != SPI_OK_INSERT)
		elog(ERROR, "could not record node key: %s", SPI_result_code_string(ret));
}

/*
 * Seals every committed, not yet sealed row version and returns the height
 * of the newest block (0 when the chain is still empty).  At most
 * LEDGER_MAX_BLOCK_ROWS rows go into one block; more make several blocks.
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
	LeafArray	leaves = {NULL, 0, 0};
	size_t		done = 0;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	block_relid = ledger_relid("block");
	LockRelationOid(block_relid, ExclusiveLock);

	snapshot = RegisterSnapshot(GetLatestSnapshot());
	head = chain_head(origin, snapshot);
	tables = ledger_tables(snapshot);
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

	wait_for_writers(tables);

	snapshot = RegisterSnapshot(GetLatestSnapshot());
	foreach(lc, tables)
		collect_leaves(&leaves, lfirst(lc), head.last_seq, horizon, snapshot);
	UnregisterSnapshot(snapshot);

	if (leaves.count > 1)
		qsort(leaves.items, leaves.count, sizeof(Leaf), leaf_cmp);

	while (done < leaves.count)
	{
		size_t		n = Min(leaves.count - done, (size_t) LEDGER_MAX_BLOCK_ROWS);
		bool		last_chunk = (done + n == leaves.count);
		BlockHeader h;
		uint8		block_hash[LEDGER_HASH_LEN];
		uint8		signature[LEDGER_SIG_LEN];
		bytea	   *packed;

		h.origin = (char *) origin;
		h.height = head.height + 1;
		memcpy(h.prev_hash, head.block_hash, LEDGER_HASH_LEN);
		history_root(head.frontier, head.frontier_count, h.history_root);
		h.first_seq = head.last_seq + 1;
		h.last_seq = last_chunk ? horizon : leaves.items[done + n - 1].seq;
		h.row_count = n;
		h.sealed_at = GetCurrentTimestamp();
		memcpy(h.public_key, ledger_node_public_key(), LEDGER_PUBKEY_LEN);
		packed = pack_leaves(leaves.items + done, n, h.root);

		block_header_hash(&h, block_hash);
		ledger_node_sign(block_hash, LEDGER_HASH_LEN, signature);
		history_append(head.frontier, &head.frontier_count, (uint64) head.height,
					   block_hash);
		insert_block(&h, block_hash, signature, &head, packed);
		pfree(packed);

		head.height = h.height;
		head.last_seq = h.last_seq;
		memcpy(head.block_hash, block_hash, LEDGER_HASH_LEN);
		done += n;
	}
	if (leaves.count > 0)
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
	height = ledger_seal();
	if (height <= 0)
		PG_RETURN_NULL();
	PG_RETURN_INT64(height);
}
