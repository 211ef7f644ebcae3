# Reads on a hot standby (PostgreSQL's own streaming replication): the
# standby enforces consents as its primary does; every read there is
# recorded in the primary's access log (and sealed there) before the
# standby returns it; a revocation on the primary is in force on the
# standby once replayed, even in a session that read before; break-glass
# on the standby is carried out on the primary.  With the primary down a
# read is refused, or with ehrledger.standby_primary_down = serve returned
# and spooled until the primary is back.  The function the standby ships
# its reads through refuses roles without REPLICATION, documents not
# signed with the node key, and records a batch sent twice once.  A
# standby promoted with reads in its spool records them itself.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $primary = PostgreSQL::Test::Cluster->new('primary');
$primary->init(allows_streaming => 1);
$primary->append_conf('postgresql.conf', q{
shared_preload_libraries = 'ehrledger'
ehrledger.database = 'ehr'
ehrledger.seal_interval = 0
});
$primary->start;
$primary->safe_psql('postgres', q{
    CREATE DATABASE ehr;
    CREATE ROLE emr_alice; CREATE ROLE emr_bob; CREATE ROLE emr_grey; CREATE ROLE emr_clerk;
    CREATE ROLE standby_repl LOGIN REPLICATION;
    CREATE ROLE nobody LOGIN;
});
$primary->safe_psql('ehr', q{
    CREATE EXTENSION ehrledger;
    GRANT EXECUTE ON FUNCTION ehrledger._standby_reads(bytea), ehrledger._standby_break_glass(bytea)
       TO standby_repl;
    CREATE TABLE encounter (id int PRIMARY KEY, patient_id text NOT NULL, reason text NOT NULL);
    INSERT INTO encounter VALUES (1, 'alice', 'chest pain'), (2, 'bob', 'fracture'), (3, 'alice', 'follow-up');
    SELECT ehrledger.protect('encounter', patient_column => 'patient_id');
    GRANT SELECT ON encounter TO emr_alice, emr_bob, emr_grey, emr_clerk;
    SELECT ehrledger.register_actor('alice', 'patient', (ehrledger.keypair()).public_key, 'emr_alice');
    SELECT ehrledger.register_actor('bob', 'patient', (ehrledger.keypair()).public_key, 'emr_bob');
    SELECT ehrledger.register_actor('dr-grey', 'provider', (ehrledger.keypair()).public_key, 'emr_grey');
    SET ROLE emr_alice;
    SELECT ehrledger.grant_consent('alice', 'dr-grey');
});

$primary->backup('base');
# (cluster_name is the node's name, 'ward': the records name the standby by it.)
my $standby = PostgreSQL::Test::Cluster->new('ward');
$standby->init_from_backup($primary, 'base', has_streaming => 1);
# The node key came along with the data directory (the copy loses its mode).
chmod 0600, $standby->data_dir . '/ehrledger_node.key';
# The standby records its reads as a dedicated replication role.
my $repl_conninfo = 'port=' . $primary->port . ' host=' . $primary->host . ' user=standby_repl';
$standby->append_conf('postgresql.conf', qq{
ehrledger.primary_conninfo = '$repl_conninfo'
});
$standby->start;
$primary->wait_for_catchup($standby);

sub reads_on_primary
{
    my ($actor, $patient) = @_;
    return $primary->safe_psql('ehr', qq{
        SELECT count(*) FROM ehrledger.access_log
         WHERE actor = '$actor' AND patient = '$patient' AND action = 'read'
           AND detail = 'read on standby ward'});
}

# --- 1. Consent on the standby, reads recorded on the primary ---------------

is($standby->safe_psql('ehr', 'SELECT pg_is_in_recovery()'), 't', 'the standby is in recovery');
is($standby->safe_psql('ehr', q{SET ROLE emr_grey; SELECT string_agg(id::text, ',' ORDER BY id) FROM encounter}),
    '1,3', 'on the standby a provider sees the rows of the patient who consented, and no others');
is(reads_on_primary('dr-grey', 'alice'), '1',
    'the read on the standby is in the primary\'s access log as soon as it returned');
is($standby->safe_psql('ehr', q{SET ROLE emr_clerk; SELECT count(*) FROM encounter}), '0',
    'a role mapped to no actor sees nothing on the standby');
is($standby->safe_psql('ehr', q{SET ROLE emr_bob; SELECT string_agg(id::text, ',') FROM encounter}), '2',
    'a patient reads its own rows on the standby, and only those');
is($primary->safe_psql('ehr', q{
    SELECT basis FROM ehrledger.access_log WHERE actor = 'bob' AND action = 'read'}),
    'own record', 'and that read is recorded on the primary with its basis');
