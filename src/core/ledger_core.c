/*
 * ledger_core.c
 *		The ledger's hashing, signing and proof rules in plain C.
 *
 * Trees follow RFC 6962 / RFC 9162: leaves hashed with prefix 0x00 (by the
 * caller), inner nodes SHA-256(0x01 || left || right), the left subtree of
 * n leaves holding the largest power of two smaller than n.
 *
 * Next: the server (src/ledger, src/network) and check.c call these rules;
 * nothing here keeps state between calls.
 */
#include "ledger_core.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/*
 * SHA256_Init() and its siblings are deprecated in OpenSSL 3 but still
 * there, and hash a node or a row in about 100 ns less than EVP's
 * provider dispatch (as much as hashing a Merkle node itself); EVP is the
 * fallback where they are gone.
 */
#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <sodium.h>

int			lc_error = LC_OK;

void
lc_buf_init(LcBuf *b)
{
	b->data = NULL;
	b->len = 0;
	b->cap = 0;
	b->failed = false;
}

void
lc_buf_free(LcBuf *b)
{
	free(b->data);
	lc_buf_init(b);
}

/* Room for len more bytes and a NUL; false (and failed) if there is none. */
static bool
buf_reserve(LcBuf *b, size_t len)
{
	size_t		cap;
	uint8_t    *grown;

	if (b->failed)
		return false;
	if (len < b->cap - b->len)
		return true;
	if (len > SIZE_MAX / 4 - b->len)
		goto fail;
	cap = b->cap ? b->cap : 256;
	while (cap <= b->len + len)
		cap *= 2;
	grown = realloc(b->data, cap);
	if (grown == NULL)
		goto fail;
	b->data = grown;
	b->cap = cap;
	return true;
fail:
	b->failed = true;
	lc_error = LC_ERR_NOMEM;
	return false;
}

bool
lc_put(LcBuf *b, const void *data, size_t len)
{
	if (!buf_reserve(b, len))
		return false;
	if (len > 0)
		memcpy(b->data + b->len, data, len);
	b->len += len;
	return true;
}

bool
lc_put_str(LcBuf *b, const char *s)
{
	return lc_put(b, s, strlen(s));
}

bool
lc_putf(LcBuf *b, const char *fmt,...)
{
	va_list		ap;
	int			n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0 || !buf_reserve(b, (size_t) n))
		return false;
	va_start(ap, fmt);
	vsnprintf((char *) b->data + b->len, (size_t) n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t) n;
	return true;
}

const char *
lc_buf_cstr(LcBuf *b)
{
	if (!buf_reserve(b, 0))
		return NULL;
	b->data[b->len] = '\0';
	return (const char *) b->data;
}

bool
lc_put_u8(LcBuf *b, uint8_t v)
{
	return lc_put(b, &v, 1);
}

bool
lc_put_u16(LcBuf *b, uint16_t v)
{
	uint8_t		x[2];

	lc_store_u16(x, v);
	return lc_put(b, x, 2);
}

bool
lc_put_u32(LcBuf *b, uint32_t v)
{
	uint8_t		x[4];

	lc_store_u32(x, v);
	return lc_put(b, x, 4);
}

bool
lc_put_u64(LcBuf *b, uint64_t v)
{
	uint8_t		x[8];

	lc_store_u64(x, v);
	return lc_put(b, x, 8);
}

#ifndef OPENSSL_NO_DEPRECATED_3_0
bool
lc_sha256_parts(const void *a, size_t alen, const void *b, size_t blen,
				const void *c, size_t clen, uint8_t *out)
{
	SHA256_CTX	ctx;

	if (SHA256_Init(&ctx) == 1 &&
		(alen == 0 || SHA256_Update(&ctx, a, alen) == 1) &&
		(blen == 0 || SHA256_Update(&ctx, b, blen) == 1) &&
		(clen == 0 || SHA256_Update(&ctx, c, clen) == 1) &&
		SHA256_Final(out, &ctx) == 1)
		return true;
	lc_error = LC_ERR_CRYPTO;
	return false;
}
#else
/* One digest context, fetched once: OpenSSL's implicit lookup is slow. */
static EVP_MD *sha256_md = NULL;
static EVP_MD_CTX *sha256_ctx = NULL;

bool
lc_sha256_parts(const void *a, size_t alen, const void *b, size_t blen,
				const void *c, size_t clen, uint8_t *out)
{
	unsigned int outlen;

	if (sha256_ctx == NULL)
	{
		sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
		sha256_ctx = EVP_MD_CTX_new();
		if (sha256_md == NULL || sha256_ctx == NULL)
		{
			lc_error = LC_ERR_CRYPTO;
			return false;
		}
	}
	if (EVP_DigestInit_ex(sha256_ctx, sha256_md, NULL) == 1 &&
		(alen == 0 || EVP_DigestUpdate(sha256_ctx, a, alen) == 1) &&
		(blen == 0 || EVP_DigestUpdate(sha256_ctx, b, blen) == 1) &&
		(clen == 0 || EVP_DigestUpdate(sha256_ctx, c, clen) == 1) &&
		EVP_DigestFinal_ex(sha256_ctx, out, &outlen) == 1)
		return true;
	lc_error = LC_ERR_CRYPTO;
	return false;
}
#endif

