package chaoscheck

import (
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

func okApp(client int, key string, v, call, ret int64, read ...int64) AppendOp {
	if read == nil {
		read = []int64{}
	}
	return AppendOp{Client: client, Key: key, Value: v, Call: call, Return: ret, Outcome: OK, Read: read}
}

func unkApp(client int, key string, v, call, ret int64) AppendOp {
	return AppendOp{Client: client, Key: key, Value: v, Call: call, Return: ret, Outcome: Unknown}
}

func failApp(client int, key string, v, call, ret int64) AppendOp {
	return AppendOp{Client: client, Key: key, Value: v, Call: call, Return: ret, Outcome: Failed}
}

// finalsAll is the same final list read on three nodes.
func finalsAll(key string, list ...int64) []FinalRead {
	return []FinalRead{
		{Node: "n1", Key: key, List: list},
		{Node: "n2", Key: key, List: slices.Clone(list)},
		{Node: "n3", Key: key, List: slices.Clone(list)},
	}
}

func fin(node, key string, list ...int64) FinalRead {
	return FinalRead{Node: node, Key: key, List: list}
}

// kindsOf returns the distinct anomaly kinds of r, sorted.
func kindsOf(r Result) []string {
	var kinds []string
	for _, a := range r.Anomalies {
		kinds = append(kinds, a.Kind)
	}
	slices.Sort(kinds)
	return slices.Compact(kinds)
}

func hasKind(r Result, kind string) bool {
	return slices.ContainsFunc(r.Anomalies, func(a Anomaly) bool { return a.Kind == kind })
}

func checkLin(t *testing.T, ops []AppendOp) porcupine.CheckResult {
	t.Helper()
	res := porcupine.CheckOperationsTimeout(ListAppendModel(), ListAppendOperations(ops), 5*time.Second)
	if res == porcupine.Unknown {
		t.Fatalf("porcupine gave no verdict")
	}
	return res
}

// TestCheckListAppend pins each anomaly kind to a minimal history that must
// produce exactly the listed kinds, and the valid histories to none. Where
// lin is set, porcupine (which sees the operations but not the final reads)
// must agree, which also shows which anomalies only the final reads reveal.
func TestCheckListAppend(t *testing.T) {
	tests := []struct {
		name   string
		ops    []AppendOp
		finals []FinalRead
		want   []string // exact set of anomaly kinds; empty for valid
		detail string   // a substring of some anomaly's Detail
		lin    porcupine.CheckResult
	}{
		{name: "empty history", lin: porcupine.Ok},
		{
			name: "sequential appends",
			ops: []AppendOp{
				okApp(0, "x", 1, 0, 10, 1),
				okApp(1, "x", 2, 20, 30, 1, 2),
				okApp(0, "x", 3, 40, 50, 1, 2, 3),
			},
			finals: finalsAll("x", 1, 2, 3),
			lin:    porcupine.Ok,
		},
		{
			name: "concurrent appends ordered against their return order",
			ops: []AppendOp{
				okApp(0, "x", 1, 0, 100, 2, 1),
				okApp(1, "x", 2, 10, 50, 2),
			},
			finals: finalsAll("x", 2, 1),
			lin:    porcupine.Ok,
		},
		{
			name: "return equal to call is concurrent",
			ops: []AppendOp{
				okApp(0, "x", 1, 0, 10, 2, 1),
				okApp(1, "x", 2, 10, 20, 2),
			},
			finals: finalsAll("x", 2, 1),
			lin:    porcupine.Ok,
		},
		{
			name: "unknown append that took effect",
			ops: []AppendOp{
				okApp(0, "x", 1, 0, 10, 1),
				unkApp(1, "x", 2, 20, 30),
				okApp(0, "x", 3, 40, 50, 1, 2, 3),
			},
			finals: finalsAll("x", 1, 2, 3),
			lin:    porcupine.Ok,
		},
		{
			name: "unknown append that took effect after the client gave up",
			ops: []AppendOp{
				okApp(0, "x", 1, 0, 10, 1),
				unkApp(1, "x", 2, 20, 30),
				okApp(0, "x", 3, 40, 50, 1, 3),
				okApp(2, "x", 4, 60, 70, 1, 3, 2, 4),
			},
			finals: finalsAll("x", 1, 3, 2, 4),
			lin:    porcupine.Ok,
		},
		{
			name: "unknown append that never took effect",
			ops: []AppendOp{
				okApp(0, "x", 1, 0, 10, 1),
				unkApp(1, "x", 2, 20, 30),
				okApp(0, "x", 3, 40, 50, 1, 3),
			},
			finals: finalsAll("x", 1, 3),
			lin:    porcupine.Ok,
		},
		{
			name: "failed append that did not appear",
			ops: []AppendOp{
				okApp(0, "x", 1, 0, 10, 1),
				failApp(1, "x", 2, 20, 30),
				okApp(0, "x", 3, 40, 50, 1, 3),
			},
			finals: finalsAll("x", 1, 3),
			lin:    porcupine.Ok,
		},
		{
			name: "independent keys",
			ops: []AppendOp{
				okApp(0, "x", 1, 0, 10, 1),
				okApp(1, "y", 1, 5, 15, 1),
				okApp(0, "y", 2, 20, 30, 1, 2),
			},
			finals: append(finalsAll("x", 1), finalsAll("y", 1, 2)...),
			lin:    porcupine.Ok,
		},
		{
			name: "duplicate in an op read",
			ops: []AppendOp{
				okApp(0, "x", 1, 0, 10, 1),
				okApp(1, "x", 2, 20, 30, 1, 1, 2),
			},
			finals: finalsAll("x", 1, 1, 2),
			want:   []string{KindDuplicate},
			detail: "value 1 appears at index 0 and again at index 1 of the read [1 1 2] of client 1 append 2",
			lin:    porcupine.Illegal,
		},
		{
			name: "duplicate in a final read",
			ops: []AppendOp{
				okApp(0, "x", 1, 0, 10, 1),
				okApp(1, "x", 2, 20, 30, 1, 2),
			},
			finals: finalsAll("x", 1, 2, 2),
			want:   []string{KindDuplicate},
			detail: `the final read [1 2 2] on node "n1"`,
			lin:    porcupine.Ok,
		},
		{
			name: "phantom value nobody appended",
			ops: []AppendOp{
				okApp(0, "x", 1, 0, 10, 1),
				okApp(1, "x", 2, 20, 30, 1, 9, 2),
			},
			finals: finalsAll("x", 1, 9, 2),
			want:   []string{KindPhantom},
			detail: "contains value 9, which no operation appended",
			lin:    porcupine.Illegal,
		},
		{
			name: "phantom from a failed append",
			ops: []AppendOp{
				failApp(0, "x", 1, 0, 10),
				okApp(1, "x", 2, 20, 30, 1, 2),
			},
			finals: finalsAll("x", 1, 2),
			want:   []string{KindPhantom},
			detail: "whose only append client 0 append 1 [call 0, return 10, failed] failed",
			lin:    porcupine.Illegal,
		},
		{
			name: "phantom from an append invoked after the read returned",
			ops: []AppendOp{
				okApp(0, "x", 1, 0, 10, 2, 1),
				unkApp(1, "x", 2, 20, 30),
			},
			finals: finalsAll("x", 2, 1),
			want:   []string{KindPhantom},
			detail: "invoked after the read returned",
			lin:    porcupine.Illegal,
		},
		{
			name: "own write missing",
			ops: []AppendOp{
				okApp(0, "x", 1, 0, 10, 1),
				okApp(1, "x", 2, 20, 30, 1),
			},
			finals: finalsAll("x", 1, 2),
			want:   []string{KindOwnWriteMissing},
			detail: "its own value is absent",
			lin:    porcupine.Illegal,
		},
		{
			name: "own write not last",
			ops: []AppendOp{
				okApp(0, "x", 1, 0, 100, 1, 2),
				okApp(1, "x", 2, 0, 100, 1, 2),
			},
			finals: finalsAll("x", 1, 2),
			want:   []string{KindOwnWriteMissing},
			detail: "at index 0, not last",
			lin:    porcupine.Illegal,
		},
		{
			name: "incompatible order of concurrent appends",
			ops: []AppendOp{
				okApp(0, "x", 1, 0, 100, 1),
				okApp(1, "x", 2, 0, 100, 2),
			},
			finals: finalsAll("x", 1, 2),
			want:   []string{KindIncompatibleOrder},
			detail: "differ at index 0 (2 vs 1)",
			lin:    porcupine.Illegal,
		},
		{
			name: "unknown append seen, then gone from the finals",
			ops: []AppendOp{
				okApp(0, "x", 1, 0, 10, 1),
				unkApp(1, "x", 2, 20, 30),
				okApp(0, "x", 3, 40, 50, 1, 2, 3),
			},
			finals: finalsAll("x", 1, 3),
			want:   []string{KindIncompatibleOrder},
			lin:    porcupine.Ok,
		},
		{
			// A client of a deposed leader reads and appends to a list that
			// lacks an append the new leader acknowledged earlier.
			name: "stale read from a deposed leader",
			ops: []AppendOp{
				okApp(0, "x", 1, 0, 5, 1),
				okApp(1, "x", 2, 6, 10, 1, 2),
				okApp(2, "x", 3, 20, 30, 1, 3),
			},
			finals: finalsAll("x", 1, 2, 3),
			want:   []string{KindIncompatibleOrder, KindStaleRead},
			detail: "does not extend the read [1 2] of client 1 append 2 [call 6, return 10, ok], which returned before it was invoked",
			lin:    porcupine.Illegal,
		},
		{
			// Client 2's read is a prefix of the others, but misses the
			// append client 1 had acknowledged before client 2 started
			// (and client 2's own).
			name: "stale read of an earlier state",
			ops: []AppendOp{
				okApp(0, "x", 1, 0, 30, 1),
				okApp(1, "x", 2, 0, 10, 1, 2),
				okApp(2, "x", 3, 20, 30, 1),
			},
			finals: finalsAll("x", 1, 2),
			want:   []string{KindOwnWriteMissing, KindLostAppend, KindStaleRead},
			lin:    porcupine.Illegal,
		},
		{
			name: "stale read missing an acknowledged value",
			ops: []AppendOp{
				okApp(0, "x", 1, 0, 10, 1),
				okApp(1, "x", 2, 0, 40, 2),
				okApp(2, "x", 3, 20, 30, 2, 3),
			},
			finals: finalsAll("x", 1, 2, 3),
			want:   []string{KindIncompatibleOrder, KindStaleRead},
			lin:    porcupine.Illegal,
		},
		{
			name: "lost append on every node",
			ops: []AppendOp{
				okApp(0, "x", 1, 0, 10, 1),
				okApp(1, "x", 2, 20, 30, 1, 2),
			},
			finals: finalsAll("x", 1),
			want:   []string{KindLostAppend},
			detail: `client 1 append 2 [call 20, return 30, ok] is missing from the final read on node "n1", "n2", "n3"`,
			lin:    porcupine.Ok,
		},
		{
			name: "lost append on one node",
			ops: []AppendOp{
				okApp(0, "x", 1, 0, 10, 1),
				okApp(1, "x", 2, 20, 30, 1, 2),
			},
			finals: []FinalRead{fin("n1", "x", 1, 2), fin("n2", "x", 1), fin("n3", "x", 1, 2)},
			want:   []string{KindLostAppend, KindDivergentFinal},
			detail: `the final read [1] on node "n2" differs from the final read [1 2] on node "n1" at index 1 (end vs 2)`,
		},
		{
			name: "lost append from a diverged final read",
			ops: []AppendOp{
				okApp(0, "x", 1, 0, 10, 1),
				okApp(1, "x", 2, 20, 30, 1, 2),
				okApp(2, "x", 3, 40, 50, 1, 2, 3),
			},
			finals: []FinalRead{fin("n1", "x", 1, 2, 3), fin("n2", "x", 1, 3, 4)},
			want:   []string{KindPhantom, KindIncompatibleOrder, KindLostAppend, KindDivergentFinal},
			detail: `client 1 append 2 [call 20, return 30, ok] is missing from the final read on node "n2"`,
		},
		{
			name: "node lagging behind an unknown append",
			ops: []AppendOp{
				okApp(0, "x", 1, 0, 10, 1),
				unkApp(1, "x", 2, 20, 30),
			},
			finals: []FinalRead{fin("n1", "x", 1, 2), fin("n2", "x", 1)},
			want:   []string{KindDivergentFinal},
			lin:    porcupine.Ok,
		},
		{
			name: "nodes applied unknown appends in different orders",
			ops: []AppendOp{
				unkApp(0, "x", 1, 0, 10),
				unkApp(1, "x", 2, 0, 10),
			},
			finals: []FinalRead{fin("n1", "x", 1, 2), fin("n2", "x", 2, 1)},
			want:   []string{KindIncompatibleOrder, KindDivergentFinal},
			lin:    porcupine.Ok,
		},
		{
			name: "return before call",
			ops: []AppendOp{
				okApp(0, "x", 1, 10, 0, 1),
			},
			finals: finalsAll("x", 1),
			want:   []string{KindMalformed},
			detail: "returned before it was invoked",
		},
		{
			name: "undefined outcome is treated as unknown",
			ops: []AppendOp{
				{Client: 0, Key: "x", Value: 1, Call: 0, Return: 10, Outcome: 7, Read: []int64{9}},
				okApp(1, "x", 2, 20, 30, 1, 2),
			},
			finals: finalsAll("x", 1, 2),
			want:   []string{KindMalformed},
			detail: "undefined outcome",
			lin:    porcupine.Ok,
		},
		{
			name: "value appended twice",
			ops: []AppendOp{
				okApp(0, "x", 1, 0, 10, 1),
				okApp(1, "x", 1, 20, 30, 1, 1),
			},
			finals: finalsAll("x", 1, 1),
			want:   []string{KindMalformed, KindDuplicate},
			detail: "values must be unique per key",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := CheckListAppend(tt.ops, tt.finals)
			if got := kindsOf(res); !slices.Equal(got, sortedCopy(tt.want)) {
				t.Fatalf("kinds = %v, want %v\n%s", got, sortedCopy(tt.want), dump(res))
			}
			if res.Valid != (len(tt.want) == 0) {
				t.Fatalf("Valid = %v with anomalies %v", res.Valid, res.Anomalies)
			}
			if tt.detail != "" && !slices.ContainsFunc(res.Anomalies, func(a Anomaly) bool { return strings.Contains(a.Detail, tt.detail) }) {
				t.Fatalf("no anomaly detail contains %q\n%s", tt.detail, dump(res))
			}
			if tt.lin != "" {
				if got := checkLin(t, tt.ops); got != tt.lin {
					t.Fatalf("porcupine: %v, want %v", got, tt.lin)
				}
			}
		})
	}
}

