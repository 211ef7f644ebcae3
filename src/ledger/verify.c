/*
 * verify.c
 *		Recomputes everything the ledger claims and lists every difference.
 *
 * Like amcheck, verification does not stop at the first fault: it reports
 * what is wrong and where (kind, block, table, ledger_seq) and goes on
 * wherever it safely can.  It checks, in order:
 *   - each chain: heights without gaps, each block linked to the previous
 *     one, contiguous sequence ranges, the header hash, the signature and
 *     the signing key, and the stored leaves against the block's root;
 *   - each protected table: every row is re-encoded and re-hashed, and
 *     compared with its sealed leaf, or with its own stored hash while it
 *     is not sealed yet; every sealed leaf must still have its row;
 *   - each erasure record (ehrledger.erasure, src/ledger/erase.c): a sealed
 *     leaf whose row is gone is erased, not missing, when an intact record
 *     names that table, ledger_seq and leaf, and its erased_at neither
 *     precedes the sealing of the row nor, for a record numbered after a
 *     digest's block, that digest's sealed_at (a forged, backdated record);
 *   - optionally a digest an auditor kept: the block it names must still be
 *     in the chain, unchanged.
 *
 * Next: the report goes to the auditor; proofs.c and digest.c give what to
 * take away.
 */
#include "postgres.h"

#include "access/detoast.h"
#include "access/genam.h"
#include "access/htup_details.h"
#include "access/relation.h"
#include "access/relscan.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/indexing.h"
#include "catalog/pg_class.h"
#include "catalog/pg_inherits.h"
#include "catalog/pg_type.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "optimizer/cost.h"
#include "parser/parse_relation.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/rls.h"
#include "utils/syscache.h"

#include "core/check.h"
#include "core/decode.h"
#include "core/ledger_core.h"
#include "ledger/ledger.h"

PG_FUNCTION_INFO_V1(ehrledger_verify);

/* Beyond this many, problems are counted but not listed one by one. */
#define MAX_LISTED_PROBLEMS 10000
/* Rows whose content moved are compared pairwise, up to this many. */
#define MAX_SWAP_CANDIDATES 256

typedef struct Problems
{
	StringInfoData json;
	int64		total;
	int64		listed;
} Problems;

typedef struct VBlock
{
	BlockHeader h;
	uint8		stored_hash[LEDGER_HASH_LEN];
	uint8		signature[LEDGER_SIG_LEN];
	uint8		frontier[HISTORY_MAX_FRONTIER * LEDGER_HASH_LEN];
	int			frontier_count;
	bool		own;			/* a block of this node's own chain */
	Datum		packed;			/* its leaves column, until load_leaves() reads it */
	const uint8 *leaves;
	size_t		nleaves;
	bool		leaves_checked; /* leaves_result is known (check_leaves()) */
	int			leaves_result;	/* lc_leaves_problems() */
	int64		leaves_bad_seq;
} VBlock;

typedef struct VLeaf
{
	int64		seq;
	int32		table_id;
	int32		block;			/* index into the block array */
	const uint8 *hash;			/* in the block's leaves */
	bool		seen;
} VLeaf;

/* A row a restore lost (ehrledger.lost_row), still absent. */
typedef struct VLost
{
	int64		seq;			/* first, for lc_find_seq() */
	int64		height;
	uint8		block_hash[LEDGER_HASH_LEN];
	char	   *origin;
	char	   *started_at;
} VLost;

/* An erasure record, by the leaf it names. */
typedef struct VErasure
{
	int64		erased_seq;		/* first, for lc_find_seq() */
	int32		table_id;
	uint8		leaf[LEDGER_HASH_LEN];
	int64		seq;			/* the record's own ledger_seq */
	TimestampTz erased_at;
	bool		intact;			/* it matches its sealed leaf, or its stored hash */
} VErasure;

typedef struct Candidate
{
	int64		seq;
	int32		table_id;
	VLeaf	   *leaf;
	char	   *encoding;
	int			len;
	bool		resolved;
} Candidate;

typedef struct Verifier
{
	Problems	problems;
	const char *local_origin;
	VBlock	   *blocks;
	int			nblocks;
	VLeaf	   *leaves;
	size_t		nleaves;
	int64		horizon;		/* highest sealed ledger_seq of the own chain */
	bool		gaps_explained; /* a missing block explains unsealed gaps */
	bool		duplicate_leaves;	/* two sealed leaves carry one ledger_seq */
	List	   *tables;			/* LedgerTable */
	List	   *trusted;		/* "origin\0key" pairs as bytea */
	List	   *peers;			/* the same, for the network's other hospitals */
	Candidate  *candidates;
	int			ncandidates;
	VLost	   *lost;			/* by ledger_seq */
	size_t		nlost;
	VErasure   *erasures;		/* by erased_seq */
	size_t		nerasures;
	StringInfoData erased;		/* the erased leaves, as a JSON array */
	int64		nerased;
	bool		has_digest;		/* a digest of this node's own chain was given */
	int64		digest_last_seq;
	TimestampTz digest_sealed_at;
	MemoryContext cxt;			/* lives as long as the verification */
	int64		rows_checked;
	List	   *prepasses;		/* PrePass, of relations checked ahead */
	int			max_workers;	/* the session's max_parallel_workers_per_gather */
} Verifier;

/*
 * A relation whose rows a parallel pass checked ahead of the chain checks
 * (prepass_tables()); its result counts when check_relation() reaches it.
 */
typedef struct PrePass
{
	Oid			relid;
	int32		table_id;
	bool		clean;			/* every row was clean */
	int64		rows;
	bool	   *claimed;		/* per leaf of table_id, in v->leaves order */
	size_t		nclaimed;
	bool		applied;		/* check_relation() took it */
} PrePass;

static void add_problem(Problems *p, const char *kind, int64 block,
						const char *table, int64 seq, const char *fmt,...)
			pg_attribute_printf(6, 7);

/* Appends one problem object; block 0 and seq -1 mean "not applicable". */
static void
add_problem(Problems *p, const char *kind, int64 block, const char *table,
			int64 seq, const char *fmt,...)
{
	StringInfoData detail;
	va_list		args;

	p->total++;
	if (p->listed >= MAX_LISTED_PROBLEMS)
		return;
	p->listed++;

	initStringInfo(&detail);
	for (;;)
	{
		int			needed;

		va_start(args, fmt);
		needed = appendStringInfoVA(&detail, fmt, args);
		va_end(args);
		if (needed == 0)
			break;
		enlargeStringInfo(&detail, needed);
	}

	appendStringInfoString(&p->json, p->listed == 1 ? "[" : ", ");
	appendStringInfoString(&p->json, "{\"kind\": ");
	escape_json(&p->json, kind);
	if (block > 0)
		appendStringInfo(&p->json, ", \"block\": " INT64_FORMAT, block);
	if (table != NULL)
	{
		appendStringInfoString(&p->json, ", \"table\": ");
		escape_json(&p->json, table);
	}
	if (seq >= 0)
		appendStringInfo(&p->json, ", \"ledger_seq\": " INT64_FORMAT, seq);
	appendStringInfoString(&p->json, ", \"detail\": ");
	escape_json(&p->json, detail.data);
	appendStringInfoChar(&p->json, '}');
	pfree(detail.data);
}

static Datum
problems_jsonb(Problems *p)
{
	if (p->total > p->listed)
	{
		int64		more = p->total - p->listed;

		p->listed--;			/* let the summary through */
		add_problem(p, "more_problems", 0, NULL, -1,
					INT64_FORMAT " further problems were found but not listed", more);
	}
	if (p->listed == 0)
		appendStringInfoString(&p->json, "[]");
	else
		appendStringInfoChar(&p->json, ']');
	return DirectFunctionCall1(jsonb_in, CStringGetDatum(p->json.data));
}

static const char *
table_name_by_id(Verifier *v, int32 table_id)
{
	ListCell   *lc;

	foreach(lc, v->tables)
	{
		LedgerTable *t = lfirst(lc);

		if (t->table_id == table_id)
		{
			char	   *nsp = get_namespace_name(get_rel_namespace(t->relid));
			char	   *rel = get_rel_name(t->relid);

			if (nsp == NULL || rel == NULL)
				return psprintf("oid %u", t->relid);
			return quote_qualified_identifier(nsp, rel);
		}
	}
	return psprintf("unknown table id %d", table_id);
}

static bool
key_listed(List *list, const char *origin, const uint8 *key)
{
	ListCell   *lc;

	foreach(lc, list)
	{
		const char *entry = lfirst(lc);

		if (strcmp(entry, origin) == 0 &&
			memcmp(entry + strlen(entry) + 1, key, LEDGER_PUBKEY_LEN) == 0)
			return true;
	}
	return false;
}

static bool
key_trusted(Verifier *v, const char *origin, const uint8 *key)
{
	if (strcmp(origin, v->local_origin) == 0 &&
		memcmp(key, ledger_node_public_key(), LEDGER_PUBKEY_LEN) == 0)
		return true;
	return key_listed(v->trusted, origin, key) || key_listed(v->peers, origin, key);
}

static bool
origin_is_own(Verifier *v, const char *origin)
{
	ListCell   *lc;

	if (strcmp(origin, v->local_origin) == 0)
		return true;
	foreach(lc, v->trusted)
		if (strcmp((const char *) lfirst(lc), origin) == 0)
			return true;
	return false;
}

