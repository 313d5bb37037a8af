package test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestRedisDataLoss: a node's redis loses its data, or gets data from
// another client, behind raftproxy's back: a FLUSHALL, a SET and a restart
// empty, each on a follower's redis directly. The node must notice, refuse
// reads meanwhile (never answer from the wrong data), and rebuild from its
// snapshot and log. Scripts and expiring keys, whose writes redis reports as
// another client's, run meanwhile and must not set it off.
func TestRedisDataLoss(t *testing.T) {
	ctx := testContext(t, 3*time.Minute)
	c := StartCluster(ctx, t, ClusterOptions{Metrics: true})
	leader, followers := c.Leader(ctx)
	if leader == nil || len(followers) < 2 {
		t.Fatal("no stable leader")
	}
	victim := followers[0]
	const keys = 50
	for i := range keys {
		if v, err := leader.Do(ctx, 10*time.Second, "SET", fmt.Sprintf("k%d", i), fmt.Sprintf("v%d", i)); err != nil || v.IsError() {
			t.Fatalf("SET: %v %v", v, err)
		}
	}
	if err := c.WaitConverged(ctx); err != nil {
		t.Fatal(err)
	}
	rebuilds := func() float64 { return scrapeNode(ctx, t, victim).get(t, "raftproxy_redis_rebuilds_total") }

	// Scripts, expiring keys and flushes through the log are raftproxy's
	// own writes: no rebuild.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var writes atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			cmds := [][]string{
				{"EVAL", "redis.call('SET', KEYS[1], ARGV[1]) return redis.call('INCR', 'undeclared')", "1", "s", fmt.Sprint(i)},
				{"SET", fmt.Sprintf("e%d", i%20), "v", "PX", "50"},
				{"INCR", fmt.Sprintf("e%d", (i+7)%20)},
			}
			if i%10 == 9 {
				cmds = append(cmds, []string{"FLUSHDB"})
			}
			for _, args := range cmds {
				if v, err := leader.Do(ctx, 10*time.Second, args...); err != nil || v.IsError() {
					t.Errorf("%q: %v %v", args, v, err)
					return
				}
				writes.Add(1)
			}
		}
	}()
	time.Sleep(2 * time.Second)
	close(stop)
	wg.Wait()
	if v, err := leader.Do(ctx, 10*time.Second, "FLUSHALL"); err != nil || v.IsError() {
		t.Fatalf("FLUSHALL: %v %v", v, err)
	}
	for i := range keys {
		leader.Do(ctx, 10*time.Second, "SET", fmt.Sprintf("k%d", i), fmt.Sprintf("v%d", i))
	}
	if err := c.WaitConverged(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	if n := rebuilds(); n != 0 {
		t.Fatalf("%s rebuilt its redis %v times after %d writes of its own (scripts, expiry, flushes): false alarms", victim, n, writes.Load())
	}

	// Each loss, then reads through the victim: the right value or an
	// error, never another value, until it has rebuilt.
	losses := []struct {
		name string
		do   func() error
	}{
		{"FLUSHALL", func() error { return victim.RedisClient().FlushAll(ctx).Err() }},
		{"a stray SET", func() error { return victim.RedisClient().Set(ctx, "k3", "stray", 0).Err() }},
		{"a restart empty", func() error {
			if err := victim.KillRedis(); err != nil {
				return err
			}
			return victim.StartRedis(ctx)
		}},
	}
	for i, loss := range losses {
		before := rebuilds()
		if err := loss.do(); err != nil {
			t.Fatalf("%s: %v", loss.name, err)
		}
		var refused, served int
		err := waitFor(ctx, 20*time.Second, 20*time.Millisecond, "reads served again after "+loss.name, func(ctx context.Context) error {
			v, err := victim.Do(ctx, 5*time.Second, "GET", "k3")
			if err != nil {
				return err
			}
			if v.IsError() {
				refused++
				return fmt.Errorf("GET k3: %s", v)
			}
			if v.String() != `"v3"` {
				t.Errorf("after %s: GET k3 through %s = %s, want v3 or an error", loss.name, victim, v)
				return nil
			}
			served++
			if rebuilds() <= before && loss.name != "a restart empty" {
				return fmt.Errorf("not rebuilt yet")
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %d reads refused before the node rebuilt", loss.name, refused)
		if i < 2 {
			if n := rebuilds(); n != before+1 {
				t.Errorf("after %s: %v rebuilds, want %v", loss.name, n, before+1)
			}
		}
		c.AssertRedisIdentical(ctx)
	}
	b, err := os.ReadFile(victim.dir + "/proxy.log")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "the local redis holds data the log did not put there") {
		t.Error("the victim's log does not say why it rebuilt")
	}
}
