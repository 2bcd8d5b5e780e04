package fleet

import (
	"context"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/meshnode/meshnode/lighthouse"
	"github.com/meshnode/meshnode/overlay/header"
)

// latencies collects durations for percentiles.
type latencies struct{ d []time.Duration }

func newLatencies(n int) *latencies { return &latencies{d: make([]time.Duration, 0, min(n, 1<<20))} }

func (l *latencies) add(d time.Duration) { l.d = append(l.d, d) }

// ms is the q-quantile (nearest rank) in milliseconds, 0 without samples.
func (l *latencies) ms(q float64) float64 {
	if len(l.d) == 0 {
		return 0
	}
	slices.Sort(l.d)
	k := int(q*float64(len(l.d))+0.999999) - 1
	k = max(0, min(k, len(l.d)-1))
	return float64(l.d[k]) / float64(time.Millisecond)
}

// QueryStats describe one Query run.
type QueryStats struct {
	Offered  float64 `json:"offered"`   // queries per second asked for
	Sent     int     `json:"sent"`      //
	Answered int     `json:"answered"`  // replies naming the host asked about
	Correct  int     `json:"correct"`   // ... which held that host's address
	TimedOut int     `json:"timed_out"` // no reply within the timeout
	Seconds  float64 `json:"seconds"`
	Rate     float64 `json:"rate"` // answered per second
	P50ms    float64 `json:"p50_ms"`
	P99ms    float64 `json:"p99_ms"`
	CPU      float64 `json:"cpu_s"`     // the target's CPU seconds meanwhile (filled by the caller)
	Drops    int64   `json:"udp_drops"` // UDP receive-buffer drops in the namespace meanwhile (filled by the caller)
}

type queryCollector struct {
	mu       sync.Mutex
	lat      *latencies
	answered int
	correct  int
}

func queryKey(querier, target int) uint64 { return uint64(querier)<<32 | uint64(uint32(target)) }

// Query sends rate HostQuery per second for d, each from a random joined host for another
// random joined host, and times the HostQueryReply; a reply counts as correct when it holds
// the queried host's address. Replies later than timeout count as timed out.
func (s *Sim) Query(ctx context.Context, up []int, rate float64, d, timeout time.Duration) QueryStats {
	st := QueryStats{Offered: rate}
	if len(up) < 2 || rate <= 0 {
		return st
	}
	qc := &queryCollector{lat: newLatencies(int(rate * d.Seconds()))}
	s.mu.Lock()
	s.qstats = qc
	clear(s.queries)
	s.mu.Unlock()
	wait := pace(rate)
	t0 := time.Now()
	for k := 0; time.Since(t0) < d && ctx.Err() == nil; k++ {
		wait(k)
		q := up[rand.IntN(len(up))]
		t := up[rand.IntN(len(up))]
		if q == t {
			continue
		}
		s.mu.Lock()
		s.queries[queryKey(q, t)] = time.Now()
		s.mu.Unlock()
		m := lighthouse.Meta{Type: lighthouse.HostQuery, VpnIP: HostVPN(t)}
		s.seal(q, header.LightHouse, 0, m.Marshal(nil))
		st.Sent++
	}
	sent := time.Since(t0)
	// Stragglers: wait for the last replies, then count what is left as timed out.
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		s.mu.Lock()
		left := len(s.queries)
		s.mu.Unlock()
		if left == 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	s.mu.Lock()
	s.qstats = nil
	s.mu.Unlock()
	qc.mu.Lock()
	defer qc.mu.Unlock()
	st.Answered, st.Correct = qc.answered, qc.correct
	st.TimedOut = st.Sent - st.Answered
	st.Seconds = sent.Seconds()
	st.Rate = float64(st.Answered) / st.Seconds
	st.P50ms, st.P99ms = qc.lat.ms(0.50), qc.lat.ms(0.99)
	return st
}

// queryReply matches a HostQueryReply to host i's query; replies after the timeout (the
// collector is gone) and answers to queries never sent are ignored.
func (s *Sim) queryReply(i int, m *lighthouse.Meta) {
	t := int(hostIndex(m.VpnIP.Unmap()))
	s.mu.Lock()
	qc := s.qstats
	sent, ok := s.queries[queryKey(i, t)]
	if ok {
		delete(s.queries, queryKey(i, t))
	}
	s.mu.Unlock()
	if !ok || qc == nil {
		return
	}
	d := time.Since(sent)
	want := s.Addr(t)
	correct := slices.Contains(m.V4, want)
	qc.mu.Lock()
	if d <= 0 {
		d = 1
	}
	qc.lat.add(d)
	qc.answered++
	if correct {
		qc.correct++
	}
	qc.mu.Unlock()
}

// hostIndex inverts HostVPN; it returns -1 for an address outside the fleet.
func hostIndex(a netip.Addr) int {
	if !a.Is4() || !VPNNet.Contains(a) {
		return -1
	}
	b := a.As4()
	v := int(b[1])<<16 | int(b[2])<<8 | int(b[3])
	return v - firstHost
}
