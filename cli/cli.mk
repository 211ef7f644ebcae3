# ehrledger-verify, the offline verifier (cli/README.md).  Included by the
# top Makefile after PGXS, whose bindir, INSTALL_PROGRAM and MKDIR_P it uses.
# It links libc, libcrypto and libsodium only: no libpq, no server headers.

CLI_SRCS = cli/ehrledger-verify.c src/core/ledger_core.c src/core/json.c src/core/decode.c \
           src/core/check.c
CLI_HDRS = src/core/ledger_core.h src/core/json.h src/core/decode.h src/core/check.h
CLI_CFLAGS = -std=c11 -O2 -Wall -Wextra -Werror \
             -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE -Isrc

all: cli/ehrledger-verify

cli/ehrledger-verify: $(CLI_SRCS) $(CLI_HDRS)
	$(CC) $(CLI_CFLAGS) -o $@ $(CLI_SRCS) -lcrypto -lsodium -lm

install: install-cli

install-cli: cli/ehrledger-verify
	$(MKDIR_P) '$(DESTDIR)$(bindir)'
	$(INSTALL_PROGRAM) cli/ehrledger-verify '$(DESTDIR)$(bindir)/ehrledger-verify'

clean: clean-cli

clean-cli:
	rm -f cli/ehrledger-verify

.PHONY: install-cli clean-cli
