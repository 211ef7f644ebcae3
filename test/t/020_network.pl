# The hospital network (docs/format.md §18): four hospitals h1..h4, each a
# cluster that publishes its own blocks and acknowledgments and subscribes
# to the other three's.  A block is final once a quorum, 3 of the 4, has
# acknowledged it.  This test sets the network up, checks add_peer() and
# remove_peer() refuse bad input, stops hospitals (one: blocks still become
# final, and it catches up; two: blocks wait for them), and then makes two
# hospitals misbehave by tampering with their tables as superuser: h2 sends
# forged blocks and equivocates, h3 signs two different acknowledgments of
# one block and sends acknowledgments that do not verify.  The honest
# hospitals refuse what is bad, keep the evidence, and go on finalizing.
#
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/lib";
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use IPC::Run;
use EhrNet;

my $started = time;
my @names = qw(h1 h2 h3 h4);

# --- Setup --------------------------------------------------------------------

new_hospital($_) for @names;
is(scalar(keys %{ { reverse %key } }), 4, 'the four hospitals have four different node keys');
network_up(@names);

# The ackers, in order, of a block's certificate at a hospital.
sub cert_ackers
{
	my ($name, $origin, $height) = @_;
	return sql($name, qq{
		SELECT string_agg(a ->> 'acker', ',' ORDER BY a ->> 'acker')
		  FROM ehrledger.block_status('$origin', $height) s,
		       jsonb_array_elements(s.certificate -> 'acks') a});
}

# The SQLSTATE of the error a statement raises ('' if none).
sub sqlstate_of
{
	my ($name, $sql) = @_;
	my ($ret, $out, $err) = $node{$name}->psql('ehr', "\\set VERBOSITY verbose\n$sql");
	return $err =~ /ERROR:\s+([0-9A-Z]{5}):/ ? $1 : "(none: $err)";
}

# tamper(NAME, SQL): runs SQL at a hospital as superuser with the user
# triggers of ehrledger.block, ehrledger.ack and ehrledger.final_block
# disabled (the append-only ones, and those that acknowledge and check), in
# one transaction.  Each
# trigger gets back exactly the firing mode it had: ENABLE TRIGGER ALL would
# make the REPLICA and ALWAYS triggers ORIGIN ones and break the node.
my $trigger_states = q{
	SELECT string_agg(tgrelid::regclass || '.' || tgname || '=' || tgenabled::text, ','
	                  ORDER BY tgrelid::regclass::text, tgname)
	  FROM pg_trigger WHERE tgrelid IN ('ehrledger.block'::regclass, 'ehrledger.ack'::regclass, 'ehrledger.final_block'::regclass)
	   AND NOT tgisinternal};
sub tamper
{
	my ($name, $sql) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my $before = sql($name, $trigger_states);
	sql($name, qq{
		BEGIN;
		CREATE TEMP TABLE saved_trigger ON COMMIT DROP AS
			SELECT tgrelid::regclass AS rel, tgname, tgenabled FROM pg_trigger
			 WHERE tgrelid IN ('ehrledger.block'::regclass, 'ehrledger.ack'::regclass, 'ehrledger.final_block'::regclass) AND NOT tgisinternal;
		ALTER TABLE ehrledger.block DISABLE TRIGGER USER;
		ALTER TABLE ehrledger.ack DISABLE TRIGGER USER;
		ALTER TABLE ehrledger.final_block DISABLE TRIGGER USER;
		$sql;
		DO \$\$
		DECLARE r record;
		BEGIN
			FOR r IN SELECT * FROM saved_trigger LOOP
				EXECUTE format('ALTER TABLE %s %s TRIGGER %I', r.rel,
				               CASE r.tgenabled WHEN 'O' THEN 'ENABLE' WHEN 'A' THEN 'ENABLE ALWAYS'
				                                WHEN 'R' THEN 'ENABLE REPLICA' ELSE 'DISABLE' END, r.tgname);
			END LOOP;
		END
		\$\$;
		COMMIT;
	});
	is(sql($name, $trigger_states), $before, "$name: after tampering its ledger triggers fire as before");
}

# --- 1. A row becomes final at all four ----------------------------------------

is(sql('h1', q{SELECT string_agg(name, ',' ORDER BY name) FROM ehrledger.peers WHERE removed_at IS NULL}),
	'h2,h3,h4', 'h1 has the three others as peers');
is(sql('h1', q{SELECT ehrledger.quorum()}), '3', 'the quorum of four hospitals is 3');
is(sql('h3', q{SELECT string_agg(origin || '/' || quorum, ',' ORDER BY origin) FROM ehrledger.network_status}),
	'h1/3,h2/3,h3/3,h4/3', 'network_status at h3 lists the four hospitals with quorum 3');

