package gcpolicy

import (
	"runtime"
	"runtime/debug"
	"testing"
	"time"
)

func TestPercentBoundsHeadroom(t *testing.T) {
	for _, c := range []struct {
		live uint64
		want int
	}{
		{0, 100}, {10 << 20, 100}, {Floor, 100},
		{Floor + 1, 95}, // rounded down to a multiple of 5
		{2 * Floor, 50}, {3 * Floor, 30}, {4 * Floor, 25},
		{100 * Floor, MinPercent}, // 6.4 GB: a quarter, never less
	} {
		if got := Percent(c.live); got != c.want {
			t.Errorf("Percent(%d MiB) = %d, want %d", c.live>>20, got, c.want)
		}
		// The growth allowed is at least Floor (to the rounding) and at least a quarter.
		if c.live > Floor {
			grow := c.live * uint64(Percent(c.live)) / 100
			if grow < Floor*9/10 && grow < c.live/4 {
				t.Errorf("live %d MiB: growth %d MiB", c.live>>20, grow>>20)
			}
		}
	}
}

// TestPolicyFollowsTheLiveHeap holds 200 MiB of live heap (past 3*Floor) and expects the policy to
// lower the percent after a collection, then to restore the old percent on Stop.
func TestPolicyFollowsTheLiveHeap(t *testing.T) {
	old := debug.SetGCPercent(100)
	defer debug.SetGCPercent(old)
	p := start()
	defer p.Stop()
	hold := make([][]byte, 0, 200)
	for range 200 {
		hold = append(hold, make([]byte, 1<<20))
	}
	deadline := time.Now().Add(10 * time.Second)
	// A collection that ran while the heap was still being filled saw less of it.
	for p.Percent() > Percent(200<<20) && time.Now().Before(deadline) {
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
	if got, want := p.Percent(), Percent(200<<20); got > want+5 || got < MinPercent {
		t.Fatalf("percent %d with 200 MiB live, want about %d", got, want)
	}
	runtime.KeepAlive(hold)
	p.Stop()
	if got := debug.SetGCPercent(old); got != 100 {
		t.Fatalf("Stop left the percent at %d, want the 100 it found", got)
	}
}

func TestEnvironmentWins(t *testing.T) {
	t.Setenv("GOGC", "200")
	if p := Start(); p != nil {
		p.Stop()
		t.Fatal("policy started with GOGC set")
	}
	t.Setenv("GOGC", "")
	t.Setenv("GOMEMLIMIT", "1GiB")
	if p := Start(); p != nil {
		p.Stop()
		t.Fatal("policy started with GOMEMLIMIT set")
	}
}
