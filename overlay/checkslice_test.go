package overlay

import (
	"runtime"
	"testing"
	"time"

	"github.com/meshnode/meshnode/cert/certtest"
)

// TestCheckQueueDueTakesTheEarliestUpToTheLimit: due hands out at most limit tunnels, the
// earliest first, skips stale items, and leaves the rest queued for the next slice.
func TestCheckQueueDueTakesTheEarliestUpToTheLimit(t *testing.T) {
	var q checkQueue
	base := time.Unix(1_000_000, 0)
	ts := make([]*tunnel, 10)
	for i := range ts {
		ts[i] = &tunnel{}
		q.add(ts[i], base.Add(time.Duration(9-i)*time.Second)) // ts[9] is due first
	}
	q.soon(ts[:1], base.Add(-time.Second)) // ts[0] moves to the front; its old item is stale
	now := base.Add(5 * time.Second)       // due: ts[0] (moved), ts[9], ts[8], ts[7], ts[6], ts[5], ts[4]
	got := q.due(now, nil, 3)
	if len(got) != 3 || got[0] != ts[0] || got[1] != ts[9] || got[2] != ts[8] {
		t.Fatalf("first slice: got %d tunnels %v", len(got), got)
	}
	got = q.due(now, got[:0], 3)
	if len(got) != 3 || got[0] != ts[7] || got[2] != ts[5] {
		t.Fatalf("second slice: got %d tunnels", len(got))
	}
	if got = q.due(now, got[:0], 3); len(got) != 1 || got[0] != ts[4] {
		t.Fatalf("last slice: got %d tunnels, want ts[4] alone", len(got))
	}
	if got = q.due(now, got[:0], 3); len(got) != 0 {
		t.Fatalf("%d tunnels due after all were taken", len(got))
	}
	// The clock went back by a day: whatever is queued is due at once, a slice at a time,
	// and the stale item of ts[0] is not among them.
	back := base.Add(-24 * time.Hour)
	var all []*tunnel
	for s := q.due(back, nil, 2); len(s) > 0; s = q.due(back, nil, 2) {
		if len(s) > 2 {
			t.Fatalf("a slice of %d after the clock went back, limit 2", len(s))
		}
		all = append(all, s...)
	}
	if len(all) != 4 { // ts[1], ts[2], ts[3] and... ts[0]'s stale item must not count
		if len(all) != 3 {
			t.Fatalf("%d tunnels due after the clock went back, want ts[1..3]", len(all))
		}
	}
	for _, x := range all {
		if x == ts[0] || x.checkAt != 0 {
			t.Fatalf("after the clock went back: %v taken (checkAt %d)", x == ts[0], x.checkAt)
		}
	}
	if q.len() != 0 {
		t.Fatalf("%d items left queued", q.len())
	}
}

// TestTimerLoopVisitsDueTunnelsInSlicesWithTheQueueUnlocked: with many tunnels due at once,
// checkTunnels stops after each slice (checkYield) without holding the queue's lock, and
// still visits every due tunnel once.
func TestTimerLoopVisitsDueTunnelsInSlicesWithTheQueueUnlocked(t *testing.T) {
	s := newScaleHub(t, true, false)
	const n = 300
	s.grow(t, n)
	yields := 0
	s.hub.checkSliceTime = 0 // a yield after every batch
	s.hub.checkYield = func() {
		yields++
		if !s.hub.hosts.checks.mu.TryLock() {
			t.Error("checkTunnels paused holding the check queue's lock")
			return
		}
		s.hub.hosts.checks.mu.Unlock()
	}
	visited := s.hub.checkTunnels(time.Now().Add(time.Minute)) // every tunnel is due
	if visited != n {
		t.Fatalf("visited %d of %d due tunnels", visited, n)
	}
	if yields != n {
		t.Fatalf("%d pauses for %d tunnels with a slice of 0, want one after each visit", yields, n)
	}
	if got := s.hub.hosts.checks.len(); got != n {
		t.Fatalf("%d tunnels queued again, want %d", got, n)
	}
}

// TestTimerLoopLeavesTheCoreToOthersWhileManyTunnelsAreDue is the regression test of the
// lighthouse's query tail: on one P, while the timer loop works through thousands of due
// tunnels (here each checks a signature, as after a new CA pool), a goroutine waiting to
// run (the receive path's stand-in: one woken every 200 µs) gets the core within a slice.
// Run in one go, the work kept it waiting until the scheduler's monitor preempted the loop,
// 10 ms and more at a time.
func TestTimerLoopLeavesTheCoreToOthersWhileManyTunnelsAreDue(t *testing.T) {
	if raceEnabled {
		t.Skip("timing under the race detector says nothing about the scheduler")
	}
	s := newScaleHub(t, true, false)
	const n = 2000
	s.grow(t, n)
	// A new CA pool: every tunnel is checked with a full signature verification.
	p := *s.hub.pki.Load()
	p.Pool = certtest.Pool(t, s.ca)
	s.hub.swapPKI(&p)
	now := time.Now()
	s.hub.hosts.checks.soon(s.hub.hosts.all(), now)

	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	stop := make(chan struct{})
	gaps := make(chan []time.Duration)
	go func() {
		var g []time.Duration
		last := time.Now()
		for {
			select {
			case <-stop:
				gaps <- g
				return
			case <-time.After(200 * time.Microsecond):
			}
			g = append(g, time.Since(last))
			last = time.Now()
		}
	}()
	time.Sleep(5 * time.Millisecond)
	start := time.Now()
	visited := s.hub.checkTunnels(now)
	took := time.Since(start)
	close(stop)
	g := <-gaps
	if visited != n {
		t.Fatalf("visited %d of %d tunnels", visited, n)
	}
	long := 0
	var worst time.Duration
	for _, d := range g {
		if d > 5*time.Millisecond {
			long++
		}
		worst = max(worst, d)
	}
	t.Logf("%d visits with signature checks in %v; the other goroutine ran %d times, longest wait %v, %d waits over 5 ms",
		n, took, len(g), worst, long)
	// A busy machine stalls the whole process now and then, so the test asks that few of
	// the waits were long, not none. The work takes 100 ms or more here; done in one go,
	// nearly every wait was 10 ms or more.
	if len(g) < 20 || long*10 > len(g) {
		t.Fatalf("the other goroutine ran %d times while the timer loop worked, %d of them after waiting over 5 ms (longest %v)",
			len(g), long, worst)
	}
}
