-- ehrledger: the install script of the current version, built by the
-- Makefile from src/ehrledger.sql and each subsystem's SQL (see EXTENSION_SQL).
-- Installing 0.1 and taking every upgrade step in upgrade/ gives exactly the
-- same objects: sql/upgrade.sql compares the two.

\echo Use "CREATE EXTENSION ehrledger" to load this file. \quit
