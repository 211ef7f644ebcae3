/*
 * verify_parallel.c
 *		verify()'s pass over the rows of one table, shared with parallel
 *		workers.
 *
 * The leader and up to max_parallel_workers_per_gather workers scan
 * disjoint parts of the table (a parallel heap scan, under the leader's
 * snapshot, user and security context), re-encode and re-hash each row
 * version and compare it with its sealed leaf, or with the hash stored when
 * it was written while it is not sealed yet.  They only decide whether
 * every row is clean: the only one to carry its sealed leaf and equal to
 * it, with its stored hash intact, or unsealed above the sealed horizon
 * and equal to its stored hash.  A clean table gives no problem, and then
 * the serial pass would have reported none either; at the first row that
 * is not clean every participant stops, and verify.c checks the table
 * again serially, in its physical order, so that the problems, their order,
 * and the pairing of swapped rows are exactly those of the serial pass.
 *
 * The sealed leaves of the table live in a segment of dynamic shared
 * memory of their own (48 bytes each), each with a flag a participant sets
 * when a row claims it.  The workers may be launched before the leader has
 * read the leaves (reading a million of them from the ledger takes a tenth
 * of the whole call): until the leader publishes them, a worker keeps what
 * it computed (a pending leaf, 80 bytes a row version) and compares it
 * when they come.
 */
#include "postgres.h"

#include <sys/mman.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "access/parallel.h"
#include "access/relscan.h"
#include "access/table.h"
#include "access/tableam.h"
#include "executor/tuptable.h"
#include "miscadmin.h"
#include "optimizer/cost.h"
#include "optimizer/paths.h"
#include "port/atomics.h"
#include "storage/bufmgr.h"
#include "storage/condition_variable.h"
#include "storage/dsm.h"
#include "storage/dsm_impl.h"
#include "storage/shm_toc.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/wait_event.h"

#include "ledger/ledger.h"

#define PASS_KEY_SHARED		UINT64CONST(0xE4D1ED6E00000001)
#define PASS_KEY_SCAN		UINT64CONST(0xE4D1ED6E00000003)

/* A worker keeps at most this many pending leaves (20 MB), then waits. */
#define MAX_PENDING			(256 * 1024)

typedef struct PassShared
{
	Oid			relid;
	int32		table_id;
	bool		history;
	/* set by the leader before ready: */
	dsm_handle	leaves_handle;
	int64		horizon;		/* highest sealed ledger_seq of the own chain */
	Size		nleaves;
	pg_atomic_uint32 ready;		/* the leaves are published, or unclean is set */
	ConditionVariable ready_cv; /* broadcast when ready is set */
	pg_atomic_uint32 unclean;	/* set at the first row that is not clean */
	pg_atomic_uint64 rows;
} PassShared;

/* One sealed leaf of the table; by ledger_seq. */
typedef struct PassLeaf
{
	int64		seq;			/* first, for lc_find_seq() */
	pg_atomic_uint32 claimed;
	uint8		hash[LEDGER_HASH_LEN];
} PassLeaf;

/* A recomputed leaf waiting for the sealed leaves to be published. */
typedef struct PendingLeaf
{
	int64		seq;
	bool		end;			/* the end of a version, not a version */
	bool		has_stored;
	uint8		computed[LEDGER_HASH_LEN];
	uint8		stored[LEDGER_HASH_LEN];
} PendingLeaf;

struct RowPass
{
	ParallelContext *pcxt;
	Relation	rel;
	PassShared *shared;
	dsm_segment *leaves_seg;
	PassLeaf   *leaves;
	ParallelTableScanDesc pscan;
	int			launched;
};

PGDLLEXPORT void ehrledger_verify_worker(dsm_segment *seg, shm_toc *toc);

