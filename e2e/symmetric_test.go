package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/meshnode/meshnode/e2e/netns"
	"github.com/meshnode/meshnode/overlay"
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
			startRelayingLighthouseMesh(t, tl, c, top)
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

// startRelayingLighthouseMesh starts the NAT topology's lighthouse as a relay and both hosts
// listing it as their relay, and waits until each host reaches the lighthouse.
func startRelayingLighthouseMesh(t *testing.T, tl *tools, c natCase, top natTopology) {
	t.Helper()
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
}

// symmetricNAT makes a router's masquerade pick a random source port for every mapping, so
// the port a lighthouse learns is useless to anyone else.
func symmetricNAT(t *testing.T, r *netns.Namespace) {
	t.Helper()
	r.MustRun(t, "nft", "flush", "chain", "ip", "e2enat", "outbound")
	r.MustRun(t, "nft", "add", "rule", "ip", "e2enat", "outbound", "oifname", "wan0", "masquerade", "fully-random")
}

// TestRelayedTunnelMovesToTheDirectPathWhenItOpens: issue 15. Two hosts behind home-router
// NATs whose direct path is blocked at first (each router drops UDP to the other router, as
// a firewall allowing only the lighthouse would) fall back to the lighthouse as relay, and
// `meshnode status` says so. Once the block is lifted, the relayed tunnel's direct probes
// (and, for a Nebula peer, the punch the lighthouse asks of it) open both NATs: the tunnel
// moves to the direct path without a new handshake, status says "direct", and the data goes
// router to router.
func TestRelayedTunnelMovesToTheDirectPathWhenItOpens(t *testing.T) {
	requireNamespaceSuite(t)
	tl := newTools(t)
	for _, c := range []natCase{
		{implMeshnode, implMeshnode, implMeshnode, "aes"},
		{implMeshnode, implMeshnode, implNebula, "aes"}, // the Nebula end never probes; it punches when told
		{implNebula, implMeshnode, implMeshnode, "aes"}, // Nebula's lighthouse relays and tells
	} {
		t.Run(c.name(), func(t *testing.T) {
			top := buildNATTopology(t, tl, c)
			unblock := make([]func(), 0, 2)
			for i, r := range top.routers {
				unblock = append(unblock, r.Block(t, fmt.Sprintf("ip daddr 198.18.0.%d meta l4proto udp", 12-i)))
			}
			startRelayingLighthouseMesh(t, tl, c, top)
			if _, err := top.h1.ns.WaitPing(30*time.Second, top.h2.overlay); err != nil {
				t.Fatalf("h1 never reached h2 through the relay: %v\nh1:\n%s", err, top.h1.proc.Tail(30))
			}
			path := func(h *meshHost, peer string) (string, string) {
				t.Helper()
				out, err := h.ns.RunTimeout(10*time.Second, h.bin, "status", "-json", "-control", h.sock)
				if err != nil {
					t.Fatalf("%s: status: %v\n%s", h.name, err, out)
				}
				var st overlay.ControlStatus
				if err := json.Unmarshal([]byte(out), &st); err != nil {
					t.Fatalf("status -json: %v\n%s", err, out)
				}
				text, _ := h.ns.RunTimeout(10*time.Second, h.bin, "status", "-control", h.sock)
				for _, p := range st.Peers {
					if p.VpnIP.String() == peer {
						return p.Path, text
					}
				}
				return "none", text
			}
			if p, text := path(top.h1, top.h2.overlay); p != "relayed" || !strings.Contains(text, "relay via lh ("+top.lh.overlay+")") {
				t.Fatalf("h1's tunnel to h2 should be relayed while the direct path is blocked; status:\n%s", text)
			} else {
				t.Logf("direct path blocked; h1's status:\n%s", text)
			}
			// A probe round passes while the path is still blocked, so what opens it later is
			// the periodic probing, not the first probes after the relay came up.
			time.Sleep(overlay.RelayProbeInterval + 2*time.Second)
			if p, text := path(top.h1, top.h2.overlay); p != "relayed" {
				t.Fatalf("h1's tunnel to h2 left the relay while the direct path was blocked; status:\n%s", text)
			}
			before, err := top.direct()
			if err != nil {
				t.Fatal(err)
			}
			for _, u := range unblock {
				u()
			}
			opened := time.Now()
			var text string
			if err := netns.Eventually(45*time.Second, 500*time.Millisecond, func() error {
				var p string
				if p, text = path(top.h1, top.h2.overlay); p != "direct" {
					return fmt.Errorf("h1's tunnel to h2 is %s", p)
				}
				if top.h2.sock != "" {
					if p, _ := path(top.h2, top.h1.overlay); p != "direct" {
						return fmt.Errorf("h2's tunnel to h1 is %s", p)
					}
				}
				return nil
			}); err != nil {
				t.Fatalf("the tunnel stayed on the relay after the direct path opened: %v\n%s\nh1:\n%s\nh2:\n%s", err, text, top.h1.proc.Tail(20), top.h2.proc.Tail(20))
			}
			t.Logf("direct path open; the tunnel moved to it after %v; h1's status:\n%s", time.Since(opened).Round(100*time.Millisecond), text)
			if !strings.Contains(top.h1.proc.Log(), "peer reachable directly; leaving the relay") {
				t.Error("h1's log does not say it left the relay")
			}
			if top.h2.sock == "" {
				// Nebula 1.6.1 has no status to ask; its log says it took the direct address.
				if err := top.h2.proc.WaitLog(5*time.Second, "Host roamed to new udp ip/port"); err != nil {
					t.Errorf("the Nebula host did not move to the direct path: %v\n%s", err, top.h2.proc.Tail(20))
				}
			}
			transfer(t, tl, top.h1, top.h2, 9121, 4<<20, 31)
			if n, err := top.direct(); err != nil || n-before < 4<<20 {
				t.Fatalf("r1 forwarded %d bytes straight to r2 after the path opened (%v); want the 4 MB sent", n-before, err)
			}
		})
	}
}
