/*
 * keys.c
 *		The node's Ed25519 key and name.
 *
 * The key file holds the 32-byte Ed25519 seed and nothing else.  It is read
 * (or created, mode 0600) once, by the postmaster while it loads the
 * library, so every backend inherits the key and no SQL path ever opens the
 * file.  Like the server's TLS key, a file with group or world access is
 * refused.
 *
 * Next: seal.c and digest.c sign with the key; src/network signs
 * acknowledgments with it; verify.c checks blocks against it.
 */
#include "postgres.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "access/xlog.h"
#include "miscadmin.h"
#include "storage/fd.h"
#include "utils/memutils.h"

#include "ehrledger.h"

#define NODE_SEED_LEN	32

static uint8 node_public_key[LEDGER_PUBKEY_LEN];
static uint8 node_secret_key[crypto_sign_SECRETKEYBYTES];
static bool node_key_loaded = false;
static char *node_name = NULL;

static void
create_key_file(const char *path)
{
	uint8		seed[NODE_SEED_LEN];
	int			fd;

	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | PG_BINARY, S_IRUSR | S_IWUSR);
	if (fd < 0)
		ereport(ERROR,
				(errcode(ERRCODE_LEDGER_KEY_FILE),
				 errmsg("could not create ehrledger key file \"%s\": %m", path)));
	randombytes_buf(seed, sizeof(seed));
	if (write(fd, seed, sizeof(seed)) != sizeof(seed) || pg_fsync(fd) != 0)
	{
		int			save_errno = errno;

		sodium_memzero(seed, sizeof(seed));
		close(fd);
		unlink(path);
		errno = save_errno;
		ereport(ERROR,
				(errcode(ERRCODE_LEDGER_KEY_FILE),
				 errmsg("could not write ehrledger key file \"%s\": %m", path)));
	}
	sodium_memzero(seed, sizeof(seed));
	close(fd);
	ereport(LOG,
			(errmsg("ehrledger created a new node key in \"%s\"", path)));
}

/* Loads the node key, creating it on the very first start. */
void
ledger_keys_load_at_startup(void)
{
	const char *path = ehrledger_key_file;
	struct stat st;
	uint8		seed[NODE_SEED_LEN];
	int			fd;
	ssize_t		got;

	if (stat(path, &st) != 0)
	{
		if (errno != ENOENT)
			ereport(ERROR,
					(errcode(ERRCODE_LEDGER_KEY_FILE),
					 errmsg("could not stat ehrledger key file \"%s\": %m", path)));
		create_key_file(path);
		if (stat(path, &st) != 0)
			ereport(ERROR,
					(errcode(ERRCODE_LEDGER_KEY_FILE),
					 errmsg("could not stat ehrledger key file \"%s\": %m", path)));
	}
	if (!S_ISREG(st.st_mode))
		ereport(ERROR,
				(errcode(ERRCODE_LEDGER_KEY_FILE),
				 errmsg("ehrledger key file \"%s\" is not a regular file", path)));
	if (st.st_uid != geteuid())
		ereport(ERROR,
				(errcode(ERRCODE_LEDGER_KEY_FILE),
				 errmsg("ehrledger key file \"%s\" must be owned by the database server user", path)));
	if (st.st_mode & (S_IRWXG | S_IRWXO))
		ereport(ERROR,
				(errcode(ERRCODE_LEDGER_KEY_FILE),
				 errmsg("ehrledger key file \"%s\" has group or world access", path),
				 errdetail("File must have permissions u=rw (0600) or less.")));

	fd = open(path, O_RDONLY | PG_BINARY, 0);
	if (fd < 0)
		ereport(ERROR,
				(errcode(ERRCODE_LEDGER_KEY_FILE),
				 errmsg("could not open ehrledger key file \"%s\": %m", path)));
	got = read(fd, seed, sizeof(seed));
	if (got != sizeof(seed) || st.st_size != NODE_SEED_LEN)
	{
		close(fd);
		sodium_memzero(seed, sizeof(seed));
		ereport(ERROR,
				(errcode(ERRCODE_LEDGER_KEY_FILE),
				 errmsg("ehrledger key file \"%s\" is not a 32-byte Ed25519 seed", path)));
	}
	close(fd);

	crypto_sign_seed_keypair(node_public_key, node_secret_key, seed);
	sodium_memzero(seed, sizeof(seed));
	node_key_loaded = true;
}

static void
require_key(void)
{
	if (!node_key_loaded)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("ehrledger's node key is not loaded"),
				 errhint("Add ehrledger to shared_preload_libraries and restart the server.")));
}

const uint8 *
ledger_node_public_key(void)
{
	require_key();
	return node_public_key;
}

void
ledger_node_sign(const uint8 *msg, size_t len, uint8 *sig)
{
	require_key();
	crypto_sign_detached(sig, NULL, msg, len, node_secret_key);
}

bool
ledger_signature_ok(const uint8 *msg, size_t len, const uint8 *sig,
					const uint8 *pubkey)
{
	return lc_signature_ok(msg, len, sig, pubkey);
}

/* The name blocks and digests carry: the setting, or one from the system id. */
const char *
ledger_node_name(void)
{
	if (node_name == NULL)
	{
		if (ehrledger_node_name_setting != NULL && ehrledger_node_name_setting[0] != '\0')
			node_name = MemoryContextStrdup(TopMemoryContext, ehrledger_node_name_setting);
		else
			node_name = MemoryContextStrdup(TopMemoryContext,
											psprintf("node-" UINT64_FORMAT,
													 GetSystemIdentifier()));
	}
	return node_name;
}
