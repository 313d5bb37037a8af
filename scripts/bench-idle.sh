#!/usr/bin/env bash
# An idle sharded cluster: 3 raftproxy nodes (each starting its own
# redis-servers) with SHARDS shards, left alone for SETTLE seconds (the
# groups quiesce, the redis health checks back off), then the CPU of the
# proxies and of their redis-servers over WINDOW seconds, from each
# thread's schedstat, in % of one core. RUNS rounds; with BIN_B set the
# rounds alternate between RAFTPROXY_BIN and BIN_B, to compare two builds
# in the same hours. KEYS=n writes n keys with a deadline a day away over
# the shards first (idle data with deadlines, as a cache holds). Asserts
# nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARDS=${SHARDS:-64}
SETTLE=${SETTLE:-150}
WINDOW=${WINDOW:-30}
RUNS=${RUNS:-1}
KEYS=${KEYS:-0}
BIN_A=${RAFTPROXY_BIN:-bin/raftproxy}
BIN_B=${BIN_B:-}
BASE=${BASE:-17000} # node i listens on BASE + SPAN*i and the ports above, one per shard
SPAN=${SPAN:-100}
PEER=${PEER:-17600}
DIR=$(mktemp -d /tmp/raftproxy-bench-idle-XXXXXX)
pids=()

stop_nodes() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
}
trap 'stop_nodes; rm -rf "$DIR"' EXIT

# cpu_ns pid... -> nanoseconds on CPU of every thread of the processes
cpu_ns() {
  local t=0 p f
  for p in "$@"; do
    for f in /proc/"$p"/task/*/schedstat; do
      t=$((t + $(awk '{print $1}' "$f" 2>/dev/null || echo 0)))
    done
  done
  echo "$t"
}

measure() { # binary
  local bin=$1 i
  rm -rf "${DIR:?}"/*
  for i in 1 2 3; do
    "$bin" --listen 127.0.0.1:$((BASE + SPAN * i)) --peer-listen 127.0.0.1:$((PEER + i)) \
      --data-dir "$DIR/n$i" --log-level error >"$DIR/n$i.log" 2>&1 &
    pids+=($!)
  done
  for i in 1 2 3; do
    until redis-cli -p $((BASE + SPAN * i)) PING >/dev/null 2>&1; do sleep 0.1; done
  done
  redis-cli -p $((BASE + SPAN)) RAFT.CLUSTER INIT SHARDS "$SHARDS" >/dev/null
  until redis-cli -p $((BASE + SPAN)) RAFT.INFO | grep -q '^role:leader'; do sleep 0.1; done
  for i in 2 3; do
    redis-cli -p $((BASE + SPAN * i)) RAFT.CLUSTER JOIN 127.0.0.1:$((BASE + SPAN)) >/dev/null
  done
  if [ "$KEYS" -gt 0 ]; then
    seq "$KEYS" | awk '{ print "SET idle:" $1 " v EX 86400" }' | redis-cli -c -p $((BASE + SPAN)) >/dev/null
  fi
  sleep "$SETTLE"
  local kids
  kids=$(for p in "${pids[@]}"; do pgrep -P "$p" -x redis-server || true; done | tr '\n' ' ')
  local a0 b0 a1 b1
  a0=$(cpu_ns "${pids[@]}"); b0=$(cpu_ns $kids)
  sleep "$WINDOW"
  a1=$(cpu_ns "${pids[@]}"); b1=$(cpu_ns $kids)
  awk -v bin="$bin" -v a=$((a1 - a0)) -v b=$((b1 - b0)) -v w="$WINDOW" \
    'BEGIN { printf "| %s | %.2f%% | %.2f%% | %.2f%% |\n", bin, a/w/1e7, b/w/1e7, (a+b)/w/1e7 }'
  stop_nodes
}

echo "## Idle: 3 nodes, $SHARDS shards, $KEYS keys with deadlines, ${SETTLE}s to settle, CPU over ${WINDOW}s (% of one core)"
echo
echo "| build | proxies | redis-servers | total |"
echo "|---|---|---|---|"
for _ in $(seq "$RUNS"); do
  measure "$BIN_A"
  if [ -n "$BIN_B" ]; then measure "$BIN_B"; fi
done
