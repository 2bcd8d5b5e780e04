package firewall

import (
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	shaAcme  = "aabbccddeeff00112233445566778899aabbccddeeff00112233445566778899"
	shaOther = "1111111111111111111111111111111111111111111111111111111111111111"
	local    = "10.42.0.1"
)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

var (
	web    = NewPeer("web1", []netip.Prefix{pfx("10.42.1.5/16")}, nil, []string{"web", "ssh"}, "Acme", strings.ToUpper(shaAcme))
	laptop = NewPeer("laptop", []netip.Prefix{pfx("10.42.2.7/16")}, nil, []string{"laptop", "home"}, "Other", shaOther)
	gw     = NewPeer("gw", []netip.Prefix{pfx("10.42.3.1/16")}, []netip.Prefix{pfx("192.168.100.0/24")}, []string{"gateway"}, "Acme", shaAcme)
)

// fakeClock is the injected clock: time moves only when a test says so.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock { return &fakeClock{t: time.Unix(1_700_000_000, 0)} }
func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newFW(t testing.TB, cfg Config, clk *fakeClock) *Firewall {
	t.Helper()
	opts := Options{LocalAddrs: []netip.Addr{addr(local)}, LocalSubnets: []netip.Prefix{pfx("172.16.0.0/24")}}
	if clk != nil {
		opts.Now = clk.Now
	}
	f, err := New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// Packets from the peer's side: inbound src is the peer, outbound dst is the peer.
func tcpIn(from string, sport, dport uint16, flags uint8) []byte {
	return v4{src: from, dst: local, proto: ProtoTCP, payload: tcpSeg(sport, dport, flags)}.bytes()
}
func tcpOut(to string, sport, dport uint16, flags uint8) []byte {
	return v4{src: local, dst: to, proto: ProtoTCP, payload: tcpSeg(sport, dport, flags)}.bytes()
}
func udpIn(from string, sport, dport uint16) []byte {
	return v4{src: from, dst: local, proto: ProtoUDP, payload: udpDgram(sport, dport)}.bytes()
}
func udpOut(to string, sport, dport uint16) []byte {
	return v4{src: local, dst: to, proto: ProtoUDP, payload: udpDgram(sport, dport)}.bytes()
}
func pingIn(from string, typ uint8) []byte {
	return v4{src: from, dst: local, proto: ProtoICMP, payload: icmpMsg(typ, 0, 7)}.bytes()
}

func in(rules ...Rule) Config  { return Config{Inbound: rules} }
func out(rules ...Rule) Config { return Config{Outbound: rules} }

func TestRuleFieldsAndTheirCombinations(t *testing.T) {
	type pk struct {
		pkt  []byte
		dir  Direction
		peer *Peer
		want Action
	}
	webTCP := func(dport uint16) []byte { return tcpIn("10.42.1.5", 40000, dport, tcpSYN) }
	lapTCP := func(dport uint16) []byte { return tcpIn("10.42.2.7", 40000, dport, tcpSYN) }
	for _, tc := range []struct {
		name  string
		cfg   Config
		cases []pk
	}{
		{"no rules deny inbound", Config{}, []pk{{webTCP(80), Inbound, web, Drop}}},
		{"no rules deny outbound", Config{}, []pk{{tcpOut("10.42.1.5", 1, 80, tcpSYN), Outbound, web, Drop}}},
		{"host any", in(Rule{Port: "80", Proto: "tcp", Host: "any"}), []pk{
			{webTCP(80), Inbound, web, Accept}, {lapTCP(80), Inbound, laptop, Accept}, {webTCP(81), Inbound, web, Drop}}},
		{"host by name", in(Rule{Port: "80", Proto: "tcp", Host: "web1"}), []pk{
			{webTCP(80), Inbound, web, Accept}, {lapTCP(80), Inbound, laptop, Drop}}},
		{"group", in(Rule{Port: "80", Proto: "tcp", Group: "web"}), []pk{
			{webTCP(80), Inbound, web, Accept}, {lapTCP(80), Inbound, laptop, Drop}}},
		{"group any", in(Rule{Port: "80", Proto: "tcp", Group: "any"}), []pk{{lapTCP(80), Inbound, laptop, Accept}}},
		{"groups need all", in(Rule{Port: "443", Proto: "tcp", Groups: []string{"laptop", "home"}}), []pk{
			{lapTCP(443), Inbound, laptop, Accept}, {webTCP(443), Inbound, web, Drop}}},
		{"groups missing one", in(Rule{Port: "443", Proto: "tcp", Groups: []string{"laptop", "ops"}}), []pk{{lapTCP(443), Inbound, laptop, Drop}}},
		{"cidr", in(Rule{Port: "80", Proto: "tcp", CIDR: "10.42.2.0/24"}), []pk{
			{lapTCP(80), Inbound, laptop, Accept}, {webTCP(80), Inbound, web, Drop}}},
		{"cidr 0.0.0.0/8 is literal", in(Rule{Port: "80", Proto: "tcp", CIDR: "0.0.0.0/8"}), []pk{{webTCP(80), Inbound, web, Drop}}},
		{"cidr any", in(Rule{Port: "80", Proto: "tcp", CIDR: "any"}), []pk{{webTCP(80), Inbound, web, Accept}}},
		{"host or group or cidr", in(Rule{Port: "80", Proto: "tcp", Host: "nobody", Group: "laptop", CIDR: "10.42.1.5/32"}), []pk{
			{webTCP(80), Inbound, web, Accept}, {lapTCP(80), Inbound, laptop, Accept}, {tcpIn("10.42.3.1", 1, 80, tcpSYN), Inbound, gw, Drop}}},
		{"ca_name alone matches its CA", in(Rule{Port: "80", Proto: "tcp", CAName: "Acme"}), []pk{
			{webTCP(80), Inbound, web, Accept}, {lapTCP(80), Inbound, laptop, Drop}}},
		{"ca_sha alone, case-insensitive", in(Rule{Port: "80", Proto: "tcp", CASha: strings.ToUpper(shaOther)}), []pk{
			{lapTCP(80), Inbound, laptop, Accept}, {webTCP(80), Inbound, web, Drop}}},
		{"ca_name or ca_sha", in(Rule{Port: "80", Proto: "tcp", CAName: "Acme", CASha: shaOther}), []pk{
			{lapTCP(80), Inbound, laptop, Accept}, {webTCP(80), Inbound, web, Accept}}},
		{"ca and group both required", in(Rule{Port: "80", Proto: "tcp", CAName: "Acme", Group: "laptop"}), []pk{
			{lapTCP(80), Inbound, laptop, Drop}, {webTCP(80), Inbound, web, Drop}}},
		{"port range", in(Rule{Port: "8000-8100", Proto: "tcp", Host: "any"}), []pk{
			{webTCP(7999), Inbound, web, Drop}, {webTCP(8000), Inbound, web, Accept}, {webTCP(8100), Inbound, web, Accept}, {webTCP(8101), Inbound, web, Drop}}},
		{"port any", in(Rule{Port: "any", Proto: "tcp", Host: "any"}), []pk{{webTCP(1), Inbound, web, Accept}, {webTCP(65535), Inbound, web, Accept}}},
		{"proto tcp is not udp", in(Rule{Port: "53", Proto: "tcp", Host: "any"}), []pk{
			{udpIn("10.42.1.5", 1, 53), Inbound, web, Drop}, {webTCP(53), Inbound, web, Accept}}},
		{"proto udp", in(Rule{Port: "53", Proto: "udp", Host: "any"}), []pk{
			{udpIn("10.42.1.5", 1, 53), Inbound, web, Accept}, {webTCP(53), Inbound, web, Drop}}},
		{"proto any with a port", in(Rule{Port: "53", Proto: "any", Host: "any"}), []pk{
			{udpIn("10.42.1.5", 1, 53), Inbound, web, Accept}, {webTCP(53), Inbound, web, Accept}, {pingIn("10.42.1.5", 8), Inbound, web, Drop}}},
		{"proto icmp ignores its port", in(Rule{Port: "22", Proto: "icmp", Host: "any"}), []pk{
			{pingIn("10.42.1.5", 8), Inbound, web, Accept}, {webTCP(22), Inbound, web, Drop}}},
		{"proto any port any covers icmp and others", in(Rule{Port: "any", Proto: "any", Host: "any"}), []pk{
			{pingIn("10.42.1.5", 8), Inbound, web, Accept},
			{v4{src: "10.42.1.5", dst: local, proto: 47, payload: []byte{0, 0, 8, 0}}.bytes(), Inbound, web, Accept}}},
		{"other protocols need port any", in(Rule{Port: "1-65535", Proto: "any", Host: "any"}), []pk{
			{v4{src: "10.42.1.5", dst: local, proto: 47, payload: []byte{0, 0, 8, 0}}.bytes(), Inbound, web, Drop}}},
		{"port is the destination port inbound", in(Rule{Port: "22", Proto: "tcp", Host: "any"}), []pk{
			{tcpIn("10.42.1.5", 22, 40000, tcpSYN), Inbound, web, Drop}}},
		{"port is the destination port outbound", out(Rule{Port: "22", Proto: "tcp", Host: "any"}), []pk{
			{tcpOut("10.42.1.5", 40000, 22, tcpSYN), Outbound, web, Accept}, {tcpOut("10.42.1.5", 22, 40000, tcpSYN), Outbound, web, Drop}}},
		{"cidr is the destination outbound", out(Rule{Port: "any", Proto: "any", CIDR: "10.42.2.0/24"}), []pk{
			{tcpOut("10.42.2.7", 1, 80, tcpSYN), Outbound, laptop, Accept}, {tcpOut("10.42.1.5", 1, 80, tcpSYN), Outbound, web, Drop}}},
		{"inbound rules do not open outbound", in(Rule{Port: "any", Proto: "any", Host: "any"}), []pk{
			{tcpOut("10.42.1.5", 1, 80, tcpSYN), Outbound, web, Drop}}},
		{"local_cidr", in(Rule{Port: "8080", Proto: "tcp", Group: "gateway", LocalCIDR: "172.16.0.0/24"}), []pk{
			{v4{src: "10.42.3.1", dst: "172.16.0.9", proto: ProtoTCP, payload: tcpSeg(1, 8080, tcpSYN)}.bytes(), Inbound, gw, Accept},
			{v4{src: "10.42.3.1", dst: local, proto: ProtoTCP, payload: tcpSeg(1, 8080, tcpSYN)}.bytes(), Inbound, gw, Drop}}},
		{"local_cidr alone is a selector", in(Rule{Port: "80", Proto: "tcp", LocalCIDR: "10.42.0.0/24"}), []pk{{webTCP(80), Inbound, web, Accept}}},
		{"subnet peer from its subnet", in(Rule{Port: "80", Proto: "tcp", Group: "gateway"}), []pk{
			{tcpIn("192.168.100.20", 1, 80, tcpSYN), Inbound, gw, Accept}}},
		{"reject action", Config{InboundAction: "reject", Inbound: []Rule{{Port: "80", Proto: "tcp", Host: "any"}}}, []pk{
			{webTCP(22), Inbound, web, Reject}, {webTCP(80), Inbound, web, Accept}}},
		{"outbound reject action", Config{OutboundAction: "reject"}, []pk{{tcpOut("10.42.1.5", 1, 80, tcpSYN), Outbound, web, Reject}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for i, c := range tc.cases {
				f := newFW(t, tc.cfg, nil) // fresh conntrack: each packet is judged by rules alone
				if got := f.Verdict(c.pkt, c.dir, c.peer); got.Action != c.want {
					t.Errorf("case %d (%s from %s): verdict %v, want %v", i, c.dir, c.peer.Name, got, c.want)
				}
			}
		})
	}
}

func TestAddressesMustBelongToPeerAndUs(t *testing.T) {
	f := newFW(t, Config{
		Inbound:  []Rule{{Port: "any", Proto: "any", Host: "any"}},
		Outbound: []Rule{{Port: "any", Proto: "any", Host: "any"}},
	}, nil)
	for _, tc := range []struct {
		name string
		pkt  []byte
		dir  Direction
		peer *Peer
		want Verdict
	}{
		{"own ip", tcpIn("10.42.1.5", 1, 80, tcpSYN), Inbound, web, Verdict{Accept, ReasonRule}},
		{"another ip in the peer's network (CVE-2025-62820)", tcpIn("10.42.1.9", 1, 80, tcpSYN), Inbound, web, Verdict{Drop, ReasonRemoteAddr}},
		{"another peer's ip", tcpIn("10.42.2.7", 1, 80, tcpSYN), Inbound, web, Verdict{Drop, ReasonRemoteAddr}},
		{"outside the peer's subnet", tcpIn("192.168.101.1", 1, 80, tcpSYN), Inbound, gw, Verdict{Drop, ReasonRemoteAddr}},
		{"outbound to someone else through this tunnel", tcpOut("10.42.2.7", 1, 80, tcpSYN), Outbound, web, Verdict{Drop, ReasonRemoteAddr}},
		{"not for us", v4{src: "10.42.1.5", dst: "10.42.0.2", proto: ProtoUDP, payload: udpDgram(1, 2)}.bytes(), Inbound, web, Verdict{Drop, ReasonLocalAddr}},
		{"not from us", v4{src: "10.42.0.2", dst: "10.42.1.5", proto: ProtoUDP, payload: udpDgram(1, 2)}.bytes(), Outbound, web, Verdict{Drop, ReasonLocalAddr}},
		{"to our subnet: a rule without local_cidr covers only our own IPs (Nebula 1.10)", v4{src: "10.42.1.5", dst: "172.16.0.4", proto: ProtoUDP, payload: udpDgram(1, 2)}.bytes(), Inbound, web, Verdict{Drop, ReasonNoRule}},
		{"no peer", tcpIn("10.42.1.5", 1, 80, tcpSYN), Inbound, nil, Verdict{Drop, ReasonNoPeer}},
		{"no direction", tcpIn("10.42.1.5", 1, 80, tcpSYN), 0, web, Verdict{Drop, ReasonNoPeer}},
		{"garbage", []byte{0x45, 1, 2}, Inbound, web, Verdict{Drop, ReasonTruncated}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := f.Verdict(tc.pkt, tc.dir, tc.peer); got != tc.want {
				t.Fatalf("verdict %v, want %v", got, tc.want)
			}
		})
	}
}

