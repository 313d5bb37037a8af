package test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// drainBytes reads what the server sends until it has been quiet for quiet.
func drainBytes(c *rawConn, quiet time.Duration) (string, error) {
	var out []byte
	buf := make([]byte, 64<<10)
	for {
		if err := c.conn.SetReadDeadline(time.Now().Add(quiet)); err != nil {
			return "", err
		}
		n, err := c.r.Read(buf)
		out = append(out, buf[:n]...)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return string(out), nil
			}
			return string(out), err
		}
	}
}

// pubsubStep is one command sent on connection conn (0: the subscriber,
// 1: the publisher) of a script.
type pubsubStep struct {
	conn int
	args []string
}

func sub(args ...string) pubsubStep { return pubsubStep{0, args} }
func pub(args ...string) pubsubStep { return pubsubStep{1, args} }

var pubsubScripts = []struct {
	name  string
	steps []pubsubStep
}{
	{"channels, patterns and subscribed mode", []pubsubStep{
		sub("SUBSCRIBE", "a", "b", "a"),
		sub("PSUBSCRIBE", "n*", "h[ae]llo"),
		pub("PUBLISH", "a", "hello"),
		pub("PUBLISH", "news", "x"),
		pub("PUBLISH", "hallo", "y"),
		pub("PUBLISH", "nobody", "z"),
		pub("PUBLISH", "zzz", "z"),
		sub("GET", "k"),
		sub("CLIENT", "ID"),
		sub("PING"),
		sub("PING", "x"),
		pub("PUBSUB", "NUMSUB", "a", "b", "c"),
		pub("PUBSUB", "NUMPAT"),
		pub("PUBSUB", "CHANNELS", "a*"),
		sub("UNSUBSCRIBE", "a", "zz"),
		sub("UNSUBSCRIBE"),
		sub("PUNSUBSCRIBE", "n*"),
		sub("PUNSUBSCRIBE"),
		sub("UNSUBSCRIBE"),
		sub("PUNSUBSCRIBE"),
		sub("PING"),
		sub("GET", "k"),
		pub("PUBLISH", "a", "gone"),
	}},
	{"shard channels", []pubsubStep{
		sub("SSUBSCRIBE", "s1", "s2"),
		sub("SUBSCRIBE", "c"),
		pub("SPUBLISH", "s1", "m1"),
		pub("PUBLISH", "s1", "not-shard"),
		pub("PUBSUB", "SHARDNUMSUB", "s1", "s3"),
		pub("PUBSUB", "SHARDCHANNELS", "*1"), // one: redis lists in hash order
		sub("SUNSUBSCRIBE", "s1"),
		sub("SUNSUBSCRIBE"),
		sub("SUNSUBSCRIBE"),
		sub("UNSUBSCRIBE"),
	}},
	{"RESET leaves subscribed mode", []pubsubStep{
		sub("SUBSCRIBE", "r"),
		sub("RESET"),
		pub("PUBLISH", "r", "after-reset"),
		sub("PING"),
	}},
	{"publish inside MULTI", []pubsubStep{
		sub("SUBSCRIBE", "t"),
		pub("MULTI"),
		pub("SET", "ps:tx", "1"),
		pub("PUBLISH", "t", "in-tx"),
		pub("PUBLISH", "none", "in-tx"),
		pub("EXEC"),
	}},
	{"RESP3 push messages", []pubsubStep{
		sub("HELLO", "3"),
		sub("SUBSCRIBE", "a"),
		sub("PSUBSCRIBE", "a*"),
		pub("PUBLISH", "a", "m"),
		sub("GET", "ps:missing"),
		sub("PING"),
		sub("PUBSUB", "NUMSUB", "a"),
		sub("PUBSUB", "NUMPAT"),
		sub("UNSUBSCRIBE"),
		sub("PUNSUBSCRIBE"),
		sub("UNSUBSCRIBE"),
		sub("SSUBSCRIBE", "s"),
		pub("SPUBLISH", "s", "m3"),
		sub("SUNSUBSCRIBE", "s"),
	}},
}

