package nodekeys

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshnode/meshnode/internal/prom"
	"github.com/meshnode/meshnode/internal/prom/promtest"

	"github.com/meshnode/meshnode/cert"
	"github.com/meshnode/meshnode/cert/authority"
	"github.com/meshnode/meshnode/cert/authority/client"
	"github.com/meshnode/meshnode/firewall"
	"github.com/meshnode/meshnode/nodekeys/nodekeystest"
	"github.com/meshnode/meshnode/overlay"
)

// enrolledNode enrolls a host as the enroll command does into a fresh directory and returns
// its loaded config and PKI.
func enrolledNode(t *testing.T, s *nodekeystest.CAService, name, ip string) (*overlay.Config, *overlay.PKI) {
	t.Helper()
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "node.yml")
	var out bytes.Buffer
	if err := Enroll(context.Background(), EnrollOptions{Token: s.Invite(t, name, ip), Config: cfgPath}, &out); err != nil {
		t.Fatalf("enroll %s: %v\n%s", name, err, out.String())
	}
	cfg, err := overlay.LoadConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	p, err := overlay.LoadPKI(cfg, s.Clock.Now())
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

func newTestRenewer(t *testing.T, s *nodekeystest.CAService, cfg *overlay.Config, p *overlay.PKI) (*renewer, *recordingNode) {
	t.Helper()
	node := newRecordingNode()
	r, err := newRenewer(cfg, newPKIManager(node, p), s.Clock, testLogger(t))
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
	s := nodekeystest.StartCAService(t, nil)
	cfg, p := enrolledNode(t, s, "web1", "")
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
		at := s.Clock.WaitFor(t, 1)
		life := cur.Details.NotAfter.Sub(cur.Details.NotBefore)
		want := cur.Details.NotBefore.Add(life * 2 / 3)
		if d := at.Sub(want); d < -time.Second || d > time.Second {
			t.Fatalf("renewal %d scheduled at %v, want 2/3 of the lifetime: %v", i, at, want)
		}
		if g := promtest.Value(gauge); g != cur.Details.NotAfter.Sub(s.Clock.Now()).Seconds() {
			t.Fatalf("meshnode_cert_expiry_seconds = %v before renewal %d", g, i)
		}
		s.Clock.Advance(at.Sub(s.Clock.Now()) - time.Second)
		select {
		case <-renewed:
			t.Fatalf("renewed before it was due")
		case <-time.After(50 * time.Millisecond):
		}
		s.Clock.Advance(time.Second)
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
		if _, err := got.Pool.Verify(got.Creds.Cert, s.Clock.Now()); err != nil {
			t.Fatalf("the swapped-in PKI does not verify its own cert: %v", err)
		}
		cur = rn.Cert
	}
}

// gaugeValue reads meshnode_cert_expiry_seconds.
func gaugeValue(t *testing.T, c prom.Collector) float64 {
	t.Helper()
	return promtest.Value(c)
}

func TestExpiryGaugeShowsTimeLeft(t *testing.T) {
	s := nodekeystest.StartCAService(t, nil)
	cfg, p := enrolledNode(t, s, "web1", "")
	r, _ := newTestRenewer(t, s, cfg, p)
	g := r.expiryGauge()
	want := p.Creds.Cert.Details.NotAfter.Sub(s.Clock.Now()).Seconds()
	if got := gaugeValue(t, g); got != want {
		t.Fatalf("gauge %v, want %v", got, want)
	}
	s.Clock.Advance(10 * time.Minute)
	if got := gaugeValue(t, g); got != want-600 {
		t.Fatalf("gauge %v after 10 min, want %v", got, want-600)
	}
	reg := prom.NewRegistry()
	reg.MustRegister(g)
	if n, err := promtest.Count(reg, "meshnode_cert_expiry_seconds"); err != nil || n != 1 {
		t.Fatalf("gathered %d (%v)", n, err)
	}
}

