package test

import (
	"context"
	"fmt"
	"reflect"
	"strconv"
	"time"

	"github.com/raftproxy/raftproxy/proxy"
	"github.com/raftproxy/raftproxy/slotmap"
)

// shardRouter reads which shard index owns each slot from CLUSTER SLOTS on
// n (the port of each range's master, less its node's first port), for
// clients that address a shard's port themselves: a workload client must
// not be a cluster client, which retries a write whose outcome it does
// not know.
func shardRouter(ctx context.Context, c *Cluster, n *Node) (func(key string) int, error) {
	first := map[string]int{} // node host:port of each shard port → its index
	for _, m := range c.Nodes {
		for k := 0; k < c.opts.Shards; k++ {
			first[proxy.ShardAddr(m.Addr, k)] = k
		}
	}
	var index [slotmap.NumSlots]int
	err := waitFor(ctx, 30*time.Second, 200*time.Millisecond, "CLUSTER SLOTS covering every slot", func(ctx context.Context) error {
		slots, err := n.Client().ClusterSlots(ctx).Result()
		if err != nil {
			return err
		}
		covered := 0
		for _, s := range slots {
			if len(s.Nodes) == 0 {
				return fmt.Errorf("range %d-%d without nodes", s.Start, s.End)
			}
			k, ok := first[s.Nodes[0].Addr]
			if !ok {
				return fmt.Errorf("range %d-%d served by unknown %s", s.Start, s.End, s.Nodes[0].Addr)
			}
			for slot := s.Start; slot <= s.End; slot++ {
				index[slot] = k
			}
			covered += s.End - s.Start + 1
		}
		if covered != slotmap.NumSlots {
			return fmt.Errorf("%d slots covered", covered)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return func(key string) int { return index[slotmap.KeySlot([]byte(key))] }, nil
}

// AssertShardsIdentical fails the test unless, for every shard, every
// running node has applied the same index and holds the same data,
// read through that node's port of the shard (a read there is served from
// the node's own redis).
func (c *Cluster) AssertShardsIdentical(ctx context.Context) map[int]redisDump {
	c.t.Helper()
	out := map[int]redisDump{}
	for k := 0; k < c.opts.Shards; k++ {
		var prev int64 = -1
		err := waitFor(ctx, 45*time.Second, 200*time.Millisecond, "shard "+strconv.Itoa(k)+" converging on one applied index", func(ctx context.Context) error {
			idx := int64(-1)
			for _, n := range c.Running() {
				v, err := (&Node{c: c, Addr: proxy.ShardAddr(n.Addr, k)}).Do(ctx, 2*time.Second, "RAFT.INFO")
				if err != nil {
					return err
				}
				info, err := parseRaftInfo(v.Str)
				if err != nil {
					return err
				}
				ci, ai := info.Int("commit_index"), info.Int("last_applied_index")
				if ci != ai || (idx >= 0 && ai != idx) {
					return fmt.Errorf("%s: commit %d applied %d (others %d)", n, ci, ai, idx)
				}
				idx = ai
			}
			if idx != prev {
				prev = idx
				return fmt.Errorf("applied index %d not yet seen twice", idx)
			}
			return nil
		})
		if err != nil {
			c.t.Fatal(err)
		}
		var dumps []redisDump
		for _, n := range c.Running() {
			d, err := dumpRedis(ctx, proxy.ShardAddr(n.Addr, k))
			if err != nil {
				c.t.Fatalf("shard %d on %s: %v", k, n, err)
			}
			dumps = append(dumps, d)
		}
		for i := 1; i < len(dumps); i++ {
			if !reflect.DeepEqual(dumps[0], dumps[i]) {
				c.t.Errorf("shard %d: %s and %s hold different data (%d and %d keys)", k, c.Running()[0], c.Running()[i], len(dumps[0]), len(dumps[i]))
			}
		}
		out[k] = dumps[0]
	}
	return out
}
