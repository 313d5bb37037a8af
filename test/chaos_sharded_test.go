package test

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/raftproxy/raftproxy/proxy"
	"github.com/raftproxy/raftproxy/slotmap"
)

// slotRouter is which shard index owns each slot, as CLUSTER SLOTS said
// (the port of each range's master, less its node's first port), for
// clients that address a shard's port themselves: a workload client must
// not be a cluster client, which retries a write whose outcome it does
// not know. A -MOVED teaches it a slot's new owner, after a slot move.
type slotRouter struct {
	first map[string]int // node host:port of each shard port → its index
	index [slotmap.NumSlots]atomic.Int32
	// holders are the first ports of the nodes of each placed shard.
	holders map[int][]string
}

func shardRouter(ctx context.Context, c *Cluster, n *Node) (*slotRouter, error) {
	r := &slotRouter{first: map[string]int{}, holders: map[int][]string{}}
	for k := 0; k < c.opts.Shards; k++ {
		hs, placed := c.holders[k]
		if !placed {
			hs = c.Nodes
		}
		for _, m := range hs {
			r.first[proxy.ShardAddr(m.Addr, k)] = k
			if placed {
				r.holders[k] = append(r.holders[k], m.Addr)
			}
		}
	}
	return r, r.reload(ctx, n)
}

// nodesOf are the first ports of the nodes that hold shard k; nil: every
// node.
func (r *slotRouter) nodesOf(k int) []string { return r.holders[k] }

// reload reads the whole map again from CLUSTER SLOTS on n.
func (r *slotRouter) reload(ctx context.Context, n *Node) error {
	return waitFor(ctx, 30*time.Second, 200*time.Millisecond, "CLUSTER SLOTS covering every slot", func(ctx context.Context) error {
		slots, err := n.Client().ClusterSlots(ctx).Result()
		if err != nil {
			return err
		}
		covered := 0
		for _, s := range slots {
			if len(s.Nodes) == 0 {
				return fmt.Errorf("range %d-%d without nodes", s.Start, s.End)
			}
			k, ok := r.first[s.Nodes[0].Addr]
			if !ok {
				return fmt.Errorf("range %d-%d served by unknown %s", s.Start, s.End, s.Nodes[0].Addr)
			}
			for slot := s.Start; slot <= s.End; slot++ {
				r.index[slot].Store(int32(k))
			}
			covered += s.End - s.Start + 1
		}
		if covered != slotmap.NumSlots {
			return fmt.Errorf("%d slots covered", covered)
		}
		return nil
	})
}

// of is the index of the shard owning key.
func (r *slotRouter) of(key string) int { return int(r.index[slotmap.KeySlot([]byte(key))].Load()) }

// learn takes the new owner of a slot from a -MOVED.
func (r *slotRouter) learn(err error) {
	f := strings.Fields(err.Error())
	if len(f) != 3 || f[0] != "MOVED" {
		return
	}
	slot, perr := strconv.Atoi(f[1])
	k, ok := r.first[f[2]]
	if perr == nil && ok && 0 <= slot && slot < slotmap.NumSlots {
		r.index[slot].Store(int32(k))
	}
}

// AssertShardsIdentical fails the test unless, for every shard, every
// running node has applied the same index and holds the same data,
// read through that node's port of the shard (a read there is served from
// the node's own redis).
func (c *Cluster) AssertShardsIdentical(ctx context.Context) map[int]redisDump {
	c.t.Helper()
	out := map[int]redisDump{}
	for k := 0; k < c.opts.Shards; k++ {
		out[k] = c.AssertShardIdentical(ctx, k, c.Holders(k))
	}
	return out
}

