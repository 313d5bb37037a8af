package proxy

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/raftproxy/raftproxy/raftnode"
	"github.com/raftproxy/raftproxy/slotmap"
)

// A sharded cluster (RAFT.CLUSTER INIT SHARDS) splits the hash slots over
// several raft groups, its shards. Each node runs one Server per shard it
// holds, each on its own client port (the shard's index above --listen's
// port), as Redis Cluster runs one redis-server per shard and node: a
// cluster client sees every (node, shard) pair as a cluster node, and finds
// the masters (the shards' raft leaders) from CLUSTER SLOTS. The routing
// data (which shard owns which slots) is in the primary group's log (the
// group INIT made, shard index 0, which every node holds); a Server serves
// a keyed command only for a slot its shard owns, and -MOVED names the
// owner's leader otherwise.

// Sharding is what a Server knows of the node's other shards.
type Sharding interface {
	// Routing is the routing data as the primary group applied it; nil
	// when the cluster was never sharded, and while the primary group
	// rebuilds or replays its log (Sharded then says which).
	Routing() *slotmap.Map
	// Sharded reports whether this node serves a sharded cluster, known or
	// not yet known its routing data: it holds a shard beside the primary,
	// or saw routing data since it started.
	Sharded() bool
	// Group is this node's group of the shard id (IDString of its raft
	// cluster id), nil when this node holds none.
	Group(id string) Group
	// GroupRouting is the routing data as this node's group of shard id
	// applied it, nil when this node holds none.
	GroupRouting(id string) *slotmap.Map
	// Elsewhere describes shard id when this node does not hold it (it is
	// placed on other nodes); ok is false when it holds it or the routing
	// data does not list it.
	Elsewhere(id string) (sh RemoteShard, ok bool)
	// Open starts this node's Server for the shard at index, whose group
	// has no node yet, for RAFT.CLUSTER INIT SHARDS and JOIN to initialise
	// or join; an open one is returned as it is.
	Open(index int) (*Server, error)
}

// RemoteShard is a shard this node does not hold: its members, with their
// client addresses at the shard's port, and its leader as a member last
// said (Leader 0 when none answered yet).
type RemoteShard struct {
	Members    []raftnode.MemberInfo
	Leader     uint64
	LeaderAddr string
}

// ShardAddr is the client address of shard index on the node whose
// primary (index 0) address is addr.
func ShardAddr(addr string, index int) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || index == 0 {
		return addr
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return addr
	}
	return net.JoinHostPort(host, strconv.Itoa(p+index))
}

// errRoutingUnknown refuses what needs the routing data while this node
// loads it (a restart, a rebuild of the primary group's redis): serving by
// a guess could put a key in the wrong shard. Cluster clients retry it.
const errRoutingUnknown = "CLUSTERDOWN raftproxy is loading this node's routing data; retry"

// routing returns the routing data when this node serves a sharded
// cluster, nil when it serves a plain one, and the refusal while it does
// not know which.
func (s *Server) routing() (*slotmap.Map, *op) {
	if s.cfg.Sharding == nil {
		return nil, nil
	}
	if rt := s.cfg.Sharding.Routing(); rt != nil {
		return rt, nil
	}
	if s.cfg.Sharding.Sharded() {
		return nil, errReply(errRoutingUnknown)
	}
	return nil, nil
}

// slotGate refuses a keyed command this server's shard does not serve: its
// keys in different slots (-CROSSSLOT, as Redis Cluster), or its slot
// owned by another shard (-MOVED to that shard's leader). It passes
// everything in a cluster that is not sharded.
func (c *conn) slotGate(sp *spec, args [][]byte) *op {
	rt, refused := c.s.routing()
	if rt == nil {
		return refused
	}
	if o := clusterModeRefusal(sp, args); o != nil {
		return o
	}
	slot, keyed, cross := c.s.table.commandSlot(sp, args)
	if cross {
		return errReply("CROSSSLOT Keys in request don't hash to the same slot")
	}
	if !keyed {
		return nil
	}
	return c.ownSlot(rt, slot)
}

// clusterModeRefusal refuses, in a sharded cluster, what Redis Cluster
// refuses for using databases other than 0, with its texts: a key in
// another database would be out of every shard's reach, slot moves
// included.
func clusterModeRefusal(sp *spec, args [][]byte) *op {
	switch sp.name {
	case "move", "swapdb":
		return errReply(fmt.Sprintf("ERR %s is not allowed in cluster mode", strings.ToUpper(sp.name)))
	case "copy":
		for _, a := range args[3:] {
			if strings.EqualFold(string(a), "db") {
				return errReply("ERR Copying to another database is not allowed in cluster mode")
			}
		}
	}
	return nil
}

