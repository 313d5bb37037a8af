package chaoscheck

import (
	"cmp"
	"fmt"
	"hash/fnv"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/anishathalye/porcupine"
)

// AppendOp is one list-append transaction as a client saw it:
//
//	MULTI; RPUSH Key Value; LRANGE Key 0 -1; EXEC
//
// Call and Return are nanoseconds from one monotonic clock shared by all
// clients.
type AppendOp struct {
	Client  int
	Key     string
	Value   int64 // unique per key across the whole history
	Call    int64
	Return  int64
	Outcome Outcome
	Read    []int64 // the LRANGE result; only looked at when Outcome is OK
}

// FinalRead is one node's LRANGE Key 0 -1, taken after the cluster healed.
// Every node is read for every key, so that a node that lost or reordered
// writes cannot hide behind a healthy leader.
type FinalRead struct {
	Node string
	Key  string
	List []int64
}

// CheckListAppend checks a list-append history and the final reads for the
// anomalies named by the Kind constants. It runs in O(n log n) in the number
// of operations plus time linear in the total length of the reads, which
// matters because fault-injection runs record hundreds of thousands of
// operations.
//
// The key observation (as in Jepsen's Elle) is that a list only grows at its
// end, so all reads of a key must be prefixes of its longest read. Once that
// holds, "does read B include everything read A saw" is a comparison of
// lengths, and the real-time rule can be checked with one sweep. Reads that
// are not such a prefix are reported as incompatible-order and then checked
// exactly where that stays cheap and on a best-effort basis otherwise, since
// the history is already known to be invalid.
func CheckListAppend(ops []AppendOp, finals []FinalRead) Result {
	var rep reporter
	stats := Stats{Ops: len(ops), Finals: len(finals)}
	byKey := map[string]*appendCheck{}
	forKey := func(key string) *appendCheck {
		c := byKey[key]
		if c == nil {
			c = &appendCheck{key: key, ops: ops, finals: finals, rep: &rep}
			byKey[key] = c
		}
		return c
	}
	for i := range ops {
		switch outcomeOf(ops[i].Outcome) {
		case OK:
			stats.OK++
		case Failed:
			stats.Failed++
		default:
			stats.Unknown++
		}
		c := forKey(ops[i].Key)
		c.opIdx = append(c.opIdx, i)
	}
	for i := range finals {
		c := forKey(finals[i].Key)
		c.finalIdx = append(c.finalIdx, i)
	}
	stats.Keys = len(byKey)
	for _, key := range sortedKeys(byKey) {
		c := byKey[key]
		c.run()
		stats.MaxListLen = max(stats.MaxListLen, len(c.longest))
	}
	return rep.result("list-append", stats)
}

// outcomeOf maps an undefined outcome to Unknown, the weakest claim, so that
// a recorder bug cannot make a correct system look broken.
func outcomeOf(o Outcome) Outcome {
	if o.known() {
		return o
	}
	return Unknown
}

// appendCheck checks one key.
type appendCheck struct {
	key      string
	ops      []AppendOp  // the whole history
	finals   []FinalRead // all final reads
	opIdx    []int       // this key's operations
	finalIdx []int       // this key's final reads
	rep      *reporter

	writers  map[int64]writer // value -> who appended it
	reads    []listRead       // OK ops' reads, then final reads
	ref      int              // index in reads of the longest read
	longest  []int64
	firstPos map[int64]int // value -> index of its first occurrence in longest
}

// writer summarises the appends of one value. There is normally exactly one;
// more is a malformed history, and then the value counts as appended if any
// appender may have taken effect.
type writer struct {
	op        int   // first op appending the value
	effective bool  // some appender did not definitely fail
	minCall   int64 // earliest invocation among the effective appenders
}

// listRead is one observed list: an OK op's read or a final read.
type listRead struct {
	op    int // index into ops, or -1 for a final read
	final int // index into finals, or -1
	list  []int64
	p     int // length of the common prefix with the key's longest read
}

// onChain reports whether the read is a prefix of the key's longest read.
func (r *listRead) onChain() bool { return r.p == len(r.list) }

func (c *appendCheck) run() {
	c.collect()
	c.chooseLongest()
	c.checkOrder()
	c.checkElements()
	c.checkFuture()
	c.checkOwnWrites()
	c.checkRealTime()
	c.checkFinals()
}

