package test

import (
	"encoding/binary"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// TestTornWALTail: a crash in the middle of a WAL write leaves a torn last
// record. The node must repair it on start (those bytes were never
// acknowledged), then catch up from the leader and end identical.
func TestTornWALTail(t *testing.T) {
	ctx := testContext(t, 3*time.Minute)
	c := StartCluster(ctx, t, ClusterOptions{})
	leader, followers := c.Leader(ctx)
	f := followers[0]
	const n = 2000
	sample, err := writeKeys(leader.Addr, "torn", n, 50)
	if err != nil {
		t.Fatal(err)
	}
	if err := waitForReads(ctx, f, sample); err != nil {
		t.Fatal(err)
	}
	if err := f.KillProxy(); err != nil {
		t.Fatal(err)
	}
	torn := tearWALTail(t, filepath.Join(f.DataDir, "wal"))
	t.Logf("tore the last record of %s's WAL after %d payload bytes", f, torn)
	c.RestartAndRead(ctx, f, sample)
	if got := len(c.AssertRedisIdentical(ctx)); got != n {
		t.Errorf("redis holds %d keys, want %d", got, n)
	}
	// Without the repair the node would not have started at all; the log
	// line shows the torn record was found rather than ignored.
	logText, err := os.ReadFile(filepath.Join(f.dir, "proxy.log"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(logText), "repaired torn wal tail") {
		t.Errorf("%s did not report repairing its torn WAL", f)
	}
}

// tearWALTail appends a torn record after the data of the newest WAL
// segment: the frame header of a 4 KiB record and the first bytes of its
// payload, as a crash in the middle of an unsynced write leaves it (segments
// are preallocated with zeros, so the rest reads as zeros). Bytes that were
// fsynced, and so acknowledged, are never lost by a crash, so they stay.
func tearWALTail(t *testing.T, dir string) int {
	t.Helper()
	segs, err := filepath.Glob(filepath.Join(dir, "*.wal"))
	if err != nil || len(segs) == 0 {
		t.Fatalf("no WAL segments in %s: %v", dir, err)
	}
	sort.Strings(segs)
	last := segs[len(segs)-1]
	data, err := os.ReadFile(last)
	if err != nil {
		t.Fatal(err)
	}
	end := len(data)
	for end > 0 && data[end-1] == 0 {
		end--
	}
	// Records are 8-byte aligned; the zeros may end inside the last one's padding.
	end = (end + 7) &^ 7
	if end < 1024 {
		t.Fatalf("WAL segment %s holds only %d bytes of data", last, end)
	}
	written := 1 + rand.IntN(200)
	torn := make([]byte, 8+written)
	binary.LittleEndian.PutUint64(torn, 4096)
	for i := 8; i < len(torn); i++ {
		torn[i] = byte(1 + rand.IntN(255))
	}
	f, err := os.OpenFile(last, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(torn, int64(end)); err != nil {
		t.Fatal(err)
	}
	if len(data) < end+8+4096 {
		if err := f.Truncate(int64(end + 8 + 4096)); err != nil {
			t.Fatal(err)
		}
	}
	return written
}
