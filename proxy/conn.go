package proxy

import (
	"bufio"
	"crypto/tls"
	"errors"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/raftproxy/raftproxy/backend"
	"github.com/raftproxy/raftproxy/raftnode"
	"github.com/raftproxy/raftproxy/resp"
)

type opKind uint8

const (
	opReply   opKind = iota // reply is ready
	opWrite                 // wait for the raft future
	opLogRead               // a read that went through the log: wait for the raft future
	opRead                  // wait for the read index, then run on the local redis
	opLocal                 // run on the local redis now
	opClose                 // write reply, then close the connection
	opBlock                 // a blocking command (blocking.go)
	opPubSub                // run act on the writer, write what it returns (pubsub.go)
	opStream                // write reply, then size bytes of file as a bulk string's body (backup.go)
)

// op is one command in flight on a connection. Ops are queued in arrival
// order; the writer completes them in that order.
type op struct {
	kind  opKind
	reply []byte
	fut   *raftnode.Future
	read  raftnode.ReadWait
	node  Group
	args  [][]byte
	slot  int // an opRead's hash slot, -1 when keyless or not sharded
	db    int
	start time.Time
	fix   fixer // rewrites the reply (scripts.go); nil for most commands
	// resp3: the client spoke RESP3 when it sent the command; its reply
	// must be in that protocol even if a later HELLO changes it.
	resp3 bool
	// silent: CLIENT REPLY OFF or SKIP was in force; the command runs but
	// its reply is not sent.
	silent bool
	// asked: the command came after ASKING (an opWrite's, for a retry).
	asked bool
	block *blockCall // opBlock
	// act, for opPubSub, changes the connection's subscriptions in the
	// broker (or reads it) as its reply is written, and returns the reply.
	act func() []byte
	// cls and failed label the command's metrics (metrics.go); failed is
	// set as its reply is written.
	cls    metricClass
	failed bool
	// file and size, for opStream: the bulk string streamed after reply.
	file *os.File
	size int64
	// The command's statistics (cmdstats.go): its counters (nil: none),
	// the client's own arguments, whether it was refused before it ran,
	// the counters of a transaction's commands, and the first word of its
	// error reply.
	stat      *cmdStat
	orig      [][]byte
	rejected  bool
	inner     []*cmdStat
	errPrefix string
	// untrack ends a tracked read once its reply is written (tracking.go).
	untrack func()
}

// conn is one client connection: a reader goroutine parses and dispatches
// commands without waiting for their results (so pipelined commands are in
// flight together), and a writer goroutine sends the replies in order. A
// command that arrives alone, with nothing queued ahead of it, is completed
// by the reader itself: a client that sends one command at a time then
// costs one goroutine hand-off less per command.
type conn struct {
	s   *Server
	nc  net.Conn
	id  uint64
	rd  *resp.Reader
	ops chan *op
	db  int
	tx  *txState // non-nil between MULTI and EXEC or DISCARD
	// watch is the id of this connection's open watch (WATCH), or 0.
	watch uint64
	// The reader's client state (HELLO, CLIENT, RESET): see client.go.
	client clientState
	// authed: the client may run commands (AUTH done, or the default user
	// takes no password); user is who it is ("" for default: acl.go).
	authed bool
	user   string
	// info is what CLIENT LIST shows of this connection to other ones.
	info clientInfo
	// monitoring: the client sent MONITOR (monitor.go).
	monitoring bool
	// tr is the connection's CLIENT TRACKING (tracking.go); resp3 mirrors
	// client.resp3 for other goroutines.
	tr    trackState
	resp3 atomic.Bool
	// readonly (READONLY, as to a Redis Cluster replica): reads are served
	// on a follower even with follower-proxy off.
	readonly bool
	// asking is set by ASKING, for the next command (asked, while it is
	// dispatched): a slot this shard imports then serves it, as after a
	// Redis Cluster -ASK.
	asking, asked bool
	// viaLog: the command being dispatched is in a slot being moved, whose
	// reads too go through the log, where the applier decides them.
	viaLog bool
	// slot is the hash slot of the keyed command being dispatched in a
	// sharded cluster (ownSlot), -1 otherwise: a read checks it again
	// after it ran (slotChanged).
	slot int
	// ps is the connection's pub/sub subscriptions (pubsub.go).
	ps pubsubState
	// cls and cmdStart are the metrics class and arrival time of the
	// command being dispatched, for the ops it emits.
	cls      metricClass
	cmdStart time.Time
	// stat and cmdArgs are the statistics and arguments of the command
	// being dispatched, for the ops it emits (cmdstats.go).
	stat    *cmdStat
	cmdArgs [][]byte
	// arrived is when the bytes of the command being dispatched were read:
	// commands that came in one read share it (a clock read costs ~100 ns
	// here, three per command showed as 5% of a pipelined GET profile).
	arrived  time.Time
	sameRead bool

	// queued counts ops handed to the writer and not yet completed.
	queued atomic.Int64
	// outMu guards the output side (w, redis, raw, sel): the writer holds
	// it while it completes ops, the reader while it completes one inline.
	outMu sync.Mutex
	w     *bufio.Writer
	// out queues replies for the socket when an output limit is set
	// (limits.go); nil otherwise.
	out *outQueue
	one [1]*op // the reader's batch of one, so emit does not allocate
	// inline: the reader is completing a lone command (emit), so none of
	// the connection's later commands is dispatched meanwhile.
	inline bool

	// Reads queued and not yet run. A write waits for them before it is
	// proposed: once proposed it may be applied at any moment, and a read
	// queued before it must not see it.
	pendingReads atomic.Int64
	// Writes proposed and not yet answered. A read behind one goes through
	// the log right after it instead of waiting for its reply, so a mixed
	// pipeline costs one log round rather than one per read-write switch.
	pendingWrites atomic.Int64
	readsRan      chan struct{}

	redis *backend.Conn
	timer *time.Timer // reused by writeResult
	raw   []byte
	skip  []uint8 // skip[i]: replies (SELECT, HELLO) to discard before batch[i]'s
	sink  *bufio.Writer

	// Blocking commands (blocking.go). The reader's: blockEnd is the
	// blocked command's done until the reader saw it; ahead, held and
	// readErr are the read-ahead meanwhile. gone is closed when the client
	// went away, which ends a wait.
	blockEnd chan struct{}
	ahead    *readAhead
	held     [][][]byte
	readErr  error
	gone     chan struct{}
	goneOnce sync.Once
}

