#!/usr/bin/env perl
# make-vectors.pl SRCDIR OUTDIR: the test vectors (run by scripts/make-vectors.sh).
#
# From a real cluster's valid documents in SRCDIR (digest-1..4.json,
# proof.json, proof-erased.json, proof-salted.json, consistency.json,
# export-rx.jsonl, export-chart.jsonl, certificate.json, key.hex,
# members.json) writes to OUTDIR the valid ones
# and, for every field of every format, a copy that changes that field
# alone, with test/vectors/MANIFEST:
#
#   id  kind  verdict  options  files  what changed
#
# kind: digest, proof, consistency, export, certificate; verdict: valid,
# invalid (well formed, but not what it claims) or unusable (not a
# document of its kind); options: --key (pin key.hex), --member (pin
# members.json), or -.  The verdicts are set here, by rule: a changed
# "format" makes a document unusable, any other changed field invalid (a
# certificate's "membership", which no offline check can judge, is not
# changed).
# They are not taken from any checker.
use strict;
use warnings;
use B;
use JSON::PP;

my ($src, $out) = @ARGV;
die "usage: make-vectors.pl SRCDIR OUTDIR\n" unless $src && $out;

# Numbers are kept as written (2.50 stays 2.50), keys in a stable order.
my $json = JSON::PP->new->utf8->canonical->allow_bignum;
my @manifest;

sub slurp
{
	my ($f) = @_;
	open(my $fh, '<:raw', $f) or die "$f: $!";
	local $/;
	my $t = <$fh>;
	close($fh);
	return $t;
}

sub spew
{
	my ($f, $t) = @_;
	open(my $fh, '>:raw', "$out/$f") or die "$out/$f: $!";
	print $fh $t;
	close($fh);
}

sub entry
{
	my ($id, $kind, $verdict, $opts, $files, $what) = @_;
	push @manifest, join("\t", $id, $kind, $verdict, $opts, join(' ', @$files), $what);
}

# One field's value changed, keeping its form where the form matters.
sub changed
{
	my ($v, $key) = @_;
	return 'x' unless defined $v;
	if (ref $v eq 'ARRAY')
	{
		return [ '0' x 64 ] unless @$v;
		my @c = @$v;
		$c[0] = changed($c[0], $key);
		return \@c;
	}
	if (ref $v eq 'HASH')
	{
		my %c = %$v;
		my ($k) = sort keys %c;
		if (defined $k) { $c{$k} = changed($c{$k}, $k); }
		else { $c{added} = 1; }
		return \%c;
	}
	if (JSON::PP::is_bool($v)) { return $v ? JSON::PP::false : JSON::PP::true; }
	if (ref $v) { return $v + 1; }    # a number (Math::BigInt or BigFloat)
	my $flags = B::svref_2object(\$v)->FLAGS;
	if (($flags & (B::SVp_IOK | B::SVp_NOK)) && !($flags & B::SVp_POK)) { return $v + 1; }
	if ($key eq 'how') { return $v eq 'update' ? 'delete' : 'update'; }
	if ($v =~ /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.(\d{6})Z$/)
	{
		(my $w = $v) =~ s/(\d)Z$/($1 + 1) % 10 . 'Z'/e;
		return $w;
	}
	if ($v =~ /^[0-9a-f]+$/ && length($v) % 2 == 0 && length($v) >= 16)
	{
		my $c = substr($v, -1);
		substr($v, -1) = $c eq '0' ? '1' : '0';
		return $v;
	}
	return $v . 'x';
}

# Every field of a document, as paths; a row's columns (and arrays) are
# fields in themselves, objects are walked.
sub fields
{
	my ($v, $path, $list) = @_;
	if (ref $v eq 'HASH')
	{
		for my $k (sort keys %$v)
		{
			my $p = [ @$path, $k ];
			if ($k eq 'row')
			{
				push @$list, [ @$p, $_ ] for sort keys %{ $v->{$k} };
			}
			elsif ($k eq 'acks')
			{
				push @$list, [ @$p, 0, $_ ] for sort keys %{ $v->{$k}[0] };
			}
			else { fields($v->{$k}, $p, $list); }
		}
	}
	else { push @$list, $path; }
	return $list;
}

sub get_at
{
	my ($v, $path) = @_;
	$v = ref $v eq 'ARRAY' ? $v->[$_] : $v->{$_} for @$path;
	return $v;
}

sub set_at
{
	my ($v, $path, $new) = @_;
	my @p = @$path;
	my $last = pop @p;
	$v = ref $v eq 'ARRAY' ? $v->[$_] : $v->{$_} for @p;
	if (ref $v eq 'ARRAY') { $v->[$last] = $new; } else { $v->{$last} = $new; }
}

sub copy { return $json->decode($json->encode($_[0])); }

