/*
 * proofs.c
 *		Proofs anyone can check without the server (docs/format.md §11-14).
 *
 * An inclusion proof carries a row's canonical bytes, its audit path in its
 * block's tree, and its block's path in the history tree of the block a
 * digest names: both logarithmic.  A consistency proof shows that a newer
 * digest's chain extends an older one's.  An export gives an auditor every
 * block and every row of a table to recompute offline.
 *
 * Next: ehrledger-verify (cli/) checks these offline with src/core; checks.c
 * runs the same checks from SQL.
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/relation.h"
#include "access/relscan.h"
#include "access/tableam.h"
#include "executor/executor.h"
#include "parser/parse_relation.h"
#include "utils/fmgroids.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/rel.h"
#include "utils/fmgrprotos.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"

#include "core/decode.h"
#include "core/ledger_core.h"
#include "ledger/ledger.h"

PG_FUNCTION_INFO_V1(ehrledger_proof);
PG_FUNCTION_INFO_V1(ehrledger_consistency_proof);
PG_FUNCTION_INFO_V1(ehrledger_export);


static void
append_hex(StringInfo buf, const uint8 *data, size_t len)
{
	char	   *hex = palloc(len * 2 + 1);

	lc_hex_encode(data, len, hex);
	appendStringInfoChar(buf, '"');
	appendBinaryStringInfo(buf, hex, len * 2);
	appendStringInfoChar(buf, '"');
	pfree(hex);
}

static void
append_path(StringInfo buf, const uint8 *path, int len)
{
	int			i;

	appendStringInfoChar(buf, '[');
	for (i = 0; i < len; i++)
	{
		if (i > 0)
			appendStringInfoString(buf, ", ");
		append_hex(buf, path + i * LEDGER_HASH_LEN, LEDGER_HASH_LEN);
	}
	appendStringInfoChar(buf, ']');
}

/* A block header as the JSON object of docs/format.md §11. */
static void
append_block(StringInfo buf, const StoredBlock *b)
{
	appendStringInfo(buf, "{\"height\": " INT64_FORMAT ", \"prev_hash\": ", b->h.height);
	append_hex(buf, b->h.prev_hash, LEDGER_HASH_LEN);
	appendStringInfoString(buf, ", \"history_root\": ");
	append_hex(buf, b->h.history_root, LEDGER_HASH_LEN);
	appendStringInfoString(buf, ", \"root\": ");
	append_hex(buf, b->h.root, LEDGER_HASH_LEN);
	appendStringInfoString(buf, ", \"leaves_hash\": ");
	append_hex(buf, b->h.leaves_hash, LEDGER_HASH_LEN);
	appendStringInfo(buf, ", \"first_seq\": " INT64_FORMAT ", \"last_seq\": " INT64_FORMAT
					 ", \"row_count\": " INT64_FORMAT ", \"sealed_at\": \"%s\", \"public_key\": ",
					 b->h.first_seq, b->h.last_seq, b->h.row_count,
					 format_iso_utc(b->h.sealed_at));
	append_hex(buf, b->h.public_key, LEDGER_PUBKEY_LEN);
	appendStringInfoString(buf, ", \"block_hash\": ");
	append_hex(buf, b->block_hash, LEDGER_HASH_LEN);
	appendStringInfoString(buf, ", \"signature\": ");
	append_hex(buf, b->signature, LEDGER_SIG_LEN);
	appendStringInfoChar(buf, '}');
}

/*
 * Reads one block of origin's chain, or when origin is NULL of any chain of
 * this node's (its own, or one it took over after a restore); with leaves
 * when asked.  Returns NULL when there is no such block.
 */
static StoredBlock *
read_block(const char *origin, const char *where, int64 arg, bytea **leaves)
{
	Oid			types[2] = {TEXTOID, INT8OID};
	Datum		values[2];
	char	   *query;
	int			ret;
	StoredBlock *b;

	query = psprintf("SELECT " BLOCK_COLUMNS ", leaves FROM ehrledger.block"
					 " WHERE %s AND %s ORDER BY height DESC LIMIT 1",
					 origin == NULL ?
					 "(origin = $1 OR origin IN (SELECT k.origin FROM ehrledger.node_key k))" :
					 "origin = $1", where);
	values[0] = CStringGetTextDatum(origin ? origin : ledger_node_name());
	values[1] = Int64GetDatum(arg);
	ret = SPI_execute_with_args(query, 2, types, values, NULL, true, 1);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "SPI_execute failed: %s", SPI_result_code_string(ret));
	if (SPI_processed == 0)
		return NULL;
	b = palloc(sizeof(StoredBlock));
	if (!block_from_spi(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, b))
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("block %lld has a malformed %s", (long long) b->h.height, b->malformed),
				 errhint("Run ehrledger.verify() to see what was changed.")));
	if (leaves != NULL)
	{
		bool		isnull;
		Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
									  BLOCK_NCOLUMNS + 1, &isnull);

		*leaves = isnull ? NULL : DatumGetByteaPCopy(d);
	}
	return b;
}

/* The block a digest names, which must still be in the chain unchanged. */
static StoredBlock *
block_of_digest(Jsonb *digest)
{
	ParsedDigest d;
	StoredBlock *b;

	parse_digest(digest, &d);
	digest_require_trusted(&d);
	b = read_block(d.origin, "height = $2", d.height, NULL);
	if (b == NULL || digest_block_mismatch(&d, b) != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_LEDGER_DIGEST_STALE),
				 errmsg("block %lld named by the digest is no longer in the chain as it was",
						(long long) d.height),
				 errhint("Run ehrledger.verify(digest => ...) to see what changed.")));
	return b;
}

