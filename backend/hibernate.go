package backend

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/raftproxy/raftproxy/internal/beat"
)

// An idle redis-server still wakes once a second for its own timer (hz 1,
// redis's least), and on a virtual machine each wakeup costs a few hundred
// microseconds: a node holding 64 shards runs 64 of them, which alone cost
// more than everything else an idle node does. A redis-server raftproxy
// started itself is reached by nothing but this process (supervisor.go:
// a unix socket only its user may open, and a random password), and does
// nothing by itself that the log needs (persistence is off; keys expire
// through the log). So a Hibernation stops it (SIGSTOP) once none of this
// process's connections has used it for a while, and continues it
// (SIGCONT) before any of them next writes to or reads from it. Stopped, it
// costs nothing; continuing it is one system call and no round trip, as
// redis resumes in the wait it stopped in and finds the command there.
//
// The gate: every dial, read and write of a connection dialled through
// the Hibernation counts as busy while it runs and continues the process
// first if it is stopped; the process is stopped only while none runs and the last
// ended at least idle ago. A connection that waits for redis's reply is
// inside a read, so redis is never stopped under a command it has to
// answer. A listening connection (the watchdog's, which waits for notices
// redis sends only when it runs commands) gates its writes alone.
type Hibernation struct {
	idle  time.Duration
	proc  func() *os.Process
	log   *slog.Logger
	start time.Time

	// busy counts the reads and writes in progress; last is when the
	// latest ended, as time since start. last is stored before busy drops,
	// so a stopper that sees busy at zero sees when it reached zero.
	busy atomic.Int64
	last atomic.Int64
	// stopped is set (under mu) just before the process is stopped, and
	// cleared (under mu) once it is continued: a gated call that sees it
	// set continues the process before it goes on.
	stopped atomic.Bool

	mu     sync.Mutex
	sp     *os.Process // the process stopped
	closed bool

	woke chan struct{} // the process was continued (1-buffered)
	done chan struct{}

	stops atomic.Uint64
}

// minHibernateIdle keeps a stop from following redis's own start: it
// loads its configuration and opens its socket before anything can use it.
const minHibernateIdle = time.Second

// newHibernation gates the redis-server proc returns (nil: none runs now),
// stopping it after idle without use.
func newHibernation(idle time.Duration, proc func() *os.Process, log *slog.Logger) *Hibernation {
	h := &Hibernation{
		idle:  idle,
		proc:  proc,
		log:   log,
		start: time.Now(),
		woke:  make(chan struct{}, 1),
		done:  make(chan struct{}),
	}
	h.last.Store(int64(time.Since(h.start)))
	go h.run()
	return h
}

// Dial is DialAuth through the gate: the connection's reads and writes
// continue the redis-server first. A nil Hibernation dials plainly.
func (h *Hibernation) Dial(ctx context.Context, addr, password string) (*Conn, error) {
	return h.dial(ctx, addr, password, true)
}

// DialListener is Dial for a connection that waits for what redis sends
// by itself (a subscriber's): only its writes are gated, so waiting on it
// keeps no redis awake.
func (h *Hibernation) DialListener(ctx context.Context, addr, password string) (*Conn, error) {
	return h.dial(ctx, addr, password, false)
}

func (h *Hibernation) dial(ctx context.Context, addr, password string, reads bool) (*Conn, error) {
	if h == nil {
		return dialAuth(ctx, addr, nil, password, nil)
	}
	// The dial too: a redis-server stopped while it was starting has no
	// socket to connect to until it is continued.
	h.enter()
	defer h.exit()
	return dialAuth(ctx, addr, nil, password, func(nc net.Conn) net.Conn {
		return &gatedConn{Conn: nc, h: h, reads: reads}
	})
}

// Stopped reports whether the redis-server is stopped now: nothing has
// reached it since it last answered.
func (h *Hibernation) Stopped() bool { return h != nil && h.stopped.Load() }

// Stops counts the times the redis-server was stopped.
func (h *Hibernation) Stops() uint64 {
	if h == nil {
		return 0
	}
	return h.stops.Load()
}

// Close continues the redis-server if it is stopped, for good: a stopped
// process would not act on the signal that ends it.
func (h *Hibernation) Close() {
	if h == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	h.closed = true
	h.cont()
	close(h.done)
}

// started is told of a new redis-server replacing one that exited: the
// new one runs (a health check must ask it, not skip it as stopped), and
// its start counts as a use, so it gets the whole idle time to start.
func (h *Hibernation) started() {
	if h == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.last.Store(int64(time.Since(h.start)))
	h.cont() // the stopped one has exited: this only clears the state
}

// hold keeps the redis-server running until the returned func is called,
// for work the gated connections do not see.
func (h *Hibernation) hold() (release func()) {
	if h == nil {
		return func() {}
	}
	h.enter()
	return h.exit
}

func (h *Hibernation) enter() {
	h.busy.Add(1)
	if h.stopped.Load() {
		h.mu.Lock()
		h.cont()
		h.mu.Unlock()
	}
}

func (h *Hibernation) exit() {
	h.last.Store(int64(time.Since(h.start)))
	h.busy.Add(-1)
}

// cont continues the stopped process; h.mu is held.
func (h *Hibernation) cont() {
	if !h.stopped.Load() {
		return
	}
	if err := h.sp.Signal(syscall.SIGCONT); err != nil && !errors.Is(err, os.ErrProcessDone) {
		h.log.Warn("could not continue the stopped redis-server", "err", err)
	}
	h.sp = nil
	h.stopped.Store(false)
	select {
	case h.woke <- struct{}{}:
	default:
	}
}

// tryStop stops the process if nothing has used it for idle, and reports
// whether it did.
func (h *Hibernation) tryStop() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed || h.stopped.Load() || h.busy.Load() != 0 || h.idleFor() < h.idle {
		return false
	}
	p := h.proc()
	if p == nil {
		return false
	}
	// Set before busy is read again: a call entering now either sees it
	// and waits on mu to continue the process, or is seen here.
	h.stopped.Store(true)
	if h.busy.Load() != 0 {
		h.stopped.Store(false)
		return false
	}
	if err := p.Signal(syscall.SIGSTOP); err != nil {
		h.stopped.Store(false)
		return false
	}
	h.sp = p
	h.stops.Add(1)
	return true
}

// idleFor is how long ago the last read or write ended.
func (h *Hibernation) idleFor() time.Duration {
	return time.Since(h.start) - time.Duration(h.last.Load())
}

// run stops the process once it has been idle long enough, checking on
// whole seconds of the wall clock (internal/beat) to share its wakeups, and
// sleeps without a timer while the process is stopped.
func (h *Hibernation) run() {
	t := time.NewTimer(beat.OnAfter(h.idle, time.Second))
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-h.done:
			return
		}
		if h.tryStop() {
			select {
			case <-h.woke:
			case <-h.done:
				return
			}
		}
		left := h.idle
		if h.busy.Load() == 0 {
			left = max(h.idle-h.idleFor(), 0)
		}
		t.Reset(beat.OnAfter(left, time.Second))
	}
}

// gatedConn is a connection to a redis-server a Hibernation may stop.
type gatedConn struct {
	net.Conn
	h     *Hibernation
	reads bool // reads are gated too
}

func (c *gatedConn) Read(p []byte) (int, error) {
	if !c.reads {
		return c.Conn.Read(p)
	}
	c.h.enter()
	defer c.h.exit()
	return c.Conn.Read(p)
}

func (c *gatedConn) Write(p []byte) (int, error) {
	c.h.enter()
	defer c.h.exit()
	return c.Conn.Write(p)
}
