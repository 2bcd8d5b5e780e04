package overlay

import (
	"net/netip"
	"testing"
	"time"
)

func srcN(k int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, byte(k >> 16), byte(k >> 8), byte(k)})
}

func TestRecvErrorLimiterRefillsAndEvictsTheOldestSource(t *testing.T) {
	var l recvErrorLimiter
	t0 := time.Unix(1000, 0)
	victim := srcN(0)
	for k := range recvErrorSourceBurst {
		if !l.allow(victim, t0) {
			t.Fatalf("reply %d of the burst refused", k)
		}
	}
	if l.allow(victim, t0) {
		t.Fatal("the burst was exceeded")
	}
	if !l.allow(victim, t0.Add(time.Second/recvErrorSourceRate)) {
		t.Fatal("no refill after 1/rate")
	}
	// Fill the table: the victim is the oldest source but stays until one more arrives, and
	// its bucket is kept (not reset) meanwhile.
	t1 := t0.Add(time.Second/recvErrorSourceRate + time.Millisecond)
	for k := 1; k < recvErrorSources; k++ {
		l.global.tokens = recvErrorBurst // the global bucket is tested below
		l.allow(srcN(k), t1)
	}
	if len(l.sources) != recvErrorSources || l.allow(victim, t1) {
		t.Fatalf("table of %d sources; the victim's empty bucket was refilled", len(l.sources))
	}
	l.allow(srcN(recvErrorSources), t1)
	if len(l.sources) != recvErrorSources || l.sources[victim] != nil || l.sources[srcN(1)] == nil {
		t.Fatalf("want the oldest source evicted and the table full, got %d sources", len(l.sources))
	}
	// The global bucket: fresh sources get nothing once it is empty.
	l.global.tokens = 0
	if l.allow(srcN(1<<20), t1) {
		t.Fatal("the global bucket was empty")
	}
	if l.allow(srcN(1<<20), t1.Add(time.Second/recvErrorRate/2)) {
		t.Fatal("half a token is not a token")
	}
	if !l.allow(srcN(1<<20), t1.Add(time.Second/recvErrorRate)) {
		t.Fatal("the global bucket did not refill")
	}
}
