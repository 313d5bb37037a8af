package raftnode

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/server/v3/storage/wal"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// TestPeerStreams: with one stream per peer process, 3 groups over 3
// processes commit what writers on every node propose (followers forward
// theirs), every node applies exactly the acknowledged writes, and the
// messages went on the streams, or on rafthttp where a stream is refused
// or breaks.
func TestPeerStreams(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: forms 3 groups of 3 nodes")
	}
	t.Run("shared", func(t *testing.T) {
		groups, procs := startGroups(t, 3, 3, groupOpts{streams: true, coalesce: true})
		if failed := writeGroups(t, groups, 3*time.Second); failed > 0 {
			t.Errorf("%d writes failed on healthy streams", failed)
		}
		for i, p := range procs {
			if p.st.Sent() < 1000 {
				t.Errorf("process %d sent %d messages on its streams, want most of them", i, p.st.Sent())
			}
		}
	})
	// A peer that does not take them (a build without the endpoint
	// answers 404): its messages all go on rafthttp, and nothing is lost.
	refusing := func(i int, mux *PeerMux) http.Handler {
		if i != 2 {
			return mux
		}
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == streamPath {
				http.NotFound(w, r)
				return
			}
			mux.ServeHTTP(w, r)
		})
	}
	t.Run("a peer refuses them", func(t *testing.T) {
		groups, procs := startGroups(t, 3, 3, groupOpts{streams: true, handler: refusing})
		if failed := writeGroups(t, groups, 2*time.Second); failed > 0 {
			t.Errorf("%d writes failed with a peer on rafthttp", failed)
		}
		for i := range 2 {
			if o := procs[i].st.stream(procs[2].addr); o.up.Load() || o.sent.Load() > 0 {
				t.Errorf("process %d queued %d messages for the refusing process", i, o.sent.Load())
			}
			if o := procs[i].st.stream(procs[1-i].addr); !o.up.Load() {
				t.Errorf("process %d has no stream up to process %d", i, 1-i)
			}
		}
	})
	// Process 1 ends every stream sent to it after 50-300 ms: the messages
	// queued on it are lost, as on a broken connection, and raft sends
	// them again. Writes whose forwarded proposal was lost may time out;
	// none may be applied on one node and not another.
	cutting := func(i int, mux *PeerMux) http.Handler {
		if i != 1 {
			return mux
		}
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == streamPath {
				ctx, cancel := context.WithTimeout(r.Context(), time.Duration(50+rand.IntN(250))*time.Millisecond)
				defer cancel()
				r = r.WithContext(ctx)
			}
			mux.ServeHTTP(w, r)
		})
	}
	t.Run("streams break", func(t *testing.T) {
		groups, procs := startGroups(t, 3, 3, groupOpts{streams: true, coalesce: true, handler: cutting})
		failed := writeGroups(t, groups, 3*time.Second)
		t.Logf("%d writes failed (outcome unknown) as streams broke", failed)
		if procs[0].st.Sent() == 0 || procs[2].st.Sent() == 0 {
			t.Errorf("no messages went on the broken streams between their cuts")
		}
	})
}

// writeGroups runs 4 writers on every node of every group for d, waits for
// every node of a group to apply the same number of writes, at least the
// acknowledged ones (exactly those when none failed), and returns how
// many writes failed.
func writeGroups(t *testing.T, groups [][]groupNode, d time.Duration) int64 {
	t.Helper()
	acked := make([]atomic.Int64, len(groups))
	var failed atomic.Int64
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	// Every group has a leader and its followers are promoted first.
	for g := range groups {
		for {
			f := groups[g][0].h.Node().Propose(context.Background(), 0, [][]byte{[]byte("SET"), []byte("k"), []byte("0")}, false)
			<-f.Done()
			if _, err := f.Result(); err == nil {
				acked[g].Add(1)
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	time.Sleep(time.Second)
	var wg sync.WaitGroup
	for g := range groups {
		for i := range groups[g] {
			for w := range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					n := groups[g][i].h.Node()
					for k := 0; ctx.Err() == nil; k++ {
						pctx, pcancel := context.WithTimeout(context.Background(), 5*time.Second)
						f := n.Propose(pctx, 0, [][]byte{[]byte("SET"), []byte("k" + strconv.Itoa(w)), []byte(strconv.Itoa(k))}, false)
						<-f.Done()
						pcancel()
						if _, err := f.Result(); err == nil {
							acked[g].Add(1)
						} else {
							failed.Add(1)
						}
					}
				}()
			}
		}
	}
	wg.Wait()
	for g := range groups {
		var counts []int64
		for end := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			counts = counts[:0]
			same := true
			for _, gn := range groups[g] {
				counts = append(counts, gn.sm.applied.Load())
				same = same && counts[len(counts)-1] == counts[0]
			}
			if same || time.Now().After(end) {
				break
			}
		}
		for i, c := range counts {
			switch {
			case c != counts[0]:
				t.Errorf("group %d: node %d applied %d writes, node 0 %d", g, i, c, counts[0])
			case c < acked[g].Load():
				t.Errorf("group %d: node %d applied %d writes, fewer than the %d acknowledged", g, i, c, acked[g].Load())
			case failed.Load() == 0 && c != acked[g].Load():
				t.Errorf("group %d: node %d applied %d writes, not the %d acknowledged", g, i, c, acked[g].Load())
			}
		}
		t.Logf("group %d: %d writes acknowledged", g, acked[g].Load())
	}
	return failed.Load()
}