/* "origin\0key" entries from a query of (origin, public_key). */
static List *
load_keys(const char *query)
{
	List	   *keys = NIL;
	int			ret = SPI_execute(query, true, 0);
	uint64		i;

	if (ret != SPI_OK_SELECT)
		elog(ERROR, "SPI_execute failed: %s", SPI_result_code_string(ret));
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		char	   *origin = SPI_getvalue(tup, SPI_tuptable->tupdesc, 1);
		uint8		key[LEDGER_PUBKEY_LEN];
		char	   *entry;

		if (origin == NULL || !spi_fixed(tup, SPI_tuptable->tupdesc, 2, key, LEDGER_PUBKEY_LEN))
			continue;
		entry = palloc(strlen(origin) + 1 + LEDGER_PUBKEY_LEN);
		strcpy(entry, origin);
		memcpy(entry + strlen(origin) + 1, key, LEDGER_PUBKEY_LEN);
		keys = lappend(keys, entry);
	}
	return keys;
}

/*
 * This node's keys, under every name it has had, and its peers' (whose
 * blocks it holds but whose rows it does not).
 */
static void
load_trusted_keys(Verifier *v)
{
	v->trusted = load_keys("SELECT origin, public_key FROM ehrledger.node_key");
	if (OidIsValid(get_relname_relid("peer", ledger_namespace())))
		v->peers = load_keys("SELECT name, public_key FROM ehrledger.peer");
}

static LcMember *members_known(Verifier *v, size_t *n);
static LcMember *members_of_certificate(Verifier *v, Datum names, Datum keys, size_t *n);

/*
 * Certificates of final blocks: each must still name the block held here
 * (a final block cannot be rewritten, even with this node's own key), and
 * hold by the certificate rule (src/core) with the keys of this node's
 * members (or of this node under an earlier name, for blocks it took over
 * from a restore) and its own quorum.
 */
static void
check_certificates(Verifier *v)
{
	int			ret;
	uint64		i;
	LcOptions	o;
	Oid			members_of_args[2] = {JSONBOID, TIMESTAMPTZOID};
	const char *names;
	const char *keys;
	const char *quorum;

#define STATED_QUORUM \
	"CASE WHEN (f.certificate OPERATOR(pg_catalog.->>) 'quorum') OPERATOR(pg_catalog.~) '^[0-9]{1,9}$'" \
	" THEN (f.certificate OPERATOR(pg_catalog.->>) 'quorum')::pg_catalog.int4 END"

	if (!OidIsValid(get_relname_relid("final_block", ledger_namespace())))
		return;
	if (ledger_has_function("_members_of", 2, members_of_args))
	{
		names = "ARRAY(SELECT m.name FROM ehrledger._members_of(f.certificate, f.final_at) m)";
		keys = "ARRAY(SELECT m.public_key FROM ehrledger._members_of(f.certificate, f.final_at) m)";
		quorum = "ehrledger._quorum_of_certificate(f.certificate, f.final_at)";
	}
	else
	{
		/* A 0.3 schema keeps no membership: the members now, as 0.3 judged. */
		names = "ARRAY(SELECT m.name FROM ehrledger._members() m)";
		keys = "ARRAY(SELECT m.public_key FROM ehrledger._members() m)";
		quorum = "GREATEST(" STATED_QUORUM ", (SELECT 2 * ((pg_catalog.count(*)::pg_catalog.int4 - 1) / 3) + 1"
			" FROM ehrledger._members()))";
	}
	ret = SPI_execute(psprintf("SELECT f.origin, f.height, f.block_hash OPERATOR(pg_catalog.=) b.block_hash,"
							   " f.block_hash OPERATOR(pg_catalog.=) pg_catalog.decode(f.certificate OPERATOR(pg_catalog.->>) 'block_hash', 'hex')"
							   "   AND f.origin OPERATOR(pg_catalog.=) (f.certificate OPERATOR(pg_catalog.->>) 'origin')"
							   "   AND f.height::pg_catalog.text OPERATOR(pg_catalog.=) (f.certificate OPERATOR(pg_catalog.->>) 'height'),"
							   " f.certificate::pg_catalog.text, %s, %s,"
							   " COALESCE(%s OPERATOR(pg_catalog.=) " STATED_QUORUM ", false)"
							   " FROM ehrledger.final_block f LEFT JOIN ehrledger.block b"
							   "   ON b.origin OPERATOR(pg_catalog.=) f.origin AND b.height OPERATOR(pg_catalog.=) f.height"
							   " ORDER BY 1, 2", names, keys, quorum), true, 0);
#undef STATED_QUORUM
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "SPI_execute failed: %s", SPI_result_code_string(ret));
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		char	   *origin = SPI_getvalue(tup, desc, 1);
		bool		isnull;
		int64		height = DatumGetInt64(SPI_getbinval(tup, desc, 2, &isnull));
		Datum		same = SPI_getbinval(tup, desc, 3, &isnull);
		bool		held = !isnull;
		bool		named = DatumGetBool(SPI_getbinval(tup, desc, 4, &isnull)) && !isnull;
		LcDoc		doc;
		LcResult	r;
		bool		quorum_ok;

		if (!held)
			add_problem(&v->problems, "final_block_missing", height, NULL, -1,
						"block " INT64_FORMAT " of \"%s\" was final and is no longer here", height, origin);
		else if (!DatumGetBool(same))
			add_problem(&v->problems, "final_block_rewritten", height, NULL, -1,
						"block " INT64_FORMAT " of \"%s\" is not the block a quorum acknowledged", height, origin);
		/* judged by the membership the certificate was made under */
		quorum_ok = DatumGetBool(SPI_getbinval(tup, desc, 8, &isnull)) && !isnull;
		memset(&o, 0, sizeof(o));
		o.members = members_of_certificate(v, SPI_getbinval(tup, desc, 6, &isnull),
										   SPI_getbinval(tup, desc, 7, &isnull), &o.nmembers);
		o.own_quorum = true;
		doc.name = "certificate";
		doc.text = SPI_getvalue(tup, desc, 5);
		doc.len = strlen(doc.text);
		lc_result_init(&r);
		lc_check_certificate(&doc, &o, &r);
		if (r.oom)
		{
			lc_result_free(&r);
			core_failed(LC_ERR_NOMEM);
		}
		if (!named)
			add_problem(&v->problems, "bad_certificate", height, NULL, -1,
						"the certificate of block " INT64_FORMAT " of \"%s\" names another block", height, origin);
		else if (r.status != LC_VALID)
			add_problem(&v->problems, "bad_certificate", height, NULL, -1,
						"the certificate of block " INT64_FORMAT " of \"%s\" does not hold: %s",
						height, origin, r.message);
		else if (!quorum_ok)
			add_problem(&v->problems, "bad_certificate", height, NULL, -1,
						"the certificate of block " INT64_FORMAT " of \"%s\" states a quorum below its membership's",
						height, origin);
		lc_result_free(&r);
	}
}

/* Reads every block; a block whose fields are malformed is reported. */
static void
load_blocks(Verifier *v)
{
	int			ret;
	uint64		i;
	StoredBlock *stored = palloc(sizeof(StoredBlock));

	ret = SPI_execute("SELECT " BLOCK_COLUMNS ", leaves FROM ehrledger.block"
					  " ORDER BY origin, height", true, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "SPI_execute failed: %s", SPI_result_code_string(ret));

	v->blocks = palloc0(sizeof(VBlock) * Max(SPI_processed, 1));
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		VBlock	   *b = &v->blocks[v->nblocks];
		bool		isnull;
		Datum		leaves;

		if (!block_from_spi(tup, desc, stored))
		{
			add_problem(&v->problems, "malformed_block", stored->h.height, NULL, -1,
						"a block of \"%s\" has a NULL or wrongly sized %s",
						stored->h.origin, stored->malformed);
			continue;
		}
		leaves = SPI_getbinval(tup, desc, BLOCK_NCOLUMNS + 1, &isnull);
		if (isnull)
		{
			add_problem(&v->problems, "malformed_block", stored->h.height, NULL, -1,
						"a block of \"%s\" has no leaves", stored->h.origin);
			continue;
		}
		b->h = stored->h;
		memcpy(b->stored_hash, stored->block_hash, LEDGER_HASH_LEN);
		memcpy(b->signature, stored->signature, LEDGER_SIG_LEN);
		memcpy(b->frontier, stored->frontier, stored->frontier_count * LEDGER_HASH_LEN);
		b->frontier_count = stored->frontier_count;
		b->packed = leaves;
		b->own = origin_is_own(v, b->h.origin);
		v->nblocks++;
	}
	pfree(stored);
}

/*
 * A block's leaves, stored out of line uncompressed (the column's storage
 * is EXTERNAL), as detoast_attr() reads them (detoast.c's
 * toast_fetch_datum()), but into memory mapped at once (prefault()): a
 * million leaves are 44 MB, which would otherwise fault in a page at a time
 * as the chunks are copied in.  Other values are detoasted as usual.
 */
static bytea *
read_leaves(Datum value)
{
	struct varlena *attr = (struct varlena *) DatumGetPointer(value);
	struct varatt_external pointer;
	struct varlena *result;
	Relation	toastrel;
	int32		size;

	if (!VARATT_IS_EXTERNAL_ONDISK(attr))
		return DatumGetByteaPP(value);
	VARATT_EXTERNAL_GET_POINTER(pointer, attr);
	size = VARATT_EXTERNAL_GET_EXTSIZE(pointer);
	if (VARATT_EXTERNAL_IS_COMPRESSED(pointer))
		return DatumGetByteaPP(value);
	result = palloc_extended(size + VARHDRSZ, MCXT_ALLOC_HUGE);
	prefault(result, size + VARHDRSZ);
	SET_VARSIZE(result, size + VARHDRSZ);
	toastrel = table_open(pointer.va_toastrelid, AccessShareLock);
	table_relation_fetch_toast_slice(toastrel, pointer.va_valueid, size, 0, size, result);
	table_close(toastrel, AccessShareLock);
	return result;
}

