package nodekeys

// CA rotation without an outage, end to end in one process: the CA service as `mesh-cert
// serve` runs it (authority.Config from a ca.yml, restarted with each step's CA list), and
// real nodes (overlay.Node over the in-memory UDP network and TUN devices) enrolled with
// `meshnode enroll` and renewed by the daemon's renewer, with traffic between every pair of
// hosts throughout. The steps are the operator's procedure in docs/GETTING-STARTED.md
// (section 8, "Rotate the CA without an outage").

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshnode/meshnode/internal/prom"

	"github.com/meshnode/meshnode/cert"
	"github.com/meshnode/meshnode/cert/authority"
	"github.com/meshnode/meshnode/cert/certtest"
	"github.com/meshnode/meshnode/overlay"
	"github.com/meshnode/meshnode/overlay/tun/tuntest"
	"github.com/meshnode/meshnode/overlay/udp/udptest"
)

// rotService is the CA service of `mesh-cert serve -config ca.yml` on loopback; restart
// rewrites the ca list of ca.yml and opens the service again from the file, as an operator
// restarting it after editing the config does.
type rotService struct {
	t    *testing.T
	dir  string
	addr string
	svc  atomic.Pointer[authority.Service]
	srv  atomic.Pointer[authority.Server]
	h    atomic.Pointer[http.Handler]
}