func sortedCopy(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	if s == nil {
		s = []string{}
	}
	return s
}

func dump(r Result) string {
	var b strings.Builder
	b.WriteString(r.Summary())
	for _, a := range r.Anomalies {
		b.WriteString("\n  ")
		b.WriteString(a.String())
	}
	return b.String()
}

func TestCheckListAppendStats(t *testing.T) {
	ops := []AppendOp{
		okApp(0, "x", 1, 0, 10, 1),
		unkApp(1, "x", 2, 20, 30),
		failApp(2, "y", 1, 20, 30),
		okApp(0, "x", 3, 40, 50, 1, 2, 3),
	}
	finals := append(finalsAll("x", 1, 2, 3), finalsAll("y")...)
	res := CheckListAppend(ops, finals)
	want := Stats{Ops: 4, OK: 2, Failed: 1, Unknown: 1, Keys: 2, Finals: 6, MaxListLen: 3}
	if res.Stats != want {
		t.Fatalf("stats = %+v, want %+v", res.Stats, want)
	}
	if got, want := res.Summary(), "list-append: valid, 4 ops (1 unknown, 1 failed), 2 keys"; got != want {
		t.Fatalf("summary = %q, want %q", got, want)
	}
}

// genListAppend simulates a correct system: operations take effect one at a
// time at distinct instants, and each client's window [Call, Return] is
// drawn around that instant, so windows overlap at random. Unknown appends
// take effect or not, possibly after the client gave up; Failed ones never
// do. When share is set, reads are slices of the final lists, which keeps
// huge histories cheap.
func genListAppend(rng *rand.Rand, nOps, nKeys, nNodes int, window int64, share bool) ([]AppendOp, []FinalRead) {
	keys := make([]string, nKeys)
	for i := range keys {
		keys[i] = "k" + string(rune('a'+i%26)) + strings.Repeat("'", i/26)
	}
	lists := make(map[string][]int64, nKeys)
	next := make(map[string]int64, nKeys)
	ops := make([]AppendOp, nOps)
	lens := make([]int, nOps)
	for i := range ops {
		at := int64(i+1) * 100
		key := keys[rng.IntN(nKeys)]
		next[key]++
		op := AppendOp{Client: rng.IntN(8), Key: key, Value: next[key], Call: at - rng.Int64N(window)}
		op.Return = at + rng.Int64N(window)
		effective := true
		switch r := rng.IntN(10); {
		case r == 0:
			op.Outcome, effective = Failed, false
		case r == 1:
			op.Outcome, effective = Unknown, rng.IntN(2) == 0
			op.Return = op.Call + rng.Int64N(window) // may give up before it takes effect
		}
		if effective {
			lists[key] = append(lists[key], op.Value)
		}
		if op.Outcome == OK {
			lens[i] = len(lists[key])
			if !share {
				op.Read = slices.Clone(lists[key])
			}
		}
		ops[i] = op
	}
	if share {
		for i := range ops {
			if ops[i].Outcome == OK {
				ops[i].Read = lists[ops[i].Key][:lens[i]:lens[i]]
			}
		}
	}
	var finals []FinalRead
	for _, key := range sortedKeys(lists) {
		for n := range nNodes {
			list := lists[key]
			if !share {
				list = slices.Clone(list)
			}
			finals = append(finals, FinalRead{Node: "n" + string(rune('1'+n)), Key: key, List: list})
		}
	}
	return ops, finals
}

