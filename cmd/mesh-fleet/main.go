// Command mesh-fleet is the fleet-scale load generator of issue 18: many simulated hosts
// handshake with one target daemon (meshnode or Nebula, as a lighthouse or a plain host),
// send their lighthouse updates, answer its Test requests and time HostQuery round trips,
// while the target's CPU and memory are read from /proc. scripts/fleet.sh runs it against
// each target in a network namespace and prints the tables (`mesh-fleet table`).
//
//	mesh-fleet -pki DIR -n N -gen                  make (or extend) the cached fleet and exit
//	mesh-fleet -pki DIR -n N -target A:P -pid PID  run, print JSON (or -format markdown)
//	mesh-fleet table RESULT.json...                markdown tables of several runs
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/meshnode/meshnode/fleet"
	"github.com/meshnode/meshnode/handshake"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "table" {
		if err := table(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "mesh-fleet:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "mesh-fleet:", err)
		os.Exit(1)
	}
}

type options struct {
	pki, target, label, mode, format, out, cipher   string
	n, pid, concurrency, sockets, tries             int
	gen                                             bool
	rate, queryRate                                 float64
	milestones, ramp                                string
	rampStep, queryTime, queryTimeout, idle, update time.Duration
	retryAfter, limit                               time.Duration
}

func run(args []string) error {
	var o options
	f := flag.NewFlagSet("mesh-fleet", flag.ContinueOnError)
	f.StringVar(&o.pki, "pki", "fleet-pki", "directory of the cached fleet PKI (made on first use)")
	f.IntVar(&o.n, "n", 10000, "simulated hosts")
	f.BoolVar(&o.gen, "gen", false, "only make (or extend) the fleet PKI in -pki and exit")
	f.StringVar(&o.target, "target", "127.0.0.1:4242", "the target daemon's underlay address:port")
	f.StringVar(&o.label, "label", "target", "the target's name in the results")
	f.IntVar(&o.pid, "pid", 0, "the target's PID, for CPU and memory from /proc (0: not measured)")
	f.StringVar(&o.mode, "mode", "lighthouse", "lighthouse (updates and queries) or host (tunnels only, then idle)")
	f.StringVar(&o.cipher, "cipher", "aes", "the target's cipher: aes or chachapoly")
	f.IntVar(&o.concurrency, "concurrency", 128, "handshakes in flight at most")
	f.Float64Var(&o.rate, "rate", 0, "handshakes started per second (0: as fast as -concurrency allows)")
	f.IntVar(&o.sockets, "sockets", 4, "UDP sockets the hosts share (one receive goroutine each)")
	f.DurationVar(&o.retryAfter, "retry", time.Second, "wait before the first msg 1 retransmission (then linear backoff)")
	f.IntVar(&o.tries, "tries", 5, "msg 1 sends before a host counts as failed")
	f.StringVar(&o.milestones, "milestones", "10000,50000,100000", "join counts at which the target is sampled")
	f.StringVar(&o.ramp, "ramp", "", "instead of one join: steps of handshakes/s (e.g. 250,500,1000,2000), fresh hosts per step, stopping after the first step that falls behind")
	f.DurationVar(&o.rampStep, "ramp-step", 4*time.Second, "length of a ramp step")
	f.Float64Var(&o.queryRate, "query-rate", 2000, "lighthouse mode: HostQuery per second after the join (0: none)")
	f.DurationVar(&o.queryTime, "query-time", 10*time.Second, "how long queries are sent")
	f.DurationVar(&o.queryTimeout, "query-timeout", 2*time.Second, "a query reply later than this is timed out")
	f.DurationVar(&o.update, "update-interval", time.Minute, "lighthouse mode: each host re-sends its update this often (Nebula's lighthouse.interval; 0: once)")
	f.DurationVar(&o.idle, "idle", 30*time.Second, "host mode: how long the target's idle CPU is measured after the join")
	f.DurationVar(&o.limit, "limit", 15*time.Minute, "the whole run ends after this, whatever its phase")
	f.StringVar(&o.format, "format", "json", "json or markdown")
	f.StringVar(&o.out, "o", "", "write the result here instead of stdout")
	if err := f.Parse(args); err != nil {
		return err
	}
	if o.mode != "lighthouse" && o.mode != "host" {
		return fmt.Errorf("-mode %q: want lighthouse or host", o.mode)
	}
	if o.n <= 0 {
		return errors.New("-n must be positive")
	}
	steps, err := floats(o.ramp)
	if err != nil {
		return fmt.Errorf("-ramp: %w", err)
	}
	need := o.n
	if len(steps) > 0 {
		need = 0
		for _, r := range steps {
			need += int(r*o.rampStep.Seconds()) + 1
		}
	}
	t0 := time.Now()
	pki, err := fleet.Load(o.pki, need)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "mesh-fleet: %d hosts ready in %s (%.1fs)\n", need, o.pki, time.Since(t0).Seconds())
	if o.gen {
		return nil
	}
	res, err := measure(o, pki, steps)
	if err != nil {
		return err
	}
	var out []byte
	if o.format == "markdown" {
		out = []byte(fleet.Tables([]fleet.Result{*res}))
	} else {
		out, _ = json.MarshalIndent(res, "", "  ")
		out = append(out, '\n')
	}
	if o.out == "" {
		_, err = os.Stdout.Write(out)
		return err
	}
	return os.WriteFile(o.out, out, 0o644)
}

