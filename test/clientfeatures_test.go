package test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/raftproxy/raftproxy/resp"
)

// rconn is a connection that reads replies and pushes as raw RESP2/RESP3.
type rconn struct {
	t  *testing.T
	nc net.Conn
	r  *resp.Reader
}

func dialR(t *testing.T, addr string) *rconn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return &rconn{t: t, nc: nc, r: resp.NewReader(nc, 64<<10)}
}

func (c *rconn) send(args ...string) {
	c.t.Helper()
	var b bytes.Buffer
	encodeCommand(&b, args...)
	c.nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.nc.Write(b.Bytes()); err != nil {
		c.t.Fatal(err)
	}
}

// read returns the next reply or push, or "" when none comes within d.
func (c *rconn) read(d time.Duration) string {
	c.t.Helper()
	c.nc.SetReadDeadline(time.Now().Add(d))
	raw, err := c.r.ReadReply(nil)
	if err != nil {
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			return ""
		}
		c.t.Fatalf("read: %v", err)
	}
	return string(raw)
}

func (c *rconn) do(args ...string) string {
	c.t.Helper()
	c.send(args...)
	return c.read(10 * time.Second)
}

// TestClientFeatures: MONITOR, CLIENT PAUSE, CLIENT TRACKING, FUNCTION
// DUMP/RESTORE, SLOWLOG and INFO commandstats in clients' terms, and ACL
// users that outlive a snapshot, on a 3-node cluster.
func TestClientFeatures(t *testing.T) {
	ctx := testContext(t, 4*time.Minute)
	c := StartCluster(ctx, t, ClusterOptions{})
	leader, followers := c.Leader(ctx)
	f, g := followers[0], followers[1]

	t.Run("monitor", func(t *testing.T) {
		m := dialR(t, f.Addr)
		if r := m.do("MONITOR"); r != "+OK\r\n" {
			t.Fatalf("MONITOR: %q", r)
		}
		cl := dialR(t, f.Addr)
		cl.do("SELECT", "2")
		cl.do("SET", "mon:k", "a b\n")
		cl.do("AUTH", "secret")
		line := regexp.MustCompile(`^\+\d+\.\d{6} \[(\d+) [0-9.:]+\] (.*)\r\n$`)
		want := []string{`"SELECT" "2"`, `"SET" "mon:k" "a b\n"`, `"AUTH" "(redacted)"`}
		for _, w := range want {
			got := m.read(5 * time.Second)
			mm := line.FindStringSubmatch(got)
			if mm == nil || mm[2] != w {
				t.Errorf("monitor line %q, want one showing %s", got, w)
			}
		}
		if r := m.do("GET", "x"); r != "-ERR Replica can't interact with the keyspace\r\n" {
			t.Errorf("GET from a monitoring client: %q", r)
		}
	})

	t.Run("pause", func(t *testing.T) {
		a, b := dialR(t, leader.Addr), dialR(t, g.Addr)
		if r := a.do("CLIENT", "PAUSE", "1500", "WRITE"); r != "+OK\r\n" {
			t.Fatalf("CLIENT PAUSE: %q", r)
		}
		start := time.Now()
		if r := b.do("GET", "pause:k"); r != "$-1\r\n" || time.Since(start) > time.Second {
			t.Errorf("a read on another node during a write pause: %q after %v", r, time.Since(start))
		}
		start = time.Now()
		if r := b.do("SET", "pause:k", "1"); r != "+OK\r\n" || time.Since(start) < time.Second {
			t.Errorf("a write on another node during the pause: %q after %v, want it held ~1.5 s", r, time.Since(start))
		}
		a.do("CLIENT", "PAUSE", "10000", "WRITE")
		a.do("CLIENT", "UNPAUSE")
		start = time.Now()
		if r := b.do("SET", "pause:k", "2"); r != "+OK\r\n" || time.Since(start) > time.Second {
			t.Errorf("a write after CLIENT UNPAUSE: %q after %v", r, time.Since(start))
		}
	})

	t.Run("tracking", func(t *testing.T) {
		w := dialR(t, leader.Addr) // writes through another node
		r3 := dialR(t, f.Addr)
		r3.do("HELLO", "3")
		if r := r3.do("CLIENT", "TRACKING", "ON"); r != "+OK\r\n" {
			t.Fatalf("CLIENT TRACKING ON: %q", r)
		}
		r3.do("GET", "trk:a")
		w.do("SET", "trk:a", "1")
		if got := r3.read(5 * time.Second); got != ">2\r\n$10\r\ninvalidate\r\n*1\r\n$5\r\ntrk:a\r\n" {
			t.Errorf("invalidation of a key read on this node, written on another: %q", got)
		}
		w.do("SET", "trk:a", "2")
		if got := r3.read(500 * time.Millisecond); got != "" {
			t.Errorf("a second invalidation without a new read: %q", got)
		}
		// REDIRECT to a RESP2 connection subscribed to __redis__:invalidate.
		sub := dialR(t, f.Addr)
		id := strings.TrimSpace(strings.TrimPrefix(sub.do("CLIENT", "ID"), ":"))
		sub.do("SUBSCRIBE", "__redis__:invalidate")
		r2 := dialR(t, f.Addr)
		if r := r2.do("CLIENT", "TRACKING", "ON", "REDIRECT", id); r != "+OK\r\n" {
			t.Fatalf("CLIENT TRACKING ON REDIRECT: %q", r)
		}
		r2.do("GET", "trk:b")
		w.do("SET", "trk:b", "1")
		if got := sub.read(5 * time.Second); got != "*3\r\n$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n*1\r\n$5\r\ntrk:b\r\n" {
			t.Errorf("redirected invalidation: %q", got)
		}
		w.do("FLUSHDB")
		if got := sub.read(5 * time.Second); got != "*3\r\n$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n$-1\r\n" {
			t.Errorf("redirected invalidation of FLUSHDB: %q", got)
		}
		// BCAST with a prefix, NOLOOP. A read through g first: g has then
		// applied the FLUSHDB, whose invalidation must not reach bc.
		dialR(t, g.Addr).do("GET", "trk:b")
		bc := dialR(t, g.Addr)
		bc.do("HELLO", "3")
		bc.do("CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "user:", "NOLOOP")
		w.do("SET", "other", "x")
		w.do("SET", "user:1", "x")
		if got := bc.read(5 * time.Second); got != ">2\r\n$10\r\ninvalidate\r\n*1\r\n$6\r\nuser:1\r\n" {
			t.Errorf("BCAST invalidation: %q", got)
		}
		bc.do("SET", "user:2", "x")
		if got := bc.read(500 * time.Millisecond); got != "" {
			t.Errorf("NOLOOP: the client's own write invalidated %q", got)
		}
		if info := bc.do("CLIENT", "TRACKINGINFO"); !strings.Contains(info, "bcast") || !strings.Contains(info, "noloop") || !strings.Contains(info, "user:") {
			t.Errorf("CLIENT TRACKINGINFO: %q", info)
		}
	})

	t.Run("function dump and restore", func(t *testing.T) {
		a := dialR(t, leader.Addr)
		code := "#!lua name=dumped\nredis.register_function('dumped_f', function(keys, args) return 'dumped value dumped value dumped value' end)"
		a.do("FUNCTION", "LOAD", code)
		b := dialR(t, f.Addr)
		dump := b.do("FUNCTION", "DUMP")
		v, _, err := resp.Parse([]byte(dump))
		if err != nil || v.Kind != '$' {
			t.Fatalf("FUNCTION DUMP: %q %v", dump, err)
		}
		if bytes.Contains(v.Str, []byte("raftproxy")) {
			t.Errorf("FUNCTION DUMP shows raftproxy's prelude")
		}
		// The dump restores into a stock redis as the code the client loaded.
		stock := dialR(t, startStockRedis(ctx, t))
		if r := stock.do("FUNCTION", "RESTORE", string(v.Str)); r != "+OK\r\n" {
			t.Fatalf("stock redis FUNCTION RESTORE: %q", r)
		}
		if r := stock.do("FCALL", "dumped_f", "0"); !strings.Contains(r, "dumped value") {
			t.Errorf("stock redis FCALL after RESTORE: %q", r)
		}
		// And back here, on every node, under the prelude.
		a.do("FUNCTION", "FLUSH")
		if r := b.do("FUNCTION", "RESTORE", string(v.Str)); r != "+OK\r\n" {
			t.Fatalf("FUNCTION RESTORE: %q", r)
		}
		if r := dialR(t, g.Addr).do("FCALL", "dumped_f", "0"); !strings.Contains(r, "dumped value") {
			t.Errorf("FCALL on another node after RESTORE: %q", r)
		}
		if r := b.do("FUNCTION", "RESTORE", "not a payload"); r != "-ERR payload version or checksum are wrong\r\n" {
			t.Errorf("RESTORE of garbage: %q", r)
		}
	})

	t.Run("statistics in clients' terms", func(t *testing.T) {
		a := dialR(t, f.Addr)
		a.do("CONFIG", "SET", "slowlog-log-slower-than", "0")
		time.Sleep(300 * time.Millisecond) // the proxies read the setting once applied
		a.do("CONFIG", "RESETSTAT")
		a.do("SLOWLOG", "RESET")
		a.do("SADD", "st:set", "a", "b", "c")
		a.do("SPOP", "st:set")
		a.do("GET", "st:x", "extra") // rejected: arity
		slow := a.do("SLOWLOG", "GET", "10")
		if !strings.Contains(slow, "$4\r\nSPOP\r\n$6\r\nst:set\r\n") || strings.Contains(slow, "EVAL") {
			t.Errorf("SLOWLOG does not show the client's SPOP as sent: %q", slow)
		}
		stats := a.do("INFO", "commandstats")
		for _, want := range []string{"cmdstat_spop:calls=1,", "cmdstat_sadd:calls=1,", "cmdstat_get:calls=0,", "rejected_calls=1"} {
			if !strings.Contains(stats, want) {
				t.Errorf("INFO commandstats lacks %q:\n%s", want, stats)
			}
		}
		if strings.Contains(stats, "cmdstat_eval") {
			t.Errorf("INFO commandstats shows the applier's EVAL:\n%s", stats)
		}
		if h := a.do("LATENCY", "HISTOGRAM", "spop"); !strings.Contains(h, "histogram_usec") {
			t.Errorf("LATENCY HISTOGRAM spop: %q", h)
		}
		a.do("CONFIG", "SET", "slowlog-log-slower-than", "10000")
	})

	t.Run("users outlive a snapshot", func(t *testing.T) {
		a := dialR(t, leader.Addr)
		a.do("ACL", "SETUSER", "snapuser", "on", ">pw", "~s:*", "+get")
		if r := a.do("RAFT.DEBUG", "COMPACT"); r != "+OK\r\n" {
			t.Fatalf("RAFT.DEBUG COMPACT: %q", r)
		}
		// A node that joins now gets the users in the snapshot.
		n := c.AddNode(ctx, leader)
		err := waitFor(ctx, 20*time.Second, 100*time.Millisecond, "the new node knows snapuser", func(context.Context) error {
			b := dialR(t, n.Addr)
			if r := b.do("AUTH", "snapuser", "pw"); r != "+OK\r\n" {
				return fmt.Errorf("AUTH: %q", r)
			}
			if r := b.do("SET", "s:1", "x"); !strings.HasPrefix(r, "-NOPERM") {
				return fmt.Errorf("SET as snapuser: %q", r)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})
	c.AssertRedisIdentical(ctx)
}