// TestDefaultLocalCIDRAny: with firewall.default_local_cidr_any a rule without local_cidr
// covers our subnets too; without it only a rule naming them in local_cidr does, and only
// the part it names. Replies of an admitted flow to a subnet host pass by conntrack.
func TestDefaultLocalCIDRAny(t *testing.T) {
	on := true
	toLAN := func(dst string) []byte {
		return v4{src: "10.42.1.5", dst: dst, proto: ProtoUDP, payload: udpDgram(1000, 53)}.bytes()
	}
	fromLAN := v4{src: "172.16.0.4", dst: "10.42.1.5", proto: ProtoUDP, payload: udpDgram(53, 1000)}.bytes()
	anyRule := Rule{Port: "any", Proto: "any", Host: "any"}
	for _, tc := range []struct {
		name string
		cfg  Config
		dst  string
		want Verdict
	}{
		{"default: own ip", Config{Inbound: []Rule{anyRule}}, "10.42.0.1", Verdict{Accept, ReasonRule}},
		{"default: subnet refused", Config{Inbound: []Rule{anyRule}}, "172.16.0.4", Verdict{Drop, ReasonNoRule}},
		{"default_local_cidr_any: subnet", Config{Inbound: []Rule{anyRule}, DefaultLocalCIDRAny: &on}, "172.16.0.4", Verdict{Accept, ReasonRule}},
		{"local_cidr names the host", Config{Inbound: []Rule{{Port: "any", Proto: "any", Host: "any", LocalCIDR: "172.16.0.4/32"}}}, "172.16.0.4", Verdict{Accept, ReasonRule}},
		{"local_cidr names another host", Config{Inbound: []Rule{{Port: "any", Proto: "any", Host: "any", LocalCIDR: "172.16.0.4/32"}}}, "172.16.0.5", Verdict{Drop, ReasonNoRule}},
		{"local_cidr any", Config{Inbound: []Rule{{Port: "any", Proto: "any", Host: "any", LocalCIDR: "any"}}}, "172.16.0.5", Verdict{Accept, ReasonRule}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFW(t, tc.cfg, nil)
			if got := f.Verdict(toLAN(tc.dst), Inbound, web); got != tc.want {
				t.Fatalf("verdict %v, want %v", got, tc.want)
			}
			if tc.dst == "172.16.0.4" && tc.want.Accepted() {
				if got := f.Verdict(fromLAN, Outbound, web); got != (Verdict{Accept, ReasonConntrack}) {
					t.Fatalf("reply from the LAN host: %v, want accept/conntrack", got)
				}
			}
		})
	}
}

