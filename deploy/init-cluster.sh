#!/bin/sh
# Forms a raftproxy cluster from NODES, idempotently: run it at every start.
#
#   NODES="node1:6379 node2:6379 node3:6379" sh deploy/init-cluster.sh
#
# NODES are the nodes' client addresses (their --advertise-addr), first
# node first. The script waits until every node answers PING, asks each
# RAFT.INFO, and then:
#   - no node in a cluster: RAFT.CLUSTER INIT on the first node;
#   - each node in no cluster: RAFT.CLUSTER JOIN <the members> CLUSTER <id>,
#     so it can only join the cluster the others are in;
#   - nodes already in the cluster are left alone (a restarted node resumes
#     from its data dir by itself);
#   - nodes in two different clusters: nothing is changed, exit 1.
# A node already in a cluster answers INIT and JOIN with -ERR Already cluster
# member, so a race with another run of this script changes nothing either.
#
# Needs only sh and redis-cli (the redis image has both). WAIT_SECONDS
# (default 120) bounds the wait for the nodes to come up.
# RAFTPROXY_REQUIREPASS, if set, is the nodes' password (their
# --requirepass); redis-cli gives it from REDISCLI_AUTH, which keeps it off
# the command line.
set -eu

if [ -n "${RAFTPROXY_REQUIREPASS:-}" ]; then
	REDISCLI_AUTH=$RAFTPROXY_REQUIREPASS
	export REDISCLI_AUTH
fi

: "${NODES:?set NODES to the nodes client addresses, e.g. NODES=\"node1:6379 node2:6379\"}"
WAIT_SECONDS=${WAIT_SECONDS:-120}

cli() { # cli HOST:PORT ARGS...: one command, reply on stdout, \r removed
	addr=$1
	shift
	redis-cli -h "${addr%:*}" -p "${addr##*:}" "$@" | tr -d '\r'
}

field() { # field NAME: the value of a key:value line of RAFT.INFO on stdin
	sed -n "s/^$1://p"
}

for n in $NODES; do
	waited=0
	until [ "$(cli "$n" PING 2>/dev/null)" = PONG ]; do
		if [ "$waited" -ge "$WAIT_SECONDS" ]; then
			echo "init-cluster: $n did not answer PING within ${WAIT_SECONDS}s" >&2
			exit 1
		fi
		sleep 1
		waited=$((waited + 1))
	done
done

# cluster_id is empty on a node in no cluster.
cluster=
members=
fresh=
for n in $NODES; do
	id=$(cli "$n" RAFT.INFO | field cluster_id)
	if [ -z "$id" ]; then
		fresh="$fresh $n"
	elif [ -z "$cluster" ] || [ "$id" = "$cluster" ]; then
		cluster=$id
		members="$members $n"
	else
		echo "init-cluster: $n is in cluster $id but$members in cluster $cluster; changing nothing" >&2
		exit 1
	fi
done

if [ -z "$fresh" ]; then
	echo "init-cluster: all nodes are in cluster $cluster; nothing to do"
	exit 0
fi

if [ -z "$cluster" ]; then
	set -- $NODES
	reply=$(cli "$1" RAFT.CLUSTER INIT)
	case $reply in
	"OK "*) ;;
	*)
		echo "init-cluster: RAFT.CLUSTER INIT on $1: $reply" >&2
		exit 1
		;;
	esac
	cluster=${reply#OK }
	members=" $1"
	fresh=${fresh# $1}
	echo "init-cluster: initialized cluster $cluster on $1"
fi

for n in $fresh; do
	# JOIN retries by itself while the new cluster elects its first leader.
	reply=$(cli "$n" RAFT.CLUSTER JOIN $members CLUSTER "$cluster")
	if [ "$reply" != OK ]; then
		echo "init-cluster: RAFT.CLUSTER JOIN$members CLUSTER $cluster on $n: $reply" >&2
		exit 1
	fi
	echo "init-cluster: $n joined cluster $cluster"
	members="$members $n"
done