is($standby->safe_psql('ehr', q{SET ROLE emr_grey; SELECT count(*) FROM encounter WHERE patient_id = 'bob'}),
    '0', 'the provider cannot see bob, who gave no consent');
is($primary->safe_psql('ehr', q{
    SELECT count(*) FROM ehrledger.access_log WHERE actor = 'dr-grey' AND patient = 'bob'}),
    '0', 'a read that returned no patient\'s rows names no patient');

$primary->safe_psql('ehr', 'SELECT ehrledger.seal()');
is($primary->safe_psql('ehr', q{
    SELECT count(*) FROM ehrledger.access_event
     WHERE ledger_seq > (SELECT max(last_seq) FROM ehrledger.blocks)}), '0',
    'the standby\'s reads are sealed on the primary');
is($primary->safe_psql('ehr', q{SELECT ok::text || ' ' || problems::text FROM ehrledger.verify()}),
    'true []', 'and verify');
$primary->wait_for_catchup($standby, 'replay');
is($standby->safe_psql('ehr', q{SELECT ok::text || ' ' || problems::text FROM ehrledger.verify()}),
    'true []', 'verify() runs on the standby too, loading no primary');

# --- 2. A revocation, in force on the standby once replayed -----------------

my $session = $standby->background_psql('ehr', on_error_stop => 0);
$session->query_safe('SET ROLE emr_grey');
is($session->query_safe('SELECT count(*) FROM encounter'), '2', 'a standby session of the provider reads');
$primary->safe_psql('ehr', q{
    SET ROLE emr_alice;
    SELECT ehrledger.revoke_consent(consent_id) FROM ehrledger.consents WHERE patient = 'alice' AND active});
$primary->wait_for_catchup($standby, 'replay');
is($session->query_safe('SELECT count(*) FROM encounter'), '0',
    'after the revocation is replayed, the same standby session sees nothing');
is($session->query_safe('BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM encounter'), '0',
    'nor inside a repeatable-read transaction');
$session->query_safe('COMMIT');

# --- 3. Break-glass from the standby ------------------------------------------

my $glass = $standby->safe_psql('ehr', q{
    SET ROLE emr_grey;
    SELECT ehrledger.break_glass('bob', 'unconscious in the ED') > 0;
    SELECT string_agg(id::text, ',') FROM encounter});
is($glass, "t\n2", 'break-glass on the standby opens bob\'s rows there at once');
is($primary->safe_psql('ehr', q{
    SELECT string_agg(action, ',' ORDER BY event_seq) FROM ehrledger.access_log
     WHERE actor = 'dr-grey' AND patient = 'bob'}),
    'break_glass,read', 'the break-glass and the read after it are in the primary\'s log');
is($primary->safe_psql('ehr', q{SELECT pg_role || ' ' || reason FROM ehrledger.break_glass}),
    'emr_grey unconscious in the ED', 'the break-glass is the provider\'s, on the primary');
my ($rc, $out, $err) = $standby->psql('ehr', q{SET ROLE emr_clerk; SELECT ehrledger.break_glass('bob', 'just curious')});
like($err, qr/only a provider or pharmacist may break the glass/,
    'break-glass on the standby by a role that is no provider is refused by the primary');

# --- 4. Who may ship reads: the function on the primary ----------------------

($rc, $out, $err) = $primary->psql('ehr', q{SELECT ehrledger._standby_reads('\x00')},
    extra_params => [ '-U', 'nobody' ]);
like($err, qr/permission denied for function _standby_reads/, 'a role with no grants cannot ship reads');
($rc, $out, $err) = $primary->psql('ehr', q{SELECT ehrledger._standby_break_glass('\x00')},
    extra_params => [ '-U', 'nobody' ]);
like($err, qr/permission denied for function _standby_break_glass/, 'nor ask for a break-glass');
$primary->safe_psql('ehr', 'GRANT EXECUTE ON FUNCTION ehrledger._standby_reads(bytea) TO nobody');
($rc, $out, $err) = $primary->psql('ehr', q{SELECT ehrledger._standby_reads('\x00')},
    extra_params => [ '-U', 'nobody' ]);
like($err, qr/only a role with the REPLICATION attribute/,
    'granted the function by mistake, a role without REPLICATION is still refused');
# A batch as a standby builds it, signed with a key that is not the node's.
my $forged = $primary->safe_psql('ehr', q{
    WITH k AS (SELECT * FROM ehrledger.keypair()),
         body AS (
           SELECT convert_to('ehrledger standby reads 1', 'UTF8')
                  || int8send((SELECT system_identifier FROM pg_control_system()))
                  || '\x0102030405060708090a0b0c0d0e0f1000000000'::bytea
                  || int4send(2) || convert_to('me', 'UTF8') || int4send(0) AS b)
    SELECT encode(b || ehrledger.sign(b, (SELECT secret_key FROM k)), 'hex') FROM body});
