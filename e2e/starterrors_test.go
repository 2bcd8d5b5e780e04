package e2e

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshnode/meshnode/cert/certtest"
	"github.com/meshnode/meshnode/e2e/netns"
	"github.com/meshnode/meshnode/internal/testenv"
)

// startErrorHost writes a CA, a host certificate and a config listening on port into dir.
func startErrorHost(t *testing.T, dir string, port int) string {
	t.Helper()
	ca := certtest.NewCA(t, "errors")
	h := ca.NewHost(t, "h1", "10.77.0.1/24", "e2e")
	for name, b := range map[string][]byte{"ca.crt": ca.PEM, "h1.crt": h.PEM, "h1.key": h.KeyPEM} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg := filepath.Join(dir, "node.yml")
	conf := fmt.Sprintf("pki: {ca: %s/ca.crt, cert: %s/h1.crt, key: %s/h1.key}\nlisten: {host: 0.0.0.0, port: %d}\ntun: {dev: mnerr0}\n", dir, dir, dir, port)
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestDaemonStartErrorsAreOneClearLine runs the real binary, in a namespace of its own, into
// the two start failures of issue 15: a UDP port another program holds, and a user without
// CAP_NET_ADMIN (root with every capability dropped by setpriv). Each must end the daemon
// with exactly one line that says what to do, and -test must warn about the missing
// capability before the daemon trips over it.
func TestDaemonStartErrorsAreOneClearLine(t *testing.T) {
	requireNamespaceSuite(t)
	setpriv := testenv.RequireBinary(t, "setpriv")
	dir := t.TempDir()
	bin := buildPkg(t, dir, "./cmd/meshnode")
	ns := netns.New(t, "starterr")
	ns.MustIP(t, "link", "set", "lo", "up")
	sock := filepath.Join(dir, "meshnode.sock")

	// Port in use: another meshnode (without a TUN device) holds UDP 4242 in the namespace.
	holderDir := t.TempDir()
	holderCfg := startErrorHost(t, holderDir, 4242)
	if err := os.WriteFile(holderCfg, []byte(strings.Replace(mustRead(t, holderCfg), "tun: {dev: mnerr0}", "tun: {disabled: true}", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	holder := ns.Start(t, "holder", bin, "-config", holderCfg, "-control", filepath.Join(holderDir, "holder.sock"))
	if err := holder.WaitLog(10*time.Second, "meshnode started"); err != nil {
		t.Fatal(err)
	}
	cfg := startErrorHost(t, dir, 4242)
	start := time.Now()
	out, err := ns.RunTimeout(10*time.Second, bin, "-config", cfg, "-control", sock)
	if exitCode(err) != 1 || strings.Count(strings.TrimSpace(out), "\n") != 0 ||
		!strings.Contains(out, "meshnode: listen.host 0.0.0.0, listen.port 4242: UDP port already in use") ||
		strings.Contains(out, "bind:") || !strings.Contains(out, "choose another listen.port") {
		t.Fatalf("daemon on a port in use (exit %d, %v): want one clear line, got:\n%s", exitCode(err), err, out)
	}
	t.Logf("port in use, after %v:\n%s", time.Since(start).Round(time.Millisecond), out)
	if err := holder.Stop(netns.StopTimeout); err != nil {
		t.Fatal(err)
	}
	// The same when the holder has a TUN device: its sockets share the port with
	// SO_REUSEPORT among themselves (tun.priority_queue), which must not let a second
	// daemon's sockets join them.
	holderCfg = startErrorHost(t, holderDir, 4242)
	if err := os.WriteFile(holderCfg, []byte(strings.Replace(mustRead(t, holderCfg), "tun: {dev: mnerr0}", "tun: {dev: mnerr1}", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	holder = ns.Start(t, "holder-tun", bin, "-config", holderCfg, "-control", filepath.Join(holderDir, "holder.sock"))
	if err := holder.WaitLog(10*time.Second, "meshnode started"); err != nil {
		t.Fatal(err)
	}
	out, err = ns.RunTimeout(10*time.Second, bin, "-config", cfg, "-control", sock)
	if exitCode(err) != 1 || !strings.Contains(out, "meshnode: listen.host 0.0.0.0, listen.port 4242: UDP port already in use") {
		t.Fatalf("daemon on a port a daemon with a priority lane holds (exit %d, %v): want the port-in-use line, got:\n%s", exitCode(err), err, out)
	}
	if err := holder.Stop(netns.StopTimeout); err != nil {
		t.Fatal(err)
	}

	// No CAP_NET_ADMIN: -test says so (and still passes), the daemon stops with the hint.
	drop := []string{"--inh-caps=-all", "--bounding-set=-all", bin, "-config", cfg, "-control", sock}
	out, err = ns.RunTimeout(10*time.Second, setpriv, append(drop, "-test")...)
	if err != nil || !strings.Contains(out, "config OK") || !strings.Contains(out, "note: this user lacks CAP_NET_ADMIN") {
		t.Fatalf("-test without CAP_NET_ADMIN: %v\n%s", err, out)
	}
	out, err = ns.RunTimeout(10*time.Second, setpriv, drop...)
	if exitCode(err) != 1 || strings.Count(strings.TrimSpace(out), "\n") != 0 ||
		!strings.Contains(out, `meshnode: tun.dev "mnerr0": operation not permitted: creating the TUN device needs root or CAP_NET_ADMIN`) ||
		!strings.Contains(out, "CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_BIND_SERVICE") {
		t.Fatalf("daemon without CAP_NET_ADMIN (exit %d, %v): want one line with the hint, got:\n%s", exitCode(err), err, out)
	}
	t.Logf("without CAP_NET_ADMIN:\n%s", out)
	// The device was refused inside the test's namespace; none may leak into the machine's.
	if _, err := net.InterfaceByName("mnerr0"); err == nil {
		t.Fatal("a TUN device mnerr0 exists in the machine's own namespace")
	}
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
