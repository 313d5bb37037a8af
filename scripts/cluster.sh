#!/usr/bin/env bash
# A local 3-node raftproxy cluster on 127.0.0.1, each node a stock
# redis-server plus a raftproxy in front of it. All state lives in $RUN_DIR.
#   scripts/cluster.sh start   build-free start (expects bin/raftproxy); idempotent
#   scripts/cluster.sh stop    stops every process it started
#   scripts/cluster.sh status  RAFT.INFO of each node
set -euo pipefail
cd "$(dirname "$0")/.."
RUN_DIR=${RUN_DIR:-.run}
# abs names a path under RUN_DIR for processes that do not run here.
abs() { case "$1" in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }
BIN=${BIN:-bin/raftproxy}
NODES=(1 2 3)
CLIENT_BASE=${CLIENT_BASE:-7000}
PEER_BASE=${PEER_BASE:-7100}
REDIS_BASE=${REDIS_BASE:-6400}
METRICS_BASE=${METRICS_BASE:-7200}
# SHARDS=n (n >= 2) makes a sharded cluster (README, "Sharding"): each node
# serves shard k on its client port + k and starts its shards'
# redis-servers itself, so node i listens on CLIENT_BASE + 1 + 10 (i - 1)
# and up, for at most 10 shards. The layout is the data's: it is kept in
# RUN_DIR and later starts follow it.
SHARDS=${SHARDS:-0}
if [ -f "$RUN_DIR/shards" ]; then
  kept=$(cat "$RUN_DIR/shards")
  if [ "$SHARDS" != 0 ] && [ "$SHARDS" != "$kept" ]; then
    echo "$RUN_DIR holds a cluster made with SHARDS=$kept; make clean first to make another" >&2
    exit 1
  fi
  SHARDS=$kept
fi
case "$SHARDS" in
  0 | 1) SHARDS=0 ;;
  [2-9] | 10) ;;
  *) echo "SHARDS must be 2 to 10 (or 0 for one group), not $SHARDS" >&2; exit 2 ;;
esac
sharded() { [ "$SHARDS" -ge 2 ]; }
client_port() { if sharded; then echo $((CLIENT_BASE + 1 + 10 * ($1 - 1))); else echo $((CLIENT_BASE + $1)); fi; }
peer_port() { echo $((PEER_BASE + $1)); }
redis_port() { echo $((REDIS_BASE + $1)); }
metrics_port() { echo $((METRICS_BASE + $1)); }

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# start_redis runs node $1's redis-server under a loop that starts it again
# when it exits, as a container's restart policy or systemd's Restart=
# would: raftproxy shuts its redis down (SHUTDOWN NOSAVE) to kill a script
# that had written, and rebuilds it from the log once it is back.
start_redis() {
  local i=$1 d="$RUN_DIR/node$1"
  rm -f "$d/redis.stop"
  nohup bash -c 'while [ ! -f "$0/redis.stop" ]; do
      redis-server --port "$1" --bind 127.0.0.1 --save "" --appendonly no --dir "$0/redis" \
        --daemonize no --pidfile "$0/redis.pid" --logfile "$0/redis.log"
      sleep 0.2
    done' "$(abs "$d")" "$(redis_port "$i")" >/dev/null 2>&1 &
  echo $! >"$d/redis-loop.pid"
}

# stop_pid sends SIGTERM to the process in pid file $1, waits up to $2
# seconds, then sends SIGKILL: a redis-server busy with a script ignores
# SIGTERM.
stop_pid() {
  alive "$1" || { rm -f "$1"; return 0; }
  local pid
  pid=$(cat "$1")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 $(($2 * 10))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    echo "$1: process $pid did not stop within $2 s; killing it" >&2
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$1"
}

wait_port() {
  for _ in $(seq 1 100); do
    redis-cli -p "$1" PING >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "nothing answers on port $1; see $RUN_DIR/*.log" >&2
  return 1
}

# in_use reports whether something already accepts connections on port $1.
in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# check_ports fails at once, naming the port, when a port a node is about
# to listen on is taken by a process this script did not start.
check_ports() {
  local i d busy=0
  for i in "${NODES[@]}"; do
    d="$RUN_DIR/node$i"
    if ! sharded && ! alive "$d/redis-loop.pid" && in_use "$(redis_port "$i")"; then
      echo "port $(redis_port "$i") (node$i's redis-server) is in use by another process; stop it or set REDIS_BASE" >&2
      busy=1
    fi
    if ! alive "$d/raftproxy.pid"; then
      local ports=("$(client_port "$i"):client:CLIENT_BASE" "$(peer_port "$i"):peer:PEER_BASE" "$(metrics_port "$i"):metrics:METRICS_BASE") k
      if sharded; then
        for ((k = 1; k < SHARDS; k++)); do ports+=("$(($(client_port "$i") + k)):shard $k client:CLIENT_BASE"); done
      fi
      for p in "${ports[@]}"; do
        IFS=: read -r port what var <<<"$p"
        if in_use "$port"; then
          echo "port $port (node$i's $what port) is in use by another process; stop it or set $var" >&2
          busy=1
        fi
      done
    fi
  done
  return $busy
}

# cluster_cmd runs a RAFT.CLUSTER command on node $1 and fails, showing the
# reply and where the node's log is, unless it answers OK.
cluster_cmd() {
  local i=$1 out
  shift
  out=$(redis-cli -p "$(client_port "$i")" "$@" 2>&1 | tr -d '\r')
  case "$out" in
    OK*) echo "node$i: $* -> $out" ;;
    *) echo "node$i: $* failed: $out (see $RUN_DIR/node$i/raftproxy.log)" >&2; return 1 ;;
  esac
}

