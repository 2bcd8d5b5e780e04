package e2e

// Building blocks of the network-namespace suites: binaries built from this module, a PKI
// made with a nebula-cert-compatible tool, and meshes of overlay hosts (nebula or meshnode)
// in namespaces. Nothing here is specific to one implementation: a host runs whichever
// binary its spec names with the same Nebula-format config.

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshnode/meshnode/e2e/netns"
	"github.com/meshnode/meshnode/internal/testenv"
)

// Overlay implementations a host can run.
const (
	implNebula   = "nebula"        // the reference nebula 1.6.1 from the system
	implMeshnode = "meshnode"      // this module's ./cmd/meshnode
	implNebula11 = "nebula-1.11.1" // nebula 1.11.1 from the tools directory (v2 certificates)
)

// Timeouts of the namespace suites. Generous: CI runs them on two shared cores.
const (
	tunnelUpTimeout = 20 * time.Second // first ping across a fresh mesh
	recoverTimeout  = 10 * time.Second // ping after a peer restarts (the behaviour we promise)
	transferTimeout = 120 * time.Second
)

func requireNamespaceSuite(t *testing.T) {
	t.Helper()
	testenv.SkipShort(t)
	testenv.RequireRoot(t)
	for _, b := range []string{"ip", "ping"} {
		testenv.RequireBinary(t, b)
	}
}

// moduleRoot is the directory holding go.mod.
func moduleRoot(t testing.TB) string {
	t.Helper()
	out, err := exec.Command(goTool(), "env", "GOMOD").Output()
	if err != nil || strings.TrimSpace(string(out)) == "" || strings.TrimSpace(string(out)) == os.DevNull {
		t.Fatalf("cannot find the module root (go env GOMOD: %q, %v)", out, err)
	}
	return filepath.Dir(strings.TrimSpace(string(out)))
}

func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(runtime.GOROOT(), "bin", "go")
}

// tools holds the binaries one top-level test uses, built once into its temp dir. Its
// methods take the calling (sub)test, so a failure ends that test and not its parent.
type tools struct {
	dir string
	mu  sync.Mutex
	got map[string]string
}

func newTools(t *testing.T) *tools {
	return &tools{dir: t.TempDir(), got: map[string]string{}}
}

// build compiles a package of this module (e.g. "./cmd/meshnode") and returns the binary.
func (tl *tools) build(t testing.TB, pkg string) string {
	t.Helper()
	tl.mu.Lock()
	defer tl.mu.Unlock()
	if p, ok := tl.got[pkg]; ok {
		return p
	}
	out := filepath.Join(tl.dir, filepath.Base(pkg))
	cmd := exec.Command(goTool(), "build", "-o", out, pkg)
	cmd.Dir = moduleRoot(t)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	tl.got[pkg] = out
	return out
}

// prebuilt returns the binary named by an environment variable, if set: E2E_MESHNODE and
// E2E_MESH_CERT run the suites against a given build (e.g. one made from a commit) instead of
// building the working tree.
func prebuilt(t testing.TB, env string) (string, bool) {
	t.Helper()
	p := os.Getenv(env)
	if p == "" {
		return "", false
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%s=%s: %v", env, p, err)
	}
	return p, true
}

// impl returns the binary that runs an overlay implementation.
func (tl *tools) impl(t testing.TB, name string) string {
	t.Helper()
	switch name {
	case implNebula:
		return testenv.RequireBinary(t, "nebula")
	case implNebula11:
		return testenv.RequireNebulaV2(t, "nebula")
	case implMeshnode:
		if p, ok := prebuilt(t, "E2E_MESHNODE"); ok {
			return p
		}
		return tl.build(t, "./cmd/meshnode")
	}
	t.Fatalf("unknown overlay implementation %q", name)
	return ""
}

// certTool returns nebula-cert or this module's mesh-cert (same flags).
func (tl *tools) certTool(t testing.TB, name string) string {
	t.Helper()
	switch name {
	case "nebula-cert":
		return testenv.RequireBinary(t, "nebula-cert")
	case "mesh-cert":
		if p, ok := prebuilt(t, "E2E_MESH_CERT"); ok {
			return p
		}
		return tl.build(t, "./cmd/mesh-cert")
	}
	t.Fatalf("unknown cert tool %q", name)
	return ""
}

func (tl *tools) tcpcheck(t testing.TB) string { return tl.build(t, "./e2e/internal/tcpcheck") }

// pki is a CA and host certificates in one directory.
type pki struct {
	tool, dir string
}

func newPKI(t testing.TB, tool string) *pki {
	t.Helper()
	p := &pki{tool: tool, dir: t.TempDir()}
	p.run(t, "ca", "-name", "e2e test CA", "-duration", "24h",
		"-out-crt", p.path("ca.crt"), "-out-key", p.path("ca.key"))
	return p
}

func (p *pki) path(name string) string { return filepath.Join(p.dir, name) }

