package backend

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/raftproxy/raftproxy/expiry"
	"github.com/raftproxy/raftproxy/fsm"
	"github.com/raftproxy/raftproxy/resp"
)

// StateMachine applies the log to the local redis over one pipelined
// connection. Redis's own persistence is not relied on: the raft log is the
// truth and redis is rebuilt from it whenever its content is in doubt.
type StateMachine struct {
	addr, password string
	// gate continues the redis when it is stopped for being idle, before
	// any connection uses it (hibernate.go); nil: it is never stopped.
	gate *Hibernation
	// redis's RDB directory and file name, learned when connecting.
	dir, dbfilename string
	log             *slog.Logger
	conn            *Conn
	runID           atomic.Pointer[string]
	kinds           []pendingReply
	locals          [][]byte // the replies of replyLocal, in order
	replies         [][]byte // a batch's replies for its clients, in order
	raw             []byte
	// scripts is the script registry the applied log builds (scripts.go).
	scripts *Scripts
	// config is what CONFIG SET through the log set (config.go); mem the
	// memory limit's state (memory.go).
	config replicatedConfig
	mem    memoryState

	// st is the replication link a snapshot was loaded by (repllink.go),
	// from Reset until RestoreMachineState: redis stays a replica meanwhile,
	// so an older snapshot's deadlines can be converted before redis
	// could expire anything by its clock.
	st *replLink
	// stHold keeps the gate held while st lives: the link is redis's own
	// connection, which the gate does not see, and what goes down it (a
	// snapshot's conversion) may take longer than the idle time.
	stHold func()
	// keys names the keys a command reads or writes, for expiry by the
	// log's time (expiry.go); nil: none are known.
	keys func(args [][]byte) [][]byte
	// vol is which databases may hold deadlines, volChecked when redis was
	// last asked (expiry.go).
	vol        volatileDBs
	volChecked time.Time
	volAsk     bool // a script marked every database: ask redis now
	// wd watches redis for writes by other clients (watchdog.go);
	// onTaint is called when it finds one.
	wd      atomic.Pointer[watchdog]
	onTaint func()
	// busyMs is redis's busy-reply-threshold in milliseconds (kill.go).
	busyMs atomic.Int64
	// defaultPass is the clients' default user's initial password (acl.go).
	defaultPass string
	// live is what Interrupt closes: the connections an Apply may be
	// blocked on, as of its start.
	liveMu      sync.Mutex
	live        []net.Conn
	interrupted bool
}

// NewStateMachine returns a state machine for the redis at addr.
func NewStateMachine(addr string, log *slog.Logger) *StateMachine {
	s := &StateMachine{addr: addr, log: log, scripts: NewScripts()}
	s.busyMs.Store(5000) // redis's default, until the first connection says
	return s
}

// SetKeys sets how the keys of a command are found (before the node
// starts): those of them that expired by the log's time are deleted before
// the command runs (expiry.go).
func (s *StateMachine) SetKeys(f func(args [][]byte) [][]byte) { s.keys = f }

// SetPassword sets the requirepass of the redis (before the node starts):
// every connection the state machine opens gives it with AUTH.
func (s *StateMachine) SetPassword(password string) { s.password = password }

// SetGate has every connection to redis go through gate (before the node
// starts): a redis-server raftproxy supervises may be stopped while idle.
func (s *StateMachine) SetGate(gate *Hibernation) { s.gate = gate }

// Scripts is the registry of scripts loaded through the log, for the proxy
// to turn EVALSHA into EVAL.
func (s *StateMachine) Scripts() *Scripts { return s.scripts }

// RunID is the run_id of the redis the state machine was last rebuilt into;
// a client connection that finds another run_id must not read from it.
func (s *StateMachine) RunID() string {
	if p := s.runID.Load(); p != nil {
		return *p
	}
	return ""
}

var (
	errNotConnected = errors.New("not connected to redis")
	errInterrupted  = errors.New("the node is stopping")
)

// track records the connections Apply may block on, for Interrupt; it
// reports false once interrupted.
func (s *StateMachine) track() bool {
	s.liveMu.Lock()
	defer s.liveMu.Unlock()
	s.live = s.live[:0]
	if s.conn != nil {
		s.live = append(s.live, s.conn.nc)
	}
	if s.st != nil {
		s.live = append(s.live, s.st.nc)
	}
	return !s.interrupted
}

// Interrupt implements fsm.Interrupter: it ends an Apply blocked on
// redis (a script may run for ever), for a node that stops. The state
// machine is unusable afterwards.
func (s *StateMachine) Interrupt() {
	s.liveMu.Lock()
	defer s.liveMu.Unlock()
	s.interrupted = true
	for _, c := range s.live {
		c.Close()
	}
}

