package e2e

// Certificate versions across implementations: meshnode, nebula 1.11.1 and nebula 1.6.1 with
// v1, v2 and v1+v2 certificates, as lighthouse and as hosts (docs/ARCHITECTURE.md,
// "Certificate versions").

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshnode/meshnode/e2e/netns"
	"github.com/meshnode/meshnode/internal/testenv"
	"github.com/meshnode/meshnode/overlay"
)

// Which certificates a host holds.
const (
	certV1   = "v1"
	certV2   = "v2"   // v2 with an IPv4 network
	certV2v6 = "v2+6" // v2 with an IPv4 and an IPv6 network (the IPv4 path must work)
	certDual = "v1+v2"
)

// vhost is one host of a version mesh.
type vhost struct {
	impl       string
	certs      string
	initiating int // pki.initiating_version; 0 = the default
}

func (h vhost) String() string {
	s := h.impl + "/" + h.certs
	if h.initiating != 0 {
		s += fmt.Sprintf("/init%d", h.initiating)
	}
	return s
}

func (h vhost) holdsV1() bool { return h.certs == certV1 || h.certs == certDual }
func (h vhost) holdsV2() bool { return h.certs != certV1 }

// canTalk: Nebula before 1.10 reads only v1 certificates, so it cannot meet a host holding
// only v2. Every other pair works (a v1-only 1.10+ host reads a v2 peer's certificate).
func canTalk(a, b vhost) bool {
	old := func(h vhost) bool { return h.impl == implNebula }
	return !(old(a) && !b.holdsV1() || old(b) && !a.holdsV1())
}

// versionPKI is a v1 CA from nebula-cert 1.11.1 (nebula 1.6.1 reads it; it signs v2 hosts
// too) and the host certificates, each file holding the versions the host is to hold.
type versionPKI struct {
	tool, dir string
}

func newVersionPKI(t *testing.T) *versionPKI {
	t.Helper()
	p := &versionPKI{tool: testenv.RequireNebulaV2(t, "nebula-cert"), dir: t.TempDir()}
	p.run(t, "ca", "-version", "1", "-name", "e2e versions CA", "-duration", "24h",
		"-out-crt", p.path("ca.crt"), "-out-key", p.path("ca.key"))
	return p
}

func (p *versionPKI) path(name string) string { return filepath.Join(p.dir, name) }

