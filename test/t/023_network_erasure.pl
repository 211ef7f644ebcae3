# Erasure across the hospital network (issue 13, part 3): three hospitals;
# h1 shares a table with a patient column.  An erasure at h1 of one shared
# row, then of a whole patient, reaches every hospital holding a copy: each
# removes it and keeps the signed notice with how many copies it removed.
# A notice that is not signed with its origin's key removes nothing.
# verify() stays ok everywhere, and h1 reports the erased rows as erased.
#
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/lib";
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EhrNet;

my @names = qw(h1 h2 h3);
new_hospital($_) for @names;
network_up(@names);

# h1 shares rx; its DBA is an admin actor (erasure needs one).
sql('h1', q{
	CREATE TABLE rx (id int PRIMARY KEY, patient text NOT NULL, drug text);
	SELECT ehrledger.protect('rx', patient_column => 'patient');
	SELECT ehrledger.share('rx');
	SELECT ehrledger.register_actor('adm', 'admin', (SELECT public_key FROM ehrledger.keypair()), current_user);
	INSERT INTO rx VALUES (1, 'pat-1', 'sertraline'), (2, 'pat-1', 'amoxicillin'), (3, 'pat-2', 'ibuprofen'),
	                      (4, 'pat-2', 'morphine'), (5, 'pat-3', 'insulin');
	SELECT ehrledger.seal();
});
for my $name (qw(h2 h3))
{
	wait_for($name, q{SELECT count(*) = 5 AND bool_and(verified) AND bool_and(final) FROM ehrledger.shared_rows
	                   WHERE origin = 'h1' AND table_name = 'public.rx'},
		'the five shared rows of h1 arrive, verified and final');
}

# a. One row.
my $seq1 = sql('h1', q{SELECT ledger_seq FROM rx WHERE id = 1});
is(sql('h1', qq{SELECT ehrledger.erase('rx', $seq1, 'filed in the wrong chart')}), '1', 'h1 erases row 1');
is(sql('h1', qq{SELECT count(*) FROM ehrledger.shared_row WHERE ledger_seq = $seq1}), '0',
	'h1: its own copy of row 1 is gone');
is(sql('h1', qq{SELECT copies_removed || ' ' || (table_name = 'public.rx')::text FROM ehrledger.erasure_notice
                 WHERE origin = 'h1' AND erased_seq = $seq1}), '1 true', 'h1: its notice names the row');
for my $name (qw(h2 h3))
{
	wait_for($name, qq{SELECT EXISTS (SELECT 1 FROM ehrledger.erasure_notice WHERE origin = 'h1' AND erased_seq = $seq1)},
		'the notice of row 1 arrives');
	is(sql($name, qq{SELECT count(*) FROM ehrledger.shared_row WHERE origin = 'h1' AND ledger_seq = $seq1}), '0',
		"$name: its copy of row 1 is gone");
	is(sql($name, qq{SELECT copies_removed FROM ehrledger.erasure_notice WHERE origin = 'h1' AND erased_seq = $seq1}), '1',
		"$name: and it recorded that it removed one copy");
	is(sql($name, q{SELECT count(*) FROM ehrledger.shared_row WHERE origin = 'h1'}), '4',
		"$name: the other copies stay");
}

# b. A whole patient.
my $seqs2 = sql('h1', q{SELECT string_agg(ledger_seq::text, ',' ORDER BY ledger_seq) FROM rx WHERE patient = 'pat-2'});
is(sql('h1', q{SELECT ehrledger.erase_patient('pat-2', 'right to erasure, request 17')}), '2',
	'h1 erases patient pat-2 (two rows)');
for my $name (qw(h2 h3))
{
	wait_for($name, qq{SELECT count(*) = 2 FROM ehrledger.erasure_notice WHERE origin = 'h1' AND erased_seq IN ($seqs2)},
		'the notices of pat-2\'s two rows arrive');
	is(sql($name, q{SELECT string_agg("row" ->> 'id', ',' ORDER BY ("row" ->> 'id')::int) FROM ehrledger.shared_row
	                 WHERE origin = 'h1'}), '2,5', "$name: only the copies of rows 2 and 5 remain");
	is(sql($name, q{SELECT sum(copies_removed) FROM ehrledger.erasure_notice WHERE origin = 'h1'}), '3',
		"$name: three copies removed in all, each recorded");
}

# c. A notice not signed by h1 (here: h3's own key) arriving at h3 as if from
# h1's stream removes nothing and is recorded as refused.
my $seq5 = sql('h1', q{SELECT ledger_seq FROM rx WHERE id = 5});
my $leaf5 = sql('h1', q{SELECT encode(ledger_hash, 'hex') FROM rx WHERE id = 5});
my ($ret, $out, $err) = $node{h3}->psql('ehr', qq{
	SET session_replication_role = replica;
	INSERT INTO ehrledger.erasure_notice (origin, erased_seq, table_id, table_name, leaf_hash, erased_at, signature)
	SELECT 'h1', $seq5, r.table_id, 'public.rx', '\\x$leaf5', now(),
	       (SELECT ehrledger.sign(ehrledger.erasure_message('h1', $seq5, r.table_id, '\\x$leaf5'), k.secret_key)
	          FROM ehrledger.keypair() k)
	  FROM (SELECT DISTINCT table_id FROM ehrledger.shared_row WHERE origin = 'h1') r;});
is($ret, 0, 'h3: a forged notice is skipped, not an error (the stream goes on)');
like($err, qr/refused an erasure notice of "h1": it is not signed with the origin's key/, 'h3: with a warning');
is(sql('h3', qq{SELECT count(*) FROM ehrledger.shared_row WHERE origin = 'h1' AND ledger_seq = $seq5}), '1',
	'h3: the copy the forged notice names stays');
is(sql('h3', q{SELECT count(*) FROM ehrledger.rejected_row WHERE table_name = 'erasure_notice'}), '1',
	'h3: the refusal is recorded');
($ret, $out, $err) = $node{h3}->psql('ehr', qq{
	SET session_replication_role = replica;
	INSERT INTO ehrledger.erasure_notice (origin, erased_seq, table_id, table_name, leaf_hash, erased_at, signature)
	VALUES ('h1', $seq5, 1, 'public.rx', '\\x00', now(), '\\x00');});
like($err, qr/its leaf_hash is 1 bytes, not 32/, 'h3: a malformed notice is refused before anything reads it');
is(sql('h3', qq{SELECT count(*) FROM ehrledger.shared_row WHERE origin = 'h1' AND ledger_seq = $seq5}), '1',
	'h3: and removes nothing');

# d. Every hospital still verifies; h1 reports its three erased rows.
sql('h1', q{SELECT ehrledger.seal()});
for my $name (@names)
{
	is(sql($name, q{SELECT ok::text || ' ' || problems::text FROM ehrledger.verify()}), 'true []',
		"$name: verify() is ok");
}
is(sql('h1', q{SELECT jsonb_array_length(erased) FROM ehrledger.verify('rx')}), '3',
	'h1: verify() reports the three erased rows as erased');
is(sql('h1', q{SELECT count(*) FROM ehrledger.erasure_notice WHERE ledger_seq IS NOT NULL}), '3',
	'h1: its notices are ledgered rows');

done_testing();
