# The hospital network through restarts and lying peers (issue 17): four
# hospitals h1..h4 as in 020_network.pl.
#
#   1. An early restart: h1 seals its first block right after peering,
#      restarts before its peers' subscriptions have caught up, and seals a
#      second.  A block that arrives before its predecessor is held back
#      (ehrledger.held_block) and admitted once the predecessor is here:
#      both blocks end final at all four, with no evidence and no
#      rejected block.
#   2. The same, for certain: a block delivered before its predecessor.
#   3. Malformed rows a peer publishes (a 63-byte signature, a 31-byte hash,
#      a NULL, an UPDATE) are recorded in ehrledger.rejected_row and
#      skipped; the stream from that peer keeps flowing.
#   4. remove_peer() of a hospital leaves the certificates it signed valid:
#      they are judged by the ledgered membership they were made under.
#   5. A hospital that joins with blocks already sealed: its chain, copied
#      in one table synchronization, is admitted whole.
#   6. A hospital restored from a pg_basebackup taken before its last final
#      blocks learns its chain from its peers before it seals: it takes
#      its blocks back, makes its slots again, and continues; seal() by
#      hand waits until it has learned; verify() names the rows lost with
#      the restore as lost_in_restore, and the rows of a shared table come
#      back from the peers' copies (an altered copy is refused).  Rows
#      written to the restored copy before it could rejoin (its peers
#      down), numbered inside the blocks it then takes back, get fresh
#      numbers at the rejoin and are sealed and final like any other.
#   7. The same after a point-in-time recovery to an LSN before its last
#      final block.
#   8. A peer that publishes a TRUNCATE: refused, recorded, skipped; the
#      stream from it flows on.
#
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use FindBin;
use lib "$FindBin::RealBin/lib";
use EhrNet;

my $started = time;
my @names = qw(h1 h2 h3 h4);

# --- Setup --------------------------------------------------------------------

# The hospitals, as in 020 and 022 (test/t/lib/EhrNet.pm).  add_peer() must
# succeed at the first try.
sub peer_up_or_die
{
	my @errors = peer_up(@_);
	die join("\n", @errors) if @errors;
}
new_hospital($_) for @names;

# --- 1. The early restart --------------------------------------------------------

peer_up_or_die($_) for @names;
# Right after peering: h1 seals, restarts at once, and seals again.
sql('h1', q{INSERT INTO t VALUES (1, 'first'); SELECT ehrledger.seal()});
$node{h1}->restart;
# (seal() by hand waits, as the sealer does, until h1 has learned from its
# peers after this start: it is refused with LD030 until then)
sql('h1', q{INSERT INTO t VALUES (2, 'second')});
wait_for('h1', q{SELECT ehrledger.seal() IS NOT NULL}, 'seals by hand once it has learned from its peers');
my $e1 = sealed_height('h1', 1);
my $e2 = sealed_height('h1', 2);
is($e2, $e1 + 1, "h1 sealed blocks $e1 and $e2 around the restart");
is_final_at('h1', $e2, @names);
is_final_at('h1', $e1, @names);
for my $name (@names)
{
	wait_for($name, q{SELECT count(*) = 0 FROM ehrledger.held_block}, 'holds no block back any more');
	is(sql($name, q{SELECT (SELECT count(*) FROM ehrledger.evidence) || ' ' || (SELECT count(*) FROM ehrledger.rejected_block)}),
		'0 0', "$name: the early restart left no evidence and no rejected block");
	is(sql($name, q{SELECT ok::text || ' ' || problems::text FROM ehrledger.verify()}), 'true []',
		"$name: verify() is ok");
}

# --- 2. A block that arrives before its predecessor, for certain ---------------