// AssertShardIdentical is AssertShardsIdentical for shard index k, on the
// nodes that hold it.
func (c *Cluster) AssertShardIdentical(ctx context.Context, k int, holders []*Node) redisDump {
	c.t.Helper()
	var prev int64 = -1
	err := waitFor(ctx, 45*time.Second, 200*time.Millisecond, "shard "+strconv.Itoa(k)+" converging on one applied index", func(ctx context.Context) error {
		idx := int64(-1)
		for _, n := range holders {
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
	for _, n := range holders {
		d, err := dumpRedis(ctx, proxy.ShardAddr(n.Addr, k))
		if err != nil {
			c.t.Fatalf("shard %d on %s: %v", k, n, err)
		}
		dumps = append(dumps, d)
	}
	for i := 1; i < len(dumps); i++ {
		if !reflect.DeepEqual(dumps[0], dumps[i]) {
			c.t.Errorf("shard %d: %s and %s hold different data (%d and %d keys): %s", k, holders[0], holders[i], len(dumps[0]), len(dumps[i]), dumpDiff(dumps[0], dumps[i]))
		}
	}
	return dumps[0]
}

// moveSlots is the move nemesis: through a random node, it moves a random
// run of slots of one shard to another, and cancels the move a moment
// later one time in three. A refusal (the slots are being moved already,
// no leader) is logged: the schedule goes on.
func (nm *nemesis) moveSlots(ctx context.Context) {
	n := nm.randomNode()
	rows, err := n.Client().Do(ctx, "RAFT.SHARD", "LIST").Slice()
	if err != nil {
		nm.logf("move: RAFT.SHARD LIST on %s: %v", n, err)
		return
	}
	type owned struct {
		id     string
		ranges []slotmap.Range
	}
	var shards []owned
	for _, r := range rows {
		row, _ := r.([]any)
		if len(row) != 5 {
			continue
		}
		o := owned{}
		o.id, _ = row[0].(string)
		rs, _ := row[1].([]any)
		for _, x := range rs {
			s, _ := x.(string)
			var rg slotmap.Range
			if _, err := fmt.Sscanf(s, "%d-%d", &rg.First, &rg.Last); err == nil {
				o.ranges = append(o.ranges, rg)
			}
		}
		shards = append(shards, o)
	}
	if len(shards) < 2 {
		return
	}
	from := shards[nm.rng.IntN(len(shards))]
	to := shards[nm.rng.IntN(len(shards))]
	if from.id == to.id || len(from.ranges) == 0 {
		return
	}
	rg := from.ranges[nm.rng.IntN(len(from.ranges))]
	first := rg.First + nm.rng.IntN(rg.Len())
	last := min(rg.Last, first+nm.rng.IntN(3000))
	id, err := n.Client().Do(ctx, "RAFT.SHARD", "MOVE-SLOTS", first, last, to.id).Int64()
	nm.logf("RAFT.SHARD MOVE-SLOTS %d %d %s via %s: %d %v", first, last, to.id, n, id, err)
	if err != nil || nm.rng.IntN(3) != 0 {
		return
	}
	sleep(ctx, nm.dur(50*time.Millisecond, 800*time.Millisecond))
	err = n.Client().Do(ctx, "RAFT.SHARD", "CANCEL-MOVE", id).Err()
	nm.logf("RAFT.SHARD CANCEL-MOVE %d via %s: %v", id, n, err)
}

// fillerKeys is how many keys seedFiller writes: the moves of the move
// nemesis carry them, beside the workload's few keys.
const fillerKeys = 3000

// seedFiller writes keys over every slot, every other one with a deadline
// an hour away, and returns how each must read at the end.
func seedFiller(ctx context.Context, t *testing.T, c *Cluster) map[string]string {
	t.Helper()
	cc := newClusterClient(c.Nodes[0].Addr)
	defer cc.Close()
	at := time.Now().Add(time.Hour).UnixMilli()
	want := map[string]string{}
	pipe := cc.Pipeline()
	for i := range fillerKeys {
		k := "chaos:fill:" + strconv.Itoa(i)
		pipe.Set(ctx, k, k, 0)
		exp := "-1"
		if i%2 == 0 {
			pipe.PExpireAt(ctx, k, time.UnixMilli(at+int64(i)))
			exp = strconv.FormatInt(at+int64(i), 10)
		}
		want[dumpKey(0, k)] = fmt.Sprintf("string:%q|pexpireat=%s", k, exp)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatalf("seeding the filler keys: %v", err)
	}
	return want
}

// checkFiller fails t unless each filler key is in exactly one shard, with
// its value and deadline: the slot moves lost, doubled and changed none.
func checkFiller(t *testing.T, want map[string]string, dumps map[int]redisDump) {
	t.Helper()
	if want == nil {
		return
	}
	seen := map[string]int{}
	for _, d := range dumps {
		for k, v := range d {
			if w, ok := want[k]; ok {
				seen[k]++
				if v != w {
					t.Errorf("filler %s = %s, want %s", k, v, w)
				}
			}
		}
	}
	bad := 0
	for k := range want {
		if seen[k] != 1 {
			bad++
			if bad <= 5 {
				t.Errorf("filler %s is in %d shards", k, seen[k])
			}
		}
	}
	if bad > 5 {
		t.Errorf("%d filler keys are not in exactly one shard", bad)
	}
	t.Logf("filler: %d keys, each in one shard with its value and deadline: %v", len(want), bad == 0)
}

// dumpDiff names a few keys two dumps hold differently.
func dumpDiff(a, b redisDump) string {
	var out []string
	for k, v := range a {
		if w, ok := b[k]; !ok || v != w {
			out = append(out, fmt.Sprintf("%s: %.80s / %.80s", k, v, w))
		}
	}
	for k, w := range b {
		if _, ok := a[k]; !ok {
			out = append(out, fmt.Sprintf("%s: (none) / %.80s", k, w))
		}
	}
	slices.Sort(out)
	return strings.Join(out[:min(5, len(out))], "; ")
}