// collect validates the operations, indexes the appended values and gathers
// the reads.
func (c *appendCheck) collect() {
	c.writers = make(map[int64]writer, len(c.opIdx))
	for _, i := range c.opIdx {
		op := &c.ops[i]
		if !op.Outcome.known() {
			c.rep.add(KindMalformed, c.key, "%s has an undefined outcome; treated as unknown", describeAppend(op))
		}
		if op.Return < op.Call {
			c.rep.add(KindMalformed, c.key, "%s returned before it was invoked; left out of real-time checks", describeAppend(op))
		}
		w, seen := c.writers[op.Value]
		if seen {
			c.rep.add(KindMalformed, c.key, "value %d is appended by both %s and %s; values must be unique per key",
				op.Value, describeAppend(&c.ops[w.op]), describeAppend(op))
		} else {
			w = writer{op: i}
		}
		outcome := outcomeOf(op.Outcome)
		if outcome != Failed {
			if !w.effective || op.Call < w.minCall {
				w.minCall = op.Call
			}
			w.effective = true
		}
		c.writers[op.Value] = w
		if outcome == OK {
			c.reads = append(c.reads, listRead{op: i, final: -1, list: op.Read})
		}
	}
	for _, i := range c.finalIdx {
		c.reads = append(c.reads, listRead{op: -1, final: i, list: c.finals[i].List})
	}
}

// chooseLongest picks the reference read. Among reads of equal length a
// final read is preferred, since it is the settled state of the cluster.
func (c *appendCheck) chooseLongest() {
	c.ref = -1
	for i := range c.reads {
		r := &c.reads[i]
		if c.ref < 0 || len(r.list) > len(c.longest) ||
			(len(r.list) == len(c.longest) && r.final >= 0 && c.reads[c.ref].final < 0) {
			c.ref = i
			c.longest = r.list
		}
	}
	c.firstPos = make(map[int64]int, len(c.longest))
	for i, v := range c.longest {
		if _, ok := c.firstPos[v]; !ok {
			c.firstPos[v] = i
		}
	}
	for i := range c.reads {
		c.reads[i].p = lcp(c.reads[i].list, c.longest)
	}
}

// checkOrder reports reads that are not prefixes of the longest read. If
// every read is such a prefix, all reads are prefixes of one another, so this
// finds an incompatible pair whenever one exists.
func (c *appendCheck) checkOrder() {
	for i := range c.reads {
		r := &c.reads[i]
		if r.onChain() {
			continue
		}
		c.rep.add(KindIncompatibleOrder, c.key, "%s is not a prefix of the longest read, %s: they differ at index %d (%s vs %s)",
			c.describeRead(r), c.describeRead(&c.reads[c.ref]), r.p, elemAt(r.list, r.p), elemAt(c.longest, r.p))
	}
}

// checkElements finds duplicated and phantom values. Reads are visited from
// shortest to longest and a multiset of the current read is updated by the
// part that differs from the previous one, so when the reads form a chain of
// prefixes each element of the longest read is looked at once. Each value is
// reported once per key, at the shortest read showing the problem.
func (c *appendCheck) checkElements() {
	order := make([]int, len(c.reads))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(len(c.reads[a].list), len(c.reads[b].list)) })
	counts := map[int64]int{}
	dupReported := map[int64]bool{}
	phantomReported := map[int64]bool{}
	var prev []int64
	for _, ri := range order {
		r := &c.reads[ri]
		cur := r.list
		p := lcp(prev, cur)
		for _, v := range prev[p:] {
			if counts[v]--; counts[v] <= 0 {
				delete(counts, v)
			}
		}
		for j := p; j < len(cur); j++ {
			v := cur[j]
			counts[v]++
			if counts[v] > 1 && !dupReported[v] {
				dupReported[v] = true
				c.rep.add(KindDuplicate, c.key, "value %d appears at index %d and again at index %d of %s",
					v, slices.Index(cur[:j], v), j, c.describeRead(r))
			}
			if w, ok := c.writers[v]; (!ok || !w.effective) && !phantomReported[v] {
				phantomReported[v] = true
				if ok {
					c.rep.add(KindPhantom, c.key, "%s contains value %d, whose only append %s failed",
						c.describeRead(r), v, describeAppend(&c.ops[w.op]))
				} else {
					c.rep.add(KindPhantom, c.key, "%s contains value %d, which no operation appended", c.describeRead(r), v)
				}
			}
		}
		prev = cur
	}
}

