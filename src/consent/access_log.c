/*
 * access_log.c
 *		The access log: a read of patients' rows is recorded before the
 *		reading statement completes, and stays recorded when the reading
 *		transaction rolls back, because what was read was seen.
 *
 * On a primary the reading backend makes its record durable itself.  It
 * writes the record to the WAL as a non-transactional logical message
 * (nothing a rollback undoes) and, with ehrledger.access_log_wait on,
 * flushes the WAL up to it before the statement completes: concurrent
 * readers share one flush, as concurrent commits do, and no other process
 * is waited for.  Under the same lock as the WAL insert the record goes to
 * its database's ring in shared memory, so the ring's order is the WAL's.
 *
 * The database's writer, a dynamic background worker started on demand and
 * gone after a few idle seconds (it never holds up DROP DATABASE), turns
 * ring records into ledgered rows of ehrledger.access_event, a batch per
 * transaction.  Its commits need not wait for a flush: in the same
 * transaction it moves ehrledger.access_log_position, the WAL position up
 * to which every record is written, and a replication slot keeps the WAL
 * from there (log_slot.c; checkpoints, the one after a crash above all,
 * would remove it).  A ring lives in shared memory and is lost with it
 * (crash, restart, promotion of a standby); the writer's first run in a
 * database afterwards (the sealer starts it) reads the WAL from that
 * position and writes what it finds.  Without a slot (wal_level minimal,
 * no slot free) the writer commits durably and readers wait for it, as
 * they do under a schema before 0.4.  A statement that reads the access
 * log first waits until the writer has written everything appended before
 * it started, so readers of the log see it as if every read had written
 * its row itself.
 *
 * On a standby nothing can be written: the writer ships the ring's records
 * to the primary (standby.c), and a reading backend waits until the
 * primary has committed them.  Under a schema before 0.4 (no position to
 * keep) the writer commits synchronously and readers wait for it, as the
 * access log worked then.
 *
 * Next: the records are ledgered rows (ehrledger.access_event), sealed by
 * ledger/seal.c like any other; src/fhir renders them as AuditEvents.
 */
#include "postgres.h"

#include <dirent.h>

#include "access/xact.h"
#include "access/xlog.h"
#include "access/xlog_internal.h"
#include "access/xlogreader.h"
#include "access/xlogrecovery.h"
#include "access/xlogutils.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/async.h"
#include "commands/extension.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "parser/parsetree.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "replication/message.h"
#include "replication/syncrep.h"
#include "storage/condition_variable.h"
#include "storage/fd.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "tcop/tcopprot.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/pg_lsn.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "consent/consent.h"

#define ACCESS_LOG_RINGS		8
/* A record larger than this is split by patients (see access_log_send). */
#define ACCESS_RECORD_MAX		(ACCESS_RING_SIZE / 4)
#define WRITER_IDLE_EXIT_MS		2000
#define WRITER_START_RETRY_MS	10000
#define READER_WAIT_LIMIT_MS	60000
/* How long the writer of a primary gathers records before a transaction. */
#define WRITER_BATCH_DELAY_MS	25
#define WRITER_RETRY_MS			1000
/* Recent ranges of records that could not be written, for their readers. */
#define FAILED_RANGES			64
/* Databases whose WAL the writer has searched since shared memory began. */
#define MAX_SCANNED				256
/* The logical message prefix of a read record; the version is part of it. */
#define ACCESS_WAL_PREFIX		"ehrledger.read.1"
/* How many bytes of WAL records the search gathers before writing them. */
#define SCAN_BATCH				(64 * 1024)

typedef struct FailedRange
{
	uint64		from;
	uint64		to;
} FailedRange;

typedef struct AccessRing
{
	Oid			dboid;			/* InvalidOid: free */
	pid_t		writer_pid;		/* 0: no writer running */
	Latch	   *writer_latch;
	bool		starting;
	TimestampTz start_requested;
	bool		wal_durable;	/* records are durable in the WAL: readers flush it */
	uint64		head;			/* bytes appended, ever */
	uint64		done;			/* bytes the writer has written, ever */
	ConditionVariable cv;		/* broadcast when done advances */
	FailedRange failed[FAILED_RANGES];
	int			nfailed;
	char		why[256];		/* why the latest records failed */
	char		data[ACCESS_RING_SIZE];
} AccessRing;

typedef struct AccessLogShared
{
	LWLock	   *lock;
	Oid			scanned[MAX_SCANNED];
	int			nscanned;
	uint8		standby_session[16];
	bool		have_session;
	bool		slot_warned;	/* said once why no slot keeps the WAL */
	AccessRing	rings[ACCESS_LOG_RINGS];
} AccessLogShared;

static AccessLogShared *shared = NULL;
static shmem_request_hook_type prev_shmem_request = NULL;
static shmem_startup_hook_type prev_shmem_startup = NULL;
static ExecutorStart_hook_type prev_executor_start = NULL;

static void
access_log_shmem_request(void)
{
	if (prev_shmem_request)
		prev_shmem_request();
	RequestAddinShmemSpace(MAXALIGN(sizeof(AccessLogShared)));
	RequestNamedLWLockTranche("ehrledger access log", 1);
}

static void
access_log_shmem_startup(void)
{
	bool		found;
	int			i;

	if (prev_shmem_startup)
		prev_shmem_startup();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	shared = ShmemInitStruct("ehrledger access log", sizeof(AccessLogShared), &found);
	if (!found)
	{
		memset(shared, 0, offsetof(AccessLogShared, rings));
		shared->lock = &(GetNamedLWLockTranche("ehrledger access log"))->lock;
		for (i = 0; i < ACCESS_LOG_RINGS; i++)
		{
			memset(&shared->rings[i], 0, offsetof(AccessRing, data));
			ConditionVariableInit(&shared->rings[i].cv);
		}
	}
	LWLockRelease(AddinShmemInitLock);
}

/* Bytes at a ring position, wrapping around. */
static void
ring_put(AccessRing *ring, uint64 pos, const char *src, size_t len)
{
	size_t		off = pos % ACCESS_RING_SIZE;
	size_t		first = Min(len, ACCESS_RING_SIZE - off);

	memcpy(ring->data + off, src, first);
	memcpy(ring->data, src + first, len - first);
}

static void
ring_get(AccessRing *ring, uint64 pos, char *dst, size_t len)
{
	size_t		off = pos % ACCESS_RING_SIZE;
	size_t		first = Min(len, ACCESS_RING_SIZE - off);

	memcpy(dst, ring->data + off, first);
	memcpy(dst + first, ring->data, len - first);
}

static void
put_str(StringInfo buf, const char *s)
{
	put_u32(buf, s ? (uint32) strlen(s) : PG_UINT32_MAX);
	if (s)
		appendBinaryStringInfo(buf, s, strlen(s));
}

/*
 * The client's IP address as text, as inet_client_addr() gives it; NULL for
 * a Unix-socket connection and a background worker.  Found once a session:
 * a connection's address does not change, and the abort path must not fail.
 */
