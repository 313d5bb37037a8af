#!/usr/bin/env bash
# CPU time per operation of every server process, for SET and GET at 50
# clients without pipelining (redis-benchmark), on stock redis and on a
# local 3-node raftproxy cluster, in the same run: what each operation costs
# the machine. CPU is user+system time from /proc/PID/stat, all threads.
# Benchmarks measure; nothing here asserts a number.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-100000}
CLIENTS=${CLIENTS:-50}
PIPELINE=${PIPELINE:-1}
export RUN_DIR=.run-benchcpu CLIENT_BASE=17500 PEER_BASE=17600 REDIS_BASE=16500 METRICS_BASE=17700
STOCK=16479
HZ=$(getconf CLK_TCK)

cleanup() {
  scripts/cluster.sh stop >/dev/null 2>&1 || true
  redis-cli -p $STOCK shutdown nosave >/dev/null 2>&1 || true
  rm -rf "$RUN_DIR"
}
trap cleanup EXIT
cleanup
redis-server --port $STOCK --bind 127.0.0.1 --save "" --appendonly no --daemonize yes --logfile /dev/null
scripts/cluster.sh start >/dev/null
for _ in $(seq 50); do redis-cli -p $STOCK PING >/dev/null 2>&1 && break; sleep 0.1; done
stock_pid=$(redis-cli -p $STOCK INFO server | tr -d '\r' | awk -F: '$1 == "process_id" {print $2}')
leader="" lnode=""
for i in 1 2 3; do
  p=$((CLIENT_BASE + i))
  if redis-cli -p $p RAFT.INFO | grep -q '^role:leader'; then leader=$p lnode=$i; fi
done
others=""
for i in 1 2 3; do [ "$i" != "$lnode" ] && others="$others $i"; done
set -- $others
f1=$1 f2=$2
# Clients of the follower rows connect to follower A.
fnode=$f1 follower=$((CLIENT_BASE + f1))

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# Read- and write-type system calls a process made (read, recvfrom, write,
# sendto, ...): the floor for a proxy at P1 is one of each per request.
sysrw() { awk '$1 == "syscr:" || $1 == "syscw:" {n += $2} END {print n}' "/proc/$1/io"; }
perop() { awk -v a="$1" -v b="$2" -v n="$N" 'BEGIN {printf "%.2f", (b - a) / n}'; }
metric() { curl -s "http://127.0.0.1:$((METRICS_BASE + $1))/metrics" | awk -v m="$2" '$1 == m {print $2}'; }
us() { awk -v a="$1" -v b="$2" -v hz="$HZ" -v n="$N" 'BEGIN {printf "%.1f", (b - a) * 1e6 / hz / n}'; }
rps() { tr '\r' '\n' | grep -E "^(SET|GET): [0-9.]+ requests" | tail -1 | awk '{print $2}'; }

echo "# CPU per operation $(date -u +%Y-%m-%dT%H:%MZ)"
echo
echo "redis-benchmark -c $CLIENTS -P $PIPELINE -n $N -r 100000; $(nproc) cores; CPU = user+system of each process over the run, µs per operation. Leader and followers are raftproxy processes; 'redis' is the sum of the three redis-servers behind them."
echo
echo "| setup | test | ops/s | leader proxy | follower proxy A | follower proxy B | redis (3) | total | × stock | requests/entry | reads/round | r/w syscalls per op: serving process, follower A |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
declare -A stockTotal
for t in set get; do
  a=$(ticks "$stock_pid") sa=$(sysrw "$stock_pid")
  r=$(redis-benchmark -p $STOCK -t $t -n "$N" -c "$CLIENTS" -P "$PIPELINE" -r 100000 -q 2>/dev/null | rps)
  b=$(ticks "$stock_pid") sb=$(sysrw "$stock_pid")
  stockTotal[$t]=$(us "$a" "$b")
  echo "| stock redis | ${t^^} | $r | | | | ${stockTotal[$t]} | ${stockTotal[$t]} | 1.00x | | | $(perop "$sa" "$sb") |"
