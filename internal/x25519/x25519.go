// Package x25519 derives X25519 public keys by a fixed-base multiplication on
// edwards25519, and computes X25519 for a private key that crypto/ecdh has not parsed.
//
// crypto/ecdh computes a key's public half with a Montgomery ladder on the base point
// (about 44 µs here, as much as a DH), and it computes it eagerly whenever it parses a
// private key: there is no way to do a DH with an ecdh key without paying that ladder.
// The public key is the Montgomery u coordinate of s·B on edwards25519 (RFC 7748 section
// 4.1: u = (1+y)/(1-y)), where s is the clamped scalar; with filippo.io/edwards25519's
// precomputed table that costs about 18 µs. A fresh key that is then used in a DH (a
// handshake's ephemeral key) would lose the gain at its first DH if that went through
// crypto/ecdh, so DH here is the RFC 7748 ladder on the same constant-time field
// arithmetic (filippo.io/edwards25519/field, the code of Go's internal edwards25519).
//
// Everything here runs in time independent of the private key: only constant-time field,
// scalar and point operations, conditional swaps by mask, no branch or index on secret
// bits. Results equal crypto/ecdh's byte for byte (tests, fuzz target).
package x25519

import (
	"crypto/subtle"
	"errors"

	"filippo.io/edwards25519"
	"filippo.io/edwards25519/field"
)

// Size is the length of private keys, public keys and shared secrets.
const Size = 32

var (
	errLength   = errors.New("x25519: key is not 32 bytes")
	errLowOrder = errors.New("x25519: all-zero shared secret (low-order public key)")
)

// PublicKey returns X25519(priv, 9), the public key of the 32 private bytes priv, which
// are clamped as X25519 clamps them (priv itself is not changed). It equals
// crypto/ecdh's X25519 NewPrivateKey(priv).PublicKey().Bytes().
func PublicKey(priv []byte) ([]byte, error) {
	if len(priv) != Size {
		return nil, errLength
	}
	// SetBytesWithClamping clears the low three bits, clears bit 255 and sets bit 254,
	// as X25519 does, then reduces modulo the group order, which B's multiples do not
	// notice. The clamped scalar is never a multiple of the order (it would have to be
	// 4l-7l, none a multiple of 8), so s·B is never the identity and 1-y never zero.
	s, err := new(edwards25519.Scalar).SetBytesWithClamping(priv)
	if err != nil {
		return nil, err
	}
	var p edwards25519.Point
	return p.ScalarBaseMult(s).BytesMontgomery(), nil
}

// DH returns X25519(priv, pub) by the Montgomery ladder of RFC 7748 section 5. As with
// crypto/ecdh, the top bit of pub is ignored, non-canonical u coordinates are accepted,
// and an all-zero result (pub of low order) is an error.
func DH(priv, pub []byte) ([]byte, error) {
	if len(priv) != Size || len(pub) != Size {
		return nil, errLength
	}
	var k [Size]byte
	copy(k[:], priv)
	k[0] &= 248
	k[31] &= 127
	k[31] |= 64

	var x1, x2, z2, x3, z3 field.Element
	if _, err := x1.SetBytes(pub); err != nil { // ignores bit 255, as RFC 7748 asks
		return nil, err
	}
	x2.One()
	z2.Zero()
	x3.Set(&x1)
	z3.One()

	var a, aa, b, bb, e, c, d, da, cb, t field.Element
	swap := 0
	for i := 254; i >= 0; i-- {
		bit := int(k[i>>3]>>(i&7)) & 1
		swap ^= bit
		x2.Swap(&x3, swap)
		z2.Swap(&z3, swap)
		swap = bit

		a.Add(&x2, &z2)
		aa.Square(&a)
		b.Subtract(&x2, &z2)
		bb.Square(&b)
		e.Subtract(&aa, &bb)
		c.Add(&x3, &z3)
		d.Subtract(&x3, &z3)
		da.Multiply(&d, &a)
		cb.Multiply(&c, &b)

		x3.Add(&da, &cb)
		x3.Square(&x3)
		z3.Subtract(&da, &cb)
		z3.Square(&z3)
		z3.Multiply(&z3, &x1)
		x2.Multiply(&aa, &bb)
		// z2 = E·(AA + a24·E) with a24 = (486662-2)/4 = 121665 (RFC 7748).
		t.Mult32(&e, 121665)
		t.Add(&t, &aa)
		z2.Multiply(&e, &t)
	}
	x2.Swap(&x3, swap)
	z2.Swap(&z3, swap)

	z2.Invert(&z2) // 0 stays 0: the point at infinity gives u = 0
	x2.Multiply(&x2, &z2)
	out := x2.Bytes()
	var zero [Size]byte
	if subtle.ConstantTimeCompare(out, zero[:]) == 1 {
		return nil, errLowOrder
	}
	return out, nil
}
