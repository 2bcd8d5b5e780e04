package cert_test

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshnode/meshnode/cert"
	"github.com/meshnode/meshnode/cert/certtest"
)

var (
	t0 = time.Unix(1_800_000_000, 0).UTC()
	t1 = t0.Add(1000 * time.Hour)
)

func TestVerifyFollowsNebulaOrderAndMessages(t *testing.T) {
	ca := certtest.NewCA(t, "ca", certtest.WithValidity(t0, t1),
		certtest.WithGroups("web", "ssh"), certtest.WithIPs("10.42.0.0/16", "10.43.0.0/24"),
		certtest.WithSubnets("192.168.0.0/16"))
	other := certtest.NewCA(t, "other", certtest.WithValidity(t0, t1))
	mid := t0.Add(time.Hour)

	type tc struct {
		name    string
		cert    func() *cert.Certificate
		now     time.Time
		block   func(p *cert.Pool, c *cert.Certificate)
		want    error
		wantMsg string
	}
	good := ca.NewHost(t, "good", "10.42.0.5/16", "web")
	cases := []tc{
		{name: "valid host", cert: func() *cert.Certificate { return good.Cert }, now: mid},
		{name: "valid host with IPs, subnets and narrower masks", now: mid, cert: func() *cert.Certificate {
			return ca.Issue(t, "multi", "10.42.1.5/24", certtest.WithIPs("10.43.0.9/30"),
				certtest.WithSubnets("192.168.3.0/24"), certtest.WithGroups("web", "ssh")).Cert
		}},
		{name: "blocked host", cert: func() *cert.Certificate { return good.Cert }, now: mid,
			block: func(p *cert.Pool, c *cert.Certificate) { p.Block(c.Fingerprint()) },
			want:  cert.ErrBlocked, wantMsg: "certificate has been blocked"},
		{name: "blocked issuing CA", cert: func() *cert.Certificate { return good.Cert }, now: mid,
			block: func(p *cert.Pool, _ *cert.Certificate) { p.Block(ca.Cert.Fingerprint()) },
			want:  cert.ErrBlocked},
		{name: "blocklist checked before expiry", cert: func() *cert.Certificate { return good.Cert }, now: t1.Add(time.Hour),
			block: func(p *cert.Pool, c *cert.Certificate) { p.Block(c.Fingerprint()) },
			want:  cert.ErrBlocked},
		{name: "no issuer", cert: func() *cert.Certificate { return ca.Cert }, now: mid,
			want: cert.ErrNoIssuer, wantMsg: "no issuer in certificate"},
		{name: "unknown CA", cert: func() *cert.Certificate { return other.NewHost(t, "x", "10.42.0.6/16").Cert }, now: mid,
			want: cert.ErrUnknownCA, wantMsg: "could not find ca for the certificate"},
		{name: "root expired", cert: func() *cert.Certificate { return good.Cert }, now: t1.Add(time.Second),
			want: cert.ErrRootExpired, wantMsg: "root certificate is expired"},
		{name: "not yet valid", cert: func() *cert.Certificate {
			return ca.Issue(t, "x", "10.42.0.7/16", certtest.WithValidity(mid, t1)).Cert
		}, now: mid.Add(-time.Second), want: cert.ErrExpired, wantMsg: "certificate is expired"},
		{name: "expired", cert: func() *cert.Certificate {
			return ca.Issue(t, "x", "10.42.0.7/16", certtest.WithValidity(t0, mid)).Cert
		}, now: mid.Add(time.Second), want: cert.ErrExpired},
		{name: "NotBefore second is valid", cert: func() *cert.Certificate {
			return ca.Issue(t, "x", "10.42.0.7/16", certtest.WithValidity(mid, t1)).Cert
		}, now: mid},
		{name: "NotAfter second is valid", cert: func() *cert.Certificate {
			return ca.Issue(t, "x", "10.42.0.7/16", certtest.WithValidity(t0, mid)).Cert
		}, now: mid},
		{name: "signed by another CA naming ours", cert: func() *cert.Certificate {
			return other.Issue(t, "x", "10.42.0.8/16", certtest.WithIssuer(ca.Cert.Fingerprint())).Cert
		}, now: mid, want: cert.ErrSignatureMismatch, wantMsg: "certificate signature did not match"},
		{name: "tampered details", cert: func() *cert.Certificate {
			c := ca.NewHost(t, "x", "10.42.0.9/16", "web").Cert
			c.Details.Groups = []string{"ssh"}
			return c
		}, now: mid, want: cert.ErrSignatureMismatch},
		{name: "outlives CA", cert: func() *cert.Certificate {
			return ca.Issue(t, "x", "10.42.0.9/16", certtest.WithValidity(t0, t1.Add(time.Second))).Cert
		}, now: mid, want: cert.ErrConstraint, wantMsg: "certificate expires after signing certificate"},
		{name: "predates CA", cert: func() *cert.Certificate {
			return ca.Issue(t, "x", "10.42.0.9/16", certtest.WithValidity(t0.Add(-time.Second), t1)).Cert
		}, now: mid, want: cert.ErrConstraint, wantMsg: "certificate is valid before the signing certificate"},
		{name: "group outside CA", cert: func() *cert.Certificate { return ca.NewHost(t, "x", "10.42.0.9/16", "web", "db").Cert },
			now: mid, want: cert.ErrConstraint, wantMsg: "certificate contained a group not present on the signing ca: db"},
		{name: "IP outside CA", cert: func() *cert.Certificate { return ca.NewHost(t, "x", "10.50.0.20/16").Cert },
			now: mid, want: cert.ErrConstraint, wantMsg: "certificate contained an ip assignment outside the limitations of the signing ca: 10.50.0.20/16"},
		{name: "IP mask wider than CA network", cert: func() *cert.Certificate { return ca.NewHost(t, "x", "10.42.0.21/8").Cert },
			now: mid, want: cert.ErrConstraint, wantMsg: "certificate contained an ip assignment outside the limitations of the signing ca: 10.42.0.21/8"},
		{name: "second IP outside CA", cert: func() *cert.Certificate {
			return ca.Issue(t, "x", "10.42.0.5/16", certtest.WithIPs("10.43.1.1/24")).Cert
		}, now: mid, want: cert.ErrConstraint},
		{name: "subnet outside CA", cert: func() *cert.Certificate {
			return ca.Issue(t, "x", "10.42.0.5/16", certtest.WithSubnets("172.16.0.0/24")).Cert
		}, now: mid, want: cert.ErrConstraint, wantMsg: "certificate contained a subnet assignment outside the limitations of the signing ca: 172.16.0.0/24"},
		{name: "subnet wider than CA", cert: func() *cert.Certificate {
			return ca.Issue(t, "x", "10.42.0.5/16", certtest.WithSubnets("192.168.0.0/15")).Cert
		}, now: mid, want: cert.ErrConstraint},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			pool := certtest.Pool(t, ca, certtest.NewCA(t, "unrelated"))
			crt := c.cert()
			if c.block != nil {
				c.block(pool, crt)
			}
			signer, err := pool.Verify(crt, c.now)
			if c.want == nil {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if signer.Fingerprint() != ca.Cert.Fingerprint() {
					t.Errorf("returned CA %s, want %s", signer.Details.Name, ca.Cert.Details.Name)
				}
				return
			}
			if !errors.Is(err, c.want) {
				t.Fatalf("error %v, want %v", err, c.want)
			}
			if c.wantMsg != "" && err.Error() != c.wantMsg {
				t.Errorf("message %q, want %q", err.Error(), c.wantMsg)
			}
		})
	}
}

