package overlay

import (
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
)

// The index agrees with a plain map through random stores, replacements and deletes,
// across its rebuilds (growth, tombstones, emptying).
func TestTunnelIndexAgreesWithAMap(t *testing.T) {
	var x tunnelIndex[uint32, hashUint32]
	model := map[uint32]*tunnel{}
	tunnels := make([]*tunnel, 64)
	for i := range tunnels {
		tunnels[i] = &tunnel{localIndex: uint32(i)}
	}
	r := rand.New(rand.NewPCG(1, 2))
	for step := range 200000 {
		// Keys from a range that drifts, so tombstones pile up and force rebuilds.
		k := uint32(step/1000) + uint32(r.IntN(3000))
		t1 := tunnels[r.IntN(len(tunnels))]
		switch r.IntN(3) {
		case 0, 1:
			x.store(k, t1)
			model[k] = t1
		default:
			cur := model[k]
			if r.IntN(2) == 0 && cur != nil {
				t1 = cur
			}
			if got, want := x.compareAndDelete(k, t1), cur != nil && cur == t1; got != want {
				t.Fatalf("step %d: compareAndDelete(%d) = %v, want %v", step, k, got, want)
			}
			if cur == t1 {
				delete(model, k)
			}
		}
		if got := x.load(k); got != model[k] {
			t.Fatalf("step %d: load(%d) = %p, want %p", step, k, got, model[k])
		}
		if x.live != len(model) {
			t.Fatalf("step %d: %d live, model has %d", step, x.live, len(model))
		}
	}
	n := 0
	x.rangeAll(func(k uint32, t1 *tunnel) bool {
		if model[k] != t1 {
			t.Errorf("range: %d -> %p, want %p", k, t1, model[k])
		}
		n++
		return true
	})
	if n != len(model) {
		t.Errorf("range saw %d entries, want %d", n, len(model))
	}
	// Three quarters full at most, and no bigger than needed for what is live.
	if tab := x.tab.Load(); tab != nil && (4*x.used > 3*len(tab.slots) || len(tab.slots) > 16 && 8*x.live < len(tab.slots)/8) {
		t.Errorf("%d slots for %d live (%d used)", len(tab.slots), x.live, x.used)
	}
	for k := range model {
		x.compareAndDelete(k, model[k])
	}
	if x.tab.Load() != nil || x.live != 0 || x.used != 0 {
		t.Errorf("emptied index keeps a table (%d live, %d used)", x.live, x.used)
	}
}

// IPv4 addresses and their IPv4-mapped IPv6 forms are different keys, as in a Go map.
func TestTunnelIndexAddrKeys(t *testing.T) {
	var x tunnelIndex[netip.Addr, hashAddr]
	a, b := &tunnel{}, &tunnel{}
	v4 := netip.MustParseAddr("10.1.2.3")
	x.store(v4, a)
	x.store(netip.AddrFrom16(v4.As16()), b)
	x.store(netip.MustParseAddr("fd00::1"), b)
	if x.load(v4) != a || x.load(netip.AddrFrom16(v4.As16())) != b || x.load(netip.MustParseAddr("fd00::1")) != b {
		t.Fatal("addresses mixed up")
	}
	if x.load(netip.MustParseAddr("10.1.2.4")) != nil || x.load(netip.Addr{}) != nil {
		t.Fatal("found an address never stored")
	}
}

// Readers without the lock always find a key that stays stored, while a writer grows,
// deletes and rebuilds the table around it (run with -race).
func TestTunnelIndexReadsWhileWriting(t *testing.T) {
	var x tunnelIndex[uint32, hashUint32]
	var mu sync.Mutex
	steady := &tunnel{localIndex: 7}
	x.store(7, steady)
	var stop atomic.Bool
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for !stop.Load() {
				if x.load(7) != steady {
					t.Error("a key that was never deleted went missing")
					return
				}
				x.load(rand.Uint32())
			}
		})
	}
	other := &tunnel{}
	for round := range 20 {
		mu.Lock()
		for i := range uint32(2000) {
			x.store(1000+i+uint32(round)*2000, other)
		}
		for i := range uint32(2000) {
			x.compareAndDelete(1000+i+uint32(round)*2000, other)
		}
		mu.Unlock()
	}
	stop.Store(true)
	wg.Wait()
}

func BenchmarkTunnelIndexLoad(b *testing.B) {
	var x tunnelIndex[uint32, hashUint32]
	for i := range uint32(10000) {
		x.store(i*7919, &tunnel{})
	}
	b.ReportAllocs()
	i := uint32(0)
	for b.Loop() {
		i++
		if x.load((i%10000)*7919) == nil {
			b.Fatal("missing")
		}
	}
}
