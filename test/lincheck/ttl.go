package lincheck

import (
	"fmt"
	"hash/fnv"
	"math"
	"strconv"
	"sync"

	"github.com/anishathalye/porcupine"
)

// Keys with deadlines. A TTL operation carries the wall-clock times
// (milliseconds) of its call and return, and deadlines are absolute, so the
// model knows when each key expires: a key with deadline D is alive at
// time t when t <= D (redis's "now > when" expires it). An operation takes
// effect at one instant p between its call and return, later than the
// instant of every operation before it in the order porcupine tries: the
// model keeps the earliest such instant (t in TTLState), which leaves the
// most room to the operations after it, so choosing it is never wrong.
//
// It checks that the cluster expires keys by one clock, that of the
// client's machine (the leader's, on the same machine): no read sees a key
// alive after its deadline or gone before it, from any node.

// TTLKind is a TTL operation.
type TTLKind uint8

const (
	TTLGet      TTLKind = iota // GET key
	TTLSetAt                   // SET key value PXAT at
	TTLExpireAt                // PEXPIREAT key at: 1, or 0 for no live key
	TTLPersist                 // PERSIST key: 1, or 0 (no live key, or no deadline)
	TTLAppend                  // APPEND key value: the new length
	TTLGetExAt                 // GETEX key PXAT at: the value, nil for no live key
)

func (k TTLKind) String() string {
	return [...]string{"get", "set-pxat", "pexpireat", "persist", "append", "getex-pxat"}[k]
}

// TTLInput is a TTL operation's request and its span on the wall clock.
type TTLInput struct {
	Kind  TTLKind
	Key   string
	Value string
	At    int64 // the deadline, unix ms
	// CallMs and ReturnMs are the wall clock at call and return (ReturnMs
	// is math.MaxInt64 for an unknown outcome).
	CallMs, ReturnMs int64
}

// TTLOutput is what a TTL operation returned.
type TTLOutput struct {
	Value   string // GET and GETEX; "" for nil
	Int     int64  // PEXPIREAT, PERSIST, APPEND
	Unknown bool
}

// ttlState is one key at instant t: absent, or a value with a deadline
// (-1: none).
type ttlState struct {
	present  bool
	value    string
	deadline int64
	t        int64
}

func (s ttlState) alive(p int64) bool { return s.present && (s.deadline < 0 || p <= s.deadline) }

// expiredAt is the earliest instant in [lo, hi] at which the key is not
// alive, ok false if there is none.
func (s ttlState) expiredAt(lo, hi int64) (int64, bool) {
	if !s.present {
		return lo, true
	}
	if s.deadline < 0 {
		return 0, false
	}
	p := max(lo, s.deadline+1)
	return p, p <= hi
}

func ttlStep(state, input, output interface{}) (bool, interface{}) {
	s := state.(ttlState)
	in := input.(TTLInput)
	out := output.(TTLOutput)
	lo, hi := max(in.CallMs, s.t), in.ReturnMs
	if out.Unknown {
		hi = math.MaxInt64
	}
	if lo > hi {
		return false, s
	}
	gone := func(p int64) ttlState { return ttlState{t: p, deadline: -1} }
	switch in.Kind {
	case TTLSetAt:
		return true, ttlState{present: true, value: in.Value, deadline: in.At, t: lo}
	case TTLGet, TTLGetExAt:
		if out.Unknown {
			// A GETEX that may have run moved the deadline of a live key.
			if in.Kind == TTLGetExAt && s.alive(lo) {
				s.t, s.deadline = lo, in.At
			}
			return true, s
		}
		if out.Value != "" {
			if !s.alive(lo) || s.value != out.Value {
				return false, s
			}
			s.t = lo
			if in.Kind == TTLGetExAt {
				s.deadline = in.At
			}
			return true, s
		}
		p, ok := s.expiredAt(lo, hi)
		return ok, gone(p)
	case TTLExpireAt:
		if s.alive(lo) && (out.Unknown || out.Int == 1) {
			s.t, s.deadline = lo, in.At
			return true, s
		}
		if out.Unknown || out.Int == 0 {
			p, ok := s.expiredAt(lo, hi)
			return ok, gone(p)
		}
		return false, s
	case TTLPersist:
		if s.alive(lo) && s.deadline >= 0 && (out.Unknown || out.Int == 1) {
			s.t, s.deadline = lo, -1
			return true, s
		}
		if out.Int != 0 && !out.Unknown {
			return false, s
		}
		if s.alive(lo) && s.deadline < 0 {
			s.t = lo
			return true, s
		}
		p, ok := s.expiredAt(lo, hi)
		return ok, gone(p)
	case TTLAppend:
		if s.alive(lo) && (out.Unknown || out.Int == int64(len(s.value)+len(in.Value))) {
			s.t, s.value = lo, s.value+in.Value
			return true, s
		}
		if out.Unknown || out.Int == int64(len(in.Value)) {
			p, ok := s.expiredAt(lo, hi)
			return ok, ttlState{present: true, value: in.Value, deadline: -1, t: p}
		}
		return false, s
	}
	return false, s
}

