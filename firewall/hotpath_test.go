package firewall

import (
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// thousandRules is a config of 1,000 inbound rules of every shape, none of which admits
// web1's TCP to port 9999: a miss walks every rule that could apply.
func thousandRules() Config {
	var rules []Rule
	for i := 0; i < 600; i++ {
		rules = append(rules, Rule{Port: fmt.Sprint(1000 + i), Proto: "tcp", Group: fmt.Sprintf("g%d", i)})
	}
	for i := 0; i < 200; i++ {
		rules = append(rules, Rule{Port: fmt.Sprintf("%d-%d", 9000+i, 10000+i), Proto: "tcp", Groups: []string{"web", fmt.Sprintf("x%d", i)}})
	}
	for i := 0; i < 200; i++ {
		rules = append(rules, Rule{Port: "any", Proto: "any", CIDR: fmt.Sprintf("10.43.%d.0/24", i)})
	}
	return Config{Inbound: rules, Outbound: []Rule{{Port: "any", Proto: "any", Host: "any"}}}
}

func TestThousandRulesStillDecideCorrectly(t *testing.T) {
	f := newFW(t, thousandRules(), newClock())
	if v := f.Verdict(tcpIn("10.42.1.5", 1, 9999, tcpSYN), Inbound, web); v != (Verdict{Drop, ReasonNoRule}) {
		t.Fatalf("miss: %v", v)
	}
	g := NewPeer("g", []netip.Prefix{pfx("10.42.9.9/16")}, nil, []string{"g599"}, "", "")
	if v := f.Verdict(tcpIn("10.42.9.9", 1, 1599, tcpSYN), Inbound, g); v != (Verdict{Accept, ReasonRule}) {
		t.Fatalf("last exact rule: %v", v)
	}
	x := NewPeer("x", []netip.Prefix{pfx("10.42.9.8/16")}, nil, []string{"web", "x199"}, "", "")
	if v := f.Verdict(tcpIn("10.42.9.8", 1, 10199, tcpSYN), Inbound, x); v != (Verdict{Accept, ReasonRule}) {
		t.Fatalf("last range rule: %v", v)
	}
}

func TestVerdictDoesNotAllocate(t *testing.T) {
	clk := newClock()
	f := newFW(t, thousandRules(), clk)
	hit := tcpIn("10.42.1.5", 40000, 80, tcpACK)
	f.Verdict(tcpOut("10.42.1.5", 80, 40000, tcpSYN), Outbound, web) // opens the flow hit uses
	miss := tcpIn("10.42.1.5", 1, 9999, tcpSYN)
	frag := v4{src: "10.42.1.5", dst: local, proto: ProtoUDP, id: 1, off8: 4, payload: make([]byte, 8)}.bytes()
	v6pkt := v6{src: "fd00::5", dst: "fd00::1", nh: ProtoHopByHop, payload: cat(ext6(ProtoTCP, 0), tcpSeg(1, 2, tcpSYN))}.bytes()
	for _, tc := range []struct {
		name string
		pkt  []byte
		dir  Direction
		want Verdict
	}{
		{"conntrack hit", hit, Inbound, Verdict{Accept, ReasonConntrack}},
		{"miss against 1000 rules", miss, Inbound, Verdict{Drop, ReasonNoRule}},
		{"unknown fragment", frag, Inbound, Verdict{Drop, ReasonFragmentUnknownFlow}},
		{"spoofed source", v6pkt, Inbound, Verdict{Drop, ReasonRemoteAddr}},
	} {
		var got Verdict
		n := testing.AllocsPerRun(200, func() { got = f.Verdict(tc.pkt, tc.dir, web) })
		if got != tc.want {
			t.Fatalf("%s: verdict %v, want %v", tc.name, got, tc.want)
		}
		if n != 0 {
			t.Errorf("%s: %v allocations per verdict", tc.name, n)
		}
	}
	// A miss that is accepted replaces an expired entry in place: no allocation either.
	open := tcpOut("10.42.1.5", 81, 40001, tcpSYN)
	f.Verdict(open, Outbound, web)
	var got Verdict
	n := testing.AllocsPerRun(200, func() {
		clk.Advance(DefaultTCPTimeout + time.Second)
		got = f.Verdict(open, Outbound, web)
	})
	if got != (Verdict{Accept, ReasonRule}) || n != 0 {
		t.Errorf("accepted miss: verdict %v, %v allocations", got, n)
	}
}

// TestConcurrentVerdictsAndReloads runs verdicts for many flows from several goroutines while
// rules reload; run under -race it proves conntrack and rule swaps are safe.
func TestConcurrentVerdictsAndReloads(t *testing.T) {
	clk := newClock()
	cfgA := Config{Inbound: []Rule{{Port: "22", Proto: "tcp", Host: "any"}}, Outbound: []Rule{{Port: "any", Proto: "any", Host: "any"}}}
	cfgB := Config{Inbound: []Rule{{Port: "22", Proto: "tcp", Group: "web"}}, Outbound: []Rule{{Port: "any", Proto: "udp", Host: "any"}}}
	f := newFW(t, cfgA, clk)
	errs := make(chan string, 8)

	stop, reloaderDone := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(reloaderDone)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			cfg := cfgA
			if i%2 == 1 {
				cfg = cfgB
			}
			if err := f.Reload(cfg); err != nil {
				errs <- err.Error()
				return
			}
			f.Conntrack()
			f.Expire()
			time.Sleep(100 * time.Microsecond)
		}
	}()

	var workers sync.WaitGroup
	for g := 0; g < 4; g++ {
		workers.Add(1)
		go func(g int) {
			defer workers.Done()
			for i := 0; i < 2000; i++ {
				port := uint16(g*10000 + i%500 + 1)
				f.Verdict(udpOut("10.42.1.5", port, 53), Outbound, web)
				f.Verdict(udpIn("10.42.1.5", 53, port), Inbound, web)
				// Port 22 from web1 is allowed by both configs: it must never be refused.
				if v := f.Verdict(tcpIn("10.42.1.5", port, 22, tcpACK), Inbound, web); !v.Allowed() {
					errs <- fmt.Sprintf("allowed flow refused: %v", v)
					return
				}
				if i%100 == 0 {
					clk.Advance(time.Second)
				}
			}
		}(g)
	}
	workers.Wait()
	close(stop)
	<-reloaderDone
	select {
	case e := <-errs:
		t.Fatal(e)
	default:
	}
}

