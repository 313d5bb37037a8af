package test

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/raftproxy/raftproxy/proxy"
	"github.com/raftproxy/raftproxy/slotmap"
)

// TestShardedCluster: RAFT.CLUSTER INIT SHARDS 3 splits the slots over three
// raft groups, every node holds each on its own client port (the shard's
// index above the node's first), and JOIN joins a node to all of them.
// go-redis's ClusterClient, given one address, finds the three masters
// from CLUSTER SLOTS and reads and writes keys of every slot; each shard
// holds only its own slots' keys; a command on a shard that does not own
// its slot gets -MOVED to the owner's leader, keys of two slots get
// -CROSSSLOT; and a restarted node comes back with every shard.
func TestShardedCluster(t *testing.T) {
	const shards = 3
	ctx := testContext(t, 4*time.Minute)
	c := StartCluster(ctx, t, ClusterOptions{Shards: shards, Metrics: true})
	n0 := c.Nodes[0]
	shardPort := func(n *Node, k int) string { return proxy.ShardAddr(n.Addr, k) }

	// Every shard's group has every node as a voter.
	err := waitFor(ctx, 30*time.Second, 100*time.Millisecond, "every shard with 3 voters and a leader", func(ctx context.Context) error {
		for _, n := range c.Nodes {
			for k := 0; k < shards; k++ {
				v, err := (&Node{c: c, Addr: shardPort(n, k)}).Do(ctx, 2*time.Second, "RAFT.INFO")
				if err != nil {
					return err
				}
				info, err := parseRaftInfo(v.Str)
				if err != nil {
					return err
				}
				if info.Get("num_voting_nodes") != "3" || info.Get("leader_id") == "0" {
					return fmt.Errorf("%s shard %d: %s voters, leader %s", n, k, info.Get("num_voting_nodes"), info.Get("leader_id"))
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// The first node led every shard after INIT; the leaders spread, one
	// shard each.
	err = waitFor(ctx, 30*time.Second, 200*time.Millisecond, "one shard leader per node", func(ctx context.Context) error {
		rows, err := n0.Client().Do(ctx, "RAFT.SHARD", "LIST").Slice()
		if err != nil {
			return err
		}
		leaders := map[string]bool{}
		for _, r := range rows {
			if row, _ := r.([]any); len(row) == 5 {
				l, _ := row[3].(string)
				leaders[l] = true
			}
		}
		if len(leaders) != shards || leaders[""] {
			return fmt.Errorf("leaders %v", leaders)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// /readyz checks every shard the node holds.
	if code, body := readyz(ctx, t, n0); code != 200 || !strings.Contains(body, "[ok] shard 2 leader\n") || !strings.Contains(body, "[ok] shard 1 applied\n") {
		t.Errorf("/readyz: %d\n%s", code, body)
	}
	// RAFT.SHARD LIST: one row per shard, its id first, then its ranges,
	// members, leader and moves.
	rows, err := n0.Client().Do(ctx, "RAFT.SHARD", "LIST").Slice()
	if err != nil || len(rows) != shards {
		t.Fatalf("RAFT.SHARD LIST = %v, %v; want %d rows", rows, err, shards)
	}
	for _, r := range rows {
		row, _ := r.([]any)
		if len(row) != 5 {
			t.Fatalf("RAFT.SHARD LIST row %v: want [id ranges members leader moves]", r)
		}
		id, _ := row[0].(string)
		ranges, _ := row[1].([]any)
		members, _ := row[2].([]any)
		leader, _ := row[3].(string)
		if id == "" || len(ranges) != 1 || len(members) != 3 || leader == "" {
			t.Errorf("RAFT.SHARD LIST row %v", row)
		}
	}
	// /metrics: every node exports every shard's raft state, labelled with
	// the shard id; each shard has one leader among the nodes.
	err = waitFor(ctx, 20*time.Second, 200*time.Millisecond, "one leader per shard in /metrics", func(ctx context.Context) error {
		leaders := map[string]int{}
		for _, n := range c.Nodes {
			sc := scrapeNode(ctx, t, n)
			for _, r := range rows {
				id, _ := r.([]any)[0].(string)
				label := `{shard="` + id + `"}`
				if sc["raftproxy_shard_has_leader"+label] != 1 || sc["raftproxy_shard_applied_index"+label] < 1 {
					return fmt.Errorf("%s: shard %s has_leader %v applied %v", n, id,
						sc["raftproxy_shard_has_leader"+label], sc["raftproxy_shard_applied_index"+label])
				}
				leaders[id] += int(sc["raftproxy_shard_is_leader"+label])
			}
		}
		for _, r := range rows {
			if id, _ := r.([]any)[0].(string); leaders[id] != 1 {
				return fmt.Errorf("shard %s: %d nodes say they lead it", id, leaders[id])
			}
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}

	cc := newClusterClient(n0.Addr)
	defer cc.Close()
	slots, err := cc.ClusterSlots(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	covered := 0
	for _, s := range slots {
		covered += s.End - s.Start + 1
		if len(s.Nodes) != 3 {
			t.Errorf("CLUSTER SLOTS range %d-%d lists %d nodes, want 3", s.Start, s.End, len(s.Nodes))
		}
	}
	if len(slots) != shards || covered != slotmap.NumSlots {
		t.Fatalf("CLUSTER SLOTS = %+v: want %d ranges covering every slot", slots, shards)
	}

	const keys = 300
	for i := 0; i < keys; i++ {
		if err := cc.Set(ctx, "key:"+strconv.Itoa(i), i, 0).Err(); err != nil {
			t.Fatalf("SET key:%d: %v", i, err)
		}
	}
	for i := 0; i < keys; i++ {
		if v, err := cc.Get(ctx, "key:"+strconv.Itoa(i)).Int(); err != nil || v != i {
			t.Fatalf("GET key:%d = %d, %v", i, v, err)
		}
	}
	// Each shard's redis holds only its slots' keys, all of them together.
	total := 0
	for k := 0; k < shards; k++ {
		v, err := (&Node{c: c, Addr: shardPort(n0, k)}).Do(ctx, 5*time.Second, "DBSIZE")
		if err != nil || v.Kind != ':' {
			t.Fatalf("DBSIZE on shard %d: %v %v", k, v, err)
		}
		if v.Int == 0 {
			t.Errorf("shard %d holds no key of %d", k, keys)
		}
		total += int(v.Int)
	}
	if total != keys {
		t.Errorf("the shards hold %d keys together, want %d", total, keys)
	}

	// A shard port that does not own the key's slot redirects.
	slot := slotmap.KeySlot([]byte("key:1"))
	wrong := -1
	for k := 0; k < shards && wrong < 0; k++ {
		v, err := (&Node{c: c, Addr: shardPort(n0, k)}).Do(ctx, 5*time.Second, "GET", "key:1")
		if err != nil {
			t.Fatal(err)
		}
		if v.Kind == '-' {
			wrong = k
			if want := fmt.Sprintf("MOVED %d ", slot); !strings.HasPrefix(v.Str, want) {
				t.Errorf("GET key:1 on shard %d: %s, want %s<leader>", k, v.Str, want)
			}
		}
	}
	if wrong < 0 {
		t.Error("every shard port served key:1")
	}

	// COUNTKEYSINSLOT and GETKEYSINSLOT answer for the keys of the shard
	// a port serves: the owner counts what was written to the slot, and
	// every other shard none.
	inSlot := map[string]bool{}
	for i := 0; i < keys; i++ {
		if k := "key:" + strconv.Itoa(i); slotmap.KeySlot([]byte(k)) == slot {
			inSlot[k] = true
		}
	}
	for k := 0; k < shards; k++ {
		sn := &Node{c: c, Addr: shardPort(n0, k)}
		g, err := sn.Do(ctx, 5*time.Second, "GET", "key:1")
		if err != nil {
			t.Fatal(err)
		}
		want := len(inSlot)
		if g.Kind == '-' { // not the owner
			want = 0
		}
		if v, err := sn.Do(ctx, 5*time.Second, "CLUSTER", "COUNTKEYSINSLOT", strconv.Itoa(slot)); err != nil || v.Kind != ':' || int(v.Int) != want {
			t.Errorf("shard %d: CLUSTER COUNTKEYSINSLOT %d = %v %v, want %d", k, slot, v, err, want)
		}
		v, err := sn.Do(ctx, 5*time.Second, "CLUSTER", "GETKEYSINSLOT", strconv.Itoa(slot), "1000")
		if err != nil || len(v.Arr) != want {
			t.Errorf("shard %d: CLUSTER GETKEYSINSLOT %d 1000 = %v %v, want %d keys", k, slot, v, err, want)
		}
		for _, e := range v.Arr {
			if !inSlot[e.Str] {
				t.Errorf("shard %d: GETKEYSINSLOT %d answered %q", k, slot, e.Str)
			}
		}
	}
	for _, bad := range []struct {
		args []string
		want string
	}{
		{[]string{"CLUSTER", "COUNTKEYSINSLOT", "16384"}, "ERR Invalid slot"},
		{[]string{"CLUSTER", "COUNTKEYSINSLOT", "x"}, "ERR value is not an integer or out of range"},
		{[]string{"CLUSTER", "GETKEYSINSLOT", "1", "-1"}, "ERR Invalid slot or number of keys"},
	} {
		if v, err := n0.Do(ctx, 5*time.Second, bad.args...); err != nil || v.Kind != '-' || v.Str != bad.want {
			t.Errorf("%v = %v %v, want -%s", bad.args, v, err, bad.want)
		}
	}
	v, err := n0.Do(ctx, 5*time.Second, "MSET", "{a}x", "1", "{b}y", "2")
	if err != nil || v.Kind != '-' || v.Str != "CROSSSLOT Keys in request don't hash to the same slot" {
		t.Errorf("MSET across slots: %v %v", v, err)
	}
	if err := cc.MSet(ctx, "{t}x", "1", "{t}y", "2").Err(); err != nil {
		t.Errorf("MSET in one slot: %v", err)
	}
	if vals, err := cc.MGet(ctx, "{t}x", "{t}y").Result(); err != nil || fmt.Sprint(vals) != "[1 2]" {
		t.Errorf("MGET in one slot: %v %v", vals, err)
	}
	// WATCH on a shard that does not own the key redirects, like any keyed
	// command.
	if v, err := (&Node{c: c, Addr: shardPort(n0, wrong)}).Do(ctx, 5*time.Second, "WATCH", "key:1"); err != nil || v.Kind != '-' || !strings.HasPrefix(v.Str, "MOVED ") {
		t.Errorf("WATCH key:1 on shard %d: %v %v", wrong, v, err)
	}
	// A transaction runs in one slot.
	pipe := cc.TxPipeline()
	pipe.Incr(ctx, "{t}n")
	pipe.Incr(ctx, "{t}n")
	if _, err := pipe.Exec(ctx); err != nil {
		t.Errorf("MULTI/EXEC in one slot: %v", err)
	}
	if n, err := cc.Get(ctx, "{t}n").Int(); err != nil || n != 2 {
		t.Errorf("after the transaction: %d %v", n, err)
	}

	info, err := n0.Client().Do(ctx, "CLUSTER", "INFO").Text()
	if err != nil || !strings.Contains(info, "cluster_state:ok\r\n") || !strings.Contains(info, fmt.Sprintf("cluster_size:%d\r\n", shards)) ||
		!strings.Contains(info, "cluster_known_nodes:9\r\n") {
		t.Errorf("CLUSTER INFO: %q %v", info, err)
	}
	// redis-cli -c follows the -MOVED of a shard that does not own the key.
	if _, err := exec.LookPath("redis-cli"); err == nil {
		host, port, _ := net.SplitHostPort(shardPort(n0, wrong))
		out, err := exec.CommandContext(ctx, "redis-cli", "-c", "-h", host, "-p", port, "GET", "key:1").CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != "1" {
			t.Errorf("redis-cli -c GET key:1 through shard %d: %q %v", wrong, out, err)
		}
	}

	// A restarted node resumes every shard from its data directory.
	n2 := c.Nodes[2]
	if err := n2.StopProxy(20 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := n2.StartProxy(ctx); err != nil {
		t.Fatal(err)
	}
	err = waitFor(ctx, 30*time.Second, 200*time.Millisecond, "every key through the restarted node's ports", func(ctx context.Context) error {
		cc2 := newClusterClient(n2.Addr)
		defer cc2.Close()
		for i := 0; i < keys; i += 7 {
			if v, err := cc2.Get(ctx, "key:"+strconv.Itoa(i)).Int(); err != nil || v != i {
				return fmt.Errorf("GET key:%d = %d, %v", i, v, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestShardedClients: the cluster clients users have, against a sharded
// cluster with follower-proxy off (every write a follower gets is
// redirected): redis-py's RedisCluster (full coverage required, as by
// default), go-redis's ClusterClient reading from replicas (ReadOnly,
// RouteByLatency) and through a transaction, redis-benchmark --cluster,
// and go-redis again after a node holding shard leaders stops.
func TestShardedClients(t *testing.T) {
	ctx := testContext(t, 4*time.Minute)
	c := StartCluster(ctx, t, ClusterOptions{Shards: 3, ExtraArgs: []string{"--follower-proxy=false"}})
	n0 := c.Nodes[0]
	// Every shard has its 3 voters and the leaders are spread.
	err := waitFor(ctx, 30*time.Second, 200*time.Millisecond, "one shard leader per node", func(ctx context.Context) error {
		rows, err := n0.Client().Do(ctx, "RAFT.SHARD", "LIST").Slice()
		if err != nil {
			return err
		}
		leaders := map[string]bool{}
		for _, r := range rows {
			row, _ := r.([]any)
			members, _ := row[2].([]any)
			l, _ := row[3].(string)
			if len(members) != 3 {
				return fmt.Errorf("a shard with %d members", len(members))
			}
			leaders[l] = true
		}
		if len(leaders) != 3 || leaders[""] {
			return fmt.Errorf("leaders %v", leaders)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	if py, err := exec.LookPath("/usr/bin/python3"); err == nil && exec.Command(py, "-c", "from redis.cluster import RedisCluster").Run() == nil {
		host, port, _ := net.SplitHostPort(c.Nodes[1].Addr)
		out, err := exec.CommandContext(ctx, py, "-c", redisPyCluster, host, port).CombinedOutput()
		if err != nil {
			t.Fatalf("redis-py RedisCluster: %v\n%s", err, out)
		}
		if f := strings.Fields(string(out)); len(f) != 2 || f[0] != "9" {
			t.Errorf("redis-py saw %q, want 9 cluster nodes (3 shards on 3 nodes)", out)
		}
	} else {
		t.Log("redis-py is not installed for /usr/bin/python3 (make deps installs python3-redis): its part is skipped")
	}

	for _, opts := range []struct {
		name                     string
		readOnly, routeByLatency bool
	}{{"ReadOnly", true, false}, {"RouteByLatency", true, true}} {
		cc := newClusterClient(c.Nodes[2].Addr)
		o := cc.Options()
		cc.Close()
		o.ReadOnly, o.RouteByLatency = opts.readOnly, opts.routeByLatency
		cc = redis.NewClusterClient(o)
		for i := 0; i < 100; i++ {
			k := fmt.Sprintf("%s:%d", opts.name, i)
			if err := cc.Set(ctx, k, i, 0).Err(); err != nil {
				t.Fatalf("%s: SET %s: %v", opts.name, k, err)
			}
			// A replica's read is linearizable too: it sees the write.
			if v, err := cc.Get(ctx, k).Int(); err != nil || v != i {
				t.Fatalf("%s: GET %s = %d, %v", opts.name, k, v, err)
			}
		}
		cc.Close()
	}
	cc := newClusterClient(n0.Addr)
	defer cc.Close()
	if _, err := cc.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, "{tx}a", "1", 0)
		p.Incr(ctx, "{tx}b")
		return nil
	}); err != nil {
		t.Errorf("TxPipeline in one slot: %v", err)
	}
	checkClusterPubSub(ctx, t, c, cc)

	if _, err := exec.LookPath("redis-benchmark"); err == nil {
		host, port, _ := net.SplitHostPort(n0.Addr)
		out, err := exec.CommandContext(ctx, "redis-benchmark", "--cluster", "-h", host, "-p", port, "-n", "3000", "-c", "10", "-t", "set,get", "-q").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "SET:") || !strings.Contains(string(out), "GET:") {
			t.Errorf("redis-benchmark --cluster: %v\n%s", err, out)
		}
	}

	// Stop the node leading the shard of "survive": the shard elects
	// another leader, and the client follows it.
	slot := slotmap.KeySlot([]byte("survive"))
	var victim *Node
	for _, s := range mustSlots(ctx, t, cc) {
		if s.Start <= slot && slot <= s.End {
			for _, n := range c.Nodes {
				for k := 0; k < 3; k++ {
					if proxy.ShardAddr(n.Addr, k) == s.Nodes[0].Addr {
						victim = n
					}
				}
			}
		}
	}
	if victim == nil {
		t.Fatal("no node leads the shard of slot", slot)
	}
	if err := victim.StopProxy(20 * time.Second); err != nil {
		t.Fatal(err)
	}
	err = waitFor(ctx, 30*time.Second, 200*time.Millisecond, "writes after the leader stopped", func(ctx context.Context) error {
		return cc.Set(ctx, "survive", "yes", 0).Err()
	})
	if err != nil {
		t.Fatal(err)
	}
	if v, err := cc.Get(ctx, "survive").Result(); err != nil || v != "yes" {
		t.Errorf("GET survive = %q, %v", v, err)
	}

	// RAFT.NODE REMOVE takes the stopped node out of every shard.
	alive, _ := c.Leader(ctx) // of the primary group, which takes RAFT.NODE
	if victim.ID == "" {
		t.Fatal("the victim's node id is unknown")
	}
	if v, err := alive.Do(ctx, 30*time.Second, "RAFT.NODE", "REMOVE", victim.ID); err != nil || v.Kind != '+' {
		t.Fatalf("RAFT.NODE REMOVE %s: %v %v", victim.ID, v, err)
	}
	c.Forget(victim)
	err = waitFor(ctx, 20*time.Second, 200*time.Millisecond, "every shard without the removed node", func(ctx context.Context) error {
		rows, err := alive.Client().Do(ctx, "RAFT.SHARD", "LIST").Slice()
		if err != nil {
			return err
		}
		for _, r := range rows {
			row, _ := r.([]any)
			members, _ := row[2].([]any)
			for _, m := range members {
				if m == victim.ID {
					return fmt.Errorf("shard %v still lists %s", row[0], victim.ID)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := cc.Set(ctx, "after-remove", "1", 0).Err(); err != nil {
		t.Errorf("a write after the removal: %v", err)
	}
}

func mustSlots(ctx context.Context, t *testing.T, cc *redis.ClusterClient) []redis.ClusterSlot {
	t.Helper()
	slots, err := cc.ClusterSlots(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	return slots
}

// checkClusterPubSub: PUBLISH reaches the channel's subscribers whichever
// shard's port it is sent to, as Redis Cluster forwards it to every node:
// go-redis subscribes on the node of the first channel's slot and publishes
// on any. Each message arrives once.
func checkClusterPubSub(ctx context.Context, t *testing.T, c *Cluster, cc *redis.ClusterClient) {
	t.Helper()
	var chans []string
	for i := 0; i < 12; i++ {
		chans = append(chans, fmt.Sprintf("news-%d", i))
	}
	sub := cc.Subscribe(ctx, chans...)
	defer sub.Close()
	for range chans {
		if _, err := sub.ReceiveTimeout(ctx, 10*time.Second); err != nil {
			t.Fatalf("subscribe confirmation: %v", err)
		}
	}
	want := map[string]bool{}
	for _, ch := range chans {
		for j := 0; j < 3; j++ {
			msg := fmt.Sprintf("%s/%d", ch, j)
			want[ch+" "+msg] = true
			if err := cc.Publish(ctx, ch, msg).Err(); err != nil {
				t.Fatalf("PUBLISH %s: %v", ch, err)
			}
		}
	}
	// And on every shard's port of every node, by hand (a follower that
	// does not forward writes redirects to its shard's leader).
	for _, n := range c.Nodes {
		for k := 0; k < 3; k++ {
			msg := fmt.Sprintf("by hand to %s shard %d", n, k)
			want[chans[0]+" "+msg] = true
			v, err := (&Node{c: c, Addr: proxy.ShardAddr(n.Addr, k)}).Do(ctx, 5*time.Second, "PUBLISH", chans[0], msg)
			if f := strings.Fields(v.Str); err == nil && v.Kind == '-' && len(f) == 3 && f[0] == "MOVED" {
				v, err = (&Node{c: c, Addr: f[2]}).Do(ctx, 5*time.Second, "PUBLISH", chans[0], msg)
			}
			if err != nil || v.Kind != ':' {
				t.Fatalf("PUBLISH on %s shard %d: %v %v", n, k, v, err)
			}
		}
	}
	got := map[string]int{}
	for len(got) < len(want) {
		m, err := sub.ReceiveTimeout(ctx, 10*time.Second)
		if err != nil {
			t.Fatalf("received %d of %d messages published across the shards: %v", len(got), len(want), err)
		}
		msg, ok := m.(*redis.Message)
		if !ok {
			continue
		}
		key := msg.Channel + " " + msg.Payload
		if !want[key] {
			t.Fatalf("unexpected message %q", key)
		}
		if got[key]++; got[key] > 1 {
			t.Fatalf("message %q arrived twice", key)
		}
	}
	// No copy follows.
	if m, err := sub.ReceiveTimeout(ctx, 500*time.Millisecond); err == nil {
		t.Fatalf("a message after all were received: %v", m)
	}
}
