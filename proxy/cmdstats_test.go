package proxy

import (
	"math/rand/v2"
	"testing"
	"time"
)

// Every value falls in the bucket whose range holds it, and buckets are
// contiguous: a percentile is within 2% of the true value.
func TestLatencyHistBuckets(t *testing.T) {
	for _, v := range []int64{0, 1, 127, 128, 129, 255, 256, 1000, 1 << 20, 123456789, 1 << 40} {
		i := histIndex(v)
		lo := int64(0)
		if i > 0 {
			lo = histValue(i-1) + 1
		}
		if v < lo || v > histValue(i) {
			t.Errorf("%d: bucket %d holds [%d, %d]", v, i, lo, histValue(i))
		}
		if float64(histValue(i)-lo) > 0.02*float64(v)+1 {
			t.Errorf("%d: bucket %d is %d wide", v, i, histValue(i)-lo)
		}
	}
	var h latencyHist
	rng := rand.New(rand.NewPCG(1, 2))
	for range 10000 {
		h.add(time.Duration(rng.Int64N(1_000_000)))
	}
	if p := h.percentile(50); p < 480_000 || p > 520_000 {
		t.Errorf("median of uniform [0, 1ms) = %d ns", p)
	}
	steps := h.cdf()
	if len(steps) == 0 || steps[len(steps)-1][1] != 10000 || steps[0][0] != 1 {
		t.Errorf("cdf %v: want steps from 1 µs up to all 10000 calls", steps)
	}
	// redis's steps: 1024 ns × 2^k, reported as their highest equivalent
	// value in µs (8, 16, 33, 66, 132...).
	want := map[int64]bool{1: true, 2: true, 4: true, 8: true, 16: true, 33: true, 66: true, 132: true, 264: true, 528: true, 1056: true}
	for _, s := range steps {
		if !want[s[0]] {
			t.Errorf("cdf step at %d µs is not one of redis's", s[0])
		}
	}
}

func TestErrorPrefix(t *testing.T) {
	for in, want := range map[string]string{
		"-ERR unknown command\r\n": "ERR", "-WRONGTYPE Operation\r\n": "WRONGTYPE",
		"!9\r\nNOPERM no\r\n": "NOPERM", "-BUSY\r\n": "BUSY",
	} {
		if got := errorPrefix([]byte(in)); got != want {
			t.Errorf("%q: %q, want %q", in, got, want)
		}
	}
}
