package overlay_test

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshnode/meshnode/internal/prom"

	"github.com/meshnode/meshnode/cert/certtest"
	"github.com/meshnode/meshnode/handshake"
	"github.com/meshnode/meshnode/overlay"
	"github.com/meshnode/meshnode/overlay/header"
	"github.com/meshnode/meshnode/overlay/tun/tuntest"
	"github.com/meshnode/meshnode/overlay/udp/udptest"
)

// meshHost is one node of an in-process mesh.
type meshHost struct {
	name   string
	vpn    netip.Addr
	under  netip.AddrPort
	host   *certtest.Host
	cfg    *overlay.Config
	dev    *tuntest.Device
	node   *overlay.Node
	cancel context.CancelFunc
	done   chan struct{}
	noTun  bool // a lighthouse without a TUN device
}

type mesh struct {
	t     *testing.T
	ca    *certtest.CA
	net   *udptest.Network
	hosts []*meshHost
	extra string // YAML appended to every config
	// configFn, when set, replaces the static full-mesh config.
	configFn func(i int) string
}

func vpnOf(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 42, 0, byte(i + 1)}) }
func underOf(i int) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18, 0, byte(i + 1)}), 4242)
}

// newMesh builds n nodes that know each other through static_host_map.
func newMesh(t *testing.T, n int, extra string) *mesh {
	t.Helper()
	return newMeshWith(t, n, extra, nil, nil)
}

// newMeshWith is newMesh with per-host certificate options (e.g. subnets) and, when
// configFn is set, per-host configs instead of the static full mesh.
func newMeshWith(t *testing.T, n int, extra string, certOpts func(i int) []certtest.Option, configFn func(m *mesh, i int) string) *mesh {
	t.Helper()
	m := &mesh{t: t, ca: certtest.NewCA(t, "mesh-test"), net: udptest.NewNetwork(1), extra: extra}
	if configFn != nil {
		m.configFn = func(i int) string { return configFn(m, i) }
	}
	for i := range n {
		h := &meshHost{name: fmt.Sprintf("host%d", i+1), vpn: vpnOf(i), under: underOf(i)}
		opts := []certtest.Option{certtest.WithGroups("mesh")}
		if certOpts != nil {
			opts = append(opts, certOpts(i)...)
		}
		h.host = m.ca.Issue(t, h.name, vpnOf(i).String()+"/16", opts...)
		m.hosts = append(m.hosts, h)
	}
	for i := range m.hosts {
		m.start(i)
	}
	t.Cleanup(func() {
		for i := range m.hosts {
			m.stop(i)
		}
	})
	return m
}

func (m *mesh) pkiYAML(i int) string {
	h := m.hosts[i]
	return fmt.Sprintf("pki:\n  ca: %q\n  cert: %q\n  key: %q\n", m.ca.PEM, h.host.PEM, h.host.KeyPEM)
}

func (m *mesh) config(i int) string {
	if m.configFn != nil {
		return m.pkiYAML(i) + m.configFn(i)
	}
	return m.configWithoutFn(i)
}

// configWithoutFn is the static full-mesh config.
func (m *mesh) configWithoutFn(i int) string {
	y := m.pkiYAML(i)
	y += "static_host_map:\n"
	for j, o := range m.hosts {
		if j != i {
			y += fmt.Sprintf("  %q: [%q]\n", o.vpn.String(), o.under.String())
		}
	}
	y += "handshakes:\n  try_interval: 20ms\n  retries: 10\n"
	y += "timers:\n  connection_alive_interval: 1s\n  pending_deletion_interval: 2s\n"
	y += "firewall:\n  outbound: [{port: any, proto: any, host: any}]\n  inbound: [{port: any, proto: any, host: any}]\n"
	return y + m.extra
}

