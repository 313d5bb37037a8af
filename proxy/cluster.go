package proxy

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/raftproxy/raftproxy/raftnode"
	"github.com/raftproxy/raftproxy/resp"
	"github.com/raftproxy/raftproxy/slotmap"
)

// Redis Cluster emulation. raftproxy poses as a Redis Cluster of one shard
// that owns all 16384 slots: the raft leader is its master and every other
// member a replica, each at its advertised client address. Cluster clients
// (go-redis ClusterClient, redis-py RedisCluster, redis-cli -c) then find
// the leader by themselves and follow -MOVED when it changes, and since any
// node serves any key, their slot routing never sends a command astray.

// reasonClusterAdmin is why CLUSTER subcommands that change a Redis
// Cluster's topology are refused.
const reasonClusterAdmin = "is not supported by raftproxy: one shard owns every slot, and members are added and removed with RAFT.CLUSTER and RAFT.NODE"

// clusterSubsMissing are CLUSTER subcommands raftproxy answers itself that
// an older local redis may not list in COMMAND (MYSHARDID came in 7.2).
var clusterSubsMissing = []*spec{
	{name: "cluster|myshardid", arity: 2, class: classProxy},
}

// clusterAnswered are the CLUSTER subcommands raftproxy answers; the table
// refuses the others (see addClusterSubs).
var clusterAnswered = map[string]bool{
	"keyslot": true, "help": true, "myid": true, "myshardid": true,
	"slots": true, "shards": true, "nodes": true, "info": true,
	"countkeysinslot": true, "getkeysinslot": true,
}

// addClusterSubs completes the table's CLUSTER container with the
// subcommands raftproxy answers whatever the local redis's version, and
// marks the others refused.
func addClusterSubs(t table) {
	c, ok := t["cluster"]
	if !ok {
		c = &spec{name: "cluster", arity: -2, class: classProxy}
		t["cluster"] = c
	}
	if c.subs == nil {
		c.subs = map[string]*spec{}
	}
	for _, s := range clusterSubsMissing {
		_, sub, _ := strings.Cut(s.name, "|")
		if _, ok := c.subs[sub]; !ok {
			c.subs[sub] = s
		}
	}
	for name, s := range c.subs {
		switch {
		case clusterAnswered[name]:
		default:
			s.class, s.reason = classRefused, reasonClusterAdmin
		}
	}
}

// clusterNode is one member as CLUSTER replies show it.
type clusterNode struct {
	id          string
	ip          string
	port, cport int
	master      bool
	self        bool
	health      string // CLUSTER SHARDS: online, failed or loading
	linked      bool
}

// shardView is one shard: its slots and its members, master first.
type shardView struct {
	id     string
	ranges []slotmap.Range
	nodes  []clusterNode
	term   uint64 // the raft term: the master's config epoch
}

// clusterView is every shard as this node sees it, in slot order.
type clusterView struct {
	groups []shardView
}

// clusterNodeID is the 40-hex-digit Redis Cluster node id of raft member
// id in the group whose raft cluster id is cid: the raft id zero-padded,
// so it is stable across restarts and readable at its end, after the
// cluster id when the cluster is sharded, since a node is then one cluster
// node per shard it holds.
func clusterNodeID(cid, id uint64, sharded bool) string {
	if sharded {
		return fmt.Sprintf("%024x%016x", cid, id)
	}
	return fmt.Sprintf("%040x", id)
}

// clusterView describes the shards, or returns the error reply that says
// why it cannot: without a leader there is no master to name.
func (c *conn) clusterView() (clusterView, *op) {
	n := c.s.cfg.Cluster.Node()
	if n == nil {
		return clusterView{}, errReply(errNoCluster)
	}
	rt, refused := c.s.routing()
	if refused != nil {
		return clusterView{}, refused
	}
	if rt == nil {
		sv, refused := viewShard(n, n, false)
		if refused != nil {
			return clusterView{}, refused
		}
		sv.ranges = []slotmap.Range{{First: 0, Last: numSlots - 1}}
		return clusterView{groups: []shardView{sv}}, nil
	}
	var v clusterView
	byID := map[string]int{}
	for _, a := range rt.Assignments() {
		i, ok := byID[a.Shard]
		if !ok {
			var sv shardView
			if g := c.s.cfg.Sharding.Group(a.Shard); g != nil {
				var refused *op
				if sv, refused = viewShard(g, n, true); refused != nil {
					return clusterView{}, refused
				}
			} else if rs, ok := c.s.cfg.Sharding.Elsewhere(a.Shard); ok && len(rs.Members) > 0 {
				sv = viewRemoteShard(a.Shard, rs)
			} else {
				continue // no member of it known: its slots are not listed
			}
			i = len(v.groups)
			byID[a.Shard] = i
			v.groups = append(v.groups, sv)
		}
		v.groups[i].ranges = append(v.groups[i].ranges, a.Range)
	}
	return v, nil
}

