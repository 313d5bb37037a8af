package main

import (
	"math/bits"
	"time"
)

// Hist is a log-linear latency histogram in microseconds: 1 µs buckets
// below linearMicros (about 1 ms), then subBuckets buckets per power of two,
// each at most 1/128 (< 0.8%) of its values wide, up to 2^topOctave µs
// (about 67 s); longer values land in the last bucket. The count, minimum and
// maximum are exact. Recording is a few instructions and never allocates;
// a Hist is not safe for concurrent use: give each goroutine its own and
// Merge them at the end.
type Hist struct {
	counts   [numBuckets]uint64
	n        uint64
	min, max time.Duration
}

const (
	linearBits   = 10
	linearMicros = 1 << linearBits // [0, 1024) µs in 1 µs buckets
	subBits      = 7
	subBuckets   = 1 << subBits // per octave above linearMicros
	topOctave    = 26           // 2^26 µs ≈ 67 s
	numBuckets   = linearMicros + (topOctave-linearBits)*subBuckets
)

// bucketOf returns the bucket index of a value in microseconds.
func bucketOf(us uint64) int {
	if us < linearMicros {
		return int(us)
	}
	k := bits.Len64(us) - 1 // us is in [2^k, 2^(k+1))
	if k >= topOctave {
		return numBuckets - 1
	}
	shift := k - subBits // us>>shift is in [subBuckets, 2*subBuckets)
	return linearMicros + (k-linearBits)*subBuckets + int(us>>shift) - subBuckets
}

// bucketBounds returns the lowest value of bucket i and its width, in µs.
func bucketBounds(i int) (lo, width uint64) {
	if i < linearMicros {
		return uint64(i), 1
	}
	j := i - linearMicros
	shift := linearBits + j/subBuckets - subBits
	return uint64(subBuckets+j%subBuckets) << shift, 1 << shift
}

// Record adds one value; negative durations count as zero.
func (h *Hist) Record(d time.Duration) {
	d = max(d, 0)
	h.counts[bucketOf(uint64(d/time.Microsecond))]++
	if h.n == 0 || d < h.min {
		h.min = d
	}
	h.max = max(h.max, d)
	h.n++
}

// Merge adds all of o's values to h.
func (h *Hist) Merge(o *Hist) {
	if o.n == 0 {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.n == 0 || o.min < h.min {
		h.min = o.min
	}
	h.max = max(h.max, o.max)
	h.n += o.n
}

// Count is the number of recorded values.
func (h *Hist) Count() uint64 { return h.n }

// Max is the largest recorded value (exact), 0 when empty.
func (h *Hist) Max() time.Duration { return h.max }

// Quantile returns the value at quantile q in [0, 1]: the value of rank
// ceil(q*n) (at least 1), approximated by the middle of its bucket clamped
// to the exact minimum and maximum; ranks 1 and n give the exact minimum and
// maximum (so Quantile(1) is Max). 0 when empty.
func (h *Hist) Quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(q * float64(h.n))
	if float64(rank) < q*float64(h.n) {
		rank++ // ceil without a float round trip for large n
	}
	switch rank = min(max(rank, 1), h.n); rank {
	case h.n:
		return h.max
	case 1:
		return h.min
	}
	var seen uint64
	for i, c := range h.counts {
		if seen += c; seen >= rank {
			lo, width := bucketBounds(i)
			mid := time.Duration(lo)*time.Microsecond + time.Duration(width)*time.Microsecond/2
			return min(max(mid, h.min), h.max)
		}
	}
	return h.max
}
