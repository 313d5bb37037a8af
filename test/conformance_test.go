package test

import (
	"bytes"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/raftproxy/raftproxy/resp"
)

// rawSession sends data on a fresh connection and returns the raw bytes of
// the next n replies, as the server wrote them.
func rawSession(addr string, data []byte, n int) ([]string, error) {
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := nc.Write(data); err != nil {
		return nil, err
	}
	r := resp.NewReader(nc, 64<<10)
	var out []string
	for range n {
		raw, err := r.ReadReply(nil)
		if err != nil {
			return out, fmt.Errorf("reply %d: %w", len(out), err)
		}
		out = append(out, string(raw))
	}
	return out, nil
}

func commands(cmds ...[]string) []byte {
	var b bytes.Buffer
	for _, c := range cmds {
		encodeCommand(&b, c...)
	}
	return b.Bytes()
}

func cmd(args ...string) []string { return args }

// TestRedisConformance runs, through a follower of a 3-node cluster and on
// a stock redis-server, the behaviours of issue 19 that have redis's own
// answer, and requires the same bytes.
func TestRedisConformance(t *testing.T) {
	ctx := testContext(t, 4*time.Minute)
	c := StartCluster(ctx, t, ClusterOptions{})
	_, followers := c.Leader(ctx)
	f := followers[0]
	stock := startStockRedis(ctx, t)
	cases := []struct {
		name    string
		data    []byte
		replies int
	}{
		// A Lua table that holds itself: ~8000 levels of nesting, then an
		// error, relayed as redis writes it.
		{"self-referencing table", commands(cmd("EVAL", "local a={} local b={a} a[1]=b return a", "0")), 1},
		// Arrays of zero or fewer elements are skipped without a reply.
		{"negative multibulk lengths", append([]byte("*-5\r\n*0\r\n*-9223372036854775808\r\n"), commands(cmd("PING", "after"))...), 1},
		{"multibulk length below int64", []byte("*-9223372036854775809\r\n"), 1},
		{"multibulk length above INT_MAX", []byte("*2147483648\r\n"), 1},
		{"CLIENT REPLY", commands(cmd("CLIENT", "REPLY", "OFF"), cmd("SET", "conf:r", "1"), cmd("GET", "conf:r"),
			cmd("CLIENT", "REPLY", "ON"), cmd("GET", "conf:r"), cmd("CLIENT", "REPLY", "SKIP"), cmd("PING"), cmd("PING", "shown")), 3},
		{"kill with nothing running", commands(cmd("SCRIPT", "KILL"), cmd("FUNCTION", "KILL")), 2},
		{"CONFIG SET of values redis already has", commands(cmd("CONFIG", "SET", "save", ""), cmd("CONFIG", "SET", "appendonly", "no")), 2},
		{"PFSELFTEST", commands(cmd("PFSELFTEST")), 1},
		{"ACL", commands(cmd("ACL", "SETUSER", "conf", "on", ">pw", "~c:*", "+@string", "&chan"),
			cmd("AUTH", "conf", "bad"), cmd("AUTH", "conf", "pw"), cmd("ACL", "WHOAMI"), cmd("GET", "x"), cmd("GET", "c:1"),
			cmd("DEL", "c:1"), cmd("PUBLISH", "chan", "m"), cmd("MULTI"), cmd("EXEC"), cmd("RESET"), cmd("ACL", "WHOAMI"),
			cmd("ACL", "GETUSER", "conf"), cmd("ACL", "DRYRUN", "conf", "set", "x", "1"), cmd("ACL", "DRYRUN", "nobody", "get", "x"),
			cmd("ACL", "DELUSER", "conf"), cmd("AUTH", "conf", "pw")), 17},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			want, err := rawSession(stock, tc.data, tc.replies)
			if err != nil {
				t.Fatalf("stock redis: %v", err)
			}
			got, err := rawSession(f.Addr, tc.data, tc.replies)
			if err != nil {
				t.Fatalf("raftproxy: %v (so far %q)", err, got)
			}
			for i := range want {
				if got[i] != want[i] {
					t.Errorf("reply %d: raftproxy %.200q, redis %.200q", i, got[i], want[i])
				}
			}
		})
	}
	c.AssertRedisIdentical(ctx)
}