// TestPubSubReplies runs subscriber/publisher scripts against a node of the
// cluster and a stock redis-server, and compares every byte each connection
// receives.
func TestPubSubReplies(t *testing.T) {
	ctx := testContext(t, 3*time.Minute)
	c := StartCluster(ctx, t, ClusterOptions{})
	leader, followers := c.Leader(ctx)
	stock := startStockRedis(ctx, t)

	run := func(t *testing.T, addr string, steps []pubsubStep) []string {
		t.Helper()
		var conns [2]*rawConn
		for i := range conns {
			rc, err := dialRaw(addr, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			conns[i] = rc
		}
		var out []string
		for _, s := range steps {
			if err := conns[s.conn].Send(s.args...); err != nil {
				t.Fatal(err)
			}
			// Both connections wait out their quiet time together.
			var got [2]string
			var errs [2]error
			var wg sync.WaitGroup
			for i, rc := range conns {
				wg.Add(1)
				go func() {
					defer wg.Done()
					got[i], errs[i] = drainBytes(rc, 150*time.Millisecond)
				}()
			}
			wg.Wait()
			for i, err := range errs {
				if err != nil {
					t.Fatalf("%q: conn %d: %v", s.args, i, err)
				}
			}
			out = append(out, got[:]...)
		}
		return out
	}
	for _, sc := range pubsubScripts {
		var want []string
		t.Run("stock/"+sc.name, func(t *testing.T) { want = run(t, stock, sc.steps) })
		for _, target := range []struct{ role, addr string }{{"follower", followers[0].Addr}, {"leader", leader.Addr}} {
			t.Run(target.role+"/"+sc.name, func(t *testing.T) {
				if want == nil {
					t.Skip("the stock redis-server run failed")
				}
				got := run(t, target.addr, sc.steps)
				for i, s := range sc.steps {
					for k := range 2 {
						w, g := want[2*i+k], got[2*i+k]
						if strings.HasPrefix(s.args[0], "HELLO") {
							continue // server details differ
						}
						if g != w {
							t.Errorf("after %q, connection %d got %q, redis sent %q", s.args, k, g, w)
						}
					}
				}
			})
		}
	}
}

// TestPubSubPatterns checks glob matching against a stock redis-server:
// a subscriber to many patterns receives, for each channel published, the
// same pmessages (compared as a set: redis delivers them in its hash
// table's order) and the publisher the same count.
func TestPubSubPatterns(t *testing.T) {
	ctx := testContext(t, 2*time.Minute)
	c := StartCluster(ctx, t, ClusterOptions{})
	_, followers := c.Leader(ctx)
	stock := startStockRedis(ctx, t)
	patterns := []string{"*", "a*", "*a", "a?c", "a[bc]d", "a[^b]d", "a[b-d]e", "a[d-b]e", "a\\*c", "a\\", "[abc",
		"[", "[^", "a[\\]]b", "**", "a*b*c", "?", "h?llo*", "[a-]", "x[-a]y"}
	channels := []string{"", "a", "abc", "acd", "abd", "ace", "a*c", "axc", "a\\", "b", "[", "a]b", "aXbYc", "hello.x", "-", "x-y", "ba", "\xff"}

	run := func(addr string) ([]string, error) {
		s, err := dialRaw(addr, 5*time.Second)
		if err != nil {
			return nil, err
		}
		defer s.Close()
		p, err := dialRaw(addr, 5*time.Second)
		if err != nil {
			return nil, err
		}
		defer p.Close()
		for _, pat := range patterns {
			if _, err := s.Do("PSUBSCRIBE", pat); err != nil {
				return nil, err
			}
		}
		var out []string
		for _, ch := range channels {
			v, err := p.Do("PUBLISH", ch, "m")
			if err != nil {
				return nil, err
			}
			var got []string
			for range v.Int {
				m, err := s.Read()
				if err != nil {
					return nil, err
				}
				got = append(got, m.String())
			}
			slices.Sort(got)
			out = append(out, fmt.Sprintf("%q: %d %v", ch, v.Int, got))
		}
		return out, nil
	}
	want, err := run(stock)
	if err != nil {
		t.Fatal(err)
	}
	got, err := run(followers[0].Addr)
	if err != nil {
		t.Fatal(err)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("raftproxy %s\n     redis %s", got[i], want[i])
		}
	}
}

