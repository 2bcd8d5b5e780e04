package authority_test

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshnode/meshnode/cert"
	"github.com/meshnode/meshnode/cert/authority"
	"github.com/meshnode/meshnode/cert/certtest"
)

func TestEnrollIssuesTheInvitedIdentity(t *testing.T) {
	f := newFixture(t)
	tok, id := f.invite(t, "web1", "servers", "web", "ssh")
	if id.IP != netip.MustParsePrefix("10.42.0.2/16") {
		t.Errorf("invite IP = %v, want the first free address of servers (.1 is the lighthouse) with the mesh's mask", id.IP)
	}
	if tok.URL != "https://127.0.0.1:8443" || !bytes.Equal(tok.Pin, f.opts.Pin) {
		t.Errorf("token carries URL %q pin %x", tok.URL, tok.Pin)
	}
	pub, _ := newKey(t)
	e, err := f.a.Enroll(tok.Secret, pub)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := cert.NewPoolFromPEMWithClock(e.CABundle, f.clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Verify(e.Cert, f.clock.Now()); err != nil {
		t.Fatalf("issued cert does not verify against the bundle: %v", err)
	}
	d := e.Cert.Details
	if d.Name != "web1" || !slices.Equal(d.Ips, []netip.Prefix{id.IP}) || !slices.Equal(d.Groups, []string{"web", "ssh"}) || !bytes.Equal(d.PublicKey, pub) {
		t.Errorf("cert details = %+v", d)
	}
	if want := f.clock.Now().Add(-time.Minute); !d.NotBefore.Equal(want) {
		t.Errorf("NotBefore = %v, want backdated by a minute to %v", d.NotBefore, want)
	}
	if want := f.clock.Now().Add(-time.Minute + time.Hour); !d.NotAfter.Equal(want) {
		t.Errorf("NotAfter = %v, want %v (an hour after NotBefore)", d.NotAfter, want)
	}
	if len(e.Lighthouses) != 1 || !bytes.Equal(e.ServiceKey, f.a.ServicePublicKey()) {
		t.Errorf("enrollment lighthouses %v service key %x", e.Lighthouses, e.ServiceKey)
	}
	// The next invite in the same CIDR gets the next address.
	if _, id2 := f.invite(t, "web2", "servers"); id2.IP.Addr() != netip.MustParseAddr("10.42.0.3") {
		t.Errorf("second host got %v", id2.IP)
	}
}

func TestInviteRefuses(t *testing.T) {
	f := newFixture(t)
	f.enroll(t, "web1", "servers")
	for _, tc := range []struct {
		name string
		req  authority.InviteRequest
		want error
	}{
		{"enrolled name", authority.InviteRequest{Name: "web1", CIDR: "servers"}, authority.ErrNameTaken},
		{"taken IP", authority.InviteRequest{Name: "x", CIDR: "servers", IP: netip.MustParseAddr("10.42.0.2")}, authority.ErrIPTaken},
		{"broadcast IP", authority.InviteRequest{Name: "x", CIDR: "servers", IP: netip.MustParseAddr("10.42.0.255")}, authority.ErrIPOutsideCIDR},
		{"IP of another CIDR", authority.InviteRequest{Name: "x", CIDR: "humans", IP: netip.MustParseAddr("10.42.0.9")}, authority.ErrIPOutsideCIDR},
		{"unknown CIDR", authority.InviteRequest{Name: "x", CIDR: "nope"}, authority.ErrCIDRUnknown},
		{"bad name", authority.InviteRequest{Name: "a b", CIDR: "servers"}, authority.ErrInvalidName},
		{"bad group", authority.InviteRequest{Name: "x", CIDR: "servers", Groups: []string{"a,b"}}, authority.ErrInvalidName},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, err := f.a.Invite(tc.req); !errors.Is(err, tc.want) {
				t.Fatalf("Invite = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestAddCIDRRefusesToTakeHostsFromItsParent(t *testing.T) {
	f := newFixture(t)
	f.enroll(t, "web1", "servers") // 10.42.0.2
	if err := f.a.AddCIDR(authority.CIDR{Name: "low", Prefix: netip.MustParsePrefix("10.42.0.0/28")}); !errors.Is(err, authority.ErrCIDRInvalid) {
		t.Errorf("AddCIDR over a host = %v, want ErrCIDRInvalid", err)
	}
	if err := f.a.AddCIDR(authority.CIDR{Name: "high", Prefix: netip.MustParsePrefix("10.42.0.128/25")}); err != nil {
		t.Errorf("AddCIDR beside the host: %v", err)
	}
	if err := f.a.AddCIDR(authority.CIDR{Name: "high", Prefix: netip.MustParsePrefix("10.42.0.128/25")}); err != nil {
		t.Errorf("adding the same CIDR again: %v", err)
	}
	if err := f.a.AddCIDR(authority.CIDR{Name: "high", Prefix: netip.MustParsePrefix("10.42.0.64/26")}); !errors.Is(err, authority.ErrNameTaken) {
		t.Errorf("moving a CIDR = %v, want ErrNameTaken", err)
	}
}

func TestInviteOutsideCAConstraintsIsRefused(t *testing.T) {
	f := newFixture(t)
	if err := f.a.AddCIDR(authority.CIDR{Name: "elsewhere", Prefix: netip.MustParsePrefix("10.99.0.0/24")}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.a.Invite(authority.InviteRequest{Name: "x", CIDR: "elsewhere"}); !errors.Is(err, cert.ErrConstraint) {
		t.Fatalf("Invite = %v, want ErrConstraint (CA limited to 10.42.0.0/16)", err)
	}
}

func TestEnrollRefusesBadTokens(t *testing.T) {
	f := newFixture(t)
	used, _ := f.invite(t, "used", "servers")
	pub, _ := newKey(t)
	if _, err := f.a.Enroll(used.Secret, pub); err != nil {
		t.Fatal(err)
	}
	expired, _ := f.invite(t, "late", "servers")
	f.clock.Add(authority.DefaultTokenTTL + time.Second) // "late" is now expired
	superseded, _ := f.invite(t, "again", "servers")
	f.invite(t, "again", "servers")
	forged := bytes.Repeat([]byte{1}, 32)
	lowOrder, _ := f.invite(t, "loworder", "servers")
	fresh, _ := f.invite(t, "fresh", "servers")

	for _, tc := range []struct {
		name   string
		secret []byte
		key    []byte
		want   error
	}{
		{"reused", used.Secret, pub, authority.ErrTokenUsed},
		{"expired", expired.Secret, pub, authority.ErrTokenExpired},
		{"superseded by a new invite", superseded.Secret, pub, authority.ErrTokenUnknown},
		{"forged", forged, pub, authority.ErrTokenUnknown},
		{"short", []byte{1, 2}, pub, authority.ErrTokenUnknown},
		{"all-zero public key", lowOrder.Secret, make([]byte, 32), authority.ErrBadKey},
		{"short public key", lowOrder.Secret, pub[:31], authority.ErrBadKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := f.a.Enroll(tc.secret, tc.key); !errors.Is(err, tc.want) {
				t.Fatalf("Enroll = %v, want %v", err, tc.want)
			}
		})
	}
	// A refused token with a bad key is still unused.
	if _, err := f.a.Enroll(lowOrder.Secret, pub); err != nil {
		t.Errorf("token refused with a bad key was consumed: %v", err)
	}
	if _, err := f.a.Enroll(fresh.Secret, pub); err != nil {
		t.Errorf("unexpired token refused: %v", err)
	}
}

func TestFiftyParallelEnrollmentsWithOneTokenGiveOneCert(t *testing.T) {
	f := newFixture(t)
	tok, _ := f.invite(t, "race", "servers")
	const n = 50
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		pub, _ := newKey(t)
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			_, errs[i] = f.a.Enroll(tok.Secret, pub)
		}()
	}
	close(start)
	wg.Wait()
	ok := 0
	for _, err := range errs {
		if err == nil {
			ok++
		} else if !errors.Is(err, authority.ErrTokenUsed) {
			t.Errorf("unexpected error %v", err)
		}
	}
	if ok != 1 {
		t.Fatalf("%d enrollments succeeded, want exactly 1", ok)
	}
	var issued int
	f.store.View(func(tx authority.Tx) error {
		cs, _ := tx.Certs()
		issued = len(cs)
		return nil
	})
	if issued != 1 {
		t.Fatalf("%d certs recorded, want 1", issued)
	}
}

func TestRenewReissuesTheIdentityOnRecordWithTheNewKey(t *testing.T) {
	f := newFixture(t)
	n := f.enroll(t, "web1", "servers", "web")
	old := n.cert
	f.clock.Add(40 * time.Minute)
	f.renew(t, n)
	if n.cert.Fingerprint() == old.Fingerprint() || bytes.Equal(n.cert.Details.PublicKey, old.Details.PublicKey) {
		t.Fatal("renewal kept the old cert or key")
	}
	if n.cert.Details.Name != "web1" || !slices.Equal(n.cert.Details.Ips, old.Details.Ips) || !slices.Equal(n.cert.Details.Groups, old.Details.Groups) {
		t.Errorf("renewed identity %+v differs from %+v", n.cert.Details, old.Details)
	}
	if err := n.cert.VerifyPrivateKey(n.priv); err != nil {
		t.Error(err)
	}
	if want := f.clock.Now().Add(-time.Minute + time.Hour); !n.cert.Details.NotAfter.Equal(want) {
		t.Errorf("renewed NotAfter %v, want %v", n.cert.Details.NotAfter, want)
	}
	hs, _ := f.a.Hosts()
	if len(hs) != 1 || hs[0].Fingerprint != n.cert.Fingerprint() || !hs[0].LastRenewal.Equal(f.clock.Now()) || hs[0].RenewCounter != 1 {
		t.Errorf("host record after renewal: %+v", hs)
	}
	// And again, from the renewed cert.
	f.renew(t, n)
}

func TestRenewRefuses(t *testing.T) {
	f := newFixture(t)
	other := certtest.NewCA(t, "other-ca", certtest.WithIPs("10.42.0.0/16"))
	for _, tc := range []struct {
		name string
		// mutate gets a valid request (already sent once if replay) and may change it.
		mutate func(t *testing.T, n *node, r *authority.RenewRequest)
		replay bool
		want   error
	}{
		{"replayed request", nil, true, authority.ErrReplay},
		{"old counter, new nonce", func(t *testing.T, n *node, r *authority.RenewRequest) {
			r.Nonce = bytes.Repeat([]byte{0xee}, 16)
			resign(t, f, n.priv, r)
		}, true, authority.ErrReplay},
		{"stolen cert without its key", func(t *testing.T, n *node, r *authority.RenewRequest) {
			_, thief := newKey(t)
			resign(t, f, thief, r)
		}, false, authority.ErrBadProof},
		{"tampered new key", func(t *testing.T, n *node, r *authority.RenewRequest) {
			r.PublicKey, _ = newKey(t)
		}, false, authority.ErrBadProof},
		{"tampered counter", func(t *testing.T, n *node, r *authority.RenewRequest) { r.Counter += 5 }, false, authority.ErrBadProof},
		{"same key", func(t *testing.T, n *node, r *authority.RenewRequest) {
			r.PublicKey = n.pub
			resign(t, f, n.priv, r)
		}, false, authority.ErrSameKey},
		{"low-order new key", func(t *testing.T, n *node, r *authority.RenewRequest) {
			r.PublicKey = make([]byte, 32)
			resign(t, f, n.priv, r)
		}, false, authority.ErrBadKey},
		{"stale time", func(t *testing.T, n *node, r *authority.RenewRequest) {
			r.Time -= 600
			resign(t, f, n.priv, r)
		}, false, authority.ErrStale},
		{"short nonce", func(t *testing.T, n *node, r *authority.RenewRequest) {
			r.Nonce = r.Nonce[:8]
			resign(t, f, n.priv, r)
		}, false, authority.ErrMalformed},
		{"other CA's cert with its key", func(t *testing.T, n *node, r *authority.RenewRequest) {
			h := other.NewHost(t, "web1", n.cert.Details.Ips[0].String())
			r.Cert = h.PEM
			resign(t, f, h.Key, r)
		}, false, authority.ErrCertInvalid},
		{"changed identity (cert re-signed by nobody)", func(t *testing.T, n *node, r *authority.RenewRequest) {
			c := *n.cert
			c.Details.Groups = []string{"admin"}
			p, _ := c.MarshalPEM()
			r.Cert = p
			resign(t, f, n.priv, r)
		}, false, authority.ErrCertInvalid},
		{"expired cert", func(t *testing.T, n *node, r *authority.RenewRequest) {
			h := f.ca.Issue(t, "web1", n.cert.Details.Ips[0].String(), certtest.WithValidity(f.clock.Now().Add(-2*time.Hour), f.clock.Now().Add(-time.Hour)))
			r.Cert = h.PEM
			resign(t, f, h.Key, r)
		}, false, authority.ErrCertInvalid},
		{"valid cert this service never issued", func(t *testing.T, n *node, r *authority.RenewRequest) {
			h := f.ca.NewHost(t, "web1", n.cert.Details.Ips[0].String())
			r.Cert = h.PEM
			resign(t, f, h.Key, r)
		}, false, authority.ErrCertInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := strings.ReplaceAll(strings.ReplaceAll(tc.name, " ", "-"), ",", "")
			name = strings.NewReplacer("(", "", ")", "", "'", "").Replace(name)
			n := f.enroll(t, name[:min(len(name), 60)], "servers")
			r, _ := f.renewRequest(t, n)
			if tc.replay {
				if _, err := f.a.Renew(r); err != nil {
					t.Fatal(err)
				}
			}
			before := auditLen(t, f)
			if tc.mutate != nil {
				tc.mutate(t, n, &r)
			}
			if _, err := f.a.Renew(r); !errors.Is(err, tc.want) {
				t.Fatalf("Renew = %v, want %v", err, tc.want)
			}
			if after := auditLen(t, f); after != before {
				t.Errorf("refused renewal changed the audit log (%d -> %d entries)", before, after)
			}
		})
	}
}

func resign(t *testing.T, f *fixture, key []byte, r *authority.RenewRequest) {
	t.Helper()
	if err := authority.SignRenewRequest(r, key, f.a.ServicePublicKey()); err != nil {
		t.Fatal(err)
	}
}

func auditLen(t *testing.T, f *fixture) int {
	t.Helper()
	es, err := f.a.Audit()
	if err != nil {
		t.Fatal(err)
	}
	return len(es)
}

// TestOnlyTheCurrentCertRenewsAndThePreviousOneOnlyRetries: the cert the current one
// replaced may ask again for the same key (the reply was lost) and gets the same cert; for
// another key it is a fork, and so is any older cert.
func TestOnlyTheCurrentCertRenewsAndThePreviousOneOnlyRetries(t *testing.T) {
	f := newFixture(t)
	n := f.enroll(t, "web1", "servers")
	first := *n
	f.clock.Add(40 * time.Minute)
	f.renew(t, n)
	lost := first
	lost.counter = n.counter
	r, _ := f.renewRequest(t, &lost)
	r.PublicKey = n.pub
	resign(t, f, lost.priv, &r)
	if got, err := f.a.Renew(r); err != nil || got.Cert.Fingerprint() != n.cert.Fingerprint() {
		t.Fatalf("retry from the previous cert for the same key = %v, want the same cert", err)
	}
	r, _ = f.renewRequest(t, &lost)
	if _, err := f.a.Renew(r); !errors.Is(err, authority.ErrFork) {
		t.Fatalf("previous cert for another key = %v, want ErrFork", err)
	}
	n.counter = lost.counter
	f.renew(t, n) // early: one of the burst
	// Now the first cert is two generations old.
	lost.counter = n.counter
	r, _ = f.renewRequest(t, &lost)
	if _, err := f.a.Renew(r); !errors.Is(err, authority.ErrFork) {
		t.Fatalf("renewal with a superseded cert = %v, want ErrFork", err)
	}
}

func TestRevokedHostCannotRenewOrReenrollAndIsBlocklisted(t *testing.T) {
	f := newFixture(t)
	n := f.enroll(t, "web1", "servers")
	keep := f.enroll(t, "web2", "servers")
	f.renew(t, n)
	pending, _ := f.invite(t, "laptop", "humans")

	res, err := f.a.Revoke("web1")
	if err != nil {
		t.Fatal(err)
	}
	if res.Host != "web1" || len(res.Fingerprints) != 2 || res.Version != 1 {
		t.Errorf("Revoke = %+v, want both certs of web1 blocked at version 1", res)
	}
	r, _ := f.renewRequest(t, n)
	if _, err := f.a.Renew(r); !errors.Is(err, authority.ErrRevoked) {
		t.Errorf("revoked host renewal = %v, want ErrRevoked", err)
	}
	if _, _, err := f.a.Invite(authority.InviteRequest{Name: "web1", CIDR: "servers"}); !errors.Is(err, authority.ErrNameTaken) {
		t.Errorf("re-invite of revoked host = %v, want ErrNameTaken", err)
	}
	// Revoking an invited host by name stops its pending token.
	if _, err := f.a.Revoke("laptop"); err != nil {
		t.Fatal(err)
	}
	pub, _ := newKey(t)
	if _, err := f.a.Enroll(pending.Secret, pub); !errors.Is(err, authority.ErrRevoked) {
		t.Errorf("enroll of revoked invite = %v, want ErrRevoked", err)
	}
	// Revoking by the fingerprint of web2's cert revokes web2.
	if res, err := f.a.Revoke(keep.cert.Fingerprint()); err != nil || res.Host != "web2" || res.Version != 2 {
		t.Errorf("Revoke(fingerprint) = %+v, %v", res, err)
	}
	// A fingerprint of no known cert is blocked on its own; nonsense is not found.
	stray := hex.EncodeToString(bytes.Repeat([]byte{0xab}, 32))
	if res, err := f.a.Revoke(stray); err != nil || res.Host != "" || res.Version != 3 {
		t.Errorf("Revoke(stray fingerprint) = %+v, %v", res, err)
	}
	if _, err := f.a.Revoke("nobody"); !errors.Is(err, authority.ErrNotFound) {
		t.Errorf("Revoke(nobody) = %v, want ErrNotFound", err)
	}
	bl, err := f.a.Blocklist()
	if err != nil {
		t.Fatal(err)
	}
	if err := authority.VerifyBlocklist(&bl, f.a.Pool()); err != nil {
		t.Fatal(err)
	}
	for _, fp := range []string{n.cert.Fingerprint(), keep.cert.Fingerprint(), stray} {
		if !slices.Contains(bl.Fingerprints, fp) {
			t.Errorf("blocklist lacks %s", fp)
		}
	}
	if bl.Version != 3 || len(bl.Fingerprints) != 4 {
		t.Errorf("blocklist version %d with %d entries, want 3 and 4", bl.Version, len(bl.Fingerprints))
	}
}

func TestVerifyBlocklistRejectsTampering(t *testing.T) {
	f := newFixture(t)
	a := f.enroll(t, "a", "servers")
	f.enroll(t, "b", "servers")
	if _, err := f.a.Revoke("a"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.a.Revoke("b"); err != nil {
		t.Fatal(err)
	}
	good, err := f.a.Blocklist()
	if err != nil {
		t.Fatal(err)
	}
	other := certtest.NewCA(t, "other")
	otherPool := cert.NewPool()
	otherPool.AddCA(other.Cert)
	for _, tc := range []struct {
		name   string
		mutate func(b *authority.SignedBlocklist)
		pool   *cert.Pool
	}{
		{"entry removed", func(b *authority.SignedBlocklist) {
			b.Fingerprints = slices.DeleteFunc(b.Fingerprints, func(s string) bool { return s == a.cert.Fingerprint() })
		}, nil},
		{"entry added", func(b *authority.SignedBlocklist) { b.Fingerprints = append(b.Fingerprints, strings.Repeat("f", 64)) }, nil},
		{"version rolled back", func(b *authority.SignedBlocklist) { b.Version-- }, nil},
		{"issued changed", func(b *authority.SignedBlocklist) { b.Issued++ }, nil},
		{"signature flipped", func(b *authority.SignedBlocklist) { b.Signature[0] ^= 1 }, nil},
		{"signature truncated", func(b *authority.SignedBlocklist) { b.Signature = b.Signature[:10] }, nil},
		{"entries out of order", func(b *authority.SignedBlocklist) { slices.Reverse(b.Fingerprints) }, nil},
		{"uppercase entry", func(b *authority.SignedBlocklist) { b.Fingerprints[0] = strings.ToUpper(b.Fingerprints[0]) }, nil},
		{"unknown signer", func(b *authority.SignedBlocklist) { b.CA = other.Cert.Fingerprint() }, nil},
		{"CA not trusted by the receiver", func(*authority.SignedBlocklist) {}, otherPool},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := good
			b.Fingerprints = slices.Clone(good.Fingerprints)
			b.Signature = slices.Clone(good.Signature)
			tc.mutate(&b)
			pool := tc.pool
			if pool == nil {
				pool = f.a.Pool()
			}
			if err := authority.VerifyBlocklist(&b, pool); !errors.Is(err, authority.ErrBlocklistInvalid) {
				t.Fatalf("VerifyBlocklist = %v, want ErrBlocklistInvalid", err)
			}
		})
	}
	if err := authority.VerifyBlocklist(&good, f.a.Pool()); err != nil {
		t.Fatalf("untouched blocklist refused: %v", err)
	}
}