func (p *pki) run(t testing.TB, args ...string) {
	t.Helper()
	if out, err := exec.Command(p.tool, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(p.tool), strings.Join(args, " "), err, out)
	}
}

// sign issues a host cert for name with the overlay address cidr (e.g. 10.42.0.1/24).
func (p *pki) sign(t testing.TB, name, cidr string, groups ...string) (crt, key string) {
	t.Helper()
	crt, key = p.path(name+".crt"), p.path(name+".key")
	args := []string{"sign", "-ca-crt", p.path("ca.crt"), "-ca-key", p.path("ca.key"),
		"-name", name, "-ip", cidr, "-out-crt", crt, "-out-key", key}
	if len(groups) > 0 {
		args = append(args, "-groups", strings.Join(groups, ","))
	}
	p.run(t, args...)
	return crt, key
}

// meshSpec describes a mesh: one host per entry of impls, all certs from one CA.
type meshSpec struct {
	impls    []string // implNebula or implMeshnode, one per host
	certTool string   // "nebula-cert" or "mesh-cert"
	cipher   string   // "aes" or "chachapoly"; the same on every host, as Nebula requires
	mtu      int      // overlay MTU; 0 means 1300
	extra    string   // appended to every host's config (e.g. a stats section)
}

// meshHost is one overlay host: a namespace with an underlay address and a running daemon.
type meshHost struct {
	name     string
	ns       *netns.Namespace
	underlay string // 198.18.0.x
	overlay  string // 10.42.0.x
	bin      string
	config   string
	proc     *netns.Process
	sock     string // the meshnode daemon's control socket ("" for nebula)
}

const overlayPort = 4242

// startMesh builds the underlay (a veth pair for two hosts, a switch for more), writes a
// lighthouse-less config per host (every other host in static_host_map), starts every daemon
// and waits until each host reaches every other one over the overlay.
func startMesh(t *testing.T, tl *tools, spec meshSpec) []*meshHost {
	t.Helper()
	if spec.mtu == 0 {
		spec.mtu = 1300
	}
	ca := newPKI(t, tl.certTool(t, spec.certTool))
	hosts := make([]*meshHost, len(spec.impls))
	for i, impl := range spec.impls {
		name := fmt.Sprintf("h%d", i+1)
		hosts[i] = &meshHost{
			name:     name,
			ns:       netns.New(t, name),
			underlay: fmt.Sprintf("198.18.0.%d", i+1),
			overlay:  fmt.Sprintf("10.42.0.%d", i+1),
			bin:      tl.impl(t, impl),
		}
	}
	if len(hosts) == 2 {
		netns.Link(t, hosts[0].ns, "eth0", hosts[0].underlay+"/24", hosts[1].ns, "eth0", hosts[1].underlay+"/24")
	} else {
		sw := netns.NewSwitch(t, "sw")
		for _, h := range hosts {
			sw.Attach(t, h.ns, "eth0", h.underlay+"/24")
		}
	}
	dir := t.TempDir()
	for _, h := range hosts {
		crt, key := ca.sign(t, h.name, h.overlay+"/24", "e2e")
		h.writeConfig(t, dir, staticConf(ca.path("ca.crt"), crt, key, spec, h, hosts))
	}
	for _, h := range hosts {
		h.start(t)
	}
	for _, h := range hosts {
		for _, o := range hosts {
			if h != o {
				if _, err := h.ns.WaitPing(tunnelUpTimeout, o.overlay); err != nil {
					t.Fatalf("overlay never came up: %v", err)
				}
			}
		}
	}
	return hosts
}

// nodeConf is the part of a Nebula-format config the suites vary; render writes the YAML.
type nodeConf struct {
	ca, cert, key string
	initiating    int               // pki.initiating_version; 0 leaves it out
	static        map[string]string // overlay IP -> underlay "ip:port"
	amLighthouse  bool
	lighthouses   []string // overlay IPs of the lighthouses
	punch         bool
	cipher        string
	mtu           int
	inbound       []string // firewall.inbound rules as YAML flow maps; nil means allow all
	extra         string   // appended verbatim (e.g. a stats section)
	tunExtra      string   // more keys of the tun section, indented by two spaces (unsafe_routes)
}

