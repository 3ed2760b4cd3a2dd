#!/usr/bin/env bash
# s3-servers.sh: real S3-compatible servers on loopback for ledgervault's integration tests.
# They run as plain processes (no systemd, no containers); all their files live in the folder DIR.
#
#   s3-servers.sh garage DIR                 3 Garage nodes, replication factor 3, bucket lv-test
#   s3-servers.sh garage-stop DIR [N]        stop every node, or only node N (1..3)
#   s3-servers.sh garage-start-node DIR [N]  start node N (default: every stopped node) on its old data and
#                                            wait until all three nodes report a healthy, complete cluster
#   s3-servers.sh ceph DIR                   a one-node Ceph RADOS Gateway (S3 with Object Lock), no buckets
#   s3-servers.sh ceph-stop DIR              stop it
#   s3-servers.sh install [garage|ceph]      install what is missing (default: both); quick when nothing is
#
# `garage` and `ceph` print plain KEY=VALUE lines on stdout (no quotes, no `export`) and keep a copy in
# DIR/garage/env or DIR/ceph/env. Progress and errors go to stderr.
#   garage: S3_ENDPOINT_1 S3_ENDPOINT_2 S3_ENDPOINT_3 S3_BUCKET AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY S3_REGION
#   ceph:   S3_ENDPOINT AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_ACCESS_KEY_ID_2 AWS_SECRET_ACCESS_KEY_2 S3_REGION
# Clients must use path-style URLs (http://127.0.0.1:PORT/BUCKET/KEY) and sign for S3_REGION: Garage refuses
# any other SigV4 region. The two Ceph users are ordinary S3 users, each owning the buckets it creates.
#
# Ports are picked at random among free ones below the kernel's ephemeral range. The stop commands kill only
# processes whose command line names this DIR's config file (a recycled pid is never hit), and can be run
# any number of times. Garage and Ceph may share one DIR (they use DIR/garage and DIR/ceph).
#
# Environment:
#   GARAGE=PATH            the garage binary; otherwise ~/.cache/ledgervault/garage-2.5.0/bin/garage,
#                          otherwise `garage` on PATH
#   S3_SERVERS_SIGKILL=1   garage-stop kills with SIGKILL at once (a crash) instead of SIGTERM followed by
#                          SIGKILL after 3 s (a node with clients' keep-alive connections open would wait 10 s
#                          for them). Ceph is always stopped with SIGKILL.
set -eu
unset CDPATH

prog=$(basename "$0")
say() { printf '%s: %s\n' "$prog" "$*" >&2; }
die() { say "$*"; exit 1; }
usage() { sed -n '4,11s/^# \{0,1\}//p' "$0" >&2; exit 2; }

garage_version=2.5.0
garage_cache=~/.cache/ledgervault/garage-$garage_version   # ~ expands even when HOME is unset
ceph_tools="ceph-mon ceph-osd radosgw radosgw-admin ceph ceph-authtool monmaptool"

now_ms() { local t=${EPOCHREALTIME/[.,]/}; echo $((t / 1000)); }
since() { local ms=$(($(now_ms) - $1)); printf '%d.%d s' $((ms / 1000)) $((ms % 1000 / 100)); }
random_hex() { od -An -tx1 -N"$1" /dev/urandom | tr -d ' \n'; }

# free_ports N: N distinct ports that nothing on 127.0.0.1 uses, chosen at random below the ephemeral range
# (the kernel hands those out to outgoing connections, which could take a port before the server binds it).
free_ports() {
  python3 - "$1" <<'PY'
import random, socket, sys
want = int(sys.argv[1])
try:
    low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
except OSError:
    low = 32768
top = low if low > 12000 else 65535
held = []
for _ in range(5000):
    if len(held) == want:
        break
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", random.randrange(10000, top)))
        held.append(s)
    except OSError:
        s.close()
if len(held) < want:
    sys.exit("no free ports")
print(" ".join(str(s.getsockname()[1]) for s in held))
PY
}

# owned PID CONF: PID is alive and was started with CONF as an argument. A zombie has an empty command line,
# so it counts as gone (kill -0 would still succeed on it).
owned() {
  [ -n "$1" ] && [ -r "/proc/$1/cmdline" ] || return 1
  tr '\0' '\n' <"/proc/$1/cmdline" 2>/dev/null | grep -qxF -- "$2"
}

