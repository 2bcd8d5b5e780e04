package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshnode/meshnode/cert"
	"github.com/meshnode/meshnode/e2e/netns"
	"github.com/meshnode/meshnode/overlay"
)

// The set-up shared by the suites whose nodes are joined by tokens only (keys, rotation,
// blocklist): a CA service (`mesh-cert serve`), a lighthouse and hosts, each in its own
// network namespace on one switch. Underlay 198.18.0.0/24 with the service at .10 and the
// lighthouse at .1; overlay 10.42.0.0/24 ("servers", a child of "mesh" 10.42.0.0/16) with the
// lighthouse at 10.42.0.1. No cert file is copied: every node gets its credentials from
// `mesh-cert invite` and `meshnode enroll -token`.

// tokenCAAddr is the CA service's underlay address.
const tokenCAAddr = "198.18.0.10"

// tokenOneCA is the ca section of a service that signs with a single CA, ca.crt/ca.key.
const tokenOneCA = "ca:\n  - crt: ca.crt\n    key: ca.key"

// tokenRenewal is the renewal section of the nodes' config in the keys and rotation suites.
const tokenRenewal = "renewal:\n  jitter: 2s\n  blocklist_interval: 5s\n"

// tokenHost is one node of a token mesh.
type tokenHost struct {
	name, underlay, overlay string
	ns                      *netns.Namespace
	dir, config, sock       string
	proc                    *netns.Process
}

// tokenMesh holds the switch, the CA service's namespace and files, and the built binaries.
type tokenMesh struct {
	t                  *testing.T
	dir                string
	meshnode, meshCert string
	sw                 *netns.Switch
	caNS               *netns.Namespace
	caDir, caYML       string
	hosts              []*tokenHost
	svc                *netns.Process // the running service; startService replaces it
	serves             int
}

// newTokenMesh builds meshnode and mesh-cert and puts the CA service's namespace and one per
// named host on a switch; label prefixes the namespaces' labels. The i-th host (from 0) is
// 198.18.0.(i+1) on the underlay and 10.42.0.(i+1) on the overlay, so the first must be the
// lighthouse that ca.yml lists. It starts nothing and writes no CA: the test calls makeCA,
// writeCAConfig and startService.
func newTokenMesh(t *testing.T, label string, names ...string) *tokenMesh {
	t.Helper()
	dir := t.TempDir()
	m := &tokenMesh{t: t, dir: dir}
	for i, name := range names {
		m.hosts = append(m.hosts, &tokenHost{name: name,
			underlay: fmt.Sprintf("198.18.0.%d", i+1), overlay: fmt.Sprintf("10.42.0.%d", i+1)})
	}
	m.meshnode = tokenBuild(t, dir, "./cmd/meshnode")
	m.meshCert = tokenBuild(t, dir, "./cmd/mesh-cert")

	m.sw = netns.NewSwitch(t, label+"sw")
	m.caNS = netns.New(t, label+"ca")
	m.sw.Attach(t, m.caNS, "eth0", tokenCAAddr+"/24")
	for _, h := range m.hosts {
		h.ns = netns.New(t, label+h.name)
		m.sw.Attach(t, h.ns, "eth0", h.underlay+"/24")
		h.dir = filepath.Join(dir, h.name)
		h.config = filepath.Join(h.dir, "node.yml")
		h.sock = filepath.Join(dir, h.name+".sock")
		if err := os.MkdirAll(h.dir, 0o700); err != nil {
			t.Fatal(err)
		}
	}

	m.caDir = filepath.Join(dir, "ca")
	if err := os.MkdirAll(m.caDir, 0o700); err != nil {
		t.Fatal(err)
	}
	m.caYML = filepath.Join(m.caDir, "ca.yml")
	return m
}

// tokenBuild builds a package of this module into dir (or takes the prebuilt binary that
// E2E_MESHNODE / E2E_MESH_CERT names).
func tokenBuild(t *testing.T, dir, pkg string) string {
	t.Helper()
	if env, ok := map[string]string{"./cmd/meshnode": "E2E_MESHNODE", "./cmd/mesh-cert": "E2E_MESH_CERT"}[pkg]; ok {
		if b, ok := prebuilt(t, env); ok {
			return b
		}
	}
	return buildPkg(t, dir, pkg)
}

