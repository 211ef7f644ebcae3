# A versioned table under concurrent UPDATEs (8 pgbench clients hitting the
# same 200 rows) and DELETE+INSERT pairs, with the background sealer running,
# then an immediate stop (as in a crash) and a restart: every committed update
# left exactly one earlier version in the history table, everything (live
# rows, earlier versions and their end events) gets sealed exactly once, and
# verify() is ok.  Then the same with a crash in the middle of the load.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('ward');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'ehrledger'
ehrledger.database = 'postgres'
ehrledger.seal_interval = 200
synchronous_commit = on
max_connections = 40
});
$node->start;

# 200 medication requests updated at random, and ids 1001-1008, one per
# pgbench client, that their own client deletes and inserts again.
$node->safe_psql('postgres', q{
    CREATE EXTENSION ehrledger;
    CREATE TABLE mr (id int PRIMARY KEY, patient text NOT NULL, status text NOT NULL,
                     dose int NOT NULL);
    INSERT INTO mr SELECT g, 'patient-' || (g % 37), 'active', 10 FROM generate_series(1, 200) g;
    INSERT INTO mr SELECT 1000 + c, 'patient-replaced', 'active', 0 FROM generate_series(1, 8) c;
    SELECT ehrledger.protect('mr', mode => 'versioned');
});
my $hist = $node->safe_psql('postgres',
    q{SELECT history FROM ehrledger.protected_tables WHERE tbl = 'mr'::regclass});
like($hist, qr/^ehrledger\.history_\d+$/, "mr is versioned, history in $hist");
my $initial_dose = 200 * 10;

# Two scripts: a single-row UPDATE by primary key (weight 9), and a
# DELETE+INSERT of the client's own row (weight 1; pgbench's client_id is
# 0..7, so no two clients ever replace the same row).  Both count what they
# did in the rows themselves: an update adds one to the dose, a replacement
# inserts the row again with the deleted row's dose plus one.  (pgbench's
# per-script counts are not exact with -j > 1: its threads add them up
# without a lock.)
my $update_sql = $node->basedir . '/update.sql';
append_to_file($update_sql, q{\set id random(1, 200)
UPDATE mr SET dose = dose + 1,
              status = CASE status WHEN 'active' THEN 'on-hold'
                                   WHEN 'on-hold' THEN 'completed'
                                   ELSE 'active' END
 WHERE id = :id;
});
my $replace_sql = $node->basedir . '/replace.sql';
append_to_file($replace_sql, q{BEGIN;
DELETE FROM mr WHERE id = 1001 + :client_id RETURNING dose AS old_dose \gset
INSERT INTO mr VALUES (1001 + :client_id, 'patient-replaced', 'active', :old_dose + 1);
END;
});
my @pgbench = ('pgbench', '-n', '-c', '8', '-j', '2', '-f', "$update_sql\@9",
    '-f', "$replace_sql\@1", '-h', $node->host, '-p', $node->port);

# Everything in the main and the history table is sealed.
my $all_sealed = qq{
    SELECT (SELECT count(*) FROM mr WHERE ledger_seq > b.top)
         + (SELECT count(*) FROM $hist WHERE ledger_seq > b.top OR ledger_ended_seq > b.top) = 0
      FROM (SELECT coalesce(max(last_seq), 0) AS top FROM ehrledger.blocks) b};

# Each live row is one leaf; each earlier version is two: its content and
# its end event.  Nothing else is ledgered in this database.
# (with the tables' enrolments, which the sealer writes with their first rows)
my $leaves = qq{SELECT (SELECT count(*) FROM mr) + 2 * (SELECT count(*) FROM $hist)
                     + (SELECT count(*) FROM ehrledger.enrolled_table)};