// checkFuture finds op reads holding a value whose append was invoked only
// after the read returned: at the time of the read no operation had appended
// it, so it is a phantom too. For reads on the chain a running maximum of the
// appenders' invocation times along the longest read answers in O(1).
func (c *appendCheck) checkFuture() {
	// latest[i] is the index j <= i of the longest read's element whose
	// appender was invoked last, or -1.
	latest := make([]int, len(c.longest))
	best := -1
	for i, v := range c.longest {
		if w, ok := c.writers[v]; ok && w.effective && (best < 0 || w.minCall > c.writers[c.longest[best]].minCall) {
			best = i
		}
		latest[i] = best
	}
	for i := range c.reads {
		r := &c.reads[i]
		if r.op < 0 || len(r.list) == 0 || !validTimes(&c.ops[r.op]) {
			continue
		}
		ret := c.ops[r.op].Return
		var (
			found bool
			v     int64
		)
		if r.onChain() {
			if j := latest[len(r.list)-1]; j >= 0 && c.writers[c.longest[j]].minCall > ret {
				found, v = true, c.longest[j]
			}
		} else {
			for _, x := range r.list {
				if w, ok := c.writers[x]; ok && w.effective && w.minCall > ret {
					found, v = true, x
					break
				}
			}
		}
		if found {
			c.rep.add(KindPhantom, c.key, "%s contains value %d, appended by %s, which was invoked after the read returned",
				c.describeRead(r), v, describeAppend(&c.ops[c.writers[v].op]))
		}
	}
}

// checkOwnWrites checks that each OK transaction read its own append last.
func (c *appendCheck) checkOwnWrites() {
	for i := range c.reads {
		r := &c.reads[i]
		if r.op < 0 {
			continue
		}
		op := &c.ops[r.op]
		if n := len(r.list); n > 0 && r.list[n-1] == op.Value {
			continue
		}
		where := "absent"
		if j := slices.Index(r.list, op.Value); j >= 0 {
			where = "at index " + strconv.Itoa(j) + ", not last"
		}
		c.rep.add(KindOwnWriteMissing, c.key, "%s: its own value is %s", c.describeRead(r), where)
	}
}

// checkRealTime enforces: if OK op A returned before OK op B was invoked, B's
// read contains A's value and has A's read as a prefix. B's obligations grow
// with time, so one sweep over B in invocation order, admitting the A's in
// return order, keeps just two witnesses: the A with the longest read and the
// A whose value sits furthest along the longest read. For reads on the chain
// these two decide every pair; off the chain they are a best effort.
func (c *appendCheck) checkRealTime() {
	var timed []int
	for i := range c.reads {
		if r := &c.reads[i]; r.op >= 0 && validTimes(&c.ops[r.op]) {
			timed = append(timed, i)
		}
	}
	byReturn := slices.Clone(timed)
	slices.SortStableFunc(byReturn, func(a, b int) int {
		return cmp.Compare(c.ops[c.reads[a].op].Return, c.ops[c.reads[b].op].Return)
	})
	byCall := timed
	slices.SortStableFunc(byCall, func(a, b int) int {
		return cmp.Compare(c.ops[c.reads[a].op].Call, c.ops[c.reads[b].op].Call)
	})
	lenW, posW, posWPos := -1, -1, -1
	next := 0
	for _, bi := range byCall {
		b := &c.reads[bi]
		bop := &c.ops[b.op]
		for ; next < len(byReturn) && c.ops[c.reads[byReturn[next]].op].Return < bop.Call; next++ {
			ai := byReturn[next]
			a := &c.reads[ai]
			if lenW < 0 || len(a.list) > len(c.reads[lenW].list) {
				lenW = ai
			}
			pos := math.MaxInt // a value missing from the longest read is in no read on the chain
			if q, ok := c.firstPos[c.ops[a.op].Value]; ok {
				pos = q
			}
			if posW < 0 || pos > posWPos {
				posW, posWPos = ai, pos
			}
		}
		if lenW >= 0 && !c.isPrefix(&c.reads[lenW], b) {
			a := &c.reads[lenW]
			at := lcp(a.list, b.list)
			c.rep.add(KindStaleRead, c.key, "%s does not extend %s, which returned before it was invoked; they differ at index %d (%s vs %s)",
				c.describeRead(b), c.describeRead(a), at, elemAt(b.list, at), elemAt(a.list, at))
			continue
		}
		if posW >= 0 {
			if v := c.ops[c.reads[posW].op].Value; !c.contains(b, v) {
				c.rep.add(KindStaleRead, c.key, "%s misses value %d of %s, which returned before it was invoked",
					c.describeRead(b), v, describeAppend(&c.ops[c.reads[posW].op]))
			}
		}
	}
}