static StoredBlock *
newest_block(void)
{
	StoredBlock *b = read_block(ledger_node_name(), "$2 = $2", 0, NULL);

	if (b == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_LEDGER_EMPTY),
				 errmsg("the ledger of node \"%s\" has no sealed block yet", ledger_node_name()),
				 errhint("Call ehrledger.seal() first.")));
	return b;
}

/*
 * The history tree of head's chain (blocks 1..head-1), for paths.  Each
 * block stores the frontier of the tree of blocks 1..itself, so every
 * subtree hash a path asks for comes from at most two stored blocks: a
 * perfect aligned [lo, hi) from block hi-1's frontier and block hi's own
 * hash, any other (it runs to the tree's end) from block n's frontier
 * (lc_frontier_suffix_root()).  A first pass over the path notes which
 * blocks it needs, one query reads them, a second pass computes: a proof
 * reads O(log n) blocks however long the chain.
 */
#define HISTORY_MAX_BLOCKS (2 * LC_MAX_PATH + 2)

typedef struct HistoryTree
{
	const StoredBlock *head;
	uint64		size;			/* head's height - 1 */
	bool		noting;			/* first pass: only note the heights */
	int			count;
	int64		heights[HISTORY_MAX_BLOCKS];	/* ascending once read */
	StoredBlock *blocks;
} HistoryTree;

static const StoredBlock *
history_block(HistoryTree *t, uint64 height)
{
	int			i;

	if (t->noting)
	{
		for (i = 0; i < t->count; i++)
			if (t->heights[i] == (int64) height)
				return NULL;
		if (t->count == HISTORY_MAX_BLOCKS)
			elog(ERROR, "a history path needs more than %d blocks", HISTORY_MAX_BLOCKS);
		t->heights[t->count++] = (int64) height;
		return NULL;
	}
	for (i = 0; i < t->count; i++)
		if (t->heights[i] == (int64) height)
			return &t->blocks[i];
	elog(ERROR, "block %llu of the history path was not read", (unsigned long long) height);
	return NULL;				/* keep the compiler quiet */
}

/* Reads the blocks the first pass noted, in one query. */
static void
history_read(HistoryTree *t)
{
	Oid			types[2] = {TEXTOID, INT8ARRAYOID};
	Datum		values[2];
	Datum	   *elems = palloc(sizeof(Datum) * Max(t->count, 1));
	uint64		i;
	int			ret;

	for (i = 0; i < (uint64) t->count; i++)
		elems[i] = Int64GetDatum(t->heights[i]);
	values[0] = CStringGetTextDatum(t->head->h.origin);
	values[1] = PointerGetDatum(construct_array(elems, t->count, INT8OID, 8, FLOAT8PASSBYVAL,
												TYPALIGN_DOUBLE));
	ret = SPI_execute_with_args("SELECT " BLOCK_COLUMNS " FROM ehrledger.block"
								" WHERE origin = $1 AND height = ANY ($2) ORDER BY height",
								2, types, values, NULL, true, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "SPI_execute failed: %s", SPI_result_code_string(ret));
	t->blocks = palloc(sizeof(StoredBlock) * Max(SPI_processed, 1));
	for (i = 0; i < SPI_processed; i++)
		if (!block_from_spi(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, &t->blocks[i]))
			break;
	if ((int) i != t->count)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("the chain of \"%s\" lacks sound blocks below height %lld",
						t->head->h.origin, (long long) t->head->h.height),
				 errhint("Run ehrledger.verify() to see what was changed.")));
	for (i = 0; i < SPI_processed; i++)
		t->heights[i] = t->blocks[i].h.height;
}

static bool
history_subtree(void *arg, uint64 lo, uint64 hi, uint8 *out)
{
	HistoryTree *t = arg;
	uint64		width = hi - lo;
	const StoredBlock *last;
	const StoredBlock *prev;

	if (width == 0 || hi > t->size)
		return false;
	if ((width & (width - 1)) != 0 || lo % width != 0)
	{
		if (hi != t->size)
			return false;
		last = history_block(t, hi);
		return t->noting || lc_frontier_suffix_root(last->frontier, hi, lo, NULL, out);
	}
	last = history_block(t, hi);
	prev = width == 1 ? NULL : history_block(t, hi - 1);
	if (t->noting)
		return true;
	if (prev == NULL)
	{
		memcpy(out, last->block_hash, LEDGER_HASH_LEN);
		return true;
	}
	return lc_frontier_suffix_root(prev->frontier, hi - 1, lo, last->block_hash, out);
}

/*
 * The history path of block `index` (0-based) in head's history tree, or,
 * with consistency, the consistency path from its first `index` blocks.
 */
static int
history_path(const StoredBlock *head, uint64 index, bool consistency, uint8 *path)
{
	HistoryTree t;
	int			pass;
	int			len = -1;

	memset(&t, 0, sizeof(t));
	t.head = head;
	t.size = (uint64) head->h.height - 1;
	for (pass = 0; pass < 2; pass++)
	{
		t.noting = pass == 0;
		len = consistency ?
			lc_consistency_path_by(history_subtree, &t, t.size, index, path) :
			lc_audit_path_by(history_subtree, &t, t.size, index, path);
		if (len < 0)
			elog(ERROR, "could not compute the history path");
		if (t.noting && t.count > 0)
			history_read(&t);
	}
	return len;
}