func TestVerifyRejectsHandshakeCertWithAnotherStaticKey(t *testing.T) {
	ca := certtest.NewCA(t, "ca")
	h := ca.NewHost(t, "h", "10.42.0.1/16")
	imp := ca.NewHost(t, "impostor", "10.42.0.2/16")
	hs, err := h.Cert.MarshalHandshake()
	if err != nil {
		t.Fatal(err)
	}
	pool := certtest.Pool(t, ca)
	got, err := cert.UnmarshalHandshake(hs, imp.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Verify(got, time.Now()); !errors.Is(err, cert.ErrSignatureMismatch) {
		t.Errorf("cert with another static key: %v, want signature mismatch", err)
	}
	got, err = cert.UnmarshalHandshake(hs, h.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Verify(got, time.Now()); err != nil {
		t.Errorf("genuine handshake cert refused: %v", err)
	}
	// The blocklist, keyed by the file's fingerprint, must catch the handshake form.
	pool.Block(h.Cert.Fingerprint())
	if _, err := pool.Verify(got, time.Now()); !errors.Is(err, cert.ErrBlocked) {
		t.Errorf("blocked cert via handshake: %v", err)
	}
}

func TestPoolFromPEMAppliesNebulaLoadingRules(t *testing.T) {
	now := certtest.Now()
	clock := func() time.Time { return now }
	live := certtest.NewCA(t, "live")
	expired := certtest.NewCA(t, "old", certtest.WithValidity(now.Add(-2*time.Hour), now.Add(-time.Hour)))
	host := live.NewHost(t, "h", "10.0.0.1/8")
	notSelf := live.Issue(t, "fake-ca", "10.0.0.2/8")
	notSelf.Cert.Details.IsCA = true // signed by live, so its self-signature fails
	if err := notSelf.Cert.Sign(live.Key); err != nil {
		t.Fatal(err)
	}
	notSelfPEM, _ := notSelf.Cert.MarshalPEM()

	cases := []struct {
		name     string
		pem      []byte
		want     error
		wantCAs  int
		warnings int
	}{
		{name: "one live CA", pem: live.PEM, wantCAs: 1},
		{name: "expired CA kept with a warning", pem: certtest.Bundle(expired, live), wantCAs: 2, warnings: 1},
		{name: "only expired CAs", pem: expired.PEM, want: cert.ErrRootExpired},
		{name: "host cert in bundle", pem: append(append([]byte{}, live.PEM...), host.PEM...), want: cert.ErrNotCA},
		{name: "not self-signed", pem: notSelfPEM, want: cert.ErrNotSelfSigned},
		{name: "garbage after a CA", pem: append(append([]byte{}, live.PEM...), "junk"...), want: cert.ErrMalformed},
		{name: "key file instead of a CA", pem: live.KeyPEM, want: cert.ErrMalformed},
		{name: "empty", pem: []byte("\n"), want: cert.ErrMalformed},
		{name: "same CA twice", pem: certtest.Bundle(live, live), wantCAs: 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, err := cert.NewPoolFromPEMWithClock(c.pem, clock)
			if !errors.Is(err, c.want) {
				t.Fatalf("error %v, want %v", err, c.want)
			}
			if c.want != nil {
				return
			}
			if n := len(p.CAs()); n != c.wantCAs {
				t.Errorf("%d CAs, want %d", n, c.wantCAs)
			}
			if n := len(p.Warnings()); n != c.warnings {
				t.Errorf("warnings %q, want %d", p.Warnings(), c.warnings)
			}
		})
	}
	_, err := cert.NewPoolFromPEMWithClock(append(certtest.Bundle(live), host.PEM...), clock)
	if err == nil || !strings.HasPrefix(err.Error(), "h: ") {
		t.Errorf("error should name the offending cert: %v", err)
	}
}

func TestPoolIsSafeForConcurrentUse(t *testing.T) {
	ca := certtest.NewCA(t, "ca")
	h := ca.NewHost(t, "h", "10.0.0.1/8")
	p := certtest.Pool(t, ca)
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 50 {
				if i == 0 {
					p.Block(strings.Repeat("0", j))
					_ = p.AddCA(ca.Cert)
				}
				_, _ = p.Verify(h.Cert, time.Now())
				_ = p.CAs()
			}
		}()
	}
	wg.Wait()
	if _, err := p.Verify(h.Cert, time.Now()); err != nil {
		t.Fatal(err)
	}
}

