#!/usr/bin/env bash
# The documents share, side by side with restic, in one run.
#
#   bash bench/files-vs-restic.sh                     # 100,000 small files and 1.2 GB of documents, 2 rounds
#   SMALL=20000 OFFICE=300000000 ROUNDS=1 bash bench/files-vs-restic.sh
#   MILLION=1 bash bench/files-vs-restic.sh           # also a million-file backup (ledgervault alone)
#   MILLION=1 SETS=0 bash bench/files-vs-restic.sh    # the million-file run alone
#
# Two data sets, made deterministically by gen_docs: SMALL files of 1-4 KiB
# in SMALL/100 folders, and OFFICE bytes of office documents (CSV and
# letters, zip-like attachments, PDFs sharing templates) in 40 folders. For
# each set and round, both tools get fresh repositories and, in alternating
# order: a first backup; then one change to the data (100 files changed for
# the small set, 30 changed and 20 added for the documents) and a second
# backup each; then a restore each into a new folder, compared with the data
# by `diff -r`. Wall time and peak RSS come from /usr/bin/time, with the page
# cache dropped (as root) and the input read once before every command, so
# both tools start equally warm. The table gives each tool's best round, the
# ratios, the repository sizes and the highest peak memory.
set -euo pipefail
cd "$(dirname "$0")/.."

SMALL=${SMALL:-100000}
OFFICE=${OFFICE:-1200000000}
ROUNDS=${ROUNDS:-2}
MILLION=${MILLION:-0}
SETS=${SETS:-1}
WORK=${WORK:-$(mktemp -d /var/tmp/ledgervault-files.XXXXXX)}
trap 'rm -rf "$WORK"' EXIT

source bench/lib.sh
need restic restic
need /usr/bin/time time

cargo build --release -q -p ledgervault-cli
cargo build --release -q -p ledgervault-testkit --example gen_docs
LV=$PWD/target/release/ledgervault
GEN=$PWD/target/release/examples/gen_docs
export RESTIC_PASSWORD=bench LEDGERVAULT_PASSWORD=bench

# one SET ROUND TOOL STEP: runs STEP (first, second, restore) of TOOL.
one() {
  local set=$1 round=$2 tool=$3 step=$4
  local data=$WORK/$set out=$WORK/out-$set-$tool-$round res=$WORK/$set.$tool.$step
  case $tool.$step in
    restic.first)
      export RESTIC_REPOSITORY=$WORK/restic-$set
      rm -rf "$RESTIC_REPOSITORY"; restic init -q >/dev/null
      measure "$res" "$data" restic backup -q "$data" ;;
    restic.second)
      export RESTIC_REPOSITORY=$WORK/restic-$set
      measure "$res" "$data" restic backup -q "$data"
      size "$RESTIC_REPOSITORY" >>"$WORK/$set.restic.size" ;;
    restic.restore)
      export RESTIC_REPOSITORY=$WORK/restic-$set
      measure "$res" "$RESTIC_REPOSITORY" restic restore -q latest --target "$out"
      diff -r "$data" "$out$data" >/dev/null ;;
    lv.first)
      export LEDGERVAULT_REPOSITORY=$WORK/lv-$set
      rm -rf "$LEDGERVAULT_REPOSITORY"; "$LV" init -q
      measure "$res" "$data" "$LV" backup -q "$data" ;;
    lv.second)
      export LEDGERVAULT_REPOSITORY=$WORK/lv-$set
      measure "$res" "$data" "$LV" backup -q "$data"
      size "$LEDGERVAULT_REPOSITORY" >>"$WORK/$set.lv.size" ;;
    lv.restore)
      export LEDGERVAULT_REPOSITORY=$WORK/lv-$set
      measure "$res" "$LEDGERVAULT_REPOSITORY" "$LV" restore -q latest --target "$out"
      diff -r "$data" "$out/$set" >/dev/null ;;
  esac
}