func TestConntrackAdmitsRepliesOfAllowedFlows(t *testing.T) {
	clk := newClock()
	f := newFW(t, Config{
		Outbound: []Rule{{Port: "any", Proto: "any", Host: "any"}},
		Inbound:  []Rule{{Port: "22", Proto: "tcp", Host: "any"}},
	}, clk)
	steps := []struct {
		name string
		pkt  []byte
		dir  Direction
		want Verdict
	}{
		{"reply before any request", tcpIn("10.42.1.5", 80, 40000, tcpSYN|tcpACK), Inbound, Verdict{Drop, ReasonNoRule}},
		{"outbound request opens the flow", tcpOut("10.42.1.5", 40000, 80, tcpSYN), Outbound, Verdict{Accept, ReasonRule}},
		{"its reply passes", tcpIn("10.42.1.5", 80, 40000, tcpSYN|tcpACK), Inbound, Verdict{Accept, ReasonConntrack}},
		{"a reply to another local port does not", tcpIn("10.42.1.5", 80, 40001, tcpACK), Inbound, Verdict{Drop, ReasonNoRule}},
		{"inbound ssh opens its flow", tcpIn("10.42.1.5", 50000, 22, tcpSYN), Inbound, Verdict{Accept, ReasonRule}},
		{"and our answer uses it", tcpOut("10.42.1.5", 22, 50000, tcpSYN|tcpACK), Outbound, Verdict{Accept, ReasonConntrack}},
		{"udp request", udpOut("10.42.1.5", 5000, 53), Outbound, Verdict{Accept, ReasonRule}},
		{"udp answer", udpIn("10.42.1.5", 53, 5000), Inbound, Verdict{Accept, ReasonConntrack}},
		{"ping out", v4{src: local, dst: "10.42.1.5", proto: ProtoICMP, payload: icmpMsg(8, 0, 3)}.bytes(), Outbound, Verdict{Accept, ReasonRule}},
		{"echo reply in", pingIn("10.42.1.5", 0), Inbound, Verdict{Accept, ReasonConntrack}},
		{"icmp from another peer is not that flow", pingIn("10.42.2.7", 0), Inbound, Verdict{Drop, ReasonNoRule}},
	}
	for _, s := range steps {
		peer := web
		if strings.Contains(s.name, "another peer") {
			peer = laptop
		}
		if got := f.Verdict(s.pkt, s.dir, peer); got != s.want {
			t.Fatalf("%s: verdict %v, want %v", s.name, got, s.want)
		}
	}
}

