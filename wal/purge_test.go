package wal

import (
	"strings"
	"testing"

	"go.etcd.io/etcd/client/pkg/v3/fileutil"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

func segments(t *testing.T, dir string) []string {
	t.Helper()
	names, err := fileutil.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, n := range names {
		if strings.HasSuffix(n, ".wal") {
			out = append(out, n)
		}
	}
	return out
}

// Purge deletes only the segments the open WAL released, oldest first,
// and leaves the newest keep.
func TestPurgeOnlyReleasedSegments(t *testing.T) {
	l, dir := smallSegments(t)
	defer l.Close()
	big := make([]byte, 4<<10)
	for i := uint64(1); i <= 40; i++ {
		e := &raftpb.Entry{Index: proto.Uint64(i), Term: proto.Uint64(1), Data: big}
		if _, err := l.Save(&raftpb.HardState{Term: proto.Uint64(1), Commit: proto.Uint64(i)}, []*raftpb.Entry{e}); err != nil {
			t.Fatal(err)
		}
	}
	all := segments(t, dir)
	if len(all) < 6 {
		t.Fatalf("%d segments; the test needs more than %d", len(all), 5)
	}
	if n, err := Purge(dir, 1); err != nil || n != 0 {
		t.Fatalf("purge of a WAL that released nothing: %d deleted, err %v", n, err)
	}
	if err := l.ReleaseLockTo(40); err != nil {
		t.Fatal(err)
	}
	n, err := Purge(dir, 2)
	if err != nil {
		t.Fatal(err)
	}
	left := segments(t, dir)
	if n == 0 || len(left) != len(all)-n || len(left) < 2 {
		t.Fatalf("after release: %d deleted, %d of %d left", n, len(left), len(all))
	}
	if left[len(left)-1] != all[len(all)-1] {
		t.Fatalf("the newest segment %s was deleted (left %v)", all[len(all)-1], left)
	}
}