// start (re)starts node i with a fresh process state: new indexes, new keys in flight.
func (m *mesh) start(i int) {
	t := m.t
	h := m.hosts[i]
	cfg, err := overlay.ParseConfig([]byte(m.config(i)), h.name+".yml")
	if err != nil {
		t.Fatalf("config %s: %v", h.name, err)
	}
	pki, err := overlay.LoadPKI(cfg, time.Now())
	if err != nil {
		t.Fatalf("pki %s: %v", h.name, err)
	}
	conn, err := m.net.Listen(h.under)
	if err != nil {
		t.Fatal(err)
	}
	h.dev = tuntest.NewDevice(h.name, 1300)
	opts := overlay.Options{Device: h.dev, Conn: conn}
	if h.noTun {
		opts.Device = nil
	}
	if os.Getenv("MESH_TEST_LOG") != "" {
		opts.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("node", h.name)
	}
	h.node, err = overlay.New(cfg, pki, overlay.Options{Device: opts.Device, Conn: conn, Logger: opts.Logger,
		Registerer: prom.NewRegistry(), Tick: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	h.cfg = cfg
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	h.done = make(chan struct{})
	go func(node *overlay.Node, done chan struct{}) {
		defer close(done)
		if err := node.Run(ctx); err != nil {
			t.Errorf("%s: Run: %v", h.name, err)
		}
	}(h.node, h.done)
}

func (m *mesh) stop(i int) {
	h := m.hosts[i]
	if h.cancel == nil {
		return
	}
	h.cancel()
	<-h.done
	h.cancel = nil
}

// udpPacket is an inner IPv4/UDP packet from host i to host j with a payload.
func (m *mesh) udpPacket(i, j int, payload string) []byte {
	return tuntest.IPv4UDP(netip.AddrPortFrom(m.hosts[i].vpn, 5000), netip.AddrPortFrom(m.hosts[j].vpn, 6000), []byte(payload))
}

// sendUntil injects pkt at host i until host j's TUN delivers a packet with the same
// bytes, or the deadline passes. Returns how long it took.
func (m *mesh) sendUntil(i, j int, pkt []byte, within time.Duration) time.Duration {
	m.t.Helper()
	start := time.Now()
	deadline := start.Add(within)
	next := start
	for time.Now().Before(deadline) {
		if !time.Now().Before(next) {
			m.hosts[i].dev.Inject(pkt)
			next = time.Now().Add(100 * time.Millisecond)
		}
		select {
		case got := <-m.hosts[j].dev.Delivered():
			if string(got) == string(pkt) {
				return time.Since(start)
			}
		case <-time.After(10 * time.Millisecond):
		}
	}
	m.t.Fatalf("%s -> %s: packet not delivered within %s", m.hosts[i].name, m.hosts[j].name, within)
	return 0
}

// renew gives host i a fresh certificate (same name, IP and groups) and swaps it in, as
// the renewal loop does; it returns the new certificate.
func (m *mesh) renew(i int) *certtest.Host {
	m.t.Helper()
	h := m.hosts[i]
	renewed := m.ca.NewHost(m.t, h.name, h.vpn.String()+"/16", "mesh")
	creds, err := handshake.NewCredentials(renewed.Cert, renewed.Key)
	if err != nil {
		m.t.Fatal(err)
	}
	if err := h.node.SetPKI(&overlay.PKI{Creds: creds, Pool: certtest.Pool(m.t, m.ca)}); err != nil {
		m.t.Fatal(err)
	}
	return renewed
}

func drain(d *tuntest.Device) {
	for {
		select {
		case <-d.Delivered():
		default:
			return
		}
	}
}

func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("timed out after %s waiting for: %s", within, what)
}

func TestMeshOfFourCarriesTrafficBetweenEveryPair(t *testing.T) {
	m := newMesh(t, 4, "")
	for i := range m.hosts {
		for j := range m.hosts {
			if i != j {
				m.sendUntil(i, j, m.udpPacket(i, j, fmt.Sprintf("hello %d->%d", i, j)), 5*time.Second)
			}
		}
	}
	for i, h := range m.hosts {
		if got := len(h.node.Peers()); got != 3 {
			t.Errorf("%s has %d tunnels, want 3", h.name, got)
		}
		for _, p := range h.node.Peers() {
			o := m.hosts[int(p.VpnIP.As4()[3])-1]
			op, ok := o.node.Tunnel(h.vpn)
			if !ok || op.LocalIndex != p.RemoteIndex || op.RemoteIndex != p.LocalIndex {
				t.Errorf("%s<->%s: tunnel indexes do not pair up: %+v vs %+v", h.name, o.name, p, op)
			}
		}
		_ = i
	}
}

func TestHandshakeRaceLeavesOneTunnelPerPair(t *testing.T) {
	for round := range 5 {
		m := newMesh(t, 2, "")
		var wg sync.WaitGroup
		for i := range 2 {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				m.hosts[i].dev.Inject(m.udpPacket(i, 1-i, fmt.Sprintf("race %d", round)))
			}(i)
		}
		wg.Wait()
		m.sendUntil(0, 1, m.udpPacket(0, 1, "after race a"), 5*time.Second)
		m.sendUntil(1, 0, m.udpPacket(1, 0, "after race b"), 5*time.Second)
		// Both sides settle on the same tunnel (a losing handshake may take a moment to be
		// superseded by the recv_error it causes).
		var a, b overlay.PeerInfo
		eventually(t, 8*time.Second, fmt.Sprintf("round %d: both sides on one tunnel", round), func() bool {
			a, _ = m.hosts[0].node.Tunnel(m.hosts[1].vpn)
			b, _ = m.hosts[1].node.Tunnel(m.hosts[0].vpn)
			if a.LocalIndex == b.RemoteIndex && b.LocalIndex == a.RemoteIndex {
				return true
			}
			m.hosts[0].dev.Inject(m.udpPacket(0, 1, "settle"))
			m.hosts[1].dev.Inject(m.udpPacket(1, 0, "settle"))
			return false
		})
	}
}

