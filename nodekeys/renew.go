package nodekeys

// Automatic key handling in the daemon (the `renewal:` section): renew the certificate with a
// fresh key pair at a point of its lifetime, swap it into the running node, and apply the CA
// service's signed blocklist.

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/meshnode/meshnode/internal/prom"

	"github.com/meshnode/meshnode/cert"
	"github.com/meshnode/meshnode/cert/authority/api"
	"github.com/meshnode/meshnode/cert/authority/client"
	"github.com/meshnode/meshnode/firewall"
	"github.com/meshnode/meshnode/handshake"
	"github.com/meshnode/meshnode/overlay"
)

// clock is the time source of the key loops; tests drive a fake one.
type clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Renewal retry backoff while the CA service is unreachable or refuses.
const (
	minRetry = time.Second
	maxRetry = 5 * time.Minute
)

// pkiTarget is what the key handling drives: the running node (or anything with SetPKI).
type pkiTarget interface {
	SetPKI(*overlay.PKI) error
}

// pkiManager serialises every change of the node's PKI (renewal, blocklist, reload) and
// makes sure the newest signed blocklist stays applied whatever PKI is swapped in. The
// reloader drives the node through it.
type pkiManager struct {
	mu   sync.Mutex
	node pkiTarget
	fw   func(firewall.Config) error
	cur  *overlay.PKI
	bl   *cert.SignedBlocklist
	// save persists a newly applied blocklist (the renewer's <state_file>.blocklist).
	save func(*cert.SignedBlocklist, string)
}

// blocklistNode is *overlay.Node's one apply path for signed blocklists: it verifies, keeps
// the newest, blocks, closes revoked tunnels, relays it if it is a lighthouse, and reports
// every list it applied (also those relayed to it by lighthouses) to its OnBlocklist hook.
type blocklistNode interface {
	ApplyBlocklist(*cert.SignedBlocklist, string) (bool, error)
	OnBlocklist(func(*cert.SignedBlocklist, string))
}

func newPKIManager(node pkiTarget, cur *overlay.PKI) *pkiManager {
	m := &pkiManager{node: node, cur: cur}
	if f, ok := node.(interface{ SetFirewall(firewall.Config) error }); ok {
		m.fw = f.SetFirewall
	}
	if bn, ok := node.(blocklistNode); ok {
		bn.OnBlocklist(m.applied)
	}
	return m
}

// SetPKI swaps p in with the current signed blocklist applied to its pool.
func (m *pkiManager) SetPKI(p *overlay.PKI) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.setLocked(p)
}

func (m *pkiManager) setLocked(p *overlay.PKI) error {
	if m.bl != nil {
		for _, fp := range m.bl.Fingerprints {
			p.Pool.Block(fp)
		}
	}
	if err := m.node.SetPKI(p); err != nil {
		return err
	}
	m.cur = p
	return nil
}

// SetFirewall passes through (the reloader's other half).
func (m *pkiManager) SetFirewall(c firewall.Config) error {
	if m.fw == nil {
		return errors.New("firewall reload not supported")
	}
	return m.fw(c)
}

func (m *pkiManager) current() *overlay.PKI {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cur
}

func (m *pkiManager) blocklistVersion() (uint64, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.bl == nil {
		return 0, false
	}
	return m.bl.Version, true
}

// applyBlocklist applies b (which the caller verified) if it is newer than the one in
// force, through the node's apply path; it reports whether it did. The node calls applied
// back, which records and saves it. A target without that path (tests' stand-in) gets the
// list in its pool through SetPKI.
func (m *pkiManager) applyBlocklist(b *cert.SignedBlocklist, source string) (bool, error) {
	if bn, ok := m.node.(blocklistNode); ok {
		return bn.ApplyBlocklist(b, source)
	}
	m.mu.Lock()
	if m.bl != nil && b.Version <= m.bl.Version {
		m.mu.Unlock()
		return false, nil
	}
	m.bl = b
	err := m.setLocked(&overlay.PKI{Creds: m.cur.Creds, Pool: m.cur.Pool})
	save := m.save
	m.mu.Unlock()
	if err == nil && save != nil {
		save(b, source)
	}
	return true, err
}

// applied is the node's OnBlocklist hook: a list it applied, fetched from the CA service or
// relayed by a lighthouse. It is kept for PKIs swapped in later and saved.
func (m *pkiManager) applied(b *cert.SignedBlocklist, source string) {
	m.mu.Lock()
	if m.bl == nil || b.Version > m.bl.Version {
		m.bl = b
	}
	save := m.save
	m.mu.Unlock()
	if save != nil {
		save(b, source)
	}
}