// TestPubSubAcrossNodes: a subscriber on every node receives every
// acknowledged message exactly once and in the same order as the others,
// while publishers write through every node and leadership moves.
func TestPubSubAcrossNodes(t *testing.T) {
	ctx := testContext(t, 3*time.Minute)
	c := StartCluster(ctx, t, ClusterOptions{})
	leader, _ := c.Leader(ctx)

	subs := make([]*redis.PubSub, len(c.Nodes))
	for i, n := range c.Nodes {
		subs[i] = n.Client().Subscribe(ctx, "orders")
		if _, err := subs[i].Receive(ctx); err != nil { // the confirmation
			t.Fatal(err)
		}
	}
	const each = 150
	var mu sync.Mutex
	acked := map[string]bool{}
	var wg sync.WaitGroup
	for i, n := range c.Nodes {
		wg.Add(1)
		go func(i int, cl *redis.Client) {
			defer wg.Done()
			for j := range each {
				m := fmt.Sprintf("p%d-%03d", i, j)
				err := cl.Publish(ctx, "orders", m).Err()
				mu.Lock()
				acked[m] = err == nil
				mu.Unlock()
			}
		}(i, n.Client())
	}
	time.Sleep(300 * time.Millisecond)
	if v, err := leader.Do(ctx, 10*time.Second, "RAFT.TRANSFER_LEADER"); err != nil || v.IsError() {
		t.Fatalf("transfer leader: %v %v", v, err)
	}
	wg.Wait()
	// A marker published last tells each subscriber it has seen everything.
	if err := c.Nodes[0].Client().Publish(ctx, "orders", "end").Err(); err != nil {
		t.Fatal(err)
	}
	var seqs [][]string
	for i, ps := range subs {
		var seq []string
		for {
			rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			m, err := ps.ReceiveMessage(rctx)
			cancel()
			if err != nil {
				t.Fatalf("subscriber on node %d after %d messages: %v", i, len(seq), err)
			}
			if m.Payload == "end" {
				break
			}
			seq = append(seq, m.Payload)
		}
		seqs = append(seqs, seq)
		ps.Close()
	}
	lost := 0
	for m, ok := range acked {
		if ok && !slices.Contains(seqs[0], m) {
			t.Errorf("acknowledged message %s never delivered", m)
			lost++
		}
	}
	seen := map[string]bool{}
	last := map[byte]string{}
	for _, m := range seqs[0] {
		if seen[m] {
			t.Errorf("message %s delivered twice", m)
		}
		seen[m] = true
		if p := m[1]; last[p] > m {
			t.Errorf("publisher %c's %s after %s", p, m, last[p])
		}
		last[m[1]] = m
	}
	for i := 1; i < len(seqs); i++ {
		if !slices.Equal(seqs[i], seqs[0]) {
			t.Errorf("node %d's subscriber saw %d messages in another order than node 0's (%d)", i, len(seqs[i]), len(seqs[0]))
		}
	}
	t.Logf("%d messages delivered in the same order on %d nodes", len(seqs[0]), len(seqs))
}