func TestConntrackEntriesExpireWithTheInjectedClock(t *testing.T) {
	for _, tc := range []struct {
		name    string
		timeout time.Duration
		open    []byte
		reply   []byte
	}{
		{"tcp", 12 * time.Minute, tcpOut("10.42.1.5", 40000, 80, tcpSYN), tcpIn("10.42.1.5", 80, 40000, tcpACK)},
		{"udp", 3 * time.Minute, udpOut("10.42.1.5", 5000, 53), udpIn("10.42.1.5", 53, 5000)},
		{"icmp uses the default timeout", 10 * time.Minute,
			v4{src: local, dst: "10.42.1.5", proto: ProtoICMP, payload: icmpMsg(8, 0, 3)}.bytes(), pingIn("10.42.1.5", 0)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk := newClock()
			f := newFW(t, out(Rule{Port: "any", Proto: "any", Host: "any"}), clk)
			if v := f.Verdict(tc.open, Outbound, web); !v.Allowed() {
				t.Fatalf("open: %v", v)
			}
			// Traffic keeps the entry alive: each reply renews the full timeout.
			for i := 0; i < 3; i++ {
				clk.Advance(tc.timeout - time.Second)
				if v := f.Verdict(tc.reply, Inbound, web); v != (Verdict{Accept, ReasonConntrack}) {
					t.Fatalf("reply %d within the timeout: %v", i, v)
				}
			}
			clk.Advance(tc.timeout)
			if v := f.Verdict(tc.reply, Inbound, web); v != (Verdict{Drop, ReasonNoRule}) {
				t.Fatalf("reply after the timeout: %v", v)
			}
			if n := f.Conntrack(); n != 0 {
				t.Fatalf("expired entry still counted: %d", n)
			}
		})
	}
}

