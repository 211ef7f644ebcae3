# The test vectors (test/vectors/, docs/format.md "Test vectors"): every
# vector through ehrledger-verify and through the server's own checks
# (ehrledger.check_proof() and its kin).  Fails if a verdict differs from
# the manifest's, or if the two disagree, in verdict or in what they say.
# Then the same agreement on full exports of the demo's tables.
use strict;
use warnings;
use Cwd qw(abs_path);
use File::Basename qw(dirname);
use MIME::Base64 qw(decode_base64);
use IPC::Run qw(run);
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $dir = abs_path(dirname(__FILE__) . '/../vectors');
my $root = abs_path(dirname(__FILE__) . '/../..');
ok(-f "$dir/MANIFEST", 'test/vectors/MANIFEST is there') or BAIL_OUT('no vectors');

my $node = PostgreSQL::Test::Cluster->new('vectors');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'ehrledger'
ehrledger.seal_interval = 0
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION ehrledger');
my $verifier = $node->config_data('--bindir') . '/ehrledger-verify';

sub slurp
{
	my ($f) = @_;
	open(my $fh, '<:raw', $f) or die "$f: $!";
	local $/;
	my $t = <$fh>;
	close($fh);
	return $t;
}

(my $key = slurp("$dir/key.hex")) =~ s/\s+//g;
my $members = decode_json(slurp("$dir/members.json"));
my @pins = map { ('--member', "$_=$members->{$_}") } sort keys %$members;

# The names the server's checks give each document, by kind.
my %roles = (
	digest => ['digest'],
	proof => [ 'proof', 'digest' ],
	consistency => [ 'proof', 'old_digest', 'new_digest' ],
	export => [ 'export', 'digest' ],
	certificate => ['certificate'],);
my %function = (
	digest => 'check_digest', proof => 'check_proof', consistency => 'check_consistency',
	export => 'check_export', certificate => 'check_certificate');

# ehrledger-verify on files in $cwd: verdict and what it said, with each
# file named by its role, as the server names it.
sub cli
{
	my ($cwd, $opts, $files, $roles) = @_;
	my ($out, $err) = ('', '');
	run([ $verifier, @$opts, @$files ], '>', \$out, '2>', \$err, init => sub { chdir $cwd });
	my $status = $? >> 8;
	my $said = $status == 0 ? $out : $err;
	$said =~ s/\A(invalid|error): //;
	$said =~ s/\n\z//;
	for my $i (0 .. $#$files)
	{
		$said =~ s/\Q$files->[$i]\E/$roles->[$i]/g;
	}
	return ({ 0 => 'valid', 1 => 'invalid', 2 => 'unusable' }->{$status} // "exit $status", $said);
}

# The server's check: verdict and detail.
sub server
{
	my ($kind, $opts, $texts) = @_;
	my @args = map { '$v$' . $_ . '$v$' } @$texts;
	my $fn = $function{$kind};
	if ($kind eq 'certificate')
	{
		push @args, grep({ $_ eq '--member' } @$opts) ? "'" . encode_json($members) . "'" : 'NULL';
	}
	else
	{
		push @args, grep({ $_ eq '--key' } @$opts) ? "decode('$key', 'hex')" : 'NULL';
		push @args, grep({ $_ eq '--member' } @$opts) ? "'" . encode_json($members) . "'" : 'NULL';
	}
	my $r = $node->safe_psql('postgres',
		"SELECT verdict || ' ' || encode(convert_to(detail, 'UTF8'), 'base64') FROM ehrledger.$fn("
		  . join(', ', @args) . ')');
	my ($verdict, $b64) = split / /, $r, 2;
	$b64 =~ s/\s+//g;
	return ($verdict, decode_base64($b64));
}

my $n = 0;
for my $line (split /\n/, slurp("$dir/MANIFEST"))
{
	next if $line =~ /^#/ || $line !~ /\S/;
	my ($id, $kind, $verdict, $opts, $files, $what) = split /\t/, $line;
	my @files = split / /, $files;
	my @opts = $opts eq '-' ? () : split / /, $opts;
	my @cli_opts = map { $_ eq '--key' ? ('--key', $key) : $_ eq '--member' ? @pins : () } @opts;
	my ($cv, $csaid) = cli($dir, \@cli_opts, \@files, $roles{$kind});
	my ($sv, $ssaid) = server($kind, \@opts, [ map { slurp("$dir/$_") } @files ]);
	is($cv, $verdict, "$id: ehrledger-verify says $verdict ($what)")
	  or diag("it said: $csaid");
	is($sv, $verdict, "$id: the server says $verdict") or diag("it said: $ssaid");
	# (an unusable document's reason may differ: the CLI takes the kind
	# from its format, the server from the function called)
	is($ssaid, $csaid, "$id: both say the same") if $verdict ne 'unusable';
	$n++;
}
cmp_ok($n, '>', 200, "$n vectors");

# Full exports of the demo's tables: the CLI and the server agree (valid).
$node->safe_psql('postgres', slurp("$root/demo/schema.sql"));
$node->safe_psql('postgres', slurp("$root/demo/data.sql"));
$node->safe_psql('postgres', q{
    SELECT ehrledger.protect('public.patient', patient_column => 'id');
    SELECT ehrledger.protect('public.encounter', patient_column => 'patient_id');
    SELECT ehrledger.protect('public.observation', patient_column => 'patient_id', category => 'diagnostics');
    SELECT ehrledger.protect('public.medication_request', patient_column => 'patient_id', category => 'medication');
    SELECT ehrledger.seal();
});
my $tmp = PostgreSQL::Test::Utils::tempdir;
my $digest = $node->safe_psql('postgres', 'SELECT ehrledger.digest()');
open(my $dfh, '>:raw', "$tmp/digest.json") or die;
print $dfh "$digest\n";
close($dfh);
for my $t (qw(patient encounter observation medication_request))
{
	my $export = $node->safe_psql('postgres', "SELECT line FROM ehrledger.export('public.$t')") . "\n";
	open(my $fh, '>:raw', "$tmp/$t.jsonl") or die;
	print $fh $export;
	close($fh);
	my ($cv, $csaid) = cli($tmp, [], [ "$t.jsonl", 'digest.json' ], $roles{export});
	my ($sv, $ssaid) = server('export', [], [ $export, $digest ]);
	is($cv, 'valid', "demo table $t: ehrledger-verify finds its export valid") or diag($csaid);
	is($sv, 'valid', "demo table $t: so does the server") or diag($ssaid);
	is($ssaid, $csaid, "demo table $t: both say the same");
	like($csaid, qr/^valid: all \d+ rows of public\.$t /, "demo table $t: every row was checked");
}

$node->stop;
done_testing();
