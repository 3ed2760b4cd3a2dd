#!/usr/bin/env bash
# Hostile input: runs every cargo-fuzz target for a bounded time and prints
# a table of executions, coverage and crashes. Not part of CI.
#
#   bash bench/fuzz.sh            # 60 s per target
#   SECS=600 bash bench/fuzz.sh pack index
#
# Needs a nightly-capable toolchain (RUSTC_BOOTSTRAP=1 is used with stable)
# and cargo-fuzz (installed when missing). The seed corpus is fuzz/corpus;
# what the fuzzer learns goes to a scratch folder, crashes to
# fuzz/artifacts/<target>/ (reproduce with `cargo fuzz run <target> FILE`).
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${SECS:-60}
WORK=${WORK:-$(mktemp -d)}
mkdir -p "$WORK"
targets=("$@")
if ((${#targets[@]} == 0)); then
  targets=(pack index snapshot key_file repo_config chunk_map config_file client_archive)
fi
command -v cargo-fuzz >/dev/null 2>&1 || cargo install --locked cargo-fuzz
export RUSTC_BOOTSTRAP=1
(cd fuzz && cargo fuzz build -O >/dev/null 2>"$WORK/build.log") || { cat "$WORK/build.log" >&2; exit 1; }

printf '%-15s %8s %12s %9s %6s %8s\n' target seconds executions exec/s cov crashes
status=0
for t in "${targets[@]}"; do
  mkdir -p "$WORK/corpus/$t" "fuzz/artifacts/$t"
  before=$(find "fuzz/artifacts/$t" -type f | wc -l)
  log="$WORK/$t.log"
  # -rss_limit_mb: a decoder asked to allocate without bound is a finding too.
  if ! (cd fuzz && cargo fuzz run -O "$t" "$WORK/corpus/$t" "corpus/$t" -- \
      -max_total_time="$SECS" -rss_limit_mb=1024 -timeout=10 -print_final_stats=1 \
      >"$log" 2>&1); then
    status=1
  fi
  after=$(find "fuzz/artifacts/$t" -type f | wc -l)
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || echo 0)
  per=$(awk -v r="${runs:-0}" -v s="$SECS" 'BEGIN { printf "%.0f", r / s }')
  printf '%-15s %8s %12s %9s %6s %8s\n' "$t" "$SECS" "${runs:-0}" "$per" "${cov:-0}" "$((after - before))"
  if ((after > before)); then
    grep -m1 -A3 'ERROR\|panicked' "$log" | sed 's/^/    /' >&2 || true
  fi
done
exit $status
