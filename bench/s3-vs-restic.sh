#!/usr/bin/env bash
# Offsite: ledgervault and restic side by side against the same three-node
# Garage cluster, in one run.
#
#   bash bench/s3-vs-restic.sh                        # 1 GiB firm + 300 MB of documents, 0 and 50 ms
#   SIZE=268435456 OFFICE=100000000 DELAYS="0" bash bench/s3-vs-restic.sh
#
# Data: the sample firm's SQLite database (SIZE bytes, WAL, checkpointed)
# and a folder of office documents (OFFICE bytes, gen_docs), backed up
# together. For each round trip delay in DELAYS (milliseconds), both tools
# get fresh repositories (prefixes of one bucket) and, in alternating order:
#   first    the first backup
#   nightly  a backup after a day of work (the firm's `day`: new
#            transactions and edits to EDIT of its pages; 30 documents
#            changed and 20 added)
#   idle     a backup with nothing changed
#   restore  the latest snapshot into a new folder (compared with cmp/diff)
#   check    check --read-data (restic: check --read-data)
# Both talk to node 1 through a proxy on loopback (crates/testkit, example
# s3_proxy) that holds every byte DELAY/2 in each direction and counts the
# HTTP requests and the bytes each way. Wall time and peak RSS come from
# /usr/bin/time; page cache dropped before each command (as root). Finally
# ledgervault's first backup to a local folder, for the local/remote ratio.
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE=${SIZE:-1073741824}
OFFICE=${OFFICE:-300000000}
EDIT=${EDIT:-0.07}
DELAYS=${DELAYS:-"0 50"}
WORK=${WORK:-$(mktemp -d /var/tmp/ledgervault-s3.XXXXXX)}

source bench/lib.sh
need restic restic
need /usr/bin/time time
bash scripts/s3-servers.sh install garage

cargo build --release -q -p ledgervault-cli
cargo build --release -q -p ledgervault-samplefirm --example firm
cargo build --release -q -p ledgervault-testkit --example gen_docs --example s3_proxy
LV=$PWD/target/release/ledgervault
FIRM=$PWD/target/release/examples/firm
GEN=$PWD/target/release/examples/gen_docs
PROXY=$PWD/target/release/examples/s3_proxy

G=$WORK/garage
bash scripts/s3-servers.sh garage "$G" >"$WORK/garage.env"
cleanup() {
  [ -n "${proxy_pid:-}" ] && kill "$proxy_pid" 2>/dev/null
  bash scripts/s3-servers.sh garage-stop "$G" || true
  rm -rf "$WORK"
}
trap cleanup EXIT
while IFS='=' read -r k v; do export "$k=$v"; done <"$WORK/garage.env"
export AWS_REGION=$S3_REGION AWS_DEFAULT_REGION=$S3_REGION
export RESTIC_PASSWORD=bench LEDGERVAULT_PASSWORD=bench
export LEDGERVAULT_CACHE_DIR=$WORK/lv-cache
RESTIC=(restic -o "s3.region=$S3_REGION" --cache-dir "$WORK/restic-cache")

mkdir -p "$WORK/data"
"$FIRM" generate "$WORK/data/firm.db" "$SIZE" 2>"$WORK/gen.txt"
"$GEN" office "$WORK/data/documents" "$OFFICE"
cp -a "$WORK/data" "$WORK/pristine"

# traffic: "requests up down" through the proxy so far.
traffic() { cat "$WORK/stats"; }
# step TOOL STEP: runs one step; appends "secs rss requests up down" to $WORK/TOOL.STEP.$delay
step() {
  local tool=$1 st=$2 res=$WORK/$1.$2.$delay before after
  before=$(traffic)
  case $tool.$st in
    restic.first)   "${RESTIC[@]}" init -q >/dev/null
                    measure "$res" "$WORK/data" "${RESTIC[@]}" backup -q "$WORK/data" ;;
    restic.nightly|restic.idle) measure "$res" "$WORK/data" "${RESTIC[@]}" backup -q "$WORK/data" ;;
    restic.restore) measure "$res" "$WORK/data" "${RESTIC[@]}" restore -q latest --target "$WORK/r-out"
                    cmp "$WORK/data/firm.db" "$WORK/r-out$WORK/data/firm.db"
                    diff -r "$WORK/data/documents" "$WORK/r-out$WORK/data/documents" >/dev/null
                    rm -rf "$WORK/r-out" ;;
    restic.check)   measure "$res" "$WORK/data" "${RESTIC[@]}" check -q --read-data ;;
    lv.first)       "$LV" init -q
                    measure "$res" "$WORK/data" "$LV" backup -q "$WORK/data" ;;
    lv.nightly|lv.idle) measure "$res" "$WORK/data" "$LV" backup -q "$WORK/data" ;;
    lv.restore)     measure "$res" "$WORK/data" "$LV" restore -q latest --target "$WORK/l-out"
                    cmp "$WORK/data/firm.db" "$WORK/l-out/data/firm.db"
                    diff -r "$WORK/data/documents" "$WORK/l-out/data/documents" >/dev/null
                    rm -rf "$WORK/l-out" ;;
    lv.check)       measure "$res" "$WORK/data" "$LV" check -q --read-data ;;
  esac
  after=$(traffic)
  # the measure line gets the traffic of this step appended
  local line; line=$(tail -1 "$res")
  sed -i '$d' "$res"
  echo "$line $(awk -v a="$before" -v b="$after" 'BEGIN { split(a, x, " "); split(b, y, " "); printf "%d %d %d", y[1]-x[1], y[2]-x[2], y[3]-x[3] }')" >>"$res"
}