// cloneHistory deep-copies a history so that a mutation cannot leak into
// the original.
func cloneHistory(ops []AppendOp, finals []FinalRead) ([]AppendOp, []FinalRead) {
	ops = slices.Clone(ops)
	for i := range ops {
		ops[i].Read = slices.Clone(ops[i].Read)
	}
	finals = slices.Clone(finals)
	for i := range finals {
		finals[i].List = slices.Clone(finals[i].List)
	}
	return ops, finals
}

// appendMutation breaks a correct history in one way; it reports false when
// the history offers no place to apply it.
type appendMutation struct {
	name  string
	want  string // the kind that must be reported
	reads bool   // only op reads change, so porcupine must reject it too
	apply func(rng *rand.Rand, ops []AppendOp, finals []FinalRead) bool
}

func removeValue(l []int64, v int64) []int64 {
	return slices.DeleteFunc(slices.Clone(l), func(x int64) bool { return x == v })
}

// appendMutations returns the mutations; a function rather than a variable
// so that no test can change them for another.
func appendMutations() []appendMutation {
	return []appendMutation{
		{
			name: "drop an acknowledged value from a later read", want: KindStaleRead, reads: true,
			apply: func(rng *rand.Rand, ops []AppendOp, _ []FinalRead) bool {
				type pair struct{ a, b int }
				var pairs []pair
				for b := range ops {
					for a := range ops {
						if ops[a].Outcome == OK && ops[b].Outcome == OK && ops[a].Key == ops[b].Key && ops[a].Return < ops[b].Call {
							pairs = append(pairs, pair{a, b})
						}
					}
				}
				if len(pairs) == 0 {
					return false
				}
				p := pairs[rng.IntN(len(pairs))]
				ops[p.b].Read = removeValue(ops[p.b].Read, ops[p.a].Value)
				return true
			},
		},
		{
			name: "drop an acknowledged value from one node's final read", want: KindLostAppend,
			apply: func(rng *rand.Rand, ops []AppendOp, finals []FinalRead) bool {
				var okOps []int
				for i := range ops {
					if ops[i].Outcome == OK {
						okOps = append(okOps, i)
					}
				}
				if len(okOps) == 0 {
					return false
				}
				op := ops[okOps[rng.IntN(len(okOps))]]
				var cand []int
				for i := range finals {
					if finals[i].Key == op.Key {
						cand = append(cand, i)
					}
				}
				if len(cand) == 0 {
					return false
				}
				f := &finals[cand[rng.IntN(len(cand))]]
				f.List = removeValue(f.List, op.Value)
				return true
			},
		},
		{
			name: "swap two adjacent elements of a read", want: KindIncompatibleOrder,
			apply: func(rng *rand.Rand, ops []AppendOp, _ []FinalRead) bool {
				var cand []int
				for i := range ops {
					if ops[i].Outcome == OK && len(ops[i].Read) >= 2 {
						cand = append(cand, i)
					}
				}
				if len(cand) == 0 {
					return false
				}
				r := ops[cand[rng.IntN(len(cand))]].Read
				j := rng.IntN(len(r) - 1)
				r[j], r[j+1] = r[j+1], r[j]
				return true
			},
		},
		{
			name: "swap two adjacent elements of a final read", want: KindDivergentFinal,
			apply: func(rng *rand.Rand, _ []AppendOp, finals []FinalRead) bool {
				// With one node, swapping two appends nobody else read is
				// undetectable, rightly.
				nodes := map[string]int{}
				for _, f := range finals {
					nodes[f.Key]++
				}
				var cand []int
				for i := range finals {
					if len(finals[i].List) >= 2 && nodes[finals[i].Key] >= 2 {
						cand = append(cand, i)
					}
				}
				if len(cand) == 0 {
					return false
				}
				r := finals[cand[rng.IntN(len(cand))]].List
				j := rng.IntN(len(r) - 1)
				r[j], r[j+1] = r[j+1], r[j]
				return true
			},
		},
		{
			name: "mark an append that took effect as failed", want: KindPhantom,
			apply: func(rng *rand.Rand, ops []AppendOp, finals []FinalRead) bool {
				var cand []int
				for i := range ops {
					for _, f := range finals {
						if f.Key == ops[i].Key && slices.Contains(f.List, ops[i].Value) {
							cand = append(cand, i)
							break
						}
					}
				}
				if len(cand) == 0 {
					return false
				}
				op := &ops[cand[rng.IntN(len(cand))]]
				op.Outcome, op.Read = Failed, nil
				return true
			},
		},
		{
			name: "repeat an element of a read", want: KindDuplicate, reads: true,
			apply: func(rng *rand.Rand, ops []AppendOp, _ []FinalRead) bool {
				var cand []int
				for i := range ops {
					if ops[i].Outcome == OK && len(ops[i].Read) > 0 {
						cand = append(cand, i)
					}
				}
				if len(cand) == 0 {
					return false
				}
				op := &ops[cand[rng.IntN(len(cand))]]
				j := rng.IntN(len(op.Read))
				op.Read = slices.Insert(op.Read, j, op.Read[j])
				return true
			},
		},
	}
}

