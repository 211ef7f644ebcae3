# Patients' consent and the access log under real sessions, crashes and
# restores: who touches a patient's rows is announced on channel
# ehrledger_events and recorded in ehrledger.access_log; a read stays
# recorded when its transaction rolls back or its backend is killed, and
# survives an immediate stop; the access log writer may die or go idle
# without losing a read or holding up DROP DATABASE; the access log is
# sealed and verifies; each entry names the client's address (none over a
# Unix socket); and a dump restored on another cluster keeps the
# consent policies working.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP;

my $conf = qq{
shared_preload_libraries = 'ehrledger'
ehrledger.database = 'ehr'
ehrledger.seal_interval = 0
listen_addresses = '127.0.0.1'
};
my $writer_type = 'ehrledger access log writer';

my $node = PostgreSQL::Test::Cluster->new('clinic');
$node->init;
$node->append_conf('postgresql.conf', $conf);
$node->start;

# Roles of the people involved; they log in through the application's
# connection, which switches to them with SET ROLE.
my $roles = q{
    CREATE ROLE emr_alice;      -- patient alice
    CREATE ROLE emr_bob;        -- patient bob
    CREATE ROLE emr_grey;       -- provider dr-grey
    CREATE ROLE emr_yang;       -- provider dr-yang
    CREATE ROLE emr_nurse;      -- provider nurse-7
};
$node->safe_psql('postgres', $roles);
$node->safe_psql('postgres', 'CREATE DATABASE ehr');

# A database with a consent-protected table and its actors; for ehr, and
# for a scratch database that is dropped later.
my $schema = q{
    CREATE EXTENSION ehrledger;
    CREATE TABLE encounter (id int PRIMARY KEY, patient_id text NOT NULL, reason text NOT NULL);
    INSERT INTO encounter VALUES (1, 'alice', 'chest pain'), (2, 'bob', 'fracture'),
                                 (3, 'alice', 'follow-up');
    SELECT ehrledger.protect('encounter', patient_column => 'patient_id');
    GRANT SELECT, INSERT ON encounter TO emr_alice, emr_bob, emr_grey, emr_yang;
    CREATE TABLE keys AS
        SELECT who, (kp).public_key, (kp).secret_key
          FROM (SELECT who, ehrledger.keypair() AS kp
                  FROM unnest(ARRAY['alice', 'bob', 'dr-grey', 'dr-yang']) AS w(who)) k;
    SELECT ehrledger.register_actor('alice', 'patient', (SELECT public_key FROM keys WHERE who = 'alice'), 'emr_alice');
    SELECT ehrledger.register_actor('bob', 'patient', (SELECT public_key FROM keys WHERE who = 'bob'), 'emr_bob');
    SELECT ehrledger.register_actor('dr-grey', 'provider', (SELECT public_key FROM keys WHERE who = 'dr-grey'), 'emr_grey');
    SELECT ehrledger.register_actor('dr-yang', 'provider', (SELECT public_key FROM keys WHERE who = 'dr-yang'), 'emr_yang');
};
$node->safe_psql('ehr', $schema);

# How many access log rows there are for an actor, patient and action.
sub logged
{
    my ($n, $db, $actor, $patient, $action) = @_;
    return $n->safe_psql($db, qq{
        SELECT count(*) FROM ehrledger.access_log
         WHERE actor = '$actor' AND patient = '$patient' AND action = '$action'});
}

# --- 1. Notifications --------------------------------------------------------

# A channel has no privileges: anyone may LISTEN, and anyone may NOTIFY.  So
# a notification carries only the number of the access log entry; a
# patient-facing service fetches the entry with its own rights, and a number
# that names no entry it may see was not sent by ehrledger.
$node->safe_psql('ehr', q{
    CREATE ROLE emr_stranger;
    CREATE ROLE emr_notifier;
    SELECT ehrledger.register_actor('notifier', 'auditor', (ehrledger.keypair()).public_key, 'emr_notifier');
});

