package firewall

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
)

func TestCheckExplainsWhichRuleDecides(t *testing.T) {
	cfg := Config{
		InboundAction: "reject",
		Inbound: []Rule{
			{Port: "any", Proto: "icmp", Host: "any"},
			{Port: "5432", Proto: "tcp", Group: "web"},
			{Port: "22", Proto: "tcp", Groups: []string{"web", "ssh"}},
			{Port: "8000-8100", Proto: "udp", CIDR: "10.42.1.0/24"},
		},
		Outbound: []Rule{{Port: "443", Proto: "tcp", Host: "laptop"}},
	}
	f := newFW(t, cfg, nil)
	for _, tc := range []struct {
		q    Query
		dir  Direction
		peer *Peer
		want string
	}{
		{Query{Proto: ProtoTCP, Port: 5432}, Inbound, web, "accept: inbound[1] {port: 5432, proto: tcp, group: web}"},
		{Query{Proto: ProtoTCP, Port: 22}, Inbound, web, "accept: inbound[2] {port: 22, proto: tcp, groups: [web, ssh]}"},
		{Query{Proto: ProtoTCP, Port: 22}, Inbound, laptop, "reject: no inbound rule matches (inbound_action: reject)"},
		{Query{Proto: ProtoICMP}, Inbound, laptop, "accept: inbound[0] {port: any, proto: icmp, host: any}"},
		{Query{Proto: ProtoUDP, Port: 8050}, Inbound, web, "accept: inbound[3] {port: 8000-8100, proto: udp, cidr: 10.42.1.0/24}"},
		{Query{Proto: ProtoUDP, Port: 8050}, Inbound, laptop, "reject: no inbound rule matches (inbound_action: reject)"},
		{Query{Proto: ProtoTCP, Port: 443}, Outbound, web, "drop: no outbound rule matches (default drop)"},
		{Query{Proto: ProtoTCP, Port: 443}, Outbound, laptop, "accept: outbound[0] {port: 443, proto: tcp, host: laptop}"},
		// The address checks come first, as in Verdict.
		{Query{Proto: ProtoTCP, Port: 5432, Remote: addr("10.42.9.9")}, Inbound, web, "drop/remote_addr"},
		{Query{Proto: ProtoTCP, Port: 5432, Local: addr("10.42.0.2")}, Inbound, web, "drop/local_addr"},
		{Query{Proto: ProtoTCP, Port: 5432}, Inbound, nil, "drop/no_peer"},
		{Query{Proto: ProtoTCP, Port: 5432}, Direction(9), web, "drop/no_peer"},
	} {
		if got := f.Check(tc.q, tc.dir, tc.peer).String(); got != tc.want {
			t.Errorf("Check(%+v, %s, %v) = %q, want %q", tc.q, tc.dir, tc.peer != nil, got, tc.want)
		}
	}
	if f.Conntrack() != 0 {
		t.Fatalf("Check touched conntrack: %d entries", f.Conntrack())
	}

	var got []string
	for _, r := range f.PeerRules(Inbound, web, netip.Addr{}, netip.Addr{}) {
		got = append(got, r.String())
	}
	if want := "inbound[0] {port: any, proto: icmp, host: any}|inbound[1] {port: 5432, proto: tcp, group: web}|inbound[2] {port: 22, proto: tcp, groups: [web, ssh]}|inbound[3] {port: 8000-8100, proto: udp, cidr: 10.42.1.0/24}"; strings.Join(got, "|") != want {
		t.Errorf("PeerRules(web) = %q", got)
	}
	got = nil
	for _, r := range f.PortRules(Inbound, Query{Proto: ProtoTCP, Port: 22}) {
		got = append(got, r.String())
	}
	if want := "inbound[2] {port: 22, proto: tcp, groups: [web, ssh]}"; strings.Join(got, "|") != want {
		t.Errorf("PortRules(tcp/22) = %q", got)
	}
}

func TestRuleStringReadsBackAsTheSameRule(t *testing.T) {
	for _, r := range []Rule{
		{Port: "80", Proto: "tcp", Host: "web 1"},
		{Code: "any", Proto: "icmp", Groups: []string{"a:b", "c"}},
		{Port: "fragment", Proto: "any", CIDR: "10.0.0.0/8", LocalCIDR: "192.168.0.0/24", CAName: "Acme, Inc.", CASha: shaAcme},
	} {
		back, err := decodeConfig(t, fmt.Sprintf("firewall:\n  inbound: [%s]\n", r))
		if err != nil {
			t.Fatalf("%s: %v", r, err)
		}
		if len(back.Inbound) != 1 || back.Inbound[0].String() != r.String() || fmt.Sprint(back.Inbound[0]) != fmt.Sprint(r) {
			t.Errorf("%s read back as %+v", r, back.Inbound)
		}
	}
}