const char *
access_log_client_addr(void)
{
	static bool found = false;
	static char addr[64];
	static bool known = false;

	if (!found)
	{
		LOCAL_FCINFO(fcinfo, 0);
		Datum		inet;

		InitFunctionCallInfoData(*fcinfo, NULL, 0, InvalidOid, NULL, NULL);
		inet = inet_client_addr(fcinfo);
		if (!fcinfo->isnull)
		{
			char	   *text = DatumGetCString(DirectFunctionCall1(inet_out, inet));

			known = strlcpy(addr, text, sizeof(addr)) < sizeof(addr);
		}
		found = true;
	}
	return known ? addr : NULL;
}

/* The ring of a database, claimed if it has none (and claim).  Lock held. */
static AccessRing *
ring_of(Oid dboid, bool claim)
{
	AccessRing *free_ring = NULL;
	int			i;

	for (i = 0; i < ACCESS_LOG_RINGS; i++)
	{
		AccessRing *ring = &shared->rings[i];

		if (ring->dboid == dboid)
			return ring;
		if (ring->dboid == InvalidOid && free_ring == NULL)
			free_ring = ring;
	}
	if (free_ring != NULL && claim)
	{
		free_ring->dboid = dboid;
		free_ring->wal_durable = false;
		return free_ring;
	}
	return NULL;
}

/* Whether the writer has searched this database's WAL since shared memory began.  Lock held. */
static bool
db_scanned(Oid dboid)
{
	int			i;

	for (i = 0; i < shared->nscanned; i++)
		if (shared->scanned[i] == dboid)
			return true;
	return false;
}

/*
 * Starts the writer of a ring unless one runs or is starting.  Lock held
 * exclusively; returns whether the caller must register the worker.
 */
static bool
writer_needed(AccessRing *ring)
{
	TimestampTz now = GetCurrentTimestamp();

	if (ring->writer_pid != 0)
		return false;
	if (ring->starting &&
		!TimestampDifferenceExceeds(ring->start_requested, now, WRITER_START_RETRY_MS))
		return false;
	ring->starting = true;
	ring->start_requested = now;
	return true;
}

static bool
start_writer(AccessRing *ring, bool quiet)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	/* A hot standby's writer ships its reads to the primary. */
	worker.bgw_start_time = BgWorkerStart_ConsistentState;
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "ehrledger");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "ehrledger_access_log_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "ehrledger access log writer");
	snprintf(worker.bgw_type, BGW_MAXLEN, "ehrledger access log writer");
	worker.bgw_main_arg = Int32GetDatum(ring - shared->rings);
	if (RegisterDynamicBackgroundWorker(&worker, NULL))
		return true;
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	ring->starting = false;
	LWLockRelease(shared->lock);
	if (!quiet)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("could not start the ehrledger access log writer"),
				 errdetail("Reads of patients' rows must be recorded before they complete."),
				 errhint("Raise max_worker_processes.")));
	return false;
}

/*
 * Appends one record to this database's ring (*ring_out); on a primary it
 * is first written to the WAL, under the ring's lock, its end position in
 * *lsn.  Returns the record's end position in the ring, or 0 if it was
 * dropped (while aborting, with the ring full).
 */
static uint64
append_record(const StringInfo payload, bool aborting, AccessRing **ring_out,
			  XLogRecPtr *lsn, bool *durable)
{
	AccessRing *ring;
	uint64		end = 0;
	bool		launch;
	Latch	   *latch = NULL;
	bool		primary = !RecoveryInProgress();
	uint32		len = ACCESS_ENTRY_HEADER + payload->len;

	for (;;)
	{
		LWLockAcquire(shared->lock, LW_EXCLUSIVE);
		ring = ring_of(MyDatabaseId, true);
		if (ring == NULL)
		{
			LWLockRelease(shared->lock);
			if (aborting)
				return 0;
			ereport(ERROR,
					(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
					 errmsg("ehrledger records reads in at most %d databases at a time",
							ACCESS_LOG_RINGS)));
		}
		launch = writer_needed(ring);
		if (ACCESS_RING_SIZE - (ring->head - ring->done) >= (uint64) len)
		{
			uint32		nlen = pg_hton32(len);
			uint64		nlsn;

			*lsn = InvalidXLogRecPtr;
			if (primary)
			{
				/*
				 * Not the transaction's own WAL: its commit (a read-only
				 * one's, mostly) need not wake the WAL writer for it.  A
				 * reader that waits flushes the record itself.
				 */
				XLogRecPtr	last = XactLastRecEnd;

				*lsn = LogLogicalMessage(ACCESS_WAL_PREFIX, payload->data, payload->len, false);
				XactLastRecEnd = last;
			}
			nlsn = pg_hton64((uint64) *lsn);
			ring_put(ring, ring->head, (const char *) &nlen, 4);
			ring_put(ring, ring->head + 4, (const char *) &nlsn, 8);
			ring_put(ring, ring->head + ACCESS_ENTRY_HEADER, payload->data, payload->len);
			ring->head += len;
			end = ring->head;
			latch = ring->writer_latch;
			*durable = ring->wal_durable;
		}
		LWLockRelease(shared->lock);
		if (launch)
			start_writer(ring, aborting);
		if (end != 0 || aborting)
			break;
		/* The ring is full: wait for the writer to make room. */
		ConditionVariableTimedSleep(&ring->cv, 1000, PG_WAIT_EXTENSION);
	}
	ConditionVariableCancelSleep();
	if (latch)
		SetLatch(latch);
	if (end == 0)
		ereport(LOG,
				(errmsg("ehrledger access log is full; a read by an aborting transaction was not recorded")));
	*ring_out = ring;
	return end;
}

/* Whether the records ending at end failed, and why (in the ring).  Lock held. */
static bool
record_failed(AccessRing *ring, uint64 end)
{
	int			i;

	for (i = 0; i < Min(ring->nfailed, FAILED_RANGES); i++)
		if (end > ring->failed[i].from && end <= ring->failed[i].to)
			return true;
	return false;
}

/*
 * Waits until the writer has written everything up to end (the primary has
 * committed it, on a standby).  A ring is given up (and may serve another
 * database) only once all of it is written.  With until_scanned, also until
 * the writer has searched the WAL for records a lost ring held.
 */
static void
wait_for_writer(AccessRing *ring, uint64 end, bool report_failure, bool until_scanned)
{
	TimestampTz started = GetCurrentTimestamp();

	for (;;)
	{
		bool		launch;
		bool		written;
		bool		failed;
		char		why[sizeof(ring->why)];

		LWLockAcquire(shared->lock, LW_EXCLUSIVE);
		written = ring->dboid != MyDatabaseId ||
			(ring->done >= end && (!until_scanned || db_scanned(MyDatabaseId)));
		failed = written && report_failure && ring->dboid == MyDatabaseId && record_failed(ring, end);
		if (failed)
			strlcpy(why, ring->why, sizeof(why));
		launch = !written && writer_needed(ring);
		LWLockRelease(shared->lock);
		if (failed)
			ereport(ERROR,
					(errcode(RecoveryInProgress() ? ERRCODE_LEDGER_PRIMARY_UNREACHABLE : ERRCODE_INTERNAL_ERROR),
					 errmsg("this read could not be recorded in the ehrledger access log"),
					 errdetail("%s", why),
					 RecoveryInProgress()
					 ? errhint("On a standby a read is recorded on the primary before it is returned; see ehrledger.standby_primary_down.")
					 : errhint("See the server log for the access log writer's warning.")));
		if (written)
			break;
		if (launch)
			start_writer(ring, false);
		if (TimestampDifferenceExceeds(started, GetCurrentTimestamp(), READER_WAIT_LIMIT_MS))
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_RESOURCES),
					 errmsg("the ehrledger access log writer did not record this read within %d seconds",
							READER_WAIT_LIMIT_MS / 1000),
					 errhint("See the server log for the writer's errors.")));
		ConditionVariableTimedSleep(&ring->cv, 1000, PG_WAIT_EXTENSION);
	}
	ConditionVariableCancelSleep();
}

