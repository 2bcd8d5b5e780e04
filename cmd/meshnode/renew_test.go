package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/meshnode/meshnode/cert"
	"github.com/meshnode/meshnode/cert/authority"
	"github.com/meshnode/meshnode/cert/authority/client"
	"github.com/meshnode/meshnode/cert/certtest"
	"github.com/meshnode/meshnode/firewall"
	"github.com/meshnode/meshnode/overlay"
)

// fakeClock is a clock a test moves by hand; After channels fire when it passes them.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	waiters []fakeWaiter
	asked   []time.Duration // every After duration, in order
	changed chan struct{}   // closed and replaced whenever a waiter is added
}

type fakeWaiter struct {
	at time.Time
	ch chan time.Time
}

func newFakeClock(t time.Time) *fakeClock { return &fakeClock{now: t, changed: make(chan struct{})} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	c.asked = append(c.asked, d)
	if d <= 0 {
		ch <- c.now
		return ch
	}
	c.waiters = append(c.waiters, fakeWaiter{c.now.Add(d), ch})
	close(c.changed)
	c.changed = make(chan struct{})
	return ch
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	keep := c.waiters[:0]
	for _, w := range c.waiters {
		if !w.at.After(c.now) {
			w.ch <- c.now
		} else {
			keep = append(keep, w)
		}
	}
	c.waiters = keep
}

// waitFor blocks until n waiters are pending, and returns the earliest deadline.
func (c *fakeClock) waitFor(t *testing.T, n int) time.Time {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		c.mu.Lock()
		if len(c.waiters) >= n {
			ws := append([]fakeWaiter(nil), c.waiters...)
			c.mu.Unlock()
			sort.Slice(ws, func(i, j int) bool { return ws[i].at.Before(ws[j].at) })
			return ws[0].at
		}
		ch := c.changed
		c.mu.Unlock()
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("no %d pending timers after 10 s", n)
		}
	}
}

func (c *fakeClock) askedDurations() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Duration(nil), c.asked...)
}

// caService is a CA service on loopback HTTPS whose clock is a fakeClock; down makes it
// answer 503 to everything.
type caService struct {
	a     *authority.Authority
	ca    *certtest.CA
	clock *fakeClock
	url   string
	pin   []byte
	down  atomic.Bool
	delay atomic.Int64 // nanoseconds each request is held
	reqs  atomic.Int64
	// loseReply makes the next request be served but its reply lost (a 502 instead).
	loseReply atomic.Bool
}

