# Inserts from 8 pgbench clients while the background sealer runs, then an
# immediate stop (as in a crash) and a restart: every committed row is still
# there, everything gets sealed, and verify() is ok.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('hospital');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'ehrledger'
ehrledger.database = 'postgres'
ehrledger.seal_interval = 200
synchronous_commit = on
max_connections = 40
});
$node->start;

ok(-f $node->data_dir . '/ehrledger_node.key', 'node key created on first start');
my $mode = (stat($node->data_dir . '/ehrledger_node.key'))[2] & 07777;
is(sprintf('%04o', $mode), '0600', 'node key file has mode 0600');

$node->safe_psql('postgres', q{
    CREATE EXTENSION ehrledger;
    CREATE TABLE obs (id bigserial PRIMARY KEY, client int NOT NULL, resource jsonb NOT NULL);
    SELECT ehrledger.protect('obs');
});
my $key = $node->safe_psql('postgres', q{SELECT encode(ehrledger.node_public_key(), 'hex')});

my $insert = q{INSERT INTO obs (client, resource) VALUES (:client_id,
    jsonb_build_object('resourceType', 'Observation', 'status', 'final',
                       'code', '8867-4', 'value', random() * 100));};

# A run that completes: we know exactly how many rows committed.
$node->pgbench('-n -c 8 -j 2 -t 300', 0,
    [qr{number of transactions actually processed: 2400/2400}], [qr{^$}],
    'pgbench: 8 clients insert 2400 rows', { 'insert' => $insert });

# Crash right away, very likely with rows committed but not yet sealed.
$node->stop('immediate');
$node->start;

is($node->safe_psql('postgres', 'SELECT count(*) FROM obs'), '2400',
    'every committed row survived the crash');
is($node->safe_psql('postgres', q{SELECT encode(ehrledger.node_public_key(), 'hex')}),
    $key, 'the node key is the same after restart');

ok($node->poll_query_until('postgres', q{
    SELECT count(*) = 0 FROM obs
     WHERE ledger_seq > (SELECT coalesce(max(last_seq), 0) FROM ehrledger.blocks)}),
    'the background sealer seals every row after the restart');
is($node->safe_psql('postgres', 'SELECT sum(row_count) - (SELECT count(*) FROM ehrledger.enrolled_table) FROM ehrledger.blocks'), '2400',
    'each row is sealed exactly once');
is($node->safe_psql('postgres', 'SELECT ok FROM ehrledger.verify()'), 't',
    'verify() is ok after crash and restart');

# Now crash in the middle of the load: pgbench loses its connections.
my $script = $node->basedir . '/insert.sql';
append_to_file($script, $insert);
my ($out, $err) = ('', '');
my $bench = IPC::Run::start(
    [ 'pgbench', '-n', '-c', '8', '-j', '2', '-T', '60', '-f', $script,
      '-h', $node->host, '-p', $node->port, 'postgres' ],
    '>', \$out, '2>', \$err);
ok($node->poll_query_until('postgres', 'SELECT count(*) > 4000 FROM obs'),
    'load is running');
sleep 1;
$node->stop('immediate');
$bench->finish;
$node->start;

my $rows = $node->safe_psql('postgres', 'SELECT count(*) FROM obs');
cmp_ok($rows, '>', 4000, "rows committed before the crash are there ($rows)");
ok($node->poll_query_until('postgres', q{
    SELECT count(*) = 0 FROM obs
     WHERE ledger_seq > (SELECT coalesce(max(last_seq), 0) FROM ehrledger.blocks)}),
    'everything is sealed after the second restart');
is($node->safe_psql('postgres', 'SELECT sum(row_count) - (SELECT count(*) FROM ehrledger.enrolled_table) FROM ehrledger.blocks'), $rows,
    'no row is lost or sealed twice');
is($node->safe_psql('postgres', q{SELECT ok::text || ' ' || problems::text FROM ehrledger.verify()}),
    'true []', 'verify() is ok');
is($node->safe_psql('postgres', q{SELECT count(*) FROM ehrledger.verify(digest => ehrledger.digest()) WHERE ok}),
    '1', 'a fresh digest verifies');

$node->stop;
done_testing();
