package test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestProtocol covers the RESP front end: malformed input, error texts,
// refused commands and commands answered locally. The subtests share one
// cluster to keep the suite short.
func TestProtocol(t *testing.T) {
	ctx := testContext(t, 3*time.Minute)
	c := StartCluster(ctx, t, ClusterOptions{})
	leader, followers := c.Leader(ctx)
	f := followers[0]

	t.Run("malformed", func(t *testing.T) { testMalformed(ctx, t, c, f) })
	t.Run("error texts", func(t *testing.T) { testErrorTexts(ctx, t, c, f) })
	t.Run("refused", func(t *testing.T) { testRefused(ctx, t, c, leader, f) })
	t.Run("local", func(t *testing.T) { testLocal(t, f) })
}

type malformedCase struct {
	name       string
	in         string
	closeWrite bool     // half-close after sending, as a client that gives up
	want       []string // replies before the server closes the connection
}

var malformedCases = []malformedCase{
	{name: "non-numeric multibulk length", in: "*abc\r\n",
		want: []string{"-ERR Protocol error: invalid multibulk length"}},
	{name: "multibulk length over INT_MAX", in: "*4294967296\r\n",
		want: []string{"-ERR Protocol error: invalid multibulk length"}},
	// redis-server looks at the type byte only once the line is complete,
	// so the line is terminated to get the same answer from either.
	{name: "bulk header without $", in: "*1\r\nx\r\n",
		want: []string{"-ERR Protocol error: expected '$', got 'x'"}},
	{name: "bulk length over 512MB", in: "*1\r\n$600000000\r\n",
		want: []string{"-ERR Protocol error: invalid bulk length"}},
	{name: "negative bulk length", in: "*1\r\n$-5\r\n",
		want: []string{"-ERR Protocol error: invalid bulk length"}},
	{name: "non-numeric bulk length", in: "*1\r\n$abc\r\n",
		want: []string{"-ERR Protocol error: invalid bulk length"}},
	{name: "unterminated multibulk length line", in: "*" + strings.Repeat("1", 70000),
		want: []string{"-ERR Protocol error: too big mbulk count string"}},
	{name: "unterminated bulk length line", in: "*1\r\n$" + strings.Repeat("1", 70000),
		want: []string{"-ERR Protocol error: too big bulk count string"}},
	{name: "valid command before garbage", in: "*1\r\n$4\r\nPING\r\n*abc\r\n",
		want: []string{"+PONG", "-ERR Protocol error: invalid multibulk length"}},
	{name: "unterminated command then close", in: "*2\r\n$3\r\nGET\r\n$5\r\nab", closeWrite: true},
}

