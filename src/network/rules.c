/*
 * rules.c
 *		The network's rules, src/core's, for the SQL that admits blocks and
 *		acknowledgments (src/network/states.sql): an acknowledgment's
 *		signature, an origin's signed header, a finality certificate
 *		(docs/format.md §18).  ehrledger-verify runs the same rules
 *		offline.
 *
 * Next: the verdict goes back to the SQL of states.sql that asked.
 */
#include "postgres.h"

#include "executor/spi.h"
#include "fmgr.h"
#include "utils/builtins.h"

#include "core/check.h"
#include "core/ledger_core.h"
#include "ledger/ledger.h"
#include "network/network.h"

PG_FUNCTION_INFO_V1(ehrledger_ack_valid);
PG_FUNCTION_INFO_V1(ehrledger_origin_header_valid);
PG_FUNCTION_INFO_V1(ehrledger_certificate_holds);

static const uint8 *
fixed_arg(FunctionCallInfo fcinfo, int n, size_t len, const char *what)
{
	bytea	   *b = PG_GETARG_BYTEA_PP(n);

	if (VARSIZE_ANY_EXHDR(b) != len)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be %d bytes, not %d", what, (int) len,
						(int) VARSIZE_ANY_EXHDR(b))));
	return (const uint8 *) VARDATA_ANY(b);
}

/*
 * ehrledger._ack_valid(origin, height, block_hash, public_key, signature):
 * the acknowledgment rule (docs/format.md §18), src/core's.
 */
Datum
ehrledger_ack_valid(PG_FUNCTION_ARGS)
{
	text	   *origin = PG_GETARG_TEXT_PP(0);
	bool		failed;
	bool		ok;

	ok = lc_ack_ok(VARDATA_ANY(origin), VARSIZE_ANY_EXHDR(origin), PG_GETARG_INT64(1),
				   fixed_arg(fcinfo, 2, LEDGER_HASH_LEN, "block_hash"),
				   fixed_arg(fcinfo, 3, LEDGER_PUBKEY_LEN, "public_key"),
				   fixed_arg(fcinfo, 4, LEDGER_SIG_LEN, "signature"), &failed);
	if (failed)
		core_failed(LC_ERR_NOMEM);
	PG_RETURN_BOOL(ok);
}

/*
 * ehrledger._origin_header_valid(origin, height, block_hash, header,
 * origin_signature, origin_key): a header its origin signed
 * (docs/format.md §18), src/core's rule.
 */
Datum
ehrledger_origin_header_valid(PG_FUNCTION_ARGS)
{
	text	   *origin = PG_GETARG_TEXT_PP(0);
	bytea	   *header = PG_GETARG_BYTEA_PP(3);
	bool		failed;
	char		problem[256];
	const char *why;

	why = lc_origin_header_problem(VARDATA_ANY(origin), VARSIZE_ANY_EXHDR(origin),
								   PG_GETARG_INT64(1),
								   fixed_arg(fcinfo, 2, LEDGER_HASH_LEN, "block_hash"),
								   (const uint8 *) VARDATA_ANY(header), VARSIZE_ANY_EXHDR(header),
								   fixed_arg(fcinfo, 4, LEDGER_SIG_LEN, "origin_signature"),
								   fixed_arg(fcinfo, 5, LEDGER_PUBKEY_LEN, "origin_key"),
								   &failed, problem, sizeof(problem));
	if (failed)
		core_failed(lc_error);
	PG_RETURN_BOOL(why == NULL);
}

/*
 * ehrledger._certificate_holds(certificate): whether a certificate holds by
 * the certificate rule (src/core), counting the acknowledgments of this
 * node's members (ehrledger._members(), and this node's earlier names),
 * against its own quorum.
 */
Datum
ehrledger_certificate_holds(PG_FUNCTION_ARGS)
{
	LcDoc		doc = ledger_doc_arg(fcinfo, 0, "certificate");
	LcOptions	o;
	LcMember   *m;
	LcResult	r;
	uint64		i;
	bool		holds;
	MemoryContext outer = CurrentMemoryContext;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute("SELECT m.name, m.public_key FROM ehrledger._members() m"
					" UNION ALL SELECT k.origin, k.public_key FROM ehrledger.node_key k",
					true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the network's members");
	m = MemoryContextAllocZero(outer, sizeof(LcMember) * (SPI_processed + 1));
	memset(&o, 0, sizeof(o));
	for (i = 0; i < SPI_processed; i++)
	{
		char	   *name = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);

		if (name == NULL ||
			!spi_fixed(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2, m[o.nmembers].key,
					   LEDGER_PUBKEY_LEN))
			continue;
		m[o.nmembers++].name = MemoryContextStrdup(outer, name);
	}
	SPI_finish();
	o.members = m;
	o.own_quorum = true;
	lc_result_init(&r);
	lc_check_certificate(&doc, &o, &r);
	if (r.oom)
	{
		lc_result_free(&r);
		core_failed(LC_ERR_NOMEM);
	}
	holds = r.status == LC_VALID;
	lc_result_free(&r);
	PG_RETURN_BOOL(holds);
}