// TestListAppendRandom checks that simulated correct histories are valid for
// both CheckListAppend and porcupine, and that each mutation is caught with
// its kind. Porcupine must reject the mutations that change only op reads
// and break linearizability outright.
func TestListAppendRandom(t *testing.T) {
	applied := map[string]int{}
	defer func() { t.Logf("mutations applied: %v", applied) }()
	for seed := range uint64(40) {
		rng := rand.New(rand.NewPCG(seed, 1))
		ops, finals := genListAppend(rng, 30+rng.IntN(50), 1+rng.IntN(3), 1+rng.IntN(3), 50+rng.Int64N(250), false)
		if res := CheckListAppend(ops, finals); !res.Valid {
			t.Fatalf("seed %d: correct history reported invalid:\n%s", seed, dump(res))
		}
		if got := checkLin(t, ops); got != porcupine.Ok {
			t.Fatalf("seed %d: porcupine rejects a correct history: %v", seed, got)
		}
		for _, m := range appendMutations() {
			mops, mfinals := cloneHistory(ops, finals)
			if !m.apply(rng, mops, mfinals) {
				continue
			}
			applied[m.name]++
			res := CheckListAppend(mops, mfinals)
			if !hasKind(res, m.want) {
				t.Errorf("seed %d: %s: no %s anomaly:\n%s", seed, m.name, m.want, dump(res))
			}
			if m.reads {
				if got := checkLin(t, mops); got != porcupine.Illegal {
					t.Errorf("seed %d: %s: porcupine says %v", seed, m.name, got)
				}
			}
			// The mutation must not have touched the original.
			if res := CheckListAppend(ops, finals); !res.Valid {
				t.Fatalf("seed %d: %s modified the original history", seed, m.name)
			}
		}
	}
}

