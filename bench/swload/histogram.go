package swload

import (
	"math/bits"
	"time"
)

// subBits sets the histogram's precision: each power of two is split into
// 2^subBits buckets, so a reported quantile is within ~3% of the true value,
// whatever its magnitude, in a fixed few KiB and with no allocation per sample.
const subBits = 5

const (
	subCount = 1 << subBits
	nBuckets = (64 - subBits) * subCount
)

// histogram records durations (ns) in log-linear buckets. Not safe for
// concurrent use: each reactor owns one, and they are merged at the end.
type histogram struct {
	counts [nBuckets]uint64
	total  uint64
	sum    uint64
	max    uint64
}

func bucketOf(v uint64) int {
	if v < subCount {
		return int(v)
	}
	shift := bits.Len64(v) - subBits - 1
	return (shift+1)*subCount + int(v>>uint(shift)) - subCount
}

// upperBound is the largest value that falls in bucket i.
func upperBound(i int) uint64 {
	if i < subCount {
		return uint64(i)
	}
	shift := uint(i/subCount - 1)
	m := uint64(i%subCount + subCount)
	return (m+1)<<shift - 1
}

func (h *histogram) record(d time.Duration) {
	if d < 0 {
		d = 0
	}
	v := uint64(d)
	h.counts[bucketOf(v)]++
	h.total++
	h.sum += v
	if v > h.max {
		h.max = v
	}
}

func (h *histogram) merge(o *histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.total += o.total
	h.sum += o.sum
	if o.max > h.max {
		h.max = o.max
	}
}

// quantile returns the upper bound of the bucket holding the q-th sample,
// capped at the true maximum.
func (h *histogram) quantile(q float64) time.Duration {
	if h.total == 0 {
		return 0
	}
	rank := uint64(q*float64(h.total) + 0.999999)
	if rank < 1 {
		rank = 1
	}
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return time.Duration(min(upperBound(i), h.max))
		}
	}
	return time.Duration(h.max)
}

// Summary describes a distribution of durations.
type Summary struct {
	Count int64         `json:"count"`
	Mean  time.Duration `json:"meanNs"`
	P50   time.Duration `json:"p50Ns"`
	P99   time.Duration `json:"p99Ns"`
	P999  time.Duration `json:"p999Ns"`
	Max   time.Duration `json:"maxNs"`
}

func (h *histogram) summary() Summary {
	s := Summary{Count: int64(h.total), Max: time.Duration(h.max)}
	if h.total > 0 {
		s.Mean = time.Duration(h.sum / h.total)
		s.P50 = h.quantile(0.50)
		s.P99 = h.quantile(0.99)
		s.P999 = h.quantile(0.999)
	}
	return s
}