/*
 * Reads the blocks' leaves (most of the time of load_blocks(), whose
 * tuples hold them, out of line; the row pass's workers may already be
 * running meanwhile).
 */
static void
load_leaves(Verifier *v)
{
	int			i;

	for (i = 0; i < v->nblocks; i++)
	{
		VBlock	   *b = &v->blocks[i];
		bytea	   *packed = read_leaves(b->packed);

		CHECK_FOR_INTERRUPTS();
		b->leaves = (const uint8 *) VARDATA_ANY(packed);
		b->nleaves = VARSIZE_ANY_EXHDR(packed) / LEDGER_LEAF_SIZE;
		if (VARSIZE_ANY_EXHDR(packed) % LEDGER_LEAF_SIZE != 0)
			add_problem(&v->problems, "malformed_block", b->h.height, NULL, -1,
						"the leaves of this block are not a whole number of %d-byte entries",
						LEDGER_LEAF_SIZE);
	}
}

/*
 * The stored leaves against the block's root, leaves_hash and range; the
 * costly part of the chain checks, so it may run ahead, while parallel
 * workers check rows (prepass_tables()).
 */
static void
check_leaves(VBlock *b)
{
	LcBlockHeader h;

	if (b->leaves_checked)
		return;
	CHECK_FOR_INTERRUPTS();
	block_to_core(&b->h, &h);
	b->leaves_result = lc_leaves_problems(&h, b->leaves, b->nleaves * LEDGER_LEAF_SIZE,
										  &b->leaves_bad_seq);
	b->leaves_checked = true;
}

/* Header hash, signature, key, and the stored leaves against the root (src/core's rules). */
static void
check_block_contents(Verifier *v, VBlock *b)
{
	LcBlockHeader h;
	bool		failed;
	const char *problem;
	int			leaves;
	int64		bad_seq;

	block_to_core(&b->h, &h);
	problem = lc_block_problem(&h, b->stored_hash, b->signature, &failed);
	if (failed)
		core_failed(lc_error);
	if (problem != NULL && strstr(problem, "hash") != NULL)
		add_problem(&v->problems, "block_hash_mismatch", b->h.height, NULL, -1,
					"the block's fields no longer hash to its block_hash");
	/* the signature is of the stored hash, whatever the fields hash to */
	if (!lc_signature_ok(b->stored_hash, LEDGER_HASH_LEN, b->signature, b->h.public_key))
		add_problem(&v->problems, "bad_signature", b->h.height, NULL, -1,
					"the signature does not verify against the block's public key");
	if (!key_trusted(v, b->h.origin, b->h.public_key))
		add_problem(&v->problems, "untrusted_key", b->h.height, NULL, -1,
					"the block is signed with a key that is not a key of node \"%s\"",
					b->h.origin);

	check_leaves(b);
	leaves = b->leaves_result;
	bad_seq = b->leaves_bad_seq;
	if (leaves & LC_LEAVES_FAILED)
		core_failed(lc_error);
	if (leaves & LC_LEAVES_COUNT)
		add_problem(&v->problems, "row_count_mismatch", b->h.height, NULL, -1,
					"the block holds %zu leaves but its header says " INT64_FORMAT " rows",
					b->nleaves, b->h.row_count);
	if (leaves & LC_LEAVES_ROOT)
		add_problem(&v->problems, "root_mismatch", b->h.height, NULL, -1,
					"the block's stored leaves do not hash to its Merkle root");
	if (leaves & LC_LEAVES_HASH)
		add_problem(&v->problems, "leaves_mismatch", b->h.height, NULL, -1,
					"the block's stored leaves (with their ledger_seq and table labels) do not hash to its leaves_hash");
	if (leaves & LC_LEAVES_ORDER)
		add_problem(&v->problems, "leaf_out_of_order", b->h.height, NULL, bad_seq,
					"leaves must be in increasing ledger_seq order within " INT64_FORMAT ".." INT64_FORMAT,
					b->h.first_seq, b->h.last_seq);
}

/*
 * Whether the first block of a chain takes over from another chain of this
 * node: it links to that chain's block whose range it continues.
 */
static bool
handover_ok(Verifier *v, const VBlock *first)
{
	int			i;
	static const uint8 zero[LEDGER_HASH_LEN];

	if (memcmp(first->h.prev_hash, zero, LEDGER_HASH_LEN) == 0)
		return false;
	for (i = 0; i < v->nblocks; i++)
	{
		const VBlock *b = &v->blocks[i];

		if (b->own && strcmp(b->h.origin, first->h.origin) != 0 &&
			memcmp(b->stored_hash, first->h.prev_hash, LEDGER_HASH_LEN) == 0 &&
			b->h.last_seq + 1 == first->h.first_seq)
			return true;
	}
	return false;
}

/* Walks each origin's chain: heights, links and sequence ranges (src/core's chain rule). */
static void
check_chains(Verifier *v)
{
	int			i;
	const char *origin = NULL;
	bool		linked = true;
	LcChain		chain;
	LcBlockHeader h;

	lc_chain_init(&chain);
	for (i = 0; i < v->nblocks; i++)
	{
		VBlock	   *b = &v->blocks[i];
		int64		expected;

		if (origin == NULL || strcmp(origin, b->h.origin) != 0)
		{
			origin = b->h.origin;
			lc_chain_init(&chain);
			linked = true;
		}
		CHECK_FOR_INTERRUPTS();

		expected = chain.height + 1;
		if (b->h.height > expected)
		{
			if (b->h.height - 1 == expected)
				add_problem(&v->problems, "missing_block", expected, NULL, -1,
							"block " INT64_FORMAT " of \"%s\" is missing",
							expected, origin);
			else
				add_problem(&v->problems, "missing_block", expected, NULL, -1,
							"blocks " INT64_FORMAT " to " INT64_FORMAT " of \"%s\" are missing",
							expected, b->h.height - 1, origin);
			if (b->own)
				v->gaps_explained = true;
			linked = false;
		}
		block_to_core(&b->h, &h);
		if (linked)
		{
			int			links;

			if (b->h.height == 1 && b->own && handover_ok(v, b))
			{
				/* this chain continues another of this node's chains: its links hold */
				memcpy(chain.prev_hash, b->h.prev_hash, LEDGER_HASH_LEN);
				chain.prev_last_seq = b->h.first_seq - 1;
			}
			links = lc_chain_link_problems(&chain, &h);
			if (links & LC_LINK_FAILED)
				core_failed(lc_error);
			if (links & LC_LINK_HISTORY)
				add_problem(&v->problems, "history_mismatch", b->h.height, NULL, -1,
							"history_root is not the tree hash of the blocks before it");
			if (links & LC_LINK_PREV_HASH)
				add_problem(&v->problems, "broken_link", b->h.height, NULL, -1,
							"prev_hash does not match the hash of block " INT64_FORMAT,
							b->h.height - 1);
			if (links & LC_LINK_RANGE)
				add_problem(&v->problems, "sequence_gap", b->h.height, NULL, -1,
							"the block starts at ledger_seq " INT64_FORMAT " but the previous one ended at " INT64_FORMAT,
							b->h.first_seq, chain.prev_last_seq);
		}
		if (b->h.last_seq < b->h.first_seq)
			add_problem(&v->problems, "malformed_block", b->h.height, NULL, -1,
						"the block's range " INT64_FORMAT ".." INT64_FORMAT " is empty",
						b->h.first_seq, b->h.last_seq);

		check_block_contents(v, b);

		if (b->own && b->h.last_seq > v->horizon)
			v->horizon = b->h.last_seq;
		if (linked)
		{
			if (!lc_chain_append(&chain, &h, b->stored_hash))
				core_failed(lc_error);
			if (chain.frontier_count != b->frontier_count ||
				memcmp(chain.frontier, b->frontier, chain.frontier_count * LEDGER_HASH_LEN) != 0)
				add_problem(&v->problems, "malformed_block", b->h.height, NULL, -1,
							"history_frontier does not match the chain up to this block");
		}
		else
		{
			/* after a gap the history cannot be recomputed: resume from here */
			memcpy(chain.frontier, b->frontier, b->frontier_count * LEDGER_HASH_LEN);
			chain.frontier_count = b->frontier_count;
			chain.height = b->h.height;
			memcpy(chain.prev_hash, b->stored_hash, LEDGER_HASH_LEN);
			chain.prev_last_seq = b->h.last_seq;
		}
		linked = true;
	}
}

static int
vleaf_cmp(const void *a, const void *b)
{
	int64		x = ((const VLeaf *) a)->seq;
	int64		y = ((const VLeaf *) b)->seq;

	return (x > y) - (x < y);
}

/*
 * The tables verify() checks the rows of: every one, or those of the table
 * it was given (a partitioned table's partitions), by table_id in order.
 */
typedef struct TableSet
{
	bool		all;
	int32	   *ids;
	int			n;
} TableSet;

static bool
table_wanted(int32 table_id, const TableSet *only)
{
	int			lo = 0;
	int			hi;

	if (only->all)
		return true;
	hi = only->n - 1;
	while (lo <= hi)
	{
		int			mid = lo + (hi - lo) / 2;

		if (only->ids[mid] == table_id)
			return true;
		if (only->ids[mid] < table_id)
			lo = mid + 1;
		else
			hi = mid - 1;
	}
	return false;
}

