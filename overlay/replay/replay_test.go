package replay

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
)

type op struct {
	counter uint64
	want    bool
}

// run applies Check then Update for each op, as the receive path does, and expects both to
// agree with want.
func run(t *testing.T, w *Window, ops []op) {
	t.Helper()
	for i, o := range ops {
		if got := w.Check(o.counter); got != o.want {
			t.Fatalf("op %d: Check(%d) = %v, want %v (current %d)", i, o.counter, got, o.want, w.Current())
		}
		if got := w.Update(o.counter); got != o.want {
			t.Fatalf("op %d: Update(%d) = %v, want %v (current %d)", i, o.counter, got, o.want, w.Current())
		}
	}
}

func TestWindow(t *testing.T) {
	tests := []struct {
		name string
		ops  []op
	}{
		{"handshake counters 0 1 2 are seen from the start", []op{{0, false}, {1, false}, {2, false}, {3, true}}},
		{"first data counter 3 then in order", []op{{3, true}, {4, true}, {5, true}, {6, true}}},
		{"exact duplicate rejected", []op{{3, true}, {3, false}, {4, true}, {3, false}, {4, false}}},
		{"out of order inside the window accepted once", []op{{10, true}, {7, true}, {9, true}, {8, true}, {7, false}, {3, true}, {3, false}}},
		{"first window: small counters before any jump", []op{{Size - 1, true}, {3, true}, {4, true}, {Size - 2, true}}},
		{"edge: current-Size+1 accepted, current-Size rejected", []op{
			{10000, true}, {10000 - Size + 1, true}, {10000 - Size, false}, {10000 - Size + 1, false},
		}},
		{"edge moves with current", []op{
			{10000, true}, {10001, true}, {10001 - Size, false}, {10001 - Size + 1, true}, {10000 - Size + 1, false},
		}},
		{"jump larger than the window forgets everything below", []op{
			{5, true}, {6, true}, {5 + 3*Size, true}, {6, false}, {5 + 2*Size, false}, {5 + 2*Size + 1, true}, {5 + 3*Size, false},
		}},
		{"jump of exactly Size", []op{{100, true}, {99, true}, {100 + Size, true}, {100, false}, {101, true}, {99 + Size, true}}},
		{"slot reuse after advance: bit of c-Size cleared for c", []op{
			{3, true}, {3 + Size, true}, {4, true}, {3 + Size, false},
		}},
		// The scenario measured on 1.6.1 (NEBULA-WIRE §4.3) with the jumps raised by Size-1024,
		// so the same old counters (977 in, 976 out) sit on our edge.
		{"nebula scenario scaled", []op{
			{10, true}, {2000 + Size - 1024, true}, {10, false},
			{977, true}, {976, false}, {1500, true}, {1500, false},
			{3100 + Size - 1024, true}, {2077, true}, {2076, false},
		}},
		{"counters near 2^64", []op{
			{math.MaxUint64 - Size - 5, true}, {math.MaxUint64 - 1, true}, {math.MaxUint64 - Size, true},
			{math.MaxUint64 - Size - 1, false}, {math.MaxUint64, true}, {math.MaxUint64, false},
			{math.MaxUint64 - 1, false}, {math.MaxUint64 - Size + 1, true}, {math.MaxUint64 - Size, false}, {math.MaxUint64 - 2, true},
		}},
		{"jump straight to 2^64-1", []op{{3, true}, {math.MaxUint64, true}, {3, false}, {math.MaxUint64 - 1, true}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			run(t, grown(), tt.ops)
		})
	}
}

// grown is a window that is Size wide from the start, for the edge cases of the full window.
func grown() *Window {
	w := new(Window)
	w.grow()
	return w
}

// TestSmallWindowGrowsWhenReorderingNeedsIt: a window starts at SmallSize; an authenticated
// packet that only the full window could place grows it and is itself dropped (the small
// window did not record it), as are all counters below the old edge; counters above the edge
// keep what was recorded; the next deep reordering is accepted.
func TestSmallWindowGrowsWhenReorderingNeedsIt(t *testing.T) {
	var w Window
	run(t, &w, []op{{3, true}, {10, true}, {5000, true}, {5000 - SmallSize + 1, true}})
	if w.Grown() {
		t.Fatal("grew without need")
	}
	late := uint64(5000 - SmallSize - 10)
	if !w.Check(late) {
		t.Fatal("Check of a counter only the full window can place must pass, to authenticate it")
	}
	if w.Update(late) {
		t.Fatal("the counter that grew the window was accepted: the small window never recorded it")
	}
	if !w.Grown() {
		t.Fatal("a reordering deeper than SmallSize did not grow the window")
	}
	run(t, &w, []op{
		{late, false}, {11, false}, {5000 - SmallSize, false}, // below the old edge: counted as seen
		{5000 - SmallSize + 1, false}, {5000 - SmallSize + 2, true}, {5000, false}, // recorded before growing
		{6000, true}, {6000 - SmallSize - 5, true}, {3000, false}, // wide now; below the old edge still seen
		{20000, true}, {20000 - Size + 1, true}, {20000 - Size, false},
	})
}