// Ed25519 signatures are not malleable in Go (S must be below the group order L), so a
// re-encoded signature cannot yield a second valid cert with another fingerprint.
func TestSignatureWithMalleatedScalarIsRejected(t *testing.T) {
	ca := certtest.NewCA(t, "ca")
	h := ca.NewHost(t, "h", "10.0.0.1/8")
	// L = 2^252 + 27742317777372353535851937790883648493, little-endian.
	l := [32]byte{0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
		0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10}
	sig := append([]byte(nil), h.Cert.Signature...)
	carry := 0
	for i := range 32 {
		v := int(sig[32+i]) + int(l[i]) + carry
		sig[32+i], carry = byte(v), v>>8
	}
	if carry != 0 {
		// A valid signature has S < L, so S+L < 2^254: this cannot happen.
		t.Fatal("S+L overflowed 256 bits: the signature's S was not reduced")
	}
	m := &cert.Certificate{Details: h.Cert.Details, Signature: sig}
	if m.CheckSignature(ca.Cert.Details.PublicKey) {
		t.Fatal("signature with S+L accepted")
	}
	if _, err := certtest.Pool(t, ca).Verify(m, time.Now()); !errors.Is(err, cert.ErrSignatureMismatch) {
		t.Errorf("Verify: %v", err)
	}
}

