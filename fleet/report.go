package fleet

import (
	"fmt"
	"strings"
)

// Result is one run of the generator against one target, as cmd/mesh-fleet writes it.
type Result struct {
	Target      string      `json:"target"` // a label: meshnode, nebula-1.6.1, ...
	Mode        string      `json:"mode"`   // lighthouse or host
	Hosts       int         `json:"hosts"`
	Concurrency int         `json:"concurrency"`
	Load        string      `json:"load,omitempty"` // /proc/loadavg at the start
	Base        ProcSample  `json:"base"`           // the target before the first handshake
	Join        *JoinStats  `json:"join,omitempty"`
	Milestones  []Milestone `json:"milestones,omitempty"`
	End         ProcSample  `json:"end"` // the target when the join ended (some hosts may have failed)
	Ramp        []JoinStats `json:"ramp,omitempty"`
	Query       *QueryStats `json:"query,omitempty"`
	Idle        *IdleStats  `json:"idle,omitempty"`
	Counters    Snapshot    `json:"counters"`
	Self        ProcSample  `json:"self"`            // the generator's own CPU and memory at the end
	Pprof       string      `json:"pprof,omitempty"` // where the script put a heap profile
}

// Milestone is the state when the Hosts-th host joined.
type Milestone struct {
	Hosts   int        `json:"hosts"`
	Seconds float64    `json:"seconds"` // since the join began
	Proc    ProcSample `json:"proc"`
}

// PerHostKB is the target's RSS above its idle RSS, per joined host, in KiB.
func (r *Result) PerHostKB(m Milestone) float64 {
	if m.Hosts == 0 {
		return 0
	}
	return float64(m.Proc.RSSKB-r.Base.RSSKB) / float64(m.Hosts)
}

// IdleStats are the target's CPU while the fleet only answers its Test requests.
type IdleStats struct {
	Seconds float64    `json:"seconds"`
	CPU     float64    `json:"cpu_s"`
	Proc    ProcSample `json:"proc"` // at the end
}

// Snapshot is Counters at one moment.
type Snapshot struct {
	TestRequests   int64 `json:"test_requests"`
	LighthouseMsgs int64 `json:"lighthouse_msgs"`
	Punches        int64 `json:"punches"`
	UpdateAcks     int64 `json:"update_acks"`
	RecvErrors     int64 `json:"recv_errors"`
	CloseTunnels   int64 `json:"close_tunnels"`
	Undecryptable  int64 `json:"undecryptable"`
}

// Snapshot reads the counters.
func (c *Counters) Snapshot() Snapshot {
	return Snapshot{c.TestRequests.Load(), c.LighthouseMsgs.Load(), c.Punches.Load(), c.UpdateAcks.Load(),
		c.RecvErrors.Load(), c.CloseTunnels.Load(), c.Undecryptable.Load()}
}

// Behind reports whether a ramp step fell behind: a handshake needed a retransmission
// (its answer took longer than the retry interval) for more than 1% of hosts, one failed,
// or the answered rate stayed under 90% of the offered one.
func (j *JoinStats) Behind() bool {
	return j.Failed > 0 || float64(j.Late) > 0.01*float64(j.Hosts) || (j.Offered > 0 && j.Rate < 0.9*j.Offered)
}

func mib(kb int64) string { return fmt.Sprintf("%.1f", float64(kb)/1024) }

func ratio(a, b float64) string {
	if b == 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f", a/b)
}

