// Package chaoscheck checks client histories recorded while faults were being
// injected (partitions, crashes, pauses) for the anomalies a Jepsen-style
// test looks for. The checkers are pure and deterministic: they read a
// history, never modify it, and report the same result for the same input,
// so a failure found in CI can be replayed from the recorded history alone.
//
// Two workloads are supported:
//
//   - list-append (CheckListAppend): each operation is one transaction
//     MULTI; RPUSH key v; LRANGE key 0 -1; EXEC with a value v unique per
//     key. Because a list only grows at its end, every read of a key must be
//     a prefix of every longer read, which makes lost, reordered and stale
//     writes visible without searching for a linearization. ListAppendModel
//     and ListAppendOperations run the same history through porcupine for a
//     full linearizability check and a visualization.
//   - counter (CheckCounter): INCR and GET on a few keys.
//
// Every operation carries an Outcome. Treating a timed-out write as failed
// would make a correct system look broken when the write was in fact
// applied, so a recorder that is not sure must say Unknown.
//
// The final reads passed to the checkers must be taken after the cluster
// healed and every in-flight operation settled; a write still being applied
// between two nodes' final reads would look like divergence.
package chaoscheck

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Outcome classifies how an operation ended, as the client saw it.
type Outcome int

const (
	OK      Outcome = iota // acknowledged: it took effect exactly once
	Failed                 // it certainly did not take effect
	Unknown                // it may or may not have taken effect (timeout, connection lost after sending)
)

func (o Outcome) String() string {
	switch o {
	case OK:
		return "ok"
	case Failed:
		return "failed"
	case Unknown:
		return "unknown"
	}
	return "outcome(" + strconv.Itoa(int(o)) + ")"
}

// known reports whether o is one of the defined outcomes. The checkers treat
// any other value as Unknown (the weakest claim) and report it as malformed.
func (o Outcome) known() bool { return o == OK || o == Failed || o == Unknown }

// Anomaly kinds. Kind strings are short and stable so that tests and
// dashboards can match on them.
const (
	// KindMalformed: the history itself breaks the recording rules (return
	// before call, an undefined Outcome or CounterKind, a list-append value
	// used twice on one key). The checkers still run, conservatively, but
	// their verdict on the affected operations proves little.
	KindMalformed = "malformed"

	// List-append.
	KindDuplicate         = "duplicate"          // a value appears twice in one read
	KindPhantom           = "phantom"            // a read holds a value never appended, appended by a Failed op, or appended by an op invoked after the read returned
	KindOwnWriteMissing   = "own-write-missing"  // an OK op's read does not end with its own value
	KindIncompatibleOrder = "incompatible-order" // two reads of a key are not prefixes of one another
	KindLostAppend        = "lost-append"        // an OK append is missing from a final read

	// Both workloads.
	KindStaleRead      = "stale-read"      // a read misses the effect of an op that completed before it was invoked
	KindDivergentFinal = "divergent-final" // nodes' final reads of a key differ

	// Counter.
	KindLostIncrement       = "lost-increment"        // a final value is below the OK increments, or below a value already observed
	KindExtraIncrement      = "extra-increment"       // a final value is above the OK + Unknown increments
	KindDuplicateIncrResult = "duplicate-incr-result" // two OK INCRs returned the same value
	KindIncrOutOfRange      = "incr-out-of-range"     // an OK INCR returned < 1 or more than the increments invoked before it returned
	KindReadOutOfRange      = "read-out-of-range"     // a GET returned < 0 or more than the increments invoked before it returned
)

// kindRank fixes the order of anomalies in a Result and of the counts in
// Summary. Malformed comes first because it casts doubt on everything after.
func kindRank(kind string) int {
	switch kind {
	case KindMalformed:
		return 0
	case KindDuplicate:
		return 1
	case KindPhantom:
		return 2
	case KindOwnWriteMissing:
		return 3
	case KindIncompatibleOrder:
		return 4
	case KindStaleRead:
		return 5
	case KindLostAppend:
		return 6
	case KindLostIncrement:
		return 7
	case KindExtraIncrement:
		return 8
	case KindDuplicateIncrResult:
		return 9
	case KindIncrOutOfRange:
		return 10
	case KindReadOutOfRange:
		return 11
	case KindDivergentFinal:
		return 12
	}
	return 13
}