// viewShard describes the shard of group g; self is the group of the
// server answering, whose own member is "myself".
func viewShard(g, self Group, sharded bool) (shardView, *op) {
	st := g.Status()
	if st.Leader == 0 {
		return shardView{}, errReply(errNoLeader)
	}
	sv := shardView{id: clusterNodeID(0, st.ClusterID, false), term: st.Term}
	for _, ns := range st.Nodes {
		host, port, cport := splitAddr(ns.Addr), portOf(ns.Addr), portOf(ns.PeerAddr)
		cn := clusterNode{id: clusterNodeID(st.ClusterID, ns.ID, sharded), ip: host, port: port, cport: cport,
			master: ns.ID == st.Leader, self: g == self && ns.ID == st.ID, health: "online", linked: ns.State != "unreachable"}
		switch {
		case ns.ID == st.ID && !g.Serving():
			cn.health = "loading"
		case !cn.linked:
			cn.health = "failed"
		}
		sv.nodes = append(sv.nodes, cn)
	}
	slices.SortStableFunc(sv.nodes, func(a, b clusterNode) int {
		switch {
		case a.master == b.master:
			return 0
		case a.master:
			return -1
		}
		return 1
	})
	if len(sv.nodes) == 0 || !sv.nodes[0].master {
		// The leader is not among the members this node knows yet.
		return shardView{}, errReply(errNoLeader)
	}
	return sv, nil
}

// viewRemoteShard describes shard id, placed on other nodes, as rs says:
// its leader as a member last named it, or its first member before one
// did (a follower serves its commands too, through the log).
func viewRemoteShard(id string, rs RemoteShard) shardView {
	cid, _ := raftnode.ParseID(id)
	sv := shardView{id: clusterNodeID(0, cid, false)}
	master := rs.Members[0].ID
	if rs.Leader != 0 && slices.ContainsFunc(rs.Members, func(m raftnode.MemberInfo) bool { return m.ID == rs.Leader }) {
		master = rs.Leader
	}
	for _, m := range rs.Members {
		cn := clusterNode{id: clusterNodeID(cid, m.ID, true), ip: splitAddr(m.Addr), port: portOf(m.Addr), cport: portOf(m.PeerAddr),
			master: m.ID == master, health: "online", linked: true}
		if cn.master {
			sv.nodes = append([]clusterNode{cn}, sv.nodes...)
		} else {
			sv.nodes = append(sv.nodes, cn)
		}
	}
	return sv
}

func splitAddr(addr string) string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return host
}

func portOf(addr string) int {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return 0
	}
	port, _ := strconv.Atoi(p)
	return port
}