// TestListAppendLarge checks that a history of the size a long fault run
// records (200k operations, 20 keys) is checked quickly: the real-time check
// must not compare pairs of operations.
func TestListAppendLarge(t *testing.T) {
	n := 200_000
	if testing.Short() {
		n = 20_000
	}
	rng := rand.New(rand.NewPCG(7, 7))
	ops, finals := genListAppend(rng, n, 20, 3, 2000, true)
	start := time.Now()
	res := CheckListAppend(ops, finals)
	if !res.Valid {
		t.Fatalf("correct history reported invalid: %s", res.Summary())
	}
	if res.Stats.Ops != n || res.Stats.Keys != 20 || res.Stats.MaxListLen < n/40 {
		t.Fatalf("stats: %+v", res.Stats)
	}
	t.Logf("%s in %v", res.Summary(), time.Since(start))

	// One stale read hidden in the middle is still found.
	for i := n / 2; ; i++ {
		if ops[i].Outcome == OK && len(ops[i].Read) > 10 {
			ops[i].Read = slices.Delete(slices.Clone(ops[i].Read), 3, 4)
			break
		}
	}
	if res := CheckListAppend(ops, finals); !hasKind(res, KindStaleRead) {
		t.Fatalf("stale read not found: %s", res.Summary())
	}
}

