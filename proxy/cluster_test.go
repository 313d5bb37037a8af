package proxy

import (
	"strings"
	"testing"

	"github.com/raftproxy/raftproxy/slotmap"
)

// The expected shapes are those of a redis 7.0 node with cluster-enabled
// yes owning slots 0-16383, with a replica added.
func TestClusterReplies(t *testing.T) {
	v := clusterView{groups: []shardView{{term: 3, id: clusterNodeID(0, 0xabc, false), ranges: []slotmap.Range{{First: 0, Last: 16383}}, nodes: []clusterNode{
		{id: clusterNodeID(0xabc, 0x1f, false), ip: "127.0.0.1", port: 7001, cport: 7101, master: true, health: "online", linked: true},
		{id: clusterNodeID(0xabc, 0x2e, false), ip: "127.0.0.1", port: 7002, cport: 7102, self: true, health: "online", linked: true},
	}}}}
	id1, id2 := clusterNodeID(0xabc, 0x1f, false), clusterNodeID(0xabc, 0x2e, false)
	if len(id1) != 40 || !strings.HasSuffix(id1, "1f") {
		t.Fatalf("clusterNodeID(0x1f) = %q, want 40 hex digits ending in 1f", id1)
	}
	wantSlots := "*1\r\n*4\r\n:0\r\n:16383\r\n" +
		"*4\r\n$9\r\n127.0.0.1\r\n:7001\r\n$40\r\n" + id1 + "\r\n*0\r\n" +
		"*4\r\n$9\r\n127.0.0.1\r\n:7002\r\n$40\r\n" + id2 + "\r\n*0\r\n"
	if got := string(v.slots(false)); got != wantSlots {
		t.Errorf("CLUSTER SLOTS:\n got %q\nwant %q", got, wantSlots)
	}
	node := func(id, port, role string) string {
		return "*14\r\n$2\r\nid\r\n$40\r\n" + id + "\r\n$4\r\nport\r\n:" + port + "\r\n$2\r\nip\r\n$9\r\n127.0.0.1\r\n" +
			"$8\r\nendpoint\r\n$9\r\n127.0.0.1\r\n$4\r\nrole\r\n$" + string(rune('0'+len(role))) + "\r\n" + role + "\r\n" +
			"$18\r\nreplication-offset\r\n:0\r\n$6\r\nhealth\r\n$6\r\nonline\r\n"
	}
	wantShards := "*1\r\n*4\r\n$5\r\nslots\r\n*2\r\n:0\r\n:16383\r\n$5\r\nnodes\r\n*2\r\n" +
		node(id1, "7001", "master") + node(id2, "7002", "replica")
	if got := string(v.shards(false)); got != wantShards {
		t.Errorf("CLUSTER SHARDS:\n got %q\nwant %q", got, wantShards)
	}
	lines := strings.Split(v.nodesText(), "\n")
	if len(lines) != 3 || lines[2] != "" {
		t.Fatalf("CLUSTER NODES: %q, want two \\n-terminated lines", lines)
	}
	if want := id1 + " 127.0.0.1:7001@7101 master - 0 "; !strings.HasPrefix(lines[0], want) || !strings.HasSuffix(lines[0], " 3 connected 0-16383") {
		t.Errorf("CLUSTER NODES master line %q", lines[0])
	}
	if want := id2 + " 127.0.0.1:7002@7102 myself,slave " + id1 + " 0 0 0 connected"; lines[1] != want {
		t.Errorf("CLUSTER NODES replica line:\n got %q\nwant %q", lines[1], want)
	}
}

// TestShardedClusterReplies: two shards, one with two ranges; node ids
// differ per shard (a node is one cluster node per shard it holds), and
// each master lists its ranges.
func TestShardedClusterReplies(t *testing.T) {
	a1, a2 := clusterNodeID(0xa, 1, true), clusterNodeID(0xa, 2, true)
	b1, b2 := clusterNodeID(0xb, 1, true), clusterNodeID(0xb, 2, true)
	if a1 == b1 || len(a1) != 40 || !strings.HasSuffix(a1, "0000000000000001") || !strings.HasPrefix(a1, "00000000000000000000000a") {
		t.Fatalf("sharded node ids %q %q", a1, b1)
	}
	v := clusterView{groups: []shardView{
		{term: 2, ranges: []slotmap.Range{{First: 0, Last: 99}, {First: 200, Last: 299}}, nodes: []clusterNode{
			{id: a1, ip: "10.0.0.1", port: 7000, cport: 7100, master: true, linked: true, health: "online"},
			{id: a2, ip: "10.0.0.2", port: 7000, cport: 7100, self: true, linked: true, health: "online"}}},
		{term: 5, ranges: []slotmap.Range{{First: 100, Last: 199}}, nodes: []clusterNode{
			{id: b2, ip: "10.0.0.2", port: 7001, cport: 7100, master: true, linked: true, health: "online"},
			{id: b1, ip: "10.0.0.1", port: 7001, cport: 7100, linked: true, health: "online"}}},
	}}
	slots := string(v.slots(false))
	if !strings.HasPrefix(slots, "*3\r\n*4\r\n:0\r\n:99\r\n") || !strings.Contains(slots, "*4\r\n:200\r\n:299\r\n") ||
		!strings.Contains(slots, "*4\r\n:100\r\n:199\r\n*4\r\n$8\r\n10.0.0.2\r\n:7001\r\n$40\r\n"+b2) {
		t.Errorf("CLUSTER SLOTS %q", slots)
	}
	shards := string(v.shards(false))
	if !strings.HasPrefix(shards, "*2\r\n*4\r\n$5\r\nslots\r\n*4\r\n:0\r\n:99\r\n:200\r\n:299\r\n") {
		t.Errorf("CLUSTER SHARDS %q", shards)
	}
	lines := strings.Split(v.nodesText(), "\n")
	if len(lines) != 5 || !strings.HasSuffix(lines[0], " 2 connected 0-99 200-299") || !strings.Contains(lines[1], "myself,slave "+a1) ||
		!strings.HasSuffix(lines[2], " 5 connected 100-199") || !strings.Contains(lines[3], " slave "+b2+" ") {
		t.Errorf("CLUSTER NODES:\n%s", v.nodesText())
	}
}
