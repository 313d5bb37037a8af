package entry

import (
	"fmt"
	"testing"
)

// benchEntries are the batch shapes a proxy proposes: plain SETs batched
// by the proposer, and a transaction, which encodes differently.
func benchEntries() []struct {
	name string
	e    Entry
} {
	set := func(i int) [][]byte {
		return [][]byte{[]byte("SET"), fmt.Appendf(nil, "key:%d", i), fmt.Appendf(nil, "%016d", i)}
	}
	sets := func(n int) Entry {
		e := Entry{Node: 0xdeadbeefcafe, Seq: 123456, TimeMs: 1700000000000}
		for i := range n {
			e.Reqs = append(e.Reqs, Request{Args: set(i)})
		}
		return e
	}
	tx := Entry{Node: 0xdeadbeefcafe, Seq: 123456, TimeMs: 1700000000000, Reqs: []Request{{DB: 1}}}
	for i := range 16 {
		tx.Reqs[0].Tx = append(tx.Reqs[0].Tx, set(i))
	}
	return []struct {
		name string
		e    Entry
	}{
		{"sets=1", sets(1)},
		{"sets=16", sets(16)},
		{"sets=256", sets(256)},
		{"tx=16", tx},
	}
}

// Typed sinks keep the benchmarked calls from being optimised away without
// the allocation that storing a slice in an interface would add.
var (
	sinkBytes []byte
	sinkReqs  []Request
)

func BenchmarkMarshalBatch(b *testing.B) {
	for _, tt := range benchEntries() {
		e := tt.e
		size := int64(len(e.Marshal(nil)))
		// "new" is what raftnode's proposer does; "reused" bounds what
		// pooling the buffer could save.
		b.Run(tt.name+"/buf=new", func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(size)
			for b.Loop() {
				sinkBytes = e.Marshal(make([]byte, 0, e.Size()))
			}
		})
		b.Run(tt.name+"/buf=reused", func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(size)
			buf := make([]byte, 0, e.Size())
			for b.Loop() {
				buf = e.Marshal(buf[:0])
			}
			sinkBytes = buf
		})
	}
}

func BenchmarkUnmarshalBatch(b *testing.B) {
	for _, tt := range benchEntries() {
		data := tt.e.Marshal(nil)
		b.Run(tt.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				e, err := Unmarshal(data)
				if err != nil {
					b.Fatal(err)
				}
				sinkReqs = e.Reqs
			}
		})
	}
}
