package proxy

import (
	"slices"
	"strings"
	"testing"

	"github.com/raftproxy/raftproxy/raftnode"
)

func TestInfoSections(t *testing.T) {
	for _, tc := range []struct {
		args  []string
		redis []string
		raft  bool
	}{
		{nil, nil, false},
		{[]string{"default"}, []string{"default"}, false},
		{[]string{"all"}, []string{"all"}, false},
		{[]string{"EVERYTHING"}, []string{"everything"}, true},
		{[]string{"Raft"}, nil, true},
		{[]string{"server", "raft"}, []string{"server"}, true},
	} {
		args := make([][]byte, len(tc.args))
		for i, a := range tc.args {
			args[i] = []byte(a)
		}
		redis, raft := infoSections(args)
		if !slices.Equal(redis, tc.redis) || raft != tc.raft {
			t.Errorf("infoSections(%q) = %q, %v; want %q, %v", tc.args, redis, raft, tc.redis, tc.raft)
		}
	}
}

func TestRewriteInfo(t *testing.T) {
	in := "# Server\r\nredis_version:7.0.15\r\nredis_mode:standalone\r\ntcp_port:6401\r\n\r\n" +
		"# Clients\r\nconnected_clients:4\r\nblocked_clients:0\r\n\r\n" +
		"# Replication\r\nrole:master\r\nconnected_slaves:0\r\nmaster_repl_offset:0\r\n\r\n" +
		"# Cluster\r\ncluster_enabled:0\r\n"
	leader := rewriteInfo([]byte(in), infoView{release: "1.2.3", port: "7001", clients: 9, leader: true, known: true, members: 3})
	want := "# Server\r\nredis_version:7.0.15\r\nraftproxy_version:1.2.3\r\nredis_mode:cluster\r\ntcp_port:7001\r\n\r\n" +
		"# Clients\r\nconnected_clients:9\r\nblocked_clients:0\r\n\r\n" +
		"# Replication\r\nrole:master\r\nconnected_slaves:2\r\nmaster_repl_offset:0\r\n\r\n" +
		"# Cluster\r\ncluster_enabled:1\r\n"
	if string(leader) != want {
		t.Errorf("leader:\n got %q\nwant %q", leader, want)
	}
	follower := string(rewriteInfo([]byte(in), infoView{port: "7002", known: true, members: 3,
		master: raftnode.Member{ID: 1, Addr: "127.0.0.1:7001"}}))
	if !strings.Contains(follower, "role:slave\r\nmaster_host:127.0.0.1\r\nmaster_port:7001\r\nmaster_link_status:up\r\nconnected_slaves:0\r\n") {
		t.Errorf("follower replication section: %q", follower)
	}
}

// A held redis is a replica of its proxy's apply stream: its own replica
// fields must not reach the client, on the leader or a follower.
func TestRewriteInfoHeld(t *testing.T) {
	in := "# Replication\r\nrole:slave\r\nmaster_host:127.0.0.1\r\nmaster_port:41234\r\n" +
		"master_link_status:up\r\nmaster_last_io_seconds_ago:1\r\nmaster_sync_in_progress:0\r\n" +
		"slave_read_repl_offset:99\r\nslave_repl_offset:99\r\nslave_priority:100\r\nslave_read_only:1\r\n" +
		"replica_announced:1\r\nconnected_slaves:0\r\nmaster_replid:abc\r\nmaster_repl_offset:99\r\n"
	for _, tc := range []struct {
		name string
		v    infoView
		want string
	}{
		{"leader", infoView{leader: true, known: true, members: 3},
			"# Replication\r\nrole:master\r\nconnected_slaves:2\r\nmaster_replid:abc\r\nmaster_repl_offset:99\r\n"},
		{"follower", infoView{known: true, members: 3, master: raftnode.Member{ID: 1, Addr: "127.0.0.1:7001"}},
			"# Replication\r\nrole:slave\r\nmaster_host:127.0.0.1\r\nmaster_port:7001\r\nmaster_link_status:up\r\n" +
				"connected_slaves:0\r\nmaster_replid:abc\r\nmaster_repl_offset:99\r\n"},
	} {
		if got := string(rewriteInfo([]byte(in), tc.v)); got != tc.want {
			t.Errorf("%s:\n got %q\nwant %q", tc.name, got, tc.want)
		}
	}
}