func TestConfiguredTimeoutsApply(t *testing.T) {
	clk := newClock()
	cfg := out(Rule{Port: "any", Proto: "any", Host: "any"})
	cfg.Conntrack = ConntrackConfig{UDPTimeout: 10 * time.Second}
	f := newFW(t, cfg, clk)
	f.Verdict(udpOut("10.42.1.5", 5000, 53), Outbound, web)
	clk.Advance(9 * time.Second)
	if v := f.Verdict(udpIn("10.42.1.5", 53, 5000), Inbound, web); !v.Allowed() {
		t.Fatalf("within 10s: %v", v)
	}
	clk.Advance(11 * time.Second)
	if v := f.Verdict(udpIn("10.42.1.5", 53, 5000), Inbound, web); v.Allowed() {
		t.Fatalf("after 10s: %v", v)
	}
}

func TestExpireFreesEndedFlows(t *testing.T) {
	clk := newClock()
	f := newFW(t, out(Rule{Port: "any", Proto: "any", Host: "any"}), clk)
	for p := uint16(1); p <= 100; p++ {
		f.Verdict(udpOut("10.42.1.5", p, 53), Outbound, web)
	}
	if n := f.Conntrack(); n != 100 {
		t.Fatalf("tracked %d flows, want 100", n)
	}
	clk.Advance(DefaultUDPTimeout + time.Second)
	f.Expire()
	if n := f.Conntrack(); n != 0 {
		t.Fatalf("after Expire: %d flows", n)
	}
}

func TestReloadKeepsAllowedFlowsAndCutsTheRest(t *testing.T) {
	clk := newClock()
	before := Config{
		Inbound:  []Rule{{Port: "22", Proto: "tcp", Host: "any"}, {Port: "80", Proto: "tcp", Host: "any"}},
		Outbound: []Rule{{Port: "any", Proto: "any", Host: "any"}},
	}
	f := newFW(t, before, clk)
	ssh := tcpIn("10.42.1.5", 50000, 22, tcpACK)
	http := tcpIn("10.42.1.5", 50001, 80, tcpACK)
	dns := udpOut("10.42.1.5", 5000, 53)
	dnsReply := udpIn("10.42.1.5", 53, 5000)
	for _, p := range []struct {
		pkt []byte
		dir Direction
	}{{ssh, Inbound}, {http, Inbound}, {dns, Outbound}} {
		if v := f.Verdict(p.pkt, p.dir, web); !v.Allowed() {
			t.Fatalf("before reload: %v", v)
		}
	}

	after := Config{
		Inbound:  []Rule{{Port: "22", Proto: "tcp", Host: "any"}, {Port: "443", Proto: "tcp", Host: "any"}},
		Outbound: []Rule{{Port: "80", Proto: "tcp", Host: "any"}},
	}
	if err := f.Reload(after); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		pkt  []byte
		dir  Direction
		want Verdict
	}{
		{"ssh, still allowed, keeps going", ssh, Inbound, Verdict{Accept, ReasonConntrack}},
		{"ssh answers too", tcpOut("10.42.1.5", 22, 50000, tcpACK), Outbound, Verdict{Accept, ReasonConntrack}},
		{"http, no longer allowed, is cut", http, Inbound, Verdict{Drop, ReasonNoRule}},
		{"and stays cut", tcpOut("10.42.1.5", 80, 50001, tcpACK), Outbound, Verdict{Drop, ReasonNoRule}},
		{"dns reply of a flow outbound rules no longer allow", dnsReply, Inbound, Verdict{Drop, ReasonNoRule}},
		{"new rule applies to new flows", tcpIn("10.42.1.5", 50002, 443, tcpSYN), Inbound, Verdict{Accept, ReasonRule}},
		{"new outbound rule too", tcpOut("10.42.1.5", 40000, 80, tcpSYN), Outbound, Verdict{Accept, ReasonRule}},
		{"old outbound rule is gone", udpOut("10.42.1.5", 5001, 53), Outbound, Verdict{Drop, ReasonNoRule}},
	} {
		if got := f.Verdict(tc.pkt, tc.dir, web); got != tc.want {
			t.Errorf("%s: verdict %v, want %v", tc.name, got, tc.want)
		}
	}

	if err := f.Reload(Config{Inbound: []Rule{{Port: "x", Proto: "tcp", Host: "any"}}}); err == nil {
		t.Fatal("invalid reload accepted")
	}
	if v := f.Verdict(ssh, Inbound, web); !v.Allowed() {
		t.Fatalf("a failed reload changed the rules: %v", v)
	}
}

