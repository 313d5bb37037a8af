package backend

import (
	"context"
	"log/slog"
	"strings"
	"testing"

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