func TestStateSurvivesRestart(t *testing.T) {
	f := newFixture(t)
	n := f.enroll(t, "web1", "servers", "web")
	f.renew(t, n)
	used, _ := f.invite(t, "used", "servers")
	pub, _ := newKey(t)
	if _, err := f.a.Enroll(used.Secret, pub); err != nil {
		t.Fatal(err)
	}
	pending, _ := f.invite(t, "pending", "humans")
	f.enroll(t, "gone", "servers")
	if _, err := f.a.Revoke("gone"); err != nil {
		t.Fatal(err)
	}
	r, _ := f.renewRequest(t, n) // counter 2, kept for a replay after the restart
	if _, err := f.a.Renew(r); err != nil {
		t.Fatal(err)
	}
	beforeHosts, _ := f.a.Hosts()
	beforeBL, _ := f.a.Blocklist()
	beforeAudit := auditLen(t, f)

	f.restart(t)

	afterHosts, err := f.a.Hosts()
	if err != nil {
		t.Fatal(err)
	}
	if len(afterHosts) != len(beforeHosts) {
		t.Fatalf("%d hosts after restart, want %d", len(afterHosts), len(beforeHosts))
	}
	for i := range afterHosts {
		if afterHosts[i].Fingerprint != beforeHosts[i].Fingerprint || afterHosts[i].State != beforeHosts[i].State || afterHosts[i].RenewCounter != beforeHosts[i].RenewCounter {
			t.Errorf("host %s changed over restart: %+v -> %+v", beforeHosts[i].Name, beforeHosts[i], afterHosts[i])
		}
	}
	if bl, _ := f.a.Blocklist(); bl.Version != beforeBL.Version || !slices.Equal(bl.Fingerprints, beforeBL.Fingerprints) {
		t.Errorf("blocklist changed over restart")
	}
	if got := auditLen(t, f); got != beforeAudit {
		t.Errorf("audit has %d entries after restart, want %d", got, beforeAudit)
	}
	if _, err := f.a.Enroll(used.Secret, pub); !errors.Is(err, authority.ErrTokenUsed) {
		t.Errorf("used token after restart = %v", err)
	}
	if _, err := f.a.Renew(r); !errors.Is(err, authority.ErrReplay) {
		t.Errorf("replayed renewal after restart = %v", err)
	}
	if _, err := f.a.Enroll(pending.Secret, pub); err != nil {
		t.Errorf("pending token after restart: %v", err)
	}
	if tr, err := f.a.Tree(); err != nil || len(tr.Children("mesh")) != 2 {
		t.Errorf("CIDR tree after restart: %v", err)
	}
}

