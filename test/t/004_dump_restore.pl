# pg_dump and pg_restore of a database with protected tables: the copy
# verifies and checks the same rows, in plain and custom format, on the same
# cluster and on another cluster with another node key and name, where an
# old digest still verifies and the ledger goes on.  Rows erased before the
# dump stay erased: their erasure records come along (restored as a
# superuser's COPY with their numbers and hashes) and still name them.  A
# signed partitioned table comes along too: its partitions stay in the
# ledger, signed under its name, and a partition created in the copy
# enters the ledger.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $conf = qq{
shared_preload_libraries = 'ehrledger'
ehrledger.database = 'postgres'
ehrledger.seal_interval = 0
};
my $a = PostgreSQL::Test::Cluster->new('st_mary');
$a->init;
$a->append_conf('postgresql.conf', $conf);
$a->start;
my $b = PostgreSQL::Test::Cluster->new('st_john');
$b->init;
$b->append_conf('postgresql.conf', $conf);
$b->start;

$a->safe_psql('postgres', 'CREATE DATABASE ehr');
$a->safe_psql('ehr', q{
    CREATE EXTENSION ehrledger;
    CREATE TABLE observation (id serial PRIMARY KEY, resource jsonb NOT NULL);
    CREATE TABLE medication_request (id int PRIMARY KEY, status text NOT NULL);
    CREATE TABLE prescription (id int PRIMARY KEY, drug text, prescriber text, signature bytea);
    SELECT ehrledger.protect('observation');
    SELECT ehrledger.protect('medication_request', mode => 'versioned');
    SELECT ehrledger.protect('prescription', signer_column => 'prescriber',
                             signature_column => 'signature');
    CREATE TABLE k AS SELECT * FROM ehrledger.keypair();
    SELECT ehrledger.register_actor('dr-a', 'provider', (SELECT public_key FROM k));
    INSERT INTO prescription VALUES (1, 'amoxicillin', 'dr-a', ehrledger.sign(
        ehrledger.signing_payload('prescription', '{"id": 1, "drug": "amoxicillin", "prescriber": "dr-a"}'),
        (SELECT secret_key FROM k)));
    CREATE TABLE rx_part (id int NOT NULL, written date NOT NULL, drug text, prescriber text NOT NULL, signature bytea)
        PARTITION BY RANGE (written);
    CREATE TABLE rx_part_2024 PARTITION OF rx_part FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
    SELECT ehrledger.protect('rx_part', signer_column => 'prescriber', signature_column => 'signature');
    INSERT INTO rx_part VALUES (1, '2024-06-01', 'ibuprofen', 'dr-a', ehrledger.sign(
        ehrledger.signing_payload('rx_part', '{"id": 1, "written": "2024-06-01", "drug": "ibuprofen", "prescriber": "dr-a"}'),
        (SELECT secret_key FROM k)));
    INSERT INTO observation (resource)
        SELECT jsonb_build_object('code', '8867-4', 'value', g) FROM generate_series(1, 500) g;
    INSERT INTO medication_request SELECT g, 'active' FROM generate_series(1, 20) g;
    UPDATE medication_request SET status = 'stopped' WHERE id <= 5;
    SELECT ehrledger.seal();
    DELETE FROM medication_request WHERE id = 20;
    INSERT INTO observation (resource) VALUES ('{"late": true}');
    SELECT ehrledger.seal();
    SELECT ehrledger.register_actor('adm', 'admin', (SELECT public_key FROM ehrledger.keypair()), current_user);
    SELECT ehrledger.erase('observation', (SELECT ledger_seq FROM observation WHERE id = 7), 'filed in the wrong chart');
    SELECT ehrledger.erase('medication_request', (SELECT min(ledger_seq) FROM ehrledger.history_2), 'wrong patient');
    SELECT ehrledger.seal();
    INSERT INTO observation (resource) VALUES ('{"unsealed": true}');
});
my $erased = $a->safe_psql('ehr', 'SELECT erased FROM ehrledger.verify()');
is($a->safe_psql('ehr', 'SELECT jsonb_array_length(erased) FROM ehrledger.verify()'), '3',
    'a row and an earlier version with its end are erased');
my $digest = $a->safe_psql('ehr', 'SELECT ehrledger.digest()');
my $expect = $a->safe_psql('ehr', 'SELECT ok, rows_checked, blocks_checked FROM ehrledger.verify()');
like($expect, qr/^t\|/, 'the original verifies');

my $dir = $a->basedir;
$a->command_ok([ 'pg_dump', '-Fp', '-f', "$dir/ehr.sql", '-d', $a->connstr('ehr') ], 'plain dump');
$a->command_ok([ 'pg_dump', '-Fc', '-f', "$dir/ehr.dump", '-d', $a->connstr('ehr') ], 'custom dump');

# Same cluster, plain format.
$a->safe_psql('postgres', 'CREATE DATABASE copy_plain');
$a->command_ok([ 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-f', "$dir/ehr.sql",
                 '-d', $a->connstr('copy_plain') ], 'plain restore');
is($a->safe_psql('copy_plain', 'SELECT ok, rows_checked, blocks_checked FROM ehrledger.verify()'),
    $expect, 'the plain copy verifies and checks the same rows and blocks');

