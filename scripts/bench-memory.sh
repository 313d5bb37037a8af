#!/usr/bin/env bash
# Proxy memory under load with 1M keys in redis: fills a local 3-node
# cluster with 1,000,000 keys through the leader, then runs 50 clients of
# mixed load (80% GET / 20% SET over the same keys) for MEMORY_SECONDS
# (default 600) and samples each proxy's RSS and Go heap every 30 s. RSS
# must level off. Saves the table under bench/results/.
set -euo pipefail
cd "$(dirname "$0")/.."
MEMORY_SECONDS=${MEMORY_SECONDS:-600}
KEYS=${KEYS:-1000000}
export RUN_DIR=.run-memory CLIENT_BASE=20000 PEER_BASE=20100 REDIS_BASE=20400 METRICS_BASE=20200
LOAD_PID=""
cleanup() {
  [ -n "$LOAD_PID" ] && kill "$LOAD_PID" 2>/dev/null || true
  scripts/cluster.sh stop >/dev/null 2>&1 || true
  rm -rf "$RUN_DIR"
}
trap cleanup EXIT
cleanup
scripts/cluster.sh start >/dev/null
leader=""
for i in 1 2 3; do
  redis-cli -p $((CLIENT_BASE + i)) RAFT.INFO | grep -q '^role:leader' && leader=$((CLIENT_BASE + i))
done
fill=$(bin/raftbench fill -addr "127.0.0.1:$leader" -keys "$KEYS" -value 100)
bin/raftbench load -addr "127.0.0.1:$leader" -workload mixed -clients 50 -keys "$KEYS" -duration "${MEMORY_SECONDS}s" >"$RUN_DIR/load.out" 2>&1 &
LOAD_PID=$!
out=$(mktemp)
{
  echo "# raftproxy memory $(date -u +%Y-%m-%dT%H:%MZ): $KEYS keys of 100 bytes, then ${MEMORY_SECONDS}s of mixed load (50 clients, 80% GET / 20% SET) via the leader"
  echo
  echo "Fill: $fill"
  echo
  echo "| t (s) | node1 RSS / heap (MiB) | node2 RSS / heap (MiB) | node3 RSS / heap (MiB) | keys in node1's redis |"
  echo "|---|---|---|---|---|"
} >"$out"
sample() {
  local line="| $1 |"
  for i in 1 2 3; do
    rss=$(awk '/VmRSS/ {print int($2/1024)}' "/proc/$(cat "$RUN_DIR/node$i/raftproxy.pid")/status")
    heap=$(curl -s "http://127.0.0.1:$((METRICS_BASE + i))/metrics" | awk '$1 == "go_memstats_heap_inuse_bytes" {printf "%d", $2/1048576}')
    line="$line $rss / $heap |"
  done
  echo "$line $(redis-cli -p $((REDIS_BASE + 1)) DBSIZE) |" >>"$out"
}
start=$(date +%s)
sample 0
while kill -0 "$LOAD_PID" 2>/dev/null; do
  sleep 30
  sample $(( $(date +%s) - start ))
done
wait "$LOAD_PID" || true
{ echo; echo "Load: $(cat "$RUN_DIR/load.out")"; } >>"$out"
cat "$out"
mkdir -p bench/results
cp "$out" "bench/results/memory-$(date -u +%Y%m%d-%H%M%S).md"
rm -f "$out"
