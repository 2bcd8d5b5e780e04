package overlay

import (
	"testing"
	"time"
)

func TestExtensionAnswersAreRateLimitedPerTunnel(t *testing.T) {
	var l extLimiter
	now := time.Unix(1_700_000_000, 0)
	n := 0
	for range 100 {
		if l.allow(now) {
			n++
		}
	}
	if n != extBurst {
		t.Fatalf("a burst of 100 got %d answers, want %d", n, extBurst)
	}
	now = now.Add(time.Second)
	n = 0
	for range 100 {
		if l.allow(now) {
			n++
		}
	}
	if n != extRate {
		t.Fatalf("a second later %d answers, want %d", n, extRate)
	}
	if l.allow(now.Add(-time.Hour)) {
		t.Fatal("a clock going backwards refilled the bucket")
	}
}
