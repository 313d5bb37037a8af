package test

import (
	"context"
	"crypto/sha1"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// doOn runs one command on a fresh connection to addr (a proxy or a stock
// redis-server) and fails the test on a transport error.
func doOn(ctx context.Context, t *testing.T, addr string, args ...string) respValue {
	t.Helper()
	c, err := dialRaw(addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	v, err := c.Do(args...)
	if err != nil {
		t.Fatalf("%q on %s: %v", args, addr, err)
	}
	return v
}

// TestScriptsMatchStockRedis: deterministic scripts, SCRIPT and FUNCTION
// commands and SPOP's fixed shapes answer as a stock redis-server does, and
// every node's redis ends identical.
func TestScriptsMatchStockRedis(t *testing.T) {
	ctx := testContext(t, 3*time.Minute)
	stock := startStockRedis(ctx, t)
	c := StartCluster(ctx, t, ClusterOptions{})
	leader, followers := c.Leader(ctx)
	lib := "#!lua name=lib\nredis.register_function('incrby2', function(keys, args) return redis.call('INCRBY', keys[1], 2) end)\n" +
		"redis.register_function{function_name='get_ro', callback=function(keys) return redis.call('GET', keys[1]) end, flags={'no-writes'}}"
	script := "return redis.call('INCR', KEYS[1])"
	cases := [][]string{
		{"SET", "str", "x"},
		{"SADD", "one", "m"},
		{"EVAL", "return {1, 'two', {3}}", "0"},
		{"EVAL", script, "1", "counter"},
		{"EVAL", "#!lua flags=no-writes\nreturn ARGV[1]", "0", "hi"},
		{"EVAL", "return redis.call('INCR', KEYS[1])", "1", "str"},
		{"EVAL", "return redis.pcall('INCR', KEYS[1])", "1", "str"},
		{"EVAL", "return redis.error_reply('MY error')", "0"},
		{"EVAL", "return nosuch(", "0"},
		{"SCRIPT", "LOAD", script},
		{"SCRIPT", "LOAD", "return 1 +"},
		{"EVALSHA", "0000000000000000000000000000000000000000", "0"},
		{"FUNCTION", "LOAD", lib},
		{"FCALL", "incrby2", "1", "fcounter"},
		{"FCALL_RO", "get_ro", "1", "fcounter"},
		{"FUNCTION", "LIST", "WITHCODE"},
		{"SPOP", "nokey"}, {"SPOP", "nokey", "3"}, {"SPOP", "one", "0"}, {"SPOP", "str"}, {"SPOP", "str", "0"},
		{"SPOP", "one", "-1"}, {"SPOP", "one", "abc"}, {"SPOP", "one", "1", "2"}, {"SPOP", "one"}, {"EXISTS", "one"},
		{"SADD", "two", "a", "b"}, {"SPOP", "two", "5"}, {"EXISTS", "two"},
	}
	for _, args := range cases {
		want := doOn(ctx, t, stock, args...)
		got := doOn(ctx, t, leader.Addr, args...)
		if args[0] == "SPOP" && args[1] == "two" {
			slices.SortFunc(want.Arr, func(a, b respValue) int { return strings.Compare(a.Str, b.Str) })
			slices.SortFunc(got.Arr, func(a, b respValue) int { return strings.Compare(a.Str, b.Str) })
		}
		if args[0] == "FUNCTION" && args[1] == "LIST" {
			// A library's functions live in a hash table: their order
			// depends on the process's hash seed, in redis too.
			sortFunctions(&got)
			sortFunctions(&want)
		}
		if args[0] == "EVAL" && got.IsError() {
			// Redis names the script by the sha1 of what it ran.
			got.Str = stripScriptName(got.Str)
			want.Str = stripScriptName(want.Str)
		}
		if got.String() != want.String() {
			t.Errorf("%q:\n got %s\nwant %s", args, got, want)
		}
	}
	sha := doOn(ctx, t, stock, "SCRIPT", "LOAD", script).Str
	// Loaded through the leader, known on a follower: through the registry
	// after the follower's read barrier.
	for _, f := range followers {
		if v := doOn(ctx, t, f.Addr, "SCRIPT", "EXISTS", sha, strings.Repeat("1", 40)); v.String() != "[:1 :0]" {
			t.Errorf("SCRIPT EXISTS on %s: %s, want [:1 :0]", f, v)
		}
		if v := doOn(ctx, t, f.Addr, "EVALSHA", strings.ToUpper(sha), "1", "counter"); v.Kind != ':' {
			t.Errorf("EVALSHA on %s: %s, want an integer", f, v)
		}
		if v := doOn(ctx, t, f.Addr, "EVAL_RO", "return redis.call('GET', KEYS[1])", "1", "counter"); v.Kind != '$' {
			t.Errorf("EVAL_RO on %s: %s, want a bulk", f, v)
		}
		if v := doOn(ctx, t, f.Addr, "EVALSHA_RO", sha, "1", "counter"); !strings.Contains(v.Str, "Write commands are not allowed") {
			t.Errorf("EVALSHA_RO of a writing script on %s: %s, want the write refusal", f, v)
		}
	}
	// Read-only scripts see deadlines as redis shows them too (redis holds
	// them shifted: package expiry).
	doOn(ctx, t, followers[0].Addr, "SET", "ro:ttl", "v", "EX", "100")
	ttlScript := "return redis.call('TTL', KEYS[1])"
	ttlSHA := doOn(ctx, t, followers[0].Addr, "SCRIPT", "LOAD", ttlScript).Str
	for _, f := range followers {
		for _, args := range [][]string{{"EVAL_RO", ttlScript, "1", "ro:ttl"}, {"EVALSHA_RO", ttlSHA, "1", "ro:ttl"}} {
			if v := doOn(ctx, t, f.Addr, args...); v.Kind != ':' || v.Int < 95 || v.Int > 100 {
				t.Errorf("%s TTL on %s: %s, want about 100", args[0], f, v)
			}
		}
	}
	c.AssertRedisIdentical(ctx)
}

func stripScriptName(s string) string {
	if i := strings.Index(s, " script: "); i >= 0 {
		return s[:i]
	}
	return s
}

// TestScriptsCannotDiverge: what would differ between nodes is refused or
// made deterministic; random writes (SPOP, scripts with math.random) leave
// every node with the same data, also a node rebuilt from a snapshot.
func TestScriptsCannotDiverge(t *testing.T) {
	ctx := testContext(t, 3*time.Minute)
	c := StartCluster(ctx, t, ClusterOptions{})
	leader, followers := c.Leader(ctx)
	cl := leader.Client()
	members := make([]any, 200)
	for i := range members {
		members[i] = "member-" + string(rune('a'+i%26)) + strings.Repeat("x", i%7) + string(rune('0'+i%10))
	}
	if err := cl.SAdd(ctx, "set", members...).Err(); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range []string{"RANDOMKEY", "SRANDMEMBER", "SPOP"} {
		v := doOn(ctx, t, leader.Addr, "EVAL", "return redis.call(ARGV[1], 'set')", "0", cmd)
		if !v.IsError() || !strings.Contains(v.Str, "raftproxy: '"+cmd+"' has a random or clock-dependent result") {
			t.Errorf("EVAL calling %s: %s, want the raftproxy refusal", cmd, v)
		}
	}
	// TIME and TTL run by the log's time (the entry's), the same on every
	// node: a script may write what they return.
	before := time.Now().Unix()
	if v := doOn(ctx, t, leader.Addr, "EVAL", "redis.call('SET', KEYS[1], 'v', 'EX', 100) local t = redis.call('TIME') redis.call('SET', 'time', t[1] .. '.' .. t[2] .. '/' .. redis.call('TTL', KEYS[1])) return redis.call('GET', 'time')", "1", "ttlkey"); v.IsError() {
		t.Errorf("EVAL calling TIME and TTL: %s", v)
	} else if secs, _, _ := strings.Cut(v.Str, "."); secs < strconv.FormatInt(before, 10) || !strings.HasSuffix(v.Str, "/100") {
		t.Errorf("EVAL calling TIME and TTL: %q, want the log's time (about %d) and TTL 100", v.Str, before)
	}
	if v := doOn(ctx, t, leader.Addr, "EVAL", "return redis.call('XADD', 'st', 'MAXLEN', '~', '10', '*', 'f', 'v')", "0"); !strings.Contains(v.Str, "'XADD *'") {
		t.Errorf("EVAL calling XADD *: %s, want the raftproxy refusal", v)
	}
	if v := doOn(ctx, t, leader.Addr, "EVAL", "return redis.call('XREADGROUP', 'GROUP', 'g', 'c', 'STREAMS', 'st', '>')", "0"); !strings.Contains(v.Str, "'XREADGROUP'") {
		t.Errorf("EVAL calling XREADGROUP: %s, want the raftproxy refusal", v)
	}
	// Outside scripts, XADD * is rewritten (streams_test.go).
	if v := doOn(ctx, t, leader.Addr, "XADD", "st", "5-*", "f", "v"); v.Str != "5-0" {
		t.Errorf("XADD 5-*: %s, want 5-0", v)
	}
	// Unordered replies come sorted; the sorted copy is written back.
	v := doOn(ctx, t, leader.Addr, "EVAL", "local m = redis.call('SMEMBERS', KEYS[1]) redis.call('RPUSH', KEYS[2], unpack(m)) return m", "2", "set", "list")
	got := make([]string, len(v.Arr))
	for i, e := range v.Arr {
		got[i] = e.Str
	}
	if !slices.IsSorted(got) || len(got) != len(members) {
		t.Errorf("SMEMBERS in a script: %d members, sorted %t", len(got), slices.IsSorted(got))
	}
	// Random draws, the same on every node.
	for i := 0; i < 20; i++ {
		doOn(ctx, t, c.Nodes[i%3].Addr, "EVAL", "redis.call('RPUSH', KEYS[1], tostring(math.random(1000000)), tostring({}))", "1", "draws")
		if v := doOn(ctx, t, c.Nodes[i%3].Addr, "SPOP", "set", "3"); len(v.Arr) != 3 {
			t.Fatalf("SPOP set 3: %s", v)
		}
		if v := doOn(ctx, t, c.Nodes[i%3].Addr, "SPOP", "set"); v.Kind != '$' || v.Null {
			t.Fatalf("SPOP set: %s", v)
		}
	}
	// SPOP inside MULTI, with an EVALSHA of a script loaded on a follower.
	sha := doOn(ctx, t, followers[0].Addr, "SCRIPT", "LOAD", "return redis.call('SADD', KEYS[1], ARGV[1])").Str
	conn, err := dialRaw(leader.Addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, args := range [][]string{{"MULTI"}, {"SPOP", "set", "2"}, {"EVALSHA", sha, "1", "set", "back"}, {"EVALSHA", strings.Repeat("ab", 20), "0"}, {"SCRIPT", "LOAD", "return 7"}, {"SPOP", "set"}} {
		if _, err := conn.Do(args...); err != nil {
			t.Fatal(err)
		}
	}
	ex, err := conn.Do("EXEC")
	if err != nil || len(ex.Arr) != 5 {
		t.Fatalf("EXEC: %s, %v", ex, err)
	}
	if len(ex.Arr[0].Arr) != 2 || ex.Arr[1].String() != ":1" || !strings.HasPrefix(ex.Arr[2].Str, "NOSCRIPT") ||
		ex.Arr[3].Str != fmt.Sprintf("%x", sha1.Sum([]byte("return 7"))) || ex.Arr[4].Kind != '$' {
		t.Errorf("EXEC: %s", ex)
	}
	c.AssertRedisIdentical(ctx)

	// A node rebuilt from a snapshot has the same data and still knows the
	// scripts loaded before it.
	n := followers[1]
	if v, err := n.Do(ctx, time.Minute, "RAFT.DEBUG", "COMPACT"); err != nil || v.Str != "OK" {
		t.Fatalf("RAFT.DEBUG COMPACT: %s %v", v, err)
	}
	if err := n.KillRedis(); err != nil {
		t.Fatal(err)
	}
	if err := n.StartRedis(ctx); err != nil {
		t.Fatal(err)
	}
	if err := waitFor(ctx, 30*time.Second, 200*time.Millisecond, "EVALSHA on the rebuilt node", func(ctx context.Context) error {
		v, err := n.Do(ctx, 5*time.Second, "EVALSHA", sha, "1", "set", "again")
		if err != nil {
			return err
		}
		if v.Kind != ':' {
			return fmt.Errorf("EVALSHA: %s", v)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	doOn(ctx, t, n.Addr, "SPOP", "set", "2")
	c.AssertRedisIdentical(ctx)
}

// sortFunctions orders the functions of each library in a FUNCTION LIST
// reply by name.
func sortFunctions(v *respValue) {
	for _, lib := range v.Arr {
		for i := 0; i+1 < len(lib.Arr); i += 2 {
			if lib.Arr[i].Str == "functions" {
				slices.SortFunc(lib.Arr[i+1].Arr, func(a, b respValue) int { return strings.Compare(a.String(), b.String()) })
			}
		}
	}
}
