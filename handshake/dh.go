package handshake

import (
	"crypto/ecdh"
	"crypto/subtle"
	"fmt"
	"io"

	"github.com/flynn/noise"

	fastx25519 "github.com/meshnode/meshnode/internal/x25519"
)

var x25519Curve = ecdh.X25519()

// x25519 is the Noise DH function of one handshake. flynn/noise's DH25519 goes through
// x/crypto's curve25519.X25519, which builds a crypto/ecdh private key from the raw bytes
// on every call, and crypto/ecdh computes that key's public half at once with a ladder on
// the base point: every DH cost two scalar multiplications. Here the static key is parsed
// by crypto/ecdh once per Credentials, so its DH is one ladder. The ephemeral key never
// goes through crypto/ecdh: its public half is a fixed-base multiplication on
// edwards25519 (internal/x25519, 42 % of a ladder's instructions) and its two DH are one ladder
// each there, where crypto/ecdh would redo the public half on parsing. The results are
// those of DH25519, byte for byte.
type x25519 struct {
	static    *ecdh.PrivateKey // nil: no parsed static key
	staticRaw []byte
}

// GenerateKeypair reads the 32 private bytes from random itself, as DH25519 does (an
// initiator replays its stored ephemeral through a bytes.Reader, and tests pass seeded
// readers). The private bytes are kept unclamped, as before: X25519 clamps them.
func (d *x25519) GenerateKeypair(random io.Reader) (noise.DHKey, error) {
	priv := make([]byte, noiseKeyLen)
	if _, err := io.ReadFull(random, priv); err != nil {
		return noise.DHKey{}, err
	}
	pub, err := fastx25519.PublicKey(priv)
	if err != nil {
		return noise.DHKey{}, err
	}
	return noise.DHKey{Private: priv, Public: pub}, nil
}

// DH returns X25519(priv, pub); an all-zero result is an error, as with DH25519. The
// static key's DH runs on its parsed crypto/ecdh key; any other key's (the ephemeral
// one) on internal/x25519's ladder, which parses nothing. The compare is in constant
// time: it looks at private keys.
func (d *x25519) DH(priv, pub []byte) ([]byte, error) {
	if d.static == nil || subtle.ConstantTimeCompare(priv, d.staticRaw) != 1 {
		out, err := fastx25519.DH(priv, pub)
		if err != nil {
			return nil, fmt.Errorf("x25519: %w", err)
		}
		return out, nil
	}
	p, err := x25519Curve.NewPublicKey(pub)
	if err != nil {
		return nil, err
	}
	out, err := d.static.ECDH(p)
	if err != nil {
		return nil, fmt.Errorf("x25519: %w", err)
	}
	return out, nil
}

func (d *x25519) DHLen() int     { return noiseKeyLen }
func (d *x25519) DHName() string { return "25519" }
