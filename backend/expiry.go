package backend

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/raftproxy/raftproxy/expiry"
	"github.com/raftproxy/raftproxy/fsm"
)

// Expiry by the log's time (package expiry): the state machine stores every
// deadline shifted, so redis never expires a key by its own clock, and
// decides expiry itself by each command's entry time:
//
//   - prepare rewrites each command before it is sent: deadlines it sets
//     are stored shifted (expiry.Rewrite), commands that show deadlines or
//     list keys run as scripts that judge by the entry's time, and user
//     scripts get the entry's time (their prelude takes it off ARGV);
//   - before a command that names keys of a database that may hold
//     deadlines, those of its keys that expired by then are deleted
//     (expiry.ExpireScript), the same on every node whenever it applies.

// volatileDBs records which databases may hold a key with a deadline. A
// database is marked before any command that could give one a deadline is
// sent, and cleared only when redis says it holds none (refreshVolatile), so
// a clear mark is never wrong: skipping the expiry work there changes
// nothing. Databases from 64 on always count as marked.
type volatileDBs struct{ bits atomic.Uint64 }

func (v *volatileDBs) may(db int) bool {
	return db < 0 || db >= 64 || v.bits.Load()&(1<<db) != 0
}

func (v *volatileDBs) any() bool { return v.bits.Load() != 0 }

func (v *volatileDBs) mark(db int) {
	if db >= 0 && db < 64 {
		v.bits.Or(1 << db)
	}
}

func (v *volatileDBs) markAll() { v.bits.Store(^uint64(0)) }

// Volatile reports whether database db may hold keys with a deadline: a
// read of its keys must check them against the read's time. It is safe to
// call from any goroutine.
func (s *StateMachine) Volatile(db int) bool { return s.vol.may(db) }

// applyKind is what prepare does with a command, by name.
type applyKind uint8

const (
	kindPlain    applyKind = iota
	kindDeadline           // sets a deadline: expiry.Rewrite, marks the database
	kindShow               // shows deadlines or lists keys: expiry.Script
	kindEval               // EVAL: the user's script gets the entry's time
	kindFcall              // FCALL: the function gets the entry's time
	kindFunction           // FUNCTION LOAD/RESTORE: libraries get the current prelude
	kindMoveDB             // COPY ... DB, MOVE, SWAPDB: deadlines change database
	kindFlush              // FLUSHALL, FLUSHDB: the watchdog expects their notice
	kindConfig             // CONFIG: maxmemory reaches redis as 0 (memory.go)
)

var applyKinds = map[string]applyKind{
	"set": kindDeadline, "setex": kindDeadline, "psetex": kindDeadline, "getex": kindDeadline,
	"expire": kindDeadline, "pexpire": kindDeadline, "expireat": kindDeadline, "pexpireat": kindDeadline,
	"restore": kindDeadline, "restore-asking": kindDeadline,
	"ttl": kindShow, "pttl": kindShow, "expiretime": kindShow, "pexpiretime": kindShow,
	"keys": kindShow, "scan": kindShow, "randomkey": kindShow,
	"eval": kindEval, "eval_ro": kindEval, "fcall": kindFcall, "fcall_ro": kindFcall,
	"function": kindFunction, "copy": kindMoveDB, "move": kindMoveDB, "swapdb": kindMoveDB,
	"flushall": kindFlush, "flushdb": kindFlush, "config": kindConfig,
}

// lowerName returns the command's name in lower case, without allocating
// for names that fit buf.
func lowerName(arg []byte, buf *[24]byte) []byte {
	if len(arg) > len(buf) {
		return bytes.ToLower(arg)
	}
	b := buf[:len(arg)]
	for i, c := range arg {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		b[i] = c
	}
	return b
}