sql('h1', q{INSERT INTO t VALUES (1, 'admitted')});
my $b1 = sealed_height('h1', 1);
ok($b1 > 0, "the row inserted at h1 is sealed in block $b1 of h1");
is_final_at('h1', $b1, @names);
my $hash1 = sql('h1', qq{SELECT encode(block_hash, 'hex') FROM ehrledger.block WHERE origin = 'h1' AND height = $b1});
for my $name (@names)
{
	is(sql($name, qq{SELECT encode(block_hash, 'hex') FROM ehrledger.final_block WHERE origin = 'h1' AND height = $b1}),
		$hash1, "$name: final_block holds h1's block $b1 with its hash");
	is(sql($name, qq{SELECT final::text || ' ' || quorum || ' ' || (acks >= 3)::text
	               FROM ehrledger.block_status('h1', $b1)}),
		'true 3 true', "$name: block_status says final, quorum 3, at least 3 acks");
	is(sql($name, qq{SELECT jsonb_array_length(certificate -> 'acks') >= 3 FROM ehrledger.final_block
	               WHERE origin = 'h1' AND height = $b1}), 't',
		"$name: the certificate holds at least 3 acknowledgments");
}
# The certificate checked as an auditor would, with the members' keys pinned.
my $pinned = join(',', map { "('$_', '\\x$key{$_}'::bytea)" } @names);
is(sql('h4', qq{
	WITH c AS (SELECT certificate AS c FROM ehrledger.final_block WHERE origin = 'h1' AND height = $b1),
	     k(acker, public_key) AS (VALUES $pinned)
	SELECT (c ->> 'format') = 'ehrledger-certificate-1'
	   AND sha256(decode(c ->> 'header', 'hex')) = decode(c ->> 'block_hash', 'hex')
	   AND ehrledger.verify_signature(decode(c ->> 'block_hash', 'hex'), decode(c ->> 'origin_signature', 'hex'),
	                                  (SELECT public_key FROM k WHERE acker = 'h1'))
	   AND (SELECT count(DISTINCT a ->> 'acker') FROM jsonb_array_elements(c -> 'acks') a
	          JOIN k ON k.acker = a ->> 'acker' AND k.public_key = decode(a ->> 'public_key', 'hex')
	         WHERE ehrledger.verify_signature(ehrledger.ack_message('h1', $b1, decode(c ->> 'block_hash', 'hex')),
	                                          decode(a ->> 'signature', 'hex'), k.public_key)) >= 3
	  FROM c}), 't',
	'h4: the certificate verifies with the pinned keys: header, origin signature, 3 distinct valid acks');
# And offline, with ehrledger-verify and the four keys pinned; a certificate
# that claims more than it holds is refused.
{
	my $verifier = $node{h4}->config_data('--bindir') . '/ehrledger-verify';
	my $dir = PostgreSQL::Test::Utils::tempdir();
	my $cert = sql('h4', qq{SELECT certificate FROM ehrledger.final_block WHERE origin = 'h1' AND height = $b1});
	PostgreSQL::Test::Utils::append_to_file("$dir/cert.json", $cert);
	(my $inflated = $cert) =~ s/"quorum": 3/"quorum": 5/;
	PostgreSQL::Test::Utils::append_to_file("$dir/inflated.json", $inflated);
	my @members = map { ('--member', "$_=$key{$_}") } @names;
	my ($out, $err);
	IPC::Run::run([ $verifier, @members, "$dir/cert.json" ], '>', \$out, '2>', \$err);
	is($? >> 8, 0, 'ehrledger-verify: the certificate is valid offline with the four keys pinned');
	like($out, qr/^valid: block $b1 of h1 .* is final: \d of quorum 3/, 'and says what it proved');
	IPC::Run::run([ $verifier, @members, "$dir/inflated.json" ], '>', \$out, '2>', \$err);
	is($? >> 8, 1, 'ehrledger-verify: a certificate claiming a larger quorum than its acks is invalid');
	IPC::Run::run([ $verifier, '--member', "h1=" . ('ab' x 32), "$dir/cert.json" ], '>', \$out, '2>', \$err);
	is($? >> 8, 1, 'ehrledger-verify: a certificate under another key for its origin is invalid');
}
for my $name (@names)
{
	is(sql($name, q{SELECT ok::text || ' ' || problems::text FROM ehrledger.verify()}), 'true []',
		"$name: verify() is ok");
}

# --- 2. add_peer() and remove_peer() refuse bad input ---------------------------

my $slots_sql = q{SELECT coalesce(string_agg(slot_name, ',' ORDER BY slot_name), '') FROM pg_replication_slots WHERE slot_type = 'logical'};
my $slots = sql('h1', $slots_sql);
is($slots, 'ehrledger_h2,ehrledger_h3,ehrledger_h4', 'h1 has one slot for each peer');
my $fresh = q{(SELECT public_key FROM ehrledger.keypair())};
my $c2 = conninfo('h2');
is(sqlstate_of('h1', qq{SELECT ehrledger.add_peer('h1', \$c\$$c2\$c\$, $fresh)}), '22023',
	'add_peer with its own name: 22023');
is(sqlstate_of('h1', qq{SELECT ehrledger.add_peer('h5', \$c\$$c2\$c\$, ehrledger.node_public_key())}), '22023',
	'add_peer with its own key: 22023');
