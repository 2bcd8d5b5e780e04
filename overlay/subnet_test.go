package overlay_test

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/meshnode/meshnode/cert/certtest"
	"github.com/meshnode/meshnode/overlay"
	"github.com/meshnode/meshnode/overlay/tun/tuntest"
)

// subnetConfig is a full-mesh config with tun and firewall sections of the test's choosing.
func subnetConfig(m *mesh, i int, tunYAML, inbound string) string {
	y := "static_host_map:\n"
	for j, o := range m.hosts {
		if j != i {
			y += fmt.Sprintf("  %q: [%q]\n", o.vpn.String(), o.under.String())
		}
	}
	y += "handshakes:\n  try_interval: 20ms\n  retries: 10\n"
	y += "timers:\n  connection_alive_interval: 1s\n  pending_deletion_interval: 2s\n"
	if inbound == "" {
		inbound = "[{port: any, proto: any, host: any}]"
	}
	y += "firewall:\n  outbound: [{port: any, proto: any, host: any}]\n  inbound: " + inbound + "\n"
	return y + tunYAML
}

func addrPort(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

// awaitDelivered waits for pkt (byte for byte) on host j's TUN, injecting it at host i
// every 100 ms; it reports whether it arrived.
func (m *mesh) deliveredWithin(i, j int, pkt []byte, within time.Duration) bool {
	deadline := time.Now().Add(within)
	next := time.Now()
	for time.Now().Before(deadline) {
		if !time.Now().Before(next) {
			m.hosts[i].dev.Inject(pkt)
			next = time.Now().Add(100 * time.Millisecond)
		}
		select {
		case got := <-m.hosts[j].dev.Delivered():
			if string(got) == string(pkt) {
				return true
			}
		case <-time.After(10 * time.Millisecond):
		}
	}
	return false
}

// TestUnsafeRouteThroughGateway: host1 reaches 198.19.5.0/24 behind host2 (whose cert
// carries it); replies come back; host3, whose cert does not carry 198.19.6.0/24, cannot act
// as its gateway (host1's firewall refuses to send, and host3 drops and counts what arrives
// anyway); a peer cannot send with a source inside another host's subnet; local_cidr on the
// gateway admits one LAN host and not the other.
func TestUnsafeRouteThroughGateway(t *testing.T) {
	m := newMeshWith(t, 3, "", func(i int) []certtest.Option {
		if i == 1 {
			return []certtest.Option{certtest.WithSubnets("198.19.5.0/24")}
		}
		return nil
	}, func(m *mesh, i int) string {
		switch i {
		case 0:
			return subnetConfig(m, i, "tun:\n  unsafe_routes:\n    - {route: 198.19.5.0/24, via: 10.42.0.2}\n    - route: 198.19.6.0/24\n      via: [{gateway: 10.42.0.3, weight: 1}]\n", "")
		case 1:
			return subnetConfig(m, i, "", "[{port: any, proto: any, host: any}, {port: any, proto: udp, host: any, local_cidr: 198.19.5.10/32}]")
		}
		return subnetConfig(m, i, "", "")
	})
	client, gw, other := m.hosts[0], m.hosts[1], m.hosts[2]

	toLAN := tuntest.IPv4UDP(netip.AddrPortFrom(client.vpn, 5000), addrPort("198.19.5.10:53"), []byte("to the LAN"))
	if !m.deliveredWithin(0, 1, toLAN, 5*time.Second) {
		t.Fatal("packet for the LAN never reached the gateway's TUN")
	}
	reply := tuntest.IPv4UDP(addrPort("198.19.5.10:53"), netip.AddrPortFrom(client.vpn, 5000), []byte("from the LAN"))
	if !m.deliveredWithin(1, 0, reply, 5*time.Second) {
		t.Fatal("reply from the LAN never reached the client")
	}

	// local_cidr: 198.19.5.11 is in the gateway's subnet but no rule names it.
	before := gw.node.Dropped("firewall_inbound")
	toOther := tuntest.IPv4UDP(netip.AddrPortFrom(client.vpn, 5001), addrPort("198.19.5.11:53"), []byte("not admitted"))
	if m.deliveredWithin(0, 1, toOther, 500*time.Millisecond) {
		t.Fatal("a LAN host no local_cidr rule names was reached")
	}
	if gw.node.Dropped("firewall_inbound") <= before {
		t.Fatal("the gateway's firewall did not count the refused packet")
	}

	// A gateway whose cert lacks the subnet: our own outbound firewall stops it...
	toNowhere := tuntest.IPv4UDP(netip.AddrPortFrom(client.vpn, 5000), addrPort("198.19.6.10:53"), []byte("no gateway"))
	client.dev.Inject(toNowhere)
	eventually(t, 5*time.Second, "client refuses to send through a gateway without the subnet", func() bool {
		client.dev.Inject(toNowhere)
		return client.node.Dropped("firewall_outbound") >= 1
	})
	// ...and a gateway drops what arrives for a subnet it does not carry, counted.
	m.sendUntil(0, 2, m.udpPacket(0, 2, "tunnel up"), 5*time.Second)
	before = other.node.Dropped("inner_destination_not_ours")
	m.net.Inject(client.under, other.under, client.node.SealForTest(other.vpn, toNowhere))
	eventually(t, 2*time.Second, "gateway without the subnet counts the drop", func() bool {
		return other.node.Dropped("inner_destination_not_ours") > before
	})

	// host3 holds valid keys but claims a source in host2's subnet: dropped and counted.
	spoof := tuntest.IPv4UDP(addrPort("198.19.5.10:53"), netip.AddrPortFrom(client.vpn, 5000), []byte("spoofed LAN source"))
	before = client.node.Dropped("inner_source_not_in_cert")
	m.net.Inject(other.under, client.under, other.node.SealForTest(client.vpn, spoof))
	eventually(t, 2*time.Second, "spoofed subnet source counted", func() bool {
		return client.node.Dropped("inner_source_not_in_cert") > before
	})
	select {
	case p := <-client.dev.Delivered():
		if string(p) == string(spoof) {
			t.Fatal("a packet with a source in another host's subnet was delivered")
		}
	case <-time.After(100 * time.Millisecond):
	}

	routes := client.node.Routes()
	if len(routes) != 2 || routes[0].Gateways[0].Gateway != gw.vpn || !routes[0].Gateways[0].Tunnel || !routes[0].Gateways[0].Carries {
		t.Fatalf("Routes() = %+v", routes)
	}
}

// TestWeightedGatewaysFailOverAndBack: flows to a network behind two gateways spread over
// both; when one goes away its flows move to the other once its tunnel is gone, and come
// back when it returns.
func TestWeightedGatewaysFailOverAndBack(t *testing.T) {
	m := newMeshWith(t, 3, "", func(i int) []certtest.Option {
		if i > 0 {
			return []certtest.Option{certtest.WithSubnets("198.19.5.0/24")}
		}
		return nil
	}, func(m *mesh, i int) string {
		tunYAML := ""
		if i == 0 {
			tunYAML = "tun:\n  unsafe_routes:\n    - route: 198.19.5.0/24\n      via:\n        - {gateway: 10.42.0.2, weight: 1}\n        - {gateway: 10.42.0.3, weight: 1}\n"
		}
		return subnetConfig(m, i, tunYAML, "[{port: any, proto: any, host: any, local_cidr: any}]")
	})
	// flows sends one packet per flow and reports how many reached each gateway.
	flows := func() (got [3]int) {
		for _, h := range m.hosts[1:] {
			drain(h.dev)
		}
		for p := range 64 {
			m.hosts[0].dev.Inject(tuntest.IPv4UDP(netip.AddrPortFrom(m.hosts[0].vpn, uint16(10000+p)), addrPort("198.19.5.10:53"), []byte("flow")))
		}
		deadline := time.After(300 * time.Millisecond)
		for {
			select {
			case <-m.hosts[1].dev.Delivered():
				got[1]++
			case <-m.hosts[2].dev.Delivered():
				got[2]++
			case <-deadline:
				return got
			}
		}
	}
	eventually(t, 5*time.Second, "both gateways carry flows", func() bool {
		got := flows()
		return got[1] > 0 && got[2] > 0 && got[1]+got[2] == 64
	})
	m.stop(1)
	eventually(t, 10*time.Second, "every flow moves to the remaining gateway", func() bool {
		got := flows()
		return got[2] == 64
	})
	m.start(1)
	eventually(t, 10*time.Second, "the returning gateway takes its flows back", func() bool {
		got := flows()
		return got[1] > 0 && got[2] > 0 && got[1]+got[2] == 64
	})
}

// TestUnsafeRoutesReload: SetRoutes adds and removes routes without a restart.
func TestUnsafeRoutesReload(t *testing.T) {
	tunA := "tun:\n  unsafe_routes:\n    - {route: 198.19.5.0/24, via: 10.42.0.2}\n"
	cur := ""
	m := newMeshWith(t, 2, "", func(i int) []certtest.Option {
		if i == 1 {
			return []certtest.Option{certtest.WithSubnets("198.19.5.0/24")}
		}
		return nil
	}, func(m *mesh, i int) string {
		if i == 0 {
			return subnetConfig(m, i, cur, "[{port: any, proto: any, host: any, local_cidr: any}]")
		}
		return subnetConfig(m, i, "", "[{port: any, proto: any, host: any, local_cidr: any}]")
	})
	pkt := tuntest.IPv4UDP(netip.AddrPortFrom(m.hosts[0].vpn, 5000), addrPort("198.19.5.10:53"), []byte("x"))
	m.sendUntil(0, 1, m.udpPacket(0, 1, "up"), 5*time.Second)
	if m.deliveredWithin(0, 1, pkt, 300*time.Millisecond) {
		t.Fatal("routed without a route")
	}
	cur = tunA
	cfg, err := overlay.ParseConfig([]byte(m.config(0)), "reload.yml")
	if err != nil {
		t.Fatal(err)
	}
	changes, err := m.hosts[0].node.SetRoutes(cfg)
	if err != nil || len(changes) != 1 || !strings.Contains(changes[0], "198.19.5.0/24 added") {
		t.Fatalf("SetRoutes: %v %v", changes, err)
	}
	if !m.deliveredWithin(0, 1, pkt, 3*time.Second) {
		t.Fatal("route added by reload not used")
	}
	cur = ""
	cfg, _ = overlay.ParseConfig([]byte(m.config(0)), "reload.yml")
	if changes, err := m.hosts[0].node.SetRoutes(cfg); err != nil || len(changes) != 1 {
		t.Fatalf("SetRoutes: %v %v", changes, err)
	}
	if m.deliveredWithin(0, 1, pkt, 300*time.Millisecond) {
		t.Fatal("route removed by reload still used")
	}
}