# run SET CHANGE ADD: every round of one data set.
run() {
  local set=$1 change=$2 add=$3 first second
  for r in $(seq "$ROUNDS"); do
    if (( r % 2 )); then first=lv second=restic; else first=restic second=lv; fi
    rm -rf "$WORK"/out-"$set"-*
    one "$set" "$r" $first first; one "$set" "$r" $second first
    "$GEN" touch "$WORK/$set" "$change" "$add"
    one "$set" "$r" $first second; one "$set" "$r" $second second
    one "$set" "$r" $first restore; one "$set" "$r" $second restore
  done
}

best() { sort -n -k1 "$1" | head -1 | cut -d' ' -f1; }
peak() { sort -n -k2 "$1" | tail -1 | cut -d' ' -f2; }

# table SET TITLE
table() {
  local set=$1 title=$2 step r l
  echo
  echo "$title; best of $ROUNDS rounds; $(nproc) cores; $(restic version | cut -d' ' -f1-2)"
  printf '%-26s %10s %12s %24s %12s %12s\n' "" "restic" "ledgervault" "ratio" "restic RSS" "lv RSS"
  for step in first second restore; do
    r=$(best "$WORK/$set.restic.$step"); l=$(best "$WORK/$set.lv.$step")
    printf '%-26s %10s %12s %24s %12s %12s\n' "$step (s)" "$r" "$l" "restic/lv = $(ratio "$r" "$l")x" \
      "$(mib "$(peak "$WORK/$set.restic.$step")")" "$(mib "$(peak "$WORK/$set.lv.$step")")"
  done
  r=$(sort -n "$WORK/$set.restic.size" | head -1); l=$(sort -n "$WORK/$set.lv.size" | head -1)
  printf '%-26s %10s %12s %24s\n' "repository" "$(mb "$r")" "$(mb "$l")" "lv/restic = $(ratio "$l" "$r")x"
}

if [ "$SETS" = 1 ]; then
  "$GEN" small "$WORK/small" "$SMALL"
  run small 100 0
  "$GEN" office "$WORK/office" "$OFFICE"
  run office 30 20
  table small "$SMALL files of 1-4 KiB in $((SMALL / 100)) folders, $(mb "$(size "$WORK/small")")"
  table office "$(find "$WORK/office" -type f | wc -l) office documents, $(mb "$(size "$WORK/office")")"
  echo "restores compared with the data: diff -r, identical"
fi

if [ "$MILLION" = 1 ]; then
  # Ten thousand files, then a million, the same way: memory must not grow
  # with the number of files.
  rm -rf "$WORK"/small "$WORK"/office "$WORK"/out-* "$WORK"/restic-* "$WORK"/lv-*
  for n in 10000 1000000; do
    rm -rf "$WORK/files-$n" "$WORK/out-$n" "$WORK/lv-$n"
    "$GEN" small "$WORK/files-$n" "$n"
    export LEDGERVAULT_REPOSITORY=$WORK/lv-$n
    "$LV" init -q
    measure "$WORK/files-$n.first" "$WORK/files-$n" "$LV" backup -q "$WORK/files-$n"
    measure "$WORK/files-$n.second" "$WORK/files-$n" "$LV" backup -q "$WORK/files-$n"
    measure "$WORK/files-$n.restore" "$LEDGERVAULT_REPOSITORY" "$LV" restore -q latest --target "$WORK/out-$n"
    diff -r "$WORK/files-$n" "$WORK/out-$n/files-$n" >/dev/null
    rm -rf "$WORK/files-$n" "$WORK/out-$n" "$WORK/lv-$n"
  done
  echo
  echo "Files of 1-4 KiB, ledgervault alone (seconds, peak RSS):"
  for n in 10000 1000000; do
    for step in first second restore; do
      echo "  $n files, $step: $(best "$WORK/files-$n.$step") s, $(mib "$(peak "$WORK/files-$n.$step")")"
    done
  done
fi
