package overlay

import (
	"context"
	"fmt"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/meshnode/meshnode/cert"
	"github.com/meshnode/meshnode/cert/certtest"
	"github.com/meshnode/meshnode/handshake"
	"github.com/meshnode/meshnode/overlay/tun/tuntest"
	"github.com/meshnode/meshnode/overlay/udp/udptest"
)

// joinScene is issue 18's lighthouse join, in process: a lighthouse on the udptest network
// and the msg 1s of many distinct genuine hosts (each its own certificate, key and source
// address), as a fleet would send them when it joins.
type joinScene struct {
	lh   *Node
	ca   *certtest.CA
	pool *cert.Pool
	msgs [][]byte
	from []netip.AddrPort
}

// newJoinScene starts a lighthouse with extra YAML for its handshakes section and makes the
// msg 1s of hosts hosts.
func newJoinScene(tb testing.TB, handshakesYAML string, hosts int) *joinScene {
	tb.Helper()
	ca := certtest.NewCA(tb, "join")
	lhHost := ca.NewHost(tb, "lighthouse", "10.64.0.1/10")
	y := fmt.Sprintf("pki:\n  ca: %q\n  cert: %q\n  key: %q\n", ca.PEM, lhHost.PEM, lhHost.KeyPEM)
	y += "lighthouse:\n  am_lighthouse: true\nlisten:\n  port: 4242\ntun:\n  mtu: 1500\n"
	y += "handshakes:\n  try_interval: 100ms\n" + handshakesYAML
	y += "firewall:\n  outbound: [{port: any, proto: any, host: any}]\n  inbound: [{port: any, proto: any, host: any}]\n"
	cfg, err := ParseConfig([]byte(y), "lighthouse.yml")
	if err != nil {
		tb.Fatal(err)
	}
	pki, err := LoadPKI(cfg, time.Now())
	if err != nil {
		tb.Fatal(err)
	}
	net := udptest.NewNetwork(1)
	conn, err := net.Listen(netip.MustParseAddrPort("198.18.0.1:4242"))
	if err != nil {
		tb.Fatal(err)
	}
	n, err := New(cfg, pki, Options{Device: tuntest.NewDeviceQueue("lighthouse", 1500, 64), Conn: conn, Tick: 5 * time.Millisecond})
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = n.Run(ctx) }()
	tb.Cleanup(func() { cancel(); <-done })

	s := &joinScene{lh: n, ca: ca, pool: pki.Pool}
	s.addHosts(tb, hosts)
	return s
}

// addHosts makes the msg 1s of n more hosts.
func (s *joinScene) addHosts(tb testing.TB, n int) {
	tb.Helper()
	first := len(s.msgs)
	for i := first; i < first+n; i++ {
		k := i + 2 // 10.64.0.1 is the lighthouse
		ip := netip.AddrFrom4([4]byte{10, 64 + byte(k>>16), byte(k >> 8), byte(k)})
		h := s.ca.NewHost(tb, fmt.Sprintf("host%d", i), ip.String()+"/10")
		creds, err := handshake.NewCredentials(h.Cert, h.Key)
		if err != nil {
			tb.Fatal(err)
		}
		_, msg1, err := handshake.Initiate(&handshake.Config{Local: creds, Pool: s.pool}, uint32(i+1))
		if err != nil {
			tb.Fatal(err)
		}
		s.msgs = append(s.msgs, msg1)
		s.from = append(s.from, netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 19, byte(i >> 8), byte(i)}), uint16(4242+i>>16)))
	}
}

// feed offers every msg 1 to the lighthouse's receive-path hand-off, never more than half
// a queue ahead of the workers (as initiators' retransmissions would, without the losses),
// and waits until all are answered or within has passed. It returns the wall time taken.
func (s *joinScene) feed(tb testing.TB, within time.Duration) time.Duration {
	q := s.lh.hsq
	ans0 := s.lh.answered()
	start := time.Now()
	for i, m := range s.msgs {
		for len(q.rest) >= msg1Queue/2 {
			time.Sleep(100 * time.Microsecond)
		}
		q.enqueue(m, s.from[i], nil, time.Now())
	}
	for s.lh.answered()-ans0 < float64(len(s.msgs)) {
		if time.Since(start) > within {
			tb.Fatalf("%.0f of %d msg 1s answered within %s", s.lh.answered()-ans0, len(s.msgs), within)
		}
		time.Sleep(200 * time.Microsecond)
	}
	return time.Since(start)
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkJoin is the lighthouse's cost per joining host, as handshakes per CPU-second
// (the process's CPU time, so everything the join costs counts) and per wall second:
//   - serial: one goroutine runs the responder path of each msg 1 (precheck, ReadInit,
//     Respond, candidate, msg 2 and probe sent) and then confirms the tunnel as the
//     host's first authenticated packet would (install, lighthouse hooks);
//   - queue: the msg 1s go through the receive path's hand-off to the handshake workers,
//     with the budget out of the way (msg1_rate: 1000000), so the workers are the bound;
//   - queue-default: the same with the lighthouse's default budget.
func BenchmarkJoin(b *testing.B) {
	const hosts = 2000
	b.Run("serial", func(b *testing.B) {
		s := newJoinScene(b, "", hosts)
		n := s.lh
		b.ReportAllocs()
		cpu0, i := cpuTime(), 0
		for b.Loop() {
			if i == len(s.msgs) {
				b.StopTimer()
				c := cpuTime()
				s.addHosts(b, hosts)
				cpu0 += cpuTime() - c // not the join's
				b.StartTimer()
			}
			job := msg1Job{buf: s.msgs[i], from: s.from[i]}
			i++
			if n.hsq.precheck(job) {
				b.Fatal("refused")
			}
			n.hs.handleMsg1(job.buf, job.from, nil)
			n.hs.mu.Lock()
			var t *tunnel
			for _, c := range n.hs.cands {
				t = c.t
				break
			}
			n.hs.mu.Unlock()
			if t == nil {
				b.Fatal("no candidate")
			}
			n.hs.confirm(t, time.Now())
		}
		cpu := cpuTime() - cpu0
		b.ReportMetric(float64(i)/cpu.Seconds(), "hs/cpu-s")
	})
	for _, bc := range []struct{ name, yaml string }{
		{"queue", "  msg1_rate: 1000000\n"},
		{"queue-default", ""},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				b.StopTimer()
				s := newJoinScene(b, bc.yaml, hosts)
				time.Sleep(100 * time.Millisecond) // the burst refills
				b.StartTimer()
				cpu0 := cpuTime()
				wall := s.feed(b, time.Minute)
				cpu := cpuTime() - cpu0
				b.ReportMetric(float64(hosts)/wall.Seconds(), "hs/s")
				b.ReportMetric(float64(hosts)/cpu.Seconds(), "hs/cpu-s")
				b.ReportMetric(cpu.Seconds()/wall.Seconds(), "cores")
				b.ReportMetric(s.lh.hsq.rate, "budget/s")
			}
		})
	}
}
