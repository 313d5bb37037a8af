#!/usr/bin/env bash
# Snapshot make / ship / load / restart times and peak proxy RSS for a
# dataset of SNAP_MIB MiB (default 100; SNAP_MIB=1024 for 1 GiB).
# A 3-node cluster is filled through the leader, compacted, then a fresh
# 4th node joins: it receives the snapshot and loads it into its redis.
set -euo pipefail
cd "$(dirname "$0")/.."
SNAP_MIB=${SNAP_MIB:-100}
VALUE=1000
KEYS=$((SNAP_MIB * 1024 * 1024 / (VALUE + 60)))
export RUN_DIR=.run-bench-snap CLIENT_BASE=18000 PEER_BASE=18100 REDIS_BASE=17400
N4=$RUN_DIR/node4
cleanup() {
  [ -f "$N4/raftproxy.pid" ] && kill "$(cat "$N4/raftproxy.pid")" 2>/dev/null || true
  redis-cli -p $((REDIS_BASE + 4)) shutdown nosave >/dev/null 2>&1 || true
  scripts/cluster.sh stop >/dev/null 2>&1 || true
  rm -rf "$RUN_DIR"
}
[ -n "${KEEP:-}" ] || trap cleanup EXIT
cleanup
scripts/cluster.sh start >/dev/null
leader=""
for i in 1 2 3; do
  p=$((CLIENT_BASE + i))
  redis-cli -p $p RAFT.INFO | grep -q '^role:leader' && leader=$p && li=$i
done
ms() { date +%s%3N; }
rss() { awk '/VmHWM/ {printf "%.0f MiB", $2/1024}' "/proc/$1/status"; }

echo "filling ~${SNAP_MIB} MiB: $KEYS keys of $VALUE bytes through the leader..." >&2
t0=$(ms)
redis-benchmark -p "$leader" -t set -n "$KEYS" -r 1000000000 -d $VALUE -c 20 -P 32 -q >/dev/null 2>&1
fill=$(( $(ms) - t0 ))
t0=$(ms)
redis-cli -p "$leader" RAFT.DEBUG COMPACT >/dev/null
make_ms=$(( $(ms) - t0 ))
snap=$(ls -1 "$RUN_DIR/node$li/data/snap/"*.rdb | tail -1)
size=$(stat -c %s "$snap")

# A fresh node joins: the leader streams the snapshot, the node loads it.
mkdir -p "$N4/redis"
redis-server --port $((REDIS_BASE + 4)) --bind 127.0.0.1 --save "" --appendonly no --dir "$PWD/$N4/redis" \
  --daemonize yes --logfile "$PWD/$N4/redis.log"
start4() {
  bin/raftproxy --listen 127.0.0.1:$((CLIENT_BASE + 4)) --peer-listen 127.0.0.1:$((PEER_BASE + 4)) \
    --data-dir "$N4/data" --redis 127.0.0.1:$((REDIS_BASE + 4)) >>"$N4/raftproxy.log" 2>&1 &
  echo $! >"$N4/raftproxy.pid"
  for _ in $(seq 1 100); do redis-cli -p $((CLIENT_BASE + 4)) PING >/dev/null 2>&1 && return; sleep 0.1; done
}
serving() { # waits until node 4 serves a linearizable read of the last key written
  until [ "$(redis-cli -p $((CLIENT_BASE + 4)) DBSIZE 2>/dev/null)" -ge "$1" ] 2>/dev/null; do sleep 0.05; done
}
keys=$(redis-cli -p "$leader" DBSIZE)
sender_pid=$(cat "$RUN_DIR/node$li/raftproxy.pid")
sender_before=$(awk '/VmRSS/ {print int($2/1024)}' "/proc/$sender_pid/status")
echo 5 >"/proc/$sender_pid/clear_refs" 2>/dev/null || true # resets VmHWM to the current RSS
start4
t0=$(ms)
redis-cli -p $((CLIENT_BASE + 4)) RAFT.CLUSTER JOIN 127.0.0.1:$leader >/dev/null
serving "$keys"
join_ms=$(( $(ms) - t0 ))
load_took=$( (grep -o 'loaded a snapshot into the local redis.*took=[0-9.a-z]*' "$N4/raftproxy.log" || true) | tail -1 | sed 's/.*took=//')
sender_rss="$(rss "$sender_pid") (RSS before shipping: $sender_before MiB)"
receiver_rss=$(rss "$(cat "$N4/raftproxy.pid")")

# Restart of the new node: newest snapshot into redis, then the log tail.
kill "$(cat "$N4/raftproxy.pid")"; sleep 0.5
t0=$(ms)
start4
serving "$keys"
restart_ms=$(( $(ms) - t0 ))

out=$(mktemp)
cat >"$out" <<MSG
# raftproxy snapshot benchmark $(date -u +%Y-%m-%dT%H:%MZ)

Machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; redis $(redis-server --version | awk '{print $3}')
Dataset: $keys keys of $VALUE bytes (filled in $fill ms through raft); RDB $((size / 1024 / 1024)) MiB

| step | time |
|---|---|
| make (RAFT.DEBUG COMPACT: BGSAVE, verify, store, compact) | ${make_ms} ms |
| new node joins until it serves all keys (ship + load) | ${join_ms} ms |
| of which loading into its redis (as its master) | ${load_took} |
| restart of that node until it serves all keys | ${restart_ms} ms |

Peak RSS (VmHWM) of the proxies: sender (leader) $sender_rss, receiver $receiver_rss.
MSG
cat "$out"
mkdir -p bench/results
cp "$out" "bench/results/snapshot-${SNAP_MIB}MiB-$(date -u +%Y%m%d-%H%M%S).md"
rm -f "$out"
