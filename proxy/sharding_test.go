package proxy

import (
	"testing"

	"github.com/raftproxy/raftproxy/raftnode"
	"github.com/raftproxy/raftproxy/slotmap"
)

type fakeSharding struct {
	rt      *slotmap.Map
	sharded bool
	groups  map[string]Group
}

func (f fakeSharding) Routing() *slotmap.Map                { return f.rt }
func (f fakeSharding) Sharded() bool                        { return f.sharded }
func (f fakeSharding) Group(id string) Group                { return f.groups[id] }
func (f fakeSharding) GroupRouting(string) *slotmap.Map     { return nil }
func (f fakeSharding) Open(int) (*Server, error)            { return nil, nil }
func (f fakeSharding) Elsewhere(string) (RemoteShard, bool) { return RemoteShard{}, false }

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

// fakeGroup is a group's node as far as routing replies need it.
type fakeGroup struct {
	Group
	cluster uint64
	addr    string
}

func (g fakeGroup) ClusterID() uint64 { return g.cluster }
func (g fakeGroup) Leader() (raftnode.Member, bool) {
	return raftnode.Member{Addr: g.addr}, true
}

type fakeCluster struct {
	Cluster
	node Group
}

func (c fakeCluster) Node() Group { return c.node }

// TestNotServedReply: a command that reached the log after its slot left the
// shard is answered -MOVED to the new owner, which every cluster client
// follows (redis-cli -c does not retry -TRYAGAIN: TestSlotMove saw it print
// one), unless the routing data here still names this shard.
func TestNotServedReply(t *testing.T) {
	var m slotmap.Map
	a, b := fakeGroup{cluster: 10, addr: "127.0.0.1:7001"}, fakeGroup{cluster: 11, addr: "127.0.0.1:7012"}
	if _, err := m.Apply(slotmap.Change{Op: slotmap.OpInit, Shards: []slotmap.Shard{{ID: "a", Members: []uint64{1}}, {ID: "b", Index: 1, Members: []uint64{1}}}}); err != nil {
		t.Fatal(err)
	}
	s := &Server{cfg: Config{
		Sharding: fakeSharding{rt: &m, sharded: true, groups: map[string]Group{"a": a, "b": b}},
		Cluster:  fakeCluster{node: a},
	}}
	for _, tc := range []struct{ in, want string }{
		{"-TRYAGAIN slot 9000 is not served by this shard\r\n", "-MOVED 9000 127.0.0.1:7012\r\n"},
		{"-TRYAGAIN slot 100 is not served by this shard\r\n", "-TRYAGAIN slot 100 is not served by this shard\r\n"},
		{"-TRYAGAIN slot 9000 is being moved to this shard\r\n", "-TRYAGAIN slot 9000 is being moved to this shard\r\n"},
		{"-TRYAGAIN slot x is not served by this shard\r\n", "-TRYAGAIN slot x is not served by this shard\r\n"},
	} {
		if got := string(s.notServedReply([]byte(tc.in))); got != tc.want {
			t.Errorf("%q: got %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestRedirectWithoutLeader: while shard b has no leader, a redirect to it
// names this node's own port for b only if b's own log says it serves the
// slot there (it owns it, moves it out, or, for -ASK, moves it in); one
// that b would answer by sending the client back is -CLUSTERDOWN, so the
// client does not bounce between two ports. (Found in review.)
func TestRedirectWithoutLeader(t *testing.T) {
	var m slotmap.Map
	shards := []slotmap.Shard{{ID: "a", Members: []uint64{1}}, {ID: "b", Index: 1, Members: []uint64{1}}}
	if _, err := m.Apply(slotmap.Change{Op: slotmap.OpInit, Shards: shards}); err != nil {
		t.Fatal(err)
	}
	moving := m.Clone()
	mv := slotmap.Move{ID: 1, Range: slotmap.Range{First: 0, Last: 99}, From: "a", To: "b", Epoch: 1}
	if _, err := moving.Apply(slotmap.Change{Op: slotmap.OpSyncMove, State: &mv}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		own  *slotmap.Map
		id   string
		kind string
		slot int
		want bool
	}{
		{"owner", &m, "a", "MOVED", 10, true},
		{"not the owner", &m, "b", "MOVED", 10, false},
		{"the source of a move", moving, "a", "MOVED", 10, true},
		{"the target of a move, MOVED", moving, "b", "MOVED", 10, false},
		{"the target of a move, ASK", moving, "b", "ASK", 10, true},
		{"ASK without a move", &m, "b", "ASK", 10, false},
		{"routing not loaded", nil, "a", "MOVED", 10, false},
	} {
		if got := serves(tc.own, tc.id, tc.kind, tc.slot); got != tc.want {
			t.Errorf("%s: serves %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestNoRetryOfScripts: a write refused while its key was being copied is
// proposed again only when it is not a script, which may answer that very
// error text after writing, and only while the reader completes it alone.
// (Found in review.)
func TestNoRetryOfScripts(t *testing.T) {
	c := &conn{inline: true}
	for _, tc := range []struct {
		args []string
		want bool
	}{
		{[]string{"SET", "k", "v"}, true},
		{[]string{"EVAL", "return 1", "0"}, false},
		{[]string{"fcall", "f", "0"}, false},
	} {
		var args [][]byte
		for _, a := range tc.args {
			args = append(args, []byte(a))
		}
		o := &op{kind: opWrite, node: fakeGroup{}, args: args}
		if got := c.mayRetry(o); got != tc.want {
			t.Errorf("%v: mayRetry %v, want %v", tc.args, got, tc.want)
		}
	}
	c.inline = false
	if c.mayRetry(&op{kind: opWrite, node: fakeGroup{}, args: [][]byte{[]byte("SET")}}) {
		t.Error("a write retried while later commands may be in flight")
	}
}
