package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/raftproxy/raftproxy/entry"
	"github.com/raftproxy/raftproxy/raftnode"
	"github.com/raftproxy/raftproxy/resp"
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

// maxShards bounds RAFT.CLUSTER INIT SHARDS: each shard is a raft group, a
// redis-server and a client port on every node.
const maxShards = 64

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
	// Open starts this node's Server for the shard at index, whose group
	// has no node yet, for RAFT.CLUSTER INIT SHARDS and JOIN to initialise
	// or join; an open one is returned as it is.
	Open(index int) (*Server, error)
}

// initShards makes the cluster of this new node (the primary group, shard
// index 0, whose node n is) a sharded one of count shards: it initialises
// a group for each other shard, with this node as its member under the
// same id, then logs the routing data that splits the slots between them.
func (s *Server) initShards(ctx context.Context, n Group, count int) error {
	if s.cfg.Sharding == nil {
		return errors.New("this node cannot host shards")
	}
	if err := membersApplied(ctx, n); err != nil {
		return err
	}
	if f := n.LogFormat(); f < entry.RouteFormat {
		return fmt.Errorf("a sharded cluster needs every member to decode log format %d; this cluster writes %d", entry.RouteFormat, f)
	}
	shards := []slotmap.Shard{{ID: raftnode.IDString(n.ClusterID()), Index: 0, Members: []uint64{n.ID()}}}
	groups := []Group{n}
	for i := 1; i < count; i++ {
		srv, err := s.cfg.Sharding.Open(i)
		if err != nil {
			return fmt.Errorf("open shard %d: %w", i, err)
		}
		g, err := srv.cfg.Cluster.InitAs(n.ID())
		if err != nil {
			return fmt.Errorf("initialise shard %d: %w", i, err)
		}
		shards = append(shards, slotmap.Shard{ID: raftnode.IDString(g.ClusterID()), Index: i, Members: []uint64{n.ID()}})
		groups = append(groups, g)
	}
	// The routing data goes to the primary group's log, which the servers
	// route by, then to every other shard's, whose appliers run a command
	// only on slots their shard owns (apply.Machine.notServed).
	init := slotmap.Change{Op: slotmap.OpInit, Shards: shards}
	for _, g := range groups {
		if err := s.proposeRoute(ctx, g, init); err != nil {
			return fmt.Errorf("log the routing data in shard %s: %w", raftnode.IDString(g.ClusterID()), err)
		}
	}
	return nil
}

// membersApplied waits until group n applied its membership, which sets
// the log format: a moment after INIT.
func membersApplied(ctx context.Context, n Group) error {
	for len(n.Members()) == 0 {
		select {
		case <-time.After(10 * time.Millisecond):
		case <-ctx.Done():
			return fmt.Errorf("the new group's membership was not applied: %w", ctx.Err())
		}
	}
	return nil
}

// proposeRoute logs a routing change through group n and waits for its
// outcome.
func (s *Server) proposeRoute(ctx context.Context, n Group, ch slotmap.Change) error {
	if err := membersApplied(ctx, n); err != nil {
		return err
	}
	reply, err := s.proposeRouteReply(ctx, n, ch)
	if err != nil {
		return err
	}
	if len(reply) > 0 && reply[0] == '-' {
		return errors.New(strings.TrimSpace(string(reply[1:])))
	}
	return nil
}

// proposeRouteReply logs a routing change through group n and returns
// the applier's reply.
func (s *Server) proposeRouteReply(ctx context.Context, n Group, ch slotmap.Change) ([]byte, error) {
	b, err := json.Marshal(ch)
	if err != nil {
		return nil, err
	}
	f := n.ProposeRequest(ctx, entry.Request{Op: entry.OpRoute, Args: [][]byte{b}})
	select {
	case <-f.Done():
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: %w", raftnode.ErrTimeout, ctx.Err())
	}
	return f.Result()
}

