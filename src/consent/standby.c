/*
 * standby.c
 *		Reads on a hot standby, recorded in the primary's access log before
 *		the standby returns them.
 *
 * A physical standby enforces consents as its primary does (the same
 * tables, replayed; consent.c learns of a replayed change from the
 * relcache invalidation its commit carries).  What it cannot do is write:
 * its access log writer ships the ring's records to the primary instead,
 * over the connection PostgreSQL's own walreceiver would use
 * (primary_conninfo, or ehrledger.primary_conninfo; a replication
 * connection to the database, through libpqwalreceiver), and a reading
 * backend waits until the primary has committed them.
 *
 * The primary accepts a batch only from a role with the REPLICATION
 * attribute (the standby's replication user), and only signed with the
 * node key, which a physical standby shares with its primary: a role that
 * can call the function still cannot invent or alter records.  Each batch
 * names its session (a random id per start of the standby and ring) and
 * the ring positions of its records; the primary keeps, per session, the
 * position up to which it has recorded, so a batch sent again after a lost
 * answer is recorded once.
 *
 * When the primary cannot be reached a read is refused, unless
 * ehrledger.standby_primary_down = serve: then the signed batch is
 * appended to a spool file in the data directory (fsynced before the
 * readers return) and shipped, in order, once the primary answers again.
 * Break-glass on a standby is carried out on the primary, and returns once
 * the standby has replayed it.
 *
 * Next: the primary's access_log_insert() makes the records ledgered rows.
 */
#include "postgres.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "access/xact.h"
#include "access/xlog.h"
#include "access/xlogrecovery.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/interrupt.h"
#include "replication/walreceiver.h"
#include "storage/fd.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/pg_lsn.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "consent/consent.h"

#define READS_TAG			"ehrledger standby reads 1"
#define GLASS_TAG			"ehrledger standby glass 1"
#define REPLAY_WAIT_LIMIT_MS	60000
#define SPOOL_RETRY_MS		5000

enum
{
	PRIMARY_DOWN_REFUSE,
	PRIMARY_DOWN_SERVE
};

static const struct config_enum_entry primary_down_options[] = {
	{"refuse", PRIMARY_DOWN_REFUSE, false},
	{"serve", PRIMARY_DOWN_SERVE, false},
	{NULL, 0, false}
};

static char *standby_conninfo = NULL;
static int	standby_primary_down = PRIMARY_DOWN_REFUSE;

PG_FUNCTION_INFO_V1(ehrledger_standby_reads);
PG_FUNCTION_INFO_V1(ehrledger_standby_break_glass);

/* Its settings; called from _PG_init before the prefix is reserved. */
void
standby_init(void)
{
	DefineCustomStringVariable("ehrledger.primary_conninfo",
							   "Connection string a standby uses to record its reads on the primary.",
							   "Empty uses primary_conninfo. The role needs the REPLICATION attribute.",
							   &standby_conninfo,
							   "",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY,
							   NULL, NULL, NULL);
	DefineCustomEnumVariable("ehrledger.standby_primary_down",
							 "What a standby does with a read of patients' rows while the primary cannot record it.",
							 "refuse fails the read; serve returns it and keeps its record in a spool file until the primary answers.",
							 &standby_primary_down,
							 PRIMARY_DOWN_REFUSE,
							 primary_down_options,
							 PGC_SIGHUP,
							 0,
							 NULL, NULL, NULL);
}

/* The standby's name in the records it ships: cluster_name, if set. */
static const char *
standby_name(void)
{
	const char *name = GetConfigOption("cluster_name", false, false);

	return name != NULL && name[0] != '\0' ? name : "unnamed";
}

/*
 * A connection to database db on the primary, through libpqwalreceiver;
 * NULL with *why set if there is none.
 */
