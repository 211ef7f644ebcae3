/*
 * worker.c
 *		The background sealer: every ehrledger.seal_interval milliseconds it
 *		seals what writers committed in ehrledger.database; every second it
 *		also tends the access log's replication slots (consent/log_slot.c).
 *
 * Next: ledger/seal.c makes the blocks; src/network admits peers' blocks
 * and moves this node's towards final (ledger_check_pending()).
 */
#include "postgres.h"

#include "access/xact.h"
#include "commands/extension.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "consent/consent.h"
#include "ledger/ledger.h"
#include "network/network.h"

/* How often the sealer tends the access log's replication slots. */
#define TEND_SLOTS_MS	1000

/* One unit of work: a transaction that seals, if the extension is here. */
static void
seal_once(void)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, "ehrledger: sealing");

	if (OidIsValid(get_extension_oid("ehrledger", true)))
	{
		if (ledger_may_seal())
			(void) ledger_seal();
		ledger_check_pending();
	}

	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
}

void
ehrledger_sealer_main(Datum arg)
{
	TimestampTz next_seal = 0;
	TimestampTz next_tend = 0;

	(void) arg;
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(ehrledger_database, NULL, 0);
	pgstat_report_appname("ehrledger sealer");

	for (;;)
	{
		long		timeout;
		int			events = WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH;
		TimestampTz now = GetCurrentTimestamp();

		if (now >= next_tend)
		{
			next_tend = TimestampTzPlusMilliseconds(now, TEND_SLOTS_MS);
			access_log_tend_slots();
			now = GetCurrentTimestamp();
		}
		timeout = Max(0, (long) ((next_tend - now) / 1000));

		if (ehrledger_seal_interval > 0)
		{
			if (now >= next_seal)
			{
				/* Fixed rate: the interval counts from the start of a seal. */
				next_seal = TimestampTzPlusMilliseconds(now, ehrledger_seal_interval);
				seal_once();
				now = GetCurrentTimestamp();
			}
			timeout = Min(timeout, Max(0, (long) ((next_seal - now) / 1000)));
		}

		(void) WaitLatch(MyLatch, events, timeout, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();

		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			next_seal = 0;
		}
	}
}
