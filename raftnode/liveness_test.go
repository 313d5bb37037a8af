package raftnode

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/server/v3/etcdserver/api/rafthttp"
)

// livePeer is a stand-in for a peer process's listener: it serves watches
// (unless old, a build without them) and probes, and counts both.
type livePeer struct {
	old     bool
	watches atomic.Int32
	probes  atomic.Int32
	paused  atomic.Bool // answers nothing, writes nothing: a stopped process
	mu      sync.Mutex
	resume  chan struct{}
}

func (p *livePeer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if p.paused.Load() {
		p.mu.Lock()
		ch := p.resume
		p.mu.Unlock()
		select {
		case <-ch:
		case <-r.Context().Done():
			return
		}
	}
	switch {
	case r.URL.Path == alivePath && !p.old:
		p.watches.Add(1)
		// serveAlive, but it stops writing while paused.
		rc := http.NewResponseController(w)
		w.WriteHeader(http.StatusOK)
		every, _ := time.ParseDuration(r.URL.Query().Get("every"))
		for {
			if !p.paused.Load() {
				if _, err := w.Write([]byte{'\n'}); err != nil || rc.Flush() != nil {
					return
				}
			}
			select {
			case <-time.After(every):
			case <-r.Context().Done():
				return
			}
		}
	case r.URL.Path == rafthttp.ProbingPrefix:
		p.probes.Add(1)
		w.WriteHeader(http.StatusOK)
	default:
		http.NotFound(w, r)
	}
}

func (p *livePeer) pause() {
	p.mu.Lock()
	p.resume = make(chan struct{})
	p.mu.Unlock()
	p.paused.Store(true)
}

func (p *livePeer) unpause() {
	p.paused.Store(false)
	p.mu.Lock()
	close(p.resume)
	p.mu.Unlock()
}

func waitDown(t *testing.T, l *Liveness, addr string, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	select {
	case <-l.Down(addr):
		return time.Since(start)
	case <-time.After(within):
		t.Fatalf("%s not down after %v", addr, within)
		return 0
	}
}

// TestLivenessWatch: a peer is watched on one long request, not probed;
// a peer that stops answering (paused, or gone) is down within about the
// election timeout and up again when it answers; a peer of an older build
// is probed instead, with the same verdicts.
func TestLivenessWatch(t *testing.T) {
	const tick, ticks = 50 * time.Millisecond, 10 // a 500 ms election timeout
	l, err := NewLiveness(transport.TLSInfo{}, tick, ticks)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for _, old := range []bool{false, true} {
		peer := &livePeer{old: old}
		srv := httptest.NewServer(peer)
		addr := strings.TrimPrefix(srv.URL, "http://")
		if !l.Up(addr) {
			t.Fatalf("old=%v: a peer is up until it is found down", old)
		}
		time.Sleep(2 * time.Second)
		if !l.Up(addr) {
			t.Fatalf("old=%v: an answering peer is down", old)
		}
		w, p := peer.watches.Load(), peer.probes.Load()
		t.Logf("old=%v: %d watches, %d probes in 2 s", old, w, p)
		if !old && (w != 1 || p != 0) {
			t.Fatalf("a peer that serves watches got %d watches and %d probes in 2 s, want 1 and 0", w, p)
		}
		if old && p < 4 {
			t.Fatalf("a peer of an older build got %d probes in 2 s", p)
		}

		peer.pause()
		d := waitDown(t, l, addr, 2*time.Second)
		t.Logf("old=%v: paused peer down after %v", old, d)
		if d < 300*time.Millisecond {
			t.Errorf("old=%v: down %v after the pause, before an election timeout could pass", old, d)
		}
		peer.unpause()
		waitFor(t, 2*time.Second, "the resumed peer is not up", func() bool { return l.Up(addr) })

		srv.CloseClientConnections()
		srv.Close()
		d = waitDown(t, l, addr, 2*time.Second)
		t.Logf("old=%v: closed peer down after %v", old, d)
	}
}
