package entry

import (
	"bytes"
	"errors"
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
				if g.DB != r.DB || g.Op != wantOp || g.Watch != r.Watch || !equalArgs(g.Args, r.Args) || len(g.Tx) != len(r.Tx) {
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

func TestUnmarshalCorrupt(t *testing.T) {
	good := (&Entry{Node: 1, Seq: 1, Reqs: []Request{{Args: [][]byte{[]byte("SET"), []byte("k"), []byte("v")}}}}).Marshal(nil)
	tests := []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"bad version", append([]byte{99}, good[1:]...)},
		{"huge count", []byte{version, 1, 1, 0, 0xff, 0xff, 0xff, 0xff, 0x0f}},
		{"trailing", append(append([]byte{}, good...), 0)},
		// node 1, seq 1, time 0, one request in db 0 with zero arguments:
		{"empty command in version 1", []byte{1, 1, 1, 0, 1, 0, 0}},
		{"empty transaction in version 2", []byte{2, 1, 1, 0, 1, 0, 0, 0}},
		{"empty command in a transaction in version 2", []byte{2, 1, 1, 0, 1, 0, 0, 1, 0}},
		{"empty transaction without a watch", []byte{version, 1, 1, 0, 1, 0, 0, byte(OpTx), 0, 0}},
		{"empty command in a transaction", []byte{version, 1, 1, 0, 1, 0, 0, byte(OpTx), 0, 1, 0}},
		{"watch without keys", []byte{version, 1, 1, 0, 1, 0, 0, byte(OpWatch), 7, 0}},
		{"unknown request kind", []byte{version, 1, 1, 0, 1, 0, 0, 9, 7}},
	}
	for i := 1; i < len(good); i++ {
		tests = append(tests, struct {
			name string
			data []byte
		}{"truncated", good[:i]})
	}
	for _, tt := range tests {
		if _, err := Unmarshal(tt.data); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s %q: err = %v, want ErrCorrupt", tt.name, tt.data, err)
		}
	}
}

func FuzzUnmarshal(f *testing.F) {
	f.Add((&Entry{Node: 1, Seq: 1, Reqs: []Request{{Args: [][]byte{[]byte("SET"), []byte("k"), []byte("v")}}}}).Marshal(nil))
	f.Add([]byte{version})
	f.Fuzz(func(t *testing.T, data []byte) {
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
