package backend

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/raftproxy/raftproxy/raftnode"
)

// StateMachine applies the log to the local redis over one pipelined
// connection. Redis's own persistence is not relied on: the raft log is the
// truth and redis is rebuilt from it whenever its content is in doubt.
type StateMachine struct {
	addr  string
	log   *slog.Logger
	conn  *Conn
	runID atomic.Pointer[string]
	skip  []bool
	raw   []byte
}

// NewStateMachine returns a state machine for the redis at addr.
func NewStateMachine(addr string, log *slog.Logger) *StateMachine {
	return &StateMachine{addr: addr, log: log}
}

// RunID is the run_id of the redis the state machine was last rebuilt into;
// a client connection that finds another run_id must not read from it.
func (s *StateMachine) RunID() string {
	if p := s.runID.Load(); p != nil {
		return *p
	}
	return ""
}

var errNotConnected = errors.New("not connected to redis")

// Apply implements raftnode.StateMachine: it writes all commands, then reads
// all replies, so a batch costs one round trip to redis.
func (s *StateMachine) Apply(cmds []raftnode.Command) error {
	if s.conn == nil {
		return errNotConnected
	}
	if err := s.apply(cmds); err != nil {
		s.conn.Close()
		s.conn = nil
		return err
	}
	return nil
}

func (s *StateMachine) apply(cmds []raftnode.Command) error {
	s.skip = s.skip[:0]
	for _, c := range cmds {
		sel, err := s.conn.Select(c.DB)
		if err != nil {
			return fmt.Errorf("write to redis: %w", err)
		}
		if sel {
			s.skip = append(s.skip, true)
		}
		if err := s.conn.Write(c.Args); err != nil {
			return fmt.Errorf("write to redis: %w", err)
		}
		s.skip = append(s.skip, false)
	}
	if err := s.conn.Flush(); err != nil {
		return fmt.Errorf("write to redis: %w", err)
	}
	// No deadline: a command may legitimately run long (a big DEL); a dead
	// redis closes the connection, and Healthy probes a hung one.
	i := 0
	for _, sel := range s.skip {
		var err error
		s.raw, err = s.conn.ReadReply(s.raw[:0])
		if err != nil {
			return fmt.Errorf("read reply from redis: %w", err)
		}
		if sel {
			if len(s.raw) == 0 || s.raw[0] != '+' {
				return fmt.Errorf("redis SELECT failed: %q", s.raw)
			}
			continue
		}
		if r := cmds[i].Reply; r != nil {
			r(append([]byte(nil), s.raw...))
		}
		i++
	}
	return nil
}

// Reset implements raftnode.StateMachine: it waits for redis, then empties it.
func (s *StateMachine) Reset(ctx context.Context) error {
	if s.conn != nil {
		s.conn.Close()
		s.conn = nil
	}
	for {
		err := s.reset(ctx)
		if err == nil {
			return nil
		}
		s.log.Warn("waiting for the local redis", "addr", s.addr, "err", err)
		select {
		case <-time.After(500 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (s *StateMachine) reset(ctx context.Context) error {
	dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	c, err := Dial(dctx, s.addr)
	if err != nil {
		return err
	}
	id, err := c.RunID()
	if err == nil {
		_, err = c.DoValue("FLUSHALL", "SYNC")
	}
	if err != nil {
		c.Close()
		return err
	}
	s.conn = c
	s.runID.Store(&id)
	s.log.Info("emptied the local redis to rebuild it from the log", "addr", s.addr, "run_id", id)
	return nil
}

// Healthy implements raftnode.StateMachine.
func (s *StateMachine) Healthy(ctx context.Context) bool {
	if s.conn == nil {
		return false
	}
	s.conn.SetDeadline(time.Now().Add(5 * time.Second))
	defer s.conn.SetDeadline(time.Time{})
	id, err := s.conn.RunID()
	if err != nil || id != s.RunID() {
		s.log.Warn("the local redis restarted or stopped answering", "err", err, "run_id", id)
		s.conn.Close()
		s.conn = nil
		return false
	}
	return true
}
