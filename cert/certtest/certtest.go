// Package certtest makes CAs and host certificates for tests in other packages, so a test
// can say "a CA with groups web and ssh, and a host 10.42.0.1/16 in group web" in one line.
//
// Certificates are signed without checking the CA's constraints, so tests can also build
// certificates that verification must refuse. Failures call t.Fatal.
package certtest

import (
	"crypto/ed25519"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/curve25519"

	"github.com/meshnode/meshnode/cert"
)

// CA is a self-signed CA with its key, ready to issue hosts.
type CA struct {
	Cert   *cert.Certificate
	Key    ed25519.PrivateKey
	PEM    []byte // the certificate, as a .crt file holds it
	KeyPEM []byte // the key, as a .key file holds it
}

// Host is a certificate with its X25519 key pair.
type Host struct {
	Cert      *cert.Certificate
	Key       []byte // X25519 private key
	PublicKey []byte
	PEM       []byte
	KeyPEM    []byte
}

type options struct {
	notBefore, notAfter time.Time
	groups              []string
	ips                 []string
	subnets             []string
	issuer              string
	hasIssuer           bool
	version             cert.Version
	key                 []byte
}

// Option adjusts a CA or host certificate.
type Option func(*options)

// WithValidity sets NotBefore and NotAfter (truncated to seconds).
func WithValidity(notBefore, notAfter time.Time) Option {
	return func(o *options) { o.notBefore, o.notAfter = notBefore, notAfter }
}

// WithGroups sets the groups (constraints on a CA).
func WithGroups(groups ...string) Option {
	return func(o *options) { o.groups = groups }
}

// WithIPs sets the IPs in CIDR form (constraints on a CA; on a host they follow the first IP).
func WithIPs(cidrs ...string) Option {
	return func(o *options) { o.ips = cidrs }
}

// WithSubnets sets the subnets in CIDR form (constraints on a CA).
func WithSubnets(cidrs ...string) Option {
	return func(o *options) { o.subnets = cidrs }
}

// WithIssuer overrides the Issuer field, for certificates that name a CA they were not
// signed by.
func WithIssuer(fingerprint string) Option {
	return func(o *options) { o.issuer, o.hasIssuer = fingerprint, true }
}

// WithVersion makes a v1 or v2 certificate (default v1). A host's version does not follow
// its CA's: a v2 CA may issue v1 hosts and the reverse, as in Nebula 1.11.
func WithVersion(v cert.Version) Option {
	return func(o *options) { o.version = v }
}

// WithKey issues the host certificate for an existing X25519 private key, to give one host
// a v1 and a v2 certificate as Nebula 1.10+ allows (they must share the key).
func WithKey(priv []byte) Option {
	return func(o *options) { o.key = priv }
}

// Now is the reference time of default validity windows, truncated to the second.
func Now() time.Time { return time.Now().Truncate(time.Second) }

// NewCA makes a self-signed CA valid from an hour ago for a year, unless options say
// otherwise.
func NewCA(t testing.TB, name string, opts ...Option) *CA {
	t.Helper()
	now := Now()
	o := options{notBefore: now.Add(-time.Hour), notAfter: now.Add(365 * 24 * time.Hour)}
	for _, f := range opts {
		f(&o)
	}
	pub, priv, err := cert.GenerateEd25519()
	if err != nil {
		t.Fatal(err)
	}
	c := &cert.Certificate{Details: cert.Details{
		Name:      name,
		Ips:       prefixes(t, o.ips),
		Subnets:   prefixes(t, o.subnets),
		Groups:    o.groups,
		NotBefore: o.notBefore.Truncate(time.Second),
		NotAfter:  o.notAfter.Truncate(time.Second),
		PublicKey: pub,
		IsCA:      true,
		Issuer:    o.issuer,
	}}
	setVersion(t, c, o.version)
	if err := c.Sign(priv); err != nil {
		t.Fatal(err)
	}
	return &CA{Cert: c, Key: priv, PEM: mustPEM(t, c), KeyPEM: cert.MarshalEd25519PrivateKey(priv)}
}

// NewHost issues a host certificate for ip (CIDR, e.g. "10.42.0.1/16"; "" for a cert with
// no IPs) in the given groups, valid from the CA's NotBefore to one second before its
// NotAfter, like nebula-cert sign.
func (ca *CA) NewHost(t testing.TB, name, ip string, groups ...string) *Host {
	t.Helper()
	return ca.Issue(t, name, ip, WithGroups(groups...))
}

// Issue is NewHost with options: WithIPs adds IPs after ip, WithSubnets, WithGroups,
// WithValidity and WithIssuer apply to the host certificate.
func (ca *CA) Issue(t testing.TB, name, ip string, opts ...Option) *Host {
	t.Helper()
	o := options{
		notBefore: ca.Cert.Details.NotBefore,
		notAfter:  ca.Cert.Details.NotAfter.Add(-time.Second),
		issuer:    ca.Cert.Fingerprint(),
	}
	for _, f := range opts {
		f(&o)
	}
	pub, priv, err := cert.GenerateX25519()
	if err != nil {
		t.Fatal(err)
	}
	if o.key != nil {
		priv = append([]byte(nil), o.key...)
		if pub, err = curve25519.X25519(priv, curve25519.Basepoint); err != nil {
			t.Fatal(err)
		}
	}
	c := &cert.Certificate{Details: cert.Details{
		Name:      name,
		Ips:       prefixes(t, append([]string{ip}, o.ips...)),
		Subnets:   prefixes(t, o.subnets),
		Groups:    o.groups,
		NotBefore: o.notBefore.Truncate(time.Second),
		NotAfter:  o.notAfter.Truncate(time.Second),
		PublicKey: pub,
		Issuer:    o.issuer,
	}}
	setVersion(t, c, o.version)
	if err := c.Sign(ca.Key); err != nil {
		t.Fatal(err)
	}
	return &Host{Cert: c, Key: priv, PublicKey: pub, PEM: mustPEM(t, c), KeyPEM: cert.MarshalX25519PrivateKey(priv)}
}

// Pool returns a pool trusting the given CAs.
func Pool(t testing.TB, cas ...*CA) *cert.Pool {
	t.Helper()
	p := cert.NewPool()
	for _, ca := range cas {
		if err := p.AddCA(ca.Cert); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

// Bundle concatenates the CAs' PEMs, as a pki.ca file holds them.
func Bundle(cas ...*CA) []byte {
	var b []byte
	for _, ca := range cas {
		b = append(b, ca.PEM...)
	}
	return b
}

func prefixes(t testing.TB, cidrs []string) []netip.Prefix {
	t.Helper()
	var out []netip.Prefix
	for _, s := range cidrs {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			t.Fatalf("certtest: %v", err)
		}
		out = append(out, p)
	}
	return out
}

func setVersion(t testing.TB, c *cert.Certificate, v cert.Version) {
	t.Helper()
	if v == 0 {
		return
	}
	if err := c.SetVersion(v); err != nil {
		t.Fatal(err)
	}
}

func mustPEM(t testing.TB, c *cert.Certificate) []byte {
	t.Helper()
	b, err := c.MarshalPEM()
	if err != nil {
		t.Fatal(err)
	}
	return b
}
