# An origin stopped in mid-stream, again and again (issue 17): four
# hospitals h1..h4 (test/t/lib/EhrNet.pm).  pgbench writes at h1 into a
# protected table (obs) and a protected, shared one (rx), whose rows travel
# with h1's blocks.  Four times, while rows are being sealed and a block
# waits for its acknowledgments, h1 is stopped (fast, immediate, fast,
# immediate: the second is a crash), started again, and pgbench goes on
# writing.  Afterwards every block of h1 is final at all four, and the four
# hold the same blocks, hash for hash; no hospital holds evidence, a
# rejected or held block or a rejected row; every shared row arrived and
# verifies against h1's blocks; verify() is ok at each hospital; and each
# start of h1 learned its chain from its peers with nothing to take back.
# (Before all that, add_peer() is run while catalog changes commit.)
#
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/lib";
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use IPC::Run;
use EhrNet;

my $started = time;
my @names = qw(h1 h2 h3 h4);
my @modes = qw(fast immediate fast immediate);

# Peering while transactions with catalog changes commit at every
# hospital (a temporary table made and dropped, 200 times a second), as table
# synchronizations do: on PostgreSQL 15 that made add_peer() fail in about
# half the tries ("snapshot reference ... is not owned by resource owner
# TopTransaction") until it made its slot in a subtransaction.
new_hospital($_) for @names;
my $dir = PostgreSQL::Test::Utils::tempdir();
my $pgbench = $node{h1}->config_data('--bindir') . '/pgbench';
PostgreSQL::Test::Utils::append_to_file("$dir/ddl.sql", "CREATE TEMP TABLE x (a int); DROP TABLE x;\n");
my @ddl = map {
	IPC::Run::start([ $pgbench, '-n', '-c', '1', '-R', '200', '-T', '300', '-f', "$dir/ddl.sql",
	                  '-h', $node{$_}->host, '-p', $node{$_}->port, 'ehr' ],
	                '>', \my $out, '2>', \my $err)
} @names;
network_up(@names);
$_->kill_kill for @ddl;
sql('h1', q{
	CREATE TABLE obs (id bigserial PRIMARY KEY, patient text NOT NULL, value int NOT NULL,
	                  at timestamptz NOT NULL DEFAULT now());
	SELECT ehrledger.protect('obs');
	CREATE TABLE rx (id bigserial PRIMARY KEY, patient text NOT NULL, drug text NOT NULL, dose numeric NOT NULL);
	SELECT ehrledger.protect('rx');
	SELECT ehrledger.share('rx');
});

# pgbench at h1: three observations for every prescription, two clients,
# one row per transaction.
PostgreSQL::Test::Utils::append_to_file("$dir/obs.sql", q{
\set p random(1, 500)
INSERT INTO obs (patient, value) VALUES ('pat-' || :p, :p % 120 + 40);
});
PostgreSQL::Test::Utils::append_to_file("$dir/rx.sql", q{
\set p random(1, 500)
INSERT INTO rx (patient, drug, dose) VALUES ('pat-' || :p, 'amoxicillin', 250 + :p);
});

# pgbench(ARGS...): pgbench at h1 in the background.
sub pgbench
{
	my @args = @_;
	my ($out, $err) = ('', '');
	my $h = IPC::Run::start(
		[ $pgbench, '-n', '-c', '2', '-j', '1', '-f', "$dir/obs.sql\@3", '-f', "$dir/rx.sql\@1", @args,
		  '-h', $node{h1}->host, '-p', $node{h1}->port, 'ehr' ],
		'>', \$out, '2>', \$err);
	return { run => $h, out => \$out, err => \$err };
}

my $rows_sql = q{SELECT (SELECT count(*) FROM obs) + (SELECT count(*) FROM rx)};
# (h1's first start is recorded once it has learned from the peers it got
# since: under load, after this point unless waited for)
wait_for('h1', q{SELECT EXISTS (SELECT 1 FROM ehrledger.rejoin WHERE started_at = pg_postmaster_start_time())},
	"its first start is recorded once its peers answer");
my $since = sql('h1', q{SELECT coalesce(max(started_at), '-infinity') FROM ehrledger.rejoin});