# spawn LOG CMD...: run CMD in a session of its own (a Ctrl-C in the caller does not reach it), detached
# from our stdin/stdout/stderr so that a caller reading our stdout to its end does not wait for the daemon.
# Prints the daemon's pid. Without job control the child is no group leader, so setsid execs in place and
# $! is the daemon itself.
spawn() {
  local log=$1; shift
  setsid "$@" </dev/null >>"$log" 2>&1 &
  echo $!
}

# wait_gone CONF PID...: wait up to 10 s until none of the pids is still ours.
wait_gone() {
  local conf=$1 p left; shift
  for _ in $(seq 100); do
    left=
    for p in "$@"; do owned "$p" "$conf" && left=1; done
    [ -z "$left" ] && return 0
    sleep 0.1
  done
  return 1
}

absdir() { mkdir -p "$1" && (cd "$1" && pwd -P); }
existing_dir() { [ -d "$1" ] && (cd "$1" && pwd -P); }

# ---------------------------------------------------------------------------------------------------- garage
# Layout of DIR/garage: state (ports, sourced by the other commands), secret (RPC secret and admin token),
# env (what `garage` printed), setup.log, and nodeN/ with config.toml, meta/, data/, pid, id, server.log.

# find_garage: set G to the garage binary. Returns 1 if there is none, 2 if GARAGE names no executable.
# (Never call it in $(...): a die there would only leave the subshell.)
find_garage() {
  G=
  if [ -n "${GARAGE:-}" ]; then
    [ -x "$GARAGE" ] || return 2
    G=$GARAGE
  elif [ -x "$garage_cache/bin/garage" ]; then
    G=$garage_cache/bin/garage
  else
    G=$(command -v garage 2>/dev/null) || return 1
  fi
}
need_garage() {
  local rc=0; find_garage || rc=$?
  [ $rc != 2 ] || die "GARAGE=$GARAGE is not an executable file"
  [ $rc = 0 ] || die "no garage binary: set GARAGE, or run '$0 install garage' (builds $garage_version into $garage_cache)"
  command -v curl >/dev/null || die "curl is needed to check the Garage nodes' health"
  command -v python3 >/dev/null || die "python3 is needed"
}

g_conf() { echo "$gdir/node$1/config.toml"; }
g_pid() { cat "$gdir/node$1/pid" 2>/dev/null || true; }
g_running() { owned "$(g_pid "$1")" "$(g_conf "$1")"; }
g_cli() { local n=$1; shift; "$G" -c "$(g_conf "$n")" "$@"; }
g_port() { eval "echo \$${1}_$2"; }   # g_port s3|rpc|admin N   (from the state file)

# HTTP status of GET /health on node N's admin API (no token needed): 200 once the node has a layout and
# quorum for every partition, 503 before; 000 while nothing listens.
g_health() { curl -s -o /dev/null -m 2 -w '%{http_code}' "http://127.0.0.1:$(g_port admin "$1")/health" 2>/dev/null || true; }

# g_sees_all N: in node N's own view the cluster is healthy, all 3 storage nodes are up and every partition
# is complete. One node saying so is not enough: a survivor may see a restarted node before that node has
# connected back to anyone, and requests through the restarted node then fail for want of a quorum.
g_sees_all() {
  curl -s -m 2 -H "Authorization: Bearer $(cat "$gdir/secret")" \
    "http://127.0.0.1:$(g_port admin "$1")/v2/GetClusterHealth" 2>/dev/null | python3 -c '
import json, sys
h = json.load(sys.stdin)
sys.exit(0 if h["status"] == "healthy" and h["storageNodesUp"] == 3 and h["partitionsAllOk"] == h["partitions"] else 1)
' 2>/dev/null
}

# g_launch N: start node N and wait until its admin API answers.
g_launch() {
  local n=$1 p
  g_running "$n" && return 0
  p=$(spawn "$gdir/node$n/server.log" "$G" -c "$(g_conf "$n")" server)
  echo "$p" >"$gdir/node$n/pid"
  for _ in $(seq 150); do
    [ "$(g_health "$n")" != 000 ] && return 0
    owned "$p" "$(g_conf "$n")" || break
    sleep 0.1
  done
  say "garage node $n did not start: $(tail -n 3 "$gdir/node$n/server.log" | tr '\n' ' ')"
  return 1
}

