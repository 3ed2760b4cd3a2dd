#!/usr/bin/env bash
# The proving ground: crashes, corruption, hostile input, resources and
# load, all in one run, then a table of what was tried and whether it held.
#
#   bash bench/torture.sh                     # everything, about 20-25 minutes
#   STREAM_GIB=5 FUZZ_SECS=10 bash bench/torture.sh   # a quick pass
#
# Knobs: STREAM_GIB (50), KILLS (60), LOAD_ROUNDS (30), FUZZ_SECS (60 per
# target; 0 skips fuzzing), WORK (scratch folder, removed unless KEEP=1).
# The fast parts of the same tests run in CI through `cargo test`.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
STREAM_GIB=${STREAM_GIB:-50}
KILLS=${KILLS:-60}
LOAD_ROUNDS=${LOAD_ROUNDS:-30}
FUZZ_SECS=${FUZZ_SECS:-60}
WORK=${WORK:-$(mktemp -d /var/tmp/lv-torture.XXXXXX)}
mkdir -p "$WORK"
[ "${KEEP:-}" = 1 ] || trap 'rm -rf "$WORK"' EXIT
source bench/lib.sh
need /usr/bin/time time
need diff diffutils
need unshare util-linux

echo "building (release binary, debug test binaries) in $WORK ..." >&2
cargo build --release -q -p ledgervault-cli || exit 1
cargo build --release -q -p ledgervault-testkit --example gen_mixed || exit 1
cargo build --release -q -p ledgervault-samplefirm --example firm || exit 1
LV=$ROOT/target/release/ledgervault
GEN=$ROOT/target/release/examples/gen_mixed
FIRM=$ROOT/target/release/examples/firm

rows=()
failed=0
# row PART WHAT_WAS_TRIED RESULT SECONDS
row() {
  rows+=("$(printf '| %s | %s | %s | %s |' "$1" "$2" "$3" "$4")")
  [ "$3" = held ] || failed=1
  printf '%-22s %-6s %5ss  %s\n' "$1" "$3" "$4" "$2" >&2
}
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.0f", b - a }'; }

# cargo_part PART LOG CARGO-TEST-ARGS...: runs tests, keeps their output.
cargo_part() {
  local log=$WORK/$2.log; shift 2
  cargo test -q --locked "$@" -- --nocapture >"$log" 2>&1
}
passed() { grep -o 'test result: ok. [0-9]* passed' "$1" | awk '{ n += $4 } END { print n + 0 }'; }

# ---------------------------------------------------------------- crashes
t=$(now)
if cargo_part crash crash -p ledgervault-cli --test crash; then
  n=$(grep -o '[a-z][a-z ]*: [0-9]* interruptions' "$WORK/crash.log" | sort | awk '{ s = s (s ? ", " : "") $0 } END { print s }')
  row "crash at every step" "fail and stop at every write/delete: $n; after each: check --read-data, earlier snapshots byte-identical, rerun succeeds" held "$(since "$t")"
else
  row "crash at every step" "see $WORK/crash.log" FAILED "$(since "$t")"
fi

