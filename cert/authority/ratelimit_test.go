package authority

import (
	"net/netip"
	"testing"
	"time"
)

// TestLimiterFullEvictsTheOldestSourceNotEveryone: when the limiter tracks as many sources
// as it may, a new source evicts the one seen least recently; a source that keeps asking
// stays limited (on main the whole table was forgotten, handing every source a full burst).
func TestLimiterFullEvictsTheOldestSourceNotEveryone(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	l := newLimiter(0.001, 1, func() time.Time { return now })
	l.maxKeys = 3
	a := netip.MustParseAddr("192.0.2.1")
	if !l.allow(a) {
		t.Fatal("first request refused")
	}
	src := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}) }
	for i := range 10 {
		now = now.Add(time.Second)
		if l.allow(a) {
			t.Fatalf("round %d: the limited source got through", i)
		}
		l.allow(src(i)) // a new source while the table is full
	}
	if n := len(l.buckets); n > 3 {
		t.Errorf("tracking %d sources, at most 3", n)
	}
}