static WalReceiverConn *
connect_primary(const char *db, char **why)
{
	const char *base = standby_conninfo[0] != '\0' ? standby_conninfo : PrimaryConnInfo;
	StringInfoData conninfo;
	const char *c;
	WalReceiverConn *conn;

	if (base == NULL || base[0] == '\0')
	{
		*why = pstrdup("neither ehrledger.primary_conninfo nor primary_conninfo is set");
		return NULL;
	}
	if (WalReceiverFunctions == NULL)
		load_file("libpqwalreceiver", false);
	if (WalReceiverFunctions == NULL)
		elog(ERROR, "libpqwalreceiver did not initialize");
	/* A timeout unless the conninfo sets one; this database, whatever it names. */
	initStringInfo(&conninfo);
	appendStringInfo(&conninfo, "connect_timeout=10 %s dbname='", base);
	for (c = db; *c; c++)
	{
		if (*c == '\'' || *c == '\\')
			appendStringInfoChar(&conninfo, '\\');
		appendStringInfoChar(&conninfo, *c);
	}
	appendStringInfoChar(&conninfo, '\'');
	conn = walrcv_connect(conninfo.data, true, "ehrledger standby reads", why);
	pfree(conninfo.data);
	return conn;
}

/*
 * Runs query on the primary; the first column of its one row as text
 * (palloc'd), or NULL with *why set.
 */
static char *
primary_query(WalReceiverConn *conn, const char *query, char **why)
{
	Oid			types[1] = {TEXTOID};
	WalRcvExecResult *res = walrcv_exec(conn, query, 1, types);
	char	   *value = NULL;

	if (res->status == WALRCV_OK_TUPLES)
	{
		TupleTableSlot *slot = MakeSingleTupleTableSlot(res->tupledesc, &TTSOpsMinimalTuple);

		if (tuplestore_gettupleslot(res->tuplestore, true, false, slot))
		{
			bool		isnull;
			Datum		d = slot_getattr(slot, 1, &isnull);

			if (!isnull)
				value = TextDatumGetCString(d);
		}
		ExecDropSingleTupleTableSlot(slot);
		if (value == NULL)
			*why = pstrdup("the primary returned no result");
	}
	else
		*why = psprintf("the primary refused: %s", res->err ? res->err : "no reason given");
	walrcv_clear_result(res);
	return value;
}

/* SELECT fn(decode('<hex>', 'hex')): a signed document handed to the primary. */
static char *
call_with_document(WalReceiverConn *conn, const char *fn, const StringInfo doc, char **why)
{
	char	   *hex = hex_encode_bytes((const uint8 *) doc->data, doc->len);
	char	   *query = psprintf("SELECT ehrledger.%s(pg_catalog.decode('%s', 'hex'))::pg_catalog.text",
								 fn, hex);
	char	   *result = primary_query(conn, query, why);

	pfree(query);
	pfree(hex);
	return result;
}

/* Starts a signed document: its tag, and the cluster it is meant for. */
static void
document_start(StringInfo doc, const char *tag)
{
	initStringInfo(doc);
	appendBinaryStringInfo(doc, tag, strlen(tag));
	put_u64(doc, GetSystemIdentifier());
}

static void
put_text(StringInfo doc, const char *s)
{
	put_u32(doc, (uint32) strlen(s));
	appendBinaryStringInfo(doc, s, strlen(s));
}

static void
document_sign(StringInfo doc)
{
	uint8		sig[LEDGER_SIG_LEN];

	ledger_node_sign((const uint8 *) doc->data, doc->len, sig);
	appendBinaryStringInfo(doc, (const char *) sig, LEDGER_SIG_LEN);
}

/*
 * The batch of the ring entries in buf, [from, to) of the ring: each
 * record with its end position, signed.
 */
static void
build_batch(StringInfo batch, const char *buf, uint64 from, uint64 to)
{
	uint8		session[STANDBY_SESSION_LEN];
	const char *p = buf;
	StringInfoData entries;
	uint32		n = 0;

	access_log_standby_session(session);
	initStringInfo(&entries);
	while (p < buf + (to - from))
	{
		uint32		len = get_u32((const uint8 *) p);

		put_u64(&entries, from + (p - buf) + len);
		put_u32(&entries, len - ACCESS_ENTRY_HEADER);
		appendBinaryStringInfo(&entries, p + ACCESS_ENTRY_HEADER, len - ACCESS_ENTRY_HEADER);
		p += len;
		n++;
	}
	document_start(batch, READS_TAG);
	appendBinaryStringInfo(batch, (const char *) session, STANDBY_SESSION_LEN);
	put_text(batch, standby_name());
	put_u32(batch, n);
	appendBinaryStringInfo(batch, entries.data, entries.len);
	document_sign(batch);
	pfree(entries.data);
}