// TestCheckListAppendDeterministic checks that equal inputs give equal
// results, anomalies included, so a CI failure can be replayed.
func TestCheckListAppendDeterministic(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 3))
	ops, finals := genListAppend(rng, 300, 3, 3, 300, false)
	for _, m := range appendMutations() {
		m.apply(rng, ops, finals)
	}
	a := CheckListAppend(ops, finals)
	b := CheckListAppend(ops, finals)
	if a.Valid || !reflect.DeepEqual(a, b) {
		t.Fatalf("results differ or valid:\n%s\n%s", dump(a), dump(b))
	}
}

func TestListAppendModel(t *testing.T) {
	m := ListAppendModel()
	s0 := m.Init()
	ok, s1 := m.Step(s0, ListAppendInput{Key: "x", Value: 5}, ListAppendOutput{Read: []int64{5}})
	if !ok || !m.Equal(s1, []int64{5}) || m.Hash(s1) != m.Hash([]int64{5}) {
		t.Fatalf("step from empty: %v %v", ok, s1)
	}
	if ok, _ := m.Step(s1, ListAppendInput{Key: "x", Value: 6}, ListAppendOutput{Read: []int64{6}}); ok {
		t.Fatal("accepted a read that lost an element")
	}
	ok, s2 := m.Step(s1, ListAppendInput{Key: "x", Value: 6}, ListAppendOutput{Unknown: true})
	if !ok || !m.Equal(s2, []int64{5, 6}) {
		t.Fatalf("unknown append: %v %v", ok, s2)
	}
	if !m.Equal(s1, []int64{5}) {
		t.Fatal("Step modified its state")
	}
	if m.Equal(s1, s2) || m.Hash([]int64{1, 2}) == m.Hash([]int64{2, 1}) {
		t.Fatal("distinct states compare equal")
	}
	if ok, _ := m.Step(s1, "junk", nil); ok {
		t.Fatal("accepted a foreign input")
	}
	if got := m.DescribeOperation(ListAppendInput{Key: "x", Value: 6}, ListAppendOutput{Unknown: true}); got != "append(x, 6) -> ?" {
		t.Fatalf("describe: %q", got)
	}
	parts := m.Partition([]porcupine.Operation{
		{Input: ListAppendInput{Key: "y"}}, {Input: ListAppendInput{Key: "x"}}, {Input: 3}, {Input: ListAppendInput{Key: "y"}},
	})
	if len(parts) != 3 || len(parts[0]) != 1 || len(parts[1]) != 2 || len(parts[2]) != 1 {
		t.Fatalf("partitions: %v", parts)
	}
}

