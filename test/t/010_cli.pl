# The offline verifier ehrledger-verify (cli/), as installed next to the
# server's programs: digests, inclusion proofs, consistency proofs and table
# exports made by a real node are valid (exit 0); altered ones are invalid
# (exit 1); malformed input is refused (exit 2) without a crash.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP;

my $node = PostgreSQL::Test::Cluster->new('cli');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'ehrledger'
ehrledger.seal_interval = 0
});
$node->start;

my $verifier = $node->config_data('--bindir') . '/ehrledger-verify';
ok(-x $verifier, "ehrledger-verify is installed in the server's bindir")
  or BAIL_OUT("$verifier is missing: run make install");

my $dir = PostgreSQL::Test::Utils::tempdir;
my $json = JSON::PP->new->utf8->canonical;    # like decode_json: UTF-8 bytes
my $n = 0;

# Writes content to a fresh file and returns its path.
sub file_with
{
	my ($content) = @_;
	my $path = sprintf('%s/f%03d.json', $dir, ++$n);
	open(my $fh, '>:raw', $path) or die "$path: $!";
	print $fh $content;
	close($fh);
	return $path;
}

sub hash_file { return file_with($json->encode($_[0]) . "\n"); }

# The verifier on these arguments: exit status, stdout and stderr.
sub valid
{
	my ($args, $out, $name) = @_;
	command_checks_all([ $verifier, @$args ], 0, [ qr/\Avalid: [^\n]*\n/, $out ],
		[qr/\A\z/], $name);
}

sub invalid
{
	my ($args, $err, $name) = @_;
	command_checks_all([ $verifier, @$args ], 1, [qr/\A\z/],
		[ qr/\Ainvalid: [^\n]*\n\z/, $err ], $name);
}

sub unusable
{
	my ($args, $err, $name) = @_;
	command_checks_all([ $verifier, @$args ], 2, [qr/\A\z/], [ qr/\Aerror: /, $err ],
		$name);
}

# One hex digit changed, at position $pos (0 first).
sub flip
{
	my ($hex, $pos) = @_;
	$pos //= 0;
	my $c = substr($hex, $pos, 1);
	substr($hex, $pos, 1) = $c eq '0' ? '1' : '0';
	return $hex;
}

sub sql { return $node->safe_psql('postgres', $_[0]); }

