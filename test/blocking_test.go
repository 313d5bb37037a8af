package test

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// blockingScript is compared reply by reply, raw, with a stock redis-server:
// immediate pops, timeouts (short ones, so both servers time out), errors,
// and blocking commands inside MULTI, which never block.
var blockingScript = [][]string{
	{"RPUSH", "%s:l", "a", "b", "c", "d", "e"}, {"BLPOP", "%s:l", "%s:x", "0"}, {"BRPOP", "%s:x", "%s:l", "0"},
	{"BLPOP", "%s:none", "0.1"}, {"BRPOP", "%s:none", "%s:none2", "0.1"},
	{"BRPOPLPUSH", "%s:l", "%s:d", "0"}, {"BRPOPLPUSH", "%s:none", "%s:d", "0.1"},
	{"BLMOVE", "%s:d", "%s:l", "LEFT", "RIGHT", "0"}, {"BLMOVE", "%s:none", "%s:d", "LEFT", "LEFT", "0.1"},
	{"BLMPOP", "0.1", "2", "%s:none", "%s:l", "RIGHT", "COUNT", "2"}, {"BLMPOP", "0.1", "1", "%s:none", "LEFT"},
	{"ZADD", "%s:z", "1", "a", "2", "b", "3", "c", "4", "d"}, {"BZPOPMIN", "%s:z", "0"}, {"BZPOPMAX", "%s:none", "%s:z", "0"},
	{"BZMPOP", "0", "1", "%s:z", "MIN", "COUNT", "5"}, {"BZPOPMIN", "%s:none", "0.1"}, {"BZPOPMAX", "%s:none", "0.1"},
	{"BZMPOP", "0.1", "1", "%s:none", "MAX"},
	{"BLPOP", "%s:l", "-1"}, {"BLPOP", "%s:l", "abc"}, {"BLMPOP", "0", "0", "%s:l", "LEFT"}, {"BLMPOP", "0", "1", "%s:l", "UP"},
	{"SET", "%s:str", "v"}, {"BLPOP", "%s:str", "0"}, {"BZPOPMIN", "%s:str", "0"},
	{"MULTI"}, {"BLPOP", "%s:none", "0"}, {"BLMOVE", "%s:none", "%s:d", "LEFT", "LEFT", "0"}, {"BZMPOP", "0", "1", "%s:none", "MIN"}, {"EXEC"},
	{"LRANGE", "%s:l", "0", "-1"}, {"LRANGE", "%s:d", "0", "-1"}, {"EXISTS", "%s:z"},
	{"CLIENT", "UNBLOCK", "999999", "TIMEOUT"}, {"CLIENT", "UNBLOCK", "1", "BOGUS"},
}