for my $round (1 .. @modes)
{
	my $mode = $modes[ $round - 1 ];
	my $before = sql('h1', $rows_sql);
	# (-T: far longer than the round; the stop ends it)
	my $bench = pgbench('-T', '120');
	# Stopped while a block of h1 waits for its acknowledgments.
	ok($node{h1}->poll_query_until('ehr', qq{
		SELECT ($rows_sql) >= $before + 300
		   AND EXISTS (SELECT 1 FROM ehrledger.block b WHERE origin = 'h1'
		                  AND NOT EXISTS (SELECT 1 FROM ehrledger.final_block f
		                                   WHERE f.origin = b.origin AND f.height = b.height))}),
		"round $round: pgbench has written 300 rows at h1, and a block of h1 is not final yet");
	my $in_flight = sql('h1', q{
		SELECT (SELECT count(*) FROM ehrledger.block b WHERE origin = 'h1'
		           AND NOT EXISTS (SELECT 1 FROM ehrledger.final_block f WHERE f.origin = b.origin AND f.height = b.height))
		       || ' blocks not final, '
		       || (SELECT count(*) FROM obs WHERE ledger_seq > (SELECT coalesce(max(last_seq), 0) FROM ehrledger.block
		                                                          WHERE origin = 'h1'))
		       || ' rows of obs unsealed'});
	$node{h1}->stop($mode);
	$bench->{run}->finish;
	note "round $round: h1 stopped ($mode) with $in_flight; pgbench: "
	  . join(' ', grep { /aborted|processed/ } split /\n/, ${ $bench->{out} } . ${ $bench->{err} });
	$node{h1}->start;
	wait_for('h1', q{SELECT EXISTS (SELECT 1 FROM ehrledger.rejoin WHERE started_at = pg_postmaster_start_time())},
		"round $round: after the $mode stop, it learns its chain from its peers");
}

# Writing goes on after the last start, to the end.
my $last = pgbench('-t', '150');
ok($last->{run}->finish, 'after the last start pgbench writes 300 more rows at h1')
  or diag ${ $last->{err} };

# (n - quorum + 1 = 2 peers answering are enough to learn from)
is(sql('h1', qq{SELECT count(*) || ' ' || sum(blocks_taken_back) || ' ' || sum(rows_taken_back) || ' ' || (min(peers_reached) >= 2)::text
               FROM ehrledger.rejoin WHERE started_at > '$since'}),
	scalar(@modes) . ' 0 0 true',
	'each of the ' . scalar(@modes) . ' starts learned from enough peers and took nothing back');

# Every row of h1 is sealed, and every block of h1 is final at all four.
ok($node{h1}->poll_query_until('ehr', q{
	SELECT greatest((SELECT max(ledger_seq) FROM obs), (SELECT max(ledger_seq) FROM rx))
	       <= (SELECT max(last_seq) FROM ehrledger.block WHERE origin = 'h1')}),
	'h1: every row of obs and rx is sealed');
my $top = sql('h1', q{SELECT max(height) FROM ehrledger.block WHERE origin = 'h1'});
for my $name (@names)
{
	wait_for($name, qq{SELECT count(*) = $top FROM ehrledger.final_block WHERE origin = 'h1' AND height <= $top},
		"all $top blocks of h1 up to its newest are final");
}

# The four hold the same blocks, hash for hash.
holds_same_blocks('h1', $_, 'holds the same blocks as h1: the same (origin, height, block_hash)')
  for qw(h2 h3 h4);

my $rx_rows = sql('h1', q{SELECT count(*) FROM rx});
for my $name (@names)
{
	is(sql($name, q{SELECT (SELECT count(*) FROM ehrledger.evidence) || ' ' || (SELECT count(*) FROM ehrledger.rejected_block)
	                 || ' ' || (SELECT count(*) FROM ehrledger.rejected_row) || ' ' || (SELECT count(*) FROM ehrledger.held_block)}),
		'0 0 0 0', "$name: no evidence, no rejected block, no rejected row, no block held back");
	is(sql($name, q{SELECT ok::text || ' ' || problems::text FROM ehrledger.verify()}), 'true []',
		"$name: verify() is ok");
	next if $name eq 'h1';
	wait_for($name, qq{SELECT count(*) = $rx_rows AND bool_and(verified) AND bool_and(final) FROM ehrledger.shared_rows
	                    WHERE origin = 'h1' AND table_name = 'public.rx'},
		"all $rx_rows shared rows of rx arrived, verified against h1's blocks, and final");
}

$node{$_}->stop for @names;
note sprintf('runtime: %.1f s', time - $started);
done_testing();
