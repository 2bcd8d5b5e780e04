package firewall

import (
	"math/rand/v2"
	"testing"
	"time"
)

// TestMemoAgreesWithTheTable drives one firewall with memos and a twin without them through
// the same random packets, peers, directions, clock steps and reloads: every verdict must be
// the same. The memo may only ever stand in for a lookup that would have succeeded.
func TestMemoAgreesWithTheTable(t *testing.T) {
	configs := []Config{
		{Inbound: []Rule{{Port: "22", Proto: "tcp", Host: "any"}, {Port: "53", Proto: "udp", Group: "web"}},
			Outbound: []Rule{{Port: "any", Proto: "any", Host: "any"}}},
		{Inbound: []Rule{{Port: "22", Proto: "tcp", Group: "ssh"}},
			Outbound: []Rule{{Port: "80", Proto: "tcp", Host: "any"}, {Port: "53", Proto: "udp", Host: "any"}}},
		{Inbound: []Rule{{Port: "any", Proto: "any", Host: "any"}}},
	}
	for i := range configs {
		configs[i].Conntrack = ConntrackConfig{TCPTimeout: 60 * time.Second, UDPTimeout: 30 * time.Second, DefaultTimeout: 30 * time.Second}
	}
	for seed := uint64(1); seed <= 20; seed++ {
		rng := rand.New(rand.NewPCG(seed, 7))
		clkA, clkB := newClock(), newClock()
		withMemo, plain := newFW(t, configs[0], clkA), newFW(t, configs[0], clkB)
		peers := []*Peer{web, laptop}
		addrs := map[*Peer]string{web: "10.42.1.5", laptop: "10.42.2.7"}
		memos := map[[2]int]*Memo{} // peer index, direction
		for step := range 3000 {
			switch r := rng.IntN(100); {
			case r < 2:
				cfg := configs[rng.IntN(len(configs))]
				if err := withMemo.Reload(cfg); err != nil {
					t.Fatal(err)
				}
				if err := plain.Reload(cfg); err != nil {
					t.Fatal(err)
				}
			case r < 20:
				// Short steps, and now and then a jump past every timeout. Idle times near a
				// timeout are left out on purpose: there the memo may let a flow expire up to
				// about two seconds early (see Memo), which TestMemoExpiryBound pins down.
				d := time.Duration(rng.IntN(100)) * time.Millisecond
				if rng.IntN(5) == 0 {
					d = time.Duration(62+rng.IntN(20)) * time.Second
				}
				clkA.Advance(d)
				clkB.Advance(d)
			}
			pi := rng.IntN(len(peers))
			peer, ip := peers[pi], addrs[peers[pi]]
			dir := Direction(Inbound)
			if rng.IntN(2) == 0 {
				dir = Outbound
			}
			port := []uint16{22, 53, 80, 443}[rng.IntN(4)]
			eph := uint16(40000 + rng.IntN(3))
			var pkt []byte
			switch udp := port == 53; {
			case dir == Inbound && udp:
				pkt = udpIn(ip, eph, port)
			case dir == Inbound:
				pkt = tcpIn(ip, eph, port, tcpACK)
			case udp:
				pkt = udpOut(ip, eph, port)
			default:
				pkt = tcpOut(ip, eph, port, tcpACK)
			}
			if rng.IntN(4) == 0 { // the reply direction of the same flow
				if dir == Inbound {
					dir = Outbound
					pkt = swapped(pkt)
				} else {
					dir = Inbound
					pkt = swapped(pkt)
				}
			}
			m := memos[[2]int{pi, int(dir)}]
			if m == nil {
				m = new(Memo)
				memos[[2]int{pi, int(dir)}] = m
			}
			got := withMemo.VerdictMemo(pkt, dir, peer, clkA.Now().UnixNano(), m)
			want := plain.VerdictAt(pkt, dir, peer, clkB.Now())
			if got.Action != want.Action {
				t.Fatalf("seed %d step %d: with memo %v, without %v (peer %s, %v)", seed, step, got, want, peer.Name, dir)
			}
		}
	}
}

// swapped turns a packet into its reply: addresses and ports exchanged.
func swapped(pkt []byte) []byte {
	var p Packet
	p.Parse(pkt)
	b := append([]byte(nil), pkt...)
	copy(b[12:16], pkt[16:20])
	copy(b[16:20], pkt[12:16])
	ihl := int(pkt[0]&0xf) * 4
	copy(b[ihl:ihl+2], pkt[ihl+2:ihl+4])
	copy(b[ihl+2:ihl+4], pkt[ihl:ihl+2])
	return b
}

