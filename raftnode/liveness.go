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

	"github.com/raftproxy/raftproxy/internal/beat"
)

// Liveness tells whether the raftproxy processes at peer addresses answer.
// A quiesced group (quiesce.go) does not tick, so its followers would never
// notice by themselves that their leader died: they watch its process here
// instead. One Liveness serves every group of a process, so a peer costs
// the same however many groups it leads (CockroachDB's node liveness plays
// this part for its quiesced ranges).
//
// It watches each peer on one long-lived GET of alivePath, to which the
// peer writes a byte four times per election timeout: a byte read is a
// wakeup on each side, where a probe, a request of its own, would be
// several, and a process idle but for these pays them for every peer. A
// peer is down once nothing has come from it for the election timeout:
// the same silence that makes a ticking follower campaign. A peer of a
// build without alivePath is probed instead with GETs of /raft/probing,
// which any group answers and which reveals nothing.
type Liveness struct {
	client   *http.Client // probes, each bounded
	watcher  *http.Client // watches, bounded by the silence they allow
	scheme   string
	interval time.Duration
	deadline time.Duration // silence that makes a peer down

	mu    sync.Mutex
	peers map[string]*peerLife

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// alivePath is where a peer's Liveness watches this process.
const alivePath = "/raftproxy/alive"

// probeFor is how long a peer that does not serve alivePath is probed
// before watching it is tried again (it may have been upgraded).
const probeFor = time.Minute

// peerLife is one peer's liveness; its fields are guarded by Liveness.mu.
type peerLife struct {
	// down is closed when the peer goes down, and replaced by an open one
	// when it answers again.
	down   chan struct{}
	isDown bool
}

// NewLiveness watches peers, over TLS when tlsInfo names a certificate,
// and reports one down after an election timeout (electionTicks ticks)
// without a sign of it.
func NewLiveness(tlsInfo transport.TLSInfo, tick time.Duration, electionTicks int) (*Liveness, error) {
	if tick <= 0 {
		tick = 100 * time.Millisecond
	}
	if electionTicks <= 0 {
		electionTicks = 10
	}
	deadline := time.Duration(electionTicks) * tick
	// Four signs in each deadline: one late is no verdict.
	interval := max(tick, deadline/4)
	// One kept-alive connection per peer for probes; each watch holds one
	// of its own.
	tr, scheme, err := peerTransport(tlsInfo, deadline, 10*deadline)
	if err != nil {
		return nil, fmt.Errorf("liveness probes: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Liveness{
		client:   &http.Client{Transport: tr, Timeout: deadline / 2},
		watcher:  &http.Client{Transport: tr},
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

// probe follows addr until Close: it watches it, and probes it for a while
// when it does not serve watches.
func (l *Liveness) probe(addr string, p *peerLife) {
	last := time.Now() // when addr last gave a sign
	for l.ctx.Err() == nil {
		if !l.watch(addr, p, &last) {
			l.poll(addr, p, &last, time.Now().Add(probeFor))
			continue
		}
		// The watch ended: the peer went away, or the connection broke.
		// The next one is tried an interval later, marking the peer by
		// the time since its last sign meanwhile.
		l.mark(p, time.Since(last) > l.deadline)
		select {
		case <-time.After(l.interval):
		case <-l.ctx.Done():
		}
	}
}

// watch reads addr's alivePath until it ends, marking addr up at each
// byte and down when none comes for the election timeout; *last is the
// time of the last one. It reports false when addr does not serve it.
func (l *Liveness) watch(addr string, p *peerLife, last *time.Time) bool {
	ctx, cancel := context.WithCancel(l.ctx)
	defer cancel()
	// Silence ends the watch: down once the deadline from the last sign
	// is past, or a deadline from now when it already is (a peer that is
	// down gets that long to answer the new watch).
	wait := time.Until(last.Add(l.deadline))
	if wait <= 0 {
		wait = l.deadline
	}
	silence := time.AfterFunc(wait, func() {
		l.mark(p, true)
		cancel()
	})
	defer silence.Stop()
	url := fmt.Sprintf("%s://%s%s?every=%s", l.scheme, addr, alivePath, l.interval)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return true
	}
	resp, err := l.watcher.Do(req)
	if err != nil {
		return true
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound, http.StatusMethodNotAllowed:
		return false // an older build: probe it
	default:
		return true // no group yet, or refused: not answering
	}
	var buf [64]byte
	for {
		n, err := resp.Body.Read(buf[:])
		if n > 0 {
			*last = time.Now()
			silence.Reset(l.deadline)
			l.mark(p, false)
		}
		if err != nil {
			return true
		}
	}
}

// poll probes addr every interval until until, marking it down once no
// probe has been answered for the election timeout.
func (l *Liveness) poll(addr string, p *peerLife, last *time.Time, until time.Time) {
	url := l.scheme + "://" + addr + rafthttp.ProbingPrefix
	t := time.NewTicker(l.interval)
	defer t.Stop()
	for time.Now().Before(until) {
		if l.ask(url) {
			*last = time.Now()
		}
		l.mark(p, time.Since(*last) > l.deadline)
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

// serveAlive answers a peer's Liveness watch: a byte at once and then
// every interval the watcher asks for, until it goes away.
func serveAlive(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		http.Error(w, "GET only", http.StatusMethodNotAllowed)
		return
	}
	every, err := time.ParseDuration(r.URL.Query().Get("every"))
	if err != nil {
		every = time.Second
	}
	// A watcher does not make this process busier than a probe would.
	every = min(max(every, 50*time.Millisecond), 10*time.Second)
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "application/octet-stream")
	w.WriteHeader(http.StatusOK)
	// On the beat (internal/beat): the bytes to every watcher, and the
	// watchers' own, go out in one wakeup.
	t := time.NewTimer(beat.Until(every))
	defer t.Stop()
	for {
		if _, err := w.Write([]byte{'\n'}); err != nil || rc.Flush() != nil {
			return
		}
		select {
		case <-t.C:
			t.Reset(beat.Until(every))
		case <-r.Context().Done():
			return
		}
	}
}