func TestReloadRecheckUsesThePeer(t *testing.T) {
	f := newFW(t, in(Rule{Port: "80", Proto: "tcp", Host: "any"}), newClock())
	f.Verdict(tcpIn("10.42.1.5", 1, 80, tcpSYN), Inbound, web)
	f.Verdict(tcpIn("10.42.2.7", 1, 80, tcpSYN), Inbound, laptop)
	if err := f.Reload(in(Rule{Port: "80", Proto: "tcp", Group: "web"})); err != nil {
		t.Fatal(err)
	}
	if v := f.Verdict(tcpIn("10.42.1.5", 1, 80, tcpACK), Inbound, web); v != (Verdict{Accept, ReasonConntrack}) {
		t.Errorf("web's flow: %v", v)
	}
	if v := f.Verdict(tcpIn("10.42.2.7", 1, 80, tcpACK), Inbound, laptop); v.Allowed() {
		t.Errorf("laptop's flow survived a reload that excludes it: %v", v)
	}
}

func TestFragments(t *testing.T) {
	const peerIP = "10.42.1.5"
	first := func(id uint16, dport uint16) []byte {
		return v4{src: peerIP, dst: local, proto: ProtoUDP, id: id, more: true, payload: udpDgram(1000, dport, make([]byte, 24)...)}.bytes()
	}
	later := func(id uint16, off8 uint16) []byte {
		return v4{src: peerIP, dst: local, proto: ProtoUDP, id: id, off8: off8, payload: make([]byte, 16)}.bytes()
	}
	dns := in(Rule{Port: "53", Proto: "udp", Host: "any"})
	for _, tc := range []struct {
		name  string
		cfg   Config
		steps [][]byte
		want  []Verdict
	}{
		{"later fragments follow an admitted first", dns,
			[][]byte{first(1, 53), later(1, 4), later(1, 6)},
			[]Verdict{{Accept, ReasonRule}, {Accept, ReasonConntrack}, {Accept, ReasonConntrack}}},
		{"a refused first fragment takes its datagram with it", dns,
			[][]byte{first(2, 54), later(2, 4)},
			[]Verdict{{Drop, ReasonNoRule}, {Drop, ReasonFragmentUnknownFlow}}},
		{"later fragment of an unknown datagram", dns,
			[][]byte{later(3, 4)}, []Verdict{{Drop, ReasonFragmentUnknownFlow}}},
		{"another datagram id is another datagram", dns,
			[][]byte{first(4, 53), later(5, 4)},
			[]Verdict{{Accept, ReasonRule}, {Drop, ReasonFragmentUnknownFlow}}},
		{"overlap with the admitted first fragment", dns,
			[][]byte{first(6, 53), later(6, 3)},
			[]Verdict{{Accept, ReasonRule}, {Drop, ReasonFragmentOverlap}}},
		{"a second first fragment is judged on its own ports", dns,
			[][]byte{first(7, 53), first(7, 22)},
			[]Verdict{{Accept, ReasonRule}, {Drop, ReasonNoRule}}},
		{"port fragment rule admits later fragments", in(Rule{Port: "fragment", Proto: "udp", Host: "any"}),
			[][]byte{later(8, 4), first(8, 53)},
			[]Verdict{{Accept, ReasonRule}, {Drop, ReasonNoRule}}},
		{"port any admits later fragments, as in Nebula", in(Rule{Port: "any", Proto: "udp", Host: "any"}),
			[][]byte{later(9, 4)}, []Verdict{{Accept, ReasonRule}}},
		{"port fragment of another proto does not", in(Rule{Port: "fragment", Proto: "tcp", Host: "any"}),
			[][]byte{later(10, 4)}, []Verdict{{Drop, ReasonFragmentUnknownFlow}}},
		{"a reject action never rejects a fragment", Config{InboundAction: "reject"},
			[][]byte{later(11, 4)}, []Verdict{{Drop, ReasonFragmentUnknownFlow}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFW(t, tc.cfg, newClock())
			for i, pkt := range tc.steps {
				if got := f.Verdict(pkt, Inbound, web); got != tc.want[i] {
					t.Fatalf("step %d: verdict %v, want %v", i, got, tc.want[i])
				}
			}
		})
	}
}

func TestFragmentWindowCloses(t *testing.T) {
	clk := newClock()
	f := newFW(t, in(Rule{Port: "53", Proto: "udp", Host: "any"}), clk)
	first := v4{src: "10.42.1.5", dst: local, proto: ProtoUDP, id: 1, more: true, payload: udpDgram(1000, 53, make([]byte, 24)...)}.bytes()
	later := v4{src: "10.42.1.5", dst: local, proto: ProtoUDP, id: 1, off8: 4, payload: make([]byte, 8)}.bytes()
	f.Verdict(first, Inbound, web)
	clk.Advance(31 * time.Second)
	if v := f.Verdict(later, Inbound, web); v != (Verdict{Drop, ReasonFragmentUnknownFlow}) {
		t.Fatalf("fragment after reassembly timeout: %v", v)
	}
}

func TestOutboundFragmentsOfAnAllowedFlowLetRepliesThrough(t *testing.T) {
	f := newFW(t, out(Rule{Port: "53", Proto: "udp", Host: "any"}), newClock())
	q := udpOut("10.42.1.5", 5000, 53)
	if v := f.Verdict(q, Outbound, web); !v.Allowed() {
		t.Fatal(v)
	}
	// The answer arrives fragmented: its first fragment matches the flow, the rest follow it.
	first := v4{src: "10.42.1.5", dst: local, proto: ProtoUDP, id: 42, more: true, payload: udpDgram(53, 5000, make([]byte, 24)...)}.bytes()
	later := v4{src: "10.42.1.5", dst: local, proto: ProtoUDP, id: 42, off8: 4, payload: make([]byte, 100)}.bytes()
	if v := f.Verdict(first, Inbound, web); v != (Verdict{Accept, ReasonConntrack}) {
		t.Fatalf("first fragment: %v", v)
	}
	if v := f.Verdict(later, Inbound, web); v != (Verdict{Accept, ReasonConntrack}) {
		t.Fatalf("later fragment: %v", v)
	}
}

