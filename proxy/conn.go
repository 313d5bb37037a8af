package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/raftproxy/raftproxy/backend"
	"github.com/raftproxy/raftproxy/raftnode"
	"github.com/raftproxy/raftproxy/resp"
)

type opKind uint8

const (
	opReply opKind = iota // reply is ready
	opWrite               // wait for the raft future
	opRead                // wait for the read index, then run on the local redis
	opLocal               // run on the local redis now
	opClose               // write reply, then close the connection
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
}

// conn is one client connection: a reader goroutine parses and dispatches
// commands without waiting for their results (so pipelined commands are in
// flight together), and a writer goroutine sends the replies in order.
type conn struct {
	s   *Server
	nc  net.Conn
	id  uint64
	ops chan *op
	db  int
	tx  *txState // non-nil between MULTI and EXEC or DISCARD

	// Reads queued and not yet run. A write waits for them before it is
	// proposed: once proposed it may be applied at any moment, and a read
	// queued before it must not see it.
	pendingReads atomic.Int64
	readsRan     chan struct{}

	// Owned by the writer goroutine.
	redis *backend.Conn
	raw   []byte
	sel   []bool // sel[i]: a SELECT was sent before batch[i]
}

func newConn(s *Server, nc net.Conn) *conn {
	if tc, ok := nc.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	return &conn{s: s, nc: nc, id: s.nextID.Add(1), ops: make(chan *op, 1024), readsRan: make(chan struct{}, 1)}
}

func (c *conn) stopReading() {
	if tc, ok := c.nc.(*net.TCPConn); ok {
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
	close(c.ops)
	<-done
	c.nc.Close()
	if c.redis != nil {
		c.redis.Close()
	}
}

func (c *conn) readLoop() {
	r := resp.NewReader(c.nc, 16<<10)
	for {
		args, err := r.ReadCommand()
		if err != nil {
			var pe *resp.ProtocolError
			if errors.As(err, &pe) {
				c.ops <- &op{kind: opClose, reply: resp.AppendError(nil, "ERR "+pe.Msg)}
			}
			return
		}
		if !c.dispatch(args) {
			return
		}
	}
}

func errReply(msg string) *op { return &op{kind: opReply, reply: resp.AppendError(nil, msg)} }

// dispatch routes one command; it returns false when the connection ends.
func (c *conn) dispatch(args [][]byte) bool {
	if c.tx != nil {
		return c.queue(args)
	}
	sp, errText := c.s.table.lookup(args)
	if sp == nil {
		c.ops <- errReply(errText)
		return true
	}
	switch sp.class {
	case classRefused:
		c.ops <- errReply(fmt.Sprintf("ERR '%s' %s", displayName(sp.name), sp.reason))
	case classProxy:
		return c.proxyCommand(sp.name, args)
	case classLocal:
		c.ops <- &op{kind: opLocal, args: args, db: c.db}
	case classWrite, classRead:
		c.ops <- c.data(sp, args)
	}
	return true
}

func displayName(name string) string {
	return strings.ToUpper(strings.ReplaceAll(name, "|", " "))
}

// serving returns the raft node that can take a data command now, or the
// error reply that says why none can.
func (c *conn) serving() (*raftnode.Node, *op) {
	n := c.s.cfg.Host.Node()
	if n == nil {
		return nil, errReply("NOCLUSTER No Raft Cluster")
	}
	if n.Removed() {
		return nil, errReply("ERR " + raftnode.ErrRemoved.Error())
	}
	if !c.s.followerProxy.Load() && !n.IsLeader() {
		l, ok := n.Leader()
		if !ok || l.Addr == "" {
			return nil, errReply("CLUSTERDOWN No raft leader")
		}
		return nil, errReply("MOVED 0 " + l.Addr)
	}
	if !n.Serving() {
		return nil, errReply("LOADING raftproxy is rebuilding this node's redis from the log")
	}
	return n, nil
}

// data starts a command that reads or writes keys.
func (c *conn) data(sp *spec, args [][]byte) *op {
	n, refused := c.serving()
	if refused != nil {
		return refused
	}
	now := time.Now()
	if sp.class == classRead {
		c.pendingReads.Add(1)
		return &op{kind: opRead, read: n.StartRead(), node: n, args: args, db: c.db, start: now}
	}
	if o := refuseAsync(sp, args); o != nil {
		return o
	}
	args = absoluteTimes(sp.name, args, now.UnixMilli())
	c.waitReads()
	ctx, cancel := context.WithTimeout(context.Background(), c.s.timeout())
	defer cancel()
	return &op{kind: opWrite, fut: n.Propose(ctx, c.db, args), start: now}
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
		return "CLUSTERDOWN No raft leader"
	case errors.Is(err, raftnode.ErrTimeout):
		if read {
			return "TIMEOUT no quorum for read"
		}
		return "TIMEOUT not known to be committed; the write may or may not take effect"
	case errors.Is(err, raftnode.ErrLoading):
		return "LOADING raftproxy is rebuilding this node's redis from the log"
	case errors.Is(err, raftnode.ErrStopped):
		return "CLUSTERDOWN raft node is stopping"
	case errors.Is(err, raftnode.ErrTransferTimeout), errors.Is(err, raftnode.ErrOtherLeader), errors.Is(err, raftnode.ErrNoSuchMember):
		return "ERR " + err.Error()
	}
	return "ERR " + err.Error()
}

