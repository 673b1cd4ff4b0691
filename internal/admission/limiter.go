package admission

import (
	"math"
	"sync/atomic"
	"time"
)

// The rate limits are GCRA (the generic cell rate algorithm, equivalent to
// a token bucket): the whole state is one "theoretical arrival time". An
// event at now is allowed when tat - now ≤ tolerance, and then moves tat on
// by one interval. A limit of r per second with burst b has interval 1/r
// and tolerance (b-1)/r.

// gcra is a limit's parameters in nanoseconds.
type gcra struct {
	interval  int64
	tolerance int64
}

func newGCRA(perSecond float64, burst int) gcra {
	if perSecond <= 0 {
		return gcra{}
	}
	iv := int64(math.Max(1, float64(time.Second)/perSecond))
	return gcra{interval: iv, tolerance: iv * int64(max(burst, 1)-1)}
}

// allow decides for one event, returning the new state.
func (g gcra) allow(tat, now int64) (int64, bool) {
	t := max(tat, now)
	if t-now > g.tolerance {
		return tat, false
	}
	return t + g.interval, true
}

// sharedBucket is a GCRA limit shared by goroutines, without a lock.
type sharedBucket struct {
	g   gcra
	tat atomic.Int64
}

func (b *sharedBucket) allow(now int64) bool {
	if b.g.interval == 0 {
		return true
	}
	for {
		old := b.tat.Load()
		next, ok := b.g.allow(old, now)
		if !ok {
			return false
		}
		if b.tat.CompareAndSwap(old, next) {
			return true
		}
	}
}

// MessageLimiter limits one connection's inbound messages. It is a 16-byte
// value with no goroutine and no lock, made to live in the connection's
// state: calls for one connection never overlap, so it needs no locking.
// The zero value allows everything.
type MessageLimiter struct {
	tat        int64  // unix nanos
	intervalUS uint32 // microseconds between messages at the sustained rate
	burst      uint32
}

// NewMessageLimiter allows perSecond messages per second on average, with
// bursts of burst (at least 1). perSecond ≤ 0 means unlimited. Rates slower
// than one message per ~71 minutes are clamped to that.
func NewMessageLimiter(perSecond float64, burst int) MessageLimiter {
	if perSecond <= 0 {
		return MessageLimiter{}
	}
	us := math.Min(math.Max(1, 1e6/perSecond), math.MaxUint32)
	return MessageLimiter{intervalUS: uint32(us), burst: uint32(min(max(burst, 1), math.MaxUint32))}
}

// Allow reports whether a message arriving at now is within the limit, and
// counts it if so.
func (m *MessageLimiter) Allow(now time.Time) bool {
	if m.intervalUS == 0 {
		return true
	}
	iv := int64(m.intervalUS) * int64(time.Microsecond)
	g := gcra{interval: iv, tolerance: iv * int64(m.burst-1)}
	tat, ok := g.allow(m.tat, now.UnixNano())
	m.tat = tat
	return ok
}
