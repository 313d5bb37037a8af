package proxy

import (
	"bufio"
	"context"
	"time"

	"github.com/raftproxy/raftproxy/raftnode"
)

// Reads on the local redis: runs of reads go to the server's shared read
// pipe (readpipe.go), reads mixed with local commands to the connection's
// own redis connection.

// readShared runs a run of reads on the server's shared read connection,
// in one request: the pipe runs each read once its ReadIndex round has
// been reached, so the connection waits once, for the replies, rather
// than once for the round and again for the pipe.
func (c *conn) readShared(w *bufio.Writer, batch []*op) {
	r := &readReq{node: batch[0].node, cmds: make([]readCmd, len(batch)), done: make(chan struct{})}
	for i, o := range batch {
		r.cmds[i] = readCmd{db: o.db, args: o.args, slot: o.slot, resp3: o.resp3, wait: o.read}
	}
	c.s.reads.reqs <- r
	var errText string
	if !c.await(r.done, batch[0].start) {
		// The pipe still holds r, which is dropped.
		errText = errorText(raftnode.ErrTimeout, true)
	}
	var again []*raftnode.Future
	if errText == "" {
		for i := range r.cmds {
			if r.cmds[i].err == errSlotChanged {
				again = c.rerun(batch, i, func(j int) bool {
					return r.cmds[j].err == nil || r.cmds[j].err == errSlotChanged
				})
				break
			}
		}
	}
	for i, o := range batch {
		rc := r.cmds[i]
		switch {
		case again != nil && again[i] != nil:
			c.writeOutcome(w, o, again[i], true)
		case errText != "":
			o.writeError(w, c.raw, errText)
		case rc.err != nil:
			o.writeError(w, c.raw, errorText(rc.err, true))
		default:
			reply := rc.reply
			if o.fix != nil {
				reply = o.fix(reply)
			}
			o.write(w, reply)
		}
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
	var n Group
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
	// Reads keep out of redis while it holds a script's undecided effects;
	// they leave it once their replies are in, before any wait for the log.
	var leave func()
	if n != nil && !failed(errs) {
		ctx, cancel := context.WithDeadline(context.Background(), batch[0].start.Add(c.s.timeout()))
		var err error
		leave, err = n.EnterRead(ctx)
		cancel()
		if err != nil {
			fail(errs, batch, errorText(err, true))
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
	var replies [][]byte
	if c.send(batch, errs) > 0 {
		replies = c.receive(batch, errs, n, gen)
	}
	if leave != nil {
		leave()
	}
	if replies == nil {
		fail(errs, batch, errorText(raftnode.ErrLoading, true))
	}
	c.writeReplies(w, batch, errs, replies)
}

// expireBeforeReads runs Server.expireBeforeReads for the reads of batch
// that may still run.
func (c *conn) expireBeforeReads(batch []*op, errs []string, n Group) error {
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

// receive reads the replies of the commands send sent.
func (c *conn) receive(batch []*op, errs []string, n Group, gen uint64) [][]byte {
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
	return replies
}

// writeReplies writes each command's reply, or its error. A read that
// slotChanged catches is run again through the log, once the reads left
// the read gate: the applier may need it shut to get there.
func (c *conn) writeReplies(w *bufio.Writer, batch []*op, errs []string, replies [][]byte) {
	var again []*raftnode.Future
	for i, o := range batch {
		if o.kind == opRead && errs[i] == "" && c.s.slotChanged(o.slot) {
			again = c.rerun(batch, i, func(j int) bool { return errs[j] == "" })
			break
		}
	}
	for i := range batch {
		if again != nil && again[i] != nil {
			c.writeOutcome(w, batch[i], again[i], true)
			continue
		}
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
func (c *conn) ensureRedis(n Group) error {
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

// rerun proposes the reads of batch from index from on again, through the
// log, where the applier decides them (it serves the keys still here and
// answers -ASK for those already moved): the read at from ran on redis
// while its slot began moving out, and may have missed keys that had left.
// The reads after it go too, though they ran whole, so that no reply of
// the batch shows an older state than one before it. ok(i) says whether
// batch[i] is still to be answered. It returns each rerun read's future
// (nil for the rest), proposed in the batch's order.
func (c *conn) rerun(batch []*op, from int, ok func(int) bool) []*raftnode.Future {
	futs := make([]*raftnode.Future, len(batch))
	for i := from; i < len(batch); i++ {
		o := batch[i]
		if o.kind != opRead || !ok(i) {
			continue
		}
		futs[i] = o.node.ProposeTagged(proposalContext(), o.request(), c.id)
	}
	return futs
}
