# EhrNet: a network of hospitals for the TAP tests (docs/format.md §18).
#
# Each hospital is a PostgreSQL::Test::Cluster with the extension in
# database "ehr" and table t protected; after peering, every hospital
# publishes its own blocks and acknowledgments and subscribes to the
# others'.  The hospitals and their node keys are in %node and %key, which
# the tests use directly ($node{h1}->stop('fast'), $key{h2}).
#
#   new_hospital(NAME, [conf => LINES], [sql => SQL])   a started hospital
#   peer_up(NAME, [PEER...])    add_peer() of each other hospital (or those
#                               named); the errors
#   network_up(NAME...)         peer_up() at each (a test each: no error), then
#                               wait until every subscription has its tables
#                               ready (a test each)
#   sql(NAME, SQL), conninfo(NAME)
#   wait_for(NAME, SQL, WHAT)   poll a boolean query; one test
#   is_final_at(ORIGIN, HEIGHT, NAME...)   one test per hospital
#   sealed_height(NAME, ID, [TABLE])       the height of the block sealing a row
#   holds_same_blocks(REF, NAME, WHAT)    the same blocks as REF; one test
#   chain_sql(ORIGIN)           "height:hash,..." of ORIGIN's blocks, as SQL
#
package EhrNet;

use strict;
use warnings;
use Exporter 'import';
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes;

our @EXPORT = qw(%node %key new_hospital peer_up network_up sql conninfo wait_for
  is_final_at sealed_height holds_same_blocks chain_sql);

our %node;
our %key;

# The settings of every hospital.  wal_retrieve_retry_interval: how soon a
# subscription retries a peer that was down (default 5 s); only to keep the
# tests short.
my $conf = q{
shared_preload_libraries = 'ehrledger'
wal_level = logical
ehrledger.database = 'ehr'
ehrledger.seal_interval = 200
max_worker_processes = 24
max_logical_replication_workers = 12
max_replication_slots = 10
max_wal_senders = 10
wal_retrieve_retry_interval = '500ms'
};

sub new_hospital
{
	my ($name, %opt) = @_;
	my $n = PostgreSQL::Test::Cluster->new($name);
	$n->init(allows_streaming => 'logical');
	$n->append_conf('postgresql.conf', "${conf}ehrledger.node_name = '$name'\n" . ($opt{conf} // ''));
	$n->start;
	$n->safe_psql('postgres', 'CREATE DATABASE ehr');
	$n->safe_psql('ehr', q{
		CREATE EXTENSION ehrledger;
		CREATE TABLE t (id int PRIMARY KEY, v text);
		SELECT ehrledger.protect('t');
	} . ($opt{sql} // ''));
	$node{$name} = $n;
	$key{$name} = $n->safe_psql('ehr', q{SELECT encode(ehrledger.node_public_key(), 'hex')});
	return $n;
}

sub sql
{
	my ($name, $sql) = @_;
	return $node{$name}->safe_psql('ehr', $sql);
}

# The connection string a peer uses to reach a hospital's database.
sub conninfo
{
	my ($name) = @_;
	return $node{$name}->connstr('ehr');
}

# peer_up(NAME, [PEER...]): add_peer() at NAME of each other hospital (or
# of those named); returns the errors, one per failed add_peer().
sub peer_up
{
	my ($i, @to) = @_;
	@to = grep { $_ ne $i } sort keys %node unless @to;
	my @errors;
	for my $j (@to)
	{
		my ($ret, $out, $err) = $node{$i}->psql('ehr',
			sprintf(q{SELECT ehrledger.add_peer('%s', $c$%s$c$, '\x%s'::bytea)}, $j, conninfo($j), $key{$j}));
		push @errors, "add_peer('$j'): $err" if $ret != 0;
	}
	return @errors;
}

# wait_for(NAME, SQL, WHAT): polls a boolean query at a hospital until it is
# true; one test, named WHAT.
sub wait_for
{
	my ($name, $sql, $what) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	return ok($node{$name}->poll_query_until('ehr', $sql), "$name: $what");
}

sub network_up
{
	my (@names) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	for my $i (@names)
	{
		is(join("\n", peer_up($i, grep { $_ ne $i } @names)), '', "$i: add_peer() of each other hospital succeeds");
	}
	my $tables = 4 * (@names - 1);
	for my $name (@names)
	{
		wait_for($name, qq{
			SELECT count(*) = $tables AND bool_and(r.srsubstate = 'r')
			  FROM pg_subscription s JOIN pg_subscription_rel r ON r.srsubid = s.oid
			 WHERE s.subname LIKE 'ehrledger\\_from\\_%'},
			'its subscriptions to the peers are set up, the four tables of each ready');
	}
}

# is_final_at(ORIGIN, HEIGHT, NAME...): waits until the block is final at
# each hospital, one test each.
sub is_final_at
{
	my ($origin, $height, @at) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	for my $name (@at)
	{
		wait_for($name, qq{
			SELECT EXISTS (SELECT 1 FROM ehrledger.final_block WHERE origin = '$origin' AND height = $height)},
			"block $height of $origin becomes final");
	}
}

# sealed_height(NAME, ID, [TABLE]): waits until the row with this id of
# TABLE (t) is sealed at the hospital, and returns the height of the block
# holding it (-1 if it was not sealed in time).
sub sealed_height
{
	my ($name, $id, $table) = @_;
	$table //= 't';
	my $sql = qq{
		SELECT height FROM ehrledger.block
		 WHERE origin = ehrledger.node_name()
		   AND (SELECT ledger_seq FROM $table WHERE id = $id) BETWEEN first_seq AND last_seq};
	$node{$name}->poll_query_until('ehr', "SELECT EXISTS ($sql)")
	  or diag "row $id of $table was not sealed at $name";
	my $h = sql($name, $sql);
	return $h eq '' ? -1 : $h;
}

# holds_same_blocks(REF, NAME, WHAT): waits until NAME holds the same blocks
# (origin, height, block_hash) as REF, reading both again at each try (REF
# may seal meanwhile, and its new block be on its way); one test, named WHAT.
sub holds_same_blocks
{
	my ($ref, $name, $what) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my $blocks = q{
		SELECT coalesce(string_agg(origin || ':' || height || ':' || encode(block_hash, 'hex'), ' '
		                           ORDER BY origin, height), '')
		  FROM ehrledger.block};
	my ($here, $there);
	for (1 .. 10 * $PostgreSQL::Test::Utils::timeout_default)
	{
		($here, $there) = (sql($ref, $blocks), sql($name, $blocks));
		last if $here eq $there;
		Time::HiRes::sleep(0.1);
	}
	return is($there, $here, "$name: $what");
}

# The chain of a hospital as another holds it: "height:block_hash,..." in
# height order.
sub chain_sql
{
	my ($origin) = @_;
	return qq{SELECT coalesce(string_agg(height || ':' || encode(block_hash, 'hex'), ',' ORDER BY height), '')
	            FROM ehrledger.block WHERE origin = '$origin'};
}

1;
