#!/usr/bin/env bash
# What the fastest possible backup and restore of the sample firm could cost
# on this machine, beside restic, in one run.
#
#   bash bench/sqlite-bounds.sh                    # 1 GiB firm
#   SIZE=268435456 bash bench/sqlite-bounds.sh
#
# Issue 3 asks for a full backup 3x faster than restic's and a restore 2x
# faster than restic's, and for a restore that runs PRAGMA integrity_check
# and fsyncs the image before renaming it into place. This script times the
# floors those steps set, with the tools that do each step fastest:
#
# - zstd (level 1, and --fast=1), using both cores, over the whole image:
#   the compression alone, no hashing, encryption or writing;
# - lz4 level 1 (one core, no frame checksum) over the whole image, for a
#   weaker codec's size;
# - cp of the image followed by an fsync of the copy: writing the restored
#   bytes durably, with nothing decoded or checked;
# - sqlite3's PRAGMA integrity_check and PRAGMA quick_check on the image;
#
# and prints each beside the budget the issue's ratio leaves (restic's time
# divided by 3 or 2). Every command starts from the same page-cache state
# (see bench/lib.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE=${SIZE:-1073741824}
WORK=${WORK:-$(mktemp -d /var/tmp/ledgervault-bench.XXXXXX)}
trap 'rm -rf "$WORK"' EXIT

source bench/lib.sh
need restic restic
need /usr/bin/time time
need zstd zstd
need lz4 lz4
need sqlite3 sqlite3

cargo build --release -q -p ledgervault-cli
cargo build --release -q -p ledgervault-samplefirm --example firm
LV=$PWD/target/release/ledgervault
FIRM=$PWD/target/release/examples/firm

mkdir -p "$WORK/data"
DB=$WORK/data/firm.db
"$FIRM" generate "$DB" "$SIZE" 2>"$WORK/gen.txt"
export RESTIC_PASSWORD=bench LEDGERVAULT_PASSWORD=bench
export RESTIC_REPOSITORY="$WORK/restic" LEDGERVAULT_REPOSITORY="$WORK/lv"
restic init -q >/dev/null
"$LV" init -q

measure "$WORK/r.full" "$WORK/data" restic backup -q "$DB"
measure "$WORK/l.full" "$WORK/data" "$LV" backup -q "$DB"
measure "$WORK/z1" "$WORK/data" sh -c 'zstd -q -1 -T2 -c "$1" | wc -c >"$2"' _ "$DB" "$WORK/z1.size"
measure "$WORK/zf" "$WORK/data" sh -c 'zstd -q --fast=1 -T2 -c "$1" | wc -c >"$2"' _ "$DB" "$WORK/zf.size"
measure "$WORK/lz" "$WORK/data" sh -c 'lz4 -q -1 --no-frame-crc -c "$1" | wc -c >"$2"' _ "$DB" "$WORK/lz.size"

measure "$WORK/r.rest" "$WORK/restic" restic restore -q latest --target "$WORK/r-out"
measure "$WORK/l.rest" "$WORK/lv" "$LV" restore -q latest --target "$WORK/l-out.db"
measure "$WORK/l.full-check" "$WORK/lv" "$LV" restore -q latest --target "$WORK/l-out2.db" --integrity-check
cmp "$DB" "$WORK/l-out.db"
rm -rf "$WORK/r-out" "$WORK/l-out.db" "$WORK/l-out2.db"
measure "$WORK/cp" "$WORK/data" sh -c 'cp "$1" "$2" && sync "$2"' _ "$DB" "$WORK/copy.db"
rm -f "$WORK/copy.db"
measure "$WORK/ic" "$WORK/data" sqlite3 "$DB" 'PRAGMA integrity_check'
measure "$WORK/qc" "$WORK/data" sqlite3 "$DB" 'PRAGMA quick_check'

r_full=$(secs "$WORK/r.full"); r_rest=$(secs "$WORK/r.rest")
full_budget=$(awk -v t="$r_full" 'BEGIN { printf "%.2f", t / 3 }')
rest_budget=$(awk -v t="$r_rest" 'BEGIN { printf "%.2f", t / 2 }')
row() { printf '%-52s %8s %12s %14s\n' "$1" "$2" "$3" "$4"; }
share() { ratio "$1" "$2"; }

echo
echo "sample firm: $(cat "$WORK/gen.txt")"
echo "$(nproc) cores; $(restic version | cut -d' ' -f1-2); $(zstd --version | cut -d, -f1); $(sqlite3 --version | cut -d' ' -f1)"
echo "repository sizes: restic $(mb "$(size "$WORK/restic")"), ledgervault $(mb "$(size "$WORK/lv")")"
row "full backup" "seconds" "x budget" "output"
row "  restic backup (reference)" "$r_full" "" ""
row "  budget for 3x restic" "$full_budget" "1.00" ""
row "  ledgervault backup" "$(secs "$WORK/l.full")" "$(share "$(secs "$WORK/l.full")" "$full_budget")" ""
row "  zstd -1, 2 threads, compression alone" "$(secs "$WORK/z1")" "$(share "$(secs "$WORK/z1")" "$full_budget")" "$(mb "$(cat "$WORK/z1.size")")"
row "  zstd --fast=1, 2 threads, compression alone" "$(secs "$WORK/zf")" "$(share "$(secs "$WORK/zf")" "$full_budget")" "$(mb "$(cat "$WORK/zf.size")")"
row "  lz4 -1, 1 thread, compression alone" "$(secs "$WORK/lz")" "$(share "$(secs "$WORK/lz")" "$full_budget")" "$(mb "$(cat "$WORK/lz.size")")"
row "restore" "seconds" "x budget" ""
row "  restic restore (reference: no check, no fsync)" "$r_rest" "" ""
row "  budget for 2x restic" "$rest_budget" "1.00" ""
row "  ledgervault restore (digest check, fsync)" "$(secs "$WORK/l.rest")" "$(share "$(secs "$WORK/l.rest")" "$rest_budget")" ""
row "  ledgervault restore --integrity-check" "$(secs "$WORK/l.full-check")" "$(share "$(secs "$WORK/l.full-check")" "$rest_budget")" ""
row "  cp + fsync of the image alone" "$(secs "$WORK/cp")" "$(share "$(secs "$WORK/cp")" "$rest_budget")" ""
row "  PRAGMA integrity_check alone" "$(secs "$WORK/ic")" "$(share "$(secs "$WORK/ic")" "$rest_budget")" ""
row "  PRAGMA quick_check alone" "$(secs "$WORK/qc")" "$(share "$(secs "$WORK/qc")" "$rest_budget")" ""
