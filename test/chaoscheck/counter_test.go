package chaoscheck

import (
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

func incr(client int, key string, call, ret, v int64) CounterOp {
	return CounterOp{Client: client, Key: key, Kind: Incr, Call: call, Return: ret, Outcome: OK, Value: v}
}

func get(client int, key string, call, ret, v int64) CounterOp {
	return CounterOp{Client: client, Key: key, Kind: Read, Call: call, Return: ret, Outcome: OK, Value: v}
}

func with(op CounterOp, o Outcome) CounterOp {
	op.Outcome = o
	return op
}

// cfinals is the same final value read on three nodes.
func cfinals(key string, v int64) []CounterFinal {
	return []CounterFinal{{Node: "n1", Key: key, Value: v}, {Node: "n2", Key: key, Value: v}, {Node: "n3", Key: key, Value: v}}
}

// TestCheckCounter pins each anomaly kind to a minimal history that must
// produce exactly the listed kinds, and the valid histories to none.
func TestCheckCounter(t *testing.T) {
	tests := []struct {
		name   string
		ops    []CounterOp
		finals []CounterFinal
		want   []string
		detail string
	}{
		{name: "empty history"},
		{
			name:   "sequential",
			ops:    []CounterOp{incr(0, "c", 0, 10, 1), incr(1, "c", 20, 30, 2), get(0, "c", 40, 50, 2)},
			finals: cfinals("c", 2),
		},
		{
			name:   "concurrent increments return out of order",
			ops:    []CounterOp{incr(0, "c", 0, 100, 2), incr(1, "c", 10, 50, 1), get(2, "c", 200, 210, 2)},
			finals: cfinals("c", 2),
		},
		{
			name:   "read concurrent with an increment sees the old value",
			ops:    []CounterOp{incr(0, "c", 0, 100, 1), get(1, "c", 10, 20, 0)},
			finals: cfinals("c", 1),
		},
		{
			name:   "return equal to call is concurrent",
			ops:    []CounterOp{incr(0, "c", 0, 10, 1), get(1, "c", 10, 20, 0)},
			finals: cfinals("c", 1),
		},
		{
			name: "unknown increment that took effect and was seen",
			ops: []CounterOp{
				incr(0, "c", 0, 10, 1), with(incr(1, "c", 20, 30, 0), Unknown),
				get(0, "c", 40, 50, 2), incr(2, "c", 60, 70, 3),
			},
			finals: cfinals("c", 3),
		},
		{
			name:   "unknown increment that took effect unseen",
			ops:    []CounterOp{incr(0, "c", 0, 10, 1), with(incr(1, "c", 20, 30, 0), Unknown)},
			finals: cfinals("c", 2),
		},
		{
			name:   "unknown increment that never took effect",
			ops:    []CounterOp{incr(0, "c", 0, 10, 1), with(incr(1, "c", 20, 30, 0), Unknown), get(0, "c", 40, 50, 1)},
			finals: cfinals("c", 1),
		},
		{
			name:   "failed increment that did not take effect",
			ops:    []CounterOp{incr(0, "c", 0, 10, 1), with(incr(1, "c", 20, 30, 0), Failed), incr(0, "c", 40, 50, 2)},
			finals: cfinals("c", 2),
		},
		{
			name:   "values of reads that did not succeed are ignored",
			ops:    []CounterOp{incr(0, "c", 0, 10, 1), with(get(1, "c", 20, 30, 99), Unknown), with(get(1, "c", 40, 50, -5), Failed)},
			finals: cfinals("c", 1),
		},
		{
			name:   "independent keys",
			ops:    []CounterOp{incr(0, "a", 0, 10, 1), incr(1, "b", 20, 30, 1), get(0, "a", 40, 50, 1)},
			finals: append(cfinals("a", 1), cfinals("b", 1)...),
		},
		{
			name:   "lost increment",
			ops:    []CounterOp{incr(0, "c", 0, 10, 1), incr(1, "c", 20, 30, 2), incr(0, "c", 40, 50, 3)},
			finals: cfinals("c", 2),
			want:   []string{KindLostIncrement},
			detail: `final value 2 on node "n1" is below the 3 acknowledged increments`,
		},
		{
			name:   "final value below an observed one",
			ops:    []CounterOp{incr(0, "c", 0, 10, 1), with(incr(1, "c", 20, 30, 0), Unknown), get(0, "c", 40, 50, 2)},
			finals: cfinals("c", 1),
			want:   []string{KindLostIncrement},
			detail: "is below the value 2 returned by client 0 get -> 2 [call 40, return 50]",
		},
		{
			name:   "extra increment from a failed one",
			ops:    []CounterOp{incr(0, "c", 0, 10, 1), incr(1, "c", 20, 30, 2), with(incr(0, "c", 40, 50, 0), Failed)},
			finals: cfinals("c", 3),
			want:   []string{KindExtraIncrement},
			detail: "above the 2 increments that may have taken effect (2 OK, 0 unknown)",
		},
		{
			name:   "duplicate incr result",
			ops:    []CounterOp{incr(0, "c", 0, 100, 1), incr(1, "c", 0, 100, 1)},
			finals: cfinals("c", 2),
			want:   []string{KindDuplicateIncrResult},
			detail: "client 0 incr -> 1 [call 0, return 100] and client 1 incr -> 1 [call 0, return 100] both returned 1",
		},
		{
			name:   "duplicate incr result, then a read that misses one",
			ops:    []CounterOp{incr(0, "c", 0, 10, 1), incr(1, "c", 0, 10, 1), get(2, "c", 20, 30, 1)},
			finals: cfinals("c", 2),
			want:   []string{KindDuplicateIncrResult, KindStaleRead},
			detail: "but 2 increments were acknowledged before it was invoked",
		},
		{
			name: "incr returned more than was invoked",
			ops: []CounterOp{
				incr(0, "c", 0, 10, 2), with(incr(1, "c", 15, 16, 0), Unknown), incr(2, "c", 20, 30, 3),
			},
			finals: cfinals("c", 3),
			want:   []string{KindIncrOutOfRange},
			detail: "returned 2, but only 1 increments (OK or unknown) were invoked before it returned",
		},
		{
			name:   "incr returned zero",
			ops:    []CounterOp{incr(0, "c", 0, 10, 0)},
			finals: cfinals("c", 1),
			want:   []string{KindIncrOutOfRange},
		},
		{
			name:   "read of an increment invoked later",
			ops:    []CounterOp{get(0, "c", 0, 10, 1), with(incr(1, "c", 20, 30, 0), Unknown)},
			finals: cfinals("c", 1),
			want:   []string{KindReadOutOfRange},
			detail: "read 1, but only 0 increments (OK or unknown) were invoked before it returned",
		},
		{
			name:   "negative read",
			ops:    []CounterOp{get(0, "c", 0, 10, -1)},
			finals: cfinals("c", 0),
			want:   []string{KindReadOutOfRange},
		},
		{
			name:   "stale get",
			ops:    []CounterOp{incr(0, "c", 0, 10, 1), get(1, "c", 20, 30, 0)},
			finals: cfinals("c", 1),
			want:   []string{KindStaleRead},
			detail: "client 1 get -> 0 [call 20, return 30] returned 0, but client 0 incr -> 1 [call 0, return 10] returned 1 before it was invoked",
		},
		{
			name: "stale incr",
			ops: []CounterOp{
				incr(0, "c", 0, 10, 1), with(incr(1, "c", 0, 100, 0), Unknown),
				get(2, "c", 20, 30, 2), incr(0, "c", 40, 50, 2),
			},
			finals: cfinals("c", 2),
			want:   []string{KindStaleRead},
			detail: "client 0 incr -> 2 [call 40, return 50] returned 2, but client 2 get -> 2",
		},
		{
			name:   "divergent final",
			ops:    []CounterOp{incr(0, "c", 0, 10, 1), with(incr(1, "c", 20, 30, 0), Unknown)},
			finals: []CounterFinal{{Node: "n2", Key: "c", Value: 1}, {Node: "n1", Key: "c", Value: 2}, {Node: "n3", Key: "c", Value: 2}},
			want:   []string{KindDivergentFinal},
			detail: `final value 1 on node "n2" differs from 2 on node "n1"`,
		},
		{
			name:   "undefined kind",
			ops:    []CounterOp{{Client: 0, Key: "c", Kind: 9, Call: 0, Return: 10, Outcome: OK, Value: 5}},
			finals: cfinals("c", 0),
			want:   []string{KindMalformed},
			detail: "undefined kind",
		},
		{
			name:   "undefined outcome is treated as unknown",
			ops:    []CounterOp{with(incr(0, "c", 0, 10, 0), 5)},
			finals: cfinals("c", 1),
			want:   []string{KindMalformed},
			detail: "undefined outcome",
		},
		{
			name:   "return before call",
			ops:    []CounterOp{incr(0, "c", 10, 0, 1)},
			finals: cfinals("c", 1),
			want:   []string{KindMalformed},
			detail: "returned before it was invoked",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := CheckCounter(tt.ops, tt.finals)
			if got := kindsOf(res); !slices.Equal(got, sortedCopy(tt.want)) {
				t.Fatalf("kinds = %v, want %v\n%s", got, sortedCopy(tt.want), dump(res))
			}
			if res.Valid != (len(tt.want) == 0) {
				t.Fatalf("Valid = %v with anomalies %v", res.Valid, res.Anomalies)
			}
			if tt.detail != "" && !slices.ContainsFunc(res.Anomalies, func(a Anomaly) bool { return strings.Contains(a.Detail, tt.detail) }) {
				t.Fatalf("no anomaly detail contains %q\n%s", tt.detail, dump(res))
			}
		})
	}
}