sub name_of { return join('.', map { /^\d+$/ ? "[$_]" : $_ } @{ $_[0] }) =~ s/\.\[/[/gr; }

# A document: the valid one, then one vector per field.
sub vectors_of
{
	my (%a) = @_;
	my $doc = $json->decode($a{text});
	spew("$a{base}.json", $a{text});
	entry("$a{base}", $a{kind}, 'valid', $a{opts}, [ "$a{base}.json", @{ $a{with} } ],
		'as made by the server');
	for my $path (@{ fields($doc, [], []) })
	{
		# A certificate's "membership" names a row of its hospital's own
		# ehrledger.membership, which only that hospital's verify() reads
		# (docs/format.md §18): an offline checker has nothing to hold it to.
		next if $path->[-1] eq 'membership';
		my $name = name_of($path);
		my $d = copy($doc);
		set_at($d, $path, changed(get_at($d, $path), $path->[-1]));
		(my $file = "$a{base}-$name.json") =~ s/[^A-Za-z0-9_.-]/_/g;
		spew($file, $json->encode($d) . "\n");
		entry("$a{base}-$name", $a{kind}, $path->[-1] eq 'format' ? 'unusable' : 'invalid',
			$a{opts}, [ $file, @{ $a{with} } ], "$name changed alone");
	}
}

my $key = slurp("$src/key.hex") =~ s/\s+//gr;
spew('key.hex', "$key\n");
spew('members.json', slurp("$src/members.json"));
spew("digest-$_.json", slurp("$src/digest-$_.json")) for 1 .. 3;

# Digests (with their certificate), pinned by key and members.
vectors_of(base => 'digest-4', kind => 'digest', opts => '--key --member', with => [],
	text => slurp("$src/digest-4.json"));
vectors_of(base => 'certificate', kind => 'certificate', opts => '--member', with => [],
	text => slurp("$src/certificate.json"));
vectors_of(base => 'proof', kind => 'proof', opts => '--key', with => ['digest-4.json'],
	text => slurp("$src/proof.json"));
vectors_of(base => 'proof-erased', kind => 'proof', opts => '--key', with => ['digest-4.json'],
	text => slurp("$src/proof-erased.json"));
vectors_of(base => 'proof-salted', kind => 'proof', opts => '--key', with => ['digest-4.json'],
	text => slurp("$src/proof-salted.json"));

# A salted row's leaf commits to its salt (bytes 14-29 of the encoding).
{
	my $doc = $json->decode(slurp("$src/proof-salted.json"));
	my $c = substr($doc->{encoding}, 28, 2);
	substr($doc->{encoding}, 28, 2) = $c eq '00' ? '01' : '00';
	spew('proof-salted-encoding.salt.json', $json->encode($doc) . "\n");
	entry('proof-salted-encoding.salt', 'proof', 'invalid', '--key',
		[ 'proof-salted-encoding.salt.json', 'digest-4.json' ], 'the first byte of the salt in encoding changed alone');
}
vectors_of(base => 'consistency', kind => 'consistency', opts => '--key',
	with => [ 'digest-1.json', 'digest-4.json' ], text => slurp("$src/consistency.json"));

# Exports: each line's fields, one line at a time.
for my $t ('rx', 'chart')
{
	my $text = slurp("$src/export-$t.jsonl");
	my @lines = split /\n/, $text;
	spew("export-$t.jsonl", $text);
	entry("export-$t", 'export', 'valid', '--key', [ "export-$t.jsonl", 'digest-4.json' ],
		'as made by the server');
	my %done;
	for my $i (0 .. $#lines)
	{
		my $line = $json->decode($lines[$i]);
		my $type = $i == 0 ? 'header' : exists $line->{block} ? 'block'
		  : exists $line->{enrolment} ? 'enrolment' : exists $line->{ended} ? 'ended'
		  : exists $line->{erased} ? 'erased' : 'row';
		# rows and ends of versions in both formats: unsalted (1), salted (2)
		$type .= '-salted' if ($type eq 'row' || $type eq 'ended') && $line->{encoding} =~ /^02/;
		# every field of the header, of the first block, enrolment, row and
		# end line (of each format), erased line, and of the last block (the
		# digest's)
		my $which = $type eq 'block' && $i == 1 ? 'block-first'
		  : $type eq 'block' && $lines[ $i + 1 ] !~ /^\{"block"/ ? 'block-last' : $type;
		next if $done{$which}++ || ($type eq 'block' && $which eq 'block');
		for my $path (@{ fields($line, [], []) })
		{
			my $name = name_of($path);
			my $l = copy($line);
			set_at($l, $path, changed(get_at($l, $path), $path->[-1]));
			my @copy = @lines;
			$copy[$i] = $json->encode($l);
			(my $file = "export-$t-line$i-$name.jsonl") =~ s/[^A-Za-z0-9_.-]/_/g;
			spew($file, join("\n", @copy) . "\n");
			entry("export-$t-line$i-$name", 'export', $path->[-1] eq 'format' ? 'unusable' : 'invalid',
				'--key', [ $file, 'digest-4.json' ], "line " . ($i + 1) . " ($which): $name changed alone");
		}
	}
}

spew('MANIFEST', join("\n",
	'# ehrledger test vectors (docs/format.md, "Test vectors"); made by scripts/make-vectors.sh.',
	'# id, kind, verdict, options, files, what changed: one vector a line, separated by tabs',
	@manifest) . "\n");
