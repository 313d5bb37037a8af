package raftnode

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"go.etcd.io/etcd/server/v3/etcdserver/api/rafthttp"
)

func TestAdmitPeer(t *testing.T) {
	tr := &rafthttp.Transport{}
	if err := tr.Start(); err != nil {
		t.Fatal(err)
	}
	defer tr.Stop()
	n := &Node{id: 1, clusterID: 0xc1, members: newMembership(), transport: tr}
	n.members.add(Member{ID: 1}, false)
	n.members.add(Member{ID: 2}, false)
	n.members.add(Member{ID: 3}, true)
	n.members.add(Member{ID: 4}, false)
	n.members.remove(4)
	for _, tc := range []struct {
		name, path, cluster, from string
		want                      string // "" admitted, else the refusal reason
	}{
		{"member pipeline", "/raft", "c1", "2", ""},
		{"learner snapshot", "/raft/snapshot", "c1", "3", ""},
		{"member stream", "/raft/stream/message/2", "c1", "2", ""},
		{"probe", "/raft/probing", "", "", ""},
		{"wrong cluster", "/raft", "c2", "2", RefusedClusterID},
		{"no cluster", "/raft", "", "2", RefusedClusterID},
		{"stranger", "/raft", "c1", "99", RefusedNotMember},
		{"no sender", "/raft", "c1", "", RefusedNotMember},
		{"itself", "/raft", "c1", "1", RefusedNotMember},
		// rafthttp itself tells a removed member so (410 on its streams).
		{"removed member", "/raft/stream/message/4", "c1", "4", ""},
		{"stream path names a stranger", "/raft/stream/msgappv2/99", "c1", "2", RefusedNotMember},
		{"stranger stream", "/raft/stream/message/99", "c1", "99", RefusedNotMember},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, tc.path, nil)
			if tc.cluster != "" {
				r.Header.Set("X-Etcd-Cluster-ID", tc.cluster)
			}
			if tc.from != "" {
				r.Header.Set("X-Server-From", tc.from)
			}
			reason, ok := n.admitPeer(r)
			if ok != (tc.want == "") || reason != tc.want {
				t.Fatalf("admitPeer = %q, %v; want %q", reason, ok, tc.want)
			}
		})
	}
}
