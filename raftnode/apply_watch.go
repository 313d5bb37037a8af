package raftnode

import (
	"context"
	"fmt"

	"github.com/raftproxy/raftproxy/entry"
	"github.com/raftproxy/raftproxy/resp"
)

// WATCH's bookkeeping is kept in log order as the applier goes, with redis
// telling what happened, so every EXEC is decided as redis decides it:
//
//   - A write marks the watches of its keys only if it changed them, which
//     its reply tells (Config.Modified: DEL of a missing key, SETNX on an
//     existing one... change nothing). Replies are deterministic, so every
//     node marks alike.
//   - A watched key that expires, by the log's time, between WATCH and EXEC
//     aborts the EXEC (redis 7): the WATCH records each key's deadline
//     (KeyDeadlines), the EXEC compares the deadline with its own time.
//
// So WATCH, UNWATCH and an EXEC naming a watch are steps (guards) the
// applier takes between the runs of commands it sends to the state
// machine: each run's replies are in, and its marks made, before the next
// step.

// guard is a WATCH step: watch, unwatch, or an EXEC naming a watch (the
// command's transaction runs only if it is clean).
type guard struct {
	op     entry.Op // OpWatch, OpUnwatch or OpTx
	watch  uint64
	keys   [][]byte
	timeMs int64
}

// KeyDeadlines is implemented by a state machine that can tell when keys
// expire: for each key of db, in unix milliseconds, -1 for none, -2 when it
// does not exist. Everything applied before must be in.
type KeyDeadlines interface {
	KeyDeadlines(db int, keys [][]byte) ([]int64, error)
}

// applyRun applies cmds in order: runs of commands go to the state machine,
// with the WATCH steps taken between them.
func (a *applier) applyRun(ctx context.Context, cmds []Command) error {
	start := 0
	for i := range cmds {
		if cmds[i].guard == nil {
			continue
		}
		if err := a.applySegment(ctx, cmds[start:i]); err != nil {
			return err
		}
		start = i + 1
		send, err := a.step(&cmds[i])
		if err != nil {
			return err
		}
		if send {
			start = i // the transaction runs first in the next run
			cmds[i].guard = nil
		}
	}
	return a.applySegment(ctx, cmds[start:])
}

// applySegment applies a run of commands, marking watches from their
// replies.
func (a *applier) applySegment(ctx context.Context, cmds []Command) error {
	if len(cmds) == 0 {
		return nil
	}
	if a.watches.active() {
		for i := range cmds {
			a.markOnReply(&cmds[i])
		}
	}
	return a.applyBatch(cmds)
}

// markOnReply makes c's reply mark the watches of the keys it changed.
func (a *applier) markOnReply(c *Command) {
	if !a.mayWrite(c) {
		return
	}
	db, args, tx, reply := c.DB, c.Args, c.Tx, c.Reply
	c.Reply = func(raw []byte) {
		if len(tx) == 0 {
			if a.modified(args, raw) {
				a.written(db, args)
			}
		} else if len(raw) > 0 && raw[0] == '*' {
			// EXEC's reply: one element per command; an aborted or
			// discarded transaction (null, EXECABORT) changed nothing.
			elems := raw[1:]
			if i := indexCRLF(elems); i >= 0 {
				elems = elems[i+2:]
			}
			for _, t := range tx {
				n, err := resp.Skip(elems)
				if err != nil {
					a.written(db, t) // cannot tell: as if changed
					continue
				}
				if a.modified(t, elems[:n]) {
					a.written(db, t)
				}
				elems = elems[n:]
			}
		}
		if reply != nil {
			reply(raw)
		}
	}
}

func indexCRLF(b []byte) int {
	for i := 0; i+1 < len(b); i++ {
		if b[i] == '\r' && b[i+1] == '\n' {
			return i
		}
	}
	return -1
}

// mayWrite reports whether c may change keys (it has keys to mark).
func (a *applier) mayWrite(c *Command) bool {
	f := a.n.cfg.WriteKeys
	if f == nil {
		return true
	}
	if len(c.Tx) == 0 {
		keys, all := f(c.Args)
		return all || len(keys) > 0
	}
	for _, t := range c.Tx {
		if keys, all := f(t); all || len(keys) > 0 {
			return true
		}
	}
	return false
}

func (a *applier) modified(args [][]byte, raw []byte) bool {
	if f := a.n.cfg.Modified; f != nil {
		return f(args, raw)
	}
	return true
}

// step takes a WATCH step. It reports whether c's transaction is to run.
func (a *applier) step(c *Command) (bool, error) {
	g, ws := c.guard, a.watches
	answer := func(raw []byte) (bool, error) {
		if c.Reply != nil {
			c.Reply(raw)
		}
		return false, nil
	}
	switch g.op {
	case entry.OpWatch:
		deadlines, err := a.deadlines(c.DB, g.keys)
		if err != nil {
			return false, err
		}
		ws.add(g.watch, c.DB, g.keys, deadlines, g.timeMs)
		return answer(okReply)
	case entry.OpUnwatch:
		ws.remove(g.watch)
		return answer(okReply)
	}
	w := ws.byID[g.watch]
	clean := w != nil && !w.dirty
	if clean {
		var keys [][]byte
		var at []int
		for i, k := range w.keys {
			if k.deadline >= 0 && !k.expired {
				keys, at = append(keys, []byte(k.key)), append(at, i)
			}
		}
		if len(keys) > 0 {
			now, err := a.deadlines(c.DB, keys)
			if err != nil {
				return false, err
			}
			for j, d := range now {
				if d == -2 {
					d = w.keys[at[j]].deadline // gone: by its deadline, or unseen
				}
				if d >= 0 && d < g.timeMs {
					clean = false // expired since it was watched
				}
			}
		}
	}
	ws.remove(g.watch)
	switch {
	case !clean && c.RESP3:
		return answer(abortedReply3)
	case !clean:
		return answer(abortedReply)
	case len(c.Tx) == 0:
		return answer(emptyTxReply)
	}
	return true, nil
}

// deadlines asks the state machine when keys expire; all -1 when it
// cannot tell.
func (a *applier) deadlines(db int, keys [][]byte) ([]int64, error) {
	out := make([]int64, len(keys))
	kd, ok := a.n.cfg.StateMachine.(KeyDeadlines)
	if !ok {
		for i := range out {
			out[i] = -1
		}
		return out, nil
	}
	d, err := kd.KeyDeadlines(db, keys)
	if err != nil {
		return nil, fmt.Errorf("read the deadlines of watched keys: %w", err)
	}
	if len(d) != len(keys) {
		return nil, fmt.Errorf("read the deadlines of %d watched keys: %d answers", len(keys), len(d))
	}
	return d, nil
}
