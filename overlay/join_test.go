package overlay

import (
	"testing"
	"time"
)

// TestLighthouseJoinNotCappedByBudget is issue 18's guard: a lighthouse's default msg 1
// budget must let a fleet join at the speed of its cores, not at a fixed rate far below
// them (500/s was a fifth of what one core does). It measures the CPU time per answered
// msg 1 during a join of distinct genuine hosts and fails when the budget is below half of
// what the cores could answer at that cost, or when the workers spent most of the join
// waiting for it.
func TestLighthouseJoinNotCappedByBudget(t *testing.T) {
	const hosts = 1200 // more than the burst, so the rate matters
	s := newJoinScene(t, "", hosts)
	q := s.lh.hsq
	time.Sleep(100 * time.Millisecond) // the burst refills
	cpu0, waited0 := cpuTime(), q.waited.Load()
	wall := s.feed(t, time.Minute)
	cpu := cpuTime() - cpu0
	waited := time.Duration(q.waited.Load() - waited0)
	perHS := cpu / hosts // everything the join cost the process, so an overestimate
	capacity := float64(q.workers) / perHS.Seconds()
	t.Logf("%d hosts in %s (%.0f/s), %s CPU per msg 1, capacity %.0f/s on %d cores, budget %.0f/s, workers waited %s",
		hosts, wall.Round(time.Millisecond), hosts/wall.Seconds(), perHS.Round(time.Microsecond), capacity, q.workers, q.rate,
		waited.Round(time.Millisecond))
	if q.rate < capacity/2 {
		t.Errorf("the lighthouse's default budget is %.0f msg 1/s, under half of what its %d cores answer (%.0f/s)", q.rate, q.workers, capacity)
	}
	if share := waited.Seconds() / (float64(q.workers) * wall.Seconds()); share > 0.5 {
		t.Errorf("the workers spent %.0f%% of the join waiting for the budget", 100*share)
	}
}
