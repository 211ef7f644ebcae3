/*
 * ledger_core.c
 *		The ledger's hashing, signing and proof rules in plain C.
 *
 * Trees follow RFC 6962 / RFC 9162: leaves hashed with prefix 0x00 (by the
 * caller), inner nodes SHA-256(0x01 || left || right), the left subtree of
 * n leaves holding the largest power of two smaller than n.
 */
#include "ledger_core.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>
#include <sodium.h>

static void
default_oom(void)
{
	fprintf(stderr, "out of memory\n");
	abort();
}

void		(*lc_oom) (void) = default_oom;

void
lc_buf_init(LcBuf *b)
{
	b->data = NULL;
	b->len = 0;
	b->cap = 0;
}

void
lc_buf_free(LcBuf *b)
{
	free(b->data);
	lc_buf_init(b);
}

void
lc_put(LcBuf *b, const void *data, size_t len)
{
	if (b->len + len > b->cap)
	{
		size_t		cap = b->cap ? b->cap : 256;
		uint8_t    *grown;

		while (cap < b->len + len)
			cap *= 2;
		grown = realloc(b->data, cap);
		if (grown == NULL)
			lc_oom();
		b->data = grown;
		b->cap = cap;
	}
	if (len > 0)
		memcpy(b->data + b->len, data, len);
	b->len += len;
}

void
lc_put_u8(LcBuf *b, uint8_t v)
{
	lc_put(b, &v, 1);
}

void
lc_put_u16(LcBuf *b, uint16_t v)
{
	uint8_t		x[2] = {(uint8_t) (v >> 8), (uint8_t) v};

	lc_put(b, x, 2);
}

void
lc_put_u32(LcBuf *b, uint32_t v)
{
	uint8_t		x[4] = {(uint8_t) (v >> 24), (uint8_t) (v >> 16), (uint8_t) (v >> 8), (uint8_t) v};

	lc_put(b, x, 4);
}

void
lc_put_u64(LcBuf *b, uint64_t v)
{
	lc_put_u32(b, (uint32_t) (v >> 32));
	lc_put_u32(b, (uint32_t) v);
}

uint32_t
lc_get_u32(const uint8_t *p)
{
	return ((uint32_t) p[0] << 24) | ((uint32_t) p[1] << 16) | ((uint32_t) p[2] << 8) | p[3];
}

uint64_t
lc_get_u64(const uint8_t *p)
{
	return ((uint64_t) lc_get_u32(p) << 32) | lc_get_u32(p + 4);
}

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
			return false;
	}
	return EVP_DigestInit_ex(sha256_ctx, sha256_md, NULL) == 1 &&
		(alen == 0 || EVP_DigestUpdate(sha256_ctx, a, alen) == 1) &&
		(blen == 0 || EVP_DigestUpdate(sha256_ctx, b, blen) == 1) &&
		(clen == 0 || EVP_DigestUpdate(sha256_ctx, c, clen) == 1) &&
		EVP_DigestFinal_ex(sha256_ctx, out, &outlen) == 1;
}

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
 * Pairs neighbours level by level, carrying an odd last hash up unchanged:
 * the same tree as RFC 6962's recursive definition, in linear time.
 */
bool
lc_merkle_root(const uint8_t *leaves, size_t count, size_t stride, uint8_t *out)
{
	uint8_t    *level;
	size_t		n;
	size_t		i;
	bool		ok = true;

	if (count == 0)
		return lc_sha256(NULL, 0, out);
	level = malloc(count * LC_HASH_LEN);
	if (level == NULL)
		lc_oom();
	for (i = 0; i < count; i++)
		memcpy(level + i * LC_HASH_LEN, leaves + i * stride, LC_HASH_LEN);
	for (n = count; n > 1 && ok; n = (n + 1) / 2)
	{
		for (i = 0; i + 1 < n && ok; i += 2)
			ok = lc_node_hash(level + i * LC_HASH_LEN, level + (i + 1) * LC_HASH_LEN,
							  level + (i / 2) * LC_HASH_LEN);
		if (n % 2 == 1)
			memmove(level + (n / 2) * LC_HASH_LEN, level + (n - 1) * LC_HASH_LEN, LC_HASH_LEN);
	}
	memcpy(out, level, LC_HASH_LEN);
	free(level);
	return ok;
}

static int
audit_path(const uint8_t *leaves, size_t count, size_t stride, size_t index,
		   uint8_t *path, int len)
{
	size_t		k;

	if (count <= 1)
		return len;
	k = split_point(count);
	if (index < k)
	{
		len = audit_path(leaves, k, stride, index, path, len);
		if (len < 0 || !lc_merkle_root(leaves + k * stride, count - k, stride,
									   path + len * LC_HASH_LEN))
			return -1;
	}
	else
	{
		len = audit_path(leaves + k * stride, count - k, stride, index - k, path, len);
		if (len < 0 || !lc_merkle_root(leaves, k, stride, path + len * LC_HASH_LEN))
			return -1;
	}
	return len + 1;
}

int
lc_audit_path(const uint8_t *leaves, size_t count, size_t stride, size_t index,
			  uint8_t *path)
{
	if (index >= count)
		return -1;
	return audit_path(leaves, count, stride, index, path, 0);
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

static int
subproof(const uint8_t *leaves, size_t count, size_t stride, size_t m, bool whole,
		 uint8_t *path, int len)
{
	size_t		k;

	if (m == count)
	{
		if (whole)
			return len;
		return lc_merkle_root(leaves, count, stride, path + len * LC_HASH_LEN) ? len + 1 : -1;
	}
	k = split_point(count);
	if (m <= k)
	{
		len = subproof(leaves, k, stride, m, whole, path, len);
		if (len < 0 || !lc_merkle_root(leaves + k * stride, count - k, stride,
									   path + len * LC_HASH_LEN))
			return -1;
	}
	else
	{
		len = subproof(leaves + k * stride, count - k, stride, m - k, false, path, len);
		if (len < 0 || !lc_merkle_root(leaves, k, stride, path + len * LC_HASH_LEN))
			return -1;
	}
	return len + 1;
}

int
lc_consistency_path(const uint8_t *leaves, size_t count, size_t stride,
					size_t old_size, uint8_t *path)
{
	if (old_size > count)
		return -1;
	if (old_size == 0 || old_size == count)
		return 0;
	return subproof(leaves, count, stride, old_size, true, path, 0);
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
	ok = lc_sha256(b.data, b.len, out);
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

int
lc_hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

bool
lc_hex_decode(const char *hex, size_t hexlen, uint8_t *out)
{
	size_t		i;

	if (hexlen % 2 != 0)
		return false;
	for (i = 0; i < hexlen; i += 2)
	{
		int			hi = lc_hex_digit(hex[i]);
		int			lo = lc_hex_digit(hex[i + 1]);

		if (hi < 0 || lo < 0)
			return false;
		out[i / 2] = (uint8_t) (hi << 4 | lo);
	}
	return true;
}

/* Days from 1970-01-01 to a civil date (proleptic Gregorian). */
static int64_t
days_from_civil(int64_t y, int m, int d)
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

static void
civil_from_days(int64_t z, int64_t *y, int *m, int *d)
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

	civil_from_days(days, &y, &m, &d);
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
	*unix_us = ((days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec) * 1000000) + us;
	return true;
}
