package proxy

import (
	"testing"

	"github.com/raftproxy/raftproxy/slotmap"
)

type fakeSharding struct {
	rt      *slotmap.Map
	sharded bool
}

func (f fakeSharding) Routing() *slotmap.Map     { return f.rt }
func (f fakeSharding) Sharded() bool             { return f.sharded }
func (f fakeSharding) Group(string) Group        { return nil }
func (f fakeSharding) Open(int) (*Server, error) { return nil, nil }

// TestRoutingUnknown: a node of a sharded cluster whose routing data is not
// loaded (a restart, a rebuild of the primary group) refuses what needs it
// instead of serving as if it were not sharded, which would put keys of any
// slot in whichever shard a client reached (seen in review: the slot gate
// passed everything while the primary group replayed its log).
func TestRoutingUnknown(t *testing.T) {
	var m slotmap.Map
	if _, err := m.Apply(slotmap.Change{Op: slotmap.OpInit, Shards: []slotmap.Shard{{ID: "a", Members: []uint64{1}}}}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		sh       Sharding
		wantMap  bool
		wantDown bool
	}{
		{"never sharded", fakeSharding{}, false, false},
		{"no sharding at all", nil, false, false},
		{"sharded, routing loaded", fakeSharding{rt: &m, sharded: true}, true, false},
		{"sharded, routing not loaded", fakeSharding{sharded: true}, false, true},
	} {
		s := &Server{cfg: Config{Sharding: tc.sh}}
		rt, refused := s.routing()
		if (rt != nil) != tc.wantMap || (refused != nil) != tc.wantDown {
			t.Errorf("%s: routing %v, refused %v", tc.name, rt != nil, refused)
		}
		if refused != nil && string(refused.reply) != "-"+errRoutingUnknown+"\r\n" {
			t.Errorf("%s: refused with %q", tc.name, refused.reply)
		}
	}
}
