package proxy

import (
	"time"

	"github.com/raftproxy/raftproxy/backend"
	"github.com/raftproxy/raftproxy/raftnode"
)

// readReq is one read, cleared to run, waiting for its turn on the shared
// read connection.
type readReq struct {
	node  *raftnode.Node
	db    int
	args  [][]byte
	resp3 bool // the reply must be in RESP3
	reply []byte
	err   error
	done  chan struct{}
}

// readPipe runs the reads of connections that send one command at a time on
// one pipelined connection to the local redis: reads cleared by the same
// ReadIndex round become ready together, and one write and one read to
// redis then serve them all instead of one round trip each.
type readPipe struct {
	s     *Server
	reqs  chan *readReq
	redis *backend.Conn
	buf   []byte
	skip  []uint8 // skip[i]: replies (SELECT, HELLO) to discard before batch[i]'s
	offs  []int   // reply i is buf[offs[i]:offs[i+1]]
}

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
	drain:
		for len(batch) < cap(batch) {
			select {
			case r := <-p.reqs:
				batch = append(batch, r)
			default:
				break drain
			}
		}
		p.runBatch(batch)
		for _, r := range batch {
			close(r.done)
		}
	}
}

func (p *readPipe) fail(batch []*readReq, err error) {
	for _, r := range batch {
		r.reply, r.err = nil, err
	}
}

func (p *readPipe) runBatch(batch []*readReq) {
	n := batch[0].node
	gen := n.Generation()
	if gen%2 == 1 {
		p.fail(batch, raftnode.ErrLoading)
		return
	}
	if p.redis == nil {
		rc, err := p.s.dialRedis(n)
		if err != nil {
			p.fail(batch, err)
			return
		}
		p.redis = rc
	}
	p.redis.SetDeadline(time.Now().Add(p.s.timeout()))
	p.skip = append(p.skip[:0], make([]uint8, len(batch))...)
	skip := p.skip
	for i, r := range batch {
		// RESP3 clients share the pipe too: the connection switches
		// protocol with a HELLO in the pipeline, as it switches databases
		// with SELECT, only where two neighbours differ. That costs no round
		// trip, where sending RESP3 reads to their connection's own redis
		// connection would cost RESP3 clients (go-redis v9's default) the
		// shared round trip.
		s, err := p.redis.Select(r.db)
		var hello bool
		if err == nil {
			hello, err = p.redis.Protocol(r.resp3)
		}
		if err == nil {
			err = p.redis.Write(r.args)
		}
		if err != nil {
			p.drop(batch)
			return
		}
		skip[i] = b2u(s) + b2u(hello)
	}
	if p.redis.Flush() != nil {
		p.drop(batch)
		return
	}
	p.buf = p.buf[:0]
	p.offs = append(p.offs[:0], make([]int, len(batch)+1)...)
	offs := p.offs
	for i := range batch {
		start := len(p.buf)
		var err error
		for range skip[i] {
			if p.buf, err = p.redis.ReadReply(p.buf[:start]); err != nil {
				p.drop(batch)
				return
			}
		}
		p.buf, err = p.redis.ReadReply(p.buf[:start])
		if err != nil {
			p.drop(batch)
			return
		}
		offs[i+1] = len(p.buf)
	}
	if n.Generation() != gen {
		p.fail(batch, raftnode.ErrLoading)
		return
	}
	for i, r := range batch {
		r.reply = append(r.reply[:0], p.buf[offs[i]:offs[i+1]]...)
		r.err = nil
	}
}

func (p *readPipe) drop(batch []*readReq) {
	p.redis.Close()
	p.redis = nil
	batch[0].node.Poke()
	p.fail(batch, raftnode.ErrLoading)
}
