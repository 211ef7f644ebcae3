/*
 * log_slot.c
 *		Keeps the WAL that holds reads the access log has not written yet:
 *		one physical replication slot per database.
 *
 * A read's record is durable in the WAL before the writer writes it
 * (access_log.c).  A checkpoint removes the WAL segments before its redo
 * point, and after a crash the end-of-recovery checkpoint removes all but
 * the newest: records the writer had not written when the server crashed
 * would go with them, and a search of the WAL after the restart would not
 * find them.  PostgreSQL keeps WAL that a consumer still needs for a
 * replication slot, so the writer keeps one, ehrledgerdb<OID>_access_log,
 * whose restart_lsn never passes the first record not yet written (and
 * committed durably).  The slot holds no xmin: VACUUM is not held back.
 *
 * Slots need wal_level replica or logical and a free slot under
 * max_replication_slots.  Without one the writer says why, once, and
 * readers wait for its durable commits instead (access_log.c).
 *
 * The sealer tends the slots (access_log_tend_slots): it moves the slot of
 * a database whose log is complete and whose writer is gone to the end of
 * the WAL, so that an idle database holds nothing back; after a restart it
 * starts the writer of every database with a slot, which writes what the
 * WAL holds; it drops the slot of a dropped database.  A writer that finds
 * the extension gone drops its database's slot.
 *
 * Next: access_log.c's writer reads the WAL from its position and writes
 * what it finds into ehrledger.access_event.
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "access/xlog_internal.h"
#include "catalog/pg_database.h"
#include "miscadmin.h"
#include "replication/slot.h"
#include "utils/memutils.h"
#include "utils/syscache.h"

#include "consent/consent.h"

/* The slot name of a database's access log: peers' slots are ehrledger_<name>. */
static void
slot_name_of(Oid dboid, char *name)
{
	snprintf(name, NAMEDATALEN, "ehrledgerdb%u_access_log", dboid);
}

/* The database whose access log a slot name is, or InvalidOid. */
static Oid
slot_database(const char *name)
{
	unsigned int dboid;
	char		tail;

	if (sscanf(name, "ehrledgerdb%u_access_log%c", &dboid, &tail) != 1)
		return InvalidOid;
	return (Oid) dboid;
}

/* Why this server cannot keep a slot, or NULL. */
static const char *
slots_unavailable(void)
{
	if (max_replication_slots == 0)
		return "max_replication_slots is 0";
	if (wal_level < WAL_LEVEL_REPLICA)
		return "wal_level is minimal";
	return NULL;
}

/*
 * Points the acquired slot at from, or at the oldest WAL left if from is
 * gone already; as ReplicationSlotReserveWal does, checks after telling the
 * checkpointer that no concurrent checkpoint removed it meanwhile.
 */
static void
slot_point_at(XLogRecPtr from)
{
	ReplicationSlot *slot = MyReplicationSlot;

	for (;;)
	{
		XLogSegNo	removed = XLogGetLastRemovedSegno();
		XLogSegNo	segno;
		XLogRecPtr	target = from;

		XLByteToSeg(target, segno, wal_segment_size);
		if (segno <= removed)
			XLogSegNoOffsetToRecPtr(removed + 1, 0, wal_segment_size, target);
		SpinLockAcquire(&slot->mutex);
		slot->data.restart_lsn = target;
		slot->data.invalidated_at = InvalidXLogRecPtr;
		SpinLockRelease(&slot->mutex);
		ReplicationSlotsComputeRequiredLSN();
		XLByteToSeg(target, segno, wal_segment_size);
		if (XLogGetLastRemovedSegno() < segno)
			break;
	}
}

/* What with_slot does to a slot. */
typedef enum
{
	SLOT_HOLD,					/* make it if missing; never past lsn */
	SLOT_MOVE,					/* forward to lsn; a failure if it is gone */
	SLOT_DROP					/* drop it, if it exists */
} SlotAction;

/* Never passes what the slot holds already: it may hold less than lsn needs. */
static void
hold_from(XLogRecPtr from)
{
	XLogRecPtr	held = MyReplicationSlot->data.restart_lsn;

	if (XLogRecPtrIsInvalid(held) || held > from)
	{
		slot_point_at(from);
		ReplicationSlotMarkDirty();
		ReplicationSlotSave();
	}
}

/* Moves the slot forward only; it reaches the disk with the next checkpoint. */
static void
move_to(XLogRecPtr to)
{
	XLogRecPtr	held = MyReplicationSlot->data.restart_lsn;

	if (XLogRecPtrIsInvalid(held) || held < to)
	{
		slot_point_at(to);
		ReplicationSlotMarkDirty();
	}
}

/*
 * The writer and the sealer each hold a slot for a moment: one waits for
 * the other, for a second at most (someone else streaming from the slot
 * would hold it for good).
 */