is(sqlstate_of('h1', qq{SELECT ehrledger.add_peer('h2', \$c\$$c2\$c\$, $fresh)}), '42710',
	'add_peer with the name of a peer it has: 42710');
is(sqlstate_of('h1', qq{SELECT ehrledger.add_peer('h5', \$c\$$c2\$c\$, '\\x$key{h2}'::bytea)}), '42710',
	'add_peer with the key of a peer it has: 42710');
is(sqlstate_of('h1', qq{SELECT ehrledger.add_peer('h5', \$c\$$c2\$c\$, '\\x0102'::bytea)}), '22023',
	'add_peer with a key that is not 32 bytes: 22023');
is(sqlstate_of('h1', qq{SELECT ehrledger.add_peer('h5', \$c\$$c2\$c\$, '\\x${\ ('00' x 33)}'::bytea)}), '22023',
	'add_peer with a 33-byte key: 22023');
my ($ret, $out, $err) = $node{h1}->psql('ehr', qq{SELECT ehrledger.add_peer('h5', 'host=x port', $fresh)});
like($err, qr/ERROR:  invalid connection string syntax/, 'add_peer with a conninfo libpq cannot parse fails');
is(sql('h1', $slots_sql), $slots, 'and leaves no replication slot behind');
# 'host= =bad' parses (libpq reads host "=bad"), but no peer is there.
($ret, $out, $err) = $node{h1}->psql('ehr', qq{SELECT ehrledger.add_peer('h5', 'host= =bad', $fresh)});
like($err, qr/ERROR/, 'add_peer with the conninfo \'host= =bad\' fails');
is(sql('h1', $slots_sql), $slots, 'and leaves no replication slot behind either');
is(sql('h1', q{SELECT count(*) FROM ehrledger.peer WHERE name = 'h5'}), '0', 'no peer h5 was added');
is(sqlstate_of('h1', qq{SELECT ehrledger.add_peer('a b', \$c\$$c2\$c\$, $fresh)}), '22023',
	'add_peer with a name that is not a node name: 22023');
is(sqlstate_of('h1', q{SELECT ehrledger.remove_peer('h9')}), '42704', 'remove_peer of an unknown peer: 42704');
is(sql('h1', $slots_sql), $slots, 'after all that h1 has the same slots');
is(sql('h1', q{SELECT string_agg(name, ',' ORDER BY name) || ' ' || count(*) FILTER (WHERE removed_at IS NULL)
             FROM ehrledger.peer}), 'h2,h3,h4 3', 'the same three live peers');
is(sql('h1', q{SELECT count(*) FROM pg_subscription WHERE subname LIKE 'ehrledger\_from\_%'}), '3',
	'and the same three subscriptions');

# --- 3. Faults: hospitals that are down -----------------------------------------

# One down: 3 of 4 acknowledgments still make blocks final.
$node{h4}->stop('fast');
sql('h1', q{INSERT INTO t VALUES (10, 'while h4 is down')});
sql('h2', q{INSERT INTO t VALUES (11, 'while h4 is down')});
my $b10 = sealed_height('h1', 10);
my $b11 = sealed_height('h2', 11);
is_final_at('h1', $b10, qw(h1 h2 h3));
is_final_at('h2', $b11, qw(h1 h2 h3));
is(cert_ackers('h3', 'h1', $b10), 'h1,h2,h3', "h3: h1's block $b10 is final with the acks of h1, h2 and h3");
is(cert_ackers('h1', 'h2', $b11), 'h1,h2,h3', "h1: h2's block $b11 is final with the acks of h1, h2 and h3");

# It comes back and catches up.
$node{h4}->start;
is_final_at('h1', $b10, 'h4');
is_final_at('h2', $b11, 'h4');
# (h4 may seal a block as it returns, which is on its way to h1 too.)
holds_same_blocks('h1', $_, 'holds the same blocks as h1: the same (origin, height, block_hash)')
  for qw(h2 h3 h4);
is(sql('h4', q{SELECT count(*) - count(DISTINCT (origin, height)) FROM ehrledger.block}), '0',
	'h4: no block is held twice');
is(sql('h4', q{SELECT count(*) - count(DISTINCT (origin, height, acker)) FROM ehrledger.ack}), '0',
	'h4: no acknowledgment is held twice');
wait_for('h4', q{SELECT sum(pending) = 0 FROM ehrledger.network_status},
	'every block it holds, those it missed included, becomes final');
# (A certificate is kept as it was when the block became final: its first
# quorum of acks.  The acks that came later are in ehrledger.ack.)
wait_for('h4', qq{SELECT string_agg(acker, ',' ORDER BY acker) = 'h1,h2,h3,h4' FROM ehrledger.ack
                  WHERE origin = 'h1' AND height = $b10},
	"it holds the acks of h1's block $b10 by all four, its own included");
like(cert_ackers('h4', 'h1', $b10), qr/^h\d,h\d,h\d(,h\d)?$/, "h4: the certificate of h1's block $b10 has 3 or more acks");