func measure(o options, pki *fleet.PKI, steps []float64) (*fleet.Result, error) {
	target, err := parseAddrPort(o.target)
	if err != nil {
		return nil, err
	}
	cipher, err := handshake.ParseCipher(o.cipher)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.limit)
	defer cancel()
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	raiseNoFile()
	sim, err := fleet.New(fleet.Options{Target: target, PKI: pki, Cipher: cipher, Sockets: o.sockets,
		RetryAfter: o.retryAfter, Tries: o.tries, Lighthouse: o.mode == "lighthouse", UpdateInterval: o.update})
	if err != nil {
		return nil, err
	}
	defer sim.Close()
	sample := func() fleet.ProcSample {
		if o.pid == 0 {
			return fleet.ProcSample{}
		}
		s, err := fleet.ReadProc(o.pid)
		if err != nil {
			fmt.Fprintln(os.Stderr, "mesh-fleet: target:", err)
		}
		return s
	}
	res := &fleet.Result{Target: o.label, Mode: o.mode, Hosts: o.n, Concurrency: o.concurrency, Base: sample()}
	if la, err := os.ReadFile("/proc/loadavg"); err == nil {
		res.Load = strings.TrimSpace(string(la))
	}
	logf := func(format string, a ...any) { fmt.Fprintf(os.Stderr, "mesh-fleet: "+o.label+": "+format+"\n", a...) }

	self := func() float64 { s, _ := fleet.ReadProc(os.Getpid()); return s.CPU }
	drops := func() int64 { d, _ := fleet.UDPRcvbufErrors(); return d }

	if len(steps) > 0 {
		from := 0
		for _, r := range steps {
			n := int(r * o.rampStep.Seconds())
			c0, s0, d0 := sample(), self(), drops()
			st := sim.Join(ctx, from, from+n, max(o.concurrency, int(r)), r, nil)
			st.CPU, st.SelfCPU, st.Drops = sample().CPU-c0.CPU, self()-s0, drops()-d0
			st.PerCPUs = perCPU(st.Joined, st.CPU)
			res.Ramp = append(res.Ramp, st)
			logf("ramp %.0f/s: %d joined at %.0f/s, %d late, %d failed, %.2fs CPU (generator %.2fs), %d UDP drops", r, st.Joined, st.Rate, st.Late, st.Failed, st.CPU, st.SelfCPU, st.Drops)
			from += n
			if st.Behind() || ctx.Err() != nil {
				break
			}
		}
		res.Counters = sim.C.Snapshot()
		res.Self, _ = fleet.ReadProc(os.Getpid())
		return res, nil
	}

	marks, err := ints(o.milestones)
	if err != nil {
		return nil, fmt.Errorf("-milestones: %w", err)
	}
	marks = slices.DeleteFunc(append(marks, o.n), func(m int) bool { return m > o.n })
	slices.Sort(marks)
	mi := make(chan fleet.Milestone, len(marks))
	s0, d0 := self(), drops()
	var mu sync.Mutex
	var next int
	var joined atomic.Int64
	t0 := time.Now()
	// A line every 10 s, so a slow join shows its pace while it runs.
	tick, joinDone := time.NewTicker(10*time.Second), make(chan struct{})
	defer tick.Stop()
	go func() {
		for {
			select {
			case <-tick.C:
				logf("%d joined after %.0fs", joined.Load(), time.Since(t0).Seconds())
			case <-joinDone:
				return
			}
		}
	}()
	progress := func(n int) {
		joined.Store(int64(n))
		// Receive goroutines report concurrently, so counts may arrive a little out of order.
		mu.Lock()
		defer mu.Unlock()
		if next < len(marks) && n >= marks[next] {
			mi <- fleet.Milestone{Hosts: marks[next], Seconds: time.Since(t0).Seconds(), Proc: sample()}
			logf("%d joined in %.1fs", marks[next], time.Since(t0).Seconds())
			for next < len(marks) && marks[next] <= n {
				next++
			}
		}
	}
	st := sim.Join(ctx, 0, o.n, o.concurrency, o.rate, progress)
	close(joinDone)
	close(mi)
	for m := range mi {
		if len(res.Milestones) == 0 || res.Milestones[len(res.Milestones)-1].Hosts != m.Hosts {
			res.Milestones = append(res.Milestones, m)
		}
	}
	end := sample()
	st.CPU, st.SelfCPU, st.Drops = end.CPU-res.Base.CPU, self()-s0, drops()-d0
	res.End = end
	st.PerCPUs = perCPU(st.Joined, st.CPU)
	res.Join = &st
	logf("join: %d of %d in %.1fs (%.0f/s), %d retransmissions, %d failed, %d UDP drops", st.Joined, st.Hosts, st.Seconds, st.Rate, st.Retries, st.Failed, st.Drops)
	var up []int
	for i := range o.n {
		if sim.Up(i) {
			up = append(up, i)
		}
	}
	if o.mode == "lighthouse" && o.queryRate > 0 && ctx.Err() == nil {
		time.Sleep(time.Second) // the last updates are in before the first query
		c0, d0 := sample(), drops()
		q := sim.Query(ctx, up, o.queryRate, o.queryTime, o.queryTimeout)
		q.CPU, q.Drops = sample().CPU-c0.CPU, drops()-d0
		res.Query = &q
		logf("queries: %d sent, %d answered (%d correct), %d timed out, p50 %.2fms p99 %.2fms, %d UDP drops", q.Sent, q.Answered, q.Correct, q.TimedOut, q.P50ms, q.P99ms, q.Drops)
	}
	if o.mode == "host" && ctx.Err() == nil {
		c0 := sample()
		t := time.Now()
		select {
		case <-time.After(o.idle):
		case <-ctx.Done():
		}
		p := sample()
		res.Idle = &fleet.IdleStats{Seconds: time.Since(t).Seconds(), CPU: p.CPU - c0.CPU, Proc: p}
		logf("idle %.0fs: %.2fs CPU, RSS %d KiB", res.Idle.Seconds, res.Idle.CPU, p.RSSKB)
	}
	res.Counters = sim.C.Snapshot()
	res.Self, _ = fleet.ReadProc(os.Getpid())
	return res, nil
}

func table(files []string) error {
	var rs []fleet.Result
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		var r fleet.Result
		if err := json.Unmarshal(b, &r); err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
		rs = append(rs, r)
	}
	fmt.Print(fleet.Tables(rs))
	return nil
}

func perCPU(n int, cpu float64) float64 {
	if cpu <= 0 {
		return 0
	}
	return float64(n) / cpu
}

func floats(s string) ([]float64, error) {
	var out []float64
	for f := range strings.SplitSeq(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		v, err := strconv.ParseFloat(f, 64)
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("%q is not a positive number", f)
		}
		out = append(out, v)
	}
	return out, nil
}

func ints(s string) ([]int, error) {
	fs, err := floats(s)
	out := make([]int, len(fs))
	for i, v := range fs {
		out[i] = int(v)
	}
	return out, err
}

func parseAddrPort(s string) (netip.AddrPort, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return ap, fmt.Errorf("-target: %w", err)
	}
	return ap, nil
}