typedef struct ProofRow
{
	bool		found;
	int64		seq;
	StringInfoData encoding;
	Datum		json;
} ProofRow;

/* Called in the caller's context; json lives only until it returns. */
static void
keep_row(void *arg, int64 seq, StringInfo encoding, Datum json, TupleTableSlot *slot)
{
	ProofRow   *row = arg;

	(void) slot;
	row->found = true;
	row->seq = seq;
	appendBinaryStringInfo(&row->encoding, encoding->data, encoding->len);
	row->json = PointerGetDatum(PG_DETOAST_DATUM_COPY(json));
}

static Datum
finish_json(MemoryContext caller, StringInfo json)
{
	MemoryContext old = MemoryContextSwitchTo(caller);
	Datum		result = DirectFunctionCall1(jsonb_in, CStringGetDatum(json->data));

	MemoryContextSwitchTo(old);
	return result;
}

/*
 * Whether the leaf sealed for ledger_seq is this one: returns the block's
 * height, or 0 when seq is not sealed yet; sets *problem on a mismatch.
 */
int64
ledger_sealed_leaf(int64 seq, int32 table_id, const uint8 *leaf, char **problem)
{
	StoredBlock *b;
	bytea	   *leaves;
	const uint8 *packed;
	size_t		n;
	int64		at;
	int64		height;

	*problem = NULL;
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	b = read_block(NULL, "first_seq <= $2 AND last_seq >= $2", seq, &leaves);
	if (b == NULL)
	{
		SPI_finish();
		return 0;
	}
	height = b->h.height;
	packed = (const uint8 *) VARDATA_ANY(leaves);
	n = VARSIZE_ANY_EXHDR(leaves) / LEDGER_LEAF_SIZE;
	switch (lc_sealed_leaf(packed, n, seq, (uint32) table_id, leaf, &at))
	{
		case LC_LEAF_ABSENT:
		case LC_LEAF_OTHER_TABLE:
			*problem = "the row is not among the leaves of the block that sealed its range";
			break;
		case LC_LEAF_CHANGED:
			*problem = "the row no longer matches its sealed hash";
			break;
	}
	SPI_finish();
	return height;
}

/*
 * The part of a proof that places one sealed leaf in the chain at head
 * (docs/format.md §12, steps 2, 3 and 5): its block, its index and path in
 * that block's tree, and the block's path in head's history tree.  The
 * leaf must still be what the block sealed.  Returns the block.
 */
static StoredBlock *
append_leaf_inclusion(StringInfo json, const StoredBlock *head, int64 seq, int32 table_id,
					  const uint8 *leaf, const char *what)
{
	StoredBlock *block;
	bytea	   *leaves;
	const uint8 *packed;
	size_t		nleaves;
	int64		at;
	uint8		path[LC_MAX_PATH * LEDGER_HASH_LEN];
	int			path_len;
	int			history_len = 0;

	block = read_block(head->h.origin, "first_seq <= $2 AND last_seq >= $2", seq, &leaves);
	if (block == NULL || block->h.height > head->h.height)
		ereport(ERROR,
				(errcode(ERRCODE_LEDGER_NOT_SEALED),
				 errmsg("%s is not sealed in block %lld or earlier of \"%s\"",
						what, (long long) head->h.height, head->h.origin),
				 errhint(block == NULL ? "Call ehrledger.seal(), or pass a digest of the chain that sealed it." :
						 "Take a newer digest, or ask without one.")));

	/* It must still be the one sealed: find its leaf and compare. */
	packed = (const uint8 *) VARDATA_ANY(leaves);
	nleaves = VARSIZE_ANY_EXHDR(leaves) / LEDGER_LEAF_SIZE;
	if (lc_sealed_leaf(packed, nleaves, seq, (uint32) table_id, leaf, &at) != LC_LEAF_SAME)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("%s no longer matches what block %lld sealed",
						what, (long long) block->h.height),
				 errhint("Run ehrledger.verify() to see what was changed.")));
	path_len = lc_audit_path(packed + 12, nleaves, LEDGER_LEAF_SIZE, (size_t) at, path);
	if (path_len < 0)
		elog(ERROR, "could not compute the audit path");

	appendStringInfoString(json, ", \"block\": ");
	append_block(json, block);
	appendStringInfo(json, ", \"leaf_index\": " INT64_FORMAT ", \"leaf_path\": ", at);
	append_path(json, path, path_len);
	if (block->h.height < head->h.height)
	{
		history_len = history_path(head, block->h.height - 1, false, path);
	}
	appendStringInfoString(json, ", \"history_path\": ");
	append_path(json, path, history_len);
	return block;
}

/* The same for a row version or enrolment, whose encoding the proof carries. */
static void
append_inclusion(StringInfo json, const StoredBlock *head, int64 seq, int32 table_id,
				 StringInfo encoding, const char *what)
{
	uint8		leaf[LEDGER_HASH_LEN];

	ledger_leaf_hash(encoding->data, encoding->len, leaf);
	appendStringInfoString(json, ", \"encoding\": ");
	append_hex(json, (uint8 *) encoding->data, encoding->len);
	(void) append_leaf_inclusion(json, head, seq, table_id, leaf, what);
}