# h3 stops reading from h1; h1 seals blocks R and R+1; h1 then moves h3's
# slot past block R, and sends block R again after R+1 (a replay, as in
# 020_network.pl: the row is inserted a second time and the older copy
# removed in one transaction).  h3 receives R+1 first: it is held back, and
# admitted as soon as R comes.
# tamper(NAME, SQL): SQL at a hospital as superuser with the user triggers
# of ehrledger.block and ehrledger.ack disabled, each given back exactly its
# firing mode.
sub tamper
{
	my ($name, $sql) = @_;
	sql($name, qq{
		BEGIN;
		CREATE TEMP TABLE saved_trigger ON COMMIT DROP AS
			SELECT tgrelid::regclass AS rel, tgname, tgenabled FROM pg_trigger
			 WHERE tgrelid IN ('ehrledger.block'::regclass, 'ehrledger.ack'::regclass) AND NOT tgisinternal;
		ALTER TABLE ehrledger.block DISABLE TRIGGER USER;
		ALTER TABLE ehrledger.ack DISABLE TRIGGER USER;
		$sql;
		DO \$\$
		DECLARE r record;
		BEGIN
			FOR r IN SELECT * FROM saved_trigger LOOP
				EXECUTE format('ALTER TABLE %s %s TRIGGER %I', r.rel,
				               CASE r.tgenabled WHEN 'O' THEN 'ENABLE' WHEN 'A' THEN 'ENABLE ALWAYS'
				                                WHEN 'R' THEN 'ENABLE REPLICA' ELSE 'DISABLE' END, r.tgname);
			END LOOP;
		END
		\$\$;
		COMMIT;
	});
}
sql('h3', 'ALTER SUBSCRIPTION ehrledger_from_h1 DISABLE');
wait_for('h1', q{SELECT NOT active FROM pg_replication_slots WHERE slot_name = 'ehrledger_h3'},
	"h3's slot is no longer read");
sql('h1', q{INSERT INTO t VALUES (3, 'R'); SELECT ehrledger.seal()});
my $r = sealed_height('h1', 3);
my $skip_to = sql('h1', 'SELECT pg_current_wal_lsn()');
sql('h1', q{INSERT INTO t VALUES (4, 'R+1'); SELECT ehrledger.seal()});
is(sealed_height('h1', 4), $r + 1, "h1 sealed blocks $r and " . ($r + 1));
sql('h1', qq{SELECT pg_replication_slot_advance('ehrledger_h3', '$skip_to')});
tamper('h1', qq{
	CREATE TEMP TABLE replay AS SELECT * FROM ehrledger.block WHERE origin = 'h1' AND height = $r;
	ALTER TABLE ehrledger.block DROP CONSTRAINT block_pkey;
	INSERT INTO ehrledger.block SELECT * FROM replay;
	DELETE FROM ehrledger.block b USING (SELECT ctid FROM ehrledger.block WHERE origin = 'h1' AND height = $r ORDER BY ctid LIMIT 1) x
	 WHERE b.ctid = x.ctid;
	ALTER TABLE ehrledger.block ADD PRIMARY KEY (origin, height)
});
my %off3 = (h3 => -s $node{h3}->logfile);
sql('h3', 'ALTER SUBSCRIPTION ehrledger_from_h1 ENABLE');
is_final_at('h1', $r + 1, 'h3');
is_final_at('h1', $r, 'h3');
ok($node{h3}->log_contains(qr/ehrledger holds block @{[$r + 1]} of "h1" back until block $r of "h1" is here/, $off3{h3}),
	'h3: block ' . ($r + 1) . ' of h1 came first and was held back');
is(sql('h3', q{SELECT (SELECT count(*) FROM ehrledger.held_block) || ' ' || (SELECT count(*) FROM ehrledger.rejected_block)
             || ' ' || (SELECT count(*) FROM ehrledger.evidence)}),
	'0 0 0', 'h3: nothing is held any more, nothing was refused, no evidence');
my $chain_sql = q{SELECT string_agg(height || ':' || encode(block_hash, 'hex'), ',' ORDER BY height)
                    FROM ehrledger.block WHERE origin = 'h1'};
is(sql('h3', $chain_sql), sql('h1', $chain_sql), "h3 holds exactly h1's chain");
is(sql('h3', q{SELECT ok::text || ' ' || problems::text FROM ehrledger.verify()}), 'true []', 'h3: verify() is ok');

# --- 3. Malformed rows from a peer are recorded and skipped ------------------------