func TestAuditRecordsEveryOperationAndNoSecrets(t *testing.T) {
	f := newFixture(t)
	s, _, err := f.a.Invite(authority.InviteRequest{Name: "web1", CIDR: "servers"})
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := authority.ParseToken(s)
	pub, priv := newKey(t)
	e, err := f.a.Enroll(tok.Secret, pub)
	if err != nil {
		t.Fatal(err)
	}
	n := &node{pub: pub, priv: priv, cert: e.Cert, pem: e.CertPEM}
	f.renew(t, n)
	f.a.Enroll(tok.Secret, pub) // refused: must leave no audit entry
	if _, err := f.a.Revoke("web1"); err != nil {
		t.Fatal(err)
	}
	es, _ := f.a.Audit()
	var actions []string
	for _, e := range es {
		actions = append(actions, e.Action)
	}
	if !slices.Equal(actions, []string{"invite", "enroll", "renew", "revoke"}) {
		t.Errorf("audit actions = %v", actions)
	}
	var all bytes.Buffer
	for _, e := range es {
		all.WriteString(e.Detail + e.Host + e.Fingerprint)
	}
	all.Write(f.logs.Bytes())
	for what, secret := range map[string][]byte{
		"token":              []byte(s),
		"secret (raw)":       tok.Secret,
		"secret (base64url)": []byte(base64.RawURLEncoding.EncodeToString(tok.Secret)),
		"secret (hex)":       []byte(hex.EncodeToString(tok.Secret)),
		"node key (hex)":     []byte(hex.EncodeToString(priv)),
		"node key (raw)":     priv,
		"CA key (hex)":       []byte(hex.EncodeToString(f.ca.Key.Seed())),
		"service key (hex)":  []byte(hex.EncodeToString(f.svcPriv)),
	} {
		if bytes.Contains(all.Bytes(), secret) {
			t.Errorf("%s appears in the audit log or logs", what)
		}
	}
}

