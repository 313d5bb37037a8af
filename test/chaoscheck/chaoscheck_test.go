package chaoscheck

import (
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

func TestOutcomeString(t *testing.T) {
	for o, want := range map[Outcome]string{OK: "ok", Failed: "failed", Unknown: "unknown", 7: "outcome(7)"} {
		if got := o.String(); got != want {
			t.Errorf("Outcome(%d).String() = %q, want %q", int(o), got, want)
		}
	}
	for k, want := range map[CounterKind]string{Incr: "incr", Read: "get", -1: "kind(-1)"} {
		if got := k.String(); got != want {
			t.Errorf("CounterKind(%d).String() = %q, want %q", int(k), got, want)
		}
	}
}

// TestSummaryAndErr checks the one-line verdicts: counts per kind in a fixed
// order, then the first anomaly, and Err wrapping ErrInvalid.
func TestSummaryAndErr(t *testing.T) {
	valid := CheckListAppend([]AppendOp{okApp(0, "x", 1, 0, 10, 1)}, finalsAll("x", 1))
	if err := valid.Err(); err != nil {
		t.Fatalf("valid result: Err() = %v", err)
	}
	if got, want := valid.Summary(), "list-append: valid, 1 ops (0 unknown, 0 failed), 1 keys"; got != want {
		t.Fatalf("summary = %q, want %q", got, want)
	}

	res := CheckListAppend([]AppendOp{
		okApp(0, "y", 1, 0, 10, 1),
		okApp(1, "y", 2, 20, 30, 1, 2),
		okApp(0, "x", 1, 0, 10, 1),
		okApp(1, "x", 2, 20, 30, 2),
	}, append(finalsAll("x", 1, 2), finalsAll("y", 1)...))
	want := `list-append: INVALID: 1 incompatible-order, 1 stale-read, 1 lost-append; first: incompatible-order on key "x": the read [2] of client 1 append 2 [call 20, return 30, ok] is not a prefix of the longest read`
	if got := res.Summary(); !strings.HasPrefix(got, want) {
		t.Fatalf("summary =\n%q\nwant prefix\n%q", got, want)
	}
	err := res.Err()
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "INVALID: 1 incompatible-order") {
		t.Fatalf("Err() = %v", err)
	}
	// Anomalies are ordered by kind, then key.
	for i := 1; i < len(res.Anomalies); i++ {
		a, b := res.Anomalies[i-1], res.Anomalies[i]
		if kindRank(a.Kind) > kindRank(b.Kind) || kindRank(a.Kind) == kindRank(b.Kind) && a.Key > b.Key {
			t.Fatalf("anomalies out of order: %v before %v", a, b)
		}
	}
}

// byteSource turns fuzz input into small numbers; it yields zeros once the
// input runs out, so every input decodes to some history.
type byteSource struct{ data []byte }

func (s *byteSource) next(n int) int {
	if len(s.data) == 0 {
		return 0
	}
	b := s.data[0]
	s.data = s.data[1:]
	return int(b) % n
}

func (s *byteSource) signed(n int) int64 { return int64(s.next(2*n+1) - n) }

// decodeAppend builds a small list-append history, deliberately including
// malformed ones: undefined outcomes, return before call, repeated values.
func decodeAppend(data []byte) ([]AppendOp, []FinalRead) {
	s := &byteSource{data}
	var ops []AppendOp
	var finals []FinalRead
	for len(s.data) > 0 && len(ops)+len(finals) < 12 {
		key := []string{"x", "y"}[s.next(2)]
		if s.next(5) == 0 {
			f := FinalRead{Node: []string{"n1", "n2", "n3"}[s.next(3)], Key: key}
			for range s.next(6) {
				f.List = append(f.List, s.signed(6))
			}
			finals = append(finals, f)
			continue
		}
		op := AppendOp{Client: s.next(4), Key: key, Value: s.signed(6), Call: int64(s.next(40))}
		op.Return = op.Call + s.signed(3) + int64(s.next(20))
		op.Outcome = Outcome(s.next(4))
		for range s.next(6) {
			op.Read = append(op.Read, s.signed(6))
		}
		ops = append(ops, op)
	}
	return ops, finals
}

func decodeCounter(data []byte) ([]CounterOp, []CounterFinal) {
	s := &byteSource{data}
	var ops []CounterOp
	var finals []CounterFinal
	for len(s.data) > 0 && len(ops)+len(finals) < 12 {
		key := []string{"a", "b"}[s.next(2)]
		if s.next(5) == 0 {
			finals = append(finals, CounterFinal{Node: []string{"n1", "n2", "n3"}[s.next(3)], Key: key, Value: s.signed(6)})
			continue
		}
		op := CounterOp{Client: s.next(4), Key: key, Kind: CounterKind(s.next(3)), Call: int64(s.next(40))}
		op.Return = op.Call + s.signed(3) + int64(s.next(20))
		op.Outcome = Outcome(s.next(4))
		op.Value = s.signed(6)
		ops = append(ops, op)
	}
	return ops, finals
}

// checkResultShape checks what must hold of any result: determinism,
// Valid agreeing with Anomalies, known kinds and non-empty details.
func checkResultShape(t *testing.T, a, b Result) {
	t.Helper()
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("nondeterministic:\n%s\n%s", dump(a), dump(b))
	}
	if a.Valid != (len(a.Anomalies) == 0) || (a.Err() == nil) != a.Valid || a.Summary() == "" {
		t.Fatalf("inconsistent result: %s", dump(a))
	}
	for _, an := range a.Anomalies {
		if kindRank(an.Kind) > kindRank(KindDivergentFinal) || an.Detail == "" || strings.Contains(an.Detail, "%!") {
			t.Fatalf("bad anomaly %v", an)
		}
	}
}

