package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/raftproxy/raftproxy/backend"
	"github.com/raftproxy/raftproxy/entry"
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
	node  *raftnode.Node
	args  [][]byte
	db    int
	start time.Time
	fix   fixer // rewrites the reply (scripts.go); nil for most commands
	// resp3: the client spoke RESP3 when it sent the command; its reply
	// must be in that protocol even if a later HELLO changes it.
	resp3 bool
	// silent: CLIENT REPLY OFF or SKIP was in force; the command runs but
	// its reply is not sent.
	silent bool
	block  *blockCall // opBlock
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
		c.complete(c.one[:])
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

// dispatch routes one command; it returns false when the connection ends.
func (c *conn) dispatch(args [][]byte) bool {
	c.cls, c.cmdStart = mProxy, c.arrived
	c.stat, c.cmdArgs = c.s.stats.stat(c.s.table, args), args
	if !c.authed {
		if o := c.authGate(args); o != nil {
			o.rejected, o.stat = isErrorReply(o.reply), c.stat
			c.emit(o)
			return true
		}
	}
	if c.tx != nil {
		return c.queue(args)
	}
	sp, errText := c.s.table.lookup(args)
	if sp == nil {
		c.cls = mRefused
		c.emit(c.rejectReply(errText))
		return true
	}
	c.cls = metricClassOf(sp.class)
	c.client.cmd = sp.name
	if o := c.aclCheck(sp, args); o != nil {
		c.emit(o)
		return true
	}
	if o := c.monitorGate(sp); o != nil {
		c.emit(o)
		return true
	}
	c.pauseGate(sp)
	if o := c.busyGate(sp); o != nil {
		c.emit(c.rejectReply(string(o.reply[1 : len(o.reply)-2])))
		return true
	}
	// As redis, MONITOR shows the commands that passed these gates.
	c.feedMonitors(sp, args)
	if c.pubsubGate(sp.name, args) {
		return true
	}
	// XREAD and XREADGROUP block only with BLOCK: by argument, not by name.
	if sp.blocking || ((sp.name == "xread" || sp.name == "xreadgroup") && parseStreamRead(args).block != 0) {
		c.startBlocking(sp, args)
		return true
	}
	switch sp.class {
	case classRefused:
		c.emit(c.rejectReply(fmt.Sprintf("ERR '%s' %s", displayName(sp.name), sp.reason)))
	case classProxy:
		if c.pubsubCommand(sp.name, args) {
			return true
		}
		if handled, open := c.clientCommand(sp.name, args); handled {
			return open
		}
		return c.proxyCommand(sp.name, args)
	case classLocal:
		o := &op{kind: opLocal, args: args, db: c.db}
		if sp.name == "config|get" {
			o.fix = c.s.configGetFix
		}
		c.emit(o)
	case classWrite, classRead:
		c.emit(c.data(sp, args))
	}
	return true
}

func displayName(name string) string {
	return strings.ToUpper(strings.ReplaceAll(name, "|", " "))
}

// serving returns the raft node that can take a data command now, or the
// error reply that says why none can. args (the command, or the first of a
// transaction) name the slot of a -MOVED; read says whether it only reads.
func (c *conn) serving(args [][]byte, read bool) (*raftnode.Node, *op) {
	n := c.s.cfg.Host.Node()
	if n == nil {
		return nil, errReply(errNoCluster)
	}
	if n.Removed() {
		return nil, errReply("ERR " + raftnode.ErrRemoved.Error())
	}
	if !c.s.followerProxy.Load() && !n.IsLeader() && !(read && c.readonly) {
		return nil, c.redirect(n, args)
	}
	if !n.Serving() {
		return nil, errReply("LOADING raftproxy is rebuilding this node's redis from the log")
	}
	return n, nil
}

// data starts a command that reads or writes keys.
func (c *conn) data(sp *spec, args [][]byte) *op {
	n, refused := c.serving(args, sp.class == classRead)
	if refused != nil {
		return refused
	}
	sp, args, fix, early := c.determinize(sp, args, false)
	if early != nil {
		return early
	}
	o := c.route(n, sp, args)
	o.fix = fix
	return o
}

