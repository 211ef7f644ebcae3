# A partitioned table protected by ehrledger, with pg_partman creating
# daily partitions ahead of time: pg_partman's maintenance runs again and
# again while 8 pgbench clients insert into the partitioned table.  Every
# partition it makes enters the ledger as it is attached; every row ends up
# sealed and verify() of the partitioned table is ok; a row tampered with
# in one partition is found; proofs of rows in different partitions and an
# export of the partitioned table check offline with ehrledger-verify.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP;

my $node = PostgreSQL::Test::Cluster->new('partman');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'ehrledger'
ehrledger.database = 'postgres'
ehrledger.seal_interval = 200
max_connections = 40
});
$node->start;

sub sql { return $node->safe_psql('postgres', $_[0]); }

plan skip_all => 'pg_partman is not installed (scripts/install-deps.sh installs it)'
  unless sql(q{SELECT count(*) FROM pg_available_extensions WHERE name = 'pg_partman'}) eq '1';

# The table is protected first, then handed to pg_partman: the partitions
# create_parent() makes (ahead, behind, and a default one) enter the ledger
# as pg_partman attaches them.
sql(q{
    CREATE EXTENSION ehrledger;
    CREATE SCHEMA partman;
    CREATE EXTENSION pg_partman SCHEMA partman;
    CREATE TABLE vitals (
        id       bigserial,
        taken_at timestamptz NOT NULL,
        client   int NOT NULL,
        resource jsonb NOT NULL
    ) PARTITION BY RANGE (taken_at);
    SELECT ehrledger.protect('vitals');
    SELECT partman.create_parent('public.vitals', 'taken_at', 'native', 'daily', p_premake := 2);
});
my $unprotected = q{
    SELECT count(*) FROM pg_inherits i
     WHERE i.inhparent = 'vitals'::regclass
       AND NOT EXISTS (SELECT 1 FROM ehrledger.registered_table r
                        WHERE r.relid = i.inhrelid AND r.partition_of =
                              (SELECT p.table_id FROM ehrledger.registered_table p
                                WHERE p.relid = 'vitals'::regclass))};
my $partitions_at_start = sql(q{SELECT count(*) FROM pg_inherits WHERE inhparent = 'vitals'::regclass});
cmp_ok($partitions_at_start, '>=', 5, "create_parent() made $partitions_at_start partitions");
is(sql($unprotected), '0', 'each is a ledger table');

# 8 clients insert observations of today and tomorrow, while maintenance
# makes one more day ahead each round (premake raised by one).
my $script = $node->basedir . '/insert.sql';
append_to_file($script, q{INSERT INTO vitals (taken_at, client, resource)
    VALUES (now() + floor(random() * 2) * interval '1 day', :client_id,
            jsonb_build_object('resourceType', 'Observation', 'code', '8867-4', 'value', random() * 100));
});
my ($out, $err) = ('', '');
my $bench = IPC::Run::start(
	[ 'pgbench', '-n', '-c', '8', '-j', '2', '-T', '12', '-f', $script,
		'-h', $node->host, '-p', $node->port, 'postgres' ],
	'>', \$out, '2>', \$err);
ok($node->poll_query_until('postgres', 'SELECT count(*) > 200 FROM vitals'), 'the load is running');
my $rounds_ok = 0;
for my $premake (3 .. 10)
{
	my ($ret, $stdout, $stderr) = $node->psql('postgres', qq{
        UPDATE partman.part_config SET premake = $premake WHERE parent_table = 'public.vitals';
        SELECT partman.run_maintenance('public.vitals');
    });
	$rounds_ok++ if $ret == 0;
	diag("maintenance round $premake: $stderr") if $ret != 0;
}
is($rounds_ok, 8, "pg_partman's maintenance ran 8 rounds under load");
$bench->finish;
is($bench->result(0), 0, 'pgbench ended well') or diag($err);
like($out, qr/number of failed transactions: 0/, 'no insert failed');
my $partitions = sql(q{SELECT count(*) FROM pg_inherits WHERE inhparent = 'vitals'::regclass});
cmp_ok($partitions, '>=', $partitions_at_start + 8, "maintenance made 8 more partitions at least ($partitions in all)");
is(sql($unprotected), '0', 'every one of them is a ledger table');
is(sql(q{SELECT count(*) FROM pg_trigger t JOIN pg_inherits i ON i.inhrelid = t.tgrelid
          WHERE i.inhparent = 'vitals'::regclass AND t.tgname = 'zz_ehrledger_insert'}),
   $partitions, 'with its insert trigger');

