package test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestClientLimits checks --max-clients, --max-request-bytes, --idle-timeout
// and --client-output-buffer-limit on one single-node cluster, with raw
// connections only (a client library's pool would count against the limits).
func TestClientLimits(t *testing.T) {
	ctx := testContext(t, 60*time.Second)
	const maxClients = 5
	c := StartCluster(ctx, t, ClusterOptions{Nodes: 1, ExtraArgs: []string{
		"--max-clients", strconv.Itoa(maxClients), "--max-request-bytes", "64kb",
		"--idle-timeout", "1s", "--client-output-buffer-limit", "1mb",
	}})
	n := c.Nodes[0]
	dial := func(t *testing.T) *rawConn {
		t.Helper()
		rc, err := dialRaw(n.Addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { rc.Close() })
		return rc
	}

	t.Run("max clients", func(t *testing.T) {
		var conns []*rawConn
		// The harness's own connections are closed, but the proxy may not
		// have seen that yet: a refusal before the limit is retried.
		err := waitFor(ctx, 10*time.Second, 100*time.Millisecond, "room for our clients", func(context.Context) error {
			for len(conns) < maxClients {
				rc := dial(t)
				v, err := rc.Do("PING")
				if err != nil || v.String() != "+PONG" {
					rc.Close()
					return fmt.Errorf("client %d: PING answered %s %v", len(conns)+1, v, err)
				}
				conns = append(conns, rc)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		extra := dial(t)
		v, err := extra.Read()
		if err != nil || v.String() != "-ERR max number of clients reached" {
			t.Fatalf("client %d got %s %v, want -ERR max number of clients reached", maxClients+1, v, err)
		}
		if err := extra.ExpectClosed(2 * time.Second); err != nil {
			t.Fatal(err)
		}
		for _, rc := range conns {
			rc.Close()
		}
	})

	t.Run("max request bytes", func(t *testing.T) {
		err := waitFor(ctx, 10*time.Second, 100*time.Millisecond, "the limit's clients gone", func(context.Context) error {
			rc := dial(t)
			defer rc.Close()
			if v, err := rc.Do("SET", "limits:k", strings.Repeat("x", 64<<10)); err != nil || v.String() != "+OK" {
				return fmt.Errorf("SET of 64kb: %s %v", v, err)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		rc := dial(t)
		v, err := rc.Do("SET", "limits:k", strings.Repeat("x", 64<<10+1))
		if err != nil || v.String() != "-ERR Protocol error: invalid bulk length" {
			t.Fatalf("SET of 64kb+1: %s %v, want redis's protocol error", v, err)
		}
		if err := rc.ExpectClosed(2 * time.Second); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("idle timeout", func(t *testing.T) {
		idle, sub, blocked := dial(t), dial(t), dial(t)
		for _, rc := range []*rawConn{idle, sub, blocked} {
			if v, err := rc.Do("PING"); err != nil || v.String() != "+PONG" {
				t.Fatalf("PING: %s %v", v, err)
			}
		}
		if v, err := sub.Do("SUBSCRIBE", "limits:ch"); err != nil || v.Kind != '*' {
			t.Fatalf("SUBSCRIBE: %s %v", v, err)
		}
		// BLPOP waits 2s, longer than the idle timeout: a blocked client is
		// not idle.
		if err := blocked.Send("BLPOP", "limits:list", "2"); err != nil {
			t.Fatal(err)
		}
		if err := idle.ExpectClosed(3 * time.Second); err != nil {
			t.Fatalf("idle client: %v", err)
		}
		blocked.timeout = 5 * time.Second
		if v, err := blocked.Read(); err != nil || !v.Null {
			t.Fatalf("BLPOP after 2s: %s %v, want a null reply", v, err)
		}
		pub := dial(t)
		if v, err := pub.Do("PUBLISH", "limits:ch", "still here"); err != nil || v.String() != ":1" {
			t.Fatalf("PUBLISH to the idle subscriber: %s %v", v, err)
		}
		if v, err := sub.Read(); err != nil || v.String() != `["message" "limits:ch" "still here"]` {
			t.Fatalf("subscriber got %s %v", v, err)
		}
		// Done waiting, the blocked client is idle like any other.
		if err := blocked.ExpectClosed(3 * time.Second); err != nil {
			t.Fatalf("client after its BLPOP: %v", err)
		}
	})

	t.Run("output buffer limit", func(t *testing.T) {
		const size, gets = 60 << 10, 2000 // 120 MB of replies against a 1 MB limit
		set := dial(t)
		if v, err := set.Do("SET", "limits:big", strings.Repeat("v", size)); err != nil || v.String() != "+OK" {
			t.Fatalf("SET: %s %v", v, err)
		}
		slow := dial(t)
		me := slow.conn.LocalAddr().String()
		var pipeline bytes.Buffer
		for range gets {
			encodeCommand(&pipeline, "GET", "limits:big")
		}
		sent := make(chan error, 1)
		go func() {
			slow.timeout = 30 * time.Second
			sent <- slow.WriteRaw(pipeline.Bytes())
		}()
		// The client never reads: the proxy must drop it. Another client
		// watches CLIENT LIST for it (and keeps itself from idling out).
		err := waitFor(ctx, 20*time.Second, 200*time.Millisecond, "the client that does not read disconnected", func(context.Context) error {
			watch := dial(t)
			defer watch.Close()
			v, err := watch.Do("CLIENT", "LIST")
			if err != nil {
				return err
			}
			if strings.Contains(v.Str, "addr="+me+" ") {
				return fmt.Errorf("still connected")
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		// A sanity bound, not a measurement: the replies it did not read
		// were dropped, not kept.
		if rss := vmRSS(t, n.proxy.Pid()); rss > 100<<20 {
			t.Errorf("proxy RSS %d MiB after a client left 120 MB of replies unread", rss>>20)
		}
		slow.Close()
		<-sent
	})

	// A backup streams an RDB bigger than the output limit: it is paced by
	// the client's reading, not dropped at the limit.
	t.Run("backup larger than the output limit", func(t *testing.T) {
		cl := dial(t)
		// Values under the 64kb request limit, 4.7 MiB in all.
		for i := range 80 {
			// Random bytes: redis's RDB compression must not shrink them.
			v := make([]byte, 60<<10)
			rand.Read(v)
			if r, err := cl.Do("SET", fmt.Sprintf("limits:rdb%d", i), string(v)); err != nil || r.String() != "+OK" {
				t.Fatalf("SET: %s %v", r, err)
			}
		}
		out := filepath.Join(t.TempDir(), "b.rdb")
		info, stderr, err := tryBackup(ctx, nil, "--from", n.Addr, "--out", out)
		if err != nil {
			t.Fatalf("backup through a 1mb output limit: %v\n%s", err, stderr)
		}
		if info.Size < 4<<20 {
			t.Fatalf("backup of %d bytes: the test wants one well past the 1mb limit", info.Size)
		}
	})
}

// vmRSS reads a process's resident set size from /proc.
func vmRSS(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("VmRSS line %q: %v", line, err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no VmRSS in /proc/%d/status", pid)
	return 0
}