func startCAService(t *testing.T, lighthouses []authority.Lighthouse) *caService {
	t.Helper()
	dir := t.TempDir()
	s := &caService{ca: certtest.NewCA(t, "ca", certtest.WithIPs("10.42.0.0/16")), clock: newFakeClock(certtest.Now())}
	id, err := authority.LoadOrCreateTLSIdentity(filepath.Join(dir, "tls.pem"), []string{"localhost"}, s.clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	svcKey, err := authority.LoadOrCreateServiceKey(filepath.Join(dir, "service.key"))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.url, s.pin = "https://"+ln.Addr().String(), id.Pin
	store, err := authority.OpenBolt(filepath.Join(dir, "ca.db"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	s.a, err = authority.New(authority.Options{
		Store: store, CAs: []authority.SigningCA{{Cert: s.ca.Cert, Key: s.ca.Key}}, ServiceKey: svcKey,
		Lighthouses: lighthouses, URL: s.url, Pin: id.Pin, CertDuration: time.Hour, Now: s.clock.Now,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.a.SyncCIDRs([]authority.CIDR{{Name: "mesh", Prefix: netip.MustParsePrefix("10.42.0.0/16")},
		{Name: "servers", Prefix: netip.MustParsePrefix("10.42.0.0/24")}}); err != nil {
		t.Fatal(err)
	}
	srv := authority.NewServer(authority.ServerOptions{Authority: s.a, TLS: id, Now: s.clock.Now, EnrollRate: -1,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	h := srv.Handler()
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.reqs.Add(1)
		time.Sleep(time.Duration(s.delay.Load()))
		if s.down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		if s.loseReply.CompareAndSwap(true, false) {
			h.ServeHTTP(httptest.NewRecorder(), r)
			http.Error(w, "reply lost", http.StatusBadGateway)
			return
		}
		h.ServeHTTP(w, r)
	}), ErrorLog: log.New(io.Discard, "", 0)}
	done := make(chan struct{})
	go func() { defer close(done); hs.Serve(tls.NewListener(ln, srv.TLSConfig())) }()
	t.Cleanup(func() { hs.Close(); <-done })
	return s
}

func (s *caService) invite(t *testing.T, name string, ip string) string {
	t.Helper()
	req := authority.InviteRequest{Name: name, CIDR: "servers", Groups: []string{"test"}}
	if ip != "" {
		req.IP = netip.MustParseAddr(ip)
	}
	tok, _, err := s.a.Invite(req)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// enrolledNode enrolls a host with the enroll command into a fresh directory and returns
// its loaded config and PKI.
func (s *caService) enrolledNode(t *testing.T, name, ip string) (*overlay.Config, *overlay.PKI) {
	t.Helper()
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "node.yml")
	var out bytes.Buffer
	if code := run([]string{"enroll", "-token", s.invite(t, name, ip), "-config", cfgPath}, &out, &out); code != 0 {
		t.Fatalf("enroll %s: exit %d\n%s", name, code, out.String())
	}
	cfg, err := overlay.LoadConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	p, err := overlay.LoadPKI(cfg, s.clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	return cfg, p
}

// recordingNode stands in for *overlay.Node.
type recordingNode struct {
	mu   sync.Mutex
	pkis []*overlay.PKI
	set  chan *overlay.PKI
}

func newRecordingNode() *recordingNode { return &recordingNode{set: make(chan *overlay.PKI, 16)} }

func (n *recordingNode) SetPKI(p *overlay.PKI) error {
	n.mu.Lock()
	n.pkis = append(n.pkis, p)
	n.mu.Unlock()
	n.set <- p
	return nil
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(b []byte) (int, error) {
	w.t.Log(string(bytes.TrimSpace(b)))
	return len(b), nil
}

func newTestRenewer(t *testing.T, s *caService, cfg *overlay.Config, p *overlay.PKI) (*renewer, *recordingNode) {
	t.Helper()
	node := newRecordingNode()
	r, err := newRenewer(cfg, newPKIManager(node, p), s.clock, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	r.rand = func() float64 { return 0 }
	r.maxSleep = 1000 * time.Hour // one timer per wait, so tests see the schedule
	return r, node
}

// checkFilesMatch verifies that key and cert on disk belong together and to want.
func checkFilesMatch(t *testing.T, cfg *overlay.Config, want *cert.Certificate) {
	t.Helper()
	kb, err := os.ReadFile(cfg.PKI.Key)
	if err != nil {
		t.Fatal(err)
	}
	key, _, err := cert.UnmarshalX25519PrivateKey(kb)
	if err != nil {
		t.Fatal(err)
	}
	cb, err := os.ReadFile(cfg.PKI.Cert)
	if err != nil {
		t.Fatal(err)
	}
	c, _, err := cert.UnmarshalPEM(cb)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.VerifyPrivateKey(key); err != nil {
		t.Fatalf("key on disk does not match the cert on disk: %v", err)
	}
	if c.Fingerprint() != want.Fingerprint() {
		t.Fatalf("cert on disk %s, want %s", short(c.Fingerprint()), short(want.Fingerprint()))
	}
	if st, err := os.Stat(cfg.PKI.Key); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v (%v), want 0600", st.Mode().Perm(), err)
	}
}

func TestRenewalLoopRenewsAtTwoThirdsWithAFreshKeyAndSwapsItIn(t *testing.T) {
	s := startCAService(t, nil)
	cfg, p := s.enrolledNode(t, "web1", "")
	r, node := newTestRenewer(t, s, cfg, p)
	gauge := r.expiryGauge()
	renewed := make(chan *client.Renewal, 4)
	r.renewed = func(rn *client.Renewal) { renewed <- rn }

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); r.run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	cur := p.Creds.Cert
	keys := map[string]bool{string(p.Creds.PrivateKey): true}
	for i := range 3 {
		at := s.clock.waitFor(t, 1)
		life := cur.Details.NotAfter.Sub(cur.Details.NotBefore)
		want := cur.Details.NotBefore.Add(life * 2 / 3)
		if d := at.Sub(want); d < -time.Second || d > time.Second {
			t.Fatalf("renewal %d scheduled at %v, want 2/3 of the lifetime: %v", i, at, want)
		}
		if g := testutil.ToFloat64(gauge); g != cur.Details.NotAfter.Sub(s.clock.Now()).Seconds() {
			t.Fatalf("meshnode_cert_expiry_seconds = %v before renewal %d", g, i)
		}
		s.clock.Advance(at.Sub(s.clock.Now()) - time.Second)
		select {
		case <-renewed:
			t.Fatalf("renewed before it was due")
		case <-time.After(50 * time.Millisecond):
		}
		s.clock.Advance(time.Second)
		var rn *client.Renewal
		select {
		case rn = <-renewed:
		case <-time.After(10 * time.Second):
			t.Fatal("no renewal after the due time")
		}
		if keys[string(rn.Key)] {
			t.Fatalf("renewal %d reused a key", i)
		}
		keys[string(rn.Key)] = true
		if rn.Cert.Details.Name != "web1" || rn.Cert.VpnIP() != cur.VpnIP() {
			t.Fatalf("renewed identity %s %s", rn.Cert.Details.Name, rn.Cert.VpnIP())
		}
		checkFilesMatch(t, cfg, rn.Cert)
		got := <-node.set
		if got.Creds.Cert.Fingerprint() != rn.Cert.Fingerprint() {
			t.Fatalf("node got %s, want the renewed %s", short(got.Creds.Cert.Fingerprint()), short(rn.Cert.Fingerprint()))
		}
		if _, err := got.Pool.Verify(got.Creds.Cert, s.clock.Now()); err != nil {
			t.Fatalf("the swapped-in PKI does not verify its own cert: %v", err)
		}
		cur = rn.Cert
	}
}

// gaugeValue reads meshnode_cert_expiry_seconds.
func gaugeValue(t *testing.T, c prometheus.Collector) float64 {
	t.Helper()
	return testutil.ToFloat64(c)
}

func TestExpiryGaugeShowsTimeLeft(t *testing.T) {
	s := startCAService(t, nil)
	cfg, p := s.enrolledNode(t, "web1", "")
	r, _ := newTestRenewer(t, s, cfg, p)
	g := r.expiryGauge()
	want := p.Creds.Cert.Details.NotAfter.Sub(s.clock.Now()).Seconds()
	if got := gaugeValue(t, g); got != want {
		t.Fatalf("gauge %v, want %v", got, want)
	}
	s.clock.Advance(10 * time.Minute)
	if got := gaugeValue(t, g); got != want-600 {
		t.Fatalf("gauge %v after 10 min, want %v", got, want-600)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(g)
	if n, err := testutil.GatherAndCount(reg, "meshnode_cert_expiry_seconds"); err != nil || n != 1 {
		t.Fatalf("gathered %d (%v)", n, err)
	}
}

func TestRenewalRetriesWithBackoffWhileTheServiceIsDown(t *testing.T) {
	s := startCAService(t, nil)
	cfg, p := s.enrolledNode(t, "web1", "")
	r, node := newTestRenewer(t, s, cfg, p)
	renewed := make(chan *client.Renewal, 4)
	r.renewed = func(rn *client.Renewal) { renewed <- rn }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); r.run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	at := s.clock.waitFor(t, 1)
	s.down.Store(true)
	before := s.reqs.Load()
	s.clock.Advance(at.Sub(s.clock.Now()))
	// Five failed attempts, each followed by a longer wait.
	var waits []time.Duration
	for range 5 {
		next := s.clock.waitFor(t, 1)
		d := next.Sub(s.clock.Now())
		waits = append(waits, d)
		if len(waits) == 5 {
			checkFilesMatch(t, cfg, p.Creds.Cert) // nothing changed on disk
			select {
			case <-node.set:
				t.Fatal("PKI changed while the service was down")
			default:
			}
			s.down.Store(false)
		}
		s.clock.Advance(d)
	}
	for i := 1; i < len(waits); i++ {
		if waits[i] <= waits[i-1] {
			t.Fatalf("retry waits %v do not grow", waits)
		}
	}
	if waits[0] != minRetry {
		t.Fatalf("first retry after %v, want %v", waits[0], minRetry)
	}
	if n := s.reqs.Load() - before; n < 5 {
		t.Fatalf("%d requests while down, want at least 5", n)
	}
	select {
	case rn := <-renewed:
		checkFilesMatch(t, cfg, rn.Cert)
	case <-time.After(10 * time.Second):
		t.Fatal("no renewal once the service is back")
	}
	t.Logf("retry waits while down: %v", waits)
}

func TestRenewalCounterGrowsAndIsPersisted(t *testing.T) {
	s := startCAService(t, nil)
	cfg, p := s.enrolledNode(t, "web1", "")
	r, _ := newTestRenewer(t, s, cfg, p)
	// A counter from the future (clock went back) in the state file must still be exceeded.
	future := uint64(s.clock.Now().Add(time.Hour).UnixNano())
	if err := os.WriteFile(r.stateFile, []byte("counter 0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	a, err := r.nextCounter()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(r.stateFile, []byte("counter "+itoa(future)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	b, err := r.nextCounter()
	if err != nil {
		t.Fatal(err)
	}
	c, err := r.nextCounter()
	if err != nil {
		t.Fatal(err)
	}
	if a == 0 || b != future+1 || c != future+2 {
		t.Fatalf("counters %d %d %d, want >0, %d, %d", a, b, c, future+1, future+2)
	}
	if st, err := os.Stat(r.stateFile); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("state file: %v %v", st, err)
	}
	// And the service accepts renewals with it.
	if err := r.renewOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func itoa(v uint64) string { return strconv.FormatUint(v, 10) }

func TestRevokedHostCannotRenew(t *testing.T) {
	s := startCAService(t, nil)
	cfg, p := s.enrolledNode(t, "web1", "")
	r, _ := newTestRenewer(t, s, cfg, p)
	if _, err := s.a.Revoke("web1"); err != nil {
		t.Fatal(err)
	}
	if err := r.renewOnce(context.Background()); !errors.Is(err, authority.ErrRevoked) {
		t.Fatalf("renewal of a revoked host = %v, want ErrRevoked", err)
	}
	checkFilesMatch(t, cfg, p.Creds.Cert)
}

func TestBlocklistIsAppliedNewestOnlyAndKeptWhileTheServiceIsDown(t *testing.T) {
	s := startCAService(t, nil)
	cfg, p := s.enrolledNode(t, "a", "")
	_, pb := s.enrolledNode(t, "b", "")
	_, pc := s.enrolledNode(t, "c", "")
	r, node := newTestRenewer(t, s, cfg, p)
	ctx := context.Background()
	fpB, fpC := pb.Creds.Cert.Fingerprint(), pc.Creds.Cert.Fingerprint()

	r.fetchBlocklist(ctx) // version 0, nothing blocked
	<-node.set
	if v, ok := r.m.blocklistVersion(); !ok || v != 0 {
		t.Fatalf("version %d %v", v, ok)
	}
	if _, err := s.a.Revoke("b"); err != nil {
		t.Fatal(err)
	}
	old, err := r.client.FetchBlocklist(ctx, p.Pool)
	if err != nil {
		t.Fatal(err)
	}
	r.fetchBlocklist(ctx)
	got := <-node.set
	if !got.Pool.IsBlocked(fpB) || got.Pool.IsBlocked(fpC) {
		t.Fatalf("after revoking b: b blocked %v, c blocked %v", got.Pool.IsBlocked(fpB), got.Pool.IsBlocked(fpC))
	}
	if _, err := got.Pool.Verify(pb.Creds.Cert, s.clock.Now()); !errors.Is(err, cert.ErrBlocked) {
		t.Fatalf("b's cert verifies as %v, want ErrBlocked", err)
	}
	if got.Creds.Cert.Fingerprint() != p.Creds.Cert.Fingerprint() {
		t.Fatal("blocklist changed our credentials")
	}
	// Nothing new: no SetPKI.
	r.fetchBlocklist(ctx)
	select {
	case <-node.set:
		t.Fatal("the same blocklist version was applied twice")
	default:
	}
	// An older version is ignored.
	if applied, _ := r.m.applyBlocklist(old, overlay.BlocklistFromCA); applied {
		t.Fatal("an older blocklist was applied")
	}
	if _, err := s.a.Revoke("c"); err != nil {
		t.Fatal(err)
	}
	r.fetchBlocklist(ctx)
	got = <-node.set
	if !got.Pool.IsBlocked(fpB) || !got.Pool.IsBlocked(fpC) {
		t.Fatal("after revoking c: not both blocked")
	}
	// Service down: the last list stays.
	s.down.Store(true)
	r.fetchBlocklist(ctx)
	if cur := r.m.current(); !cur.Pool.IsBlocked(fpB) || !cur.Pool.IsBlocked(fpC) {
		t.Fatal("blocklist lost while the service is down")
	}
	// A renewal or reload swaps in a fresh pool: the blocklist is applied to it too.
	fresh, err := overlay.LoadPKI(cfg, s.clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := r.m.SetPKI(fresh); err != nil {
		t.Fatal(err)
	}
	got = <-node.set
	if !got.Pool.IsBlocked(fpB) || !got.Pool.IsBlocked(fpC) {
		t.Fatal("a reloaded PKI lost the blocklist")
	}
}

func TestBlocklistLoopFetchesOnItsInterval(t *testing.T) {
	s := startCAService(t, nil)
	cfg, p := s.enrolledNode(t, "a", "")
	_, pb := s.enrolledNode(t, "b", "")
	cfg.Renewal.BlocklistInterval = 30 * time.Second
	r, node := newTestRenewer(t, s, cfg, p)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); r.runBlocklist(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	<-node.set
	at := s.clock.waitFor(t, 1)
	if d := at.Sub(s.clock.Now()); d != 30*time.Second {
		t.Fatalf("next fetch in %v, want 30s", d)
	}
	if _, err := s.a.Revoke("b"); err != nil {
		t.Fatal(err)
	}
	s.clock.Advance(30 * time.Second)
	select {
	case got := <-node.set:
		if !got.Pool.IsBlocked(pb.Creds.Cert.Fingerprint()) {
			t.Fatal("b not blocked")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("revocation not applied after one interval")
	}
}

func TestSavedBlocklistIsAppliedAfterARestartWhileTheServiceIsDown(t *testing.T) {
	s := startCAService(t, nil)
	cfg, p := s.enrolledNode(t, "a", "")
	_, pb := s.enrolledNode(t, "b", "")
	fpB := pb.Creds.Cert.Fingerprint()
	if _, err := s.a.Revoke("b"); err != nil {
		t.Fatal(err)
	}
	r, node := newTestRenewer(t, s, cfg, p)
	r.fetchBlocklist(context.Background())
	<-node.set
	if _, err := os.Stat(r.blocklistFile()); err != nil {
		t.Fatalf("blocklist not saved: %v", err)
	}

	// "Restart": a fresh PKI and renewer, the service down.
	s.down.Store(true)
	fresh, err := overlay.LoadPKI(cfg, s.clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	r2, node2 := newTestRenewer(t, s, cfg, fresh)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); r2.runBlocklist(ctx) }()
	select {
	case got := <-node2.set:
		if !got.Pool.IsBlocked(fpB) {
			t.Fatal("saved blocklist applied without b")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("saved blocklist not applied")
	}
	cancel()
	<-done

	// A tampered file is ignored.
	b, _ := os.ReadFile(r.blocklistFile())
	tampered := bytes.Replace(b, []byte(fpB), []byte(strings.Repeat("0", 64)), 1)
	if err := os.WriteFile(r.blocklistFile(), tampered, 0o644); err != nil {
		t.Fatal(err)
	}
	fresh2, _ := overlay.LoadPKI(cfg, s.clock.Now())
	r3, node3 := newTestRenewer(t, s, cfg, fresh2)
	r3.loadSavedBlocklist()
	select {
	case <-node3.set:
		t.Fatal("a tampered blocklist was applied")
	default:
	}
}

func TestRenewalWaitsInStepsSoASuspendedMachineCatchesUp(t *testing.T) {
	s := startCAService(t, nil)
	cfg, p := s.enrolledNode(t, "laptop", "")
	r, _ := newTestRenewer(t, s, cfg, p)
	r.maxSleep = time.Minute
	renewed := make(chan *client.Renewal, 4)
	r.renewed = func(rn *client.Renewal) { renewed <- rn }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); r.run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	if at := s.clock.waitFor(t, 1); at.Sub(s.clock.Now()) != time.Minute {
		t.Fatalf("first step %v, want 1m", at.Sub(s.clock.Now()))
	}
	// The machine sleeps through the renewal time: the wall clock jumps, the pending
	// monotonic timer has not fired yet. The next step notices.
	s.clock.mu.Lock()
	s.clock.now = s.clock.now.Add(50 * time.Minute)
	s.clock.mu.Unlock()
	s.clock.Advance(time.Minute)
	select {
	case <-renewed:
	case <-time.After(10 * time.Second):
		t.Fatal("no renewal after the wall clock passed the renewal time")
	}
}

func TestRecoverRenewalRepairsAKeyAndCertSplitByACrash(t *testing.T) {
	s := startCAService(t, nil)
	cfg, p := s.enrolledNode(t, "web1", "")
	r, _ := newTestRenewer(t, s, cfg, p)
	certPEM, _ := p.Creds.Cert.MarshalPEM()
	rn, err := r.client.Renew(context.Background(), client.RenewParams{CertPEM: certPEM, Key: p.Creds.PrivateKey, ServiceKey: r.serviceKey})
	if err != nil {
		t.Fatal(err)
	}
	journal := pendingFile(r.stateFile)
	// Crash after the journal and the key were written, before the certificate.
	if err := cert.WriteFileAtomic(journal, append(append(append([]byte(nil), rn.CertPEM...), rn.KeyPEM...), rn.CABundle...), 0o600, true); err != nil {
		t.Fatal(err)
	}
	if err := cert.WriteFileAtomic(cfg.PKI.Key, rn.KeyPEM, 0o600, true); err != nil {
		t.Fatal(err)
	}
	if _, err := overlay.LoadPKI(cfg, s.clock.Now()); err == nil {
		t.Fatal("the split set loads: the test does not model the crash")
	}
	msg, err := recoverRenewal(cfg, s.clock.Now())
	if err != nil || msg == "" {
		t.Fatalf("recoverRenewal = %q, %v", msg, err)
	}
	checkFilesMatch(t, cfg, rn.Cert)
	if _, err := os.Stat(journal); err == nil {
		t.Fatal("journal left behind")
	}
	// A journal beside a consistent set (crash before the first rename) is dropped and
	// the files are left alone.
	if err := cert.WriteFileAtomic(journal, []byte("stale"), 0o600, true); err != nil {
		t.Fatal(err)
	}
	if msg, err := recoverRenewal(cfg, s.clock.Now()); err != nil || msg != "" {
		t.Fatalf("recoverRenewal on a consistent set = %q, %v", msg, err)
	}
	checkFilesMatch(t, cfg, rn.Cert)
	if _, err := os.Stat(journal); err == nil {
		t.Fatal("stale journal left behind")
	}
}

func TestRenewalLeavesNoJournal(t *testing.T) {
	s := startCAService(t, nil)
	cfg, p := s.enrolledNode(t, "web1", "")
	r, _ := newTestRenewer(t, s, cfg, p)
	if err := r.renewOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(pendingFile(r.stateFile)); err == nil {
		t.Fatal("journal left after a complete renewal")
	}
}

// fwNode is a recordingNode that also takes firewall changes (the reloader's target).
type fwNode struct{ *recordingNode }

func (fwNode) SetFirewall(firewall.Config) error { return nil }

func TestDaemonStartsKeyHandlingOnlyWithARenewalURL(t *testing.T) {
	s := startCAService(t, nil)
	cfg, p := s.enrolledNode(t, "web1", "")
	node := fwNode{newRecordingNode()}
	reg := prometheus.NewRegistry()
	target, stop := startKeyHandling(context.Background(), cfg, p, node, reg, testLogger(t))
	if _, ok := target.(*pkiManager); !ok {
		t.Fatalf("reloads drive %T, want the pkiManager", target)
	}
	select {
	case <-node.set: // the first blocklist fetch
	case <-time.After(10 * time.Second):
		t.Fatal("no blocklist fetch at start")
	}
	if n, err := testutil.GatherAndCount(reg, "meshnode_cert_expiry_seconds"); err != nil || n != 1 {
		t.Fatalf("meshnode_cert_expiry_seconds gathered %d times (%v)", n, err)
	}
	stopped := make(chan struct{})
	go func() { stop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("stop did not return")
	}

	cfg.Renewal.URL = ""
	if target, stop := startKeyHandling(context.Background(), cfg, p, node, prometheus.NewRegistry(), testLogger(t)); target != reloadTarget(node) {
		t.Fatalf("without renewal.url reloads drive %T", target)
	} else {
		stop()
	}
}

// TestRenewalRetryAfterALostReplyGetsTheCertificateAlreadyIssued: the service issued a
// certificate but its reply never arrived. The retry asks for the same key (saved before
// the first attempt), so the service answers with that certificate instead of refusing a
// second key from the old certificate as a fork; and so does a retry after a restart.
func TestRenewalRetryAfterALostReplyGetsTheCertificateAlreadyIssued(t *testing.T) {
	s := startCAService(t, nil)
	cfg, p := s.enrolledNode(t, "web1", "")
	r, _ := newTestRenewer(t, s, cfg, p)
	s.clock.Advance(40 * time.Minute)
	s.loseReply.Store(true)
	if err := r.renewOnce(context.Background()); err == nil {
		t.Fatal("renewal with a lost reply succeeded")
	}
	hs, err := s.a.Hosts()
	if err != nil || hs[0].Fingerprint == p.Creds.Cert.Fingerprint() {
		t.Fatalf("the service did not issue during the lost attempt: %v", err)
	}
	issued := hs[0].Fingerprint
	// A restart in between: a fresh renewer on the same files.
	r2, _ := newTestRenewer(t, s, cfg, p)
	if err := r2.renewOnce(context.Background()); err != nil {
		t.Fatalf("retry after the lost reply: %v", err)
	}
	if got := r2.m.current().Creds.Cert.Fingerprint(); got != issued {
		t.Errorf("retry got %s, want the certificate issued before, %s", got, issued)
	}
	checkFilesMatch(t, cfg, r2.m.current().Creds.Cert)
	if _, err := os.Stat(newKeyFile(r2.stateFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the pending key outlived the renewal: %v", err)
	}
}