func (c nodeConf) render() string {
	var b strings.Builder
	fmt.Fprintf(&b, "pki:\n  ca: %s\n  cert: %s\n  key: %s\n", c.ca, c.cert, c.key)
	if c.initiating != 0 {
		fmt.Fprintf(&b, "  initiating_version: %d\n", c.initiating)
	}
	b.WriteString("static_host_map:\n")
	if len(c.static) == 0 {
		b.WriteString("  {}\n")
	}
	keys := make([]string, 0, len(c.static))
	for k := range c.static {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "  %q: [%q]\n", k, c.static[k])
	}
	fmt.Fprintf(&b, "lighthouse:\n  am_lighthouse: %t\n  interval: 2\n  hosts: [", c.amLighthouse)
	for i, h := range c.lighthouses {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%q", h)
	}
	b.WriteString("]\n")
	if c.punch {
		b.WriteString("punchy:\n  punch: true\n  respond: true\n")
	}
	mtu := c.mtu
	if mtu == 0 {
		mtu = 1300
	}
	fmt.Fprintf(&b, `listen:
  host: 0.0.0.0
  port: %d
tun:
  dev: mesh0
  mtu: %d
%scipher: %s
logging:
  level: info
  format: text
firewall:
  outbound:
    - {port: any, proto: any, host: any}
  inbound:
`, overlayPort, mtu, c.tunExtra, c.cipher)
	inbound := c.inbound
	if inbound == nil {
		inbound = []string{"{port: any, proto: any, host: any}"}
	}
	for _, r := range inbound {
		fmt.Fprintf(&b, "    - %s\n", r)
	}
	b.WriteString(c.extra)
	return b.String()
}

// staticConf is the config of a lighthouse-less host: every other host in static_host_map.
func staticConf(ca, crt, key string, spec meshSpec, me *meshHost, all []*meshHost) nodeConf {
	c := nodeConf{ca: ca, cert: crt, key: key, cipher: spec.cipher, mtu: spec.mtu, static: map[string]string{}, extra: spec.extra}
	for _, o := range all {
		if o != me {
			c.static[o.overlay] = fmt.Sprintf("%s:%d", o.underlay, overlayPort)
		}
	}
	return c
}

// writeConfig writes a host's config into dir and remembers its path.
func (h *meshHost) writeConfig(t *testing.T, dir string, c nodeConf) {
	t.Helper()
	h.config = filepath.Join(dir, h.name+".yml")
	if err := os.WriteFile(h.config, []byte(c.render()), 0o600); err != nil {
		t.Fatal(err)
	}
}

// start runs the host's daemon (again, after a stop or a kill).
func (h *meshHost) start(t *testing.T) {
	t.Helper()
	args := []string{"-config", h.config}
	if isMeshnode(h.bin) {
		// Every host gets its own control socket: the default path is shared by all the
		// namespaces (one filesystem) and would belong to the machine's own meshnode.
		h.sock = h.controlSocket(t)
		args = append(args, "-control", h.sock)
	}
	h.proc = h.ns.Start(t, h.name+"-"+filepath.Base(h.bin), h.bin, args...)
}

func isMeshnode(bin string) bool {
	return filepath.Base(bin) == implMeshnode || (bin != "" && bin == os.Getenv("E2E_MESHNODE"))
}

// controlSocket is a short path (unix socket paths are limited to 108 bytes, test temp dirs
// can be longer) that lasts as long as the test.
func (h *meshHost) controlSocket(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "mnctl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Join(dir, h.name+".sock")
}

// transfer sends n bytes from one host to another over the overlay with tcpcheck and fails
// the test unless both ends saw the same byte count and checksum.
func transfer(t *testing.T, tl *tools, from, to *meshHost, port int, n int64, seed uint64) time.Duration {
	t.Helper()
	bin := tl.tcpcheck(t)
	addr := fmt.Sprintf("%s:%d", to.overlay, port)
	srv := to.ns.Start(t, "tcpcheck-serve", bin, "serve", "-listen", addr, "-count", "1")
	if err := srv.WaitLog(10*time.Second, "listening"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	out, err := from.ns.RunTimeout(transferTimeout, bin, "send", "-to", addr,
		"-bytes", fmt.Sprint(n), "-seed", fmt.Sprint(seed), "-timeout", transferTimeout.String())
	took := time.Since(start)
	if err != nil {
		t.Fatalf("transfer %s -> %s of %d bytes: %v\n%s\nreceiver: %s", from.name, to.name, n, err, out, srv.Log())
	}
	if err := srv.Wait(10 * time.Second); err != nil {
		t.Fatalf("receiver did not finish: %v\n%s", err, srv.Log())
	}
	sent := lineWith(out, "sent ")
	received := lineWith(srv.Log(), "received ")
	want := fmt.Sprintf("bytes=%d ", n)
	if sent == "" || !strings.HasPrefix(sent, want) || sent != received {
		t.Fatalf("transfer %s -> %s: sender %q, receiver %q (want %d bytes, equal checksums)", from.name, to.name, sent, received, n)
	}
	t.Logf("%s -> %s: %d MB intact in %v (%.0f Mbit/s), %s", from.name, to.name, n>>20,
		took.Round(time.Millisecond), float64(n)*8/took.Seconds()/1e6, sent)
	return took
}

// lineWith returns what follows prefix on the first line that starts with it.
func lineWith(out, prefix string) string {
	for _, l := range strings.Split(out, "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(l), prefix); ok {
			return rest
		}
	}
	return ""
}