// joinShards joins this node, a new member of the primary group under id,
// to the group of every other shard of a sharded cluster, through the
// shard's port of the members at addrs.
func (s *Server) joinShards(ctx context.Context, addrs []string, id uint64) error {
	s.joiningShards.Lock()
	defer s.joiningShards.Unlock()
	shards, err := s.otherShards()
	if err != nil {
		return err
	}
	for _, sh := range shards {
		cid, err := raftnode.ParseID(sh.ID)
		if err != nil {
			return fmt.Errorf("shard %q: %w", sh.ID, err)
		}
		srv, err := s.cfg.Sharding.Open(sh.Index)
		if err != nil {
			return fmt.Errorf("open shard %s: %w", sh.ID, err)
		}
		if srv.cfg.Cluster.Node() != nil {
			continue // joined before (a JOIN retried after a partial one)
		}
		at := make([]string, len(addrs))
		for i, a := range addrs {
			at[i] = ShardAddr(a, sh.Index)
		}
		if err := srv.joinAs(ctx, at, cid, id); err != nil {
			return fmt.Errorf("join shard %s: %w", sh.ID, err)
		}
	}
	return nil
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

// redirectTo is -MOVED or -ASK to the leader of shard id.
func (s *Server) redirectTo(kind string, slot int, id string) *op {
	g := s.cfg.Sharding.Group(id)
	if g == nil {
		return errReply(fmt.Sprintf("CLUSTERDOWN Hash slot %d is served by shard %s, which this node does not hold", slot, id))
	}
	l, ok := g.Leader()
	if !ok || l.Addr == "" {
		return errReply(errNoLeader)
	}
	return errReply(fmt.Sprintf("%s %d %s", kind, slot, l.Addr))
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

// slotChanged reports whether a read that ran on the local redis may have
// missed a slot move: its slot is no longer this shard's alone, by its
// own group's log, after the read ran. A move's keys leave only after it
// began in that log, so a read that finds the slot still unmoved saw it
// whole.
func (s *Server) slotChanged(args [][]byte) bool {
	if s.cfg.ShardRouting == nil {
		return false
	}
	own := s.cfg.ShardRouting()
	if own == nil {
		return false
	}
	sp, _ := s.table.lookup(args)
	if sp == nil {
		return false
	}
	slot, keyed, _ := s.table.commandSlot(sp, args)
	if !keyed {
		return false
	}
	n := s.cfg.Cluster.Node()
	if n == nil {
		return true
	}
	_, moving := own.Moving(slot)
	return moving || own.Owner(slot) != raftnode.IDString(n.ClusterID())
}

// errSlotChanged fails a read that slotChanged caught; the client retries.
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

// raftShard handles RAFT.SHARD LIST: one array per shard, whose first
// element is the shard's id, then its slot ranges ("first-last"), its
// members' node ids, its leader's (empty when none is known or this node
// does not hold it), and the moves of its slots in progress ([id, range,
// from, to, keys moved]). A cluster that was never sharded is one shard,
// the primary group's, owning every slot.
func (c *conn) raftShard(args [][]byte) *op {
	if len(args) < 2 {
		return errReply("ERR wrong number of arguments for 'raft.shard' command")
	}
	switch sub := strings.ToLower(string(args[1])); {
	case sub == "move-slots" || sub == "cancel-move":
		return c.raftShardMove(sub, args)
	case sub == "add":
		return c.raftShardAdd(args[2:])
	case sub == "remove" && len(args) == 3:
		return c.raftShardRemove(string(args[2]))
	case len(args) != 2 || sub != "list":
		return errReply(fmt.Sprintf("ERR unknown subcommand '%.128s'. Try RAFT.SHARD LIST, MOVE-SLOTS or CANCEL-MOVE.", args[1]))
	}
	n := c.s.cfg.Cluster.Node()
	if n == nil {
		return errReply(errNoCluster)
	}
	type row struct {
		id     string
		ranges []slotmap.Range
		g      Group
		moves  []slotmap.Move
	}
	var rows []row
	rt, refused := c.s.routing()
	if refused != nil {
		return refused
	}
	if rt == nil {
		rows = append(rows, row{id: raftnode.IDString(n.ClusterID()), ranges: []slotmap.Range{{First: 0, Last: numSlots - 1}}, g: n})
	} else {
		for _, sh := range rt.Shards() {
			r := row{id: sh.ID, ranges: rt.Ranges(sh.ID), g: c.s.cfg.Sharding.Group(sh.ID)}
			for _, mv := range rt.Moves() {
				if mv.From == sh.ID || mv.To == sh.ID {
					r.moves = append(r.moves, mv)
				}
			}
			rows = append(rows, r)
		}
	}
	b := resp.AppendArrayLen(nil, len(rows))
	for _, r := range rows {
		b = resp.AppendArrayLen(b, 5)
		b = resp.AppendBulkString(b, r.id)
		b = resp.AppendArrayLen(b, len(r.ranges))
		for _, rg := range r.ranges {
			b = resp.AppendBulkString(b, fmt.Sprintf("%d-%d", rg.First, rg.Last))
		}
		var members []raftnode.MemberInfo
		leader := ""
		if r.g != nil {
			members = r.g.Members()
			if l, ok := r.g.Leader(); ok {
				leader = raftnode.IDString(l.ID)
			}
		}
		b = resp.AppendArrayLen(b, len(members))
		for _, m := range members {
			b = resp.AppendBulkString(b, raftnode.IDString(m.ID))
		}
		b = resp.AppendBulkString(b, leader)
		b = resp.AppendArrayLen(b, len(r.moves))
		for _, mv := range r.moves {
			state := "moving"
			if mv.Cancel || mv.Cancelled {
				state = "cancelling"
			}
			b = resp.AppendArrayLen(b, 6)
			b = resp.AppendInt(b, int64(mv.ID))
			b = resp.AppendBulkString(b, mv.Range.String())
			b = resp.AppendBulkString(b, mv.From)
			b = resp.AppendBulkString(b, mv.To)
			b = resp.AppendInt(b, int64(mv.Keys))
			b = resp.AppendBulkString(b, state)
		}
	}
	return &op{kind: opReply, reply: b}
}

// raftShardMove handles RAFT.SHARD MOVE-SLOTS <first> <last> <shard-id>,
// which begins a move in the routing data and answers its id, and
// RAFT.SHARD CANCEL-MOVE <id>, which turns one around. The primary
// group's leader then drives them (package migrate).
func (c *conn) raftShardMove(sub string, args [][]byte) *op {
	rt, refused := c.s.routing()
	if refused != nil {
		return refused
	}
	if rt == nil {
		return errReply("ERR this cluster is not sharded: make it with RAFT.CLUSTER INIT SHARDS <n>")
	}
	var ch slotmap.Change
	switch sub {
	case "move-slots":
		if len(args) != 5 {
			return errReply("ERR wrong number of arguments for 'raft.shard|move-slots' command")
		}
		first, err1 := strconv.Atoi(string(args[2]))
		last, err2 := strconv.Atoi(string(args[3]))
		if err1 != nil || err2 != nil {
			return errReply("ERR Invalid or out of range slot")
		}
		ch = slotmap.Change{Op: slotmap.OpBeginMove, Range: slotmap.Range{First: first, Last: last}, Shard: string(args[4])}
	default:
		if len(args) != 3 {
			return errReply("ERR wrong number of arguments for 'raft.shard|cancel-move' command")
		}
		id, err := strconv.ParseUint(string(args[2]), 10, 64)
		if err != nil {
			return errReply("ERR invalid move id")
		}
		ch = slotmap.Change{Op: slotmap.OpCancelMove, Move: id}
	}
	var primary Group
	for _, sh := range rt.Shards() {
		if sh.Index == 0 {
			primary = c.s.cfg.Sharding.Group(sh.ID)
		}
	}
	if primary == nil {
		return errReply("CLUSTERDOWN this node does not hold the primary group")
	}
	if f := primary.LogFormat(); f < entry.MoveFormat {
		return errReply(fmt.Sprintf("ERR slots move only once every member decodes log format %d; this cluster writes %d", entry.MoveFormat, f))
	}
	ctx, cancel := context.WithTimeout(proposalContext(), c.s.timeout())
	defer cancel()
	reply, err := c.s.proposeRouteReply(ctx, primary, ch)
	if err != nil {
		return errReply(errorText(err, false))
	}
	return &op{kind: opReply, reply: reply}
}

// primaryGroup is this node's group of the primary shard (index 0).
func (s *Server) primaryGroup(rt *slotmap.Map) Group {
	for _, sh := range rt.Shards() {
		if sh.Index == 0 {
			return s.cfg.Sharding.Group(sh.ID)
		}
	}
	return nil
}

// raftShardAdd handles RAFT.SHARD ADD [node-id ...]: a new shard owning no
// slot, on every node of the cluster (each node holds every shard, so the
// node ids, when given, must be all of them). This node makes its group,
// logs the routing data in it, then adds the shard to the routing data;
// the other nodes join it by themselves (JoinMissingShards). It answers
// the shard's id.
func (c *conn) raftShardAdd(ids [][]byte) *op {
	rt, refused := c.s.routing()
	if refused != nil {
		return refused
	}
	if rt == nil {
		return errReply("ERR this cluster is not sharded: make it with RAFT.CLUSTER INIT SHARDS <n>")
	}
	p := c.s.primaryGroup(rt)
	if p == nil {
		return errReply("CLUSTERDOWN this node does not hold the primary group")
	}
	if f := p.LogFormat(); f < entry.MoveFormat {
		return errReply(fmt.Sprintf("ERR shards are added only once every member decodes log format %d; this cluster writes %d", entry.MoveFormat, f))
	}
	var members []uint64
	for _, m := range p.Members() {
		if m.Voting {
			members = append(members, m.ID)
		}
	}
	slices.Sort(members)
	if len(ids) > 0 {
		given := map[uint64]bool{}
		for _, a := range ids {
			id, err := raftnode.ParseID(string(a))
			if err != nil {
				return errReply("ERR invalid node id: " + err.Error())
			}
			given[id] = true
		}
		all := len(given) == len(members)
		for _, id := range members {
			all = all && given[id]
		}
		if !all {
			return errReply("ERR every node holds every shard in this version: give no node ids, or all of them")
		}
	}
	index := 0
	for _, sh := range rt.Shards() {
		index = max(index, sh.Index+1)
	}
	if index >= maxShards {
		return errReply(fmt.Sprintf("ERR at most %d shards", maxShards))
	}
	srv, err := c.s.cfg.Sharding.Open(index)
	if err != nil {
		return errReply(fmt.Sprintf("ERR open shard %d: %v", index, err))
	}
	g, err := srv.cfg.Cluster.InitAs(p.ID())
	if err != nil {
		return errReply(fmt.Sprintf("ERR initialise shard %d: %v", index, err))
	}
	id := raftnode.IDString(g.ClusterID())
	add := slotmap.Change{Op: slotmap.OpAddShard, Shards: []slotmap.Shard{{ID: id, Index: index, Members: members}}}
	next := rt.Clone()
	if _, err := next.Apply(add); err != nil {
		return errReply("ERR " + err.Error())
	}
	ctx, cancel := context.WithTimeout(proposalContext(), c.s.cfg.JoinTimeout)
	defer cancel()
	// The new group's own log gets the routing data first, so that it
	// decides what it serves from its first command on.
	if err := c.s.proposeRoute(ctx, g, slotmap.Change{Op: slotmap.OpLoad, Map: next}); err != nil {
		return errReply(fmt.Sprintf("ERR shard %s was made on this node but not set up: %v; remove its directory shards/%d and retry", id, err, index))
	}
	if err := c.s.proposeRoute(ctx, p, add); err != nil {
		return errReply(fmt.Sprintf("ERR shard %s was made on this node but not added to the routing data: %v; remove its directory shards/%d and retry", id, err, index))
	}
	return &op{kind: opReply, reply: resp.AppendBulkString(nil, id)}
}

// raftShardRemove handles RAFT.SHARD REMOVE <id>: the shard must own no
// slot and take part in no move. Once the routing data says so, every node
// stops its group and deletes its data (stacks.reconcile).
func (c *conn) raftShardRemove(id string) *op {
	rt, refused := c.s.routing()
	if refused != nil {
		return refused
	}
	if rt == nil {
		return errReply("ERR this cluster is not sharded")
	}
	if sh, ok := rt.Shard(id); ok && sh.Index == 0 {
		return errReply("ERR the primary shard holds the routing data: it cannot be removed")
	}
	p := c.s.primaryGroup(rt)
	if p == nil {
		return errReply("CLUSTERDOWN this node does not hold the primary group")
	}
	ctx, cancel := context.WithTimeout(proposalContext(), c.s.timeout())
	defer cancel()
	if err := c.s.proposeRoute(ctx, p, slotmap.Change{Op: slotmap.OpRemoveShard, Shard: id}); err != nil {
		return errReply("ERR " + err.Error())
	}
	return okReply()
}

// JoinMissingShards joins this node to the group of every shard the
// routing data lists that it does not hold yet (one added meanwhile),
// through the other members of the primary group. Called on the primary
// shard's server.
func (s *Server) JoinMissingShards(ctx context.Context) error {
	n := s.cfg.Cluster.Node()
	if n == nil || s.cfg.Sharding == nil || !s.missingShards() {
		return nil
	}
	var addrs []string
	for _, m := range n.Members() {
		if m.ID != n.ID() && m.Addr != "" {
			addrs = append(addrs, m.Addr)
		}
	}
	if len(addrs) == 0 {
		return nil
	}
	return s.joinShards(ctx, addrs, n.ID())
}

// removeFromShards removes member id from the group of every shard other
// than the primary, in a sharded cluster.
func (s *Server) removeFromShards(ctx context.Context, id uint64) error {
	shards, err := s.otherShards()
	if err != nil {
		return err
	}
	for _, sh := range shards {
		g := s.cfg.Sharding.Group(sh.ID)
		if g == nil {
			return fmt.Errorf("this node does not hold shard %s: remove the member through a node that does", sh.ID)
		}
		if _, err := g.RemoveMember(ctx, id); err != nil && !errors.Is(err, raftnode.ErrNoSuchMember) {
			return fmt.Errorf("shard %s: %w", sh.ID, err)
		}
	}
	return nil
}

// otherShards are a sharded cluster's shards other than the primary
// group; none in a cluster that is not sharded.
func (s *Server) otherShards() ([]slotmap.Shard, error) {
	rt, refused := s.routing()
	if refused != nil {
		return nil, errors.New(errRoutingUnknown)
	}
	if rt == nil {
		return nil, nil
	}
	var out []slotmap.Shard
	for _, sh := range rt.Shards() {
		if sh.Index != 0 {
			out = append(out, sh)
		}
	}
	return out, nil
}

// missingShards reports whether the routing data lists a shard this node
// does not hold yet.
func (s *Server) missingShards() bool {
	shards, err := s.otherShards()
	if err != nil {
		return false
	}
	for _, sh := range shards {
		if s.cfg.Sharding.Group(sh.ID) == nil {
			return true
		}
	}
	return false
}