func BenchmarkVerdict(b *testing.B) {
	clk := newClock()
	f := newFW(b, thousandRules(), clk)
	f.Verdict(tcpOut("10.42.1.5", 80, 40000, tcpSYN), Outbound, web)
	hit := tcpIn("10.42.1.5", 40000, 80, tcpACK)
	miss := tcpIn("10.42.1.5", 1, 9999, tcpSYN)
	b.Run("conntrack-hit", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			f.Verdict(hit, Inbound, web)
		}
	})
	b.Run("miss-1000-rules", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			f.Verdict(miss, Inbound, web)
		}
	})
	b.Run("conntrack-hit-parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				f.Verdict(hit, Inbound, web)
			}
		})
	})
}

func FuzzVerdict(f *testing.F) {
	for _, tc := range parseCases() {
		f.Add(tc.pkt, uint8(Inbound), uint8(0))
		f.Add(tc.pkt, uint8(Outbound), uint8(3))
	}
	f.Fuzz(func(t *testing.T, pkt []byte, dir uint8, ruleBits uint8) {
		// A rule set chosen by the fuzzer, from closed to wide open.
		all := []Rule{
			{Port: "53", Proto: "udp", Host: "any"},
			{Port: "fragment", Proto: "any", Host: "any"},
			{Port: "any", Proto: "icmp", Group: "web"},
			{Port: "1-1024", Proto: "tcp", CIDR: "0.0.0.0/0"},
			{Port: "any", Proto: "any", Host: "any"},
		}
		var cfg Config
		for i, r := range all {
			if ruleBits&(1<<i) != 0 {
				cfg.Inbound = append(cfg.Inbound, r)
				cfg.Outbound = append(cfg.Outbound, r)
			}
		}
		if ruleBits&0x80 != 0 {
			cfg.InboundAction, cfg.OutboundAction = "reject", "reject"
		}
		fw, err := New(cfg, Options{})
		if err != nil {
			t.Fatal(err)
		}
		var p Packet
		parsed := p.Parse(pkt)
		// Any peer owning the packet's addresses, so verdicts get past the address checks.
		peer := NewPeer("fuzz", nil, []netip.Prefix{pfx("0.0.0.0/0"), pfx("::/0")}, []string{"web"}, "", "")
		for i := 0; i < 2; i++ { // the second time conntrack may answer
			v := fw.Verdict(pkt, Direction(dir), peer)
			if v.Allowed() && (!parsed || (Direction(dir) != Inbound && Direction(dir) != Outbound)) {
				t.Fatalf("accepted a packet that does not parse or has no direction: %v", v)
			}
			if v.Allowed() && len(cfg.Inbound) == 0 {
				t.Fatalf("accepted with no rules: %v", v)
			}
			if !v.Allowed() && v.Reason == ReasonNone {
				t.Fatal("a refusal without a reason")
			}
		}
	})
}
