package lighthouse

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// LimiterOptions configure a Limiter.
type LimiterOptions struct {
	// Rate is the sustained number of events per second allowed per key.
	Rate float64
	// Burst is how many events a key may spend at once (at least 1).
	Burst int
	// MaxKeys bounds the memory: when full, keys idle long enough to have refilled are swept;
	// if none can be, events from new keys are dropped (0: 65536).
	MaxKeys int
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Limiter is a token bucket per key (a querier's VPN IP, a DNS client's address). It counts
// what it drops so floods show up in metrics. It is safe for concurrent use.
type Limiter struct {
	opts    LimiterOptions
	mu      sync.Mutex
	buckets map[netip.Addr]*bucket
	// lastSweep spaces sweeps out so a flood of new keys cannot make every call O(MaxKeys).
	lastSweep time.Time
	dropped   atomic.Uint64
}

type bucket struct {
	tokens float64
	last   time.Time
}

// NewLimiter returns a limiter; a Rate ≤ 0 allows nothing beyond the initial burst.
func NewLimiter(opts LimiterOptions) *Limiter {
	if opts.Burst < 1 {
		opts.Burst = 1
	}
	if opts.MaxKeys <= 0 {
		opts.MaxKeys = 1 << 16
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Limiter{opts: opts, buckets: make(map[netip.Addr]*bucket)}
}

// Allow spends one token of key's bucket and reports whether there was one.
func (l *Limiter) Allow(key netip.Addr) bool {
	now := l.opts.Now()
	l.mu.Lock()
	b := l.buckets[key]
	if b == nil {
		if len(l.buckets) >= l.opts.MaxKeys && l.sweep(now) == 0 {
			l.mu.Unlock()
			l.dropped.Add(1)
			return false
		}
		b = &bucket{tokens: float64(l.opts.Burst), last: now}
		l.buckets[key] = b
	}
	l.refill(b, now)
	ok := b.tokens >= 1
	if ok {
		b.tokens--
	}
	l.mu.Unlock()
	if !ok {
		l.dropped.Add(1)
	}
	return ok
}

func (l *Limiter) refill(b *bucket, now time.Time) {
	if d := now.Sub(b.last); d > 0 {
		b.tokens += d.Seconds() * l.opts.Rate
		if max := float64(l.opts.Burst); b.tokens > max {
			b.tokens = max
		}
		b.last = now
	}
}

// sweep removes buckets that have refilled completely (forgetting them changes nothing), at
// most once a second.
func (l *Limiter) sweep(now time.Time) int {
	if now.Sub(l.lastSweep) < time.Second {
		return 0
	}
	l.lastSweep = now
	n := 0
	for k, b := range l.buckets {
		l.refill(b, now)
		if b.tokens >= float64(l.opts.Burst) {
			delete(l.buckets, k)
			n++
		}
	}
	return n
}

// Dropped is the number of events refused so far.
func (l *Limiter) Dropped() uint64 { return l.dropped.Load() }

// Len is the number of keys tracked.
func (l *Limiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}
