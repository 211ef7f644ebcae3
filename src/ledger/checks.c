/*
 * checks.c
 *		The server's side of src/core's verification rules: enrolments
 *		(docs/format.md §19), sealed rows shown as they were sealed, and
 *		the checks of proofs, digests and exports that ehrledger-verify runs
 *		offline, run here by the very same functions.
 *
 * Next: nothing is stored; each check returns a verdict to its caller.
 */
#include "postgres.h"

#include "access/relation.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "core/check.h"
#include "core/decode.h"
#include "core/ledger_core.h"
#include "ledger/ledger.h"

PG_FUNCTION_INFO_V1(ehrledger_encoded_columns);
PG_FUNCTION_INFO_V1(ehrledger_sealed_row);


/* ehrledger._encoded_columns(tbl): [{"name", "type", "decode"}] (docs/format.md §19). */
Datum
ehrledger_encoded_columns(PG_FUNCTION_ARGS)
{
	Relation	rel = relation_open(PG_GETARG_OID(0), AccessShareLock);
	RowEncoder *enc = row_encoder_create(RelationGetDescr(rel), CurrentMemoryContext);
	StringInfoData buf;

	initStringInfo(&buf);
	row_encoder_columns_json(enc, RelationGetDescr(rel), &buf);
	relation_close(rel, AccessShareLock);
	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(buf.data)));
}

/*
 * Enrols the tables of this node's chain that need it, in the sealer's
 * transaction (SPI connected); true if it wrote any row.  Schemas before
 * 0.4 have no enrolments.
 */
bool
ledger_enrol_tables(void)
{
	bool		isnull;

	if (!OidIsValid(get_relname_relid("enrolled_table", ledger_namespace())))
		return false;
	if (SPI_execute("SELECT ehrledger._enrol_tables()", false, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "ehrledger._enrol_tables() failed");
	return DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1,
									   &isnull)) > 0;
}

/*
 * How rows of one relation are shown as sealed: the decoders of its
 * columns (from the JSON a RowEncoder gives of itself, read by core), and
 * core's rendering of an encoding with them.  proof(), export() and
 * sealed_row() show rows this way, so "row" is what ehrledger-verify
 * compares with the encoding, byte for byte.
 */
struct RowShower
{
	char	   *text;			/* malloc'ed; the tree points into it */
	JsonValue  *tree;
	LcColumnType *types;		/* malloc'ed */
	size_t		ntypes;
	LcBuf		out;
};

static void
row_shower_release(void *arg)
{
	RowShower  *rs = arg;

	json_free(rs->tree);
	free(rs->types);
	free(rs->text);
	lc_buf_free(&rs->out);
	rs->tree = NULL;
	rs->types = NULL;
	rs->text = NULL;
}

/* Lives, and its core memory with it, as long as the current memory context. */
RowShower *
row_shower_create(Relation rel)
{
	RowEncoder *enc = row_encoder_create(RelationGetDescr(rel), CurrentMemoryContext);
	RowShower  *rs = palloc0(sizeof(RowShower));
	MemoryContextCallback *cb = palloc(sizeof(MemoryContextCallback));
	StringInfoData buf;
	JsonOptions opts = {8, SIZE_MAX, NULL, false};
	char		err[256];
	bool		oom;
	int			rc;

	lc_buf_init(&rs->out);
	cb->func = row_shower_release;
	cb->arg = rs;
	MemoryContextRegisterResetCallback(CurrentMemoryContext, cb);
	initStringInfo(&buf);
	row_encoder_columns_json(enc, RelationGetDescr(rel), &buf);
	rs->text = malloc(buf.len + 1);
	if (rs->text == NULL)
		core_failed(LC_ERR_NOMEM);
	memcpy(rs->text, buf.data, buf.len + 1);
	if (!json_parse(rs->text, buf.len, &opts, &rs->tree, err, sizeof(err), &oom))
	{
		if (oom)
			core_failed(LC_ERR_NOMEM);
		elog(ERROR, "could not read the columns of \"%s\": %s", RelationGetRelationName(rel), err);
	}
	rc = lc_columns_from_json(rs->tree, &rs->types, &rs->ntypes, err, sizeof(err));
	if (rc == LC_ERR_NOMEM)
		core_failed(rc);
	if (rc != LC_OK)
		elog(ERROR, "could not read the columns of \"%s\": %s", RelationGetRelationName(rel), err);
	return rs;
}

