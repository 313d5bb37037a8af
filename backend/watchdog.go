package backend

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/raftproxy/raftproxy/fsm"
	"github.com/raftproxy/raftproxy/resp"
)

// A redis that loses data, or gets it from somewhere else, must not be read
// as if it held the log. A restart (an operator's, an OOM kill) changes
// redis's run_id, which Healthy and every reading connection check. A client
// other than raftproxy writing to redis directly (a stray FLUSHALL, a SET
// from redis-cli) leaves the run_id alone, so the watchdog catches it: the
// apply connection turns on client-side caching in broadcast mode with
// NOLOOP, redirected to the watchdog's connection. Redis then tells the
// watchdog of every key written by any client but the applier, and of every
// flush. Two kinds of notice come from the applier all the same: its
// flushes (Apply counts them), and the writes of the scripts it runs (redis
// counts them as its Lua client's). So Apply opens a window before it sends
// a batch with a script, and closes it with a PING to the watchdog after
// the replies: the notices that come before the PONG may be the scripts'.
// A window names the keys its scripts may write (their KEYS: raftproxy's
// own scripts write no others), or, for a user's script, which may write
// any key and flush, anything. Any other notice taints the state machine:
// Healthy reports false, reads are refused (Tainted), and the node rebuilds
// redis from its snapshot and log. A stray write to a key a window names,
// or during a user's script, goes unnoticed.
type watchdog struct {
	c    *Conn
	gate *Hibernation // held while a fence waits: its PONG is read ungated
	done chan struct{}
	// stop is closed by close, before the connection is.
	stop chan struct{}
	// flushes counts the flushes the applier sent whose notice has not
	// come yet; windows are the script windows not closed yet (their PONG
	// has not come), oldest first.
	flushes atomic.Int64
	mu      sync.Mutex
	windows []*window
	// fences are the PINGs sent whose PONG has not come, oldest first;
	// wmu orders their writing with their queueing.
	fences []fence
	// gone is set (under mu) once run has returned: no PONG will come, so
	// a fence sent after that fails at once rather than waiting for ever.
	gone    bool
	wmu     sync.Mutex
	tainted atomic.Bool
	why     atomic.Pointer[string]
	onTaint func()
}

// invalidateChannel is where redis sends tracking messages for RESP2.
const invalidateChannel = "__redis__:invalidate"

// startWatchdog connects the watchdog and turns on tracking on apply, the
// applier's connection.
func startWatchdog(ctx context.Context, gate *Hibernation, addr, password string, apply *Conn, onTaint func()) (*watchdog, error) {
	// It waits for notices redis sends only while it runs commands: it
	// need not keep a redis the gate may stop running.
	c, err := gate.DialListener(ctx, addr, password)
	if err != nil {
		return nil, fmt.Errorf("watchdog: %w", err)
	}
	w := &watchdog{c: c, gate: gate, done: make(chan struct{}), stop: make(chan struct{}), onTaint: onTaint}
	ok := false
	defer func() {
		if !ok {
			c.Close()
		}
	}()
	if dl, has := ctx.Deadline(); has {
		c.SetDeadline(dl)
	}
	v, err := c.DoValue("CLIENT", "ID")
	if err != nil {
		return nil, fmt.Errorf("watchdog: CLIENT ID: %w", err)
	}
	id := v.Int
	c.DoValue("CLIENT", "SETNAME", "raftproxy-watchdog")
	if _, err := c.DoValue("SUBSCRIBE", invalidateChannel); err != nil {
		return nil, fmt.Errorf("watchdog: SUBSCRIBE: %w", err)
	}
	c.SetDeadline(time.Time{})
	if _, err := apply.DoValue("CLIENT", "TRACKING", "ON", "REDIRECT", strconv.FormatInt(id, 10), "BCAST", "NOLOOP"); err != nil {
		return nil, fmt.Errorf("watchdog: CLIENT TRACKING: %w", err)
	}
	ok = true
	go w.run()
	return w, nil
}