# g_halt N...: stop the given nodes together: SIGTERM, then SIGKILL those still there after 3 s (or SIGKILL
# at once if asked). After SIGTERM a node stops its workers at once but then waits up to 10 s for clients'
# open keep-alive connections to close; the metadata is in sqlite, which a kill at that point does not harm.
g_halt() {
  local n p sig=TERM pids=()
  [ "${S3_SERVERS_SIGKILL:-0}" = 1 ] && sig=KILL
  for n in "$@"; do
    p=$(g_pid "$n")
    owned "$p" "$(g_conf "$n")" || continue
    kill -s "$sig" "$p" 2>/dev/null || true
    pids+=("$n:$p")
  done
  for _ in $(seq 30); do
    local left=()
    for np in ${pids[@]+"${pids[@]}"}; do owned "${np#*:}" "$(g_conf "${np%%:*}")" && left+=("$np"); done
    pids=(${left[@]+"${left[@]}"})
    [ ${#pids[@]} = 0 ] && return 0
    sleep 0.1
  done
  for np in "${pids[@]}"; do
    owned "${np#*:}" "$(g_conf "${np%%:*}")" && kill -s KILL "${np#*:}" 2>/dev/null || true
  done
  return 0
}

g_load_state() {
  [ -f "$gdir/state" ] || die "$gdir holds no Garage cluster (start one with: $0 garage DIR)"
  . "$gdir/state"
}
g_node_arg() {
  case "$1" in 1|2|3) ;; *) die "node number must be 1, 2 or 3, not '$1'" ;; esac
}

garage_start() {
  need_garage
  local base; base=$(absdir "$1"); gdir=$base/garage
  local n
  if [ -e "$gdir/state" ]; then
    for n in 1 2 3; do g_running "$n" && die "$gdir already runs Garage node $n (pid $(g_pid "$n"))"; done
    die "$gdir holds a stopped Garage cluster: restart it with garage-start-node, or use a fresh DIR"
  fi
  local t0; t0=$(now_ms)
  mkdir -p "$gdir"
  # 9 ports: S3 API, RPC between nodes, admin API, for each node.
  local ports; ports=($(free_ports 9)) || die "could not find 9 free ports"
  {
    for n in 1 2 3; do
      echo "s3_$n=${ports[3 * n - 3]} rpc_$n=${ports[3 * n - 2]} admin_$n=${ports[3 * n - 1]}"
    done
  } >"$gdir/state"
  . "$gdir/state"
  # One secret is the RPC secret (shared by the nodes) and the admin API's bearer token.
  (umask 077 && random_hex 32 >"$gdir/secret")
  local secret; secret=$(cat "$gdir/secret")
  : >"$gdir/setup.log"
  fail() { say "$*"; g_halt 1 2 3; exit 1; }

  for n in 1 2 3; do
    mkdir -p "$gdir/node$n/meta" "$gdir/node$n/data"
    # sqlite rather than the default lmdb: the metadata survives the kill -9 of crash tests.
    # root_domain must be set, although clients use path-style URLs.
    (umask 077 && cat >"$(g_conf $n)") <<EOF
metadata_dir = "$gdir/node$n/meta"
data_dir = "$gdir/node$n/data"
db_engine = "sqlite"
replication_factor = 3
rpc_bind_addr = "127.0.0.1:$(g_port rpc $n)"
rpc_public_addr = "127.0.0.1:$(g_port rpc $n)"
rpc_secret = "$secret"

[s3_api]
api_bind_addr = "127.0.0.1:$(g_port s3 $n)"
s3_region = "garage"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:$(g_port admin $n)"
admin_token = "$secret"
EOF
    g_launch "$n" || fail "giving up"
  done

  # Node ids (ID@127.0.0.1:RPCPORT) never change: keep them for garage-start-node.
  for n in 1 2 3; do
    g_cli "$n" node id -q >"$gdir/node$n/id" 2>>"$gdir/setup.log" || fail "garage node id failed on node $n"
  done
  step() { g_cli 1 "$@" >>"$gdir/setup.log" 2>&1 || fail "garage $* failed: $(tail -n 1 "$gdir/setup.log")"; }
  step node connect "$(cat "$gdir/node2/id")"
  step node connect "$(cat "$gdir/node3/id")"
  for n in 1 2 3; do
    local id; id=$(cat "$gdir/node$n/id")
    step layout assign -z "zone$n" -c 1G "${id%@*}"
  done
  step layout apply --version 1
  # No S3 request works until every node has the layout.
  for n in 1 2 3; do
    for _ in $(seq 300); do [ "$(g_health "$n")" = 200 ] && break; sleep 0.1; done
    [ "$(g_health "$n")" = 200 ] || fail "garage node $n not healthy after the layout was applied"
  done

  step bucket create lv-test
  local out kid ksec
  out=$(g_cli 1 key create lv-test-key 2>>"$gdir/setup.log") || fail "garage key create failed"
  kid=$(printf '%s\n' "$out" | sed -n 's/^Key ID: *//p')
  ksec=$(printf '%s\n' "$out" | sed -n 's/^Secret key: *//p')
  [ -n "$kid" ] && [ -n "$ksec" ] || fail "could not read the key from garage key create: $out"
  step bucket allow --read --write --owner lv-test --key lv-test-key

  {
    for n in 1 2 3; do echo "S3_ENDPOINT_$n=http://127.0.0.1:$(g_port s3 $n)"; done
    echo "S3_BUCKET=lv-test"
    echo "AWS_ACCESS_KEY_ID=$kid"
    echo "AWS_SECRET_ACCESS_KEY=$ksec"
    echo "S3_REGION=garage"
  } >"$gdir/env"
  say "garage: 3 nodes up in $(since "$t0") (stop with: $0 garage-stop $base)"
  cat "$gdir/env"
}

