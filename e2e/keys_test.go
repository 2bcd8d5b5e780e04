package e2e

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshnode/meshnode/e2e/netns"
	"github.com/meshnode/meshnode/overlay"
)

// keysHost is one host of the key-handling suite: joined by a token only.
type keysHost struct {
	name, underlay, overlay string
	ns                      *netns.Namespace
	dir, config, sock       string
	proc                    *netns.Process
}

// keysBuild builds a package of this module into dir.
func keysBuild(t *testing.T, dir, pkg string) string {
	t.Helper()
	if env, ok := map[string]string{"./cmd/meshnode": "E2E_MESHNODE", "./cmd/mesh-cert": "E2E_MESH_CERT"}[pkg]; ok {
		if b, ok := prebuilt(t, env); ok {
			return b
		}
	}
	out := filepath.Join(dir, filepath.Base(pkg))
	cmd := exec.Command(goTool(), "build", "-o", out, pkg)
	cmd.Dir = moduleRoot(t)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	return out
}

// TestHostsJoinedByTokensRenewWithoutLossAndARevokedHostIsCutOff runs a CA service, a
// lighthouse and two hosts, each in its own namespace on one switch. No cert file is copied:
// every host is invited with `mesh-cert invite` and joins with `meshnode enroll -token`.
// Certificates live 120 s (60 s plus the service's 1 min backdating) and are renewed at 2/3
// of that, i.e. every ~20 s; a 10 pkt/s ping between the two hosts runs across several
// renewals of both with zero loss, and every host's key changes at each renewal. Then
// `mesh-cert revoke` of one host cuts its tunnels on the others within 60 s, and its renewals
// are refused.
func TestHostsJoinedByTokensRenewWithoutLossAndARevokedHostIsCutOff(t *testing.T) {
	requireNamespaceSuite(t)
	dir := t.TempDir()
	meshnode := keysBuild(t, dir, "./cmd/meshnode")
	meshCert := keysBuild(t, dir, "./cmd/mesh-cert")

	sw := netns.NewSwitch(t, "ksw")
	caNS := netns.New(t, "kca")
	sw.Attach(t, caNS, "eth0", "198.18.0.10/24")
	hosts := []*keysHost{
		{name: "lighthouse", underlay: "198.18.0.1", overlay: "10.42.0.1"},
		{name: "h1", underlay: "198.18.0.2", overlay: "10.42.0.2"},
		{name: "h2", underlay: "198.18.0.3", overlay: "10.42.0.3"},
	}
	for _, h := range hosts {
		h.ns = netns.New(t, "k"+h.name)
		sw.Attach(t, h.ns, "eth0", h.underlay+"/24")
		h.dir = filepath.Join(dir, h.name)
		h.config = filepath.Join(h.dir, "node.yml")
		h.sock = filepath.Join(dir, h.name+".sock")
		if err := os.MkdirAll(h.dir, 0o700); err != nil {
			t.Fatal(err)
		}
	}

	// The CA service.
	caDir := filepath.Join(dir, "ca")
	if err := os.MkdirAll(caDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(meshCert, "ca", "-name", "keys e2e CA", "-duration", "24h",
		"-out-crt", filepath.Join(caDir, "ca.crt"), "-out-key", filepath.Join(caDir, "ca.key")).CombinedOutput(); err != nil {
		t.Fatalf("mesh-cert ca: %v\n%s", err, out)
	}
	caYML := filepath.Join(caDir, "ca.yml")
	keysWriteFile(t, caYML, `listen: 198.18.0.10:8443
url: https://198.18.0.10:8443
state_dir: state
ca:
  - crt: ca.crt
    key: ca.key
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
  cert: 60s
  token: 10m
`)
	svc := caNS.Start(t, "mesh-cert-serve", meshCert, "serve", "-config", caYML)
	if err := svc.WaitLog(20*time.Second, "CA service listening"); err != nil {
		t.Fatal(err)
	}

	// Invite, enroll, start: the only way a host gets its credentials.
	for _, h := range hosts {
		out, err := exec.Command(meshCert, "invite", "-config", caYML, "-cidr", "servers", "-name", h.name,
			"-ip", h.overlay, "-groups", "e2e").CombinedOutput()
		if err != nil {
			t.Fatalf("mesh-cert invite %s: %v\n%s\nservice: %s", h.name, err, out, svc.Tail(20))
		}
		token := strings.TrimSpace(lineWith(string(out), "token:"))
		if token == "" {
			t.Fatalf("no token in:\n%s", out)
		}
		// Settings the CA service does not decide; enroll fills in pki, renewal and lighthouses.
		keysWriteFile(t, h.config, `listen:
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
renewal:
  jitter: 2s
  blocklist_interval: 5s
`)
		out2, err := h.ns.RunTimeout(60*time.Second, meshnode, "enroll", "-token", token, "-config", h.config)
		if err != nil {
			t.Fatalf("meshnode enroll %s: %v\n%s\nservice: %s", h.name, err, out2, svc.Tail(20))
		}
		t.Logf("%s: %s", h.name, strings.TrimSpace(out2))
		if st, err := os.Stat(filepath.Join(h.dir, "host.key")); err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s: host.key %v %v", h.name, st, err)
		}
		h.proc = h.ns.Start(t, h.name+"-meshnode", meshnode, "-config", h.config, "-control", h.sock)
	}
	h1, h2 := hosts[1], hosts[2]
	for _, h := range hosts {
		if err := h.proc.WaitLog(10*time.Second, "certificate renewal scheduled"); err != nil {
			t.Fatalf("%s: %v", h.name, err)
		}
	}
	if _, err := h1.ns.WaitPing(tunnelUpTimeout, h2.overlay); err != nil {
		t.Fatalf("h1 cannot reach h2 through the lighthouse: %v\n%s\n%s", err, h1.proc.Tail(20), h2.proc.Tail(20))
	}
	if _, err := h2.ns.WaitPing(tunnelUpTimeout, h1.overlay); err != nil {
		t.Fatal(err)
	}

	// Watch every host's key file: it must change at each renewal.
	keys := make([]map[[32]byte]bool, len(hosts))
	stopWatch := make(chan struct{})
	var watch sync.WaitGroup
	watch.Add(1)
	var mu sync.Mutex
	go func() {
		defer watch.Done()
		for {
			for i, h := range hosts {
				if b, err := os.ReadFile(filepath.Join(h.dir, "host.key")); err == nil {
					mu.Lock()
					if keys[i] == nil {
						keys[i] = map[[32]byte]bool{}
					}
					keys[i][sha256.Sum256(b)] = true
					mu.Unlock()
				}
			}
			select {
			case <-stopWatch:
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()

	// Beside the ping, a TCP stream h2 -> h1 (a counter every 20 ms) that must stay unbroken
	// and in order across the renewals.
	streamAddr := h1.overlay + ":7000"
	streamSrv := h1.ns.Start(t, "stream-serve", os.Args[0], "-test.run=^TestKeysStreamHelper$", "-keys.stream=serve,"+streamAddr)
	if err := streamSrv.WaitLog(10*time.Second, "stream listening"); err != nil {
		t.Fatalf("%v\n%s", err, streamSrv.Log())
	}
	streamCli := h2.ns.Start(t, "stream-send", os.Args[0], "-test.run=^TestKeysStreamHelper$", "-keys.stream=send,"+streamAddr+",88s")

	// 10 pkt/s for 90 s: every host renews two to three times meanwhile (the first renewal
	// comes later, as certs cannot start before the CA made a moment ago).
	const pings = 900
	start := time.Now()
	out, err := h1.ns.RunTimeout(120*time.Second, "ping", "-i", "0.1", "-c", strconv.Itoa(pings), "-W", "1", h2.overlay)
	took := time.Since(start)
	close(stopWatch)
	watch.Wait()
	received := pingReceived(out)
	t.Logf("ping h1 -> h2: %d/%d in %v (%s)", received, pings, took.Round(time.Second), lineWith(out, "rtt"))
	renewals := make([]int, len(hosts))
	for i, h := range hosts {
		renewals[i] = strings.Count(h.proc.Log(), "certificate renewed")
		t.Logf("%s: %d renewals, %d distinct keys seen on disk", h.name, renewals[i], len(keys[i]))
	}
	if err != nil && received == 0 {
		t.Fatalf("ping: %v\n%s", err, out)
	}
	if received != pings {
		t.Errorf("lost %d of %d pings across renewals\n%s\nh1:\n%s\nh2:\n%s", pings-received, pings,
			lastLines(out, 5), h1.proc.Tail(30), h2.proc.Tail(30))
	}
	for i, h := range hosts {
		if renewals[i] < 2 {
			t.Errorf("%s renewed %d times in %v, want at least 2\n%s", h.name, renewals[i], took.Round(time.Second), h.proc.Tail(20))
		}
		// The initial key plus one per renewal (a renewal during the last poll may be unseen).
		if len(keys[i]) < renewals[i] {
			t.Errorf("%s: %d distinct keys for %d renewals: the key did not change each time", h.name, len(keys[i]), renewals[i])
		}
	}
	if err := streamCli.Wait(30 * time.Second); err != nil {
		t.Errorf("TCP stream sender: %v\n%s", err, streamCli.Log())
	}
	if err := streamSrv.Wait(30 * time.Second); err != nil {
		t.Errorf("TCP stream receiver: %v\n%s", err, streamSrv.Log())
	}
	sent, got := lineWith(streamCli.Log(), "stream sent"), lineWith(streamSrv.Log(), "stream ok")
	t.Logf("TCP stream h2 -> h1 across renewals: sent %s; received %s", sent, got)
	if sent == "" || !strings.HasPrefix(got, sent+" ") {
		t.Errorf("TCP stream broken: sender %q, receiver %q\n%s", sent, got, streamSrv.Log())
	}
	if t.Failed() {
		return
	}

	// Revoke h2: within 60 s neither h1 nor the lighthouse has a tunnel to it, and it cannot
	// renew any more.
	out3, err := exec.Command(meshCert, "revoke", "-config", caYML, "h2").CombinedOutput()
	if err != nil {
		t.Fatalf("mesh-cert revoke: %v\n%s", err, out3)
	}
	revoked := time.Now()
	t.Logf("%s", strings.TrimSpace(string(out3)))
	for _, h := range []*keysHost{h1, hosts[0]} {
		err := netns.Eventually(60*time.Second-time.Since(revoked), 500*time.Millisecond, func() error {
			if hasPeer(t, meshnode, h, h2.overlay) {
				return fmt.Errorf("%s still has a tunnel to h2", h.name)
			}
			if h.ns.Ping(h2.overlay) == nil {
				return fmt.Errorf("%s still reaches h2", h.name)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("%v %v after the revocation\n%s", err, time.Since(revoked).Round(time.Second), h.proc.Tail(20))
		}
		t.Logf("%s: tunnel to h2 gone %v after the revocation", h.name, time.Since(revoked).Round(100*time.Millisecond))
	}
	// It stays cut (h2 keeps trying to handshake), while h1 and the lighthouse still talk.
	for range 5 {
		time.Sleep(time.Second)
		if h1.ns.Ping(h2.overlay) == nil || h2.ns.Ping(h1.overlay) == nil {
			t.Fatal("h2 is reachable again after its revocation")
		}
	}
	if err := h1.ns.Ping(hosts[0].overlay); err != nil {
		t.Fatalf("h1 lost the lighthouse: %v", err)
	}
	if err := h2.proc.WaitLog(60*time.Second, "renewal refused: this host is revoked"); err != nil {
		t.Fatalf("h2 was not refused a renewal: %v\n%s", err, h2.proc.Tail(20))
	}
	// Nor can it come back under its name: the admin cannot invite it again.
	if out, err := exec.Command(meshCert, "invite", "-config", caYML, "-cidr", "servers", "-name", "h2").CombinedOutput(); err == nil || !strings.Contains(string(out), "revoked") {
		t.Fatalf("invite of the revoked h2: %v\n%s", err, out)
	}
}

// hasPeer asks a host's daemon whether it has a tunnel to vpn.
func hasPeer(t *testing.T, meshnode string, h *keysHost, vpn string) bool {
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

func pingReceived(out string) int {
	m := pingReceivedRE.FindStringSubmatch(out)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

func keysWriteFile(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

var keysStream = flag.String("keys.stream", "", "internal to TestKeysStreamHelper: serve,ADDR or send,ADDR,DURATION")

// TestKeysStreamHelper is not a test: the keys suite runs this test binary inside its
// namespaces with -keys.stream to carry one long TCP connection over the overlay. The
// sender writes an 8-byte counter every 20 ms; the receiver checks that every counter
// arrives once and in order and reports the longest pause between two of them.
func TestKeysStreamHelper(t *testing.T) {
	if *keysStream == "" {
		t.Skip("helper process of TestHostsJoinedByTokensRenewWithoutLossAndARevokedHostIsCutOff")
	}
	parts := strings.Split(*keysStream, ",")
	var err error
	switch {
	case parts[0] == "serve" && len(parts) == 2:
		err = streamServe(parts[1])
	case parts[0] == "send" && len(parts) == 3:
		var d time.Duration
		if d, err = time.ParseDuration(parts[2]); err == nil {
			err = streamSend(parts[1], d)
		}
	default:
		err = fmt.Errorf("bad -keys.stream %q", *keysStream)
	}
	if err != nil {
		fmt.Println("stream error:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

func streamServe(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	fmt.Println("stream listening on", addr)
	conn, err := ln.Accept()
	ln.Close()
	if err != nil {
		return err
	}
	defer conn.Close()
	var want uint64
	var maxGap time.Duration
	last := time.Now()
	buf := make([]byte, 8)
	for {
		conn.SetReadDeadline(time.Now().Add(30 * time.Second))
		if _, err := io.ReadFull(conn, buf); err != nil {
			if errors.Is(err, io.EOF) {
				fmt.Printf("stream ok frames=%d maxgap=%v\n", want, maxGap.Round(time.Millisecond))
				return nil
			}
			return fmt.Errorf("after %d frames: %w", want, err)
		}
		if got := binary.BigEndian.Uint64(buf); got != want {
			return fmt.Errorf("frame %d carries %d", want, got)
		}
		want++
		now := time.Now()
		maxGap = max(maxGap, now.Sub(last))
		last = now
	}
}

func streamSend(addr string, d time.Duration) error {
	var conn net.Conn
	err := netns.Eventually(10*time.Second, 200*time.Millisecond, func() (err error) {
		conn, err = net.DialTimeout("tcp", addr, 2*time.Second)
		return err
	})
	if err != nil {
		return err
	}
	buf := make([]byte, 8)
	var n uint64
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		binary.BigEndian.PutUint64(buf, n)
		conn.SetWriteDeadline(time.Now().Add(30 * time.Second))
		if _, err := conn.Write(buf); err != nil {
			return fmt.Errorf("after %d frames: %w", n, err)
		}
		n++
		time.Sleep(20 * time.Millisecond)
	}
	if err := conn.Close(); err != nil {
		return err
	}
	fmt.Printf("stream sent frames=%d\n", n)
	return nil
}