// run reads the invalidation messages until the connection closes.
func (w *watchdog) run() {
	defer close(w.done)
	defer func() {
		// No PONG will come: release whoever waits for one.
		w.mu.Lock()
		w.gone = true
		for _, f := range w.fences {
			close(f.done)
		}
		w.fences = nil
		w.mu.Unlock()
	}()
	var raw []byte
	for {
		var err error
		raw, err = w.c.ReadReply(raw[:0])
		if err != nil {
			select {
			case <-w.stop:
			default:
				w.taint("the watchdog's connection to redis failed: " + err.Error())
			}
			return
		}
		v, _, err := resp.Parse(raw)
		if err != nil || len(v.Elems) < 2 {
			continue
		}
		if string(v.Elems[0].Str) == "pong" {
			w.mu.Lock()
			if len(w.fences) > 0 {
				f := w.fences[0]
				w.fences = w.fences[1:]
				if f.win != nil && len(w.windows) > 0 {
					w.windows = w.windows[1:]
				}
				close(f.done)
			}
			w.mu.Unlock()
			continue
		}
		if len(v.Elems) != 3 || string(v.Elems[0].Str) != "message" {
			continue
		}
		keys := v.Elems[2]
		if keys.Null || (keys.Kind != '*' && len(keys.Str) == 0) {
			// A flush: the applier's own, or another client's.
			if w.flushes.Add(-1) >= 0 {
				continue
			}
			w.flushes.Add(1)
			if w.expected(nil) {
				continue // a user's script's
			}
			w.taint("a client other than raftproxy flushed the local redis")
			continue
		}
		if w.expected(keys.Elems) {
			continue
		}
		var names []string
		for i, k := range keys.Elems {
			if i == 3 {
				names = append(names, "...")
				break
			}
			names = append(names, strconv.Quote(string(k.Str)))
		}
		w.taint(fmt.Sprintf("a client other than raftproxy wrote to the local redis (keys %v)", names))
	}
}

func (w *watchdog) taint(why string) {
	if w.tainted.Swap(true) {
		return
	}
	w.why.Store(&why)
	if w.onTaint != nil {
		w.onTaint()
	}
}

// window is what the scripts of one batch may write: anything, or keys.
type window struct {
	anything bool
	keys     map[string]struct{}
}

// add makes the window cover keys.
func (win *window) add(keys [][]byte) {
	if win.keys == nil {
		win.keys = map[string]struct{}{}
	}
	for _, k := range keys {
		win.keys[string(k)] = struct{}{}
	}
}