func TestCARotation(t *testing.T) {
	old := certtest.NewCA(t, "old", certtest.WithValidity(certtest.Now().Add(-time.Hour), certtest.Now().Add(20*24*time.Hour)))
	f := newFixture(t, func(o *authority.Options) {
		o.CAs = []authority.SigningCA{{Cert: old.Cert, Key: old.Key}}
		o.CertDuration = 90 * 24 * time.Hour
	})
	n := f.enroll(t, "web1", "servers")
	if !n.cert.Details.NotAfter.Equal(old.Cert.Details.NotAfter) {
		t.Errorf("host cert NotAfter %v, want capped at the CA's %v", n.cert.Details.NotAfter, old.Cert.Details.NotAfter)
	}
	if w := f.a.Warnings(); len(w) != 1 || !strings.Contains(w[0], "expires in") {
		t.Errorf("Warnings = %v, want one about the CA expiring within 30 days", w)
	}

	// Rotate: the new CA signs, the old one is still trusted.
	newCA := certtest.NewCA(t, "new", certtest.WithValidity(certtest.Now().Add(-time.Hour), certtest.Now().Add(365*24*time.Hour)))
	f.opts.CAs = []authority.SigningCA{{Cert: newCA.Cert, Key: newCA.Key}, {Cert: old.Cert}}
	f.restart(t)
	if w := f.a.Warnings(); len(w) != 0 {
		t.Errorf("Warnings after rotation = %v", w)
	}
	pool, err := cert.NewPoolFromPEM(f.a.Bundle())
	if err != nil || len(pool.CAs()) != 2 {
		t.Fatalf("bundle has %d CAs (%v), want old and new", len(pool.CAs()), err)
	}
	f.renew(t, n)
	if n.cert.Details.Issuer != newCA.Cert.Fingerprint() {
		t.Errorf("renewed cert issued by %s, want the new CA", n.cert.Details.Issuer)
	}
	// Once the old CA has expired it leaves the bundle.
	f.clock.Add(21 * 24 * time.Hour)
	pool, err = cert.NewPoolFromPEM(f.a.Bundle())
	if err != nil || len(pool.CAs()) != 1 {
		t.Fatalf("bundle after old CA expiry has %d CAs (%v)", len(pool.CAs()), err)
	}
}