/*
 * Indexes the own chain's leaves by ledger_seq, and finds the sealed
 * horizon (as check_chains() does, which comes later).
 */
static void
index_leaves(Verifier *v, const TableSet *only)
{
	size_t		total = 0;
	int			i;
	size_t		j;

	for (i = 0; i < v->nblocks; i++)
		if (v->blocks[i].own)
			total += v->blocks[i].nleaves;
	v->leaves = palloc_extended(Max(total, 1) * sizeof(VLeaf), MCXT_ALLOC_HUGE);
	prefault(v->leaves, Max(total, 1) * sizeof(VLeaf));

	for (i = 0; i < v->nblocks; i++)
	{
		VBlock	   *b = &v->blocks[i];

		if (!b->own)
			continue;
		for (j = 0; j < b->nleaves; j++)
		{
			const uint8 *p = b->leaves + j * LEDGER_LEAF_SIZE;
			int32		table_id = (int32) get_u32(p + 8);
			VLeaf	   *l;

			if (!table_wanted(table_id, only))
				continue;
			l = &v->leaves[v->nleaves++];
			l->seq = (int64) get_u64(p);
			l->table_id = table_id;
			l->block = i;
			l->hash = p + 12;
			l->seen = false;
		}
	}
	/* blocks come in height order, so the leaves are usually sorted already */
	for (j = 1; j < v->nleaves; j++)
		if (v->leaves[j].seq <= v->leaves[j - 1].seq)
			break;
	if (j < v->nleaves)
		qsort(v->leaves, v->nleaves, sizeof(VLeaf), vleaf_cmp);
	for (j = 1; j < v->nleaves; j++)
		if (v->leaves[j].seq == v->leaves[j - 1].seq)
			v->duplicate_leaves = true;
	for (i = 0; i < v->nblocks; i++)
		if (v->blocks[i].own && v->blocks[i].h.last_seq > v->horizon)
			v->horizon = v->blocks[i].h.last_seq;
}

static void
report_duplicate_leaves(Verifier *v)
{
	size_t		j;

	for (j = 1; j < v->nleaves; j++)
		if (v->leaves[j].seq == v->leaves[j - 1].seq)
			add_problem(&v->problems, "duplicate_leaf",
						v->blocks[v->leaves[j].block].h.height, NULL, v->leaves[j].seq,
						"two sealed leaves carry the same ledger_seq");
}

static VLeaf *
find_leaf(Verifier *v, int64 seq)
{
	int64		at = lc_find_seq(v->leaves, v->nleaves, sizeof(VLeaf), seq);

	return at < 0 ? NULL : &v->leaves[at];
}

/* The own block whose range holds seq, or NULL. */
static VBlock *
block_covering(Verifier *v, int64 seq)
{
	int			i;

	for (i = 0; i < v->nblocks; i++)
	{
		VBlock	   *b = &v->blocks[i];

		if (b->own && seq >= b->h.first_seq && seq <= b->h.last_seq)
			return b;
	}
	return NULL;
}

static void
add_candidate(Verifier *v, const LedgerTable *t, const char *tname, VLeaf *leaf,
			  int64 seq, StringInfo encoding)
{
	Candidate  *c;

	if (v->ncandidates >= MAX_SWAP_CANDIDATES)
	{
		add_problem(&v->problems, "row_modified", v->blocks[leaf->block].h.height,
					tname, seq, "the row's content no longer matches its sealed hash");
		return;
	}
	c = &v->candidates[v->ncandidates++];
	c->seq = seq;
	c->table_id = t->table_id;
	c->leaf = leaf;
	c->encoding = MemoryContextAlloc(v->cxt, encoding->len);
	memcpy(c->encoding, encoding->data, encoding->len);
	c->len = encoding->len;
	c->resolved = false;
}

/* Hash of an encoded row as if it carried another ledger_seq. */
static void
hash_with_seq(const Candidate *c, int64 seq, uint8 *out)
{
	char	   *copy = palloc(c->len);

	memcpy(copy, c->encoding, c->len);
	lc_store_u64((uint8 *) copy + ROW_ENCODING_SEQ_OFFSET, (uint64) seq);
	ledger_leaf_hash(copy, c->len, out);
	pfree(copy);
}

/* Rows whose contents exchanged places are named as such. */
static void
report_candidates(Verifier *v)
{
	int			i;
	int			j;

	for (i = 0; i < v->ncandidates; i++)
	{
		Candidate  *a = &v->candidates[i];

		for (j = i + 1; j < v->ncandidates && !a->resolved; j++)
		{
			Candidate  *b = &v->candidates[j];
			uint8		ab[LEDGER_HASH_LEN];
			uint8		ba[LEDGER_HASH_LEN];

			if (b->resolved || b->table_id != a->table_id)
				continue;
			hash_with_seq(a, b->seq, ab);
			hash_with_seq(b, a->seq, ba);
			if (memcmp(ab, b->leaf->hash, LEDGER_HASH_LEN) == 0 &&
				memcmp(ba, a->leaf->hash, LEDGER_HASH_LEN) == 0)
			{
				add_problem(&v->problems, "rows_swapped", v->blocks[a->leaf->block].h.height,
							table_name_by_id(v, a->table_id), a->seq,
							"the rows sealed as ledger_seq " INT64_FORMAT " and " INT64_FORMAT " have exchanged places",
							a->seq, b->seq);
				a->resolved = b->resolved = true;
			}
		}
	}
	for (i = 0; i < v->ncandidates; i++)
	{
		Candidate  *a = &v->candidates[i];

		if (!a->resolved)
			add_problem(&v->problems, "row_modified", v->blocks[a->leaf->block].h.height,
						table_name_by_id(v, a->table_id), a->seq,
						"the row's content no longer matches its sealed hash");
	}
}

/*
 * Compares one recomputed leaf (of a row version, or of the end of one)
 * with the sealed leaf at seq, or with the hash stored when it was written
 * while it is not sealed yet.  what names it in messages; *next is where
 * the next leaf is looked for first (lc_find_seq_near()).
 */
static void
check_leaf(Verifier *v, const LedgerTable *t, const char *tname, int64 seq,
		   const uint8 *computed, const uint8 *stored, StringInfo encoding,
		   const char *what, size_t *next)
{
	int64		at = lc_find_seq_near(v->leaves, v->nleaves, sizeof(VLeaf), seq, next);
	VLeaf	   *leaf = at < 0 ? NULL : &v->leaves[at];

	if (leaf != NULL)
	{
		int64		height = v->blocks[leaf->block].h.height;

		if (leaf->seen)
			add_problem(&v->problems, "duplicate_row", height, tname, seq,
						"more than one %s carries this sealed ledger_seq", what);
		leaf->seen = true;
		if (leaf->table_id != t->table_id)
			add_problem(&v->problems, "wrong_table", height, tname, seq,
						"the %s was sealed as one of %s", what,
						table_name_by_id(v, leaf->table_id));
		else if (memcmp(computed, leaf->hash, LEDGER_HASH_LEN) != 0)
		{
			if (encoding != NULL)
				add_candidate(v, t, tname, leaf, seq, encoding);
			else
				add_problem(&v->problems, "row_modified", height, tname, seq,
							"the %s no longer matches its sealed hash", what);
		}
		else if (stored == NULL || memcmp(stored, leaf->hash, LEDGER_HASH_LEN) != 0)
			add_problem(&v->problems, "ledger_hash_modified", height, tname, seq,
						"the %s is intact but its stored hash was changed", what);
	}
	else if (seq <= v->horizon)
	{
		VBlock	   *b = block_covering(v, seq);

		if (b != NULL)
			add_problem(&v->problems, "unexpected_row", b->h.height, tname, seq,
						"the %s lies in the block's sealed range but the block does not hold it", what);
		else if (!v->gaps_explained)
			add_problem(&v->problems, "unexpected_row", 0, tname, seq,
						"the %s lies below the sealed horizon but no block covers it", what);
	}
	else if (stored == NULL)
		add_problem(&v->problems, "missing_hash", 0, tname, seq,
					"the unsealed %s has no valid stored hash", what);
	else if (memcmp(computed, stored, LEDGER_HASH_LEN) != 0)
		add_problem(&v->problems, "row_hash_mismatch", 0, tname, seq,
					"the unsealed %s no longer matches the hash taken when it was written", what);
}

/*
 * The result of a relation's pre-pass, if it had one, every row was clean,
 * and it still holds: no leaf its rows claimed has been met since by a row
 * of another table, and for a history table, its table's own pre-pass was
 * taken.  Then it is what the serial pass would find: no problem, these
 * rows, these leaves seen.  With two sealed leaves for one ledger_seq,
 * which one a row meets is the serial pass's to say: no pre-pass then.
 */
static bool
take_prepass(Verifier *v, const LedgerTable *t, Oid relid, bool history)
{
	PrePass    *pp = NULL;
	PrePass    *main = NULL;
	ListCell   *lc;
	size_t		i;
	size_t		k;

	foreach(lc, v->prepasses)
	{
		PrePass    *each = lfirst(lc);

		if (each->relid == relid)
			pp = each;
		if (history && each->relid == t->relid)
			main = each;
	}
	if (pp == NULL || !pp->clean || (history && (main == NULL || !main->applied)))
		return false;
	for (i = 0, k = 0; i < v->nleaves; i++)
		if (v->leaves[i].table_id == pp->table_id)
		{
			if (pp->claimed[k] && v->leaves[i].seen && !(history && main->claimed[k]))
				return false;
			k++;
		}
	for (i = 0, k = 0; i < v->nleaves; i++)
		if (v->leaves[i].table_id == pp->table_id)
			v->leaves[i].seen |= pp->claimed[k++];
	v->rows_checked += pp->rows;
	pp->applied = true;
	return true;
}