func TestFingerprintIsSafeForConcurrentUse(t *testing.T) {
	ca := certtest.NewCA(t, "ca")
	b, _ := ca.NewHost(t, "h", "10.0.0.1/8").Cert.Marshal()
	c, err := cert.Unmarshal(b)
	if err != nil {
		t.Fatal(err)
	}
	want := c.Fingerprint()
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				if got := c.Fingerprint(); got != want {
					t.Errorf("fingerprint %s, want %s", got, want)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// TestRevalidateChecksWhatCanChange: a certificate Verify accepted is refused by Revalidate
// once it or its CA is blocked, either expires or the CA leaves the pool, with Verify's
// errors; the signature is not checked again (it depends only on the certificate and the
// CA its Issuer names).
func TestRevalidateChecksWhatCanChange(t *testing.T) {
	ca := certtest.NewCA(t, "ca", certtest.WithValidity(t0, t1))
	h := ca.Issue(t, "h", "10.42.0.5/16", certtest.WithValidity(t0, t0.Add(10*time.Hour)))
	mid := t0.Add(time.Hour)
	pool := certtest.Pool(t, ca)
	if _, err := pool.Verify(h.Cert, mid); err != nil {
		t.Fatal(err)
	}
	if got, err := pool.Revalidate(h.Cert, h.Cert.Fingerprint(), mid); err != nil || got.Fingerprint() != ca.Cert.Fingerprint() {
		t.Fatalf("Revalidate of a valid certificate: %v, %v", got, err)
	}
	if _, err := pool.Revalidate(h.Cert, h.Cert.Fingerprint(), t0.Add(11*time.Hour)); !errors.Is(err, cert.ErrExpired) {
		t.Errorf("expired: %v", err)
	}
	if _, err := pool.Revalidate(h.Cert, h.Cert.Fingerprint(), t1.Add(time.Hour)); !errors.Is(err, cert.ErrRootExpired) {
		t.Errorf("CA expired: %v", err)
	}
	if _, err := certtest.Pool(t, certtest.NewCA(t, "other")).Revalidate(h.Cert, h.Cert.Fingerprint(), mid); !errors.Is(err, cert.ErrUnknownCA) {
		t.Errorf("CA not trusted: %v", err)
	}
	caBlocked := certtest.Pool(t, ca)
	caBlocked.Block(ca.Cert.Fingerprint())
	if _, err := caBlocked.Revalidate(h.Cert, h.Cert.Fingerprint(), mid); !errors.Is(err, cert.ErrBlocked) {
		t.Errorf("CA blocked: %v", err)
	}
	pool.Block(h.Cert.Fingerprint())
	if _, err := pool.Revalidate(h.Cert, h.Cert.Fingerprint(), mid); !errors.Is(err, cert.ErrBlocked) {
		t.Errorf("blocked: %v", err)
	}
}
