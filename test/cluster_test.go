package test

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// TestClusterFormation covers the life of a fresh cluster: no data commands
// before INIT, INIT once, JOIN, a consistent RAFT.INFO view, and writes from
// any node visible on every node.
func TestClusterFormation(t *testing.T) {
	ctx := testContext(t, 2*time.Minute)
	c := NewCluster(ctx, t, ClusterOptions{})

	for _, n := range c.Nodes {
		for _, args := range [][]string{{"SET", "k", "v"}, {"GET", "k"}} {
			v, err := n.Do(ctx, 5*time.Second, args...)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := v.String(), "-NOCLUSTER No Raft Cluster"; got != want {
				t.Errorf("%s before INIT: %q answered %s, want %s", n, args, got, want)
			}
		}
	}

	if err := c.Form(ctx); err != nil {
		t.Fatalf("forming the cluster: %v", err)
	}
	for _, n := range c.Nodes {
		v, err := n.Do(ctx, 5*time.Second, "RAFT.CLUSTER", "INIT")
		if err != nil {
			t.Fatal(err)
		}
		if got, want := v.String(), "-ERR Already cluster member"; got != want {
			t.Errorf("second RAFT.CLUSTER INIT on %s answered %s, want %s", n, got, want)
		}
	}

	infos, err := c.infos(ctx, c.Nodes)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.checkAgreement(infos); err != nil {
		t.Errorf("RAFT.INFO: %v", err)
	}
	hexID := regexp.MustCompile(`^[0-9a-f]+$`)
	ids := map[string]*Node{}
	for n, info := range infos {
		if got := info.Get("cluster_id"); got != c.ClusterID {
			t.Errorf("%s: cluster_id %q, want %q from INIT", n, got, c.ClusterID)
		}
		id := info.Get("node_id")
		if !hexID.MatchString(id) {
			t.Errorf("%s: node_id %q is not hex", n, id)
		}
		if other, dup := ids[id]; dup {
			t.Errorf("%s and %s share node_id %s", n, other, id)
		}
		ids[id] = n
		if got := info.Get("num_nodes"); got != "3" {
			t.Errorf("%s: num_nodes %s, want 3", n, got)
		}
		if len(info.Members) != 3 {
			t.Errorf("%s: RAFT.INFO lists %d members, want 3: %+v", n, len(info.Members), info.Members)
		}
	}
	// Members are checked once all node ids are known.
	for n, info := range infos {
		for _, m := range info.Members {
			owner, ok := ids[m.ID]
			if !ok {
				t.Errorf("%s lists unknown member %+v", n, m)
				continue
			}
			if m.Addr != owner.Addr || m.PeerAddr != owner.PeerAddr || m.Voting != "yes" {
				t.Errorf("%s lists member %+v, want addr=%s peer_addr=%s voting=yes", n, m, owner.Addr, owner.PeerAddr)
			}
		}
	}

	want := writeEachReadAll(ctx, t, c, "form")
	dump := c.AssertRedisIdentical(ctx)
	for k, v := range want {
		if got := dump[dumpKey(0, k)]; got != stringValue(v) {
			t.Errorf("redis holds %s = %s, want %s", k, got, stringValue(v))
		}
	}
}

