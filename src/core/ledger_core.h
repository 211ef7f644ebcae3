/*
 * ledger_core.h
 *		The ledger's hashing, signing and proof rules in plain C.
 *
 * Shared by the server extension and the offline verifier ehrledger-verify,
 * so both follow one implementation of docs/format.md.  Depends on libc,
 * OpenSSL (SHA-256) and libsodium (Ed25519) only: no PostgreSQL headers.
 */
#ifndef LEDGER_CORE_H
#define LEDGER_CORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LC_HASH_LEN		32
#define LC_PUBKEY_LEN	32
#define LC_SIG_LEN		64
#define LC_MAX_FRONTIER	64
/* An audit or consistency path of a tree of fewer than 2^64 leaves. */
#define LC_MAX_PATH		128

/*
 * Results of core functions that return int: 0 (LC_OK) or one of these.
 * Core never aborts: a failed allocation is reported to its caller (an
 * ERROR with SQLSTATE 53200 in the server, exit status 2 in the CLI).
 */
#define LC_OK				0
#define LC_ERR_NOMEM		(-1)
#define LC_ERR_CRYPTO		(-2)	/* OpenSSL or libsodium failed */
#define LC_ERR_MALFORMED	(-3)

/*
 * Why the last core function that returned false failed: LC_ERR_NOMEM or
 * LC_ERR_CRYPTO.
 */
extern int	lc_error;

/*
 * A growable byte buffer.  An allocation that fails sets failed, and every
 * later put is ignored: callers check failed once, when done.
 */
typedef struct LcBuf
{
	uint8_t    *data;
	size_t		len;
	size_t		cap;
	bool		failed;
} LcBuf;

extern void lc_buf_init(LcBuf *b);
extern void lc_buf_free(LcBuf *b);
extern bool lc_put(LcBuf *b, const void *data, size_t len);
extern bool lc_put_str(LcBuf *b, const char *s);
extern bool lc_putf(LcBuf *b, const char *fmt,...) __attribute__((format(printf, 2, 3)));
extern bool lc_put_u8(LcBuf *b, uint8_t v);
extern bool lc_put_u16(LcBuf *b, uint16_t v);
extern bool lc_put_u32(LcBuf *b, uint32_t v);
extern bool lc_put_u64(LcBuf *b, uint64_t v);
/* The buffer's bytes followed by a NUL (not counted in len); NULL on failure. */
extern const char *lc_buf_cstr(LcBuf *b);

/*
 * Byte order: every integer the ledger hashes or signs is big-endian, read
 * and written by these, in the server, the sealer and the CLI alike.
 */
static inline void
lc_store_u16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t) (v >> 8);
	p[1] = (uint8_t) v;
}

static inline void
lc_store_u32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t) (v >> 24);
	p[1] = (uint8_t) (v >> 16);
	p[2] = (uint8_t) (v >> 8);
	p[3] = (uint8_t) v;
}

static inline void
lc_store_u64(uint8_t *p, uint64_t v)
{
	lc_store_u32(p, (uint32_t) (v >> 32));
	lc_store_u32(p + 4, (uint32_t) v);
}

static inline uint16_t
lc_get_u16(const uint8_t *p)
{
	return (uint16_t) ((p[0] << 8) | p[1]);
}

static inline uint32_t
lc_get_u32(const uint8_t *p)
{
	return ((uint32_t) p[0] << 24) | ((uint32_t) p[1] << 16) | ((uint32_t) p[2] << 8) | p[3];
}

static inline uint64_t
lc_get_u64(const uint8_t *p)
{
	return ((uint64_t) lc_get_u32(p) << 32) | lc_get_u32(p + 4);
}

/* SHA-256; returns false only if OpenSSL fails. */
extern bool lc_sha256(const void *data, size_t len, uint8_t *out);
extern bool lc_sha256_parts(const void *a, size_t alen, const void *b, size_t blen,
							const void *c, size_t clen, uint8_t *out);
extern bool lc_leaf_hash(const void *encoding, size_t len, uint8_t *out);
extern bool lc_node_hash(const uint8_t *left, const uint8_t *right, uint8_t *out);

