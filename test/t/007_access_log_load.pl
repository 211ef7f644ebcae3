# The access log under load: pgbench reads consent-protected rows as a
# provider while the access log writer is killed and restarted mid-run.
# Every statement pgbench completed is one read record, exactly, whether
# readers wait for their record (the default) or not; when the writer is
# killed with SIGKILL (the server restarts) or the server stops
# immediately, every completed read is recorded after the restart (from
# the WAL), and at most the reads in flight are recorded besides.  A
# replication slot keeps that WAL until it is written, and lets it go once
# the database is idle; without slots (wal_level minimal) readers wait for
# the writer's commits, and the counts are as exact.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use Time::HiRes qw(usleep);

my $writer_type = 'ehrledger access log writer';
my $clients = 4;

# A node whose database ehr has a consent-protected table obs read by dr_a.
sub new_node
{
    my ($name, %init) = @_;
    my $n = PostgreSQL::Test::Cluster->new($name);
    $n->init(%init);
    $n->append_conf('postgresql.conf', q{
shared_preload_libraries = 'ehrledger'
ehrledger.database = 'ehr'
restart_after_crash = on
});
    $n->start;
    $n->safe_psql('postgres', 'CREATE DATABASE ehr; CREATE ROLE dr_a LOGIN;');
    setup_db($n, 'ehr');
    return $n;
}

sub setup_db
{
    my ($n, $db) = @_;
    $n->safe_psql($db, q{
    CREATE EXTENSION ehrledger;
    CREATE TABLE obs (id int PRIMARY KEY, patient_id text NOT NULL, payload text NOT NULL);
    INSERT INTO obs SELECT g, 'p' || (1 + g % 50), 'observation ' || g FROM generate_series(1, 2000) g;
    CREATE INDEX ON obs (patient_id);
    SELECT ehrledger.protect('obs', patient_column => 'patient_id');
    GRANT SELECT ON obs TO dr_a;
    SELECT ehrledger.register_actor('dr-a', 'provider', (ehrledger.keypair()).public_key, 'dr_a');
    CREATE TEMP TABLE k AS SELECT 'p' || g AS p, kp.* FROM generate_series(1, 50) g, LATERAL ehrledger.keypair() kp;
    SELECT count(ehrledger.register_actor(p, 'patient', public_key)) FROM k;
    SELECT count(ehrledger.grant_consent(p, 'dr-a', signature =>
               ehrledger.sign(ehrledger.consent_payload(p, 'dr-a'), secret_key))) FROM k;
    });
}

# wal_level replica, as PostgreSQL's default is.
my $node = new_node('load', allows_streaming => 1);
my $script = $node->basedir . '/read.sql';
PostgreSQL::Test::Utils::append_to_file($script,
    "\\set i random(1, 50)\nSELECT count(*) FROM obs WHERE patient_id = 'p' || :i;\n");

