package cert_test

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshnode/meshnode/cert"
)

// printJSONV2 is one element of `nebula-cert 1.11.1 print -json` (which prints an array);
// v1 certificates in it have their own shape, which only the common fields here cover.
type printJSONV2 struct {
	Curve   string `json:"curve"`
	Details struct {
		Name           string    `json:"name"`
		Networks       []string  `json:"networks"`
		UnsafeNetworks []string  `json:"unsafeNetworks"`
		Groups         []string  `json:"groups"`
		NotBefore      time.Time `json:"notBefore"`
		NotAfter       time.Time `json:"notAfter"`
		IsCa           bool      `json:"isCa"`
		Issuer         string    `json:"issuer"`
		PublicKey      string    `json:"publicKey"` // v1 only
	} `json:"details"`
	PublicKey   string `json:"publicKey"` // v2 only
	Fingerprint string `json:"fingerprint"`
	Signature   string `json:"signature"`
	Version     int    `json:"version"`
}

type goldenV2 struct {
	name  string
	pem   []byte
	types []string // PEM banners
	raw   [][]byte
	print []printJSONV2
}

func goldenV2Dir(name string) string { return filepath.Join("testdata", "golden-v2", name) }

func loadGoldenV2(t testing.TB) []goldenV2 {
	t.Helper()
	files, err := filepath.Glob(goldenV2Dir("*.crt"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no v2 golden certificates (run cert/testdata/make-golden-v2.sh): %v", err)
	}
	var out []goldenV2
	for _, f := range files {
		g := goldenV2{name: filepath.Base(f)}
		if g.pem, err = os.ReadFile(f); err != nil {
			t.Fatal(err)
		}
		for rest := g.pem; ; {
			var b *pem.Block
			if b, rest = pem.Decode(rest); b == nil {
				break
			}
			g.types = append(g.types, b.Type)
			g.raw = append(g.raw, b.Bytes)
		}
		js, err := os.ReadFile(strings.TrimSuffix(f, ".crt") + ".json")
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(js, &g.print); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if len(g.print) != len(g.raw) {
			t.Fatalf("%s: %d certs but %d printed", f, len(g.raw), len(g.print))
		}
		out = append(out, g)
	}
	return out
}

func readGoldenKey(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(goldenV2Dir(name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Every certificate nebula-cert 1.11.1 made decodes to what it printed, re-encodes to the
// same bytes and has the fingerprint it printed.
func TestGoldenV2DecodesToWhatNebulaCertPrinted(t *testing.T) {
	for _, g := range loadGoldenV2(t) {
		var again []byte
		for i, raw := range g.raw {
			c, err := cert.Unmarshal(raw)
			if err != nil {
				t.Fatalf("%s[%d]: %v", g.name, i, err)
			}
			p := g.print[i]
			want := cert.Version(p.Version)
			if c.Version() != want {
				t.Errorf("%s[%d]: version %v, want %v", g.name, i, c.Version(), want)
			}
			if (g.types[i] == cert.PEMCertificateV2) != (want == cert.Version2) {
				t.Errorf("%s[%d]: banner %q for %v", g.name, i, g.types[i], want)
			}
			if got := c.Fingerprint(); got != p.Fingerprint {
				t.Errorf("%s[%d]: fingerprint %s, nebula-cert says %s", g.name, i, got, p.Fingerprint)
			}
			pub := p.PublicKey
			if want == cert.Version1 {
				pub = p.Details.PublicKey
			}
			d := c.Details
			if d.Name != p.Details.Name || d.IsCA != p.Details.IsCa || d.Issuer != p.Details.Issuer ||
				!slices.Equal(d.Groups, p.Details.Groups) || hex.EncodeToString(d.PublicKey) != pub ||
				hex.EncodeToString(c.Signature) != p.Signature ||
				!d.NotBefore.Equal(p.Details.NotBefore) || !d.NotAfter.Equal(p.Details.NotAfter) ||
				!slices.Equal(strs(c.Networks()), nonNil(p.Details.Networks)) ||
				!slices.Equal(strs(c.UnsafeNetworks()), nonNil(p.Details.UnsafeNetworks)) {
				t.Errorf("%s[%d]: decoded %+v\nnebula-cert printed %+v", g.name, i, d, p)
			}
			if m, err := c.Marshal(); err != nil || !bytes.Equal(m, raw) {
				t.Errorf("%s[%d]: re-marshal differs (%v)", g.name, i, err)
			}
			pemBytes, err := c.MarshalPEM()
			if err != nil {
				t.Fatal(err)
			}
			again = append(again, pemBytes...)
		}
		if !bytes.Equal(again, g.pem) {
			t.Errorf("%s: PEM differs from nebula-cert's", g.name)
		}
	}
}

func strs(ps []netip.Prefix) []string {
	out := []string{}
	for _, p := range ps {
		out = append(out, p.String())
	}
	return out
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// Signing the same details with the same key gives nebula-cert 1.11.1's bytes exactly: the
// golden vectors for our v2 encoder and signer (Ed25519 is deterministic).
func TestGoldenV2ResigningGivesNebulaCertBytes(t *testing.T) {
	keys := map[string]string{"ca2.crt": "ca2.key", "open-ca2.crt": "open-ca2.key", "ca1.crt": "ca1.key"}
	cas := map[string]*cert.Certificate{}
	caKeys := map[string][]byte{}
	for crt, key := range keys {
		c, _, err := cert.UnmarshalPEM(readGoldenKey(t, crt))
		if err != nil {
			t.Fatal(err)
		}
		k, _, err := cert.UnmarshalEd25519PrivateKey(readGoldenKey(t, key))
		if err != nil {
			t.Fatal(err)
		}
		cas[c.Fingerprint()] = c
		caKeys[c.Fingerprint()] = k
	}
	for _, g := range loadGoldenV2(t) {
		if g.name == "bundle.crt" {
			continue
		}
		orig, err := cert.Unmarshal(g.raw[0])
		if err != nil {
			t.Fatal(err)
		}
		key := caKeys[orig.Fingerprint()]
		if !orig.Details.IsCA {
			key = caKeys[orig.Details.Issuer]
		}
		if key == nil {
			t.Fatalf("%s: no golden key for it", g.name)
		}
		d := orig.Details
		// Reverse the networks: Sign must sort them as nebula-cert does.
		d.Ips = slices.Clone(d.Ips)
		slices.Reverse(d.Ips)
		fresh := &cert.Certificate{Details: d}
		if err := fresh.SetVersion(orig.Version()); err != nil {
			t.Fatal(err)
		}
		if err := fresh.Sign(key); err != nil {
			t.Fatalf("%s: %v", g.name, err)
		}
		got, err := fresh.MarshalPEM()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, g.pem) {
			t.Errorf("%s: re-signed bytes differ from nebula-cert 1.11.1's\n got %s\nwant %s", g.name, got, g.pem)
		}
		if !orig.Details.IsCA {
			if err := fresh.CheckConstraints(cas[orig.Details.Issuer]); err != nil {
				t.Errorf("%s: %v", g.name, err)
			}
		}
	}
}

// A bundle of v1 and v2 CAs verifies hosts of both versions, whichever version signed them.
func TestGoldenV2MixedBundleVerifiesBothVersions(t *testing.T) {
	bundle := readGoldenKey(t, "bundle.crt")
	pool, err := cert.NewPoolFromPEM(bundle)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(pool.CAs()); n != 3 {
		t.Fatalf("%d CAs in the pool, want 3", n)
	}
	for _, name := range []string{"dual.crt", "v6only.crt", "v1-by-v2.crt", "v2-by-v1.crt"} {
		c, _, err := cert.UnmarshalPEM(readGoldenKey(t, name))
		if err != nil {
			t.Fatal(err)
		}
		ca, err := pool.Verify(c, time.Now())
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if ca.Fingerprint() != c.Details.Issuer {
			t.Errorf("%s: verified by %s", name, ca.Details.Name)
		}
	}
	// The blocklist works on v2 fingerprints, and a blocked v2 CA blocks its v1 host.
	dual, _, _ := cert.UnmarshalPEM(readGoldenKey(t, "dual.crt"))
	v1host, _, _ := cert.UnmarshalPEM(readGoldenKey(t, "v1-by-v2.crt"))
	pool.Block(dual.Fingerprint())
	if _, err := pool.Verify(dual, time.Now()); !errors.Is(err, cert.ErrBlocked) {
		t.Errorf("blocked v2 host: %v", err)
	}
	pool.Block(v1host.Details.Issuer)
	if _, err := pool.Verify(v1host, time.Now()); !errors.Is(err, cert.ErrBlocked) {
		t.Errorf("v1 host of a blocked v2 CA: %v", err)
	}
}

// The handshake form is SEQUENCE { details, signature }; rebuilt from the Noise static key it
// is the same certificate, and the wrong key makes the signature fail.
func TestV2HandshakeFormRoundTrips(t *testing.T) {
	c, _, err := cert.UnmarshalPEM(readGoldenKey(t, "dual.crt"))
	if err != nil {
		t.Fatal(err)
	}
	ca, _, _ := cert.UnmarshalPEM(readGoldenKey(t, "ca2.crt"))
	hs, err := c.MarshalHandshake()
	if err != nil {
		t.Fatal(err)
	}
	full, _ := c.Marshal()
	if len(hs) != len(full)-2-32 || hs[0] != 0x30 || bytes.Contains(hs, c.Details.PublicKey) {
		t.Fatalf("handshake form %x still carries the key", hs)
	}
	back, err := cert.UnmarshalHandshakeVersion(cert.Version2, hs, c.Details.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	if back.Version() != cert.Version2 || back.Fingerprint() != c.Fingerprint() || !back.CheckSignature(ca.Details.PublicKey) {
		t.Errorf("rebuilt certificate differs: %+v", back.Details)
	}
	other := bytes.Repeat([]byte{7}, 32)
	wrong, err := cert.UnmarshalHandshakeVersion(cert.Version2, hs, other)
	if err != nil {
		t.Fatal(err)
	}
	if wrong.CheckSignature(ca.Details.PublicKey) {
		t.Error("a handshake cert rebuilt with another key verified")
	}
	// The full form (with a key) is refused as a handshake certificate, and so is a v1
	// payload read as v2 or an unknown version.
	if _, err := cert.UnmarshalHandshakeVersion(cert.Version2, full, c.Details.PublicKey); !errors.Is(err, cert.ErrMalformed) {
		t.Errorf("handshake cert with a key: %v", err)
	}
	v1, _, _ := cert.UnmarshalPEM(readGoldenKey(t, "v1-by-v2.crt"))
	v1hs, _ := v1.MarshalHandshake()
	if _, err := cert.UnmarshalHandshakeVersion(cert.Version2, v1hs, v1.Details.PublicKey); err == nil {
		t.Error("v1 handshake cert accepted as v2")
	}
	if back, err := cert.UnmarshalHandshakeVersion(0, v1hs, v1.Details.PublicKey); err != nil || back.Fingerprint() != v1.Fingerprint() {
		t.Errorf("v1 handshake cert as version 0: %v", err)
	}
	if _, err := cert.UnmarshalHandshakeVersion(3, hs, c.Details.PublicKey); !errors.Is(err, cert.ErrUnknownVersion) {
		t.Errorf("version 3: %v", err)
	}
}