func TestNewRefusesWithoutAnUnexpiredSigningCA(t *testing.T) {
	expired := certtest.NewCA(t, "expired", certtest.WithValidity(certtest.Now().Add(-2*time.Hour), certtest.Now().Add(-time.Hour)))
	trustOnly := certtest.NewCA(t, "trust-only")
	_, svc, _ := cert.GenerateX25519()
	for name, cas := range map[string][]authority.SigningCA{
		"expired":   {{Cert: expired.Cert, Key: expired.Key}},
		"no key":    {{Cert: trustOnly.Cert}},
		"no CA":     nil,
		"wrong key": {{Cert: trustOnly.Cert, Key: expired.Key}},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := authority.New(authority.Options{Store: authority.NewMemStore(), CAs: cas, ServiceKey: svc}); err == nil {
				t.Fatal("New succeeded")
			}
		})
	}
}

var errDiskFull = errors.New("disk full")

// auditFails is a store whose audit log cannot be written.
type auditFails struct{ authority.Store }

func (s auditFails) Update(fn func(authority.Tx) error) error {
	return s.Store.Update(func(tx authority.Tx) error { return fn(auditFailsTx{tx}) })
}

type auditFailsTx struct{ authority.Tx }

func (auditFailsTx) AppendAudit(authority.AuditEntry) (uint64, error) { return 0, errDiskFull }

