#!/usr/bin/env bash
# What the smallest and fastest possible incremental backup of a pgbench
# database could cost on this machine, beside `pg_dump -Fc | restic`, in one run.
#
#   bash bench/pg-bounds.sh                 # scale 50, 5000 transactions
#   SCALE=10 TX=1000 bash bench/pg-bounds.sh
#
# Issue 7 asks for an incremental backup 3x faster than `pg_dump -Fc |
# restic backup --stdin`, adding 5x less to the repository, with a row count
# and content digest of every table in every snapshot. This script measures:
#
# - the night's information itself: exactly the rows the day of work
#   changed or added (the history rows, the accounts whose balance changed,
#   the tellers and branches), as text, compressed by zstd -19 and xz -9e.
#   No backup of the night can store less than this without losing data,
#   before any per-snapshot bookkeeping of its own;
# - server-side scans, timed as whole psql commands: the rows changed since
#   the day began (an xmin filter), a content digest of every table
#   (hashtext over each row, summed), the count of every table, and a plain
#   pg_dump to /dev/null;
#
# and prints each beside the budget the issue's ratio leaves.
set -euo pipefail
cd "$(dirname "$0")/.."

SCALE=${SCALE:-50}
TX=${TX:-5000}
WORK=${WORK:-$(mktemp -d /var/tmp/ledgervault-bench.XXXXXX)}
chmod 755 "$WORK"

source bench/lib.sh
need restic restic
need /usr/bin/time time
need zstd zstd
need xz xz-utils
cargo build --release -q -p ledgervault-cli
LV=$PWD/target/release/ledgervault

pg_start
sql() { "$PGBIN/psql" -XAtq -v ON_ERROR_STOP=1 -c "$1" bench; }

"$PGBIN/createdb" bench
"$PGBIN/pgbench" -i -q -s "$SCALE" bench 2>"$WORK/init.txt"

export RESTIC_PASSWORD=bench LEDGERVAULT_PASSWORD=bench
export RESTIC_REPOSITORY="$WORK/restic" LEDGERVAULT_REPOSITORY="$WORK/lv"
restic init -q >/dev/null
"$LV" init -q
PEER="set -o pipefail; $PGBIN/pg_dump -Fc bench | restic backup -q --stdin --stdin-filename bench.dump"
measure "$WORK/r.full" "$WORK/pg/data" bash -c "$PEER"
measure "$WORK/l.full" "$WORK/pg/data" "$LV" backup -q "$URL/bench"
r_full=$(size "$WORK/restic"); l_full=$(size "$WORK/lv")

# The state before the day, and the transaction horizon the day starts after.
sql "COPY (SELECT aid, abalance FROM pgbench_accounts ORDER BY aid) TO STDOUT" >"$WORK/before.txt"
horizon=$(sql "SELECT txid_current()")
"$PGBIN/pgbench" -n -c 2 -t $((TX / 2)) bench >"$WORK/day.txt" 2>&1

measure "$WORK/r.incr" "$WORK/pg/data" bash -c "$PEER"
measure "$WORK/l.incr" "$WORK/pg/data" "$LV" backup -q "$URL/bench"
r_add=$(( $(size "$WORK/restic") - r_full )); l_add=$(( $(size "$WORK/lv") - l_full ))

# The night's information: every row the day added or changed.
sql "COPY (SELECT aid, abalance FROM pgbench_accounts ORDER BY aid) TO STDOUT" >"$WORK/after.txt"
{
  sql "COPY pgbench_history TO STDOUT"
  { diff "$WORK/before.txt" "$WORK/after.txt" || true; } | sed -n 's/^> //p'
  sql "COPY (SELECT * FROM pgbench_tellers ORDER BY tid) TO STDOUT"
  sql "COPY (SELECT * FROM pgbench_branches ORDER BY bid) TO STDOUT"
} >"$WORK/delta.txt"
delta_rows=$(wc -l <"$WORK/delta.txt")
z19=$(zstd -q -19 -c "$WORK/delta.txt" | wc -c)
xz9=$(xz -9e -c "$WORK/delta.txt" | wc -c)

tables="pgbench_accounts pgbench_branches pgbench_tellers pgbench_history"
changed_q=""; digest_q=""; count_q=""
for t in $tables; do
  changed_q+="COPY (SELECT * FROM $t WHERE xmin::text::bigint >= $horizon) TO STDOUT;"
  digest_q+="SELECT count(*), sum(hashtext(t::text)::bigint) FROM $t t;"
  count_q+="SELECT count(*) FROM $t;"
done
measure "$WORK/changed" "$WORK/pg/data" "$PGBIN/psql" -XAtq -c "$changed_q" -o /dev/null bench
measure "$WORK/digest" "$WORK/pg/data" "$PGBIN/psql" -XAtq -c "$digest_q" -o /dev/null bench
measure "$WORK/count" "$WORK/pg/data" "$PGBIN/psql" -XAtq -c "$count_q" -o /dev/null bench
measure "$WORK/dump" "$WORK/pg/data" sh -c '"$1/pg_dump" bench >/dev/null' _ "$PGBIN"

r_incr=$(secs "$WORK/r.incr")
time_budget=$(awk -v t="$r_incr" 'BEGIN { printf "%.2f", t / 3 }')
size_budget=$(( r_add / 5 ))
row() { printf '%-58s %12s %12s\n' "$1" "$2" "$3"; }

echo
echo "pgbench scale $SCALE: $(tail -1 "$WORK/init.txt" | cut -c1-60); day of work: $TX transactions"
echo "$(nproc) cores; $("$PGBIN/pg_dump" --version); $(restic version | cut -d' ' -f1-2)"
row "incremental backup, size" "bytes" "x budget"
row "  pg_dump -Fc | restic: added (reference)" "$r_add" ""
row "  budget for 5x less" "$size_budget" "1.00"
row "  ledgervault: added" "$l_add" "$(ratio "$l_add" "$size_budget")"
row "  the night's $delta_rows changed rows, zstd -19, nothing else" "$z19" "$(ratio "$z19" "$size_budget")"
row "  the night's $delta_rows changed rows, xz -9e, nothing else" "$xz9" "$(ratio "$xz9" "$size_budget")"
row "incremental backup, time" "seconds" "x budget"
row "  pg_dump -Fc | restic (reference)" "$r_incr" ""
row "  budget for 3x faster" "$time_budget" "1.00"
row "  ledgervault" "$(secs "$WORK/l.incr")" "$(ratio "$(secs "$WORK/l.incr")" "$time_budget")"
row "  server: rows changed since the day began (xmin filter)" "$(secs "$WORK/changed")" "$(ratio "$(secs "$WORK/changed")" "$time_budget")"
row "  server: count and content digest of every table" "$(secs "$WORK/digest")" "$(ratio "$(secs "$WORK/digest")" "$time_budget")"
row "  server: count of every table" "$(secs "$WORK/count")" "$(ratio "$(secs "$WORK/count")" "$time_budget")"
row "  pg_dump (plain) to /dev/null" "$(secs "$WORK/dump")" "$(ratio "$(secs "$WORK/dump")" "$time_budget")"
