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
	sel   []bool // sel[i]: a SELECT was sent before batch[i]
	offs  []int  // reply i is buf[offs[i]:offs[i+1]]
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
	p.sel = append(p.sel[:0], make([]bool, len(batch))...)
	sel := p.sel
	for i, r := range batch {
		s, err := p.redis.Select(r.db)
		if err == nil {
			err = p.redis.Write(r.args)
		}
		if err != nil {
			p.drop(batch)
			return
		}
		sel[i] = s
	}
	if p.redis.Flush() != nil {
		p.drop(batch)
		return
	}
	p.buf = p.buf[:0]
	p.offs = append(p.offs[:0], make([]int, len(batch)+1)...)
	offs := p.offs
	for i := range batch {
		if sel[i] {
			if _, err := p.redis.ReadReply(nil); err != nil {
				p.drop(batch)
				return
			}
		}
		var err error
		p.buf, err = p.redis.ReadReply(p.buf)
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