/*
 * The children of relid (detach-pending partitions too) as the snapshot
 * the registry was read with sees them: a partition added since is not a
 * stranger.
 */
static List *
children_seen(Oid relid)
{
	Relation	inhrel = table_open(InheritsRelationId, AccessShareLock);
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tup;
	List	   *children = NIL;

	ScanKeyInit(&key, Anum_pg_inherits_inhparent, BTEqualStrategyNumber, F_OIDEQ, ObjectIdGetDatum(relid));
	scan = systable_beginscan(inhrel, InheritsParentIndexId, true, GetActiveSnapshot(), 1, &key);
	while (HeapTupleIsValid(tup = systable_getnext(scan)))
		children = lappend_oid(children, ((Form_pg_inherits) GETSTRUCT(tup))->inhrelid);
	systable_endscan(scan);
	table_close(inhrel, AccessShareLock);
	return children;
}

/*
 * The children of relid, t's table or history table: none but, for a
 * partitioned ledger table, its registered partitions (registry is needed
 * for those only).  Another shows its rows in the table's queries without
 * being in the ledger.  The schema guard refuses such a child, and
 * registers a partition; this finds one made behind its back (a catalog
 * edit, a restore, a partition made with the guard's event trigger off,
 * whose rows a later partition command would register and number as new).
 */
static void
check_children(Verifier *v, List *registry, const LedgerTable *t, Oid relid)
{
	ListCell   *lc;

	foreach(lc, children_seen(relid))
	{
		Oid			child = lfirst_oid(lc);

		if (t->partitioned && ledger_is_partition_of(registry, child, t))
			continue;
		add_problem(&v->problems, "inheriting_table", 0, relation_qualified_name(relid), -1,
					t->partitioned
					? "table %s is its partition but not in the ledger: its rows show in the table's queries without being in the ledger"
					: "table %s inherits from it: its rows show in the table's queries without being in the ledger",
					get_rel_name(child) ? relation_qualified_name(child) : "?");
	}
}

/* check_children() of each partitioned ledger table verified. */
static void
check_partitions(Verifier *v, List *registry, const TableSet *only, Oid given)
{
	ListCell   *lc;

	foreach(lc, registry)
	{
		LedgerTable *t = lfirst(lc);

		if (t->partitioned && !t->retired && get_rel_name(t->relid) != NULL &&
			(t->relid == given || table_wanted(t->table_id, only)))
			check_children(v, registry, t, t->relid);
	}
}

/*
 * Re-hashes every row of one table and compares it with the ledger.  For a
 * history table (history = true) each row is an earlier version, checked
 * like a row, and the end of that version, checked as a leaf of its own.
 */
static void
check_relation(Verifier *v, const LedgerTable *t, Oid relid, bool history)
{
	Relation	rel = try_relation_open(relid, AccessShareLock);
	RowEncoder *enc;
	AttrNumber	seq_att;
	AttrNumber	hash_att;
	HistoryEndColumns hc = {0};
	bool		ends_ok = true;
	TableScanDesc scan;
	TupleTableSlot *slot;
	MemoryContext rowcxt;
	MemoryContext oldcxt;
	StringInfoData buf;
	const char *tname;
	size_t		next = 0;		/* where the next leaves are likely to be */
	size_t		end_next = 0;

	if (rel == NULL)
	{
		add_problem(&v->problems, "missing_table", 0, psprintf("oid %u", relid), -1,
					"%s table of ledger id %d no longer exists",
					history ? "the history" : "the protected", t->table_id);
		return;
	}
	tname = quote_qualified_identifier(get_namespace_name(RelationGetNamespace(rel)),
									   RelationGetRelationName(rel));
	enc = row_encoder_create(RelationGetDescr(rel), CurrentMemoryContext);
	seq_att = row_encoder_seq_attnum(enc);
	hash_att = row_encoder_hash_attnum(enc);
	if (history)
		ends_ok = history_end_columns(rel, &hc);
	if (seq_att == InvalidAttrNumber || hash_att == InvalidAttrNumber || !ends_ok)
	{
		add_problem(&v->problems, "missing_column", 0, tname, -1,
					"the table has lost one of its ledger columns");
		relation_close(rel, AccessShareLock);
		return;
	}

	check_children(v, NIL, t, relid);
	if (take_prepass(v, t, relid, history))
	{
		relation_close(rel, AccessShareLock);
		return;
	}

	initStringInfo(&buf);
	rowcxt = AllocSetContextCreate(CurrentMemoryContext, "ehrledger verify row",
								   ALLOCSET_DEFAULT_SIZES);
	scan = table_beginscan(rel, GetActiveSnapshot(), 0, NULL);
	slot = table_slot_create(rel, NULL);

	while (table_scan_getnextslot(scan, ForwardScanDirection, slot))
	{
		Datum	   *values;
		bool	   *isnull;
		int64		seq;
		uint8		computed[LEDGER_HASH_LEN];

		CHECK_FOR_INTERRUPTS();
		v->rows_checked++;
		slot_getallattrs(slot);
		values = slot->tts_values;
		isnull = slot->tts_isnull;
		if (isnull[seq_att - 1])
		{
			add_problem(&v->problems, "missing_seq", 0, tname, -1,
						"a row at %s has no ledger_seq",
						DatumGetCString(DirectFunctionCall1(tidout,
															PointerGetDatum(&slot->tts_tid))));
			continue;
		}
		seq = DatumGetInt64(values[seq_att - 1]);

		oldcxt = MemoryContextSwitchTo(rowcxt);
		row_version_leaf(enc, &buf, t->table_id, seq, values, isnull, computed);
		check_leaf(v, t, tname, seq, computed, row_stored_hash(values, isnull, hash_att), &buf,
				   history ? "earlier version" : "row", &next);

		if (history)
		{
			int64		end_seq;

			if (isnull[hc.end_seq - 1] || isnull[hc.op - 1] || isnull[hc.end_at - 1] ||
				isnull[hc.end_by - 1])
				add_problem(&v->problems, "missing_column", 0, tname, seq,
							"the end of this version has lost a field");
			else
			{
				end_seq = DatumGetInt64(values[hc.end_seq - 1]);
				row_end_leaf(&buf, t->table_id, end_seq, seq, &hc, values, isnull, computed);
				check_leaf(v, t, tname, end_seq, computed,
						   row_stored_hash(values, isnull, hc.end_hash), NULL,
						   "end of a version", &end_next);
			}
		}
		MemoryContextSwitchTo(oldcxt);
		MemoryContextReset(rowcxt);
	}

	ExecDropSingleTupleTableSlot(slot);
	table_endscan(scan);
	MemoryContextDelete(rowcxt);
	pfree(buf.data);
	relation_close(rel, AccessShareLock);
}

/*
 * Encoding a table's rows calls their types' send functions, which may be
 * user code: that runs as the table's owner in a security-restricted
 * operation, as in amcheck and VACUUM, never with the ledger owner's
 * rights.  Parallel workers take over this user and context.
 */
static void
as_table_owner(const LedgerTable *t, UserSwitch *sw)
{
	HeapTuple	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(t->relid));
	Oid			owner = GetUserId();

	if (HeapTupleIsValid(tup))
	{
		owner = ((Form_pg_class) GETSTRUCT(tup))->relowner;
		ReleaseSysCache(tup);
	}
	user_switch_restricted(owner, sw);
}

/* A protected table, and for a versioned one its history. */
static void
check_table(Verifier *v, const LedgerTable *t)
{
	UserSwitch	sw;

	as_table_owner(t, &sw);
	check_relation(v, t, t->relid, false);
	if (OidIsValid(t->history_relid))
		check_relation(v, t, t->history_relid, true);
	user_switch_end(&sw);
}

/*
 * A relation's parallel pass whose workers were launched before the leaves
 * were read (prepass_start()): verify()'s first table.
 */
typedef struct EarlyPass
{
	const LedgerTable *t;
	Relation	rel;
	int			nworkers;
	RowPass    *p;
} EarlyPass;

/*
 * Whether rel's rows can be checked by a parallel pass, and with how many
 * workers: it is large enough and workers are allowed, and it has its
 * ledger columns (else the serial pass reports what is missing).
 */
static bool
pass_wanted(Verifier *v, Relation rel, bool history, int *nworkers)
{
	RowEncoder *enc = row_encoder_create(RelationGetDescr(rel), CurrentMemoryContext);
	HistoryEndColumns hc;

	*nworkers = row_pass_workers(rel, v->max_workers);
	return *nworkers > 0 &&
		row_encoder_seq_attnum(enc) != InvalidAttrNumber &&
		row_encoder_hash_attnum(enc) != InvalidAttrNumber &&
		(!history || history_end_columns(rel, &hc));
}

/*
 * Launches the workers of the first table's row pass before the leaves are
 * read, as its owner (as_table_owner()); they compute meanwhile and
 * compare once prepass_relation() publishes the leaves.  NULL when that
 * table gets no parallel pass.
 */
static EarlyPass *
prepass_start(Verifier *v, const TableSet *only)
{
	ListCell   *lc;

	foreach(lc, v->tables)
	{
		LedgerTable *t = lfirst(lc);
		UserSwitch	sw;
		EarlyPass  *e = NULL;
		Relation	rel;
		int			nworkers;

		if (!table_wanted(t->table_id, only) || t->retired)
			continue;
		as_table_owner(t, &sw);
		rel = try_relation_open(t->relid, AccessShareLock);
		if (rel != NULL && pass_wanted(v, rel, false, &nworkers))
		{
			e = palloc(sizeof(EarlyPass));
			e->t = t;
			e->rel = rel;
			e->nworkers = nworkers;
			e->p = row_pass_begin(rel, nworkers, t->table_id, false);
			row_pass_launch(e->p);
		}
		else if (rel != NULL)
			relation_close(rel, AccessShareLock);
		user_switch_end(&sw);
		return e;
	}
	return NULL;
}