func TestPeerRestartRecoversWithoutRestartingTheOther(t *testing.T) {
	m := newMesh(t, 2, "")
	m.sendUntil(0, 1, m.udpPacket(0, 1, "before"), 5*time.Second)
	before, _ := m.hosts[0].node.Tunnel(m.hosts[1].vpn)
	m.stop(1)
	m.start(1)
	// Traffic from the side that kept its state must find the restarted peer again.
	took := m.sendUntil(0, 1, m.udpPacket(0, 1, "after restart"), 10*time.Second)
	after, _ := m.hosts[0].node.Tunnel(m.hosts[1].vpn)
	if after.LocalIndex == before.LocalIndex {
		t.Errorf("tunnel was not re-established (same local index %d)", after.LocalIndex)
	}
	t.Logf("recovered in %s", took)
	m.sendUntil(1, 0, m.udpPacket(1, 0, "reverse"), 5*time.Second)
}

func TestRestartedPeerInitiatingReplacesStaleTunnel(t *testing.T) {
	m := newMesh(t, 2, "")
	m.sendUntil(0, 1, m.udpPacket(0, 1, "before"), 5*time.Second)
	m.stop(0)
	m.start(0)
	m.sendUntil(0, 1, m.udpPacket(0, 1, "from restarted"), 10*time.Second)
	m.sendUntil(1, 0, m.udpPacket(1, 0, "back to restarted"), 10*time.Second)
}

func TestLossReorderDuplicationStillConverges(t *testing.T) {
	m := newMesh(t, 3, "")
	m.net.SetLoss(0.2)
	m.net.SetReorder(0.2)
	m.net.SetDuplicate(0.2)
	for i := range m.hosts {
		for j := range m.hosts {
			if i != j {
				m.sendUntil(i, j, m.udpPacket(i, j, fmt.Sprintf("lossy %d->%d", i, j)), 15*time.Second)
			}
		}
	}
	// Every payload reaches the far TUN at most once even though the network duplicates.
	drain(m.hosts[1].dev)
	const count = 200
	for k := range count {
		m.hosts[0].dev.Inject(m.udpPacket(0, 1, fmt.Sprintf("burst %d", k)))
	}
	seen := map[string]int{}
	timeout := time.After(3 * time.Second)
loop:
	for {
		select {
		case p := <-m.hosts[1].dev.Delivered():
			seen[string(p)]++
		case <-timeout:
			break loop
		}
	}
	for p, c := range seen {
		if c > 1 {
			t.Errorf("packet delivered %d times: %q", c, p)
		}
	}
	if len(seen) < count/2 {
		t.Errorf("only %d of %d packets arrived with 20%% loss", len(seen), count)
	}
	if m.hosts[1].node.Dropped("replay") == 0 {
		t.Errorf("duplicated datagrams were not counted as replays")
	}
}

