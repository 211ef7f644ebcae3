/*
 * ledger/ledger.h
 *		The ledger subsystem: rows to canonical bytes, bytes to leaves,
 *		leaves to signed blocks, and everything that checks them again.
 *
 *   encode.c      the canonical row encoding (docs/format.md)
 *   triggers.c    the triggers protect() installs: each row version gets
 *                 its ledger_seq and hash as it is written
 *   tables.c      the registry of protected tables, reading their rows
 *   signatures.c  authors' Ed25519 signatures over their rows
 *   block.c       leaves, Merkle roots, the history tree, block headers
 *   seal.c        committed rows grouped into hash-chained, signed blocks
 *   verify.c      everything recomputed and compared; every fault listed
 *   verify_parallel.c  verify()'s row pass shared with parallel workers
 *   proofs.c      inclusion and consistency proofs, exports
 *   digest.c      signed digests an auditor takes away
 *   checks.c      src/core's offline checks run from SQL; enrolments
 *   erase.c       erasure: row versions removed, leaves kept, each erased
 *                 leaf recorded
 *   partitions.c  partitioned ledger tables: their partitions, the one
 *                 holding a row, detaching refused
 */
#ifndef LEDGER_LEDGER_H
#define LEDGER_LEDGER_H

#include "fmgr.h"

#include "core/check.h"
#include "ehrledger.h"

/* encode.c: the canonical row encoding */
typedef struct RowEncoder RowEncoder;

extern RowEncoder *row_encoder_create(TupleDesc desc, MemoryContext mcxt);
extern AttrNumber row_encoder_seq_attnum(const RowEncoder *enc);
extern AttrNumber row_encoder_hash_attnum(const RowEncoder *enc);
extern AttrNumber row_encoder_salt_attnum(const RowEncoder *enc);
extern const struct varlena *row_encoder_salt(const RowEncoder *enc, const Datum *values,
											  const bool *isnull);
extern void row_encode(const RowEncoder *enc, StringInfo buf, int32 table_id,
					   int64 seq, const Datum *values, const bool *isnull);

extern void row_encoder_columns_json(const RowEncoder *enc, TupleDesc desc, StringInfo buf);
extern void end_event_encode(StringInfo buf, int32 table_id, int64 end_seq,
							 int64 version_seq, int op, TimestampTz at, const char *role,
							 const struct varlena *salt);
extern void row_signing_payload(const RowEncoder *enc, StringInfo buf,
								const char *schema, const char *table,
								const Datum *values, const bool *isnull,
								AttrNumber signature_attnum);

/*
 * Offset of ledger_seq inside an encoded row: version, kind, table id (in
 * both formats; format 2's salt follows ledger_seq).
 */
#define ROW_ENCODING_SEQ_OFFSET 6

extern void ledger_leaf_hash(const void *encoding, size_t len, uint8 *out);
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

/* block.c: leaves, Merkle roots, the history tree, block headers */
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
extern const char *digest_block_mismatch(const ParsedDigest *d, const StoredBlock *b);
extern void digest_require_trusted(const ParsedDigest *d);

/* tables.c: the registry of protected tables */
typedef struct LedgerTable
{
	int32		table_id;
	Oid			relid;
	Oid			history_relid;	/* versioned tables only */
	bool		retired;		/* taken out of the ledger by retire() */
	bool		consent;		/* protected with a patient column */
	bool		versioned;		/* mode versioned */
	bool		partitioned;	/* holds no rows: its partitions are ledger tables */
	int32		partition_of;	/* table_id of its partitioned table, or 0 */
} LedgerTable;

extern List *ledger_registry(Snapshot snapshot);
extern List *ledger_tables(Snapshot snapshot);
extern LedgerTable *ledger_table_of(Oid relid, Snapshot snapshot);

/*
 * The columns a history table adds for the end of a version, and the
 * version's salt, which its end commits to (0 when the table has none).
 */
typedef struct HistoryEndColumns
{
	AttrNumber	op;
	AttrNumber	end_seq;
	AttrNumber	end_hash;
	AttrNumber	end_at;
	AttrNumber	end_by;
	AttrNumber	salt;
} HistoryEndColumns;
extern bool history_end_columns(Relation rel, HistoryEndColumns *c);
extern void history_end_encode(StringInfo buf, int32 table_id, int64 end_seq, int64 version_seq,
							   const HistoryEndColumns *hc, const Datum *values,
							   const bool *isnull);
extern int32 ledger_table_id(Oid relid, Snapshot snapshot);
extern Oid	ledger_seq_index(Relation rel, AttrNumber seq_attnum);
extern LedgerTable *ledger_table_for_reader(Oid relid);
extern LedgerTable *ledger_row_table_for_reader(Oid relid, int64 seq);

