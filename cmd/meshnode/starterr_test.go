package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshnode/meshnode/cert/certtest"
)

// errorHost writes a CA, a host certificate (10.77.0.1/24) and node.yml with extra appended.
func errorHost(t *testing.T, extra string) string {
	t.Helper()
	dir := t.TempDir()
	ca := certtest.NewCA(t, "errors")
	h := ca.NewHost(t, "h1", "10.77.0.1/24", "cli")
	for name, b := range map[string][]byte{"ca.crt": ca.PEM, "h1.crt": h.PEM, "h1.key": h.KeyPEM} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg := filepath.Join(dir, "node.yml")
	conf := fmt.Sprintf("pki: {ca: %[1]s/ca.crt, cert: %[1]s/h1.crt, key: %[1]s/h1.key}\n%s", dir, extra)
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestPortInUseIsOneLine holds a loopback UDP port and starts the daemon (without a TUN
// device) on it: it must stop at once with one line naming the port and what to do.
func TestPortInUseIsOneLine(t *testing.T) {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	port := pc.LocalAddr().(*net.UDPAddr).Port
	cfg := errorHost(t, fmt.Sprintf("listen: {host: 127.0.0.1, port: %d}\ntun: {disabled: true}\n", port))
	type result struct {
		code        int
		out, errOut string
	}
	done := make(chan result, 1)
	go func() {
		code, out, errOut := runCLI("-config", cfg, "-control", filepath.Join(t.TempDir(), "s.sock"))
		done <- result{code, out, errOut}
	}()
	select {
	case r := <-done:
		want := fmt.Sprintf("meshnode: listen.host 127.0.0.1, listen.port %d: UDP port already in use by another program or another meshnode "+
			"(`ss -ulpn 'sport = :%d'` shows which); stop it or choose another listen.port\n", port, port)
		if r.code != 1 || r.errOut != want {
			t.Fatalf("exit %d, stderr:\n%s\nwant:\n%s", r.code, r.errOut, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the daemon did not stop on a port in use")
	}
}

func TestStartErrorHints(t *testing.T) {
	perm := fmt.Errorf("tun: open %q: TUNSETIFF: %w", "nebula1", syscall.EPERM)
	if got := tunError("nebula1", perm).Error(); got != `tun.dev "nebula1": operation not permitted: creating the TUN device needs root or CAP_NET_ADMIN; `+
		"run meshnode as root, or as a service ("+unitCaps+")" {
		t.Errorf("tunError(EPERM) = %s", got)
	}
	if got := tunError("nebula1", syscall.ENODEV).Error(); strings.Contains(got, "CAP_NET_ADMIN") {
		t.Errorf("tunError(ENODEV) hints at capabilities: %s", got)
	}
	low := listenError("0.0.0.0", 443, fmt.Errorf("udp: listen 0.0.0.0:443: listen udp4 0.0.0.0:443: bind: %w", syscall.EACCES)).Error()
	if low != "listen.host 0.0.0.0, listen.port 443: permission denied: a port below 1024 needs root or CAP_NET_BIND_SERVICE ("+unitCaps+")" {
		t.Errorf("listenError(EACCES, 443) = %s", low)
	}
	if got := listenError("0.0.0.0", 4242, fmt.Errorf("udp: listen 0.0.0.0:4242: %w", syscall.EADDRNOTAVAIL)).Error(); got != "listen.host 0.0.0.0, listen.port 4242: "+syscall.EADDRNOTAVAIL.Error() {
		t.Errorf("listenError(EADDRNOTAVAIL) = %s", got)
	}
}

// TestConfigTestChecksRoutesAndNames: tun.routes is implemented (an entry inside the overlay
// passes -test) and one outside is refused by -test with tun.routes' own message, not at
// daemon start; an unknown key gets a "did you mean".
func TestConfigTestChecksRoutesAndNames(t *testing.T) {
	ok := errorHost(t, "tun:\n  routes:\n    - {route: 10.77.0.128/25, mtu: 1200}\n")
	if code, out, errOut := runCLI("-config", ok, "-test"); code != 0 || !strings.Contains(out, "config OK") {
		t.Fatalf("tun.routes inside the overlay: exit %d\n%s%s", code, out, errOut)
	}
	bad := errorHost(t, "tun:\n  routes:\n    - {route: 192.168.9.0/24, mtu: 1200}\n")
	code, _, errOut := runCLI("-config", bad, "-test")
	if code != 1 || !strings.Contains(errOut, "tun.routes[0].route: 192.168.9.0/24 is not inside this host's network 10.77.0.0/24") ||
		!strings.Contains(errOut, "goes in tun.unsafe_routes, with via") || strings.Count(errOut, "\n") != 1 {
		t.Fatalf("tun.routes outside the overlay: exit %d\n%s", code, errOut)
	}
	typo := errorHost(t, "lighthosue: {am_lighthouse: true}\n")
	if code, _, errOut := runCLI("-config", typo, "-test"); code != 1 || !strings.Contains(errOut, `unknown key "lighthosue" (did you mean lighthouse?)`) {
		t.Fatalf("unknown key: exit %d\n%s", code, errOut)
	}
}
