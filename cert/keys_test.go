package cert_test

import (
	"bytes"
	"crypto/ecdh"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshnode/meshnode/cert"
	"github.com/meshnode/meshnode/cert/certtest"
)

func TestGenerateX25519MatchesTheCurveAndStaysUnclamped(t *testing.T) {
	clampedSomewhere := false
	for range 32 {
		pub, priv, err := cert.GenerateX25519()
		if err != nil {
			t.Fatal(err)
		}
		k, err := ecdh.X25519().NewPrivateKey(priv)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(k.PublicKey().Bytes(), pub) {
			t.Fatal("public key is not X25519(priv)")
		}
		if priv[0]&7 != 0 || priv[31]&0x80 != 0 || priv[31]&0x40 == 0 {
			clampedSomewhere = true
		}
	}
	if !clampedSomewhere {
		t.Error("32 private keys all look clamped; nebula-cert keys are raw random bytes")
	}
}

func TestVerifyPrivateKeyMatchesOnlyTheOwnKey(t *testing.T) {
	ca := certtest.NewCA(t, "ca")
	other := certtest.NewCA(t, "other")
	h := ca.NewHost(t, "h", "10.0.0.1/8")
	h2 := ca.NewHost(t, "h2", "10.0.0.2/8")
	forged := append(append([]byte{}, other.Key[:32]...), ca.Cert.Details.PublicKey...)
	cases := []struct {
		name string
		c    *cert.Certificate
		key  []byte
		ok   bool
	}{
		{"CA with its key", ca.Cert, ca.Key, true},
		{"CA with another CA's key", ca.Cert, other.Key, false},
		{"CA with a foreign seed and its public half", ca.Cert, forged, false},
		{"CA with a host key", ca.Cert, h.Key, false},
		{"host with its key", h.Cert, h.Key, true},
		{"host with another host's key", h.Cert, h2.Key, false},
		{"host with a CA key", h.Cert, ca.Key, false},
		{"host with a short key", h.Cert, h.Key[:31], false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.c.VerifyPrivateKey(c.key)
			if c.ok != (err == nil) {
				t.Fatalf("err = %v, want ok=%v", err, c.ok)
			}
			if err != nil && !errors.Is(err, cert.ErrKeyMismatch) {
				t.Errorf("%v does not wrap ErrKeyMismatch", err)
			}
		})
	}
}