/* A row's stored hash, or NULL when it is missing or not a hash. */
const uint8 *
row_stored_hash(const Datum *values, const bool *isnull, AttrNumber att)
{
	bytea	   *h;

	if (att <= 0 || isnull[att - 1])
		return NULL;
	h = DatumGetByteaPP(values[att - 1]);
	return VARSIZE_ANY_EXHDR(h) == LEDGER_HASH_LEN ? (const uint8 *) VARDATA_ANY(h) : NULL;
}

/* The encoding of a row version (left in buf) and its leaf. */
void
row_version_leaf(const RowEncoder *enc, StringInfo buf, int32 table_id, int64 seq,
				 const Datum *values, const bool *isnull, uint8 *leaf)
{
	resetStringInfo(buf);
	row_encode(enc, buf, table_id, seq, values, isnull);
	ledger_leaf_hash(buf->data, buf->len, leaf);
}

/* The leaf of the end of a history row's version. */
void
row_end_leaf(StringInfo buf, int32 table_id, int64 end_seq, int64 seq,
			 const HistoryEndColumns *hc, const Datum *values, const bool *isnull,
			 uint8 *leaf)
{
	resetStringInfo(buf);
	history_end_encode(buf, table_id, end_seq, seq, hc, values, isnull);
	ledger_leaf_hash(buf->data, buf->len, leaf);
}

/*
 * How many workers to ask for the table, as the planner would for a
 * sequential scan of it (compute_parallel_worker()): none below
 * min_parallel_table_scan_size, one more each time the table triples,
 * or the table's parallel_workers, capped by max_workers (the session's
 * max_parallel_workers_per_gather).  Workers cannot read a temporary table
 * (the session's local buffers).
 */
int
row_pass_workers(Relation rel, int max_workers)
{
	BlockNumber pages;
	int			workers;
	int			threshold;

	if (max_workers <= 0 || IsInParallelMode() || !IsUnderPostmaster ||
		RelationUsesLocalBuffers(rel))
		return 0;
	workers = RelationGetParallelWorkers(rel, -1);
	if (workers < 0)
	{
		pages = RelationGetNumberOfBlocks(rel);
		if (pages < (BlockNumber) min_parallel_table_scan_size)
			return 0;
		threshold = Max(min_parallel_table_scan_size, 1);
		workers = 1;
		while (pages >= (BlockNumber) threshold * 3)
		{
			workers++;
			threshold *= 3;
			if (threshold > INT_MAX / 3)
				break;
		}
	}
	return Min(workers, max_workers);
}

/*
 * Whether one recomputed leaf is clean: it claims its sealed leaf first and
 * equals it, stored hash too, or it is unsealed and equals its stored hash.
 */
static bool
leaf_clean(PassShared *sh, PassLeaf *leaves, int64 seq, const uint8 *computed,
		   const uint8 *stored, size_t *next)
{
	int64		at = lc_find_seq_near(leaves, sh->nleaves, sizeof(PassLeaf), seq, next);

	if (at >= 0)
	{
		PassLeaf   *l = &leaves[at];

		return pg_atomic_exchange_u32(&l->claimed, 1) == 0 && stored != NULL &&
			memcmp(computed, l->hash, LEDGER_HASH_LEN) == 0 &&
			memcmp(stored, l->hash, LEDGER_HASH_LEN) == 0;
	}
	return seq > sh->horizon && stored != NULL &&
		memcmp(computed, stored, LEDGER_HASH_LEN) == 0;
}

/*
 * The sealed leaves, once the leader has published them: leaves as given
 * (the leader's own), or attached from their segment (*seg).  NULL while
 * they are not published, or when the pass is abandoned (unclean set).
 */
static PassLeaf *
published_leaves(PassShared *sh, PassLeaf *leaves, dsm_segment **seg)
{
	if (pg_atomic_read_u32(&sh->ready) == 0)
		return NULL;
	pg_read_barrier();
	if (pg_atomic_read_u32(&sh->unclean) != 0)
		return NULL;
	if (leaves != NULL)
		return leaves;
	*seg = dsm_attach(sh->leaves_handle);
	if (*seg == NULL)
		elog(ERROR, "could not map the sealed leaves of the verify() pass");
	return dsm_segment_address(*seg);
}

