/*
 * ehrledger.h
 *		What every subsystem of ehrledger needs: sizes, SQLSTATEs, settings,
 *		the node's key, whose rights code runs with, and small helpers.
 *
 * The source tree, by subsystem (README.md, Development, draws it too):
 *   src/core/     the format's rules in plain C, shared with ehrledger-verify
 *   src/ledger/   rows to blocks: encoding, triggers, sealing, verification,
 *                 proofs, digests (ledger/ledger.h)
 *   src/consent/  policies, consents, break-glass, the access log
 *                 (consent/consent.h)
 *   src/network/  blocks between hospitals: a block's states (states.sql),
 *                 admission, acknowledgments, finality, evidence, sharing
 *                 (network/network.h)
 *   src/          module load (ehrledger.c), the sealer (worker.c), the
 *                 node key (keys.c), privileges.c, common.c
 *
 * To follow a row into the ledger read ledger/encode.c (a row becomes
 * canonical bytes), ledger/block.c (bytes become leaves, leaves a root, a
 * root a signed header), ledger/seal.c (committed rows are grouped into
 * blocks), ledger/verify.c (everything above recomputed and compared).
 */
#ifndef EHRLEDGER_H
#define EHRLEDGER_H

#include "postgres.h"

#include "access/tupdesc.h"
#include "lib/stringinfo.h"
#include "nodes/pg_list.h"
#include "utils/jsonb.h"
#include "utils/relcache.h"
#include "executor/tuptable.h"
#include "tcop/utility.h"
#include "utils/snapshot.h"
#include "utils/timestamp.h"

#include "core/ledger_core.h"

#define LEDGER_HASH_LEN		32
#define LEDGER_PUBKEY_LEN	32
#define LEDGER_SIG_LEN		64

/* Size of one packed leaf in a block: seq (8), table id (4), hash (32). */
#define LEDGER_LEAF_SIZE	44

/*
 * Names of the columns protect() adds; they are never encoded as columns.
 * ledger_salt (0.4) holds each row version's secret random salt, which its
 * encoding commits to (docs/format.md §1, format 2).
 */
#define LEDGER_SEQ_COLUMN	"ledger_seq"
#define LEDGER_HASH_COLUMN	"ledger_hash"
#define LEDGER_SALT_COLUMN	"ledger_salt"
#define LEDGER_SALT_LEN		16
/* History tables of versioned tables also carry the end of each version. */
#define LEDGER_OP_COLUMN		"ledger_op"
#define LEDGER_ENDED_SEQ_COLUMN	"ledger_ended_seq"
#define LEDGER_ENDED_HASH_COLUMN "ledger_ended_hash"
#define LEDGER_ENDED_AT_COLUMN	"ledger_ended_at"
#define LEDGER_ENDED_BY_COLUMN	"ledger_ended_by"

/* How a version ended, in its end event. */
#define LEDGER_OP_UPDATE	1
#define LEDGER_OP_DELETE	2

/*
 * SQLSTATEs of class LD ("ledger"), implementation-defined per the SQL
 * standard.  README.md (Errors) lists them.
 */
#define ERRCODE_LEDGER_ROW_IMMUTABLE	MAKE_SQLSTATE('L','D','0','0','1')
#define ERRCODE_LEDGER_NOT_PROTECTED	MAKE_SQLSTATE('L','D','0','0','2')
#define ERRCODE_LEDGER_FOREIGN_DIGEST	MAKE_SQLSTATE('L','D','0','0','3')
#define ERRCODE_LEDGER_BAD_SIGNATURE	MAKE_SQLSTATE('L','D','0','0','4')
#define ERRCODE_LEDGER_EMPTY			MAKE_SQLSTATE('L','D','0','0','5')
#define ERRCODE_LEDGER_KEY_FILE			MAKE_SQLSTATE('L','D','0','0','6')
#define ERRCODE_LEDGER_NOT_SEALED		MAKE_SQLSTATE('L','D','0','0','7')
#define ERRCODE_LEDGER_DIGEST_STALE		MAKE_SQLSTATE('L','D','0','0','8')
#define ERRCODE_LEDGER_BAD_ROW_SIGNATURE	MAKE_SQLSTATE('L','D','0','1','0')
#define ERRCODE_LEDGER_NOT_SIGNED		MAKE_SQLSTATE('L','D','0','1','1')
#define ERRCODE_LEDGER_ERASURE_APPROVAL	MAKE_SQLSTATE('L','D','0','1','4')
#define ERRCODE_LEDGER_SCHEMA_GUARD		MAKE_SQLSTATE('L','D','0','2','0')
#define ERRCODE_LEDGER_EXPLAIN_REFUSED	MAKE_SQLSTATE('L','D','0','2','1')
#define ERRCODE_LEDGER_NOT_REJOINED		MAKE_SQLSTATE('L','D','0','3','0')
#define ERRCODE_LEDGER_PEER_TRUNCATE	MAKE_SQLSTATE('L','D','0','3','1')

