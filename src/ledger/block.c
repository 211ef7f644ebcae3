/*
 * block.c
 *		Where row hashes become leaves, leaves a Merkle root, a root a signed
 *		block header, and a block a digest.
 *
 * Every hashing rule is src/core's (ledger_core.c), which the offline
 * verifier shares; this file converts between the server's types and
 * core's and raises an error where core reports one.  Leaves are
 * SHA-256(0x00 || data), inner nodes SHA-256(0x01 || left || right), as in
 * RFC 6962, so a leaf can never pose as a node.  The block header and the
 * digest message start with tags of their own, so a block hash can never be
 * mistaken for a leaf, an inner node or a digest.  Integers are big-endian;
 * times are microseconds since the Unix epoch, UTC.
 *
 * seal.c calls these to make blocks; verify.c, proofs.c, digest.c and
 * src/network call them to recompute and check blocks they read.
 */
#include "postgres.h"

#include "executor/spi.h"
#include "utils/builtins.h"
#include "datatype/timestamp.h"
#include "utils/datetime.h"
#include "utils/lsyscache.h"

#include "core/ledger_core.h"
#include "ledger/ledger.h"

/* Microseconds between the Unix epoch and PostgreSQL's (2000-01-01). */
#define UNIX_TO_PG_EPOCH_US \
	((int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * USECS_PER_DAY)

/* Leaf hash of one encoded row (or end event). */
void
ledger_leaf_hash(const void *encoding, size_t len, uint8 *out)
{
	if (!lc_leaf_hash(encoding, len, out))
		core_failed(lc_error);
}

/* Merkle root over count items of stride bytes, each starting with a hash. */
void
ledger_merkle_root(const uint8 *items, size_t count, size_t stride, uint8 *out)
{
	if (!lc_merkle_root(items, count, stride, out))
		core_failed(lc_error);
}

/* Adds a block hash to a chain's history tree (its frontier). */
void
history_append(uint8 *frontier, int *count, uint64 size_before, const uint8 *block_hash)
{
	if (!lc_history_append(frontier, count, size_before, block_hash))
		core_failed(lc_error);
}

/* Root of the history tree a frontier stands for. */
void
history_root(const uint8 *frontier, int count, uint8 *out)
{
	if (!lc_history_root(frontier, count, out))
		core_failed(lc_error);
}

int64
timestamptz_to_unix_micros(TimestampTz ts)
{
	return ts + UNIX_TO_PG_EPOCH_US;
}

TimestampTz
unix_micros_to_timestamptz(int64 us)
{
	return us - UNIX_TO_PG_EPOCH_US;
}

/* A header in core's terms (times as microseconds since the Unix epoch). */
void
block_to_core(const BlockHeader *h, LcBlockHeader *c)
{
	c->origin = h->origin;
	c->height = h->height;
	memcpy(c->prev_hash, h->prev_hash, LEDGER_HASH_LEN);
	memcpy(c->history_root, h->history_root, LEDGER_HASH_LEN);
	memcpy(c->root, h->root, LEDGER_HASH_LEN);
	memcpy(c->leaves_hash, h->leaves_hash, LEDGER_HASH_LEN);
	c->first_seq = h->first_seq;
	c->last_seq = h->last_seq;
	c->row_count = h->row_count;
	c->sealed_at_us = timestamptz_to_unix_micros(h->sealed_at);
	memcpy(c->public_key, h->public_key, LEDGER_PUBKEY_LEN);
}

/* The block hash: SHA-256 over the tagged header, which the node signs. */
void
block_header_hash(const BlockHeader *h, uint8 *out)
{
	LcBlockHeader c;

	block_to_core(h, &c);
	if (!lc_block_hash(&c, out))
		core_failed(lc_error);
}

/*
 * Why a stored block fails its own check (docs/format.md §8: its fields
 * hash to its block_hash, its signature verifies with its key), or NULL.
 */
const char *
stored_block_problem(const StoredBlock *b)
{
	LcBlockHeader c;
	bool		failed;
	const char *problem;

	block_to_core(&b->h, &c);
	problem = lc_block_problem(&c, b->block_hash, b->signature, &failed);
	if (failed)
		core_failed(lc_error);
	return problem;
}

/* The bytes a block hash is the SHA-256 of (docs/format.md §18). */
void
block_header_bytes(const BlockHeader *h, StringInfo buf)
{
	LcBlockHeader c;
	LcBuf		b;

	block_to_core(h, &c);
	lc_buf_init(&b);
	lc_block_header_bytes(&c, &b);
	if (b.failed)
		core_failed(LC_ERR_NOMEM);
	appendBinaryStringInfo(buf, (char *) b.data, b.len);
	lc_buf_free(&b);
}

/* The bytes a digest's signature covers. */
void
digest_message(StringInfo buf, const char *origin, int64 height,
			   const uint8 *block_hash, int64 last_seq, TimestampTz sealed_at)
{
	LcBuf		msg;

	lc_buf_init(&msg);
	lc_digest_message(&msg, origin, height, block_hash, last_seq,
					  timestamptz_to_unix_micros(sealed_at));
	if (msg.failed)
		core_failed(LC_ERR_NOMEM);
	appendBinaryStringInfo(buf, (char *) msg.data, msg.len);
	lc_buf_free(&msg);
}

/* ISO 8601 in UTC with microseconds, independent of DateStyle and TimeZone. */
char *
format_iso_utc(TimestampTz ts)
{
	char	   *out = palloc(LC_ISO_LEN + 1);

	lc_format_iso_utc(timestamptz_to_unix_micros(ts), out);
	return out;
}

/* Copies a bytea column of exactly len bytes; false if NULL or of another size. */
bool
spi_fixed(HeapTuple tup, TupleDesc desc, int col, uint8 *out, size_t len)
{
	bool		isnull;
	Datum		d = SPI_getbinval(tup, desc, col, &isnull);
	bytea	   *b;

	if (isnull)
		return false;
	b = DatumGetByteaPP(d);
	if (VARSIZE_ANY_EXHDR(b) != len)
		return false;
	memcpy(out, VARDATA_ANY(b), len);
	return true;
}

static bool
spi_int8(HeapTuple tup, TupleDesc desc, int col, int64 *out)
{
	bool		isnull;
	Datum		d = SPI_getbinval(tup, desc, col, &isnull);

	if (!isnull)
		*out = DatumGetInt64(d);
	return !isnull;
}

/*
 * Reads the BLOCK_COLUMNS of one row.  Returns false, naming the first bad
 * field in b->malformed, when a field is NULL or has the wrong size.
 */
bool
block_from_spi(HeapTuple tup, TupleDesc desc, StoredBlock *b)
{
	bool		isnull;
	Datum		d;
	bytea	   *frontier;
	int64		height = 0;

	memset(b, 0, sizeof(StoredBlock));
	d = SPI_getbinval(tup, desc, 1, &isnull);
	b->h.origin = isnull ? pstrdup("") : TextDatumGetCString(d);
#define CHECK(ok, field) do { if (!(ok)) { b->malformed = (field); return false; } } while (0)
	CHECK(!isnull, "origin");
	CHECK(spi_int8(tup, desc, 2, &height), "height");
	b->h.height = height;
	CHECK(spi_fixed(tup, desc, 3, b->h.prev_hash, LEDGER_HASH_LEN), "prev_hash");
	CHECK(spi_fixed(tup, desc, 4, b->h.history_root, LEDGER_HASH_LEN), "history_root");
	CHECK(spi_fixed(tup, desc, 5, b->h.root, LEDGER_HASH_LEN), "root");
	CHECK(spi_fixed(tup, desc, 6, b->block_hash, LEDGER_HASH_LEN), "block_hash");
	CHECK(spi_int8(tup, desc, 7, &b->h.first_seq), "first_seq");
	CHECK(spi_int8(tup, desc, 8, &b->h.last_seq), "last_seq");
	CHECK(spi_int8(tup, desc, 9, &b->h.row_count), "row_count");
	d = SPI_getbinval(tup, desc, 10, &isnull);
	CHECK(!isnull, "sealed_at");
	b->h.sealed_at = DatumGetTimestampTz(d);
	CHECK(spi_fixed(tup, desc, 11, b->h.public_key, LEDGER_PUBKEY_LEN), "public_key");
	CHECK(spi_fixed(tup, desc, 12, b->signature, LEDGER_SIG_LEN), "signature");
	d = SPI_getbinval(tup, desc, 13, &isnull);
	CHECK(!isnull, "history_frontier");
	frontier = DatumGetByteaPP(d);
	b->frontier_count = lc_frontier_count((uint64) height);
	CHECK(height > 0 &&
		  VARSIZE_ANY_EXHDR(frontier) == (size_t) b->frontier_count * LEDGER_HASH_LEN,
		  "history_frontier");
	memcpy(b->frontier, VARDATA_ANY(frontier), VARSIZE_ANY_EXHDR(frontier));
	CHECK(spi_fixed(tup, desc, 14, b->h.leaves_hash, LEDGER_HASH_LEN), "leaves_hash");
#undef CHECK
	return true;
}