# ---------------------------------------------------------------- kill -9
# Real kill -9 at random moments of backup, forget --prune, copy and a
# per-client restore, bounded by KILLS. After each: check passes and the
# command runs again to the end. At the end every snapshot left in either
# repository restores exactly what its round backed up.
t=$(now)
K=$WORK/kill
mkdir -p "$K/manifests"
echo s3cret >"$K/pw"; echo offsite >"$K/pw2"
printf '[client]\ndefault_link = "nullify"\n' >"$K/ledgervault.toml"
"$GEN" tree "$K/books" 60000000 >/dev/null
"$FIRM" generate "$K/firm.db" 40000000 6 2>/dev/null
"$FIRM" generate "$K/pristine.db" 20000000 4 9 2>/dev/null
LV1=("$LV" -r "$K/repo" --password-file "$K/pw")
LV2=("$LV" -r "$K/offsite" --password-file "$K/pw2")
lv() { "${LV1[@]}" "$@"; }
lv2() { "${LV2[@]}" "$@"; }
# The newest snapshot of a round (not a safety snapshot a restore took).
last_round() { lv --json snapshots | python3 -c 'import json,sys
r = [s["id"] for s in json.load(sys.stdin) if any(t.startswith("round-") for t in s["tags"])]
print(r[-1] if r else "")'; }
lv init -q --argon2-memory-kib 1024 --argon2-iterations 1
lv2 init -q --argon2-memory-kib 1024 --argon2-iterations 1
manifest() { (cd "$1" && find . -type f -print0 | sort -z | xargs -0 sha256sum); }
books_rows() { python3 - "$1" <<'PY'
import hashlib, sqlite3, sys
c = sqlite3.connect("file:" + sys.argv[1] + "?mode=ro", uri=True)
assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
h = hashlib.sha256()
for (t,) in c.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name"):
    for r in sorted(repr(r) for r in c.execute(f'SELECT * FROM "{t}"')):
        h.update((t + r).encode())
print(h.hexdigest())
PY
}
# books_and_db FOLDER DB: what a round must restore; fails if the database
# cannot be read.
books_and_db() { local rows; rows=$(books_rows "$2") && [ -n "$rows" ] && { manifest "$1"; echo "db $rows"; }; }
record() { books_and_db "$K/books" "$K/firm.db" >"$K/manifests/$1" || { echo "cannot read $K/firm.db" >&2; exit 1; }; }
kill_ok=1 kills=0 landed=0 why=""
ops=(backup prune copy client)
i=0
while ((kills < KILLS)); do
  i=$((i + 1))
  op=${ops[$((i % 4))]}
  if [ "$op" = backup ]; then
    echo "round $i" >"$K/books/round-$i.txt"
    "$FIRM" day "$K/firm.db" "$i" 0.02 2>/dev/null
    record "round-$i"
  fi
  cp "$K/pristine.db" "$K/target.db"; rm -f "$K/target.db-wal" "$K/target.db-shm"
  # The binary itself, not a shell function, so kill -9 hits it.
  case $op in
    backup) cmd=("${LV1[@]}" -q backup --tag "round-$i" "$K/books" "$K/firm.db") ;;
    prune) cmd=("${LV1[@]}" -q forget --keep-last 6 --prune) ;;
    copy) cmd=("${LV1[@]}" -q copy --to "$K/offsite" --to-password-file "$K/pw2") ;;
    client)
      from=$(last_round)
      [ -n "$from" ] || continue
      cmd=("${LV1[@]}" -q -c "$K/ledgervault.toml" client restore "$from" --client 2 --database firm.db --into "$K/target.db" --as-new --set "code=K$i") ;;
  esac
  "${cmd[@]}" >/dev/null 2>"$K/err" &
  pid=$!
  sleep "$(awk -v r=$RANDOM 'BEGIN { printf "%.3f", r / 32768 * 1.5 }')"
  if kill -9 "$pid" 2>/dev/null; then landed=$((landed + 1)); fi
  wait "$pid" 2>/dev/null
  kills=$((kills + 1))
  if ! lv check >/dev/null 2>"$K/err"; then kill_ok=0; why="check after killing $op: $(head -1 "$K/err")"; break; fi
  if [ "$op" = client ]; then
    # The target firm is unchanged or holds the whole client, never half.
    n=$(python3 -c "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); assert c.execute('PRAGMA integrity_check').fetchone()[0]=='ok'; print(c.execute(\"SELECT count(*) FROM clients WHERE code=?\", (sys.argv[2],)).fetchone()[0])" "$K/target.db" "K$i") || { kill_ok=0; why="target damaged after killing client restore"; break; }
    [ "$n" = 1 ] || [ "$n" = 0 ] || { kill_ok=0; why="client restore left $n copies"; break; }
    cp "$K/pristine.db" "$K/target.db"; rm -f "$K/target.db-wal" "$K/target.db-shm"
  fi
  if ! "${cmd[@]}" >/dev/null 2>"$K/err"; then kill_ok=0; why="$op did not run again: $(head -1 "$K/err")"; break; fi
done
if ((kill_ok)); then
  lv check --read-data >/dev/null 2>"$K/err" || { kill_ok=0; why="check --read-data: $(head -1 "$K/err")"; }
  lv2 check --read-data >/dev/null 2>"$K/err" || { kill_ok=0; why="offsite check --read-data: $(head -1 "$K/err")"; }