// TestPubSubGoRedis: go-redis's PubSub (RESP2 and RESP3 clients) through
// a follower, with PSUBSCRIBE, PING in subscribed mode and PUBSUB.
func TestPubSubGoRedis(t *testing.T) {
	ctx := testContext(t, 2*time.Minute)
	c := StartCluster(ctx, t, ClusterOptions{})
	leader, followers := c.Leader(ctx)
	for _, proto := range []int{2, 3} {
		t.Run("RESP"+strconv.Itoa(proto), func(t *testing.T) {
			cl := redis.NewClient(&redis.Options{Addr: followers[0].Addr, Protocol: proto, DisableIdentity: true})
			defer cl.Close()
			ps := cl.PSubscribe(ctx, "gr.*")
			defer ps.Close()
			if err := ps.Subscribe(ctx, "plain"); err != nil {
				t.Fatal(err)
			}
			if err := ps.Ping(ctx); err != nil {
				t.Fatal(err)
			}
			ch := ps.Channel()
			if err := waitFor(ctx, 10*time.Second, 50*time.Millisecond, "PUBSUB NUMPAT on the follower", func(ctx context.Context) error {
				if n, err := followers[0].Client().PubSubNumPat(ctx).Result(); err != nil || n != 1 {
					return fmt.Errorf("NUMPAT %d %v", n, err)
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			pc := leader.Client()
			if n, err := pc.Publish(ctx, "gr.one", "1").Result(); err != nil || n != 0 {
				t.Fatalf("PUBLISH through the leader: %d %v (the subscriber is on a follower: per-node count 0)", n, err)
			}
			if err := pc.Publish(ctx, "plain", "2").Err(); err != nil {
				t.Fatal(err)
			}
			for _, want := range []string{"gr.*/gr.one/1", "/plain/2"} {
				select {
				case m := <-ch:
					if got := m.Pattern + "/" + m.Channel + "/" + m.Payload; got != want {
						t.Fatalf("got %s, want %s", got, want)
					}
				case <-time.After(10 * time.Second):
					t.Fatalf("no message %s", want)
				}
			}
			if n, err := followers[0].Client().Publish(ctx, "plain", "3").Result(); err != nil || n != 1 {
				t.Fatalf("PUBLISH through the subscriber's node: %d %v", n, err)
			}
		})
	}
}

// TestPubSubRestart: a restarted node does not deliver the messages of
// entries it applies again to subscribers that came after the restart.
func TestPubSubRestart(t *testing.T) {
	ctx := testContext(t, 3*time.Minute)
	c := StartCluster(ctx, t, ClusterOptions{})
	leader, followers := c.Leader(ctx)
	f := followers[0]
	lc := leader.Client()
	for i := range 20 {
		if err := lc.Publish(ctx, "hist", "old"+strconv.Itoa(i)).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := lc.Set(ctx, "ps:restart", "1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := waitForReads(ctx, f, map[string]string{"ps:restart": "1"}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // the follower persists the commit index
	if err := f.StopProxy(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := f.StartProxy(ctx); err != nil {
		t.Fatal(err)
	}
	// Subscribe as soon as the proxy answers, while the node may still be
	// applying its log again.
	var ps *redis.PubSub
	if err := waitFor(ctx, 20*time.Second, 20*time.Millisecond, "SUBSCRIBE on the restarted node", func(ctx context.Context) error {
		cl := redis.NewClient(&redis.Options{Addr: f.Addr, Protocol: 2, DisableIdentity: true, MaxRetries: -1})
		p := cl.Subscribe(ctx, "hist")
		if _, err := p.Receive(ctx); err != nil {
			p.Close()
			cl.Close()
			return err
		}
		ps = p
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	defer ps.Close()
	if _, err := c.WaitStable(ctx); err != nil {
		t.Fatal(err)
	}
	if err := lc.Publish(ctx, "hist", "new").Err(); err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	m, err := ps.ReceiveMessage(rctx)
	if err != nil {
		t.Fatal(err)
	}
	if m.Payload != "new" {
		t.Fatalf("a subscriber after the restart received %q", m.Payload)
	}
}

// TestPubSubSlowSubscriber: a subscriber that stops reading never holds up
// the applier or other subscribers; past the 32 MiB limit it is
// disconnected.
func TestPubSubSlowSubscriber(t *testing.T) {
	ctx := testContext(t, 2*time.Minute)
	c := StartCluster(ctx, t, ClusterOptions{})
	_, followers := c.Leader(ctx)
	f := followers[0]
	stuck, err := dialRaw(f.Addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer stuck.Close()
	if _, err := stuck.Do("SUBSCRIBE", "big"); err != nil {
		t.Fatal(err)
	}
	live := f.Client().Subscribe(ctx, "big")
	defer live.Close()
	if _, err := live.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	const n, size = 700, 64 << 10 // 44 MiB
	payload := strings.Repeat("x", size)
	received := make(chan int, 1)
	go func() {
		got := 0
		for got < n {
			rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			m, err := live.ReceiveMessage(rctx)
			cancel()
			if err != nil || len(m.Payload) != size {
				break
			}
			got++
		}
		received <- got
	}()
	pc := c.Nodes[0].Client()
	start := time.Now()
	for i := 0; i < n; i += 50 {
		if _, err := pc.Pipelined(ctx, func(p redis.Pipeliner) error {
			for range 50 {
				p.Publish(ctx, "big", payload)
			}
			return nil
		}); err != nil {
			t.Fatalf("publishing at %d: %v", i, err)
		}
	}
	t.Logf("published %d MiB in %v", n*size>>20, time.Since(start).Round(time.Millisecond))
	if got := <-received; got != n {
		t.Fatalf("the reading subscriber received %d of %d messages", got, n)
	}
	// The stuck one: what the kernel buffered, then the end of the connection.
	if err := stuck.conn.SetReadDeadline(time.Now().Add(20 * time.Second)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	total := 0
	for {
		k, err := stuck.r.Read(buf)
		total += k
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("the stuck subscriber was not disconnected (read %d bytes)", total)
			}
			break
		}
	}
	if total >= n*size {
		t.Fatalf("the stuck subscriber received everything (%d bytes)", total)
	}
	t.Logf("the stuck subscriber was disconnected after %d MiB", total>>20)
}
