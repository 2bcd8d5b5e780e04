package handshake

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/meshnode/meshnode/cert"
	"github.com/meshnode/meshnode/internal/testenv"
)

// The interop test runs a real nebula 1.6.1 in one network namespace and this package over
// a plain UDP socket in another, joined by a veth pair on 198.18.77.0/24. For each cipher it
// completes a handshake as initiator and as responder and exchanges encrypted packets, which
// proves the Noise parameters, the payload, the key split and the data-plane nonce layout
// against the real binary. Certificates come from the real nebula-cert.
const (
	interopNebulaUnder = "198.18.77.1"
	interopMeshUnder   = "198.18.77.2"
	interopNebulaPort  = 4242
	interopMeshPort    = 4243
	interopNebulaVPN   = "10.77.0.1"
	interopMeshVPN     = "10.77.0.2"
	typeTest           = 4
	typeMessage        = 1
)

func TestInteropWithNebula(t *testing.T) {
	testenv.SkipShort(t)
	testenv.RequireRoot(t)
	nebulaBin := testenv.RequireBinary(t, "nebula")
	nebulaCert := testenv.RequireBinary(t, "nebula-cert")
	testenv.RequireBinary(t, "ip")

	dir := t.TempDir()
	mustRun(t, nebulaCert, "ca", "-name", "interop-ca", "-out-crt", filepath.Join(dir, "ca.crt"), "-out-key", filepath.Join(dir, "ca.key"))
	for _, h := range []struct{ name, ip string }{{"neb", interopNebulaVPN}, {"mesh", interopMeshVPN}} {
		mustRun(t, nebulaCert, "sign", "-ca-crt", filepath.Join(dir, "ca.crt"), "-ca-key", filepath.Join(dir, "ca.key"),
			"-name", h.name, "-ip", h.ip+"/24",
			"-out-crt", filepath.Join(dir, h.name+".crt"), "-out-key", filepath.Join(dir, h.name+".key"))
	}
	creds, pool := loadInteropIdentity(t, dir)
	rec := &recording{files: map[string][]byte{}, now: time.Now()}
	for _, f := range []string{"ca.crt", "mesh.crt", "mesh.key"} {
		rec.files[f] = readFile(t, filepath.Join(dir, f))
	}
	rec.files["time"] = []byte(fmt.Sprint(rec.now.UnixNano()))

	nsNeb, nsMesh := makeNetnsPair(t)
	conn := listenUDPInNetns(t, nsMesh, netip.AddrPortFrom(netip.MustParseAddr(interopMeshUnder), interopMeshPort))
	nebAddr := &net.UDPAddr{IP: net.ParseIP(interopNebulaUnder), Port: interopNebulaPort}

	for _, c := range []Cipher{AESGCM, ChaChaPoly} {
		// A fixed clock and ephemeral seed make our side reproducible, so the recorded
		// packets replay offline (golden_test.go).
		cfg := &Config{Cipher: c, Local: creds, Pool: pool, Now: fixedClock(rec.now), Rand: bytes.NewReader(goldenSeed[:])}
		t.Run(c.String()+"/meshnode_initiates", func(t *testing.T) {
			startNebula(t, nebulaBin, nsNeb, dir, c)
			interopAsInitiator(t, cfg, conn, nebAddr, rec.prefix(c.String()+"-initiator-"))
		})
		t.Run(c.String()+"/nebula_initiates", func(t *testing.T) {
			startNebula(t, nebulaBin, nsNeb, dir, c)
			// Traffic into nebula's tun for our VPN IP makes it handshake with us.
			ping := exec.Command("ip", "netns", "exec", nsNeb, "ping", "-c", "20", "-i", "0.5", "-W", "1", interopMeshVPN)
			if err := ping.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { killAndWait(ping) })
			cfg.Rand = bytes.NewReader(goldenSeed[:])
			interopAsResponder(t, cfg, conn, rec.prefix(c.String()+"-responder-"))
		})
	}
	if out := os.Getenv("MESHNODE_RECORD_NEBULA"); out != "" && !t.Failed() {
		rec.write(t, out)
	}
}

// goldenSeed is the ephemeral private key our side uses in the recorded handshakes.
var goldenSeed = [32]byte{0: 0x6d, 1: 0x65, 2: 0x73, 3: 0x68, 31: 0x01}

// recording collects the packets of a live run; MESHNODE_RECORD_NEBULA=<dir> writes them
// out as golden files (see testdata/nebula-1.6.1/README).
type recording struct {
	files map[string][]byte
	now   time.Time
}

func (r *recording) prefix(p string) func(name string, b []byte) {
	return func(name string, b []byte) { r.files[p+name] = bytes.Clone(b) }
}

func (r *recording) write(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, b := range r.files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("recorded %d golden files in %s", len(r.files), dir)
}