/* The spool of batches the primary has not recorded yet (serve mode). */
static char *
spool_path(void)
{
	return psprintf("ehrledger_standby_spool.%u", MyDatabaseId);
}

/* Appends a batch to the spool, durably; false if it could not. */
static bool
spool_append(const StringInfo batch, char **why)
{
	char	   *path = spool_path();
	int			fd = OpenTransientFile(path, O_WRONLY | O_CREAT | O_APPEND | PG_BINARY);
	uint32		len = pg_hton32((uint32) batch->len);
	bool		ok;

	if (fd < 0)
	{
		*why = psprintf("could not open \"%s\": %m", path);
		return false;
	}
	ok = write(fd, &len, 4) == 4 && write(fd, batch->data, batch->len) == batch->len &&
		pg_fsync(fd) == 0;
	if (!ok)
		*why = psprintf("could not write \"%s\": %m", path);
	CloseTransientFile(fd);
	if (ok)
		fsync_fname(".", true);
	return ok;
}

/* Hands one signed batch to the primary, or records it here; false with *why if not. */
typedef bool (*BatchSender) (void *arg, StringInfo batch, char **why);

static bool
send_to_primary(void *arg, StringInfo batch, char **why)
{
	return call_with_document((WalReceiverConn *) arg, "_standby_reads", batch, why) != NULL;
}

/*
 * Ships the spool's batches in order; unlinks it once all are recorded.
 * True if the spool is empty afterwards.
 */
static bool
spool_ship(BatchSender send, void *arg, char **why)
{
	char	   *path = spool_path();
	int			fd = OpenTransientFile(path, O_RDONLY | PG_BINARY);
	struct stat st;
	char	   *data;
	size_t		off = 0;
	int			shipped = 0;

	if (fd < 0)
		return errno == ENOENT;
	if (fstat(fd, &st) != 0)
	{
		*why = psprintf("could not read \"%s\": %m", path);
		CloseTransientFile(fd);
		return false;
	}
	data = palloc(st.st_size + 1);
	if (read(fd, data, st.st_size) != st.st_size)
	{
		*why = psprintf("could not read \"%s\": %m", path);
		CloseTransientFile(fd);
		return false;
	}
	CloseTransientFile(fd);
	while (off + 4 <= (size_t) st.st_size)
	{
		uint32		len = get_u32((const uint8 *) data + off);
		StringInfoData batch;

		/* A batch cut short by a crash was never acknowledged to its readers. */
		if (off + 4 + len > (size_t) st.st_size)
			break;
		batch.data = data + off + 4;
		batch.len = len;
		if (!send(arg, &batch, why))
			return false;
		off += 4 + len;
		shipped++;
	}
	if (unlink(path) != 0)
	{
		*why = psprintf("could not remove \"%s\": %m", path);
		return false;
	}
	fsync_fname(".", true);
	ereport(LOG,
			(errmsg("ehrledger: %d batches of reads spooled on this standby are recorded",
					shipped)));
	return true;
}

static bool
spool_exists(void)
{
	struct stat st;

	return stat(spool_path(), &st) == 0;
}

/*
 * The writer on a standby: each batch of the ring goes to the primary (the
 * spool first, if any), and its readers learn whether it was recorded.
 */