# check_consistency: the dose of rows 1-200 grew by one per update and the
# dose of rows 1001-1008 by one per replacement, and each left exactly one
# earlier version in the history; rows 1001-1008 are all there.
sub check_consistency
{
    my ($what) = @_;
    my ($updates, $deletes, $dose, $replaced, $live) = split /\|/, $node->safe_psql('postgres', qq{
        SELECT (SELECT count(*) FROM $hist WHERE ledger_op = 'update'),
               (SELECT count(*) FROM $hist WHERE ledger_op = 'delete'),
               (SELECT sum(dose) FROM mr WHERE id <= 200),
               (SELECT sum(dose) FROM mr WHERE id > 1000),
               (SELECT count(*) FROM mr)});
    is($dose - $initial_dose, $updates,
        "$what: one history row per committed update ($updates)");
    is($replaced, $deletes,
        "$what: one history row per committed delete ($deletes)");
    is($live, '208', "$what: every row is there, replaced ones included");
    is($node->safe_psql('postgres', qq{
        SELECT count(*) FROM $hist h
         WHERE ledger_ended_seq <= ledger_seq
            OR ledger_op NOT IN ('update', 'delete')
            OR EXISTS (SELECT 1 FROM mr WHERE mr.ledger_seq = h.ledger_seq)}),
        '0', "$what: every earlier version ended after it began and is no longer live");
    return ($updates, $deletes);
}

# Round 1: a run that completes, so we know exactly what committed.
my ($out, $err) = ('', '');
IPC::Run::run([ @pgbench, '-t', '300', 'postgres' ], '>', \$out, '2>', \$err);
like($out, qr{number of transactions actually processed: 2400/2400},
    'pgbench: 2400 transactions processed');
like($out, qr{number of failed transactions: 0 }, 'pgbench: no failed transaction');
is($err, '', 'pgbench: no error (no deadlock, no duplicate key) under concurrent updates');

# Crash right away, very likely with versions committed but not yet sealed.
$node->stop('immediate');
$node->start;

my ($updates, $deletes) = check_consistency('after the first crash');
is($updates + $deletes, 2400,
    "every committed transaction is there ($updates updates, $deletes replacements)");

ok($node->poll_query_until('postgres', $all_sealed),
    'the sealer seals every version and end event after the restart');
is($node->safe_psql('postgres', 'SELECT sum(row_count) FROM ehrledger.blocks'),
    $node->safe_psql('postgres', $leaves),
    'each live row, earlier version and end event is sealed exactly once');
is($node->safe_psql('postgres', q{SELECT ok::text || ' ' || problems::text FROM ehrledger.verify()}),
    'true []', 'verify() is ok after crash and restart');

# Round 2: crash in the middle of the load; pgbench loses its connections.
($out, $err) = ('', '');
my $bench = IPC::Run::start([ @pgbench, '-T', '30', 'postgres' ],
    '>', \$out, '2>', \$err);
ok($node->poll_query_until('postgres',
        "SELECT count(*) > $updates + $deletes + 5000 FROM $hist"),
    'load is running');
sleep 2;
$node->stop('immediate');
$bench->finish;
$node->start;

# pgbench's only complaints are about the lost connections.
note "pgbench after the crash:\n$err";
my @complaints = grep { !/server closed the connection unexpectedly
                           | terminated\ abnormally
                           | terminating\ connection
                           | before\ or\ while\ processing\ the\ request
                           | connection\ to\ server
                           | client\ \d+\ aborted\ in\ command
                           | Run\ was\ aborted
                           | perhaps\ the\ backend\ died
                           | ^\s*$ /x } split /\n/, $err;
is(join("\n", @complaints), '', 'pgbench: no error other than the lost connections');
unlike($out . $err, qr/deadlock|duplicate key|could not serialize|(ERROR|FATAL):.*ehrledger/,
    'pgbench: no deadlock, conflict or ledger error');

my ($updates2, $deletes2) = check_consistency('after the second crash');
cmp_ok($updates2 + $deletes2, '>', $updates + $deletes + 1500,
    'versions committed before the crash are there (' . ($updates2 + $deletes2) . ')');
ok($node->poll_query_until('postgres', $all_sealed),
    'everything is sealed after the second restart');
is($node->safe_psql('postgres', 'SELECT sum(row_count) FROM ehrledger.blocks'),
    $node->safe_psql('postgres', $leaves), 'no version or end event is lost or sealed twice');
is($node->safe_psql('postgres', q{SELECT ok::text || ' ' || problems::text FROM ehrledger.verify()}),
    'true []', 'verify() is ok');
is($node->safe_psql('postgres', q{SELECT ok::text FROM ehrledger.verify('mr')}),
    'true', 'verify(mr) is ok');
is($node->safe_psql('postgres', q{SELECT count(*) FROM ehrledger.verify(digest => ehrledger.digest()) WHERE ok}),
    '1', 'a fresh digest verifies');

$node->stop;
done_testing();