// renewer is the renewal and blocklist loops of one node.
type renewer struct {
	cfg        *overlay.Config
	m          *pkiManager
	client     *client.Client
	serviceKey []byte
	clock      clock
	log        *slog.Logger
	rand       func() float64
	stateFile  string

	// set only by tests
	minRetry, maxRetry time.Duration
	maxSleep           time.Duration         // longest single timer while waiting for the renewal time
	renewed            func(*client.Renewal) // after each successful renewal

	// renewals is meshnode_cert_renewals_total: renewal attempts by result, so a dashboard
	// sees failures long before the certificate runs out.
	renewals *prom.CounterVec

	saveMu       sync.Mutex
	savedVersion *uint64 // version in the blocklist file, once this run wrote it

	// renewNow wakes the renewal loop before the renewal time: the CA service signs its
	// blocklist with a CA this host does not trust, so its bundle is out of date (a CA
	// rotation it was offline for) and a renewal brings the current one.
	renewNow chan struct{}
	// bundleRenewFor is the certificate that renewNow was last asked for, so one stale
	// bundle asks once, not on every blocklist fetch. Only the blocklist loop uses it.
	bundleRenewFor string
}

// newRenewer checks the renewal section; it needs file paths for pki (inline PEM cannot be
// rewritten).
func newRenewer(cfg *overlay.Config, m *pkiManager, clk clock, log *slog.Logger) (*renewer, error) {
	rc := cfg.Renewal
	pin, err := hex.DecodeString(rc.Pin)
	if err != nil || len(pin) != 32 {
		return nil, fmt.Errorf("renewal.pin: want the 64 hex digits of the CA service's TLS fingerprint")
	}
	sk, err := hex.DecodeString(rc.ServiceKey)
	if err != nil || len(sk) != 32 {
		return nil, fmt.Errorf("renewal.service_key: want the 64 hex digits of the CA service's X25519 key (meshnode enroll writes it)")
	}
	for key, v := range map[string]string{"pki.ca": cfg.PKI.CA, "pki.cert": cfg.PKI.Cert, "pki.key": cfg.PKI.Key} {
		if strings.Contains(v, "-----BEGIN") {
			return nil, fmt.Errorf("%s: renewal needs file paths, not inline PEM", key)
		}
	}
	state := stateFileOf(cfg)
	r := &renewer{
		cfg: cfg, m: m, serviceKey: sk, clock: clk, log: log, stateFile: state,
		client:   client.New(rc.URL, pin, client.Options{Now: clk.Now}),
		rand:     rand.Float64,
		minRetry: minRetry, maxRetry: maxRetry, maxSleep: time.Minute,
		renewNow: make(chan struct{}, 1),
		renewals: prom.NewCounterVec(prom.CounterOpts{
			Name: "meshnode_cert_renewals_total",
			Help: "Certificate renewal attempts by result (success, failure).",
		}, []string{"result"}),
	}
	for _, res := range []string{"success", "failure"} {
		r.renewals.WithLabelValues(res) // both series exist from the start, for rate() and alerts
	}
	m.mu.Lock()
	m.save = r.saveBlocklist
	m.mu.Unlock()
	return r, nil
}

// expiryGauge is meshnode_cert_expiry_seconds: time left on the running certificate.
func (r *renewer) expiryGauge() prom.Collector {
	return prom.NewGaugeFunc(prom.GaugeOpts{
		Name: "meshnode_cert_expiry_seconds",
		Help: "Seconds until this host's certificate expires (negative once expired).",
	}, func() float64 {
		return r.m.current().Creds.Cert.Details.NotAfter.Sub(r.clock.Now()).Seconds()
	})
}

// jitter is renewal.jitter, or 5% of the lifetime, at most 10 minutes.
func (r *renewer) jitter(life time.Duration) time.Duration {
	if j := r.cfg.Renewal.Jitter; j > 0 {
		return j
	}
	return min(life/20, 10*time.Minute)
}

// due is when the certificate should be renewed: at renewal.at of its lifetime plus up to
// the jitter, never after expiry.
func (r *renewer) due(c *cert.Certificate) time.Time {
	nb, na := c.Details.NotBefore, c.Details.NotAfter
	life := na.Sub(nb)
	t := nb.Add(time.Duration(float64(life) * r.cfg.Renewal.At))
	t = t.Add(time.Duration(r.rand() * float64(r.jitter(life))))
	if t.After(na) {
		t = na
	}
	return t
}