/* The first ledger_seq of the chain of origin: enrolments below it are another chain's. */
static int64
chain_first_seq(const char *origin)
{
	StoredBlock *first = read_block(origin, "height = $2", 1, NULL);

	return first != NULL ? first->h.first_seq : 1;
}

/*
 * The newest enrolment of table_id (docs/format.md §19) sealed in head's
 * chain, as the "enrolment" member of a proof: what binds the table's name
 * to its id, and gives the decoders of its columns.
 */
static void
append_enrolment(StringInfo json, const StoredBlock *head, int32 table_id, Oid relid)
{
	Oid			types[3] = {INT4OID, INT8OID, INT8OID};
	Datum		values[3];
	int64		seq;
	bool		isnull;
	ProofRow	row;

	if (!OidIsValid(get_relname_relid("enrolled_table", ledger_namespace())))
		return;
	values[0] = Int32GetDatum(table_id);
	values[1] = Int64GetDatum(chain_first_seq(head->h.origin));
	values[2] = Int64GetDatum(head->h.last_seq);
	if (SPI_execute_with_args("SELECT ledger_seq FROM ehrledger.enrolled_table"
							  " WHERE table_id OPERATOR(pg_catalog.=) $1"
							  " AND ledger_seq OPERATOR(pg_catalog.>=) $2 AND ledger_seq OPERATOR(pg_catalog.<=) $3"
							  " ORDER BY ledger_seq DESC LIMIT 1",
							  3, types, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "SPI_execute failed");
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_LEDGER_NOT_SEALED),
				 errmsg("table \"%s\" is not enrolled in block %lld or earlier of \"%s\"",
						get_rel_name(relid), (long long) head->h.height, head->h.origin),
				 errdetail("A proof binds the table's name and column types to its id through its enrolment, which the sealer writes in the first block it seals after the table is protected, renamed or given a column."),
				 errhint("Call ehrledger.seal() and take a new digest.")));
	seq = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));

	memset(&row, 0, sizeof(row));
	initStringInfo(&row.encoding);
	ledger_read_rows(ledger_relid("enrolled_table"), (int32) LC_ENROLMENT_TABLE_ID, seq, seq,
					 keep_row, &row);
	if (!row.found)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("the enrolment of table \"%s\" (ledger_seq " INT64_FORMAT ") is gone",
						get_rel_name(relid), seq),
				 errhint("Run ehrledger.verify() to see what was changed.")));
	appendStringInfo(json, ", \"enrolment\": {\"ledger_seq\": " INT64_FORMAT, seq);
	append_inclusion(json, head, seq, (int32) LC_ENROLMENT_TABLE_ID, &row.encoding,
					 psprintf("the enrolment of \"%s\" (ledger_seq " INT64_FORMAT ")",
							  get_rel_name(relid), seq));
	appendStringInfoChar(json, '}');
}

/*
 * The erasure record of an erased leaf (docs/format.md §12), with its own
 * inclusion in the chain at head: what a proof of an erased row carries in
 * place of the row.
 */
static void
append_erasure(StringInfo json, const StoredBlock *head, int64 erasure_seq, int64 seq,
			   Oid relid)
{
	ProofRow	rec;

	memset(&rec, 0, sizeof(rec));
	initStringInfo(&rec.encoding);
	ledger_read_rows(ledger_relid("erasure"), (int32) LC_ERASURE_TABLE_ID, erasure_seq,
					 erasure_seq, keep_row, &rec);
	if (!rec.found)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("the erasure record of row " INT64_FORMAT " of \"%s\" (ledger_seq " INT64_FORMAT ") is gone",
						seq, get_rel_name(relid), erasure_seq),
				 errhint("Run ehrledger.verify() to see what was changed.")));
	appendStringInfo(json, ", \"erasure\": {\"ledger_seq\": " INT64_FORMAT, erasure_seq);
	append_inclusion(json, head, erasure_seq, (int32) LC_ERASURE_TABLE_ID, &rec.encoding,
					 psprintf("the erasure of row " INT64_FORMAT " of \"%s\"", seq, get_rel_name(relid)));
	appendStringInfoChar(json, '}');
}

/* A row version as sealed: its encoding shown by the decoder verifiers use. */
static char *
row_json(Oid relid, StringInfo encoding)
{
	Relation	rel = relation_open(relid, AccessShareLock);
	char	   *json = row_shower_json(row_shower_create(rel), encoding->data, encoding->len);

	relation_close(rel, AccessShareLock);
	return json;
}

/*
 * ehrledger.proof(tbl, ledger_seq, digest): docs/format.md §12.  Of an
 * erased row: its leaf, still proven, and the erasure record with its own
 * proof, in place of the row.
 */