/* A row version's encoding shown as JSON (palloc'ed), as sealed. */
char *
row_shower_json(RowShower *rs, const char *encoding, size_t len)
{
	LcEncoding	e;
	char		err[256];
	int			rc;

	rc = lc_encoding_parse((const uint8_t *) encoding, len, &e, err, sizeof(err));
	if (rc == LC_ERR_NOMEM)
		core_failed(rc);
	if (rc != LC_OK)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("a row's encoding cannot be read back: %s", err),
				 errhint("Run ehrledger.verify() to see what was changed.")));
	rs->out.len = 0;
	lc_row_render(&e, rs->types, rs->ntypes, &rs->out);
	lc_encoding_free(&e);
	if (rs->out.failed)
		core_failed(LC_ERR_NOMEM);
	return pnstrdup((const char *) rs->out.data, rs->out.len);
}

typedef struct FoundRow
{
	bool		found;
	StringInfoData encoding;
} FoundRow;

static void
keep_encoding(void *arg, int64 seq, StringInfo encoding, Datum json, TupleTableSlot *slot)
{
	FoundRow   *row = arg;

	(void) seq;
	(void) json;
	(void) slot;
	row->found = true;
	appendBinaryStringInfo(&row->encoding, encoding->data, encoding->len);
}

/*
 * ehrledger.sealed_row(tbl, ledger_seq): a row version as it was sealed,
 * decoded from its canonical encoding by the decoder ehrledger-verify uses;
 * an error if the row is not sealed, or no longer is what was.
 */
Datum
ehrledger_sealed_row(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);
	int64		seq = PG_GETARG_INT64(1);
	LedgerTable *t = ledger_row_table_for_reader(relid, seq);
	int32		table_id = t ? t->table_id : 0;
	Oid			read_relid = relid;
	FoundRow	row;
	uint8		leaf[LEDGER_HASH_LEN];
	char	   *problem;
	int64		height;
	Relation	rel;
	char	   *json;

	memset(&row, 0, sizeof(row));
	initStringInfo(&row.encoding);
	if (t != NULL)
	{
		/* of a partitioned table: the row of the partition holding it */
		relid = read_relid = t->relid;
		ledger_read_rows(relid, table_id, seq, seq, keep_encoding, &row);
		if (!row.found && OidIsValid(t->history_relid))
		{
			read_relid = t->history_relid;
			ledger_read_rows(read_relid, table_id, seq, seq, keep_encoding, &row);
		}
	}
	if (!row.found)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA),
				 errmsg("table \"%s\" has no row version with ledger_seq " INT64_FORMAT,
						get_rel_name(relid), seq)));
	ledger_leaf_hash(row.encoding.data, row.encoding.len, leaf);
	height = ledger_sealed_leaf(seq, table_id, leaf, &problem);
	if (height == 0)
		ereport(ERROR,
				(errcode(ERRCODE_LEDGER_NOT_SEALED),
				 errmsg("row " INT64_FORMAT " of \"%s\" is not sealed yet", seq, get_rel_name(relid)),
				 errhint("Call ehrledger.seal().")));
	if (problem != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("row " INT64_FORMAT " of \"%s\" is not what block " INT64_FORMAT " sealed: %s",
						seq, get_rel_name(relid), height, problem),
				 errhint("Run ehrledger.verify() to see what was changed.")));

	rel = relation_open(read_relid, AccessShareLock);
	json = row_shower_json(row_shower_create(rel), row.encoding.data, row.encoding.len);
	relation_close(rel, AccessShareLock);
	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(json)));
}

/* ------------------------------------------------ the documents' checks */

PG_FUNCTION_INFO_V1(ehrledger_check_digest);
PG_FUNCTION_INFO_V1(ehrledger_check_proof);
PG_FUNCTION_INFO_V1(ehrledger_check_consistency);
PG_FUNCTION_INFO_V1(ehrledger_check_export);
PG_FUNCTION_INFO_V1(ehrledger_check_certificate);

/* What a check is told to trust: a pinned node key, pinned members. */
typedef struct Trust
{
	LcOptions	o;
	uint8		key[LEDGER_PUBKEY_LEN];
	LcMember   *members;
} Trust;