func interopAsInitiator(t *testing.T, cfg *Config, conn *net.UDPConn, nebAddr *net.UDPAddr, record func(string, []byte)) {
	const localIndex = 0x0a0b0c01
	in, msg1, err := Initiate(cfg, localIndex)
	if err != nil {
		t.Fatal(err)
	}
	record("msg1", msg1)
	var res *Result
	deadline := time.Now().Add(15 * time.Second)
	for res == nil {
		if time.Now().After(deadline) {
			t.Fatal("no readable msg 2 from nebula")
		}
		if _, err := conn.WriteToUDP(msg1, nebAddr); err != nil {
			t.Fatal(err)
		}
		pkt, _, ok := readPacket(t, conn, 500*time.Millisecond)
		if !ok || len(pkt) < HeaderLen || pkt[0]&0x0f != typeHandshake {
			continue
		}
		res, err = in.Complete(pkt)
		if err != nil && !Retryable(err) {
			t.Fatalf("Complete: %v", err)
		}
		if err == nil {
			record("msg2", pkt)
		}
	}
	if res.PeerCert.Details.Name != "neb" || res.PeerCert.VpnIP() != netip.MustParseAddr(interopNebulaVPN) {
		t.Fatalf("completed with %q %v", res.PeerCert.Details.Name, res.PeerCert.VpnIP())
	}
	record("test-reply", exchangeTest(t, res, conn, nebAddr, 3))
}

func interopAsResponder(t *testing.T, cfg *Config, conn *net.UDPConn, record func(string, []byte)) {
	const localIndex = 0x0a0b0c02
	var res *Result
	var from *net.UDPAddr
	deadline := time.Now().Add(15 * time.Second)
	for res == nil {
		if time.Now().After(deadline) {
			t.Fatal("no msg 1 from nebula")
		}
		pkt, addr, ok := readPacket(t, conn, 500*time.Millisecond)
		if !ok || len(pkt) < HeaderLen || pkt[0]&0x0f != typeHandshake || binary.BigEndian.Uint64(pkt[8:16]) != counterMsg1 {
			continue
		}
		init, err := ReadInit(cfg, pkt)
		if err != nil {
			t.Fatalf("ReadInit of nebula's msg 1: %v", err)
		}
		if init.PeerCert.Details.Name != "neb" {
			t.Fatalf("msg 1 from %q", init.PeerCert.Details.Name)
		}
		r, msg2, err := init.Respond(localIndex)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := conn.WriteToUDP(msg2, addr); err != nil {
			t.Fatal(err)
		}
		record("msg1", pkt)
		record("msg2", msg2)
		res, from = r, addr
	}

	// nebula flushes the queued ping as a Message with counter >= 3 under its send key.
	for {
		if time.Now().After(deadline) {
			t.Fatal("no decryptable data packet from nebula")
		}
		pkt, _, ok := readPacket(t, conn, 500*time.Millisecond)
		if !ok || len(pkt) < HeaderLen || pkt[0]&0x0f != typeMessage || binary.BigEndian.Uint32(pkt[4:8]) != localIndex {
			continue
		}
		counter := binary.BigEndian.Uint64(pkt[8:16])
		plain, err := res.Recv.Open(nil, pkt[:HeaderLen], pkt[HeaderLen:], counter)
		if err != nil {
			t.Fatalf("Open of nebula's data packet (counter %d): %v", counter, err)
		}
		if len(plain) < 20 || plain[0]>>4 != 4 || netip.AddrFrom4([4]byte(plain[16:20])) != netip.MustParseAddr(interopMeshVPN) {
			t.Fatalf("decrypted packet is not IPv4 to %s: % x", interopMeshVPN, plain)
		}
		record("data", pkt)
		break
	}
	record("test-reply", exchangeTest(t, res, conn, from, 3))
}

// exchangeTest sends an encrypted Test request (type 4/0, empty payload) and waits for
// nebula's Test reply (4/1), which must open under our receive key. It returns the reply.
func exchangeTest(t *testing.T, res *Result, conn *net.UDPConn, to *net.UDPAddr, counter uint64) []byte {
	t.Helper()
	hdr := make([]byte, HeaderLen, HeaderLen+16)
	hdr[0] = headerVersion<<4 | typeTest
	binary.BigEndian.PutUint32(hdr[4:8], res.RemoteIndex)
	binary.BigEndian.PutUint64(hdr[8:16], counter)
	req := res.Send.Seal(hdr, hdr, nil, counter)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if time.Now().After(deadline) {
			t.Fatal("no Test reply from nebula")
		}
		if _, err := conn.WriteToUDP(req, to); err != nil {
			t.Fatal(err)
		}
		pkt, _, ok := readPacket(t, conn, 500*time.Millisecond)
		if !ok || len(pkt) < HeaderLen || pkt[0]&0x0f != typeTest || pkt[1] != 1 ||
			binary.BigEndian.Uint32(pkt[4:8]) != res.LocalIndex {
			continue
		}
		c := binary.BigEndian.Uint64(pkt[8:16])
		plain, err := res.Recv.Open(nil, pkt[:HeaderLen], pkt[HeaderLen:], c)
		if err != nil {
			t.Fatalf("Open of nebula's Test reply (counter %d): %v", c, err)
		}
		if len(plain) != 0 {
			t.Fatalf("Test reply payload % x, want empty", plain)
		}
		return pkt
	}
}

