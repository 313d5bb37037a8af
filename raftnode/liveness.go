package raftnode

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/server/v3/etcdserver/api/rafthttp"
)

// Liveness tells whether the raftproxy processes at peer addresses answer.
// A quiesced group (quiesce.go) does not tick, so its followers would never
// notice by themselves that their leader died: they watch its process here
// instead. One Liveness serves every group of a process, so a peer costs
// one probe per interval however many groups it leads (CockroachDB's node
// liveness plays this part for its quiesced ranges).
//
// A probe is a GET of the peer listener's /raft/probing, which any group
// answers and which reveals nothing. A peer is down once no probe has been
// answered for the election timeout: the same silence that makes a ticking
// follower campaign.
type Liveness struct {
	client   *http.Client
	scheme   string
	interval time.Duration
	deadline time.Duration // silence that makes a peer down

	mu    sync.Mutex
	peers map[string]*peerLife

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// peerLife is one peer's liveness; its fields are guarded by Liveness.mu.
type peerLife struct {
	// down is closed when the peer goes down, and replaced by an open one
	// when it answers again.
	down   chan struct{}
	isDown bool
}

// NewLiveness probes peers four times per election timeout (electionTicks
// ticks), over TLS when tlsInfo names a certificate, and reports one down
// after an election timeout without an answer.
func NewLiveness(tlsInfo transport.TLSInfo, tick time.Duration, electionTicks int) (*Liveness, error) {
	if tick <= 0 {
		tick = 100 * time.Millisecond
	}
	if electionTicks <= 0 {
		electionTicks = 10
	}
	deadline := time.Duration(electionTicks) * tick
	// Four probes in each deadline: one lost or slow probe is no verdict.
	interval := max(tick, deadline/4)
	// One kept-alive connection per peer: a probe is a request on it, not
	// a dial.
	tr, scheme, err := peerTransport(tlsInfo, deadline, 10*deadline)
	if err != nil {
		return nil, fmt.Errorf("liveness probes: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Liveness{
		client:   &http.Client{Transport: tr, Timeout: deadline / 2},
		scheme:   scheme,
		interval: interval,
		deadline: deadline,
		peers:    map[string]*peerLife{},
		ctx:      ctx,
		cancel:   cancel,
	}, nil
}

// Down returns a channel that is closed when the process at peer address
// addr stops answering (at once, if it already has). The first call for an
// address starts probing it.
func (l *Liveness) Down(addr string) <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	p, ok := l.peers[addr]
	if !ok {
		p = &peerLife{down: make(chan struct{})}
		l.peers[addr] = p
		l.wg.Add(1)
		go func() { defer l.wg.Done(); l.probe(addr, p) }()
	}
	return p.down
}

// Up reports whether the process at addr answered within the last
// election timeout; the first call for an address starts probing it and
// reports it up.
func (l *Liveness) Up(addr string) bool {
	select {
	case <-l.Down(addr):
		return false
	default:
		return true
	}
}

// Close stops probing.
func (l *Liveness) Close() {
	l.cancel()
	l.wg.Wait()
	l.client.CloseIdleConnections()
}

// probe asks addr every interval whether it is there, and marks it down or
// up by the answers.
func (l *Liveness) probe(addr string, p *peerLife) {
	url := l.scheme + "://" + addr + rafthttp.ProbingPrefix
	t := time.NewTicker(l.interval)
	defer t.Stop()
	lastAnswer := time.Now()
	for {
		if l.ask(url) {
			lastAnswer = time.Now()
		}
		l.mark(p, time.Since(lastAnswer) > l.deadline)
		select {
		case <-t.C:
		case <-l.ctx.Done():
			return
		}
	}
}

func (l *Liveness) ask(url string) bool {
	req, err := http.NewRequestWithContext(l.ctx, http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	resp, err := l.client.Do(req)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

func (l *Liveness) mark(p *peerLife, down bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case down && !p.isDown:
		p.isDown = true
		close(p.down)
	case !down && p.isDown:
		p.isDown = false
		p.down = make(chan struct{})
	}
}
