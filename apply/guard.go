package apply

import (
	"fmt"

	"github.com/raftproxy/raftproxy/entry"
	"github.com/raftproxy/raftproxy/fsm"
	"github.com/raftproxy/raftproxy/resp"
)

// WATCH's bookkeeping is kept in log order as the applier goes, with redis
// telling what happened, so every EXEC is decided as redis decides it:
//
//   - A write marks the watches of its keys only if it changed them, which
//     its reply tells (Keys.Modified: DEL of a missing key, SETNX on an
//     existing one... change nothing). Replies are deterministic, so every
//     node marks alike.
//   - A watched key that expires, by the log's time, between WATCH and EXEC
//     aborts the EXEC (redis 7): the WATCH records each key's deadline
//     (KeyDeadlines), the EXEC compares the deadline with its own time.
//
// So WATCH, UNWATCH and an EXEC naming a watch are steps the apply layer
// takes between the runs of commands it sends to redis: each run's replies
// are in, and its marks made, before the next step.

// markOnReply makes c's reply mark the watches of the keys it changed.
func (m *Machine) markOnReply(c *fsm.Command) {
	if !m.mayWrite(c) {
		return
	}
	db, args, tx, reply := c.DB, c.Args, c.Tx, c.Reply
	c.Reply = func(raw []byte) {
		if len(tx) == 0 {
			if m.modified(args, raw) {
				m.written(db, args)
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
					m.written(db, t) // cannot tell: as if changed
					continue
				}
				if m.modified(t, elems[:n]) {
					m.written(db, t)
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
func (m *Machine) mayWrite(c *fsm.Command) bool {
	if m.keys == nil {
		return true
	}
	if len(c.Tx) == 0 {
		keys, all := m.keys.WriteKeys(c.Args)
		return all || len(keys) > 0
	}
	for _, t := range c.Tx {
		if keys, all := m.keys.WriteKeys(t); all || len(keys) > 0 {
			return true
		}
	}
	return false
}

func (m *Machine) modified(args [][]byte, raw []byte) bool {
	if m.keys != nil {
		return m.keys.Modified(args, raw)
	}
	return true
}

// written marks the watches of the keys args may modify.
func (m *Machine) written(db int, args [][]byte) {
	if m.keys == nil {
		m.watches.written(db, nil, true)
		return
	}
	keys, all := m.keys.WriteKeys(args)
	m.watches.written(db, keys, all)
}

// step takes a WATCH step. It reports whether c's transaction is to run.
func (m *Machine) step(c *fsm.Command) (bool, error) {
	ws := m.watches
	done := func(raw []byte) (bool, error) {
		answer(c, raw)
		return false, nil
	}
	switch c.Op {
	case entry.OpWatch:
		deadlines, err := m.deadlines(c.DB, c.Args)
		if err != nil {
			return false, err
		}
		ws.add(c.Watch, c.DB, c.Args, deadlines, c.TimeMs)
		return done(okReply)
	case entry.OpUnwatch:
		ws.remove(c.Watch)
		return done(okReply)
	}
	w := ws.byID[c.Watch]
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
			now, err := m.deadlines(c.DB, keys)
			if err != nil {
				return false, err
			}
			for j, d := range now {
				if d == -2 {
					d = w.keys[at[j]].deadline // gone: by its deadline, or unseen
				}
				if d >= 0 && d < c.TimeMs {
					clean = false // expired since it was watched
				}
			}
		}
	}
	ws.remove(c.Watch)
	switch {
	case !clean && c.RESP3:
		return done(abortedReply3)
	case !clean:
		return done(abortedReply)
	case len(c.Tx) == 0:
		return done(emptyTxReply)
	}
	return true, nil
}

// deadlines asks redis when keys expire.
func (m *Machine) deadlines(db int, keys [][]byte) ([]int64, error) {
	d, err := m.redis.KeyDeadlines(db, keys)
	if err != nil {
		return nil, fmt.Errorf("read the deadlines of watched keys: %w", err)
	}
	if len(d) != len(keys) {
		return nil, fmt.Errorf("read the deadlines of %d watched keys: %d answers", len(keys), len(d))
	}
	return d, nil
}
