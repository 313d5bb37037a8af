package entry

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		e    Entry
	}{
		{"empty batch", Entry{Node: 1, Seq: 2, TimeMs: 3}},
		{"one set", Entry{Node: 0xdeadbeefcafe, Seq: 1 << 62, TimeMs: 1700000000000,
			Reqs: []Request{{DB: 0, Args: [][]byte{[]byte("SET"), []byte("k"), []byte("v")}}}}},
		{"binary and empty args", Entry{Node: 7, Seq: 9, TimeMs: -5,
			Reqs: []Request{
				{DB: 15, Args: [][]byte{[]byte("SET"), {}, []byte("a\r\nb\x00")}},
				{DB: 3, Args: [][]byte{[]byte("DEL"), []byte("x"), []byte("y")}},
			}}},
		{"long argument", Entry{Node: 1, Seq: 2, TimeMs: 1 << 40,
			Reqs: []Request{{DB: 200, Args: [][]byte{[]byte("SET"), []byte("k"), bytes.Repeat([]byte("v"), 70000)}}}}},
		{"transaction between commands", Entry{Node: 7, Seq: 10, TimeMs: 5,
			Reqs: []Request{
				{DB: 0, Args: [][]byte{[]byte("INCR"), []byte("n")}},
				{DB: 2, Tx: [][][]byte{{[]byte("RPUSH"), []byte("l"), []byte("1")}, {[]byte("LRANGE"), []byte("l"), []byte("0"), []byte("-1")}}},
				{DB: 0, Args: [][]byte{[]byte("GET"), []byte("n")}},
			}}},
		{"watches", Entry{Node: 7, Seq: 11, TimeMs: 6,
			Reqs: []Request{
				{DB: 1, Op: OpWatch, Watch: 1 << 63, Args: [][]byte{[]byte("a"), []byte("b")}},
				{DB: 1, Op: OpTx, Watch: 1 << 63, Tx: [][][]byte{{[]byte("SET"), []byte("a"), []byte("1")}}},
				{DB: 0, Op: OpTx, Watch: 5},
				{DB: 0, Op: OpUnwatch, Watch: 9},
			}}},
		{"resp3 and resp2 requests", Entry{Node: 7, Seq: 12, TimeMs: 5,
			Reqs: []Request{
				{DB: 0, Args: [][]byte{[]byte("HGETALL"), []byte("h")}, RESP3: true},
				{DB: 63, Args: [][]byte{[]byte("HGETALL"), []byte("h")}},
				{DB: 64, Args: [][]byte{[]byte("HGETALL"), []byte("h")}, RESP3: true},
				{DB: 5, Tx: [][][]byte{{[]byte("HGETALL"), []byte("h")}}, RESP3: true},
				{DB: 1 << 40, Args: [][]byte{[]byte("GET"), []byte("n")}, RESP3: true},
			}}},
		{"killable requests", Entry{Node: 7, Seq: 13, TimeMs: 5,
			Reqs: []Request{
				{DB: 0, Args: [][]byte{[]byte("EVAL"), []byte("return 1"), []byte("0")}, Killable: 1},
				{DB: 15, Args: [][]byte{[]byte("FCALL"), []byte("f"), []byte("0")}, Killable: 2, RESP3: true},
				{DB: 16, Tx: [][][]byte{{[]byte("EVAL"), []byte("return 1"), []byte("0")}}, Killable: MaxKillable},
				{DB: 9, Args: [][]byte{[]byte("GET"), []byte("n")}},
				{Op: OpNotice, Args: [][]byte{[]byte("CLIENT"), []byte("PAUSE"), []byte("100")}},
			}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := tt.e.Marshal(nil)
			if len(data) != tt.e.Size() {
				t.Fatalf("encoded %d bytes, Size said %d", len(data), tt.e.Size())
			}
			got, err := Unmarshal(data)
			if err != nil {
				t.Fatalf("Unmarshal: %v", err)
			}
			if got.Node != tt.e.Node || got.Seq != tt.e.Seq || got.TimeMs != tt.e.TimeMs || len(got.Reqs) != len(tt.e.Reqs) {
				t.Fatalf("got %+v, want %+v", got, tt.e)
			}
			for i, r := range tt.e.Reqs {
				g := got.Reqs[i]
				wantOp := r.Op
				if len(r.Tx) > 0 {
					wantOp = OpTx
				}
				if g.DB != r.DB || g.Op != wantOp || g.Watch != r.Watch || g.RESP3 != r.RESP3 || g.Killable != r.Killable || !equalArgs(g.Args, r.Args) || len(g.Tx) != len(r.Tx) {
					t.Fatalf("req %d: got %+v, want %+v", i, g, r)
				}
				for j := range r.Tx {
					if !equalArgs(g.Tx[j], r.Tx[j]) {
						t.Fatalf("req %d tx command %d: got %q, want %q", i, j, g.Tx[j], r.Tx[j])
					}
				}
			}
		})
	}
}