func (c *conn) writeLoop() {
	w := bufio.NewWriterSize(c.nc, 32<<10)
	var next *op
	open := true
	batch := make([]*op, 0, 64)
	for {
		o := next
		next = nil
		if o == nil {
			if !open {
				w.Flush()
				return
			}
			select {
			case o, open = <-c.ops:
			default:
				// Flush only when no reply is ready to follow, so a pipeline
				// gets its replies in few writes.
				if w.Flush() != nil {
					c.discard()
					return
				}
				o, open = <-c.ops
			}
			if o == nil {
				continue
			}
		}
		switch o.kind {
		case opReply:
			w.Write(o.reply)
		case opClose:
			w.Write(o.reply)
			w.Flush()
			c.nc.Close()
			c.discard()
			return
		case opWrite:
			c.writeResult(w, o)
		case opRead, opLocal:
			batch = append(batch[:0], o)
		more:
			for len(batch) < cap(batch) && open {
				select {
				case x, ok := <-c.ops:
					if !ok {
						open = false
						break more
					}
					if x.kind != opRead && x.kind != opLocal {
						next = x
						break more
					}
					batch = append(batch, x)
				default:
					break more
				}
			}
			c.runOnRedis(w, batch)
			c.readsDone(batch)
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
	}
}

func (c *conn) writeResult(w *bufio.Writer, o *op) {
	t := time.NewTimer(time.Until(o.start.Add(c.s.timeout())))
	defer t.Stop()
	select {
	case <-o.fut.Done():
		raw, err := o.fut.Result()
		if err != nil {
			w.Write(resp.AppendError(c.raw[:0], errorText(err, false)))
			return
		}
		w.Write(raw)
	case <-t.C:
		w.Write(resp.AppendError(c.raw[:0], errorText(raftnode.ErrTimeout, false)))
	}
}

// runOnRedis runs a run of reads and local commands on the local redis in
// one round trip, after each read's ReadIndex has been reached.
func (c *conn) runOnRedis(w *bufio.Writer, batch []*op) {
	errs := make([]string, len(batch))
	var n *raftnode.Node
	for i, o := range batch {
		if o.kind != opRead {
			continue
		}
		n = o.node
		ctx, cancel := context.WithDeadline(context.Background(), o.start.Add(c.s.timeout()))
		if err := o.read.Wait(ctx); err != nil {
			errs[i] = errorText(err, true)
		}
		cancel()
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
	if err := c.ensureRedis(n); err != nil {
		fail(errs, batch, errorText(err, true))
	}
	sent := c.send(batch, errs)
	if sent > 0 {
		c.receive(w, batch, errs, n, gen)
		return
	}
	for i := range batch {
		w.Write(resp.AppendError(c.raw[:0], errs[i]))
	}
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
	c.sel = append(c.sel[:0], make([]bool, len(batch))...)
	for i, o := range batch {
		if errs[i] != "" {
			continue
		}
		sel, err := c.redis.Select(o.db)
		if err == nil {
			err = c.redis.Write(o.args)
		}
		if err != nil {
			c.dropRedis()
			fail(errs, batch, errorText(raftnode.ErrLoading, true))
			return 0
		}
		c.sel[i] = sel
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
		if c.sel[i] {
			if _, err := c.redis.ReadReply(nil); err != nil {
				c.dropRedis()
				fail(errs, batch, errorText(raftnode.ErrLoading, true))
				break
			}
		}
		start := len(buf)
		var err error
		buf, err = c.redis.ReadReply(buf)
		if err != nil {
			c.dropRedis()
			fail(errs, batch, errorText(raftnode.ErrLoading, true))
			break
		}
		replies[i] = buf[start:len(buf):len(buf)]
	}
	if n != nil && n.Generation() != gen {
		for i, o := range batch {
			if o.kind == opRead && errs[i] == "" {
				errs[i] = errorText(raftnode.ErrLoading, true)
			}
		}
	}
	for i := range batch {
		if errs[i] != "" {
			w.Write(resp.AppendError(c.raw[:0], errs[i]))
			continue
		}
		w.Write(replies[i])
	}
}

// ensureRedis connects this client's redis connection, and checks that the
// redis is the one the log was replayed into.
func (c *conn) ensureRedis(n *raftnode.Node) error {
	if c.redis != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	rc, err := backend.Dial(ctx, c.s.cfg.RedisAddr)
	if err != nil {
		if n != nil {
			n.Poke()
		}
		return raftnode.ErrLoading
	}
	if n != nil {
		id, err := rc.RunID()
		if err != nil || id != c.s.cfg.RunID() {
			rc.Close()
			n.Poke()
			return raftnode.ErrLoading
		}
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
			c.ops <- &op{kind: opReply, reply: resp.AppendSimple(nil, "PONG")}
		case 2:
			c.ops <- &op{kind: opReply, reply: resp.AppendBulk(nil, args[1])}
		default:
			c.ops <- errReply("ERR wrong number of arguments for 'ping' command")
		}
	case "echo":
		c.ops <- &op{kind: opReply, reply: resp.AppendBulk(nil, args[1])}
	case "quit":
		c.ops <- &op{kind: opClose, reply: resp.AppendSimple(nil, "OK")}
		return false
	case "select":
		db, err := strconv.Atoi(string(args[1]))
		switch {
		case err != nil:
			c.ops <- errReply("ERR value is not an integer or out of range")
		case db < 0 || db >= c.s.databases:
			c.ops <- errReply("ERR DB index is out of range")
		default:
			c.db = db
			c.ops <- &op{kind: opReply, reply: resp.AppendSimple(nil, "OK")}
		}
	case "hello":
		c.ops <- c.hello(args)
	case "multi":
		c.tx = &txState{db: c.db}
		c.ops <- &op{kind: opReply, reply: resp.AppendSimple(nil, "OK")}
	case "exec":
		c.ops <- errReply("ERR EXEC without MULTI")
	case "discard":
		c.ops <- errReply("ERR DISCARD without MULTI")
	case "unwatch":
		// Nothing is ever watched (WATCH is refused), so there is nothing to
		// forget; clients send UNWATCH when they reset a connection.
		c.ops <- &op{kind: opReply, reply: resp.AppendSimple(nil, "OK")}
	case "raft.cluster":
		c.ops <- c.raftCluster(args)
	case "raft.node":
		c.ops <- c.raftNode(args)
	case "raft.transfer_leader":
		if len(args) > 2 {
			c.ops <- errReply("ERR wrong number of arguments for 'raft.transfer_leader' command")
			break
		}
		c.ops <- c.raftTransferLeader(args)
	case "raft.config":
		c.ops <- c.raftConfig(args)
	case "raft.debug":
		c.ops <- c.raftDebug(args)
	case "raft.info":
		c.ops <- &op{kind: opReply, reply: resp.AppendBulkString(nil, c.s.raftInfo())}
	default:
		c.ops <- errReply(unknownCommand(args))
	}
	return true
}

func (c *conn) hello(args [][]byte) *op {
	if len(args) > 1 {
		v, err := strconv.Atoi(string(args[1]))
		if err != nil {
			return errReply("ERR Protocol version is not an integer or out of range")
		}
		if v != 2 {
			return errReply("NOPROTO sorry, this protocol version is not supported.")
		}
		if len(args) > 2 {
			return errReply("ERR HELLO options (AUTH, SETNAME) are not supported by raftproxy yet")
		}
	}
	b := resp.AppendMapLen(nil, 7, false)
	b = resp.AppendBulkString(b, "server")
	b = resp.AppendBulkString(b, "redis")
	b = resp.AppendBulkString(b, "version")
	b = resp.AppendBulkString(b, c.s.redisVersion)
	b = resp.AppendBulkString(b, "proto")
	b = resp.AppendInt(b, 2)
	b = resp.AppendBulkString(b, "id")
	b = resp.AppendInt(b, int64(c.id))
	b = resp.AppendBulkString(b, "mode")
	b = resp.AppendBulkString(b, "standalone")
	b = resp.AppendBulkString(b, "role")
	b = resp.AppendBulkString(b, "master")
	b = resp.AppendBulkString(b, "modules")
	b = resp.AppendArrayLen(b, 0)
	return &op{kind: opReply, reply: b}
}
