package backend

import (
	"context"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/raftproxy/raftproxy/raftnode"
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
		cmd  raftnode.Command
		want string
	}{
		{"resp2 write", raftnode.Command{Args: fieldArgs("HSET h f v")}, ":1\r\n"},
		{"resp3 map", raftnode.Command{Args: fieldArgs("HGETALL h"), RESP3: true}, "%1\r\n$1\r\nf\r\n$1\r\nv\r\n"},
		{"resp3 null", raftnode.Command{Args: fieldArgs("GET missing"), RESP3: true}, "_\r\n"},
		{"resp3 in another db", raftnode.Command{DB: 2, Args: fieldArgs("HGETALL h"), RESP3: true}, "%0\r\n"},
		{"back to resp2", raftnode.Command{Args: fieldArgs("HGETALL h")}, "*2\r\n$1\r\nf\r\n$1\r\nv\r\n"},
		{"resp2 null", raftnode.Command{Args: fieldArgs("GET missing")}, "$-1\r\n"},
		{"resp3 transaction", raftnode.Command{Tx: [][][]byte{fieldArgs("HSET h g w"), fieldArgs("HGETALL h"), fieldArgs("GET missing")}, RESP3: true},
			"*3\r\n:1\r\n%2\r\n$1\r\nf\r\n$1\r\nv\r\n$1\r\ng\r\n$1\r\nw\r\n_\r\n"},
		{"resp2 transaction", raftnode.Command{Tx: [][][]byte{fieldArgs("ZADD z 1.5 m"), fieldArgs("ZSCORE z m")}},
			"*2\r\n:1\r\n$3\r\n1.5\r\n"},
		{"resp3 double", raftnode.Command{Args: fieldArgs("ZSCORE z m"), RESP3: true}, ",1.5\r\n"},
	}
	// One batch, so the switches happen inside one pipelined round trip,
	// then each command alone.
	got := make([]string, len(tests))
	cmds := make([]raftnode.Command, len(tests))
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
		if err := sm.Apply([]raftnode.Command{c}); err != nil {
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

// TestHoldExpiresByLogTime: while held, redis is a replica of the state
// machine and expires nothing by its own clock; a command without a reply
// sees as expired exactly the keys whose deadline is before its entry's
// time, whenever it is applied.
func TestHoldExpiresByLogTime(t *testing.T) {
	r := rdbStartRedis(t, false)
	sm := NewStateMachine(r.addr, slog.New(slog.DiscardHandler))
	// The first argument is the key of every command used here.
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
	ctl := rdbConn(t, r.addr)
	if !sm.Held() || rdbRole(t, ctl) != "slave" {
		t.Fatalf("after Reset: held %v, role %s; want a held replica", sm.Held(), rdbRole(t, ctl))
	}
	now := time.Now().UnixMilli()
	deadline := strconv.FormatInt(now+150, 10)
	cmd := func(ms int64, s string) raftnode.Command { return raftnode.Command{Args: fieldArgs(s), TimeMs: ms} }
	apply := func(cmds ...raftnode.Command) {
		t.Helper()
		if err := sm.Apply(cmds); err != nil {
			t.Fatal(err)
		}
	}
	apply(cmd(now, "SET live 5 PXAT "+deadline), cmd(now, "SET late 5 PXAT "+deadline),
		cmd(now, "SET past 5 PXAT "+strconv.FormatInt(now-1000, 10)))
	time.Sleep(300 * time.Millisecond) // every deadline has passed by redis's clock
	// Proposed before the deadline, applied after it: the key was alive.
	apply(cmd(now+100, "INCR live"))
	// Proposed after it: the key had expired, INCR makes a new one.
	apply(cmd(now+200, "INCR late"))
	// A deadline already past when it was set counts the same way.
	apply(cmd(now, "INCR past"))

	// A command with a reply runs on the ordinary connection, by redis's
	// clock, and the hold resumes after it.
	var got string
	apply(raftnode.Command{Args: fieldArgs("GET late"), Reply: func(raw []byte) { got = string(raw) }})
	if got != "$1\r\n1\r\n" || !sm.Held() {
		t.Fatalf("GET late while held: %q, held %v; want 1, held", got, sm.Held())
	}
	// While held, clients reading redis see expiry by the clock.
	if v := rdbDo(t, ctl, "GET", "live"); !v.Null {
		t.Errorf("GET live on the held replica: %s, want nil (its deadline passed)", v)
	}
	if err := sm.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if role := rdbRole(t, ctl); sm.Held() || role != "master" {
		t.Fatalf("after Release: held %v, role %s", sm.Held(), role)
	}
	for _, tc := range []struct{ key, val, pttl string }{
		{"live", "", "-2"}, // 6 with the old deadline: gone now, as on a node that applied it live
		{"late", "1", "-1"},
		{"past", "1", "-1"},
	} {
		v := rdbDo(t, ctl, "GET", tc.key)
		p := rdbDo(t, ctl, "PTTL", tc.key)
		if v.String() != tc.val || p.String() != tc.pttl {
			t.Errorf("%s: GET %q PTTL %s, want %q %s", tc.key, v.String(), p.String(), tc.val, tc.pttl)
		}
	}
	if !sm.Healthy(ctx) {
		t.Error("not healthy after a hold and release")
	}
}

// TestHoldTransactionsAndScripts: transactions and scripts sent down the
// stream run, and the script registry learns of the EVALs that compile.
func TestHoldTransactionsAndScripts(t *testing.T) {
	r := rdbStartRedis(t, false)
	sm := NewStateMachine(r.addr, slog.New(slog.DiscardHandler))
	ctx := context.Background()
	if err := sm.Reset(ctx, nil, 0); err != nil {
		t.Fatal(err)
	}
	good, bad := "return redis.call('INCR', KEYS[1])", "return ("
	cmds := []raftnode.Command{
		{Tx: [][][]byte{fieldArgs("SET a 1"), fieldArgs("INCR a")}},
		{DB: 3, Args: [][]byte{[]byte("EVAL"), WrapScript([]byte(good)), []byte("1"), []byte("a")}},
		{Args: [][]byte{[]byte("EVAL"), WrapScript([]byte(bad)), []byte("0")}},
	}
	if err := sm.Apply(cmds); err != nil {
		t.Fatal(err)
	}
	if !sm.Held() {
		t.Fatal("not held")
	}
	ctl := rdbConn(t, r.addr)
	if v := rdbDo(t, ctl, "GET", "a"); v.String() != "2" {
		t.Errorf("db 0 a = %q, want 2", v.String())
	}
	rdbDo(t, ctl, "SELECT", "3")
	if v := rdbDo(t, ctl, "GET", "a"); v.String() != "1" {
		t.Errorf("db 3 a = %q, want 1", v.String())
	}
	if _, ok := sm.Scripts().Script(ScriptSHA([]byte(good))); !ok {
		t.Error("the streamed EVAL that compiles is not in the registry")
	}
	if _, ok := sm.Scripts().Script(ScriptSHA([]byte(bad))); ok {
		t.Error("a script that does not compile is in the registry")
	}
}