// prepare returns the command to send for args, run in database db at the
// log's time now (see the top of this file). markDeadlines has marked the
// databases the command may give deadlines to.
func (s *StateMachine) prepare(db int, args [][]byte, now int64) [][]byte {
	if len(args) == 0 {
		return args
	}
	var buf [24]byte
	lname := lowerName(args[0], &buf)
	kind, ok := applyKinds[string(lname)]
	if !ok {
		return args
	}
	name := string(lname)
	switch kind {
	case kindDeadline:
		return expiry.Rewrite(name, args, now)
	case kindShow:
		script, keys, argv, ok := expiry.Script(name, args)
		if ok && (expiry.ShowsDeadline(name) || s.vol.may(db)) {
			return expiry.Eval(script, keys, argv, now)
		}
	case kindEval:
		if len(args) >= 3 {
			if body, ok := Unwrap(args[1]); ok {
				out := make([][]byte, 0, len(args)+1)
				out = append(out, args[0], WrapScript(body))
				out = append(out, args[2:]...)
				return append(out, strconv.AppendInt(nil, now, 10))
			}
		}
	case kindFcall:
		if len(args) >= 3 {
			return append(append(make([][]byte, 0, len(args)+1), args...), strconv.AppendInt(nil, now, 10))
		}
	case kindFunction:
		return rewrapFunction(args)
	case kindFlush:
		if w := s.wd.Load(); w != nil {
			w.flushes.Add(1)
		}
	case kindConfig:
		return configForRedis(args)
	}
	return args
}

// markDeadlines marks, before a batch is sent, every database its commands
// may give deadlines to. The script window (watchdog.go) is made before
// the batch is sent, and must cover every key an expiry script of the
// batch may delete: a command after one that gives a key a deadline, past
// that deadline by its entry's time, deletes the key through a script.
// (Marked only as each command was sent, the window missed such a key, the
// fence reported a foreign write, and a follower catching up after a
// partition, which applies seconds of entries in one batch, failed that
// batch on every try.) Marking a database early costs the batch's earlier
// commands an expiry script that finds no deadline to act on.
func (s *StateMachine) markDeadlines(cmds []fsm.Command) {
	mark := func(db int, args [][]byte) {
		if len(args) == 0 {
			return
		}
		var buf [24]byte
		lname := lowerName(args[0], &buf)
		kind, ok := applyKinds[string(lname)]
		if !ok {
			return
		}
		name := string(lname)
		switch kind {
		case kindDeadline:
			if expiry.SetsDeadline(name, args) {
				s.vol.mark(db)
			}
		case kindEval, kindFcall:
			// A script may give any database deadlines (it can SELECT);
			// redis is asked which did right after (refreshVolatile).
			s.vol.markAll()
			s.volAsk = true
		case kindMoveDB:
			s.noteMoveDB(db, name, args)
		}
	}
	for _, c := range cmds {
		mark(c.DB, c.Args)
		for _, args := range c.Tx {
			mark(c.DB, args)
		}
	}
}

// noteMoveDB marks the databases COPY ... DB n, MOVE and SWAPDB may move a
// key with a deadline to.
func (s *StateMachine) noteMoveDB(db int, name string, args [][]byte) {
	target := func(a []byte) {
		if n, err := strconv.Atoi(string(a)); err == nil && s.vol.may(db) {
			s.vol.mark(n)
		}
	}
	switch name {
	case "move":
		if len(args) == 3 {
			target(args[2])
		}
	case "copy":
		for i := 3; i+1 < len(args); i++ {
			if bytes.EqualFold(args[i], []byte("db")) {
				target(args[i+1])
			}
		}
	case "swapdb":
		if len(args) == 3 {
			a, errA := strconv.Atoi(string(args[1]))
			b, errB := strconv.Atoi(string(args[2]))
			if errA == nil && errB == nil && (s.vol.may(a) || s.vol.may(b)) {
				s.vol.mark(a)
				s.vol.mark(b)
			}
		}
	}
}

// rewrapFunction puts the current prelude on the libraries of FUNCTION LOAD
// and FUNCTION RESTORE, whatever prelude the log's entry carries (an entry
// proposed by an older version carries an older one).
func rewrapFunction(args [][]byte) [][]byte {
	if len(args) < 3 {
		return args
	}
	switch {
	case bytes.EqualFold(args[1], []byte("load")):
		code := args[len(args)-1]
		if body, ok := Unwrap(code); ok {
			out := append([][]byte(nil), args...)
			out[len(out)-1] = WrapLibrary(body)
			return out
		}
	case bytes.EqualFold(args[1], []byte("restore")):
		u, err := UnwrapFunctionPayload(args[2])
		if err != nil {
			return args
		}
		w, err := WrapFunctionPayload(u)
		if err != nil {
			return args
		}
		out := append([][]byte(nil), args...)
		out[2] = w
		return out
	}
	return args
}