func TestCheckCounterStats(t *testing.T) {
	ops := []CounterOp{
		incr(0, "a", 0, 10, 1), with(incr(1, "a", 20, 30, 0), Unknown),
		with(incr(2, "b", 20, 30, 0), Failed), get(0, "a", 40, 50, 2),
	}
	res := CheckCounter(ops, append(cfinals("a", 2), cfinals("b", 0)...))
	want := Stats{Ops: 4, OK: 2, Failed: 1, Unknown: 1, Keys: 2, Finals: 6, MaxValue: 2}
	if res.Stats != want {
		t.Fatalf("stats = %+v, want %+v", res.Stats, want)
	}
	if got, want := res.Summary(), "counter: valid, 4 ops (1 unknown, 1 failed), 2 keys"; got != want {
		t.Fatalf("summary = %q, want %q", got, want)
	}
}

// genCounter simulates a correct counter like genListAppend does a list:
// operations take effect one at a time inside randomly overlapping windows.
func genCounter(rng *rand.Rand, nOps, nKeys, nNodes int, window int64) ([]CounterOp, []CounterFinal) {
	keys := make([]string, nKeys)
	for i := range keys {
		keys[i] = "c" + string(rune('a'+i%26)) + strings.Repeat("'", i/26)
	}
	counters := map[string]int64{}
	ops := make([]CounterOp, nOps)
	for i := range ops {
		at := int64(i+1) * 100
		op := CounterOp{Client: rng.IntN(8), Key: keys[rng.IntN(nKeys)], Kind: Read, Call: at - rng.Int64N(window)}
		op.Return = at + rng.Int64N(window)
		if rng.IntN(5) < 3 {
			op.Kind = Incr
		}
		effective := op.Kind == Incr
		switch r := rng.IntN(10); {
		case r == 0:
			op.Outcome, effective = Failed, false
		case r == 1:
			op.Outcome, effective = Unknown, effective && rng.IntN(2) == 0
			op.Return = op.Call + rng.Int64N(window)
		}
		if effective {
			counters[op.Key]++
		}
		if op.Outcome == OK {
			op.Value = counters[op.Key]
		}
		ops[i] = op
	}
	var finals []CounterFinal
	for _, key := range keys {
		for n := range nNodes {
			finals = append(finals, CounterFinal{Node: "n" + string(rune('1'+n)), Key: key, Value: counters[key]})
		}
	}
	return ops, finals
}

