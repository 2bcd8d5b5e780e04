package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/meshnode/meshnode/e2e/netns"
)

// trustCase names the implementation of the host that decides (the judge) and of the hosts
// that try to reach it.
type trustCase struct {
	judge, peers string
	cipher       string
	certTool     string
}

func (c trustCase) name() string {
	return fmt.Sprintf("judge-%s/peers-%s/%s/%s", c.judge, c.peers, c.cipher, c.certTool)
}

var trustCases = []trustCase{
	{implNebula, implNebula, "aes", "nebula-cert"},
	{implNebula, implNebula, "aes", "mesh-cert"}, // nebula enforces what mesh-cert issued
	{implMeshnode, implMeshnode, "aes", "mesh-cert"},
	{implMeshnode, implNebula, "aes", "nebula-cert"},        // our checks against nebula's certs and packets
	{implNebula, implMeshnode, "chachapoly", "nebula-cert"}, // nebula's checks against ours
}

// pendingTrustCases are cases known not to pass yet; E2E_PENDING=1 runs them.
var pendingTrustCases = []trustCase{}

// refusalWindow is how long a refused peer keeps trying before the suite accepts that it was
// refused. Nebula retries a handshake every few hundred milliseconds, so a few seconds is many
// attempts.
const refusalWindow = 6 * time.Second

// TestOverlayRefusesUntrustedPeersAndEnforcesTheFirewall proves the security promises that
// can be seen from outside: a host whose certificate comes from another CA gets no tunnel in
// either direction, nor does one whose certificate has expired, and the judge's inbound
// firewall admits TCP to a port only from the group its rule names, while ICMP is open to all.
func TestOverlayRefusesUntrustedPeersAndEnforcesTheFirewall(t *testing.T) {
	requireNamespaceSuite(t)
	tl := newTools(t)
	cases := trustCases
	if os.Getenv("E2E_PENDING") == "1" {
		cases = append(append([]trustCase{}, trustCases...), pendingTrustCases...)
	}
	for _, c := range cases {
		t.Run(c.name(), func(t *testing.T) { runTrustCase(t, tl, c) })
	}
}