func TestReplayedAndForgedPacketsAreDroppedAndCounted(t *testing.T) {
	m := newMesh(t, 2, "")
	var mu sync.Mutex
	var captured [][]byte
	m.net.Tap(func(from, to netip.AddrPort, b []byte) bool {
		if to == m.hosts[1].under && len(b) > header.Len && b[0]&0x0f == byte(header.Message) {
			mu.Lock()
			captured = append(captured, append([]byte(nil), b...))
			mu.Unlock()
		}
		return true
	})
	m.sendUntil(0, 1, m.udpPacket(0, 1, "original"), 5*time.Second)
	drain(m.hosts[1].dev)
	mu.Lock()
	replay := captured[len(captured)-1]
	mu.Unlock()
	before := m.hosts[1].node.Dropped("replay")
	for range 100 {
		m.net.Inject(m.hosts[0].under, m.hosts[1].under, replay)
	}
	eventually(t, 2*time.Second, "100 replays counted", func() bool {
		return m.hosts[1].node.Dropped("replay")-before >= 100
	})
	select {
	case p := <-m.hosts[1].dev.Delivered():
		t.Fatalf("a replayed packet reached the TUN: %x", p)
	case <-time.After(100 * time.Millisecond):
	}
	// A forged packet: right index, fresh counter, garbage ciphertext.
	forged := append([]byte(nil), replay...)
	var h header.Header
	_ = h.Parse(forged)
	header.Encode(forged, header.Message, 0, h.RemoteIndex, h.Counter+1000)
	forged[len(forged)-1] ^= 0xff
	m.net.Inject(m.hosts[0].under, m.hosts[1].under, forged)
	eventually(t, 2*time.Second, "forged packet counted", func() bool {
		return m.hosts[1].node.Dropped("decrypt_failed") >= 1
	})
	// The tunnel still works after all of it.
	m.sendUntil(0, 1, m.udpPacket(0, 1, "still fine"), 2*time.Second)
}

func TestUnauthenticatedRecvErrorAndCloseDoNotTearDown(t *testing.T) {
	m := newMesh(t, 2, "")
	m.sendUntil(0, 1, m.udpPacket(0, 1, "up"), 5*time.Second)
	a, _ := m.hosts[0].node.Tunnel(m.hosts[1].vpn)
	var b [header.Len]byte
	header.Encode(b[:], header.RecvError, 0, a.RemoteIndex, 0)
	attacker := netip.MustParseAddrPort("198.18.0.99:4242")
	for range 10 {
		m.net.Inject(attacker, m.hosts[0].under, b[:])
		m.net.Inject(m.hosts[1].under, m.hosts[0].under, b[:])
	}
	// CloseTunnel with a zeroed tag, from the right address: Nebula 1.6 would obey it.
	closeMsg := make([]byte, header.Len+16)
	header.Encode(closeMsg, header.CloseTunnel, 0, a.LocalIndex, 1<<40)
	m.net.Inject(m.hosts[1].under, m.hosts[0].under, closeMsg)
	eventually(t, 2*time.Second, "unauthenticated close counted", func() bool {
		return m.hosts[0].node.Dropped("unauthenticated_close") == 1
	})
	time.Sleep(100 * time.Millisecond)
	now, ok := m.hosts[0].node.Tunnel(m.hosts[1].vpn)
	if !ok {
		t.Fatal("tunnel torn down by unauthenticated messages")
	}
	m.sendUntil(0, 1, m.udpPacket(0, 1, "still up"), 2*time.Second)
	_ = now
}

func TestInnerSourceOutsidePeerCertIsDropped(t *testing.T) {
	m := newMesh(t, 3, "")
	m.sendUntil(0, 1, m.udpPacket(0, 1, "legit"), 5*time.Second)
	// Host 1 holds valid keys but claims to be host 3 inside the tunnel. (Its own outbound
	// firewall would stop this, so the packet is sealed directly.)
	spoof := tuntest.IPv4UDP(netip.AddrPortFrom(m.hosts[2].vpn, 5000), netip.AddrPortFrom(m.hosts[1].vpn, 6000), []byte("spoofed"))
	m.net.Inject(m.hosts[0].under, m.hosts[1].under, m.hosts[0].node.SealForTest(m.hosts[1].vpn, spoof))
	eventually(t, 2*time.Second, "spoofed source counted", func() bool {
		return m.hosts[1].node.Dropped("inner_source_not_in_cert") >= 1
	})
	select {
	case p := <-m.hosts[1].dev.Delivered():
		if string(p) == string(spoof) {
			t.Fatal("spoofed packet delivered")
		}
	case <-time.After(100 * time.Millisecond):
	}
}