# h3 lies in form: it publishes an acknowledgment with a 63-byte signature,
# one of a 31-byte block hash, a shared row without its row (its NOT NULL
# dropped at h3), and an UPDATE of one of its acknowledgments (it publishes
# updates for that).  Any of these raised an error in its peers' apply
# workers, which then retried forever and received nothing more from h3.
my $hdr = sql('h1', q{SELECT encode(ehrledger._block_header('h1', 1), 'hex')});
my $sig = sql('h1', q{SELECT encode(signature, 'hex') FROM ehrledger.block WHERE origin = 'h1' AND height = 1});
my %off = map { $_ => -s $node{$_}->logfile } @names;
sql('h3', qq{
	INSERT INTO ehrledger.ack (origin, height, block_hash, acker, signature, header, origin_signature)
	VALUES ('h1', 1000000, decode(repeat('ab', 32), 'hex'), 'h3', decode(repeat('00', 63), 'hex'), '\\x$hdr', '\\x$sig');
	INSERT INTO ehrledger.ack (origin, height, block_hash, acker, signature, header, origin_signature)
	VALUES ('h1', 1000001, decode(repeat('ab', 31), 'hex'), 'h3', decode(repeat('00', 64), 'hex'), '\\x$hdr', '\\x$sig');
	ALTER TABLE ehrledger.shared_row ALTER COLUMN "row" DROP NOT NULL;
	INSERT INTO ehrledger.shared_row (origin, table_name, table_id, ledger_seq, columns, "row")
	VALUES ('h3', 'public.t', 1, 1, '[]', NULL);
	DELETE FROM ehrledger.shared_row WHERE "row" IS NULL;
	ALTER TABLE ehrledger.shared_row ALTER COLUMN "row" SET NOT NULL;
	ALTER PUBLICATION ehrledger_net SET (publish = 'insert, update, delete');
});
tamper('h3', q{UPDATE ehrledger.ack SET acked_at = acked_at + interval '1 s' WHERE origin = 'h1' AND height = 1 AND acker = 'h3'});
sql('h3', q{SELECT ehrledger.network_init()});
is(sql('h3', q{SELECT pubupdate::text || pubdelete::text FROM pg_publication WHERE pubname = 'ehrledger_net'}),
	'falsefalse', 'h3 publishes inserts only again');
# And then an honest block of h3, which reaches the others only on the same stream.
sql('h3', q{INSERT INTO t VALUES (5, 'after the malformed rows')});
my $b5 = sealed_height('h3', 5);
is_final_at('h3', $b5, @names);
for my $name (qw(h1 h2 h4))
{
	is(sql($name, q{SELECT string_agg(table_name || '/' || lower(operation) || ': ' || reason, '; ' ORDER BY rejected_at)
	                  FROM ehrledger.rejected_row}),
		'ack/insert: its signature is 63 bytes, not 64; ack/insert: its block_hash is 31 bytes, not 32; '
		. 'shared_row/insert: its row is NULL; ack/update: a peer may only add rows, not update them',
		"$name: the four malformed rows from h3 are recorded, each with why");
	ok($node{$name}->log_contains(qr/ehrledger refused a row of ehrledger.ack \(insert\) from a peer: its signature is 63 bytes/, $off{$name}),
		"$name: and the server log says so");
	ok(!$node{$name}->log_contains(qr/ERROR/, $off{$name}), "$name: no error in its log since");
	is(sql($name, q{SELECT count(*) FROM ehrledger.ack WHERE acker = 'h3' AND (origin, height) IN (('h1', 1), ('h1', 2))
	                  AND octet_length(signature) = 64 AND octet_length(block_hash) = 32}), '2',
		"$name: h3's genuine acks of h1's blocks 1 and 2 are there, unchanged");
	is(sql($name, q{SELECT ok::text || ' ' || problems::text FROM ehrledger.verify()}), 'true []', "$name: verify() is ok");
}

# --- 4. Removing a peer leaves earlier certificates valid ---------------------------

# The honest hospitals take h3 out.  Blocks final before, with h3's
# acknowledgment in their certificates, stay final: each certificate is
# judged by the membership it was made under (ledgered in
# ehrledger.membership), not today's; new blocks need 2 of the 3 left.
is(sql('h1', qq{SELECT count(*) FROM ehrledger.final_block f, jsonb_array_elements(f.certificate -> 'acks') a
                WHERE a ->> 'acker' = 'h3'}) > 0 ? 'yes' : 'no', 'yes',
	'h1 holds certificates with h3\'s acknowledgment in them');
for my $name (qw(h1 h2 h4))
{
	sql($name, q{SELECT ehrledger.remove_peer('h3')});
	is(sql($name, q{SELECT ehrledger.quorum()}), '2', "$name: without h3 the quorum is 2 of 3");
	is(sql($name, q{SELECT change || ' ' || name FROM ehrledger.membership ORDER BY change_seq DESC LIMIT 1}), 'remove h3',
		"$name: the removal is ledgered");
	is(sql($name, q{SELECT ok::text || ' ' || problems::text FROM ehrledger.verify()}), 'true []',
		"$name: verify() is ok: no bad_certificate for blocks final under the old membership");
}
sql('h1', q{INSERT INTO t VALUES (6, 'after h3 left')});
my $b6 = sealed_height('h1', 6);
is_final_at('h1', $b6, qw(h1 h2 h4));
is(sql('h2', qq{SELECT (certificate ->> 'quorum') || ' ' || (SELECT count(*) FROM ehrledger.membership)
                FROM ehrledger.final_block WHERE origin = 'h1' AND height = $b6}), '2 4',
	"h2: h1's block $b6 is final with quorum 2, under the membership after four changes (three adds, one removal)");