func TestWindowGrowsAtGrowAt(t *testing.T) {
	var w Window
	run(t, &w, []op{{GrowAt - 2, true}, {GrowAt - 3, true}})
	if w.Grown() {
		t.Fatal("grew below GrowAt")
	}
	run(t, &w, []op{{GrowAt, true}, {GrowAt - 1, true}, {GrowAt - 2, false}, {GrowAt - 3, false}, {GrowAt - SmallSize - 100, false}})
	if !w.Grown() {
		t.Fatal("not grown at GrowAt")
	}
	run(t, &w, []op{{GrowAt + Size, true}, {GrowAt + 1, true}, {GrowAt, false}})
}

func TestCheckDoesNotChangeState(t *testing.T) {
	var w Window
	for _, c := range []uint64{3, 1 << 40, 100, math.MaxUint64} {
		if !w.Check(c) || !w.Check(c) {
			t.Fatalf("Check(%d) changed the answer", c)
		}
	}
	if w.Current() != 2 {
		t.Fatalf("Check moved current to %d", w.Current())
	}
	// A forged packet far ahead passes Check but fails authentication, so Update is never
	// called: normal traffic continues.
	run(t, &w, []op{{3, true}, {4, true}})
}

func TestResetForgetsCounters(t *testing.T) {
	var w Window
	run(t, &w, []op{{3, true}, {50000, true}, {GrowAt + 1, true}})
	w.Reset()
	if w.Current() != 2 || w.Grown() {
		t.Fatalf("Current after Reset = %d, grown %v", w.Current(), w.Grown())
	}
	run(t, &w, []op{{2, false}, {3, true}, {3, false}})
}

// TestConcurrentUpdatesAcceptEachCounterOnce races goroutines that all try every counter, as
// several decrypt goroutines would on one tunnel; each counter must be accepted exactly once.
func TestConcurrentUpdatesAcceptEachCounterOnce(t *testing.T) {
	const n = 20000
	const workers = 4
	var w Window
	var accepted [n]atomic.Int32
	var wg sync.WaitGroup
	for g := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), 1))
			for c := uint64(FirstCounter); c < n; c++ {
				// Small local reordering, well inside the window.
				cc := c
				if c+8 < n {
					cc = c + uint64(r.IntN(8))
				}
				for _, x := range []uint64{cc, c} {
					if w.Check(x) && w.Update(x) {
						accepted[x].Add(1)
					}
				}
			}
		}()
	}
	wg.Wait()
	for c := FirstCounter; c < n; c++ {
		if got := accepted[c].Load(); got != 1 {
			t.Fatalf("counter %d accepted %d times", c, got)
		}
	}
}

// model is the obvious specification: a set of seen counters and the highest accepted one,
// a window SmallSize wide until grown, and after growing every counter below floor (the
// small window's edge when it grew) counted as seen.
type model struct {
	seen  map[uint64]bool
	cur   uint64
	wide  bool
	floor uint64
}

func newModel() *model { return &model{seen: map[uint64]bool{}, cur: FirstCounter - 1} }

// late reports a counter only the full window could place while the window is small.
func (m *model) late(c uint64) bool {
	return !m.wide && c >= FirstCounter && c <= m.cur && m.cur-c >= SmallSize && m.cur-c < Size
}

func (m *model) check(c uint64) bool { return m.late(c) || m.acceptable(c) }

func (m *model) acceptable(c uint64) bool {
	if c < FirstCounter || m.seen[c] {
		return false
	}
	if c > m.cur {
		return true
	}
	if !m.wide {
		return m.cur-c < SmallSize
	}
	return m.cur-c < Size && c >= m.floor
}

