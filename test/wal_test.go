package test

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	etcdwal "go.etcd.io/etcd/server/v3/storage/wal"
	"go.etcd.io/etcd/server/v3/storage/wal/walpb"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
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

// walFrame is one record frame of a WAL segment: an 8-byte little-endian
// header (record length in the low 56 bits; when the top bit is set, the
// padding in the low 3 bits of the top byte), the record, and its padding.
type walFrame struct {
	start  int // offset of the header
	data   int // offset of the record
	recEnd int // end of the record
	end    int // end of the padding: the next frame's start
}

// walFrames parses the frames of a segment from its start until the zeros
// of its preallocated space (or a frame that would run past the file).
func walFrames(seg []byte) []walFrame {
	var out []walFrame
	for off := 0; off+8 <= len(seg); {
		h := binary.LittleEndian.Uint64(seg[off:])
		if h == 0 {
			break
		}
		size := int(h & (1<<56 - 1))
		pad := 0
		if h&(1<<63) != 0 {
			pad = int(h >> 56 & 7)
		}
		f := walFrame{start: off, data: off + 8, recEnd: off + 8 + size, end: off + 8 + size + pad}
		if size < 0 || f.end > len(seg) {
			break
		}
		out = append(out, f)
		off = f.end
	}
	return out
}

// newestSegment returns the path of the last WAL segment in dir.
// newestSegmentFrames reads the newest WAL segment of dir and its records.
func newestSegmentFrames(dir string) (path string, seg []byte, frames []walFrame, err error) {
	if path, err = newestSegment(dir); err != nil {
		return "", nil, nil, err
	}
	if seg, err = os.ReadFile(path); err != nil {
		return "", nil, nil, err
	}
	return path, seg, walFrames(seg), nil
}

func newestSegment(dir string) (string, error) {
	segs, err := filepath.Glob(filepath.Join(dir, "*.wal"))
	if err != nil {
		return "", err
	}
	if len(segs) == 0 {
		return "", fmt.Errorf("no WAL segments in %s", dir)
	}
	sort.Strings(segs)
	return segs[len(segs)-1], nil
}

// tearPoints lists the offsets inside frame f at which zeroing everything
// to the end of the data makes etcd's decoder report a torn record
// (io.ErrUnexpectedEOF, which it repairs) rather than a CRC mismatch (which
// it refuses) or a clean end (which would hide the loss): the record must
// change, and one 512-byte sector chunk of it must end up all zeros.
func tearPoints(seg []byte, f walFrame) []int {
	var pts []int
	// Inside the header: the length keeps only its low bytes and must not
	// become 0 (that reads as the end of the data); the record reads as zeros.
	for b := 1; b < 8; b++ {
		low := binary.LittleEndian.Uint64(seg[f.start:f.start+8]) & (1<<(8*b) - 1)
		if low != 0 {
			pts = append(pts, f.start+b)
		}
	}
	// Inside the record: up to the start of its last sector chunk (the
	// decoder splits a record on 512-byte file offsets), and before its last
	// non-zero byte so that the record changes.
	lastChunk := max(f.data, (f.end-1)/512*512)
	lastNonZero := -1
	for i := f.recEnd - 1; i >= f.data; i-- {
		if seg[i] != 0 {
			lastNonZero = i
			break
		}
	}
	for x := f.data; x <= min(lastChunk, lastNonZero); x++ {
		pts = append(pts, x)
	}
	return pts
}

// cutWALTail loses a tail of already written (fsynced) WAL records, as a
// disk that lied would: it zeroes the last cut bytes of the data of the
// newest segment in dir (a node's data-dir/wal; the node must be down).
// Segments are preallocated with zeros, so the file keeps its size. The cut
// never reaches into the segment's first three records (crc, metadata,
// snapshot or state), never ends exactly on a record boundary (a loss the
// WAL could not notice), and always tears a record so that etcd reports
// io.ErrUnexpectedEOF and repairs the tail. The cut is chosen at random with
// rng among such points at most maxBytes from the end of the data; only
// when there is none (maxBytes smaller than what tearing the last record
// takes, at most a sector and a header) is the smallest possible cut made.
func cutWALTail(dir string, rng *rand.Rand, maxBytes int) (cut int, err error) {
	path, seg, frames, err := newestSegmentFrames(dir)
	if err != nil {
		return 0, err
	}
	if len(frames) <= 3 {
		return 0, fmt.Errorf("cut WAL tail: %s holds %d records, none after its first three", path, len(frames))
	}
	dataEnd := frames[len(frames)-1].end
	var within []int
	best := -1
	for _, f := range frames[3:] {
		for _, x := range tearPoints(seg, f) {
			if dataEnd-x <= maxBytes {
				within = append(within, x)
			}
			best = max(best, x)
		}
	}
	x := best
	if len(within) > 0 {
		x = within[rng.IntN(len(within))]
	}
	if x < 0 {
		return 0, fmt.Errorf("cut WAL tail: no record of %s can be torn", path)
	}
	if err := zeroRange(path, x, dataEnd); err != nil {
		return 0, err
	}
	return dataEnd - x, nil
}