# --- 5. A hospital that joins with a chain already --------------------------------

# h5 seals three blocks before it peers with h1.  h1's subscription copies
# them in one COPY (the table synchronization), where each block must see
# the one copied before it: all are admitted, none held or refused.
new_hospital('h5');
sql('h5', q{INSERT INTO t VALUES (1, 'a'); SELECT ehrledger.seal();
            INSERT INTO t VALUES (2, 'b'); SELECT ehrledger.seal();
            INSERT INTO t VALUES (3, 'c'); SELECT ehrledger.seal()});
my $h5_height = sql('h5', q{SELECT max(height) FROM ehrledger.block WHERE origin = 'h5'});
ok($h5_height >= 3, 'h5 has a chain of three blocks or more');
# (h5 goes on sealing as it peers, its membership changes for one: the
# chain compared is the one it held before)
my $h5_chain = qq{SELECT string_agg(height || ':' || encode(block_hash, 'hex'), ',' ORDER BY height)
                    FROM ehrledger.block WHERE origin = 'h5' AND height <= $h5_height};
peer_up_or_die('h5', 'h1');
peer_up_or_die('h1', 'h5');
my $want = sql('h5', $h5_chain);
wait_for('h1', qq{SELECT ($h5_chain) = '$want'}, "holds h5's whole chain, copied in one table synchronization");
is(sql('h1', q{SELECT (SELECT count(*) FROM ehrledger.held_block) || ' ' || (SELECT count(*) FROM ehrledger.rejected_block)}),
	'0 0', 'h1: none of them was held back or refused');

# --- 6. A hospital restored from a backup taken before its last final blocks --------

# h1 is backed up (pg_basebackup), seals two more blocks that become final,
# and is lost.  Its backup is started in its place.  Before it seals, it
# learns from its peers how far its chain reached, takes back the two
# blocks (signed with its own key), and continues after them: no
# equivocation, no evidence, and its next block is final everywhere.
# h1 shares a table s: its rows travel to the peers, which keep copies.
# h1 also keeps a versioned table v, whose owner's trigger notes every
# UPDATE (ENABLE ALWAYS: it fires in replica mode too).
sql('h1', q{CREATE TABLE v (id int PRIMARY KEY, note text);
            SELECT ehrledger.protect('v', mode => 'versioned');
            CREATE TABLE v_updates (id int, by name);
            CREATE FUNCTION v_note() RETURNS trigger LANGUAGE plpgsql
                AS $$BEGIN INSERT INTO v_updates VALUES (OLD.id, current_user); RETURN NEW; END$$;
            CREATE TRIGGER v_note BEFORE UPDATE ON v FOR EACH ROW EXECUTE FUNCTION v_note();
            ALTER TABLE v ENABLE ALWAYS TRIGGER v_note;
            INSERT INTO v VALUES (1, 'v1 before the backup');
            CREATE TABLE s (id int PRIMARY KEY, note text);
            SELECT ehrledger.protect('s'); SELECT ehrledger.share('s');
            INSERT INTO s VALUES (1, 'before the backup')});
my $s_sealed = q{SELECT EXISTS (SELECT 1 FROM ehrledger.block WHERE origin = 'h1'
                                 AND (SELECT max(ledger_seq) FROM s) BETWEEN first_seq AND last_seq)};
wait_for('h1', $s_sealed, 'seals the first row of its shared table s');
$node{h1}->backup('before');
sql('h1', q{INSERT INTO t VALUES (7, 'after the backup'); INSERT INTO s VALUES (2, 'shared, after the backup')});
my $b7 = sealed_height('h1', 7);
# (a transaction rolled back uses up numbers, as any does: the blocks
# taken back will span more numbers than the restored copy skips ahead)
sql('h1', q{BEGIN; INSERT INTO t SELECT g, 'rolled back' FROM generate_series(100, 199) g; ROLLBACK});
sql('h1', q{INSERT INTO t VALUES (8, 'after the backup, too'); INSERT INTO s VALUES (3, 'shared, too')});
sealed_height('h1', 8);
wait_for('h1', $s_sealed, 'seals the rows of s written after the backup');
# (row 3 of s may be sealed in a block after that of row 8 of t: the last
# block is the one that counts)
my $b8 = sql('h1', q{SELECT max(height) FROM ehrledger.block WHERE origin = 'h1'});
is_final_at('h1', $b8, qw(h2 h4));
my $s_seqs = sql('h1', q{SELECT string_agg(ledger_seq::text, ',' ORDER BY id) FROM s});
for my $name (qw(h2 h4))
{
	wait_for($name, qq{SELECT string_agg(ledger_seq::text, ',' ORDER BY ledger_seq) = '$s_seqs'
	                     FROM ehrledger.shared_rows WHERE origin = 'h1' AND verified},
		"holds h1's three shared rows of s, verified");
}
# h2's copy of row 2 of s is altered: it must be refused when h1 asks for it.
sql('h2', q{UPDATE ehrledger.shared_row SET "row" = jsonb_set("row", '{note}', '"altered at h2"')
             WHERE origin = 'h1' AND "row" ->> 'id' = '2'});
