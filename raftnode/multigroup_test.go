package raftnode

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/server/v3/storage/wal"

	"github.com/raftproxy/raftproxy/entry"
	"github.com/raftproxy/raftproxy/fsm"
	rwal "github.com/raftproxy/raftproxy/wal"
)

// countingMachine is a state machine in memory: it counts what it applies
// and answers +OK.
type countingMachine struct{ applied atomic.Int64 }

func (m *countingMachine) Apply(cmds []fsm.Command) error {
	for _, c := range cmds {
		m.applied.Add(1)
		if c.Reply != nil {
			c.Reply([]byte("+OK\r\n"))
		}
	}
	return nil
}
func (m *countingMachine) Reset(context.Context, io.Reader, int64) error { return nil }
func (m *countingMachine) Healthy(context.Context) bool                  { return true }
func (m *countingMachine) StartSnapshot(context.Context) (fsm.SnapshotJob, error) {
	return nil, errors.New("no snapshots here")
}

// groupNode is one node of one group: its host and state machine.
type groupNode struct {
	h  *Host
	sm *countingMachine
}

// testProc is one "process" of a test: a peer listener (a PeerMux)
// serving all its groups, as one raftproxy hosting many groups, the
// Liveness its groups share when they may quiesce, and the Syncer their
// WALs share.
type testProc struct {
	mux  *PeerMux
	srv  *http.Server
	addr string
	live *Liveness
	sync *rwal.Syncer
	hb   *Heartbeats
	st   *Streams
}

// groupOpts are startGroups' options.
type groupOpts struct {
	tick     time.Duration
	quiesce  bool // the processes have a Liveness: idle groups quiesce
	coalesce bool // the processes coalesce their groups' heartbeats
	streams  bool // the processes share one stream per peer
	// handler, when set, is what process i's peer listener serves in
	// place of its mux.
	handler func(i int, mux *PeerMux) http.Handler
}

// startGroups starts groups raft groups over nodes processes of this test.
// It returns the nodes by group, then by process.
func startGroups(t testing.TB, groups, nodes int, o groupOpts) ([][]groupNode, []*testProc) {
	t.Helper()
	dir := t.TempDir()
	procs := make([]*testProc, nodes)
	for i := range procs {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p := &testProc{mux: NewPeerMux(), addr: ln.Addr().String()}
		p.srv = &http.Server{Handler: p.mux, ReadHeaderTimeout: 5 * time.Second}
		if o.handler != nil {
			p.srv.Handler = o.handler(i, p.mux)
		}
		go p.srv.Serve(ln)
		t.Cleanup(func() { p.srv.Close() })
		if o.quiesce {
			if p.live, err = NewLiveness(transport.TLSInfo{}, o.tick, 0); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(p.live.Close)
		}
		if o.coalesce {
			if p.hb, err = NewHeartbeats(transport.TLSInfo{}, o.tick); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(p.hb.Close)
		}
		if o.streams {
			if p.st, err = NewStreams(transport.TLSInfo{}); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(p.st.Close)
		}
		if p.sync, err = rwal.NewSyncer(dir); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.sync.Close() })
		procs[i] = p
	}
	log := slog.New(slog.DiscardHandler)
	out := make([][]groupNode, groups)
	for g := range out {
		out[g] = make([]groupNode, nodes)
		for i := range out[g] {
			sm := &countingMachine{}
			h := NewHost(Config{DataDir: filepath.Join(dir, fmt.Sprintf("g%d-n%d", g, i)), Self: Member{PeerAddr: procs[i].addr},
				StateMachine: sm, Logger: log, MinFreeDisk: 1, TickInterval: o.tick, Liveness: procs[i].live, WALSync: procs[i].sync, Heartbeats: procs[i].hb, Streams: procs[i].st})
			procs[i].mux.Add(h)
			out[g][i] = groupNode{h: h, sm: sm}
			t.Cleanup(h.Stop)
		}
		first, err := out[g][0].h.Init()
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		for i := 1; i < nodes; i++ {
			id := RandomID()
			var members []MemberInfo
			for {
				if members, err = first.AddLearner(ctx, Member{ID: id, PeerAddr: procs[i].addr, Format: entry.Version}); err == nil || ctx.Err() != nil {
					break
				}
				time.Sleep(20 * time.Millisecond) // no leader yet
			}
			if err != nil {
				t.Fatalf("group %d: adding node %d: %v", g, i, err)
			}
			var ms []Member
			for _, mi := range members {
				ms = append(ms, mi.Member)
			}
			if _, err := out[g][i].h.Join(first.ClusterID(), id, ms); err != nil {
				t.Fatalf("group %d: node %d joining: %v", g, i, err)
			}
		}
		cancel()
	}
	return out, procs
}

