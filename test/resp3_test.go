package test

import (
	"bytes"
	"fmt"
	"net"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/raftproxy/raftproxy/resp"
)

// bytesConn is a RESP connection that returns replies as their raw bytes,
// RESP3 included: comparing bytes shows any difference in encoding.
type bytesConn struct {
	nc net.Conn
	r  *resp.Reader
}

func dialBytes(t *testing.T, addr string) *bytesConn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return &bytesConn{nc: nc, r: resp.NewReader(nc, 64<<10)}
}

func (c *bytesConn) send(cmds ...[]string) error {
	var buf bytes.Buffer
	for _, args := range cmds {
		encodeCommand(&buf, args...)
	}
	c.nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, err := c.nc.Write(buf.Bytes())
	return err
}

func (c *bytesConn) read() (string, error) {
	c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	raw, err := c.r.ReadReply(nil)
	return string(raw), err
}

func (c *bytesConn) do(t *testing.T, args ...string) string {
	t.Helper()
	if err := c.send(args); err != nil {
		t.Fatalf("send %q: %v", args, err)
	}
	r, err := c.read()
	if err != nil {
		t.Fatalf("reply to %q: %v", args, err)
	}
	return r
}

// helloID is the connection id in a HELLO reply, which differs between
// servers.
var helloID = regexp.MustCompile(`\$2\r\nid\r\n:\d+\r\n`)

func normalize(reply string) string { return helloID.ReplaceAllString(reply, "$$2\r\nid\r\n:<id>\r\n") }

// resp3Script is compared reply by reply, raw, with a stock redis-server;
// %s is a per-target key prefix.
var resp3Script = [][]string{
	{"HELLO", "3"},
	{"SET", "%s:str", "v"}, {"GET", "%s:str"}, {"GET", "%s:missing"},
	{"HSET", "%s:h", "f1", "a", "f2", "b"}, {"HGETALL", "%s:h"}, {"HGETALL", "%s:missing"},
	{"ZADD", "%s:z", "1.5", "m1", "2", "m2"}, {"ZSCORE", "%s:z", "m1"}, {"ZRANGE", "%s:z", "0", "-1", "WITHSCORES"},
	{"ZINCRBY", "%s:z", "1", "m1"}, {"ZADD", "%s:z", "INCR", "0.25", "m2"}, {"ZSCORE", "%s:z", "missing"},
	{"SADD", "%s:s", "one"}, {"SMEMBERS", "%s:s"}, {"SISMEMBER", "%s:s", "one"}, {"EXISTS", "%s:str", "%s:h", "%s:nope"},
	{"CONFIG", "GET", "maxmemory"}, {"TYPE", "%s:h"}, {"OBJECT", "ENCODING", "%s:z"}, {"LPOP", "%s:nolist"},
	{"MULTI"}, {"HSET", "%s:h", "f3", "c"}, {"HGETALL", "%s:h"}, {"GET", "%s:missing"}, {"ZSCORE", "%s:z", "m1"}, {"EXEC"},
	{"CLIENT", "GETNAME"}, {"CLIENT", "SETNAME", "app"}, {"CLIENT", "GETNAME"}, {"CLIENT", "TRACKINGINFO"}, {"CLIENT", "GETREDIR"},
	{"HELLO"},
	{"HELLO", "2"}, {"HGETALL", "%s:h"}, {"GET", "%s:missing"}, {"ZSCORE", "%s:z", "m1"}, {"CLIENT", "TRACKINGINFO"},
	{"MULTI"}, {"HGETALL", "%s:h"}, {"EXEC"},
	{"HELLO", "3", "SETNAME", "again"}, {"CLIENT", "GETNAME"}, {"HGETALL", "%s:h"},
	{"HELLO", "3", "AUTH", "default", "whatever"}, {"HELLO", "3", "AUTH", "nobody", "x"}, {"AUTH", "x"}, {"AUTH", "default", "x"},
	{"HELLO", "4"}, {"HELLO", "x"}, {"HELLO", "3", "SETNAME", "a b"}, {"HELLO", "3", "BOGUS"},
	{"RESET"}, {"HGETALL", "%s:h"}, {"CLIENT", "GETNAME"},
}

func expand(args []string, prefix string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = strings.ReplaceAll(a, "%s", prefix)
	}
	return out
}

