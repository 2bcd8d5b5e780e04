package overlay_test

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/meshnode/meshnode/internal/prom"
	"github.com/meshnode/meshnode/internal/prom/promtest"

	"github.com/meshnode/meshnode/cert/certtest"
	"github.com/meshnode/meshnode/handshake"
	"github.com/meshnode/meshnode/overlay"
	"github.com/meshnode/meshnode/overlay/udp/udptest"
)

// TestCertificateTTLIsExportedAndFollowsTheCertInUse: meshnode_certificate_ttl_seconds
// (Nebula's certificate_ttl_seconds) is the whole seconds left on the certificate the node
// uses, and a new certificate swapped in shows at the next scrape.
func TestCertificateTTLIsExportedAndFollowsTheCertInUse(t *testing.T) {
	now := certtest.Now()
	ca := certtest.NewCA(t, "ca", certtest.WithIPs("10.42.0.0/16"))
	host := ca.Issue(t, "a", "10.42.0.1/16", certtest.WithValidity(now.Add(-time.Hour), now.Add(2*time.Hour)))
	y := fmt.Sprintf("pki:\n  ca: %q\n  cert: %q\n  key: %q\ntun:\n  disabled: true\n", ca.PEM, host.PEM, host.KeyPEM)
	cfg, err := overlay.ParseConfig([]byte(y), "a.yml")
	if err != nil {
		t.Fatal(err)
	}
	pki, err := overlay.LoadPKI(cfg, now)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := udptest.NewNetwork(1).Listen(netip.MustParseAddrPort("198.18.0.1:4242"))
	if err != nil {
		t.Fatal(err)
	}
	reg := prom.NewRegistry()
	node, err := overlay.New(cfg, pki, overlay.Options{Conn: conn, Registerer: reg, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	defer node.Close()
	want := func(secs int) {
		t.Helper()
		exp := fmt.Sprintf(`# HELP meshnode_certificate_ttl_seconds Seconds until this host's certificate expires (negative once expired).
# TYPE meshnode_certificate_ttl_seconds gauge
meshnode_certificate_ttl_seconds %d
`, secs)
		if err := promtest.Compare(reg, exp, "meshnode_certificate_ttl_seconds"); err != nil {
			t.Fatal(err)
		}
	}
	want(7200)

	// A renewed certificate with 30 min and a fraction of a second left: whole seconds.
	renewed := ca.Issue(t, "a", "10.42.0.1/16", certtest.WithValidity(now.Add(-time.Minute), now.Add(30*time.Minute+900*time.Millisecond)))
	creds, err := handshake.NewCredentials(renewed.Cert, renewed.Key)
	if err != nil {
		t.Fatal(err)
	}
	if err := node.SetPKI(&overlay.PKI{Creds: creds, Pool: certtest.Pool(t, ca)}); err != nil {
		t.Fatal(err)
	}
	want(1800)
}
