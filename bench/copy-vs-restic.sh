#!/usr/bin/env bash
# Side-by-side: copying snapshots to a second repository ("the other backup
# location"), ledgervault against restic, in one run on the same data.
#
#   bash bench/copy-vs-restic.sh                 # 1 GiB sample firm
#   SIZE=268435456 bash bench/copy-vs-restic.sh
#
# 1. the sample firm database, backed up by each tool into its primary;
# 2. first copy into a second repository with a different password and key
#    (restic: `copy --from-repo`, ledgervault: `copy --to`); both re-encrypt;
# 3. a day of work, a second backup, and the nightly copy of it;
# 4. for ledgervault also a copy into a repository made with
#    `init --same-keys-as`, which skips data without reading it;
# then restores the latest snapshot from each second repository and checks
# it byte-identical to the live file.
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
echo a >"$WORK/pa"; echo b >"$WORK/pb"
export RESTIC_PASSWORD=bench
restic -r "$WORK/r1" init -q >/dev/null
restic -r "$WORK/r2" --password-file "$WORK/pb" init -q >/dev/null
"$LV" -r "$WORK/l1" --password-file "$WORK/pa" init -q
"$LV" -r "$WORK/l2" --password-file "$WORK/pb" init -q
"$LV" -r "$WORK/l3" --password-file "$WORK/pb" init -q --same-keys-as "$WORK/l1" --same-keys-password-file "$WORK/pa"

rcopy() { restic -r "$WORK/r2" --password-file "$WORK/pb" copy -q --from-repo "$WORK/r1" --from-password-file <(echo bench); }
lcopy() { "$LV" -r "$WORK/l1" --password-file "$WORK/pa" copy -q --to "$1" --to-password-file "$WORK/pb"; }

restic -r "$WORK/r1" backup -q "$WORK/data/firm.db"
"$LV" -r "$WORK/l1" --password-file "$WORK/pa" backup -q "$WORK/data/firm.db"

measure "$WORK/r.c1" "$WORK/r1" bash -c "$(declare -f rcopy); WORK=$WORK; rcopy"
measure "$WORK/l.c1" "$WORK/l1" bash -c "$(declare -f lcopy); WORK=$WORK; LV=$LV; lcopy $WORK/l2"
measure "$WORK/s.c1" "$WORK/l1" bash -c "$(declare -f lcopy); WORK=$WORK; LV=$LV; lcopy $WORK/l3"
r2a=$(size "$WORK/r2"); l2a=$(size "$WORK/l2"); l3a=$(size "$WORK/l3")

"$FIRM" day "$WORK/data/firm.db" 7 "$EDIT" 2>"$WORK/day.txt"
restic -r "$WORK/r1" backup -q "$WORK/data/firm.db"
"$LV" -r "$WORK/l1" --password-file "$WORK/pa" backup -q "$WORK/data/firm.db"

measure "$WORK/r.c2" "$WORK/r1" bash -c "$(declare -f rcopy); WORK=$WORK; rcopy"
measure "$WORK/l.c2" "$WORK/l1" bash -c "$(declare -f lcopy); WORK=$WORK; LV=$LV; lcopy $WORK/l2"
measure "$WORK/s.c2" "$WORK/l1" bash -c "$(declare -f lcopy); WORK=$WORK; LV=$LV; lcopy $WORK/l3"
r2_add=$(( $(size "$WORK/r2") - r2a )); l2_add=$(( $(size "$WORK/l2") - l2a )); l3_add=$(( $(size "$WORK/l3") - l3a ))

restic -r "$WORK/r2" --password-file "$WORK/pb" restore -q latest --target "$WORK/r-out"
"$LV" -r "$WORK/l2" --password-file "$WORK/pb" restore -q latest --target "$WORK/l-out.db"
"$LV" -r "$WORK/l3" --password-file "$WORK/pb" restore -q latest --target "$WORK/s-out.db"
cmp "$WORK/data/firm.db" "$WORK/r-out$WORK/data/firm.db"
cmp "$WORK/data/firm.db" "$WORK/l-out.db"
cmp "$WORK/data/firm.db" "$WORK/s-out.db"

echo
echo "sample firm: $(cat "$WORK/gen.txt")"
echo "day of work: $(cat "$WORK/day.txt"), EDIT=$EDIT"
echo "$(nproc) cores; $(restic version | cut -d' ' -f1-2); restores from every copy byte-identical (cmp)"
printf '%-34s %12s %14s %18s %22s\n' "" "restic" "lv (own key)" "lv (--same-keys-as)" "restic/lv (own key)"
printf '%-34s %12s %14s %18s %22s\n' "first copy (s)" "$(secs "$WORK/r.c1")" "$(secs "$WORK/l.c1")" "$(secs "$WORK/s.c1")" "$(ratio "$(secs "$WORK/r.c1")" "$(secs "$WORK/l.c1")")x"
printf '%-34s %12s %14s %18s %22s\n' "nightly copy after a day (s)" "$(secs "$WORK/r.c2")" "$(secs "$WORK/l.c2")" "$(secs "$WORK/s.c2")" "$(ratio "$(secs "$WORK/r.c2")" "$(secs "$WORK/l.c2")")x"
printf '%-34s %12s %14s %18s %22s\n' "added to the copy by the night" "$(mb "$r2_add")" "$(mb "$l2_add")" "$(mb "$l3_add")" "$(ratio "$r2_add" "$l2_add")x"
printf '%-34s %12s %14s %18s\n' "peak RSS nightly copy" "$(rss "$WORK/r.c2")" "$(rss "$WORK/l.c2")" "$(rss "$WORK/s.c2")"