sub quoted { my $s = shift; $s =~ s/'/''/g; return "'$s'"; }

# A ledger of five blocks, with a digest taken after each seal.  Two tables
# share the blocks, so leaves of other tables sit between a table's rows.
sql(q{
    CREATE EXTENSION ehrledger;
    CREATE TABLE prescription (id serial PRIMARY KEY, patient text NOT NULL,
                               drug text NOT NULL, dose numeric, resource jsonb);
    SELECT ehrledger.protect('prescription');
    CREATE TABLE note (id serial PRIMARY KEY, body text NOT NULL);
    SELECT ehrledger.protect('note');
});
my @digest_text;
my @digest;
for my $h (1 .. 5)
{
	my $rows = $h == 1 ? 11 : 3 * $h;
	sql(qq{
        INSERT INTO prescription (patient, drug, dose, resource)
        SELECT 'MRN' || g, 'drug-$h-' || g, g * 1.25,
               jsonb_build_object('resourceType', 'MedicationRequest', 'n', g,
                                  'note', E'line\\nbreak "quoted" \\u00e9')
          FROM generate_series(1, $rows) g;
        INSERT INTO note (body) VALUES ('note of block $h');
        SELECT ehrledger.seal();
    });
	$digest_text[$h] = sql('SELECT ehrledger.digest()');
	$digest[$h] = file_with($digest_text[$h] . "\n");
}
is(sql('SELECT max(height) FROM ehrledger.blocks'), '5', 'five blocks sealed');
my $key = sql(q{SELECT encode(ehrledger.node_public_key(), 'hex')});
my $other_key = flip($key, 10);
my $d5 = decode_json($digest_text[5]);

note 'usage';
command_checks_all([ $verifier, '--help' ], 0, [qr/Usage:/], [qr/\A\z/], '--help');
unusable([], qr/no file given/, 'no arguments');
unusable([ '--bogus', $digest[5] ], qr/unknown option/, 'unknown option');
unusable([ '--key', $digest[5] ], qr/--key/, '--key without a value');
unusable([ '--key', substr($key, 1), $digest[5] ], qr/64 hexadecimal digits/,
	'--key of 63 digits');
unusable([ '--key', 'x' . substr($key, 1), $digest[5] ], qr/64 hexadecimal digits/,
	'--key not hex');
unusable([ $digest[5], $digest[4] ], qr/is a digest; check it alone/,
	'a digest with a second file');
unusable([ $digest[1], $digest[2], $digest[3], $digest[4] ], qr/too many files/,
	'four files');

note 'digests';
valid([ $digest[5] ],
	qr/^valid: digest of \S+ at height 5 .*signed by key $key; pass --key to pin it; its certificate shows block 5 final/m,
	'a fresh digest is valid, and the output says which key signed it');
valid([ '--key', $key, $digest[5] ], qr/signed by the trusted key $key/,
	'--key with the node key');
valid([ "--key=$key", $digest[1] ], qr/at height 1 /, '--key=HEX, the first digest');
valid([ '--key', uc($key), $digest[5] ], qr/trusted key/, '--key in upper case');
invalid([ '--key', $other_key, $digest[5] ], qr/not the trusted key $other_key/,
	'--key with another key');

my %tampered = (
	'signature flipped' => sub { $_[0]{signature} = flip($_[0]{signature}, 5) },
	'height changed' => sub { $_[0]{height}++ },
	'last_seq changed' => sub { $_[0]{last_seq}-- },
	'block_hash flipped' => sub { $_[0]{block_hash} = flip($_[0]{block_hash}, 63) },
	'sealed_at changed' => sub { $_[0]{sealed_at} =~ s/\.(\d)/'.' . ($1 + 1) % 10/e },
	'origin changed' => sub { $_[0]{origin} .= 'x' },
	'public_key replaced' => sub { $_[0]{public_key} = $other_key },);
for my $what (sort keys %tampered)
{
	my $d = decode_json($digest_text[5]);
	$tampered{$what}->($d);
	invalid([ hash_file($d) ], qr/signature does not verify/, "digest with $what");
}

# The certificate a digest carries is checked whenever present, each field.
my @pin = ('--member', $d5->{origin} . '=' . $key);
my %bad_cert = (
	'origin' => [ sub { $_[0]{origin} .= 'x' }, qr/the certificate is of origin/ ],
	'height' => [ sub { $_[0]{height}-- }, qr/the header is block 5 of/ ],
	'block_hash' => [ sub { $_[0]{block_hash} = flip($_[0]{block_hash}, 7) }, qr/does not hash to block_hash/ ],
	'header' => [ sub { $_[0]{header} = flip($_[0]{header}, 200) }, qr/does not hash to block_hash/ ],
	'origin_signature' => [ sub { $_[0]{origin_signature} = flip($_[0]{origin_signature}, 9) },
		qr/origin_signature is not the header key's signature/ ],
	'quorum' => [ sub { $_[0]{quorum} = 2 }, qr/fewer than the quorum 2/ ],
	'acks[0].acker (with --member)' => [ sub { $_[0]{acks}[0]{acker} = 'someone' }, qr/0 valid acknowledgments/, 1 ],
	'acks[0].public_key' => [ sub { $_[0]{acks}[0]{public_key} = $other_key }, qr/0 valid acknowledgments/ ],
	'acks[0].signature' => [ sub { $_[0]{acks}[0]{signature} = flip($_[0]{acks}[0]{signature}, 3) },
		qr/0 valid acknowledgments/ ],
	'acks emptied' => [ sub { $_[0]{acks} = [] }, qr/0 valid acknowledgments/ ],);
for my $what (sort keys %bad_cert)
{
	my $d = decode_json($digest_text[5]);
	$bad_cert{$what}[0]->($d->{certificate});
	invalid([ ($bad_cert{$what}[2] ? @pin : ()), hash_file($d) ], $bad_cert{$what}[1],
		"digest with its certificate's $what changed");
}
valid([ @pin, $digest[5] ], qr/1 of quorum 1 acknowledgments verify, by pinned hospitals/,
	'a digest with its certificate, the members pinned');
valid([ $digest[5] ], qr/with the keys the certificate carries \(not checked: that they are the hospitals'/,
	'without pins, the output says what was not checked');
{
	my $d = decode_json($digest_text[5]);
	$d->{certificate}{format} = 'ehrledger-certificate-9';
	unusable([ hash_file($d) ], qr/format is "ehrledger-certificate-9"/, 'a certificate of another format');
}

note 'malformed input';
my $missing = "$dir/no-such-file.json";
unusable([$missing], qr/No such file/, 'missing file');
unusable([$dir], qr/is a directory/, 'a directory');
unusable([ file_with('') ], qr/empty file/, 'empty file');
unusable([ file_with("\n\n") ], qr/not valid JSON/, 'blank lines');
unusable([ file_with('{"format": "ehrledger-digest-1", "height": ') ], qr/not valid JSON/,
	'truncated JSON');
unusable([ file_with('garbage') ], qr/not valid JSON/, 'garbage');
unusable([ file_with("\x00\x01\x02\xff") ], qr/not valid JSON/, 'binary garbage');
unusable([ file_with('[1, 2]') ], qr/expected a JSON object/, 'an array');
unusable([ file_with($digest_text[5] . ' {}') ], qr/trailing characters/,
	'trailing garbage');
unusable([ file_with($digest_text[5] . "\x00") ], qr/trailing characters/,
	'a NUL byte after the object');
unusable([ file_with("\xef\xbb\xbf" . $digest_text[5]) ], qr/not valid JSON/,
	'a byte order mark');

my %broken = (
	'wrong format' =>
	  [ sub { $_[0]{format} = 'ehrledger-digest-2' }, qr/unknown format "ehrledger-digest-2"/ ],
	'format missing' => [ sub { delete $_[0]{format} }, qr/"format" is missing/ ],
	'signature missing' => [ sub { delete $_[0]{signature} }, qr/"signature" is missing/ ],
	'truncated signature hex' =>
	  [ sub { chop $_[0]{signature}; chop $_[0]{signature} }, qr/128 hex digits/ ],
	'odd-length block_hash' => [ sub { chop $_[0]{block_hash} }, qr/64 hex digits/ ],
	'non-hex public_key' =>
	  [ sub { substr($_[0]{public_key}, 7, 1) = 'g' }, qr/not hexadecimal/ ],
	'height as a string' =>
	  [ sub { $_[0]{height} = "$_[0]{height}" }, qr/"height" must be an integer/ ],
	'height 0' => [ sub { $_[0]{height} = 0 }, qr/out of range/ ],
	'negative last_seq' => [ sub { $_[0]{last_seq} = -1 }, qr/out of range/ ],
	'fractional height' =>
	  [ sub { $_[0]{height} = 1.5 }, qr/"height" must be an integer/ ],
	'origin a number' => [ sub { $_[0]{origin} = 7 }, qr/"origin" must be a string/ ],
	'sealed_at not UTC' => [
		sub { $_[0]{sealed_at} =~ s/Z$/+01:00/ }, qr/"sealed_at" must be a UTC time/
	],
	'sealed_at February 30' => [
		sub { $_[0]{sealed_at} =~ s/^(\d{4})-\d\d-\d\d/$1-02-30/ },
		qr/"sealed_at"/
	],
	'sealed_at February 29 of 2025' => [
		sub { $_[0]{sealed_at} =~ s/^\d{4}-\d\d-\d\d/2025-02-29/ },
		qr/"sealed_at" (is not a real date|must be a UTC time)/
	],);
for my $what (sort keys %broken)
{
	my $d = decode_json($digest_text[5]);
	$broken{$what}[0]->($d);
	unusable([ hash_file($d) ], $broken{$what}[1], "digest with $what");
}
# (without the certificate a digest may carry, whose own "height" would be hit)
my %d5_alone = %$d5;
delete $d5_alone{certificate};
(my $huge = $json->encode(\%d5_alone)) =~ s/"height":\d+/"height":99999999999999999999/;
unusable([ file_with($huge) ], qr/"height" is out of range/, 'a huge number');
(my $dup = $json->encode($d5)) =~ s/^\{/{"height":1,/;
unusable([ file_with($dup) ], qr/duplicate key "height"/, 'a duplicate key');
(my $deep = $json->encode($d5)) =~ s/^\{/{"x":${\('[' x 100)}${\(']' x 100)},/;
unusable([ file_with($deep) ], qr/nested deeper than 64 levels/, 'deeply nested JSON');
(my $deep63 = $json->encode($d5)) =~ s/^\{/{"x":${\('[' x 63)}${\(']' x 63)},/;
unusable([ file_with($deep63) ], qr/unknown field "x"/,
	'64 levels of nesting are read; a member nothing checks is refused');
(my $badutf8 = $json->encode($d5)) =~ s/^\{/{"x":"\xc3\x28",/;
unusable([ file_with($badutf8) ], qr/invalid UTF-8/, 'invalid UTF-8 in a string');
(my $nul = $json->encode($d5)) =~ s/^\{/{"x":"a\\u0000b",/;
unusable([ file_with($nul) ], qr/u0000/, 'an escaped NUL');

note 'inclusion proofs';
ok(sql(q{SELECT to_regprocedure('ehrledger.proof(regclass,bigint,jsonb)') IS NOT NULL}) eq 't',
	'ehrledger.proof() exists');

# The sealed rows of prescription, by block.
my %block_of;
my %rows_in;
for (split /\n/, sql(q{
    SELECT p.ledger_seq, b.height FROM prescription p
      JOIN ehrledger.blocks b ON p.ledger_seq BETWEEN b.first_seq AND b.last_seq
     ORDER BY 1}))
{
	my ($seq, $h) = split /\|/;
	$block_of{$seq} = $h;
	push @{ $rows_in{$h} }, $seq;
}
my $seq_b1 = $rows_in{1}[6];     # a row of the first block (11 rows + 1 note)
my $seq_b5 = $rows_in{5}[-1];    # the newest row
sub proof_of
{
	my ($seq, $h) = @_;
	my $digest = defined $h ? quoted($digest_text[$h]) : 'NULL';
	return sql("SELECT ehrledger.proof('prescription', $seq, $digest)");
}
my $p1_5 = proof_of($seq_b1, 5);
my $p5_5 = proof_of($seq_b5, 5);
my $p1_3 = proof_of($seq_b1, 3);
my $f1_5 = file_with($p1_5);
my $pr = decode_json($p1_5);
cmp_ok(scalar @{ $pr->{leaf_path} }, '>=', 3, 'the proof has a leaf path');
cmp_ok(scalar @{ $pr->{history_path} }, '>=', 2, 'and a history path');
is(substr($pr->{encoding}, 0, 4), '0201', 'the row is encoded in format 2 (version 2, kind 1): salted');

valid([ '--key', $key, $f1_5, $digest[5] ],
	qr/^valid: row $seq_b1 of public\.prescription \(table_id \d+\) is in block 1, included in the state of \S+ at height 5 /,
	'a row of block 1 in the state at height 5 (through history_path)');
valid([ $f1_5, $digest[5] ], qr/pass --key to pin it/, 'the same without --key');
valid([ file_with($p5_5), $digest[5] ], qr/is in block 5, included .* at height 5/,
	'a row of the head block (empty history_path)');
is_deeply(decode_json($p5_5)->{history_path}, [], 'whose history_path is empty');
valid([ file_with(proof_of($seq_b5)), $digest[5] ], qr/at height 5/,
	'a proof made without a digest, against the newest digest');
valid([ file_with($p1_3), $digest[3] ], qr/is in block 1, included .* at height 3/,
	'a row of block 1 in the state at height 3');
for my $seq (@{ $rows_in{1} }, @{ $rows_in{2} }, $rows_in{4}[0])
{
	my $h = $block_of{$seq};
	command_ok([ $verifier, file_with(proof_of($seq, 4)), $digest[4] ],
		"row $seq of block $h in the state at height 4");
}

invalid([ $f1_5, $digest[4] ], qr/not the block the digest names/,
	'a proof against another digest');
invalid([ file_with($p1_3), $digest[5] ], qr/not the block the digest names/,
	'a proof for height 3 against the digest at height 5');
invalid([ '--key', $other_key, $f1_5, $digest[5] ], qr/not the trusted key/,
	'a proof with --key of another node');

my %bad_proof = (
	'encoding changed' => [
		sub { $_[0]{encoding} = flip($_[0]{encoding}, length($_[0]{encoding}) - 1) },
		qr/does not give the root of block 1/
	],
	'encoding of another ledger_seq' => [
		sub { $_[0]{encoding} = flip($_[0]{encoding}, 27) },
		qr/encoding is of ledger_seq/
	],
	'a byte of the salt changed' => [
		sub { $_[0]{encoding} = flip($_[0]{encoding}, 40) },
		qr/does not give the root of block 1/
	],
	'format 2 claimed to be format 1 (the salt read as columns)' => [
		sub { substr($_[0]{encoding}, 0, 2) = '01' },
		qr/not a canonical encoding|does not give the root/
	],
	'an encoding version 3' => [
		sub { substr($_[0]{encoding}, 0, 2) = '03' },
		qr/is not a row encoding/
	],
	'encoding of another table_id' => [
		sub { $_[0]{encoding} = flip($_[0]{encoding}, 11) },
		qr/encoding is of table_id/
	],
	'ledger_seq changed with its encoding' => [
		sub {
			$_[0]{ledger_seq}++;
			substr($_[0]{encoding}, 12, 16) = sprintf('%016x', $_[0]{ledger_seq});
		},
		qr/does not give the root/
	],
	'a leaf_path element changed' => [
		sub { $_[0]{leaf_path}[1] = flip($_[0]{leaf_path}[1], 3) },
		qr/does not give the root/
	],
	'leaf_path reordered' => [
		sub { @{ $_[0]{leaf_path} }[ 0, 1 ] = @{ $_[0]{leaf_path} }[ 1, 0 ] },
		qr/does not give the root/
	],
	'leaf_path truncated' =>
	  [ sub { pop @{ $_[0]{leaf_path} } }, qr/does not give the root/ ],
	'leaf_path extended' => [
		sub { push @{ $_[0]{leaf_path} }, $_[0]{leaf_path}[0] },
		qr/does not give the root/
	],
	'leaf_index off by one' =>
	  [ sub { $_[0]{leaf_index}++ }, qr/does not give the root/ ],
	'leaf_index beyond row_count' =>
	  [ sub { $_[0]{leaf_index} = $_[0]{block}{row_count} }, qr/does not give the root/ ],
	'block root replaced' => [
		sub { $_[0]{block}{root} = flip($_[0]{block}{root}) },
		qr/does not give the root/
	],
	'block sealed_at changed' => [
		sub { $_[0]{block}{sealed_at} =~ s/^(\d{4})/$1 - 1/e },
		qr/block 1: its fields do not hash to its block_hash/
	],
	'block signature changed' => [
		sub { $_[0]{block}{signature} = flip($_[0]{block}{signature}, 9) },
		qr/block 1: its signature does not verify/
	],
	'head history_root changed' => [
		sub { $_[0]{head}{history_root} = flip($_[0]{head}{history_root}) },
		qr/head block 5: its fields do not hash/
	],
	'a history_path element changed' => [
		sub { $_[0]{history_path}[0] = flip($_[0]{history_path}[0], 20) },
		qr/history_path does not lead from block 1/
	],
	'history_path truncated' => [
		sub { pop @{ $_[0]{history_path} } },
		qr/history_path does not lead from block 1/
	],
	'history_path emptied' => [
		sub { $_[0]{history_path} = [] },
		qr/history_path does not lead from block 1/
	],
	'block replaced by the head' => [
		sub { $_[0]{block} = $_[0]{head} },
		qr/does not give the root|outside block 5's range/
	],
	'origin changed' =>
	  [ sub { $_[0]{origin} .= '-x' }, qr/fields do not hash|the proof of/ ],);
for my $what (sort keys %bad_proof)
{
	my $p = decode_json($p1_5);
	$bad_proof{$what}[0]->($p);
	invalid([ hash_file($p), $digest[5] ], $bad_proof{$what}[1], "proof with $what");
}
{
	my $p = decode_json($p1_5);
	valid([ hash_file($p), $digest[5] ],
		qr/^table_id \d+ is public\.prescription by its enrolment .*\n.*\n  id \(integer\): \d+\n  patient \(text\): "MRN\d+"\n  drug \(text\): "drug-1-\d+"\n  dose \(numeric\): [0-9.]+\n  resource \(jsonb\): \{/m,
		'the row is shown as sealed, decoded from its encoding, with its types');
	$p->{row}{drug} = 'something else';
	invalid([ hash_file($p), $digest[5] ],
		qr/"row" is not the sealed row: column "drug": "row" shows "something else", the encoding holds "drug-1-/,
		'a "row" that is not the encoding\'s is invalid, and the column is named');
	$p = decode_json($p1_5);
	$p->{row}{dose} = $p->{row}{dose} * 10;
	invalid([ hash_file($p), $digest[5] ], qr/column "dose"/, 'a dose ten times the sealed one');
	$p = decode_json($p1_5);
	$p->{row}{note} = 'added';
	invalid([ hash_file($p), $digest[5] ], qr/column "note" is in "row" but not in the encoding/,
		'a column the encoding does not hold');
	$p = decode_json($p1_5);
	delete $p->{row}{drug};
	invalid([ hash_file($p), $digest[5] ], qr/column "drug" is in the encoding but not in "row"/,
		'a column left out of "row"');
	$p = decode_json($p1_5);
	$p->{row}{note} = undef;
	valid([ hash_file($p), $digest[5] ], qr/is in block 1/, 'a NULL column: not in the encoding');
	$p = decode_json($p1_5);
	$p->{row}{resource}{n} = 99;
	invalid([ hash_file($p), $digest[5] ], qr/column "resource"/, 'a jsonb value changed inside');
	$p = decode_json($p1_5);
	$p->{table} = 'public.note';
	invalid([ hash_file($p), $digest[5] ], qr/proof names table public\.note, but table_id \d+ is enrolled as public\.prescription/,
		'a proof claiming another table');
	$p = decode_json($p1_5);
	$p->{row} = decode_json('{"deep": ' . ('[' x 200) . (']' x 200) . '}');
	invalid([ hash_file($p), $digest[5] ], qr/not the sealed row/, 'a "row" nested deep is read, and is not the row');
	$p->{row} = { deep => 'DEEP' };
	(my $deep_row = $json->encode($p)) =~ s/"DEEP"/${\('[' x 1200)}${\(']' x 1200)}/;
	unusable([ file_with($deep_row), $digest[5] ], qr/nested deeper than 1000 levels/,
		'but not deeper than 1000 levels');
	$p = decode_json($p1_5);
	delete $p->{enrolment};
	unusable([ hash_file($p), $digest[5] ], qr/field "enrolment" is missing/, 'a proof without its enrolment');
	$p = decode_json($p1_5);
	$p->{enrolment}{encoding} = flip($p->{enrolment}{encoding}, 80);
	invalid([ hash_file($p), $digest[5] ], qr/enrolment leaf at leaf_index/, 'an enrolment changed');
}

# Memory that runs out inside the checks is unusable input (exit 2), never
# a crash: a "row" of two million numbers under a 100 MB address space.
{
	my $p = decode_json($p1_5);
	$p->{row}{big} = [ 1 .. 2_000_000 ];
	my $big = hash_file($p);
	command_checks_all([ 'sh', '-c', "ulimit -v 100000; exec $verifier $big $digest[5]" ], 2,
		[qr/\A\z/], [qr/\Aerror: out of memory\n\z/], 'out of memory: exit status 2');
}

my %malformed_proof = (
	'encoding of odd length' =>
	  [ sub { chop $_[0]{encoding} }, qr/odd number of hex digits/ ],
	'leaf_index a string' =>
	  [ sub { $_[0]{leaf_index} = "1" }, qr/"leaf_index" must be an integer/ ],
	'leaf_path of numbers' =>
	  [ sub { $_[0]{leaf_path}[0] = 1 }, qr/element 0 of "leaf_path"/ ],
	'a short leaf_path element' =>
	  [ sub { chop $_[0]{leaf_path}[0]; chop $_[0]{leaf_path}[0] }, qr/64 hex digits/ ],
	'a leaf_path of 129 hashes' => [
		sub { $_[0]{leaf_path} = [ ($_[0]{leaf_path}[0]) x 129 ] },
		qr/more than any tree needs/
	],
	'block missing' => [ sub { delete $_[0]{block} }, qr/"block" is missing/ ],
	'block.row_count missing' =>
	  [ sub { delete $_[0]{block}{row_count} }, qr/"block\.row_count" is missing/ ],
	'head.height huge' => [
		sub { $_[0]{head}{height} = 1e30 },
		qr/"head\.height" must be an integer|out of range/
	],
	'table_id beyond 32 bits' =>
	  [ sub { $_[0]{table_id} = 4294967296 }, qr/"table_id" is out of range/ ],);
for my $what (sort keys %malformed_proof)
{
	my $p = decode_json($p1_5);
	$malformed_proof{$what}[0]->($p);
	unusable([ hash_file($p), $digest[5] ], $malformed_proof{$what}[1],
		"proof with $what");
}
unusable([$f1_5], qr/inclusion proof/, 'a proof without its digest');
unusable([ $f1_5, $f1_5 ], qr/format is "ehrledger-proof-1", expected "ehrledger-digest-1"/,
	'a proof given as the digest');
unusable([ $f1_5, file_with($digest_text[5] . (' ' x (2 << 20))) ], qr/larger than/,
	'a digest file over the size limit');
unusable([ $f1_5, $missing ], qr/No such file/, 'a missing digest file');

note 'consistency proofs';
sub consistency_of
{
	my ($old, $new) = @_;
	my $arg = defined $new ? quoted($digest_text[$new]) : 'NULL';
	return sql("SELECT ehrledger.consistency_proof(" . quoted($digest_text[$old]) . ", $arg)");
}
my $c1_5 = consistency_of(1, 5);
my $fc1_5 = file_with($c1_5);
valid([ '--key', $key, $fc1_5, $digest[1], $digest[5] ],
	qr/^valid: the chain of \S+ at height 5 extends its chain at height 1 unchanged \(both digests signed by the trusted key $key\)/m,
	'consistency from height 1 to 5');
valid([ file_with(consistency_of(3, 3)), $digest[3], $digest[3] ],
	qr/both digests name the same block 3/, 'consistency of height 3 with itself');
for my $pair ([ 2, 3 ], [ 2, 5 ], [ 3, 4 ], [ 3, 5 ], [ 4, 5 ], [ 1, 2 ])
{
	my ($o, $nw) = @$pair;
	command_ok([ $verifier, file_with(consistency_of($o, $nw)), $digest[$o], $digest[$nw] ],
		"consistency from height $o to $nw");
}
valid([ file_with(consistency_of(2)), $digest[2], $digest[5] ], qr/at height 5 extends/,
	'a consistency proof to the current head');

invalid([ $fc1_5, $digest[5], $digest[1] ], qr/not the block the old digest names/,
	'the digests swapped on the command line');
{
	my $c = decode_json($c1_5);
	@$c{qw(old new)} = @$c{qw(new old)};
	invalid([ hash_file($c), $digest[5], $digest[1] ],
		qr/the old digest \(height 5\) is newer than the new one \(height 1\)/,
		'old and new swapped in the proof and on the command line');
}
invalid([ $fc1_5, $digest[1], $digest[4] ], qr/not the block the new digest names/,
	'a consistency proof against another new digest');
invalid([ '--key', $other_key, $fc1_5, $digest[1], $digest[5] ], qr/not the trusted key/,
	'a consistency proof with --key of another node');
{
	my $d = decode_json($digest_text[3]);
	$d->{signature} = flip($d->{signature});
	invalid([ file_with(consistency_of(3, 3)), hash_file($d), $digest[3] ],
		qr/signature does not verify/, 'a consistency proof with a forged digest');
}
my %bad_consistency = (
	'a consistency_path element changed' => [
		sub { $_[0]{consistency_path}[-1] = flip($_[0]{consistency_path}[-1], 1) },
		qr/consistency_path does not show/
	],
	'consistency_path reordered' => [
		sub { @{ $_[0]{consistency_path} } = reverse @{ $_[0]{consistency_path} } },
		qr/consistency_path does not show/
	],
	'a history_path element changed' => [
		sub { $_[0]{history_path}[0] = flip($_[0]{history_path}[0], 1) },
		qr/history_path does not lead from block 2/
	],
	'old block edited' => [
		sub { $_[0]{old}{root} = flip($_[0]{old}{root}) },
		qr/old block 2: its fields do not hash/
	],);
my $c2_5 = consistency_of(2, 5);
for my $what (sort keys %bad_consistency)
{
	my $c = decode_json($c2_5);
	$bad_consistency{$what}[0]->($c);
	invalid([ hash_file($c), $digest[2], $digest[5] ], $bad_consistency{$what}[1],
		"consistency proof with $what");
}
unusable([ $fc1_5, $digest[1] ], qr/consistency proof/, 'a consistency proof with one digest');

note 'exports';
sub export_of
{
	my ($tbl) = @_;
	return sql("SELECT line FROM ehrledger.export('$tbl')") . "\n";
}
my $export = export_of('prescription');
my @lines = split /\n/, $export;
my @block_lines = grep { /^\{"block"/ } @lines;
my @row_lines = grep { /^\{"ledger_seq"/ } @lines;
my @enrolment_lines = grep { /^\{"enrolment"/ } @lines;
is(scalar @enrolment_lines, 1, 'and one enrolment line');
is(scalar @block_lines, 5, 'the export has five block lines');
is(scalar @row_lines, scalar keys %block_of, 'and a line per sealed row');
my $fe = file_with($export);
my $nrows = scalar keys %block_of;
valid([ '--key', $key, $fe, $digest[5] ],
	qr/^valid: all $nrows rows of public\.prescription \(table_id \d+\) sealed in blocks 1-5 of \S+ are in the export unchanged, the state at height 5 \(digest signed by the trusted key $key; its certificate shows block 5 final: 1 of quorum 1 acknowledgments verify/m,
	'the export against the newest digest');
my $upto3 = grep { $block_of{$_} <= 3 } keys %block_of;
my $after3 = $nrows - $upto3;
valid([ $fe, $digest[3] ],
	qr/all $upto3 rows .* sealed in blocks 1-3 .*; $after3 more rows in blocks 4-5 match their blocks, which extend the digest's chain but are beyond the digest$/m,
	'the export against an older digest: newer rows are said to be beyond it');
valid([ file_with(export_of('note')), $digest[5] ], qr/all 5 rows of public\.note/,
	'the export of another table of the same blocks');

sub export_with
{
	my ($edit) = @_;
	my @l = @lines;
	$edit->(\@l);
	return file_with(join("\n", @l) . "\n");
}

sub encoding_flipped
{
	my ($line) = @_;
	$line =~ s/("encoding": "[0-9a-f]{60})([0-9a-f])/$1 . ($2 eq '0' ? '1' : '0')/e
	  or die 'no encoding';
	return $line;
}
my $first_row = 1 + @block_lines + @enrolment_lines;    # index of the first row line
invalid([ export_with(sub { $_[0][ $first_row + 2 ] = encoding_flipped($_[0][ $first_row + 2 ]) }),
		$digest[5] ],
	qr/line \d+: row \d+ does not match its leaf in block \d+/,
	'an export with a changed row');
invalid([ export_with(sub { splice(@{ $_[0] }, $first_row + 4, 1) }), $digest[5] ],
	qr/the row with ledger_seq \d+, sealed in block \d+, is missing from the export/,
	'an export with a row line removed');
invalid([ export_with(sub { splice(@{ $_[0] }, -1, 1) }), $digest[3] ],
	qr/sealed in block 5, is missing from the export/,
	'a missing row beyond the digest is also reported');
invalid([ export_with(sub { splice(@{ $_[0] }, $first_row + 4, 0, $_[0][ $first_row + 4 ]) }),
		$digest[5] ],
	qr/out of order or repeated/, 'an export with a row line twice');
invalid([ export_with(sub { @{ $_[0] }[ $first_row, $first_row + 1 ] = @{ $_[0] }[ $first_row + 1, $first_row ] }),
		$digest[5] ],
	qr/out of order or repeated/, 'an export with row lines out of order');
invalid([ export_with(sub { splice(@{ $_[0] }, 2, 1) }), $digest[5] ],
	qr/block 3 follows block 1: the export lacks block 2/,
	'an export with a block line removed');
invalid([ export_with(sub { splice(@{ $_[0] }, 5, 1) }), $digest[5] ],
	qr/the export's chain ends at block 4; the digest names block 5/,
	'an export without the digest\'s block');
invalid([ export_with(sub { $_[0][3] =~ s/"row_count": (\d+)/'"row_count": ' . ($1 + 1)/e }),
		$digest[5] ],
	qr/block 3: row_count is \d+ but it has \d+ leaves/,
	'an export with a block\'s row_count edited');
invalid([ export_with(sub { $_[0][2] =~ s/"sealed_at": "(\d{4})/'"sealed_at": "' . ($1 + 1)/e }),
		$digest[5] ],
	qr/block 2: its fields do not hash to its block_hash/,
	'an export with a block\'s sealed_at edited');
invalid([ export_with(sub { $_[0][2] =~ s/("leaves": "[0-9a-f]{30})([0-9a-f])/$1 . ($2 eq '0' ? '1' : '0')/e }),
		$digest[5] ],
	qr/block 2: its leaves do not give its root/,
	'an export with a block\'s leaves edited');
invalid([ export_with(sub { $_[0][4] =~ s/("prev_hash": ")([0-9a-f])/$1 . ($2 eq '0' ? '1' : '0')/e }),
		$digest[5] ],
	qr/block 4: prev_hash is not the hash of block 3/,
	'an export with a broken link');
invalid([ export_with(sub { $_[0][4] =~ s/("history_root": ")([0-9a-f])/$1 . ($2 eq '0' ? '1' : '0')/e }),
		$digest[5] ],
	qr/block 4: history_root is not the root/,
	'an export with a wrong history root');
invalid([ export_with(sub { $_[0][0] =~ s/"table_id": (\d+)/'"table_id": ' . ($1 + 1)/e }),
		$digest[5] ],
	qr/the enrolment is of table_id \d+, not \d+/,
	'an export claiming another table_id');
invalid([ export_with(sub { $_[0][0] =~ s/"table": "public\.prescription"/"table": "public.note"/ }),
		$digest[5] ],
	qr/the export names table public\.note, but table_id \d+ is enrolled as public\.prescription/,
	'an export claiming another table name');
invalid([ export_with(sub { splice(@{ $_[0] }, $first_row - 1, 1) }), $digest[5] ],
	qr/no enrolment of table_id \d+ sealed in blocks 1-5 is in the export/,
	'an export without the table\'s enrolment');
invalid([ export_with(sub { $_[0][ $first_row + 1 ] =~ s/"drug": "drug-1-(\d+)"/"drug": "drug-9-$1"/ or die }),
		$digest[5] ],
	qr/line \d+: "row" of row \d+ is not the sealed row: column "drug"/,
	'an export whose "row" is not the encoding\'s');
invalid([ '--key', $other_key, $fe, $digest[5] ], qr/not the trusted key/,
	'an export with --key of another node');
unusable([ export_with(sub { $_[0][ $first_row + 1 ] = '{"ledger_seq": 1,' }), $digest[5] ],
	qr/line \d+: not valid JSON/, 'an export with a broken line');
unusable([ export_with(sub { splice(@{ $_[0] }, $first_row + 1, 0, '') }), $digest[5] ],
	qr/empty line/, 'an export with an empty line');
unusable([ export_with(sub { splice(@{ $_[0] }, $first_row + 1, 0, $_[0][1]) }), $digest[5] ],
	qr/a block line after enrolment or row lines/, 'an export with a block line among the rows');
unusable([ export_with(sub { $_[0][1] =~ s/"leaves": "([0-9a-f]{88})/"leaves": "$1aa/ }),
		$digest[5] ],
	qr/not a whole number of 44-byte leaves/, 'an export with a partial leaf');
unusable([$fe], qr/an export is checked against one digest/, 'an export without a digest');
unusable([ file_with(join("\n", @lines[ 1 .. $#lines ]) . "\n"), $digest[5] ],
	qr/not valid JSON/, 'an export without its header line');

note 'versioned tables';
# An UPDATE or DELETE in a versioned table ends a version: the ended version
# moves to the history table and the end is a leaf of its own (kind 2,
# docs/format.md §1), both under the table's table_id.
sql(q{
    CREATE TABLE med (id int PRIMARY KEY, status text NOT NULL);
    SELECT ehrledger.protect('med', mode => 'versioned');
    INSERT INTO med SELECT g, 'active' FROM generate_series(1, 6) g;
    SELECT ehrledger.seal();
    UPDATE med SET status = 'stopped' WHERE id <= 2;
    DELETE FROM med WHERE id = 6;
    SELECT ehrledger.seal();
});
my $dv = file_with(sql('SELECT ehrledger.digest()') . "\n");
my $med_export = export_of('med');
my $med_seq = sql('SELECT max(ledger_seq) FROM med');
command_ok([ $verifier, file_with(sql("SELECT ehrledger.proof('med', $med_seq)")), $dv ],
	'a proof of a current version of a versioned table');
valid([ file_with($med_export), $dv ], qr/of public\.med/,
	'the export of a versioned table after updates and a delete');

note 'erasure';
# An erased row (docs/format.md §12, §14): its proof carries its leaf, still
# proven, and the erasure record that names it, with the record's own proof;
# an export carries the record in place of the row.  Either is valid only
# with a record, sealed in the chain, that names that table, row and leaf.
sql(q{
    SELECT ehrledger.register_actor('adm', 'admin', (SELECT public_key FROM ehrledger.keypair()), current_user);
    SELECT ehrledger.erase('med', (SELECT min(ledger_seq) FROM ehrledger.history('med') WHERE NOT current),
                           'filed in the wrong chart');
    SELECT ehrledger.erase('note', (SELECT min(ledger_seq) FROM note), 'wrong patient');
    SELECT ehrledger.seal();
});
my $de = file_with(sql('SELECT ehrledger.digest()') . "\n");
my $erased_seq = sql(q{SELECT e.erased_seq FROM ehrledger.erasure e JOIN ehrledger.protected_tables t USING (table_id)
                        WHERE t.tbl = 'note'::regclass});
my $ep = sql("SELECT ehrledger.proof('note', $erased_seq)");
valid([ '--key', $key, file_with($ep), $de ],
	qr/^valid: row $erased_seq of public\.note \(table_id \d+\) was sealed in block 1 and erased: its leaf [0-9a-f]{64} and the erasure record that names it (?s:.*)\nerased at \S+ by adm, approved by adm, because: wrong patient$/m,
	'the proof of an erased row: its leaf and the erasure record that names it');
my %erased_tampered = (
	'the leaf changed' => [ sub { $_[0]{leaf} = flip($_[0]{leaf}, 3) }, qr/does not give the root of block 1/ ],
	'the record changed' => [ sub { $_[0]{erasure}{encoding} = flip($_[0]{erasure}{encoding}, length($_[0]{erasure}{encoding}) - 1) },
		qr/erasure leaf at leaf_index \d+ with leaf_path does not give the root/ ],
	'the ledger_seq of another row' => [ sub { $_[0]{ledger_seq}++ },
		qr/the erasure record names ledger_seq $erased_seq of table_id \d+, not @{[ $erased_seq + 1 ]}/ ],);
for my $what (sort keys %erased_tampered)
{
	my $p = decode_json($ep);
	$erased_tampered{$what}[0]->($p);
	invalid([ hash_file($p), $de ], $erased_tampered{$what}[1], "an erased row's proof with $what");
}
valid([ file_with(export_of('med')), $de ], qr/its 2 erased leaves are each named by an erasure record/,
	'the export of a versioned table with an earlier version erased, and its end');
my @note_lines = split /\n/, export_of('note');
valid([ file_with(join("\n", @note_lines) . "\n"), $de ], qr/its 1 erased leaves are each named/,
	'the export of a table with an erased row');
invalid([ file_with(join("\n", grep { !/"erased"/ } @note_lines) . "\n"), $de ],
	qr/the row with ledger_seq $erased_seq, sealed in block 1, is missing from the export, and no erasure record names it/,
	'an export that leaves the erased row out, record and all');
invalid([ file_with(join("\n", map { s/("erased": \{"ledger_seq": )(\d+)/$1 . ($2 + 1)/er } @note_lines) . "\n"), $de ],
	qr/no block has an erasure record leaf with ledger_seq|is not a row encoding|encoding is of ledger_seq/,
	'an export whose erased line names another record');

note 'a chain that took over after a restore';
# pg_dump, and pg_restore on another cluster with another node name and key:
# the new node's first block links to the old chain's last block.
my $b = PostgreSQL::Test::Cluster->new('cli_b');
$b->init;
$b->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'ehrledger'
ehrledger.seal_interval = 0
ehrledger.node_name = 'st-john'
});
$b->start;
my $dump = "$dir/ehr.dump";
$node->command_ok([ 'pg_dump', '-Fc', '-f', $dump, '-d', $node->connstr('postgres') ],
	'dump');
$b->safe_psql('postgres', 'CREATE DATABASE ehr');
$b->command_ok([ 'pg_restore', '--exit-on-error', '-d', $b->connstr('ehr'), $dump ],
	'restore on a cluster with another node name');
$b->safe_psql('ehr', q{
    INSERT INTO prescription (patient, drug) VALUES ('MRN9', 'after-restore-1');
    SELECT ehrledger.seal();
    INSERT INTO prescription (patient, drug) VALUES ('MRN9', 'after-restore-2');
    SELECT ehrledger.seal();
});
my $db_text = $b->safe_psql('ehr', 'SELECT ehrledger.digest()');
my $db = file_with("$db_text\n");
my $b_key = $b->safe_psql('ehr', q{SELECT encode(ehrledger.node_public_key(), 'hex')});
my $b_first = $b->safe_psql('ehr', q{SELECT first_seq FROM ehrledger.blocks
                                      WHERE origin = 'st-john' AND height = 1});
my @b_lines = split /\n/, $b->safe_psql('ehr', q{SELECT line FROM ehrledger.export('prescription')});
valid([ '--key', $b_key, file_with(join("\n", @b_lines) . "\n"), $db ],
	qr/^valid: all 2 rows of public\.prescription .* of st-john .*; block 1 continues an earlier chain \(its prev_hash is [0-9a-f]{64}\), which this export does not cover: rows numbered below $b_first are not checked$/m,
	'the new chain\'s export is valid, and says that the earlier chain is not covered');
(my $relinked = $b_lines[1]) =~ s/("prev_hash": ")([0-9a-f])/$1 . ($2 eq '0' ? '1' : '0')/e;
invalid([ file_with(join("\n", $b_lines[0], $relinked, @b_lines[ 2 .. $#b_lines ]) . "\n"), $db ],
	qr/block 1: its fields do not hash to its block_hash/,
	'the link to the earlier chain is covered by the block hash');
valid([ '--key', $key, file_with($b->safe_psql('ehr',
			"SELECT ehrledger.proof('prescription', $seq_b1, " . quoted($digest_text[5]) . ')')),
		$digest[5] ],
	qr/is in block 1, included in the state of \S+ at height 5/,
	'the new node proves a row of the earlier chain against the earlier digest');
invalid([ '--key', $b_key, $fe, $digest[5] ], qr/not the trusted key $b_key/,
	'the new node\'s key is not the old digest\'s');
$b->stop;

$node->stop;
done_testing();