// ttlSteps is ttlStep with every state an operation can lead to. ttlStep
// takes a live key as alive for an operation whose outcome is unknown, but
// such an operation may have reached the log late (held up by a partition,
// forwarded after a leader change) and run once its key had expired: an
// APPEND then made a new key, a PEXPIREAT or PERSIST found none.
func ttlSteps(state, input, output interface{}) []interface{} {
	var out []interface{}
	if ok, next := ttlStep(state, input, output); ok {
		out = append(out, next)
	}
	s := state.(ttlState)
	in := input.(TTLInput)
	if output.(TTLOutput).Unknown && s.present && s.deadline >= 0 {
		late := ttlState{deadline: -1, t: max(s.t, in.CallMs, s.deadline+1)}
		if ok, next := ttlStep(late, input, output); ok {
			out = append(out, next)
		}
	}
	return out
}

// TTLModel is the sequential specification of one key with a deadline.
var TTLModel = ttlModel.ToModel()

var ttlModel = porcupine.NondeterministicModel{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		var keys []string
		for _, op := range history {
			k := op.Input.(TTLInput).Key
			if _, ok := byKey[k]; !ok {
				keys = append(keys, k)
			}
			byKey[k] = append(byKey[k], op)
		}
		out := make([][]porcupine.Operation, 0, len(keys))
		for _, k := range keys {
			out = append(out, byKey[k])
		}
		return out
	},
	Init: func() []interface{} { return []interface{}{ttlState{deadline: -1}} },
	Step: ttlSteps,
	Hash: func(state interface{}) uint64 {
		s := state.(ttlState)
		h := fnv.New64a()
		fmt.Fprintf(h, "%v|%q|%d|%d", s.present, s.value, s.deadline, s.t)
		return h.Sum64()
	},
	Equal: func(a, b interface{}) bool { return a.(ttlState) == b.(ttlState) },
	DescribeOperation: func(input, output interface{}) string {
		in := input.(TTLInput)
		out := output.(TTLOutput)
		res := "?"
		switch {
		case out.Unknown:
		case in.Kind == TTLGet || in.Kind == TTLGetExAt:
			res = short(out.Value)
		default:
			res = strconv.FormatInt(out.Int, 10)
		}
		return fmt.Sprintf("%s(%s, %s, at=%d) [%d..%d] -> %s", in.Kind, in.Key, short(in.Value), in.At, in.CallMs, in.ReturnMs, res)
	},
	DescribeState: func(state interface{}) string {
		s := state.(ttlState)
		if !s.present {
			return fmt.Sprintf("absent @%d", s.t)
		}
		return fmt.Sprintf("%s until %d @%d", short(s.value), s.deadline, s.t)
	},
}

// TTLHistory collects TTL operations from concurrent clients, with
// History's rules: failed reads and definitely failed writes are dropped,
// writes of unknown outcome may take effect any time after their call.
type TTLHistory struct {
	mu      sync.Mutex
	ops     []porcupine.Operation
	dropped int
}

// Add records an operation that took from call to ret (porcupine's clock,
// nanoseconds since the workload's start) and ended with err.
func (h *TTLHistory) Add(client int, in TTLInput, out TTLOutput, call, ret int64, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	outcome := Classify(err)
	read := in.Kind == TTLGet
	if (read && outcome != OK) || outcome == Failed {
		h.dropped++
		return
	}
	if outcome == Unknown {
		ret = math.MaxInt64
		in.ReturnMs = math.MaxInt64
		out = TTLOutput{Unknown: true}
	}
	h.ops = append(h.ops, porcupine.Operation{ClientId: client, Input: in, Call: call, Output: out, Return: ret})
}

// Operations returns the recorded history.
func (h *TTLHistory) Operations() []porcupine.Operation {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]porcupine.Operation(nil), h.ops...)
}

// Dropped is how many operations were dropped.
func (h *TTLHistory) Dropped() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.dropped
}
