// Package replay is the per-tunnel anti-replay window (SECURITY-NOTES item 3, NEBULA-WIRE
// §4.3): Check before decrypting, Update only after the AEAD has authenticated the packet,
// so a forged packet can never move the window.
//
// The semantics are Nebula 1.6.1's with a wider window: a counter is acceptable if it is
// above the highest accepted one, or within Size below it and not yet seen. Counters 0, 1
// and 2 belong to the handshake and count as seen from the start.
package replay

import "sync"

// Size is how many counters below the highest accepted one stay acceptable, as in Linux
// WireGuard, which grew to 8192 because of reordering (Nebula 1.6.1 uses 1024). With highest
// accepted counter c, c-Size+1 is still accepted if unseen and c-Size is rejected.
//
// A window starts small (SmallSize, Nebula's 1024, inline) and grows to Size the first time
// it is needed: most tunnels of a lighthouse or a large mesh carry a packet every few
// seconds, and the 1 KiB of a full window was over half of such a tunnel's struct. It grows
// when an authenticated packet arrives that only the full window could have placed (a
// reordering deeper than SmallSize) or once the counter reaches GrowAt (a tunnel that busy
// reorders at Size's depth soon, and 1 KiB is nothing beside its traffic). The packet that
// showed the need is still dropped: while small, the window did not record counters below
// its edge, so on growing they all count as seen.
const Size = 8192

// SmallSize is the window of a tunnel that has not needed Size yet.
const SmallSize = 1024

// GrowAt is the counter from which a window is always Size wide.
const GrowAt = 1 << 16

// FirstCounter is the first counter a peer sends after the handshake.
const FirstCounter = 3

const (
	words      = Size / 64
	smallWords = SmallSize / 64
)

// Window is safe for concurrent use; the zero value is ready, with 0, 1 and 2 seen.
type Window struct {
	mu sync.Mutex
	// current is the highest accepted counter; while it is below FirstCounter nothing was
	// accepted yet and it behaves as if it were FirstCounter-1.
	current uint64
	// big is the full window once grown, nil before. bits[c/64 % len(bits)] bit c%64 is set
	// when counter c, within the window, was seen; bits is small[:] before growing, big[:]
	// after (kept as a slice so the per-packet code has one path).
	big   *[words]uint64
	small [smallWords]uint64
}

// bits is the live bitmap; the caller holds mu.
func (w *Window) bits() []uint64 {
	if w.big != nil {
		return w.big[:]
	}
	return w.small[:]
}

// Check reports whether counter would be accepted now. It changes nothing, so call it before
// spending a decryption on the packet; Update must still confirm afterwards. While the window
// is small, a counter that only the full window could place passes, so that its packet is
// authenticated before it may grow the window; Update then rejects it.
func (w *Window) Check(counter uint64) bool {
	w.mu.Lock()
	ok := w.acceptable(counter, Size)
	w.mu.Unlock()
	return ok
}

// Update marks counter as seen after the packet authenticated. It returns false, changing
// nothing but perhaps the window's width, if the counter is a duplicate or too old, as when
// another goroutine accepted the same counter between this one's Check and Update.
func (w *Window) Update(counter uint64) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.big == nil {
		late := counter >= FirstCounter && counter <= w.current && w.current-counter >= SmallSize && w.current-counter < Size
		if late || counter >= GrowAt {
			w.grow()
		}
		if late {
			return false
		}
	}
	if !w.acceptable(counter, Size) {
		return false
	}
	if counter > w.current {
		w.advance(counter)
	}
	b := w.bits()
	b[(counter/64)%uint64(len(b))] |= 1 << (counter % 64)
	return true
}

// Grown reports whether the window is Size wide.
func (w *Window) Grown() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.big != nil
}

// Current returns the highest accepted counter (2 before any was accepted), for status output.
func (w *Window) Current() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return max(w.current, FirstCounter-1)
}

// Reset forgets every counter, as for a new tunnel, and makes the window small again.
func (w *Window) Reset() {
	w.mu.Lock()
	w.current = 0
	w.big = nil
	w.small = [smallWords]uint64{}
	w.mu.Unlock()
}

// acceptable reports whether counter is new and inside the window; a small window treats
// counters up to limit below current as placeable (Check's pass for Update to decide).
func (w *Window) acceptable(counter, limit uint64) bool {
	if counter < FirstCounter {
		return false
	}
	if counter > w.current {
		return true
	}
	d := w.current - counter
	if w.big == nil {
		if d >= SmallSize {
			return d < limit
		}
		return w.small[(counter/64)%smallWords]&(1<<(counter%64)) == 0
	}
	if d >= Size {
		return false
	}
	return w.big[(counter/64)%words]&(1<<(counter%64)) == 0
}

// grow moves the small window's record into a full one. Counters of the full window below
// the small one's edge were never recorded, so they count as seen. Runs once per tunnel
// (at most Size steps).
func (w *Window) grow() {
	big := new([words]uint64)
	if w.current >= FirstCounter {
		lo := uint64(FirstCounter)
		if w.current-lo >= Size {
			lo = w.current - Size + 1
		}
		for c := lo; ; c++ {
			seen := w.current-c >= SmallSize || w.small[(c/64)%smallWords]&(1<<(c%64)) != 0
			if seen {
				big[(c/64)%words] |= 1 << (c % 64)
			}
			if c == w.current {
				break
			}
		}
	}
	w.big = big
	w.small = [smallWords]uint64{}
}

// advance moves current up to next, clearing the bits of counters current+1 .. next: their
// slots last held counters that are now out of the window.
func (w *Window) advance(next uint64) {
	bits := w.bits()
	n := uint64(len(bits))
	gap := next - w.current
	if gap >= n*64 {
		clear(bits)
		w.current = next
		return
	}
	c := w.current + 1
	for c <= next {
		// Clear from c to the end of its word or to next, whichever comes first.
		bit := c % 64
		k := min(64-bit, next-c+1)
		mask := ^uint64(0)
		if k < 64 {
			mask = (uint64(1)<<k - 1) << bit
		}
		bits[(c/64)%n] &^= mask
		if c+k < c { // next was MaxUint64: the last word is done
			break
		}
		c += k
	}
	w.current = next
}