// isPrefix reports whether a's list is a prefix of b's, in O(1) when both are
// on the chain.
func (c *appendCheck) isPrefix(a, b *listRead) bool {
	switch {
	case len(a.list) > len(b.list):
		return false
	case a.onChain() && b.onChain():
		return true
	case a.onChain():
		return len(a.list) <= b.p
	case b.onChain():
		return false // a would be a prefix of the longest read
	}
	return lcp(a.list, b.list) == len(a.list)
}

// contains reports whether r's list holds v, in O(1) when r is on the chain.
func (c *appendCheck) contains(r *listRead, v int64) bool {
	pos, ok := c.firstPos[v]
	if r.onChain() {
		return ok && pos < len(r.list)
	}
	if ok && pos < r.p {
		return true
	}
	return slices.Contains(r.list[r.p:], v)
}

// checkFinals reports OK appends missing from final reads and final reads
// that differ between nodes.
func (c *appendCheck) checkFinals() {
	var finals []*listRead
	tails := map[*listRead]map[int64]bool{} // off-chain part of off-chain finals, for O(1) lookups
	for i := range c.reads {
		r := &c.reads[i]
		if r.final < 0 {
			continue
		}
		finals = append(finals, r)
		if !r.onChain() {
			set := make(map[int64]bool, len(r.list)-r.p)
			for _, v := range r.list[r.p:] {
				set[v] = true
			}
			tails[r] = set
		}
	}
	if len(finals) == 0 {
		return
	}
	for _, i := range c.opIdx {
		op := &c.ops[i]
		if outcomeOf(op.Outcome) != OK {
			continue
		}
		var missing []string
		for _, f := range finals {
			pos, ok := c.firstPos[op.Value]
			in := ok && pos < f.p || tails[f][op.Value]
			if !in {
				missing = append(missing, strconv.Quote(c.finals[f.final].Node))
			}
		}
		if len(missing) > 0 {
			c.rep.add(KindLostAppend, c.key, "%s is missing from the final read on node %s", describeAppend(op), strings.Join(missing, ", "))
		}
	}
	ref := finals[0]
	for _, f := range finals[1:] {
		if c.finals[f.final].Node < c.finals[ref.final].Node {
			ref = f
		}
	}
	for _, f := range finals {
		if f == ref || slices.Equal(f.list, ref.list) {
			continue
		}
		at := lcp(f.list, ref.list)
		c.rep.add(KindDivergentFinal, c.key, "%s differs from %s at index %d (%s vs %s)",
			c.describeRead(f), c.describeRead(ref), at, elemAt(f.list, at), elemAt(ref.list, at))
	}
}

func (c *appendCheck) describeRead(r *listRead) string {
	if r.op >= 0 {
		return fmt.Sprintf("the read %s of %s", fmtList(r.list), describeAppend(&c.ops[r.op]))
	}
	return fmt.Sprintf("the final read %s on node %q", fmtList(r.list), c.finals[r.final].Node)
}

func describeAppend(op *AppendOp) string {
	return fmt.Sprintf("client %d append %d [call %d, return %d, %s]", op.Client, op.Value, op.Call, op.Return, op.Outcome)
}

// elemAt describes l[i] for a message; i may be past the end.
func elemAt(l []int64, i int) string {
	if i >= 0 && i < len(l) {
		return strconv.FormatInt(l[i], 10)
	}
	return "end"
}

func validTimes(op *AppendOp) bool { return op.Return >= op.Call }