Datum
ehrledger_proof(PG_FUNCTION_ARGS)
{
	MemoryContext caller = CurrentMemoryContext;
	Oid			relid;
	int64		seq;
	int32		table_id = 0;
	LedgerTable *t;
	ProofRow	row;
	StoredBlock *head;
	StringInfoData json;
	Datum		result;
	int64		erasure_seq = 0;
	uint8		erased_leaf[LEDGER_HASH_LEN];
	const char *what;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("table and ledger_seq must not be NULL")));
	relid = PG_GETARG_OID(0);
	seq = PG_GETARG_INT64(1);
	/* of a partitioned table: the proof of the row in its partition */
	t = ledger_row_table_for_reader(relid, seq);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	memset(&row, 0, sizeof(row));
	initStringInfo(&row.encoding);
	if (t != NULL)
	{
		relid = t->relid;
		table_id = t->table_id;
		ledger_read_rows(relid, table_id, seq, seq, keep_row, &row);
	}
	if (t == NULL || (!row.found && (erasure_seq = ledger_erasure_of(table_id, seq, erased_leaf)) == 0))
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA),
				 errmsg("table \"%s\" has no row with ledger_seq " INT64_FORMAT,
						get_rel_name(relid), seq)));

	head = PG_ARGISNULL(2) ? newest_block() : block_of_digest(PG_GETARG_JSONB_P(2));

	initStringInfo(&json);
	appendStringInfoString(&json, "{\"format\": \"ehrledger-proof-1\", \"origin\": ");
	escape_json(&json, head->h.origin);
	appendStringInfoString(&json, ", \"table\": ");
	escape_json(&json, relation_qualified_name(relid));
	appendStringInfo(&json, ", \"table_id\": %d, \"ledger_seq\": " INT64_FORMAT, table_id, seq);
	what = psprintf("row " INT64_FORMAT " of \"%s\"", seq, get_rel_name(relid));
	if (row.found)
	{
		appendStringInfo(&json, ", \"row\": %s", row_json(relid, &row.encoding));
		append_inclusion(&json, head, seq, table_id, &row.encoding, what);
	}
	else
	{
		/* erased: its leaf, still proven, and the record that says so */
		appendStringInfoString(&json, ", \"leaf\": ");
		append_hex(&json, erased_leaf, LEDGER_HASH_LEN);
		(void) append_leaf_inclusion(&json, head, seq, table_id, erased_leaf, what);
		append_erasure(&json, head, erasure_seq, seq, relid);
	}
	appendStringInfoString(&json, ", \"head\": ");
	append_block(&json, head);
	append_enrolment(&json, head, table_id, relid);
	appendStringInfoChar(&json, '}');

	result = finish_json(caller, &json);
	SPI_finish();
	PG_RETURN_DATUM(result);
}

/* ehrledger.consistency_proof(old_digest, new_digest): docs/format.md §13. */
Datum
ehrledger_consistency_proof(PG_FUNCTION_ARGS)
{
	MemoryContext caller = CurrentMemoryContext;
	StoredBlock *old_block;
	StoredBlock *new_block;
	uint8		path[LC_MAX_PATH * LEDGER_HASH_LEN];
	int			history_len = 0;
	int			consistency_len = 0;
	StringInfoData json;
	Datum		result;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("the old digest must not be NULL")));
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	old_block = block_of_digest(PG_GETARG_JSONB_P(0));
	new_block = PG_ARGISNULL(1) ? newest_block() : block_of_digest(PG_GETARG_JSONB_P(1));
	if (strcmp(old_block->h.origin, new_block->h.origin) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the digests name two different chains (\"%s\" and \"%s\")",
						old_block->h.origin, new_block->h.origin)));
	if (old_block->h.height > new_block->h.height)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the old digest (height %lld) is newer than the new one (height %lld)",
						(long long) old_block->h.height, (long long) new_block->h.height),
				 errhint("Pass the older digest first.")));

	initStringInfo(&json);
	appendStringInfoString(&json, "{\"format\": \"ehrledger-consistency-1\", \"origin\": ");
	escape_json(&json, new_block->h.origin);
	appendStringInfoString(&json, ", \"old\": ");
	append_block(&json, old_block);
	appendStringInfoString(&json, ", \"new\": ");
	append_block(&json, new_block);
	if (old_block->h.height < new_block->h.height)
	{
		history_len = history_path(new_block, old_block->h.height - 1, false, path);
		appendStringInfoString(&json, ", \"history_path\": ");
		append_path(&json, path, history_len);
		consistency_len = history_path(new_block, old_block->h.height - 1, true, path);
		appendStringInfoString(&json, ", \"consistency_path\": ");
		append_path(&json, path, consistency_len);
	}
	else
		appendStringInfoString(&json, ", \"history_path\": [], \"consistency_path\": []");
	appendStringInfoChar(&json, '}');

	result = finish_json(caller, &json);
	SPI_finish();
	PG_RETURN_DATUM(result);
}

typedef struct ExportState
{
	ReturnSetInfo *rsinfo;
	StringInfoData line;
} ExportState;

static void
emit_line(ExportState *st)
{
	Datum		value = CStringGetTextDatum(st->line.data);
	bool		isnull = false;

	tuplestore_putvalues(st->rsinfo->setResult, st->rsinfo->setDesc, &value, &isnull);
	pfree(DatumGetPointer(value));
	resetStringInfo(&st->line);
}

/*
 * One ordered stream of leaves of a table for an export: its rows (kind 1),
 * or for a versioned table its earlier versions (kind 1) or the ends of
 * those versions (kind 2), read through the index on the number column.
 */
typedef struct ExportStream
{
	Relation	rel;
	Relation	irel;
	IndexScanDesc scan;
	TupleTableSlot *slot;
	RowEncoder *enc;
	RowShower  *shower;			/* shows a row as sealed */
	bool		end_events;
	AttrNumber	seq_att;
	AttrNumber	version_att;
	HistoryEndColumns hc;
	bool		has;
	int64		seq;
} ExportStream;

