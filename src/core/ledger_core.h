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

/* A growable byte buffer; out of memory is reported through lc_oom. */
typedef struct LcBuf
{
	uint8_t    *data;
	size_t		len;
	size_t		cap;
} LcBuf;

/* Called when an allocation fails; must not return. */
extern void (*lc_oom) (void);

extern void lc_buf_init(LcBuf *b);
extern void lc_buf_free(LcBuf *b);
extern void lc_put(LcBuf *b, const void *data, size_t len);
extern void lc_put_u8(LcBuf *b, uint8_t v);
extern void lc_put_u16(LcBuf *b, uint16_t v);
extern void lc_put_u32(LcBuf *b, uint32_t v);
extern void lc_put_u64(LcBuf *b, uint64_t v);
extern uint32_t lc_get_u32(const uint8_t *p);
extern uint64_t lc_get_u64(const uint8_t *p);

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
extern bool lc_verify_inclusion(const uint8_t *leaf, uint64_t index, uint64_t size,
								const uint8_t *path, int path_len,
								const uint8_t *root);

/*
 * RFC 6962 consistency proof (PROOF(m, D[n])) between the first old_size
 * and all count leaves; returns its length or -1.
 */
extern int	lc_consistency_path(const uint8_t *leaves, size_t count, size_t stride,
								size_t old_size, uint8_t *path);
extern bool lc_verify_consistency(uint64_t old_size, uint64_t new_size,
								  const uint8_t *old_root, const uint8_t *new_root,
								  const uint8_t *path, int path_len);

/* History trees of block hashes, kept as frontiers (docs/format.md §8). */
extern int	lc_frontier_count(uint64_t size);
extern bool lc_history_append(uint8_t *frontier, int *count, uint64_t size_before,
							  const uint8_t *block_hash);
extern bool lc_history_root(const uint8_t *frontier, int count, uint8_t *out);

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

/* The hash of a block's packed leaves (44 bytes each: seq, table id, hash). */
extern bool lc_leaves_hash(const uint8_t *packed, size_t len, uint8_t *out);

/* The bytes a digest's signature covers (docs/format.md §9). */
extern void lc_digest_message(LcBuf *msg, const char *origin, int64_t height,
							  const uint8_t *block_hash, int64_t last_seq,
							  int64_t sealed_at_us);

/* Ed25519 (libsodium must be initialised by the caller). */
extern bool lc_signature_ok(const uint8_t *msg, size_t len, const uint8_t *sig,
							const uint8_t *public_key);

/* Hex: lower-case out; in accepts either case.  decode returns false on bad input. */
extern void lc_hex_encode(const uint8_t *data, size_t len, char *out);
extern int	lc_hex_digit(char c);	/* 0-15, or -1 */
extern bool lc_hex_decode(const char *hex, size_t hexlen, uint8_t *out);

/* ISO 8601 UTC with microseconds, exactly "YYYY-MM-DDTHH:MM:SS.ffffffZ". */
#define LC_ISO_LEN 27
extern void lc_format_iso_utc(int64_t unix_us, char *out);
extern bool lc_parse_iso_utc(const char *s, int64_t *unix_us);

#endif							/* LEDGER_CORE_H */
