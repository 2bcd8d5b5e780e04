package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/meshnode/meshnode/e2e/netns"
)

// firewallCase names the implementation enforcing the rules (db) and the one of the hosts
// sending to it (web, ops).
type firewallCase struct{ db, peers string }

var firewallCases = []firewallCase{
	{implMeshnode, implMeshnode},
	{implMeshnode, implNebula}, // our rules enforced against a real nebula host's traffic
}

// TestGroupFirewallWebDbOps proves the group firewall over real TUN devices: db admits
// web -> 5432/tcp and ops -> 22/tcp and rejects everything else (TCP gets an RST through the
// tunnel, so the client fails at once with "refused" instead of timing out), and outbound
// replies of admitted flows pass through conntrack.
func TestGroupFirewallWebDbOps(t *testing.T) {
	requireNamespaceSuite(t)
	tl := newTools(t)
	for _, c := range firewallCases {
		t.Run(fmt.Sprintf("db-%s/peers-%s", c.db, c.peers), func(t *testing.T) { runFirewallCase(t, tl, c) })
	}
}

func runFirewallCase(t *testing.T, tl *tools, c firewallCase) {
	ca := newPKI(t, tl.certTool(t, "nebula-cert"))
	host := func(name string, i int, impl string) *meshHost {
		return &meshHost{name: name, underlay: fmt.Sprintf("198.18.0.%d", i), overlay: fmt.Sprintf("10.42.0.%d", i), bin: tl.impl(t, impl)}
	}
	db, web, ops := host("db", 1, c.db), host("web", 2, c.peers), host("ops", 3, c.peers)
	all := []*meshHost{db, web, ops}
	sw := netns.NewSwitch(t, "sw")
	for _, h := range all {
		h.ns = netns.New(t, h.name)
		sw.Attach(t, h.ns, "eth0", h.underlay+"/24")
	}
	dir := t.TempDir()
	for _, h := range all {
		crt, key := ca.sign(t, h.name, h.overlay+"/24", h.name)
		cf := nodeConf{ca: ca.path("ca.crt"), cert: crt, key: key, cipher: "aes", static: map[string]string{}}
		for _, o := range all {
			if o != h {
				cf.static[o.overlay] = fmt.Sprintf("%s:%d", o.underlay, overlayPort)
			}
		}
		cf.inbound = []string{"{port: any, proto: icmp, host: any}", "{port: 22, proto: tcp, group: ops}"}
		if h == db {
			cf.inbound = append(cf.inbound, "{port: 5432, proto: tcp, group: web}")
			cf.extra = "  inbound_action: reject\n"
		}
		h.writeConfig(t, dir, cf)
	}
	for _, h := range all {
		h.start(t)
	}
	for _, h := range []*meshHost{web, ops} {
		if _, err := h.ns.WaitPing(tunnelUpTimeout, db.overlay); err != nil {
			t.Fatalf("%s cannot ping db: %v", h.name, err)
		}
	}
	bin := tl.tcpcheck(t)
	for _, port := range []int{5432, 22} {
		srv := db.ns.Start(t, fmt.Sprintf("serve-%d", port), bin, "serve", "-listen", fmt.Sprintf("%s:%d", db.overlay, port), "-count", "0")
		if err := srv.WaitLog(10*time.Second, "listening"); err != nil {
			t.Fatal(err)
		}
	}
	send := func(from *meshHost, port int) (string, error) {
		return from.ns.RunTimeout(20*time.Second, bin, "send", "-to", fmt.Sprintf("%s:%d", db.overlay, port),
			"-bytes", "262144", "-dial-timeout", "2s", "-timeout", "10s")
	}
	for _, ok := range []struct {
		from *meshHost
		port int
	}{{web, 5432}, {ops, 22}} {
		if out, err := send(ok.from, ok.port); err != nil {
			t.Fatalf("%s -> db:%d must pass: %v\n%s", ok.from.name, ok.port, err, out)
		}
	}
	for _, no := range []struct {
		from *meshHost
		port int
	}{{web, 22}, {ops, 5432}} {
		start := time.Now()
		out, err := send(no.from, no.port)
		if err == nil {
			t.Fatalf("%s -> db:%d must be refused:\n%s", no.from.name, no.port, out)
		}
		// A reject answers with an RST: the client learns at once instead of timing out.
		if !strings.Contains(out, "refused") {
			t.Errorf("%s -> db:%d failed without a reject (after %s): %s", no.from.name, no.port, time.Since(start).Round(time.Millisecond), out)
		}
	}
	// web has no rule for 5432 itself: db -> web:5432 is dropped (web's default action).
	srv := web.ns.Start(t, "serve-web", bin, "serve", "-listen", fmt.Sprintf("%s:%d", web.overlay, 5432), "-count", "0")
	if err := srv.WaitLog(10*time.Second, "listening"); err != nil {
		t.Fatal(err)
	}
	if out, err := db.ns.RunTimeout(20*time.Second, bin, "send", "-to", fmt.Sprintf("%s:%d", web.overlay, 5432),
		"-bytes", "1024", "-dial-timeout", "2s", "-timeout", "4s"); err == nil {
		t.Fatalf("db -> web:5432 must be dropped:\n%s", out)
	}
}
