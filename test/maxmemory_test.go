package test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestMaxMemory: maxmemory is decided once, through the log. With
// noeviction, writes through every node fill memory past the limit until
// they get redis's OOM error; every acknowledged write is there and every
// redis holds the same data (none refused what another applied). With
// allkeys-lru, writes go on past the limit, the leader evicts the same
// keys on every node, and memory stays near the limit.
func TestMaxMemory(t *testing.T) {
	ctx := testContext(t, 4*time.Minute)
	c := StartCluster(ctx, t, ClusterOptions{Metrics: true})
	leader, _ := c.Leader(ctx)
	if leader == nil {
		t.Fatal("no leader")
	}
	used := func(n *Node) int64 {
		info, err := n.RedisClient().Info(ctx, "memory").Result()
		if err != nil {
			t.Fatal(err)
		}
		var u int64
		for _, l := range strings.Split(info, "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(l), "used_memory:"); ok {
				fmt.Sscan(v, &u)
			}
		}
		return u
	}
	base := used(leader)
	limit := base + 8<<20
	do := func(n *Node, args ...string) respValue {
		t.Helper()
		v, err := n.Do(ctx, 10*time.Second, args...)
		if err != nil {
			t.Fatalf("%q: %v", args, err)
		}
		return v
	}
	if v := do(leader, "CONFIG", "SET", "maxmemory", fmt.Sprint(limit), "maxmemory-policy", "noeviction"); v.String() != "+OK" {
		t.Fatalf("CONFIG SET maxmemory: %s", v)
	}
	// CONFIG GET and INFO answer from the node's applied log, as redis
	// from its own state: a follower shows the limit once it applied it.
	if err := c.WaitConverged(ctx); err != nil {
		t.Fatal(err)
	}
	for _, n := range c.Nodes {
		if v := do(n, "CONFIG", "GET", "maxmemory"); !strings.Contains(v.String(), fmt.Sprint(limit)) {
			t.Errorf("CONFIG GET maxmemory through %s: %s", n, v)
		}
		if info := do(n, "INFO", "memory").Str; !strings.Contains(info, fmt.Sprintf("maxmemory:%d\r\n", limit)) {
			t.Errorf("INFO memory through %s has no maxmemory:%d", n, limit)
		}
		// Redis itself keeps no limit: it never refuses or evicts alone.
		if v, _ := n.RedisClient().ConfigGet(ctx, "maxmemory").Result(); v["maxmemory"] != "0" {
			t.Errorf("%s's redis has maxmemory %v", n, v)
		}
	}

	// Fill past the limit through every node at once.
	value := strings.Repeat("x", 10000)
	var mu sync.Mutex
	acked := map[string]bool{}
	var oom, other int
	var wg sync.WaitGroup
	for w, n := range c.Nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 30000; i++ {
				k := fmt.Sprintf("fill:%d:%d", w, i)
				v, err := n.Do(ctx, 10*time.Second, "SET", k, value)
				mu.Lock()
				switch {
				case err != nil:
					other++
				case v.String() == "+OK":
					acked[k] = true
				case v.String() == "-OOM command not allowed when used memory > 'maxmemory'.":
					oom++
				default:
					other++
				}
				stop := oom > 100
				mu.Unlock()
				if stop {
					return
				}
			}
		}()
	}
	wg.Wait()
	t.Logf("noeviction: %d writes acknowledged, %d refused with OOM, %d other outcomes; leader's redis at %d bytes for a limit of %d", len(acked), oom, other, used(leader), limit)
	if oom == 0 {
		t.Fatal("no write was refused over maxmemory")
	}
	// Reads and deletes still work.
	do(leader, "GET", "fill:0:1")
	dump := c.AssertRedisIdentical(ctx)
	for k := range acked {
		if _, ok := dump[dumpKey(0, k)]; !ok {
			t.Errorf("acknowledged %s is missing", k)
		}
	}

	// allkeys-lru: writes go on, the leader evicts.
	if v := do(leader, "CONFIG", "SET", "maxmemory-policy", "allkeys-lru"); v.String() != "+OK" {
		t.Fatalf("CONFIG SET maxmemory-policy: %s", v)
	}
	for i := range 3000 {
		n := c.Nodes[i%len(c.Nodes)]
		v, err := n.Do(ctx, 10*time.Second, "SET", fmt.Sprintf("lru:%d", i), value)
		if err != nil {
			t.Fatal(err)
		}
		if v.IsError() && !strings.HasPrefix(v.String(), "-OOM") {
			t.Fatalf("SET under allkeys-lru: %s", v)
		}
	}
	if u := used(leader); float64(u) > float64(limit)*1.3 {
		t.Errorf("under allkeys-lru the leader's redis holds %d bytes for a limit of %d", u, limit)
	}
	evicted := scrapeNode(ctx, t, leader).get(t, "raftproxy_evicted_keys_total")
	if evicted == 0 {
		t.Error("nothing was evicted")
	}
	c.AssertRedisIdentical(ctx)
	t.Logf("allkeys-lru: %v keys evicted, leader's redis at %d bytes", evicted, used(leader))

	// No limit: writes are accepted again.
	do(leader, "CONFIG", "SET", "maxmemory", "0")
	err := waitFor(ctx, 10*time.Second, 100*time.Millisecond, "writes accepted with no limit", func(ctx context.Context) error {
		for _, n := range c.Nodes {
			if v := do(n, "SET", "after", "x"); v.String() != "+OK" {
				return fmt.Errorf("SET through %s: %s", n, v)
			}
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
}
