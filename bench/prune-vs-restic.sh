#!/usr/bin/env bash
# Side-by-side benchmark of retention on the sample firm: ledgervault against
# restic, in one run, on the same data.
#
#   bash bench/prune-vs-restic.sh                   # 512 MiB firm, 6 nights
#   SIZE=1073741824 NIGHTS=10 bash bench/prune-vs-restic.sh
#
# 1. makes the sample firm database and backs it up with each tool;
# 2. NIGHTS times: a day of work touching about EDIT (default 7%) of the
#    pages, then a backup with each tool;
# 3. forget all but the last 2 snapshots with each tool;
# 4. prune with each tool (both repack packs more than 5% unused): time,
#    peak RSS, repository size before and after;
# 5. restores the latest snapshot with each tool and compares it with the
#    live database (cmp), then runs each tool's full data check.
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE=${SIZE:-536870912}
NIGHTS=${NIGHTS:-6}
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

restic backup -q "$WORK/data/firm.db" >/dev/null
"$LV" backup -q "$WORK/data/firm.db"
for n in $(seq "$NIGHTS"); do
  "$FIRM" day "$WORK/data/firm.db" "$n" "$EDIT" 2>/dev/null
  restic backup -q "$WORK/data/firm.db" >/dev/null
  "$LV" backup -q "$WORK/data/firm.db"
done

restic forget -q --keep-last 2 >/dev/null
"$LV" forget -q --keep-last 2
r_before=$(size "$WORK/restic"); l_before=$(size "$WORK/lv")
measure "$WORK/r.prune" "$WORK/restic" restic prune -q --max-unused 5%
# Every pack here is minutes old: without --min-pack-age 0s ledgervault
# would keep them all (its guard for backups running without a lock).
measure "$WORK/l.prune" "$WORK/lv" "$LV" prune -q --repack-threshold 5 --min-pack-age 0s
r_after=$(size "$WORK/restic"); l_after=$(size "$WORK/lv")
[ "$l_after" -lt "$l_before" ] || { echo "ledgervault's prune removed nothing: the comparison would mean nothing" >&2; exit 1; }

restic restore -q latest --target "$WORK/r-out" >/dev/null
"$LV" restore -q latest --target "$WORK/l-out.db"
cmp "$WORK/data/firm.db" "$WORK/r-out$WORK/data/firm.db"
cmp "$WORK/data/firm.db" "$WORK/l-out.db"
restic check -q --read-data >/dev/null
"$LV" check -q --read-data

echo
echo "sample firm: $(cat "$WORK/gen.txt")"
echo "$NIGHTS nights of work (EDIT=$EDIT) backed up by both tools, then forget --keep-last 2 and prune (repack above 5% unused)"
echo "$(nproc) cores; $(restic version | cut -d' ' -f1-2); after prune both restores are byte-identical to the live file and both full data checks pass"
printf '%-30s %14s %14s %24s\n' "" "restic" "ledgervault" "ratio"
printf '%-30s %14s %14s %24s\n' "prune (s)" "$(secs "$WORK/r.prune")" "$(secs "$WORK/l.prune")" "restic/lv = $(ratio "$(secs "$WORK/r.prune")" "$(secs "$WORK/l.prune")")x"
printf '%-30s %14s %14s %24s\n' "peak RSS prune" "$(rss "$WORK/r.prune")" "$(rss "$WORK/l.prune")" "lv/restic = $(ratio "$(cut -d' ' -f2 "$WORK/l.prune")" "$(cut -d' ' -f2 "$WORK/r.prune")")x"
printf '%-30s %14s %14s %24s\n' "repository before prune" "$(mb "$r_before")" "$(mb "$l_before")" "lv/restic = $(ratio "$l_before" "$r_before")x"
printf '%-30s %14s %14s %24s\n' "repository after prune" "$(mb "$r_after")" "$(mb "$l_after")" "lv/restic = $(ratio "$l_after" "$r_after")x"