# Listeners that stay connected while others act; psql prints the
# notifications they received after their next command.
my $listener = $node->background_psql('ehr');
$listener->query_safe('SET ROLE emr_notifier; LISTEN ehrledger_events');
my $stranger = $node->background_psql('ehr', on_error_stop => 0);
$stranger->query_safe('SET ROLE emr_stranger; LISTEN ehrledger_events');

my $grant = $node->safe_psql('ehr', q{
    SET ROLE emr_alice;
    SELECT ehrledger.grant_consent('alice', 'dr-grey', scope => 'encounter', actions => '{read,write}')});
is($node->safe_psql('ehr', q{SET ROLE emr_grey; SELECT string_agg(id::text, ',' ORDER BY id) FROM encounter}),
    '1,3', 'with alice\'s consent dr-grey reads her encounters, and only hers');
$node->safe_psql('ehr', q{SET ROLE emr_grey; INSERT INTO encounter VALUES (4, 'alice', 'ecg')});
my $glass = $node->safe_psql('ehr', q{
    SET ROLE emr_yang;
    SELECT ehrledger.break_glass('bob', 'unconscious in the ED, suspected overdose')});
# Anyone can put a forged event on the channel.
$node->safe_psql('ehr', q{SET ROLE emr_stranger; SELECT pg_notify('ehrledger_events', '{"event_seq": 999999}')});

sub heard
{
    my ($session) = @_;
    my @payloads;
    for my $line (split /\n/, $session->query_safe('SELECT 1'))
    {
        next unless $line =~ /^Asynchronous notification "ehrledger_events" with payload "(.*)" received from server process/;
        push @payloads, decode_json($1);
    }
    return @payloads;
}
my @events = heard($listener);
note "received: " . join("\n", map { encode_json($_) } @events);
is(scalar(@events), 5, 'the listener received five notifications: grant, read, insert, break-glass, and a forged one');
is_deeply([ map { [ sort keys %$_ ] } @events ], [ map { ['event_seq'] } 1 .. 5 ],
    'each payload holds the number of an access log entry and nothing else');
my @stranger_events = heard($stranger);
is_deeply(\@stranger_events, \@events, 'a role with no grants hears the same numbers, and learns no more');
like($stranger->query('SELECT * FROM ehrledger.access_event(' . $events[0]{event_seq} . ')'), qr/^$/,
    'nor can it read the entry they name');
like($stranger->{stderr}, qr/only a patient named in an access log entry or an auditor may read it/,
    'it is told why');

# The service reads each entry under its own (auditor) rights.
sub entry
{
    my ($seq) = @_;
    return $node->safe_psql('ehr', qq{
        SET ROLE emr_notifier;
        SELECT string_agg(concat_ws('|', action, patient, actor, pg_role, coalesce(tbl::text, ''), basis), E'\n')
          FROM ehrledger.access_event($seq)});
}
my ($ev_grant, $ev_read, $ev_insert, $ev_glass, $ev_forged) = map { entry($_->{event_seq}) } @events;
is($ev_grant, 'grant|alice|alice|emr_alice|encounter|patient role',
    'grant: alice granted, from her own role, consent to her encounters');
is($ev_read, "read|alice|dr-grey|emr_grey|encounter|consent $grant",
    'read: dr-grey read alice\'s encounters under her consent');
is($ev_insert, "insert|alice|dr-grey|emr_grey|encounter|consent $grant",
    'insert: dr-grey added an encounter of alice\'s under her consent');
is($ev_glass, "break_glass|bob|dr-yang|emr_yang||break-glass $glass: unconscious in the ED, suspected overdose",
    'break_glass: dr-yang opened bob\'s records, no table in particular, with the reason');
is($ev_forged, '', 'the forged number names no entry: the service ignores it');
# A patient's own app may listen too, and sees only its own line of an entry.
is($node->safe_psql('ehr', "SET ROLE emr_bob; SELECT count(*) FROM ehrledger.access_event($events[1]{event_seq})"),
    '0', 'bob sees nothing of an entry about alice');
