package handshake

import (
	"crypto/ecdh"
	"crypto/subtle"
	"fmt"
	"io"

	"github.com/flynn/noise"
)

// x25519 is the Noise DH function of one handshake. flynn/noise's DH25519 goes through
// x/crypto's curve25519.X25519, which builds a crypto/ecdh private key from the raw bytes
// on every call, and crypto/ecdh computes that key's public half at once: every DH cost
// two scalar multiplications, a third of an answered msg 1 wasted. Here the static key is
// parsed once per Credentials and the ephemeral key once when generated, so each DH is one
// scalar multiplication (the floor). The results are those of DH25519, byte for byte.
type x25519 struct {
	static    *ecdh.PrivateKey // nil: parse on use
	staticRaw []byte
	eph       *ecdh.PrivateKey
}

var x25519Curve = ecdh.X25519()

// GenerateKeypair reads the 32 private bytes from random itself, as DH25519 does (an
// initiator replays its stored ephemeral through a bytes.Reader, and tests pass seeded
// readers), rather than through ecdh's GenerateKey, which may ignore its reader.
func (d *x25519) GenerateKeypair(random io.Reader) (noise.DHKey, error) {
	priv := make([]byte, noiseKeyLen)
	if _, err := io.ReadFull(random, priv); err != nil {
		return noise.DHKey{}, err
	}
	k, err := x25519Curve.NewPrivateKey(priv)
	if err != nil {
		return noise.DHKey{}, err
	}
	d.eph = k
	return noise.DHKey{Private: priv, Public: k.PublicKey().Bytes()}, nil
}

// DH returns X25519(priv, pub); an all-zero result is an error, as with DH25519.
func (d *x25519) DH(priv, pub []byte) ([]byte, error) {
	k := d.key(priv)
	if k == nil {
		var err error
		if k, err = x25519Curve.NewPrivateKey(priv); err != nil {
			return nil, err
		}
	}
	p, err := x25519Curve.NewPublicKey(pub)
	if err != nil {
		return nil, err
	}
	out, err := k.ECDH(p)
	if err != nil {
		return nil, fmt.Errorf("x25519: %w", err)
	}
	return out, nil
}

// key returns the parsed key whose private bytes are priv, or nil. The compares are in
// constant time: they look at private keys.
func (d *x25519) key(priv []byte) *ecdh.PrivateKey {
	if d.eph != nil && subtle.ConstantTimeCompare(priv, d.eph.Bytes()) == 1 {
		return d.eph
	}
	if d.static != nil && subtle.ConstantTimeCompare(priv, d.staticRaw) == 1 {
		return d.static
	}
	return nil
}

func (d *x25519) DHLen() int     { return noiseKeyLen }
func (d *x25519) DHName() string { return "25519" }
