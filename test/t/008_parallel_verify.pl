# verify() asks for parallel workers, and gets on without them: with
# max_worker_processes taken up by the sealer and the logical replication
# launcher, the leader checks every row alone and the report is the serial
# one, for a clean table and for a tampered one; once workers can be had
# again, they take part, also when they start before the leader has read
# the sealed leaves.
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

# The workers of the first table's pass start before the leader has read
# the sealed leaves, and keep what they compute until it publishes them.
# Here the leader is held up where it reads them (a REINDEX of the block
# table's TOAST index, in an open transaction, locks it out) until both
# workers have computed every row and wait; the reports are still the
# serial ones, clean and tampered.
$node->safe_psql('postgres', q{
    CREATE TABLE vitals (id int PRIMARY KEY, resource jsonb);
    SELECT ehrledger.protect('vitals');
    INSERT INTO vitals SELECT g, jsonb_build_object('pulse', 60 + g % 40, 'note', repeat('v', g % 300))
      FROM generate_series(1, 20000) g;
    SELECT ehrledger.seal();
});
my $toast_index = $node->safe_psql('postgres', q{
    SELECT indexrelid::regclass FROM pg_index
     WHERE indrelid = (SELECT reltoastrelid FROM pg_class WHERE oid = 'ehrledger.block'::regclass)});
my $vitals = q{SELECT row(v.*)::text FROM ehrledger.verify('vitals') v};

# held(): the parallel report of vitals with the leader held up, and how
# many leaves the workers computed before it published them.
sub held
{
    my $holder = $node->background_psql('postgres');
    $holder->query_safe("BEGIN; REINDEX INDEX $toast_index;");
    my $verifier = $node->background_psql('postgres', on_error_stop => 0);
    $verifier->query_until(qr/started/,
        "$parallel SET client_min_messages = debug2;\n\\echo started\n$vitals;\n");
    # (a worker that got no page of the scan, when the other was quicker to
    # start under load, has nothing to wait for and is gone)
    ok($node->poll_query_until('postgres', q{
            SELECT count(*) > 0 AND bool_and(wait_event IS NOT DISTINCT FROM 'Extension')
              FROM pg_stat_activity WHERE backend_type = 'parallel worker'}),
        'the workers computed their rows and wait for the leaves');
    $holder->query_safe('COMMIT');
    my $report = $verifier->query(q{SELECT 'done'});
    my $stderr = $verifier->{stderr};
    $holder->quit;
    $verifier->quit;
    my $computed = 0;
    $computed += $1 while $stderr =~ /computed (\d+) leaves before the sealed ones came/g;
    $report =~ s/\ndone$//;
    return ($report, $computed);
}

my ($rc, $vserial) = $node->psql('postgres', "SET max_parallel_workers_per_gather = 0; $vitals");
like($vserial, qr/^\(t,\d+,20000,\[\],/, 'vitals: the serial report is clean');
my ($early, $computed) = held();
is($computed, 20000, 'the workers computed the leaves of every row before the leader read them');
is($early, $vserial, 'and the report is the serial one');

$node->safe_psql('postgres', q{
    SET session_replication_role = replica;
    ALTER TABLE vitals DISABLE TRIGGER ALL;
    RESET session_replication_role;
    UPDATE vitals SET resource = '{"pulse": 0}' WHERE id IN (2, 11000, 19999);
    DELETE FROM vitals WHERE id = 5000;
});
(undef, $vserial) = $node->psql('postgres', "SET max_parallel_workers_per_gather = 0; $vitals");
like($vserial, qr/row_modified.*missing_row/, 'vitals: the serial report names the changes');
($early, $computed) = held();
cmp_ok($computed, '>', 0, 'tampered: the workers computed ahead of the leader');
is($early, $vserial, 'and the report is the serial one');

$node->stop;
done_testing();