is($node->safe_psql('ehr', "SET ROLE emr_alice; SELECT patient FROM ehrledger.access_event($events[1]{event_seq})"),
    'alice', 'alice sees her own line of it');
$listener->quit;
$stranger->quit;

# --- 2. Rollbacks and killed backends ----------------------------------------

my $before = logged($node, 'ehr', 'dr-grey', 'alice', 'read');
is($node->safe_psql('ehr', q{
    BEGIN;
    SET ROLE emr_grey;
    SELECT count(*) FROM encounter;
    ROLLBACK;}), '3', 'dr-grey reads alice\'s three encounters in a transaction that rolls back');
is(logged($node, 'ehr', 'dr-grey', 'alice', 'read'), $before + 1,
    'the read is recorded although its transaction rolled back');

$before = logged($node, 'ehr', 'dr-grey', 'alice', 'read');
my $session = $node->background_psql('ehr', on_error_stop => 0);
my $pid = $session->query_safe('SELECT pg_backend_pid()');
is($session->query_safe(q{BEGIN; SET ROLE emr_grey; SELECT count(*) FROM encounter WHERE reason = 'ecg';}),
    '1', 'dr-grey reads in a transaction that stays open');
is($node->safe_psql('postgres', "SELECT pg_terminate_backend($pid)"), 't',
    'the reading backend is killed with its transaction open');
ok($node->poll_query_until('postgres', "SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = $pid"),
    'the killed backend is gone');
$session->quit;
is(logged($node, 'ehr', 'dr-grey', 'alice', 'read'), $before + 1,
    'the read of the killed backend is recorded');

$before = logged($node, 'ehr', 'dr-grey', 'alice', 'insert');
$node->safe_psql('ehr', q{
    BEGIN;
    SET ROLE emr_grey;
    INSERT INTO encounter VALUES (5, 'alice', 'x-ray');
    ROLLBACK;});
is(logged($node, 'ehr', 'dr-grey', 'alice', 'insert'), $before,
    'an insert that rolls back is not recorded: it never happened');
$node->safe_psql('ehr', q{SET ROLE emr_grey; INSERT INTO encounter VALUES (5, 'alice', 'x-ray')});
is(logged($node, 'ehr', 'dr-grey', 'alice', 'insert'), $before + 1,
    'the same insert, committed, is recorded');

# --- 3. Durability ----------------------------------------------------------

$before = logged($node, 'ehr', 'dr-yang', 'bob', 'read');
is($node->safe_psql('ehr', q{SET ROLE emr_yang; SELECT string_agg(reason, ',') FROM encounter}),
    'fracture', 'dr-yang reads bob\'s encounter through the broken glass');
$node->stop('immediate');
$node->start;
is(logged($node, 'ehr', 'dr-yang', 'bob', 'read'), $before + 1,
    'the read is in the access log after an immediate stop and restart');

# --- 4. The access log writer -------------------------------------------------

# Each read is followed, in the same session, by a look at pg_stat_activity
# (and maybe a kill): the writer leaves by itself after a few idle seconds,
# so a separate connection could come too late.
is($node->safe_psql('ehr', qq{
    SET ROLE emr_grey;
    SELECT count(*) FROM encounter;
    RESET ROLE;
    SELECT count(*) FROM pg_stat_activity WHERE backend_type = '$writer_type' AND datname = 'ehr';}),
    "4\n1", "right after a read the database has one '$writer_type' in pg_stat_activity");

# Killed right after a read.
$before = logged($node, 'ehr', 'dr-grey', 'alice', 'read');
my $killed = $node->safe_psql('ehr', qq{
    SET ROLE emr_grey;
    SELECT count(*) FROM encounter;
    RESET ROLE;
    SELECT pid FROM pg_stat_activity WHERE backend_type = '$writer_type' AND datname = 'ehr' \\gset
    SELECT :pid, pg_terminate_backend(:pid);});