// restart writes ca.yml with caList as its ca section and (re)opens the service from it.
func (s *rotService) restart(caList string) {
	t := s.t
	t.Helper()
	y := fmt.Sprintf(`listen: %s
url: https://%s
state_dir: state
%s
cidrs:
  mesh:
    cidr: 10.42.0.0/16
    children:
      servers:
        cidr: 10.42.0.0/24
durations:
  cert: 1h
`, s.addr, s.addr, caList)
	path := filepath.Join(s.dir, "ca.yml")
	if err := os.WriteFile(path, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := authority.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if old := s.svc.Load(); old != nil {
		old.Close() // the store is one process's at a time: the old service stops first
	}
	svc, err := cfg.Open(time.Now, slog.New(slog.DiscardHandler), 5*time.Second)
	if err != nil {
		t.Fatalf("opening the CA service with\n%s: %v", caList, err)
	}
	s.svc.Store(svc)
	srv := authority.NewServer(authority.ServerOptions{Authority: svc.Authority, TLS: svc.TLS, EnrollRate: -1,
		Logger: slog.New(slog.DiscardHandler)})
	h := srv.Handler()
	s.srv.Store(srv)
	s.h.Store(&h)
}

// writeCA writes a CA's certificate and key as `mesh-cert ca` would.
func (s *rotService) writeCA(name string, ca *certtest.CA) {
	s.t.Helper()
	if err := os.WriteFile(filepath.Join(s.dir, name+".crt"), ca.PEM, 0o644); err != nil {
		s.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(s.dir, name+".key"), ca.KeyPEM, 0o600); err != nil {
		s.t.Fatal(err)
	}
}

// rotHost is one enrolled host running a node and its renewer.
type rotHost struct {
	name  string
	vpn   netip.Addr
	under netip.AddrPort
	cfg   *overlay.Config
	node  *overlay.Node
	dev   *tuntest.Device
	m     *pkiManager
	r     *renewer
}

func (h *rotHost) cert() *cert.Certificate { return h.m.current().Creds.Cert }

// trusted lists the names of the CAs the running node trusts.
func (h *rotHost) trusted() []string {
	var out []string
	for _, c := range h.m.current().Pool.CAs() {
		out = append(out, c.Details.Name)
	}
	return out
}

// rotHostConfig is what the admin puts on a host before `meshnode enroll` fills in pki and
// renewal: the other hosts' underlay addresses and the firewall.
func rotHostConfig(dir string, i int, n int) string {
	y := fmt.Sprintf("pki:\n  ca: %s\n  cert: %s\n  key: %s\nstatic_host_map:\n",
		filepath.Join(dir, "ca.crt"), filepath.Join(dir, "host.crt"), filepath.Join(dir, "host.key"))
	for j := range n {
		if j != i {
			y += fmt.Sprintf("  \"10.42.0.%d\": [\"198.18.0.%d:4242\"]\n", j+10, j+10)
		}
	}
	return y + `handshakes:
  try_interval: 20ms
  retries: 20
timers:
  connection_alive_interval: 1s
  pending_deletion_interval: 5s
firewall:
  outbound: [{port: any, proto: any, host: any}]
  inbound: [{port: any, proto: any, host: any}]
`
}

func (s *rotService) enrollHost(t *testing.T, network *udptest.Network, i, n int) *rotHost {
	t.Helper()
	h := &rotHost{name: fmt.Sprintf("host%d", i+1), vpn: netip.AddrFrom4([4]byte{10, 42, 0, byte(i + 10)}),
		under: netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18, 0, byte(i + 10)}), 4242)}
	tok, _, err := s.svc.Load().Authority.Invite(authority.InviteRequest{Name: h.name, CIDR: "servers", IP: h.vpn, Groups: []string{"rot"}})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "node.yml")
	if err := os.WriteFile(cfgPath, []byte(rotHostConfig(dir, i, n)), 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := Enroll(context.Background(), EnrollOptions{Token: tok, Config: cfgPath}, &out); err != nil {
		t.Fatalf("enroll %s: %v\n%s", h.name, err, out.String())
	}
	if h.cfg, err = overlay.LoadConfig(cfgPath); err != nil {
		t.Fatal(err)
	}
	pki, err := overlay.LoadPKI(h.cfg, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	conn, err := network.Listen(h.under)
	if err != nil {
		t.Fatal(err)
	}
	h.dev = tuntest.NewDevice(h.name, 1300)
	logger := slog.New(slog.DiscardHandler)
	if os.Getenv("ROTATION_TEST_LOG") != "" {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("node", h.name)
	}
	h.node, err = overlay.New(h.cfg, pki, overlay.Options{Device: h.dev, Conn: conn, Registerer: prom.NewRegistry(),
		Tick: 5 * time.Millisecond, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); h.node.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	h.m = newPKIManager(h.node, pki)
	if h.r, err = newRenewer(h.cfg, h.m, realClock{}, logger.With("part", "renewal")); err != nil {
		t.Fatal(err)
	}
	return h
}

// renew is the host's next renewal, as the daemon's renewal loop runs it.
func (h *rotHost) renew(t *testing.T) {
	t.Helper()
	before := h.cert().Fingerprint()
	if err := h.r.renewOnce(context.Background()); err != nil {
		t.Fatalf("%s: renewal: %v", h.name, err)
	}
	if h.cert().Fingerprint() == before {
		t.Fatalf("%s: renewal did not swap in a new certificate", h.name)
	}
}

// traffic sends a numbered UDP packet every interval on every directed pair of hosts and
// records what each host's TUN device delivers, so losses can be counted per flow.
type traffic struct {
	hosts []*rotHost
	mu    sync.Mutex
	sent  map[string]int          // flow -> packets sent
	got   map[string]map[int]bool // flow -> sequence numbers delivered
	last  map[string]time.Time    // flow -> last delivery
	stop  chan struct{}
	done  sync.WaitGroup
}

func flowName(a, b *rotHost) string { return a.name + "->" + b.name }

func startTraffic(t *testing.T, hosts []*rotHost, interval time.Duration) *traffic {
	tr := &traffic{hosts: hosts, sent: map[string]int{}, got: map[string]map[int]bool{}, last: map[string]time.Time{}, stop: make(chan struct{})}
	for _, h := range hosts {
		tr.done.Add(1)
		go func(h *rotHost) { // receiver
			defer tr.done.Done()
			for {
				select {
				case <-tr.stop:
					return
				case p := <-h.dev.Delivered():
					pk, err := tuntest.Parse(p)
					if err != nil {
						continue
					}
					var flow string
					var seq int
					if _, err := fmt.Sscanf(string(pk.Data), "%s %d", &flow, &seq); err != nil {
						continue
					}
					tr.mu.Lock()
					if tr.got[flow] == nil {
						tr.got[flow] = map[int]bool{}
					}
					tr.got[flow][seq] = true
					tr.last[flow] = time.Now()
					tr.mu.Unlock()
				}
			}
		}(h)
	}
	tr.done.Add(1)
	go func() { // sender: one packet per flow per tick, bounded by stop
		defer tr.done.Done()
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			select {
			case <-tr.stop:
				return
			case <-tick.C:
			}
			for _, a := range hosts {
				for _, b := range hosts {
					if a == b {
						continue
					}
					f := flowName(a, b)
					tr.mu.Lock()
					seq := tr.sent[f]
					tr.sent[f]++
					tr.mu.Unlock()
					a.dev.Inject(tuntest.IPv4UDP(netip.AddrPortFrom(a.vpn, 5000), netip.AddrPortFrom(b.vpn, 6000),
						[]byte(fmt.Sprintf("%s %d", f, seq))))
				}
			}
		}
	}()
	t.Cleanup(tr.close)
	return tr
}

func (tr *traffic) close() {
	select {
	case <-tr.stop:
	default:
		close(tr.stop)
	}
	tr.done.Wait()
}

// missing lists, per flow, the packets sent before upTo (a count per flow taken earlier)
// that have not been delivered.
func (tr *traffic) missing(upTo map[string]int) map[string][]int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	out := map[string][]int{}
	for f, n := range upTo {
		for k := range n {
			if !tr.got[f][k] {
				out[f] = append(out[f], k)
			}
		}
	}
	return out
}

