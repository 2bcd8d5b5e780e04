package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshnode/meshnode/internal/prom"

	"github.com/meshnode/meshnode/cert"
	"github.com/meshnode/meshnode/cert/certtest"
	"github.com/meshnode/meshnode/overlay"
	"github.com/meshnode/meshnode/overlay/tun/tuntest"
	"github.com/meshnode/meshnode/overlay/udp/udptest"
)

func runCLI(args ...string) (code int, stdout, stderr string) {
	var o, e bytes.Buffer
	code = run(args, &o, &e)
	return code, o.String(), e.String()
}

// pair is two in-process nodes; node 0 serves a control socket like the daemon does.
type pair struct {
	dir    string
	sock   string
	config []string // config file of each host
	nodes  []*overlay.Node
}

const fwAll = "firewall:\n  outbound: [{port: any, proto: any, host: any}]\n  inbound: [{port: any, proto: any, host: any}]\n"

func hostConfig(dir string, i int, port int, fw string) string {
	other := 1 - i
	return fmt.Sprintf(`pki:
  ca: %s
  cert: %s
  key: %s
static_host_map:
  "10.42.0.%d": ["198.18.0.%d:4242"]
listen:
  port: %d
handshakes:
  try_interval: 20ms
%s`, filepath.Join(dir, "ca.crt"), filepath.Join(dir, fmt.Sprintf("h%d.crt", i+1)), filepath.Join(dir, fmt.Sprintf("h%d.key", i+1)),
		other+1, other+1, port, fw)
}

