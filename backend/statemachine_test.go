package backend

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/raftproxy/raftproxy/expiry"
	"github.com/raftproxy/raftproxy/fsm"
)

func fieldArgs(s string) [][]byte {
	var out [][]byte
	for _, f := range strings.Fields(s) {
		out = append(out, []byte(f))
	}
	return out
}

// TestApplyProtocols: each command is answered in its client's protocol,
// the apply connection switching only where the protocol changes (a switch
// is a HELLO whose reply must not reach any client), in transactions too.
func TestApplyProtocols(t *testing.T) {
	r := rdbStartRedis(t, false)
	sm := NewStateMachine(r.addr, slog.New(slog.DiscardHandler))
	if err := sm.Reset(context.Background(), nil, 0); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		cmd  fsm.Command
		want string
	}{
		{"resp2 write", fsm.Command{Args: fieldArgs("HSET h f v")}, ":1\r\n"},
		{"resp3 map", fsm.Command{Args: fieldArgs("HGETALL h"), RESP3: true}, "%1\r\n$1\r\nf\r\n$1\r\nv\r\n"},
		{"resp3 null", fsm.Command{Args: fieldArgs("GET missing"), RESP3: true}, "_\r\n"},
		{"resp3 in another db", fsm.Command{DB: 2, Args: fieldArgs("HGETALL h"), RESP3: true}, "%0\r\n"},
		{"back to resp2", fsm.Command{Args: fieldArgs("HGETALL h")}, "*2\r\n$1\r\nf\r\n$1\r\nv\r\n"},
		{"resp2 null", fsm.Command{Args: fieldArgs("GET missing")}, "$-1\r\n"},
		{"resp3 transaction", fsm.Command{Tx: [][][]byte{fieldArgs("HSET h g w"), fieldArgs("HGETALL h"), fieldArgs("GET missing")}, RESP3: true},
			"*3\r\n:1\r\n%2\r\n$1\r\nf\r\n$1\r\nv\r\n$1\r\ng\r\n$1\r\nw\r\n_\r\n"},
		{"resp2 transaction", fsm.Command{Tx: [][][]byte{fieldArgs("ZADD z 1.5 m"), fieldArgs("ZSCORE z m")}},
			"*2\r\n:1\r\n$3\r\n1.5\r\n"},
		{"resp3 double", fsm.Command{Args: fieldArgs("ZSCORE z m"), RESP3: true}, ",1.5\r\n"},
	}
	// One batch, so the switches happen inside one pipelined round trip,
	// then each command alone.
	got := make([]string, len(tests))
	cmds := make([]fsm.Command, len(tests))
	for i, tt := range tests {
		cmds[i] = tt.cmd
		cmds[i].Reply = func(raw []byte) { got[i] = string(raw) }
	}
	if err := sm.Apply(cmds); err != nil {
		t.Fatal(err)
	}
	for i, tt := range tests {
		if got[i] != tt.want {
			t.Errorf("batch: %s: got %q, want %q", tt.name, got[i], tt.want)
		}
	}
	for _, tt := range tests {
		if !strings.Contains(tt.name, "null") && !strings.Contains(tt.name, "double") && !strings.Contains(tt.name, "db") {
			continue // the batch's writes changed what the others see
		}
		var reply string
		c := tt.cmd
		c.Reply = func(raw []byte) { reply = string(raw) }
		if err := sm.Apply([]fsm.Command{c}); err != nil {
			t.Fatal(err)
		}
		if reply != tt.want {
			t.Errorf("alone: %s: got %q, want %q", tt.name, reply, tt.want)
		}
	}
	// The connection stays usable for the probes that share it.
	if !sm.Healthy(context.Background()) {
		t.Error("state machine not healthy after switching protocols")
	}
}

// TestExpiryByLogTime: redis expires nothing by its own clock; each
// command sees as expired exactly the keys whose deadline is before its
// entry's time, whenever it is applied, and deadlines and TTLs are the
// log's, set inside scripts too.
// keyedMachine returns a state machine reset on a new redis, whose
// commands' key is their first argument (none for EVAL's).
func keyedMachine(t *testing.T) (*StateMachine, *rdbRedis) {
	t.Helper()
	r := rdbStartRedis(t, false)
	sm := NewStateMachine(r.addr, slog.New(slog.DiscardHandler))
	sm.SetKeys(func(args [][]byte) [][]byte {
		if len(args) < 2 || strings.EqualFold(string(args[0]), "eval") {
			return nil
		}
		return args[1:2]
	})
	ctx := context.Background()
	if err := sm.Reset(ctx, nil, 0); err != nil {
		t.Fatal(err)
	}
	if err := sm.RestoreMachineState(ctx, nil); err != nil {
		t.Fatal(err)
	}
	return sm, r
}