func readPacket(t *testing.T, conn *net.UDPConn, wait time.Duration) ([]byte, *net.UDPAddr, bool) {
	t.Helper()
	buf := make([]byte, 9001)
	if err := conn.SetReadDeadline(time.Now().Add(wait)); err != nil {
		t.Fatal(err)
	}
	n, addr, err := conn.ReadFromUDP(buf)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil, nil, false
		}
		t.Fatal(err)
	}
	return buf[:n], addr, true
}

func loadInteropIdentity(t *testing.T, dir string) (*Credentials, *cert.Pool) {
	t.Helper()
	read := func(name string) []byte { return readFile(t, filepath.Join(dir, name)) }
	c, _, err := cert.UnmarshalPEM(read("mesh.crt"))
	if err != nil {
		t.Fatal(err)
	}
	key, _, err := cert.UnmarshalX25519PrivateKey(read("mesh.key"))
	if err != nil {
		t.Fatal(err)
	}
	creds, err := NewCredentials(c, key)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := cert.NewPoolFromPEM(read("ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	return creds, pool
}

// makeNetnsPair creates two namespaces joined by a veth pair created directly inside them,
// so nothing is added to the machine's own namespace. They are deleted on cleanup.
func makeNetnsPair(t *testing.T) (a, b string) {
	t.Helper()
	base := fmt.Sprintf("mnhs%d", os.Getpid())
	a, b = base+"-neb", base+"-mesh"
	for _, ns := range []string{a, b} {
		mustRun(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	}
	mustRun(t, "ip", "link", "add", "vneb", "netns", a, "type", "veth", "peer", "name", "vmesh", "netns", b)
	for _, s := range []struct{ ns, dev, addr string }{{a, "vneb", interopNebulaUnder}, {b, "vmesh", interopMeshUnder}} {
		mustRun(t, "ip", "-n", s.ns, "addr", "add", s.addr+"/24", "dev", s.dev)
		mustRun(t, "ip", "-n", s.ns, "link", "set", s.dev, "up")
		mustRun(t, "ip", "-n", s.ns, "link", "set", "lo", "up")
	}
	return a, b
}

// listenUDPInNetns opens a UDP socket inside ns. A socket stays in the namespace it was
// created in, so only the creating thread has to switch; that thread is never handed back
// to the scheduler (the goroutine exits locked, so the runtime discards the thread).
func listenUDPInNetns(t *testing.T, ns string, addr netip.AddrPort) *net.UDPConn {
	t.Helper()
	type result struct {
		conn *net.UDPConn
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		fd, err := unix.Open("/run/netns/"+ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			ch <- result{err: err}
			return
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			ch <- result{err: fmt.Errorf("setns %s: %w", ns, err)}
			return
		}
		c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(addr))
		ch <- result{c, err}
	}()
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Cleanup(func() { r.conn.Close() })
	return r.conn
}

func startNebula(t *testing.T, bin, ns, dir string, c Cipher) {
	t.Helper()
	name := strings.ReplaceAll(t.Name(), "/", "_")
	cfgPath := filepath.Join(dir, name+".yml")
	cfg := fmt.Sprintf(`pki:
  ca: %[1]s/ca.crt
  cert: %[1]s/neb.crt
  key: %[1]s/neb.key
static_host_map:
  "%[2]s": ["%[3]s:%[4]d"]
lighthouse:
  am_lighthouse: false
listen:
  host: 0.0.0.0
  port: %[5]d
punchy:
  punch: false
tun:
  disabled: false
  dev: nebula1
  mtu: 1300
cipher: %[6]s
logging:
  level: debug
firewall:
  outbound:
    - port: any
      proto: any
      host: any
  inbound:
    - port: any
      proto: any
      host: any
`, dir, interopMeshVPN, interopMeshUnder, interopMeshPort, interopNebulaPort, c)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	// ip netns exec execs nebula in place, so the PID is nebula's own.
	cmd := exec.Command("ip", "netns", "exec", ns, bin, "-config", cfgPath)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		killAndWait(cmd)
		logFile.Close()
		if t.Failed() {
			if b, err := os.ReadFile(logPath); err == nil {
				t.Logf("nebula log:\n%s", b)
			}
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(logPath)
		if bytes.Contains(b, []byte("Nebula interface is active")) {
			return
		}
		if time.Now().After(deadline) || cmd.ProcessState != nil {
			t.Fatalf("nebula did not start:\n%s", b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// killAndWait stops a process this test started, by its PID: SIGTERM, then SIGKILL.
func killAndWait(cmd *exec.Cmd) {
	if cmd.Process == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustRun(t *testing.T, name string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}