// makeCA makes a CA named name valid 24 h, as file.crt and file.key in the CA directory.
func (m *tokenMesh) makeCA(name, file string) *cert.Certificate {
	t := m.t
	t.Helper()
	if out, err := exec.Command(m.meshCert, "ca", "-name", name, "-duration", "24h",
		"-out-crt", filepath.Join(m.caDir, file+".crt"), "-out-key", filepath.Join(m.caDir, file+".key")).CombinedOutput(); err != nil {
		t.Fatalf("mesh-cert ca: %v\n%s", err, out)
	}
	b, err := os.ReadFile(filepath.Join(m.caDir, file+".crt"))
	if err != nil {
		t.Fatal(err)
	}
	c, _, err := cert.UnmarshalPEM(b)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// writeCAConfig writes the service's ca.yml with caList as its ca section (tokenOneCA, or
// the steps of a rotation) and certLife as the certificates' lifetime.
func (m *tokenMesh) writeCAConfig(caList string, certLife time.Duration) {
	m.t.Helper()
	tokenWriteFile(m.t, m.caYML, fmt.Sprintf(`listen: %[1]s:8443
url: https://%[1]s:8443
state_dir: state
%[2]s
lighthouses:
  - vpn_ip: 10.42.0.1
    addrs: ["198.18.0.1:4242"]
cidrs:
  mesh:
    cidr: 10.42.0.0/16
    children:
      servers:
        cidr: 10.42.0.0/24
durations:
  cert: %[3]v
  token: 10m
`, tokenCAAddr, caList, certLife))
}

// makeDualStack gives the networks of the ca.yml writeCAConfig wrote an IPv6 prefix too:
// mesh fd42::/48 and servers fd42::/64, so hosts get fd42::N/48 beside 10.42.0.N/16.
func (m *tokenMesh) makeDualStack() {
	m.t.Helper()
	b, err := os.ReadFile(m.caYML)
	if err != nil {
		m.t.Fatal(err)
	}
	y := strings.Replace(string(b), "    cidr: 10.42.0.0/16\n", "    cidr: 10.42.0.0/16\n    cidr6: fd42::/48\n", 1)
	y = strings.Replace(y, "        cidr: 10.42.0.0/24\n", "        cidr: 10.42.0.0/24\n        cidr6: fd42::/64\n", 1)
	tokenWriteFile(m.t, m.caYML, y)
}

// startService starts `mesh-cert serve` on the current ca.yml and waits until it listens.
func (m *tokenMesh) startService() *netns.Process {
	t := m.t
	t.Helper()
	m.serves++
	p := m.caNS.Start(t, fmt.Sprintf("mesh-cert-serve-%d", m.serves), m.meshCert, "serve", "-config", m.caYML)
	if err := p.WaitLog(20*time.Second, "CA service listening"); err != nil {
		t.Fatalf("%v\n%s", err, p.Tail(20))
	}
	m.svc = p
	return p
}

// invite runs `mesh-cert invite` for h in the servers CIDR and group e2e, with args added
// (-ip to choose its address), and returns the token.
func (m *tokenMesh) invite(h *tokenHost, args ...string) string {
	t := m.t
	t.Helper()
	out, err := exec.Command(m.meshCert, append([]string{"invite", "-config", m.caYML, "-cidr", "servers", "-name", h.name, "-groups", "e2e"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("mesh-cert invite %s: %v\n%s\nservice: %s", h.name, err, out, m.svc.Tail(20))
	}
	token := strings.TrimSpace(lineWith(string(out), "token:"))
	if token == "" {
		t.Fatalf("no token in:\n%s", out)
	}
	return token
}

// tokenNodeYML is a node's config before it enrolls: the settings the CA service does not
// decide (enroll fills in pki, the renewal service and the lighthouses), with the renewal
// section given.
func tokenNodeYML(renewal string) string {
	return `listen:
  host: 0.0.0.0
  port: 4242
tun:
  dev: mesh0
  mtu: 1300
lighthouse:
  interval: 2
punchy:
  punch: true
  respond: true
logging:
  level: info
firewall:
  outbound: [{port: any, proto: any, host: any}]
  inbound: [{port: any, proto: any, host: any}]
` + renewal
}

// runEnroll writes tokenNodeYML(renewal) to cfg and runs `meshnode enroll -token` on it in
// h's namespace.
func (m *tokenMesh) runEnroll(h *tokenHost, token, cfg, renewal string) (string, error) {
	m.t.Helper()
	tokenWriteFile(m.t, cfg, tokenNodeYML(renewal))
	return h.ns.RunTimeout(60*time.Second, m.meshnode, "enroll", "-token", token, "-config", cfg)
}

// enroll enrolls h with token into its own config and returns enroll's output.
func (m *tokenMesh) enroll(h *tokenHost, token, renewal string) string {
	t := m.t
	t.Helper()
	out, err := m.runEnroll(h, token, h.config, renewal)
	if err != nil {
		t.Fatalf("meshnode enroll %s: %v\n%s\nservice: %s", h.name, err, out, m.svc.Tail(20))
	}
	return out
}

// start starts h's daemon on its config, with its control socket.
func (m *tokenMesh) start(h *tokenHost) {
	m.t.Helper()
	h.proc = h.ns.Start(m.t, h.name+"-meshnode", m.meshnode, "-config", h.config, "-control", h.sock)
}

// waitRenewalScheduled waits until every one of hosts has scheduled its first renewal.
func (m *tokenMesh) waitRenewalScheduled(hosts []*tokenHost) {
	m.t.Helper()
	for _, h := range hosts {
		if err := h.proc.WaitLog(10*time.Second, "certificate renewal scheduled"); err != nil {
			m.t.Fatalf("%s: %v", h.name, err)
		}
	}
}

// revoke runs `mesh-cert revoke` of the node named name and returns its output.
func (m *tokenMesh) revoke(name string) string {
	m.t.Helper()
	out, err := exec.Command(m.meshCert, "revoke", "-config", m.caYML, name).CombinedOutput()
	if err != nil {
		m.t.Fatalf("mesh-cert revoke: %v\n%s", err, out)
	}
	return string(out)
}

// readCert reads a node's certificate file.
func (m *tokenMesh) readCert(h *tokenHost) *cert.Certificate {
	t := m.t
	t.Helper()
	b, err := os.ReadFile(filepath.Join(h.dir, "host.crt"))
	if err != nil {
		t.Fatal(err)
	}
	c, _, err := cert.UnmarshalPEM(b)
	if err != nil {
		t.Fatalf("%s: host.crt: %v", h.name, err)
	}
	return c
}

// hasPeer asks a host's daemon whether it has a tunnel to vpn.
func hasPeer(t *testing.T, meshnode string, h *tokenHost, vpn string) bool {
	t.Helper()
	out, err := h.ns.RunTimeout(10*time.Second, meshnode, "status", "-json", "-control", h.sock)
	if err != nil {
		t.Fatalf("%s: status: %v\n%s", h.name, err, out)
	}
	var st overlay.ControlStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("%s: status -json: %v\n%s", h.name, err, out)
	}
	for _, p := range st.Peers {
		if p.VpnIP.String() == vpn {
			return true
		}
	}
	return false
}

var pingReceivedRE = regexp.MustCompile(`(\d+) received`)

// pingReceived is the "N received" count of ping's summary (0 when there is none).
func pingReceived(out string) int {
	m := pingReceivedRE.FindStringSubmatch(out)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// logLine is the first line of a daemon's log containing every one of subs, or "".
func logLine(log string, subs ...string) string {
	for _, l := range strings.Split(log, "\n") {
		ok := true
		for _, s := range subs {
			ok = ok && strings.Contains(l, s)
		}
		if ok {
			return l
		}
	}
	return ""
}

func tokenWriteFile(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

// writeReplicaConfigs turns the service into n replicas on one PostgreSQL database: the
// ca.yml writeCAConfig makes becomes replica 0's, ca-<i>.yml replica i's. Replica i listens
// on port 8443+i of the CA namespace; all share the state directory (so the same tls.pem
// and service.key, as copies would be) but each has its own admin socket; tokens name
// every replica. The database is reached over its unix socket, which a network namespace
// does not hide.
func (m *tokenMesh) writeReplicaConfigs(caList string, certLife time.Duration, n int, dsn string) {
	m.t.Helper()
	m.writeCAConfig(caList, certLife)
	b, err := os.ReadFile(m.caYML)
	if err != nil {
		m.t.Fatal(err)
	}
	tokenWriteFile(m.t, filepath.Join(m.caDir, "dsn"), dsn)
	var urls []string
	for i := range n {
		urls = append(urls, fmt.Sprintf("https://%s:%d", tokenCAAddr, 8443+i))
	}
	head := fmt.Sprintf("listen: %[1]s:8443\nurl: https://%[1]s:8443\n", tokenCAAddr)
	for i := range n {
		y := strings.Replace(string(b), head, fmt.Sprintf("listen: %s:%d\nurls: [%s]\nstore: {type: postgres, dsn_file: dsn}\nadmin_socket: state/admin-%d.sock\n",
			tokenCAAddr, 8443+i, strings.Join(urls, ", "), i), 1)
		tokenWriteFile(m.t, m.replicaYML(i), y)
	}
}

func (m *tokenMesh) replicaYML(i int) string {
	if i == 0 {
		return m.caYML
	}
	return filepath.Join(m.caDir, fmt.Sprintf("ca-%d.yml", i))
}

// startReplica starts replica i and waits until it listens. Start replica 0 first: it makes
// the service identity the others then share.
func (m *tokenMesh) startReplica(i int) *netns.Process {
	t := m.t
	t.Helper()
	m.serves++
	p := m.caNS.Start(t, fmt.Sprintf("mesh-cert-serve-r%d-%d", i, m.serves), m.meshCert, "serve", "-config", m.replicaYML(i))
	if err := p.WaitLog(20*time.Second, "CA service listening"); err != nil {
		t.Fatalf("%v\n%s", err, p.Tail(20))
	}
	if i == 0 {
		m.svc = p
	}
	return p
}
