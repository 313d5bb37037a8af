package proxy

import (
	"strings"
	"testing"
)

// The expected shapes are those of a redis 7.0 node with cluster-enabled
// yes owning slots 0-16383, with a replica added.
func TestClusterReplies(t *testing.T) {
	v := clusterView{term: 3, shard: clusterNodeID(0xabc), nodes: []clusterNode{
		{id: clusterNodeID(0x1f), ip: "127.0.0.1", port: 7001, cport: 7101, master: true, health: "online", linked: true},
		{id: clusterNodeID(0x2e), ip: "127.0.0.1", port: 7002, cport: 7102, self: true, health: "online", linked: true},
	}}
	id1, id2 := clusterNodeID(0x1f), clusterNodeID(0x2e)
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
