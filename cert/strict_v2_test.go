package cert_test

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"

	"github.com/meshnode/meshnode/cert"
	"github.com/meshnode/meshnode/internal/testenv"
)

// tlv is one DER element with a one-byte tag and a short or long-form length, written by
// hand so tests can build encodings our encoder never would.
func tlv(tag byte, content ...[]byte) []byte {
	body := bytes.Join(content, nil)
	var b cryptobyte.Builder
	b.AddUint8(tag)
	switch n := len(body); {
	case n < 0x80:
		b.AddUint8(uint8(n))
	case n < 0x100:
		b.AddUint8(0x81)
		b.AddUint8(uint8(n))
	default:
		b.AddUint8(0x82)
		b.AddUint16(uint16(n))
	}
	b.AddBytes(body)
	return b.BytesOrPanic()
}

func v4net(a, b, c, d, bits byte) []byte { return tlv(0x04, []byte{a, b, c, d, bits}) }

// craftV2 is a v2 certificate built field by field and signed with key over whatever
// details bytes it is given, so that only the encoding rule under test is wrong.
type craftV2 struct {
	details [][]byte // the TLVs inside [0]
	pub     []byte
	extra   []byte // after the signature, inside the SEQUENCE
	after   []byte // after the SEQUENCE
	curve   []byte // a [1] element, or nil
}

func (c craftV2) encode(key ed25519.PrivateKey) []byte {
	d := tlv(0xa0, c.details...)
	sig := ed25519.Sign(key, append(append(append([]byte{}, d...), 0), c.pub...))
	body := [][]byte{d}
	if c.curve != nil {
		body = append(body, c.curve)
	}
	body = append(body, tlv(0x82, c.pub), tlv(0x83, sig), c.extra)
	return append(tlv(0x30, body...), c.after...)
}

// hostFields are the details of a valid host from ca2 (golden-v2), in canonical order.
func hostFields(issuer []byte) map[string][]byte {
	return map[string][]byte{
		"name":      tlv(0x80, []byte("crafted")),
		"networks":  tlv(0xa1, v4net(10, 99, 0, 9, 16)),
		"notBefore": tlv(0x85, []byte{0x01}),
		"notAfter":  tlv(0x86, []byte{0x7f, 0xff, 0xff, 0xff}),
		"issuer":    tlv(0x87, issuer),
	}
}

func ordered(f map[string][]byte, extra ...string) [][]byte {
	var out [][]byte
	for _, k := range append([]string{"name", "networks", "unsafe", "groups", "isCA", "notBefore", "notAfter", "issuer"}, extra...) {
		if v, ok := f[k]; ok {
			out = append(out, v)
		}
	}
	return out
}

type strictCase struct {
	name string
	cert []byte
	// nebulaAccepts is what `nebula-cert 1.11.1 print` did with it (checked by
	// TestV2StrictnessAgainstNebulaCert); we refuse every case.
	nebulaAccepts bool
}

