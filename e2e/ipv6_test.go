package e2e

// IPv6 overlay between meshnode and nebula 1.11.1: v2 certificates with an IPv4 and an IPv6
// network (10.42.0.N/24, fd42::N/64), hosts that know only the lighthouse's IPv4 address,
// and pings and TCP by IPv6 address, so the lighthouse must answer for the IPv6 address
// (docs/ARCHITECTURE.md, "IPv6 overlay").

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// v6 is h with its IPv6 overlay address in place of the IPv4 one, bracketed so that
// transfer's "addr:port" is valid.
func v6(h *meshHost) (*meshHost, string) {
	addr := "fd42::" + strings.TrimPrefix(h.overlay, "10.42.0.")
	c := *h
	c.overlay = "[" + addr + "]"
	return &c, addr
}

// TestIPv6OverlayWithNebula111 runs two meshes, one with a meshnode lighthouse and one with
// a nebula 1.11.1 lighthouse. In each, a meshnode host and a 1.11.1 host that have never
// met ping each other's IPv6 overlay address both ways and carry 1 MB of TCP over IPv6 each
// way with checksums. Each first ping between two hosts needs the lighthouse to answer a
// query naming an IPv6 address: asked by 1.11.1 about meshnode, by meshnode about 1.11.1,
// and by meshnode about meshnode.
func TestIPv6OverlayWithNebula111(t *testing.T) {
	requireNamespaceSuite(t)
	tl := newTools(t)
	for k, c := range []struct {
		name string
		spec []vhost
	}{
		{"lh-meshnode", []vhost{{implMeshnode, certV2v6, 0}, {implNebula11, certV2v6, 0}, {implMeshnode, certV2v6, 0}, {implMeshnode, certV2v6, 0}}},
		{"lh-nebula-1.11.1", []vhost{{implNebula11, certV2v6, 0}, {implMeshnode, certV2v6, 0}, {implNebula11, certV2v6, 0}, {implMeshnode, certV2v6, 0}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := startVersionMesh(t, tl, c.spec)
			var mesh, neb []*meshHost
			for i, h := range m.hosts[1:] {
				if c.spec[i+1].impl == implMeshnode {
					mesh = append(mesh, h)
				} else {
					neb = append(neb, h)
				}
			}
			a, b := mesh[0], neb[0]
			a6, a6addr := v6(a)
			b6, b6addr := v6(b)
			for _, d := range []struct {
				from *meshHost
				to   string
			}{
				{b, a6addr},       // 1.11.1 asks the lighthouse for a meshnode host's IPv6 address
				{mesh[1], b6addr}, // meshnode asks for a 1.11.1 host's
				{a, b6addr},       // over the tunnel the first ping made
				{mesh[1], a6addr}, // meshnode asks for a meshnode host's
			} {
				took, err := d.from.ns.WaitPing(tunnelUpTimeout, d.to)
				if err != nil {
					t.Fatalf("%s -> %s: %v\n%s: %s\n%s: %s", d.from.name, d.to, err, a.name, a.proc.Tail(20), b.name, b.proc.Tail(20))
				}
				t.Logf("%s ping %s: first answer after %v", d.from.name, d.to, took.Round(time.Millisecond))
			}
			port := 9800 + 10*k
			transfer(t, tl, a, b6, port, 1<<20, uint64(port))
			transfer(t, tl, b, a6, port+1, 1<<20, uint64(port+1))
			for _, h := range m.hosts {
				if h.proc.Exited() {
					t.Fatalf("%s exited:\n%s", h.name, h.proc.Tail(30))
				}
			}
			st := m.status(t, a)
			var peers []string
			for _, p := range st.Peers {
				peers = append(peers, fmt.Sprintf("%s v%d/v%d", p.VpnIP, p.CertVersion, p.PeerCertVersion))
			}
			t.Logf("%s tunnels: %s", a.name, strings.Join(peers, ", "))
		})
	}
}

// TestRelayOverV2WithNebula111: two hosts behind symmetric NATs (no direct path) with v2
// certificates reach each other's IPv6 overlay address through the lighthouse as relay, so
// the relay control messages travel on v2 tunnels in Nebula 1.10+'s form (RelayToAddr,
// RelayFromAddr) and name IPv6 addresses: nebula 1.11.1 relaying for meshnode and 1.11.1,
// and meshnode relaying for the same pair.
func TestRelayOverV2WithNebula111(t *testing.T) {
	requireNamespaceSuite(t)
	tl := newTools(t)
	for k, c := range []natCase{
		{implNebula11, implMeshnode, implNebula11, "aes"},
		{implMeshnode, implNebula11, implMeshnode, "aes"},
	} {
		t.Run(c.name(), func(t *testing.T) {
			top := buildNATTopology(t, tl, c)
			for _, r := range top.routers {
				symmetricNAT(t, r)
			}
			p := newVersionPKI(t)
			dir := t.TempDir()
			for _, h := range []*meshHost{top.lh, top.h1, top.h2} {
				crt, key := p.sign(t, h.name, h.overlay, certV2v6)
				conf := nodeConf{ca: p.path("ca.crt"), cert: crt, key: key, cipher: c.cipher, punch: true}
				if h == top.lh {
					conf.amLighthouse = true
					conf.extra = "relay:\n  am_relay: true\n"
				} else {
					conf.lighthouses = []string{top.lh.overlay}
					conf.static = map[string]string{top.lh.overlay: fmt.Sprintf("%s:%d", top.lh.underlay, overlayPort)}
					conf.extra = fmt.Sprintf("relay:\n  relays: [%q]\n  use_relays: true\n", top.lh.overlay)
				}
				h.writeConfig(t, dir, conf)
				h.start(t)
			}
			for _, h := range []*meshHost{top.h1, top.h2} {
				if _, err := h.ns.WaitPing(tunnelUpTimeout, top.lh.overlay); err != nil {
					t.Fatalf("%s cannot reach the lighthouse: %v", h.name, err)
				}
			}
			h1v6, h1addr := v6(top.h1)
			h2v6, h2addr := v6(top.h2)
			took, err := top.h1.ns.WaitPing(30*time.Second, h2addr)
			if err != nil {
				t.Fatalf("h1 never reached %s through the relay: %v\nh1:\n%s\nlh:\n%s\nh2:\n%s", h2addr, err,
					top.h1.proc.Tail(30), top.lh.proc.Tail(30), top.h2.proc.Tail(30))
			}
			t.Logf("h1 reached %s through the relay after %v", h2addr, took.Round(time.Millisecond))
			if _, err := top.h2.ns.WaitPing(tunnelUpTimeout, h1addr); err != nil {
				t.Fatalf("h2 cannot reach %s: %v", h1addr, err)
			}
			port := 9850 + 10*k
			transfer(t, tl, top.h1, h2v6, port, 1<<20, uint64(port))
			transfer(t, tl, top.h2, h1v6, port+1, 1<<20, uint64(port+1))
			if n, err := top.direct(); err != nil || n > 1<<19 {
				t.Fatalf("r1 forwarded %d bytes straight to r2 (%v); the transfers should have gone through the relay", n, err)
			}
		})
	}
}