like($killed, qr/^4\n\d+\|t$/, 'the writer is killed right after a read');
my ($old_writer) = $killed =~ /^4\n(\d+)\|t$/;
$old_writer //= 0;
ok($node->poll_query_until('postgres',
    "SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = $old_writer"), 'the killed writer is gone');
is(logged($node, 'ehr', 'dr-grey', 'alice', 'read'), $before + 1,
    'the read before the kill is recorded');
my $new_writer = $node->safe_psql('ehr', qq{
    SET ROLE emr_grey;
    SELECT count(*) FROM encounter;
    RESET ROLE;
    SELECT pid FROM pg_stat_activity WHERE backend_type = '$writer_type' AND datname = 'ehr';});
like($new_writer, qr/^4\n\d+$/, 'the next read completes, with a writer running');
$new_writer =~ s/^4\n//;
isnt($new_writer, $old_writer, 'a new writer was started');
is(logged($node, 'ehr', 'dr-grey', 'alice', 'read'), $before + 2, 'and the read is recorded');

# Killed while idle between reads.
$before = logged($node, 'ehr', 'dr-yang', 'bob', 'read');
$killed = $node->safe_psql('ehr', qq{
    SET ROLE emr_yang;
    SELECT count(*) FROM encounter;
    RESET ROLE;
    DO \$\$
    DECLARE
        p int;
    BEGIN
        -- (it is idle once the read is written, and leaves 2 s later)
        FOR i IN 1 .. 2000 LOOP
            PERFORM pg_stat_clear_snapshot();
            SELECT pid INTO p FROM pg_stat_activity
             WHERE backend_type = '$writer_type' AND datname = 'ehr' AND state = 'idle';
            EXIT WHEN p IS NOT NULL;
            PERFORM pg_sleep(0.01);
        END LOOP;
        PERFORM set_config('test.idle_writer', coalesce(p, 0)::text, false);
    END \$\$;
    SELECT current_setting('test.idle_writer') AS pid \\gset
    SELECT :pid, pg_terminate_backend(:pid);});
like($killed, qr/^1\n\d+\|t$/, 'the writer is killed while idle');
($old_writer) = $killed =~ /(\d+)\|t$/;
$old_writer //= 0;
ok($node->poll_query_until('postgres',
    "SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = $old_writer"), 'the killed writer is gone');
is($node->safe_psql('ehr', q{SET ROLE emr_yang; SELECT count(*) FROM encounter}), '1',
    'a read after the idle writer was killed completes');
is(logged($node, 'ehr', 'dr-yang', 'bob', 'read'), $before + 2, 'both reads are recorded');

# An idle writer leaves by itself, and does not hold up DROP DATABASE.
$node->safe_psql('postgres', 'CREATE DATABASE scratch');
$node->safe_psql('scratch', $schema);
$node->safe_psql('scratch', q{
    SET ROLE emr_alice;
    SELECT ehrledger.grant_consent('alice', 'dr-grey', scope => 'encounter')});
is($node->safe_psql('scratch', qq{
    SET ROLE emr_grey;
    SELECT count(*) FROM encounter;
    RESET ROLE;
    SELECT count(*) FROM pg_stat_activity WHERE backend_type = '$writer_type' AND datname = 'scratch';}),
    "2\n1", 'a read in another database starts a writer there');
is(logged($node, 'scratch', 'dr-grey', 'alice', 'read'), '1', 'the read there is recorded');
ok($node->poll_query_until('postgres', qq{
    SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = '$writer_type'}),
    'idle access log writers leave by themselves');
$node->command_ok([ 'psql', '-X', '-v', 'ON_ERROR_STOP=1', '-c', 'DROP DATABASE scratch',
                    '-d', $node->connstr('postgres') ],
    'DROP DATABASE of a database whose reads were logged succeeds');

# --- 4b. The client's address --------------------------------------------

