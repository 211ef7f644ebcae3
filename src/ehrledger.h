/*
 * ehrledger.h
 *		Declarations shared by ehrledger's source files.
 *
 * Read the files in this order to follow a row into the ledger:
 *   encode.c   a row becomes canonical bytes
 *   merkle.c   bytes become a leaf hash, leaves become a Merkle root
 *   block.c    a root becomes a signed block header
 *   seal.c     committed rows are grouped into blocks
 *   verify.c   everything above is recomputed and compared
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
#include "utils/snapshot.h"
#include "utils/timestamp.h"

#include "core/ledger_core.h"

#define LEDGER_HASH_LEN		32
#define LEDGER_PUBKEY_LEN	32
#define LEDGER_SIG_LEN		64

/* Size of one packed leaf in a block: seq (8), table id (4), hash (32). */
#define LEDGER_LEAF_SIZE	44

/* Names of the columns protect() adds; they are never part of a row's hash. */
#define LEDGER_SEQ_COLUMN	"ledger_seq"
#define LEDGER_HASH_COLUMN	"ledger_hash"
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
 * standard.  docs/errors.md lists them.
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

/* encode.c: the canonical row encoding */
typedef struct RowEncoder RowEncoder;

extern RowEncoder *row_encoder_create(TupleDesc desc, MemoryContext mcxt);
extern AttrNumber row_encoder_seq_attnum(const RowEncoder *enc);
extern AttrNumber row_encoder_hash_attnum(const RowEncoder *enc);
extern void row_encode(const RowEncoder *enc, StringInfo buf, int32 table_id,
					   int64 seq, const Datum *values, const bool *isnull);

extern bool ledger_column_name(const char *name);
extern void row_encoder_columns_json(const RowEncoder *enc, TupleDesc desc, StringInfo buf);
extern void end_event_encode(StringInfo buf, int32 table_id, int64 end_seq,
							 int64 version_seq, int op, TimestampTz at, const char *role);
extern void row_signing_payload(const RowEncoder *enc, StringInfo buf,
								const char *schema, const char *table,
								const Datum *values, const bool *isnull,
								AttrNumber signature_attnum);

/* Offset of ledger_seq inside an encoded row: version, kind, table id. */
#define ROW_ENCODING_SEQ_OFFSET 6

/* merkle.c: SHA-256, leaf and node hashing, Merkle roots */
extern void ledger_sha256(const void *data, size_t len, uint8 *out);
extern void ledger_leaf_hash(const void *encoding, size_t len, uint8 *out);
extern void ledger_node_hash(const uint8 *left, const uint8 *right, uint8 *out);
extern void ledger_merkle_root(const uint8 *items, size_t count, size_t stride,
							   uint8 *out);

/*
 * The history tree of a chain: an RFC 6962 tree over its block hashes, kept
 * as a frontier (the roots of its perfect subtrees, largest first; one per
 * set bit of the tree's size, so at most 64).
 */
#define HISTORY_MAX_FRONTIER 64
extern void history_append(uint8 *frontier, int *count, uint64 size_before,
						   const uint8 *block_hash);
extern void history_root(const uint8 *frontier, int count, uint8 *out);
extern int	history_frontier_count(uint64 size);

/* keys.c: the node's Ed25519 key and name */
extern void ledger_keys_load_at_startup(void);
extern const uint8 *ledger_node_public_key(void);
extern void ledger_node_sign(const uint8 *msg, size_t len, uint8 *sig);
extern bool ledger_signature_ok(const uint8 *msg, size_t len,
								const uint8 *sig, const uint8 *pubkey);
extern const char *ledger_node_name(void);

/* block.c: block headers, digests and the ledger's own tables */
typedef struct BlockHeader
{
	char	   *origin;
	int64		height;
	uint8		prev_hash[LEDGER_HASH_LEN];
	uint8		history_root[LEDGER_HASH_LEN];	/* tree of blocks 1..height-1 */
	uint8		root[LEDGER_HASH_LEN];
	uint8		leaves_hash[LEDGER_HASH_LEN];
	int64		first_seq;
	int64		last_seq;
	int64		row_count;
	TimestampTz sealed_at;
	uint8		public_key[LEDGER_PUBKEY_LEN];
} BlockHeader;