// zeroRange overwrites [from, to) of the file at path with zeros and fsyncs it.
func zeroRange(path string, from, to int) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteAt(make([]byte, to-from), int64(from)); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// walRecord decodes the record of frame f: its type and, for an entry, the
// entry's index and term.
func walRecord(seg []byte, f walFrame) (typ int64, index, term uint64, err error) {
	rec := &walpb.Record{}
	if err := proto.Unmarshal(seg[f.data:f.recEnd], rec); err != nil {
		return 0, 0, 0, err
	}
	if rec.GetType() == etcdwal.EntryType {
		e := &raftpb.Entry{}
		if err := proto.Unmarshal(rec.GetData(), e); err != nil {
			return 0, 0, 0, err
		}
		return rec.GetType(), e.GetIndex(), e.GetTerm(), nil
	}
	return rec.GetType(), 0, 0, nil
}

// cutWALAtEntry loses the record of the entry at index in the newest
// segment of dir and everything written after it: it zeroes from the first
// byte of that record (inside its frame, so etcd repairs the torn tail).
// It returns the bytes cut.
func cutWALAtEntry(dir string, index uint64) (int, error) {
	path, seg, frames, err := newestSegmentFrames(dir)
	if err != nil {
		return 0, err
	}
	at := -1
	for i, f := range frames {
		if i < 3 {
			continue
		}
		typ, idx, _, err := walRecord(seg, f)
		if err != nil {
			return 0, fmt.Errorf("decode record at %d of %s: %w", f.start, path, err)
		}
		if typ == etcdwal.EntryType && idx == index {
			at = i // the last record of that index, if it was rewritten
		}
	}
	if at < 0 {
		return 0, fmt.Errorf("entry %d is not in %s", index, path)
	}
	end := frames[len(frames)-1].end
	if err := zeroRange(path, frames[at].data, end); err != nil {
		return 0, err
	}
	return end - frames[at].data, nil
}

// lostRecords summarises what cutting at offset x of seg loses: the
// records (whole or torn) and, among them, the entries.
func lostRecords(seg []byte, x int) (records, entries int) {
	for _, f := range walFrames(seg) {
		if f.end <= x {
			continue
		}
		records++
		if typ, _, _, err := walRecord(seg, f); err == nil && typ == etcdwal.EntryType {
			entries++
		}
	}
	return records, entries
}

// cutSeveralRecords cuts the tail of n's WAL with cutWALTail until the cut
// loses at least minEntries entries (the segment is restored between
// tries), so that the node really lost acknowledged entries.
func cutSeveralRecords(t *testing.T, n *Node, maxBytes, minEntries int) {
	t.Helper()
	dir := filepath.Join(n.DataDir, "wal")
	path, err := newestSegment(dir)
	if err != nil {
		t.Fatal(err)
	}
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	seed := rand.Uint64()
	rng := rand.New(rand.NewPCG(seed, 0))
	dataEnd := 0
	if fs := walFrames(orig); len(fs) > 0 {
		dataEnd = fs[len(fs)-1].end
	}
	for try := 0; try < 50; try++ {
		cut, err := cutWALTail(dir, rng, maxBytes)
		if err != nil {
			t.Fatal(err)
		}
		records, entries := lostRecords(orig, dataEnd-cut)
		if entries >= minEntries {
			t.Logf("cut %d bytes off %s's WAL (seed %d, try %d): %d records lost, %d of them entries", cut, n, seed, try, records, entries)
			return
		}
		if err := os.WriteFile(path, orig, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	t.Fatalf("no cut of at most %d bytes of %s's WAL loses %d entries", maxBytes, n, minEntries)
}

var quarantineLastIndex = regexp.MustCompile(`entering quarantine.* last_index=(\d+)`)

// assertQuarantined checks n's log: it entered quarantine with its log
// ending before lostFrom (it lost entries), and left it.
func assertQuarantined(t *testing.T, n *Node, lostFrom int64) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(n.dir, "proxy.log"))
	if err != nil {
		t.Fatal(err)
	}
	m := quarantineLastIndex.FindSubmatch(b)
	if m == nil {
		t.Fatalf("%s never entered quarantine", n)
	}
	if last, _ := strconv.ParseInt(string(m[1]), 10, 64); last >= lostFrom {
		t.Errorf("%s entered quarantine with last index %d, want below %d (entries lost)", n, last, lostFrom)
	}
	if !strings.Contains(string(b), "leaving quarantine") {
		t.Errorf("%s never left quarantine", n)
	}
	if strings.Contains(string(b), "panic") {
		t.Errorf("%s panicked", n)
	}
}

