package proxy

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/raftproxy/raftproxy/entry"
	"github.com/raftproxy/raftproxy/raftnode"
	"github.com/raftproxy/raftproxy/resp"
	"github.com/raftproxy/raftproxy/slotmap"
)

// RAFT.SHARD: the shards, their slots and moves (LIST), moving slots
// (MOVE-SLOTS, CANCEL-MOVE), adding and removing shards (ADD, REMOVE).

// raftShard handles RAFT.SHARD LIST: one array per shard, whose first
// element is the shard's id, then its slot ranges ("first-last"), its
// members' node ids, its leader's (empty when none is known; for a shard
// this node does not hold, as a member last said), and the moves of its slots in progress ([id, range,
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
		} else if rs, ok := c.s.cfg.Sharding.Elsewhere(r.id); ok {
			members = rs.Members
			if rs.Leader != 0 {
				leader = raftnode.IDString(rs.Leader)
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
// slot. Without node ids every node of the cluster holds it, and nodes
// that join later do too; with them, those nodes only (voting members of
// the primary group, each named once; 3 or 5 for a shard that outlives a
// failure), and a node not among them passes the command to one that is.
// The node that runs it makes the group, logs the routing data in it, then
// adds the shard to the routing data; the other members join it by
// themselves (JoinMissingShards). It answers the shard's id.
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
	voters := map[uint64]raftnode.MemberInfo{}
	var members []uint64
	for _, m := range p.Members() {
		if m.Voting {
			voters[m.ID] = m
			members = append(members, m.ID)
		}
	}
	placed := len(ids) > 0
	if placed {
		if f := p.LogFormat(); f < entry.PlacedFormat {
			return errReply(fmt.Sprintf("ERR shards are placed on some nodes only once every member decodes log format %d; this cluster writes %d", entry.PlacedFormat, f))
		}
		members = members[:0]
		for _, a := range ids {
			id, err := raftnode.ParseID(string(a))
			if err != nil {
				return errReply("ERR invalid node id: " + err.Error())
			}
			if _, ok := voters[id]; !ok {
				return errReply(fmt.Sprintf("ERR node %s is not a voting member of the cluster", a))
			}
			if slices.Contains(members, id) {
				return errReply(fmt.Sprintf("ERR node %s is named twice", a))
			}
			members = append(members, id)
		}
		if !slices.Contains(members, p.ID()) {
			// The node that makes the group is its first member.
			args := []string{"RAFT.SHARD", "ADD"}
			for _, a := range ids {
				args = append(args, string(a))
			}
			return c.s.forwardFor(voters[members[0]].Addr, c.s.cfg.JoinTimeout, args...)
		}
	}
	slices.Sort(members)
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
	add := slotmap.Change{Op: slotmap.OpAddShard, Shards: []slotmap.Shard{{ID: id, Index: index, Members: members, Placed: placed}}}
	next := rt.ForNewShard()
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