// expireKeys is the command that deletes those of keys that expired at now,
// or nil when the database cannot hold deadlines or no key is named.
func (s *StateMachine) expireKeys(db int, keys [][]byte, now int64) [][]byte {
	if len(keys) == 0 || !s.vol.may(db) {
		return nil
	}
	return expiry.Eval(expiry.ExpireScript, keys, nil, now)
}

// commandKeys returns the keys c's commands name, for expireKeys.
func (s *StateMachine) commandKeys(c fsm.Command) [][]byte {
	if s.keys == nil {
		return nil
	}
	if len(c.Tx) == 0 {
		return s.keys(c.Args)
	}
	var keys [][]byte
	for _, args := range c.Tx {
		keys = append(keys, s.keys(args)...)
	}
	return keys
}

// refreshVolatile clears the marks of the databases redis says hold no key
// with a deadline. It runs between applies (and on the health check): at
// once after a script marked every database, else at most once a second.
func (s *StateMachine) refreshVolatile() error {
	if !s.vol.any() || (!s.volAsk && time.Since(s.volChecked) < time.Second) {
		return nil
	}
	s.volChecked, s.volAsk = time.Now(), false
	s.conn.SetDeadline(time.Now().Add(syncTimeout))
	defer s.conn.SetDeadline(time.Time{})
	v, err := s.conn.DoValue("INFO", "keyspace")
	if err != nil {
		return fmt.Errorf("INFO keyspace: %w", err)
	}
	holding := uint64(0)
	for _, line := range strings.Split(string(v.Str), "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok || !strings.HasPrefix(name, "db") {
			continue
		}
		n, err := strconv.Atoi(name[2:])
		if err != nil || n < 0 || n >= 64 {
			continue
		}
		for _, f := range strings.Split(rest, ",") {
			if e, ok := strings.CutPrefix(f, "expires="); ok && e != "0" {
				holding |= 1 << n
			}
		}
	}
	// Only what was marked before the INFO can be cleared: nothing ran
	// meanwhile, so redis's answer covers every mark.
	for {
		old := s.vol.bits.Load()
		if s.vol.bits.CompareAndSwap(old, old&holding) {
			return nil
		}
	}
}

// deadlinesFormat names how deadlines are stored, in the machine state:
// snapshots without it hold real deadlines and are converted on load.
const deadlinesFormat = "shifted-44"

// convertLegacy stores every deadline of a redis loaded from a snapshot of
// an older version Shift later, and puts the current prelude on its
// function libraries. It runs down the replication stream the snapshot was
// loaded by, so nothing expires by redis's clock before it is done.
func (s *StateMachine) convertLegacy(ctx context.Context) error {
	if s.st == nil {
		return fmt.Errorf("convert a snapshot's deadlines: redis is not held")
	}
	s.conn.SetDeadline(time.Now().Add(syncTimeout))
	defer s.conn.SetDeadline(time.Time{})
	v, err := s.conn.DoValue("CONFIG", "GET", "databases")
	if err != nil || len(v.Elems) != 2 {
		return fmt.Errorf("convert a snapshot's deadlines: CONFIG GET databases: %v", err)
	}
	dbs, err := strconv.Atoi(string(v.Elems[1].Str))
	if err != nil {
		return fmt.Errorf("convert a snapshot's deadlines: databases %q", v.Elems[1].Str)
	}
	for db := range dbs {
		if err := s.st.selectDB(db); err != nil {
			return err
		}
		if err := s.st.write([]byte("EVAL"), []byte(expiry.ShiftScript), []byte("0")); err != nil {
			return err
		}
	}
	payload, err := s.conn.DoValue("FUNCTION", "DUMP")
	if err != nil {
		return fmt.Errorf("convert a snapshot's functions: FUNCTION DUMP: %w", err)
	}
	if len(payload.Str) > 0 {
		u, err := UnwrapFunctionPayload(payload.Str)
		if err == nil {
			var w []byte
			if w, err = WrapFunctionPayload(u); err == nil {
				err = s.st.write([]byte("FUNCTION"), []byte("RESTORE"), w, []byte("REPLACE"))
			}
		}
		if err != nil {
			return fmt.Errorf("convert a snapshot's functions: %w", err)
		}
	}
	s.log.Info("converted a snapshot of an older version: deadlines are now kept by the log's time")
	return s.st.sync(syncTimeout)
}