start() {
  mkdir -p "$RUN_DIR"
  check_ports
  echo "$SHARDS" >"$RUN_DIR/shards"
  for i in "${NODES[@]}"; do
    d="$RUN_DIR/node$i"
    mkdir -p "$d/redis"
    # Sharded, raftproxy runs each shard's redis-server itself (it needs
    # one per shard, under its data dir).
    local redis=(--redis "127.0.0.1:$(redis_port "$i")")
    if sharded; then
      redis=()
    elif ! alive "$d/redis-loop.pid"; then
      start_redis "$i"
    fi
    if ! alive "$d/raftproxy.pid"; then
      nohup "$BIN" --listen "127.0.0.1:$(client_port "$i")" --peer-listen "127.0.0.1:$(peer_port "$i")" \
        --data-dir "$d/data" "${redis[@]}" \
        --metrics-listen "127.0.0.1:$(metrics_port "$i")" --pprof ${RAFTPROXY_ARGS:-} >>"$d/raftproxy.log" 2>&1 &
      echo $! >"$d/raftproxy.pid"
    fi
  done
  for i in "${NODES[@]}"; do
    sharded || wait_port "$(redis_port "$i")"
    wait_port "$(client_port "$i")"
  done
  # Form the cluster once; a node that has a data dir resumes by itself.
  if redis-cli -p "$(client_port 1)" RAFT.INFO | grep -q '^state:uninitialized'; then
    if sharded; then
      cluster_cmd 1 RAFT.CLUSTER INIT SHARDS "$SHARDS"
    else
      cluster_cmd 1 RAFT.CLUSTER INIT
    fi
  fi
  for i in "${NODES[@]:1}"; do
    if redis-cli -p "$(client_port "$i")" RAFT.INFO | grep -q '^state:uninitialized'; then
      cluster_cmd "$i" RAFT.CLUSTER JOIN "127.0.0.1:$(client_port 1)"
    fi
  done
  # Wait for a leader everyone agrees on.
  local led=""
  for _ in $(seq 1 100); do
    if redis-cli -p "$(client_port 1)" RAFT.INFO | grep -Eq '^role:(leader|follower)' &&
       ! redis-cli -p "$(client_port 1)" RAFT.INFO | tr -d '\r' | grep -Eq '^leader_id:(0|)$'; then
      led=1
      break
    fi
    sleep 0.1
  done
  if [ -z "$led" ]; then
    echo "no leader after 10 s; see $RUN_DIR/node*/raftproxy.log" >&2
    return 1
  fi
  if sharded; then
    local last=$((SHARDS - 1))
    cat <<MSG

raftproxy cluster is up with $SHARDS shards (state and logs in $RUN_DIR/):
  node1  shards on ports $(client_port 1)-$(($(client_port 1) + last))    (metrics http://127.0.0.1:$(metrics_port 1)/metrics)
  node2  shards on ports $(client_port 2)-$(($(client_port 2) + last))    (metrics http://127.0.0.1:$(metrics_port 2)/metrics)
  node3  shards on ports $(client_port 3)-$(($(client_port 3) + last))    (metrics http://127.0.0.1:$(metrics_port 3)/metrics)
Try:   redis-cli -c -p $(client_port 1) SET k v && redis-cli -c -p $(client_port 2) GET k
Info:  redis-cli -p $(client_port 1) RAFT.SHARD LIST; redis-cli -p $(client_port 1) CLUSTER SHARDS
Stop:  make stop        Remove all data: make clean
MSG
    return
  fi
  cat <<MSG

raftproxy cluster is up (state and logs in $RUN_DIR/):
  node1  redis-cli -p $(client_port 1)    (its redis-server: port $(redis_port 1); metrics http://127.0.0.1:$(metrics_port 1)/metrics)
  node2  redis-cli -p $(client_port 2)    (its redis-server: port $(redis_port 2); metrics http://127.0.0.1:$(metrics_port 2)/metrics)
  node3  redis-cli -p $(client_port 3)    (its redis-server: port $(redis_port 3); metrics http://127.0.0.1:$(metrics_port 3)/metrics)
Try:   redis-cli -p $(client_port 1) SET k v && redis-cli -p $(client_port 2) GET k
Info:  redis-cli -p $(client_port 1) RAFT.INFO
Stop:  make stop        Remove all data: make clean
MSG
}

stop() {
  # raftproxy ends within its request timeout (5 s) plus 5 s whatever its
  # redis does; the nodes stop together, each in the background.
  for i in "${NODES[@]}"; do
    d="$RUN_DIR/node$i"
    touch "$d/redis.stop" 2>/dev/null || true
    # The loop sees the stop file once its redis-server has exited.
    ( stop_pid "$d/raftproxy.pid" 12
      stop_pid "$d/redis.pid" 2
      stop_pid "$d/redis-loop.pid" 2 ) &
  done
  wait
  echo "local cluster stopped (data kept in $RUN_DIR; make clean removes it)"
}

status() {
  for i in "${NODES[@]}"; do
    echo "== node$i (127.0.0.1:$(client_port "$i"))"
    redis-cli -p "$(client_port "$i")" RAFT.INFO 2>&1 | tr -d '\r' || true
  done
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
