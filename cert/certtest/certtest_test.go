package certtest_test

import (
	"errors"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/meshnode/meshnode/cert"
	"github.com/meshnode/meshnode/cert/certtest"
)

func TestNewCAAndNewHostProduceVerifiableMatchingPairs(t *testing.T) {
	ca := certtest.NewCA(t, "ca", certtest.WithGroups("web"), certtest.WithIPs("10.42.0.0/16"),
		certtest.WithSubnets("192.168.0.0/16"))
	h := ca.NewHost(t, "h", "10.42.0.1/16", "web")
	if _, err := certtest.Pool(t, ca).Verify(h.Cert, time.Now()); err != nil {
		t.Fatalf("host does not verify: %v", err)
	}
	if err := h.Cert.VerifyPrivateKey(h.Key); err != nil {
		t.Error(err)
	}
	if err := ca.Cert.VerifyPrivateKey(ca.Key); err != nil {
		t.Error(err)
	}
	if got := ca.Cert.Details; !got.IsCA || !slices.Equal(got.Groups, []string{"web"}) ||
		got.Ips[0] != netip.MustParsePrefix("10.42.0.0/16") || got.Subnets[0] != netip.MustParsePrefix("192.168.0.0/16") {
		t.Errorf("CA details %+v", got)
	}
	if !h.Cert.Details.NotAfter.Equal(ca.Cert.Details.NotAfter.Add(-time.Second)) {
		t.Error("host does not end one second before its CA")
	}
	for name, b := range map[string][]byte{"CA": ca.PEM, "host": h.PEM} {
		if c, _, err := cert.UnmarshalPEM(b); err != nil || c.Details.Name == "" {
			t.Errorf("%s PEM: %v", name, err)
		}
	}
	if k, _, err := cert.UnmarshalX25519PrivateKey(h.KeyPEM); err != nil || h.Cert.VerifyPrivateKey(k) != nil {
		t.Errorf("host KeyPEM: %v", err)
	}
	if k, _, err := cert.UnmarshalEd25519PrivateKey(ca.KeyPEM); err != nil || ca.Cert.VerifyPrivateKey(k) != nil {
		t.Errorf("CA KeyPEM: %v", err)
	}
	if p, err := cert.NewPoolFromPEM(certtest.Bundle(ca, certtest.NewCA(t, "b"))); err != nil || len(p.CAs()) != 2 {
		t.Errorf("Bundle: %v", err)
	}
}

func TestIssueOptionsShapeTheHost(t *testing.T) {
	start := time.Unix(1_900_000_000, 0)
	ca := certtest.NewCA(t, "ca", certtest.WithValidity(start, start.Add(time.Hour)))
	h := ca.Issue(t, "h", "10.0.0.1/8", certtest.WithIPs("10.1.0.1/16"), certtest.WithSubnets("192.168.1.0/24"),
		certtest.WithGroups("a", "b"), certtest.WithValidity(start.Add(time.Minute), start.Add(2*time.Minute)))
	d := h.Cert.Details
	if len(d.Ips) != 2 || d.Ips[1].String() != "10.1.0.1/16" || d.Subnets[0].String() != "192.168.1.0/24" ||
		!slices.Equal(d.Groups, []string{"a", "b"}) || !d.NotBefore.Equal(start.Add(time.Minute)) ||
		!d.NotAfter.Equal(start.Add(2*time.Minute)) {
		t.Errorf("details %+v", d)
	}
	if h.Cert.VpnIP() != netip.MustParseAddr("10.0.0.1") {
		t.Errorf("VpnIP %v", h.Cert.VpnIP())
	}
	if noIP := ca.NewHost(t, "x", ""); len(noIP.Cert.Details.Ips) != 0 {
		t.Error("empty ip should give a cert without IPs")
	}
	trusted := certtest.NewCA(t, "trusted")
	liar := certtest.NewCA(t, "other").Issue(t, "x", "10.0.0.2/8", certtest.WithIssuer(trusted.Cert.Fingerprint()))
	_, err := certtest.Pool(t, trusted).Verify(liar.Cert, time.Now())
	if !errors.Is(err, cert.ErrSignatureMismatch) {
		t.Errorf("WithIssuer cert: %v", err)
	}
}