/*
 * The trusted key (NULL: none) and members ({"name": "hex key", ...}, NULL:
 * none) of a check's arguments.
 */
static void
trust_from_args(FunctionCallInfo fcinfo, int key_arg, int members_arg, Trust *t)
{
	memset(t, 0, sizeof(*t));
	if (key_arg >= 0 && !PG_ARGISNULL(key_arg))
	{
		bytea	   *k = PG_GETARG_BYTEA_PP(key_arg);

		if (VARSIZE_ANY_EXHDR(k) != LEDGER_PUBKEY_LEN)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("trusted_key must be %d bytes, not %d", LEDGER_PUBKEY_LEN,
							(int) VARSIZE_ANY_EXHDR(k))));
		memcpy(t->key, VARDATA_ANY(k), LEDGER_PUBKEY_LEN);
		t->o.trusted_key = t->key;
	}
	if (members_arg >= 0 && !PG_ARGISNULL(members_arg))
	{
		Jsonb	   *m = PG_GETARG_JSONB_P(members_arg);
		JsonbIterator *it;
		JsonbValue	v;
		JsonbIteratorToken tok;
		int			n = 0;
		char	   *name = NULL;

		if (!JB_ROOT_IS_OBJECT(m) || JB_ROOT_IS_SCALAR(m))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("members must be a JSON object of names and hex public keys"),
					 errhint("Pass, for example, '{\"h1\": \"<64 hex digits>\"}'.")));
		if (JB_ROOT_COUNT(m) > LC_MAX_MEMBERS)
			ereport(ERROR,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg("at most %d members can be pinned", LC_MAX_MEMBERS)));
		t->members = palloc0(sizeof(LcMember) * Max(JB_ROOT_COUNT(m), 1));
		it = JsonbIteratorInit(&m->root);
		while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
		{
			if (tok == WJB_KEY)
				name = pnstrdup(v.val.string.val, v.val.string.len);
			else if (tok == WJB_VALUE)
			{
				if (v.type != jbvString || v.val.string.len != 2 * LEDGER_PUBKEY_LEN ||
					!lc_hex_decode(v.val.string.val, v.val.string.len, t->members[n].key))
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							 errmsg("the key of member \"%s\" must be %d hexadecimal digits",
									name, 2 * LEDGER_PUBKEY_LEN)));
				t->members[n++].name = name;
			}
		}
		t->o.members = t->members;
		t->o.nmembers = n;
	}
}

/* A document argument, in memory the check may change (it parses in place). */
LcDoc
ledger_doc_arg(FunctionCallInfo fcinfo, int arg, const char *name)
{
	LcDoc		d;
	text	   *t;

	if (PG_ARGISNULL(arg))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be NULL", name)));
	t = PG_GETARG_TEXT_PP(arg);
	d.name = name;
	d.len = VARSIZE_ANY_EXHDR(t);
	d.text = palloc_extended(d.len + 1, MCXT_ALLOC_HUGE);
	memcpy(d.text, VARDATA_ANY(t), d.len);
	d.text[d.len] = '\0';
	return d;
}

/* One row (verdict, detail) of a check's result; frees it. */
static Datum
verdict_row(FunctionCallInfo fcinfo, LcResult *r)
{
	TupleDesc	desc;
	Datum		values[2];
	bool		nulls[2] = {false, false};
	const char *verdict;
	char	   *detail;

	if (r->oom)
	{
		lc_result_free(r);
		core_failed(LC_ERR_NOMEM);
	}
	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	verdict = r->status == LC_VALID ? "valid" : r->status == LC_INVALID ? "invalid" : "unusable";
	if (r->status == LC_VALID)
	{
		size_t		len = r->out.len;

		while (len > 0 && r->out.data[len - 1] == '\n')
			len--;
		detail = pnstrdup((const char *) r->out.data, len);
	}
	else
		detail = pstrdup(r->message);
	lc_result_free(r);
	values[0] = CStringGetTextDatum(verdict);
	values[1] = CStringGetTextDatum(detail);
	return HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), values, nulls));
}

/* ehrledger.check_digest(digest, trusted_key, members): docs/format.md §9. */
Datum
ehrledger_check_digest(PG_FUNCTION_ARGS)
{
	LcDoc		digest = ledger_doc_arg(fcinfo, 0, "digest");
	Trust		t;
	LcResult	r;

	trust_from_args(fcinfo, 1, 2, &t);
	lc_result_init(&r);
	lc_check_digest(&digest, &t.o, &r);
	PG_RETURN_DATUM(verdict_row(fcinfo, &r));
}

