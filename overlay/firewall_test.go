package overlay_test

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/meshnode/meshnode/cert/certtest"
	"github.com/meshnode/meshnode/overlay/tun/tuntest"
	"github.com/meshnode/meshnode/overlay/udp/udptest"
)

// TestGroupFirewallAllowsOnlyWhatRulesSay runs web, db and ops hosts whose inbound rules
// allow web -> db:5432 and ops -> any:22 (UDP here; the firewall package tests every field),
// with db rejecting the rest so senders get an ICMP error back through the tunnel.
func TestGroupFirewallAllowsOnlyWhatRulesSay(t *testing.T) {
	m := &mesh{t: t, ca: certtest.NewCA(t, "fw-test"), net: udptest.NewNetwork(11)}
	groups := []string{"web", "db", "ops"}
	for i, g := range groups {
		h := &meshHost{name: g, vpn: vpnOf(i), under: underOf(i)}
		h.host = m.ca.NewHost(t, g, h.vpn.String()+"/16", g)
		m.hosts = append(m.hosts, h)
	}
	m.configFn = func(i int) string {
		y := "static_host_map:\n"
		for j, o := range m.hosts {
			if j != i {
				y += fmt.Sprintf("  %q: [%q]\n", o.vpn.String(), o.under.String())
			}
		}
		y += "firewall:\n  outbound: [{port: any, proto: any, host: any}]\n  inbound:\n"
		y += "    - {port: any, proto: icmp, host: any}\n"
		y += "    - {port: 22, proto: udp, group: ops}\n"
		if groups[i] == "db" {
			y += "    - {port: 5432, proto: udp, group: web}\n  inbound_action: reject\n"
		}
		return y
	}
	for i := range m.hosts {
		m.start(i)
	}
	t.Cleanup(func() {
		for i := range m.hosts {
			m.stop(i)
		}
	})
	web, db, ops := 0, 1, 2
	pkt := func(from, to int, port uint16) []byte {
		return tuntest.IPv4UDP(netip.AddrPortFrom(m.hosts[from].vpn, 40000), netip.AddrPortFrom(m.hosts[to].vpn, port), []byte("q"))
	}
	m.sendUntil(web, db, pkt(web, db, 5432), 5*time.Second)
	m.sendUntil(ops, db, pkt(ops, db, 22), 5*time.Second)
	m.sendUntil(ops, web, pkt(ops, web, 22), 5*time.Second)

	denied := []struct {
		from, to int
		port     uint16
	}{{web, db, 5433}, {web, db, 22}, {db, web, 5432}, {web, ops, 22}}
	for _, d := range denied {
		before := m.hosts[d.to].node.Dropped("firewall_inbound")
		drain(m.hosts[d.to].dev)
		m.hosts[d.from].dev.Inject(pkt(d.from, d.to, d.port))
		eventually(t, 3*time.Second, fmt.Sprintf("%s -> %s:%d dropped", groups[d.from], groups[d.to], d.port), func() bool {
			return m.hosts[d.to].node.Dropped("firewall_inbound") > before
		})
		select {
		case p := <-m.hosts[d.to].dev.Delivered():
			t.Fatalf("%s -> %s:%d delivered: %x", groups[d.from], groups[d.to], d.port, p)
		case <-time.After(50 * time.Millisecond):
		}
	}
	// db rejects: web gets an ICMP destination-unreachable from db through the tunnel.
	drain(m.hosts[web].dev)
	m.hosts[web].dev.Inject(pkt(web, db, 9999))
	select {
	case p := <-m.hosts[web].dev.Delivered():
		if len(p) < 21 || p[9] != 1 || p[20] != 3 || netip.AddrFrom4([4]byte(p[12:16])) != m.hosts[db].vpn {
			t.Fatalf("expected ICMP unreachable from db, got %x", p)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("no reject reply from db")
	}
}
