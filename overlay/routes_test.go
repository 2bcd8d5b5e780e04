package overlay

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/meshnode/meshnode/overlay/tun/tuntest"
)

func TestUnsafeRoutesParseBothViaForms(t *testing.T) {
	y := minimalPKI + `tun:
  mtu: 1400
  routes:
    - {route: 10.42.200.0/24, mtu: 1200}
  unsafe_routes:
    - route: 198.19.0.0/16
      via: 10.42.0.2
      metric: 100
    - route: 198.19.5.0/24
      via:
        - {gateway: 10.42.0.3, weight: 3}
        - gateway: 10.42.0.4
      mtu: 1300
      install: false
`
	c, err := ParseConfig([]byte(y), "node.yml")
	if err != nil {
		t.Fatal(err)
	}
	rt, err := parseRoutes(&c.Tun, netip.MustParsePrefix("10.42.0.0/16"), netip.MustParseAddr("10.42.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	if len(rt.unsafe) != 2 || len(rt.tunnel) != 1 {
		t.Fatalf("table %+v", rt)
	}
	// Longest prefix first: 198.19.5.7 takes the /24 through the two weighted gateways.
	r := rt.lookup(netip.MustParseAddr("198.19.5.7"))
	if r == nil || r.dst.Bits() != 24 || len(r.gateways) != 2 || r.gateways[0].weight != 3 || r.gateways[1].weight != 1 || r.install || r.mtu != 1300 {
		t.Fatalf("198.19.5.7 -> %+v", r)
	}
	if r := rt.lookup(netip.MustParseAddr("198.19.6.1")); r == nil || r.gateways[0].addr != netip.MustParseAddr("10.42.0.2") || r.metric != 100 || !r.install {
		t.Fatalf("198.19.6.1 -> %+v", r)
	}
	if rt.lookup(netip.MustParseAddr("203.0.113.1")) != nil {
		t.Fatal("a destination outside every route found one")
	}
	// Weight 3 : 1 takes about three quarters of the flows.
	counts := [2]int{}
	for p := range 4000 {
		pkt := tuntest.IPv4UDP(netip.AddrPortFrom(netip.MustParseAddr("10.42.0.1"), uint16(1024+p)), netip.MustParseAddrPort("198.19.5.7:53"), nil)
		h := flowHash(pkt)
		if h <= r.gateways[0].bound {
			counts[0]++
		} else {
			counts[1]++
		}
	}
	if counts[0] < 2700 || counts[0] > 3300 {
		t.Fatalf("weights 3:1 split 4000 flows %v", counts)
	}
}

func TestUnsafeRoutesRefuseBadEntries(t *testing.T) {
	vpn := netip.MustParsePrefix("10.42.0.0/16")
	me := netip.MustParseAddr("10.42.0.1")
	for _, tc := range []struct{ yaml, want string }{
		{"tun:\n  unsafe_routes: [{route: nope, via: 10.42.0.2}]\n", `tun.unsafe_routes[0].route: "nope" is not an IPv4 CIDR`},
		{"tun:\n  unsafe_routes: [{route: 198.19.0.0/16}]\n", "tun.unsafe_routes[0].via: required"},
		{"tun:\n  unsafe_routes: [{route: 198.19.0.0/16, via: 10.43.0.2}]\n", "gateway 10.43.0.2 is not inside this host's network"},
		{"tun:\n  unsafe_routes: [{route: 198.19.0.0/16, via: 10.42.0.1}]\n", "gateway 10.42.0.1 is this host"},
		{"tun:\n  unsafe_routes: [{route: 10.42.9.0/24, via: 10.42.0.2}]\n", "overlaps this host's overlay network"},
		{"tun:\n  unsafe_routes: [{route: 198.19.0.0/16, via: 10.42.0.2, mtu: 100}]\n", "tun.unsafe_routes[0].mtu: 100 is out of range"},
		{"tun:\n  unsafe_routes: [{route: 198.19.0.0/16, via: [{gateway: 10.42.0.2, weight: 0}]}]\n", "weight 0 is out of range"},
		{"tun:\n  unsafe_routes: [{route: 198.19.0.0/16, via: [{gateway: 10.42.0.2, wieght: 2}]}]\n", `unknown key "wieght"`},
		{"tun:\n  unsafe_routes: [{route: 198.19.0.0/16, via: [{gateway: 10.42.0.2}, {gateway: 10.42.0.2}]}]\n", "listed twice"},
		{"tun:\n  unsafe_routes: [{route: 198.19.0.0/16, via: 10.42.0.2, gateway: 1}]\n", "gateway"},
		{"tun:\n  routes: [{route: 10.42.0.0/16, mtu: 1200}]\n", "set tun.mtu instead"},
		{"tun:\n  routes: [{route: 198.19.0.0/16, mtu: 1200}]\n", "is not inside this host's network"},
		{"tun:\n  routes: [{route: 10.42.1.0/24}]\n", "tun.routes[0].mtu: required"},
		{"tun:\n  use_system_route_table: true\n", "tun.use_system_route_table: not supported"},
	} {
		c, err := ParseConfig([]byte(minimalPKI+tc.yaml), "node.yml")
		if err == nil {
			_, err = parseRoutes(&c.Tun, vpn, me)
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", strings.TrimSpace(tc.yaml), err, tc.want)
		}
	}
}

// FuzzFlowHash: the hash reads any packet the TUN can hand over without panicking.
func FuzzFlowHash(f *testing.F) {
	f.Add(tuntest.IPv4UDP(netip.MustParseAddrPort("10.42.0.1:1"), netip.MustParseAddrPort("198.19.5.7:53"), []byte("x")))
	f.Add(make([]byte, 20))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) < 20 {
			return // the send path drops these before routing
		}
		flowHash(b)
	})
}