// Apply implements fsm.StateMachine: it writes all commands, then reads
// all replies, so a batch costs one round trip to redis.
func (s *StateMachine) Apply(cmds []fsm.Command) error {
	if s.conn == nil {
		return errNotConnected
	}
	if !s.track() {
		return errInterrupted
	}
	err := s.release()
	if err == nil {
		err = s.ensureWatchdog()
	}
	if err == nil {
		err = s.apply(cmds)
	}
	if err == nil {
		err = s.refreshVolatile()
	}
	if err != nil {
		s.dropConn()
		return err
	}
	return nil
}

// release ends the replication link of a snapshot's load: redis becomes a
// master again, keeping its data.
func (s *StateMachine) release() error {
	if s.st == nil {
		return nil
	}
	s.conn.SetDeadline(time.Now().Add(syncTimeout))
	defer s.conn.SetDeadline(time.Time{})
	st := s.st
	s.st = nil
	defer s.releaseHold()
	return releaseRedis(s.conn, st)
}

// releaseHold lets the gate stop redis again once the link is over.
func (s *StateMachine) releaseHold() {
	if s.stHold != nil {
		s.stHold()
		s.stHold = nil
	}
}

// dropConn closes the apply connection and any replication link: what
// redis holds is unknown until the next Reset.
func (s *StateMachine) dropConn() {
	s.stopWatchdog()
	if s.st != nil {
		s.st.close()
		s.st = nil
	}
	s.releaseHold()
	if s.conn != nil {
		s.conn.Close()
		s.conn = nil
	}
}

// Replies the state machine reads back from redis, in order.
type replyKind uint8

const (
	replyExpire  replyKind = iota // expiry.ExpireScript's count of deleted keys
	replyQueued                   // MULTI's +OK or a +QUEUED: the answer comes with EXEC
	replyCommand                  // a command's (or EXEC's) reply, for its client
	replyLocal                    // a reply the state machine made (memory.go), for its client
)

// pendingReply is a reply to read back: its kind, and how many replies of
// database and protocol switches come before it (backend.Conn.Send).
type pendingReply struct {
	kind replyKind
	skip uint8
}

var (
	cmdMulti = [][]byte{[]byte("MULTI")}
	cmdExec  = [][]byte{[]byte("EXEC")}
)

func (s *StateMachine) apply(cmds []fsm.Command) error {
	s.kinds = s.kinds[:0]
	// Redis tells the watchdog of a script's writes as of another client's:
	// the window must be open before any command can reach redis.
	s.markDeadlines(cmds)
	wd := s.wd.Load()
	var win *window
	if wd != nil {
		win = s.scriptWindow(cmds)
	}
	if win != nil {
		wd.open(win)
	}
	s.locals = s.locals[:0]
	for _, c := range cmds {
		if local := s.localReply(c); local != nil {
			s.kinds = append(s.kinds, pendingReply{kind: replyLocal})
			s.locals = append(s.locals, local)
			continue
		}
		if x := s.expireKeys(c.DB, s.commandKeysIf(c), c.TimeMs); x != nil {
			if err := s.send(c, x, replyExpire); err != nil {
				return fmt.Errorf("write to redis: %w", err)
			}
		}
		if err := s.write(c); err != nil {
			return fmt.Errorf("write to redis: %w", err)
		}
	}
	if err := s.conn.Flush(); err != nil {
		return fmt.Errorf("write to redis: %w", err)
	}
	// No deadline: a command may legitimately run long (a big DEL); a dead
	// redis closes the connection, and Healthy probes a hung one.
	s.replies = s.replies[:0]
	fence := win != nil
	i, local := 0, 0
	for _, k := range s.kinds {
		var err error
		if k.kind == replyLocal {
			s.raw = append(s.raw[:0], s.locals[local]...)
			local++
		} else if s.raw, err = s.conn.Receive(s.raw[:0], int(k.skip)); err != nil {
			return fmt.Errorf("read reply from redis: %w", err)
		}
		switch k.kind {
		case replyExpire:
			if len(s.raw) == 0 || s.raw[0] != ':' {
				return fmt.Errorf("redis could not expire keys by the log's time: %q", s.raw)
			}
		case replyQueued:
			// A command redis refused to queue makes EXEC answer
			// EXECABORT, identically on every node.
		case replyCommand, replyLocal:
			s.scripts.observe(cmds[i], s.raw)
			s.noteConfig(cmds[i].Args, s.raw)
			s.noteBusyThreshold(cmds[i].Args, s.raw)
			if cmds[i].Reply != nil {
				s.replies = append(s.replies, append([]byte(nil), s.raw...))
				fence = fence || !blindOK(cmds[i], s.raw)
			}
			i++
		}
	}
	// The replies are handed out only once the watchdog has heard of
	// everything redis did until now (watchdog.go): one computed on data
	// another client changed is never given; the error makes the node
	// rebuild redis and apply the batch again. A batch whose every reply is
	// a blind write's OK needs no fence: no data, stray or not, changes
	// that reply, and a stray write is still caught by the next fence.
	if wd != nil && fence {
		// Bounded: a redis that stopped answering fails the batch, and the
		// node rebuilds it, rather than hold the applier for ever.
		ctx, cancel := context.WithTimeout(context.Background(), syncTimeout)
		err := wd.settle(ctx, win)
		cancel()
		if err != nil {
			return err
		}
	}
	j := 0
	for _, c := range cmds {
		if c.Reply != nil {
			c.Reply(s.replies[j])
			j++
		}
	}
	return nil
}

