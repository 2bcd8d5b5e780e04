package lighthouse

import (
	"net/netip"
	"testing"
	"time"
)

func TestLimiterAllowsBurstThenRate(t *testing.T) {
	clk := newClock()
	l := NewLimiter(LimiterOptions{Rate: 2, Burst: 3, Now: clk.Now})
	k := netip.MustParseAddr("10.99.0.1")
	for i := 0; i < 3; i++ {
		if !l.Allow(k) {
			t.Fatalf("event %d of the burst refused", i)
		}
	}
	if l.Allow(k) {
		t.Fatal("event beyond the burst allowed")
	}
	clk.Advance(500 * time.Millisecond) // one token at 2/s
	if !l.Allow(k) || l.Allow(k) {
		t.Fatal("refill is not Rate tokens per second")
	}
	clk.Advance(time.Hour)
	n := 0
	for l.Allow(k) {
		n++
	}
	if n != 3 {
		t.Fatalf("after a long idle %d events allowed, want the burst (3)", n)
	}
	if got := l.Dropped(); got != 3 {
		t.Fatalf("Dropped = %d, want 3", got)
	}
}

func TestLimiterKeysAreIndependent(t *testing.T) {
	l := NewLimiter(LimiterOptions{Rate: 1, Burst: 1, Now: newClock().Now})
	a, b := netip.MustParseAddr("10.99.0.1"), netip.MustParseAddr("10.99.0.2")
	if !l.Allow(a) || l.Allow(a) || !l.Allow(b) {
		t.Fatal("one key's flood affected another")
	}
}

func TestLimiterBoundsItsMemory(t *testing.T) {
	clk := newClock()
	l := NewLimiter(LimiterOptions{Rate: 1, Burst: 2, MaxKeys: 4, Now: clk.Now})
	key := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}) }
	for i := 0; i < 4; i++ {
		l.Allow(key(i))
	}
	if l.Allow(key(9)) {
		t.Fatal("new key admitted while every tracked key is busy")
	}
	clk.Advance(5 * time.Second) // every bucket refills, so all can be swept
	if !l.Allow(key(9)) || l.Len() != 1 {
		t.Fatalf("sweep did not free refilled keys: Len = %d", l.Len())
	}
}

func BenchmarkLimiterAllow(b *testing.B) {
	l := NewLimiter(LimiterOptions{Rate: 1e9, Burst: 1 << 30})
	k := netip.MustParseAddr("10.99.0.1")
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		l.Allow(k)
	}
}