// TestPeerMuxGroups: one peer listener per process carries the traffic of
// several groups, each its own raft cluster, routed by cluster id: every
// group elects a leader and commits on all its nodes, and a request for a
// cluster no group here belongs to is refused as rafthttp refuses one.
func TestPeerMuxGroups(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: forms 3 groups of 3 nodes")
	}
	groups, procs := startGroups(t, 3, 3, groupOpts{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for g, nodes := range groups {
		n := nodes[g%len(nodes)].h.Node()
		var f *Future
		for {
			f = n.Propose(ctx, 0, [][]byte{[]byte("SET"), []byte("k"), []byte(strconv.Itoa(g))}, false)
			<-f.Done()
			if _, err := f.Result(); err == nil || ctx.Err() != nil {
				break
			}
			time.Sleep(50 * time.Millisecond) // no leader yet, or a learner not promoted
		}
		if reply, err := f.Result(); err != nil || string(reply) != "+OK\r\n" {
			t.Fatalf("group %d: write answered %q, %v", g, reply, err)
		}
		for i, gn := range nodes {
			for gn.sm.applied.Load() < 1 {
				if ctx.Err() != nil {
					t.Fatalf("group %d: node %d applied nothing", g, i)
				}
				time.Sleep(10 * time.Millisecond)
			}
		}
	}
	seen := map[uint64]bool{}
	for g, nodes := range groups {
		cid := nodes[0].h.Node().ClusterID()
		if seen[cid] {
			t.Fatalf("group %d shares cluster id %s", g, IDString(cid))
		}
		seen[cid] = true
	}
	// Refused by the first group's host, and counted there, as a node of
	// one group refuses it (raftproxy_peer_refused_total).
	req, _ := http.NewRequest(http.MethodPost, "/raft", strings.NewReader(""))
	req.Header.Set("X-Etcd-Cluster-ID", "123")
	rec := &statusRecorder{header: http.Header{}}
	procs[0].mux.ServeHTTP(rec, req)
	if got := groups[0][0].h.PeerRefusals().Get(RefusedClusterID); rec.status != http.StatusPreconditionFailed || got != 1 {
		t.Errorf("a request for another cluster: status %d, refusals %d; want 412 and 1", rec.status, got)
	}
}

type statusRecorder struct {
	header http.Header
	status int
}

func (r *statusRecorder) Header() http.Header         { return r.header }
func (r *statusRecorder) Write(b []byte) (int, error) { return len(b), nil }
func (r *statusRecorder) WriteHeader(s int)           { r.status = s }

// BenchmarkIdleGroups measures what idle groups cost: groups raft groups
// of 3 nodes, all in this process (3 "processes" of one peer listener
// each), formed and then left alone. Each iteration is one second of idle
// time; the metric is the CPU this process used per second, in percent of
// one core, for all 3 nodes together and per group.
//
//	go test -run XXX -bench IdleGroups -benchtime 5x ./raftnode
func BenchmarkIdleGroups(b *testing.B) {
	// A WAL preallocates 64 MiB segments: 3 nodes of 64 groups would ask
	// for 12 GiB of disk here, and that much per process in production.
	defer func(s int64) { wal.SegmentSizeBytes = s }(wal.SegmentSizeBytes)
	wal.SegmentSizeBytes = 1 << 20
	for _, bc := range []struct {
		groups   int
		tick     time.Duration
		quiesce  bool
		coalesce bool
		streams  bool
	}{{1, 0, false, false, false}, {8, 0, false, false, false}, {64, 0, false, false, false}, {64, 0, false, true, false}, {64, time.Second, false, false, false},
		{64, 0, true, false, false}, {64, 0, true, true, false}, {64, 0, true, true, true}} {
		groups := bc.groups
		name := fmt.Sprintf("groups=%d", groups)
		if bc.tick != 0 {
			// Ten times fewer ticks and heartbeats: what is left is the
			// groups' other timers.
			name += fmt.Sprintf("/tick=%v", bc.tick)
		}
		if bc.quiesce {
			name += "/quiesce"
		}
		if bc.coalesce {
			name += "/coalesce"
		}
		if bc.streams {
			name += "/streams"
		}
		b.Run(name, func(b *testing.B) {
			nodes, _ := startGroups(b, groups, 3, groupOpts{tick: bc.tick, quiesce: bc.quiesce, coalesce: bc.coalesce, streams: bc.streams})
			time.Sleep(3 * time.Second) // elections and promotions settle
			if bc.quiesce {
				// and then every group goes quiet
				for deadline := time.Now().Add(60 * time.Second); quiesced(nodes) < 3*groups && time.Now().Before(deadline); {
					time.Sleep(100 * time.Millisecond)
				}
				time.Sleep(4 * time.Second) // and let go of their transport peers
			}
			if f := os.Getenv("IDLE_CPUPROFILE"); f != "" {
				out, err := os.Create(f)
				if err != nil {
					b.Fatal(err)
				}
				pprof.StartCPUProfile(out)
				defer pprof.StopCPUProfile()
			}
			readies := func() (sum uint64) {
				for _, g := range nodes {
					for _, gn := range g {
						sum += gn.h.Node().counters.Readies.Load()
					}
				}
				return sum
			}
			b.ResetTimer()
			r0 := readies()
			start, t0 := processCPU(b), time.Now()
			for i := 0; i < b.N; i++ {
				time.Sleep(time.Second)
			}
			used, wall := processCPU(b)-start, time.Since(t0)
			b.StopTimer()
			b.ReportMetric(float64(readies()-r0)/wall.Seconds()/float64(groups), "readies/s/group")
			pct := 100 * used.Seconds() / wall.Seconds()
			b.ReportMetric(pct, "%core")
			b.ReportMetric(pct/float64(groups), "%core/group")
			b.ReportMetric(100*float64(quiesced(nodes))/float64(3*groups), "%quiesced")
		})
	}
}

// quiesced counts the nodes of groups that do not tick.
func quiesced(groups [][]groupNode) (n int) {
	for _, g := range groups {
		for _, gn := range g {
			if gn.h.Node().core.quiesced() {
				n++
			}
		}
	}
	return n
}

// processCPU is this process's user and system CPU time so far.
func processCPU(tb testing.TB) time.Duration {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		tb.Skipf("no /proc/self/stat: %v", err)
	}
	// Fields after the command name (in parentheses, which may hold
	// spaces): utime and stime are the 12th and 13th after it, in ticks.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ is 100 on Linux
}