($rc, $out, $err) = $primary->psql('ehr', "SELECT ehrledger._standby_reads(decode('$forged', 'hex'))",
    extra_params => [ '-U', 'standby_repl' ]);
like($err, qr/not signed with this node's key/,
    'a replication role cannot record reads without the node key');
($rc, $out, $err) = $primary->psql('ehr', q{SELECT ehrledger._standby_reads('\x0102')},
    extra_params => [ '-U', 'standby_repl' ]);
like($err, qr/not a document of a standby/, 'nor send garbage');
is($primary->safe_psql('ehr', q{SELECT count(*) FROM ehrledger.standby_session WHERE standby = 'me'}),
    '0', 'and nothing of a refused batch is kept');

# A killed standby writer leaves its reads in the ring; the next one sends
# them (again, maybe): each is recorded once.
my $before = reads_on_primary('dr-grey', 'bob');
$standby->safe_psql('ehr', q{
    SELECT pg_terminate_backend(pid) FROM pg_stat_activity
     WHERE backend_type = 'ehrledger access log writer'});
is($standby->safe_psql('ehr', q{SET ROLE emr_grey; SELECT count(*) FROM encounter}), '1',
    'a read after the standby\'s writer was killed completes');
is(reads_on_primary('dr-grey', 'bob'), $before + 1, 'and is recorded once');

# --- 5. The primary down ---------------------------------------------------------

$primary->stop('fast');
($rc, $out, $err) = $standby->psql('ehr', q{SET ROLE emr_grey; SELECT count(*) FROM encounter});
like($err, qr/this read could not be recorded in the ehrledger access log/,
    'with the primary down a read on the standby is refused');
like($err, qr/The primary could not record it/, 'and says why');
is($standby->safe_psql('ehr', q{SELECT count(*) FROM encounter}), '3',
    'the superuser (not logged, as on the primary) still reads');

$standby->append_conf('postgresql.conf', "ehrledger.standby_primary_down = serve\n");
$standby->reload;
is($standby->safe_psql('ehr', q{SET ROLE emr_grey; SELECT count(*) FROM encounter}), '1',
    'with standby_primary_down = serve the read is returned');
ok(-f $standby->data_dir . '/ehrledger_standby_spool.'
      . $standby->safe_psql('ehr', q{SELECT oid FROM pg_database WHERE datname = 'ehr'}),
    'and its record is in the standby\'s spool');
$primary->start;
ok($primary->poll_query_until('ehr', q{
    SELECT count(*) = } . ($before + 2) . q{ FROM ehrledger.access_log
     WHERE actor = 'dr-grey' AND patient = 'bob' AND action = 'read'}),
    'once the primary is back, the spooled read is recorded there');
is($standby->safe_psql('ehr', q{SET ROLE emr_grey; SELECT count(*) FROM encounter}), '1',
    'and reads on the standby are recorded directly again');
ok($primary->poll_query_until('ehr', q{
    SELECT count(*) = } . ($before + 3) . q{ FROM ehrledger.access_log
     WHERE actor = 'dr-grey' AND patient = 'bob' AND action = 'read'}), 'each once');

$primary->safe_psql('ehr', 'SELECT ehrledger.seal()');
is($primary->safe_psql('ehr', q{SELECT ok::text || ' ' || problems::text FROM ehrledger.verify()}),
    'true []', 'the primary\'s ledger verifies with the standby\'s reads in it');

# --- 6. Promoted with reads in its spool -------------------------------------

$session->quit;
$primary->stop('fast');
is($standby->safe_psql('ehr', q{SET ROLE emr_grey; SELECT count(*) FROM encounter}), '1',
    'with the primary down again, a read on the standby is served and spooled');
$standby->promote;
$standby->poll_query_until('ehr', 'SELECT NOT pg_is_in_recovery()');
is($standby->safe_psql('ehr', q{
    SELECT count(*) FROM ehrledger.access_log
     WHERE actor = 'dr-grey' AND patient = 'bob' AND action = 'read'}), $before + 4,
    'promoted, the standby records the read it had spooled (it is the primary now)');
ok(!-f $standby->data_dir . '/ehrledger_standby_spool.'
      . $standby->safe_psql('ehr', q{SELECT oid FROM pg_database WHERE datname = 'ehr'}),
    'and its spool is gone');
is($standby->safe_psql('ehr', q{SET ROLE emr_grey; SELECT count(*) FROM encounter}), '1',
    'reads on the promoted standby are recorded there');
$standby->safe_psql('ehr', 'SELECT ehrledger.seal()');
is($standby->safe_psql('ehr', q{SELECT ok::text || ' ' || problems::text FROM ehrledger.verify()}),
    'true []', 'and its ledger verifies');

$standby->stop;
done_testing();