// ownSlot returns nil when this server's shard serves slot, else the
// redirect to the shard that does. Its own group's log decides what it
// serves; rt (the primary's) names the owner of a slot it does not. A slot
// it moves out is served through the log, reads included, whose applier
// answers -ASK for the keys already moved (apply.Machine.servedHere); a
// slot it imports only after ASKING.
func (c *conn) ownSlot(rt *slotmap.Map, slot int) *op {
	s := c.s
	n := s.cfg.Cluster.Node()
	if n == nil {
		return errReply(errNoCluster)
	}
	self := raftnode.IDString(n.ClusterID())
	c.slot = slot
	own := rt
	if s.cfg.ShardRouting != nil {
		if m := s.cfg.ShardRouting(); m != nil {
			own = m
		}
	}
	if c.asked {
		// The source sends a client here once the move is in this group's
		// log, which this node may not have applied yet: the applier
		// decides, by then.
		for _, m := range []*slotmap.Map{own, rt} {
			if mv, ok := m.Moving(slot); ok && mv.Dst() == self {
				c.viaLog = true
				return nil
			}
		}
	}
	if mv, ok := own.Moving(slot); ok {
		switch self {
		case mv.Src():
			c.viaLog = true
			return nil
		case mv.Dst():
			return s.redirectTo("MOVED", slot, mv.Src())
		}
	}
	if own.Owner(slot) == self {
		return nil
	}
	owner := rt.Owner(slot)
	if owner == self {
		// The primary's log has not yet told this one of the change.
		return errReply(fmt.Sprintf("TRYAGAIN slot %d is changing hands", slot))
	}
	return s.redirectTo("MOVED", slot, owner)
}

// redirectTo is -MOVED or -ASK to the leader of shard id (while it has
// none, to this node's port for it). For a shard placed on other nodes it names the leader a member last named, or, before
// one did, a member: a follower serves the command too, through the log.
func (s *Server) redirectTo(kind string, slot int, id string) *op {
	g := s.cfg.Sharding.Group(id)
	if g == nil {
		addr := ""
		if rs, ok := s.cfg.Sharding.Elsewhere(id); ok {
			addr = rs.LeaderAddr
			if addr == "" && len(rs.Members) > 0 {
				addr = rs.Members[0].Addr
			}
		}
		if addr == "" {
			return errReply(fmt.Sprintf("CLUSTERDOWN Hash slot %d is served by shard %s, and no member of it is known here", slot, id))
		}
		return errReply(fmt.Sprintf("%s %d %s", kind, slot, addr))
	}
	l, ok := g.Leader()
	if !ok || l.Addr == "" {
		// An election or a leader transfer: this node's own port for the
		// shard serves the command as a follower, once a leader is known
		// (within the request timeout), where a client would give up on
		// -CLUSTERDOWN (redis-cli -c does) -- if by the shard's own log
		// it serves the slot, or it would send the client back.
		if addr := selfAddr(g); addr != "" && s.followerProxy.Load() && serves(s.cfg.Sharding.GroupRouting(id), id, kind, slot) {
			return errReply(fmt.Sprintf("%s %d %s", kind, slot, addr))
		}
		return errReply(errNoLeader)
	}
	return errReply(fmt.Sprintf("%s %d %s", kind, slot, l.Addr))
}

// serves reports whether shard id, whose routing data as its own log
// applied it is own, serves slot for a -MOVED (it owns the slot, or moves
// it out) or an -ASK (it moves the slot in) without sending the client on.
func serves(own *slotmap.Map, id, kind string, slot int) bool {
	if own == nil {
		return false
	}
	mv, moving := own.Moving(slot)
	if kind == "ASK" {
		return moving && mv.Dst() == id
	}
	if moving {
		return mv.Src() == id
	}
	return own.Owner(slot) == id
}

// selfAddr is this node's client address for group g, "" if not known.
func selfAddr(g Group) string {
	for _, m := range g.Members() {
		if m.ID == g.ID() {
			return m.Addr
		}
	}
	return ""
}

// askReply turns the applier's -ASK, which names the target shard, into
// Redis Cluster's, which names its leader's address.
func (s *Server) askReply(raw []byte) []byte {
	f := strings.Fields(string(raw[1:]))
	if s.cfg.Sharding == nil || len(f) != 3 {
		return raw
	}
	slot, err := strconv.Atoi(f[1])
	if err != nil {
		return raw
	}
	return s.redirectTo("ASK", slot, f[2]).reply
}