my $h1_chain = q{SELECT string_agg(height || ':' || encode(block_hash, 'hex'), ',' ORDER BY height)
                   FROM ehrledger.block WHERE origin = 'h1'};
my $chain_before = sql('h1', $h1_chain);
my $range_end = sql('h1', qq{SELECT last_seq FROM ehrledger.block WHERE origin = 'h1' AND height = $b8});
my $vh = sql('h1', q{SELECT history::text FROM ehrledger.registered_table WHERE relid = 'v'::regclass});
$node{h1}->stop('immediate');
my $restored = PostgreSQL::Test::Cluster->new('h1_restored', port => $node{h1}->port);
$restored->init_from_backup($node{h1}, 'before');
# (pg_basebackup writes the node key readable by the group; the server
# refuses a key file anyone else may read)
chmod 0600, $restored->data_dir . '/ehrledger_node.key';
# With h2 and h4 down, h1 reaches one peer (h5) of the two it needs
# (n - quorum + 1 of h1, h2, h4, h5): it must not seal, not even by hand.
$node{$_}->stop for qw(h2 h4);
# The restored h1 starts with its sealer idle (seal_interval 0), so that no
# learning round (which may take blocks back from h5 alone, and keeps what
# it took) runs before the checks and writes below; it resumes at reload.
$restored->append_conf('postgresql.conf', "ehrledger.seal_interval = 0\n");
my $t0 = time;
$restored->start;
$node{h1} = $restored;
ok(sql('h1', q{SELECT max(height) FROM ehrledger.block WHERE origin = 'h1'}) < $b7,
	"the restored h1 starts without blocks $b7 and $b8");
my ($seal_ret, $seal_out, $seal_err) = $node{h1}->psql('ehr', q{\set VERBOSITY verbose
SELECT ehrledger.seal()});
like($seal_err, qr/LD030/, 'seal() by hand is refused (LD030) while h1 has not learned from enough peers');
# Writes go on meanwhile, unsealed: an insert into t and into the shared s,
# and on v an update of a version sealed before the backup, an insert, and
# an update of that.  Their numbers lie inside blocks $b7 to $b8, which
# the restored copy does not hold yet.
sql('h1', q{INSERT INTO t VALUES (20, 'after the restore, before the rejoin');
            INSERT INTO s VALUES (4, 'shared, before the rejoin');
            UPDATE v SET note = 'v1 before the rejoin' WHERE id = 1;
            INSERT INTO v VALUES (2, 'v2 before the rejoin');
            UPDATE v SET note = 'v2 changed before the rejoin' WHERE id = 2});
my $early = qq{SELECT string_agg(x, ',' ORDER BY x) FROM (
                SELECT 't ' || ledger_seq AS x FROM t WHERE id = 20
                UNION ALL SELECT 's ' || ledger_seq FROM s WHERE id = 4
                UNION ALL SELECT 'v ' || ledger_seq FROM v
                UNION ALL SELECT 'h ' || ledger_seq || ' ' || ledger_ended_seq FROM $vh) x};
my $early_before = sql('h1', $early);
is(sql('h1', qq{SELECT count(*) FROM (SELECT ledger_seq FROM t WHERE id = 20 UNION ALL SELECT ledger_seq FROM s WHERE id = 4
                                       UNION ALL SELECT ledger_seq FROM v WHERE id = 2) x
                 WHERE ledger_seq <= $range_end}), '3',
	"rows written before the rejoin are numbered inside blocks $b7 to $b8, which h1 has lost");
$restored->append_conf('postgresql.conf', "ehrledger.seal_interval = 200\n");
$restored->reload;
$node{$_}->start for qw(h2 h4);
wait_for('h1', q{SELECT EXISTS (SELECT 1 FROM ehrledger.rejoin WHERE started_at = pg_postmaster_start_time())},
	'learns from its peers how far its chain reached');