// cluster answers a CLUSTER subcommand (name is "cluster|<sub>").
func (c *conn) cluster(name string, args [][]byte) *op {
	_, sub, _ := strings.Cut(name, "|")
	switch sub {
	case "keyslot":
		if len(args) != 3 {
			return errReply("ERR wrong number of arguments for 'cluster|keyslot' command")
		}
		return &op{kind: opReply, reply: resp.AppendInt(nil, int64(slotmap.KeySlot(args[2])))}
	case "countkeysinslot", "getkeysinslot":
		return c.slotKeys(sub, args)
	case "help":
		return &op{kind: opReply, reply: clusterHelp()}
	case "myid", "myshardid", "slots", "shards", "nodes", "info":
	default:
		return errReply(fmt.Sprintf("ERR '%s' %s", displayName(name), reasonClusterAdmin))
	}
	if sub == "myid" || sub == "myshardid" {
		n := c.s.cfg.Cluster.Node()
		if n == nil {
			return errReply(errNoCluster)
		}
		id := clusterNodeID(n.ClusterID(), n.ID(), c.s.cfg.Sharding != nil && c.s.cfg.Sharding.Sharded())
		if sub == "myshardid" {
			id = clusterNodeID(0, n.ClusterID(), false)
		}
		return &op{kind: opReply, reply: resp.AppendBulkString(nil, id)}
	}
	if sub == "info" {
		return &op{kind: opReply, reply: resp.AppendVerbatim(nil, c.clusterInfo(), c.client.resp3)}
	}
	v, refused := c.clusterView()
	if refused != nil {
		return refused
	}
	switch sub {
	case "slots":
		return &op{kind: opReply, reply: v.slots(c.client.resp3)}
	case "shards":
		return &op{kind: opReply, reply: v.shards(c.client.resp3)}
	}
	return &op{kind: opReply, reply: resp.AppendVerbatim(nil, v.nodesText(), c.client.resp3)}
}

// slots renders CLUSTER SLOTS as redis 7 does: each range, its master then
// its replicas, each [ip, port, id, {networking metadata}].
func (v clusterView) slots(resp3 bool) []byte {
	n := 0
	for _, sv := range v.groups {
		n += len(sv.ranges)
	}
	b := resp.AppendArrayLen(nil, n)
	for _, sv := range v.groups {
		for _, r := range sv.ranges {
			b = resp.AppendArrayLen(b, 2+len(sv.nodes))
			b = resp.AppendInt(b, int64(r.First))
			b = resp.AppendInt(b, int64(r.Last))
			for _, cn := range sv.nodes {
				b = resp.AppendArrayLen(b, 4)
				b = resp.AppendBulkString(b, cn.ip)
				b = resp.AppendInt(b, int64(cn.port))
				b = resp.AppendBulkString(b, cn.id)
				b = resp.AppendMapLen(b, 0, resp3)
			}
		}
	}
	return b
}

// shards renders CLUSTER SHARDS (redis 7.0's fields), with maps in the
// client's protocol.
func (v clusterView) shards(resp3 bool) []byte {
	b := resp.AppendArrayLen(nil, len(v.groups))
	for _, sv := range v.groups {
		b = resp.AppendMapLen(b, 2, resp3)
		b = resp.AppendBulkString(b, "slots")
		b = resp.AppendArrayLen(b, 2*len(sv.ranges))
		for _, r := range sv.ranges {
			b = resp.AppendInt(b, int64(r.First))
			b = resp.AppendInt(b, int64(r.Last))
		}
		b = resp.AppendBulkString(b, "nodes")
		b = resp.AppendArrayLen(b, len(sv.nodes))
		for _, cn := range sv.nodes {
			role := "replica"
			if cn.master {
				role = "master"
			}
			b = resp.AppendMapLen(b, 7, resp3)
			b = resp.AppendBulkString(b, "id")
			b = resp.AppendBulkString(b, cn.id)
			b = resp.AppendBulkString(b, "port")
			b = resp.AppendInt(b, int64(cn.port))
			b = resp.AppendBulkString(b, "ip")
			b = resp.AppendBulkString(b, cn.ip)
			b = resp.AppendBulkString(b, "endpoint")
			b = resp.AppendBulkString(b, cn.ip)
			b = resp.AppendBulkString(b, "role")
			b = resp.AppendBulkString(b, role)
			// Raft indexes are not redis replication offsets; 0 as RedisRaft.
			b = resp.AppendBulkString(b, "replication-offset")
			b = resp.AppendInt(b, 0)
			b = resp.AppendBulkString(b, "health")
			b = resp.AppendBulkString(b, cn.health)
		}
	}
	return b
}

