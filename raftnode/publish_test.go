package raftnode

import (
	"fmt"
	"log/slog"
	"testing"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/raftproxy/raftproxy/entry"
)

// TestApplierPublishes: PUBLISH is delivered, not sent to redis, only when
// applied live, once per entry even when a chunk is applied again, and its
// proposer gets the count; inside a transaction it runs on redis and its
// place in EXEC's reply gets the count.
func TestApplierPublishes(t *testing.T) {
	n := &Node{id: 1, metrics: NewMetrics(), log: slog.Default()}
	n.prop = newProposer(n, 0)
	var got []string
	n.cfg.Publish = func(index uint64, ch, msg []byte, sharded bool) int64 {
		got = append(got, fmt.Sprintf("%d %s %s %v", index, ch, msg, sharded))
		return 7
	}
	a := newApplier(n)
	ents := []*raftpb.Entry{logEntry(1, 2, 1, "SET a 1", "publish c m1"), logEntry(2, 2, 2, "SPUBLISH s m2", "PUBLISH too many args")}

	// A replay delivers nothing and sends no PUBLISH to redis.
	cmds := a.commands(ents, false)
	if len(cmds) != 2 || len(got) != 0 {
		t.Fatalf("replay: %d commands, delivered %q", len(cmds), got)
	}
	a.lastSeq = map[uint64]uint64{}
	cmds = a.commands(ents, true)
	if len(cmds) != 2 || fmt.Sprint(got) != "[1 c m1 false 2 s m2 true]" {
		t.Fatalf("live: %d commands, delivered %q", len(cmds), got)
	}
	// Applied again after a failed Apply: not delivered twice.
	a.lastSeq = map[uint64]uint64{}
	a.commands(ents, true)
	if len(got) != 2 {
		t.Fatalf("delivered again: %q", got)
	}

	// The proposer's reply.
	fut := newFuture()
	n.prop.waiting[3] = &pending{futs: []*Future{fut}}
	a.commands([]*raftpb.Entry{logEntry(3, 1, 3, "PUBLISH c m3")}, true)
	if r, err := fut.Result(); err != nil || string(r) != ":7\r\n" {
		t.Fatalf("reply %q %v", r, err)
	}

	// A transaction.
	tx := entry.Entry{Node: 1, Seq: 4, Reqs: []entry.Request{{Op: entry.OpTx, Tx: [][][]byte{
		{[]byte("SET"), []byte("k"), []byte("v")}, {[]byte("publish"), []byte("c"), []byte("m4")},
	}}}}
	fut = newFuture()
	n.prop.waiting[4] = &pending{futs: []*Future{fut}}
	cmds = a.commands([]*raftpb.Entry{{Index: proto.Uint64(4), Term: proto.Uint64(1), Type: raftpb.EntryNormal.Enum(), Data: tx.Marshal(nil)}}, true)
	if len(cmds) != 1 || len(got) != 4 {
		t.Fatalf("tx: %d commands, delivered %q", len(cmds), got)
	}
	cmds[0].Reply([]byte("*2\r\n+OK\r\n:0\r\n"))
	if r, _ := fut.Result(); string(r) != "*2\r\n+OK\r\n:7\r\n" {
		t.Fatalf("EXEC reply %q", r)
	}
}

func TestSpliceCounts(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"*-1\r\n", "*-1\r\n"},
		{"-EXECABORT x\r\n", "-EXECABORT x\r\n"},
		{"*3\r\n*1\r\n:1\r\n:0\r\n$1\r\nx\r\n", "*3\r\n*1\r\n:1\r\n:5\r\n$1\r\nx\r\n"},
		{"*2\r\n:0\r\n", "*2\r\n:0\r\n"}, // truncated: unchanged
	} {
		if got := spliceCounts([]byte(c.in), map[int]int64{1: 5}); string(got) != c.want {
			t.Errorf("spliceCounts(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}
