package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/raftproxy/raftproxy/backend"
	"github.com/raftproxy/raftproxy/entry"
	"github.com/raftproxy/raftproxy/expiry"
	"github.com/raftproxy/raftproxy/raftnode"
	"github.com/raftproxy/raftproxy/resp"
)

// Reads and key expiry. Redis never expires a key by its own clock (package
// expiry); a read decides by its read time, the leader's clock when it
// confirmed the read index (raftnode.ReadWait.TimeMs):
//
//   - TTL, PTTL, EXPIRETIME and PEXPIRETIME run as a script that answers by
//     the read time (what redis stores is shifted), and in a database that
//     may hold deadlines KEYS, SCAN and RANDOMKEY run as scripts that leave
//     out the keys expired by then (readArgs);
//   - in such a database, the keys a read names are checked first
//     (expireBeforeReads). A key found expired is deleted through the log
//     before the read runs, so that every later command, on any node,
//     agrees that it expired, even under a leader whose clock is behind.
//     A key seen alive needs nothing: no command could have seen it
//     expired yet.

// Volatile reports whether database db may hold keys with a deadline (the
// state machine's view, backend.StateMachine.Volatile).
type Volatile func(db int) bool

// volatile is cfg.Volatile, or true for every database without one.
func (s *Server) volatile(db int) bool {
	return s.cfg.Volatile == nil || s.cfg.Volatile(db)
}

// readArgs returns the command to run for a read of args in database db at
// read time now.
func (s *Server) readArgs(db int, args [][]byte, now int64) [][]byte {
	name, ok := scriptedRead(args[0])
	if !ok {
		return args
	}
	script, keys, argv, ok := expiry.Script(name, args)
	if !ok || !(expiry.ShowsDeadline(name) || s.volatile(db)) {
		return args
	}
	return expiry.Eval(script, keys, argv, now)
}

// readCheck is a read's keys to check: those of a database that may hold
// deadlines, at the read's time.
type readCheck struct {
	db   int
	keys [][]byte
	now  int64
}

// checkOf returns the check a read of args needs, ok false for none.
func (s *Server) checkOf(db int, args [][]byte, now int64) (readCheck, bool) {
	if !s.volatile(db) {
		return readCheck{}, false
	}
	keys := s.table.accessedKeys(args)
	if len(keys) == 0 {
		return readCheck{}, false
	}
	return readCheck{db: db, keys: keys, now: now}, true
}

// addCheck adds c to checks, merged into the check of the same database if
// there is one: a batch's reads are all pending while it runs, so checking
// every key at the latest of their times finds a key expired only if it
// expired before one of them answered, and one script per database costs
// redis far less than one per read.
func addCheck(checks []readCheck, c readCheck) []readCheck {
	for i := range checks {
		if checks[i].db == c.db {
			checks[i].keys = append(checks[i].keys, c.keys...)
			checks[i].now = max(checks[i].now, c.now)
			return checks
		}
	}
	// The keys are the command's own arguments: they are copied before
	// another read's keys are appended after them.
	c.keys = append(make([][]byte, 0, len(c.keys)+8), c.keys...)
	return append(checks, c)
}

// expiryRetries bounds how many times a batch of reads runs again after its
// expired keys were deleted: a key that keeps being made anew already
// expired (SET with a past deadline, over and over) fails the reads.
const expiryRetries = 3

var errExpiryChurn = errors.New("TRYAGAIN the keys read keep expiring before the read can run; retry")

// writeChecks writes the deadline check of each of checks to rc (not
// flushed); skips are the replies to discard before each (backend.Conn.Send).
func writeChecks(rc *backend.Conn, checks []readCheck) ([]int, error) {
	if len(checks) == 0 {
		return nil, nil
	}
	skips := make([]int, len(checks))
	for i, c := range checks {
		skip, err := rc.Send(c.db, rc.RESP3(), expiry.Eval(expiry.CheckScript, c.keys, nil, c.now))
		if err != nil {
			return nil, fmt.Errorf("check read keys' deadlines: %w", err)
		}
		skips[i] = skip
	}
	return skips, nil
}