func TestUntrustedCAGetsNoTunnel(t *testing.T) {
	m := newMesh(t, 2, "")
	other := certtest.NewCA(t, "other")
	m.stop(0)
	m.hosts[0].host = other.NewHost(t, "intruder", m.hosts[0].vpn.String()+"/16", "mesh")
	// The intruder trusts both CAs so that only host 2's refusal is tested.
	m.ca.PEM = append(append([]byte(nil), m.ca.PEM...), other.PEM...)
	m.start(0)
	m.hosts[0].dev.Inject(m.udpPacket(0, 1, "let me in"))
	eventually(t, 3*time.Second, "handshake refused", func() bool {
		return m.hosts[1].node.Dropped("handshake_invalid") >= 1
	})
	if _, ok := m.hosts[1].node.Tunnel(m.hosts[0].vpn); ok {
		t.Fatal("tunnel built with an untrusted CA's cert")
	}
}

func TestBlocklistedPeerIsDisconnected(t *testing.T) {
	m := newMesh(t, 2, "")
	m.sendUntil(0, 1, m.udpPacket(0, 1, "up"), 5*time.Second)
	// Host 2 reloads with host 1 blocklisted: the live tunnel must go, and no new one form.
	fp := m.hosts[0].host.Cert.Fingerprint()
	m.hosts[1].cfg.PKI.Blocklist = []string{fp}
	pki, err := overlay.LoadPKI(m.hosts[1].cfg, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := m.hosts[1].node.SetPKI(pki); err != nil {
		t.Fatal(err)
	}
	eventually(t, 3*time.Second, "blocklisted tunnel closed", func() bool {
		_, ok := m.hosts[1].node.Tunnel(m.hosts[0].vpn)
		return !ok
	})
	m.hosts[0].dev.Inject(m.udpPacket(0, 1, "blocked"))
	time.Sleep(300 * time.Millisecond)
	if _, ok := m.hosts[1].node.Tunnel(m.hosts[0].vpn); ok {
		t.Fatal("blocklisted peer got a new tunnel")
	}
}

func TestHandshakeFloodFromOneSourceIsRateLimited(t *testing.T) {
	m := newMesh(t, 2, "")
	creds, err := handshake.NewCredentials(m.hosts[0].host.Cert, m.hosts[0].host.Key)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &handshake.Config{Local: creds, Pool: certtest.Pool(t, m.ca)}
	attacker := netip.MustParseAddrPort("198.18.0.66:4242")
	const flood = 200
	for i := range flood {
		_, msg1, err := handshake.Initiate(cfg, uint32(1000+i))
		if err != nil {
			t.Fatal(err)
		}
		m.net.Inject(attacker, m.hosts[1].under, msg1)
	}
	eventually(t, 5*time.Second, "flood counted", func() bool {
		return m.hosts[1].node.Dropped("handshake_rate_limited") >= flood/2
	})
	// The legitimate host, from its own address, still gets through.
	m.sendUntil(0, 1, m.udpPacket(0, 1, "after flood"), 5*time.Second)
}

func TestExpiredPeerCertIsDisconnected(t *testing.T) {
	m := newMesh(t, 2, "")
	m.stop(0)
	now := time.Now()
	m.hosts[0].host = m.ca.Issue(t, "shortlived", m.hosts[0].vpn.String()+"/16",
		certtest.WithValidity(now.Add(-time.Hour), now.Add(3*time.Second)))
	m.start(0)
	m.sendUntil(0, 1, m.udpPacket(0, 1, "while valid"), 2*time.Second)
	eventually(t, 6*time.Second, "tunnel of expired cert closed", func() bool {
		_, ok := m.hosts[1].node.Tunnel(m.hosts[0].vpn)
		return !ok
	})
}

func TestPingMeasuresRoundTripThroughTheTunnel(t *testing.T) {
	m := newMesh(t, 2, "")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rtt, err := m.hosts[0].node.Ping(ctx, m.hosts[1].vpn)
	if err != nil {
		t.Fatal(err)
	}
	if rtt <= 0 || rtt > 5*time.Second {
		t.Fatalf("rtt %s", rtt)
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel2()
	if _, err := m.hosts[0].node.Ping(ctx2, netip.MustParseAddr("10.42.0.99")); err == nil {
		t.Fatal("ping to a host with no address succeeded")
	}
}

func TestRenewedCertReplacesTunnelsWithoutLosingTraffic(t *testing.T) {
	m := newMesh(t, 2, "")
	m.sendUntil(0, 1, m.udpPacket(0, 1, "before renewal"), 5*time.Second)
	time.Sleep(50 * time.Millisecond)
	drain(m.hosts[1].dev)
	before, _ := m.hosts[1].node.Tunnel(m.hosts[0].vpn)
	// A steady stream runs while host 1 swaps in a new key and cert for the same identity.
	const total = 200
	done := make(chan struct{})
	go func() {
		defer close(done)
		for k := range total {
			m.hosts[0].dev.Inject(m.udpPacket(0, 1, fmt.Sprintf("stream %d", k)))
			time.Sleep(2 * time.Millisecond)
		}
	}()
	time.Sleep(100 * time.Millisecond)
	renewed := m.renew(0)
	seen := map[string]bool{}
	timeout := time.After(5 * time.Second)
	for len(seen) < total {
		select {
		case p := <-m.hosts[1].dev.Delivered():
			seen[string(p)] = true
		case <-timeout:
			t.Fatalf("only %d of %d packets arrived across the renewal", len(seen), total)
		}
	}
	<-done
	after, _ := m.hosts[1].node.Tunnel(m.hosts[0].vpn)
	if after.LocalIndex == before.LocalIndex || after.Fingerprint != renewed.Cert.Fingerprint() {
		t.Fatalf("tunnel not re-established on the renewed cert: before %+v after %+v", before, after)
	}
}

func TestRandomAndTruncatedDatagramsAreSurvived(t *testing.T) {
	m := newMesh(t, 2, "")
	var mu sync.Mutex
	var sample [][]byte
	m.net.Tap(func(from, to netip.AddrPort, b []byte) bool {
		mu.Lock()
		if len(sample) < 50 {
			sample = append(sample, append([]byte(nil), b...))
		}
		mu.Unlock()
		return true
	})
	m.sendUntil(0, 1, m.udpPacket(0, 1, "up"), 5*time.Second)
	rng := rand.New(rand.NewPCG(1, 2))
	src := netip.MustParseAddrPort("198.18.0.77:999")
	mu.Lock()
	valid := sample
	mu.Unlock()
	for k := range 5000 {
		var b []byte
		switch k % 4 {
		case 0: // pure noise of any length
			b = make([]byte, rng.IntN(1500))
			for i := range b {
				b[i] = byte(rng.Uint32())
			}
		case 1: // a real packet cut short
			v := valid[rng.IntN(len(valid))]
			b = append([]byte(nil), v[:rng.IntN(len(v))]...)
		case 2: // a real packet with one byte flipped
			v := valid[rng.IntN(len(valid))]
			b = append([]byte(nil), v...)
			b[rng.IntN(len(b))] ^= byte(1 + rng.IntN(255))
		case 3: // every header type, random index and counter
			b = make([]byte, header.Len+rng.IntN(200))
			header.Encode(b, header.Type(rng.IntN(8)), uint8(rng.IntN(3)), rng.Uint32(), rng.Uint64())
		}
		_ = m.net.Inject(src, m.hosts[1].under, b)
	}
	// The node is alive and the tunnel intact.
	m.sendUntil(0, 1, m.udpPacket(0, 1, "still up"), 5*time.Second)
	m.sendUntil(1, 0, m.udpPacket(1, 0, "both ways"), 5*time.Second)
	var total uint64
	for _, r := range overlay.DropReasons() {
		total += m.hosts[1].node.Dropped(r)
	}
	if total < 1000 {
		t.Errorf("only %d drops counted for 5000 bad datagrams", total)
	}
}

func TestReloadedStaticHostMapAppliesWithoutRestart(t *testing.T) {
	m := newMesh(t, 2, "")
	// Host 1 starts with a wrong address for host 2, then reloads the right one.
	m.stop(0)
	good := m.config(0)
	bad := strings.Replace(good, m.hosts[1].under.String(), "198.18.9.9:4242", 1)
	m.configFn = func(i int) string {
		if i == 0 {
			return strings.TrimPrefix(bad, m.pkiYAML(0))
		}
		return strings.TrimPrefix(m.configWithoutFn(i), m.pkiYAML(i))
	}
	m.start(0)
	m.hosts[0].dev.Inject(m.udpPacket(0, 1, "to nowhere"))
	time.Sleep(200 * time.Millisecond)
	if _, ok := m.hosts[0].node.Tunnel(m.hosts[1].vpn); ok {
		t.Fatal("tunnel formed with a wrong static address")
	}
	cfg, err := overlay.ParseConfig([]byte(good), "reloaded.yml")
	if err != nil {
		t.Fatal(err)
	}
	if err := m.hosts[0].node.SetLighthouses(cfg); err != nil {
		t.Fatal(err)
	}
	m.sendUntil(0, 1, m.udpPacket(0, 1, "after reload"), 5*time.Second)
}

// TestHandshakeFromAnIdleNodeRetriesAtTheFastPace: an idle node's timers run once a second,
// but a handshake it starts must be retried every try_interval from the start. host2 is not
// listening when host1's first msg1 goes out and comes up right after: only a prompt retry
// delivers the queued packet well within the second the idle pace would take.
func TestHandshakeFromAnIdleNodeRetriesAtTheFastPace(t *testing.T) {
	m := newMesh(t, 2, "")
	m.stop(1)
	time.Sleep(1100 * time.Millisecond) // host1's timer loop settles at its idle pace
	pkt := m.udpPacket(0, 1, "after a quiet spell")
	m.hosts[0].dev.Inject(pkt)
	time.Sleep(5 * time.Millisecond) // the first msg1 is lost: nobody listens yet
	start := time.Now()
	m.start(1)
	select {
	case got := <-m.hosts[1].dev.Delivered():
		if string(got) != string(pkt) {
			t.Fatalf("delivered %x, want the queued packet", got)
		}
		if d := time.Since(start); d > 450*time.Millisecond {
			t.Fatalf("the queued packet took %v: handshake retries ran at the idle pace", d)
		} else {
			t.Logf("delivered %v after host2 came up", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the queued packet never arrived")
	}
}

// listen.accept_recv_error never: even a recv_error from the peer's own address is not acted
// on (with the default it would start a re-handshake).
func TestAcceptRecvErrorNever(t *testing.T) {
	m := newMesh(t, 2, "listen:\n  accept_recv_error: never\n")
	m.sendUntil(0, 1, m.udpPacket(0, 1, "up"), 5*time.Second)
	a, _ := m.hosts[0].node.Tunnel(m.hosts[1].vpn)
	var b [header.Len]byte
	header.Encode(b[:], header.RecvError, 0, a.RemoteIndex, 0)
	before := m.hosts[0].node.Dropped("recv_error_ignored")
	m.net.Inject(m.hosts[1].under, m.hosts[0].under, b[:])
	eventually(t, 2*time.Second, "recv_error ignored", func() bool {
		return m.hosts[0].node.Dropped("recv_error_ignored") == before+1
	})
}

// tun.drop_local_broadcast: a packet for the network's broadcast address is dropped as no
// route, and starts no handshake (with false, one is attempted toward 10.42.255.255).
func TestDropLocalBroadcast(t *testing.T) {
	m := newMesh(t, 1, "tun:\n  drop_local_broadcast: true\n")
	bcast := tuntest.IPv4UDP(netip.AddrPortFrom(m.hosts[0].vpn, 5000), netip.MustParseAddrPort("10.42.255.255:6000"), []byte("all"))
	before := m.hosts[0].node.Dropped("no_route")
	m.hosts[0].dev.Inject(bcast)
	eventually(t, 2*time.Second, "broadcast dropped", func() bool {
		return m.hosts[0].node.Dropped("no_route") == before+1
	})
}
