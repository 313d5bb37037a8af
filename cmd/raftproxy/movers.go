package main

import (
	"context"
	"fmt"

	"github.com/raftproxy/raftproxy/backend"
	"github.com/raftproxy/raftproxy/migrate"
	"github.com/raftproxy/raftproxy/raftnode"
	"github.com/raftproxy/raftproxy/slotmap"
)

// moverNode is the node as the slot movers see it (migrate.Node).
type moverNode struct{ ss *stacks }

func (m moverNode) Primary() migrate.Group {
	if p := m.ss.primary(); p != nil {
		if n := p.host.Node(); n != nil {
			return n
		}
	}
	return nil
}

func (m moverNode) Routing() *slotmap.Map { return m.ss.Routing() }

func (m moverNode) Shard(id string) migrate.Group {
	if st := m.ss.stackOf(id); st != nil {
		if n := st.host.Node(); n != nil {
			return n
		}
	}
	return nil
}

func (m moverNode) Redis(ctx context.Context, id string) (*backend.Conn, error) {
	st := m.ss.stackOf(id)
	if st == nil {
		return nil, fmt.Errorf("this node does not hold shard %s", id)
	}
	return backend.DialAuth(ctx, st.redisAddr, st.redisPass)
}

// stackOf is the stack of the shard whose raft cluster id is id.
func (ss *stacks) stackOf(id string) *stack {
	for _, st := range ss.list() {
		if n := st.host.Node(); n != nil && raftnode.IDString(n.ClusterID()) == id {
			return st
		}
	}
	return nil
}
