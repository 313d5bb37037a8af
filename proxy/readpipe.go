package proxy

import (
	"context"
	"time"

	"github.com/raftproxy/raftproxy/backend"
	"github.com/raftproxy/raftproxy/raftnode"
)

// readReq is a run of reads of one connection, waiting for its ReadIndex
// rounds and then for its turn on the shared read connection.
type readReq struct {
	node Group
	cmds []readCmd
	buf  []byte // the replies, cmds[i].reply pointing into it
	done chan struct{}
}

type readCmd struct {
	db    int
	args  [][]byte
	slot  int               // the read's hash slot, -1 when keyless (slotChanged)
	resp3 bool              // the reply must be in RESP3
	wait  raftnode.ReadWait // the read's ReadIndex round
	now   int64             // the read's time (proxy/expiry.go), from its round
	reply []byte
	// err, when set, is why the read did not run: its round failed, or
	// redis was being rebuilt or is gone.
	err error
}

// readPipe runs the reads of every connection on one pipelined connection
// to the local redis: it waits for the ReadIndex rounds of the reads it
// took, and one write and one read to redis then serve them all, instead
// of a round trip per connection (a lone command, or a client's pipeline).
// The round's end wakes the pipe alone, not every reader's connection.
type readPipe struct {
	s     *Server
	reqs  chan *readReq
	redis *backend.Conn
	buf   []byte
	skip  []uint8 // skip[i]: replies (SELECT, HELLO) to discard before command i's
	offs  []int   // command i's reply is buf[offs[i]:offs[i+1]]
	// checks are the deadline checks of the batch's keys (proxy/expiry.go).
	checks []readCheck
}

// maxPipeCommands bounds one round's commands (its requests are taken
// whole): the replies of a round are held in memory together.
const maxPipeCommands = 4096

func newReadPipe(s *Server) *readPipe {
	return &readPipe{s: s, reqs: make(chan *readReq, 4096)}
}

func (p *readPipe) run(stop <-chan struct{}) {
	batch := make([]*readReq, 0, 256)
	for {
		select {
		case r := <-p.reqs:
			batch = append(batch[:0], r)
		case <-stop:
			if p.redis != nil {
				p.redis.Close()
			}
			return
		}
		n := len(batch[0].cmds)
	drain:
		for len(batch) < cap(batch) && n < maxPipeCommands {
			select {
			case r := <-p.reqs:
				batch = append(batch, r)
				n += len(r.cmds)
			default:
				break drain
			}
		}
		if ready := p.awaitRounds(batch); ready > 0 {
			p.runBatch(batch, ready)
		}
		for _, r := range batch {
			close(r.done)
		}
	}
}

// awaitRounds waits until every read of the batch may run or has failed
// (a ReadWait always ends, at the latest at the request timeout), and
// returns how many may run.
func (p *readPipe) awaitRounds(batch []*readReq) int {
	n := 0
	for _, r := range batch {
		for i := range r.cmds {
			c := &r.cmds[i]
			<-c.wait.Ready()
			if c.err = c.wait.Err(); c.err == nil {
				c.now = c.wait.TimeMs()
				n++
			}
		}
	}
	return n
}

// fail fails every read of the batch still meant to run.
func (p *readPipe) fail(batch []*readReq, err error) {
	for _, r := range batch {
		for i := range r.cmds {
			if r.cmds[i].err == nil {
				r.cmds[i].err = err
			}
		}
	}
}

// runBatch runs a batch of reads. A read of a key that expired by its time
// but is still in redis cannot be answered until the key is deleted through
// the log (proxy/expiry.go): the batch is run again after that, at most
// expiryRetries times.
func (p *readPipe) runBatch(batch []*readReq, n int) {
	node := batch[0].node
	for attempt := 0; ; attempt++ {
		expired := p.runOnce(batch, n)
		if len(expired) == 0 {
			return
		}
		if attempt == expiryRetries {
			p.fail(batch, errExpiryChurn)
			return
		}
		// Outside the read gate: the applier may need it shut meanwhile.
		ctx, cancel := context.WithTimeout(context.Background(), p.s.timeout())
		err := p.s.expireThroughLog(ctx, node, expired)
		cancel()
		if err != nil {
			p.fail(batch, err)
			return
		}
	}
}