garage_stop() {
  local base; base=$(existing_dir "$1") || return 0   # nothing was ever started there
  gdir=$base/garage
  if [ -n "${2:-}" ]; then g_node_arg "$2"; g_halt "$2"; else g_halt 1 2 3; fi
}

garage_start_node() {
  need_garage
  local base; base=$(existing_dir "$1") || die "no such folder: $1"
  gdir=$base/garage
  g_load_state
  local nodes n o t0 last=0
  if [ -n "${2:-}" ]; then
    g_node_arg "$2"; nodes=$2
    g_halt "$2"   # a restart if it still runs
  else
    nodes=; for n in 1 2 3; do g_running "$n" || nodes="$nodes $n"; done
  fi
  t0=$(now_ms)
  for n in $nodes; do g_launch "$n" || exit 1; done
  # Left alone, a rejoin is slow both ways: the other nodes redial a lost peer with a growing back-off
  # (25-30 s after a clean stop), and after a SIGKILL they keep counting the dead node as connected until a
  # ping fails (~10 s) while the restarted node waits as long before dialing anyone. So have each restarted
  # node and every other running node dial each other now, and again every 3 s until the cluster is whole.
  for _ in $(seq 300); do
    if [ $(($(now_ms) - last)) -ge 3000 ]; then
      last=$(now_ms)
      for n in $nodes; do
        for o in 1 2 3; do
          [ "$o" = "$n" ] || ! g_running "$o" && continue
          g_cli "$o" node connect "$(cat "$gdir/node$n/id")" >/dev/null 2>&1 || true
          g_cli "$n" node connect "$(cat "$gdir/node$o/id")" >/dev/null 2>&1 || true
        done
      done
    fi
    g_sees_all 1 && g_sees_all 2 && g_sees_all 3 && { say "garage: node(s)$nodes back, cluster whole in $(since "$t0")"; return 0; }
    sleep 0.2
  done
  die "garage: the cluster was not whole 60 s after starting node(s)$nodes"
}

# ------------------------------------------------------------------------------------------------------ ceph
# One monitor, one memstore OSD (objects live in the OSD's memory, about twice their size), one RADOS
# Gateway; no manager (RGW does not need one). Layout of DIR/ceph: ceph.conf, keys/ (one keyring per
# daemon or client), mon/, osd0/, rgw/, run/ (admin sockets), log/, crash/, pids, env.

# last_words FILE...: the last non-blank line of the first file that has one (Ceph's daemons end each
# message on stderr with a blank line), or "(no message)".
last_words() {
  local f l
  for f in "$@"; do
    l=$(grep -v '^[[:space:]]*$' "$f" 2>/dev/null | tail -n 1)
    [ -n "$l" ] && { printf '%s\n' "$l"; return 0; }
  done
  echo "(no message)"
}

