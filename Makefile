# ehrledger: a PostgreSQL extension built with PGXS.
#
#   make test   install what is missing, build, install, run every suite
#   make demo   install what is missing, build, install, run the demo

EXTENSION = ehrledger
MODULE_big = ehrledger
OBJS = src/ehrledger.o src/common.o src/keys.o src/privileges.o src/worker.o \
       src/ledger/encode.o src/ledger/block.o src/ledger/tables.o \
       src/ledger/triggers.o src/ledger/backfill.o src/ledger/signatures.o src/ledger/seal.o \
       src/ledger/verify.o src/ledger/verify_parallel.o src/ledger/proofs.o src/ledger/digest.o \
       src/ledger/checks.o src/ledger/erase.o src/ledger/partitions.o src/ledger/type_guard.o \
       src/consent/consent.o src/consent/access_log.o src/consent/explain.o \
       src/consent/standby.o src/consent/log_slot.o \
       src/network/network.o src/network/rules.o \
       src/core/ledger_core.o src/core/json.o src/core/decode.o src/core/check.o
# The install script of the current version is built from each subsystem's
# SQL, in this order (later files use earlier ones' tables and functions).
EXTVERSION = $(shell sed -n "s/^default_version = '\\(.*\\)'/\\1/p" $(EXTENSION).control)
EXTENSION_SQL = src/ehrledger.sql src/ledger/ledger.sql src/ledger/verify.sql \
                src/consent/actors.sql src/consent/consent.sql src/ledger/erase.sql \
                src/network/network.sql src/network/states.sql src/fhir/fhir.sql
DATA_built = $(EXTENSION)--$(EXTVERSION).sql
# Every earlier version's install script and every upgrade step, as
# released: upgrade/ehrledger--VERSION.sql, upgrade/ehrledger--FROM--TO.sql
# (sql/ and expected/ are pg_regress's).
DATA = $(wildcard upgrade/$(EXTENSION)--*.sql)

# Tests against an installed server (make installcheck, as for any PGXS
# extension; the server preloads ehrledger with test/regress.conf's settings):
# pg_regress runs sql/ against expected/ in test/schedule's order, isolation
# specs test/isolation/specs against test/isolation/expected, and TAP_TESTS
# adds test/t/*.pl (make prove_installcheck runs those alone).  make test
# runs every suite on throwaway clusters instead.
REGRESS = $(shell sed -n 's/^test: *//p' test/schedule)
REGRESS_OPTS = --temp-config=test/regress.conf
ISOLATION = $(sort $(basename $(notdir $(wildcard test/isolation/specs/*.spec))))
ISOLATION_OPTS = --inputdir=test/isolation --temp-config=test/regress.conf
TAP_TESTS = 1
PROVE_TESTS = test/t/*.pl

# The server's headers are system headers: -Wextra then judges our code only.
PG_CFLAGS = -Wall -Wextra -Werror
PG_CPPFLAGS = -Isrc -isystem $(shell $(PG_CONFIG) --includedir-server 2>/dev/null)
SHLIB_LINK = -lcrypto -lsodium

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs 2>/dev/null)
ifneq ($(wildcard $(PGXS)),)
include $(PGXS)
endif

# PGXS tracks no header dependencies: every object depends on every header.
$(OBJS): $(wildcard src/*.h src/*/*.h)

$(EXTENSION)--$(EXTVERSION).sql: $(EXTENSION_SQL)
	cat $^ > $@

# PGXS runs TAP tests only inside installcheck; this runs them alone.
.PHONY: prove_installcheck
prove_installcheck:
	$(prove_installcheck)

.PHONY: deps test demo demo-stop demo-network demo-network-stop bench

deps:
	@scripts/install-deps.sh

test: deps
	$(MAKE) all
	$(MAKE) install
	scripts/run-tests.sh

demo: deps
	$(MAKE) all
	$(MAKE) install
	scripts/demo.sh

demo-stop:
	scripts/demo.sh stop

demo-network: deps
	$(MAKE) all
	$(MAKE) install
	scripts/demo-network.sh

demo-network-stop:
	scripts/demo-network.sh stop

bench: deps
	$(MAKE) all
	$(MAKE) install
	bench/run-all.sh

include cli/cli.mk
