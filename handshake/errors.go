package handshake

import (
	"errors"
	"fmt"
)

// Errors that mean "this packet was not readable: ignore it and keep waiting". A spoofed or
// corrupted msg 2, or one sealed with the other cipher, lands here, so an attacker who can
// only inject packets cannot make the initiator give up.
var (
	// ErrNoiseRead: the packet could not be read. Every error of this group wraps it, so
	// errors.Is(err, ErrNoiseRead) alone decides "ignore and keep retrying".
	ErrNoiseRead = errors.New("handshake: could not read noise message")
	// ErrMalformed: too short, wrong header type, subtype, counter or index.
	ErrMalformed = fmt.Errorf("%w: malformed packet", ErrNoiseRead)
	// ErrLowOrderKey: an ephemeral or static public key is a low-order Curve25519 point,
	// which would make the DH output predictable.
	ErrLowOrderKey = fmt.Errorf("%w: low-order public key", ErrNoiseRead)
)

// Errors that mean "the peer was read and refused": abandon this handshake.
var (
	// ErrPayload: the Noise message was read but its payload is malformed.
	ErrPayload = errors.New("handshake: malformed payload")
	// ErrInvalidCert: the peer certificate does not parse, or fails verification against
	// the pool (CA, validity, blocklist, constraints, or the key is not the Noise static key).
	ErrInvalidCert = errors.New("handshake: invalid peer certificate")
	// ErrNoVPNIP: the peer certificate has no IPs, so it names no host.
	ErrNoVPNIP = fmt.Errorf("%w: certificate has no IPs", ErrInvalidCert)
	// ErrVersion: the peer can only read certificate versions we do not hold (a Nebula 1.6
	// initiator, which reads v1 only, and a host holding only a v2 certificate).
	ErrVersion = errors.New("handshake: no certificate version in common")
	// ErrSelf: the peer certificate carries our own VPN IP.
	ErrSelf = errors.New("handshake: refusing to handshake with myself")
)

// Errors from misuse by the caller.
var (
	// ErrConfig: the Config is missing credentials or a pool.
	ErrConfig = errors.New("handshake: invalid config")
	// ErrCredentials: the certificate and private key do not form a usable identity.
	ErrCredentials = errors.New("handshake: invalid credentials")
	// ErrIndex: a local index of 0, which Nebula reserves for "none".
	ErrIndex = errors.New("handshake: local index must be non-zero")
	// ErrDone: the state was already used to produce a result.
	ErrDone = errors.New("handshake: already completed")
	// ErrUnknownCipher: a Cipher value or name that is neither AES-GCM nor ChaCha20-Poly1305.
	ErrUnknownCipher = errors.New("handshake: unknown cipher")
	// ErrKeySize: an AEAD key that is not KeySize bytes.
	ErrKeySize = errors.New("handshake: bad key size")
)

// ErrAuth is returned by AEAD.Open when the packet fails authentication.
var ErrAuth = errors.New("handshake: message authentication failed")

// Retryable reports whether err means the packet should be ignored while the handshake
// continues (ErrNoiseRead and the errors wrapping it) rather than abandoned.
func Retryable(err error) bool { return errors.Is(err, ErrNoiseRead) }