func TestNothingIsIssuedUnaudited(t *testing.T) {
	f := newFixture(t)
	tok, _ := f.invite(t, "web1", "servers")
	n := f.enroll(t, "web2", "servers")
	f.opts.Store = auditFails{f.store}
	a, err := authority.New(f.opts)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := newKey(t)
	if _, err := a.Enroll(tok.Secret, pub); !errors.Is(err, errDiskFull) {
		t.Errorf("Enroll with a broken audit log = %v, want the audit error", err)
	}
	r, _ := f.renewRequest(t, n)
	if _, err := a.Renew(r); !errors.Is(err, errDiskFull) {
		t.Errorf("Renew with a broken audit log = %v", err)
	}
	if _, _, err := a.Invite(authority.InviteRequest{Name: "x", CIDR: "servers"}); !errors.Is(err, errDiskFull) {
		t.Errorf("Invite with a broken audit log = %v", err)
	}
	if _, err := a.Revoke("web2"); !errors.Is(err, errDiskFull) {
		t.Errorf("Revoke with a broken audit log = %v", err)
	}
	// Nothing happened: the token and the renewal request are still good.
	if _, err := f.a.Enroll(tok.Secret, pub); err != nil {
		t.Errorf("token consumed by a failed enrollment: %v", err)
	}
	if _, err := f.a.Renew(r); err != nil {
		t.Errorf("renewal request consumed by a failed renewal: %v", err)
	}
}