// TestRESP3 compares raftproxy's RESP3 (and RESP2 after switching back)
// replies byte for byte with a stock redis-server's, through the leader and
// a follower: commands answered by the proxy, writes through the log, lone
// reads (the shared read connection), pipelined reads (the connection's
// own), transactions, HELLO and CLIENT.
func TestRESP3(t *testing.T) {
	ctx := testContext(t, 3*time.Minute)
	c := StartCluster(ctx, t, ClusterOptions{})
	leader, followers := c.Leader(ctx)
	stock := startStockRedis(ctx, t)
	targets := []struct {
		role string
		addr string
	}{{"leader", leader.Addr}, {"follower", followers[0].Addr}}

	for _, target := range targets {
		t.Run("one at a time/"+target.role, func(t *testing.T) {
			prefix := "r3:" + target.role
			want, got := dialBytes(t, stock), dialBytes(t, target.addr)
			for _, cmd := range resp3Script {
				args := expand(cmd, prefix)
				w, g := normalize(want.do(t, args...)), normalize(got.do(t, args...))
				if g != w {
					t.Errorf("%q: raftproxy %q, redis %q", args, g, w)
				}
			}
		})
		t.Run("pipelined/"+target.role, func(t *testing.T) {
			// The whole script in one write: reads run batched on the
			// connection's own redis connection, behind writes through the
			// log, with protocol switches in the middle.
			prefix := "r3p:" + target.role
			var cmds [][]string
			for _, cmd := range resp3Script {
				cmds = append(cmds, expand(cmd, prefix))
			}
			for i := 0; i < 20; i++ {
				cmds = append(cmds, []string{"HGETALL", prefix + ":h"}, []string{"GET", prefix + ":missing"})
				if i == 10 {
					cmds = append(cmds, []string{"HELLO", "3"})
				}
			}
			replies := func(addr string) []string {
				conn := dialBytes(t, addr)
				if err := conn.send(cmds...); err != nil {
					t.Fatal(err)
				}
				out := make([]string, len(cmds))
				for i := range cmds {
					r, err := conn.read()
					if err != nil {
						t.Fatalf("reply %d (%q) from %s: %v", i, cmds[i], addr, err)
					}
					out[i] = normalize(r)
				}
				return out
			}
			want, got := replies(stock), replies(target.addr)
			for i := range cmds {
				if got[i] != want[i] {
					t.Errorf("%d %q: raftproxy %q, redis %q", i, cmds[i], got[i], want[i])
				}
			}
		})
	}

	t.Run("shared read connection with both protocols", func(t *testing.T) {
		// Lone reads of RESP2 and RESP3 clients at once share the read pipe,
		// which must switch protocol between them.
		if err := leader.Client().HSet(ctx, "r3:mixed", "f", "v").Err(); err != nil {
			t.Fatal(err)
		}
		const clients, rounds = 8, 100
		want := map[bool]string{false: "*2\r\n$1\r\nf\r\n$1\r\nv\r\n", true: "%1\r\n$1\r\nf\r\n$1\r\nv\r\n"}
		var wg sync.WaitGroup
		errs := make(chan error, clients)
		for i := 0; i < clients; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				resp3 := i%2 == 1
				conn := dialBytes(t, c.Nodes[i%len(c.Nodes)].Addr)
				if resp3 {
					if err := conn.send([]string{"HELLO", "3"}); err != nil {
						errs <- err
						return
					}
					if _, err := conn.read(); err != nil {
						errs <- err
						return
					}
				}
				for j := 0; j < rounds; j++ {
					if err := conn.send([]string{"HGETALL", "r3:mixed"}); err != nil {
						errs <- err
						return
					}
					r, err := conn.read()
					if err != nil || r != want[resp3] {
						errs <- fmt.Errorf("client %d (resp3 %v) round %d: %q, %v; want %q", i, resp3, j, r, err, want[resp3])
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
	})

	t.Run("go-redis protocol 3", func(t *testing.T) {
		for _, target := range targets {
			// As applications configure it: RESP3 (go-redis v9's default),
			// with CLIENT SETINFO on connect.
			cl := redis.NewClient(&redis.Options{Addr: target.addr, Protocol: 3, MaxRetries: -1,
				MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}})
			defer cl.Close()
			k := "r3:go:" + target.role
			if err := cl.Set(ctx, k, "v", 0).Err(); err != nil {
				t.Fatalf("%s: SET: %v", target.role, err)
			}
			if v, err := cl.Get(ctx, k).Result(); err != nil || v != "v" {
				t.Errorf("%s: GET = %q, %v", target.role, v, err)
			}
			if err := cl.Get(ctx, k+":missing").Err(); err != redis.Nil {
				t.Errorf("%s: GET missing: %v, want redis.Nil", target.role, err)
			}
			cl.HSet(ctx, k+":h", "a", "1", "b", "2")
			if h, err := cl.HGetAll(ctx, k+":h").Result(); err != nil || len(h) != 2 || h["a"] != "1" || h["b"] != "2" {
				t.Errorf("%s: HGETALL = %v, %v", target.role, h, err)
			}
			cl.ZAdd(ctx, k+":z", redis.Z{Score: 1.5, Member: "x"}, redis.Z{Score: 3, Member: "y"})
			if s, err := cl.ZScore(ctx, k+":z", "x").Result(); err != nil || s != 1.5 {
				t.Errorf("%s: ZSCORE = %v, %v", target.role, s, err)
			}
			if s, err := cl.ZIncrBy(ctx, k+":z", 1, "x").Result(); err != nil || s != 2.5 {
				t.Errorf("%s: ZINCRBY = %v, %v", target.role, s, err)
			}
			if zs, err := cl.ZRangeWithScores(ctx, k+":z", 0, -1).Result(); err != nil || len(zs) != 2 || zs[0].Score != 2.5 || zs[1].Member != "y" {
				t.Errorf("%s: ZRANGE WITHSCORES = %v, %v", target.role, zs, err)
			}
			var hg *redis.MapStringStringCmd
			if _, err := cl.TxPipelined(ctx, func(p redis.Pipeliner) error {
				p.HSet(ctx, k+":h", "c", "3")
				hg = p.HGetAll(ctx, k+":h")
				return nil
			}); err != nil || len(hg.Val()) != 3 {
				t.Errorf("%s: MULTI/EXEC HGETALL = %v, %v", target.role, hg.Val(), err)
			}
			pipe := cl.Pipeline()
			gets := make([]*redis.StringCmd, 10)
			for i := range gets {
				gets[i] = pipe.Get(ctx, k)
			}
			if _, err := pipe.Exec(ctx); err != nil {
				t.Errorf("%s: pipelined GETs: %v", target.role, err)
			}
			for i, g := range gets {
				if g.Val() != "v" {
					t.Errorf("%s: pipelined GET %d = %q", target.role, i, g.Val())
				}
			}
			if info, err := cl.ClientInfo(ctx).Result(); err != nil || info.Resp != 3 || info.LibName == "" {
				t.Errorf("%s: CLIENT INFO = %+v, %v; want resp 3 and go-redis's lib-name", target.role, info, err)
			}
		}
	})
	c.AssertRedisIdentical(ctx)
}