done
pids() { for i in $lnode $f1 $f2; do echo "$(cat "$RUN_DIR/node$i/raftproxy.pid") $(cat "$RUN_DIR/node$i/redis.pid")"; done; }
for via in leader follower; do
  port=$leader
  [ $via = follower ] && port=$follower
  for t in set get; do
    read -r lp lr f1p f1r f2p f2r <<<"$(pids | tr '\n' ' ')"
    before=$(for p in $lp $f1p $f2p $lr $f1r $f2r; do ticks "$p"; done | tr '\n' ' ')
    sp=$lp
    [ $via = follower ] && sp=$f1p
    sys0=$(sysrw "$sp") fsys0=$(sysrw "$f1p")
    req0=$(metric "$lnode" raftproxy_proposed_requests_total) ent0=$(metric "$lnode" raftproxy_proposed_entries_total)
    rd0=$(metric "$lnode" raftproxy_reads_total) rr0=$(metric "$lnode" raftproxy_read_index_rounds_total)
    if [ $via = follower ]; then
      rd0=$(metric "$fnode" raftproxy_reads_total) rr0=$(metric "$fnode" raftproxy_read_index_rounds_total)
    fi
    r=$(redis-benchmark -p "$port" -t $t -n "$N" -c "$CLIENTS" -P "$PIPELINE" -r 100000 -q 2>/dev/null | rps)
    after=$(for p in $lp $f1p $f2p $lr $f1r $f2r; do ticks "$p"; done | tr '\n' ' ')
    sys1=$(sysrw "$sp") fsys1=$(sysrw "$f1p")
    req1=$(metric "$lnode" raftproxy_proposed_requests_total) ent1=$(metric "$lnode" raftproxy_proposed_entries_total)
    rd1=$(metric "$lnode" raftproxy_reads_total) rr1=$(metric "$lnode" raftproxy_read_index_rounds_total)
    if [ $via = follower ]; then
      rd1=$(metric "$fnode" raftproxy_reads_total) rr1=$(metric "$fnode" raftproxy_read_index_rounds_total)
    fi
    read -r b1 b2 b3 b4 b5 b6 <<<"$before"
    read -r a1 a2 a3 a4 a5 a6 <<<"$after"
    redis=$(awk -v x="$(us "$b4" "$a4")" -v y="$(us "$b5" "$a5")" -v z="$(us "$b6" "$a6")" 'BEGIN {printf "%.1f", x + y + z}')
    total=$(awk -v l="$(us "$b1" "$a1")" -v f="$(us "$b2" "$a2")" -v g="$(us "$b3" "$a3")" -v r="$redis" 'BEGIN {printf "%.1f", l + f + g + r}')
    per() { awk -v a="$1" -v b="$2" -v c="$3" -v d="$4" 'BEGIN { if (d - c > 0) printf "%.1f", (b - a) / (d - c); else print "-" }'; }
    note="via $via"
    [ $via = follower ] && note="via follower (A)"
    echo "| raftproxy 3 nodes, $note | ${t^^} | $r | $(us "$b1" "$a1") | $(us "$b2" "$a2") | $(us "$b3" "$a3") | $redis | $total | $(awk -v a="$total" -v b="${stockTotal[$t]}" 'BEGIN {printf "%.1fx", a / b}') | $(per "$req0" "$req1" "$ent0" "$ent1") | $(per "$rd0" "$rd1" "$rr0" "$rr1") | $(perop "$sys0" "$sys1"), $(perop "$fsys0" "$fsys1") |"
  done
done
echo
echo "Proxy RSS after the run: $(for i in 1 2 3; do awk '/VmRSS/ {printf "%d MiB ", $2/1024}' "/proc/$(cat "$RUN_DIR/node$i/raftproxy.pid")/status"; done)"