// idMachine records the host's cluster id at each Apply.
type idMachine struct {
	countingMachine
	h      *Host
	unseen atomic.Int64 // Applies that saw no cluster id
}

func (m *idMachine) Apply(cmds []fsm.Command) error {
	if m.h.ClusterID() == 0 {
		m.unseen.Add(1)
	}
	return m.countingMachine.Apply(cmds)
}

// TestClusterIDBeforeReplay: a restarted host knows its cluster id before
// its state machine applies anything, the replay of its log included (a
// shard's applier decides what it serves by it: deciding without it on one
// node only would make that node's data differ).
func TestClusterIDBeforeReplay(t *testing.T) {
	groups, _ := startGroups(t, 1, 1, groupOpts{})
	h := groups[0][0].h
	n := h.Node()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := 0; i < 3; i++ {
		f := n.Propose(ctx, 0, [][]byte{[]byte("SET"), []byte("k"), []byte(strconv.Itoa(i))}, false)
		<-f.Done()
		if _, err := f.Result(); err != nil {
			t.Fatal(err)
		}
	}
	cid, dir := n.ClusterID(), h.cfg.DataDir
	h.Stop()
	sm := &idMachine{}
	h2 := NewHost(Config{DataDir: dir, Self: h.cfg.Self, StateMachine: sm, Logger: h.cfg.Logger, MinFreeDisk: 1})
	sm.h = h2
	t.Cleanup(h2.Stop)
	if _, err := h2.Restart(); err != nil {
		t.Fatal(err)
	}
	for sm.applied.Load() < 3 {
		if ctx.Err() != nil {
			t.Fatalf("replayed %d of 3 entries", sm.applied.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if sm.unseen.Load() != 0 || h2.ClusterID() != cid {
		t.Errorf("%d applies without the cluster id; ClusterID %x, want %x", sm.unseen.Load(), h2.ClusterID(), cid)
	}
}
