package handshake

import (
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/rand"
	"testing"

	fastx25519 "github.com/meshnode/meshnode/internal/x25519"
)

// BenchmarkRoles is each side's CPU per handshake and, for comparison, its floor: the
// public-key operations alone (the responder: one Ed25519 verify of the initiator's
// certificate, one X25519 key generation and three X25519 DH; the initiator the same
// after its msg 1, which costs one key generation). floor-respond is the floor through
// crypto/ecdh alone, whose key generation is a ladder; floor-respond-fixedbase the floor
// as the handshake now pays it (fixed-base key generation, the ephemeral key's two DH on
// internal/x25519's ladder, the static key's on crypto/ecdh).
func BenchmarkRoles(b *testing.B) {
	ini, resp := pair(b, AESGCM)
	_, msg1, err := Initiate(ini.cfg, 1)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("initiate", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, _, err := Initiate(ini.cfg, 1); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("respond", func(b *testing.B) { // ReadInit + Respond
		b.ReportAllocs()
		for b.Loop() {
			init, err := ReadInit(resp.cfg, msg1)
			if err != nil {
				b.Fatal(err)
			}
			if _, _, err := init.Respond(2); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("complete", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			b.StopTimer()
			in, msg1, err := Initiate(ini.cfg, 1)
			if err != nil {
				b.Fatal(err)
			}
			init, err := ReadInit(resp.cfg, msg1)
			if err != nil {
				b.Fatal(err)
			}
			_, msg2, err := init.Respond(2)
			if err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			if _, err := in.Complete(msg2); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("floor-respond", func(b *testing.B) {
		pub, priv, _ := ed25519.GenerateKey(rand.Reader)
		msg := make([]byte, 200)
		sig := ed25519.Sign(priv, msg)
		curve := ecdh.X25519()
		static, _ := curve.GenerateKey(rand.Reader)
		peer, _ := curve.GenerateKey(rand.Reader)
		b.ReportAllocs()
		for b.Loop() {
			if !ed25519.Verify(pub, msg, sig) {
				b.Fatal("verify")
			}
			e, _ := curve.GenerateKey(rand.Reader)
			_, _ = e.ECDH(peer.PublicKey())
			_, _ = e.ECDH(peer.PublicKey())
			_, _ = static.ECDH(peer.PublicKey())
		}
	})
	b.Run("floor-respond-fixedbase", func(b *testing.B) {
		pub, priv, _ := ed25519.GenerateKey(rand.Reader)
		msg := make([]byte, 200)
		sig := ed25519.Sign(priv, msg)
		curve := ecdh.X25519()
		static, _ := curve.GenerateKey(rand.Reader)
		peer, _ := curve.GenerateKey(rand.Reader)
		peerPub := peer.PublicKey().Bytes()
		e := make([]byte, 32)
		b.ReportAllocs()
		for b.Loop() {
			if !ed25519.Verify(pub, msg, sig) {
				b.Fatal("verify")
			}
			_, _ = rand.Read(e)
			_, _ = fastx25519.PublicKey(e)
			_, _ = fastx25519.DH(e, peerPub)
			_, _ = fastx25519.DH(e, peerPub)
			_, _ = static.ECDH(peer.PublicKey())
		}
	})
}
