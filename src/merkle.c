/*
 * merkle.c
 *		Where bytes become leaves and leaves become a Merkle root.
 *
 * Hashing follows RFC 6962 (and RFC 9162): a leaf is SHA-256(0x00 || data),
 * an inner node SHA-256(0x01 || left || right), so a leaf can never pose as
 * a node.  A level with an odd count carries its last hash up unchanged,
 * which gives exactly RFC 6962's tree for any number of leaves.
 */
#include "postgres.h"

#include <openssl/evp.h>

#include "ehrledger.h"

static EVP_MD *sha256_md = NULL;
static EVP_MD_CTX *sha256_ctx = NULL;

/* Fetching the digest once avoids OpenSSL's implicit lookup on every call. */
static void
sha256_setup(void)
{
	if (sha256_ctx != NULL)
		return;
	sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
	if (sha256_md == NULL)
		elog(ERROR, "OpenSSL provides no SHA-256");
	sha256_ctx = EVP_MD_CTX_new();
	if (sha256_ctx == NULL)
		elog(ERROR, "out of memory for an OpenSSL digest context");
}

static void
sha256_parts(const void *a, size_t alen, const void *b, size_t blen,
			 const void *c, size_t clen, uint8 *out)
{
	unsigned int outlen;

	sha256_setup();
	if (EVP_DigestInit_ex(sha256_ctx, sha256_md, NULL) != 1 ||
		(alen > 0 && EVP_DigestUpdate(sha256_ctx, a, alen) != 1) ||
		(blen > 0 && EVP_DigestUpdate(sha256_ctx, b, blen) != 1) ||
		(clen > 0 && EVP_DigestUpdate(sha256_ctx, c, clen) != 1) ||
		EVP_DigestFinal_ex(sha256_ctx, out, &outlen) != 1)
		elog(ERROR, "SHA-256 computation failed");
}

void
ledger_sha256(const void *data, size_t len, uint8 *out)
{
	sha256_parts(data, len, NULL, 0, NULL, 0, out);
}

void
ledger_leaf_hash(const void *encoding, size_t len, uint8 *out)
{
	static const uint8 leaf_prefix = 0x00;

	sha256_parts(&leaf_prefix, 1, encoding, len, NULL, 0, out);
}

void
ledger_node_hash(const uint8 *left, const uint8 *right, uint8 *out)
{
	static const uint8 node_prefix = 0x01;

	sha256_parts(&node_prefix, 1, left, LEDGER_HASH_LEN, right, LEDGER_HASH_LEN, out);
}

/*
 * Computes the Merkle tree hash of count leaf hashes, the i-th found at
 * items + i * stride.  An empty tree hashes to SHA-256 of nothing.
 */
void
ledger_merkle_root(const uint8 *items, size_t count, size_t stride, uint8 *out)
{
	uint8	   *level;
	size_t		n;
	size_t		i;

	if (count == 0)
	{
		ledger_sha256(NULL, 0, out);
		return;
	}

	level = palloc_extended(count * LEDGER_HASH_LEN, MCXT_ALLOC_HUGE);
	for (i = 0; i < count; i++)
		memcpy(level + i * LEDGER_HASH_LEN, items + i * stride, LEDGER_HASH_LEN);

	for (n = count; n > 1; n = (n + 1) / 2)
	{
		for (i = 0; i + 1 < n; i += 2)
			ledger_node_hash(level + i * LEDGER_HASH_LEN, level + (i + 1) * LEDGER_HASH_LEN,
					  level + (i / 2) * LEDGER_HASH_LEN);
		if (n % 2 == 1)
			memmove(level + (n / 2) * LEDGER_HASH_LEN,
					level + (n - 1) * LEDGER_HASH_LEN, LEDGER_HASH_LEN);
	}
	memcpy(out, level, LEDGER_HASH_LEN);
	pfree(level);
}

/* Number of perfect subtrees in a tree of the given size. */
int
history_frontier_count(uint64 size)
{
	int			count = 0;

	for (; size != 0; size &= size - 1)
		count++;
	return count;
}

/*
 * Appends a block hash to a history tree of size_before leaves.  Like a
 * binary increment: each trailing 1 bit of the old size merges two subtrees.
 */
void
history_append(uint8 *frontier, int *count, uint64 size_before, const uint8 *block_hash)
{
	uint64		carry;

	memcpy(frontier + *count * LEDGER_HASH_LEN, block_hash, LEDGER_HASH_LEN);
	(*count)++;
	for (carry = size_before; carry & 1; carry >>= 1)
	{
		uint8	   *left = frontier + (*count - 2) * LEDGER_HASH_LEN;

		ledger_node_hash(left, left + LEDGER_HASH_LEN, left);
		(*count)--;
	}
}

/* The RFC 6962 tree hash of the whole history: subtrees folded from the right. */
void
history_root(const uint8 *frontier, int count, uint8 *out)
{
	uint8		acc[LEDGER_HASH_LEN];
	int			i;

	if (count == 0)
	{
		ledger_sha256(NULL, 0, out);
		return;
	}
	memcpy(acc, frontier + (count - 1) * LEDGER_HASH_LEN, LEDGER_HASH_LEN);
	for (i = count - 2; i >= 0; i--)
		ledger_node_hash(frontier + i * LEDGER_HASH_LEN, acc, acc);
	memcpy(out, acc, LEDGER_HASH_LEN);
}