// run renews until ctx ends; runBlocklist is started beside it.
func (r *renewer) run(ctx context.Context) {
	for ctx.Err() == nil {
		c := r.m.current().Creds.Cert
		due := r.due(c)
		now := r.clock.Now()
		r.log.Info("certificate renewal scheduled", "at", due.UTC().Format(time.RFC3339),
			"in", due.Sub(now).Round(time.Second), "expires_in", c.Details.NotAfter.Sub(now).Round(time.Second))
		if !r.sleepUntil(ctx, due) {
			return
		}
		if r.m.current().Creds.Cert.Fingerprint() != c.Fingerprint() {
			continue // replaced meanwhile (reload): schedule for the new one
		}
		r.renewWithRetry(ctx)
	}
}

// sleepUntil waits until the wall clock reaches t, in steps of at most maxSleep: timers run
// on the monotonic clock, which stops while the machine is suspended, so a laptop waking up
// after its renewal time must notice within a step rather than sleep on past expiry. A
// renewNow request ends the wait early. It reports false when ctx ended.
func (r *renewer) sleepUntil(ctx context.Context, t time.Time) bool {
	for {
		d := t.Sub(r.clock.Now())
		if d <= 0 {
			return ctx.Err() == nil
		}
		select {
		case <-ctx.Done():
			return false
		case <-r.renewNow:
			r.log.Info("renewing now for the CA service's current CA bundle")
			return ctx.Err() == nil
		case <-r.clock.After(min(d, r.maxSleep)):
		}
	}
}

// renewWithRetry tries until one renewal succeeds, backing off while it fails.
func (r *renewer) renewWithRetry(ctx context.Context) {
	wait := r.minRetry
	for attempt := 1; ctx.Err() == nil; attempt++ {
		err := r.renewOnce(ctx)
		if err == nil {
			r.renewals.WithLabelValues("success").Inc()
			return
		}
		if ctx.Err() == nil { // an attempt cut short by shutdown is no failure
			r.renewals.WithLabelValues("failure").Inc()
		}
		c := r.m.current().Creds.Cert
		left := c.Details.NotAfter.Sub(r.clock.Now())
		args := []any{"err", err, "attempt", attempt, "retry_in", wait, "expires_in", left.Round(time.Second)}
		switch {
		case left <= 0:
			r.log.Error("certificate expired and could not be renewed: the node cannot make new tunnels; "+
				"enroll again with a new token (meshnode enroll -force)", args...)
		case errors.Is(err, api.ErrRevoked):
			r.log.Error("certificate renewal refused: this host is revoked", args...)
		case errors.Is(err, api.ErrFork):
			r.log.Error("certificate renewal refused: the CA service has renewed this host's certificate for another key, "+
				"so another copy of this host's key may exist; the operator must revoke the host and invite it with -replace", args...)
		case errors.Is(err, api.ErrRenewLimited):
			r.log.Warn("certificate renewal refused for now; retrying", args...)
		default:
			r.log.Warn("certificate renewal failed; retrying", args...)
		}
		select {
		case <-ctx.Done():
			return
		case <-r.clock.After(wait):
		}
		wait = min(2*wait, r.maxRetry)
		// Never back off past expiry by more than the first retry.
		if left > 0 && wait > left/2 && left/2 > r.minRetry {
			wait = left / 2
		}
	}
}