# Same cluster, custom format.
$a->safe_psql('postgres', 'CREATE DATABASE copy_custom');
$a->command_ok([ 'pg_restore', '--exit-on-error', '-d', $a->connstr('copy_custom'), "$dir/ehr.dump" ],
    'custom restore');
is($a->safe_psql('copy_custom', 'SELECT ok, rows_checked, blocks_checked FROM ehrledger.verify()'),
    $expect, 'the custom copy verifies and checks the same rows and blocks');
is($a->safe_psql('copy_custom', 'SELECT erased FROM ehrledger.verify()'), $erased,
    'and reports the same erased rows, by their restored records');
is($a->safe_psql('copy_custom', q{SELECT count(*) FROM observation WHERE id = 7}), '0',
    'the erased row stays erased');
is($a->safe_psql('copy_custom', qq{SELECT ok FROM ehrledger.verify(digest => '$digest')}), 't',
    'the digest taken before the dump verifies against the copy');
is($a->safe_psql('copy_custom', q{SELECT count(*) FROM ehrledger.history('medication_request')}),
   $a->safe_psql('ehr', q{SELECT count(*) FROM ehrledger.history('medication_request')}),
   'the versioned history came along');

# Another cluster: another node key and name.
isnt(slurp_file($b->data_dir . '/ehrledger_node.key'), slurp_file($a->data_dir . '/ehrledger_node.key'),
     'the second cluster has a different node key');
$b->safe_psql('postgres', 'CREATE DATABASE ehr');
$b->command_ok([ 'pg_restore', '--exit-on-error', '-d', $b->connstr('ehr'), "$dir/ehr.dump" ],
    'restore on another cluster');
is($b->safe_psql('ehr', 'SELECT ok, rows_checked, blocks_checked FROM ehrledger.verify()'),
    $expect, 'the old blocks verify on another cluster');
is($b->safe_psql('ehr', qq{SELECT ok FROM ehrledger.verify(digest => '$digest')}), 't',
    'the old digest verifies on another cluster');
is($b->safe_psql('ehr', 'SELECT erased FROM ehrledger.verify()'), $erased,
    'the erased rows are erased there too');
is($b->safe_psql('ehr', q{SELECT valid FROM ehrledger.verify_record('prescription', 
        (SELECT ledger_seq FROM prescription WHERE id = 1))}), 't',
    'a signed record stays valid');
is($b->safe_psql('ehr', q{SELECT valid FROM ehrledger.verify_record('rx_part',
        (SELECT ledger_seq FROM rx_part WHERE id = 1))}), 't',
    'so does a signed row of a partitioned table, through it');

# The ledger goes on under the new node: the unsealed row and new writes are
# sealed once, in a chain that links to the old one.
$b->safe_psql('ehr', q{
    INSERT INTO observation (resource) VALUES ('{"after": "restore"}');
    UPDATE medication_request SET status = 'completed' WHERE id = 6;
    CREATE TABLE rx_part_2025 PARTITION OF rx_part FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
    INSERT INTO rx_part VALUES (2, '2025-01-02', 'aspirin', 'dr-a', ehrledger.sign(
        ehrledger.signing_payload('rx_part', '{"id": 2, "written": "2025-01-02", "drug": "aspirin", "prescriber": "dr-a"}'),
        (SELECT secret_key FROM k)));
    SELECT ehrledger.seal();
});
is($b->safe_psql('ehr', q{SELECT count(*) FROM ehrledger.protected_tables WHERE partition_of = 'rx_part'::regclass}),
   '2', 'a partition created in the copy enters the ledger');
is($b->safe_psql('ehr', q{SELECT valid FROM ehrledger.verify_record('rx_part',
        (SELECT ledger_seq FROM rx_part WHERE id = 2))}), 't',
    "and takes rows signed under the partitioned table's name");
is($b->safe_psql('ehr', q{SELECT count(DISTINCT origin) FROM ehrledger.blocks}), '2',
    'new blocks carry the new node name');
is($b->safe_psql('ehr', q{SELECT ok::text || ' ' || problems::text FROM ehrledger.verify()}),
    'true []', 'the continued ledger verifies');
is($b->safe_psql('ehr', q{
    SELECT count(*) FROM observation o
     WHERE NOT EXISTS (SELECT 1 FROM ehrledger.blocks b
                        WHERE o.ledger_seq BETWEEN b.first_seq AND b.last_seq)}), '0',
    'every row is sealed');
is($b->safe_psql('ehr', q{SELECT sum(row_count) FROM ehrledger.blocks}),
   $b->safe_psql('ehr', q{
    SELECT (SELECT count(*) FROM observation) + (SELECT count(*) FROM medication_request)
         + 2 * (SELECT count(*) FROM ehrledger.history_2) + (SELECT count(*) FROM prescription)
         + (SELECT count(*) FROM rx_part)
         + (SELECT count(*) FROM ehrledger.actor_event)
         + (SELECT count(*) FROM ehrledger.enrolled_table)
         + 2 * (SELECT count(*) FROM ehrledger.erasure)}),
    'no row was sealed twice (the enrolments of both chains, erased leaves and their records included)');
my $new_digest = $b->safe_psql('ehr', 'SELECT ehrledger.digest()');
is($b->safe_psql('ehr', qq{SELECT ok FROM ehrledger.verify(digest => '$new_digest')}), 't',
    'a digest of the new node verifies');

$a->stop;
$b->stop;
done_testing();
