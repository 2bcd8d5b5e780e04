package cert_test

import (
	"bytes"
	"errors"
	"net/netip"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/meshnode/meshnode/cert"
)

// field is one hand-encoded protobuf field, for building encodings Marshal never makes.
type field struct {
	num protowire.Number
	raw []byte // tag and value, already encoded
}

func bytesField(num protowire.Number, v []byte) field {
	b := protowire.AppendTag(nil, num, protowire.BytesType)
	return field{num, protowire.AppendBytes(b, v)}
}

func varintField(num protowire.Number, v uint64) field {
	b := protowire.AppendTag(nil, num, protowire.VarintType)
	return field{num, protowire.AppendVarint(b, v)}
}

func packed(vals ...uint64) []byte {
	var b []byte
	for _, v := range vals {
		b = protowire.AppendVarint(b, v)
	}
	return b
}

func join(fs ...field) []byte {
	var b []byte
	for _, f := range fs {
		b = append(b, f.raw...)
	}
	return b
}

var (
	testKey = bytes.Repeat([]byte{7}, 32)
	testSig = bytes.Repeat([]byte{9}, 64)
	testIss = bytes.Repeat([]byte{0xab}, 32)
)

// canonicalDetails mirrors what nebula-cert writes for a host: every field, in order.
func canonicalDetails() []field {
	return []field{
		bytesField(1, []byte("host1")),
		bytesField(2, packed(0x0A630001, 0xFFFF0000)),
		bytesField(3, packed(0xC0A83200, 0xFFFFFF00)),
		bytesField(4, []byte("admin")),
		bytesField(4, []byte("web")),
		varintField(5, 1700000000),
		varintField(6, 1800000000),
		bytesField(7, testKey),
		bytesField(9, testIss),
	}
}

func wrap(details []byte, rest ...field) []byte {
	return join(append([]field{bytesField(1, details)}, rest...)...)
}

func TestUnmarshalAcceptsCanonicalAndRoundTrips(t *testing.T) {
	raw := wrap(join(canonicalDetails()...), bytesField(2, testSig))
	c, err := cert.Unmarshal(raw)
	if err != nil {
		t.Fatal(err)
	}
	want := cert.Details{
		Name:      "host1",
		Ips:       []netip.Prefix{netip.MustParsePrefix("10.99.0.1/16")},
		Subnets:   []netip.Prefix{netip.MustParsePrefix("192.168.50.0/24")},
		Groups:    []string{"admin", "web"},
		NotBefore: time.Unix(1700000000, 0),
		NotAfter:  time.Unix(1800000000, 0),
		PublicKey: testKey,
		Issuer:    "abababababababababababababababababababababababababababababababab",
	}
	d := c.Details
	if d.Name != want.Name || d.Ips[0] != want.Ips[0] || d.Subnets[0] != want.Subnets[0] ||
		len(d.Groups) != 2 || d.Groups[1] != "web" || !d.NotBefore.Equal(want.NotBefore) ||
		!d.NotAfter.Equal(want.NotAfter) || !bytes.Equal(d.PublicKey, testKey) || d.Issuer != want.Issuer || d.IsCA {
		t.Fatalf("decoded %+v, want %+v", d, want)
	}
	if c.VpnIP() != netip.MustParseAddr("10.99.0.1") {
		t.Errorf("VpnIP %v", c.VpnIP())
	}
	again, err := c.Marshal()
	if err != nil || !bytes.Equal(again, raw) {
		t.Fatalf("re-marshal %x (%v), want %x", again, err, raw)
	}
}