// lcp returns the length of the longest common prefix of a and b. Reads that
// share a backing array (as a recorder may produce) compare in O(1).
func lcp(a, b []int64) int {
	n := min(len(a), len(b))
	if n > 0 && &a[0] == &b[0] {
		return n
	}
	for i := range n {
		if a[i] != b[i] {
			return i
		}
	}
	return n
}

// ListAppendInput is the porcupine input of a list-append operation.
type ListAppendInput struct {
	Key   string
	Value int64
}

// ListAppendOutput is the porcupine output of a list-append operation.
type ListAppendOutput struct {
	Read    []int64 // the list after the append
	Unknown bool    // the outcome is unknown: any read is accepted
}

// ListAppendModel is the sequential specification of the list-append
// workload for porcupine, partitioned by key. The state is one key's list,
// an []int64 that Step never modifies.
func ListAppendModel() porcupine.Model {
	return porcupine.Model{
		Partition: partitionListAppend,
		Init:      func() interface{} { return []int64(nil) },
		Step: func(state, input, output interface{}) (bool, interface{}) {
			list, _ := state.([]int64)
			in, ok := input.(ListAppendInput)
			if !ok {
				return false, state
			}
			out, ok := output.(ListAppendOutput)
			if !ok {
				return false, state
			}
			next := make([]int64, len(list)+1)
			copy(next, list)
			next[len(list)] = in.Value
			return out.Unknown || slices.Equal(out.Read, next), next
		},
		Equal: func(a, b interface{}) bool {
			x, _ := a.([]int64)
			y, _ := b.([]int64)
			return slices.Equal(x, y)
		},
		Hash: func(state interface{}) uint64 {
			list, _ := state.([]int64)
			h := fnv.New64a()
			var buf [8]byte
			for _, v := range list {
				for i := range buf {
					buf[i] = byte(uint64(v) >> (8 * i))
				}
				h.Write(buf[:])
			}
			return h.Sum64()
		},
		DescribeOperation: func(input, output interface{}) string {
			in, _ := input.(ListAppendInput)
			out, _ := output.(ListAppendOutput)
			res := "?"
			if !out.Unknown {
				res = fmtList(out.Read)
			}
			return fmt.Sprintf("append(%s, %d) -> %s", in.Key, in.Value, res)
		},
		DescribeState: func(state interface{}) string {
			list, _ := state.([]int64)
			return fmtList(list)
		},
	}
}

// partitionListAppend splits a history by key; keys are independent lists.
// Operations with a foreign input type get a partition of their own, where
// Step rejects them.
func partitionListAppend(history []porcupine.Operation) [][]porcupine.Operation {
	byKey := map[string][]porcupine.Operation{}
	var foreign []porcupine.Operation
	for _, op := range history {
		in, ok := op.Input.(ListAppendInput)
		if !ok {
			foreign = append(foreign, op)
			continue
		}
		byKey[in.Key] = append(byKey[in.Key], op)
	}
	out := make([][]porcupine.Operation, 0, len(byKey)+1)
	for _, k := range sortedKeys(byKey) {
		out = append(out, byKey[k])
	}
	if len(foreign) > 0 {
		out = append(out, foreign)
	}
	return out
}

// ListAppendOperations converts a list-append history for porcupine,
// following the conventions of etcd's robustness tests: a Failed operation
// did not take effect and is dropped; an Unknown one (or one with an
// undefined outcome) may have taken effect at any time after it was invoked,
// even after the client gave up, so its return is moved to the end of
// history and any output is accepted. It still appends its value at
// whatever point porcupine linearizes it. The reads are copied, so the result
// does not alias ops.
func ListAppendOperations(ops []AppendOp) []porcupine.Operation {
	out := make([]porcupine.Operation, 0, len(ops))
	for _, op := range ops {
		p := porcupine.Operation{
			ClientId: op.Client,
			Input:    ListAppendInput{Key: op.Key, Value: op.Value},
			Call:     op.Call,
		}
		switch outcomeOf(op.Outcome) {
		case Failed:
			continue
		case OK:
			p.Output = ListAppendOutput{Read: slices.Clone(op.Read)}
			p.Return = op.Return
		default:
			p.Output = ListAppendOutput{Unknown: true}
			p.Return = math.MaxInt64
		}
		out = append(out, p)
	}
	return out
}
