package cert

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"slices"
	"sync/atomic"
	"time"
)

// Details is the signed part of a certificate.
type Details struct {
	Name string
	// Ips holds host addresses with their mask length, not masked (10.99.0.1/16).
	// Ips[0] is the VPN identity. On a CA they are constraints.
	Ips []netip.Prefix
	// Subnets are the networks the host may route for (network address + mask).
	Subnets []netip.Prefix
	Groups  []string
	// NotBefore and NotAfter have unix-second precision on the wire.
	NotBefore time.Time
	NotAfter  time.Time
	// PublicKey is X25519 on a host, Ed25519 on a CA; 32 bytes either way.
	PublicKey []byte
	IsCA      bool
	// Issuer is the lowercase hex fingerprint of the signing CA; empty on a self-signed CA.
	Issuer string
}

// Certificate is a v1 Nebula certificate. Treat it as immutable once shared: Fingerprint
// caches its result, and although the cache notices changes, concurrent mutation is a race.
type Certificate struct {
	Details   Details
	Signature []byte

	cache *fpCache
}

// fpCache remembers the fingerprint together with a deep copy of what it was computed
// from, so a caller that edits the exported fields never gets a stale fingerprint.
type fpCache struct {
	p atomic.Pointer[fpEntry]
}

type fpEntry struct {
	details     Details
	signature   []byte
	fingerprint string
}

// Fingerprint is the lowercase hex SHA-256 of the canonical encoding, which is what Nebula
// uses to name CAs (the Issuer field) and to blocklist certificates. It returns "" if the
// certificate cannot be encoded (see Marshal).
func (c *Certificate) Fingerprint() string {
	if c.cache != nil {
		if e := c.cache.p.Load(); e != nil &&
			bytes.Equal(e.signature, c.Signature) && e.details.equal(&c.Details) {
			return e.fingerprint
		}
	}
	b, err := c.Marshal()
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(b)
	fp := hex.EncodeToString(sum[:])
	if c.cache != nil {
		c.cache.p.Store(&fpEntry{details: c.Details.clone(), signature: bytes.Clone(c.Signature), fingerprint: fp})
	}
	return fp
}

func (d *Details) clone() Details {
	n := *d
	n.Ips = slices.Clone(d.Ips)
	n.Subnets = slices.Clone(d.Subnets)
	n.Groups = slices.Clone(d.Groups)
	n.PublicKey = bytes.Clone(d.PublicKey)
	return n
}

// equal compares what the encoding depends on (times at second precision).
func (d *Details) equal(o *Details) bool {
	return d.Name == o.Name && slices.Equal(d.Ips, o.Ips) && slices.Equal(d.Subnets, o.Subnets) &&
		slices.Equal(d.Groups, o.Groups) && d.NotBefore.Unix() == o.NotBefore.Unix() &&
		d.NotAfter.Unix() == o.NotAfter.Unix() && bytes.Equal(d.PublicKey, o.PublicKey) &&
		d.IsCA == o.IsCA && d.Issuer == o.Issuer
}

// VpnIP is the host's overlay identity, Ips[0]; the zero Addr if the cert has no IPs.
func (c *Certificate) VpnIP() netip.Addr {
	if len(c.Details.Ips) == 0 {
		return netip.Addr{}
	}
	return c.Details.Ips[0].Addr()
}

// Expired reports whether now lies outside [NotBefore, NotAfter]; both boundary seconds
// are valid, as in Nebula.
func (c *Certificate) Expired(now time.Time) bool {
	return now.Before(c.Details.NotBefore) || now.After(c.Details.NotAfter)
}

// CheckSignature reports whether Signature is pub's Ed25519 signature over the canonical
// encoding of Details (never over received bytes, see the package doc).
func (c *Certificate) CheckSignature(pub ed25519.PublicKey) bool {
	if len(pub) != ed25519.PublicKeySize || len(c.Signature) != ed25519.SignatureSize {
		return false
	}
	d, err := c.Details.marshal(true)
	if err != nil {
		return false
	}
	return ed25519.Verify(pub, d, c.Signature)
}

// Sign sets Signature to caKey's signature over the canonical encoding of Details.
func (c *Certificate) Sign(caKey ed25519.PrivateKey) error {
	if len(caKey) != ed25519.PrivateKeySize {
		return fmt.Errorf("%w: signing key is %d bytes, want %d", ErrInvalid, len(caKey), ed25519.PrivateKeySize)
	}
	d, err := c.Details.marshal(true)
	if err != nil {
		return err
	}
	c.Signature = ed25519.Sign(caKey, d)
	if c.cache == nil {
		c.cache = new(fpCache)
	}
	return nil
}

// VerifyPrivateKey checks that key is the private half of PublicKey: an X25519 key
// (32 bytes) for a host, an Ed25519 key (64 bytes, seed ‖ public) for a CA.
func (c *Certificate) VerifyPrivateKey(key []byte) error {
	if c.Details.IsCA {
		if len(key) != ed25519.PrivateKeySize {
			return fmt.Errorf("%w: CA key is %d bytes, want %d", ErrKeyMismatch, len(key), ed25519.PrivateKeySize)
		}
		// Derive from the seed rather than trusting the stored public half.
		pub := ed25519.NewKeyFromSeed(key[:ed25519.SeedSize]).Public().(ed25519.PublicKey)
		if !bytes.Equal(pub, c.Details.PublicKey) || !bytes.Equal(key[ed25519.SeedSize:], c.Details.PublicKey) {
			return ErrKeyMismatch
		}
		return nil
	}
	pub, err := x25519Public(key)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrKeyMismatch, err)
	}
	if !bytes.Equal(pub, c.Details.PublicKey) {
		return ErrKeyMismatch
	}
	return nil
}

func x25519Public(priv []byte) ([]byte, error) {
	k, err := ecdh.X25519().NewPrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("x25519 private key: %w", err)
	}
	return k.PublicKey().Bytes(), nil
}

// CheckConstraints returns an error wrapping ErrConstraint if c does not fit inside ca:
// validity, groups, IPs and subnets, checked in Nebula's order with its messages.
func (c *Certificate) CheckConstraints(ca *Certificate) error {
	if ca.Details.NotAfter.Before(c.Details.NotAfter) {
		return withMsg(ErrConstraint, "certificate expires after signing certificate")
	}
	if ca.Details.NotBefore.After(c.Details.NotBefore) {
		return withMsg(ErrConstraint, "certificate is valid before the signing certificate")
	}
	if len(ca.Details.Groups) > 0 {
		for _, g := range c.Details.Groups {
			if !slices.Contains(ca.Details.Groups, g) {
				return withMsg(ErrConstraint, "certificate contained a group not present on the signing ca: "+g)
			}
		}
	}
	if len(ca.Details.Ips) > 0 {
		for _, ip := range c.Details.Ips {
			if !prefixWithin(ip, ca.Details.Ips) {
				return withMsg(ErrConstraint, "certificate contained an ip assignment outside the limitations of the signing ca: "+ip.String())
			}
		}
	}
	if len(ca.Details.Subnets) > 0 {
		for _, s := range c.Details.Subnets {
			if !prefixWithin(s, ca.Details.Subnets) {
				return withMsg(ErrConstraint, "certificate contained a subnet assignment outside the limitations of the signing ca: "+s.String())
			}
		}
	}
	return nil
}

// prefixWithin: p's address lies in one of the CA networks and p is at least as narrow.
func prefixWithin(p netip.Prefix, cas []netip.Prefix) bool {
	for _, ca := range cas {
		if ca.Contains(p.Addr()) && p.Bits() >= ca.Bits() {
			return true
		}
	}
	return false
}
