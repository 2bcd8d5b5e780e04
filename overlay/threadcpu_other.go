//go:build !linux

package overlay

import "time"

// threadCPU has no per-thread clock to read here: the msg 1 budget falls back to its
// fixed estimate (msg1Cost).
func threadCPU() (time.Duration, bool) { return 0, false }