/* Waits until the leader publishes the leaves or gives the pass up. */
static void
wait_for_leaves(PassShared *sh)
{
	ConditionVariablePrepareToSleep(&sh->ready_cv);
	while (pg_atomic_read_u32(&sh->ready) == 0)
		ConditionVariableSleep(&sh->ready_cv, PG_WAIT_EXTENSION);
	ConditionVariableCancelSleep();
}

/* Room for n more pending leaves, growing the array up to MAX_PENDING. */
static PendingLeaf *
pending_room(PendingLeaf *pending, size_t npending, size_t n, size_t *size)
{
	if (npending + n <= *size)
		return pending;
	*size = Min(Max(*size * 2, 4096), MAX_PENDING);
	return pending == NULL ? palloc(sizeof(PendingLeaf) * *size) :
		repalloc(pending, sizeof(PendingLeaf) * *size);
}

/* Compares recomputed leaves with the published ones; false at the first unclean. */
static bool
compare_leaves(PassShared *sh, PassLeaf *leaves, const PendingLeaf *found, size_t n,
			   size_t *next, size_t *end_next)
{
	size_t		i;

	for (i = 0; i < n; i++)
		if (!leaf_clean(sh, leaves, found[i].seq, found[i].computed,
						found[i].has_stored ? found[i].stored : NULL,
						found[i].end ? end_next : next))
			return false;
	return true;
}

/* The same for the leaves a worker computed before the sealed ones came. */
static bool
drain_pending(PassShared *sh, PassLeaf *leaves, const PendingLeaf *pending, size_t npending,
			  size_t *next, size_t *end_next)
{
	if (npending > 0)
		elog(DEBUG2, "ehrledger: a verify() worker computed %zu leaves before the sealed ones came",
			 npending);
	return compare_leaves(sh, leaves, pending, npending, next, end_next);
}

/*
 * This participant's share of the scan; stops when any row is not clean.
 * leaves is the leader's own pointer to them (NULL in a worker).
 */