func startPair(t *testing.T) *pair {
	t.Helper()
	dir := t.TempDir()
	ca := certtest.NewCA(t, "cli-test")
	write := func(name string, b []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("ca.crt", ca.PEM)
	p := &pair{dir: dir, sock: filepath.Join(dir, "meshnode.sock")}
	net := udptest.NewNetwork(1)
	for i := range 2 {
		h := ca.NewHost(t, fmt.Sprintf("host%d", i+1), fmt.Sprintf("10.42.0.%d/24", i+1), "cli", "web")
		write(fmt.Sprintf("h%d.crt", i+1), h.PEM)
		write(fmt.Sprintf("h%d.key", i+1), h.KeyPEM)
		path := filepath.Join(dir, fmt.Sprintf("h%d.yml", i+1))
		write(filepath.Base(path), []byte(hostConfig(dir, i, 4242, fwAll)))
		p.config = append(p.config, path)
		cfg, err := overlay.LoadConfig(path)
		if err != nil {
			t.Fatal(err)
		}
		pki, err := overlay.LoadPKI(cfg, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		conn, err := net.Listen(netip.MustParseAddrPort(fmt.Sprintf("198.18.0.%d:4242", i+1)))
		if err != nil {
			t.Fatal(err)
		}
		node, err := overlay.New(cfg, pki, overlay.Options{Device: tuntest.NewDevice("t", 1300), Conn: conn,
			Registerer: prom.NewRegistry(), Tick: 5 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		p.nodes = append(p.nodes, node)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); node.Run(ctx) }()
		t.Cleanup(func() { cancel(); <-done })
		if i == 0 {
			rl := newReloader(cfg, pki, node, new(slog.LevelVar), slog.New(slog.DiscardHandler))
			ctl, err := overlay.ListenControl(node, overlay.ControlOptions{Path: p.sock, Reload: rl.reload, Version: "test"})
			if err != nil {
				t.Fatal(err)
			}
			cdone := make(chan struct{})
			go func() { defer close(cdone); ctl.Serve(ctx) }()
			t.Cleanup(func() { ctl.Close(); <-cdone })
		}
	}
	return p
}

func TestSubcommandsAgainstARunningNode(t *testing.T) {
	p := startPair(t)

	code, out, errOut := runCLI("ping", "10.42.0.2", "-c", "2", "-i", "10ms", "-control", p.sock)
	if code != 0 || strings.Count(out, "reply from 10.42.0.2: seq=") != 2 ||
		!strings.Contains(out, "--- host2 (10.42.0.2) ping statistics ---") || !strings.Contains(out, "2 probes sent, 2 replies, 0% loss") ||
		!strings.Contains(out, "proves the tunnel") {
		t.Fatalf("ping: exit %d\n%s%s", code, out, errOut)
	}
	if code, out, _ := runCLI("ping", "-control", p.sock, "-c", "1", "host2"); code != 0 || !strings.Contains(out, "reply from host2: seq=1") {
		t.Fatalf("ping by name: exit %d\n%s", code, out)
	}
	if code, _, errOut := runCLI("ping", "nosuchhost", "-control", p.sock); code != 1 || !strings.Contains(errOut, "unknown host nosuchhost") {
		t.Fatalf("ping unknown: exit %d: %s", code, errOut)
	}

	code, out, errOut = runCLI("status", "-control", p.sock)
	if code != 0 {
		t.Fatalf("status: %d %s", code, errOut)
	}
	for _, want := range []string{"host1 10.42.0.1 (network 10.42.0.0/24), groups cli,web", "firewall drops: inbound 0, outbound 0",
		"NAME", "LAST PACKET", "host2", "10.42.0.2", "direct", "198.18.0.2:4242", "ago", "in 364d"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	if code, out, _ := runCLI("status", "-rtt", "-control", p.sock); code != 0 || !strings.Contains(out, "RTT") || !strings.Contains(out, " ms\n") {
		t.Errorf("status -rtt: exit %d\n%s", code, out)
	}
	code, out, _ = runCLI("status", "-json", "-control", p.sock)
	var st overlay.ControlStatus
	if err := json.Unmarshal([]byte(out), &st); code != 0 || err != nil || len(st.Peers) != 1 || st.Peers[0].Name != "host2" || st.Peers[0].BytesOut == 0 && st.Peers[0].PacketsOut != 0 {
		t.Fatalf("status -json: exit %d, %v\n%s", code, err, out)
	}

	code, out, _ = runCLI("list", "--tree", "-control", p.sock)
	want := "10.42.0.0/24 (2 hosts)\n├── 10.42.0.1  host1  self           -\n└── 10.42.0.2  host2  tunnel,static  198.18.0.2:4242\n"
	if code != 0 || out != want {
		t.Fatalf("list --tree: exit %d\n%s\nwant\n%s", code, out, want)
	}
	if code, out, _ := runCLI("list", "-control", p.sock); code != 0 || !strings.Contains(out, "NETWORK") || !strings.Contains(out, "10.42.0.0/24  10.42.0.2") {
		t.Fatalf("list: exit %d\n%s", code, out)
	}

	if code, out, _ := runCLI("reload", "-control", p.sock); code != 0 || !strings.Contains(out, "nothing changed") {
		t.Fatalf("reload without changes: exit %d\n%s", code, out)
	}
	// A new firewall applies at once; a new listen port needs a restart, and says so.
	fw := "firewall:\n  outbound: [{port: any, proto: any, host: any}]\n  inbound: [{port: 22, proto: tcp, group: cli}]\n"
	if err := os.WriteFile(p.config[0], []byte(hostConfig(p.dir, 0, 4343, fw)), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errOut = runCLI("reload", "-control", p.sock)
	if code != 0 || !strings.Contains(out, "firewall: rules replaced") || !strings.Contains(out, "listen: changed; restart meshnode to apply") {
		t.Fatalf("reload: exit %d\n%s%s", code, out, errOut)
	}
	// A broken config is refused with its error; the tunnel stays.
	if err := os.WriteFile(p.config[0], []byte("pki:\n  cartt: x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := runCLI("reload", "-control", p.sock); code != 1 || !strings.Contains(errOut, "unknown key") || !strings.Contains(errOut, "unchanged") {
		t.Fatalf("reload of a broken config: exit %d: %s", code, errOut)
	}
	if _, ok := p.nodes[0].Tunnel(netip.MustParseAddr("10.42.0.2")); !ok {
		t.Fatal("the tunnel did not survive the reloads")
	}
}

func TestReloadSwapsInARenewedCertificate(t *testing.T) {
	p := startPair(t)
	ca := certtest.NewCA(t, "cli-test-2")
	h := ca.NewHost(t, "host1", "10.42.0.1/24", "cli")
	bundle := append(mustRead(t, filepath.Join(p.dir, "ca.crt")), ca.PEM...)
	os.WriteFile(filepath.Join(p.dir, "ca.crt"), bundle, 0o600)
	os.WriteFile(filepath.Join(p.dir, "h1.crt"), h.PEM, 0o600)
	os.WriteFile(filepath.Join(p.dir, "h1.key"), h.KeyPEM, 0o600)
	code, out, errOut := runCLI("reload", "-control", p.sock)
	if code != 0 || !strings.Contains(out, "pki.cert: new certificate") || !strings.Contains(out, "pki.key: new key") || !strings.Contains(out, "pki.ca: CA bundle changed") {
		t.Fatalf("reload: exit %d\n%s%s", code, out, errOut)
	}
	_, out, _ = runCLI("status", "-json", "-control", p.sock)
	var st overlay.ControlStatus
	json.Unmarshal([]byte(out), &st)
	if st.Fingerprint != mustFingerprint(t, h.PEM) {
		t.Fatalf("status shows cert %s after reload", st.Fingerprint)
	}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestClientsSayWhatToDoWhenNoDaemonRuns(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "none.sock")
	for _, cmd := range []string{"status", "ping 10.42.0.2", "list", "reload"} {
		args := append(strings.Fields(cmd), "-control", sock)
		code, out, errOut := runCLI(args...)
		if code != 1 || strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, "is meshnode running? start it with: meshnode -config node.yml") {
			t.Errorf("%s: exit %d, stderr %q, stdout %q", cmd, code, errOut, out)
		}
	}
}

func TestDaemonFlagsKeepWorking(t *testing.T) {
	p := startPair(t)
	for _, args := range [][]string{{"-config", p.config[1], "-test"}, {"--config", p.config[1], "--test"}, {"-test", "-config=" + p.config[1]}} {
		code, out, errOut := runCLI(args...)
		if code != 0 || !strings.Contains(out, "config OK (host host2, 10.42.0.2)") {
			t.Errorf("%v: exit %d %s%s", args, code, out, errOut)
		}
	}
	if code, out, _ := runCLI("-version"); code != 0 || !strings.HasPrefix(out, "meshnode ") {
		t.Errorf("-version: %d %q", code, out)
	}
	if code, _, errOut := runCLI("frobnicate"); code != 2 || !strings.Contains(errOut, "unknown command") {
		t.Errorf("unknown command: %d %q", code, errOut)
	}
	if code, _, errOut := runCLI(); code != 2 || !strings.Contains(errOut, "-config is required") {
		t.Errorf("no args: %d %q", code, errOut)
	}
	if code, out, _ := runCLI("help"); code != 0 || !strings.Contains(out, "status      Show this host") {
		t.Errorf("help: exit %d\n%s", code, out)
	}
	if code, out, _ := runCLI("-h"); code != 0 || !strings.Contains(out, "meshnode -config /etc/meshnode/node.yml") || !strings.Contains(out, "--control") {
		t.Errorf("-h: exit %d\n%s", code, out)
	}
	if code, out, _ := runCLI("ping", "-h"); code != 0 || !strings.Contains(out, "meshnode ping HOST|VPN-IP [flags]") || !strings.Contains(out, "-c, --count") {
		t.Errorf("ping -h: exit %d\n%s", code, out)
	}
	if code, _, errOut := runCLI("status", "extra"); code != 2 || !strings.Contains(errOut, "--help") {
		t.Errorf("status extra: exit %d %q", code, errOut)
	}
	if code, _, errOut := runCLI("status", "-bogus"); code != 2 || !strings.Contains(errOut, "unknown flag: --bogus") {
		t.Errorf("status -bogus: exit %d %q", code, errOut)
	}
	if code, _, _ := runCLI("status", "-h"); code != 0 {
		t.Errorf("status -h: exit %d", code)
	}
	if code, _, _ := runCLI("ping"); code != 2 {
		t.Errorf("ping without a host: exit %d", code)
	}
}

func TestAgeAndBytesReadWell(t *testing.T) {
	for d, want := range map[time.Duration]string{
		300 * time.Millisecond: "0s", 42 * time.Second: "42s", 5*time.Minute + 10*time.Second: "5m10s",
		3*time.Hour + 12*time.Minute + 5*time.Second: "3h12m", 50 * time.Hour: "2d2h",
	} {
		if got := age(d); got != want {
			t.Errorf("age(%v) = %q, want %q", d, got, want)
		}
	}
	for n, want := range map[uint64]string{0: "0 B", 1023: "1023 B", 1536: "1.5 KiB", 5 << 20: "5.0 MiB"} {
		if got := bytesStr(n); got != want {
			t.Errorf("bytesStr(%d) = %q, want %q", n, got, want)
		}
	}
}

func mustFingerprint(t *testing.T, pem []byte) string {
	t.Helper()
	c, _, err := cert.UnmarshalPEM(pem)
	if err != nil {
		t.Fatal(err)
	}
	return c.Fingerprint()
}

func TestStatusTableShowsRelayedPathsExpiryAndDrops(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	st := &overlay.ControlStatus{
		Name: "web1", VpnIP: netip.MustParseAddr("10.42.1.1"), Network: netip.MustParsePrefix("10.42.0.0/16"),
		Groups: []string{"web"}, CertNotAfter: now.Add(30 * 24 * time.Hour), Fingerprint: "0123456789abcdef",
		Drops: map[string]uint64{"firewall_inbound": 3, "firewall_outbound": 0, "replay": 2},
		Peers: []overlay.PeerStatus{{
			Name: "db1", VpnIP: netip.MustParseAddr("10.42.1.2"), Groups: []string{"db"}, Path: "relayed", RelayedVia: "10.42.0.1", RelayName: "lighthouse1",
			Remote: netip.MustParseAddrPort("192.0.2.10:4242"), Handshake: now.Add(-90 * time.Second),
			BytesIn: 2048, BytesOut: 3 << 20, CertNotAfter: now.Add(-time.Hour),
		}},
	}
	var b bytes.Buffer
	printStatus(&b, st, now)
	want := `web1 10.42.1.1 (network 10.42.0.0/16), groups web
  cert 0123456789ab, expires in 30d0h
  firewall drops: inbound 3, outbound 0
  other drops: replay 2

NAME  VPN IP     GROUPS  PATH                               REMOTE  HANDSHAKE  LAST PACKET  IN       OUT      CERT EXPIRES
db1   10.42.1.2  db      relay via lighthouse1 (10.42.0.1)  -       1m30s ago  never        2.0 KiB  3.0 MiB  EXPIRED 1h0m ago

relayed tunnels try the direct path every 10s and move to it when it opens
`
	if b.String() != want {
		t.Fatalf("got\n%s\nwant\n%s", b.String(), want)
	}
}

// -cpuprofile and -memprofile leave non-empty pprof files once the daemon's run ends.
func TestProfilesAreWrittenWhenTheRunEnds(t *testing.T) {
	dir := t.TempDir()
	cpu, mem := filepath.Join(dir, "cpu.pprof"), filepath.Join(dir, "mem.pprof")
	stop, err := startProfiles(cpu, mem)
	if err != nil {
		t.Fatal(err)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{cpu, mem} {
		if st, err := os.Stat(p); err != nil || st.Size() == 0 {
			t.Errorf("%s: %v, size %v", p, err, st)
		}
	}
	if _, err := startProfiles(filepath.Join(dir, "no", "such", "dir"), ""); err == nil {
		t.Error("a CPU profile path that cannot be created was accepted")
	}
}
