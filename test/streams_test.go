package test

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// streamScripts are stream command sequences whose replies raftproxy must
// give as a stock redis-server does, up to what depends on the clock (see
// normalizer). A command may start with "pel:": an XPENDING range reply
// whose idle times are left out.
var streamScripts = []struct {
	name string
	cmds []string
}{
	{"explicit ids", []string{
		"XADD %s:s 1-1 a 1", "XADD %s:s 1-2 b 2", "XADD %s:s 1-* c 3", "XADD %s:s 1-1 d 4", "XADD %s:s 0-0 x y",
		"XADD %s:s 5 e 5", "XADD %s:s NOMKSTREAM 6-0 f 6", "XADD %s:none NOMKSTREAM 1-1 f v", "EXISTS %s:none",
		"XLEN %s:s", "XRANGE %s:s - +", "XRANGE %s:s - + COUNT 2", "XREVRANGE %s:s + - COUNT 2", "XRANGE %s:s (1-1 +",
		"XDEL %s:s 1-2 9-9", "XLEN %s:s", "XTRIM %s:s MAXLEN 3", "XRANGE %s:s - +", "XTRIM %s:s MINID 5", "XRANGE %s:s - +",
		"XTRIM %s:s MAXLEN ~ 0", "XINFO STREAM %s:s", "SET %s:str v", "XADD %s:str 1-1 a b", "XADD %s:s 7-0 a",
		"XADD %s:s 7-0 a b c", "XSETID %s:s 100-0", "XADD %s:s 50-0 a b", "XINFO STREAM %s:s"}},
	{"auto ids", []string{
		"XADD %s:a * f 1", "XADD %s:a * f 2", "XADD %s:a NOMKSTREAM * f 3", "XADD %s:anone NOMKSTREAM * f v",
		"EXISTS %s:anone", "XADD %s:a MAXLEN 2 * f 4", "XLEN %s:a", "XRANGE %s:a - +", "XADD %s:a MAXLEN ~ 1 * f 5",
		"XADD %s:a MINID = 0 * f 6", "XADD %s:a nomkstream maxlen ~ 10 limit 5 * f 7", "XADD %s:a MAXLEN 10 LIMIT 5 * f 8",
		"SET %s:str v", "XADD %s:str * a b", "XADD %s:a * f", "XADD %s:a * f v g", "XLEN %s:a", "XINFO STREAM %s:a",
		// A stream whose top is ahead of every clock: * continues it.
		"XADD %s:fut 99999999999999-5 a 1", "XADD %s:fut * b 2", "XADD %s:fut 99999999999999-* c 3", "XRANGE %s:fut - +",
		"XADD %s:max 18446744073709551615-18446744073709551615 a 1", "XADD %s:max * b 2", "XLEN %s:max"}},
	{"consumer groups", []string{
		"XADD %s:g 1-1 a 1", "XADD %s:g 2-1 b 2", "XADD %s:g 3-1 c 3", "XADD %s:g 4-1 d 4",
		"XGROUP CREATE %s:g grp 0", "XGROUP CREATE %s:g grp 0", "XGROUP CREATE %s:nog grp $", "XGROUP CREATE %s:mk grp $ MKSTREAM",
		"XGROUP CREATECONSUMER %s:g grp alice", "XGROUP CREATECONSUMER %s:g grp alice",
		"XREADGROUP GROUP grp alice COUNT 2 STREAMS %s:g >", "XREADGROUP GROUP grp bob STREAMS %s:g >",
		"XREADGROUP GROUP grp bob STREAMS %s:g >", "XADD %s:g 5-1 e 5", "XREADGROUP GROUP grp carol NOACK STREAMS %s:g >",
		"XREADGROUP GROUP grp alice STREAMS %s:g %s:mk > >", "XREADGROUP COUNT 1 GROUP grp block STREAMS %s:g 0", "XREADGROUP GROUP nogrp alice STREAMS %s:g >",
		"XPENDING %s:g grp", "pel:XPENDING %s:g grp - + 10", "pel:XPENDING %s:g grp - + 10 bob",
		"XACK %s:g grp 1-1 9-9", "XDEL %s:g 2-1", "XREADGROUP GROUP grp alice STREAMS %s:g 0",
		"XCLAIM %s:g grp bob 3600000 3-1", "XCLAIM %s:g grp bob 0 3-1 IDLE 7200000 JUSTID",
		"XCLAIM %s:g grp carol 3600000 3-1", "XCLAIM %s:g grp bob 0 4-1 TIME 1000 RETRYCOUNT 7",
		"XCLAIM %s:g grp bob 0 5-1 FORCE JUSTID", "XCLAIM %s:g grp bob 0 9-9 FORCE", "XCLAIM %s:g grp dave 3600000 2-1",
		"pel:XPENDING %s:g grp - + 10", "XCLAIM %s:g grp bob 0 4-1 LASTID 99-0", "XINFO GROUPS %s:g",
		"XCLAIM %s:g nogrp bob 0 1-1", "XCLAIM %s:g grp bob abc 1-1", "XCLAIM %s:g grp bob 0 1-1 BADOPT",
		"XCLAIM %s:g grp bob 0 1-1 IDLE x", "XCLAIM %s:str grp bob 0 1-1", "XCLAIM %s:g grp bob 0 1-1 IDLE",
		"XCLAIM %s:g grp force 0 JUSTID LASTID 5-5 FORCE", "XINFO GROUPS %s:g", "XCLAIM %s:g grp bob 0 +3-1 JUSTID", "XCLAIM %s:g grp bob 1000 3-1 3-1 IDLE 5000",
		"XCLAIM %s:g grp bob 1000 3-1 3-1", "XCLAIM %s:g grp bob 0 3-1 3-1 TIME 1000",
		"XAUTOCLAIM %s:g grp erin 3600000 0", "XAUTOCLAIM %s:g grp erin 0 0 COUNT 1",
		"XAUTOCLAIM %s:g grp erin 0 0 COUNT 1 JUSTID", "XAUTOCLAIM %s:g grp erin 0 (3-1", "XAUTOCLAIM %s:g grp erin 0 0 COUNT 0",
		"XAUTOCLAIM %s:g nogrp erin 0 0", "XAUTOCLAIM %s:g grp erin 0 0 BADOPT", "XDEL %s:g 4-1", "XAUTOCLAIM %s:g grp frank 0 0",
		"pel:XPENDING %s:g grp - + 10", "XINFO CONSUMERS %s:g grp", "XINFO STREAM %s:g", "XINFO STREAM %s:g FULL",
		"XGROUP SETID %s:g grp 0", "XGROUP DELCONSUMER %s:g grp bob", "XINFO GROUPS %s:g", "XGROUP DESTROY %s:g grp",
		"XREAD COUNT 1 STREAMS %s:g 0", "XREAD STREAMS %s:g %s:mk 0 0", "XREAD STREAMS %s:nokey 0"}},
	{"transactions", []string{
		"XGROUP CREATE %s:m grp $ MKSTREAM", "MULTI", "XADD %s:m * a 1", "XADD %s:m * a 2",
		"XREADGROUP GROUP grp x STREAMS %s:m >", "XREADGROUP GROUP grp x STREAMS %s:m >", "XCLAIM %s:m grp y 0 0-1",
		"XAUTOCLAIM %s:m grp y 0 0", "XLEN %s:m", "EXEC", "pel:XPENDING %s:m grp - + 10", "XINFO STREAM %s:m FULL"}},
}