type counterMutation struct {
	name  string
	want  string
	apply func(rng *rand.Rand, ops []CounterOp, finals []CounterFinal) bool
}

// incrsOf counts a key's OK and possibly applied increments.
func incrsOf(ops []CounterOp, key string) (ok, try int64) {
	for _, op := range ops {
		if op.Key == key && op.Kind == Incr && op.Outcome != Failed {
			try++
			if op.Outcome == OK {
				ok++
			}
		}
	}
	return ok, try
}

func counterMutations() []counterMutation {
	return []counterMutation{
		{
			name: "lower a later read below an earlier result", want: KindStaleRead,
			apply: func(rng *rand.Rand, ops []CounterOp, _ []CounterFinal) bool {
				type pair struct{ a, b int }
				var pairs []pair
				for b := range ops {
					for a := range ops {
						if ops[a].Outcome == OK && ops[b].Outcome == OK && ops[b].Kind == Read &&
							ops[a].Key == ops[b].Key && ops[a].Return < ops[b].Call && ops[a].Value >= 1 {
							pairs = append(pairs, pair{a, b})
						}
					}
				}
				if len(pairs) == 0 {
					return false
				}
				p := pairs[rng.IntN(len(pairs))]
				ops[p.b].Value = ops[p.a].Value - 1
				return true
			},
		},
		{
			name: "lower one node's final below the acknowledged increments", want: KindLostIncrement,
			apply: func(rng *rand.Rand, ops []CounterOp, finals []CounterFinal) bool {
				f := &finals[rng.IntN(len(finals))]
				ok, _ := incrsOf(ops, f.Key)
				if ok == 0 {
					return false
				}
				f.Value = ok - 1
				return true
			},
		},
		{
			name: "give two increments the same result", want: KindDuplicateIncrResult,
			apply: func(rng *rand.Rand, ops []CounterOp, _ []CounterFinal) bool {
				var cand []int
				for i := range ops {
					if ops[i].Kind == Incr && ops[i].Outcome == OK {
						cand = append(cand, i)
					}
				}
				if len(cand) < 2 {
					return false
				}
				a, b := cand[rng.IntN(len(cand))], cand[rng.IntN(len(cand))]
				if ops[a].Key != ops[b].Key || a == b {
					return false
				}
				ops[b].Value = ops[a].Value
				return true
			},
		},
		{
			// Only detectable when every unknown increment of the key took
			// effect; otherwise the failed one could stand in for one of them.
			name: "mark an applied increment failed", want: KindExtraIncrement,
			apply: func(rng *rand.Rand, ops []CounterOp, finals []CounterFinal) bool {
				var cand []int
				for i := range ops {
					_, try := incrsOf(ops, ops[i].Key)
					if ops[i].Kind == Incr && ops[i].Outcome != Failed && try == finals[slices.IndexFunc(finals, func(f CounterFinal) bool { return f.Key == ops[i].Key })].Value {
						cand = append(cand, i)
					}
				}
				if len(cand) == 0 {
					return false
				}
				ops[cand[rng.IntN(len(cand))]].Outcome = Failed
				return true
			},
		},
	}
}