# Two down: no quorum; blocks wait, and become final when they return.
$node{h3}->stop('fast');
$node{h4}->stop('fast');
sql('h1', q{INSERT INTO t VALUES (12, 'while h3 and h4 are down')});
my $b12 = sealed_height('h1', 12);
wait_for('h1', qq{SELECT EXISTS (SELECT 1 FROM ehrledger.ack WHERE origin = 'h1' AND height = $b12 AND acker = 'h2')},
	"h2's acknowledgment of block $b12 of h1 arrives");
wait_for('h2', qq{SELECT count(*) = 2 FROM ehrledger.ack WHERE origin = 'h1' AND height = $b12},
	"it holds block $b12 of h1 with the acks of h1 and h2");
for my $name (qw(h1 h2))
{
	is(sql($name, qq{SELECT final::text || ' ' || acks || ' ' || quorum FROM ehrledger.block_status('h1', $b12)}),
		'false 2 3', "$name: with two hospitals down block $b12 of h1 has 2 acks of 3 needed, not final");
	is(sql($name, q{SELECT pending > 0 FROM ehrledger.network_status WHERE origin = 'h1'}), 't',
		"$name: network_status shows h1's block pending");
}
$node{h3}->start;
$node{h4}->start;
is_final_at('h1', $b12, @names);
for my $name (@names)
{
	wait_for($name, q{SELECT sum(pending) = 0 FROM ehrledger.network_status},
		'after both return nothing is pending');
	is(sql($name, q{SELECT (SELECT count(*) FROM ehrledger.evidence) || ' ' || (SELECT count(*) FROM ehrledger.rejected_block)}),
		'0 0', "$name: stops, restarts and catching up left no evidence and no rejected block");
}

# --- 4. Byzantine hospitals -------------------------------------------------------

# a. Forged blocks from h2.  Only h2's publication carries blocks of origin
# h2 (it publishes origin = h2 only), so the forgeries are written at h2:
# inserted into its block table and deleted again in the same transaction.
# The publication sends inserts only, so the peers receive the forged
# blocks, while h2's own chain, which its sealer builds on, never shows
# them and stays honest for the later tests.  Three forgeries of the block
# after h2's newest, N:
#   1. height N+1, hashed correctly, with a signature that is not valid;
#   2. height N+1 and another root, with the hash and genuine signature of
#      block N (a valid signature of another block);
#   3. height N+1, hashed correctly and validly signed, but by a key that is
#      not h2's (the header names that key).
my $n2 = sql('h2', q{SELECT max(height) FROM ehrledger.block WHERE origin = 'h2'});
my %offset = map { $_ => -s $node{$_}->logfile } @names;
my $cols = 'origin, height, prev_hash, history_root, root, block_hash, first_seq, last_seq, row_count, '
  . 'sealed_at, public_key, signature, history_frontier, leaves_hash, leaves';
tamper('h2', qq{
	CREATE TEMP TABLE forged ON COMMIT DROP AS
		SELECT b.*, overlay(ehrledger._block_header(b.origin, b.height) PLACING int8send(b.height + 1) FROM 23 FOR 8) AS hdr
		  FROM ehrledger.block b WHERE b.origin = 'h2' AND b.height = $n2;
	-- (a history_frontier of the size height N+1 has, whatever N is)
	UPDATE forged SET height = height + 1,
	                  history_frontier = decode(repeat('00', 32 * length(replace((height + 1)::bit(64)::text, '0', ''))), 'hex');
	CREATE TEMP TABLE attacker ON COMMIT DROP AS SELECT * FROM ehrledger.keypair();
	CREATE TEMP TABLE forgery (n int, hash bytea) ON COMMIT DROP;
	-- 1
	INSERT INTO ehrledger.block ($cols)
		SELECT origin, height, prev_hash, history_root, root, sha256(hdr), first_seq, last_seq, row_count,
		       sealed_at, public_key, decode(repeat('00', 64), 'hex'), history_frontier, leaves_hash, leaves
		  FROM forged;
	INSERT INTO forgery SELECT 1, sha256(hdr) FROM forged;
	DELETE FROM ehrledger.block WHERE origin = 'h2' AND height = $n2 + 1;
	-- 2
	INSERT INTO ehrledger.block ($cols)
		SELECT origin, height, prev_hash, history_root, sha256(root), block_hash, first_seq, last_seq, row_count,
		       sealed_at, public_key, signature, history_frontier, leaves_hash, leaves
		  FROM forged;
	DELETE FROM ehrledger.block WHERE origin = 'h2' AND height = $n2 + 1;
	-- 3
	UPDATE forged SET public_key = (SELECT public_key FROM attacker),
	                  hdr = overlay(hdr PLACING (SELECT public_key FROM attacker) FROM octet_length(hdr) - 31 FOR 32);
	INSERT INTO ehrledger.block ($cols)
		SELECT origin, height, prev_hash, history_root, root, sha256(hdr), first_seq, last_seq, row_count,
		       sealed_at, public_key, ehrledger.sign(sha256(hdr), (SELECT secret_key FROM attacker)),
		       history_frontier, leaves_hash, leaves
		  FROM forged;
	INSERT INTO forgery SELECT 3, sha256(hdr) FROM forged;
	DELETE FROM ehrledger.block WHERE origin = 'h2' AND height = $n2 + 1;
	CREATE TABLE public.forgeries AS SELECT * FROM forgery
});
is(sql('h2', q{SELECT max(height) FROM ehrledger.block WHERE origin = 'h2'}), $n2,
	"h2's own chain does not show the forgeries");