static void
stream_next(ExportStream *st)
{
	bool		isnull;

	st->has = index_getnext_slot(st->scan, ForwardScanDirection, st->slot);
	if (st->has)
	{
		slot_getallattrs(st->slot);
		st->seq = DatumGetInt64(slot_getattr(st->slot, st->seq_att, &isnull));
	}
}

static void
stream_open(ExportStream *st, Oid relid, bool end_events, int64 lo, int64 hi,
			RowShower *shower)
{
	ScanKeyData keys[2];
	Oid			indexoid;

	memset(st, 0, sizeof(ExportStream));
	st->end_events = end_events;
	st->rel = relation_open(relid, AccessShareLock);
	st->enc = row_encoder_create(RelationGetDescr(st->rel), CurrentMemoryContext);
	st->shower = shower;
	st->seq_att = attnameAttNum(st->rel, end_events ? LEDGER_ENDED_SEQ_COLUMN : LEDGER_SEQ_COLUMN, false);
	if (end_events)
	{
		st->version_att = attnameAttNum(st->rel, LEDGER_SEQ_COLUMN, false);
		if (!history_end_columns(st->rel, &st->hc))
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_COLUMN),
					 errmsg("history table \"%s\" lacks its ledger columns",
							RelationGetRelationName(st->rel))));
	}
	indexoid = ledger_seq_index(st->rel, st->seq_att);
	if (!OidIsValid(indexoid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("table \"%s\" lacks its unique index on %s",
						RelationGetRelationName(st->rel),
						end_events ? LEDGER_ENDED_SEQ_COLUMN : LEDGER_SEQ_COLUMN)));
	st->irel = index_open(indexoid, AccessShareLock);
	ScanKeyInit(&keys[0], 1, BTGreaterEqualStrategyNumber, F_INT8GE, Int64GetDatum(lo));
	ScanKeyInit(&keys[1], 1, BTLessEqualStrategyNumber, F_INT8LE, Int64GetDatum(hi));
	st->scan = index_beginscan(st->rel, st->irel, GetActiveSnapshot(), 2, 0);
	index_rescan(st->scan, keys, 2, NULL, 0);
	st->slot = table_slot_create(st->rel, NULL);
	stream_next(st);
}

static void
stream_close(ExportStream *st)
{
	ExecDropSingleTupleTableSlot(st->slot);
	index_endscan(st->scan);
	index_close(st->irel, AccessShareLock);
	relation_close(st->rel, AccessShareLock);
}

/* One export line for the stream's current leaf. */
static void
stream_emit(ExportStream *st, ExportState *ex, int32 table_id)
{
	StringInfoData enc;
	Datum	   *values = st->slot->tts_values;
	bool	   *isnull = st->slot->tts_isnull;

	initStringInfo(&enc);
	appendStringInfo(&ex->line, "{\"ledger_seq\": " INT64_FORMAT ", \"encoding\": ", st->seq);
	if (!st->end_events)
	{
		row_encode(st->enc, &enc, table_id, st->seq, values, isnull);
		append_hex(&ex->line, (uint8 *) enc.data, enc.len);
		appendStringInfo(&ex->line, ", \"row\": %s}",
						 row_shower_json(st->shower, enc.data, enc.len));
	}
	else
	{
		const char *op = TextDatumGetCString(values[st->hc.op - 1]);
		const char *by = NameStr(*DatumGetName(values[st->hc.end_by - 1]));
		TimestampTz at = DatumGetTimestampTz(values[st->hc.end_at - 1]);
		int64		version = DatumGetInt64(values[st->version_att - 1]);

		history_end_encode(&enc, table_id, st->seq, version, &st->hc, values, isnull);
		append_hex(&ex->line, (uint8 *) enc.data, enc.len);
		appendStringInfo(&ex->line, ", \"ended\": {\"version\": " INT64_FORMAT ", \"how\": ", version);
		escape_json(&ex->line, op);
		appendStringInfo(&ex->line, ", \"at\": \"%s\", \"by\": ", format_iso_utc(at));
		escape_json(&ex->line, by);
		appendStringInfoString(&ex->line, "}}");
	}
	pfree(enc.data);
	emit_line(ex);
}

/* The erased leaves of a table, by ledger_seq, each with the record that names it. */
typedef struct ErasedLeaves
{
	int64	   *seqs;
	int64	   *records;
	uint64		count;
	uint64		next;
} ErasedLeaves;

/* Reads them, numbered in [lo, hi], into memory of cxt; SPI is connected. */
static void
erased_leaves(ErasedLeaves *el, int32 table_id, int64 lo, int64 hi, MemoryContext cxt)
{
	Oid			types[3] = {INT4OID, INT8OID, INT8OID};
	Datum		values[3] = {Int32GetDatum(table_id), Int64GetDatum(lo), Int64GetDatum(hi)};
	uint64		i;

	memset(el, 0, sizeof(ErasedLeaves));
	if (!OidIsValid(get_relname_relid("erasure", ledger_namespace())))
		return;
	spi_as_owner("SELECT DISTINCT ON (erased_seq) erased_seq, ledger_seq FROM ehrledger.erasure"
				 " WHERE table_id OPERATOR(pg_catalog.=) $1"
				 " AND erased_seq OPERATOR(pg_catalog.>=) $2 AND erased_seq OPERATOR(pg_catalog.<=) $3"
				 " ORDER BY erased_seq, ledger_seq", 3, types, values, NULL, true, false);
	el->count = SPI_processed;
	el->seqs = MemoryContextAllocHuge(cxt, sizeof(int64) * Max(el->count, 1));
	el->records = MemoryContextAllocHuge(cxt, sizeof(int64) * Max(el->count, 1));
	for (i = 0; i < el->count; i++)
	{
		bool		isnull;

		el->seqs[i] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));
		el->records[i] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2, &isnull));
	}
}