# Everything gets sealed, once, and verifies through the partitioned table.
ok($node->poll_query_until('postgres', q{
    SELECT count(*) = 0 FROM vitals
     WHERE ledger_seq > (SELECT coalesce(max(last_seq), 0) FROM ehrledger.blocks)}),
   'the sealer seals every row');
my $rows = sql('SELECT count(*) FROM vitals');
cmp_ok($rows, '>', 200, "$rows rows were inserted");
is(sql(q{SELECT count(DISTINCT tableoid) FROM vitals}), '2', 'into two partitions');
is(sql(q{SELECT ok::text || ' ' || rows_checked || ' ' || problems::text FROM ehrledger.verify('vitals')}),
   "true $rows []", 'verify() of the partitioned table checks every row and is ok');
is(sql('SELECT ok FROM ehrledger.verify()'), 't', 'so is verify() of the whole ledger');

# A superuser changes a row of one partition behind the triggers.
my ($part, $victim) = split /\|/, sql(q{
    SELECT tableoid::regclass, ledger_seq FROM vitals
     WHERE taken_at >= date_trunc('day', now()) + interval '1 day' ORDER BY ledger_seq LIMIT 1});
my $original = sql(qq{SELECT resource FROM $part WHERE ledger_seq = $victim});
sql(qq{
    SET session_replication_role = replica;
    ALTER TABLE $part DISABLE TRIGGER ALL;
    UPDATE $part SET resource = resource || '{"value": -1}' WHERE ledger_seq = $victim;
    ALTER TABLE $part ENABLE ALWAYS TRIGGER zz_ehrledger_insert,
        ENABLE ALWAYS TRIGGER ehrledger_append_only, ENABLE ALWAYS TRIGGER ehrledger_no_truncate;
});
is(sql(qq{SELECT ok::text || ' ' || (problems->0->>'kind') || ' ' || (problems->0->>'table') || ' '
                 || (problems->0->>'ledger_seq') FROM ehrledger.verify('vitals')}),
   "false row_modified public.$part $victim", "verify() of the partitioned table finds the row changed in $part");

# Offline: proofs of rows of two partitions, and the export of the whole
# partitioned table, checked with ehrledger-verify against a digest.
my $verifier = $node->config_data('--bindir') . '/ehrledger-verify';
my $dir = PostgreSQL::Test::Utils::tempdir;
sub to_file
{
	my ($name, $content) = @_;
	my $path = "$dir/$name";
	open(my $fh, '>:raw', $path) or die "$path: $!";
	print $fh $content, "\n";
	close($fh);
	return $path;
}
my $digest = to_file('digest.json', sql('SELECT ehrledger.digest()'));
my $export = to_file('vitals.jsonl', sql(q{SELECT string_agg(line, E'\n') FROM ehrledger.export('vitals')}));
command_fails_like([ $verifier, $export, $digest ],
	qr/row $victim does not match its leaf/, 'the export shows the tampered row: invalid');