func TestRenewalRetriesWithBackoffWhileTheServiceIsDown(t *testing.T) {
	s := nodekeystest.StartCAService(t, nil)
	cfg, p := enrolledNode(t, s, "web1", "")
	r, node := newTestRenewer(t, s, cfg, p)
	renewed := make(chan *client.Renewal, 4)
	r.renewed = func(rn *client.Renewal) { renewed <- rn }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); r.run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	at := s.Clock.WaitFor(t, 1)
	s.Down.Store(true)
	before := s.Reqs.Load()
	s.Clock.Advance(at.Sub(s.Clock.Now()))
	// Five failed attempts, each followed by a longer wait.
	var waits []time.Duration
	for range 5 {
		next := s.Clock.WaitFor(t, 1)
		d := next.Sub(s.Clock.Now())
		waits = append(waits, d)
		if len(waits) == 5 {
			checkFilesMatch(t, cfg, p.Creds.Cert) // nothing changed on disk
			select {
			case <-node.set:
				t.Fatal("PKI changed while the service was down")
			default:
			}
			s.Down.Store(false)
		}
		s.Clock.Advance(d)
	}
	for i := 1; i < len(waits); i++ {
		if waits[i] <= waits[i-1] {
			t.Fatalf("retry waits %v do not grow", waits)
		}
	}
	if waits[0] != minRetry {
		t.Fatalf("first retry after %v, want %v", waits[0], minRetry)
	}
	if n := s.Reqs.Load() - before; n < 5 {
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

// TestRenewalOutcomesAreCounted: each failed attempt and the success after it are counted
// in meshnode_cert_renewals_total, read from the registry Start registers on.
func TestRenewalOutcomesAreCounted(t *testing.T) {
	s := nodekeystest.StartCAService(t, nil)
	cfg, p := enrolledNode(t, s, "web1", "")
	r, _ := newTestRenewer(t, s, cfg, p)
	reg := prom.NewRegistry()
	reg.MustRegister(r.renewals)
	want := func(success, failure int) {
		t.Helper()
		exp := fmt.Sprintf(`# HELP meshnode_cert_renewals_total Certificate renewal attempts by result (success, failure).
# TYPE meshnode_cert_renewals_total counter
meshnode_cert_renewals_total{result="failure"} %d
meshnode_cert_renewals_total{result="success"} %d
`, failure, success)
		if err := promtest.Compare(reg, exp, "meshnode_cert_renewals_total"); err != nil {
			t.Fatal(err)
		}
	}
	want(0, 0)
	s.Clock.Advance(40 * time.Minute)
	s.Down.Store(true)
	done := make(chan struct{})
	go func() { defer close(done); r.renewWithRetry(context.Background()) }()
	for range 2 {
		next := s.Clock.WaitFor(t, 1) // a retry timer: one more failure
		s.Clock.Advance(next.Sub(s.Clock.Now()))
	}
	next := s.Clock.WaitFor(t, 1)
	want(0, 3)
	s.Down.Store(false)
	s.Clock.Advance(next.Sub(s.Clock.Now()))
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("no renewal once the service is back")
	}
	want(1, 3)
}

func TestRenewalCounterGrowsAndIsPersisted(t *testing.T) {
	s := nodekeystest.StartCAService(t, nil)
	cfg, p := enrolledNode(t, s, "web1", "")
	r, _ := newTestRenewer(t, s, cfg, p)
	// A counter from the future (clock went back) in the state file must still be exceeded.
	future := uint64(s.Clock.Now().Add(time.Hour).UnixNano())
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
	s := nodekeystest.StartCAService(t, nil)
	cfg, p := enrolledNode(t, s, "web1", "")
	r, _ := newTestRenewer(t, s, cfg, p)
	if _, err := s.A.Revoke("web1"); err != nil {
		t.Fatal(err)
	}
	if err := r.renewOnce(context.Background()); !errors.Is(err, authority.ErrRevoked) {
		t.Fatalf("renewal of a revoked host = %v, want ErrRevoked", err)
	}
	checkFilesMatch(t, cfg, p.Creds.Cert)
}