// TestCounterRandom checks that simulated correct histories are valid and
// that each mutation is caught with its kind.
func TestCounterRandom(t *testing.T) {
	applied := map[string]int{}
	for seed := range uint64(100) {
		rng := rand.New(rand.NewPCG(seed, 5))
		ops, finals := genCounter(rng, 50+rng.IntN(150), 1+rng.IntN(3), 1+rng.IntN(3), 50+rng.Int64N(500))
		if res := CheckCounter(ops, finals); !res.Valid {
			t.Fatalf("seed %d: correct history reported invalid:\n%s", seed, dump(res))
		}
		for _, m := range counterMutations() {
			mops, mfinals := slices.Clone(ops), slices.Clone(finals)
			if !m.apply(rng, mops, mfinals) {
				continue
			}
			applied[m.name]++
			if res := CheckCounter(mops, mfinals); !hasKind(res, m.want) {
				t.Errorf("seed %d: %s: no %s anomaly:\n%s", seed, m.name, m.want, dump(res))
			}
		}
	}
	for _, m := range counterMutations() {
		if applied[m.name] < 10 {
			t.Errorf("mutation %q applied only %d times", m.name, applied[m.name])
		}
	}
	t.Logf("mutations applied: %v", applied)
}

func TestCounterLarge(t *testing.T) {
	rng := rand.New(rand.NewPCG(8, 8))
	ops, finals := genCounter(rng, 200_000, 20, 3, 2000)
	start := time.Now()
	res := CheckCounter(ops, finals)
	if !res.Valid || res.Stats.Ops != 200_000 {
		t.Fatalf("correct history: %s", res.Summary())
	}
	t.Logf("%s in %v", res.Summary(), time.Since(start))
}

func TestCheckCounterDeterministic(t *testing.T) {
	rng := rand.New(rand.NewPCG(4, 4))
	ops, finals := genCounter(rng, 300, 3, 3, 300)
	for _, m := range counterMutations() {
		m.apply(rng, ops, finals)
	}
	a, b := CheckCounter(ops, finals), CheckCounter(ops, finals)
	if a.Valid || !reflect.DeepEqual(a, b) {
		t.Fatalf("results differ or valid:\n%s\n%s", dump(a), dump(b))
	}
}