bool
lc_sha256(const void *data, size_t len, uint8_t *out)
{
	return lc_sha256_parts(data, len, NULL, 0, NULL, 0, out);
}

bool
lc_leaf_hash(const void *encoding, size_t len, uint8_t *out)
{
	static const uint8_t prefix = 0x00;

	return lc_sha256_parts(&prefix, 1, encoding, len, NULL, 0, out);
}

bool
lc_node_hash(const uint8_t *left, const uint8_t *right, uint8_t *out)
{
	static const uint8_t prefix = 0x01;

	return lc_sha256_parts(&prefix, 1, left, LC_HASH_LEN, right, LC_HASH_LEN, out);
}

/* Largest power of two smaller than n (n >= 2). */
static size_t
split_point(size_t n)
{
	size_t		k = 1;

	while (k * 2 < n)
		k *= 2;
	return k;
}

/*
 * RFC 6962's tree in one pass over the leaves, with a stack of the perfect
 * subtrees completed so far (at most one per bit of count): leaf i closes
 * one subtree per trailing one bit of i; what is left folds from the right.
 * No copy of the leaves, whose number may run to millions.
 */
bool
lc_merkle_root(const uint8_t *leaves, size_t count, size_t stride, uint8_t *out)
{
	uint8_t		stack[64][LC_HASH_LEN];
	int			depth = 0;
	size_t		i;
	size_t		closes;

	if (count == 0)
		return lc_sha256(NULL, 0, out);
	for (i = 0; i < count; i++)
	{
		memcpy(stack[depth++], leaves + i * stride, LC_HASH_LEN);
		for (closes = i; closes & 1; closes >>= 1, depth--)
			if (!lc_node_hash(stack[depth - 2], stack[depth - 1], stack[depth - 2]))
				return false;
	}
	for (; depth > 1; depth--)
		if (!lc_node_hash(stack[depth - 2], stack[depth - 1], stack[depth - 2]))
			return false;
	memcpy(out, stack[0], LC_HASH_LEN);
	return true;
}

/* Subtree hashes of a plain array of leaves: MTH(leaves[lo:hi]). */
typedef struct ArrayLeaves
{
	const uint8_t *leaves;
	size_t		stride;
} ArrayLeaves;

static bool
array_subtree(void *arg, uint64_t lo, uint64_t hi, uint8_t *out)
{
	const ArrayLeaves *a = arg;

	return lc_merkle_root(a->leaves + lo * a->stride, hi - lo, a->stride, out);
}

/*
 * PATH(index, D[lo:hi]) of RFC 6962, asking fn for the subtree hashes it
 * needs.  Every subtree asked for is either perfect and aligned (its size
 * a power of two dividing lo) or runs to the end of the whole tree.
 */
static int
audit_path(LcSubtreeFn fn, void *arg, uint64_t lo, uint64_t hi, uint64_t index,
		   uint8_t *path, int len)
{
	uint64_t	k;

	if (hi - lo <= 1)
		return len;
	k = split_point(hi - lo);
	if (index < lo + k)
	{
		len = audit_path(fn, arg, lo, lo + k, index, path, len);
		if (len < 0 || !fn(arg, lo + k, hi, path + len * LC_HASH_LEN))
			return -1;
	}
	else
	{
		len = audit_path(fn, arg, lo + k, hi, index, path, len);
		if (len < 0 || !fn(arg, lo, lo + k, path + len * LC_HASH_LEN))
			return -1;
	}
	return len + 1;
}

int
lc_audit_path_by(LcSubtreeFn fn, void *arg, uint64_t count, uint64_t index, uint8_t *path)
{
	if (index >= count)
		return -1;
	return audit_path(fn, arg, 0, count, index, path, 0);
}

int
lc_audit_path(const uint8_t *leaves, size_t count, size_t stride, size_t index,
			  uint8_t *path)
{
	ArrayLeaves a = {leaves, stride};

	return lc_audit_path_by(array_subtree, &a, count, index, path);
}

/* RFC 9162, section 2.1.3.2. */
bool
lc_verify_inclusion(const uint8_t *leaf, uint64_t index, uint64_t size,
					const uint8_t *path, int path_len, const uint8_t *root)
{
	uint64_t	fn = index;
	uint64_t	sn;
	uint8_t		r[LC_HASH_LEN];
	int			i;

	if (index >= size || path_len < 0 || path_len > LC_MAX_PATH)
		return false;
	sn = size - 1;
	memcpy(r, leaf, LC_HASH_LEN);
	for (i = 0; i < path_len; i++)
	{
		const uint8_t *p = path + i * LC_HASH_LEN;

		if (sn == 0)
			return false;
		if ((fn & 1) || fn == sn)
		{
			if (!lc_node_hash(p, r, r))
				return false;
			if (!(fn & 1))
				while (fn != 0 && !(fn & 1))
				{
					fn >>= 1;
					sn >>= 1;
				}
		}
		else if (!lc_node_hash(r, p, r))
			return false;
		fn >>= 1;
		sn >>= 1;
	}
	return sn == 0 && memcmp(r, root, LC_HASH_LEN) == 0;
}