// readChecks reads the replies of writeChecks and returns the keys found
// expired, by database and time.
func readChecks(rc *backend.Conn, checks []readCheck, skips []int) ([]readCheck, error) {
	var raw []byte
	var expired []readCheck
	for i, c := range checks {
		var err error
		if raw, err = rc.Receive(raw[:0], skips[i]); err != nil {
			return nil, fmt.Errorf("check read keys' deadlines: %w", err)
		}
		v, _, err := resp.Parse(raw)
		if err != nil || v.Kind == '-' {
			return nil, fmt.Errorf("check read keys' deadlines: redis answered %q", raw)
		}
		if len(v.Elems) > 0 {
			keys := make([][]byte, len(v.Elems))
			for j, e := range v.Elems {
				keys[j] = append([]byte(nil), e.Str...)
			}
			expired = append(expired, readCheck{db: c.db, keys: keys, now: c.now})
		}
	}
	return expired, nil
}

// expireBeforeReads checks the keys of checks on rc, in a round trip of its
// own, and has those that expired by their read's time deleted through the
// log before it returns. On an error, the reads must not run.
func (s *Server) expireBeforeReads(ctx context.Context, rc *backend.Conn, n Group, checks []readCheck) error {
	skips, err := writeChecks(rc, checks)
	if err != nil || len(checks) == 0 {
		return err
	}
	if err := rc.Flush(); err != nil {
		return fmt.Errorf("check read keys' deadlines: %w", err)
	}
	expired, err := readChecks(rc, checks, skips)
	if err != nil {
		return err
	}
	return s.expireThroughLog(ctx, n, expired)
}

// expireThroughLog deletes the keys of each check that expired by its time
// through the log, and waits until this node has applied the deletions.
func (s *Server) expireThroughLog(ctx context.Context, n Group, checks []readCheck) error {
	if len(checks) == 0 {
		return nil
	}
	futs := make([]*raftnode.Future, len(checks))
	for i, c := range checks {
		futs[i] = n.ProposeRequest(ctx, entry.Request{DB: c.db, Args: expiry.Eval(expiry.ExpireScript, c.keys, nil, c.now)})
	}
	for _, f := range futs {
		raw, err := f.Wait(ctx)
		if err == nil && len(raw) > 0 && raw[0] == ':' {
			if v, _, perr := resp.Parse(raw); perr == nil {
				s.metrics.expiredKeys.Add(float64(v.Int))
			}
		}
		if err != nil {
			return fmt.Errorf("delete expired keys through the log: %w", err)
		}
	}
	return nil
}

// scriptedReads are the reads expiry.Script stands in for.
var scriptedReads = []string{"ttl", "pttl", "expiretime", "pexpiretime", "keys", "scan", "randomkey"}

// scriptedRead returns the lower-case name of a read expiry.Script stands
// in for, without allocating for the others.
func scriptedRead(name []byte) (string, bool) {
	for _, n := range scriptedReads {
		if len(name) == len(n) && bytes.EqualFold(name, []byte(n)) {
			return n, true
		}
	}
	return "", false
}

// Active expiry. Redis deletes expired keys in the background, sampling keys
// with a deadline; here the leader does, by its clock, and proposes the
// deletion of what it finds, so every node deletes the same keys. It walks
// each database that may hold deadlines with SCAN, sampleCount keys a step,
// taking more steps at once while more than a quarter of what it sees has
// expired, for at most expireBudget every leaderPeriod (redis spends 25% of
// a core at most, with the same rule).
const (
	expireBudget = 25 * time.Millisecond
	sampleCount  = 200
)

// expirer is the leader's active expiry (see above). Once a sweep (a pass
// over every database that may hold deadlines) finds nothing expired, with
// nothing applied while it ran, nothing can expire before the soonest
// deadline it saw: the expirer rests until then, or until something is
// applied, so a leader of idle keys with deadlines wakes when one is due,
// not ten times a second (nor its redis-server, which can then be stopped:
// backend.Hibernation).
type expirer struct {
	s       *Server
	rc      *backend.Conn
	cursors map[int]string
	sweep   sweep
	rest    rest
}

// sweep is the expirer's pass over every database that may hold deadlines.
type sweep struct {
	since   quiet        // taken as it began: an entry applied later may add a deadline it misses
	ended   map[int]bool // databases whose pass ended in it; nil: none began
	expired bool         // it found expired keys
	soonest int64        // the soonest deadline not reached it saw (log time), -1 none
}

// rest is a clean sweep's conclusion: nothing to expire until until (zero:
// none seen) or until something is applied. The zero rest holds nothing.
type rest struct {
	since quiet
	until time.Time
}

