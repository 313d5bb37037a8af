package proxy

import (
	"bufio"
	"bytes"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/raftproxy/raftproxy/entry"
	"github.com/raftproxy/raftproxy/raftnode"
	"github.com/raftproxy/raftproxy/resp"
)

// Blocking commands (BLPOP and friends) wait at the proxy, never in the log:
// each attempt is proposed as a one-command transaction (MULTI; BLPOP ...;
// EXEC), which redis runs without blocking, so every node pops the same
// element or nothing. When an attempt finds nothing, the connection waits
// until this node applies a write to one of the keys, then proposes again,
// until the command's timeout. Ordering: on one node, the waiters of a key
// try in arrival order (only the first is woken by a write; whoever leaves
// the line wakes the next); across nodes, and against a newly arriving
// command, the first attempt in the log wins.

// blockingCommands are the blocking commands raftproxy serves, with where
// their timeout is: the last argument, or the first for the MPOP forms.
var blockingCommands = map[string]bool{
	"blpop": true, "brpop": true, "brpoplpush": true, "blmove": true, "bzpopmin": true, "bzpopmax": true,
	"blmpop": false, "bzmpop": false,
}

// blockCall is a blocking command waiting on the writer.
type blockCall struct {
	args [][]byte
	db   int
	keys [][]byte // the keys whose writes may let it succeed
	// timeout is how long it waits, from when the writer reaches it (as
	// redis counts from when it runs the command); 0: forever.
	timeout time.Duration
	// wait: the timeout was understood, so a nil reply may wait. When it
	// was not, redis's reply (its error) is the answer.
	wait bool
	// moves: BLMOVE or BRPOPLPUSH, whose destination may have the wrong
	// type (see block).
	moves bool
	// asking: the command came after ASKING, which each attempt carries.
	asking bool
	// reader: XREAD, which consumes nothing, so every write wakes it
	// rather than only the first in line (see waiter).
	reader bool
	// line: the waiters of a key that compete for the same data stand in
	// one line; XREADGROUP's are per group (see waiter).
	line string
	// resolve, when set, is proposed before the first attempt: XREAD's
	// "$" resolved through the log (streams.go).
	resolve *xreadResolve
	// attempt, when set, builds each attempt's command (XREADGROUP: a
	// fresh proposal time each time; waited: an earlier attempt found
	// nothing). Nil: args.
	attempt func(waited bool) [][]byte
	// fix, when set, gives a non-null reply redis's shape.
	fix  fixer
	done chan struct{} // closed when its reply is written
}

// startBlocking emits a blocking command. Until it completes, the reader
// dispatches nothing more (nextCommand): a blocked redis client runs none
// of its later commands either.
func (c *conn) startBlocking(sp *spec, args [][]byte) {
	if o := c.slotGate(sp, args); o != nil {
		c.emit(o)
		return
	}
	if _, refused := c.serving(args, false); refused != nil {
		c.emit(refused)
		return
	}
	b := &blockCall{args: args, db: c.db, done: make(chan struct{}), moves: sp.name == "blmove" || sp.name == "brpoplpush", asking: c.asked}
	if sp.name == "xread" || sp.name == "xreadgroup" {
		streamBlock(b, sp.name, args, c.client.resp3)
		c.blockEnd = b.done
		c.emit(&op{kind: opBlock, block: b, start: time.Now()})
		return
	}
	if len(sp.keySpecs) > 0 {
		// The first key spec is the keys popped from (BLMOVE's second is
		// its destination, whose writes cannot help).
		idx, _ := sp.keySpecs[0].keys(args, nil)
		for _, i := range idx {
			b.keys = append(b.keys, args[i])
		}
	}
	ti := len(args) - 1
	if !blockingCommands[sp.name] {
		ti = 1
	}
	if secs, err := strconv.ParseFloat(string(args[ti]), 64); err == nil && secs >= 0 && !math.IsInf(secs, 0) {
		b.wait = true
		// Beyond ~290 years a Duration overflows: that is forever.
		if secs > 0 && secs < 9e9 {
			b.timeout = max(time.Duration(secs*float64(time.Second)), 1)
		}
	}
	c.blockEnd = b.done
	c.emit(&op{kind: opBlock, block: b, start: time.Now()})
}

var (
	execOne         = []byte("*1\r\n")
	unblockedRe     = resp.AppendError(nil, "UNBLOCKED client unblocked via CLIENT UNBLOCK")
	wrongTypePrefix = []byte("-WRONGTYPE")
	timedOut2       = []byte("*-1\r\n")
	timedOut3       = []byte("_\r\n")
)

// isNullReply reports whether raw is a null in either protocol: what a
// blocking command answers, inside MULTI, when there is nothing to pop.
func isNullReply(raw []byte) bool {
	s := string(raw)
	return s == "*-1\r\n" || s == "$-1\r\n" || s == "_\r\n"
}

