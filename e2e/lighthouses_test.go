package e2e

import (
	"fmt"
	"testing"
	"time"

	"github.com/meshnode/meshnode/e2e/netns"
)

// TestTwoLighthousesFourHosts proves that lighthouses are no single point of failure: four
// hosts whose configs list only two lighthouses reach every other host (directly: nothing in
// this mesh relays); with one lighthouse stopped a restarted host still finds its peers; with
// both stopped, existing tunnels keep carrying traffic.
func TestTwoLighthousesFourHosts(t *testing.T) {
	requireNamespaceSuite(t)
	tl := newTools(t)
	for _, impls := range [][2]string{{implMeshnode, implMeshnode}, {implNebula, implMeshnode}} {
		t.Run(fmt.Sprintf("lighthouses-%s/hosts-%s", impls[0], impls[1]), func(t *testing.T) {
			runTwoLighthouses(t, tl, impls[0], impls[1])
		})
	}
}

func runTwoLighthouses(t *testing.T, tl *tools, lhImpl, hostImpl string) {
	ca := newPKI(t, tl.certTool(t, "mesh-cert"))
	sw := netns.NewSwitch(t, "sw")
	var lhs, hosts []*meshHost
	for i := range 6 {
		h := &meshHost{underlay: fmt.Sprintf("198.18.0.%d", i+1), overlay: fmt.Sprintf("10.42.0.%d", i+1)}
		if i < 2 {
			h.name, h.bin = fmt.Sprintf("lh%d", i+1), tl.impl(t, lhImpl)
			lhs = append(lhs, h)
		} else {
			h.name, h.bin = fmt.Sprintf("h%d", i-1), tl.impl(t, hostImpl)
			hosts = append(hosts, h)
		}
		h.ns = netns.New(t, h.name)
		sw.Attach(t, h.ns, "eth0", h.underlay+"/24")
	}
	dir := t.TempDir()
	for _, h := range append(append([]*meshHost{}, lhs...), hosts...) {
		crt, key := ca.sign(t, h.name, h.overlay+"/24", "e2e")
		c := nodeConf{ca: ca.path("ca.crt"), cert: crt, key: key, cipher: "aes", static: map[string]string{}}
		if h == lhs[0] || h == lhs[1] {
			c.amLighthouse = true
		} else {
			for _, l := range lhs {
				c.static[l.overlay] = fmt.Sprintf("%s:%d", l.underlay, overlayPort)
				c.lighthouses = append(c.lighthouses, l.overlay)
			}
		}
		h.writeConfig(t, dir, c)
		h.start(t)
	}
	pingAll := func(what string, timeout time.Duration) {
		t.Helper()
		for _, a := range hosts {
			for _, b := range hosts {
				if a != b {
					if _, err := a.ns.WaitPing(timeout, b.overlay); err != nil {
						t.Fatalf("%s: %s cannot reach %s: %v\n%s", what, a.name, b.name, err, a.proc.Tail(20))
					}
				}
			}
		}
	}
	pingAll("both lighthouses up", tunnelUpTimeout)

	// One lighthouse down; a host restarts with no state and must find everyone again.
	if err := lhs[0].proc.Stop(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := hosts[0].proc.Stop(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	hosts[0].start(t)
	for _, b := range hosts[1:] {
		if _, err := hosts[0].ns.WaitPing(tunnelUpTimeout, b.overlay); err != nil {
			t.Fatalf("with one lighthouse down, restarted %s cannot reach %s: %v\n%s", hosts[0].name, b.name, err, hosts[0].proc.Tail(20))
		}
	}

	// Both down: tunnels that exist keep working past the liveness timers.
	if err := lhs[1].proc.Stop(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	time.Sleep(12 * time.Second)
	pingAll("no lighthouse left", 5*time.Second)
}