// expiryTask is active expiry as leader work (leader.go).
func (s *Server) expiryTask() *leaderTask {
	e := &expirer{s: s, cursors: map[int]string{}}
	return &leaderTask{rc: &e.rc, idle: e.idle, wake: e.wake, round: func(n Group) error {
		err := e.round(n)
		if err != nil {
			s.log.Debug("active expiry round failed", "err", err)
		}
		return err
	}}
}

// idle says no database can hold a deadline, or the expirer rests, so a
// round has nothing to do.
func (e *expirer) idle(n Group) bool {
	for db := range e.s.databases {
		if e.s.volatile(db) {
			return e.resting(n)
		}
	}
	return true
}

// resting says a clean sweep holds on n: nothing was applied since it
// began and its soonest deadline is not due.
func (e *expirer) resting(n Group) bool {
	r := e.rest
	if !r.since.holds(n) || !r.until.IsZero() && !time.Now().Before(r.until) {
		e.rest = rest{}
		return false
	}
	return true
}

// wake is how long until a resting expirer's soonest deadline is due.
func (e *expirer) wake() time.Duration {
	if e.rest.until.IsZero() {
		return 0
	}
	return max(time.Until(e.rest.until), time.Millisecond)
}

// round takes the sampling steps of one period.
func (e *expirer) round(n Group) error {
	deadline := time.Now().Add(expireBudget)
	if e.sweep.ended == nil || e.sweep.since.node != n {
		e.sweep = sweep{since: quietOn(n), ended: map[int]bool{}, soonest: -1}
	}
	ended := true
	for db := range e.s.databases {
		if !e.s.volatile(db) {
			continue
		}
		for time.Now().Before(deadline) {
			more, err := e.step(n, db)
			if err != nil {
				return err
			}
			if !more {
				break
			}
		}
		ended = ended && e.sweep.ended[db]
	}
	if ended {
		e.endSweep(n)
	}
	return nil
}

// endSweep concludes a sweep that covered every database that may hold
// deadlines: clean (nothing expired, nothing applied), the expirer rests.
func (e *expirer) endSweep(n Group) {
	sw := e.sweep
	e.sweep = sweep{}
	if sw.expired || !sw.since.holds(n) {
		return
	}
	e.rest = rest{since: sw.since}
	if sw.soonest >= 0 {
		e.rest.until = time.Now().Add(time.Duration(sw.soonest-n.Now()+1) * time.Millisecond)
	}
}

// step samples database db once and proposes the deletion of what expired;
// more says another step should follow at once.
func (e *expirer) step(n Group, db int) (more bool, err error) {
	if e.rc == nil {
		if e.rc, err = e.s.dialRedis(n); err != nil {
			return false, err
		}
	}
	cursor := e.cursors[db]
	if cursor == "" {
		cursor = "0"
	}
	now := n.Now()
	e.rc.SetDeadline(time.Now().Add(5 * time.Second))
	raw, err := e.rc.DoIn(db, expiry.Eval(expiry.SampleScript, nil, [][]byte{[]byte(cursor), []byte(strconv.Itoa(sampleCount))}, now)...)
	if err != nil {
		return false, err
	}
	v, _, err := resp.Parse(raw)
	if err != nil {
		return false, err
	}
	if len(v.Elems) < 3 {
		return false, fmt.Errorf("expiry sample answered %v", v)
	}
	e.cursors[db] = string(v.Elems[0].Str)
	seen := v.Elems[1].Int
	if s := v.Elems[2].Int; s >= 0 && (e.sweep.soonest < 0 || s < e.sweep.soonest) {
		e.sweep.soonest = s
	}
	if e.cursors[db] == "0" {
		e.sweep.ended[db] = true
	}
	if len(v.Elems) > 3 {
		e.sweep.expired = true
		keys := make([][]byte, len(v.Elems)-3)
		for i, k := range v.Elems[3:] {
			keys[i] = append([]byte(nil), k.Str...)
		}
		ctx, cancel := context.WithTimeout(e.s.baseContext(), e.s.timeout())
		err := e.s.expireThroughLog(ctx, n, []readCheck{{db: db, keys: keys, now: now}})
		cancel()
		if err != nil {
			return false, err
		}
	}
	// A full pass ends the steps of this round for this database.
	return e.cursors[db] != "0" && int64(len(v.Elems)-3)*4 > seen, nil
}