// renewOnce renews with the current key, writes key, cert and CA bundle (all or none), and
// swaps the new PKI into the node.
func (r *renewer) renewOnce(ctx context.Context) error {
	cur := r.m.current()
	certPEM, err := cur.Creds.Cert.MarshalPEM()
	if err != nil {
		return err
	}
	counter, err := r.nextCounter()
	if err != nil {
		return err
	}
	newKey, err := r.pendingKey(cur.Creds.Cert.Fingerprint())
	if err != nil {
		return err
	}
	rn, err := r.client.Renew(ctx, client.RenewParams{CertPEM: certPEM, Key: cur.Creds.PrivateKey,
		ServiceKey: r.serviceKey, Counter: counter, NewKey: newKey})
	if err != nil {
		return err
	}
	files := []cert.File{
		{Path: r.cfg.PKI.Key, Data: rn.KeyPEM, Perm: 0o600},
		{Path: r.cfg.PKI.Cert, Data: rn.CertPEM, Perm: 0o644},
	}
	if len(rn.CABundle) > 0 {
		files = append(files, cert.File{Path: r.cfg.PKI.CA, Data: rn.CABundle, Perm: 0o644})
	}
	// The journal holds the new set until all files are in place: a crash between two
	// renames leaves a key that does not match the certificate, which RecoverRenewal repairs
	// from it at the next start.
	journal := pendingFile(r.stateFile)
	if err := cert.WriteFileAtomic(journal, slices.Concat(rn.CertPEM, rn.KeyPEM, rn.CABundle), 0o600, true); err != nil {
		r.log.Warn("cannot write the renewal journal", "err", err)
	}
	if err := cert.WriteFiles(files, true); err != nil {
		// The new key exists only in memory: run with it rather than lose it, and say so.
		r.log.Error("renewed, but writing the new key and certificate failed; running with them in memory", "err", err)
		return r.swapIn(rn, nil)
	}
	os.Remove(journal)
	os.Remove(newKeyFile(r.stateFile)) // the renewal is on disk: a retry would start from it
	p, err := overlay.LoadPKI(r.cfg, r.clock.Now())
	if err != nil {
		return fmt.Errorf("renewed files do not load: %w", err)
	}
	if p.Creds.Cert.Fingerprint() != rn.Cert.Fingerprint() {
		return fmt.Errorf("renewed files changed while loading them")
	}
	return r.swapIn(rn, p)
}

func (r *renewer) swapIn(rn *client.Renewal, p *overlay.PKI) error {
	if p == nil {
		pool, err := cert.NewPoolFromPEMWithClock(rn.CABundle, r.clock.Now)
		if err != nil {
			return err
		}
		for _, fp := range r.cfg.Blocklist() {
			pool.Block(fp)
		}
		p = &overlay.PKI{Pool: pool}
		if p.Creds, err = handshake.NewCredentials(rn.Cert, rn.Key); err != nil {
			return err
		}
	}
	if err := r.m.SetPKI(p); err != nil {
		return err
	}
	d := rn.Cert.Details
	r.log.Info("certificate renewed", "fingerprint", short(rn.Cert.Fingerprint()), "valid_until",
		d.NotAfter.UTC().Format(time.RFC3339), "expires_in", d.NotAfter.Sub(r.clock.Now()).Round(time.Second))
	if r.renewed != nil {
		r.renewed(rn)
	}
	return nil
}

// nextCounter returns a renewal counter above every one used before and records it before
// it is sent, so a crash cannot make us reuse it. It is the wall clock in nanoseconds unless
// the state file holds a larger value (the clock went back): the service only needs it to
// grow, and the file keeps that true across clock jumps and restarts.
func (r *renewer) nextCounter() (uint64, error) {
	var last uint64
	if b, err := os.ReadFile(r.stateFile); err == nil {
		last, _ = strconv.ParseUint(strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(string(b)), "counter ")), 10, 64)
	}
	next := max(last+1, uint64(r.clock.Now().UnixNano()))
	if err := cert.WriteFileAtomic(r.stateFile, []byte("counter "+strconv.FormatUint(next, 10)+"\n"), 0o600, true); err != nil {
		return 0, fmt.Errorf("renewal.state_file: %w", err)
	}
	return next, nil
}

// blocklistFile keeps the newest signed blocklist across restarts, so revocations stay in
// force when the node restarts while the CA service is down. It is signed by the CA, so the
// file needs no protection beyond what any config file has; a tampered one fails verification.
func (r *renewer) blocklistFile() string { return r.stateFile + ".blocklist" }

// loadSavedBlocklist applies the blocklist saved by an earlier run, if it verifies.
func (r *renewer) loadSavedBlocklist() {
	b, err := os.ReadFile(r.blocklistFile())
	if err != nil {
		return
	}
	var bl cert.SignedBlocklist
	if err := json.Unmarshal(b, &bl); err != nil {
		r.log.Warn("ignoring the saved blocklist", "file", r.blocklistFile(), "err", err)
		return
	}
	if err := cert.VerifyBlocklist(&bl, r.m.current().Pool); err != nil {
		r.log.Warn("ignoring the saved blocklist", "file", r.blocklistFile(), "err", err)
		return
	}
	if applied, err := r.m.applyBlocklist(&bl, overlay.BlocklistFromFile); err != nil {
		r.log.Error("applying the saved blocklist failed", "err", err)
	} else if applied {
		r.log.Info("saved blocklist applied", "version", bl.Version, "entries", len(bl.Fingerprints))
	}
}

