#!/usr/bin/env bash
# bench/compare.sh BASE [SCRIPT...]: hot-path benchmarks of an earlier
# revision BASE and of this working tree, side by side in one run.
#
# Each side is built into its own copy of the PostgreSQL installation that
# PG_CONFIG names (so neither touches the installed extension), then the
# scripts (default: insert.sh consent_scan.sh access_log.sh, this tree's
# versions for both sides) run against each copy in the order
# base, new, new, base, ... (REPEAT pairs), which cancels slow drift of the
# machine.  The summary lists each headline ratio's mean per side and the
# difference new - base.
#
#   bench/compare.sh 30d62a0                      # the three hot paths
#   REPEAT=1 DURATION=5 bench/compare.sh HEAD~3 insert.sh
#
# Knobs: REPEAT (pairs of runs, 1), and every knob of the scripts
# (DURATION, ROUNDS, ROWS, ...), passed through.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BASE=${1:?usage: bench/compare.sh BASE [SCRIPT...]}
shift
if [ $# -gt 0 ]; then SCRIPTS=("$@"); else SCRIPTS=(insert.sh consent_scan.sh access_log.sh); fi
REPEAT=${REPEAT:-1}
SYS_PG_CONFIG=${PG_CONFIG:-pg_config}
BASE_REV=$(git rev-parse --short "$BASE")
NEW_REV="$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . ':!bench' || echo '+changes')"

T=$(mktemp -d /tmp/ehrledger-compare.XXXXXX)
trap 'rm -rf "$T"' EXIT
chmod 755 "$T"

# copy_pg DEST: the server's installation, its layout kept under DEST.
# PostgreSQL finds its files relative to its programs, so the copy is a
# working installation of its own.
copy_pg() {
    local dest=$1 dir
    for dir in "$("$SYS_PG_CONFIG" --bindir)" "$("$SYS_PG_CONFIG" --pkglibdir)" \
               "$("$SYS_PG_CONFIG" --sharedir)" "$("$SYS_PG_CONFIG" --includedir-server)"; do
        mkdir -p "$dest$(dirname "$dir")"
        cp -a "$dir" "$dest$(dirname "$dir")/"
    done
    echo "$dest$("$SYS_PG_CONFIG" --bindir)/pg_config"
}

# build SRC PG_CONFIG: builds and installs the extension of SRC there.
build() {
    make -s -C "$1" PG_CONFIG="$2" clean >/dev/null 2>&1 || true
    make -s -C "$1" PG_CONFIG="$2" -j2 all >"$T/build.log" 2>&1 &&
        make -s -C "$1" PG_CONFIG="$2" install >>"$T/build.log" 2>&1 ||
        { cat "$T/build.log"; echo "build of $1 failed" >&2; exit 2; }
}

echo "base $BASE_REV, new $NEW_REV: building both into copies of $("$SYS_PG_CONFIG" --bindir)"
mkdir -p "$T/base-src" "$T/new-src"
git archive "$BASE" | tar -x -C "$T/base-src"
tar --exclude=.git -C "$ROOT" -cf - . | tar -x -C "$T/new-src"
BASE_PG=$(copy_pg "$T/base-pg")
NEW_PG=$(copy_pg "$T/new-pg")
build "$T/base-src" "$BASE_PG"
build "$T/new-src" "$NEW_PG"

# run SIDE N SCRIPT: one run of a script against one side.
run() {
    local pgc
    if [ "$1" = base ]; then pgc=$BASE_PG; else pgc=$NEW_PG; fi
    echo "== $3 on $1 (run $2)"
    PG_CONFIG="$pgc" BENCH_SUMMARY="$T/summary.$1" "$ROOT/bench/$3"
}

for s in "${SCRIPTS[@]}"; do
    for i in $(seq 1 "$REPEAT"); do
        run base "$i" "$s"
        run new "$i" "$s"
        run new "$i" "$s"
        run base "$i" "$s"
    done
done

# Mean per key and side; the difference new - base.
echo
echo "== compare: base $BASE_REV, new $NEW_REV (means of $((2 * REPEAT)) runs a side)"
awk '
    { key = $0; sub(/[ \t]+[^ \t]+$/, "", key); v = $NF
      side = (FILENAME ~ /summary\.base$/) ? "base" : "new"
      sum[key, side] += v; n[key, side]++; if (!(key in seen)) { seen[key] = 1; order[++k] = key } }
    END {
      printf "%-44s %8s %8s %8s\n", "figure", "base", "new", "new-base"
      for (i = 1; i <= k; i++) {
        key = order[i]; b = sum[key, "base"] / n[key, "base"]; w = sum[key, "new"] / n[key, "new"]
        printf "%-44s %8.3f %8.3f %+8.3f\n", key, b, w, w - b
      }
    }' "$T/summary.base" "$T/summary.new" | tee -a "$ROOT/bench/results/compare.txt"
