package proxy

import (
	"bufio"
	"bytes"
	"io"
	"strings"
	"time"

	"github.com/raftproxy/raftproxy/apply"
	"github.com/raftproxy/raftproxy/entry"
	"github.com/raftproxy/raftproxy/raftnode"
)

// The writer side of a connection: one goroutine completes the ops in
// arrival order and is the only one that writes to the socket (but for the
// reader completing a lone command, conn.emit).

func (c *conn) writeLoop() {
	var next *op
	open := true
	batch := make([]*op, 0, 64)
	for {
		o := next
		next = nil
		if o == nil {
			if !open {
				c.flush()
				return
			}
			select {
			case o, open = <-c.ops:
			default:
				// Flush only when no reply is ready to follow, so a pipeline
				// gets its replies in few writes.
				if c.flush() != nil {
					c.discard()
					return
				}
				o, open = <-c.ops
			}
			if o == nil {
				continue
			}
		}
		batch = append(batch[:0], o)
		if o.kind == opRead || o.kind == opLocal {
			// A run of reads and local commands goes to redis in one round trip.
		more:
			for len(batch) < cap(batch) && open {
				select {
				case x, ok := <-c.ops:
					if !ok {
						open = false
						break more
					}
					// A run shares one reply writer: a change of CLIENT
					// REPLY starts a new run.
					if (x.kind != opRead && x.kind != opLocal) || x.silent != o.silent {
						next = x
						break more
					}
					batch = append(batch, x)
				default:
					break more
				}
			}
		}
		c.outMu.Lock()
		closing := c.complete(batch)
		if !closing {
			c.writePushes(true) // invalidations come after the replies
		}
		c.queued.Add(-int64(len(batch)))
		c.outMu.Unlock()
		if closing {
			c.discard()
			return
		}
	}
}

func (c *conn) flush() error {
	c.outMu.Lock()
	defer c.outMu.Unlock()
	return c.w.Flush()
}

// complete writes the replies of batch, which is one op or a run of reads
// and local commands; the caller holds outMu. It reports whether the
// connection was closed (QUIT, protocol error).
func (c *conn) complete(batch []*op) (closing bool) {
	o := batch[0]
	w := c.w
	if o.silent {
		if c.sink == nil {
			c.sink = bufio.NewWriterSize(io.Discard, 512)
		}
		w = c.sink
	}
	// Messages queued before this reply was ready come first.
	c.writePushes(false)
	defer c.recordMetrics(batch)
	switch o.kind {
	case opPubSub:
		o.write(w, o.act())
	case opReply:
		o.write(w, o.reply)
	case opClose:
		o.write(w, o.reply)
		c.w.Flush()
		c.closeConn()
		return true
	case opWrite, opLogRead:
		c.writeResult(w, o)
		c.pendingWrites.Add(-1)
	case opRead, opLocal:
		c.runOnRedis(w, batch)
		c.readsDone(batch)
	case opBlock:
		c.block(w, o)
	case opStream:
		if !c.writeStream(w, o) {
			c.w.Flush()
			c.nc.Close()
			return true
		}
	}
	return false
}

func (c *conn) recordMetrics(batch []*op) {
	now := time.Now()
	for _, o := range batch {
		c.s.metrics.record(o, now)
		c.s.stats.record(o, now, c)
		if o.untrack != nil {
			o.untrack()
		}
	}
}

// readsDone tells the reader that the reads of batch have run.
func (c *conn) readsDone(batch []*op) {
	var n int64
	for _, o := range batch {
		if o.kind == opRead {
			n++
		}
	}
	if n > 0 && c.pendingReads.Add(-n) == 0 {
		select {
		case c.readsRan <- struct{}{}:
		default:
		}
	}
}

// discard drains the queue after the client went away, so the reader never
// blocks on a full queue.
func (c *conn) discard() {
	for o := range c.ops {
		c.readsDone([]*op{o})
		if o.file != nil {
			o.file.Close() // an opStream never written
		}
	}
}

func (c *conn) writeResult(w *bufio.Writer, o *op) {
	c.writeOutcome(w, o, o.fut, o.kind == opLogRead)
}

// writeOutcome writes o's reply from fut, its request in the log; read
// says whether it only reads (for the text of a timeout).
func (c *conn) writeOutcome(w *bufio.Writer, o *op, fut *raftnode.Future, read bool) {
	raw, err := c.outcome(o, fut)
	for tries := 0; err == nil && bytes.HasPrefix(raw, lockedPrefix) && c.mayRetry(o); tries++ {
		if fut = c.retryLocked(o, tries); fut == nil {
			break
		}
		raw, err = c.outcome(o, fut)
	}
	if err != nil {
		o.writeError(w, c.raw, errorText(err, read))
		return
	}
	if bytes.HasPrefix(raw, askPrefix) {
		raw = c.s.askReply(raw)
	} else if bytes.HasPrefix(raw, notServedPrefix) {
		raw = c.s.notServedReply(raw)
	}
	if o.fix != nil {
		raw = o.fix(raw)
	}
	o.write(w, raw)
}

// outcome waits for fut and returns its reply, or why there is none.
func (c *conn) outcome(o *op, fut *raftnode.Future) ([]byte, error) {
	// A request being applied has an outcome that will come, however long
	// it takes (a script runs until it ends or is killed): its client waits
	// for it, as redis's does. The deadline is for the commit.
	if !c.await(fut.Done(), o.start) && !fut.Applying() {
		return nil, raftnode.ErrTimeout
	}
	select {
	case <-fut.Done():
	case <-c.s.quitting:
		select {
		case <-fut.Done():
		default:
			// Committed and being applied: it takes effect, but this node
			// stops before it can say how.
			return nil, raftnode.ErrTimeout
		}
	}
	return fut.Result()
}

// mayRetry reports whether o, a write refused because a key of it was
// being copied to another shard (apply.LockedText), may be proposed again:
// only while the reader completes it inline, so that no later command of
// the connection is in the log yet and the retry keeps their order.
// A script may answer any error text, this one too, after writing: it is
// never sent again.
func (c *conn) mayRetry(o *op) bool {
	return c.inline && o.kind == opWrite && o.node != nil && o.args != nil && killable(strings.ToLower(string(o.args[0]))) == 0
}

// retryLocked proposes o again after a pause that grows with tries (a
// key's copy takes a few log rounds), as redis holds a client while
// MIGRATE runs; nil when o's deadline comes first.
func (c *conn) retryLocked(o *op, tries int) *raftnode.Future {
	pause := min(time.Millisecond<<min(tries, 5), 20*time.Millisecond)
	if time.Until(o.start.Add(c.s.timeout())) < pause {
		return nil
	}
	time.Sleep(pause)
	return o.node.ProposeTagged(proposalContext(), o.request(), c.id)
}

// request is the log request of an op proposed again (conn.rerun,
// conn.retryLocked), from what the op kept of its command.
func (o *op) request() entry.Request {
	return entry.Request{DB: o.db, Args: o.args, RESP3: o.resp3, Killable: killable(strings.ToLower(string(o.args[0]))), Asking: o.asked}
}

var (
	askPrefix    = []byte("-ASK ")
	lockedPrefix = []byte("-" + apply.LockedText)
)
