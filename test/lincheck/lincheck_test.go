package lincheck

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"regexp"
	"syscall"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// serverError mimics go-redis's type for error replies.
type serverError string

func (e serverError) Error() string { return string(e) }
func (serverError) RedisError()     {}

func get(client int, key string, call, ret int64, value string) Op {
	return Op{ClientID: client, Input: Input{Kind: Get, Key: key}, Call: call, Return: ret, Output: Output{Value: value}}
}

func put(client int, key, value string, call, ret int64) Op {
	return Op{ClientID: client, Input: Input{Kind: Put, Key: key, Value: value}, Call: call, Return: ret}
}

func appendOp(client int, key, value string, call, ret, length int64) Op {
	return Op{ClientID: client, Input: Input{Kind: Append, Key: key, Value: value}, Call: call, Return: ret, Output: Output{Length: length}}
}

func withErr(op Op, err error) Op {
	op.Err = err
	return op
}

func history(ops ...Op) []porcupine.Operation {
	var h History
	for _, op := range ops {
		h.Add(op)
	}
	return h.Operations()
}

func TestCheck(t *testing.T) {
	tests := []struct {
		name string
		ops  []Op
		want porcupine.CheckResult
	}{
		{
			name: "sequential put get append",
			ops: []Op{
				put(0, "x", "a", 0, 10),
				get(1, "x", 20, 30, "a"),
				appendOp(0, "x", "b", 40, 50, 2),
				get(1, "x", 60, 70, "ab"),
			},
			want: porcupine.Ok,
		},
		{
			// The read overlaps the write, so it may see either value.
			name: "concurrent read sees old value",
			ops: []Op{
				put(0, "x", "1", 0, 10),
				put(0, "x", "2", 20, 40),
				get(1, "x", 25, 35, "1"),
				get(2, "x", 30, 38, "2"),
			},
			want: porcupine.Ok,
		},
		{
			name: "independent keys",
			ops: []Op{
				put(0, "x", "1", 0, 10),
				put(1, "y", "2", 0, 10),
				get(2, "x", 20, 30, "1"),
				get(2, "y", 20, 30, "2"),
				get(2, "z", 20, 30, ""),
			},
			want: porcupine.Ok,
		},
		{
			name: "stale read after a completed write",
			ops: []Op{
				put(0, "x", "1", 0, 10),
				put(0, "x", "2", 20, 30),
				get(1, "x", 40, 50, "1"),
			},
			want: porcupine.Illegal,
		},
		{
			// Reads 1 then 2 then 1 again: no order of the writes explains it.
			name: "read goes back in time",
			ops: []Op{
				put(0, "x", "1", 0, 100),
				put(1, "x", "2", 0, 100),
				get(2, "x", 10, 20, "1"),
				get(2, "x", 30, 40, "2"),
				get(2, "x", 50, 60, "1"),
			},
			want: porcupine.Illegal,
		},
		{
			name: "append length inconsistent with value",
			ops: []Op{
				put(0, "x", "ab", 0, 10),
				appendOp(0, "x", "c", 20, 30, 2),
			},
			want: porcupine.Illegal,
		},
		{
			// A timed-out write may land any time after it was sent, even
			// after later operations by other clients returned.
			name: "timed-out write applied late",
			ops: []Op{
				withErr(put(0, "x", "late", 0, 10), serverError("TIMEOUT request timed out")),
				put(1, "x", "b", 20, 30),
				get(2, "x", 40, 50, "b"),
				get(2, "x", 60, 70, "late"),
			},
			want: porcupine.Ok,
		},
		{
			name: "timed-out write never applied",
			ops: []Op{
				withErr(put(0, "x", "lost", 0, 10), context.DeadlineExceeded),
				get(2, "x", 60, 70, ""),
			},
			want: porcupine.Ok,
		},
		{
			name: "timed-out append accepted with any length",
			ops: []Op{
				put(0, "x", "a", 0, 10),
				withErr(appendOp(0, "x", "b", 20, 30, 0), &net.OpError{Op: "read", Err: syscall.ECONNRESET}),
				get(1, "x", 40, 50, "ab"),
			},
			want: porcupine.Ok,
		},
		{
			// CLUSTERDOWN means the write did not happen, so seeing its
			// value must be caught.
			name: "refused write observed",
			ops: []Op{
				withErr(put(0, "x", "ghost", 0, 10), serverError("CLUSTERDOWN No raft leader")),
				get(1, "x", 20, 30, "ghost"),
			},
			want: porcupine.Illegal,
		},
		{
			// A failed read tells nothing, whatever value came with it.
			name: "failed read dropped",
			ops: []Op{
				put(0, "x", "1", 0, 10),
				withErr(get(1, "x", 20, 30, "garbage"), serverError("LOADING rebuilding")),
				withErr(get(1, "x", 20, 30, "garbage"), errors.New("i/o timeout")),
			},
			want: porcupine.Ok,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Check(history(tt.ops...), 10*time.Second)
			if got != tt.want {
				t.Fatalf("Check = %v (%v), want %v", got, err, tt.want)
			}
			if (err != nil) != (tt.want != porcupine.Ok) {
				t.Fatalf("Check error = %v for result %v", err, got)
			}
			if tt.want == porcupine.Illegal {
				m := regexp.MustCompile(`visualization: (\S+\.html)$`).FindStringSubmatch(err.Error())
				if m == nil {
					t.Fatalf("error %q does not name a visualization file", err)
				}
				fi, statErr := os.Stat(m[1])
				if statErr != nil || fi.Size() == 0 {
					t.Fatalf("visualization %s missing or empty: %v", m[1], statErr)
				}
				os.Remove(m[1])
			}
		})
	}
}