// blindOK reports whether raw is the reply a blind write (SET without
// options that read the key, MSET) gives whatever redis holds: +OK. Any
// other reply (an error such as OOM) may depend on what redis holds.
func blindOK(c fsm.Command, raw []byte) bool {
	return len(c.Tx) == 0 && string(raw) == "+OK\r\n" && expiry.BlindWrite(c.Args)
}

// write sends one command, or a transaction as MULTI, its commands and
// EXEC, so that redis runs it atomically, each as prepare makes it.
func (s *StateMachine) write(c fsm.Command) error {
	if len(c.Tx) == 0 {
		return s.send(c, s.prepare(c.DB, c.Args, c.TimeMs), replyCommand)
	}
	if err := s.send(c, cmdMulti, replyQueued); err != nil {
		return err
	}
	for _, args := range c.Tx {
		if err := s.send(c, s.prepare(c.DB, args, c.TimeMs), replyQueued); err != nil {
			return err
		}
	}
	return s.send(c, cmdExec, replyCommand)
}

// send buffers args in c's database and its client's protocol, and notes
// the reply to read back. The connection switches only where a request's
// database or protocol differs from the one before, so a run of one costs
// nothing, and every node switches at the same commands.
func (s *StateMachine) send(c fsm.Command, args [][]byte, kind replyKind) error {
	skip, err := s.conn.Send(c.DB, c.RESP3, args)
	if err != nil {
		return err
	}
	s.kinds = append(s.kinds, pendingReply{kind: kind, skip: uint8(skip)})
	return nil
}

// commandKeysIf is commandKeys for a database that may hold deadlines,
// but none for a command that replaces its keys whatever they hold
// (expiry.BlindWrite): whether one had expired changes nothing.
func (s *StateMachine) commandKeysIf(c fsm.Command) [][]byte {
	if !s.vol.may(c.DB) || (len(c.Tx) == 0 && expiry.BlindWrite(c.Args)) {
		return nil
	}
	return s.commandKeys(c)
}

// Healthy implements fsm.StateMachine.
func (s *StateMachine) Healthy(ctx context.Context) bool {
	if s.conn == nil {
		return false
	}
	if bad, why := s.Tainted(); bad {
		s.log.Error("the local redis holds data the log did not put there; rebuilding it from the snapshot and the log", "why", why)
		s.dropConn()
		return false
	}
	// A redis stopped for being idle (hibernate.go) has run nothing since
	// it last answered, and a new redis-server replacing it makes the
	// supervisor ask for a rebuild at once: asking it now would only wake
	// it.
	if s.gate.Stopped() {
		return true
	}
	if err := s.refreshVolatile(); err != nil {
		s.log.Warn("the local redis stopped answering", "err", err)
		s.dropConn()
		return false
	}
	s.conn.SetDeadline(time.Now().Add(5 * time.Second))
	defer s.conn.SetDeadline(time.Time{})
	id, err := s.conn.RunID()
	if err != nil || id != s.RunID() {
		s.log.Warn("the local redis restarted or stopped answering", "err", err, "run_id", id)
		s.dropConn()
		return false
	}
	return true
}

var cmdPExpireTime = []byte("PEXPIRETIME")

// KeyDeadlines implements fsm.KeyDeadlines on the apply connection:
// the deadlines of keys (expiry.Deadline of what redis stores), -1 for none
// and -2 for a missing key.
func (s *StateMachine) KeyDeadlines(db int, keys [][]byte) ([]int64, error) {
	if s.conn == nil {
		return nil, errNotConnected
	}
	out, err := s.keyDeadlines(db, keys)
	if err != nil {
		s.dropConn()
		return nil, err
	}
	return out, nil
}

func (s *StateMachine) keyDeadlines(db int, keys [][]byte) ([]int64, error) {
	s.conn.SetDeadline(time.Now().Add(syncTimeout))
	defer s.conn.SetDeadline(time.Time{})
	skips := make([]int, len(keys))
	for i, k := range keys {
		skip, err := s.conn.Send(db, s.conn.RESP3(), [][]byte{cmdPExpireTime, k})
		if err != nil {
			return nil, err
		}
		skips[i] = skip
	}
	if err := s.conn.Flush(); err != nil {
		return nil, err
	}
	out := make([]int64, len(keys))
	for i := range keys {
		var err error
		if s.raw, err = s.conn.Receive(s.raw[:0], skips[i]); err != nil {
			return nil, err
		}
		v, _, err := resp.Parse(s.raw)
		if err != nil || v.Kind != ':' {
			return nil, fmt.Errorf("PEXPIRETIME answered %q", s.raw)
		}
		out[i] = expiry.Deadline(v.Int)
	}
	return out, nil
}
