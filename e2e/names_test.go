package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/meshnode/meshnode/e2e/netns"
	"github.com/meshnode/meshnode/internal/testenv"
	"github.com/meshnode/meshnode/overlay"
)

// TestSubcommandsResolveNamesThroughTheLighthouse runs a lighthouse and two hosts that know
// only the lighthouse: `meshnode ping h2` on h1, before h1 has any tunnel to h2, gets h2's
// VPN IP from the lighthouse (which holds h2's certificate) and pings it; `meshnode check`
// of a name nobody carries says that neither the peers nor the lighthouse know it.
func TestSubcommandsResolveNamesThroughTheLighthouse(t *testing.T) {
	requireNamespaceSuite(t)
	ca := newPKI(t, testenv.RequireBinary(t, "nebula-cert"))
	dir := t.TempDir()
	bin := buildPkg(t, dir, "./cmd/meshnode")
	sw := netns.NewSwitch(t, "nmsw")
	var hosts []*meshHost
	for i, name := range []string{"lh", "h1", "h2"} {
		h := &meshHost{name: name, ns: netns.New(t, "nm"+name), bin: bin,
			underlay: fmt.Sprintf("198.18.0.%d", i+1), overlay: fmt.Sprintf("10.42.0.%d", i+1)}
		sw.Attach(t, h.ns, "eth0", h.underlay+"/24")
		hosts = append(hosts, h)
	}
	lh, h1, h2 := hosts[0], hosts[1], hosts[2]
	for _, h := range hosts {
		crt, key := ca.sign(t, h.name, h.overlay+"/24", "e2e")
		c := nodeConf{ca: ca.path("ca.crt"), cert: crt, key: key, cipher: "aes", static: map[string]string{}}
		if h == lh {
			c.amLighthouse = true
		} else {
			c.static[lh.overlay] = fmt.Sprintf("%s:%d", lh.underlay, overlayPort)
			c.lighthouses = []string{lh.overlay}
		}
		h.writeConfig(t, dir, c)
		h.start(t)
		if err := h.proc.WaitLog(10*time.Second, "control socket"); err != nil {
			t.Fatal(err)
		}
	}
	cli := func(h *meshHost, args ...string) (string, error) {
		return h.ns.RunTimeout(30*time.Second, bin, append(args, "-control", h.sock)...)
	}
	peers := func(h *meshHost) []overlay.PeerStatus {
		out, err := cli(h, "status", "-json")
		var st overlay.ControlStatus
		if err != nil || json.Unmarshal([]byte(out), &st) != nil {
			t.Fatalf("%s: status -json: %v\n%s", h.name, err, out)
		}
		return st.Peers
	}
	if err := netns.Eventually(tunnelUpTimeout, 200*time.Millisecond, func() error {
		if p := peers(lh); len(p) != 2 {
			return fmt.Errorf("the lighthouse has %d tunnels, want one to each host", len(p))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, p := range peers(h1) {
		if p.Name == "h2" {
			t.Fatal("h1 already has a tunnel to h2; the test needs none")
		}
	}

	out, err := cli(h1, "ping", "h2", "-c", "2", "-i", "200ms")
	if err != nil || !strings.Contains(out, "h2 is 10.42.0.3 (says lighthouse 10.42.0.1)") ||
		strings.Count(out, "reply from h2: seq=") != 2 || !strings.Contains(out, "2 probes sent, 2 replies, 0% loss") {
		t.Fatalf("ping h2 before any tunnel to it: %v\n%s", err, out)
	}
	t.Logf("meshnode ping h2 on h1:\n%s", out)

	out, err = cli(h2, "check", "db9", "icmp")
	if exitCode(err) != 1 || !strings.Contains(out, "unknown host db9: neither a peer's certificate nor the lighthouses (10.42.0.1) know that name") {
		t.Fatalf("check of an unknown name (exit %d): %v\n%s", exitCode(err), err, out)
	}
}
