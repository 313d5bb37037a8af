#!/usr/bin/env bash
# Runs a write load that never stops against a local 3-node cluster for
# SOAK_SECONDS (default 300) and samples, every 15 s, each node's data dir
# size, WAL segment count, snapshot count and proxy RSS. Disk and memory must
# level off: snapshots compact the log and old WAL segments and snapshots
# are purged. Saves the table under bench/results/.
set -euo pipefail
cd "$(dirname "$0")/.."
SOAK_SECONDS=${SOAK_SECONDS:-300}
export RUN_DIR=.run-soak CLIENT_BASE=19000 PEER_BASE=19100 REDIS_BASE=18400
cleanup() {
  pkill -f "redis-benchmark -p $((CLIENT_BASE + 1))" 2>/dev/null || true
  scripts/cluster.sh stop >/dev/null 2>&1 || true
  rm -rf "$RUN_DIR"
}
trap cleanup EXIT
cleanup
scripts/cluster.sh start >/dev/null
# Overwrites within a bounded key space: redis's data stays the same size,
# so everything that grows is raftproxy's.
( while :; do redis-benchmark -p $((CLIENT_BASE + 1)) -t set -n 1000000 -r 100000 -d 200 -c 20 -P 8 -q >/dev/null 2>&1 || sleep 1; done ) &
out=$(mktemp)
{
  echo "# raftproxy soak $(date -u +%Y-%m-%dT%H:%MZ): ${SOAK_SECONDS}s of SET -d 200 -r 100000 -P 8 -c 20"
  echo
  echo "| t (s) | node | data dir (MiB) | wal segments | snapshots | proxy RSS (MiB) | applied |"
  echo "|---|---|---|---|---|---|---|"
} >"$out"
start=$(date +%s)
while [ $(( $(date +%s) - start )) -lt "$SOAK_SECONDS" ]; do
  sleep 15
  t=$(( $(date +%s) - start ))
  for i in 1 2 3; do
    d="$RUN_DIR/node$i"
    du=$(du -sm "$d/data" | awk '{print $1}')
    wals=$(ls "$d/data/wal" | grep -c '\.wal$' || true)
    snaps=$(ls "$d/data/snap" 2>/dev/null | grep -c '\.rdb$' || true)
    rss=$(awk '/VmRSS/ {print int($2/1024)}' "/proc/$(cat "$d/raftproxy.pid")/status")
    applied=$(redis-cli -p $((CLIENT_BASE + i)) RAFT.INFO | tr -d '\r' | awk -F: '/^last_applied_index/ {print $2}')
    echo "| $t | node$i | $du | $wals | $snaps | $rss | $applied |" >>"$out"
  done
done
cat "$out"
mkdir -p bench/results
cp "$out" "bench/results/soak-$(date -u +%Y%m%d-%H%M%S).md"
rm -f "$out"