func runMalformed(t *testing.T, addr string, tc malformedCase) {
	t.Helper()
	conn, err := dialRaw(addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.WriteRaw([]byte(tc.in)); err != nil {
		t.Fatalf("sending: %v", err)
	}
	if tc.closeWrite {
		if err := conn.conn.(*net.TCPConn).CloseWrite(); err != nil {
			t.Fatalf("half-closing: %v", err)
		}
	}
	for i, want := range tc.want {
		v, err := conn.Read()
		if err != nil {
			t.Fatalf("reply %d: %v, want %s", i, err, want)
		}
		if v.String() != want {
			t.Errorf("reply %d: %s, want %s", i, v, want)
		}
	}
	if err := conn.ExpectClosed(5 * time.Second); err != nil {
		t.Errorf("after the protocol error: %v", err)
	}
}

func testMalformed(ctx context.Context, t *testing.T, c *Cluster, target *Node) {
	infoBefore, err := target.RaftInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The same table against a bare redis-server shows the expected replies
	// are redis's own.
	for _, srv := range []struct{ name, addr string }{{"redis-server", c.Nodes[0].RedisAddr}, {"raftproxy", target.Addr}} {
		t.Run(srv.name, func(t *testing.T) {
			for _, tc := range malformedCases {
				t.Run(tc.name, func(t *testing.T) { runMalformed(t, srv.addr, tc) })
			}
		})
	}

	if err := pingRaw(target.Addr); err != nil {
		t.Fatalf("%s after malformed input: %v", target, err)
	}
	if err := target.Client().Set(ctx, "malformed:after", "ok", 0).Err(); err != nil {
		t.Fatalf("SET through %s after malformed input: %v", target, err)
	}
	for _, n := range c.Nodes {
		if err := checkValues(ctx, n.Client(), map[string]string{"malformed:after": "ok"}); err != nil {
			t.Errorf("through %s: %v", n, err)
		}
	}
	infoAfter, err := target.RaftInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if infoBefore.Leader() != infoAfter.Leader() || infoBefore.Get("current_term") != infoAfter.Get("current_term") {
		t.Errorf("leader/term changed from %s/%s to %s/%s across malformed input",
			infoBefore.Leader(), infoBefore.Get("current_term"), infoAfter.Leader(), infoAfter.Get("current_term"))
	}
}

func testErrorTexts(ctx context.Context, t *testing.T, c *Cluster, target *Node) {
	ref, err := dialRaw(c.Nodes[0].RedisAddr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Close()
	conn, err := dialRaw(target.Addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, tc := range []struct {
		args []string
		want string // "" when only redis's own reply is known
	}{
		{[]string{"foo", "bar"}, "-ERR unknown command 'foo', with args beginning with: 'bar' "},
		{[]string{"foo"}, "-ERR unknown command 'foo', with args beginning with: "},
		{[]string{"FOO", "bar", "baz"}, ""},
		{[]string{"GET"}, "-ERR wrong number of arguments for 'get' command"},
		{[]string{"get", "a", "b"}, "-ERR wrong number of arguments for 'get' command"},
		{[]string{"SET", "k"}, "-ERR wrong number of arguments for 'set' command"},
		{[]string{"SELECT", "99"}, ""},
		{[]string{"SELECT", "x"}, ""},
	} {
		want, err := ref.Do(tc.args...)
		if err != nil {
			t.Fatal(err)
		}
		if tc.want != "" && want.String() != tc.want {
			t.Fatalf("test expectation for %q is %s but redis-server answers %s", tc.args, tc.want, want)
		}
		got, err := conn.Do(tc.args...)
		if err != nil {
			t.Fatalf("%q: %v", tc.args, err)
		}
		if got.String() != want.String() {
			t.Errorf("%q: %s, want %s as redis-server answers", tc.args, got, want)
		}
	}
	// Command errors must leave the connection usable.
	if v, err := conn.Do("PING"); err != nil || v.String() != "+PONG" {
		t.Errorf("PING after command errors: %s, %v", v, err)
	}
}

func testRefused(ctx context.Context, t *testing.T, c *Cluster, leader, target *Node) {
	if err := leader.Client().Set(ctx, "refused:seed", "kept", 0).Err(); err != nil {
		t.Fatal(err)
	}
	// Refusals are checked on the redis-servers themselves, after everything
	// committed is applied, so a command that slipped through is caught.
	onEveryRedis := func(t *testing.T, what string, check func(ctx context.Context, n *Node) error) {
		t.Helper()
		if err := c.WaitConverged(ctx); err != nil {
			t.Fatal(err)
		}
		for _, n := range c.Nodes {
			if err := check(ctx, n); err != nil {
				t.Errorf("%s on %s's redis: %v", what, n, err)
			}
		}
	}
	_, masterPort, _ := net.SplitHostPort(c.Nodes[0].RedisAddr)
	tests := []struct {
		args  []string
		check func(t *testing.T, conn *rawConn)
	}{
		// redis could evict raftproxy's own connections to it.
		{[]string{"CONFIG", "SET", "maxmemory-clients", "1"}, func(t *testing.T, _ *rawConn) {
			onEveryRedis(t, "maxmemory-clients unchanged", func(ctx context.Context, n *Node) error {
				v, err := n.RedisClient().ConfigGet(ctx, "maxmemory-clients").Result()
				if err != nil {
					return err
				}
				if v["maxmemory-clients"] != "0" {
					return fmt.Errorf("maxmemory-clients is %q", v["maxmemory-clients"])
				}
				return nil
			})
		}},
		{[]string{"REPLICAOF", "127.0.0.1", masterPort}, checkStillMaster(c, onEveryRedis)},
		{[]string{"SLAVEOF", "127.0.0.1", masterPort}, checkStillMaster(c, onEveryRedis)},
		{[]string{"DEBUG", "RELOAD"}, nil},
		{[]string{"SHUTDOWN", "NOSAVE"}, func(t *testing.T, _ *rawConn) {
			onEveryRedis(t, "still running", func(ctx context.Context, n *Node) error { return pingRaw(n.RedisAddr) })
		}},
		{[]string{"FLUSHALL", "ASYNC"}, func(t *testing.T, _ *rawConn) {
			onEveryRedis(t, "data kept", func(ctx context.Context, n *Node) error {
				got, err := n.RedisClient().Get(ctx, "refused:seed").Result()
				if err != nil || got != "kept" {
					return fmt.Errorf("GET refused:seed = %q, %v", got, err)
				}
				return nil
			})
		}},
		{[]string{"ACL", "SAVE"}, nil},
		{[]string{"CONFIG", "SET", "save", "60 1"}, nil},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args[:1], " "), func(t *testing.T) {
			conn, err := dialRaw(target.Addr, 10*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			v, err := conn.Do(tc.args...)
			if err != nil {
				t.Fatalf("%q: %v", tc.args, err)
			}
			if !v.IsError() || !strings.HasPrefix(v.Str, "ERR") {
				t.Errorf("%q answered %s, want an -ERR refusal", tc.args, v)
			}
			// Still a normal connection: SUBSCRIBE would turn PING's reply
			// into an array.
			if v, err := conn.Do("PING"); err != nil || v.String() != "+PONG" {
				t.Errorf("PING after %q: %s, %v; want +PONG", tc.args, v, err)
			}
			if tc.check != nil {
				tc.check(t, conn)
			}
		})
	}
}

func checkStillMaster(c *Cluster, onEveryRedis func(*testing.T, string, func(context.Context, *Node) error)) func(*testing.T, *rawConn) {
	return func(t *testing.T, _ *rawConn) {
		onEveryRedis(t, "still a master", func(ctx context.Context, n *Node) error {
			info, err := n.RedisClient().Info(ctx, "replication").Result()
			if err != nil {
				return err
			}
			if !strings.Contains(info, "role:master") {
				return fmt.Errorf("INFO replication:\n%s", info)
			}
			return nil
		})
	}
}

func testLocal(t *testing.T, target *Node) {
	conn, err := dialRaw(target.Addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, tc := range []struct {
		args  []string
		check func(respValue) error
	}{
		{[]string{"PING"}, wantReply("+PONG")},
		{[]string{"PING", "hello"}, wantReply(`"hello"`)},
		{[]string{"ECHO", "x y"}, wantReply(`"x y"`)},
		{[]string{"SELECT", "1"}, wantReply("+OK")},
		{[]string{"COMMAND"}, func(v respValue) error {
			if v.Kind != '*' || len(v.Arr) < 100 {
				r := v.String()
				if len(r) > 200 {
					r = r[:200] + "..."
				}
				return fmt.Errorf("want an array describing every command, got %s", r)
			}
			return nil
		}},
		{[]string{"HELLO", "2"}, func(v respValue) error {
			if v.Kind != '*' {
				return fmt.Errorf("want a RESP2 array, got %s", v)
			}
			for i := 0; i+1 < len(v.Arr); i += 2 {
				if v.Arr[i].Str == "proto" {
					if v.Arr[i+1].Kind != ':' || v.Arr[i+1].Int != 2 {
						return fmt.Errorf("proto is %s, want :2", v.Arr[i+1])
					}
					return nil
				}
			}
			return fmt.Errorf("no proto field in %s", v)
		}},
		{[]string{"QUIT"}, wantReply("+OK")},
	} {
		v, err := conn.Do(tc.args...)
		if err != nil {
			t.Fatalf("%q: %v", tc.args, err)
		}
		if err := tc.check(v); err != nil {
			t.Errorf("%q: %v", tc.args, err)
		}
	}
	if err := conn.ExpectClosed(5 * time.Second); err != nil {
		t.Errorf("after QUIT: %v", err)
	}
}

func wantReply(want string) func(respValue) error {
	return func(v respValue) error {
		if v.String() != want {
			return fmt.Errorf("got %s, want %s", v, want)
		}
		return nil
	}
}

// TestPipelining sends thousands of commands on one connection without
// waiting: every reply must come back, in order, on leader and follower.
func TestPipelining(t *testing.T) {
	ctx := testContext(t, 4*time.Minute)
	c := StartCluster(ctx, t, ClusterOptions{})
	leader, followers := c.Leader(ctx)
	for _, target := range []struct {
		role string
		node *Node
	}{{"leader", leader}, {"follower", followers[0]}} {
		t.Run(target.role, func(t *testing.T) {
			const n = 10000
			prefix := "pipe:" + target.role
			sets := make([][]string, n)
			gets := make([][]string, n)
			want := make([]string, 2*n)
			for i := 0; i < n; i++ {
				sets[i] = []string{"SET", fmt.Sprintf("%s:%d", prefix, i), fmt.Sprintf("value-%d", i)}
				gets[i] = []string{"GET", fmt.Sprintf("%s:%d", prefix, i)}
				want[i] = "+OK"
				want[n+i] = strconv.Quote(fmt.Sprintf("value-%d", i))
			}
			start := time.Now()
			if err := pipelineRaw(target.node.Addr, append(sets, gets...), want); err != nil {
				t.Fatalf("%d SETs then %d GETs pipelined through %s: %v", n, n, target.node, err)
			}
			t.Logf("%d pipelined SETs + GETs through the %s in %v", n, target.role, time.Since(start))

			// Each GET must see the SET just before it on the same connection.
			const pairs = 1000
			var cmds [][]string
			var wantPairs []string
			for i := 0; i < pairs; i++ {
				cmds = append(cmds, []string{"SET", prefix + ":pair", strconv.Itoa(i)}, []string{"GET", prefix + ":pair"})
				wantPairs = append(wantPairs, "+OK", strconv.Quote(strconv.Itoa(i)))
			}
			if err := pipelineRaw(target.node.Addr, cmds, wantPairs); err != nil {
				t.Errorf("pipelined SET/GET pairs through %s: %v", target.node, err)
			}

			// Reads before, between and after writes (reads behind a pending
			// write go through the log): each sees exactly the writes before it.
			var mixed [][]string
			var wantMixed []string
			key := prefix + ":mixed"
			for i := 0; i < 200; i++ {
				mixed = append(mixed, []string{"GET", key}, []string{"GET", key}, []string{"SET", key, strconv.Itoa(2 * i)},
					[]string{"GET", key}, []string{"INCR", key}, []string{"EXISTS", key}, []string{"GET", key})
				prev := "$-1(nil)"
				if i > 0 {
					prev = strconv.Quote(strconv.Itoa(2*i - 1))
				}
				wantMixed = append(wantMixed, prev, prev, "+OK", strconv.Quote(strconv.Itoa(2*i)), ":"+strconv.Itoa(2*i+1), ":1",
					strconv.Quote(strconv.Itoa(2*i+1)))
			}
			if err := pipelineRaw(target.node.Addr, mixed, wantMixed); err != nil {
				t.Errorf("pipelined reads and writes through %s: %v", target.node, err)
			}

			// The same through go-redis's pipeline.
			cl := newClient(target.node.Addr, 1)
			defer cl.Close()
			pipe := cl.Pipeline()
			for i := 0; i < pairs; i++ {
				pipe.Set(ctx, prefix+":gopair", i, 0)
				pipe.Get(ctx, prefix+":gopair")
			}
			res, err := pipe.Exec(ctx)
			if err != nil {
				t.Fatalf("go-redis pipeline: %v", err)
			}
			for i := 0; i < pairs; i++ {
				got, err := res[2*i+1].(interface{ Result() (string, error) }).Result()
				if err != nil || got != strconv.Itoa(i) {
					t.Errorf("go-redis pipeline pair %d: GET = %q, %v; want %d (later pairs not checked)", i, got, err, i)
					break
				}
			}
		})
	}
	c.AssertRedisIdentical(ctx)
}

// pipelineRaw writes all commands at once from one goroutine while reading
// replies in another, so neither side waits for the other.
func pipelineRaw(addr string, cmds [][]string, want []string) error {
	conn, err := dialRaw(addr, 60*time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	var buf bytes.Buffer
	for _, args := range cmds {
		encodeCommand(&buf, args...)
	}
	writeErr := make(chan error, 1)
	go func() { writeErr <- conn.WriteRaw(buf.Bytes()) }()
	var bad []string
	for i := range cmds {
		v, err := conn.Read()
		if err != nil {
			return fmt.Errorf("reply %d of %d: %w", i, len(cmds), err)
		}
		if v.String() != want[i] && len(bad) < 5 {
			bad = append(bad, fmt.Sprintf("reply %d to %q: %s, want %s", i, cmds[i], v, want[i]))
		}
	}
	if err := <-writeErr; err != nil {
		return fmt.Errorf("writing the pipeline: %w", err)
	}
	if len(bad) > 0 {
		return fmt.Errorf("wrong replies:\n  %s", strings.Join(bad, "\n  "))
	}
	return nil
}