static void
scan_rows(PassShared *sh, PassLeaf *leaves_given, Relation rel, ParallelTableScanDesc pscan)
{
	RowEncoder *enc = row_encoder_create(RelationGetDescr(rel), CurrentMemoryContext);
	AttrNumber	seq_att = row_encoder_seq_attnum(enc);
	AttrNumber	hash_att = row_encoder_hash_attnum(enc);
	HistoryEndColumns hc = {0};
	TableScanDesc scan;
	TupleTableSlot *slot;
	MemoryContext rowcxt;
	MemoryContext oldcxt;
	StringInfoData buf;
	uint64		rows = 0;
	bool		clean = true;
	size_t		next = 0;
	size_t		end_next = 0;
	PassLeaf   *leaves;
	dsm_segment *seg = NULL;
	PendingLeaf *pending = NULL;
	size_t		npending = 0;
	size_t		pending_size = 0;

	if ((sh->history && !history_end_columns(rel, &hc)) ||
		seq_att == InvalidAttrNumber || hash_att == InvalidAttrNumber)
		clean = false;			/* the leader reports it before any scan */

	leaves = published_leaves(sh, leaves_given, &seg);
	initStringInfo(&buf);
	rowcxt = AllocSetContextCreate(CurrentMemoryContext, "ehrledger verify row",
								   ALLOCSET_DEFAULT_SIZES);
	scan = table_beginscan_parallel(rel, pscan);
	slot = table_slot_create(rel, NULL);
	while (clean && pg_atomic_read_u32(&sh->unclean) == 0 &&
		   table_scan_getnextslot(scan, ForwardScanDirection, slot))
	{
		Datum	   *values;
		bool	   *isnull;
		int64		seq;
		int			nleaves = 1;
		PendingLeaf found[2];

		CHECK_FOR_INTERRUPTS();
		rows++;
		slot_getallattrs(slot);
		values = slot->tts_values;
		isnull = slot->tts_isnull;
		if (isnull[seq_att - 1])
		{
			clean = false;
			break;
		}
		seq = DatumGetInt64(values[seq_att - 1]);

		oldcxt = MemoryContextSwitchTo(rowcxt);
		found[0].seq = seq;
		found[0].end = false;
		row_version_leaf(enc, &buf, sh->table_id, seq, values, isnull, found[0].computed);
		{
			const uint8 *stored = row_stored_hash(values, isnull, hash_att);

			found[0].has_stored = stored != NULL;
			if (stored != NULL)
				memcpy(found[0].stored, stored, LEDGER_HASH_LEN);
		}
		if (sh->history)
		{
			if (isnull[hc.end_seq - 1] || isnull[hc.op - 1] || isnull[hc.end_at - 1] ||
				isnull[hc.end_by - 1])
				clean = false;
			else
			{
				const uint8 *stored = row_stored_hash(values, isnull, hc.end_hash);

				found[1].seq = DatumGetInt64(values[hc.end_seq - 1]);
				found[1].end = true;
				row_end_leaf(&buf, sh->table_id, found[1].seq, seq, &hc, values, isnull,
							 found[1].computed);
				found[1].has_stored = stored != NULL;
				if (stored != NULL)
					memcpy(found[1].stored, stored, LEDGER_HASH_LEN);
				nleaves = 2;
			}
		}
		MemoryContextSwitchTo(oldcxt);
		MemoryContextReset(rowcxt);
		if (!clean)
			break;

		if (leaves == NULL)
		{
			if (npending + nleaves > MAX_PENDING)
				wait_for_leaves(sh);
			leaves = published_leaves(sh, leaves_given, &seg);

			/*
			 * NULL with unclean set: the pass is given up, or another
			 * participant found a row that is not clean.  NULL otherwise:
			 * not published yet, or published just after published_leaves()
			 * looked; either way the next row looks again.
			 */
			if (leaves == NULL && pg_atomic_read_u32(&sh->unclean) != 0)
				break;
			if (leaves != NULL)
			{
				clean = drain_pending(sh, leaves, pending, npending, &next, &end_next);
				npending = 0;
			}
			else
			{
				pending = pending_room(pending, npending, nleaves, &pending_size);
				memcpy(&pending[npending], found, sizeof(PendingLeaf) * nleaves);
				npending += nleaves;
				continue;
			}
		}
		if (clean)
			clean = compare_leaves(sh, leaves, found, nleaves, &next, &end_next);
	}
	if (clean && npending > 0)
	{
		wait_for_leaves(sh);
		leaves = published_leaves(sh, leaves_given, &seg);
		if (leaves != NULL)
			clean = drain_pending(sh, leaves, pending, npending, &next, &end_next);
	}
	if (!clean)
		pg_atomic_write_u32(&sh->unclean, 1);
	pg_atomic_fetch_add_u64(&sh->rows, rows);

	ExecDropSingleTupleTableSlot(slot);
	table_endscan(scan);
	MemoryContextDelete(rowcxt);
	pfree(buf.data);
	if (pending != NULL)
		pfree(pending);
	if (seg != NULL)
		dsm_detach(seg);
}

/* A parallel worker's part: its user, context and snapshot are the leader's. */
void
ehrledger_verify_worker(dsm_segment *seg pg_attribute_unused(), shm_toc *toc)
{
	PassShared *sh = shm_toc_lookup(toc, PASS_KEY_SHARED, false);
	ParallelTableScanDesc pscan = shm_toc_lookup(toc, PASS_KEY_SCAN, false);
	Relation	rel = table_open(sh->relid, AccessShareLock);

	scan_rows(sh, NULL, rel, pscan);
	table_close(rel, AccessShareLock);
}

