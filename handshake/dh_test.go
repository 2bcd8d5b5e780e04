package handshake

import (
	"bytes"
	"crypto/ecdh"
	"crypto/rand"
	"testing"

	"github.com/flynn/noise"
)

// TestX25519MatchesDH25519: the per-handshake DH function gives flynn's DH25519 results
// for its ephemeral key (fixed-base public key, internal/x25519's ladder), the static key
// (parsed by crypto/ecdh) and any other key.
func TestX25519MatchesDH25519(t *testing.T) {
	static, err := noise.DH25519.GenerateKeypair(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sk, err := ecdh.X25519().NewPrivateKey(static.Private)
	if err != nil {
		t.Fatal(err)
	}
	d := &x25519{static: sk, staticRaw: static.Private}
	seed := make([]byte, 32)
	if _, err := rand.Read(seed); err != nil {
		t.Fatal(err)
	}
	eph, err := d.GenerateKeypair(bytes.NewReader(seed))
	if err != nil {
		t.Fatal(err)
	}
	want, err := noise.DH25519.GenerateKeypair(bytes.NewReader(seed))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(eph.Private, want.Private) || !bytes.Equal(eph.Public, want.Public) {
		t.Fatal("ephemeral key differs from DH25519's for the same random bytes")
	}
	other, _ := noise.DH25519.GenerateKeypair(rand.Reader)
	peer, _ := noise.DH25519.GenerateKeypair(rand.Reader)
	for name, priv := range map[string][]byte{"ephemeral": eph.Private, "static": static.Private, "other": other.Private} {
		got, err := d.DH(priv, peer.Public)
		if err != nil {
			t.Fatal(name, err)
		}
		exp, err := noise.DH25519.DH(priv, peer.Public)
		if err != nil {
			t.Fatal(name, err)
		}
		if !bytes.Equal(got, exp) {
			t.Errorf("%s: DH differs from DH25519's", name)
		}
	}
	for name, priv := range map[string][]byte{"ephemeral": eph.Private, "static": static.Private} {
		if _, err := d.DH(priv, make([]byte, 32)); err == nil {
			t.Errorf("%s: an all-zero shared secret was accepted", name)
		}
	}
}