my %forged = map { split /\|/ } split /\n/, sql('h2', q{SELECT n, encode(hash, 'hex') FROM forgeries});
for my $name (qw(h1 h3 h4))
{
	wait_for($name, qq{SELECT count(*) = 3 FROM ehrledger.rejected_block WHERE origin = 'h2' AND height = $n2 + 1},
		"the three forged blocks " . ($n2 + 1) . " of h2 are refused, each in rejected_block");
	is(sql($name, qq{SELECT string_agg(reason, ' / ' ORDER BY rejected_at) FROM ehrledger.rejected_block
	               WHERE origin = 'h2' AND height = $n2 + 1}),
		"its signature does not verify with its public_key / its fields do not hash to its block_hash / it is not signed with the origin's key",
		"$name: the reasons: a bad signature, fields that do not hash, another key");
	is(sql($name, qq{SELECT count(*) FROM ehrledger.block WHERE origin = 'h2'
	               AND (height > $n2 OR block_hash IN ('\\x$forged{1}', '\\x$forged{3}'))}), '0',
		"$name: none of them is stored");
	ok($node{$name}->log_contains(qr/ehrledger refused block \d+ of "h2": its signature does not verify/, $offset{$name}),
		"$name: the server log has a warning about the refused block");
}
# The peers' subscriptions to h2 keep working: an honest block of h2 that
# follows is stored and becomes final everywhere.
sql('h2', q{INSERT INTO t VALUES (20, 'after the forgeries')});
my $b20 = sealed_height('h2', 20);
is($b20, $n2 + 1, "h2's next honest block has the height the forgeries claimed, " . ($n2 + 1));
is_final_at('h2', $b20, @names);

# a2. A replayed block: h2 sends its block $b20 again (the same row inserted
# a second time and removed in the same transaction, so only the stream sees
# it).  The others skip it: still one block $b20 of h2 each, no evidence.
tamper('h2', qq{
	CREATE TEMP TABLE replay AS SELECT * FROM ehrledger.block WHERE origin = 'h2' AND height = $b20;
	ALTER TABLE ehrledger.block DROP CONSTRAINT block_pkey;
	INSERT INTO ehrledger.block SELECT * FROM replay;
	DELETE FROM ehrledger.block b USING (SELECT ctid FROM ehrledger.block WHERE origin = 'h2' AND height = $b20 ORDER BY ctid DESC LIMIT 1) x
	 WHERE b.ctid = x.ctid;
	ALTER TABLE ehrledger.block ADD PRIMARY KEY (origin, height)
});
sql('h2', q{INSERT INTO t VALUES (22, 'after the replay')});
my $b22 = sealed_height('h2', 22);
is_final_at('h2', $b22, qw(h1 h3 h4));
for my $name (qw(h1 h3 h4))
{
	is(sql($name, qq{SELECT count(*) FROM ehrledger.block WHERE origin = 'h2' AND height = $b20}), '1',
		"$name: the replayed block $b20 of h2 is held once");
	is(sql($name, q{SELECT count(*) FROM ehrledger.evidence}), '0', "$name: a replay is no misbehaviour to record");
}

# b. Equivocation by h2: it drops its newest block (and its own ack and the
# block's finality) and seals again at that height, with a new row: a
# second block of the same height, validly signed by h2.  The peers already
# hold the first.
my $m = $b22;
my $old_hash = sql('h2', qq{SELECT encode(block_hash, 'hex') FROM ehrledger.block WHERE origin = 'h2' AND height = $m});
tamper('h2', qq{
	DELETE FROM ehrledger.final_block WHERE origin = 'h2' AND height = $m;
	DELETE FROM ehrledger.ack WHERE origin = 'h2' AND height = $m;
	DELETE FROM ehrledger.block WHERE origin = 'h2' AND height = $m;
	INSERT INTO t VALUES (21, 'the second version')
});
wait_for('h2', qq{SELECT EXISTS (SELECT 1 FROM ehrledger.block WHERE origin = 'h2' AND height = $m
                                 AND block_hash <> '\\x$old_hash')},
	"its sealer sealed a second, different block $m");
