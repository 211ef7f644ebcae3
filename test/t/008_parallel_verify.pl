# verify() asks for parallel workers, and gets on without them: with
# max_worker_processes taken up by the sealer and the logical replication
# launcher, the leader checks every row alone and the report is the serial
# one, for a clean table and for a tampered one; once workers can be had
# again, they take part.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('parallel_verify');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'ehrledger'
ehrledger.database = 'postgres'
ehrledger.seal_interval = 0
max_worker_processes = 2
});
$node->start;
$node->safe_psql('postgres', q{
    CREATE EXTENSION ehrledger;
    CREATE TABLE obs (id int PRIMARY KEY, resource jsonb);
    SELECT ehrledger.protect('obs');
    INSERT INTO obs SELECT g, jsonb_build_object('value', g, 'note', repeat('n', g % 200))
      FROM generate_series(1, 20000) g;
    SELECT ehrledger.seal();
    INSERT INTO obs SELECT g, '{"unsealed": true}' FROM generate_series(20001, 20100) g;
});
ok($node->poll_query_until('postgres',
        q{SELECT count(*) = 2 FROM pg_stat_activity
           WHERE backend_type IN ('ehrledger sealer', 'logical replication launcher')}),
    'the sealer and the launcher hold both worker slots');

my $parallel = q{SET max_parallel_workers_per_gather = 2;
    SET min_parallel_table_scan_size = 0;
    SET client_min_messages = debug1;};
my $report = q{SELECT row(v.*)::text FROM ehrledger.verify('obs') v};

# report(parallel): the verify() report and what it said about workers.
sub report
{
    my ($settings) = @_;
    my ($rc, $stdout, $stderr) = $node->psql('postgres', "$settings $report");
    is($rc, 0, 'verify() runs') or diag($stderr);
    my ($workers) = $stderr =~ /(\d+ parallel workers planned, \d+ launched)/;
    return ($stdout, $workers // 'serial');
}

my ($serial) = report('SET max_parallel_workers_per_gather = 0;');
like($serial, qr/^\(t,\d+,20100,\[\],/, 'the serial report is clean');
my ($alone, $workers) = report($parallel);
is($workers, '2 parallel workers planned, 0 launched', 'no worker could be started');
is($alone, $serial, 'without workers the report is the serial one');

$node->safe_psql('postgres', q{
    SET session_replication_role = replica;
    ALTER TABLE obs DISABLE TRIGGER ALL;
    RESET session_replication_role;
    UPDATE obs SET resource = '{"value": 0}' WHERE id IN (7, 15000);
    DELETE FROM obs WHERE id = 9000;
});
($serial) = report('SET max_parallel_workers_per_gather = 0;');
like($serial, qr/row_modified.*missing_row/, 'the serial report names the changes');
($alone) = report($parallel);
is($alone, $serial, 'without workers a tampered table gets the serial report');

$node->append_conf('postgresql.conf', 'max_worker_processes = 8');
$node->restart;
my $with;
($with, $workers) = report($parallel);
is($workers, '2 parallel workers planned, 2 launched', 'with slots free, two workers take part');
is($with, $serial, 'and the report is the serial one');

$node->stop;
done_testing();