func TestUnmarshalRejectsNonCanonicalEncodings(t *testing.T) {
	d := canonicalDetails()
	with := func(edit func([]field) []field) []byte {
		fs := append([]field(nil), d...)
		return wrap(join(edit(fs)...), bytesField(2, testSig))
	}
	replace := func(i int, f field) func([]field) []field {
		return func(fs []field) []field { fs[i] = f; return fs }
	}
	nonMinimal := func(num protowire.Number) field {
		b := protowire.AppendTag(nil, num, protowire.VarintType)
		return field{num, append(b, 0x81, 0x80, 0x00)} // 1, padded to 3 bytes
	}
	cases := map[string][]byte{
		"empty input":              {},
		"no details":               join(bytesField(2, testSig)),
		"trailing byte":            append(wrap(join(d...), bytesField(2, testSig)), 0),
		"unknown top-level field":  wrap(join(d...), bytesField(2, testSig), bytesField(3, []byte{1})),
		"signature before details": join(bytesField(2, testSig), bytesField(1, join(d...))),
		"details twice":            join(bytesField(1, join(d...)), bytesField(1, join(d...)), bytesField(2, testSig)),
		"short signature":          wrap(join(d...), bytesField(2, testSig[:63])),
		"empty signature present":  wrap(join(d...), bytesField(2, nil)),
		"details wrong wire type":  join(varintField(1, 5)),
		"truncated details":        wrap(join(d...), bytesField(2, testSig))[:20],
		"unknown details field":    with(func(fs []field) []field { return append(fs, bytesField(10, []byte{1})) }),
		"fields out of order":      with(func(fs []field) []field { fs[0], fs[1] = fs[1], fs[0]; return fs }),
		"duplicate name":           with(func(fs []field) []field { return append([]field{fs[0]}, fs...) }),
		"unpacked ips": with(replace(1, field{2, join(
			varintField(2, 0x0A630001), varintField(2, 0xFFFF0000))})),
		"ips split in two packed fields": with(replace(1, field{2, join(
			bytesField(2, packed(0x0A630001, 0xFFFF0000)), bytesField(2, packed(0x0A630002, 0xFFFF0000)))})),
		"odd ips count":           with(replace(1, bytesField(2, packed(0x0A630001)))),
		"empty packed ips":        with(replace(1, bytesField(2, nil))),
		"ip wider than 4 bytes":   with(replace(1, bytesField(2, packed(0x1_0A630001, 0xFFFF0000)))),
		"mask wider than 4 bytes": with(replace(1, bytesField(2, packed(0x0A630001, 0x1_FFFF0000)))),
		"non-contiguous mask":     with(replace(1, bytesField(2, packed(0x0A630001, 0xFF00FF00)))),
		"non-contiguous subnet":   with(replace(2, bytesField(3, packed(0xC0A83200, 0xFFFFFF01)))),
		"non-minimal ip varint":   with(replace(1, bytesField(2, append(packed(0x0A630001), 0x80, 0x80, 0xfc, 0xff, 0x8f, 0x00)))),
		"non-minimal notBefore":   with(replace(5, nonMinimal(5))),
		"explicit zero notAfter":  with(replace(6, varintField(6, 0))),
		"invalid UTF-8 name":      with(replace(0, bytesField(1, []byte{0xff, 0xfe}))),
		"empty name present":      with(replace(0, bytesField(1, nil))),
		"invalid UTF-8 group":     with(replace(3, bytesField(4, []byte{0xc0}))),
		"public key 31 bytes":     with(replace(7, bytesField(7, testKey[:31]))),
		"public key 33 bytes":     with(replace(7, bytesField(7, append(testKey, 1)))),
		"no public key":           with(func(fs []field) []field { return append(fs[:7], fs[8]) }),
		"issuer 31 bytes":         with(replace(8, bytesField(9, testIss[:31]))),
		"isCA encoded as 2": with(func(fs []field) []field {
			return append(fs[:8], varintField(8, 2), fs[8])
		}),
		"isCA explicit false": with(func(fs []field) []field {
			return append(fs[:8], varintField(8, 0), fs[8])
		}),
		"time wrong wire type": with(replace(5, bytesField(5, []byte{1}))),
		"non-minimal tag":      with(replace(0, field{1, append([]byte{0x8a, 0x00}, protowire.AppendBytes(nil, []byte("host1"))...)})),
		"field number zero":    with(func(fs []field) []field { return append([]field{bytesField(0, nil)}, fs...) }),
	}
	for name, raw := range cases {
		t.Run(name, func(t *testing.T) {
			c, err := cert.Unmarshal(raw)
			if err == nil {
				t.Fatalf("accepted: %+v", c.Details)
			}
			if !errors.Is(err, cert.ErrMalformed) {
				t.Errorf("error %v does not wrap ErrMalformed", err)
			}
		})
	}
}

func TestMarshalRefusesWhatV1CannotEncode(t *testing.T) {
	base := func() *cert.Certificate {
		return &cert.Certificate{Details: cert.Details{Name: "x", PublicKey: testKey,
			Ips: []netip.Prefix{netip.MustParsePrefix("10.0.0.1/8")}}}
	}
	cases := map[string]func(*cert.Certificate){
		"IPv6 address":     func(c *cert.Certificate) { c.Details.Ips[0] = netip.MustParsePrefix("fd00::1/64") },
		"IPv4-mapped IPv6": func(c *cert.Certificate) { c.Details.Ips[0] = netip.MustParsePrefix("::ffff:10.0.0.1/104") },
		"invalid prefix":   func(c *cert.Certificate) { c.Details.Subnets = []netip.Prefix{{}} },
		"issuer not hex":   func(c *cert.Certificate) { c.Details.Issuer = "zz" },
		"invalid UTF-8":    func(c *cert.Certificate) { c.Details.Name = "\xff" },
	}
	for name, edit := range cases {
		t.Run(name, func(t *testing.T) {
			c := base()
			edit(c)
			if _, err := c.Marshal(); !errors.Is(err, cert.ErrInvalid) {
				t.Errorf("Marshal error %v, want ErrInvalid", err)
			}
			if c.Fingerprint() != "" {
				t.Error("fingerprint of an unencodable cert is not empty")
			}
		})
	}
}

func TestMarshalHandshakeOmitsOnlyThePublicKey(t *testing.T) {
	raw := wrap(join(canonicalDetails()...), bytesField(2, testSig))
	c, err := cert.Unmarshal(raw)
	if err != nil {
		t.Fatal(err)
	}
	hs, err := c.MarshalHandshake()
	if err != nil {
		t.Fatal(err)
	}
	noKey := canonicalDetails()
	noKey = append(noKey[:7], noKey[8])
	if want := wrap(join(noKey...), bytesField(2, testSig)); !bytes.Equal(hs, want) {
		t.Fatalf("handshake form %x, want %x", hs, want)
	}
	other := bytes.Repeat([]byte{1}, 32)
	for name, in := range map[string][]byte{"stripped": hs, "key left in": raw} {
		got, err := cert.UnmarshalHandshake(in, other)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !bytes.Equal(got.Details.PublicKey, other) {
			t.Errorf("%s: public key %x, want the handshake's static key", name, got.Details.PublicKey)
		}
	}
	if _, err := cert.UnmarshalHandshake(hs, other[:31]); !errors.Is(err, cert.ErrMalformed) {
		t.Errorf("31-byte static key: %v", err)
	}
	if _, err := cert.Unmarshal(hs); !errors.Is(err, cert.ErrMalformed) {
		t.Errorf("a stripped cert must not pass as a full one: %v", err)
	}
}
