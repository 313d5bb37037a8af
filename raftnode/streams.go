package raftnode

import (
	"bufio"
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

	"github.com/raftproxy/raftproxy/internal/beat"
)

// streamPath is where a peer process opens its stream of raft messages,
// of all its groups, to this one (Streams).
const streamPath = "/raftproxy/stream"

const (
	// maxStreamMessage bounds a message on a stream: a bigger one (an
	// append of a huge value) goes on its group's rafthttp stream, so one
	// group's big entry neither holds the other groups' messages back nor
	// makes a receiver allocate what a frame header claims.
	maxStreamMessage = 8 << 20
	// maxStreamQueue is how much may wait for a stream's connection: a
	// peer that takes nothing for that long is as good as gone, and its
	// messages go on rafthttp until a new connection is up.
	maxStreamQueue = 64 << 20
	// streamPing is how often each end shows it is alive on an idle
	// stream, and streamTimeout how long silence ends it (rafthttp's
	// link heartbeats and ConnReadTimeout, for the same reason: a peer
	// that vanished leaves a TCP connection open).
	streamPing    = time.Second
	streamTimeout = 5 * time.Second
	// streamRetry is the wait before connecting again after a stream
	// ended or could not connect, and streamRefusedRetry after the peer
	// answered without taking it (a build without the endpoint, in a
	// rolling upgrade).
	streamRetry        = time.Second
	streamRefusedRetry = 30 * time.Second
)

