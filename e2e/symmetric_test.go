package e2e

import (
	"fmt"
	"testing"
	"time"

	"github.com/meshnode/meshnode/e2e/netns"
)

// TestHostsBehindSymmetricNATsConnectThroughARelay: the NAT suite's topology, but each router
// picks a random source port for every new destination (a symmetric NAT), so hole punching
// cannot work. The lighthouse is also a relay that both hosts list; they must still reach
// each other, through it.
func TestHostsBehindSymmetricNATsConnectThroughARelay(t *testing.T) {
	requireNamespaceSuite(t)
	tl := newTools(t)
	for _, c := range []natCase{
		{implMeshnode, implMeshnode, implMeshnode, "aes"},
		{implNebula, implMeshnode, implMeshnode, "aes"}, // nebula relays for meshnode hosts
		{implMeshnode, implNebula, implMeshnode, "aes"}, // meshnode relays between nebula and meshnode
	} {
		t.Run(c.name(), func(t *testing.T) {
			top := buildNATTopology(t, tl, c)
			for _, r := range top.routers {
				symmetricNAT(t, r)
			}
			ca := newPKI(t, tl.certTool(t, "nebula-cert"))
			dir := t.TempDir()
			for _, h := range []*meshHost{top.lh, top.h1, top.h2} {
				crt, key := ca.sign(t, h.name, h.overlay+"/24", "e2e")
				conf := nodeConf{ca: ca.path("ca.crt"), cert: crt, key: key, cipher: c.cipher, punch: true}
				if h == top.lh {
					conf.amLighthouse = true
					conf.extra = "relay:\n  am_relay: true\n"
				} else {
					conf.lighthouses = []string{top.lh.overlay}
					conf.static = map[string]string{top.lh.overlay: fmt.Sprintf("%s:%d", top.lh.underlay, overlayPort)}
					conf.extra = fmt.Sprintf("relay:\n  relays: [%q]\n  use_relays: true\n", top.lh.overlay)
				}
				h.writeConfig(t, dir, conf)
			}
			for _, h := range []*meshHost{top.lh, top.h1, top.h2} {
				h.start(t)
			}
			for _, h := range []*meshHost{top.h1, top.h2} {
				if _, err := h.ns.WaitPing(tunnelUpTimeout, top.lh.overlay); err != nil {
					t.Fatalf("%s cannot reach the lighthouse: %v", h.name, err)
				}
			}
			took, err := top.h1.ns.WaitPing(30*time.Second, top.h2.overlay)
			if err != nil {
				t.Fatalf("h1 never reached h2 behind symmetric NATs: %v\nh1:\n%s\nlh:\n%s", err, top.h1.proc.Tail(30), top.lh.proc.Tail(30))
			}
			t.Logf("h1 reached h2 through the relay after %v", took.Round(time.Millisecond))
			if _, err := top.h2.ns.WaitPing(tunnelUpTimeout, top.h1.overlay); err != nil {
				t.Fatalf("h2 cannot reach h1: %v", err)
			}
			transfer(t, tl, top.h1, top.h2, 9111, 5<<20, 21)
			// The data went through the relay: r1 sent next to nothing straight to r2.
			if n, err := top.direct(); err != nil || n > 1<<20 {
				t.Fatalf("r1 forwarded %d bytes straight to r2 (%v); the transfer should have gone through the relay", n, err)
			}
		})
	}
}

// symmetricNAT makes a router's masquerade pick a random source port for every mapping, so
// the port a lighthouse learns is useless to anyone else.
func symmetricNAT(t *testing.T, r *netns.Namespace) {
	t.Helper()
	r.MustRun(t, "nft", "flush", "chain", "ip", "e2enat", "outbound")
	r.MustRun(t, "nft", "add", "rule", "ip", "e2enat", "outbound", "oifname", "wan0", "masquerade", "fully-random")
}