void
standby_writer_main(void)
{
	char	   *buf = palloc(ACCESS_RING_SIZE);
	WalReceiverConn *conn = NULL;
	MemoryContext work = AllocSetContextCreate(TopMemoryContext, "ehrledger standby writer",
											   ALLOCSET_DEFAULT_SIZES);
	char	   *db;

	StartTransactionCommand();
	db = MemoryContextStrdup(TopMemoryContext, get_database_name(MyDatabaseId));
	CommitTransactionCommand();
	pgstat_report_activity(STATE_IDLE, NULL);
	for (;;)
	{
		uint64		from;
		uint64		to;
		bool		have;
		char	   *why = NULL;
		bool		ok = false;
		StringInfoData batch;

		MemoryContextReset(work);
		have = access_log_writer_take(buf, &from, &to);
		if (!RecoveryInProgress())
		{
			/* Promoted: a writer of a primary takes over the ring. */
			if (conn)
				walrcv_disconnect(conn);
			proc_exit(0);
		}
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		if (!have && !spool_exists())
		{
			access_log_writer_leave();
			continue;
		}
		/* A (read-only) transaction: a resource owner for the results, its memory. */
		StartTransactionCommand();
		MemoryContextSwitchTo(work);
		if (have)
			build_batch(&batch, buf, from, to);
		pgstat_report_activity(STATE_RUNNING, "recording reads on the primary");
		for (int attempt = 0; attempt < 2 && !ok; attempt++)
		{
			if (conn == NULL)
			{
				MemoryContextSwitchTo(TopMemoryContext);
				conn = connect_primary(db, &why);
				MemoryContextSwitchTo(work);
			}
			if (conn == NULL)
				break;
			ok = spool_ship(send_to_primary, conn, &why) &&
				(!have || call_with_document(conn, "_standby_reads", &batch, &why) != NULL);
			if (!ok)
			{
				/* A stale connection (the primary restarted, say) is tried once more. */
				walrcv_disconnect(conn);
				conn = NULL;
			}
		}
		pgstat_report_activity(STATE_IDLE, NULL);
		if (!have)
		{
			CommitTransactionCommand();
			if (!ok)
				(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
								 SPOOL_RETRY_MS, PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
			continue;
		}
		if (!ok && standby_primary_down == PRIMARY_DOWN_SERVE)
		{
			char	   *spool_why = NULL;

			if (spool_append(&batch, &spool_why))
			{
				ereport(LOG,
						(errmsg("ehrledger: the primary cannot record reads (%s); they are spooled on this standby",
								why)));
				ok = true;
			}
			else
				why = psprintf("%s; and %s", why, spool_why);
		}
		if (ok)
			access_log_writer_done(to);
		else
		{
			ereport(LOG,
					(errmsg("ehrledger: reads on this standby are refused: %s", why)));
			access_log_writer_failed(from, to, psprintf("The primary could not record it: %s", why));
		}
		CommitTransactionCommand();
	}
}

/*
 * The body of a signed document from a standby, after checking the caller
 * (a role with the REPLICATION attribute), the tag, the cluster and the
 * node key's signature.
 */
static const char *
checked_document(bytea *doc, const char *tag, size_t *len)
{
	const char *p = VARDATA_ANY(doc);
	size_t		total = VARSIZE_ANY_EXHDR(doc);
	size_t		taglen = strlen(tag);

	if (!has_rolreplication(GetUserId()))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("only a role with the REPLICATION attribute may record a standby's reads"),
				 errhint("A standby connects with its primary_conninfo (or ehrledger.primary_conninfo).")));
	if (RecoveryInProgress())
		ereport(ERROR,
				(errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
				 errmsg("a standby's reads are recorded on the primary, not on another standby"),
				 errhint("Set ehrledger.primary_conninfo on a cascading standby to reach the primary.")));
	if (total < taglen + 8 + LEDGER_SIG_LEN || memcmp(p, tag, taglen) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("not a document of a standby of ehrledger (%zu bytes)", total)));
	if (get_u64((const uint8 *) p + taglen) != GetSystemIdentifier())
		ereport(ERROR,
				(errcode(ERRCODE_LEDGER_STANDBY_UNSIGNED),
				 errmsg("this document is from a standby of another cluster")));
	if (!ledger_signature_ok((const uint8 *) p, total - LEDGER_SIG_LEN,
							 (const uint8 *) p + total - LEDGER_SIG_LEN, ledger_node_public_key()))
		ereport(ERROR,
				(errcode(ERRCODE_LEDGER_STANDBY_UNSIGNED),
				 errmsg("this document is not signed with this node's key"),
				 errhint("A standby signs with the node key it shares with its primary (ehrledger.key_file).")));
	*len = total - LEDGER_SIG_LEN - taglen - 8;
	return p + taglen + 8;
}

static void
malformed(const char *what)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("malformed standby %s", what)));
}

/* A length-prefixed string of a document, within end. */
static char *
take_text(const char **p, const char *end, const char *what)
{
	uint32		len;
	char	   *s;

	if (end - *p < 4)
		malformed(what);
	len = get_u32((const uint8 *) *p);
	*p += 4;
	if ((uint64) (end - *p) < len || memchr(*p, '\0', len) != NULL)
		malformed(what);
	s = pnstrdup(*p, len);
	*p += len;
	return s;
}

/*
 * The position up to which a session's records are recorded, the row
 * locked; a session seen for the first time starts at 0.
 */