/* SUBPROOF(m, D[lo:hi], whole) of RFC 6962, asking fn as audit_path() does. */
static int
subproof(LcSubtreeFn fn, void *arg, uint64_t lo, uint64_t hi, uint64_t m, bool whole,
		 uint8_t *path, int len)
{
	uint64_t	k;

	if (m == hi - lo)
	{
		if (whole)
			return len;
		return fn(arg, lo, hi, path + len * LC_HASH_LEN) ? len + 1 : -1;
	}
	k = split_point(hi - lo);
	if (m <= k)
	{
		len = subproof(fn, arg, lo, lo + k, m, whole, path, len);
		if (len < 0 || !fn(arg, lo + k, hi, path + len * LC_HASH_LEN))
			return -1;
	}
	else
	{
		len = subproof(fn, arg, lo + k, hi, m - k, false, path, len);
		if (len < 0 || !fn(arg, lo, lo + k, path + len * LC_HASH_LEN))
			return -1;
	}
	return len + 1;
}

int
lc_consistency_path_by(LcSubtreeFn fn, void *arg, uint64_t count, uint64_t old_size,
					   uint8_t *path)
{
	if (old_size > count)
		return -1;
	if (old_size == 0 || old_size == count)
		return 0;
	return subproof(fn, arg, 0, count, old_size, true, path, 0);
}

int
lc_consistency_path(const uint8_t *leaves, size_t count, size_t stride,
					size_t old_size, uint8_t *path)
{
	ArrayLeaves a = {leaves, stride};

	return lc_consistency_path_by(array_subtree, &a, count, old_size, path);
}

/* RFC 9162, section 2.1.4.2; an empty old tree is consistent with any tree. */
bool
lc_verify_consistency(uint64_t old_size, uint64_t new_size,
					  const uint8_t *old_root, const uint8_t *new_root,
					  const uint8_t *path, int path_len)
{
	uint8_t		buf[(LC_MAX_PATH + 1) * LC_HASH_LEN];
	const uint8_t *p = path;
	int			n = path_len;
	uint64_t	fn;
	uint64_t	sn;
	uint8_t		fr[LC_HASH_LEN];
	uint8_t		sr[LC_HASH_LEN];
	int			i;

	if (old_size > new_size || path_len < 0 || path_len > LC_MAX_PATH)
		return false;
	if (old_size == 0)
		return path_len == 0;
	if (old_size == new_size)
		return path_len == 0 && memcmp(old_root, new_root, LC_HASH_LEN) == 0;
	if (path_len == 0)
		return false;
	if ((old_size & (old_size - 1)) == 0)
	{
		memcpy(buf, old_root, LC_HASH_LEN);
		memcpy(buf + LC_HASH_LEN, path, (size_t) path_len * LC_HASH_LEN);
		p = buf;
		n = path_len + 1;
	}
	fn = old_size - 1;
	sn = new_size - 1;
	while (fn & 1)
	{
		fn >>= 1;
		sn >>= 1;
	}
	memcpy(fr, p, LC_HASH_LEN);
	memcpy(sr, p, LC_HASH_LEN);
	for (i = 1; i < n; i++)
	{
		const uint8_t *c = p + i * LC_HASH_LEN;

		if (sn == 0)
			return false;
		if ((fn & 1) || fn == sn)
		{
			if (!lc_node_hash(c, fr, fr) || !lc_node_hash(c, sr, sr))
				return false;
			if (!(fn & 1))
				while (fn != 0 && !(fn & 1))
				{
					fn >>= 1;
					sn >>= 1;
				}
		}
		else if (!lc_node_hash(sr, c, sr))
			return false;
		fn >>= 1;
		sn >>= 1;
	}
	return sn == 0 && memcmp(fr, old_root, LC_HASH_LEN) == 0 &&
		memcmp(sr, new_root, LC_HASH_LEN) == 0;
}

int
lc_frontier_count(uint64_t size)
{
	int			count = 0;

	for (; size != 0; size &= size - 1)
		count++;
	return count;
}

/* Like a binary increment: each trailing 1 bit of the old size merges two subtrees. */
bool
lc_history_append(uint8_t *frontier, int *count, uint64_t size_before,
				  const uint8_t *block_hash)
{
	uint64_t	carry;

	memcpy(frontier + *count * LC_HASH_LEN, block_hash, LC_HASH_LEN);
	(*count)++;
	for (carry = size_before; carry & 1; carry >>= 1)
	{
		uint8_t    *left = frontier + (*count - 2) * LC_HASH_LEN;

		if (!lc_node_hash(left, left + LC_HASH_LEN, left))
			return false;
		(*count)--;
	}
	return true;
}