// route sends a data command to the log or queues it as a read.
func (c *conn) route(n *raftnode.Node, sp *spec, args [][]byte) *op {
	now := c.cmdStart
	if sp.class == classRead {
		untrack := c.trackRead(args)
		if c.pendingWrites.Load() > 0 {
			// Ordered after this connection's writes by the log itself; every
			// node runs it, and only this one replies.
			c.pendingWrites.Add(1)
			return &op{kind: opLogRead, fut: n.ProposeTagged(context.Background(), c.request(sp, args), c.id), start: now, untrack: untrack}
		}
		c.pendingReads.Add(1)
		return &op{kind: opRead, read: n.StartRead(), node: n, args: args, db: c.db, start: now, untrack: untrack}
	}
	if o := refuseAsync(sp, args); o != nil {
		return o
	}
	if o := c.oomRefusal(sp); o != nil {
		return o
	}
	c.waitReads()
	c.pendingWrites.Add(1)
	// Propose bounds its own waits (for a leader, for room in its queue).
	// The tag tells this connection's own writes (CLIENT TRACKING NOLOOP).
	return &op{kind: opWrite, fut: n.ProposeTagged(context.Background(), c.request(sp, args), c.id), start: now}
}

// request is the log request of a data command.
func (c *conn) request(sp *spec, args [][]byte) entry.Request {
	return entry.Request{DB: c.db, Args: args, RESP3: c.client.resp3, Killable: killable(sp.name)}
}

// refuseAsync refuses FLUSHALL/FLUSHDB ASYNC: redis would free memory in
// the background, and a read could see the keys half gone on one node only.
func refuseAsync(sp *spec, args [][]byte) *op {
	if (sp.name == "flushall" || sp.name == "flushdb") && len(args) > 1 && strings.EqualFold(string(args[1]), "async") {
		return errReply(fmt.Sprintf("ERR '%s ASYNC' is not supported by raftproxy: use %s or %s SYNC",
			strings.ToUpper(sp.name), strings.ToUpper(sp.name), strings.ToUpper(sp.name)))
	}
	return nil
}

// waitReads waits until the reads queued before a write have run: once
// proposed, the write may be applied at any moment.
func (c *conn) waitReads() {
	for c.pendingReads.Load() > 0 {
		<-c.readsRan
	}
}

// errorText maps a raft outcome to the reply a Redis client understands.
func errorText(err error, read bool) string {
	switch {
	case errors.Is(err, raftnode.ErrNoLeader):
		return errNoLeader
	case errors.Is(err, raftnode.ErrTimeout):
		if read {
			return "TIMEOUT no quorum for read"
		}
		return "TIMEOUT not known to be committed; the write may or may not take effect"
	case errors.Is(err, raftnode.ErrLoading):
		return "LOADING raftproxy is rebuilding this node's redis from the log"
	case errors.Is(err, raftnode.ErrStopped):
		return "CLUSTERDOWN raft node is stopping"
	case errors.Is(err, raftnode.ErrKilled):
		return killedText
	case errors.Is(err, raftnode.ErrDiskFull):
		return "MISCONF raftproxy: " + err.Error()
	case errors.Is(err, errExpiryChurn):
		return err.Error()
	case errors.As(err, new(*raftnode.BusyError)):
		var be *raftnode.BusyError
		errors.As(err, &be)
		return busyText(be.Kind)
	case errors.Is(err, raftnode.ErrTransferTimeout), errors.Is(err, raftnode.ErrOtherLeader), errors.Is(err, raftnode.ErrNoSuchMember):
		return "ERR " + err.Error()
	}
	return "ERR " + err.Error()
}

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
	// A request being applied has an outcome that will come, however long
	// it takes (a script runs until it ends or is killed): its client waits
	// for it, as redis's does. The deadline is for the commit.
	if !c.await(o.fut.Done(), o.start) && !o.fut.Applying() {
		o.writeError(w, c.raw, errorText(raftnode.ErrTimeout, o.kind == opLogRead))
		return
	}
	select {
	case <-o.fut.Done():
	case <-c.s.quitting:
		select {
		case <-o.fut.Done():
		default:
			// Committed and being applied: it takes effect, but this node
			// stops before it can say how.
			o.writeError(w, c.raw, errorText(raftnode.ErrTimeout, o.kind == opLogRead))
			return
		}
	}
	raw, err := o.fut.Result()
	if err != nil {
		o.writeError(w, c.raw, errorText(err, o.kind == opLogRead))
		return
	}
	if o.fix != nil {
		raw = o.fix(raw)
	}
	o.write(w, raw)
}