# Put the row back as it was sealed.
sql(qq{
    SET session_replication_role = replica;
    ALTER TABLE $part DISABLE TRIGGER ALL;
    UPDATE $part SET resource = '$original' WHERE ledger_seq = $victim;
    ALTER TABLE $part ENABLE ALWAYS TRIGGER zz_ehrledger_insert,
        ENABLE ALWAYS TRIGGER ehrledger_append_only, ENABLE ALWAYS TRIGGER ehrledger_no_truncate;
});
is(sql(q{SELECT ok FROM ehrledger.verify('vitals')}), 't', 'restored, the partitioned table verifies again');
my @firsts = split /\n/, sql(q{
    SELECT min(ledger_seq) FROM vitals GROUP BY tableoid ORDER BY 1});
for my $seq (@firsts)
{
	my $proof = to_file("proof_$seq.json", sql("SELECT ehrledger.proof('vitals', $seq)"));
	my $table = decode_json(slurp_file($proof))->{table};
	command_like([ $verifier, $proof, $digest ], qr/\Avalid: row $seq of \Q$table\E /,
		"ehrledger-verify: the proof of row $seq, in $table, is valid");
}
$export = to_file('vitals2.jsonl', sql(q{SELECT string_agg(line, E'\n') FROM ehrledger.export('vitals')}));
command_like([ $verifier, $export, $digest ],
	qr/\Avalid: all $rows rows of the $partitions partitions of public\.vitals /,
	'ehrledger-verify: the export of the partitioned table is valid');

# The last partition's part left out of the export, its header still
# naming it; another partition's part in its place.
my @lines = split /\n/, slurp_file($export);
my ($last) = grep { $lines[$_] =~ /^\{"partition"/ } reverse 0 .. $#lines;
my ($last_name) = $lines[$last] =~ /"table": "([^"]+)"/;
my $short = to_file('short.jsonl', join("\n", @lines[ 0 .. $last - 1 ]));
command_fails_like([ $verifier, $short, $digest ],
	qr/the export lacks the part of partition \Q$last_name\E/,
	'ehrledger-verify: an export missing the part of a partition it names is invalid');
my @swapped = @lines;
$swapped[$last] =~ s/"table_id": (\d+)/'"table_id": ' . ($1 + 1000)/e;
command_fails_like([ $verifier, to_file('swapped.jsonl', join("\n", @swapped)), $digest ],
	qr/the partition line names \Q$last_name\E \(table_id \d+\), but the header's partition/,
	'ehrledger-verify: a part that is not of the partition the header names next is refused');

# pg_partman's retention drops days older than it keeps: a partition in
# the ledger is retired first, or its DROP (or DETACH, with
# retention_keep_table) is refused and maintenance fails; once retired,
# maintenance drops it.
sql(q{UPDATE partman.part_config SET retention = '1 day', retention_keep_table = false
       WHERE parent_table = 'public.vitals'});
my $old = q{
    SELECT i.inhrelid::regclass FROM pg_inherits i
     JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_namespace n ON n.oid = c.relnamespace
     CROSS JOIN LATERAL partman.show_partition_info(format('%s.%s', n.nspname, c.relname)) b
     WHERE i.inhparent = 'vitals'::regclass AND c.relname <> 'vitals_default'
       AND b.child_end_time < now() - interval '1 day'};
my @old = split /\n/, sql($old);
cmp_ok(scalar(@old), '>=', 1, 'partitions older than the retention: ' . join(', ', @old));
my ($ret, $stdout, $stderr) = $node->psql('postgres', q{SELECT partman.run_maintenance('public.vitals')});
like($stderr, qr/cannot drop ledger table public\.\Q$old[0]\E/,
	'retention cannot drop a partition in the ledger');
sql(qq{SELECT ehrledger.retire(c, 'past the retention of pg_partman') FROM ($old) x(c)});
($ret, $stdout, $stderr) = $node->psql('postgres', q{SELECT partman.run_maintenance('public.vitals')});
is($ret, 0, 'once they are retired, maintenance drops them') or diag($stderr);
is(sql($old), '', 'they are gone');
is(sql(q{SELECT ok::text || ' ' || problems::text FROM ehrledger.verify('vitals')}), 'true []',
	'and the partitioned table still verifies');

$node->stop;
done_testing();