// expected reports whether an open window covers a notice of keys (nil: a
// flush, which only a user's script may do).
func (w *watchdog) expected(keys []resp.Value) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, win := range w.windows {
		if win.anything {
			return true
		}
	}
	if keys == nil {
		return false
	}
	for _, k := range keys {
		found := false
		for _, win := range w.windows {
			if _, ok := win.keys[string(k.Str)]; ok {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return len(w.windows) > 0
}

// open opens a script window before its batch is sent; the fence after
// the batch's replies closes it.
func (w *watchdog) open(win *window) {
	w.mu.Lock()
	w.windows = append(w.windows, win)
	w.mu.Unlock()
}

// fence is a PING to the watchdog: its PONG comes after every notice redis
// sent before it ran the PING, so once it has come, what redis did until
// then is known. win, if not nil, is the window it closes.
type fence struct {
	win  *window
	done chan struct{}
}

// sendFence sends a fence and returns the channel closed when its PONG
// (or the end of the connection) has come.
func (w *watchdog) sendFence(win *window) (<-chan struct{}, error) {
	w.wmu.Lock()
	defer w.wmu.Unlock()
	f := fence{win: win, done: make(chan struct{})}
	w.mu.Lock()
	if w.gone {
		w.mu.Unlock()
		return nil, errWatchdogGone
	}
	w.fences = append(w.fences, f)
	w.mu.Unlock()
	err := w.c.Write([][]byte{[]byte("PING")})
	if err == nil {
		err = w.c.Flush()
	}
	return f.done, err
}

// settle waits for a fence: it returns ErrTainted if redis was written by
// another client before now, as far as redis has told.
func (w *watchdog) settle(ctx context.Context, win *window) error {
	// Redis answers the PING after whatever it runs before it, which may
	// be a command whose caller gave up: it must not be stopped meanwhile.
	defer w.gate.hold()()
	done, err := w.sendFence(win)
	if err != nil {
		return fmt.Errorf("watchdog: %w", err)
	}
	select {
	case <-done:
	case <-ctx.Done():
		return ctx.Err()
	}
	if w.tainted.Load() {
		if why := w.why.Load(); why != nil {
			return fmt.Errorf("%w: %s", ErrTainted, *why)
		}
		return ErrTainted
	}
	return nil
}

// errWatchdogGone: the watchdog's connection to redis ended (redis
// restarted or died); the node must check redis and rebuild it.
var errWatchdogGone = errors.New("the watchdog's connection to redis is gone")

// ErrTainted says the local redis was changed by another client than
// raftproxy: what it answered may be wrong.
var ErrTainted = errors.New("the local redis was written by another client than raftproxy")

// Settle waits until the watchdog has heard from redis about everything
// redis did before now, and returns ErrTainted if another client changed
// its data: a read that ran before now must then not be answered. With no
// watchdog (no redis yet) it returns at once.
func (s *StateMachine) Settle(ctx context.Context) error {
	w := s.wd.Load()
	if w == nil {
		return nil
	}
	return w.settle(ctx, nil)
}

func (w *watchdog) close() {
	close(w.stop)
	w.c.Close()
	<-w.done
}

// Tainted reports whether the local redis may hold data the log did not put
// there, and why: reads must not use it until the node has rebuilt it.
func (s *StateMachine) Tainted() (bool, string) {
	w := s.wd.Load()
	if w == nil || !w.tainted.Load() {
		return false, ""
	}
	if p := w.why.Load(); p != nil {
		return true, *p
	}
	return true, ""
}

// SetOnTaint sets what is called, once, when the watchdog finds the local
// redis changed by another client (before the node starts): the node
// should check the state machine now (raftnode.Node.CheckStateMachine).
func (s *StateMachine) SetOnTaint(f func()) { s.onTaint = f }

// ensureWatchdog starts the watchdog for the apply connection if it has
// none (after each Reset, once redis is a master again).
func (s *StateMachine) ensureWatchdog() error {
	if s.wd.Load() != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s.conn.SetDeadline(time.Now().Add(5 * time.Second))
	defer s.conn.SetDeadline(time.Time{})
	w, err := startWatchdog(ctx, s.gate, s.addr, s.password, s.conn, s.onTaint)
	if err != nil {
		return err
	}
	s.wd.Store(w)
	return nil
}

// stopWatchdog ends the watchdog, with the apply connection it watches for.
func (s *StateMachine) stopWatchdog() {
	if w := s.wd.Swap(nil); w != nil {
		w.close()
	}
}

// scriptWindow returns the window of a batch: what the scripts it runs may
// write (the deletion of expired keys included), or nil for a batch with
// no script.
func (s *StateMachine) scriptWindow(cmds []fsm.Command) *window {
	var win *window
	note := func(args [][]byte) {
		if len(args) < 2 {
			return // redis refuses it: it writes nothing
		}
		n := args[0]
		eval := bytes.EqualFold(n, []byte("eval")) || bytes.EqualFold(n, []byte("eval_ro"))
		fcall := bytes.EqualFold(n, []byte("fcall")) || bytes.EqualFold(n, []byte("fcall_ro"))
		if !eval && !fcall {
			return
		}
		if win == nil {
			win = &window{}
		}
		// A user's script (wrapped, or a function) may write any key; the
		// scripts raftproxy proposes write their KEYS.
		if _, wrapped := Unwrap(args[1]); fcall || wrapped || s.keys == nil {
			win.anything = true
			return
		}
		win.add(s.keys(args))
	}
	for _, c := range cmds {
		if keys := s.commandKeysIf(c); len(keys) > 0 {
			if win == nil {
				win = &window{}
			}
			win.add(keys)
		}
		note(c.Args)
		for _, args := range c.Tx {
			note(args)
		}
	}
	return win
}