/* RFC 6962 Merkle tree hash of count leaf hashes found every stride bytes. */
extern bool lc_merkle_root(const uint8_t *leaves, size_t count, size_t stride,
						   uint8_t *out);

/*
 * RFC 6962 audit path (PATH(m, D[n])) for leaf index of count leaves;
 * returns the number of hashes written to path (LC_MAX_PATH at most), or
 * -1 on bad arguments.
 */
extern int	lc_audit_path(const uint8_t *leaves, size_t count, size_t stride,
						  size_t index, uint8_t *path);

/*
 * The same paths for a tree whose leaves are not at hand: fn(arg, lo, hi,
 * out) gives MTH(D[lo:hi]).  Every subtree asked for is perfect and
 * aligned, or runs to the end of the tree (lc_frontier_suffix_root()).
 */
typedef bool (*LcSubtreeFn) (void *arg, uint64_t lo, uint64_t hi, uint8_t *out);
extern int	lc_audit_path_by(LcSubtreeFn fn, void *arg, uint64_t count, uint64_t index,
							 uint8_t *path);
extern bool lc_verify_inclusion(const uint8_t *leaf, uint64_t index, uint64_t size,
								const uint8_t *path, int path_len,
								const uint8_t *root);

/*
 * RFC 6962 consistency proof (PROOF(m, D[n])) between the first old_size
 * and all count leaves; returns its length or -1.
 */
extern int	lc_consistency_path(const uint8_t *leaves, size_t count, size_t stride,
								size_t old_size, uint8_t *path);
extern int	lc_consistency_path_by(LcSubtreeFn fn, void *arg, uint64_t count,
								   uint64_t old_size, uint8_t *path);
extern bool lc_verify_consistency(uint64_t old_size, uint64_t new_size,
								  const uint8_t *old_root, const uint8_t *new_root,
								  const uint8_t *path, int path_len);

/* History trees of block hashes, kept as frontiers (docs/format.md §8). */
extern int	lc_frontier_count(uint64_t size);
extern bool lc_history_append(uint8_t *frontier, int *count, uint64_t size_before,
							  const uint8_t *block_hash);
extern bool lc_history_root(const uint8_t *frontier, int count, uint8_t *out);
extern bool lc_frontier_suffix_root(const uint8_t *frontier, uint64_t size, uint64_t lo,
									const uint8_t *extra, uint8_t *out);

/* A block header (docs/format.md §8). */
typedef struct LcBlockHeader
{
	const char *origin;
	int64_t		height;
	uint8_t		prev_hash[LC_HASH_LEN];
	uint8_t		history_root[LC_HASH_LEN];
	uint8_t		root[LC_HASH_LEN];
	uint8_t		leaves_hash[LC_HASH_LEN];	/* SHA-256(0x02 || packed leaves) */
	int64_t		first_seq;
	int64_t		last_seq;
	int64_t		row_count;
	int64_t		sealed_at_us;	/* microseconds since the Unix epoch, UTC */
	uint8_t		public_key[LC_PUBKEY_LEN];
} LcBlockHeader;

#define LC_BLOCK_TAG "ehrledger-block-1"

/* The bytes a block hash is the SHA-256 of (docs/format.md §18). */
extern void lc_block_header_bytes(const LcBlockHeader *h, LcBuf *b);
extern bool lc_block_hash(const LcBlockHeader *h, uint8_t *out);

/* What header bytes commit to; false if they are not a block header. */
extern bool lc_header_fields(const uint8_t *hdr, size_t len, const char **origin,
							 size_t *origin_len, int64_t *height,
							 const uint8_t **public_key);

/* The bytes a hospital signs to acknowledge a block (docs/format.md §18). */
extern void lc_ack_message(LcBuf *msg, const char *origin, int64_t height,
						   const uint8_t *block_hash);
extern void lc_erasure_message(LcBuf *msg, const char *origin, int64_t seq,
							   uint32_t table_id, const uint8_t *leaf);

/* The hash of a block's packed leaves (44 bytes each: seq, table id, hash). */
extern bool lc_leaves_hash(const uint8_t *packed, size_t len, uint8_t *out);

