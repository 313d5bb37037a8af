package test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/raftproxy/raftproxy/proxy"
	"github.com/raftproxy/raftproxy/slotmap"
)

// TestPlacedShards: RAFT.SHARD ADD <node-id>... places a shard on some of
// the nodes, so a 6-node cluster holds two disjoint 3-node shards. Each is
// held (port, data, raft group of 3 voters) by its members only; ADD sent
// to a node outside the list is passed to a member. A node that does not
// hold a shard answers -MOVED to it and lists it in CLUSTER SLOTS with its
// members at the shard's port, its leader as master. Slots move into each
// shard and then between the two under a write load — every node holds
// only one of them, so whichever node leads the primary group drives one
// side of each move through a member's peer listener (the steps, and the
// scan of a source it does not hold) — with no acknowledged write lost,
// keys keeping their deadlines, and each shard identical on its members.
// Peers authenticate with a shared secret (TLS), and heartbeats go
// coalesced.
func TestPlacedShards(t *testing.T) {
	ctx := testContext(t, 5*time.Minute)
	// Peers speak TLS (a shared secret), as the peer calls do.
	secretFile := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secretFile, []byte("0d5c8e1f7a2b4c6d9e0f1a2b3c4d5e6f\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := StartCluster(ctx, t, ClusterOptions{Nodes: 6, Shards: 1, PortRun: 3, Metrics: true, ExtraArgs: []string{"--peer-secret-file", secretFile}})
	ids := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		info, err := n.RaftInfo(ctx)
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = info.Get("node_id")
	}
	n0, n3 := c.Nodes[0], c.Nodes[3]
	for _, bad := range []struct {
		args []string
		want string
	}{
		{[]string{ids[1], ids[1]}, "named twice"},
		{[]string{ids[1], "123"}, "not a voting member"},
	} {
		if v, err := n0.Do(ctx, 5*time.Second, append([]string{"RAFT.SHARD", "ADD"}, bad.args...)...); v.Kind != '-' || !strings.Contains(v.Str, bad.want) {
			t.Errorf("ADD %v: %v %v, want an error saying %q", bad.args, v, err, bad.want)
		}
	}
	add := func(via *Node, members ...string) string {
		t.Helper()
		v, err := via.Do(ctx, 30*time.Second, append([]string{"RAFT.SHARD", "ADD"}, members...)...)
		if err != nil || v.Kind != '$' {
			t.Fatalf("RAFT.SHARD ADD %v through %s: %v %v", members, via, v, err)
		}
		return v.Str
	}
	// Keys everywhere, a tenth with a deadline, and many in slots 0-999,
	// so that moving them takes a few seconds.
	cc := newClusterClient(n0.Addr)
	defer cc.Close()
	var keys []string
	for i := range 600 {
		k := "pk:" + strconv.Itoa(i)
		ttl := time.Duration(0)
		if i%10 == 0 {
			ttl = time.Hour
		}
		if err := cc.Set(ctx, k, k, ttl).Err(); err != nil {
			t.Fatalf("SET %s: %v", k, err)
		}
		keys = append(keys, k)
	}
	seedSlotKeys(ctx, t, cc, "early:", 20000, slotmap.Range{First: 0, Last: 999})
	move := func(first, last int, to string) {
		t.Helper()
		if err := n0.Client().Do(ctx, "RAFT.SHARD", "MOVE-SLOTS", first, last, to).Err(); err != nil {
			t.Fatalf("MOVE-SLOTS %d %d %s: %v", first, last, to, err)
		}
	}
	// Through a node that is not a member: it passes the command on.
	shardA := add(n3, ids[0], ids[1], ids[2])
	// Shard B is made while a third of the slots move to A: its log's copy
	// of the routing data must not hold that move, which no mover would
	// end there (it would refuse every later move of those slots to B).
	move(0, 5460, shardA)
	if _, moves, err := shardList(ctx, n0); err != nil || moves == 0 {
		t.Errorf("the move to shard A ended before shard B was added (%v): the test shows less", err)
	}
	shardB := add(n0, ids[3], ids[4], ids[5])
	holders := map[int][]*Node{1: c.Nodes[:3], 2: c.Nodes[3:]}
	idOf := map[int]string{1: shardA, 2: shardB}
	err := waitFor(ctx, 60*time.Second, 200*time.Millisecond, "each placed shard on its members only", func(ctx context.Context) error {
		for idx, hs := range holders {
			for _, n := range c.Nodes {
				port := proxy.ShardAddr(n.Addr, idx)
				if !slices.Contains(hs, n) {
					if conn, err := net.DialTimeout("tcp", port, time.Second); err == nil {
						conn.Close()
						return fmt.Errorf("%s serves shard %d's port, which it does not hold", n, idx)
					}
					if _, err := os.Stat(filepath.Join(n.DataDir, "shards", strconv.Itoa(idx))); err == nil {
						return fmt.Errorf("%s has data of shard %d, which it does not hold", n, idx)
					}
					continue
				}
				v, err := (&Node{c: c, Addr: port}).Do(ctx, 2*time.Second, "RAFT.INFO")
				if err != nil {
					return err
				}
				info, _ := parseRaftInfo(v.Str)
				if info.Get("cluster_id") != idOf[idx] || info.Get("num_voting_nodes") != "3" {
					return fmt.Errorf("%s: shard %d is %s with %s voters, want %s with 3", n, idx, info.Get("cluster_id"), info.Get("num_voting_nodes"), idOf[idx])
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	waitMovesDone(ctx, t, c, 90*time.Second)
	move(5461, 10922, shardB)
	waitMovesDone(ctx, t, c, 90*time.Second)
	checkKeys := func(when string) {
		t.Helper()
		for i, k := range keys {
			if v, err := cc.Get(ctx, k).Result(); err != nil || v != k {
				t.Fatalf("%s: %s = %q, %v", when, k, v, err)
			}
			if i%10 == 0 {
				if ttl, err := cc.TTL(ctx, k).Result(); err != nil || ttl < 50*time.Minute || ttl > time.Hour {
					t.Errorf("%s: TTL %s = %v, %v; want its hour", when, k, ttl, err)
				}
			}
		}
	}
	checkKeys("after the moves into the placed shards")

	// Seen from a node that does not hold shard B: -MOVED to a member, and
	// CLUSTER SLOTS naming B's leader as master and its members.
	inB := ""
	for i := 0; inB == ""; i++ {
		if k := "b:" + strconv.Itoa(i); slotmap.KeySlot([]byte(k)) == 6000 {
			inB = k
		}
	}
	bPorts := []string{}
	for _, n := range holders[2] {
		bPorts = append(bPorts, proxy.ShardAddr(n.Addr, 2))
	}
	v, err := n0.Do(ctx, 5*time.Second, "GET", inB)
	if f := strings.Fields(v.Str); v.Kind != '-' || len(f) != 3 || f[0] != "MOVED" || f[1] != "6000" || !slices.Contains(bPorts, f[2]) {
		t.Errorf("GET of a key of shard B on %s, which does not hold it: %v %v; want -MOVED 6000 <one of %v>", n0, v, err, bPorts)
	}
	// redis-cli -c follows that -MOVED.
	host, port, _ := net.SplitHostPort(n0.Addr)
	if out, err := exec.CommandContext(ctx, "redis-cli", "-c", "-h", host, "-p", port, "SET", inB, "via-cli").CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "OK" {
		t.Errorf("redis-cli -c SET %s through %s: %v %q", inB, n0, err, out)
	}
	if v, err := cc.Get(ctx, inB).Result(); err != nil || v != "via-cli" {
		t.Errorf("after redis-cli -c SET: %s = %q, %v", inB, v, err)
	}
	err = waitFor(ctx, 20*time.Second, 200*time.Millisecond, "CLUSTER SLOTS on a node without shard B naming its leader", func(ctx context.Context) error {
		leader := ""
		for _, addr := range bPorts {
			v, err := (&Node{c: c, Addr: addr}).Do(ctx, 2*time.Second, "RAFT.INFO")
			if err != nil {
				return err
			}
			if info, _ := parseRaftInfo(v.Str); info.Get("role") == "leader" {
				leader = addr
			}
		}
		slots, err := n0.Client().ClusterSlots(ctx).Result()
		if err != nil {
			return err
		}
		for _, s := range slots {
			if s.Start <= 6000 && 6000 <= s.End {
				var addrs []string
				for _, cn := range s.Nodes {
					addrs = append(addrs, cn.Addr)
				}
				if s.Nodes[0].Addr != leader || len(addrs) != 3 || !sameSet(addrs, bPorts) {
					return fmt.Errorf("slot 6000: %v; shard B's members %v, leader %s", addrs, bPorts, leader)
				}
				return nil
			}
		}
		return fmt.Errorf("slot 6000 is not listed: %v", slots)
	})
	if err != nil {
		t.Error(err)
	}

	// PUBLISH on a port of shard A reaches a subscriber on a node that
	// holds only shard B (the primary group, which every node holds,
	// carries it).
	sub := redis.NewClient(&redis.Options{Addr: proxy.ShardAddr(n3.Addr, 2), Protocol: 2, DisableIdentity: true})
	defer sub.Close()
	ps := sub.Subscribe(ctx, "placed-news")
	defer ps.Close()
	if _, err := ps.ReceiveTimeout(ctx, 10*time.Second); err != nil {
		t.Fatalf("SUBSCRIBE: %v", err)
	}
	pub := redis.NewClient(&redis.Options{Addr: proxy.ShardAddr(n0.Addr, 1), Protocol: 2, DisableIdentity: true})
	defer pub.Close()
	if err := pub.Publish(ctx, "placed-news", "hello").Err(); err != nil {
		t.Fatalf("PUBLISH: %v", err)
	}
	if m, err := ps.ReceiveTimeout(ctx, 10*time.Second); err != nil {
		t.Errorf("a PUBLISH on shard A's port did not reach a subscriber on a node without shard A: %v", err)
	} else if msg, ok := m.(*redis.Message); !ok || msg.Payload != "hello" {
		t.Errorf("the subscriber got %#v", m)
	}

	// Between the two placed shards, there and back, under load.
	l := startMoveLoad(ctx, cc, 8, "pl:")
	time.Sleep(time.Second)
	move(0, 999, shardB)
	waitMovesDone(ctx, t, c, 90*time.Second)
	if got := ownerShard(ctx, t, n3, 0); !strings.HasSuffix(got, shardB) {
		t.Errorf("slot 0 is %s's after the move, want shard B %s", got, shardB)
	}
	move(0, 999, shardA)
	waitMovesDone(ctx, t, c, 90*time.Second)
	time.Sleep(time.Second)
	l.end()
	l.check(ctx, t, cc, false)
	checkKeys("after the moves between the placed shards")

	// A move between them whose driver (the primary group's leader) is
	// killed halfway, with a member of the shard the driver does not hold:
	// the next leader finishes it through the remaining members.
	more := seedSlotKeys(ctx, t, cc, "more:", 20000, slotmap.Range{First: 1000, Last: 2999})
	l = startMoveLoad(ctx, cc, 8, "pk2:")
	move(1000, 2999, shardB)
	waitProgress(ctx, t, n3)
	driver, _ := c.Leader(ctx)
	if driver == nil {
		t.Fatal("no primary leader")
	}
	other := holders[2][0]
	if slices.Contains(holders[2], driver) {
		other = holders[1][0]
	}
	if other == driver {
		other = holders[1][1]
	}
	for _, n := range []*Node{driver, other} {
		if err := n.KillProxy(); err != nil {
			t.Fatal(err)
		}
	}
	var alive *Node
	for _, n := range c.Nodes {
		if n != driver && n != other {
			alive = n
		}
	}
	// (A move is listed in the rows of both its shards.)
	if _, moves, err := shardList(ctx, alive); err != nil || moves != 2 {
		t.Errorf("after killing the driver: %d moves listed (%v), want the one it drove, twice", moves, err)
	}
	waitMovesDone(ctx, t, c, 90*time.Second)
	for _, n := range []*Node{driver, other} {
		if err := n.StartProxy(ctx); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(time.Second)
	l.end()
	cc2 := newClusterClient(alive.Addr)
	defer cc2.Close()
	l.check(ctx, t, cc2, true)
	for _, k := range more {
		if v, err := cc2.Get(ctx, k).Result(); err != nil || v != k {
			t.Fatalf("after the move whose driver was killed: %s = %q, %v", k, v, err)
		}
	}
	if got := ownerShard(ctx, t, alive, 2000); !strings.HasSuffix(got, shardB) {
		t.Errorf("slot 2000 is %s's after the move, want shard B %s", got, shardB)
	}
	for idx, hs := range holders {
		c.AssertShardIdentical(ctx, idx, hs)
	}
	c.AssertShardIdentical(ctx, 0, c.Nodes)
	// Each node holds two groups: their heartbeats went coalesced, and
	// their other messages on the node's one stream per peer, over the
	// peers' TLS.
	for _, n := range c.Nodes {
		m := scrapeNode(ctx, t, n)
		if m["raftproxy_coalesced_heartbeats_total"] == 0 {
			t.Errorf("%s: no coalesced heartbeats", n)
		}
		if m["raftproxy_stream_messages_total"] == 0 {
			t.Errorf("%s: no messages on the shared peer streams", n)
		}
	}
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}