/*
 * Maps a large fresh range in one call rather than one page fault per page
 * as it is first written: on a virtual machine a fault can cost 10 us, and
 * a million leaves take 12,000 pages.  The whole 2 MB pages inside it are
 * asked for as transparent huge pages first, which fault in (and are given
 * back) 512 times fewer; where the kernel allows them only when asked
 * (transparent_hugepage "madvise", the default), that is most of the cost
 * of a verify() call's largest arrays.  Only hints: where the kernel lacks
 * them, the pages fault in as usual.
 */
void
prefault(void *start, Size size)
{
#ifdef MADV_HUGEPAGE
	uintptr_t	huge = 2 * 1024 * 1024;
	uintptr_t	huge_from = TYPEALIGN(huge, (uintptr_t) start);
	uintptr_t	huge_to = TYPEALIGN_DOWN(huge, (uintptr_t) start + size);

	if (huge_to > huge_from)
		(void) madvise((void *) huge_from, huge_to - huge_from, MADV_HUGEPAGE);
#endif
#ifdef MADV_POPULATE_WRITE
	{
		uintptr_t	page = (uintptr_t) sysconf(_SC_PAGESIZE);
		uintptr_t	from = TYPEALIGN_DOWN(page, (uintptr_t) start);

		(void) madvise((void *) from, (uintptr_t) start + size - from, MADV_POPULATE_WRITE);
	}
#endif
}

/*
 * Whether the dynamic shared memory a pass over nleaves sealed leaves needs
 * (48 bytes a leaf) is there: a container's /dev/shm is often 64 MB, and a
 * segment that does not fit would fail verify() where checking the rows in
 * this process alone works.  Asks for twice the room, for concurrent users.
 */
bool
row_pass_fits(size_t nleaves)
{
	struct statvfs fs;
	double		need = 2.0 * ((double) nleaves * sizeof(PassLeaf) + 1024 * 1024);

	if (dynamic_shared_memory_type != DSM_IMPL_POSIX)
		return true;
	if (statvfs("/dev/shm", &fs) != 0)
		return false;
	return (double) fs.f_bavail * (double) fs.f_frsize >= need;
}

/*
 * Sets up a pass over rel (open, with its ledger columns) with nworkers
 * workers.  The caller has taken the user and security context the
 * workers are to run with.  The workers may be launched (row_pass_launch())
 * before the leaves are given: row_pass_leaves(), row_pass_leaf() for each
 * and row_pass_publish(), or row_pass_abandon() if they cannot be.
 */
RowPass *
row_pass_begin(Relation rel, int nworkers, int32 table_id, bool history)
{
	RowPass    *p = palloc0(sizeof(RowPass));
	Snapshot	snapshot = GetActiveSnapshot();
	Size		scan_size;

	EnterParallelMode();
	p->rel = rel;
	p->pcxt = CreateParallelContext("ehrledger", "ehrledger_verify_worker", nworkers);
	scan_size = table_parallelscan_estimate(rel, snapshot);
	shm_toc_estimate_chunk(&p->pcxt->estimator, sizeof(PassShared));
	shm_toc_estimate_chunk(&p->pcxt->estimator, scan_size);
	shm_toc_estimate_keys(&p->pcxt->estimator, 2);
	InitializeParallelDSM(p->pcxt);

	p->shared = shm_toc_allocate(p->pcxt->toc, sizeof(PassShared));
	p->shared->relid = RelationGetRelid(rel);
	p->shared->table_id = table_id;
	p->shared->history = history;
	p->shared->leaves_handle = DSM_HANDLE_INVALID;
	p->shared->horizon = 0;
	p->shared->nleaves = 0;
	pg_atomic_init_u32(&p->shared->ready, 0);
	ConditionVariableInit(&p->shared->ready_cv);
	pg_atomic_init_u32(&p->shared->unclean, 0);
	pg_atomic_init_u64(&p->shared->rows, 0);
	shm_toc_insert(p->pcxt->toc, PASS_KEY_SHARED, p->shared);

	p->pscan = shm_toc_allocate(p->pcxt->toc, scan_size);
	table_parallelscan_initialize(rel, p->pscan, snapshot);
	shm_toc_insert(p->pcxt->toc, PASS_KEY_SCAN, p->pscan);
	return p;
}