/*
 * Checks a relation's rows ahead with parallel workers (verify_parallel.c)
 * when it is large enough and workers are allowed, and meanwhile, in the
 * leader, the blocks' leaves.  For a history table, main is its table's
 * pre-pass, whose claimed leaves it starts from.  early is the relation's
 * pass already launched, if any.  NULL when the relation is left to the
 * serial pass (which also reports what is missing from it).
 */
static PrePass *
prepass_relation(Verifier *v, const LedgerTable *t, Oid relid, bool history,
				 const PrePass *main, EarlyPass *early)
{
	Relation	rel;
	int			nworkers;
	size_t		n = 0;
	size_t		i;
	size_t		k;
	RowPass    *p = NULL;
	PrePass    *pp;
	bool		given;

	if (early != NULL)
	{
		rel = early->rel;
		nworkers = early->nworkers;
		p = early->p;
	}
	else
	{
		rel = try_relation_open(relid, AccessShareLock);
		if (rel == NULL)
			return NULL;
		if (v->duplicate_leaves || !pass_wanted(v, rel, history, &nworkers))
		{
			relation_close(rel, AccessShareLock);
			return NULL;
		}
	}
	for (i = 0; i < v->nleaves; i++)
		if (v->leaves[i].table_id == t->table_id)
			n++;
	if (p == NULL)
		p = row_pass_begin(rel, nworkers, t->table_id, history);
	given = !v->duplicate_leaves && row_pass_leaves(p, n, v->horizon);
	if (!given && early == NULL)
	{
		row_pass_end(p);
		relation_close(rel, AccessShareLock);
		return NULL;
	}
	if (given)
	{
		for (i = 0, k = 0; i < v->nleaves; i++)
			if (v->leaves[i].table_id == t->table_id)
			{
				row_pass_leaf(p, k, v->leaves[i].seq, v->leaves[i].hash,
							  main != NULL && main->claimed[k]);
				k++;
			}
		row_pass_publish(p);
	}
	else
		row_pass_abandon(p);	/* the workers are running: they stop */
	if (early == NULL)
		row_pass_launch(p);
	for (i = 0; i < (size_t) v->nblocks; i++)
		check_leaves(&v->blocks[i]);

	pp = palloc0(sizeof(PrePass));
	pp->relid = relid;
	pp->table_id = t->table_id;
	pp->clean = row_pass_finish(p, &pp->rows);
	elog(DEBUG1, "ehrledger: verify of %s: %d parallel workers planned, %d launched; %s",
		 RelationGetRelationName(rel), nworkers, row_pass_launched(p),
		 !given ? "its leaves could not be handed over, the table is checked serially" :
		 pp->clean ? "every row clean" : "a row is not clean, the table is checked serially");
	if (pp->clean)
	{
		pp->claimed = palloc(Max(n, 1));
		pp->nclaimed = n;
		for (k = 0; k < n; k++)
			pp->claimed[k] = row_pass_claimed(p, k);
	}
	row_pass_end(p);
	relation_close(rel, AccessShareLock);
	v->prepasses = lappend(v->prepasses, pp);
	return pp;
}

/*
 * Before the chain checks, parallel workers check the rows of every large
 * table verify() is to check, as its owner; the problems, if any, are
 * found and reported afterwards, in order, by the serial pass.
 */
static void
prepass_tables(Verifier *v, const TableSet *only, EarlyPass *early)
{
	ListCell   *lc;

	foreach(lc, v->tables)
	{
		LedgerTable *t = lfirst(lc);
		UserSwitch	sw;
		PrePass    *main;

		if (!table_wanted(t->table_id, only) || t->retired)
			continue;
		as_table_owner(t, &sw);
		main = prepass_relation(v, t, t->relid, false, NULL,
								early != NULL && early->t == t ? early : NULL);
		if (main != NULL && main->clean && OidIsValid(t->history_relid))
			prepass_relation(v, t, t->history_relid, true, main, NULL);
		user_switch_end(&sw);
	}
}

/*
 * The rows ehrledger._learn_from_peers() found lost when it took their
 * blocks back from the peers after a restore, and did not bring back.
 * Only that table counts: the extension alone writes it.
 */