/* The tree hash of the whole history: the subtrees folded from the right. */
bool
lc_history_root(const uint8_t *frontier, int count, uint8_t *out)
{
	uint8_t		acc[LC_HASH_LEN];
	int			i;

	if (count == 0)
		return lc_sha256(NULL, 0, out);
	memcpy(acc, frontier + (count - 1) * LC_HASH_LEN, LC_HASH_LEN);
	for (i = count - 2; i >= 0; i--)
		if (!lc_node_hash(frontier + i * LC_HASH_LEN, acc, acc))
			return false;
	memcpy(out, acc, LC_HASH_LEN);
	return true;
}

/*
 * MTH of blocks [lo, hi) of a chain's history tree (0-based), from what
 * blocks store, for proofs that read O(log n) blocks:
 *  - [lo, hi) running to the end of a tree of size hi: the frontier of size
 *    hi holds it as its entries from position lo on (lo must be one of the
 *    frontier's boundaries);
 *  - a perfect aligned [lo, lo + 2^j): the frontier of size hi - 1 holds
 *    the subtrees of sizes 2^(j-1) ... 1 from position lo on, and the
 *    leaf hi - 1 completes it (extra).
 * frontier is the frontier of size `size`; extra, when not NULL, one more
 * leaf after it.  False if lo is not one of the frontier's boundaries.
 */
bool
lc_frontier_suffix_root(const uint8_t *frontier, uint64_t size, uint64_t lo,
						const uint8_t *extra, uint8_t *out)
{
	uint8_t		entries[(LC_MAX_PATH + 1) * LC_HASH_LEN];
	uint64_t	pos = 0;
	int			n = 0;
	int			i = 0;
	int			bit;

	for (bit = 63; bit >= 0; bit--)
	{
		uint64_t	width = (uint64_t) 1 << bit;

		if (!(size & width))
			continue;
		if (pos >= lo)
		{
			if (n == 0 && pos != lo)
				return false;
			memcpy(entries + n * LC_HASH_LEN, frontier + i * LC_HASH_LEN, LC_HASH_LEN);
			n++;
		}
		pos += width;
		i++;
	}
	if (n == 0 && pos != lo)
		return false;
	if (extra != NULL)
		memcpy(entries + n++ * LC_HASH_LEN, extra, LC_HASH_LEN);
	if (n == 0)
		return false;
	return lc_history_root(entries, n, out);
}

static void
put_origin(LcBuf *b, const char *origin)
{
	size_t		len = strlen(origin);

	lc_put_u16(b, (uint16_t) len);
	lc_put(b, origin, len);
}

void
lc_block_header_bytes(const LcBlockHeader *h, LcBuf *b)
{
	lc_put(b, LC_BLOCK_TAG, sizeof(LC_BLOCK_TAG));	/* with its NUL */
	put_origin(b, h->origin);
	lc_put_u64(b, (uint64_t) h->height);
	lc_put(b, h->prev_hash, LC_HASH_LEN);
	lc_put(b, h->history_root, LC_HASH_LEN);
	lc_put(b, h->root, LC_HASH_LEN);
	lc_put(b, h->leaves_hash, LC_HASH_LEN);
	lc_put_u64(b, (uint64_t) h->first_seq);
	lc_put_u64(b, (uint64_t) h->last_seq);
	lc_put_u64(b, (uint64_t) h->row_count);
	lc_put_u64(b, (uint64_t) h->sealed_at_us);
	lc_put(b, h->public_key, LC_PUBKEY_LEN);
}

bool
lc_block_hash(const LcBlockHeader *h, uint8_t *out)
{
	LcBuf		b;
	bool		ok;

	lc_buf_init(&b);
	lc_block_header_bytes(h, &b);
	ok = !b.failed && lc_sha256(b.data, b.len, out);
	lc_buf_free(&b);
	return ok;
}

bool
lc_header_fields(const uint8_t *hdr, size_t len, const char **origin, size_t *origin_len,
				 int64_t *height, const uint8_t **public_key)
{
	size_t		olen;

	if (len < sizeof(LC_BLOCK_TAG) + 2 || memcmp(hdr, LC_BLOCK_TAG, sizeof(LC_BLOCK_TAG)) != 0)
		return false;
	olen = ((size_t) hdr[sizeof(LC_BLOCK_TAG)] << 8) | hdr[sizeof(LC_BLOCK_TAG) + 1];
	if (len != sizeof(LC_BLOCK_TAG) + 2 + olen + 8 + 4 * LC_HASH_LEN + 4 * 8 + LC_PUBKEY_LEN)
		return false;
	*origin = (const char *) hdr + sizeof(LC_BLOCK_TAG) + 2;
	*origin_len = olen;
	*height = (int64_t) lc_get_u64(hdr + sizeof(LC_BLOCK_TAG) + 2 + olen);
	*public_key = hdr + len - LC_PUBKEY_LEN;
	return true;
}

void
lc_ack_message(LcBuf *msg, const char *origin, int64_t height, const uint8_t *block_hash)
{
	static const char tag[] = "ehrledger-ack-1";

	lc_put(msg, tag, sizeof(tag));	/* with its NUL */
	put_origin(msg, origin);
	lc_put_u64(msg, (uint64_t) height);
	lc_put(msg, block_hash, LC_HASH_LEN);
}

