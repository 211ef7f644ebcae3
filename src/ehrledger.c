/*
 * ehrledger.c
 *		Module load: settings, the node key, and the background sealer.
 *
 * Next: each subsystem's init (signatures_init, consent_init, access_log_init,
 * explain_guard_init, partitions_init, type_guard_init, network_init_hooks) and
 * the sealer, worker.c.
 */
#include "postgres.h"

#include <sodium.h>

#include "fmgr.h"
#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "utils/guc.h"

#include "consent/consent.h"
#include "ledger/ledger.h"
#include "network/network.h"

PG_MODULE_MAGIC;

char	   *ehrledger_database = NULL;
int			ehrledger_seal_interval = 1000;
char	   *ehrledger_node_name_setting = NULL;
char	   *ehrledger_key_file = NULL;
int			ehrledger_max_block_rows = 1000000;
char	   *ehrledger_purpose = NULL;
bool		ehrledger_access_log_wait = true;
int			ehrledger_break_glass_duration = 3600;
int			ehrledger_min_quorum = 0;
int			ehrledger_writer_timeout = 300 * 1000;
int			ehrledger_erasure_approval = ERASURE_APPROVAL_ADMIN;

static const struct config_enum_entry erasure_approval_modes[] = {
	{"admin", ERASURE_APPROVAL_ADMIN, false},
	{"patient", ERASURE_APPROVAL_PATIENT, false},
	{"two_admins", ERASURE_APPROVAL_TWO_ADMINS, false},
	{NULL, 0, false}
};

/* Read from SQL only (current_setting), by the FHIR functions. */
static char *ehrledger_fhir_base_url = NULL;
static char *ehrledger_fhir_identifier_system = NULL;
/* Read from SQL only, by ehrledger._to_pending(). */
static int	ehrledger_max_held_blocks = 1000;

void		_PG_init(void);

/* Node names travel in blocks and digests: keep them short and plain. */
static bool
check_node_name(char **newval, void **extra, GucSource source)
{
	const char *p;

	(void) extra;
	(void) source;
	if (*newval == NULL || (*newval)[0] == '\0')
		return true;
	if (strlen(*newval) > 63)
	{
		GUC_check_errdetail("A node name has at most 63 characters.");
		return false;
	}
	for (p = *newval; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
			  (*p >= '0' && *p <= '9') || *p == '-' || *p == '_' || *p == '.'))
		{
			GUC_check_errdetail("A node name may contain only letters, digits, '-', '_' and '.'.");
			return false;
		}
	return true;
}

/*
 * FHIR URLs end up inside references, identifiers and XHTML narrative: an
 * absolute http(s) URL without a query, fragment, spaces, quotes or angle
 * brackets, so that nothing needs escaping and every path appended to it
 * stays a URL.
 */
static bool
check_fhir_url(char **newval, void **extra, GucSource source)
{
	const char *p;
	size_t		len;

	(void) extra;
	(void) source;
	if (*newval == NULL || (*newval)[0] == '\0')
		return true;
	len = strlen(*newval);
	if (len > 200)
	{
		GUC_check_errdetail("A FHIR URL has at most 200 characters.");
		return false;
	}
	if (strncmp(*newval, "https://", 8) != 0 && strncmp(*newval, "http://", 7) != 0)
	{
		GUC_check_errdetail("A FHIR URL starts with https:// or http://.");
		return false;
	}
	if ((*newval)[len - 1] == '/')
	{
		GUC_check_errdetail("A FHIR URL does not end with '/': paths such as /Patient/ID are appended to it.");
		return false;
	}
	for (p = *newval; *p; p++)
		if ((unsigned char) *p <= ' ' || (unsigned char) *p >= 0x7f ||
			strchr("\"'<>\\`{}|^?#", *p) != NULL)
		{
			GUC_check_errdetail("A FHIR URL may not contain spaces, quotes, angle brackets, '?', '#' or non-ASCII characters.");
			return false;
		}
	return true;
}