/* ehrledger.check_proof(proof, digest, trusted_key, members): docs/format.md §12. */
Datum
ehrledger_check_proof(PG_FUNCTION_ARGS)
{
	LcDoc		proof = ledger_doc_arg(fcinfo, 0, "proof");
	LcDoc		digest = ledger_doc_arg(fcinfo, 1, "digest");
	Trust		t;
	LcResult	r;

	trust_from_args(fcinfo, 2, 3, &t);
	lc_result_init(&r);
	lc_check_proof(&proof, &digest, &t.o, &r);
	PG_RETURN_DATUM(verdict_row(fcinfo, &r));
}

/* ehrledger.check_consistency(proof, old_digest, new_digest, ...): docs/format.md §13. */
Datum
ehrledger_check_consistency(PG_FUNCTION_ARGS)
{
	LcDoc		proof = ledger_doc_arg(fcinfo, 0, "proof");
	LcDoc		old_digest = ledger_doc_arg(fcinfo, 1, "old_digest");
	LcDoc		new_digest = ledger_doc_arg(fcinfo, 2, "new_digest");
	Trust		t;
	LcResult	r;

	trust_from_args(fcinfo, 3, 4, &t);
	lc_result_init(&r);
	lc_check_consistency(&proof, &old_digest, &new_digest, &t.o, &r);
	PG_RETURN_DATUM(verdict_row(fcinfo, &r));
}

/* ehrledger.check_certificate(certificate, members): docs/format.md §18. */
Datum
ehrledger_check_certificate(PG_FUNCTION_ARGS)
{
	LcDoc		cert = ledger_doc_arg(fcinfo, 0, "certificate");
	Trust		t;
	LcResult	r;

	trust_from_args(fcinfo, -1, 1, &t);
	lc_result_init(&r);
	lc_check_certificate(&cert, &t.o, &r);
	PG_RETURN_DATUM(verdict_row(fcinfo, &r));
}

static void
free_export(void *arg)
{
	lc_export_free(arg);
}

/*
 * ehrledger.check_export(export, digest, trusted_key, members): an export's
 * JSON Lines (docs/format.md §14), line by line as ehrledger-verify reads a
 * file.
 */
Datum
ehrledger_check_export(PG_FUNCTION_ARGS)
{
	LcDoc		lines = ledger_doc_arg(fcinfo, 0, "export");
	LcDoc		digest = ledger_doc_arg(fcinfo, 1, "digest");
	Trust		t;
	LcResult	r;
	LcExport   *e;
	char	   *p = lines.text;
	char	   *end = lines.text + lines.len;
	LcDoc		header;
	char	   *nl;
	MemoryContextCallback *cb;

	trust_from_args(fcinfo, 2, 3, &t);
	lc_result_init(&r);
	nl = memchr(p, '\n', end - p);
	header.name = "export";
	header.text = p;
	header.len = nl ? (size_t) (nl - p) : (size_t) (end - p);
	if (lines.len == 0)
	{
		r.status = LC_UNUSABLE;
		snprintf(r.message, sizeof(r.message), "export: empty file");
		PG_RETURN_DATUM(verdict_row(fcinfo, &r));
	}
	e = lc_export_begin("export", &header, &digest, &t.o, &r);
	/* an error (a cancel) frees the check's memory with this call's */
	cb = palloc(sizeof(MemoryContextCallback));
	cb->func = free_export;
	cb->arg = e;
	MemoryContextRegisterResetCallback(CurrentMemoryContext, cb);
	p = nl ? nl + 1 : end;
	while (e != NULL && r.status == LC_VALID && p < end)
	{
		CHECK_FOR_INTERRUPTS();
		nl = memchr(p, '\n', end - p);
		lc_export_line(e, p, nl ? (size_t) (nl - p) : (size_t) (end - p), &r);
		p = nl ? nl + 1 : end;
	}
	if (e != NULL && r.status == LC_VALID)
		lc_export_end(e, &r);
	lc_export_free(e);
	cb->arg = NULL;
	PG_RETURN_DATUM(verdict_row(fcinfo, &r));
}