// TestStreamConnect: a peer that does not serve streams (a build without
// the endpoint answers 404, after reading a request's body to its end,
// which a stream's never reaches) is asked first and left alone for
// streamRefusedRetry; a peer that takes a stream but never answers it is
// given up on after streamTimeout. Neither gets a message queued.
func TestStreamConnect(t *testing.T) {
	s, err := NewStreams(transport.TLSInfo{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	connect := func(h http.Handler) (time.Duration, time.Duration, *outStream) {
		srv := httptest.NewServer(h)
		defer srv.Close()
		o := &outStream{s: s, peer: srv.Listener.Addr().String(), wake: make(chan struct{}, 1), closed: true}
		start := time.Now()
		wait := o.connect()
		return wait, time.Since(start), o
	}
	wait, took, o := connect(http.NotFoundHandler())
	if wait != streamRefusedRetry || took > time.Second || o.up.Load() {
		t.Errorf("a peer without streams: connect waits %v after %v (up %v), want %v at once", wait, took, o.up.Load(), streamRefusedRetry)
	}
	silent := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		io.Copy(io.Discard, r.Body) // takes the stream, answers nothing
	})
	wait, took, o = connect(silent)
	if wait != streamRetry || took < streamTimeout || took > streamTimeout+2*time.Second || o.up.Load() {
		t.Errorf("a silent peer: connect waits %v after %v (up %v), want %v after %v", wait, took, o.up.Load(), streamRetry, streamTimeout)
	}
	if s.queue(1, &raftpb.Message{Type: raftpb.MsgApp.Enum(), To: proto.Uint64(2)}, o.peer) || o.sent.Load() != 0 {
		t.Errorf("a message was queued on a stream that is not up")
	}
}

// BenchmarkGroupWrites measures the CPU per write of 3 in-process nodes
// (their raft, WALs, transport and proposers; the state machine only
// counts) under 48 writers spread over the groups, each on its group's
// leader, with each group's messages on its own rafthttp streams and on
// the process's shared streams.
//
//	go test -run XXX -bench GroupWrites -benchtime 20000x ./raftnode
func BenchmarkGroupWrites(b *testing.B) {
	defer func(s int64) { wal.SegmentSizeBytes = s }(wal.SegmentSizeBytes)
	wal.SegmentSizeBytes = 8 << 20
	for _, groups := range []int{1, 8} {
		for _, shared := range []bool{false, true} {
			name := fmt.Sprintf("groups=%d/rafthttp", groups)
			if shared {
				name = fmt.Sprintf("groups=%d/streams", groups)
			}
			b.Run(name, func(b *testing.B) {
				nodes, _ := startGroups(b, groups, 3, groupOpts{coalesce: true, streams: shared})
				leaders := make([]*Node, groups)
				for g := range nodes {
					for deadline := time.Now().Add(10 * time.Second); leaders[g] == nil && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
						for _, gn := range nodes[g] {
							if n := gn.h.Node(); n.lead.Load() == n.id {
								leaders[g] = n
							}
						}
					}
					if leaders[g] == nil {
						b.Fatalf("group %d has no leader", g)
					}
				}
				time.Sleep(2 * time.Second) // followers promoted
				var next, failed atomic.Int64
				var wg sync.WaitGroup
				b.ResetTimer()
				start, t0 := processCPU(b), time.Now()
				for w := range 48 {
					wg.Go(func() {
						n := leaders[w%groups]
						for next.Add(1) <= int64(b.N) {
							f := n.Propose(context.Background(), 0, [][]byte{[]byte("SET"), []byte("k" + strconv.Itoa(w)), []byte("v")}, false)
							<-f.Done()
							if _, err := f.Result(); err != nil {
								failed.Add(1)
							}
						}
					})
				}
				wg.Wait()
				used, wall := processCPU(b)-start, time.Since(t0)
				b.StopTimer()
				if failed.Load() > 0 {
					b.Errorf("%d writes failed", failed.Load())
				}
				b.ReportMetric(float64(used.Microseconds())/float64(b.N), "µs-cpu/write")
				b.ReportMetric(float64(b.N)/wall.Seconds(), "writes/s")
			})
		}
	}
}