// TestOlderVersions decodes entries as nodes running earlier versions wrote
// them: their requests are RESP2, and their database field is the database.
func TestOlderVersions(t *testing.T) {
	// node 1, seq 2, time 3 (zig-zag 6), one request in db 3: SET k v.
	body := []byte{1, 2, 6, 1, 3, 3, 3, 'S', 'E', 'T', 1, 'k', 1, 'v'}
	// version 2 adds transactions: the same, then one in db 3 holding GET k.
	tx := append(append([]byte{}, body[:3]...), 2)
	tx = append(tx, body[4:]...)
	tx3 := append(append([]byte{}, tx...), 3, 0, byte(OpTx), 0, 1, 2, 3, 'G', 'E', 'T', 1, 'k')
	tx = append(tx, 3, 0, 1, 2, 3, 'G', 'E', 'T', 1, 'k')
	tests := []struct {
		name  string
		data  []byte
		dbs   []int
		resp3 []bool
	}{
		{"version 1", append([]byte{1}, body...), []int{3}, []bool{false}},
		{"version 2", append([]byte{2}, tx...), []int{3, 3}, []bool{false, false}},
		// Version 3: db field 3 is database 1, RESP3; a transaction names
		// its kind and watch.
		{"version 3", append([]byte{3}, tx3...), []int{1, 1}, []bool{true, true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := Unmarshal(tt.data)
			if err != nil {
				t.Fatal(err)
			}
			if e.Node != 1 || e.Seq != 2 || e.TimeMs != 3 || len(e.Reqs) != len(tt.dbs) {
				t.Fatalf("got %+v", e)
			}
			for i, r := range e.Reqs {
				if r.DB != tt.dbs[i] || r.RESP3 != tt.resp3[i] {
					t.Errorf("request %d: db %d resp3 %v, want db %d resp3 %v", i, r.DB, r.RESP3, tt.dbs[i], tt.resp3[i])
				}
			}
			if string(e.Reqs[0].Args[0]) != "SET" {
				t.Errorf("request 0 is %q, want SET k v", e.Reqs[0].Args)
			}
		})
	}
}

func TestControlRoundTrip(t *testing.T) {
	for _, c := range []Control{
		{Op: ControlSettle, Index: 1 << 40, Node: 0xdeadbeef, Format: 4},
		{Op: ControlAbort, Index: 17, Req: 511, Node: 1, Format: 4},
		{Op: ControlSettle, Index: 1 << 40, Node: 0xdeadbeef, Format: checksummed},
		{Op: ControlAbort, Index: 17, Req: 511, Node: 1, Format: checksummed},
	} {
		data := c.Marshal()
		if !IsControl(data) || NewerFormat(data) {
			t.Fatalf("%+v: IsControl false, or taken for a newer format", c)
		}
		if _, err := Unmarshal(data); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%+v: Unmarshal as a batch: err = %v, want ErrCorrupt", c, err)
		}
		got, err := UnmarshalControl(data)
		if err != nil || got != c {
			t.Errorf("got %+v, %v; want %+v", got, err, c)
		}
		// Damage: found by the checksum since format 5 (and Verify says
		// so), a plain decoding error before.
		want := ErrCorrupt
		if c.Format >= checksummed {
			want = ErrChecksum
			for i := 8; i < len(data)*8; i++ {
				bad := append([]byte(nil), data...)
				bad[i/8] ^= 1 << (i % 8)
				if _, err := UnmarshalControl(bad); !errors.Is(err, ErrChecksum) || Verify(bad) == nil {
					t.Fatalf("%+v with bit %d flipped: err = %v, Verify %v", c, i, err, Verify(bad))
				}
			}
		}
		for i := 1; i < len(data); i++ {
			if _, err := UnmarshalControl(data[:i]); !errors.Is(err, want) {
				t.Errorf("%+v truncated to %d: err = %v, want %v", c, i, err, want)
			}
		}
	}
	batch := (&Entry{Node: 1, Seq: 1, Reqs: []Request{{Args: [][]byte{[]byte("GET"), []byte("k")}}}}).Marshal(nil)
	if IsControl(batch) || IsControl(nil) {
		t.Error("a batch or nothing taken for a control entry")
	}
	if _, err := UnmarshalControl([]byte{controlMark, 9, 1, 1, 1}); !errors.Is(err, ErrCorrupt) {
		t.Errorf("unknown op: err = %v", err)
	}
}