/* A block as stored in ehrledger.block, read through SPI. */
typedef struct StoredBlock
{
	BlockHeader h;
	uint8		block_hash[LEDGER_HASH_LEN];
	uint8		signature[LEDGER_SIG_LEN];
	uint8		frontier[HISTORY_MAX_FRONTIER * LEDGER_HASH_LEN];
	int			frontier_count;
	const char *malformed;		/* first field that is NULL or wrongly sized */
} StoredBlock;

/* Columns block_from_spi() reads, in this order, first in a select list. */
#define BLOCK_COLUMNS \
	"origin, height, prev_hash, history_root, root, block_hash, first_seq," \
	" last_seq, row_count, sealed_at, public_key, signature, history_frontier," \
	" leaves_hash"
#define BLOCK_NCOLUMNS 14

extern void block_to_core(const BlockHeader *h, LcBlockHeader *c);
extern void block_header_hash(const BlockHeader *h, uint8 *out);
extern void block_header_bytes(const BlockHeader *h, StringInfo buf);
extern bool block_from_spi(HeapTuple tup, TupleDesc desc, StoredBlock *b);
extern const char *stored_block_problem(const StoredBlock *b);
extern bool spi_fixed(HeapTuple tup, TupleDesc desc, int col, uint8 *out, size_t len);
extern void digest_message(StringInfo buf, const char *origin, int64 height,
						   const uint8 *block_hash, int64 last_seq,
						   TimestampTz sealed_at);
extern int64 timestamptz_to_unix_micros(TimestampTz ts);
extern TimestampTz unix_micros_to_timestamptz(int64 us);
extern char *format_iso_utc(TimestampTz ts);
extern bool parse_iso_utc(const char *s, TimestampTz *result);
extern Oid	ledger_namespace(void);
extern Oid	ledger_relid(const char *relname);
extern bool ledger_has_function(const char *name, int nargs, const Oid *argtypes);
extern bytea *ledger_bytea(const void *data, size_t len);
extern void put_u16(StringInfo buf, uint16 v);
extern void put_u32(StringInfo buf, uint32 v);
extern void put_u64(StringInfo buf, uint64 v);
/* Readers: src/core's, under the names the server's files know. */
#define get_u32(p) lc_get_u32(p)
#define get_u64(p) lc_get_u64(p)
extern char *hex_encode_bytes(const uint8 *data, size_t len);

/* digest.c: digests an auditor keeps */
#define DIGEST_FORMAT	"ehrledger-digest-1"

typedef struct ParsedDigest
{
	char	   *origin;
	int64		height;
	uint8		block_hash[LEDGER_HASH_LEN];
	int64		last_seq;
	TimestampTz sealed_at;
	uint8		public_key[LEDGER_PUBKEY_LEN];
	uint8		signature[LEDGER_SIG_LEN];
} ParsedDigest;

extern void parse_digest(Jsonb *jb, ParsedDigest *d);
extern bool digest_signature_ok(const ParsedDigest *d);
extern const char *digest_block_mismatch(const ParsedDigest *d, const StoredBlock *b);
extern bool ledger_key_trusted(const char *origin, const uint8 *key);
extern void digest_require_trusted(const ParsedDigest *d);

/* tables.c: the registry of protected tables */
typedef struct LedgerTable
{
	int32		table_id;
	Oid			relid;
	Oid			history_relid;	/* versioned tables only */
	bool		retired;		/* taken out of the ledger by retire() */
	bool		consent;		/* protected with a patient column */
} LedgerTable;

extern List *ledger_tables(Snapshot snapshot);