func newConn(s *Server, nc net.Conn) *conn {
	if tc, ok := nc.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	c := &conn{s: s, nc: nc, id: s.nextID.Add(1), rd: resp.NewReader(nc, 16<<10), w: bufio.NewWriterSize(nc, 32<<10),
		ops: make(chan *op, 1024), readsRan: make(chan struct{}, 1), gone: make(chan struct{})}
	c.initClient(nc)
	c.authed = s.defaultOpen()
	if s.cfg.OutputLimit > 0 {
		c.out = newOutQueue(nc, s.cfg.OutputLimit)
		c.w.Reset(c.out)
	}
	return c
}

// emit completes o: on the reader goroutine when nothing is queued ahead
// of it and the client has sent nothing more (one command at a time), else
// by handing it to the writer.
func (c *conn) emit(o *op) {
	o.resp3, o.silent = c.client.resp3, c.client.silent()
	o.cls = c.cls
	if o.stat == nil && !o.rejected {
		o.stat = c.stat
	}
	if o.orig == nil {
		o.orig = c.cmdArgs
	}
	if o.start.IsZero() {
		o.start = c.cmdStart
	}
	// A blocking command always goes to the writer, so the reader can
	// notice a disconnect meanwhile; while it reads ahead the reader must
	// not touch c.rd.
	if o.kind != opClose && o.kind != opBlock && c.ahead == nil && len(c.held) == 0 && c.queued.Load() == 0 && c.rd.Drained() {
		c.outMu.Lock()
		c.one[0] = o
		c.inline = true
		c.complete(c.one[:])
		c.inline = false
		c.one[0] = nil
		c.writePushes(true)
		err := c.w.Flush()
		c.outMu.Unlock()
		if err != nil {
			// The client is gone; the next read fails and ends the connection.
			c.nc.Close()
		}
		return
	}
	c.queued.Add(1)
	c.ops <- o
}

func (c *conn) stopReading() {
	nc := c.nc
	if tc, ok := nc.(*tls.Conn); ok {
		// Closing the socket's read side stops TLS reads too, and lets
		// queued replies still go out.
		nc = tc.NetConn()
	}
	if tc, ok := nc.(*net.TCPConn); ok {
		tc.CloseRead()
		return
	}
	c.nc.Close()
}

func (c *conn) serve() {
	defer c.s.forget(c)
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.writeLoop()
	}()
	c.readLoop()
	c.stopAhead()
	c.goneOnce.Do(func() { close(c.gone) })
	c.unwatch()
	c.stopMonitoring()
	c.trackingOff()
	close(c.ops)
	<-done
	c.pubsubClose()
	if c.out != nil && c.out.overflowed() {
		c.s.log.Warn("disconnected a client that does not read its replies", "client", c.info.addr, "limit_bytes", c.s.cfg.OutputLimit)
	}
	c.closeConn()
	if c.redis != nil {
		c.redis.Close()
	}
}

func (c *conn) readLoop() {
	for {
		args, err := c.nextCommand()
		if err != nil {
			var pe *resp.ProtocolError
			if errors.As(err, &pe) {
				c.cls, c.cmdStart = mRefused, time.Now()
				c.emit(&op{kind: opClose, reply: resp.AppendError(nil, "ERR "+pe.Msg)})
			}
			return
		}
		if !c.sameRead {
			c.arrived = time.Now()
		}
		// Bytes of the next command already read arrived with this one
		// (c.rd is the read-ahead's while one runs: see nextCommand).
		c.sameRead = c.ahead == nil && len(c.held) == 0 && c.rd.Buffered() > 0
		ok := c.dispatch(args)
		c.afterCommand()
		if !ok {
			return
		}
	}
}

func errReply(msg string) *op { return &op{kind: opReply, reply: resp.AppendError(nil, msg)} }

// write writes o's reply and notes whether it is an error (for the metrics
// and statistics).
func (o *op) write(w *bufio.Writer, raw []byte) {
	o.failed = isErrorReply(raw)
	if o.failed {
		o.errPrefix = errorPrefix(raw)
	}
	w.Write(raw)
}

// writeError writes an error reply for o, built in buf.
func (o *op) writeError(w *bufio.Writer, buf []byte, msg string) {
	o.write(w, resp.AppendError(buf[:0], msg))
}

// rejectReply is an error reply for a command refused before it ran
// (counted as rejected_calls).
func (c *conn) rejectReply(msg string) *op {
	o := errReply(msg)
	o.rejected, o.stat = true, c.stat
	return o
}
