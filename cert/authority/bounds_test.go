package authority_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshnode/meshnode/cert"
	"github.com/meshnode/meshnode/cert/authority"
)

// Tests of issue 12: a host cannot make its own revocation fail open by renewing in a loop,
// and a copy of its key cannot keep renewing beside it.

func auditActions(t *testing.T, f *fixture, action string) []authority.AuditEntry {
	t.Helper()
	es, err := f.a.Audit()
	if err != nil {
		t.Fatal(err)
	}
	var out []authority.AuditEntry
	for _, e := range es {
		if e.Action == action {
			out = append(out, e)
		}
	}
	return out
}

// TestRenewalBeforeHalfItsLifetimeUsesABurstThenIsRefused: renewing early is allowed a few
// times (retries, a CA rotation), then refused until half of the cert's lifetime has passed.
func TestRenewalBeforeHalfItsLifetimeUsesABurstThenIsRefused(t *testing.T) {
	f := newFixture(t) // 1 h certs
	n := f.enroll(t, "web1", "servers")
	f.renew(t, n)
	f.renew(t, n)
	before := auditLen(t, f)
	r, _ := f.renewRequest(t, n)
	_, err := f.a.Renew(r)
	if !errors.Is(err, authority.ErrRenewLimited) {
		t.Fatalf("a third renewal within seconds = %v, want ErrRenewLimited", err)
	}
	if !strings.Contains(err.Error(), "renew") {
		t.Errorf("error does not say why: %v", err)
	}
	if got := auditLen(t, f); got != before {
		t.Errorf("refused renewal changed the audit log (%d -> %d)", before, got)
	}
	// Half of the current cert's lifetime later it renews again; the burst is spent for
	// the lifetime, so the next one must wait for half of that cert's lifetime too.
	f.clock.Add(31 * time.Minute)
	f.renew(t, n)
	f.clock.Add(10 * time.Minute)
	r, _ = f.renewRequest(t, n)
	if _, err := f.a.Renew(r); err == nil {
		t.Fatal("an early renewal was accepted with the burst spent")
	}
	f.clock.Add(21 * time.Minute)
	f.renew(t, n)
}

// TestRenewingInALoopKeepsFewLiveCertsAndRevocationSmall renews as fast as it can over
// three lifetimes: at no point does the host hold more than a few unexpired certificates,
// and its revocation lists only those.
func TestRenewingInALoopKeepsFewLiveCertsAndRevocationSmall(t *testing.T) {
	f := newFixture(t)
	n := f.enroll(t, "loop", "servers")
	live := []*cert.Certificate{n.cert}
	accepted, refused := 0, 0
	for end := f.clock.Now().Add(3 * time.Hour); f.clock.Now().Before(end); f.clock.Add(20 * time.Second) {
		r, priv := f.renewRequest(t, n)
		res, err := f.a.Renew(r)
		if err != nil {
			refused++
			continue
		}
		accepted++
		n.pub, n.priv, n.cert, n.pem = r.PublicKey, priv, res.Cert, res.CertPEM
		live = append(live, res.Cert)
		live = slices.DeleteFunc(live, func(c *cert.Certificate) bool { return c.Expired(f.clock.Now()) })
		if len(live) > authorityMaxHostCerts {
			t.Fatalf("after %d renewals the host holds %d unexpired certificates", accepted, len(live))
		}
	}
	t.Logf("%d renewals accepted, %d refused", accepted, refused)
	res, err := f.a.Revoke("loop")
	if err != nil {
		t.Fatal(err)
	}
	// The live ones, and those expired less than the clock skew ago.
	if len(res.Fingerprints) > 2*authorityMaxHostCerts {
		t.Errorf("revocation lists %d certificates", len(res.Fingerprints))
	}
	bl, err := f.a.Blocklist()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range live {
		if !slices.Contains(bl.Fingerprints, c.Fingerprint()) {
			t.Errorf("live cert %s is not on the blocklist", c.Fingerprint())
		}
	}
}

