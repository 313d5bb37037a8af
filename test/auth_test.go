package test

import (
	"bufio"
	"context"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// startStockRedisArgs is startStockRedis with more redis-server arguments.
func startStockRedisArgs(ctx context.Context, t *testing.T, extra ...string) string {
	t.Helper()
	ports, err := freePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	addr := "127.0.0.1:" + strconv.Itoa(ports[0])
	args := append([]string{"--port", strconv.Itoa(ports[0]), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir}, extra...)
	p, err := startProcess("stock redis-server", filepath.Join(dir, "redis.log"), "redis-server", args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Kill() })
	if err := waitFor(ctx, 15*time.Second, 50*time.Millisecond, "stock redis-server accepting connections", func(context.Context) error {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return err
		}
		return c.Close()
	}); err != nil {
		t.Fatal(err)
	}
	return addr
}

// TestAuth runs a password-protected cluster whose nodes supervise their own
// redis-servers: the nodes joined each other through AUTH, the applier and
// reads reach redis with its random password, and clients meet AUTH, HELLO
// AUTH and RESET exactly as on a stock redis-server with requirepass.
func TestAuth(t *testing.T) {
	ctx := testContext(t, 60*time.Second)
	const pw = "s3cret pass"
	c := StartCluster(ctx, t, ClusterOptions{Nodes: 2, Supervised: true, Password: pw,
		ExtraArgs: []string{"--snapshot-catchup-entries", "1"}})
	stock := startStockRedisArgs(ctx, t, "--requirepass", pw)

	t.Run("replies as redis", func(t *testing.T) {
		// Each script runs on a fresh connection to the stock redis and to
		// each node (leader and follower).
		big := strings.Repeat("x", 20000)
		scripts := [][][]string{
			{
				{"GET", "k"}, {"NOSUCH", "x"}, {"GET"}, {"MULTI"}, {"PING"}, {"HELLO", "3"}, {"HELLO"},
				{"AUTH", "wrong"}, {"AUTH", "bob", pw}, {"AUTH", "default", "wrong"}, {"AUTH", "a", "b", "c"},
				{"HELLO", "2", "AUTH", "default", "wrong"},
				{"AUTH", pw}, {"SET", "auth:k", "v"}, {"GET", "auth:k"},
				{"AUTH", "wrong"}, {"GET", "auth:k"}, // a failed AUTH keeps the client logged in
				{"RESET"}, {"GET", "auth:k"}, {"AUTH", "default", pw}, {"GET", "auth:k"},
				{"QUIT"},
			},
			{{"HELLO", "2", "AUTH", "default", pw}, {"GET", "auth:k"}, {"RESET"}, {"PING"}},
			{{"ECHO", big}},
			{{"SET", "a", "1", "b", "2", "c", "3", "d", "4", "e", "5"}},
		}
		for _, n := range c.Nodes {
			for i, script := range scripts {
				want := runAuthScript(t, stock, script)
				got := runAuthScript(t, n.Addr, script)
				if len(got) != len(want) {
					t.Fatalf("%s, script %d: %d replies, redis gave %d:\n got  %q\n want %q", n, i, len(got), len(want), got, want)
				}
				for j := range want {
					if got[j] != want[j] {
						t.Errorf("%s, script %d, %q: got %s, redis %s", n, i, script[min(j, len(script)-1)], got[j], want[j])
					}
				}
			}
		}
	})

	t.Run("replicates with the password", func(t *testing.T) {
		if err := c.Nodes[1].Client().Set(ctx, "auth:r", "1", 0).Err(); err != nil {
			t.Fatal(err)
		}
		if v, err := c.Nodes[0].Client().Get(ctx, "auth:r").Result(); err != nil || v != "1" {
			t.Fatalf("GET through the other node: %q %v", v, err)
		}
		// INFO runs on a fresh connection to the supervised redis.
		if info, err := c.Nodes[1].Client().Info(ctx, "server").Result(); err != nil || !strings.Contains(info, "redis_version:") {
			t.Fatalf("INFO server: %q %v", info, err)
		}
		noPass := c.track(newClient(c.Nodes[0].Addr, 1))
		if err := noPass.Get(ctx, "auth:r").Err(); err == nil || !strings.HasPrefix(err.Error(), "NOAUTH") {
			t.Fatalf("GET without a password: %v, want NOAUTH", err)
		}
	})

	t.Run("snapshot to a new node", func(t *testing.T) {
		// Making the snapshot (BGSAVE, reading the RDB) and loading it into
		// the new node's redis (REPLICAOF) both go through AUTH.
		cl := c.Nodes[0].Client()
		for i := range 20 {
			if err := cl.Set(ctx, "auth:s"+strconv.Itoa(i), i, 0).Err(); err != nil {
				t.Fatal(err)
			}
		}
		for _, n := range c.Nodes {
			if v, err := n.Do(ctx, 30*time.Second, "RAFT.DEBUG", "COMPACT"); err != nil || v.String() != "+OK" {
				t.Fatalf("RAFT.DEBUG COMPACT on %s: %s %v", n, v, err)
			}
		}
		n := c.AddNode(ctx, c.Nodes[0])
		if v, err := n.Client().Get(ctx, "auth:s7").Result(); err != nil || v != "7" {
			t.Fatalf("GET through the node that joined from a snapshot: %q %v", v, err)
		}
		if got := infoInt(ctx, t, n, "snapshot_last_index"); got == 0 {
			t.Errorf("%s has no snapshot: it did not join from one", n)
		}
	})

	t.Run("backup with the password", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "b.rdb")
		if _, stderr, err := tryBackup(ctx, nil, "--from", c.Nodes[0].Addr, "--out", out); err == nil || !strings.Contains(stderr, "NOAUTH") {
			t.Errorf("backup without a password: %v, stderr %q; want it refused with NOAUTH", err, stderr)
		}
		if _, stderr, err := tryBackup(ctx, nil, "--from", c.Nodes[0].Addr, "--out", out, "--password", "wrong"); err == nil || !strings.Contains(stderr, "WRONGPASS") {
			t.Errorf("backup with a wrong password: %v, stderr %q; want WRONGPASS", err, stderr)
		}
		if _, err := os.Stat(out); err == nil {
			t.Errorf("a refused backup wrote %s", out)
		}
		info, stderr, err := tryBackup(ctx, []string{"RAFTPROXY_PASSWORD=" + pw}, "--from", c.Nodes[1].Addr, "--out", out)
		if err != nil || info.Index == 0 || info.ClusterID != c.ClusterID {
			t.Fatalf("backup with RAFTPROXY_PASSWORD: %+v %v\n%s", info, err, stderr)
		}
	})

	t.Run("supervised redis has a password", func(t *testing.T) {
		sock := filepath.Join(c.Nodes[0].DataDir, "redis", "redis.sock")
		nc, err := net.DialTimeout("unix", sock, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		rc := &rawConn{conn: nc, r: bufio.NewReader(nc), timeout: 2 * time.Second}
		defer rc.Close()
		if v, err := rc.Do("SET", "auth:direct", "1"); err != nil || v.String() != "-NOAUTH Authentication required." {
			t.Fatalf("SET straight to the supervised redis: %s %v, want NOAUTH", v, err)
		}
	})
}

// runAuthScript sends each command of script on one new connection and returns
// the replies as text, with "<closed>" where the server closed it. HELLO's
// map is reduced to its shape: ids and versions differ.
func runAuthScript(t *testing.T, addr string, script [][]string) []string {
	t.Helper()
	rc, err := dialRaw(addr, 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var out []string
	for _, cmd := range script {
		v, err := rc.Do(cmd...)
		if err != nil {
			if rc.ExpectClosed(0) == nil || strings.Contains(err.Error(), "EOF") || strings.Contains(err.Error(), "reset") {
				return append(out, "<closed>")
			}
			t.Fatalf("%s %q: %v", addr, cmd, err)
		}
		s := v.String()
		if strings.EqualFold(cmd[0], "HELLO") && v.Kind == '*' {
			s = "hello reply of " + strconv.Itoa(len(v.Arr))
		}
		out = append(out, s)
	}
	return out
}