static void
load_lost_rows(Verifier *v)
{
	uint64		i;

	if (!OidIsValid(get_relname_relid("lost_row", ledger_namespace())))
		return;
	if (SPI_execute("SELECT ledger_seq, height, block_hash, origin, started_at::pg_catalog.text"
					" FROM ehrledger.lost_row WHERE restored_at IS NULL ORDER BY ledger_seq",
					true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read ehrledger.lost_row");
	v->lost = palloc_extended(Max(SPI_processed, 1) * sizeof(VLost), MCXT_ALLOC_HUGE);
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		VLost	   *l = &v->lost[v->nlost];
		bool		isnull;
		bytea	   *hash;

		l->seq = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
		l->height = DatumGetInt64(SPI_getbinval(tup, desc, 2, &isnull));
		hash = DatumGetByteaPP(SPI_getbinval(tup, desc, 3, &isnull));
		if (VARSIZE_ANY_EXHDR(hash) != LEDGER_HASH_LEN)
			continue;
		memcpy(l->block_hash, VARDATA_ANY(hash), LEDGER_HASH_LEN);
		l->origin = SPI_getvalue(tup, desc, 4);
		l->started_at = SPI_getvalue(tup, desc, 5);
		v->nlost++;
	}
}

/*
 * The rejoin that found this leaf's row lost, if one did: a record for
 * this ledger_seq naming this very block (origin, height and hash).
 */
static const VLost *
lost_in_restore(Verifier *v, const VLeaf *leaf)
{
	const VBlock *b = &v->blocks[leaf->block];
	int64		at = lc_find_seq(v->lost, v->nlost, sizeof(VLost), leaf->seq);
	size_t		i;

	if (at < 0)
		return NULL;
	while (at > 0 && v->lost[at - 1].seq == leaf->seq)
		at--;
	for (i = at; i < v->nlost && v->lost[i].seq == leaf->seq; i++)
		if (v->lost[i].height == b->h.height &&
			strcmp(v->lost[i].origin, b->h.origin) == 0 &&
			memcmp(v->lost[i].block_hash, b->stored_hash, LEDGER_HASH_LEN) == 0)
			return &v->lost[i];
	return NULL;
}

/*
 * The sealed leaf at seq in this node's own chain: its block (NULL when no
 * block covers seq) and whether it is this leaf of table_id (lc_sealed_leaf).
 */
static int
own_sealed_leaf(Verifier *v, int64 seq, int32 table_id, const uint8 *leaf, VBlock **block)
{
	int64		at;

	*block = block_covering(v, seq);
	if (*block == NULL)
		return LC_LEAF_ABSENT;
	return lc_sealed_leaf((*block)->leaves, (*block)->nleaves, seq, (uint32) table_id, leaf, &at);
}

static int
verasure_cmp(const void *a, const void *b)
{
	const VErasure *x = a;
	const VErasure *y = b;

	if (x->erased_seq != y->erased_seq)
		return (x->erased_seq > y->erased_seq) - (x->erased_seq < y->erased_seq);
	return (x->seq > y->seq) - (x->seq < y->seq);
}

/*
 * Every erasure record, each recomputed: intact when it is the leaf sealed
 * at its number, or, while not sealed yet, when it matches its stored hash.
 */
static void
load_erasures(Verifier *v)
{
	Oid			relid = get_relname_relid("erasure", ledger_namespace());
	Relation	rel;
	RowEncoder *enc;
	AttrNumber	atts[4];
	const char *const names[4] = {"table_id", "erased_seq", "leaf_hash", "erased_at"};
	AttrNumber	seq_att;
	AttrNumber	hash_att;
	TableScanDesc scan;
	TupleTableSlot *slot;
	StringInfoData buf;
	size_t		capacity = 64;
	int			i;

	if (!OidIsValid(relid))
		return;
	rel = relation_open(relid, AccessShareLock);
	enc = row_encoder_create(RelationGetDescr(rel), CurrentMemoryContext);
	seq_att = row_encoder_seq_attnum(enc);
	hash_att = row_encoder_hash_attnum(enc);
	for (i = 0; i < 4; i++)
		atts[i] = attnameAttNum(rel, names[i], false);
	v->erasures = palloc(sizeof(VErasure) * capacity);
	initStringInfo(&buf);
	scan = table_beginscan(rel, GetActiveSnapshot(), 0, NULL);
	slot = table_slot_create(rel, NULL);
	while (table_scan_getnextslot(scan, ForwardScanDirection, slot))
	{
		VErasure   *e;
		bytea	   *leaf;
		uint8		computed[LEDGER_HASH_LEN];
		VBlock	   *b;
		const uint8 *stored;

		CHECK_FOR_INTERRUPTS();
		slot_getallattrs(slot);
		if (seq_att == InvalidAttrNumber || slot->tts_isnull[seq_att - 1])
			continue;			/* verify() of the table reports it */
		for (i = 0; i < 4; i++)
			if (atts[i] <= 0 || slot->tts_isnull[atts[i] - 1])
				break;
		if (i < 4)
			continue;
		leaf = DatumGetByteaPP(slot->tts_values[atts[2] - 1]);
		if (VARSIZE_ANY_EXHDR(leaf) != LEDGER_HASH_LEN)
			continue;
		if (v->nerasures == capacity)
		{
			capacity *= 2;
			v->erasures = repalloc_huge(v->erasures, sizeof(VErasure) * capacity);
		}
		e = &v->erasures[v->nerasures++];
		e->table_id = DatumGetInt32(slot->tts_values[atts[0] - 1]);
		e->erased_seq = DatumGetInt64(slot->tts_values[atts[1] - 1]);
		memcpy(e->leaf, VARDATA_ANY(leaf), LEDGER_HASH_LEN);
		e->erased_at = DatumGetTimestampTz(slot->tts_values[atts[3] - 1]);
		e->seq = DatumGetInt64(slot->tts_values[seq_att - 1]);

		resetStringInfo(&buf);
		row_encode(enc, &buf, (int32) LC_ERASURE_TABLE_ID, e->seq, slot->tts_values, slot->tts_isnull);
		ledger_leaf_hash(buf.data, buf.len, computed);
		stored = row_stored_hash(slot->tts_values, slot->tts_isnull, hash_att);
		if (own_sealed_leaf(v, e->seq, (int32) LC_ERASURE_TABLE_ID, computed, &b) == LC_LEAF_SAME)
			e->intact = true;
		else
			e->intact = b == NULL && e->seq > v->horizon && stored != NULL &&
				memcmp(stored, computed, LEDGER_HASH_LEN) == 0;
	}
	ExecDropSingleTupleTableSlot(slot);
	table_endscan(scan);
	relation_close(rel, AccessShareLock);
	pfree(buf.data);
	qsort(v->erasures, v->nerasures, sizeof(VErasure), verasure_cmp);
}

/* The records that name seq: the first, and how many (they are adjacent). */
static VErasure *
erasures_naming(Verifier *v, int64 seq, size_t *count)
{
	int64		at = lc_find_seq(v->erasures, v->nerasures, sizeof(VErasure), seq);

	*count = 0;
	if (at < 0)
		return NULL;
	while (at > 0 && v->erasures[at - 1].erased_seq == seq)
		at--;
	while (at + *count < v->nerasures && v->erasures[at + *count].erased_seq == seq)
		(*count)++;
	return &v->erasures[at];
}

static void
add_erased(Verifier *v, const VLeaf *l, const VErasure *e)
{
	appendStringInfoString(&v->erased, v->nerased++ == 0 ? "[" : ", ");
	appendStringInfoString(&v->erased, "{\"table\": ");
	escape_json(&v->erased, table_name_by_id(v, l->table_id));
	appendStringInfo(&v->erased, ", \"ledger_seq\": " INT64_FORMAT ", \"block\": " INT64_FORMAT
					 ", \"erasure_seq\": " INT64_FORMAT ", \"erased_at\": \"%s\"}",
					 l->seq, v->blocks[l->block].h.height, e->seq, format_iso_utc(e->erased_at));
}

/*
 * A sealed leaf whose row is gone: erased, when an intact record names
 * this table, ledger_seq and leaf and its time holds; true if it was.
 * Otherwise says why a record that names it does not count.
 */
static bool
judge_erasure(Verifier *v, const VLeaf *l, const char **why)
{
	size_t		count;
	VErasure   *e = erasures_naming(v, l->seq, &count);
	const VBlock *b = &v->blocks[l->block];
	size_t		i;

	*why = NULL;
	for (i = 0; i < count; i++, e++)
	{
		if (e->table_id != l->table_id || memcmp(e->leaf, l->hash, LEDGER_HASH_LEN) != 0)
		{
			*why = psprintf("; erasure record " INT64_FORMAT " names ledger_seq " INT64_FORMAT
							" but another table or leaf", e->seq, l->seq);
			continue;
		}
		if (!e->intact)
		{
			*why = psprintf("; erasure record " INT64_FORMAT " names it but does not match its own hash",
							e->seq);
			continue;
		}
		if (e->erased_at < b->h.sealed_at)
			add_problem(&v->problems, "erasure_backdated", b->h.height,
						table_name_by_id(v, l->table_id), l->seq,
						"erasure record " INT64_FORMAT " says the row was erased at %s, before block " INT64_FORMAT " sealed it at %s",
						e->seq, format_iso_utc(e->erased_at), b->h.height, format_iso_utc(b->h.sealed_at));
		else if (v->has_digest && e->seq > v->digest_last_seq && e->erased_at < v->digest_sealed_at)
			add_problem(&v->problems, "erasure_backdated", b->h.height,
						table_name_by_id(v, l->table_id), l->seq,
						"erasure record " INT64_FORMAT " says the row was erased at %s, before the digest's block was sealed (%s), but it is numbered after that block's last_seq " INT64_FORMAT ": it was written later",
						e->seq, format_iso_utc(e->erased_at), format_iso_utc(v->digest_sealed_at),
						v->digest_last_seq);
		else
			add_erased(v, l, e);
		return true;
	}
	return false;
}

/* An intact record whose row is still there: the erasure did not happen. */
static void
report_erased_rows_present(Verifier *v, const TableSet *only)
{
	size_t		i;

	for (i = 0; i < v->nerasures; i++)
	{
		const VErasure *e = &v->erasures[i];
		VLeaf	   *l;

		if (!e->intact || !table_wanted(e->table_id, only) || (l = find_leaf(v, e->erased_seq)) == NULL)
			continue;
		if (l->seen && l->table_id == e->table_id && memcmp(l->hash, e->leaf, LEDGER_HASH_LEN) == 0)
			add_problem(&v->problems, "erased_row_present", v->blocks[l->block].h.height,
						table_name_by_id(v, l->table_id), l->seq,
						"erasure record " INT64_FORMAT " says the row was erased, but it is still in the table",
						e->seq);
	}
}

static void
report_missing_rows(Verifier *v, const TableSet *only)
{
	size_t		i;

	for (i = 0; i < v->nleaves; i++)
	{
		VLeaf	   *l = &v->leaves[i];
		ListCell   *lc;
		bool		table_exists = false;
		const VLost *lost;
		const char *why;

		if (l->seen || !table_wanted(l->table_id, only))
			continue;
		foreach(lc, v->tables)
		{
			LedgerTable *t = lfirst(lc);

			/* a retired table's sealed rows may be gone: retire() recorded why */
			if (t->table_id == l->table_id)
				table_exists = !t->retired &&
					SearchSysCacheExists1(RELOID, ObjectIdGetDatum(t->relid));
		}
		if (!table_exists)
			continue;			/* reported once as missing_table */
		if ((lost = lost_in_restore(v, l)) != NULL)
		{
			add_problem(&v->problems, "lost_in_restore", v->blocks[l->block].h.height,
						table_name_by_id(v, l->table_id), l->seq,
						"the sealed row was lost in a restore, not removed: its block was taken back from the peers after the start at %s, without it",
						lost->started_at);
			continue;
		}
		if (judge_erasure(v, l, &why))
			continue;
		add_problem(&v->problems, "missing_row", v->blocks[l->block].h.height,
					table_name_by_id(v, l->table_id), l->seq,
					"the sealed row is no longer in the table%s", why ? why : "");
	}
}

/*
 * The members a final block's certificate may count: those of the
 * membership it was made under (names and keys, as arrays), and this
 * node's earlier names (blocks taken over from a restore).
 */
static LcMember *
members_of_certificate(Verifier *v, Datum names, Datum keys, size_t *n)
{
	Datum	   *nv;
	Datum	   *kv;
	bool	   *nn;
	bool	   *kn;
	int			nc;
	int			kc;
	int			i;
	LcMember   *m;
	ListCell   *lc;

	deconstruct_array(DatumGetArrayTypeP(names), TEXTOID, -1, false, TYPALIGN_INT, &nv, &nn, &nc);
	deconstruct_array(DatumGetArrayTypeP(keys), BYTEAOID, -1, false, TYPALIGN_INT, &kv, &kn, &kc);
	m = palloc0(sizeof(LcMember) * (Min(nc, kc) + list_length(v->trusted) + 1));
	*n = 0;
	for (i = 0; i < Min(nc, kc); i++)
	{
		bytea	   *key;

		if (nn[i] || kn[i])
			continue;
		key = DatumGetByteaPP(kv[i]);
		if (VARSIZE_ANY_EXHDR(key) != LEDGER_PUBKEY_LEN)
			continue;
		m[*n].name = TextDatumGetCString(nv[i]);
		memcpy(m[(*n)++].key, VARDATA_ANY(key), LEDGER_PUBKEY_LEN);
	}
	foreach(lc, v->trusted)
	{
		const char *entry = lfirst(lc);

		m[*n].name = entry;
		memcpy(m[(*n)++].key, entry + strlen(entry) + 1, LEDGER_PUBKEY_LEN);
	}
	return m;
}

/* The members a certificate may count here: this node, its earlier names, its peers. */
static LcMember *
members_known(Verifier *v, size_t *n)
{
	List	   *all = list_concat(list_copy(v->trusted), v->peers);
	LcMember   *m = palloc0(sizeof(LcMember) * (list_length(all) + 1));
	ListCell   *lc;

	*n = 0;
	m[*n].name = v->local_origin;
	memcpy(m[(*n)++].key, ledger_node_public_key(), LEDGER_PUBKEY_LEN);
	foreach(lc, all)
	{
		const char *entry = lfirst(lc);

		m[*n].name = entry;
		memcpy(m[(*n)++].key, entry + strlen(entry) + 1, LEDGER_PUBKEY_LEN);
	}
	return m;
}

/*
 * A digest's certificate, when it carries one, checked by the rule
 * ehrledger-verify applies (src/core/check.c), with this node's members
 * pinned.
 */
static void
check_digest_certificate(Verifier *v, Jsonb *digest)
{
	JsonbValue	cert;
	LcOptions	o;
	LcDoc		doc;
	LcResult	r;

	if (getKeyJsonValueFromContainer(&digest->root, "certificate", strlen("certificate"), &cert) == NULL)
		return;
	memset(&o, 0, sizeof(o));
	o.members = members_known(v, &o.nmembers);
	o.own_quorum = true;
	doc.name = "digest";
	doc.text = JsonbToCString(NULL, &digest->root, VARSIZE(digest));
	doc.len = strlen(doc.text);
	lc_result_init(&r);
	lc_check_digest(&doc, &o, &r);
	if (r.oom)
	{
		lc_result_free(&r);
		core_failed(LC_ERR_NOMEM);
	}
	if (r.status != LC_VALID)
		add_problem(&v->problems, "bad_certificate", 0, NULL, -1,
					"the digest's certificate does not hold: %s", r.message);
	lc_result_free(&r);
}

/* Holds the chain to a digest an auditor kept. */
static void
check_digest(Verifier *v, Jsonb *digest)
{
	ParsedDigest d;
	int			i;
	int64		max_height = 0;
	VBlock	   *found = NULL;

	parse_digest(digest, &d);
	digest_require_trusted(&d);

	for (i = 0; i < v->nblocks; i++)
	{
		VBlock	   *b = &v->blocks[i];

		if (strcmp(b->h.origin, d.origin) != 0)
			continue;
		max_height = Max(max_height, b->h.height);
		if (b->h.height == d.height)
			found = b;
	}
	if (found == NULL && d.height > max_height)
		add_problem(&v->problems, "chain_truncated", d.height, NULL, -1,
					"the digest names block " INT64_FORMAT " but the chain of \"%s\" now ends at " INT64_FORMAT,
					d.height, d.origin, max_height);
	else if (found == NULL)
		add_problem(&v->problems, "digest_block_missing", d.height, NULL, -1,
					"the block the digest names is no longer in the chain");
	else if (memcmp(found->stored_hash, d.block_hash, LEDGER_HASH_LEN) != 0 ||
			 found->h.last_seq != d.last_seq || found->h.sealed_at != d.sealed_at)
		add_problem(&v->problems, "digest_mismatch", d.height, NULL, -1,
					"the block differs from the one the digest was issued for");
	check_digest_certificate(v, digest);
}

/* The role of the caller's actor, or NULL; SPI is connected. */
static char *
caller_actor_role(void)
{
	int			ret = SPI_execute("SELECT role FROM ehrledger.current_actor()", true, 1);

	if (ret != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not look up the caller's actor: %s", SPI_result_code_string(ret));
	return SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
}

/*
 * verify() tells how many rows a table holds and which were changed, so
 * its caller must be allowed to know: SELECT on the table it was given (on
 * every protected one for the whole ledger, on a partitioned table rather
 * than its partitions, as for a query of it), and where row-level security
 * hides patients' rows from the caller, the role of an auditor or admin.
 * Checked as the caller, before verification runs as the ledger's owner.
 */
static void
require_verify_rights(List *registry, Oid given)
{
	ListCell   *lc;
	char	   *actor_role = NULL;
	bool		looked_up = false;
	bool		one = OidIsValid(given);

	foreach(lc, registry)
	{
		LedgerTable *t = lfirst(lc);
		char	   *name;

		if (one ? t->relid != given : (t->retired || t->partition_of != 0))
			continue;
		if (!SearchSysCacheExists1(RELOID, ObjectIdGetDatum(t->relid)))
			continue;
		name = relation_qualified_name(t->relid);
		if (pg_class_aclcheck(t->relid, GetUserId(), ACL_SELECT) != ACLCHECK_OK)
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("permission denied for table %s", name),
					 one ?
					 errdetail("verify() of a table tells how many rows it holds and which were changed.") :
					 errdetail("verify() of the whole ledger reads every protected table."),
					 one ?
					 errhint("Have SELECT on %s granted to verify it.", name) :
					 errhint("Verify the tables you may read one by one with ehrledger.verify(tbl), or have SELECT on %s granted.",
							 name)));
		if (check_enable_rls(t->relid, InvalidOid, true) == RLS_ENABLED)
		{
			if (!looked_up)
				actor_role = caller_actor_role();
			looked_up = true;
			if (actor_role == NULL ||
				(strcmp(actor_role, "auditor") != 0 && strcmp(actor_role, "admin") != 0))
				ereport(ERROR,
						(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
						 errmsg("only an auditor or admin may verify table %s, which is under row-level security",
								name),
						 errdetail("Its row count and changed rows would tell of patients whose rows are hidden from role %s.",
								   GetUserNameFromId(GetUserId(), false)),
						 errhint("Connect as a role mapped to an auditor or admin actor, or as a role with BYPASSRLS.")));
		}
	}
}