func strictCases(t *testing.T) (good []byte, cases []strictCase) {
	t.Helper()
	key, _, err := cert.UnmarshalEd25519PrivateKey(readGoldenKey(t, "ca2.key"))
	if err != nil {
		t.Fatal(err)
	}
	ca, _, _ := cert.UnmarshalPEM(readGoldenKey(t, "ca2.crt"))
	iss, err := hex.DecodeString(ca.Fingerprint())
	if err != nil {
		t.Fatal(err)
	}
	pub := bytes.Repeat([]byte{9}, 32)
	mk := func(mod func(f map[string][]byte) [][]byte) craftV2 {
		f := hostFields(iss)
		return craftV2{details: mod(f), pub: pub}
	}
	plain := func(f map[string][]byte) [][]byte { return ordered(f) }
	good = mk(plain).encode(key)

	add := func(name string, accepts bool, c craftV2) {
		cases = append(cases, strictCase{name, c.encode(key), accepts})
	}
	set := func(k string, v []byte) func(map[string][]byte) [][]byte {
		return func(f map[string][]byte) [][]byte {
			if v == nil {
				delete(f, k)
			} else {
				f[k] = v
			}
			return ordered(f)
		}
	}
	add("unsorted networks", true, mk(set("networks", tlv(0xa1, v4net(10, 99, 0, 9, 16), v4net(10, 99, 0, 1, 16)))))
	add("duplicate networks", false, mk(set("networks", tlv(0xa1, v4net(10, 99, 0, 9, 16), v4net(10, 99, 0, 9, 16)))))
	add("empty networks list", false, mk(set("networks", tlv(0xa1))))
	add("no networks on a host", false, mk(set("networks", nil)))
	add("zero address", false, mk(set("networks", tlv(0xa1, v4net(0, 0, 0, 0, 16)))))
	add("prefix length 33", false, mk(set("networks", tlv(0xa1, v4net(10, 99, 0, 9, 33)))))
	add("4in6 network", false, mk(set("networks", tlv(0xa1, tlv(0x04, []byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 99, 0, 9, 112})))))
	add("network of 6 bytes", false, mk(set("networks", tlv(0xa1, tlv(0x04, []byte{10, 99, 0, 9, 16, 0})))))
	add("IPv6 unsafe network without IPv6 address", false, mk(set("unsafe", tlv(0xa2, tlv(0x04, append(bytes.Repeat([]byte{0xfd}, 16), 64))))))
	add("unsorted unsafe networks", true, mk(set("unsafe", tlv(0xa2, v4net(10, 200, 2, 0, 24), v4net(10, 200, 1, 0, 24)))))
	add("empty name", false, mk(set("name", tlv(0x80))))
	add("empty group", false, mk(set("groups", tlv(0xa3, tlv(byte(cbasn1.UTF8String))))))
	add("empty groups list", true, mk(set("groups", tlv(0xa3))))
	add("isCA explicit false", true, mk(set("isCA", tlv(0x84, []byte{0}))))
	add("non-minimal notBefore", false, mk(set("notBefore", tlv(0x85, []byte{0, 1}))))
	add("non-minimal length", false, mk(set("name", []byte{0x80, 0x81, 1, 'x'})))
	add("issuer of 31 bytes", true, mk(set("issuer", tlv(0x87, iss[:31]))))
	add("unknown details field after issuer", true, mk(func(f map[string][]byte) [][]byte {
		f["x"] = tlv(0x88, []byte{1})
		return ordered(f, "x")
	}))
	add("explicit default curve", true, func() craftV2 { c := mk(plain); c.curve = tlv(0x81, []byte{0}); return c }())
	add("field after the signature", true, func() craftV2 { c := mk(plain); c.extra = tlv(0x84, []byte{1}); return c }())
	add("bytes after the certificate", true, func() craftV2 { c := mk(plain); c.after = []byte{0}; return c }())
	add("public key of 31 bytes", true, func() craftV2 { c := mk(plain); c.pub = pub[:31]; return c }())
	return good, cases
}

// Every non-canonical or invalid v2 encoding is refused with ErrMalformed, never a panic,
// while the canonical one made the same way is accepted.
func TestV2DecoderRefusesNonCanonical(t *testing.T) {
	good, cases := strictCases(t)
	c, err := cert.Unmarshal(good)
	if err != nil {
		t.Fatalf("canonical crafted cert refused: %v", err)
	}
	if again, _ := c.Marshal(); !bytes.Equal(again, good) {
		t.Fatal("crafted cert does not re-encode to itself")
	}
	for _, tc := range cases {
		if _, err := cert.Unmarshal(tc.cert); !errors.Is(err, cert.ErrMalformed) {
			t.Errorf("%s: accepted or wrong error: %v", tc.name, err)
		}
	}
	// P-256 is refused with its own error.
	key, _, _ := cert.UnmarshalEd25519PrivateKey(readGoldenKey(t, "ca2.key"))
	p := craftV2{details: ordered(hostFields(make([]byte, 32))), pub: make([]byte, 65), curve: tlv(0x81, []byte{1})}
	if _, err := cert.Unmarshal(p.encode(key)); !errors.Is(err, cert.ErrUnsupportedCurve) {
		t.Errorf("P-256: %v", err)
	}
	if _, err := cert.Unmarshal(make([]byte, cert.MaxCertificateV2Size+1)); !errors.Is(err, cert.ErrMalformed) {
		t.Errorf("oversize: %v", err)
	}
}

// Records which of those encodings nebula-cert 1.11.1 itself accepts (print parses and
// validates): it refuses the invalid ones as we do, and accepts some non-canonical ones
// that we refuse. Nebula never produces those, so refusing them costs no interop.
func TestV2StrictnessAgainstNebulaCert(t *testing.T) {
	nc := testenv.RequireNebulaV2(t, "nebula-cert")
	good, cases := strictCases(t)
	dir := t.TempDir()
	run := func(name string, der []byte) (bool, string) {
		p := filepath.Join(dir, strings.ReplaceAll(name, " ", "_")+".crt")
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: cert.PEMCertificateV2, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(nc, "print", "-path", p).CombinedOutput()
		return err == nil, strings.TrimSpace(string(out))
	}
	if ok, out := run("good", good); !ok {
		t.Fatalf("nebula-cert refuses the canonical crafted cert: %s", out)
	}
	for _, tc := range cases {
		ok, out := run(tc.name, tc.cert)
		if ok != tc.nebulaAccepts {
			t.Errorf("%s: nebula-cert 1.11.1 accepts=%v, recorded %v (%s)", tc.name, ok, tc.nebulaAccepts, firstLine(out))
		}
	}
}

func firstLine(s string) string { l, _, _ := strings.Cut(s, "\n"); return l }
