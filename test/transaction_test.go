package test

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// txScripts are command sequences whose replies raftproxy must give exactly
// as a stock redis-server does. Keys are prefixed per target so that the
// runs through leader and follower do not see each other's data.
var txScripts = []struct {
	name string
	cmds [][]string
}{
	{"queued commands run atomically", [][]string{
		{"MULTI"}, {"SET", "%s:a", "1"}, {"INCR", "%s:a"}, {"RPUSH", "%s:l", "x", "y"}, {"LRANGE", "%s:l", "0", "-1"},
		{"GET", "%s:a"}, {"PING"}, {"ECHO", "hi"}, {"EXEC"}, {"GET", "%s:a"}}},
	{"runtime error inside EXEC does not abort the rest", [][]string{
		{"SET", "%s:s", "str"}, {"MULTI"}, {"LPUSH", "%s:s", "x"}, {"SET", "%s:t", "after"}, {"EXEC"}, {"GET", "%s:t"}}},
	{"unknown command aborts", [][]string{
		{"MULTI"}, {"SET", "%s:never", "1"}, {"NOSUCHCOMMAND", "x"}, {"EXEC"}, {"EXISTS", "%s:never"}}},
	{"wrong arity aborts", [][]string{
		{"MULTI"}, {"SET", "%s:never2"}, {"SET", "%s:never3", "1"}, {"EXEC"}, {"EXISTS", "%s:never3"}}},
	{"discard", [][]string{
		{"MULTI"}, {"SET", "%s:discarded", "1"}, {"DISCARD"}, {"EXISTS", "%s:discarded"}, {"DISCARD"}}},
	{"empty transaction", [][]string{{"MULTI"}, {"EXEC"}}},
	{"exec without multi", [][]string{{"EXEC"}}},
	{"nested multi is an error but keeps the transaction", [][]string{
		{"MULTI"}, {"SET", "%s:n", "1"}, {"MULTI"}, {"EXEC"}, {"GET", "%s:n"}}},
	{"watch inside multi", [][]string{{"MULTI"}, {"WATCH", "%s:w"}, {"SET", "%s:w", "1"}, {"EXEC"}}},
	{"relative expiry inside a transaction", [][]string{
		{"MULTI"}, {"SET", "%s:ttl", "v", "EX", "1000"}, {"EXPIRE", "%s:ttl", "2000"}, {"EXEC"}}},
	{"unwatch", [][]string{{"UNWATCH"}}},
}

// TestTransactions runs MULTI/EXEC scripts through the leader and a
// follower and compares every reply with a stock redis-server's, then
// checks that all nodes hold the same data.
func TestTransactions(t *testing.T) {
	ctx := testContext(t, 3*time.Minute)
	c := StartCluster(ctx, t, ClusterOptions{})
	leader, followers := c.Leader(ctx)
	stock := startStockRedis(ctx, t)

	for _, target := range []struct {
		role string
		addr string
	}{{"leader", leader.Addr}, {"follower", followers[0].Addr}} {
		for _, sc := range txScripts {
			t.Run(target.role+"/"+sc.name, func(t *testing.T) {
				prefix := "tx:" + target.role
				want := runScript(t, stock, prefix, sc.cmds)
				got := runScript(t, target.addr, prefix, sc.cmds)
				for i := range sc.cmds {
					if got[i] != want[i] {
						t.Errorf("%q: raftproxy answered %s, redis answered %s", sc.cmds[i], got[i], want[i])
					}
				}
			})
		}
	}

	t.Run("go-redis TxPipelined from many clients", func(t *testing.T) {
		// Concurrent transactions each append and read back: every read
		// must end with its own element and the lists must be identical
		// prefixes of one final order.
		const clients, each = 8, 30
		var wg sync.WaitGroup
		errs := make(chan error, clients)
		for i := 0; i < clients; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				cl := c.Nodes[i%len(c.Nodes)].Client()
				for j := 0; j < each; j++ {
					v := fmt.Sprintf("%d-%d", i, j)
					var lr *redis.StringSliceCmd
					_, err := cl.TxPipelined(ctx, func(p redis.Pipeliner) error {
						p.RPush(ctx, "tx:shared", v)
						lr = p.LRange(ctx, "tx:shared", 0, -1)
						return nil
					})
					if err != nil {
						errs <- fmt.Errorf("client %d: %w", i, err)
						return
					}
					got := lr.Val()
					if len(got) == 0 || got[len(got)-1] != v {
						errs <- fmt.Errorf("client %d: read %v does not end with its own append %s", i, got, v)
						return
					}
				}
			}(i)
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		n, err := leader.Client().LLen(ctx, "tx:shared").Result()
		if err != nil || n != clients*each {
			t.Errorf("LLEN tx:shared = %d, %v; want %d", n, err, clients*each)
		}
	})
	c.AssertRedisIdentical(ctx)
}

// runScript sends cmds on one connection, with %s in arguments replaced by
// prefix, and returns each reply as a string. Expiry times are left out:
// they differ between two servers by the time between the runs.
func runScript(t *testing.T, addr, prefix string, cmds [][]string) []string {
	t.Helper()
	conn, err := dialRaw(addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	out := make([]string, len(cmds))
	for i, c := range cmds {
		args := make([]string, len(c))
		for j, a := range c {
			args[j] = strings.ReplaceAll(a, "%s", prefix)
		}
		v, err := conn.Do(args...)
		if err != nil {
			t.Fatalf("%q on %s: %v", args, addr, err)
		}
		out[i] = v.String()
		if v.IsError() {
			// Error texts name the arguments; keep only the error's code and
			// first words so the two servers' prefixes compare equal.
			out[i] = strings.ReplaceAll(out[i], prefix, "%s")
		}
	}
	return out
}

// startStockRedis starts a redis-server without raftproxy, as an oracle
// for replies.
func startStockRedis(ctx context.Context, t *testing.T) string {
	t.Helper()
	ports, err := freePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	addr := "127.0.0.1:" + strconv.Itoa(ports[0])
	p, err := startProcess("stock redis-server", filepath.Join(dir, "redis.log"), "redis-server",
		"--port", strconv.Itoa(ports[0]), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Kill() })
	if err := waitFor(ctx, 15*time.Second, 50*time.Millisecond, "stock redis-server answering PING", func(context.Context) error {
		return pingRaw(addr)
	}); err != nil {
		t.Fatal(err)
	}
	return addr
}