// TestMemoDoesNotOutliveAReload: a warm memo must not let a flow through once a reload's
// rules refuse it.
func TestMemoDoesNotOutliveAReload(t *testing.T) {
	clk := newClock()
	f := newFW(t, in(Rule{Port: "80", Proto: "tcp", Host: "any"}), clk)
	var m Memo
	pkt := tcpIn("10.42.1.5", 40000, 80, tcpACK)
	for i := range 3 {
		if v := f.VerdictMemo(pkt, Inbound, web, clk.Now().UnixNano(), &m); !v.Accepted() {
			t.Fatalf("packet %d: %v", i, v)
		}
	}
	if err := f.Reload(in(Rule{Port: "443", Proto: "tcp", Host: "any"})); err != nil {
		t.Fatal(err)
	}
	if v := f.VerdictMemo(pkt, Inbound, web, clk.Now().UnixNano(), &m); v != (Verdict{Drop, ReasonNoRule}) {
		t.Fatalf("after the reload: %v, want a drop", v)
	}
}

// TestMemoHitsKeepTheFlowAlive: a flow whose packets all hit the memo still gets its table
// entry refreshed, so its replies (judged without the memo) pass long after its timeout.
func TestMemoHitsKeepTheFlowAlive(t *testing.T) {
	clk := newClock()
	cfg := out(Rule{Port: "any", Proto: "any", Host: "any"})
	cfg.Conntrack.UDPTimeout = 3 * time.Second
	f := newFW(t, cfg, clk)
	var m Memo
	for i := range 200 { // 20 s of one packet per 100 ms
		if v := f.VerdictMemo(udpOut("10.42.1.5", 5000, 53), Outbound, web, clk.Now().UnixNano(), &m); !v.Accepted() {
			t.Fatalf("packet %d: %v", i, v)
		}
		clk.Advance(100 * time.Millisecond)
	}
	if v := f.Verdict(udpIn("10.42.1.5", 53, 5000), Inbound, web); v != (Verdict{Accept, ReasonConntrack}) {
		t.Fatalf("the reply after 20 s of memo hits: %v", v)
	}
	clk.Advance(4 * time.Second)
	if v := f.VerdictMemo(udpIn("10.42.1.5", 53, 5000), Inbound, web, clk.Now().UnixNano(), &m); v.Accepted() {
		t.Fatalf("the flow outlived its timeout: %v", v)
	}
}

// TestMemoIsPerPeerAndDirection: a memo made for one peer or direction does not answer for
// another, and fragments never use it.
func TestMemoIsPerPeerAndDirection(t *testing.T) {
	clk := newClock()
	f := newFW(t, in(Rule{Port: "80", Proto: "tcp", Host: "web1"}), clk)
	var m Memo
	now := clk.Now().UnixNano()
	if v := f.VerdictMemo(tcpIn("10.42.1.5", 40000, 80, tcpSYN), Inbound, web, now, &m); !v.Accepted() {
		t.Fatal(v)
	}
	// gw holds a subnet, not 10.42.1.5: the address check stops it before the memo.
	if v := f.VerdictMemo(tcpIn("10.42.1.5", 40000, 80, tcpSYN), Inbound, gw, now, &m); v.Accepted() {
		t.Fatalf("another peer rode the memo: %v", v)
	}
	if !m.hit(&m.key, m.rs, web, Inbound, now) || m.hit(&m.key, m.rs, laptop, Inbound, now) || m.hit(&m.key, m.rs, web, Outbound, now) {
		t.Fatal("the memo answers for the wrong peer or direction")
	}
}

func TestMemoPathDoesNotAllocate(t *testing.T) {
	clk := newClock()
	f := newFW(t, in(Rule{Port: "any", Proto: "any", Host: "any"}), clk)
	var m Memo
	pkt := tcpIn("10.42.1.5", 40000, 80, tcpACK)
	now := clk.Now().UnixNano()
	f.VerdictMemo(pkt, Inbound, web, now, &m)
	if n := testing.AllocsPerRun(1000, func() { f.VerdictMemo(pkt, Inbound, web, now, &m) }); n != 0 {
		t.Fatalf("%v allocations per verdict", n)
	}
}

// TestMemoExpiryBound pins down what the memo costs: a flow that goes idle after memo hits
// expires no earlier than two seconds before last packet + timeout.
func TestMemoExpiryBound(t *testing.T) {
	for _, timeout := range []time.Duration{3 * time.Second, 30 * time.Second, 12 * time.Minute} {
		for _, hits := range []int{1, 3, 10, 40} {
			clk := newClock()
			cfg := out(Rule{Port: "any", Proto: "any", Host: "any"})
			cfg.Conntrack.UDPTimeout = timeout
			f := newFW(t, cfg, clk)
			var m Memo
			for range hits {
				if v := f.VerdictMemo(udpOut("10.42.1.5", 5000, 53), Outbound, web, clk.Now().UnixNano(), &m); !v.Accepted() {
					t.Fatal(v)
				}
				clk.Advance(30 * time.Millisecond)
			}
			last := clk.Now().Add(-30 * time.Millisecond)
			reply := udpIn("10.42.1.5", 53, 5000)
			earliest := last.Add(timeout - 2*time.Second)
			clk.Advance(earliest.Sub(clk.Now()))
			if v := f.Verdict(reply, Inbound, web); v != (Verdict{Accept, ReasonConntrack}) {
				t.Fatalf("timeout %v, %d hits: the flow expired more than 2 s before last packet + timeout: %v", timeout, hits, v)
			}
		}
	}
}