// saveBlocklist keeps b in the blocklist file unless the file already holds it or a newer
// one. Lists fetched from the CA service and lists relayed by lighthouses come here alike.
func (r *renewer) saveBlocklist(b *cert.SignedBlocklist, source string) {
	if source == overlay.BlocklistFromFile {
		return
	}
	r.saveMu.Lock()
	defer r.saveMu.Unlock()
	if r.savedVersion != nil && b.Version <= *r.savedVersion {
		return
	}
	j, err := json.Marshal(b)
	if err == nil {
		err = cert.WriteFileAtomic(r.blocklistFile(), j, 0o644, true)
	}
	if err != nil {
		r.log.Warn("cannot save the blocklist", "err", err)
		return
	}
	v := b.Version
	r.savedVersion = &v
}

// runBlocklist fetches the signed blocklist every renewal.blocklist_interval and applies the
// newest; while the service is down the last one stays applied (and lighthouses relay newer
// ones to the node meanwhile, see overlay/blocklist.go).
func (r *renewer) runBlocklist(ctx context.Context) {
	r.loadSavedBlocklist()
	for ctx.Err() == nil {
		r.fetchBlocklist(ctx)
		select {
		case <-ctx.Done():
			return
		case <-r.clock.After(r.cfg.Renewal.BlocklistInterval):
		}
	}
}

func (r *renewer) fetchBlocklist(ctx context.Context) {
	cur := r.m.current()
	b, err := r.client.FetchBlocklist(ctx, cur.Pool)
	if errors.Is(err, cert.ErrBlocklistUnknownCA) {
		// The service (its TLS identity is pinned) signs with a CA missing from our bundle:
		// it rotated its CA while this host was away, and peers that renewed since carry
		// certificates we cannot verify. Renewing (our certificate's CA is still trusted
		// there during a rotation) brings the bundle with the new CA.
		if fp := cur.Creds.Cert.Fingerprint(); fp != r.bundleRenewFor {
			r.bundleRenewFor = fp
			r.log.Warn("the CA service signs with a CA this host does not trust yet (a CA rotation); renewing now for the new CA bundle", "err", err)
			select {
			case r.renewNow <- struct{}{}:
			default:
			}
		}
	}
	if err != nil {
		v, ok := r.m.blocklistVersion()
		if ok {
			r.log.Warn("cannot fetch the blocklist; keeping the last one", "err", err, "version", v)
		} else {
			r.log.Warn("cannot fetch the blocklist", "err", err)
		}
		return
	}
	if _, err := r.m.applyBlocklist(b, overlay.BlocklistFromCA); err != nil {
		r.log.Error("applying the blocklist failed", "err", err, "version", b.Version)
	}
}

// Target is the part of *overlay.Node that key handling and reloads drive.
type Target interface {
	SetPKI(*overlay.PKI) error
	SetFirewall(firewall.Config) error
}

// Start starts renewal and blocklist loops when renewal.url is set and returns the target
// reloads should drive (so a reload keeps the blocklist applied) and a stop function that
// waits for the loops. Without renewal.url it returns node itself.
func Start(ctx context.Context, cfg *overlay.Config, pki *overlay.PKI, node Target,
	reg prom.Registerer, log *slog.Logger) (Target, func()) {
	if cfg.Renewal.URL == "" {
		return node, func() {}
	}
	m := newPKIManager(node, pki)
	r, err := newRenewer(cfg, m, realClock{}, log.With("part", "renewal"))
	if err != nil {
		log.Error("automatic renewal disabled", "err", err)
		return node, func() {}
	}
	if err := reg.Register(r.expiryGauge()); err != nil {
		log.Warn("meshnode_cert_expiry_seconds not registered", "err", err)
	}
	if err := reg.Register(r.renewals); err != nil {
		log.Warn("meshnode_cert_renewals_total not registered", "err", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); r.run(ctx) }()
	go func() { defer wg.Done(); r.runBlocklist(ctx) }()
	push := cfg.Renewal.BlocklistPush == nil || *cfg.Renewal.BlocklistPush
	if push {
		wg.Add(1)
		go func() { defer wg.Done(); r.runBlocklistPush(ctx) }() // blocklist_push.go
	}
	log.Info("automatic key handling", "ca_service", cfg.Renewal.URL, "renew_at", cfg.Renewal.At,
		"blocklist_interval", cfg.Renewal.BlocklistInterval, "blocklist_push", push)
	return m, func() { cancel(); wg.Wait() }
}

