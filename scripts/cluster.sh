#!/usr/bin/env bash
# A local 3-node raftproxy cluster on 127.0.0.1, each node a stock
# redis-server plus a raftproxy in front of it. All state lives in $RUN_DIR.
#   scripts/cluster.sh start   build-free start (expects bin/raftproxy); idempotent
#   scripts/cluster.sh stop    stops every process it started
#   scripts/cluster.sh status  RAFT.INFO of each node
set -euo pipefail
cd "$(dirname "$0")/.."
RUN_DIR=${RUN_DIR:-.run}
BIN=${BIN:-bin/raftproxy}
NODES=(1 2 3)
CLIENT_BASE=${CLIENT_BASE:-7000}
PEER_BASE=${PEER_BASE:-7100}
REDIS_BASE=${REDIS_BASE:-6400}
METRICS_BASE=${METRICS_BASE:-7200}
client_port() { echo $((CLIENT_BASE + $1)); }
peer_port() { echo $((PEER_BASE + $1)); }
redis_port() { echo $((REDIS_BASE + $1)); }
metrics_port() { echo $((METRICS_BASE + $1)); }

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

wait_port() {
  for _ in $(seq 1 100); do
    redis-cli -p "$1" PING >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "nothing answers on port $1; see $RUN_DIR/*.log" >&2
  return 1
}

start() {
  mkdir -p "$RUN_DIR"
  for i in "${NODES[@]}"; do
    d="$RUN_DIR/node$i"
    mkdir -p "$d/redis"
    if ! alive "$d/redis.pid"; then
      redis-server --port "$(redis_port "$i")" --bind 127.0.0.1 --save "" --appendonly no \
        --dir "$PWD/$d/redis" --daemonize yes --pidfile "$PWD/$d/redis.pid" --logfile "$PWD/$d/redis.log"
    fi
    if ! alive "$d/raftproxy.pid"; then
      nohup "$BIN" --listen "127.0.0.1:$(client_port "$i")" --peer-listen "127.0.0.1:$(peer_port "$i")" \
        --data-dir "$d/data" --redis "127.0.0.1:$(redis_port "$i")" \
        --metrics-listen "127.0.0.1:$(metrics_port "$i")" ${RAFTPROXY_ARGS:-} >>"$d/raftproxy.log" 2>&1 &
      echo $! >"$d/raftproxy.pid"
    fi
  done
  for i in "${NODES[@]}"; do wait_port "$(client_port "$i")"; done
  # Form the cluster once; a node that has a data dir resumes by itself.
  if redis-cli -p "$(client_port 1)" RAFT.INFO | grep -q '^state:uninitialized'; then
    redis-cli -p "$(client_port 1)" RAFT.CLUSTER INIT
  fi
  for i in "${NODES[@]:1}"; do
    if redis-cli -p "$(client_port "$i")" RAFT.INFO | grep -q '^state:uninitialized'; then
      redis-cli -p "$(client_port "$i")" RAFT.CLUSTER JOIN "127.0.0.1:$(client_port 1)"
    fi
  done
  # Wait for a leader everyone agrees on.
  for _ in $(seq 1 100); do
    if redis-cli -p "$(client_port 1)" RAFT.INFO | grep -Eq '^role:(leader|follower)' &&
       ! redis-cli -p "$(client_port 1)" RAFT.INFO | grep -q '^leader_id:0'; then
      break
    fi
    sleep 0.1
  done
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
  for i in "${NODES[@]}"; do
    d="$RUN_DIR/node$i"
    for p in raftproxy redis; do
      if alive "$d/$p.pid"; then kill "$(cat "$d/$p.pid")" 2>/dev/null || true; fi
    done
  done
  for i in "${NODES[@]}"; do
    d="$RUN_DIR/node$i"
    for p in raftproxy redis; do
      for _ in $(seq 1 50); do alive "$d/$p.pid" || break; sleep 0.1; done
      rm -f "$d/$p.pid"
    done
  done
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