// TestLeaderKillDuringWriteLoad crashes the leader under load: a new leader
// must take over quickly, no acknowledged write may be lost, and the crashed
// node must come back from its data directory to the same content.
func TestLeaderKillDuringWriteLoad(t *testing.T) {
	ctx := testContext(t, 3*time.Minute)
	c := StartCluster(ctx, t, ClusterOptions{})
	oldLeader, survivors := c.Leader(ctx)

	load := startWriteLoad(ctx, c.Nodes, 2, "load")
	defer func() {
		select {
		case <-load.stop:
		default:
			load.Stop()
		}
	}()
	if err := waitFor(ctx, 15*time.Second, 100*time.Millisecond, "writes acknowledged before the kill", func(context.Context) error {
		if n := load.Acked(); n < 200 {
			return fmt.Errorf("%d acknowledged", n)
		}
		return nil
	}); err != nil {
		t.Fatalf("%v (%s)", err, load.Summary())
	}

	killedAt := time.Now()
	if err := oldLeader.KillProxy(); err != nil {
		t.Fatal(err)
	}
	newLeader, err := c.WaitStable(ctx)
	if err != nil {
		t.Fatalf("no new leader after killing %s: %v", oldLeader, err)
	}
	failover := time.Since(killedAt)
	t.Logf("leader %s killed; %s leads after %v", oldLeader, newLeader, failover)
	if failover > 10*time.Second {
		t.Errorf("new leader took %v, want a few seconds", failover)
	}

	before := load.Acked()
	if err := waitFor(ctx, 15*time.Second, 100*time.Millisecond, "writes acknowledged after failover", func(context.Context) error {
		if n := load.Acked(); n < before+200 {
			return fmt.Errorf("%d acknowledged since failover", n-before)
		}
		return nil
	}); err != nil {
		t.Errorf("%v (%s)", err, load.Summary())
	}
	load.Stop()
	t.Logf("load: %s", load.Summary())
	acked := load.AckedCopy()

	for _, n := range survivors {
		if err := checkValues(ctx, n.Client(), acked); err != nil {
			t.Errorf("acknowledged writes read through %s: %v", n, err)
		}
	}

	if err := oldLeader.StartProxy(ctx); err != nil {
		t.Fatalf("restarting %s: %v", oldLeader, err)
	}
	if _, err := c.WaitStable(ctx); err != nil {
		t.Fatalf("after restarting %s: %v", oldLeader, err)
	}
	assertAcked(t, c.AssertRedisIdentical(ctx), acked)
	if err := waitForReads(ctx, oldLeader, acked); err != nil {
		t.Errorf("restarted %s: %v", oldLeader, err)
	}
}

// waitForReads waits until reads through n return want. A node that has
// just restarted may answer errors such as -LOADING for a while, but a read
// that succeeds with a wrong or missing value fails at once: the node served
// data it had not rebuilt or caught up yet.
func waitForReads(ctx context.Context, n *Node, want map[string]string) error {
	cl := n.Client()
	var wrong *wrongReadsError
	err := waitFor(ctx, 30*time.Second, 250*time.Millisecond, fmt.Sprintf("correct reads through %s", n), func(ctx context.Context) error {
		err := checkValues(ctx, cl, want)
		if errors.As(err, &wrong) {
			return nil
		}
		return err
	})
	if wrong != nil {
		return fmt.Errorf("reads through %s succeeded with wrong data: %w", n, wrong)
	}
	return err
}

