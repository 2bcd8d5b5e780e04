package cert

import (
	"encoding/hex"
	"fmt"
	"net/netip"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
)

// Field numbers of RawNebulaCertificate and RawNebulaCertificateDetails (NEBULA-WIRE §1.1).
const (
	fieldDetails   protowire.Number = 1
	fieldSignature protowire.Number = 2

	fieldName      protowire.Number = 1
	fieldIps       protowire.Number = 2
	fieldSubnets   protowire.Number = 3
	fieldGroups    protowire.Number = 4
	fieldNotBefore protowire.Number = 5
	fieldNotAfter  protowire.Number = 6
	fieldPublicKey protowire.Number = 7
	fieldIsCA      protowire.Number = 8
	fieldIssuer    protowire.Number = 9
)

const (
	keyLen       = 32 // X25519 and Ed25519 public keys
	signatureLen = 64 // Ed25519
	issuerLen    = 32 // SHA-256 of the CA
)

// Marshal returns the canonical encoding of the certificate (the body of a .crt PEM block):
// protobuf for v1, DER for v2.
func (c *Certificate) Marshal() ([]byte, error) {
	if c.Version() == Version2 {
		return c.marshalV2(true)
	}
	return c.marshal(true)
}

// MarshalHandshake returns the canonical encoding without the public key, which is what a
// node sends in its handshake: the receiver restores the key from the Noise static key. For
// v1 that drops field 7; for v2 it is SEQUENCE { details, signature }, and the handshake
// payload must say CertVersion 2 (see UnmarshalHandshakeVersion).
func (c *Certificate) MarshalHandshake() ([]byte, error) {
	if c.Version() == Version2 {
		return c.marshalV2(false)
	}
	return c.marshal(false)
}

func (c *Certificate) marshal(withKey bool) ([]byte, error) {
	d, err := c.Details.marshal(withKey)
	if err != nil {
		return nil, err
	}
	b := make([]byte, 0, len(d)+len(c.Signature)+8)
	// Details is always written, even when empty, as proto3 does for a set message field.
	b = protowire.AppendTag(b, fieldDetails, protowire.BytesType)
	b = protowire.AppendBytes(b, d)
	if len(c.Signature) > 0 {
		b = protowire.AppendTag(b, fieldSignature, protowire.BytesType)
		b = protowire.AppendBytes(b, c.Signature)
	}
	return b, nil
}

func (d *Details) marshal(withKey bool) ([]byte, error) {
	if !utf8.ValidString(d.Name) {
		return nil, fmt.Errorf("%w: name is not valid UTF-8", ErrInvalid)
	}
	var issuer []byte
	if d.Issuer != "" {
		var err error
		if issuer, err = hex.DecodeString(d.Issuer); err != nil {
			return nil, fmt.Errorf("%w: issuer is not hex: %w", ErrInvalid, err)
		}
	}
	b := make([]byte, 0, 128+len(d.Name)+16*(len(d.Ips)+len(d.Subnets)))
	if d.Name != "" {
		b = protowire.AppendTag(b, fieldName, protowire.BytesType)
		b = protowire.AppendString(b, d.Name)
	}
	var err error
	if b, err = appendPrefixes(b, fieldIps, d.Ips); err != nil {
		return nil, err
	}
	if b, err = appendPrefixes(b, fieldSubnets, d.Subnets); err != nil {
		return nil, err
	}
	for _, g := range d.Groups {
		if !utf8.ValidString(g) {
			return nil, fmt.Errorf("%w: group %q is not valid UTF-8", ErrInvalid, g)
		}
		b = protowire.AppendTag(b, fieldGroups, protowire.BytesType)
		b = protowire.AppendString(b, g)
	}
	if v := d.NotBefore.Unix(); v != 0 {
		b = protowire.AppendTag(b, fieldNotBefore, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(v))
	}
	if v := d.NotAfter.Unix(); v != 0 {
		b = protowire.AppendTag(b, fieldNotAfter, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(v))
	}
	if withKey && len(d.PublicKey) > 0 {
		b = protowire.AppendTag(b, fieldPublicKey, protowire.BytesType)
		b = protowire.AppendBytes(b, d.PublicKey)
	}
	if d.IsCA {
		b = protowire.AppendTag(b, fieldIsCA, protowire.VarintType)
		b = protowire.AppendVarint(b, 1)
	}
	if len(issuer) > 0 {
		b = protowire.AppendTag(b, fieldIssuer, protowire.BytesType)
		b = protowire.AppendBytes(b, issuer)
	}
	return b, nil
}