// readShared runs a run of reads on the server's shared read connection,
// in one request: each read once its ReadIndex has been reached.
func (c *conn) readShared(w *bufio.Writer, batch []*op) {
	r := &readReq{node: batch[0].node, cmds: make([]readCmd, 0, len(batch)), done: make(chan struct{})}
	// errs[i]: why batch[i] may not run; nil when it is in r.
	var one [1]error
	errs := one[:]
	if len(batch) > 1 {
		errs = make([]error, len(batch))
	}
	var errText string
	for i, o := range batch {
		if errs[i] = c.waitRead(o); errs[i] != nil {
			continue
		}
		r.cmds = append(r.cmds, readCmd{db: o.db, args: o.args, resp3: o.resp3, now: o.read.TimeMs()})
	}
	if len(r.cmds) > 0 {
		c.s.reads.reqs <- r
		switch {
		case !c.await(r.done, batch[0].start):
			// The pipe still holds r, which is dropped.
			errText = errorText(raftnode.ErrTimeout, true)
		case r.err != nil:
			errText = errorText(r.err, true)
		}
	}
	j := 0
	for i, o := range batch {
		if errs[i] != nil {
			o.writeError(w, c.raw, errorText(errs[i], true))
			continue
		}
		reply := r.cmds[j].reply
		j++
		if errText != "" {
			o.writeError(w, c.raw, errText)
			continue
		}
		if o.fix != nil {
			reply = o.fix(reply)
		}
		o.write(w, reply)
	}
}

// waitRead waits until o's read may run, at most until its deadline.
func (c *conn) waitRead(o *op) error {
	if !c.await(o.read.Ready(), o.start) {
		return raftnode.ErrTimeout
	}
	return o.read.Err()
}

// await waits for done until the request timeout after start and reports
// whether done closed. Most waits end at once (a pipeline's later replies
// are ready when their turn comes); the rest use the connection's timer.
func (c *conn) await(done <-chan struct{}, start time.Time) bool {
	select {
	case <-done:
		return true
	default:
	}
	d := time.Until(start.Add(c.s.timeout()))
	if c.timer == nil {
		c.timer = time.NewTimer(d)
	} else {
		c.timer.Reset(d)
	}
	defer c.timer.Stop()
	select {
	case <-done:
		return true
	case <-c.timer.C:
		return false
	}
}

// runOnRedis runs a run of reads and local commands on the local redis in
// one round trip, after each read's ReadIndex has been reached.
func (c *conn) runOnRedis(w *bufio.Writer, batch []*op) {
	if allReads(batch) {
		c.readShared(w, batch)
		return
	}
	errs := make([]string, len(batch))
	var n *raftnode.Node
	for i, o := range batch {
		if o.kind != opRead {
			continue
		}
		n = o.node
		if err := c.waitRead(o); err != nil {
			errs[i] = errorText(err, true)
		}
	}
	if err := c.ensureRedis(n); err != nil {
		fail(errs, batch, errorText(err, true))
	}
	// Keys expired by the reads' time are deleted through the log first,
	// outside the read gate (the applier may need it shut meanwhile).
	if err := c.expireBeforeReads(batch, errs, n); err != nil {
		fail(errs, batch, errorText(err, true))
	}
	// Reads keep out of redis while it holds a script's undecided effects.
	if n != nil && !failed(errs) {
		ctx, cancel := context.WithDeadline(context.Background(), batch[0].start.Add(c.s.timeout()))
		leave, err := n.EnterRead(ctx)
		cancel()
		if err != nil {
			fail(errs, batch, errorText(err, true))
		} else {
			defer leave()
		}
	}
	// The generation check brackets the reads: if redis was being rebuilt
	// at any moment in between, what they saw may be partial.
	var gen uint64
	if n != nil {
		gen = n.Generation()
		if gen%2 == 1 {
			fail(errs, batch, errorText(raftnode.ErrLoading, true))
		}
	}
	sent := c.send(batch, errs)
	if sent > 0 {
		c.receive(w, batch, errs, n, gen)
		return
	}
	for i := range batch {
		batch[i].writeError(w, c.raw, errs[i])
	}
}