my $learned = time - $t0;
is(sql('h1', q{SELECT blocks_taken_back || ' ' || rows_taken_back FROM ehrledger.rejoin
               WHERE started_at = pg_postmaster_start_time()}),
	($b8 - $b7 + 1) . ' ' . sql('h2', qq{SELECT sum(row_count) FROM ehrledger.block WHERE origin = 'h1' AND height BETWEEN $b7 AND $b8}),
	"it took back blocks $b7 to $b8, with their rows (though its first attempts, with one peer of two, were not enough)");
is(sql('h1', qq{SELECT string_agg(height || ':' || encode(block_hash, 'hex'), ',' ORDER BY height)
                 FROM ehrledger.block WHERE origin = 'h1' AND height <= $b8}),
	$chain_before, "h1 holds its chain as it was before the loss, hash for hash");
# The six row versions written before the rejoin (t, s, two of v, and two
# ended versions of v in its history) have new numbers, after the blocks
# taken back; none of them is the number it had.
is(sql('h1', q{SELECT rows_renumbered FROM ehrledger.rejoin WHERE started_at = pg_postmaster_start_time()}), '6',
	'the rejoin renumbered the 6 row versions written before it');
is(sql('h1', qq{SELECT count(*) FROM (SELECT ledger_seq FROM t WHERE id = 20 UNION ALL SELECT ledger_seq FROM s WHERE id = 4
                                       UNION ALL SELECT ledger_seq FROM v
                                       UNION ALL SELECT ledger_seq FROM $vh WHERE id = 2
                                       UNION ALL SELECT ledger_ended_seq FROM $vh) x
                 WHERE ledger_seq > $range_end}), '7',
	"each now holds a number after block $b8: t's, s's, v's two, v's ended version and both ends in v's history");
isnt(sql('h1', $early), $early_before, 'their numbers changed');
is(sql('h1', q{SELECT string_agg(id::text, ',' ORDER BY id) FROM v_updates}), '1,2',
	"the owner's trigger on v fired for the application's two updates, and not for the renumbering");
sql('h1', q{INSERT INTO t VALUES (9, 'after the restore')});
my $b9 = sealed_height('h1', 9);
is(sql('h1', qq{SELECT min(height) FROM ehrledger.block WHERE origin = 'h1' AND height > $b8}), $b8 + 1,
	"its next block is @{[$b8 + 1]}, after the blocks it took back");
my $renumbered_in = sql('h1', qq{SELECT max(b.height) FROM ehrledger.block b,
                                   (SELECT ledger_seq AS q FROM t WHERE id = 20 UNION ALL SELECT ledger_seq FROM s WHERE id = 4
                                    UNION ALL SELECT ledger_seq FROM v UNION ALL SELECT ledger_seq FROM $vh WHERE id = 2
                                    UNION ALL SELECT ledger_ended_seq FROM $vh) x
                                  WHERE b.origin = 'h1' AND x.q BETWEEN b.first_seq AND b.last_seq
                                 HAVING count(*) = 7});
ok($renumbered_in ne '' && $renumbered_in > $b8, "the renumbered rows are sealed, in blocks after $b8");
is_final_at('h1', $_, qw(h1 h2 h4)) for ($b8 + 1) .. $b9;
my $final_after = time - $t0;
for my $name (qw(h2 h4))
{
	is(sql($name, q{SELECT count(*) FROM ehrledger.evidence WHERE accused = 'h1'}), '0',
		"$name: no evidence against the restored h1");
	is(sql($name, $h1_chain), sql('h1', $h1_chain), "$name holds the same chain of h1");
}
note sprintf('restored h1: learned its chain %.1f s after its start; its first new block final %.1f s after its start;'
	  . ' took back %s', $learned, $final_after,
	sql('h1', q{SELECT format('%s blocks, %s rows, %s acknowledgments, %s peer blocks, %s WAL switches, %s slots made again',
	                          blocks_taken_back, rows_taken_back, acks_taken_back, peer_blocks_fetched, wal_switches, slots_made)
	              FROM ehrledger.rejoin WHERE started_at = pg_postmaster_start_time()}));
# The rows of t sealed after the backup are gone with it: verify() names
# exactly those, by block and ledger_seq, as lost in the restore (not
# missing: that is for rows removed from a table).  The rows of the shared
# table s came back from the peers' copies: h2's altered copy was refused
# and recorded, h4's (or h5's) taken, each checked against its leaf.
is(sql('h1', q{SELECT (rows_lost - rows_restored) || ' ' || rows_restored FROM ehrledger.rejoin
               WHERE started_at = pg_postmaster_start_time()}),
	sql('h1', q{SELECT count(*) FROM ehrledger.verify() v, jsonb_array_elements(v.problems) p}) . ' 2',
	'the rejoin restored the 2 rows of s it lost, and the rows it could not restore are those verify() names');
