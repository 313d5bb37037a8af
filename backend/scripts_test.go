package backend

import (
	"context"
	"log/slog"
	"testing"

	"github.com/raftproxy/raftproxy/fsm"
	"github.com/raftproxy/raftproxy/resp"
)

func args(a ...string) [][]byte {
	out := make([][]byte, len(a))
	for i, s := range a {
		out[i] = []byte(s)
	}
	return out
}

func TestScriptsObserve(t *testing.T) {
	wrapped := func(s string) string { return string(WrapScript([]byte(s))) }
	ok := resp.AppendSimple(nil, "OK")
	bulk := resp.AppendBulkString(nil, "sha")
	tests := []struct {
		name  string
		cmds  []fsm.Command
		reply [][]byte
		want  map[string]bool // body -> known
	}{
		{"script load", []fsm.Command{{Args: args("SCRIPT", "LOAD", wrapped("return 1"))}}, [][]byte{bulk}, map[string]bool{"return 1": true}},
		{"load that failed", []fsm.Command{{Args: args("SCRIPT", "LOAD", wrapped("return +"))}}, [][]byte{resp.AppendError(nil, "ERR Error compiling script")}, map[string]bool{"return +": false}},
		{"eval", []fsm.Command{{Args: args("eval", wrapped("return 2"), "0")}}, [][]byte{resp.AppendInt(nil, 2)}, map[string]bool{"return 2": true}},
		{"eval runtime error", []fsm.Command{{Args: args("EVAL", wrapped("error('x')"), "0")}}, [][]byte{resp.AppendError(nil, "ERR user_script:1: x")}, map[string]bool{"error('x')": true}},
		{"eval not compiled", []fsm.Command{{Args: args("EVAL", wrapped("return +"), "0")}}, [][]byte{resp.AppendError(nil, "ERR Error compiling script (new function): x")}, map[string]bool{"return +": false}},
		{"raftproxy's own", []fsm.Command{{Args: args("EVAL", "return 3", "0")}}, [][]byte{resp.AppendInt(nil, 3)}, map[string]bool{"return 3": false}},
		{"flush", []fsm.Command{{Args: args("SCRIPT", "LOAD", wrapped("return 1"))}, {Args: args("SCRIPT", "FLUSH")}}, [][]byte{bulk, ok}, map[string]bool{"return 1": false}},
		{"in a transaction", []fsm.Command{{Tx: [][][]byte{args("SET", "k", "v"), args("SCRIPT", "LOAD", wrapped("return 4"))}}},
			[][]byte{append(append(resp.AppendArrayLen(nil, 2), ok...), bulk...)}, map[string]bool{"return 4": true}},
		{"aborted transaction", []fsm.Command{{Tx: [][][]byte{args("SCRIPT", "LOAD", wrapped("return 5"))}}},
			[][]byte{resp.AppendError(nil, "EXECABORT Transaction discarded")}, map[string]bool{"return 5": false}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewScripts()
			for i, c := range tt.cmds {
				r.observe(c, tt.reply[i])
			}
			for body, want := range tt.want {
				got, ok := r.Script(ScriptSHA([]byte(body)))
				if ok != want || (ok && string(got) != body) {
					t.Errorf("%q: known %v (%q), want %v", body, ok, got, want)
				}
			}
		})
	}
}

// The registry travels in snapshots: a state machine restored from one
// knows the same scripts, and one reset to empty knows none.
func TestScriptsMachineState(t *testing.T) {
	ctx := context.Background()
	newSM := func() *StateMachine {
		s := NewStateMachine(rdbStartRedis(t, false).addr, slog.New(slog.DiscardHandler))
		if err := s.Reset(ctx, nil, 0); err != nil {
			t.Fatal(err)
		}
		if err := s.RestoreMachineState(ctx, nil); err != nil {
			t.Fatal(err)
		}
		return s
	}
	a := newSM()
	a.scripts.add([]byte("return 1"))
	a.scripts.add([]byte("return 2"))
	// Users travel too: alice, and the default user as the log left it.
	if err := a.Apply([]fsm.Command{{Args: fieldArgs("ACL SETUSER " + ACLPrefix + "alice on >pw ~a* +get")},
		{Args: fieldArgs("ACL SETUSER " + ACLPrefix + "default >secret")}}); err != nil {
		t.Fatal(err)
	}
	raw, err := a.MachineState()
	if err != nil {
		t.Fatal(err)
	}
	b := newSM()
	b.scripts.add([]byte("return 3"))
	if err := b.Apply([]fsm.Command{{Args: fieldArgs("ACL SETUSER " + ACLPrefix + "bob on")}}); err != nil {
		t.Fatal(err)
	}
	if err := b.RestoreMachineState(context.Background(), raw); err != nil {
		t.Fatal(err)
	}
	for _, body := range []string{"return 1", "return 2"} {
		if _, ok := b.Scripts().Script(ScriptSHA([]byte(body))); !ok {
			t.Errorf("%q missing after restore", body)
		}
	}
	if _, ok := b.Scripts().Script(ScriptSHA([]byte("return 3"))); ok {
		t.Errorf("a script from before the restore survived it")
	}
	raw2, _ := b.MachineState()
	if string(raw2) != string(raw) {
		t.Errorf("state differs after a round trip: %s vs %s", raw2, raw)
	}
	users, err := b.conn.DoValue("ACL", "USERS")
	if err != nil || len(users.Elems) != 3 || string(users.Elems[0].Str) != "default" ||
		string(users.Elems[1].Str) != ACLPrefix+"alice" || string(users.Elems[2].Str) != ACLPrefix+"default" {
		t.Errorf("users after restore: %v %v (bob was not in the snapshot)", users, err)
	}
	if err := b.RestoreMachineState(context.Background(), nil); err != nil || len(b.scripts.list()) != 0 {
		t.Errorf("restore to empty: %v, %d scripts left", err, len(b.scripts.list()))
	}
	if lines, err := b.aclList(); err != nil || len(lines) != 1 || lines[0] != "user "+ACLPrefix+"default on nopass ~* &* +@all" {
		t.Errorf("users after restore to empty: %q %v, want the initial default user", lines, err)
	}
	if _, ok := b.Scripts().Script("not a sha"); ok {
		t.Error("found a script under a bad sha")
	}
	// Clients may send the sha in upper case, as redis allows.
	if _, ok := a.Scripts().Script("E0E1F9FABFC9D4800C877A703B823AC0578FF8DB"); !ok {
		t.Error("upper-case sha of 'return 1' not found")
	}
}