/* The bytes a digest's signature covers (docs/format.md §9). */
extern void lc_digest_message(LcBuf *msg, const char *origin, int64_t height,
							  const uint8_t *block_hash, int64_t last_seq,
							  int64_t sealed_at_us);

/* Ed25519 (libsodium must be initialised by the caller). */
extern bool lc_signature_ok(const uint8_t *msg, size_t len, const uint8_t *sig,
							const uint8_t *public_key);

/* --------------------------------------------------------------- rules */

/*
 * Each rule of the ledger, once: the server (verify.c, network.c, digest.c,
 * proofs.c, seal.c) and the offline checks (check.c) all call these.
 */

/* A packed leaf: u64 ledger_seq, u32 table_id, 32-byte leaf hash. */
#define LC_LEAF_SIZE 44

/* Index of the leaf numbered seq among count packed leaves, or -1. */
extern int64_t lc_find_leaf(const uint8_t *packed, size_t count, int64_t seq);

/*
 * Whether the leaf sealed for seq among count packed leaves is this leaf of
 * this table: LC_LEAF_SAME (its index in *index), LC_LEAF_ABSENT (no leaf
 * numbered seq), LC_LEAF_OTHER_TABLE or LC_LEAF_CHANGED.
 */
#define LC_LEAF_SAME		0
#define LC_LEAF_ABSENT		1
#define LC_LEAF_OTHER_TABLE	2
#define LC_LEAF_CHANGED		3
extern int	lc_sealed_leaf(const uint8_t *packed, size_t count, int64_t seq, uint32_t table_id,
						   const uint8_t *leaf, int64_t *index);

/*
 * The same over an array of count structs stride bytes apart, sorted by the
 * int64_t ledger_seq each begins with: the index of seq, or -1.
 */
extern int64_t lc_find_seq(const void *items, size_t count, size_t stride, int64_t seq);

/*
 * The same, trying *next first (rows are mostly read in ledger_seq order,
 * where a binary search would cost a cache miss a step); *next becomes the
 * index after the one found.  The answer is always lc_find_seq()'s.
 */
extern int64_t lc_find_seq_near(const void *items, size_t count, size_t stride, int64_t seq,
								size_t *next);

/*
 * A block in itself (docs/format.md §8): why its fields do not hash to
 * block_hash or its signature does not verify with its public_key, or NULL.
 * *failed is set when hashing itself failed (lc_error says why).
 */
extern const char *lc_block_problem(const LcBlockHeader *h, const uint8_t *block_hash,
									const uint8_t *signature, bool *failed);

/* What is wrong with a block's packed leaves against its header: LC_LEAVES_* bits. */
#define LC_LEAVES_COUNT		0x01	/* not row_count whole leaves */
#define LC_LEAVES_ORDER		0x02	/* not increasing within [first_seq, last_seq] */
#define LC_LEAVES_ROOT		0x04	/* their hashes do not give root */
#define LC_LEAVES_HASH		0x08	/* with their labels, they do not give leaves_hash */
#define LC_LEAVES_FAILED	0x80	/* hashing failed: lc_error says why */
extern int	lc_leaves_problems(const LcBlockHeader *h, const uint8_t *packed, size_t len,
							   int64_t *bad_seq);

/*
 * A chain walked block by block (docs/format.md §8): the previous block's
 * hash and last_seq, and the history tree of the blocks so far.
 */
typedef struct LcChain
{
	int64_t		height;			/* of the last block taken; 0 before the first */
	uint8_t		prev_hash[LC_HASH_LEN];
	int64_t		prev_last_seq;
	uint8_t		frontier[LC_MAX_FRONTIER * LC_HASH_LEN];
	int			frontier_count;
} LcChain;

extern void lc_chain_init(LcChain *c);

/* How a block fails to extend a chain: LC_LINK_* bits. */
#define LC_LINK_PREV_HASH	0x01	/* prev_hash is not the previous block's hash */
#define LC_LINK_RANGE		0x02	/* first_seq does not follow the previous last_seq */
#define LC_LINK_HISTORY		0x04	/* history_root is not the tree of the blocks before */
#define LC_LINK_EMPTY		0x08	/* last_seq < first_seq */
#define LC_LINK_FAILED		0x80	/* hashing failed */
extern int	lc_chain_link_problems(const LcChain *c, const LcBlockHeader *h);