// waitUnquarantined waits until n reports quarantined:0.
func waitUnquarantined(ctx context.Context, t *testing.T, n *Node) {
	t.Helper()
	err := waitFor(ctx, 30*time.Second, 100*time.Millisecond, fmt.Sprintf("%s leaving quarantine", n), func(ctx context.Context) error {
		info, err := n.RaftInfo(ctx)
		if err != nil {
			return err
		}
		if q := info.Get("quarantined"); q != "0" {
			return fmt.Errorf("quarantined:%s", q)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func mergeKeys(ms ...map[string]string) map[string]string {
	out := map[string]string{}
	for _, m := range ms {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}

// TestLostWALTail: a follower loses a tail of WAL records it had fsynced
// and acknowledged (the leader's match for it is past its log). Restarted,
// it must not panic on the leader's commit index, must be repaired (the
// stale leader steps down; its successor probes it afresh), and must end
// identical to the others.
func TestLostWALTail(t *testing.T) { lostFollowerTail(t, ClusterOptions{}) }

// TestLostWALTailSnapshots: the same with frequent snapshots, so that the
// node restarts from a snapshot and may be repaired with one.
func TestLostWALTailSnapshots(t *testing.T) {
	lostFollowerTail(t, ClusterOptions{ExtraArgs: snapArgs})
}

func lostFollowerTail(t *testing.T, opts ClusterOptions) {
	ctx := testContext(t, 2*time.Minute)
	c := StartCluster(ctx, t, opts)
	leader, followers := c.Leader(ctx)
	f := followers[0]
	const n = 3000
	// Small pipelines make many small entries, so a cut of a few KiB loses several.
	sample, err := writeKeysIn(leader.Addr, "lost", n, 50, 20)
	if err != nil {
		t.Fatal(err)
	}
	if err := waitForReads(ctx, f, sample); err != nil {
		t.Fatal(err)
	}
	before := infoInt(ctx, t, f, "last_log_index")
	if err := f.KillProxy(); err != nil {
		t.Fatal(err)
	}
	cutSeveralRecords(t, f, 8192, 3)
	c.RestartAndRead(ctx, f, sample)
	waitUnquarantined(ctx, t, f)
	more, err := writeKeysIn(f.Addr, "after", 200, 10, 20)
	if err != nil {
		t.Fatal(err)
	}
	if err := waitForReads(ctx, f, mergeKeys(sample, more)); err != nil {
		t.Fatal(err)
	}
	if got := len(c.AssertRedisIdentical(ctx)); got != n+200 {
		t.Errorf("redis holds %d keys, want %d", got, n+200)
	}
	assertQuarantined(t, f, before)
	// The leader's progress for f predated the loss: it had to hand over.
	if !logContains(t, leader, "may be stale; transferring leadership") {
		t.Errorf("leader %s never stepped down for the quarantined %s", leader, f)
	}
}

// TestLostWALTailLeader: the leader loses a tail of its WAL while down. The
// others elect a new leader, which repairs it when it comes back.
func TestLostWALTailLeader(t *testing.T) {
	ctx := testContext(t, 2*time.Minute)
	c := StartCluster(ctx, t, ClusterOptions{})
	leader, followers := c.Leader(ctx)
	const n = 3000
	sample, err := writeKeysIn(leader.Addr, "lostl", n, 50, 20)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range followers {
		if err := waitForReads(ctx, f, sample); err != nil {
			t.Fatal(err)
		}
	}
	before := infoInt(ctx, t, leader, "last_log_index")
	if err := leader.KillProxy(); err != nil {
		t.Fatal(err)
	}
	cutSeveralRecords(t, leader, 8192, 3)
	newLeader, _ := c.Leader(ctx)
	more, err := writeKeysIn(newLeader.Addr, "afterl", 200, 10, 20)
	if err != nil {
		t.Fatal(err)
	}
	c.RestartAndRead(ctx, leader, mergeKeys(sample, more))
	waitUnquarantined(ctx, t, leader)
	if got := len(c.AssertRedisIdentical(ctx)); got != n+200 {
		t.Errorf("redis holds %d keys, want %d", got, n+200)
	}
	assertQuarantined(t, leader, before)
}

// lostTailSafety sets up the case the quarantine exists for. A leads, B and
// C follow. C stops at index k. Writes acknowledged after that are
// committed by A and B alone. B then loses its WAL from entry cutAt on, and
// A goes down. B and C restart: B's log no longer holds the committed
// entries, and neither does C's. Electing either would lose them, so no
// leader may be elected until A is back; then everything must be there.
func lostTailSafety(t *testing.T, prefix string, writesWhileCDown int, cutAt func(k, last uint64) uint64) {
	ctx := testContext(t, 2*time.Minute)
	c := StartCluster(ctx, t, ClusterOptions{})
	a, followers := c.Leader(ctx)
	b, cc := followers[0], followers[1]
	first, err := writeKeysIn(a.Addr, prefix+"1", 500, 25, 20)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range followers {
		if err := waitForReads(ctx, n, first); err != nil {
			t.Fatal(err)
		}
	}
	var k uint64
	err = waitFor(ctx, 10*time.Second, 50*time.Millisecond, "C holding the leader's whole log", func(ctx context.Context) error {
		la, lc := infoInt(ctx, t, a, "last_log_index"), infoInt(ctx, t, cc, "last_log_index")
		if la != lc {
			return fmt.Errorf("leader last index %d, C %d", la, lc)
		}
		k = uint64(lc)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := cc.KillProxy(); err != nil {
		t.Fatal(err)
	}
	// Acknowledged, so committed by A and B: C never saw these.
	second, err := writeKeysIn(a.Addr, prefix+"2", writesWhileCDown, 1, 20)
	if err != nil {
		t.Fatal(err)
	}
	if err := waitForReads(ctx, b, second); err != nil {
		t.Fatal(err)
	}
	last := uint64(infoInt(ctx, t, b, "last_log_index"))
	if err := b.KillProxy(); err != nil {
		t.Fatal(err)
	}
	from := cutAt(k, last)
	cut, err := cutWALAtEntry(filepath.Join(b.DataDir, "wal"), from)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("C stopped at index %d; B held up to %d and lost %d bytes of WAL from entry %d on", k, last, cut, from)
	if err := a.KillProxy(); err != nil {
		t.Fatal(err)
	}
	for _, n := range []*Node{b, cc} {
		if err := n.StartProxy(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// Several election timeouts (1-2 s each): with B voting or campaigning,
	// a leader would be elected well within this.
	deadline := time.Now().Add(6 * time.Second)
	sawQuarantined := false
	for time.Now().Before(deadline) {
		for _, n := range []*Node{b, cc} {
			info, err := n.RaftInfo(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if info.Get("role") == "leader" || info.Leader() != "" {
				t.Fatalf("%s reports role %s, leader %q with A down and B quarantined: a leader without committed entries %d..%d was elected",
					n, info.Get("role"), info.Leader(), from, last)
			}
			if n == b && info.Get("quarantined") == "1" {
				sawQuarantined = true
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !sawQuarantined {
		t.Fatalf("%s never reported quarantined:1", b)
	}
	if err := a.StartProxy(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.WaitStable(ctx); err != nil {
		t.Fatal(err)
	}
	want := mergeKeys(first, second)
	for _, n := range c.Nodes {
		if err := waitForReads(ctx, n, want); err != nil {
			t.Fatal(err)
		}
	}
	waitUnquarantined(ctx, t, b)
	if got := len(c.AssertRedisIdentical(ctx)); got != 500+writesWhileCDown {
		t.Errorf("redis holds %d keys, want %d", got, 500+writesWhileCDown)
	}
	assertQuarantined(t, b, int64(from))
}

// TestLostWALTailNoVote: B loses everything C lacks, so C's log is as
// up to date as B's and B would vote for C. Quarantined, it must not.
func TestLostWALTailNoVote(t *testing.T) {
	lostTailSafety(t, "nv", 1, func(k, last uint64) uint64 { return k + 1 })
}

// TestLostWALTailNoCampaign: B keeps more than C, so C would vote for B,
// whose log lacks the committed entries B lost. Quarantined, B must not
// campaign.
func TestLostWALTailNoCampaign(t *testing.T) {
	lostTailSafety(t, "nc", 300, func(k, last uint64) uint64 { return k + (last-k)/2 + 1 })
}
