#!/usr/bin/env bash
# Side-by-side throughput of a stock redis-server and a local 3-node
# raftproxy cluster (fsync on, linearizable reads), measured in the same run
# with redis-benchmark. Prints a table and saves it under bench/results/.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-100000}
CLIENTS=${CLIENTS:-50}
export RUN_DIR=.run-bench CLIENT_BASE=17000 PEER_BASE=17100 REDIS_BASE=16400
STOCK_PORT=16379

cleanup() {
  scripts/cluster.sh stop >/dev/null 2>&1 || true
  redis-cli -p $STOCK_PORT shutdown nosave >/dev/null 2>&1 || true
  rm -rf "$RUN_DIR"
}
trap cleanup EXIT
cleanup
redis-server --port $STOCK_PORT --bind 127.0.0.1 --save "" --appendonly no --daemonize yes --logfile /dev/null
scripts/cluster.sh start >/dev/null
leader="" follower=""
for i in 1 2 3; do
  p=$((CLIENT_BASE + i))
  if redis-cli -p $p RAFT.INFO | grep -q '^role:leader'; then leader=$p; else follower=$p; fi
done

rps() { # port test pipeline -> requests per second
  redis-benchmark -p "$1" -t "$2" -n "$N" -c "$CLIENTS" -P "$3" -r 100000 -q 2>/dev/null | tr '\r' '\n' | grep -E "^$(echo "$2" | tr a-z A-Z): [0-9.]+ requests" | tail -1 | awk '{print $2}'
}
p50() { # port -> SET p50 latency with one client, in ms
  redis-benchmark -p "$1" -t set -n 20000 -c 1 -r 100000 2>/dev/null | tr '\r' '\n' | awk '/50.000% <=/ {print $3; exit}'
}

out=$(mktemp)
{
  echo "# raftproxy benchmark $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo "Machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -sr), $(redis-server --version | awk '{print $3}'); redis-benchmark -n $N -c $CLIENTS -r 100000"
  echo
  echo "| setup | SET P1 | SET P16 | GET P1 | GET P16 | SET p50 1 client (ms) |"
  echo "|---|---|---|---|---|---|"
} >"$out"
declare -A base
row() { # name port
  local s1 s16 g1 g16 lat
  s1=$(rps "$2" set 1); s16=$(rps "$2" set 16); g1=$(rps "$2" get 1); g16=$(rps "$2" get 16); lat=$(p50 "$2")
  if [ -z "${base[s1]:-}" ]; then base=([s1]=$s1 [s16]=$s16 [g1]=$g1 [g16]=$g16); fi
  r() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.0f (%.2fx)", a, a / b; else print a }'; }
  echo "| $1 | $(r "$s1" "${base[s1]}") | $(r "$s16" "${base[s16]}") | $(r "$g1" "${base[g1]}") | $(r "$g16" "${base[g16]}") | $lat |" >>"$out"
}
row "stock redis, no persistence" $STOCK_PORT
row "raftproxy 3 nodes, via leader" "$leader"
row "raftproxy 3 nodes, via follower" "$follower"
cat "$out"
mkdir -p bench/results
cp "$out" "bench/results/$(date -u +%Y%m%d-%H%M%S).md"
rm -f "$out"
