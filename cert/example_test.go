package cert_test

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/meshnode/meshnode/cert"
)

// A CA signs a host; a pool that trusts the CA verifies the host until it is blocklisted.
func Example() {
	caPub, caKey, _ := cert.GenerateEd25519()
	start := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	ca := &cert.Certificate{Details: cert.Details{
		Name: "Acme CA", IsCA: true, PublicKey: caPub,
		Ips:       []netip.Prefix{netip.MustParsePrefix("10.42.0.0/16")},
		NotBefore: start, NotAfter: start.AddDate(1, 0, 0),
	}}
	_ = ca.Sign(caKey)

	hostPub, _, _ := cert.GenerateX25519()
	host := &cert.Certificate{Details: cert.Details{
		Name: "web1", PublicKey: hostPub, Issuer: ca.Fingerprint(),
		Ips:       []netip.Prefix{netip.MustParsePrefix("10.42.1.5/16")},
		Groups:    []string{"web"},
		NotBefore: start, NotAfter: ca.Details.NotAfter.Add(-time.Second),
	}}
	_ = host.Sign(caKey)

	pool := cert.NewPool()
	_ = pool.AddCA(ca)
	signer, err := pool.Verify(host, start.Add(time.Hour))
	fmt.Println(signer.Details.Name, err, host.VpnIP())

	pool.Block(host.Fingerprint())
	_, err = pool.Verify(host, start.Add(time.Hour))
	fmt.Println(err, errors.Is(err, cert.ErrBlocked))
	// Output:
	// Acme CA <nil> 10.42.1.5
	// certificate has been blocked true
}
