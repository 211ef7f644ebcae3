/*
 * merkle.c
 *		Where bytes become leaves and leaves become a Merkle root.
 *
 * Thin server-side wrappers over src/core/ledger_core.c, which the offline
 * verifier shares: one implementation of every hashing rule.  Leaves are
 * SHA-256(0x00 || data), inner nodes SHA-256(0x01 || left || right), as in
 * RFC 6962, so a leaf can never pose as a node.
 */
#include "postgres.h"

#include "core/ledger_core.h"
#include "ehrledger.h"

/* SHA-256 failed in OpenSSL, or a buffer could not be allocated. */
static void
hash_failed(void)
{
	core_failed(lc_error);
}

void
ledger_sha256(const void *data, size_t len, uint8 *out)
{
	if (!lc_sha256(data, len, out))
		hash_failed();
}

void
ledger_leaf_hash(const void *encoding, size_t len, uint8 *out)
{
	if (!lc_leaf_hash(encoding, len, out))
		hash_failed();
}

void
ledger_node_hash(const uint8 *left, const uint8 *right, uint8 *out)
{
	if (!lc_node_hash(left, right, out))
		hash_failed();
}

void
ledger_merkle_root(const uint8 *items, size_t count, size_t stride, uint8 *out)
{
	if (!lc_merkle_root(items, count, stride, out))
		hash_failed();
}

int
history_frontier_count(uint64 size)
{
	return lc_frontier_count(size);
}

void
history_append(uint8 *frontier, int *count, uint64 size_before, const uint8 *block_hash)
{
	if (!lc_history_append(frontier, count, size_before, block_hash))
		hash_failed();
}

void
history_root(const uint8 *frontier, int count, uint8 *out)
{
	if (!lc_history_root(frontier, count, out))
		hash_failed();
}
