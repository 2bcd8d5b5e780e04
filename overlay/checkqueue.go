package overlay

import (
	"container/heap"
	"sync"
	"time"

	"github.com/meshnode/meshnode/cert"
)

// checkQueue holds every installed tunnel once, ordered by when the timer loop must next
// look at it (liveness, certificate validity, punching, relay probes; checkTunnel decides).
// So a tick costs what is due, not a walk over every tunnel: an idle tunnel is visited once
// per connection_alive_interval, an active one when its timers can next fire. Tunnels that
// left the host map are dropped when they come up. A tunnel's place is tunnel.checkAt;
// moving it earlier (soon) leaves a stale item behind, skipped when it comes up.
type checkQueue struct {
	mu sync.Mutex
	h  checkHeap
}

type checkItem struct {
	at int64 // unix ns
	t  *tunnel
}

type checkHeap []checkItem

func (h checkHeap) Len() int           { return len(h) }
func (h checkHeap) Less(i, j int) bool { return h[i].at < h[j].at }
func (h checkHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *checkHeap) Push(x any)        { *h = append(*h, x.(checkItem)) }
func (h *checkHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	old[len(old)-1] = checkItem{}
	*h = old[:len(old)-1]
	return it
}

func (q *checkQueue) add(t *tunnel, at time.Time) {
	q.mu.Lock()
	t.checkAt = at.UnixNano()
	heap.Push(&q.h, checkItem{t.checkAt, t})
	q.mu.Unlock()
}

// soon moves every tunnel of ts to the front, for a change that may affect them all (a new
// CA pool): they are checked at the next tick.
func (q *checkQueue) soon(ts []*tunnel, now time.Time) {
	ns := now.UnixNano()
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, t := range ts {
		if t.checkAt > ns {
			t.checkAt = ns
			heap.Push(&q.h, checkItem{ns, t})
		}
	}
}

// due appends to out, and removes, every tunnel whose time has come by now.
func (q *checkQueue) due(now time.Time, out []*tunnel) []*tunnel {
	ns := now.UnixNano()
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.h) > 0 && q.h[0].at <= ns {
		if it := heap.Pop(&q.h).(checkItem); it.at == it.t.checkAt {
			it.t.checkAt = 0
			out = append(out, it.t)
		}
	}
	// A clock that went back would leave everything waiting: look at every tunnel now.
	if len(q.h) > 0 && len(out) == 0 && q.h[0].at-ns > int64(time.Hour) {
		for _, it := range q.h {
			if it.at == it.t.checkAt {
				it.t.checkAt = 0
				out = append(out, it.t)
			}
		}
		clear(q.h)
		q.h = q.h[:0]
	}
	return out
}

func (q *checkQueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.h)
}

// peerStillValid is pool.Verify of the tunnel's peer certificate without repeating the
// signature check: once the certificate verified against this very pool, only the
// blocklist (which grows in place) and the expiry of the certificate and its CA can change
// the answer, and those are map lookups and comparisons. A swapped pool (reload, renewal)
// gets one full verification. Called from the timer goroutine only.
func (t *tunnel) peerStillValid(pool *cert.Pool, now time.Time) error {
	if t.verifiedBy.Load() != pool {
		if _, err := pool.Verify(t.peer, now); err != nil {
			return err
		}
		t.verifiedBy.Store(pool)
		return nil
	}
	if pool.IsBlocked(t.peer.Fingerprint()) {
		return cert.ErrBlocked
	}
	ca, ok := pool.CA(t.peer.Details.Issuer)
	switch {
	case !ok:
		return cert.ErrUnknownCA
	case pool.IsBlocked(t.peer.Details.Issuer):
		return cert.ErrBlocked
	case ca.Expired(now):
		return cert.ErrRootExpired
	case t.peer.Expired(now):
		return cert.ErrExpired
	}
	return nil
}

// validUntil is when the peer's certificate or its CA expires, whichever is first.
func (t *tunnel) validUntil() time.Time {
	end := t.peer.Details.NotAfter
	if t.ca != nil && t.ca.Details.NotAfter.Before(end) {
		end = t.ca.Details.NotAfter
	}
	return end.Add(time.Nanosecond)
}