func TestEnrollRefusesSmallOrderKeys(t *testing.T) {
	f := newFixture(t)
	tok, _ := f.invite(t, "web1", "servers")
	for _, h := range []string{
		"0000000000000000000000000000000000000000000000000000000000000000", // 0
		"0100000000000000000000000000000000000000000000000000000000000000", // 1
		"e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800", // order 8
		"5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157", // order 8
		"ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // p-1
		"edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // p (= 0)
		"eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // p+1 (= 1)
	} {
		k, _ := hex.DecodeString(h)
		if _, err := f.a.Enroll(tok.Secret, k); !errors.Is(err, authority.ErrBadKey) {
			t.Errorf("Enroll with small-order key %s = %v, want ErrBadKey", h[:8], err)
		}
	}
	pub, _ := newKey(t)
	if _, err := f.a.Enroll(tok.Secret, pub); err != nil {
		t.Errorf("token consumed by refused keys: %v", err)
	}
}

// headscale #1885: a host that holds identity A and enrolls with B's token gets B only, and
// A's cert can never renew into B.
func TestEnrollingWithAnotherHostsTokenGivesOnlyThatIdentity(t *testing.T) {
	f := newFixture(t)
	a := f.enroll(t, "alice", "servers", "admin")
	tokB, idB := f.invite(t, "bob", "humans", "humans")
	e, err := f.a.Enroll(tokB.Secret, a.pub) // same key as alice
	if err != nil {
		t.Fatal(err)
	}
	if d := e.Cert.Details; d.Name != "bob" || d.Ips[0] != idB.IP || !slices.Equal(d.Groups, []string{"humans"}) {
		t.Errorf("cert from bob's token = %+v", d)
	}
	f.renew(t, a)
	if d := a.cert.Details; d.Name != "alice" || !slices.Equal(d.Groups, []string{"admin"}) {
		t.Errorf("alice renewed into %+v", d)
	}
}

