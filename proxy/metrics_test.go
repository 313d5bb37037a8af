package proxy

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestMetricsRecord(t *testing.T) {
	tests := []struct {
		name       string
		o          op
		class, res string
	}{
		{"write", op{kind: opWrite, cls: mProxy}, "write", "ok"}, // EXEC is dispatched as a proxy command
		{"write error", op{kind: opWrite, failed: true}, "write", "error"},
		{"read", op{kind: opRead}, "read", "ok"},
		{"read through the log", op{kind: opLogRead}, "read", "ok"},
		{"local", op{kind: opLocal}, "local", "ok"},
		{"blocking", op{kind: opBlock, cls: mWrite}, "blocking", "ok"},
		{"proxy reply", op{kind: opReply, cls: mProxy}, "proxy", "ok"},
		{"refused", op{kind: opReply, cls: mRefused, failed: true}, "refused", "error"},
		{"write refused before the log", op{kind: opReply, cls: mWrite, failed: true}, "write", "error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := NewMetrics(func() int { return 0 })
			start := time.Now()
			tt.o.start = start.Add(-time.Millisecond)
			m.record(&tt.o, start)
			if got := testutil.ToFloat64(m.commands.WithLabelValues(tt.class, tt.res)); got != 1 {
				t.Errorf("client_commands_total{class=%q,result=%q} = %v, want 1", tt.class, tt.res, got)
			}
			if got := testutil.CollectAndCount(m.commands); got != int(nClasses)*2 {
				t.Errorf("%d client_commands_total series, want every class and result from the start (%d)", got, nClasses*2)
			}
			if got := testutil.CollectAndCount(m.durations); got != int(nClasses) {
				t.Errorf("%d duration series, want %d", got, nClasses)
			}
		})
	}
}

func TestIsErrorReply(t *testing.T) {
	tests := []struct {
		raw  string
		want bool
	}{
		{"-ERR x\r\n", true},
		{"!5\r\nERR x\r\n", true},
		{"+OK\r\n", false},
		{"$-1\r\n", false},
		{"", false},
	}
	for _, tt := range tests {
		if got := isErrorReply([]byte(tt.raw)); got != tt.want {
			t.Errorf("isErrorReply(%q) = %v, want %v", tt.raw, got, tt.want)
		}
	}
}