func TestHistoryAdd(t *testing.T) {
	var h History
	h.Add(put(0, "x", "1", 0, 10))
	h.Add(withErr(put(0, "x", "2", 20, 30), serverError("TIMEOUT")))
	h.Add(withErr(put(0, "x", "3", 40, 50), serverError("CLUSTERDOWN No raft leader")))
	h.Add(withErr(put(0, "x", "4", 60, 70), &net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}))
	h.Add(withErr(get(0, "x", 80, 90, ""), serverError("TIMEOUT")))
	kept, unknown, dropped := h.Stats()
	if kept != 2 || unknown != 1 || dropped != 3 {
		t.Fatalf("Stats = kept %d unknown %d dropped %d, want 2 1 3", kept, unknown, dropped)
	}
	ops := h.Operations()
	if ops[1].Return != math.MaxInt64 || !ops[1].Output.(Output).Unknown {
		t.Fatalf("unknown write recorded as %+v, want Return=MaxInt64 and unknown output", ops[1])
	}
}

func TestClassify(t *testing.T) {
	tests := []struct {
		err  error
		want Outcome
	}{
		{nil, OK},
		{serverError("TIMEOUT no reply in time"), Unknown},
		{serverError("CLUSTERDOWN No raft leader"), Failed},
		{serverError("MOVED 0 127.0.0.1:1"), Failed},
		{serverError("ERR unknown command"), Failed},
		{context.DeadlineExceeded, Unknown},
		{fmt.Errorf("wrapped: %w", context.DeadlineExceeded), Unknown},
		{&net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}, Failed},
		{&net.OpError{Op: "read", Err: syscall.ECONNRESET}, Unknown},
		{errors.New("something else"), Unknown},
	}
	for _, tt := range tests {
		if got := Classify(tt.err); got != tt.want {
			t.Errorf("Classify(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

func TestTTLModel(t *testing.T) {
	op := func(client int, k TTLKind, v string, at, call, ret int64, out TTLOutput) porcupine.Operation {
		return porcupine.Operation{ClientId: client, Input: TTLInput{Kind: k, Key: "k", Value: v, At: at, CallMs: call, ReturnMs: ret},
			Call: call, Output: out, Return: ret}
	}
	got := func(v string) TTLOutput { return TTLOutput{Value: v} }
	n := func(i int64) TTLOutput { return TTLOutput{Int: i} }
	tests := []struct {
		name string
		ops  []porcupine.Operation
		ok   bool
	}{
		{"alive until the deadline", []porcupine.Operation{
			op(0, TTLSetAt, "a", 100, 0, 10, n(0)), op(1, TTLGet, "", 0, 90, 100, got("a")), op(1, TTLGet, "", 0, 110, 120, got(""))}, true},
		{"read alive after the deadline", []porcupine.Operation{
			op(0, TTLSetAt, "a", 100, 0, 10, n(0)), op(1, TTLGet, "", 0, 101, 120, got("a"))}, false},
		{"read gone before the deadline", []porcupine.Operation{
			op(0, TTLSetAt, "a", 100, 0, 10, n(0)), op(1, TTLGet, "", 0, 20, 99, got(""))}, false},
		{"gone then back", []porcupine.Operation{
			op(0, TTLSetAt, "a", 100, 0, 10, n(0)), op(1, TTLGet, "", 0, 90, 105, got("")), op(1, TTLGet, "", 0, 106, 107, got("a"))}, false},
		{"overlapping reads order by their instants", []porcupine.Operation{
			op(0, TTLSetAt, "a", 100, 0, 10, n(0)), op(1, TTLGet, "", 0, 90, 105, got("")), op(2, TTLGet, "", 0, 92, 104, got("a"))}, true},
		{"append to an expired key makes a new one", []porcupine.Operation{
			op(0, TTLSetAt, "a", 100, 0, 10, n(0)), op(1, TTLAppend, "x", 0, 150, 160, n(1)), op(1, TTLGet, "", 0, 500, 510, got("x"))}, true},
		{"append to a live key", []porcupine.Operation{
			op(0, TTLSetAt, "a", 100, 0, 10, n(0)), op(1, TTLAppend, "x", 0, 50, 60, n(2)), op(1, TTLGet, "", 0, 150, 160, got(""))}, true},
		{"append saw expiry too soon", []porcupine.Operation{
			op(0, TTLSetAt, "a", 100, 0, 10, n(0)), op(1, TTLAppend, "x", 0, 50, 60, n(1))}, false},
		{"pexpireat and persist", []porcupine.Operation{
			op(0, TTLSetAt, "a", 100, 0, 10, n(0)), op(1, TTLExpireAt, "", 300, 50, 60, n(1)), op(1, TTLPersist, "", 0, 200, 210, n(1)),
			op(1, TTLGet, "", 0, 1000, 1010, got("a")), op(1, TTLPersist, "", 0, 1020, 1030, n(0))}, true},
		{"pexpireat on an expired key", []porcupine.Operation{
			op(0, TTLSetAt, "a", 100, 0, 10, n(0)), op(1, TTLExpireAt, "", 300, 150, 160, n(1))}, false},
		{"unknown set may land later", []porcupine.Operation{
			op(0, TTLSetAt, "a", 100, 0, 10, n(0)), op(2, TTLSetAt, "b", 1000, 20, math.MaxInt64, TTLOutput{Unknown: true}),
			op(1, TTLGet, "", 0, 150, 160, got("")), op(1, TTLGet, "", 0, 170, 180, got("b"))}, true},
		// Called while the key was alive, it reached the log only after
		// the deadline (a partition held it up), so it made a new key.
		{"unknown append may land after the deadline", []porcupine.Operation{
			op(0, TTLSetAt, "a", 100, 0, 10, n(0)), op(2, TTLAppend, "x", 0, 20, math.MaxInt64, TTLOutput{Unknown: true}),
			op(1, TTLExpireAt, "", 900, 300, 310, n(1)), op(1, TTLGet, "", 0, 320, 330, got("x"))}, true},
		{"a new key needs the append", []porcupine.Operation{
			op(0, TTLSetAt, "a", 100, 0, 10, n(0)), op(1, TTLExpireAt, "", 900, 300, 310, n(1))}, false},
	}
	for _, tt := range tests {
		if ok := porcupine.CheckOperations(TTLModel, tt.ops); ok != tt.ok {
			t.Errorf("%s: linearizable %v, want %v", tt.name, ok, tt.ok)
		}
	}
}
