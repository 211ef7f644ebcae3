# The insert trigger hashes a row only if no other BEFORE ROW trigger for
# the event fires after it.  The schema guard refuses triggers named to
# sort after the ledger's, but PostgreSQL fires triggers in name order only
# through pg_trigger's index: a connection with ignore_system_indexes (any
# user may ask for it in the startup packet) fires them in the catalog's
# physical order, where an owner's early-named trigger created after
# protect() comes after the ledger's and could change the hashed row.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('trigger_order');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'ehrledger'
ehrledger.database = 'postgres'
ehrledger.seal_interval = 0
});
$node->start;
$node->safe_psql('postgres', q{
    CREATE EXTENSION ehrledger;
    CREATE ROLE clinic LOGIN;
    GRANT CREATE ON SCHEMA public TO clinic;
    CREATE TABLE obs (id int PRIMARY KEY, v text);
    ALTER TABLE obs OWNER TO clinic;
    SELECT ehrledger.protect('obs');
    GRANT INSERT, SELECT ON obs TO clinic;
});
$node->safe_psql('postgres', q{
    SET ROLE clinic;
    CREATE FUNCTION normalise() RETURNS trigger LANGUAGE plpgsql AS
        $$BEGIN NEW.v := NEW.v || ' (normalised)'; RETURN NEW; END$$;
    CREATE TRIGGER a_normalise BEFORE INSERT ON obs FOR EACH ROW EXECUTE FUNCTION normalise();
});

# In name order the owner's trigger fires first: the row is hashed as stored.
$node->safe_psql('postgres', q{INSERT INTO obs VALUES (1, 'pulse 72')}, extra_params => ['-U', 'clinic']);
is($node->safe_psql('postgres', 'SELECT v FROM obs WHERE id = 1'), 'pulse 72 (normalised)',
    'an early-named owner trigger fires before the hashing trigger');

# In physical order it would fire after: the insert is refused.
my ($ret, $out, $err);
{
    local $ENV{PGOPTIONS} = '-c ignore_system_indexes=on';
    ($ret, $out, $err) = $node->psql('postgres', q{INSERT INTO obs VALUES (2, 'pulse 80')},
        extra_params => ['-U', 'clinic']);
}
isnt($ret, 0, 'with ignore_system_indexes the insert is refused');
like($err, qr/trigger "a_normalise" of ledger table "public\.obs" would fire after the ledger's trigger "zz_ehrledger_insert"/,
    'the refusal names the trigger that would fire late');
is($node->safe_psql('postgres', 'SELECT count(*) FROM obs'), '1', 'nothing was stored');

$node->safe_psql('postgres', 'SELECT ehrledger.seal()');
is($node->safe_psql('postgres', q{SELECT ok FROM ehrledger.verify('obs')}), 't',
    'every stored row verifies');

$node->stop;
done_testing();