// block runs a blocking command on the writer goroutine, which holds
// outMu. It lets go of outMu while it waits, so that pub/sub messages (a
// RESP3 client may be subscribed) reach the client meanwhile, as in redis.
func (c *conn) block(w *bufio.Writer, o *op) {
	defer close(o.block.done)
	// The replies before this command are due now, not after the wait.
	c.w.Flush()
	c.outMu.Unlock()
	reply := c.blockWait(o)
	c.outMu.Lock()
	c.writePushes(false)
	o.write(w, reply)
}

// blockWait makes attempts through the log, waiting between them, and
// returns the reply (nil when the client is gone).
func (c *conn) blockWait(o *op) []byte {
	b := o.block
	wt := c.s.blocked.add(c.id, b.db, b.keys, b.line, b.reader)
	defer c.s.blocked.remove(wt)
	waited := false
	var expire <-chan time.Time
	if b.timeout > 0 {
		t := time.NewTimer(b.timeout)
		defer t.Stop()
		expire = t.C
	}
	// skip: the first attempt cannot find anything (XREAD with only "$"
	// IDs, just resolved), so the wait starts at once.
	skip := false
	if b.resolve != nil {
		n := c.s.cfg.Cluster.Node()
		if n == nil {
			return resp.AppendError(nil, errNoCluster)
		}
		raw, errRe := c.blockAttempt(n, b.db, b.resolve.eval, false, b.asking)
		if errRe != nil {
			return errRe
		}
		skip = b.resolve.apply(raw)
	}
	for {
		n := c.s.cfg.Cluster.Node()
		if n == nil {
			return resp.AppendError(nil, errNoCluster)
		}
		raw := []byte(nil)
		if skip {
			skip = false
			raw = timedOut2
		} else {
			args := b.args
			if b.attempt != nil {
				args = b.attempt(waited)
			}
			var errRe []byte
			if raw, errRe = c.blockAttempt(n, b.db, args, o.resp3, b.asking); errRe != nil {
				return errRe
			}
		}
		// A key that became another type while the client waited does not
		// end the wait in redis 7.0 (it serves blocked clients from lists
		// and sorted sets only): WRONGTYPE after a wait is another nothing.
		// Except for a move, whose WRONGTYPE may be its destination's,
		// which redis does answer.
		wrongType := waited && !b.moves && bytes.HasPrefix(raw, wrongTypePrefix)
		if !isNullReply(raw) && !wrongType {
			if b.fix != nil {
				return b.fix(raw)
			}
			return raw
		}
		// Redis answers a blocking command that timed out with a null
		// array, whatever the command (BLMOVE too, unlike inside MULTI).
		timedOut := timedOut2
		if o.resp3 {
			timedOut = timedOut3
		}
		if !b.wait {
			return timedOut
		}
		waited = true
		select {
		case <-wt.wake:
			continue
		case <-expire:
			return timedOut
		case asErr := <-wt.unblock:
			if asErr {
				return unblockedRe
			}
			return timedOut
		case <-c.gone:
			return nil
		case <-n.Done():
			return resp.AppendError(nil, errorText(raftnode.ErrStopped, false))
		}
	}
}

// blockAttempt proposes args as a one-command transaction and returns the
// command's own reply, or the error reply to end the wait with.
func (c *conn) blockAttempt(n Group, db int, args [][]byte, resp3, asking bool) (raw, errRe []byte) {
	req := entry.Request{DB: db, Op: entry.OpTx, Tx: [][][]byte{args}, RESP3: resp3, Asking: asking}
	fut := n.ProposeRequest(proposalContext(), req)
	if !c.await(fut.Done(), time.Now()) {
		return nil, resp.AppendError(nil, errorText(raftnode.ErrTimeout, false))
	}
	raw, err := fut.Result()
	if err != nil {
		return nil, resp.AppendError(nil, errorText(err, false))
	}
	if bytes.HasPrefix(raw, askPrefix) {
		return c.s.askReply(raw), nil // its key moved while it waited
	}
	if bytes.HasPrefix(raw, notServedPrefix) {
		return c.s.notServedReply(raw), nil // its slot left while it waited
	}
	// EXEC's reply is an array of the one reply.
	return bytes.TrimPrefix(raw, execOne), nil
}

// blockKey is a key in a database.
type blockKey struct {
	db  int
	key string
}

// waiter is one blocked connection. The waiters of a key stand in lines
// (line: "" for the pops, the group for XREADGROUP) and a write wakes the
// first of each line: they compete for the same data, and whoever leaves
// the head of a line wakes the next (remove). Readers (XREAD) compete for
// nothing: every write wakes them all.
type waiter struct {
	conn    uint64
	line    string
	reader  bool
	keys    []blockKey
	wake    chan struct{} // a write to a key it waits on was applied
	unblock chan bool     // CLIENT UNBLOCK: true for ERROR
}

// blockers are this node's blocked connections, in line per key.
type blockers struct {
	count  atomic.Int64 // registered waiters: applied writes cost nothing without
	mu     sync.Mutex
	queues map[blockKey][]*waiter
	byConn map[uint64]*waiter
}