// appendPrefixes writes (address, mask) uint32 pairs as one packed field.
func appendPrefixes(b []byte, num protowire.Number, ps []netip.Prefix) ([]byte, error) {
	if len(ps) == 0 {
		return b, nil
	}
	size := 0
	for _, p := range ps {
		if !p.IsValid() || !p.Addr().Is4() {
			return nil, fmt.Errorf("%w: %v is not an IPv4 prefix", ErrInvalid, p)
		}
		size += protowire.SizeVarint(uint64(addrToUint32(p.Addr()))) +
			protowire.SizeVarint(uint64(bitsToMask(p.Bits())))
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(size))
	for _, p := range ps {
		b = protowire.AppendVarint(b, uint64(addrToUint32(p.Addr())))
		b = protowire.AppendVarint(b, uint64(bitsToMask(p.Bits())))
	}
	return b, nil
}

func addrToUint32(a netip.Addr) uint32 {
	v := a.As4()
	return uint32(v[0])<<24 | uint32(v[1])<<16 | uint32(v[2])<<8 | uint32(v[3])
}

func uint32ToAddr(v uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func bitsToMask(bits int) uint32 {
	if bits <= 0 {
		return 0
	}
	return ^uint32(0) << (32 - bits)
}

// maskToBits returns the prefix length of a contiguous mask, or false for masks like
// 255.0.255.0 that no prefix length describes.
func maskToBits(m uint32) (int, bool) {
	ones := 0
	for ones < 32 && m&(1<<(31-ones)) != 0 {
		ones++
	}
	return ones, bitsToMask(ones) == m
}

// Unmarshal decodes a certificate of either version, accepting only the canonical encoding
// that Marshal produces, so that any accepted bytes re-marshal to themselves. The version is
// told by the first byte: a v2 certificate is a DER SEQUENCE (0x30), which is never how a
// canonical v1 certificate starts (0x0a, its details field).
func Unmarshal(b []byte) (*Certificate, error) {
	if len(b) > 0 && b[0] == 0x30 {
		return UnmarshalV2(b)
	}
	return UnmarshalV1(b)
}

// UnmarshalV1 decodes a v1 certificate only (a NEBULA CERTIFICATE PEM block).
func UnmarshalV1(b []byte) (*Certificate, error) {
	c, err := unmarshal(b, true)
	if err != nil {
		return nil, err
	}
	c.cache = new(fpCache)
	return c, nil
}

// UnmarshalV2 decodes a v2 certificate only (a NEBULA CERTIFICATE V2 PEM block).
func UnmarshalV2(b []byte) (*Certificate, error) {
	c, err := unmarshalV2(b, nil)
	if err != nil {
		return nil, err
	}
	c.cache = new(fpCache)
	return c, nil
}

// UnmarshalHandshakeVersion decodes the certificate of a handshake whose payload names
// version v (Nebula's CertVersion; 0, absent, means v1) and sets its public key to
// publicKey, the peer's Noise static key. A v2 handshake certificate that carries a public
// key is refused, as Nebula 1.11 refuses it.
func UnmarshalHandshakeVersion(v Version, b []byte, publicKey []byte) (*Certificate, error) {
	switch v {
	case 0, Version1:
		return UnmarshalHandshake(b, publicKey)
	case Version2:
		if len(publicKey) != keyLen {
			return nil, fmt.Errorf("%w: peer public key is %d bytes, want %d", ErrMalformed, len(publicKey), keyLen)
		}
		c, err := unmarshalV2(b, publicKey)
		if err != nil {
			return nil, err
		}
		c.cache = new(fpCache)
		return c, nil
	}
	return nil, fmt.Errorf("%w: %d", ErrUnknownVersion, v)
}

// UnmarshalHandshake decodes the certificate a peer sent in its handshake, which normally
// lacks the public key, and sets PublicKey to publicKey (the peer's Noise static key). A
// public key present in the bytes is ignored and overwritten, as Nebula does; so the
// signature can only verify if the peer holds the key that was signed.
func UnmarshalHandshake(b []byte, publicKey []byte) (*Certificate, error) {
	if len(publicKey) != keyLen {
		return nil, fmt.Errorf("%w: peer public key is %d bytes, want %d", ErrMalformed, len(publicKey), keyLen)
	}
	c, err := unmarshal(b, false)
	if err != nil {
		return nil, err
	}
	c.Details.PublicKey = append([]byte(nil), publicKey...)
	c.cache = new(fpCache)
	return c, nil
}

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
}