// authorityMaxHostCerts is the cap the service promises (authority.MaxHostCerts).
const authorityMaxHostCerts = authority.MaxHostCerts

// TestRevocationListsOnlyCertsStillValid: expired certs are dead everywhere already; the
// list carries only those a node could still accept, and drops each once it expires.
func TestRevocationListsOnlyCertsStillValid(t *testing.T) {
	f := newFixture(t)
	n := f.enroll(t, "web1", "servers")
	first := n.cert
	f.clock.Add(45 * time.Minute)
	f.renew(t, n)
	second := n.cert
	f.clock.Add(30 * time.Minute) // first expired 15 minutes ago
	res, err := f.a.Revoke("web1")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.Fingerprints, []string{second.Fingerprint()}) {
		t.Errorf("revoked %v, want only the unexpired %s (not %s)", res.Fingerprints, second.Fingerprint(), first.Fingerprint())
	}
	f.clock.Add(time.Hour)
	bl, err := f.a.Blocklist()
	if err != nil {
		t.Fatal(err)
	}
	if len(bl.Fingerprints) != 0 {
		t.Errorf("blocklist still lists %v after every cert expired", bl.Fingerprints)
	}
}

// TestBlocklistTooLargeForNodesIsNotPublished: a list nodes would refuse (too many entries
// for the client's response limit) is not served; the service says so in its log and its
// audit log, once per version.
func TestBlocklistTooLargeForNodesIsNotPublished(t *testing.T) {
	f := newFixture(t)
	const entries = 20000 // ~1.4 MB of JSON, over the client's 1 MiB
	err := f.store.Update(func(tx authority.Tx) error {
		for i := range entries {
			fp := fmt.Sprintf("%064x", i+1)
			if err := tx.PutRevocation(authority.Revocation{Fingerprint: fp, Time: f.clock.Now(), NotAfter: f.clock.Now().Add(time.Hour)}); err != nil {
				return err
			}
		}
		_, err := tx.BumpBlocklistVersion()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	b, err := f.a.Blocklist()
	if !errors.Is(err, authority.ErrBlocklistTooLarge) {
		j, _ := json.Marshal(b)
		t.Fatalf("published a blocklist of %d entries, %d bytes of JSON", len(b.Fingerprints), len(j))
	}
	t.Logf("Blocklist: %v", err)
	if _, err := f.a.Blocklist(); err == nil {
		t.Fatal("published on the second try")
	}
	if got := len(auditActions(t, f, "blocklist-alarm")); got != 1 {
		t.Errorf("%d blocklist-alarm audit entries, want 1", got)
	}
	if !strings.Contains(string(f.logs.Bytes()), "level=ERROR") {
		t.Errorf("no error in the log:\n%s", f.logs.Bytes())
	}
}

// TestRenewalFromASupersededCertIsAFork: someone copied web1's key and cert; web1 renewed
// since. A renewal from the copy is refused and recorded as a possible key theft, and the
// real host keeps renewing.
func TestRenewalFromASupersededCertIsAFork(t *testing.T) {
	f := newFixture(t)
	n := f.enroll(t, "web1", "servers")
	stolen := *n
	f.clock.Add(40 * time.Minute)
	f.renew(t, n)
	stolen.counter = n.counter + 100
	r, _ := f.renewRequest(t, &stolen)
	if _, err := f.a.Renew(r); !errors.Is(err, authority.ErrFork) {
		t.Fatalf("renewal from the copied, superseded certificate = %v, want ErrFork", err)
	}
	forks := auditActions(t, f, "renew-fork")
	if len(forks) != 1 || forks[0].Host != "web1" || forks[0].Fingerprint != stolen.cert.Fingerprint() {
		t.Fatalf("fork audit entries %+v, want one for web1 from %s", forks, stolen.cert.Fingerprint())
	}
	// Asking again adds no audit entry (the log cannot be flooded), and still fails.
	r, _ = f.renewRequest(t, &stolen)
	if _, err := f.a.Renew(r); err == nil {
		t.Fatal("second renewal from the copy accepted")
	}
	if got := len(auditActions(t, f, "renew-fork")); got != 1 {
		t.Errorf("%d fork entries after a second try, want 1", got)
	}
	f.clock.Add(40 * time.Minute)
	n.counter = stolen.counter
	f.renew(t, n)
}

// TestLostRenewalReplyIsRetriedWithTheSameKey: the reply to a renewal was lost; the host
// asks again from its old cert with the same new key in a new request and gets the same
// certificate, not a second one.
func TestLostRenewalReplyIsRetriedWithTheSameKey(t *testing.T) {
	f := newFixture(t)
	n := f.enroll(t, "web1", "servers")
	f.clock.Add(40 * time.Minute)
	r, _ := f.renewRequest(t, n)
	got, err := f.a.Renew(r)
	if err != nil {
		t.Fatal(err)
	}
	// The very same request again is a replay: refused, as any captured request.
	if _, err := f.a.Renew(r); !errors.Is(err, authority.ErrReplay) {
		t.Fatalf("resent request = %v, want ErrReplay", err)
	}
	r2 := r
	n.counter++
	r2.Nonce, r2.Counter = []byte("another-nonce-of-16b"), n.counter
	resign(t, f, n.priv, &r2)
	again, err := f.a.Renew(r2)
	if err != nil {
		t.Fatalf("new request for the same key: %v", err)
	}
	if again.Cert.Fingerprint() != got.Cert.Fingerprint() {
		t.Errorf("retry got another cert")
	}
	if got := len(auditActions(t, f, "renew")); got != 1 {
		t.Errorf("%d renew audit entries, want 1", got)
	}
}

// TestReplaceRevokesWhatTheHostStillHoldsAndKeepsItsIdentity: web1's disk died with a
// valid cert on it; the operator replaces it. The old cert is blocklisted and cannot renew,
// the name, IP and groups stay, and the new token enrolls.
func TestReplaceRevokesWhatTheHostStillHoldsAndKeepsItsIdentity(t *testing.T) {
	f := newFixture(t)
	n := f.enroll(t, "web1", "servers", "web")
	if _, _, err := f.a.Invite(authority.InviteRequest{Name: "web1", CIDR: "servers"}); !errors.Is(err, authority.ErrNameTaken) {
		t.Fatalf("plain re-invite of an enrolled host = %v, want ErrNameTaken", err)
	}
	if _, _, err := f.a.Invite(authority.InviteRequest{Name: "nobody", Replace: true}); !errors.Is(err, authority.ErrNotFound) {
		t.Fatalf("replacing an unknown host = %v, want ErrNotFound", err)
	}
	s, id, err := f.a.Invite(authority.InviteRequest{Name: "web1", Replace: true})
	if err != nil {
		t.Fatal(err)
	}
	if id.IP != n.cert.Details.Ips[0] || !slices.Equal(id.Groups, []string{"web"}) || id.CIDR != "servers" {
		t.Errorf("replaced identity %+v, want the old one", id)
	}
	bl, err := f.a.Blocklist()
	if err != nil || !slices.Contains(bl.Fingerprints, n.cert.Fingerprint()) {
		t.Fatalf("old cert not blocklisted: %v %v", bl.Fingerprints, err)
	}
	if got := auditActions(t, f, "replace"); len(got) != 1 || !strings.Contains(got[0].Detail, "revoked=1") {
		t.Errorf("replace audit %+v", got)
	}
	f.clock.Add(40 * time.Minute)
	r, _ := f.renewRequest(t, n)
	if _, err := f.a.Renew(r); !errors.Is(err, authority.ErrRevoked) {
		t.Errorf("old cert renewal after replace = %v, want ErrRevoked", err)
	}
	tok, _ := authority.ParseToken(s)
	pub, _ := newKey(t)
	e, err := f.a.Enroll(tok.Secret, pub)
	if err != nil {
		t.Fatal(err)
	}
	if e.Cert.Details.Ips[0] != id.IP {
		t.Errorf("enrolled at %v", e.Cert.Details.Ips[0])
	}
}
