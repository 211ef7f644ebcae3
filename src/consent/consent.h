/*
 * consent/consent.h
 *		The consent subsystem: who may read which patient's rows, and the
 *		record of every read and change.
 *
 *   consent.c     consents enforced by row-level security, break-glass,
 *                 noting which patients a statement touched
 *   access_log.c  the access log writer (a background worker)
 *   explain.c     EXPLAIN ANALYZE refused where it would leak filtered rows
 */
#ifndef CONSENT_CONSENT_H
#define CONSENT_CONSENT_H

#include "ehrledger.h"

/* consent.c: consents, row-level security, noting accesses */
extern void consent_init(void);
extern bool actor_of_role(Oid roleid, char **actor_id, char **role);

/* explain.c: EXPLAIN ANALYZE of consent-protected tables */
extern void explain_guard_init(void);

/* access_log.c: the access log writer */
extern void access_log_init(void);
extern const char *access_log_client_addr(void);
extern void access_log_send(TimestampTz at, const char *actor_id, const char *pg_role,
							const char *action, int32 table_id, List *patients,
							List *bases, bool wait, bool aborting);
extern PGDLLEXPORT void ehrledger_access_log_main(Datum arg);

#endif							/* CONSENT_CONSENT_H */