func TestBlocklistDropsCertsOnceExpiredBeyondTheClockSkew(t *testing.T) {
	f := newFixture(t)
	n := f.enroll(t, "web1", "servers")
	f.clock.Add(50 * time.Minute)
	f.renew(t, n) // the first cert expires 9 minutes from now, the second in an hour
	f.clock.Add(time.Hour + authority.DefaultMaxClockSkew)
	res, err := f.a.Revoke("web1")
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Fingerprints) != 0 {
		t.Errorf("revoke blocked %v: both certs expired more than the clock skew ago", res.Fingerprints)
	}
	f2 := newFixture(t)
	m := f2.enroll(t, "web1", "servers")
	if _, err := f2.a.Revoke("web1"); err != nil {
		t.Fatal(err)
	}
	bl, _ := f2.a.Blocklist()
	if !slices.Contains(bl.Fingerprints, m.cert.Fingerprint()) {
		t.Fatal("fresh revocation missing")
	}
	// Still listed while a node whose clock lags by up to the skew could accept it.
	f2.clock.Add(time.Hour + authority.DefaultMaxClockSkew - 2*time.Minute)
	if bl, _ := f2.a.Blocklist(); len(bl.Fingerprints) != 1 {
		t.Errorf("entry dropped before its cert expired by the clock skew")
	}
	f2.clock.Add(2 * time.Minute)
	if bl, _ := f2.a.Blocklist(); len(bl.Fingerprints) != 0 || bl.Version != 1 {
		t.Errorf("blocklist after expiry + skew = %+v, want empty at version 1", bl)
	}
}

func TestLighthouseAddressIsNeverSuggestedButMayBeChosen(t *testing.T) {
	f := newFixture(t) // lighthouse 10.42.0.1
	if ip, err := f.a.NextFreeIP("servers"); err != nil || ip != netip.MustParseAddr("10.42.0.2") {
		t.Errorf("NextFreeIP = %v, %v; want 10.42.0.2", ip, err)
	}
	_, id, err := f.a.Invite(authority.InviteRequest{Name: "lighthouse1", CIDR: "servers", IP: netip.MustParseAddr("10.42.0.1")})
	if err != nil || id.IP.Addr() != netip.MustParseAddr("10.42.0.1") {
		t.Errorf("explicit lighthouse address: %v, %v", id, err)
	}
}

// TestInviteSubnetsReachEveryCertificate: a gateway invited with subnets gets them in the
// certificate it enrolls with and in every renewal; a replacing invite keeps them; subnets
// inside the overlay, and (with a CA limited to some networks) outside the CA's limits, are
// refused at invite.
func TestInviteSubnetsReachEveryCertificate(t *testing.T) {
	lan := netip.MustParsePrefix("198.19.1.0/24")
	f := newFixture(t)
	s, id, err := f.a.Invite(authority.InviteRequest{Name: "gw1", CIDR: "servers", Subnets: []netip.Prefix{netip.MustParsePrefix("198.19.1.7/24")}})
	if err != nil || len(id.Subnets) != 1 || id.Subnets[0] != lan {
		t.Fatalf("Invite = %+v, %v", id, err)
	}
	tok, err := authority.ParseToken(s)
	if err != nil {
		t.Fatal(err)
	}
	pub, priv := newKey(t)
	e, err := f.a.Enroll(tok.Secret, pub)
	if err != nil {
		t.Fatal(err)
	}
	if got := e.Cert.Details.Subnets; len(got) != 1 || got[0] != lan {
		t.Fatalf("enrolled cert subnets %v", got)
	}
	n := &node{pub: pub, priv: priv, cert: e.Cert, pem: e.CertPEM}
	f.clock.Add(40 * time.Minute)
	f.renew(t, n)
	if got := n.cert.Details.Subnets; len(got) != 1 || got[0] != lan {
		t.Fatalf("renewed cert subnets %v", got)
	}
	if _, id, err := f.a.Invite(authority.InviteRequest{Name: "gw1", Replace: true}); err != nil || len(id.Subnets) != 1 || id.Subnets[0] != lan {
		t.Fatalf("replacing invite = %+v, %v (want the subnets kept)", id, err)
	}
	if _, _, err := f.a.Invite(authority.InviteRequest{Name: "gw2", CIDR: "servers", Subnets: []netip.Prefix{netip.MustParsePrefix("10.42.9.0/24")}}); !errors.Is(err, authority.ErrMalformed) {
		t.Fatalf("subnet inside the overlay: %v", err)
	}

	limited := newFixture(t, func(o *authority.Options) {
		ca := certtest.NewCA(t, "limited", certtest.WithIPs("10.42.0.0/16"), certtest.WithSubnets("198.19.0.0/16"))
		o.CAs = []authority.SigningCA{{Cert: ca.Cert, Key: ca.Key}}
	})
	if _, _, err := limited.a.Invite(authority.InviteRequest{Name: "gw3", CIDR: "servers", Subnets: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}}); !errors.Is(err, cert.ErrConstraint) {
		t.Fatalf("subnet outside the CA's limits: %v, want ErrConstraint", err)
	}
	if _, _, err := limited.a.Invite(authority.InviteRequest{Name: "gw4", CIDR: "servers", Subnets: []netip.Prefix{lan}}); err != nil {
		t.Fatalf("subnet inside the CA's limits: %v", err)
	}
}
