package raftnode

import (
	"context"
	"errors"
	"io"
	"net/http"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
)

// TestPeerCalls: a process reaches a group of another process through that
// process's peer listener, as a member of a group that process hosts: a
// call its user registered (here one that proposes, as the slot movers'
// does) and the leader query. A sender no group there knows is refused and
// counted; a group the process does not host is not found.
func TestPeerCalls(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: forms 2 groups of 3 nodes")
	}
	groups, procs := startGroups(t, 2, 3, groupOpts{})
	const path = "/raftproxy/test-propose"
	for _, p := range procs {
		p.mux.Handle(path, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n := p.mux.CallNode(w, r)
			if n == nil {
				return
			}
			body, _ := io.ReadAll(r.Body)
			f := n.Propose(r.Context(), 0, [][]byte{[]byte("SET"), []byte("k"), body}, false)
			<-f.Done()
			reply, err := f.Result()
			if err != nil {
				http.Error(w, err.Error(), http.StatusServiceUnavailable)
				return
			}
			w.Write(reply)
		}))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	member := groups[0][0].h.Node().ID()
	target := groups[1][1].h.Node().ClusterID()
	c, err := NewPeerClient(transport.TLSInfo{}, member)
	if err != nil {
		t.Fatal(err)
	}
	var reply []byte
	for {
		reply, err = c.Do(ctx, procs[1].addr, path, target, nil, []byte("v"))
		if err == nil || ctx.Err() != nil {
			break
		}
		time.Sleep(50 * time.Millisecond) // no leader yet
	}
	if err != nil || string(reply) != "+OK\r\n" {
		t.Fatalf("a proposal through a peer: %q, %v", reply, err)
	}
	applied := func() (n int64) {
		for _, gn := range groups[1] {
			n += gn.sm.applied.Load()
		}
		return n
	}
	for applied() < 3 {
		if ctx.Err() != nil {
			t.Fatalf("the proposal reached %d of 3 state machines", applied())
		}
		time.Sleep(10 * time.Millisecond)
	}
	lead, addr, err := c.Leader(ctx, procs[2].addr, target)
	if err != nil {
		t.Fatal(err)
	}
	if l, _ := groups[1][2].h.Node().Leader(); lead != l.ID || addr != l.Addr {
		t.Errorf("the leader through a peer: %s %q; the group's: %s %q", IDString(lead), addr, IDString(l.ID), l.Addr)
	}
	refused := groups[0][1].h.PeerRefusals().Get(RefusedNotMember)
	stranger, _ := NewPeerClient(transport.TLSInfo{}, RandomID())
	if _, err := stranger.Do(ctx, procs[1].addr, path, target, nil, []byte("x")); !errors.Is(err, ErrPeerCall) {
		t.Errorf("a stranger's proposal: %v, want refused", err)
	}
	if got := groups[0][1].h.PeerRefusals().Get(RefusedNotMember) - refused; got != 1 {
		t.Errorf("refusals counted: %d, want 1", got)
	}
	if _, err := c.Do(ctx, procs[1].addr, path, RandomID(), nil, []byte("x")); !errors.Is(err, ErrPeerCall) {
		t.Errorf("a proposal to a group the process does not hold: %v", err)
	}
}