n=0
for delay in $DELAYS; do
  half=$((delay / 2))
  "$PROXY" "$S3_ENDPOINT_1" "$half" "$WORK/stats" >"$WORK/proxy.port" &
  proxy_pid=$!
  for _ in $(seq 50); do [ -s "$WORK/proxy.port" ] && [ -s "$WORK/stats" ] && break; sleep 0.1; done
  ep=http://127.0.0.1:$(cat "$WORK/proxy.port")
  export RESTIC_REPOSITORY="s3:$ep/$S3_BUCKET/restic-$delay"
  export LEDGERVAULT_REPOSITORY="s3:$ep/$S3_BUCKET/lv-$delay"
  rm -rf "$WORK/data" "$WORK/lv-cache" "$WORK/restic-cache"; cp -a "$WORK/pristine" "$WORK/data"
  n=$((n + 1))
  if ((n % 2)); then order="restic lv"; else order="lv restic"; fi
  for t in $order; do step "$t" first; done
  "$FIRM" day "$WORK/data/firm.db" 7 "$EDIT" 2>>"$WORK/day.txt"
  "$GEN" touch "$WORK/data/documents" 30 20
  # The day's work ends hours before the nightly backup, not within the
  # two seconds in which a file's times do not yet vouch for it.
  sleep 3
  for t in $order; do step "$t" nightly; done
  for t in $order; do step "$t" idle; done
  for t in $order; do step "$t" restore; done
  for t in $order; do step "$t" check; done
  kill "$proxy_pid"; wait "$proxy_pid" 2>/dev/null || true; proxy_pid=
done

# ledgervault's first backup of the same data to a local folder.
rm -rf "$WORK/data"; cp -a "$WORK/pristine" "$WORK/data"
LEDGERVAULT_REPOSITORY=$WORK/lv-local "$LV" init -q
LEDGERVAULT_REPOSITORY=$WORK/lv-local measure "$WORK/local" "$WORK/data" "$LV" backup -q "$WORK/data"

# The floor: the same repository's files put into the bucket by boto3,
# eight at a time (what Garage on this machine can take, without ledgervault).
floor=$(target/venv-s3/bin/python - "$WORK/lv-local" "$S3_ENDPOINT_1" "$S3_BUCKET" <<'PY'
import os, sys, time
from concurrent.futures import ThreadPoolExecutor
import boto3
from botocore.config import Config
root, ep, bucket = sys.argv[1:4]
s3 = boto3.client("s3", endpoint_url=ep, config=Config(s3={"addressing_style": "path"}, max_pool_connections=16))
files = [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs]
t = time.time()
with ThreadPoolExecutor(8) as ex:
    list(ex.map(lambda p: s3.upload_file(p, bucket, "floor/" + os.path.relpath(p, root)), files))
print(f"{time.time() - t:.2f}")
PY
)

f() { cut -d' ' -f"$2" "$1"; }
echo
echo "data: sample firm $(mb "$SIZE") + documents $(mb "$OFFICE"); Garage 2.5.0, 3 nodes, replication 3, on loopback; $(nproc) cores; $(restic version | cut -d' ' -f1-2)"
for delay in $DELAYS; do
  echo
  echo "round trip +$delay ms"
  printf '%-9s %9s %9s %8s | %9s %9s %9s | %8s %8s | %10s %10s | %8s %8s\n' step "restic s" "lv s" ratio "restic up" "lv up" "up ratio" "r req" "lv req" "restic RSS" "lv RSS" "r down" "lv down"
  for st in first nightly idle restore check; do
    r=$WORK/restic.$st.$delay l=$WORK/lv.$st.$delay
    printf '%-9s %9s %9s %7sx | %9s %9s %8sx | %8s %8s | %10s %10s | %8s %8s\n' "$st" "$(f "$r" 1)" "$(f "$l" 1)" "$(ratio "$(f "$r" 1)" "$(f "$l" 1)")" \
      "$(mb "$(f "$r" 4)")" "$(mb "$(f "$l" 4)")" "$(ratio "$(f "$r" 4)" "$(( $(f "$l" 4) + 1 ))")" \
      "$(f "$r" 3)" "$(f "$l" 3)" "$(mib "$(f "$r" 2)")" "$(mib "$(f "$l" 2)")" "$(mb "$(f "$r" 5)")" "$(mb "$(f "$l" 5)")"
  done
done
echo
first0=$(f "$WORK/lv.first.$(echo "$DELAYS" | cut -d' ' -f1)" 1)
echo "ledgervault first backup: local folder $(f "$WORK/local" 1) s, Garage $first0 s: remote/local = $(ratio "$first0" "$(f "$WORK/local" 1)")x"
echo "floor: the local repository's files uploaded to Garage by boto3 (8 at a time): $floor s, local backup + that upload = $(awk -v a="$(f "$WORK/local" 1)" -v b="$floor" 'BEGIN { printf "%.2f", a + b }') s"