func TestExpiryByLogTime(t *testing.T) {
	sm, r := keyedMachine(t)
	ctx := context.Background()
	ctl := rdbConn(t, r.addr)
	if role := rdbRole(t, ctl); role != "master" {
		t.Fatalf("after Reset: role %s, want master", role)
	}
	now := time.Now().UnixMilli()
	deadline := strconv.FormatInt(now+150, 10)
	cmd := func(ms int64, s string) fsm.Command { return fsm.Command{Args: fieldArgs(s), TimeMs: ms} }
	var replies []string
	withReply := func(c fsm.Command) fsm.Command {
		c.Reply = func(raw []byte) { replies = append(replies, string(raw)) }
		return c
	}
	apply := func(cmds ...fsm.Command) {
		t.Helper()
		replies = replies[:0]
		if err := sm.Apply(cmds); err != nil {
			t.Fatal(err)
		}
	}
	apply(cmd(now, "SET live 5 PXAT "+deadline), cmd(now, "SET late 5 PXAT "+deadline),
		cmd(now, "SET past 5 PXAT "+strconv.FormatInt(now-1000, 10)),
		cmd(now, "SET rel 5 EX 100"), cmd(now, "SETEX rel2 100 5"))
	time.Sleep(300 * time.Millisecond) // every short deadline has passed by redis's clock
	// Proposed before the deadline, applied after it: the key was alive.
	apply(withReply(cmd(now+100, "INCR live")), withReply(cmd(now+100, "PTTL live")))
	if want := []string{":6\r\n", ":50\r\n"}; !slices.Equal(replies, want) {
		t.Errorf("INCR live, PTTL live at +100ms: %q, want %q", replies, want)
	}
	// Proposed after it: the key had expired, INCR makes a new one.
	apply(cmd(now+200, "INCR late"))
	// A deadline already past when it was set counts the same way.
	apply(cmd(now, "INCR past"))
	apply(withReply(cmd(now+1000, "TTL rel")), withReply(cmd(now+1000, "PEXPIRETIME rel2")),
		withReply(cmd(now+1000, "EXPIRETIME rel")), withReply(cmd(now+1000, "TTL live")))
	if want := []string{":99\r\n", ":" + strconv.FormatInt(now+100000, 10) + "\r\n",
		":" + strconv.FormatInt((now+100000+500)/1000, 10) + "\r\n", ":-2\r\n"}; !slices.Equal(replies, want) {
		t.Errorf("TTL rel, PEXPIRETIME rel2, EXPIRETIME rel, TTL live: %q, want %q", replies, want)
	}
	// A script sets deadlines and reads the time by the entry's time.
	script := WrapScript([]byte("redis.call('EXPIRE', KEYS[1], 10) return {redis.call('PTTL', KEYS[1]), redis.call('TIME')[1], #ARGV}"))
	apply(withReply(fsm.Command{Args: [][]byte{[]byte("EVAL"), script, []byte("1"), []byte("rel"), []byte("x")}, TimeMs: now + 2000}))
	if want := fmt.Sprintf("*3\r\n:10000\r\n$%d\r\n%d\r\n:1\r\n", len(strconv.FormatInt((now+2000)/1000, 10)), (now+2000)/1000); len(replies) != 1 || replies[0] != want {
		t.Errorf("script: %q, want %q", replies, want)
	}
	// Redis itself holds every deadline far away: nothing expires by its clock.
	for _, tc := range []struct{ key, val string }{{"live", ""}, {"late", "1"}, {"past", "1"}, {"rel", "5"}} {
		if v := rdbDo(t, ctl, "GET", tc.key); v.String() != tc.val {
			t.Errorf("%s in redis: %q, want %q", tc.key, v.String(), tc.val)
		}
	}
	if v := rdbDo(t, ctl, "PEXPIRETIME", "rel"); v.Int != expiry.Store(now+12000) {
		t.Errorf("rel's stored deadline %d, want %d", v.Int, expiry.Store(now+12000))
	}
	if !sm.Healthy(ctx) {
		t.Error("not healthy")
	}
}

// TestTransactionsAndScriptsExpire: the keys of a transaction's commands
// and a script's KEYS expire by the entry's time before it runs.
func TestTransactionsAndScriptsExpire(t *testing.T) {
	r := rdbStartRedis(t, false)
	sm := NewStateMachine(r.addr, slog.New(slog.DiscardHandler))
	sm.SetKeys(func(args [][]byte) [][]byte {
		if strings.EqualFold(string(args[0]), "eval") {
			return args[3:4]
		}
		return args[1:2]
	})
	ctx := context.Background()
	if err := sm.Reset(ctx, nil, 0); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UnixMilli()
	var got []string
	reply := func(raw []byte) { got = append(got, string(raw)) }
	cmds := []fsm.Command{
		{Args: fieldArgs("SET a 1 PX 100"), TimeMs: now},
		{Args: fieldArgs("SET b 1 PX 100"), TimeMs: now},
		{Tx: [][][]byte{fieldArgs("INCR a"), fieldArgs("TTL a")}, TimeMs: now + 200, Reply: reply},
		{Args: [][]byte{[]byte("EVAL"), WrapScript([]byte("return redis.call('INCR', KEYS[1])")), []byte("1"), []byte("b")}, TimeMs: now + 50, Reply: reply},
	}
	if err := sm.Apply(cmds); err != nil {
		t.Fatal(err)
	}
	if want := []string{"*2\r\n:1\r\n:-1\r\n", ":2\r\n"}; !slices.Equal(got, want) {
		t.Errorf("replies %q, want %q", got, want)
	}
}