// notServedReply turns the applier's -TRYAGAIN for a slot that left this
// shard between the proxy's check and the log (apply.Machine.servedHere)
// into -MOVED to the slot's owner, as a Redis Cluster node answers for a
// slot it does not own: cluster clients follow MOVED, and not all retry
// TRYAGAIN (redis-cli -c does not). While the routing data here still names
// this shard, the TRYAGAIN stays.
func (s *Server) notServedReply(raw []byte) []byte {
	rest, ok := bytes.CutPrefix(raw, notServedPrefix)
	if !ok {
		return raw
	}
	num, _, ok := bytes.Cut(rest, []byte(" "))
	if !ok || !bytes.HasPrefix(bytes.TrimRight(rest[len(num):], "\r\n"), notServedSuffix) {
		return raw
	}
	slot, err := strconv.Atoi(string(num))
	if err != nil {
		return raw
	}
	rt, _ := s.routing()
	n := s.cfg.Cluster.Node()
	if rt == nil || n == nil {
		return raw
	}
	owner := rt.Owner(slot)
	if owner == "" || owner == raftnode.IDString(n.ClusterID()) {
		return raw
	}
	if _, moving := rt.Moving(slot); moving {
		return raw
	}
	return s.redirectTo("MOVED", slot, owner).reply
}

var (
	notServedPrefix = []byte("-TRYAGAIN slot ")
	notServedSuffix = []byte(" is not served by this shard")
)

// slotChanged reports whether a read that ran on the local redis may have
// missed a slot move: its slot is no longer this shard's alone, by its
// own group's log, after the read ran. A move's keys leave only after it
// began in that log, so a read that finds the slot still unmoved saw it
// whole.
// slot is the read's, as its gate found it (-1: keyless, or not sharded).
func (s *Server) slotChanged(slot int) bool {
	if slot < 0 || s.cfg.ShardRouting == nil {
		return false
	}
	own := s.cfg.ShardRouting()
	if own == nil {
		return false
	}
	n := s.cfg.Cluster.Node()
	if n == nil {
		return true
	}
	_, moving := own.Moving(slot)
	return moving || own.Owner(slot) != raftnode.IDString(n.ClusterID())
}

// errSlotChanged marks a read that slotChanged caught, which the
// connection runs again through the log (conn.rerun).
var errSlotChanged = errors.New("TRYAGAIN the slot began moving while the read ran")

// commandSlot is the hash slot of a command's keys by redis's key specs:
// keyed is false for a command without keys, cross true when its keys
// hash to different slots.
func (t table) commandSlot(sp *spec, args [][]byte) (slot int, keyed, cross bool) {
	var pos [8]int
	for _, ks := range sp.keySpecs {
		idx, ok := ks.keys(args, pos[:0])
		if !ok {
			continue
		}
		for _, i := range idx {
			if i <= 0 || i >= len(args) {
				continue
			}
			s := slotmap.KeySlot(args[i])
			if keyed && s != slot {
				return slot, true, true
			}
			slot, keyed = s, true
		}
	}
	return slot, keyed, false
}

// txSlotGate is slotGate for a command queued in a transaction: every key
// of the transaction must be in the first one's slot.
func (c *conn) txSlotGate(tx *txState, sp *spec, args [][]byte) *op {
	rt, refused := c.s.routing()
	if rt == nil {
		return refused
	}
	if o := clusterModeRefusal(sp, args); o != nil {
		return o
	}
	slot, keyed, cross := c.s.table.commandSlot(sp, args)
	switch {
	case cross || (keyed && tx.slot >= 0 && slot != tx.slot):
		return errReply("CROSSSLOT Keys in request don't hash to the same slot")
	case !keyed || tx.slot >= 0:
		return nil
	}
	tx.slot = slot
	return c.ownSlot(rt, slot)
}

// publishGroup is the group a PUBLISH is logged in: the primary group, which
// every node holds, once some shard is placed on some nodes only (each
// node's hub then hands the message to the subscribers of all its ports);
// the connection's own group n otherwise, and for every other command.
func (c *conn) publishGroup(n Group, sp *spec) Group {
	if sp.name != "publish" {
		return n
	}
	rt, _ := c.s.routing()
	if rt == nil || !rt.AnyPlaced() {
		return n
	}
	if p := c.s.primaryGroup(rt); p != nil {
		return p
	}
	return n
}