/* ehrledger.c: settings */
extern char *ehrledger_database;
extern int	ehrledger_seal_interval;
extern char *ehrledger_node_name_setting;
extern char *ehrledger_key_file;
extern int	ehrledger_max_block_rows;
extern char *ehrledger_purpose;
extern bool ehrledger_access_log_wait;
extern int	ehrledger_break_glass_duration;
extern int	ehrledger_min_quorum;
extern int	ehrledger_writer_timeout;
/* ehrledger.erasure_approval: what an erasure needs besides an admin */
#define ERASURE_APPROVAL_ADMIN		0
#define ERASURE_APPROVAL_PATIENT	1
#define ERASURE_APPROVAL_TWO_ADMINS	2
extern int	ehrledger_erasure_approval;

/* common.c: small helpers */
extern bytea *ledger_bytea(const void *data, size_t len);
extern void put_u32(StringInfo buf, uint32 v);
extern void put_u64(StringInfo buf, uint64 v);
/* Readers: src/core's, under the names the server's files know. */
#define get_u32(p) lc_get_u32(p)
#define get_u64(p) lc_get_u64(p)
extern char *hex_encode_bytes(const uint8 *data, size_t len);
extern Oid	ledger_namespace(void);
extern Oid	ledger_relid(const char *relname);
extern Oid	ledger_owned_relid(const char *relname);
extern char *relation_qualified_name(Oid relid);
extern void next_process_utility(ProcessUtility_hook_type next, PlannedStmt *pstmt,
								 const char *queryString, bool readOnlyTree,
								 ProcessUtilityContext context, ParamListInfo params,
								 QueryEnvironment *queryEnv, DestReceiver *dest,
								 QueryCompletion *qc);
extern bool ledger_has_function(const char *name, int nargs, const Oid *argtypes);
extern void core_failed(int rc) pg_attribute_noreturn();

/* keys.c: the node's Ed25519 key and name */
extern void ledger_keys_load_at_startup(void);
extern const uint8 *ledger_node_public_key(void);
extern void ledger_node_sign(const uint8 *msg, size_t len, uint8 *sig);
extern bool ledger_signature_ok(const uint8 *msg, size_t len,
								const uint8 *sig, const uint8 *pubkey);
extern const char *ledger_node_name(void);

/* privileges.c: whose rights ehrledger's paths run with */
typedef struct UserSwitch
{
	Oid			userid;
	int			sec_context;
	int			nestlevel;		/* of GUC settings; 0: none opened */
} UserSwitch;

extern Oid	ledger_owner(void);
extern void user_switch_restricted(Oid role, UserSwitch *sw);
extern void user_switch_ledger_owner(UserSwitch *sw);
extern void user_switch_end(UserSwitch *sw);
extern int	spi_as_owner(const char *query, int nargs, Oid *types, Datum *values,
						 const char *nulls, bool read_only, bool latest);
extern Datum ehrledger_as_table_owner(PG_FUNCTION_ARGS);
extern Oid	relation_owner(Oid relid);
extern Datum row_to_json_as(Oid owner, Datum row);
extern Datum input_as_type_owner(Oid typid, char *text, int32 typmod);

/* worker.c: the background sealer */
extern PGDLLEXPORT void ehrledger_sealer_main(Datum arg);

#endif							/* EHRLEDGER_H */