/*
 * Room for the table's nleaves sealed leaves (by ledger_seq) above none
 * beyond horizon, given with row_pass_leaf(); false when the segment
 * cannot be had (see row_pass_fits()).
 */
bool
row_pass_leaves(RowPass *p, size_t nleaves, int64 horizon)
{
	Size		size = mul_size(Max(nleaves, 1), sizeof(PassLeaf));

	if (!row_pass_fits(nleaves))
		return false;
	p->leaves_seg = dsm_create(size, DSM_CREATE_NULL_IF_MAXSEGMENTS);
	if (p->leaves_seg == NULL)
		return false;
	p->leaves = dsm_segment_address(p->leaves_seg);
	prefault(p->leaves, size);
	p->shared->nleaves = nleaves;
	p->shared->horizon = horizon;
	return true;
}

/* The i-th sealed leaf of the table, in ledger_seq order; claimed if a row already has it. */
void
row_pass_leaf(RowPass *p, size_t i, int64 seq, const uint8 *hash, bool claimed)
{
	PassLeaf   *l = &p->leaves[i];

	l->seq = seq;
	pg_atomic_init_u32(&l->claimed, claimed ? 1 : 0);
	memcpy(l->hash, hash, LEDGER_HASH_LEN);
}

/* Hands the leaves to the workers. */
void
row_pass_publish(RowPass *p)
{
	p->shared->leaves_handle = dsm_segment_handle(p->leaves_seg);
	pg_write_barrier();
	pg_atomic_write_u32(&p->shared->ready, 1);
	ConditionVariableBroadcast(&p->shared->ready_cv);
}

/* Gives the pass up: the workers stop, and the table is checked serially. */
void
row_pass_abandon(RowPass *p)
{
	pg_atomic_write_u32(&p->shared->unclean, 1);
	pg_write_barrier();
	pg_atomic_write_u32(&p->shared->ready, 1);
	ConditionVariableBroadcast(&p->shared->ready_cv);
}

/*
 * Starts the workers; the leader may do other work before it takes its
 * share with row_pass_finish().  Workers that cannot be started
 * (max_worker_processes or max_parallel_workers exhausted) leave their
 * share to the others, the leader at least.
 */
void
row_pass_launch(RowPass *p)
{
	LaunchParallelWorkers(p->pcxt);
	p->launched = p->pcxt->nworkers_launched;
}

/*
 * The leader's share, then the workers' end; true when every row was
 * clean, with the number of rows in *rows.  False means the relation must
 * be checked serially.  The leaves are published or the pass abandoned.
 */
bool
row_pass_finish(RowPass *p, int64 *rows)
{
	Assert(pg_atomic_read_u32(&p->shared->ready) != 0);
	scan_rows(p->shared, p->leaves, p->rel, p->pscan);
	WaitForParallelWorkersToFinish(p->pcxt);
	*rows = (int64) pg_atomic_read_u64(&p->shared->rows);
	return pg_atomic_read_u32(&p->shared->unclean) == 0;
}

/* Whether a row claimed the i-th leaf (after a clean pass). */
bool
row_pass_claimed(RowPass *p, size_t i)
{
	return pg_atomic_read_u32(&p->leaves[i].claimed) != 0;
}

/* How many workers took part. */
int
row_pass_launched(RowPass *p)
{
	return p->launched;
}

void
row_pass_end(RowPass *p)
{
	DestroyParallelContext(p->pcxt);
	if (p->leaves_seg != NULL)
		dsm_detach(p->leaves_seg);
	ExitParallelMode();
	pfree(p);
}