# Starts pgbench as dr_a for $secs seconds; returns the harness and its output.
sub start_pgbench
{
    my ($secs, $db) = @_;
    my ($out, $err) = ('', '');
    my $h = IPC::Run::start(
        [ 'pgbench', '-n', '-c', $clients, '-j', 2, '-M', 'prepared', '-T', $secs,
          '-f', $script, '-h', $node->host, '-p', $node->port, '-U', 'dr_a', $db // 'ehr' ],
        '>', \$out, '2>', \$err);
    return ($h, \$out, \$err);
}

sub processed
{
    my ($out) = @_;
    return $$out =~ /number of transactions actually processed: (\d+)/ ? $1 : -1;
}

sub reads
{
    # A query on the access log waits for the writer to write what it has.
    return $node->safe_psql('ehr', q{
        SELECT count(*) FROM ehrledger.access_event WHERE action = 'read' AND pg_role = 'dr_a'});
}

sub writer_pid
{
    my $pid = '';
    for (1 .. 100)
    {
        $pid = $node->safe_psql('ehr', qq{
            SELECT pid FROM pg_stat_activity WHERE backend_type = '$writer_type' AND datname = 'ehr'});
        last if $pid ne '';
        usleep(50_000);
    }
    return $pid;
}

# --- 1. SIGTERM mid-run, waiting and not waiting ------------------------------

for my $wait ('on', 'off')
{
    $node->safe_psql('postgres', "ALTER ROLE dr_a SET ehrledger.access_log_wait = $wait");
    my $before = reads();
    my ($h, $out, $err) = start_pgbench(6);
    my @killed;
    for (1 .. 2)
    {
        usleep(1_500_000);
        my $pid = writer_pid();
        push @killed, $pid if $pid ne '' && kill('TERM', $pid);
    }
    $h->finish;
    my $n = processed($out);
    ok($n > 0, "pgbench (access_log_wait $wait) completed $n reads") or diag($$err);
    is(scalar(@killed), 2, "the writer was killed twice during the run (access_log_wait $wait)");
    is(reads() - $before, $n, "exactly one read record per completed statement (access_log_wait $wait)")
      or do { sleep 3; diag('3 s later: ' . (reads() - $before)); diag($node->safe_psql('ehr', 'SELECT * FROM ehrledger.access_log_position')); };
}
$node->safe_psql('postgres', 'ALTER ROLE dr_a RESET ehrledger.access_log_wait');

# --- 2. SIGKILL of the writer, and an immediate stop --------------------------

# Kills the writer (the server restarts) or stops the server immediately
# under pgbench; every completed read must be in the log after the restart.
sub crash_case
{
    my ($how, $label) = @_;
    my $before = reads();
    my ($h, $out, $err) = start_pgbench(4);
    usleep(2_000_000);
    if ($how eq 'immediate stop')
    {
        $node->stop('immediate');
        $node->start;
    }
    else
    {
        my $pid = writer_pid();
        ok($pid ne '' && kill('KILL', $pid), "$label: the writer is killed with SIGKILL");
    }
    $h->finish;
    my $n = processed($out);
    # Until the restarted server accepts connections, a psql fed its query
    # on stdin can die before reading it (a broken pipe ends the test).
    for (1 .. 600)
    {
        last if system('pg_isready', '-q', '-h', $node->host, '-p', $node->port, '-d', 'ehr') == 0;
        usleep(100_000);
    }
    $node->poll_query_until('ehr', 'SELECT true');
    my $got = reads() - $before;
    ok($n > 0, "$label, $how: pgbench completed $n reads before it lost its connections");
    ok($got >= $n && $got <= $n + $clients,
        "$label, $how: every completed read is recorded after the restart, at most the $clients in flight besides (got $got)");
}

crash_case($_, 'replica') for ('SIGKILL of the writer', 'immediate stop');

$node->safe_psql('ehr', 'SELECT ehrledger.seal()');
is($node->safe_psql('ehr', q{SELECT ok::text || ' ' || problems::text FROM ehrledger.verify()}),
    'true []', 'the ledger verifies after the kills and the crash');

# --- 3. The replication slot ---------------------------------------------------

my $oid = $node->safe_psql('postgres', q{SELECT oid FROM pg_database WHERE datname = 'ehr'});
my $slot = "ehrledgerdb${oid}_access_log";
is($node->safe_psql('postgres', qq{
    SELECT slot_type || ' ' || (xmin IS NULL)::text || ' ' || (catalog_xmin IS NULL)::text
      FROM pg_replication_slots WHERE slot_name = '$slot'}),
    'physical true true', "the access log keeps its WAL with a physical slot ($slot) that holds back no VACUUM");

# Idle: once the writer has left, the sealer lets the WAL go.
my $idle_from = $node->safe_psql('postgres', 'SELECT pg_current_wal_insert_lsn()');
ok($node->poll_query_until('postgres', qq{
    SELECT restart_lsn >= '$idle_from' FROM pg_replication_slots WHERE slot_name = '$slot'}),
    'an idle database holds no WAL: the slot moves past the WAL written after its reads');

# A slot a DBA drops is made again by the next writer.
ok($node->poll_query_until('postgres', qq{
    SELECT count(*) = 0 FROM (SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
                               WHERE slot_name = '$slot' AND NOT active) d}),
    'the slot is dropped');
my ($h1, $out1) = start_pgbench(1);
$h1->finish;
ok($node->poll_query_until('postgres', qq{
    SELECT count(*) = 1 FROM pg_replication_slots WHERE slot_name = '$slot'}),
    'the next writer makes it again');

# A dropped database leaves no slot behind.
$node->safe_psql('postgres', 'CREATE DATABASE ehr2');
setup_db($node, 'ehr2');
my $oid2 = $node->safe_psql('postgres', q{SELECT oid FROM pg_database WHERE datname = 'ehr2'});
my ($h2, $out2) = start_pgbench(1, 'ehr2');
$h2->finish;
ok(processed($out2) > 0, 'reads in a second database');
ok($node->poll_query_until('postgres', qq{
    SELECT count(*) = 1 FROM pg_replication_slots WHERE slot_name = 'ehrledgerdb${oid2}_access_log'}),
    'the second database has its own slot');
$node->safe_psql('postgres', 'DROP DATABASE ehr2 WITH (FORCE)');
ok($node->poll_query_until('postgres', qq{
    SELECT count(*) = 0 FROM pg_replication_slots WHERE slot_name = 'ehrledgerdb${oid2}_access_log'}),
    'DROP DATABASE: its slot goes with it');
$node->stop;

# --- 4. Without slots ----------------------------------------------------------

# wal_level minimal: no slot can keep the WAL, so readers wait for the
# writer's commits; a crash loses nothing either.
$node = new_node('minimal');
$script = $node->basedir . '/read.sql';
PostgreSQL::Test::Utils::append_to_file($script,
    "\\set i random(1, 50)\nSELECT count(*) FROM obs WHERE patient_id = 'p' || :i;\n");
crash_case('SIGKILL of the writer', 'minimal');
like(slurp_file($node->logfile), qr/no replication slot keeps its WAL: wal_level is minimal/,
    'the server log says why readers wait for the writer');
$node->stop;
done_testing();
