package cert_test

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshnode/meshnode/cert"
)

// printJSON is the shape of `nebula-cert print -json`.
type printJSON struct {
	Details struct {
		Name      string    `json:"name"`
		Ips       []string  `json:"ips"`
		Subnets   []string  `json:"subnets"`
		Groups    []string  `json:"groups"`
		NotBefore time.Time `json:"notBefore"`
		NotAfter  time.Time `json:"notAfter"`
		PublicKey string    `json:"publicKey"`
		IsCa      bool      `json:"isCa"`
		Issuer    string    `json:"issuer"`
	} `json:"details"`
	Fingerprint string `json:"fingerprint"`
	Signature   string `json:"signature"`
}

type golden struct {
	name  string
	pem   []byte   // the whole file
	raw   [][]byte // each PEM body, exactly as nebula-cert wrote it
	print []printJSON
}

func loadGolden(t testing.TB) []golden {
	t.Helper()
	files, err := filepath.Glob("testdata/golden/*.crt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden certificates (run cert/testdata/make-golden.sh): %v", err)
	}
	var out []golden
	for _, f := range files {
		g := golden{name: filepath.Base(f)}
		if g.pem, err = os.ReadFile(f); err != nil {
			t.Fatal(err)
		}
		for rest := g.pem; ; {
			var b *pem.Block
			if b, rest = pem.Decode(rest); b == nil {
				break
			}
			g.raw = append(g.raw, b.Bytes)
		}
		js, err := os.ReadFile(strings.TrimSuffix(f, ".crt") + ".json")
		if err != nil {
			t.Fatal(err)
		}
		dec := json.NewDecoder(bytes.NewReader(js))
		for dec.More() {
			var p printJSON
			if err := dec.Decode(&p); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			g.print = append(g.print, p)
		}
		if len(g.print) != len(g.raw) {
			t.Fatalf("%s: %d certs but %d printed", f, len(g.raw), len(g.print))
		}
		out = append(out, g)
	}
	return out
}

func prefixStrings(ps []netip.Prefix) []string {
	out := []string{}
	for _, p := range ps {
		out = append(out, p.String())
	}
	return out
}

func TestGoldenCertsRemarshalByteIdenticalWithNebulaFingerprints(t *testing.T) {
	for _, g := range loadGolden(t) {
		t.Run(g.name, func(t *testing.T) {
			for i, raw := range g.raw {
				c, err := cert.Unmarshal(raw)
				if err != nil {
					t.Fatalf("cert %d: %v", i, err)
				}
				again, err := c.Marshal()
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(again, raw) {
					t.Errorf("cert %d: re-marshal differs\n got %x\nwant %x", i, again, raw)
				}
				want := g.print[i]
				if got := c.Fingerprint(); got != want.Fingerprint {
					t.Errorf("fingerprint %s, nebula-cert printed %s", got, want.Fingerprint)
				}
				d := c.Details
				if d.Name != want.Details.Name || d.IsCA != want.Details.IsCa || d.Issuer != want.Details.Issuer ||
					hex.EncodeToString(d.PublicKey) != want.Details.PublicKey ||
					hex.EncodeToString(c.Signature) != want.Signature ||
					!d.NotBefore.Equal(want.Details.NotBefore) || !d.NotAfter.Equal(want.Details.NotAfter) ||
					!slices.Equal(prefixStrings(d.Ips), want.Details.Ips) ||
					!slices.Equal(prefixStrings(d.Subnets), want.Details.Subnets) ||
					!slices.Equal(append([]string{}, d.Groups...), want.Details.Groups) {
					t.Errorf("cert %d decoded as %+v, nebula-cert printed %+v", i, d, want.Details)
				}
			}
		})
	}
}

func TestGoldenHostsVerifyAndMatchTheirKeys(t *testing.T) {
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join("testdata/golden", name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	// Judge everything at the golden hosts' issue time, so the test never expires.
	when, _, err := cert.UnmarshalPEM(read("host1.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool, err := cert.NewPoolFromPEMWithClock(read("bundle.crt"), func() time.Time { return when.Details.NotBefore })
	if err != nil {
		t.Fatal(err)
	}
	for _, caName := range []string{"ca", "open-ca"} {
		ca, _, err := cert.UnmarshalPEM(read(caName + ".crt"))
		if err != nil {
			t.Fatal(err)
		}
		key, _, err := cert.UnmarshalEd25519PrivateKey(read(caName + ".key"))
		if err != nil {
			t.Fatal(err)
		}
		if err := ca.VerifyPrivateKey(key); err != nil {
			t.Errorf("%s: key does not match: %v", caName, err)
		}
	}
	for _, host := range []string{"host1", "bare", "pubhost"} {
		c, _, err := cert.UnmarshalPEM(read(host + ".crt"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := pool.Verify(c, c.Details.NotBefore); err != nil {
			t.Errorf("%s: %v", host, err)
		}
		key, _, err := cert.UnmarshalX25519PrivateKey(read(host + ".key"))
		if err != nil {
			t.Fatal(err)
		}
		if err := c.VerifyPrivateKey(key); err != nil {
			t.Errorf("%s: key does not match: %v", host, err)
		}
	}
	pub, _, err := cert.UnmarshalX25519PublicKey(read("pubhost.pub"))
	if err != nil {
		t.Fatal(err)
	}
	c, _, _ := cert.UnmarshalPEM(read("pubhost.crt"))
	if !bytes.Equal(pub, c.Details.PublicKey) {
		t.Error("pubhost.crt does not carry the key from pubhost.pub")
	}
}

func TestGoldenHandshakeFormRestoresTheFileFingerprint(t *testing.T) {
	for _, g := range loadGolden(t) {
		for i, raw := range g.raw {
			c, err := cert.Unmarshal(raw)
			if err != nil {
				t.Fatal(err)
			}
			hs, err := c.MarshalHandshake()
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Contains(hs, c.Details.PublicKey) {
				t.Errorf("%s/%d: handshake form still carries the public key", g.name, i)
			}
			back, err := cert.UnmarshalHandshake(hs, c.Details.PublicKey)
			if err != nil {
				t.Fatal(err)
			}
			if back.Fingerprint() != g.print[i].Fingerprint {
				t.Errorf("%s/%d: handshake fingerprint %s, want %s", g.name, i, back.Fingerprint(), g.print[i].Fingerprint)
			}
		}
	}
}
