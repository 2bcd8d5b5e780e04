package cert

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"slices"
	"time"
	"unicode/utf8"

	"golang.org/x/crypto/cryptobyte"
	"golang.org/x/crypto/cryptobyte/asn1"
)

// Tags of Nebula's v2 certificate (cert_v2.asn1, AUTOMATIC TAGS: implicit, context-specific).
const (
	tagV2Details   = asn1.Tag(0) | asn1.Tag(0x20) | asn1.Tag(0x80) // constructed
	tagV2Curve     = asn1.Tag(1) | asn1.Tag(0x80)
	tagV2PublicKey = asn1.Tag(2) | asn1.Tag(0x80)
	tagV2Signature = asn1.Tag(3) | asn1.Tag(0x80)

	tagV2Name           = asn1.Tag(0) | asn1.Tag(0x80)
	tagV2Networks       = asn1.Tag(1) | asn1.Tag(0x20) | asn1.Tag(0x80)
	tagV2UnsafeNetworks = asn1.Tag(2) | asn1.Tag(0x20) | asn1.Tag(0x80)
	tagV2Groups         = asn1.Tag(3) | asn1.Tag(0x20) | asn1.Tag(0x80)
	tagV2IsCA           = asn1.Tag(4) | asn1.Tag(0x80)
	tagV2NotBefore      = asn1.Tag(5) | asn1.Tag(0x80)
	tagV2NotAfter       = asn1.Tag(6) | asn1.Tag(0x80)
	tagV2Issuer         = asn1.Tag(7) | asn1.Tag(0x80)
)

const (
	// MaxCertificateV2Size bounds an encoded v2 certificate, as in Nebula.
	MaxCertificateV2Size = 65536
	// MaxNameLengthV2 bounds a v2 name and each group (a DNS name's limit).
	MaxNameLengthV2 = 253
	// curve25519 is the curve byte that enters the v2 signature and fingerprint; it is
	// the ASN.1 default and therefore never written.
	curve25519 = 0
)

// comparePrefix is the v2 network order: address (every IPv4 before any IPv6), then length.
func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

// validateV2 applies Nebula 1.11's rules for v2 details (with its messages), on signing and
// on parsing alike. Networks must already be sorted; sortedV2 sorts copies before this.
func (d *Details) validateV2() error {
	if len(d.Name) == 0 || len(d.Name) > MaxNameLengthV2 {
		return fmt.Errorf("name must be 1 to %d bytes, is %d", MaxNameLengthV2, len(d.Name))
	}
	if !utf8.ValidString(d.Name) {
		return fmt.Errorf("name is not valid UTF-8")
	}
	for _, g := range d.Groups {
		if g == "" || !utf8.ValidString(g) {
			return fmt.Errorf("group %q is empty or not valid UTF-8", g)
		}
	}
	if len(d.PublicKey) != keyLen {
		return fmt.Errorf("public key is %d bytes, want %d", len(d.PublicKey), keyLen)
	}
	if !d.IsCA && len(d.Ips) == 0 {
		return fmt.Errorf("non-CA certificate must contain at least 1 network")
	}
	var has4, has6 bool
	for i, n := range d.Ips {
		switch {
		case !n.IsValid():
			return fmt.Errorf("invalid network: %s", n)
		case n.Addr().IsUnspecified():
			return fmt.Errorf("non-CA certificates must not use the zero address as a network: %s", n)
		case n.Addr().Zone() != "":
			return fmt.Errorf("networks may not contain zones: %s", n)
		case n.Addr().Is4In6():
			return fmt.Errorf("4in6 networks are not allowed: %s", n)
		case i > 0 && comparePrefix(d.Ips[i-1], n) == 0:
			return fmt.Errorf("duplicate network detected: %s", n)
		case i > 0 && comparePrefix(d.Ips[i-1], n) > 0:
			return fmt.Errorf("networks are not sorted: %s after %s", n, d.Ips[i-1])
		}
		has4 = has4 || n.Addr().Is4()
		has6 = has6 || n.Addr().Is6()
	}
	for i, n := range d.Subnets {
		switch {
		case !n.IsValid():
			return fmt.Errorf("invalid unsafe network: %s", n)
		case n.Addr().Zone() != "":
			return fmt.Errorf("unsafe networks may not contain zones: %s", n)
		case !d.IsCA && n.Addr().Is6() && !has6:
			return fmt.Errorf("IPv6 unsafe networks require an IPv6 address assignment: %s", n)
		case !d.IsCA && n.Addr().Is4() && !has4:
			return fmt.Errorf("IPv4 unsafe networks require an IPv4 address assignment: %s", n)
		case i > 0 && comparePrefix(d.Subnets[i-1], n) == 0:
			return fmt.Errorf("duplicate network detected: %s", n)
		case i > 0 && comparePrefix(d.Subnets[i-1], n) > 0:
			return fmt.Errorf("unsafe networks are not sorted: %s after %s", n, d.Subnets[i-1])
		}
	}
	if d.Issuer != "" {
		if b, err := hex.DecodeString(d.Issuer); err != nil || len(b) != issuerLen {
			return fmt.Errorf("issuer %q is not a hex SHA-256 fingerprint", d.Issuer)
		}
	}
	return nil
}