// expireBeforeReads runs Server.expireBeforeReads for the reads of batch
// that may still run.
func (c *conn) expireBeforeReads(batch []*op, errs []string, n *raftnode.Node) error {
	if c.redis == nil || n == nil {
		return nil
	}
	var checks []readCheck
	for i, o := range batch {
		if o.kind != opRead || errs[i] != "" {
			continue
		}
		if ch, ok := c.s.checkOf(o.db, o.args, o.read.TimeMs()); ok {
			checks = addCheck(checks, ch)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.s.timeout())
	defer cancel()
	if err := c.s.expireBeforeReads(ctx, c.redis, n, checks); err != nil {
		c.dropRedis()
		return err
	}
	return nil
}

func allReads(batch []*op) bool {
	for _, o := range batch {
		if o.kind != opRead {
			return false
		}
	}
	return true
}

func b2u(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}

// failed reports whether every command of a batch has an error already.
func failed(errs []string) bool {
	for _, e := range errs {
		if e == "" {
			return false
		}
	}
	return true
}

func fail(errs []string, batch []*op, msg string) {
	for i := range batch {
		if errs[i] == "" {
			errs[i] = msg
		}
	}
}

// send writes the commands that have no error yet; it returns how many.
func (c *conn) send(batch []*op, errs []string) int {
	if c.redis == nil {
		return 0
	}
	sent := 0
	c.skip = append(c.skip[:0], make([]uint8, len(batch))...)
	for i, o := range batch {
		if errs[i] != "" {
			continue
		}
		// The connection follows its client's protocol, switching (like
		// the database) only when a command needs another one.
		args := o.args
		if o.kind == opRead {
			args = c.s.readArgs(o.db, args, o.read.TimeMs())
		}
		skip, err := c.redis.Send(o.db, o.resp3, args)
		if err != nil {
			c.dropRedis()
			fail(errs, batch, errorText(raftnode.ErrLoading, true))
			return 0
		}
		c.skip[i] = uint8(skip)
		sent++
	}
	if sent > 0 && c.redis.Flush() != nil {
		c.dropRedis()
		fail(errs, batch, errorText(raftnode.ErrLoading, true))
		return 0
	}
	return sent
}

func (c *conn) receive(w *bufio.Writer, batch []*op, errs []string, n *raftnode.Node, gen uint64) {
	replies := make([][]byte, len(batch))
	var buf []byte
	for i := range batch {
		if errs[i] != "" {
			continue
		}
		start := len(buf)
		var err error
		if buf, err = c.redis.Receive(buf, int(c.skip[i])); err != nil {
			c.dropRedis()
			fail(errs, batch, errorText(raftnode.ErrLoading, true))
			break
		}
		replies[i] = buf[start:len(buf):len(buf)]
	}
	if n != nil && (n.Generation() != gen || c.s.tainted()) {
		for i, o := range batch {
			if o.kind == opRead && errs[i] == "" {
				errs[i] = errorText(raftnode.ErrLoading, true)
			}
		}
	}
	for i := range batch {
		if errs[i] != "" {
			batch[i].writeError(w, c.raw, errs[i])
			continue
		}
		if batch[i].fix != nil {
			replies[i] = batch[i].fix(replies[i])
		}
		batch[i].write(w, replies[i])
	}
}

// ensureRedis connects this client's redis connection, and checks that the
// redis is the one the log was replayed into.
func (c *conn) ensureRedis(n *raftnode.Node) error {
	if c.redis != nil {
		return nil
	}
	rc, err := c.s.dialRedis(n)
	if err != nil {
		return err
	}
	c.redis = rc
	return nil
}

func (c *conn) dropRedis() {
	if c.redis != nil {
		c.redis.Close()
		c.redis = nil
	}
}

// proxyCommand answers the commands the proxy handles itself. It returns
// false when the connection ends.
func (c *conn) proxyCommand(name string, args [][]byte) bool {
	switch name {
	case "ping":
		switch len(args) {
		case 1:
			c.emit(&op{kind: opReply, reply: resp.AppendSimple(nil, "PONG")})
		case 2:
			c.emit(&op{kind: opReply, reply: resp.AppendBulk(nil, args[1])})
		default:
			c.emit(errReply("ERR wrong number of arguments for 'ping' command"))
		}
	case "echo":
		c.emit(&op{kind: opReply, reply: resp.AppendBulk(nil, args[1])})
	case "quit":
		c.emit(&op{kind: opClose, reply: resp.AppendSimple(nil, "OK")})
		return false
	case "select":
		db, err := strconv.Atoi(string(args[1]))
		switch {
		case err != nil:
			c.emit(errReply(errNotInteger))
		case db < 0 || db >= c.s.databases:
			c.emit(errReply("ERR DB index is out of range"))
		default:
			c.db = db
			c.emit(&op{kind: opReply, reply: resp.AppendSimple(nil, "OK")})
		}
	case "multi":
		c.tx = &txState{db: c.db}
		c.emit(&op{kind: opReply, reply: resp.AppendSimple(nil, "OK")})
	case "exec":
		c.emit(errReply("ERR EXEC without MULTI"))
	case "discard":
		c.emit(errReply("ERR DISCARD without MULTI"))
	case "watch":
		c.emit(c.watchKeys(args))
	case "unwatch":
		c.unwatch()
		c.emit(&op{kind: opReply, reply: resp.AppendSimple(nil, "OK")})
	case "raft.cluster":
		c.emit(c.raftCluster(args))
	case "raft.node":
		c.emit(c.raftNode(args))
	case "raft.transfer_leader":
		if len(args) > 2 {
			c.emit(errReply("ERR wrong number of arguments for 'raft.transfer_leader' command"))
			break
		}
		c.emit(c.raftTransferLeader(args))
	case "raft.config":
		c.emit(c.raftConfig(args))
	case "raft.debug":
		c.emit(c.raftDebug(args))
	case "raft.backup":
		c.emit(c.raftBackup(args))
	case "script|kill", "function|kill":
		c.emit(c.killCommand(name))
	case "acl|setuser", "acl|deluser", "acl|getuser", "acl|list", "acl|users", "acl|whoami", "acl|dryrun":
		c.emit(c.aclCommand(name, args))
	case "monitor":
		c.emit(c.monitorCommand())
	case "slowlog|get", "slowlog|len", "slowlog|reset":
		c.emit(c.slowlogCommand(name, args))
	case "config|resetstat":
		// The local redis's counters are reset too: INFO shows its others.
		c.s.stats.reset()
		c.emit(&op{kind: opLocal, args: args, db: c.db})
	case "raft.info":
		c.emit(&op{kind: opReply, reply: resp.AppendBulkString(nil, c.s.raftInfo())})
	case "info":
		c.emit(c.infoCommand(args))
	case "role":
		c.emit(c.role())
	case "debug":
		c.emit(c.debug(args))
	case "wait", "waitaof":
		c.emit(c.wait(name, args))
	case "config|set":
		c.emit(c.configSet(args))
	case "readonly", "readwrite":
		c.readonly = name == "readonly"
		c.emit(&op{kind: opReply, reply: resp.AppendSimple(nil, "OK")})
	case "asking":
		// Slots never migrate (one shard owns them all), so raftproxy never
		// sends -ASK; a client may still send ASKING.
		c.emit(&op{kind: opReply, reply: resp.AppendSimple(nil, "OK")})
	default:
		if strings.HasPrefix(name, "cluster|") {
			c.emit(c.cluster(name, args))
			break
		}
		if strings.HasPrefix(name, "latency|") {
			c.emit(c.latencyCommand(name, args))
			break
		}
		c.emit(errReply(unknownCommand(args)))
	}
	return true
}
