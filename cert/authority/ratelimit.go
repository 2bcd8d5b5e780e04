package authority

import (
	"net/netip"
	"sync"
	"time"
)

// limiter is a token bucket per source address. It is bounded: when it tracks maxKeys
// sources it forgets them all, which at worst lets a burst through, never locks anyone out
// for long nor grows without limit.
type limiter struct {
	rate    float64 // tokens per second
	burst   float64
	now     func() time.Time
	maxKeys int

	mu      sync.Mutex
	buckets map[netip.Addr]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newLimiter(rate float64, burst int, now func() time.Time) *limiter {
	return &limiter{rate: rate, burst: float64(burst), now: now, maxKeys: 10000, buckets: map[netip.Addr]*bucket{}}
}

func (l *limiter) allow(a netip.Addr) bool {
	if l.rate <= 0 {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	b, ok := l.buckets[a]
	if !ok {
		if len(l.buckets) >= l.maxKeys {
			clear(l.buckets)
		}
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[a] = b
	}
	b.tokens = min(l.burst, b.tokens+now.Sub(b.last).Seconds()*l.rate)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
