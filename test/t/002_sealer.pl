# The background sealer follows its settings: ehrledger.seal_interval takes
# effect on reload, 0 stops automatic sealing, and the node key must not be
# readable by others.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('sealer');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'ehrledger'
ehrledger.database = 'postgres'
ehrledger.seal_interval = 0
ehrledger.node_name = 'st-mary'
});
$node->start;
$node->safe_psql('postgres', q{
    CREATE EXTENSION ehrledger;
    CREATE TABLE obs (id bigserial PRIMARY KEY, v int);
    SELECT ehrledger.protect('obs');
    INSERT INTO obs (v) SELECT g FROM generate_series(1, 100) g;
});
sleep 2;
is($node->safe_psql('postgres', 'SELECT count(*) FROM ehrledger.blocks'), '0',
    'with seal_interval = 0 nothing is sealed automatically');

$node->append_conf('postgresql.conf', 'ehrledger.seal_interval = 100');
$node->reload;
ok($node->poll_query_until('postgres',
        'SELECT sum(row_count) = 100 + (SELECT count(*) FROM ehrledger.enrolled_table) FROM ehrledger.blocks'),
    'after a reload with seal_interval = 100 the sealer seals');
is($node->safe_psql('postgres', 'SELECT DISTINCT origin FROM ehrledger.blocks'), 'st-mary',
    'blocks carry the configured node name');
is($node->safe_psql('postgres', q{SELECT application_name FROM pg_stat_activity
    WHERE backend_type = 'ehrledger sealer'}), 'ehrledger sealer',
    'the sealer shows in pg_stat_activity');

# Only superusers see where the key lives; nobody reads it through SQL
# without file-reading rights.
$node->safe_psql('postgres', 'CREATE ROLE clerk LOGIN');
my ($rc, $stdout, $stderr) = $node->psql('postgres',
    q{SELECT pg_read_binary_file('ehrledger_node.key')}, extra_params => [ '-U', 'clerk' ]);
like($stderr, qr/permission denied/, 'a non-superuser cannot read the node key');
($rc, $stdout, $stderr) = $node->psql('postgres', 'SHOW ehrledger.key_file',
    extra_params => [ '-U', 'clerk' ]);
like($stderr, qr/must be superuser|permission denied|pg_read_all_settings/,
    'a non-superuser cannot see the key file setting');

# A key file readable by others stops the server from starting.
$node->stop;
chmod 0644, $node->data_dir . '/ehrledger_node.key';
my $started = $node->start(fail_ok => 1);
ok(!$started, 'a key file with group or world access is refused');
like(slurp_file($node->logfile), qr/ehrledger key file .* has group or world access/,
    'the log says why');
chmod 0600, $node->data_dir . '/ehrledger_node.key';
$node->start;

# A key file of the wrong size is refused as well.
$node->stop;
my $keyfile = $node->data_dir . '/ehrledger_node.key';
open(my $fh, '>>', $keyfile) or die; print $fh "x"; close($fh);
ok(!$node->start(fail_ok => 1), 'a damaged key file is refused');
like(slurp_file($node->logfile), qr/is not a 32-byte Ed25519 seed/, 'the log says why');

# Without shared_preload_libraries the extension refuses to load, and says why.
my $plain = PostgreSQL::Test::Cluster->new('not_preloaded');
$plain->init;
$plain->start;
my ($prc, $pout, $perr) = $plain->psql('postgres', 'CREATE EXTENSION ehrledger');
isnt($prc, 0, 'CREATE EXTENSION fails when the library is not preloaded');
like($perr, qr/ehrledger must be loaded via shared_preload_libraries/, 'the error says why');
like($perr, qr/HINT:.*shared_preload_libraries/, 'and the hint says what to do');
$plain->stop;

done_testing();
