#!/usr/bin/env bash
# Side-by-side throughput and latency of stock redis-server setups and a
# local 3-node raftproxy cluster (fsync on, linearizable reads), all measured
# in the same run on this machine. Prints one report and saves it under
# bench/results/. Benchmarks measure; nothing here asserts a number.
#
# Rows:
#   stock redis, no persistence      the reference every ratio is taken to
#   stock redis, appendfsync always  what durability costs redis itself
#   Go TCP forwarder -> stock redis  the cheapest possible proxy in Go: what
#                                    any process between client and redis costs
#   raftproxy 3 nodes, via leader / via follower
# then raftbench latency workloads, then scripts/bench-cpu.sh's CPU time per
# operation of each process.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-100000}          # requests per redis-benchmark test
CLIENTS=${CLIENTS:-50}
SECONDS_PER=${SECONDS_PER:-5} # seconds per raftbench workload
export RUN_DIR=.run-bench CLIENT_BASE=17000 PEER_BASE=17100 REDIS_BASE=16400 METRICS_BASE=17200
STOCK=16379 FSYNC=16380 FORWARD=16381
FWD_PID=""

cleanup() {
  [ -n "$FWD_PID" ] && kill "$FWD_PID" 2>/dev/null || true
  scripts/cluster.sh stop >/dev/null 2>&1 || true
  for p in $STOCK $FSYNC; do redis-cli -p $p shutdown nosave >/dev/null 2>&1 || true; done
  rm -rf "$RUN_DIR"
}
trap cleanup EXIT
cleanup
mkdir -p "$RUN_DIR/fsync"
redis-server --port $STOCK --bind 127.0.0.1 --save "" --appendonly no --daemonize yes --logfile /dev/null
redis-server --port $FSYNC --bind 127.0.0.1 --save "" --appendonly yes --appendfsync always \
  --dir "$PWD/$RUN_DIR/fsync" --daemonize yes --logfile /dev/null
bin/raftbench forward -listen 127.0.0.1:$FORWARD -to 127.0.0.1:$STOCK &
FWD_PID=$!
scripts/cluster.sh start >/dev/null
leader="" follower="" lnode=""
for i in 1 2 3; do
  p=$((CLIENT_BASE + i))
  if redis-cli -p $p RAFT.INFO | grep -q '^role:leader'; then leader=$p lnode=$i; else follower=$p; fi
done
for p in $STOCK $FSYNC $FORWARD; do
  for _ in $(seq 50); do redis-cli -p $p PING >/dev/null 2>&1 && break; sleep 0.1; done
done

metric() { # node name -> value of a raftproxy counter on that node
  curl -s "http://127.0.0.1:$((METRICS_BASE + $1))/metrics" | awk -v m="$2" '$1 == m {print $2}'
}
rss() { awk '/VmRSS/ {print int($2/1024)}' "/proc/$(cat "$RUN_DIR/node$1/raftproxy.pid")/status"; }
fsyncs_per_sec() { # one 4 KiB write + fdatasync per op, like a WAL append
  local f="$RUN_DIR/fsync-probe" out
  out=$(dd if=/dev/zero of="$f" bs=4k count=1000 oflag=dsync 2>&1 | awk '/copied/ {print $(NF-3)}')
  rm -f "$f"
  awk -v s="$out" 'BEGIN { if (s > 0) printf "%.0f", 1000 / s; else print "?" }'
}

out=$(mktemp)
batch0=$(metric "$lnode" raftproxy_proposed_requests_total) ent0=$(metric "$lnode" raftproxy_proposed_entries_total)
reads0=$(metric "$lnode" raftproxy_reads_total) rounds0=$(metric "$lnode" raftproxy_read_index_rounds_total)
{
  echo "# raftproxy benchmark $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo "Machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -sr), disk ~$(fsyncs_per_sec) fsyncs/s" \
    "(4 KiB dd oflag=dsync); redis $(redis-server --version | awk '{print $3}' | cut -d= -f2), $(go version | awk '{print $3}')." \
    "Everything runs on 127.0.0.1 and shares the cores: each raftproxy row runs 3 proxies, 3 redis-servers and the client."
  echo
  echo "## redis-benchmark, $CLIENTS clients, -n $N, random keys from 100000 (requests/s and ratio to stock redis)"
  echo
  echo "| setup | SET P1 | SET P16 | GET P1 | GET P16 |"
  echo "|---|---|---|---|---|"
} >"$out"
rps() { # port test pipeline -> requests per second
  redis-benchmark -p "$1" -t "$2" -n "$N" -c "$CLIENTS" -P "$3" -r 100000 -q 2>/dev/null | tr '\r' '\n' |
    grep -E "^$(echo "$2" | tr a-z A-Z): [0-9.]+ requests" | tail -1 | awk '{print $2}'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "") print "failed"; else if (b > 0) printf "%.0f (%.2fx)", a, a / b; else printf "%.0f", a }'; }