void
_PG_init(void)
{
	BackgroundWorker worker;

	if (!process_shared_preload_libraries_in_progress)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("ehrledger must be loaded via shared_preload_libraries"),
				 errhint("Add ehrledger to shared_preload_libraries in postgresql.conf and restart the server.")));

	if (sodium_init() < 0)
		ereport(ERROR,
				(errmsg("ehrledger could not initialize libsodium")));

	DefineCustomStringVariable("ehrledger.database",
							   "Database served by the ehrledger background sealer.",
							   NULL,
							   &ehrledger_database,
							   "postgres",
							   PGC_POSTMASTER,
							   0,
							   NULL, NULL, NULL);
	DefineCustomIntVariable("ehrledger.seal_interval",
							"How often pending ledger rows are sealed into a block; 0 seals only on ehrledger.seal().",
							NULL,
							&ehrledger_seal_interval,
							1000,
							0, 3600 * 1000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomIntVariable("ehrledger.max_block_rows",
							"Largest number of rows sealed into one block; a longer backlog makes several blocks.",
							"Sealing holds one block's leaves in memory, about 150 bytes a row.",
							&ehrledger_max_block_rows,
							1000000,
							1, 10000000,
							PGC_SUSET,
							0,
							NULL, NULL, NULL);
	DefineCustomStringVariable("ehrledger.node_name",
							   "This node's name in blocks, digests and the network.",
							   "Empty means a name derived from the database system identifier.",
							   &ehrledger_node_name_setting,
							   "",
							   PGC_POSTMASTER,
							   0,
							   check_node_name, NULL, NULL);
	DefineCustomStringVariable("ehrledger.key_file",
							   "File holding this node's Ed25519 key; created with mode 0600 on first start.",
							   "A relative path is taken from the data directory.",
							   &ehrledger_key_file,
							   "ehrledger_node.key",
							   PGC_POSTMASTER,
							   GUC_SUPERUSER_ONLY,
							   NULL, NULL, NULL);
	DefineCustomStringVariable("ehrledger.purpose",
							   "Purpose of use this session declares; consents given for it apply.",
							   "A consent holds only for the purpose it names, such as treatment or research.",
							   &ehrledger_purpose,
							   "treatment",
							   PGC_USERSET,
							   0,
							   NULL, NULL, NULL);
	DefineCustomIntVariable("ehrledger.break_glass_duration",
							"How long emergency access opened by ehrledger.break_glass() lasts.",
							NULL,
							&ehrledger_break_glass_duration,
							3600,
							1, 7 * 24 * 3600,
							PGC_SUSET,
							GUC_UNIT_S,
							NULL, NULL, NULL);
	DefineCustomBoolVariable("ehrledger.access_log_wait",
							 "Whether a statement that read patients' rows waits until its access log record is durable.",
							 "Off records reads asynchronously: faster, but a crash can lose the last reads' records.",
							 &ehrledger_access_log_wait,
							 true,
							 PGC_SUSET,
							 0,
							 NULL, NULL, NULL);
	DefineCustomIntVariable("ehrledger.writer_timeout",
							"Longest time sealing waits for one session before it ends that session (never a superuser's).",
							"A transaction that writes ledgered rows, or locks a protected table, holds back sealing of everyone's rows while it lasts; after this long the sealer terminates it, as pg_terminate_backend() would.",
							&ehrledger_writer_timeout,
							300 * 1000,
							1000, 24 * 3600 * 1000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomIntVariable("ehrledger.min_quorum",
							"Least number of acknowledgments that makes a block final; the Byzantine quorum ceil((n+f+1)/2) applies when it is higher.",
							"It can raise the quorum up to the number of hospitals, never lower it.",
							&ehrledger_min_quorum,
							0,
							0, 1000,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);
	DefineCustomIntVariable("ehrledger.max_held_blocks",
							"Most blocks of one peer held back waiting for their predecessor, and how far beyond its stored height they may reach.",
							"A block beyond either limit is recorded in ehrledger.rejected_row and skipped: a lying peer cannot fill ehrledger.held_block.",
							&ehrledger_max_held_blocks,
							1000,
							1, 1000000,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);
	DefineCustomEnumVariable("ehrledger.erasure_approval",
							 "What an erasure needs besides an admin actor: nothing more (admin), the patient's signature (patient), or a second admin's (two_admins).",
							 "The signature is over ehrledger.erase_payload() or ehrledger.erase_patient_payload().",
							 &ehrledger_erasure_approval,
							 ERASURE_APPROVAL_ADMIN,
							 erasure_approval_modes,
							 PGC_SUSET,
							 0,
							 NULL, NULL, NULL);
	DefineCustomStringVariable("ehrledger.fhir_base_url",
							   "Base URL of the FHIR server that holds this hospital's resources, for references in FHIR output.",
							   "Empty gives relative references (Patient/ID) and urn:uuid full URLs in bundles.",
							   &ehrledger_fhir_base_url,
							   "",
							   PGC_SUSET,
							   0,
							   check_fhir_url, NULL, NULL);
	DefineCustomStringVariable("ehrledger.fhir_identifier_system",
							   "URL under which this hospital's identifier systems live in FHIR output (actors, tables, nodes, ledger rows).",
							   "Empty leaves identifiers without a system.",
							   &ehrledger_fhir_identifier_system,
							   "",
							   PGC_SUSET,
							   0,
							   check_fhir_url, NULL, NULL);
	standby_init();
	MarkGUCPrefixReserved("ehrledger");

	ledger_keys_load_at_startup();
	signatures_init();
	consent_init();
	access_log_init();
	explain_guard_init();
	partitions_init();
	type_guard_init();
	network_init_hooks();

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 5;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "ehrledger");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "ehrledger_sealer_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "ehrledger sealer");
	snprintf(worker.bgw_type, BGW_MAXLEN, "ehrledger sealer");
	RegisterBackgroundWorker(&worker);
}
