#!/usr/bin/env bash
# Sharded clusters side by side: 3 raftproxy nodes (each starting its own
# redis-servers) with 1, 3 and 8 shards, and a stock redis-server, measured
# in the same run. For each: SET throughput with redis-benchmark (--cluster
# for several shards) at 50 and 150 clients, the CPU time per SET of every
# process (proxies and their redis-servers, from /proc), and the CPU the
# cluster uses idle. Prints a markdown section; asserts nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-60000}
SHARD_COUNTS=${SHARD_COUNTS:-"1 3 8"}
IDLE_SECONDS=${IDLE_SECONDS:-5}
IDLE_SETTLE=${IDLE_SETTLE:-3}  # idle groups quiesce after an election timeout
NODE_FLAGS=${NODE_FLAGS:-}     # more raftproxy flags, e.g. --quiesce=false
BASE=${BASE:-17000}   # node i listens on BASE + SPAN*i (and the ports above, one per shard)
SPAN=${SPAN:-100}     # more than the most shards measured
PEER=${PEER:-17600}
STOCK=${STOCK:-16390}
BIN=${RAFTPROXY_BIN:-bin/raftproxy} # another build to measure
DIR=$(mktemp -d /tmp/raftproxy-bench-shards-XXXXXX)
pids=()

stop_nodes() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
}
cleanup() {
  stop_nodes
  redis-cli -p "$STOCK" shutdown nosave >/dev/null 2>&1 || true
  rm -rf "$DIR"
}
trap cleanup EXIT

# cpu_ticks pid... -> user+system ticks of the processes and their children
# (a node's redis-servers are its children).
cpu_ticks() {
  local total=0 p c
  for p in "$@"; do
    for c in $p $(pgrep -P "$p" || true); do
      total=$((total + $(awk '{print $14+$15}' "/proc/$c/stat" 2>/dev/null || echo 0)))
    done
  done
  echo "$total"
}
rps() { # port cluster-flag clients -> SET requests per second
  redis-benchmark $2 -p "$1" -t set -n "$N" -c "$3" -P 1 -r 1000000 -q 2>/dev/null | tr '\r' '\n' |
    grep -E '^SET: [0-9.]+ requests' | tail -1 | awk '{print $2}'
}
measure() { # port cluster-flag clients pid... -> "rps cpu_us_per_set"
  local port=$1 flag=$2 clients=$3
  shift 3
  local t0 t1 r
  t0=$(cpu_ticks "$@")
  r=$(rps "$port" "$flag" "$clients")
  t1=$(cpu_ticks "$@")
  awk -v r="$r" -v t="$((t1 - t0))" -v n="$N" 'BEGIN { printf "%.0f %.1f", r, t * 10000 / n }'
}

start_cluster() { # shards
  local shards=$1 i
  for i in 1 2 3; do
    "$BIN" --listen 127.0.0.1:$((BASE + SPAN * i)) --peer-listen 127.0.0.1:$((PEER + i)) \
      --data-dir "$DIR/s$shards-n$i" --log-level error $NODE_FLAGS >"$DIR/s$shards-n$i.log" 2>&1 &
    pids+=($!)
  done
  for i in 1 2 3; do
    until redis-cli -p $((BASE + SPAN * i)) PING >/dev/null 2>&1; do sleep 0.1; done
  done
  if [ "$shards" -gt 1 ]; then
    redis-cli -p $((BASE + SPAN)) RAFT.CLUSTER INIT SHARDS "$shards" >/dev/null
  else
    redis-cli -p $((BASE + SPAN)) RAFT.CLUSTER INIT >/dev/null
  fi
  until redis-cli -p $((BASE + SPAN)) RAFT.INFO | grep -q '^role:leader'; do sleep 0.1; done
  for i in 2 3; do redis-cli -p $((BASE + SPAN * i)) RAFT.CLUSTER JOIN 127.0.0.1:$((BASE + SPAN)) >/dev/null; done
  # The leaders spread over the nodes within seconds (a node leading more
  # than its share hands one over every 2-3 s).
  local want=$(( shards < 3 ? shards : 3 )) _ most
  for _ in $(seq 120); do
    # The most shards one node leads: at most ceil(shards / 3) once spread.
    most=$(redis-cli --json -p $((BASE + SPAN)) RAFT.SHARD LIST | python3 -c '
import collections, json, sys
rows = json.load(sys.stdin)
print(max(collections.Counter(r[3] for r in rows).values()) if all(r[3] for r in rows) else 99)')
    [ "$most" -le $(( (shards + 2) / 3 )) ] && break
    sleep 0.5
  done
}

redis-server --port "$STOCK" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes --logfile /dev/null
until redis-cli -p "$STOCK" PING >/dev/null 2>&1; do sleep 0.1; done
stock_pid=$(redis-cli -p "$STOCK" INFO server | awk -F: '/^process_id/ {print $2}' | tr -d '\r')
read -r s50 c50 <<<"$(measure "$STOCK" "" 50 "$stock_pid")"
read -r s150 c150 <<<"$(measure "$STOCK" "" 150 "$stock_pid")"

echo "## Shards: 3 nodes, SET, ${N} requests (requests/s, CPU µs per SET of every process; ratios to stock redis)"
echo
echo "Every node holds every shard, each on its own port with its own redis-server; clients use"
echo "redis-benchmark --cluster when there are several shards. Idle: the CPU the whole cluster uses"
echo "with no client, over ${IDLE_SECONDS}s starting ${IDLE_SETTLE}s after the load, in % of one core${NODE_FLAGS:+ (flags: $NODE_FLAGS)}."
echo
echo "| setup | SET c50 | CPU/SET c50 | SET c150 | CPU/SET c150 | idle |"
echo "|---|---|---|---|---|---|"
printf '| stock redis | %s | %s µs | %s | %s µs | |\n' "$s50" "$c50" "$s150" "$c150"
for shards in $SHARD_COUNTS; do
  start_cluster "$shards"
  flag=""
  [ "$shards" -gt 1 ] && flag="--cluster"
  read -r r50 u50 <<<"$(measure $((BASE + SPAN)) "$flag" 50 "${pids[@]}")"
  read -r r150 u150 <<<"$(measure $((BASE + SPAN)) "$flag" 150 "${pids[@]}")"
  sleep "$IDLE_SETTLE"
  t0=$(cpu_ticks "${pids[@]}")
  sleep "$IDLE_SECONDS"
  t1=$(cpu_ticks "${pids[@]}")
  idle=$(awk -v t="$((t1 - t0))" -v s="$IDLE_SECONDS" 'BEGIN { printf "%.1f%%", t / s }')
  awk -v n="$shards" -v r50="$r50" -v u50="$u50" -v r150="$r150" -v u150="$u150" -v s50="$s50" -v c50="$c50" \
    -v s150="$s150" -v c150="$c150" -v idle="$idle" 'BEGIN {
      printf "| raftproxy, %d shard%s | %d (%.2fx) | %.1f µs (%.1fx) | %d (%.2fx) | %.1f µs (%.1fx) | %s |\n",
        n, (n > 1 ? "s" : ""), r50, r50 / s50, u50, u50 / c50, r150, r150 / s150, u150, u150 / c150, idle }'
  stop_nodes
done