// TestFollowerRedisRestart kills a follower's redis-server, writes while it
// is down, and restarts it empty: the node must rebuild it from the log.
func TestFollowerRedisRestart(t *testing.T) {
	ctx := testContext(t, 3*time.Minute)
	c := StartCluster(ctx, t, ClusterOptions{})
	leader, followers := c.Leader(ctx)
	f, other := followers[0], followers[1]

	want := map[string]string{}
	write := func(n *Node, from, to int) {
		t.Helper()
		cl := n.Client()
		for i := from; i < to; i++ {
			k, v := fmt.Sprintf("frr:%d", i), fmt.Sprintf("value-%d", i)
			if err := cl.Set(ctx, k, v, 0).Err(); err != nil {
				t.Fatalf("SET %s through %s: %v", k, n, err)
			}
			want[k] = v
		}
	}
	write(leader, 0, 200)
	if err := c.WaitConverged(ctx); err != nil {
		t.Fatal(err)
	}

	if err := f.KillRedis(); err != nil {
		t.Fatal(err)
	}
	// Without its redis the node has nothing correct to serve.
	if err := waitFor(ctx, 10*time.Second, 200*time.Millisecond, fmt.Sprintf("%s refusing reads without its redis", f), func(ctx context.Context) error {
		v, err := f.Do(ctx, 5*time.Second, "GET", "frr:0")
		if err != nil {
			return err
		}
		if !v.IsError() {
			return fmt.Errorf("GET answered %s", v)
		}
		return nil
	}); err != nil {
		t.Error(err)
	}

	write(leader, 200, 300)
	write(other, 300, 400)

	if err := f.StartRedis(ctx); err != nil {
		t.Fatal(err)
	}
	if err := waitForReads(ctx, f, want); err != nil {
		t.Fatalf("after restarting its redis-server: %v", err)
	}
	dump := c.AssertRedisIdentical(ctx)
	if got := len(dump); got != len(want) {
		t.Errorf("redis holds %d keys, want %d", got, len(want))
	}

	write(f, 400, 450)
	for _, n := range c.Nodes {
		if err := checkValues(ctx, n.Client(), want); err != nil {
			t.Errorf("reading through %s: %v", n, err)
		}
	}
}

// TestFollowerProxyOff: with --follower-proxy=false a follower redirects
// data commands to the leader the way a Redis Cluster node would.
func TestFollowerProxyOff(t *testing.T) {
	ctx := testContext(t, 2*time.Minute)
	off := false
	c := StartCluster(ctx, t, ClusterOptions{FollowerProxy: &off})
	leader, followers := c.Leader(ctx)
	wantMoved := "-MOVED 5861 " + leader.Addr // CLUSTER KEYSLOT fpo:k

	for _, f := range followers {
		for _, args := range [][]string{{"GET", "fpo:k"}, {"SET", "fpo:k", "from-follower"}} {
			v, err := f.Do(ctx, 5*time.Second, args...)
			if err != nil {
				t.Fatal(err)
			}
			if v.String() != wantMoved {
				t.Errorf("%s: %q answered %s, want %s", f, args, v, wantMoved)
			}
		}
		// Local commands stay local.
		if v, err := f.Do(ctx, 5*time.Second, "PING"); err != nil || v.String() != "+PONG" {
			t.Errorf("%s: PING answered %s, %v; want +PONG", f, v, err)
		}
	}
	if v, err := leader.Do(ctx, 5*time.Second, "GET", "fpo:k"); err != nil || !v.Null {
		t.Errorf("a redirected SET took effect: GET on the leader answered %s, %v", v, err)
	}

	// A client that follows MOVED by hand.
	v, err := doFollowingMoved(ctx, followers[0].Addr, "SET", "fpo:manual", "m")
	if err != nil || v.String() != "+OK" {
		t.Errorf("SET following MOVED: %s, %v", v, err)
	}
	v, err = doFollowingMoved(ctx, followers[1].Addr, "GET", "fpo:manual")
	if err != nil || v.String() != `"m"` {
		t.Errorf("GET following MOVED: %s, %v", v, err)
	}

	// go-redis's cluster client, told that a follower owns every slot,
	// must end up on the leader through MOVED.
	cc := redis.NewClusterClient(&redis.ClusterOptions{
		ClusterSlots: func(context.Context) ([]redis.ClusterSlot, error) {
			return []redis.ClusterSlot{{Start: 0, End: 16383, Nodes: []redis.ClusterNode{{Addr: followers[0].Addr}}}}, nil
		},
		Protocol:                 2,
		DisableIdentity:          true,
		MaxRedirects:             3,
		DialTimeout:              2 * time.Second,
		ReadTimeout:              10 * time.Second,
		ContextTimeoutEnabled:    true,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	})
	defer cc.Close()
	if err := cc.Set(ctx, "fpo:cluster", "c", 0).Err(); err != nil {
		t.Errorf("ClusterClient SET: %v", err)
	}
	if got, err := cc.Get(ctx, "fpo:cluster").Result(); err != nil || got != "c" {
		t.Errorf("ClusterClient GET = %q, %v; want c", got, err)
	}
	dump := c.AssertRedisIdentical(ctx)
	for k, v := range map[string]string{"fpo:manual": "m", "fpo:cluster": "c"} {
		if got := dump[dumpKey(0, k)]; got != stringValue(v) {
			t.Errorf("redis holds %s = %s, want %s", k, got, stringValue(v))
		}
	}
	if _, ok := dump[dumpKey(0, "fpo:k")]; ok {
		t.Errorf("the SET answered with MOVED reached redis")
	}
}

