/*
 * checks.c
 *		The server's side of src/core's verification rules: enrolments
 *		(docs/format.md §19), sealed rows shown as they were sealed, and
 *		the checks of proofs, digests and exports that ehrledger-verify runs
 *		offline, run here by the very same functions.
 */
#include "postgres.h"

#include "access/relation.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "core/decode.h"
#include "core/ledger_core.h"
#include "ehrledger.h"

PG_FUNCTION_INFO_V1(ehrledger_encoded_columns);
PG_FUNCTION_INFO_V1(ehrledger_sealed_row);

/*
 * Reports a failure of a core function: out of memory is SQLSTATE 53200,
 * as for any allocation in the server.
 */
void
core_failed(int rc)
{
	if (rc == LC_ERR_NOMEM)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
	ereport(ERROR,
			(errcode(ERRCODE_INTERNAL_ERROR),
			 errmsg("a cryptographic computation failed in OpenSSL or libsodium")));
}

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

/* Column types, read by core from the JSON a RowEncoder gives of itself. */
typedef struct ServerTypes
{
	char	   *text;			/* malloc'ed; the tree points into it */
	JsonValue  *tree;
	LcColumnType *types;		/* malloc'ed */
	size_t		ntypes;
} ServerTypes;

static void
server_types_free(ServerTypes *st)
{
	json_free(st->tree);
	free(st->types);
	free(st->text);
	memset(st, 0, sizeof(*st));
}

static void
server_types(Relation rel, ServerTypes *st)
{
	RowEncoder *enc = row_encoder_create(RelationGetDescr(rel), CurrentMemoryContext);
	StringInfoData buf;
	JsonOptions opts = {8, SIZE_MAX, NULL, false};
	char		err[256];
	bool		oom;
	int			rc;

	memset(st, 0, sizeof(*st));
	initStringInfo(&buf);
	row_encoder_columns_json(enc, RelationGetDescr(rel), &buf);
	st->text = malloc(buf.len + 1);
	if (st->text == NULL)
		core_failed(LC_ERR_NOMEM);
	memcpy(st->text, buf.data, buf.len + 1);
	if (!json_parse(st->text, buf.len, &opts, &st->tree, err, sizeof(err), &oom))
	{
		free(st->text);
		if (oom)
			core_failed(LC_ERR_NOMEM);
		elog(ERROR, "could not read the columns of \"%s\": %s", RelationGetRelationName(rel), err);
	}
	rc = lc_columns_from_json(st->tree, &st->types, &st->ntypes, err, sizeof(err));
	if (rc != LC_OK)
	{
		server_types_free(st);
		if (rc == LC_ERR_NOMEM)
			core_failed(rc);
		elog(ERROR, "could not read the columns of \"%s\": %s", RelationGetRelationName(rel), err);
	}
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
	int32		table_id = ledger_table_for_reader(relid);
	Oid			history_relid = InvalidOid;
	Oid			read_relid = relid;
	FoundRow	row;
	uint8		leaf[LEDGER_HASH_LEN];
	char	   *problem;
	int64		height;
	ServerTypes st;
	LcEncoding	e;
	LcBuf		out;
	char		err[256];
	int			rc;
	Relation	rel;
	char	   *json;
	ListCell   *lc;

	memset(&row, 0, sizeof(row));
	initStringInfo(&row.encoding);
	ledger_read_rows(relid, table_id, seq, seq, keep_encoding, &row);
	if (!row.found)
	{
		foreach(lc, ledger_tables(GetActiveSnapshot()))
			if (((LedgerTable *) lfirst(lc))->relid == relid)
				history_relid = ((LedgerTable *) lfirst(lc))->history_relid;
		if (OidIsValid(history_relid))
		{
			read_relid = history_relid;
			ledger_read_rows(history_relid, table_id, seq, seq, keep_encoding, &row);
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
	server_types(rel, &st);
	relation_close(rel, AccessShareLock);
	rc = lc_encoding_parse((const uint8_t *) row.encoding.data, row.encoding.len, &e,
						   err, sizeof(err));
	if (rc != LC_OK)
	{
		server_types_free(&st);
		if (rc == LC_ERR_NOMEM)
			core_failed(rc);
		elog(ERROR, "the encoding of row " INT64_FORMAT " cannot be read: %s", seq, err);
	}
	lc_buf_init(&out);
	lc_row_render(&e, st.types, st.ntypes, &out);
	lc_encoding_free(&e);
	server_types_free(&st);
	if (out.failed)
	{
		lc_buf_free(&out);
		core_failed(LC_ERR_NOMEM);
	}
	json = pnstrdup((const char *) out.data, out.len);
	lc_buf_free(&out);
	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(json)));
}