func (p *versionPKI) run(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(p.tool, args...).CombinedOutput(); err != nil {
		t.Fatalf("nebula-cert %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// sign makes name's key and a certificate file with the versions certs asks for, signed by
// nebula-cert 1.11.1 on one key (as a v1+v2 host needs), concatenated as Nebula 1.10+ reads
// pki.cert.
func (p *versionPKI) sign(t *testing.T, name, ip, certs string) (crt, key string) {
	t.Helper()
	key, pub := p.path(name+".key"), p.path(name+".pub")
	p.run(t, "keygen", "-out-key", key, "-out-pub", pub)
	var body []byte
	for _, v := range []string{"1", "2"} {
		nets := ip + "/24"
		switch {
		case v == "1" && certs != certV1 && certs != certDual,
			v == "2" && certs == certV1:
			continue
		case certs == certV2v6:
			nets += ",fd42::" + strings.TrimPrefix(ip, "10.42.0.") + "/64"
		}
		out := p.path(fmt.Sprintf("%s-v%s.crt", name, v))
		p.run(t, "sign", "-ca-crt", p.path("ca.crt"), "-ca-key", p.path("ca.key"), "-version", v,
			"-name", name, "-networks", nets, "-groups", "e2e", "-in-pub", pub, "-out-crt", out)
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		body = append(body, b...)
	}
	crt = p.path(name + ".crt")
	if err := os.WriteFile(crt, body, 0o600); err != nil {
		t.Fatal(err)
	}
	return crt, key
}

// versionMesh is a lighthouse (hosts[0]) and hosts that know only the lighthouse, so every
// host-to-host tunnel needs the lighthouse protocol to answer on whichever version the
// lighthouse tunnel runs.
type versionMesh struct {
	spec  []vhost
	hosts []*meshHost
	tl    *tools
}

func startVersionMesh(t *testing.T, tl *tools, spec []vhost) *versionMesh {
	t.Helper()
	p := newVersionPKI(t)
	sw := netns.NewSwitch(t, "sw")
	m := &versionMesh{spec: spec, tl: tl}
	for i, s := range spec {
		name := fmt.Sprintf("h%d", i+1)
		if i == 0 {
			name = "lh"
		}
		h := &meshHost{name: name, ns: netns.New(t, name), underlay: fmt.Sprintf("198.18.0.%d", i+1),
			overlay: fmt.Sprintf("10.42.0.%d", i+1), bin: tl.impl(t, s.impl)}
		sw.Attach(t, h.ns, "eth0", h.underlay+"/24")
		m.hosts = append(m.hosts, h)
	}
	dir := t.TempDir()
	lh := m.hosts[0]
	for i, h := range m.hosts {
		crt, key := p.sign(t, h.name, h.overlay, spec[i].certs)
		c := nodeConf{ca: p.path("ca.crt"), cert: crt, key: key, cipher: "aes", initiating: spec[i].initiating,
			static: map[string]string{}}
		if i == 0 {
			c.amLighthouse = true
		} else {
			c.static[lh.overlay] = fmt.Sprintf("%s:%d", lh.underlay, overlayPort)
			c.lighthouses = []string{lh.overlay}
		}
		h.writeConfig(t, dir, c)
		h.start(t)
	}
	for i, h := range m.hosts[1:] {
		if _, err := h.ns.WaitPing(tunnelUpTimeout, lh.overlay); err != nil {
			t.Fatalf("%s (%v) never reached the lighthouse (%v): %v\n%s", h.name, spec[i+1], spec[0], err, h.proc.Tail(20))
		}
	}
	return m
}

// status is a meshnode host's `meshnode status -json`.
func (m *versionMesh) status(t *testing.T, h *meshHost) overlay.ControlStatus {
	t.Helper()
	out, err := exec.Command(m.tl.impl(t, implMeshnode), "status", "-json", "-control", h.sock).Output()
	if err != nil {
		t.Fatalf("%s status: %v", h.name, err)
	}
	var st overlay.ControlStatus
	if err := json.Unmarshal(out, &st); err != nil {
		t.Fatalf("%s status: %v\n%s", h.name, err, out)
	}
	return st
}

// versionsOn returns the certificate versions of h's tunnel to peer (ours, the peer's).
func (m *versionMesh) versionsOn(t *testing.T, h, peer *meshHost) (int, int, bool) {
	t.Helper()
	for _, p := range m.status(t, h).Peers {
		if p.VpnIP.String() == peer.overlay {
			return p.CertVersion, p.PeerCertVersion, true
		}
	}
	return 0, 0, false
}

// checkPairs pings every pair of hosts both ways and carries 1 MB of TCP with checksums
// between the pairs that can talk; pairs that cannot (nebula 1.6.1 and a v2-only host)
// must fail cleanly: no tunnel, both daemons alive, and a meshnode among them says why.
func (m *versionMesh) checkPairs(t *testing.T, port int) {
	t.Helper()
	var table []string
	for i := range m.hosts {
		for j := i + 1; j < len(m.hosts); j++ {
			a, b := m.hosts[i], m.hosts[j]
			sa, sb := m.spec[i], m.spec[j]
			if !canTalk(sa, sb) {
				if err := a.ns.Ping(b.overlay); err == nil {
					t.Fatalf("%s (%v) reached %s (%v), which cannot read its certificate", a.name, sa, b.name, sb)
				}
				_ = b.ns.Ping(a.overlay)
				m.checkCleanFailure(t, i, j)
				table = append(table, fmt.Sprintf("%v - %v: no tunnel (as expected)", sa, sb))
				continue
			}
			for _, d := range [][2]*meshHost{{a, b}, {b, a}} {
				if _, err := d[0].ns.WaitPing(tunnelUpTimeout, d[1].overlay); err != nil {
					t.Fatalf("%s (%v) -> %s (%v): %v\n%s: %s\n%s: %s", a.name, sa, b.name, sb, err,
						a.name, a.proc.Tail(15), b.name, b.proc.Tail(15))
				}
			}
			port++
			transfer(t, m.tl, a, b, port, 1<<20, uint64(port))
			table = append(table, fmt.Sprintf("%v - %v: ping both ways, 1 MB intact%s", sa, sb, m.describe(t, i, j)))
		}
	}
	for _, h := range m.hosts {
		if h.proc.Exited() {
			t.Fatalf("%s exited:\n%s", h.name, h.proc.Tail(30))
		}
	}
	t.Logf("pairs:\n  %s", strings.Join(table, "\n  "))
}

// describe reports the versions a meshnode end of the pair sees on the tunnel and checks the
// ones the rules fix: a 1.6.1 peer is v1 both ways; a single-version meshnode shows its own;
// a dual meshnode initiating v2 with a peer that holds v2 ends on v2 both ways.
func (m *versionMesh) describe(t *testing.T, i, j int) string {
	t.Helper()
	var out []string
	for _, e := range [][2]int{{i, j}, {j, i}} {
		me, peer := m.spec[e[0]], m.spec[e[1]]
		if me.impl != implMeshnode {
			continue
		}
		h, p := m.hosts[e[0]], m.hosts[e[1]]
		var ours, theirs int
		err := netns.Eventually(5*time.Second, 200*time.Millisecond, func() error {
			var ok bool
			if ours, theirs, ok = m.versionsOn(t, h, p); !ok {
				return fmt.Errorf("no tunnel")
			}
			switch {
			case peer.impl == implNebula && (ours != 1 || theirs != 1):
				return fmt.Errorf("v%d/v%d with nebula 1.6.1, want v1/v1", ours, theirs)
			case !me.holdsV1() && ours != 2, !me.holdsV2() && ours != 1:
				return fmt.Errorf("we show v%d holding %s", ours, me.certs)
			case me.certs == certDual && me.initiating == 2 && peer.holdsV2() && (ours != 2 || theirs != 2):
				return fmt.Errorf("v%d/v%d, want v2/v2 (initiating 2, the peer holds v2)", ours, theirs)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("%s (%v) tunnel to %s (%v): %v", h.name, me, p.name, peer, err)
		}
		out = append(out, fmt.Sprintf("%s sees v%d, peer v%d", h.name, ours, theirs))
	}
	if len(out) == 0 {
		return ""
	}
	return " (" + strings.Join(out, "; ") + ")"
}

// checkCleanFailure: a meshnode holding only v2 refuses a 1.6.1 peer's handshakes with a
// counted, logged reason; the daemons keep running.
func (m *versionMesh) checkCleanFailure(t *testing.T, i, j int) {
	t.Helper()
	for _, e := range [][2]int{{i, j}, {j, i}} {
		me, peer := m.spec[e[0]], m.spec[e[1]]
		h := m.hosts[e[0]]
		if me.impl != implMeshnode || peer.impl != implNebula {
			continue
		}
		err := netns.Eventually(10*time.Second, 200*time.Millisecond, func() error {
			if n := m.status(t, h).Drops["handshake_cert_version"]; n == 0 {
				return fmt.Errorf("handshake_cert_version not counted")
			}
			if !strings.Contains(h.proc.Log(), "reads only v1 certificates") {
				return fmt.Errorf("no reason logged")
			}
			return nil
		})
		if err != nil {
			t.Fatalf("%s (%v) and %v: %v\n%s", h.name, me, peer, err, h.proc.Tail(20))
		}
	}
	for _, k := range []int{i, j} {
		if m.hosts[k].proc.Exited() {
			t.Fatalf("%s exited:\n%s", m.hosts[k].name, m.hosts[k].proc.Tail(30))
		}
	}
}

// TestCertVersionMatrix runs three meshes, one per lighthouse implementation, whose hosts
// hold v1, v2 (one with an IPv6 network too) and v1+v2 certificates where their version
// supports it (nebula 1.6.1 holds v1 only). Hosts find each other only through the
// lighthouse; every pair pings both ways and carries 1 MB of TCP with checksums, except a
// 1.6.1 host and a v2-only one, which must fail cleanly.
func TestCertVersionMatrix(t *testing.T) {
	requireNamespaceSuite(t)
	tl := newTools(t)
	meshes := []struct {
		name string
		spec []vhost
	}{
		{"lh-meshnode", []vhost{
			{implMeshnode, certDual, 0},
			{implNebula, certV1, 0},
			{implNebula11, certV2, 0},
			{implNebula11, certDual, 0},
			{implMeshnode, certV2v6, 0},
			{implMeshnode, certV1, 0},
		}},
		{"lh-nebula-1.11.1", []vhost{
			{implNebula11, certV2, 0},
			{implMeshnode, certV2, 0},
			{implMeshnode, certDual, 2},
			{implMeshnode, certV1, 0},
			{implNebula11, certDual, 0},
		}},
		{"lh-nebula-1.6.1", []vhost{
			{implNebula, certV1, 0},
			{implMeshnode, certDual, 2},
			{implNebula11, certDual, 0},
			{implMeshnode, certV1, 0},
		}},
	}
	for k, c := range meshes {
		t.Run(c.name, func(t *testing.T) {
			m := startVersionMesh(t, tl, c.spec)
			m.checkPairs(t, 9500+100*k)
		})
	}
}

// TestDualCertHostMovesANebula111TunnelToV2 proves that a meshnode host holding v1 and v2
// certificates keeps a nebula 1.6.1 peer (v1) and a nebula 1.11.1 peer connected at once,
// and that setting pki.initiating_version: 2 and reloading moves the 1.11.1 tunnel to v2
// while pings run, without losing one, and leaves the 1.6.1 peer on v1.
func TestDualCertHostMovesANebula111TunnelToV2(t *testing.T) {
	requireNamespaceSuite(t)
	tl := newTools(t)
	spec := []vhost{{implMeshnode, certDual, 0}, {implNebula, certV1, 0}, {implNebula11, certDual, 0}}
	p := newVersionPKI(t)
	sw := netns.NewSwitch(t, "sw")
	m := &versionMesh{spec: spec, tl: tl}
	for i, s := range spec {
		name := fmt.Sprintf("h%d", i+1)
		h := &meshHost{name: name, ns: netns.New(t, name), underlay: fmt.Sprintf("198.18.0.%d", i+1),
			overlay: fmt.Sprintf("10.42.0.%d", i+1), bin: tl.impl(t, s.impl)}
		sw.Attach(t, h.ns, "eth0", h.underlay+"/24")
		m.hosts = append(m.hosts, h)
	}
	dir := t.TempDir()
	confs := make([]nodeConf, len(spec))
	for i, h := range m.hosts {
		crt, key := p.sign(t, h.name, h.overlay, spec[i].certs)
		confs[i] = nodeConf{ca: p.path("ca.crt"), cert: crt, key: key, cipher: "aes", static: map[string]string{}}
		for _, o := range m.hosts {
			if o != h {
				confs[i].static[o.overlay] = fmt.Sprintf("%s:%d", o.underlay, overlayPort)
			}
		}
		h.writeConfig(t, dir, confs[i])
		h.start(t)
	}
	dual, old, neb11 := m.hosts[0], m.hosts[1], m.hosts[2]
	for _, pr := range [][2]*meshHost{{dual, old}, {old, dual}, {dual, neb11}, {neb11, dual}} {
		if _, err := pr[0].ns.WaitPing(tunnelUpTimeout, pr[1].overlay); err != nil {
			t.Fatalf("%s -> %s: %v", pr[0].name, pr[1].name, err)
		}
	}
	want := func(peer *meshHost, v int) {
		t.Helper()
		err := netns.Eventually(15*time.Second, 200*time.Millisecond, func() error {
			ours, theirs, ok := m.versionsOn(t, dual, peer)
			if !ok || ours != v || theirs != v {
				return fmt.Errorf("tunnel to %s: v%d/v%d (up %t), want v%d/v%d", peer.name, ours, theirs, ok, v, v)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("%v\n%s", err, dual.proc.Tail(20))
		}
	}
	want(old, 1)
	want(neb11, 1) // both default to v1 (pki.initiating_version 1 with a v1 certificate held)
	transfer(t, tl, old, dual, 9601, 1<<20, 1)
	transfer(t, tl, neb11, dual, 9602, 1<<20, 2)

	// Pings from both peers run across the change: 300 at 20 ms is 6 s.
	type pinger struct {
		from *meshHost
		out  chan string
	}
	var pingers []pinger
	for _, h := range []*meshHost{neb11, old} {
		pg := pinger{h, make(chan string, 1)}
		go func() {
			out, _ := pg.from.ns.RunTimeout(30*time.Second, "ping", "-n", "-q", "-c", "300", "-i", "0.02", "-W", "1", dual.overlay)
			pg.out <- out
		}()
		pingers = append(pingers, pg)
	}
	time.Sleep(time.Second)
	confs[0].initiating = 2
	dual.writeConfig(t, dir, confs[0])
	if err := syscall.Kill(dual.proc.PID(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	want(neb11, 2)
	for _, pg := range pingers {
		out := <-pg.out
		loss := lineWith(out, "300 packets transmitted, ")
		t.Logf("%s -> %s during the change: %s", pg.from.name, dual.name, loss)
		if pg.from == neb11 && !strings.HasPrefix(loss, "300 received, 0% packet loss") {
			t.Fatalf("pings from nebula 1.11.1 lost across the move to v2: %q\n%s", loss, dual.proc.Tail(30))
		}
		if pg.from == old && !strings.Contains(loss, "received") {
			t.Fatalf("pings from nebula 1.6.1: %q", out)
		}
	}
	want(old, 1) // 1.6.1 cannot read v2: after the v2 tries it stays on v1
	if !strings.Contains(dual.proc.Log(), "trying v1") {
		t.Fatalf("no v1 fallback logged toward the 1.6.1 peer:\n%s", dual.proc.Tail(30))
	}
	var events []string
	for _, l := range strings.Split(dual.proc.Log(), "\n") {
		if strings.Contains(l, "re-handshaking") || strings.Contains(l, "trying v1") || strings.Contains(l, "tunnel up") {
			events = append(events, l)
		}
	}
	t.Logf("%s:\n%s", dual.name, strings.Join(events, "\n"))
	transfer(t, tl, old, dual, 9603, 1<<20, 3)
	transfer(t, tl, neb11, dual, 9604, 1<<20, 4)
	transfer(t, tl, dual, neb11, 9605, 1<<20, 5)
}
