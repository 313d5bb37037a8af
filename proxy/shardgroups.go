package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/raftproxy/raftproxy/entry"
	"github.com/raftproxy/raftproxy/raftnode"
	"github.com/raftproxy/raftproxy/slotmap"
)

// The raft groups of a sharded cluster's shards on this node: making
// them (INIT SHARDS, RAFT.SHARD ADD), joining and leaving them with the
// node, and logging routing changes through them.

// maxShards bounds RAFT.CLUSTER INIT SHARDS: each shard is a raft group, a
// redis-server and a client port on every node.
const maxShards = 64

// initShards makes the cluster of this new node (the primary group, shard
// index 0, whose node n is) a sharded one of count shards: it initialises
// a group for each other shard, with this node as its member under the
// same id, then logs the routing data that splits the slots between them.
//
// Each wait (a group's membership, a routing entry) has its own timeout:
// the whole takes longer with more shards.
func (s *Server) initShards(base context.Context, timeout time.Duration, n Group, count int) error {
	if s.cfg.Sharding == nil {
		return errors.New("this node cannot host shards")
	}
	ctx, cancel := context.WithTimeout(base, timeout)
	err := membersApplied(ctx, n)
	cancel()
	if err != nil {
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
		ctx, cancel := context.WithTimeout(base, timeout)
		err := s.proposeRoute(ctx, g, init)
		cancel()
		if err != nil {
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
// shard's port of the members at addrs. Each shard's join has its own
// timeout: a cluster of many shards takes longer to join.
func (s *Server) joinShards(base context.Context, timeout time.Duration, addrs []string, id uint64) error {
	s.joiningShards.Lock()
	defer s.joiningShards.Unlock()
	shards, err := s.otherShards()
	if err != nil {
		return err
	}
	for _, sh := range shards {
		if !sh.Holds(id) {
			continue // placed on other nodes
		}
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
		at := s.shardJoinAddrs(sh, addrs, id)
		ctx, cancel := context.WithTimeout(base, timeout)
		err = srv.joinAs(ctx, at, cid, id)
		cancel()
		if err != nil {
			return fmt.Errorf("join shard %s: %w", sh.ID, err)
		}
	}
	return nil
}

// shardJoinAddrs are the client addresses to join shard sh through: for a
// shard every node holds, its port at addrs (the primary group's members);
// for one placed on some nodes, at its other members.
func (s *Server) shardJoinAddrs(sh slotmap.Shard, addrs []string, id uint64) []string {
	var at []string
	if n := s.cfg.Cluster.Node(); sh.Placed && n != nil {
		for _, m := range n.Members() {
			if m.ID != id && sh.Holds(m.ID) && m.Addr != "" {
				at = append(at, ShardAddr(m.Addr, sh.Index))
			}
		}
		return at
	}
	for _, a := range addrs {
		at = append(at, ShardAddr(a, sh.Index))
	}
	return at
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
	return s.joinShards(ctx, s.cfg.JoinTimeout, addrs, n.ID())
}

// removeFromShards removes member id from the group of every shard other
// than the primary, in a sharded cluster.
func (s *Server) removeFromShards(ctx context.Context, id uint64) error {
	shards, err := s.otherShards()
	if err != nil {
		return err
	}
	for _, sh := range shards {
		if !sh.Holds(id) {
			continue
		}
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
// should hold and does not yet.
func (s *Server) missingShards() bool {
	shards, err := s.otherShards()
	n := s.cfg.Cluster.Node()
	if err != nil || n == nil {
		return false
	}
	for _, sh := range shards {
		if sh.Holds(n.ID()) && s.cfg.Sharding.Group(sh.ID) == nil {
			return true
		}
	}
	return false
}
