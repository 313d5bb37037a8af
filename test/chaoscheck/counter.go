package chaoscheck

import (
	"cmp"
	"fmt"
	"slices"
	"sort"
	"strconv"
)

// CounterKind is a counter operation's type.
type CounterKind int

const (
	Incr CounterKind = iota // INCR key: returns the new value
	Read                    // GET key: returns the value, 0 when the key is absent
)

func (k CounterKind) String() string {
	switch k {
	case Incr:
		return "incr"
	case Read:
		return "get"
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// CounterOp is one counter operation as a client saw it. Keys start absent
// (0) and are only ever incremented by 1.
type CounterOp struct {
	Client  int
	Key     string
	Kind    CounterKind
	Call    int64
	Return  int64
	Outcome Outcome
	Value   int64 // INCR's new value or GET's value; only looked at when Outcome is OK
}

// CounterFinal is one node's GET of a key after the cluster healed.
type CounterFinal struct {
	Node  string
	Key   string
	Value int64
}

// CheckCounter checks a counter history and the final values for the
// anomalies named by the Kind constants. It runs in O(n log n).
//
// A counter hides which increments took effect, so the checks bound values
// instead: a value can be no lower than what was acknowledged or already
// observed, and no higher than what was attempted.
func CheckCounter(ops []CounterOp, finals []CounterFinal) Result {
	var rep reporter
	stats := Stats{Ops: len(ops), Finals: len(finals)}
	byKey := map[string]*counterCheck{}
	forKey := func(key string) *counterCheck {
		c := byKey[key]
		if c == nil {
			c = &counterCheck{key: key, ops: ops, finals: finals, rep: &rep}
			byKey[key] = c
		}
		return c
	}
	for i := range ops {
		op := &ops[i]
		switch outcomeOf(op.Outcome) {
		case OK:
			stats.OK++
			stats.MaxValue = max(stats.MaxValue, op.Value)
		case Failed:
			stats.Failed++
		default:
			stats.Unknown++
		}
		c := forKey(op.Key)
		c.opIdx = append(c.opIdx, i)
	}
	for i := range finals {
		stats.MaxValue = max(stats.MaxValue, finals[i].Value)
		c := forKey(finals[i].Key)
		c.finalIdx = append(c.finalIdx, i)
	}
	stats.Keys = len(byKey)
	for _, key := range sortedKeys(byKey) {
		byKey[key].run()
	}
	return rep.result("counter", stats)
}

// counterCheck checks one key.
type counterCheck struct {
	key      string
	ops      []CounterOp    // the whole history
	finals   []CounterFinal // all final values
	opIdx    []int          // this key's operations
	finalIdx []int          // this key's final values
	rep      *reporter

	valid     []int   // this key's well-formed operations
	okIncrs   int     // acknowledged increments
	tryIncrs  int     // increments that may have taken effect (OK + Unknown)
	incrCalls []int64 // sorted invocation times of those
	maxSeen   int     // index of the OK op that returned the highest value, or -1
}

func (c *counterCheck) run() {
	c.collect()
	c.checkRanges()
	c.checkDuplicates()
	c.checkRealTime()
	c.checkFinals()
}

// collect validates the operations and counts the increments.
func (c *counterCheck) collect() {
	c.maxSeen = -1
	for _, i := range c.opIdx {
		op := &c.ops[i]
		if op.Kind != Incr && op.Kind != Read {
			// Whether it could have changed the counter is unknowable,
			// so it takes part in no check.
			c.rep.add(KindMalformed, c.key, "%s has an undefined kind; ignored", describeCounter(op))
			continue
		}
		if !op.Outcome.known() {
			c.rep.add(KindMalformed, c.key, "%s has an undefined outcome; treated as unknown", describeCounter(op))
		}
		if op.Return < op.Call {
			c.rep.add(KindMalformed, c.key, "%s returned before it was invoked; left out of real-time checks", describeCounter(op))
		}
		c.valid = append(c.valid, i)
		outcome := outcomeOf(op.Outcome)
		if op.Kind == Incr && outcome != Failed {
			c.tryIncrs++
			c.incrCalls = append(c.incrCalls, op.Call)
			if outcome == OK {
				c.okIncrs++
			}
		}
		if outcome == OK && (c.maxSeen < 0 || op.Value > c.ops[c.maxSeen].Value) {
			c.maxSeen = i
		}
	}
	slices.Sort(c.incrCalls)
}

// checkRanges bounds each OK value by the increments invoked before the op
// returned: nothing invoked later can have taken effect in time.
func (c *counterCheck) checkRanges() {
	for _, i := range c.valid {
		op := &c.ops[i]
		if outcomeOf(op.Outcome) != OK || op.Return < op.Call {
			continue
		}
		invoked := sort.Search(len(c.incrCalls), func(j int) bool { return c.incrCalls[j] > op.Return })
		switch {
		case op.Kind == Incr && op.Value < 1:
			c.rep.add(KindIncrOutOfRange, c.key, "%s returned %d, but an increment yields at least 1", describeCounter(op), op.Value)
		case op.Kind == Incr && op.Value > int64(invoked):
			c.rep.add(KindIncrOutOfRange, c.key, "%s returned %d, but only %d increments (OK or unknown) were invoked before it returned",
				describeCounter(op), op.Value, invoked)
		case op.Kind == Read && op.Value < 0:
			c.rep.add(KindReadOutOfRange, c.key, "%s read %d, but the counter starts at 0 and only grows", describeCounter(op), op.Value)
		case op.Kind == Read && op.Value > int64(invoked):
			c.rep.add(KindReadOutOfRange, c.key, "%s read %d, but only %d increments (OK or unknown) were invoked before it returned",
				describeCounter(op), op.Value, invoked)
		}
	}
}

// checkDuplicates reports OK INCRs returning a value another already
// returned: each increment makes a new value, so one was applied twice or
// two were applied as one.
func (c *counterCheck) checkDuplicates() {
	first := map[int64]int{}
	for _, i := range c.valid {
		op := &c.ops[i]
		if op.Kind != Incr || outcomeOf(op.Outcome) != OK {
			continue
		}
		if j, ok := first[op.Value]; ok {
			c.rep.add(KindDuplicateIncrResult, c.key, "%s and %s both returned %d", describeCounter(&c.ops[j]), describeCounter(op), op.Value)
			continue
		}
		first[op.Value] = i
	}
}

// checkRealTime enforces: if OK op A returned before OK op B was invoked, B
// sees at least A's value (strictly more if B is an INCR), and at least as
// many increments as were acknowledged before B was invoked. A sweep over B
// in invocation order, admitting A's in return order, keeps the witnesses.
func (c *counterCheck) checkRealTime() {
	var timed []int
	for _, i := range c.valid {
		if op := &c.ops[i]; outcomeOf(op.Outcome) == OK && op.Return >= op.Call {
			timed = append(timed, i)
		}
	}
	byReturn := slices.Clone(timed)
	slices.SortStableFunc(byReturn, func(a, b int) int { return cmp.Compare(c.ops[a].Return, c.ops[b].Return) })
	byCall := timed
	slices.SortStableFunc(byCall, func(a, b int) int { return cmp.Compare(c.ops[a].Call, c.ops[b].Call) })
	maxW, lastIncr, incrsDone := -1, -1, 0
	next := 0
	for _, bi := range byCall {
		b := &c.ops[bi]
		for ; next < len(byReturn) && c.ops[byReturn[next]].Return < b.Call; next++ {
			ai := byReturn[next]
			if maxW < 0 || c.ops[ai].Value > c.ops[maxW].Value {
				maxW = ai
			}
			if c.ops[ai].Kind == Incr {
				incrsDone++
				lastIncr = ai
			}
		}
		// The least value B may return: an INCR adds its own increment.
		own := int64(0)
		if b.Kind == Incr {
			own = 1
		}
		switch {
		case maxW >= 0 && b.Value < c.ops[maxW].Value+own:
			c.rep.add(KindStaleRead, c.key, "%s returned %d, but %s returned %d before it was invoked",
				describeCounter(b), b.Value, describeCounter(&c.ops[maxW]), c.ops[maxW].Value)
		case incrsDone > 0 && b.Value < int64(incrsDone)+own:
			c.rep.add(KindStaleRead, c.key, "%s returned %d, but %d increments were acknowledged before it was invoked (the last: %s)",
				describeCounter(b), b.Value, incrsDone, describeCounter(&c.ops[lastIncr]))
		}
	}
}

// checkFinals bounds each node's final value by the acknowledged and the
// attempted increments, and compares nodes.
func (c *counterCheck) checkFinals() {
	if len(c.finalIdx) == 0 {
		return
	}
	ref := c.finalIdx[0]
	for _, i := range c.finalIdx {
		f := &c.finals[i]
		if f.Node < c.finals[ref].Node {
			ref = i
		}
		switch {
		case f.Value < int64(c.okIncrs):
			c.rep.add(KindLostIncrement, c.key, "final value %d on node %q is below the %d acknowledged increments", f.Value, f.Node, c.okIncrs)
		case c.maxSeen >= 0 && f.Value < c.ops[c.maxSeen].Value:
			c.rep.add(KindLostIncrement, c.key, "final value %d on node %q is below the value %d returned by %s",
				f.Value, f.Node, c.ops[c.maxSeen].Value, describeCounter(&c.ops[c.maxSeen]))
		case f.Value > int64(c.tryIncrs):
			c.rep.add(KindExtraIncrement, c.key, "final value %d on node %q is above the %d increments that may have taken effect (%d OK, %d unknown)",
				f.Value, f.Node, c.tryIncrs, c.okIncrs, c.tryIncrs-c.okIncrs)
		}
	}
	for _, i := range c.finalIdx {
		if f := &c.finals[i]; f.Value != c.finals[ref].Value {
			c.rep.add(KindDivergentFinal, c.key, "final value %d on node %q differs from %d on node %q",
				f.Value, f.Node, c.finals[ref].Value, c.finals[ref].Node)
		}
	}
}

func describeCounter(op *CounterOp) string {
	if outcomeOf(op.Outcome) == OK {
		return fmt.Sprintf("client %d %s -> %d [call %d, return %d]", op.Client, op.Kind, op.Value, op.Call, op.Return)
	}
	return fmt.Sprintf("client %d %s [call %d, return %d, %s]", op.Client, op.Kind, op.Call, op.Return, op.Outcome)
}