// fuzzSeeds returns the seed corpus, which plain `go test` runs.
func fuzzSeeds() [][]byte {
	return [][]byte{
		nil,
		{0},
		{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
		[]byte("list append under partitions"),
		[]byte{255, 0, 255, 0, 255, 0, 255, 0, 255, 0, 1, 1, 1, 1, 1, 1, 1, 1},
		[]byte("\x01\x01\x07\x03\x00\x0a\x05\x00\x01\x07\x00\x01\x01\x08\x03\x14\x05\x00\x02\x07\x08"),
	}
}

// FuzzCheckListAppend checks that no input makes the checker panic or
// misbehave, and that it never accuses a history porcupine finds
// linearizable (operations only, well-formed histories).
func FuzzCheckListAppend(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ops, finals := decodeAppend(data)
		a := CheckListAppend(ops, finals)
		checkResultShape(t, a, CheckListAppend(ops, finals))
		opsOnly := CheckListAppend(ops, nil)
		if hasKind(opsOnly, KindMalformed) {
			return
		}
		res := porcupine.CheckOperationsTimeout(ListAppendModel(), ListAppendOperations(ops), time.Second)
		if res == porcupine.Ok && !opsOnly.Valid {
			t.Fatalf("linearizable, but:\n%s\nops: %+v", dump(opsOnly), ops)
		}
	})
}

// counterOutput is counterModel's output.
type counterOutput struct {
	value   int64
	unknown bool
}

// counterModel is a porcupine model of one counter, used only to cross-check
// CheckCounter.
func counterModel() porcupine.Model {
	return porcupine.Model{
		Partition: func(h []porcupine.Operation) [][]porcupine.Operation {
			byKey := map[string][]porcupine.Operation{}
			for _, op := range h {
				k := op.Input.(CounterOp).Key
				byKey[k] = append(byKey[k], op)
			}
			var out [][]porcupine.Operation
			for _, k := range sortedKeys(byKey) {
				out = append(out, byKey[k])
			}
			return out
		},
		Init: func() interface{} { return int64(0) },
		Step: func(state, input, out interface{}) (bool, interface{}) {
			s, in, o := state.(int64), input.(CounterOp), out.(counterOutput)
			if in.Kind == Incr {
				return o.unknown || o.value == s+1, s + 1
			}
			return o.value == s, s
		},
	}
}

// counterOperations converts like ListAppendOperations: failed operations
// and reads without an answer are dropped, unknown increments may take
// effect until the end of history.
func counterOperations(ops []CounterOp) []porcupine.Operation {
	var out []porcupine.Operation
	for _, op := range ops {
		switch {
		case op.Outcome == OK:
			out = append(out, porcupine.Operation{ClientId: op.Client, Input: op, Call: op.Call, Return: op.Return, Output: counterOutput{value: op.Value}})
		case op.Outcome == Unknown && op.Kind == Incr:
			out = append(out, porcupine.Operation{ClientId: op.Client, Input: op, Call: op.Call, Return: math.MaxInt64, Output: counterOutput{unknown: true}})
		}
	}
	return out
}

// FuzzCheckCounter is FuzzCheckListAppend for counters, cross-checked
// against counterModel.
func FuzzCheckCounter(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ops, finals := decodeCounter(data)
		a := CheckCounter(ops, finals)
		checkResultShape(t, a, CheckCounter(ops, finals))
		opsOnly := CheckCounter(ops, nil)
		if hasKind(opsOnly, KindMalformed) {
			return
		}
		res := porcupine.CheckOperationsTimeout(counterModel(), counterOperations(ops), time.Second)
		if res == porcupine.Ok && !opsOnly.Valid {
			t.Fatalf("linearizable, but:\n%s\nops: %+v", dump(opsOnly), ops)
		}
	})
}

// TestExtremeValues feeds values at the edges of int64 and nil slices; the
// checkers must answer without panicking.
func TestExtremeValues(t *testing.T) {
	big, small := int64(math.MaxInt64), int64(math.MinInt64)
	la := CheckListAppend([]AppendOp{
		{Key: "", Value: big, Call: small, Return: big, Outcome: OK, Read: []int64{small, big}},
		{Key: "", Value: small, Call: big, Return: small, Outcome: Outcome(-1)},
		{Key: "", Value: 0, Call: 0, Return: 0, Outcome: OK},
	}, []FinalRead{{Node: "", Key: "", List: nil}, {Node: "z", Key: "other", List: []int64{big, big}}})
	checkResultShape(t, la, la)
	c := CheckCounter([]CounterOp{
		{Kind: Incr, Call: small, Return: big, Outcome: OK, Value: big},
		{Kind: Read, Call: big, Return: big, Outcome: OK, Value: small},
		{Kind: CounterKind(math.MaxInt), Call: big, Return: small, Outcome: Outcome(math.MinInt)},
	}, []CounterFinal{{Value: big}, {Value: small}})
	checkResultShape(t, c, c)
	if la.Valid || c.Valid {
		t.Fatalf("extreme histories reported valid:\n%s\n%s", dump(la), dump(c))
	}
}