func TestParseFailuresAreDroppedEvenWithAllowAll(t *testing.T) {
	f := newFW(t, in(Rule{Port: "any", Proto: "any", Host: "any"}), nil)
	for _, tc := range parseCases() {
		if tc.want.Reason == ReasonNone {
			continue
		}
		if v := f.Verdict(tc.pkt, Inbound, web); v != (Verdict{Drop, tc.want.Reason}) {
			t.Errorf("%s: verdict %v, want drop/%v", tc.name, v, tc.want.Reason)
		}
	}
}

func TestIPv6IsJudgedToo(t *testing.T) {
	p6 := NewPeer("v6", []netip.Prefix{pfx("fd00::5/64")}, nil, []string{"web"}, "Acme", shaAcme)
	f, err := New(in(Rule{Port: "53", Proto: "udp", Group: "web"}, Rule{Port: "any", Proto: "icmp", Host: "any"}), Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		pkt  []byte
		want Action
	}{
		{"udp 53 behind a legal chain", v6{src: "fd00::5", dst: "fd00::1", nh: ProtoHopByHop, payload: cat(ext6(ProtoDstOpts, 0), ext6(ProtoUDP, 0), udpDgram(1, 53))}.bytes(), Accept},
		{"udp 54", v6{src: "fd00::5", dst: "fd00::1", nh: ProtoUDP, payload: udpDgram(1, 54)}.bytes(), Drop},
		{"icmpv6 matches proto icmp", v6{src: "fd00::5", dst: "fd00::1", nh: ProtoICMPv6, payload: icmpMsg(128, 0, 1)}.bytes(), Accept},
		{"icmpv4 inside ipv6 is not icmp", v6{src: "fd00::5", dst: "fd00::1", nh: ProtoICMP, payload: icmpMsg(8, 0, 1)}.bytes(), Drop},
		{"unknown next header aimed at a udp rule", v6{src: "fd00::5", dst: "fd00::1", nh: ProtoDstOpts, payload: cat(ext6(253, 0), udpDgram(1, 53))}.bytes(), Drop},
		{"esp aimed at a udp rule", v6{src: "fd00::5", dst: "fd00::1", nh: ProtoESP, payload: cat(udpDgram(1, 53), udpDgram(1, 53))}.bytes(), Drop},
	} {
		if got := f.Verdict(tc.pkt, Inbound, p6); got.Action != tc.want {
			t.Errorf("%s: verdict %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestReasonLabelsAreStable(t *testing.T) {
	want := map[Reason]string{
		ReasonNone: "none", ReasonConntrack: "conntrack", ReasonRule: "rule", ReasonNoRule: "no_rule",
		ReasonTruncated: "truncated", ReasonMalformed: "malformed", ReasonBadVersion: "bad_version",
		ReasonExtHeaderLimit: "ext_header_limit", ReasonRoutingHeader: "routing_header",
		ReasonFragmentUnknownFlow: "fragment_unknown_flow", ReasonFragmentOverlap: "fragment_overlap",
		ReasonFragmentTooSmall: "fragment_too_small", ReasonRemoteAddr: "remote_addr",
		ReasonLocalAddr: "local_addr", ReasonNoPeer: "no_peer", ReasonConntrackFull: "conntrack_full",
	}
	if got := Reasons(); len(got) != len(want) {
		t.Fatalf("Reasons() has %d entries, want %d", len(got), len(want))
	}
	for r, s := range want {
		if r.String() != s {
			t.Errorf("Reason %d = %q, want %q", r, r.String(), s)
		}
	}
	if Reason(200).String() != "unknown" {
		t.Error("out-of-range reason")
	}
	if (Verdict{Reject, ReasonNoRule}).String() != "reject/no_rule" {
		t.Error("verdict string")
	}
}

func TestIPv6FragmentsFollowTheirFirst(t *testing.T) {
	p6 := NewPeer("v6", []netip.Prefix{pfx("fd00::5/64")}, nil, nil, "", "")
	f, err := New(in(Rule{Port: "53", Proto: "udp", Host: "any"}), Options{Now: newClock().Now})
	if err != nil {
		t.Fatal(err)
	}
	pkt := func(payload []byte) []byte {
		return v6{src: "fd00::5", dst: "fd00::1", nh: ProtoDstOpts, payload: cat(ext6(ProtoFragment, 0), payload)}.bytes()
	}
	first := pkt(cat(frag6(ProtoUDP, 0, true, 99), udpDgram(1, 53, make([]byte, 8)...)))
	later := pkt(cat(frag6(ProtoUDP, 2, false, 99), make([]byte, 30)))
	overlap := pkt(cat(frag6(ProtoUDP, 1, false, 99), make([]byte, 30)))
	stranger := pkt(cat(frag6(ProtoUDP, 2, false, 100), make([]byte, 30)))
	for i, s := range []struct {
		pkt  []byte
		want Verdict
	}{
		{stranger, Verdict{Drop, ReasonFragmentUnknownFlow}},
		{first, Verdict{Accept, ReasonRule}},
		{later, Verdict{Accept, ReasonConntrack}},
		{overlap, Verdict{Drop, ReasonFragmentOverlap}},
		{stranger, Verdict{Drop, ReasonFragmentUnknownFlow}},
	} {
		if got := f.Verdict(s.pkt, Inbound, p6); got != s.want {
			t.Fatalf("step %d: verdict %v, want %v", i, got, s.want)
		}
	}
}

func TestConfigWarningsReachTheLogger(t *testing.T) {
	var buf strings.Builder
	log := slog.New(slog.NewTextHandler(&buf, nil))
	cfg := in(Rule{Port: "8", Proto: "icmp", Host: "any"})
	if _, err := New(cfg, Options{Logger: log}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"ignoring the port of an icmp rule", "firewall.inbound[0]"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("log %q lacks %q", buf.String(), want)
		}
	}
}

func TestReloadRechecksDatagramsInFlight(t *testing.T) {
	first := v4{src: "10.42.1.5", dst: local, proto: ProtoUDP, id: 5, more: true, payload: udpDgram(1000, 53, make([]byte, 24)...)}.bytes()
	later := func(off8 uint16) []byte {
		return v4{src: "10.42.1.5", dst: local, proto: ProtoUDP, id: 5, off8: off8, more: true, payload: make([]byte, 8)}.bytes()
	}
	for _, tc := range []struct {
		name  string
		after Config
		want  Verdict
	}{
		{"still allowed", in(Rule{Port: "53", Proto: "udp", Group: "web"}), Verdict{Accept, ReasonConntrack}},
		{"no longer allowed", in(Rule{Port: "54", Proto: "udp", Host: "any"}), Verdict{Drop, ReasonFragmentUnknownFlow}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFW(t, in(Rule{Port: "53", Proto: "udp", Host: "any"}), newClock())
			if v := f.Verdict(first, Inbound, web); !v.Allowed() {
				t.Fatal(v)
			}
			if err := f.Reload(tc.after); err != nil {
				t.Fatal(err)
			}
			for _, off := range []uint16{4, 5} { // the second meets an entry already re-checked (or gone)
				if v := f.Verdict(later(off), Inbound, web); v != tc.want {
					t.Fatalf("fragment at %d after reload: %v, want %v", off*8, v, tc.want)
				}
			}
		})
	}
}

func TestVerdictHelpers(t *testing.T) {
	if !(Verdict{Accept, ReasonRule}).Accepted() || (Verdict{Reject, ReasonNoRule}).Accepted() {
		t.Error("Accepted")
	}
	if !(Verdict{Reject, ReasonNoRule}).Rejected() || (Verdict{Drop, ReasonNoRule}).Rejected() {
		t.Error("Rejected")
	}
	for _, r := range Reasons() {
		want := r != ReasonNone && r != ReasonConntrack && r != ReasonRule && r != ReasonNoRule &&
			r != ReasonRemoteAddr && r != ReasonLocalAddr && r != ReasonNoPeer && r != ReasonFragmentUnknownFlow &&
			r != ReasonConntrackFull
		if r.ParseError() != want {
			t.Errorf("%v.ParseError() = %v", r, r.ParseError())
		}
	}
	if Inbound.String() != "inbound" || Outbound.String() != "outbound" || Direction(0).String() != "invalid" {
		t.Error("Direction.String")
	}
}

func TestFullConntrackRefusesNewFlowsOnly(t *testing.T) {
	clk := newClock()
	f, err := New(Config{
		Inbound:  []Rule{{Port: "any", Proto: "udp", Host: "any"}},
		Outbound: []Rule{{Port: "any", Proto: "any", Host: "any"}},
	}, Options{Now: clk.Now, MaxFlows: numShards}) // one flow per shard
	if err != nil {
		t.Fatal(err)
	}
	// Spray source ports until some flow lands on a shard that is already taken.
	admitted, refused := 0, 0
	var refusedPort uint16
	for p := uint16(1); p <= 2000; p++ {
		switch v := f.Verdict(udpIn("10.42.1.5", p, 53), Inbound, web); v {
		case Verdict{Accept, ReasonRule}:
			admitted++
		case Verdict{Drop, ReasonConntrackFull}:
			refused++
			refusedPort = p
		default:
			t.Fatalf("port %d: %v", p, v)
		}
	}
	if admitted != numShards || refused != 2000-numShards || f.Conntrack() != numShards {
		t.Fatalf("admitted %d, refused %d, tracked %d; want %d admitted", admitted, refused, f.Conntrack(), numShards)
	}
	// Tracked flows keep working while the table is full.
	if v := f.Verdict(udpIn("10.42.1.5", 1, 53), Inbound, web); v != (Verdict{Accept, ReasonConntrack}) {
		t.Fatalf("tracked flow in a full table: %v", v)
	}
	// Once the flows expire, their room is reused at once.
	clk.Advance(DefaultUDPTimeout + time.Second)
	if v := f.Verdict(udpIn("10.42.1.5", refusedPort, 53), Inbound, web); v != (Verdict{Accept, ReasonRule}) {
		t.Fatalf("new flow after expiry: %v", v)
	}
}