// nodesText renders CLUSTER NODES: one line per member of each shard,
// "\n"-terminated, with the peer (raft) port as the cluster bus port and the
// raft term as the master's config epoch.
func (v clusterView) nodesText() string {
	var b strings.Builder
	now := time.Now().UnixMilli()
	for _, sv := range v.groups {
		master := sv.nodes[0].id
		for _, cn := range sv.nodes {
			flags, of, epoch := "slave", master, uint64(0)
			if cn.master {
				flags, of, epoch = "master", "-", sv.term
			}
			if cn.self {
				flags = "myself," + flags
			}
			pong, link := int64(0), "connected"
			if !cn.self {
				pong = now
			}
			if !cn.linked {
				pong, link = 0, "disconnected"
			}
			fmt.Fprintf(&b, "%s %s:%d@%d %s %s 0 %d %d %s", cn.id, cn.ip, cn.port, cn.cport, flags, of, pong, epoch, link)
			if cn.master {
				for _, r := range sv.ranges {
					b.WriteString(" " + r.String())
				}
			}
			b.WriteByte('\n')
		}
	}
	return b.String()
}

// clusterInfo renders CLUSTER INFO; the cluster is ok while a leader is known.
func (c *conn) clusterInfo() string {
	state, known, ok, size, term, myEpoch := "fail", 0, 0, 1, uint64(0), uint64(0)
	if n := c.s.cfg.Cluster.Node(); n != nil {
		st := n.Status()
		known, term = len(st.Nodes), st.Term
		if st.Leader == st.ID {
			myEpoch = term
		}
		if rt, _ := c.s.routing(); rt != nil {
			// Each shard's slots are ok while its leader is known; every
			// (node, shard) pair is a cluster node.
			size, known = 0, 0
			for _, a := range rt.Assignments() {
				if g := c.s.cfg.Sharding.Group(a.Shard); g != nil && g.Status().Leader != 0 {
					ok += a.Len()
				} else if rs, placed := c.s.cfg.Sharding.Elsewhere(a.Shard); placed && len(rs.Members) > 0 {
					ok += a.Len() // placed elsewhere: its members answer
				}
			}
			for _, sh := range rt.Shards() {
				size++
				if g := c.s.cfg.Sharding.Group(sh.ID); g != nil {
					known += len(g.Members())
				} else if rs, placed := c.s.cfg.Sharding.Elsewhere(sh.ID); placed {
					known += len(rs.Members)
				}
			}
			if ok == numSlots {
				state = "ok"
			}
		} else if st.Leader != 0 {
			state, ok = "ok", numSlots
		}
	}
	return fmt.Sprintf("cluster_state:%s\r\ncluster_slots_assigned:%d\r\ncluster_slots_ok:%d\r\ncluster_slots_pfail:0\r\n"+
		"cluster_slots_fail:%d\r\ncluster_known_nodes:%d\r\ncluster_size:%d\r\ncluster_current_epoch:%d\r\ncluster_my_epoch:%d\r\n"+
		"cluster_stats_messages_sent:0\r\ncluster_stats_messages_received:0\r\ntotal_cluster_links_buffer_limit_exceeded:0\r\n",
		state, numSlots, ok, numSlots-ok, known, size, term, myEpoch)
}

func clusterHelp() []byte {
	lines := []string{
		"CLUSTER <subcommand> [<arg> [value] [opt] ...]. raftproxy answers:",
		"INFO", "    Cluster state: ok while a raft leader is known.",
		"KEYSLOT <key>", "    Return the hash slot for <key>.",
		"MYID", "    Return this node's id (its raft id, zero-padded to 40 hex digits).",
		"MYSHARDID", "    Return the shard id (the raft cluster id, zero-padded).",
		"NODES", "    Every member: the raft leader is the master of all slots, the others replicas.",
		"SHARDS", "    The one shard: all slots, its master and replicas.",
		"SLOTS", "    The slot range 0-16383 with its master and replicas.",
		"HELP", "    Print this help.",
	}
	b := resp.AppendArrayLen(nil, len(lines))
	for _, l := range lines {
		b = resp.AppendSimple(b, l)
	}
	return b
}

// redirect is the -MOVED reply that sends a command to the leader, or the
// -CLUSTERDOWN reply when none is known.
func (c *conn) redirect(n Group, args [][]byte) *op {
	l, ok := n.Leader()
	if !ok || l.Addr == "" {
		return errReply(errNoLeader)
	}
	return errReply(fmt.Sprintf("MOVED %d %s", c.s.table.redirectSlot(args), l.Addr))
}