static void
wait_until_inactive(ReplicationSlot *slot)
{
	int			tries;

	for (tries = 0; tries < 200; tries++)
	{
		pid_t		active;

		SpinLockAcquire(&slot->mutex);
		active = slot->active_pid;
		SpinLockRelease(&slot->mutex);
		if (active == 0)
			return;
		CHECK_FOR_INTERRUPTS();
		pg_usleep(5000L);
	}
}

/*
 * Does action to a database's slot in a transaction of its own, so that an
 * error gives up the slot and its locks; a failure is returned as its
 * message, never raised.
 */
static char *
with_slot(Oid dboid, SlotAction action, XLogRecPtr lsn)
{
	MemoryContext mcxt = CurrentMemoryContext;
	char		name[NAMEDATALEN];
	char	   *volatile why = NULL;

	slot_name_of(dboid, name);
	StartTransactionCommand();
	PG_TRY();
	{
		ReplicationSlot *found = SearchNamedReplicationSlot(name, true);

		if (found != NULL && found->data.database != InvalidOid)
			ereport(ERROR,
					(errcode(ERRCODE_DUPLICATE_OBJECT),
					 errmsg("replication slot \"%s\" is a logical slot, not the access log's", name)));
		if (found == NULL && action == SLOT_MOVE)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("replication slot \"%s\" does not exist", name)));
		if (found == NULL && action == SLOT_HOLD)
		{
			ReplicationSlotCreate(name, false, RS_PERSISTENT, false);
			slot_point_at(lsn);
			ReplicationSlotMarkDirty();
			ReplicationSlotSave();
			ReplicationSlotRelease();
		}
		else if (found != NULL && action == SLOT_DROP)
		{
			wait_until_inactive(found);
			ReplicationSlotDrop(name, true);
		}
		else if (found != NULL)
		{
			wait_until_inactive(found);
			ReplicationSlotAcquire(name, true);
			if (action == SLOT_HOLD)
				hold_from(lsn);
			else
				move_to(lsn);
			ReplicationSlotRelease();
		}
		CommitTransactionCommand();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(mcxt);
		edata = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		/* (an abort does not give up an acquired slot) */
		if (MyReplicationSlot != NULL)
			ReplicationSlotRelease();
		why = pstrdup(edata->message);
		FreeErrorData(edata);
	}
	PG_END_TRY();
	MemoryContextSwitchTo(mcxt);
	return why;
}

/*
 * Makes this database's slot hold the WAL from from (the position up to
 * which the log is written durably).  False, with the reason in *why, if
 * the server cannot keep it.
 */
bool
access_log_slot_hold(XLogRecPtr from, const char **why)
{
	*why = slots_unavailable();
	if (*why == NULL)
		*why = with_slot(MyDatabaseId, SLOT_HOLD, from);
	return *why == NULL;
}

/*
 * Lets the WAL before to go: every record before it is written, and the
 * commit that wrote it is flushed.  False if the slot could not follow
 * (dropped by a DBA, say: the caller holds it again).
 */
bool
access_log_slot_release_to(XLogRecPtr to)
{
	return slots_unavailable() == NULL && with_slot(MyDatabaseId, SLOT_MOVE, to) == NULL;
}

/* The extension is gone from this database: nothing is left to hold. */
void
access_log_slot_drop(void)
{
	char	   *why;

	if (slots_unavailable() != NULL)
		return;
	why = with_slot(MyDatabaseId, SLOT_DROP, InvalidXLogRecPtr);
	if (why != NULL)
		ereport(WARNING,
				(errmsg("ehrledger could not drop the access log's replication slot: %s", why)));
}

/*
 * The sealer's round over the access log slots (see the file's head).  In
 * no transaction; raises no errors.
 */
void
access_log_tend_slots(void)
{
	Oid			dbs[64];
	int			n = 0;
	int			i;

	if (RecoveryInProgress() || slots_unavailable() != NULL)
		return;
	LWLockAcquire(ReplicationSlotControlLock, LW_SHARED);
	for (i = 0; i < max_replication_slots && n < (int) lengthof(dbs); i++)
	{
		ReplicationSlot *s = &ReplicationSlotCtl->replication_slots[i];
		Oid			dboid;

		if (!s->in_use || s->data.database != InvalidOid)
			continue;
		dboid = slot_database(NameStr(s->data.name));
		if (OidIsValid(dboid))
			dbs[n++] = dboid;
	}
	LWLockRelease(ReplicationSlotControlLock);

	for (i = 0; i < n; i++)
	{
		XLogRecPtr	complete_to;
		bool		exists;
		char	   *why = NULL;

		StartTransactionCommand();
		exists = SearchSysCacheExists1(DATABASEOID, ObjectIdGetDatum(dbs[i]));
		CommitTransactionCommand();
		if (!exists)
			why = with_slot(dbs[i], SLOT_DROP, InvalidXLogRecPtr);
		else if (access_log_complete_to(dbs[i], &complete_to))
			why = with_slot(dbs[i], SLOT_MOVE, complete_to);
		if (why != NULL)
			ereport(DEBUG1,
					(errmsg("ehrledger could not tend the access log slot of database %u: %s",
							dbs[i], why)));
	}
}