/* One export line for an erased leaf: its erasure record, in place of the row. */
static void
emit_erased(ExportState *ex, Oid erasure_relid, int64 seq, int64 record)
{
	ProofRow	rec;

	memset(&rec, 0, sizeof(rec));
	initStringInfo(&rec.encoding);
	ledger_read_rows(erasure_relid, (int32) LC_ERASURE_TABLE_ID, record, record, keep_row, &rec);
	if (!rec.found)
		return;					/* ehrledger-verify then names the row missing */
	appendStringInfo(&ex->line, "{\"ledger_seq\": " INT64_FORMAT ", \"erased\": {\"ledger_seq\": "
					 INT64_FORMAT ", \"encoding\": ", seq, record);
	append_hex(&ex->line, (uint8 *) rec.encoding.data, rec.encoding.len);
	appendStringInfoString(&ex->line, "}}");
	emit_line(ex);
}

/*
 * Rows, earlier versions and ends of versions of a table in ledger_seq
 * order, and its erased leaves among them.
 */
static void
export_leaves(ExportState *ex, int32 table_id, Oid relid, Oid history_relid,
			  int64 lo, int64 hi, ErasedLeaves *erased)
{
	ExportStream streams[3];
	int			n = 0;
	int			i;
	Oid			erasure_relid = get_relname_relid("erasure", ledger_namespace());
	MemoryContext rowcxt = AllocSetContextCreate(CurrentMemoryContext, "ehrledger export",
												 ALLOCSET_DEFAULT_SIZES);
	Relation	rel = relation_open(relid, AccessShareLock);

	/* earlier versions are shown with the table's own column types, as enrolled */
	RowShower  *shower = row_shower_create(rel);

	relation_close(rel, AccessShareLock);
	stream_open(&streams[n++], relid, false, lo, hi, shower);
	if (OidIsValid(history_relid))
	{
		stream_open(&streams[n++], history_relid, false, lo, hi, shower);
		stream_open(&streams[n++], history_relid, true, lo, hi, shower);
	}
	for (;;)
	{
		ExportStream *next = NULL;
		MemoryContext old;

		bool		erased_next;

		for (i = 0; i < n; i++)
			if (streams[i].has && (next == NULL || streams[i].seq < next->seq))
				next = &streams[i];
		/* a row still there is exported as it is, whatever a record claims */
		while (erased->next < erased->count && next != NULL &&
			   erased->seqs[erased->next] == next->seq)
			erased->next++;
		erased_next = erased->next < erased->count &&
			(next == NULL || erased->seqs[erased->next] < next->seq);
		if (next == NULL && !erased_next)
			break;
		CHECK_FOR_INTERRUPTS();
		old = MemoryContextSwitchTo(rowcxt);
		if (erased_next)
			emit_erased(ex, erasure_relid, erased->seqs[erased->next], erased->records[erased->next]);
		else
			stream_emit(next, ex, table_id);
		MemoryContextSwitchTo(old);
		MemoryContextReset(rowcxt);
		if (erased_next)
			erased->next++;
		else
			stream_next(next);
	}
	for (i = 0; i < n; i++)
		stream_close(&streams[i]);
	MemoryContextDelete(rowcxt);
}

/*
 * One table's part of an export: its enrolments in this chain, then its
 * sealed rows, earlier versions and ends of versions, and its erased
 * leaves, in ledger_seq order.
 */
static void
export_table(ExportState *st, LedgerTable *t, int64 sealed_from, int64 sealed_upto,
			 MemoryContext caller)
{
	ErasedLeaves erased;

	if (sealed_upto == 0)
		return;
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	/* the table's enrolments in this chain (docs/format.md §19) */
	if (OidIsValid(get_relname_relid("enrolled_table", ledger_namespace())))
	{
		Oid			etypes[3] = {INT4OID, INT8OID, INT8OID};
		Datum		evalues[3];
		uint64		i;
		SPITupleTable *found;

		evalues[0] = Int32GetDatum(t->table_id);
		evalues[1] = Int64GetDatum(sealed_from);
		evalues[2] = Int64GetDatum(sealed_upto);
		if (SPI_execute_with_args("SELECT ledger_seq FROM ehrledger.enrolled_table"
								  " WHERE table_id OPERATOR(pg_catalog.=) $1"
								  " AND ledger_seq OPERATOR(pg_catalog.>=) $2 AND ledger_seq OPERATOR(pg_catalog.<=) $3"
								  " ORDER BY ledger_seq", 3, etypes, evalues, NULL, true, 0) != SPI_OK_SELECT)
			elog(ERROR, "SPI_execute failed");
		found = SPI_tuptable;
		for (i = 0; i < SPI_processed; i++)
		{
			bool		isnull;
			int64		seq = DatumGetInt64(SPI_getbinval(found->vals[i], found->tupdesc, 1, &isnull));
			ProofRow	row;

			memset(&row, 0, sizeof(row));
			initStringInfo(&row.encoding);
			ledger_read_rows(ledger_relid("enrolled_table"), (int32) LC_ENROLMENT_TABLE_ID,
							 seq, seq, keep_row, &row);
			if (!row.found)
				continue;		/* ehrledger-verify then reports what is missing */
			appendStringInfo(&st->line, "{\"enrolment\": {\"ledger_seq\": " INT64_FORMAT
							 ", \"encoding\": ", seq);
			append_hex(&st->line, (uint8 *) row.encoding.data, row.encoding.len);
			appendStringInfoString(&st->line, "}}");
			emit_line(st);
		}
	}
	erased_leaves(&erased, t->table_id, sealed_from, sealed_upto, caller);
	SPI_finish();

	/* the rows this chain sealed (after a takeover, not the earlier chain's) */
	export_leaves(st, t->table_id, t->relid, t->history_relid, sealed_from, sealed_upto, &erased);
}