func (tr *traffic) sentNow() map[string]int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	out := map[string]int{}
	for f, n := range tr.sent {
		out[f] = n
	}
	return out
}

// expectNoLoss waits until every packet sent so far on every flow has been delivered (in
// flight ones get 10 s, generous for a loaded machine) and fails with what is missing.
func (tr *traffic) expectNoLoss(t *testing.T, phase string) {
	t.Helper()
	upTo := tr.sentNow()
	total := 0
	for _, n := range upTo {
		total += n
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		miss := tr.missing(upTo)
		if len(miss) == 0 {
			t.Logf("%s: all %d packets on %d flows delivered", phase, total, len(upTo))
			return
		}
		if time.Now().After(deadline) {
			var b strings.Builder
			for f, ks := range miss {
				fmt.Fprintf(&b, "\n  %s: %d lost of %d (first %v)", f, len(ks), upTo[f], ks[:min(len(ks), 10)])
			}
			for _, h := range tr.hosts {
				fmt.Fprintf(&b, "\n  %s: TUN deliveries dropped %d, node drops %v", h.name, h.dev.Dropped(), h.node.ControlStatus().Drops)
			}
			t.Fatalf("%s: packets lost:%s", phase, b.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// warmUp makes every tunnel before the counted traffic starts (the first packets of a new
// tunnel wait in the handshake's trigger buffer, which is not what this test measures).
func warmUp(t *testing.T, hosts []*rotHost) {
	t.Helper()
	for _, a := range hosts {
		for _, b := range hosts {
			if a != b {
				a.node.Connect(b.vpn)
			}
		}
	}
	eventually(t, 20*time.Second, "a tunnel between every pair", func() bool {
		for _, a := range hosts {
			for _, b := range hosts {
				if _, ok := a.node.Tunnel(b.vpn); a != b && !ok {
					return false
				}
			}
		}
		return true
	})
	for _, h := range hosts {
		for {
			select {
			case <-h.dev.Delivered():
				continue
			default:
			}
			break
		}
	}
}

func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for: %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// expectTunnelOn waits until a's tunnel to b runs on b's current certificate.
func expectTunnelOn(t *testing.T, a, b *rotHost) {
	t.Helper()
	want := b.cert().Fingerprint()
	eventually(t, 20*time.Second, a.name+"'s tunnel to "+b.name+" on "+b.name+"'s renewed certificate", func() bool {
		p, ok := a.node.Tunnel(b.vpn)
		return ok && p.Fingerprint == want
	})
}

func expectIssuer(t *testing.T, h *rotHost, ca *certtest.CA) {
	t.Helper()
	if got := h.cert().Details.Issuer; got != ca.Cert.Fingerprint() {
		t.Fatalf("%s: certificate issued by %s, want %s (%s)", h.name, got, ca.Cert.Details.Name, ca.Cert.Fingerprint())
	}
	files, err := overlay.LoadPKI(h.cfg, time.Now())
	if err != nil {
		t.Fatalf("%s: the pki files do not load: %v", h.name, err)
	}
	if files.Creds.Cert.Fingerprint() != h.cert().Fingerprint() {
		t.Fatalf("%s: the files hold another certificate than the running node", h.name)
	}
}

func expectTrusts(t *testing.T, h *rotHost, names ...string) {
	t.Helper()
	got := h.trusted()
	if strings.Join(got, ",") != strings.Join(names, ",") {
		t.Fatalf("%s trusts %v, want %v", h.name, got, names)
	}
	files, err := overlay.LoadPKI(h.cfg, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var onDisk []string
	for _, c := range files.Pool.CAs() {
		onDisk = append(onDisk, c.Details.Name)
	}
	if strings.Join(onDisk, ",") != strings.Join(names, ",") {
		t.Fatalf("%s: pki.ca on disk holds %v, want %v", h.name, onDisk, names)
	}
}

const (
	caOldOnly            = "ca:\n  - crt: ca-old.crt\n    key: ca-old.key\n"
	caOldSignsNewTrusted = "ca:\n  - crt: ca-old.crt\n    key: ca-old.key\n  - crt: ca-new.crt\n"
	caNewSignsOldTrusted = "ca:\n  - crt: ca-new.crt\n    key: ca-new.key\n  - crt: ca-old.crt\n"
	caNewOnly            = "ca:\n  - crt: ca-new.crt\n    key: ca-new.key\n"
)

// TestCARotationWithoutAnOutage runs the operator's three steps with three hosts and
// traffic on all six directed flows, and proves that no packet is lost: while the new CA is
// only trusted, while hosts on old-CA and new-CA certificates talk to each other, and after
// the old CA is retired, when every host trusts only the new one.
func TestCARotationWithoutAnOutage(t *testing.T) {
	oldCA := certtest.NewCA(t, "ca-old", certtest.WithIPs("10.42.0.0/16"))
	newCA := certtest.NewCA(t, "ca-new", certtest.WithIPs("10.42.0.0/16"))
	svc := startRotServiceWithCAs(t, map[string]*certtest.CA{"ca-old": oldCA, "ca-new": newCA}, caOldOnly)

	network := udptest.NewNetwork(1)
	var hosts []*rotHost
	for i := range 3 {
		hosts = append(hosts, svc.enrollHost(t, network, i, 3))
	}
	a, b, c := hosts[0], hosts[1], hosts[2]
	for _, h := range hosts {
		expectIssuer(t, h, oldCA)
		expectTrusts(t, h, "ca-old")
	}
	warmUp(t, hosts)
	tr := startTraffic(t, hosts, 10*time.Millisecond)
	time.Sleep(300 * time.Millisecond)
	tr.expectNoLoss(t, "before the rotation")

	// Step 1: the new CA is added, trusted but not signing; every host renews once and so
	// learns to trust it while its certificates still come from the old CA.
	svc.restart(caOldSignsNewTrusted)
	for _, h := range hosts {
		h.renew(t)
		time.Sleep(200 * time.Millisecond)
	}
	for _, h := range hosts {
		expectIssuer(t, h, oldCA)
		expectTrusts(t, h, "ca-old", "ca-new")
	}
	tr.expectNoLoss(t, "step 1: new CA trusted")

	// Step 2: the new CA signs, the old one is still trusted. a renews first: its
	// certificate comes from the new CA while b and c still run on old-CA certificates.
	svc.restart(caNewSignsOldTrusted)
	a.renew(t)
	expectIssuer(t, a, newCA)
	expectIssuer(t, b, oldCA)
	expectTrusts(t, a, "ca-new", "ca-old")
	// b and c accepted a's new-CA certificate in fresh handshakes, and traffic between the
	// mixed pairs kept flowing.
	expectTunnelOn(t, b, a)
	expectTunnelOn(t, c, a)
	time.Sleep(500 * time.Millisecond)
	tr.expectNoLoss(t, "step 2: a on a new-CA cert, b and c on old-CA certs")
	b.renew(t)
	expectTunnelOn(t, a, b)
	expectTunnelOn(t, c, b)
	time.Sleep(300 * time.Millisecond)
	tr.expectNoLoss(t, "step 2: a and b on new-CA certs, c on an old-CA cert")
	c.renew(t)
	for _, h := range hosts {
		expectIssuer(t, h, newCA)
	}
	tr.expectNoLoss(t, "step 2: every host on a new-CA cert")

	// Step 3: the old CA is retired. At its next renewal each host drops it.
	svc.restart(caNewOnly)
	for _, h := range hosts {
		h.renew(t)
		time.Sleep(200 * time.Millisecond)
	}
	for _, h := range hosts {
		expectIssuer(t, h, newCA)
		expectTrusts(t, h, "ca-new")
		if _, err := h.m.current().Pool.Verify(oldCA.NewHost(t, "intruder", "10.42.0.99/16").Cert, time.Now()); err == nil {
			t.Fatalf("%s still accepts a certificate from the retired CA", h.name)
		}
	}
	for _, x := range hosts {
		for _, y := range hosts {
			if x != y {
				expectTunnelOn(t, x, y)
			}
		}
	}
	// The nodes re-check every tunnel's peer against the new pool once a second: give it
	// a few rounds, then the traffic must still be whole.
	time.Sleep(2500 * time.Millisecond)
	tr.expectNoLoss(t, "step 3: old CA retired")
	tr.close()
	total := 0
	for _, n := range tr.sentNow() {
		total += n
	}
	t.Logf("%d packets on 6 flows across the rotation, none lost", total)
}

// startRotServiceWithCAs writes the CAs beside ca.yml and starts the service with caList.
func startRotServiceWithCAs(t *testing.T, cas map[string]*certtest.CA, caList string) *rotService {
	t.Helper()
	s := &rotService{t: t, dir: t.TempDir()}
	for name, ca := range cas {
		s.writeCA(name, ca)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.addr = ln.Addr().String()
	s.restart(caList)
	tl := tls.NewListener(ln, &tls.Config{MinVersion: tls.VersionTLS13,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) { return s.srv.Load().TLSConfig(), nil }})
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		(*s.h.Load()).ServeHTTP(w, r)
	}), ErrorLog: log.New(io.Discard, "", 0)}
	done := make(chan struct{})
	go func() { defer close(done); hs.Serve(tl) }()
	t.Cleanup(func() {
		hs.Close()
		<-done
		s.svc.Load().Close()
	})
	return s
}

// TestCARotationSigningBeforeEveryHostTrustsTheNewCABreaksTunnels is why step 1 exists:
// when the new CA signs before every host trusts it (the new CA put first in one step), a
// host still holding only the old CA refuses the certificate of a host that renewed, so no
// new tunnel can be made between them, and it cannot check the blocklist the new CA signs.
func TestCARotationSigningBeforeEveryHostTrustsTheNewCABreaksTunnels(t *testing.T) {
	newCA, svc, a, b := rotPair(t)

	svc.restart(caNewSignsOldTrusted) // no step 1
	a.renew(t)
	expectIssuer(t, a, newCA)
	expectTrusts(t, b, "ca-old")
	pkt := tuntest.IPv4UDP(netip.AddrPortFrom(a.vpn, 5000), netip.AddrPortFrom(b.vpn, 6000), []byte("hello"))
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		a.dev.Inject(pkt)
		select {
		case <-b.dev.Delivered():
			t.Fatal("b accepted a tunnel from a's new-CA certificate without trusting the new CA")
		case <-time.After(100 * time.Millisecond):
		}
	}
	if _, ok := b.node.Tunnel(a.vpn); ok {
		t.Fatal("b has a tunnel to a")
	}
	if _, err := b.r.client.FetchBlocklist(context.Background(), b.m.current().Pool); err == nil {
		t.Fatal("b verified a blocklist signed by a CA it does not trust")
	}
	// Step 1 late: once b renews it trusts both CAs and the tunnel comes up.
	b.renew(t)
	expectTrusts(t, b, "ca-new", "ca-old")
	eventually(t, 20*time.Second, "a tunnel once b trusts the new CA", func() bool { return delivers(a, b, pkt) })
}

// TestAHostAwayForStepOneCatchesUpAtItsNextBlocklistFetch: b is offline through step 1 and
// comes back during step 2, trusting only the old CA, while a already runs on a new-CA
// certificate. b's first blocklist fetch finds the list signed by a CA it does not trust,
// so it renews at once instead of at its renewal time (an hour away): it gets the bundle
// with both CAs and a new-CA certificate, and the tunnel to a comes up. A second stale
// fetch for the same certificate does not ask again.
func TestAHostAwayForStepOneCatchesUpAtItsNextBlocklistFetch(t *testing.T) {
	newCA, svc, a, b := rotPair(t)

	svc.restart(caOldSignsNewTrusted) // step 1: only a renews; b is away
	a.renew(t)
	svc.restart(caNewSignsOldTrusted) // step 2
	a.renew(t)
	expectIssuer(t, a, newCA)
	expectTrusts(t, b, "ca-old")

	// The stale fetch asks for a renewal once for this certificate, not at every fetch.
	ctx, cancel := context.WithCancel(context.Background())
	before := b.cert().Fingerprint()
	b.r.fetchBlocklist(ctx)
	select {
	case <-b.r.renewNow:
	default:
		t.Fatal("a blocklist from an untrusted CA did not ask for a renewal")
	}
	b.r.fetchBlocklist(ctx)
	select {
	case <-b.r.renewNow:
		t.Fatal("the same certificate asked twice")
	default:
	}

	// With the renewal loop running (b's renewal is due in about 40 minutes), the next
	// stale fetch after a new certificate would ask again; here the loop gets the request.
	b.r.bundleRenewFor = ""
	done := make(chan struct{})
	go func() { defer close(done); b.r.run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	b.r.fetchBlocklist(ctx)
	eventually(t, 20*time.Second, "b renews for the new CA bundle", func() bool { return b.cert().Fingerprint() != before })
	expectIssuer(t, b, newCA)
	expectTrusts(t, b, "ca-new", "ca-old")
	b.r.fetchBlocklist(ctx) // verifies now: applied, nothing more to ask
	if _, ok := b.m.blocklistVersion(); !ok {
		t.Fatal("b has no blocklist after catching up")
	}
	select {
	case <-b.r.renewNow:
		t.Fatal("a verified blocklist asked for another renewal")
	default:
	}

	pkt := tuntest.IPv4UDP(netip.AddrPortFrom(a.vpn, 5000), netip.AddrPortFrom(b.vpn, 6000), []byte("hello"))
	eventually(t, 20*time.Second, "a tunnel between a (new CA) and b once b caught up", func() bool { return delivers(a, b, pkt) })
}

// rotPair is the CA service on the old CA, with the new one beside ca.yml, and two enrolled
// hosts on one in-memory network.
func rotPair(t *testing.T) (newCA *certtest.CA, svc *rotService, a, b *rotHost) {
	t.Helper()
	oldCA := certtest.NewCA(t, "ca-old", certtest.WithIPs("10.42.0.0/16"))
	newCA = certtest.NewCA(t, "ca-new", certtest.WithIPs("10.42.0.0/16"))
	svc = startRotServiceWithCAs(t, map[string]*certtest.CA{"ca-old": oldCA, "ca-new": newCA}, caOldOnly)
	network := udptest.NewNetwork(1)
	return newCA, svc, svc.enrollHost(t, network, 0, 2), svc.enrollHost(t, network, 1, 2)
}

// delivers injects pkt at a and reports whether b's TUN device delivers a packet within
// 100 ms.
func delivers(a, b *rotHost, pkt []byte) bool {
	a.dev.Inject(pkt)
	select {
	case <-b.dev.Delivered():
		return true
	case <-time.After(100 * time.Millisecond):
		return false
	}
}