// TestBlocking covers BLPOP and friends: replies as redis gives them,
// wake-ups across nodes, each element delivered exactly once, leader
// changes, disconnects, timeouts and CLIENT UNBLOCK.
func TestBlocking(t *testing.T) {
	ctx := testContext(t, 4*time.Minute)
	c := StartCluster(ctx, t, ClusterOptions{})
	leader, followers := c.Leader(ctx)
	stock := startStockRedis(ctx, t)

	t.Run("replies like redis", func(t *testing.T) {
		for _, proto := range []string{"2", "3"} {
			for _, target := range []struct{ role, addr string }{{"leader", leader.Addr}, {"follower", followers[0].Addr}} {
				prefix := "blk:" + proto + ":" + target.role
				want := runBytesScript(t, stock, proto, prefix)
				got := runBytesScript(t, target.addr, proto, prefix)
				for i := range blockingScript {
					if got[i] != want[i] {
						t.Errorf("RESP%s %s %q: raftproxy answered %q, redis answered %q", proto, target.role, blockingScript[i], got[i], want[i])
					}
				}
			}
		}
	})

	t.Run("pipelined commands wait behind a blocked one", func(t *testing.T) {
		// RPUSH must not run before BLPOP has timed out, as in redis.
		run := func(addr string) []string {
			bc := dialBytes(t, addr)
			if err := bc.send([]string{"BLPOP", "blk:pipe:" + addr, "0.3"}, []string{"RPUSH", "blk:pipe:" + addr, "x"},
				[]string{"LLEN", "blk:pipe:" + addr}); err != nil {
				t.Fatal(err)
			}
			var out []string
			for range 3 {
				r, err := bc.read()
				if err != nil {
					t.Fatal(err)
				}
				out = append(out, r)
			}
			return out
		}
		want, got := run(stock), run(followers[0].Addr)
		if strings.Join(got, "|") != strings.Join(want, "|") {
			t.Errorf("raftproxy answered %q, redis answered %q", got, want)
		}
	})

	t.Run("keys changing type while waited on", func(t *testing.T) {
		// Redis 7.0 keeps a client blocked when its key becomes a string,
		// but answers WRONGTYPE when BLMOVE's destination is one.
		run := func(addr string) []string {
			p := "blk:type:" + addr
			waiter, other := dialBytes(t, addr), dialBytes(t, addr)
			if err := waiter.send([]string{"BLPOP", p + ":l", "1"}); err != nil {
				t.Fatal(err)
			}
			time.Sleep(200 * time.Millisecond)
			other.do(t, "SET", p+":l", "str")
			start := time.Now()
			r1, err := waiter.read()
			if err != nil {
				t.Fatal(err)
			}
			if d := time.Since(start); d < 500*time.Millisecond {
				t.Errorf("%s: BLPOP answered %q %v after its key became a string", addr, r1, d)
			}
			if err := waiter.send([]string{"BLMOVE", p + ":src", p + ":dst", "LEFT", "LEFT", "5"}); err != nil {
				t.Fatal(err)
			}
			time.Sleep(200 * time.Millisecond)
			other.do(t, "SET", p+":dst", "str")
			other.do(t, "RPUSH", p+":src", "x")
			r2, err := waiter.read()
			if err != nil {
				t.Fatal(err)
			}
			return []string{r1, r2, other.do(t, "LLEN", p+":src")}
		}
		want, got := run(stock), run(followers[1].Addr)
		if strings.Join(got, "|") != strings.Join(want, "|") {
			t.Errorf("raftproxy answered %q, redis answered %q", got, want)
		}
	})

	t.Run("follower woken by the leader and leader by a follower", func(t *testing.T) {
		for i, pair := range [][2]*Node{{followers[0], leader}, {leader, followers[1]}} {
			waiter, pusher := pair[0], pair[1]
			key := fmt.Sprintf("blk:wake:%d", i)
			bc := dialBytes(t, waiter.Addr)
			if err := bc.send([]string{"BLPOP", key, "0"}); err != nil {
				t.Fatal(err)
			}
			time.Sleep(300 * time.Millisecond)
			if err := pusher.Client().RPush(ctx, key, "v").Err(); err != nil {
				t.Fatal(err)
			}
			r, err := bc.read()
			if want := fmt.Sprintf("*2\r\n$%d\r\n%s\r\n$1\r\nv\r\n", len(key), key); err != nil || r != want {
				t.Errorf("BLPOP on %s after RPUSH on %s: %q %v, want %q", waiter, pusher, r, err, want)
			}
		}
	})

	t.Run("every element exactly once", func(t *testing.T) {
		const waiters, pushes = 9, 120
		const key = "blk:many"
		var (
			mu   sync.Mutex
			got  []string
			stop = make(chan struct{})
			wg   sync.WaitGroup
		)
		for i := range waiters {
			bc := dialBytes(t, c.Nodes[i%len(c.Nodes)].Addr)
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					if err := bc.send([]string{"BLPOP", key, "1"}); err != nil {
						t.Error(err)
						return
					}
					r, err := bc.read()
					if err != nil {
						t.Error(err)
						return
					}
					if r == "*-1\r\n" {
						continue
					}
					parts := strings.Split(r, "\r\n")
					if len(parts) < 5 || !strings.HasPrefix(r, "*2\r\n") {
						t.Errorf("BLPOP: unexpected reply %q", r)
						return
					}
					mu.Lock()
					got = append(got, parts[4])
					mu.Unlock()
				}
			}()
		}
		time.Sleep(300 * time.Millisecond)
		var pw sync.WaitGroup
		for p := range 3 {
			pw.Add(1)
			go func() {
				defer pw.Done()
				cl := c.Nodes[p].Client()
				for j := p; j < pushes; j += 3 {
					if err := cl.RPush(ctx, key, fmt.Sprintf("e%03d", j)).Err(); err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
		pw.Wait()
		if err := waitFor(ctx, 60*time.Second, 100*time.Millisecond, "every pushed element popped", func(context.Context) error {
			mu.Lock()
			defer mu.Unlock()
			if len(got) < pushes {
				return fmt.Errorf("%d of %d popped", len(got), pushes)
			}
			return nil
		}); err != nil {
			t.Error(err)
		}
		close(stop)
		wg.Wait()
		checkEachOnce(t, got, pushes, "popped")
		if n, err := leader.Client().LLen(ctx, key).Result(); err != nil || n != 0 {
			t.Errorf("LLEN %s = %d, %v; want 0", key, n, err)
		}
	})

	t.Run("disconnected waiter consumes nothing", func(t *testing.T) {
		const key = "blk:gone"
		bc := dialBytes(t, followers[0].Addr)
		if err := bc.send([]string{"BLPOP", key, "0"}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond)
		bc.nc.Close()
		time.Sleep(300 * time.Millisecond)
		if err := leader.Client().RPush(ctx, key, "kept").Err(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(500 * time.Millisecond)
		for _, n := range c.Nodes {
			if got, err := n.Client().LRange(ctx, key, 0, -1).Result(); err != nil || len(got) != 1 || got[0] != "kept" {
				t.Errorf("LRANGE %s on %s = %v, %v; want [kept]", key, n, got, err)
			}
		}
	})

	t.Run("timeouts and CLIENT UNBLOCK", func(t *testing.T) {
		for _, cmd := range [][]string{{"BLPOP", "blk:t", "0.5"}, {"BLMOVE", "blk:t", "blk:t2", "LEFT", "LEFT", "0.5"}, {"BZMPOP", "0.5", "1", "blk:t", "MIN"}} {
			bc := dialBytes(t, followers[1].Addr)
			start := time.Now()
			if r := bc.do(t, cmd...); r != "*-1\r\n" {
				t.Errorf("%q: %q, want *-1", cmd, r)
			}
			if d := time.Since(start); d < 500*time.Millisecond {
				t.Errorf("%q answered after %v, before its timeout", cmd, d)
			}
		}
		for _, mode := range []string{"TIMEOUT", "ERROR"} {
			waiter, other := dialBytes(t, followers[0].Addr), dialBytes(t, followers[0].Addr)
			id := strings.TrimSuffix(strings.TrimPrefix(waiter.do(t, "CLIENT", "ID"), ":"), "\r\n")
			waiter.do(t, "HELLO", "3")
			if err := waiter.send([]string{"BLPOP", "blk:unblock", "0"}); err != nil {
				t.Fatal(err)
			}
			time.Sleep(300 * time.Millisecond)
			if r := other.do(t, "CLIENT", "LIST", "ID", id); !strings.Contains(r, " flags=b ") || !strings.Contains(r, " cmd=blpop ") {
				t.Errorf("CLIENT LIST of a blocked client: %q, want flags=b and cmd=blpop", r)
			}
			if r := other.do(t, "INFO", "clients"); !strings.Contains(r, "blocked_clients:1\r\n") {
				t.Errorf("INFO clients with one blocked client: %q", r)
			}
			if r := other.do(t, "CLIENT", "UNBLOCK", id, mode); r != ":1\r\n" {
				t.Errorf("CLIENT UNBLOCK %s %s: %q, want :1", id, mode, r)
			}
			want := "_\r\n"
			if mode == "ERROR" {
				want = "-UNBLOCKED client unblocked via CLIENT UNBLOCK\r\n"
			}
			if r, err := waiter.read(); err != nil || r != want {
				t.Errorf("BLPOP unblocked with %s: %q %v, want %q", mode, r, err, want)
			}
			if r := other.do(t, "CLIENT", "UNBLOCK", id); r != ":0\r\n" {
				t.Errorf("CLIENT UNBLOCK of a client no longer blocked: %q, want :0", r)
			}
		}
	})

	t.Run("a blocked RESP3 subscriber gets its messages meanwhile", func(t *testing.T) {
		bc := dialBytes(t, followers[0].Addr)
		bc.do(t, "HELLO", "3")
		bc.do(t, "SUBSCRIBE", "blk:ch")
		if err := bc.send([]string{"BLPOP", "blk:sub", "0"}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond)
		if err := leader.Client().Publish(ctx, "blk:ch", "hello").Err(); err != nil {
			t.Fatal(err)
		}
		if r, err := bc.read(); err != nil || r != ">3\r\n$7\r\nmessage\r\n$6\r\nblk:ch\r\n$5\r\nhello\r\n" {
			t.Errorf("message to a blocked RESP3 subscriber: %q %v", r, err)
		}
		if err := leader.Client().RPush(ctx, "blk:sub", "v").Err(); err != nil {
			t.Fatal(err)
		}
		if r, err := bc.read(); err != nil || r != "*2\r\n$7\r\nblk:sub\r\n$1\r\nv\r\n" {
			t.Errorf("BLPOP of a RESP3 subscriber: %q %v", r, err)
		}
	})

	t.Run("leader transfer while blocked", func(t *testing.T) {
		var conns []*bytesConn
		for i, n := range c.Nodes {
			bc := dialBytes(t, n.Addr)
			if err := bc.send([]string{"BLPOP", fmt.Sprintf("blk:lt:%d", i), "0"}); err != nil {
				t.Fatal(err)
			}
			conns = append(conns, bc)
		}
		time.Sleep(300 * time.Millisecond)
		if err := transferTo(ctx, leader, followers[0]); err != nil {
			t.Fatal(err)
		}
		newLeader, _ := c.Leader(ctx)
		cl := newLeader.Client()
		for i := range c.Nodes {
			if err := cl.RPush(ctx, fmt.Sprintf("blk:lt:%d", i), "v").Err(); err != nil {
				t.Fatal(err)
			}
		}
		for i, bc := range conns {
			key := fmt.Sprintf("blk:lt:%d", i)
			r, err := bc.read()
			if want := fmt.Sprintf("*2\r\n$%d\r\n%s\r\n$1\r\nv\r\n", len(key), key); err != nil || r != want {
				t.Errorf("BLPOP on %s across a leader transfer: %q %v, want %q", c.Nodes[i], r, err, want)
			}
		}
	})

	t.Run("waiters of a key on one node are served in arrival order", func(t *testing.T) {
		const key = "blk:fifo"
		var conns []*bytesConn
		for range 3 {
			bc := dialBytes(t, followers[1].Addr)
			if err := bc.send([]string{"BLPOP", key, "0"}); err != nil {
				t.Fatal(err)
			}
			conns = append(conns, bc)
			time.Sleep(200 * time.Millisecond)
		}
		if err := leader.Client().RPush(ctx, key, "e0", "e1", "e2").Err(); err != nil {
			t.Fatal(err)
		}
		for i, bc := range conns {
			r, err := bc.read()
			if want := fmt.Sprintf("*2\r\n$%d\r\n%s\r\n$2\r\ne%d\r\n", len(key), key, i); err != nil || r != want {
				t.Errorf("waiter %d: %q %v, want %q", i, r, err, want)
			}
		}
	})

	t.Run("idle waiters propose nothing", func(t *testing.T) {
		// Attempts that find nothing write nothing, so they wake nobody:
		// not themselves (BLMOVE a a), not each other (a to b, b to a).
		for i, cmd := range [][]string{{"BLMOVE", "blk:idle:a", "blk:idle:a", "LEFT", "RIGHT", "0"},
			{"BLMOVE", "blk:idle:a", "blk:idle:b", "LEFT", "RIGHT", "0"}, {"BRPOPLPUSH", "blk:idle:b", "blk:idle:a", "0"}} {
			bc := dialBytes(t, c.Nodes[i].Addr)
			if err := bc.send(cmd); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(500 * time.Millisecond)
		before, err := leader.RaftInfo(ctx)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
		after, err := leader.RaftInfo(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if d := after.Int("last_log_index") - before.Int("last_log_index"); d > 3 {
			t.Errorf("the log grew by %d entries in a second with only idle waiters", d)
		}
		// One element then circulates a to b to a ...; the nodes stay
		// identical (checked at the end) whoever wins each move.
		if err := leader.Client().RPush(ctx, "blk:idle:a", "x").Err(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond)
	})

	c.AssertRedisIdentical(ctx)
}

// runBytesScript runs blockingScript on one connection in protocol proto
// and returns the raw replies, with the key prefix taken out of errors.
func runBytesScript(t *testing.T, addr, proto, prefix string) []string {
	t.Helper()
	return runBytesScriptOf(t, blockingScript, addr, proto, prefix)
}

// runBytesScriptOf is runBytesScript for any script.
func runBytesScriptOf(t *testing.T, script [][]string, addr, proto, prefix string) []string {
	t.Helper()
	bc := dialBytes(t, addr)
	if proto == "3" {
		bc.do(t, "HELLO", "3")
	}
	out := make([]string, len(script))
	for i, cmd := range script {
		out[i] = strings.ReplaceAll(bc.do(t, expand(cmd, prefix)...), prefix, "%s")
	}
	return out
}

// checkEachOnce fails unless got holds e000..e<n-1> (as the tests name the
// elements they push or add), each exactly once, in any order.
func checkEachOnce(t *testing.T, got []string, n int, what string) {
	t.Helper()
	got = slices.Clone(got)
	sort.Strings(got)
	for i, e := range got {
		if i >= n || e != fmt.Sprintf("e%03d", i) {
			t.Fatalf("%s elements are not each of the %d elements once: %v", what, n, got)
		}
	}
	if len(got) != n {
		t.Errorf("%s %d elements, want %d", what, len(got), n)
	}
}