/*
 * The message an origin signs when it erases a row it shared (docs/format.md
 * §18): the hospitals holding a copy remove it on the strength of this.
 */
void
lc_erasure_message(LcBuf *msg, const char *origin, int64_t seq, uint32_t table_id,
				   const uint8_t *leaf)
{
	static const char tag[] = "ehrledger-erasure-1";

	lc_put(msg, tag, sizeof(tag));	/* with its NUL */
	put_origin(msg, origin);
	lc_put_u64(msg, (uint64_t) seq);
	lc_put_u32(msg, table_id);
	lc_put(msg, leaf, LC_HASH_LEN);
}

/*
 * The labels beside each leaf hash (its ledger_seq and table id) are not in
 * the Merkle tree; this hash, in the header, makes the block commit to them
 * too, so a leaf cannot be relabelled to hide a removed row.
 */
bool
lc_leaves_hash(const uint8_t *packed, size_t len, uint8_t *out)
{
	static const uint8_t prefix = 0x02;

	return lc_sha256_parts(&prefix, 1, packed, len, NULL, 0, out);
}

void
lc_digest_message(LcBuf *msg, const char *origin, int64_t height,
				  const uint8_t *block_hash, int64_t last_seq, int64_t sealed_at_us)
{
	static const char tag[] = "ehrledger-digest-1";

	lc_put(msg, tag, sizeof(tag));	/* with its NUL */
	put_origin(msg, origin);
	lc_put_u64(msg, (uint64_t) height);
	lc_put(msg, block_hash, LC_HASH_LEN);
	lc_put_u64(msg, (uint64_t) last_seq);
	lc_put_u64(msg, (uint64_t) sealed_at_us);
}

bool
lc_signature_ok(const uint8_t *msg, size_t len, const uint8_t *sig,
				const uint8_t *public_key)
{
	return crypto_sign_verify_detached(sig, msg, len, public_key) == 0;
}

/* ---------------------------------------------------------------- rules */

int64_t
lc_find_leaf(const uint8_t *packed, size_t count, int64_t seq)
{
	size_t		lo = 0;
	size_t		hi = count;

	while (lo < hi)
	{
		size_t		mid = lo + (hi - lo) / 2;

		if ((int64_t) lc_get_u64(packed + mid * LC_LEAF_SIZE) < seq)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo < count && (int64_t) lc_get_u64(packed + lo * LC_LEAF_SIZE) == seq)
		return (int64_t) lo;
	return -1;
}

int
lc_sealed_leaf(const uint8_t *packed, size_t count, int64_t seq, uint32_t table_id,
			   const uint8_t *leaf, int64_t *index)
{
	int64_t		at = lc_find_leaf(packed, count, seq);
	const uint8_t *p;

	*index = at;
	if (at < 0)
		return LC_LEAF_ABSENT;
	p = packed + at * LC_LEAF_SIZE;
	if (lc_get_u32(p + 8) != table_id)
		return LC_LEAF_OTHER_TABLE;
	if (memcmp(p + 12, leaf, LC_HASH_LEN) != 0)
		return LC_LEAF_CHANGED;
	return LC_LEAF_SAME;
}

int64_t
lc_find_seq(const void *items, size_t count, size_t stride, int64_t seq)
{
	const uint8_t *base = items;
	size_t		lo = 0;
	size_t		hi = count;
	int64_t		at;

	while (lo < hi)
	{
		size_t		mid = lo + (hi - lo) / 2;

		memcpy(&at, base + mid * stride, sizeof(at));
		if (at < seq)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo >= count)
		return -1;
	memcpy(&at, base + lo * stride, sizeof(at));
	return at == seq ? (int64_t) lo : -1;
}

int64_t
lc_find_seq_near(const void *items, size_t count, size_t stride, int64_t seq, size_t *next)
{
	const uint8_t *base = items;
	size_t		h = *next;
	int64_t		at;
	int64_t		found;

	if (h < count)
	{
		memcpy(&at, base + h * stride, sizeof(at));
		if (at == seq)
		{
			int64_t		before = INT64_MIN;

			if (h > 0)
				memcpy(&before, base + (h - 1) * stride, sizeof(before));
			if (before < seq)
			{
				*next = h + 1;
				return (int64_t) h;
			}
		}
	}
	found = lc_find_seq(items, count, stride, seq);
	if (found >= 0)
		*next = (size_t) found + 1;
	return found;
}

const char *
lc_block_problem(const LcBlockHeader *h, const uint8_t *block_hash, const uint8_t *signature,
				 bool *failed)
{
	uint8_t		computed[LC_HASH_LEN];

	*failed = false;
	if (!lc_block_hash(h, computed))
	{
		*failed = true;
		return "its hash could not be computed";
	}
	if (memcmp(computed, block_hash, LC_HASH_LEN) != 0)
		return "its fields do not hash to its block_hash";
	if (!lc_signature_ok(block_hash, LC_HASH_LEN, signature, h->public_key))
		return "its signature does not verify with its public_key";
	return NULL;
}