/* Takes a block (with its hash) into the chain; false if hashing failed. */
extern bool lc_chain_append(LcChain *c, const LcBlockHeader *h, const uint8_t *block_hash);

/*
 * A digest (docs/format.md §9): whether its signature verifies with its
 * key; and which of its fields differ from a block's, or NULL.
 */
extern bool lc_digest_signature_ok(const char *origin, int64_t height, const uint8_t *block_hash,
								   int64_t last_seq, int64_t sealed_at_us,
								   const uint8_t *public_key, const uint8_t *signature,
								   bool *failed);
extern const char *lc_digest_block_mismatch(int64_t d_height, const uint8_t *d_block_hash,
											int64_t d_last_seq, int64_t d_sealed_at_us,
											const LcBlockHeader *h, const uint8_t *block_hash);

/*
 * The certificate rule (docs/format.md §18): the header hashes to
 * block_hash and names origin and height, the origin's key in it signed
 * block_hash, and at least quorum acknowledgments by distinct ackers verify
 * over ack_message(origin, height, block_hash).  With members, an ack
 * counts only if its acker and key are a member's, the header's key must
 * be the origin's pinned key, and the quorum may not be below min_quorum.
 */
typedef struct LcAck
{
	const char *acker;
	size_t		acker_len;
	uint8_t		public_key[LC_PUBKEY_LEN];
	uint8_t		signature[LC_SIG_LEN];
} LcAck;

typedef struct LcKeyPin
{
	const char *name;
	size_t		name_len;
	const uint8_t *key;
} LcKeyPin;

/*
 * An acknowledgment (docs/format.md §18): the acker's Ed25519 signature of
 * ack_message(origin, height, block_hash).  *failed: memory ran out.
 */
extern bool lc_ack_ok(const char *origin, size_t origin_len, int64_t height,
					  const uint8_t *block_hash, const uint8_t *public_key,
					  const uint8_t *signature, bool *failed);

/*
 * A header its origin signed (docs/format.md §18): it hashes to
 * block_hash, names origin and height, carries expected_key (unless NULL),
 * and its key signed block_hash.  NULL, or what is wrong (in problem).
 */
extern const char *lc_origin_header_problem(const char *origin, size_t origin_len,
											int64_t height, const uint8_t *block_hash,
											const uint8_t *header, size_t header_len,
											const uint8_t *origin_signature,
											const uint8_t *expected_key, bool *failed,
											char *problem, size_t plen);

/*
 * LC_OK (valid), 1 (not valid: problem says why) or an LC_ERR_*; *valid
 * counts the acknowledgments that verify.
 */
extern int	lc_certificate_rule(const char *origin, size_t origin_len, int64_t height,
								const uint8_t *block_hash, const uint8_t *header,
								size_t header_len, const uint8_t *origin_signature,
								int64_t quorum, const LcAck *acks, size_t nacks,
								const LcKeyPin *members, size_t nmembers, int64_t min_quorum,
								int64_t *valid, char *problem, size_t plen);

/* 2f+1 of n = 3f+1 members. */
extern int64_t lc_quorum_of(int64_t members);

/* Hex: lower-case out; in accepts either case.  decode returns false on bad input. */
extern void lc_hex_encode(const uint8_t *data, size_t len, char *out);
extern int	lc_hex_digit(char c);	/* 0-15, or -1 */
extern bool lc_hex_decode(const char *hex, size_t hexlen, uint8_t *out);

/* ISO 8601 UTC with microseconds, exactly "YYYY-MM-DDTHH:MM:SS.ffffffZ". */
#define LC_ISO_LEN 27
extern void lc_format_iso_utc(int64_t unix_us, char *out);
extern bool lc_parse_iso_utc(const char *s, int64_t *unix_us);

/* Proleptic Gregorian dates as days since 1970-01-01. */
extern int64_t lc_days_from_civil(int64_t y, int m, int d);
extern void lc_civil_from_days(int64_t days, int64_t *y, int *m, int *d);

#endif							/* LEDGER_CORE_H */
