package raftnode

import (
	"context"
	"net/http"
	"strconv"
	"testing"
	"time"
)

// TestCoalescedHeartbeats: with a coalescer per process, the groups'
// heartbeats go in one peer call per peer and tick, and they keep every
// leader in place (followers that heard none would campaign within an
// election timeout) while the groups commit.
func TestCoalescedHeartbeats(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: forms 3 groups of 3 nodes")
	}
	t.Run("coalesced", func(t *testing.T) { testHeartbeats(t, groupOpts{coalesce: true}, 200) })
	// A peer that does not take them (a build without the endpoint, which
	// answers as rafthttp does to a request naming no cluster): its
	// heartbeats go on rafthttp, and no leader changes.
	refusing := func(i int, mux *PeerMux) http.Handler {
		if i != 2 {
			return mux
		}
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == heartbeatsPath {
				http.Error(w, "cluster ID mismatch", http.StatusPreconditionFailed)
				return
			}
			mux.ServeHTTP(w, r)
		})
	}
	t.Run("a peer refuses them", func(t *testing.T) { testHeartbeats(t, groupOpts{coalesce: true, handler: refusing}, 100) })
	// Idle groups quiesce meanwhile: the quiesce rounds' marked heartbeats
	// and answers travel with the plain ones, a coalesced round trip takes
	// a tick or two, and no follower may be left ticking alone by a leader
	// that quiesced (it would campaign).
	t.Run("with quiescence", func(t *testing.T) { testHeartbeats(t, groupOpts{coalesce: true, quiesce: true}, 1) })
}

// testHeartbeats forms 3 groups of 3 processes with o and checks that the
// leaders stay while at least want heartbeats go coalesced in 3 s.
func testHeartbeats(t *testing.T, o groupOpts, want uint64) {
	groups, procs := startGroups(t, 3, 3, o)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	write := func(g int) {
		t.Helper()
		n := groups[g][0].h.Node()
		for {
			f := n.Propose(ctx, 0, [][]byte{[]byte("SET"), []byte("k"), []byte(strconv.Itoa(g))}, false)
			<-f.Done()
			if _, err := f.Result(); err == nil {
				return
			} else if ctx.Err() != nil {
				t.Fatalf("group %d: %v", g, err)
			}
			time.Sleep(50 * time.Millisecond) // no leader yet, or a learner not promoted
		}
	}
	for g := range groups {
		write(g)
	}
	// Every follower promoted and heard from its leader: the terms now.
	time.Sleep(time.Second)
	terms := make([]uint64, len(groups))
	for g := range groups {
		terms[g] = groups[g][0].h.Node().Status().Term
	}
	sent := func() (n uint64) {
		for _, p := range procs {
			n += p.hb.Sent()
		}
		return n
	}
	before := sent()
	// 30 heartbeat ticks, three election timeouts.
	for end, all := time.Now().Add(3*time.Second), false; time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if !all && quiesced(groups) == 9 {
			all = true
			t.Logf("every node quiesced after %v", 3*time.Second-time.Until(end))
		}
		if o.quiesce && !all && time.Until(end) < 20*time.Millisecond {
			t.Errorf("the groups did not all quiesce within 3 s: %d of 9 nodes", quiesced(groups))
		}
	}
	for g := range groups {
		write(g)
		for i, gn := range groups[g] {
			if st := gn.h.Node().Status(); st.Term != terms[g] {
				t.Errorf("group %d node %d: term %d, was %d: an election while heartbeats were coalesced", g, i, st.Term, terms[g])
			}
		}
	}
	// 3 groups x 2 followers x (heartbeat + response) x 30 ticks: 360,
	// less what rafthttp carried while a peer's address was not known.
	if got := sent() - before; got < want {
		t.Errorf("%d heartbeats went coalesced in 3 s, want at least %d", got, want)
	}
}
