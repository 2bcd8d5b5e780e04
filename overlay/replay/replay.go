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
const Size = 8192

// FirstCounter is the first counter a peer sends after the handshake.
const FirstCounter = 3

const words = Size / 64

// Window is safe for concurrent use; the zero value is ready, with 0, 1 and 2 seen.
type Window struct {
	mu sync.Mutex
	// current is the highest accepted counter; while it is below FirstCounter nothing was
	// accepted yet and it behaves as if it were FirstCounter-1.
	current uint64
	// bits[c/64 % words] bit c%64 is set when counter c, within the window, was seen.
	bits [words]uint64
}

// Check reports whether counter would be accepted now. It changes nothing, so call it before
// spending a decryption on the packet; Update must still confirm afterwards.
func (w *Window) Check(counter uint64) bool {
	w.mu.Lock()
	ok := w.acceptable(counter)
	w.mu.Unlock()
	return ok
}

// Update marks counter as seen after the packet authenticated. It returns false, changing
// nothing, if the counter is a duplicate or too old, as when another goroutine accepted the
// same counter between this one's Check and Update.
func (w *Window) Update(counter uint64) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.acceptable(counter) {
		return false
	}
	if counter > w.current {
		w.advance(counter)
	}
	w.bits[(counter/64)%words] |= 1 << (counter % 64)
	return true
}

// Current returns the highest accepted counter (2 before any was accepted), for status output.
func (w *Window) Current() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return max(w.current, FirstCounter-1)
}

// Reset forgets every counter, as for a new tunnel.
func (w *Window) Reset() {
	w.mu.Lock()
	w.current = 0
	w.bits = [words]uint64{}
	w.mu.Unlock()
}

func (w *Window) acceptable(counter uint64) bool {
	if counter < FirstCounter {
		return false
	}
	if counter > w.current {
		return true
	}
	if w.current-counter >= Size {
		return false
	}
	return w.bits[(counter/64)%words]&(1<<(counter%64)) == 0
}

// advance moves current up to next, clearing the bits of counters current+1 .. next: their
// slots last held counters that are now out of the window.
func (w *Window) advance(next uint64) {
	gap := next - w.current
	if gap >= Size {
		w.bits = [words]uint64{}
		w.current = next
		return
	}
	c := w.current + 1
	for c <= next {
		// Clear from c to the end of its word or to next, whichever comes first.
		bit := c % 64
		n := min(64-bit, next-c+1)
		mask := ^uint64(0)
		if n < 64 {
			mask = (uint64(1)<<n - 1) << bit
		}
		w.bits[(c/64)%words] &^= mask
		if c+n < c { // next was MaxUint64: the last word is done
			break
		}
		c += n
	}
	w.current = next
}