/* A record's bytes: the same in the WAL, the ring and a standby's batch. */
static void
encode_record(StringInfo rec, TimestampTz at, int32 table_id, const char *action,
			  const char *actor_id, const char *pg_role)
{
	resetStringInfo(rec);
	put_u64(rec, (uint64) at);
	put_u32(rec, (uint32) table_id);
	put_str(rec, action);
	put_str(rec, actor_id);
	put_str(rec, pg_role);
	put_str(rec, access_log_client_addr());
	put_u32(rec, 0);			/* the number of patients, filled in below */
}

/*
 * What this backend's statement has recorded and not yet waited for: the
 * WAL position to flush to, and the ring position up to which the writer
 * must have written records that are not durable in the WAL (a standby's,
 * or under a schema before 0.4).
 */
static AccessRing *owed_ring = NULL;
static XLogRecPtr owed_lsn = InvalidXLogRecPtr;
static uint64 owed_writer_first = 0;	/* the first such record's end */
static uint64 owed_writer_end = 0;

/*
 * Records a read of the given patients' rows: appends the record without
 * waiting; access_log_settle() waits.  While aborting it raises no errors.
 *
 * A read of many patients is split into records of about
 * ACCESS_RECORD_MAX bytes, each a log entry of its own, but never so that
 * a record names a single patient of a statement that read several: an
 * entry of one patient is a read of that patient's rows, an entry of
 * several a search (BALP PatientRead and PatientQuery, fhir.sql).
 */
void
access_log_send(TimestampTz at, const char *actor_id, const char *pg_role,
				const char *action, int32 table_id, List *patients, List *bases,
				bool aborting)
{
	StringInfoData rec;
	ListCell   *p,
			   *b;
	uint32		count = 0;
	int			left = list_length(patients);
	int			count_at = 0;

	initStringInfo(&rec);
	forboth(p, patients, b, bases)
	{
		if (count == 0)
		{
			encode_record(&rec, at, table_id, action, actor_id, pg_role);
			count_at = rec.len - 4;
		}
		put_str(&rec, lfirst(p));
		put_str(&rec, lfirst(b));
		count++;
		left--;
		if (left == 0 || (rec.len > ACCESS_RECORD_MAX && count >= 2 && left >= 2))
		{
			uint32		n = pg_hton32(count);
			XLogRecPtr	lsn = InvalidXLogRecPtr;
			bool		durable = false;
			AccessRing *ring = NULL;
			uint64		end;

			memcpy(rec.data + count_at, &n, 4);
			end = append_record(&rec, aborting, &ring, &lsn, &durable);
			if (end != 0)
			{
				owed_ring = ring;
				owed_lsn = Max(owed_lsn, lsn);
				if (!durable && owed_writer_first == 0)
					owed_writer_first = end;
				if (!durable)
					owed_writer_end = Max(owed_writer_end, end);
			}
			count = 0;
		}
	}
	pfree(rec.data);
}

/*
 * With wait, returns once everything this statement recorded is durable:
 * flushed to the WAL on a primary (as durable as a commit of this session
 * would be), committed on the primary for a standby.  Without, forgets it.
 */
void
access_log_settle(bool wait)
{
	XLogRecPtr	lsn = owed_lsn;
	uint64		writer_first = owed_writer_first;
	uint64		writer_end = owed_writer_end;
	AccessRing *ring = owed_ring;

	owed_lsn = InvalidXLogRecPtr;
	owed_writer_first = 0;
	owed_writer_end = 0;
	owed_ring = NULL;
	if (!wait)
		return;
	if (!XLogRecPtrIsInvalid(lsn))
	{
		XLogFlush(lsn);
		SyncRepWaitForLSN(lsn, false);
	}
	/* (a statement's first record may have failed where its last did not) */
	if (writer_first != 0 && writer_first != writer_end)
		wait_for_writer(ring, writer_first, true, false);
	if (writer_end != 0)
		wait_for_writer(ring, writer_end, true, false);
}

/* The OID of ehrledger.access_event, while this backend knows it. */
static Oid	access_event_relid = InvalidOid;

static void
access_log_relcache_callback(Datum arg, Oid relid)
{
	(void) arg;
	if (relid == InvalidOid || relid == access_event_relid)
		access_event_relid = InvalidOid;
}

/*
 * Whether this database's writer may have something left to write, read
 * without the lock: the records that matter were appended by statements
 * that completed before ours began, so they are seen.
 */
static bool
log_pending(void)
{
	int			i;
	bool		scanned = false;

	pg_read_barrier();
	for (i = 0; i < Min(shared->nscanned, MAX_SCANNED); i++)
		scanned |= shared->scanned[i] == MyDatabaseId;
	if (!scanned)
		return true;
	for (i = 0; i < ACCESS_LOG_RINGS; i++)
	{
		AccessRing *ring = &shared->rings[i];

		if (ring->dboid == MyDatabaseId && ring->head != ring->done)
			return true;
	}
	return false;
}

/*
 * Before a statement that reads (or writes) ehrledger.access_event runs in
 * a client's session, the writer writes everything appended so far, and,
 * after a restart, what the WAL holds that the lost ring held: the log
 * then holds every read that completed before the statement began, as when
 * readers wrote their rows themselves.  True if the statement reads
 * the log: its snapshot, taken before, may predate the writer's last commit.
 */
static bool
catch_up_if_reading_log(PlannedStmt *stmt)
{
	AccessRing *ring;
	uint64		target = 0;
	bool		launch = false;
	ListCell   *lc;
	bool		reads_log = false;

	if (MyBackendType != B_BACKEND || !OidIsValid(MyDatabaseId) || RecoveryInProgress())
		return false;
	if (!OidIsValid(access_event_relid))
	{
		access_event_relid = ledger_owned_relid("access_event");
		if (!OidIsValid(access_event_relid))
			return false;
	}
	foreach(lc, stmt->rtable)
	{
		RangeTblEntry *rte = lfirst(lc);

		if (rte->rtekind == RTE_RELATION && rte->relid == access_event_relid)
			reads_log = true;
	}
	/* An extension script creates the log: its writer could not see it yet. */
	if (!reads_log || creating_extension)
		return false;
	if (!log_pending())
		return true;

	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	ring = ring_of(MyDatabaseId, true);
	if (ring != NULL)
	{
		target = ring->head;
		launch = writer_needed(ring);
	}
	LWLockRelease(shared->lock);
	if (ring == NULL)
		return true;
	if (launch)
		start_writer(ring, false);
	wait_for_writer(ring, target, false, true);
	return true;
}