func runTrustCase(t *testing.T, tl *tools, c trustCase) {
	const port = 9201
	certTool := tl.certTool(t, c.certTool)
	ca, otherCA := newPKI(t, certTool), newPKI(t, certTool)
	peerBin := tl.impl(t, c.peers)
	host := func(name string, i int, bin string) *meshHost {
		return &meshHost{name: name, underlay: fmt.Sprintf("198.18.0.%d", i), overlay: fmt.Sprintf("10.42.0.%d", i), bin: bin}
	}
	judge := host("judge", 1, tl.impl(t, c.judge))
	web := host("web", 2, peerBin)           // in group "web": may use the port
	plain := host("plain", 3, peerBin)       // same CA, group "other": may ping, not use the port
	stranger := host("stranger", 4, peerBin) // cert from another CA
	expired := host("expired", 5, peerBin)   // cert from the CA, valid for 3 s only
	all := []*meshHost{judge, web, plain, stranger, expired}

	sw := netns.NewSwitch(t, "sw")
	for _, h := range all {
		h.ns = netns.New(t, h.name)
		sw.Attach(t, h.ns, "eth0", h.underlay+"/24")
	}
	dir := t.TempDir()
	conf := func(p *pki, h *meshHost, crt, key string) nodeConf {
		cf := nodeConf{ca: p.path("ca.crt"), cert: crt, key: key, cipher: c.cipher, static: map[string]string{}}
		for _, o := range all {
			if o != h {
				cf.static[o.overlay] = fmt.Sprintf("%s:%d", o.underlay, overlayPort)
			}
		}
		return cf
	}
	crt, key := ca.sign(t, judge.name, judge.overlay+"/24", "judge")
	jc := conf(ca, judge, crt, key)
	jc.inbound = []string{
		"{port: any, proto: icmp, host: any}",
		fmt.Sprintf("{port: %d, proto: tcp, group: web}", port),
	}
	judge.writeConfig(t, dir, jc)
	crt, key = ca.sign(t, web.name, web.overlay+"/24", "web")
	web.writeConfig(t, dir, conf(ca, web, crt, key))
	crt, key = ca.sign(t, plain.name, plain.overlay+"/24", "other")
	plain.writeConfig(t, dir, conf(ca, plain, crt, key))
	crt, key = otherCA.sign(t, stranger.name, stranger.overlay+"/24", "web")
	stranger.writeConfig(t, dir, conf(otherCA, stranger, crt, key))

	// The short-lived cert is made last, just before the daemons start, so that its host
	// can start while it is still valid.
	crt, key = expired.path(dir)
	ca.run(t, "sign", "-ca-crt", ca.path("ca.crt"), "-ca-key", ca.path("ca.key"), "-name", expired.name,
		"-ip", expired.overlay+"/24", "-groups", "web", "-duration", "3s", "-out-crt", crt, "-out-key", key)
	expiresAt := time.Now().Add(3 * time.Second)
	expired.writeConfig(t, dir, conf(ca, expired, crt, key))

	for _, h := range all {
		h.start(t)
	}

	// Admitted: ICMP from both same-CA hosts, TCP to the port from the web group only.
	for _, h := range []*meshHost{web, plain} {
		if _, err := h.ns.WaitPing(tunnelUpTimeout, judge.overlay); err != nil {
			t.Fatalf("%s (same CA) cannot ping the judge: %v", h.name, err)
		}
	}
	srv := judge.ns.Start(t, "tcpcheck-serve", tl.tcpcheck(t), "serve", "-listen", fmt.Sprintf("%s:%d", judge.overlay, port), "-count", "0")
	if err := srv.WaitLog(10*time.Second, "listening"); err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("%s:%d", judge.overlay, port)
	if out, err := web.ns.RunTimeout(30*time.Second, tl.tcpcheck(t), "send", "-to", addr, "-bytes", "1048576", "-dial-timeout", "10s"); err != nil {
		t.Fatalf("web group host could not use port %d: %v\n%s", port, err, out)
	}
	if out, err := plain.ns.RunTimeout(30*time.Second, tl.tcpcheck(t), "send", "-to", addr, "-bytes", "1048576", "-dial-timeout", "3s", "-timeout", "5s"); err == nil {
		t.Fatalf("host outside the web group used port %d:\n%s", port, out)
	}

	// Refused: the stranger, and the expired cert once it has expired, in both directions.
	// The four checks run at once; each watches for the whole refusal window.
	time.Sleep(time.Until(expiresAt.Add(time.Second)))
	if expired.proc.Exited() {
		t.Fatalf("the host with the short-lived cert exited before its cert expired; the check would prove nothing:\n%s", expired.proc.Tail(20))
	}
	pairs := [][2]*meshHost{{stranger, judge}, {judge, stranger}, {expired, judge}, {judge, expired}}
	errs := make(chan error, len(pairs))
	for _, p := range pairs {
		go func() { errs <- stayUnreachable(p[0], p[1]) }()
	}
	for range pairs {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	// The judge still serves its legitimate peers after all the refusals.
	if err := web.ns.Ping(judge.overlay); err != nil {
		t.Fatalf("web lost the judge: %v", err)
	}
}

// path returns where this host's cert and key go in dir.
func (h *meshHost) path(dir string) (crt, key string) {
	return filepath.Join(dir, h.name+".crt"), filepath.Join(dir, h.name+".key")
}

// stayUnreachable returns an error if from reaches to over the overlay within refusalWindow,
// or if either daemon is not running at the end (a refusal by a dead daemon proves nothing).
func stayUnreachable(from, to *meshHost) error {
	deadline := time.Now().Add(refusalWindow)
	for time.Now().Before(deadline) {
		if err := from.ns.Ping(to.overlay); err == nil {
			return fmt.Errorf("%s reached %s over the overlay; it must be refused", from.name, to.name)
		}
	}
	for _, h := range []*meshHost{from, to} {
		if h.proc.Exited() {
			return fmt.Errorf("%s's daemon exited during the refusal check:\n%s", h.name, h.proc.Tail(20))
		}
	}
	return nil
}

// TestOverlayDropsPacketsFromASourceOutsideThePeersCert proves that the overlay source address
// of every packet must belong to the sending peer's certificate: h1 adds a second address to
// its overlay interface and pings from it through its legitimate tunnel; the judge must not
// deliver any of those packets to its own stack, while pings from h1's real address arrive.
// Counters on the judge's input hook tell the two apart, since no reply could come back anyway.
// (A sending daemon may already refuse such packets; nebula sends them, so with nebula as h1
// the judge's own check is what is tested.)
func TestOverlayDropsPacketsFromASourceOutsideThePeersCert(t *testing.T) {
	requireNamespaceSuite(t)
	tl := newTools(t)
	cases := trustCases
	if os.Getenv("E2E_PENDING") == "1" {
		cases = append(append([]trustCase{}, trustCases...), pendingTrustCases...)
	}
	for _, c := range cases {
		t.Run(c.name(), func(t *testing.T) {
			hosts := startMesh(t, tl, meshSpec{impls: []string{c.peers, c.judge}, certTool: c.certTool, cipher: c.cipher})
			h1, judge := hosts[0], hosts[1]
			const spoofedIP = "10.42.0.99"
			spoofed := judge.ns.Counter(t, "input", fmt.Sprintf(`iifname "mesh0" ip saddr %s`, spoofedIP))
			legit := judge.ns.Counter(t, "input", fmt.Sprintf(`iifname "mesh0" ip saddr %s icmp type echo-request`, h1.overlay))
			sent := h1.ns.Counter(t, "output", fmt.Sprintf(`oifname "mesh0" ip saddr %s`, spoofedIP))
			h1.ns.MustIP(t, "addr", "add", spoofedIP+"/32", "dev", "mesh0")

			h1.ns.RunTimeout(10*time.Second, "ping", "-n", "-c", "5", "-i", "0.2", "-W", "1", "-I", spoofedIP, judge.overlay)
			if err := h1.ns.Ping(judge.overlay); err != nil {
				t.Fatalf("ping from h1's own address: %v", err)
			}
			if n, err := sent(); err != nil || n == 0 {
				t.Fatalf("h1's kernel wrote %d bytes from %s into its overlay interface (%v); the test sent nothing", n, spoofedIP, err)
			}
			if n, err := legit(); err != nil || n == 0 {
				t.Fatalf("the judge counted %d bytes of pings from h1's own address (%v); the counters do not work", n, err)
			}
			if n, err := spoofed(); err != nil || n != 0 {
				t.Fatalf("the judge delivered %d bytes from %s, which is not in h1's cert (%v)", n, spoofedIP, err)
			}
		})
	}
}