c_halt() {
  local cdir=$1 conf=$1/ceph.conf p pids=()
  [ -f "$cdir/pids" ] || return 0
  # SIGKILL: the cluster is thrown away, and after SIGTERM an OSD spends ~5 s telling the (gone) monitor
  # that it is going down.
  for p in $(cat "$cdir/pids"); do
    owned "$p" "$conf" && { kill -s KILL "$p" 2>/dev/null || true; pids+=("$p"); }
  done
  wait_gone "$conf" ${pids[@]+"${pids[@]}"} || say "ceph: some processes outlived SIGKILL: ${pids[*]}"
}

ceph_stop() {
  local base; base=$(existing_dir "$1") || return 0
  c_halt "$base/ceph"
}

ceph_start() {
  local t
  for t in $ceph_tools; do command -v "$t" >/dev/null || die "ceph: $t missing (run: $0 install ceph)"; done
  local base; base=$(absdir "$1")
  local cdir=$base/ceph; local conf=$cdir/ceph.conf p
  for p in $(cat "$cdir/pids" 2>/dev/null); do owned "$p" "$conf" && die "$cdir already runs Ceph (pid $p)"; done
  [ -e "$cdir/mon" ] && die "$cdir holds an old Ceph cluster: use a fresh DIR"
  local t0; t0=$(now_ms)
  mkdir -p "$cdir"/{keys,mon,osd0,rgw,run,log,crash}
  : >"$cdir/pids"
  local ports; ports=($(free_ports 2)) || die "could not find 2 free ports"
  local mon_port=${ports[0]} rgw_port=${ports[1]} fsid; fsid=$(cat /proc/sys/kernel/random/uuid)
  fail() { say "ceph: $*"; c_halt "$cdir"; exit 1; }

  # Every path the daemons and the command-line tools use points into DIR/ceph.
  # Settings for a one-OSD cluster that starts fast:
  #  - pools of one copy, and CRUSH choosing among OSDs rather than hosts. chooseleaf_type must be in the
  #    file before the monitor's mkfs, which writes the first CRUSH rule.
  #  - 8 PGs per pool: RGW makes 7 pools, and 7 x the default 32 PGs exceeds the 250 PGs an OSD may hold.
  #  - the monitor proposes map changes every 50 ms instead of every second: RGW's first start creates its
  #    pools one map change at a time, which otherwise takes 13-16 s.
  #  - no disk-space alarm or shutdown: ceph-mon refuses to start when the free share of its disk is at
  #    or below mon_data_avail_crit percent, and on a 252 GB CI disk with 2 GB free that is the default 5 %
  #    and even 1 %. The monitor's data here is a few MB.
  #  - no cluster log file (its default place is /var/log/ceph).
  cat >"$conf" <<EOF
[global]
fsid = $fsid
mon_host = [v2:127.0.0.1:$mon_port]
public_network = 127.0.0.0/8
ms_bind_msgr1 = false
auth_cluster_required = cephx
auth_service_required = cephx
auth_client_required = cephx
auth_allow_insecure_global_id_reclaim = false
keyring = $cdir/keys/\$name.keyring
run_dir = $cdir/run
admin_socket = $cdir/run/\$name.\$pid.asok
log_file = $cdir/log/\$name.log
crash_dir = $cdir/crash
mon_cluster_log_to_file = false
osd_pool_default_size = 1
osd_pool_default_min_size = 1
osd_pool_default_pg_num = 8
osd_pool_default_pgp_num = 8
osd_pool_default_pg_autoscale_mode = off
mon_allow_pool_size_one = true
mon_warn_on_pool_no_redundancy = false
osd_crush_chooseleaf_type = 0
mon_data_avail_warn = 0
mon_data_avail_crit = 0
paxos_propose_interval = 0.05
paxos_min_wait = 0.01

[mon]
mon_data = $cdir/mon/\$id

[osd]
osd_data = $cdir/osd\$id
osd_objectstore = memstore
memstore_device_bytes = 4294967296

[client.rgw.lv]
rgw_data = $cdir/rgw
rgw_frontends = beast endpoint=127.0.0.1:$rgw_port
EOF
  local C=(-c "$conf")
  daemon() { local name=$1; shift; spawn "$cdir/log/$name.out" "$@" -f >>"$cdir/pids"; }

  # Monitor: keys for mon. and client.admin (the admin key also goes into the monitor's initial keyring),
  # a monmap with the one monitor, mkfs, start, and wait until it answers.
  ceph-authtool --create-keyring "$cdir/keys/mon..keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
  ceph-authtool --create-keyring "$cdir/keys/client.admin.keyring" --gen-key -n client.admin \
    --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' --cap mds 'allow *' >/dev/null
  ceph-authtool "$cdir/keys/mon..keyring" --import-keyring "$cdir/keys/client.admin.keyring" >/dev/null
  monmaptool --create --addv a "[v2:127.0.0.1:$mon_port]" --fsid "$fsid" "$cdir/monmap" >/dev/null
  ceph-mon "${C[@]}" --mkfs -i a --monmap "$cdir/monmap" --keyring "$cdir/keys/mon..keyring" \
    >"$cdir/log/mon-mkfs.out" 2>&1 || fail "monitor mkfs: $(last_words "$cdir/log/mon-mkfs.out")"
  daemon mon ceph-mon "${C[@]}" -i a
  # Ask in short tries for up to 60 s, and stop asking as soon as the monitor has exited.
  local mon_pid; mon_pid=$(tail -n 1 "$cdir/pids") up=
  for _ in $(seq 20); do
    ceph "${C[@]}" --connect-timeout 3 mon stat >/dev/null 2>>"$cdir/log/setup.err" && { up=1; break; }
    # When it exits at start it may say nothing on stderr or in its log, so say how full its disk is.
    owned "$mon_pid" "$conf" || fail "the monitor exited (its disk has $(df -h --output=avail "$cdir" | tail -n 1 | xargs) free; log: $cdir/log)"
  done
  [ -n "$up" ] || fail "the monitor did not answer in 60 s: $(last_words "$cdir/log/setup.err" "$cdir/log/mon.out")"

  # OSD: `osd new` registers it together with a fresh cephx key; its keyring must be where `keyring`
  # says, or mkfs fails to fetch the monitor's config.
  local osd_uuid osd_key id
  osd_uuid=$(cat /proc/sys/kernel/random/uuid); osd_key=$(ceph-authtool --gen-print-key)
  id=$(printf '{"cephx_secret": "%s"}' "$osd_key" | ceph "${C[@]}" osd new "$osd_uuid" -i - 2>>"$cdir/log/setup.err") ||
    fail "osd new: $(last_words "$cdir/log/setup.err")"
  [ "$id" = 0 ] || fail "expected OSD id 0, got '$id'"
  ceph-authtool --create-keyring "$cdir/keys/osd.0.keyring" --name osd.0 --add-key "$osd_key" >/dev/null
  ceph-osd "${C[@]}" -i 0 --mkfs --osd-uuid "$osd_uuid" >"$cdir/log/osd-mkfs.out" 2>&1 ||
    fail "osd mkfs: $(last_words "$cdir/log/osd-mkfs.out")"
  daemon osd ceph-osd "${C[@]}" -i 0
  up=
  for _ in $(seq 150); do
    ceph "${C[@]}" osd stat 2>/dev/null | grep -q ' 1 up' && { up=1; break; }
    sleep 0.2
  done
  [ -n "$up" ] || fail "the OSD did not come up: $(last_words "$cdir/log/osd.out" "$cdir/log/osd.0.log")"

  # RADOS Gateway (beast frontend). It listens only once it has created its pools.
  ceph "${C[@]}" auth get-or-create client.rgw.lv mon 'allow rw' osd 'allow rwx' mgr 'allow rw' \
    -o "$cdir/keys/client.rgw.lv.keyring" 2>>"$cdir/log/setup.err" || fail "rgw key: $(last_words "$cdir/log/setup.err")"
  daemon rgw radosgw "${C[@]}" -n client.rgw.lv
  up=
  for _ in $(seq 300); do
    (exec 3<>"/dev/tcp/127.0.0.1/$rgw_port") 2>/dev/null && { up=1; break; }
    sleep 0.1
  done
  [ -n "$up" ] || fail "radosgw did not listen on port $rgw_port: $(last_words "$cdir/log/rgw.out" "$cdir/log/client.rgw.lv.log")"

  # Two ordinary S3 users. radosgw-admin works on RADOS directly, not through the gateway.
  local ak1 sk1 ak2 sk2
  ak1=LV1$(random_hex 8 | tr a-f A-F) sk1=$(random_hex 20)
  ak2=LV2$(random_hex 8 | tr a-f A-F) sk2=$(random_hex 20)
  radosgw-admin "${C[@]}" user create --uid=lv-test --display-name="ledgervault tests" \
    --access-key="$ak1" --secret-key="$sk1" >/dev/null 2>>"$cdir/log/setup.err" || fail "user create: $(last_words "$cdir/log/setup.err")"
  radosgw-admin "${C[@]}" user create --uid=lv-test-2 --display-name="ledgervault tests, second user" \
    --access-key="$ak2" --secret-key="$sk2" >/dev/null 2>>"$cdir/log/setup.err" || fail "user create: $(last_words "$cdir/log/setup.err")"

  {
    echo "S3_ENDPOINT=http://127.0.0.1:$rgw_port"
    echo "AWS_ACCESS_KEY_ID=$ak1"
    echo "AWS_SECRET_ACCESS_KEY=$sk1"
    echo "AWS_ACCESS_KEY_ID_2=$ak2"
    echo "AWS_SECRET_ACCESS_KEY_2=$sk2"
    echo "S3_REGION=us-east-1"
  } >"$cdir/env"
  say "ceph: radosgw up in $(since "$t0") (stop with: $0 ceph-stop $base)"
  cat "$cdir/env"
}