declare -A base
row() { # name port
  local s1 s16 g1 g16
  s1=$(rps "$2" set 1); s16=$(rps "$2" set 16); g1=$(rps "$2" get 1); g16=$(rps "$2" get 16)
  if [ -z "${base[s1]:-}" ]; then base=([s1]=$s1 [s16]=$s16 [g1]=$g1 [g16]=$g16); fi
  echo "| $1 | $(ratio "$s1" "${base[s1]}") | $(ratio "$s16" "${base[s16]}") | $(ratio "$g1" "${base[g1]}") | $(ratio "$g16" "${base[g16]}") |" >>"$out"
}
row "stock redis, no persistence" $STOCK
row "stock redis, appendfsync always" $FSYNC
row "Go TCP forwarder -> stock redis" $FORWARD
row "raftproxy 3 nodes, via leader" "$leader"
row "raftproxy 3 nodes, via follower" "$follower"

# raftbench: latency histograms, one client and many, mixed and multi-key.
load() { # port workload clients pipeline -> "ops p50 p99"
  bin/raftbench load -addr "127.0.0.1:$1" -workload "$2" -clients "$3" -pipeline "$4" -duration "${SECONDS_PER}s" -json |
    python3 -c 'import json,sys; r=json.load(sys.stdin); print("%.0f %.3f %.3f %d" % (r["ops_per_sec"], r["p50_ms"], r["p99_ms"], r["errors"]))'
}
{
  echo
  echo "## raftbench, ${SECONDS_PER}s per workload (ops/s, latency p50 / p99 in ms; ratio of ops/s to stock redis)"
  echo
  echo "mixed: 80% GET / 20% SET; mset/mget: 10 keys per command; tx: MULTI SET INCR EXEC (one op);" \
    "cache: 80% GET / 20% SET ... PX 60000 (every key has a deadline: expiry by the log's time at work)."
  echo
  echo "| workload | clients | pipeline | stock redis | raftproxy via leader | ratio | raftproxy via follower | ratio |"
  echo "|---|---|---|---|---|---|---|---|"
} >>"$out"
for w in "set 1 1" "get 1 1" "set 50 1" "get 50 1" "mixed 50 1" "mixed 50 16" "mset 50 1" "mget 50 1" "incr 50 1" "tx 50 1" "cache 50 1"; do
  set -- $w
  read -r so sp50 sp99 _ <<<"$(load $STOCK "$1" "$2" "$3")"
  read -r lo lp50 lp99 lerr <<<"$(load "$leader" "$1" "$2" "$3")"
  read -r fo fp50 fp99 ferr <<<"$(load "$follower" "$1" "$2" "$3")"
  errs=""
  [ "$lerr$ferr" != "00" ] && errs=" (errors: leader $lerr, follower $ferr)"
  echo "| $1$errs | $2 | $3 | $so ($sp50 / $sp99) | $lo ($lp50 / $lp99) | $(awk -v a="$lo" -v b="$so" 'BEGIN {printf "%.2fx", a/b}') | $fo ($fp50 / $fp99) | $(awk -v a="$fo" -v b="$so" 'BEGIN {printf "%.2fx", a/b}') |" >>"$out"
done

batch1=$(metric "$lnode" raftproxy_proposed_requests_total) ent1=$(metric "$lnode" raftproxy_proposed_entries_total)
reads1=$(metric "$lnode" raftproxy_reads_total) rounds1=$(metric "$lnode" raftproxy_read_index_rounds_total)
{
  echo
  echo "Batching on the leader over the whole run: $(awk -v a="$batch1" -v b="$batch0" -v c="$ent1" -v d="$ent0" 'BEGIN {printf "%.1f", (a-b)/(c-d)}') requests per log entry," \
    "$(awk -v a="$reads1" -v b="$reads0" -v c="$rounds1" -v d="$rounds0" 'BEGIN {printf "%.1f", (a-b)/(c-d)}') reads per ReadIndex round." \
    "Proxy RSS after the run: $(rss 1), $(rss 2), $(rss 3) MiB."
} >>"$out"
# CPU per operation of each process, on a cluster of its own once this
# one is stopped (nothing else then competes for the cores).
cleanup
{
  echo
  scripts/bench-cpu.sh | sed 's/^# CPU per operation.*/## CPU per operation, per process/'
} >>"$out"
cat "$out"
mkdir -p bench/results
cp "$out" "bench/results/$(date -u +%Y%m%d-%H%M%S).md"
rm -f "$out"
