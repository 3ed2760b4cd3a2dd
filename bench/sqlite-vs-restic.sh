#!/usr/bin/env bash
# Side-by-side benchmark on the sample firm: ledgervault against restic, in one run.
#
#   bash bench/sqlite-vs-restic.sh                 # 1 GiB firm, 50 clients
#   SIZE=268435456 bash bench/sqlite-vs-restic.sh
#
# 1. makes the sample firm database (WAL mode, checkpointed);
# 2. full backup with each tool;
# 3. a day of work: new transactions plus scattered edits touching about
#    EDIT (default 7%) of the pages, then a checkpoint;
# 4. incremental backup with each tool: time and what it added to the repository;
# 5. restore of the latest snapshot with each tool (ledgervault's checks the
#    restored image against the snapshot's table digests and fsyncs it,
#    restic's does neither), and restic's again followed by an fsync;
# then prints a table with the ratios. Every command starts from the same
# page-cache state: dirty pages flushed, caches dropped (as root), its input
# read once.
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE=${SIZE:-1073741824}
EDIT=${EDIT:-0.07}
WORK=${WORK:-$(mktemp -d /var/tmp/ledgervault-bench.XXXXXX)}
trap 'rm -rf "$WORK"' EXIT

source bench/lib.sh
need restic restic
need /usr/bin/time time

cargo build --release -q -p ledgervault-cli
cargo build --release -q -p ledgervault-samplefirm --example firm
LV=$PWD/target/release/ledgervault
FIRM=$PWD/target/release/examples/firm


mkdir -p "$WORK/data"
"$FIRM" generate "$WORK/data/firm.db" "$SIZE" 2>"$WORK/gen.txt"
export RESTIC_PASSWORD=bench LEDGERVAULT_PASSWORD=bench
export RESTIC_REPOSITORY="$WORK/restic" LEDGERVAULT_REPOSITORY="$WORK/lv"
restic init -q >/dev/null
"$LV" init -q

measure "$WORK/r.full" "$WORK/data" restic backup -q "$WORK/data/firm.db"
measure "$WORK/l.full" "$WORK/data" "$LV" backup -q "$WORK/data/firm.db"
r_full=$(size "$WORK/restic"); l_full=$(size "$WORK/lv")

"$FIRM" day "$WORK/data/firm.db" 7 "$EDIT" 2>"$WORK/day.txt"
measure "$WORK/r.incr" "$WORK/data" restic backup -q "$WORK/data/firm.db"
measure "$WORK/l.incr" "$WORK/data" "$LV" backup -q "$WORK/data/firm.db"
r_add=$(( $(size "$WORK/restic") - r_full )); l_add=$(( $(size "$WORK/lv") - l_full ))

measure "$WORK/r.rest" "$WORK/restic" restic restore -q latest --target "$WORK/r-out"
measure "$WORK/l.rest" "$WORK/lv" "$LV" restore -q latest --target "$WORK/l-out.db"
# ledgervault's restore fsyncs the image before renaming it into place;
# restic leaves its file in the page cache. The same restic restore followed
# by an fsync of the file (coreutils `sync FILE`) is the durable equivalent.
measure "$WORK/r.rsync" "$WORK/restic" sh -c 'restic restore -q latest --target "$1" && sync "$1$2"' _ "$WORK/r-out2" "$WORK/data/firm.db"
cmp "$WORK/data/firm.db" "$WORK/r-out$WORK/data/firm.db"
cmp "$WORK/data/firm.db" "$WORK/l-out.db"

echo
echo "sample firm: $(cat "$WORK/gen.txt")"
echo "day of work: $(cat "$WORK/day.txt"), EDIT=$EDIT"
echo "$(nproc) cores; $(restic version | cut -d' ' -f1-2); both restores byte-identical to the live file (cmp)"
printf '%-30s %14s %14s %24s\n' "" "restic" "ledgervault" "ratio"
printf '%-30s %14s %14s %24s\n' "full backup (s)" "$(secs "$WORK/r.full")" "$(secs "$WORK/l.full")" "restic/lv = $(ratio "$(secs "$WORK/r.full")" "$(secs "$WORK/l.full")")x"
printf '%-30s %14s %14s %24s\n' "repository after full" "$(mb "$r_full")" "$(mb "$l_full")" "lv/restic = $(ratio "$l_full" "$r_full")x"
printf '%-30s %14s %14s %24s\n' "incremental backup (s)" "$(secs "$WORK/r.incr")" "$(secs "$WORK/l.incr")" "restic/lv = $(ratio "$(secs "$WORK/r.incr")" "$(secs "$WORK/l.incr")")x"
printf '%-30s %14s %14s %24s\n' "added by incremental" "$(mb "$r_add")" "$(mb "$l_add")" "lv/restic = $(ratio "$l_add" "$r_add")x"
printf '%-30s %14s %14s %24s\n' "restore (s)" "$(secs "$WORK/r.rest")" "$(secs "$WORK/l.rest")" "restic/lv = $(ratio "$(secs "$WORK/r.rest")" "$(secs "$WORK/l.rest")")x"
printf '%-30s %14s %14s %24s\n' "restore, restic + fsync (s)" "$(secs "$WORK/r.rsync")" "$(secs "$WORK/l.rest")" "restic/lv = $(ratio "$(secs "$WORK/r.rsync")" "$(secs "$WORK/l.rest")")x"
printf '%-30s %14s %14s\n' "peak RSS full backup" "$(rss "$WORK/r.full")" "$(rss "$WORK/l.full")"
printf '%-30s %14s %14s\n' "peak RSS restore" "$(rss "$WORK/r.rest")" "$(rss "$WORK/l.rest")"
