/*
 * consent/consent.h
 *		The consent subsystem: who may read which patient's rows, and the
 *		record of every read and change.
 *
 *   consent.c     consents enforced by row-level security, break-glass,
 *                 noting which patients a statement touched
 *   access_log.c  the access log: records made durable by the reading
 *                 backend, the writer (a background worker) that turns
 *                 them into ledgered rows
 *   log_slot.c    the replication slot that keeps the WAL the access
 *                 log has not written yet
 *   standby.c     reads on a hot standby, recorded on the primary
 *   explain.c     EXPLAIN ANALYZE refused where it would leak filtered rows
 */
#ifndef CONSENT_CONSENT_H
#define CONSENT_CONSENT_H

#include "access/xlogdefs.h"

#include "ehrledger.h"

/* A standby's batch or request not signed with this cluster's node key. */
#define ERRCODE_LEDGER_STANDBY_UNSIGNED		MAKE_SQLSTATE('L','D','0','4','0')
/* A read on a standby that the primary could not record. */
#define ERRCODE_LEDGER_PRIMARY_UNREACHABLE	MAKE_SQLSTATE('L','D','0','4','1')

/* consent.c: consents, row-level security, noting accesses */
extern void consent_init(void);
extern bool actor_of_role(Oid roleid, char **actor_id, char **role);

/* explain.c: EXPLAIN ANALYZE of consent-protected tables */
extern void explain_guard_init(void);

/* One read record, as a backend notes it and the writer stores it. */
typedef struct AccessRecord
{
	TimestampTz at;
	int32		table_id;
	char	   *action;
	char	   *actor;			/* NULL: no actor */
	char	   *pg_role;
	char	   *client_addr;	/* NULL: a Unix socket */
	int			npatients;
	char	  **patients;
	char	  **bases;
} AccessRecord;

/* A ring entry: u32 length (of all of it), u64 WAL end position (0: none), payload. */
#define ACCESS_ENTRY_HEADER		12
#define ACCESS_RING_SIZE		(256 * 1024)
/* A standby writer's session on the primary: 16 random bytes, the ring's number. */
#define STANDBY_SESSION_LEN		20

/* access_log.c: records, the ring, the writer on a primary */
extern void access_log_init(void);
extern const char *access_log_client_addr(void);
extern void access_log_send(TimestampTz at, const char *actor_id, const char *pg_role,
							const char *action, int32 table_id, List *patients,
							List *bases, bool aborting);
extern void access_log_settle(bool wait);
extern bool access_log_decode(const char *payload, size_t len, AccessRecord *rec);
extern int	access_log_insert(AccessRecord *recs, int n, const char *detail);
extern void access_log_writer_done(uint64 to);
extern void access_log_writer_failed(uint64 from, uint64 to, const char *why);
extern bool access_log_writer_take(char *buf, uint64 *from, uint64 *to);
extern void access_log_writer_leave(void);
extern void access_log_standby_session(uint8 *session);
extern bool access_log_complete_to(Oid dboid, XLogRecPtr *lsn);

/* log_slot.c: the replication slot that keeps the WAL the access log needs */
extern bool access_log_slot_hold(XLogRecPtr from, const char **why);
extern bool access_log_slot_release_to(XLogRecPtr to);
extern void access_log_slot_drop(void);
extern void access_log_tend_slots(void);
extern PGDLLEXPORT void ehrledger_access_log_main(Datum arg);

/* standby.c: reads on a standby, recorded on the primary */
extern void standby_init(void);
extern void standby_writer_main(void) pg_attribute_noreturn();
extern int64 standby_break_glass(const char *caller, const char *patient, const char *reason);
extern void standby_spool_record_here(void);

#endif							/* CONSENT_CONSENT_H */