# Every entry records the address the client connected from, taken in the
# client's own session: a break-glass (written by SQL), a read (written by
# the access log writer, another process) and an insert (written in the
# inserting transaction).  Over a Unix socket there is no address.
$node->safe_psql('ehr', q{
    GRANT SELECT, INSERT ON encounter TO emr_nurse;
    SELECT ehrledger.register_actor('nurse-7', 'provider', (ehrledger.keypair()).public_key, 'emr_nurse');
});
my $tcp = 'host=127.0.0.1 port=' . $node->port . ' dbname=ehr';
$node->safe_psql('ehr', q{
    SET ROLE emr_nurse;
    SELECT ehrledger.break_glass('bob', 'found unconscious');
    SELECT count(*) FROM encounter WHERE patient_id = 'bob';
    INSERT INTO encounter VALUES (70, 'bob', 'overdose');
}, connstr => $tcp);
$node->safe_psql('ehr', q{
    SET ROLE emr_nurse;
    SELECT count(*) FROM encounter WHERE patient_id = 'bob';
});
is($node->safe_psql('ehr', q{
    SELECT string_agg(action || ' ' || coalesce(host(client_addr), 'none'), ', ' ORDER BY event_seq)
      FROM ehrledger.access_log WHERE actor = 'nurse-7'}),
    'break_glass 127.0.0.1, read 127.0.0.1, insert 127.0.0.1, read none',
    'each access log entry has the client address of its session: 127.0.0.1 over TCP, none over a Unix socket');
is($node->safe_psql('ehr', q{
    SELECT string_agg(coalesce(host(client_addr), 'none'), ', ' ORDER BY event_seq)
      FROM ehrledger.access_history('bob') WHERE actor = 'nurse-7'}),
    '127.0.0.1, 127.0.0.1, 127.0.0.1, none', 'access_history() shows the client address');
like($node->safe_psql('ehr', q{
    SELECT jsonb_path_query_array(ehrledger.access_history_fhir('bob'),
               '$.entry[*].resource ? (@.text.div like_regex "nurse-7").agent[*] ? (@.network.type == "2").network')}),
    qr/^\[\{"type": "2", "address": "127\.0\.0\.1"\}(, \{"type": "2", "address": "127\.0\.0\.1"\}){2}\]$/,
    'its BALP AuditEvents name the client by IP address (network type 2), and only those over TCP');

# --- 5. Sealing and verification ------------------------------------------

$node->safe_psql('ehr', 'SELECT ehrledger.seal()');
is($node->safe_psql('ehr', q{
    SELECT count(*) FROM ehrledger.access_event
     WHERE ledger_seq > (SELECT coalesce(max(last_seq), 0) FROM ehrledger.blocks)}), '0',
    'seal() seals the access log, a ledger table too');
is($node->safe_psql('ehr', q{SELECT ok::text || ' ' || problems::text FROM ehrledger.verify()}),
    'true []', 'verify() is ok after rollbacks, kills, a crash and dead writers');
# An entry with an address proves like any row: the proof's row shows the
# inet as its type and bytes (docs/format.md section 19), and checks.
like($node->safe_psql('ehr', q{
    SELECT p->'row'->>'client_addr' || ' ' || c.verdict
      FROM (SELECT ehrledger.proof('ehrledger.access_event', max(ledger_seq)) AS p
              FROM ehrledger.access_event WHERE client_addr IS NOT NULL) x,
           ehrledger.check_proof(x.p::text, ehrledger.digest()::text) c}),
    qr/^\{"hex": "[0-9a-f]+", "type": "inet"\} valid$/,
    'the proof of an entry with a client address checks, the address shown as inet bytes');

# --- 6. Roles are identities, not names -------------------------------------

# dr-yang leaves; a new hire gets the same login name.
$node->safe_psql('ehr', q{
    REVOKE ALL ON encounter FROM emr_yang;
    DROP ROLE emr_yang;
    CREATE ROLE emr_yang;
    GRANT SELECT, INSERT ON encounter TO emr_yang;});
is($node->safe_psql('ehr', q{SET ROLE emr_yang; SELECT actor_id IS NULL FROM ehrledger.current_actor()}), 't',
    'a role created again under a departed user\'s name is no actor');