func (m *model) update(c uint64) bool {
	if late := m.late(c); !m.wide && (late || c >= GrowAt) {
		m.wide = true
		if m.cur >= SmallSize {
			m.floor = m.cur - SmallSize + 1
		}
		if late {
			return false
		}
	}
	if !m.acceptable(c) {
		return false
	}
	m.seen[c] = true
	m.cur = max(m.cur, c)
	return true
}

// FuzzWindowMatchesModel drives the window and the model with the same ops: each 9-byte
// chunk is a mode byte and a delta relative to the current counter, so jumps, edges and
// duplicates all come up often.
func FuzzWindowMatchesModel(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 0, 5, 1, 0, 0, 0, 0, 0, 0, 0x20, 0})
	f.Add([]byte{2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xf0, 1, 0, 0, 0, 0, 0, 0, 0x20, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		var w Window
		m := newModel()
		for len(data) >= 9 {
			mode, delta := data[0], binary.BigEndian.Uint64(data[1:9])
			data = data[9:]
			var c uint64
			switch mode % 4 {
			case 0: // ahead
				c = m.cur + delta%(3*Size)
			case 1: // behind, around the window edge
				c = m.cur - delta%(Size+64)
			case 2: // absolute
				c = delta
			case 3: // just below the edge
				c = m.cur - Size + delta%3
			}
			if got, want := w.Check(c), m.check(c); got != want {
				t.Fatalf("Check(%d) = %v, model %v (cur %d)", c, got, want, m.cur)
			}
			if mode&0x80 != 0 {
				continue // Check only, as for a packet that fails authentication
			}
			if got, want := w.Update(c), m.update(c); got != want {
				t.Fatalf("Update(%d) = %v, model %v (cur %d)", c, got, want, m.cur)
			}
		}
	})
}

// TestRandomWalkMatchesModel is the model test with seeded random traffic, so it runs on
// every `go test` and not only under -fuzz.
func TestRandomWalkMatchesModel(t *testing.T) {
	// Even seeds jump by up to 3*Size and soon pass GrowAt; odd ones jump by up to
	// 3*SmallSize and reach back past the small window's edge, so they grow by reordering.
	for seed := range uint64(20) {
		r := rand.New(rand.NewPCG(seed, 42))
		var w Window
		m := newModel()
		jump, back := 3*Size, uint64(Size)
		if seed%2 == 1 {
			jump, back = 3*SmallSize, SmallSize+uint64(r.IntN(Size-SmallSize))
		}
		for i := 0; i < 20000; i++ {
			var c uint64
			switch r.IntN(10) {
			case 0:
				c = m.cur + uint64(r.IntN(jump))
			case 1:
				c = m.cur - back + uint64(r.IntN(3))
			case 2:
				c = uint64(r.IntN(8))
			default:
				c = m.cur + 1 - uint64(r.IntN(64))
			}
			if got, want := w.Check(c), m.check(c); got != want {
				t.Fatalf("seed %d op %d: Check(%d) = %v, model %v (cur %d)", seed, i, c, got, want, m.cur)
			}
			if got, want := w.Update(c), m.update(c); got != want {
				t.Fatalf("seed %d op %d: Update(%d) = %v, model %v (cur %d)", seed, i, c, got, want, m.cur)
			}
		}
	}
}

func TestCheckAndUpdateDoNotAllocate(t *testing.T) {
	var w Window
	c := uint64(FirstCounter)
	if n := testing.AllocsPerRun(1000, func() {
		if w.Check(c) {
			w.Update(c)
		}
		c++
	}); n != 0 {
		t.Fatalf("%v allocs per packet", n)
	}
}

func BenchmarkInOrder(b *testing.B) {
	var w Window
	b.ReportAllocs()
	c := uint64(FirstCounter)
	for b.Loop() {
		if !w.Check(c) || !w.Update(c) {
			b.Fatal("rejected in-order counter")
		}
		c++
	}
}

func BenchmarkReordered(b *testing.B) {
	var w Window
	b.ReportAllocs()
	c := uint64(FirstCounter) + 64
	for b.Loop() {
		// Every packet arrives a little late relative to a newer one.
		x := c ^ 7
		if w.Check(x) {
			w.Update(x)
		}
		c++
	}
}

func BenchmarkParallel(b *testing.B) {
	var w Window
	var next atomic.Uint64
	next.Store(FirstCounter)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			c := next.Add(1)
			if w.Check(c) {
				w.Update(c)
			}
		}
	})
}