// autoID is an ID redis takes from its clock (13 digits of milliseconds and
// up); the scripts' explicit IDs are short.
var autoID = regexp.MustCompile(`^[0-9]{13,}-[0-9]+$`)

// normalizer makes a reply comparable between two servers: auto-generated
// IDs become ID1, ID2... in order of first appearance, clock times (a
// delivery or seen time) become T, idle times become "idle".
type normalizer struct{ ids map[string]string }

func (n *normalizer) value(v respValue, pel bool) string {
	switch v.Kind {
	case '$':
		if !v.Null && autoID.MatchString(v.Str) {
			if _, ok := n.ids[v.Str]; !ok {
				n.ids[v.Str] = fmt.Sprintf("ID%d", len(n.ids)+1)
			}
			return n.ids[v.Str]
		}
	case ':':
		if v.Int >= 1e12 {
			return ":T"
		}
	case '*':
		if v.Null {
			break
		}
		parts := make([]string, len(v.Arr))
		for i, e := range v.Arr {
			switch {
			case i > 0 && v.Arr[i-1].Kind == '$' && (v.Arr[i-1].Str == "idle" || v.Arr[i-1].Str == "seen-time"):
				parts[i] = "idle"
			case pel && len(v.Arr) == 4 && i == 2 && e.Kind == ':':
				parts[i] = "idle"
			default:
				parts[i] = n.value(e, pel)
			}
		}
		return "[" + strings.Join(parts, " ") + "]"
	}
	return v.String()
}