func TestListAppendOperations(t *testing.T) {
	read := []int64{1}
	ops := []AppendOp{
		okApp(3, "x", 1, 0, 10, read...),
		failApp(1, "x", 2, 5, 15),
		unkApp(2, "x", 3, 20, 30),
		{Client: 4, Key: "x", Value: 4, Call: 40, Return: 50, Outcome: 9},
	}
	got := ListAppendOperations(ops)
	if len(got) != 3 {
		t.Fatalf("got %d operations, want 3 (failed dropped)", len(got))
	}
	if got[0].ClientId != 3 || got[0].Return != 10 || !reflect.DeepEqual(got[0].Output, ListAppendOutput{Read: []int64{1}}) {
		t.Fatalf("ok op: %+v", got[0])
	}
	for _, op := range got[1:] {
		if op.Return != 1<<63-1 || !reflect.DeepEqual(op.Output, ListAppendOutput{Unknown: true}) {
			t.Fatalf("unknown op not extended: %+v", op)
		}
	}
	ops[0].Read[0] = 99
	if got[0].Output.(ListAppendOutput).Read[0] != 1 {
		t.Fatal("operations alias the history's reads")
	}
}

// TestListAppendAgreesWithPorcupine compares the verdicts on the operations
// alone (no final reads) for many small histories: random junk reads on one
// key, and correct histories with a mutation and a shifted invocation. On
// these families the checker neither accuses a linearizable history nor
// misses a non-linearizable one.
func TestListAppendAgreesWithPorcupine(t *testing.T) {
	var lin, illegal int
	for seed := range uint64(4000) {
		rng := rand.New(rand.NewPCG(seed, 4))
		var ops []AppendOp
		if seed%2 == 0 {
			n := 1 + rng.IntN(6)
			for i := range n {
				call := rng.Int64N(20)
				op := AppendOp{Client: i, Key: "x", Value: int64(i + 1), Call: call, Return: call + rng.Int64N(10), Outcome: Outcome(rng.IntN(3))}
				if op.Outcome == OK {
					for _, j := range rng.Perm(n)[:rng.IntN(n)] {
						op.Read = append(op.Read, int64(j+1))
					}
					op.Read = append(op.Read, op.Value)
				}
				ops = append(ops, op)
			}
		} else {
			var finals []FinalRead
			ops, finals = genListAppend(rng, 4+rng.IntN(12), 1+rng.IntN(2), 1+rng.IntN(2), 50+rng.Int64N(300), false)
			muts := appendMutations()
			muts[rng.IntN(len(muts))].apply(rng, ops, finals)
			if i := rng.IntN(len(ops)); rng.IntN(2) == 0 {
				ops[i].Call += rng.Int64N(400) - 200
				ops[i].Return = max(ops[i].Return, ops[i].Call)
			}
		}
		res := CheckListAppend(ops, nil)
		switch checkLin(t, ops) {
		case porcupine.Ok:
			lin++
			if !res.Valid {
				t.Fatalf("seed %d: linearizable, but:\n%s\nops: %+v", seed, dump(res), ops)
			}
		case porcupine.Illegal:
			illegal++
			if res.Valid {
				t.Fatalf("seed %d: not linearizable, but the checker finds nothing\nops: %+v", seed, ops)
			}
		}
	}
	t.Logf("%d linearizable, %d not", lin, illegal)
}
