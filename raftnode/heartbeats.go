package raftnode

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// heartbeatsPath carries a batch of heartbeats and heartbeat responses of
// the groups of one process to another (Heartbeats).
const heartbeatsPath = "/raftproxy/heartbeats"

// bypassTicks is how long, in ticks, a peer whose batch failed gets its
// heartbeats on rafthttp before coalescing is tried again.
const bypassTicks = 50

// maxHeartbeatBatch bounds a batch's body: a heartbeat is a few dozen
// bytes, and a process hosts at most a few thousand groups.
const maxHeartbeatBatch = 4 << 20

// Heartbeats coalesces the heartbeats of a process's groups: each group's
// leader sends one to every follower every heartbeat tick, and each
// follower answers, each a message of its own on the group's rafthttp
// stream to that peer. Once a second group is attached, the plain ones and
// quiescence's (not a read-index round's, which goes as before) are queued
// here instead, in order, and sent one interval (a tick) after the first of
// them, all groups' to one process in one peer call (CockroachDB's coalesced
// heartbeats); with nothing queued, as when every group is quiesced, it
// sleeps. One Heartbeats serves every group of a process, as
// Liveness and wal.Syncer do.
//
// A heartbeat waits at most one interval more: well inside the election
// timeout that it keeps from running out, and raft orders nothing by it
// (a heartbeat's commit index is at most what the follower matches, and
// one lost is as if the network lost it).
type Heartbeats struct {
	client   *http.Client
	scheme   string
	interval time.Duration
	attached atomic.Int32

	mu       sync.Mutex
	pending  map[string]*hbBatch // by peer address
	inflight map[string]bool     // a peer's last batch is still on its way
	// bypass holds, for a peer whose last batch failed, until when its
	// heartbeats go on rafthttp again: a peer that does not take them
	// (down, cut off, or of a build without the endpoint) still gets
	// them the way raft sends everything else.
	bypass map[string]time.Time
	sent   atomic.Uint64 // messages handed to a peer call and taken
	queued chan struct{} // a batch waits to be sent (signal)

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// NewHeartbeats returns a coalescer that gathers for an interval (the
// groups' tick), over TLS when tlsInfo names a certificate.
func NewHeartbeats(tlsInfo transport.TLSInfo, interval time.Duration) (*Heartbeats, error) {
	if interval <= 0 {
		interval = 100 * time.Millisecond
	}
	// One kept-alive connection per peer; a batch that takes longer than
	// a few intervals is as good as lost.
	tr, scheme, err := peerTransport(tlsInfo, 5*interval, time.Minute)
	if err != nil {
		return nil, fmt.Errorf("coalesced heartbeats: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h := &Heartbeats{client: &http.Client{Transport: tr, Timeout: 5 * interval}, scheme: scheme, interval: interval,
		pending: map[string]*hbBatch{}, inflight: map[string]bool{}, bypass: map[string]time.Time{}, queued: make(chan struct{}, 1),
		ctx: ctx, cancel: cancel}
	h.wg.Add(1)
	go func() { defer h.wg.Done(); h.run() }()
	return h, nil
}

// hbBatch is the messages queued for a peer, encoded.
type hbBatch struct {
	buf bytes.Buffer
	n   int
}

// Close stops sending; what is queued is dropped.
func (h *Heartbeats) Close() {
	h.cancel()
	h.wg.Wait()
}

// Sent is how many heartbeats went out coalesced.
func (h *Heartbeats) Sent() uint64 { return h.sent.Load() }

func (h *Heartbeats) attach() { h.attached.Add(1) }
func (h *Heartbeats) detach() { h.attached.Add(-1) }

// coalescing reports whether more than one group is attached: a lone group
// gains nothing from waiting.
func (h *Heartbeats) coalescing() bool { return h != nil && h.attached.Load() > 1 }

// coalescable is a plain heartbeat or response, or one of quiescence's
// marked ones: those must keep their order with the plain ones, or a plain
// heartbeat sent before the round that quiesces a follower, arriving after
// it, would wake the follower of a leader that stopped ticking (and it
// would campaign). A read-index round's (any other context) goes on
// rafthttp at once.
func coalescable(m *raftpb.Message) bool {
	t := m.GetType()
	if t != raftpb.MsgHeartbeat && t != raftpb.MsgHeartbeatResp {
		return false
	}
	ctx := m.GetContext()
	return len(ctx) == 0 || marked(m, quiesceCtx) || marked(m, quiescedCtx) || marked(m, wakeCtx)
}

// take queues the coalescable messages of msgs, from group cid, for the
// peers whose address addr gives (none: the peer's build does not take
// coalesced heartbeats), and returns the others.
func (h *Heartbeats) take(cid uint64, msgs []*raftpb.Message, addr func(id uint64) string) []*raftpb.Message {
	out := msgs[:0:0]
	now := time.Now()
	for _, m := range msgs {
		peer := ""
		if coalescable(m) {
			peer = addr(m.GetTo())
		}
		if peer == "" {
			out = append(out, m)
			continue
		}
		b, err := proto.Marshal(m)
		if err != nil {
			out = append(out, m)
			continue
		}
		h.mu.Lock()
		if now.Before(h.bypass[peer]) {
			h.mu.Unlock()
			out = append(out, m)
			continue
		}
		batch := h.pending[peer]
		if batch == nil {
			batch = &hbBatch{}
			h.pending[peer] = batch
			h.signal()
		}
		batch.buf.Write(binary.AppendUvarint(binary.AppendUvarint(nil, cid), uint64(len(b))))
		batch.buf.Write(b)
		batch.n++
		h.mu.Unlock()
	}
	return out
}

func (h *Heartbeats) run() {
	t := time.NewTimer(h.interval)
	t.Stop()
	defer t.Stop()
	for {
		// Sleep until something is queued, then gather for one interval:
		// a process whose groups are all quiesced does not wake at all.
		select {
		case <-h.queued:
		case <-h.ctx.Done():
			return
		}
		t.Reset(h.interval)
		select {
		case <-t.C:
		case <-h.ctx.Done():
			return
		}
		h.mu.Lock()
		batches := h.pending
		h.pending = map[string]*hbBatch{}
		for peer, batch := range batches {
			if h.inflight[peer] {
				// The peer is slow: these wait for the next interval, with
				// what comes meanwhile (an old heartbeat is harmless).
				h.pending[peer] = batch
				h.signal()
				continue
			}
			h.inflight[peer] = true
			h.wg.Add(1)
			go func() {
				defer h.wg.Done()
				ok := h.post(peer, batch.buf.Bytes())
				h.mu.Lock()
				defer h.mu.Unlock()
				delete(h.inflight, peer)
				if ok {
					h.sent.Add(uint64(batch.n))
					return
				}
				// Lost, as on a broken stream; the next ones go on
				// rafthttp for a while.
				h.bypass[peer] = time.Now().Add(bypassTicks * h.interval)
				delete(h.pending, peer)
			}()
		}
		h.mu.Unlock()
	}
}

// signal tells run that a batch waits.
func (h *Heartbeats) signal() {
	signal(h.queued)
}

// post sends a batch and reports whether the peer took it.
func (h *Heartbeats) post(peer string, body []byte) bool {
	req, err := http.NewRequestWithContext(h.ctx, http.MethodPost, h.scheme+"://"+peer+heartbeatsPath, bytes.NewReader(body))
	if err != nil {
		return false
	}
	resp, err := h.client.Do(req)
	if err != nil {
		return false
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 512))
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// readHeartbeat reads a record's header: the group's cluster id and the
// message's length.
func readHeartbeat(r *bytes.Reader) (cid, size uint64, err error) {
	if cid, err = binary.ReadUvarint(r); err != nil {
		return 0, 0, err
	}
	if size, err = binary.ReadUvarint(r); err != nil {
		return 0, 0, err
	}
	if size > maxHeartbeatBatch {
		return 0, 0, errors.New("heartbeat record too large")
	}
	return cid, size, nil
}

// serveHeartbeats steps each heartbeat of a batch into its group, as
// rafthttp would: a message whose group is not here, or whose sender is
// not a member of it, is refused (and counted) alone.
func (m *PeerMux) serveHeartbeats(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxHeartbeatBatch+1))
	if err != nil || len(body) > maxHeartbeatBatch {
		http.Error(w, "body unreadable or too large", http.StatusBadRequest)
		return
	}
	rd := bytes.NewReader(body)
	for rd.Len() > 0 {
		cid, size, err := readHeartbeat(rd)
		if err != nil || uint64(rd.Len()) < size {
			http.Error(w, "malformed batch", http.StatusBadRequest)
			return
		}
		b := make([]byte, size)
		rd.Read(b)
		msg := &raftpb.Message{}
		if err := proto.Unmarshal(b, msg); err != nil || !coalescable(msg) {
			http.Error(w, "malformed heartbeat", http.StatusBadRequest)
			return
		}
		n := m.Node(cid)
		if n == nil || !n.knownPeer(msg.GetFrom()) || msg.GetTo() != n.id {
			m.refuseCall()
			continue
		}
		(*transportHooks)(n).Process(r.Context(), msg)
	}
}