// Tables renders results as markdown tables: lighthouse joins, ramps, queries and plain
// hosts, one row per target and size.
func Tables(results []Result) string {
	var b strings.Builder
	var join, ramp, query, host []Result
	for _, r := range results {
		switch {
		case r.Mode == "host":
			host = append(host, r)
		case len(r.Ramp) > 0:
			ramp = append(ramp, r)
		default:
			join = append(join, r)
			if r.Query != nil {
				query = append(query, r)
			}
		}
	}
	if len(join) > 0 {
		b.WriteString("Lighthouse: hosts joining (as fast as the concurrency allows)\n\n")
		b.WriteString("| target | hosts joined | time s | joined/s | lighthouse CPU s | handshakes per CPU s | retransmissions | failed | UDP drops | RSS MiB | peak RSS MiB | KiB per host |\n")
		b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|\n")
		for _, r := range join {
			for _, m := range r.Milestones {
				cpu := m.Proc.CPU - r.Base.CPU
				fmt.Fprintf(&b, "| %s | %d | %.1f | %.0f | %.1f | %s | | | | %s | %s | %.2f |\n", r.Target, m.Hosts, m.Seconds,
					float64(m.Hosts)/m.Seconds, cpu, ratio(float64(m.Hosts), cpu), mib(m.Proc.RSSKB), mib(m.Proc.HWMKB), r.PerHostKB(m))
			}
			j := r.Join
			end := " | | |"
			if r.End.RSSKB > 0 && j.Joined > 0 {
				end = fmt.Sprintf(" %s | %s | %.2f |", mib(r.End.RSSKB), mib(r.End.HWMKB), float64(r.End.RSSKB-r.Base.RSSKB)/float64(j.Joined))
			}
			fmt.Fprintf(&b, "| %s (all) | %d of %d | %.1f | %.0f | %.1f | %s | %d | %d | %d |%s\n", r.Target, j.Joined, j.Hosts, j.Seconds,
				j.Rate, j.CPU, ratio(float64(j.Joined), j.CPU), j.Retries, j.Failed, j.Drops, end)
		}
		b.WriteString("\n")
	}
	if len(ramp) > 0 {
		b.WriteString("Lighthouse: handshakes offered at a fixed rate, fresh hosts per step (behind: >1% needed a retransmission, one failed, or <90% of the offered rate)\n\n")
		b.WriteString("| target | offered/s | joined/s | handshakes per CPU s | lighthouse CPU (cores) | generator CPU (cores) | p50 ms | p99 ms | retransmitted | failed | UDP drops | |\n")
		b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|\n")
		for _, r := range ramp {
			for _, s := range r.Ramp {
				mark := ""
				if s.Behind() {
					mark = "behind"
				}
				fmt.Fprintf(&b, "| %s | %.0f | %.0f | %s | %.2f | %.2f | %.1f | %.1f | %d | %d | %d | %s |\n", r.Target, s.Offered, s.Rate,
					ratio(float64(s.Joined), s.CPU), s.CPU/s.Seconds, s.SelfCPU/s.Seconds, s.P50ms, s.P99ms, s.Late, s.Failed, s.Drops, mark)
			}
		}
		b.WriteString("\n")
	}
	if len(query) > 0 {
		b.WriteString("Lighthouse: HostQuery for random joined hosts, from random joined hosts\n\n")
		b.WriteString("| target | hosts | offered/s | answered/s | correct | timed out | p50 ms | p99 ms | lighthouse CPU s per 1000 | UDP drops |\n")
		b.WriteString("|---|---|---|---|---|---|---|---|---|---|\n")
		for _, r := range query {
			q := r.Query
			fmt.Fprintf(&b, "| %s | %d | %.0f | %.0f | %d of %d | %d | %.2f | %.2f | %s | %d |\n", r.Target, r.Join.Joined, q.Offered, q.Rate,
				q.Correct, q.Answered, q.TimedOut, q.P50ms, q.P99ms, perK(q.CPU, q.Answered), q.Drops)
		}
		b.WriteString("\n")
	}
	if len(host) > 0 {
		b.WriteString("Plain host (not a lighthouse) holding tunnels to simulated peers\n\n")
		b.WriteString("| target | tunnels | join s | RSS MiB | peak RSS MiB | KiB per tunnel | idle CPU % of a core | idle s |\n")
		b.WriteString("|---|---|---|---|---|---|---|---|\n")
		for _, r := range host {
			var per float64
			if r.Join.Joined > 0 {
				per = float64(r.Idle.Proc.RSSKB-r.Base.RSSKB) / float64(r.Join.Joined)
			}
			fmt.Fprintf(&b, "| %s | %d | %.1f | %s | %s | %.2f | %.2f | %.0f |\n", r.Target, r.Join.Joined, r.Join.Seconds,
				mib(r.Idle.Proc.RSSKB), mib(r.Idle.Proc.HWMKB), per, 100*r.Idle.CPU/r.Idle.Seconds, r.Idle.Seconds)
		}
		b.WriteString("\n")
	}
	return b.String()
}

func perK(cpu float64, n int) string {
	if n == 0 {
		return "-"
	}
	return fmt.Sprintf("%.3f", cpu*1000/float64(n))
}