// Streams carries the raft messages of a process's groups to each peer
// process on one connection, instead of each group's own rafthttp streams
// (a connection, two goroutines and a write per message for each group
// and peer). A group's Ready loop encodes its messages straight onto the
// peer's queue; the connection takes all that queued while it wrote the
// last batch as one write, so the messages of groups busy at the same time
// share syscalls and wakeups (TiKV's and dragonboat's one connection per
// node pair). The receiving process steps each message into its group
// from the one goroutine reading the stream.
//
// Raft asks nothing of the transport but best effort, and this keeps to
// that: a message is queued only while the peer's stream is up; otherwise
// (not yet connected, refused, broken, or too big) it goes on rafthttp,
// whose streams every group keeps. Messages queued on a stream that
// breaks are lost, as on a broken rafthttp stream, and raft sends them
// again (a rejected append or the next heartbeat response makes the
// leader probe). Snapshots always go on rafthttp, with their files.
type Streams struct {
	client   *http.Client
	scheme   string
	attached atomic.Int32
	sent     atomic.Uint64 // messages queued on an up stream

	mu    sync.RWMutex
	peers map[string]*outStream // by peer address

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// NewStreams returns process-wide streams, over TLS when tlsInfo names a
// certificate.
func NewStreams(tlsInfo transport.TLSInfo) (*Streams, error) {
	tr, scheme, err := peerTransport(tlsInfo, streamTimeout, time.Minute)
	if err != nil {
		return nil, fmt.Errorf("peer streams: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	// No client timeout: a stream lives as long as both ends do, and its
	// pings bound how long a dead one is believed.
	return &Streams{client: &http.Client{Transport: tr}, scheme: scheme, peers: map[string]*outStream{}, ctx: ctx, cancel: cancel}, nil
}

// Close ends every stream; what is queued is dropped.
func (s *Streams) Close() {
	s.cancel()
	s.mu.Lock()
	for _, o := range s.peers {
		o.shut()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// Sent is how many messages went on the streams.
func (s *Streams) Sent() uint64 { return s.sent.Load() }

func (s *Streams) attach() { s.attached.Add(1) }
func (s *Streams) detach() { s.attached.Add(-1) }

// sharing reports whether more than one group is attached: a lone group
// has nothing to share a connection with, and keeps rafthttp's.
func (s *Streams) sharing() bool { return s != nil && s.attached.Load() > 1 }

// take queues the messages of msgs, from group cid, that can go on the
// stream of the peer that addr names, and returns the others (for
// rafthttp). Snapshots never go on a stream.
func (s *Streams) take(cid uint64, msgs []*raftpb.Message, addr func(id uint64) string) []*raftpb.Message {
	out := msgs[:0:0]
	for _, m := range msgs {
		if m.GetType() == raftpb.MsgSnap || !s.queue(cid, m, addr(m.GetTo())) {
			out = append(out, m)
		}
	}
	return out
}

// queue puts m on peer's stream if that is up, and reports whether it did.
func (s *Streams) queue(cid uint64, m *raftpb.Message, peer string) bool {
	if peer == "" {
		return false
	}
	o := s.stream(peer)
	if o == nil || !o.up.Load() {
		return false
	}
	size := proto.Size(m)
	if size > maxStreamMessage {
		return false
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed || len(o.buf)-o.off+size > maxStreamQueue {
		if !o.closed {
			o.shutLocked() // the peer takes nothing: rafthttp until it does
		}
		return false
	}
	if o.off > 0 && o.off >= len(o.buf)/2 {
		// Drop what the connection has read, or a connection that never
		// quite catches up would keep all it ever sent.
		o.buf, o.off = o.buf[:copy(o.buf, o.buf[o.off:])], 0
	}
	start := len(o.buf)
	o.buf = binary.AppendUvarint(o.buf, cid)
	o.buf = binary.AppendUvarint(o.buf, uint64(size))
	b, err := proto.MarshalOptions{}.MarshalAppend(o.buf, m)
	if err != nil {
		o.buf = o.buf[:start]
		return false
	}
	o.buf = b
	s.sent.Add(1)
	o.sent.Add(1)
	signal(o.wake)
	return true
}

// stream returns peer's stream, starting it on first use (nil if the
// streams closed before it had one; a stream closed since is not up).
func (s *Streams) stream(peer string) *outStream {
	s.mu.RLock()
	o := s.peers[peer]
	s.mu.RUnlock()
	if o != nil {
		return o // every group's Ready loop asks, for every message
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ctx.Err() != nil {
		return nil
	}
	o = s.peers[peer]
	if o == nil {
		o = &outStream{s: s, peer: peer, wake: make(chan struct{}, 1), closed: true}
		s.peers[peer] = o
		s.wg.Add(1)
		go func() { defer s.wg.Done(); o.run() }()
	}
	return o
}

// outStream is the stream to one peer process. Its connection reads the
// queue through Read, as a request body of unknown length (one HTTP
// chunk per Read, which net/http flushes at once).
type outStream struct {
	s    *Streams
	peer string
	up   atomic.Bool // the peer took the stream: messages may be queued
	sent atomic.Uint64
	wake chan struct{}

	mu     sync.Mutex
	buf    []byte // frames: uvarint cluster id, uvarint length, message
	off    int    // what of buf the connection has read
	closed bool   // no connection reads buf: Read ends the body
	gen    uint64 // the connection that reads buf (streamBody.gen)
	cancel context.CancelFunc
}

// run connects, and connects again after each stream ends, until the
// process closes its streams.
func (o *outStream) run() {
	for o.s.ctx.Err() == nil {
		select {
		case <-time.After(o.connect()):
		case <-o.s.ctx.Done():
		}
	}
}

// connect opens a stream and holds it until it ends. It returns how long
// to wait before the next.
func (o *outStream) connect() time.Duration {
	ctx, cancel := context.WithCancel(o.s.ctx)
	defer cancel()
	o.mu.Lock()
	o.buf, o.off, o.closed, o.cancel = o.buf[:0], 0, false, cancel
	o.gen++
	body := &streamBody{o: o, gen: o.gen}
	o.mu.Unlock()
	defer o.shut()
	url := o.s.scheme + "://" + o.peer + streamPath
	// A peer that does not serve streams would answer a stream only after
	// reading its body to the end, that is never: ask first.
	if wait := o.probe(ctx, url); wait > 0 {
		return wait
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, body)
	if err != nil {
		return streamRefusedRetry
	}
	req.ContentLength = -1
	// The transport's header timeout starts once the body is sent, which a
	// stream never is.
	headers := time.AfterFunc(streamTimeout, cancel)
	resp, err := o.s.client.Do(req)
	headers.Stop()
	if err != nil {
		return streamRetry
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return streamRefusedRetry
	}
	o.up.Store(true)
	// The peer pings; a silent one is gone, and cancelling ends both
	// directions of the connection.
	alive := time.AfterFunc(streamTimeout, cancel)
	defer alive.Stop()
	b := make([]byte, 64)
	for {
		if _, err := resp.Body.Read(b); err != nil {
			return streamRetry
		}
		alive.Reset(streamTimeout)
	}
}

// probe asks the peer whether it serves streams, and returns how long to
// wait before asking again (0: it does).
func (o *outStream) probe(ctx context.Context, url string) time.Duration {
	ctx, cancel := context.WithTimeout(ctx, streamTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return streamRefusedRetry
	}
	resp, err := o.s.client.Do(req)
	if err != nil {
		return streamRetry
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 512))
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		return streamRefusedRetry
	}
	return 0
}

// shut stops queuing on the stream and ends its body; what is queued is
// lost, as on a broken connection.
func (o *outStream) shut() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.shutLocked()
}

func (o *outStream) shutLocked() {
	o.up.Store(false)
	o.closed = true
	o.buf, o.off = o.buf[:0], 0
	if cap(o.buf) > 4<<20 {
		o.buf = nil // a backlog's buffer is not kept for good
	}
	if o.cancel != nil {
		o.cancel()
	}
	signal(o.wake)
}

// streamPingFrame is a frame for no group: the receiver skips it.
var streamPingFrame = []byte{0, 0}

// streamBody is the body of one connection's request: it reads the queue
// only while that connection is the stream's. A connection that ended may
// still be writing its body when the next one starts; its next Read ends
// it instead of taking frames queued for the new one, which would be lost.
type streamBody struct {
	o   *outStream
	gen uint64
}

// Read hands the connection everything queued that fits p, waiting for
// some, or a ping on the first beat of streamPing at least half of it away.
func (b *streamBody) Read(p []byte) (int, error) {
	o := b.o
	// The ping waits for a beat (internal/beat) at least half a period away.
	ping := time.NewTimer(beat.OnAfter(streamPing/2, streamPing))
	defer ping.Stop()
	for {
		o.mu.Lock()
		if o.gen != b.gen {
			o.mu.Unlock()
			// The wake this took may have been the new connection's.
			signal(o.wake)
			return 0, io.EOF
		}
		if o.closed {
			o.mu.Unlock()
			return 0, io.EOF
		}
		if o.off < len(o.buf) {
			n := copy(p, o.buf[o.off:])
			o.off += n
			if o.off == len(o.buf) {
				o.buf, o.off = o.buf[:0], 0
			}
			o.mu.Unlock()
			return n, nil
		}
		o.mu.Unlock()
		select {
		case <-o.wake:
		case <-ping.C:
			return copy(p, streamPingFrame), nil
		}
	}
}

// serveStream reads a peer process's stream and steps each message into
// its group, as rafthttp would: a message whose group is not here, or
// whose sender is not a member of it, is refused (and counted) alone. The
// response carries only pings, so the sender knows this end lives.
func (m *PeerMux) serveStream(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet:
		w.WriteHeader(http.StatusNoContent) // a probe: streams are served
		return
	case http.MethodPost:
	default:
		http.Error(w, "GET or POST only", http.StatusMethodNotAllowed)
		return
	}
	rc := http.NewResponseController(w)
	if err := rc.EnableFullDuplex(); err != nil {
		http.Error(w, "no full duplex", http.StatusInternalServerError)
		return
	}
	w.WriteHeader(http.StatusOK)
	if err := rc.Flush(); err != nil {
		return
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	var pinging sync.WaitGroup
	pinging.Add(1)
	go func() {
		defer pinging.Done()
		t := time.NewTimer(beat.Until(streamPing))
		defer t.Stop()
		for {
			select {
			case <-t.C:
				t.Reset(beat.Until(streamPing))
				if _, err := w.Write([]byte{'\n'}); err != nil || rc.Flush() != nil {
					cancel()
					return
				}
			case <-ctx.Done():
				// Ends a read that is waiting (the server closing, or
				// the stream failing); the next read sees ctx.
				rc.SetReadDeadline(time.Now())
				return
			}
		}
	}()
	defer pinging.Wait()
	defer cancel()
	err := m.readStream(ctx, bufio.NewReaderSize(&deadlineReader{ctx: ctx, r: r.Body, rc: rc}, 64<<10))
	if err != nil && !errors.Is(err, io.EOF) && ctx.Err() == nil {
		m.refuseCall()
	}
}

// readStream steps the stream's messages until it ends or breaks.
func (m *PeerMux) readStream(ctx context.Context, br *bufio.Reader) error {
	var b []byte
	for {
		cid, err := binary.ReadUvarint(br)
		if err != nil {
			return err
		}
		size, err := binary.ReadUvarint(br)
		if err != nil {
			return err
		}
		if size > maxStreamMessage {
			return errors.New("stream message too large")
		}
		if cid == 0 && size == 0 {
			continue // a ping
		}
		if uint64(cap(b)) < size {
			b = make([]byte, size)
		}
		b = b[:size]
		if _, err := io.ReadFull(br, b); err != nil {
			return err
		}
		msg := &raftpb.Message{}
		if err := proto.Unmarshal(b, msg); err != nil || msg.GetType() == raftpb.MsgSnap {
			return errors.New("malformed stream message")
		}
		n := m.Node(cid)
		if n == nil || !n.knownPeer(msg.GetFrom()) || msg.GetTo() != n.id {
			m.refuseCall()
			continue
		}
		(*transportHooks)(n).Process(ctx, msg)
	}
}

// deadlineReader ends a read of a stream whose sender went silent for
// streamTimeout (its pings come every streamPing).
type deadlineReader struct {
	ctx context.Context
	r   io.Reader
	rc  *http.ResponseController
}

func (d *deadlineReader) Read(p []byte) (int, error) {
	if err := d.ctx.Err(); err != nil {
		return 0, err
	}
	if err := d.rc.SetReadDeadline(time.Now().Add(streamTimeout)); err != nil {
		return 0, err
	}
	return d.r.Read(p)
}
