#!/usr/bin/env bash
# Side-by-side benchmark: ledgervault against restic on the same data, in one run.
#
#   bash bench/backup-vs-restic.sh            # 1 GiB file, 2 rounds
#   SIZE=268435456 ROUNDS=1 bash bench/backup-vs-restic.sh
#
# For each round it makes fresh repositories, backs up one file of mixed
# text and binary data with both tools (order alternating), restores it with
# both, checks both restores are byte-identical, and records wall time and
# peak RSS. It prints the best round of each tool and the ratios. Then it
# backs up and restores a directory of mixed files of the same size with
# ledgervault and compares the trees.
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE=${SIZE:-1073741824}
ROUNDS=${ROUNDS:-2}
WORK=${WORK:-$(mktemp -d /var/tmp/ledgervault-bench.XXXXXX)}
trap 'rm -rf "$WORK"' EXIT

source bench/lib.sh
need restic restic
need /usr/bin/time time

cargo build --release -q -p ledgervault-cli
cargo build --release -q -p ledgervault-testkit --example gen_mixed
LV=$PWD/target/release/ledgervault
GEN=$PWD/target/release/examples/gen_mixed

mkdir -p "$WORK/data"
"$GEN" file "$WORK/data/mixed.bin" "$SIZE"

export RESTIC_PASSWORD=bench LEDGERVAULT_PASSWORD=bench
run_restic() {
  export RESTIC_REPOSITORY="$WORK/restic-repo"
  rm -rf "$RESTIC_REPOSITORY" "$WORK/restic-out" "$WORK/lv-out"
  restic init -q >/dev/null
  measure "$WORK/restic.backup" "$WORK/data" restic backup -q "$WORK/data"
  measure "$WORK/restic.restore" "$RESTIC_REPOSITORY" restic restore -q latest --target "$WORK/restic-out"
  cmp "$WORK/data/mixed.bin" "$WORK/restic-out$WORK/data/mixed.bin"
  du -sb "$RESTIC_REPOSITORY" | cut -f1 >>"$WORK/restic.size"
}
run_lv() {
  export LEDGERVAULT_REPOSITORY="$WORK/lv-repo"
  rm -rf "$LEDGERVAULT_REPOSITORY" "$WORK/lv-out" "$WORK/restic-out"
  "$LV" init -q
  measure "$WORK/lv.backup" "$WORK/data" "$LV" backup -q "$WORK/data"
  measure "$WORK/lv.restore" "$LEDGERVAULT_REPOSITORY" "$LV" restore -q latest --target "$WORK/lv-out"
  cmp "$WORK/data/mixed.bin" "$WORK/lv-out/data/mixed.bin"
  du -sb "$LEDGERVAULT_REPOSITORY" | cut -f1 >>"$WORK/lv.size"
}
for r in $(seq "$ROUNDS"); do
  if (( r % 2 )); then run_restic; run_lv; else run_lv; run_restic; fi
done

best_time() { sort -n -k1 "$1" | head -1 | cut -d' ' -f1; }
max_rss() { sort -n -k2 "$1" | tail -1 | cut -d' ' -f2; }
min_of() { sort -n "$1" | head -1; }

rb=$(best_time "$WORK/restic.backup"); lb=$(best_time "$WORK/lv.backup")
rr=$(best_time "$WORK/restic.restore"); lr=$(best_time "$WORK/lv.restore")
rs=$(min_of "$WORK/restic.size"); ls=$(min_of "$WORK/lv.size")
echo
echo "data: one file of $(mb "$SIZE") mixed text and binary; best of $ROUNDS rounds; $(nproc) cores; $(restic version | cut -d' ' -f1-2)"
printf '%-22s %14s %14s %22s\n' "" "restic" "ledgervault" "ratio"
printf '%-22s %14s %14s %22s\n' "backup time (s)" "$rb" "$lb" "restic/lv = $(ratio "$rb" "$lb")x"
printf '%-22s %14s %14s %22s\n' "restore time (s)" "$rr" "$lr" "restic/lv = $(ratio "$rr" "$lr")x"
printf '%-22s %14s %14s %22s\n' "repository size" "$(mb "$rs")" "$(mb "$ls")" "lv/restic = $(ratio "$ls" "$rs")x"
printf '%-22s %14s %14s\n' "peak RSS backup" "$(mib "$(max_rss "$WORK/restic.backup")")" "$(mib "$(max_rss "$WORK/lv.backup")")"
printf '%-22s %14s %14s\n' "peak RSS restore" "$(mib "$(max_rss "$WORK/restic.restore")")" "$(mib "$(max_rss "$WORK/lv.restore")")"

# A directory of mixed files, round trip.
rm -rf "$WORK/data" "$WORK/restic-repo" "$WORK/restic-out" "$WORK/lv-out"
"$GEN" tree "$WORK/tree" "$SIZE"
export LEDGERVAULT_REPOSITORY="$WORK/lv-tree"
"$LV" init -q
: >"$WORK/tree.backup"; : >"$WORK/tree.restore"
measure "$WORK/tree.backup" "$WORK/tree" "$LV" backup -q "$WORK/tree"
measure "$WORK/tree.restore" "$LEDGERVAULT_REPOSITORY" "$LV" restore -q latest --target "$WORK/tree-out"
diff -r --no-dereference "$WORK/tree" "$WORK/tree-out/tree" >/dev/null
echo
echo "directory of $(find "$WORK/tree" -type f | wc -l) mixed files, $(mb "$(du -sb "$WORK/tree" | cut -f1)"): backup $(cut -d' ' -f1 "$WORK/tree.backup") s, restore $(cut -d' ' -f1 "$WORK/tree.restore") s, restored tree byte-identical (diff -r)"
