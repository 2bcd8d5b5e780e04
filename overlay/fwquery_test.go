package overlay_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/meshnode/meshnode/cert/certtest"
	"github.com/meshnode/meshnode/overlay"
	"github.com/meshnode/meshnode/overlay/udp/udptest"
)

// fwMesh is web, db and ops with group firewalls: db admits icmp, web -> tcp/5432 and
// ops -> tcp/22; web admits icmp and tcp/443 and may send only icmp and tcp/5432.
func fwMesh(t *testing.T) *mesh {
	m := &mesh{t: t, ca: certtest.NewCA(t, "fwq-test"), net: udptest.NewNetwork(21)}
	groups := []string{"web", "db", "ops"}
	for i, g := range groups {
		h := &meshHost{name: g + "1", vpn: vpnOf(i), under: underOf(i)}
		h.host = m.ca.NewHost(t, h.name, h.vpn.String()+"/16", g)
		m.hosts = append(m.hosts, h)
	}
	m.configFn = func(i int) string {
		y := "static_host_map:\n"
		for j, o := range m.hosts {
			if j != i {
				y += fmt.Sprintf("  %q: [%q]\n", o.vpn.String(), o.under.String())
			}
		}
		y += "handshakes:\n  try_interval: 20ms\n  retries: 10\nfirewall:\n"
		switch groups[i] {
		case "web":
			y += "  outbound:\n    - {port: any, proto: icmp, host: any}\n    - {port: 5432, proto: tcp, group: db}\n"
			y += "  inbound:\n    - {port: any, proto: icmp, host: any}\n    - {port: 443, proto: tcp, host: any}\n"
		case "db":
			y += "  outbound: [{port: any, proto: any, host: any}]\n"
			y += "  inbound_action: reject\n  inbound:\n    - {port: any, proto: icmp, host: any}\n"
			y += "    - {port: 5432, proto: tcp, group: web}\n    - {port: 22, proto: tcp, group: ops}\n"
		default:
			y += "  outbound: [{port: any, proto: any, host: any}]\n  inbound: [{port: any, proto: any, host: any}]\n"
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
	return m
}

func checkFW(t *testing.T, m *mesh, from, to int, traffic string) *overlay.FirewallCheck {
	t.Helper()
	tr, err := overlay.ParseTraffic(traffic)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	c, err := m.hosts[from].node.CheckFirewall(ctx, m.hosts[to].vpn, tr)
	if err != nil {
		t.Fatalf("%s -> %s %s: %v", m.hosts[from].name, m.hosts[to].name, traffic, err)
	}
	return c
}

// TestCheckAsksThePeersInboundFirewall runs the query both ways across a mesh: each side's
// verdict comes with the rule that decided it, a refusal with the rules that would admit
// the asker, and an outbound refusal is reported as ours.
func TestCheckAsksThePeersInboundFirewall(t *testing.T) {
	m := fwMesh(t)
	web, db, ops := 0, 1, 2

	c := checkFW(t, m, web, db, "tcp/5432")
	if c.Result != overlay.CheckAllowed || c.Name != "db1" || c.Self != "web1" || c.Tunnel.Path != "direct" || c.Tunnel.RTTMS <= 0 ||
		c.Outbound.RuleText != "{port: 5432, proto: tcp, group: db}" || c.Outbound.Rule != 1 ||
		c.Inbound == nil || !c.Inbound.Allowed || c.Inbound.Rule != 1 || c.Inbound.RuleText != "{port: 5432, proto: tcp, group: web}" {
		t.Fatalf("web -> db tcp/5432: %+v inbound %+v", c, c.Inbound)
	}

	c = checkFW(t, m, web, db, "tcp/22")
	if c.Result != overlay.CheckDroppedOutbound || c.Outbound.Allowed || c.Outbound.Reason != "no_rule" ||
		strings.Join(c.Outbound.RulesForHost, "|") != "outbound[0] {port: any, proto: icmp, host: any}|outbound[1] {port: 5432, proto: tcp, group: db}" {
		t.Fatalf("web -> db tcp/22 must stop at web's outbound rules: %+v", c)
	}
	// db was asked anyway, and says what it would do.
	if c.Inbound == nil || c.Inbound.Allowed || c.Inbound.Action != "reject" || c.Inbound.Reason != "no_rule" || c.Inbound.Rule != -1 ||
		strings.Join(c.Inbound.RulesForHost, "|") != "inbound[0] {port: any, proto: icmp, host: any}|inbound[1] {port: 5432, proto: tcp, group: web}" {
		t.Fatalf("db's verdict on web -> tcp/22: %+v", c.Inbound)
	}

	c = checkFW(t, m, ops, db, "tcp/22")
	if c.Result != overlay.CheckAllowed || c.Inbound.RuleText != "{port: 22, proto: tcp, group: ops}" {
		t.Fatalf("ops -> db tcp/22: %+v %+v", c, c.Inbound)
	}
	c = checkFW(t, m, ops, db, "tcp/5432")
	if c.Result != overlay.CheckDroppedInbound || c.Inbound.Allowed || len(c.Inbound.RulesForHost) != 2 || len(c.Inbound.RulesForPort) != 0 {
		t.Fatalf("ops -> db tcp/5432: %+v %+v", c, c.Inbound)
	}
	// The other way: db asks web, whose inbound admits only icmp and tcp/443.
	c = checkFW(t, m, db, web, "udp/53")
	if c.Result != overlay.CheckDroppedInbound || c.Inbound.Action != "drop" || c.MyGroups[0] != "db" {
		t.Fatalf("db -> web udp/53: %+v %+v", c, c.Inbound)
	}
	c = checkFW(t, m, db, web, "icmp")
	if c.Result != overlay.CheckAllowed || c.Inbound.RuleText != "{port: any, proto: icmp, host: any}" {
		t.Fatalf("db -> web icmp: %+v %+v", c, c.Inbound)
	}
	// Nothing was counted as a drop: the query judges, it does not send traffic.
	for _, h := range m.hosts {
		if d := h.node.Dropped("firewall_inbound") + h.node.Dropped("firewall_outbound"); d != 0 {
			t.Errorf("%s counted %d firewall drops", h.name, d)
		}
	}
}

// TestCheckAgainstANebulaPeerSaysItsFirewallCannotBeAsked plays a nebula 1.6.1 peer: the
// answer comes quickly, says so, and nothing sent would have crashed it.
func TestCheckAgainstANebulaPeerSaysItsFirewallCannotBeAsked(t *testing.T) {
	m := fwMesh(t)
	for _, mode := range []int32{overlay.Nebula161, overlay.NebulaEmpty, overlay.NebulaEcho} {
		m.stop(1) // a fresh tunnel: what the peer is, is remembered per tunnel
		m.start(1)
		m.hosts[1].node.AnswerTestsAsNebulaForTest(mode)
		c := checkFW(t, m, 0, 1, "tcp/5432")
		if c.Result != overlay.CheckUnknown || !c.PeerIsNebula || c.Inbound != nil || !strings.Contains(c.InboundUnknown, "Nebula") || !c.Outbound.Allowed {
			t.Fatalf("mode %d: %+v", mode, c)
		}
		c = checkFW(t, m, 0, 1, "tcp/22")
		if c.Result != overlay.CheckDroppedOutbound || !c.PeerIsNebula {
			t.Fatalf("mode %d: an outbound refusal is certain whatever the peer: %+v", mode, c)
		}
	}
	if n := m.hosts[1].node.NebulaPanicsForTest(); n != 0 {
		t.Fatalf("%d requests would have crashed nebula 1.6.1", n)
	}
}

func TestParseTraffic(t *testing.T) {
	for in, want := range map[string]string{"tcp/5432": "tcp/5432", "UDP/53": "udp/53", "icmp": "icmp", " tcp/1 ": "tcp/1"} {
		if tr, err := overlay.ParseTraffic(in); err != nil || tr.String() != want {
			t.Errorf("ParseTraffic(%q) = %v, %v", in, tr, err)
		}
	}
	for _, in := range []string{"", "tcp", "tcp/", "tcp/0", "tcp/65536", "tcp/x", "icmp/8", "sctp/1", "5432", "tcp/-1"} {
		if _, err := overlay.ParseTraffic(in); err == nil {
			t.Errorf("ParseTraffic(%q) accepted", in)
		}
	}
}
