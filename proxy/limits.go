package proxy

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Client limits, as redis's maxclients, timeout and
// client-output-buffer-limit (normal class, hard limit).

// errOutputLimit ends a client whose unread replies passed the limit.
var errOutputLimit = errors.New("client output buffer limit reached")

// outQueue sits between a connection's reply buffer and its socket when an
// output limit is set: replies are queued in memory and written out by a
// goroutine of their own, so the proxy can tell how many bytes a client has
// not read yet and disconnect it past the limit, as redis does. Without a
// limit the writer writes to the socket directly, and a client that does not
// read stalls its own connection instead (its writer blocks, then its reader
// stops taking commands), which holds at most one batch of replies.
type outQueue struct {
	nc net.Conn
	// limit is the normal clients' limit, or the pub/sub one while the
	// client is subscribed (setLimit), as redis classes its clients.
	limit atomic.Int64

	mu     sync.Mutex
	cond   *sync.Cond
	buf    []byte // queued, not yet handed to the socket
	spare  []byte
	n      int64 // bytes queued or being written
	err    error
	closed bool
}

func newOutQueue(nc net.Conn, limit int64) *outQueue {
	q := &outQueue{nc: nc}
	q.limit.Store(limit)
	q.cond = sync.NewCond(&q.mu)
	go q.run()
	return q
}

// Write queues p; past the limit it closes the connection and fails.
func (q *outQueue) Write(p []byte) (int, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.err != nil {
		return 0, q.err
	}
	if q.n+int64(len(p)) > q.limit.Load() {
		q.err = errOutputLimit
		q.cond.Broadcast()
		// Closing ends the reader and the writer as a vanished client does.
		q.nc.Close()
		return 0, q.err
	}
	q.buf = append(q.buf, p...)
	q.n += int64(len(p))
	q.cond.Broadcast()
	return len(p), nil
}

// setLimit follows the client's class: subscribed or not.
func (c *conn) setOutputLimit() {
	if c.out == nil {
		return
	}
	limit := c.s.cfg.OutputLimit
	if c.ps.active() {
		limit = int64(c.s.pubsubLimit)
	}
	c.out.limit.Store(limit)
}

// overflowed reports whether the limit closed the connection.
func (q *outQueue) overflowed() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.err == errOutputLimit
}

func (q *outQueue) run() {
	q.mu.Lock()
	defer q.mu.Unlock()
	for {
		for len(q.buf) == 0 && !q.closed && q.err == nil {
			q.cond.Wait()
		}
		if q.err != nil || len(q.buf) == 0 {
			return
		}
		b := q.buf
		q.buf = q.spare[:0]
		q.mu.Unlock()
		_, err := q.nc.Write(b)
		q.mu.Lock()
		q.n -= int64(len(b))
		if cap(b) <= 1<<20 {
			q.spare = b[:0] // keep a modest buffer; drop a huge one
		} else {
			q.spare = nil
		}
		if err != nil && q.err == nil {
			q.err = err
		}
		q.cond.Broadcast()
	}
}

// waitBelow blocks until at most max bytes are queued, or the connection
// failed: a long stream (RAFT.BACKUP's RDB) is paced by the client's
// reading instead of counted against the limit, as redis paces a replica's
// RDB transfer.
func (q *outQueue) waitBelow(max int64) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	for q.n > max && q.err == nil {
		q.cond.Wait()
	}
	return q.err
}

// drain waits (at most d) until everything queued is written, then stops
// the writing goroutine: the connection is about to close.
func (q *outQueue) drain(d time.Duration) {
	t := time.AfterFunc(d, func() {
		q.mu.Lock()
		if q.err == nil {
			q.err = errors.New("client did not read its last replies")
		}
		q.cond.Broadcast()
		q.mu.Unlock()
	})
	defer t.Stop()
	q.mu.Lock()
	defer q.mu.Unlock()
	q.closed = true
	q.cond.Broadcast()
	for q.n > 0 && q.err == nil {
		q.cond.Wait()
	}
}

// closeConn closes the client's socket after its queued replies are out.
func (c *conn) closeConn() {
	if c.out != nil {
		c.out.drain(5 * time.Second)
	}
	c.nc.Close()
}

// idleDeadline arms (or clears) the read deadline that ends an idle client,
// before the reader waits for a command. As in redis, a subscribed client
// is never idle; a blocked one is not read by the reader meanwhile
// (startAhead clears the deadline).
func (c *conn) idleDeadline() {
	t := c.s.cfg.IdleTimeout
	if t <= 0 {
		return
	}
	if c.ps.active() {
		c.nc.SetReadDeadline(time.Time{})
		return
	}
	c.nc.SetReadDeadline(time.Now().Add(t))
}

// tooMany reports whether a new client would pass --max-clients; the
// caller holds s.mu.
func (s *Server) tooMany() bool {
	return s.cfg.MaxClients > 0 && len(s.conns) >= s.cfg.MaxClients
}

// refuse tells a client over the limit why, as redis does, and closes it.
func refuse(nc net.Conn) {
	nc.SetWriteDeadline(time.Now().Add(time.Second))
	nc.Write([]byte("-ERR max number of clients reached\r\n"))
	nc.Close()
}
