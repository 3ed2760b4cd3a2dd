#!/usr/bin/env bash
# Runs the whole ledgervault test suite. Installs what the tests need when it
# is missing (Debian packages; needs root for that, as in CI).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v unshare >/dev/null 2>&1 || missing+=(util-linux)   # full-disk test mounts a private tmpfs
command -v diff >/dev/null 2>&1 || missing+=(diffutils)       # restored trees are compared with diff -r
# PostgreSQL tests start their own server (initdb + pg_ctl) and use
# pg_dump, psql and pgbench.
if ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null && ! command -v initdb >/dev/null 2>&1; then
  missing+=(postgresql postgresql-client)
fi
if ((${#missing[@]})); then
  if [ "$(id -u)" -ne 0 ]; then
    echo "scripts/test.sh: please install: ${missing[*]}" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

cargo test --workspace --locked "$@"