func TestKeyPEMsRoundTripAndRejectWrongBanners(t *testing.T) {
	pub, priv, _ := cert.GenerateX25519()
	_, edPriv, _ := cert.GenerateEd25519()
	if k, _, err := cert.UnmarshalX25519PrivateKey(cert.MarshalX25519PrivateKey(priv)); err != nil || !bytes.Equal(k, priv) {
		t.Errorf("x25519 private: %v", err)
	}
	if k, _, err := cert.UnmarshalX25519PublicKey(cert.MarshalX25519PublicKey(pub)); err != nil || !bytes.Equal(k, pub) {
		t.Errorf("x25519 public: %v", err)
	}
	if k, _, err := cert.UnmarshalEd25519PrivateKey(cert.MarshalEd25519PrivateKey(edPriv)); err != nil || !bytes.Equal(k, edPriv) {
		t.Errorf("ed25519 private: %v", err)
	}
	bad := map[string]func() error{
		"public key as private": func() error {
			_, _, err := cert.UnmarshalX25519PrivateKey(cert.MarshalX25519PublicKey(pub))
			return err
		},
		"CA key as host key": func() error {
			_, _, err := cert.UnmarshalX25519PrivateKey(cert.MarshalEd25519PrivateKey(edPriv))
			return err
		},
		"short CA key": func() error {
			_, _, err := cert.UnmarshalEd25519PrivateKey(bytes.Replace(cert.MarshalX25519PrivateKey(priv), []byte("X25519"), []byte("ED25519"), 2))
			return err
		},
		"not PEM":     func() error { _, _, err := cert.UnmarshalX25519PublicKey([]byte("hello")); return err },
		"cert as key": func() error { _, _, err := cert.UnmarshalX25519PrivateKey(certtest.NewCA(t, "x").PEM); return err },
		"key as cert": func() error { _, _, err := cert.UnmarshalPEM(cert.MarshalX25519PrivateKey(priv)); return err },
		"33-byte host key": func() error {
			_, _, err := cert.UnmarshalX25519PrivateKey(cert.MarshalX25519PrivateKey(append(priv, 0)))
			return err
		},
	}
	for name, f := range bad {
		if err := f(); !errors.Is(err, cert.ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
}

func TestUnmarshalPEMReturnsTheRestOfABundle(t *testing.T) {
	a, b := certtest.NewCA(t, "a"), certtest.NewCA(t, "b")
	c, rest, err := cert.UnmarshalPEM(certtest.Bundle(a, b))
	if err != nil || c.Details.Name != "a" {
		t.Fatalf("first: %v", err)
	}
	c, rest, err = cert.UnmarshalPEM(rest)
	if err != nil || c.Details.Name != "b" || len(rest) != 0 {
		t.Fatalf("second: %v, rest %q", err, rest)
	}
}

func TestFingerprintCacheNoticesEdits(t *testing.T) {
	ca := certtest.NewCA(t, "ca")
	h, _, err := cert.UnmarshalPEM(ca.NewHost(t, "h", "10.0.0.1/8", "a").PEM)
	if err != nil {
		t.Fatal(err)
	}
	before := h.Fingerprint()
	if h.Fingerprint() != before {
		t.Fatal("fingerprint not stable")
	}
	edits := []func(){
		func() { h.Details.Groups[0] = "b" },
		func() { h.Details.PublicKey[0] ^= 1 },
		func() { h.Details.Name = "h2" },
		func() { h.Signature[0] ^= 1 },
		func() { h.Details.NotAfter = h.Details.NotAfter.Add(-1e9) },
	}
	seen := map[string]bool{before: true}
	for i, edit := range edits {
		edit()
		fp := h.Fingerprint()
		if seen[fp] {
			t.Errorf("edit %d: fingerprint unchanged or repeated", i)
		}
		seen[fp] = true
		b, _ := h.Marshal()
		if again, _ := cert.Unmarshal(b); again.Fingerprint() != fp {
			t.Errorf("edit %d: cached fingerprint differs from a fresh one", i)
		}
	}
}

// TestUncachedCopyKeepsIdentityAndVersion: the uncached copy a tunnel keeps has the same
// fingerprint in both versions, and the same handshake encoding.
func TestUncachedCopyKeepsIdentityAndVersion(t *testing.T) {
	ca := certtest.NewCA(t, "ca")
	h, _, err := cert.UnmarshalPEM(ca.NewHost(t, "h", "10.0.0.1/8", "a").PEM)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []cert.Version{cert.Version1, cert.Version2} {
		if err := h.SetVersion(v); err != nil {
			t.Fatal(err)
		}
		u := h.Uncached()
		if u.Version() != v || u.Fingerprint() == "" || u.Fingerprint() != h.Fingerprint() {
			t.Fatalf("v%d: copy's version %d fingerprint %q, original's %q", v, u.Version(), u.Fingerprint(), h.Fingerprint())
		}
		a, errA := h.MarshalHandshake()
		b, errB := u.MarshalHandshake()
		if errA != nil || errB != nil || !bytes.Equal(a, b) {
			t.Fatalf("v%d: handshake encodings differ (%v, %v)", v, errA, errB)
		}
	}
}

func TestWriteFileAtomicNeverOverwritesWithoutForce(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "host.key")
	if err := cert.WriteFileAtomic(p, []byte("one"), 0o600, false); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(p)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, %v", st.Mode(), err)
	}
	err = cert.WriteFileAtomic(p, []byte("two"), 0o600, false)
	if !errors.Is(err, fs.ErrExist) || !strings.Contains(err.Error(), p) {
		t.Fatalf("overwrite without force: %v", err)
	}
	if b, _ := os.ReadFile(p); string(b) != "one" {
		t.Fatalf("content %q after refused overwrite", b)
	}
	if err := cert.WriteFileAtomic(p, []byte("two"), 0o644, true); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); string(b) != "two" {
		t.Fatalf("content %q after forced overwrite", b)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("temporary files left behind: %v", ents)
	}
	err = cert.WriteFileAtomic(filepath.Join(dir, "missing", "x"), nil, 0o600, false)
	if err == nil || !strings.Contains(err.Error(), filepath.Join(dir, "missing", "x")) {
		t.Errorf("error does not name the file: %v", err)
	}
}

func TestWriteFilesLeavesNothingWhenOneFails(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "h.key")
	crt := filepath.Join(dir, "nodir", "h.crt")
	err := cert.WriteFiles([]cert.File{{Path: key, Data: []byte("k"), Perm: 0o600}, {Path: crt, Data: []byte("c"), Perm: 0o600}}, false)
	if err == nil || !strings.Contains(err.Error(), crt) {
		t.Fatalf("error %v should name %s", err, crt)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("left behind: %v", ents)
	}
	// The second file exists: the first must not be written either.
	crt = filepath.Join(dir, "h.crt")
	os.WriteFile(crt, []byte("old"), 0o600)
	err = cert.WriteFiles([]cert.File{{Path: key, Data: []byte("k"), Perm: 0o600}, {Path: crt, Data: []byte("c"), Perm: 0o600}}, false)
	if !errors.Is(err, fs.ErrExist) {
		t.Fatalf("err %v", err)
	}
	if _, err := os.Stat(key); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("key written although the cert could not be: %v", err)
	}
}

func TestWriteFilesRefusesTheSamePathTwice(t *testing.T) {
	p := filepath.Join(t.TempDir(), "x")
	err := cert.WriteFiles([]cert.File{{Path: p, Perm: 0o600}, {Path: p, Perm: 0o600}}, true)
	if !errors.Is(err, fs.ErrInvalid) {
		t.Fatalf("err %v", err)
	}
	if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
		t.Error("file written")
	}
}
