package overlay

import (
	"net/netip"
	"sync"
	"time"
)

// recv_error rate limits (issue 12). A recv_error goes to the source address of a datagram
// with an index we do not know, and that address can be spoofed, so without a limit a node
// reflects any flood at a victim. Genuine cases are rare and need only one to get through:
// a peer that restarted, or one whose tunnel we dropped, re-handshakes on the first it gets
// (and asks again at most every 2 s). So each source gets a small burst and a trickle, and
// all sources together a larger one.
const (
	recvErrorSourceBurst = 10
	recvErrorSourceRate  = 5 // per second
	recvErrorBurst       = 1000
	recvErrorRate        = 500 // per second, all sources
	// recvErrorSources bounds the per-source table; when full the source seen first is
	// evicted (a flood from many addresses cannot empty the table and so refill everyone).
	recvErrorSources = 4096
)

// tokenBucket holds up to burst tokens and gains rate a second.
type tokenBucket struct {
	tokens float64
	last   time.Time
}

func (b *tokenBucket) refill(now time.Time, rate, burst float64) {
	if now.After(b.last) {
		b.tokens = min(burst, b.tokens+now.Sub(b.last).Seconds()*rate)
		b.last = now
	}
}

// recvErrorLimiter decides whether a recv_error may go out. It is used only for datagrams
// with an unknown index, never for tunnel traffic, so one mutex is cheap enough.
type recvErrorLimiter struct {
	mu      sync.Mutex
	global  tokenBucket
	sources map[netip.Addr]*tokenBucket
	order   []netip.Addr // a ring of the sources in sources, by first sight
	next    int          // the oldest slot of order once it is full
	started bool
}

// allow takes a token from the source's bucket and the global one, only if both have one.
func (l *recvErrorLimiter) allow(src netip.Addr, now time.Time) bool {
	src = src.Unmap()
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.started {
		l.started = true
		l.global = tokenBucket{tokens: recvErrorBurst, last: now}
		l.sources = make(map[netip.Addr]*tokenBucket)
	}
	l.global.refill(now, recvErrorRate, recvErrorBurst)
	b := l.sources[src]
	if b == nil {
		if l.global.tokens < 1 {
			return false // no need to remember a source we would refuse anyway
		}
		b = &tokenBucket{tokens: recvErrorSourceBurst, last: now}
		if len(l.order) < recvErrorSources {
			l.order = append(l.order, src)
		} else {
			delete(l.sources, l.order[l.next])
			l.order[l.next] = src
			l.next = (l.next + 1) % recvErrorSources
		}
		l.sources[src] = b
	}
	b.refill(now, recvErrorSourceRate, recvErrorSourceBurst)
	if b.tokens < 1 || l.global.tokens < 1 {
		return false
	}
	b.tokens--
	l.global.tokens--
	return true
}
