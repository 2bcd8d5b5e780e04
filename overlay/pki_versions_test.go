package overlay_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/meshnode/meshnode/cert"
	"github.com/meshnode/meshnode/cert/certtest"
	"github.com/meshnode/meshnode/overlay"
)

func loadVersions(t *testing.T, ca *certtest.CA, certPEM, keyPEM []byte, extra string) (*overlay.PKI, error) {
	t.Helper()
	y := fmt.Sprintf("pki:\n  ca: %q\n  cert: %q\n  key: %q\n%s", ca.PEM, certPEM, keyPEM, extra)
	cfg, err := overlay.ParseConfig([]byte(y), "node.yml")
	if err != nil {
		return nil, err
	}
	return overlay.LoadPKI(cfg, time.Now())
}

// pki.cert with a v1 and a v2 certificate (Nebula 1.10+): both are loaded, v1 starts
// handshakes unless pki.initiating_version says 2, and the pair must fit together.
func TestLoadPKIWithV1AndV2Certificates(t *testing.T) {
	ca := certtest.NewCA(t, "ca")
	h1 := ca.Issue(t, "h", "10.1.0.1/16")
	h2 := ca.Issue(t, "h", "10.1.0.1/16", certtest.WithVersion(cert.Version2), certtest.WithKey(h1.Key), certtest.WithIPs("fd00::1/64"))
	both := append(append([]byte(nil), h2.PEM...), h1.PEM...) // order does not matter

	p, err := loadVersions(t, ca, both, h1.KeyPEM, "")
	if err != nil {
		t.Fatal(err)
	}
	if !p.Creds.Has(cert.Version1) || !p.Creds.Has(cert.Version2) || p.Creds.Initiating() != cert.Version1 {
		t.Fatalf("loaded %d certificates, initiating %v", len(p.Creds.Certs()), p.Creds.Initiating())
	}
	if p, err = loadVersions(t, ca, both, h1.KeyPEM, "  initiating_version: 2\n"); err != nil || p.Creds.Initiating() != cert.Version2 {
		t.Fatalf("initiating_version 2: %v", err)
	}
	if p, err = loadVersions(t, ca, h2.PEM, h1.KeyPEM, ""); err != nil || p.Creds.Initiating() != cert.Version2 {
		t.Fatalf("v2 alone defaults to v2: %v", err)
	}

	other := ca.Issue(t, "h", "10.1.0.1/16", certtest.WithVersion(cert.Version2))
	elsewhere := ca.Issue(t, "h", "10.1.0.7/16", certtest.WithVersion(cert.Version2), certtest.WithKey(h1.Key))
	foreign := certtest.NewCA(t, "other").Issue(t, "h", "10.1.0.1/16", certtest.WithVersion(cert.Version2), certtest.WithKey(h1.Key))
	for _, tt := range []struct {
		name, extra, want string
		pem               []byte
	}{
		{"initiating 2 without v2", "  initiating_version: 2\n", "pki.initiating_version: 2 needs a v2 certificate", h1.PEM},
		{"initiating 3", "  initiating_version: 3\n", "pki.initiating_version: 3 is not a certificate version", both},
		{"v2 of another key", "", "v2 certificate: key does not match", append(append([]byte(nil), h1.PEM...), other.PEM...)},
		{"v2 of another network", "", "first network", append(append([]byte(nil), h1.PEM...), elsewhere.PEM...)},
		{"v2 from an untrusted CA", "", "the v2 certificate is not trusted", append(append([]byte(nil), h1.PEM...), foreign.PEM...)},
		{"two v1", "", "more than one v1", append(append([]byte(nil), h1.PEM...), h1.PEM...)},
		{"garbage after the certificates", "", "certificate 3", append(append([]byte(nil), both...), "junk"...)},
	} {
		if _, err := loadVersions(t, ca, tt.pem, h1.KeyPEM, tt.extra); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Fatalf("%s: %v, want an error with %q", tt.name, err, tt.want)
		}
	}
}