/*
 * A statement's snapshot is taken before it starts (for a query in a
 * function, before the calling statement started): under READ COMMITTED a
 * statement that reads the log takes a new one, which sees what the writer
 * wrote meanwhile.  (A REPEATABLE READ transaction sees the log as of its
 * snapshot.)
 */
static void
access_log_executor_start(QueryDesc *queryDesc, int eflags)
{
	if ((eflags & EXEC_FLAG_EXPLAIN_ONLY) == 0 &&
		catch_up_if_reading_log(queryDesc->plannedstmt) &&
		queryDesc->snapshot != NULL && !IsolationUsesXactSnapshot())
	{
		UnregisterSnapshot(queryDesc->snapshot);
		queryDesc->snapshot = RegisterSnapshot(GetLatestSnapshot());
	}
	if (prev_executor_start)
		prev_executor_start(queryDesc, eflags);
	else
		standard_ExecutorStart(queryDesc, eflags);
}

void
access_log_init(void)
{
	prev_shmem_request = shmem_request_hook;
	shmem_request_hook = access_log_shmem_request;
	prev_shmem_startup = shmem_startup_hook;
	shmem_startup_hook = access_log_shmem_startup;
	prev_executor_start = ExecutorStart_hook;
	ExecutorStart_hook = access_log_executor_start;
	CacheRegisterRelcacheCallback(access_log_relcache_callback, (Datum) 0);
}

/* Reads a string written by put_str, within end; false if it does not fit. */
static bool
get_str(const char **p, const char *end, char **out)
{
	uint32		len;

	if (end - *p < 4)
		return false;
	len = get_u32((const uint8 *) *p);
	*p += 4;
	if (len == PG_UINT32_MAX)
	{
		*out = NULL;
		return true;
	}
	if ((uint64) (end - *p) < len || memchr(*p, '\0', len) != NULL)
		return false;
	*out = pnstrdup(*p, len);
	*p += len;
	return true;
}

/*
 * Decodes a record's payload into rec (palloc'd in the current context);
 * false if the bytes are not exactly one well-formed record.
 */
bool
access_log_decode(const char *payload, size_t len, AccessRecord *rec)
{
	const char *p = payload;
	const char *end = payload + len;
	uint32		n;
	uint32		i;

	memset(rec, 0, sizeof(*rec));
	if (len < 12)
		return false;
	rec->at = (TimestampTz) get_u64((const uint8 *) p);
	rec->table_id = (int32) get_u32((const uint8 *) p + 8);
	p += 12;
	if (!get_str(&p, end, &rec->action) || rec->action == NULL ||
		!get_str(&p, end, &rec->actor) ||
		!get_str(&p, end, &rec->pg_role) || rec->pg_role == NULL ||
		strlen(rec->pg_role) >= NAMEDATALEN ||
		!get_str(&p, end, &rec->client_addr) || end - p < 4)
		return false;
	n = get_u32((const uint8 *) p);
	p += 4;
	/* Each patient takes at least 8 bytes: a bound before allocating. */
	if (n == 0 || n > (uint64) (end - p) / 8)
		return false;
	rec->npatients = n;
	rec->patients = palloc(sizeof(char *) * n);
	rec->bases = palloc(sizeof(char *) * n);
	for (i = 0; i < n; i++)
		if (!get_str(&p, end, &rec->patients[i]) || rec->patients[i] == NULL ||
			!get_str(&p, end, &rec->bases[i]) || rec->bases[i] == NULL)
			return false;
	return p == end;
}

static SPIPlanPtr insert_plan = NULL;
static bool insert_plan_with_addr = false;

/*
 * The one INSERT of a batch: a row per record, the patients of record i
 * the slice lo[i]:hi[i] of the flat patient and basis arrays.  A schema
 * before 0.4 has no client_addr.
 */
static SPIPlanPtr
prepare_insert(bool with_addr)
{
	Oid			types[11] = {TIMESTAMPTZARRAYOID, TEXTARRAYOID, NAMEARRAYOID, TEXTARRAYOID,
		INT4ARRAYOID, TEXTARRAYOID, TEXTARRAYOID, INT4ARRAYOID, INT4ARRAYOID, TEXTARRAYOID,
	INETARRAYOID};
	SPIPlanPtr	plan;
	StringInfoData query;

	if (insert_plan != NULL && insert_plan_with_addr == with_addr)
		return insert_plan;
	if (insert_plan != NULL)
		SPI_freeplan(insert_plan);
	insert_plan = NULL;
	/* One plan for every batch: its arrays' contents do not change the best plan. */
	initStringInfo(&query);
	appendStringInfo(&query,
					 "INSERT INTO ehrledger.access_event"
					 " (at, actor, pg_role, action, table_id, patients, bases, detail%s)"
					 " SELECT r.at, r.actor, r.pg_role, r.action, r.table_id,"
					 " ($6)[r.lo:r.hi], ($7)[r.lo:r.hi], r.detail%s"
					 " FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2), pg_catalog.unnest($3),"
					 " pg_catalog.unnest($4), pg_catalog.unnest($5), pg_catalog.unnest($8),"
					 " pg_catalog.unnest($9), pg_catalog.unnest($10)%s) WITH ORDINALITY"
					 " AS r(at, actor, pg_role, action, table_id, lo, hi, detail%s, n)"
					 " ORDER BY r.n RETURNING ledger_seq",
					 with_addr ? ", client_addr" : "", with_addr ? ", r.addr" : "",
					 with_addr ? ", pg_catalog.unnest($11)" : "", with_addr ? ", addr" : "");
	plan = SPI_prepare_cursor(query.data, with_addr ? 11 : 10, types, CURSOR_OPT_GENERIC_PLAN);
	pfree(query.data);
	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	if (SPI_keepplan(plan) != 0)
		elog(ERROR, "SPI_keepplan failed");
	insert_plan = plan;
	insert_plan_with_addr = with_addr;
	return plan;
}

/* An array of n datums of a type, NULL elements where nulls[i]. */
static Datum
datum_array(Datum *elems, bool *nulls, int n, Oid type)
{
	int16		typlen;
	bool		typbyval;
	char		typalign;
	int			dims[1] = {n};
	int			lbs[1] = {1};

	get_typlenbyvalalign(type, &typlen, &typbyval, &typalign);
	return PointerGetDatum(construct_md_array(elems, nulls, 1, dims, lbs, type,
											  typlen, typbyval, typalign));
}

/*
 * Inserts records into ehrledger.access_event in one statement, as the
 * ledger's owner, and announces each row on channel ehrledger_events as
 * _log_access() does.  SPI is connected; returns the rows inserted.
 */
