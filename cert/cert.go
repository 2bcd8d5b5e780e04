package cert

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"slices"
	"sync/atomic"
	"time"

	"github.com/meshnode/meshnode/internal/x25519"
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

// Version is a certificate format: Version1 (protobuf, Nebula 1.0+) or Version2 (ASN.1 DER,
// Nebula 1.10+).
type Version uint8

const (
	Version1 Version = 1
	Version2 Version = 2
)

func (v Version) String() string { return fmt.Sprintf("v%d", uint8(v)) }

// Certificate is a Nebula certificate, v1 unless SetVersion or the decoder made it v2. Treat
// it as immutable once shared: Fingerprint caches its result, and although the cache notices
// changes, concurrent mutation is a race.
//
// The two versions share Details: a v2 certificate's networks are Details.Ips (sorted, IPv4
// and IPv6, each an address with its prefix length) and its unsafe networks Details.Subnets.
type Certificate struct {
	Details   Details
	Signature []byte

	version Version // 0 means Version1, so literals stay v1
	cache   *fpCache
}

// Version is the certificate's format.
func (c *Certificate) Version() Version {
	if c.version == 0 {
		return Version1
	}
	return c.version
}

// SetVersion chooses the format the certificate is encoded, signed and fingerprinted in.
// Set it before Sign.
func (c *Certificate) SetVersion(v Version) error {
	if v != Version1 && v != Version2 {
		return fmt.Errorf("%w: %d", ErrUnknownVersion, v)
	}
	c.version = v
	return nil
}

// Networks are the host's overlay addresses with their prefix lengths (on a CA, the
// networks it may sign for): Details.Ips, in either version.
func (c *Certificate) Networks() []netip.Prefix { return c.Details.Ips }

// UnsafeNetworks are the networks the host may route for (on a CA, a limit): Details.Subnets.
func (c *Certificate) UnsafeNetworks() []netip.Prefix { return c.Details.Subnets }

// VpnAddrs are the host's overlay addresses, one per network. A v2 certificate may hold an
// IPv4 and an IPv6 address; a v1 certificate holds IPv4 only.
func (c *Certificate) VpnAddrs() []netip.Addr {
	out := make([]netip.Addr, 0, len(c.Details.Ips))
	for _, p := range c.Details.Ips {
		out = append(out, p.Addr())
	}
	return out
}

// fpCache remembers the fingerprint together with a deep copy of what it was computed
// from, so a caller that edits the exported fields never gets a stale fingerprint.
type fpCache struct {
	p atomic.Pointer[fpEntry]
}

type fpEntry struct {
	version     Version
	details     Details
	signature   []byte
	fingerprint string
}

// Uncached returns a copy of c sharing its fields (slices and strings alike) that keeps no
// fingerprint cache, for a holder that keeps the fingerprint itself and never edits the
// certificate, such as a tunnel's peer: the cache holds a deep copy of the details, about as
// large as the certificate, so a lighthouse of 100,000 hosts saved some 40 MB with it.
// Fingerprint on the copy computes the fingerprint each time.
func (c *Certificate) Uncached() *Certificate {
	return &Certificate{Details: c.Details, Signature: c.Signature, version: c.version}
}

// Fingerprint is what Nebula uses to name CAs (the Issuer field) and to blocklist
// certificates: for v1 the lowercase hex SHA-256 of the canonical encoding, for v2 that of
// details ‖ curve ‖ public key ‖ signature. It returns "" if the certificate cannot be
// encoded (see Marshal).
func (c *Certificate) Fingerprint() string {
	if c.cache != nil {
		if e := c.cache.p.Load(); e != nil && e.version == c.Version() &&
			bytes.Equal(e.signature, c.Signature) && e.details.equal(&c.Details) {
			return e.fingerprint
		}
	}
	var fp string
	if c.Version() == Version2 {
		var err error
		if fp, err = c.fingerprintV2(); err != nil {
			return ""
		}
	} else {
		b, err := c.Marshal()
		if err != nil {
			return ""
		}
		sum := sha256.Sum256(b)
		fp = hexString(sum[:])
	}
	if c.cache != nil {
		c.cache.p.Store(&fpEntry{version: c.Version(), details: c.Details.clone(), signature: bytes.Clone(c.Signature), fingerprint: fp})
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

// VpnIP is the host's overlay identity, Ips[0]; the zero Addr if the cert has no IPs. In a
// v2 certificate the networks are sorted, so it is the lowest address, IPv4 before IPv6.
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
// encoding of Details (never over received bytes, see the package doc); in v2 the details
// are followed by the curve byte and the public key.
func (c *Certificate) CheckSignature(pub ed25519.PublicKey) bool {
	if len(pub) != ed25519.PublicKeySize || len(c.Signature) != ed25519.SignatureSize {
		return false
	}
	d, err := c.signedBytes()
	if err != nil {
		return false
	}
	return ed25519.Verify(pub, d, c.Signature)
}

func (c *Certificate) signedBytes() ([]byte, error) {
	if c.Version() == Version2 {
		d, err := c.Details.marshalV2()
		if err != nil {
			return nil, err
		}
		return signedBytesV2(d, c.Details.PublicKey), nil
	}
	return c.Details.marshal(true)
}

// Sign sets Signature to caKey's signature over the canonical encoding of Details. For v2 it
// first sorts Details.Ips and Details.Subnets in place, as the encoding does.
func (c *Certificate) Sign(caKey ed25519.PrivateKey) error {
	if len(caKey) != ed25519.PrivateKeySize {
		return fmt.Errorf("%w: signing key is %d bytes, want %d", ErrInvalid, len(caKey), ed25519.PrivateKeySize)
	}
	if c.Version() == Version2 {
		slices.SortFunc(c.Details.Ips, comparePrefix)
		slices.SortFunc(c.Details.Subnets, comparePrefix)
	}
	d, err := c.signedBytes()
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

// x25519Public is X25519(priv, 9), by the handshake's fixed-base multiplication (the same
// result as crypto/ecdh's, for 42 % of its instructions).
func x25519Public(priv []byte) ([]byte, error) {
	pub, err := x25519.PublicKey(priv)
	if err != nil {
		return nil, fmt.Errorf("x25519 private key: %w", err)
	}
	return pub, nil
}

// CheckConstraints returns an error wrapping ErrConstraint if c does not fit inside ca:
// validity, groups, IPs and subnets, checked in Nebula's order with its messages (1.6.1's
// when both are v1, 1.11's otherwise). The versions need not match, as in Nebula 1.11.
func (c *Certificate) CheckConstraints(ca *Certificate) error {
	ipWord, subnetWord := "an ip", "a subnet"
	if c.Version() == Version2 || ca.Version() == Version2 {
		ipWord, subnetWord = "a network", "an unsafe network"
	}
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
				return withMsg(ErrConstraint, "certificate contained "+ipWord+" assignment outside the limitations of the signing ca: "+ip.String())
			}
		}
	}
	if len(ca.Details.Subnets) > 0 {
		for _, s := range c.Details.Subnets {
			if !prefixWithin(s, ca.Details.Subnets) {
				return withMsg(ErrConstraint, "certificate contained "+subnetWord+" assignment outside the limitations of the signing ca: "+s.String())
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

// hexString is hex.EncodeToString with one allocation instead of two for fingerprints
// (32 bytes): every tunnel keeps its peer's issuer and fingerprint strings.
func hexString(b []byte) string {
	if len(b) > 32 {
		return hex.EncodeToString(b)
	}
	var buf [64]byte
	n := hex.Encode(buf[:], b)
	return string(buf[:n])
}