func newBlockers() *blockers {
	return &blockers{queues: map[blockKey][]*waiter{}, byConn: map[uint64]*waiter{}}
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// add puts a connection at the end of the line of each of its keys. It
// is registered before its first attempt, so no write after that attempt
// goes unnoticed.
func (bs *blockers) add(conn uint64, db int, keys [][]byte, line string, reader bool) *waiter {
	w := &waiter{conn: conn, line: line, reader: reader, wake: make(chan struct{}, 1), unblock: make(chan bool, 1)}
	seen := map[string]bool{}
	for _, k := range keys {
		if seen[string(k)] {
			continue
		}
		seen[string(k)] = true
		w.keys = append(w.keys, blockKey{db, string(k)})
	}
	bs.mu.Lock()
	for _, k := range w.keys {
		bs.queues[k] = append(bs.queues[k], w)
	}
	bs.byConn[conn] = w
	bs.mu.Unlock()
	bs.count.Add(1)
	return w
}

// remove takes w out of every line. Where it was first, the next in line
// is woken: w may have consumed a write meant for the line (it got an
// element, and more may be left; or it left after being woken).
func (bs *blockers) remove(w *waiter) {
	bs.mu.Lock()
	for _, k := range w.keys {
		q := bs.queues[k]
		for i, x := range q {
			if x != w {
				continue
			}
			q = append(q[:i:i], q[i+1:]...)
			if !w.reader && headOfLine(q[:i], w.line) {
				// The next of its line is the new head.
				for _, x := range q[i:] {
					if !x.reader && x.line == w.line {
						signal(x.wake)
						break
					}
				}
			}
			break
		}
		if len(q) == 0 {
			delete(bs.queues, k)
		} else {
			bs.queues[k] = q
		}
	}
	if bs.byConn[w.conn] == w {
		delete(bs.byConn, w.conn)
	}
	bs.mu.Unlock()
	bs.count.Add(-1)
}

// written wakes the first waiter of each key written; all: of every key.
func (bs *blockers) written(db int, keys [][]byte, all bool) {
	bs.mu.Lock()
	defer bs.mu.Unlock()
	if all {
		for _, q := range bs.queues {
			wakeHeads(q)
		}
		return
	}
	for _, k := range keys {
		wakeHeads(bs.queues[blockKey{db, string(k)}])
	}
}

// wakeHeads wakes the first waiter of each line of q, and every reader.
func wakeHeads(q []*waiter) {
	var seen map[string]bool
	for _, w := range q {
		if w.reader {
			signal(w.wake)
			continue
		}
		if seen[w.line] {
			continue
		}
		if seen == nil {
			seen = map[string]bool{}
		}
		seen[w.line] = true
		signal(w.wake)
	}
}

// headOfLine reports whether no waiter of line stands in before.
func headOfLine(before []*waiter, line string) bool {
	for _, x := range before {
		if !x.reader && x.line == line {
			return false
		}
	}
	return true
}

// isBlocked reports whether connection id waits here (CLIENT LIST's b).
func (bs *blockers) isBlocked(id uint64) bool {
	if bs == nil {
		return false
	}
	bs.mu.Lock()
	defer bs.mu.Unlock()
	return bs.byConn[id] != nil
}

// unblockConn is CLIENT UNBLOCK: it reports whether connection id was
// blocked here.
func (bs *blockers) unblockConn(id uint64, asErr bool) bool {
	if bs == nil { // a Server made without New (unit tests)
		return false
	}
	bs.mu.Lock()
	w := bs.byConn[id]
	bs.mu.Unlock()
	if w == nil {
		return false
	}
	select {
	case w.unblock <- asErr:
	default:
	}
	return true
}

// wakeBlocked retries the blocked commands a write may satisfy.
func (s *Server) wakeBlocked(db int, args [][]byte, null bool) {
	if s.blocked == nil || s.blocked.count.Load() == 0 {
		return
	}
	if args == nil {
		s.blocked.written(0, nil, true)
		return
	}
	var keys [][]byte
	var all bool
	if quietStreamScript(args, null) {
		return
	}
	if sp, _ := s.table.lookup(args); sp != nil && sp.blocking {
		if null {
			// An attempt that found nothing wrote nothing; waking on it
			// would make waiters (BLMOVE a a; BLMOVE a b with BLMOVE b a)
			// propose each other's attempts forever.
			return
		}
		// What it popped cannot help a waiter; what it pushed (BLMOVE's
		// destination) can.
		keys = blockingDestinations(sp, args)
	} else {
		keys, all = s.table.writtenKeys(args)
	}
	if !all && len(keys) == 0 {
		return
	}
	s.blocked.written(db, keys, all)
}

// blockingDestinations are the keys a blocking command pushes to (all but
// its first key spec's).
func blockingDestinations(sp *spec, args [][]byte) [][]byte {
	var keys [][]byte
	for i, ks := range sp.keySpecs {
		if i == 0 || !ks.write {
			continue
		}
		idx, _ := ks.keys(args, nil)
		for _, p := range idx {
			keys = append(keys, args[p])
		}
	}
	return keys
}