int
access_log_insert(AccessRecord *recs, int n, const char *detail)
{
	bool		with_addr = get_attnum(ledger_relid("access_event"), "client_addr") != InvalidAttrNumber;
	int			total = 0;
	int			i,
				j,
				k = 0;
	Datum	   *at = palloc(sizeof(Datum) * n);
	Datum	   *actor = palloc(sizeof(Datum) * n);
	bool	   *actor_null = palloc(sizeof(bool) * n);
	Datum	   *role = palloc(sizeof(Datum) * n);
	Datum	   *action = palloc(sizeof(Datum) * n);
	Datum	   *tid = palloc(sizeof(Datum) * n);
	Datum	   *lo = palloc(sizeof(Datum) * n);
	Datum	   *hi = palloc(sizeof(Datum) * n);
	Datum	   *det = palloc(sizeof(Datum) * n);
	bool	   *det_null = palloc(sizeof(bool) * n);
	Datum	   *addr = palloc(sizeof(Datum) * n);
	bool	   *addr_null = palloc(sizeof(bool) * n);
	Datum	   *patients;
	Datum	   *bases;
	Datum		values[11];
	UserSwitch	sw;
	SPIPlanPtr	plan;
	int			ret;
	uint64		row;

	for (i = 0; i < n; i++)
		total += recs[i].npatients;
	patients = palloc(sizeof(Datum) * Max(total, 1));
	bases = palloc(sizeof(Datum) * Max(total, 1));
	for (i = 0; i < n; i++)
	{
		at[i] = TimestampTzGetDatum(recs[i].at);
		actor_null[i] = recs[i].actor == NULL;
		actor[i] = actor_null[i] ? (Datum) 0 : CStringGetTextDatum(recs[i].actor);
		role[i] = DirectFunctionCall1(namein, CStringGetDatum(recs[i].pg_role));
		action[i] = CStringGetTextDatum(recs[i].action);
		tid[i] = Int32GetDatum(recs[i].table_id);
		lo[i] = Int32GetDatum(k + 1);
		for (j = 0; j < recs[i].npatients; j++, k++)
		{
			patients[k] = CStringGetTextDatum(recs[i].patients[j]);
			bases[k] = CStringGetTextDatum(recs[i].bases[j]);
		}
		hi[i] = Int32GetDatum(k);
		det_null[i] = detail == NULL;
		det[i] = detail ? CStringGetTextDatum(detail) : (Datum) 0;
		addr_null[i] = recs[i].client_addr == NULL;
		addr[i] = addr_null[i] ? (Datum) 0
			: DirectFunctionCall1(inet_in, CStringGetDatum(recs[i].client_addr));
	}
	values[0] = datum_array(at, NULL, n, TIMESTAMPTZOID);
	values[1] = datum_array(actor, actor_null, n, TEXTOID);
	values[2] = datum_array(role, NULL, n, NAMEOID);
	values[3] = datum_array(action, NULL, n, TEXTOID);
	values[4] = datum_array(tid, NULL, n, INT4OID);
	values[5] = datum_array(patients, NULL, total, TEXTOID);
	values[6] = datum_array(bases, NULL, total, TEXTOID);
	values[7] = datum_array(lo, NULL, n, INT4OID);
	values[8] = datum_array(hi, NULL, n, INT4OID);
	values[9] = datum_array(det, det_null, n, TEXTOID);
	values[10] = datum_array(addr, addr_null, n, INETOID);

	user_switch_ledger_owner(&sw);
	plan = prepare_insert(with_addr);
	ret = SPI_execute_plan(plan, values, NULL, false, 0);
	user_switch_end(&sw);
	if (ret != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "SPI_execute_plan failed: %s", SPI_result_code_string(ret));
	for (row = 0; row < SPI_processed; row++)
	{
		bool		isnull;
		int64		seq = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[row],
													  SPI_tuptable->tupdesc, 1, &isnull));

		Async_Notify("ehrledger_events", psprintf("{\"event_seq\" : " INT64_FORMAT "}", seq));
	}
	return (int) SPI_processed;
}

/*
 * For the sealer's round over the access log slots (log_slot.c): whether
 * every read of a database is written, by commits that are flushed, and
 * the WAL position that holds at (no record appended later can precede it:
 * records take their position under the same lock).  A database that
 * still has records to write, or the WAL to search after a restart, gets
 * its writer started if it has none.
 */
bool
access_log_complete_to(Oid dboid, XLogRecPtr *lsn)
{
	AccessRing *ring;
	bool		complete = false;
	bool		launch = false;

	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	ring = ring_of(dboid, false);
	if (ring == NULL && db_scanned(dboid))
	{
		*lsn = GetXLogInsertRecPtr();
		complete = true;
	}
	else
	{
		if (ring == NULL)
			ring = ring_of(dboid, true);
		if (ring != NULL && (ring->head != ring->done || !db_scanned(dboid)))
			launch = writer_needed(ring);
	}
	LWLockRelease(shared->lock);
	if (launch)
		start_writer(ring, true);
	return complete;
}

/* The writer's own state: its ring, and on a primary how far the log is written. */
static AccessRing *writer_ring = NULL;
static bool position_kept = false;	/* ehrledger.access_log_position is kept */
/*
 * The extension this writer writes into: records appended before a DROP
 * EXTENSION are not the log of one created since (whose position starts
 * after them), so a writer that finds another one leaves it to a new writer.
 */
static Oid	writer_extension = InvalidOid;
static bool extension_changed = false;

/*
 * Whether the extension this writer writes into was dropped since it
 * started.  In a transaction.
 */
static bool
extension_replaced(void)
{
	return OidIsValid(writer_extension) && get_extension_oid("ehrledger", true) != writer_extension;
}
static XLogRecPtr written_to = InvalidXLogRecPtr;
static bool written_to_at_rest = false;	/* written_to was set with nothing pending */
static XLogRecPtr written_max = InvalidXLogRecPtr;	/* the newest record this writer wrote */
static SPIPlanPtr position_plan = NULL;
/* A replication slot keeps the WAL from the first record not yet written (log_slot.c). */
static bool wal_held = false;
/* The newest position written whose commit may not be flushed yet, and that commit. */
static XLogRecPtr unflushed_position = InvalidXLogRecPtr;
static XLogRecPtr unflushed_commit = InvalidXLogRecPtr;

/* A ring entry's parts; the entry's length, or 0 if it is malformed. */
static uint32
entry_parts(const char *p, size_t avail, XLogRecPtr *lsn, const char **payload, uint32 *plen)
{
	uint32		len;

	if (avail < ACCESS_ENTRY_HEADER)
		return 0;
	len = get_u32((const uint8 *) p);
	if (len < ACCESS_ENTRY_HEADER || len > avail)
		return 0;
	*lsn = (XLogRecPtr) get_u64((const uint8 *) p + 4);
	*payload = p + ACCESS_ENTRY_HEADER;
	*plen = len - ACCESS_ENTRY_HEADER;
	return len;
}

/*
 * Lets the slot give up the WAL before position once the commit that moved
 * the position there is flushed (with flush, flushes it): until then a
 * crash could undo that commit, and the search after the restart starts
 * from the position before it.  Otherwise the position before, if its
 * commit is flushed by now.
 */