int
lc_leaves_problems(const LcBlockHeader *h, const uint8_t *packed, size_t len, int64_t *bad_seq)
{
	size_t		n = len / LC_LEAF_SIZE;
	size_t		i;
	int			problems = 0;
	uint8_t		computed[LC_HASH_LEN];

	*bad_seq = -1;
	if (len % LC_LEAF_SIZE != 0 || (uint64_t) h->row_count != (uint64_t) n)
		problems |= LC_LEAVES_COUNT;
	for (i = 0; i < n; i++)
	{
		int64_t		seq = (int64_t) lc_get_u64(packed + i * LC_LEAF_SIZE);

		if (seq < h->first_seq || seq > h->last_seq ||
			(i > 0 && seq <= (int64_t) lc_get_u64(packed + (i - 1) * LC_LEAF_SIZE)))
		{
			problems |= LC_LEAVES_ORDER;
			*bad_seq = seq;
			break;
		}
	}
	if (!lc_merkle_root(packed + 12, n, LC_LEAF_SIZE, computed))
		return problems | LC_LEAVES_FAILED;
	if (memcmp(computed, h->root, LC_HASH_LEN) != 0)
		problems |= LC_LEAVES_ROOT;
	if (!lc_leaves_hash(packed, n * LC_LEAF_SIZE, computed))
		return problems | LC_LEAVES_FAILED;
	if (memcmp(computed, h->leaves_hash, LC_HASH_LEN) != 0)
		problems |= LC_LEAVES_HASH;
	return problems;
}

void
lc_chain_init(LcChain *c)
{
	memset(c, 0, sizeof(*c));
}

int
lc_chain_link_problems(const LcChain *c, const LcBlockHeader *h)
{
	uint8_t		computed[LC_HASH_LEN];
	int			problems = 0;

	if (memcmp(c->prev_hash, h->prev_hash, LC_HASH_LEN) != 0)
		problems |= LC_LINK_PREV_HASH;
	if (h->first_seq - 1 != c->prev_last_seq)
		problems |= LC_LINK_RANGE;
	if (h->last_seq < h->first_seq)
		problems |= LC_LINK_EMPTY;
	if (!lc_history_root(c->frontier, c->frontier_count, computed))
		return problems | LC_LINK_FAILED;
	if (memcmp(computed, h->history_root, LC_HASH_LEN) != 0)
		problems |= LC_LINK_HISTORY;
	return problems;
}

bool
lc_chain_append(LcChain *c, const LcBlockHeader *h, const uint8_t *block_hash)
{
	if (!lc_history_append(c->frontier, &c->frontier_count, (uint64_t) (h->height - 1),
						   block_hash))
		return false;
	c->height = h->height;
	memcpy(c->prev_hash, block_hash, LC_HASH_LEN);
	c->prev_last_seq = h->last_seq;
	return true;
}

bool
lc_digest_signature_ok(const char *origin, int64_t height, const uint8_t *block_hash,
					   int64_t last_seq, int64_t sealed_at_us, const uint8_t *public_key,
					   const uint8_t *signature, bool *failed)
{
	LcBuf		msg;
	bool		ok;

	lc_buf_init(&msg);
	lc_digest_message(&msg, origin, height, block_hash, last_seq, sealed_at_us);
	*failed = msg.failed;
	ok = !msg.failed && lc_signature_ok(msg.data, msg.len, signature, public_key);
	lc_buf_free(&msg);
	return ok;
}

const char *
lc_digest_block_mismatch(int64_t d_height, const uint8_t *d_block_hash, int64_t d_last_seq,
						 int64_t d_sealed_at_us, const LcBlockHeader *h,
						 const uint8_t *block_hash)
{
	if (h->height != d_height)
		return "height";
	if (memcmp(block_hash, d_block_hash, LC_HASH_LEN) != 0)
		return "block_hash";
	if (h->last_seq != d_last_seq)
		return "last_seq";
	if (h->sealed_at_us != d_sealed_at_us)
		return "sealed_at";
	return NULL;
}

int64_t
lc_quorum_of(int64_t members)
{
	/* ceil((n + f + 1) / 2), f = floor((n - 1) / 3): two quorums share f + 1 members */
	return members <= 0 ? 1 : (members + (members - 1) / 3 + 2) / 2;
}

static const LcKeyPin *
pin_named(const LcKeyPin *pins, size_t npins, const char *name, size_t len)
{
	size_t		i;

	for (i = 0; i < npins; i++)
		if (pins[i].name_len == len && memcmp(pins[i].name, name, len) == 0)
			return &pins[i];
	return NULL;
}

