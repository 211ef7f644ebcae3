/*
 * block.c
 *		Where a Merkle root becomes a block header, and a block a digest.
 *
 * Both messages start with their own tag, so a block hash can never be
 * mistaken for a leaf (0x00), an inner node (0x01) or a digest.  Integers
 * are big-endian; times are microseconds since the Unix epoch, UTC.
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "datatype/timestamp.h"
#include "utils/datetime.h"
#include "utils/lsyscache.h"

#include "core/ledger_core.h"
#include "ehrledger.h"

/* Microseconds between the Unix epoch and PostgreSQL's (2000-01-01). */
#define UNIX_TO_PG_EPOCH_US \
	((int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * USECS_PER_DAY)

/* A bytea holding a copy of len bytes (huge allocations allowed). */
bytea *
ledger_bytea(const void *data, size_t len)
{
	bytea	   *b = palloc_extended(VARHDRSZ + len, MCXT_ALLOC_HUGE);

	SET_VARSIZE(b, VARHDRSZ + len);
	memcpy(VARDATA(b), data, len);
	return b;
}

void
put_u16(StringInfo buf, uint16 v)
{
	unsigned char b[2] = {v >> 8, v & 0xff};

	appendBinaryStringInfo(buf, (char *) b, 2);
}

void
put_u32(StringInfo buf, uint32 v)
{
	unsigned char b[4] = {v >> 24, (v >> 16) & 0xff, (v >> 8) & 0xff, v & 0xff};

	appendBinaryStringInfo(buf, (char *) b, 4);
}

void
put_u64(StringInfo buf, uint64 v)
{
	put_u32(buf, (uint32) (v >> 32));
	put_u32(buf, (uint32) v);
}

uint32
get_u32(const uint8 *p)
{
	return ((uint32) p[0] << 24) | ((uint32) p[1] << 16) | ((uint32) p[2] << 8) | p[3];
}

uint64
get_u64(const uint8 *p)
{
	return ((uint64) get_u32(p) << 32) | get_u32(p + 4);
}

char *
hex_encode_bytes(const uint8 *data, size_t len)
{
	static const char digits[] = "0123456789abcdef";
	char	   *out = palloc(len * 2 + 1);
	size_t		i;

	for (i = 0; i < len; i++)
	{
		out[2 * i] = digits[data[i] >> 4];
		out[2 * i + 1] = digits[data[i] & 0x0f];
	}
	out[len * 2] = '\0';
	return out;
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

static void
to_core_header(const BlockHeader *h, LcBlockHeader *c)
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

	to_core_header(h, &c);
	if (!lc_block_hash(&c, out))
		elog(ERROR, "SHA-256 computation failed in OpenSSL");
}

/* The bytes a block hash is the SHA-256 of (docs/format.md §18). */
void
block_header_bytes(const BlockHeader *h, StringInfo buf)
{
	LcBlockHeader c;
	LcBuf		b;

	to_core_header(h, &c);
	lc_buf_init(&b);
	lc_block_header_bytes(&c, &b);
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

/* Parses exactly the form format_iso_utc() writes. */
bool
parse_iso_utc(const char *s, TimestampTz *result)
{
	int64		us;

	if (!lc_parse_iso_utc(s, &us))
		return false;
	*result = unix_micros_to_timestamptz(us);
	return true;
}

Oid
ledger_namespace(void)
{
	Oid			nsp = get_namespace_oid("ehrledger", true);

	if (!OidIsValid(nsp))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("extension \"ehrledger\" is not installed in this database"),
				 errhint("Run CREATE EXTENSION ehrledger.")));
	return nsp;
}

Oid
ledger_relid(const char *relname)
{
	Oid			relid = get_relname_relid(relname, ledger_namespace());

	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation \"ehrledger.%s\" does not exist", relname),
				 errhint("The ehrledger extension may be damaged; reinstall it.")));
	return relid;
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
	b->frontier_count = history_frontier_count((uint64) height);
	CHECK(height > 0 &&
		  VARSIZE_ANY_EXHDR(frontier) == (size_t) b->frontier_count * LEDGER_HASH_LEN,
		  "history_frontier");
	memcpy(b->frontier, VARDATA_ANY(frontier), VARSIZE_ANY_EXHDR(frontier));
	CHECK(spi_fixed(tup, desc, 14, b->h.leaves_hash, LEDGER_HASH_LEN), "leaves_hash");
#undef CHECK
	return true;
}

/* Index of the leaf numbered seq among count packed leaves, or -1. */
int64
find_packed_leaf(const uint8 *packed, size_t count, int64 seq)
{
	size_t		lo = 0;
	size_t		hi = count;

	while (lo < hi)
	{
		size_t		mid = lo + (hi - lo) / 2;

		if ((int64) get_u64(packed + mid * LEDGER_LEAF_SIZE) < seq)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo < count && (int64) get_u64(packed + lo * LEDGER_LEAF_SIZE) == seq)
		return (int64) lo;
	return -1;
}