// Anomaly is one violation. Detail names the operations involved (client,
// call and return times, values) so that a human can find them in the
// recorded history.
type Anomaly struct {
	Kind   string
	Key    string
	Detail string
}

func (a Anomaly) String() string {
	return fmt.Sprintf("%s on key %q: %s", a.Kind, a.Key, a.Detail)
}

// Stats describes the checked history, so that a "valid" verdict can be
// judged: a run where every operation failed is valid and worthless.
type Stats struct {
	Ops     int // operations in the history
	OK      int
	Failed  int
	Unknown int // includes operations with an undefined Outcome
	Keys    int // distinct keys among operations and final reads
	Finals  int // final reads

	MaxListLen int   // list-append: the longest list read
	MaxValue   int64 // counter: the highest value read, returned or finally read
}

// Result is a checker's verdict.
type Result struct {
	Workload  string // "list-append" or "counter"
	Valid     bool   // no anomalies
	Anomalies []Anomaly
	Stats     Stats
}

// Summary is a one-line verdict, e.g.
//
//	list-append: valid, 1234 ops (12 unknown, 3 failed), 8 keys
//	list-append: INVALID: 2 lost-append, 1 stale-read; first: lost-append on key "k3": ...
func (r Result) Summary() string {
	if len(r.Anomalies) == 0 {
		return fmt.Sprintf("%s: valid, %d ops (%d unknown, %d failed), %d keys",
			r.Workload, r.Stats.Ops, r.Stats.Unknown, r.Stats.Failed, r.Stats.Keys)
	}
	counts := map[string]int{}
	var kinds []string
	for _, a := range r.Anomalies {
		if counts[a.Kind] == 0 {
			kinds = append(kinds, a.Kind)
		}
		counts[a.Kind]++
	}
	slices.SortStableFunc(kinds, func(a, b string) int { return cmp.Compare(kindRank(a), kindRank(b)) })
	parts := make([]string, len(kinds))
	for i, k := range kinds {
		parts[i] = fmt.Sprintf("%d %s", counts[k], k)
	}
	return fmt.Sprintf("%s: INVALID: %s; first: %s", r.Workload, strings.Join(parts, ", "), r.Anomalies[0])
}

// Error is the type of this package's sentinel errors; being a string type it
// can be a constant, so the sentinels cannot be reassigned.
type Error string

func (e Error) Error() string { return string(e) }

// ErrInvalid is wrapped by Result.Err when a history has anomalies.
const ErrInvalid Error = "history has anomalies"

// Err returns nil for a valid result and otherwise an error wrapping
// ErrInvalid whose text is the Summary, for tests that just want
// `if err := res.Err(); err != nil { t.Fatal(err) }`.
func (r Result) Err() error {
	if len(r.Anomalies) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %s", ErrInvalid, r.Summary())
}

// reporter collects anomalies during a check.
type reporter struct {
	anomalies []Anomaly
}

func (r *reporter) add(kind, key, format string, args ...any) {
	r.anomalies = append(r.anomalies, Anomaly{Kind: kind, Key: key, Detail: fmt.Sprintf(format, args...)})
}

// result orders the anomalies by kind and key. The sort is stable and keys
// are checked in sorted order, so equal inputs give equal results.
func (r *reporter) result(workload string, stats Stats) Result {
	slices.SortStableFunc(r.anomalies, func(a, b Anomaly) int {
		if c := cmp.Compare(kindRank(a.Kind), kindRank(b.Kind)); c != 0 {
			return c
		}
		return cmp.Compare(a.Key, b.Key)
	})
	return Result{Workload: workload, Valid: len(r.anomalies) == 0, Anomalies: r.anomalies, Stats: stats}
}

// fmtList prints a list compactly: the head and tail are what a human needs
// to find it in a history, and full lists can be thousands of elements long.
func fmtList(l []int64) string {
	const head, tail = 3, 6
	if len(l) <= head+tail+1 {
		return fmtInts(l)
	}
	return fmt.Sprintf("[%s … %s] (len %d)", strings.Trim(fmtInts(l[:head]), "[]"), strings.Trim(fmtInts(l[len(l)-tail:]), "[]"), len(l))
}

func fmtInts(l []int64) string {
	var b strings.Builder
	b.WriteByte('[')
	for i, v := range l {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(strconv.FormatInt(v, 10))
	}
	b.WriteByte(']')
	return b.String()
}

// sortedKeys returns m's keys in order, so that checks run deterministically.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