bool
lc_ack_ok(const char *origin, size_t origin_len, int64_t height, const uint8_t *block_hash,
		  const uint8_t *public_key, const uint8_t *signature, bool *failed)
{
	char	   *origin_z = malloc(origin_len + 1);
	LcBuf		msg;
	bool		ok;

	*failed = false;
	if (origin_z == NULL)
	{
		lc_error = LC_ERR_NOMEM;
		*failed = true;
		return false;
	}
	memcpy(origin_z, origin, origin_len);
	origin_z[origin_len] = '\0';
	lc_buf_init(&msg);
	lc_ack_message(&msg, origin_z, height, block_hash);
	free(origin_z);
	*failed = msg.failed;
	ok = !msg.failed && lc_signature_ok(msg.data, msg.len, signature, public_key);
	lc_buf_free(&msg);
	return ok;
}

const char *
lc_origin_header_problem(const char *origin, size_t origin_len, int64_t height,
						 const uint8_t *block_hash, const uint8_t *header, size_t header_len,
						 const uint8_t *origin_signature, const uint8_t *expected_key,
						 bool *failed, char *problem, size_t plen)
{
	const char *h_origin;
	size_t		h_origin_len;
	int64_t		h_height;
	const uint8_t *h_key;
	uint8_t		computed[LC_HASH_LEN];

	*failed = false;
	if (!lc_header_fields(header, header_len, &h_origin, &h_origin_len, &h_height, &h_key))
	{
		snprintf(problem, plen, "\"header\" is not a block header");
		return problem;
	}
	if (!lc_sha256(header, header_len, computed))
	{
		*failed = true;
		snprintf(problem, plen, "SHA-256 failed");
		return problem;
	}
	if (memcmp(computed, block_hash, LC_HASH_LEN) != 0)
	{
		snprintf(problem, plen, "the header does not hash to block_hash");
		return problem;
	}
	if (h_origin_len != origin_len || memcmp(h_origin, origin, origin_len) != 0 ||
		h_height != height)
	{
		snprintf(problem, plen, "the header is block %lld of %.*s, not block %lld of %.*s",
				 (long long) h_height, (int) (h_origin_len > 64 ? 64 : h_origin_len), h_origin,
				 (long long) height, (int) (origin_len > 64 ? 64 : origin_len), origin);
		return problem;
	}
	if (expected_key != NULL && memcmp(expected_key, h_key, LC_PUBKEY_LEN) != 0)
	{
		snprintf(problem, plen, "the block is signed with a key that is not %.*s's pinned key",
				 (int) (origin_len > 64 ? 64 : origin_len), origin);
		return problem;
	}
	if (!lc_signature_ok(block_hash, LC_HASH_LEN, origin_signature, h_key))
	{
		snprintf(problem, plen, "origin_signature is not the header key's signature of block_hash");
		return problem;
	}
	return NULL;
}

int
lc_certificate_rule(const char *origin, size_t origin_len, int64_t height,
					const uint8_t *block_hash, const uint8_t *header, size_t header_len,
					const uint8_t *origin_signature, int64_t quorum, const LcAck *acks,
					size_t nacks, const LcKeyPin *members, size_t nmembers, int64_t min_quorum,
					int64_t *valid, char *problem, size_t plen)
{
	size_t		i;
	size_t		j;
	const LcAck **seen;
	const uint8_t *pinned_key = NULL;
	bool		failed;

	*valid = 0;
	if (members != NULL)
	{
		const LcKeyPin *m = pin_named(members, nmembers, origin, origin_len);

		if (m == NULL)
		{
			snprintf(problem, plen, "origin %.*s is not a pinned member",
					 (int) (origin_len > 64 ? 64 : origin_len), origin);
			return 1;
		}
		pinned_key = m->key;
	}
	if (lc_origin_header_problem(origin, origin_len, height, block_hash, header, header_len,
								 origin_signature, pinned_key, &failed, problem, plen) != NULL)
		return failed ? LC_ERR_CRYPTO : 1;
	if (quorum < min_quorum || quorum < 1)
	{
		snprintf(problem, plen, "quorum %lld is below %lld", (long long) quorum,
				 (long long) (min_quorum > 1 ? min_quorum : 1));
		return 1;
	}

	seen = malloc(sizeof(*seen) * (nacks ? nacks : 1));
	if (seen == NULL)
	{
		lc_error = LC_ERR_NOMEM;
		return LC_ERR_NOMEM;
	}
	for (i = 0; i < nacks; i++)
	{
		const LcAck *a = &acks[i];
		bool		dup = false;

		if (members != NULL)
		{
			const LcKeyPin *m = pin_named(members, nmembers, a->acker, a->acker_len);

			if (m == NULL || memcmp(m->key, a->public_key, LC_PUBKEY_LEN) != 0)
				continue;		/* not a pinned member: does not count */
		}
		if (!lc_ack_ok(origin, origin_len, height, block_hash, a->public_key, a->signature,
					   &failed))
		{
			if (failed)
			{
				free(seen);
				return LC_ERR_NOMEM;
			}
			continue;
		}
		for (j = 0; j < (size_t) *valid && !dup; j++)
			dup = seen[j]->acker_len == a->acker_len &&
				memcmp(seen[j]->acker, a->acker, a->acker_len) == 0;
		if (!dup)
			seen[(*valid)++] = a;
	}
	free(seen);
	if (*valid < quorum)
	{
		snprintf(problem, plen, "%lld valid acknowledgments by distinct %s, fewer than the quorum %lld",
				 (long long) *valid, members != NULL ? "pinned hospitals" : "ackers",
				 (long long) quorum);
		return 1;
	}
	return LC_OK;
}