// sortedV2 returns d with sorted copies of its networks, as Nebula sorts them before
// encoding; the caller's slices are left alone.
func (d *Details) sortedV2() Details {
	s := *d
	s.Ips = slices.Clone(d.Ips)
	s.Subnets = slices.Clone(d.Subnets)
	slices.SortFunc(s.Ips, comparePrefix)
	slices.SortFunc(s.Subnets, comparePrefix)
	return s
}

// marshalV2 returns the DER of the details element ([0] constructed, tag and length
// included), which is what v2 signatures and fingerprints cover.
func (d *Details) marshalV2() ([]byte, error) {
	s := d.sortedV2()
	if err := s.validateV2(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	var b cryptobyte.Builder
	b.AddASN1(tagV2Details, func(b *cryptobyte.Builder) {
		b.AddASN1(tagV2Name, func(b *cryptobyte.Builder) { b.AddBytes([]byte(s.Name)) })
		addNetworks(b, tagV2Networks, s.Ips)
		addNetworks(b, tagV2UnsafeNetworks, s.Subnets)
		if len(s.Groups) > 0 {
			b.AddASN1(tagV2Groups, func(b *cryptobyte.Builder) {
				for _, g := range s.Groups {
					b.AddASN1(asn1.UTF8String, func(b *cryptobyte.Builder) { b.AddBytes([]byte(g)) })
				}
			})
		}
		if s.IsCA {
			b.AddASN1(tagV2IsCA, func(b *cryptobyte.Builder) { b.AddUint8(0xff) })
		}
		b.AddASN1Int64WithTag(s.NotBefore.Unix(), tagV2NotBefore)
		b.AddASN1Int64WithTag(s.NotAfter.Unix(), tagV2NotAfter)
		if s.Issuer != "" {
			iss, _ := hex.DecodeString(s.Issuer) // checked by validateV2
			b.AddASN1(tagV2Issuer, func(b *cryptobyte.Builder) { b.AddBytes(iss) })
		}
	})
	out, err := b.Bytes()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return out, nil
}

// addNetworks writes each prefix as netip.Prefix.MarshalBinary does: address bytes, then
// the prefix length. An empty list is omitted (OPTIONAL).
func addNetworks(b *cryptobyte.Builder, tag asn1.Tag, ps []netip.Prefix) {
	if len(ps) == 0 {
		return
	}
	b.AddASN1(tag, func(b *cryptobyte.Builder) {
		for _, p := range ps {
			b.AddASN1(asn1.OCTET_STRING, func(b *cryptobyte.Builder) {
				b.AddBytes(p.Addr().AsSlice())
				b.AddUint8(uint8(p.Bits()))
			})
		}
	})
}

// signedBytesV2 is what a v2 signature covers: details ‖ curve ‖ public key.
func signedBytesV2(details, pub []byte) []byte {
	b := make([]byte, 0, len(details)+1+len(pub))
	b = append(b, details...)
	b = append(b, curve25519)
	return append(b, pub...)
}

// fingerprintV2 is hex(SHA-256(details ‖ curve ‖ public key ‖ signature)), Nebula's v2 name
// for a certificate; it is not the hash of the whole encoding.
func (c *Certificate) fingerprintV2() (string, error) {
	d, err := c.Details.marshalV2()
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(append(signedBytesV2(d, c.Details.PublicKey), c.Signature...))
	return hexString(sum[:]), nil
}

// marshalV2 writes SEQUENCE { details, [2] public key, [3] signature }; the handshake form
// (withKey false) leaves the key out, the receiver takes it from the Noise static key. The
// curve is Curve25519, the default, so it is never written.
func (c *Certificate) marshalV2(withKey bool) ([]byte, error) {
	d, err := c.Details.marshalV2()
	if err != nil {
		return nil, err
	}
	if len(c.Signature) == 0 {
		return nil, fmt.Errorf("%w: a v2 certificate must be signed before it is encoded", ErrInvalid)
	}
	var b cryptobyte.Builder
	b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddBytes(d)
		if withKey {
			b.AddASN1(tagV2PublicKey, func(b *cryptobyte.Builder) { b.AddBytes(c.Details.PublicKey) })
		}
		b.AddASN1(tagV2Signature, func(b *cryptobyte.Builder) { b.AddBytes(c.Signature) })
	})
	return b.Bytes()
}

