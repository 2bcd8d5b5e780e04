package overlay

import (
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

// checkHeap is a binary min-heap by at, typed so that pushing and popping allocate
// nothing (container/heap boxes every item in an interface).
type checkHeap []checkItem

func (h *checkHeap) push(it checkItem) {
	*h = append(*h, it)
	q := *h
	for i := len(q) - 1; i > 0; {
		p := (i - 1) / 2
		if q[p].at <= q[i].at {
			break
		}
		q[p], q[i] = q[i], q[p]
		i = p
	}
}

func (h *checkHeap) pop() checkItem {
	q := *h
	top := q[0]
	last := len(q) - 1
	q[0] = q[last]
	q[last] = checkItem{}
	q = q[:last]
	for i := 0; ; {
		m, l, r := i, 2*i+1, 2*i+2
		if l < len(q) && q[l].at < q[m].at {
			m = l
		}
		if r < len(q) && q[r].at < q[m].at {
			m = r
		}
		if m == i {
			break
		}
		q[m], q[i] = q[i], q[m]
		i = m
	}
	*h = q
	return top
}

func (q *checkQueue) add(t *tunnel, at time.Time) {
	q.mu.Lock()
	t.checkAt = at.UnixNano()
	q.h.push(checkItem{t.checkAt, t})
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
			q.h.push(checkItem{ns, t})
		}
	}
}

// due appends to out, and removes, up to limit tunnels whose time has come by now (the
// earliest first), so that the lock is held for one slice of the timer loop's work.
func (q *checkQueue) due(now time.Time, out []*tunnel, limit int) []*tunnel {
	ns := now.UnixNano()
	q.mu.Lock()
	defer q.mu.Unlock()
	// A clock that went back would leave everything waiting: make every tunnel due now
	// (all at one time, so the heap stays ordered; stale items go).
	if len(q.h) > 0 && q.h[0].at-ns > int64(time.Hour) {
		k := 0
		for _, it := range q.h {
			if it.at == it.t.checkAt {
				it.t.checkAt = ns
				q.h[k] = checkItem{ns, it.t}
				k++
			}
		}
		clear(q.h[k:])
		q.h = q.h[:k]
	}
	for n := len(out) + limit; len(q.h) > 0 && q.h[0].at <= ns && len(out) < n; {
		if it := q.h.pop(); it.at == it.t.checkAt {
			it.t.checkAt = 0
			out = append(out, it.t)
		}
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
	_, err := pool.Revalidate(t.peer, t.fingerprint(), now)
	return err
}

// validUntil is when the peer's certificate or its CA expires, whichever is first.
func (t *tunnel) validUntil() time.Time {
	end := t.peer.Details.NotAfter
	if t.ca != nil && t.ca.Details.NotAfter.Before(end) {
		end = t.ca.Details.NotAfter
	}
	return end.Add(time.Nanosecond)
}