wait_for('h4', q{SELECT count(*) = 4 FROM ehrledger.shared_rows WHERE origin = 'h1' AND verified},
	"holds h1's four shared rows of s, verified (the row written before the rejoin under its new number)");
is(sql('h1', q{SELECT string_agg(id || ' ' || note || ' ' || ledger_seq, ', ' ORDER BY id) FROM s}),
	sql('h4', q{SELECT string_agg(("row" ->> 'id') || ' ' || ("row" ->> 'note') || ' ' || ledger_seq, ', ' ORDER BY ledger_seq)
	              FROM ehrledger.shared_row WHERE origin = 'h1'}),
	'the rows of s are back at h1, with their own ledger_seq');
like(sql('h1', q{SELECT string_agg(operation || ': ' || reason, '; ') FROM ehrledger.rejected_row WHERE operation = 'RESTORE'}),
	qr/^RESTORE: a copy of row \d+ from peer "h2" was refused: the copy of row \d+ of "public.s" does not encode to the leaf its block holds$/,
	"h2's altered copy was refused and recorded, not inserted");
is(sql('h1', q{SELECT string_agg((p ->> 'kind') || ' ' || (p ->> 'block') || ' ' || (p ->> 'ledger_seq'), ', '
                                 ORDER BY (p ->> 'ledger_seq')::bigint)
                 FROM ehrledger.verify() v, jsonb_array_elements(v.problems) p}),
	sql('h2', qq{SELECT string_agg('lost_in_restore ' || b.height || ' ' || l.seq, ', ' ORDER BY l.seq)
	               FROM ehrledger.block b, generate_series(0, b.row_count::int - 1) i,
	                    LATERAL (SELECT ('x' || encode(substr(b.leaves, i * 44 + 1, 8), 'hex'))::bit(64)::bigint AS seq) l
	              WHERE b.origin = 'h1' AND b.height BETWEEN $b7 AND $b8
	                AND l.seq NOT IN (SELECT ledger_seq FROM ehrledger.shared_row WHERE origin = 'h1')}),
	"verify() at the restored h1 names exactly the rows of t in blocks $b7 to $b8 as lost_in_restore, and nothing else");
is(sql('h1', q{SELECT ok::text || ' ' || problems::text FROM ehrledger.verify('s')}), 'true []',
	'verify() of s is ok: its restored rows are the rows sealed');
is(sql('h1', q{SELECT ok::text || ' ' || problems::text FROM ehrledger.verify('v')}), 'true []',
	'verify() of v is ok: its versions and their ends written before the rejoin were renumbered and sealed');
is(sql('h1', q{SELECT string_agg(id || ' ' || note, ', ' ORDER BY id) FROM v}),
	'1 v1 before the rejoin, 2 v2 changed before the rejoin', 'v reads as the application wrote it');
for my $name (qw(h2 h4))
{
	is(sql($name, q{SELECT ok::text || ' ' || problems::text FROM ehrledger.verify()}), 'true []', "$name: verify() is ok");
}

# --- 7. A point-in-time recovery to before its last final block -----------------

# h1 archives its WAL; after a backup it seals blocks C1 and C2, both final;
# it is lost, and recovered from the backup and the archive up to an LSN
# between C1 and C2.  It takes C2 back and continues after it.
$node{h1}->enable_archiving;
$node{h1}->restart;
wait_for('h1', q{SELECT EXISTS (SELECT 1 FROM ehrledger.rejoin WHERE started_at = pg_postmaster_start_time())},
	'after a plain restart, learns its chain again (nothing to take back)');
is(sql('h1', q{SELECT blocks_taken_back FROM ehrledger.rejoin WHERE started_at = pg_postmaster_start_time()}), '0',
	'a plain restart takes nothing back');