/*
 * ehrledger.export(tbl): docs/format.md §14.  Every block of this node's
 * chain with all its leaves (hashes only), then every sealed row of the
 * table with its canonical bytes, and every erased one with the record of
 * its erasure.  Of a partitioned table: the blocks, then each partition's
 * part after a line that names it.
 */
Datum
ehrledger_export(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);
	LedgerTable *given = ledger_table_for_reader(relid);
	List	   *parts = NIL;
	ExportState st;
	Oid			types[1] = {TEXTOID};
	Datum		values[1];
	Portal		portal;
	int64		sealed_upto = 0;
	int64		sealed_from = 0;
	SPIPlanPtr	plan;
	ListCell   *lc;
	MemoryContext caller = CurrentMemoryContext;

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	st.rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	initStringInfo(&st.line);

	appendStringInfoString(&st.line, "{\"format\": \"ehrledger-export-1\", \"origin\": ");
	escape_json(&st.line, ledger_node_name());
	appendStringInfoString(&st.line, ", \"table\": ");
	escape_json(&st.line, relation_qualified_name(relid));
	if (!given->partitioned)
		appendStringInfo(&st.line, ", \"table_id\": %d}", given->table_id);
	else
	{
		/* the partitions in the ledger, retired ones not (verify() skips them too) */
		appendStringInfoString(&st.line, ", \"partitions\": [");
		foreach(lc, ledger_partitions(given, GetActiveSnapshot()))
		{
			LedgerTable *t = lfirst(lc);

			if (t->retired || get_rel_name(t->relid) == NULL)
				continue;
			appendStringInfoString(&st.line, parts == NIL ? "{\"table\": " : ", {\"table\": ");
			escape_json(&st.line, relation_qualified_name(t->relid));
			appendStringInfo(&st.line, ", \"table_id\": %d}", t->table_id);
			parts = lappend(parts, t);
		}
		appendStringInfoString(&st.line, "]}");
	}
	emit_line(&st);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	plan = SPI_prepare("SELECT " BLOCK_COLUMNS ", leaves FROM ehrledger.block"
					   " WHERE origin = $1 ORDER BY height", 1, types);
	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	values[0] = CStringGetTextDatum(ledger_node_name());
	portal = SPI_cursor_open(NULL, plan, values, NULL, true);
	for (;;)
	{
		uint64		i;

		SPI_cursor_fetch(portal, true, 64);
		if (SPI_processed == 0)
			break;
		for (i = 0; i < SPI_processed; i++)
		{
			StoredBlock b;
			bool		isnull;
			Datum		d;
			bytea	   *leaves;

			CHECK_FOR_INTERRUPTS();
			if (!block_from_spi(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, &b))
				ereport(ERROR,
						(errcode(ERRCODE_DATA_CORRUPTED),
						 errmsg("block %lld has a malformed %s", (long long) b.h.height, b.malformed),
						 errhint("Run ehrledger.verify() to see what was changed.")));
			d = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc,
							  BLOCK_NCOLUMNS + 1, &isnull);
			appendStringInfoString(&st.line, "{\"block\": ");
			append_block(&st.line, &b);
			appendStringInfoString(&st.line, ", \"leaves\": ");
			if (isnull)
				appendStringInfoString(&st.line, "null");
			else
			{
				leaves = DatumGetByteaPP(d);
				append_hex(&st.line, (uint8 *) VARDATA_ANY(leaves), VARSIZE_ANY_EXHDR(leaves));
			}
			appendStringInfoChar(&st.line, '}');
			emit_line(&st);
			sealed_upto = Max(sealed_upto, b.h.last_seq);
			if (b.h.height == 1)
				sealed_from = b.h.first_seq;
		}
		SPI_freetuptable(SPI_tuptable);
	}
	SPI_cursor_close(portal);
	SPI_finish();

	if (!given->partitioned)
		export_table(&st, given, sealed_from, sealed_upto, caller);
	foreach(lc, parts)
	{
		LedgerTable *t = lfirst(lc);

		appendStringInfoString(&st.line, "{\"partition\": {\"table\": ");
		escape_json(&st.line, relation_qualified_name(t->relid));
		appendStringInfo(&st.line, ", \"table_id\": %d}}", t->table_id);
		emit_line(&st);
		export_table(&st, t, sealed_from, sealed_upto, caller);
	}
	return (Datum) 0;
}
