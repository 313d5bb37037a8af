package main

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// exactQuantile is the definition Quantile approximates: the sample of rank
// ceil(q*n) in sorted order.
func exactQuantile(sorted []time.Duration, q float64) time.Duration {
	n := len(sorted)
	rank := int(q * float64(n))
	if float64(rank) < q*float64(n) {
		rank++
	}
	return sorted[min(max(rank, 1), n)-1]
}

// tolerance is the bucket precision at v: 1 µs below ~1 ms, 1% above.
func tolerance(v time.Duration) time.Duration {
	return max(time.Microsecond, v/100)
}

var quantiles = []float64{0, 0.001, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999, 0.9999, 1}

func TestHistQuantiles(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	gen := func(n int, f func(i int) time.Duration) []time.Duration {
		s := make([]time.Duration, n)
		for i := range s {
			s[i] = f(i)
		}
		return s
	}
	tests := []struct {
		name    string
		samples []time.Duration
	}{
		{"single", []time.Duration{1234567 * time.Nanosecond}},
		{"zero", []time.Duration{0, 0, 0}},
		{"constant sub-µs", gen(100, func(int) time.Duration { return 300 * time.Nanosecond })},
		{"linear range 1..1000 µs", gen(1000, func(i int) time.Duration { return time.Duration(i+1) * time.Microsecond })},
		{"ns resolution below 1 ms", gen(50000, func(int) time.Duration { return time.Duration(rng.Int64N(int64(time.Millisecond))) })},
		{"around the linear/log boundary", gen(5000, func(i int) time.Duration { return time.Duration(1000+i/10) * time.Microsecond })},
		{"uniform 1 ms..1 s", gen(100000, func(int) time.Duration {
			return time.Millisecond + time.Duration(rng.Int64N(int64(time.Second)))
		})},
		{"exponential mean 300 µs", gen(100000, func(int) time.Duration {
			return time.Duration(rng.ExpFloat64() * float64(300*time.Microsecond))
		})},
		{"log-uniform 1 µs..60 s", gen(100000, func(int) time.Duration {
			return time.Duration(float64(time.Microsecond) * math.Pow(6e7, rng.Float64()))
		})},
		{"bimodal with outliers", gen(10000, func(i int) time.Duration {
			switch {
			case i%1000 == 0:
				return 3 * time.Second
			case i%2 == 0:
				return 150 * time.Microsecond
			}
			return 12 * time.Millisecond
		})},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var h Hist
			for _, v := range tc.samples {
				h.Record(v)
			}
			sorted := slices.Sorted(slices.Values(tc.samples))
			if h.Count() != uint64(len(sorted)) {
				t.Fatalf("Count = %d, want %d", h.Count(), len(sorted))
			}
			if h.Max() != sorted[len(sorted)-1] {
				t.Fatalf("Max = %v, want exactly %v", h.Max(), sorted[len(sorted)-1])
			}
			if got := h.Quantile(1); got != h.Max() {
				t.Errorf("Quantile(1) = %v, want Max %v", got, h.Max())
			}
			if got := h.Quantile(0); got != sorted[0] {
				t.Errorf("Quantile(0) = %v, want min %v", got, sorted[0])
			}
			for _, q := range quantiles {
				want := exactQuantile(sorted, q)
				got := h.Quantile(q)
				if d := (got - want).Abs(); d > tolerance(want) {
					t.Errorf("Quantile(%v) = %v, want %v ± %v", q, got, want, tolerance(want))
				}
			}
		})
	}
}

func TestHistEmpty(t *testing.T) {
	var h Hist
	if h.Count() != 0 || h.Max() != 0 || h.Quantile(0.5) != 0 {
		t.Fatalf("empty hist: count %d max %v p50 %v", h.Count(), h.Max(), h.Quantile(0.5))
	}
	var o Hist
	h.Merge(&o)
	if h.Count() != 0 {
		t.Fatal("merging empty hists gave values")
	}
}

func TestHistBeyondRange(t *testing.T) {
	var h Hist
	h.Record(-time.Second) // clock weirdness counts as zero
	h.Record(2 * time.Minute)
	h.Record(10 * time.Minute)
	if h.Max() != 10*time.Minute {
		t.Fatalf("Max = %v, want exactly 10m", h.Max())
	}
	if got := h.Quantile(0.1); got != 0 {
		t.Fatalf("p10 = %v, want 0", got)
	}
	if got := h.Quantile(1); got != 10*time.Minute {
		t.Fatalf("p100 = %v, want 10m", got)
	}
}

func TestHistMerge(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	var all Hist
	parts := make([]Hist, 4)
	var samples []time.Duration
	for i := range 40000 {
		v := time.Duration(rng.ExpFloat64() * float64(2*time.Millisecond))
		if i == 12345 {
			v = 7 * time.Second // the max lives in one part only
		}
		samples = append(samples, v)
		all.Record(v)
		parts[i%3].Record(v) // parts[3] stays empty
	}
	var merged Hist
	for i := range parts {
		merged.Merge(&parts[i])
	}
	if merged != all {
		t.Fatal("merged parts differ from one hist of all samples")
	}
	if merged.Max() != 7*time.Second {
		t.Fatalf("merged Max = %v", merged.Max())
	}
	sorted := slices.Sorted(slices.Values(samples))
	for _, q := range quantiles {
		want := exactQuantile(sorted, q)
		if got := merged.Quantile(q); (got - want).Abs() > tolerance(want) {
			t.Errorf("merged Quantile(%v) = %v, want %v ± %v", q, got, want, tolerance(want))
		}
	}
}

// TestHistBuckets checks that the buckets tile [0, 2^topOctave) µs without
// gaps or overlaps and that each is within the promised precision.
func TestHistBuckets(t *testing.T) {
	next := uint64(0)
	for i := range numBuckets {
		lo, width := bucketBounds(i)
		if lo != next {
			t.Fatalf("bucket %d starts at %d µs, want %d", i, lo, next)
		}
		if bucketOf(lo) != i || bucketOf(lo+width-1) != i {
			t.Fatalf("bucket %d [%d, %d) µs: bucketOf gives %d and %d", i, lo, lo+width, bucketOf(lo), bucketOf(lo+width-1))
		}
		if width > 1 && float64(width) > float64(lo)/float64(subBuckets)+0.5 {
			t.Fatalf("bucket %d [%d, +%d) µs is wider than 1/%d", i, lo, width, subBuckets)
		}
		next = lo + width
	}
	if next != 1<<topOctave {
		t.Fatalf("buckets end at %d µs, want %d", next, uint64(1)<<topOctave)
	}
	if bucketOf(1<<62) != numBuckets-1 {
		t.Fatal("huge value not clamped to the last bucket")
	}
}

func BenchmarkHistRecord(b *testing.B) {
	var h Hist
	d := 123 * time.Microsecond
	for b.Loop() {
		h.Record(d)
		d = (d*7 + 13*time.Microsecond) % (5 * time.Second)
	}
}