fi
restored=0
if ((kill_ok)); then
  for side in lv lv2; do
    for pair in $($side --json snapshots | python3 -c 'import json,sys
for s in json.load(sys.stdin):
    r = [t for t in s["tags"] if t.startswith("round-")]
    if r: print(s["id"] + ":" + r[0])'); do
      id=${pair%%:*} round=${pair#*:}
      rm -rf "$K/out"
      $side -q restore "$id" --target "$K/out" 2>"$K/err" || { kill_ok=0; why="restore $round: $(head -1 "$K/err")"; break 2; }
      books_and_db "$K/out/books" "$K/out/firm.db" >"$K/got" || { kill_ok=0; why="$round: restored database unreadable"; break 2; }
      cmp -s "$K/got" "$K/manifests/$round" || { kill_ok=0; why="$round restored different data"; break 2; }
      restored=$((restored + 1))
    done
  done
fi
if ((kill_ok)); then
  row "kill -9 at random" "$kills kills ($landed landed mid-run) of backup, forget --prune, copy, client restore; check after each, rerun succeeds; $restored snapshots in both repositories restore exactly" held "$(since "$t")"
else
  row "kill -9 at random" "after $kills kills: $why" FAILED "$(since "$t")"
fi

# ---------------------------------------------------------------- corruption
t=$(now)
if cargo_part damage damage -p ledgervault-testkit --test damage &&
  cargo test -q --locked -p ledgervault-cli --test cli damage >>"$WORK/damage.log" 2>&1; then
  row "corruption" "flipped, truncated and deleted packs, index and snapshot files, keys and config; check names each, restore refuses, repair loses only what was destroyed ($(passed "$WORK/damage.log") tests)" held "$(since "$t")"
else
  row "corruption" "see $WORK/damage.log" FAILED "$(since "$t")"
fi

# ---------------------------------------------------------------- hostile files
t=$(now)
if cargo_part hostile hostile -p ledgervault-testkit --test hostile &&
  cargo test -q --locked -p ledgervault-cli --test sqlite never_placed_through_a_link >>"$WORK/hostile.log" 2>&1; then
  row "hostile trees and targets" "forged trees (link then folder of one name, '..', '/', NUL, empty names, forged source names), links to outside at every depth of the target, a link swapped in mid-restore, a database placed through a link, arbitrary byte names round-trip ($(passed "$WORK/hostile.log") tests): nothing written outside" held "$(since "$t")"
else
  row "hostile trees and targets" "see $WORK/hostile.log" FAILED "$(since "$t")"
fi

# ---------------------------------------------------------------- lost packs, locks
t=$(now)
if cargo_part claims claims -p ledgervault-testkit --test claims; then
  row "lost packs, stolen locks" "a pack deleted, a pack damaged (found by check or a restore), index files lost, packs deleted mid-backup by a prune without the lock, unlock by an append-only key, prune of young packs ($(passed "$WORK/claims.log") tests): every snapshot reported saved restores" held "$(since "$t")"
else
  row "lost packs, stolen locks" "see $WORK/claims.log" FAILED "$(since "$t")"
fi

# ---------------------------------------------------------------- ransomware
t=$(now)
if cargo_part ransomware guard -p ledgervault-cli --test guard &&
  cargo test -q --locked -p ledgervault-cli --test sqlite ransomware >>"$WORK/guard.log" 2>&1; then
  row "ransomware variants" "databases encrypted (whole, after page 1, 40% of pages), renamed away, replaced by an empty one; documents encrypted in place, renamed to .crypt, deleted en masse; no false alarm on random tokens or a normal week ($(passed "$WORK/guard.log") tests)" held "$(since "$t")"
else
  row "ransomware variants" "see $WORK/guard.log" FAILED "$(since "$t")"
fi

# ---------------------------------------------------------------- the application
t=$(now)
if cargo_part gnucash gnucash -p ledgervault-cli --test gnucash; then
  row "GnuCash committing" "GnuCash (python3-gnucash) commits in a tight loop during repeated backups: no failed commit, every snapshot holds the book, every restored book opens and balances" held "$(since "$t")"
else
  row "GnuCash committing" "see $WORK/gnucash.log" FAILED "$(since "$t")"
fi

# ---------------------------------------------------------------- hung storage, secrets
t=$(now)
if cargo_part hung daemon -p ledgervault-cli --test daemon -- hung_storage webhook_secrets &&
  cargo test -q --locked -p ledgervault-cli --test cli -- outside_input_is_bounded read_only_repository >>"$WORK/daemon.log" 2>&1; then
  row "hung storage, secrets, bounds" "a repository on a FIFO that never answers: jobs time out, are killed and alerted, status answers; webhook tokens and passwords never shown; /dev/zero as password or config file refused; huge numbers refused; a read-only repository checks ($(passed "$WORK/daemon.log") tests)" held "$(since "$t")"
else
  row "hung storage, secrets, bounds" "see $WORK/daemon.log" FAILED "$(since "$t")"
fi

# ---------------------------------------------------------------- resources
t=$(now)
if cargo_part resources full -p ledgervault-cli --test cli a_full_disk &&
  cargo test -q --locked -p ledgervault-testkit --test engine -- storage_full files_that_vanish >>"$WORK/full.log" 2>&1; then
  row "full disk, vanishing files" "a 3 MiB tmpfs fills mid-backup (fails cleanly, earlier snapshot intact); files deleted and grown mid-read are reported, not fatal ($(passed "$WORK/full.log") tests)" held "$(since "$t")"
else
  row "full disk, vanishing files" "see $WORK/full.log" FAILED "$(since "$t")"
fi

t=$(now)
S=$WORK/stream
mkdir -p "$S"; echo s3cret >"$S/pw"
"$LV" -r "$S/repo" --password-file "$S/pw" init -q
bytes=$((STREAM_GIB * 1024 * 1024 * 1024))
"$GEN" stream - "$bytes" |
  /usr/bin/time -f "%e %M" -o "$S/time" "$LV" -r "$S/repo" --password-file "$S/pw" -q backup --stdin-name ledger.csv 2>"$S/err"
rc=$?
read -r secs kib <"$S/time"
stored=$(size "$S/repo")
if [ "$rc" = 0 ] && [ "$kib" -lt $((200 * 1024)) ] &&
  "$LV" -r "$S/repo" --password-file "$S/pw" check --read-data-subset 2% >/dev/null 2>>"$S/err"; then
  row "${STREAM_GIB} GiB stream" "backup of a generated stream: peak RSS $(mib "$kib") (limit 200 MiB), $(awk -v b="$bytes" -v s="$secs" 'BEGIN { printf "%.0f MB/s", b / 1e6 / s }'), $(mb "$stored") stored; check passes" held "$(since "$t")"
else
  row "${STREAM_GIB} GiB stream" "exit $rc, peak RSS $(mib "${kib:-0}"): $(head -1 "$S/err")" FAILED "$(since "$t")"
fi
rm -rf "$S"

# ---------------------------------------------------------------- load
t=$(now)
if LEDGERVAULT_LOAD_ROUNDS=$LOAD_ROUNDS cargo_part load load -p ledgervault-cli --test load; then
  row "load" "$LOAD_ROUNDS rounds of backup + forget --prune + copy + verify + client restore at once; $(grep -o '[0-9]* snapshots kept, [0-9]* copied offsite' "$WORK/load.log"); check --read-data clean on both" held "$(since "$t")"
else
  row "load" "see $WORK/load.log" FAILED "$(since "$t")"
fi

# ---------------------------------------------------------------- fuzzing
if [ "$FUZZ_SECS" != 0 ]; then
  t=$(now)
  if SECS=$FUZZ_SECS WORK=$WORK/fuzz bash bench/fuzz.sh >"$WORK/fuzz.txt" 2>&1; then
    total=$(awk 'NR > 1 && $3 ~ /^[0-9]+$/ { n += $3 } END { print n + 0 }' "$WORK/fuzz.txt")
    row "hostile input (fuzz)" "8 decoders, ${FUZZ_SECS} s each, $total inputs, 0 crashes" held "$(since "$t")"
  else
    row "hostile input (fuzz)" "$(grep -c . "$WORK/fuzz.txt") lines, see table below" FAILED "$(since "$t")"
  fi
fi

echo
echo "| part | what was tried | result | seconds |"
echo "|---|---|---|---|"
printf '%s\n' "${rows[@]}"
if [ -f "$WORK/fuzz.txt" ]; then
  echo
  sed 's/^/    /' "$WORK/fuzz.txt"
fi
exit $failed