static int64
session_position(bytea *session, const char *name)
{
	Oid			types[2] = {BYTEAOID, TEXTOID};
	Datum		values[2] = {PointerGetDatum(session), CStringGetTextDatum(name)};
	bool		isnull;

	if (SPI_execute_with_args("INSERT INTO ehrledger.standby_session AS s (session, standby, last_end)"
							  " VALUES ($1, $2, 0) ON CONFLICT (session) DO UPDATE SET last_seen = pg_catalog.now()"
							  " RETURNING s.last_end",
							  2, types, values, NULL, false, 0) != SPI_OK_INSERT_RETURNING ||
		SPI_processed != 1)
		elog(ERROR, "could not read ehrledger.standby_session");
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

/* Records a standby's signed batch of reads, each once; how many were new. */
static int
record_batch(bytea *doc)
{
	size_t		len;
	const char *p = checked_document(doc, READS_TAG, &len);
	const char *end = p + len;
	bytea	   *session;
	char	   *name;
	uint32		n;
	uint32		i;
	int64		last_end;
	int64		new_end;
	AccessRecord *recs;
	int			k = 0;
	UserSwitch	sw;

	if (end - p < STANDBY_SESSION_LEN)
		malformed("batch");
	session = ledger_bytea(p, STANDBY_SESSION_LEN);
	p += STANDBY_SESSION_LEN;
	name = take_text(&p, end, "batch");
	if (end - p < 4)
		malformed("batch");
	n = get_u32((const uint8 *) p);
	p += 4;
	if (n > (uint64) (end - p) / 12)
		malformed("batch");
	recs = palloc(sizeof(AccessRecord) * Max(n, 1));

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	user_switch_ledger_owner(&sw);
	last_end = session_position(session, name);
	new_end = last_end;
	for (i = 0; i < n; i++)
	{
		int64		pos;
		uint32		plen;

		if (end - p < 12)
			malformed("batch");
		pos = (int64) get_u64((const uint8 *) p);
		plen = get_u32((const uint8 *) p + 8);
		p += 12;
		if ((uint64) (end - p) < plen)
			malformed("batch");
		if (pos > last_end)
		{
			if (!access_log_decode(p, plen, &recs[k]))
				malformed("read record");
			k++;
			new_end = Max(new_end, pos);
		}
		p += plen;
	}
	if (p != end)
		malformed("batch");
	user_switch_end(&sw);
	if (k > 0)
	{
		Oid			types[2] = {BYTEAOID, INT8OID};
		Datum		values[2] = {PointerGetDatum(session), Int64GetDatum(new_end)};

		access_log_insert(recs, k, psprintf("read on standby %s", name));
		user_switch_ledger_owner(&sw);
		if (SPI_execute_with_args("UPDATE ehrledger.standby_session SET last_end = $2 WHERE session = $1",
								  2, types, values, NULL, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "could not update ehrledger.standby_session");
		user_switch_end(&sw);
	}
	SPI_finish();
	return k;
}

/*
 * ehrledger._standby_reads(batch): records a standby's reads in the access
 * log, each once; returns how many were new.
 */
Datum
ehrledger_standby_reads(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT32(record_batch(PG_GETARG_BYTEA_PP(0)));
}

static bool
record_here(void *arg, StringInfo batch, char **why)
{
	(void) arg;
	(void) why;
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	record_batch(ledger_bytea(batch->data, batch->len));
	PopActiveSnapshot();
	CommitTransactionCommand();
	return true;
}

/*
 * A standby promoted with reads in its spool (served while its primary
 * was down) records them itself: it is the primary now.
 */
void
standby_spool_record_here(void)
{
	char	   *why = NULL;

	if (spool_exists() && !spool_ship(record_here, NULL, &why))
		ereport(WARNING,
				(errmsg("ehrledger could not record the reads spooled before this server's promotion: %s", why)));
}

/*
 * ehrledger._standby_break_glass(request): a break-glass asked for on a
 * standby, carried out here for the role that asked there.  A request is
 * used once.
 */
Datum
ehrledger_standby_break_glass(PG_FUNCTION_ARGS)
{
	size_t		len;
	const char *p = checked_document(PG_GETARG_BYTEA_PP(0), GLASS_TAG, &len);
	const char *end = p + len;
	bytea	   *session;
	char	   *caller;
	char	   *patient;
	char	   *reason;
	Oid			types[3] = {NAMEOID, TEXTOID, TEXTOID};
	Datum		values[3];
	Oid			session_type[1] = {BYTEAOID};
	Datum		session_value;
	bool		isnull;
	int64		id;
	UserSwitch	sw;

	if (end - p < STANDBY_SESSION_LEN)
		malformed("break-glass request");
	session = ledger_bytea(p, STANDBY_SESSION_LEN);
	session_value = PointerGetDatum(session);
	p += STANDBY_SESSION_LEN;
	caller = take_text(&p, end, "break-glass request");
	patient = take_text(&p, end, "break-glass request");
	reason = take_text(&p, end, "break-glass request");
	if (p != end || strlen(caller) >= NAMEDATALEN)
		malformed("break-glass request");

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	user_switch_ledger_owner(&sw);
	if (session_position(session, "break-glass") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_LEDGER_STANDBY_UNSIGNED),
				 errmsg("this break-glass request was carried out already")));
	values[0] = DirectFunctionCall1(namein, CStringGetDatum(caller));
	values[1] = CStringGetTextDatum(patient);
	values[2] = CStringGetTextDatum(reason);
	if (SPI_execute_with_args("SELECT ehrledger._break_glass($1, $2, $3)", 3, types, values, NULL,
							  false, 0) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "break-glass failed");
	id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	if (SPI_execute_with_args("UPDATE ehrledger.standby_session SET last_end = 1 WHERE session = $1",
							  1, session_type, &session_value, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not update ehrledger.standby_session");
	user_switch_end(&sw);
	SPI_finish();
	PG_RETURN_INT64(id);
}

/*
 * break_glass() on a standby: carried out on the primary for the calling
 * role, then waited for until this standby has replayed it, so that the
 * caller's next statement here sees it.
 */
int64
standby_break_glass(const char *caller, const char *patient, const char *reason)
{
	StringInfoData req;
	uint8		session[STANDBY_SESSION_LEN];
	WalReceiverConn *conn;
	char	   *why = NULL;
	char	   *id_text;
	char	   *lsn_text = NULL;
	XLogRecPtr	lsn;
	TimestampTz started;

	if (patient == NULL || reason == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("break-glass needs a patient and a reason")));
	if (!pg_strong_random(session, sizeof(session)))
		elog(ERROR, "could not generate a random request id");
	document_start(&req, GLASS_TAG);
	appendBinaryStringInfo(&req, (const char *) session, sizeof(session));
	put_text(&req, caller);
	put_text(&req, patient);
	put_text(&req, reason);
	document_sign(&req);

	conn = connect_primary(get_database_name(MyDatabaseId), &why);
	if (conn == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_LEDGER_PRIMARY_UNREACHABLE),
				 errmsg("break-glass on a standby is carried out on the primary, which cannot be reached"),
				 errdetail("%s", why)));
	id_text = call_with_document(conn, "_standby_break_glass", &req, &why);
	if (id_text != NULL)
		lsn_text = primary_query(conn, "SELECT pg_catalog.pg_current_wal_insert_lsn()::pg_catalog.text", &why);
	walrcv_disconnect(conn);
	if (id_text == NULL || lsn_text == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_LEDGER_PRIMARY_UNREACHABLE),
				 errmsg("break-glass failed on the primary"),
				 errdetail("%s", why)));
	lsn = DatumGetLSN(DirectFunctionCall1(pg_lsn_in, CStringGetDatum(lsn_text)));
	started = GetCurrentTimestamp();
	while (GetXLogReplayRecPtr(NULL) < lsn)
	{
		CHECK_FOR_INTERRUPTS();
		if (TimestampDifferenceExceeds(started, GetCurrentTimestamp(), REPLAY_WAIT_LIMIT_MS))
			ereport(ERROR,
					(errcode(ERRCODE_LEDGER_PRIMARY_UNREACHABLE),
					 errmsg("break-glass %s is recorded on the primary, but this standby has not replayed it within %d seconds",
							id_text, REPLAY_WAIT_LIMIT_MS / 1000),
					 errhint("Read on the primary, or wait for this standby to catch up.")));
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 10,
						 PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
	return DatumGetInt64(DirectFunctionCall1(int8in, CStringGetDatum(id_text)));
}
