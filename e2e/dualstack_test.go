package e2e

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshnode/meshnode/cert"
)

// TestTokenEnrolledHostsOfADualStackNetworkPingOverIPv6: the CA service hands out an IPv6
// address beside the IPv4 one in a dual-stack network, enrollment brings a v2 certificate
// with both, and two hosts that joined by token only reach each other over IPv6.
func TestTokenEnrolledHostsOfADualStackNetworkPingOverIPv6(t *testing.T) {
	m := newTokenMesh(t, "six", "lighthouse", "h1", "h2")
	m.makeCA("dual-stack e2e CA", "ca")
	m.writeCAConfig(tokenOneCA, 2*time.Hour)
	m.makeDualStack()
	m.startService()

	for _, h := range m.hosts {
		// The IPv4 address is chosen (the lighthouse's is in ca.yml); the IPv6 one is the
		// next free, fd42::1, ::2, ::3 in invite order.
		m.enroll(h, m.invite(h, "-ip", h.overlay), "")
		m.start(h)
	}
	h1, h2 := m.hosts[1], m.hosts[2]
	c := m.readCert(h1)
	want := []netip.Prefix{netip.MustParsePrefix("10.42.0.2/16"), netip.MustParsePrefix("fd42::2/48")}
	if c.Version() != cert.Version2 || !slices.Equal(c.Details.Ips, want) {
		t.Fatalf("h1's enrolled cert: %v %v, want v2 with %v", c.Version(), c.Details.Ips, want)
	}
	if _, err := h1.ns.WaitPing(tunnelUpTimeout, "fd42::3"); err != nil {
		t.Fatalf("h1 cannot reach h2 over IPv6: %v\n%s\n%s", err, h1.proc.Tail(20), h2.proc.Tail(20))
	}
	if err := h2.ns.Ping("10.42.0.2"); err != nil {
		t.Errorf("h2 cannot reach h1 over IPv4: %v", err)
	}
	if out, err := h1.ns.RunTimeout(5*time.Second, "ip", "-6", "addr", "show", "dev", "mesh0"); err != nil || !strings.Contains(out, "fd42::2/48") {
		t.Errorf("h1's TUN: %v\n%s", err, out)
	}
}
