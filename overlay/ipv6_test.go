package overlay_test

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/meshnode/meshnode/cert"
	"github.com/meshnode/meshnode/cert/certtest"
	"github.com/meshnode/meshnode/overlay/tun/tuntest"
)

func vpn6Of(i int) netip.Addr { return netip.MustParseAddr(fmt.Sprintf("fd42::%d", i+1)) }

// v6Mesh is three hosts with v2 certificates for 10.42.0.N/16 and fd42::N/64. host1's
// static_host_map names host2 by its IPv6 address only, so the handshake targets it.
func v6Mesh(t *testing.T, inbound func(i int) string) *mesh {
	return newMeshWith(t, 3, "", func(i int) []certtest.Option {
		return []certtest.Option{certtest.WithVersion(cert.Version2), certtest.WithIPs(vpn6Of(i).String() + "/64")}
	}, func(m *mesh, i int) string {
		y := "static_host_map:\n"
		for j, o := range m.hosts {
			switch {
			case j == i:
			case i == 0 && j == 1:
				y += fmt.Sprintf("  %q: [%q]\n", vpn6Of(j).String(), o.under.String())
			default:
				y += fmt.Sprintf("  %q: [%q]\n", o.vpn.String(), o.under.String())
			}
		}
		y += "handshakes:\n  try_interval: 20ms\n  retries: 10\n"
		y += "firewall:\n  outbound: [{port: any, proto: any, host: any}]\n  inbound: " + inbound(i) + "\n"
		return y
	})
}

func udp6(src netip.Addr, sport uint16, dst netip.Addr, dport uint16, payload string) []byte {
	return tuntest.IPv6UDP(netip.AddrPortFrom(src, sport), netip.AddrPortFrom(dst, dport), []byte(payload))
}

// TestIPv6InnerPacketsBothWays: IPv6 packets between v2 hosts go through the send path (a
// handshake started for an IPv6 destination; an existing tunnel found by the peer's IPv6
// address), the receive path (source one of the peer's cert addresses, destination ours),
// and the firewall (cidr and local_cidr in IPv6, conntrack admitting replies); what breaks
// a rule is dropped and counted.
func TestIPv6InnerPacketsBothWays(t *testing.T) {
	m := v6Mesh(t, func(i int) string {
		switch i {
		case 0:
			return "[{port: 9, proto: tcp, host: any}]" // replies only, through conntrack
		case 1:
			return "[{port: 6000, proto: udp, cidr: 'fd42::1/128'}, {port: 7000, proto: udp, host: any, local_cidr: 'fd42::2/128'}, {port: 5001, proto: udp, host: any}]"
		}
		return "[{port: any, proto: any, host: any}]"
	})
	h1, h2, h3 := m.hosts[0], m.hosts[1], m.hosts[2]

	// host1 -> host2 by IPv6: the handshake targets fd42::2 (static_host_map), in v2.
	out := udp6(vpn6Of(0), 5000, vpn6Of(1), 6000, "hello over v6")
	m.sendUntil(0, 1, out, 5*time.Second)
	// The reply is admitted at host1 by conntrack alone.
	back := udp6(vpn6Of(1), 6000, vpn6Of(0), 5000, "reply over v6")
	m.sendUntil(1, 0, back, 5*time.Second)
	before := h1.node.Dropped("firewall_inbound")
	unsolicited := udp6(vpn6Of(1), 6001, vpn6Of(0), 5000, "not a reply")
	eventually(t, 2*time.Second, "host1's firewall refuses a packet no rule admits", func() bool {
		h2.dev.Inject(unsolicited)
		return h1.node.Dropped("firewall_inbound") > before
	})

	// host3 reaches host2 over IPv4 first; the same tunnel then carries IPv6 (the host map
	// finds it by host2's IPv6 address) and host2's local_cidr rule admits it.
	m.sendUntil(2, 1, tuntest.IPv4UDP(netip.AddrPortFrom(h3.vpn, 5000), netip.AddrPortFrom(h2.vpn, 5001), []byte("v4 first")), 5*time.Second)
	m.sendUntil(2, 1, udp6(vpn6Of(2), 5000, vpn6Of(1), 7000, "local_cidr v6"), 5*time.Second)
	// cidr fd42::1/128 does not admit host3 on port 6000.
	before = h2.node.Dropped("firewall_inbound")
	if m.deliveredWithin(2, 1, udp6(vpn6Of(2), 5000, vpn6Of(1), 6000, "wrong cidr"), 500*time.Millisecond) {
		t.Fatal("a v6 source outside the rule's cidr was admitted")
	}
	if h2.node.Dropped("firewall_inbound") <= before {
		t.Fatal("the refused v6 packet was not counted")
	}

	// A peer holding valid keys cannot use another host's IPv6 address, an IPv4-mapped
	// form of its own IPv4 one, or send to an address that is not ours.
	for _, c := range []struct {
		name, counter string
		pkt           []byte
	}{
		{"another host's v6 source", "inner_source_not_in_cert", udp6(vpn6Of(0), 5000, vpn6Of(1), 7000, "spoof")},
		{"v4-mapped source", "inner_source_not_in_cert", udp6(netip.AddrFrom16(h3.vpn.As16()), 5000, vpn6Of(1), 7000, "mapped")},
		{"v6 destination not ours", "inner_destination_not_ours", udp6(vpn6Of(2), 5000, netip.MustParseAddr("fd42::99"), 7000, "elsewhere")},
		{"truncated v6 header", "not_ip", udp6(vpn6Of(2), 5000, vpn6Of(1), 7000, "x")[:39]},
	} {
		before := h2.node.Dropped(c.counter)
		m.net.Inject(h3.under, h2.under, h3.node.SealForTest(h2.vpn, c.pkt))
		eventually(t, 2*time.Second, c.name+" counted as "+c.counter, func() bool {
			return h2.node.Dropped(c.counter) > before
		})
	}
	select {
	case p := <-h2.dev.Delivered():
		t.Fatalf("a refused packet was delivered: % x", p[:40])
	case <-time.After(50 * time.Millisecond):
	}
}
