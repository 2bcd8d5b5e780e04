package cert_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/meshnode/meshnode/cert"
)

func seedGolden(f *testing.F, pemForm bool) {
	files, _ := filepath.Glob("testdata/golden/*.crt")
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		if pemForm {
			f.Add(b)
			continue
		}
		for rest := b; ; {
			c, r, err := cert.UnmarshalPEM(rest)
			if err != nil {
				break
			}
			raw, _ := c.Marshal()
			f.Add(raw)
			rest = r
		}
	}
	f.Add([]byte{})
	f.Add([]byte{0x0a, 0x00})
}

// FuzzUnmarshal proves the strict decoder never panics and that whatever it accepts is the
// canonical encoding: it re-marshals to the same bytes, so the fingerprint cannot be changed
// by re-encoding (SECURITY-NOTES item 1).
func FuzzUnmarshal(f *testing.F) {
	seedGolden(f, false)
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := cert.Unmarshal(b)
		if err != nil {
			return
		}
		again, err := c.Marshal()
		if err != nil {
			t.Fatalf("accepted but cannot re-marshal: %v", err)
		}
		if !bytes.Equal(again, b) {
			t.Fatalf("accepted a non-canonical encoding\n in %x\nout %x", b, again)
		}
		fp := c.Fingerprint()
		c2, err := cert.Unmarshal(again)
		if err != nil || c2.Fingerprint() != fp || c.Fingerprint() != fp {
			t.Fatalf("fingerprint unstable: %v", err)
		}
	})
}

func FuzzUnmarshalPEM(f *testing.F) {
	seedGolden(f, true)
	f.Add([]byte("-----BEGIN NEBULA CERTIFICATE-----\nCgA=\n-----END NEBULA CERTIFICATE-----\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, rest, err := cert.UnmarshalPEM(b)
		if len(rest) > len(b) {
			t.Fatal("rest longer than input")
		}
		if err != nil {
			return
		}
		p, err := c.MarshalPEM()
		if err != nil {
			t.Fatal(err)
		}
		c2, _, err := cert.UnmarshalPEM(p)
		if err != nil || c2.Fingerprint() != c.Fingerprint() {
			t.Fatalf("PEM round trip: %v", err)
		}
	})
}

// FuzzUnmarshalHandshake proves the handshake decoder never panics, always installs the
// given static key, and that the result re-encodes to a stable fingerprint.
func FuzzUnmarshalHandshake(f *testing.F) {
	seedGolden(f, false)
	key := bytes.Repeat([]byte{0x42}, 32)
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := cert.UnmarshalHandshake(b, key)
		if err != nil {
			return
		}
		if !bytes.Equal(c.Details.PublicKey, key) {
			t.Fatal("static key not installed")
		}
		full, err := c.Marshal()
		if err != nil {
			t.Fatalf("accepted but cannot re-marshal: %v", err)
		}
		c2, err := cert.Unmarshal(full)
		if err != nil || c2.Fingerprint() != c.Fingerprint() {
			t.Fatalf("re-encoded handshake cert: %v", err)
		}
		hs, _ := c.MarshalHandshake()
		if c3, err := cert.UnmarshalHandshake(hs, key); err != nil || c3.Fingerprint() != c.Fingerprint() {
			t.Fatalf("handshake form not a fixed point: %v", err)
		}
	})
}

// FuzzUnmarshalKeys covers the key file parsers: never panic, and accept only keys of the
// exact size under the exact banner.
func FuzzUnmarshalKeys(f *testing.F) {
	for _, name := range []string{"host1.key", "ca.key", "pubhost.pub"} {
		if b, err := os.ReadFile(filepath.Join("testdata/golden", name)); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if k, _, err := cert.UnmarshalX25519PrivateKey(b); err == nil && len(k) != 32 {
			t.Fatalf("x25519 private key of %d bytes", len(k))
		}
		if k, _, err := cert.UnmarshalX25519PublicKey(b); err == nil && len(k) != 32 {
			t.Fatalf("x25519 public key of %d bytes", len(k))
		}
		if k, _, err := cert.UnmarshalEd25519PrivateKey(b); err == nil && len(k) != 64 {
			t.Fatalf("ed25519 private key of %d bytes", len(k))
		}
	})
}

// FuzzUnmarshalV2 holds the v2 (DER) decoder to the same promise as FuzzUnmarshal: no
// panic, and anything accepted is canonical, so the fingerprint Nebula computes over the
// received details equals ours. The handshake form is decoded from the same bytes too.
func FuzzUnmarshalV2(f *testing.F) {
	files, _ := filepath.Glob("testdata/golden-v2/*.crt")
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		for rest := b; ; {
			c, r, err := cert.UnmarshalPEM(rest)
			if err != nil {
				break
			}
			raw, _ := c.Marshal()
			f.Add(raw)
			if hs, err := c.MarshalHandshake(); err == nil {
				f.Add(hs)
			}
			rest = r
		}
	}
	f.Add([]byte{0x30, 0x00})
	f.Add([]byte{0x30, 0x80})
	key := bytes.Repeat([]byte{1}, 32)
	f.Fuzz(func(t *testing.T, b []byte) {
		if hc, err := cert.UnmarshalHandshakeVersion(cert.Version2, b, key); err == nil {
			again, err := hc.MarshalHandshake()
			if err != nil || !bytes.Equal(again, b) {
				t.Fatalf("accepted a non-canonical handshake cert (%v)\n in %x\nout %x", err, b, again)
			}
		}
		c, err := cert.UnmarshalV2(b)
		if err != nil {
			return
		}
		again, err := c.Marshal()
		if err != nil {
			t.Fatalf("accepted but cannot re-marshal: %v", err)
		}
		if !bytes.Equal(again, b) {
			t.Fatalf("accepted a non-canonical encoding\n in %x\nout %x", b, again)
		}
		c2, err := cert.Unmarshal(again)
		if err != nil || c2.Version() != cert.Version2 || c2.Fingerprint() != c.Fingerprint() || c.Fingerprint() == "" {
			t.Fatalf("fingerprint unstable: %v", err)
		}
	})
}
