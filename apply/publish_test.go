package apply

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/raftproxy/raftproxy/entry"
	"github.com/raftproxy/raftproxy/fsm"
)

// fakeRedis answers every command with +OK (EXEC with one :0 per
// command) and records what it ran.
type fakeRedis struct {
	ran []string
}

func (f *fakeRedis) Apply(cmds []fsm.Command) error {
	for _, c := range cmds {
		if c.Tx != nil {
			f.ran = append(f.ran, fmt.Sprintf("tx%d", len(c.Tx)))
			if c.Reply != nil {
				raw := fmt.Sprintf("*%d\r\n", len(c.Tx))
				for range c.Tx {
					raw += ":0\r\n"
				}
				c.Reply([]byte(raw))
			}
			continue
		}
		f.ran = append(f.ran, string(bytes.Join(c.Args, []byte(" "))))
		if c.Reply != nil {
			c.Reply([]byte("+OK\r\n"))
		}
	}
	return nil
}
func (f *fakeRedis) Reset(context.Context, io.Reader, int64) error { return nil }
func (f *fakeRedis) Healthy(context.Context) bool                  { return true }
func (f *fakeRedis) StartSnapshot(context.Context) (fsm.SnapshotJob, error) {
	return nil, errors.New("no snapshots")
}
func (f *fakeRedis) MachineState() (json.RawMessage, error)                     { return json.RawMessage(`{}`), nil }
func (f *fakeRedis) RestoreMachineState(context.Context, json.RawMessage) error { return nil }
func (f *fakeRedis) KeyDeadlines(_ int, keys [][]byte) ([]int64, error) {
	out := make([]int64, len(keys))
	for i := range out {
		out[i] = -1
	}
	return out, nil
}
func (f *fakeRedis) Kill(context.Context, uint8) (fsm.KillResult, error) {
	return fsm.KillNotRunning, nil
}
func (f *fakeRedis) BusyAfter() time.Duration { return time.Second }
func (f *fakeRedis) Interrupt()               {}

type countingPublisher struct{ got []string }

func (p *countingPublisher) Publish(index uint64, ch, msg []byte, sharded bool) int64 {
	p.got = append(p.got, fmt.Sprintf("%d %s %s %v", index, ch, msg, sharded))
	return 7
}

func cmd(index uint64, req int, live bool, line string) fsm.Command {
	var args [][]byte
	for _, f := range strings.Fields(line) {
		args = append(args, []byte(f))
	}
	return fsm.Command{Index: index, Req: req, Args: args, Live: live}
}

// TestMachinePublishes: PUBLISH is delivered, not sent to redis, only when
// applied live, once per entry even when a chunk is applied again, and its
// proposer gets the count; inside a transaction it runs on redis and its
// place in EXEC's reply gets the count.
func TestMachinePublishes(t *testing.T) {
	r, p := &fakeRedis{}, &countingPublisher{}
	m := New(r, nil, p)
	chunk := func(live bool) []fsm.Command {
		return []fsm.Command{cmd(1, 0, live, "SET a 1"), cmd(1, 1, live, "publish c m1"),
			cmd(2, 0, live, "SPUBLISH s m2"), cmd(2, 1, live, "PUBLISH too many args")}
	}

	// A replay delivers nothing and sends no PUBLISH to redis.
	if err := m.Apply(chunk(false)); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(r.ran) != "[SET a 1 PUBLISH too many args]" || len(p.got) != 0 {
		t.Fatalf("replay: ran %q, delivered %q", r.ran, p.got)
	}
	if err := m.Apply(chunk(true)); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(p.got) != "[1 c m1 false 2 s m2 true]" {
		t.Fatalf("live: delivered %q", p.got)
	}
	// Applied again after a failed Apply (which Reset follows): not
	// delivered twice.
	if err := m.Reset(context.Background(), nil, 0); err != nil {
		t.Fatal(err)
	}
	if err := m.Apply(chunk(true)); err != nil {
		t.Fatal(err)
	}
	if len(p.got) != 2 {
		t.Fatalf("delivered again: %q", p.got)
	}
	// An entry's requests delivered over two Apply calls (a script between
	// them) are all delivered.
	if err := m.Apply([]fsm.Command{cmd(3, 0, true, "PUBLISH c a")}); err != nil {
		t.Fatal(err)
	}
	if err := m.Apply([]fsm.Command{cmd(3, 2, true, "PUBLISH c b")}); err != nil {
		t.Fatal(err)
	}
	if len(p.got) != 4 {
		t.Fatalf("an entry split over two applies: %q", p.got)
	}

	// The proposer's reply.
	var reply []byte
	c := cmd(4, 0, true, "PUBLISH c m3")
	c.Reply = func(raw []byte) { reply = raw }
	if err := m.Apply([]fsm.Command{c}); err != nil || string(reply) != ":7\r\n" {
		t.Fatalf("reply %q %v", reply, err)
	}

	// A transaction.
	tx := fsm.Command{Index: 5, Live: true, Op: entry.OpTx, Tx: [][][]byte{
		{[]byte("SET"), []byte("k"), []byte("v")}, {[]byte("publish"), []byte("c"), []byte("m4")},
	}, Reply: func(raw []byte) { reply = raw }}
	if err := m.Apply([]fsm.Command{tx}); err != nil {
		t.Fatal(err)
	}
	if len(p.got) != 6 || string(reply) != "*2\r\n:0\r\n:7\r\n" {
		t.Fatalf("tx: delivered %q, EXEC reply %q", p.got, reply)
	}
}

// TestMachineEvents: what redis ran is published in order, a transaction's
// commands one by one, with the null of a blocking attempt that found
// nothing; a notice is answered and published; a reload is published.
func TestMachineEvents(t *testing.T) {
	m := New(&fakeRedis{}, nil, nil)
	var reply []byte
	notice := fsm.Command{Index: 2, Op: entry.OpNotice, Args: [][]byte{[]byte("CLIENT"), []byte("UNPAUSE")}, TimeMs: 9, Live: true,
		Reply: func(raw []byte) { reply = raw }}
	blpop := fsm.Command{Index: 3, Op: entry.OpTx, Tx: [][][]byte{{[]byte("BLPOP"), []byte("q"), []byte("0")}}, Tag: 4}
	if err := m.Apply([]fsm.Command{cmd(1, 0, true, "SET a 1"), notice, blpop}); err != nil {
		t.Fatal(err)
	}
	if err := m.RestoreMachineState(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	evs, n := m.Events().Take()
	var got []string
	for _, e := range evs {
		got = append(got, fmt.Sprintf("%d %q %v %d %d", e.Kind, e.Args, e.Null, e.Tag, e.TimeMs))
	}
	want := []string{`1 ["SET" "a" "1"] false 0 0`, `3 ["CLIENT" "UNPAUSE"] false 0 9`, `1 ["BLPOP" "q" "0"] false 4 0`, `2 [] false 0 0`}
	if n != 4 || strings.Join(got, "|") != strings.Join(want, "|") || string(reply) != "+OK\r\n" {
		t.Fatalf("events (%d) %q\nwant %q; notice reply %q", n, got, want, reply)
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
