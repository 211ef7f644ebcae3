/*
 * access_log.c
 *		The access log writer: records reads of patients' rows in their own
 *		transaction, so that a read stays recorded when the reading
 *		transaction rolls back.
 *
 * A backend appends a record to its database's ring in shared memory,
 * wakes that database's writer (a dynamic background worker, started on
 * demand and gone after a few idle seconds so it never holds up DROP
 * DATABASE), and by default waits until the writer has committed it: a read
 * statement does not complete before its record is durable.  Records are
 * consumed only after the writer's commit, so a writer that dies leaves them
 * for the next.
 *
 * Next: the records are ledgered rows (ehrledger.access_event), sealed by
 * ledger/seal.c like any other; src/fhir renders them as AuditEvents.
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "storage/condition_variable.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "tcop/tcopprot.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "consent/consent.h"

#define ACCESS_LOG_RINGS		8
#define ACCESS_RING_SIZE		(256 * 1024)
/* A record larger than this is split by patients (see access_log_send). */
#define ACCESS_RECORD_MAX		(ACCESS_RING_SIZE / 4)
#define WRITER_IDLE_EXIT_MS		2000
#define WRITER_START_RETRY_MS	10000
#define READER_WAIT_LIMIT_MS	60000
/* Recent records the writer could not write, remembered for their readers. */
#define FAILED_SLOTS			16

typedef struct AccessRing
{
	Oid			dboid;			/* InvalidOid: free */
	pid_t		writer_pid;		/* 0: no writer running */
	Latch	   *writer_latch;
	bool		starting;
	TimestampTz start_requested;
	uint64		head;			/* bytes appended, ever */
	uint64		done;			/* bytes committed by the writer, ever */
	ConditionVariable cv;		/* broadcast when done advances */
	uint64		failed[FAILED_SLOTS];	/* end positions of unwritable records */
	int			nfailed;
	char		data[ACCESS_RING_SIZE];
} AccessRing;

typedef struct AccessLogShared
{
	LWLock	   *lock;
	AccessRing	rings[ACCESS_LOG_RINGS];
} AccessLogShared;

static AccessLogShared *shared = NULL;
static shmem_request_hook_type prev_shmem_request = NULL;
static shmem_startup_hook_type prev_shmem_startup = NULL;

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
		memset(shared, 0, sizeof(AccessLogShared));
		shared->lock = &(GetNamedLWLockTranche("ehrledger access log"))->lock;
		for (i = 0; i < ACCESS_LOG_RINGS; i++)
			ConditionVariableInit(&shared->rings[i].cv);
	}
	LWLockRelease(AddinShmemInitLock);
}