// resetFrom resets sm from the RDB file at path.
func resetFrom(t *testing.T, sm *StateMachine, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if err := sm.Reset(context.Background(), f, st.Size()); err != nil {
		t.Fatal(err)
	}
}

// TestLegacyDeadlines: a snapshot from a version that let redis keep real
// deadlines (a stock redis's RDB, or an older raftproxy's) is converted on
// load: every deadline is stored shifted, and the keys still expire then.
func TestLegacyDeadlines(t *testing.T) {
	src := rdbStartRedis(t, false)
	sc := rdbConn(t, src.addr)
	d := time.Now().Add(time.Hour).UnixMilli()
	rdbDo(t, sc, "SET", "a", "1", "PXAT", strconv.FormatInt(d, 10))
	rdbDo(t, sc, "SELECT", "2")
	rdbDo(t, sc, "HSET", "h", "f", "v")
	rdbDo(t, sc, "PEXPIREAT", "h", strconv.FormatInt(d+1, 10))
	rdbDo(t, sc, "SET", "p", "forever")
	path := rdbSave(t, src, sc)

	r := rdbStartRedis(t, false)
	sm := NewStateMachine(r.addr, slog.New(slog.DiscardHandler))
	ctx := context.Background()
	resetFrom(t, sm, path)
	if err := sm.RestoreMachineState(ctx, []byte("{}")); err != nil {
		t.Fatal(err)
	}
	ctl := rdbConn(t, r.addr)
	if v := rdbDo(t, ctl, "PEXPIRETIME", "a"); v.Int != expiry.Store(d) {
		t.Errorf("a: stored deadline %d, want %d", v.Int, expiry.Store(d))
	}
	rdbDo(t, ctl, "SELECT", "2")
	if v := rdbDo(t, ctl, "PEXPIRETIME", "h"); v.Int != expiry.Store(d+1) {
		t.Errorf("h: stored deadline %d, want %d", v.Int, expiry.Store(d+1))
	}
	if v := rdbDo(t, ctl, "PEXPIRETIME", "p"); v.Int != -1 {
		t.Errorf("p: %d, want no deadline", v.Int)
	}
	if role := rdbRole(t, ctl); role != "master" {
		t.Errorf("role %s after restoring, want master", role)
	}
}

// TestRestoredBusyThreshold: a snapshot that carries a replicated CONFIG
// SET busy-reply-threshold sets it on redis again and on the applier's
// watch (BusyAfter) too, so a restarted node says -BUSY when the others
// do, not after redis's default 5 s (seen in TestRollingUpgrade: the nodes
// restarted from a snapshot reported threshold=5s, the others 300ms).
func TestRestoredBusyThreshold(t *testing.T) {
	sm, _ := keyedMachine(t)
	ctx := context.Background()
	if sm.BusyAfter() != 5*time.Second {
		t.Fatalf("BusyAfter %v on a fresh redis, want its default 5s", sm.BusyAfter())
	}
	raw := []byte(`{"config":[{"name":"busy-reply-threshold","value":"300"}],"deadlines":"` + deadlinesFormat + `"}`)
	if err := sm.RestoreMachineState(ctx, raw); err != nil {
		t.Fatal(err)
	}
	if sm.BusyAfter() != 300*time.Millisecond {
		t.Errorf("BusyAfter %v after restoring busy-reply-threshold 300, want 300ms", sm.BusyAfter())
	}
}

// TestSnapshotRaisesHz: raftproxy runs its redis-servers at hz 1, and redis
// notices a BGSAVE child finished only in its cron, so a snapshot raises hz
// while its BGSAVE runs and puts it back after.
func TestSnapshotRaisesHz(t *testing.T) {
	r := rdbStartRedis(t, false, "--hz", "1")
	sm := NewStateMachine(r.addr, slog.New(slog.DiscardHandler))
	if err := sm.Reset(context.Background(), nil, 0); err != nil {
		t.Fatal(err)
	}
	if err := sm.Apply([]fsm.Command{{Args: fieldArgs("SET k v"), Reply: func([]byte) {}}}); err != nil {
		t.Fatal(err)
	}
	c := rdbConn(t, r.addr)
	hz := func() string {
		t.Helper()
		v := rdbDo(t, c, "CONFIG", "GET", "hz")
		if len(v.Elems) != 2 {
			t.Fatalf("CONFIG GET hz: %+v", v)
		}
		return string(v.Elems[1].Str)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	job, err := sm.StartSnapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := hz(); got != "10" {
		t.Errorf("hz while the BGSAVE runs: %s, want 10", got)
	}
	rc, err := job.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rc.Close()
	if got := hz(); got != "1" {
		t.Errorf("hz after the snapshot: %s, want 1 again", got)
	}
}