my $new_hash = sql('h2', qq{SELECT encode(block_hash, 'hex') FROM ehrledger.block WHERE origin = 'h2' AND height = $m});
for my $name (qw(h1 h3 h4))
{
	wait_for($name, qq{SELECT EXISTS (SELECT 1 FROM ehrledger.evidence WHERE kind = 'equivocation'
	                                  AND accused = 'h2' AND origin = 'h2' AND height = $m)},
		"equivocation evidence accusing h2 of two blocks $m");
	is(sql($name, qq{SELECT encode(block_hash, 'hex') FROM ehrledger.block WHERE origin = 'h2' AND height = $m}),
		$old_hash, "$name: it keeps the first block $m; the second is not stored");
	is(sql($name, qq{SELECT string_agg(encode(sha256(decode(s ->> 'header', 'hex')), 'hex'), ',' ORDER BY n)
	                      || ' ' || bool_and(ehrledger.verify_signature(sha256(decode(s ->> 'header', 'hex')),
	                                                                     decode(s ->> 'signature', 'hex'),
	                                                                     '\\x$key{h2}'::bytea))::text
	               FROM ehrledger.evidence e, LATERAL (VALUES (1, e.statement_a), (2, e.statement_b)) v(n, s)
	              WHERE kind = 'equivocation' AND accused = 'h2' AND height = $m}),
		"$old_hash,$new_hash true",
		"$name: the evidence holds both headers, of the first and the second block, each signed by h2");
	ok(sql($name, qq{SELECT count(*) FROM ehrledger.rejected_block WHERE origin = 'h2' AND height = $m
	               AND block_hash = '\\x$new_hash' AND reason LIKE '%equivocation%'}) >= 1,
		"$name: rejected_block names the second block and equivocation");
	wait_for($name, qq{SELECT EXISTS (SELECT 1 FROM ehrledger.evidence WHERE kind = 'double_ack'
	                                  AND accused = 'h2' AND origin = 'h2' AND height = $m)},
		"h2 acknowledged both of its blocks $m too: double_ack evidence accusing h2");
}

# c. A double acknowledgment by h3.  An ack counts only if its header is a
# block signed by the origin and hashing to the acked block_hash
# (_ack_arrived), so a second, different ack needs a second origin-signed
# header of the same height: h2's second block $m, which h3 holds in its
# equivocation evidence.  h3 drops its ack of h2's first block $m and signs
# one of the second.
tamper('h3', qq{
	DELETE FROM ehrledger.ack WHERE origin = 'h2' AND height = $m AND acker = 'h3';
	INSERT INTO ehrledger.ack (origin, height, block_hash, acker, signature, header, origin_signature)
		SELECT 'h2', $m, sha256(hdr), 'h3', ehrledger._sign_ack('h2', $m, sha256(hdr)), hdr, sig
		  FROM (SELECT decode(statement_b ->> 'header', 'hex') AS hdr, decode(statement_b ->> 'signature', 'hex') AS sig
		          FROM ehrledger.evidence WHERE kind = 'equivocation' AND accused = 'h2' AND height = $m) e
});
is(sql('h3', qq{SELECT encode(block_hash, 'hex') FROM ehrledger.ack WHERE origin = 'h2' AND height = $m AND acker = 'h3'}),
	$new_hash, "h3 now has its ack of h2's second block $m");
for my $name (qw(h1 h4))
{
	wait_for($name, qq{SELECT EXISTS (SELECT 1 FROM ehrledger.evidence WHERE kind = 'double_ack'
	                                  AND accused = 'h3' AND origin = 'h2' AND height = $m)},
		"double_ack evidence accusing h3 of two acks of block $m of h2");
	is(sql($name, qq{SELECT string_agg(s ->> 'block_hash', ',' ORDER BY n)
	                      || ' ' || bool_and(ehrledger.verify_signature(
	                                  ehrledger.ack_message('h2', $m, decode(s ->> 'block_hash', 'hex')),
	                                  decode(s ->> 'signature', 'hex'), '\\x$key{h3}'::bytea))::text
	               FROM ehrledger.evidence e, LATERAL (VALUES (1, e.statement_a), (2, e.statement_b)) v(n, s)
	              WHERE kind = 'double_ack' AND accused = 'h3' AND height = $m}),
		"$old_hash,$new_hash true", "$name: the evidence holds both acks, each signed by h3");
	is(sql($name, qq{SELECT encode(block_hash, 'hex') FROM ehrledger.ack WHERE origin = 'h2' AND height = $m AND acker = 'h3'}),
		$old_hash, "$name: h3's second ack is not stored: its ack of block $m is still the first");
	is(sql($name, qq{SELECT final::text || ' ' || encode(block_hash, 'hex') FROM ehrledger.block_status('h2', $m)}),
		"true $old_hash", "$name: block $m of h2 stays final with its first hash");
}