void
access_log_init(void)
{
	prev_shmem_request = shmem_request_hook;
	shmem_request_hook = access_log_shmem_request;
	prev_shmem_startup = shmem_startup_hook;
	shmem_startup_hook = access_log_shmem_startup;
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

/* The ring of this backend's database, claimed if it has none.  Lock held. */
static AccessRing *
my_ring(void)
{
	AccessRing *free_ring = NULL;
	int			i;

	for (i = 0; i < ACCESS_LOG_RINGS; i++)
	{
		AccessRing *ring = &shared->rings[i];

		if (ring->dboid == MyDatabaseId)
			return ring;
		if (ring->dboid == InvalidOid && free_ring == NULL)
			free_ring = ring;
	}
	if (free_ring != NULL)
		free_ring->dboid = MyDatabaseId;
	return free_ring;
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
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
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
 * Appends one record to this database's ring (*ring_out); returns its end
 * position, or 0 if it was dropped.
 */
static uint64
append_record(const StringInfo rec, bool aborting, AccessRing **ring_out)
{
	AccessRing *ring;
	uint64		end = 0;
	bool		launch;
	Latch	   *latch = NULL;

	for (;;)
	{
		LWLockAcquire(shared->lock, LW_EXCLUSIVE);
		ring = my_ring();
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
		if (ACCESS_RING_SIZE - (ring->head - ring->done) >= (uint64) rec->len)
		{
			ring_put(ring, ring->head, rec->data, rec->len);
			ring->head += rec->len;
			end = ring->head;
			latch = ring->writer_latch;
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

/*
 * Waits until the writer has committed everything up to end.  A ring is
 * given up (and may serve another database) only once all of it is written.
 */
static void
wait_for_writer(AccessRing *ring, uint64 end)
{
	TimestampTz started = GetCurrentTimestamp();

	for (;;)
	{
		bool		launch;
		bool		written;

		bool		failed = false;
		int			i;

		LWLockAcquire(shared->lock, LW_EXCLUSIVE);
		written = ring->dboid != MyDatabaseId || ring->done >= end;
		for (i = 0; written && i < FAILED_SLOTS; i++)
			failed |= ring->failed[i] == end;
		launch = !written && writer_needed(ring);
		LWLockRelease(shared->lock);
		if (failed)
			ereport(ERROR,
					(errcode(ERRCODE_INTERNAL_ERROR),
					 errmsg("this read could not be recorded in the ehrledger access log"),
					 errhint("See the server log for the access log writer's warning.")));
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

/*
 * Records a read of the given patients' rows through the writer.  With
 * wait, returns once the record is committed.  While aborting it neither
 * waits nor raises errors.
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
				bool wait, bool aborting)
{
	StringInfoData rec;
	ListCell   *p,
			   *b;
	uint32		count = 0;
	int			left = list_length(patients);
	uint64		end = 0;
	int			count_at = 0;
	AccessRing *ring = NULL;

	if (RecoveryInProgress())
	{
		if (aborting)
			return;
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("reads of patients' rows cannot be recorded on a standby"),
				 errhint("Read consent-protected tables on the primary.")));
	}
	initStringInfo(&rec);
	forboth(p, patients, b, bases)
	{
		if (count == 0)
		{
			resetStringInfo(&rec);
			put_u32(&rec, 0);	/* length, filled in below */
			put_u64(&rec, (uint64) at);
			put_u32(&rec, (uint32) table_id);
			put_str(&rec, action);
			put_str(&rec, actor_id);
			put_str(&rec, pg_role);
			put_str(&rec, access_log_client_addr());
			count_at = rec.len;
			put_u32(&rec, 0);
		}
		put_str(&rec, lfirst(p));
		put_str(&rec, lfirst(b));
		count++;
		left--;
		if (left == 0 || (rec.len > ACCESS_RECORD_MAX && count >= 2 && left >= 2))
		{
			uint32		len = pg_hton32((uint32) rec.len);
			uint32		n = pg_hton32(count);

			memcpy(rec.data, &len, 4);
			memcpy(rec.data + count_at, &n, 4);
			end = append_record(&rec, aborting, &ring);
			count = 0;
		}
	}
	if (wait && end != 0)
		wait_for_writer(ring, end);
}

/* Reads a string written by put_str; NULL for a NULL string. */
static char *
get_str(const char **p)
{
	uint32		len = get_u32((const uint8 *) *p);
	char	   *s;

	*p += 4;
	if (len == PG_UINT32_MAX)
		return NULL;
	s = pnstrdup(*p, len);
	*p += len;
	return s;
}

/*
 * Writes the records in buf (len bytes) to the access log in one
 * transaction.  A schema before 0.4 has no client_addr: the address is left
 * out there.
 */
static void
write_records(const char *buf, size_t len)
{
	Oid			types[9] = {TIMESTAMPTZOID, TEXTOID, NAMEOID, TEXTOID, INT4OID,
	TEXTARRAYOID, TEXTARRAYOID, TEXTOID, INETOID};
	const char *p = buf;
	SPIPlanPtr	plan;
	bool		with_addr;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, "recording reads in ehrledger.access_event");
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	with_addr = ledger_has_function("_log_access", 9, types);
	plan = with_addr
		? SPI_prepare("SELECT ehrledger._log_access($1, $2, $3, $4, $5, $6, $7, $8, $9)", 9, types)
		: SPI_prepare("SELECT ehrledger._log_access($1, $2, $3, $4, $5, $6, $7, $8)", 8, types);
	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	while (p < buf + len)
	{
		const char *start = p;
		uint32		reclen = get_u32((const uint8 *) p);
		Datum		values[9];
		char		nulls[9];
		uint32		n,
					i;
		Datum	   *patients;
		Datum	   *bases;
		char	   *s;
		char	   *addr;
		int			ret;

		p += 4;
		values[0] = TimestampTzGetDatum((TimestampTz) get_u64((const uint8 *) p));
		p += 8;
		values[4] = Int32GetDatum((int32) get_u32((const uint8 *) p));
		p += 4;
		values[3] = CStringGetTextDatum(get_str(&p));
		s = get_str(&p);
		values[1] = s ? CStringGetTextDatum(s) : (Datum) 0;
		values[2] = DirectFunctionCall1(namein, CStringGetDatum(get_str(&p)));
		addr = get_str(&p);
		values[8] = addr ? DirectFunctionCall1(inet_in, CStringGetDatum(addr)) : (Datum) 0;
		n = get_u32((const uint8 *) p);
		p += 4;
		patients = palloc(sizeof(Datum) * Max(n, 1));
		bases = palloc(sizeof(Datum) * Max(n, 1));
		for (i = 0; i < n; i++)
		{
			patients[i] = CStringGetTextDatum(get_str(&p));
			bases[i] = CStringGetTextDatum(get_str(&p));
		}
		values[5] = PointerGetDatum(construct_array(patients, n, TEXTOID, -1, false, TYPALIGN_INT));
		values[6] = PointerGetDatum(construct_array(bases, n, TEXTOID, -1, false, TYPALIGN_INT));
		values[7] = (Datum) 0;
		memset(nulls, ' ', sizeof(nulls));
		nulls[1] = s ? ' ' : 'n';
		nulls[7] = 'n';
		nulls[8] = addr ? ' ' : 'n';
		ret = SPI_execute_plan(plan, values, nulls, false, 0);
		if (ret != SPI_OK_SELECT)
			elog(ERROR, "SPI_execute_plan failed: %s", SPI_result_code_string(ret));
		if (p != start + reclen)
			elog(ERROR, "malformed access log record");
	}
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
}

static AccessRing *writer_ring = NULL;

/*
 * Writes records in one transaction; if that fails, each in its own, so that
 * one record that cannot be written (the extension was dropped, say) does
 * not hold up the others.  Such a record is reported in the server log and
 * to its reader, which fails.
 */
static void
write_batch(const char *buf, size_t len, uint64 start_pos)
{
	MemoryContext mcxt = CurrentMemoryContext;
	volatile bool written = false;
	const char *volatile p;

	PG_TRY();
	{
		write_records(buf, len);
		written = true;
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(mcxt);
		FlushErrorState();
		AbortCurrentTransaction();
	}
	PG_END_TRY();
	if (written)
		return;

	for (p = buf; p < buf + len;)
	{
		uint32		reclen = get_u32((const uint8 *) p);

		PG_TRY();
		{
			write_records(p, reclen);
		}
		PG_CATCH();
		{
			ErrorData  *edata;

			MemoryContextSwitchTo(mcxt);
			edata = CopyErrorData();
			FlushErrorState();
			AbortCurrentTransaction();
			ereport(WARNING,
					(errmsg("ehrledger could not record a read in the access log: %s", edata->message),
					 errdetail("The reading statement fails instead.")));
			LWLockAcquire(shared->lock, LW_EXCLUSIVE);
			writer_ring->failed[writer_ring->nfailed++ % FAILED_SLOTS] = start_pos + (p - buf) + reclen;
			LWLockRelease(shared->lock);
		}
		PG_END_TRY();
		p += reclen;
	}
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
	}
	LWLockRelease(shared->lock);
	ConditionVariableBroadcast(&writer_ring->cv);
}

/* Main loop of a database's access log writer. */
void
ehrledger_access_log_main(Datum arg)
{
	Oid			dboid;
	char	   *buf = palloc(ACCESS_RING_SIZE);
	TimestampTz idle_since = GetCurrentTimestamp();

	pqsignal(SIGTERM, die);
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

	for (;;)
	{
		uint64		from;
		uint64		to;

		CHECK_FOR_INTERRUPTS();
		LWLockAcquire(shared->lock, LW_EXCLUSIVE);
		from = writer_ring->done;
		to = writer_ring->head;
		if (from == to &&
			TimestampDifferenceExceeds(idle_since, GetCurrentTimestamp(), WRITER_IDLE_EXIT_MS))
		{
			/* Idle: let the database go (DROP DATABASE waits for us). */
			writer_ring->writer_pid = 0;
			writer_ring->writer_latch = NULL;
			writer_ring->dboid = InvalidOid;
			LWLockRelease(shared->lock);
			ConditionVariableBroadcast(&writer_ring->cv);
			proc_exit(0);
		}
		if (from != to)
			ring_get(writer_ring, from, buf, to - from);
		LWLockRelease(shared->lock);

		if (from != to)
		{
			write_batch(buf, to - from, from);
			LWLockAcquire(shared->lock, LW_EXCLUSIVE);
			writer_ring->done = to;
			LWLockRelease(shared->lock);
			ConditionVariableBroadcast(&writer_ring->cv);
			idle_since = GetCurrentTimestamp();
			continue;
		}
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 500, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}