// queueOnly returns streams with peer "p"'s stream up and no connection:
// the test reads the queue itself.
func queueOnly(t *testing.T) (*Streams, *outStream) {
	t.Helper()
	s, err := NewStreams(transport.TLSInfo{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	o := &outStream{s: s, peer: "p", wake: make(chan struct{}, 1)}
	o.up.Store(true)
	s.mu.Lock()
	s.peers["p"] = o
	s.mu.Unlock()
	return s, o
}

// TestStreamQueueBounded: a connection that reads a little less than is
// queued, and so never empties the queue, keeps the queue's buffer to
// about what is unread, not all that was ever sent; and the frames it
// reads are the messages queued, in order.
func TestStreamQueueBounded(t *testing.T) {
	s, o := queueOnly(t)
	var read []byte
	p := make([]byte, 900)
	body := &streamBody{o: o} // the connection of generation 0
	for i := range 20000 {
		m := &raftpb.Message{Type: raftpb.MsgApp.Enum(), To: proto.Uint64(2), Index: proto.Uint64(uint64(i)), Entries: []*raftpb.Entry{{Data: make([]byte, 900)}}}
		if !s.queue(7, m, "p") {
			t.Fatalf("message %d not queued", i)
		}
		n, _ := body.Read(p)
		read = append(read, p[:n]...)
		if c := cap(o.buf); c > 4<<20 {
			t.Fatalf("after %d messages the queue holds %d bytes of buffer, %d of them unread", i+1, c, len(o.buf)-o.off)
		}
	}
	for o.off < len(o.buf) {
		n, _ := body.Read(p)
		read = append(read, p[:n]...)
	}
	rd := bytes.NewReader(read)
	for i := range 20000 {
		cid, m, err := nextFrame(rd)
		if err != nil || cid != 7 || m.GetIndex() != uint64(i) {
			t.Fatalf("frame %d: cluster %d, index %d, err %v", i, cid, m.GetIndex(), err)
		}
	}
}

// nextFrame decodes the next frame of a stream's queue.
func nextFrame(rd *bytes.Reader) (uint64, *raftpb.Message, error) {
	m := &raftpb.Message{}
	cid, err := binary.ReadUvarint(rd)
	if err != nil {
		return 0, m, err
	}
	size, err := binary.ReadUvarint(rd)
	if err != nil || size > uint64(rd.Len()) {
		return cid, m, fmt.Errorf("frame size %d of %d left: %v", size, rd.Len(), err)
	}
	b := make([]byte, size)
	if _, err := io.ReadFull(rd, b); err != nil {
		return cid, m, err
	}
	return cid, m, proto.Unmarshal(b, m)
}

// TestStreamOldConnection: the body of a connection that ended, still
// being read by its transport when the next connection starts, takes
// nothing queued for the next one (which the dead connection would lose),
// and a wake it takes reaches the new one, which gets its frame at once
// rather than a ping's interval later. Both bodies wait when the frame is
// queued, and either may take the wake: the round is run several times.
func TestStreamOldConnection(t *testing.T) {
	s, o := queueOnly(t)
	type result struct {
		n   int
		p   []byte
		err error
		d   time.Duration
	}
	read := func(b *streamBody, out chan<- result) {
		p := make([]byte, 1024)
		start := time.Now()
		n, err := b.Read(p)
		out <- result{n, p[:n], err, time.Since(start)}
	}
	for round := range 8 {
		o.mu.Lock()
		o.gen++
		old := &streamBody{o: o, gen: o.gen}
		o.mu.Unlock()
		oldc, curc := make(chan result, 1), make(chan result, 1)
		go read(old, oldc)
		time.Sleep(20 * time.Millisecond) // the old body waits for a frame
		o.mu.Lock()
		o.gen++ // the next connection
		cur := &streamBody{o: o, gen: o.gen}
		o.mu.Unlock()
		go read(cur, curc)
		time.Sleep(20 * time.Millisecond) // and so does the new one
		m := &raftpb.Message{Type: raftpb.MsgApp.Enum(), To: proto.Uint64(2), Index: proto.Uint64(uint64(round))}
		if !s.queue(7, m, "p") {
			t.Fatal("not queued")
		}
		r := <-curc
		if r.err != nil || r.n <= len(streamPingFrame) || r.d > streamPing/2 {
			t.Fatalf("round %d: the new connection's body read %d bytes after %v, err %v", round, r.n, r.d, r.err)
		}
		cid, got, err := nextFrame(bytes.NewReader(r.p))
		if err != nil || cid != 7 || got.GetIndex() != uint64(round) {
			t.Fatalf("round %d: frame: cluster %d, index %d, err %v", round, cid, got.GetIndex(), err)
		}
		// The old body ends at its next wake (or ping) without a frame.
		select {
		case o.wake <- struct{}{}:
		default:
		}
		if r := <-oldc; r.n != 0 || r.err != io.EOF {
			t.Fatalf("round %d: the old connection's body read %d bytes (err %v): frames meant for the new one", round, r.n, r.err)
		}
	}
}