// TestCheckAgreesWithVerdictOnFirstPackets is the property Check promises: for random rule
// sets, peers and flows, Check's verdict is the one Verdict gives the first packet of that
// flow, and Check changes nothing (the same firewall then judges the packet).
func TestCheckAgreesWithVerdictOnFirstPackets(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	groups := []string{"web", "db", "ops", "ssh"}
	pick := func(s ...string) string { return s[rng.IntN(len(s))] }
	ports := []string{"any", "fragment", "22", "80", "5432", "1-1024", "5000-6000", "0"}
	randRule := func() Rule {
		r := Rule{Proto: pick("any", "tcp", "udp", "icmp"), Port: pick(ports...)}
		switch rng.IntN(7) {
		case 0:
			r.Host = pick("web1", "laptop", "gw", "any")
		case 1:
			r.Group = pick(append(groups, "any")...)
		case 2:
			r.Groups = []string{pick(groups...), pick(groups...)}
		case 3:
			r.CIDR = pick("10.42.1.0/24", "10.42.0.0/16", "192.168.100.0/24", "any", "10.42.2.7/32")
		case 4:
			r.LocalCIDR = pick("10.42.0.0/16", "172.16.0.0/24", "any")
		case 5:
			r.CAName = pick("Acme", "Other")
		default:
			r.CASha, r.Group = pick(shaAcme, shaOther), pick(groups...)
		}
		if rng.IntN(4) == 0 {
			r.LocalCIDR = pick("10.42.0.1/32", "172.16.0.0/24")
		}
		return r
	}
	peers := []*Peer{web, laptop, gw,
		NewPeer("db1", []netip.Prefix{pfx("10.42.1.9/16")}, nil, []string{"db", "ops"}, "Acme", shaAcme)}
	protos := []uint8{ProtoTCP, ProtoUDP, ProtoICMP, 47}
	svcPorts := []uint16{22, 80, 443, 1024, 5432, 5999, 9999, 0}

	for i := 0; i < 3000; i++ {
		var cfg Config
		for range rng.IntN(6) {
			cfg.Inbound = append(cfg.Inbound, randRule())
		}
		for range rng.IntN(6) {
			cfg.Outbound = append(cfg.Outbound, randRule())
		}
		if rng.IntN(3) == 0 {
			cfg.InboundAction, cfg.OutboundAction = "reject", "reject"
		}
		f := newFW(t, cfg, newClock())
		peer := peers[rng.IntN(len(peers))]
		dir := Direction(1 + rng.IntN(2))
		q := Query{Proto: protos[rng.IntN(len(protos))], Port: svcPorts[rng.IntN(len(svcPorts))],
			Remote: peer.IPs[0].Addr(), Local: addr(pick(local, "172.16.0.9"))}
		if peer == gw && rng.IntN(2) == 0 {
			q.Remote = addr("192.168.100.20") // a host behind its subnet
		}
		if rng.IntN(20) == 0 {
			q.Remote = addr("10.42.77.1") // not the peer's
		}
		if rng.IntN(20) == 0 {
			q.Local = addr("10.42.0.2") // not ours
		}
		e := f.Check(q, dir, peer)
		if again := f.Check(q, dir, peer); again != e {
			t.Fatalf("Check is not repeatable: %v then %v", e, again)
		}
		pkt := firstPacket(q, dir)
		v := f.Verdict(pkt, dir, peer)
		if v != e.Verdict {
			t.Fatalf("case %d: %s %s from %s: Check says %v, Verdict %v\nrules: %+v", i, dir, fmtQuery(q), peer.Name, e, v, cfg)
		}
		if (e.Rule >= 0) != (e.Verdict.Reason == ReasonRule) {
			t.Fatalf("case %d: rule %d with verdict %v", i, e.Rule, e.Verdict)
		}
		if e.Rule >= 0 {
			rules := cfg.Inbound
			if dir == Outbound {
				rules = cfg.Outbound
			}
			if e.RuleText != rules[e.Rule].String() {
				t.Fatalf("case %d: rule text %q for %+v", i, e.RuleText, rules[e.Rule])
			}
			// The first match: no earlier rule alone would have admitted the flow.
			for j := range e.Rule {
				one := cfg
				one.Inbound, one.Outbound = nil, nil
				if dir == Inbound {
					one.Inbound = rules[j : j+1]
				} else {
					one.Outbound = rules[j : j+1]
				}
				if newFW(t, one, newClock()).Verdict(pkt, dir, peer).Allowed() {
					t.Fatalf("case %d: rule %d matches, but Check named rule %d", i, j, e.Rule)
				}
			}
		}
	}
}

// firstPacket is the packet that opens q's flow in direction dir: the peer's side is the
// source inbound and the destination outbound; the service port is the destination port.
func firstPacket(q Query, dir Direction) []byte {
	src, dst := q.Remote.String(), q.Local.String()
	if dir == Outbound {
		src, dst = dst, src
	}
	var payload []byte
	switch q.Proto {
	case ProtoTCP:
		payload = tcpSeg(40000, q.Port, tcpSYN)
	case ProtoUDP:
		payload = udpDgram(40000, q.Port)
	case ProtoICMP:
		payload = icmpMsg(8, 0, 1)
	default:
		payload = make([]byte, 8)
	}
	return v4{src: src, dst: dst, proto: q.Proto, payload: payload}.bytes()
}

func fmtQuery(q Query) string {
	return fmt.Sprintf("proto %d port %d %s<->%s", q.Proto, q.Port, q.Remote, q.Local)
}

func TestCheckDoesNotAllocate(t *testing.T) {
	f := newFW(t, thousandRules(), newClock())
	q := Query{Proto: ProtoTCP, Port: 9999}
	f.Check(q, Inbound, web) // caches the peer's group bits for this rule set
	if n := testing.AllocsPerRun(100, func() { f.Check(q, Inbound, web) }); n != 0 {
		t.Fatalf("Check allocates %.0f times", n)
	}
}