is($node->safe_psql('ehr', q{SET ROLE emr_yang; SELECT count(*) FROM encounter}), '0',
    'and inherits none of the departed actor\'s consents or break-glass');
is($node->safe_psql('ehr', q{SELECT pg_role || ' ' || role_live FROM ehrledger.actors WHERE actor_id = 'dr-yang'}),
    'emr_yang false', 'the departed role\'s mapping is dead');
my ($out, $err);
$node->psql('ehr', q{SET ROLE emr_yang; SELECT ehrledger.break_glass('bob', 'unconscious in the ED, suspected overdose')},
    stdout => \$out, stderr => \$err);
like($err, qr/only a provider or pharmacist may break the glass/, 'nor can the new role break the glass as dr-yang');

# --- 7. Dump and restore on another cluster -----------------------------

my $other = PostgreSQL::Test::Cluster->new('county');
$other->init;
$other->append_conf('postgresql.conf', $conf);
$other->start;
# Another cluster's roles are other roles, even under the same names (here
# their OIDs differ too): no mapping holds until an admin maps again.
$other->safe_psql('postgres', "CREATE ROLE county_dba; $roles");
$other->safe_psql('postgres', 'CREATE DATABASE ehr');

my $dir = $node->basedir;
$node->command_ok([ 'pg_dump', '-Fc', '-f', "$dir/ehr.dump", '-d', $node->connstr('ehr') ],
    'custom dump of the database with a consent-protected table');
$other->command_ok([ 'pg_restore', '--exit-on-error', '-d', $other->connstr('ehr'), "$dir/ehr.dump" ],
    'restore on another cluster');

is($other->safe_psql('ehr', q{
    SELECT string_agg(polname || ':' || polcmd::text, ',' ORDER BY polname) FROM pg_policy
     WHERE polrelid = 'encounter'::regclass AND polname LIKE 'ehrledger\_%'}),
    'ehrledger_delete:d,ehrledger_insert:a,ehrledger_read:r,ehrledger_update:w',
    'the four consent policies came along');
is($other->safe_psql('ehr', q{SELECT relrowsecurity FROM pg_class WHERE oid = 'encounter'::regclass}),
    't', 'row-level security is enabled');
is($other->safe_psql('ehr', q{SET ROLE emr_grey; SELECT count(*) FROM encounter}), '0',
    'after the restore the roles are others: dr-grey\'s role maps to no actor yet');
is($other->safe_psql('ehr', q{SELECT string_agg(actor_id, ',' ORDER BY actor_id) FROM ehrledger.actors WHERE NOT role_live}),
    'alice,bob,dr-grey,dr-yang,notifier,nurse-7', 'every mapping is shown dead');
$other->safe_psql('ehr', q{
    SELECT ehrledger.map_role(actor_id, pg_role) FROM ehrledger.actors
     WHERE actor_id IN ('alice', 'bob', 'dr-grey')});
is($other->safe_psql('ehr', q{SET ROLE emr_grey; SELECT string_agg(id::text, ',' ORDER BY id) FROM encounter}),
    '1,3,4,5', 'once an admin maps the actors again, alice\'s consent lets dr-grey read her encounters, and only hers');
is($other->safe_psql('ehr', q{SET ROLE emr_bob; SELECT string_agg(id::text, ',' ORDER BY id) FROM encounter}),
    '2,70', 'bob still sees only his own');
is(logged($other, 'ehr', 'dr-grey', 'alice', 'read'),
    logged($node, 'ehr', 'dr-grey', 'alice', 'read') + 1,
    'the restored access log came along and records the new read');
$other->safe_psql('ehr', 'SELECT ehrledger.seal()');
is($other->safe_psql('ehr', q{SELECT ok::text || ' ' || problems::text FROM ehrledger.verify()}),
    'true []', 'verify() is ok on the restored copy');

$node->stop;
$other->stop;
done_testing();
