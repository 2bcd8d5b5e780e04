package e2e

import (
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/meshnode/meshnode/e2e/netns"
	"github.com/meshnode/meshnode/internal/testenv"
)

// natCase is a lighthouse on the public segment and two hosts, each behind its own NAT router.
type natCase struct {
	lighthouse, h1, h2 string // implementations
	cipher             string
}

func (c natCase) name() string {
	return fmt.Sprintf("lh-%s/h1-%s/h2-%s/%s", c.lighthouse, c.h1, c.h2, c.cipher)
}

var natCases = []natCase{
	{implNebula, implNebula, implNebula, "aes"},
	{implMeshnode, implMeshnode, implMeshnode, "aes"},
	{implMeshnode, implMeshnode, implMeshnode, "chachapoly"},
	{implMeshnode, implNebula, implNebula, "aes"},   // our lighthouse serving nebula hosts
	{implNebula, implMeshnode, implMeshnode, "aes"}, // nebula's lighthouse serving ours
	{implNebula, implMeshnode, implNebula, "aes"},   // mixed pair punching through
	{implMeshnode, implNebula, implMeshnode, "chachapoly"},
}

// pendingNATCases are cases known not to pass yet; E2E_PENDING=1 runs them. Move each one up
// into natCases in the commit that makes it pass.
var pendingNATCases = []natCase{}

// natTopology is the underlay of the NAT suite:
//
//	lighthouse 198.18.0.1 ── switch "wan" (198.18.0.0/24) ─┬─ r1 198.18.0.11 ── NAT ── h1 198.19.1.2
//	                                                       └─ r2 198.18.0.12 ── NAT ── h2 198.19.2.2
//
// The hosts have no route to each other's LANs and the routers only let replies in, so the
// hosts can only meet through the lighthouse and UDP hole punching.
type natTopology struct {
	lh, h1, h2 *meshHost
	// direct counts the bytes r1 forwards from h1 straight to r2's WAN address.
	direct func() (int64, error)
	// routers are r1 and r2, the hosts' NAT routers.
	routers []*netns.Namespace
}

func buildNATTopology(t *testing.T, tl *tools, c natCase) natTopology {
	t.Helper()
	testenv.RequireBinary(t, "nft")
	testenv.RequireBinary(t, "sysctl")
	wan := netns.NewSwitch(t, "wan")
	top := natTopology{
		lh: &meshHost{name: "lh", underlay: "198.18.0.1", overlay: "10.42.0.1", bin: tl.impl(t, c.lighthouse)},
		h1: &meshHost{name: "h1", underlay: "198.19.1.2", overlay: "10.42.0.11", bin: tl.impl(t, c.h1)},
		h2: &meshHost{name: "h2", underlay: "198.19.2.2", overlay: "10.42.0.12", bin: tl.impl(t, c.h2)},
	}
	top.lh.ns = netns.New(t, "lh")
	wan.Attach(t, top.lh.ns, "eth0", "198.18.0.1/24")
	for i, h := range []*meshHost{top.h1, top.h2} {
		r := netns.New(t, fmt.Sprintf("r%d", i+1))
		wan.Attach(t, r, "wan0", fmt.Sprintf("198.18.0.%d/24", 11+i))
		h.ns = netns.New(t, h.name)
		gw := fmt.Sprintf("198.19.%d.1", i+1)
		netns.Link(t, r, "lan0", gw+"/24", h.ns, "eth0", h.underlay+"/24")
		h.ns.Route(t, "default", "via", gw)
		r.NAT(t, "wan0")
		top.routers = append(top.routers, r)
		if i == 0 {
			top.direct = r.Counter(t, "forward", "ip daddr 198.18.0.12 meta l4proto udp")
		}
	}
	return top
}

// TestHostsBehindNATFindEachOtherThroughALighthouse proves the lighthouse protocol and hole
// punching: two hosts behind separate NATs, each configured with only the lighthouse's
// address, reach each other over the overlay (in both directions, with a checked TCP
// transfer), although neither can address the other's underlay directly.
func TestHostsBehindNATFindEachOtherThroughALighthouse(t *testing.T) {
	requireNamespaceSuite(t)
	tl := newTools(t)
	cases := natCases
	if os.Getenv("E2E_PENDING") == "1" {
		cases = append(append([]natCase{}, natCases...), pendingNATCases...)
	}
	for _, c := range cases {
		t.Run(c.name(), func(t *testing.T) {
			top := buildNATTopology(t, tl, c)
			ca := newPKI(t, tl.certTool(t, "nebula-cert"))
			dir := t.TempDir()
			for _, h := range []*meshHost{top.lh, top.h1, top.h2} {
				crt, key := ca.sign(t, h.name, h.overlay+"/24", "e2e")
				conf := nodeConf{ca: ca.path("ca.crt"), cert: crt, key: key, cipher: c.cipher, punch: true}
				if h == top.lh {
					conf.amLighthouse = true
				} else {
					conf.lighthouses = []string{top.lh.overlay}
					conf.static = map[string]string{top.lh.overlay: fmt.Sprintf("%s:%d", top.lh.underlay, overlayPort)}
				}
				h.writeConfig(t, dir, conf)
			}
			for _, h := range []*meshHost{top.lh, top.h1, top.h2} {
				h.start(t)
			}
			// Each host first reaches the lighthouse (and so registers its NAT's address).
			for _, h := range []*meshHost{top.h1, top.h2} {
				if _, err := h.ns.WaitPing(tunnelUpTimeout, top.lh.overlay); err != nil {
					t.Fatalf("%s cannot reach the lighthouse: %v", h.name, err)
				}
			}
			if err := top.h1.ns.Ping(top.h2.underlay); err == nil {
				t.Fatal("h1 reaches h2's underlay directly: the NAT topology is broken")
			}
			took, err := top.h1.ns.WaitPing(tunnelUpTimeout, top.h2.overlay)
			if err != nil {
				t.Fatalf("h1 never reached h2 through the NATs: %v", err)
			}
			t.Logf("h1 reached h2 across two NATs after %v", took.Round(time.Millisecond))
			if _, err := top.h2.ns.WaitPing(tunnelUpTimeout, top.h1.overlay); err != nil {
				t.Fatalf("h2 cannot reach h1: %v", err)
			}
			transfer(t, tl, top.h1, top.h2, 9101, 20<<20, 11)
			transfer(t, tl, top.h2, top.h1, 9102, 20<<20, 12)
			// The data went host to host, not through the lighthouse.
			if n, err := top.direct(); err != nil || n < 20<<20 {
				t.Fatalf("r1 forwarded %d bytes straight to r2 (%v); want more than the 20 MB sent", n, err)
			}
		})
	}
}