var movedReply = regexp.MustCompile(`^MOVED \d+ (\S+)$`)

func doFollowingMoved(ctx context.Context, addr string, args ...string) (respValue, error) {
	for hop := 0; hop < 3; hop++ {
		c, err := dialRaw(addr, 5*time.Second)
		if err != nil {
			return respValue{}, err
		}
		v, err := c.Do(args...)
		c.Close()
		if err != nil {
			return v, err
		}
		m := movedReply.FindStringSubmatch(v.Str)
		if !v.IsError() || m == nil {
			return v, nil
		}
		addr = m[1]
		if ctx.Err() != nil {
			return v, ctx.Err()
		}
	}
	return respValue{}, errors.New("more than 3 MOVED redirects")
}

// TestNoLeader leaves one node of three: it must refuse writes with
// CLUSTERDOWN or TIMEOUT within the request timeout, never acknowledge
// them, and the cluster must recover with nothing acknowledged lost.
func TestNoLeader(t *testing.T) {
	tests := []struct {
		name string
		// victims picks the two nodes to kill.
		victims func(leader *Node, followers []*Node) []*Node
	}{
		{"leader and a follower killed", func(l *Node, f []*Node) []*Node { return []*Node{l, f[0]} }},
		{"both followers killed", func(l *Node, f []*Node) []*Node { return f }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testContext(t, 2*time.Minute)
			const reqTimeout = 2 * time.Second
			c := StartCluster(ctx, t, ClusterOptions{RequestTimeout: reqTimeout})
			leader, followers := c.Leader(ctx)

			acked := map[string]string{}
			for i := 0; i < 60; i++ {
				n := c.Nodes[i%3]
				k, v := fmt.Sprintf("nl:before:%d", i), fmt.Sprintf("b%d", i)
				if err := n.Client().Set(ctx, k, v, 0).Err(); err != nil {
					t.Fatalf("SET %s through %s: %v", k, n, err)
				}
				acked[k] = v
			}

			victims := tt.victims(leader, followers)
			for _, n := range victims {
				if err := n.KillProxy(); err != nil {
					t.Fatal(err)
				}
			}
			survivor := c.Running()[0]
			cl := survivor.Client()
			for i := 0; i < 5; i++ {
				k := fmt.Sprintf("nl:during:%d", i)
				opCtx, cancel := context.WithTimeout(ctx, reqTimeout+5*time.Second)
				start := time.Now()
				err := cl.Set(opCtx, k, "x", 0).Err()
				took := time.Since(start)
				cancel()
				switch {
				case err == nil:
					t.Errorf("SET %s acknowledged by %s with two of three nodes down", k, survivor)
				case strings.HasPrefix(err.Error(), "CLUSTERDOWN"):
					// Knowing there is no leader needs no waiting.
					// A node without a leader waits one election timeout
					// (1 s by default) for one before it says CLUSTERDOWN.
					if took > 2*time.Second {
						t.Errorf("CLUSTERDOWN for SET %s took %v", k, took)
					}
				case strings.HasPrefix(err.Error(), "TIMEOUT"):
				default:
					t.Errorf("SET %s on %s: %v, want CLUSTERDOWN or TIMEOUT", k, survivor, err)
				}
				if took > reqTimeout+2*time.Second {
					t.Errorf("SET %s took %v to fail, request timeout is %v", k, took, reqTimeout)
				}
				t.Logf("SET %s without quorum: %v after %v", k, err, took)
			}
			// A read may fail without quorum, but must not be wrong.
			if got, err := cl.Get(ctx, "nl:before:0").Result(); err == nil && got != acked["nl:before:0"] {
				t.Errorf("GET without quorum answered %q, want %q or an error", got, acked["nl:before:0"])
			}

			for _, n := range victims {
				if err := n.StartProxy(ctx); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := c.WaitStable(ctx); err != nil {
				t.Fatalf("after restarting the killed nodes: %v", err)
			}
			for i, n := range c.Nodes {
				k, v := fmt.Sprintf("nl:after:%d", i), fmt.Sprintf("a%d", i)
				cl := n.Client()
				if err := waitFor(ctx, 30*time.Second, 250*time.Millisecond, fmt.Sprintf("SET through %s", n), func(ctx context.Context) error {
					return cl.Set(ctx, k, v, 0).Err()
				}); err != nil {
					t.Errorf("after recovery: %v", err)
					continue
				}
				acked[k] = v
			}
			for _, n := range c.Nodes {
				if err := waitForReads(ctx, n, acked); err != nil {
					t.Errorf("after recovery: %v", err)
				}
			}
			c.AssertRedisIdentical(ctx)
		})
	}
}