// reader walks canonical protobuf: every varint (tags and lengths too) must be minimal.
type reader struct {
	b   []byte
	off int
}

func (r *reader) done() bool { return r.off == len(r.b) }

func (r *reader) varint() (uint64, error) {
	v, n := protowire.ConsumeVarint(r.b[r.off:])
	if n < 0 {
		return 0, malformed("bad varint at offset %d: %v", r.off, protowire.ParseError(n))
	}
	if n != protowire.SizeVarint(v) {
		return 0, malformed("non-minimal varint at offset %d", r.off)
	}
	r.off += n
	return v, nil
}

func (r *reader) tag() (protowire.Number, protowire.Type, error) {
	start := r.off
	v, err := r.varint()
	if err != nil {
		return 0, 0, err
	}
	num, typ := protowire.DecodeTag(v)
	if num < protowire.MinValidNumber || num > protowire.MaxValidNumber {
		return 0, 0, malformed("invalid field number at offset %d", start)
	}
	return num, typ, nil
}

func (r *reader) bytes() ([]byte, error) {
	start := r.off
	n, err := r.varint()
	if err != nil {
		return nil, err
	}
	if n > uint64(len(r.b)-r.off) {
		return nil, malformed("length %d at offset %d overruns the input", n, start)
	}
	v := r.b[r.off : r.off+int(n)]
	r.off += int(n)
	return v, nil
}

func unmarshal(b []byte, requireKey bool) (*Certificate, error) {
	r := &reader{b: b}
	var c Certificate
	var last protowire.Number
	sawDetails := false
	for !r.done() {
		num, typ, err := r.tag()
		if err != nil {
			return nil, err
		}
		if num <= last {
			return nil, malformed("field %d out of order or repeated", num)
		}
		last = num
		if typ != protowire.BytesType {
			return nil, malformed("field %d has wire type %d", num, typ)
		}
		v, err := r.bytes()
		if err != nil {
			return nil, err
		}
		switch num {
		case fieldDetails:
			if c.Details, err = unmarshalDetails(v, requireKey); err != nil {
				return nil, err
			}
			sawDetails = true
		case fieldSignature:
			if len(v) != signatureLen {
				return nil, malformed("signature is %d bytes, want %d", len(v), signatureLen)
			}
			c.Signature = append([]byte(nil), v...)
		default:
			return nil, malformed("unknown field %d", num)
		}
	}
	if !sawDetails {
		return nil, malformed("no details")
	}
	return &c, nil
}