// runStreamScript runs cmds on addr and returns the normalized replies. It
// checks that every ID XADD generated is well formed and above the
// previous one of its stream.
func runStreamScript(t *testing.T, addr, prefix string, cmds []string) []string {
	t.Helper()
	conn, err := dialRaw(addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	n := &normalizer{ids: map[string]string{}}
	last := map[string][2]uint64{}
	out := make([]string, len(cmds))
	for i, line := range cmds {
		pel := false
		if rest, ok := strings.CutPrefix(line, "pel:"); ok {
			pel, line = true, rest
		}
		args := strings.Fields(strings.ReplaceAll(line, "%s", prefix))
		v, err := conn.Do(args...)
		if err != nil {
			t.Fatalf("%q on %s: %v", args, addr, err)
		}
		if strings.EqualFold(args[0], "XADD") && v.Kind == '$' && !v.Null {
			checkIncreasing(t, args[1], v.Str, last)
		}
		out[i] = strings.ReplaceAll(n.value(v, pel), prefix, "%s")
	}
	return out
}

func checkIncreasing(t *testing.T, key, id string, last map[string][2]uint64) {
	t.Helper()
	ms, seq, ok := strings.Cut(id, "-")
	m, err1 := strconv.ParseUint(ms, 10, 64)
	s, err2 := strconv.ParseUint(seq, 10, 64)
	if !ok || err1 != nil || err2 != nil {
		t.Errorf("XADD %s: ID %q is not <ms>-<seq>", key, id)
		return
	}
	if p, seen := last[key]; seen && (m < p[0] || m == p[0] && s <= p[1]) {
		t.Errorf("XADD %s: ID %s is not above the previous %d-%d", key, id, p[0], p[1])
	}
	last[key] = [2]uint64{m, s}
}

// TestStreamsAgainstRedis runs the stream scripts through the leader and a
// follower and through a stock redis-server, compares every reply, then
// checks that every node's redis holds the same streams, pending entries
// and delivery times included.
func TestStreamsAgainstRedis(t *testing.T) {
	ctx := testContext(t, 4*time.Minute)
	c := StartCluster(ctx, t, ClusterOptions{})
	leader, followers := c.Leader(ctx)
	stock := startStockRedis(ctx, t)
	for _, target := range []struct{ role, addr string }{{"leader", leader.Addr}, {"follower", followers[0].Addr}} {
		for _, sc := range streamScripts {
			t.Run(target.role+"/"+sc.name, func(t *testing.T) {
				prefix := "st:" + target.role + ":" + strings.ReplaceAll(sc.name, " ", "_")
				want := runStreamScript(t, stock, prefix, sc.cmds)
				got := runStreamScript(t, target.addr, prefix, sc.cmds)
				for i, cmd := range sc.cmds {
					if got[i] != want[i] {
						t.Errorf("%s:\n raftproxy: %s\n redis:     %s", cmd, got[i], want[i])
					}
				}
			})
		}
	}
	t.Run("resp3", func(t *testing.T) {
		// Byte for byte, in RESP3: XREADGROUP's per-stream map and nulls.
		cmds := [][]string{{"HELLO", "3"}, {"XADD", "st3:s", "1-1", "a", "1"}, {"XADD", "st3:s", "2-1", "b", "2"},
			{"XGROUP", "CREATE", "st3:s", "g", "0"}, {"XGROUP", "CREATE", "st3:t", "g", "0", "MKSTREAM"},
			{"XREADGROUP", "GROUP", "g", "c", "STREAMS", "st3:s", "st3:t", ">", ">"},
			{"XREADGROUP", "GROUP", "g", "c", "STREAMS", "st3:s", ">"}, {"XDEL", "st3:s", "1-1"},
			{"XREADGROUP", "GROUP", "g", "c", "STREAMS", "st3:s", "0"}, {"XCLAIM", "st3:s", "g", "c2", "0", "2-1", "JUSTID"},
			{"XAUTOCLAIM", "st3:s", "g", "c3", "0", "0"}, {"XADD", "st3:none", "NOMKSTREAM", "1-1", "a", "b"},
			{"XADD", "st3:s", "3-1", "c", "3"}, {"MULTI"}, {"XREADGROUP", "GROUP", "g", "c", "STREAMS", "st3:s", ">"},
			{"XREADGROUP", "GROUP", "g", "c", "STREAMS", "st3:s", ">"}, {"EXEC"}}
		for _, addr := range []string{leader.Addr, followers[0].Addr} {
			want, got := dialBytes(t, stock), dialBytes(t, addr)
			for _, cmd := range cmds {
				if w, g := normalize(want.do(t, cmd...)), normalize(got.do(t, cmd...)); w != g {
					t.Errorf("%q:\n raftproxy: %q\n redis:     %q", cmd, g, w)
				}
			}
			for _, cl := range []string{stock, addr} {
				dialBytes(t, cl).do(t, "DEL", "st3:s", "st3:t")
			}
		}
	})
	c.AssertRedisIdentical(ctx)
}

// TestStreamsSnapshotRebuild: a node whose redis is rebuilt from a snapshot
// (an RDB) keeps the streams' node layout, so approximate trimming (~,
// which drops whole nodes) and later deliveries stay identical on it.
func TestStreamsSnapshotRebuild(t *testing.T) {
	ctx := testContext(t, 3*time.Minute)
	c := StartCluster(ctx, t, ClusterOptions{})
	leader, followers := c.Leader(ctx)
	cl := leader.Client()
	if _, err := cl.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i := range 250 {
			p.XAdd(ctx, &redis.XAddArgs{Stream: "sr:big", ID: "*", Values: []string{"f", strconv.Itoa(i)}})
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := cl.XGroupCreate(ctx, "sr:big", "grp", "0").Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitConverged(ctx); err != nil {
		t.Fatal(err)
	}
	for _, n := range c.Nodes {
		if v, err := n.Do(ctx, time.Minute, "RAFT.DEBUG", "COMPACT"); err != nil || v.IsError() {
			t.Fatalf("RAFT.DEBUG COMPACT on %s: %v %v", n, v, err)
		}
	}
	// Delivered after the snapshot: the rebuilt node replays this read from
	// the log later, so its own clock would give other delivery times.
	if err := cl.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "grp", Consumer: "a", Streams: []string{"sr:big", ">"}, Count: 30, Block: -1}).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitConverged(ctx); err != nil {
		t.Fatal(err)
	}
	rebuilt := followers[1]
	if err := rebuilt.KillRedis(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	if err := rebuilt.StartRedis(ctx); err != nil {
		t.Fatal(err)
	}
	rc := rebuilt.Client()
	if err := waitFor(ctx, 30*time.Second, 250*time.Millisecond, "the rebuilt node serving the stream", func(ctx context.Context) error {
		n, err := rc.XLen(ctx, "sr:big").Result()
		if err != nil || n != 250 {
			return fmt.Errorf("XLEN %d %v", n, err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	trimmed, err := rc.XTrimMaxLenApprox(ctx, "sr:big", 120, 0).Result()
	if err != nil {
		t.Fatal(err)
	}
	if trimmed == 0 || trimmed%100 != 0 {
		t.Errorf("XTRIM MAXLEN ~ 120 removed %d entries, want whole nodes of 100", trimmed)
	}
	if err := cl.XAdd(ctx, &redis.XAddArgs{Stream: "sr:big", ID: "*", MaxLen: 60, Approx: true, Values: []string{"f", "last"}}).Err(); err != nil {
		t.Fatal(err)
	}
	if err := cl.XAutoClaim(ctx, &redis.XAutoClaimArgs{Stream: "sr:big", Group: "grp", Consumer: "b", Start: "0", Count: 5}).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rc.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "grp", Consumer: "c", Streams: []string{"sr:big", ">"}, Count: 10, Block: -1}).Err(); err != nil {
		t.Fatal(err)
	}
	dump := c.AssertRedisIdentical(ctx)
	if !strings.Contains(dump[dumpKey(0, "sr:big")], "pel-count") {
		t.Errorf("sr:big not rendered with its groups: %.200s", dump[dumpKey(0, "sr:big")])
	}
	for _, n := range c.Running() {
		got, err := n.RedisClient().XLen(ctx, "sr:big").Result()
		if err != nil || got != 250-trimmed+1 {
			t.Errorf("%s: XLEN %d %v, want %d", n, got, err, 250-trimmed+1)
		}
	}
}

// xblockScript is compared reply by reply, raw, with a stock redis-server:
// XREAD/XREADGROUP ... BLOCK answered at once, timing out (short timeouts,
// so both servers time out), refused, and inside MULTI (never blocking).
var xblockScript = [][]string{
	{"XADD", "%s:s", "1-1", "a", "1"}, {"XADD", "%s:s", "2-1", "b", "2"},
	{"XREAD", "BLOCK", "0", "STREAMS", "%s:s", "0"}, {"XREAD", "COUNT", "1", "BLOCK", "0", "STREAMS", "%s:s", "%s:none", "0", "0"},
	{"XREAD", "BLOCK", "0", "STREAMS", "%s:none", "%s:s", "$", "1-1"}, {"XREAD", "BLOCK", "100", "STREAMS", "%s:s", "$"},
	{"XREAD", "BLOCK", "100", "STREAMS", "%s:none", "$"}, {"XREAD", "BLOCK", "100", "STREAMS", "%s:s", "%s:none", "2-1", "0"},
	{"XREAD", "BLOCK", "10", "STREAMS", "%s:s", "+"}, {"XREAD", "BLOCK", "-1", "STREAMS", "%s:s", "$"},
	{"XREAD", "BLOCK", "1.5", "STREAMS", "%s:s", "$"}, {"XREAD", "BLOCK", "10", "STREAMS", "%s:s"},
	{"XREAD", "BLOCK", "10", "STREAMS", "%s:s", "abc"}, {"XREAD", "BLOCK", "10", "GROUP", "g", "c", "STREAMS", "%s:s", "$"},
	{"SET", "%s:str", "v"}, {"XREAD", "BLOCK", "10", "STREAMS", "%s:str", "$"}, {"XREAD", "BLOCK", "10", "STREAMS", "%s:s", "%s:str", "$", "0"},
	{"XGROUP", "CREATE", "%s:s", "g", "0"},
	{"XREADGROUP", "GROUP", "g", "c", "COUNT", "1", "BLOCK", "0", "STREAMS", "%s:s", ">"},
	{"XREADGROUP", "GROUP", "g", "c", "BLOCK", "0", "STREAMS", "%s:s", ">"},
	{"XREADGROUP", "GROUP", "g", "c", "BLOCK", "100", "STREAMS", "%s:s", ">"},
	{"XREADGROUP", "GROUP", "g", "c", "BLOCK", "100", "NOACK", "STREAMS", "%s:s", ">"},
	{"XREADGROUP", "GROUP", "g", "c", "BLOCK", "0", "STREAMS", "%s:s", "0"},
	{"XREADGROUP", "GROUP", "g", "c2", "BLOCK", "0", "STREAMS", "%s:s", "0"},
	{"XREADGROUP", "GROUP", "nog", "c", "BLOCK", "0", "STREAMS", "%s:s", ">"},
	{"XREADGROUP", "GROUP", "g", "c", "BLOCK", "0", "STREAMS", "%s:none", ">"},
	{"XREADGROUP", "GROUP", "g", "c", "BLOCK", "10", "STREAMS", "%s:s", "$"},
	{"XREADGROUP", "GROUP", "g", "c", "BLOCK", "-1", "STREAMS", "%s:s", ">"},
	{"XREADGROUP", "GROUP", "g", "c", "BLOCK", "10", "STREAMS", "%s:str", ">"},
	{"MULTI"}, {"XREAD", "BLOCK", "0", "STREAMS", "%s:s", "$"}, {"XREADGROUP", "GROUP", "g", "c", "BLOCK", "0", "STREAMS", "%s:s", ">"},
	{"XADD", "%s:s", "3-1", "c", "3"}, {"XREADGROUP", "GROUP", "g", "c", "BLOCK", "0", "STREAMS", "%s:s", ">"}, {"EXEC"},
	{"XPENDING", "%s:s", "g"}, {"XREADGROUP", "GROUP", "g", "c", "BLOCK", "0", "STREAMS", "%s:s", "0"},
}

// xreadEntry is the raw RESP2 reply of an XREAD/XREADGROUP of one entry
// with one field.
func xreadEntry(key, id, f, v string) string {
	b := func(s string) string { return fmt.Sprintf("$%d\r\n%s\r\n", len(s), s) }
	return "*1\r\n*2\r\n" + b(key) + "*1\r\n*2\r\n" + b(id) + "*2\r\n" + b(f) + b(v)
}

// TestStreamsBlock covers XREAD BLOCK and XREADGROUP BLOCK: replies as
// redis gives them, "$" read when the command arrives and wake-ups across
// nodes, a group's entries each delivered once to consumers on every node
// with identical pending lists, disconnects, deleted groups and streams,
// timeouts, and idle waiters that propose nothing.
func TestStreamsBlock(t *testing.T) {
	ctx := testContext(t, 4*time.Minute)
	c := StartCluster(ctx, t, ClusterOptions{})
	leader, followers := c.Leader(ctx)
	stock := startStockRedis(ctx, t)

	t.Run("replies like redis", func(t *testing.T) {
		for _, proto := range []string{"2", "3"} {
			for _, target := range []struct{ role, addr string }{{"leader", leader.Addr}, {"follower", followers[0].Addr}} {
				prefix := "xb:" + proto + ":" + target.role
				want := runBytesScriptOf(t, xblockScript, stock, proto, prefix)
				got := runBytesScriptOf(t, xblockScript, target.addr, proto, prefix)
				for i := range xblockScript {
					if got[i] != want[i] {
						t.Errorf("RESP%s %s %q: raftproxy answered %q, redis answered %q", proto, target.role, xblockScript[i], got[i], want[i])
					}
				}
			}
		}
	})

	t.Run("$ on a follower woken by the leader and the reverse", func(t *testing.T) {
		for i, pair := range [][2]*Node{{followers[0], leader}, {leader, followers[1]}} {
			waiter, adder := pair[0], pair[1]
			key := fmt.Sprintf("xb:wake:%d", i)
			// Entries before the command arrives are not returned: "$" is
			// the stream's last ID then.
			if err := adder.Client().XAdd(ctx, &redis.XAddArgs{Stream: key, Values: []string{"old", "1"}}).Err(); err != nil {
				t.Fatal(err)
			}
			bc := dialBytes(t, waiter.Addr)
			if err := bc.send([]string{"XREAD", "BLOCK", "0", "STREAMS", key, "$"}); err != nil {
				t.Fatal(err)
			}
			time.Sleep(300 * time.Millisecond)
			id, err := adder.Client().XAdd(ctx, &redis.XAddArgs{Stream: key, Values: []string{"new", "2"}}).Result()
			if err != nil {
				t.Fatal(err)
			}
			if r, err := bc.read(); err != nil || r != xreadEntry(key, id, "new", "2") {
				t.Errorf("XREAD BLOCK $ on %s after XADD on %s: %q %v, want %q", waiter, adder, r, err, xreadEntry(key, id, "new", "2"))
			}
		}
		// Several readers of one stream on one node are all served.
		const key = "xb:readers"
		var conns []*bytesConn
		for range 3 {
			bc := dialBytes(t, followers[1].Addr)
			bc.do(t, "HELLO", "3")
			if err := bc.send([]string{"XREAD", "BLOCK", "5000", "STREAMS", key, "$"}); err != nil {
				t.Fatal(err)
			}
			conns = append(conns, bc)
		}
		time.Sleep(300 * time.Millisecond)
		if err := leader.Client().XAdd(ctx, &redis.XAddArgs{Stream: key, ID: "5-1", Values: []string{"f", "v"}}).Err(); err != nil {
			t.Fatal(err)
		}
		want := "%1\r\n$10\r\nxb:readers\r\n*1\r\n*2\r\n$3\r\n5-1\r\n*2\r\n$1\r\nf\r\n$1\r\nv\r\n"
		for i, bc := range conns {
			if r, err := bc.read(); err != nil || r != want {
				t.Errorf("reader %d: %q %v, want %q", i, r, err, want)
			}
		}
	})

	t.Run("a group's consumers on every node get each entry once", func(t *testing.T) {
		const key, adds = "xb:many", 150
		if err := leader.Client().XGroupCreateMkStream(ctx, key, "g", "$").Err(); err != nil {
			t.Fatal(err)
		}
		entry := regexp.MustCompile(`e[0-9]{3}`)
		var (
			mu   sync.Mutex
			got  []string
			stop = make(chan struct{})
			wg   sync.WaitGroup
		)
		for i := range 6 {
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
					r := bc.do(t, "XREADGROUP", "GROUP", "g", fmt.Sprintf("c%d", i), "COUNT", "2", "BLOCK", "1000", "STREAMS", key, ">")
					if r == "*-1\r\n" {
						continue
					}
					if !strings.HasPrefix(r, "*1\r\n") {
						t.Errorf("XREADGROUP: %q", r)
						return
					}
					mu.Lock()
					got = append(got, entry.FindAllString(r, -1)...)
					mu.Unlock()
				}
			}()
		}
		time.Sleep(300 * time.Millisecond)
		var aw sync.WaitGroup
		for p := range 3 {
			aw.Add(1)
			go func() {
				defer aw.Done()
				cl := c.Nodes[p].Client()
				for j := p; j < adds; j += 3 {
					if err := cl.XAdd(ctx, &redis.XAddArgs{Stream: key, Values: []string{"f", fmt.Sprintf("e%03d", j)}}).Err(); err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
		aw.Wait()
		if err := waitFor(ctx, 60*time.Second, 100*time.Millisecond, "every entry delivered", func(context.Context) error {
			mu.Lock()
			defer mu.Unlock()
			if len(got) < adds {
				return fmt.Errorf("%d of %d delivered", len(got), adds)
			}
			return nil
		}); err != nil {
			t.Error(err)
		}
		close(stop)
		wg.Wait()
		checkEachOnce(t, got, adds, "delivered")
		if err := c.WaitConverged(ctx); err != nil {
			t.Fatal(err)
		}
		for _, n := range c.Nodes {
			if p, err := n.RedisClient().XPending(ctx, key, "g").Result(); err != nil || p.Count != adds {
				t.Errorf("XPENDING on %s: %+v %v, want %d pending", n, p, err, adds)
			}
		}
	})

	t.Run("disconnected consumer consumes nothing", func(t *testing.T) {
		const key = "xb:gone"
		if err := leader.Client().XGroupCreateMkStream(ctx, key, "g", "$").Err(); err != nil {
			t.Fatal(err)
		}
		bc := dialBytes(t, followers[0].Addr)
		if err := bc.send([]string{"XREADGROUP", "GROUP", "g", "gone", "BLOCK", "0", "STREAMS", key, ">"}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond)
		bc.nc.Close()
		time.Sleep(300 * time.Millisecond)
		if err := leader.Client().XAdd(ctx, &redis.XAddArgs{Stream: key, ID: "1-1", Values: []string{"f", "kept"}}).Err(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(500 * time.Millisecond)
		for _, n := range c.Nodes {
			if p, err := n.Client().XPending(ctx, key, "g").Result(); err != nil || p.Count != 0 {
				t.Errorf("XPENDING %s on %s = %+v, %v; want nothing delivered", key, n, p, err)
			}
		}
		r := dialBytes(t, leader.Addr).do(t, "XREADGROUP", "GROUP", "g", "next", "BLOCK", "0", "STREAMS", key, ">")
		if want := xreadEntry(key, "1-1", "f", "kept"); r != want {
			t.Errorf("the next consumer got %q, want %q", r, want)
		}
	})

	t.Run("group or stream gone while waiting", func(t *testing.T) {
		// Redis 7.0 answers a waiting XREADGROUP with an error when its
		// group is destroyed or its stream deleted; XREAD waits on.
		run := func(addr string) []string {
			p := "xb:del:" + addr
			waiter, other := dialBytes(t, addr), dialBytes(t, addr)
			var out []string
			for _, gone := range [][]string{{"XGROUP", "DESTROY", p, "g"}, {"DEL", p}, {"SET", p, "str"}} {
				other.do(t, "DEL", p)
				other.do(t, "XGROUP", "CREATE", p, "g", "$", "MKSTREAM")
				if err := waiter.send([]string{"XREADGROUP", "GROUP", "g", "c", "BLOCK", "3000", "STREAMS", p, ">"}); err != nil {
					t.Fatal(err)
				}
				time.Sleep(300 * time.Millisecond)
				other.do(t, gone...)
				r, err := waiter.read()
				if err != nil {
					t.Fatal(err)
				}
				out = append(out, r)
			}
			other.do(t, "XADD", p+":r", "1-1", "a", "1")
			if err := waiter.send([]string{"XREAD", "BLOCK", "800", "STREAMS", p + ":r", "$"}); err != nil {
				t.Fatal(err)
			}
			time.Sleep(200 * time.Millisecond)
			start := time.Now()
			other.do(t, "DEL", p+":r")
			r, err := waiter.read()
			if err != nil {
				t.Fatal(err)
			}
			if d := time.Since(start); d < 400*time.Millisecond {
				t.Errorf("%s: XREAD answered %q %v after its stream was deleted", addr, r, d)
			}
			return append(out, r)
		}
		want, got := run(stock), run(followers[1].Addr)
		if strings.Join(got, "|") != strings.Join(want, "|") {
			t.Errorf("raftproxy answered %q, redis answered %q", got, want)
		}
	})

	t.Run("timeouts and CLIENT UNBLOCK", func(t *testing.T) {
		leader.Client().XGroupCreateMkStream(ctx, "xb:t", "g", "$")
		for _, proto := range []string{"2", "3"} {
			for _, cmd := range [][]string{{"XREAD", "BLOCK", "500", "STREAMS", "xb:t", "$"}, {"XREADGROUP", "GROUP", "g", "c", "BLOCK", "500", "STREAMS", "xb:t", ">"}} {
				bc := dialBytes(t, followers[1].Addr)
				want := "*-1\r\n"
				if proto == "3" {
					bc.do(t, "HELLO", "3")
					want = "_\r\n"
				}
				start := time.Now()
				if r := bc.do(t, cmd...); r != want {
					t.Errorf("RESP%s %q: %q, want %q", proto, cmd, r, want)
				}
				if d := time.Since(start); d < 500*time.Millisecond {
					t.Errorf("%q answered after %v, before its timeout", cmd, d)
				}
			}
		}
		waiter, other := dialBytes(t, followers[0].Addr), dialBytes(t, followers[0].Addr)
		id := strings.TrimSuffix(strings.TrimPrefix(waiter.do(t, "CLIENT", "ID"), ":"), "\r\n")
		if err := waiter.send([]string{"XREAD", "BLOCK", "0", "STREAMS", "xb:t", "$"}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond)
		if r := other.do(t, "CLIENT", "UNBLOCK", id); r != ":1\r\n" {
			t.Errorf("CLIENT UNBLOCK %s: %q, want :1", id, r)
		}
		if r, err := waiter.read(); err != nil || r != "*-1\r\n" {
			t.Errorf("XREAD unblocked: %q %v, want *-1", r, err)
		}
	})

	t.Run("idle waiters propose nothing", func(t *testing.T) {
		leader.Client().XGroupCreateMkStream(ctx, "xb:idle", "g", "$")
		for i, n := range c.Nodes {
			for _, cmd := range [][]string{{"XREAD", "BLOCK", "0", "STREAMS", "xb:idle", "$"},
				{"XREADGROUP", "GROUP", "g", fmt.Sprintf("c%d", i), "BLOCK", "0", "STREAMS", "xb:idle", ">"}} {
				if err := dialBytes(t, n.Addr).send(cmd); err != nil {
					t.Fatal(err)
				}
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
		// One entry: one consumer gets it, the others go back to waiting.
		if err := leader.Client().XAdd(ctx, &redis.XAddArgs{Stream: "xb:idle", ID: "1-1", Values: []string{"f", "v"}}).Err(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(500 * time.Millisecond)
		before, err = leader.RaftInfo(ctx)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
		after, err = leader.RaftInfo(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if d := after.Int("last_log_index") - before.Int("last_log_index"); d > 3 {
			t.Errorf("the log grew by %d entries in a second after one XADD", d)
		}
	})

	c.AssertRedisIdentical(ctx)
}