/*
 * ehrledger.verify(tbl, digest): one row (ok, blocks_checked, rows_checked,
 * problems).  It runs with the caller's rights, which it checks, and
 * verifies as the ledger's owner.
 */
Datum
ehrledger_verify(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Verifier	v;
	TableSet	only = {true, NULL, 0};
	EarlyPass  *early;
	int			guc_level;
	List	   *registry;
	UserSwitch	sw;
	Datum		values[5];
	bool		nulls[5] = {false, false, false, false, false};
	ListCell   *lc;

	InitMaterializedSRF(fcinfo, 0);
	memset(&v, 0, sizeof(v));
	initStringInfo(&v.problems.json);
	initStringInfo(&v.erased);
	v.cxt = CurrentMemoryContext;
	v.local_origin = ledger_node_name();

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	registry = ledger_registry(GetActiveSnapshot());
	v.tables = NIL;
	foreach(lc, registry)
		if (!((LedgerTable *) lfirst(lc))->partitioned)
			v.tables = lappend(v.tables, lfirst(lc));
	if (!PG_ARGISNULL(0))
	{
		Oid			relid = PG_GETARG_OID(0);
		LedgerTable *given = NULL;

		foreach(lc, registry)
			if (((LedgerTable *) lfirst(lc))->relid == relid)
				given = lfirst(lc);
		if (get_rel_name(relid) == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_TABLE),
					 errmsg("relation with OID %u does not exist", relid)));
		if (given == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_LEDGER_NOT_PROTECTED),
					 errmsg("table \"%s\" is not protected by ehrledger",
							get_rel_name(relid)),
					 errhint("Protect it with ehrledger.protect('%s').",
							 get_rel_name(relid))));
		/* in table_id order, as ledger_partitions() gives them */
		only.all = false;
		only.ids = palloc(sizeof(int32) * Max(list_length(v.tables), 1));
		foreach(lc, ledger_partitions(given, GetActiveSnapshot()))
			only.ids[only.n++] = ((LedgerTable *) lfirst(lc))->table_id;
	}

	require_verify_rights(registry, PG_ARGISNULL(0) ? InvalidOid : PG_GETARG_OID(0));
	user_switch_ledger_owner(&sw);

	/*
	 * The rows get the workers the session allows; verify()'s own queries
	 * (keys, blocks, certificates, ...), each over a few rows, none: with
	 * parallel_setup_cost = 0 each started workers of its own (8 ms), and
	 * none may run while a row pass's workers are out.
	 */
	v.max_workers = max_parallel_workers_per_gather;
	guc_level = NewGUCNestLevel();
	(void) set_config_option("max_parallel_workers_per_gather", "0", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);

	check_partitions(&v, registry, &only, PG_ARGISNULL(0) ? InvalidOid : PG_GETARG_OID(0));
	load_trusted_keys(&v);
	load_blocks(&v);
	early = prepass_start(&v, &only);
	load_leaves(&v);
	index_leaves(&v, &only);
	prepass_tables(&v, &only, early);

	check_chains(&v);
	check_certificates(&v);
	report_duplicate_leaves(&v);

	v.candidates = palloc(sizeof(Candidate) * MAX_SWAP_CANDIDATES);
	foreach(lc, v.tables)
	{
		LedgerTable *t = lfirst(lc);

		if (table_wanted(t->table_id, &only) && !t->retired)
			check_table(&v, t);
	}
	report_candidates(&v);
	load_lost_rows(&v);
	if (!PG_ARGISNULL(1))
	{
		ParsedDigest d;

		parse_digest(PG_GETARG_JSONB_P(1), &d);
		v.has_digest = origin_is_own(&v, d.origin);
		v.digest_last_seq = d.last_seq;
		v.digest_sealed_at = d.sealed_at;
	}
	load_erasures(&v);
	report_missing_rows(&v, &only);
	report_erased_rows_present(&v, &only);

	if (!PG_ARGISNULL(1))
		check_digest(&v, PG_GETARG_JSONB_P(1));

	values[0] = BoolGetDatum(v.problems.total == 0);
	values[1] = Int64GetDatum(v.nblocks);
	values[2] = Int64GetDatum(v.rows_checked);
	values[3] = problems_jsonb(&v.problems);
	appendStringInfoString(&v.erased, v.nerased > 0 ? "]" : "[]");
	/* a schema before 0.4 has no erased column */
	values[4] = DirectFunctionCall1(jsonb_in, CStringGetDatum(v.erased.data));
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);

	AtEOXact_GUC(true, guc_level);
	user_switch_end(&sw);
	SPI_finish();
	return (Datum) 0;
}
