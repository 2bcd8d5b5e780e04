package e2e

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/meshnode/meshnode/e2e/netns"
)

// pathCase is the implementations of the hosts of a path suite: the one that moves or is
// relayed (h1), its peer (h2), and the relay (unused by the roaming suite).
type pathCase struct{ h1, h2, relay string }

func (c pathCase) name() string { return strings.Join([]string{c.h1, c.h2, c.relay}, "-") }

var roamCases = []pathCase{
	{implNebula, implNebula, ""},
	{implMeshnode, implMeshnode, ""},
	{implMeshnode, implNebula, ""},
	{implNebula, implMeshnode, ""},
}

var relayCases = []pathCase{
	{implNebula, implNebula, implNebula},
	{implMeshnode, implMeshnode, implMeshnode},
	{implMeshnode, implNebula, implNebula},
	{implNebula, implMeshnode, implNebula},
	{implNebula, implNebula, implMeshnode}, // our relay between two nebula hosts
}

// pendingRelayCases are cases known not to pass yet; E2E_PENDING=1 runs them. Move each one
// up into relayCases in the commit that makes it pass.
var pendingRelayCases = []pathCase{}

// roamTimeout bounds how long a tunnel may stall when one end changes its underlay address.
const roamTimeout = 10 * time.Second

// TestTunnelFollowsAHostThatChangesItsUnderlayAddress proves roaming: while a tunnel is up,
// h1's underlay address changes (as on a new network); h2, which only knows the old address
// from its static_host_map, learns the new one from h1's authenticated packets, and traffic
// flows again within 10 s without a restart.
func TestTunnelFollowsAHostThatChangesItsUnderlayAddress(t *testing.T) {
	requireNamespaceSuite(t)
	tl := newTools(t)
	for _, c := range roamCases {
		t.Run(c.h1+"-"+c.h2, func(t *testing.T) {
			hosts := startMesh(t, tl, meshSpec{impls: []string{c.h1, c.h2}, certTool: "nebula-cert", cipher: "aes"})
			h1, h2 := hosts[0], hosts[1]
			h1.ns.MustIP(t, "addr", "del", h1.underlay+"/24", "dev", "eth0")
			h1.ns.MustIP(t, "addr", "add", "198.18.0.101/24", "dev", "eth0")
			took, err := h1.ns.WaitPing(roamTimeout, h2.overlay)
			if err != nil {
				t.Fatalf("after h1 moved to 198.18.0.101: %v", err)
			}
			t.Logf("h1 reached h2 again %v after moving", took.Round(time.Millisecond))
			if _, err := h2.ns.WaitPing(roamTimeout, h1.overlay); err != nil {
				t.Fatalf("h2 does not follow h1 to its new address: %v", err)
			}
			transfer(t, tl, h2, h1, 9500, 5<<20, 50)
		})
	}
}

// TestRelayCarriesTrafficBetweenHostsThatCannotReachEachOther proves relaying: h1 and h2 sit
// on separate underlay segments with no route between them; the lighthouse, on both segments,
// is also a relay (relay.am_relay) and both hosts name it in relay.relays. h1 reaches h2
// through it, and TCP arrives intact.
func TestRelayCarriesTrafficBetweenHostsThatCannotReachEachOther(t *testing.T) {
	requireNamespaceSuite(t)
	tl := newTools(t)
	cases := relayCases
	if os.Getenv("E2E_PENDING") == "1" {
		cases = append(append([]pathCase{}, relayCases...), pendingRelayCases...)
	}
	for _, c := range cases {
		t.Run(c.name(), func(t *testing.T) {
			relay := &meshHost{name: "relay", underlay: "198.18.1.1", overlay: "10.42.0.1", bin: tl.impl(t, c.relay)}
			h1 := &meshHost{name: "h1", underlay: "198.18.1.2", overlay: "10.42.0.11", bin: tl.impl(t, c.h1)}
			h2 := &meshHost{name: "h2", underlay: "198.18.2.2", overlay: "10.42.0.12", bin: tl.impl(t, c.h2)}
			for _, h := range []*meshHost{relay, h1, h2} {
				h.ns = netns.New(t, h.name)
			}
			netns.Link(t, relay.ns, "eth1", "198.18.1.1/24", h1.ns, "eth0", h1.underlay+"/24")
			netns.Link(t, relay.ns, "eth2", "198.18.2.1/24", h2.ns, "eth0", h2.underlay+"/24")
			// The relay does not forward IP between its segments: only the overlay connects them.
			relay.ns.Sysctl(t, "net.ipv4.ip_forward", "0")

			ca := newPKI(t, tl.certTool(t, "nebula-cert"))
			dir := t.TempDir()
			relayAddr := map[*meshHost]string{h1: "198.18.1.1", h2: "198.18.2.1"}
			for _, h := range []*meshHost{relay, h1, h2} {
				crt, key := ca.sign(t, h.name, h.overlay+"/24", "e2e")
				conf := nodeConf{ca: ca.path("ca.crt"), cert: crt, key: key, cipher: "aes"}
				if h == relay {
					conf.amLighthouse = true
					conf.extra = "relay:\n  am_relay: true\n"
				} else {
					conf.lighthouses = []string{relay.overlay}
					conf.static = map[string]string{relay.overlay: fmt.Sprintf("%s:%d", relayAddr[h], overlayPort)}
					conf.extra = fmt.Sprintf("relay:\n  use_relays: true\n  relays:\n    - %s\n", relay.overlay)
				}
				h.writeConfig(t, dir, conf)
			}
			for _, h := range []*meshHost{relay, h1, h2} {
				h.start(t)
			}
			for _, h := range []*meshHost{h1, h2} {
				if _, err := h.ns.WaitPing(tunnelUpTimeout, relay.overlay); err != nil {
					t.Fatalf("%s cannot reach the relay: %v", h.name, err)
				}
			}
			if err := h1.ns.Ping(h2.underlay); err == nil {
				t.Fatal("h1 reaches h2's underlay directly: the topology is broken")
			}
			took, err := h1.ns.WaitPing(tunnelUpTimeout, h2.overlay)
			if err != nil {
				t.Fatalf("h1 never reached h2 through the relay: %v", err)
			}
			t.Logf("h1 reached h2 through the relay after %v", took.Round(time.Millisecond))
			if _, err := h2.ns.WaitPing(tunnelUpTimeout, h1.overlay); err != nil {
				t.Fatalf("h2 cannot reach h1 through the relay: %v", err)
			}
			transfer(t, tl, h1, h2, 9501, 5<<20, 51)
		})
	}
}