void
lc_hex_encode(const uint8_t *data, size_t len, char *out)
{
	static const char digits[] = "0123456789abcdef";
	size_t		i;

	for (i = 0; i < len; i++)
	{
		out[2 * i] = digits[data[i] >> 4];
		out[2 * i + 1] = digits[data[i] & 0x0f];
	}
	out[2 * len] = '\0';
}

/* 0-15 for a hex digit, 16 for anything else. */
static const uint8_t hex_value[256] = {
	['0'] = 1, ['1'] = 2, ['2'] = 3, ['3'] = 4, ['4'] = 5, ['5'] = 6, ['6'] = 7, ['7'] = 8,
	['8'] = 9, ['9'] = 10, ['a'] = 11, ['b'] = 12, ['c'] = 13, ['d'] = 14, ['e'] = 15,
	['f'] = 16, ['A'] = 11, ['B'] = 12, ['C'] = 13, ['D'] = 14, ['E'] = 15, ['F'] = 16,
};

int
lc_hex_digit(char c)
{
	return hex_value[(unsigned char) c] - 1;
}

bool
lc_hex_decode(const char *hex, size_t hexlen, uint8_t *out)
{
	size_t		i;
	unsigned	bad = 0;

	if (hexlen % 2 != 0)
		return false;
	for (i = 0; i < hexlen; i += 2)
	{
		unsigned	hi = hex_value[(unsigned char) hex[i]];
		unsigned	lo = hex_value[(unsigned char) hex[i + 1]];

		/* table values are digit + 1: a zero marks a non-digit */
		bad |= (hi == 0) | (lo == 0);
		out[i / 2] = (uint8_t) ((hi - 1) << 4 | (lo - 1));
	}
	return bad == 0;
}

/* Days from 1970-01-01 to a civil date (proleptic Gregorian). */
int64_t
lc_days_from_civil(int64_t y, int m, int d)
{
	int64_t		era;
	int64_t		yoe;
	int64_t		doy;
	int64_t		doe;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = y - era * 400;
	doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

void
lc_civil_from_days(int64_t z, int64_t *y, int *m, int *d)
{
	int64_t		era;
	int64_t		doe;
	int64_t		yoe;
	int64_t		doy;
	int64_t		mp;

	z += 719468;
	era = (z >= 0 ? z : z - 146096) / 146097;
	doe = z - era * 146097;
	yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	mp = (5 * doy + 2) / 153;
	*d = (int) (doy - (153 * mp + 2) / 5 + 1);
	*m = (int) (mp < 10 ? mp + 3 : mp - 9);
	*y = yoe + era * 400 + (*m <= 2);
}

void
lc_format_iso_utc(int64_t unix_us, char *out)
{
	int64_t		secs = unix_us >= 0 ? unix_us / 1000000 : -((-unix_us + 999999) / 1000000);
	int64_t		us = unix_us - secs * 1000000;
	int64_t		days = secs >= 0 ? secs / 86400 : -((-secs + 86399) / 86400);
	int64_t		sod = secs - days * 86400;
	int64_t		y;
	int			m;
	int			d;
	char		buf[96];

	lc_civil_from_days(days, &y, &m, &d);
	/* Years outside 0..9999 cannot occur in PostgreSQL timestamps. */
	snprintf(buf, sizeof(buf), "%04lld-%02d-%02dT%02d:%02d:%02d.%06lldZ",
			 (long long) y, m, d, (int) (sod / 3600), (int) (sod / 60 % 60),
			 (int) (sod % 60), (long long) us);
	memcpy(out, buf, LC_ISO_LEN);
	out[LC_ISO_LEN] = '\0';
}

bool
lc_parse_iso_utc(const char *s, int64_t *unix_us)
{
	int			y, mo, d, h, mi, sec, us;
	int			consumed = 0;
	static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};

	static const char shape[] = "dddd-dd-ddTdd:dd:dd.ddddddZ";
	int			i;

	if (strlen(s) != LC_ISO_LEN)
		return false;
	for (i = 0; i < LC_ISO_LEN; i++)
		if (shape[i] == 'd' ? !(s[i] >= '0' && s[i] <= '9') : s[i] != shape[i])
			return false;
	if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d.%6dZ%n", &y, &mo, &d, &h, &mi, &sec, &us,
			   &consumed) != 7 || consumed != LC_ISO_LEN)
		return false;
	if (mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] || h > 23 || mi > 59 ||
		sec > 59 || us < 0 || y < 0)
		return false;
	if (mo == 2 && d == 29 && !((y % 4 == 0 && y % 100 != 0) || y % 400 == 0))
		return false;
	*unix_us = ((lc_days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec) * 1000000) + us;
	return true;
}