static void
slot_follow(XLogRecPtr position, XLogRecPtr commit, bool flush)
{
	XLogRecPtr	to = InvalidXLogRecPtr;
	const char *why = NULL;

	if (flush)
		XLogFlush(commit);
	if (GetFlushRecPtr(NULL) >= commit)
	{
		to = position;
		unflushed_position = InvalidXLogRecPtr;
	}
	else
	{
		if (!XLogRecPtrIsInvalid(unflushed_position) && GetFlushRecPtr(NULL) >= unflushed_commit)
			to = unflushed_position;
		unflushed_position = position;
		unflushed_commit = commit;
	}
	/* A slot a DBA dropped is made again. */
	if (XLogRecPtrIsInvalid(to) || access_log_slot_release_to(to) || access_log_slot_hold(to, &why))
		return;
	ereport(WARNING,
			(errmsg("ehrledger access log: the replication slot that keeps its WAL is gone and could not be made again: %s", why),
			 errdetail("Until the writer starts again, a crash can lose reads it has not written yet.")));
}

/*
 * Writes the entries in buf in one transaction, those the WAL position
 * already covers excepted, and moves the position to position (if valid)
 * in the same transaction.
 */
static void
write_entries(const char *buf, size_t len, XLogRecPtr position, bool at_rest)
{
	AccessRecord *recs;
	int			n = 0;
	const char *p = buf;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	if (extension_replaced())
	{
		extension_changed = true;
		elog(ERROR, "the ehrledger extension was dropped since this access log writer started");
	}
	/* Everything of the batch lives in the transaction's memory. */
	recs = palloc(sizeof(AccessRecord) * (len / ACCESS_ENTRY_HEADER + 1));
	pgstat_report_activity(STATE_RUNNING, "recording reads in ehrledger.access_event");
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	while (p < buf + len)
	{
		XLogRecPtr	lsn;
		const char *payload;
		uint32		plen;
		uint32		elen = entry_parts(p, buf + len - p, &lsn, &payload, &plen);

		if (elen == 0)
			elog(ERROR, "malformed access log ring entry");
		p += elen;
		if (position_kept && !XLogRecPtrIsInvalid(lsn) && lsn <= written_to)
			continue;			/* written before the ring was lost, or by the search */
		if (!access_log_decode(payload, plen, &recs[n]))
			elog(ERROR, "malformed access log record");
		position = Max(position, lsn);
		n++;
	}
	if (n > 0)
		access_log_insert(recs, n, NULL);
	if (position_kept && !XLogRecPtrIsInvalid(position) && position > written_to)
	{
		Datum		values[2] = {LSNGetDatum(position), BoolGetDatum(at_rest)};

		if (position_plan == NULL)
		{
			Oid			types[2] = {LSNOID, BOOLOID};

			position_plan = SPI_prepare("UPDATE ehrledger.access_log_position SET lsn = $1, at_rest = $2",
										2, types);
			if (position_plan == NULL || SPI_keepplan(position_plan) != 0)
				elog(ERROR, "could not prepare the update of ehrledger.access_log_position");
		}
		if (SPI_execute_plan(position_plan, values, NULL, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "could not update ehrledger.access_log_position");
	}
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	written_max = Max(written_max, position);
	if (position_kept && position > written_to)
	{
		written_to = position;
		if (wal_held)
			slot_follow(position, XactLastCommitEnd, false);
	}
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
}

/* Remembers that the records ending in (from, to] failed, and why.  Lock held. */
static void
note_failed(uint64 from, uint64 to, const char *why)
{
	FailedRange *last = writer_ring->nfailed > 0
		? &writer_ring->failed[(writer_ring->nfailed - 1) % FAILED_RANGES] : NULL;

	if (last != NULL && last->to == from)
		last->to = to;
	else
	{
		writer_ring->failed[writer_ring->nfailed % FAILED_RANGES].from = from;
		writer_ring->failed[writer_ring->nfailed % FAILED_RANGES].to = to;
		writer_ring->nfailed++;
	}
	strlcpy(writer_ring->why, why, sizeof(writer_ring->why));
}

void
access_log_writer_failed(uint64 from, uint64 to, const char *why)
{
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	note_failed(from, to, why);
	writer_ring->done = to;
	LWLockRelease(shared->lock);
	ConditionVariableBroadcast(&writer_ring->cv);
}

void
access_log_writer_done(uint64 to)
{
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	writer_ring->done = to;
	LWLockRelease(shared->lock);
	ConditionVariableBroadcast(&writer_ring->cv);
}

/*
 * Writes a batch of ring entries.  Where readers wait for the writer (no
 * slot keeps the WAL, or a schema before 0.4) a batch that fails is
 * written record by record, and a record that cannot be written fails its
 * reader.  Where the records are
 * durable in the WAL, their readers have their results already: a batch
 * that fails is tried again a second later, and the ring fills meanwhile.
 */
static void
write_batch(const char *buf, size_t len, uint64 start_pos)
{
	MemoryContext mcxt = CurrentMemoryContext;
	ErrorData  *volatile edata = NULL;
	const char *volatile p;

	PG_TRY();
	{
		write_entries(buf, len, InvalidXLogRecPtr, false);
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(mcxt);
		edata = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
	}
	PG_END_TRY();
	if (edata == NULL)
	{
		access_log_writer_done(start_pos + len);
		return;
	}
	if (extension_changed)
		proc_exit(0);

	if (wal_held)
	{
		ereport(WARNING,
				(errmsg("ehrledger could not record reads in the access log: %s", edata->message),
				 errdetail("The reads are in the WAL; the writer tries again in %d ms.", WRITER_RETRY_MS)));
		(void) WaitLatch(MyLatch, WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, WRITER_RETRY_MS, PG_WAIT_EXTENSION);
		return;
	}

	for (p = buf; p < buf + len;)
	{
		uint32		reclen = get_u32((const uint8 *) p);

		PG_TRY();
		{
			write_entries(p, reclen, InvalidXLogRecPtr, false);
		}
		PG_CATCH();
		{
			char		why[256];

			MemoryContextSwitchTo(mcxt);
			edata = CopyErrorData();
			FlushErrorState();
			AbortCurrentTransaction();
			ereport(WARNING,
					(errmsg("ehrledger could not record a read in the access log: %s", edata->message),
					 errdetail("The reading statement fails instead.")));
			snprintf(why, sizeof(why), "%s", edata->message);
			LWLockAcquire(shared->lock, LW_EXCLUSIVE);
			note_failed(start_pos + (p - buf), start_pos + (p - buf) + reclen, why);
			LWLockRelease(shared->lock);
		}
		PG_END_TRY();
		p += reclen;
	}
	access_log_writer_done(start_pos + len);
}

/* The writer is gone: a backend that needs one starts another. */
static void
writer_exit(int code, Datum arg)
{
	(void) code;
	(void) arg;
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	if (writer_ring->writer_pid == MyProcPid)
	{
		writer_ring->writer_pid = 0;
		writer_ring->writer_latch = NULL;
		writer_ring->wal_durable = false;
	}
	LWLockRelease(shared->lock);
	ConditionVariableBroadcast(&writer_ring->cv);
}

/*
 * Waits for entries to write and copies them into buf ([from, to) of the
 * ring); false once the ring has been empty for WRITER_IDLE_EXIT_MS.
 */
bool
access_log_writer_take(char *buf, uint64 *from, uint64 *to)
{
	TimestampTz idle_since = GetCurrentTimestamp();

	for (;;)
	{
		CHECK_FOR_INTERRUPTS();
		LWLockAcquire(shared->lock, LW_EXCLUSIVE);
		*from = writer_ring->done;
		*to = writer_ring->head;
		if (*from != *to)
			ring_get(writer_ring, *from, buf, *to - *from);
		LWLockRelease(shared->lock);
		if (*from != *to)
			return true;
		if (TimestampDifferenceExceeds(idle_since, GetCurrentTimestamp(), WRITER_IDLE_EXIT_MS))
			return false;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 500, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}

/* Leaves if the ring is still empty: the database is let go (DROP DATABASE waits for us). */
void
access_log_writer_leave(void)
{
	bool		empty;

	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	empty = writer_ring->done == writer_ring->head;
	if (empty)
	{
		writer_ring->writer_pid = 0;
		writer_ring->writer_latch = NULL;
		writer_ring->wal_durable = false;
		writer_ring->dboid = InvalidOid;
	}
	LWLockRelease(shared->lock);
	if (!empty)
		return;
	ConditionVariableBroadcast(&writer_ring->cv);
	proc_exit(0);
}

/*
 * The name of this writer's session on the primary: a random part made
 * once per start of the server, and the ring's number, whose positions only
 * grow while the server runs.  The primary skips the records of a session
 * it has recorded already, so a batch sent twice is recorded once.
 */
void
access_log_standby_session(uint8 *session)
{
	uint32		slot = pg_hton32((uint32) (writer_ring - shared->rings));

	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	if (!shared->have_session)
	{
		if (!pg_strong_random(shared->standby_session, sizeof(shared->standby_session)))
		{
			LWLockRelease(shared->lock);
			elog(ERROR, "could not generate a random standby session id");
		}
		shared->have_session = true;
	}
	memcpy(session, shared->standby_session, sizeof(shared->standby_session));
	LWLockRelease(shared->lock);
	memcpy(session + sizeof(shared->standby_session), &slot, 4);
}

/* The oldest WAL segment left in pg_wal, or 0 if none could be read. */
static XLogSegNo
oldest_wal_segment(void)
{
	DIR		   *dir = AllocateDir(XLOGDIR);
	struct dirent *de;
	XLogSegNo	oldest = 0;

	while ((de = ReadDir(dir, XLOGDIR)) != NULL)
	{
		TimeLineID	tli;
		XLogSegNo	segno;

		if (!IsXLogFileName(de->d_name))
			continue;
		XLogFromFileName(de->d_name, &tli, &segno, wal_segment_size);
		if (oldest == 0 || segno < oldest)
			oldest = segno;
	}
	FreeDir(dir);
	return oldest;
}

/*
 * Reads the WAL from the position up to which the access log was written
 * to its flushed end, and writes the records of this database it finds:
 * the ring that held them was lost with shared memory.  Records the ring
 * holds again are skipped later by their WAL position.
 */
static void
search_wal(void)
{
	XLogRecPtr	end = GetFlushRecPtr(NULL);
	XLogRecPtr	start = written_to;
	XLogSegNo	oldest = oldest_wal_segment();
	ReadLocalXLogPageNoWaitPrivate *priv = palloc0(sizeof(ReadLocalXLogPageNoWaitPrivate));
	XLogReaderState *reader;
	XLogRecPtr	first;
	StringInfoData batch;
	int			found = 0;
	size_t		prefix_len = strlen(ACCESS_WAL_PREFIX) + 1;

	if (start >= end)
		return;
	if (oldest != 0)
	{
		XLogRecPtr	oldest_ptr;

		XLogSegNoOffsetToRecPtr(oldest, 0, wal_segment_size, oldest_ptr);
		if (start < oldest_ptr)
		{
			/* Unless the writer was stuck for a checkpoint, nothing was there. */
			ereport(written_to_at_rest ? LOG : WARNING,
					(errmsg("ehrledger access log: the WAL from %X/%X to %X/%X is gone; reads recorded there, if any, cannot be written",
							LSN_FORMAT_ARGS(start), LSN_FORMAT_ARGS(oldest_ptr)),
					 written_to_at_rest
					 ? errdetail("The access log was complete at %X/%X.", LSN_FORMAT_ARGS(start))
					 : errdetail("The writer had reads left to write at %X/%X.", LSN_FORMAT_ARGS(start))));
			start = oldest_ptr;
		}
	}
	reader = XLogReaderAllocate(wal_segment_size, NULL,
								XL_ROUTINE(.page_read = &read_local_xlog_page_no_wait,
										   .segment_open = &wal_segment_open,
										   .segment_close = &wal_segment_close),
								priv);
	if (reader == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory while reading the WAL for the access log")));
	first = XLogFindNextRecord(reader, start);
	initStringInfo(&batch);
	if (!XLogRecPtrIsInvalid(first))
	{
		XLogBeginRead(reader, first);
		for (;;)
		{
			char	   *errormsg;
			XLogRecord *record = XLogReadRecord(reader, &errormsg);

			if (record == NULL)
				break;
			if (XLogRecGetRmid(reader) == RM_LOGICALMSG_ID &&
				(XLogRecGetInfo(reader) & ~XLR_INFO_MASK) == XLOG_LOGICAL_MESSAGE)
			{
				xl_logical_message *msg = (xl_logical_message *) XLogRecGetData(reader);

				if (msg->dbId == MyDatabaseId && !msg->transactional &&
					msg->prefix_size == prefix_len &&
					memcmp(msg->message, ACCESS_WAL_PREFIX, prefix_len) == 0)
				{
					put_u32(&batch, (uint32) (ACCESS_ENTRY_HEADER + msg->message_size));
					put_u64(&batch, (uint64) reader->EndRecPtr);
					appendBinaryStringInfo(&batch, msg->message + prefix_len, msg->message_size);
					found++;
				}
			}
			if (batch.len >= SCAN_BATCH)
			{
				write_entries(batch.data, batch.len, reader->EndRecPtr, false);
				resetStringInfo(&batch);
			}
			if (reader->EndRecPtr >= end)
				break;
		}
		write_entries(batch.data, batch.len, reader->EndRecPtr, false);
	}
	XLogReaderFree(reader);
	ereport(found > 0 ? LOG : DEBUG1,
			(errmsg("ehrledger access log: %d reads found in the WAL from %X/%X to %X/%X and written",
					found, LSN_FORMAT_ARGS(start), LSN_FORMAT_ARGS(end))));
}

/*
 * What the writer finds in its database: no extension (yet: a writer
 * started while CREATE EXTENSION runs cannot see it), a schema before 0.4
 * (no WAL position is kept: readers wait for the writer's commits), or
 * the WAL position to write from.  In a transaction.
 */
typedef enum
{
	SCHEMA_NONE,
	SCHEMA_OLD,
	SCHEMA_DURABLE
} WriterSchema;

static WriterSchema
schema_of_database(void)
{
	Oid			nsp = get_namespace_oid("ehrledger", true);

	if (!OidIsValid(nsp) || !OidIsValid(get_extension_oid("ehrledger", true)))
		return SCHEMA_NONE;
	return OidIsValid(get_relname_relid("access_log_position", nsp)) ? SCHEMA_DURABLE : SCHEMA_OLD;
}

/* Marks this database searched: readers of the log need not wait for it. */
static void
mark_scanned(Oid dboid)
{
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	if (!db_scanned(dboid))
	{
		/* Full: the oldest entry goes, and its database is searched again later. */
		if (shared->nscanned == MAX_SCANNED)
			memmove(shared->scanned, shared->scanned + 1, sizeof(Oid) * --shared->nscanned);
		shared->scanned[shared->nscanned++] = dboid;
	}
	LWLockRelease(shared->lock);
	ConditionVariableBroadcast(&writer_ring->cv);
}

/*
 * From now on records are durable in the WAL: reads the position (never
 * below what this writer wrote already, if it wrote before the position
 * table existed), searches the WAL from there once per start of the
 * server, and lets readers flush instead of waiting for this writer, whose
 * commits need no flush any more.
 */
static void
become_durable(XLogRecPtr written_max)
{
	bool		scanned;
	const char *why;

	StartTransactionCommand();
	writer_extension = get_extension_oid("ehrledger", true);
	if (schema_of_database() != SCHEMA_DURABLE)
	{
		/* Dropped meanwhile: nothing to write into. */
		CommitTransactionCommand();
		proc_exit(0);
	}
	PushActiveSnapshot(GetTransactionSnapshot());
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute("SELECT lsn, at_rest FROM ehrledger.access_log_position", true, 0) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "ehrledger.access_log_position must hold one row");
	{
		bool		isnull;
		Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

		written_to = isnull ? InvalidXLogRecPtr : DatumGetLSN(d);
		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
		written_to_at_rest = !isnull && DatumGetBool(d);
	}
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	/* A position beyond the WAL is another cluster's: it proves nothing here. */
	if (written_to > GetXLogInsertRecPtr())
	{
		ereport(WARNING,
				(errmsg("ehrledger.access_log_position %X/%X is beyond this server's WAL; searching none of it",
						LSN_FORMAT_ARGS(written_to))));
		written_to = GetXLogInsertRecPtr();
	}
	position_kept = true;
	wal_held = access_log_slot_hold(written_to, &why);
	if (!wal_held)
	{
		bool		warned;

		LWLockAcquire(shared->lock, LW_EXCLUSIVE);
		warned = shared->slot_warned;
		shared->slot_warned = true;
		LWLockRelease(shared->lock);
		ereport(warned ? DEBUG1 : WARNING,
				(errmsg("ehrledger access log: no replication slot keeps its WAL: %s", why),
				 errdetail("Readers wait for the access log writer's commits instead, which is slower."),
				 errhint("Set wal_level to replica (the default) and leave a replication slot free.")));
	}
	if (written_max > written_to)
		write_entries(NULL, 0, written_max, false);

	LWLockAcquire(shared->lock, LW_SHARED);
	scanned = db_scanned(MyDatabaseId);
	LWLockRelease(shared->lock);
	if (!scanned)
		search_wal();
	/* Before readers of the log go on: what a promoted standby spooled. */
	standby_spool_record_here();
	mark_scanned(MyDatabaseId);
	if (!wal_held)
		return;
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	writer_ring->wal_durable = true;
	LWLockRelease(shared->lock);
	SetConfigOption("synchronous_commit", "off", PGC_SUSET, PGC_S_OVERRIDE);
}

/* extension_replaced(), in a transaction of its own. */
static bool
extension_gone(void)
{
	bool		gone;

	StartTransactionCommand();
	gone = extension_replaced();
	CommitTransactionCommand();
	return gone;
}

/* What the database holds now (ALTER EXTENSION UPDATE, CREATE or DROP EXTENSION committed). */
static WriterSchema
schema_now(void)
{
	WriterSchema schema;

	StartTransactionCommand();
	schema = schema_of_database();
	CommitTransactionCommand();
	return schema;
}

/* Main loop of a database's access log writer. */
void
ehrledger_access_log_main(Datum arg)
{
	Oid			dboid;
	char	   *buf = palloc(ACCESS_RING_SIZE);
	WriterSchema schema;

	pqsignal(SIGTERM, die);
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	BackgroundWorkerUnblockSignals();
	writer_ring = &shared->rings[DatumGetInt32(arg)];

	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	dboid = writer_ring->dboid;
	if (writer_ring->writer_pid != 0 || dboid == InvalidOid)
	{
		LWLockRelease(shared->lock);
		proc_exit(0);
	}
	writer_ring->writer_pid = MyProcPid;
	writer_ring->writer_latch = MyLatch;
	writer_ring->starting = false;
	LWLockRelease(shared->lock);
	before_shmem_exit(writer_exit, (Datum) 0);

	BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);

	if (RecoveryInProgress())
		standby_writer_main();

	StartTransactionCommand();
	schema = schema_of_database();
	if (schema == SCHEMA_OLD)
		writer_extension = get_extension_oid("ehrledger", true);
	CommitTransactionCommand();
	if (schema == SCHEMA_DURABLE)
		become_durable(InvalidXLogRecPtr);
	else if (schema == SCHEMA_OLD)
		mark_scanned(dboid);	/* nothing to search: no WAL position is kept */
	else
		access_log_slot_drop();	/* the extension is gone: nothing to keep */

	for (;;)
	{
		uint64		from;
		uint64		to;

		if (access_log_writer_take(buf, &from, &to))
		{
			if (!position_kept)
			{
				WriterSchema schema = schema_now();

				if (schema == SCHEMA_DURABLE)
					become_durable(written_max);
				else if (schema == SCHEMA_NONE)
				{
					/* Records of an extension dropped since: no log to go to. */
					access_log_writer_done(to);
					continue;
				}
			}
			write_batch(buf, to - from, from);
			/* Records are durable: gather more of them into the next transaction. */
			if (wal_held)
				(void) WaitLatch(MyLatch, WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
								 WRITER_BATCH_DELAY_MS, PG_WAIT_EXTENSION);
			continue;
		}
		if (position_kept)
		{
			/* Nothing is in the ring: the log is complete up to the WAL's end. */
			XLogRecPtr	rest = InvalidXLogRecPtr;

			LWLockAcquire(shared->lock, LW_EXCLUSIVE);
			if (writer_ring->done == writer_ring->head)
				rest = GetXLogInsertRecPtr();
			LWLockRelease(shared->lock);
			if (extension_gone())
				proc_exit(0);
			if (!XLogRecPtrIsInvalid(rest) && rest > written_to)
				write_entries(buf, 0, rest, true);
			/* Before the ring goes: the sealer may then let the WAL go. */
			if (wal_held)
				slot_follow(written_to, XactLastCommitEnd, true);
		}
		access_log_writer_leave();
	}
}