# --------------------------------------------------------------------------------------------------- install
install_ceph() {
  local t missing=
  for t in $ceph_tools; do command -v "$t" >/dev/null || missing=1; done
  command -v curl >/dev/null || missing=1
  [ -z "$missing" ] && return 0
  [ "$(id -u)" = 0 ] || die "please install as root: apt-get install --no-install-recommends ceph-mon ceph-osd radosgw ceph-common curl"
  say "installing the Ceph packages (under a minute)"
  export DEBIAN_FRONTEND=noninteractive
  apt-cache show ceph-mon >/dev/null 2>&1 || apt-get update -qq
  # Keep the packages from starting Ceph services: the tests start their own daemons.
  local made_policy= rc=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && made_policy=1
  fi
  apt-get install -y -qq --no-install-recommends ceph-mon ceph-osd radosgw ceph-common curl >&2 || rc=$?
  [ -n "$made_policy" ] && rm -f /usr/sbin/policy-rc.d
  for t in $ceph_tools curl; do command -v "$t" >/dev/null || die "apt-get (exit $rc) did not install $t"; done
  [ "$rc" = 0 ] || say "apt-get reported an error (exit $rc), but every Ceph program is installed"
}

install_garage() {
  local rc=0; find_garage || rc=$?
  [ $rc != 2 ] || die "GARAGE=$GARAGE is not an executable file (unset it to build Garage into $garage_cache)"
  [ $rc = 0 ] && { [ "$G" = "$garage_cache/bin/garage" ] || say "using $G"; return 0; }
  command -v cargo >/dev/null || die "no garage binary, and no cargo to build one"
  # One build at a time: a second `install` waits for the first and then finds the binary.
  mkdir -p "$garage_cache"
  exec 9>"$garage_cache/.install.lock"
  if command -v flock >/dev/null; then
    flock -n 9 || { say "another install is building Garage; waiting for it"; flock 9; }
  fi
  [ -x "$garage_cache/bin/garage" ] && return 0
  say "building Garage $garage_version into $garage_cache (takes ~13 minutes on 2 cores)"
  CARGO_INSTALL_ROOT=$garage_cache cargo install garage --locked --version "$garage_version" >&2
  [ -x "$garage_cache/bin/garage" ] || die "cargo install finished, but $garage_cache/bin/garage is missing"
}

# ------------------------------------------------------------------------------------------------------ main
cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
  garage)            [ $# = 1 ] || usage; garage_start "$1" ;;
  garage-stop)       [ $# = 1 ] || [ $# = 2 ] || usage; garage_stop "$@" ;;
  garage-start-node) [ $# = 1 ] || [ $# = 2 ] || usage; garage_start_node "$@" ;;
  ceph)              [ $# = 1 ] || usage; ceph_start "$1" ;;
  ceph-stop)         [ $# = 1 ] || usage; ceph_stop "$1" ;;
  install)
    case "${1:-all}" in
      all) install_ceph; install_garage ;;
      ceph) install_ceph ;;
      garage) install_garage ;;
      *) usage ;;
    esac ;;
  *) usage ;;
esac
