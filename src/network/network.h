/*
 * network/network.h
 *		The network subsystem: signed blocks and acknowledgments between
 *		hospitals over logical replication, finality, evidence, sharing.
 *		states.sql's head comment draws the states a block goes through;
 *		states.sql alone moves a block from one to the next.
 */
#ifndef NETWORK_NETWORK_H
#define NETWORK_NETWORK_H

#include "ehrledger.h"

/* network.c: called by the sealer and module load */
extern void network_block_sealed(const char *origin, int64 height);
extern void ledger_check_pending(void);
extern bool ledger_may_seal(void);
extern void ledger_require_rejoined(void);
extern void network_init_hooks(void);

#endif							/* NETWORK_NETWORK_H */