// unmarshalV2 decodes a v2 certificate strictly: DER only, fields in order, no trailing or
// unknown data, networks sorted and unique, and the details must re-encode to the bytes
// received, so a signature or fingerprint over our encoding equals Nebula's over the
// received bytes. With publicKey set it reads the handshake form, which must carry no key.
func unmarshalV2(b []byte, publicKey []byte) (*Certificate, error) {
	if len(b) == 0 || len(b) > MaxCertificateV2Size {
		return nil, malformed("v2 certificate is %d bytes, want 1 to %d", len(b), MaxCertificateV2Size)
	}
	in := cryptobyte.String(b)
	var body cryptobyte.String
	if !in.ReadASN1(&body, asn1.SEQUENCE) {
		return nil, malformed("v2 certificate is not a DER SEQUENCE")
	}
	if !in.Empty() {
		return nil, malformed("%d bytes after the v2 certificate", len(in))
	}
	var rawDetails cryptobyte.String
	if !body.ReadASN1Element(&rawDetails, tagV2Details) {
		return nil, malformed("v2 certificate has no details")
	}
	if body.PeekASN1Tag(tagV2Curve) {
		var curve cryptobyte.String
		if body.ReadASN1(&curve, tagV2Curve) && len(curve) == 1 && curve[0] == 1 {
			return nil, fmt.Errorf("%w: %w", ErrMalformed, ErrUnsupportedCurve)
		}
		return nil, malformed("v2 curve field is not a non-default curve")
	}
	var pub cryptobyte.String
	if publicKey != nil {
		if body.PeekASN1Tag(tagV2PublicKey) {
			return nil, malformed("handshake certificate has unexpected pubkey present")
		}
		pub = cryptobyte.String(publicKey)
	} else if !body.ReadASN1(&pub, tagV2PublicKey) {
		return nil, malformed("v2 certificate has no public key")
	}
	if len(pub) != keyLen {
		return nil, malformed("public key is %d bytes, want %d", len(pub), keyLen)
	}
	var sig cryptobyte.String
	if !body.ReadASN1(&sig, tagV2Signature) {
		return nil, malformed("v2 certificate has no signature")
	}
	if len(sig) != signatureLen {
		return nil, malformed("signature is %d bytes, want %d", len(sig), signatureLen)
	}
	if !body.Empty() {
		return nil, malformed("unknown or out-of-order field after the v2 signature")
	}
	d, err := unmarshalDetailsV2(rawDetails)
	if err != nil {
		return nil, err
	}
	d.PublicKey = bytes.Clone(pub)
	if err := d.validateV2(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	// The catch-all for canonical form (DER allows no alternatives, but this also covers
	// anything the field checks above missed).
	again, err := d.marshalV2()
	if err != nil || !bytes.Equal(again, rawDetails) {
		return nil, malformed("v2 details are not in canonical DER")
	}
	return &Certificate{Details: d, Signature: bytes.Clone(sig), version: Version2}, nil
}

func unmarshalDetailsV2(raw cryptobyte.String) (Details, error) {
	var d Details
	var in cryptobyte.String
	if !raw.ReadASN1(&in, tagV2Details) {
		return d, malformed("v2 details are not DER")
	}
	var name cryptobyte.String
	if !in.ReadASN1(&name, tagV2Name) {
		return d, malformed("v2 details have no name")
	}
	if len(name) == 0 || len(name) > MaxNameLengthV2 || !utf8.Valid(name) {
		return d, malformed("name must be 1 to %d bytes of UTF-8", MaxNameLengthV2)
	}
	d.Name = string(name)
	var err error
	if d.Ips, err = readNetworks(&in, tagV2Networks, "networks"); err != nil {
		return d, err
	}
	if d.Subnets, err = readNetworks(&in, tagV2UnsafeNetworks, "unsafe networks"); err != nil {
		return d, err
	}
	var seq cryptobyte.String
	var found bool
	if !in.ReadOptionalASN1(&seq, &found, tagV2Groups) {
		return d, malformed("groups are not DER")
	}
	if found && seq.Empty() {
		return d, malformed("groups are present but empty")
	}
	for !seq.Empty() {
		var g cryptobyte.String
		if !seq.ReadASN1(&g, asn1.UTF8String) || len(g) == 0 || !utf8.Valid(g) {
			return d, malformed("a group is not a non-empty UTF8String")
		}
		d.Groups = append(d.Groups, string(g))
	}
	var isCA cryptobyte.String
	if !in.ReadOptionalASN1(&isCA, &found, tagV2IsCA) {
		return d, malformed("isCA is not DER")
	}
	if found {
		// DER: TRUE is 0xff, and the DEFAULT (false) is never written.
		if len(isCA) != 1 || isCA[0] != 0xff {
			return d, malformed("isCA is not DER TRUE")
		}
		d.IsCA = true
	}
	var nb, na int64
	if !in.ReadASN1Int64WithTag(&nb, tagV2NotBefore) {
		return d, malformed("notBefore is missing or not a minimal 64-bit INTEGER")
	}
	if !in.ReadASN1Int64WithTag(&na, tagV2NotAfter) {
		return d, malformed("notAfter is missing or not a minimal 64-bit INTEGER")
	}
	d.NotBefore, d.NotAfter = time.Unix(nb, 0).UTC(), time.Unix(na, 0).UTC()
	var issuer cryptobyte.String
	if !in.ReadOptionalASN1(&issuer, &found, tagV2Issuer) {
		return d, malformed("issuer is not DER")
	}
	if found {
		if len(issuer) != issuerLen {
			return d, malformed("issuer is %d bytes, want %d", len(issuer), issuerLen)
		}
		d.Issuer = hexString(issuer)
	}
	// Nebula 1.11 would skip fields added after issuer; no such field is defined, and one we
	// cannot interpret must not be vouched for by our re-encoding, so it is refused.
	if !in.Empty() || !raw.Empty() {
		return d, malformed("unknown or out-of-order field in v2 details")
	}
	return d, nil
}

func readNetworks(in *cryptobyte.String, tag asn1.Tag, what string) ([]netip.Prefix, error) {
	var seq cryptobyte.String
	var found bool
	if !in.ReadOptionalASN1(&seq, &found, tag) {
		return nil, malformed("%s are not DER", what)
	}
	if found && seq.Empty() {
		return nil, malformed("%s are present but empty", what)
	}
	var out []netip.Prefix
	for !seq.Empty() {
		var v cryptobyte.String
		if !seq.ReadASN1(&v, asn1.OCTET_STRING) {
			return nil, malformed("%s entry is not an OCTET STRING", what)
		}
		var addr netip.Addr
		switch len(v) {
		case 5:
			addr = netip.AddrFrom4([4]byte(v[:4]))
		case 17:
			addr = netip.AddrFrom16([16]byte(v[:16]))
		default:
			return nil, malformed("%s entry is %d bytes, want 5 or 17", what, len(v))
		}
		bits := int(v[len(v)-1])
		if bits > addr.BitLen() {
			return nil, malformed("%s entry has prefix length %d for a %d-bit address", what, bits, addr.BitLen())
		}
		out = append(out, netip.PrefixFrom(addr, bits))
	}
	return out, nil
}