$node{h1}->backup('b2');
sql('h1', q{INSERT INTO t VALUES (10, 'C1')});
my $c1 = sealed_height('h1', 10);
is_final_at('h1', $c1, qw(h2 h4));
my $target = sql('h1', 'SELECT pg_current_wal_insert_lsn()');
sql('h1', q{INSERT INTO t VALUES (11, 'C2')});
my $c2 = sealed_height('h1', 11);
is_final_at('h1', $c2, qw(h2 h4));
my $seg = sql('h1', 'SELECT pg_walfile_name(pg_current_wal_insert_lsn())');
sql('h1', 'SELECT pg_switch_wal()');
wait_for('h1', qq{SELECT last_archived_wal >= '$seg' FROM pg_stat_archiver}, 'has archived the WAL past C2');
$chain_before = sql('h1', $h1_chain);
my $c2_seq = sql('h1', q{SELECT ledger_seq FROM t WHERE id = 11});
$node{h1}->stop('immediate');
my $pitr = PostgreSQL::Test::Cluster->new('h1_pitr', port => $node{h1}->port);
$pitr->init_from_backup($node{h1}, 'b2', has_restoring => 1);
$pitr->append_conf('postgresql.conf', qq{
recovery_target_lsn = '$target'
recovery_target_action = 'promote'
});
chmod 0600, $pitr->data_dir . '/ehrledger_node.key';
$t0 = time;
$pitr->start;
$node{h1} = $pitr;
wait_for('h1', q{SELECT NOT pg_is_in_recovery()}, 'recovered to the LSN between C1 and C2, and promoted');
wait_for('h1', q{SELECT EXISTS (SELECT 1 FROM ehrledger.rejoin WHERE started_at = pg_postmaster_start_time())},
	'learns its chain from its peers');
is(sql('h1', q{SELECT blocks_taken_back FROM ehrledger.rejoin WHERE started_at = pg_postmaster_start_time()}), '1',
	"it took back C2 (block $c2), which the recovery stopped short of");
is(sql('h1', qq{SELECT string_agg(DISTINCT p ->> 'kind', ',') || ' ' || count(*) || ' '
                      || bool_or((p ->> 'ledger_seq')::bigint = $c2_seq)
                 FROM ehrledger.verify() v, jsonb_array_elements(v.problems) p}),
	'lost_in_restore 3 true', "verify(): C2's row is lost_in_restore, with the two of t lost before");
is(sql('h1', $h1_chain), $chain_before, 'and holds its chain as it was, hash for hash');
sql('h1', q{INSERT INTO t VALUES (12, 'after the point-in-time recovery')});
my $c3 = sealed_height('h1', 12);
is($c3, $c2 + 1, "its next block is $c3");
is_final_at('h1', $c3, qw(h1 h2 h4));
note sprintf('recovered h1: its first new block final %.1f s after its start', time - $t0);
is(sql($_, q{SELECT count(*) FROM ehrledger.evidence WHERE accused = 'h1'}), '0', "$_: no evidence against h1")
  for qw(h2 h4);

# --- 8. A peer that publishes a TRUNCATE ---------------------------------------

# A hospital's publication sends inserts only; a lying one changes it to
# send a TRUNCATE of ehrledger.shared_row (which would empty every
# hospital's copy, its own rows' included).  Its peers refuse it, record
# it, and skip that transaction: the stream from it flows on.
my $shared_at_h2 = sql('h2', q{SELECT count(*) FROM ehrledger.shared_row});
ok($shared_at_h2 > 0, "h2 holds shared rows ($shared_at_h2)");
sql('h4', q{ALTER PUBLICATION ehrledger_net SET (publish = 'insert, truncate');
            SET session_replication_role = replica;
            ALTER TABLE ehrledger.shared_row DISABLE TRIGGER ehrledger_no_truncate;
            TRUNCATE ehrledger.shared_row});
wait_for('h2', q{SELECT EXISTS (SELECT 1 FROM ehrledger.rejected_row WHERE operation = 'TRUNCATE' AND origin = 'h4')},
	"records h4's TRUNCATE as refused");
is(sql('h2', q{SELECT table_name || ': ' || reason FROM ehrledger.rejected_row WHERE operation = 'TRUNCATE'}) =~
	s/ending at [0-9A-F]+\/[0-9A-F]+/ending at LSN/r,
	'shared_row: a peer may only add rows, not truncate tables: its transaction ending at LSN was skipped',
	'with the table and the LSN of the transaction it skipped');
is(sql('h2', q{SELECT count(*) FROM ehrledger.shared_row}), $shared_at_h2, 'h2 still holds every shared row');
sql('h4', q{INSERT INTO t VALUES (100, 'after its TRUNCATE')});
my $h4_next = sealed_height('h4', 100);
is_final_at('h4', $h4_next, qw(h2 h1));
is(sql('h2', q{SELECT subenabled FROM pg_subscription WHERE subname = 'ehrledger_from_h4'}), 't',
	"h2's subscription to h4 is enabled: its stream flows on after the skipped transaction");

$node{$_}->stop for @names, 'h5';
note sprintf('runtime: %.1f s', time - $started);
done_testing();
