/*
 * ehrledger 0.3 -> 0.4.
 *
 * A fresh CREATE EXTENSION runs every script from 0.1 up to this one, so a
 * new install and an upgraded one are the same by construction.
 */
\echo Use "ALTER EXTENSION ehrledger UPDATE TO '0.4'" to load this file. \quit


-- Section: privileges.  ehrledger never runs a table owner's code (casts,
-- triggers, domain checks, index expressions) with raised rights.


-- Section: consent, actors and the access log.


-- Section: sealing and locks.


-- Section: verification core.