func TestBlocklistIsAppliedNewestOnlyAndKeptWhileTheServiceIsDown(t *testing.T) {
	s := nodekeystest.StartCAService(t, nil)
	cfg, p := enrolledNode(t, s, "a", "")
	_, pb := enrolledNode(t, s, "b", "")
	_, pc := enrolledNode(t, s, "c", "")
	r, node := newTestRenewer(t, s, cfg, p)
	ctx := context.Background()
	fpB, fpC := pb.Creds.Cert.Fingerprint(), pc.Creds.Cert.Fingerprint()

	r.fetchBlocklist(ctx) // version 0, nothing blocked
	<-node.set
	if v, ok := r.m.blocklistVersion(); !ok || v != 0 {
		t.Fatalf("version %d %v", v, ok)
	}
	if _, err := s.A.Revoke("b"); err != nil {
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
	if _, err := got.Pool.Verify(pb.Creds.Cert, s.Clock.Now()); !errors.Is(err, cert.ErrBlocked) {
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
	if _, err := s.A.Revoke("c"); err != nil {
		t.Fatal(err)
	}
	r.fetchBlocklist(ctx)
	got = <-node.set
	if !got.Pool.IsBlocked(fpB) || !got.Pool.IsBlocked(fpC) {
		t.Fatal("after revoking c: not both blocked")
	}
	// Service down: the last list stays.
	s.Down.Store(true)
	r.fetchBlocklist(ctx)
	if cur := r.m.current(); !cur.Pool.IsBlocked(fpB) || !cur.Pool.IsBlocked(fpC) {
		t.Fatal("blocklist lost while the service is down")
	}
	// A renewal or reload swaps in a fresh pool: the blocklist is applied to it too.
	fresh, err := overlay.LoadPKI(cfg, s.Clock.Now())
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
	s := nodekeystest.StartCAService(t, nil)
	cfg, p := enrolledNode(t, s, "a", "")
	_, pb := enrolledNode(t, s, "b", "")
	cfg.Renewal.BlocklistInterval = 30 * time.Second
	r, node := newTestRenewer(t, s, cfg, p)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); r.runBlocklist(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	<-node.set
	at := s.Clock.WaitFor(t, 1)
	if d := at.Sub(s.Clock.Now()); d != 30*time.Second {
		t.Fatalf("next fetch in %v, want 30s", d)
	}
	if _, err := s.A.Revoke("b"); err != nil {
		t.Fatal(err)
	}
	s.Clock.Advance(30 * time.Second)
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
	s := nodekeystest.StartCAService(t, nil)
	cfg, p := enrolledNode(t, s, "a", "")
	_, pb := enrolledNode(t, s, "b", "")
	fpB := pb.Creds.Cert.Fingerprint()
	if _, err := s.A.Revoke("b"); err != nil {
		t.Fatal(err)
	}
	r, node := newTestRenewer(t, s, cfg, p)
	r.fetchBlocklist(context.Background())
	<-node.set
	if _, err := os.Stat(r.blocklistFile()); err != nil {
		t.Fatalf("blocklist not saved: %v", err)
	}

	// "Restart": a fresh PKI and renewer, the service down.
	s.Down.Store(true)
	fresh, err := overlay.LoadPKI(cfg, s.Clock.Now())
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
	fresh2, _ := overlay.LoadPKI(cfg, s.Clock.Now())
	r3, node3 := newTestRenewer(t, s, cfg, fresh2)
	r3.loadSavedBlocklist()
	select {
	case <-node3.set:
		t.Fatal("a tampered blocklist was applied")
	default:
	}
}

func TestRenewalWaitsInStepsSoASuspendedMachineCatchesUp(t *testing.T) {
	s := nodekeystest.StartCAService(t, nil)
	cfg, p := enrolledNode(t, s, "laptop", "")
	r, _ := newTestRenewer(t, s, cfg, p)
	r.maxSleep = time.Minute
	renewed := make(chan *client.Renewal, 4)
	r.renewed = func(rn *client.Renewal) { renewed <- rn }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); r.run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	if at := s.Clock.WaitFor(t, 1); at.Sub(s.Clock.Now()) != time.Minute {
		t.Fatalf("first step %v, want 1m", at.Sub(s.Clock.Now()))
	}
	// The machine sleeps through the renewal time: the wall clock jumps, the pending
	// monotonic timer has not fired yet. The next step notices.
	s.Clock.Jump(50 * time.Minute)
	s.Clock.Advance(time.Minute)
	select {
	case <-renewed:
	case <-time.After(10 * time.Second):
		t.Fatal("no renewal after the wall clock passed the renewal time")
	}
}

func TestRecoverRenewalRepairsAKeyAndCertSplitByACrash(t *testing.T) {
	s := nodekeystest.StartCAService(t, nil)
	cfg, p := enrolledNode(t, s, "web1", "")
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
	if _, err := overlay.LoadPKI(cfg, s.Clock.Now()); err == nil {
		t.Fatal("the split set loads: the test does not model the crash")
	}
	msg, err := RecoverRenewal(cfg, s.Clock.Now())
	if err != nil || msg == "" {
		t.Fatalf("RecoverRenewal = %q, %v", msg, err)
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
	if msg, err := RecoverRenewal(cfg, s.Clock.Now()); err != nil || msg != "" {
		t.Fatalf("RecoverRenewal on a consistent set = %q, %v", msg, err)
	}
	checkFilesMatch(t, cfg, rn.Cert)
	if _, err := os.Stat(journal); err == nil {
		t.Fatal("stale journal left behind")
	}
}

func TestRenewalLeavesNoJournal(t *testing.T) {
	s := nodekeystest.StartCAService(t, nil)
	cfg, p := enrolledNode(t, s, "web1", "")
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
	s := nodekeystest.StartCAService(t, nil)
	cfg, p := enrolledNode(t, s, "web1", "")
	node := fwNode{newRecordingNode()}
	reg := prom.NewRegistry()
	target, stop := Start(context.Background(), cfg, p, node, reg, testLogger(t))
	if _, ok := target.(*pkiManager); !ok {
		t.Fatalf("reloads drive %T, want the pkiManager", target)
	}
	select {
	case <-node.set: // the first blocklist fetch
	case <-time.After(10 * time.Second):
		t.Fatal("no blocklist fetch at start")
	}
	if n, err := promtest.Count(reg, "meshnode_cert_expiry_seconds"); err != nil || n != 1 {
		t.Fatalf("meshnode_cert_expiry_seconds gathered %d times (%v)", n, err)
	}
	if n, err := promtest.Count(reg, "meshnode_cert_renewals_total"); err != nil || n != 2 {
		t.Fatalf("meshnode_cert_renewals_total gathered %d series (%v), want success and failure", n, err)
	}
	stopped := make(chan struct{})
	go func() { stop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("stop did not return")
	}

	cfg.Renewal.URL = ""
	if target, stop := Start(context.Background(), cfg, p, node, prom.NewRegistry(), testLogger(t)); target != Target(node) {
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
	s := nodekeystest.StartCAService(t, nil)
	cfg, p := enrolledNode(t, s, "web1", "")
	r, _ := newTestRenewer(t, s, cfg, p)
	s.Clock.Advance(40 * time.Minute)
	s.LoseReply.Store(true)
	if err := r.renewOnce(context.Background()); err == nil {
		t.Fatal("renewal with a lost reply succeeded")
	}
	hs, err := s.A.Hosts()
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
