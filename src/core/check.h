/*
 * check.h
 *		The checks of the ledger's documents: digests, inclusion proofs,
 *		consistency proofs, table exports and certificates
 *		(docs/format.md §9-14, §18, §19).
 *
 * One implementation, run by ehrledger-verify on files and by the server
 * on SQL arguments (ehrledger.check_proof() and its kin), so that the two
 * can never disagree.  Documents are JSON texts, parsed in place (the
 * caller's buffers are changed).  Nothing here exits or aborts: every
 * check ends with a result.
 */
#ifndef LEDGER_CHECK_H
#define LEDGER_CHECK_H

#include "ledger_core.h"

/* Verdicts, which are also ehrledger-verify's exit statuses. */
#define LC_VALID	0
#define LC_INVALID	1			/* well formed, but not what it claims */
#define LC_UNUSABLE 2			/* not a document of the kind, or out of memory */

typedef struct LcResult
{
	int			status;
	bool		oom;			/* LC_UNUSABLE because memory ran out */
	char		message[1024];	/* why not valid */
	LcBuf		out;			/* when valid: "valid: ..." and what was shown */
} LcResult;

extern void lc_result_init(LcResult *r);
extern void lc_result_free(LcResult *r);

/* A hospital of the network and its key, pinned by an auditor. */
typedef struct LcMember
{
	const char *name;
	uint8_t		key[LC_PUBKEY_LEN];
} LcMember;

typedef struct LcOptions
{
	const uint8_t *trusted_key; /* the node key digests must carry, or NULL */
	const LcMember *members;	/* the network's members, or NULL */
	size_t		nmembers;
	/*
	 * With members, a certificate's quorum may not be below 2f+1 of them;
	 * unless this is set (the server: its members may have changed since),
	 * when the certificate's own quorum is enough.
	 */
	bool		own_quorum;
} LcOptions;

/* A document and the name it is called by in messages ("proof.json"). */
typedef struct LcDoc
{
	const char *name;
	char	   *text;
	size_t		len;
} LcDoc;

/*
 * The "format" of a document, into buf (text is not changed): LC_OK, or
 * LC_DOC_NOT_JSON or LC_DOC_NO_FORMAT (buf then says why), or LC_ERR_NOMEM.
 */
#define LC_DOC_NOT_JSON		1
#define LC_DOC_NO_FORMAT	2
extern int	lc_doc_format(const char *text, size_t len, char *buf, size_t buflen);

extern void lc_check_digest(const LcDoc *digest, const LcOptions *o, LcResult *r);

/* A digest's fields, read as every check reads them (docs/format.md §9). */
typedef struct LcDigest
{
	char	   *origin;			/* malloc'ed, NUL-terminated: lc_digest_free() */
	size_t		origin_len;
	int64_t		height;
	uint8_t		block_hash[LC_HASH_LEN];
	int64_t		last_seq;
	int64_t		sealed_at_us;
	uint8_t		public_key[LC_PUBKEY_LEN];
	uint8_t		signature[LC_SIG_LEN];
	bool		has_certificate;
} LcDigest;

/*
 * Reads a digest without checking its signature or certificate: r says
 * LC_VALID, or LC_UNUSABLE and why.
 */
extern void lc_digest_read(const LcDoc *digest, LcDigest *d, LcResult *r);
extern void lc_digest_free(LcDigest *d);
extern void lc_check_proof(const LcDoc *proof, const LcDoc *digest, const LcOptions *o,
						   LcResult *r);
extern void lc_check_consistency(const LcDoc *proof, const LcDoc *old_digest,
								 const LcDoc *new_digest, const LcOptions *o, LcResult *r);
extern void lc_check_certificate(const LcDoc *certificate, const LcOptions *o, LcResult *r);

/*
 * Exports are checked line by line, so that memory grows with the table's
 * leaves, not its rows: begin with the header line and the digest, feed
 * every further line, then end.  A line that ends the check (invalid or
 * unusable) leaves its verdict in r; further calls do nothing.
 */
typedef struct LcExport LcExport;

extern LcExport *lc_export_begin(const char *name, LcDoc *header, const LcDoc *digest,
								 const LcOptions *o, LcResult *r);
extern void lc_export_line(LcExport *e, char *line, size_t len, LcResult *r);
extern void lc_export_end(LcExport *e, LcResult *r);
extern void lc_export_free(LcExport *e);

#define LC_DIGEST_FORMAT		"ehrledger-digest-1"
#define LC_PROOF_FORMAT			"ehrledger-proof-1"
#define LC_CONSISTENCY_FORMAT	"ehrledger-consistency-1"
#define LC_EXPORT_FORMAT		"ehrledger-export-1"
#define LC_CERTIFICATE_FORMAT	"ehrledger-certificate-1"

/* Input limits: larger inputs are refused, never truncated. */
#define LC_DIGEST_LIMIT		((size_t) 1 << 20)	/* a digest is ~400 bytes, ~2 KB with a certificate */
#define LC_DOC_LIMIT		((size_t) 256 << 20)	/* a proof carries one row */
#define LC_EXPORT_LINE_LIMIT ((size_t) 1 << 30)	/* a block line: 88 hex digits a leaf */
#define LC_MAX_MEMBERS		1000

#endif							/* LEDGER_CHECK_H */
