package backend

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/raftproxy/raftproxy/fsm"
)

// Memory limits through the log. A stock redis with maxmemory refuses a
// write, or evicts keys, by its own used memory, which differs from node to
// node: nodes would diverge. So redis's own maxmemory stays 0 on every node
// (CONFIG SET maxmemory reaches redis as 0; the value the log set is kept
// here and in snapshots), and the limit is enforced through the log:
//
//   - The leader watches its redis's memory (proxy/memory.go). Over the
//     limit, it proposes the keys to evict, sampled on its redis by the
//     policy (maxmemory-policy reaches redis, so LFU counts are kept), or,
//     with noeviction or nothing left to evict, MemoryCommand OVER.
//   - While the log says OVER, every node answers the commands redis flags
//     denyoom with redis's -OOM error, at the same place in the log, until
//     the leader proposes UNDER.

// MemoryCommand is the log's own command that sets the memory state: OVER
// or UNDER. It never reaches redis.
const MemoryCommand = "RAFTPROXY.MEMORY"

// OOMError is redis's reply to a write refused for memory.
const OOMError = "OOM command not allowed when used memory > 'maxmemory'."

var (
	oomReply       = []byte("-" + OOMError + "\r\n")
	execAbortReply = []byte("-EXECABORT Transaction discarded because of previous errors.\r\n")
	okLocalReply   = []byte("+OK\r\n")
)

// memoryState is what the applied log says of memory. over is read by the
// proxy's goroutines too; max and policy mirror the replicated config.
type memoryState struct {
	over   atomic.Bool
	max    atomic.Int64
	policy atomic.Pointer[string]
	// denyOOM says whether a command is refused while over (redis's
	// denyoom flag); nil: none is.
	denyOOM func(args [][]byte) bool
}

// SetDenyOOM sets how the commands refused over the memory limit are told
// (before the node starts).
func (s *StateMachine) SetDenyOOM(f func(args [][]byte) bool) { s.mem.denyOOM = f }

// MemoryOver reports whether the applied log has the cluster over its
// memory limit: writes that need memory are refused.
func (s *StateMachine) MemoryOver() bool { return s.mem.over.Load() }

// MaxMemory is the maxmemory the log set (0: none) and the policy.
func (s *StateMachine) MaxMemory() (int64, string) {
	p := "noeviction"
	if v := s.mem.policy.Load(); v != nil {
		p = *v
	}
	return s.mem.max.Load(), p
}

// localReply is the reply of a command the state machine answers itself,
// at its place in the log, without redis; nil for a command redis runs.
func (s *StateMachine) localReply(c fsm.Command) []byte {
	if len(c.Tx) == 0 && len(c.Args) == 2 && bytes.EqualFold(c.Args[0], []byte(MemoryCommand)) {
		s.mem.over.Store(bytes.EqualFold(c.Args[1], []byte("over")))
		return okLocalReply
	}
	if !s.mem.over.Load() || s.mem.denyOOM == nil {
		return nil
	}
	if len(c.Tx) == 0 {
		if s.mem.denyOOM(c.Args) {
			return oomReply
		}
		return nil
	}
	for _, args := range c.Tx {
		if s.mem.denyOOM(args) {
			return execAbortReply
		}
	}
	return nil
}

// noteMemoryConfig mirrors the memory parameters of an applied CONFIG SET.
func (s *StateMachine) noteMemoryConfig(name, value string) {
	switch name {
	case "maxmemory":
		if n, err := ParseMemory(value); err == nil {
			s.mem.max.Store(int64(n))
		}
	case "maxmemory-policy":
		v := strings.ToLower(value)
		s.mem.policy.Store(&v)
	}
}

// redisMaxMemory is the value a CONFIG SET of maxmemory gives redis itself.
var redisMaxMemory = []byte("0")

// configForRedis returns a CONFIG SET with maxmemory's value replaced by 0
// (see the top of this file); other commands are returned as they are.
func configForRedis(args [][]byte) [][]byte {
	if !isConfigSet(args) {
		return args
	}
	var out [][]byte
	for i := 2; i+1 < len(args); i += 2 {
		if bytes.EqualFold(args[i], []byte("maxmemory")) {
			if out == nil {
				out = append([][]byte(nil), args...)
			}
			out[i+1] = redisMaxMemory
		}
	}
	if out == nil {
		return args
	}
	return out
}

// ParseMemory parses a memory amount as redis's configuration does: a
// number with an optional unit b, k (1000), kb (1024), m, mb, g or gb, in
// any case.
func ParseMemory(v string) (uint64, error) {
	i := 0
	for i < len(v) && v[i] >= '0' && v[i] <= '9' {
		i++
	}
	mul := uint64(1)
	switch strings.ToLower(v[i:]) {
	case "", "b":
	case "k":
		mul = 1000
	case "kb":
		mul = 1024
	case "m":
		mul = 1000 * 1000
	case "mb":
		mul = 1024 * 1024
	case "g":
		mul = 1000 * 1000 * 1000
	case "gb":
		mul = 1024 * 1024 * 1024
	default:
		return 0, fmt.Errorf("bad memory unit in %q", v)
	}
	if i == 0 {
		return 0, fmt.Errorf("no number in %q", v)
	}
	n, err := strconv.ParseUint(v[:i], 10, 64)
	if err != nil || n > ^uint64(0)/mul {
		return 0, fmt.Errorf("memory value %q out of range", v)
	}
	return n * mul, nil
}
