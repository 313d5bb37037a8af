package backend

import (
	"context"
	"fmt"
	"log/slog"
	"os/exec"
	"testing"

	"github.com/raftproxy/raftproxy/fsm"
)

// BenchmarkApply measures the apply path against a real redis-server: one
// Apply is one pipelined round trip, so the cost per command should fall
// as batches grow. The leader passes a Reply per command, which costs a
// copy of each reply; followers pass none.
func BenchmarkApply(b *testing.B) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		b.Skipf("redis-server not installed: %v", err)
	}
	// One redis for all cases: starting one costs far more than a case.
	r := rdbStartRedis(b, false)
	sm := NewStateMachine(r.addr, slog.New(slog.DiscardHandler))
	if err := sm.Reset(context.Background(), nil, 0); err != nil {
		b.Fatal(err)
	}
	for _, batch := range []int{1, 16, 256} {
		for _, leader := range []bool{true, false} {
			b.Run(fmt.Sprintf("batch=%d/reply=%t", batch, leader), func(b *testing.B) {
				replies := 0
				cmds := make([]fsm.Command, batch)
				for i := range cmds {
					cmds[i].Args = [][]byte{[]byte("SET"), fmt.Appendf(nil, "key:%d", i), fmt.Appendf(nil, "%016d", i)}
					if leader {
						cmds[i].Reply = func([]byte) { replies++ }
					}
				}
				b.ReportAllocs()
				for b.Loop() {
					if err := sm.Apply(cmds); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/cmd")
				if leader && replies != b.N*batch {
					b.Fatalf("got %d replies, want %d", replies, b.N*batch)
				}
			})
		}
	}
}