# d. Acknowledgments that do not verify, sent by h3 (its publication only
# carries acks with acker h3): one with a garbage signature, one signed by
# a key that is not h3's, and one validly signed by h3 of a header that is
# not signed by the origin.  They name blocks of h1 no one holds yet
# (heights 1000000..1000002), so that they stand alone.
%offset = map { $_ => -s $node{$_}->logfile } @names;
my $hdr1 = sql('h1', qq{SELECT encode(ehrledger._block_header('h1', $b1), 'hex')});
my $sig1 = sql('h1', qq{SELECT encode(signature, 'hex') FROM ehrledger.block WHERE origin = 'h1' AND height = $b1});
sql('h3', qq{
	CREATE TEMP TABLE attacker AS SELECT * FROM ehrledger.keypair();
	INSERT INTO ehrledger.ack (origin, height, block_hash, acker, signature, header, origin_signature)
	VALUES ('h1', 1000000, sha256('x'), 'h3', decode(repeat('00', 64), 'hex'), '\\x$hdr1', '\\x$sig1'),
	       ('h1', 1000001, sha256('y'), 'h3',
	        ehrledger.sign(ehrledger.ack_message('h1', 1000001, sha256('y')), (SELECT secret_key FROM attacker)),
	        '\\x$hdr1', '\\x$sig1'),
	       ('h1', 1000002, sha256('z'), 'h3', ehrledger._sign_ack('h1', 1000002, sha256('z')),
	        sha256('not a header'), '\\x$sig1');
});
for my $name (qw(h1 h2 h4))
{
	my $ok = eval {
		$node{$name}->wait_for_log(
			qr/refused an acknowledgment by "h3" of block 1000002 of "h1": the acknowledged header is not a block signed by its origin/,
			$offset{$name});
		1;
	};
	ok($ok, "$name: the third bad ack is refused: its header is not signed by the origin");
	my $log = slurp_file($node{$name}->logfile, $offset{$name});
	like($log, qr/refused an acknowledgment by "h3" of block 1000000 of "h1": the acknowledgment's signature does not verify/,
		"$name: the ack with a garbage signature is refused");
	like($log, qr/refused an acknowledgment by "h3" of block 1000001 of "h1": the acknowledgment's signature does not verify/,
		"$name: the ack signed with another key is refused");
	is(sql($name, q{SELECT count(*) FROM ehrledger.ack WHERE height >= 1000000}), '0',
		"$name: none of the three is stored");
}

# e. After all this the honest hospitals go on: a new row at h1 becomes
# final at h1, h3 and h4, and their ledgers verify.
sql('h1', q{INSERT INTO t VALUES (30, 'after the attacks')});
my $b30 = sealed_height('h1', 30);
is_final_at('h1', $b30, qw(h1 h3 h4));
for my $name (qw(h1 h4))
{
	is(sql($name, q{SELECT ok::text || ' ' || problems::text FROM ehrledger.verify()}), 'true []',
		"$name: verify() is still ok");
	is(sql($name, q{SELECT string_agg(DISTINCT accused, ',' ORDER BY accused) FROM ehrledger.evidence}), 'h2,h3',
		"$name: the evidence accuses h2 and h3, no honest hospital");
}

# f. Shared tables: the rows of a table h1 shares travel with its blocks,
# and a receiving hospital treats each as verified once it re-encodes to the
# leaf of h1's signed block.  Unshared tables stay home.
sql('h1', q{CREATE TABLE rx (id int PRIMARY KEY, patient text, drug text, dose numeric, at timestamptz DEFAULT now());
            SELECT ehrledger.protect('rx'); SELECT ehrledger.share('rx')});
sql('h1', q{INSERT INTO rx (id, patient, drug, dose) VALUES (1, 'pat-1', 'amoxicillin', 500), (2, 'pat-2', 'ibuprofen', 400)});
for my $name (qw(h3 h4))
{
	wait_for($name, q{SELECT count(*) = 2 AND bool_and(verified) AND bool_and(final) FROM ehrledger.shared_rows
	                   WHERE origin = 'h1' AND table_name = 'public.rx'},
		'the two shared rows of h1 arrive, verified against its signed block, and final');
	is(sql($name, q{SELECT "row" ->> 'drug' FROM ehrledger.shared_rows WHERE origin = 'h1' AND ("row" ->> 'id') = '1'}),
		'amoxicillin', "$name: with their content");
	is(sql($name, q{SELECT count(*) FROM ehrledger.shared_row WHERE table_name = 'public.t'}), '0',
		"$name: rows of an unshared table stay home");
}
# h1 sends a changed copy of a new row instead of the row it sealed.
sql('h1', q{ALTER TABLE rx DISABLE TRIGGER ehrledger_share;
            INSERT INTO rx (id, patient, drug, dose) VALUES (3, 'pat-3', 'morphine', 10);
            ALTER TABLE rx ENABLE TRIGGER ehrledger_share;
            INSERT INTO ehrledger.shared_row (origin, table_name, table_id, ledger_seq, columns, "row")
            SELECT ehrledger.node_name(), 'public.rx', r.table_id, x.ledger_seq, r.columns,
                   (to_jsonb(x) - ARRAY['ledger_seq', 'ledger_hash']) || '{"dose": 100}'
              FROM rx x, ehrledger.registered_table r WHERE x.id = 3 AND r.relid = 'rx'::regclass});
