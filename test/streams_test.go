package test

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
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
	t.Run("block refused", func(t *testing.T) {
		conn, err := dialRaw(leader.Addr, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		for _, cmd := range []string{"XREAD BLOCK 10 STREAMS st:b 0", "XREADGROUP GROUP g c BLOCK 0 STREAMS st:b >"} {
			v, err := conn.Do(strings.Fields(cmd)...)
			if err != nil || !v.IsError() || !strings.Contains(v.Str, "BLOCK") {
				t.Errorf("%s: %v %v, want an error naming BLOCK", cmd, v, err)
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
