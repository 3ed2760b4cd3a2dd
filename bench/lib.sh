# Helpers shared by the benchmark scripts; sourced, not run.
# Expects WORK (a scratch folder) to be set.

# need COMMAND PACKAGE: installs the Debian package when the command is missing.
need() { command -v "$1" >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null; }; }

# measure OUT WARM CMD...: flushes dirty pages, drops the page cache when
# allowed (root), reads WARM (a file or folder) so the tool reads its input
# from memory, then runs CMD and appends "seconds max_rss_kib" to OUT. Each
# tool starts from the same state, whatever the previous command left behind.
measure() {
  local out=$1 warm=$2; shift 2
  sync
  if [ -w /proc/sys/vm/drop_caches ]; then echo 3 >/proc/sys/vm/drop_caches; fi
  find "$warm" -type f -exec cat {} + >/dev/null
  /usr/bin/time -f "%e %M" -o "$WORK/t" "$@" >/dev/null 2>"$WORK/err" || { cat "$WORK/err" >&2; exit 1; }
  cat "$WORK/t" >>"$out"
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
mb() { awk -v b="$1" 'BEGIN { printf "%.1f MB", b / 1e6 }'; }
mib() { awk -v k="$1" 'BEGIN { printf "%.0f MiB", k / 1024 }'; }

# Readers of a `measure` result file, and a folder's size in bytes.
secs() { cut -d' ' -f1 "$1"; }
rss() { mib "$(cut -d' ' -f2 "$1")"; }
size() { du -sb "$1" | cut -f1; }

# The PostgreSQL server runs as nobody when we are root (it refuses root).
as_server() { if [ "$(id -u)" = 0 ]; then runuser -u nobody -- "$@"; else "$@"; fi; }

# pg_start: installs PostgreSQL from Debian if needed and starts a throwaway
# server in $WORK/pg on a free loopback port; sets PGBIN and URL, exports
# PGHOST, PGPORT and PGUSER=bench, and on exit stops the server and removes
# $WORK.
pg_start() {
  compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need psql postgresql
  PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  mkdir -p "$WORK/pg"
  if [ "$(id -u)" = 0 ]; then chown nobody "$WORK/pg"; fi
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  as_server "$PGBIN/initdb" -D "$WORK/pg/data" -U bench --auth=trust --no-locale -E UTF8 --no-sync >/dev/null
  as_server "$PGBIN/pg_ctl" -D "$WORK/pg/data" -l "$WORK/pg/log" -w \
    -o "-p $port -c listen_addresses=127.0.0.1 -k $WORK/pg -c shared_buffers=256MB -c max_wal_size=4GB" start >/dev/null
  trap 'as_server "$PGBIN/pg_ctl" -D "$WORK/pg/data" -m fast -w stop >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT
  export PGHOST=127.0.0.1 PGPORT=$port PGUSER=bench
  URL="postgres://bench@127.0.0.1:$port"
}
