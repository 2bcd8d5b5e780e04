package authority

import (
	"container/list"
	"net/netip"
	"sync"
	"time"
)

// limiter is a token bucket per source address. It is bounded: when it tracks maxKeys
// sources, a new one evicts the source seen least recently. Forgetting everyone at once
// would hand every source (the one being limited included) a fresh burst.
type limiter struct {
	rate    float64 // tokens per second
	burst   float64
	now     func() time.Time
	maxKeys int

	mu      sync.Mutex
	buckets map[netip.Addr]*list.Element // of *bucket
	lru     *list.List                   // front: seen most recently
}

type bucket struct {
	addr   netip.Addr
	tokens float64
	last   time.Time
}

func newLimiter(rate float64, burst int, now func() time.Time) *limiter {
	return &limiter{rate: rate, burst: float64(burst), now: now, maxKeys: 10000,
		buckets: map[netip.Addr]*list.Element{}, lru: list.New()}
}

func (l *limiter) allow(a netip.Addr) bool {
	if l.rate <= 0 {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	e, ok := l.buckets[a]
	if ok {
		l.lru.MoveToFront(e)
	} else {
		for len(l.buckets) >= l.maxKeys {
			old := l.lru.Back()
			delete(l.buckets, old.Value.(*bucket).addr)
			l.lru.Remove(old)
		}
		e = l.lru.PushFront(&bucket{addr: a, tokens: l.burst, last: now})
		l.buckets[a] = e
	}
	b := e.Value.(*bucket)
	b.tokens = min(l.burst, b.tokens+now.Sub(b.last).Seconds()*l.rate)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