for my $name (qw(h3 h4))
{
	wait_for($name, q{SELECT verdict = 'it is not the row its origin sealed' AND NOT verified
	                    FROM ehrledger.shared_rows WHERE origin = 'h1' AND ("row" ->> 'id') = '3'},
		'a shared row that is not the row h1 sealed is never verified');
}

# g. A hospital stopped hard and restarted in mid-stream: h1 writes 120 rows
# over about 3 s while h2 goes down (immediate stop) and comes back.
my $stream = IPC::Run::start(
	[ 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', conninfo('h1'), '-c',
	  q{DO $$ BEGIN FOR i IN 100..219 LOOP INSERT INTO t VALUES (i, 'stream'); COMMIT;
	                                       PERFORM pg_sleep(0.025); END LOOP; END $$} ],
	'>', \my $stream_out, '2>', \my $stream_err);
Time::HiRes::sleep(0.8);
$node{h2}->stop('immediate');
Time::HiRes::sleep(0.8);
$node{h2}->start;
ok($stream->finish, 'h1 wrote 120 rows while h2 was stopped and restarted') or diag $stream_err;
my $b219 = sealed_height('h1', 219);
is_final_at('h1', $b219, @names);
my %chain;
$chain{$_} = sql($_, chain_sql('h1')) for @names;
is($chain{$_}, $chain{h1}, "$_ holds exactly h1's chain after the restart: nothing lost or doubled")
  for qw(h2 h3 h4);
is(sql('h2', q{SELECT count(*) FROM ehrledger.block b WHERE origin = 'h1'
                 AND NOT EXISTS (SELECT 1 FROM ehrledger.final_block f WHERE f.origin = b.origin AND f.height = b.height)}),
	'0', 'h2: every block of h1 is final there too');

# h. h4 shows different blocks at one height to different hospitals.  h3
# stops reading from h4; h4 seals block K, which h1 and h2 receive; then h4
# drops it, seals another block K, and skips the first in h3's slot, so h3
# only ever receives the second.  Each side acknowledges what it saw; where
# the acknowledgments meet, h4's two signed headers become evidence, and no
# two different blocks K are final anywhere.
sql('h3', 'ALTER SUBSCRIPTION ehrledger_from_h4 DISABLE');
wait_for('h3', q{SELECT pid IS NULL FROM pg_stat_subscription WHERE subname = 'ehrledger_from_h4' AND relid IS NULL},
	'its link from h4 is stopped');
sql('h4', q{INSERT INTO t VALUES (40, 'what h1 and h2 see')});
my $k = sealed_height('h4', 40);
my $hash_a = sql('h4', qq{SELECT encode(block_hash, 'hex') FROM ehrledger.block WHERE origin = 'h4' AND height = $k});
wait_for($_, qq{SELECT EXISTS (SELECT 1 FROM ehrledger.block WHERE origin = 'h4' AND height = $k)},
	"block $k of h4 arrives") for qw(h1 h2);
my $skip_to = sql('h4', 'SELECT pg_current_wal_lsn()');
tamper('h4', qq{
	DELETE FROM ehrledger.final_block WHERE origin = 'h4' AND height = $k;
	DELETE FROM ehrledger.ack WHERE origin = 'h4' AND height = $k;
	DELETE FROM ehrledger.block WHERE origin = 'h4' AND height = $k;
	INSERT INTO t VALUES (41, 'what h3 sees')
});
wait_for('h4', qq{SELECT EXISTS (SELECT 1 FROM ehrledger.block WHERE origin = 'h4' AND height = $k
                                 AND block_hash <> '\\x$hash_a')},
	"its sealer sealed a second block $k");
my $hash_b = sql('h4', qq{SELECT encode(block_hash, 'hex') FROM ehrledger.block WHERE origin = 'h4' AND height = $k});
sql('h4', qq{SELECT pg_replication_slot_advance('ehrledger_h3', '$skip_to')});
sql('h3', 'ALTER SUBSCRIPTION ehrledger_from_h4 ENABLE');
wait_for('h3', qq{SELECT EXISTS (SELECT 1 FROM ehrledger.block WHERE origin = 'h4' AND height = $k
                                 AND block_hash = '\\x$hash_b')},
	"only the second block $k of h4 arrives");
for my $name (qw(h1 h3))
{
	wait_for($name, qq{SELECT EXISTS (SELECT 1 FROM ehrledger.evidence
	                                   WHERE kind = 'equivocation' AND accused = 'h4' AND height = $k)},
		"the other side's acknowledgment brings h4's other signed block $k: equivocation evidence");
}
my %final_k;
for my $name (@names)
{
	my $f = sql($name, qq{SELECT encode(block_hash, 'hex') FROM ehrledger.final_block WHERE origin = 'h4' AND height = $k});
	$final_k{$f} = 1 if $f ne '';
}
ok(keys(%final_k) <= 1, 'no two different blocks ' . $k . ' of h4 are final anywhere');

$node{$_}->stop for @names;
note sprintf('runtime: %.1f s', time - $started);
done_testing();
