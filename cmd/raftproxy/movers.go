package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/raftproxy/raftproxy/apply"
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

func (m moverNode) Shard(id string) migrate.Log {
	if st := m.ss.stackOf(id); st != nil {
		if n := st.host.Node(); n != nil {
			return migrate.GroupLog(n)
		}
	}
	if _, _, ok := m.ss.remote.shard(id); ok {
		return remoteLog{m.ss.remote, id}
	}
	return nil
}

func (m moverNode) Keys(ctx context.Context, id string, r slotmap.Range) ([]apply.MovedKey, error) {
	if m.ss.stackOf(id) == nil {
		return m.ss.remote.keys(ctx, id, r)
	}
	return m.localKeys(ctx, id, r)
}

// localKeys lists the keys of slots r in this node's redis of shard id,
// after a linearizable read barrier of its group: whatever was logged in
// it before (through any node) is in what it scans.
func (m moverNode) localKeys(ctx context.Context, id string, r slotmap.Range) ([]apply.MovedKey, error) {
	st := m.ss.stackOf(id)
	if st == nil {
		return nil, fmt.Errorf("this node does not hold shard %s", id)
	}
	n := st.host.Node()
	if n == nil {
		return nil, fmt.Errorf("shard %s has no node here", id)
	}
	w := n.StartRead()
	select {
	case <-w.Ready():
	case <-ctx.Done():
		return nil, fmt.Errorf("read barrier of shard %s: %w", id, ctx.Err())
	}
	if err := w.Err(); err != nil {
		return nil, fmt.Errorf("read barrier of shard %s: %w", id, err)
	}
	gen := n.Generation()
	// An even generation that did not change: no rebuild began or ended;
	// the run id: the redis scanned is the one the log was applied to.
	intact := func(runID string) bool {
		return gen%2 == 0 && n.Generation() == gen && runID != "" && runID == st.sm.RunID()
	}
	rc, err := st.gate.Dial(ctx, st.redisAddr, st.redisPass)
	if err != nil {
		return nil, fmt.Errorf("scan: %w", err)
	}
	defer rc.Close()
	return migrate.ScanKeys(ctx, rc, r, intact)
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

// reconcileShards keeps this node's groups to the routing data, every two
// seconds: it stops and deletes the groups of shards removed (RAFT.SHARD
// REMOVE, which only an empty shard can be), then joins those added since
// (RAFT.SHARD ADD on another node).
func (ss *stacks) reconcileShards(ctx context.Context) {
	for {
		select {
		case <-time.After(2 * time.Second):
		case <-ctx.Done():
			return
		}
		rt := ss.Routing()
		if rt == nil {
			continue
		}
		for _, id := range rt.Removed() {
			if st := ss.stackOf(id); st != nil && st.index != 0 {
				ss.close(ctx, st)
			}
		}
		jctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		if err := ss.primary().srv.JoinMissingShards(jctx); err != nil {
			ss.log.Warn("joining a shard added to the cluster failed; retrying", "err", err)
		}
		cancel()
	}
}

// close stops the stack of a removed shard and deletes its data.
func (ss *stacks) close(ctx context.Context, st *stack) {
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st.srv.Shutdown(sctx)
	st.stop(sctx)
	ss.mux.Remove(st.host)
	ss.mu.Lock()
	if ss.all[st.index] == st {
		delete(ss.all, st.index)
	}
	ss.mu.Unlock()
	dir := shardDir(ss.o.dataDir, st.index)
	if err := os.RemoveAll(dir); err != nil {
		ss.log.Warn("deleting a removed shard's data failed", "dir", dir, "err", err)
		return
	}
	ss.log.Info("stopped and deleted a removed shard", "shard", st.index, "dir", dir)
}