// runOnce runs the batch on the shared connection, with the checks of its
// keys' deadlines in front in the same round trip. It returns the keys
// found expired, in which case no reply is kept.
func (p *readPipe) runOnce(batch []*readReq, n int) []readCheck {
	node := batch[0].node
	// Reads keep out of redis while it holds a script's undecided effects.
	ctx, cancel := context.WithTimeout(context.Background(), p.s.timeout())
	leave, err := node.EnterRead(ctx)
	cancel()
	if err != nil {
		p.fail(batch, err)
		return nil
	}
	defer leave()
	gen := node.Generation()
	if gen%2 == 1 {
		p.fail(batch, raftnode.ErrLoading)
		return nil
	}
	if p.redis == nil {
		rc, err := p.s.dialRedis(node)
		if err != nil {
			p.fail(batch, err)
			return nil
		}
		p.redis = rc
	}
	p.redis.SetDeadline(time.Now().Add(p.s.timeout()))
	p.checks = p.checks[:0]
	for _, r := range batch {
		for _, c := range r.cmds {
			if c.err != nil {
				continue
			}
			if ch, ok := p.s.checkOf(c.db, c.args, c.now); ok {
				p.checks = addCheck(p.checks, ch)
			}
		}
	}
	checkSkips, err := writeChecks(p.redis, p.checks)
	if err != nil {
		p.drop(batch)
		return nil
	}
	p.skip = append(p.skip[:0], make([]uint8, n)...)
	skip := p.skip
	i := 0
	for _, r := range batch {
		for _, c := range r.cmds {
			if c.err != nil {
				continue
			}
			// RESP3 clients share the pipe too: the connection switches
			// protocol with a HELLO in the pipeline, as it switches
			// databases with SELECT, only where two neighbours differ. That
			// costs no round trip, where sending RESP3 reads to their
			// connection's own redis connection would cost RESP3 clients
			// (go-redis v9's default) the shared round trip.
			s, err := p.redis.Send(c.db, c.resp3, p.s.readArgs(c.db, c.args, c.now))
			if err != nil {
				p.drop(batch)
				return nil
			}
			skip[i] = uint8(s)
			i++
		}
	}
	if p.redis.Flush() != nil {
		p.drop(batch)
		return nil
	}
	expired, err := readChecks(p.redis, p.checks, checkSkips)
	if err != nil {
		p.drop(batch)
		return nil
	}
	p.buf = p.buf[:0]
	p.offs = append(p.offs[:0], make([]int, n+1)...)
	offs := p.offs
	for i := range n {
		var err error
		p.buf, err = p.redis.Receive(p.buf, int(skip[i]))
		if err != nil {
			p.drop(batch)
			return nil
		}
		offs[i+1] = len(p.buf)
	}
	if len(expired) > 0 {
		return expired
	}
	if node.Generation() != gen || p.s.tainted() {
		p.fail(batch, raftnode.ErrLoading)
		return nil
	}
	// Each request gets its replies in one buffer of its own: the pipe's
	// is reused by the next round while the connection writes them out.
	i = 0
	for _, r := range batch {
		k := 0
		for j := range r.cmds {
			if r.cmds[j].err == nil {
				k++
			}
		}
		base := offs[i]
		r.buf = append(r.buf[:0], p.buf[base:offs[i+k]]...)
		for j := range r.cmds {
			if r.cmds[j].err != nil {
				continue
			}
			r.cmds[j].reply = r.buf[offs[i]-base : offs[i+1]-base : offs[i+1]-base]
			i++
			if p.s.slotChanged(r.cmds[j].slot) {
				r.cmds[j].err = errSlotChanged
			}
		}
	}
	return nil
}

func (p *readPipe) drop(batch []*readReq) {
	p.redis.Close()
	p.redis = nil
	batch[0].node.CheckStateMachine()
	p.fail(batch, raftnode.ErrLoading)
}