func unmarshalDetails(b []byte, requireKey bool) (Details, error) {
	r := &reader{b: b}
	var d Details
	var last protowire.Number
	var sawNotBefore, sawNotAfter bool
	wantType := func(num protowire.Number) protowire.Type {
		switch num {
		case fieldNotBefore, fieldNotAfter, fieldIsCA:
			return protowire.VarintType
		}
		return protowire.BytesType
	}
	for !r.done() {
		num, typ, err := r.tag()
		if err != nil {
			return d, err
		}
		if num < fieldName || num > fieldIssuer {
			return d, malformed("unknown details field %d", num)
		}
		// Groups is the only repeated field written as one entry per value.
		if num < last || (num == last && num != fieldGroups) {
			return d, malformed("details field %d out of order or repeated", num)
		}
		last = num
		if typ != wantType(num) {
			return d, malformed("details field %d has wire type %d", num, typ)
		}
		if typ == protowire.VarintType {
			v, err := r.varint()
			if err != nil {
				return d, err
			}
			switch num {
			case fieldNotBefore:
				d.NotBefore, err = decodeTime(v, "notBefore")
				sawNotBefore = true
			case fieldNotAfter:
				d.NotAfter, err = decodeTime(v, "notAfter")
				sawNotAfter = true
			case fieldIsCA:
				if v != 1 {
					err = malformed("isCA encoded as %d", v)
				}
				d.IsCA = true
			}
			if err != nil {
				return d, err
			}
			continue
		}
		v, err := r.bytes()
		if err != nil {
			return d, err
		}
		switch num {
		case fieldName:
			if len(v) == 0 || !utf8.Valid(v) {
				return d, malformed("name is empty or not valid UTF-8")
			}
			d.Name = string(v)
		case fieldIps:
			d.Ips, err = decodePrefixes(v, "ips")
		case fieldSubnets:
			d.Subnets, err = decodePrefixes(v, "subnets")
		case fieldGroups:
			if !utf8.Valid(v) {
				return d, malformed("group is not valid UTF-8")
			}
			d.Groups = append(d.Groups, string(v))
		case fieldPublicKey:
			if len(v) != keyLen {
				return d, malformed("public key is %d bytes, want %d", len(v), keyLen)
			}
			d.PublicKey = append([]byte(nil), v...)
		case fieldIssuer:
			if len(v) != issuerLen {
				return d, malformed("issuer is %d bytes, want %d", len(v), issuerLen)
			}
			d.Issuer = hexString(v)
		}
		if err != nil {
			return d, err
		}
	}
	// An absent time is zero seconds, the proto3 default, not Go's zero time.
	if !sawNotBefore {
		d.NotBefore = time.Unix(0, 0).UTC()
	}
	if !sawNotAfter {
		d.NotAfter = time.Unix(0, 0).UTC()
	}
	if requireKey && d.PublicKey == nil {
		return d, malformed("no public key")
	}
	if !requireKey {
		d.PublicKey = nil
	}
	return d, nil
}

func decodeTime(v uint64, what string) (time.Time, error) {
	s := int64(v)
	if s == 0 {
		return time.Time{}, malformed("%s is an explicit zero", what)
	}
	t := time.Unix(s, 0).UTC()
	// Far-out values overflow time.Time; they would not re-marshal to the same bytes.
	if t.Unix() != s {
		return time.Time{}, malformed("%s %d is out of range", what, s)
	}
	return t, nil
}

func decodePrefixes(b []byte, what string) ([]netip.Prefix, error) {
	if len(b) == 0 {
		return nil, malformed("%s is present but empty", what)
	}
	r := &reader{b: b}
	var vals []uint32
	for !r.done() {
		v, err := r.varint()
		if err != nil {
			return nil, err
		}
		if v > 0xFFFFFFFF {
			return nil, malformed("%s value %d does not fit 4 bytes", what, v)
		}
		vals = append(vals, uint32(v))
	}
	if len(vals)%2 != 0 {
		return nil, malformed("%s has an odd number of values", what)
	}
	ps := make([]netip.Prefix, 0, len(vals)/2)
	for i := 0; i < len(vals); i += 2 {
		bits, ok := maskToBits(vals[i+1])
		if !ok {
			return nil, malformed("%s mask %v is not contiguous", what, uint32ToAddr(vals[i+1]))
		}
		ps = append(ps, netip.PrefixFrom(uint32ToAddr(vals[i]), bits))
	}
	return ps, nil
}