/* The columns a history table adds for the end of a version. */
typedef struct HistoryEndColumns
{
	AttrNumber	op;
	AttrNumber	end_seq;
	AttrNumber	end_hash;
	AttrNumber	end_at;
	AttrNumber	end_by;
} HistoryEndColumns;
extern bool history_end_columns(Relation rel, HistoryEndColumns *c);
extern void history_end_encode(StringInfo buf, int32 table_id, int64 end_seq, int64 version_seq,
							   const HistoryEndColumns *hc, const Datum *values);
extern int32 ledger_table_id(Oid relid, Snapshot snapshot);
extern Oid	ledger_seq_index(Relation rel, AttrNumber seq_attnum);
extern int32 ledger_table_for_reader(Oid relid);
extern Oid	ledger_code_owner(Oid relid);

typedef void (*LedgerRowCallback) (void *arg, int64 seq, StringInfo encoding, Datum json,
								   TupleTableSlot *slot);
extern int64 ledger_read_rows(Oid relid, int32 table_id, int64 lo, int64 hi,
							  LedgerRowCallback fn, void *arg);

/* signatures.c */
extern void signatures_init(void);
extern uint64 ledger_actor_generation(void);
extern bool ledger_signed_columns(Relation rel, AttrNumber *signer, AttrNumber *signature);
extern void check_row_signature(Relation rel, const RowEncoder *enc, AttrNumber signer_attnum,
								AttrNumber signature_attnum, const Datum *values,
								const bool *isnull);

/* proofs.c */
extern int64 ledger_sealed_leaf(int64 seq, int32 table_id, const uint8 *leaf, char **problem);

/* checks.c: enrolments, and src/core's checks from SQL */
extern void core_failed(int rc) pg_attribute_noreturn();
typedef struct RowShower RowShower;
extern RowShower *row_shower_create(Relation rel);
extern char *row_shower_json(RowShower *rs, const char *encoding, size_t len);
extern bool ledger_enrol_tables(void);

/* seal.c */
extern int64 ledger_seal(void);
extern void ledger_wait_for_writers(List *tables);

/* consent.c: consents, row-level security, noting accesses */
extern void consent_init(void);
extern Oid	ledger_owner(void);

/* privileges.c: whose rights ehrledger's paths run with */
typedef struct UserSwitch
{
	Oid			userid;
	int			sec_context;
	int			nestlevel;		/* of GUC settings; 0: none opened */
} UserSwitch;

extern void user_switch_restricted(Oid role, UserSwitch *sw);
extern void user_switch_ledger_owner(UserSwitch *sw);
extern void user_switch_end(UserSwitch *sw);
extern Datum ehrledger_as_table_owner(PG_FUNCTION_ARGS);
extern Oid	relation_owner(Oid relid);
extern Datum row_to_json_as(Oid owner, Datum row);
extern Datum input_as_type_owner(Oid typid, char *text, int32 typmod);

/* explain.c: EXPLAIN ANALYZE of consent-protected tables */
extern void explain_guard_init(void);

/* access_log.c: the access log writer */
extern void access_log_init(void);
extern const char *access_log_client_addr(void);
extern void access_log_send(TimestampTz at, const char *actor_id, const char *pg_role,
							const char *action, int32 table_id, List *patients,
							List *bases, bool wait, bool aborting);
extern PGDLLEXPORT void ehrledger_access_log_main(Datum arg);

/* network.c */
extern void ledger_check_pending(void);
extern bool ledger_may_seal(void);
extern void ledger_require_rejoined(void);
extern void network_init_hooks(void);

/* A row being restored from a peer's copy (triggers.c, network.c). */
typedef struct LedgerRestore
{
	Oid			relid;
	int64		seq;
	uint8		leaf[LEDGER_HASH_LEN];
	int			inserted;
} LedgerRestore;
extern LedgerRestore ledger_restoring;

/* worker.c */
extern PGDLLEXPORT void ehrledger_sealer_main(Datum arg);

#endif							/* EHRLEDGER_H */