func equalArgs(a, b [][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}

// seal ends data (an entry of version 5 or later, without its checksum)
// with its checksum.
func seal(data []byte) []byte {
	return binary.BigEndian.AppendUint32(append([]byte(nil), data...), crc32.Checksum(data, castagnoli))
}

func TestUnmarshalCorrupt(t *testing.T) {
	good4 := (&Entry{Node: 1, Seq: 1, Format: 4, Reqs: []Request{{Args: [][]byte{[]byte("SET"), []byte("k"), []byte("v")}}}}).Marshal(nil)
	good := (&Entry{Node: 1, Seq: 1, Reqs: []Request{{Args: [][]byte{[]byte("SET"), []byte("k"), []byte("v")}}}}).Marshal(nil)
	type test struct {
		name string
		data []byte
	}
	tests := []test{
		{"empty", nil},
		{"version 0", append([]byte{0}, good[1:]...)},
		// node 1, seq 1, time 0, one request in db 0 with zero arguments:
		{"empty command in version 1", []byte{1, 1, 1, 0, 1, 0, 0}},
		{"empty transaction in version 2", []byte{2, 1, 1, 0, 1, 0, 0, 0}},
		{"empty command in a transaction in version 2", []byte{2, 1, 1, 0, 1, 0, 0, 1, 0}},
		{"trailing", append(append([]byte{}, good4...), 0)},
		{"trailing before the checksum", seal(append(append([]byte{}, good[:len(good)-4]...), 0))},
	}
	// The same damage in format 4, and in format 5 with a checksum that
	// matches: the proposer wrote it so, and every node refuses it alike.
	for _, v := range []byte{4, version} {
		for _, tt := range []test{
			{"huge count", []byte{v, 1, 1, 0, 0xff, 0xff, 0xff, 0xff, 0x0f}},
			{"empty transaction without a watch", []byte{v, 1, 1, 0, 1, 0, 0, byte(OpTx), 0, 0}},
			{"empty command in a transaction", []byte{v, 1, 1, 0, 1, 0, 0, byte(OpTx), 0, 1, 0}},
			{"watch without keys", []byte{v, 1, 1, 0, 1, 0, 0, byte(OpWatch), 7, 0}},
			{"unknown request kind", []byte{v, 1, 1, 0, 1, 0, 0, 9, 7}},
		} {
			if v >= checksummed {
				tt.data = seal(tt.data)
			}
			tests = append(tests, tt)
		}
	}
	tests = append(tests,
		test{"a route request before its format", seal([]byte{RouteFormat - 1, 1, 1, 0, 1, 0, 0, byte(OpRoute), 1, 1, 'x'})},
		test{"a route request without its change", seal([]byte{RouteFormat, 1, 1, 0, 1, 0, 0, byte(OpRoute), 0})},
		test{"a route request with two changes", seal([]byte{RouteFormat, 1, 1, 0, 1, 0, 0, byte(OpRoute), 2, 1, 'x', 1, 'y'})})
	for i := 1; i < len(good4); i++ {
		tests = append(tests, test{"truncated", good4[:i]})
	}
	for _, tt := range tests {
		if _, err := Unmarshal(tt.data); !errors.Is(err, ErrCorrupt) || errors.Is(err, ErrChecksum) {
			t.Errorf("%s %q: err = %v, want ErrCorrupt", tt.name, tt.data, err)
		}
	}
}

// TestChecksum: any damage to a format-5 entry, one flipped bit or a cut,
// is told from an entry its proposer wrote wrong (ErrCorrupt, which every
// node holds alike): it is ErrChecksum, from Unmarshal and Verify alike.
// Restamp refuses to give damaged bytes a new valid checksum, and what it
// returns verifies.
func TestChecksum(t *testing.T) {
	e := Entry{Node: 3, Seq: 9, TimeMs: 77, Reqs: []Request{{DB: 1, Args: [][]byte{[]byte("SET"), []byte("k"), []byte("v")}}}}
	good := e.Marshal(nil)
	if len(good) != e.Size() {
		t.Fatalf("Size() %d, Marshal wrote %d bytes", e.Size(), len(good))
	}
	if err := Verify(good); err != nil {
		t.Fatalf("Verify of a whole entry: %v", err)
	}
	for i := 1; i < len(good)*8; i++ { // every bit but the version byte's
		bad := append([]byte(nil), good...)
		bad[i/8] ^= 1 << (i % 8)
		if i/8 == 0 {
			continue
		}
		if _, err := Unmarshal(bad); !errors.Is(err, ErrChecksum) || errors.Is(err, ErrCorrupt) {
			t.Fatalf("bit %d flipped: Unmarshal err = %v, want ErrChecksum only", i, err)
		}
		if err := Verify(bad); !errors.Is(err, ErrChecksum) {
			t.Fatalf("bit %d flipped: Verify = %v", i, err)
		}
		if _, ok := Restamp(bad, 1); ok {
			t.Fatalf("bit %d flipped: Restamp gave the damaged entry a checksum", i)
		}
	}
	for i := 1; i < len(good); i++ {
		if _, err := Unmarshal(good[:i]); !errors.Is(err, ErrChecksum) {
			t.Fatalf("cut to %d bytes: err = %v, want ErrChecksum", i, err)
		}
	}
	out, ok := Restamp(good, 1_800_000_000_000)
	if !ok || Verify(out) != nil {
		t.Fatalf("Restamp of a whole entry: ok %v, Verify %v", ok, Verify(out))
	}
	for _, data := range [][]byte{(&Entry{Node: 1, Format: 4, Reqs: e.Reqs}).Marshal(nil), Control{Op: ControlSettle, Index: 3}.Marshal(), {version + 1, 1, 2}} {
		if err := Verify(data); err != nil {
			t.Errorf("Verify(%q) = %v: format 4, control and newer entries carry no checksum it knows", data, err)
		}
	}
}

// TestMarshalFormats: an entry is written in the format it is given, from
// MinFormat to Version, and decodes the same from each.
func TestMarshalFormats(t *testing.T) {
	e := Entry{Node: 3, Seq: 9, TimeMs: 77, Reqs: []Request{
		{DB: 1, Args: [][]byte{[]byte("EVAL"), []byte("return 1"), []byte("0")}, Killable: 1, RESP3: true, Asking: true},
		{Op: OpNotice, Args: [][]byte{[]byte("CLIENT"), []byte("PAUSE"), []byte("10"), []byte("ALL")}},
	}}
	route := Request{Op: OpRoute, Args: [][]byte{[]byte(`{"op":"init"}`)}}
	for f := byte(MinFormat); f <= Version; f++ {
		e.Format = f
		if f >= RouteFormat {
			e.Reqs = append(e.Reqs[:2], route)
		}
		data := e.Marshal(nil)
		if data[0] != f || len(data) != e.Size() {
			t.Fatalf("format %d: wrote version %d, %d bytes (Size %d)", f, data[0], len(data), e.Size())
		}
		got, err := Unmarshal(data)
		if err != nil {
			t.Fatalf("format %d: %v", f, err)
		}
		if got.Format != f || got.Reqs[0].Killable != 1 || !got.Reqs[0].RESP3 || got.Reqs[1].Op != OpNotice || !equalArgs(got.Reqs[1].Args, e.Reqs[1].Args) {
			t.Errorf("format %d: decoded %+v", f, got)
		}
		if got.Reqs[0].DB != 1 || got.Reqs[0].Asking != (f >= MoveFormat) {
			t.Errorf("format %d: database %d, asking %v", f, got.Reqs[0].DB, got.Reqs[0].Asking)
		}
		if f >= RouteFormat && (len(got.Reqs) != 3 || got.Reqs[2].Op != OpRoute || !equalArgs(got.Reqs[2].Args, route.Args)) {
			t.Errorf("format %d: the route request decoded as %+v", f, got.Reqs[2:])
		}
	}
	for _, f := range []byte{1, MinFormat - 1} {
		if e.Format = f; e.Marshal(nil)[0] != MinFormat {
			t.Errorf("format %d: written as %d, want MinFormat", f, e.Marshal(nil)[0])
		}
	}
	if e.Format = Version + 1; e.Marshal(nil)[0] != Version {
		t.Errorf("a format above Version was written as %d", e.Marshal(nil)[0])
	}
}

// TestUnmarshalNewerFormat: an entry in a format newer than this build's
// is not corrupt (the nodes that know the format apply it): it is reported
// apart, so that the applier stops at it instead of skipping it.
func TestUnmarshalNewerFormat(t *testing.T) {
	good := (&Entry{Node: 1, Seq: 1, Reqs: []Request{{Args: [][]byte{[]byte("SET"), []byte("k"), []byte("v")}}}}).Marshal(nil)
	for _, v := range []byte{version + 1, 99, controlMark - 1, controlMarkSum + 1, 0xff} {
		_, err := Unmarshal(append([]byte{v}, good[1:]...))
		if !errors.Is(err, ErrNewerFormat) || errors.Is(err, ErrCorrupt) {
			t.Errorf("format %d: err = %v, want ErrNewerFormat only", v, err)
		}
	}
}

func FuzzUnmarshal(f *testing.F) {
	f.Add((&Entry{Node: 1, Seq: 1, Reqs: []Request{{Args: [][]byte{[]byte("SET"), []byte("k"), []byte("v")}}}}).Marshal(nil))
	f.Add((&Entry{Node: 1, Seq: 1, Reqs: []Request{{DB: 2, Tx: [][][]byte{{[]byte("HGETALL"), []byte("h")}}, RESP3: true}}}).Marshal(nil))
	f.Add([]byte{version})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > crc32.Size && data[0] >= checksummed && data[0] <= version {
			// Past the checksum, or the fuzzer would hardly reach the
			// decoder: most of its inputs would fail the checksum.
			data = seal(data[:len(data)-crc32.Size])
		}
		e, err := Unmarshal(data)
		if err != nil {
			return
		}
		// The decoder accepts non-minimal varints, so compare decoded forms.
		again, err := Unmarshal(e.Marshal(nil))
		if err != nil {
			t.Fatalf("re-encoded entry does not decode: %v", err)
		}
		if !bytes.Equal(again.Marshal(nil), e.Marshal(nil)) {
			t.Fatalf("round trip changed the entry: %+v vs %+v", again, e)
		}
	})
}

func TestRestamp(t *testing.T) {
	e := Entry{Node: 7, Seq: 300, TimeMs: 5, Reqs: []Request{{DB: 2, Args: [][]byte{[]byte("SET"), []byte("k"), []byte("v")}}}}
	data := e.Marshal(nil)
	orig := append([]byte(nil), data...)
	out, ok := Restamp(data, 1_800_000_000_000)
	if !ok {
		t.Fatal("Restamp refused an entry")
	}
	got, err := Unmarshal(out)
	if err != nil {
		t.Fatal(err)
	}
	if got.TimeMs != 1_800_000_000_000 || got.Node != 7 || got.Seq != 300 || len(got.Reqs) != 1 || string(got.Reqs[0].Args[2]) != "v" || got.Reqs[0].DB != 2 {
		t.Errorf("restamped entry: %+v", got)
	}
	if string(data) != string(orig) {
		t.Error("Restamp changed its input")
	}
	ctl := Control{Op: ControlSettle, Index: 3}.Marshal()
	if _, ok := Restamp(ctl, 1); ok {
		t.Error("a control entry was restamped")
	}
	if _, ok := Restamp([]byte{1, 0x80}, 1); ok {
		t.Error("a truncated entry was restamped")
	}
}