func pendingFile(stateFile string) string { return stateFile + ".pending" }

// newKeyFile holds the new key of a renewal in progress and the certificate it renews, so
// that every retry, also after a restart, asks for the same key: the service answers a
// retry whose reply was lost with the certificate it already issued, and refuses a request
// from a renewed certificate for another key as a fork (a copy of our key elsewhere).
func newKeyFile(stateFile string) string { return stateFile + ".newkey" }

// pendingKey returns the new key for renewing the certificate with fingerprint from: the
// one saved for it, or a fresh one that is saved before it is used.
func (r *renewer) pendingKey(from string) ([]byte, error) {
	path := newKeyFile(r.stateFile)
	if b, err := os.ReadFile(path); err == nil {
		if head, keyPEM, ok := bytes.Cut(b, []byte("\n")); ok && string(head) == "from "+from {
			if k, _, err := cert.UnmarshalX25519PrivateKey(keyPEM); err == nil {
				return k, nil
			}
		}
	}
	_, k, err := cert.GenerateX25519()
	if err != nil {
		return nil, err
	}
	data := slices.Concat([]byte("from "+from+"\n"), cert.MarshalX25519PrivateKey(k))
	if err := cert.WriteFileAtomic(path, data, 0o600, true); err != nil {
		return nil, fmt.Errorf("renewal.state_file: %w", err)
	}
	return k, nil
}

// stateFileOf is renewal.state_file or its default.
func stateFileOf(cfg *overlay.Config) string {
	if cfg.Renewal.StateFile != "" {
		return cfg.Renewal.StateFile
	}
	return cfg.PKI.Key + ".renewal"
}

// RecoverRenewal repairs the pki files after a crash in the middle of writing a renewal:
// when the renewal journal exists and the key on disk does not match the certificate on
// disk (or the certificate does not verify against the CA bundle on disk), the set from the
// journal is written. It must run before the PKI is loaded. It reports what it did.
func RecoverRenewal(cfg *overlay.Config, now time.Time) (string, error) {
	if cfg.Renewal.URL == "" || strings.Contains(cfg.PKI.Key, "-----BEGIN") {
		return "", nil
	}
	journal := pendingFile(stateFileOf(cfg))
	j, err := os.ReadFile(journal)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	if _, err := overlay.LoadPKI(cfg, now); err == nil {
		os.Remove(journal)
		return "", nil // the files are a consistent set (old or new)
	}
	crtPEM, rest, err := splitPEM(j)
	if err != nil {
		return "", fmt.Errorf("renewal journal %s: %w", journal, err)
	}
	keyPEM, bundle, err := splitPEM(rest)
	if err != nil {
		return "", fmt.Errorf("renewal journal %s: %w", journal, err)
	}
	files := []cert.File{{Path: cfg.PKI.Key, Data: keyPEM, Perm: 0o600}, {Path: cfg.PKI.Cert, Data: crtPEM, Perm: 0o644}}
	if len(bundle) > 0 {
		files = append(files, cert.File{Path: cfg.PKI.CA, Data: bundle, Perm: 0o644})
	}
	if err := cert.WriteFiles(files, true); err != nil {
		return "", err
	}
	if _, err := overlay.LoadPKI(cfg, now); err != nil {
		return "", fmt.Errorf("restored the renewal from %s, but it does not load: %w", journal, err)
	}
	os.Remove(journal)
	return "restored the key and certificate of an interrupted renewal from " + journal, nil
}

// splitPEM returns the first PEM block of b and what follows it.
func splitPEM(b []byte) (block, rest []byte, err error) {
	const end = "-----END "
	i := bytes.Index(b, []byte(end))
	if i < 0 {
		return nil, nil, errors.New("truncated")
	}
	j := bytes.IndexByte(b[i:], '\n')
	if j < 0 {
		return b, nil, nil
	}
	return b[:i+j+1], b[i+j+1:], nil
}

// RecoverAtStart is RecoverRenewal for the daemon's start, logging what it did.
func RecoverAtStart(cfg *overlay.Config, log *slog.Logger) {
	if msg, err := RecoverRenewal(cfg, time.Now()); err != nil {
		log.Error("cannot repair an interrupted renewal", "err", err)
	} else if msg != "" {
		log.Warn(msg)
	}
}

// short is a fingerprint's first 12 hex digits, for logs.
func short(fp string) string {
	if len(fp) > 12 {
		return fp[:12]
	}
	return fp
}