typedef void (*LedgerRowCallback) (void *arg, int64 seq, StringInfo encoding, Datum json,
								   TupleTableSlot *slot);
extern int64 ledger_read_rows(Oid relid, int32 table_id, int64 lo, int64 hi,
							  LedgerRowCallback fn, void *arg);

/* verify_parallel.c: verify()'s row pass over one table, with parallel workers */
typedef struct RowPass RowPass;

extern void row_version_leaf(const RowEncoder *enc, StringInfo buf, int32 table_id, int64 seq,
							 const Datum *values, const bool *isnull, uint8 *leaf);
extern void row_end_leaf(StringInfo buf, int32 table_id, int64 end_seq, int64 seq,
						 const HistoryEndColumns *hc, const Datum *values, const bool *isnull,
						 uint8 *leaf);
extern void prefault(void *start, Size size);
extern const uint8 *row_stored_hash(const Datum *values, const bool *isnull, AttrNumber att);
extern int	row_pass_workers(Relation rel, int max_workers);
extern bool row_pass_fits(size_t nleaves);
extern RowPass *row_pass_begin(Relation rel, int nworkers, int32 table_id, bool history);
extern bool row_pass_leaves(RowPass *p, size_t nleaves, int64 horizon);
extern void row_pass_leaf(RowPass *p, size_t i, int64 seq, const uint8 *hash, bool claimed);
extern void row_pass_publish(RowPass *p);
extern void row_pass_abandon(RowPass *p);
extern void row_pass_launch(RowPass *p);
extern bool row_pass_finish(RowPass *p, int64 *rows);
extern bool row_pass_claimed(RowPass *p, size_t i);
extern int	row_pass_launched(RowPass *p);
extern void row_pass_end(RowPass *p);

/* triggers.c, backfill.c: numbering and hashing rows as they enter the ledger */
extern bytea *ledger_new_salt(Relation rel);
extern bytea *ledger_number_version(const RowEncoder *enc, int32 table_id, Oid seq_relid,
									const Datum *values, const bool *isnull, int64 *seq);

/* signatures.c */
extern void signatures_init(void);
extern uint64 ledger_actor_generation(void);
extern void check_row_signature(Relation rel, Oid signed_relid, const RowEncoder *enc,
								AttrNumber signer_attnum, AttrNumber signature_attnum,
								const Datum *values, const bool *isnull);

/* proofs.c */
extern int64 ledger_sealed_leaf(int64 seq, int32 table_id, const uint8 *leaf, char **problem);

/* erase.c: erasure */
extern int64 ledger_erasure_of(int32 table_id, int64 seq, uint8 *leaf);

/* partitions.c: partitioned ledger tables */
extern LedgerTable *ledger_root(List *registry, LedgerTable *t);
extern bool ledger_is_partition_of(List *registry, Oid relid, const LedgerTable *t);
extern List *ledger_partitions(LedgerTable *t, Snapshot snapshot);
extern LedgerTable *ledger_partition_holding(List *tables, int64 seq);
extern Oid	ledger_signed_relid(Oid relid);
extern void partitions_init(void);

/* type_guard.c: changes to types that ledger tables hold values of */
extern Oid ledger_type_guard(Node *parsetree);
extern void type_guard_init(void);
extern bool ledger_schema_installed(void);
/* The enclosing utility command's columns and relations touched (type_guard.c). */
typedef struct TouchedLevel
{
	List	   *list;
	LocalTransactionId lxid;
} TouchedLevel;
extern TouchedLevel ledger_type_guard_begin(void);
extern void ledger_type_guard_after(Node *parsetree, Oid altered);
extern void ledger_type_guard_end(TouchedLevel outer);
extern void ledger_refuse_temporary_dependencies(Oid relid);
extern void ledger_refuse_foreign_row_types(Oid relid);
extern void ledger_refuse_temporary_schemas(Oid relid);

/* checks.c: enrolments, and src/core's checks from SQL */
typedef struct RowShower RowShower;
extern RowShower *row_shower_create(Relation rel);
extern char *row_shower_json(RowShower *rs, const char *encoding, size_t len);
extern bool ledger_enrol_tables(void);
extern LcDoc ledger_doc_arg(FunctionCallInfo fcinfo, int arg, const char *name);

/* seal.c */
extern int64 ledger_seal(void);
extern void ledger_wait_for_writers(List *tables);

/*
 * A row being restored from a peer's copy: src/network sets it, the insert
 * trigger (triggers.c) lets exactly that row in with exactly that leaf.
 */
typedef struct LedgerRestore
{
	Oid			relid;
	int64		seq;
	uint8		leaf[LEDGER_HASH_LEN];
	int			inserted;
} LedgerRestore;
extern LedgerRestore ledger_restoring;

#endif							/* LEDGER_LEDGER_H */
