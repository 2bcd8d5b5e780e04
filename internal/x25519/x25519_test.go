package x25519

import (
	"bytes"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/hex"
	"testing"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// ecdhPublic and ecdhDH are the reference: crypto/ecdh, which the handshake used before.
func ecdhPublic(t testing.TB, priv []byte) []byte {
	t.Helper()
	k, err := ecdh.X25519().NewPrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return k.PublicKey().Bytes()
}

func ecdhDH(t testing.TB, priv, pub []byte) ([]byte, error) {
	t.Helper()
	k, err := ecdh.X25519().NewPrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	p, err := ecdh.X25519().NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return k.ECDH(p)
}

// edgeKeys are private keys whose bits exercise the clamping: every bit that X25519
// clears or sets is wrong in one of them.
func edgeKeys() map[string][]byte {
	keys := map[string][]byte{}
	fill := func(name string, f func(b []byte)) {
		b := make([]byte, Size)
		f(b)
		keys[name] = b
	}
	fill("all zero", func(b []byte) {})
	fill("all 0xff", func(b []byte) {
		for i := range b {
			b[i] = 0xff
		}
	})
	fill("high bit only", func(b []byte) { b[31] = 0x80 })
	fill("bit 254 only", func(b []byte) { b[31] = 0x40 })
	fill("low bits only", func(b []byte) { b[0] = 0x07 })
	fill("one", func(b []byte) { b[0] = 1 })
	fill("eight", func(b []byte) { b[0] = 8 })
	fill("0x55", func(b []byte) {
		for i := range b {
			b[i] = 0x55
		}
	})
	fill("0xaa", func(b []byte) {
		for i := range b {
			b[i] = 0xaa
		}
	})
	// The group order l = 2^252 + 27742317777372353535851937790883648493, little-endian,
	// and 8l: scalars that reduce to 0 before clamping changes them.
	keys["order"] = []byte{0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
		0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10}
	keys["8 x order"] = []byte{0x68, 0x9f, 0xae, 0xe7, 0xd2, 0x18, 0x93, 0xc0, 0xb2, 0xe6, 0xbc, 0x17, 0xf5, 0xce, 0xf7, 0xa6,
		0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x80}
	return keys
}

func TestPublicKeyMatchesECDH(t *testing.T) {
	for name, priv := range edgeKeys() {
		orig := bytes.Clone(priv)
		got, err := PublicKey(priv)
		if err != nil {
			t.Fatal(name, err)
		}
		if want := ecdhPublic(t, priv); !bytes.Equal(got, want) {
			t.Errorf("%s: public key %x, crypto/ecdh %x", name, got, want)
		}
		if !bytes.Equal(priv, orig) {
			t.Errorf("%s: the private key was changed", name)
		}
	}
	priv := make([]byte, Size)
	for i := 0; i < 2000; i++ {
		if _, err := rand.Read(priv); err != nil {
			t.Fatal(err)
		}
		got, err := PublicKey(priv)
		if err != nil {
			t.Fatal(err)
		}
		if want := ecdhPublic(t, priv); !bytes.Equal(got, want) {
			t.Fatalf("private %x: public key %x, crypto/ecdh %x", priv, got, want)
		}
	}
}

func TestDHMatchesECDH(t *testing.T) {
	peers := map[string][]byte{}
	for i := 0; i < 4; i++ {
		p := make([]byte, Size)
		rand.Read(p)
		peers[hex.EncodeToString(p[:4])] = p // random u: about half are on the twist
	}
	withTop := make([]byte, Size)
	rand.Read(withTop)
	withTop[31] |= 0x80
	peers["top bit set"] = withTop
	peers["p+2 (non-canonical 2)"] = unhex(t, "efffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f")
	peers["2^255-1"] = unhex(t, "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff")
	peers["nine"] = append([]byte{9}, make([]byte, 31)...)
	for name, priv := range edgeKeys() {
		for pname, pub := range peers {
			got, err := DH(priv, pub)
			want, werr := ecdhDH(t, priv, pub)
			if (err == nil) != (werr == nil) || !bytes.Equal(got, want) {
				t.Errorf("%s with %s: %x (%v), crypto/ecdh %x (%v)", name, pname, got, err, want, werr)
			}
		}
	}
	priv, pub := make([]byte, Size), make([]byte, Size)
	for i := 0; i < 1000; i++ {
		rand.Read(priv)
		rand.Read(pub)
		got, err := DH(priv, pub)
		want, werr := ecdhDH(t, priv, pub)
		if (err == nil) != (werr == nil) || !bytes.Equal(got, want) {
			t.Fatalf("%x with %x: %x (%v), crypto/ecdh %x (%v)", priv, pub, got, err, want, werr)
		}
	}
}

// TestDHLowOrder: every public key of small order gives an all-zero secret, an error as
// in crypto/ecdh (the handshake refuses them earlier too: isLowOrder).
func TestDHLowOrder(t *testing.T) {
	priv := make([]byte, Size)
	rand.Read(priv)
	for _, u := range []string{
		"0000000000000000000000000000000000000000000000000000000000000000",
		"0100000000000000000000000000000000000000000000000000000000000000",
		"e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
		"5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
		"ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
		"edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
		"eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
	} {
		if out, err := DH(priv, unhex(t, u)); err == nil {
			t.Errorf("u %s: accepted, secret %x", u, out)
		}
	}
	if _, err := DH(priv[:31], priv); err == nil {
		t.Error("a 31-byte private key was accepted")
	}
	if _, err := PublicKey(priv[:31]); err == nil {
		t.Error("a 31-byte private key was accepted")
	}
}

// TestRFC7748 is section 5.2's two vectors and its iterations (1 and 1000), and section
// 6.1's Diffie-Hellman example.
func TestRFC7748(t *testing.T) {
	for _, v := range []struct{ k, u, out string }{
		{"a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4",
			"e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c",
			"c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552"},
		{"4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d",
			"e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493",
			"95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957"},
	} {
		got, err := DH(unhex(t, v.k), unhex(t, v.u))
		if err != nil || hex.EncodeToString(got) != v.out {
			t.Errorf("X25519(%s, %s) = %x (%v), want %s", v.k, v.u, got, err, v.out)
		}
	}

	k := append([]byte{9}, make([]byte, 31)...)
	u := bytes.Clone(k)
	for i := 1; i <= 1000; i++ {
		out, err := DH(k, u)
		if err != nil {
			t.Fatal(err)
		}
		k, u = out, k
		want := map[int]string{
			1:    "422c8e7a6227d7bca1350b3e2bb7279f7897b87bb6854b783c60e80311ae3079",
			1000: "684cf59ba83309552800ef566f2f4d3c1c3887c49360e3875f2eb94d99532c51",
		}[i]
		if want != "" && hex.EncodeToString(k) != want {
			t.Fatalf("after %d iterations: %x, want %s", i, k, want)
		}
	}

	a := unhex(t, "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
	b := unhex(t, "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
	aPub, _ := PublicKey(a)
	bPub, _ := PublicKey(b)
	if got := hex.EncodeToString(aPub); got != "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a" {
		t.Errorf("Alice's public key %s", got)
	}
	if got := hex.EncodeToString(bPub); got != "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f" {
		t.Errorf("Bob's public key %s", got)
	}
	const shared = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"
	ka, err1 := DH(a, bPub)
	kb, err2 := DH(b, aPub)
	if err1 != nil || err2 != nil || hex.EncodeToString(ka) != shared || hex.EncodeToString(kb) != shared {
		t.Errorf("shared secrets %x (%v), %x (%v), want %s", ka, err1, kb, err2, shared)
	}
}

// FuzzMatchesECDH: for any 32 private bytes and any 32 public bytes, PublicKey and DH
// give crypto/ecdh's results and errors.
func FuzzMatchesECDH(f *testing.F) {
	for _, k := range edgeKeys() {
		f.Add(k, append([]byte{9}, make([]byte, 31)...))
	}
	f.Add(make([]byte, Size), make([]byte, Size))
	f.Fuzz(func(t *testing.T, priv, pub []byte) {
		// Any input is cut or zero-padded to 32 bytes, so every run compares (the
		// length checks are TestDHLowOrder's).
		priv = append(bytes.Clone(priv), make([]byte, Size)...)[:Size]
		pub = append(bytes.Clone(pub), make([]byte, Size)...)[:Size]
		got, err := PublicKey(priv)
		if err != nil {
			t.Fatal(err)
		}
		if want := ecdhPublic(t, priv); !bytes.Equal(got, want) {
			t.Fatalf("public key %x, crypto/ecdh %x", got, want)
		}
		s, err := DH(priv, pub)
		want, werr := ecdhDH(t, priv, pub)
		if (err == nil) != (werr == nil) || !bytes.Equal(s, want) {
			t.Fatalf("DH %x (%v), crypto/ecdh %x (%v)", s, err, want, werr)
		}
	})
}

// BenchmarkPublicKey is the key generation alone: crypto/ecdh's ladder on the base point
// (what the handshake paid before) against the fixed-base Edwards multiplication.
func BenchmarkPublicKey(b *testing.B) {
	priv := make([]byte, Size)
	rand.Read(priv)
	b.Run("ecdh", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			k, _ := ecdh.X25519().NewPrivateKey(priv)
			_ = k.PublicKey().Bytes()
		}
	})
	b.Run("fixed-base", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_, _ = PublicKey(priv)
		}
	})
}

// BenchmarkDH is one DH with an already parsed key: crypto/ecdh against the ladder here
// (the same field code underneath, so they should cost the same).
func BenchmarkDH(b *testing.B) {
	priv, peer := make([]byte, Size), make([]byte, Size)
	rand.Read(priv)
	rand.Read(peer)
	peer[31] &= 0x7f
	b.Run("ecdh", func(b *testing.B) {
		k, _ := ecdh.X25519().NewPrivateKey(priv)
		p, _ := ecdh.X25519().NewPublicKey(peer)
		b.ReportAllocs()
		for b.Loop() {
			_, _ = k.ECDH(p)
		}
	})
	b.Run("ladder", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_, _ = DH(priv, peer)
		}
	})
}