// TestSelect: the database a connection selected travels with its writes
// to every node.
func TestSelect(t *testing.T) {
	ctx := testContext(t, 2*time.Minute)
	c := StartCluster(ctx, t, ClusterOptions{})
	_, followers := c.Leader(ctx)
	f := followers[0]

	conn, err := dialRaw(f.Addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, step := range []struct {
		args []string
		want string
	}{
		{[]string{"SELECT", "3"}, "+OK"},
		{[]string{"SET", "sel:k", "in-db3"}, "+OK"},
		{[]string{"GET", "sel:k"}, `"in-db3"`},
		{[]string{"SELECT", "0"}, "+OK"},
		{[]string{"GET", "sel:k"}, "$-1(nil)"},
		{[]string{"SELECT", "3"}, "+OK"},
	} {
		v, err := conn.Do(step.args...)
		if err != nil {
			t.Fatal(err)
		}
		if v.String() != step.want {
			t.Errorf("%s: %q answered %s, want %s", f, step.args, v, step.want)
		}
	}
	// A new connection starts in db 0, on any node.
	other := followers[1]
	if v, err := other.Do(ctx, 5*time.Second, "GET", "sel:k"); err != nil || !v.Null {
		t.Errorf("GET sel:k in db 0 through %s: %s, %v; want nil", other, v, err)
	}

	dump := c.AssertRedisIdentical(ctx)
	if got, want := dump[dumpKey(3, "sel:k")], stringValue("in-db3"); got != want {
		t.Errorf("db 3 holds sel:k = %q, want %s", got, want)
	}
	if got, ok := dump[dumpKey(0, "sel:k")]; ok {
		t.Errorf("db 0 holds sel:k = %s, want nothing", got)
	}
	for _, n := range c.Nodes {
		rc := redis.NewClient(&redis.Options{Addr: n.RedisAddr, DB: 3, Protocol: 2, DisableIdentity: true})
		got, err := rc.Get(ctx, "sel:k").Result()
		rc.Close()
		if err != nil || got != "in-db3" {
			t.Errorf("%s redis db 3: GET sel:k = %q, %v", n, got, err)
		}
	}
}

// TestSupervisedMode runs raftproxy without --redis, so each node starts
// and owns its redis-server.
func TestSupervisedMode(t *testing.T) {
	ctx := testContext(t, 2*time.Minute)
	c := StartCluster(ctx, t, ClusterOptions{Supervised: true})
	writeEachReadAll(ctx, t, c, "sup")

	// A graceful stop must take the node's redis-server with it.
	var wg sync.WaitGroup
	for _, n := range c.Nodes {
		children := childProcesses(n.proxy.Pid())
		var redisPids []int
		for pid, comm := range children {
			if strings.HasPrefix(comm, "redis") {
				redisPids = append(redisPids, pid)
			}
		}
		if len(redisPids) == 0 {
			t.Errorf("%s: no redis-server child process found (children: %v)", n, children)
		}
		wg.Add(1)
		go func(n *Node, pids []int) {
			defer wg.Done()
			if err := n.StopProxy(15 * time.Second); err != nil {
				t.Errorf("stopping %s: %v", n, err)
			}
			err := waitFor(ctx, 10*time.Second, 100*time.Millisecond, fmt.Sprintf("%s's redis-server gone", n), func(context.Context) error {
				for _, pid := range pids {
					if processAlive(pid) {
						return fmt.Errorf("pid %d still running", pid)
					}
				}
				return nil
			})
			if err != nil {
				t.Errorf("after SIGTERM: %v", err)
				// Orphans outside the proxy's process group escape teardown.
				for _, pid := range pids {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}(n, redisPids)
	}
	wg.Wait()
}

// TestWholeClusterRestart stops every node gracefully and starts them again
// from their data directories: everything must be back, and each redis must
// be rebuilt from the log whatever it held.
func TestWholeClusterRestart(t *testing.T) {
	ctx := testContext(t, 3*time.Minute)
	c := StartCluster(ctx, t, ClusterOptions{})
	for i := 0; i < 300; i++ {
		n := c.Nodes[i%3]
		if err := n.Client().Set(ctx, fmt.Sprintf("wcr:%d", i), fmt.Sprintf("v%d", i), 0).Err(); err != nil {
			t.Fatalf("SET through %s: %v", n, err)
		}
	}
	for i := 0; i < 20; i++ {
		if err := c.Nodes[1].Client().Append(ctx, "wcr:appended", fmt.Sprintf("<%d>", i)).Err(); err != nil {
			t.Fatalf("APPEND: %v", err)
		}
	}
	conn, err := dialRaw(c.Nodes[2].Addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"SELECT", "2"}, {"SET", "wcr:db2", "two"}} {
		if v, err := conn.Do(args...); err != nil || v.String() != "+OK" {
			t.Fatalf("%q: %s, %v", args, v, err)
		}
	}
	conn.Close()
	before := c.AssertRedisIdentical(ctx)

	var wg sync.WaitGroup
	for _, n := range c.Nodes {
		wg.Add(1)
		go func(n *Node) {
			defer wg.Done()
			if err := n.StopProxy(15 * time.Second); err != nil {
				t.Errorf("graceful stop of %s: %v", n, err)
			}
		}(n)
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	// node2 gets an empty redis-server; node1's keeps its data plus a stray
	// key that must vanish, since a starting node flushes its redis.
	if err := c.Nodes[2].KillRedis(); err != nil {
		t.Fatal(err)
	}
	if err := c.Nodes[2].StartRedis(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Nodes[1].RedisClient().Set(ctx, "wcr:stray", "not-in-the-log", 0).Err(); err != nil {
		t.Fatal(err)
	}

	for _, n := range c.Nodes {
		if err := n.StartProxy(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.WaitStable(ctx); err != nil {
		t.Fatalf("after restarting every node: %v", err)
	}
	want := map[string]string{"wcr:0": "v0", "wcr:299": "v299"}
	for _, n := range c.Nodes {
		if err := waitForReads(ctx, n, want); err != nil {
			t.Error(err)
		}
	}
	after := c.AssertRedisIdentical(ctx)
	if diff := diffDumps(before, after); diff != "" {
		t.Errorf("content before and after the restart differs:\n%s", diff)
	}
}

// TestLaggingFollowerCatchesUp stops a follower while many writes commit,
// so that it restarts far behind (beyond the leader's log once the leader
// compacts it into snapshots) and has to catch up to identical content.
func TestLaggingFollowerCatchesUp(t *testing.T) {
	ctx := testContext(t, 3*time.Minute)
	c := StartCluster(ctx, t, ClusterOptions{})
	leader, followers := c.Leader(ctx)
	f := followers[0]
	if err := f.KillProxy(); err != nil {
		t.Fatal(err)
	}
	const n = 20000
	sample, err := writeKeys(leader.Addr, "lag", n, 97)
	if err != nil {
		t.Fatalf("with %s down: %v", f, err)
	}
	c.RestartAndRead(ctx, f, sample)
	if got := len(c.AssertRedisIdentical(ctx)); got != n {
		t.Errorf("redis holds %d keys, want %d", got, n)
	}
}

// TestExpiryIsAbsolute: relative expiry times are fixed once, from the
// entry's time in the log, so that every node's redis expires a key at the
// same instant whenever it applied the write.
func TestExpiryIsAbsolute(t *testing.T) {
	ctx := testContext(t, 2*time.Minute)
	c := StartCluster(ctx, t, ClusterOptions{})
	before := time.Now()
	steps := [][]string{
		{"SET", "ttl:ex", "v", "EX", "1000"},
		{"SET", "ttl:px", "v", "PX", "1000000"},
		{"SETEX", "ttl:setex", "1000", "v"},
		{"PSETEX", "ttl:psetex", "1000000", "v"},
		{"SET", "ttl:expire", "v"},
		{"EXPIRE", "ttl:expire", "1000"},
		{"SET", "ttl:pexpire", "v"},
		{"PEXPIRE", "ttl:pexpire", "1000000"},
		{"SET", "ttl:getex", "v"},
		{"GETEX", "ttl:getex", "EX", "1000"},
		{"SET", "ttl:keepttl", "v", "EX", "1000"},
		{"SET", "ttl:keepttl", "v2", "KEEPTTL"},
	}
	for i, args := range steps {
		n := c.Nodes[i%len(c.Nodes)]
		v, err := n.Do(ctx, 10*time.Second, args...)
		if err != nil {
			t.Fatal(err)
		}
		if v.IsError() {
			t.Fatalf("%q through %s: %s", args, n, v)
		}
	}
	after := time.Now()
	dump := c.AssertRedisIdentical(ctx)
	lo, hi := before.Add(1000*time.Second).UnixMilli(), after.Add(1000*time.Second).UnixMilli()
	for _, k := range []string{"ttl:ex", "ttl:px", "ttl:setex", "ttl:psetex", "ttl:expire", "ttl:pexpire", "ttl:getex", "ttl:keepttl"} {
		d := dump[dumpKey(0, k)]
		var at int64
		if _, err := fmt.Sscanf(d[strings.LastIndex(d, "|pexpireat=")+1:], "pexpireat=%d", &at); err != nil || at < lo || at > hi {
			t.Errorf("%s: %s, want an expiry between %d and %d", k, d, lo, hi)
		}
	}
}

// writeEachReadAll writes one key through every node and reads all of them
// back through every node; it returns the keys written.
func writeEachReadAll(ctx context.Context, t *testing.T, c *Cluster, prefix string) map[string]string {
	t.Helper()
	want := map[string]string{}
	for i, n := range c.Nodes {
		k, v := fmt.Sprintf("%s:%d", prefix, i), fmt.Sprintf("written-through-node%d", i)
		if err := n.Client().Set(ctx, k, v, 0).Err(); err != nil {
			t.Fatalf("SET %s through %s: %v", k, n, err)
		}
		want[k] = v
	}
	for _, n := range c.Nodes {
		if err := checkValues(ctx, n.Client(), want); err != nil {
			t.Errorf("reading through %s: %v", n, err)
		}
	}
	return want
}
