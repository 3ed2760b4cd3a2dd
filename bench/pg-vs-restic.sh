#!/usr/bin/env bash
# Side-by-side benchmark on a PostgreSQL pgbench database: ledgervault
# (`backup postgres://…`) against `pg_dump -Fc | restic backup --stdin`, in
# one run, on the same server and data.
#
#   bash bench/pg-vs-restic.sh                    # pgbench scale 50, 5,000 transactions
#   SCALE=100 TX=20000 bash bench/pg-vs-restic.sh
#
# 1. starts a throwaway PostgreSQL server (initdb + pg_ctl in a temporary
#    folder, as `nobody` when run as root) and fills it with `pgbench -i`;
# 2. full backup with each;
# 3. a day of work: TX pgbench transactions (each edits one account, one
#    teller and one branch and adds a history row);
# 4. incremental backup with each: time and what it added to the repository;
# 5. restore of the latest backup with each into a new database (restic:
#    `restic dump | pg_restore`), and a check that pgbench's accounting
#    holds in both.
# Every timed command starts with dirty pages flushed, caches dropped (as
# root) and the server's data folder read once.
set -euo pipefail
cd "$(dirname "$0")/.."

SCALE=${SCALE:-50}
TX=${TX:-5000}
WORK=${WORK:-$(mktemp -d /var/tmp/ledgervault-bench.XXXXXX)}
chmod 755 "$WORK"

source bench/lib.sh
need restic restic
need /usr/bin/time time
cargo build --release -q -p ledgervault-cli
LV=$PWD/target/release/ledgervault

pg_start

"$PGBIN/createdb" bench
"$PGBIN/pgbench" -i -q -s "$SCALE" bench 2>"$WORK/init.txt"
db_size=$("$PGBIN/psql" -XAtc "SELECT pg_database_size('bench')" bench)

export RESTIC_PASSWORD=bench LEDGERVAULT_PASSWORD=bench
export RESTIC_REPOSITORY="$WORK/restic" LEDGERVAULT_REPOSITORY="$WORK/lv"
restic init -q >/dev/null
"$LV" init -q
PEER="set -o pipefail; $PGBIN/pg_dump -Fc bench | restic backup -q --stdin --stdin-filename bench.dump"

measure "$WORK/r.full" "$WORK/pg/data" bash -c "$PEER"
measure "$WORK/l.full" "$WORK/pg/data" "$LV" backup -q "$URL/bench"
r_full=$(size "$WORK/restic"); l_full=$(size "$WORK/lv")

"$PGBIN/pgbench" -n -c 2 -t $((TX / 2)) bench >"$WORK/day.txt" 2>&1
measure "$WORK/r.incr" "$WORK/pg/data" bash -c "$PEER"
measure "$WORK/l.incr" "$WORK/pg/data" "$LV" backup -q "$URL/bench"
r_add=$(( $(size "$WORK/restic") - r_full )); l_add=$(( $(size "$WORK/lv") - l_full ))

"$PGBIN/createdb" r_restored
measure "$WORK/r.rest" "$WORK/restic" bash -c "set -o pipefail; restic dump -q latest bench.dump | $PGBIN/pg_restore --no-owner -d r_restored"
measure "$WORK/l.rest" "$WORK/lv" "$LV" restore -q latest --target "$URL/l_restored"
check='SELECT (SELECT sum(abalance) FROM pgbench_accounts) = (SELECT sum(delta) FROM pgbench_history)
          AND (SELECT sum(bbalance) FROM pgbench_branches) = (SELECT sum(delta) FROM pgbench_history)
          AND (SELECT count(*) FROM pgbench_history) > 0'
for db in r_restored l_restored; do
  [ "$("$PGBIN/psql" -XAtc "$check" "$db")" = t ] || { echo "$db: pgbench accounting does not hold" >&2; exit 1; }
done

echo
echo "pgbench scale $SCALE: database $(mb "$db_size"); day of work: $TX transactions ($(grep -o 'tps = [0-9.]*' "$WORK/day.txt" | head -1))"
echo "$(nproc) cores; $("$PGBIN/pg_dump" --version); $(restic version | cut -d' ' -f1-2); both restores keep pgbench's accounting"
printf '%-30s %16s %14s %24s\n' "" "pg_dump -Fc|restic" "ledgervault" "ratio"
printf '%-30s %16s %14s %24s\n' "full backup (s)" "$(secs "$WORK/r.full")" "$(secs "$WORK/l.full")" "restic/lv = $(ratio "$(secs "$WORK/r.full")" "$(secs "$WORK/l.full")")x"
printf '%-30s %16s %14s %24s\n' "repository after full" "$(mb "$r_full")" "$(mb "$l_full")" "lv/restic = $(ratio "$l_full" "$r_full")x"
printf '%-30s %16s %14s %24s\n' "incremental backup (s)" "$(secs "$WORK/r.incr")" "$(secs "$WORK/l.incr")" "restic/lv = $(ratio "$(secs "$WORK/r.incr")" "$(secs "$WORK/l.incr")")x"
printf '%-30s %16s %14s %24s\n' "added by incremental" "$(mb "$r_add")" "$(mb "$l_add")" "restic/lv = $(ratio "$r_add" "$l_add")x"
printf '%-30s %16s %14s %24s\n' "restore (s)" "$(secs "$WORK/r.rest")" "$(secs "$WORK/l.rest")" "restic/lv = $(ratio "$(secs "$WORK/r.rest")" "$(secs "$WORK/l.rest")")x"
printf '%-30s %16s %14s\n' "peak RSS full backup" "$(rss "$WORK/r.full")" "$(rss "$WORK/l.full")"
